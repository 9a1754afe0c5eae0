"""XGBoost and LightGBM custom objectives: the libraries' conventions against closed forms,
training equivalence with their built-in objectives on scikit-learn's bundled datasets,
non-built-in objectives trained end to end, the CuPy route (mocked) (errors, labels,
options and pickling: test_boosting_checks.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import cuda_host
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

# --- the conventions, against closed forms (float64) --------------------------------------


@pytest.mark.parametrize("library", LIBRARIES)
def test_conventions_against_closed_forms(library):
    module = LIBRARIES[library]
    rng = np.random.default_rng(0)
    n, classes = 50, 4
    w = rng.uniform(0, 2, n)
    p = rng.normal(size=n)
    y = rng.normal(size=n)
    grad, hess = module.objective(lb.mse)(y, p, w)
    np.testing.assert_allclose(grad, (p - y) * w, rtol=1e-14)  # half squared error
    np.testing.assert_allclose(hess, w, rtol=1e-14)
    y = (rng.random(n) < 0.5) * 1.0
    grad, hess = module.objective("binary_cross_entropy_with_logits")(y, p, w)
    s = sigmoid(p)
    np.testing.assert_allclose(grad, (s - y) * w, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(hess, s * (1 - s) * w, rtol=1e-12)
    x = rng.normal(size=(n, classes))
    labels = rng.integers(0, classes, n).astype(np.float64)  # the libraries pass floats
    grad, hess = module.objective(lb.cross_entropy)(labels, x, w)
    prob = softmax(x)
    onehot = np.eye(classes)[labels.astype(int)]
    factor = 2.0 if library == "xgboost" else classes / (classes - 1)
    np.testing.assert_allclose(grad, (prob - onehot) * w[:, None], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(hess, factor * prob * (1 - prob) * w[:, None], rtol=1e-12)
    # hinge: labels 0/1 become -1/+1; the Hessian is the weight (0 almost everywhere),
    # and XGBoost's binary:hinge's float32 smallest normal, unweighted, where the margin is
    # met (its loss and gradient 0)
    grad, hess = module.objective(lb.hinge)(y, p, w)
    t = 2 * y - 1
    active = 1 - t * p > 0
    assert 0 < active.sum() < n
    met = np.finfo(np.float32).tiny if library == "xgboost" else None
    np.testing.assert_allclose(grad, np.where(active, -t, 0) * w)
    np.testing.assert_array_equal(hess, w if met is None else np.where(active, w, met))
    _, hess = module.objective(lb.hinge)(y, p)
    np.testing.assert_array_equal(hess, 1.0 if met is None else np.where(active, 1.0, met))
    # a margin of 2 moves where it is met
    _, hess = module.objective(lb.hinge, margin=2.0)(y, p)
    active = 2 - t * p > 0
    np.testing.assert_array_equal(hess, 1.0 if met is None else np.where(active, 1.0, met))
    # float32 margins at a float32 tie with a float64 margin: met where the kernel's
    # gradient is 0 (compared in float64, 0.7f < 0.7 gave the weight there)
    ties = np.array([0.7, -0.7, 0.5], np.float32)
    grad, hess = module.objective(lb.hinge, margin=np.float64(0.7))(
        np.array([1.0, 0.0, 1.0]), ties)
    np.testing.assert_array_equal(grad, [0.0, 0.0, -1.0])
    if met is not None:
        np.testing.assert_array_equal(hess, np.array([met, met, 1.0], np.float32))


@pytest.mark.parametrize("library", LIBRARIES)
def test_constant_hessians_of_losses_flat_almost_everywhere(library):
    """mae, pinball: Hessian 0 almost everywhere; huber and smooth_l1: 0 outside the
    quadratic zone; log_cosh: sech^2, which vanishes for large residuals. The objective
    gives them the weight (smooth_l1: over beta), the gradient their own."""
    module = LIBRARIES[library]
    rng = np.random.default_rng(5)
    n = 40
    w = rng.uniform(0.5, 2, n)
    y, p = rng.normal(size=n), 3 * rng.normal(size=n)
    cases = [(lb.mae, {}, 1.0), (lb.pinball, {"quantile": 0.8}, 1.0), (lb.huber, {}, 1.0),
             (lb.smooth_l1, {"beta": 0.5}, 2.0), (lb.smooth_l1, {"beta": 0.0}, 1.0),
             (lb.log_cosh, {}, 1.0)]
    for loss, options, per_weight in cases:
        for weight in (w, None):
            grad, hess = module.objective(loss, **options)(y, p, weight)
            expected = loss.grad(y, p, reduction="sum", weight=weight, **options)
            np.testing.assert_array_equal(grad, expected, err_msg=loss.name)
            np.testing.assert_allclose(hess, per_weight * (1.0 if weight is None else w),
                                       rtol=1e-15, err_msg=loss.name)
    # log_cosh far from its labels: sech^2 is 0 in float32 (and tiny in float64), the
    # objective's Hessian the weight, and the gradient tanh(e) = ±1
    y = np.array([0.0, 0.0, 300.0, 55.0], np.float32)
    p = np.array([0.5, -60.0, 0.0, 0.0], np.float32)
    _, true_hess = lb.log_cosh.grad_and_hess(y, p, reduction="sum")
    assert true_hess[0] > 0 and (true_hess[1:] == 0).all()
    grad, hess = module.objective(lb.log_cosh)(y, p, w[:4].astype(np.float32))
    np.testing.assert_allclose(grad, np.tanh(p.astype(np.float64) - y) * w[:4], rtol=1e-6)
    np.testing.assert_array_equal(hess, w[:4].astype(np.float32))


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_numba_finishing_pass_is_numpy_s(library, dtype, monkeypatch):
    """The conventions, the floor and the weights in one Numba pass give what the NumPy
    operations give (what runs without Numba)."""
    pytest.importorskip("numba", reason="Numba is not installed")
    from lossbackends import _boosting
    module = LIBRARIES[library]
    rng = np.random.default_rng(6)
    n, classes = 64, 5
    w = rng.uniform(0, 2, n).astype(dtype)
    y = (rng.random(n) < 0.5).astype(dtype)
    x = rng.normal(0, 30, n).astype(dtype)  # Hessians under the floor too
    labels = rng.integers(0, classes, n).astype(dtype)
    logits = rng.normal(0, 3, (n, classes)).astype(dtype)
    # infinite, NaN and negative weights: max(h, floor) w as the Numba pass selects it (a
    # floor of 0 times an infinite weight, NaN, is no floor: LightGBM's NumPy Hessians were
    # NaN there, Numba's inf)
    special = w.copy()
    special[:4] = [np.inf, -np.inf, np.nan, -1.0]
    for loss, first, second in ((lb.mse, y, x), (lb.binary_cross_entropy_with_logits, y, x),
                                (lb.hinge, y, x), (lb.cross_entropy, labels, logits),
                                (lb.sigmoid_focal, y, x)):  # negative Hessians where concave
        for weight in (w, special, None):
            ours = module.objective(loss)(first, second, weight)
            with monkeypatch.context() as patch:
                patch.setattr(_boosting, "_host_finish", lambda: None)
                reference = module.objective(loss)(first, second, weight)
            for a, b in zip(ours, reference, strict=True):
                assert a.dtype == dtype
                np.testing.assert_allclose(a, b, rtol=1e-6 if dtype == np.float32 else 1e-15,
                                           atol=0, err_msg=loss.name)


@pytest.mark.parametrize("library", ["xgboost", "lightgbm"])
def test_the_parallel_finishing_pass_is_numpy_s(library, monkeypatch):
    """Above PARALLEL_MIN_ELEMENTS the finishing pass is shared among the threads (and below
    it, on one): the same results
    as the NumPy operations, with and without sample weights (floored Hessians included)."""
    pytest.importorskip("numba", reason="Numba is not installed")
    from lossbackends import _boosting
    from lossbackends.backends.numba_backend import PARALLEL_MIN_ELEMENTS

    rng = np.random.default_rng(7)
    n = PARALLEL_MIN_ELEMENTS + 3
    y = (rng.random(n) < 0.5).astype(np.float32)
    x = rng.normal(0, 30, n).astype(np.float32)  # Hessians under the floor too
    w = rng.uniform(0, 2, n).astype(np.float32)
    y.flags.writeable = False  # labels as a library may hand them: read-only
    for loss in (lb.mse, lb.binary_cross_entropy_with_logits):
        for weight in (w, None):
            for m in (n, 1000):  # shared among the threads, and on one
                part = None if weight is None else weight[:m]
                ours = LIBRARIES[library].objective(loss)(y[:m], x[:m], part)
                with monkeypatch.context() as patch:
                    patch.setattr(_boosting, "_host_finish", lambda: None)
                    reference = LIBRARIES[library].objective(loss)(y[:m], x[:m], part)
                for a, b in zip(ours, reference, strict=True):
                    np.testing.assert_allclose(a, b, rtol=1e-6, atol=0, err_msg=loss.name)
    bad = y.copy()
    bad[-1] = 2.0  # in the last chunk: its thread's largest label is found
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        LIBRARIES[library].objective(lb.binary_cross_entropy_with_logits)(bad, x, None)


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_floor_in_the_kernel_s_pass_gives_the_finishing_pass_s_bits(library, dtype,
                                                                      monkeypatch):
    """An elementwise loss with no scale to apply (binary logistic, focal) is floored in the
    kernel's own pass on the Numba backend: the same values as the kernel's Hessians floored
    in the finishing pass, weighted or not, with Hessians under the floor (far margins,
    focal's negative ones), zero and negative weights (LightGBM takes them: max(h, floor)
    w there too, as its own objectives weigh), NaN and infinite margins, on one thread
    and shared among the threads."""
    pytest.importorskip("numba", reason="Numba is not installed")
    from lossbackends import _boosting, _dispatch
    from lossbackends.backends.numba_backend import PARALLEL_MIN_ELEMENTS

    rng = np.random.default_rng(11)
    n = PARALLEL_MIN_ELEMENTS + 5
    y = (rng.random(n) < 0.5).astype(dtype)
    y[:50] = rng.random(50)  # probability labels too
    x = rng.normal(0, 30, n).astype(dtype)
    x[50:56] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30]
    w = rng.uniform(0, 2, n).astype(dtype)
    w[60:70] = 0.0
    w[70:80] *= -1.0
    floored = []
    original = _boosting._floored

    def spy(loss, labels, *args):
        floored.append(loss.name)
        grad, hess, outside = original(loss, labels, *args)
        # whether the kernel's pass saw labels outside [0, 1]: soft_margin's -1s, else none
        assert bool(outside) == bool(np.count_nonzero(~((labels >= 0) & (labels <= 1))))
        return grad, hess, outside

    monkeypatch.setattr(_boosting, "_floored", spy)
    for loss in (lb.binary_cross_entropy_with_logits, lb.sigmoid_focal, lb.soft_margin):
        labels = 2 * (y > 0.5).astype(dtype) - 1 if loss is lb.soft_margin else y
        for m in (n, 100):  # shared among the threads, and on one
            for weight in (w[:m], None):
                objective = LIBRARIES[library].objective(loss)
                fused = objective(labels[:m], x[:m], weight)
                with monkeypatch.context() as patch:  # the kernel, then the finishing pass
                    patch.setattr(_dispatch, "backend_for", lambda *args: "numba, unfused")
                    finished = objective(labels[:m], x[:m], weight)
                for a, b in zip(fused, finished, strict=True):
                    assert a.dtype == dtype
                    np.testing.assert_array_equal(a, b, err_msg=f"{loss.name} {m} {weight}")
                    np.testing.assert_array_equal(np.signbit(a), np.signbit(b))
    assert set(floored) == {"binary_cross_entropy_with_logits", "sigmoid_focal",
                            "soft_margin"}


def test_xgboost_floors_the_hessian_at_1e_16():
    x = np.array([0.0, 50.0, -800.0])
    y = np.array([0.0, 1.0, 0.0])
    _, hess = lb.xgboost.objective(lb.binary_cross_entropy_with_logits)(y, x)
    assert hess[0] == 0.25 and hess[1] == pytest.approx(np.exp(-50.0)) and hess[2] == 1e-16
    _, hess = lb.xgboost.objective(lb.binary_cross_entropy_with_logits)(y, x, np.array([2, 2, 0.5]))
    assert hess[2] == 0.5e-16  # the floor times the weight, as XGBoost's max(h, 1e-16) w
    _, hess = lb.lightgbm.objective(lb.binary_cross_entropy_with_logits)(y, x, None)
    assert hess[2] == 0.0  # LightGBM's own objectives floor nothing above 0


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_no_negative_hessian_on_any_backend(backend):
    # sigmoid_focal is concave for badly misclassified samples: its Hessian there is
    # negative, and both libraries' objectives make it their floor (0 for LightGBM)
    if backend not in lb.available_backends():
        pytest.skip(f"backend {backend!r} is not available here")
    y, x = np.array([1.0, 0.0, 1.0]), np.array([-6.0, 6.0, 0.5])
    _, true_hess = lb.sigmoid_focal.grad_and_hess(y, x, reduction="sum", backend=backend)
    assert true_hess[0] < 0 and true_hess[1] < 0 and true_hess[2] > 0
    for module, floor in ((lb.lightgbm, 0.0), (lb.xgboost, 1e-16)):
        _, hess = module.objective(lb.sigmoid_focal, backend=backend)(y, x, None)
        np.testing.assert_array_equal(hess, [floor, floor, true_hess[2]])


def test_float32_margins_stay_float32():
    p = np.linspace(-2, 2, 11, dtype=np.float32)
    grad, hess = lb.xgboost.objective(lb.binary_cross_entropy_with_logits)(p > 0, p)
    assert grad.dtype == hess.dtype == np.float32


# --- non-built-in objectives: finite differences of the loss (float64) ---------------------


@pytest.mark.parametrize("library", LIBRARIES)
def test_weighted_objectives_against_finite_differences(library):
    """pos_weight and class weights with smoothing: no built-in equivalent, so the
    objective's (grad, hess) are checked against differences of the per-sample loss."""
    module = LIBRARIES[library]
    rng = np.random.default_rng(1)
    n, classes, h = 30, 5, 1e-4
    w = rng.uniform(0.5, 2, n)
    y = (rng.random(n) < 0.3) * 1.0
    p = rng.normal(size=n)
    grad, hess = module.objective(lb.binary_cross_entropy_with_logits, pos_weight=3.0)(y, p, w)

    def losses(q):
        return lb.binary_cross_entropy_with_logits(y, q, pos_weight=3.0, weight=w,
                                                   reduction="none")

    np.testing.assert_allclose(grad, (losses(p + h) - losses(p - h)) / (2 * h), rtol=1e-7)
    fd_hess = (losses(p + h) - 2 * losses(p) + losses(p - h)) / h**2
    np.testing.assert_allclose(hess, fd_hess, rtol=1e-5)
    cw = rng.uniform(0.5, 2, classes)
    x = rng.normal(size=(n, classes))
    labels = rng.integers(0, classes, n)
    options = dict(class_weight=cw, label_smoothing=0.1)
    grad, hess = module.objective(lb.cross_entropy, **options)(labels, x, w)
    factor = 2.0 if library == "xgboost" else classes / (classes - 1)
    for c in range(classes):
        step = np.zeros_like(x)
        step[:, c] = h

        def row_losses(z):
            return w * lb.cross_entropy(labels, z, reduction="none", **options)

        up, mid, down = row_losses(x + step), row_losses(x), row_losses(x - step)
        np.testing.assert_allclose(grad[:, c], (up - down) / (2 * h), rtol=1e-6, atol=1e-10)
        np.testing.assert_allclose(hess[:, c], factor * (up - 2 * mid + down) / h**2, rtol=1e-4,
                                   atol=1e-7)


# --- training equivalence with the built-in objectives ------------------------------------



def _datasets():
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits

    X, y = load_diabetes(return_X_y=True)
    yield "regression", X, y, np.full(len(y), y.mean()), lb.mse
    # the Poisson objectives' Hessian exp(x + max_delta_step), 0.7 by default
    yield "poisson", X, y, np.full(len(y), np.log(y.mean())), lb.poisson_nll
    X, y = load_breast_cancer(return_X_y=True)
    rate = y.mean()
    yield "binary", X, y, np.full(len(y), np.log(rate / (1 - rate))), \
        lb.binary_cross_entropy_with_logits
    X, y = load_digits(return_X_y=True)
    prior = np.bincount(y) / len(y)
    yield "multiclass", X, y, np.tile(np.log(prior), (len(y), 1)), lb.cross_entropy


BUILT_IN = {"xgboost": {"regression": "reg:squarederror", "poisson": "count:poisson",
                        "binary": "binary:logistic", "multiclass": "multi:softprob"},
            "lightgbm": {"regression": "regression", "poisson": "poisson", "binary": "binary",
                         "multiclass": "multiclass"}}


@needs_xgboost
@needs_sklearn
def test_xgboost_trains_the_same_models_as_its_built_in_objectives():
    import xgboost as xgb

    for task, X, y, margin, loss in _datasets():
        params = dict(XGB_PARAMS)
        if task == "multiclass":
            params["num_class"] = 10
        if task == "poisson":
            # count:poisson caps each leaf at 0.7 (the tree parameter it sets itself); a
            # custom objective is given the cap. From a far start (log 0.5, count:poisson's
            # for base_score 0.5) the cap binds: without it ours overshoots to margins of 26-64
            params["max_delta_step"] = 0.7
            margin = np.full(len(y), np.log(0.5))
        rounds = 5 if task == "multiclass" else 10
        predictions = []
        for objective, obj in ((BUILT_IN["xgboost"][task], None),
                               (None, lb.xgboost.objective(loss))):
            data = xgb.DMatrix(X, label=y)
            data.set_base_margin(margin)  # the one thing set: where boosting starts
            booster = xgb.train(dict(params, objective=objective) if objective else params,
                                data, rounds, obj=obj)
            predictions.append(booster.predict(data, output_margin=True))
        assert predictions[0].shape == predictions[1].shape
        np.testing.assert_allclose(predictions[1], predictions[0], rtol=0, atol=1e-6,
                                   err_msg=task)


@needs_xgboost
@needs_sklearn
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_xgboost_hinge_trains_binary_hinge_s_model(backend):
    """binary:hinge's Hessian is the weight where y p < 1 and float32's smallest normal
    where the margin is met: ours trains its model, with and without sample weights (with
    the weight everywhere, the margins differed by up to 1.7)."""
    import xgboost as xgb
    from sklearn.datasets import load_breast_cancer

    if backend not in lb.available_backends():
        pytest.skip(f"the {backend} backend is not installed")
    X, y = load_breast_cancer(return_X_y=True)
    weight = np.random.default_rng(4).uniform(0, 2, len(y))
    for w in (None, weight):
        predictions = []
        for objective, obj in (("binary:hinge", None),
                               (None, lb.xgboost.objective(lb.hinge, backend=backend))):
            data = xgb.DMatrix(X, label=y, weight=w, base_margin=np.zeros(len(y)))
            params = dict(XGB_PARAMS, objective=objective) if objective else XGB_PARAMS
            booster = xgb.train(params, data, 10, obj=obj)
            predictions.append(booster.predict(data, output_margin=True))
        np.testing.assert_allclose(predictions[1], predictions[0], rtol=0, atol=1e-6)


@needs_lightgbm
@needs_sklearn
def test_lightgbm_trains_the_same_models_as_its_built_in_objectives():
    import lightgbm as lgbm

    for task, X, y, margin, loss in _datasets():
        params = dict(LGB_PARAMS)
        if task == "multiclass":
            params["num_class"] = 10
        rounds = 5 if task == "multiclass" else 10
        init = margin.ravel(order="F")  # LightGBM's layout: class-major
        predictions = []
        for objective in (BUILT_IN["lightgbm"][task], lb.lightgbm.objective(loss)):
            data = lgbm.Dataset(X, label=y, init_score=init)
            booster = lgbm.train(dict(params, objective=objective), data, rounds)
            predictions.append(booster.predict(X, raw_score=True))
        np.testing.assert_allclose(predictions[1], predictions[0], rtol=0, atol=1e-6,
                                   err_msg=task)


@needs_xgboost
@needs_sklearn
def test_xgboost_estimators_with_sample_weights():
    import xgboost as xgb
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    w = np.random.default_rng(2).uniform(0.2, 3, len(y))
    start = float(np.average(y, weights=w))
    common = dict(n_estimators=10, max_depth=3, learning_rate=0.3, tree_method="hist",
                  n_jobs=1, base_score=start)
    built_in = xgb.XGBRegressor(objective="reg:squarederror", **common).fit(X, y, sample_weight=w)
    ours = xgb.XGBRegressor(objective=lb.xgboost.objective(lb.mse), **common)
    ours.fit(X, y, sample_weight=w)
    np.testing.assert_allclose(ours.predict(X), built_in.predict(X), rtol=0, atol=1e-4)
    unweighted = xgb.XGBRegressor(objective=lb.xgboost.objective(lb.mse), **common).fit(X, y)
    assert np.abs(unweighted.predict(X) - ours.predict(X)).max() > 1  # the weights mattered


@needs_lightgbm
@needs_sklearn
def test_lightgbm_estimators_with_sample_weights():
    import lightgbm as lgbm
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    w = np.random.default_rng(3).uniform(0.2, 3, len(y))
    rate = float(np.average(y, weights=w))
    init = np.full(len(y), np.log(rate / (1 - rate)))
    common = dict(n_estimators=10, num_leaves=8, learning_rate=0.3, verbose=-1, n_jobs=1,
                  deterministic=True, force_row_wise=True)
    built_in = lgbm.LGBMRegressor(objective="binary", **common)
    built_in.fit(X, y, sample_weight=w, init_score=init)
    ours = lgbm.LGBMRegressor(objective=lb.lightgbm.objective(lb.binary_cross_entropy_with_logits),
                              **common)
    ours.fit(X, y, sample_weight=w, init_score=init)
    np.testing.assert_allclose(ours.predict(X, raw_score=True),
                               built_in.predict(X, raw_score=True), rtol=0, atol=1e-6)


@needs_xgboost
@needs_sklearn
def test_a_weighted_objective_trains_end_to_end():
    """No built-in equivalent: BCE with logits with pos_weight, and cross_entropy with class
    weights and label smoothing; each lowers its own loss."""
    import xgboost as xgb
    from sklearn.datasets import load_breast_cancer, load_digits

    X, y = load_breast_cancer(return_X_y=True)
    data = xgb.DMatrix(X, label=y)
    booster = xgb.train(XGB_PARAMS, data, 5,
                        obj=lb.xgboost.objective(lb.binary_cross_entropy_with_logits,
                                                 pos_weight=2.0))
    margin = booster.predict(data, output_margin=True)
    assert lb.binary_cross_entropy_with_logits(y, margin.astype(np.float64), pos_weight=2.0) < \
        0.5 * lb.binary_cross_entropy_with_logits(y, np.zeros(len(y)), pos_weight=2.0)
    X, y = load_digits(return_X_y=True)
    X, y = X[:1500], y[:1500]  # 15 000 margins: one chunk (no parallel kernels to compile)
    cw = np.linspace(0.5, 2, 10)
    data = xgb.DMatrix(X, label=y)
    booster = xgb.train(dict(XGB_PARAMS, num_class=10), data, 3,
                        obj=lb.xgboost.objective(lb.cross_entropy, class_weight=cw,
                                                 label_smoothing=0.1))
    margin = booster.predict(data, output_margin=True).astype(np.float64)
    options = dict(class_weight=cw, label_smoothing=0.1)
    assert lb.cross_entropy(y, margin, **options) < 0.5 * lb.cross_entropy(
        y, np.zeros((len(y), 10)), **options)


@needs_xgboost
@needs_sklearn
def test_focal_and_huber_objectives_train_end_to_end():
    """No built-in equivalent: each objective's (grad, hess) against float64 differences of
    the loss at the trained margins, and training lowers the loss."""
    import xgboost as xgb
    from sklearn.datasets import load_breast_cancer, load_diabetes

    X, y = load_breast_cancer(return_X_y=True)
    data = xgb.DMatrix(X, label=y)
    objective = lb.xgboost.objective(lb.sigmoid_focal, alpha=0.25, gamma=2.0)
    booster = xgb.train(XGB_PARAMS, data, 5, obj=objective)
    margin = booster.predict(data, output_margin=True).astype(np.float64)
    assert lb.sigmoid_focal(y, margin) < 0.5 * lb.sigmoid_focal(y, np.zeros(len(y)))
    grad, hess = objective(y, margin)
    step = 1e-4

    def losses(q):
        return lb.sigmoid_focal(y, q, reduction="none")

    np.testing.assert_allclose(grad, (losses(margin + step) - losses(margin - step)) / (2 * step),
                               rtol=1e-6, atol=1e-12)
    fd = (losses(margin + step) - 2 * losses(margin) + losses(margin - step)) / step**2
    np.testing.assert_allclose(hess, np.maximum(fd, 1e-16), rtol=1e-4, atol=1e-8)
    X, y = load_diabetes(return_X_y=True)
    data = xgb.DMatrix(X, label=y)
    data.set_base_margin(np.full(len(y), np.median(y)))
    objective = lb.xgboost.objective(lb.huber, delta=20.0)
    booster = xgb.train(XGB_PARAMS, data, 10, obj=objective)
    margin = booster.predict(data, output_margin=True).astype(np.float64)
    assert lb.huber(y, margin, delta=20.0) < 0.8 * lb.huber(y, np.full(len(y), np.median(y)),
                                                            delta=20.0)
    grad, hess = objective(y, margin)
    np.testing.assert_allclose(
        grad, (lb.huber(y, margin + step, delta=20.0, reduction="none")
               - lb.huber(y, margin - step, delta=20.0, reduction="none")) / (2 * step), rtol=1e-6)
    np.testing.assert_array_equal(hess, 1.0)  # LightGBM's Huber convention


@needs_lightgbm
@needs_sklearn
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_lightgbm_negative_weights_train_the_built_in_model(backend):
    """LightGBM takes negative sample weights, and its objectives weigh their Hessians
    (h w < 0 there): ours too, the floor before the weight, so that the same model comes
    out (binary and regression, breast cancer with every eleventh weight -0.3)."""
    if backend not in lb.available_backends():
        pytest.skip(f"backend {backend!r} is not available here")
    import lightgbm
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    w = np.ones(len(y))
    w[3::11] = -0.3
    base = {"num_leaves": 15, "verbose": -1, "boost_from_average": False,
            "deterministic": True, "force_row_wise": True, "num_threads": 1}

    def margins(objective):
        data = lightgbm.Dataset(X, label=y, weight=w)
        return lightgbm.train({**base, "objective": objective}, data, 20).predict(
            X, raw_score=True)

    for loss, built_in in ((lb.binary_cross_entropy_with_logits, "binary"),
                           (lb.mse, "regression")):
        ours = margins(lb.lightgbm.objective(loss, backend=backend))
        np.testing.assert_allclose(ours, margins(built_in), atol=1e-6, err_msg=built_in)


def test_byte_swapped_margins_are_computed_natively():
    """Big-endian margins (as NumPy reads some files) give the native margins' results:
    their weights and labels are cast to the native dtype too (the Numba passes read raw
    bytes), and the probability labels' check still sees a bad label."""
    w = np.array([0.7, 1.1, 1.3, 0.9])
    y, p = np.array([0.0, 1.0, 0.0, 1.0]), np.linspace(-1.0, 1.0, 4)
    for module in LIBRARIES.values():
        for loss in (lb.mse, lb.binary_cross_entropy_with_logits):
            native = module.objective(loss)(y, p, w)
            for a, b in zip(module.objective(loss)(y, p.astype(">f8"), w), native, strict=True):
                np.testing.assert_array_equal(a, b)
        scores = np.array([[0.0, 1, 2], [1, 0, 0]])
        native = module.objective(lb.cross_entropy)(np.array([2, 0]), scores, w[:2])
        swapped = module.objective(lb.cross_entropy)(np.array([2, 0]), scores.astype(">f8"), w[:2])
        for a, b in zip(swapped, native, strict=True):
            np.testing.assert_array_equal(a, b)
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            module.objective(lb.binary_cross_entropy_with_logits)(
                np.array([0, 1, 2.0, -1]), np.zeros(4, ">f4"))


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_integer_margins_are_computed_as_float64(backend):
    """Integer and bool margins give float64 margins' results, as the losses take them
    (the weights and labels were cast to int32, which the Numba pass read as the float64
    gradient's: past their end, and weights of 5e-324)."""
    rng = np.random.default_rng(3)
    n = 2**18  # (the pass's threads share it)
    y, w = rng.integers(0, 2, n).astype(np.float64), rng.uniform(0.5, 2, n)
    scores = rng.integers(-3, 4, (n // 8, 3))
    for module in LIBRARIES.values():
        for loss, labels, p in [(lb.binary_cross_entropy_with_logits, y, y.astype(np.int32)),
                                (lb.binary_cross_entropy_with_logits, y, y.astype(bool)),
                                (lb.mae, y, rng.integers(-2, 3, n)),
                                (lb.cross_entropy, y[: n // 8] * 2, scores)]:
            objective = module.objective(loss, backend=backend)
            for weight in (None, w[: len(labels)]):
                expected = objective(labels, p.astype(np.float64), weight)
                for a, b in zip(objective(labels, p, weight), expected, strict=True):
                    np.testing.assert_array_equal(a, b, err_msg=f"{loss.name} {p.dtype}")


def test_the_settings_choose_the_objectives_host_backend():
    """``LOSSBACKENDS_BACKEND=numpy`` and ``use_backend("numpy")`` keep an objective off
    Numba, as ``backend="numpy"`` does (its passes too: Numba is never imported)."""
    code = """if True:
        import os, sys, numpy as np, lossbackends as lb
        y, p, w = np.array([0.0, 1.0]), np.array([0.0, 1.0]), np.array([1.0, 2.0])
        def run():
            for module in (lb.xgboost, lb.lightgbm):
                for loss in (lb.binary_cross_entropy_with_logits, lb.mse, lb.huber):
                    module.objective(loss)(y, p, w)
        if os.environ.get("LOSSBACKENDS_BACKEND"):
            run()
        else:
            with lb.use_backend("numpy"):
                run()
        print("numba" in sys.modules)
    """
    env = {k: v for k, v in os.environ.items() if k != "LOSSBACKENDS_BACKEND"}
    for extra in ({"LOSSBACKENDS_BACKEND": "numpy"}, {}):
        result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                text=True, env={**env, **extra})
        assert result.stdout.strip() == "False", (extra, result.stdout, result.stderr)


# --- the CuPy route, mocked: GPU margins stay where they are -------------------------------


_DeviceArray = cuda_host.DeviceArray  # stands in for a CuPy array


def test_cupy_margins_go_to_the_cupy_backend_without_a_host_copy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", cuda_host.fake_cupy())
    seen = {}

    class RecordingLoss:
        name = lb.binary_cross_entropy_with_logits.name
        _class_indices = False

        def grad_and_hess(self, y_true, y_pred, **options):
            seen.update(y_true=y_true, y_pred=y_pred, weight=options.get("weight"))
            grad, hess = lb.binary_cross_entropy_with_logits.grad_and_hess(
                np.asarray(y_true), np.asarray(y_pred), backend="numpy", reduction="sum",
                weight=None if options.get("weight") is None else np.asarray(options["weight"]))
            return grad.view(_DeviceArray), hess.view(_DeviceArray)

    objective = lb.xgboost.objective(lb.binary_cross_entropy_with_logits)
    objective.loss = RecordingLoss()
    margins = np.linspace(-3, 3, 8, dtype=np.float32).view(_DeviceArray)
    labels = (np.arange(8) % 2).astype(np.float32)  # from DMatrix.get_label(): host

    class FakeDMatrix:
        def get_label(self):
            return labels

        def get_weight(self):
            return np.full(8, 2.0, np.float32)

    grad, hess = objective(margins, FakeDMatrix())
    assert seen["y_pred"] is margins  # the margins themselves: no copy
    assert isinstance(seen["y_true"], _DeviceArray) and isinstance(seen["weight"], _DeviceArray)
    assert isinstance(grad, _DeviceArray) and isinstance(hess, _DeviceArray)
    expected = lb.xgboost.objective(lb.binary_cross_entropy_with_logits)(
        np.asarray(margins), FakeDMatrix())
    np.testing.assert_allclose(np.asarray(grad), expected[0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(hess), expected[1], rtol=1e-6)
    # labels outside [0, 1] are caught on the host, before anything runs on the GPU
    labels[3] = 2.0
    seen.clear()
    with pytest.raises(ValueError, match="label 2.0 at index 3 is not"):
        objective(margins, FakeDMatrix())
    assert not seen
