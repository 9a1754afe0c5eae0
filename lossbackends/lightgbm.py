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
``poisson_nll`` (``log_input=True``)      ``(e^x - y, e^(x + 0.7))``              ``poisson``
``hinge``                                 labels 0/1 become -1/+1
``squared_hinge``, ``soft_margin``        labels 0/1 become -1/+1
========================================  ======================================  ===========

``poisson``'s Hessian is ``exp(x + poisson_max_delta_step)``, 0.7 by default (about half
the Newton step): ``poisson_nll`` takes that default (with ``log_input=False``, whose rates
must stay > 0, it makes no objective: a ``ValueError``). ``poisson`` caps no leaf (its
``max_delta_step`` stays 0, unlike XGBoost's ``count:poisson``), so ours trains its model
as it is, and both overshoot from a start far from the labels: set ``init_score`` to the
log of the mean label. ``cross_entropy`` needs two classes or more (for one margin per
sample, as a two-class ``LGBMClassifier`` gives, ``binary_cross_entropy_with_logits``).

LightGBM's own objectives put no floor under their Hessians, which are never negative
before the sample weight (its leaves add ``1e-15`` to the Hessian sums), so the only floor
applied is 0, before the weight as the libraries weigh: a negative Hessian
(``sigmoid_focal``'s, for badly misclassified samples, where the loss is concave) becomes
0, so that no leaf's Newton step goes uphill; the built-in objectives' Hessians are
unchanged by it, negative sample weights included (h w, as LightGBM's own). Losses whose
Hessian is 0 almost everywhere (``hinge``, ``multiclass_hinge``, ``mae``, ``pinball``)
take the sample weight as Hessian, as LightGBM's L1 and quantile objectives do (which then
also re-fit each leaf's value to a quantile of its residuals, as no custom objective can:
their models differ, and learn faster, than ``mae``'s and ``pinball``'s Newton steps);
``huber`` too (LightGBM's Huber objective), ``smooth_l1`` the weight over ``beta``, and
``log_cosh`` the weight: its Hessian ``sech^2(e)`` underflows far from the label (0 in
float32 at ``|e| ~ 50``), which blows up training (leaves of ``-G / 0``), and never
exceeds 1, so that a Hessian of 1 makes every Newton step a descent. (Where every gradient
is the same, as ``log_cosh``'s ``tanh(e) = -1`` from score 0 below labels all above 20, no
split gains and LightGBM gives the tree the value 0: set ``init_score``.)

Labels: those of ``binary_cross_entropy_with_logits`` and ``sigmoid_focal`` must be in
[0, 1], as ``binary``'s; those of the margin losses 0/1 or -1/+1; class indices whole
numbers from 0 to C - 1 (or ``cross_entropy``'s ``ignore_index``, a skipped row:
:doc:`/guide/boosting`): a ``ValueError`` otherwise (NaN too), naming the first bad label.
``binary_cross_entropy`` (probabilities) and ``kl_div`` (log-probabilities) make no
objective, as a booster's scores are neither: a ``ValueError`` names the loss to use.

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

from ._boosting import HINGE, POISSON, Convention, Objective, make
from ._loss import Loss

__all__ = ["objective"]  # the rest is this library's conventions, which it reads


def _multiclass_hessian(classes: int, options: dict) -> float:
    return classes / (classes - 1.0)  # (at least 2 classes: checked before)


CONVENTIONS = {
    # regression (L2): (score - label, 1), half the squared error
    "mse": Convention(grad=0.5, hess=0.5),
    # binary (sigmoid 1): (sigmoid - label, sigmoid (1 - sigmoid)), ours as they are
    "binary_cross_entropy_with_logits": Convention(),
    # multiclass: (p - onehot, C / (C - 1) p (1 - p)) (multiclass_objective.hpp, factor_)
    "cross_entropy": Convention(hess=_multiclass_hessian),
    # poisson: (exp(x) - y, exp(x + poisson_max_delta_step)), 0.7 by default; log_input=True
    "poisson_nll": POISSON,
    # the margin losses take labels -1/+1: a classifier's 0/1 would give class 0 no gradient
    **dict.fromkeys(("hinge", "squared_hinge", "soft_margin"), HINGE),
}
FLOOR = 0.0  # no negative Hessian; LightGBM's own objectives have none to floor


def objective(loss: Loss | str, **options: Any) -> Objective:
    """The custom objective of ``loss`` (a ``lossbackends`` loss or its name) with its
    ``options``, in LightGBM's conventions (see the module's docstring).

    Returns a callable for both of LightGBM's APIs (``params["objective"]`` of
    ``lightgbm.train``, and the scikit-learn estimators' ``objective=``), giving
    ``(grad, hess)`` per sample, shaped like the predictions. Raises ``ValueError`` for an
    unknown loss name or a loss that makes no objective on margins
    (``binary_cross_entropy``, ``kl_div``, ``poisson_nll`` with ``log_input=False``: the
    message names the one to use) or an option's bad value, ``TypeError`` for an option
    the loss does not take or one the objective sets (``reduction``, ``out``, ``weight``,
    ``axis``); labels
    outside the loss's range raise when the objective is called, naming the first.

    >>> import numpy as np
    >>> from lossbackends import lightgbm as lbl
    >>> obj = lbl.objective("binary_cross_entropy_with_logits")
    >>> grad, hess = obj(np.array([0.0, 1.0]), np.array([-2.0, 3.0]))
    >>> print(grad.round(6), hess.round(6))
    [ 0.119203 -0.047426] [0.104994 0.045177]
    """
    return make(loss, options, CONVENTIONS, FLOOR, "lightgbm")
