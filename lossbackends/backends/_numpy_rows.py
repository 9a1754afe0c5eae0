"""The NumPy backend's row losses: cross-entropy (with its options) and multiclass hinge,
on logits of shape (rows, classes), the classes last and contiguous (``_prepare`` makes
them so). Readable references, like the rest of ``numpy_backend``.
"""

from __future__ import annotations

import numpy as np

from ._host import CONFIDENT, bad_labels_as_nan, half_in_float32, label_error, quiet


@quiet
@bad_labels_as_nan
@half_in_float32
def cross_entropy(target, x, class_weight, params, reduction, scale, grad, want_value,
                  hess=None):
    ignore_index, smoothing, _, z_loss, softcap, given_denominator = params
    rows, classes = x.shape
    dtype = x.dtype
    soft = target.ndim == 2
    row_index = np.arange(rows)
    kept = None
    if not soft:  # the labels first: an error leaves grad, which may be x, untouched
        kept = target != ignore_index
        bad = kept & ((target < 0) | (target >= classes))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise label_error(int(target[row]), row, classes)
    cap_tanh = slope = None
    if softcap is not None:
        # Gemma's soft-capping: the logits become softcap tanh(x / softcap), in
        # (-softcap, softcap) (so infinite logits become finite); the gradient gets the
        # chain rule's 1 - tanh^2 at the end, as 1 / cosh^2: 1 - tanh^2 cancels where
        # tanh nears +-1 (in float32 it is 0 from |x / softcap| = 8.3 on). New arrays:
        # grad may be x (out=x). x / softcap beyond the largest finite: tanh 1, slope 0
        u = x / dtype.type(softcap)
        cap_tanh = np.tanh(u)
        slope = np.square(np.reciprocal(np.cosh(u)))
        x = cap_tanh * dtype.type(softcap)

    # z = x - max(x) <= 0, written into the gradient buffer (grad may be x: out=x); the
    # loss is sum_c w_c q_c (log sum exp z - z_c), terms >= 0 that never cancel (lse - x_c
    # would, for large logits). A NaN makes its row NaN; an infinite logit equal to its
    # row's max counts as equal (z = 0, not inf - inf): the limit where those logits grow
    # together, so the softmax is uniform over them (an all -inf row: over the row).
    row_max = x.max(axis=1)
    infinite = np.flatnonzero(np.isinf(row_max))
    ties = x[infinite] == row_max[infinite, None] if infinite.size else None
    # inf - inf at the ties, replaced just below; a difference beyond the dtype's largest
    # finite is -inf, as documented (numerics guide, "Rounding")
    z = np.subtract(x, row_max[:, None], out=grad if grad is not None else None)
    if ties is not None:
        z[infinite] = np.where(ties, 0.0, z[infinite])
    if soft:
        # the target weights w_c q_c in float64 (as Numba's): float32's can underflow to 0
        # (a weight of 1e-45 times 0.25) or overflow, against an infinite z_c or log sum
        q = target.astype(np.float64)
        q = q * (1.0 - smoothing) + smoothing / classes if smoothing else q
        wq = q * class_weight if class_weight is not None else q
        row_coef = np.sum(wq, axis=1, dtype=np.float64)  # sum_c w_c q_c
        # sum_c w_c q_c z_c with 0 * (-inf) = 0: a class of no probability costs nothing;
        # the products in float64 (float32's w q z can overflow where the mean does not)
        row_dot = np.sum(np.where(wq == 0, 0.0, wq.astype(np.float64) * z), axis=1)
        denominator = rows if given_denominator is None else given_denominator
    else:
        label = np.where(kept, target, 0)
        label_weight = kept.astype(np.float64)
        if class_weight is not None:
            label_weight *= class_weight[label]
        weight_sum = float(class_weight.sum(dtype=np.float64)) if class_weight is not None else classes
        # (1 - e) w_y (lse - x_y) + (e / C) sum_c w_c (lse - x_c), zero weights costing 0
        row_coef = (1.0 - smoothing) * label_weight
        row_dot = np.where(row_coef == 0, 0.0, row_coef * z[row_index, label])
        if smoothing:
            spread = smoothing / classes
            row_coef += (spread * weight_sum) * kept
            # sum_c (e / C) w_c z_c, each term weighted before the sum: terms of one
            # sign, so the sum never overflows before its final value does
            spread_weight = (spread if class_weight is None
                             else spread * class_weight.astype(np.float64))
            row_dot += np.sum(np.where(spread_weight == 0, 0.0, z * spread_weight), axis=1,
                              dtype=np.float64)
        denominator = (float(label_weight.sum()) if given_denominator is None
                       else given_denominator)
    # PaLM's z-loss z lse^2 per kept row, as Liger-Kernel adds it: class weights and label
    # smoothing leave it alone, and its "mean" divides by the kept rows' count, not their
    # summed class weights; as a multiple of the cross-entropy's denominator, per row (a
    # caller that gives the denominator, a Dask block, gives z so scaled)
    z_coef = z_loss
    if (z_loss and reduction == "mean" and kept is not None and class_weight is not None
            and given_denominator is None):
        count = int(np.count_nonzero(kept))
        z_coef = z_loss * (denominator / count if count else 1.0)

    exp = np.exp(z, out=z)  # each exp once; the gradient buffer holds exp(x - max)
    sum_exp = np.sum(exp, axis=1, dtype=np.float64)
    log_sum = np.log(sum_exp)
    # the max's exp is 1, and 1 + e rounds e to float64's ulp of 1: a confident row's
    # log(sum) as log1p of the 1s beyond the max's plus the others' sum (log(sum) was
    # 2e-4 relative off for a loss of 8e-13); only those rows pay the second sum
    confident = sum_exp < CONFIDENT
    if confident.any():
        rows = exp[confident]
        below_one = np.sum(rows, axis=1, dtype=np.float64, where=rows != 1)
        log_sum[confident] = np.log1p((np.rint(sum_exp[confident] - below_one) - 1.0)
                                      + below_one)
    row_loss = row_coef * log_sum - row_dot
    grad_coef = row_coef  # what the softmax is multiplied by in the gradient
    if z_coef:
        lse = row_max.astype(np.float64) + log_sum  # of the (capped) logits
        # d/dx_c z lse^2 = 2 z lse softmax_c
        row_loss = row_loss + z_coef * np.square(lse)
        grad_coef = row_coef + (2.0 * z_coef) * lse
    if kept is not None:
        row_loss = np.where(kept, row_loss, 0.0)
    grad_scale = 1.0 / np.float64(denominator) if reduction == "mean" else 1.0
    value = None
    if want_value:
        if reduction == "none":
            value = row_loss.astype(dtype)
        else:
            value = dtype.type(np.sum(row_loss) * grad_scale)
    if hess is not None:
        _cross_entropy_hess(hess, exp, sum_exp, grad_coef * grad_scale,
                            2.0 * z_coef * grad_scale)
    if grad is None:
        return value
    # softmax(x) sum_k w_k q_k - w q, times the reduction's scale
    row_scale = grad_coef * grad_scale / sum_exp
    if not soft and not smoothing:
        # The label's gradient, (c s_label - w_label) times the scale, as 2 z lse
        # e_label / sum - w_label (rest / sum) in float64, rest the other classes' sum
        # of exps: s_label - 1 in the logits' dtype cancels in a confident row (1.3 %
        # off for a logit 20 above 999 zeros, 0 instead of -1.4e-8 at 25). The max's
        # exp is 1: there rest is the 1s beyond it plus the others' sum (as log_sum's).
        # (With label smoothing the target is below 1: nothing cancels.)
        label_exp = exp[row_index, label].astype(np.float64)
        rest = sum_exp - label_exp
        if confident.any():
            others = (np.rint(sum_exp[confident] - below_one) - 1.0) + below_one
            rest[confident] = np.where(label_exp[confident] == 1.0, others,
                                       rest[confident])
        z_grad = (2.0 * z_coef) * lse if z_coef else 0.0
        # (rest / sum first: w_label rest overflowed where w_label (1 - s_label) does not)
        label_grad = (z_grad * (label_exp / sum_exp) - row_coef * (rest / sum_exp)) * grad_scale
    _scale_rows(exp, row_scale)
    if soft:
        exp -= wq * grad_scale
        _softcap_chain(exp, cap_tanh, slope, hess, softcap)
        return value
    # every row ignored: 0 * inf here, zeroed below; a float64 label gradient beyond the
    # dtype's largest finite is inf, as the scaled softmax beside it may be
    if smoothing:
        exp[row_index, label] -= (1.0 - smoothing) * label_weight * grad_scale
    else:  # (an overflowed scale keeps the plain form: see _scale_rows)
        exp[row_index, label] = np.where(
            np.isfinite(row_scale), label_grad,
            exp[row_index, label] - label_weight * grad_scale)
    if smoothing:
        spread_scale = (smoothing / classes) * grad_scale
        if class_weight is None:
            exp -= (spread_scale * kept)[:, None]
        else:
            exp -= np.multiply.outer(spread_scale * kept, class_weight)
    _softcap_chain(exp, cap_tanh, slope, hess, softcap)
    if not kept.all():  # ignored rows: exactly 0, even for non-finite logits (after
        # softcap's chain rule, whose 1 - tanh^2 of a NaN logit is NaN)
        exp[~kept] = 0.0
        if hess is not None:
            hess[~kept] = 0.0
    return value


def times(k, v):
    """k v, with 0 where k = 0 and v is infinite: a term of coefficient 0 contributes
    nothing, which is each loss's limit at an infinite prediction (0 log 0 = 0 likewise;
    a softmax of 0 times an overflowed coefficient); NaN stays NaN."""
    return np.where((k == 0) & np.isinf(v), 0.0, k * v)


def _scale_rows(a, scale):
    """Each row of ``a`` times its ``scale``, in place. Where a scale overflowed (the
    z-loss's 2 zc lse at logits near the dtype's largest, or infinite), an element of 0
    (a softmax of 0) stays 0, its limit, not 0 * inf = NaN; a NaN scale gives NaN."""
    # (a result may overflow: inf)
    if np.isinf(scale).any():
        np.copyto(a, times(a, scale[:, None]))
    else:
        np.multiply(a, scale[:, None], out=a)


def _cross_entropy_hess(hess, exp, sum_exp, coef, z_coef):
    """The diagonal Hessian in the (capped) logits, times the reduction's scale, from
    exp = exp(x - max) and its row sums: with c = coef (+ 2 zc lse with the z-loss) and
    the z-loss's 2 zc, d^2/dx_c^2 = c s_c (1 - s_c) + 2 zc s_c^2, s = softmax(x).
    1 - s_c is exact where it matters: only the largest class of a row can have s_c > 1/2,
    and there it is the sum of the other classes' exps over the row's sum (1 - s_c would
    round to 0 once s_c is within an ulp of 1)."""
    rows = np.arange(exp.shape[0])
    top = np.argmax(exp, axis=1)
    top_exp = exp[rows, top]
    exp[rows, top] = 0  # the others' sum, summed without the top term, then put back
    rest = np.sum(exp, axis=1, dtype=np.float64)
    exp[rows, top] = top_exp
    np.multiply(exp, (1.0 / sum_exp)[:, None], out=hess)  # s
    # (s^2 in float64 where 2 zc is beyond the dtype, a z-loss near its largest: inf times
    # an s^2 of 0 would be NaN)
    wide = z_coef and abs(z_coef) > np.finfo(hess.dtype).max
    square = np.square(hess, dtype=np.float64 if wide else hess.dtype) if z_coef else None
    hess *= np.subtract(1.0, hess)
    top_exp = top_exp.astype(np.float64)
    hess[rows, top] = top_exp * rest / np.square(sum_exp)
    _scale_rows(hess, coef)
    if z_coef:
        square *= z_coef
        hess += square


def _softcap_chain(grad, cap_tanh, slope, hess=None, softcap=None):
    """The chain rule through softcap tanh(x / softcap) = softcap t: d/dx = 1 - t^2
    (``slope``), and for the Hessian d^2/dx^2 = -2 t (1 - t^2) / softcap times the gradient
    before this chain."""
    if cap_tanh is not None:
        if hess is not None:
            hess *= np.square(slope)
            cap_tanh *= slope
            cap_tanh *= grad
            hess -= cap_tanh * cap_tanh.dtype.type(2.0 / softcap)
        np.multiply(grad, slope, out=grad)


@quiet
@bad_labels_as_nan
@half_in_float32
def multiclass_hinge(labels, x, weight, params, reduction, scale, grad, want_value, hess=None):
    """Crammer-Singer: max(0, m + max_{j != y} s_j - s_y) per row; gradient +1 at the best
    other class j (the lowest index at ties), -1 at y, where the loss is positive."""
    margin, _, given_denominator = params
    rows, classes = x.shape
    dtype = x.dtype
    bad = (labels < 0) | (labels >= classes)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise label_error(int(labels[row]), row, classes, loss="multiclass_hinge")
    row_index = np.arange(rows)
    true = x[row_index, labels]
    others = x.copy()  # the label's own score out of the max (grad may be x: read it first)
    others[row_index, labels] = -np.inf
    best = others.max(axis=1)  # NaN if any other score is NaN
    # the first other class at that max (never the label's own column: in a row of -inf
    # scores it ties with the others)
    at_best = others == best[:, None]
    at_best[row_index, labels] = False
    best_class = np.argmax(at_best, axis=1)
    # equal infinite scores count as equal (as cross_entropy's max): 0, not inf - inf
    gap = np.where(best == true, dtype.type(0), best - true)
    slack = (dtype.type(margin) + gap).astype(dtype)
    if classes == 1:  # no other class: nothing to beat (NaN stays NaN)
        slack = np.where(np.isnan(true), true, dtype.type(-np.inf))
    nan = np.isnan(slack)
    if hess is not None:  # piecewise linear: 0 away from the kinks (and 0 at them)
        hess.fill(0)
        hess[nan] = np.nan
    if grad is not None:
        row_scale = np.full(rows, 1.0) if weight is None else weight.astype(np.float64)
        if reduction == "mean":
            row_scale /= rows if given_denominator is None else given_denominator
        active = slack > 0
        grad.fill(0)
        grad[row_index[active], best_class[active]] = row_scale[active]
        grad[row_index[active], labels[active]] = -row_scale[active]
        grad[nan] = np.nan  # a NaN score makes its row NaN
    if not want_value:
        return None
    losses = np.maximum(slack, dtype.type(0))  # NaN stays NaN
    if weight is not None:  # a weight of 0 costs nothing, even against an infinite slack
        losses = np.where((weight == 0) & np.isinf(losses), dtype.type(0), losses * weight)
    if reduction == "none":
        return losses
    total = np.sum(losses, dtype=np.float64)
    if reduction == "mean":
        total /= rows if given_denominator is None else given_denominator
    return dtype.type(total)

