"""The Numba backend's cross-entropy, and the launch of every row loss (``_launch``; the
other one, multiclass hinge, is in ``_numba_multiclass_hinge``). Cross-entropy goes row by
row while the row is in cache (max, then ``exp`` once per element, written into the
gradient buffer, then the gradient in place); rows of fewer than ``FEW_CLASSES`` classes
without options go block by block instead, in flat passes over many rows (a short row
does not vectorise). The shared pieces (``_jit``, ``_sum``, the chunking constants) are
``_numba_common``'s. A large input's chunks of rows are shared among threads
(``_threads``); each thread checks all the labels before it writes anything.
"""

from __future__ import annotations

import numba
import numpy as np

from ._host import CONFIDENT, bad_labels_as_nan, cast_quietly, half_in_float32, label_error
from ._numba_common import (
    _CHUNK_ARGUMENTS,
    _EMPTY,
    _EMPTY_ROWS,
    _NO_LABELS,
    BLOCK,
    CE_CHUNK_ELEMENTS,
    CHUNKS,
    STREAM_FROM_BYTES,
    _copy,
    _in_order,
    _jit,
    _sum,
    _written_over,
    add_compensated,
    array_type,
    compensated,
    copy_streaming,
    in_dtype,
    lines_head,
    prefetch_lines,
    store_fence,
    store_streaming,
    wide_vectors,
)
from ._numba_math import (
    EXP32_LOW,
    EXP32_WIDE,
    INF,
    ONE,
    TANH32,
    TANH_NEAR32,
    ZERO,
    fast_exp,
    fast_exp_nonpositive,
    fast_exp_normal,
    fast_tanh,
    held,
    inline,
    maximum,
    minimum,
    softcap_near_zero,
    times,
)
from ._threads import claim, record, share

_EMPTY_LOSSES = np.empty(0)  # no per-row losses wanted
_ROW_LOSSES = numba.float64[::1]  # per-row losses: float64, allocated here (aligned)
_INT, _REAL, _BOOL, _NONE = numba.int64, numba.float64, numba.boolean, numba.none


# (the kernel's types function, its key) -> the row kernel's machine code
_CODE: dict[tuple, object] = {}


def _launch(kernel, types, key: tuple, chunks: int, args: tuple) -> tuple[float, int]:
    """Run ``kernel`` on ``args`` over ``chunks`` chunks of rows (on this thread alone for
    one, else shared among the threads), through its machine code for the argument types
    ``types(*key)`` (see ``array_type``): compiled once per key, one version for writeable
    and read-only inputs, and no dispatcher to type the arguments on every call. Returns
    (the reduced loss, first bad row or -1)."""
    code = _CODE.get((types, key))
    if code is None:
        code = _CODE[types, key] = kernel.compile(types(*key))
    if chunks == 1:
        total, bad_row, scale = code(*args, None)
    else:
        # every thread checks all the labels before it writes: they agree on the bad row
        (_, bad_row, scale), partials = share(code, args, chunks)
        if bad_row >= 0:  # nothing was written, partial sums included
            return 0.0, bad_row
        total = _in_order(partials)
    return total * scale, bad_row


@inline
def _shifted(v, top):
    """v - top, with 0 where v equals the row's max ``top`` (also when both are inf: an
    infinite logit at the max counts as equal to it, not inf - inf = NaN)."""
    return ZERO if v == top else v - top


def _shifted_sum(values, top, factor):
    """sum(factor * (values - top)) (see ``_shifted``) in float64; reassociated like
    ``_sum``. Each term is weighted before the sum: terms of one sign, so the sum never
    overflows before its final value does."""
    wide_vectors()
    total = 0.0
    for i in range(values.size):
        total += factor * _shifted(values[i], top)
    return total


def _shifted_dot(weights, values, top, factor):
    """sum(factor * weights * (values - top)) (see ``_shifted_sum``), where a zero weight
    contributes 0 even against an infinite difference."""
    wide_vectors()
    total = 0.0
    for i in range(values.size):
        total += (factor * weights[i]) * _shifted(values[i], top) if weights[i] != 0 else 0.0
    return total


def _sum_below_one(values):
    """(sum(values), the sum of those other than 1) in float64, reassociated like ``_sum``.
    A row's exps shifted by its max hold 1 for the max: 1 + e rounds e to float64's ulp of
    1 (a confident row's loss log(1 + e) was 1e-4 relative off at 128000 classes), so the
    loss takes log1p of the others' sum (``_log_sum``)."""
    wide_vectors()
    total, below = 0.0, 0.0
    for i in range(values.size):
        v = values[i]
        total += v
        below += v if v != 1.0 else 0.0
    return total, below


def _sum_except(values, index):
    """sum(values) without ``values[index]`` (float64, ``_sum``): the other classes' exps,
    apart from the one the loss is taken against (log1p(rest / e_ref))."""
    wide_vectors()
    kept = values[index]
    values[index] = 0
    rest = _sum(values)
    values[index] = kept
    return rest


_shifted_sum = _jit(_shifted_sum, "_shifted_sum", reassociate=True)
_shifted_dot = _jit(_shifted_dot, "_shifted_dot", reassociate=True)
_sum_below_one = _jit(_sum_below_one, "_sum_below_one", reassociate=True)
_sum_except = _jit(_sum_except, "_sum_except")


@inline
def _others(total, below):
    """sum - 1 for ``total, below = _sum_below_one(exps)``: the 1s beyond the max's
    (ties; their count is the sums' difference) plus the others' sum, without the max's 1
    that would round the others away."""
    return (np.rint(total - below) - 1.0) + below


@inline
def _log_sum(total, below):
    """log(total) as log1p(``_others``): exact where the max's 1 dominates."""
    return np.log1p(_others(total, below))


# --- cross-entropy, row by row ---------------------------------------------------------


@inline
def _row_max(x):
    """max(x), NaN if any element is NaN (as NumPy's): a NaN then makes the whole row NaN,
    loss and gradient, through x - max."""
    wide_vectors()
    top = x[0]
    for c in range(1, x.size):
        top = maximum(top, x[c])
    return top


@inline
def _row_max_min(x):
    """(max(x), min(x)) in one pass, NaN if any element is NaN."""
    wide_vectors()
    top = low = x[0]
    for c in range(1, x.size):
        top = maximum(top, x[c])
        low = minimum(low, x[c])
    return top, low


# a row whose logits lie within this of its max has only normal float32 exps (exp(-87)
# > 2^-126): there exp needs no clamp and no subnormal scaling, and x - max no care for
# infinities (the usual row; the others take the exp that holds everywhere)
NORMAL_REACH = 87.0

# The exp pass goes in spans of SPAN logits, each after a prefetch of the same span of the
# next row, for rows of at most PREFETCH_ROW_BYTES: the hardware's prefetcher follows a
# stream, not the row to come, so without it each row's first pass waited on memory while
# the passes in cache left it idle (4096 x 1000 and 1024 x 32000: 0.92 and 0.83 of the
# time). Rows of 128256 classes gained nothing (1.01-1.05): the bound is that
# measurement (see the measurement log).
SPAN = 256
PREFETCH_ROW_BYTES = 1 << 18

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
def _stream_gradient(exps, target, scale, capped_row, inv_cap, label, label_value):
    """target = exps * scale, times softcap's chain rule 1 - t^2 (t = capped_row / softcap)
    where ``capped_row`` is not empty, with ``label_value`` at ``label``, by streaming
    stores as ``_stream_row``: a row's last pass and its copy in one (the same bits)."""
    wide_vectors()
    head = lines_head(target)
    lines, rest = target[head:], exps[head:]  # (from 0: LLVM vectorises the loops)
    at = label - head
    if capped_row.size:
        for c in range(head):
            t = capped_row[c] * inv_cap
            target[c] = label_value if c == label else (exps[c] * scale) * (ONE - t * t)
        capped = capped_row[head:]
        for c in range(lines.size):
            t = capped[c] * inv_cap
            store_streaming(lines, c, label_value if c == at else (rest[c] * scale) * (ONE - t * t))
    else:
        for c in range(head):
            target[c] = label_value if c == label else exps[c] * scale
        for c in range(lines.size):
            store_streaming(lines, c, label_value if c == at else rest[c] * scale)


@inline
def _stream_row(source, target):
    """target = source, by streaming stores from target's first cache line on (plain
    stores before it), in the CPU's widest vectors."""
    wide_vectors()
    copy_streaming(source, target)


@inline
def _exps_normal(xr, top, g, k, upcoming):
    """g = exp(xr - top) for a row whose exps are all normal (``NORMAL_REACH``), the lines
    of ``upcoming`` (the next row, or an empty one) prefetched span by span (``SPAN``)."""
    wide_vectors()
    for start in range(0, xr.size, SPAN):
        stop = min(xr.size, start + SPAN)
        prefetch_lines(upcoming, start, stop)
        gs, xs = g[start:stop], xr[start:stop]  # (from 0: LLVM vectorises the loop)
        for c in range(stop - start):
            gs[c] = fast_exp_normal(xs[c] - top, k)


@inline
def _capped_exps_near_zero(xr, cap, inv_cap, g, capped_row, near_k, exp_k, upcoming):
    """capped_row = cap tanh(xr / cap) and g = exp(capped_row - cap) as if every logit were
    within +-cap (``softcap_near_zero``), ``upcoming`` prefetched as in ``_exps_normal``;
    returns the largest (x / cap)^2, which says whether they were."""
    wide_vectors()
    reach = xr.dtype.type(0.0)
    for start in range(0, xr.size, SPAN):
        stop = min(xr.size, start + SPAN)
        prefetch_lines(upcoming, start, stop)
        gs, xs, vs = g[start:stop], xr[start:stop], capped_row[start:stop]
        for c in range(stop - start):
            v, z = softcap_near_zero(xs[c], cap, inv_cap, near_k)
            reach = maximum(reach, z)
            vs[c] = v
            gs[c] = fast_exp_normal(v - cap, exp_k)  # in [exp(-80), 1]
    return reach


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
    wide_vectors()
    rows, classes = x.shape
    keep = 1.0 - smoothing
    spread = smoothing / classes
    # The labels first: range check and the mean's denominator (PyTorch's rule).
    denominator = float(rows)
    kept_rows = rows
    if not soft:
        kept_rows = 0
        weight_sum, weight_error = 0.0, 0.0  # the kept rows' class weights
        for r in range(rows):
            label = labels[r]
            if label == ignore_index:
                continue
            if label < 0 or label >= classes:
                return 0.0, r, 1.0
            if weighted:
                weight_sum, weight_error = add_compensated(weight_sum, weight_error,
                                                           float(class_weight[label]))
            kept_rows += 1
        denominator = compensated(weight_sum, weight_error) if weighted else float(kept_rows)
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
    by_cap = capped and softcap <= 40.0  # the exps shifted by softcap (see below)
    by_label = by_cap and not soft and smoothing == 0.0  # the loss as log(sum / e_label)
    cap = x.dtype.type(softcap)
    inv_cap = x.dtype.type(1.0 / softcap) if capped else x.dtype.type(0.0)
    two_inv_cap = inv_cap + inv_cap

    size = (rows + chunks - 1) // chunks
    # the exps' and softcap's tanh's constants, kept through the loops (see ``held``)
    exp_k, tanh_k, near_k = held(EXP32_WIDE), held(TANH32), held(TANH_NEAR32)
    # the gradient written over x (out=logits, torch's inplace_backward): each row is
    # copied here and read from here. LLVM runs a loop whose arrays overlap unvectorised
    # (2-4x slower), and softcap may read a row again after the exps were written
    in_place = _written_over(grad, x)
    saved_row = np.empty(classes if in_place else 0, x.dtype)
    stream = stream and not in_place
    # a row of exps when no gradient is asked or the gradient's rows are streamed (else
    # they go into the gradient), and a row of target weights w_c q_c for probabilities
    exps = np.empty(classes if grad is None or stream else 0, x.dtype)
    targets = np.empty(classes if soft else 0)
    # the capped row (softcap tanh(x / softcap)): the logits the loss sees, read again from
    # cache for the chain rule
    capped_row = np.empty(classes if capped else 0, x.dtype)
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
            # each exp once, kept in the gradient (or in the scratch row it is copied from)
            g = exps if grad is None or stream else grad[r]
            if in_place:
                _copy(xr, saved_row)
                xr = saved_row
            if capped:
                # the capped logits are at most softcap: with that as the shift no exp
                # overflows, and none underflows to a subnormal while softcap <= 40
                # (exp(-80) is normal), so no pass for the max (above 40 it is found,
                # capped: tanh increases). One fused pass then caps each logit (into
                # the scratch row, read again for the chain rule) and takes its exp
                if by_cap:
                    # first as if every logit were within +-softcap (the usual case), where
                    # tanh is a polynomial with no division; a row with one beyond (or a
                    # NaN) is done again with the tanh that holds everywhere
                    reach = _capped_exps_near_zero(xr, cap, inv_cap, g, capped_row, near_k,
                                                   exp_k[0], upcoming)
                    if not reach <= 1.0:  # (the largest (x / softcap)^2)
                        for c in range(classes):
                            v = cap * fast_tanh(xr[c] * inv_cap, tanh_k)
                            capped_row[c] = v
                            g[c] = fast_exp_normal(v - cap, exp_k[0])
                    shift = cap
                    # the loss is taken against one class's exp, log1p(rest / e_ref)
                    # (``_sum_except``): the label's, or for probabilities and smoothing
                    # the capped row's max, also the dot's shift (terms of one sign)
                    ref = label if by_label else np.argmax(capped_row)
                    top = capped_row[ref]
                else:
                    top = cap * fast_tanh(_row_max(xr) * inv_cap)
                    shift = top
                    for c in range(classes):
                        v = cap * fast_tanh(xr[c] * inv_cap, tanh_k)
                        capped_row[c] = v
                        g[c] = fast_exp(v - top, exp_k)
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
                ref_exp = float(g[ref])  # >= exp(-80): the capped logits are >= -softcap
                rest = _sum_except(g, ref)
                sum_exp = rest + ref_exp
                loss = coef * np.log1p(rest / ref_exp) - dot
                label_rest = rest  # (the label's, where it is ``ref``: see below)
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
                lse = shift + np.log(sum_exp)
                loss += z_coef * lse * lse
                z_grad = 2.0 * z_coef * lse  # d/dx_c z lse^2 = 2 z lse softmax_c
                grad_coef += z_grad
            total, total_error = add_compensated(total, total_error, loss)
            if row_losses is not None:
                row_losses[r] = loss
            if hess is not None:
                # in the (capped) logits: c s (1 - s) + 2 zc s^2, c = coef + 2 zc lse, times
                # the reduction's scale; in the logits' dtype, as the gradient below:
                # float32 stays vectorised (softcap's chain rule follows the gradient)
                h = hess[r]
                inverse = x.dtype.type(1.0 / sum_exp)
                hess_scale = x.dtype.type(grad_coef * grad_scale)
                z_scale = x.dtype.type(2.0 * z_coef * grad_scale)
                if abs(hess_scale) < INF:
                    for c in range(classes):
                        s = g[c] * inverse
                        h[c] = hess_scale * (s * (ONE - s)) + z_scale * (s * s)
                else:  # 2 zc lse overflowed (see the gradient's scale below)
                    for c in range(classes):
                        s = g[c] * inverse
                        h[c] = times(float(s * (ONE - s)), grad_coef * grad_scale) + z_scale * (s * s)
                # 1 - s exact where it matters: only the largest class can have s > 1/2,
                # and there 1 - s is the other classes' sum (summed without the top
                # term) over the row's: 1 - s would round to 0 within an ulp of s = 1
                top_class = np.argmax(g)
                top_exp = g[top_class]
                rest = _sum_except(g, top_class)
                s = top_exp / sum_exp
                h[top_class] = (times(s * (rest / sum_exp), grad_coef * grad_scale)
                                + 2.0 * z_coef * grad_scale * s * s)
            if grad is None:
                continue
            # softmax * coef - w q, times the reduction's scale; the scale in the logits'
            # dtype, so that float32 multiplies stay float32 (a float64 scale would convert
            # every element there and back: two and a half times the instructions)
            prob_scale = x.dtype.type(grad_coef / sum_exp * grad_scale)
            # The label's gradient, (c s_label - w_label) times the scale, as
            # (z_grad e_label - w_label rest) / sum in float64, rest the other classes' sum
            # of exps (``label_rest``): s_label - 1 rounded in the logits' dtype cancels
            # in a confident row (the label's softmax near 1: 1.3 % off for a logit 20
            # above 999 zeros, 0 instead of -1.4e-8 at 25). With label smoothing the
            # target is below 1 and nothing cancels: the plain form.
            exact_label = not soft and smoothing == 0.0 and abs(prob_scale) < INF
            label_gradient = ((z_grad * float(g[label]) - coef * label_rest) / sum_exp
                              * grad_scale) if exact_label else 0.0
            if not abs(prob_scale) < INF:
                # the z-loss's 2 zc lse overflowed (logits near the dtype's largest, or
                # infinite): a class whose softmax is 0 has the limit 0, not 0 * inf = NaN;
                # scaled here, once, in this rare row, in float64 (a float32 gradient can be
                # finite where its scale is not)
                row_scale = grad_coef / sum_exp * grad_scale
                for c in range(classes):
                    g[c] = times(float(g[c]), row_scale)
                prob_scale = ONE
            if stream and not soft and smoothing == 0.0 and (hess is None or not capped):
                # the scale (and softcap's chain rule) in the pass that copies the row, the
                # label's element as the passes below compute it
                label_value = (x.dtype.type(label_gradient) if exact_label else x.dtype.type(
                    g[label] * prob_scale - keep * label_weight * grad_scale))
                if capped:
                    t = capped_row[label] * inv_cap
                    label_value = label_value * (ONE - t * t)
                _stream_gradient(g, grad[r], prob_scale, capped_row, inv_cap, label, label_value)
                continue
            if capped and not soft and smoothing == 0.0 and hess is None:
                # the chain rule d(softcap tanh(x / softcap))/dx = 1 - tanh^2 in the same
                # pass as the scale (the label's element again after it, as below)
                label_exp = g[label]
                for c in range(classes):
                    t = capped_row[c] * inv_cap
                    g[c] = (g[c] * prob_scale) * (ONE - t * t)
                t = capped_row[label] * inv_cap
                g[label] = (x.dtype.type(label_gradient) if exact_label else
                            x.dtype.type(label_exp * prob_scale - keep * label_weight * grad_scale)
                            ) * (ONE - t * t)
                continue  # (streamed rows took the branch above)
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
                if hess is not None:  # and d^2/dx^2 = -2 tanh (1 - tanh^2) / softcap
                    h = hess[r]
                    for c in range(classes):
                        t = capped_row[c] * inv_cap
                        slope = ONE - t * t
                        h[c] = h[c] * (slope * slope) - g[c] * (two_inv_cap * t * slope)
                for c in range(classes):
                    t = capped_row[c] * inv_cap
                    g[c] = g[c] * (ONE - t * t)
            if stream:
                _stream_row(g, grad[r])
        if stream:
            store_fence()  # (before ``record`` tells another thread the chunk is done)
        result = record(shared, chunk, compensated(total, total_error), result)
        chunk = claim(shared, chunk)
    return result, -1, grad_scale


_CE = _jit(_cross_entropy_kernel, "cross_entropy")


def _cross_entropy_types(dtype, no_grad: bool, no_row_losses: bool, no_hess: bool) -> tuple:
    logits, out = array_type(dtype, 2), array_type(dtype, 2, writes=True)
    return (logits, _BOOL, array_type(np.int64, 1), logits, _BOOL, array_type(dtype, 1), _INT,
            _REAL, _BOOL, _REAL, _REAL, _REAL, _NONE if no_grad else out,
            _NONE if no_row_losses else _ROW_LOSSES, _INT, _NONE if no_hess else out, _BOOL,
            *_CHUNK_ARGUMENTS)


# --- cross-entropy over rows of few classes, block by block ------------------------------
# A row of C < FEW_CLASSES logits is shorter than the vector loops LLVM makes (8 float32
# lanes, unrolled), so the row-by-row kernel above runs its exps in the scalar tail: at
# C = 10 it spent 140 ns a row. Here a block of rows is computed in passes over the whole
# block, flat, where the per-row numbers (the max, then the softmax's scale) are first
# spread to one per element: the exps and the products then vectorise across rows. Only
# the per-row sums stay scalar. For hard labels without class weights, smoothing, z-loss
# or softcap (the options change the passes' formulas; those calls keep the kernel above).
FEW_CLASSES = 32


def _cross_entropy_few_classes_kernel(x, labels, ignore_index, mean, given_denominator,
                                      want_value, grad, hess, row_losses, chunks, shared):
    """The loss of row r is log(sum_c exp(z_c)) - z_label, z = x_r - max(x_r) (see
    ``_shifted``); the gradient (softmax - onehot) times the reduction's scale; the Hessian
    softmax (1 - softmax) times it. ``grad``, ``hess`` and ``row_losses`` are empty when not
    wanted (one compiled version for all); without ``want_value`` no loss is computed (0).
    Runs ``chunks`` chunks of rows (see ``_launch``); returns (the chunks' sum, first bad
    row or -1, the reduction's scale), the labels checked before anything is written."""
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
    complement = np.empty(block_rows * classes if want_hess else 0, x.dtype)
    exps = np.empty(0 if want_grad else block_rows * classes, x.dtype)
    # the gradient written over x: each block of rows is copied here first (see
    # ``saved_row`` above)
    in_place = want_grad and _written_over(grad, x)
    inputs = np.empty(block_rows * classes if in_place else 0, x.dtype)
    label_z = np.empty(block_rows, x.dtype)
    label_grads = np.empty(block_rows)  # per row: the label's gradient (step 3)
    # per row of a block: its max (step 1), its sum of exps and that of those below 1
    # (step 3), each taken class by class across the block's rows (below)
    tops = np.empty(block_rows, x.dtype)
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
            # The maxes (and step 3's sums) run class by class across the block's rows:
            # each row's chain of a few classes, one after another, was bound by its
            # latency (47 ns a row at 10 classes, one thread); across rows they overlap.
            for r in range(count):
                tops[r] = xs[r * classes]
            for c in range(1, classes):
                for r in range(count):
                    tops[r] = maximum(tops[r], xs[r * classes + c])
            for r in range(count):
                row = r * classes
                top = tops[r]
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
                        total, total_error, _sum(block_losses[part:min(count, part + 64)]))
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
