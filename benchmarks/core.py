"""Measuring: inputs, rooflines, timers, the correctness check, one result row.

Protocol (docs/guide/performance.md, "Running the suite"): warm up first; repeat and
report the median with min and max; GB/s of the minimum traffic (each input read once, each output written
once) and that as a fraction of a bandwidth roofline measured in the same run on the
same device; every timed result checked against the NumPy backend (float64) first; never
zeros or constants as inputs.
"""

from __future__ import annotations

import functools
import math
import statistics
import time

import numpy as np

import lossbackends as lb

SECOND_SET = ("mae", "huber", "smooth_l1", "log_cosh", "squared_hinge", "soft_margin",
              "sigmoid_focal", "poisson_nll", "kl_div", "pinball")
ELEMENTWISE = ("mse", "binary_cross_entropy", "binary_cross_entropy_with_logits", "hinge",
               *SECOND_SET)
SCORE_LOSSES = ("hinge", "squared_hinge", "soft_margin")  # labels of -1 and 1
# the row losses (a class axis), each case a loss of lossbackends with the options it is
# called with: cross-entropy's z-loss and soft-capping against plain cross-entropy
ROW_CASES = {"cross_entropy": ("cross_entropy", {}),
             "cross_entropy_z_loss": ("cross_entropy", {"z_loss": 1e-4}),
             "cross_entropy_softcap": ("cross_entropy", {"softcap": 30.0}),
             "multiclass_hinge": ("multiclass_hinge", {})}
ROW_LOSSES = tuple(ROW_CASES)
# binary cross-entropy with labels in [0, 1], measured apart from the grid (whose labels
# are 0 and 1, one log per element for the Numba backend instead of two)
PROBABILITY_LABELS = "binary_cross_entropy_probability_labels"
LOSSES = (*ELEMENTWISE, *ROW_LOSSES)
OPS = ("value", "grad", "value_and_grad")


# --- inputs ------------------------------------------------------------------------------


def host_inputs(loss: str, shape: tuple, dtype: str, seed: int = 0, *,
                probability_labels: bool = False) -> dict:
    """The case's ``y`` and ``p``; ``probability_labels``: binary cross-entropy's labels
    drawn in [0, 1) (distillation, label smoothing) instead of 0 and 1."""
    rng = np.random.default_rng(seed)
    if loss in ROW_LOSSES:
        rows, classes = shape
        p = rng.standard_normal(shape, dtype=np.float32) * np.float32(3)
        y = rng.integers(0, classes, rows)
    else:
        n = shape[0]
        if loss == "binary_cross_entropy":
            y = rng.random(n, dtype=np.float32)
            y = y if probability_labels else (y < 0.5).astype(np.float32)
            p = rng.uniform(0.001, 0.999, n).astype(np.float32)
        elif loss in SCORE_LOSSES:
            y = np.where(rng.random(n, dtype=np.float32) < 0.5, -1, 1).astype(np.float32)
            p = rng.standard_normal(n, dtype=np.float32) * np.float32(2)
        elif loss == "sigmoid_focal":
            y = (rng.random(n, dtype=np.float32) < 0.5).astype(np.float32)
            p = rng.standard_normal(n, dtype=np.float32) * np.float32(2)
        elif loss == "poisson_nll":  # counts, and log-rates
            y = rng.poisson(2.0, n).astype(np.float32)
            p = rng.standard_normal(n, dtype=np.float32)
        elif loss == "kl_div":  # probabilities, and log-probabilities
            y = rng.random(n, dtype=np.float32)
            p = np.log(rng.uniform(0.01, 1.0, n)).astype(np.float32)
        else:
            y = rng.random(n, dtype=np.float32)
            p = rng.standard_normal(n, dtype=np.float32) * np.float32(2)
        return {"y": y.astype(dtype), "p": off_kinks(np, y.astype(dtype), p.astype(dtype))}
    return {"y": y, "p": p.astype(dtype)}


def off_kinks(xp, y, p):
    """``p`` moved up an ulp where it equals ``y``: the kinks of mae and pinball (e = 0) and
    of hinge (y p = 1 for y = +-1), where each library picks its own subgradient (1e8
    draws hold a few such ties, and the accuracy check dropped torch's and JAX's hinge and
    JAX's mae for them, 2 elements of 1e8). In place."""
    tie = p == y
    p[tie] = xp.nextafter(p[tie], xp.asarray(xp.inf, p.dtype))
    return p


def to_device(inputs: dict) -> dict:
    import cupy as cp

    return {"y": cp.asarray(inputs["y"]), "p": cp.asarray(inputs["p"]),
            "y_host": inputs["y"], "p_host": inputs["p"]}


def device_inputs(loss: str, shape: tuple, dtype: str, seed: int = 0) -> dict:
    """Inputs made on the GPU (no host round trip for a gigabyte of data)."""
    import cupy as cp

    rng = cp.random.RandomState(seed)
    if loss in ROW_LOSSES:
        rows, classes = shape
        p = rng.standard_normal(shape, dtype=cp.float32) * 3
        y = rng.randint(0, classes, rows).astype(cp.int64)
        return {"y": y, "p": p.astype(dtype)}
    n = shape[0]
    u = rng.random_sample(n, dtype=cp.float32)
    if loss == "binary_cross_entropy":
        y, p = (u < 0.5).astype(dtype), (0.001 + 0.998 * rng.random_sample(n, dtype=cp.float32))
    elif loss in SCORE_LOSSES:
        y, p = cp.where(u < 0.5, -1, 1).astype(dtype), rng.standard_normal(n, dtype=cp.float32) * 2
    else:
        y, p = u.astype(dtype), rng.standard_normal(n, dtype=cp.float32) * 2
    return {"y": y, "p": off_kinks(cp, y, p.astype(dtype))}


def minimum_bytes(loss: str, op: str, shape: tuple, itemsize: int) -> int:
    """Each input read once, each output written once (the value itself is negligible)."""
    if loss in ROW_LOSSES:
        rows, classes = shape
        logits = rows * classes * itemsize
        return logits + 8 * rows + (0 if op == "value" else logits)
    n = shape[0]
    return (2 if op == "value" else 3) * n * itemsize


# --- rooflines ---------------------------------------------------------------------------


# Smoke runs (``--smoke``: does the suite run?) scale every timing loop and the triad's
# size down; measured runs keep 1.
TIME_SCALE = 1.0
TRIAD_ELEMENTS = 20_000_000
# Rounds of a case's samples taken in turn (``time_host_with_triad``): 15 in a full run, as
# the measurements of ``shared/performance.md``; at 1e8 each sample is one call of 40-300
# ms, and with 7 a slow spell of the host (0.1-0.5 s) in two of one provider's rounds moved
# its median by up to 15 % (log_cosh's default call read 88 % of out=, their fastest
# samples 38.8 and 38.6 ms). --quick and --smoke take 7.
ROUNDS = 15
# Seconds of calls in each of a case's samples at least (``time_host_with_triad``; a full
# run's: --quick and --smoke take 0). At 1e8 a sample was one call of 40-70 ms, and single
# calls here spread by a quarter either way: log_cosh's default call and out= had fastest
# samples of 38.5 and 38.7 ms and medians of 48.3 and 41.2 (2026-12-07), poisson_nll's
# medians 39.5 and 47.3 the other way round, so that a ratio of two medians moved by 15 %
# between runs. A tenth of a second of calls per sample averages that jitter (timeit's
# autorange takes 0.2 s); the rounds still take the slow drift.
SAMPLE_SECONDS = 0.1


@functools.cache
def _triad_kernel():
    """Numba's parallel triad, compiled once per process (None without Numba)."""
    try:
        from numba import njit, prange
    except ImportError:
        return None

    @njit(parallel=True, fastmath=True)
    def triad(a, b, c, k):
        for i in prange(a.size):
            c[i] = a[i] + k * b[i]

    return triad


def triad_call(n: int | None = None) -> tuple[str, object, int]:
    """(its name, a call of c = a + k b on ``n`` float32 elements (read 2, write 1), the
    bytes it moves): Numba's parallel triad when Numba is installed, else NumPy's add.
    Its stores go through the cache, so each line of ``c`` is read before it is written
    (16 bytes of traffic for the 12 counted): a kernel that streams its gradient's stores
    past the cache (``_numba_common.store_streaming``) can run up to 4/3 of it, and ours
    do at 1e7 and 1e8 (the performance page's 100-130 %). The triad is the memory's speed
    as ordinary code meets it, the yardstick of the suite's percentages, not a ceiling."""
    n = n or TRIAD_ELEMENTS
    a, b = np.full(n, 1.5, np.float32), np.full(n, 0.25, np.float32)  # values do not matter
    c = np.empty_like(a)
    triad = _triad_kernel()
    if triad is not None:
        def run():
            triad(a, b, c, np.float32(3.0))

        return "numba triad", run, 3 * a.nbytes

    def add():
        np.add(a, b, out=c)

    return "numpy add", add, 3 * a.nbytes


def host_triad(n: int | None = None, repeats: int = 7, min_time: float = 0.3) -> tuple[str, float]:
    """GB/s of the triad (``triad_call``) on the host."""
    name, run, nbytes = triad_call(n)
    times = time_host(run, min_time=min_time, repeats=repeats)
    return name, nbytes / statistics.median(times) / 1e9


def gpu_copy() -> float:
    """GB/s of a 1 GiB device-to-device copy, bytes read plus bytes written."""
    import cupy as cp

    src = cp.random.RandomState(0).random_sample(1 << 28, dtype=cp.float32)
    dst = cp.empty_like(src)
    times = time_gpu(lambda: dst.data.copy_from_device(src.data, src.nbytes), repeats=20)
    return 2 * src.nbytes / statistics.median(times) / 1e9


# --- timers ------------------------------------------------------------------------------


def time_host(call, min_time: float = 0.2, repeats: int = 7, warmup: float = 0.05) -> list[float]:
    """Seconds per call: ``repeats`` samples, each a loop long enough to be timed well,
    after ``warmup`` seconds of calls (the thread pool and the clock settle first)."""
    return time_host_in_turn([call], min_time, repeats, warmup)[0]


# seconds of idle before each in-turn sample: JAX's (Eigen's) CPU thread pool keeps the cores
# busy for a while after its call returns, and slowed the next sample whoever's it was
# (our sigmoid_focal at 1e7 ran 4.4-4.7 GB/s with JAX in the case, 7.7 alone, 6.8-7.0
# with this pause), so that the order of samples was still a noise of +-30 %. At least
# SETTLE, and SETTLE_SHARE of the last sample's call: at 1e8 (JAX's call 0.3 s) our
# sigmoid_focal took 79-82 ms 50 ms after it, 61-64 ms 100 ms or more after it and alone
SETTLE = 0.05
SETTLE_SHARE = 0.5


def time_host_in_turn(calls: list, min_time: float = 0.2, repeats: int = 7,
                      warmup: float = 0.05, sample_seconds: float = 0.0) -> list[list[float]]:
    """``time_host`` for several calls whose samples are taken in turn (a sample of each,
    then the next round), so that a slow moment of the machine weighs on all of them and
    their ratios hold: this host's bandwidth moves by a third within minutes. Each sample
    is a loop of about ``min_time / repeats`` seconds of calls (at least one call), and of
    at least ``sample_seconds``."""
    min_time, warmup = min_time * TIME_SCALE, warmup * TIME_SCALE
    sample_seconds *= TIME_SCALE
    inners = []
    for call in calls:
        start = time.perf_counter()
        call()
        while time.perf_counter() - start < warmup:
            call()
        start = time.perf_counter()
        call()
        once = max(time.perf_counter() - start, 1e-7)
        inners.append(max(1, int(min_time / repeats / once), math.ceil(sample_seconds / once)))
    samples = [[] for _ in calls]
    orders = np.random.default_rng(0)  # the same orders in every run
    last = 0.0  # the last sample's seconds per call
    for _ in range(repeats):
        # each round in its own order (seeded): a call pays for the one before it (JAX's
        # CPU thread pool keeps its cores busy after a call returns: our sigmoid_focal at
        # 1e8 took 1.7x as long right after a JAX call), so none may always follow the same
        for i in orders.permutation(len(calls)):
            # (a smoke run's samples need no quiet)
            time.sleep(max(SETTLE, SETTLE_SHARE * last) * TIME_SCALE)
            start = time.perf_counter()
            for _ in range(inners[i]):
                calls[i]()
            last = (time.perf_counter() - start) / inners[i]
            samples[i].append(last)
    return samples


def time_host_with_triad(calls: list, traffic: int, min_time: float = 0.2
                         ) -> tuple[list[list[float]], float]:
    """``time_host_in_turn`` of ``calls`` and of the triad (``triad_call``, moving at least
    ``traffic`` bytes), ``ROUNDS`` rounds: their samples, and the triad's GB/s, the
    roofline of the same moments (this machine's bandwidth moves by a third within
    minutes)."""
    _, triad, triad_bytes = triad_call(max(traffic // 12, TRIAD_ELEMENTS))
    times = time_host_in_turn([*calls, triad], min_time=min_time, repeats=ROUNDS,
                              sample_seconds=SAMPLE_SECONDS)
    return times[:-1], triad_bytes / statistics.median(times[-1]) / 1e9


def time_host_difference(call, baseline, min_time: float = 0.6, repeats: int = 25) -> list[float]:
    """Seconds per call that ``call`` takes over ``baseline``: samples of the two taken in
    turn, so that a slow moment of the machine weighs on both sides of each difference."""
    min_time *= TIME_SCALE
    call(), baseline()
    start = time.perf_counter()
    call()
    once = max(time.perf_counter() - start, 1e-7)
    inner = max(1, int(min_time / repeats / 2 / once))
    differences = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            call()
        middle = time.perf_counter()
        for _ in range(inner):
            baseline()
        differences.append((2 * middle - start - time.perf_counter()) / inner)
    return differences


def time_gpu(call, repeats: int = 20, warmup: int = 3) -> list[float]:
    """Device seconds per call from CUDA events, calls queued back to back as in a training
    loop (the host runs ahead; host overhead shows only where it exceeds the kernels)."""
    import cupy as cp

    for _ in range(warmup):
        call()
    cp.cuda.Device().synchronize()
    events = [cp.cuda.Event() for _ in range(repeats + 1)]
    events[0].record()
    for i in range(repeats):
        call()
        events[i + 1].record()
    events[-1].synchronize()
    return [cp.cuda.get_elapsed_time(a, b) / 1e3 for a, b in zip(events[:-1], events[1:], strict=True)]


def time_gpu_each(call, calls: int) -> tuple[list[float], list[float]]:
    """Seconds of ``calls`` calls, each from an idle card: the host's until the call returns,
    and the device's between CUDA events recorded before and after it."""
    import cupy as cp

    stream = cp.cuda.get_current_stream()
    start, end = cp.cuda.Event(), cp.cuda.Event()
    host, device = [], []
    for _ in range(calls):
        stream.synchronize()
        start.record(stream)
        began = time.perf_counter()
        call()
        host.append(time.perf_counter() - began)
        end.record(stream)
        end.synchronize()
        device.append(cp.cuda.get_elapsed_time(start, end) * 1e-3)
    return host, device


def time_once(call) -> tuple[object, float]:
    """``call()``'s result and its seconds, one call: for a run of minutes that cannot be
    repeated within the suite (Dask over data larger than memory)."""
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


def time_gpu_wall(call, repeats: int = 30, inner: int = 100) -> list[float]:
    """Wall seconds per call of back-to-back calls, synchronised at the end of each sample."""
    import cupy as cp

    for _ in range(inner):
        call()
    cp.cuda.Device().synchronize()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            call()
        cp.cuda.Device().synchronize()
        samples.append((time.perf_counter() - start) / inner)
    return samples


# --- correctness -------------------------------------------------------------------------


def _host(a):
    if a is None:
        return None
    if hasattr(a, "detach"):  # torch
        a = a.detach().cpu().numpy()
    elif hasattr(a, "__cuda_array_interface__"):
        import cupy as cp

        a = cp.asnumpy(a)
    return np.asarray(a, dtype=np.float64)


def loss_call(loss: str):
    """(the lossbackends loss, its options) of a case of the suite."""
    name, options = ROW_CASES.get(loss, (loss, {}))
    return getattr(lb, name), options


def reference(loss: str, op: str, inputs: dict):
    """(value, grad) from the NumPy backend in float64, the truth every row is checked on."""
    y, p = inputs.get("y_host", inputs["y"]), inputs.get("p_host", inputs["p"])
    function, options = loss_call(loss)
    if hasattr(p, "__cuda_array_interface__"):  # made on the GPU: check there in float64
        import cupy as cp

        y64 = y if loss in ROW_LOSSES else y.astype(cp.float64)
        value, grad = function.value_and_grad(y64, p.astype(cp.float64), backend="cupy", **options)
        return float(value), grad
    y64 = y if loss in ROW_LOSSES else y.astype(np.float64)
    value, grad = function.value_and_grad(y64, p.astype(np.float64), backend="numpy", **options)
    return float(value), grad


def check(result, expected, dtype: str) -> float:
    """Largest relative error of the value and the gradient (relative to the gradient's
    largest magnitude); raises if it exceeds what ``dtype`` allows."""
    value, grad = result
    ref_value, ref_grad = expected
    tolerance = {"float16": 3e-2, "float32": 1e-4, "float64": 1e-9}[dtype]
    # float16 cannot hold a mean's gradient below its subnormal quantum: compare on that
    floor = 6e-8 if dtype == "float16" else 0.0
    errors = []
    if value is not None:
        v = float(_host(value))
        errors.append(abs(v - ref_value) / max(abs(ref_value), 1e-30))
    if grad is not None:
        if hasattr(ref_grad, "__cuda_array_interface__"):
            import cupy as cp

            g = cp.asarray(grad.detach() if hasattr(grad, "detach") else grad).astype(cp.float64)
            scale = float(cp.max(cp.abs(ref_grad))) or 1.0
            errors.append(max(float(cp.max(cp.abs(g - ref_grad))) - floor, 0.0) / scale)
        else:
            g = _host(grad)
            scale = float(np.max(np.abs(ref_grad))) or 1.0
            errors.append(max(float(np.max(np.abs(g - ref_grad))) - floor, 0.0) / scale)
    worst = max(errors) if errors else 0.0
    if not worst <= tolerance:
        raise AssertionError(f"relative error {worst:.3g} exceeds {tolerance:g}")
    return worst


def row(loss, op, backend, dtype, shape, times, nbytes, roofline, **extra) -> dict:
    median = statistics.median(times)
    gbps = nbytes / median / 1e9 if median > 0 else float("nan")
    n = int(np.prod(shape))
    return {"loss": loss, "op": op, "backend": backend, "dtype": dtype, "n": n,
            "seconds_median": median, "seconds_min": min(times), "seconds_max": max(times),
            "gbps": gbps, "roofline_fraction": gbps / roofline,
            "shape": "x".join(map(str, shape)), **extra}
