"""XGBoost and LightGBM custom objectives: the libraries' conventions against closed forms,
training equivalence with their built-in objectives on scikit-learn's bundled datasets,
non-built-in objectives trained end to end, the CuPy route (mocked), errors."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import cuda_host
import numpy as np
import pytest

import lossbackends as lb

HAVE_XGBOOST = importlib.util.find_spec("xgboost") is not None
HAVE_LIGHTGBM = importlib.util.find_spec("lightgbm") is not None
HAVE_SKLEARN = importlib.util.find_spec("sklearn") is not None
needs_xgboost = pytest.mark.skipif(
    not HAVE_XGBOOST, reason="XGBoost is not installed (pip install 'lossbackends[xgboost]')")
needs_lightgbm = pytest.mark.skipif(
    not HAVE_LIGHTGBM, reason="LightGBM is not installed (pip install 'lossbackends[lightgbm]')")
needs_sklearn = pytest.mark.skipif(not HAVE_SKLEARN,
                                   reason="scikit-learn is not installed (its bundled datasets)")
LIBRARIES = {"xgboost": lb.xgboost, "lightgbm": lb.lightgbm}


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


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
    s = _sigmoid(p)
    np.testing.assert_allclose(grad, (s - y) * w, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(hess, s * (1 - s) * w, rtol=1e-12)
    x = rng.normal(size=(n, classes))
    labels = rng.integers(0, classes, n).astype(np.float64)  # the libraries pass floats
    grad, hess = module.objective(lb.cross_entropy)(labels, x, w)
    prob = _softmax(x)
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

XGB_PARAMS = dict(max_depth=3, eta=0.3, tree_method="hist", nthread=1, base_score=0.0)
LGB_PARAMS = dict(num_leaves=8, learning_rate=0.3, verbose=-1, num_threads=1,
                  deterministic=True, force_row_wise=True)


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
        proba = (_softmax(margins) if margins.ndim == 2
                 else np.column_stack([1 - _sigmoid(margins), _sigmoid(margins)]))
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
