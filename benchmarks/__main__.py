"""The benchmark suite: throughput across array sizes for every loss, backend and peer,
against the memory bandwidth measured in the same run (on the host, around each case).

    python -m benchmarks --quick --out bench-out        # the README's main job (13-16 min)
    python -m benchmarks --device gpu --out DIR         # on a GPU machine (ci/gpu)
    python -m benchmarks compare A.csv B.csv [--fail]   # ratio of two runs, row by row
                                                        # (--fail: exit 1 if any is >10 % slower)
    python -m benchmarks --torch-module ...             # + lossbackends.torch's step rows
    python -m benchmarks --dask --out DIR               # the Dask rows alone (several GB)

Writes DIR/results_DEVICE.csv, DIR/run_DEVICE.json and DIR/*.png, and prints a summary
table; on the host also DIR/summary_host.md, the host table of the docs' performance page
(our default call beside ``out=``, each against the best peer like with like, and the triad
around it), and, when every loss is measured, DIR/results_boosting.csv (the boosting
objectives against hand-written NumPy ones: ``boosting_rows.py``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import lossbackends as lb

from . import core, report, startup
from .providers import providers

HOST_SIZES = [int(10**e) for e in np.arange(3, 8.01, 0.5)]  # 1e3 .. 1e8, log-spaced
GPU_SIZES = [10**3, 10**4, 10**5, 10**6, 10**7, 10**8, 10**9]
HOST_CE = [(64, 10), (1024, 100), (4096, 1000), (1024, 32000), (256, 128256)]
GPU_CE = [(1048576, 10), (65536, 1000), (16384, 8192), (4096, 32000), (8192, 128256)]
QUICK = {
    "host": ([10**3, 10**4, 10**5, 10**6, 10**7], [(64, 10), (4096, 1000), (1024, 32000)]),
    "gpu": ([10**3, 10**6, 10**8, 10**9], GPU_CE),
}
SMOKE = ([1000, 20000], [(16, 10), (8, 300)])
# Above this many elements the host run leaves out the NumPy backend and the seed unless
# --backends names them: a loss with transcendental functions took 10-40 s a call there at
# 1e8 (a pass over memory per operation, float32 temporaries), minutes of samples per case
# that would dominate the run; the rows up to 1e7 already compare them.
HOST_REFERENCE_MAX = 10**7


def _shape(text: str) -> tuple[int, int]:
    rows, _, classes = text.lower().partition("x")
    try:
        shape = int(rows), int(classes)
        if min(shape) < 1:
            raise ValueError
        return shape
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a shape as ROWSxCLASSES, "
                                         "e.g. 4096x1000") from None


def _size(text: str) -> int:
    """A whole number of elements >= 1, written as 1e7 or 10000000."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (1 <= value < float("inf") and value == int(value)):  # NaN, inf, 0, fractions
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of elements >= 1, "
                                         "e.g. 1e7")
    return int(value)


def _budget(text: str) -> float:
    """Seconds >= 0 (0: no limit)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0:  # (NaN too)
        raise argparse.ArgumentTypeError(f"{text!r}: give seconds >= 0 (0: no limit)")
    return value


def parse(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--device", choices=["host", "gpu"], default="host")
    parser.add_argument("--quick", action="store_true",
                        help="fewer sizes, value_and_grad only, 7 rounds of samples a case "
                        "(a full run 15), torch.compile with dynamic shapes (13-16 min on the "
                        "2-core development machine with the peers)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the suite runs")
    parser.add_argument("--losses", nargs="+", choices=core.LOSSES, default=list(core.LOSSES))
    parser.add_argument("--ops", nargs="+", choices=core.OPS)
    parser.add_argument("--backends", nargs="+", help="backends and peers to include")
    parser.add_argument("--dtypes", nargs="+", choices=["float16", "float32", "float64"])
    parser.add_argument("--sizes", nargs="+", type=_size, help="elementwise sizes, e.g. 1e6 1e7")
    parser.add_argument("--shapes", nargs="+", type=_shape, metavar="NxC",
                        help="row losses' shapes (cross_entropy...), e.g. 4096x1000")
    parser.add_argument("--dask", action="store_true",
                        help="the Dask rows instead of the suite (several GB; see dask_rows.py)")
    parser.add_argument("--torch-module", action="store_true",
                        help="add lossbackends.torch's training-step rows (benchmarks/torch_module.py)")
    parser.add_argument("--budget", type=_budget, default=0.0,
                        help="seconds after which peers are skipped (0: no limit)")
    return parser.parse_args(argv)


def _commit() -> str | None:
    """The commit of the code measured (``-dirty`` with uncommitted changes to tracked
    files), or None outside a git checkout."""
    where = Path(lb.__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short=7", "HEAD"], cwd=where, check=True,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=where, check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("-dirty" if dirty.strip() else "")


def metadata(device: str, rooflines: dict) -> dict:
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device, "python": platform.python_version(), "machine": platform.machine(),
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "numpy": np.__version__, "lossbackends": lb.__version__, "rooflines_gbps": rooflines,
        # PyTorch's CPU kernels and the triad's Numba kernel run OpenMP thread pools, which by
        # default spin for a while after their work. The suite leaves OpenMP's policy as users
        # have it (run_host.json records OMP_WAIT_POLICY): the pause before each in-turn sample
        # (core.SETTLE) outlasts the spin, so a pool spins through its own back-to-back calls,
        # as in a training loop, and not through the next provider's samples. (It set PASSIVE
        # until 2026-12-03, when Numba's OpenMP layer still ran our kernels: there PyTorch's MSE
        # at n = 1e6 took twice as long, and so did the triad.)
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "command": " ".join(["python -m benchmarks", *sys.argv[1:]]),
        "commit": _commit(), "rounds": core.ROUNDS,
    }
    try:
        with open("/proc/cpuinfo") as f:
            meta["cpu"] = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    for module in ("numba", "cupy", "torch", "jax", "liger_kernel"):
        if module in sys.modules:
            meta[module] = getattr(sys.modules[module], "__version__", "?")
    if "numba" in sys.modules:
        import numba

        meta["numba_threads"] = numba.config.NUMBA_NUM_THREADS
        try:
            meta["numba_threading_layer"] = numba.threading_layer()
        except ValueError:  # no parallel kernel has run in this process
            meta["numba_threading_layer"] = None
    if device == "gpu":
        import cupy as cp

        props = cp.cuda.runtime.getDeviceProperties(cp.cuda.runtime.getDevice())
        meta["gpu"] = props["name"].decode()
        meta["gpu_memory_gib"] = props["totalGlobalMem"] / 2**30
    return meta


def small_call_rows(device: str, roofline: float) -> list[dict]:
    """The per-call cost at n = 1000: the whole public call, and for NumPy the dispatch
    layer alone (public call minus the registered kernel called directly)."""
    rows = []
    rng = np.random.default_rng(5)
    y = rng.random(1000, dtype=np.float32)
    p = rng.random(1000, dtype=np.float32)
    if device == "host":
        from lossbackends.backends import numpy_backend

        backends = [b for b in ("numpy", "numba") if b in lb.available_backends()]
        # the backends' samples in turn, 21 each over about 4 s: this host has slow spells
        # of 0.1-0.5 s (its neighbours), and 9 samples in 0.3 s, one backend after the
        # other, gave a median of 3.73 us where 2.15 was the speed before and after
        calls = [lambda b=b: lb.mse.value_and_grad(y, p, backend=b) for b in backends]
        for backend, times in zip(backends, core.time_host_in_turn(calls, 2.0, 21),
                                  strict=True):
            rows.append(core.row("mse", "call_n1000", backend, "float32", (1000,), times,
                                 12000, roofline, device=device))

        def direct():
            grad = np.empty_like(p)
            return numpy_backend.mse(y, p, None, (), "mean", 1e-3, grad, True), grad

        # (41 differences over about 2 s, for the same reason)
        overhead = core.time_host_difference(
            lambda: lb.mse.value_and_grad(y, p, backend="numpy"), direct, 2.0, 41)
        rows.append(core.row("mse", "dispatch_overhead", "numpy", "float32", (1000,), overhead,
                             1, roofline, device=device))
    else:
        import cupy as cp

        yd, pd = cp.asarray(y), cp.asarray(p)
        gd = cp.empty_like(pd)
        # the GPU issue's bars: the default call under 20 us, with out= under 15 us
        for op, call in (("call_n1000", lambda: lb.mse.value_and_grad(yd, pd)),
                         ("call_n1000_out", lambda: lb.mse.value_and_grad(yd, pd, out=gd)),
                         ("value_call_n1000", lambda: lb.mse(yd, pd))):
            rows.append(core.row("mse", op, "cupy", "float32", (1000,), core.time_gpu_wall(call),
                                 12000, roofline, device=device))
    return rows


def probability_label_rows(args, ops, chosen, started, sizes, roofline) -> list[dict]:
    """binary_cross_entropy with labels between 0 and 1 (distillation, label smoothing),
    every provider as in the grid: the grid's labels are 0 and 1, which the Numba backend
    computes with one log per element instead of two, so this case is measured apart (its
    rows named ``core.PROBABILITY_LABELS``)."""
    return [{**r, "loss": core.PROBABILITY_LABELS}
            for n in sizes
            for r in _case_rows(args, ops, chosen, started, "binary_cross_entropy", "float32",
                                (n,), roofline, probability_labels=True)]


def _case_rows(args, ops, chosen, started, loss, dtype, shape, roofline, *,
               probability_labels=False) -> list[dict]:
    """Every provider's rows for one (loss, dtype, shape), each result checked first
    (``probability_labels``: ``core.host_inputs``'s)."""
    device = args.device
    try:
        inputs = (core.device_inputs(loss, shape, dtype) if device == "gpu"
                  else core.host_inputs(loss, shape, dtype,
                                        probability_labels=probability_labels))
    except MemoryError:
        return []
    if device == "gpu" and int(np.prod(shape)) <= 10**7:
        inputs = core.to_device(core.host_inputs(loss, shape, dtype))
    expected = {None: core.reference(loss, "value_and_grad", inputs)}
    itemsize = np.dtype(dtype).itemsize
    rows, pending = [], []  # pending: host calls, timed together below
    for provider in chosen:
        if not provider.ours and args.budget and time.time() - started > args.budget:
            continue
        if (device == "host" and not args.backends and int(np.prod(shape)) > HOST_REFERENCE_MAX
                and provider.name.split(":")[0] in ("numpy", "seed")):
            continue
        for op in ops:
            try:
                call = provider.make(loss, op, inputs)
                if call is None:
                    continue
                if provider.loss not in expected:  # a loss other than the case's
                    expected[provider.loss] = core.reference(provider.loss, "value_and_grad",
                                                             inputs)
                # checked before it is timed
                error = core.check(call(), expected[provider.loss], dtype)
                nbytes = core.minimum_bytes(loss, op, shape, itemsize)
                if device == "gpu":  # one provider's buffers on the device at a time
                    rows.append(core.row(loss, op, provider.name, dtype, shape,
                                         core.time_gpu(call), nbytes, roofline, device=device,
                                         max_rel_error=error, form=provider.form,
                                         peer=provider.peer))
                else:
                    pending.append((provider, op, call, nbytes, error))
            except Exception as exc:  # a peer that cannot run a case is noted, not fatal
                if provider.ours:
                    raise
                print(f"  {provider.name} {loss} {op} {dtype} {shape}: {type(exc).__name__}: "
                      f"{str(exc)[:120]}", file=sys.stderr)
    # On the host every provider's samples are taken in turn, so that their ratios hold
    # while the machine's bandwidth moves, and with them the triad's (over the case's own
    # traffic, value_and_grad's, or TRIAD_ELEMENTS where that is more: the memory's speed,
    # not the caches'), in the same moments: the roofline of the case's rows.
    # --quick: 0.1 s of samples per provider, so that the run with every peer stays short
    if pending:
        traffic = core.minimum_bytes(loss, "value_and_grad", shape, itemsize)
        times, roofline = core.time_host_with_triad([call for _, _, call, _, _ in pending],
                                                    traffic, 0.1 if args.quick else 0.2)
        rows += [core.row(loss, op, provider.name, dtype, shape, samples, nbytes, roofline,
                          device=device, max_rel_error=error, form=provider.form,
                          peer=provider.peer, roofline_gbps=roofline)
                 for (provider, op, _, nbytes, error), samples in zip(pending, times,
                                                                      strict=True)]
    report.add_peer_ratios(rows)
    del inputs, expected, pending
    if device == "gpu":
        import cupy as cp

        cp.get_default_memory_pool().free_all_blocks()
        if "torch" in sys.modules:
            sys.modules["torch"].cuda.empty_cache()
    return rows


def run(args) -> list[dict]:
    device = args.device
    if args.smoke:  # does the suite run? (no figure of a smoke run means anything)
        core.TIME_SCALE, core.TRIAD_ELEMENTS = 0.05, 1 << 20
    if args.quick or args.smoke:
        core.ROUNDS, core.SAMPLE_SECONDS = 7, 0.0
    if device == "gpu" and "cupy" not in lb.available_backends():
        raise SystemExit("--device gpu needs CuPy and a CUDA GPU, and this machine has no "
                         "usable one (python -m lossbackends says why)")
    offered = providers(device, quick=args.quick or args.smoke)
    unknown = sorted(set(args.backends or ()) - {p.name for p in offered})
    if unknown:  # a typo would measure nothing and still exit 0
        raise SystemExit(f"--backends: no provider named {', '.join(unknown)} on the {device}; "
                         f"choose from {', '.join(p.name for p in offered)}")
    if device == "gpu":
        roofline_name, roofline = "device-to-device copy", core.gpu_copy()
    else:
        roofline_name, roofline = core.host_triad()
    print(f"roofline ({device}, {roofline_name}): {roofline:.1f} GB/s at the start"
          + ("; each case's % is of the triad taken in turn with its samples"
             if device == "host" else ""))
    sizes, ce_shapes = (QUICK[device] if args.quick else
                        (HOST_SIZES, HOST_CE) if device == "host" else (GPU_SIZES, GPU_CE))
    if args.smoke:
        sizes, ce_shapes = SMOKE
    if args.sizes:
        sizes = args.sizes
    if args.shapes:
        ce_shapes = args.shapes
    ops = args.ops or (["value_and_grad"] if args.quick or args.smoke else list(core.OPS))
    dtypes = args.dtypes or (["float32", "float16"] if device == "gpu" else ["float32"])
    chosen = [p for p in offered if not args.backends or p.name in args.backends]
    grid = []
    # cross-entropy first: with a time budget, its peer comparisons are the ones kept
    for loss in sorted(args.losses, key=lambda name: name not in core.ROW_LOSSES):
        shapes = ce_shapes if loss in core.ROW_LOSSES else [(n,) for n in sizes]
        for dtype in dtypes:
            if dtype == "float16" and loss in core.ROW_LOSSES and device == "gpu":
                shapes_here = [s for s in shapes if s[1] == 128256] or shapes[:1]
            else:
                shapes_here = shapes
            grid += [(loss, dtype, shape) for shape in shapes_here]
    try:
        from tqdm import tqdm
    except ImportError:  # the progress bar is a nicety
        def tqdm(x, **_):
            return x

    started = time.time()
    # per-call costs first, before peers start threads or compiler workers that compete
    # for the CPU the Python side runs on
    rows = small_call_rows(device, roofline)
    # what a new process pays first: the import, and the first calls (fresh processes;
    # a smoke run's on NumPy, which compiles nothing on a fresh clone: 10 s less of CI)
    first_backend = ("cupy" if device == "gpu" else
                     "numba" if "numba" in lb.available_backends() and not args.smoke
                     else "numpy")
    # (3 processes on a GPU, whose minutes are few)
    rows += startup.rows(device, first_backend, roofline,
                         samples=1 if args.smoke else 3 if device == "gpu" else 7)
    if device == "host" and "binary_cross_entropy" in args.losses and not args.smoke:
        rows += probability_label_rows(args, ops, chosen, started,
                                       [n for n in sizes if n >= 10**6], roofline)
    for loss, dtype, shape in tqdm(grid if chosen else [], desc=f"benchmarks ({device})",
                                   unit="case"):  # no provider chosen: no case to measure
        case_rows = _case_rows(args, ops, chosen, started, loss, dtype, shape, roofline)
        # (host rows carry the triad taken in turn with them; GPU rows the run's copy)
        rows += case_rows if device == "host" else [{**r, "roofline_gbps": roofline}
                                                    for r in case_rows]
    if args.torch_module:
        from . import torch_module

        size = "smoke" if args.smoke else "quick" if args.quick else "full"
        rows += torch_module.rows(device, roofline, size)
    # the run's roofline as a row of its own: 1e9 roofline bytes in one second, so that
    # its gbps column is the roofline in GB/s (a fraction of 1)
    rows.insert(0, core.row("roofline", roofline_name, device, "float32", (0,), [1.0],
                            roofline * 1e9, roofline, device=device))
    return rows, {device: roofline}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["compare"]:
        # --fail: exit 1 when a row of B is slower than A's by more than 10 % (a gate for
        # scripts; on a noisy host, only runs long enough that a row's noise stays under it)
        fail = "--fail" in argv
        usage = ("usage: python -m benchmarks compare A.csv B.csv [--fail]\n\nB's time over "
                 "A's, row by row, for two results_*.csv of the suite on one device;\n--fail: "
                 "exit 1 if a row of B is more than 10 % slower")
        if "-h" in argv or "--help" in argv:
            print(usage)
            return 0
        files = [a for a in argv[1:] if a != "--fail"]
        if len(files) != 2:
            print(usage, file=sys.stderr)
            return 2
        missing = [name for name in files if not Path(name).is_file()]
        if missing:
            print(f"compare: no file {', '.join(missing)} (give two results_*.csv of the "
                  "suite)", file=sys.stderr)
            return 2
        try:
            slower = report.compare(Path(files[0]), Path(files[1]))
        except ValueError as exc:
            print(f"compare: {exc}", file=sys.stderr)
            return 2
        return 1 if fail and slower else 0
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.dask:
        from . import dask_rows

        roofline = core.host_triad()[1]
        rows = dask_rows.run(roofline)
        report.write_csv(args.out / "results_dask.csv", rows)
        report.write_json(args.out / "run_dask.json", metadata("host", {"host": roofline}))
        print(report.summary(rows))
        return 0
    rows, rooflines = run(args)
    prefix = "" if not args.smoke else "smoke_"
    report.write_csv(args.out / f"{prefix}results_{args.device}.csv", rows)
    report.write_json(args.out / f"{prefix}run_{args.device}.json", metadata(args.device, rooflines))
    report.plot(args.out, [r for r in rows if r["loss"] != "roofline"], rooflines, prefix)
    print(report.summary([r for r in rows if r["loss"] != "roofline"]))
    if args.device == "host":
        table = report.host_table(rows)
        options = report.option_table(rows)
        if options:
            table += "\n\n" + options
        (args.out / f"{prefix}summary_host.md").write_text(table + "\n")
        print("\nvalue_and_grad: GB/s of minimum traffic (% of the case's triad, taken in turn "
              "with its samples); ratios of time, like with like\n" + table)
    if args.device == "host" and args.losses == list(core.LOSSES):
        # the boosting objectives against the NumPy objectives users write by hand
        # (TIME_SCALE shortens a smoke run's samples; its n is a thousand)
        from . import boosting_rows

        boosting = boosting_rows.run(1000 if args.smoke else 10**6)
        boosting_rows.write(args.out / f"{prefix}results_boosting.csv", boosting)
        print("\n" + boosting_rows.summary(boosting))
    for r in rows if args.device != "host" else ():  # (the host table has them)
        if r["op"] in ("call_n1000", "call_n1000_out"):
            out = " with out=" if r["op"].endswith("_out") else ""
            print(f"public call at n=1000 ({r['backend']}){out}: "
                  f"{1e6 * r['seconds_median']:.2f} us")
    if args.device != "host":
        print("\n".join(startup.lines(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
