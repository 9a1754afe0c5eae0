"""Cross-entropy over rows of fewer than ``FEW_CLASSES`` classes, block by block (the
Numba backend): the kernel ``_numba_rows.cross_entropy`` launches for hard labels without
options (see the comment below).
"""

from __future__ import annotations

import numpy as np

from ._host import CONFIDENT
from ._numba_common import (
    _CHUNK_ARGUMENTS,
    BLOCK,
    _copy,
    _jit,
    _sum_span,
    _written_over,
    add_compensated,
    aligned_stack,
    array_type,
    compensated,
)
from ._numba_intrinsics import held, maximum
from ._numba_math import EXP32_LOW, ONE, ZERO, fast_exp_nonpositive
from ._numba_row_common import _BOOL, _INT, _REAL, _ROW_LOSSES, _log_sum, _others, _shifted
from ._threads import claim, record

# A row of C < FEW_CLASSES logits is shorter than the vector loops LLVM makes (8 float32
# lanes, unrolled), so the row-by-row kernel (``_numba_rows``) runs its exps in the scalar tail: at
# C = 10 it spent 140 ns a row. Here a block of rows is computed in passes over the whole
# block, flat, where the per-row numbers (the max, then the softmax's scale) are first
# spread to one per element: the exps and the products then vectorise across rows. Only
# the per-row sums stay scalar. For hard labels without class weights, smoothing, z-loss
# or softcap (the options change the passes' formulas; those calls keep the row-by-row one).
# Since the row kernel's views stopped counting references (``borrowed``), it is as fast
# from 24 classes and faster from 26: one thread, ns a row, blocks against rows, 59 / 80
# at 16, 78 / 78 at 18, 88 / 90 at 24, 100 / 81 at 26, 100 / 84 at 28 (best of three).
FEW_CLASSES = 24


def _cross_entropy_few_classes_kernel(x, labels, ignore_index, mean, given_denominator,
                                      want_value, grad, hess, row_losses, chunks, shared):
    """The loss of row r is log(sum_c exp(z_c)) - z_label, z = x_r - max(x_r) (see
    ``_shifted``); the gradient (softmax - onehot) times the reduction's scale; the Hessian
    softmax (1 - softmax) times it. ``grad``, ``hess`` and ``row_losses`` are empty when not
    wanted (one compiled version for all); without ``want_value`` no loss is computed (0).
    Runs ``chunks`` chunks of rows (see ``_launch``); returns (the chunks' sum, first bad
    row or -1, the reduction's scale), the labels checked before anything is written."""
    aligned_stack()
    rows, classes = x.shape
    # the labels first, in one pass without an early exit (it vectorises): the mean's
    # denominator (the kept rows) and whether any label is out of range
    kept_rows = 0
    bad = False
    for r in range(rows):
        label = labels[r]
        kept = label != ignore_index
        kept_rows += kept
        bad |= kept & ((label < 0) | (label >= classes))
    if bad:
        for r in range(rows):
            if labels[r] != ignore_index and (labels[r] < 0 or labels[r] >= classes):
                return 0.0, r, 1.0
    denominator = given_denominator if given_denominator >= 0.0 else float(kept_rows)
    grad_scale = 1.0 / denominator if mean else 1.0
    scale = x.dtype.type(grad_scale)
    want_grad, want_hess, want_rows = grad.size != 0, hess.size != 0, row_losses.size != 0
    flat_x = x.reshape(-1)
    flat_grad = grad.reshape(-1)
    flat_hess = hess.reshape(-1)
    block_rows = max(1, BLOCK // classes)
    size = (rows + chunks - 1) // chunks
    exp_k = held(EXP32_LOW)  # kept through the loops (see ``held``)
    # per element: the row's max, then its 1 / sum exp; 1 - softmax for an exp of 1
    # (below); per row: z_label
    spread = np.empty(block_rows * classes, x.dtype)
    # the maxes of windows of logits, doubling in width pass by pass (step 1), in two
    # buffers in turn; a row's max is that of its first and its last window of ``width``
    # logits, the largest power of two up to C (the two overlap where C is not one)
    width = 1
    while width * 2 <= classes:
        width *= 2
    windows = np.empty(block_rows * classes if width > 1 else 0, x.dtype)
    next_windows = np.empty(block_rows * classes if width > 2 else 0, x.dtype)
    complement = np.empty(block_rows * classes if want_hess else 0, x.dtype)
    exps = np.empty(0 if want_grad else block_rows * classes, x.dtype)
    # the gradient written over x: each block of rows is copied here first (see
    # ``saved_row`` above)
    in_place = want_grad and _written_over(grad, x)
    inputs = np.empty(block_rows * classes if in_place else 0, x.dtype)
    label_z = np.empty(block_rows, x.dtype)
    label_grads = np.empty(block_rows)  # per row: the label's gradient (step 3)
    # per row of a block: its sum of exps and that of those below 1 (step 3), taken
    # class by class across the block's rows: one row's chain of a few additions is bound
    # by its latency (its max's was 47 ns a row at 10 classes, one thread); across rows
    # they overlap
    sums = np.empty(block_rows)
    belows = np.empty(block_rows)
    block_losses = np.empty(block_rows)
    result = 0.0
    chunk = claim(shared, -1)
    while chunk < chunks:
        total, total_error = 0.0, 0.0  # a compensated sum (add_compensated)
        chunk_stop = min(rows, chunk * size + size)
        for first in range(chunk * size, chunk_stop, block_rows):
            count = min(block_rows, chunk_stop - first)
            start, stop = first * classes, (first + count) * classes
            xs = flat_x[start:stop]
            if in_place:
                _copy(xs, inputs[: stop - start])
                xs = inputs[: stop - start]
            es = flat_grad[start:stop] if want_grad else exps[: stop - start]
            ts = spread[: stop - start]
            # 1. each row's max (NaN if any logit is), spread over the row, and its z_label.
            # The maxes of windows of 2, 4, ... logits across the whole block, flat: each
            # pass the max of the last pass's windows at i and i + span, contiguous, so
            # vectorised (a max class by class across the rows, strided, ran scalar; one
            # row's own chain of a few classes is bound by its latency). Windows that
            # cross rows are computed and never read. (Each pass reads ``ahead``, a view
            # span on: indexed as i + span, LLVM left the loop scalar.)
            n = stop - start
            flipped = False
            if width > 1:
                out, ahead = windows[:n], xs[1:]
                for i in range(n - 1):
                    out[i] = maximum(xs[i], ahead[i])
                span = 2
                while span < width:
                    source = next_windows[:n] if flipped else windows[:n]
                    out = windows[:n] if flipped else next_windows[:n]
                    ahead = source[span:]
                    for i in range(n - 2 * span + 1):
                        out[i] = maximum(source[i], ahead[i])
                    flipped = not flipped
                    span *= 2
            maxes = next_windows if flipped else windows
            for r in range(count):
                row = r * classes
                top = (xs[row] if width == 1
                       else maximum(maxes[row], maxes[row + classes - width]))
                for c in range(classes):
                    ts[row + c] = top
                label = labels[first + r]
                label_z[r] = (_shifted(xs[row + label], top) if label != ignore_index
                              else ZERO)
            # 2. the exps, across the rows
            for i in range(xs.size):
                es[i] = fast_exp_nonpositive(_shifted(xs[i], ts[i]), exp_k)  # <= 0, or NaN
            # 3. per row: sum exp (float64, as the kernel above), the loss, 1 / sum spread
            # over the row. The max's exp is 1 (z = 0), and its softmax s may be near 1,
            # where 1 - s would round to 0 within an ulp: there 1 - s is the other exps'
            # sum over the row's, those below 1 summed apart (1 + e rounds e away below
            # 1e-16), plus the other 1s (ties: the count is the sums' difference)
            for r in range(count):
                sums[r] = 0.0
                belows[r] = 0.0
            for c in range(classes):  # (each row's terms in class order, as one row's loop)
                for r in range(count):
                    e = es[r * classes + c]
                    sums[r] += e
                    belows[r] += ZERO if e == ONE else e
            for r in range(count):
                row = r * classes
                sum_exp = sums[r]
                below_one = belows[r]
                inverse = 1.0 / sum_exp
                for c in range(classes):
                    ts[row + c] = x.dtype.type(inverse)
                # the label's gradient, s - 1, as -(the others' sum) / sum_exp in float64:
                # in the logits' dtype it cancels where s is near 1 (a confident row)
                label = labels[first + r]
                if want_grad and label != ignore_index:
                    e_label = es[row + label]
                    rest = _others(sum_exp, below_one) if e_label == ONE else sum_exp - e_label
                    # e - e: 0 (NaN for NaN), which LLVM may not fold under the
                    # no-signed-zeros flag as it folded 0 - rest into -rest, so that a
                    # gradient of 0 is +0 (as s - 1 gave, and the other kernel)
                    label_grads[r] = ((e_label - e_label) - rest) / sum_exp * grad_scale
                if want_hess:
                    others = _others(sum_exp, below_one)
                    for c in range(classes):
                        complement[row + c] = x.dtype.type(others * inverse)
                if not want_value:
                    continue
                if labels[first + r] == ignore_index:
                    block_losses[r] = 0.0
                    if want_rows:
                        row_losses[first + r] = 0.0
                    continue
                log_sum = np.log(sum_exp)
                if sum_exp < CONFIDENT:  # (see ``CONFIDENT``)
                    log_sum = _log_sum(sum_exp, below_one)
                loss = log_sum - label_z[r]
                block_losses[r] = loss
                if want_rows:
                    row_losses[first + r] = loss
            if want_value:
                # the block's losses summed 64 at a time (vectorised, float64: a few ulp),
                # each sum then added compensated: one compensated step per 64 rows, not
                # per row (a fifth of the time at 10 classes)
                for part in range(0, count, 64):
                    total, total_error = add_compensated(
                        total, total_error, _sum_span(block_losses[part:min(count, part + 64)]))
            # 4. softmax, its Hessian and the gradient, across the rows
            if want_hess:
                hs = flat_hess[start:stop]
                us = complement[: stop - start]
                for i in range(xs.size):
                    s = es[i] * ts[i]
                    hs[i] = scale * (s * (us[i] if es[i] == ONE else ONE - s))
            if want_grad:
                for i in range(xs.size):
                    es[i] = (es[i] * ts[i]) * scale
            # 5. per row: the label's gradient (step 3), ignored rows' zeros
            for r in range(count):
                row = r * classes
                label = labels[first + r]
                if label == ignore_index:
                    if want_grad:
                        es[row: row + classes] = 0
                    if want_hess:
                        flat_hess[start + row: start + row + classes] = 0
                elif want_grad:
                    es[row + label] = x.dtype.type(label_grads[r])
        result = record(shared, chunk, compensated(total, total_error), result)
        chunk = claim(shared, chunk)
    return result, -1, grad_scale


_FEW = _jit(_cross_entropy_few_classes_kernel, "cross_entropy_few")


def _few_classes_types(dtype) -> tuple:
    out = array_type(dtype, 2, writes=True)
    return (array_type(dtype, 2), array_type(np.int64, 1), _INT, _BOOL, _REAL, _BOOL, out, out,
            _ROW_LOSSES, _INT, *_CHUNK_ARGUMENTS)
