"""Vectorisable exp, expm1, tanh, log and log1p in float64 for the Numba kernels.

``_numba_math.py``'s float32 algorithms at float64's length (Taylor's exp to degree 13,
fdlibm's ``log``; within 0.85 ulp, log1p 1.25, tanh 2.25): libm's scalar calls had made
the float64 losses 5-30x slower than float32 (with them, value_and_grad of BCE with logits
at n = 1e6 took 10.3 ms in float64 against 0.46 in float32, and PyTorch's float64 forward
pass alone 2.8 ms). Within those bounds (tests/test_numba_math.py, against long double);
the same bits wherever an element sits in an array (fused products by name, ``fma``).
``_numba_math``'s ``fast_*`` functions take these for float64 arguments.
"""

from __future__ import annotations

import math

import numpy as np

from ._numba_intrinsics import fma, horner, inline, positive_normal, power_of_two, split_for_log

_f64 = np.float64

# 1.5 2^52 + 1023: ``ROUNDER``'s float64 twin (n + 1023 in the pattern's low bits)
ROUNDER64 = _f64(6755399441055744.0 + 1023.0)


# fdlibm's ln 2 in two parts: LN2_HI64 n is exact for |n| < 2^21
LN2_HI64 = _f64(6.93147180369123816490e-01)
LN2_LO64 = _f64(1.90821492927058770002e-10)
LOG2E64 = _f64(1.4426950408889634)
# e^f - 1 = f + f^2 (1/2! + f/3! + ... + f^11/13!) on |f| <= ln2/2: Taylor's terms to
# degree 13, whose remainder is under 4.3e-18 relative (a 26th of half an ulp)
_EXP64_TAYLOR = tuple(_f64(1.0 / math.factorial(k)) for k in range(13, 1, -1))


@inline
def _exp64_reduced_minus_one(x):
    """``_exp32_reduced_minus_one`` in float64: (e^f - 1, n + ROUNDER64)."""
    rounded = fma(x, LOG2E64, ROUNDER64)
    n = rounded - ROUNDER64  # exact
    high = fma(n, -LN2_HI64, x)  # exact
    f = fma(n, -LN2_LO64, high)
    # what rounding f lost (high - f is exact or nearly: the two are close), carried to
    # the last addition: without it e^f - 1 was off by up to 0.85 ulp before any
    # rounding of its own
    lost = fma(n, -LN2_LO64, high - f)
    p = horner(f, _EXP64_TAYLOR)
    # f + f^2 p + lost (1 + f): e^(f + lost) - 1, the small terms first
    return f + fma(p * f, f, fma(lost, f, lost)), rounded


# exp(-746) is under half the smallest subnormal float64, exp(710) over the largest:
# everything beyond rounds to 0 or inf like the bounds themselves
EXP_LOW64, EXP_HIGH64 = _f64(-746.0), _f64(710.0)
SHIFT64, TWO_TO_SHIFT64, TWO_TO_MINUS_SHIFT64 = _f64(64.0), _f64(2.0**64), _f64(2.0**-64)


@inline
def _exp64(x):
    """``_exp32`` in float64: subnormal results, overflow to inf, NaN and -inf included."""
    clamped = EXP_HIGH64 if x > EXP_HIGH64 else x
    clamped = EXP_LOW64 if clamped < EXP_LOW64 else clamped
    minus_one, rounded = _exp64_reduced_minus_one(clamped)
    low = rounded < ROUNDER64  # n < 0
    scale = power_of_two(rounded + (SHIFT64 if low else -SHIFT64))
    # 2^n e^f rounded once (``fma``), where (e^f - 1) + 1 first rounded it twice
    return fma(minus_one, scale, scale) * (TWO_TO_MINUS_SHIFT64 if low else TWO_TO_SHIFT64)


@inline
def _exp64_nonpositive(x):
    """``_exp32_nonpositive`` in float64: exp(x) for x <= 0, scaled as 2^(n + 64) 2^-64."""
    clamped = EXP_LOW64 if x < EXP_LOW64 else x
    minus_one, rounded = _exp64_reduced_minus_one(clamped)
    scale = power_of_two(rounded + SHIFT64)
    return fma(minus_one, scale, scale) * TWO_TO_MINUS_SHIFT64


@inline
def _exp64_normal(x):
    """exp(x) for x in [-708, 709], where it is a normal float64 (NaN kept)."""
    minus_one, rounded = _exp64_reduced_minus_one(x)
    scale = power_of_two(rounded)
    return fma(minus_one, scale, scale)


@inline
def exp_and_expm1_normal64(x):
    """``exp_and_expm1_normal32`` in float64: (exp(x), expm1(x)) for x in [-708, 709] (NaN
    kept), expm1 exact near 0."""
    minus_one, rounded = _exp64_reduced_minus_one(x)
    scale = power_of_two(rounded)
    return fma(minus_one, scale, scale), fma(minus_one, scale, scale - 1.0)


@inline
def tanh_parts64(a):
    """(tanh a, t, v) for float64 a >= 0 (or NaN), t = exp(-2a) and v = expm1(-2a) from one
    reduction, its argument kept where exp is normal (beyond a = 354, t is far below an
    ulp of 1): tanh a = -v / (2 + v) below a = 1, with no cancellation anywhere, and 1 - 2t
    / (1 + t) from 1 on, where 2 + v rounds (2.5 ulp of tanh a in the first form there,
    0.9 in the second): one division, of the terms its form takes. Within 2.25 ulp (2.24
    near a = 0.546, the most over 40 million points of [0.5, 0.6])."""
    x = -2.0 * a
    t, v = exp_and_expm1_normal64(-708.0 if x < -708.0 else x)
    near = a < 1.0
    # (|v|, not -v: tanh 0 = +0, as NumPy's)
    ratio = (abs(v) if near else 2.0 * t) / (2.0 + v if near else 1.0 + t)
    return (ratio if near else 1.0 - ratio), t, v


@inline
def _tanh64(x):
    return math.copysign(tanh_parts64(abs(x))[0], x)


# fdlibm's log (e_log.c): log(1 + f) = f - f^2/2 + s (f^2/2 + R(s^2)), s = f / (2 + f),
# R of degree 7 in s^2 on |s| <= 0.1716
LG64 = (_f64(6.666666666666735130e-01), _f64(3.999999999940941908e-01),
        _f64(2.857142874366239149e-01), _f64(2.222219843214978396e-01),
        _f64(1.818357216161805012e-01), _f64(1.531383769920937332e-01),
        _f64(1.479819860511658591e-01))
SMALLEST_NORMAL64 = _f64(2.0**-1022)
TWO_TO_54 = _f64(2.0**54)


@inline
def _log64_of_parts(e, m):
    """log(m 2^e) for m in [sqrt(1/2), sqrt(2)) (``split_for_log``), fdlibm's log."""
    f = m - 1.0
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    lg1, lg2, lg3, lg4, lg5, lg6, lg7 = LG64
    t1 = w * horner(w, (lg6, lg4, lg2))
    t2 = z * horner(w, (lg7, lg5, lg3, lg1))
    half_f2 = 0.5 * f * f
    return e * LN2_HI64 - ((half_f2 - (s * (half_f2 + (t2 + t1)) + e * LN2_LO64)) - f)


@inline
def _log64(x):
    """``_log32`` in float64 (fdlibm's log): subnormal x, 0, inf, negative x and NaN
    included."""
    tiny = x < SMALLEST_NORMAL64  # scaled into the normal range the bit split needs
    e, m = split_for_log(x * TWO_TO_54 if tiny else x)
    y = _log64_of_parts(e - (54.0 if tiny else 0.0), m)
    y = y if x < math.inf else x
    return y if x > 0.0 else (-math.inf if x == 0.0 else math.nan)


@inline
def _log64_normal(x):
    """``_log32_normal`` in float64."""
    e, m = split_for_log(x)
    y = _log64_of_parts(e, m)
    return y if positive_normal(x) else math.nan


@inline
def divide_apart(a, b, factor=2.0):
    """a / b, both times ``factor`` first (a power of two: exact short of overflow, and for
    1/2 short of a subnormal): a division whose divisor no other division shares. Numba
    sets "arcp" on every instruction of a kernel, and where two divisions share a divisor
    LLVM multiplies both by one reciprocal, in the kernels whose code has both: the
    float64 log1p's 1 + x is the softplus losses' sigmoid divisor too, and cross-entropy's
    gradient scale shares the row's sum of exps with the Hessian's, so gradients came 1
    ulp apart between ``grad``, ``value_and_grad`` and ``grad_and_hess``
    (``tests/test_hessians.py`` compares their bits)."""
    return (factor * a) / (factor * b)


@inline
def _log1p64(x):
    """log1p(x) for float64 x >= 0 (NaN kept): log(u) for u = 1 + x, plus what rounding
    1 + x lost, (x - (u - 1)) / u (u - 1 and that difference are exact): within an ulp,
    x itself where 1 + x rounds to 1."""
    u = 1.0 + x
    lost = divide_apart(x - (u - 1.0), u)  # (u: the sigmoid's divisor in the softplus losses)
    return _log64(u) + (lost if u < math.inf else 0.0)
