"""XGBoost custom objectives from lossbackends' losses: per-sample gradients and Hessians
from one fused pass, in XGBoost's conventions.

``objective(loss, **options)`` returns one callable that both XGBoost APIs take:

- the native API, ``xgboost.train(params, dtrain, obj=objective(...))``: it is called as
  ``obj(preds, dtrain)`` and reads the labels and sample weights from ``dtrain``;
- the scikit-learn estimators, ``XGBRegressor(objective=objective(...))`` and
  ``XGBClassifier``: called as ``obj(y_true, y_pred, sample_weight=...)``.

Predictions are margins, shaped ``(n,)``, or ``(n, n_classes)`` for ``cross_entropy``
(XGBoost >= 2 passes multiclass margins so; set ``num_class``). Sample weights multiply
the gradient and the Hessian, as in XGBoost's own objectives. A custom objective starts
from ``base_score`` taken as a margin (0.5 by default) in ``xgboost.train`` and
``XGBRegressor``, from its logit (0) in a two-class ``XGBClassifier``: set ``base_margin``
(or ``base_score``) to what the built-in objective would start from to train the same
model.

Conventions (``CONVENTIONS``; a loss not listed gets its own derivatives):

========================================  ====================================  ====================
loss                                      (grad, hess) per sample               XGBoost's own
========================================  ====================================  ====================
``mse``                                   ``(p - y, 1)``: half squared error    ``reg:squarederror``
``binary_cross_entropy_with_logits``      ``(σ(x) - y, σ(x) σ(-x))``            ``binary:logistic``
``cross_entropy``                         ``(softmax - onehot, 2 p (1 - p))``   ``multi:softprob``
``poisson_nll`` (``log_input=True``)      ``(e^x - y, e^(x + 0.7))``            ``count:poisson``
``hinge``                                 labels 0/1 become -1/+1 (see below)   ``binary:hinge``
``squared_hinge``, ``soft_margin``        labels 0/1 become -1/+1               –
========================================  ====================================  ====================

``count:poisson``'s Hessian is ``exp(x + max_delta_step)``, ``max_delta_step`` 0.7 by
default (about half the Newton step): ``poisson_nll`` takes that default (with
``log_input=False``, whose rates must stay > 0, it makes no objective: a ``ValueError``).
``count:poisson`` also sets the tree parameter ``max_delta_step`` to 0.7 unless you set
it (no other built-in objective does), which caps each leaf's value at ±0.7 before
``eta``; a custom objective keeps XGBoost's default, 0 (no cap). Pass
``max_delta_step=0.7`` (to ``xgboost.train`` or ``XGBRegressor``) to train
``count:poisson``'s model: without it a start far from the labels overshoots
(``load_diabetes``, ``max_depth=2``, ``eta=0.3``, 10 rounds from margin log 0.5,
``count:poisson``'s start for ``base_score=0.5``: margins 26 to 64; with it, 1.41, as
``count:poisson``'s). From the log of the mean label the cap did not bind there.
``cross_entropy`` needs two classes or more (for one margin per sample, as a two-class
``XGBClassifier`` gives, ``binary_cross_entropy_with_logits``).

Hessians are floored at ``1e-16`` (times the weight), XGBoost's own minimum: as
``binary:logistic`` floors; ``multi:softprob`` floors after the weight (a sample of weight 0
has Hessian ``1e-16`` there, 0 here; on ``load_digits`` with 30 % of the weights 0, five
rounds gave margins within 2.4e-7, float32's rounding). Losses whose
Hessian is 0 almost everywhere (``hinge``, ``multiclass_hinge``, ``mae``, ``pinball``)
take the sample weight as Hessian, as XGBoost's absolute error and LightGBM's L1 and
quantile objectives do; ``hinge`` where its margin is not met (``y p < margin``), and
where it is (its loss and gradient 0) float32's smallest normal, ``1.18e-38``, unweighted,
as ``binary:hinge`` does; ``huber`` takes it too (its Hessian is 0 outside
``|e| <= delta``: LightGBM's Huber objective), ``smooth_l1`` the weight over ``beta``, and
``log_cosh`` the weight: its Hessian ``sech^2(e)`` underflows far from the label (0 in
float32 at ``|e| ~ 50``), which stalls training, and never exceeds 1, so that a Hessian
of 1 makes every Newton step a descent. ``sigmoid_focal``'s Hessian is negative for badly
misclassified samples: the floor applies there.

Labels: those of ``binary_cross_entropy_with_logits`` and ``sigmoid_focal`` must be in
[0, 1], as ``binary:logistic``'s; those of the margin losses 0/1 or -1/+1; class indices
whole numbers from 0 to C - 1 (or ``cross_entropy``'s ``ignore_index``, a skipped row:
:doc:`/guide/boosting`): a ``ValueError`` otherwise (NaN too), naming the first bad label.
``binary_cross_entropy`` (probabilities) and ``kl_div`` (log-probabilities) make no
objective, as a booster's margins are neither: a ``ValueError`` names the loss to use.

Predictions: ``XGBClassifier`` transforms its margins as ``binary:logistic`` (two classes)
or ``multi:softprob`` do, whatever the objective, so its ``predict_proba`` is their
sigmoid (softmax) and ``predict`` the classes; ``Booster.predict`` and ``XGBRegressor``
give the margins.

Predictions that are CuPy arrays (a GPU booster's margins) are computed by the CuPy
backend where they are; only the labels and weights are moved to the GPU.

>>> import numpy as np, lossbackends as lb
>>> obj = lb.xgboost.objective(lb.binary_cross_entropy_with_logits)
>>> grad, hess = obj(np.array([0.0, 1.0]), np.array([0.0, 2.0]))
>>> print(grad.round(6), hess.round(6))
[ 0.5      -0.119203] [0.25     0.104994]
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from ._boosting import HINGE, POISSON, Convention, Objective, make
from ._loss import Loss

__all__ = ["objective"]  # the rest is this library's conventions, which it reads

CONVENTIONS = {
    # reg:squarederror minimises half the squared error: (p - y, 1)
    "mse": Convention(grad=0.5, hess=0.5),
    # binary:logistic: (sigmoid - y, sigmoid (1 - sigmoid)), ours as they are
    "binary_cross_entropy_with_logits": Convention(),
    # multi:softprob: (p - onehot, 2 p (1 - p)) (multiclass_obj.cu)
    "cross_entropy": Convention(hess=2.0),
    # count:poisson: (exp(x) - y, exp(x + max_delta_step)), 0.7 by default; log_input=True
    "poisson_nll": POISSON,
    # the margin losses take labels -1/+1: a classifier's 0/1 would give class 0 no gradient
    **dict.fromkeys(("squared_hinge", "soft_margin"), HINGE),
    # binary:hinge: (-y, 1) times the weight where y p < 1, else (0, float32's smallest
    # normal), unweighted (hinge.cc)
    "hinge": replace(HINGE, margin_met_hess=float(np.finfo(np.float32).tiny)),
}
FLOOR = 1e-16  # XGBoost's smallest Hessian (its logistic and softmax objectives)


def objective(loss: Loss | str, **options: Any) -> Objective:
    """The custom objective of ``loss`` (a ``lossbackends`` loss or its name) with its
    ``options`` (``pos_weight``, ``class_weight``, ``label_smoothing``, ``margin``,
    ``backend``...), in XGBoost's conventions (see the module's docstring).

    Returns a callable for both of XGBoost's APIs: ``obj(preds, dtrain)`` and
    ``obj(y_true, y_pred, sample_weight=None)``, each giving ``(grad, hess)`` per sample,
    shaped like the predictions. Raises ``ValueError`` for an unknown loss name or a loss
    that makes no objective on margins (``binary_cross_entropy``, ``kl_div``,
    ``poisson_nll`` with ``log_input=False``: the message names the one to use) or an
    option's bad value, ``TypeError`` for an option the loss does not take or one the
    objective sets (``reduction``, ``out``, ``weight``, ``axis``); labels outside the
    loss's range raise when the objective is called, naming the first.

    >>> import numpy as np
    >>> from lossbackends import xgboost as lbx
    >>> obj = lbx.objective("binary_cross_entropy_with_logits")
    >>> grad, hess = obj(np.array([0.0, 1.0]), np.array([-2.0, 3.0]))
    >>> print(grad.round(6), hess.round(6))
    [ 0.119203 -0.047426] [0.104994 0.045177]
    """
    return make(loss, options, CONVENTIONS, FLOOR, "xgboost")
