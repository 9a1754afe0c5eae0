"""What every Numba kernel of lossbackends shares: the compiler's flags and cache names
(``_jit``), the chunking constants, the fixed-order sums, and the argument types of the
kernels' machine code (``array_type``). It imports none of the kernels' modules
(``numba_backend``, ``_numba_rows`` and the other row modules, ``_numba_boosting``),
which all import it.
"""

from __future__ import annotations

import hashlib
import platform
import types
import warnings
from pathlib import Path

import numba
import numpy as np
from llvmlite import ir
from numba import njit
from numba.core import cgutils
from numba.extending import intrinsic, overload

from ._numba_intrinsics import FASTMATH, INLINE, inline
from ._threads import SHARED

LINE = 64  # bytes in a cache line
CHUNKS = 64  # partial sums per call: a constant, so results never depend on thread count
BLOCK = 2048  # elements per inner loop: a block of each array stays in L1
# The elementwise kernels that keep a block of losses in L1 to sum it (an array beside
# y, p, the gradient and a staged gradient's buffer; below ``BEYOND_L2`` the losses
# summed in their loop from there too) run blocks of LOSSES_BLOCK elements, and the
# ``optimistic`` ones (which also prefetch the next block's inputs from DRAM sizes),
# with the value or without, of OPTIMISTIC_BLOCK: with 2048 their arrays filled the
# 32 KiB L1 of the AMD EPYC. Measured there in one process, the three sizes' samples in
# turn (float32, two threads, default call and out=), against 2048: value_and_grad of
# kl_div, poisson_nll, log_cosh, soft_margin and BCE with logits 1.00-1.14x as fast at
# 1e7 and 1.00-1.38x at 1e8 with 1024 (0.97-1.03x from 1e5 to 1e6); of binary cross-entropy and
# sigmoid_focal 1.08-1.31x with 512, sigmoid_focal's grad 1.17x at 1e7 (0.97-1.05x at
# 1e5-1e6); huber and pinball below BEYOND_L2 1.01-1.17x with 1024; the losses summed in
# their loop (MSE, mae, huber, pinball) 0.87-0.98x with 512 or 1024 at 1e6, where they
# keep BLOCK (performance-log.md, "Blocks of losses in L1"). float64 kernels run half as
# many elements in these two (``float64_block``: the same bytes in L1): binary
# cross-entropy's value_and_grad 1.13-1.21x as fast at 1e7 and 1e8, kl_div's and
# poisson_nll's 1.00-1.13x, 0.98-1.02x in cache. BLOCK stays whole: halved, it sped up
# only the staged out= (``STAGED``), whose blocks must sum as the default call's do, to
# the bit (performance-log.md, "Blocks of float64").
LOSSES_BLOCK = 1024
OPTIMISTIC_BLOCK = 512
CE_CHUNK_ELEMENTS = 8192  # the fewest logits in a cross-entropy chunk (two beat one from 2x)
# From a gradient of this many bytes (64 MiB, of float32 16.8 million elements; with y
# and p 192 MiB), a kernel whose loop writes nothing but the gradient (alone, with the
# Hessian, or with the value summed in the loop) writes it, and the Hessian, by streaming
# stores (the gradient alone through a block in L1 where it does not start a cache line:
# ``numba_backend._streams``): their lines are then neither read from DRAM before being
# written nor kept in the caches, which they would not fit. Measured on the
# Xeon (two threads, float32, default call, against plain stores; performance-log.md):
# value_and_grad 0.75-0.93 of the time at 1e8 (MSE, MAE, huber, smooth L1, the hinges),
# 0.83-0.97 at 2e7; grad alone 0.60-0.96 at 1e8 (log_cosh, bound by its arithmetic,
# 1.03); grad_and_hess 0.61-0.84 at 2e7 and 1e8. At 1e7, where part of the arrays stays
# in the L3 between calls, 0.90-1.08 (kl_div's grad 1.28x). The kernels that write their
# losses into L1 blocks took 1.03-1.25x as long (the block's stores among the streaming
# ones), and pinball's value in its loop 1.10x: those keep plain stores (``loss_math``'s
# ``stream_with_value``). Cross-entropy's long rows too (``_numba_rows.STREAM_ROW_BYTES``).
STREAM_FROM_BYTES = 1 << 26
PARALLEL_MIN_ELEMENTS = 1 << 17  # below this one thread is faster (thread start-up)


# Numba's cache checks the source of the file a kernel is written in, not of the files
# whose functions it inlines or calls, so every kernel's cache name carries a fingerprint
# of all the Numba backend's sources (with ``_threads`` and ``_host``, whose constants
# kernels take: ``CONFIDENT``): an edit or an upgrade of one never loads kernels compiled
# from before.
_FOLDER = Path(__file__).parent
_SOURCES_FINGERPRINT = hashlib.sha256(b"".join(
    path.read_bytes() for path in sorted([*_FOLDER.glob("*numba*.py"), _FOLDER / "_threads.py",
                                          _FOLDER / "_host.py"])
)).hexdigest()[:12]


def _jit(function, name: str, reassociate: bool = False, loss: dict | None = None):
    """Compile ``function`` under its own name (its cache entry) with our flags; only sums
    may ``reassociate``. ``loss``: globals of this compilation alone, over the function's
    module's (an elementwise kernel's loss: its functions and constants, see
    ``numba_backend._elementwise``; a closure cell holding a function would be pickled
    into the cache's key, which then never matches again)."""
    name = f"{name}_{_SOURCES_FINGERPRINT}"
    scope = function.__globals__ if loss is None else {**function.__globals__, **loss}
    clone = types.FunctionType(function.__code__, scope, name,
                               function.__defaults__, function.__closure__)
    clone.__qualname__ = name
    fastmath = set(FASTMATH) | ({"reassoc"} if reassociate else set())
    # nogil: a large input's chunks run on several threads at once (``_threads``)
    options = {"fastmath": fastmath, "nogil": True,
               "error_model": "numpy"}  # x / 0 is inf or NaN, as in NumPy
    try:
        return njit(cache=True, **options)(clone)
    except RuntimeError as exc:  # no writable cache location: compile per process
        if not _UNCACHED:  # one warning for all the kernels
            warnings.warn(f"Numba cannot cache the lossbackends kernels ({exc}); they are "
                          "compiled in each process. Set NUMBA_CACHE_DIR to a writable "
                          "directory to cache them.", RuntimeWarning, stacklevel=2)
        _UNCACHED.append(name)
        return njit(**options)(clone)


_UNCACHED: list[str] = []  # the kernels compiled without an on-disk cache


def _prefer_wide_vectors(builder):
    # (llvmlite's attribute set admits only its known names; a string attribute is added
    # past that check and printed as written)
    set.add(builder.function.attributes, '"prefer-vector-width"="512"')
    # (as clang sets it with its preference; LLVM's inliner drops it where it inlines a
    # function without it, and the preference alone gives the same code)
    set.add(builder.function.attributes, '"min-legal-vector-width"="512"')


@intrinsic
def wide_vectors(typingctx):
    """Lets LLVM vectorise the function this is called in with the CPU's widest vectors:
    LLVM's function attribute "prefer-vector-width"="512" (LLVM's own choice for AVX-512
    CPUs is 256 bits, against the clock drop of the first AVX-512 Xeons). Numba
    vectorises each compiled function's loops in that function's own module, before it
    is inlined anywhere, so every function whose loops are to run wide calls this first;
    the function is the one compiled on its own (the library's ``inline`` helpers are:
    under Numba's ``inline="always"`` it would land on the caller). A CPU without AVX-512
    keeps its own width. Set on functions, never on the process: a user's own Numba code
    keeps LLVM's choice. Called by the cross-entropy row kernel and its row helpers,
    ``_sum``, and the elementwise losses that ask for it (``wide_vectors_for``); see the
    measurement log for where it pays on the Sapphire Rapids Xeon we measure on."""
    sig = numba.types.void()

    def codegen(context, builder, signature, args):
        _prefer_wide_vectors(builder)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def aligned_stack(typingctx):
    """Aligns the stack frame of the function this is called in to a cache line (LLVM's
    ``alignstack(64)``: its prologue rounds the stack pointer down, and its spills are
    aligned moves). The kernels keep their loops' constants in vector registers
    (``held``), and those beyond the 32 of AVX-512 on the stack, read again on every
    iteration; on a frame aligned to 16 bytes only, as the calling convention gives,
    where the stack pointer falls in a cache line differs per process (address
    randomisation and the environment's size move it), and a 64-byte read across two
    lines costs two. How much depends on which slots a kernel's code puts where: while
    sigmoid_focal's form for labels of 0 and 1 was rewritten, its gradient took 1.44 or
    0.93 ns per element in cache by that alone, log_cosh's (its series by fma) 0.50 or
    0.42 (AMD EPYC, one thread). Called first in each kernel, the function Numba compiles
    on its own: in an ``inline`` helper it would do nothing (that function's attributes
    are not the kernel's)."""
    sig = numba.types.void()

    def codegen(context, builder, signature, args):
        # (added past llvmlite's check, as ``_prefer_wide_vectors`` does: its own
        # ``alignstack`` property is printed only beside another attribute)
        set.add(builder.function.attributes, f"alignstack({LINE})")
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def stack_block(typingctx, capacity, size, like):
    """A 1-D array of ``size`` elements of ``like``'s dtype on the calling kernel's stack
    (its first ``capacity`` elements' room, a constant: ``size`` must not exceed it), at a
    cache line: a kernel's scratch block, which a NumPy allocation cost an allocation and
    a free, with their reference counts, on every call (about 400 instructions at n =
    1000, 2 % of the call). Not to be returned: it lives as long as the kernel's frame."""
    if not isinstance(capacity, numba.types.IntegerLiteral):
        return None  # (Numba types the call again with the constant's literal)
    block = numba.types.Array(like.dtype, 1, "C")

    def codegen(context, builder, signature, args):
        element = context.get_data_type(like.dtype)
        data = cgutils.alloca_once(builder, element, size=context.get_constant(
            numba.types.intp, capacity.literal_value))
        data.align = LINE
        array = context.make_array(block)(context, builder)
        itemsize = context.get_constant(numba.types.intp, context.get_abi_sizeof(element))
        context.populate_array(array, data=data, shape=[args[1]], strides=[itemsize],
                               itemsize=itemsize, meminfo=None)
        return array._getvalue()

    return block(capacity, size, like), codegen


@intrinsic
def wide_vectors_for(typingctx, math):
    """``wide_vectors`` where ``math``, a loss's compiled mathematics, asks for them
    (``_numba_loss_math.loss_math``'s ``wide_vectors``), else nothing: decided when the
    function calling it compiles, for that loss."""
    wide = getattr(getattr(math, "dispatcher", None), "wide_vectors", False)
    sig = numba.types.void(math)

    def codegen(context, builder, signature, args):
        if wide:
            _prefer_wide_vectors(builder)
        return context.get_dummy_value()

    return sig, codegen


@njit(**{**INLINE, "fastmath": set(FASTMATH) | {"reassoc"}})
def add_reassociable(total, value):
    """``total + value``, the one addition of a loop that LLVM may reorder: a loop's running
    sum of these vectorises into partial sums (their order fixed at compile time, so the
    same inputs give the same bits), while the formulas around it, compiled without
    reassociation, still round as written (fast-math flags belong to each instruction, and
    stay with it when LLVM inlines this)."""
    return total + value


@inline
def add_compensated(total, error, value):
    """``(total + value, error)``, Neumaier's compensated sum: ``error`` gathers what each
    addition rounded away, so that a sum of rows one after another (cross-entropy's losses,
    its weighted denominator) keeps float64's accuracy however many rows a chunk has,
    where the plain running sum lost 1e-13 to 1e-11 relative over 2e6 rows. The kernels
    compile without reassociation, which would cancel it. ``compensated(total, error)``
    gives the sum."""
    added = total + value
    if abs(total) >= abs(value):
        error += (total - added) + value
    else:
        error += (value - added) + total
    return added, error


@inline
def compensated(total, error):
    """The sum of ``add_compensated``: an infinite or NaN total as it is (its error is then
    NaN: inf - inf)."""
    return total + error if np.isfinite(total) else total


# float64 values are summed in spans of SUM_SPAN terms, reassociated, and the spans' sums
# added compensated (``add_compensated``): one reassociated loop keeps 32 partial sums of
# size / 32 terms each, and a confident float64 row's loss at 128000 classes came 543 ulp
# off (NumPy's pairwise sum: 1). float32 values, summed in float64 with 29 bits to spare,
# take one span: the code and the bits of before.
SUM_SPAN = 256


@intrinsic
def holds_64_bits(typingctx, values):
    """Whether ``values`` holds 64-bit numbers, as a constant of the compiled code, so that
    the branch not taken is dropped (``values.itemsize`` is read from the array when the
    code runs: float32 rows at 100 classes took 2 % longer with it)."""
    wide = values.dtype.bitwidth == 64
    sig = numba.types.boolean(values)

    def codegen(context, builder, signature, args):
        return context.get_constant(numba.types.boolean, wide)

    return sig, codegen


def _sum_span(values):
    """sum(values) in float64, reassociated so that it vectorises: compiled on its own, so
    the formulas of its callers keep their order. The order is fixed at compile time, so
    the same inputs give the same bits."""
    wide_vectors()
    total = 0.0
    for i in range(values.size):
        total += values[i]
    return total


_sum_span = _jit(_sum_span, "_sum_span", reassociate=True)


@inline  # (float32 values: the call of ``_sum_span`` alone, as before the spans)
def _sum(values):
    """sum(values) in float64: ``_sum_span``, over spans for float64 values (``SUM_SPAN``)."""
    if not holds_64_bits(values):
        return _sum_span(values)
    total, error = 0.0, 0.0
    for start in range(0, values.size, SUM_SPAN):
        total, error = add_compensated(total, error, _sum_span(values[start:start + SUM_SPAN]))
    return compensated(total, error)


def _in_order(partials) -> float:
    """sum(partials) from first to last: the chunks' partial sums in a fixed order, as a
    kernel adds them over its chunks, so that the result does not depend on which thread
    ran which chunk (Python floats: float64 additions, as in the kernels)."""
    total = 0.0
    for value in partials.tolist():
        total += value
    return total


_UNIT = {np.dtype(np.float32): np.float32(1), np.dtype(np.float64): np.float64(1)}
_LARGEST = {dtype: float(np.finfo(dtype).max) for dtype in _UNIT}


def in_dtype(total: float, dtype: np.dtype):
    """The float64 ``total`` as a NumPy scalar of ``dtype``: beyond the dtype's largest
    finite, inf, a result, without the overflow warning of NumPy's cast (as
    ``_host.cast_quietly``). One comparison on the usual path."""
    if abs(total) <= _LARGEST[dtype]:  # (a scalar times a Python float has its dtype)
        return _UNIT[dtype] * total
    with np.errstate(over="ignore"):
        return _UNIT[dtype] * total


# empty arrays that stand in for unused array arguments of the row kernels (no class
# weights, no probabilities), so that every call types the same way
_EMPTY = {dtype: np.empty(0, dtype) for dtype in _UNIT}
_EMPTY_ROWS = {dtype: np.empty((0, 0), dtype) for dtype in _UNIT}
_NO_LABELS = np.empty(0, np.int64)


def array_type(dtype, ndim: int, writes: bool = False):
    """The Numba type of a kernel's array argument when its machine code is called directly
    (``_machine_code``, the row kernels' ``_launch``), which skips the dispatcher's typing
    of every argument on every call. C-contiguous: the front's preparation
    (``as_prediction``, ``as_values``, ``_check_out``) makes every array so. An array the
    kernel only reads is typed read-only and unaligned, so that one compiled version takes
    them all, aligned or not, writeable or not (JAX's arrays, a memory map's); an unaligned
    load costs nothing on the CPUs we run on. An array it ``writes`` is typed writeable and
    aligned, like the kernels' own scratch arrays, which Numba must be able to unify with
    it (``_check_out`` rejects an unaligned ``out=``)."""
    if writes:
        return numba.types.Array(numba.from_dtype(dtype), ndim, "C")
    return numba.types.Array(numba.from_dtype(dtype), ndim, "C", readonly=True, aligned=False)


def _written_over(grad, p):
    """Whether the gradient ``grad`` is written over ``p`` (``out=y_pred``, or the logits; the
    front allows no other overlap); False for no gradient."""


@overload(_written_over, jit_options=INLINE)
def _written_over_typed(grad, p):
    if isinstance(grad, numba.types.NoneType):
        return lambda grad, p: False
    return lambda grad, p: grad.ctypes.data == p.ctypes.data


def float64_block(p, block):
    """Elements per block of a kernel of ``LOSSES_BLOCK`` or ``OPTIMISTIC_BLOCK`` (``block``)
    for ``p``'s dtype: half as many for float64, the same bytes in L1 as float32's. Chosen
    when the kernel is compiled (an array's itemsize is read at run time), so the loops'
    bound stays a constant."""


@overload(float64_block, jit_options=INLINE)
def _float64_block_typed(p, block):
    if p.dtype.bitwidth == 64:
        return lambda p, block: block // 2
    return lambda p, block: block


@inline
def _copy(source, target):
    """target[:] = source, for arrays of one size that do not overlap: a plain loop, which
    LLVM vectorises (Numba's slice assignment checks for overlap and may copy twice)."""
    for i in range(source.size):
        target[i] = source[i]


@intrinsic
def store_streaming(typingctx, values, index, value):
    """values[index] = value, written to memory without reading its cache line first (no
    read for ownership) and without keeping it in the caches: for an output larger than
    they are, whose lines plain stores would read from DRAM only to overwrite and evict
    them. A non-temporal store (LLVM's ``!nontemporal``), declared ``LINE``-aligned: LLVM's
    loop vectoriser takes one only if aligned, so only a loop whose first element starts a
    cache line of ``values`` may call it (its vector stores are then aligned; the
    remainder's scalar stores need no alignment). ``store_fence`` before another thread
    reads what it wrote."""
    if isinstance(values, numba.types.Optional):  # (a gradient that may be None: cast)
        values = values.type
    if not (isinstance(values, numba.types.Array) and isinstance(index, numba.types.Integer)):
        return None
    sig = numba.types.void(values, numba.types.intp, values.dtype)

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        store = builder.store(args[2], builder.gep(data, [args[1]], inbounds=True), align=LINE)
        store.set_metadata("nontemporal",
                           builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)]))
        return context.get_dummy_value()

    return sig, codegen


@inline
def lines_head(target):
    """How many of ``target``'s elements lie before its first cache line (all of them in an
    array shorter than that): the elements ``copy_streaming`` writes by plain stores."""
    return min(target.size, (-target.ctypes.data % LINE) // target.itemsize)


@inline
def copy_streaming(source, target):
    """target[:] = source, by streaming stores (``store_streaming``) from target's first
    cache line on, plain stores before it: for a target that does not start a line, which
    a loop's own streaming stores need (a NumPy array's data starts 16 bytes past one).
    Keeps the caller's vector width (no ``wide_vectors``)."""
    head = lines_head(target)
    for i in range(head):
        target[i] = source[i]
    whole = head + (target.size - head) // (LINE // target.itemsize) * (LINE // target.itemsize)
    lines, rest = target[head:whole], source[head:whole]  # (from 0: LLVM vectorises)
    for i in range(lines.size):
        store_streaming(lines, i, rest[i])
    for i in range(whole, target.size):
        target[i] = source[i]


_X86 = platform.machine().lower() in {"x86_64", "amd64", "i386", "i686", "x86"}


@intrinsic
def store_fence(typingctx):
    """The streaming stores before it (``store_streaming``), which the caches' ordering
    does not cover, are visible before any store after it: ``sfence`` on x86, a full
    fence elsewhere."""

    def codegen(context, builder, signature, args):
        if _X86:
            function = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse.sfence")
            builder.call(function, [])
        else:
            builder.fence("seq_cst")
        return context.get_dummy_value()

    return numba.types.void(), codegen


# every kernel's last argument: the chunks its threads share, or None (see ``_threads``)
_CHUNK_ARGUMENTS = (SHARED,)


@intrinsic
def _prefetch(typingctx, values, index):
    """A hint to bring ``values[index]``'s cache line into L2 (LLVM's ``llvm.prefetch``:
    read, locality 2, data): no load waits on it, and no address faults."""
    if not (isinstance(values, numba.types.Array) and isinstance(index, numba.types.Integer)):
        return None
    sig = numba.types.void(values, index)

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        byte = ir.IntType(8).as_pointer()
        address = builder.bitcast(builder.gep(data, [args[1]]), byte)
        i32 = ir.IntType(32)
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte, i32, i32, i32]),
            "llvm.prefetch.p0")
        builder.call(function, [address, ir.Constant(i32, 0), ir.Constant(i32, 2),
                                ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


@inline
def prefetch_lines(values, start, stop):
    """Prefetch (``_prefetch``) the cache lines of ``values[start:stop]`` (1-d, contiguous;
    clipped to its size)."""
    step = max(1, LINE // values.itemsize)
    for i in range(start, min(stop, values.size), step):
        _prefetch(values, i)
