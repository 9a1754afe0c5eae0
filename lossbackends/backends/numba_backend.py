"""The Numba backend: fused, single-pass CPU kernels.

Each elementwise kernel (``_numba_elementwise``, on each loss's mathematics in
``_numba_losses``) reads ``y`` and ``p`` once and writes the gradient, summing the losses
in float64 while they are in cache. The formulas are compiled without reassociation, so
they round as written; only the sums reassociate (``_sum_span``, ``add_reassociable``), to
vectorise. A gradient (and Hessian) of ``STREAM_FROM_BYTES`` or more goes by streaming
stores, which skip the caches, in the kernels whose loop writes nothing else
(``_streams``). This module launches them and registers every kernel of the backend.
Work is cut into ``CHUNKS`` fixed chunks whose partial sums are added in order, so the
result does not depend on the number of threads; the chunks of a large input are shared
out among threads, each taking the next chunk not yet taken (``_threads``). Elementwise
inputs below ``PARALLEL_MIN_ELEMENTS``, and cross-entropy inputs of one chunk (under
twice ``CE_CHUNK_ELEMENTS`` logits), run on the calling thread alone. The row losses
(cross-entropy, multiclass hinge) live in ``_numba_rows`` (with
``_numba_cross_entropy_few``) and ``_numba_multiclass_hinge``, on ``_numba_row_common``;
what every kernel shares (``_jit``, the sums, the chunking constants, ``array_type``) in
``_numba_common``.

Compiled code is cached on disk (``cache=True``): next to this module when that directory
is writable, else in Numba's user-wide cache (``NUMBA_CACHE_DIR`` overrides both). If no
cache location is writable the kernels still compile, once per process, and a warning
says so. Nothing is compiled at import.
"""

from __future__ import annotations

import numba
import numpy as np

from .. import _dispatch
from . import _numba_losses, _threads
from ._host import HALF, in_float32
from ._numba_common import (
    _CHUNK_ARGUMENTS,
    _LARGEST,
    _UNIT,
    CHUNKS,
    LINE,
    PARALLEL_MIN_ELEMENTS,
    STREAM_FROM_BYTES,
    _in_order,
    _jit,
    array_type,
    in_dtype,
)
from ._numba_elementwise import (
    _STREAM_NAMES,
    PLAIN,
    STAGED,
    STREAMED,
    _elementwise_kernel,
)
from ._numba_half import down as _half_down
from ._numba_half import up as _half_up
from ._numba_multiclass_hinge import multiclass_hinge
from ._numba_rows import cross_entropy

xp = np


# --- launching -------------------------------------------------------------------------

_NO_PARAM = (0.0, 0.0, 0.0)  # the options' tuple of a loss without options
# Below this many elements the value is summed from the block of losses (``_sum_span``), not in
# the loop: LLVM's vector loop runs only where its runtime check finds the gradient at
# least a vector loop's step (32 elements) away from y and p, else a scalar loop adds the
# losses in another order, and a tiny call's value (float64: 9 to 30 elements) then
# depended on where its gradient was allocated. The sum of a block in L1 reads only that
# block, and always adds in one order.
SUM_IN_LOOP_MIN = 64
NO_FLOOR = float("-inf")  # no floor under the Hessian


def _machine_code(kernel, dtype, no_weight, no_pos_weight, no_grad, no_hess):
    """An elementwise ``kernel``'s compiled code (compiled, or loaded from the disk cache,
    on first use) for 1-d arrays of ``dtype`` (see ``array_type``), without a weight,
    pos_weight, gradient or Hessian as the ``no_`` flags say; the losses' array is
    optional (one version for ``"none"`` and the sums). Its numbers are typed
    float64 whatever their Python type, as the kernels read them (an int passed later is
    converted, never misread)."""
    given, written = array_type(dtype, 1), array_type(dtype, 1, writes=True)
    return kernel.compile((given, given, numba.none if no_weight else given,
                           numba.none if no_pos_weight else given,
                           numba.typeof(_NO_PARAM), numba.float64, numba.float64,
                           numba.none if no_grad else written, numba.optional(written),
                           numba.none if no_hess else written, *_CHUNK_ARGUMENTS))


def _key_name(key) -> str:
    """A variant's key as part of a cache entry's name."""
    parts = key if isinstance(key, tuple) else (key,)
    return "_".join(str(int(part)).replace("-", "m") for part in parts)


def _elementwise(loss: str):
    # (variant, want_value, sum_in_loop) -> compiled kernel; a variant is a function of
    # _numba_losses (the key None for a loss of one function). Kernels without the value
    # sum nothing: (variant, False, False) only.
    kernels = {}
    # variant -> the least size from which its value is summed in the loop, or None
    sum_in_loop_from = {}
    functions = _numba_losses.variants(loss)
    for key, math in functions.items():
        constants = math.constants
        hard = math.hard_labels
        start = sum_in_loop_from[key] = math.sum_in_loop_from
        # (the calls below PARALLEL_MIN_ELEMENTS run one kernel, chosen once)
        assert start in (None, 0) or start >= PARALLEL_MIN_ELEMENTS
        label = loss if key is None else f"{loss}_{_key_name(key)}"
        # (want_value, sum_in_loop, name) of the kernels this variant runs
        # (the value of fewer than SUM_IN_LOOP_MIN elements is summed from its block)
        runs = [(False, False, "grad"), (True, False, "value"),
                *([(True, True, "value_summed")] if start is not None else [])]
        for want, in_loop, name in runs:
            optimistic = hard is not None and (want or math.hard_gradient)
            # the kernels that sum in their loop run wide vectors (see ``loss_math``);
            # those that sum nothing, a form's twin where only the value's sum tells
            # whether its gradient is right (``gradient_checked``)
            form = math.wide_form if in_loop else math
            form = form.limits if not want and form.gradient_checked else form
            # a kernel whose loop writes only the gradient has streaming forms too
            streams = not want or (in_loop and math.stream_with_value)
            for stream in (PLAIN, STREAMED, STAGED) if streams else (PLAIN,):
                # (without a form for hard labels the general one stands in, typed, never run)
                hard_form = form.hard_labels or form
                limited = want and form.limits is not None
                hard_limited = want and optimistic and hard_form.limits is not None
                source = _elementwise_kernel(optimistic, want, in_loop, stream, limited,
                                             hard_limited)
                kernels[key, want, in_loop, stream] = _jit(
                    source, f"{label}_{name}{_STREAM_NAMES[stream]}", loss={
                        "_LOSS_MATH": form, "_HARD_LABELS_MATH": hard_form,
                        "_LOSS_LIMITS": form.limits or form,
                        "_HARD_LABELS_LIMITS": hard_form.limits or hard_form,
                        "_LOSS_CONSTANTS": constants})

    def options(params) -> tuple:
        """(variant, the kernel's numbers, pos_weight) for the loss's ``params``."""
        return _numba_losses.variant(loss, params)

    # (variant, want_value, sum_in_loop, the dtype's number, whether the gradient,
    # weight, pos_weight and Hessian are None, and how it stores them) -> the kernel's
    # machine code (see _machine_code).
    # Called directly it skips the dispatcher's typing of ten arguments, half a
    # microsecond (a seventh of a call at n = 1000). (dtype.num, not the dtype: a dtype's
    # hash is computed on every call, and the lookup took 0.3 us instead of 0.2.)
    usual_code: dict[tuple, object] = {}

    def machine_code(key, want_value, n, dtype, no_weight, no_pos_weight, no_grad, no_hess,
                     stream=PLAIN):
        """The code for ``n`` elements (whose value it sums in its loop or not), storing
        its gradient and Hessian as ``stream`` says (``_streams``) if it has a form that
        does, else by plain stores."""
        start = sum_in_loop_from[key]
        in_loop = want_value and start is not None and n >= max(start, SUM_IN_LOOP_MIN)
        stream = stream if (key, want_value, in_loop, stream) in kernels else PLAIN
        usual = (key, want_value, in_loop, dtype.num, no_grad, no_weight, no_pos_weight,
                 no_hess, stream)
        code = usual_code.get(usual)
        if code is None:
            code = usual_code[usual] = _machine_code(kernels[key, want_value, in_loop, stream],
                                                     dtype, no_weight, no_pos_weight, no_grad,
                                                     no_hess)
        return code

    def kernel(y, p, weight, params, reduction, scale, grad, want_value, hess=None,
               hess_floor=NO_FLOOR):
        """The registered kernel (see ``_loss``); ``hess_floor``, for float32 and float64
        inputs, is the Hessian's least value before the weight and the scale: max(h,
        hess_floor) w, NaN kept (the boosting objectives' floor, in the same pass;
        ``_boosting``). With it, a call without the value returns how many blocks may hold
        a label outside [0, 1] (NaN, or below 0, -0.0 included: 0 when there is none),
        counted in the same pass; times the scale, 1 for the objectives' ``"sum"``."""
        dtype = p.dtype
        if dtype.num == HALF:  # checked here, not by a wrapper: this runs on every call
            if hess_floor != NO_FLOOR:
                raise NotImplementedError("hess_floor takes float32 or float64 inputs")
            return in_float32(kernel, y, p, weight, params, reduction, scale, grad, want_value,
                              hess, _half_up, _half_down)
        key, param, pos_weight = options(params)
        # "none" gets an array of losses; the other reductions None: the kernel sums
        losses = np.empty(p.shape, dtype) if want_value and reduction == "none" else None
        flat_losses = losses
        if p.ndim != 1:  # the kernels index flat arrays (all are C-contiguous)
            y, p = y.reshape(-1), p.reshape(-1)
            weight = None if weight is None else weight.reshape(-1)
            grad = None if grad is None else grad.reshape(-1)
            hess = None if hess is None else hess.reshape(-1)
            flat_losses = None if losses is None else losses.reshape(-1)
        code = machine_code(key, want_value, p.size, dtype, weight is None, pos_weight is None,
                            grad is None, hess is None, _streams(grad, p, hess))
        if p.size < PARALLEL_MIN_ELEMENTS:  # one chunk, on this thread
            total = code(y, p, weight, pos_weight, param, scale, hess_floor, grad,
                         flat_losses, hess, None)
        else:
            total = _shared_total(code, (y, p, weight, pos_weight, param, scale, hess_floor,
                                         grad, flat_losses, hess))
        if not want_value:
            return None if hess_floor == NO_FLOOR else total
        if losses is not None:
            return losses
        return in_dtype(total, dtype)

    def plain_call(dtype, reduction, want_value, no_grad, params):
        """The launch of a plain call (see ``PlainCalls``): the kernel's code and numbers
        found once, the arguments written out (this runs on every call)."""
        if dtype.num == HALF:
            return lambda y, p, scale, grad: kernel(y, p, None, params, reduction, scale, grad,
                                                    want_value)
        key, param, pos_weight = options(params)
        # the code of the calls below PARALLEL_MIN_ELEMENTS, found once (and of those below
        # SUM_IN_LOOP_MIN); a larger call finds its own (machine_code's lookup) on each call
        code = machine_code(key, want_value, SUM_IN_LOOP_MIN, dtype, True, pos_weight is None,
                            no_grad, True)
        tiny = machine_code(key, want_value, 0, dtype, True, pos_weight is None, no_grad, True)
        unit = _UNIT[dtype] if want_value else None
        largest = _LARGEST[dtype]

        def launch(y, p, scale, grad):
            if p.ndim != 1:  # the kernels index flat arrays (all are C-contiguous)
                y, p = y.reshape(-1), p.reshape(-1)
                grad = None if grad is None else grad.reshape(-1)
            if p.size < PARALLEL_MIN_ELEMENTS:  # one chunk, on this thread
                total = (code if p.size >= SUM_IN_LOOP_MIN else tiny)(
                    y, p, None, pos_weight, param, scale, NO_FLOOR, grad, None, None, None)
            else:
                large = machine_code(key, want_value, p.size, dtype, True, pos_weight is None,
                                     no_grad, True, _streams(grad, p, None))
                total = _shared_total(large, (y, p, None, pos_weight, param, scale, NO_FLOOR,
                                              grad, None, None))
            if unit is None:
                return None
            # (a NumPy scalar of p's dtype: one times a Python float has the scalar's dtype,
            # NEP 50, for a third of p.dtype.type(total); beyond the largest, in_dtype)
            return unit * total if abs(total) <= largest else in_dtype(total, dtype)

        return launch

    kernel.__name__ = kernel.__qualname__ = loss
    kernel.usual_code = usual_code  # (for tests)
    kernel.dispatchers = kernels  # (for tests: their compiled code)
    kernel.plain = PlainCalls(plain_call)
    return kernel


def _streams(grad, p, hess) -> int:
    """How a call stores its gradient ``grad`` (and its Hessian ``hess``, or None): from
    ``STREAM_FROM_BYTES`` on, the gradient not over ``p`` (that one goes through a block
    in L1 and back over p, plain), by streaming stores in the block's loop where both
    start a cache line (``STREAMED``: the chunks and blocks then do); else, without a
    Hessian, through a block in L1 that ``copy_streaming`` copies (``STAGED``: a NumPy
    ``out=``, whose data starts 16 bytes past a line); else ``PLAIN``. STAGED against
    plain stores, float32 at 1e8, two threads, alternating in one process (2026-12-04, AMD
    EPYC): ``grad`` 0.82 of the time (MAE; STREAMED 0.81), ``value_and_grad`` 0.91-0.96
    (MSE, MAE, huber, hinge, squared hinge; STREAMED 0.80-0.85); ``grad_and_hess``
    1.02-1.23x as long, hence plain. (A first form, which streamed each block's last
    partial line too, lost: see the measurement log.)"""
    if grad is None or grad.nbytes < STREAM_FROM_BYTES:
        return PLAIN
    address = grad.__array_interface__["data"][0]
    if address == p.__array_interface__["data"][0]:
        return PLAIN
    if address % LINE == 0 and (hess is None or hess.__array_interface__["data"][0] % LINE == 0):
        return STREAMED
    return STAGED if hess is None else PLAIN


def _shared_total(code, args: tuple) -> float:
    """The sum a kernel's ``code`` returns for ``args``, its ``CHUNKS`` chunks shared among
    the threads (``_threads``), times the reduction's scale (``args``' sixth)."""
    _, partials = _threads.share(code, args, CHUNKS)
    return _in_order(partials) * args[5]


class PlainCalls(dict):
    """A kernel's launches of plain calls, which the front calls directly (see
    ``_loss.Loss._run``): ``(dtype, reduction, want_value, no gradient, params) ->
    launch(y, p, scale, grad)``, where y_true and y_pred are C-contiguous NumPy arrays of
    one shape (of ``dtype``), without weight or option (``params``: the loss's default
    options, in the key, as a ``Loss`` of the same name may have other defaults), and the
    reduction not ``"none"``. It skips the kernel's own choice of its code on every call
    (about 2000 instructions, a tenth of a call at n = 1000)."""

    def __init__(self, build):
        super().__init__()
        self._build = build

    def build(self, key: tuple):
        """The launch for ``key``, made now (on a call's first use) and kept."""
        launch = self[key] = self._build(*key)
        return launch


KERNELS = {**{loss: _elementwise(loss) for loss in _numba_losses.LOSSES},
           "cross_entropy": cross_entropy, "multiclass_hinge": multiclass_hinge}
_dispatch.register("numba", KERNELS)
