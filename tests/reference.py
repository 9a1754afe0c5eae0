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
        value = -(y * np.log(pc) + (1 - y) * np.log1p(-pc))
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
    elif loss in SECOND_SET:
        value, grad = SECOND_SET[loss](y, p, **options)
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
        # log(sum exp z) as log1p of the others' sum plus the 1s beyond the first: a sum
        # 1 + e rounds e to float64's ulp of 1 (a confident row's loss 1e-40 came out 0)
        others = shifted[~(z == 0)].sum()  # (NaN kept)
        log_sum = np.log1p((np.count_nonzero(z == 0) - 1) + others)
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


def _tanh_slope(u):
    """1 - tanh(u)^2 as 1 / cosh(u)^2: no cancellation near |tanh| = 1 (0 where cosh
    overflows, the limit)."""
    with np.errstate(over="ignore"):
        return 1 / np.cosh(u) ** 2


def cross_entropy_liger(labels, logits, *, reduction="mean", class_weight=None, ignore_index=-100,
                        label_smoothing=0.0, z_loss=0.0, softcap=None):
    """(value, gradient) of cross-entropy with Liger-Kernel's z_loss and softcap, class
    indices, (rows, classes) logits, float64, row by row: the capped logits' loss plus
    z lse^2 per kept row; "mean" divides the cross-entropy by the kept rows' summed class
    weights and the z-loss by their count. The gradient by the chain rule, each row's
    formula written out (not derived from the loss by a library)."""
    x = np.asarray(logits, np.float64)
    rows, classes = x.shape
    w = np.ones(classes) if class_weight is None else np.asarray(class_weight, np.float64)
    capped = x if softcap is None else softcap * np.tanh(x / softcap)
    slope = np.ones_like(x) if softcap is None else _tanh_slope(x / softcap)
    ce, zl = np.zeros(rows), np.zeros(rows)
    ce_grad, z_grad = np.zeros_like(x), np.zeros_like(x)
    weight_sum, count = 0.0, 0
    for i in range(rows):
        y = int(labels[i])
        if y == ignore_index:
            continue
        row = capped[i]
        # lse as the max plus log1p of the others' sum (the max's own 1 apart): log(1 +
        # others) keeps only the bits of others that 1 + others kept, and a confident
        # row's lse, near 0, is the z-loss's gradient coefficient
        shifted = np.exp(row - row.max())
        lse = row.max() + np.log1p(np.delete(shifted, np.argmax(row)).sum())
        softmax = np.exp(row - lse)
        q = np.full(classes, label_smoothing / classes)
        q[y] += 1 - label_smoothing
        ce[i] = np.sum(w * q * (lse - row))
        ce_grad[i] = softmax * np.sum(w * q) - w * q
        zl[i] = z_loss * lse**2
        z_grad[i] = 2 * z_loss * lse * softmax
        weight_sum += w[y]
        count += 1
    if reduction == "none":
        return ce + zl, (ce_grad + z_grad) * slope
    if reduction == "sum":
        return (ce + zl).sum(), (ce_grad + z_grad) * slope
    return (ce.sum() / weight_sum + zl.sum() / count,
            (ce_grad / weight_sum + z_grad / count) * slope)


def confident_rows(classes, dtype):
    """(logits of 3 rows, their labels): each label well above zeros (20, 25, 14), rows
    whose label's softmax is near 1."""
    x = np.zeros((3, classes), dtype)
    x[0, 3], x[1, 3], x[2, 5] = 20.0, 25.0, 14.0
    return x, np.array([3, 3, 5])


def label_gradient(labels, logits, *, z_loss=0.0, class_weight=None, softcap=None):
    """Cross-entropy's gradient at each row's label ("sum"), in float64, without s - 1:
    -(1 - s) with 1 - s = rest / (1 + rest), rest = sum of exp(x_c - x_label) over the
    other classes; with the z-loss 2 z lse s - (1 - s); times the label's class weight;
    with softcap the same in the capped logits, times 1 - tanh^2 at the label."""
    x = np.asarray(logits, np.float64)
    rows = np.arange(len(labels))
    capped = x if softcap is None else softcap * np.tanh(x / softcap)
    top = capped[rows, labels]
    others = np.arange(x.shape[1]) != labels[:, None]
    rest = np.exp(capped - top[:, None]).sum(axis=1, where=others)
    share = rest / (1.0 + rest)  # 1 - s_label
    grad = 2 * z_loss * (top + np.log1p(rest)) * (1.0 - share) - share
    if class_weight is not None:
        grad = grad * np.asarray(class_weight, np.float64)[labels]
    if softcap is not None:
        grad = grad * _tanh_slope(x[rows, labels] / softcap)
    return grad


def multiclass_hinge(labels, scores, *, reduction="mean", weight=None, margin=1.0):
    """(value, gradient) of the Crammer-Singer multiclass hinge, (rows, classes) scores,
    float64, row by row."""
    s = np.asarray(scores, np.float64)
    rows, classes = s.shape
    w = np.ones(rows) if weight is None else np.broadcast_to(np.asarray(weight, np.float64), rows)
    losses = np.zeros(rows)
    grad = np.zeros_like(s)
    for i in range(rows):
        y = int(labels[i])
        best_j, best = None, -np.inf
        for j in range(classes):  # the first of equal maxima
            if j != y and (best_j is None or s[i, j] > best):
                best_j, best = j, s[i, j]
        if best_j is None:
            continue
        slack = margin + best - s[i, y]
        if slack > 0:
            losses[i] = w[i] * slack
            grad[i, best_j] += w[i]
            grad[i, y] -= w[i]
    if reduction == "mean":
        grad /= rows
    return _reduce(losses, reduction), grad
# --- the second set: (per-element loss, derivative) in float64 from the peers' definitions


def _expit(z):
    return 0.5 * (1 + np.tanh(z / 2))


def _mae(y, p):
    return np.abs(p - y), np.sign(p - y)


def _huber(y, p, delta=1.0):  # optax's huber_loss
    e = p - y
    quadratic = np.minimum(np.abs(e), delta)
    linear = np.abs(e) - quadratic
    return 0.5 * quadratic**2 + delta * linear, np.where(np.abs(e) <= delta, e, delta * np.sign(e))


def _smooth_l1(y, p, beta=1.0):  # torch's smooth_l1_loss
    e = p - y
    if beta == 0:
        return np.abs(e), np.sign(e)
    small = np.abs(e) < beta
    return (np.where(small, 0.5 * e**2 / beta, np.abs(e) - 0.5 * beta),
            np.where(small, e / beta, np.sign(e)))


def _log_cosh(y, p):  # optax's log_cosh
    e = p - y
    return np.logaddexp(e, -e) - np.log(2.0), np.tanh(e)


def _squared_hinge(y, p, margin=1.0):  # Keras's, labels +-1
    slack = np.maximum(margin - y * p, 0.0)
    return slack**2, -2 * y * slack


def _soft_margin(y, p):
    return np.logaddexp(0, -y * p), -y * _expit(-y * p)


def _sigmoid_focal(y, x, alpha=0.25, gamma=2.0):
    # torchvision: ce (1 - p_t)^gamma, times alpha_t; the derivative by the product rule
    p = _expit(x)
    ce = np.logaddexp(0, x) - x * y
    p_t = p * y + (1 - p) * (1 - y)
    alpha_t = 1.0 if alpha is None else alpha * y + (1 - alpha) * (1 - y)
    dp_t = p * (1 - p) * (2 * y - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        dmod = np.where(gamma == 0, 0.0, -gamma * (1 - p_t) ** (gamma - 1) * dp_t)
    return alpha_t * (1 - p_t) ** gamma * ce, alpha_t * (dmod * ce + (1 - p_t) ** gamma * (p - y))


def _poisson_nll(y, x, log_input=True, full=False, eps=1e-8):  # torch's poisson_nll_loss
    if log_input:
        value, grad = np.exp(x) - y * x, np.exp(x) - y
    else:
        value, grad = x - y * np.log(x + eps), 1 - y / (x + eps)
    if full:
        safe = np.where(y > 1, y, 2.0)
        value = value + np.where(y > 1, safe * np.log(safe) - safe + 0.5 * np.log(2 * np.pi * safe), 0)
    return value, grad


def _kl_div(y, x, log_target=False):  # torch's kl_div, elementwise
    if log_target:  # a target of probability 0 costs nothing
        with np.errstate(invalid="ignore"):
            return np.where(np.exp(y) > 0, np.exp(y) * (y - x), 0.0), -np.exp(y)
    safe = np.where(y > 0, y, 1.0)
    return np.where(y > 0, y * np.log(safe), 0.0) - y * x, -y


def _pinball(y, p, quantile=0.5):  # scikit-learn's mean_pinball_loss, per element
    value = quantile * np.maximum(y - p, 0) + (1 - quantile) * np.maximum(p - y, 0)
    return value, np.where(p > y, 1 - quantile, np.where(p < y, -quantile, 0.0))


SECOND_SET = {"mae": _mae, "huber": _huber, "smooth_l1": _smooth_l1, "log_cosh": _log_cosh,
              "squared_hinge": _squared_hinge, "soft_margin": _soft_margin,
              "sigmoid_focal": _sigmoid_focal, "poisson_nll": _poisson_nll, "kl_div": _kl_div,
              "pinball": _pinball}


# --- the seed document's three functions, as written there: the drop-ins' oracle --------


def seed_mse_loss(y_true, y_pred):
    return np.mean((y_true - y_pred) ** 2)


def seed_binary_cross_entropy_loss(y_true, y_pred):
    epsilon = 1e-15
    y_pred = np.clip(y_pred, epsilon, 1 - epsilon)
    return -np.mean(y_true * np.log(y_pred) + (1 - y_true) * np.log(1 - y_pred))


def seed_hinge_loss(y_true, y_pred):
    return np.mean(np.maximum(0, 1 - y_true * y_pred))
