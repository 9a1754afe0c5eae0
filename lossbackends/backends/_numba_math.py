"""Vectorisable float32 exp and log for the Numba kernels.

LLVM vectorises a loop only if every call in it has a vector form; Numba's ``math.exp``
and ``math.log`` have none without SVML (which current llvmlite builds lack), so the hot
float32 loops would run one scalar libm call per element. These are the Cephes
single-precision algorithms (range reduction, then a polynomial; about 1 ulp), written
with a bit cast so that LLVM turns them into SIMD code. float64 keeps ``math``'s
correctly rounded functions: it is the accuracy path, not the speed path.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from numba import types
from numba.core.errors import NumbaIRAssumptionWarning
from numba.extending import intrinsic, overload

# Numba's "pedantic" SSA check flags the selects of these inlined functions (its own
# message asks for a bug report); the code is correct and vectorised, so the warning is
# silenced for these two functions only.
warnings.filterwarnings("ignore", message=r".*variable '_(exp|log)32_", category=NumbaIRAssumptionWarning)

_f32 = np.float32
LOG2E = _f32(1.44269504088896341)
LN2_HI = _f32(0.693359375)
LN2_LO = _f32(-2.12194440e-4)
EXP_MAX = _f32(88.0)  # past this: inf (float32's true limit is 88.72; our callers pass x <= 0)
EXP_MIN = _f32(-87.3365447504)  # below this exp(x) is under float32's smallest normal
SQRT_HALF = _f32(0.707106781186547524)
HALF = _f32(0.5)
ONE = _f32(1.0)
ZERO = _f32(0.0)
INF = _f32(np.inf)


@intrinsic
def _bits_to_float32(typingctx, bits):
    """Reinterpret an int32 as a float32 (a free LLVM bitcast)."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float32))

    return sig, codegen


@intrinsic
def _float32_to_bits(typingctx, value):
    """Reinterpret a float32 as an int32."""
    sig = types.int32(types.float32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.int32))

    return sig, codegen


def fast_exp(x):
    """exp(x): vectorisable for float32, ``math.exp`` otherwise."""
    return math.exp(x)


def fast_log(x):
    """log(x): vectorisable for positive normal float32, ``math.log`` otherwise."""
    return math.log(x)


def fast_log1p(x):
    """log1p(x): vectorisable for float32 x in [0, 1], ``math.log1p`` otherwise."""
    return math.log1p(x)


def _exp32(x):
    clamped = min(max(x, EXP_MIN), EXP_MAX)
    n = np.floor(clamped * LOG2E + HALF)
    f = clamped - n * LN2_HI - n * LN2_LO  # Cody-Waite: exact reduction to |f| <= ln2/2
    p = _f32(1.9875691500e-4)
    p = p * f + _f32(1.3981999507e-3)
    p = p * f + _f32(8.3334519073e-3)
    p = p * f + _f32(4.1665795894e-2)
    p = p * f + _f32(1.6666665459e-1)
    p = p * f + _f32(5.0000001201e-1)
    y = p * f * f + f + ONE
    y = y * _bits_to_float32((np.int32(n) + np.int32(127)) << np.int32(23))  # times 2^n
    # true underflow (-inf included) is exactly 0; NaN stays NaN (LLVM makes selects)
    return ZERO if x < EXP_MIN else (INF if x > EXP_MAX else (x if x != x else y))


def _log32(x):
    bits = _float32_to_bits(x)
    e = ((bits >> np.int32(23)) & np.int32(0xFF)) - np.int32(126)
    m = _bits_to_float32((bits & np.int32(0x7FFFFF)) | np.int32(0x3F000000))  # in [0.5, 1)
    low = np.float32(m < SQRT_HALF)  # then use 2m in [0.707, 1) and e - 1, branch-free
    e = e - np.int32(low)
    m = m + m * low - ONE
    z = m * m
    p = _f32(7.0376836292e-2)
    p = p * m + _f32(-1.1514610310e-1)
    p = p * m + _f32(1.1676998740e-1)
    p = p * m + _f32(-1.2420140846e-1)
    p = p * m + _f32(1.4249322787e-1)
    p = p * m + _f32(-1.6668057665e-1)
    p = p * m + _f32(2.0000714765e-1)
    p = p * m + _f32(-2.4999993993e-1)
    p = p * m + _f32(3.3333331174e-1)
    fe = np.float32(e)
    y = p * m * z + fe * LN2_LO - HALF * z
    return m + y + fe * LN2_HI


@overload(fast_exp, inline="always")
def _fast_exp(x):
    if x == types.float32:
        return _exp32
    return lambda x: math.exp(x)


@overload(fast_log, inline="always")
def _fast_log(x):
    if x == types.float32:
        return _log32
    return lambda x: math.log(x)


@overload(fast_log1p, inline="always")
def _fast_log1p(x):
    if x == types.float32:

        def impl(x):
            # log1p(x) = 2 atanh(s), s = x / (2 + x) in [0, 1/3] for x in [0, 1]: a series
            # in s^2 with no cancellation, so fast-math reassociation cannot spoil it
            # (the classic log(1 + x) * x / ((1 + x) - 1) can be "simplified" away)
            t = x / (_f32(2.0) + x)
            z = t * t
            p = _f32(1.0 / 17.0)
            p = p * z + _f32(1.0 / 15.0)
            p = p * z + _f32(1.0 / 13.0)
            p = p * z + _f32(1.0 / 11.0)
            p = p * z + _f32(1.0 / 9.0)
            p = p * z + _f32(1.0 / 7.0)
            p = p * z + _f32(1.0 / 5.0)
            p = p * z + _f32(1.0 / 3.0)
            return _f32(2.0) * t * (p * z + ONE)

        return impl
    return lambda x: math.log1p(x)
