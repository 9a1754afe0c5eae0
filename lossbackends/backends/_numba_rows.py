"""The Numba backend's row losses: cross-entropy, row by row while the row is in cache (max,
then ``exp`` once per element, written into the gradient buffer, then the gradient in
place). Split from ``numba_backend`` (the shared pieces: ``_jit``, ``_sum``, ``_parallel``,
the chunking constants), so that neither file is a wall as the catalogue grows.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._host import bad_labels_as_nan, half_in_float32, label_error
from ._numba_math import ONE, ZERO, fast_exp, maximum
from .numba_backend import (
    _EMPTY,
    _EMPTY_ROWS,
    _NO_LABELS,
    _UNIT,
    CE_CHUNK_ELEMENTS,
    CHUNKS,
    TWO,
    _jit,
    _parallel,
    _sum,
)

INF32 = np.float32(np.inf)  # float32 constants: float32 scores are compared in float32
NAN32 = np.float32(np.nan)


@njit(inline="always")
def _shifted(v, top):
    """v - top, with 0 where v equals the row's max ``top`` (also when both are inf: an
    infinite logit at the max counts as equal to it, not inf - inf = NaN)."""
    return ZERO if v == top else v - top


def _shifted_sum(values, top, factor):
    """sum(factor * (values - top)) (see ``_shifted``) in float64; reassociated like
    ``_sum``. Each term is weighted before the sum: terms of one sign, so the sum never
    overflows before its final value does."""
    total = 0.0
    for i in range(values.size):
        total += factor * _shifted(values[i], top)
    return total


def _shifted_dot(weights, values, top, factor):
    """sum(factor * weights * (values - top)) (see ``_shifted_sum``), where a zero weight
    contributes 0 even against an infinite difference."""
    total = 0.0
    for i in range(values.size):
        total += (factor * weights[i]) * _shifted(values[i], top) if weights[i] != 0 else 0.0
    return total


_shifted_sum = _jit(_shifted_sum, "_shifted_sum", reassociate=True)
_shifted_dot = _jit(_shifted_dot, "_shifted_dot", reassociate=True)


# --- cross-entropy, row by row ---------------------------------------------------------


@njit(inline="always")
def _row_max(x):
    """max(x), NaN if any element is NaN (as NumPy's): a NaN then makes the whole row NaN,
    loss and gradient, through x - max."""
    top = x[0]
    for c in range(1, x.size):
        top = maximum(top, x[c])
    return top


@njit(inline="always")
def _tanh(u):
    """tanh(u) = sign(u) (1 - 2 / (exp(2 |u|) + 1)) with the vectorised exp (libm's tanh
    does not vectorise); error <= 2 ulp of 1 near 0, where the cap is linear anyway; +-1
    at +-inf; NaN stays NaN."""
    t = ONE - TWO / (fast_exp(TWO * abs(u)) + ONE)
    return -t if u < ZERO else t


def _cross_entropy_kernel(x, soft, labels, probs, weighted, class_weight, ignore_index, smoothing,
                          mean, given_denominator, z_loss, softcap, grad, row_losses, chunks, hess):
    """Class indices in ``labels`` or probabilities in ``probs`` (``soft``); the unused one
    and an unused ``class_weight`` are empty arrays, so every call types the same way.
    ``given_denominator`` is the mean's denominator when the caller knows it, else < 0.
    ``z_loss``: PaLM's z lse^2 per kept row (0: off); ``softcap`` > 0 caps the logits at
    softcap tanh(x / softcap) (0: off). Returns (the reduced loss, first bad row or -1): a
    bad label is found before anything is written, and the caller raises."""
    rows, classes = x.shape
    keep = 1.0 - smoothing
    spread = smoothing / classes
    # The labels first: range check and the mean's denominator (PyTorch's rule).
    denominator = float(rows)
    kept_rows = rows
    if not soft:
        denominator = 0.0
        kept_rows = 0
        for r in range(rows):
            label = labels[r]
            if label == ignore_index:
                continue
            if label < 0 or label >= classes:
                return 0.0, r
            denominator += class_weight[label] if weighted else 1.0
            kept_rows += 1
    # the z-loss's "mean" divides by the kept rows' count (Liger-Kernel's rule), not by
    # their summed class weights: per row, a multiple of the cross-entropy's denominator
    z_coef = z_loss
    if mean and weighted and given_denominator < 0.0 and kept_rows > 0:
        z_coef = z_loss * (denominator / kept_rows)
    if given_denominator >= 0.0:
        denominator = given_denominator
    grad_scale = 1.0 / denominator if mean else 1.0
    weight_total = _sum(class_weight) if weighted else float(classes)
    capped = softcap > 0.0
    cap = x.dtype.type(softcap)
    inv_cap = x.dtype.type(1.0 / softcap) if capped else x.dtype.type(0.0)

    partials = np.empty(chunks)
    size = (rows + chunks - 1) // chunks
    for chunk in prange(chunks):
        total = 0.0
        # a row of exps when no gradient is asked (else they go into the gradient), and a
        # row of target weights w_c q_c for probabilities
        exps = np.empty(classes if grad is None else 0, x.dtype)
        targets = np.empty(classes if soft else 0)
        # the capped row (softcap tanh(x / softcap)): the logits the loss sees, read again
        # from cache for the chain rule (x may be the gradient buffer)
        capped_row = np.empty(classes if capped else 0, x.dtype)
        for r in range(chunk * size, min(rows, chunk * size + size)):
            xr = x[r]
            label = -1
            if not soft:
                label = labels[r]
                if label == ignore_index:
                    if grad is not None:
                        grad[r, :] = 0
                    if hess is not None:
                        hess[r, :] = 0
                    if row_losses is not None:
                        row_losses[r] = 0.0
                    continue
            if capped:
                for c in range(classes):
                    capped_row[c] = cap * _tanh(xr[c] * inv_cap)
                xr = capped_row
            top = _row_max(xr)
            # the loss is coef log(sum exp z) - dot with z = x - top <= 0 (``_shifted``):
            # terms >= 0 that never cancel, as lse - x_c would for large logits. coef =
            # sum_c w_c q_c and dot = sum_c w_c q_c z_c, found before x may be overwritten
            if soft:
                for c in range(classes):
                    wq = probs[r, c] * keep + spread
                    targets[c] = wq * class_weight[c] if weighted else wq
                coef = _sum(targets)
                dot = _shifted_dot(targets, xr, top, 1.0)
            else:
                label_weight = class_weight[label] if weighted else 1.0
                coef = keep * label_weight
                dot = coef * _shifted(xr[label], top) if coef != 0.0 else 0.0
                if smoothing != 0.0:
                    coef += spread * weight_total
                    dot += (_shifted_dot(class_weight, xr, top, spread) if weighted
                            else _shifted_sum(xr, top, spread))
            g = exps if grad is None else grad[r]  # each exp once, kept in the gradient
            for c in range(classes):
                g[c] = fast_exp(_shifted(xr[c], top))
            sum_exp = _sum(g)
            log_sum = np.log(sum_exp)
            loss = coef * log_sum - dot
            grad_coef = coef  # what the softmax is multiplied by in the gradient
            if z_coef != 0.0:
                lse = top + log_sum
                loss += z_coef * lse * lse
                grad_coef += 2.0 * z_coef * lse  # d/dx_c z lse^2 = 2 z lse softmax_c
            total += loss
            if row_losses is not None:
                row_losses[r] = loss
            if hess is not None:  # (grad_and_hess refuses z_loss and softcap)
                # coef softmax (1 - softmax), times the reduction's scale
                # in the logits' dtype, as the gradient below: float32 stays vectorised
                h = hess[r]
                inverse = x.dtype.type(1.0 / sum_exp)
                hess_scale = x.dtype.type(coef * grad_scale)
                for c in range(classes):
                    s = g[c] * inverse
                    h[c] = hess_scale * (s * (ONE - s))
            if grad is None:
                continue
            # softmax * coef - w q, times the reduction's scale; the scale in the logits'
            # dtype, so that float32 multiplies stay float32 (a float64 scale would convert
            # every element there and back: two and a half times the instructions)
            prob_scale = x.dtype.type(grad_coef / sum_exp * grad_scale)
            for c in range(classes):
                g[c] = g[c] * prob_scale
            if soft:
                for c in range(classes):
                    g[c] -= targets[c] * grad_scale
            else:
                g[label] -= keep * label_weight * grad_scale
                if smoothing != 0.0:
                    for c in range(classes):
                        w = class_weight[c] if weighted else 1.0
                        g[c] -= spread * w * grad_scale
            if capped:  # the chain rule: d(softcap tanh(x / softcap))/dx = 1 - tanh^2
                for c in range(classes):
                    t = capped_row[c] * inv_cap
                    g[c] = g[c] * (ONE - t * t)
        partials[chunk] = total
    total = 0.0
    for chunk in range(chunks):  # a fixed order
        total += partials[chunk]
    return total * grad_scale, -1


_CE_SERIAL = _jit(_cross_entropy_kernel, "cross_entropy_serial", parallel=False)
_CE_PARALLEL = _jit(_cross_entropy_kernel, "cross_entropy_parallel", parallel=True)


@half_in_float32
def cross_entropy(target, x, class_weight, params, reduction, scale, grad, want_value, hess=None):
    # host labels are always checked: it costs nothing
    ignore_index, smoothing, _, z_loss, softcap, denominator = params
    rows = x.shape[0]
    soft = target.ndim == 2
    row_losses = np.empty(rows) if want_value and reduction == "none" else None
    # chunks of at least CE_CHUNK_ELEMENTS logits (a small input is not cut into 64 pieces
    # that each allocate their scratch rows); fixed by the shape, never by the threads
    chunks = max(1, min(CHUNKS, rows, x.size // CE_CHUNK_ELEMENTS))
    args = (x, soft, _NO_LABELS if soft else target, target if soft else _EMPTY_ROWS[x.dtype],
            class_weight is not None, _EMPTY[x.dtype] if class_weight is None else class_weight,
            ignore_index, smoothing, reduction == "mean",
            -1.0 if denominator is None else float(denominator), z_loss,
            0.0 if softcap is None else softcap, grad, row_losses, chunks, hess)
    if chunks == 1:
        value, bad_row = _CE_SERIAL(*args)
    else:
        value, bad_row = _parallel(_CE_PARALLEL, *args)
    if bad_row >= 0:
        raise label_error(int(target[bad_row]), bad_row, x.shape[1])
    if not want_value:
        return None
    if reduction == "none":
        return row_losses.astype(x.dtype)
    return _UNIT[x.dtype] * value



# --- multiclass hinge (Crammer-Singer), row by row -------------------------------------


def _multiclass_hinge_kernel(x, labels, weight, margin, mean, given_denominator, grad,
                             row_losses, chunks):
    """max(0, m + max_{j != y} s_j - s_y) per row, one read of the row; gradient +1 at the
    first arg-max j != y, -1 at y, where positive. ``weight``: one per row, or empty.
    Returns (the reduced loss, first bad row or -1), the labels checked first."""
    rows, classes = x.shape
    for r in range(rows):
        if labels[r] < 0 or labels[r] >= classes:
            return 0.0, r
    denominator = given_denominator if given_denominator >= 0.0 else float(rows)
    row_scale = 1.0 / denominator if mean else 1.0
    weighted = weight.size != 0
    m = x.dtype.type(margin)
    partials = np.empty(chunks)
    size = (rows + chunks - 1) // chunks
    for chunk in prange(chunks):
        total = 0.0
        for r in range(chunk * size, min(rows, chunk * size + size)):
            xr = x[r]
            label = labels[r]
            true = xr[label]
            best = -INF32
            best_class = -1
            nan = true != true
            for c in range(classes):
                v = xr[c]
                nan |= v != v
                if c != label and (v > best or best_class < 0):
                    best, best_class = v, c  # the first of equal maxima
            if classes == 1:  # nothing to beat
                slack = -INF32
            else:  # equal infinite scores count as equal: 0, not inf - inf
                slack = m + (ZERO if best == true else best - true)
            if nan:
                slack = m + NAN32
            loss = slack if slack > ZERO else (slack if nan else ZERO)
            w = weight[r] if weighted else 1.0
            loss = loss * w
            total += loss
            if row_losses is not None:
                row_losses[r] = loss
            if grad is not None:
                g = grad[r]
                g[:] = NAN32 if nan else ZERO
                if slack > ZERO:
                    d = x.dtype.type(w * row_scale)
                    g[best_class] = d
                    g[label] = -d
        partials[chunk] = total
    total = 0.0
    for chunk in range(chunks):  # a fixed order
        total += partials[chunk]
    return total * row_scale, -1


_HINGE_SERIAL = _jit(_multiclass_hinge_kernel, "multiclass_hinge_serial", parallel=False)
_HINGE_PARALLEL = _jit(_multiclass_hinge_kernel, "multiclass_hinge_parallel", parallel=True)


@half_in_float32
def multiclass_hinge(labels, x, weight, params, reduction, scale, grad, want_value, hess=None):
    margin, denominator = params
    rows = x.shape[0]
    row_losses = np.empty(rows) if want_value and reduction == "none" else None
    chunks = max(1, min(CHUNKS, rows, x.size // CE_CHUNK_ELEMENTS))
    args = (x, labels, _EMPTY[x.dtype] if weight is None else weight, margin,
            reduction == "mean", -1.0 if denominator is None else float(denominator), grad,
            row_losses, chunks)
    if chunks == 1:
        value, bad_row = _HINGE_SERIAL(*args)
    else:
        value, bad_row = _parallel(_HINGE_PARALLEL, *args)
    if bad_row >= 0:
        raise label_error(int(labels[bad_row]), bad_row, x.shape[1])
    if hess is not None:  # piecewise linear: 0 away from the kinks; NaN rows NaN
        hess[...] = 0
        hess[np.isnan(x).any(axis=1)] = np.nan
    if not want_value:
        return None
    if reduction == "none":
        return row_losses.astype(x.dtype)
    return _UNIT[x.dtype] * value


ROW_KERNELS = {"cross_entropy": bad_labels_as_nan(cross_entropy),
               "multiclass_hinge": multiclass_hinge}
