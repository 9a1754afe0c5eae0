"""lossbackends.jax: custom-VJP losses under jit, grad and vmap, against jax.grad of
references written in jax.numpy."""

from __future__ import annotations

import os
import subprocess
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="JAX is not installed (pip install 'lossbackends[jax]')")
import jax.numpy as jnp  # noqa: E402

import lossbackends.jax as lbj  # noqa: E402
from lossbackends.losses import LOSSES  # noqa: E402


def _reduce(losses, reduction, denominator=None):
    if reduction == "none":
        return losses
    total = jnp.sum(losses)
    if reduction == "sum":
        return total
    return total / (losses.size if denominator is None else denominator)


def ref_elementwise(name, y, p, reduction="mean", weight=None, pos_weight=None, eps=1e-15,
                    margin=1.0):
    if name == "mse":
        losses = (p - y) ** 2
    elif name == "binary_cross_entropy":
        e = max(eps, float(jnp.finfo(p.dtype).eps))
        pc = jnp.clip(p, e, 1 - e)
        losses = -(y * jnp.log(pc) + (1 - y) * jnp.log(1 - pc))
    elif name == "binary_cross_entropy_with_logits":
        q = 1.0 if pos_weight is None else pos_weight
        losses = q * y * jax.nn.softplus(-p) + (1 - y) * jax.nn.softplus(p)
    else:
        losses = jnp.maximum(0.0, margin - y * p)
    if weight is not None:
        losses = losses * weight
    return _reduce(losses, reduction)


def ref_cross_entropy(t, x, reduction="mean", class_weight=None, ignore_index=-100,
                      label_smoothing=0.0):
    classes = x.shape[-1]
    w = jnp.ones(classes) if class_weight is None else class_weight
    kept = t != ignore_index
    onehot = jax.nn.one_hot(jnp.where(kept, t, 0), classes)
    q = (1 - label_smoothing) * onehot + label_smoothing / classes
    losses = jnp.sum(w * q * -jax.nn.log_softmax(x), axis=-1) * kept
    return _reduce(losses, reduction, jnp.sum(w[jnp.where(kept, t, 0)] * kept))


def _inputs(name, shape, seed=0):
    rng = np.random.default_rng(seed)
    if name == "binary_cross_entropy":
        y, p = (rng.random(shape) < 0.5), rng.uniform(0.05, 0.95, shape)
    elif name == "hinge":
        y = np.where(rng.random(shape) < 0.5, -1.0, 1.0)
        p = rng.normal(0, 2, shape)
        p[np.abs(1 - y * p) < 0.05] += 0.2
    else:
        y, p = rng.random(shape), rng.normal(0, 2, shape)
    return jnp.asarray(y, jnp.float32), jnp.asarray(p, jnp.float32)


ELEMENTWISE_CASES = [
    ("mse", {}),
    ("mse", {"weight": "same"}),
    ("binary_cross_entropy", {"weight": "last"}),
    ("binary_cross_entropy_with_logits", {"weight": "same", "pos_weight": "last"}),
    ("hinge", {"margin": 0.5}),
]


def _options(spec, shape):
    rng = np.random.default_rng(9)
    options = {}
    for key, value in spec.items():
        if value == "same":
            options[key] = jnp.asarray(rng.uniform(0.5, 2, shape), jnp.float32)
        elif value == "last":
            options[key] = jnp.asarray(rng.uniform(0.5, 2, shape[-1]), jnp.float32)
        else:
            options[key] = value
    return options


def _check(ours, reference, p, reduction, jit_grad=True):
    """Value under jit and the VJP with a random cotangent, against the reference's (and
    jit(grad) with ``jit_grad``). The reference runs jitted: one compile, not one per
    jax.numpy operation (seconds on CI's 2 cores)."""
    value = jax.jit(ours)(p)
    shape = jax.eval_shape(reference, p).shape
    cotangent = jnp.asarray(np.random.default_rng(3).normal(size=shape), jnp.float32)
    ref_value, ref_vjp = jax.jit(lambda p, c: (lambda v, f: (v, f(c)[0]))(
        *jax.vjp(reference, p)))(p, cotangent)
    np.testing.assert_allclose(value, ref_value, rtol=2e-5, atol=1e-6)
    value, vjp = jax.vjp(ours, p)
    np.testing.assert_allclose(vjp(cotangent)[0], ref_vjp, rtol=2e-5, atol=1e-6)
    if reduction != "none" and jit_grad:
        np.testing.assert_allclose(jax.jit(jax.grad(ours))(p), jax.grad(reference)(p),
                                   rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize(("name", "spec"), ELEMENTWISE_CASES)
def test_elementwise(name, spec, reduction):
    y, p = _inputs(name, (6, 4))
    options = _options(spec, (6, 4))
    _check(lambda p: getattr(lbj, name)(y, p, reduction=reduction, **options),
           lambda p: ref_elementwise(name, y, p, reduction=reduction, **options), p, reduction)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", [{}, {"class_weight": "classes", "ignore_index": 2,
                                          "label_smoothing": 0.2}])
def test_cross_entropy(options, reduction):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(0, 2, (7, 5)), jnp.float32)
    t = jnp.asarray(rng.integers(0, 5, 7))
    if options:
        options = {**options, "class_weight": jnp.asarray(rng.uniform(0.5, 2, 5), jnp.float32)}
    _check(lambda x: lbj.cross_entropy(t, x, reduction=reduction, **options),
           lambda x: ref_cross_entropy(t, x, reduction=reduction, **options), x, reduction)


def test_vmap_keeps_examples_apart():
    y, p = _inputs("mse", (3, 8))
    per_example = jax.vmap(lambda y, p: lbj.mse(y, p))(y, p)
    np.testing.assert_allclose(per_example, jnp.mean((p - y) ** 2, axis=1), rtol=1e-6)
    grads = jax.jit(jax.vmap(jax.grad(lambda p, y: lbj.mse(y, p))))(p, y)
    np.testing.assert_allclose(grads, 2 * (p - y) / 8, rtol=1e-6)
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 4, 3)), jnp.float32)
    t = jnp.array([[0, 1, 2, 1], [2, 2, 0, 1]])
    grads = jax.vmap(jax.grad(lambda x, t: lbj.cross_entropy(t, x)))(x, t)
    expected = jax.vmap(jax.grad(lambda x, t: ref_cross_entropy(t, x)))(x, t)
    np.testing.assert_allclose(grads, expected, rtol=2e-5, atol=1e-7)


def test_vmap_batches_are_the_plain_calls_of_their_examples():
    """Under vmap one callback takes the whole batch and computes each example as the plain
    call does, to the bit: whichever arguments are batched (a shared target, a shared
    prediction, a per-example weight), nested vmaps, float options, row losses with
    reduction="none", the value alone, and an empty batch."""
    import lossbackends as lb

    r = np.random.default_rng(5)
    y = r.normal(size=(4, 6)).astype(np.float32)
    p = r.normal(size=(4, 6)).astype(np.float32)
    w = r.uniform(0.5, 2, size=(4, 6)).astype(np.float32)

    def plain(y, p, **kw):
        value, grad = lb.huber.value_and_grad(np.asarray(y), np.asarray(p), delta=0.5, **kw)
        return np.asarray(value), grad

    def vg(y, p, w=None):
        return jax.value_and_grad(lambda q: lbj.huber(y, q, delta=0.5, weight=w))(p)

    for in_axes, args in [((0, 0), (y, p)), ((None, 0), (y[0], p)), ((0, None), (y, p[0]))]:
        value, grad = jax.jit(jax.vmap(vg, in_axes=in_axes))(*map(jnp.asarray, args))
        for b in range(4):
            yb, pb = (a if axis is None else a[b] for a, axis in zip(args, in_axes, strict=True))
            expected = plain(yb, pb)
            np.testing.assert_array_equal(value[b], expected[0])
            np.testing.assert_array_equal(grad[b], expected[1])
    value, grad = jax.vmap(vg)(jnp.asarray(y), jnp.asarray(p), jnp.asarray(w))
    for b in range(4):
        expected = plain(y[b], p[b], weight=w[b])
        np.testing.assert_array_equal(value[b], expected[0])
        np.testing.assert_array_equal(grad[b], expected[1])
    # nested: targets along one axis, predictions along the other
    values = jax.jit(jax.vmap(jax.vmap(lambda y, p: lbj.huber(y, p, delta=0.5),
                                       in_axes=(None, 0)), in_axes=(0, None)))(
        jnp.asarray(y[:3]), jnp.asarray(p))
    assert values.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            np.testing.assert_array_equal(values[i, j], plain(y[i], p[j])[0])
    # a row loss per row, its class axis first
    x = r.normal(size=(3, 5, 2)).astype(np.float32)
    t = r.integers(0, 5, size=(3, 2)).astype(np.int32)
    rows = jax.vmap(lambda t, x: lbj.cross_entropy(t, x, axis=0, reduction="none"))(
        jnp.asarray(t), jnp.asarray(x))
    for b in range(3):
        np.testing.assert_array_equal(rows[b], lb.cross_entropy(t[b], x[b], axis=0,
                                                                reduction="none"))
    # an empty batch
    empty = jax.vmap(jax.grad(lambda p, y: lbj.mse(y, p)))(jnp.zeros((0, 6)), jnp.zeros((0, 6)))
    assert empty.shape == (0, 6) and empty.dtype == jnp.float32


def test_bad_pos_weight_inside_jit_is_not_an_exception():
    """pos_weight's values are checked outside a trace (ValueError) but not inside the
    callback, where an exception is undefined: an infinite one gives NaN there."""
    y, x = jnp.array([0.0, 1.0]), jnp.array([1.0, 2.0])
    loss = jax.jit(lambda x, pw: lbj.binary_cross_entropy_with_logits(y, x, pos_weight=pw))
    assert np.isnan(loss(x, jnp.array(np.inf)))
    plain = LOSSES["binary_cross_entropy_with_logits"]
    np.testing.assert_allclose(loss(x, jnp.array(2.0)),
                               plain(np.asarray(y), np.asarray(x), pos_weight=2.0), rtol=1e-6)
    with pytest.raises(ValueError, match="pos_weight must be finite and >= 0"):
        lbj.binary_cross_entropy_with_logits(y, x, pos_weight=jnp.array(np.inf))


def test_bad_label_gives_nan_rows_inside_jit(capsys):
    x = jnp.asarray(np.random.default_rng(4).normal(size=(3, 4)), jnp.float32)
    t = jnp.array([1, 9, 2])
    # never silent: a warning names the label (optax's NaN says nothing: optax#1185)
    named = r"cross_entropy: y_true\[1\] = 9 is not a class index in \[0, 4\) .* NaN"
    with pytest.warns(RuntimeWarning, match=named):
        losses = np.asarray(jax.jit(lambda x: lbj.cross_entropy(t, x, reduction="none"))(x))
    with pytest.warns(RuntimeWarning, match=named):
        grad = np.asarray(jax.jit(jax.grad(lambda x: lbj.cross_entropy(t, x, reduction="sum")))(x))
    assert np.isnan(losses[1]) and np.isfinite(losses[[0, 2]]).all()
    assert np.isnan(grad[1]).all() and np.isfinite(grad[[0, 2]]).all()
    with pytest.warns(RuntimeWarning, match=r"multiclass_hinge: y_true\[0\] = -1 is not"):
        jax.jit(lambda x: lbj.multiclass_hinge(jnp.array([-1, 0, 3]), x))(x)
    with pytest.warns(RuntimeWarning, match=r"y_true\[1, 0\] = 5 is not"):  # as lb's names it
        jax.jit(lambda x: lbj.cross_entropy(jnp.array([[1, 2], [5, 0]]), x.reshape(2, 2, 3)))(x)
    with warnings.catch_warnings():  # warnings made errors: not raised inside the callback
        warnings.simplefilter("error")
        assert np.isnan(jax.jit(lambda x: lbj.cross_entropy(t, x))(x))
    assert "cross_entropy: y_true[1] = 9 is not a class index in [0, 4)" in (
        capsys.readouterr().err)  # (said on stderr instead)
    with warnings.catch_warnings():  # no warning for ignore_index, nor for a NaN logit
        warnings.simplefilter("error")
        jax.jit(lambda x: lbj.cross_entropy(jnp.array([1, -100, 2]), x))(x)
        jax.jit(lambda x: lbj.cross_entropy(t, x, ignore_index=9))(x)
        assert np.isnan(jax.jit(lambda x: lbj.cross_entropy(t % 4, x))(x.at[0, 0].set(np.nan)))
    # an explicit check_labels=True cannot be kept there: an error while tracing, not a
    # silently unchecked call; outside a trace it raises for the bad label, as lb's does
    with pytest.raises(ValueError, match="check_labels=True cannot raise inside a traced"):
        jax.jit(lambda x: lbj.cross_entropy(t, x, check_labels=True))(x)
    with warnings.catch_warnings():  # check_labels=False: the NaN rows, and no warning
        warnings.simplefilter("error")
        np.testing.assert_array_equal(
            np.asarray(jax.jit(lambda x: lbj.cross_entropy(t, x, reduction="none",
                                                           check_labels=False))(x)), losses)
    with pytest.raises(ValueError, match="9"):
        lbj.cross_entropy(t, x, check_labels=True)


def test_gpu_arrays_raise(monkeypatch):
    fake = types.SimpleNamespace(devices=lambda: [types.SimpleNamespace(platform="gpu")])
    with pytest.raises(ValueError, match="computes on the CPU, but y_pred is on gpu"):
        lbj._check_device(fake, "y_pred")
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    with pytest.raises(ValueError, match="on gpu"):
        jax.jit(lambda p: lbj.mse(jnp.zeros(2), p))(jnp.ones(2))


def test_bfloat16_and_errors():
    y, p = _inputs("mse", (16,))
    value, grad = jax.value_and_grad(lambda p: lbj.mse(y.astype(jnp.bfloat16), p))(
        p.astype(jnp.bfloat16))
    assert value.dtype == grad.dtype == jnp.bfloat16
    np.testing.assert_allclose(grad.astype(jnp.float32), 2 * (p - y) / 16, rtol=2e-2, atol=1e-2)
    # float32 labels beside it: float32, as JAX promotes (the gradient bfloat16, as y_pred)
    value, grad = jax.value_and_grad(lambda p: lbj.mse(y, p))(p.astype(jnp.bfloat16))
    assert value.dtype == jnp.float32 and grad.dtype == jnp.bfloat16
    # bfloat16 labels and weights beside a float32 y_pred: traced as eagerly (they were
    # refused as not real)
    half_y, weight = y.astype(jnp.bfloat16), jnp.linspace(0.5, 2.0, 16).astype(jnp.bfloat16)
    eager = lbj.mse(half_y, p, weight=weight)
    traced, grad = jax.jit(jax.value_and_grad(lambda p: lbj.mse(half_y, p, weight=weight)))(p)
    assert traced.dtype == jnp.float32 and traced == eager
    exact = (y.astype(jnp.bfloat16).astype(jnp.float32), weight.astype(jnp.float32))
    np.testing.assert_allclose(grad, 2 * exact[1] * (p - exact[0]) / 16, rtol=1e-6)
    labels = jnp.array([0, 2])
    np.testing.assert_allclose(
        jax.jit(lambda x: lbj.cross_entropy(labels, x, class_weight=jnp.ones(3, jnp.bfloat16)))(
            jnp.ones((2, 3))), np.log(3), rtol=1e-6)
    with pytest.raises(TypeError, match="no backend= or out="):
        lbj.mse(y, p, out=p)
    # optax's order (logits, labels): the message says so, as the plain API's does
    with pytest.raises(TypeError, match=r"y_pred has dtype int32; pass a floating array .*; "
                                        r"y_pred holds integers: is it the labels\? the order "
                                        r"is \(y_true, y_pred\)"):
        lbj.cross_entropy(jnp.ones((4, 3)), jnp.array([0, 1, 2, 0]))
    # a complex y_pred is not the labels: no such hint (a review found it given)
    with pytest.raises(TypeError, match=r"y_pred has dtype complex64; pass a floating array "
                                        r"\(JAX differentiates floats only: "
                                        r"y_pred\.astype\(jnp\.float32\)\)$"):
        lbj.mse(jnp.ones(3), jnp.array([1 + 1j, 2, 3], jnp.complex64))
    # an unknown option: the options listed are this module's (no backend=), traced or not
    for call in (lambda y, p: lbj.huber(y, p, detla=1.0),
                 jax.jit(lambda y, p: lbj.huber(y, p, detla=1.0))):
        with pytest.raises(TypeError, match=r"'detla'; its options are weight, delta and reduction(\n|$)"):
            call(y, p)
    with pytest.raises(TypeError, match="floating"):
        lbj.mse(y, jnp.arange(16))


# --- the rest of the catalogue, against jax.grad of jax.numpy references


def _focal(y, x, alpha, gamma):
    p = jax.nn.sigmoid(x)
    ce = y * jax.nn.softplus(-x) + (1 - y) * jax.nn.softplus(x)
    losses = ce * (p * (1 - y) + (1 - p) * y) ** gamma
    return losses if alpha is None else losses * (alpha * y + (1 - alpha) * (1 - y))


MORE_REFERENCES = {  # name: (options, per-element loss of (y, p, **options))
    "mae": ({}, lambda y, p: jnp.abs(p - y)),
    "huber": ({"delta": 0.7}, lambda y, p, delta: jnp.where(
        jnp.abs(p - y) <= delta, (p - y) ** 2 / 2, delta * (jnp.abs(p - y) - delta / 2))),
    "smooth_l1": ({"beta": 0.5}, lambda y, p, beta: jnp.where(
        jnp.abs(p - y) < beta, (p - y) ** 2 / (2 * beta), jnp.abs(p - y) - beta / 2)),
    "log_cosh": ({}, lambda y, p: jnp.log(jnp.cosh(p - y))),
    "squared_hinge": ({"margin": 0.5}, lambda y, p, margin: jnp.maximum(0, margin - y * p) ** 2),
    "soft_margin": ({}, lambda y, p: jax.nn.softplus(-y * p)),
    "sigmoid_focal": ({"alpha": 0.3, "gamma": 1.5}, _focal),
    "poisson_nll": ({}, lambda y, p: jnp.exp(p) - y * p),
    "kl_div": ({}, lambda y, p: jax.scipy.special.xlogy(y, y) - y * p),
    "pinball": ({"quantile": 0.8}, lambda y, p, quantile: quantile * jnp.maximum(y - p, 0)
                + (1 - quantile) * jnp.maximum(p - y, 0)),
}


def _more_inputs(name, shape):
    rng = np.random.default_rng(5)
    p = rng.normal(0, 1.5, shape)
    if name in ("squared_hinge", "soft_margin"):
        y = np.where(rng.random(shape) < 0.5, -1.0, 1.0)
    elif name == "sigmoid_focal":
        y = (rng.random(shape) < 0.5).astype(float)
    elif name == "poisson_nll":
        y = rng.integers(0, 5, shape).astype(float)
    elif name == "kl_div":
        y = rng.dirichlet(np.ones(shape[-1]), shape[:-1])
        p = np.log(rng.dirichlet(np.ones(shape[-1]), shape[:-1]))
    else:
        y = rng.normal(0, 1.5, shape)
    return jnp.asarray(y, jnp.float32), jnp.asarray(p, jnp.float32)


@pytest.mark.parametrize("name", MORE_REFERENCES)
def test_catalogue(name):
    """Every reduction's value under jit and its VJP with a random cotangent, with a weight
    for "sum" (for one loss: the weight's way through the wrapper is every loss's, and each
    loss's weighted kernels are checked in test_more_losses); jit(vmap(grad)) against the
    reference's vmap(grad)."""
    options, per_element = MORE_REFERENCES[name]
    y, p = _more_inputs(name, (6, 4))
    weight = jnp.asarray(np.random.default_rng(9).uniform(0.5, 2, 4), jnp.float32)
    for reduction in ("mean", "sum", "none"):
        extra = {"weight": weight} if reduction == "sum" and name == "huber" else {}

        def reference(p, reduction=reduction, extra=extra):
            losses = per_element(y, p, **options) * extra.get("weight", 1.0)
            return _reduce(losses, reduction)

        _check(lambda p, reduction=reduction, extra=extra: getattr(lbj, name)(
            y, p, reduction=reduction, **options, **extra), reference, p, reduction,
            jit_grad=False)  # jit(vmap(grad)) below
    per_row = jax.jit(jax.vmap(jax.grad(lambda p, y: getattr(lbj, name)(y, p, **options))))(p, y)
    expected = jax.jit(jax.vmap(jax.grad(lambda p, y: jnp.mean(per_element(y, p, **options)))))(
        p, y)
    np.testing.assert_allclose(per_row, expected, rtol=2e-5, atol=1e-6)


def test_arguments_checked_while_tracing():
    """Bad shapes, dtypes and options raise the plain API's ValueError/TypeError while
    tracing (not a JaxRuntimeError from inside the callback)."""
    p = jnp.ones((3, 4))
    with pytest.raises(ValueError, match=r"y_true has shape \(3,\) but y_pred has shape"):
        jax.jit(lambda p: lbj.mse(jnp.zeros(3), p))(p)
    with pytest.raises(ValueError, match="delta must be in"):
        jax.jit(lambda p: lbj.huber(jnp.zeros((3, 4)), p, delta=-1.0))(p)
    with pytest.raises(ValueError, match="weight has shape"):
        jax.grad(lambda p: lbj.mae(jnp.zeros((3, 4)), p, weight=jnp.ones(3)))(p)
    with pytest.raises(ValueError, match="class_weight has shape"):
        jax.jit(lambda p: lbj.cross_entropy(jnp.zeros(3, int), p, class_weight=jnp.ones(3)))(p)
    with pytest.raises(TypeError, match="must be Python numbers"):
        jax.jit(lambda p, d: lbj.huber(jnp.zeros((3, 4)), p, delta=d))(p, 1.0)
    # the option alone traced, the arrays concrete: the same error (the plain call's said
    # that it takes no tracers, as if the user had not called lossbackends.jax)
    with pytest.raises(TypeError, match=r"must be Python numbers.*\(delta is traced\)"):
        jax.grad(lambda d: lbj.huber(jnp.zeros((3, 4)), p, delta=d))(1.0)
    with pytest.raises(TypeError, match="must be True or False"):
        jax.jit(lambda p: lbj.poisson_nll(jnp.zeros((3, 4)), p, full=1))(p)


def test_a_backend_that_cannot_compute_raises_while_tracing():
    """A backend chosen by use_backend that cannot compute host arrays (cupy) raises the
    plain call's ValueError while tracing, not an error from inside the callback."""
    import lossbackends as lb

    p, labels = jnp.ones((4, 3)), jnp.array([0, 1, 2, 0])
    with lb.use_backend("cupy"):
        for call in (lambda: jax.jit(lambda q: lbj.cross_entropy(labels, q))(p),
                     lambda: jax.grad(lambda q: lbj.mse(jnp.zeros(3), q))(p[0]),
                     lambda: lbj.mse(jnp.zeros(3), p[0])):  # (the plain call's, as it was)
            with pytest.raises(ValueError, match="backend 'cupy'"):
                call()


def test_python_floats_are_differentiated():
    """A Python float as y_pred under an eager jax.grad / value_and_grad / vjp (it reached
    the forward as JAX's typed float, without a shape: AttributeError; a review's
    finding)."""
    f = lambda p: lbj.mse(1.0, p)  # noqa: E731
    assert float(jax.grad(f)(3.0)) == 4.0
    value, grad = jax.value_and_grad(f)(3.0)
    assert (float(value), float(grad)) == (4.0, 4.0)
    assert float(jax.vjp(f, 3.0)[1](1.0)[0]) == 4.0
    assert float(jax.grad(lambda p: lbj.huber(0.5, p, weight=2.0))(3.0)) == 2.0


def test_a_new_option_value_reuses_the_jax_function():
    """A float option is an operand of one custom VJP and callback per loss and structure,
    not part of their key: JAX keeps each callback's compiled state for good (a sweep of
    500 huber deltas under an un-jitted jax.grad grew by ~760 MB). Its value reaches the
    host exactly (not rounded to float32): the traced call equals the plain one."""
    y = np.random.default_rng(2).normal(size=(4, 3)).astype(np.float32)
    p = jnp.asarray(np.random.default_rng(3).normal(size=(4, 3)), jnp.float32)
    cases = {  # name: (y_true, the options of a value v)
        "huber": (y, lambda v: {"delta": v}),
        "pinball": (y, lambda v: {"quantile": v, "reduction": "sum"}),
        "sigmoid_focal": ((y > 0).astype(np.float32), lambda v: {"gamma": v + 1, "alpha": None}),
        "cross_entropy": (np.array([0, 2, 1, 2]), lambda v: {"label_smoothing": v / 3}),
    }
    for name, (y_true, options) in cases.items():
        def loss(q, v, name=name, y_true=y_true, options=options):
            return getattr(lbj, name)(y_true, q, **options(v))

        jax.grad(loss)(p, 0.5)
        size = lbj._function.cache_info().currsize
        for value in (0.1, 0.30000000000000004, 0.7):
            expected = LOSSES[name].value_and_grad(y_true, np.asarray(p), **options(value))
            assert jax.jit(loss, static_argnums=1)(p, value) == expected[0], name
            np.testing.assert_array_equal(jax.grad(loss)(p, value), expected[1], err_msg=name)
        assert lbj._function.cache_info().currsize == size, name


def test_bad_label_raises_when_nothing_is_traced():
    x = jnp.asarray(np.random.default_rng(4).normal(size=(3, 4)), jnp.float32)
    t = jnp.array([1, 9, 2])
    for loss in (lbj.cross_entropy, lbj.multiclass_hinge):
        with pytest.raises(ValueError, match=r"y_true\[1\] = 9"):
            loss(t, x)
    with pytest.warns(RuntimeWarning, match=r"y_true\[1\] = 9"):  # traced: NaN rows
        losses = np.asarray(jax.jit(lambda x: lbj.multiclass_hinge(t, x, reduction="none"))(x))
        grad = np.asarray(jax.jit(jax.grad(lambda x: lbj.multiclass_hinge(t, x,
                                                                          reduction="sum")))(x))
    assert np.isnan(losses[1]) and np.isfinite(losses[[0, 2]]).all()
    assert np.isnan(grad[1]).all() and np.isfinite(grad[[0, 2]]).all()
    value = lbj.mse(jnp.zeros(3), jnp.ones(3))  # an eager call's value: a JAX array
    assert isinstance(value, jax.Array) and float(value) == 1.0


def test_second_derivatives_are_a_clear_error():
    y, p = jnp.zeros(3), jnp.array([0.5, -1.0, 2.0])
    f = lambda q: lbj.mse(y, q)  # noqa: E731
    np.testing.assert_allclose(jax.jacrev(f)(p), 2 * p / 3, rtol=1e-6)
    for transform in (jax.hessian, lambda g: jax.grad(lambda q: jax.grad(g)(q).sum()),
                      lambda g: jax.jit(jax.jacrev(jax.grad(g)))):
        with pytest.raises(TypeError, match="first derivatives only"):
            transform(f)(p)
    with pytest.raises(TypeError, match="first derivatives only"):  # through a weight too
        jax.grad(lambda a: jax.grad(lambda q: lbj.mse(y, q, weight=a * jnp.ones(3)))(p).sum())(1.0)


def test_differentiating_y_true_or_a_weight_is_an_error():
    """Only y_pred is differentiated: a differentiated y_true, weight, class_weight or
    pos_weight raises while tracing, naming stop_gradient (it was a silent zero
    gradient); under stop_gradient, or constant, y_pred's gradient is as before."""
    y, p, w = jnp.array([0.0, 1.0, 3.0]), jnp.array([0.5, -1.0, 2.0]), jnp.array([1.0, 2.0, 0.5])
    logits, labels = jnp.array([[2.0, 1.0, 0.1], [0.5, 0.2, 3.0]]), jnp.array([0, 2])
    for call, key, argument in (
            (lambda t: lbj.mse(t, p), "y_true", y),
            (lambda t: lbj.mse(y, p, weight=t), "weight", w),
            (lambda t: lbj.huber(y, p, delta=0.5, weight=t), "weight", w),  # a float option too
            (lambda t: lbj.binary_cross_entropy_with_logits(y / 3, p, pos_weight=t), "pos_weight",
             w),
            (lambda t: lbj.cross_entropy(labels, logits, class_weight=t), "class_weight", w),
            (lambda t: lbj.cross_entropy(jax.nn.softmax(t), logits), "y_true", logits)):
        for transform in (jax.grad, lambda f: jax.jit(jax.grad(f))):
            with pytest.raises(ValueError, match=rf"{key} is differentiated, .* y_pred only "
                               rf".* jax.lax.stop_gradient\({key}\)"):
                transform(call)(argument)
    with pytest.raises(ValueError, match="y_true is differentiated"):  # both from p
        jax.grad(lambda q: lbj.mse(2 * q, q))(p)
    expected = 2 * (p - 2 * p) / 3  # y_true = 2 p, a constant under stop_gradient
    np.testing.assert_allclose(jax.grad(lambda q: lbj.mse(jax.lax.stop_gradient(2 * q), q))(p),
                               expected, rtol=1e-6)
    np.testing.assert_allclose(jax.grad(lambda q: lbj.mse(y, q, weight=w))(p),
                               2 * w * (p - y) / 3, rtol=1e-6)
    # the value unused by what is differentiated: a zero gradient, no error
    np.testing.assert_array_equal(jax.grad(lambda q: (lbj.mse(y, q), q.sum())[1])(p), 1.0)


def test_docstrings_are_jax_s_own():
    """Each function's docstring has its own JAX example and links the plain loss's page
    for the formulas, instead of repeating its NumPy docstring."""
    for name in lbj.__all__:
        doc = getattr(lbj, name).__doc__
        assert doc.startswith(f":obj:`lossbackends.{name}` as a JAX function")
        assert f"lbj.{name}(y, q" in doc and "lb." not in doc


def test_mixed_float_dtypes_promote_as_jax_does():
    """With jax_enable_x64, a float64 y_true and a float32 y_pred compute in float64, as
    the loss written in jax.numpy does; y_pred's gradient is float32 (JAX's cast back)."""
    enabled = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        rng = np.random.default_rng(5)
        y = jnp.asarray(rng.normal(size=7))  # float64
        p = jnp.asarray(rng.normal(size=7), jnp.float32)

        def reference(q):
            return jnp.mean((y - q) ** 2)

        for f in (lambda q: lbj.mse(y, q), jax.jit(lambda q: lbj.mse(y, q))):
            value, grad = jax.value_and_grad(f)(p)
            expected_value, expected_grad = jax.value_and_grad(reference)(p)
            assert value.dtype == jnp.float64 and grad.dtype == jnp.float32
            np.testing.assert_allclose(value, expected_value, rtol=1e-14)
            np.testing.assert_allclose(grad, expected_grad, rtol=1e-6)
        # the weights take part; a Python number is weak (float32 stays float32)
        w = jnp.asarray(rng.uniform(0.5, 2, size=7))  # float64
        y32 = y.astype(jnp.float32)
        for weight, dtype in ((w, jnp.float64), (2.0, jnp.float32)):
            def weighted(q, weight=weight, dtype=dtype):  # (jnp's differences in float32)
                return jnp.mean(weight * (y32.astype(dtype) - q.astype(dtype)) ** 2)

            def ours(q, weight=weight):
                return lbj.mse(y32, q, weight=weight)

            for f in (ours, jax.jit(ours)):
                value, grad = jax.value_and_grad(f)(p)
                expected_value, expected_grad = jax.value_and_grad(weighted)(p)
                assert value.dtype == dtype == expected_value.dtype and grad.dtype == jnp.float32
                np.testing.assert_allclose(value, expected_value, rtol=1e-14 if dtype == jnp.float64 else 1e-6)
                np.testing.assert_allclose(grad, expected_grad, rtol=1e-6)
    finally:
        jax.config.update("jax_enable_x64", enabled)


def test_the_backend_is_the_one_of_the_trace(monkeypatch):
    """The callback computes on the backend that applied when the call was traced: JAX may
    run it on a thread of its own, outside the caller's use_backend block (where the
    backend fell back to the default at random, found by a concurrency test), and a
    jitted function keeps its trace's backend."""
    import lossbackends as lb
    from lossbackends import _dispatch

    seen = []  # the backends whose kernel ran
    for backend in lb.available_backends():
        kernel = _dispatch.kernel_for("log_cosh", backend)

        def spy(*args, kernel=kernel, backend=backend, **kwargs):
            seen.append(backend)
            return kernel(*args, **kwargs)

        monkeypatch.setitem(_dispatch._REGISTRY, ("log_cosh", backend), spy)
    monkeypatch.setattr(_dispatch, "_ROUTES", {})  # routes remember their kernel
    g = jax.jit(jax.grad(lambda q, y: lbj.log_cosh(y, q)))
    y, q = jnp.zeros(64), jnp.linspace(-2.0, 2.0, 64)
    with lb.use_backend("numpy"):
        expected = g(q, y)
    outside = g(q, y)  # the same trace, outside the block
    assert seen and set(seen) == {"numpy"}
    np.testing.assert_array_equal(outside, expected)
    np.testing.assert_array_equal(
        expected, lb.log_cosh.grad(np.zeros(64), np.asarray(q), backend="numpy"))


_THREADED_TRAINING = """
import faulthandler, sys
faulthandler.dump_traceback_later(100, exit=True)  # the threads' stacks, should it hang
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_cpu_enable_async_dispatch", False)  # before any JAX computation
from concurrent.futures import ThreadPoolExecutor
import lossbackends.jax as lbj
n = 1 << 17  # inputs over 100 KiB: JAX copies them on its CPU client's workers
y = jnp.asarray(np.random.default_rng(0).standard_normal(n), jnp.float32)
step = jax.jit(jax.value_and_grad(lambda p: lbj.mse(y, p)))
def train(seed):
    p = jnp.full(n, float(seed), jnp.float32)
    for _ in range(20):
        value, grad = step(p)
        p = p - 0.5 * n * grad  # each step's input not yet ready when dispatched
    return float(lbj.mse(y, p))
with ThreadPoolExecutor(4) as pool:
    print(max(pool.map(train, range(4))))
"""


def test_threads_with_async_dispatch_off():
    """Training loops in four threads at once, with the workaround the guide gives for
    JAX's deadlock (async CPU dispatch off): they finish, with the right numbers. (With it
    on, two threads on 2 cores hung in jax.pure_callback's copies of the inputs.)"""
    env = {**os.environ, "LOSSBACKENDS_BACKEND": "numpy"}  # (the hang is the backend's too)
    out = subprocess.run([sys.executable, "-c", _THREADED_TRAINING], capture_output=True,
                         text=True, env=env, cwd=Path(__file__).parents[1], timeout=120)
    assert out.returncode == 0, out.stderr[-4000:]
    assert float(out.stdout) < 1e-10
