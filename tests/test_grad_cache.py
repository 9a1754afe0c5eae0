"""The host gradient cache (lossbackends._buffers): a call without ``out=`` may hand back a
gradient returned earlier, but only one that nothing references any more. These tests
hold the previous gradient in every way a user can (views, wrappers, containers, foreign
tensors) and check it is never overwritten; check that reused memory is rewritten in
full (a dirty buffer gives the same results); that threads never share a buffer; and that
the cache stays within its bounds and can be emptied."""

from __future__ import annotations

import functools
import gc
import importlib.util
import signal
import sys
import threading

import numpy as np
import pytest
import reference

import lossbackends as lb
from lossbackends import _buffers

N = 300_000  # float32: 1.2 MB, over the cache's 1 MiB threshold
HOST = ("numpy", "numba")


@pytest.fixture(params=HOST)
def host_backend(request):
    if request.param == "numba" and importlib.util.find_spec("numba") is None:
        pytest.skip("Numba is not installed (pip install 'lossbackends[numba]')")
    # the kernels these tests time their buffers with, compiled first, once per process: a
    # compilation (a cold cache) leaves the calling frame, the new gradient in it, in a
    # reference cycle until the garbage collector runs, and a referenced buffer is rightly
    # never reused (a collection costs a second with torch and JAX loaded: once, not per test)
    if request.param not in _WARMED:
        y, p = _inputs(0)
        lb.mse.grad(y, p, backend=request.param)
        lb.mse.value_and_grad(y, p, backend=request.param)
        gc.collect()
        _WARMED.add(request.param)
    lb.empty_cache()
    return request.param


_WARMED: set[str] = set()


@pytest.fixture(autouse=True)
def fresh_cache():
    lb.empty_cache()
    yield
    lb.empty_cache()


@functools.lru_cache(maxsize=32)
def _inputs(seed, n=N):
    rng = np.random.default_rng(seed)
    return rng.random(n, dtype=np.float32), rng.standard_normal(n, dtype=np.float32)


def _address(a) -> int:
    return a.__array_interface__["data"][0]


@pytest.fixture
def one_thread(host_backend, monkeypatch):
    """The Numba kernels on the calling thread alone, for the tests that check which
    address a call reuses: a worker thread that finished its chunks returns from the
    kernel a moment after the call did, holding the gradient until then (see
    backends/_threads.py), and a call made within that moment rightly takes another
    buffer (1 loop in ~3000 of the test below took a third one on 2 cores)."""
    if host_backend == "numba":
        import numba

        monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 1)
    return host_backend


def test_a_dropped_gradient_is_reused(one_thread):
    host_backend = one_thread
    y, p = _inputs(0)
    first = lb.mse.grad(y, p, backend=host_backend)
    address = _address(first)
    del first
    second = lb.mse.grad(y, p, backend=host_backend)
    assert _address(second) == address
    assert _buffers.cached_bytes() == _buffers.size_class(N * 4) + _buffers.PAGE


def test_a_buffer_made_read_only_before_it_was_dropped_comes_back_writeable(one_thread):
    """A user may clear the writeable flag through ``grad.base`` (the docs name it) and
    then drop the gradient: the buffer is reused, and the new gradient is writeable, so
    the next call's ``out=`` and in-place updates take it (the NumPy backend's kernels
    refused to write into it before)."""
    host_backend = one_thread
    y, p = _inputs(0)
    first = lb.mse.grad(y, p, backend=host_backend)
    address = _address(first)
    first.base.flags.writeable = False
    del first
    grad = lb.mse.grad(y, p, backend=host_backend)
    assert _address(grad) == address and grad.flags.writeable
    np.testing.assert_allclose(grad, 2 * (p.astype(np.float64) - y) / N, rtol=1e-5)
    value, again = lb.mse.value_and_grad(y, p, backend=host_backend, out=grad)
    assert again is grad


def test_a_training_loop_alternates_between_two_buffers(one_thread):
    """``value, grad = f(...)``: the previous gradient is still bound while the next call
    runs, so two buffers take turns and no fresh memory is needed after the second call."""
    host_backend = one_thread
    y, p = _inputs(1)
    addresses = []
    grad = None
    for _ in range(6):
        value, grad = lb.mse.value_and_grad(y, p, backend=host_backend)
        addresses.append(_address(grad))
    assert len(set(addresses)) == 2
    assert addresses[0::2] == [addresses[0]] * 3 and addresses[1::2] == [addresses[1]] * 3


def test_a_step_that_keeps_six_gradients_into_the_next_reuses_buffers(one_thread):
    """Three losses' results of a step, kept while the next step computes its three: six
    gradients of one size at once, so six buffers take turns and no fresh memory is
    needed after the first two steps (with four kept per size, every call took fresh
    memory: the default call at half of ``out=``'s speed at n = 1e7)."""
    host_backend = one_thread
    y, p = _inputs(1)
    losses = (lb.mse, lb.huber, lb.log_cosh)
    steps, results = [], []
    for _ in range(6):
        results = [loss.value_and_grad(y, p, backend=host_backend)[1] for loss in losses]
        steps.append([_address(grad) for grad in results])
    assert len({a for step in steps for a in step}) == 6
    assert steps[2:] == [steps[0], steps[1]] * 2
    for grad, loss in zip(results, losses, strict=True):  # (rewritten in full: the values)
        np.testing.assert_allclose(grad, reference.elementwise(loss.name, y, p)[1],
                                   rtol=2e-5, atol=1e-12)


def _from_capsule(capsule):
    class Exporter:  # hands np.from_dlpack a capsule taken earlier (host memory)
        def __dlpack__(self, **_):
            return capsule

        def __dlpack_device__(self):
            return (1, 0)

    return np.from_dlpack(Exporter())


def _holders():
    """(name, hold, show): ways a user keeps a gradient, or part of it, alive after dropping
    its name, and how to read what they keep."""
    same = np.asarray
    yield "view", lambda g: g.view(), same
    yield "slice", lambda g: g[1000:2000], same
    yield "strided slice", lambda g: g[::7], same
    yield "reshape", lambda g: g.reshape(600, 500), same
    yield "np.asarray", lambda g: np.asarray(g), same
    yield "dtype view", lambda g: g.view(np.int32), same
    yield "memoryview", memoryview, same
    yield "np.frombuffer", lambda g: np.frombuffer(g, np.uint8), same
    yield "list", lambda g: [g], lambda kept: kept[0]
    yield "dict of a tuple", lambda g: {"grad": (1.0, g)}, lambda kept: kept["grad"][1]
    yield "closure", lambda g: (lambda: g), lambda kept: kept()
    yield "DLPack capsule", lambda g: g.__dlpack__(), _from_capsule
    yield "np.from_dlpack", np.from_dlpack, same
    if importlib.util.find_spec("torch") is not None:
        yield "torch.from_numpy", lambda g: __import__("torch").from_numpy(g), lambda t: t.numpy()
        yield "torch.from_dlpack", lambda g: __import__("torch").from_dlpack(g), lambda t: t.numpy()


@pytest.mark.parametrize("name,hold,show", list(_holders()), ids=[h[0] for h in _holders()])
def test_nothing_a_user_still_references_is_overwritten(host_backend, name, hold, show):
    y, p = _inputs(2)
    grad = lb.mse.grad(y, p, backend=host_backend)
    expected = grad.copy()
    kept = hold(grad)
    del grad
    # more calls than the cache keeps buffers: each takes a free buffer of this size
    y2, p2 = _inputs(3)
    for _ in range(2 * _buffers.PER_SIZE):
        lb.mse.value_and_grad(y2, p2, backend=host_backend)
    np.testing.assert_array_equal(np.asarray(show(kept)).copy(), show(hold(expected)))


def test_a_moved_class_axis_result_keeps_its_buffer(host_backend):
    """cross_entropy with the classes on axis 0 returns the gradient C-contiguous (the
    kernel's (rows, classes) result copied into a buffer of the cache), never overwritten
    by later calls while held."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1000, 300), dtype=np.float32)
    t = rng.integers(0, 1000, 300)
    grad = lb.cross_entropy.grad(t, x, axis=0, backend=host_backend)
    assert grad.flags.c_contiguous
    expected = grad.copy()
    for seed in range(2 * _buffers.PER_SIZE):
        x2 = np.random.default_rng(seed).standard_normal((1000, 300), dtype=np.float32)
        lb.cross_entropy.grad(t, x2, axis=0, backend=host_backend)
    np.testing.assert_array_equal(grad, expected)


def _cases():
    rng = np.random.default_rng(4)
    n = N
    y01 = (rng.random(n) < 0.5).astype(np.float32)
    pm1 = np.where(rng.random(n) < 0.5, -1, 1).astype(np.float32)
    x = rng.standard_normal(n, dtype=np.float32)
    q = rng.uniform(0.01, 0.99, n).astype(np.float32)
    w = rng.random(n, dtype=np.float32)
    for reduction in ("mean", "none"):
        yield "mse", rng.random(n, dtype=np.float32), x, {"reduction": reduction}
        yield "binary_cross_entropy", y01, q, {"reduction": reduction}
        yield "binary_cross_entropy_with_logits", y01, x, {"reduction": reduction}
        yield "hinge", pm1, x, {"reduction": reduction}
    yield "mse", rng.random(n, dtype=np.float32), x, {"weight": w}  # the general path
    yield "binary_cross_entropy_with_logits", y01.reshape(1000, 300), x.reshape(1000, 300), {
        "pos_weight": rng.random(300, dtype=np.float32) + 0.5}
    labels = rng.integers(0, 4096, 64)
    labels[::5] = -100  # ignored rows: their gradient must be written as zeros
    yield "cross_entropy", labels, rng.standard_normal((64, 4096), dtype=np.float32), {}
    yield "cross_entropy", labels, rng.standard_normal((64, 4096), dtype=np.float32), {
        "label_smoothing": 0.1}
    yield "cross_entropy", labels, rng.standard_normal((4096, 64), dtype=np.float32), {
        "axis": 0}


@pytest.mark.parametrize("case", range(len(list(_cases()))))
def test_reused_memory_is_rewritten_in_full(host_backend, case):
    """Fresh memory from the OS is zeros; a reused buffer holds the last gradient. Fill
    the dropped gradients with NaN first: every element must still be computed."""
    loss, y, p, options = list(_cases())[case]
    function = getattr(lb, loss)
    # (value_and_grad's gradients: the kernels the check below runs, no others to compile)
    dirty = [function.value_and_grad(y, p, backend=host_backend, **options)[1]
             for _ in range(2)]
    for g in dirty:
        g.fill(np.nan)
    addresses = {_address(g) for g in dirty}
    del dirty, g
    value, grad = function.value_and_grad(y, p, backend=host_backend, **options)
    assert _address(grad) in addresses or options.get("axis") == 0
    if loss == "cross_entropy":
        ref_value, ref_grad = reference.cross_entropy(y, p, **options)
    else:
        ref_value, ref_grad = reference.elementwise(loss, y, p, **options)
    assert np.isfinite(grad).all()
    np.testing.assert_allclose(grad, ref_grad, rtol=2e-4, atol=1e-6 * np.abs(ref_grad).max())
    np.testing.assert_allclose(value, ref_value, rtol=2e-4, atol=1e-6)


def test_threads_never_share_a_buffer(host_backend):
    """Each thread keeps its gradients until all are done: every one is distinct and
    right for that thread's own inputs, while the others call at the same time."""
    threads_n, calls = 6, 8
    inputs = [_inputs(100 + i) for i in range(threads_n)]
    expected = [lb.mse.grad(y, p, backend="numpy").copy() for y, p in inputs]
    barrier = threading.Barrier(threads_n)
    kept: list[list] = [[] for _ in range(threads_n)]
    errors = []

    def work(i):
        try:
            y, p = inputs[i]
            barrier.wait()
            for k in range(calls):
                g = lb.mse.grad(y, p, backend=host_backend)
                if k % 2:
                    kept[i].append(g)  # half of them kept, half dropped at once
                del g
            barrier.wait()
            for g in kept[i]:
                np.testing.assert_allclose(g, expected[i], rtol=1e-5)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            barrier.abort()

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads_n)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert not errors, errors[0]
    addresses = [_address(g) for held in kept for g in held]
    assert len(addresses) == len(set(addresses)) == threads_n * calls // 2


def test_small_gradients_bypass_the_cache(host_backend):
    y, p = _inputs(5, n=1000)
    lb.mse.value_and_grad(y, p, backend=host_backend)
    assert _buffers.cached_bytes() == 0


def test_empty_cache_releases_and_keeps_held_gradients_valid(host_backend):
    y, p = _inputs(6)
    held = lb.mse.grad(y, p, backend=host_backend)
    lb.mse.grad(y, p * 2, backend=host_backend)  # dropped: free in the cache
    expected = held.copy()
    # (each placed in a page)
    assert _buffers.cached_bytes() == 2 * (_buffers.size_class(N * 4) + _buffers.PAGE)
    assert lb.empty_cache() == 2 * (_buffers.size_class(N * 4) + _buffers.PAGE)
    assert _buffers.cached_bytes() == 0 and lb.empty_cache() == 0
    again = lb.mse.grad(y, p * 3, backend=host_backend)
    assert not np.shares_memory(again, held)
    np.testing.assert_array_equal(held, expected)


def test_the_cache_stays_within_its_bounds(monkeypatch):
    monkeypatch.setattr(_buffers, "limit", 5 * N * 4 // 2)  # room for two and a half
    kept = []
    for size in (N, N, N, N + 1000, N + 2000, N):
        y, p = _inputs(size, n=size)
        kept.append(lb.mse.grad(y, p, backend="numpy"))
        assert _buffers.cached_bytes() <= _buffers.limit
        assert all(len(b) <= _buffers.PER_SIZE for b in _buffers._buckets.values())
    for _ in range(3 * _buffers.PER_SIZE):  # all kept: the cache forgets, never reuses
        kept.append(lb.mse.grad(y, p, backend="numpy"))
        assert _buffers.cached_bytes() <= _buffers.limit
    addresses = [_address(g) for g in kept]
    assert len(addresses) == len(set(addresses))
    # what it counts is what its buffers hold (each a page longer than its gradient)
    assert _buffers.cached_bytes() == sum(buf.nbytes for bucket in _buffers._buckets.values()
                                          for buf in bucket)
    lb.empty_cache()
    monkeypatch.setattr(_buffers, "limit", N * 4 + 100)  # the gradient fits, its buffer not
    y, p = _inputs(11)
    np.testing.assert_allclose(lb.mse.grad(y, p, backend="numpy"),
                               reference.elementwise("mse", y, p)[1], rtol=1e-5)
    assert _buffers.cached_bytes() == 0


def test_varying_sizes_share_the_buffers_of_their_size_class(one_thread):
    """A loop over batches of varying lengths, each gradient dropped: the sizes within an
    eighth of a power of two share one buffer, and the cache holds one per class met, not
    one per size (each of these 40 sizes kept a buffer of its own before)."""
    lb.empty_cache()
    rng = np.random.default_rng(8)
    sizes = rng.integers(N, 2 * N, 40)
    for size in sizes:
        y, p = _inputs(int(size), n=int(size))
        grad = lb.mse.grad(y, p, backend=one_thread)
        np.testing.assert_allclose(grad, reference.elementwise("mse", y, p)[1], rtol=1e-5)
        del grad
    classes = {_buffers.size_class(int(size) * 4) for size in sizes}
    assert len(classes) <= 9  # (an octave's eight, and its end)
    assert _buffers.cached_bytes() == sum(c + _buffers.PAGE for c in classes)
    # two sizes of one class: the second call gets the first one's buffer (placed by its
    # own input's place in a page)
    first = lb.mse.grad(*_inputs(1, n=N), backend=one_thread)
    address = _address(first.base)
    del first
    assert _address(lb.mse.grad(*_inputs(2, n=N + 1000), backend=one_thread).base) == address
    assert _buffers.size_class(N * 4) == _buffers.size_class((N + 1000) * 4) < N * 4 * 9 / 8


def test_a_limit_of_zero_turns_the_cache_off(monkeypatch):
    monkeypatch.setattr(_buffers, "limit", 0)
    y, p = _inputs(7)
    np.testing.assert_allclose(lb.mse.grad(y, p), reference.elementwise("mse", y, p)[1],
                               rtol=1e-5)
    assert _buffers.cached_bytes() == 0


def test_large_gradients_start_a_cache_line(host_backend, monkeypatch):
    """Gradients of ``MIN_BYTES`` and more start at a multiple of ``ALIGNMENT`` bytes
    (the Numba kernels' streaming stores need it), new or handed back, with the cache on
    or off, float32 and float64; and an aligned gradient still keeps its buffer from
    being handed out while the user holds it."""
    y, p = _inputs(8)
    first = lb.mse.grad(y, p, backend=host_backend)
    lb.mse.grad(y, p * 2, backend=host_backend)  # dropped: handed back below
    again = lb.mse.grad(y, p * 3, backend=host_backend)
    wide = lb.mse.grad(y.astype(np.float64), p.astype(np.float64), backend=host_backend)
    monkeypatch.setattr(_buffers, "limit", 0)  # the cache off: a fresh aligned array
    fresh = lb.mse.grad(y, p, backend=host_backend)
    for grad in (first, again, wide, fresh):
        assert _address(grad) % _buffers.ALIGNMENT == 0
    assert not np.shares_memory(first, again)
    np.testing.assert_array_equal(first, lb.mse.grad(y, p, backend="numpy", out=np.empty_like(p)))
    small = lb.mse.grad(*_inputs(9, n=1000), backend=host_backend)  # NumPy's own
    assert small.base is None


def test_large_gradients_sit_by_y_pred_in_its_page(host_backend, monkeypatch):
    """A large gradient (and Hessian) starts at the cache line at or before y_pred's
    place in its 4 KiB page, so that the kernels' loads of y_pred never look like reads
    of the gradient just stored ("4K aliasing", see ``_buffers``): wherever y_pred
    starts, new or handed back, with the cache on or off."""
    y, p0 = _inputs(10)
    for offset in (0, 16, 200, 4032, 4080):
        memory = np.empty(p0.size + 2048, np.float32)
        start = (offset - _address(memory)) % _buffers.PAGE // 4
        p = memory[start:start + p0.size]
        p[:] = p0
        expected = offset // _buffers.ALIGNMENT * _buffers.ALIGNMENT
        for limit in (_buffers.limit, 0):
            monkeypatch.setattr(_buffers, "limit", limit)
            for _ in range(2):  # new, then handed back
                grad, hess = lb.mse.grad_and_hess(y, p, backend=host_backend)
                assert _address(grad) % _buffers.PAGE == expected, (offset, limit)
                assert _address(hess) % _buffers.PAGE == expected, (offset, limit)
                del grad, hess
            np.testing.assert_array_equal(lb.mse.grad(y, p, backend=host_backend),
                                          lb.mse.grad(y, p0, backend=host_backend))


def test_the_data_address_is_numpys_for_every_kind_of_array():
    """``_buffers._data_address`` (a ctypes view's pointer, cheaper than ``ctypes.data``)
    reads what NumPy reads, and falls back to it where no such view can be made."""
    a = np.arange(64, dtype=np.float32)
    read_only = a.copy()
    read_only.flags.writeable = False
    for x in (a, a[5:], a[::2], read_only, read_only[3:], a[:0], np.zeros((3, 4))[:, 1]):
        assert _buffers._data_address(x) == x.ctypes.data


def test_the_environment_variable_sets_the_limit(monkeypatch):
    monkeypatch.setenv(_buffers.ENV_VAR, "0")
    assert _buffers._limit_from_env() == 0
    for text, limit in (("2e9", 2 * 10**9), ("4 GB", 4 * 10**9), ("1GiB", 1 << 30),
                        ("512mib", 512 << 20), ("1.5kB", 1500), ("100b", 100),
                        ("inf", sys.maxsize)):
        monkeypatch.setenv(_buffers.ENV_VAR, text)
        assert _buffers._limit_from_env() == limit, text
    for bad in ("lots", "nan", "1Gi", "GB", "1 GB GB"):  # warned, never an error at import
        monkeypatch.setenv(_buffers.ENV_VAR, bad)
        with pytest.warns(RuntimeWarning, match="not a number of bytes"):
            assert _buffers._limit_from_env() == 1 << 30
    monkeypatch.setenv(_buffers.ENV_VAR, "-5")  # off, as 0, and said so
    with pytest.warns(RuntimeWarning, match="is negative; the cache is off"):
        assert _buffers._limit_from_env() == 0


def test_a_call_from_within_the_cache_takes_fresh_memory(host_backend, monkeypatch):
    """A call made while its own thread is inside the cache (from a signal handler, or a
    finalizer run by a garbage collection inside ``np.empty``) takes fresh memory instead
    of waiting forever on the lock that thread holds (a signal handler that called a loss
    hung there); ``empty_cache`` there frees nothing. The inner call is made from inside
    ``_take``, on another thread watched with a timeout."""
    y, p = _inputs(1)
    inner = {}
    take = _buffers._take

    def take_and_call_again(*args):
        if not inner:
            inner["freed"] = lb.empty_cache()
            inner["grad"] = lb.mse.grad(y, p, reduction="sum", backend=host_backend)
        return take(*args)

    monkeypatch.setattr(_buffers, "_take", take_and_call_again)
    done = {}
    worker = threading.Thread(target=lambda: done.setdefault(
        "grad", lb.mse.grad(y, p, reduction="sum", backend=host_backend)), daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "a call from within the cache waited on its own lock"
    expected = 2 * (p.astype(np.float64) - y)
    np.testing.assert_allclose(done["grad"], expected, rtol=1e-6)
    np.testing.assert_allclose(inner["grad"], expected, rtol=1e-6)
    assert inner["freed"] == 0
    assert _buffers.cached_bytes() > 0  # the outer call's buffer, cached as before


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="no interval timers here")
def test_a_signal_handler_may_call_a_loss(host_backend):
    """The helper's reproducer: a handler that calls a loss, firing while the main thread
    empties the cache in a loop. Run in a subprocess: it hung."""
    import subprocess

    code = f"""
import signal, numpy as np, lossbackends as lb
y, p = np.zeros(300_000, np.float32), np.ones(300_000, np.float32)
calls = []
def on_alarm(*_):
    calls.append(float(lb.mse.grad(y, p, reduction="sum", backend={host_backend!r})[0]))
    signal.setitimer(signal.ITIMER_REAL, 0.0005)  # (again once this call is done)
on_alarm()  # (the lazy imports and compilation first: not from a handler)
signal.setitimer(signal.ITIMER_REAL, 0)
calls.clear()
signal.signal(signal.SIGALRM, on_alarm)
signal.setitimer(signal.ITIMER_REAL, 0.0005)
while len(calls) < 200:
    lb.empty_cache()
signal.signal(signal.SIGALRM, signal.SIG_IGN)
assert set(calls) == {{2.0}}, set(calls)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_free_count_is_measured_by_the_check_itself(monkeypatch):
    """The count a free buffer reads is measured at import by the function that checks it
    (``_first_free``), not assumed: CPython 3.14 may borrow the loop variable's reference
    and read one less than 3.10-3.13, where a constant 3 would take a buffer the user
    still holds for a free one. A reading one less (simulated here) is measured as such,
    and a held gradient is still never reused; counts that tell nothing (no
    ``sys.getrefcount``, or one that reads the same for every object) turn the cache off."""
    import sys

    free, held = [np.empty(8, np.uint8)], [np.empty(8, np.uint8)]
    view = held[0][2:]  # a user's view holds the buffer
    assert _buffers._first_free(free, _buffers._UNREFERENCED) is free[0]
    assert _buffers._first_free(held, _buffers._UNREFERENCED) is None
    real = sys.getrefcount
    # (the wrapper's own argument is one more reference: 2 less reads 1 less than real)
    monkeypatch.setattr(sys, "getrefcount", lambda o: real(o) - 2)
    borrowed = _buffers._unreferenced_count()
    assert borrowed == _buffers._UNREFERENCED - 1
    monkeypatch.setattr(_buffers, "_UNREFERENCED", borrowed)
    y, p = _inputs(3)
    first = lb.mse.grad(y, p, backend="numpy")
    kept = first.copy()
    second = lb.mse.grad(y, p + 1, backend="numpy")
    assert not np.shares_memory(first, second)
    np.testing.assert_array_equal(first, kept)
    del first, second
    assert lb.mse.grad(y, p, backend="numpy") is not None
    monkeypatch.setattr(sys, "getrefcount", lambda o: 3)
    assert _buffers._unreferenced_count() is None
    monkeypatch.delattr(sys, "getrefcount")
    assert _buffers._unreferenced_count() is None
    del view
