"""The Numba backend's multiclass hinge (Crammer-Singer): one read of each row, the
row's chunks shared among threads as cross-entropy's are (``_numba_row_common._launch``).
"""

from __future__ import annotations

import numpy as np

from ._host import bad_labels_as_nan, cast_quietly, label_error
from ._numba_common import (
    _CHUNK_ARGUMENTS,
    _EMPTY,
    CE_CHUNK_ELEMENTS,
    CHUNKS,
    _jit,
    _written_over,
    add_compensated,
    aligned_stack,
    array_type,
    compensated,
    in_dtype,
)
from ._numba_half import half_in_float32
from ._numba_intrinsics import borrowed, maximum
from ._numba_math import ONE, ZERO, times
from ._numba_row_common import _BOOL, _INT, _NONE, _REAL, _ROW_LOSSES, _launch
from ._threads import claim, record

INF32 = np.float32(np.inf)  # float32 constants: float32 scores are compared in float32
NAN32 = np.float32(np.nan)


def _multiclass_hinge_kernel(x, labels, weight, margin, mean, given_denominator, grad,
                             row_losses, chunks, shared):
    """max(0, m + max_{j != y} s_j - s_y) per row, one read of the row; gradient +1 at the
    first arg-max j != y, -1 at y, where positive. ``weight``: one per row, or empty.
    Runs ``chunks`` chunks of rows (see ``_launch``); returns (the chunks' sum, first bad row or -1,
    the reduction's scale), the labels checked first."""
    aligned_stack()
    # (no reference counts of the rows' views: see ``borrowed``)
    x, labels, weight, grad_rows = borrowed(x), borrowed(labels), borrowed(weight), borrowed(grad)
    rows, classes = x.shape
    for r in range(rows):
        if labels[r] < 0 or labels[r] >= classes:
            return 0.0, r, 1.0
    denominator = given_denominator if given_denominator >= 0.0 else float(rows)
    row_scale = 1.0 / denominator if mean else 1.0
    weighted = weight.size != 0
    m = x.dtype.type(margin)
    low = x.dtype.type(-np.inf)
    size = (rows + chunks - 1) // chunks
    in_place = _written_over(grad, x)
    result = 0.0
    chunk = claim(shared, -1)
    while chunk < chunks:
        total, total_error = 0.0, 0.0  # a compensated sum (add_compensated)
        for r in range(chunk * size, min(rows, chunk * size + size)):
            xr = x[r]
            label = labels[r]
            true = xr[label]
            # the best other score: a max over the classes either side of the label, in two
            # loops (no compare of each index with the label); NaN if any score is NaN
            best = low
            before, after = xr[:label], xr[label + 1:]  # (from 0: LLVM vectorises the loops)
            for c in range(before.size):
                best = maximum(best, before[c])
            for c in range(after.size):
                best = maximum(best, after[c])
            nan = best != best or true != true
            # equal infinite scores count as equal: 0, not inf - inf (nothing to beat
            # with one class: best = -inf, slack = -inf)
            slack = m + (ZERO if best == true else best - true)
            if classes == 1:
                slack = -INF32
            if nan:
                slack = m + NAN32
            loss = slack if slack > ZERO else (slack if nan else ZERO)
            # (in the scores' dtype, as every backend weighs a loss: a float64 1.0 here made
            # the weighted loss float64, finite where the others' overflow)
            w = weight[r] if weighted else ONE
            # a weight of 0 costs nothing, even against an infinite slack (0 inf = 0)
            loss = times(w, loss)
            total, total_error = add_compensated(total, total_error, loss)
            if row_losses is not None:
                row_losses[r] = loss
            if grad is None:
                continue
            g = grad_rows[r]
            if slack > ZERO:
                # the first other class at the max, found in the pass that zeroes the row
                # (one pass: at 2048 x 40 a fifth faster than two; each score is read
                # before its place is written); in two where g is x, as LLVM runs a loop
                # whose arrays overlap unvectorised
                first = classes
                if in_place:
                    for c in range(classes):
                        first = min(first, c if xr[c] == best and c != label else classes)
                    for c in range(classes):
                        g[c] = ZERO
                else:
                    for c in range(classes):
                        first = min(first, c if xr[c] == best and c != label else classes)
                        g[c] = ZERO
                d = x.dtype.type(w * row_scale)
                g[first] = d
                g[label] = -d
            else:
                g[:] = NAN32 if nan else ZERO
        result = record(shared, chunk, compensated(total, total_error), result)
        chunk = claim(shared, chunk)
    return result, -1, row_scale


_HINGE = _jit(_multiclass_hinge_kernel, "multiclass_hinge")


def _multiclass_hinge_types(dtype, no_grad: bool, no_row_losses: bool) -> tuple:
    return (array_type(dtype, 2), array_type(np.int64, 1), array_type(dtype, 1), _REAL, _BOOL,
            _REAL, _NONE if no_grad else array_type(dtype, 2, writes=True),
            _NONE if no_row_losses else _ROW_LOSSES, _INT, *_CHUNK_ARGUMENTS)


@bad_labels_as_nan
@half_in_float32
def multiclass_hinge(labels, x, weight, params, reduction, scale, grad, want_value, hess=None):
    margin, _, denominator = params
    rows = x.shape[0]
    row_losses = np.empty(rows) if want_value and reduction == "none" else None
    chunks = max(1, min(CHUNKS, rows, x.size // CE_CHUNK_ELEMENTS))
    args = (x, labels, _EMPTY[x.dtype] if weight is None else weight, margin,
            reduction == "mean", -1.0 if denominator is None else float(denominator), grad,
            row_losses, chunks)
    # the Hessian, piecewise linear: 0 away from the kinks, NaN rows NaN; those rows found
    # before the kernel, which may write the gradient over x, and written after its label
    # check, so that an error leaves hess untouched
    nan_rows = np.isnan(x).any(axis=1) if hess is not None else None
    value, bad_row = _launch(_HINGE, _multiclass_hinge_types,
                             (x.dtype, grad is None, row_losses is None), chunks, args)
    if bad_row >= 0:
        raise label_error(int(labels[bad_row]), bad_row, x.shape[1], loss="multiclass_hinge")
    if hess is not None:
        hess[...] = 0
        hess[nan_rows] = np.nan
    if not want_value:
        return None
    if reduction == "none":
        return cast_quietly(row_losses, x.dtype)
    return in_dtype(value, x.dtype)
