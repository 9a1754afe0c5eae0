"""What the XGBoost and LightGBM objectives share: a loss's per-sample gradient and Hessian
(``grad_and_hess`` with ``reduction="sum"``, one fused pass), put in a library's conventions,
and the one callable both libraries' APIs take.

Each library module (``lossbackends.xgboost``, ``lossbackends.lightgbm``) states its
conventions once per loss in a ``CONVENTIONS`` table; a loss missing from it gets its own
derivatives, unscaled. Neither library is imported here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _dispatch, _prepare
from ._compute import _new_grad
from ._loss import Loss


def _weight_as_hessian(options: dict) -> float:
    return 1.0


def _smooth_l1_hessian(options: dict) -> float:
    beta = float(options.get("beta", 1.0))
    return 1.0 / beta if beta > 0 else 1.0


# Losses whose true Hessian is 0 almost everywhere (piecewise linear), 0 outside a
# quadratic zone, or vanishing: a boosting objective gives them a constant Hessian times
# the sample weight, so that every leaf takes a bounded step. The weight itself for the
# piecewise-linear ones (LightGBM's L1 and quantile objectives, XGBoost's absolute error);
# the quadratic zone's curvature for huber (LightGBM's Huber objective: 1) and smooth_l1
# (1 / beta, its huber / beta); 1 for log_cosh, whose sech^2(e) underflows for large
# residuals (0 in float32 at |e| ~ 50: nothing learned from a far start, or leaves of
# -G / 0) and never exceeds 1, so a Hessian of 1 majorises the loss and every Newton step
# goes downhill. By name: the options (beta) may set the constant.
CONSTANT_HESSIAN: dict[str, Callable[[dict], float]] = {
    **dict.fromkeys(("hinge", "multiclass_hinge", "mae", "pinball", "huber", "log_cosh"),
                    _weight_as_hessian),
    "smooth_l1": _smooth_l1_hessian,
}


# Losses that make no objective: their input is no margin, which a booster's trees add
# without bound. By name, with the loss to use instead.
NOT_OBJECTIVES = {
    "binary_cross_entropy": (
        "takes probabilities in (0, 1), and a booster's margins are unbounded: use "
        "binary_cross_entropy_with_logits, the same loss on margins (logits)"),
    "kl_div": (
        "takes log-probabilities, and a booster's margins are none: its gradient is the "
        "constant -y, so the margins grow without bound; use cross_entropy (softmax "
        "over num_class margins, class-index labels) or binary_cross_entropy_with_logits "
        "(one margin, labels in [0, 1]: probabilities too)"),
}

# Options under which a loss makes no objective, for the same reason: (name, option,
# value) -> what it takes, and what to use instead.
NOT_OBJECTIVE_OPTIONS = {
    ("poisson_nll", "log_input", False): (
        "takes rates > 0, and a booster's margins are unbounded: a negative rate's loss is "
        "NaN (and a label 0's Hessian is 0); use log_input=True (the default), the margin "
        "as the log-rate, as XGBoost's count:poisson and LightGBM's poisson do"),
}


# Losses whose labels are probabilities: XGBoost's binary:logistic ("label must be in [0,1]
# for logistic regression") and LightGBM's binary objective reject any other label, and so
# do these objectives (a label 2 or -1 would train without a word, on a loss that has no
# minimum there).
PROBABILITY_LABELS = frozenset(("binary_cross_entropy_with_logits", "sigmoid_focal"))


def _label_at(labels: Any, where: int, shape: tuple) -> tuple[Any, float]:
    """The label at flat position ``where`` of labels shaped ``shape``, as a message names
    it: ``(index, value)``, the index a tuple for 2-D labels."""
    index = where if len(shape) < 2 else tuple(map(int, np.unravel_index(where, shape)))
    return index, float(labels.reshape(-1)[where])


def _signs(y: Any, name: str) -> Any:
    """Labels 0/1 (what the libraries' classifiers pass) as -1/+1; -1/+1 stay. Any other
    label (2, 0.5, NaN), or 0 and -1 together, raises a ``ValueError`` naming the first.
    NumPy or CuPy labels (then one synchronisation)."""
    one = y == 1
    zero = y == 0
    if bool((one | zero).all()):
        # in y's dtype, not float64: check and map 1.9 ms at n = 1e6 (float32), the
        # unchecked float64 map (y > 0) * 2.0 - 1.0 that was here 2.7 ms; an unsigned or
        # bool y in float64 (0 * 2 - 1 would wrap to 255 in uint8)
        if y.dtype.kind in "ub":
            y = y.astype(np.float64)
        return y * 2 - 1
    minus = y == -1
    if bool((one | minus).all()):
        return y
    outside = ~(one | zero | minus)
    if bool(outside.any()):
        index, value = _label_at(y, int(outside.reshape(-1).argmax()), y.shape)  # the first
        fix = ("drop the samples whose label is missing" if value != value else
               "map two classes to 0/1 or -1/+1; more than two take multiclass_hinge (or "
               "cross_entropy) with num_class")
    else:  # 0 and -1 both: whichever comes second is named
        first_zero = int(zero.reshape(-1).argmax())
        first_minus = int(minus.reshape(-1).argmax())
        index, value = _label_at(y, max(first_zero, first_minus), y.shape)
        fix = "0 and -1 are both there: use 0/1 or -1/+1, not both"
    raise ValueError(f"{name} takes labels 0/1 (a classifier's) or -1/+1; label {value} at "
                     f"index {index} is not: {fix}")


@dataclass(frozen=True)
class Convention:
    """How a library's own objective scales a loss's per-sample derivatives: ``grad`` and
    ``hess`` multiply ours, ``labels`` maps the library's labels to the loss's (called with
    the labels and the loss's name; raises on a label it cannot map). ``hess`` is a number
    or a function of the class count (the predictions' columns, 1 for ``(n,)``) and the
    loss's options, for a factor that depends on them (LightGBM's softmax ``C / (C - 1)``).
    Module-level functions, not lambdas: an objective is pickled with its model."""

    grad: float = 1.0
    hess: float | Callable[[int, dict], float] = 1.0
    labels: Callable[[Any, str], Any] | None = None
    # a margin loss's Hessian where its margin is met (y p >= margin: the loss and its
    # gradient are 0 there), in place of the constant times the weight, unweighted:
    # XGBoost's binary:hinge gives float32's smallest normal there (hinge.cc), so that a
    # leaf of met margins takes no step
    margin_met_hess: float | None = None

    def hess_factor(self, classes: int, options: dict) -> float:
        """The Hessian's factor for predictions of ``classes`` columns (1 for ``(n,)``) and
        the loss's ``options``."""
        return self.hess(classes, options) if callable(self.hess) else self.hess


HINGE = Convention(labels=_signs)
# XGBoost's count:poisson and LightGBM's poisson objectives: (exp(x) - y, exp(x +
# max_delta_step)), max_delta_step (LightGBM's poisson_max_delta_step) 0.7 by default "to
# safeguard optimization" (regression_obj.cu, regression_objective.hpp): the true Hessian
# times exp(0.7), half the Newton step. It damps, no more: from margin 0 on load_diabetes
# (counts 25 to 346) one round overshot to margin 78 undamped, to 39 damped, as LightGBM's
# poisson does; start from log(mean y). XGBoost's count:poisson also caps each leaf at 0.7
# (the tree parameter max_delta_step, which it sets): a custom objective needs
# max_delta_step=0.7 in the parameters for that (xgboost.py's docstring). The margin is
# the log-rate (log_input=True; log_input=False is refused: NOT_OBJECTIVE_OPTIONS).
POISSON_HESSIAN = math.exp(0.7)


def _counts(y: Any, name: str) -> Any:
    """The Poisson objectives' labels, counts: a negative one raises, as XGBoost's
    count:poisson and LightGBM's poisson refuse it (the loss exp(x) - y x then has no
    minimum: a model would train towards -inf without a word). NaN is left to the loss."""
    negative = y < 0
    if bool(negative.any()):
        index, value = _label_at(y, int(negative.reshape(-1).argmax()), y.shape)  # the first
        raise ValueError(f"{name} takes counts, labels >= 0 (as XGBoost's count:poisson and "
                         f"LightGBM's poisson do); label {value} at index {index} is negative")
    return y


def _poisson_hessian(classes: int, options: dict) -> float:
    # (a function by this name, not the constant: objectives pickled with their models
    # name it; one made before log_input=False was refused keeps its factor 1)
    return POISSON_HESSIAN if options.get("log_input", True) else 1.0


POISSON = Convention(hess=_poisson_hessian, labels=_counts)
_NO_WEIGHT = {np.dtype(np.float32): np.empty(0, np.float32),
              np.dtype(np.float64): np.empty(0, np.float64)}
# the label check reads labels as their bits (before the kernel, or in the finishing
# pass): the unsigned view, 1.0's bits, no labels
_BITS = {np.dtype(np.float32): (np.uint32, int(np.float32(1).view(np.uint32)),
                                np.empty(0, np.uint32)),
         np.dtype(np.float64): (np.uint64, int(np.float64(1).view(np.uint64)),
                                np.empty(0, np.uint64))}
def _host_finish() -> Callable | None:
    """The Numba finishing pass, or None where Numba cannot run (auto's decision)."""
    if _dispatch.auto_host_backend() != "numba":
        return None
    from .backends._numba_boosting import finish

    return finish


def _floored(loss: Loss, labels: Any, preds: Any, options: dict, floor: float) -> tuple:
    """``loss.grad_and_hess(labels, preds, reduction="sum", **options)`` on the Numba
    backend (float32 or float64 ``preds``, an elementwise loss), with Hessians max(h,
    ``floor``) w (NaN kept), floored in the kernel's own pass: a binary logistic
    objective's call at n = 1e6 spends no second pass over the Hessians. The floor applies
    before the weight, as the libraries apply it (for the negative weights LightGBM takes
    too), the finishing pass and the NumPy operations. Returns ``(grad, hess, outside)``:
    ``outside`` is 0 when every label is in [0, 1] and not -0.0 (what the kernel's pass
    counts: its blocks that may hold another label)."""
    options = {name: value for name, value in options.items() if name != "backend"}
    prep = loss._prepare(np, labels, preds, **options)
    p = prep.p
    grad, hess = (_new_grad(np, p.shape, p.dtype, p.size, p) for _ in range(2))
    outside = _dispatch.kernel_for(loss.name, "numba")(
        prep.y, p, prep.weight, prep.params, "sum", 1.0, grad, False, hess=hess,
        hess_floor=floor)
    return grad, hess, outside


@dataclass
class Objective:
    """A loss made a custom objective of ``library`` (``"xgboost"`` or ``"lightgbm"``): the
    one callable both of its APIs take. The native APIs call ``obj(preds, dtrain)`` (labels
    and weights are read from the dataset); the scikit-learn estimators
    ``obj(y_true, y_pred, sample_weight)`` (XGBoost passes ``sample_weight`` by name,
    LightGBM the weight third, as it counts three parameters). Returns the per-sample
    ``(grad, hess)`` shaped like the predictions."""

    loss: Loss
    options: dict
    convention: Convention
    floor: float  # the smallest Hessian (times the weight): the library's own, or 0
    library: str

    def __repr__(self) -> str:
        return f"<lossbackends {self.library} objective {self.loss.name!r}>"

    def __call__(self, first: Any, second: Any, sample_weight: Any = None) -> tuple[Any, Any]:
        if hasattr(second, "get_label"):  # the native API: (preds, dataset)
            return self.derivatives(second.get_label(), first, second.get_weight())
        return self.derivatives(first, second, sample_weight)

    def derivatives(self, labels: Any, preds: Any, weight: Any = None) -> tuple[Any, Any]:
        """``(grad, hess)`` of the per-sample losses at ``preds`` in the library's
        conventions. One fused pass of the loss, then at most one more over its results
        (the conventions, the floor and, for the losses with a class axis, the weights)."""
        loss, convention = self.loss, self.convention
        # labels in [0, 1]: checked in the finishing pass where there is one, which reads
        # them with the Hessians (n = 1e6, float32, on a shared 2-core host: +4 to +11% of
        # a binary logistic call; labels.min() and max() before it: +22 to +45%)
        check = loss.name in PROBABILITY_LABELS
        xp = np
        if _dispatch.device_of(preds) == "cuda":  # GPU predictions stay there
            import cupy as xp

            if not hasattr(labels, "shape"):
                labels = np.asarray(labels)
            self._check_sizes(labels, preds)
            if check:  # where they are: the libraries' (host) labels on the host
                self._check_probabilities(labels, preds.shape)
            if convention.labels is not None:  # (and checked) there too
                labels = convention.labels(labels, loss.name)
            # (integer margins as float64, as the losses take them)
            preds = _prepare.as_prediction(xp, preds, contiguous=False)
            labels = xp.asarray(labels)  # the labels (small) follow them, never the reverse
            weight = None if weight is None else xp.asarray(weight)
        else:
            # byte-swapped margins computed natively and integer ones as float64, as the
            # losses take them: the weights and labels are cast to this dtype, which the
            # Numba passes read as the gradient's
            preds = _prepare.as_prediction(np, preds, contiguous=False)
            labels = np.asarray(labels)
            weight = None if weight is None else np.asarray(weight)
            self._check_sizes(labels, preds)
            if convention.labels is not None:
                labels = convention.labels(labels, loss.name)
        if weight is not None and weight.size == 0:  # libraries pass an empty array: none
            weight = None
        samples = preds.shape[0] if preds.ndim else 1
        if weight is not None and weight.shape != (samples,):
            raise ValueError(f"sample weights must be one per sample: shape ({samples},), "
                             f"not {weight.shape}")
        dtype = preds.dtype
        if weight is not None:  # (refused beyond dtype's largest, as the losses' weight=)
            weight = _prepare.as_sample_weight(xp, weight, dtype)
        options = dict(self.options)
        if loss._class_indices:
            # the two-class loss of one margin per sample: the multiclass loss's twin
            binary = ("hinge (labels 0/1 or -1/+1)" if loss.name == "multiclass_hinge"
                      else "binary_cross_entropy_with_logits (labels 0/1)")
            if preds.ndim != 2:  # one margin per sample: what the classifiers pass for two
                raise ValueError(
                    f"{loss.name} needs (n_samples, n_classes) predictions; got shape "
                    f"{preds.shape}, one margin per sample (what XGBClassifier and "
                    f"LGBMClassifier pass for two classes): for two classes use {binary}; "
                    "for more, set num_class (XGBoost) or num_class with a multiclass "
                    "objective (LightGBM)"
                )
            if preds.shape[1] < 2:  # (and LightGBM's Hessian factor C / (C - 1) is 1 / 0)
                raise ValueError(
                    f"{loss.name} as an objective needs at least 2 classes; got predictions "
                    f"of shape {preds.shape}: for one margin per sample use {binary}")
            with np.errstate(invalid="ignore"):  # NaN is caught below, not warned of
                classes = labels.astype(np.int64)
            if (classes != labels).any():  # a fraction, NaN or inf is no class index
                where = int(xp.flatnonzero(classes != labels)[0])
                raise ValueError(f"{loss.name} takes class indices: whole numbers from 0 to "
                                 f"{preds.shape[1] - 1}; label {float(labels[where])} at "
                                 f"sample {where} is not")
            labels = classes
            weigh = True  # no per-sample weight option: applied in the finishing pass
        else:
            if preds.ndim < 2 and np.size(options.get("pos_weight", 1.0)) > 1:
                raise ValueError(
                    f"pos_weight has {np.size(options['pos_weight'])} values, one per column "
                    "of (n_samples, n_targets) margins; these margins are one per sample "
                    f"(shape {preds.shape}): pass a scalar pos_weight (per-sample weights are "
                    "the library's sample weights)")
            labels = labels.reshape(preds.shape).astype(dtype, copy=False)
            if weight is not None:
                options["weight"] = weight if preds.ndim == 1 else weight.reshape(-1, 1)
            weigh = False  # the kernel weighs
        constant = CONSTANT_HESSIAN.get(loss.name)
        factor = convention.hess_factor(preds.shape[1] if preds.ndim == 2 else 1, self.options)
        # the host backend the settings choose (backend=, use_backend, the environment)
        backend = _dispatch.backend_for(self.options.get("backend"), preds) if xp is np else None
        if (constant is None and not weigh and convention.grad == factor == 1.0
                and dtype in _NO_WEIGHT and preds.size and backend == "numba"
                and _host_finish() is not None):  # Numba's passes (the tests turn them off)
            # the loss's own derivatives, with the floor in the kernel's pass, which also
            # looks for labels outside [0, 1] (a pass of their own before it cost 0.2 ms of
            # a 1.2 ms binary logistic objective at n = 1e6; in it, 0.03); the exact check
            # tells (-0.0 passes it)
            grad, hess, outside = _floored(loss, labels, preds, options, self.floor)
            if check and outside:
                self._check_probabilities(labels, preds.shape)
            return grad, hess
        if constant is not None:  # the Hessian is a constant times the weight: no kernel's
            grad = loss.grad(labels, preds, reduction="sum", **options)
            hess = xp.empty_like(grad)
            constant = constant(self.options)
        else:
            grad, hess = loss.grad_and_hess(labels, preds, reduction="sum", **options)
            constant = 0.0
        met_hess = convention.margin_met_hess if constant else None
        finish = (_host_finish() if backend not in (None, "numpy") and grad.dtype in _NO_WEIGHT
                  and met_hess is None else None)
        if finish is not None:
            unsigned, one, no_labels = _BITS[grad.dtype]
            worst = finish(grad.reshape(-1), hess.reshape(-1),
                           _NO_WEIGHT[grad.dtype] if weight is None else weight,
                           np.ascontiguousarray(labels).reshape(-1).view(unsigned) if check
                           else no_labels,
                           preds.shape[-1] if preds.ndim == 2 else 1, convention.grad,
                           factor, self.floor, weigh, constant)
            if worst > one:  # a label outside [0, 1], or -0.0: the exact check tells
                self._check_probabilities(labels, preds.shape)
            return grad, hess
        if check and xp is np:  # (GPU labels were checked before the kernel)
            self._check_probabilities(labels, preds.shape)
        # NumPy or CuPy: one operation per pass
        sample_weight = None if weight is None else (weight if grad.ndim == 1 else weight[:, None])
        if weigh and sample_weight is not None:
            grad *= sample_weight
        if constant:
            hess[...] = constant if sample_weight is None else constant * sample_weight
            if met_hess is not None:  # (NaN margins too, as XGBoost's y p < 1 is false)
                # (in the margins' dtype, as the kernel compares: its gradient is 0 there)
                met = ~(labels * preds < preds.dtype.type(self.options.get("margin", 1.0)))
                hess[met] = met_hess
        else:
            if weigh and sample_weight is not None:
                hess *= sample_weight
            if factor != 1.0:
                hess *= factor
            # the floor (0 too: no negative Hessian of its own), then the weight, as the
            # libraries apply them and the Numba passes do: max(h, floor) w, the smaller of
            # h w and floor w for a negative w (LightGBM takes them); the Numba passes'
            # selects (weighted_floor): NaN kept, and a NaN bound (0 x an infinite weight)
            # no floor, as h w is then the Hessian times the weight already
            if sample_weight is None:
                xp.maximum(hess, self.floor, out=hess)
            else:
                with np.errstate(invalid="ignore"):  # (0 x inf: NaN, no floor)
                    bound = self.floor * sample_weight
                below = xp.where(sample_weight < 0, hess > bound, hess < bound)
                hess[...] = xp.where(below, bound, hess)
        if convention.grad != 1.0:
            grad *= convention.grad
        return grad, hess

    def _check_sizes(self, labels: Any, preds: Any) -> None:
        """Raise unless there is one label per prediction (per row of ``(n, C)``
        predictions for the losses with a class axis)."""
        if self.loss._class_indices:
            if preds.ndim != 2 or labels.size == preds.shape[0]:
                return  # (1-D predictions: the num_class error below)
            raise ValueError(
                f"{labels.size} labels for {preds.shape[0]} rows of predictions (shape "
                f"{preds.shape}): {self.loss.name} takes one class index per row; check that "
                "the labels are the training set's and that the predictions are "
                "(n_samples, num_class)")
        if labels.size == preds.size:
            return
        hint = ("; (n, k) predictions come from num_class (or k outputs; a classifier sets it "
                "for labels of more than two classes): this loss takes one margin per label, "
                "so leave num_class out, or use cross_entropy for classes"
                if preds.ndim == 2 and labels.size == preds.shape[0] else
                "; check that the labels are the training set's")
        raise ValueError(f"{labels.size} labels for {preds.size} predictions (shape "
                         f"{preds.shape}): {self.loss.name} takes one label per "
                         f"prediction{hint}")

    def _check_probabilities(self, labels: Any, shape: tuple) -> None:
        """Raise unless every label is in [0, 1] (NaN is not), naming the first that is
        not. NumPy or CuPy labels (then one synchronisation)."""
        outside = ~((labels >= 0) & (labels <= 1))  # NaN: both comparisons are false
        if not bool(outside.any()):
            return
        index, value = _label_at(labels, int(outside.reshape(-1).argmax()), shape)  # the first
        fix = ("drop the samples whose label is missing" if value != value else
               "map two classes to 0 and 1 (labels -1/+1: (y + 1) / 2); more than two take "
               "cross_entropy with num_class")
        own = {"xgboost": "XGBoost's binary:logistic", "lightgbm": "LightGBM's binary"}
        raise ValueError(f"{self.loss.name} takes labels in [0, 1] (the probability of the "
                         f"positive class), like {own[self.library]} objective; label "
                         f"{value} at index {index} is not: {fix}")


def make(loss: Loss | str, options: dict, conventions: dict[str, Convention],
         floor: float, library: str) -> Objective:
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
    if loss.name in NOT_OBJECTIVES:
        raise ValueError(f"{loss.name} makes no {library} objective: it "
                         f"{NOT_OBJECTIVES[loss.name]}")
    for name in ("reduction", "out", "weight"):
        if name in options:
            raise TypeError(f"{name}= is set by the objective (per-sample derivatives; the "
                            "library passes the sample weights); leave it out")
    if loss._class_indices and "axis" in options:
        raise TypeError("axis= is set by the objective: the libraries pass (n_samples, "
                        "n_classes) margins, the classes on the last axis; leave it out")
    if loss._class_indices:
        class_weight = options.get("class_weight")
        classes = 2 if class_weight is None else int(np.size(class_weight))
        loss._prepare(np, np.zeros(1, np.int64), np.zeros((1, classes)),
                      **{k: v for k, v in options.items() if k != "backend"})
    else:  # pos_weight has one value per column: a row of that many
        shape = (1, max(1, int(np.size(options["pos_weight"])))) if "pos_weight" in options else (1,)
        loss._prepare(np, np.zeros(shape), np.zeros(shape),
                      **{k: v for k, v in options.items() if k != "backend"})
    for (name, option, value), why in NOT_OBJECTIVE_OPTIONS.items():
        if loss.name == name and option in options and options[option] == value:
            raise ValueError(f"{name} with {option}={value} makes no {library} objective: it "
                             f"{why}")
    if "backend" in options:
        _dispatch.check_backend_name(options["backend"])
    return Objective(loss, dict(options), conventions.get(loss.name, Convention()), floor,
                     library)
