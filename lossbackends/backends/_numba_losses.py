"""The mathematics of every elementwise loss for the Numba kernels: one inlined function
per loss, ``(y, p, param, pos, k) -> (loss, d loss / d p, d2 loss / d p2)`` of one
element (``k``: its constants, see ``loss_math``; ``pos``: the positive weight of binary
cross-entropy with logits, None for every other loss: one signature for every loss's
function, which the elementwise kernel calls: ``_numba_elementwise``), and
``variant(loss, params)``: the function a call uses and the numbers it takes.

``param`` is the kernel's one tuple of three options in the input's dtype (what each loss
keeps there: ``variant``). Options that change the formula (``poisson_nll``'s flags, an
integer ``gamma`` of ``sigmoid_focal``) pick a function of their own
(``_numba_losses_by_option``), compiled into a kernel of its own, so that no branch on an
option is left inside the vectorised loop. How a loss's mathematics is declared
(``loss_math``) is ``_numba_loss_math``'s. Constants are float32, so float32 inputs
compute in float32 (vectorised); float64 inputs promote them. Comparisons are written so
that NaN propagates. A kernel that asks for no Hessian never uses the third result, and
the compiler removes it.
"""
from __future__ import annotations

import math

from numba import types
from numba.extending import overload

from ._numba_intrinsics import INLINE, fma, horner, inline
from ._numba_loss_math import (
    ALWAYS,
    BEYOND_L2,
    FOUR,
    LN2,
    TWO,
    _f32,
    _sign,
    _zero_or_nan,
    loss_math,
)
from ._numba_losses_by_option import BY_OPTION
from ._numba_math import (
    EXP32_LOW,
    EXP32_WIDE,
    HALF,
    LOG1P32,
    ONE,
    ZERO,
    exp_and_expm1_normal32,
    fast_exp,
    fast_exp_nonpositive,
    fast_log1p,
    fast_log_normal,
    times,
)
from ._numba_math64 import tanh_parts64

# --- mse, binary cross-entropy (with logits), hinge ------------------------------------


@loss_math(sum_in_loop_from=ALWAYS)
def _mse(y, p, param, pos, k):
    d = p - y
    return d * d, TWO * d, TWO


@inline
def _clip(p, eps):
    """clip(p, e, 1 - e); NaN stays NaN."""
    pc = eps if p < eps else p
    high = ONE - eps
    return high if pc > high else pc


@inline
def _bce_hess(y, pc):
    """y / pc^2 + (1 - y) / (1 - pc)^2 at the clipped p: two terms >= 0 for y in [0, 1]."""
    q = ONE - pc
    return y / (pc * pc) + (ONE - y) / (q * q)


@inline
def _rounding_of_one_minus(pc, q):
    """log(1 - pc) - log(q), q = 1 - pc rounded: to first order that rounding e (exact, by
    Fast2Sum: |1| >= |pc|) over q, here e (1 + pc), off by e pc^2 / (1 - pc) (at most a
    quarter of an ulp of the loss, near pc = 0.39; from pc = 1/2 on, e = 0), for a fused
    multiply-add instead of a division (which made the kernel 7-14 % slower, one thread).
    log(q) + it is log1p(-pc) to an ulp, where log(q) alone lost pc's low digits (1.3 % of
    the loss at p = 1e-6 in float32)."""
    e = (ONE - q) - pc
    return fma(e, pc, e)


# Binary cross-entropy's logs take the clipped p and 1 - p, within [eps, 1 - eps] where
# eps is at least the dtype's machine epsilon (``_prepare.prepare_bce``), or NaN: normal
# numbers, so ``fast_log_normal`` gives ``fast_log``'s bits without its selects (the value
# took 0.63-0.69 instead of 0.80-0.84 ns per element in cache, labels of 0 and 1, one
# thread; 1.01-1.05 instead of 1.20 for probability labels).
@loss_math()
def _binary_cross_entropy_of_hard_labels(y, p, param, pos, k):
    # the same for y in {0, 1}, with one log instead of two: the other term is 0 * finite
    pc = _clip(p, param[0])
    q = ONE - pc
    hit = y > HALF
    log_term = fast_log_normal(pc if hit else q) + (ZERO if hit else _rounding_of_one_minus(pc, q))
    return -log_term, (pc - y) / (pc * q), _bce_hess(y, pc)


# binary cross-entropy's log keeps its constants unheld: held, LLVM interleaved the
# one-log loop four times over and spilled (329 instructions per 32 elements, 119 of them
# to the stack), and the kernel measured 0.90-0.95x of the unheld one
@loss_math(hard_labels=_binary_cross_entropy_of_hard_labels)
def _binary_cross_entropy(y, p, param, pos, k):
    pc = _clip(p, param[0])
    q = ONE - pc
    log_one_minus = fast_log_normal(q) + _rounding_of_one_minus(pc, q)  # log1p(-pc)
    loss = -(y * fast_log_normal(pc) + (ONE - y) * log_one_minus)
    return loss, (pc - y) / (pc * q), _bce_hess(y, pc)


@loss_math(EXP32_LOW, LOG1P32)
def _binary_cross_entropy_with_logits(y, x, param, pos, k):
    # PyTorch's (1 - y) x + lw softplus(-x), lw = 1 + (q - 1) y = (1 - y) + q y, written
    # c |x| + lw log1p(t), t = exp(-|x|), c = 1 - y for x >= 0 and q y below: terms of one
    # sign for labels in [0, 1], nothing cancels; c = 0 at an infinite x gives the limit
    # 0, not 0 * inf = NaN. Gradient lw sigma(x) - q y = (1 - y) sigma(x) - q y sigma(-x):
    # no sigma(x) - 1 to cancel. A NaN x is not >= 0, and flows through t.
    exp_k, log1p_k = k
    t = fast_exp_nonpositive(-abs(x), exp_k)
    positive = x >= ZERO
    keep = ONE - y
    hit = y if pos is None else pos * y
    coef = keep if positive else hit
    linear = ZERO if coef == ZERO else coef * abs(x)
    softplus = fast_log1p(t, log1p_k)  # softplus(-|x|)
    loss = linear + (softplus if pos is None else (keep + hit) * softplus)
    # sigma(x) (1 + t) is 1 for x >= 0, t below; sigma(-x) (1 + t) the other one
    d = (keep * (ONE if positive else t) - hit * (t if positive else ONE)) / (ONE + t)
    # lw sigma(x) sigma(-x) = lw t / (1 + t)^2: no 1 - sigma to cancel, 0 at x = +-inf
    h = t / ((ONE + t) * (ONE + t))
    return loss, d, (h if pos is None else (keep + hit) * h)


@loss_math(sum_in_loop_from=BEYOND_L2, wide_vectors=False)
def _hinge(y, s, param, pos, k):
    # a label of 0 times an infinite score is 0 (the limit), not NaN; NaN stays NaN
    slack = param[0] - times(y, s)
    # -t where the margin is violated, 0 where not (also at the kink), NaN for NaN
    d = -y if slack > ZERO else (ZERO if slack <= ZERO else slack)
    # piecewise linear: the Hessian is 0 away from the kink and at it; NaN for NaN
    h = ZERO if slack == slack else slack
    return (ZERO if slack <= ZERO else slack), d, h


# --- log cosh and tanh of |e|: float32 by series near 0 and exp elsewhere, float64 by
# expm1 and log1p (both vectorised) ----------------------------------------------------


def log_cosh_parts(a, k):
    """(log cosh a, tanh a, sech^2 a) for a = |e| >= 0 (or NaN); ``k``: held
    ``LOG_COSH32`` (float32 only)."""
    return math.log(math.cosh(a)), math.tanh(a), ONE / math.cosh(a) ** 2


# log cosh a = z (1/2 + z L(z)), z = a^2, for a < 1 (a^2/2 - a^4/12 + ... as a -> 0): L of
# degree 5 fitted by ci/fit_polynomials.py (7.5e-9 relative in float64). Up to a = 1, where
# a + log1p(t) - log 2 cancels by a factor 2.6 (by 7 at a = 1/2, where a Taylor series of
# as many terms had to stop: 14 ulp)
_LC = (HALF, _f32(-0.0833330973982811), _f32(0.022217418998479843),
       _f32(-0.006713380571454763), _f32(0.0020823085214942694), _f32(-0.0005602275487035513),
       _f32(8.780997450230643e-05))
_LC_SERIES_MAX = ONE
# log1p(t) = t + t^2 M(t) for t = exp(-2a) <= exp(-2) (a >= 1, beyond the series): M of
# degree 3 fitted by ci/fit_polynomials.py (1.3e-8 relative in float64, 0.73 ulp in
# float32), no division (log1p's general form divides: x / (2 + x))
_L1P = (_f32(-0.4999970495700836), _f32(0.33311882615089417), _f32(-0.24506761133670807),
        _f32(0.15390068292617798))
# exp's, log1p's and the series' constants: log cosh's float32 loop uses some thirty
LOG_COSH32 = (EXP32_WIDE, _L1P, _LC, (_LC_SERIES_MAX, LN2, ONE, TWO, FOUR, _f32(-87.0)))


def _log_cosh_parts32(a, k):
    # With t = exp(-2a) and u = expm1(-2a) = t - 1 (one reduction, see
    # ``exp_and_expm1_normal32``): log cosh a = a + log1p(t) - log 2 never overflows, but
    # near 0 it is a difference of numbers near log 2 (absolute error, relative to a^2/2):
    # the series there. tanh a = -u / (2 + u) has no cancellation anywhere (u is exact
    # near 0, where 1 - t is not), nor has sech^2 a = 4t / (1 + t)^2.
    exp_k, m, lc, bounds = k
    lc_max, ln2, one, two, four, normal_low = bounds
    # log cosh and tanh take t at least exp(-87), a normal float32: from a = 43.5 on, t
    # is below half an ulp of what it is added to there, and exp's normal range is the
    # cheaper one (NaN kept by the select). sech^2 takes exp over its whole range
    # (subnormal from a = 43.5); the kernels without a Hessian drop it as dead code.
    x = -two * a
    t, u = exp_and_expm1_normal32(normal_low if x < normal_low else x, exp_k[0])
    z = a * a
    s = horner(z, (lc[6], lc[5], lc[4], lc[3], lc[2], lc[1], lc[0]))
    log1p_t = fma(t * t, horner(t, (m[3], m[2], m[1], m[0])), t)  # t <= exp(-2)
    log_cosh = s * z if a < lc_max else a + log1p_t - ln2
    tanh = abs(u) / (two + u)  # (|u|, not -u: +0 at a = 0, as NumPy's tanh)
    t_full = fast_exp(x, exp_k)
    one_t = one + t_full
    return log_cosh, tanh, four * t_full / (one_t * one_t)


def _log_cosh_parts64(a, k):
    # The float32 form's identities in float64, vectorisable: tanh a, t = exp(-2a) and v =
    # expm1(-2a) from ``tanh_parts64``; log cosh a = a + log1p(t) - log 2 from a = 1 on,
    # and below, where that cancels, log1p(cosh a - 1) with cosh a - 1 = v^2 / (2 w (1 +
    # w)^2), w = sqrt(t) = exp(-a) (that is (1 - w)^2 / (2 w), and 1 - w = -v / (1 + w)):
    # one log1p, of the argument its form takes (within 7 ulp; log1p(2 sinh(a/2)^2) by
    # libm had 4.9). sech^2 a = 4t / (1 + t)^2 takes exp over its whole range (subnormal
    # from a = 354); the kernels without a Hessian drop it as dead code.
    tanh, t, v = tanh_parts64(a)
    near = a < 1.0
    w = math.sqrt(t)
    one_w = 1.0 + w
    log1p_of = fast_log1p(v * v / (2.0 * w * one_w * one_w) if near else t)
    log_cosh = log1p_of if near else a + log1p_of - 0.6931471805599453
    t_full = fast_exp(-2.0 * a)
    one_t = 1.0 + t_full
    return log_cosh, tanh, 4.0 * t_full / (one_t * one_t)


@overload(log_cosh_parts, jit_options=INLINE)
def _log_cosh_parts(a, k):
    return _log_cosh_parts32 if a == types.float32 else _log_cosh_parts64


# --- the losses ------------------------------------------------------------------------


@loss_math(sum_in_loop_from=ALWAYS)
def _mae(y, p, param, pos, k):
    e = p - y
    return abs(e), _sign(e), _zero_or_nan(e)  # piecewise linear: 0 (at the kink too)


@loss_math(sum_in_loop_from=BEYOND_L2, wide_vectors=False)
def _huber(y, p, param, pos, k):
    delta = param[0]
    e = p - y
    a = abs(e)
    inside = a <= delta
    loss = HALF * e * e if inside else delta * (a - HALF * delta)
    d = delta if e > delta else e  # clip, NaN kept (a min, then a max)
    d = -delta if d < -delta else d
    # 1 in the quadratic zone, |e| = delta included (the value's branch, as PyTorch's
    # second derivative), 0 beyond; NaN kept
    return loss, d, ONE if inside else _zero_or_nan(a)


@loss_math(sum_in_loop_from=BEYOND_L2, wide_vectors=False)
def _smooth_l1(y, p, param, pos, k):
    beta = param[0]
    e = p - y
    a = abs(e)
    inside = a < beta  # never for beta = 0: the absolute error (e / 0 is not selected)
    slope = e / beta  # within +-1 inside: e^2 / 2 beta as e / 2 times it never overflows
    loss = HALF * e * slope if inside else a - HALF * beta
    # 1 / beta inside, 0 from |e| = beta on (the value's branch, as PyTorch); NaN kept
    return loss, slope if inside else _sign(e), ONE / beta if inside else _zero_or_nan(a)


@loss_math(*LOG_COSH32)
def _log_cosh(y, p, param, pos, k):
    e = p - y
    log_cosh, tanh, sech2 = log_cosh_parts(abs(e), k)
    return log_cosh, math.copysign(tanh, e), sech2  # (one bitwise select, vectorised)


@loss_math(sum_in_loop_from=BEYOND_L2, wide_vectors=False)
def _squared_hinge(y, s, param, pos, k):
    slack = param[0] - times(y, s)  # a label of 0 times an infinite score is 0, as hinge
    active = ZERO if slack <= ZERO else slack  # max(slack, 0), NaN kept
    # 2 t^2 where the margin is violated, 0 from the kink on; NaN kept
    # -2 t max(slack, 0), +0 (not -t 0 = -0 for t > 0) where the margin holds; NaN kept
    d = -TWO * y * active if slack > ZERO else _zero_or_nan(slack)
    return active * active, d, TWO * y * y if slack > ZERO else _zero_or_nan(slack)


@loss_math(EXP32_LOW, LOG1P32)
def _soft_margin(y, s, param, pos, k):
    # softplus(z), z = -t s: max(z, 0) + log1p(exp(-|z|)); d = -t sigmoid(z)
    exp_k, log1p_k = k
    z = -times(y, s)
    t = fast_exp_nonpositive(-abs(z), exp_k)
    one_t = ONE + t
    loss = (z if z > ZERO else ZERO) + fast_log1p(t, log1p_k)
    sigma = (ONE if z >= ZERO else t) / one_t
    return loss, -y * sigma, y * y * t / (one_t * one_t)


# (streaming its gradient, its value kernel took 1.10x as long at 1e8: kept plain)
@loss_math(sum_in_loop_from=BEYOND_L2, wide_vectors=False, stream_with_value=False)
def _pinball(y, p, param, pos, k):
    # and 1 - quantile, 0 - quantile (``prepare_pinball``)
    quantile, upper, lower = param[0], param[1], param[2]
    e = p - y
    # a coefficient of 0 (quantile 0 or 1) times an infinite e is 0: the max's limit
    # (quantile |e|, not -quantile e: +0 at a tie, y = -0 included, not -0)
    loss = times(upper, e) if e > ZERO else times(quantile, abs(e))
    d = upper if e > ZERO else (lower if e < ZERO else _zero_or_nan(e))  # +0 at a tie
    return loss, d, _zero_or_nan(e)  # piecewise linear: 0 (at the kink too)


MATH = {"mse": _mse, "binary_cross_entropy": _binary_cross_entropy,
        "binary_cross_entropy_with_logits": _binary_cross_entropy_with_logits, "hinge": _hinge,
        "mae": _mae, "huber": _huber, "smooth_l1": _smooth_l1, "log_cosh": _log_cosh,
        "squared_hinge": _squared_hinge, "soft_margin": _soft_margin, "pinball": _pinball}
LOSSES = (*MATH, *BY_OPTION)


def variants(loss: str) -> dict:
    """Every function ``loss`` may run, by the key ``variant`` gives."""
    return BY_OPTION[loss] if loss in BY_OPTION else {None: MATH[loss]}


def variant(loss: str, params: tuple) -> tuple:
    """(the key of the function this call runs, the three floats its ``param`` holds, the
    positive weight or None)."""
    if loss == "sigmoid_focal":
        a, b, gamma = params
        power = int(gamma) if gamma in (0.0, 1.0, 2.0, 3.0, 4.0) else -1
        return power, (a, b, gamma), None
    if loss == "poisson_nll":
        log_input, full, eps = params
        return (log_input, full), (0.0, 0.0, eps), None
    if loss == "kl_div":
        return params[0], _NO_PARAM, None
    if loss == "binary_cross_entropy_with_logits":
        return None, _NO_PARAM, params[0]
    return None, (*params, 0.0, 0.0, 0.0)[:3], None


_NO_PARAM = (0.0, 0.0, 0.0)
