"""How the Numba backend's compiled helpers are built, and the LLVM intrinsics they use.

Every Numba module of the backend imports this one: the compile flags of the kernels and
of the helpers they inline (``FASTMATH``, ``INLINE``, ``inline``); the bit tricks of exp
and log as integer operations in the float's own lanes; max and min that keep NaN; fused
products by name (``fma``); constants LLVM cannot see through (``held``). The
mathematics built on them: ``_numba_math.py`` (float32, and the ``fast_*`` functions the
kernels call) and ``_numba_math64.py`` (float64).
"""

from __future__ import annotations

from llvmlite import ir
from numba import config, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

if config.DISABLE_JIT:  # (every Numba module of the backend imports this one)
    # (decorated functions would stay Python functions, which the kernels' launches cannot
    # use: the backend is refused here, and "auto" takes NumPy, with a warning)
    raise ImportError("Numba's compiler is off (NUMBA_DISABLE_JIT=1), and the numba backend "
                      "runs compiled kernels only: unset NUMBA_DISABLE_JIT, or use "
                      "backend='numpy'")

# Fast-math without "nnan"/"ninf", so NaN and inf keep their meaning; without "reassoc",
# so every formula is evaluated as written: reassociation costs our exp 4 ulp and turns
# y log p + (1 - y) log(1 - p) into a cancellation (sums reassociate, apart: see
# ``_numba_common._sum``); and without "contract", which fused a b + c differently in a
# loop's vector body and in its scalar tail, so that an element's bits depended on its
# place in the array (the math functions fuse by name: ``fma``).
FASTMATH = frozenset({"nsz", "arcp", "afn"})

# How the kernels' helpers compile: once per process and signature, then inlined by
# LLVM (``forceinline``), not by Numba (``inline="always"`` typed each helper again at
# every call site, in every kernel: a third of a kernel's compile time, and most of a cold
# test run's); called from compiled code only, so with no Python or C entry point. Their
# flags are the kernels', given here: left unset, a helper takes those of whichever
# caller compiles it first in the process (Numba's flag inheritance), and a test's njit
# function of Python's error model, first, gave every later kernel of the process a
# zero-division check in its exp and log: no vectorised loop, 10x slower, and written so
# into the disk cache for every later process.
INLINE = {"forceinline": True, "no_cpython_wrapper": True, "no_cfunc_wrapper": True,
          "fastmath": set(FASTMATH), "error_model": "numpy"}
inline = njit(**INLINE)

# Numba computes integer arithmetic in 64 bits, so bit tricks written in Python would run
# float32's 4 lanes to a 256-bit vector (and convert back and forth); these two intrinsics
# keep them in lanes of the float's own width (float32: 8 to a vector), like the
# arithmetic around them.
_I32 = ir.IntType(32)
_F32 = ir.FloatType()


# Each float type's bit layout for the two intrinsics below: (its integer of the same
# width, the mantissa's bits, the bits of sqrt(1/2) in it)
_LAYOUT = {types.float32: (_I32, 23, 0x3F3504F3), types.float64: (ir.IntType(64), 52,
                                                                  0x3FE6A09E667F3BCD)}


@intrinsic
def split_for_log(typingctx, x):
    """(k, m) with x = m 2^k, m in [sqrt(1/2), sqrt(2)) and k of x's type, for a positive
    normal float32 or float64 x: subtracting the bits of sqrt(1/2) moves the binade
    boundary there, so no compare and select are needed."""
    if x not in _LAYOUT:
        return None
    sig = types.UniTuple(x, 2)(x)
    integer, mantissa_bits, sqrt_half = _LAYOUT[x]

    def codegen(context, builder, signature, args):
        value_type = context.get_value_type(x)
        offset = builder.sub(builder.bitcast(args[0], integer), ir.Constant(integer, sqrt_half))
        k = builder.sitofp(builder.ashr(offset, ir.Constant(integer, mantissa_bits)), value_type)
        low_bits = ir.Constant(integer, (1 << mantissa_bits) - 1)
        mantissa = builder.add(builder.and_(offset, low_bits), ir.Constant(integer, sqrt_half))
        m = builder.bitcast(mantissa, value_type)
        return context.make_tuple(builder, signature.return_type, [k, m])

    return sig, codegen


@intrinsic
def positive_normal(typingctx, x):
    """Whether x is a positive normal number (not 0, subnormal, negative, infinite or NaN):
    one unsigned compare of its bits less the smallest normal's against the span up to
    +inf's, integer operations where the float pipes are the busy ones."""
    if x not in _LAYOUT:
        return None
    sig = types.boolean(x)
    integer, mantissa_bits, _ = _LAYOUT[x]
    smallest = 1 << mantissa_bits  # the smallest normal's bits
    span = ((1 << (integer.width - 1 - mantissa_bits)) - 2) << mantissa_bits  # to +inf's

    def codegen(context, builder, signature, args):
        offset = builder.sub(builder.bitcast(args[0], integer), ir.Constant(integer, smallest))
        return builder.icmp_unsigned("<", offset, ir.Constant(integer, span))

    return sig, codegen


@intrinsic
def order_bits(typingctx, x):
    """x's bits as an unsigned integer (uint32 for float32, uint64 for float64). For x >=
    +0 (not -0, whose bits lie above +inf's: callers pass a square) or a NaN, their order
    is the numbers' order, with every NaN, of either sign, above +inf. A running max of
    these takes one integer instruction per vector, and LLVM vectorises it without
    fast-math flags, where ``maximum`` takes three and a float compare and select does
    not vectorise."""
    if x not in _LAYOUT:
        return None
    integer = _LAYOUT[x][0]
    sig = (types.uint32 if integer.width == 32 else types.uint64)(x)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], integer)

    return sig, codegen


@intrinsic
def power_of_two(typingctx, rounded):
    """2^n from ``rounded`` = n + ROUNDER (float32, n in [-126, 127]) or n + ROUNDER64
    (float64, n in [-1022, 1023])."""
    if rounded not in _LAYOUT:
        return None
    sig = rounded(rounded)
    integer, mantissa_bits, _ = _LAYOUT[rounded]

    def codegen(context, builder, signature, args):
        # the pattern's low bits are n + the bias (mod a power of two); the shift drops
        # the rest
        exponent = builder.shl(builder.bitcast(args[0], integer),
                               ir.Constant(integer, mantissa_bits))
        return builder.bitcast(exponent, context.get_value_type(rounded))

    return sig, codegen


def _extreme(name: str):
    """An intrinsic for LLVM's ``llvm.<name>`` of two floats of one type."""

    def typer(typingctx, a, b):
        if not (isinstance(a, types.Float) and a == b):
            return None

        def codegen(context, builder, signature, args):
            value_type = context.get_value_type(signature.return_type)
            function = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(value_type, [value_type, value_type]),
                f"llvm.{name}.{'f32' if value_type == _F32 else 'f64'}")
            return builder.call(function, args)

        return a(a, b), codegen

    typer.__name__ = name
    return intrinsic(typer)


# max(a, b) and min(a, b), NaN if either is NaN (LLVM's ``llvm.maximum``/``minimum``). A
# running max written as a compare and select is a serial scalar chain (LLVM may reorder
# it only under the no-NaN flag); these it vectorises.
maximum = _extreme("maximum")
minimum = _extreme("minimum")


@intrinsic
def fma(typingctx, a, b, c):
    """a b + c rounded once (LLVM's ``llvm.fma``): the polynomials' steps. The kernels are
    compiled without the "contract" flag, which lets LLVM fuse a b + c where it likes: it
    then fused differently in a loop's vector body and its scalar tail, so an element's
    bits depended on where it sat in the array (a Dask block against the whole array).
    Fused here by name, every element gets the same bits wherever it is."""
    if not (isinstance(a, types.Float) and a == b == c):
        return None
    sig = a(a, b, c)

    def codegen(context, builder, signature, args):
        return builder.call(_llvm_fma(context, builder, signature.return_type), args)

    return sig, codegen


def _llvm_fma(context, builder, typ):
    """LLVM's ``llvm.fma`` of the float type ``typ``, declared in the builder's module."""
    value_type = context.get_value_type(typ)
    return cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(value_type, [value_type] * 3),
        f"llvm.fma.{'f32' if value_type == _F32 else 'f64'}")


@intrinsic
def horner(typingctx, x, coefficients):
    """The polynomial of ``coefficients`` (a tuple of x's float type, from the highest) at
    ``x`` by Horner's rule, one ``fma`` a step: c0 x^n + c1 x^(n-1) + ... + cn as
    fma(...fma(fma(c0, x, c1), x, c2)..., x, cn), the same operations in the same order
    as those written out, so the same bits. Each step waits for the one before; the
    kernels' loops hide that latency by running many elements at once."""
    if not (isinstance(x, types.Float) and isinstance(coefficients, types.UniTuple)
            and coefficients.dtype == x and coefficients.count >= 2):
        return None
    sig = x(x, coefficients)

    def codegen(context, builder, signature, args):
        value, terms = args
        function = _llvm_fma(context, builder, signature.return_type)
        result = builder.extract_value(terms, 0)
        for index in range(1, coefficients.count):
            result = builder.call(function, [result, value, builder.extract_value(terms, index)])
        return result

    return sig, codegen


@intrinsic
def held(typingctx, values):
    """``values``, float32 constants in a tuple (or a tuple of such tuples: one for each
    function a loop calls), as values LLVM cannot see through (each passes an empty inline
    asm): a kernel takes them once, before its loop, and hands them to the ``fast_*``
    functions (``constants=``). Numba compiles with the large code model, where a constant
    that finds no free register in a vectorised loop is fetched again on every iteration
    (an absolute address, then a broadcast: two instructions per use, some forty in
    softcap's tanh and exp); a value LLVM does not know is kept in a register, or spilled
    once as a whole vector that the fma reads from the stack (on a frame aligned to a
    cache line: ``_numba_common.aligned_stack``). The same bits. None gives None: a loop
    without such constants compiles as it would without ``held``."""
    if not _float32_leaves(values):
        return None
    sig = values(values)

    def codegen(context, builder, signature, args):
        return _opaque(builder, context, signature.return_type, args[0])

    return sig, codegen


def _float32_leaves(typ) -> bool:
    if isinstance(typ, types.NoneType) or typ == types.float32:
        return True
    return isinstance(typ, types.BaseTuple) and all(map(_float32_leaves, typ.types))


def _opaque(builder, context, typ, value):
    if isinstance(typ, types.NoneType):
        return value
    if typ == types.float32:
        bits = builder.bitcast(value, _I32)
        bits = builder.asm(ir.FunctionType(_I32, [_I32]), "", "=r,0", [bits], False)
        return builder.bitcast(bits, _F32)
    return context.make_tuple(builder, typ, [
        _opaque(builder, context, item, builder.extract_value(value, i))
        for i, item in enumerate(typ.types)])


@intrinsic
def borrowed(typingctx, value):
    """``value``, an array, without its reference count: the same data, shape and strides,
    no meminfo (Numba's NRT then skips the count of it and of every view taken of it,
    ``x[r]``, ``grad[r]``: an atomic increment and decrement each, which were a third of
    the cross-entropy row kernel's time at 100 classes). For the kernels' own arguments,
    which their caller holds for the whole call, or arrays kept alive by ``keep_alive``;
    never returned. Anything else (None) as it is."""
    sig = value(value)
    if not isinstance(value, types.Array):
        def identity(context, builder, signature, args):
            context.nrt.incref(builder, value, args[0])  # (a result is a new reference)
            return args[0]

        return sig, identity

    def codegen(context, builder, signature, args):
        array = context.make_array(value)(context, builder, args[0])
        array.meminfo = cgutils.get_null_value(array.meminfo.type)
        array.parent = cgutils.get_null_value(array.parent.type)
        return array._getvalue()

    return sig, codegen


@intrinsic
def keep_alive(typingctx, values):
    """Nothing: a use of ``values`` (a tuple), so that Numba keeps them (arrays a kernel
    allocated) until here, where the kernel's ``borrowed`` views of them are used before."""
    sig = types.none(values)

    def codegen(context, builder, signature, args):
        return context.get_dummy_value()

    return sig, codegen
