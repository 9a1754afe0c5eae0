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

# Exactly these options at run time and in CI (``_nvrtc.compile_module`` adds ``-arch``;
# CuPy's compiler is not used: see ``_nvrtc``).
OPTIONS = ("-std=c++17",)

TYPE_NAMES = {"float16": "half_t", "bfloat16": "bf16_t", "float32": "float", "float64": "double"}

LOSS_IDS = {"mse": 0, "binary_cross_entropy": 1, "binary_cross_entropy_with_logits": 2, "hinge": 3,
            "mae": 4, "huber": 5, "smooth_l1": 6, "log_cosh": 7, "squared_hinge": 8,
            "soft_margin": 9, "sigmoid_focal": 10, "poisson_nll": 11, "kl_div": 12, "pinball": 13}

_INCLUDE = re.compile(r'^#include "([^"]+)"\s*$', re.MULTILINE)


@cache
def source(filename: str) -> str:
    """A kernel file with its local headers inlined, so the kernel cache's key (the code text)
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
    VPT values; ROWS rows per block (warp-per-row kernels); the registers must allow
    MIN_BLOCKS blocks per SM (0: 1 for blocks of 1024 threads or more, else 2), and
    PLAIN_MIN_BLOCKS for ce_rows_plain of the types narrower than float64 (0: MIN_BLOCKS;
    the plain kernel needs fewer registers, and ce_rows of float16 or float64 spilled
    under its bound)."""

    threads: int
    values_per_thread: int
    rows_per_block: int
    min_blocks: int = 0
    plain_min_blocks: int = 0

    @property
    def capacity(self) -> int:
        return self.threads * self.values_per_thread

    @property
    def block(self) -> int:
        return self.threads * self.rows_per_block

    def expression(self, type_name: str, plain: bool = False) -> str:
        """``plain``: the plain call's kernel (``ce_rows_plain``, warp-per-row configurations
        only: class labels without class weights, smoothing, softcap or Hessian)."""
        # (float64 rows take twice the registers: the plain kernel spilled 1.5 KB at 6)
        plain_blocks = plain and type_name != "double" and self.plain_min_blocks
        min_blocks = plain_blocks or self.min_blocks or (1 if self.block >= 1024 else 2)
        return (f"ce_rows{'_plain' if plain else ''}<{type_name}, {self.threads}, "
                f"{self.values_per_thread}, {self.rows_per_block}, {min_blocks}>")


class StreamConfig(NamedTuple):
    """The streaming cross-entropy kernel (any class count, a block per row): ``threads``
    per block (256, 512 or 1024) and ``in_flight`` 16-byte packs per thread (with softcap,
    whose registers they cost, one fewer from 3 up: 2 stay 2, as softcap's kernel of
    float16 and bfloat16 had before its settings came by type; not measured); ``down``:
    the gradient's pass reads the row from the top down; ``staged_kib``: KiB of the row's
    end the first pass keeps in shared memory for the gradient's pass (0: none; the
    Hessian's instance never stages)."""

    threads: int = 1024
    in_flight: int = 3
    down: bool = False
    staged_kib: int = 0

    @property
    def staged_bytes(self) -> int:
        """The launch's dynamic shared memory."""
        return self.staged_kib * 1024

    def unstaged(self) -> StreamConfig:
        """The same setting without the stage: for a device whose blocks cannot have its
        shared memory (the same bits)."""
        return self._replace(staged_kib=0)

    def expression(self, type_name: str, hess: bool = False, capped: bool = False) -> str:
        in_flight = max(min(2, self.in_flight), self.in_flight - capped)
        extra = ""
        if (self.down or self.staged_kib) and not hess:
            extra = f", {str(self.down).lower()}, {self.staged_bytes // 16}"
        return (f"ce_stream<{type_name}, {str(hess).lower()}, {int(capped)}, "
                f"{self.threads}, {in_flight}{extra}>")


SMALL_CLASSES = 32  # ce_small up to this many classes
SMALL_ROWS = 128  # rows per ce_small block (its launch bound; its shared memory, rows x
# classes accumulators, must stay within 48 KB: 256 rows of 32 float64 classes would not)

# By increasing capacity; a row goes to the first that holds it. Warp-per-row kernels up
# to 1024 classes, a block per row up to ROWS_MAX_CLASSES (up to 16384 for a call with the
# Hessian, which the streaming kernel takes in a launch of its own); longer rows go to the
# streaming kernel.
ROW_CONFIGS = (
    RowConfig(32, 8, 8),
    RowConfig(32, 16, 8),
    # ce_rows_plain at 6 blocks per SM: 0.92 of copy at 65536 x 1000 float32, against 0.86
    # with 2 and 0.85 with 8 (benchmarks/results/gpu-h200/kernel-variants-2026-12-04-2.csv)
    RowConfig(32, 32, 4, plain_min_blocks=6),
    RowConfig(128, 16, 1),
    RowConfig(256, 16, 1),
    RowConfig(512, 16, 1),
    RowConfig(1024, 16, 1),
)
# (the streaming kernel from 2049 classes: 0.49 of copy at 32768 x 4096 float32 against
# the block-per-row kernel's 0.35, kernel-variants-2026-12-04-4.csv; 1025-2048 not measured)
ROWS_MAX_CLASSES = 2048
LONGEST_ROWS = ROW_CONFIGS[-1].capacity  # (16384 classes: longer rows have STREAM's settings)
# The streaming kernel's settings by type, from the H200 sweeps of 2026-12-04
# (benchmarks/results/gpu-h200/kernel-variants-2026-12-04*.csv). float32: 512 x 4, the
# gradient's pass from the top down with the row's last 96 KiB kept in shared memory
# (0.65 of copy against 0.63 at 8192 x 128256, 0.62 against 0.58 at 4096 x 32000; -3.csv),
# not 256 threads: a thread's running sum holds twice the terms there, and the loss of a
# confident row of 128256 classes, log1p of the others' tiny exps, was 21 ulp off in
# float32 instead of 11 (tests/cuda_host). float16 and bfloat16: 256 x 2 (0.41 against
# 0.39 for 512 x 2, in two runs, -2.csv and -3.csv; staging did not help). float64, not
# measured, keeps the first setting.
STREAM = {"float": StreamConfig(512, 4, down=True, staged_kib=96),
          "half_t": StreamConfig(256, 2), "bf16_t": StreamConfig(256, 2),
          "double": StreamConfig(1024, 3)}
# Rows of ROWS_MAX_CLASSES + 1 to 16384 classes: the streaming kernel keeping the row's
# last 32 KiB in shared memory (a whole row of 8192 float32 classes: one read from DRAM, as
# the register-resident kernels, with no row of registers to hold, and 7 blocks per SM):
# 0.58 of copy at 16384 x 8192 float32 against the block-per-row kernel's 0.42, 0.63
# against 0.40 at 8192 x 16384 (-3.csv, -4.csv; 64 KiB staged, a whole row there, 0.60).
# Other types, not measured, keep 2 packs in flight (4 of bfloat16 spilled 328 bytes at
# the 64 registers of 4 blocks of 256 threads per SM; float64 spills 184 bytes, its
# block-per-row kernels of these rows 3 KB).
ROW_STREAM = {"float": StreamConfig(256, 4, down=True, staged_kib=32),
              **dict.fromkeys(("half_t", "bf16_t", "double"),
                              StreamConfig(256, 2, down=True, staged_kib=32))}


def elementwise_expressions(type_name: str) -> list[str]:
    """Each loss without and with the Hessian (``elementwise<T, LOSS, HESS>``)."""
    return [f"elementwise<{type_name}, {i}, {hess}>" for i in LOSS_IDS.values()
            for hess in ("false", "true")] + [f"finalize<{type_name}>"]


# the streaming kernel's Hessian instance (grad_and_hess above 16384 classes): fixed
# settings, whatever STREAM measures best for the gradient (not measured on a GPU yet)
HESS_STREAM = StreamConfig()


def cross_entropy_expressions(type_name: str) -> list[str]:
    """The kernels every cross-entropy call may need besides its main one (ce_small, a row
    configuration or a streaming kernel: each a module of its own, so that settings
    measured against each other compile one kernel each)."""
    return [
        *(HESS_STREAM.expression(type_name, True, capped) for capped in (False, True)),
        f"ce_labels<{type_name}>",
        f"ce_finalize<{type_name}>",
        f"ce_z_factor<{type_name}>",
    ]


def small_expression(type_name: str, rows: int = SMALL_ROWS) -> str:
    """ce_small's instance of ``rows`` rows per block."""
    return f"ce_small<{type_name}, {rows}>"


def main_expressions(type_name: str, stream: StreamConfig | None = None,
                     small_rows: int = SMALL_ROWS) -> list[str]:
    """The main kernels of cross-entropy besides the row configurations: ce_small and the
    streaming kernel (``STREAM``'s and ``ROW_STREAM``'s for the type, and the same unstaged,
    unless given), plain and soft-capped."""
    streams = (stream,) if stream else tuple(dict.fromkeys(
        c for s in (STREAM[type_name], ROW_STREAM[type_name]) for c in (s, s.unstaged())))
    return [small_expression(type_name, small_rows),
            *(s.expression(type_name, False, capped) for s in streams for capped in (False, True))]


MH_WARP_CLASSES = 1024  # multiclass_hinge: a warp per row up to this many classes
MH_WARP_ROWS = 8  # rows per block of the warp-per-row kernel


def multiclass_hinge_expressions(type_name: str) -> list[str]:
    """The multiclass hinge's kernels: a warp per row, a block of 1024 threads per row;
    the labels' check and the sum it shares with cross-entropy."""
    return [f"mh_rows<{type_name}, 32, {MH_WARP_ROWS}>", f"mh_rows<{type_name}, 1024, 1>",
            f"ce_labels<{type_name}>", f"ce_finalize<{type_name}>"]


def all_modules() -> list[tuple[str, list[str]]]:
    """(file, name expressions) of every kernel the CuPy backend can build, by module,
    except that a module of one kernel at run time (the row configurations, ce_small, the
    streaming kernel) is compiled here with its kind's others (fewer NVRTC runs). What
    ``ci/kernels`` compiles."""
    modules = []
    for type_name in TYPE_NAMES.values():
        modules.append(("elementwise.cu", elementwise_expressions(type_name)))
        modules.append(("cross_entropy.cu", cross_entropy_expressions(type_name)
                        + main_expressions(type_name)))
        modules.append(("cross_entropy.cu", multiclass_hinge_expressions(type_name)))
        modules += [("cross_entropy.cu", [c.expression(type_name)]) for c in ROW_CONFIGS]
        modules += [("cross_entropy.cu", [c.expression(type_name, plain=True)])
                    for c in ROW_CONFIGS if c.threads == 32]
    return modules
