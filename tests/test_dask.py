"""Dask arrays through the same calls: results equal to the in-memory call (the gradient bit
for bit, the value within its sum's rounding), lazy, deterministic, with the errors the
contract names. Most run on Dask's synchronous scheduler; one on a LocalCluster of two
worker processes."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from conftest import examples
from hypothesis import given, settings
from hypothesis import strategies as st

import lossbackends as lb

da = pytest.importorskip("dask.array", reason="Dask is not installed (pip install 'lossbackends[dask]')")
dask = pytest.importorskip("dask")

ELEMENTWISE = ("mse", "binary_cross_entropy", "binary_cross_entropy_with_logits", "hinge")
RTOL = {np.float32: 2e-6, np.float64: 1e-13}


@pytest.fixture(autouse=True)
def synchronous():
    with dask.config.set(scheduler="synchronous"):
        yield


def host_backend(backend):
    if backend == "cupy":
        pytest.skip("Dask with CuPy chunks runs in ci/gpu")
    return backend


def _inputs(loss, rng, shape, dtype):
    if loss == "binary_cross_entropy":
        return (rng.random(shape) < 0.5).astype(dtype), rng.uniform(0.01, 0.99, shape).astype(dtype)
    if loss == "hinge":
        return np.where(rng.random(shape) < 0.5, -1, 1).astype(dtype), rng.normal(0, 2, shape).astype(dtype)
    return rng.random(shape).astype(dtype), rng.normal(0, 3, shape).astype(dtype)


def _same(lazy, eager, dtype, exact):
    """A lazy result against the in-memory one: bit for bit, or within the sum's rounding."""
    computed = np.asarray(lazy.compute() if hasattr(lazy, "compute") else lazy)
    eager = np.asarray(eager)
    assert computed.shape == eager.shape and computed.dtype == eager.dtype
    if exact:
        np.testing.assert_array_equal(computed, eager)
    else:
        np.testing.assert_allclose(computed, eager, rtol=RTOL[dtype], atol=0)


def _chunks(draw, shape):
    return tuple(draw(st.integers(1, max(1, d))) for d in shape)


@pytest.mark.parametrize("loss", ELEMENTWISE)
@given(data=st.data(), dtype=st.sampled_from([np.float32, np.float64]),
       reduction=st.sampled_from(["mean", "sum", "none"]), weighted=st.booleans())
@settings(max_examples=examples(25), deadline=None)
def test_elementwise_equals_in_memory(backend, loss, data, dtype, reduction, weighted):
    backend = host_backend(backend)
    shape = data.draw(st.sampled_from([(1,), (7,), (61,), (10, 13), (3, 4, 5)]))
    chunks = _chunks(data.draw, shape)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    y, p = _inputs(loss, rng, shape, dtype)
    options = {"weight": rng.uniform(0, 2, shape[-1:]).astype(dtype)} if weighted else {}
    if loss == "binary_cross_entropy_with_logits" and data.draw(st.booleans()):
        options["pos_weight"] = rng.uniform(0.5, 2, shape[-1:]).astype(dtype)
    function = getattr(lb, loss)
    dy, dp = da.from_array(y, chunks=chunks), da.from_array(p, chunks=chunks)
    value, grad = function.value_and_grad(dy, dp, reduction=reduction, backend=backend, **options)
    assert isinstance(grad, da.Array) and grad.chunks == dp.chunks
    value, grad = dask.compute(value, grad)
    expected_value, expected_grad = function.value_and_grad(y, p, reduction=reduction,
                                                            backend=backend, **options)
    _same(grad, expected_grad, dtype, exact=True)
    _same(value, expected_value, dtype, exact=reduction == "none")
    _same(function(dy, dp, reduction=reduction, backend=backend, **options), expected_value,
          dtype, exact=reduction == "none")
    _same(function.grad(dy, dp, reduction=reduction, backend=backend, **options), expected_grad,
          dtype, exact=True)


@pytest.mark.parametrize("case", ["plain", "class_weight", "smoothing", "probabilities", "axis",
                                  "z_loss_class_weight"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_equals_in_memory(backend, case, reduction):
    backend = host_backend(backend)
    rng = np.random.default_rng(7)
    shape, axis, chunks = (203, 11), -1, (37, 11)
    if case == "axis":
        shape, axis, chunks = (9, 11, 14), 1, (4, 11, 5)
    x = rng.normal(0, 3, shape).astype(np.float32)
    batch = shape[:axis % len(shape)] + shape[axis % len(shape) + 1:]
    t = rng.integers(0, shape[axis], batch)
    t.reshape(-1)[::3] = -100  # ignored rows in every chunk
    options = {"axis": axis}
    if case in ("class_weight", "z_loss_class_weight"):
        options["class_weight"] = rng.uniform(0.1, 3, shape[axis]).astype(np.float32)
    if case == "z_loss_class_weight":  # the z-loss's mean per kept row, not per weight
        options["z_loss"] = 0.1
    if case == "smoothing":
        options["label_smoothing"] = 0.2
    if case == "probabilities":
        t = rng.dirichlet(np.ones(shape[-1]), batch).astype(np.float32)
    dt = da.from_array(t, chunks=chunks if t.ndim == len(shape) else
                       tuple(c for i, c in enumerate(chunks) if i != axis % len(shape)))
    dx = da.from_array(x, chunks=chunks)
    value, grad = dask.compute(*lb.cross_entropy.value_and_grad(
        dt, dx, reduction=reduction, backend=backend, **options))
    expected_value, expected_grad = lb.cross_entropy.value_and_grad(
        t, x, reduction=reduction, backend=backend, **options)
    _same(grad, expected_grad, np.float32, exact=True)
    _same(value, expected_value, np.float32, exact=reduction == "none")


@pytest.mark.parametrize("weight_kind", ["dask", "numpy", "scalar"])
def test_multiclass_hinge_weights_equal_in_memory(backend, weight_kind):
    """multiclass_hinge's weight= (one per row) with Dask logits: cut as the rows are (the
    class axis in the middle here), a Dask weight chunked otherwise rechunked; the gradient,
    the Hessian and each row's loss have the in-memory call's bits."""
    backend = host_backend(backend)
    rng = np.random.default_rng(8)
    x = rng.normal(0, 2, (9, 6, 14)).astype(np.float32)
    t = rng.integers(0, 6, (9, 14))
    w = rng.uniform(0.1, 3, (9, 14)).astype(np.float32)
    weight = {"dask": da.from_array(w, chunks=(5, 4)), "numpy": w, "scalar": 2.0}[weight_kind]
    eager_weight = 2.0 if weight_kind == "scalar" else w
    dt, dx = da.from_array(t, chunks=(4, 5)), da.from_array(x, chunks=(4, 6, 5))
    for reduction in ("mean", "sum", "none"):
        value, grad = dask.compute(*lb.multiclass_hinge.value_and_grad(
            dt, dx, weight=weight, axis=1, reduction=reduction, backend=backend))
        expected_value, expected_grad = lb.multiclass_hinge.value_and_grad(
            t, x, weight=eager_weight, axis=1, reduction=reduction, backend=backend)
        _same(grad, expected_grad, np.float32, exact=True)
        _same(value, expected_value, np.float32, exact=reduction == "none")
    grad, hess = dask.compute(*lb.multiclass_hinge.grad_and_hess(dt, dx, weight=weight, axis=1,
                                                                  backend=backend))
    expected = lb.multiclass_hinge.grad_and_hess(t, x, weight=eager_weight, axis=1,
                                                 backend=backend)
    _same(grad, expected[0], np.float32, exact=True)
    _same(hess, expected[1], np.float32, exact=True)
    with pytest.raises(ValueError, match=r"does not broadcast to the labels' shape \(9, 14\)"):
        lb.multiclass_hinge(dt, dx, weight=np.ones(3), axis=1, backend=backend)


def test_every_row_ignored_gives_nan_like_in_memory(backend):
    backend = host_backend(backend)
    x = np.random.default_rng(1).normal(size=(10, 3))
    t = np.full(10, -100)
    with np.errstate(all="ignore"):
        value, grad = dask.compute(*lb.cross_entropy.value_and_grad(
            da.from_array(t, chunks=4), da.from_array(x, chunks=(4, 3)), backend=backend))
        expected = lb.cross_entropy.value_and_grad(t, x, backend=backend)
    assert np.isnan(value) and np.isnan(expected[0])
    np.testing.assert_array_equal(grad, expected[1])


@pytest.mark.parametrize("options", [{}, {"class_weight": "w"}, {"class_weight": "w", "z_loss": 0.1}])
def test_unchecked_bad_labels_are_not_counted_in_the_mean_like_in_memory(backend, options):
    """check_labels=False: a label outside [0, C) is a NaN row, not a kept one, in the
    mean's denominator and the z-loss's count (the pass over the labels counted it)."""
    backend = host_backend(backend)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 5))
    t = rng.integers(0, 5, 40)
    t[[3, 17, 31]] = [5, -2, 9]
    t[::7] = -100
    options = dict(options, check_labels=False)
    if options.get("class_weight") == "w":
        options["class_weight"] = rng.uniform(0.5, 2.0, 5)
    grad = lb.cross_entropy.grad(da.from_array(t, chunks=9), da.from_array(x, chunks=(9, 5)),
                                 backend=backend, **options).compute()
    expected = lb.cross_entropy.grad(t, x, backend=backend, **options)
    good = (t >= 0) & (t < 5)
    # (a few ulps: the z-loss's coefficient reaches the blocks as z times a factor, and the
    # label's gradient carries its rounding; a wrong count is off by a few per cent)
    np.testing.assert_allclose(grad[good], expected[good], rtol=1e-14, atol=0)
    assert np.isnan(grad[[3, 17, 31]]).all() and np.isnan(expected[[3, 17, 31]]).all()


def test_a_bad_label_in_a_late_chunk_raises_at_compute_naming_its_row(backend):
    backend = host_backend(backend)
    x = np.zeros((100, 4), np.float32)
    t = np.zeros(100, np.int64)
    t[93] = 4
    value = lb.cross_entropy(da.from_array(t, chunks=30), da.from_array(x, chunks=(30, 4)),
                             backend=backend)  # lazy: nothing raised yet
    with pytest.raises(ValueError, match=r"y_true\[93\] = 4 is not a class index in \[0, 4\)"):
        value.compute()
    x3, t3 = np.zeros((5, 4, 6)), np.zeros((5, 6), np.int64)
    t3[4, 5] = -3
    with pytest.raises(ValueError, match=r"y_true\[4, 5\] = -3"):
        lb.cross_entropy.grad(da.from_array(t3, chunks=(2, 4)), da.from_array(x3, chunks=(2, 4, 4)),
                              axis=1, backend=backend).compute()


def test_errors_at_call_time():
    x = da.zeros((10, 6), chunks=(5, 3))
    t = da.zeros(10, chunks=5, dtype=np.int64)
    with pytest.raises(ValueError, match=r"y_pred.rechunk\(\{1: -1\}\)"):
        lb.cross_entropy(t, x)
    with pytest.raises(ValueError, match="out= cannot be used with Dask arrays"):
        lb.mse.grad(x, x, out=np.empty((10, 6)))
    with pytest.raises(ValueError, match=r"y_true has shape \(10, 5\) but y_pred has shape \(10, 6\)"):
        lb.mse(da.zeros((10, 5), chunks=5), x)
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        lb.cross_entropy(t, x.rechunk({1: -1}), label_smoothing=2.0)
    # the arrays' shapes, not those of the stand-ins the options are checked on
    with pytest.raises(TypeError, match=r"y_true of shape \(10,\) holds class indices and must "
                       r"be integers, not float64; .* shaped like the logits \(10, 6\)$"):
        lb.cross_entropy(t.astype(float), x.rechunk({1: -1}))
    with pytest.raises(TypeError, match=r"y_true of shape \(10,\) holds class indices"):
        lb.multiclass_hinge(t.astype(float), x.rechunk({1: -1}))
    # ... and only those: another argument's shape stays its own, even where it is a
    # stand-in's
    with pytest.raises(ValueError, match=r"class_weight has shape \(1,\); pass one weight per "
                       r"class, shape \(6,\)"):
        lb.cross_entropy(t, x.rechunk({1: -1}), class_weight=np.ones(1))
    with pytest.raises(ValueError, match="does not broadcast"):
        lb.mse(x, x, weight=np.ones(4))
    with pytest.raises(ValueError, match="eps must be in"):
        lb.binary_cross_entropy(x, x, eps=0.7)
    with pytest.raises(ValueError, match="unknown backend"):
        lb.mse(x, x, backend="nope")
    # a float axis is refused, not truncated; multiclass_hinge is named and offered no
    # probabilities
    with pytest.raises(TypeError, match="cross_entropy: axis must be an integer"):
        lb.cross_entropy(t, x.rechunk({1: -1}), axis=1.5)
    with pytest.raises(ValueError, match=r"multiclass_hinge .* class indices of shape \(10,\)$"):
        lb.multiclass_hinge(da.zeros((10, 6), chunks=(5, 6)), x.rechunk({1: -1}))


def test_results_are_lazy_and_the_same_bits_each_time():
    def explode(block):
        raise AssertionError("computed too early")

    never = da.zeros(10, chunks=5).map_blocks(explode, dtype=float)
    value, grad = lb.mse.value_and_grad(never, never)  # builds the graph, computes nothing
    assert isinstance(value, da.Array) and value.shape == () and isinstance(grad, da.Array)
    rng = np.random.default_rng(3)
    y = da.from_array(rng.normal(size=100_003).astype(np.float32), chunks=7_001)
    p = da.from_array(rng.normal(size=100_003).astype(np.float32), chunks=7_001)
    first = lb.mse(y, p).compute()
    with dask.config.set(scheduler="threads"):
        again = [lb.mse(y, p).compute() for _ in range(3)]
    assert all(a.tobytes() == first.tobytes() for a in again)


def test_empty_inputs_like_in_memory(backend):
    backend = host_backend(backend)
    empty = da.zeros((0,), chunks=1)
    with pytest.warns(RuntimeWarning, match="mean of an empty input"):
        value = lb.mse(empty, empty, backend=backend).compute()
    # the scalar the in-memory call gives, as a non-empty Dask array's value computes to
    assert isinstance(value, np.float64) and np.isnan(value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = lb.mse(empty.astype(np.float32), empty.astype(np.float32), reduction="sum",
                       backend=backend).compute()
        assert isinstance(value, np.float32) and value == 0
        value, grad = lb.mse.value_and_grad(empty, empty, reduction="none", backend=backend)
        assert value.compute().shape == (0,) and grad.compute().shape == (0,)
        value = lb.cross_entropy(da.zeros(0, dtype=np.int64, chunks=1), da.zeros((0, 3), chunks=1),
                                 reduction="sum", backend=backend)
        assert value.compute() == 0


def test_empty_chunks_inside_a_non_empty_array(backend):
    """An empty chunk adds nothing: "none" results have the array's shape and values (an
    empty chunk gave one NaN element each, beyond the declared shape), integer predictions
    give float64 gradients there too."""
    backend = host_backend(backend)
    y, p = np.arange(4.0), np.array([1, 2, 3, 4])
    uneven = da.from_array(p, chunks=((2, 0, 2),))
    value, grad = lb.mse.value_and_grad(da.from_array(y, chunks=2), uneven, reduction="none",
                                        backend=backend)
    expected = lb.mse.value_and_grad(y, p, reduction="none", backend=backend)
    for lazy, eager in zip((value, grad), expected, strict=True):
        computed = lazy.compute()
        assert computed.shape == lazy.shape == eager.shape and computed.dtype == lazy.dtype
        np.testing.assert_array_equal(computed, eager)
    logits = np.random.default_rng(3).normal(size=(3, 2, 4))
    labels = np.array([[0, 1], [2, 3], [1, 1]])
    for axis, chunks in ((-1, ((1, 0, 2), (2,), (4,))), (1, ((3,), (4,), (1, 0, 1)))):
        x = np.moveaxis(logits, -1, axis)
        lazy = lb.cross_entropy(labels, da.from_array(x, chunks=chunks),
                                axis=axis, reduction="none", backend=backend)
        eager = lb.cross_entropy(labels, x, axis=axis, reduction="none", backend=backend)
        assert lazy.compute().shape == lazy.shape == eager.shape
        np.testing.assert_allclose(lazy.compute(), eager, rtol=1e-15)


def test_one_call_runs_the_kernel_once_per_block(monkeypatch):
    from lossbackends import _dask

    calls = []
    block = _dask._compute_block
    monkeypatch.setattr(_dask, "_compute_block", lambda *a, **k: calls.append(1) or block(*a, **k))
    x = da.from_array(np.arange(100.0), chunks=10)
    dask.compute(*lb.mse.value_and_grad(x, x * 0.5))
    assert len(calls) == 10


def test_backend_precedence_applies_to_the_blocks(monkeypatch):
    from lossbackends import _dispatch

    used = []
    kernel_for = _dispatch.kernel_for
    monkeypatch.setattr(_dispatch, "kernel_for",
                        lambda loss, backend: used.append(backend) or kernel_for(loss, backend))
    x = da.from_array(np.arange(10.0), chunks=5)
    with lb.use_backend("numpy"):
        lazy = lb.mse(x, x * 2)  # the choice is made here, not where the blocks run
    lazy.compute()
    assert set(used) == {"numpy"}


def test_local_cluster_of_two_processes_with_a_cold_numba_cache(tmp_path):
    """Two worker processes compile the Numba kernels at once into one empty cache."""
    pytest.importorskip("numba")
    distributed = pytest.importorskip("distributed")
    # set in the workers' environment only: NUMBA_NUM_THREADS cannot change in a process
    # whose Numba threads run (this one)
    env = {"NUMBA_CACHE_DIR": str(tmp_path), "NUMBA_NUM_THREADS": "1"}
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, env=env) as cluster, \
            distributed.Client(cluster) as client:
        rng = np.random.default_rng(5)
        # (one loss: the row kernels compile and cache through the same Numba calls)
        x = rng.normal(size=(4000, 10)).astype(np.float32)
        dx = da.from_array(x, chunks=(500, 10))
        value, grad = lb.mse.value_and_grad(dx, dx * 0.5, backend="numba")
        results = client.compute([value, grad], sync=True)
        assert client.run(lambda: os.environ["NUMBA_CACHE_DIR"]) and len(client.run(os.getpid)) == 2
    expected = lb.mse.value_and_grad(x, x * 0.5, backend="numba")
    np.testing.assert_array_equal(results[1], expected[1])
    np.testing.assert_allclose(results[0], expected[0], rtol=2e-6)
    assert any(tmp_path.rglob("*.nbi"))  # the workers wrote the cache


def test_calls_computed_together_keep_apart():
    """Every call's tasks have names of their own (a hash of the call), so graphs computed
    together never mix their blocks."""
    rng = np.random.default_rng(11)
    y, p = rng.normal(size=(50, 4)), rng.normal(size=(50, 4))
    dy, dp = da.from_array(y, chunks=(20, 4)), da.from_array(p, chunks=(20, 4))
    lazy = [lb.mse.value_and_grad(dy, dp), lb.mse.value_and_grad(dy, dp, reduction="sum"),
            lb.hinge.value_and_grad(dy, dp), lb.mse.value_and_grad(dy, dp, reduction="none")]
    computed = dask.compute(*lazy)
    eager = [lb.mse.value_and_grad(y, p), lb.mse.value_and_grad(y, p, reduction="sum"),
             lb.hinge.value_and_grad(y, p), lb.mse.value_and_grad(y, p, reduction="none")]
    for (value, grad), (expected_value, expected_grad) in zip(computed, eager, strict=True):
        np.testing.assert_array_equal(grad, expected_grad)
        np.testing.assert_allclose(value, expected_value, rtol=1e-13)


@pytest.mark.parametrize("loss", ["mse", "binary_cross_entropy_with_logits", "cross_entropy"])
def test_cupy_chunks_stay_on_the_gpu(backend, loss):
    """CuPy-backed Dask arrays: CuPy meta, CuPy blocks, computed by the cupy backend, equal
    to the in-memory CuPy call (run by ci/gpu)."""
    if backend != "cupy":
        pytest.skip("CuPy chunks: the cupy backend only")
    import cupy as cp

    rng = np.random.default_rng(2)
    if loss == "cross_entropy":
        p = cp.asarray(rng.normal(size=(1000, 37)).astype(np.float32))
        y = cp.asarray(rng.integers(0, 37, 1000))
        y[::5] = -100
        dy, dp = da.from_array(y, chunks=300, asarray=False), da.from_array(p, chunks=(300, 37), asarray=False)
    else:
        y = cp.asarray(rng.random((1000, 37)).astype(np.float32))
        p = cp.asarray(rng.normal(size=(1000, 37)).astype(np.float32))
        dy, dp = (da.from_array(a, chunks=(300, 20), asarray=False) for a in (y, p))
    function = getattr(lb, loss)
    for reduction in ("mean", "sum", "none"):
        value, grad = function.value_and_grad(dy, dp, reduction=reduction)
        assert isinstance(grad._meta, cp.ndarray) and isinstance(value._meta, cp.ndarray)
        value, grad = dask.compute(value, grad)
        assert isinstance(grad, cp.ndarray)
        expected_value, expected_grad = function.value_and_grad(y, p, reduction=reduction)
        cp.testing.assert_array_equal(grad, expected_grad)
        cp.testing.assert_allclose(value, expected_value, rtol=2e-6)


def test_review_fixes_pos_weight_lists_foreign_chunks_unknown_sizes():
    dx = da.ones((6, 4), chunks=2)
    expected = lb.binary_cross_entropy_with_logits(np.ones((6, 4)), np.ones((6, 4)),
                                                   pos_weight=[1.0, 2.0, 3.0, 4.0])
    value = lb.binary_cross_entropy_with_logits(dx, dx, pos_weight=[1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(value.compute(), expected, rtol=1e-13)
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="Dask arrays of NumPy or CuPy chunks"):
        lb.mse(da.zeros(3), torch.ones(3))
    p = da.arange(8.0, chunks=4)
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        lb.mse(p[p > 2], p[p > 2])
    # a weight of unknown chunk sizes: the same fix (it said the shape (nan,) does not
    # broadcast)
    with pytest.raises(ValueError, match=r"weight has chunks of unknown size.*"
                                         r"weight.compute_chunk_sizes\(\)"):
        lb.mse(p, p, weight=p[p > -1])


def test_bool_class_labels_weigh_by_class_not_as_a_mask():
    """Bool class labels (0 and 1) with class weights: the "mean"'s summed weights index
    class_weight by the labels (a bool array indexed it as a mask: an IndexError, or with
    two classes a wrong mean), as in memory."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 2))
    t = np.array([True, False, True, True, False, False])
    weights = np.array([1.0, 5.0])
    expected = lb.cross_entropy(t, x, class_weight=weights, backend="numpy")
    got = lb.cross_entropy(da.from_array(t, chunks=2), da.from_array(x, chunks=(2, 2)),
                           class_weight=weights, backend="numpy").compute()
    assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_float16_blocks_give_the_in_memory_bits(backend):
    """float16 computes in float32 (the contract): each block's share of the value too, so
    that the blocks' float64 sum rounds to float16 once, as in memory (a block's share in
    float16 came 1 ulp off: 1.5635 for 1.5625); gradients and Hessians the same bits."""
    if backend == "numba":
        pytest.importorskip("numba", reason="Numba is not installed")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 4)).astype(np.float16), rng.normal(size=(12, 4)).astype(np.float16)
    labels = rng.integers(0, 4, 12)
    for chunks in (5, 3):
        dx, dy = da.from_array(x, chunks=(chunks, 4)), da.from_array(y, chunks=(chunks, 4))
        for loss, target, dtarget in ((lb.mse, y, dy), (lb.huber, y, dy),
                                      (lb.cross_entropy, labels, da.from_array(labels, chunks))):
            for reduction in ("mean", "sum"):
                value, grad = (r.compute() for r in loss.value_and_grad(
                    dtarget, dx, reduction=reduction, backend=backend))
                want_value, want_grad = loss.value_and_grad(target, x, reduction=reduction,
                                                            backend=backend)
                assert value.dtype == grad.dtype == np.float16
                assert value == want_value, (loss, chunks, reduction)
                np.testing.assert_array_equal(grad, want_grad)
        hess = lb.mse.grad_and_hess(dy, dx, backend=backend)[1].compute()
        np.testing.assert_array_equal(hess, lb.mse.grad_and_hess(y, x, backend=backend)[1])


def test_a_dask_option_of_an_in_memory_call_is_refused_by_name():
    """In-memory y_true and y_pred with a Dask weight: a TypeError that names the option
    and both ways on (it was computed at once, silently, where the user may have wanted a
    lazy result); Dask y_true and y_pred take it, lazily."""
    y, p = np.ones(4), np.zeros(4)
    with pytest.raises(TypeError, match=r"weight is a Dask array but y_true and y_pred are "
                                        r"not: .*weight.compute\(\)"):
        lb.mse(y, p, weight=da.ones(4))
    lazy = lb.mse(da.from_array(y), da.from_array(p), weight=da.ones(4))
    assert hasattr(lazy, "compute") and lazy.compute() == 1.0
    # class_weight is never a Dask array: the message offers .compute() alone
    with pytest.raises(TypeError, match=r"class_weight is a Dask array but y_true and y_pred "
                                        r"are not: pass class_weight.compute\(\) for"):
        lb.cross_entropy(np.zeros(2, np.int64), np.zeros((2, 3)), class_weight=da.ones(3))


def test_an_in_memory_y_pred_beside_dask_labels_keeps_its_class_axis_whole():
    """Logits in memory, labels a Dask array: the logits are cut with the class axis
    whole (Dask's own chunks cut it at this size, and the error then asked to rechunk an
    in-memory array; a review's finding); an elementwise y_pred is cut as y_true is."""
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((64, 5000))
    labels = rng.integers(0, 5000, 64)
    with dask.config.set({"array.chunk-size": "1MiB"}):
        assert len(da.asarray(logits).chunks[1]) > 1  # (what the call would have taken)
        for loss in (lb.cross_entropy, lb.multiclass_hinge):
            value, grad = loss.value_and_grad(da.from_array(labels, chunks=16), logits)
            assert grad.chunks[1] == (5000,) and len(grad.chunks[0]) > 1
            want_value, want_grad = loss.value_and_grad(labels, logits)
            np.testing.assert_allclose(value.compute(), want_value, rtol=1e-14)
            np.testing.assert_array_equal(grad.compute(), want_grad)
        soft = np.full((64, 5000), 1 / 5000)
        np.testing.assert_allclose(
            lb.cross_entropy(da.from_array(soft, chunks=(16, 1000)), logits).compute(),
            lb.cross_entropy(soft, logits), rtol=1e-14)
        moved = np.moveaxis(logits.reshape(4, 16, 5000), 2, 1)  # (4, 5000, 16), axis=1
        np.testing.assert_allclose(
            lb.cross_entropy(da.from_array(labels.reshape(4, 16), chunks=2), moved,
                             axis=1).compute(),
            lb.cross_entropy(labels.reshape(4, 16), moved, axis=1), rtol=1e-14)
    y = da.from_array(np.zeros(100), chunks=30)
    assert lb.mse.grad(y, np.ones(100)).chunks == y.chunks
