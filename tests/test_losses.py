"""Every loss, option and reduction on every backend against the float64 reference."""

from __future__ import annotations

import platform

import numpy as np
import pytest
from conftest import examples, host, on, starting_a_line
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import cross_entropy as ce_reference
from reference import elementwise as ew_reference

import lossbackends as lb
from lossbackends._prepare import as_values

ELEMENTWISE = ("mse", "binary_cross_entropy", "binary_cross_entropy_with_logits", "hinge")
REDUCTIONS = ("mean", "sum", "none")
TOLERANCE = {np.float64: 1e-10, np.float32: 2e-5, np.float16: 2e-2}


def _inputs(loss, rng, shape, dtype):
    if loss == "binary_cross_entropy":
        # labels of 0 and 1 mostly, probabilities for a third of the draws
        y = rng.random(shape) if rng.random() < 1 / 3 else rng.random(shape) < 0.5
        p = rng.uniform(0.001, 0.999, shape)
    elif loss == "binary_cross_entropy_with_logits":
        y = rng.random(shape)
        p = rng.normal(0, 4, shape)
    elif loss == "hinge":
        y = np.where(rng.random(shape) < 0.5, -1.0, 1.0)
        p = rng.normal(0, 2, shape)
    else:
        y = rng.normal(0, 1, shape)
        p = rng.normal(0, 1, shape)
    return y.astype(dtype), p.astype(dtype)


def _close(actual, expected, dtype, scale=None):
    actual = host(actual).astype(np.float64)
    expected = np.asarray(expected, np.float64)
    tol = TOLERANCE[dtype]
    # absolute part relative to the size of the values involved (sums of many terms)
    atol = tol * (scale if scale is not None else max(1.0, float(np.max(np.abs(expected), initial=0))))
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=atol)


shapes = st.one_of(
    st.integers(1, 2000).map(lambda n: (n,)),
    st.tuples(st.integers(1, 40), st.integers(1, 70)),
)


@pytest.mark.parametrize("loss", ELEMENTWISE)
@given(shape=shapes, seed=st.integers(0, 2**32 - 1), reduction=st.sampled_from(REDUCTIONS),
       dtype=st.sampled_from([np.float32, np.float64]), weighted=st.booleans(),
       option=st.booleans())
@settings(max_examples=examples(150), deadline=None)
def test_elementwise_matches_reference(backend, loss, shape, seed, reduction, dtype, weighted,
                                       option):
    rng = np.random.default_rng(seed)
    y, p = _inputs(loss, rng, shape, dtype)
    weight = rng.uniform(0, 2, shape[-1:]).astype(dtype) if weighted else None
    options, ref_options = {}, {}
    if option and loss == "binary_cross_entropy":
        options = ref_options = {"eps": 1e-3}
    if option and loss == "binary_cross_entropy_with_logits":
        pw = rng.uniform(0.5, 3, shape[-1:]).astype(dtype)
        options, ref_options = {"pos_weight": on(backend, pw)}, {"pos_weight": pw}
    if option and loss == "hinge":
        options = ref_options = {"margin": 0.5}
    if loss == "binary_cross_entropy":
        ref_options = {**ref_options, "dtype_eps": float(np.finfo(dtype).eps)}
    function = getattr(lb, loss)
    value, grad = function.value_and_grad(on(backend, y), on(backend, p), reduction=reduction,
                                          weight=on(backend, weight), backend=backend, **options)
    expected_value, expected_grad = ew_reference(loss, y.astype(np.float64), p.astype(np.float64),
                                                 reduction=reduction, weight=weight, **ref_options)
    assert host(value).dtype == dtype and host(grad).dtype == dtype
    assert grad.shape == p.shape
    if reduction == "none":
        assert value.shape == p.shape
    _close(value, expected_value, dtype,
           scale=None if reduction == "none" else float(np.abs(expected_value)) + 1.0)
    # the gradients are differences (p - y, sigma - y, ...) that can cancel, so their errors
    # are relative to the size of the terms: w / n per element (mean) or w, as the value's
    # tolerance is relative to |value| + 1
    unit = (float(np.max(weight)) if weighted else 1.0) / (p.size if reduction == "mean" else 1)
    grad_scale = max(float(np.max(np.abs(expected_grad))), unit) if expected_grad.size else 1.0
    _close(grad, expected_grad, dtype, scale=grad_scale)
    # value alone and grad alone agree with the fused call
    _close(function(on(backend, y), on(backend, p), reduction=reduction, backend=backend,
                    weight=on(backend, weight), **options), host(value), dtype,
           scale=None if reduction == "none" else float(np.abs(expected_value)) + 1.0)
    _close(function.grad(on(backend, y), on(backend, p), reduction=reduction, backend=backend,
                         weight=on(backend, weight), **options), host(grad), dtype,
           scale=grad_scale)


# Under this many logits Numba runs one chunk: the random problems stay there, where each
# combination of options costs no compilation of its own, and the parallel kernel's chunks
# are checked on fixed problems below (``test_cross_entropy_in_parallel_chunks``).
SERIAL_LOGITS = 16_384  # twice _numba_common.CE_CHUNK_ELEMENTS


@st.composite
def ce_problems(draw):
    classes = draw(st.sampled_from([1, 2, 3, 10, 31, 33, 100, 257, 1000, 1500, 5000]))
    rows = draw(st.integers(1, min(64, (SERIAL_LOGITS - 1) // classes)))
    soft = draw(st.booleans())
    return rows, classes, soft


@given(problem=ce_problems(), seed=st.integers(0, 2**32 - 1), reduction=st.sampled_from(REDUCTIONS),
       dtype=st.sampled_from([np.float32, np.float64]), weighted=st.booleans(),
       smoothing=st.sampled_from([0.0, 0.1]), ignore=st.booleans())
@settings(max_examples=examples(150), deadline=None)
def test_cross_entropy_matches_reference(backend, problem, seed, reduction, dtype, weighted,
                                         smoothing, ignore):
    rows, classes, soft = problem
    rng = np.random.default_rng(seed)
    x = (rng.normal(0, 3, (rows, classes))).astype(dtype)
    if soft:
        t = rng.random((rows, classes))
        t = (t / t.sum(1, keepdims=True)).astype(dtype)
    else:
        t = rng.integers(0, classes, rows)
        if ignore:
            t[rng.random(rows) < 0.3] = -100
            if (t == -100).all():
                t[0] = 0
    cw = rng.uniform(0.2, 2, classes).astype(dtype) if weighted else None
    value, grad = lb.cross_entropy.value_and_grad(
        on(backend, t), on(backend, x), reduction=reduction, class_weight=on(backend, cw),
        label_smoothing=smoothing, backend=backend)
    expected_value, expected_grad = ce_reference(t, x, reduction=reduction, class_weight=cw,
                                                 label_smoothing=smoothing)
    assert grad.shape == x.shape and host(grad).dtype == dtype
    _close(value, expected_value, dtype,
           scale=None if reduction == "none" else float(np.abs(expected_value)) + 1.0)
    unit = 1.0 / rows if reduction == "mean" else 1.0  # the size of one softmax term
    _close(grad, expected_grad, dtype, scale=float(np.max(np.abs(expected_grad))) + unit)


@pytest.mark.parametrize("dtype,reduction", [(np.float32, "mean"), (np.float32, "none"),
                                             (np.float64, "sum")])
def test_cross_entropy_in_parallel_chunks(backend, dtype, reduction):
    """Problems of several chunks (rows split across threads, partial sums added in a fixed
    order), with each option that reaches the kernel: hard labels with ignored rows, class
    weights and smoothing, then soft labels."""
    rng = np.random.default_rng(11)
    rows, classes = 37, 1500  # 55 500 logits: six chunks, the last one short
    assert rows * classes >= 3 * SERIAL_LOGITS
    x = rng.normal(0, 3, (rows, classes)).astype(dtype)
    hard = rng.integers(0, classes, rows)
    hard[::4] = -100
    soft = rng.random((rows, classes))
    soft = (soft / soft.sum(1, keepdims=True)).astype(dtype)
    cw = rng.uniform(0.2, 2, classes).astype(dtype)
    for t, options in ((hard, {"class_weight": cw, "label_smoothing": 0.1}), (soft, {})):
        value, grad = lb.cross_entropy.value_and_grad(
            on(backend, t), on(backend, x), reduction=reduction, backend=backend,
            **{k: on(backend, v) if isinstance(v, np.ndarray) else v for k, v in options.items()})
        expected_value, expected_grad = ce_reference(t, x, reduction=reduction, **options)
        _close(value, expected_value, dtype,
               scale=None if reduction == "none" else float(np.abs(expected_value)) + 1.0)
        unit = 1.0 / rows if reduction == "mean" else 1.0
        _close(grad, expected_grad, dtype, scale=float(np.max(np.abs(expected_grad))) + unit)


@pytest.mark.parametrize("loss", ["cross_entropy", "multiclass_hinge"])
def test_row_sums_keep_float64_accuracy_over_many_rows(backend, loss):
    """The contract's sums: at least as accurate as float64 pairwise summation. 400 000
    rows of one loss each (log 2, or 1.3 for the hinge), class weights of 0.1 and 1 for
    the weighted mean's denominator: within a few ulp of the exact mean, where a running
    sum over the rows of a chunk lost 1e-13 relative (the Numba kernels, before)."""
    rows = 400_000
    x = on(backend, np.zeros((rows, 2)))
    t = on(backend, np.zeros(rows, np.int64))
    if loss == "multiclass_hinge":
        x = on(backend, np.tile([0.0, 0.3], (rows, 1)))
        exact = {"mean": 1.3, "sum": 1.3 * rows}
        options = [{}]
    else:
        exact = {"mean": np.log(2.0), "sum": np.log(2.0) * rows}
        options = [{}, {"class_weight": on(backend, np.array([0.1, 1.0]))}]
    for option in options:
        for reduction, expected in exact.items():
            if option and reduction == "sum":
                expected = 0.1 * expected
            value = float(getattr(lb, loss)(t, x, reduction=reduction, backend=backend,
                                            **option))
            assert value == pytest.approx(expected, rel=2e-15, abs=0), (option, reduction)


@pytest.mark.parametrize("shape,axis", [((4, 7, 5), 1), ((3, 6), 0), ((2, 3, 4), -1)])
def test_cross_entropy_axis(backend, shape, axis):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape)
    labels_shape = shape[:axis % len(shape)] + shape[axis % len(shape) + 1:]
    t = rng.integers(0, shape[axis], labels_shape)
    for reduction in REDUCTIONS:
        value, grad = lb.cross_entropy.value_and_grad(on(backend, t), on(backend, x), axis=axis,
                                                      reduction=reduction, backend=backend)
        expected_value, expected_grad = ce_reference(t, x, axis=axis, reduction=reduction)
        np.testing.assert_allclose(host(value), expected_value, rtol=1e-10)
        np.testing.assert_allclose(host(grad), expected_grad, rtol=1e-10, atol=1e-14)
        # C-contiguous whatever the axis, as np.empty_like(x): it may be the next out=
        assert grad.flags.c_contiguous
        assert lb.cross_entropy.grad(on(backend, t), on(backend, x), axis=axis,
                                     reduction=reduction, out=grad, backend=backend) is grad
    out = on(backend, np.empty(shape))
    grad = lb.cross_entropy.grad(on(backend, t), on(backend, x), axis=axis, out=out, backend=backend)
    assert grad is out
    expected_grad = ce_reference(t, x, axis=axis)[1]
    np.testing.assert_allclose(host(out), expected_grad, rtol=1e-10, atol=1e-14)


def test_cross_entropy_integer_labels_equal_one_hot(backend):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 40)).astype(np.float32)
    t = rng.integers(0, 40, 50)
    one_hot = np.eye(40, dtype=np.float32)[t]
    for smoothing in (0.0, 0.2):
        a = lb.cross_entropy.value_and_grad(on(backend, t), on(backend, x), backend=backend,
                                            label_smoothing=smoothing)
        b = lb.cross_entropy.value_and_grad(on(backend, one_hot), on(backend, x), backend=backend,
                                            label_smoothing=smoothing)
        np.testing.assert_allclose(host(a[0]), host(b[0]), rtol=1e-5)
        np.testing.assert_allclose(host(a[1]), host(b[1]), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("classes", [3, 100, 2000])
def test_cross_entropy_extreme_and_masked_logits(backend, classes):
    x = np.zeros((4, classes))
    x[0, 0], x[0, 1:] = 1e4, -1e4
    x[1, 1:] = -np.inf  # masked columns
    x[2, :] = -1e30
    x[3, 0] = -np.inf
    t = np.array([0, 0, 1, 1])
    value, grad = lb.cross_entropy.value_and_grad(on(backend, t), on(backend, x), reduction="none",
                                                  backend=backend)
    expected_value, expected_grad = ce_reference(t, x, reduction="none")
    np.testing.assert_allclose(host(value), expected_value, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(host(grad), expected_grad, rtol=1e-10, atol=1e-12)
    # soft targets with zero probability on the -inf columns stay finite (0 * -inf = 0)
    probs = np.zeros((4, classes))
    probs[:, 0] = 1.0
    value = lb.cross_entropy(on(backend, probs[:2]), on(backend, x[:2]), reduction="none",
                             backend=backend)
    assert np.isfinite(host(value)).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("classes", [3, 100, 2000])
def test_cross_entropy_nan_logits_make_their_row_nan_and_inf_logits_take_their_limit(
        backend, dtype, classes):
    """A NaN logit makes its row's loss and whole gradient row NaN, wherever it sits in the
    vectorised max; a +inf logit takes the limit: the softmax is one-hot there, so the loss
    is inf for another label (0 for its own) and the gradient finite. Other rows keep
    their values."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(6, classes)).astype(dtype)
    x[0, 0] = np.nan
    x[1, classes - 1] = np.nan
    x[2, classes // 2] = np.inf
    x[3, 0] = np.inf
    t = np.arange(6) % classes
    t[3] = 0  # row 3's label is its +inf logit: loss 0, gradient 0
    value, grad = lb.cross_entropy.value_and_grad(on(backend, t), on(backend, x), reduction="none",
                                                  backend=backend)
    value, grad = host(value), host(grad)
    np.testing.assert_array_equal(np.isnan(value), [True, True, False, False, False, False])
    assert np.isnan(grad[:2]).all() and np.isfinite(grad[2:]).all()
    assert value[2] == np.inf and value[3] == 0
    expected_grad = np.zeros(classes)
    expected_grad[classes // 2] += 1.0
    expected_grad[2 % classes] -= 1.0
    np.testing.assert_array_equal(grad[2], expected_grad)
    np.testing.assert_array_equal(grad[3], np.zeros(classes))
    expected_value, expected_grad = ce_reference(t[4:], x[4:].astype(np.float64), reduction="none")
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(value[4:], expected_value, rtol=tolerance)
    np.testing.assert_allclose(grad[4:], expected_grad, rtol=tolerance, atol=tolerance * 1e-2)


def test_cross_entropy_ignored_rows(backend):
    x = np.random.default_rng(2).normal(size=(6, 5))
    x[1, 2] = np.nan  # an ignored row's logits never reach the result
    t = np.array([1, -100, 4, -100, 0, 2])
    for smoothing in (0.0, 0.3):
        value, grad = lb.cross_entropy.value_and_grad(on(backend, t), on(backend, x),
                                                      label_smoothing=smoothing, backend=backend)
        assert np.all(host(grad)[[1, 3]] == 0)
        expected = ce_reference(t[[0, 2, 4, 5]], x[[0, 2, 4, 5]], label_smoothing=smoothing)[0]
        np.testing.assert_allclose(host(value), expected, rtol=1e-10)
        none = host(lb.cross_entropy(on(backend, t), on(backend, x), reduction="none",
                                     label_smoothing=smoothing, backend=backend))
        assert none[1] == 0 and none[3] == 0
    # ignore_index chosen by the caller
    t2 = np.array([1, 7, 4, 7, 0, 2])
    value = lb.cross_entropy(on(backend, t2), on(backend, np.nan_to_num(x)), ignore_index=7,
                             backend=backend)
    np.testing.assert_allclose(host(value), ce_reference(t2, np.nan_to_num(x), ignore_index=7)[0],
                               rtol=1e-10)


def test_cross_entropy_ignore_index_with_probabilities_is_refused(backend):
    """PyTorch's rule: probabilities have no label to ignore, so a class ignore_index (>= 0)
    is a mistake (it was silently unused); a negative one, the default, changes nothing."""
    x = on(backend, np.random.default_rng(0).normal(size=(4, 3)))
    q = on(backend, np.full((4, 3), 1 / 3))
    with pytest.raises(ValueError, match="ignore_index=0 applies to class indices"):
        lb.cross_entropy(q, x, ignore_index=0, backend=backend)
    assert float(lb.cross_entropy(q, x, ignore_index=-5, backend=backend)) == float(
        lb.cross_entropy(q, x, backend=backend))


@pytest.mark.parametrize("bad,shown", [(np.inf, "inf"), (-1.0, "-1.0"), (np.nan, "nan"),
                                       (1e300, "beyond the largest float32")])
def test_cross_entropy_class_weight_finite_and_not_negative(bad, shown):
    """As pos_weight: an infinite class weight made every loss and gradient NaN (the mean's
    denominator inf), silently; a negative one is no weight. Host arrays (a GPU's would
    have to be waited for)."""
    x = np.random.default_rng(2).normal(size=(4, 3)).astype(np.float32)
    for backend in lb.available_backends():
        if backend == "cupy":
            continue
        with pytest.raises(ValueError, match=f"class_weight.*{shown}"):
            lb.cross_entropy([0, 1, 2, 0], x, class_weight=[1.0, bad, 1.0], backend=backend)


def test_cross_entropy_all_rows_ignored_is_nan(backend):
    x = np.ones((3, 4))
    value, grad = lb.cross_entropy.value_and_grad(on(backend, np.full(3, -100)), on(backend, x),
                                                  backend=backend)
    assert np.isnan(host(value))
    assert np.all(host(grad) == 0)
    assert host(lb.cross_entropy(on(backend, np.full(3, -100)), on(backend, x), reduction="sum",
                                 backend=backend)) == 0


@pytest.mark.parametrize("label", [5, -1, 1000])
def test_cross_entropy_label_out_of_range(backend, label):
    x = np.zeros((3, 5), np.float32)
    t = np.array([0, label, 1])
    with pytest.raises(ValueError, match=rf"y_true\[1\] = {label} is not a class index in \[0, 5\)"):
        lb.cross_entropy(on(backend, t), on(backend, x), backend=backend)
    # the same call with valid labels still works afterwards (no sticky error state)
    assert np.isfinite(host(lb.cross_entropy(on(backend, np.array([0, 1, 2])), on(backend, x),
                                             backend=backend)))


def test_float16_is_computed_in_float32(backend):
    rng = np.random.default_rng(3)
    y, p = rng.normal(size=(2, 1000)), rng.normal(size=(2, 1000))
    value, grad = lb.mse.value_and_grad(on(backend, y.astype(np.float16)),
                                        on(backend, p.astype(np.float16)), backend=backend)
    assert host(value).dtype == np.float16 and host(grad).dtype == np.float16
    expected = ew_reference("mse", y.astype(np.float16), p.astype(np.float16))
    np.testing.assert_allclose(float(host(value)), expected[0], rtol=1e-3)
    x = rng.normal(size=(8, 300)).astype(np.float16)
    t = rng.integers(0, 300, 8)
    value, grad = lb.cross_entropy.value_and_grad(on(backend, t), on(backend, x), backend=backend)
    ev, eg = ce_reference(t, x.astype(np.float64))
    np.testing.assert_allclose(float(host(value)), ev, rtol=1e-3)
    np.testing.assert_allclose(host(grad).astype(np.float64), eg, rtol=1e-2, atol=1e-5)


@pytest.mark.parametrize("loss", ELEMENTWISE)
def test_out_is_y_pred_in_place(backend, loss):
    rng = np.random.default_rng(4)
    y, p = _inputs(loss, rng, (3, 333), np.float64)
    expected_value, expected_grad = getattr(lb, loss).value_and_grad(y, p, backend="numpy")
    p_dev = on(backend, p.copy())
    value, grad = getattr(lb, loss).value_and_grad(on(backend, y), p_dev, out=p_dev,
                                                   backend=backend)
    assert grad is p_dev
    np.testing.assert_allclose(host(p_dev), expected_grad, rtol=1e-12)
    np.testing.assert_allclose(host(value), expected_value, rtol=1e-12)


def test_cross_entropy_out_is_logits_in_place(backend):
    rng = np.random.default_rng(5)
    for classes in (10, 700, 5000):
        x = rng.normal(size=(9, classes))
        t = rng.integers(0, classes, 9)
        expected_value, expected_grad = ce_reference(t, x, label_smoothing=0.1)
        x_dev = on(backend, x.copy())
        value, grad = lb.cross_entropy.value_and_grad(on(backend, t), x_dev, out=x_dev,
                                                      label_smoothing=0.1, backend=backend)
        assert grad is x_dev
        np.testing.assert_allclose(host(x_dev), expected_grad, rtol=1e-10, atol=1e-15)
        np.testing.assert_allclose(host(value), expected_value, rtol=1e-10)


def test_noncontiguous_and_readonly_inputs(backend):
    rng = np.random.default_rng(6)
    y = rng.normal(size=(40, 30))
    p = rng.normal(size=(40, 30))
    expected = ew_reference("mse", y[::2, ::3], p[::2, ::3])
    y_view, p_view = on(backend, y)[::2, ::3], on(backend, p)[::2, ::3]
    if backend != "cupy":
        y_view.flags.writeable = False
        p_view.flags.writeable = False
    value, grad = lb.mse.value_and_grad(y_view, p_view, backend=backend)
    np.testing.assert_allclose(host(value), expected[0], rtol=1e-12)
    np.testing.assert_allclose(host(grad), expected[1], rtol=1e-12)
    # strided weights and pos_weight too (the Numba kernels' code takes C-contiguous
    # arrays only: the preparation must hand it copies)
    w = rng.random(30)[::3]
    labels = (y[::2, ::3] > 0).astype(float)
    for loss, options in ((lb.mse, {"weight": w}),
                          (lb.binary_cross_entropy_with_logits, {"weight": w, "pos_weight": w})):
        expected = loss.value_and_grad(labels, p[::2, ::3].copy(), backend="numpy",
                                       **{k: v.copy() for k, v in options.items()})
        got = loss.value_and_grad(on(backend, labels), p_view, backend=backend,
                                  **{k: on(backend, v) for k, v in options.items()})
        np.testing.assert_allclose(host(got[0]), expected[0], rtol=1e-12)
        np.testing.assert_allclose(host(got[1]), expected[1], rtol=1e-12)
    x = rng.normal(size=(20, 64))
    t = rng.integers(0, 32, 20)
    value = lb.cross_entropy(on(backend, t), on(backend, x)[:, ::2], backend=backend)
    np.testing.assert_allclose(host(value), ce_reference(t, x[:, ::2])[0], rtol=1e-12)


def test_column_major_targets_and_weights_of_another_dtype(backend):
    """A column-major (transposed) y_true or weight of another dtype than y_pred's: the
    cast to y_pred's dtype is C-ordered, as the kernels index it (NumPy's and CuPy's
    astype keep a column-major layout, which a GPU kernel would read in the wrong order)."""
    rng = np.random.default_rng(8)
    p = rng.normal(size=(5, 7)).astype(np.float32)
    y = np.asfortranarray(rng.normal(size=(5, 7)))  # float64, column-major
    w = np.asfortranarray(rng.random((5, 7)).astype(np.float16))
    labels = np.asfortranarray((y > 0).astype(np.int32))
    for a in (y, w, labels):  # what the kernels get (the host's would copy it anyway)
        assert as_values(np, a, np.dtype(np.float32), "y_true").flags.c_contiguous
    for loss, y_true, options in ((lb.mse, y, {"weight": w}),
                                  (lb.binary_cross_entropy_with_logits, labels, {"weight": w})):
        expected = loss.value_and_grad(np.ascontiguousarray(y_true, np.float32), p,
                                       backend="numpy", weight=np.ascontiguousarray(w, np.float32))
        got = loss.value_and_grad(on(backend, y_true), on(backend, p), backend=backend,
                                  **{k: on(backend, v) for k, v in options.items()})
        np.testing.assert_allclose(host(got[0]), expected[0], rtol=1e-6)
        np.testing.assert_allclose(host(got[1]), expected[1], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_binary_cross_entropy_keeps_a_small_probability_s_digits(backend, dtype):
    """(1 - y) log(1 - p) for a small p: log1p(-p), to a few ulps of float64's, where
    log(1 - p) kept only the digits of p that 1 - p had rounded to (float32: 1.3 % off at
    p = 1e-6, 0.13 % at 1.1e-5; PyTorch's is exact). Labels 0 (the Numba kernel's form for
    0/1 labels), 0.25 (the general form), 1 (no such term); p from just above the clip
    up to 0.75, where 1 - p is exact."""
    eps = np.finfo(dtype).eps
    tiny = [1.5 * eps, 1e-6, 1.1339166e-05, 3e-4, 0.01, 0.3, 0.49, 0.5, 0.75]
    if dtype == np.float64:
        tiny = [1e-15, 1e-13, 3e-10, *tiny[1:]]
    p = np.tile(np.array(tiny, dtype), 3)
    y = np.repeat(np.array([0.0, 0.25, 1.0], dtype), len(tiny))
    pc = np.maximum(p.astype(np.float64), max(1e-15, eps))
    exact = -(y * np.log(pc) + (1.0 - y) * np.log1p(-pc))
    for labels in (y, y[: len(tiny)]):  # the mixed block, and 0s alone
        got = host(lb.binary_cross_entropy(on(backend, labels), on(backend, p[: labels.size]),
                                           reduction="none", backend=backend))
        np.testing.assert_allclose(got, exact[: labels.size], rtol=4 * eps, atol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("loss", ["binary_cross_entropy", "sigmoid_focal"])
def test_labels_of_0_and_1_and_between(backend, loss, dtype):
    """Labels of 0 and 1 may take a cheaper form (Numba: binary cross-entropy's one log,
    sigmoid_focal's function of -x or x): a block of labels with one probability among
    them must be exact too, and the losses of 0/1 labels must not depend on the form that
    computed them (their gradients within rounding: sigmoid_focal's general form divides
    by 1 - p_t)."""
    block = 2048  # the Numba kernels' BLOCK, a multiple of their OPTIMISTIC_BLOCK
    rng = np.random.default_rng(13)
    y_block = (rng.random(block) < 0.5).astype(dtype)
    if loss == "binary_cross_entropy":
        p_block = rng.uniform(0.001, 0.999, block).astype(dtype)
        options = {"dtype_eps": float(np.finfo(dtype).eps)}
    else:  # logits, both signs, some far out
        p_block = (rng.standard_normal(block) * 6).astype(dtype)
        options = {}
    y, p = np.tile(y_block, 3), np.tile(p_block, 3)
    y[block + 7] = 0.25  # the second block has one label that is not 0 or 1
    function = getattr(lb, loss)

    def losses_and_grad(y):
        return (host(function(on(backend, y), on(backend, p), reduction="none",
                              backend=backend)),
                host(function.grad(on(backend, y), on(backend, p), reduction="sum",
                                   backend=backend)))

    def same_grad(a, b):
        np.testing.assert_allclose(a, b, rtol=4 * np.finfo(dtype).eps, atol=0)

    losses, grad = losses_and_grad(y)
    np.testing.assert_array_equal(losses[:block], losses[2 * block:])
    np.testing.assert_array_equal(np.delete(losses[block:2 * block], 7), np.delete(losses[:block], 7))
    same_grad(np.delete(grad[block:2 * block], 7), np.delete(grad[:block], 7))
    same_grad(grad[:block], grad[2 * block:])
    y_first = y.copy()
    y_first[3] = 0.75  # now the first block is not all 0 and 1 (Numba checks it up front)
    losses_first, grad_first = losses_and_grad(y_first)
    np.testing.assert_array_equal(np.delete(losses_first, 3), np.delete(losses, 3))
    same_grad(np.delete(grad_first, 3), np.delete(grad, 3))
    value_3, grad_3 = ew_reference(loss, y_first[3:4], p[3:4], reduction="none", **options)
    np.testing.assert_allclose(losses_first[3], value_3[0], rtol=2e-6 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(grad_first[3], grad_3[0], rtol=2e-6 if dtype == np.float32 else 1e-12)
    for n in (3 * block, 2**17 + 2 * block + 5):  # one chunk, and the parallel chunks
        yn = np.resize(y, n)
        yn[-3] = 0.5
        pn = np.resize(p, n)
        for reduction in ("mean", "sum"):
            value, grad = function.value_and_grad(
                on(backend, yn), on(backend, pn), reduction=reduction, backend=backend)
            expected_value, expected_grad = ew_reference(loss, yn, pn, reduction=reduction,
                                                         **options)
            _close(value, expected_value, dtype, scale=abs(expected_value) + 1.0)
            _close(grad, expected_grad, dtype)
            # the gradient written over y_pred: a block of other labels is run again from
            # its y_pred, not from the gradient written over it (Numba)
            inplace = on(backend, pn.copy())
            value_in_place, _ = function.value_and_grad(on(backend, yn), inplace, out=inplace,
                                                        reduction=reduction, backend=backend)
            assert host(value_in_place) == host(value)
            np.testing.assert_array_equal(host(inplace), host(grad))
            grad_hess = function.grad_and_hess(on(backend, yn), on(backend, pn),
                                               reduction=reduction, backend=backend)
            inplace = on(backend, pn.copy())
            function.grad_and_hess(on(backend, yn), inplace, reduction=reduction,
                                   backend=backend, out=(inplace, on(backend, np.empty_like(pn))))
            np.testing.assert_array_equal(host(inplace), host(grad_hess[0]))


@pytest.mark.parametrize("loss", ELEMENTWISE)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_the_fast_path_gives_what_the_general_path_gives(backend, loss, dtype):
    """Canonical arrays and no option skip the preparation (``Loss._run``); an option given
    at its default value sends the same call through it. The results match bit for bit."""
    rng = np.random.default_rng(21)
    y, p = _inputs(loss, rng, (3, 50), dtype)
    p[0, :2] = 0.0, 1.0  # binary_cross_entropy clips these with its eps
    y, p = on(backend, y), on(backend, p)
    for reduction in REDUCTIONS:
        with np.errstate(over="ignore"):  # float16 gradients at the clip bound are inf
            fast = getattr(lb, loss).value_and_grad(y, p, reduction=reduction, backend=backend)
            general = getattr(lb, loss).value_and_grad(y, p, reduction=reduction,
                                                       backend=backend, weight=None)
        for a, b in zip(fast, general, strict=True):
            np.testing.assert_array_equal(host(a), host(b))
            assert host(a).dtype == dtype


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_the_cross_entropy_fast_path_gives_what_the_general_path_gives(backend, dtype):
    """(rows, classes) logits with int64 class indices and no option skip the preparation
    too; ignore_index given at its default sends the same call through it."""
    rng = np.random.default_rng(22)
    x = on(backend, rng.normal(0, 3, (6, 40)).astype(dtype))
    t = on(backend, np.array([3, 0, -100, 39, 17, 0]))  # -100: the default ignore_index
    for reduction in REDUCTIONS:
        fast = lb.cross_entropy.value_and_grad(t, x, reduction=reduction, backend=backend)
        general = lb.cross_entropy.value_and_grad(t, x, reduction=reduction, backend=backend,
                                                  ignore_index=-100)
        out = on(backend, np.full((6, 40), np.nan, dtype))
        fast_out = lb.cross_entropy.value_and_grad(t, x, reduction=reduction, backend=backend,
                                                   out=out)
        assert fast_out[1] is out
        for a, b, c in zip(fast, general, fast_out, strict=True):
            np.testing.assert_array_equal(host(a), host(b))
            np.testing.assert_array_equal(host(c), host(b))
            assert host(a).dtype == dtype and host(a).shape == host(b).shape
    expected = ce_reference(host(t), host(x).astype(np.float64))[0]
    np.testing.assert_allclose(host(lb.cross_entropy(t, x, backend=backend)), expected,
                               rtol={np.float16: 2e-3, np.float32: 2e-6, np.float64: 1e-12}[dtype])
    bad = on(backend, np.array([0, 1, 2, 40, 0, 1]))
    with pytest.raises(ValueError, match=r"y_true\[3\] = 40 is not a class index"):
        lb.cross_entropy(bad, x, backend=backend)


class _Subclass(np.ndarray):
    """An ndarray subclass that is no masked array (those are refused: test_api)."""


def test_inputs_off_the_fast_path_give_the_same_results(backend):
    """0-d and size-1 arrays, a subclass, byte-swapped and mixed dtypes: each is converted
    by the general path and gives what its canonical array gives."""
    rng = np.random.default_rng(12)
    y, p = rng.normal(size=7), rng.normal(size=7)
    expected_value, expected_grad = ew_reference("mse", y, p)
    variants = [(on(backend, y.astype(np.float32)), on(backend, p))]  # y_true cast to float64
    if backend != "cupy":
        # an ndarray subclass, passed as it is (``on`` would make it a plain array): its data
        variants.append((y, p.view(_Subclass)))
        variants.append((y.astype(">f8"), p.astype(">f8")))  # byte-swapped: native float64
    for y_in, p_in in variants:
        value, grad = lb.mse.value_and_grad(y_in, p_in, backend=backend)
        np.testing.assert_allclose(host(value), expected_value, rtol=2e-7)
        np.testing.assert_allclose(host(grad), expected_grad, rtol=2e-7)
        assert type(host(grad)) is np.ndarray
    for shape in ((), (1,), (1, 1)):
        y1, p1 = np.full(shape, 0.5), np.full(shape, 2.0)
        value, grad = lb.mse.value_and_grad(on(backend, y1), on(backend, p1), reduction="none",
                                            backend=backend)
        assert host(value).shape == shape and host(grad).shape == shape
        np.testing.assert_array_equal(host(value), np.full(shape, 2.25))
        np.testing.assert_array_equal(host(grad), np.full(shape, 3.0))


def test_empty_inputs_follow_numpy(backend):
    empty = on(backend, np.zeros(0))
    with pytest.warns(RuntimeWarning):
        assert np.isnan(host(lb.mse(empty, empty, backend=backend)))
    assert host(lb.mse(empty, empty, reduction="sum", backend=backend)) == 0
    assert host(lb.mse(empty, empty, reduction="none", backend=backend)).shape == (0,)
    assert lb.mse.grad(empty, empty, backend=backend).shape == (0,)
    x = on(backend, np.zeros((0, 4)))
    t = on(backend, np.zeros(0, np.int64))
    assert host(lb.cross_entropy(t, x, reduction="sum", backend=backend)) == 0
    assert lb.cross_entropy.grad(t, x, backend=backend).shape == (0, 4)


def test_the_empty_mean_s_warning_names_the_caller_s_line():
    """The warning of an empty input's mean points at the user's call, through any
    layers: NumPy arrays, torch tensors (it pointed inside the library, where Python's
    default filter then showed it once per process for every call site), value_and_grad
    and cross-entropy's rows."""
    torch = pytest.importorskip("torch")
    calls = [lambda: lb.mse(np.zeros(0), np.zeros(0)),
             lambda: lb.mse(torch.zeros(0), torch.zeros(0)),
             lambda: lb.mse.value_and_grad(torch.zeros(0), torch.zeros(0)),
             lambda: lb.cross_entropy(np.zeros(0, np.int64), np.zeros((0, 3)))]
    for call in calls:
        with pytest.warns(RuntimeWarning, match="mean of an empty input") as caught:
            call()
        assert caught[0].filename == __file__, caught[0].filename


def test_integer_and_bool_inputs(backend):
    y = np.array([0, 1, 1, 0])
    value = lb.binary_cross_entropy(on(backend, y.astype(bool)), on(backend, np.array([0.1, 0.8, 0.9, 0.2])),
                                    backend=backend)
    np.testing.assert_allclose(host(value), 0.164252033486018, rtol=1e-12)
    value, grad = lb.mse.value_and_grad(on(backend, np.array([1, 2, 3])), on(backend, np.array([1, 2, 5])),
                                        backend=backend)
    assert host(value).dtype == np.float64 and host(grad).dtype == np.float64
    np.testing.assert_allclose(host(value), 4 / 3)


def test_nan_and_inf_propagate(backend):
    y = np.array([0.0, 1.0, 2.0])
    p = np.array([np.nan, 1.0, 2.0])
    assert np.isnan(host(lb.mse(on(backend, y), on(backend, p), backend=backend)))
    p = np.array([np.inf, 1.0, 2.0])
    assert host(lb.mse(on(backend, y), on(backend, p), backend=backend)) == np.inf
    # BCE with logits: the gradient stays finite at +-inf logits
    grad = lb.binary_cross_entropy_with_logits.grad(on(backend, np.array([1.0, 0.0])),
                                                    on(backend, np.array([np.inf, -np.inf])),
                                                    reduction="none", backend=backend)
    np.testing.assert_array_equal(host(grad), [0.0, 0.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_predictions_give_nan_losses(backend, dtype):
    """A NaN in y_pred is a NaN loss, as in NumPy (clipping, max(0, .) and the float32
    log must not turn it into a number), in the vectorised loops and their tails."""
    rng = np.random.default_rng(4)
    nan_at = [0, 17, 500, 998]
    y = (rng.random(999) < 0.5).astype(dtype)
    y[1::3] = 0.3  # probability labels too
    p = rng.uniform(0.05, 0.95, 999).astype(dtype)
    p[nan_at] = np.nan
    for loss in (lb.binary_cross_entropy, lb.hinge):
        labels = y if loss is lb.binary_cross_entropy else 2 * y - 1
        value, grad = loss.value_and_grad(on(backend, labels), on(backend, p), reduction="none",
                                          backend=backend)
        np.testing.assert_array_equal(np.isnan(host(value)), np.isnan(p))
        if loss is lb.binary_cross_entropy:
            np.testing.assert_array_equal(np.isnan(host(grad)), np.isnan(p))
        assert np.isnan(host(loss(on(backend, labels), on(backend, p), backend=backend)))


def test_hinge_gradient_at_the_kink_is_zero(backend):
    grad = lb.hinge.grad(on(backend, np.array([1.0, -1.0, 1.0])), on(backend, np.array([1.0, -1.0, 0.5])),
                         reduction="sum", backend=backend)
    np.testing.assert_array_equal(host(grad), [0.0, 0.0, -1.0])
    # {0, 1} labels are used as given (optax), not remapped (Keras)
    np.testing.assert_allclose(host(lb.hinge(on(backend, np.array([0.0])), on(backend, np.array([5.0])),
                                             backend=backend)), 1.0)


def test_large_float32_sum_is_accurate(backend):
    rng = np.random.default_rng(7)
    n = 3_000_000
    y = rng.normal(size=n).astype(np.float32)
    p = (y + rng.normal(size=n)).astype(np.float32)
    expected = np.mean((p.astype(np.float64) - y.astype(np.float64)) ** 2)
    value = lb.mse(on(backend, y), on(backend, p), backend=backend)
    assert abs(float(host(value)) - expected) / expected < 1e-5


@pytest.mark.parametrize("loss", ["hinge", "huber", "smooth_l1", "squared_hinge", "pinball"])
def test_numba_sums_large_inputs_in_the_loop_as_accurately(loss):
    """From ``BEYOND_L2`` elements these losses' Numba kernels add the losses in the loop that
    computes them, not from a block in L1 after it (``loss_math``'s ``sum_in_loop_from``):
    the value as accurate, the gradient and the losses of ``"none"`` the same bits as the
    other kernel's (run below that size on the first part), weighted too (huber: the
    weight's kernels are compiled for this test alone)."""
    pytest.importorskip("numba", reason="Numba is not installed")
    from lossbackends.backends import _numba_losses, numba_backend

    assert _numba_losses.MATH[loss].sum_in_loop_from == _numba_losses.BEYOND_L2
    n = _numba_losses.BEYOND_L2 + 1001
    part = numba_backend.PARALLEL_MIN_ELEMENTS + 3  # below BEYOND_L2: the L1 block's sum
    rng = np.random.default_rng(8)
    y = (rng.integers(0, 2, n) * 2 - 1 if "hinge" in loss else rng.normal(size=n))
    y = y.astype(np.float32)
    p = (rng.normal(size=n) * 2).astype(np.float32)
    w = rng.random(n).astype(np.float32)
    for weight in (None, w) if loss == "huber" else (None,):
        value, grad = getattr(lb, loss).value_and_grad(y, p, weight=weight, reduction="sum",
                                                       backend="numba")
        expected, _ = ew_reference(loss, y, p, weight=weight, reduction="sum")
        assert abs(float(value) - expected) <= 1e-6 * abs(expected)
        _, grad_of_part = getattr(lb, loss).value_and_grad(
            y[:part], p[:part], weight=None if weight is None else w[:part], reduction="sum",
            backend="numba")
        np.testing.assert_array_equal(grad[:part], grad_of_part)
    losses = getattr(lb, loss)(y, p, reduction="none", backend="numba")
    np.testing.assert_array_equal(losses[:part],
                                  getattr(lb, loss)(y[:part], p[:part], reduction="none",
                                                    backend="numba"))
    used = numba_backend.KERNELS[loss].usual_code
    assert any(key[1] and key[2] for key in used)  # the value summed in the loop
    assert any(key[1] and not key[2] for key in used)  # and from the block


@pytest.mark.parametrize("loss", ["mse", "mae"])
def test_numba_tiny_values_do_not_depend_on_where_the_gradient_is(loss):
    """A value is the same bits wherever its gradient lies: below ``SUM_IN_LOOP_MIN``
    elements it is summed from the block, not in the loop (whose vector form LLVM runs
    only with the gradient at least a loop step away from y: an ``out=`` just after
    y_true, or a default call's gradient allocated there, gave a float64 sum of 9 to 30
    elements in another order; found by a review)."""
    pytest.importorskip("numba", reason="Numba is not installed")
    from lossbackends.backends import numba_backend

    function = getattr(lb, loss).value_and_grad
    for dtype in (np.float64, np.float32):
        for n in range(1, numba_backend.SUM_IN_LOOP_MIN + 6):
            rng = np.random.default_rng(n)
            y0, p0 = rng.normal(size=n).astype(dtype), rng.normal(size=n).astype(dtype)
            value, grad = function(y0, p0, reduction="sum", out=np.empty(n, dtype),
                                   backend="numba")
            for gap in range(0, 34, 3):  # the gradient 0 to 33 elements after y_true
                memory = np.zeros(2 * n + 48, dtype)
                y, out = memory[8:8 + n], memory[8 + n + gap:8 + 2 * n + gap]
                y[:] = y0
                got = function(y, p0, reduction="sum", out=out, backend="numba")
                assert got[0] == value, (dtype, n, gap)
                np.testing.assert_array_equal(got[1], grad)


def _parts(result):
    return result if isinstance(result, tuple) else (result,)


# (the loss, its dtype, whether its value kernel streams at the two sizes of the test)
_STREAMED = [("mse", np.float32, (True, True)), ("mse", np.float64, (True, True)),
             ("huber", np.float32, (False, True)), ("pinball", np.float32, (False, False)),
             ("kl_div", np.float32, (False, False))]


@pytest.mark.parametrize("loss,dtype,value_streams", _STREAMED,
                         ids=[f"{c[0]}-{np.dtype(c[1]).name}" for c in _STREAMED])
def test_numba_streaming_stores_give_the_same_bits(loss, dtype, value_streams, monkeypatch):
    """From ``STREAM_FROM_BYTES`` (lowered here) a Numba kernel whose loop writes nothing
    but the gradient (and the Hessian) writes them by streaming stores: in its loop where
    each starts a cache line (``STREAMED``: the default call's do; an ``out=`` may), else
    through a block in L1 (``STAGED``: a NumPy ``out=``, 16 bytes past a line). The
    value, the gradient and the Hessian are the same bits either way, and as the plain
    stores give, NaN and infinities included. The gradient-only and Hessian kernels
    stream; the value's only where summed in the loop (MSE always, huber from
    ``BEYOND_L2``), not pinball's (``stream_with_value``) nor kl_div's (a block of
    losses in L1)."""
    pytest.importorskip("numba", reason="Numba is not installed")
    from lossbackends.backends import _numba_losses, numba_backend

    monkeypatch.setattr(numba_backend, "STREAM_FROM_BYTES", 1 << 12)
    function = getattr(lb, loss)
    rng = np.random.default_rng(11)
    used = numba_backend.KERNELS[loss].usual_code
    sizes = (numba_backend.PARALLEL_MIN_ELEMENTS + 1001, _numba_losses.BEYOND_L2 + 1001)
    for n, streams in zip(sizes, value_streams, strict=True):
        y = (rng.random(n) if loss == "kl_div" else rng.normal(size=n)).astype(dtype)
        p = (rng.normal(size=n) * 3).astype(dtype)
        p[[7, 1000, n - 2]] = [np.nan, np.inf, -np.inf]
        y[[40, n - 40]] = [np.nan, 0.0]
        for name in ("grad", "grad_and_hess", "value_and_grad"):
            call = getattr(function, name)
            default = call(y, p, backend="numba")

            def outs(*pasts, n=n, pair=name == "grad_and_hess"):  # (gradient, Hessian)
                arrays = tuple(starting_a_line(n, dtype, past) for past in pasts)
                return arrays if pair else arrays[0]

            expected = ({True} if streams else set()) if name == "value_and_grad" else {False}
            used.clear()
            lined = call(y, p, backend="numba", out=outs(0, 0))
            # (the value kernels or not, by how they store)
            assert {key[1] for key in used if key[-1] == numba_backend.STREAMED} == expected
            assert not any(key[-1] == numba_backend.STAGED for key in used)
            used.clear()
            offs = [call(y, p, backend="numba", out=outs(*pasts))  # either one off a line
                    for pasts in ((1, 0), (0, 1))[:2 if name == "grad_and_hess" else 1]]
            # (with a Hessian: plain stores)
            staged = {key[1] for key in used if key[-1] == numba_backend.STAGED}
            assert staged == (set() if name == "grad_and_hess" else expected)
            assert not any(key[-1] == numba_backend.STREAMED for key in used)
            with monkeypatch.context() as plain:  # and the plain stores, off a line
                plain.setattr(numba_backend, "STREAM_FROM_BYTES", 1 << 62)
                offs.append(call(y, p, backend="numba", out=outs(1, 1)))
            for result in (lined, *offs):
                for got, expected in zip(_parts(result), _parts(default), strict=True):
                    np.testing.assert_array_equal(got, expected)
    _, expected_grad = ew_reference(loss, y.astype(np.float64), p.astype(np.float64),
                                    reduction="mean")
    finite = np.isfinite(y) & np.isfinite(p)  # (the robustness tests check the others)
    np.testing.assert_allclose(default[1][finite], expected_grad[finite],
                               rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-30)


def test_numba_wide_vectors_are_asked_per_function():
    """``wide_vectors()`` sets LLVM's 512-bit preference on the function that calls it and
    on no other (never on the process: a user's own Numba code keeps LLVM's choice);
    ``wide_vectors_for(math)`` only where the loss's mathematics asks (``loss_math``:
    the piecewise losses keep 256 bits, measured slower in cache with 512)."""
    numba = pytest.importorskip("numba", reason="Numba is not installed")
    from lossbackends.backends import _numba_losses
    from lossbackends.backends._numba_common import wide_vectors, wide_vectors_for

    wide, piecewise = _numba_losses.MATH["log_cosh"], _numba_losses.MATH["huber"]

    def doubled(a, out):
        wide_vectors()
        for i in range(a.size):
            out[i] = a[i] * 2

    def doubled_for(math, a, out):
        wide_vectors_for(math)
        for i in range(a.size):
            out[i] = a[i] * 2

    def plain(a, out):
        for i in range(a.size):
            out[i] = a[i] * 2

    a = np.arange(64, dtype=np.float32)
    asked = '"prefer-vector-width"="512"'
    for function, args, expected in ((doubled, (a,), True), (plain, (a,), False),
                                     (doubled_for, (wide, a), True),
                                     (doubled_for, (piecewise, a), False)):
        compiled = numba.njit(function)
        out = np.empty_like(a)
        compiled(*args, out)
        np.testing.assert_array_equal(out, a * 2)
        (ir,) = compiled.inspect_llvm().values()
        assert (asked in ir) == expected, function.__name__
    assert [_numba_losses.MATH[name].wide_vectors for name in
            ("mse", "mae", "log_cosh", "hinge", "huber", "smooth_l1", "squared_hinge",
             "pinball")] == [True, True, True, False, False, False, False, False]
    # the piecewise losses' kernels that sum in their loop (from BEYOND_L2) take the wide form
    huber_wide = _numba_losses.MATH["huber"].wide_form
    assert huber_wide is not piecewise and huber_wide.wide_vectors
    assert _numba_losses.MATH["mse"].wide_form is _numba_losses.MATH["mse"]


def test_numba_kernels_align_their_stack():
    """``aligned_stack()`` gives the function that calls it a frame aligned to a cache line
    (LLVM's alignstack(64), which llvmlite's own property would not print alone), so the
    vector constants a kernel spills there are read from whole lines in every process;
    and every kernel calls it first."""
    numba = pytest.importorskip("numba", reason="Numba is not installed")
    import inspect
    import re

    from lossbackends.backends import (
        _numba_boosting,
        _numba_cross_entropy_few,
        _numba_elementwise,
        _numba_multiclass_hinge,
        _numba_rows,
    )
    from lossbackends.backends._numba_common import aligned_stack

    def doubled_sum(a):
        aligned_stack()
        return np.sum(a * 2.0)

    compiled = numba.njit(doubled_sum)
    assert compiled(np.arange(4.0)) == 12.0
    (ir,) = compiled.inspect_llvm().values()
    assert "alignstack=64" in ir or "alignstack(64)" in ir
    if platform.machine().lower() in {"x86_64", "amd64"}:
        (asm,) = compiled.inspect_asm().values()
        assert re.search(r"andq\s+\$-64, %rsp", asm)
    for kernel in (_numba_elementwise._elementwise_kernel, _numba_rows._cross_entropy_kernel,
                   _numba_cross_entropy_few._cross_entropy_few_classes_kernel,
                   _numba_multiclass_hinge._multiclass_hinge_kernel, _numba_boosting._finish):
        assert "aligned_stack()" in inspect.getsource(kernel), kernel.__name__
