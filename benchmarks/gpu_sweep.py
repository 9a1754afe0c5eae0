"""The cross-entropy kernels' settings measured against each other on one GPU, in one run.

    python -m benchmarks.gpu_sweep --out DIR [--budget SECONDS] [--cases NAME ...] [--list]

A variant is a setting of the CuPy backend's cross-entropy kernels (``cupy_backend``'s
``ROW_CONFIGS``, ``ROWS_MAX_CLASSES``, ``STREAM``, ``ROW_STREAM``, ``SMALL_ROWS`` and
``CE_ROWS_PLAIN``),
applied for the cases it is meant for and run through the public call: the sweep checks
and times exactly what the library would run with that setting, so a winner is adopted
by changing its default in ``lossbackends/_cuda_sources.py`` or ``cupy_backend`` (then
losers' code goes). For each case (shape, dtype)
and variant:

- checked first: ``reduction="none"`` with ``check_labels=False``, the losses and gradients
  of sampled rows (an ignored row among them) against the NumPy backend in float64 on the
  host, the labels shifted by a class count of the variant's own and the gradient written
  into a buffer of NaN (an element or loss a kernel leaves unwritten cannot pass with what
  another variant left there: the whole gradient must be finite); a variant that fails is
  reported, never timed;
- timed by CUDA events, calls back to back (``core.time_gpu``): ``"none"`` with ``out=``
  (the main kernel alone, the row losses written directly) and ``"mean"`` with ``out=``
  (every launch of a training step's call: the labels' pass, the main kernel, the sum);
  above 16384 classes also ``"none"`` with ``softcap=30`` (its streaming kernel keeps
  fewer packs in flight: checked on the host, ``tests/test_cuda_host.py``);
- the default settings also as users call them: ``"mean"`` with the default label check
  (its one synchronisation), with and without ``out=``.

GB/s count the minimum traffic (logits read once, gradient written once, the labels), as a
fraction of the device-to-device copy measured in the same run, before and after. The
kernels are compiled first, all at once in worker processes (the backend's on-disk cache), so the
budget goes to measuring. One CSV row per case and variant: ``DIR/sweep.csv``; the
device, the date and the copy bandwidth in ``DIR/sweep.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from lossbackends._cuda_sources import RowConfig, StreamConfig, small_expression

from . import core


@dataclass(frozen=True)
class Case:
    rows: int
    classes: int
    dtype: str  # "float32", "float16" or "bfloat16" (torch tensors)

    @property
    def name(self) -> str:
        return f"{self.rows}x{self.classes}-{self.dtype}"


# the shapes of the GPU issue's cross-entropy targets, and rows of 1536, 4096, 8192 and
# 16384 classes (where the block-per-row kernels meet the streaming kernel)
CASES = (
    Case(8192, 128256, "float32"),
    Case(8192, 128256, "float16"),
    Case(8192, 128256, "bfloat16"),
    Case(4096, 32000, "float32"),
    Case(8192, 16384, "float32"),
    Case(16384, 8192, "float32"),  # (not a target: where torch.compile led, 46 % to 31 %)
    Case(32768, 4096, "float32"),
    Case(65536, 1536, "float32"),
    Case(65536, 1000, "float32"),
    Case(1048576, 10, "float32"),
)


@dataclass(frozen=True)
class Variant:
    name: str
    settings: dict = field(default_factory=dict)  # cupy_backend's name -> value
    low: int = 1  # the class counts it is meant for
    high: int = 1 << 62

    def applies(self, case: Case) -> bool:
        return self.low <= case.classes <= self.high


_STREAMED = 16385  # above the register-resident rows (16384 classes)


def _every_type(stream: StreamConfig) -> dict:
    """``cupy_backend.STREAM`` (or ``ROW_STREAM``) with ``stream`` for every type."""
    from lossbackends._cuda_sources import TYPE_NAMES

    return dict.fromkeys(TYPE_NAMES.values(), stream)


def _stream_name(config: StreamConfig) -> str:
    return (f"threads={config.threads} in_flight={config.in_flight}"
            + (" down" if config.down else "")
            + (f" staged={config.staged_kib}KiB" if config.staged_kib else ""))


def variants() -> list[Variant]:
    """The default settings first, then the candidates, each for the class counts where
    the kernel it changes runs. (The losers of the sweeps of 2026-12-04 are gone: 1024
    threads, 512 x 2 and 512 x 3, 200 KiB staged, the warp-per-row kernel at 8 or 16 rows
    per block, a block per row at 513-1024 classes, the streaming kernel there, the
    streaming kernel with 512 threads at 8192 classes; kernel-variants-2026-12-04*.csv.)"""
    found = [Variant("default")]
    # above 16384 classes: threads and packs in flight; the gradient's pass from the top
    # down; the row's end kept in shared memory by the first pass (as much as the blocks
    # an SM holds leave: 227 KiB in all)
    for config in (StreamConfig(512, 4), StreamConfig(256, 2), StreamConfig(256, 4),
                   StreamConfig(512, 4, down=True), StreamConfig(512, 4, True, 96),
                   StreamConfig(256, 4, True, 48), StreamConfig(256, 2, True, 48)):
        found.append(Variant(f"stream {_stream_name(config)}",
                             {"STREAM": _every_type(config)}, _STREAMED))
    # 2049-16384 classes: the block-per-row kernels (the default before 2026-12-04's
    # fourth run), and the streaming kernel's settings there
    found.append(Variant("rows: a block per row", {"ROWS_MAX_CLASSES": 16384}, 2049, 16384))
    for config in (StreamConfig(256, 4), StreamConfig(256, 4, True, 64),
                   StreamConfig(256, 2, True, 32)):
        found.append(Variant(f"row stream {_stream_name(config)}",
                             {"ROW_STREAM": _every_type(config)}, 2049, 16384))
    # 1025-2048 classes: the streaming kernel (ROW_STREAM's) instead of a block per row
    found.append(Variant("row stream from 1025 classes", {"ROWS_MAX_CLASSES": 1024},
                         1025, 2048))
    # 513-1024 classes: a warp per row (VPT 32), rows per block and blocks per SM
    # (ce_rows_plain, the plain call's kernel)
    for config in (RowConfig(32, 32, 2, 8), RowConfig(32, 32, 4, 4)):
        found.append(Variant(f"rows threads={config.threads} vpt={config.values_per_thread} "
                             f"rows={config.rows_per_block} min_blocks={config.min_blocks}",
                             {"ROW_CONFIGS": (config,)}, 513, 1024))
    found.append(Variant("small rows=64", {"SMALL_ROWS": 64}, 1, 32))
    return found


def kernel_expressions(variant: Variant, type_name: str) -> list[str]:
    """The main kernels ``variant`` adds to the defaults' for ``type_name`` (plain and
    soft-capped where it changes the streaming kernel): what ``ci/check_kernels.py
    --sweep`` compiles."""
    found = []
    for config in variant.settings.get("ROW_CONFIGS", ()):
        found.append(config.expression(type_name))
        if config.threads == 32:  # and the plain call's (CE_ROWS_PLAIN, the default)
            found.append(config.expression(type_name, plain=True))
    for setting in ("STREAM", "ROW_STREAM"):
        stream = variant.settings.get(setting)
        if stream is not None:
            found += [stream[type_name].expression(type_name, False, capped)
                      for capped in (False, True)]
    rows = variant.settings.get("SMALL_ROWS")
    if rows is not None:
        found.append(small_expression(type_name, rows))
    return found


def sweep_modules(per_module: int = 4) -> list[tuple[str, list[str]]]:
    """Every kernel the sweep's variants add, for the cases' types, a few per module:
    ``ci/check_kernels.py --sweep`` compiles them for sm_90 (registers and spills)."""
    from lossbackends._cuda_sources import TYPE_NAMES

    names = []
    for case in CASES:
        for variant in variants():
            if variant.applies(case):
                names += [e for e in kernel_expressions(variant, TYPE_NAMES[case.dtype])
                          if e not in names]
    return [("cross_entropy.cu", names[i:i + per_module])
            for i in range(0, len(names), per_module)]


@contextlib.contextmanager
def applied(settings: dict) -> Iterator[None]:
    """The CuPy backend with ``settings`` for the block's calls."""
    from lossbackends.backends import cupy_backend

    before = {name: getattr(cupy_backend, name) for name in settings}
    for name, value in settings.items():
        setattr(cupy_backend, name, value)
    try:
        yield
    finally:
        for name, value in before.items():
            setattr(cupy_backend, name, value)


# --- inputs ------------------------------------------------------------------------------


def inputs(case: Case):
    """(labels, logits, gradient buffer, sampled rows): random logits (normal, scale 3) and
    labels made on the device, one sampled row's label ignore_index; torch tensors for
    bfloat16 (the library's bfloat16 path), CuPy arrays otherwise."""
    rows, classes = case.rows, case.classes
    sample = np.unique(np.linspace(0, rows - 1, 33).astype(np.int64))
    if case.dtype == "bfloat16":
        import torch

        generator = torch.Generator(device="cuda").manual_seed(0)
        logits = torch.randn(rows, classes, device="cuda", generator=generator)
        logits = (logits * 3).to(torch.bfloat16)
        labels = torch.randint(0, classes, (rows,), device="cuda", generator=generator)
        labels[int(sample[1])] = -100
        return labels, logits, torch.empty_like(logits), sample
    made = core.device_inputs("cross_entropy", (rows, classes), case.dtype)
    labels, logits = made["y"], made["p"]
    labels[int(sample[1])] = -100
    return labels, logits, logits.copy(), sample


def _host(a, rows=None) -> np.ndarray:
    if hasattr(a, "detach"):  # torch
        import torch

        a = a if rows is None else a[torch.as_tensor(rows, device=a.device)]
        return a.detach().float().cpu().numpy().astype(np.float64)
    import cupy as cp

    a = a if rows is None else a[cp.asarray(rows)]
    return cp.asnumpy(a).astype(np.float64)


TOLERANCE = {"float32": 1e-4, "float16": 3e-2, "bfloat16": 6e-2}


def _module(a):
    """torch or cupy, whichever ``a`` belongs to (both have where, isfinite)."""
    if hasattr(a, "detach"):
        import torch

        return torch
    import cupy

    return cupy


def row_error(case: Case, labels, logits, grad, sample, shift: int = 0) -> float:
    """Largest error of the sampled rows' losses (relative to max(|loss|, 1)) and
    gradients (relative to the largest gradient), ``"none"`` without the label check,
    against the NumPy backend in float64; inf where any element of the gradient or any
    loss is not finite. The gradient goes into ``grad``, filled with NaN first, and the
    labels (not the ignored row's) move by ``shift`` classes: the buffers a kernel fails
    to write would otherwise still hold the right values, a previous variant's (the same
    inputs, the memory pool's same blocks)."""
    import lossbackends as lb

    xp = _module(logits)
    if shift:
        labels = xp.where(labels == -100, labels, (labels + shift) % case.classes)
    if hasattr(grad, "fill_"):  # torch
        grad.fill_(float("nan"))
    else:
        grad.fill(np.nan)
    losses, grad = lb.cross_entropy.value_and_grad(labels, logits, reduction="none",
                                                   check_labels=False, out=grad)
    if not (bool(xp.isfinite(grad).all()) and bool(xp.isfinite(losses).all())):
        return float("inf")
    x = _host(logits, sample)
    y = _host(labels, sample).astype(np.int64)
    want_losses, want_grad = lb.cross_entropy.value_and_grad(y, x, reduction="none",
                                                             backend="numpy")
    got_losses, got_grad = _host(losses, sample), _host(grad, sample)
    loss_error = np.max(np.abs(got_losses - want_losses) / np.maximum(np.abs(want_losses), 1.0))
    grad_error = np.max(np.abs(got_grad - want_grad)) / max(np.max(np.abs(want_grad)), 1e-30)
    error = float(max(loss_error, grad_error))
    return error if math.isfinite(error) else float("inf")


# --- compiling ---------------------------------------------------------------------------


def _compile(job: tuple[Case, Variant]) -> str:
    """In a worker: the kernels ``variant`` runs for ``case``'s class count, compiled
    (into the backend's on-disk cache, ``_nvrtc``) by the calls themselves on two rows."""
    case, variant = job
    try:
        import lossbackends as lb

        small = Case(2, case.classes, case.dtype)
        labels, logits, grad, _ = inputs(small)
        with applied(variant.settings):
            for reduction in ("none", "mean"):
                lb.cross_entropy.value_and_grad(labels, logits, reduction=reduction,
                                                check_labels=False, out=grad)
            lb.cross_entropy.value_and_grad(labels, logits, out=grad)
        return ""
    except Exception as exc:  # reported by the measuring process, which meets it again
        return f"{type(exc).__name__}: {exc}"


def precompile(jobs: list[tuple[Case, Variant]], workers: int) -> None:
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # (CUDA in forked children fails)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        for (case, variant), error in zip(jobs, pool.map(_compile, jobs), strict=True):
            if error:
                print(f"  compile {case.name} {variant.name}: {error[:300]}", flush=True)


# --- measuring ---------------------------------------------------------------------------


def _is_main(name: str) -> bool:
    """Whether kernel ``name`` computes the rows (not a Hessian instance or a helper)."""
    return name.startswith(("ce_small<", "ce_rows<")) or (
        name.startswith("ce_stream<") and ", false," in name)


def measure(case: Case, variant: Variant, labels, logits, grad, sample, copy_gbps: float,
            repeats: int, shift: int = 0) -> dict:
    import lossbackends as lb
    from lossbackends.backends import cupy_backend

    itemsize = 2 if case.dtype in ("float16", "bfloat16") else 4
    nbytes = 2 * case.rows * case.classes * itemsize + 8 * case.rows
    result = {"case": case.name, "rows": case.rows, "classes": case.classes,
              "dtype": case.dtype, "variant": variant.name, "copy_gbps": round(copy_gbps, 1)}
    device = cupy_backend._device()
    with applied(variant.settings):
        known = set(device._functions)
        try:
            error = row_error(case, labels, logits, grad, sample, shift)
        except Exception as exc:  # a kernel that does not build or launch: the next one
            result.update(ok=False, note=f"{type(exc).__name__}: {str(exc)[:200]}")
            return result
        # the main kernel it ran (when this process had not loaded it before), and the
        # registers it took: "ce_rows<float, 32, 32, 4, 2>:78r"
        result["kernels"] = " ".join(
            f"{key[1]}:{function.num_regs}r" for key, function in device._functions.items()
            if key not in known and _is_main(key[1]))
        result["max_error"] = error
        result["ok"] = error <= TOLERANCE[case.dtype]
        if not result["ok"]:
            result["note"] = f"error {error:.3g} above {TOLERANCE[case.dtype]:g}: not timed"
            return result

        def call(reduction, check=False, out=True, **options):
            return lambda: lb.cross_entropy.value_and_grad(
                labels, logits, reduction=reduction, check_labels=check,
                out=grad if out else None, **options)

        timed = {"none": call("none"), "mean": call("mean")}
        if case.classes > 4096:  # softcap's streaming kernels: their own packs in flight
            timed["softcap"] = call("none", softcap=30.0)
        if variant.name == "default":
            timed["mean_checked"] = call("mean", check=True)
            timed["mean_checked_alloc"] = call("mean", check=True, out=False)
        for label, function in timed.items():
            try:  # ("mean" launches kernels "none" did not: the next variant all the same)
                times = core.time_gpu(function, repeats=repeats)
            except Exception as exc:
                result.update(ok=False, note=f"{label}: {type(exc).__name__}: {str(exc)[:200]}")
                return result
            seconds = statistics.median(times)
            result[f"{label}_s"] = seconds
            result[f"{label}_gbps"] = round(nbytes / seconds / 1e9, 1)
            result[f"{label}_of_copy"] = round(nbytes / seconds / 1e9 / copy_gbps, 3)
    return result


COLUMNS = ("case", "rows", "classes", "dtype", "variant", "ok", "max_error", "kernels",
           "none_s", "none_gbps", "none_of_copy", "mean_s", "mean_gbps", "mean_of_copy",
           "mean_checked_s", "mean_checked_of_copy", "mean_checked_alloc_s",
           "mean_checked_alloc_of_copy", "softcap_s", "softcap_of_copy", "copy_gbps", "note")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_sweep",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="sweep-out", help="folder for sweep.csv and sweep.json")
    parser.add_argument("--budget", type=float, default=240.0,
                        help="seconds of measuring (after compiling); cases left after it are "
                             "listed as skipped")
    parser.add_argument("--cases", nargs="*", help="only these cases (e.g. 4096x32000-float32)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--list", action="store_true", help="print the plan and exit (no GPU)")
    args = parser.parse_args(argv)
    cases = [c for c in CASES if not args.cases or c.name in args.cases]
    plan = [(case, variant) for case in cases for variant in variants() if variant.applies(case)]
    if args.list:
        for case, variant in plan:
            print(f"{case.name:24s} {variant.name}")
        print(f"{len(plan)} measurements")
        return 0

    import cupy as cp

    start = time.perf_counter()
    os.makedirs(args.out, exist_ok=True)
    print(f"compiling {len(plan)} settings' kernels", flush=True)
    try:
        precompile(plan, workers=min(len(plan), os.cpu_count() or 1, 16))
    except Exception as exc:  # then each variant compiles on its first call, one by one
        print(f"  compiling in workers failed ({type(exc).__name__}: {exc})", flush=True)
    print(f"  {time.perf_counter() - start:.0f} s", flush=True)
    measuring = time.perf_counter()  # (the budget is the measuring's)
    copy_before = core.gpu_copy()
    print(f"copy {copy_before:.0f} GB/s", flush=True)
    rows = []
    path = os.path.join(args.out, "sweep.csv")
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for case in cases:
            todo = [v for v in variants() if v.applies(case)]
            if time.perf_counter() - measuring > args.budget:
                for variant in todo:
                    writer.writerow({"case": case.name, "variant": variant.name,
                                     "note": "skipped: budget"})
                continue
            labels, logits, grad, sample = inputs(case)
            for shift, variant in enumerate(todo):
                found = measure(case, variant, labels, logits, grad, sample, copy_before,
                                args.repeats, shift)
                rows.append(found)
                writer.writerow(found)
                f.flush()
                share = found.get("mean_of_copy")
                print(f"{case.name:24s} {variant.name:44s} "
                      f"{'ok' if found.get('ok') else 'FAIL'} none {found.get('none_of_copy', '-')} "
                      f"mean {share if share is not None else '-'} {found.get('note', '')}",
                      flush=True)
            del labels, logits, grad
            cp.get_default_memory_pool().free_all_blocks()
    copy_after = core.gpu_copy()
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.runtime.getDevice())
    meta = {"device": props["name"].decode(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                      time.gmtime()),
            "copy_gbps_before": copy_before, "copy_gbps_after": copy_after,
            "cupy": cp.__version__, "seconds": time.perf_counter() - start}
    with open(os.path.join(args.out, "sweep.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"copy {copy_after:.0f} GB/s after; {path}; {meta['seconds']:.0f} s")
    return 0 if all(r.get("ok") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
