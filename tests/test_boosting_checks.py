"""What the XGBoost and LightGBM objectives check and keep: errors that name the fix,
labels and options refused by name, pickling, what the estimators predict and where
training starts (the conventions and training equivalence: test_boosting.py)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from boosting_helpers import (
    LGB_PARAMS,
    LIBRARIES,
    XGB_PARAMS,
    needs_lightgbm,
    needs_sklearn,
    needs_xgboost,
    sigmoid,
    softmax,
)

import lossbackends as lb

# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("library", LIBRARIES)
def test_errors(library):
    module = LIBRARIES[library]
    with pytest.raises(ValueError, match="unknown loss"):
        module.objective("squared_error")
    with pytest.raises(TypeError, match="lossbackends loss"):
        module.objective(len)
    for option in ("reduction", "weight", "out"):
        with pytest.raises(TypeError, match=f"{option}= is set by the objective"):
            module.objective(lb.mse, **{option: None})
    with pytest.raises(ValueError, match="eps"):
        module.objective(lb.poisson_nll, eps=-1.0)
    # rates must stay > 0, which a booster's margins do not (a model of NaN losses)
    with pytest.raises(ValueError, match=r"poisson_nll with log_input=False makes no .* use "
                       r"log_input=True"):
        module.objective(lb.poisson_nll, log_input=False)
    assert module.objective(lb.poisson_nll, log_input=True) is not None
    with pytest.raises(ValueError, match="label_smoothing"):
        module.objective(lb.cross_entropy, label_smoothing=3.0)
    with pytest.raises(ValueError, match="num_class"):
        module.objective(lb.cross_entropy)(np.zeros(4), np.zeros(4), None)


@needs_xgboost
@needs_lightgbm
def test_a_loss_passed_as_an_objective_names_the_objective():
    """A booster calls obj(preds, data): the loss reads its data as y_pred and says what
    to pass instead."""
    import lightgbm as lgb
    import xgboost as xgb

    X, y = np.random.default_rng(0).random((200, 3)), np.random.default_rng(1).random(200)
    with pytest.raises(TypeError, match=r"from a DMatrix.*; a loss is not an XGBoost "
                                        r"objective: pass lossbackends\.xgboost\.objective"):
        xgb.train({}, xgb.DMatrix(X, label=y), 1, obj=lb.mse)
    with pytest.raises(TypeError, match=r"from a Dataset.*; a loss is not a LightGBM "
                                        r"objective: pass lossbackends\.lightgbm\.objective"):
        lgb.train({"objective": lb.mse, "verbose": -1}, lgb.Dataset(X, y), 1)


def test_the_benchmark_rows_run():
    """benchmarks/boosting_rows.py at a tiny size: ours and the hand-written NumPy
    objective agree (checked inside) and every row is well formed."""
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    from benchmarks import boosting_rows

    rows = boosting_rows.run(n=1000, classes=3, min_time=0.01, repeats=2)
    assert {r["objective"] for r in rows} == {"logistic", "focal", "softmax_3"}
    assert all(r["seconds_min"] <= r["seconds_median"] <= r["seconds_max"] for r in rows)


@pytest.mark.parametrize("library", ["xgboost", "lightgbm"])
def test_sample_weights_of_the_wrong_shape_raise(library):
    """One weight per sample, or a ValueError (a short weight array once made the Numba
    finishing pass read past its end)."""
    objective = LIBRARIES[library].objective
    for loss, preds in ((lb.cross_entropy, np.zeros((300_000, 3), np.float32)),
                        (lb.multiclass_hinge, np.zeros((6, 3))), (lb.mse, np.zeros(6))):
        labels = np.zeros(preds.shape[0])
        for weight in (np.ones(1), np.ones(preds.shape[0] + 1), np.ones((preds.shape[0], 1))):
            with pytest.raises(ValueError, match="one per sample"):
                objective(loss)(labels, preds, weight)


@pytest.mark.parametrize("bad", [2.5, np.nan, np.inf])
def test_class_labels_must_be_whole_numbers(bad):
    with pytest.raises(ValueError, match=r"class indices: whole numbers from 0 to 2; label"):
        lb.xgboost.objective(lb.cross_entropy)(np.array([0.0, bad]), np.zeros((2, 3)))


@pytest.mark.parametrize("loss", ["hinge", "squared_hinge", "soft_margin"])
@pytest.mark.parametrize("library", ["xgboost", "lightgbm"])
def test_margin_losses_take_a_classifiers_0_1_labels_as_signs(library, loss):
    """A classifier passes labels 0/1; the margin losses take them as -1/+1, so class 0
    has a gradient (it had none, and a model predicted one class)."""
    grad, _ = LIBRARIES[library].objective(loss)(np.array([0.0, 1.0]), np.array([0.5, -0.5]))
    expected, _ = getattr(lb, loss).grad_and_hess(np.array([-1.0, 1.0]), np.array([0.5, -0.5]),
                                                  reduction="sum")
    np.testing.assert_allclose(grad, expected)
    assert grad[0] > 0 > grad[1]
    for dtype in (np.uint8, np.uint32, bool):  # (0 * 2 - 1 wrapped to 255 in uint8)
        unsigned, _ = LIBRARIES[library].objective(loss)(np.array([0, 1], dtype),
                                                         np.array([0.5, -0.5]))
        np.testing.assert_allclose(unsigned, expected, err_msg=np.dtype(dtype).name)


@pytest.mark.parametrize("options, error", [
    ({"backend": "numbaa"}, ValueError), ({"pos_weight": "3"}, TypeError)])
def test_bad_options_fail_when_the_objective_is_made(options, error):
    """A bad option fails at ``objective(...)``, not at the first boosting round."""
    with pytest.raises(error):
        lb.xgboost.objective(lb.binary_cross_entropy_with_logits, **options)


@pytest.mark.parametrize("library", ["xgboost", "lightgbm"])
def test_options_the_objective_sets_are_refused_by_name(library):
    """axis= of a loss with a class axis is the objective's (the libraries' (n, C)
    margins): refused by name, not with the shapes of the objective's own probe; a
    pos_weight vector needs (n, k) margins, and one margin per sample says so."""
    module = LIBRARIES[library]
    for loss in (lb.cross_entropy, lb.multiclass_hinge):
        with pytest.raises(TypeError, match="axis= is set by the objective"):
            module.objective(loss, axis=0)
    objective = module.objective(lb.binary_cross_entropy_with_logits, pos_weight=[3.0, 2.0])
    with pytest.raises(ValueError, match="pos_weight has 2 values, one per column .* pass a "
                                         "scalar pos_weight"):
        objective(np.zeros(4), np.zeros(4))
    grad, _ = objective(np.ones((4, 2)), np.zeros((4, 2)))  # (n, 2) margins take it
    np.testing.assert_allclose(grad[0], [-1.5, -1.0])


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("library", ["xgboost", "lightgbm"])
def test_probability_labels_must_be_in_0_1(library, backend):
    """The losses whose labels are probabilities reject a label outside [0, 1] or NaN, as
    XGBoost's binary:logistic and LightGBM's binary objective do, naming it, its index and
    the fix; 0, -0.0, 1 and soft labels pass. On Numba the kernel's own pass counts them
    (with and without weights, on one thread and on all), NumPy checks in a pass of its
    own."""
    if backend not in lb.available_backends():
        pytest.skip(f"backend {backend!r} is not available here")
    from lossbackends import _boosting
    from lossbackends.backends.numba_backend import PARALLEL_MIN_ELEMENTS

    assert _boosting.PROBABILITY_LABELS == {"binary_cross_entropy_with_logits", "sigmoid_focal"}
    module = LIBRARIES[library]
    cases = [(lb.binary_cross_entropy_with_logits, 9, np.float64),
             (lb.sigmoid_focal, 9, np.float32),
             (lb.binary_cross_entropy_with_logits, PARALLEL_MIN_ELEMENTS + 3, np.float32)]
    for loss, n, dtype in cases:
        objective = module.objective(loss, backend=backend)
        y = np.zeros(n, dtype)
        y[1:5] = [-0.0, 1.0, 0.25, np.nextafter(dtype(1), dtype(0))]  # all in [0, 1]
        p = np.linspace(-3, 3, n, dtype=dtype)
        for weight in (None, np.full(n, 2.0, dtype)):
            grad, _ = objective(y, p, weight)  # the labels as they are
            np.testing.assert_allclose(grad, loss.grad(y.astype(np.float64), p.astype(
                np.float64), reduction="sum", weight=weight), rtol=1e-5, atol=1e-7)
            for bad, fix in ((2.0, "more than two take cross_entropy"),
                             (-1.0, r"labels -1/\+1: \(y \+ 1\) / 2"),
                             (np.nextafter(dtype(1), dtype(2)), "map two classes to 0 and 1"),
                             (-1e-30, "map two classes"), (np.inf, "map two classes"),
                             (np.nan, "drop the samples whose label is missing")):
                labels = y.copy()
                labels[[n - 2, n - 1]] = bad, 2.0  # the first is named
                message = (rf"{loss.name} takes labels in \[0, 1\].*; label {float(dtype(bad))} "
                           rf"at index {n - 2} is not: .*{fix}")
                with pytest.raises(ValueError, match=message):
                    objective(labels, p, weight)
    # (n, k) margins of k outputs: the label's (row, column)
    labels = np.array([[0.0, 1.0], [1.0, 3.0]])
    with pytest.raises(ValueError, match=r"label 3.0 at index \(1, 1\) is not"):
        module.objective(lb.binary_cross_entropy_with_logits, backend=backend)(
            labels, np.zeros((2, 2)), None)
    # the other losses take any label
    module.objective(lb.mse, backend=backend)(np.array([-1.0, 2.0]), np.zeros(2), None)


@pytest.mark.parametrize("library", ["xgboost", "lightgbm"])
def test_labels_and_predictions_of_different_lengths_raise(library):
    """One label per prediction (per row for cross_entropy), or a ValueError that gives
    both lengths and what to check, not NumPy's reshape error."""
    objective = LIBRARIES[library].objective
    with pytest.raises(ValueError, match=r"3 labels for 4 predictions \(shape \(4,\)\): mse "
                                         r"takes one label per prediction; check that the "
                                         r"labels are the training set's"):
        objective(lb.mse)(np.zeros(3), np.zeros(4), None)
    # (n, k) margins for a loss of one margin per label: num_class was set
    with pytest.raises(ValueError, match=r"3 labels for 6 predictions \(shape \(3, 2\)\).*"
                                         r"leave num_class out, or use cross_entropy"):
        objective(lb.binary_cross_entropy_with_logits)(np.zeros(3), np.zeros((3, 2)), None)
    with pytest.raises(ValueError, match=r"3 labels for 4 rows of predictions \(shape "
                                         r"\(4, 2\)\): cross_entropy takes one class index "
                                         r"per row.*\(n_samples, num_class\)"):
        objective(lb.cross_entropy)(np.zeros(3), np.zeros((4, 2)), None)
    # a k-output model's (n, k) labels and margins are one label per prediction
    grad, _ = objective(lb.mse)(np.ones((3, 2)), np.zeros((3, 2)), None)
    np.testing.assert_array_equal(grad, -np.ones((3, 2)))


@needs_xgboost
@needs_lightgbm
@needs_sklearn
def test_what_the_classifiers_predict_with_a_custom_objective():
    """What the boosting guide says: XGBClassifier's predict_proba is the sigmoid (softmax)
    of the margins and predict the classes; LGBMClassifier's predict_proba and predict are
    the raw scores, with a UserWarning."""
    import lightgbm
    import xgboost
    from sklearn.datasets import load_breast_cancer, load_digits

    for (X, y), loss in ((load_breast_cancer(return_X_y=True), lb.binary_cross_entropy_with_logits),
                         (load_digits(return_X_y=True), lb.cross_entropy)):
        model = xgboost.XGBClassifier(n_estimators=5, max_depth=3,
                                      objective=lb.xgboost.objective(loss)).fit(X, y)
        margins = model.predict(X, output_margin=True)
        proba = (softmax(margins) if margins.ndim == 2
                 else np.column_stack([1 - sigmoid(margins), sigmoid(margins)]))
        np.testing.assert_allclose(model.predict_proba(X), proba, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(model.predict(X), proba.argmax(axis=1))
        model = lightgbm.LGBMClassifier(n_estimators=5, verbose=-1,
                                        objective=lb.lightgbm.objective(loss)).fit(X, y)
        scores = model.predict(X, raw_score=True)
        with pytest.warns(UserWarning, match="Cannot compute class probabilities"):
            np.testing.assert_array_equal(model.predict_proba(X), scores)
        with pytest.warns(UserWarning, match="Cannot compute class probabilities"):
            np.testing.assert_array_equal(model.predict(X), scores)


@needs_xgboost
@needs_lightgbm
def test_bad_probability_labels_stop_training_in_both_native_apis():
    import lightgbm
    import xgboost

    X = np.random.default_rng(8).normal(size=(50, 3))
    y = (X[:, 0] > 0) * 1.0
    y[7] = -1.0
    loss = lb.binary_cross_entropy_with_logits
    with pytest.raises(ValueError, match=r"label -1.0 at index 7 is not: map two classes"):
        xgboost.train({}, xgboost.DMatrix(X, label=y), 2, obj=lb.xgboost.objective(loss))
    with pytest.raises(ValueError, match=r"label -1.0 at index 7 is not: map two classes"):
        lightgbm.train({"objective": lb.lightgbm.objective(loss), "verbose": -1},
                       lightgbm.Dataset(X, label=y), 2)


@needs_xgboost
@needs_lightgbm
@needs_sklearn
def test_log_cosh_objective_descends_every_round_far_from_the_labels():
    """log_cosh's Hessian sech^2(e) underflows far from the labels (load_diabetes' targets
    are 25 to 346): XGBoost from margin 0 learnt nothing (Hessian sums of ~0, under
    min_child_weight) and LightGBM from the mean diverged (leaves of -G / ~0). The
    objective's Hessian, the weight, is at least sech^2 everywhere: every round lowers the
    loss. (LightGBM from margin 0 is not tried: every gradient there is tanh(-y) = -1
    exactly, no split gains, and LightGBM gives a tree without a split the value 0 under a
    custom objective; the guide says to set init_score.)"""
    import lightgbm
    import xgboost
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    rounds, eta = 10, XGB_PARAMS["eta"]
    for start in (0.0, y.mean()):
        margin = np.full(len(y), start)
        data = xgboost.DMatrix(X, label=y, base_margin=margin)
        booster = xgboost.train(XGB_PARAMS, data, rounds, obj=lb.xgboost.objective(lb.log_cosh))
        losses = [lb.log_cosh(y, margin)] + [
            lb.log_cosh(y, booster.predict(data, output_margin=True, iteration_range=(0, k))
                        .astype(np.float64)) for k in range(1, rounds + 1)]
        assert (np.diff(losses) < 0).all(), (start, losses)
        if start == 0.0:  # gradients all -1, Hessians 1: one leaf of n / (n + lambda) a round
            np.testing.assert_allclose(losses[0] - losses[-1], rounds * eta * len(y) / (len(y) + 1),
                                       rtol=1e-4)
    margin = np.full(len(y), y.mean())
    booster = lightgbm.train(dict(LGB_PARAMS, objective=lb.lightgbm.objective(lb.log_cosh)),
                             lightgbm.Dataset(X, label=y, init_score=margin), rounds)
    losses = [lb.log_cosh(y, margin + (booster.predict(X, raw_score=True, num_iteration=k)
                                       if k else 0.0)) for k in range(rounds + 1)]
    assert (np.diff(losses) < 0).all(), losses


def test_losses_on_no_margin_make_no_objective():
    """binary_cross_entropy takes probabilities and kl_div log-probabilities: on a
    booster's unbounded margins they trained nonsense without a word."""
    for module in LIBRARIES.values():
        for loss in (lb.binary_cross_entropy, "binary_cross_entropy"):
            with pytest.raises(ValueError, match=r"binary_cross_entropy makes no \w+ objective: "
                                                 r"it takes probabilities.*use "
                                                 r"binary_cross_entropy_with_logits"):
                module.objective(loss)
        with pytest.raises(ValueError, match=r"kl_div makes no \w+ objective: .*use "
                                             r"cross_entropy \(softmax .*class-index labels\) "
                                             r"or binary_cross_entropy_with_logits"):
            module.objective(lb.kl_div)


@pytest.mark.parametrize("library", ["xgboost", "lightgbm"])
def test_every_objective_pickles(library):
    """An objective travels with its model (pickle, joblib, scikit-learn's clone in other
    processes): each loss's, unpickled, gives the same (grad, hess)."""
    import pickle

    from lossbackends import _boosting
    from lossbackends.losses import LOSSES

    module = LIBRARIES[library]
    rng = np.random.default_rng(9)
    n, classes = 12, 3
    y = (np.arange(n) % 2).astype(np.float64)  # a label every loss takes
    p = rng.normal(size=n)
    labels = (np.arange(n) % classes).astype(np.float64)
    logits = rng.normal(size=(n, classes))
    w = rng.uniform(0.5, 2, n)
    made = 0
    for name, loss in sorted(LOSSES.items()):
        if name in _boosting.NOT_OBJECTIVES:
            continue
        objective = module.objective(loss)
        twin = pickle.loads(pickle.dumps(objective))
        args = (labels, logits, w) if loss._class_indices else (y, p, w)
        for a, b in zip(objective(*args), twin(*args), strict=True):
            np.testing.assert_array_equal(a, b, err_msg=name)
        made += 1
    assert made == len(LOSSES) - 2


def test_an_objective_pickled_by_an_earlier_release_loads():
    """``lossbackends.xgboost.objective(lb.poisson_nll)`` pickled at commit ee57f71 (a model's
    objective, saved with it): it names ``_boosting._poisson_hessian``, which must stay."""
    import base64
    import pickle

    saved = base64.b64decode(
        "gASVBQEAAAAAAACMFmxvc3NiYWNrZW5kcy5fYm9vc3RpbmeUjAlPYmplY3RpdmWUk5QpgZR9lCiMBGxvc3OU"
        "jAxsb3NzYmFja2VuZHOUjAtwb2lzc29uX25sbJSTlIwHb3B0aW9uc5R9lIwKY29udmVudGlvbpRoAIwKQ29u"
        "dmVudGlvbpSTlCmBlH2UKIwEZ3JhZJRHP/AAAAAAAACMBGhlc3OUaACMEF9wb2lzc29uX2hlc3NpYW6Uk5SM"
        "BmxhYmVsc5RoAIwHX2NvdW50c5STlIwPbWFyZ2luX21ldF9oZXNzlE51YowFZmxvb3KURzyc0rKX2Im8jAds"
        "aWJyYXJ5lIwHeGdib29zdJR1Yi4=")
    objective = pickle.loads(saved)
    labels, margins = np.array([1.0, 2.0]), np.zeros(2)
    for a, b in zip(objective(labels, margins),
                    LIBRARIES["xgboost"].objective(lb.poisson_nll)(labels, margins), strict=True):
        np.testing.assert_array_equal(a, b)


@needs_lightgbm
@needs_sklearn
def test_a_fitted_lightgbm_classifier_with_our_softmax_pickles():
    import pickle

    import lightgbm
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    model = lightgbm.LGBMClassifier(n_estimators=3, verbose=-1, n_jobs=1,
                                    objective=lb.lightgbm.objective(lb.cross_entropy)).fit(X, y)
    twin = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(twin.predict(X, raw_score=True), model.predict(X, raw_score=True))
    assert twin.objective.convention == model.objective.convention


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("loss", ["hinge", "squared_hinge", "soft_margin"])
@pytest.mark.parametrize("library", ["xgboost", "lightgbm"])
def test_margin_losses_take_0_1_or_signs_and_nothing_else(library, loss, backend):
    """Labels 0/1 (a classifier's) or -1/+1; 2, 0.5, NaN, or 0 and -1 together raise,
    naming the first bad label, its index and the fix (they became ±1 silently)."""
    if backend not in lb.available_backends():
        pytest.skip(f"backend {backend!r} is not available here")
    objective = LIBRARIES[library].objective(loss, backend=backend)
    p = np.array([0.5, -0.5, 2.0, -2.0, 0.1])
    signs = np.array([-1.0, 1.0, 1.0, -1.0, 1.0])
    expected, _ = getattr(lb, loss).grad_and_hess(signs, p, reduction="sum", backend="numpy")
    for labels in ((signs + 1) / 2, signs, np.array([-0.0, 1, 1, 0, 1])):
        np.testing.assert_allclose(objective(labels, p)[0], expected, rtol=1e-15)
    for bad, where, fix in ((2.0, 2, "map two classes to 0/1 or -1/\\+1; more than two"),
                            (0.5, 2, "map two classes"), (-2.0, 2, "map two classes"),
                            (np.nan, 2, "drop the samples whose label is missing")):
        labels = np.array([0.0, 1.0, bad, 0.0, 3.0])
        with pytest.raises(ValueError, match=rf"{loss} takes labels 0/1 \(a classifier's\) or "
                                             rf"-1/\+1; label {bad} at index {where} is not: "
                                             rf".*{fix}"):
            objective(labels, p)
    with pytest.raises(ValueError, match=r"label -1.0 at index 3 is not: 0 and -1 are both"):
        objective(np.array([0.0, 1.0, 1.0, -1.0, -1.0]), p)
    with pytest.raises(ValueError, match=r"label 0.0 at index 3 is not: 0 and -1 are both"):
        objective(np.array([-1.0, 1.0, -1.0, 0.0, 0.0]), p)
    with pytest.raises(ValueError, match=r"label 2.0 at index \(1, 0\) is not"):
        objective(np.array([[0.0, 1.0], [2.0, 1.0]]), np.zeros((2, 2)))


@pytest.mark.parametrize("library", ["xgboost", "lightgbm"])
def test_cross_entropy_needs_two_classes_or_more(library):
    """One column of margins: LightGBM's Hessian factor C / (C - 1) was a bare
    ZeroDivisionError; softmax over one class learns nothing in XGBoost either."""
    objective = LIBRARIES[library].objective(lb.cross_entropy)
    with pytest.raises(ValueError, match=r"cross_entropy as an objective needs at least 2 "
                                         r"classes; got predictions of shape \(2, 1\): for one "
                                         r"margin per sample use binary_cross_entropy_with_logits"):
        objective(np.zeros(2), np.zeros((2, 1)), None)


@needs_xgboost
@needs_lightgbm
@needs_sklearn
def test_cross_entropy_on_two_classes_names_the_binary_loss():
    """The classifiers pass one margin per sample for two classes; setting num_class=2 then
    fails in LightGBM ("Multiclass objective and metrics don't match": LGBMClassifier picks
    binary_logloss for two classes), so the error names binary_cross_entropy_with_logits."""
    import lightgbm
    import xgboost
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    message = (r"cross_entropy needs \(n_samples, n_classes\) predictions; got shape \(569,\), "
               r"one margin per sample .*: for two classes use binary_cross_entropy_with_logits")
    with pytest.raises(ValueError, match=message):
        lightgbm.LGBMClassifier(n_estimators=2, verbose=-1, n_jobs=1,
                                objective=lb.lightgbm.objective(lb.cross_entropy)).fit(X, y)
    with pytest.raises(ValueError, match=message):
        xgboost.XGBClassifier(n_estimators=2, n_jobs=1,
                              objective=lb.xgboost.objective(lb.cross_entropy)).fit(X, y)
    # multiclass_hinge's twin for one margin per sample: hinge
    with pytest.raises(ValueError, match=r"multiclass_hinge needs .*: for two classes use "
                                         r"hinge \(labels 0/1 or -1/\+1\)"):
        xgboost.XGBClassifier(n_estimators=2, n_jobs=1,
                              objective=lb.xgboost.objective(lb.multiclass_hinge)).fit(X, y)


@needs_xgboost
@needs_lightgbm
@needs_sklearn
def test_where_a_custom_objective_starts():
    """What the guide says (no step taken: eta 0, LightGBM's learning rate 1e-300):
    xgboost.train and XGBRegressor start from base_score (0.5) as a margin, XGBClassifier
    from its logit for two classes (0), LightGBM from 0."""
    import lightgbm
    import xgboost
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    mse, logistic = lb.xgboost.objective(lb.mse), lb.xgboost.objective(
        lb.binary_cross_entropy_with_logits)
    common = dict(n_estimators=1, learning_rate=0.0, n_jobs=1)
    booster = xgboost.train({"eta": 0.0, "nthread": 1}, xgboost.DMatrix(X, label=y), 1, obj=mse)
    np.testing.assert_array_equal(booster.predict(xgboost.DMatrix(X), output_margin=True), 0.5)
    np.testing.assert_array_equal(xgboost.XGBRegressor(objective=mse, **common).fit(X, y)
                                  .predict(X), 0.5)
    np.testing.assert_array_equal(xgboost.XGBClassifier(objective=logistic, **common).fit(X, y)
                                  .predict(X, output_margin=True), 0.0)
    booster = lightgbm.train({"objective": lb.lightgbm.objective(lb.mse), "verbose": -1,
                              "learning_rate": 1e-300, "num_threads": 1},
                             lightgbm.Dataset(X, label=y), 1)
    np.testing.assert_array_equal(booster.predict(X, raw_score=True), 0.0)


@pytest.mark.parametrize("library", ["xgboost", "lightgbm"])
def test_poisson_objectives_refuse_negative_counts(library):
    """A negative label is refused by name and place, as XGBoost's count:poisson and
    LightGBM's poisson refuse it (the loss has no minimum there: a model trained towards
    -inf without a word); zero counts are fine."""
    objective = LIBRARIES[library].objective(lb.poisson_nll)
    grad, hess = objective(np.array([0.0, 3.0]), np.array([0.1, 0.2]))
    assert np.isfinite(grad).all() and (hess > 0).all()
    with pytest.raises(ValueError, match=r"poisson_nll takes counts, labels >= 0 .* label "
                                         r"-2.0 at index 1 is negative"):
        objective(np.array([1.0, -2.0, -1.0]), np.zeros(3))
