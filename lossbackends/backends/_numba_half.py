"""float16 to and from float32 by the CPU's own conversions, for the Numba backend's
float16 calls (computed in float32: ``_host.in_float32``).

NumPy converts float16 in software: about 2.5 ns an element, and 60 ns where the result is
subnormal, which a float16 mean's gradient is from 16385 elements on (1/n below float16's
smallest normal): ``mse.value_and_grad`` of 1e5 float16 elements took 6.9 ms, 29 µs in
float32. LLVM's ``fptrunc`` and ``fpext`` compile to the CPU's conversions (F16C's
``vcvtps2ph``/``vcvtph2ps`` on x86-64, vectorised; AArch64's FP16), which round as NumPy's
casts do (to nearest, ties to even; NaN stays NaN): the same bits. Numba has no float16
type, so these take and give the float16 arrays' bits (uint16 views). Where the CPU has no
such conversion (LLVM would call a library function that Numba's JIT may not find), or
Numba compiles for another CPU or features than this one's (``NUMBA_CPU_NAME``,
``NUMBA_CPU_FEATURES``), NumPy's casts stay.
"""

from __future__ import annotations

import platform

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ._host import _down, _up
from ._host import half_in_float32 as _half_in_float32
from ._numba_common import _jit


@intrinsic
def _to_half_bits(typingctx, x):
    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))

    return types.uint16(types.float32), codegen


@intrinsic
def _from_half_bits(typingctx, bits):
    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(types.uint16), codegen


def _narrow(values, bits):
    for i in range(values.size):
        bits[i] = _to_half_bits(values[i])


def _widen(bits, values):
    for i in range(bits.size):
        values[i] = _from_half_bits(bits[i])


_narrow, _widen = _jit(_narrow, "_narrow"), _jit(_widen, "_widen")  # (the kernels' cache)


def _converts() -> bool:
    """Whether this CPU converts float16 itself, and Numba compiles for it (not for a CPU
    or features named by NUMBA_CPU_NAME or NUMBA_CPU_FEATURES: "-f16c" there made LLVM call
    a conversion function the JIT did not find, a segmentation fault)."""
    if numba.config.CPU_NAME is not None or numba.config.CPU_FEATURES is not None:
        return False
    if platform.machine().lower() in ("aarch64", "arm64"):
        return True
    from llvmlite import binding

    return bool(binding.get_host_cpu_features().get("f16c", False))


def down(out, a) -> None:
    """``out[...] = a``: a float32 array into the C-contiguous float16 ``out`` of its shape
    (``_host._down``)."""
    if a.dtype != np.float32 or not out.flags.c_contiguous:
        _down(out, a)
        return
    _narrow(np.ascontiguousarray(a).reshape(-1), out.reshape(-1).view(np.uint16))


def up(a):
    """A float16 array as a new float32 one; anything else as it is (``_host._up``)."""
    if not (isinstance(a, np.ndarray) and a.dtype == np.float16):
        return a
    values = np.empty(a.shape, np.float32)
    _widen(np.ascontiguousarray(a).reshape(-1).view(np.uint16), values.reshape(-1))
    return values


if not _converts():
    up, down = _up, _down  # noqa: F811 (NumPy's casts: see the module's docstring)


def half_in_float32(kernel):
    """``_host.half_in_float32`` with these conversions."""
    return _half_in_float32(kernel, up, down)
