"""The second set of elementwise losses (the contract's "More losses") on every backend:
against the float64 reference, finite differences, the peers' own functions where they are
installed, options, errors, special values."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import _skip_reason, examples, host, on
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import elementwise as ew_reference

import lossbackends as lb

NEW = ("mae", "huber", "smooth_l1", "log_cosh", "squared_hinge", "soft_margin", "sigmoid_focal",
       "poisson_nll", "kl_div", "pinball")
REDUCTIONS = ("mean", "sum", "none")
TOLERANCE = {np.float64: 1e-10, np.float32: 2e-5, np.float16: 2e-2}

# options each loss is tried with (the first: its defaults)
OPTIONS = {
    "mae": [{}],
    "huber": [{}, {"delta": 0.3}, {"delta": 2.5}],
    "smooth_l1": [{}, {"beta": 0.0}, {"beta": 0.4}],
    "log_cosh": [{}],
    "squared_hinge": [{}, {"margin": 0.5}],
    "soft_margin": [{}],
    "sigmoid_focal": [{}, {"alpha": None}, {"gamma": 0.0}, {"gamma": 1.5, "alpha": 0.6},
                      {"gamma": 3.0}, {"gamma": 0.5}],
    "poisson_nll": [{}, {"full": True}, {"log_input": False},
                    {"log_input": False, "full": True, "eps": 1e-3}],
    "kl_div": [{}, {"log_target": True}],
    "pinball": [{}, {"quantile": 0.1}, {"quantile": 0.95}],
}


def inputs(loss, rng, shape, dtype, options=None):
    """(y_true, y_pred) in each loss's domain."""
    options = options or {}
    if loss in ("squared_hinge", "soft_margin"):
        y, p = np.where(rng.random(shape) < 0.5, -1.0, 1.0), rng.normal(0, 2, shape)
    elif loss == "sigmoid_focal":
        y = rng.random(shape) < 0.5 if rng.random() < 0.5 else rng.random(shape)
        p = rng.normal(0, 3, shape)
    elif loss == "poisson_nll":
        y = rng.poisson(2.0, shape).astype(np.float64)
        p = rng.normal(0, 1, shape) if options.get("log_input", True) else rng.uniform(0.05, 4, shape)
    elif loss == "kl_div":
        y = rng.dirichlet(np.ones(shape[-1]), shape[:-1]) if len(shape) > 1 else rng.random(shape)
        y = np.where(rng.random(shape) < 0.1, 0.0, y)
        if options.get("log_target"):
            with np.errstate(divide="ignore"):
                y = np.log(y)
        p = np.log(rng.uniform(0.01, 1, shape))
    else:
        y, p = rng.normal(0, 1.5, shape), rng.normal(0, 1.5, shape)
    return np.asarray(y, np.float64).astype(dtype), p.astype(dtype)


def _close(actual, expected, dtype, scale):
    tol = TOLERANCE[dtype]
    np.testing.assert_allclose(host(actual).astype(np.float64), expected, rtol=tol,
                               atol=tol * scale)


shapes = st.one_of(st.integers(1, 700).map(lambda n: (n,)),
                   st.tuples(st.integers(1, 20), st.integers(1, 40)))


@pytest.mark.parametrize("loss", NEW)
@given(shape=shapes, seed=st.integers(0, 2**32 - 1), reduction=st.sampled_from(REDUCTIONS),
       dtype=st.sampled_from([np.float32, np.float64]), weighted=st.booleans(),
       option=st.integers(0, 5))
@settings(max_examples=examples(20), deadline=None)
def test_matches_reference(backend, loss, shape, seed, reduction, dtype, weighted, option):
    # Each (loss variant, dtype, weighted, op) is a kernel Numba compiles (seconds each on
    # CI's cold cache): on Numba, weights in float64 only and the value alone and gradient
    # alone unweighted; the weighted loop is the same code for every loss (test_losses
    # covers it in float32). Options other than the defaults may pick a kernel of their own
    # (an integer gamma, poisson_nll's flags): on Numba those run value_and_grad alone
    sparing = backend == "numba"
    weighted = weighted and not (sparing and dtype == np.float32)
    rng = np.random.default_rng(seed)
    defaults = option % len(OPTIONS[loss]) == 0
    options = OPTIONS[loss][option % len(OPTIONS[loss])]
    y, p = inputs(loss, rng, shape, dtype, options)
    weight = rng.uniform(0, 2, shape[-1:]).astype(dtype) if weighted else None
    function = getattr(lb, loss)
    args = (on(backend, y), on(backend, p))
    kwargs = {"reduction": reduction, "weight": on(backend, weight), "backend": backend, **options}
    value, grad = function.value_and_grad(*args, **kwargs)
    expected_value, expected_grad = ew_reference(loss, y, p, reduction=reduction, weight=weight,
                                                 **options)
    assert host(value).dtype == dtype and host(grad).dtype == dtype and grad.shape == p.shape
    if reduction == "none":
        assert value.shape == p.shape
    # errors relative to the size of the terms: |value| + 1 for a sum, the largest element
    # otherwise; a gradient's to its largest element, or one element's weight and scale
    value_scale = (float(np.max(np.abs(expected_value), initial=1.0)) if reduction == "none"
                   else float(np.abs(expected_value)) + 1.0)
    unit = (float(np.max(weight)) if weighted else 1.0) / (p.size if reduction == "mean" else 1)
    grad_scale = max(float(np.max(np.abs(expected_grad))), unit)
    _close(value, expected_value, dtype, value_scale)
    _close(grad, expected_grad, dtype, grad_scale)
    if sparing and (weighted or not defaults):
        return
    # value alone and gradient alone: what the fused call gives
    _close(function(*args, **kwargs), host(value).astype(np.float64), dtype, value_scale)
    _close(function.grad(*args, **kwargs), host(grad).astype(np.float64), dtype, grad_scale)


def _fd_inputs(loss, options):
    """float64 inputs away from each loss's kinks, where finite differences hold."""
    rng = np.random.default_rng(31)
    y, p = inputs(loss, rng, (3, 5), np.float64, options)
    if loss in ("mae", "pinball", "huber", "smooth_l1"):
        e = p - y
        kinks = [0.0]
        if loss == "huber":
            kinks += [options.get("delta", 1.0), -options.get("delta", 1.0)]
        if loss == "smooth_l1":
            kinks += [options.get("beta", 1.0), -options.get("beta", 1.0)]
        for kink in kinks:
            p = np.where(np.abs(e - kink) < 0.05, p + 0.2, p)
            e = p - y
    if loss == "squared_hinge":
        p = np.where(np.abs(options.get("margin", 1.0) - y * p) < 0.05, p + 0.2 * y, p)
    return y, p


@pytest.mark.parametrize("loss,options", [(loss, o) for loss in NEW for o in OPTIONS[loss]])
def test_gradient_matches_finite_differences(backend, loss, options):
    y, p = _fd_inputs(loss, options)
    weight = np.random.default_rng(5).uniform(0.5, 2, p.shape)
    function = getattr(lb, loss)
    kwargs = {"weight": on(backend, weight), "backend": backend, **options}
    # on Numba, options other than the defaults run value_and_grad alone, as in
    # test_matches_reference (their own kernels, compiled once for both tests)
    fused = backend == "numba" and options != OPTIONS[loss][0]

    def losses(q):  # every element's own loss: one call gives every partial derivative
        q = on(backend, q)
        if fused:
            return host(function.value_and_grad(on(backend, y), q, reduction="none", **kwargs)[0])
        return host(function(on(backend, y), q, reduction="none", **kwargs))

    def gradient(reduction):
        call = function.value_and_grad if fused else function.grad
        result = call(on(backend, y), on(backend, p), reduction=reduction, **kwargs)
        return host(result[1] if fused else result)

    h = 1e-6 * np.maximum(1.0, np.abs(p))
    numeric = (losses(p + h) - losses(p - h)) / (2 * h)
    for reduction, scale in (("none", 1.0), ("sum", 1.0), ("mean", 1.0 / p.size)):
        grad = gradient(reduction)
        np.testing.assert_allclose(grad, numeric * scale, rtol=1e-6, atol=1e-8 * scale)


# --- the peers themselves ----------------------------------------------------------------


def _torch_case(loss, options, y, p):
    """(torch's loss, d loss / d input) of ``mean`` reduction, from torch's own functions."""
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    x = torch.tensor(p, requires_grad=True)
    t = torch.tensor(y)
    if loss == "mae":
        value = functional.l1_loss(x, t)
    elif loss == "huber":
        value = functional.huber_loss(x, t, delta=options.get("delta", 1.0))
    elif loss == "smooth_l1":
        value = functional.smooth_l1_loss(x, t, beta=options.get("beta", 1.0))
    elif loss == "soft_margin":
        value = functional.soft_margin_loss(x, t)
    elif loss == "poisson_nll":
        value = functional.poisson_nll_loss(x, t, **options)
    elif loss == "kl_div":
        value = functional.kl_div(x, t, reduction="mean", **options)
    elif loss == "sigmoid_focal":
        # torchvision's sigmoid_focal_loss, written out (torchvision is not a dependency)
        alpha, gamma = options.get("alpha", 0.25), options.get("gamma", 2.0)
        prob = torch.sigmoid(x)
        ce = functional.binary_cross_entropy_with_logits(x, t, reduction="none")
        p_t = prob * t + (1 - prob) * (1 - t)
        terms = ce * ((1 - p_t) ** gamma)
        if alpha is not None and alpha >= 0:
            terms = (alpha * t + (1 - alpha) * (1 - t)) * terms
        value = terms.mean()
    else:
        raise KeyError(loss)
    value.backward()
    return value.item(), x.grad.numpy()


TORCH_CASES = [(loss, o) for loss in ("mae", "huber", "smooth_l1", "soft_margin", "poisson_nll",
                                      "kl_div", "sigmoid_focal") for o in OPTIONS[loss]]


@pytest.mark.filterwarnings("ignore:reduction. .mean. divides:UserWarning")  # torch kl_div
@pytest.mark.parametrize("loss,options", TORCH_CASES)
def test_agrees_with_torch(backend, loss, options):
    rng = np.random.default_rng(17)
    y, p = inputs(loss, rng, (6, 50), np.float64, options)
    if loss == "kl_div" and options.get("log_target"):
        y = np.maximum(y, -30.0)  # torch's exp(-inf) (-inf - x) is NaN; ours 0 (see below)
    expected_value, expected_grad = _torch_case(loss, options, y, p)
    value, grad = getattr(lb, loss).value_and_grad(on(backend, y), on(backend, p), backend=backend,
                                                   **options)
    np.testing.assert_allclose(host(value), expected_value, rtol=1e-12)
    np.testing.assert_allclose(host(grad), expected_grad, rtol=1e-10, atol=1e-17)


@pytest.mark.parametrize("loss", ["log_cosh", "huber", "hinge"])
def test_agrees_with_optax(backend, loss):
    optax = pytest.importorskip("optax")
    jax = pytest.importorskip("jax")
    x64 = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        _agrees_with_optax(backend, loss, optax, jax)
    finally:
        jax.config.update("jax_enable_x64", x64)


def _agrees_with_optax(backend, loss, optax, jax):
    rng = np.random.default_rng(18)
    y, p = rng.normal(0, 3, 300), rng.normal(0, 3, 300)
    if loss == "hinge":  # labels -1 and +1, scores off the kink y p = 1
        y = np.where(y < 0, -1.0, 1.0)
        p = np.where(np.abs(1.0 - y * p) < 0.05, p + 0.2 * y, p)
    for options in OPTIONS.get(loss, [{}]):
        delta = options.get("delta", 1.0)

        def peer(q, delta=delta):
            if loss == "log_cosh":
                return optax.losses.log_cosh(q, y)
            if loss == "hinge":
                return optax.losses.hinge_loss(q, y)
            return optax.losses.huber_loss(q, y, delta=delta)
        expected_value = np.asarray(peer(p))
        expected_grad = np.asarray(jax.grad(lambda q: peer(q).sum())(p))
        value, grad = getattr(lb, loss).value_and_grad(on(backend, y), on(backend, p),
                                                       reduction="none", backend=backend, **options)
        np.testing.assert_allclose(host(value), expected_value, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(host(grad), expected_grad, rtol=1e-12, atol=1e-15)


def test_pinball_agrees_with_scikit_learn(backend):
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(19)
    y, p = rng.normal(size=500), rng.normal(size=500)
    for quantile in (0.5, 0.1, 0.95, 0.0, 1.0):
        expected = metrics.mean_pinball_loss(y, p, alpha=quantile)
        value = lb.pinball(on(backend, y), on(backend, p), quantile=quantile, backend=backend)
        np.testing.assert_allclose(host(value), expected, rtol=1e-12)
    # scikit-learn's sample_weight averages by the weights' sum; ours divides by n
    w = rng.uniform(0.5, 2, 500)
    expected = metrics.mean_pinball_loss(y, p, alpha=0.3, sample_weight=w) * w.sum() / w.size
    value = lb.pinball(on(backend, y), on(backend, p), quantile=0.3, weight=on(backend, w),
                       backend=backend)
    np.testing.assert_allclose(host(value), expected, rtol=1e-12)


def test_squared_hinge_agrees_with_keras_definition(backend):
    # keras.losses.squared_hinge: mean(square(maximum(1 - y_true * y_pred, 0)), axis=-1),
    # written out (Keras is not installed); its mean over the last axis, averaged over rows
    rng = np.random.default_rng(20)
    y = np.where(rng.random((8, 30)) < 0.5, -1.0, 1.0)
    p = rng.normal(0, 1.5, (8, 30))
    expected = np.mean(np.mean(np.square(np.maximum(1.0 - y * p, 0.0)), axis=-1))
    np.testing.assert_allclose(host(lb.squared_hinge(on(backend, y), on(backend, p),
                                                     backend=backend)), expected, rtol=1e-12)


# --- the limits the formulas are written for ----------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_focal_gradient_is_finite_for_every_finite_logit(backend, dtype):
    big = np.finfo(dtype).max
    x = np.array([-big, -1e4, -200.0, -88.0, -30.0, -1e-30, 0.0, 1e-30, 30.0, 88.0, 200.0, 1e4,
                  big], dtype)
    for labels in (np.zeros_like(x), np.ones_like(x), np.full_like(x, 0.3)):
        for options in OPTIONS["sigmoid_focal"]:
            value, grad = lb.sigmoid_focal.value_and_grad(
                on(backend, labels), on(backend, x), reduction="none", backend=backend, **options)
            assert np.isfinite(host(grad)).all(), (labels[0], options, host(grad))
            assert (host(value) >= 0).all()


@pytest.mark.parametrize("gamma", [2.0, 0.5])  # (by products, and by pow)
def test_focal_labels_beyond_0_and_1_follow_the_formula_and_its_derivatives(backend, gamma):
    """A label beyond [0, 1] (not checked: a pass over the labels) gives torchvision's
    formula as written and its derivatives; 1 - p_t is then negative for some logits,
    where a gamma that is not an integer gives NaN. (The gradient dropped its gamma term
    there: 0.0118 against 0.0510 at y = 2, x = 1.)"""
    x = np.array([1.0, -2.0, 0.3, 4.0, -0.7])
    for label in (2.0, -0.5, 1.25):
        y = np.full_like(x, label)
        p = 1.0 / (1.0 + np.exp(-x))
        ce = np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))
        with np.errstate(invalid="ignore"):
            expected = (0.25 * y + 0.75 * (1 - y)) * (1 - (p * y + (1 - p) * (1 - y)))**gamma * ce

        def value(at, y=y):
            return host(lb.sigmoid_focal(on(backend, y), on(backend, at), reduction="none",
                                         gamma=gamma, backend=backend))

        def grad(at, y=y):
            return host(lb.sigmoid_focal.grad(on(backend, y), on(backend, at), reduction="none",
                                              gamma=gamma, backend=backend))

        np.testing.assert_allclose(value(x), expected, rtol=1e-12, atol=1e-15)
        h = 1e-6
        g, hess = (host(a) for a in lb.sigmoid_focal.grad_and_hess(
            on(backend, y), on(backend, x), reduction="none", gamma=gamma, backend=backend))
        np.testing.assert_array_equal(np.isnan(g), np.isnan(expected))
        np.testing.assert_allclose(g, (value(x + h) - value(x - h)) / (2 * h), rtol=1e-6,
                                   atol=1e-9)
        np.testing.assert_allclose(hess, (grad(x + h) - grad(x - h)) / (2 * h), rtol=1e-6,
                                   atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_limits_at_infinity_and_nan(backend, dtype):
    """At an infinite prediction every loss has its limit (a label coefficient of 0 times
    inf is 0), the same on every backend; a NaN prediction gives a NaN loss."""
    inf = np.inf
    cases = {
        # loss: (y, p, expected loss, expected gradient)
        "mae": ([0.0, 0.0], [inf, -inf], [inf, inf], [1.0, -1.0]),
        "huber": ([0.0, 0.0], [inf, -inf], [inf, inf], [1.0, -1.0]),
        "smooth_l1": ([0.0, 0.0], [inf, -inf], [inf, inf], [1.0, -1.0]),
        "log_cosh": ([0.0, 0.0], [inf, -inf], [inf, inf], [1.0, -1.0]),
        "soft_margin": ([1.0, 1.0, -1.0], [inf, -inf, inf], [0.0, inf, inf], [0.0, -1.0, 1.0]),
        "sigmoid_focal": ([1.0, 0.0, 1.0, 0.0], [inf, -inf, -inf, inf],
                          [0.0, 0.0, inf, inf], [0.0, 0.0, -0.25, 0.75]),
        "poisson_nll": ([0.0, 2.0, 2.0], [-inf, -inf, inf], [0.0, inf, inf], [0.0, -2.0, inf]),
        "kl_div": ([0.0, 0.5], [-inf, -inf], [0.0, inf], [0.0, -0.5]),
        "pinball": ([0.0, 0.0], [inf, -inf], [inf, inf], [0.5, -0.5]),
    }
    for loss, (y, p, expected_value, expected_grad) in cases.items():
        y, p = np.array(y, dtype), np.array(p, dtype)
        value, grad = getattr(lb, loss).value_and_grad(on(backend, y), on(backend, p),
                                                       reduction="none", backend=backend)
        np.testing.assert_array_equal(host(value), np.array(expected_value, dtype), err_msg=loss)
        np.testing.assert_array_equal(host(grad), np.array(expected_grad, dtype), err_msg=loss)
    # the rate itself: x - y log(x + eps) -> inf (x outgrows the log), its gradient 1
    value, grad = lb.poisson_nll.value_and_grad(on(backend, np.array([0.0, 2.0, 7.5], dtype)),
                                                on(backend, np.full(3, inf, dtype)),
                                                log_input=False, reduction="none", backend=backend)
    np.testing.assert_array_equal(host(value), np.full(3, inf, dtype))
    np.testing.assert_array_equal(host(grad), np.ones(3, dtype))
    for loss in NEW:
        y, p = inputs(loss, np.random.default_rng(3), (40,), dtype)
        p[[0, 17, 39]] = np.nan
        value = host(getattr(lb, loss)(on(backend, y), on(backend, p), reduction="none",
                                       backend=backend))
        np.testing.assert_array_equal(np.isnan(value), np.isnan(p), err_msg=loss)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_absolute_error_gradient_at_a_zero_difference_is_plus_zero(backend, dtype):
    """sign(+-0) = +0 as NumPy's and PyTorch's: a difference of -0 gives the gradient +0 on
    every backend, in the vectorised body and the scalar tail (smooth_l1's e / beta keeps
    the sign, as PyTorch's); NaN stays NaN."""
    n = 37
    y = np.zeros(n, dtype)
    p = np.full(n, -0.0, dtype)
    p[5] = np.nan
    for reduction in ("sum", "mean", "none"):
        grad = host(lb.mae.grad(on(backend, y), on(backend, p), reduction=reduction,
                                backend=backend))
        np.testing.assert_array_equal(np.isnan(grad), np.isnan(p))
        assert not np.signbit(grad[~np.isnan(grad)]).any(), reduction


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_zero_losses_and_gradients_are_plus_zero(backend, dtype):
    """pinball at a tie and squared_hinge where the margin holds give +0, not -0 (the loss
    -quantile (p - y) and the gradient -2 t max(slack, 0) carried the sign of a zero), and
    pinball's gradient below the target at quantile 0 is +0; in the vectorised body and the
    scalar tail. (A user printing the gradient saw ``[ 0.  -0.  -0.2  0.4]``.)"""
    n = 37
    tie_y = np.resize(np.array([0.0, 1.0, -2.0, 0.0, -0.0], dtype), n)
    tie_p = np.resize(np.array([0.0, 1.0, -2.0, -0.0, 0.0], dtype), n)
    for quantile in (0.0, 0.5, 1.0):
        value, grad = (host(a) for a in lb.pinball.value_and_grad(
            on(backend, tie_y), on(backend, tie_p), quantile=quantile, reduction="none",
            backend=backend))
        assert not np.signbit(value).any() and not np.signbit(grad).any(), (quantile, value,
                                                                           grad)
    below = host(lb.pinball.grad(on(backend, np.ones(n, dtype)), on(backend, np.zeros(n, dtype)),
                                 quantile=0.0, reduction="none", backend=backend))
    assert (below == 0).all() and not np.signbit(below).any()
    y = np.resize(np.array([1.0, -1.0, 1.0, -1.0], dtype), n)
    p = np.resize(np.array([2.0, -2.0, 1.0, -1.0], dtype), n)  # the margin held, or at it
    grad = host(lb.squared_hinge.grad(on(backend, y), on(backend, p), reduction="none",
                                      backend=backend))
    assert (grad == 0).all() and not np.signbit(grad).any(), grad


@pytest.mark.parametrize("log_input", [True, False])
def test_poisson_limits_scattered_through_a_parallel_input(backend, log_input):
    """Finite limits among ordinary elements of an input the parallel kernels split (a
    label of 0 at x = -inf, or at a rate whose x + eps is 0: 0 inf = 0): the value is the
    sum of the others, and each such loss its limit, with and without weights (the Numba
    kernels take these limits only in a block whose sum came out NaN)."""
    rng = np.random.default_rng(12)
    n, eps = 140_000, 0.25
    y = rng.poisson(2.0, n).astype(np.float32)
    p = (rng.standard_normal(n) if log_input else rng.uniform(0.1, 4.0, n)).astype(np.float32)
    at = rng.choice(n, 40, replace=False)
    y[at], p[at] = 0.0, (-np.inf if log_input else -eps)
    limit = 0.0 if log_input else -eps
    weight = rng.uniform(0.5, 2.0, n).astype(np.float32)
    others = np.ones(n, bool)
    others[at] = False
    for w in (None, weight):
        options = {"log_input": log_input, "eps": eps, "weight": None if w is None else on(backend, w)}
        losses = host(lb.poisson_nll(on(backend, y), on(backend, p), reduction="none",
                                     backend=backend, **options))
        expected = np.float32(limit) * (np.ones(at.size, np.float32) if w is None else w[at])
        np.testing.assert_array_equal(losses[at], expected)
        value, grad = lb.poisson_nll.value_and_grad(on(backend, y), on(backend, p),
                                                    reduction="sum", backend=backend, **options)
        ordinary = ew_reference("poisson_nll", y[others], p[others], reduction="sum",
                                weight=None if w is None else w[others], log_input=log_input,
                                eps=eps)[0]
        np.testing.assert_allclose(host(value), ordinary + float(np.sum(expected)), rtol=2e-6)
        assert np.isfinite(host(grad)).all()
        # in place (out=y_pred): the limits read y_pred before its gradient is written over it
        written = on(backend, p.copy())
        in_place = lb.poisson_nll.value_and_grad(on(backend, y), written, out=written,
                                                 reduction="sum", backend=backend, **options)
        assert host(in_place[0]) == host(value)
        np.testing.assert_array_equal(host(written), host(grad))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_poisson_log_rates_where_exp_is_not_normal(backend, dtype):
    """A log-rate beyond +-87 (exp(x) near float32's overflow, past it, or subnormal), one
    at a time among ordinary ones of an input the parallel kernels split: its loss and
    gradient the float64 reference's, the others' the same bits as without it, and the
    gradient the same bits from ``grad``, ``value_and_grad`` and ``grad_and_hess`` (the
    Numba kernels' first form takes exp(x) only for |x| <= 87, and from a block holding
    another x its twin runs; ``grad`` runs the twin throughout)."""
    rng = np.random.default_rng(13)
    n, at = 140_000, 70_003  # (the middle of a block, not the first chunk's)
    y = rng.poisson(2.0, n).astype(dtype)
    x = rng.standard_normal(n).astype(dtype)
    alone = [host(r) for r in lb.poisson_nll.value_and_grad(
        on(backend, y), on(backend, x), reduction="none", backend=backend)]
    others = np.arange(n) != at
    # (in float32: 88.5 and 88.7 normal, 88.8 and beyond inf; -87.5 to -103 subnormal)
    for v in (87.0, -87.0, 87.5, -87.5, 88.5, 88.7, 88.8, -95.0, -103.0, -104.5, 200.0, -200.0):
        for label in (0.0, 3.0):
            x[at], y[at] = v, label
            value, grad = (host(r) for r in lb.poisson_nll.value_and_grad(
                on(backend, y), on(backend, x), reduction="none", backend=backend))
            expected = ew_reference("poisson_nll", y[at], x[at], reduction="none")
            with np.errstate(over="ignore"):  # (float32's rounding of the reference)
                for got, want in zip((value[at], grad[at]), expected, strict=True):
                    np.testing.assert_allclose(
                        got, np.asarray(want).astype(dtype), rtol=4 * np.finfo(dtype).eps,
                        atol=2 * float(np.finfo(dtype).smallest_subnormal), err_msg=(v, label))
            np.testing.assert_array_equal(value[others], alone[0][others])
            np.testing.assert_array_equal(grad[others], alone[1][others])
            gradient_alone = host(lb.poisson_nll.grad(on(backend, y), on(backend, x),
                                                      reduction="none", backend=backend))
            with_hessian = host(lb.poisson_nll.grad_and_hess(
                on(backend, y), on(backend, x), reduction="none", backend=backend)[0])
            np.testing.assert_array_equal(gradient_alone, grad)
            np.testing.assert_array_equal(with_hessian, grad)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_poisson_rate_whose_shift_overflows(backend, dtype):
    """x - y log(x + eps) where x is finite but x + eps overflows: log(inf) = inf, so the
    loss is -inf for y > 0 (x itself for y = 0), not x less y times a finite number."""
    big = float(np.finfo(dtype).max)
    y = np.array([1.0, 2.0, 0.0], dtype)
    x = np.full(3, 0.75 * big, dtype)
    losses = host(lb.poisson_nll(on(backend, y), on(backend, x), log_input=False, eps=0.5 * big,
                                 reduction="none", backend=backend))
    np.testing.assert_array_equal(losses, np.array([-np.inf, -np.inf, 0.75 * big], dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_poisson_rate_whose_ratio_overflows_keeps_a_finite_loss(backend, dtype):
    """x - y log(x + eps) where y / (x + eps) overflows but the loss does not (a huge
    label, a tiny rate): the loss is finite, alone in its block or beside an infinite
    rate. The rounding of x + eps added back (y r / (x + eps)) was +-inf there on Numba
    (a review's finding), where a block with a NaN sum had taken the other form."""
    huge = 1e31 if dtype == np.float32 else 1e301
    y, x = np.array([huge, 1e9], dtype), np.array([3e-9, 3e-38], dtype)
    wide = np.longdouble
    for eps in (1e-8, 1e-30):
        shifted = x.astype(wide) + wide(float(dtype(eps)))
        expected = (x.astype(wide) - y.astype(wide) * np.log(shifted)).astype(np.float64)
        for pair in ((y, x), (np.append(y, 1.0), np.append(x, np.inf))):
            losses = host(lb.poisson_nll(on(backend, pair[0].astype(dtype)),
                                         on(backend, pair[1].astype(dtype)), log_input=False,
                                         eps=eps, reduction="none", backend=backend))
            np.testing.assert_allclose(losses[:2], expected, rtol=4 * np.finfo(dtype).eps,
                                       err_msg=str(eps))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_poisson_rate_gradient_at_huge_rates(backend, dtype):
    """1 - y / (x + eps) and y / (x + eps)^2 at rates whose reciprocal is subnormal
    (from 2^126 in float32, 2^1022 in float64), against an extended-precision reference:
    the gradient is exactly 0 at y = x (Numba's reciprocal lost digits there: 6e-8), so
    an infinite weight gives 0 inf = NaN, not inf."""
    top = np.finfo(dtype).max
    x = np.array([top / 2, top / 2, top, top / 3, 1.5 * 2.0 ** (np.finfo(dtype).maxexp - 2)],
                 dtype)
    y = np.array([top / 2, top / 4, top, 1.0, x[-1] * 0.75], dtype)
    wide = np.longdouble
    ratio = y.astype(wide) / x.astype(wide)  # (eps = 1e-8 is lost in x + eps)
    grad, hess = lb.poisson_nll.grad_and_hess(on(backend, y), on(backend, x), log_input=False,
                                              reduction="none", backend=backend)
    np.testing.assert_array_equal(host(grad), (1 - ratio).astype(dtype))
    # (subnormal Hessians: to their spacing)
    np.testing.assert_allclose(host(hess), (ratio / x.astype(wide)).astype(dtype),
                               rtol=2 * np.finfo(dtype).eps,
                               atol=2 * np.finfo(dtype).smallest_subnormal)
    weighted = lb.poisson_nll.grad(on(backend, y[:1]), on(backend, x[:1]), log_input=False,
                                   weight=on(backend, np.array([np.inf], dtype)),
                                   reduction="none", backend=backend)
    np.testing.assert_array_equal(host(weighted), [np.nan])


def test_poisson_stirling_term_in_float64_is_not_biased(backend):
    """full=True at the optimum (x = log y, y in (1, 3)) in float64 against an extended
    precision reference: the mean error within half an ulp. The Numba kernel added log(2
    pi) as two float32 parts, 48 of its 53 bits: a bias of 2.5 ulp (a review's finding)."""
    y = 1.0 + 2.0 * np.random.default_rng(15).random(4000)
    x = np.log(y)
    wide = np.longdouble  # (80-bit on x86-64: 11 bits beyond float64)
    pi = wide("3.14159265358979323846264338327950288")
    yl, xl = y.astype(wide), x.astype(wide)
    expected = np.exp(xl) - yl * xl + yl * np.log(yl) - yl + np.log(2 * pi * yl) / 2
    losses = host(lb.poisson_nll(on(backend, y), on(backend, x), full=True, reduction="none",
                                 backend=backend))
    errors = ((losses.astype(wide) - expected) / np.spacing(losses).astype(wide)).astype(float)
    assert abs(errors.mean()) < 0.5 and np.abs(errors).max() < 6, (errors.mean(),
                                                                    np.abs(errors).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kl_div_targets_beyond_the_normal_range_through_a_parallel_input(backend, dtype):
    """Targets of 0 (at x = -inf too: 0 log 0 = 0) and subnormal targets (their own log,
    not that of the normal number their bits would make), scattered through an input the
    parallel kernels split, then an infinite target at x = 100: its loss +inf. The Numba
    kernels take these only in a block whose sum came out NaN (``fast_log_normal``)."""
    rng = np.random.default_rng(14)
    n = 140_000
    y = rng.uniform(0.01, 1.0, n).astype(dtype)
    x = np.log(rng.uniform(0.01, 1.0, n)).astype(dtype)
    at = rng.choice(n, 60, replace=False)
    zeros, subnormal, at_minus_inf = at[:20], at[20:40], at[40:]
    y[zeros] = 0.0
    y[subnormal] = np.finfo(dtype).smallest_subnormal * rng.integers(1, 10**6, 20)
    y[at_minus_inf], x[at_minus_inf] = 0.0, -np.inf
    assert (y[subnormal] > 0).all() and (y[subnormal] < np.finfo(dtype).smallest_normal).all()
    y64, x64 = y.astype(np.float64), x.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        elements = np.where(y64 > 0, y64 * (np.log(y64) - x64), 0.0)  # float64, of dtype's inputs
    weight = rng.uniform(0.5, 2.0, n).astype(dtype)
    for w in (None, weight):
        options = {"weight": None if w is None else on(backend, w)}
        expected = elements if w is None else elements * w
        losses = host(lb.kl_div(on(backend, y), on(backend, x), reduction="none",
                                backend=backend, **options))
        np.testing.assert_array_equal(losses[zeros], 0.0)
        np.testing.assert_array_equal(losses[at_minus_inf], 0.0)
        # (float32's subnormal losses hold 10 to 20 bits)
        np.testing.assert_allclose(losses[subnormal], expected[subnormal], rtol=1e-5)
        value, grad = lb.kl_div.value_and_grad(on(backend, y), on(backend, x), reduction="sum",
                                               backend=backend, **options)
        np.testing.assert_allclose(host(value), np.sum(expected), rtol=2e-6)
        np.testing.assert_array_equal(host(grad), -y if w is None else -(y * w))
        # in place (out=y_pred): the rerun blocks read y_pred before the gradient is written
        written = on(backend, x.copy())
        in_place = lb.kl_div.value_and_grad(on(backend, y), written, out=written,
                                            reduction="sum", backend=backend, **options)
        assert host(in_place[0]) == host(value)
        np.testing.assert_array_equal(host(written), host(grad))
    # inf (inf - 100) = +inf, where a finite number for log(inf) would give -inf
    y[7], x[7] = np.inf, 100.0
    losses = host(lb.kl_div(on(backend, y), on(backend, x), reduction="none", backend=backend))
    assert losses[7] == np.inf
    assert host(lb.kl_div(on(backend, y), on(backend, x), reduction="sum", backend=backend)) == np.inf


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_sigmoid_focal_class_of_alpha_0_at_an_infinite_logit(backend, alpha):
    """A class whose alpha_t is 0 costs nothing even at a logit infinitely against it (0
    inf = 0), among ordinary labels of 0 and 1 in an input the parallel kernels split (the
    Numba kernels' form for such labels takes this limit only in a block whose sum came out
    NaN)."""
    rng = np.random.default_rng(13)
    n = 140_000
    y = (rng.random(n) < 0.5).astype(np.float32)
    x = (rng.standard_normal(n) * 2).astype(np.float32)
    at = rng.choice(n, 30, replace=False)
    # alpha 0: a label of 1 weighs nothing (its logit at -inf); alpha 1: a label of 0 (+inf)
    y[at], x[at] = (1.0, -np.inf) if alpha == 0.0 else (0.0, np.inf)
    others = np.ones(n, bool)
    others[at] = False
    losses = host(lb.sigmoid_focal(on(backend, y), on(backend, x), alpha=alpha,
                                   reduction="none", backend=backend))
    np.testing.assert_array_equal(losses[at], np.zeros(at.size, np.float32))
    value, grad = lb.sigmoid_focal.value_and_grad(on(backend, y), on(backend, x), alpha=alpha,
                                                  reduction="sum", backend=backend)
    expected = ew_reference("sigmoid_focal", y[others], x[others], reduction="sum", alpha=alpha)[0]
    np.testing.assert_allclose(host(value), expected, rtol=2e-6)
    np.testing.assert_array_equal(host(grad)[at], np.zeros(at.size, np.float32))
    # in place (out=y_pred): the limits read y_pred before its gradient is written over it
    written = on(backend, x.copy())
    in_place = lb.sigmoid_focal.value_and_grad(on(backend, y), written, out=written,
                                               alpha=alpha, reduction="sum", backend=backend)
    assert host(in_place[0]) == host(value)
    np.testing.assert_array_equal(host(written), host(grad))


def test_accuracy_near_zero(backend):
    """log_cosh is e^2/2 near 0, and its tanh e; neither is lost to cancellation."""
    e = np.array([1e-30, 1e-8, 1e-4, 0.01, 0.3, 0.7])
    for dtype, tolerance in ((np.float64, 1e-14), (np.float32, 1e-6)):
        value, grad = lb.log_cosh.value_and_grad(on(backend, np.zeros(6, dtype)),
                                                 on(backend, e.astype(dtype)), reduction="none",
                                                 backend=backend)
        x = e.astype(dtype).astype(np.float64)
        expected = np.log1p(2 * np.sinh(x / 2) ** 2).astype(dtype)  # 5e-61 is 0 in float32
        np.testing.assert_allclose(host(value), expected, rtol=tolerance)
        np.testing.assert_allclose(host(grad), np.tanh(x), rtol=tolerance)


def test_no_intermediate_overflow_or_underflow(backend):
    """Results that float32 represents are computed, not lost to an intermediate: smooth_l1's
    e^2 / 2 beta inside a wide or a tiny quadratic zone (e^2 overflowed, or underflowed),
    poisson_nll's Hessian y / (x + eps)^2 where 1 / (x + eps)^2 is subnormal, and its
    gradient 1 - y / x where 1 / x overflows."""
    f32 = np.float32
    for beta, e in ((1e20, 4.34e19), (1e-30, 9.999999e-31), (1e-20, 2.17e-29)):
        e = np.array([e, -e], f32)
        value = host(lb.smooth_l1(on(backend, np.zeros(2, f32)), on(backend, e), beta=beta,
                                  reduction="none", backend=backend))
        expected = e.astype(np.float64) ** 2 / (2 * np.float64(f32(beta)))
        np.testing.assert_allclose(value, expected, rtol=3e-7)
    y, x = np.array([1e7, 1e5], f32), np.array([2.18e22, 1e20], f32)
    _, hess = lb.poisson_nll.grad_and_hess(on(backend, y), on(backend, x), log_input=False,
                                           reduction="sum", backend=backend)
    expected = y.astype(np.float64) / (x.astype(np.float64) + np.float64(f32(1e-8))) ** 2
    np.testing.assert_allclose(host(hess), expected, rtol=3e-7)
    # a subnormal rate: 1 / x overflows where y / x does not (the gradient was -inf)
    for dtype, y, x in ((f32, 1.0865892e-09, 1e-45), (np.float64, 1e-300, 5e-324)):
        y, x = np.array([y, 0.0], dtype), np.array([x, x], dtype)
        grad = host(lb.poisson_nll.grad(on(backend, y), on(backend, x), log_input=False,
                                        eps=0.0, reduction="sum", backend=backend))
        expected = 1 - y.astype(np.float64) / x.astype(np.float64)
        np.testing.assert_allclose(grad, expected, rtol=3e-7)


def test_float32_log_cosh_within_a_few_ulps(backend):
    """Every float32 residual of a grid up to 3, against float64: the series up to |e| = 1,
    then a + log1p(exp(-2a)) - log 2, which cancels by a factor up to 2.6 (the series once
    stopped at 1/2, where it cancels by 7: 14 ulp)."""
    e = np.linspace(0, 3, 60_001, dtype=np.float32)[1:]
    value = host(lb.log_cosh(on(backend, np.zeros_like(e)), on(backend, e), reduction="none",
                             backend=backend))
    x = e.astype(np.float64)
    expected = np.log1p(2 * np.sinh(x / 2) ** 2)
    ulps = np.abs(value - expected) / np.spacing(expected.astype(np.float32))
    assert ulps.max() <= 4.5


# --- the common behaviour: out=, in place, float16, the fast path --------------------------


@pytest.mark.parametrize("loss", NEW)
def test_out_in_place_float16_and_fast_path(backend, loss):
    rng = np.random.default_rng(4)
    y, p = inputs(loss, rng, (3, 111), np.float64)
    expected_value, expected_grad = getattr(lb, loss).value_and_grad(y, p, backend="numpy")
    p_dev = on(backend, p.copy())
    value, grad = getattr(lb, loss).value_and_grad(on(backend, y), p_dev, out=p_dev, backend=backend)
    assert grad is p_dev
    np.testing.assert_allclose(host(p_dev), expected_grad, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(host(value), expected_value, rtol=1e-12)
    # float16 is computed in float32 and given back as float16
    value, grad = getattr(lb, loss).value_and_grad(on(backend, y.astype(np.float16)),
                                                   on(backend, p.astype(np.float16)), backend=backend)
    assert host(value).dtype == np.float16 and host(grad).dtype == np.float16
    ref_value, ref_grad = ew_reference(loss, y.astype(np.float16), p.astype(np.float16))
    np.testing.assert_allclose(float(host(value)), ref_value, rtol=5e-3, atol=1e-3)
    np.testing.assert_allclose(host(grad).astype(np.float64), ref_grad, rtol=1e-2, atol=1e-5)
    # canonical arrays and no option take the fast path: the same bits as the general one
    for dtype in (np.float32, np.float64):
        yd, pd = on(backend, y.astype(dtype)), on(backend, p.astype(dtype))
        for reduction in REDUCTIONS:
            fast = getattr(lb, loss).value_and_grad(yd, pd, reduction=reduction, backend=backend)
            general = getattr(lb, loss).value_and_grad(yd, pd, reduction=reduction,
                                                       backend=backend, weight=None)
            for a, b in zip(fast, general, strict=True):
                np.testing.assert_array_equal(host(a), host(b))


@pytest.mark.parametrize("loss,options", [
    ("mae", {}), ("huber", {"delta": 0.3}), ("sigmoid_focal", {"gamma": 1.5, "alpha": 0.6}),
    ("poisson_nll", {"log_input": False, "full": True, "eps": 1e-3}), ("kl_div", {"log_target": True}),
    ("pinball", {"quantile": 0.1})])
def test_options_through_the_parallel_kernel(backend, loss, options):
    """Inputs large enough for the parallel Numba kernels (2^17 elements and more), with
    options in every slot of the kernel's tuple."""
    rng = np.random.default_rng(8)
    y, p = inputs(loss, rng, (140_000,), np.float32, options)
    value, grad = getattr(lb, loss).value_and_grad(on(backend, y), on(backend, p), backend=backend,
                                                   **options)
    expected_value, expected_grad = ew_reference(loss, y, p, **options)
    np.testing.assert_allclose(host(value), expected_value, rtol=2e-5)
    np.testing.assert_allclose(host(grad), expected_grad, rtol=2e-5,
                               atol=2e-5 * np.max(np.abs(expected_grad)))


# --- argument checks ------------------------------------------------------------------


@pytest.mark.parametrize("loss,options,error,message", [
    ("huber", {"delta": 0.0}, ValueError, r"huber: delta must be in \(0, inf\]; got 0.0"),
    ("huber", {"delta": -1}, ValueError, "delta must be in"),
    ("huber", {"delta": "1"}, TypeError, "delta must be a real number, not str"),
    ("smooth_l1", {"beta": -0.5}, ValueError, r"beta must be in \[0, inf\)"),
    ("smooth_l1", {"beta": float("nan")}, ValueError, "beta must be in"),
    # (float64 inputs: a subnormal float64 beta; float32's smallest normal is fine there)
    ("smooth_l1", {"beta": 1e-310}, ValueError, r"smooth_l1: beta must be 0 or within "
     r"\[2\.2250738585072014e-308, 1\.7976931348623157e\+308\] \(the normal float64 "
     r"numbers\) for float64 inputs; got 1e-310"),
    ("sigmoid_focal", {"alpha": 1.5}, ValueError, r"alpha must be in \[0, 1\]"),
    ("sigmoid_focal", {"alpha": -1}, ValueError, r"or None for no balancing \(torchvision's alpha=-1\)"),
    ("sigmoid_focal", {"alpha": np.array(-1.0)}, ValueError, r"or None for no balancing"),
    ("mse", {"out": np.zeros(2)}, TypeError,
     r"out= is the gradient's buffer, for mse\.grad, \.value_and_grad and \.grad_and_hess"),
    ("sigmoid_focal", {"gamma": -1.0}, ValueError, r"gamma must be in \[0, inf\)"),
    ("sigmoid_focal", {"gamma": float("inf")}, ValueError, r"gamma must be in \[0, inf\); got inf"),
    ("huber", {"delta": 1e-310}, ValueError, r"huber: delta must be at least "
     r"2\.2250738585072014e-308 \(the normal float64 numbers\) for float64 inputs; got 1e-310"),
    ("binary_cross_entropy_with_logits", {"pos_weight": -1.0}, ValueError,
     r"pos_weight must be finite and >= 0 \(the weight of a positive label\); got -1.0"),
    ("binary_cross_entropy_with_logits", {"pos_weight": [1.0, float("nan")]}, ValueError,
     "pos_weight must be finite and >= 0.*; got nan"),
    ("binary_cross_entropy_with_logits", {"pos_weight": 1e309}, ValueError, "got inf"),
    ("binary_cross_entropy_with_logits", {"pos_weight": True}, TypeError,
     "pos_weight must be a real number or array, not a bool"),
    ("binary_cross_entropy_with_logits", {"pos_weight": [True, False]}, TypeError,
     "pos_weight must be a real number or array, not a bool"),
    ("kl_div", {"reduction": "batchmean"}, ValueError,
     r"for PyTorch's \"batchmean\", pass reduction=\"sum\" and divide by the batch size"),
    ("poisson_nll", {"log_input": "yes"}, TypeError, "log_input must be True or False"),
    ("poisson_nll", {"full": 1}, TypeError, "full must be True or False"),
    ("poisson_nll", {"eps": -1e-8}, ValueError, r"eps must be in \[0, inf\)"),
    ("kl_div", {"log_target": None}, TypeError, "log_target must be True or False"),
    ("pinball", {"quantile": 1.5}, ValueError, r"quantile must be in \[0, 1\]"),
    ("pinball", {"quantile": True}, TypeError, "quantile must be a real number, not bool"),
    ("squared_hinge", {"margin": None}, TypeError, "margin must be a real number"),
    ("squared_hinge", {"margin": float("inf")}, ValueError,
     r"squared_hinge: margin must be in \(-inf, inf\); got inf"),
    ("hinge", {"margin": -float("inf")}, ValueError, r"margin must be in \(-inf, inf\)"),
    ("huber", {"delta": 10**400}, ValueError, "delta is beyond float64's range"),
    ("mae", {"delta": 1.0}, TypeError, "delta"),
])
def test_bad_options_name_the_fix(loss, options, error, message):
    with pytest.raises(error, match=message):
        getattr(lb, loss)([0.0, 1.0], [0.5, 0.5], backend="numpy", **options)


@pytest.mark.parametrize("host_backend", ["numpy", "numba"])
def test_a_poisson_eps_beyond_the_computing_dtype_is_refused(host_backend):
    """poisson_nll(log_input=False) with an eps beyond the computing dtype's largest
    number: x + eps is inf there, every loss -inf. Refused with the fix named, as a margin
    is (float16 inputs compute in float32); with log_input=True eps is not used."""
    for dtype in (np.float32, np.float16):
        y = np.ones(3, dtype)
        with pytest.raises(ValueError, match=r"poisson_nll: eps = 1e\+39 is beyond the largest "
                                             r"float32 number .*pass a smaller eps"):
            lb.poisson_nll(y, y, log_input=False, eps=1e39, backend=host_backend)
        assert np.isfinite(lb.poisson_nll(y, y, eps=1e39, backend=host_backend))
    y = np.ones(3)
    assert np.isfinite(lb.poisson_nll(y, y, log_input=False, eps=1e39, backend=host_backend))


@pytest.mark.parametrize("loss", ["hinge", "squared_hinge", "multiclass_hinge"])
def test_a_margin_beyond_the_computing_dtype_is_refused(loss):
    """A margin beyond the computing dtype's largest number is inf there, every loss inf:
    refused with the fix named, as a weight is (float16 inputs compute in float32); float64
    inputs take it, and float32 inputs any margin that rounds to a float32 number
    (squared_hinge: up to the square root of the largest, beyond which its loss
    overflows)."""
    f = getattr(lb, loss)
    y, p = ([0, 1], np.zeros((2, 3))) if loss == "multiclass_hinge" else ([1.0, -1.0], np.zeros(2))
    for dtype, name in ((np.float32, "float32"), (np.float16, "float32")):
        with pytest.raises(ValueError, match=rf"{loss}: margin = -1e\+39 is beyond the largest "
                                             rf"{name} number .* in which {np.dtype(dtype)} "
                                             r"inputs are computed; pass a smaller margin, or "
                                             r"y_pred in a wider dtype"):
            f(y, p.astype(dtype), margin=-1e39, backend="numpy")
    assert np.isfinite(f(y, p, margin=1e39 if loss != "squared_hinge" else 1e150,
                         backend="numpy"))
    p32 = p.astype(np.float32)
    if loss == "squared_hinge":  # its square overflows beyond the root of the largest
        root = float(np.sqrt(np.finfo(np.float32).max))
        assert np.isfinite(f(y, p32, margin=root, backend="numpy"))
        with pytest.raises(ValueError, match=r"squared_hinge: margin = 1e\+20 is beyond the "
                                             r"square root of the largest float32 number "
                                             r"\(1\.84467\d*e\+19\), in which float32 inputs "
                                             r"are computed: its loss overflows; pass a "
                                             r"smaller margin"):
            f(y, p32, margin=1e20, backend="numpy")
        assert f(y, p32, margin=-1e20, backend="numpy") == 0  # (no loss: not refused)
    else:  # (a margin that rounds to the largest float32 number, not to inf, is taken)
        assert f(y, p32, margin=3.4028235677973306e38, reduction="none",
                 backend="numpy")[0] == np.finfo(np.float32).max


@pytest.mark.parametrize("host_backend", ["numpy", "numba"])
def test_a_sample_weight_beyond_y_pred_s_dtype_is_refused(host_backend):
    """weight= is cast to y_pred's dtype: a finite weight beyond its largest number (inf
    there: an infinite loss, NaN where the loss is 0) is refused with the fix named, as
    pos_weight is, whatever holds it (a scalar, a float64 or integer array); the largest
    float16 weight and an infinite one (data) pass."""
    if _skip_reason(host_backend):
        pytest.skip(_skip_reason(host_backend))
    y, p = np.zeros(3, np.float16), np.array([1e-2, 2e-2, 0.0], np.float16)
    message = (r"weight has values beyond the largest float16 number \(65504\.0; y_pred's "
               r"dtype, where weights are cast\); pass smaller weights \(the loss scales "
               r"with them\), or y_pred in a wider dtype")
    for weight in (1e5, np.array([1.0, 1e5, 1.0]), np.array([1, 100_000, 1]), -7e4):
        with pytest.raises(ValueError, match=message):
            lb.mse(y, p, weight=weight, backend=host_backend)
    with pytest.raises(ValueError, match=message):
        lb.multiclass_hinge([0, 1], np.zeros((2, 3), np.float16), weight=[1.0, 1e5],
                            backend=host_backend)
    with pytest.raises(ValueError, match="beyond the largest float32 number"):
        lb.huber(y.astype(np.float32), p.astype(np.float32), weight=1e39, backend=host_backend)
    np.testing.assert_array_equal(
        lb.mse(y, p, weight=65504.0, reduction="none", backend=host_backend),
        (p.astype(np.float32) ** 2 * 65504).astype(np.float16))
    assert np.isnan(lb.mse(y, p, weight=np.inf, reduction="none", backend=host_backend)[2])
    # weights that underflow in the cast are results, whatever the caller's np.seterr (a
    # FloatingPointError, or the overflow's message, before)
    small = np.full(3, 1e-8)
    expected = lb.mse(y, p, weight=small, backend=host_backend)
    with np.errstate(all="raise"):
        assert lb.mse(y, p, weight=small, backend=host_backend) == expected
        assert lb.mse(y, p * 0, weight=small, backend=host_backend) == 0
    # the boosting objectives cast the sample weights as the losses do
    with pytest.raises(ValueError, match=message):
        lb.xgboost.objective("mse")(np.ones(3), p, np.array([1.0, 1e5, 1.0]))


@pytest.mark.parametrize("host_backend", ["numpy", "numba"])
def test_sigmoid_focal_gamma_beyond_the_computing_dtype_is_refused(host_backend):
    """gamma beyond the square root of the computing dtype's largest is refused: there the
    Hessian's gamma (gamma - 1) is inf, times a modulator of 0 (NaN Hessians from 1.8e19 in
    float32 once); at the bound all three results are finite."""
    if _skip_reason(host_backend):
        pytest.skip(_skip_reason(host_backend))
    y, p = np.array([0.0, 1.0, 0.5], np.float32), np.array([-3.0, 3.0, 1.0], np.float32)
    with pytest.raises(ValueError, match=r"gamma must be at most 1\.844674\d*e\+19 "
                                         r"\(the square root of the largest float32 number\) "
                                         r"for float32 inputs"):
        lb.sigmoid_focal(y, p, gamma=1e20, backend=host_backend)
    with pytest.raises(ValueError, match="for float16 inputs"):
        lb.sigmoid_focal(y.astype(np.float16), p.astype(np.float16), gamma=1e20,
                         backend=host_backend)
    with pytest.raises(ValueError, match=r"at most 1\.340780\d*e\+154 .* float64"):
        lb.sigmoid_focal(y.astype(np.float64), p.astype(np.float64), gamma=1e155,
                         backend=host_backend)
    for dtype in (np.float32, np.float64):
        gamma = float(np.sqrt(np.finfo(dtype).max))
        value, (grad, hess) = (
            lb.sigmoid_focal(y.astype(dtype), p.astype(dtype), gamma=gamma, backend=host_backend),
            lb.sigmoid_focal.grad_and_hess(y.astype(dtype), p.astype(dtype), gamma=gamma,
                                           backend=host_backend))
        assert value == 0 and not grad.any() and not hess.any()


def test_huber_with_an_infinite_delta_is_half_the_squared_error(backend):
    """delta = inf (or beyond the dtype's largest), as torch's huber_loss takes it: the
    quadratic zone everywhere."""
    for delta in (float("inf"), 1e39):
        y, p = np.zeros(3, np.float32), np.array([1.0, -2.0, 1e20], np.float32)
        value, grad = lb.huber.value_and_grad(on(backend, y), on(backend, p), delta=delta,
                                              reduction="none", backend=backend)
        np.testing.assert_array_equal(host(value), np.array([0.5, 2.0, np.inf], np.float32))
        np.testing.assert_array_equal(host(grad), p)


def test_smooth_l1_at_beta_0_and_the_smallest_normal_beta(backend):
    """beta = 0 is mae, Hessian included (the NumPy backend's 1 / beta raised
    ZeroDivisionError); a beta that is normal in float64 but subnormal in float32 computes
    right for float64 inputs (e / beta, not e times an infinite 1 / beta: Numba gave NaN and
    inf for a subnormal one) and is refused for float32 inputs."""
    y, p = on(backend, np.zeros(3)), on(backend, np.array([0.5, -2.0, 0.0]))
    grad, hess = lb.smooth_l1.grad_and_hess(y, p, beta=0.0, backend=backend)
    mae_grad, mae_hess = lb.mae.grad_and_hess(y, p, backend=backend)
    np.testing.assert_array_equal(host(grad), host(mae_grad))
    np.testing.assert_array_equal(host(hess), host(mae_hess))
    beta = 1e-39  # subnormal in float32, normal in float64
    p = on(backend, np.array([1e-45, 0.0, 2.0, -2e-39]))
    value, grad = lb.smooth_l1.value_and_grad(on(backend, np.zeros(4)), p, beta=beta,
                                              reduction="none", backend=backend)
    np.testing.assert_allclose(host(value), [0.5e-90 / beta, 0.0, 2.0 - beta / 2, 2e-39 - beta / 2],
                               rtol=1e-15, atol=0)
    np.testing.assert_allclose(host(grad), [1e-45 / beta, 0.0, 1.0, -1.0], rtol=1e-15)
    with pytest.raises(ValueError, match="beta must be 0 or within .* for float32 inputs"):
        lb.smooth_l1(on(backend, np.zeros(4, np.float32)), on(backend, np.ones(4, np.float32)),
                     beta=beta, backend=backend)


def test_losses_table_lists_every_loss():
    assert set(NEW) <= set(lb.losses.LOSSES)
    for name in NEW:
        assert getattr(lb, name) is lb.losses.LOSSES[name]
        assert "math::" in lb.losses.LOSSES[name].__doc__ and ">>>" in lb.losses.LOSSES[name].__doc__


def test_pinball_takes_1_minus_quantile_in_float64(backend):
    """In float32, 1 - quantile after rounding the quantile lost the small side: Numba's
    loss at quantile 0.99999999 was 0, at 0.99999 0.14 % off (NumPy's was right)."""
    y, p = np.zeros(3, np.float32), np.array([1.0, 2.0, -1.0], np.float32)
    for quantile in (0.99999, 0.99999999, 0.9):
        value = lb.pinball(on(backend, y), on(backend, p), quantile=quantile,
                           reduction="none", backend=backend)
        expected = [1 - quantile, 2 * (1 - quantile), quantile]
        np.testing.assert_allclose(np.asarray(host(value), np.float64), expected, rtol=1e-6)
        grad = lb.pinball.grad(on(backend, y), on(backend, p), quantile=quantile,
                               reduction="sum", backend=backend)
        np.testing.assert_allclose(np.asarray(host(grad), np.float64),
                                   [1 - quantile, 1 - quantile, -quantile], rtol=1e-6)
