"""Vectorisable exp, log, log1p and tanh for the Numba kernels: the ``fast_*`` functions.

LLVM vectorises a loop only if every call in it has a vector form; Numba's ``math.exp``
and ``math.log`` have none without SVML (which current llvmlite builds lack), so the hot
loops would run one scalar libm call per element. float32's ``exp`` is the Cephes
single-precision algorithm, ``log`` Cephes' ``logf`` (FreeBSD's range reduction, then a
polynomial in m - 1 by fused products, no division; under 1 ulp), written with bit casts
so that LLVM turns them into SIMD code: here, with the ``fast_*`` functions the kernels call, which take these for float32,
``_numba_math64.py``'s twins for float64 and ``math``'s functions for other types. The bit
tricks, fused products and compile flags they are built from: ``_numba_intrinsics.py``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from numba import types
from numba.core.errors import NumbaIRAssumptionWarning
from numba.extending import overload

from ._numba_intrinsics import (
    INLINE,
    fma,
    horner,
    inline,
    positive_normal,
    power_of_two,
    split_for_log,
)
from ._numba_math64 import (
    SMALLEST_NORMAL64,
    _exp64,
    _exp64_nonpositive,
    _exp64_normal,
    _log1p64,
    _log64,
    _log64_normal,
    _tanh64,
)

# Numba's "pedantic" SSA check flags the selects of these inlined functions (its own
# message asks for a bug report); the code is correct and vectorised, so the warning is
# silenced for these functions only.
warnings.filterwarnings("ignore", message=r".*variable '[^']*_(exp|log|log1p|tanh)(32|64)_", category=NumbaIRAssumptionWarning)

_f32 = np.float32
LOG2E = _f32(1.44269504088896341)
LN2_HI = _f32(0.693359375)
LN2_LO = _f32(-2.12194440e-4)
# exp(-104) < 2^-150, half the smallest subnormal: it and everything below round to 0;
# exp(89) is over the largest float32: it and everything above round to inf
EXP_LOW = _f32(-104.0)
EXP_HIGH = _f32(89.0)
SMALLEST_NORMAL = _f32(2.0**-126)
INF = _f32(np.inf)
NAN = _f32(np.nan)
HALF = _f32(0.5)
ONE = _f32(1.0)
ZERO = _f32(0.0)


@inline
def times(k, v):
    """k v, 0 where k = 0 and v is infinite: a term of coefficient 0 contributes nothing
    (a loss's limit at an infinite prediction, as 0 log 0 = 0; a softmax of 0 times an
    overflowed coefficient); NaN kept."""
    return ZERO if k == ZERO and abs(v) == INF else k * v


# 1.5 2^23 + 127: for |t| < 2^22, t + ROUNDER rounds t to the nearest integer n (float32
# has no bits below 1 there), and the low bits of its pattern hold n + 127, the biased
# exponent of 2^n: one add gives both n and, by a shift, 2^n.
ROUNDER = _f32(12582912.0 + 127.0)


def fast_exp(x, constants=None):
    """exp(x): vectorisable for float32 (subnormal results, overflow to inf, NaN and
    -inf included), ``math.exp`` otherwise. ``constants``: ``held(EXP32_WIDE)``, taken
    before a loop (see ``held``), or None; likewise for the functions below."""
    return math.exp(x)


def fast_exp_nonpositive(x, constants=None):
    """exp(x) for x <= 0 (-inf and NaN included; wrong above 43): ``fast_exp``'s bits,
    subnormal results included, with neither its upper clamp nor its choice between two
    scalings (the softplus family's exp(-|x|)). ``constants``: ``held(EXP32_LOW)`` or None."""
    return math.exp(x)


def fast_log(x, constants=None):
    """log(x): vectorisable for float32 (subnormal x, 0, inf, negative x and NaN included),
    ``math.log`` otherwise. ``constants``: ``held(LOG32)`` or None."""
    return math.log(x)


def fast_log_normal(x, constants=None):
    """log(x) for a positive normal x, with ``fast_log``'s bits there; NaN for every other x
    (0, subnormals, negatives, infinities, NaN), where callers take the limits elsewhere
    (see ``loss_math``'s ``limits``): vectorisable for float32, ``math.log`` otherwise.
    ``constants``: ``held(LOG32)`` or None. (kl_div's value took 0.51 instead of 0.65 ns
    per element in cache without ``fast_log``'s selects.)"""
    # (outside Numba, as a Python float)
    return math.log(x) if SMALLEST_NORMAL64 <= x < math.inf else math.nan


def fast_log1p(x, constants=None):
    """log1p(x): vectorisable for float32 x in [0, 1] (subnormal x included; every
    caller's case: exp(-|x|)), ``math.log1p`` otherwise. ``constants``: ``held(LOG1P32)``
    or None."""
    return math.log1p(x)


def fast_tanh(x, constants=None):
    """tanh(x): vectorisable for float32 (within 5.75 ulp; +-1 at +-inf, NaN kept),
    ``math.tanh`` otherwise. ``constants``: ``held(TANH32)`` or None."""
    return math.tanh(x)


def tanh_slope(t):
    """1 - t^2, tanh's derivative from t = tanh(u) (softcap's chain rule), rounded once by
    a fused multiply-add in t's dtype: t^2 is not rounded before the difference, which
    cancels near |t| = 1."""
    return 1.0 - t * t


def sech_squared(u, t):
    """1 - tanh(u)^2 for t = tanh(u): ``tanh_slope(t)`` where |u| <= 1 (t^2 <= 0.58:
    nothing cancels), else 4 s / (1 + s)^2 with s = exp(-2 |u|), which keeps its relative
    accuracy where 1 - t^2 cancels (a saturated softcap logit's slope: from |u| = 8.3 on,
    float32's t is 1 and 1 - t^2 is 0; at |u| = 6 one ulp of t moved it by 0.5 %). 0 at an
    infinite u, NaN kept."""
    a = abs(u)
    if a <= 1.0:
        return 1.0 - t * t
    s = math.exp(-2.0 * a)
    return 4.0 * s / ((1.0 + s) * (1.0 + s))


def capped_tanh(v, cap, inv_cap):
    """t = tanh(u) back from softcap's capped logit v = cap t, as v times ``inv_cap`` =
    1 / cap, and exactly +-1 where v is +-cap: there tanh(u) rounded to 1, and the product
    may round to 1 - ulp, which left the chain rule's 1 - t^2 at 2 eps (a gradient of
    about 1e-16 in float64, 6e-8 in float32) where tanh's own t gives 0, as NumPy's does."""
    t = v * inv_cap
    return t if abs(v) != cap else math.copysign(1.0, v)


def softcap_near_zero(x, cap, constants):
    """``(cap tanh(x / cap), reach)`` for |x| <= cap, ``constants`` =
    ``softcap_constants(cap)``: for float32 a polynomial in x^2 with no division and no
    product by 1 / cap, and reach = x^2; otherwise ``fast_tanh`` of u = x / cap (by the
    product with ``constants[1]``), and reach = u^2. Beyond |x| = cap the first is wrong:
    the caller compares the row's largest reach with ``constants[2]``."""
    u = x / cap
    return cap * math.tanh(u), u * u


def fast_exp_normal(x, constants=None):
    """exp(x) for x in [-87, 88], where exp(x) is a normal float32: vectorisable for
    float32 and cheaper than ``fast_exp`` (no clamp, no subnormal scaling); NaN stays
    NaN; ``math.exp`` otherwise. Beyond that range its float32 result is wrong, not NaN
    (its 2^n wraps): callers bound x. ``constants``: ``held(EXP32)`` or None (see
    ``held``)."""
    return math.exp(x)


SHIFT = _f32(64.0)
TWO_TO_SHIFT = _f32(2.0**64)
TWO_TO_MINUS_SHIFT = _f32(2.0**-64)
# exp's constants (``held`` takes them as one tuple): log2(e), ROUNDER, -ln 2 in two
# parts, the minimax polynomial of e^f from its highest coefficient, and 1
EXP32 = (LOG2E, ROUNDER, -LN2_HI, -LN2_LO, _f32(1.9875691500e-4), _f32(1.3981999507e-3),
         _f32(8.3334519073e-3), _f32(4.1665795894e-2), _f32(1.6666665459e-1),
         _f32(5.0000001201e-1), ONE)


@inline
def _exp32_reduced_minus_one(x, k=EXP32):
    """``(e^f - 1, n + ROUNDER)`` with x = n ln 2 + f, |f| <= ln2/2 (Cody-Waite), e^f - 1
    by the minimax polynomial, before any 1 is added: exact to its last bits near 0.
    ``k``: ``EXP32``, or the same ``held``."""
    log2e, rounder, minus_ln2_hi, minus_ln2_lo, p5, p4, p3, p2, p1, p0, one = k
    rounded = fma(x, log2e, rounder)  # n + ROUNDER, n = round(x / ln 2)
    n = rounded - rounder  # exact
    f = fma(n, minus_ln2_lo, fma(n, minus_ln2_hi, x))
    p = horner(f, (p5, p4, p3, p2, p1, p0))
    return fma(p * f, f, f), rounded


@inline
def _exp32_reduced(x, k=EXP32):
    """``(e^f, n + ROUNDER)`` (see ``_exp32_reduced_minus_one``): exp(x) is the first times
    2^n, which each caller scales its way."""
    minus_one, rounded = _exp32_reduced_minus_one(x, k)
    return minus_one + k[10], rounded


@inline
def exp_and_expm1_normal32(x, k=EXP32):
    """``(exp(x), expm1(x))`` for float32 x in [-87, 88], where exp(x) is a normal float32
    (NaN kept), from one reduction: expm1 = 2^n (e^f - 1) + (2^n - 1), one rounding, so
    exact near 0, where exp(x) - 1 cancels. ``k``: ``EXP32``, or the same ``held``."""
    minus_one, rounded = _exp32_reduced_minus_one(x, k)
    scale = power_of_two(rounded)
    return (minus_one + k[10]) * scale, fma(minus_one, scale, scale - k[10])


@inline
def _exp32_normal(x, k=EXP32):
    mantissa, rounded = _exp32_reduced(x, k)
    return mantissa * power_of_two(rounded)


# fast_exp's constants: exp's, then the clamp's bounds and the two-factor scaling's
EXP32_WIDE = (EXP32, (EXP_LOW, EXP_HIGH, SHIFT, -SHIFT, TWO_TO_SHIFT, TWO_TO_MINUS_SHIFT))


@inline
def _exp32(x, k=EXP32_WIDE):
    reduced, scaling = k
    low_bound, high_bound, shift, minus_shift, two_to_shift, two_to_minus_shift = scaling
    # clamp x to [EXP_LOW, EXP_HIGH] with NaN kept, by two selects in turn (they compile
    # to a min and a max, where one nested select took two compares and two blends): NaN
    # then flows through the arithmetic, and every x below or above rounds to 0 or inf like
    # the bounds themselves
    clamped = high_bound if x > high_bound else x
    clamped = low_bound if clamped < low_bound else clamped
    mantissa, rounded = _exp32_reduced(clamped, reduced)
    # 2^n for n in [-150, 128] as two normal factors, 2^(n + 64) 2^-64 or 2^(n - 64) 2^64:
    # a subnormal or overflowing result is rounded once, by the last product (a bare 2^n
    # would need n >= -126: results below 2^-126 would flush to 0)
    low = rounded < reduced[1]  # n < 0 (reduced[1] is ROUNDER)
    y = mantissa * power_of_two(rounded + (shift if low else minus_shift))
    return y * (two_to_minus_shift if low else two_to_shift)


# fast_exp_nonpositive's constants: exp's with the rounder 64 higher (its 2^n is then 2^(n +
# 64), normal for every n >= -150), the clamp's lower bound, and 2^-64
EXP32_LOW = ((*EXP32[:1], _f32(ROUNDER + 64.0), *EXP32[2:]), EXP_LOW, TWO_TO_MINUS_SHIFT)


@inline
def _exp32_nonpositive(x, k=EXP32_LOW):
    reduced, low_bound, two_to_minus_shift = k
    clamped = low_bound if x < low_bound else x  # NaN kept
    mantissa, rounded = _exp32_reduced(clamped, reduced)
    # 2^(n + 64) 2^-64: the result, if subnormal, is rounded once, by the last product
    # (``_exp32``'s scaling for n < 0, taken for every n: exact for a normal result)
    return mantissa * power_of_two(rounded) * two_to_minus_shift


# log(1 + f) = f - f^2/2 + f^3 P(f) on sqrt(1/2) - 1 <= f < sqrt(2) - 1, P of degree 8
# (Cephes' logf, 7.6e-8 relative): fused products only, where FreeBSD's form, s = f / (2 +
# f) and a polynomial in s^2, took a division (on the Intel Xeon, whose 512-bit division
# takes about ten cycles, binary cross-entropy with probability labels, two logs and a
# gradient's division per element, took 10-24 % less time with this form)
LOG_P = tuple(_f32(c) for c in (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1,
                                -1.2420140846e-1, 1.4249322787e-1, -1.6668057665e-1,
                                2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1))


TWO_TO_25 = _f32(2.0**25)
TWENTY_FIVE = _f32(25.0)
LOG32 = (SMALLEST_NORMAL, TWO_TO_25, TWENTY_FIVE, ONE, *LOG_P, HALF, LN2_HI, LN2_LO, INF,
         -INF, NAN)  # as ``held`` takes them


@inline
def _log32_of_parts(e, m, k):
    """log(m 2^e) for m in [sqrt(1/2), sqrt(2)) (``split_for_log``)."""
    (smallest_normal, two_to_25, twenty_five, one, p8, p7, p6, p5, p4, p3, p2, p1, p0, half,
     ln2_hi, ln2_lo, inf, minus_inf, nan) = k
    f = m - one  # exact
    z = f * f
    p = horner(f, (p8, p7, p6, p5, p4, p3, p2, p1, p0))
    # e ln 2 in two parts (LN2_HI e is exact), the small terms added first
    y = fma(f * z, p, e * ln2_lo) - half * z
    return (f + y) + e * ln2_hi


@inline
def _log32(x, k=LOG32):
    smallest_normal, two_to_25, twenty_five = k[0], k[1], k[2]
    inf, minus_inf, nan = k[16], k[17], k[18]
    # a subnormal x is scaled by 2^25 (exactly) into the normal range the bit split needs
    tiny = x < smallest_normal
    # x = m 2^e, m in [sqrt(1/2), sqrt(2))
    e, m = split_for_log(x * two_to_25 if tiny else x)
    y = _log32_of_parts(e - (twenty_five if tiny else ZERO), m, k)
    # where the bit tricks give a number but log has none (selects, still vectorised):
    # inf and NaN stay themselves, 0 gives -inf, a negative x NaN
    y = y if x < inf else x
    return y if x > ZERO else (minus_inf if x == ZERO else nan)


@inline
def _log32_normal(x, k=LOG32):
    """``_log32``'s bits for a positive normal x, else NaN (``positive_normal``): one
    select instead of seven operations."""
    e, m = split_for_log(x)
    y = _log32_of_parts(e, m, k)
    return y if positive_normal(x) else k[18]


# tanh(x) = x P(x^2) / Q(x^2) on |x| <= 10, degrees 12 and 6 in x, fitted by
# ci/fit_polynomials.py (Lawson's iteration on the relative error, 2e-8 in float64; P(0) = Q(0)
# = 1, so tanh x = x to the last bit as x -> 0); beyond 10 tanh rounds to +-1, so x is clamped there (inf too; NaN
# passes the selects). No exp: one division and ten fused products, against an exp, a
# division and a polynomial for Cephes' exp-based form, which kept softcap's pass at 0.65x
# of plain cross-entropy. Within 5.75 ulp (5.73 at 7.392191, the most over every float32 from
# 1/16 to 10), most near |x| = 7.5 where tanh x is within 1e-6
# of 1; within 3 ulp below |x| = 1 (tests/test_numba_math.py); never beyond +-1.
TANH_P1 = _f32(0.1303926259279251)
TANH_P2 = _f32(0.003054193686693907)
TANH_P3 = _f32(1.0641644621500745e-05)
TANH_P4 = _f32(-1.820504103022813e-08)
TANH_P5 = _f32(4.3450430753377844e-11)
TANH_P6 = _f32(-6.212763729038576e-14)
TANH_Q1 = _f32(0.4637257754802704)
TANH_Q2 = _f32(0.02429637312889099)
TANH_Q3 = _f32(0.0002474108478054404)
TANH_CLAMP = _f32(10.0)
TANH32 = (TANH_CLAMP, -TANH_CLAMP, TANH_P6, TANH_P5, TANH_P4, TANH_P3, TANH_P2, TANH_P1,
          TANH_Q3, TANH_Q2, TANH_Q1, ONE)  # as ``held`` takes them


@inline
def _tanh32(x, k=TANH32):
    clamp, minus_clamp, p6, p5, p4, p3, p2, p1, q3, q2, q1, one = k
    x = clamp if x > clamp else x  # (two selects in turn: a min and a max, NaN kept)
    x = minus_clamp if x < minus_clamp else x
    z = x * x
    p = horner(z, (p6, p5, p4, p3, p2, p1))
    q = horner(z, (q3, q2, q1, one))
    t = fma(x, z * p, x) / q
    # within +-1: near |x| = 8.2-10 the fit's error crosses 1 by an ulp, and softcap's
    # slope 1 - t^2 would turn negative (a gradient of the wrong sign); NaN passes
    t = one if t > one else t
    return -one if t < -one else t


# tanh(u) = u + u z R(z), z = u^2, on |u| <= 1, R of degree 6 fitted by ci/fit_polynomials.py
# (4.6e-9 relative in float64): seven fused products and no division, against ten and a
# division for the rational form, for softcap's logits within +-softcap, where
# softcap tanh(x / softcap) = x + x w R(w / softcap^2) / softcap^2 with w = x^2: the logit
# itself carries the leading term, and R's coefficients are scaled by the powers of
# 1 / softcap^2 once per call (``softcap_constants``), so that no element is divided or
# multiplied by 1 / softcap (two products fewer, and x exactly as x -> 0, subnormals
# included).
TANH_NEAR32 = (_f32(-0.0003584685910027474), _f32(0.0023014184553176165),
               _f32(-0.007946174591779709), _f32(0.02148669958114624),
               _f32(-0.053879816085100174), _f32(0.13332344591617584),
               _f32(-0.33333295583724976))  # R's coefficients from the highest


def softcap_constants(cap):
    """``softcap_near_zero``'s constants for this ``cap`` (float32 or float64), taken once
    per call: (for float32, ``TANH_NEAR32``'s R(x^2 / cap^2) / cap^2 as a polynomial in
    x^2, r_k / cap^(2k + 2), normal float32 numbers for cap from about 1e-3 to 290; 1 /
    cap; the largest reach of a row within +-cap: cap^2 for float32, else 1)."""
    return TANH_NEAR32, 1.0 / cap, 1.0


@inline
def _softcap32_near_zero(x, k):
    w = x * x
    r = horner(w, k)  # (k: R's coefficients r6 ... r0, scaled)
    return fma(x, w * r, x), w


# log1p(x) = x + x^2 M(x) on [0, 1], M of degree 8 fitted by ci/fit_polynomials.py (5e-9
# relative in float64; 1.44 ulp in float32, against 2.74 for the series of 2 atanh(x / (2 +
# x)) it replaced, whose division cost the softplus losses 4 %): fused products only, with
# no cancellation that fast-math reassociation could spoil (the classic log(1 + x) * x /
# ((1 + x) - 1) can be "simplified" away); a subnormal x gives x (x^2 is 0)
LOG1P32 = (_f32(-0.4999993145465851), _f32(0.33330512046813965), _f32(-0.24958589673042297),
           _f32(0.1969541758298874), _f32(-0.1535545438528061), _f32(0.106806680560112),
           _f32(-0.057665687054395676), _f32(0.020205311477184296),
           _f32(-0.003318648086860776))  # as ``held`` takes them


@inline
def _log1p32(x, k=LOG1P32):
    m0, m1, m2, m3, m4, m5, m6, m7, m8 = k  # Horner: a throughput-bound loop
    return fma(x * x, horner(x, (m8, m7, m6, m5, m4, m3, m2, m1, m0)), x)


@overload(fast_exp, jit_options=INLINE)
def _fast_exp(x, constants=None):
    if x == types.float32:
        if _given(constants):
            return lambda x, constants=None: _exp32(x, constants)
        return lambda x, constants=None: _exp32(x)
    if x == types.float64:
        return lambda x, constants=None: _exp64(x)
    return lambda x, constants=None: math.exp(x)


@overload(fast_exp_nonpositive, jit_options=INLINE)
def _fast_exp_nonpositive(x, constants=None):
    if x == types.float32:
        if _given(constants):
            return lambda x, constants=None: _exp32_nonpositive(x, constants)
        return lambda x, constants=None: _exp32_nonpositive(x)
    if x == types.float64:
        return lambda x, constants=None: _exp64_nonpositive(x)
    return lambda x, constants=None: math.exp(x)


@overload(fast_exp_normal, jit_options=INLINE)
def _fast_exp_normal(x, constants=None):
    if x == types.float32:
        if _given(constants):
            return lambda x, constants=None: _exp32_normal(x, constants)
        return lambda x, constants=None: _exp32_normal(x)
    if x == types.float64:
        return lambda x, constants=None: _exp64_normal(x)
    return lambda x, constants=None: math.exp(x)


@overload(fast_log, jit_options=INLINE)
def _fast_log(x, constants=None):
    if x == types.float32:
        if _given(constants):
            return lambda x, constants=None: _log32(x, constants)
        return lambda x, constants=None: _log32(x)
    if x == types.float64:
        return lambda x, constants=None: _log64(x)
    return lambda x, constants=None: math.log(x)


@overload(fast_log_normal, jit_options=INLINE)
def _fast_log_normal(x, constants=None):
    if x == types.float32:
        if _given(constants):
            return lambda x, constants=None: _log32_normal(x, constants)
        return lambda x, constants=None: _log32_normal(x)
    if x == types.float64:
        return lambda x, constants=None: _log64_normal(x)
    # (other types, integers, have no subnormals)
    return lambda x, constants=None: math.log(x) if 0 < x < math.inf else math.nan


def _given(constants) -> bool:
    return not (constants is None or isinstance(constants, (types.NoneType, types.Omitted)))


@overload(fast_tanh, jit_options=INLINE)
def _fast_tanh(x, constants=None):
    if x == types.float32:
        if _given(constants):
            return lambda x, constants=None: _tanh32(x, constants)
        return lambda x, constants=None: _tanh32(x)
    if x == types.float64:
        return lambda x, constants=None: _tanh64(x)
    return lambda x, constants=None: math.tanh(x)


@overload(tanh_slope, jit_options=INLINE)
def _tanh_slope(t):
    if t == types.float32:
        return lambda t: fma(-t, t, ONE)
    return lambda t: fma(-t, t, 1.0)


@overload(sech_squared, jit_options=INLINE)
def _sech_squared(u, t):
    one = ONE if u == types.float32 else 1.0  # (the constants in u's dtype)
    two, four = 2 * one, 4 * one

    def sech2(u, t):
        a = abs(u)
        s = fast_exp_nonpositive(-two * a)  # (in [0, exp(-2)] where taken; NaN kept)
        far = four * s / ((one + s) * (one + s))
        return tanh_slope(t) if a <= one else far

    return sech2


@overload(capped_tanh, jit_options=INLINE)
def _capped_tanh(v, cap, inv_cap):
    one = ONE if v == types.float32 else 1.0  # (in v's dtype: the select stays vectorised)

    def capped(v, cap, inv_cap):
        t = v * inv_cap
        return t if abs(v) != cap else math.copysign(one, v)

    return capped


@overload(softcap_near_zero, jit_options=INLINE)
def _softcap_near_zero(x, cap, constants):
    if x == types.float32:
        return lambda x, cap, constants: _softcap32_near_zero(x, constants[0])

    def generic(x, cap, constants):
        u = x * constants[1]
        return cap * fast_tanh(u), u * u

    return generic


@overload(softcap_constants, jit_options=INLINE)
def _softcap_constants(cap):
    if cap == types.float32:
        def scaled(cap):
            inverse = 1.0 / (float(cap) * float(cap))
            r6, r5, r4, r3, r2, r1, r0 = TANH_NEAR32
            coefficients = (_f32(r6 * inverse ** 7), _f32(r5 * inverse ** 6),
                            _f32(r4 * inverse ** 5), _f32(r3 * inverse ** 4),
                            _f32(r2 * inverse ** 3), _f32(r1 * inverse ** 2),
                            _f32(r0 * inverse))
            return coefficients, _f32(1.0 / float(cap)), cap * cap

        return scaled
    return lambda cap: (TANH_NEAR32, 1.0 / cap, 1.0)


@overload(fast_log1p, jit_options=INLINE)
def _fast_log1p(x, constants=None):
    if x == types.float32:
        if _given(constants):
            return lambda x, constants=None: _log1p32(x, constants)
        return lambda x, constants=None: _log1p32(x)
    if x == types.float64:
        return lambda x, constants=None: _log1p64(x)
    return lambda x, constants=None: math.log1p(x)
