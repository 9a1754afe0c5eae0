"""lossbackends: loss functions and their derivatives, fused and fast, on the arrays you have.

NumPy and CuPy arrays, PyTorch tensors and JAX arrays (results of the caller's own kind, on
its device), and Dask arrays (lazily, block by block).

>>> import lossbackends as lb
>>> value, grad = lb.mse.value_and_grad(y_true, y_pred)   # doctest: +SKIP

Backends: ``"numpy"`` (the reference), ``"numba"`` (JIT CPU kernels) and ``"cupy"`` (CUDA
kernels), chosen per call (``backend=``), per block (``use_backend``), by the environment
variable ``LOSSBACKENDS_BACKEND``, or by the arrays themselves (``auto``).
"""

from . import lightgbm, xgboost  # custom objectives (neither library is imported)
from ._buffers import empty_cache
from ._dispatch import available_backends, get_backend, use_backend
from ._loss import Loss
from .backends._host import LabelError  # a bad class index (a ValueError)
from .losses import (
    binary_cross_entropy,
    binary_cross_entropy_loss,
    binary_cross_entropy_with_logits,
    cross_entropy,
    hinge,
    hinge_loss,
    huber,
    kl_div,
    log_cosh,
    mae,
    mse,
    mse_loss,
    multiclass_hinge,
    pinball,
    poisson_nll,
    sigmoid_focal,
    smooth_l1,
    soft_margin,
    squared_hinge,
)

__version__ = "0.1.0"

__all__ = [
    "LabelError",
    "Loss",
    "available_backends",
    "binary_cross_entropy",
    "binary_cross_entropy_loss",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "empty_cache",
    "get_backend",
    "hinge",
    "hinge_loss",
    "huber",
    "kl_div",
    "lightgbm",
    "log_cosh",
    "mae",
    "mse",
    "mse_loss",
    "multiclass_hinge",
    "pinball",
    "poisson_nll",
    "sigmoid_focal",
    "smooth_l1",
    "soft_margin",
    "squared_hinge",
    "use_backend",
    "xgboost",
]
