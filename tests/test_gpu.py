"""GPU-only checks: float16 at scale, arrays past 2**31 elements, bitwise reproducibility,
CUDA-graph capture (which proves no host synchronisation), in-place gradients."""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import _skip_reason
from cuda_host import same_bits_under
from reference import cross_entropy as ce_reference

import lossbackends as lb

reason = _skip_reason("cupy")
pytestmark = pytest.mark.skipif(reason is not None, reason=reason or "")

ELEMENTWISE = ("mse", "binary_cross_entropy", "binary_cross_entropy_with_logits", "hinge")


def _inputs(cp, loss, n, dtype, seed=0):
    rng = cp.random.RandomState(seed)
    if loss == "binary_cross_entropy":
        return (rng.random_sample(n) < 0.5).astype(dtype), rng.uniform(0.01, 0.99, n).astype(dtype)
    if loss == "hinge":
        labels = cp.where(rng.random_sample(n) < 0.5, -1.0, 1.0).astype(dtype)
        return labels, rng.normal(0, 2, n).astype(dtype)
    return rng.random_sample(n).astype(dtype), rng.normal(0, 2, n).astype(dtype)


@pytest.mark.parametrize("loss", ELEMENTWISE)
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_large_low_precision_against_float64(loss, dtype):
    import cupy as cp

    n = 10_000_019  # prime: exercises the scalar tail after the packs
    y, p = _inputs(cp, loss, n, dtype)
    value = getattr(lb, loss)(y, p)
    # "sum": a mean's gradient (~1/n) would sit in float16's subnormals
    grad = getattr(lb, loss).grad(y, p, reduction="sum")
    ref_value = getattr(lb, loss)(y.astype(cp.float64), p.astype(cp.float64))
    ref_grad = getattr(lb, loss).grad(y.astype(cp.float64), p.astype(cp.float64), reduction="sum")
    assert value.dtype == dtype and grad.dtype == dtype and isinstance(value, cp.ndarray)
    tol = 2e-3 if dtype == "float16" else 1e-5
    assert abs(float(value) - float(ref_value)) <= tol * abs(float(ref_value))
    err = float(cp.max(cp.abs(grad.astype(cp.float64) - ref_grad)) / cp.max(cp.abs(ref_grad)))
    assert err < tol


@pytest.mark.parametrize("loss", ELEMENTWISE + ("cross_entropy",))
def test_bitwise_reproducible(loss):
    import cupy as cp

    if loss == "cross_entropy":
        rng = cp.random.RandomState(1)
        args = [(rng.randint(0, 32000, 512), rng.normal(0, 3, (512, 32000)).astype(cp.float32)),
                (rng.randint(0, 10, 100_000), rng.normal(0, 3, (100_000, 10)).astype(cp.float32))]
    else:
        args = [_inputs(cp, loss, 50_000_000, "float32", seed=2)]
    for y, p in args:
        first = getattr(lb, loss).value_and_grad(y, p)
        for _ in range(3):
            again = getattr(lb, loss).value_and_grad(y, p)
            assert again[0].tobytes() == first[0].tobytes()
            assert cp.array_equal(again[1], first[1])


def test_elementwise_past_2_31_elements():
    import cupy as cp

    n = 2**31 + 4099
    y = cp.zeros(n, cp.float16)
    p = cp.ones(n, cp.float16)
    p[-3000:] = 2  # the tail past 2**31 must be read and written
    expected = (n - 3000) * 1.0 + 3000 * 4.0
    value = lb.mse(y, p)  # float16 value, float32 accumulation: 1.0000042 rounds to 1
    assert float(value) == 1.0
    grad = lb.mse.grad(y, p, reduction="sum", out=p)
    assert float(grad[-1]) == 4.0 and float(grad[n - 2000]) == 4.0 and float(grad[0]) == 2.0
    assert float(grad[2**31 + 1]) == 2.0 and float(grad[-3001]) == 2.0
    del y, p, grad
    y = cp.zeros(n, cp.float32)
    p = cp.ones(n, cp.float32)
    p[-3000:] = 2
    value = lb.mse(y, p, reduction="sum")
    assert abs(float(value) - expected) / expected < 1e-6


def test_cross_entropy_past_2_31_elements():
    import cupy as cp

    rows, classes = 16_800, 128_256  # 2.15e9 logits
    rng = cp.random.RandomState(3)
    x = rng.normal(0, 2, (rows, classes), dtype=cp.float32).astype(cp.float16)
    t = rng.randint(0, classes, rows)
    x_last = x[-2:].copy()
    value, grad = lb.cross_entropy.value_and_grad(t, x, reduction="sum", out=x)  # float32 sum
    _, expected = ce_reference(cp.asnumpy(t[-2:]), cp.asnumpy(x_last).astype(np.float64), reduction="sum")
    np.testing.assert_allclose(cp.asnumpy(grad[-2:]).astype(np.float64), expected, atol=2e-3)
    assert float(value) == np.inf  # 16800 rows of ~12 overflow float16's 65504, as in NumPy


def _capture(cp, call):
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        call()  # warm-up: compile, allocate workspaces
        stream.synchronize()
        stream.begin_capture()
        result = call()
        graph = stream.end_capture()
    return stream, graph, result


@pytest.mark.parametrize("loss", ELEMENTWISE + ("cross_entropy", "multiclass_hinge"))
@pytest.mark.parametrize("n", [1000, 3_000_000])
def test_cuda_graph_capture_no_host_sync(loss, n):
    import cupy as cp

    rng = cp.random.RandomState(4)
    if loss in ("cross_entropy", "multiclass_hinge"):
        rows = n // 100
        y = rng.randint(0, 100, rows)
        p = rng.normal(size=(rows, 100)).astype(cp.float32)
        options = {"check_labels": False}
    else:
        y, p = _inputs(cp, loss, n, "float32", seed=5)
        options = {}
    out = cp.empty_like(p)
    function = getattr(lb, loss)
    stream, graph, (value, grad) = _capture(
        cp, lambda: function.value_and_grad(y, p, out=out, **options))
    # new inputs in the same buffers: the replayed graph must see them
    if loss in ("cross_entropy", "multiclass_hinge"):
        y[...] = rng.randint(0, 100, y.shape)
    else:
        y[...] = _inputs(cp, loss, n, "float32", 6)[0]
    p *= 0.5
    graph.launch(stream)
    stream.synchronize()
    expected_value, expected_grad = function.value_and_grad(y, p, backend="cupy", **options)
    cp.testing.assert_allclose(value, expected_value, rtol=1e-6)
    cp.testing.assert_allclose(grad, expected_grad, rtol=1e-6, atol=1e-9)


def test_value_is_a_device_array_without_sync():
    import cupy as cp

    y, p = _inputs(cp, "mse", 1000, "float32")
    value = lb.mse(y, p)
    assert isinstance(value, cp.ndarray) and value.shape == ()


def test_host_backend_with_device_arrays_is_an_error():
    import cupy as cp

    y = cp.zeros(3)
    with pytest.raises(ValueError, match="cannot run on GPU arrays"):
        lb.mse(y, y, backend="numpy")
    with pytest.raises(ValueError, match="different devices"):
        lb.mse(np.zeros(3), y)
    with pytest.raises(ValueError, match="cannot run on host"):
        lb.mse(np.zeros(3), np.zeros(3), backend="cupy")


# --- torch CUDA tensors (zero-copy through DLPack, on torch's current stream) ---------


def _torch_cuda():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here (a CPU build): torch CUDA tests skipped")
    return torch


def test_torch_cuda_tensors_zero_copy_on_torch_stream():
    torch = _torch_cuda()
    import lossbackends.torch as lbt

    g = torch.Generator(device="cuda").manual_seed(0)
    y = torch.rand(1_000_003, device="cuda", generator=g)
    p = torch.randn(1_000_003, device="cuda", generator=g)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):  # a non-default stream: the kernels must queue on it
        out = torch.empty_like(p)
        value, grad = lb.mse.value_and_grad(y, p, out=out)
        losses = lb.mse(y, p, reduction="none")
    stream.synchronize()
    assert grad is out and value.device == p.device and losses.device == p.device
    torch.testing.assert_close(value, torch.nn.functional.mse_loss(p, y))
    torch.testing.assert_close(out, 2 * (p - y) / p.numel())
    torch.testing.assert_close(losses, (p - y) ** 2)
    x = torch.randn(64, 1000, device="cuda", requires_grad=True, generator=g)
    t = torch.randint(0, 1000, (64,), device="cuda", generator=g)
    loss = lbt.cross_entropy(x, t)
    loss.backward()
    expected = torch.nn.functional.cross_entropy(x, t)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(x.grad, torch.autograd.grad(expected, x)[0])


@pytest.mark.parametrize("loss", ["mse", "binary_cross_entropy_with_logits", "cross_entropy"])
def test_torch_cuda_bfloat16_in_the_kernels(loss):
    torch = _torch_cuda()
    g = torch.Generator(device="cuda").manual_seed(1)
    if loss == "cross_entropy":
        y = torch.randint(0, 300, (512,), device="cuda", generator=g)
        p = torch.randn(512, 300, device="cuda", generator=g).to(torch.bfloat16)
    else:
        y = torch.rand(100_003, device="cuda", generator=g).to(torch.bfloat16)
        p = torch.randn(100_003, device="cuda", generator=g).to(torch.bfloat16)
    fn = getattr(lb, loss)
    value, grad = fn.value_and_grad(y, p, reduction="sum")
    assert value.dtype == grad.dtype == torch.bfloat16
    y32 = y if loss == "cross_entropy" else y.float()
    ref_value, ref_grad = fn.value_and_grad(y32, p.float(), reduction="sum")
    torch.testing.assert_close(value.float(), ref_value, rtol=1e-2, atol=0)
    torch.testing.assert_close(grad, ref_grad.to(torch.bfloat16))  # float32 inside, rounded once
    q = p.clone()
    _, out = fn.value_and_grad(y, q, reduction="sum", out=q)
    assert out is q and torch.equal(q, grad)


def _cross_entropy_on_card(labels, logits, reduction, in_place, options) -> tuple:
    """``cross_entropy.value_and_grad`` of host arrays on the card, in place or not, its
    results back on the host."""
    import cupy as cp

    x = cp.asarray(logits)
    value, grad = lb.cross_entropy.value_and_grad(cp.asarray(labels), x, reduction=reduction,
                                                  out=x if in_place else None, **options)
    return cp.asnumpy(value), cp.asnumpy(grad)


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
def test_the_plain_rows_kernel_gives_the_generic_bits_on_the_card(dtype):
    """``ce_rows_plain`` (``CE_ROWS_PLAIN``, the plain call's default) against ``ce_rows``
    on the card, where the compiler's contractions could differ from the host's: the same
    bits (as integers: -0 and NaNs too) in every warp-per-row configuration, with an
    ignored row (its warp takes the generic body), ties and infinities, z-loss up to an
    overflowing scale, "none" and "mean", in place and unpacked (an odd class count)."""

    from lossbackends.backends import cupy_backend

    rng = np.random.default_rng(8)
    for classes in (100, 300, 997, 1000):
        x = (rng.normal(size=(4096, classes)) * 3).astype(dtype)
        t = rng.integers(0, classes, 4096)
        t[17] = -100
        x[5, [t[5], 9]] = 7.5
        x[6, 3] = np.inf
        x[7] = -np.inf
        for options in ({}, {"z_loss": 1e-4}, {"z_loss": 1e30}):
            for reduction, in_place in (("none", False), ("mean", False), ("none", True)):
                same_bits_under(cupy_backend, "CE_ROWS_PLAIN", (True, False), functools.partial(
                    _cross_entropy_on_card, t, x, reduction, in_place, options),
                    f"{classes} {options} {reduction}")
    ran = {name for _, name in cupy_backend._device()._functions}
    assert any(name.startswith("ce_rows_plain<") for name in ran)


def test_the_docs_gpu_examples_run():
    """The docs pages' GPU examples (skipped by ci/docs without a GPU) run on the card, in
    the globals of the docs' doctest setup."""
    from test_docstrings import gpu_examples

    for page, code in gpu_examples():
        exec(compile(code, page, "exec"), {"np": np, "lb": lb})


def test_torch_cuda_bfloat16_multiclass_hinge_hessian():
    """multiclass_hinge's Hessian (0; NaN on a row holding a NaN) for bfloat16 tensors is
    told by bfloat16's bits: float16's isnan on them took bfloat16's infinities and values
    from 2^121 for NaN, and wrote a NaN that bfloat16 reads as 2^125."""
    torch = _torch_cuda()
    inf, nan = float("inf"), float("nan")
    x = torch.tensor([[1.0, inf, -inf], [2.0**122, -3.0, 0.0], [nan, 1.0, 2.0]],
                     device="cuda", dtype=torch.bfloat16)
    _, hess = lb.multiclass_hinge.grad_and_hess(torch.tensor([0, 1, 2], device="cuda"), x)
    assert hess.dtype == torch.bfloat16
    expected = torch.tensor([[0.0] * 3, [0.0] * 3, [nan] * 3], dtype=torch.bfloat16)
    torch.testing.assert_close(hess.cpu(), expected, equal_nan=True)


def test_threads_on_one_stream_keep_their_own_workspaces():
    """Calls from several threads on the default stream, every thread's: each thread's
    scratch buffers (partial sums, the mean's scale) are its own, so that no call sums
    another's partials."""
    import cupy as cp

    rng = np.random.default_rng(5)
    cases = [(rng.integers(0, 1000, 4096), rng.normal(0, 1 + i, (4096, 1000)))
             for i in range(4)]
    expected = [float(lb.cross_entropy(t, x, backend="numpy")) for t, x in cases]
    on_device = [(cp.asarray(t), cp.asarray(x)) for t, x in cases]

    def run(i):
        t, x = on_device[i]
        return [float(lb.cross_entropy(t, x)) for _ in range(50)]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, range(4)))
    for got, want in zip(results, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("dtype, threads, in_flight, staged_kib, classes", [
    ("float32", 512, 4, 96, 50000),  # 6144 of 12500 packs staged, the rest read downwards
    ("float32", 1024, 4, 200, 20000),  # the whole row staged
    ("float16", 256, 2, 48, 30000),
    ("float32", 512, 4, 96, 50003),  # rows of an odd length: not packed, nothing staged
    ("float64", 512, 4, 96, 20000),  # (float64 rows stage the soft-capped logits' tanh too)
])
def test_the_streaming_kernel_gives_the_same_bits_staged_and_downwards_on_the_card(
        dtype, threads, in_flight, staged_kib, classes):
    """``ce_stream`` with the row's end in shared memory (the opt-in) and the gradient's
    pass from the top down, candidates of the sweep, against the same threads and packs in
    flight without them on the card: the same bits, in place too (where the assembler
    fuses the stored tanh's products as it fuses the default's)."""

    from lossbackends._cuda_sources import StreamConfig
    from lossbackends.backends import cupy_backend

    config = StreamConfig(threads, in_flight, down=True, staged_kib=staged_kib)
    plain = StreamConfig(threads, in_flight)
    rng = np.random.default_rng(classes)
    x = (rng.normal(size=(64, classes)) * 4).astype(dtype)
    t = rng.integers(0, classes, 64)
    t[3] = -100
    x[5, [t[5], classes - 2]] = 9.0
    x[6, 17] = np.inf
    settings = tuple(dict.fromkeys(cupy_backend.STREAM, c) for c in (config, plain))
    for options in ({}, {"softcap": 15.0}, {"z_loss": 1e-4}):
        for reduction, in_place in (("none", False), ("mean", False), ("mean", True)):
            same_bits_under(cupy_backend, "STREAM", settings, functools.partial(
                _cross_entropy_on_card, t, x, reduction, in_place, options),
                f"{options} {reduction} {in_place}")


def test_the_label_check_clears_its_flag_and_the_mean_its_count():
    """A bad label raises, and the flag is cleared for the next call; good labels pass.
    The "mean"'s label pass (blocks whose last adds their sums, counted in a workspace)
    gives the same scale call after call: 3 x 4096 + 5 rows, 4 blocks, an ignored row and
    class weights."""
    import cupy as cp

    x = cp.zeros((3, 5), cp.float32)
    with pytest.raises(lb.LabelError, match=r"y_true\[1\] = 7"):
        lb.cross_entropy(cp.asarray([0, 7, 1]), x)
    value = lb.cross_entropy(cp.asarray([0, 4, 1]), x)
    assert abs(float(value) - np.log(5)) < 1e-6
    with pytest.raises(lb.LabelError, match=r"y_true\[2\] = 5"):
        lb.multiclass_hinge(cp.asarray([0, 1, 5]), x)
    rng = np.random.default_rng(7)
    rows = 3 * 4096 + 5
    logits = rng.normal(size=(rows, 7)).astype(np.float32)
    labels = rng.integers(0, 7, rows)
    weight = rng.uniform(0.5, 2, 7).astype(np.float32)
    for step in (9, 5, 3):  # (another count each call: a stale scale cannot pass)
        labels[::step] = -100
        want = lb.cross_entropy.value_and_grad(labels, logits, class_weight=weight,
                                               backend="numpy")
        got = lb.cross_entropy.value_and_grad(cp.asarray(labels), cp.asarray(logits),
                                              class_weight=cp.asarray(weight))
        np.testing.assert_allclose(float(got[0]), want[0], rtol=1e-5)
        np.testing.assert_allclose(cp.asnumpy(got[1]), want[1], rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("loss", ["cross_entropy", "multiclass_hinge"])
def test_the_label_check_in_a_capture_names_check_labels(loss):
    """The label check waits for the GPU, which a CUDA graph's capture does not allow: the
    error names the fix (check_labels=False), not CUDA's code."""
    import cupy as cp

    x, t = cp.zeros((4, 5), cp.float32), cp.asarray([0, 1, 2, 3])
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        getattr(lb, loss)(t, x)  # warm-up: compile, allocate workspaces
        stream.synchronize()
        stream.begin_capture()
        try:
            with pytest.raises(RuntimeError, match="check_labels=False"):
                getattr(lb, loss)(t, x)
        finally:
            try:
                stream.end_capture()
            except Exception:  # noqa: BLE001 (a capture the error invalidated)
                pass


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_with_logits_labels_beyond_0_1_on_the_card(dtype):
    """Without ``pos_weight`` softplus's weight is 1 on the card too (tests/test_cuda_host.py
    runs the same kernel on the host): a NaN label's Hessian is NumPy's 0.25, not NaN."""
    import cupy as cp

    y = np.array([np.nan, np.inf, -np.inf, 2.0**25, -(2.0**25), 0.3, 1.0], dtype)
    p = np.array([0.0, 1.0, -1.0, 0.0, 2.0, 0.5, -3.0], dtype)
    loss = lb.binary_cross_entropy_with_logits
    for on_card, on_host in [(loss(cp.asarray(y), cp.asarray(p), reduction="none"),
                              loss(y, p, reduction="none", backend="numpy")),
                             *zip(loss.grad_and_hess(cp.asarray(y), cp.asarray(p), reduction="none"),
                                  loss.grad_and_hess(y, p, reduction="none", backend="numpy"),
                                  strict=True)]:
        np.testing.assert_allclose(cp.asnumpy(on_card), on_host, rtol=1e-6)
