"""The differential harness: every loss of ``lb.losses.LOSSES`` on every backend, over
special values (+-0, +-inf, NaN, subnormals, the largest finite values, values at and
beside every kink and clip bound) and odd shapes (0-d, one element, empty, prime
lengths), against float64 references in exact forms (below, one entry per loss in
``CASES``) and against each other: the same NaN and inf pattern, finite values within
the dtype's tolerance.

Adding a loss means adding its entry to ``CASES`` (``test_every_loss_has_a_case`` fails
until then). A reference gives, per element, the exact value and gradient in float64 and
the size of the terms they are computed from: a backend's error may be a few ulps of that
size (cancellation that the inputs' own rounding makes unavoidable, such as ``m - t s`` at
the hinge's kink), never more. The semantics at +-inf and NaN stated in
docs/guide/numerics.md are the references' own.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import cuda_host
import numpy as np
import pytest
import reference
from conftest import BACKENDS, _skip_reason, examples, host, on
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lossbackends as lb
from lossbackends.losses import LOSSES

RUNNABLE = [name for name in BACKENDS if _skip_reason(name) is None]  # may be none (ci/gpu)
_ONLY = os.environ.get("LOSSBACKENDS_TEST_BACKENDS")
if ("cupy" not in RUNNABLE and cuda_host.available() is None
        and (not _ONLY or "cuda-host" in _ONLY.split(","))):
    RUNNABLE.append("cuda-host")  # the CuPy backend's kernels on the CPU (tests/cuda_host)
DTYPES = (np.float16, np.float32, np.float64)
REDUCTIONS = ("mean", "sum", "none")


@pytest.fixture(autouse=True)
def _a_backend_runs():
    """With no backend to run (LOSSBACKENDS_TEST_BACKENDS=cupy without a GPU), the tests
    below would loop over none and pass: they skip and say so."""
    if not RUNNABLE:
        pytest.skip(f"no backend of LOSSBACKENDS_TEST_BACKENDS={_ONLY!r} runs here")
ULPS = 8  # a backend's error, in ulps of the size of the terms (exp, log1p: <= 3 ulp)
INF = np.inf


def _compute_dtype(dtype):
    """What a backend computes ``dtype`` in: float16 in float32."""
    return np.float32 if dtype == np.float16 else dtype


def _rounded(values, dtype):
    """float64 values rounded to ``dtype`` (beyond its largest finite: inf), as float64."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(values, np.float64).astype(dtype).astype(np.float64)


def _specials(dtype) -> list[float]:
    """What every loss meets: zeros, infinities, NaN, subnormals, the smallest normal and
    the largest finite numbers of ``dtype``, and a few plain ones."""
    f = np.finfo(dtype)
    sub, tiny, big = float(f.smallest_subnormal), float(f.tiny), float(f.max)
    return [0.0, -0.0, INF, -INF, np.nan, sub, -sub, tiny, -tiny, big, -big, 1.0, -1.0, 0.5]


def _around(values, dtype) -> list[float]:
    """Each value in ``dtype`` and its neighbours one ulp below and above."""
    out = []
    for v in values:
        v = dtype(v)
        out += [float(np.nextafter(v, dtype(-INF))), float(v), float(np.nextafter(v, dtype(INF)))]
    return out


def _terms(coef, values):
    """coef * values with 0 * inf = 0 (a term with no weight), NaN kept from NaN values."""
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where((coef == 0) & ~np.isnan(values), 0.0, coef * values)


def _sigmoid(x):
    """sigma(x) in float64, without cancellation: exp(-|x|) never overflows."""
    t = np.exp(-np.abs(x))
    with np.errstate(invalid="ignore"):
        return np.where(x >= 0, 1.0 / (1.0 + t), t / (1.0 + t))


# --- the exact references: (value, gradient, value size, gradient size) per element ----


def _mse(y, p, dtype):
    with np.errstate(invalid="ignore", over="ignore"):
        d = p - y
        return d * d, 2 * d, d * d, np.abs(2 * d)


def _binary_cross_entropy(y, p, dtype, eps=1e-15):
    compute = _compute_dtype(dtype)
    e = max(eps, float(np.finfo(dtype).eps))  # the dtype's own epsilon, float16's too
    pc = np.clip(p, float(compute(e)), float(compute(1.0 - e)))  # the bounds in the dtype
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        pos, neg = _terms(y, np.log(pc)), _terms(1 - y, np.log1p(-pc))
        value = -(pos + neg)
        grad = (pc - y) / (pc * (1 - pc))
        # the seed's log(1 - pc) (not log1p(-pc)) rounds 1 - pc first: an absolute error of
        # up to one ulp of 1 in the (1 - y) term
        value_size = np.abs(pos) + np.abs(neg) + np.abs(1 - y)
        grad_size = (np.abs(pc) + np.abs(y)) / (pc * (1 - pc))
    return value, grad, value_size, grad_size


def _binary_cross_entropy_with_logits(y, x, dtype, pos_weight=None):
    q = 1.0 if pos_weight is None else np.broadcast_to(pos_weight, x.shape)
    with np.errstate(invalid="ignore", over="ignore"):
        # q y softplus(-x) + (1 - y) softplus(x): at an infinite x a term with no weight is
        # 0 (y = 1 at +inf: loss 0), the other one inf
        qy = _rounded(q * y, _compute_dtype(dtype))  # a product in the dtype (it may underflow)
        pos = _terms(qy, np.logaddexp(0.0, -x))
        neg = _terms(1 - y, np.logaddexp(0.0, x))
        # (1 - y) sigma(x) - q y sigma(-x): finite limits at +-inf
        up, down = _terms(1 - y, _sigmoid(x)), _terms(qy, _sigmoid(-x))
    return pos + neg, up - down, np.abs(pos) + np.abs(neg), np.abs(up) + np.abs(down)


def _hinge(y, s, dtype, margin=1.0):
    # a label of 0 times an infinite score: 0; the product in the dtype (it may underflow)
    product = _rounded(_terms(y, s), _compute_dtype(dtype))
    with np.errstate(invalid="ignore"):
        slack = margin - product
        value = np.where(slack > 0, slack, np.where(slack <= 0, 0.0, np.nan))
        grad = np.where(slack > 0, -y, np.where(slack <= 0, 0.0, np.nan))
        # met margins (slack <= 0) give exactly 0, whatever the product's size (even inf)
        return value, grad, np.where(slack > 0, abs(margin) + np.abs(product), 0.0), np.abs(y)


# the second set ------------------------------------------------------------------------


def _difference(y, p, dtype):
    """e = p - y as a backend has it, rounded once to the dtype it computes in (it may
    overflow), and |e|: the losses below are functions of e alone, so a backend's error is
    a few ulps of terms in e, never of p's or y's own size (p = y = the largest finite
    number gives e = 0 and a loss of exactly 0)."""
    with np.errstate(invalid="ignore", over="ignore"):
        e = _rounded(p - y, _compute_dtype(dtype))
        return e, np.abs(e)


def _mae(y, p, dtype):
    e, size = _difference(y, p, dtype)
    return np.abs(e), np.sign(e), size, np.ones_like(e)


def _huber(y, p, dtype, delta=1.0):
    e, size = _difference(y, p, dtype)
    a = np.abs(e)
    with np.errstate(invalid="ignore", over="ignore"):
        value = np.where(a <= delta, 0.5 * e * e, delta * (a - 0.5 * delta))
        value = np.where(np.isnan(a), np.nan, value)
        grad = np.where(np.isnan(e), np.nan, np.clip(e, -delta, delta))
        # (the gradient's size: e within delta, delta beyond; never inf)
        return value, grad, (a + delta) * size + a * a + delta * delta, np.minimum(size, delta)


def _smooth_l1(y, p, dtype, beta=1.0):
    e, size = _difference(y, p, dtype)
    a = np.abs(e)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        inside = a < beta
        value = np.where(inside, 0.5 * e * e / (beta or 1.0), a - 0.5 * beta)
        value = np.where(np.isnan(a), np.nan, value)
        grad = np.where(inside, e / (beta or 1.0), np.sign(e))
        # (the gradient's size: e / beta within beta, 1 beyond; never inf)
        return (value, grad, (a / (beta or 1.0) + 1) * size + a + beta,
                np.where(inside, size / (beta or 1.0), 1.0))


def _log_cosh(y, p, dtype):
    e, size = _difference(y, p, dtype)
    a = np.abs(e)
    with np.errstate(invalid="ignore", over="ignore"):
        small = np.log1p(2 * np.sinh(np.minimum(a, 1.0) / 2) ** 2)  # exact near 0
        value = np.where(a < 1, small, a + np.log1p(np.exp(-2 * a)) - np.log(2.0))
        value = np.where(np.isnan(a), np.nan, value)
        tanh = np.tanh(e)
        # the rounding of e moves the value by tanh(e) times it; away from 0 the value is
        # a + log1p(exp(-2a)) - log 2, a sum of terms of size a + 1
        value_size = np.abs(value) + np.minimum(a, 1.0) * size + np.where(a >= 0.5, a + 1.0, 0.0)
        return value, tanh, value_size, np.minimum(1.0, np.abs(tanh) + size)


def _squared_hinge(y, s, dtype, margin=1.0):
    product = _rounded(_terms(y, s), _compute_dtype(dtype))
    with np.errstate(invalid="ignore", over="ignore"):
        slack = margin - product
        active = np.where(slack > 0, slack, np.where(slack <= 0, 0.0, np.nan))
        # (met margins give exactly 0: no size, even where the product is inf)
        size = np.where(slack > 0, abs(margin) + np.abs(product), 0.0)
        return active * active, -2 * y * active, 2 * active * size, 2 * np.abs(y) * size


def _soft_margin(y, s, dtype):
    z = -_rounded(_terms(y, s), _compute_dtype(dtype))
    with np.errstate(invalid="ignore", over="ignore"):
        value = np.logaddexp(0.0, z)
        sigma = _sigmoid(z)
        # the rounding of z moves the value by sigma(z) z, the gradient by its derivative
        return (value, -y * sigma, np.abs(value) + sigma * np.abs(z),
                np.abs(y) * (sigma + sigma * _sigmoid(-z) * np.abs(z)))


def _sigmoid_focal(y, x, dtype, alpha=0.25, gamma=2.0):
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        p, c = _sigmoid(x), _sigmoid(-x)
        q = p * (1 - y) + c * y  # 1 - p_t, terms of one sign
        ce = _terms(y, np.logaddexp(0.0, -x)) + _terms(1 - y, np.logaddexp(0.0, x))
        alpha_t = 1.0 if alpha is None else alpha * y + (1 - alpha) * (1 - y)
        modulator = alpha_t * q**gamma
        r = np.where(q > 0, p * c / q, 0.0)
        rce = _terms(r, ce)
        # at an infinite x the limit: inf where alpha_t q > 0 (q^gamma may underflow), else 0
        limit = np.where((alpha_t > 0) & (q > 0), INF, 0.0)
        value = np.where(np.isinf(ce), limit, modulator * ce)
        # p - y as (1 - y) p - y c: each term exact, where p - y cancels to 0 in float64
        # at large logits (the gradient of a logit of 88.75 is -exp(-88.75), a float32
        # subnormal, not 0: an infinite weight makes it -inf, not NaN)
        residual = _terms(1 - y, p) - _terms(y, c)
        grad = modulator * (residual + gamma * (1 - 2 * y) * rce)
        return (value, grad, np.abs(value) * (2 + gamma),
                np.abs(modulator) * (np.abs(p) + np.abs(y) + gamma * np.abs(rce)) * (2 + gamma))


def _poisson_nll(y, x, dtype, log_input=True, full=False, eps=1e-8):
    compute = _compute_dtype(dtype)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if log_input:
            rate = np.exp(x)
            yx = _rounded(_terms(y, x), compute)
            # where exp overflows, inf (exp outgrows y x); a NaN label stays NaN
            value = np.where((_rounded(rate, compute) == INF) & np.isfinite(y), INF, rate - yx)
            grad, value_size, grad_size = rate - y, rate + np.abs(yx), rate + np.abs(y)
        else:
            shifted = _rounded(x + float(compute(eps)), compute)
            # the log of the exact x + eps (extended precision): the backends add the
            # rounding of their sum back into the value (the gradient divides by the sum)
            exact = x.astype(np.longdouble) + np.longdouble(float(compute(eps)))
            log = _terms(y, np.log(exact).astype(np.float64))
            # y / (x + eps), not y times 1 / (x + eps), which overflows for a subnormal
            # x + eps where the ratio is finite (a label of 0 against a rate of 0: 0)
            ratio = np.where((y == 0) & (shifted == 0), 0.0, y / shifted)
            # at x = inf the limit inf (x outgrows y log x), not inf - inf
            value = np.where((x == INF) & np.isfinite(y), INF, x - log)
            grad = 1.0 - ratio
            value_size, grad_size = np.abs(x) + np.abs(log), 1.0 + np.abs(ratio)
        if full:
            safe = np.where(y > 1, y, 2.0)
            terms = (safe * np.log(safe), safe, 0.5 * np.log(2 * np.pi * safe))
            value = value + np.where(y > 1, terms[0] - terms[1] + terms[2], 0.0)
            value_size = value_size + np.where(y > 1, sum(np.abs(t) for t in terms), 0.0)
        return value, grad, value_size, grad_size


def _kl_div(y, x, dtype, log_target=False):
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        target = np.exp(y) if log_target else y
        log_y = y if log_target else np.log(y)
        difference = _rounded(log_y - x, _compute_dtype(dtype))
        value = np.where((target == 0) & ~np.isnan(x), 0.0, target * difference)
        size = np.abs(target) * (np.abs(log_y) + np.abs(x) + 1)
        return value, -target, np.where(target == 0, 0.0, size), np.abs(target)


def _pinball(y, p, dtype, quantile=0.5):
    e, _ = _difference(y, p, dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        # quantile 0 or 1: a coefficient of 0 times an infinite e is 0 (the max it stands
        # for: max(p - y, 0) is 0 at p - y = -inf)
        value = np.where(e > 0, _terms(1 - quantile, e), _terms(-quantile, e))
        grad = np.where(e > 0, 1 - quantile, np.where(e < 0, -quantile, e * 0.0))
        # (a coefficient times the rounded e: one rounding of the value itself)
        return value, grad, np.abs(value), np.ones_like(e)


def _kinks(*values):
    """Predictions at and beside the kinks at e = p - y in ``values`` for the labels 0,
    1 and -1 (each label's shifted copies), in the dtype."""
    return lambda dtype, options: _around(
        [k(options) + y for k in values for y in (0.0, 1.0, -1.0)], dtype)


def _within(values, dtype) -> list[float]:
    """The values that ``dtype`` holds as finite numbers."""
    return [v for v in values if abs(v) <= float(np.finfo(dtype).max)]


_EXP_EDGES = [88.72, -88.72, -90.0, -104.0, -745.0, 709.0, 710.0, 30.0, -30.0]


@dataclass
class Case:
    """A loss's entry: its exact reference, the labels and predictions it meets (a
    function of the dtype and the options: its kinks and clip bounds, each with its
    neighbours), the draws for the rest, and option sets."""

    reference: Callable
    labels: Callable  # dtype -> list of special labels
    predictions: Callable  # (dtype, options) -> list of special predictions
    label_range: tuple[float, float]  # ordinary labels are drawn from here
    options: list[dict] = field(default_factory=lambda: [{}])


def _bce_bounds(dtype, options):
    compute = _compute_dtype(dtype)
    e = max(options.get("eps", 1e-15), float(np.finfo(dtype).eps))
    return _around([compute(e), compute(1.0 - e)], dtype) + [2.0, -2.0]


CASES: dict[str, Case] = {
    "mse": Case(
        _mse,
        labels=lambda dtype: _specials(dtype) + [3.0, -1e4],
        predictions=lambda dtype, options: [3.0, -1e4, 1e4],
        label_range=(-1e3, 1e3),
    ),
    "binary_cross_entropy": Case(
        _binary_cross_entropy,
        labels=lambda dtype: [0.0, 1.0, 0.5, 0.25, np.nan, float(np.finfo(dtype).smallest_subnormal)],
        predictions=_bce_bounds,
        label_range=(0.0, 1.0),
        options=[{}, {"eps": 1e-3}],
    ),
    "binary_cross_entropy_with_logits": Case(
        _binary_cross_entropy_with_logits,
        labels=lambda dtype: [0.0, 1.0, 0.5, 0.25, np.nan, float(np.finfo(dtype).smallest_subnormal),
                              float(np.nextafter(dtype(1), dtype(0)))],
        # 0: the kink of |x|; 17, 30, 37: where sigma(x) - 1 cancelled in float32 and
        # float64; +-88.7, -90, -104: float32 exp's overflow, subnormal and zero results;
        # -745, 710: float64's
        predictions=lambda dtype, options: _around([0.0], dtype) + [
            17.0, -17.0, 30.0, -30.0, 37.0, -37.0, 88.72, -88.72, -90.0, -104.0, -745.0, 710.0],
        label_range=(0.0, 1.0),
        options=[{}, {"pos_weight": 3.0}, {"pos_weight": 0.5}],
    ),
    "hinge": Case(
        _hinge,
        labels=lambda dtype: [1.0, -1.0, 0.0, 0.5, np.nan],
        # the kink at t s = margin, for labels +-1 and 0.5, and its neighbours
        predictions=lambda dtype, options: _around(
            [options.get("margin", 1.0) * k for k in (1, -1, 2)], dtype),
        label_range=(-1.0, 1.0),
        options=[{}, {"margin": 0.5}, {"margin": 0.0}],
    ),
    "cross_entropy": None,  # rows, not elements: see test_cross_entropy_special_logits
    # rows, not elements: see test_row_losses_extremes.py::test_special_values
    "multiclass_hinge": None,
    "mae": Case(_mae, labels=lambda dtype: _specials(dtype), predictions=_kinks(lambda o: 0.0),
                label_range=(-1e3, 1e3)),
    "huber": Case(
        _huber, labels=lambda dtype: _specials(dtype),
        predictions=_kinks(lambda o: 0.0, lambda o: o.get("delta", 1.0),
                           lambda o: -o.get("delta", 1.0)),
        label_range=(-1e3, 1e3), options=[{}, {"delta": 0.25}]),
    "smooth_l1": Case(
        _smooth_l1, labels=lambda dtype: _specials(dtype),
        predictions=_kinks(lambda o: 0.0, lambda o: o.get("beta", 1.0),
                           lambda o: -o.get("beta", 1.0)),
        label_range=(-1e3, 1e3), options=[{}, {"beta": 0.0}, {"beta": 3.0}]),
    "log_cosh": Case(
        _log_cosh, labels=lambda dtype: _specials(dtype),
        # the switches between the series or log1p(sinh) and the exp form, and overflow
        predictions=lambda dtype, options: _around(_within([0.25, 0.5, 1.0, -0.5, 20.0, 710.0], dtype),
                                                   dtype),
        label_range=(-50.0, 50.0)),
    "squared_hinge": Case(
        _squared_hinge, labels=lambda dtype: [1.0, -1.0, 0.0, 0.5, np.nan],
        predictions=lambda dtype, options: _around(_within(
            [options.get("margin", 1.0) * k for k in (1, -1, 2)] + [2e19, 1e154], dtype), dtype),
        label_range=(-1.0, 1.0), options=[{}, {"margin": 0.5}]),
    "soft_margin": Case(
        _soft_margin, labels=lambda dtype: [1.0, -1.0, 0.0, 0.5, np.nan],
        predictions=lambda dtype, options: _around([0.0], dtype) + _EXP_EDGES,
        label_range=(-1.0, 1.0)),
    "sigmoid_focal": Case(
        _sigmoid_focal,
        labels=lambda dtype: [0.0, 1.0, 0.5, 0.25, np.nan, float(np.finfo(dtype).smallest_subnormal),
                              float(np.nextafter(dtype(1), dtype(0)))],
        predictions=lambda dtype, options: _around([0.0], dtype) + _EXP_EDGES,
        label_range=(0.0, 1.0),
        options=[{}, {"alpha": None}, {"gamma": 0.0}, {"gamma": 0.5, "alpha": 0.9}]),
    "poisson_nll": Case(
        _poisson_nll, labels=lambda dtype: [0.0, 1.0, 2.0, 0.5, 7.5, 1e4, np.nan],
        predictions=lambda dtype, options: _around([0.0, 1.0], dtype) + _EXP_EDGES,
        label_range=(0.0, 20.0),
        options=[{}, {"full": True}, {"log_input": False}, {"log_input": False, "eps": 0.0}]),
    "kl_div": Case(
        _kl_div,
        labels=lambda dtype: [0.0, 1.0, 0.5, 1e-3, np.nan, float(np.finfo(dtype).smallest_subnormal),
                              float(np.finfo(dtype).tiny)],
        predictions=lambda dtype, options: [-1.0, -0.5, -20.0, -104.0],
        label_range=(0.0, 1.0), options=[{}, {"log_target": True}]),
    "pinball": Case(
        _pinball, labels=lambda dtype: _specials(dtype), predictions=_kinks(lambda o: 0.0),
        label_range=(-1e3, 1e3), options=[{}, {"quantile": 0.1}, {"quantile": 1.0}]),
}

ELEMENTWISE = [name for name, case in CASES.items() if case is not None]
# 0-d, one element, empty, prime lengths and a 2-d shape with a prime row
SHAPES = [(), (1,), (0,), (2,), (7,), (13,), (3, 5), (0, 3)]


def test_every_loss_has_a_case():
    assert set(CASES) == set(LOSSES), "add an entry to CASES for each new loss"


# --- comparing -------------------------------------------------------------------------


def _assert_same(actual, expected, size, dtype, what, ulps=ULPS):
    """The same NaN and inf pattern (signs too), finite values within ``ulps`` ulps of the
    size of the terms, plus as many subnormal spacings (results in the subnormal range)."""
    actual = np.asarray(host(actual), np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, expected {expected.shape}"
    info = np.finfo(dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        # ulps of the terms' size, and at least of the result itself (a reduced value's
        # rounding is relative to it, whatever the terms' sizes were)
        tolerance = ulps * (float(info.eps) * np.maximum(
            np.nan_to_num(np.abs(size), posinf=float(info.max)),
            np.nan_to_num(np.abs(expected), nan=0.0, posinf=0.0))
                            + float(info.smallest_subnormal))
        wrong = ((np.isnan(actual) != np.isnan(expected))
                 | (np.isinf(actual) != np.isinf(expected))
                 | (np.isinf(expected) & (actual != expected))
                 | (np.isfinite(expected) & ~(np.abs(actual - expected) <= tolerance)))
        # a finite result within the tolerance of the largest finite may round to an
        # infinity of its sign (either side: two backends are compared too)
        finite = np.where(np.isfinite(expected), expected, actual)
        wrong &= ~((np.isfinite(expected) != np.isfinite(actual)) & ~np.isnan(finite)
                   & (np.abs(finite) + tolerance >= float(info.max))
                   & (np.sign(actual) == np.sign(expected)))
    if wrong.any():
        at = np.flatnonzero(wrong.reshape(-1))[:5]
        raise AssertionError(
            f"{what}: {int(wrong.sum())} of {wrong.size} differ; at {at.tolist()}: got "
            f"{actual.reshape(-1)[at].tolist()}, expected {expected.reshape(-1)[at].tolist()}")


def _expected(case, y, p, weight, reduction, dtype, options):
    """The reference's (value, gradient, their sizes), reduced and rounded like a backend:
    per element in the dtype, sums in float64."""
    value, grad, value_size, grad_size = (
        np.broadcast_to(a, p.shape).astype(np.float64)
        for a in case.reference(y.astype(np.float64), p.astype(np.float64), dtype, **options))
    # a finite result has a finite size (an infinite one, clipped to the largest finite
    # number, would accept any finite result), but for results within 2^10 of float64's
    # largest, whose sizes may overflow (and so may a size times a weight, later)
    for result, size, what in ((value, value_size, "value"), (grad, grad_size, "gradient")):
        with np.errstate(invalid="ignore"):
            loose = np.isfinite(result) & np.isinf(size) & (np.abs(result) < 2.0**1014)
        assert not loose.any(), (f"{case.reference.__name__}: the {what}'s size is infinite at "
                                 f"(y, p) = {np.stack([y, p])[:, loose][:, :4].T.tolist()}")
    w = 1.0 if weight is None else weight.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        # each element's value and gradient in the dtype, then weighted, then scaled: a
        # gradient beyond the largest finite is inf before "mean" scales it
        # (float16 in float32, rounded to float16 at the end)
        compute = _compute_dtype(dtype)
        value = _rounded(_rounded(value, compute) * w, compute)
        value_size = value_size * np.abs(w)
        scale = 1.0 / p.size if reduction == "mean" and p.size else 1.0
        grad = _rounded(_rounded(_rounded(grad, compute) * w, compute) * scale, dtype)
        grad_size = grad_size * np.abs(w) * scale
        if reduction != "none":
            value = value.sum() * scale if p.size else (0.0 if reduction == "sum" else np.nan)
            value_size = value_size.sum() * scale
        value = _rounded(value, dtype)
    return value, grad, value_size, grad_size


def _sum_overflows(case, y, p, weight, dtype, options, largest=None) -> bool:
    """Whether the finite per-element values' magnitudes add up beyond float64's largest
    (or ``largest``): then a sum's result depends on its order. The CUDA kernels sum a
    float32 array in float32 (the contract's float32 pairwise on the GPU): beyond
    float32's largest their sum may be inf where the host's float64 sum and its mean are
    finite (numerics.md)."""
    values = _expected(case, y, p, weight, "none", dtype, options)[0]
    with np.errstate(over="ignore"):
        total = np.abs(values[np.isfinite(values)]).sum()
    return bool(np.isinf(total) or (largest is not None and total > largest))


_CUDA = ("cupy", "cuda-host")


def _float32_sum_bounds(case, y, p, weight, dtype, options) -> tuple[bool, bool]:
    """Whether a float32 sum of the per-element values can reach +inf and -inf: the
    positive terms (or one +inf) add up beyond float32's largest, the negative ones below
    its negative (every partial sum lies between the two totals)."""
    values = _expected(case, y, p, weight, "none", dtype, options)[0]
    largest = float(np.finfo(_compute_dtype(dtype)).max)
    finite = values[np.isfinite(values)]
    with np.errstate(over="ignore"):
        up = finite[finite > 0].sum() > largest or bool((values == np.inf).any())
        down = -finite[finite < 0].sum() > largest or bool((values == -np.inf).any())
    return bool(up), bool(down)


def _run(name, backend, y, p, weight, reduction, options):
    return _value_and_grad(name, backend, y, p, reduction, weight=weight, **options)


def _value_and_grad(name, backend, y, p, reduction, hess=False, **options):
    """``lb.<name>.value_and_grad`` on ``backend`` (or the CuPy kernels on the host), or
    with ``hess`` its ``grad_and_hess``."""
    with warnings.catch_warnings():
        # (that one warning only: the grids check that nothing else warns)
        warnings.filterwarnings("ignore", "mean of an empty input", RuntimeWarning)
        if backend == "cuda-host":
            results = cuda_host.value_and_grad(name, y, p, reduction=reduction, hess=hess,
                                               **options)
            return results[1:] if hess else results
        options = {k: on(backend, v) if isinstance(v, np.ndarray) else v
                   for k, v in options.items()}
        loss = getattr(lb, name)
        method = loss.grad_and_hess if hess else loss.value_and_grad
        return method(on(backend, y), on(backend, p), reduction=reduction, backend=backend,
                      **options)


# --- the elementwise losses: every special label against every special prediction ------


def _special_grid(case, dtype, options):
    """(y, p, weight): each special label of ``case`` against each special prediction, in
    ``dtype``, and plain weights cycled over them."""
    labels = np.array(case.labels(dtype), np.float64)
    predictions = np.array(_specials(dtype) + case.predictions(dtype, options), np.float64)
    with np.errstate(over="ignore"):
        y = np.repeat(labels, predictions.size).astype(dtype)
        p = np.tile(predictions, labels.size).astype(dtype)
    return y, p, np.resize(np.array([0.5, 1.0, 2.0], dtype), p.shape)


@pytest.mark.parametrize("name", ELEMENTWISE)
@pytest.mark.parametrize("dtype", DTYPES)
def test_elementwise_special_grid(name, dtype):
    """Each special label against each special prediction (one array, a few hundred
    elements), every option set, every reduction, with and without weights."""
    case = CASES[name]
    for options in case.options:
        y, p, weight = _special_grid(case, dtype, options)
        # and weights of their own special values: 0 times an infinite loss is NaN, as
        # NumPy's product (numerics.md); cycled over the grid
        # (float64: 2^1000, not its largest, whose products with the terms' sizes,
        # themselves float64, would overflow)
        info = np.finfo(dtype)
        big = 2.0**1000 if dtype == np.float64 else info.max
        odd = np.resize(np.array([0.0, np.inf, np.nan, -1.5, info.smallest_subnormal, big, 1.0],
                                 dtype), p.shape)
        for reduction, w in [("none", None), ("none", weight), ("sum", None), ("mean", weight),
                             ("none", odd)]:
            value, grad, value_size, grad_size = _expected(case, y, p, w, reduction, dtype, options)
            for backend in RUNNABLE:
                # NaN and inf are data: no backend warns of them, nor raises under
                # np.seterr(all="warn") (the NumPy backend did)
                with np.errstate(all="warn"), warnings.catch_warnings():
                    warnings.simplefilter("error")
                    got_value, got_grad = _run(name, backend, y, p, w, reduction, options)
                what = f"{name} {backend} {np.dtype(dtype).name} {reduction} {options}"
                if reduction == "none":  # name the elements that differ
                    _assert_elements(got_value, value, value_size, dtype, y, p, f"value of {what}")
                _assert_elements(got_grad, grad, grad_size, dtype, y, p, f"gradient of {what}")
                _assert_same(got_value, value, value_size, dtype, f"value of {what}")


# the Hessian's own checks on the grid: the piecewise-linear losses' is 0 wherever finite
# (their docstrings: 0 at the kinks too), mse's is 2, and every loss but the focal one
# (not convex) has none below 0; the rest is each backend against the first
_ZERO_HESSIAN = ("mae", "hinge", "pinball", "kl_div")
_NOT_CONVEX = ("sigmoid_focal",)
_TRANSCENDENTAL = ("log_cosh", "soft_margin", "sigmoid_focal", "poisson_nll")


@pytest.mark.parametrize("name", ELEMENTWISE)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_elementwise_hessian_special_grid(name, dtype):
    """``grad_and_hess`` over the special grid, every option set: its gradient against
    the reference's (as ``value_and_grad``'s above), its Hessian against what the loss
    fixes (see ``_ZERO_HESSIAN``) and the same on every backend (NaN and inf pattern,
    values within 2 ULPS of the larger). float64 for the transcendental losses only, with
    their default options (kernels test_hessians.py compiles too)."""
    if dtype == np.float64 and name not in _TRANSCENDENTAL:
        pytest.skip("float64 Hessians of the other losses: test_hessians.py")
    case = CASES[name]
    # (float64: the default options alone; each option set is kernels of its own to compile)
    for options in case.options if dtype == np.float32 else case.options[:1]:
        y, p, weight = _special_grid(case, dtype, options)
        # (the other option sets weighted only: each combination compiles its own kernels)
        calls = [("none", None), ("mean", weight)] if options is case.options[0] else [
            ("mean", weight)]
        for reduction, w in calls:
            _, grad, _, grad_size = _expected(case, y, p, w, reduction, dtype, options)
            scale = 1.0 / p.size if reduction == "mean" else 1.0
            coefficient = (np.ones_like(p, np.float64) if w is None else w.astype(np.float64)) * scale
            hessians = {}
            for backend in RUNNABLE:
                with np.errstate(all="warn"), warnings.catch_warnings():
                    warnings.simplefilter("error")
                    got_grad, hess = _value_and_grad(name, backend, y, p, reduction, hess=True,
                                                     weight=w, **options)
                what = f"{name} {backend} {np.dtype(dtype).name} {reduction} {options}"
                _assert_elements(got_grad, grad, grad_size, dtype, y, p,
                                 f"grad_and_hess's gradient of {what}")
                hess = hessians[backend] = np.asarray(host(hess), np.float64)
                finite = np.isfinite(hess)
                if name in _ZERO_HESSIAN:
                    assert (hess[finite] == 0).all(), f"Hessian of {what}: not 0"
                if name == "mse":  # 2 w scale, everywhere (NaN and inf inputs too)
                    want = 2.0 * coefficient
                    _assert_same(hess, want, want, dtype, f"Hessian of {what}", ulps=2)
                if name not in _NOT_CONVEX:
                    assert not (hess[finite] < 0).any(), f"Hessian of {what}: below 0"
                # NaN wherever the gradient is (numerics.md), but for the second
                # derivatives that do not read the NaN: mse's 2 (above), and with a NaN
                # label those of bce with logits without pos_weight and of poisson_nll's
                # log-rate
                unread = np.isnan(y) & (
                    (name == "binary_cross_entropy_with_logits" and "pos_weight" not in options)
                    or (name == "poisson_nll" and options.get("log_input", True)))
                if name != "mse":
                    finite_at_nan = np.isnan(grad) & ~unread & ~np.isnan(hess)
                    assert not finite_at_nan.any(), (
                        f"Hessian of {what}: finite where the gradient is NaN at (y, p) = "
                        f"{np.stack([y, p])[:, finite_at_nan][:, :4].T.tolist()}")
            first, *others = RUNNABLE
            for backend in others:
                a, b = hessians[first], hessians[backend]
                both = np.isfinite(a) & np.isfinite(b)
                _assert_same(b, a, np.where(both, np.fmax(np.abs(a), np.abs(b)), 0.0), dtype,
                             f"Hessian of {name} {backend} against {first} "
                             f"{np.dtype(dtype).name} {reduction} {options}", ulps=2 * ULPS)


def _assert_elements(actual, expected, size, dtype, y, p, what):
    try:
        _assert_same(actual, expected, size, dtype, what)
    except AssertionError:
        bad = []
        for i in range(y.size):
            try:
                _assert_same(host(actual).reshape(-1)[i], expected.reshape(-1)[i],
                             np.asarray(size).reshape(-1)[i], dtype, "")
            except AssertionError:
                bad.append(f"(y={y.reshape(-1)[i]}, p={p.reshape(-1)[i]}): got "
                           f"{host(actual).reshape(-1)[i]}, expected {expected.reshape(-1)[i]}")
        raise AssertionError(f"{what}: {len(bad)} elements differ: " + "; ".join(bad[:8])) from None


# --- the elementwise losses: hypothesis over special values and odd shapes -------------


@st.composite
def elementwise_problems(draw, name):
    case = CASES[name]
    dtype = draw(st.sampled_from(DTYPES))
    options = dict(draw(st.sampled_from(case.options)))
    shape = draw(st.sampled_from(SHAPES))
    n = int(np.prod(shape))
    width = np.finfo(dtype).bits
    special_p = _specials(dtype) + case.predictions(dtype, options)
    ordinary = st.floats(-50, 50, width=width)
    p = draw(st.lists(st.one_of(st.sampled_from(special_p), ordinary), min_size=n, max_size=n))
    low, high = case.label_range
    labels = st.one_of(st.sampled_from(case.labels(dtype)), st.floats(low, high, width=width))
    y = draw(st.lists(labels, min_size=n, max_size=n))
    weight = None
    if draw(st.booleans()):
        weight = np.array(draw(st.lists(st.sampled_from([0.5, 1.0, 2.0]), min_size=n, max_size=n)),
                          dtype).reshape(shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # overflow in the cast
        return (np.array(y, dtype).reshape(shape), np.array(p, dtype).reshape(shape), weight,
                draw(st.sampled_from(REDUCTIONS)), dtype, options)


@pytest.mark.parametrize("name", ELEMENTWISE)
@given(data=st.data())
@settings(max_examples=examples(60), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_elementwise_special_values(name, data):
    y, p, weight, reduction, dtype, options = data.draw(elementwise_problems(name))
    case = CASES[name]
    value, grad, value_size, grad_size = _expected(case, y, p, weight, reduction, dtype, options)
    # a sum whose finite terms add up beyond float64's largest (terms of +-max drawn) is
    # inf, -inf or NaN by the order it is added in, each right for some order: its
    # elements are checked by the gradient, and by reduction="none" draws
    check_value = reduction == "none" or not _sum_overflows(case, y, p, weight, dtype, options)
    check_cuda = reduction == "none" or not _sum_overflows(
        case, y, p, weight, dtype, options, float(np.finfo(_compute_dtype(dtype)).max))
    results = {}
    for backend in RUNNABLE:
        got_value, got_grad = results[backend] = _run(name, backend, y, p, weight, reduction,
                                                      options)
        what = f"{name} {backend} {np.dtype(dtype).name} {reduction} {options} y={y!r} p={p!r}"
        if check_value and not check_cuda and backend in _CUDA and not np.isnan(value):
            # a float32 sum beyond the largest finite: +inf where the positive terms can
            # pass it, -inf where the negative ones can, NaN where both (by the order)
            got = float(np.asarray(host(got_value), np.float64))
            up, down = _float32_sum_bounds(case, y, p, weight, dtype, options)
            if (got == np.inf and up) or (got == -np.inf and down) or (np.isnan(got) and up
                                                                        and down):
                got_value = value
        if check_value:
            _assert_same(got_value, value, value_size, dtype, f"value of {what}")
        _assert_same(got_grad, grad, grad_size, dtype, f"gradient of {what}")
    # the backends against each other: within twice the tolerance of either
    first, *others = RUNNABLE or [None]
    for backend in others:
        for a, b, size, kind in zip(results[first], results[backend], (value_size, grad_size),
                                    ("value", "gradient"), strict=True):
            if kind == "value" and not (check_value and (check_cuda or backend not in _CUDA)):
                continue
            _assert_same(b, host(a), size, dtype, f"{kind} of {name} {backend} against {first}",
                         ulps=2 * ULPS)


# --- cross-entropy: rows with special logits ---------------------------------------------


def _ce_reference(target, x, dtype, soft, class_weight, smoothing, ignore_index=-100):
    """Per row (loss, gradient row, loss size, gradient size) in float64: z = x - max(x) in
    the dtype (a difference beyond its largest finite is -inf), 0 where a logit equals the
    max (infinite ones too); loss sum_c w_c q_c (log sum exp z - z_c), gradient
    softmax coef - w q; a NaN logit makes the row NaN. Also the mean's denominator."""
    rows, classes = x.shape
    w = np.ones(classes) if class_weight is None else class_weight.astype(np.float64)
    losses, sizes = np.zeros(rows), np.zeros(rows)
    grads, grad_sizes = np.zeros((rows, classes)), np.zeros((rows, classes))
    denominator = 0.0
    for i in range(rows):
        if soft:
            q = (1 - smoothing) * target[i].astype(np.float64) + smoothing / classes
            denominator += 1
        elif target[i] == ignore_index:
            continue
        else:
            q = np.full(classes, smoothing / classes)
            q[target[i]] += 1 - smoothing
            denominator += w[target[i]]
        row = x[i].astype(np.float64)
        top = row.max()
        with np.errstate(invalid="ignore", over="ignore"):
            z = _rounded(np.where(row == top, 0.0, row - top), _compute_dtype(dtype))
            exp = np.exp(z)
            # log1p of the others' sum plus the 1s beyond the first: 1 + e rounds e to
            # float64's ulp of 1 (a confident row's loss of 6e-40 came out 0)
            log_sum = np.log1p((np.count_nonzero(z == 0) - 1) + exp[~(z == 0)].sum())
            wq = w * q
            terms = _terms(wq, log_sum - z)
            losses[i] = terms.sum()
            sizes[i] = np.abs(terms).sum()
            softmax = exp / exp.sum()
            grads[i] = softmax * wq.sum() - wq
            grad_sizes[i] = np.abs(softmax * wq.sum()) + np.abs(wq)
    return losses, grads, sizes, grad_sizes, denominator


@st.composite
def ce_problems(draw):
    dtype = draw(st.sampled_from(DTYPES))
    rows = draw(st.sampled_from([0, 1, 2, 3, 5]))
    classes = draw(st.sampled_from([1, 2, 3, 7, 33]))
    f = np.finfo(dtype)
    specials = [0.0, -0.0, INF, -INF, np.nan, float(f.smallest_subnormal), float(f.max),
                -float(f.max), 1e4, -1e4, 30.0, -90.0, -104.0]
    logits = st.one_of(st.sampled_from(specials), st.floats(-20, 20, width=f.bits))
    x = np.array(draw(st.lists(logits, min_size=rows * classes, max_size=rows * classes)),
                 dtype).reshape(rows, classes)
    soft = draw(st.booleans())
    if soft:
        probs = st.sampled_from([0.0, 0.0, 0.25, 0.5, 1.0])
        target = np.array(draw(st.lists(probs, min_size=rows * classes, max_size=rows * classes)),
                          dtype).reshape(rows, classes)
    else:
        label = st.one_of(st.integers(0, classes - 1), st.just(-100))
        target = np.array(draw(st.lists(label, min_size=rows, max_size=rows)), np.int64)
    class_weight = None
    if draw(st.booleans()):
        class_weight = np.array(draw(st.lists(st.sampled_from([0.5, 1.0, 2.0]), min_size=classes,
                                              max_size=classes)), dtype)
    smoothing = draw(st.sampled_from([0.0, 0.1, 1.0]))
    return x, target, soft, class_weight, smoothing, draw(st.sampled_from(REDUCTIONS)), dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_special_grid(dtype):
    """Rows [a, b, 0.25] for every pair of special logits, with each label, ignored rows,
    and probability targets with zeros, with and without smoothing and class weights."""
    f = np.finfo(dtype)
    specials = [0.0, INF, -INF, np.nan, float(f.smallest_subnormal), float(f.max), -float(f.max),
                1e4, -1e4, -90.0]
    pairs = [(a, b) for a in specials for b in specials]
    with np.errstate(over="ignore"):
        x = np.array([[a, b, 0.25] for a, b in pairs], dtype)
    x = np.repeat(x, 3, axis=0)
    labels = np.resize(np.array([0, 1, 2]), x.shape[0])
    labels[::7] = -100
    probs = np.resize(np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]], dtype), x.shape)
    for target, soft in ((labels, False), (probs, True)):
        for smoothing, class_weight in ((0.0, None), (0.1, np.array([0.5, 1.0, 2.0], dtype))):
            for reduction in ("none", "sum"):
                _check_cross_entropy(x, target, soft, class_weight, smoothing, reduction, dtype)


def test_cross_entropy_weighted_probabilities_near_the_float32_max():
    """A row's w q z beyond float32's max where its mean is within it (found by hypothesis:
    the NumPy backend's float32 products overflowed before the float64 sum). The host
    backends only: the CUDA kernels add a float32 row's terms in float32 (registers), so
    such a row's loss is inf there (docs/guide/numerics.md)."""
    f32 = np.float32
    x = np.array([[0, 0, 0], [0, 0, 0], [0, np.finfo(f32).max, 0]], f32)
    target = np.array([[0, 0, 0], [0, 0, 0], [0, 0, 1]], f32)
    host_backends = [b for b in RUNNABLE if b not in _CUDA]
    for smoothing in (0.0, 0.1):
        _check_cross_entropy(x, target, True, np.array([0.5, 0.5, 2.0], f32), smoothing, "mean",
                             f32, host_backends)


def test_cross_entropy_at_the_float32_max_warns_of_nothing(backend):
    """x - max(x) beyond float32's largest finite is -inf, as documented, and exp(-inf) = 0:
    a result, not an overflow to warn of (the NumPy backend warned)."""
    f = float(np.finfo(np.float32).max)
    x = on(backend, np.array([[f, 0, -f], [1, 2, 3]], np.float32))
    target = on(backend, np.array([0, 2]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value, grad = lb.cross_entropy.value_and_grad(target, x, reduction="none",
                                                      backend=backend)
    np.testing.assert_allclose(host(value), [0.0, np.log1p(np.exp(-1) + np.exp(-2))],
                               rtol=1e-6)
    np.testing.assert_array_equal(host(grad)[0], [0.0, 0.0, 0.0])


@given(problem=ce_problems())
@settings(max_examples=examples(120), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_cross_entropy_special_logits(problem):
    _check_cross_entropy(*problem)


def _check_cross_entropy(x, target, soft, class_weight, smoothing, reduction, dtype,
                         backends=RUNNABLE):
    losses, grads, sizes, grad_sizes, denominator = _ce_reference(
        target, x, dtype, soft, class_weight, smoothing)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        scale = 1.0 / np.float64(denominator) if reduction == "mean" else 1.0
        if reduction == "none":
            value, value_size = _rounded(losses, dtype), sizes
        elif x.shape[0] == 0:
            value, value_size = (0.0 if reduction == "sum" else np.nan), 0.0
        else:
            value, value_size = _rounded(losses.sum() * scale, dtype), sizes.sum() * abs(scale)
        grad, grad_size = _rounded(grads * scale, dtype), grad_sizes * abs(scale)
    if reduction == "mean" and not soft and 0 < x.shape[0] and denominator == 0:
        grad = np.zeros_like(grad)  # every row ignored: gradient 0, value NaN (PyTorch)
    # rows where a finite x - max(x) overflows: the CUDA kernels weight each term before
    # adding it (w z as sums of pieces), so the loss may stay finite there, as it is
    # mathematically (inf on the host); their gradients agree
    with np.errstate(invalid="ignore", over="ignore"):
        compute = _compute_dtype(dtype)
        top = x.max(axis=1, keepdims=True).astype(compute) if x.size else x
        overflows = (np.isfinite(x) & np.isfinite(top)
                     & np.isinf(x.astype(compute) - top)).any(axis=1)
    # and a reduced value over a row whose loss, or rows whose sum, is beyond the largest
    # finite: inf in the kernels' float32 sums, whatever the mean (numerics.md; two rows
    # of 0.95 x float32's largest each, found by hypothesis)
    # the CUDA row kernel scales each thread's exps by exp(its max - the row's max), where
    # the host takes exp(x - max(x)) for each: a softmax far below the row's top is then
    # within |x - max(x)| ulps of the host's (numerics.md; a softmax of 9e-14 at x - max =
    # -30 was 8 ulps off, found by hypothesis)
    # Only where an element's gradient is its softmax alone (no target there, no smoothing):
    # elsewhere a softmax that small is lost beside the target's term.
    if soft:
        alone = np.asarray(target) == 0
    else:
        alone = np.ones(x.shape, bool)
        hit = np.flatnonzero((target >= 0) & (target < x.shape[-1]))
        alone[hit, np.asarray(target)[hit]] = False
    alone &= smoothing == 0
    with np.errstate(invalid="ignore", over="ignore"):
        far = np.where(alone, np.nan_to_num(np.abs(grad) * np.abs(x.astype(compute) - top),
                                            nan=0.0, posinf=0.0), 0.0) if x.size else 0.0
    grad_sizes = {backend: grad_size + far / ULPS if backend in _CUDA else grad_size
                  for backend in backends}
    largest = float(np.finfo(compute).max)
    with np.errstate(over="ignore"):  # (a sum beyond float64's largest is inf: beyond)
        row_beyond = reduction != "none" and bool(
            (np.abs(losses) > largest).any() or np.abs(losses).sum() > largest)
    results = {}
    for backend in backends:
        with np.errstate(all="warn"), warnings.catch_warnings():  # (as the elementwise grid)
            warnings.simplefilter("error")
            results[backend] = _value_and_grad("cross_entropy", backend, target, x, reduction,
                                               class_weight=class_weight,
                                               label_smoothing=smoothing)
        what = (f"cross_entropy {backend} {np.dtype(dtype).name} {reduction} soft={soft} "
                f"smoothing={smoothing} class_weight={class_weight} target={target!r} x={x!r}")
        got_value = results[backend][0]
        if backend in _CUDA and overflows.any():
            # there the host's inf, or the finite loss with x - max(x) exact (float64)
            # (numerics.md): nothing else, NaN included
            exact = _ce_reference(target, x, np.float64, soft, class_weight, smoothing)[0]
            got = np.asarray(host(got_value), np.float64)
            with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
                if reduction != "none":
                    exact = exact.sum() * scale if x.shape[0] else np.nan
                tol = 8 * float(np.finfo(_compute_dtype(dtype)).eps) * np.abs(exact)
                accepted = (np.isinf(value) & np.isfinite(exact) & np.isfinite(got)
                            & (np.abs(got - exact) <= tol))
            if reduction == "none":
                accepted &= overflows
            got_value = np.where(accepted, value, got)
        if backend in _CUDA and row_beyond:
            got = np.asarray(host(got_value), np.float64)
            got_value = np.where((got == np.inf) & ~np.isnan(value), value, got)
        _assert_same(got_value, value, value_size, dtype, f"value of {what}")
        _assert_same(results[backend][1], grad, grad_sizes[backend], dtype,
                     f"gradient of {what}")
    first, *others = [b for b in backends
                      if b not in _CUDA or not (overflows.any() or row_beyond)] or [None]
    for backend in others:
        for a, b, size in zip(results[first], results[backend],
                              (value_size, grad_sizes[backend]), strict=True):
            _assert_same(b, host(a), size, dtype, f"{backend} against {first}", ulps=2 * ULPS)


# --- the five inputs of issue 13, and their kinds ----------------------------------------


def test_bce_with_logits_gradient_does_not_cancel(backend):
    """sigmoid(x) - y cancelled for y = 1 and large x: -9.3481e-14 for -sigmoid(-30),
    and exactly 0 in float32 from x = 17 on."""
    grad = lb.binary_cross_entropy_with_logits.grad(on(backend, np.array([1.0])),
                                                    on(backend, np.array([30.0])),
                                                    reduction="none", backend=backend)
    np.testing.assert_allclose(host(grad), [-9.357622968839299e-14], rtol=1e-15)
    x = np.array([17.0, 30.0, 80.0], np.float32)
    grad = lb.binary_cross_entropy_with_logits.grad(
        on(backend, np.ones(3, np.float32)), on(backend, x), reduction="none",
        pos_weight=on(backend, np.array([2.0], np.float32)), backend=backend)
    np.testing.assert_allclose(host(grad), -2 / (1 + np.exp(x.astype(np.float64))), rtol=1e-6)


def test_bce_with_logits_at_infinite_logits(backend):
    """The limits: loss 0 where the label agrees with an infinite logit, inf where it does
    not (soft labels too: tensorflow#75256), gradients finite."""
    y = np.array([1.0, 0.0, 0.0, 1.0, 0.5, 0.5])
    x = np.array([INF, INF, -INF, -INF, INF, -INF])
    value, grad = lb.binary_cross_entropy_with_logits.value_and_grad(
        on(backend, y), on(backend, x), reduction="none", backend=backend)
    np.testing.assert_array_equal(host(value), [0.0, INF, 0.0, INF, INF, INF])
    np.testing.assert_array_equal(host(grad), [0.0, 1.0, 0.0, -1.0, 0.5, -0.5])


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_0d_one_element_and_empty_inputs(backend, name, reduction):
    """Every loss, reduction and backend: a NumPy scalar of the dtype for a reduced value,
    an ndarray for "none" (0-d for 0-d inputs) and for the gradient (numpy#4563: 0-d
    results became scalars and a later out= failed)."""
    loss = LOSSES[name]
    if loss._class_indices:  # cross_entropy, multiclass_hinge: (classes,) logits with a 0-d label, (1, C), (0, C)
        shapes = [((), (3,)), ((1,), (1, 3)), ((0,), (0, 3))]
    else:
        shapes = [((), ()), ((1,), (1,)), ((0,), (0,))]
    for dtype in (np.float32, np.float64):
        for y_shape, p_shape in shapes:
            if loss._class_indices:
                y = np.full(y_shape, 1, np.int64)
                p = np.linspace(-1, 1, int(np.prod(p_shape))).astype(dtype).reshape(p_shape)
            else:
                y, p = np.full(y_shape, 1.0, dtype), np.full(p_shape, 0.25, dtype)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # mean of empty
                value, grad = loss.value_and_grad(on(backend, y), on(backend, p),
                                                  reduction=reduction, backend=backend)
                alone = loss(on(backend, y), on(backend, p), reduction=reduction, backend=backend)
                numpy_value = loss(y, p, reduction=reduction, backend="numpy")
            if backend != "cupy":
                assert type(grad) is np.ndarray and grad.shape == p.shape and grad.dtype == dtype
                if reduction == "none":
                    assert type(value) is np.ndarray and value.shape == y_shape
                else:
                    assert type(value) is np.dtype(dtype).type
            assert host(value).dtype == dtype
            np.testing.assert_array_equal(host(alone), host(value))
            np.testing.assert_allclose(host(value), numpy_value, rtol=1e-6)
            if y.size and reduction != "none" and name == "hinge":
                np.testing.assert_allclose(host(value), 0.75, rtol=1e-7)  # the example


def test_hinge_of_0d_arrays_is_0_75(backend):
    value = lb.hinge(on(backend, np.array(1.0)), on(backend, np.array(0.25)), backend=backend)
    assert float(host(value)) == 0.75


def test_seed_drop_ins_on_0d_one_element_and_empty_inputs():
    """Each drop-in gives what the seed's own formula gives, type and value."""
    seeds = {lb.mse_loss: reference.seed_mse_loss,
             lb.binary_cross_entropy_loss: reference.seed_binary_cross_entropy_loss,
             lb.hinge_loss: reference.seed_hinge_loss}
    for drop_in, seed in seeds.items():
        for y, p in [(np.array(1.0), np.array(0.25)), (np.array([1.0]), np.array([0.25])),
                     (np.zeros(0), np.zeros(0))]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                got, expected = drop_in(y, p), seed(y, p)
            assert type(got) is type(expected)
            np.testing.assert_array_equal(got, expected)


def test_float32_sigmoid_keeps_subnormal_results(backend):
    """sigmoid(-90) = 8.19e-40 in float32 (subnormal), not 0; the loss likewise."""
    x = np.array([-90.0, -100.0, -103.0], np.float32)
    value, grad = lb.binary_cross_entropy_with_logits.value_and_grad(
        on(backend, np.zeros(3, np.float32)), on(backend, x), reduction="none", backend=backend)
    expected = np.exp(x.astype(np.float64)).astype(np.float32)  # sigmoid(x) = exp(x) here
    assert expected[0] == np.float32(8.1940087e-40)
    np.testing.assert_array_equal(host(grad), expected)
    np.testing.assert_array_equal(host(value), expected)
    # a softmax probability of exp(-90) stays subnormal too
    grad = lb.cross_entropy.grad(on(backend, np.array([0])), on(backend, np.array([[0.0, -90.0]], np.float32)),
                                 reduction="sum", backend=backend)
    assert host(grad)[0, 1] == np.float32(8.1940087e-40)


@pytest.mark.parametrize("labels,bad", [
    (np.array([2**64 - 100, 2], np.uint64), 2**64 - 100),
    (np.array([1, 2**63], np.uint64), 2**63),
    (np.array([0, 2**63 + 5], np.dtype(">u8")), 2**63 + 5),
    (np.array([2**70, 1], dtype=object), 2**70),
    (np.array([1, -2**64], dtype=object), -2**64),
])
def test_labels_that_would_wrap_raise_naming_the_label_as_given(backend, labels, bad):
    if backend == "cupy" and labels.dtype == object:
        pytest.skip("CuPy has no object arrays")
    x = on(backend, np.zeros((2, 3)))
    row = int(np.flatnonzero([v == bad for v in labels])[0])
    with pytest.raises(ValueError, match=rf"y_true\[{row}\] = {bad} is not a class index in \[0, 3\)"):
        lb.cross_entropy(on(backend, labels), x, backend=backend)


def test_uint_and_bool_labels_within_range_are_class_indices(backend):
    x = np.random.default_rng(0).normal(size=(2, 3))
    expected = lb.cross_entropy(np.array([1, 0]), x, backend="numpy")
    for labels in (np.array([1, 0], np.uint64), np.array([1, 0], np.uint8), np.array([True, False])):
        np.testing.assert_allclose(host(lb.cross_entropy(on(backend, labels), on(backend, x),
                                                         backend=backend)), expected, rtol=1e-12)


def test_float16_binary_cross_entropy_clips_at_its_own_epsilon(backend):
    """The clip bound is max(eps, finfo(float16).eps), so the gradient at p = 0 or 1 stays
    finite in float16 (float32's epsilon gave 8.4e6, inf once rounded)."""
    y = np.array([0, 1, 1, 0], np.float16)
    p = np.array([1, 0, -np.inf, np.inf], np.float16)
    grad = host(lb.binary_cross_entropy.grad(on(backend, y), on(backend, p), reduction="none",
                                             backend=backend))
    e = float(np.finfo(np.float16).eps)
    expected = np.float16(1 / e) * np.array([1, -1, -1, 1])  # (pc - y) / (pc (1 - pc))
    np.testing.assert_allclose(grad.astype(np.float64), expected, rtol=2e-3)
    assert np.isfinite(grad).all()


def test_unchecked_labels_beyond_int64_give_nan_rows(backend):
    """check_labels=False: a label int64 cannot hold is a bad label like any other (its row
    NaN), not an error and not a wrapped index."""
    if backend == "cupy":
        pytest.skip("host labels")
    labels = np.array([0, 2**64 - 100, 2], np.uint64)
    logits = np.zeros((3, 3))
    with np.errstate(invalid="ignore"):
        value = lb.cross_entropy(labels, logits, reduction="none", check_labels=False,
                                 backend=backend)
        listed = lb.cross_entropy([0, 2**70, 2], logits, reduction="none", check_labels=False,
                                  backend=backend)
    for row_losses in (value, listed):
        assert np.isnan(row_losses[1]) and np.allclose(row_losses[[0, 2]], np.log(3))
    with pytest.raises(ValueError, match="18446744073709551516"):
        lb.cross_entropy(labels, logits, backend=backend)
