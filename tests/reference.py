"""Float64 references, written independently of the backends: plain formulas, per row
loops where that is clearer. Inputs are NumPy arrays."""

from __future__ import annotations

import numpy as np


def _reduce(per_element, reduction, denominator=None):
    if reduction == "none":
        return per_element
    total = per_element.sum()
    if reduction == "sum":
        return total
    return total / (per_element.size if denominator is None else denominator)


def elementwise(loss, y, p, *, reduction="mean", weight=None, **options):
    """(value, gradient) of an elementwise loss in float64."""
    y = np.asarray(y, np.float64)
    p = np.asarray(p, np.float64)
    if loss == "mse":
        value, grad = (p - y) ** 2, 2 * (p - y)
    elif loss == "binary_cross_entropy":
        e = max(options.get("eps", 1e-15), options.get("dtype_eps", np.finfo(np.float64).eps))
        pc = np.clip(p, e, 1 - e)
        value = -(y * np.log(pc) + (1 - y) * np.log(1 - pc))
        grad = (pc - y) / (pc * (1 - pc))
    elif loss == "binary_cross_entropy_with_logits":
        q = options.get("pos_weight")
        q = 1.0 if q is None else np.asarray(q, np.float64)
        # -(q y log sigma(x) + (1 - y) log(1 - sigma(x))), logaddexp for stability
        value = q * y * np.logaddexp(0, -p) + (1 - y) * np.logaddexp(0, p)
        sigma = 0.5 * (1 + np.tanh(p / 2))
        grad = -q * y * (1 - sigma) + (1 - y) * sigma
        value, grad = np.broadcast_arrays(value, grad)
    elif loss == "hinge":
        m = options.get("margin", 1.0)
        value = np.maximum(0, m - y * p)
        grad = np.where(m - y * p > 0, -y, 0.0)
    else:
        raise KeyError(loss)
    if weight is not None:
        value = value * weight
        grad = grad * weight
    if reduction == "mean":
        grad = grad / p.size
    return _reduce(value, reduction), np.broadcast_to(grad, p.shape)


def cross_entropy(target, logits, *, reduction="mean", class_weight=None, ignore_index=-100,
                  label_smoothing=0.0, axis=-1):
    """(value, gradient) of softmax cross-entropy in float64, row by row."""
    x = np.moveaxis(np.asarray(logits, np.float64), axis, -1)
    classes = x.shape[-1]
    x2 = x.reshape(-1, classes)
    target = np.asarray(target)
    soft = target.shape == np.shape(logits)
    t2 = (np.moveaxis(target, axis, -1).reshape(-1, classes).astype(np.float64) if soft
          else target.reshape(-1))
    w = np.ones(classes) if class_weight is None else np.asarray(class_weight, np.float64)
    losses = np.zeros(len(x2))
    grads = np.zeros_like(x2)
    denominator = 0.0
    for i, row in enumerate(x2):
        # z = x - max(x), 0 where a logit equals the max (infinite ones too: the limit where
        # they grow together); the loss as sum_c w_c q_c (log sum exp z - z_c), terms >= 0
        m = row.max()
        with np.errstate(invalid="ignore"):
            z = np.where(row == m, 0.0, row - m)
        shifted = np.exp(z)
        log_sum = np.log(shifted.sum())
        softmax = shifted / shifted.sum()
        if soft:
            q = (1 - label_smoothing) * t2[i] + label_smoothing / classes
            denominator += 1
        else:
            if t2[i] == ignore_index:
                continue
            q = np.full(classes, label_smoothing / classes)
            q[t2[i]] += 1 - label_smoothing
            denominator += w[t2[i]]
        wq = w * q
        with np.errstate(invalid="ignore"):  # 0 * inf where a class has no mass: masked
            terms = np.where(wq == 0, 0.0, wq * (log_sum - z))
        losses[i] = terms.sum()
        grads[i] = softmax * wq.sum() - wq
    if reduction == "mean":
        grads /= denominator
    value = _reduce(losses, reduction, denominator)
    if reduction == "none":
        value = value.reshape(x.shape[:-1])
    grads = np.moveaxis(grads.reshape(x.shape), -1, axis)
    return value, grads
