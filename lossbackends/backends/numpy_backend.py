"""The NumPy backend: the readable reference.

Each kernel computes what was asked (value, gradient or both) sharing the work between
them, writes into the gradient buffer with ``out=`` instead of making temporaries, and
accumulates sums in float64 (pairwise) whatever the input dtype. The row losses
(cross-entropy, multiclass hinge) live in ``_numpy_rows``.
"""

from __future__ import annotations

import numpy as np

from .. import _dispatch
from ._host import HALF, half_in_float32, quiet, rounding_of_sum
from ._numpy_rows import cross_entropy, multiclass_hinge, times

xp = np


def _reduce(losses, weight, reduction, scale, dtype):
    """Weight the per-element losses in place and reduce them; the value in ``dtype``."""
    if weight is not None:
        np.multiply(losses, weight, out=losses)
    if reduction == "none":
        return losses
    return dtype.type(np.sum(losses, dtype=np.float64) * scale)


def elementwise(kernel):
    """An elementwise kernel, float16 computed in float32, and 0-d inputs run as arrays of
    one element: NumPy ufuncs return scalars for 0-d arrays, which a later ``out=`` then
    refuses (numpy#4563). ``"none"`` gets its 0-d array back."""
    half = half_in_float32(kernel)

    def run(y, p, weight, params, reduction, scale, grad, want_value, hess=None):
        if p.ndim and p.dtype.num != HALF:  # the usual call: one wrapper, not two
            return kernel(y, p, weight, params, reduction, scale, grad, want_value, hess)
        if p.ndim:
            return half(y, p, weight, params, reduction, scale, grad, want_value, hess)
        y, p = y.reshape(1), p.reshape(1)
        weight = None if weight is None else weight.reshape(1)
        value = half(y, p, weight, params, reduction, scale,
                     None if grad is None else grad.reshape(1), want_value,
                     None if hess is None else hess.reshape(1))
        return value.reshape(()) if reduction == "none" and value is not None else value

    run.__name__ = run.__qualname__ = kernel.__name__
    run.__doc__ = kernel.__doc__
    return quiet(run)


def _finish_grad(grad, weight, scale):
    if weight is not None:
        np.multiply(grad, weight, out=grad)
    if scale != 1.0:
        np.multiply(grad, scale, out=grad)


@elementwise
def mse(y, p, weight, params, reduction, scale, grad, want_value, hess=None):
    diff = np.subtract(p, y, out=grad)  # the gradient buffer holds p - y (p may be grad)
    value = _reduce(np.square(diff), weight, reduction, scale, p.dtype) if want_value else None
    if grad is not None:
        np.multiply(grad, 2.0, out=grad)
        _finish_grad(grad, weight, scale)
    if hess is not None:
        hess.fill(2.0)  # 2 w, times the scale
        _finish_grad(hess, weight, scale)
    return value


@elementwise
def binary_cross_entropy(y, p, weight, params, reduction, scale, grad, want_value, hess=None):
    (eps,) = params
    pc = np.clip(p, eps, 1.0 - eps)
    value = None
    if want_value:
        # -(y log pc + (1 - y) log(1 - pc)), log(1 - pc) as log1p(-pc): 1 - pc rounded
        # first loses pc's low digits (1.3 % of the loss at p = 1e-6 in float32)
        losses = np.log(pc)
        losses *= y
        log_1mp = np.negative(pc)
        np.log1p(log_1mp, out=log_1mp)
        log_1mp *= np.subtract(1.0, y)
        losses += log_1mp
        np.negative(losses, out=losses)
        value = _reduce(losses, weight, reduction, scale, p.dtype)
    if grad is not None:
        # (pc - y) / (pc (1 - pc))
        denominator = np.subtract(1.0, pc)
        np.multiply(denominator, pc, out=denominator)
        np.subtract(pc, y, out=grad)
        np.divide(grad, denominator, out=grad)
        _finish_grad(grad, weight, scale)
    if hess is not None:
        # y / pc^2 + (1 - y) / (1 - pc)^2: two terms >= 0 for y in [0, 1], no cancellation
        np.divide(y, np.square(pc), out=hess)
        rest = np.subtract(1.0, pc)
        np.square(rest, out=rest)
        np.divide(np.subtract(1.0, y), rest, out=rest)
        hess += rest
        _finish_grad(hess, weight, scale)
    return value


@elementwise
def binary_cross_entropy_with_logits(y, p, weight, params, reduction, scale, grad, want_value,
                                     hess=None):
    (pos_weight,) = params
    t = np.exp(-np.abs(p))  # exp(-|x|) in [0, 1]: never overflows
    positive = p >= 0  # False for NaN, which then flows through t
    keep = np.subtract(1.0, y)  # 1 - y
    hit = y if pos_weight is None else pos_weight * y  # q y
    value = None
    if want_value:
        # (1 - y) x + lw softplus(-x) with lw = 1 + (q - 1) y = (1 - y) + q y, written as
        # c |x| + lw log1p(t), c = 1 - y for x >= 0 and q y for x < 0: terms of one sign
        # for labels in [0, 1], so nothing cancels; c = 0 at an infinite x gives the limit
        # 0, not 0 * inf = NaN
        coef = np.where(positive, keep, hit)
        losses = np.abs(p)
        losses *= coef
        losses[coef == 0] = 0.0
        softplus = np.log1p(t)
        if pos_weight is not None:
            softplus *= keep + hit
        losses += softplus
        value = _reduce(losses, weight, reduction, scale, p.dtype)
    if hess is not None:  # before the gradient, which turns t into 1 + t
        # lw sigma(x) sigma(-x) = lw t / (1 + t)^2, lw = (1 - y) + q y: no 1 - sigma to
        # cancel, and 0 at an infinite x (t = 0)
        square = np.add(1.0, t)
        np.multiply(square, square, out=square)
        np.divide(t, square, out=hess)
        if pos_weight is not None:
            hess *= keep + hit
        _finish_grad(hess, weight, scale)
    if grad is not None:
        # lw sigma(x) - q y = (1 - y) sigma(x) - q y sigma(-x), with sigma(x) = 1 / (1 + t)
        # for x >= 0 and t / (1 + t) below: no sigma(x) - 1 to cancel (y = 1, large x)
        sigma = np.where(positive, 1.0, t)  # sigma(x) (1 + t)
        complement = np.where(positive, t, 1.0)  # sigma(-x) (1 + t)
        sigma *= keep
        complement *= hit
        np.subtract(sigma, complement, out=grad)
        np.divide(grad, np.add(1.0, t, out=t), out=grad)
        _finish_grad(grad, weight, scale)
    return value


@elementwise
def hinge(y, p, weight, params, reduction, scale, grad, want_value, hess=None):
    (margin,) = params
    slack = times(y, p)  # a label of 0 times an infinite score: the limit 0, not NaN
    np.subtract(margin, slack, out=slack)  # margin - t s
    if grad is not None:
        active = slack > 0
        grad.fill(0)
        np.negative(y, out=grad, where=active)  # -t where the margin is violated, else 0
        nan = np.isnan(slack)
        if nan.any():  # NaN in, NaN out: the gradient too
            grad[nan] = np.nan
        _finish_grad(grad, weight, scale)
    if hess is not None:
        hess.fill(0.0)  # piecewise linear: 0 away from the kink (and 0 at it)
        nan = np.isnan(slack)
        if nan.any():  # NaN in, NaN out, as the gradient
            hess[nan] = np.nan
        _finish_grad(hess, weight, scale)
    if not want_value:
        return None
    return _reduce(np.maximum(slack, 0.0, out=slack), weight, reduction, scale, p.dtype)


# --- the other elementwise losses: each as (per-element loss, derivative, second
# derivative) from e = p - y or (y, p) ---
# Each function returns float arrays (or None where not asked); ``_elementwise`` weights,
# reduces and writes the gradient and the Hessian. They never write into p, so
# out=y_pred is safe. A Hessian is NaN where its own formula reads a NaN (with a NaN
# label, mse's 2 and BCE with logits' p (1 - p) stay finite, as autograd's).

_LOG2 = np.log(2.0)


def _softplus(z):
    """log(1 + exp(z)) for every z: max(z, 0) + log1p(exp(-|z|)), never overflows."""
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def _sigmoid(z):
    """1 / (1 + exp(-z)) without overflow: exp(-|z|) / (1 + exp(-|z|)) for z < 0."""
    t = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0, t) / (1.0 + t)


def _sigmoid_product(z):
    """sigmoid(z) sigmoid(-z) = t / (1 + t)^2, t = exp(-|z|): no 1 - sigmoid to cancel, 0
    at z = +-inf."""
    t = np.exp(-np.abs(z))
    return t / np.square(1.0 + t)


def _zero_or_nan(e):
    """0, NaN where e is NaN: the Hessian of a piecewise-linear piece."""
    return np.where(np.isnan(e), np.nan, 0.0)


def _mae(y, p, params, want_value, want_grad, want_hess):
    e = p - y
    # sign(0) = 0: no subgradient preferred at a tie; piecewise linear: Hessian 0 (at the
    # kink too)
    return (np.abs(e) if want_value else None, np.sign(e) if want_grad else None,
            _zero_or_nan(e) if want_hess else None)


def _huber(y, p, params, want_value, want_grad, want_hess):
    (delta,) = params
    e = p - y
    a = np.abs(e)
    loss = np.where(a <= delta, 0.5 * e * e, delta * (a - 0.5 * delta)) if want_value else None
    # 1 in the quadratic zone, |e| = delta included (the value's branch; PyTorch's second
    # derivative too), 0 beyond
    h = np.where(a <= delta, 1.0, _zero_or_nan(a)) if want_hess else None
    return loss, np.clip(e, -delta, delta) if want_grad else None, h


def _smooth_l1(y, p, params, want_value, want_grad, want_hess):
    (beta,) = params
    e = p - y
    a = np.abs(e)
    inside = a < beta  # never true for beta = 0: then this is the absolute error
    # e / 0 is masked out
    slope = e / beta  # within +-1 inside: e^2 / 2 beta as e / 2 times it never overflows
    loss = np.where(inside, 0.5 * e * slope, a - 0.5 * beta) if want_value else None
    d = np.where(inside, slope, np.sign(e)) if want_grad else None
    # 1 / beta inside, 0 from |e| = beta on (the value's branch, as PyTorch)
    # (a Python float: 1 / 0 would raise, not give inf, for beta = 0: never inside)
    h = np.where(inside, 1.0 / beta if beta else 0.0, _zero_or_nan(a)) if want_hess else None
    return loss, d, h


def _log_cosh(y, p, params, want_value, want_grad, want_hess):
    e = p - y
    a = np.abs(e)
    loss = None
    if want_value:
        # log cosh a = log1p(2 sinh(a/2)^2) while cosh is small (cosh a - 1 = 2 sinh^2(a/2):
        # exact near 0, where the second form is a difference of numbers near log 2), and
        # a + log1p(exp(-2a)) - log 2 beyond (cosh itself overflows past |e| ~ 710)
        small = np.log1p(2.0 * np.sinh(0.5 * a) ** 2)
        loss = np.where(a < 1.0, small, a + np.log1p(np.exp(-2.0 * a)) - _LOG2)
    # sech^2 e = 4 sigmoid(2e) sigmoid(-2e): never overflows, no 1 - tanh^2 to cancel
    h = 4.0 * _sigmoid_product(2.0 * a) if want_hess else None
    return loss, np.tanh(e) if want_grad else None, h


def _squared_hinge(y, p, params, want_value, want_grad, want_hess):
    (margin,) = params
    slack = margin - times(y, p)  # a label of 0 times an infinite score is 0, as hinge
    # max(slack, 0) with NaN kept (np.maximum keeps it)
    active = np.maximum(slack, 0.0)
    # 2 t^2 where the margin is violated, 0 from the kink on
    h = np.where(slack > 0, 2.0 * y * y, _zero_or_nan(slack)) if want_hess else None
    # -2 t max(slack, 0), +0 (not -t 0 = -0 for t > 0) where the margin holds; NaN kept
    d = np.where(slack > 0, -2.0 * y * active, _zero_or_nan(slack)) if want_grad else None
    return active * active if want_value else None, d, h


def _soft_margin(y, p, params, want_value, want_grad, want_hess):
    z = -times(y, p)  # the loss is softplus(-t s), its derivative -t sigmoid(-t s)
    loss = _softplus(z) if want_value else None
    h = y * y * _sigmoid_product(z) if want_hess else None  # t^2 sigmoid(z) sigmoid(-z)
    return loss, -y * _sigmoid(z) if want_grad else None, h


def _over(k, v):
    """k / v, with 0 where k = 0 and v = 0: as ``times`` (k times 1 / v), a label of 0
    contributes nothing; NaN stays NaN."""
    return np.where((k == 0) & (v == 0), 0.0, k / v)


def _sigmoid_focal(y, x, params, want_value, want_grad, want_hess):
    # torchvision's sigmoid_focal_loss: p = sigmoid(x), ce = BCE_with_logits(x, y),
    # q = 1 - p_t = p (1 - y) + (1 - p) y, loss = alpha_t q^gamma ce with
    # alpha_t = a y + b (1 - y) ((alpha, 1 - alpha), or (1, 1) without balancing).
    # With s = 1 - 2y, dq/dx = p (1 - p) s and d ce/dx = p - y, so
    #   d loss / dx = alpha_t q^gamma ((p - y) + gamma s r ce),  r = p (1 - p) / q:
    # q^(gamma - 1) p (1 - p) = q^gamma r stays finite where q underflows to 0 (r is then 0:
    # its limit, as q^gamma's). Differentiating again, d(p (1 - p))/dx = p (1 - p) (1 - 2p):
    #   d2 loss / dx2 = alpha_t q^gamma (gamma (gamma - 1) s^2 r^2 ce + gamma s r (1 - 2p) ce
    #                                    + 2 gamma s r (p - y) + p (1 - p)).
    # r <= max(p, 1 - p) <= 1 (r = p for y = 1, 1 - p for y = 0), so no term blows up.
    a, b, gamma = params
    p, c = _sigmoid(x), _sigmoid(-x)  # p and 1 - p, each without cancellation
    q = p * (1.0 - y) + c * y
    # ce = softplus(x) - x y = (1 - y) x + log1p(exp(-|x|)) for x >= 0, -y x + ... below:
    # finite for finite x, and its limit (0 times inf = 0) where the coefficient is 0
    ce = times(np.where(x >= 0, 1.0 - y, -y), x) + np.log1p(np.exp(-np.abs(x)))
    alpha_t = a * y + b * (1.0 - y)
    modulator = alpha_t * q**gamma
    loss = None
    if want_value:
        # at an infinite x, ce is inf: the loss is inf where alpha_t q > 0 (even if q^gamma
        # underflows), else 0
        limit = np.where((alpha_t > 0) & (q > 0), np.inf, 0.0)
        loss = np.where(ce == np.inf, limit, modulator * ce)
    d = h = None
    if want_grad or want_hess:
        # (q != 0, not q > 0: q is negative for a label beyond [0, 1], whose loss is still
        # the formula as written, and the gradient its derivative)
        r = np.where(q != 0, p * c / q, 0.0)
        rce = times(r, ce)
        s = 1.0 - 2.0 * y
        # p - y = q - 2 y (1 - p): no p - 1 to cancel for a label of 1 (q = 1 - p exactly)
        residual = q - 2.0 * y * c
        d = modulator * (residual + gamma * s * rce)
        if want_hess:
            h = modulator * (gamma * (gamma - 1.0) * s * s * r * rce + gamma * s * (c - p) * rce
                             + 2.0 * gamma * s * r * residual + p * c)
    return loss, d, h


def _stirling(y):
    """y log y - y + log(2 pi y) / 2 where y > 1, else 0: PyTorch's full=True term."""
    term = y * np.log(y) - y + 0.5 * np.log(2.0 * np.pi * y)
    return np.where(y > 1, term, 0.0)


def _poisson_nll(y, x, params, want_value, want_grad, want_hess):
    log_input, full, eps = params
    loss = d = h = None
    if log_input:  # x = log(rate): exp(x) - y x; second derivative exp(x)
        rate = np.exp(x)
        if want_value:  # at x = inf (or where exp overflows) the loss is inf, not inf - inf;
            # a NaN label stays NaN
            loss = np.where((rate == np.inf) & np.isfinite(y), rate, rate - times(y, x))
        d = rate - y if want_grad else None
        h = rate if want_hess else None
    else:  # x = rate: x - y log(x + eps); second derivative y / (x + eps)^2
        shifted = x + eps
        # y / (x + eps), then over it again: no reciprocal, which overflows for a
        # subnormal x + eps where y / (x + eps) does not, and no 1 / (x + eps)^2
        ratio = _over(y, shifted)
        if want_value:  # at x = inf the loss is inf (x outgrows y log x), not inf - inf
            # y log(x + eps) of the exact sum s + r (r: the rounding of s = x + eps):
            # y log s + y r / s. A rate near 1 loses eps in s (float32: all of it from
            # 0.25 on), and y log s then y's digits (1,700 ulp at y = 1e4, x = 1); none
            # to add where it is not finite (s or y / s overflowed)
            correction = ratio * rounding_of_sum(x, eps, shifted)
            correction = np.where(np.isfinite(correction), correction, 0.0)
            loss = np.where((x == np.inf) & np.isfinite(y), x,
                            x - (times(y, np.log(shifted)) + correction))
        d = 1.0 - ratio if want_grad else None
        h = _over(ratio, shifted) if want_hess else None
    if want_value and full:
        loss = loss + _stirling(y)
    return loss, d, h


def _kl_div(y, x, params, want_value, want_grad, want_hess):
    (log_target,) = params
    target = np.exp(y) if log_target else y  # the target probability
    loss = None
    if want_value:
        log_y = y if log_target else None
        if log_y is None:
            log_y = np.log(y)
        loss = target * (log_y - x)
        # a target of probability 0 costs nothing, even at x = -inf (0 log 0 = 0); a NaN
        # prediction stays NaN
        loss = np.where((target == 0) & ~np.isnan(x), 0.0, loss)
    h = _zero_or_nan(target) if want_hess else None  # linear in x
    return loss, -target if want_grad else None, h


def _pinball(y, p, params, want_value, want_grad, want_hess):
    quantile, upper, lower = params  # (1 - quantile, 0 - quantile: ``prepare_pinball``)
    e = p - y
    # quantile max(y - p, 0) + (1 - quantile) max(p - y, 0); 0 at a tie; a coefficient of
    # 0 (quantile 0 or 1) times an infinite e is 0, the limit of the max it stands for
    # (quantile |e|, not -quantile e: +0 at a tie, y = -0 included, not -0)
    loss = np.where(e > 0, times(upper, e), times(quantile, np.abs(e))) if want_value else None
    d = None
    if want_grad:
        d = np.where(e > 0, upper, np.where(e < 0, lower, _zero_or_nan(e)))  # +0 at a tie
    # piecewise linear: Hessian 0 (at the kink too)
    return loss, d, _zero_or_nan(e) if want_hess else None


def _elementwise(math):
    """The kernel of an elementwise loss from its ``math``: weights, reduction, gradient and
    Hessian."""

    def kernel(y, p, weight, params, reduction, scale, grad, want_value, hess=None):
        # (exp(x) may overflow to inf, the true limit; inf - inf and 0 * inf in branches
        # that np.where does not select are not the result's: ``quiet``)
        losses, d, h = math(y, p, params, want_value, grad is not None, hess is not None)
        if hess is not None:  # (all computed above, before grad, which may be p, is written)
            np.copyto(hess, np.broadcast_to(h, hess.shape), casting="unsafe")
            _finish_grad(hess, weight, scale)
        if grad is not None:
            np.copyto(grad, np.broadcast_to(d, grad.shape), casting="unsafe")
            _finish_grad(grad, weight, scale)
        if not want_value:
            return None
        losses = np.asarray(losses, p.dtype)
        if losses is p or losses.shape != p.shape:  # a fresh array of p's shape to reduce
            losses = np.array(np.broadcast_to(losses, p.shape), p.dtype)
        return _reduce(losses, weight, reduction, scale, p.dtype)

    kernel.__name__ = kernel.__qualname__ = math.__name__.lstrip("_")
    return elementwise(kernel)


KERNELS = {
    "mse": mse,
    "binary_cross_entropy": binary_cross_entropy,
    "binary_cross_entropy_with_logits": binary_cross_entropy_with_logits,
    "hinge": hinge,
    "cross_entropy": cross_entropy,  # the row losses: _numpy_rows
    "multiclass_hinge": multiclass_hinge,
}
KERNELS.update({math.__name__.lstrip("_"): _elementwise(math) for math in (
    _mae, _huber, _smooth_l1, _log_cosh, _squared_hinge, _soft_margin, _sigmoid_focal,
    _poisson_nll, _kl_div, _pinball)})
_dispatch.register("numpy", KERNELS)
