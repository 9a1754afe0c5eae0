"""multiclass_hinge and cross_entropy's z_loss / softcap (issue 15) on every backend,
against the float64 references of ``reference.py``, finite differences and the peers
(optax, scikit-learn; Liger-Kernel's definition rewritten in torch ops); their options,
errors and memory. Their numerics at the extremes: ``test_row_losses_extremes``."""

from __future__ import annotations

import gc
import importlib.util
import re

import numpy as np
import pytest
import reference
from conftest import _skip_reason, examples, host, on, starting_a_line
from hypothesis import given, settings
from hypothesis import strategies as st
from row_helpers import CE_OPTIONS, REDUCTIONS, RUNNABLE, assert_close, ce_inputs, options_for

import lossbackends as lb

rng = np.random.default_rng(15)


@pytest.mark.parametrize("options", CE_OPTIONS)
@pytest.mark.parametrize("dtype", (np.float16, np.float32, np.float64))
@pytest.mark.parametrize("shape", [(1, 3), (13, 7), (6, 300)])
def test_cross_entropy_options_match_the_reference(backend, options, dtype, shape):
    labels, x = ce_inputs(*shape, dtype, ignore_index=options.get("ignore_index", -100))
    options = options_for(options, shape[1])
    for reduction in REDUCTIONS:
        expected = reference.cross_entropy_liger(labels, x.astype(np.float64),
                                                 reduction=reduction, **options)
        cw = options.get("class_weight")
        kw = dict(options, class_weight=None if cw is None else on(backend, cw.astype(dtype)))
        value, grad = lb.cross_entropy.value_and_grad(on(backend, labels), on(backend, x),
                                                      reduction=reduction, backend=backend, **kw)
        assert_close(value, expected[0], dtype, f"value {reduction}")
        assert_close(grad, expected[1], dtype, f"gradient {reduction}")
        assert np.asarray(host(grad)).dtype == dtype


@pytest.mark.parametrize("dtype", (np.float16, np.float32, np.float64))
@pytest.mark.parametrize("shape", [(1, 1), (1, 4), (17, 5), (9, 1100)])
def test_multiclass_hinge_matches_the_reference(backend, dtype, shape):
    r = np.random.default_rng(1)
    x = r.normal(size=shape).astype(dtype)
    x[0, :] = 0.5  # a tie everywhere: the lowest index wins
    labels = r.integers(0, shape[1], shape[0])
    weight = r.uniform(0, 2, shape[0])
    for margin in (1.0, 0.3):
        for w in (None, weight):
            for reduction in REDUCTIONS:
                expected = reference.multiclass_hinge(labels, x.astype(np.float64),
                                                      reduction=reduction, margin=margin,
                                                      weight=w)
                value, grad = lb.multiclass_hinge.value_and_grad(
                    on(backend, labels), on(backend, x), reduction=reduction, margin=margin,
                    weight=None if w is None else on(backend, w.astype(dtype)), backend=backend)
                assert_close(value, expected[0], dtype, f"value {reduction}")
                assert_close(grad, expected[1], dtype, f"gradient {reduction}")
                assert lb.multiclass_hinge.grad(
                    on(backend, labels), on(backend, x), reduction=reduction, margin=margin,
                    backend=backend).shape == shape


def test_multiclass_hinge_axis_out_and_in_place(backend):
    x = rng.normal(size=(3, 5, 4))  # classes on axis 1
    labels = rng.integers(0, 5, (3, 4))
    flat = np.moveaxis(x, 1, -1).reshape(-1, 5)
    value, grad = reference.multiclass_hinge(labels.reshape(-1), flat, reduction="none")
    got = lb.multiclass_hinge(on(backend, labels), on(backend, x), axis=1, reduction="none",
                              backend=backend)
    np.testing.assert_allclose(host(got), value.reshape(3, 4))
    expected_grad = np.moveaxis(grad.reshape(3, 4, 5), -1, 1)
    out = on(backend, np.empty_like(x))
    lb.multiclass_hinge.grad(on(backend, labels), on(backend, x), axis=1, reduction="sum",
                             out=out, backend=backend)
    np.testing.assert_allclose(host(out), expected_grad)
    y2 = rng.integers(0, 6, 8)
    x2 = rng.normal(size=(8, 6))
    expected = reference.multiclass_hinge(y2, x2)
    x2d = on(backend, x2.copy())
    v, g = lb.multiclass_hinge.value_and_grad(on(backend, y2), x2d, out=x2d, backend=backend)
    assert g is x2d
    np.testing.assert_allclose(host(v), expected[0])
    np.testing.assert_allclose(host(g), expected[1])


def test_cross_entropy_options_in_place(backend):
    labels, x = ce_inputs(9, 40, np.float32)
    expected = reference.cross_entropy_liger(labels, x, z_loss=0.1, softcap=2.0)
    xd = on(backend, x.copy())
    value, grad = lb.cross_entropy.value_and_grad(on(backend, labels), xd, out=xd, z_loss=0.1,
                                                  softcap=2.0, backend=backend)
    assert grad is xd
    assert_close(value, expected[0], np.float32, "value")
    assert_close(grad, expected[1], np.float32, "gradient")


def _finite_differences(f, x, h=1e-6):
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[idx] = h
        g[idx] = (f(x + step) - f(x - step)) / (2 * h)
    return g


@pytest.mark.parametrize("options", CE_OPTIONS)
def test_cross_entropy_options_gradient_is_the_finite_difference(options):
    labels, x = ce_inputs(5, 6, np.float64, seed=3, ignore_index=options.get("ignore_index", -100))
    options = options_for(options, 6)
    for backend in ("numpy", "numba"):
        grad = lb.cross_entropy.grad(labels, x, backend=backend, **options)
        numeric = _finite_differences(
            lambda v, backend=backend: float(lb.cross_entropy(labels, v, backend=backend,
                                                              **options)), x)
        np.testing.assert_allclose(grad, numeric, atol=1e-7)


def test_multiclass_hinge_gradient_is_the_finite_difference():
    r = np.random.default_rng(4)
    x = r.normal(size=(7, 5))
    labels = r.integers(0, 5, 7)
    w = r.uniform(0.5, 2, 7)
    for backend in ("numpy", "numba"):
        grad = lb.multiclass_hinge.grad(labels, x, weight=w, margin=0.7, backend=backend)
        numeric = _finite_differences(
            lambda v, backend=backend: float(lb.multiclass_hinge(
                labels, v, weight=w, margin=0.7, backend=backend)), x)
        np.testing.assert_allclose(grad, numeric, atol=1e-7)


@pytest.mark.skipif(importlib.util.find_spec("optax") is None, reason="optax is not installed")
def test_multiclass_hinge_matches_optax_and_sklearn():
    import jax
    import jax.numpy as jnp
    import optax
    from sklearn.metrics import hinge_loss

    r = np.random.default_rng(5)
    x = r.normal(size=(40, 6))
    labels = r.integers(0, 6, 40)
    x64 = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)  # optax in float64, as ours
    try:
        def peer(scores):
            return optax.losses.multiclass_hinge_loss(scores, jnp.asarray(labels))

        expected = np.asarray(peer(jnp.asarray(x)))
        expected_grad = np.asarray(jax.grad(lambda s: peer(s).sum())(jnp.asarray(x)))
    finally:
        jax.config.update("jax_enable_x64", x64)
    assert expected.min() == 0 and expected.max() > 0  # rows on both sides of the margin
    for backend in [b for b in RUNNABLE if b != "cupy"]:
        value, grad = lb.multiclass_hinge.value_and_grad(labels, x, reduction="none",
                                                         backend=backend)
        np.testing.assert_allclose(value, expected, rtol=1e-12, atol=1e-15)
        np.testing.assert_array_equal(grad, expected_grad)  # (each row's own: +-1 and 0)
    np.testing.assert_allclose(lb.multiclass_hinge(labels, x, backend="numba"),
                               hinge_loss(labels, x, labels=np.arange(6)), rtol=1e-12)


def _liger_torch(labels, x, *, z_loss, softcap, label_smoothing, class_weight, ignore_index):
    """Liger-Kernel's cross_entropy (ops/cross_entropy.py) in torch ops: softcap before the
    softmax; z_loss = lse_square_scale lse^2 per kept row, divided by n_non_ignore for the
    mean; the cross-entropy (label smoothing and class weights included) divided by
    sum_non_ignore_weight; autograd for the gradient."""
    import torch

    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    yt = torch.tensor(labels)
    capped = xt if softcap is None else softcap * torch.tanh(xt / softcap)
    w = None if class_weight is None else torch.tensor(class_weight, dtype=torch.float64)
    ce = torch.nn.functional.cross_entropy(capped, yt, weight=w, ignore_index=ignore_index,
                                           label_smoothing=label_smoothing)
    kept = yt != ignore_index
    lse = torch.logsumexp(capped, dim=-1)
    loss = ce + z_loss * (lse[kept] ** 2).sum() / kept.sum()
    loss.backward()
    return loss.item(), xt.grad.numpy()


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
@pytest.mark.parametrize("options", CE_OPTIONS)
def test_cross_entropy_options_match_liger_in_torch(options):
    labels, x = ce_inputs(11, 9, np.float64, seed=6,
                           ignore_index=options.get("ignore_index", -100))
    options = options_for(options, 9)
    expected = _liger_torch(labels, x, z_loss=options.get("z_loss", 0.0),
                            softcap=options.get("softcap"),
                            label_smoothing=options.get("label_smoothing", 0.0),
                            class_weight=options.get("class_weight"),
                            ignore_index=options.get("ignore_index", -100))
    for backend in ("numpy", "numba"):
        value, grad = lb.cross_entropy.value_and_grad(labels, x, backend=backend, **options)
        np.testing.assert_allclose(value, expected[0], rtol=1e-10)
        np.testing.assert_allclose(grad, expected[1], rtol=1e-9, atol=1e-12)


@settings(max_examples=examples(25), deadline=None)
@given(rows=st.integers(1, 6), classes=st.integers(1, 9), z=st.sampled_from([0.0, 1e-3, 0.5]),
       cap=st.sampled_from([None, 0.5, 4.0, 30.0]), smoothing=st.sampled_from([0.0, 0.25]),
       margin=st.sampled_from([0.0, 1.0, 2.5]), seed=st.integers(0, 2**16),
       backend=st.sampled_from(["numpy", "numba"]))
def test_row_losses_over_options_and_shapes(rows, classes, z, cap, smoothing, margin, seed, backend):
    r = np.random.default_rng(seed)
    x = r.normal(size=(rows, classes)) * 5
    labels = r.integers(0, classes, rows)
    expected = reference.cross_entropy_liger(labels, x, reduction="sum", z_loss=z, softcap=cap,
                                             label_smoothing=smoothing)
    value, grad = lb.cross_entropy.value_and_grad(labels, x, reduction="sum", z_loss=z,
                                                  softcap=cap, label_smoothing=smoothing,
                                                  backend=backend)
    np.testing.assert_allclose(value, expected[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grad, expected[1], rtol=1e-9, atol=1e-12)
    expected = reference.multiclass_hinge(labels, x, margin=margin)
    value, grad = lb.multiclass_hinge.value_and_grad(labels, x, margin=margin, backend=backend)
    np.testing.assert_allclose(value, expected[0], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(grad, expected[1])


@pytest.mark.parametrize("bad, message", [
    ({"z_loss": -1.0}, "z_loss must be a finite number >= 0"),
    ({"z_loss": float("nan")}, "z_loss must be a finite number >= 0"),
    ({"softcap": 0.0}, "softcap must be a finite number > 0, or None"),
    ({"softcap": -2.0}, "softcap must be a finite number > 0, or None"),
])
def test_cross_entropy_option_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        lb.cross_entropy([0], [[1.0, 2.0]], **bad)


@pytest.mark.parametrize("loss", ["cross_entropy", "multiclass_hinge"])
def test_logits_without_classes_are_refused(loss):
    """0-d logits and a class axis of length 0: errors that say so, before any kernel."""
    with pytest.raises(ValueError, match=f"{loss} needs logits with a class axis; got a 0-d"):
        getattr(lb, loss)(0, 1.0)
    with pytest.raises(ValueError, match=re.escape(f"{loss} needs at least one class; logits "
                                                   "have shape (2, 0)")):
        getattr(lb, loss)([0, 0], np.zeros((2, 0)))


def test_ignore_index_beyond_int64_is_refused():
    with pytest.raises(ValueError, match="ignore_index must fit in int64; got 9223372036854775808"):
        lb.cross_entropy([0], [[1.0, 2.0]], ignore_index=2**63)


def test_multiclass_hinge_errors():
    with pytest.raises(ValueError, match="expects class indices of shape"):
        lb.multiclass_hinge([[0, 1]], [[1.0, 2.0]])
    with pytest.raises(ValueError, match="label"):
        lb.multiclass_hinge([2], [[1.0, 2.0]])
    with pytest.raises(ValueError, match="one weight per row"):
        lb.multiclass_hinge([0, 1], [[1.0, 2.0], [0.0, 1.0]], weight=[1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match="must be integers"):
        lb.multiclass_hinge([0.5], [[1.0, 2.0]])


@pytest.mark.parametrize("loss, options", [
    ("cross_entropy", {}), ("cross_entropy", {"softcap": 2.0, "label_smoothing": 0.1}),
    ("multiclass_hinge", {})])
@pytest.mark.parametrize("host_backend", ["numpy", "numba"])
def test_host_label_error_leaves_out_untouched(host_backend, loss, options):
    """A bad label raises before anything is written: out=y_pred keeps the logits (NumPy
    once wrote x - max over them first), hess_out its values (Numba's multiclass_hinge
    once zeroed it). (The GPU writes them: docs, gpu.md.)"""
    if _skip_reason(host_backend):
        pytest.skip(_skip_reason(host_backend))
    x = np.array([[1.0, 2.0, 3.0], [0.5, 0.1, -1.0]])
    labels = np.array([0, 5])
    for method in ("grad", "value_and_grad", "grad_and_hess"):
        written, hess = x.copy(), np.full_like(x, 7.0)
        out = (written, hess) if method == "grad_and_hess" else written
        with pytest.raises(lb.LabelError):
            getattr(getattr(lb, loss), method)(labels, written, out=out,
                                               backend=host_backend, **options)
        np.testing.assert_array_equal(written, x)
        np.testing.assert_array_equal(hess, 7.0)


@pytest.mark.parametrize("label_dtype", [np.int32, np.uint8, np.int16, ">i4", np.bool_])
@pytest.mark.parametrize("loss, options", [
    ("cross_entropy", {}), ("cross_entropy", {"check_labels": False, "label_smoothing": 0.1}),
    ("multiclass_hinge", {})])
def test_narrow_class_indices_give_the_bits_of_int64(backend, loss, options, label_dtype):
    """Class indices narrower than int64 (JAX's int32, uint8, big-endian, bool) give
    int64's bits, in every method, and are left as they were; a bad one raises the same
    error, naming the value as given. (They take the plain call's quick path, cast there,
    as the preparation casts them.)"""
    r = np.random.default_rng(21)  # (its own: the module's rng feeds the tests after it)
    x = on(backend, r.normal(size=(9, 2 if label_dtype is np.bool_ else 5)).astype(np.float32))
    labels = np.arange(9) % x.shape[1]
    narrow = np.array(labels, label_dtype)
    kept = narrow.copy()
    fn = getattr(lb, loss)
    for method in (None, "grad", "value_and_grad", "grad_and_hess"):
        call = fn if method is None else getattr(fn, method)
        wide = call(on(backend, labels), x, backend=backend, **options)
        got = call(on(backend, narrow), x, backend=backend, **options)
        for a, b in zip(*((w,) if method in (None, "grad") else w for w in (wide, got)),
                        strict=True):
            np.testing.assert_array_equal(host(b), host(a))
        np.testing.assert_array_equal(narrow, kept)
    if label_dtype is np.bool_:
        return
    bad = narrow.copy()
    bad[3] = 7
    if options.get("check_labels", True):
        with pytest.raises(lb.LabelError, match=r"y_true\[3\] = 7 "):
            fn(on(backend, bad), x, backend=backend, **options)
    else:  # its row NaN, as int64's
        got = host(fn(on(backend, bad), x, reduction="none", backend=backend, **options))
        np.testing.assert_array_equal(got, host(fn(on(backend, bad.astype(np.int64)), x,
                                                   reduction="none", backend=backend,
                                                   **options)))
        assert np.isnan(got[3]) and not np.isnan(np.delete(got, 3)).any()


def test_multiclass_hinge_margin_must_be_finite():
    """An infinite margin made NumPy's rows NaN and Numba's 0 beside an infinite score."""
    with pytest.raises(ValueError, match=r"multiclass_hinge: margin must be in \(-inf, inf\)"):
        lb.multiclass_hinge([0], [[-1.0, -np.inf]], margin=np.inf)


def test_multiclass_hinge_label_error_names_it(backend):
    """A bad label's error names the loss called, and offers no ignore_index (it has none),
    also where the flat row is renamed (a class axis) and for labels beyond int64."""
    x = on(backend, np.zeros((3, 4), np.float32))
    with pytest.raises(lb.LabelError, match=r"^multiclass_hinge: y_true\[1\] = 4 is not a "
                       r"class index in \[0, 4\); fix the labels$"):
        lb.multiclass_hinge.value_and_grad(on(backend, np.array([0, 4, 1])), x,
                                           backend=backend)
    with pytest.raises(lb.LabelError, match=r"^multiclass_hinge: y_true\[1, 0\] = -1 "):
        lb.multiclass_hinge(on(backend, np.array([[0, 1], [-1, 2]])),
                            on(backend, np.zeros((2, 2, 4), np.float32)), backend=backend)
    with pytest.raises(lb.LabelError, match=r"^multiclass_hinge: y_true\[2\] = 18446744073"):
        lb.multiclass_hinge(on(backend, np.array([0, 1, 2**64 - 1], np.uint64)), x,
                            backend=backend)
    with pytest.raises(lb.LabelError, match=r"^cross_entropy: y_true\[1\] = 4 .* nor "
                       "ignore_index; fix the labels or set ignore_index"):
        lb.cross_entropy(on(backend, np.array([0, 4, 1])), x, backend=backend)


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_jax_multiclass_hinge_and_cross_entropy_options():
    import jax
    import jax.numpy as jnp

    import lossbackends.jax as lbj

    x = rng.normal(size=(6, 4))
    y = rng.integers(0, 4, 6)
    expected = reference.multiclass_hinge(y, x, margin=0.5)
    f = jax.jit(lambda v: lbj.multiclass_hinge(jnp.asarray(y), v, margin=0.5))
    np.testing.assert_allclose(f(jnp.asarray(x, jnp.float32)), expected[0], rtol=1e-5)
    np.testing.assert_allclose(jax.grad(f)(jnp.asarray(x, jnp.float32)), expected[1], atol=1e-6)
    expected = reference.cross_entropy_liger(y, x, z_loss=0.1, softcap=2.0)
    g = jax.grad(lambda v: lbj.cross_entropy(jnp.asarray(y), v, z_loss=0.1, softcap=2.0))
    np.testing.assert_allclose(g(jnp.asarray(x, jnp.float32)), expected[1], atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("loss", "options"), [
    ("cross_entropy", {}), ("cross_entropy", {"label_smoothing": 0.1, "class_weight": True}),
    ("cross_entropy", {"z_loss": 1e-3, "ignore_index": 1}),
    ("cross_entropy", {"softcap": 2.0}),  # capped first as if within +-softcap, then again
    ("cross_entropy", {"softcap": 60.0}), ("cross_entropy", {"probabilities": True}),
    ("multiclass_hinge", {}), ("multiclass_hinge", {"margin": 0.5})])
def test_row_losses_in_place_give_the_bits_of_out(backend, loss, options, dtype):
    """The gradient written over the logits is the one written elsewhere, bit for bit, and
    the value and the Hessian too, few classes (a kernel of its own) to many, over the row
    kernels' chunks (as tests/test_hessians.py checks for the elementwise losses)."""
    rng = np.random.default_rng(18)
    for rows, classes in ((700, 3), (300, 40), (9, 1000), (3, 20000)):
        x = (rng.standard_normal((rows, classes)) * 4).astype(dtype)
        x[0, :2] = 10.0  # a tie at the max
        x[1, 1], x[2, 0] = np.nan, np.inf
        kwargs = dict(options)
        if kwargs.pop("probabilities", False):
            target = rng.dirichlet(np.ones(classes), rows).astype(dtype)
        else:
            target = rng.integers(0, classes, rows)
            target[::3] = kwargs.get("ignore_index", 0)  # ignored rows, where asked
        if kwargs.get("class_weight") is True:
            kwargs["class_weight"] = on(backend, rng.uniform(0.5, 2, classes).astype(dtype))
        function = getattr(lb, loss)
        apart = on(backend, np.empty_like(x))
        value = function.value_and_grad(on(backend, target), on(backend, x), out=apart,
                                        backend=backend, **kwargs)[0]
        written = on(backend, x.copy())
        value_in_place = function.value_and_grad(on(backend, target), written, out=written,
                                                 backend=backend, **kwargs)[0]
        assert host(value_in_place).tobytes() == host(value).tobytes()
        assert host(written).tobytes() == host(apart).tobytes()
        hess, hess_in_place = on(backend, np.empty_like(x)), on(backend, np.empty_like(x))
        function.grad_and_hess(on(backend, target), on(backend, x), out=(apart, hess),
                               backend=backend, **kwargs)
        written = on(backend, x.copy())
        function.grad_and_hess(on(backend, target), written, out=(written, hess_in_place),
                               backend=backend, **kwargs)
        assert host(written).tobytes() == host(apart).tobytes()
        assert host(hess_in_place).tobytes() == host(hess).tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", [
    {}, {"label_smoothing": 0.1, "class_weight": True}, {"z_loss": 1e-3, "ignore_index": 1},
    {"softcap": 2.0}, {"softcap": 60.0}, {"probabilities": True},
    {"probabilities": True, "softcap": 5.0}])
def test_cross_entropy_streamed_rows_give_the_bits_of_plain_stores(options, dtype, monkeypatch):
    """From ``STREAM_FROM_BYTES`` in rows of ``STREAM_ROW_BYTES`` (both lowered here) the
    Numba kernel computes each row in a scratch row and copies it into the gradient by
    streaming stores, from the row's first cache line on: the value, the gradient and the
    Hessian are the bits of plain stores, wherever the gradient starts, ignored rows, NaN
    and infinities included, and rows shorter than a line write nothing past their end;
    written over the logits it keeps plain stores."""
    pytest.importorskip("numba", reason="Numba is not installed")
    from lossbackends.backends import _numba_rows

    streamed = []
    launch = _numba_rows._launch

    def spied(kernel, types, key, chunks, args):
        if kernel is _numba_rows._CE:
            streamed.append(args[-1])
        return launch(kernel, types, key, chunks, args)

    monkeypatch.setattr(_numba_rows, "_launch", spied)
    rng = np.random.default_rng(19)
    rows, classes = 300, 133  # (rows whose lines start anywhere: 133 elements)
    x = (rng.standard_normal((rows, classes)) * 4).astype(dtype)
    x[0, :2] = 10.0
    x[1, 1], x[2, 0], x[4, 5] = np.nan, np.inf, -np.inf
    kwargs = dict(options)
    if kwargs.pop("probabilities", False):
        target = rng.dirichlet(np.ones(classes), rows).astype(dtype)
    else:
        target = rng.integers(0, classes, rows)
        target[::3] = kwargs.get("ignore_index", -100)
        target[5] = classes - 1
    if kwargs.get("class_weight") is True:
        kwargs["class_weight"] = rng.uniform(0.5, 2, classes).astype(dtype)
    calls = {}
    for stream in (False, True):
        monkeypatch.setattr(_numba_rows, "STREAM_FROM_BYTES", 1 << 12 if stream else 1 << 62)
        monkeypatch.setattr(_numba_rows, "STREAM_ROW_BYTES", 256 if stream else 1 << 62)
        for reduction in ("mean", "sum", "none"):
            for past in (0, 1, 3):
                streamed.clear()
                out = starting_a_line(x.shape, dtype, past)
                value, grad = lb.cross_entropy.value_and_grad(
                    target, x, reduction=reduction, out=out, backend="numba", **kwargs)
                assert streamed == [stream]
                calls[stream, reduction, past] = (np.asarray(value).tobytes(), grad.tobytes())
        hess = starting_a_line(x.shape, dtype, 2)
        grad, _ = lb.cross_entropy.grad_and_hess(target, x, out=(starting_a_line(x.shape, dtype, 1),
                                                                 hess), backend="numba",
                                                 **kwargs)
        calls[stream, "hess"] = (grad.tobytes(), hess.tobytes())
        streamed.clear()
        written = x.copy()
        value, _ = lb.cross_entropy.value_and_grad(target, written, out=written,
                                                   backend="numba", **kwargs)
        assert streamed == [stream]  # (asked; the kernel keeps plain stores over x)
        calls[stream, "in place"] = (np.asarray(value).tobytes(), written.tobytes())
    for key in [k for k in calls if k[0]]:
        assert calls[key] == calls[(False, *key[1:])], key
    if not options:  # rows of 5 classes, shorter than the head before a row's first line
        few, labels = (rng.standard_normal((400, 5)) * 4).astype(dtype), rng.integers(0, 5, 400)
        results = {}
        for stream in (False, True):
            monkeypatch.setattr(_numba_rows, "STREAM_FROM_BYTES", 1 if stream else 1 << 62)
            monkeypatch.setattr(_numba_rows, "STREAM_ROW_BYTES", 1 if stream else 1 << 62)
            for past in range(64 // np.dtype(dtype).itemsize):
                out = starting_a_line(few.shape, dtype, past, fill=7.0)  # 7s around it stay
                buffer = out.base
                start = (out.__array_interface__["data"][0]
                         - buffer.__array_interface__["data"][0]) // buffer.itemsize
                streamed.clear()
                lb.cross_entropy.grad(labels, few, z_loss=1e-3, out=out, backend="numba")
                assert streamed == [stream]
                assert (buffer[start + few.size:] == 7.0).all() and (buffer[:start] == 7.0).all()
                results[stream, past] = out.tobytes()
        assert all(results[True, past] == results[False, past] for _, past in results)
        # a z-loss whose 2 z lse overflows the dtype: the label's element in float64
        big = x.copy()
        big[7] = np.finfo(dtype).max / 4
        big[7, 3] = np.finfo(dtype).max / 2
        target_big = rng.integers(0, classes, rows)
        huge = float(np.finfo(dtype).max) / 4  # (capped logits keep the lse small)
        for overflowing in ({"z_loss": 10.0}, {"z_loss": huge, "softcap": 2.0}):
            bits = []
            for stream in (False, True):
                monkeypatch.setattr(_numba_rows, "STREAM_FROM_BYTES", 1 if stream else 1 << 62)
                monkeypatch.setattr(_numba_rows, "STREAM_ROW_BYTES", 1 if stream else 1 << 62)
                grad = lb.cross_entropy.grad(target_big, big, backend="numba",
                                             out=starting_a_line(big.shape, dtype, 1), **overflowing)
                pair = lb.cross_entropy.grad_and_hess(target_big, big, backend="numba",
                                                      z_loss=10.0)
                bits.append((grad.tobytes(), pair[0].tobytes(), pair[1].tobytes()))
            assert bits[0] == bits[1], overflowing
    # and right (the streamed default call): against the float64 references
    monkeypatch.setattr(_numba_rows, "STREAM_FROM_BYTES", 1 << 12)
    monkeypatch.setattr(_numba_rows, "STREAM_ROW_BYTES", 256)
    streamed.clear()
    value, grad = lb.cross_entropy.value_and_grad(target, x, backend="numba", **kwargs)
    assert streamed == [True]
    if target.ndim == 2:  # (no reference of soft targets with softcap: the bits above)
        expected, expected_grad = (None, None) if "softcap" in kwargs else \
            reference.cross_entropy(target.astype(np.float64), x.astype(np.float64), **kwargs)
    else:
        if "class_weight" in kwargs:
            kwargs["class_weight"] = kwargs["class_weight"].astype(np.float64)
        with np.errstate(invalid="ignore"):  # (the rows of infinities)
            expected, expected_grad = reference.cross_entropy_liger(
                target, x.astype(np.float64), **kwargs)
    if expected is not None:
        finite = np.isfinite(expected_grad) & np.isfinite(x).all(axis=1, keepdims=True)
        np.testing.assert_allclose(grad[finite], expected_grad[finite], rtol=1e-4, atol=1e-6)


def test_row_kernels_free_their_scratch_rows_once(monkeypatch):
    """The row kernels read their rows through uncounted views (``borrowed``) and keep
    their own scratch rows alive to their end (``keep_alive``): Numba's allocations and
    frees still balance over calls that use each scratch row (the exps of a value alone,
    softcap's capped row and folded exps, probabilities' targets, the row saved for
    out=logits), and the results equal the NumPy backend's. On one thread: a worker frees
    its scratch rows as its kernel returns, after the caller has its chunks' sums, so
    with two the counts read in between moved by a worker's late frees (48 allocations
    against 54 frees in a CI run); the kernel's code is the same on every thread."""
    numba = pytest.importorskip("numba", reason="Numba is not installed")
    from numba.core.runtime import _nrt_python, rtsys

    from lossbackends.backends import _threads

    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 1)

    x = rng.standard_normal((300, 40)).astype(np.float32)
    labels = rng.integers(0, 40, 300)
    probs = rng.random((300, 40)).astype(np.float32)
    probs /= probs.sum(axis=1, keepdims=True)

    def calls():
        yield lb.cross_entropy(labels, x, backend="numba"), lb.cross_entropy(labels, x)
        yield (lb.cross_entropy.value_and_grad(labels, x, backend="numba", softcap=5.0),
               lb.cross_entropy.value_and_grad(labels, x, backend="numpy", softcap=5.0))
        yield (lb.cross_entropy.value_and_grad(probs, x, backend="numba"),
               lb.cross_entropy.value_and_grad(probs, x, backend="numpy"))
        inplace = x.copy()
        yield (lb.cross_entropy.value_and_grad(labels, inplace, backend="numba", out=inplace),
               lb.cross_entropy.value_and_grad(labels, x, backend="numpy"))
        yield (lb.multiclass_hinge.value_and_grad(labels, x, backend="numba"),
               lb.multiclass_hinge.value_and_grad(labels, x, backend="numpy"))

    for _ in calls():  # (compiled first: a compilation allocates too)
        pass
    # a worker descheduled on a busy 2-core machine freed an earlier test's row inside the
    # window below (47 allocations against 48 frees in a CI run)
    _threads.wait_until_idle()
    # no collection inside the window: it freed arrays that earlier tests of this worker
    # had allocated (55 frees against 48 allocations in a CI run)
    gc.collect()
    gc.disable()
    was_on = _nrt_python.memsys_stats_enabled()
    _nrt_python.memsys_enable_stats()
    try:
        before = rtsys.get_allocation_stats()
        for ours, numpy_s in calls():
            for a, b in zip(*(r if isinstance(r, tuple) else (r,) for r in (ours, numpy_s)),
                            strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        after = rtsys.get_allocation_stats()
    finally:
        gc.enable()
        if not was_on:
            _nrt_python.memsys_disable_stats()
    allocated, freed = after.alloc - before.alloc, after.free - before.free
    assert allocated == freed and allocated > 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("softcap", [1.0, 30.0, 60.0])
def test_softcap_gradient_of_saturated_logits_keeps_its_relative_accuracy(backend, dtype,
                                                                          softcap):
    """softcap's chain rule 1 - tanh^2 cancels where the logit is far beyond the cap (in
    float32 it is 0 from |x / softcap| = 8.3 on): each element of the gradient, however
    small, within a few ulps of the float64 reference's (``reference._tanh_slope``, 1 /
    cosh^2), in the folded pass, the Hessian's, the general one beyond softcap 40, written
    over the logits, and for probabilities. (Before: 0.5 % off at |x / softcap| = 6 and
    up to 4.6x at 9 in float32 on the Numba backend, 2x on NumPy's.)"""
    rows, classes = 6, 67
    gen = np.random.default_rng(int(softcap))
    x = (gen.uniform(-9, 9, (rows, classes)) * softcap).astype(dtype)
    labels = gen.integers(0, classes, rows)
    expected = reference.cross_entropy_liger(labels, x, reduction="sum", softcap=softcap)[1]
    one_hot = np.eye(classes, dtype=dtype)[labels]
    # the float32 capped logits are rounded to an ulp of the cap, and each exp with them
    rtol = 1e-12 if dtype == np.float64 else 4e-6 * max(softcap, 1.0)
    y, p = on(backend, labels), on(backend, x)
    calls = {
        "value_and_grad": lb.cross_entropy.value_and_grad(y, p, reduction="sum",
                                                          softcap=softcap, backend=backend)[1],
        "grad_and_hess": lb.cross_entropy.grad_and_hess(y, p, reduction="sum",
                                                        softcap=softcap, backend=backend)[0],
        "probabilities": lb.cross_entropy.grad(on(backend, one_hot), p, reduction="sum",
                                               softcap=softcap, backend=backend),
    }
    written = on(backend, x.copy())
    calls["out=logits"] = lb.cross_entropy.grad(y, written, reduction="sum", softcap=softcap,
                                                backend=backend, out=written)
    for name, grad in calls.items():
        # (atol: the slopes beyond the dtype's normal numbers, subnormal or 0)
        np.testing.assert_allclose(host(grad), expected, rtol=rtol, atol=np.finfo(dtype).tiny,
                                   err_msg=f"{name} softcap={softcap}")
