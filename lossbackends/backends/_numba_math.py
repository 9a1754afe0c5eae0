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
from llvmlite import ir
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
EXP_MIN = _f32(-87.3365447504)  # below this exp(x) is under float32's smallest normal
SQRT_HALF = _f32(0.707106781186547524)
HALF = _f32(0.5)
ONE = _f32(1.0)
ZERO = _f32(0.0)


# Numba computes integer arithmetic in 64 bits, so bit tricks written in Python would run
# 4 lanes to a 256-bit vector (and convert back and forth); these two intrinsics keep them
# in 32-bit lanes, 8 to a vector, like the float32 arithmetic around them.
_I32 = ir.IntType(32)
_F32 = ir.FloatType()


@intrinsic
def _frexp32(typingctx, x):
    """(e, m) with x = m 2^e, m in [0.5, 1), e a float32, for a positive normal float32 x."""
    sig = types.UniTuple(types.float32, 2)(types.float32)

    def codegen(context, builder, signature, args):
        bits = builder.bitcast(args[0], _I32)
        biased = builder.and_(builder.lshr(bits, ir.Constant(_I32, 23)), ir.Constant(_I32, 0xFF))
        e = builder.sitofp(builder.sub(biased, ir.Constant(_I32, 126)), _F32)
        mantissa = builder.or_(builder.and_(bits, ir.Constant(_I32, 0x7FFFFF)),
                               ir.Constant(_I32, 0x3F000000))
        m = builder.bitcast(mantissa, _F32)
        return context.make_tuple(builder, signature.return_type, [e, m])

    return sig, codegen


@intrinsic
def _ldexp32(typingctx, y, n):
    """y 2^n for float32 y and an integer-valued float32 n in [-126, 127]."""
    sig = types.float32(types.float32, types.float32)

    def codegen(context, builder, signature, args):
        exponent = builder.add(builder.fptosi(args[1], _I32), ir.Constant(_I32, 127))
        power = builder.bitcast(builder.shl(exponent, ir.Constant(_I32, 23)), _F32)
        return builder.fmul(args[0], power)

    return sig, codegen


def fast_exp(x):
    """exp(x) for x <= 0 (every caller's case: x - max(x), -|x|), NaN and -inf included:
    vectorisable for float32, ``math.exp`` otherwise."""
    return math.exp(x)


def fast_log(x):
    """log(x): vectorisable for positive normal float32, ``math.log`` otherwise."""
    return math.log(x)


def fast_log1p(x):
    """log1p(x): vectorisable for float32 x in [0, 1], ``math.log1p`` otherwise."""
    return math.log1p(x)


def _exp32(x):
    # max(x, EXP_MIN) with NaN kept (a single vmaxps): NaN then flows through the arithmetic
    clamped = EXP_MIN if x < EXP_MIN else x
    n = np.floor(clamped * LOG2E + HALF)
    f = clamped - n * LN2_HI - n * LN2_LO  # Cody-Waite: exact reduction to |f| <= ln2/2
    p = _f32(1.9875691500e-4)
    p = p * f + _f32(1.3981999507e-3)
    p = p * f + _f32(8.3334519073e-3)
    p = p * f + _f32(4.1665795894e-2)
    p = p * f + _f32(1.6666665459e-1)
    p = p * f + _f32(5.0000001201e-1)
    y = _ldexp32(p * f * f + f + ONE, n)
    return ZERO if x < EXP_MIN else y  # true underflow, -inf included, is exactly 0


def _log32(x):
    fe, m = _frexp32(x)  # x = m 2^fe, m in [0.5, 1)
    low = np.float32(m < SQRT_HALF)  # then use 2m in [0.707, 1) and fe - 1, branch-free
    fe = fe - low
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
            # z <= 1/9: the terms from z^7 / 15 on are under 1.4e-8, a quarter of an ulp
            t = x / (_f32(2.0) + x)
            z = t * t
            p = _f32(1.0 / 13.0)
            p = p * z + _f32(1.0 / 11.0)
            p = p * z + _f32(1.0 / 9.0)
            p = p * z + _f32(1.0 / 7.0)
            p = p * z + _f32(1.0 / 5.0)
            p = p * z + _f32(1.0 / 3.0)
            return _f32(2.0) * t * (p * z + ONE)

        return impl
    return lambda x: math.log1p(x)
