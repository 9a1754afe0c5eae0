"""LightGBM custom objectives from lossbackends' losses: per-sample gradients and Hessians
from one fused pass, in LightGBM's conventions.

``objective(loss, **options)`` returns one callable that both LightGBM APIs take:

- the native API, ``lightgbm.train({"objective": objective(...), ...}, train_set)``:
  called as ``obj(preds, train_set)``; labels and weights are read from ``train_set``;
- the scikit-learn estimators, ``LGBMRegressor(objective=objective(...))`` and
  ``LGBMClassifier``: called as ``obj(y_true, y_pred, weight)``.

Predictions are raw scores, ``(n,)``, or ``(n, n_classes)`` for ``cross_entropy`` (set
``num_class``; LightGBM 4 passes and takes multiclass scores so). Sample weights multiply
the gradient and the Hessian, as in LightGBM's own objectives. A custom objective starts
from a score of 0: set ``init_score`` to what the built-in objective would start from
(``boost_from_average``) to train the same model.

Conventions (``CONVENTIONS``; a loss not listed gets its own derivatives):

========================================  ======================================  ===========
loss                                      (grad, hess) per sample                 LightGBM's
========================================  ======================================  ===========
``mse``                                   ``(p - y, 1)``: half squared error      ``regression``
``binary_cross_entropy_with_logits``      ``(σ(x) - y, σ(x) σ(-x))``              ``binary``
``cross_entropy``                         ``(p - onehot, C/(C-1) p (1 - p))``     ``multiclass``
``hinge``                                 labels 0/1 become -1/+1
``squared_hinge``, ``soft_margin``        labels 0/1 become -1/+1
========================================  ======================================  ===========

LightGBM's own objectives put no floor under their Hessians, which are never negative
(its leaves add ``1e-15`` to the Hessian sums), so the only floor applied is 0: a negative
Hessian (``sigmoid_focal``'s, for badly misclassified samples, where the loss is concave)
becomes 0, so that no leaf's Newton step goes uphill; the built-in objectives' Hessians
are unchanged by it. Losses whose Hessian is 0 almost everywhere (``hinge``,
``multiclass_hinge``, ``mae``, ``pinball``, ``kl_div``) take the sample weight as Hessian,
as LightGBM's L1 and quantile objectives do; ``huber`` too (LightGBM's Huber objective),
``smooth_l1`` the weight over ``beta``. The labels of ``binary_cross_entropy_with_logits``,
``sigmoid_focal`` and ``binary_cross_entropy`` must be in [0, 1], as ``binary``'s: a
``ValueError`` otherwise (NaN too).

Predictions are raw scores with a custom objective, ``LGBMClassifier``'s ``predict_proba``
and ``predict`` included (LightGBM warns): apply the sigmoid (softmax) to
``predict(X, raw_score=True)``; the boosting guide has a classifier that does, for
scikit-learn's model selection.

>>> import numpy as np, lossbackends as lb
>>> obj = lb.lightgbm.objective(lb.mse)
>>> grad, hess = obj(np.array([1.0, 2.0]), np.array([1.5, 1.0]), None)
>>> print(grad, hess)
[ 0.5 -1. ] [1. 1.]
"""

from __future__ import annotations

from typing import Any

from ._boosting import HINGE, Convention, Objective, make
from ._loss import Loss

CONVENTIONS = {
    # regression (L2): (score - label, 1), half the squared error
    "mse": Convention(grad=0.5, hess=0.5),
    # binary (sigmoid 1): (sigmoid - label, sigmoid (1 - sigmoid)), ours as they are
    "binary_cross_entropy_with_logits": Convention(),
    # multiclass: (p - onehot, C / (C - 1) p (1 - p)) (multiclass_objective.hpp, factor_)
    "cross_entropy": Convention(hess=lambda classes: classes / (classes - 1.0)),
    # the margin losses take labels -1/+1: a classifier's 0/1 would give class 0 no gradient
    **dict.fromkeys(("hinge", "squared_hinge", "soft_margin"), HINGE),
}
FLOOR = 0.0  # no negative Hessian; LightGBM's own objectives have none to floor


LightGBMObjective = Objective  # the callable ``objective`` returns


def objective(loss: Loss | str, **options: Any) -> Objective:
    """The custom objective of ``loss`` (a ``lossbackends`` loss or its name) with its
    ``options``, in LightGBM's conventions (see the module's docstring)."""
    return make(loss, options, CONVENTIONS, FLOOR, "lightgbm")
