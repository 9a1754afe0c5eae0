"""The Numba backend's elementwise kernel: one loop shared by every elementwise loss, on
that loss's mathematics alone (``_numba_losses``), compiled once per loss, variant and
form (``numba_backend._elementwise`` launches them).

Each kernel reads ``y`` and ``p`` once and writes the gradient; block by block
(``BLOCK`` elements in L1; fewer where it keeps more there: ``LOSSES_BLOCK``) it writes
the losses into a buffer (or the ``"none"`` result) that ``_sum_span`` adds in float64 while
they are in cache, or, for the losses of a few operations, adds them in float64 in the
same loop, always or from the sizes that stream from DRAM (``loss_math``'s
``sum_in_loop_from``). A gradient (and Hessian) goes by plain stores, by streaming stores
from the loop, or through a block in L1 copied by streaming stores (``PLAIN``,
``STREAMED``, ``STAGED``: ``numba_backend._streams`` chooses).
"""

from __future__ import annotations

import numba
import numpy as np
from numba.extending import overload

from ._numba_common import (
    BLOCK,
    CHUNKS,
    LINE,
    LOSSES_BLOCK,
    OPTIMISTIC_BLOCK,
    PARALLEL_MIN_ELEMENTS,
    _copy,
    _sum_span,
    _written_over,
    add_compensated,
    add_reassociable,
    aligned_stack,
    compensated,
    copy_streaming,
    float64_block,
    holds_64_bits,
    prefetch_lines,
    stack_block,
    store_fence,
    store_streaming,
    wide_vectors_for,
)
from ._numba_intrinsics import INLINE, held, inline
from ._numba_loss_math import IN_DRAM
from ._numba_math import ONE, ZERO
from ._threads import claim, record

# How a kernel stores its gradient and Hessian (``numba_backend._streams``), and its
# name's suffix
PLAIN, STREAMED, STAGED = 0, 1, 2
_STREAM_NAMES = {PLAIN: "", STREAMED: "_streaming", STAGED: "_streaming_staged"}
# elements of float32 in a cache line (of float64, two lines): the chunks' sizes are a
# multiple of it, so each chunk starts where the array's first line does
LINE_ELEMENTS = LINE // 4


# Each elementwise kernel's loss, set per compilation (``_jit``'s ``loss``): its function,
# its form for labels of 0 and 1, each one's form that takes the limits of its value (see
# ``loss_math``; where it has none, itself stands in, typed, never run), and the constants
# they declare, held
_LOSS_MATH = _HARD_LABELS_MATH = _LOSS_LIMITS = _HARD_LABELS_LIMITS = _LOSS_CONSTANTS = None


@inline
def _labels_are_0_or_1(ys):
    """Whether every label is 0 or 1 (NaN and inf are not): one vectorised pass, with no
    early exit, which would stop LLVM vectorising it."""
    soft = False
    for i in range(ys.size):
        soft |= ys[i] * (ONE - ys[i]) != ZERO
    return not soft


def _outside_unit(ys):
    """Whether a label of the block ``ys`` may be outside [0, 1]: the largest of their
    bits as unsigned integers is above 1.0's (NaN, a set sign bit and anything above 1
    are larger; -0.0 too, which the exact check lets through). One vectorised unsigned max
    per label of a block just read (in L1); comparing the floats cost four times more."""


@overload(_outside_unit, jit_options=INLINE)
def _outside_unit_typed(ys):
    wide = ys.dtype == numba.float64
    unsigned = np.uint64 if wide else np.uint32
    one = unsigned(np.float64(1).view(np.uint64) if wide else np.float32(1).view(np.uint32))

    def outside(ys):
        bits = ys.view(unsigned)
        worst = unsigned(0)
        for i in range(bits.size):
            worst = max(worst, bits[i])
        return worst > one

    return outside


@inline
def weighted_floor(h, bound, negative):
    """max(h, floor) w from the weighted h = h w and bound = floor w, as the boosting
    libraries apply their floors (``negative``: w < 0, which LightGBM takes: then the
    smaller of the two). Selects, vectorised; NaN kept, and a NaN bound is no floor (every
    comparison with NaN is false)."""
    return bound if (h > bound if negative else h < bound) else h


@inline
def _elementwise_block(math, k, hard_labels, want_value, sum_in_loop, ys, ps, ws, gs, ls, hs,
                       pos_weight, offset, param, grad_scale, hess_floor, stream):
    """One block of an elementwise kernel: writes the gradient into ``gs``, the Hessian's
    diagonal into ``hs`` (when not None; max(h, ``hess_floor``) times the weight, before
    the scale, NaN kept; none for a NaN floor) and the losses into ``ls`` (when not None:
    ``"none"``) by ``math``, the loss's function ``(y, p, param, pos, k) -> (loss, d, h)``
    (``k``: the held constants of its mathematics, see ``loss_math``). Returns the
    block's sum of the losses in float64 when ``want_value`` and ``sum_in_loop`` (else 0:
    the caller sums ``ls``, the block's losses, after the loop), and whether a
    label was not 0 or 1 when ``hard_labels`` (``math`` is then the loss's form for such
    labels, and the caller runs the block again without it), else False. ``stream``:
    whether the gradient and the Hessian are written by streaming stores (``gs`` and
    ``hs`` then start a cache line)."""
    wide_vectors_for(math)
    soft = False
    part = 0.0
    for i in range(ps.size):
        if hard_labels:
            soft |= ys[i] * (ONE - ys[i]) != ZERO  # NaN and inf count as soft
        pos = None if pos_weight is None else pos_weight[(offset + i) % pos_weight.size]
        loss, d, h = math(ys[i], ps[i], param, pos, k)
        if ws is not None:
            loss = loss * ws[i]
            d = d * ws[i]
            h = h * ws[i]
        if hs is not None:
            # a boosting library's floor, then the weight (a NaN floor: none)
            if ws is None:
                h = weighted_floor(h, hess_floor, False)
            else:
                h = weighted_floor(h, hess_floor * ws[i], ws[i] < ZERO)
            if stream:
                store_streaming(hs, i, h * grad_scale)
            else:
                hs[i] = h * grad_scale
        if gs is not None:
            if stream:  # (a closure constant of the kernel: one branch compiled)
                store_streaming(gs, i, d * grad_scale)
            else:
                gs[i] = d * grad_scale
        if want_value and ls is not None:  # (without the value ``ls`` is empty)
            ls[i] = loss
        if want_value and sum_in_loop:  # (see ``loss_math``)
            part = add_reassociable(part, float(loss))
    return part, soft


def _elementwise_kernel(optimistic: bool, want_value: bool, sum_in_loop: bool,
                        stream: int, limited: bool, hard_limited: bool):
    """The loop shared by the elementwise losses, on the mathematics of the global
    ``_LOSS_MATH`` alone (see ``_jit``), whose constants, the global ``_LOSS_CONSTANTS``,
    it holds before its loops. (One kernel inlining every loss's mathematics and pruning
    all but one took twice as long to compile.) ``want_value``: whether the loss is summed
    at all; ``optimistic``: whether to take the global ``_HARD_LABELS_MATH``, the loss's
    cheaper form for labels of 0 and 1 (``loss_math``'s ``hard_labels``), where they allow
    it (closure constants: both are decided at compile time, so a gradient-only kernel
    never computes the loss; ``sum_in_loop``: whether the losses are added as they are
    computed, or from a block of them in L1, by the loss's ``loss_math`` and the size;
    ``stream``: how the gradient and the Hessian are stored, ``PLAIN``, ``STREAMED`` or
    ``STAGED``: see ``numba_backend._streams``; ``limited`` and ``hard_limited``: whether a block
    whose sum is NaN, run by the loss's general form or by its form for hard labels,
    runs again, and the thread's blocks after it too, by that form's twin that takes
    the value's limits, the global ``_LOSS_LIMITS`` or ``_HARD_LABELS_LIMITS``: see
    ``loss_math``'s ``limits``).
    The input's chunks (``CHUNKS``, or one below ``PARALLEL_MIN_ELEMENTS``) run in order,
    their float64 sums added in order, times ``scale`` returned (0 without
    ``want_value``); or, ``shared`` among threads (see ``_threads``), each chunk's sum into
    its place there. ``losses``: the losses of ``reduction="none"``, or None.

    Each chunk runs in blocks of ``block`` elements: ``OPTIMISTIC_BLOCK`` in an
    ``optimistic`` kernel, ``LOSSES_BLOCK`` where the losses are summed from their block
    (float64: half of either, ``float64_block``), else ``BLOCK``. An ``optimistic``
    kernel takes the labels for 0 or 1 if its chunk's first block has only those, until
    a block shows otherwise (that block is then run again, and the rest of the chunk
    too, in the general form): binary cross-entropy's value then costs one log per
    element instead of two, and ``sigmoid_focal`` a quarter less (single thread, in
    cache: 1.22 against 1.64 ns per element), and probability labels are not computed
    twice.
    (For binary cross-entropy, checking every block first instead of in its loop cost
    labels of 0 and 1 7 %.)

    ``floor``: the Hessian's least value before the weight and ``scale``: max(h, floor) w
    (a gradient-boosting library's floor, applied here instead of in a pass of its own;
    -inf for none). With a floor and without ``want_value``, the sum returned
    counts the blocks that may hold a label outside [0, 1] (``_outside_unit``: the
    probability labels' check of an objective, on blocks just read, instead of a pass of
    its own)."""

    direct, staged = stream == STREAMED, stream == STAGED  # (closure constants)
    # elements per block: fewer where the block's losses, or the next block's inputs,
    # share L1 with it (``LOSSES_BLOCK``). Every optimistic kernel of a loss takes one
    # size, with the value or without: its blocks of labels 0 and 1 are then the same
    # elements, which its hard-label form computes, and sigmoid_focal's gradients (whose
    # two forms round apart) the same bits from grad as from value_and_grad. float64 runs
    # half as many elements in the two smaller sizes (``float64_block``)
    halved = optimistic or (want_value and not sum_in_loop)  # (the two smaller sizes)
    block32 = (OPTIMISTIC_BLOCK if optimistic else LOSSES_BLOCK if halved else BLOCK)

    def kernel(y, p, weight, pos_weight, param, scale, floor, grad, losses, hess, shared):
        aligned_stack()
        block = float64_block(p, block32) if halved else block32  # (a constant per dtype)
        n = p.size
        chunks = CHUNKS if n >= PARALLEL_MIN_ELEMENTS else 1
        size = (n + chunks - 1) // chunks
        if chunks > 1:  # whole lines: each chunk and block starts one if the array does
            size = (size + LINE_ELEMENTS - 1) // LINE_ELEMENTS * LINE_ELEMENTS
        to_dtype = p.dtype.type
        param = (to_dtype(param[0]), to_dtype(param[1]), to_dtype(param[2]))
        grad_scale = p.dtype.type(scale)  # in the input's dtype: float32 stays float32
        # no floor (-inf) as NaN, which no h is under, times any weight (-inf w is +inf
        # for w < 0); a branch on it instead unvectorised the loop (+15-30 % at n = 1e5)
        hess_floor = p.dtype.type(np.nan if floor == -np.inf else floor)
        count_labels = not want_value and floor != -np.inf
        # the loss's constants, kept through the loops below (see ``held``)
        k = held(_LOSS_CONSTANTS)
        # the losses of a block go to ``losses`` (reduction="none"), or, when it is None
        # and they are not summed in the loop, to this block (on the stack, as the one
        # below), and are summed from there
        scratch = stack_block(block32, min(block, size) if want_value and losses is None
                              and not sum_in_loop else 0, p)
        # the gradient written over p (out=y_pred) goes to this buffer first, a block at a
        # time, then over p: LLVM's loops check that their arrays do not overlap, and run
        # unvectorised where they do (10-20x slower); and a block found to hold labels
        # other than 0 and 1 is run again from its p
        in_place = _written_over(grad, p)
        # (STAGED, which calls without a Hessian take: the block's gradient goes to this
        # buffer, then by streaming stores into ``grad``, ``copy_streaming``)
        gradients = stack_block(block32, min(block, size) if in_place or staged else 0, p)
        result = 0.0
        # whether the blocks run the twins that take limits: from the first block that
        # needed them to the end of this thread's chunks (kl_div's targets of 0 are seldom
        # alone: one block run twice per chunk took 1.1-1.3x as long at 3e5-1e6 elements).
        # The same bits wherever it switches (the twins equal the plain forms where those
        # are not NaN): only the time depends on which thread took which chunk
        guarded = False
        chunk = claim(shared, -1)
        while chunk < chunks:
            total, error = 0.0, 0.0
            chunk_start = chunk * size
            chunk_stop = min(n, chunk_start + size)
            first_block = y[chunk_start:min(chunk_stop, chunk_start + block)]
            labels_0_or_1 = optimistic and _labels_are_0_or_1(first_block)
            for start in range(chunk_start, chunk_stop, block):
                stop = min(chunk_stop, start + block)
                # (IN_DRAM: where the inputs stream from DRAM)
                if optimistic and n >= IN_DRAM:
                    # the next block's inputs prefetched: without it the optimistic
                    # kernels (binary cross-entropy of probabilities, sigmoid_focal) ran
                    # at 35-48 % of the triad at 1e7 and 1e8, where the plain kernels of as
                    # much arithmetic per element ran at 56-66 % (why only these: not
                    # found). With it 0.70-0.92 of the time at 1e7 and 1e8 (two rounds);
                    # 1.13x as long at 1e6, in the L3; the plain kernels 1.16-1.24x as
                    # long at 1e8.
                    ahead = min(chunk_stop, stop + block)
                    prefetch_lines(y, stop, ahead)
                    prefetch_lines(p, stop, ahead)
                    if weight is not None:
                        prefetch_lines(weight, stop, ahead)
                # slices, so indices start at 0: LLVM then sees no negative-index
                # wraparound and vectorises the loop
                ys, ps = y[start:stop], p[start:stop]
                ws = None if weight is None else weight[start:stop]
                gs = None if grad is None else (gradients[: stop - start]
                                                 if in_place or staged else grad[start:stop])
                hs = None if hess is None else hess[start:stop]
                if sum_in_loop:
                    ls = None if losses is None else losses[start:stop]
                else:
                    ls = scratch[: stop - start] if losses is None else losses[start:stop]
                # once; again when a block proves its labels were not 0/1, or when its
                # sum is NaN and the loss's form that ran it takes limits
                # (``loss_math``'s ``limits``): then by its twin that takes them, and so
                # the blocks after it (``guarded``). The twin writes the same gradient. All
                # before the in-place copy below: a block run again reads p
                while True:
                    # (the closure constants first in each condition: Numba prunes the
                    # branches they rule out before typing, and a kernel compiles only the
                    # forms it may run)
                    if optimistic and labels_0_or_1:
                        if hard_limited and guarded:
                            part, soft = _elementwise_block(
                                _HARD_LABELS_LIMITS, k, True, want_value, sum_in_loop, ys, ps,
                                ws, gs, ls, hs, pos_weight, start, param, grad_scale,
                                hess_floor, direct)
                        else:
                            part, soft = _elementwise_block(
                                _HARD_LABELS_MATH, k, True, want_value, sum_in_loop, ys, ps,
                                ws, gs, ls, hs, pos_weight, start, param, grad_scale,
                                hess_floor, direct)
                        if soft:
                            labels_0_or_1 = False
                            continue
                    elif limited and guarded:
                        part, soft = _elementwise_block(
                            _LOSS_LIMITS, k, False, want_value, sum_in_loop, ys, ps, ws, gs,
                            ls, hs, pos_weight, start, param, grad_scale, hess_floor, direct)
                    else:
                        part, soft = _elementwise_block(
                            _LOSS_MATH, k, False, want_value, sum_in_loop, ys, ps, ws, gs,
                            ls, hs, pos_weight, start, param, grad_scale, hess_floor, direct)
                    if want_value and not sum_in_loop:  # (the losses are in ``ls``)
                        part = _sum_span(ls)  # (a block: one span, see ``_sum``)
                        if part != part and not guarded:
                            if optimistic and labels_0_or_1:
                                if hard_limited:
                                    guarded = True
                                    continue
                            elif limited:
                                guarded = True
                                continue
                    break
                if grad is not None:  # (compiled only where a gradient is written)
                    if staged:  # (a closure constant; never in place: ``numba_backend._streams``)
                        copy_streaming(gs, grad[start:stop])
                    elif in_place:
                        _copy(gs, grad[start:stop])
                if want_value:
                    if holds_64_bits(p):  # (a chunk has up to ~800 blocks at 1e8)
                        total, error = add_compensated(total, error, part)
                    else:  # (float32 losses: float64's 29 more bits hold the sum)
                        total += part
                elif hess is not None:  # (compiled only where a Hessian is written)
                    if count_labels:  # (per block: the element loops stay vectorised)
                        total += _outside_unit(ys)  # the blocks that may hold one
            if stream != PLAIN:
                store_fence()  # (before ``record`` tells another thread the chunk is done)
            result = record(shared, chunk, compensated(total, error), result)
            chunk = claim(shared, chunk)
        return result * scale

    return kernel
