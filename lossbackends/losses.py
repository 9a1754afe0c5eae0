"""The losses (``LOSSES``), and the seed's drop-ins.

Each loss is one ``Loss`` object with its formula, in the module of its family:
``_losses_regression`` (an error p - y), ``_losses_binary`` (a binary target),
``_losses_classes`` (a class axis or a target distribution). Each backend states the
mathematics once per loss in its own module (``lossbackends/backends/*``,
``kernels/*.cu``); the options are checked once, in ``_prepare.py`` (``_prepare_rows.py``
for a class axis).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._dispatch import device_of
from ._loss import Loss
from ._losses_binary import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    hinge,
    sigmoid_focal,
    soft_margin,
    squared_hinge,
)
from ._losses_classes import cross_entropy, kl_div, multiclass_hinge
from ._losses_regression import huber, log_cosh, mae, mse, pinball, poisson_nll, smooth_l1

LOSSES = {
    loss.name: loss
    for loss in (mse, binary_cross_entropy, binary_cross_entropy_with_logits, cross_entropy, hinge,
                 mae, huber, smooth_l1, log_cosh, squared_hinge, soft_margin, sigmoid_focal,
                 poisson_nll, kl_div, pinball, multiclass_hinge)
}


# --- the seed's functions, same names, signatures and results --------------------------
# On host arrays they run on the NumPy backend, whose sums are NumPy's own (pairwise), and
# divide the sum by n as np.mean does (the losses' "mean" multiplies by 1 / n, which
# differs in the last bit about one time in five), so for float64 inputs they return the
# seed's results to the last bit; GPU arrays stay on the GPU. Binary cross-entropy's takes
# the seed's formula itself there: the loss takes log1p(-p), the seed log(1 - p).


def _seed_mean(loss: Loss, y_true: Any, y_pred: Any, **options: Any) -> Any:
    """np.mean of ``loss``'s elements, as the seed takes it: their pairwise sum over n."""
    backend = "cupy" if device_of(y_pred) == "cuda" else "numpy"
    total = loss(y_true, y_pred, reduction="sum", backend=backend, **options)
    shape = getattr(y_pred, "shape", None)  # every array library's; np.shape for lists
    size = math.prod(np.shape(y_pred) if shape is None else shape)
    if size == 0:  # the loss's own mean: NaN, with its warning
        return loss(y_true, y_pred, backend=backend, **options)
    return total / size


def mse_loss(y_true: Any, y_pred: Any) -> Any:
    """The seed's ``np.mean((y_true - y_pred) ** 2)``.

    >>> import numpy as np, lossbackends as lb
    >>> float(lb.mse_loss(np.array([3, -0.5, 2, 7]), np.array([2.5, 0.0, 2, 8])))
    0.375
    """
    return _seed_mean(mse, y_true, y_pred)


def _plain_host(x: Any) -> bool:
    """A NumPy array (not a subclass), a NumPy or Python number, or a list or tuple."""
    return type(x) is np.ndarray or isinstance(x, (np.generic, list, tuple, int, float))


def binary_cross_entropy_loss(y_true: Any, y_pred: Any) -> Any:
    """The seed's binary cross-entropy, ``epsilon = 1e-15``.

    Computed in float64 on the host (NumPy arrays, lists and numbers, of one shape), as the
    seed computes it: ``-mean(y log(pc) + (1 - y) log(1 - pc))``, its results to the last
    bit. :data:`binary_cross_entropy` takes ``log(1 - pc)`` as ``log1p(-pc)``, which keeps
    the digits of a small ``p`` that ``1 - pc`` rounds away (in float64 the seed's term is
    3e-4 off at ``p = 1e-13``, 1e-15 at ``p = 1e-3``): every other input (float32, GPU,
    PyTorch, JAX, Dask arrays) gets that loss's mean, by the library's rules, as the other
    drop-ins do.

    >>> import numpy as np, lossbackends as lb
    >>> float(lb.binary_cross_entropy_loss(np.array([0, 1, 1, 0]), np.array([0.1, 0.8, 0.9, 0.2])))
    0.164252033486018
    """
    if _plain_host(y_true) and _plain_host(y_pred):
        y, p = np.asarray(y_true), np.asarray(y_pred)
        if (p.dtype == np.float64 or p.dtype.kind in "biu") and y.dtype.kind in "biuf" and (
                y.shape == p.shape):
            epsilon = 1e-15
            p = np.clip(p, epsilon, 1 - epsilon)
            return -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    return _seed_mean(binary_cross_entropy, y_true, y_pred, eps=1e-15)


def hinge_loss(y_true: Any, y_pred: Any) -> Any:
    """The seed's ``np.mean(np.maximum(0, 1 - y_true * y_pred))``.

    >>> import numpy as np, lossbackends as lb
    >>> float(lb.hinge_loss(np.array([-1, 1, 1, -1]), np.array([-1.5, 1.2, 0.9, -0.8])))
    0.07499999999999998
    """
    return _seed_mean(hinge, y_true, y_pred, margin=1.0)
