"""The NumPy backend: the readable reference.

Each kernel computes what was asked (value, gradient or both) sharing the work between
them, writes into the gradient buffer with ``out=`` instead of making temporaries, and
accumulates sums in float64 (pairwise) whatever the input dtype.
"""

from __future__ import annotations

import numpy as np

from .. import _dispatch
from ._host import bad_labels_as_nan, half_in_float32, label_error

xp = np


def _reduce(losses, weight, reduction, scale, dtype):
    """Weight the per-element losses in place and reduce them; the value in ``dtype``."""
    if weight is not None:
        np.multiply(losses, weight, out=losses)
    if reduction == "none":
        return losses
    return dtype.type(np.sum(losses, dtype=np.float64) * scale)


def _finish_grad(grad, weight, scale):
    if weight is not None:
        np.multiply(grad, weight, out=grad)
    if scale != 1.0:
        np.multiply(grad, scale, out=grad)


@half_in_float32
def mse(y, p, weight, params, reduction, scale, grad, want_value, hess=None):
    diff = np.subtract(p, y, out=grad)  # the gradient buffer holds p - y (p may be grad)
    value = _reduce(np.square(diff), weight, reduction, scale, p.dtype) if want_value else None
    if grad is not None:
        np.multiply(grad, 2.0, out=grad)
        _finish_grad(grad, weight, scale)
    if hess is not None:
        hess.fill(2.0)  # 2 w, times the scale
        _finish_grad(hess, weight, scale)
    return value


@half_in_float32
def binary_cross_entropy(y, p, weight, params, reduction, scale, grad, want_value, hess=None):
    (eps,) = params
    pc = np.clip(p, eps, 1.0 - eps)
    value = None
    if want_value:
        # -(y log pc + (1 - y) log(1 - pc)), written as the seed writes it: its exact results
        losses = np.log(pc)
        losses *= y
        log_1mp = np.subtract(1.0, pc)
        np.log(log_1mp, out=log_1mp)
        log_1mp *= np.subtract(1.0, y)
        losses += log_1mp
        np.negative(losses, out=losses)
        value = _reduce(losses, weight, reduction, scale, p.dtype)
    if grad is not None:
        # (pc - y) / (pc (1 - pc))
        denominator = np.subtract(1.0, pc)
        np.multiply(denominator, pc, out=denominator)
        np.subtract(pc, y, out=grad)
        np.divide(grad, denominator, out=grad)
        _finish_grad(grad, weight, scale)
    if hess is not None:
        # y / pc^2 + (1 - y) / (1 - pc)^2: two terms >= 0 for y in [0, 1], no cancellation
        np.divide(y, np.square(pc), out=hess)
        rest = np.subtract(1.0, pc)
        np.square(rest, out=rest)
        np.divide(np.subtract(1.0, y), rest, out=rest)
        hess += rest
        _finish_grad(hess, weight, scale)
    return value


@half_in_float32
def binary_cross_entropy_with_logits(y, p, weight, params, reduction, scale, grad, want_value,
                                     hess=None):
    (pos_weight,) = params
    t = np.exp(-np.abs(p))  # exp(-|x|) in (0, 1]: never overflows
    # log weight 1 + (q - 1) y multiplies softplus(-x) in the value and sigma(x) in the grad
    log_weight = None if pos_weight is None else 1.0 + (pos_weight - 1.0) * y
    value = None
    if want_value:
        # (1 - y) x + lw softplus(-x), softplus(-x) = max(-x, 0) + log1p(exp(-|x|))
        softplus = np.log1p(t)
        softplus += np.maximum(-p, 0.0)
        if log_weight is not None:
            softplus *= log_weight
        losses = np.subtract(1.0, y)
        losses *= p
        losses += softplus
        value = _reduce(losses, weight, reduction, scale, p.dtype)
    if grad is not None:
        # sigma(x) = 1 / (1 + t) for x >= 0, t / (1 + t) for x < 0
        sigma = np.where(p >= 0, 1.0, t)
        sigma /= 1.0 + t
        if log_weight is None:
            np.subtract(sigma, y, out=grad)  # sigma(x) - y
        else:
            sigma *= log_weight
            np.subtract(sigma, pos_weight * y, out=grad)  # lw sigma(x) - q y
        _finish_grad(grad, weight, scale)
    if hess is not None:
        # lw sigma(x) sigma(-x) = lw t / (1 + t)^2: no 1 - sigma to cancel (t is read only:
        # p may be grad, already overwritten)
        square = np.add(1.0, t)
        np.multiply(square, square, out=square)
        np.divide(t, square, out=hess)
        if log_weight is not None:
            hess *= log_weight
        _finish_grad(hess, weight, scale)
    return value


@half_in_float32
def hinge(y, p, weight, params, reduction, scale, grad, want_value, hess=None):
    (margin,) = params
    slack = np.multiply(y, p)
    np.subtract(margin, slack, out=slack)  # margin - t s
    if grad is not None:
        active = slack > 0
        grad.fill(0)
        np.negative(y, out=grad, where=active)  # -t where the margin is violated, else 0
        _finish_grad(grad, weight, scale)
    if hess is not None:
        hess.fill(0.0)  # piecewise linear: 0 away from the kink (and 0 at it)
        _finish_grad(hess, weight, scale)
    if not want_value:
        return None
    return _reduce(np.maximum(slack, 0.0, out=slack), weight, reduction, scale, p.dtype)


@half_in_float32
def cross_entropy(target, x, class_weight, params, reduction, scale, grad, want_value,
                  hess=None):
    ignore_index, smoothing, _, given_denominator = params
    rows, classes = x.shape
    dtype = x.dtype
    soft = target.ndim == 2
    row_index = np.arange(rows)

    # Everything that needs the logits themselves comes first: grad may be x (out=x).
    row_max = x.max(axis=1)
    row_max[row_max == -np.inf] = 0.0  # an all -inf row: exp(x - 0) = 0, no NaN from inf - inf
    if soft:
        q = target * (1.0 - smoothing) + smoothing / classes if smoothing else target
        wq = q * class_weight if class_weight is not None else q
        row_coef = np.sum(wq, axis=1, dtype=np.float64)  # sum_c w_c q_c
        # sum_c w_c q_c x_c with 0 * (-inf) = 0: a class of zero probability costs nothing
        with np.errstate(invalid="ignore"):  # the masked products are never used
            row_dot = np.sum(np.where(wq == 0, 0.0, wq * x), axis=1, dtype=np.float64)
        kept = None
        denominator = rows if given_denominator is None else given_denominator
    else:
        kept = target != ignore_index
        bad = kept & ((target < 0) | (target >= classes))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise label_error(int(target[row]), row, classes)
        label = np.where(kept, target, 0)
        label_weight = kept.astype(np.float64)
        if class_weight is not None:
            label_weight *= class_weight[label]
        weight_sum = float(class_weight.sum(dtype=np.float64)) if class_weight is not None else classes
        # (1 - e) w_y (lse - x_y) + (e / C) sum_c w_c (lse - x_c)
        row_coef = (1.0 - smoothing) * label_weight
        row_dot = row_coef * x[row_index, label]
        if smoothing:
            spread = (smoothing / classes) * kept
            row_coef += spread * weight_sum
            x_sum = x @ class_weight if class_weight is not None else x.sum(axis=1, dtype=np.float64)
            row_dot += spread * x_sum
        denominator = (float(label_weight.sum()) if given_denominator is None
                       else given_denominator)

    exp = np.subtract(x, row_max[:, None], out=grad if grad is not None else None)
    np.exp(exp, out=exp)  # each exp once; the gradient buffer holds exp(x - max)
    sum_exp = np.sum(exp, axis=1, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        lse = row_max + np.log(sum_exp)
        if kept is None:
            row_loss = row_coef * lse - row_dot
        else:
            row_loss = np.where(kept, row_coef * lse - row_dot, 0.0)
        grad_scale = 1.0 / np.float64(denominator) if reduction == "mean" else 1.0
        value = None
        if want_value:
            if reduction == "none":
                value = row_loss.astype(dtype)
            else:
                value = dtype.type(np.sum(row_loss) * grad_scale)
        if hess is not None:
            # coef softmax (1 - softmax), times the reduction's scale
            np.multiply(exp, (1.0 / sum_exp)[:, None], out=hess)
            hess *= np.subtract(1.0, hess)
            hess *= (row_coef * grad_scale)[:, None]
            if kept is not None and not kept.all():
                hess[~kept] = 0.0  # ignored rows: exactly 0, as their gradient
        if grad is None:
            return value
        # softmax(x) sum_k w_k q_k - w q, times the reduction's scale
        np.multiply(exp, (row_coef * grad_scale / sum_exp)[:, None], out=exp)
    if soft:
        exp -= wq * grad_scale
        return value
    with np.errstate(invalid="ignore"):  # every row ignored: 0 * inf here, zeroed below
        exp[row_index, label] -= (1.0 - smoothing) * label_weight * grad_scale
        if smoothing:
            spread_scale = (smoothing / classes) * grad_scale
            if class_weight is None:
                exp -= (spread_scale * kept)[:, None]
            else:
                exp -= np.multiply.outer(spread_scale * kept, class_weight)
    if not kept.all():
        exp[~kept] = 0.0  # ignored rows: gradient exactly 0, even for non-finite logits
    return value


KERNELS = {
    "mse": mse,
    "binary_cross_entropy": binary_cross_entropy,
    "binary_cross_entropy_with_logits": binary_cross_entropy_with_logits,
    "hinge": hinge,
    "cross_entropy": bad_labels_as_nan(cross_entropy),
}
_dispatch.register("numpy", KERNELS)
