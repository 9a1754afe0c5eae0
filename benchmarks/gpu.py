"""GPU benchmarks: our CuPy kernels beside PyTorch eager, torch.compile and Liger-Kernel,
all in one run against the device-to-device copy bandwidth measured in the same run.

    PYTHONPATH=. python -m benchmarks.gpu --out DIR [--quick]

Times are CUDA-event medians after warm-up; GB/s count the minimum traffic (inputs read
once, the gradient written once); every timed result is checked against a float64
computation first. Writes DIR/gpu.csv and DIR/gpu.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import cupy as cp
import numpy as np

import lossbackends as lb
from benchmarks.report import write_csv

CE_SHAPES = [
    ((8192, 128256), "float32"),
    ((8192, 128256), "float16"),
    ((4096, 32000), "float32"),
    ((65536, 1000), "float32"),
    ((16384, 8192), "float32"),
    ((1048576, 10), "float32"),
]


def time_events(fn, repeats: int = 20, warmup: int = 3) -> list[float]:
    """Device time per call from CUDA events, calls queued back to back (the host runs
    ahead, as in a training loop), so a call's host overhead hides behind the previous
    call's kernels once those are long enough."""
    for _ in range(warmup):
        fn()
    cp.cuda.Device().synchronize()
    events = [cp.cuda.Event() for _ in range(repeats + 1)]
    events[0].record()
    for i in range(repeats):
        fn()
        events[i + 1].record()
    events[-1].synchronize()
    return [cp.cuda.get_elapsed_time(a, b) / 1e3 for a, b in zip(events, events[1:], strict=False)]


def copy_bandwidth() -> float:
    n = 1 << 28  # 1 GiB of float32
    src = cp.random.RandomState(0).random_sample(n, dtype=cp.float32)
    dst = cp.empty_like(src)
    times = time_events(lambda: dst.data.copy_from_device(src.data, src.nbytes))
    return 2 * src.nbytes / statistics.median(times) / 1e9


def row(loss, op, backend, dtype, n, times, nbytes, roofline, **extra):
    median = statistics.median(times)
    gbps = nbytes / median / 1e9
    return {"loss": loss, "op": op, "backend": backend, "dtype": dtype, "n": n,
            "seconds_median": median, "seconds_min": min(times), "seconds_max": max(times),
            "gbps": gbps, "roofline_fraction": gbps / roofline, **extra}


def bench_elementwise(rows, roofline, sizes, dtypes):
    for dtype in dtypes:
        for n in sizes:
            rng = cp.random.RandomState(1)
            y = rng.random_sample(n, dtype=cp.float32).astype(dtype)
            p = rng.standard_normal(n, dtype=cp.float32).astype(dtype)
            out = cp.empty_like(p)
            value, grad = lb.mse.value_and_grad(y, p, out=out)
            ref = float(cp.mean((p.astype(cp.float64) - y.astype(cp.float64)) ** 2))
            assert abs(float(value) - ref) <= 2e-3 * ref, (float(value), ref)
            nbytes = 3 * n * p.dtype.itemsize
            times = time_events(lambda: lb.mse.value_and_grad(y, p, out=out))
            rows.append(row("mse", "value_and_grad", "cupy", dtype, n, times, nbytes, roofline))
            try:
                import torch

                ty = torch.as_tensor(y, device="cuda")
                tp = torch.as_tensor(p, device="cuda").clone().requires_grad_(True)

                def torch_eager():
                    tp.grad = None
                    loss = torch.nn.functional.mse_loss(tp, ty)
                    loss.backward()

                times = time_events(torch_eager)
                rows.append(row("mse", "value_and_grad", "torch", dtype, n, times, nbytes, roofline))
            except ImportError:
                pass
            y = p = out = None
            cp.get_default_memory_pool().free_all_blocks()


def profile_small_call(path):
    """Where the host time of a small call goes (cProfile, 2000 calls)."""
    import cProfile
    import pstats

    rng = cp.random.RandomState(2)
    y = rng.random_sample(1000, dtype=cp.float32)
    p = rng.random_sample(1000, dtype=cp.float32)
    lb.mse.value_and_grad(y, p)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(2000):
        lb.mse.value_and_grad(y, p)
    profiler.disable()
    with open(path, "w") as f:
        pstats.Stats(profiler, stream=f).sort_stats("tottime").print_stats(30)


def small_call_overhead(rows, roofline):
    """Wall time of a whole public call at n = 1000 (dispatch, launch, allocation)."""
    rng = cp.random.RandomState(2)
    y = rng.random_sample(1000, dtype=cp.float32)
    p = rng.random_sample(1000, dtype=cp.float32)
    for op in ("value_and_grad", "value"):
        call = (lambda: lb.mse.value_and_grad(y, p)) if op == "value_and_grad" else (lambda: lb.mse(y, p))
        for _ in range(100):
            call()
        cp.cuda.Device().synchronize()
        samples = []
        for _ in range(30):
            start = time.perf_counter()
            for _ in range(100):
                call()
            cp.cuda.Device().synchronize()
            samples.append((time.perf_counter() - start) / 100)
        rows.append(row("mse", op + "_wall", "cupy", "float32", 1000, samples, 12000, roofline))


def _torch_ce(x, t, mode):
    import torch
    import torch.nn.functional as F

    tx = torch.as_tensor(x, device="cuda").clone().requires_grad_(True)
    tt = torch.as_tensor(t, device="cuda")
    if mode == "torch.compile":
        loss_fn = torch.compile(lambda a, b: F.cross_entropy(a, b), dynamic=False)
    elif mode == "liger":
        from liger_kernel.transformers import LigerCrossEntropyLoss

        loss_fn = LigerCrossEntropyLoss()
    else:
        loss_fn = F.cross_entropy

    def step():
        tx.grad = None
        loss = loss_fn(tx, tt)
        loss.backward()
        return loss

    return step, tx


def bench_cross_entropy(rows, roofline, shapes, peers, strategies, deadline):
    from lossbackends.backends import cupy_backend

    for (n_rows, classes), dtype in shapes:
        rng = cp.random.RandomState(3)
        x = rng.standard_normal((n_rows, classes), dtype=cp.float32).astype(dtype)
        t = rng.randint(0, classes, n_rows).astype(cp.int64)
        nbytes = 2 * x.nbytes + t.nbytes
        out = cp.empty_like(x)
        # correctness on a few rows against float64
        value, grad = lb.cross_entropy.value_and_grad(t, x, out=out, check_labels=False)
        sample = slice(0, 4)
        xs = x[sample].astype(cp.float64)
        lse = cp.log(cp.exp(xs - xs.max(1, keepdims=True)).sum(1)) + xs.max(1)
        ref_grad = cp.exp(xs - lse[:, None])
        ref_grad[cp.arange(4), t[sample]] -= 1
        ref_grad /= n_rows
        err = float(cp.max(cp.abs(grad[sample].astype(cp.float64) - ref_grad)) / cp.max(cp.abs(ref_grad)))
        assert err < (1e-2 if dtype == "float16" else 1e-4), err
        for strategy in strategies:
            cupy_backend.CE_STRATEGY = strategy
            name = "cupy" if strategy == "auto" else f"cupy-{strategy}"
            for check in (False, True):
                times = time_events(lambda: lb.cross_entropy.value_and_grad(
                    t, x, out=out, check_labels=check))
                rows.append(row("cross_entropy", "value_and_grad" + ("" if not check else "+check"),
                                name, dtype, f"{n_rows}x{classes}", times, nbytes, roofline))
                if strategy != "auto":
                    break
        cupy_backend.CE_STRATEGY = "auto"
        cp.get_default_memory_pool().free_all_blocks()  # room for the peers
        for peer in peers:
            if time.time() > deadline:
                print(f"skipping {peer} at {n_rows}x{classes}: time budget spent")
                continue
            try:
                step, tx = _torch_ce(x, t, peer)
                times = time_events(step, repeats=10, warmup=3)
                rows.append(row("cross_entropy", "value_and_grad", peer, dtype,
                                f"{n_rows}x{classes}", times, nbytes, roofline))
                del step, tx
            except Exception as exc:  # a peer that cannot run here is reported, not fatal
                print(f"{peer} failed at {n_rows}x{classes} {dtype}: {type(exc).__name__}: {exc}")
            import torch

            torch.cuda.empty_cache()
        x = t = out = None
        cp.get_default_memory_pool().free_all_blocks()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--budget", type=float, default=150.0, help="seconds for the peers")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.runtime.getDevice())
    roofline = copy_bandwidth()
    rows = [row("copy", "copy", "cupy", "float32", 1 << 28, [2 * (1 << 30) / roofline / 1e9], 2 * (1 << 30), roofline)]
    print(f"device {props['name'].decode()}; copy bandwidth {roofline:.0f} GB/s")
    sizes = [10**6, 10**8] if args.quick else [10**6, 10**7, 10**8, 10**9]
    bench_elementwise(rows, roofline, sizes, ["float32", "float16"])
    small_call_overhead(rows, roofline)
    profile_small_call(args.out / "small_call_profile.txt")
    peers = ["torch", "liger", "torch.compile"]
    strategies = ["auto", "stream"]
    bench_cross_entropy(rows, roofline, CE_SHAPES, peers, strategies, started + args.budget)
    write_csv(args.out / "gpu.csv", rows)
    meta = {"device": props["name"].decode(), "copy_gbps": roofline, "date": time.strftime("%Y-%m-%d"),
            "cupy": cp.__version__, "numpy": np.__version__}
    try:
        import torch

        meta["torch"] = torch.__version__
    except ImportError:
        pass
    (args.out / "gpu.json").write_text(json.dumps(meta, indent=2))
    print(f"{'loss':14s} {'op':22s} {'backend':14s} {'dtype':8s} {'n':>16s} {'median':>10s} {'GB/s':>8s} {'%copy':>6s}")
    for r in rows:
        print(f"{r['loss']:14s} {r['op']:22s} {r['backend']:14s} {r['dtype']:8s} {str(r['n']):>16s} "
              f"{r['seconds_median'] * 1e6:9.1f}u {r['gbps']:8.0f} {100 * r['roofline_fraction']:5.1f}%")


if __name__ == "__main__":
    main()
