"""Dask rows: ``value_and_grad`` on Dask arrays of several GB against the in-memory call on
the same data, and a loss's value over an array larger than this machine's memory.

    python -m benchmarks --dask --out DIR        # writes DIR/results_dask.csv

Cases, float32, Numba backend:
- MSE (n = 4e8: 1.6 GB per array) and cross_entropy (65536 x 4096 logits, 1 GiB) on the
  threaded scheduler (chunks of 64 MiB), value and gradient persisted (the gradient's
  blocks stay in memory as a Dask array); against the in-memory call, allocating its
  gradient and with ``out=``; samples taken in turn (column ``of_in_memory``).
- The same on a ``LocalCluster`` of two single-threaded worker processes (Numba limited
  to one thread each), inputs persisted on the workers first, results kept there: the
  cost of Dask's distributed scheduler on one machine, and each worker's peak memory.
- MSE's value over two arrays of 3.2e9 float32 (25.6 GB in all, more than this machine's
  24 GiB), generated chunk by chunk and never held whole, in a fresh process: its time and
  the process's peak memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

import lossbackends as lb

from . import core

CHUNK = 1 << 24  # elements per block: 64 MiB of float32


def _peak_gib() -> float:
    """This process's peak resident memory (VmHWM: unlike getrusage's ru_maxrss, it starts
    afresh in a new program instead of carrying its parent's)."""
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return kib / 2**20


def _gbps(nbytes, seconds):
    return nbytes / float(np.median(seconds)) / 1e9


def _dask_inputs(case):
    """(y, p, minimum bytes of value_and_grad): Dask arrays generated block by block."""
    import dask.array as da

    rng = da.random.default_rng(0)
    if case == "mse":
        n = 400_000_000
        return (rng.random(n, chunks=CHUNK, dtype=np.float32),
                rng.random(n, chunks=CHUNK, dtype=np.float32), 12 * n)
    rows, classes = 65536, 4096
    chunk = CHUNK // classes
    return (rng.integers(0, classes, rows, chunks=chunk),
            rng.standard_normal((rows, classes), chunks=(chunk, classes), dtype=np.float32),
            8 * rows * classes + 8 * rows)


def threaded_rows(roofline: float) -> list[dict]:
    """The threaded scheduler against the in-memory call (both allocate the gradient; the
    in-memory call with ``out=`` too), samples taken in turn."""
    import dask
    import dask.array as da

    rows = []
    for case in ("mse", "cross_entropy"):
        loss = getattr(lb, case)
        generated_y, generated_p, nbytes = _dask_inputs(case)
        y, p = dask.compute(generated_y, generated_p)
        dp = da.from_array(p, chunks=generated_p.chunks)
        dy = da.from_array(y, chunks=generated_y.chunks)
        out = np.empty_like(p)

        def in_memory(loss=loss, y=y, p=p):
            return loss.value_and_grad(y, p, backend="numba")

        def in_memory_out(loss=loss, y=y, p=p, out=out):
            return loss.value_and_grad(y, p, out=out, backend="numba")

        def on_dask(loss=loss, dy=dy, dp=dp):
            # the gradient's blocks stay in memory as a Dask array (no concatenation)
            return dask.persist(*loss.value_and_grad(dy, dp, backend="numba"),
                                scheduler="threads")

        expected_value, expected_grad = in_memory()
        value, grad = on_dask()
        assert np.array_equal(grad.compute(), expected_grad), "the Dask gradient differs"
        error = abs(float(value.compute()) - float(expected_value)) / abs(float(expected_value))
        del expected_grad, grad
        samples = core.time_host_in_turn([in_memory, in_memory_out, on_dask], min_time=0.5,
                                         repeats=5, warmup=0.0)
        reference = _gbps(nbytes, samples[0])
        for name, times in zip(("in-memory", "in-memory-out", "dask-threads"), samples,
                               strict=True):
            rows.append(core.row(case, "value_and_grad", name, "float32", p.shape, times,
                                 nbytes, roofline, device="host", max_rel_error=error,
                                 of_in_memory=_gbps(nbytes, times) / reference))
        del y, p, dp, dy, out
    return rows


def cluster_rows(roofline: float) -> list[dict]:
    import dask
    from distributed import Client, LocalCluster, wait

    rows = []
    # one Numba thread per worker process (set in the workers' environment: a change of
    # NUMBA_NUM_THREADS in this process, whose threads are running, would be an error)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None, memory_limit=0,
                      env={"NUMBA_NUM_THREADS": "1"}) as cluster, \
            Client(cluster) as client:
        for case in ("mse", "cross_entropy"):
            loss = getattr(lb, case)
            # generated on the workers, block by block: the inputs live there
            dy, dp, nbytes = _dask_inputs(case)
            dy, dp = client.persist([dy, dp])
            wait([dy, dp])
            y, p = dask.compute(dy, dp)  # gathered once, for the in-memory call

            def in_memory(loss=loss, y=y, p=p):
                return loss.value_and_grad(y, p, backend="numba")

            def on_cluster(loss=loss, dy=dy, dp=dp):
                value, grad = client.persist(list(loss.value_and_grad(dy, dp, backend="numba")))
                wait([value, grad])
                return value.compute()

            expected = in_memory()[0]
            error = abs(float(on_cluster()) - float(expected)) / abs(float(expected))
            samples = core.time_host_in_turn([in_memory, on_cluster], min_time=0.5, repeats=5,
                                             warmup=0.0)
            peak = max(client.run(_peak_gib).values())
            reference = _gbps(nbytes, samples[0])
            for name, times, extra in (("in-memory", samples[0], {}),
                                       ("dask-localcluster-2x1", samples[1],
                                        {"peak_worker_gib": peak})):
                rows.append(core.row(case, "value_and_grad", name, "float32", dp.shape, times,
                                     nbytes, roofline, device="host", max_rel_error=error,
                                     of_in_memory=_gbps(nbytes, times) / reference, **extra))
            del y, p
            del dp, dy
    return rows


def larger_than_memory() -> dict:
    """MSE's value over two arrays of 3.2e9 float32 generated chunk by chunk (in a fresh
    process, so its peak memory is its own)."""

    import dask.array as da

    n = 3_200_000_000
    chunk = 1 << 25
    rng = da.random.default_rng(0)
    y = rng.random(n, chunks=chunk, dtype=np.float32)
    p = rng.random(n, chunks=chunk, dtype=np.float32)
    value, seconds = core.time_once(
        lambda: float(lb.mse(y, p, backend="numba").compute(scheduler="threads")))
    peak = _peak_gib()
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"elements": 2 * n, "gb": 8 * n / 1e9, "seconds": seconds, "value": value,
            "expected": 1 / 6, "peak_gib": peak, "machine_gib": total}


def run(roofline: float) -> list[dict]:
    rows = threaded_rows(roofline) + cluster_rows(roofline)
    found = subprocess.run([sys.executable, "-m", "benchmarks.dask_rows"], check=True,
                           capture_output=True, text=True)
    big = json.loads(found.stdout.strip().splitlines()[-1])
    rows.append(core.row("mse", "value", "dask-larger-than-memory", "float32", (big["elements"] // 2,),
                         [big["seconds"]], 8 * big["elements"] // 2, roofline, device="host",
                         max_rel_error=abs(big["value"] - big["expected"]) / big["expected"],
                         peak_gib=big["peak_gib"], machine_gib=big["machine_gib"]))
    return rows


if __name__ == "__main__":
    print(json.dumps(larger_than_memory()))
