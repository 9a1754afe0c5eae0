"""The CUDA sources and how they are compiled: one place for the CuPy backend (run time)
and ``ci/kernels`` (compile check without a GPU), so both use the same code and options.

Importing this module imports neither CuPy nor any CUDA library.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import NamedTuple

_HERE = Path(__file__).resolve().parent
# In a wheel the sources sit inside the package; in a checkout, at the repository root.
KERNEL_DIR = next(p for p in (_HERE / "kernels", _HERE.parent / "kernels") if p.is_dir())

# Exactly these options at run time (CuPy adds the target architecture) and in CI.
OPTIONS = ("-std=c++17",)

TYPE_NAMES = {"float16": "half_t", "bfloat16": "bf16_t", "float32": "float", "float64": "double"}

LOSS_IDS = {"mse": 0, "binary_cross_entropy": 1, "binary_cross_entropy_with_logits": 2, "hinge": 3,
            "mae": 4, "huber": 5, "smooth_l1": 6, "log_cosh": 7, "squared_hinge": 8,
            "soft_margin": 9, "sigmoid_focal": 10, "poisson_nll": 11, "kl_div": 12, "pinball": 13}

_INCLUDE = re.compile(r'^#include "([^"]+)"\s*$', re.MULTILINE)


@cache
def source(filename: str) -> str:
    """A kernel file with its local headers inlined, so CuPy's cache key (the code text)
    changes whenever any header does."""

    def expand(path: Path, seen: set[Path]) -> str:
        if path in seen:  # #pragma once
            return ""
        seen.add(path)
        text = path.read_text()
        return _INCLUDE.sub(lambda m: expand(path.parent / m.group(1), seen), text)

    return expand(KERNEL_DIR / filename, set())


class RowConfig(NamedTuple):
    """A register-resident cross-entropy kernel: THREADS threads share a row, each holding
    VPT values; ROWS rows per block (warp-per-row kernels)."""

    threads: int
    values_per_thread: int
    rows_per_block: int

    @property
    def capacity(self) -> int:
        return self.threads * self.values_per_thread

    @property
    def block(self) -> int:
        return self.threads * self.rows_per_block

    def expression(self, type_name: str) -> str:
        return (f"ce_rows<{type_name}, {self.threads}, {self.values_per_thread}, "
                f"{self.rows_per_block}>")


SMALL_CLASSES = 32  # ce_small up to this many classes
SMALL_ROWS = 128  # rows per ce_small block (its launch bound)
STREAM_THREADS = 1024

# By increasing capacity; a row goes to the first that holds it. Warp-per-row kernels up
# to 1024 classes, a block per row up to 16384; longer rows go to ce_stream.
ROW_CONFIGS = (
    RowConfig(32, 8, 8),
    RowConfig(32, 16, 8),
    RowConfig(32, 32, 4),
    RowConfig(128, 16, 1),
    RowConfig(256, 16, 1),
    RowConfig(512, 16, 1),
    RowConfig(1024, 16, 1),
)


def elementwise_expressions(type_name: str) -> list[str]:
    """Each loss without and with the Hessian (``elementwise<T, LOSS, HESS>``)."""
    return [f"elementwise<{type_name}, {i}, {hess}>" for i in LOSS_IDS.values()
            for hess in ("false", "true")] + [f"finalize<{type_name}>"]


def cross_entropy_expressions(type_name: str) -> list[str]:
    """The kernels every cross-entropy call may need besides a row configuration."""
    return [
        f"ce_small<{type_name}>",
        f"ce_stream<{type_name}, false, 0>",
        f"ce_stream<{type_name}, true, 0>",  # with the Hessian
        f"ce_stream<{type_name}, false, 1>",  # soft-capped
        f"ce_stream<{type_name}, true, 1>",  # soft-capped, with the Hessian
        f"ce_label_weights<{type_name}>",
        f"ce_mean_scale<{type_name}>",
        f"ce_finalize<{type_name}>",
        f"ce_z_factor<{type_name}>",
    ]


MH_WARP_CLASSES = 1024  # multiclass_hinge: a warp per row up to this many classes
MH_WARP_ROWS = 8  # rows per block of the warp-per-row kernel


def multiclass_hinge_expressions(type_name: str) -> list[str]:
    """The multiclass hinge's kernels: a warp per row, a block of 1024 threads per row."""
    return [f"mh_rows<{type_name}, 32, {MH_WARP_ROWS}>", f"mh_rows<{type_name}, 1024, 1>",
            f"ce_finalize<{type_name}>"]


def all_modules() -> list[tuple[str, list[str]]]:
    """(file, name expressions) of every module the CuPy backend can build: what
    ``ci/kernels`` compiles."""
    modules = []
    for type_name in TYPE_NAMES.values():
        modules.append(("elementwise.cu", elementwise_expressions(type_name)))
        modules.append(("cross_entropy.cu", cross_entropy_expressions(type_name)))
        modules.append(("cross_entropy.cu", multiclass_hinge_expressions(type_name)))
        modules += [("cross_entropy.cu", [c.expression(type_name)]) for c in ROW_CONFIGS]
    return modules
