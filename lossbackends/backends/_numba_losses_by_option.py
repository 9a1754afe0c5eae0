"""The elementwise losses whose options pick their mathematics (``sigmoid_focal``'s
integer ``gamma``, ``poisson_nll``'s two flags, ``kl_div``'s ``log_target``), for the Numba
kernels: each setting a function of its own, compiled into a kernel of its own, so that no
branch on an option is left inside the vectorised loop (see ``_numba_losses``). Declared
with ``_numba_loss_math.loss_math``.
"""
from __future__ import annotations

import numpy as np
from numba import types
from numba.extending import overload

from ._host import rounding_of_sum
from ._numba_intrinsics import INLINE, fma, inline
from ._numba_loss_math import TWO, _f32, _zero_or_nan, loss_math
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
    fast_exp,
    fast_exp_nonpositive,
    fast_exp_normal,
    fast_log,
    fast_log1p,
    fast_log_normal,
    times,
)


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
        # p (1 - p) / q: its limit 0 where q is 0 (q < 0 for a label beyond [0, 1]: the
        # derivative of the formula as written, as the NumPy backend)
        r = p * c / q if q != ZERO else ZERO
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


_rounding_of_sum = inline(rounding_of_sum)  # (TwoSum: see there)


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
            # d = 1 - y / s and h = y / s^2, s = x + eps, from one reciprocal of s: the
            # compiler turns two divisions by s into one anyway, and the gradient must
            # round the same with the Hessian as without. Below 2^-60, s is scaled by 2^64
            # (exactly undone): 1 / s overflows for a subnormal s. Above 2^100 by 2^-64:
            # 1 / s is subnormal from 2^126 (float32; 2^1022), and its lost digits gave
            # 1 - y / s = 6e-8 at y = s (y 2^64 / s is below 2^92 there: no overflow).
            # Never 1 / s^2, which is subnormal sooner.
            scale = (TWO_64 if abs(shifted) < TWO_MINUS_60
                     else TWO_MINUS_64 if abs(shifted) > TWO_100 else ONE)
            inv = ONE / (shifted * scale)
            ratio = times(y, inv) * scale
            d = ONE - ratio
            h = times(ratio, inv) * scale
            # y log(x + eps) of the exact sum s + r (r: the rounding of s): y log s + y r /
            # s. A rate near 1 loses eps in s (float32: all of it from 0.25 on), and
            # y log s then y's digits (1,700 ulp at y = 1e4, x = 1). None to add where it
            # is not finite: s overflowed (NaN), or y / s did (a finite loss, not +-inf)
            correction = ratio * _rounding_of_sum(x, eps, shifted)
            correction = correction if abs(correction) < INF else ZERO
            loss = x - (y * log + correction)
            if at_limits:
                # NaN at x = inf (inf - inf) and at y = 0 with an infinite log (0 inf),
                # where the loss is x
                limit = (x == INF) & (abs(y) < INF) | (y == ZERO) & (abs(log) == INF)
                loss = x if limit else loss
        if full:  # Stirling's term, PyTorch's: y log y - y + log(2 pi y) / 2 where y > 1
            # (NaN at y = inf, where inf log(inf) - inf was NaN too)
            log_y = fast_log_normal(y if y > ONE else ONE, k[-1])
            stirling = y * log_y - y + HALF * plus_log_2pi(log_y)
            loss = loss + (stirling if y > ONE else ZERO)
        return loss, d, h

    return poisson


EXP_NORMAL_BOUND = _f32(87.0)  # |x| within which fast_exp_normal(x) is exact
# (exact in float32 and float64)
TWO_64, TWO_MINUS_64 = _f32(2.0**64), _f32(2.0**-64)
TWO_100, TWO_MINUS_60 = _f32(2.0**100), _f32(2.0**-60)
LOG_2PI = float(np.log(2.0 * np.pi))
# float32's, as two float32 parts (the second adds what the first rounded away)
LOG_2PI_HI = _f32(LOG_2PI)
LOG_2PI_LO = _f32(LOG_2PI - float(LOG_2PI_HI))


def plus_log_2pi(v):
    """v + log(2 pi), in v's dtype: float64 adds the float64 constant, rounding once. (It
    added the two float32 parts, 48 of the constant's 53 bits: Stirling's term was 4.6 ulp
    off, a review found.)"""
    return v + LOG_2PI


@overload(plus_log_2pi, jit_options=INLINE)
def _plus_log_2pi(v):
    if v == types.float32:
        return lambda v: (v + LOG_2PI_HI) + LOG_2PI_LO
    return lambda v: v + LOG_2PI


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


_FOCAL = {power: _focal(power) for power in (-1, 0, 1, 2, 3, 4)}
_POISSON = {(log_input, full): _poisson(log_input, full)
            for log_input in (True, False) for full in (True, False)}
_KL = {log_target: _kl(log_target) for log_target in (True, False)}
# each such loss's functions, by the key ``_numba_losses.variant`` gives
BY_OPTION = {"sigmoid_focal": _FOCAL, "poisson_nll": _POISSON, "kl_div": _KL}
