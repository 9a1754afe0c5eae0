"""Where a GPU call's host time goes: for the calls whose bars the GPU issue has not met
(MSE at n = 1000, with and without ``out=``; cross-entropy's label check, which leaves the
card idle while the host prepares the next call), each call's host time with the card idle
at its start, its device time (CUDA events around it) and its wall time back to back, then
Python's profile of the slowest ones. On a GPU machine (``ci/gpu`` runs it after the
benchmarks, its output in ``bench.log``):

    python -m benchmarks.gpu_profile [--calls 200]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics

import numpy as np

import lossbackends as lb

from . import core


def cases():
    """(name, call) pairs on CuPy arrays."""
    import cupy as cp

    rng = np.random.default_rng(0)
    y, p = (cp.asarray(rng.random(1000, dtype=np.float32)) for _ in range(2))
    g = cp.empty_like(p)
    found = [("mse n=1000", lambda: lb.mse.value_and_grad(y, p)),
             ("mse n=1000 out=", lambda: lb.mse.value_and_grad(y, p, out=g))]
    try:  # torch CUDA tensors: DLPack both ways and torch's current stream (_arrays)
        import torch

        ty, tp = (torch.as_tensor(a, device="cuda") for a in (y, p))
        found.append(("mse n=1000 torch", lambda: lb.mse.value_and_grad(ty, tp)))
    except Exception:  # noqa: BLE001 (no torch, or none with CUDA: those rows are left out)
        pass
    for rows, classes in ((1048576, 10), (65536, 1000)):
        x = cp.asarray(rng.standard_normal((rows, classes), dtype=np.float32))
        t = cp.asarray(rng.integers(0, classes, rows))
        out = cp.empty_like(x)
        shape = f"{rows}x{classes}"
        found += [
            (f"CE {shape}", lambda t=t, x=x: lb.cross_entropy.value_and_grad(t, x)),
            (f"CE {shape} out=", lambda t=t, x=x, o=out: lb.cross_entropy.value_and_grad(
                t, x, out=o)),
            (f"CE {shape} no check", lambda t=t, x=x: lb.cross_entropy.value_and_grad(
                t, x, check_labels=False)),
            (f"CE {shape} none, no check", lambda t=t, x=x: lb.cross_entropy.value_and_grad(
                t, x, reduction="none", check_labels=False)),
            (f"CE {shape} sum, no check", lambda t=t, x=x: lb.cross_entropy.value_and_grad(
                t, x, reduction="sum", check_labels=False)),
        ]
    return found + launches()


# an empty kernel of one argument, and one of cross-entropy's main kernel's 19 (arrays,
# null pointers, 64- and 32-bit integers, floats): what CuPy's launch costs the host
_EMPTY_KERNELS = r"""
extern "C" __global__ void one(float* a) {}
extern "C" __global__ void many(const float* a, const long long* b, const float* c,
                                const float* d, float* e, float* f, float* g, int* h,
                                long long i, long long j, long long k, float l, float m,
                                const float* n, float* o, float p, const float* q, float r,
                                int s) {}
struct Args {
    const float* a; const long long* b; const float* c; const float* d; float* e; float* f;
    float* g; int* h; long long i; long long j; long long k; float l; float m;
    const float* n; float* o; float p; const float* q; float r; int s;
};
extern "C" __global__ void packed(Args args) {}
"""
# the same 19 as one structure passed by value (a NumPy structured scalar, built per call
# as a call would): whether fewer arguments would save the host time
_KINDS = ["u8"] * 8 + ["i8"] * 3 + ["f4"] * 2 + ["u8"] * 2 + ["f4", "u8", "f4", "i4"]
_ARGS = np.dtype(list(zip("abcdefghijklmnopqrs", _KINDS, strict=True)), align=True)


def launches():
    """(name, call) pairs: one launch of an empty kernel, by its arguments."""
    import cupy as cp

    module = cp.RawModule(code=_EMPTY_KERNELS)
    one, many = module.get_function("one"), module.get_function("many")
    a, b, h = cp.empty(1, cp.float32), cp.empty(1, cp.int64), cp.empty(1, cp.int32)
    args = (a, b, None, None, a, a, None, h, np.int64(8), np.int64(1000), np.int64(-100),
            np.float32(0), np.float32(1), None, None, np.float32(0), None, np.float32(0),
            np.int32(1))
    found = [("launch, 1 argument", lambda: one((1,), (32,), (a,))),
             ("launch, 19 arguments", lambda: many((1,), (32,), args))]
    packed = module.get_function("packed")
    pa, pb, ph = a.data.ptr, b.data.ptr, h.data.ptr

    def struct_launch():
        fields = (pa, pb, 0, 0, pa, pa, 0, ph, 8, 1000, -100, 0.0, 1.0, 0, 0, 0.0, 0, 0.0, 1)
        packed((1,), (32,), (np.array(fields, _ARGS)[()],))

    try:  # (CuPy passes a structured scalar by value where it can)
        struct_launch()
        found.append(("launch, 19 fields in one structure", struct_launch))
    except Exception as exc:  # noqa: BLE001 (reported, the other rows still measured)
        print(f"a structure as a launch's argument: {type(exc).__name__}: {exc}")
    return found


def measure(call, calls: int) -> dict:
    """Medians in microseconds: ``host`` (the call's return, the card idle at its start),
    ``device`` (CUDA events before and after it) and ``wall`` (back to back)."""
    host, device = core.time_gpu_each(call, calls)
    wall = core.time_gpu_wall(call, repeats=5, inner=max(calls // 5, 1))
    return {k: statistics.median(v) * 1e6 for k, v in
            (("host", host), ("device", device), ("wall", wall))}


def profile(call, calls: int, top: int = 22) -> str:
    """Python's profile of ``calls`` calls, by own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        call()
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(top)
    return text.getvalue()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args(argv)
    found = cases()
    for _, call in found:  # compiled and warm
        for _ in range(3):
            call()
    print(f"{'call':34s} {'host us':>9s} {'device us':>10s} {'wall us':>9s}")
    for name, call in found:
        times = measure(call, args.calls)
        print(f"{name:34s} {times['host']:9.1f} {times['device']:10.1f} {times['wall']:9.1f}",
              flush=True)
    for name, call in found:
        if name in ("mse n=1000 out=", "mse n=1000 torch", "CE 1048576x10"):
            print(f"\nprofile of {args.calls} calls: {name}")
            print(profile(call, args.calls))


if __name__ == "__main__":
    main()
