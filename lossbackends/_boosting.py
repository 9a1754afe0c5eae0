"""What the XGBoost and LightGBM objectives share: a loss's per-sample gradient and Hessian
(``grad_and_hess`` with ``reduction="sum"``, one fused pass), put in a library's conventions.

Each library module (``lossbackends.xgboost``, ``lossbackends.lightgbm``) states its
conventions once per loss in a ``CONVENTIONS`` table; a loss missing from it gets its own
derivatives, unscaled. Neither library is imported here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _dispatch
from ._loss import Loss

# Losses whose true Hessian is 0 almost everywhere: a boosting objective gives them the
# sample weight as Hessian (LightGBM's L1 and XGBoost's absolute error do the same), so
# that each leaf takes a bounded gradient step. The catalogue's piecewise-linear losses
# go here.
PIECEWISE_LINEAR = frozenset({"hinge"})


def _signs(y: Any) -> Any:
    """Labels 0/1 (what the libraries' classifiers pass) as -1/+1; ±1 stay."""
    return (y > 0) * 2.0 - 1.0


@dataclass(frozen=True)
class Convention:
    """How a library's own objective scales a loss's per-sample derivatives: ``grad`` and
    ``hess`` multiply ours (``hess`` may be a function of the class count), ``labels``
    maps the library's labels to the loss's."""

    grad: float = 1.0
    hess: float | Callable[[int], float] = 1.0
    labels: Callable[[Any], Any] | None = None


HINGE = Convention(labels=_signs)


@dataclass
class Objective:
    """A loss made a custom objective: ``derivatives(labels, preds, weight)`` gives the
    per-sample ``(grad, hess)`` shaped like ``preds``. The library modules wrap it in the
    callables their training functions take."""

    loss: Loss
    options: dict
    convention: Convention
    floor: float  # the smallest Hessian (times the weight): the library's own

    def derivatives(self, labels: Any, preds: Any, weight: Any = None) -> tuple[Any, Any]:
        loss, convention = self.loss, self.convention
        xp = np
        if _dispatch.device_of(preds) == "cuda":  # GPU predictions stay there
            import cupy as xp

            labels = xp.asarray(labels)  # the labels (small) follow them, never the reverse
            weight = None if weight is None else xp.asarray(weight)
        else:
            preds = np.asarray(preds)
        labels = xp.asarray(labels)
        if weight is not None and weight.size == 0:  # libraries pass an empty array: none
            weight = None
        if convention.labels is not None:
            labels = convention.labels(labels)
        options = dict(self.options)
        if loss._class_indices:
            if preds.ndim != 2:
                raise ValueError(
                    f"{loss.name} needs (n_samples, n_classes) predictions; got shape "
                    f"{preds.shape}: set num_class (XGBoost) or num_class with a multiclass "
                    "objective (LightGBM)"
                )
            labels = labels.astype(np.int64)
        else:
            labels = labels.reshape(preds.shape).astype(preds.dtype, copy=False)
            if weight is not None:
                weight = weight.astype(preds.dtype, copy=False)
                options["weight"] = weight if preds.ndim == 1 else weight.reshape(-1, 1)
        grad, hess = loss.grad_and_hess(labels, preds, reduction="sum", **options)
        sample_weight = None if weight is None else (weight if grad.ndim == 1 else weight[:, None])
        if loss._class_indices and weight is not None:  # no per-sample weight option: here
            grad *= sample_weight
            hess *= sample_weight
        if loss.name in PIECEWISE_LINEAR:
            hess[...] = 1.0 if sample_weight is None else sample_weight
        else:
            factor = convention.hess(preds.shape[-1]) if callable(convention.hess) else convention.hess
            if factor != 1.0:
                hess *= factor
            if self.floor:
                floor = self.floor if sample_weight is None else self.floor * sample_weight
                xp.maximum(hess, floor, out=hess)
        if convention.grad != 1.0:
            grad *= convention.grad
        return grad, hess


def make(loss: Loss | str, options: dict, conventions: dict[str, Convention],
         floor: float) -> Objective:
    """The ``Objective`` of ``loss`` (a ``Loss`` or its name) under a library's conventions;
    the options are checked now, on a tiny input, so a typo fails here, not mid-training."""
    from .losses import LOSSES

    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(sorted(LOSSES))}")
        loss = LOSSES[loss]
    if not isinstance(loss, Loss):
        raise TypeError(f"loss must be a lossbackends loss (e.g. lossbackends.mse) or its name, "
                        f"not {type(loss).__name__}")
    for name in ("reduction", "out", "weight"):
        if name in options:
            raise TypeError(f"{name}= is set by the objective (per-sample derivatives; the "
                            "library passes the sample weights); leave it out")
    if loss._class_indices:
        class_weight = options.get("class_weight")
        classes = 2 if class_weight is None else int(np.size(class_weight))
        loss._prepare(np, np.zeros(1, np.int64), np.zeros((1, classes)),
                      **{k: v for k, v in options.items() if k != "backend"})
    else:
        loss._prepare(np, np.zeros(1), np.zeros(1),
                      **{k: v for k, v in options.items() if k not in ("backend", "pos_weight")})
    return Objective(loss, dict(options), conventions.get(loss.name, Convention()), floor)
