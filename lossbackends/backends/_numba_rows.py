"""The Numba backend's cross-entropy. It goes row by row while the row is in cache (max,
then ``exp`` once per element, written into the gradient buffer, then the gradient in
place); rows of fewer than ``FEW_CLASSES`` classes without options go block by block
instead, in flat passes over many rows (a short row does not vectorise:
``_numba_cross_entropy_few``). What the row kernels share (the launch over chunks of rows,
the argument types, a row's sums and exp passes) is ``_numba_row_common``'s; what every
kernel shares (``_jit``, ``_sum``, the chunking constants), ``_numba_common``'s. A large
input's chunks of rows are shared among threads (``_threads``); each thread checks all the
labels before it writes anything.
"""

from __future__ import annotations

import numpy as np

from ._host import CONFIDENT, bad_labels_as_nan, cast_quietly, label_error
from ._numba_common import (
    _CHUNK_ARGUMENTS,
    _EMPTY,
    _EMPTY_ROWS,
    _NO_LABELS,
    CE_CHUNK_ELEMENTS,
    CHUNKS,
    STREAM_FROM_BYTES,
    _copy,
    _jit,
    _sum,
    _written_over,
    add_compensated,
    aligned_stack,
    array_type,
    compensated,
    in_dtype,
    store_fence,
    wide_vectors,
)
from ._numba_cross_entropy_few import _FEW, FEW_CLASSES, _few_classes_types
from ._numba_half import half_in_float32
from ._numba_intrinsics import borrowed, held, inline, keep_alive
from ._numba_math import (
    EXP32_WIDE,
    INF,
    ONE,
    TANH32,
    fast_exp,
    fast_tanh,
    softcap_constants,
    times,
)
from ._numba_math64 import divide_apart
from ._numba_row_common import (
    _BOOL,
    _EMPTY_LOSSES,
    _INT,
    _NONE,
    _REAL,
    _ROW_LOSSES,
    NORMAL_REACH,
    PREFETCH_ROW_BYTES,
    _capped_exps,
    _capped_exps_folded,
    _exps_normal,
    _launch,
    _log_sum,
    _others,
    _row_max_min,
    _shifted,
    _shifted_dot,
    _shifted_sum,
    _softcap_chain_far,
    _softcap_chain_near,
    _stream_gradient,
    _stream_row,
    _sum_below_one,
    _sum_except,
    softcap_slope,
)
from ._threads import claim, record

# --- cross-entropy, row by row ---------------------------------------------------------

# From a gradient of STREAM_FROM_BYTES (``_numba_common``) in rows of at least this many
# bytes, each row's exps and gradient are computed in a scratch row, which stays in the
# L2, and copied into the gradient by streaming stores (``_stream_row``): the gradient's
# lines are then not read from DRAM before being written. 0.82-0.94 of the time at 1024 x
# 32000 and 256 x 128256 (float32, two threads, the default call and a NumPy ``out=``),
# and 0.88-0.95 of that again with the row's last pass done in the copy
# (``_stream_gradient``). At 16-33 MB of gradient, which stays in the L3 between calls,
# 1.2-1.33x as long: hence the threshold on the whole gradient. A row takes plain stores
# up to its first cache line, and ``_stream_row`` (``copy_streaming``) after its last
# whole line too, where ``_stream_gradient`` streams to the row's end: in rows this long,
# a few bytes either way. The Hessian, and a gradient written over the logits, keep plain
# stores.
STREAM_ROW_BYTES = 1 << 16


@inline
def _labels_checked(labels, classes, ignore_index, weighted, class_weight):
    """(the mean's denominator by PyTorch's rule, the kept rows' count, the first row
    whose label is out of range or -1): the denominator is the kept rows' count, or with
    ``weighted`` their class weights' sum (compensated); rows labelled ``ignore_index``
    are not kept."""
    kept_rows = 0
    weight_sum, weight_error = 0.0, 0.0  # the kept rows' class weights
    for r in range(labels.size):
        label = labels[r]
        if label == ignore_index:
            continue
        if label < 0 or label >= classes:
            return 0.0, 0, r
        if weighted:
            weight_sum, weight_error = add_compensated(weight_sum, weight_error,
                                                       float(class_weight[label]))
        kept_rows += 1
    denominator = compensated(weight_sum, weight_error) if weighted else float(kept_rows)
    return denominator, kept_rows, -1


@inline
def _softmax_hessian(h, exps, sum_exp, scale, z_scale):
    """h = the diagonal of a row's Hessian in the (capped) logits, c s (1 - s) + 2 zc s^2
    times the reduction's scale, for softmax s = exps / sum_exp: ``scale`` = c times the
    reduction's scale (c = coef + 2 zc lse, the gradient's coefficient), ``z_scale`` = 2 zc
    times it. In the logits' dtype, as the gradient: float32 stays vectorised."""
    inverse = h.dtype.type(1.0 / sum_exp)
    hess_scale = h.dtype.type(scale)
    z_scale_x = h.dtype.type(z_scale)
    if abs(hess_scale) < INF and abs(z_scale_x) < INF:
        for c in range(h.size):
            s = exps[c] * inverse
            h[c] = hess_scale * (s * (ONE - s)) + z_scale_x * (s * s)
    else:  # c or 2 zc beyond the dtype (a z-loss near its largest): in float64, so that a
        # coefficient of inf never meets an s^2 of 0
        for c in range(h.size):
            s = float(exps[c] * inverse)
            h[c] = times(s * (1.0 - s), scale) + z_scale * (s * s)
    # 1 - s exact where it matters: only the largest class can have s > 1/2, and there 1
    # - s is the other classes' sum (summed without the top term) over the row's: 1 - s
    # would round to 0 within an ulp of s = 1
    top_class = np.argmax(exps)
    rest = _sum_except(exps, top_class)
    s = exps[top_class] / sum_exp
    h[top_class] = times(s * (rest / sum_exp), scale) + z_scale * s * s


def _cross_entropy_kernel(x, soft, labels, probs, weighted, class_weight, ignore_index, smoothing,
                          mean, given_denominator, z_loss, softcap, grad, row_losses, chunks, hess,
                          stream, shared):
    """Class indices in ``labels`` or probabilities in ``probs`` (``soft``); the unused one
    and an unused ``class_weight`` are empty arrays, so every call types the same way.
    ``given_denominator`` is the mean's denominator when the caller knows it, else < 0.
    ``z_loss``: PaLM's z lse^2 per kept row (0: off); ``softcap`` > 0 caps the logits at
    softcap tanh(x / softcap) (0: off). ``stream``: whether the gradient's rows are written
    by streaming stores (``STREAM_ROW_BYTES``). Runs ``chunks`` chunks of rows (see
    ``_launch``).
    Returns (the chunks' sum, first bad row or -1, the reduction's scale): a
    bad label is found before anything is written, and the caller raises."""
    aligned_stack()
    wide_vectors()
    # (no reference counts of the arguments' row views: see ``borrowed``)
    x, labels, probs, class_weight = borrowed(x), borrowed(labels), borrowed(probs), borrowed(class_weight)
    grad_rows, hess_rows = borrowed(grad), borrowed(hess)
    rows, classes = x.shape
    keep = 1.0 - smoothing
    spread = smoothing / classes
    # The labels first: range check and the mean's denominator (PyTorch's rule).
    denominator, kept_rows = float(rows), rows
    if not soft:
        denominator, kept_rows, bad_row = _labels_checked(labels, classes, ignore_index,
                                                          weighted, class_weight)
        if bad_row >= 0:
            return 0.0, bad_row, 1.0
    # the z-loss's "mean" divides by the kept rows' count (Liger-Kernel's rule), not by
    # their summed class weights: per row, a multiple of the cross-entropy's denominator
    z_coef = z_loss
    # (z_loss 0 stays 0 where the denominator overflowed: 0 inf would be NaN)
    if z_loss != 0.0 and mean and weighted and given_denominator < 0.0 and kept_rows > 0:
        z_coef = z_loss * (denominator / kept_rows)
    if given_denominator >= 0.0:
        denominator = given_denominator
    grad_scale = 1.0 / denominator if mean else 1.0
    weight_total = _sum(class_weight) if weighted else float(classes)
    capped = softcap > 0.0
    # the exps shifted by softcap (see below), for softcaps whose ``softcap_constants`` are
    # normal float32 numbers (from about 1e-3)
    by_cap = capped and 1.0 / 512.0 <= softcap <= 40.0
    by_label = by_cap and not soft and smoothing == 0.0  # the loss as log(sum / e_label)
    # softcap's chain rule folded into the exps' pass (``_capped_exps_folded``)
    folded = by_label and grad is not None and hess is None
    cap = x.dtype.type(softcap)
    inv_cap = x.dtype.type(1.0 / softcap) if capped else x.dtype.type(0.0)

    size = (rows + chunks - 1) // chunks
    # the exps' and softcap's tanh's constants, kept through the loops (see ``held``), and
    # the polynomial's for logits within +-softcap, scaled by this softcap
    exp_k, tanh_k, near_k = held(EXP32_WIDE), held(TANH32), softcap_constants(cap)
    # the gradient written over x (out=logits, torch's inplace_backward): each row is
    # copied here and read from here. LLVM runs a loop whose arrays overlap unvectorised
    # (2-4x slower), and softcap may read a row again after the exps were written
    in_place = _written_over(grad, x)
    saved_row_owner = np.empty(classes if in_place else 0, x.dtype)
    saved_row = borrowed(saved_row_owner)
    stream = stream and not in_place
    # a row of exps when no gradient is asked or the gradient's rows are streamed (else
    # they go into the gradient), and a row of target weights w_c q_c for probabilities
    exps_owner = np.empty(classes if grad is None or stream else 0, x.dtype)
    exps = borrowed(exps_owner)
    targets_owner = np.empty(classes if soft else 0)
    targets = borrowed(targets_owner)
    # the capped row (softcap tanh(x / softcap)): the logits the loss sees, read again from
    # cache for the chain rule; or, ``folded``, the row's exps
    capped_row_owner = np.empty(classes if capped else 0, x.dtype)
    capped_row = borrowed(capped_row_owner)
    result = 0.0
    chunk = claim(shared, -1)
    prefetching = classes * x.itemsize <= PREFETCH_ROW_BYTES
    while chunk < chunks:
        total, total_error = 0.0, 0.0  # a compensated sum (add_compensated)
        end = min(rows, chunk * size + size)
        for r in range(chunk * size, end):
            xr = x[r]
            # the row whose lines the exp pass prefetches (see ``SPAN``), or none
            upcoming = x[r + 1] if prefetching and r + 1 < end else xr[:0]
            label = -1
            ref = -1  # the class the loss is taken against (softcap: below)
            capped_label = cap  # (``folded``'s: below)
            if not soft:
                label = labels[r]
                if label == ignore_index:
                    if grad is not None:
                        grad_rows[r, :] = 0
                    if hess is not None:
                        hess_rows[r, :] = 0
                    if row_losses is not None:
                        row_losses[r] = 0.0
                    continue
            # each exp once, kept in the gradient (or in the scratch row it is copied from;
            # ``folded``: in the capped row's, and e (1 - t^2) in the gradient)
            g = exps if grad is None or stream else grad_rows[r]
            if in_place:
                _copy(xr, saved_row)
                xr = saved_row
            logits = xr  # (softcap's chain rule reads them again: ``softcap_slope``)
            near = True  # (softcap: every logit within +-softcap; see ``softcap_slope``)
            if capped:
                # the capped logits are at most softcap: with that as the shift no exp
                # overflows, and none underflows to a subnormal while softcap <= 40
                # (exp(-80) is normal), so no pass for the max (outside ``by_cap``'s
                # range it is found, capped: tanh increases). One fused pass then caps
                # each logit (into the scratch row, read again for the chain rule) and
                # takes its exp; against the label with no Hessian, the same pass keeps
                # the exps apart and folds the chain rule into the gradient's (``folded``)
                if folded:  # (the exps into the scratch row, e (1 - t^2) into g)
                    capped_label = _capped_exps_folded(xr, cap, inv_cap, capped_row, g, near_k,
                                                       tanh_k, exp_k[0], upcoming, label)
                    ref = label
                    # (no dot where the loss is taken against the label: the z-loss's lse
                    # alone takes it, below)
                    top = shift = capped_label
                elif by_cap:  # (a polynomial where every logit is within +-softcap)
                    near = _capped_exps(xr, cap, inv_cap, g, capped_row, near_k, tanh_k,
                                        exp_k[0], upcoming)
                    # the loss is taken against one class's exp, log1p(rest / e_ref)
                    # (``_sum_except``): the label's, or for probabilities and smoothing
                    # the capped row's max, also the dot's shift (terms of one sign)
                    ref = label if by_label else np.argmax(capped_row)
                    top = shift = capped_row[ref]
                else:
                    top_x, low_x = _row_max_min(xr)
                    near = -cap <= low_x and top_x <= cap  # (False for a NaN)
                    top = cap * fast_tanh(top_x * inv_cap)
                    shift = top
                    for c in range(classes):
                        v = cap * fast_tanh(xr[c] * inv_cap, tanh_k)
                        capped_row[c] = v
                        g[c] = fast_exp(v - top, exp_k)
                if not folded:  # (there the scratch row holds the exps)
                    xr = capped_row
            else:
                top, low = _row_max_min(xr)
                shift = top
            # the loss is coef log(sum exp z) - dot with z = x - top <= 0 (``_shifted``):
            # terms >= 0 that never cancel, as lse - x_c would for large logits. coef =
            # sum_c w_c q_c and dot = sum_c w_c q_c z_c
            if soft:
                for c in range(classes):
                    wq = probs[r, c] * keep + spread
                    targets[c] = wq * class_weight[c] if weighted else wq
                coef = _sum(targets)
                dot = _shifted_dot(targets, xr, top, 1.0)
            else:
                label_weight = class_weight[label] if weighted else 1.0
                coef = keep * label_weight
                # (unused where the loss is taken as log(sum / e_label), below)
                dot = coef * _shifted(xr[label], top) if coef != 0.0 and not by_label else 0.0
                if smoothing != 0.0:
                    coef += spread * weight_total
                    dot += (_shifted_dot(class_weight, xr, top, spread) if weighted
                            else _shifted_sum(xr, top, spread))
            if not capped:
                if top - low <= NORMAL_REACH:  # (False for a NaN or an infinity in the row)
                    _exps_normal(xr, top, g, exp_k[0], upcoming)
                else:
                    for c in range(classes):
                        g[c] = fast_exp(_shifted(xr[c], top), exp_k)
            if by_cap:
                # the exps are shifted by softcap, not by the row's max, so none is 1 but
                # each rounded: log(sum) - z_ref would keep that rounding (1e-7 absolute: a
                # loss of 1e-5 off by 0.5 %, a one-class row's not 0), and log(sum) - dot
                # cancel (a confident row's loss came out negative). The same loss as
                # log(sum / e_ref) - dot has it in both terms: a relative error
                row_exps = capped_row if folded else g
                ref_exp = float(row_exps[ref])  # >= exp(-80): the capped logits are >= -softcap
                label_rest = _sum_except(row_exps, ref)  # (the label's, where it is ``ref``)
                sum_exp = label_rest + ref_exp
                log_sum = np.log1p(label_rest / ref_exp)  # (log(sum) less the ref's z)
                loss = coef * log_sum - dot
            else:
                sum_exp = _sum(g)
                log_sum = np.log(sum_exp)
                below_one = -1.0  # (not summed: the row is not confident)
                if sum_exp < CONFIDENT:  # the max's 1 + e keeps e to an ulp of 1:
                    sum_exp, below_one = _sum_below_one(g)  # the others summed apart
                    log_sum = _log_sum(sum_exp, below_one)
                # the label's rest (see label_gradient below): where the label holds the
                # max's 1 in a confident row, the others' sum apart from it
                label_rest = 0.0
                if label >= 0:
                    at_max = below_one >= 0.0 and g[label] == 1.0
                    label_rest = (_others(sum_exp, below_one) if at_max
                                  else sum_exp - float(g[label]))
                loss = coef * log_sum - dot
            grad_coef = coef  # what the softmax is multiplied by in the gradient
            z_grad = 0.0
            if z_coef != 0.0:
                # lse = shift + log_sum, from the max (or the softcap's reference class)
                # with the others' sum apart: in a confident row lse is near 0, where
                # log(sum_exp) keeps only the bits of sum_exp - 1 that 1 + it kept (and the
                # softcap's exps, shifted by softcap, each their rounding: lse = softcap +
                # log(sum) then lost all of it), and 2 zc lse is the gradient's coefficient
                lse = shift + log_sum
                loss += z_coef * lse * lse
                z_grad = 2.0 * z_coef * lse  # d/dx_c z lse^2 = 2 z lse softmax_c
                grad_coef += z_grad
            total, total_error = add_compensated(total, total_error, loss)
            if row_losses is not None:
                row_losses[r] = loss
            if hess is not None:  # (softcap's chain rule follows the gradient's)
                _softmax_hessian(hess_rows[r], g, sum_exp, grad_coef * grad_scale,
                                 2.0 * z_coef * grad_scale)
            if grad is None:
                continue
            # softmax * coef - w q, times the reduction's scale; the scale in the logits'
            # dtype, so that float32 multiplies stay float32 (a float64 scale would convert
            # every element there and back: two and a half times the instructions)
            # (``divide_apart``: the Hessian's divisions share sum_exp)
            coef_scale = grad_coef * grad_scale
            prob_scale = x.dtype.type(divide_apart(grad_coef, sum_exp) * grad_scale)
            # The label's gradient, (c s_label - w_label) times the scale, as
            # z_grad e_label / sum - w_label (rest / sum) in float64, rest the other
            # classes' sum of exps (``label_rest``): s_label - 1 rounded in the logits'
            # dtype cancels in a confident row (the label's softmax near 1: 1.3 % off for
            # a logit 20 above 999 zeros, 0 instead of -1.4e-8 at 25). With label smoothing the
            # target is below 1 and nothing cancels: the plain form, as where the
            # coefficient overflowed (NumPy's rule).
            exact_label = not soft and smoothing == 0.0 and abs(coef_scale) < INF
            label_exp64 = ref_exp if folded else float(g[label])  # (g holds e (1 - t^2))
            # (rest / sum first: w_label rest overflowed where w_label (1 - s_label) does
            # not; two factors, two divisors: see ``divide_apart``)
            label_gradient = ((z_grad * divide_apart(label_exp64, sum_exp, 4.0)
                               - coef * divide_apart(label_rest, sum_exp))
                              * grad_scale) if exact_label else 0.0
            if not abs(prob_scale) < INF:
                # the z-loss's 2 zc lse overflowed (logits near the dtype's largest, or
                # infinite), or a huge coefficient met a small sum (softcap's exps, shifted
                # by softcap, not by the max), or overflowed doubled (``divide_apart``) or
                # in float32: a class whose softmax is 0 has the limit 0, not 0 * inf =
                # NaN. Scaled here, once, in this rare row, in float64, the softmax before
                # the coefficient (a gradient can be finite where its scale is not)
                inverse = 1.0 / sum_exp  # (sum_exp >= exp(-80): finite)
                for c in range(classes):
                    g[c] = times(float(g[c]) * inverse, coef_scale)
                label_exp64 = times(label_exp64 * inverse, coef_scale)  # (g[label]'s, or e's)
                prob_scale = ONE
            if not soft and smoothing == 0.0 and (stream and (hess is None or not capped)
                                                  or capped and hess is None):
                # the scale in one pass (streamed rows: the pass that copies the row) with
                # softcap's chain rule d(softcap tanh(x / softcap))/dx = 1 - tanh^2
                # (``folded``: already in g), the label's element as the passes below
                # compute it, then set apart
                label_value = (x.dtype.type(label_gradient) if exact_label else x.dtype.type(
                    x.dtype.type(label_exp64) * prob_scale - keep * label_weight * grad_scale))
                if capped:
                    label_value = label_value * softcap_slope(
                        capped_label if folded else capped_row[label], logits[label], cap,
                        inv_cap, False)[1]  # (one element: no need of ``near``)
                if stream:
                    _stream_gradient(g, grad_rows[r], prob_scale,
                                     capped_row[:0 if folded else classes], logits, cap, inv_cap,
                                     label, label_value)
                    continue
                for c in range(classes):
                    g[c] = g[c] * prob_scale
                if not folded:  # (the label's element is set apart just below)
                    if near:
                        _softcap_chain_near(g, g[:0], capped_row, logits, cap, inv_cap)
                    else:
                        _softcap_chain_far(g, g[:0], capped_row, logits, cap, inv_cap)
                g[label] = label_value
                continue
            for c in range(classes):
                g[c] = g[c] * prob_scale
            if soft:
                for c in range(classes):
                    g[c] -= targets[c] * grad_scale
            elif exact_label:
                g[label] = x.dtype.type(label_gradient)
            else:
                g[label] -= keep * label_weight * grad_scale
                if smoothing != 0.0:
                    for c in range(classes):
                        w = class_weight[c] if weighted else 1.0
                        g[c] -= spread * w * grad_scale
            if capped:  # the chain rule: d(softcap tanh(x / softcap))/dx = 1 - tanh^2
                # and d^2/dx^2 = -2 tanh (1 - tanh^2) / softcap
                if hess is not None:
                    h = hess_rows[r]
                else:
                    h = g[:0]
                if near:
                    _softcap_chain_near(g, h, capped_row, logits, cap, inv_cap)
                else:
                    _softcap_chain_far(g, h, capped_row, logits, cap, inv_cap)
            if stream:
                _stream_row(g, grad_rows[r])
        if stream:
            store_fence()  # (before ``record`` tells another thread the chunk is done)
        result = record(shared, chunk, compensated(total, total_error), result)
        chunk = claim(shared, chunk)
    keep_alive((saved_row_owner, exps_owner, targets_owner, capped_row_owner))
    return result, -1, grad_scale


_CE = _jit(_cross_entropy_kernel, "cross_entropy")


def _cross_entropy_types(dtype, no_grad: bool, no_row_losses: bool, no_hess: bool) -> tuple:
    logits, out = array_type(dtype, 2), array_type(dtype, 2, writes=True)
    return (logits, _BOOL, array_type(np.int64, 1), logits, _BOOL, array_type(dtype, 1), _INT,
            _REAL, _BOOL, _REAL, _REAL, _REAL, _NONE if no_grad else out,
            _NONE if no_row_losses else _ROW_LOSSES, _INT, _NONE if no_hess else out, _BOOL,
            *_CHUNK_ARGUMENTS)


@bad_labels_as_nan
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
    if (0 < x.shape[1] < FEW_CLASSES and not soft and class_weight is None and smoothing == 0.0
            and z_loss == 0.0 and softcap is None):
        empty = _EMPTY_ROWS[x.dtype]
        args = (x, target, ignore_index, reduction == "mean",
                -1.0 if denominator is None else float(denominator), want_value,
                empty if grad is None else grad, empty if hess is None else hess,
                _EMPTY_LOSSES if row_losses is None else row_losses, chunks)
        kernel, types, key = _FEW, _few_classes_types, (x.dtype,)
    else:
        args = (x, soft, _NO_LABELS if soft else target, target if soft else _EMPTY_ROWS[x.dtype],
                class_weight is not None,
                _EMPTY[x.dtype] if class_weight is None else class_weight,
                ignore_index, smoothing, reduction == "mean",
                -1.0 if denominator is None else float(denominator), z_loss,
                0.0 if softcap is None else softcap, grad, row_losses, chunks, hess,
                grad is not None and grad.nbytes >= STREAM_FROM_BYTES
                and x.shape[1] * x.itemsize >= STREAM_ROW_BYTES)
        kernel, types = _CE, _cross_entropy_types
        key = (x.dtype, grad is None, row_losses is None, hess is None)
    value, bad_row = _launch(kernel, types, key, chunks, args)
    if bad_row >= 0:
        raise label_error(int(target[bad_row]), bad_row, x.shape[1])
    if not want_value:
        return None
    if reduction == "none":
        return cast_quietly(row_losses, x.dtype)
    return in_dtype(value, x.dtype)
