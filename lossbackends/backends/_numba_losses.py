"""The mathematics of every elementwise loss for the Numba kernels: one inlined function
per loss, ``(y, p, param, pos, k) -> (loss, d loss / d p, d2 loss / d p2)`` of one
element (``k``: its constants, see ``loss_math``; ``pos``: the positive weight of binary
cross-entropy with logits, None for every other loss: one signature for every loss's
function, which numba_backend's kernels call), and ``variant(loss, params)``: the function
a call uses and the numbers it takes.

``param`` is the kernel's one tuple of three options in the input's dtype (what each loss
keeps there: ``variant``). Options that change the formula (``poisson_nll``'s flags, an
integer ``gamma`` of ``sigmoid_focal``) pick a function of their own, compiled into a
kernel of its own, so that no branch on an option is left inside the vectorised loop.
Constants are float32, so float32 inputs compute in float32 (vectorised); float64 inputs
promote them. Comparisons are written so that NaN propagates. A kernel that asks for no
Hessian never uses the third result, and the compiler removes it.
"""
from __future__ import annotations

import math

import numpy as np
from numba import types
from numba.extending import overload

from ._numba_intrinsics import INLINE, fma, inline
from ._numba_math import (
    EXP32_LOW,
    EXP32_WIDE,
    HALF,
    INF,
    LOG1P32,
    LOG32,
    NAN,
    ONE,
    ZERO,
    exp_and_expm1_normal32,
    fast_exp,
    fast_exp_nonpositive,
    fast_exp_normal,
    fast_log,
    fast_log1p,
    fast_log_normal,
    times,
)
from ._numba_math64 import tanh_parts64

_f32 = np.float32
TWO = _f32(2.0)
FOUR = _f32(4.0)
LN2 = _f32(np.log(2.0))


# ``loss_math``'s ``sum_in_loop_from``: always, or from the size where a thread's share
# of y, p and the gradient outgrows its L2 (2^19 elements, 6 MB of float32 between two
# cores of 2 MB of L2 each; a multiple of ``CHUNKS``). ``IN_DRAM``: where an input
# streams from DRAM (2^21 elements, 25 MB: beyond the caches of the cores we run on, as
# far as a call's time shows), where the optimistic kernels prefetch.
ALWAYS, BEYOND_L2, IN_DRAM = 0, 1 << 19, 1 << 21


def loss_math(*constants, hard_labels=None, hard_gradient=False, sum_in_loop_from=None,
              wide_vectors=True, stream_with_value=True, limits=None, gradient_checked=False):
    """Compiles a loss's mathematics ``(y, p, param, pos, k)`` inline, and records in its
    ``constants`` the constant tuples of the ``fast_*`` functions it calls (``EXP32_WIDE``,
    ``EXP32_LOW``, ``LOG32``, ``LOG1P32``), in the order it reads them from ``k``, or None for none. The
    elementwise kernel takes ``held(constants)`` once before its loops and passes it as
    ``k`` (see ``_numba_intrinsics.held``: vectorised exp and log then keep their constants in
    registers, or on the stack, instead of fetching each again on every iteration).

    ``hard_labels``: the same loss for labels of 0 and 1 only, cheaper (compiled by this
    decorator too, with the same constants), which the kernel runs on blocks whose labels
    are all 0 or 1 (see ``numba_backend._elementwise_kernel``), or None.
    ``hard_gradient``: whether its gradient is cheaper too (else only the kernels that
    compute the value take it).
    ``sum_in_loop_from``: the least number of elements from which the kernel adds the
    losses in float64 in the loop that computes them (``ALWAYS``, ``BEYOND_L2``), instead of
    writing a block of them to L1 and summing it after (see
    ``numba_backend._elementwise_block``); None: never. The float64 sum caps LLVM's
    vectors at 4 lanes, which only losses of a few operations bear: MSE's value_and_grad
    then took 0.21 instead of 0.33 ns per element in L2 and 0.38 instead of 0.54 at 1e7
    (two threads), MAE's 0.29 and 0.42 instead of 0.31 and 0.52. Huber, smooth L1,
    (squared) hinge and pinball took 1.3-1.8x as long in L2 that way, but 0.56-0.98 of the
    time from 3e6 elements on, where the second pass over each block kept them at 57-85 %
    of the triad (2026-12-03, Xeon); the losses with an exp or a log took 3-6x as long
    (not vectorised at all).
    ``wide_vectors``: whether the kernel's loop over a block runs the CPU's widest vectors
    (``_numba_common.wide_vectors``): 512 bits instead of LLVM's 256 on AVX-512 CPUs.
    The losses with an exp or a log, MSE and MAE took 0.66-0.94 of the time with them in
    cache (n = 1e5, one thread) and 0.79-0.99 at 1e7; the piecewise losses of a few
    operations (hinge, squared hinge, huber, smooth L1, pinball) 1.04-1.19x as long at 1e4
    to 1e6: their block's loop keeps 256 (the block's sum, ``_sum_span``, is wide for all),
    except in the kernels that sum in their loop (from ``BEYOND_L2``), which take
    ``wide_form``, the same function compiled with ``wide_vectors``: there 512 took
    0.59-0.98 of the time (3e6 to 1e8, two threads), and the wide kernel summing in its
    loop overtook the block kernel from about 4e5 elements (0.76-0.85 of the time at 7e5
    to 1.5e6; at 2.7e5 to 3.3e5 hinge and pinball 1.05-1.16x as long): hence
    ``BEYOND_L2`` (2026-12-04, two threads).
    ``stream_with_value``: whether the kernel that sums the value in its loop may write
    the gradient by streaming stores, as the gradient-only kernel does
    (``_numba_common.STREAM_FROM_BYTES``).
    ``limits``: for a loss whose formula gives NaN where the value has a limit (0 inf,
    inf - inf) or where it is not computed (kl_div's log of 0, ``fast_log_normal``), its
    twin that takes those limits (compiled by this decorator too, with the same
    constants, the same gradient and Hessian), which the kernel runs from the first block
    whose sum came out NaN to the end of the thread's chunks
    (``numba_backend._elementwise_kernel``): a compare per block instead of selects per
    element (poisson_nll's value_and_grad took 0.48 instead of 0.57 ns per element in
    cache, one thread). The twin's value must equal the loss's own wherever that is not
    NaN (up to the sign of a zero, which the compiler's ``nsz`` leaves open anyway), and
    the value be summed from its block (``sum_in_loop_from`` None).
    ``gradient_checked``: whether the gradient and Hessian too are right only where the
    value is not NaN (an exp exact only within a range, the value NaN outside it): the
    kernels that do not sum the value, which could not tell, then run the ``limits`` twin."""
    assert limits is None or sum_in_loop_from is None, "limits need the block's sum"
    assert not gradient_checked or limits is not None, "a checked gradient needs a twin"
    assert limits is None or limits.constants == (constants or None), "one k for both"

    def compile_(function, wide=wide_vectors):
        compiled = inline(function)
        compiled.constants = constants or None
        # (the wide twin's form for hard labels is that form's wide twin)
        hard = hard_labels.wide_form if wide and hard_labels is not None else hard_labels
        compiled.hard_labels = hard
        compiled.hard_gradient = hard_gradient
        compiled.sum_in_loop_from = sum_in_loop_from
        compiled.wide_vectors = wide
        compiled.stream_with_value = stream_with_value
        compiled.limits = limits
        compiled.gradient_checked = gradient_checked
        # (a second dispatcher of the same function: ``wide_vectors_for`` reads the flag
        # from the function's type, so the two compile apart)
        compiled.wide_form = compiled if wide else compile_(function, True)
        if hard is not None:
            assert hard.constants == compiled.constants, "one k for both forms"
            assert hard.wide_vectors == wide, "one vector width for both"
        return compiled

    return compile_


@inline
def _zero_or_nan(e):
    """0, or NaN where e is NaN: the Hessian of a piecewise-linear loss, NaN where its
    gradient is."""
    return ZERO if e == e else e


@inline
def _sign(e):
    """sign(e): +0 at +-0 (NumPy's and PyTorch's), NaN kept."""
    return ONE if e > ZERO else (-ONE if e < ZERO else _zero_or_nan(e))


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


# Binary cross-entropy's logs take the clipped p and 1 - p, within [eps, 1 - eps] where
# eps is at least the dtype's machine epsilon (``_prepare.prepare_bce``), or NaN: normal
# numbers, so ``fast_log_normal`` gives ``fast_log``'s bits without its selects (the value
# took 0.63-0.69 instead of 0.80-0.84 ns per element in cache, labels of 0 and 1, one
# thread; 1.01-1.05 instead of 1.20 for probability labels).
@loss_math()
def _binary_cross_entropy_of_hard_labels(y, p, param, pos, k):
    # the same for y in {0, 1}, with one log instead of two: the other term is 0 * finite
    pc = _clip(p, param[0])
    return (-fast_log_normal(pc if y > HALF else ONE - pc), (pc - y) / (pc * (ONE - pc)),
            _bce_hess(y, pc))


# binary cross-entropy's log keeps its constants unheld: held, LLVM interleaved the
# one-log loop four times over and spilled (329 instructions per 32 elements, 119 of them
# to the stack), and the kernel measured 0.90-0.95x of the unheld one
@loss_math(hard_labels=_binary_cross_entropy_of_hard_labels)
def _binary_cross_entropy(y, p, param, pos, k):
    pc = _clip(p, param[0])
    loss = -(y * fast_log_normal(pc) + (ONE - y) * fast_log_normal(ONE - pc))
    return loss, (pc - y) / (pc * (ONE - pc)), _bce_hess(y, pc)


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
    s = lc[6]  # (by ``fma``: LLVM fuses no product and sum of its own)
    s = fma(s, z, lc[5])
    s = fma(s, z, lc[4])
    s = fma(s, z, lc[3])
    s = fma(s, z, lc[2])
    s = fma(s, z, lc[1])
    s = fma(s, z, lc[0])
    log1p_t = fma(t * t, fma(fma(fma(m[3], t, m[2]), t, m[1]), t, m[0]), t)  # t <= exp(-2)
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
    return active * active, -TWO * y * active, TWO * y * y if slack > ZERO else _zero_or_nan(slack)


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


def _power(power):
    """q^gamma by ``power`` multiplications (0 to 4), or by pow (-1)."""

    @inline
    def power_of(q, gamma):
        if power == 0:
            return ONE + ZERO * q
        if power == 1:
            return q
        if power == 2:
            return q * q
        if power == 3:
            return q * q * q
        if power == 4:
            return (q * q) * (q * q)
        return q**gamma

    return power_of


def _focal(power):
    """sigmoid_focal with q^gamma by ``power`` multiplications (0 to 4), or by pow (-1)."""
    power_of = _power(power)

    def hard_labels_form(at_limits):
        """The form for labels of 0 and 1; ``at_limits``: its twin that takes the value's
        limit where modulator ce is NaN (``loss_math``'s ``limits``)."""

        @loss_math(EXP32_LOW, LOG1P32, limits=None if at_limits else hard_labels_form(True))
        def focal_of_hard_labels(y, x, param, pos, k):
            # For y in {0, 1} the loss is a function of z = x (y = 0) or -x (y = 1) alone:
            # alpha_t q^gamma softplus(z), q = sigmoid(z) = 1 - p_t, r = 1 - q = sigmoid(-z).
            # d/dz = alpha_t q^gamma g, g = q + gamma r softplus(z) (q' = q r, softplus' = q);
            # d2/dz2 = alpha_t q^gamma (r (gamma g + q (1 + gamma)) - gamma q r softplus(z)).
            # The general form's loss (below) at these labels, bit for bit, without its
            # division by q and its 1 - 2y: the gradient rounds once less. The sign of z goes
            # back into the gradient.
            a, b, gamma = param
            exp_k, log1p_k = k
            label_1 = y > HALF
            z = -x if label_1 else x
            t = fast_exp_nonpositive(-abs(z), exp_k)
            inv = ONE / (ONE + t)
            above = z >= ZERO
            q = (ONE if above else t) * inv
            r = (t if above else ONE) * inv
            ce = (z if above else ZERO) + fast_log1p(t, log1p_k)  # softplus(z)
            modulator = (a if label_1 else b) * power_of(q, gamma)
            # r softplus(z), 0 at z = inf: 0 wherever r is (r = sigmoid(-z) >= 0; a NaN r
            # comes with a NaN q), a compare and a zeroing product, where ``times`` took
            # five operations (a cap on ce took one, but one more constant spilled the
            # gradient's loop: 0.95 instead of 0.88 ns per element in cache)
            rce = r * ce if r > ZERO else ZERO
            g = fma(gamma, rce, q)  # terms >= 0: nothing cancels
            dz = modulator * g
            h = modulator * (r * (gamma * g + q * (ONE + gamma)) - gamma * q * rce)
            # at z = inf the loss is inf, or 0 where alpha_t is 0 (q = 1 there): modulator ce
            # is NaN there (0 inf), where the twin ``at_limits`` takes its limit
            loss = times(modulator, ce) if at_limits else modulator * ce
            return loss, (-dz if label_1 else dz), h

        return focal_of_hard_labels

    focal_of_hard_labels = hard_labels_form(False)

    @loss_math(EXP32_LOW, LOG1P32, hard_labels=focal_of_hard_labels, hard_gradient=True)
    def focal(y, x, param, pos, k):
        # torchvision's definition; see the NumPy backend for the derivation.
        # param: (a, b, gamma) with alpha_t = a y + b (1 - y).
        a, b, gamma = param
        exp_k, log1p_k = k
        t = fast_exp_nonpositive(-abs(x), exp_k)
        inv = ONE / (ONE + t)
        p = (ONE if x >= ZERO else t) * inv  # sigmoid(x)
        c = (t if x >= ZERO else ONE) * inv  # 1 - sigmoid(x), without cancellation
        q = p * (ONE - y) + c * y  # 1 - p_t
        # BCE with logits: (1 - y) x for x >= 0, -y x below, + log1p(exp(-|x|))
        ce = times(ONE - y if x >= ZERO else -y, x) + fast_log1p(t, log1p_k)
        alpha_t = a * y + b * (ONE - y)
        modulator = alpha_t * power_of(q, gamma)
        r = p * c / q if q > ZERO else ZERO  # p (1 - p) / q: its limit 0 where q is 0
        rce = times(r, ce)
        s = ONE - TWO * y  # dq/dx = p (1 - p) s
        # p - y = q - 2 y (1 - p): no p - 1 to cancel for a label of 1 (x large; q = 1 - p
        # exactly there)
        residual = q - TWO * y * c
        d = modulator * (residual + gamma * s * rce)
        # the derivative of d, with d(p (1 - p))/dx = p (1 - p) (1 - 2p), 1 - 2p = c - p:
        # alpha_t q^gamma (gamma (gamma - 1) s^2 r^2 ce + gamma s r (c - p) ce
        #                  + 2 gamma s r (p - y) + p (1 - p))
        h = modulator * (gamma * (gamma - ONE) * s * s * r * rce + gamma * s * (c - p) * rce
                         + TWO * gamma * s * r * residual + p * c)
        # at an infinite x, ce is inf: the loss is inf where alpha_t q > 0 (even if q^gamma
        # underflows), else 0
        limit = INF if alpha_t > ZERO and q > ZERO else ZERO
        return (limit if ce == INF else modulator * ce), d, h

    return focal


def _poisson(log_input, full, at_limits=False):
    """poisson_nll for one setting of its two flags; ``at_limits``: its form that takes
    the value's limits where the formula gives NaN (``loss_math``'s ``limits``)."""

    # k: exp's constants first with log_input, log's last where it takes a log
    @loss_math(*((EXP32_WIDE,) if log_input else ()),
               *((LOG32,) if full or not log_input else ()),
               limits=None if at_limits else _poisson(log_input, full, True),
               gradient_checked=log_input and not at_limits)
    def poisson(y, x, param, pos, k):
        eps = param[2]
        if log_input:  # x = log(rate): exp(x) - y x
            # (not at_limits: exp without fast_exp's clamp and two-factor scaling, exact
            # where exp(x) is normal; ``gradient_checked``)
            rate = fast_exp(x, k[0]) if at_limits else fast_exp_normal(x, k[0][0])
            loss, d, h = rate - y * x, rate - y, rate
            if not at_limits:  # (a closure constant)
                # NaN beyond |x| = 87, which sends the block to the twin: 0.93 of
                # value_and_grad's time in cache
                loss = loss if abs(x) <= EXP_NORMAL_BOUND else NAN
            else:
                # NaN at y = 0 with an infinite x (0 inf) and where exp(x) and y x are both
                # inf (x = inf, or x > 88 with a huge y in float32), where the loss is
                # exp(x): inf, or 0 at x = -inf; NaN y and inf y kept
                loss = rate if (loss != loss) & (abs(y) < INF) else loss
        else:  # x = rate: x - y log(x + eps)
            shifted = x + eps
            # (below at_limits: NaN where x + eps is not a positive normal number, 0 and
            # an overflowed inf among them, which sends the block to the twin;
            # ``fast_log_normal``)
            log = fast_log(shifted, k[-1]) if at_limits else fast_log_normal(shifted, k[-1])
            loss = x - y * log
            if at_limits:
                # NaN at x = inf (inf - inf) and at y = 0 with an infinite log (0 inf),
                # where the loss is x
                limit = (x == INF) & (abs(y) < INF) | (y == ZERO) & (abs(log) == INF)
                loss = x if limit else loss
            # d = 1 - y / s and h = y / s^2, s = x + eps, from one reciprocal of s: the
            # compiler turns two divisions by s into one anyway, and the gradient must
            # round the same with the Hessian as without. Below 2^-60, s is scaled by 2^64
            # (exactly undone): 1 / s overflows for a subnormal s. Never 1 / s^2, which is
            # subnormal sooner.
            scale = TWO_64 if abs(shifted) < TWO_MINUS_60 else ONE
            inv = ONE / (shifted * scale)
            ratio = times(y, inv) * scale
            d = ONE - ratio
            h = times(ratio, inv) * scale
        if full:  # Stirling's term, PyTorch's: y log y - y + log(2 pi y) / 2 where y > 1
            # (NaN at y = inf, where inf log(inf) - inf was NaN too)
            log_y = fast_log_normal(y if y > ONE else ONE, k[-1])
            stirling = y * log_y - y + HALF * (log_y + LOG_2PI_HI + LOG_2PI_LO)
            loss = loss + (stirling if y > ONE else ZERO)
        return loss, d, h

    return poisson


EXP_NORMAL_BOUND = _f32(87.0)  # |x| within which fast_exp_normal(x) is exact
TWO_64, TWO_MINUS_60 = _f32(2.0**64), _f32(2.0**-60)  # exact in float32 and float64
# log(2 pi) as two float32 parts: float64 inputs promote both and keep every digit
LOG_2PI_HI = _f32(np.log(2.0 * np.pi))
LOG_2PI_LO = _f32(np.log(2.0 * np.pi) - float(LOG_2PI_HI))


def _kl(log_target, at_limits=False):
    """kl_div with log-probability targets or probabilities; ``at_limits``: its form for
    probabilities that takes the value's limits (``loss_math``'s ``limits``)."""
    plain = not log_target and not at_limits

    @loss_math(EXP32_WIDE if log_target else LOG32, limits=_kl(False, True) if plain else None)
    def kl_div(y, x, param, pos, k):
        target = fast_exp(y, k[0]) if log_target else y
        # (plain, a closure constant: NaN where y is not a positive normal number, 0 among
        # them, ``fast_log_normal``; the twin takes those blocks)
        log_y = y if log_target else (fast_log_normal(y, k[0]) if plain else fast_log(y, k[0]))
        loss = target * (log_y - x)
        if not plain:
            # a target of probability 0 costs nothing, even at x = -inf (0 log 0 = 0); NaN
            # x stays NaN
            loss = ZERO if target == ZERO and x == x else loss
        # linear in x: Hessian 0 (NaN where the gradient is)
        return loss, -target, _zero_or_nan(target)

    return kl_div


# (streaming its gradient, its value kernel took 1.10x as long at 1e8: kept plain)
@loss_math(sum_in_loop_from=BEYOND_L2, wide_vectors=False, stream_with_value=False)
def _pinball(y, p, param, pos, k):
    quantile, upper = param[0], param[1]  # and 1 - quantile (``prepare_pinball``)
    e = p - y
    # a coefficient of 0 (quantile 0 or 1) times an infinite e is 0: the max's limit
    loss = times(upper, e) if e > ZERO else times(-quantile, e)
    d = upper if e > ZERO else (-quantile if e < ZERO else ZERO * e)  # 0 at a tie, NaN kept
    return loss, d, _zero_or_nan(e)  # piecewise linear: 0 (at the kink too)


MATH = {"mse": _mse, "binary_cross_entropy": _binary_cross_entropy,
        "binary_cross_entropy_with_logits": _binary_cross_entropy_with_logits, "hinge": _hinge,
        "mae": _mae, "huber": _huber, "smooth_l1": _smooth_l1, "log_cosh": _log_cosh,
        "squared_hinge": _squared_hinge, "soft_margin": _soft_margin, "pinball": _pinball}
_FOCAL = {power: _focal(power) for power in (-1, 0, 1, 2, 3, 4)}
_POISSON = {(log_input, full): _poisson(log_input, full)
            for log_input in (True, False) for full in (True, False)}
_KL = {log_target: _kl(log_target) for log_target in (True, False)}
LOSSES = (*MATH, "sigmoid_focal", "poisson_nll", "kl_div")


def variants(loss: str) -> dict:
    """Every function ``loss`` may run, by the key ``variant`` gives."""
    if loss == "sigmoid_focal":
        return _FOCAL
    if loss == "poisson_nll":
        return _POISSON
    if loss == "kl_div":
        return _KL
    return {None: MATH[loss]}


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
