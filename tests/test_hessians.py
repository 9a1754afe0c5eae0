"""``grad_and_hess``: the Hessian's diagonal against central finite differences of our own
gradient (float64), against torch.func / jax Hessians where installed, special values the
same on every backend, the ``out=`` pair and its errors, Dask."""

from __future__ import annotations

import importlib.util
import zlib

import numpy as np
import pytest
from conftest import bits, host, on

import lossbackends as lb

ELEMENTWISE = ("mse", "binary_cross_entropy", "binary_cross_entropy_with_logits", "hinge")
SECOND_SET = ("mae", "huber", "smooth_l1", "log_cosh", "squared_hinge", "soft_margin",
              "sigmoid_focal", "poisson_nll", "kl_div", "pinball")
# the ones whose float32 arithmetic differs from float64's by more than rounding (exp, log)
TRANSCENDENTAL = ("log_cosh", "soft_margin", "sigmoid_focal", "poisson_nll")
REDUCTIONS = ("mean", "sum", "none")
STEP = 1e-6


def _elementwise_inputs(loss, rng, shape):
    """Inputs away from kinks and clip bounds, where finite differences are exact enough."""
    if loss == "binary_cross_entropy":
        y = rng.random(shape) if rng.random() < 0.5 else (rng.random(shape) < 0.5) * 1.0
        p = rng.uniform(0.05, 0.95, shape)
    elif loss == "binary_cross_entropy_with_logits":
        y, p = rng.random(shape), rng.normal(0, 3, shape)
    elif loss in ("hinge", "squared_hinge", "soft_margin"):
        y = np.where(rng.random(shape) < 0.5, -1.0, 1.0)
        p = y * rng.choice([-1.0, 1.0], shape) * rng.uniform(0.2, 3.0, shape)
        # away from the kinks (margins 1 and 0.5)
        p = np.where(np.abs(1.0 - y * p) < 0.1, p + 0.5, p)
        p = np.where(np.abs(0.5 - y * p) < 0.1, p + 0.3 * y, p)
    elif loss in ("mae", "huber", "smooth_l1", "log_cosh", "pinball"):
        # errors away from the kinks (0, and delta or beta: 0.5, 1, 2)
        y = rng.normal(size=shape)
        e = rng.choice([-1.0, 1.0], shape) * rng.choice([0.2, 0.7, 1.4, 2.6], shape)
        p = y + e + rng.uniform(-0.05, 0.05, shape)
    elif loss == "sigmoid_focal":
        y = rng.random(shape) if rng.random() < 0.5 else (rng.random(shape) < 0.5) * 1.0
        p = rng.normal(0, 3, shape)
    elif loss == "poisson_nll":  # rates > 0, so that either log_input fits
        y, p = rng.poisson(3, shape) * 1.0, rng.uniform(0.5, 4, shape)
    elif loss == "kl_div":
        y, p = rng.random(shape), np.log(rng.uniform(0.05, 1, shape))
    else:
        y, p = rng.normal(size=shape), rng.normal(size=shape)
    return y, p


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("loss", [*ELEMENTWISE, *SECOND_SET])
def test_in_place_gives_the_bits_of_out(backend, loss, dtype):
    """The gradient written over y_pred is the one written elsewhere, bit for bit, and the
    value too, and the gradient of ``grad`` and ``grad_and_hess`` that of
    ``value_and_grad``: with labels of 0 and 1 (the Numba kernels' form for them, run again
    where a block holds another label) and without, one chunk and parallel chunks, with the
    Hessian. (Numba computes an in-place block aside first: LLVM leaves loops whose arrays
    overlap unvectorised, 10-20x slower.)"""
    rng = np.random.default_rng(17)
    for n in (2049, 5000, 2**17, 2**17 + 4099):  # one chunk, and the parallel chunks
        y, p = _elementwise_inputs(loss, rng, (n,))
        p[-4:] = np.nan, np.inf, -np.inf, 1e-310  # (in the blocks' last, short or not)
        y, p = y.astype(dtype), p.astype(dtype)
        if loss in ("binary_cross_entropy", "sigmoid_focal"):
            y = (rng.random(n) < 0.5).astype(dtype)
            # a later block of labels 0 and 1 but one, inside a block of each of the
            # Numba kernels' sizes (512, 1024, 2048; float64 256, 512, 2048): every kernel
            # of a loss must split alike
            y[min(2048 + 512 + 9, n - 1)] = 0.5
        function = getattr(lb, loss)
        apart = on(backend, np.empty_like(p))
        with np.errstate(invalid="ignore"):  # NumPy's sum of inf and -inf losses
            value = function.value_and_grad(on(backend, y), on(backend, p), out=apart,
                                            reduction="sum", backend=backend)[0]
        written = on(backend, p.copy())
        with np.errstate(invalid="ignore"):
            value_in_place = function.value_and_grad(on(backend, y), written, out=written,
                                                     reduction="sum", backend=backend)[0]
        assert host(value_in_place).tobytes() == host(value).tobytes()
        assert host(written).tobytes() == host(apart).tobytes()
        # and the kernels that compute no value, or the Hessian too, give the same bits:
        # where two of a loss's divisions shared a divisor (the float64 log1p's 1 + t and
        # the sigmoid's), LLVM multiplied by one reciprocal in the kernels of the value only
        for alone in (function.grad(on(backend, y), on(backend, p), reduction="sum",
                                    backend=backend),
                      function.grad_and_hess(on(backend, y), on(backend, p), reduction="sum",
                                             backend=backend)[0]):
            assert bits(alone) == bits(apart)  # (a NaN's sign may differ between kernels)
        hess = on(backend, np.empty_like(p))
        function.grad_and_hess(on(backend, y), on(backend, p), out=(apart, hess), backend=backend)
        written = on(backend, p.copy())
        hess_in_place = on(backend, np.empty_like(p))
        function.grad_and_hess(on(backend, y), written, out=(written, hess_in_place),
                               backend=backend)
        assert host(written).tobytes() == host(apart).tobytes()
        assert host(hess_in_place).tobytes() == host(hess).tobytes()


def _elementwise_options(loss, rng, shape, option):
    """The option set number ``option`` (False: none; True: the first) of ``loss``."""
    if not option:
        return {}
    sets = {"binary_cross_entropy": [{"eps": 1e-3}],
            "binary_cross_entropy_with_logits": [{"pos_weight": rng.uniform(0.5, 3, shape[-1:])}],
            "hinge": [{"margin": 0.5}], "huber": [{"delta": 0.5}], "smooth_l1": [{"beta": 2.0}],
            "squared_hinge": [{"margin": 0.5}],
            # gamma below 2: q^(gamma - 2) in the second derivative; 0.5: by pow, 3: by
            # products (the kernels' two forms)
            "sigmoid_focal": [{"alpha": None, "gamma": 1.5}, {"gamma": 0.5, "alpha": 0.9},
                              {"gamma": 3.0}],
            "poisson_nll": [{"log_input": False, "full": True},
                            {"log_input": False, "full": True, "eps": 0.5}],
            "kl_div": [{"log_target": True}], "pinball": [{"quantile": 0.9}]}
    return dict(sets.get(loss, [{}])[int(option) - 1])


# the second set on two of the combinations (each one compiles Numba kernels of its own)
ELEMENTWISE_CASES = [
    *((loss, reduction, weighted, option) for loss in ELEMENTWISE for reduction in REDUCTIONS
      for weighted in (False, True) for option in (False, True)),
    *((loss, *case) for loss in SECOND_SET for case in (("mean", True, False), ("none", False, True))),
    # further option sets, without a weight
    ("sigmoid_focal", "none", False, 2), ("sigmoid_focal", "none", False, 3),
    ("poisson_nll", "none", False, 2),
]


@pytest.mark.parametrize(("loss", "reduction", "weighted", "option"), ELEMENTWISE_CASES)
def test_elementwise_hessian_is_the_derivative_of_the_gradient(backend, loss, reduction,
                                                               weighted, option):
    # (crc32, not hash(): str hashes change per process, and a failure must reproduce)
    rng = np.random.default_rng(zlib.crc32(repr((loss, reduction, weighted, option)).encode()))
    shape = (7, 13)
    y, p = _elementwise_inputs(loss, rng, shape)
    options = _elementwise_options(loss, rng, shape, option)
    if weighted:
        options["weight"] = rng.uniform(0, 2, shape)
    options = {k: on(backend, v) if isinstance(v, np.ndarray) else v for k, v in options.items()}
    function = getattr(lb, loss)
    call = dict(reduction=reduction, backend=backend, **options)
    grad, hess = function.grad_and_hess(on(backend, y), on(backend, p), **call)
    assert grad.shape == hess.shape == p.shape and host(hess).dtype == np.float64
    # the gradient is elementwise: one perturbation of every element at once
    up = host(function.grad(on(backend, y), on(backend, p + STEP), **call))
    down = host(function.grad(on(backend, y), on(backend, p - STEP), **call))
    expected = (up - down) / (2 * STEP)
    scale = np.max(np.abs(expected), initial=1e-300)
    np.testing.assert_allclose(host(hess), expected, rtol=1e-6, atol=1e-7 * scale)
    # the gradient of grad_and_hess is the gradient's, bit for bit
    np.testing.assert_array_equal(host(grad), host(function.grad(on(backend, y), on(backend, p),
                                                                 **call)))


CE_CASES = [
    {},
    {"class_weight": [0.5, 2.0, 1.0, 0.25, 1.5]},
    {"label_smoothing": 0.2},
    {"class_weight": [0.5, 2.0, 1.0, 0.25, 1.5], "label_smoothing": 0.1, "ignore_index": 3},
    {"soft": True},
    {"soft": True, "class_weight": [0.5, 2.0, 1.0, 0.25, 1.5], "label_smoothing": 0.3},
    # the z-loss and soft-capping (below 40 the kernels shift by the cap, above by the max)
    {"z_loss": 0.05, "class_weight": [0.5, 2.0, 1.0, 0.25, 1.5], "ignore_index": 3},
    {"softcap": 3.0, "z_loss": 0.1, "label_smoothing": 0.1},
    {"softcap": 50.0},
    {"soft": True, "softcap": 2.0, "z_loss": 0.02},
]


def _ce_inputs(rng, case, rows=11, classes=5):
    x = rng.normal(0, 2, (rows, classes))
    if case.get("soft"):
        t = rng.dirichlet(np.ones(classes), rows)
    else:
        t = rng.integers(0, classes, rows)
    options = {k: (np.asarray(v) if isinstance(v, list) else v) for k, v in case.items()
               if k != "soft"}
    return t, x, options


@pytest.mark.parametrize("case", CE_CASES)
def test_cross_entropy_calls_give_one_gradient(backend, case, dtype=np.float64):
    """``grad``, ``value_and_grad`` and ``grad_and_hess`` give the same gradient bits, with
    every option: the Hessian's divisions by a row's sum of exps once turned the
    gradient's into a product by their reciprocal (float64, z-loss and probabilities:
    1 ulp apart in a quarter of the rows; float32 rounds the Hessian's reciprocal to
    float32, apart, and its kernels are compiled by the tests above). Rows of 5 classes
    and of 700."""
    rng = np.random.default_rng(11)
    for classes in (5, 700):
        t, x, options = _ce_inputs(rng, case, rows=200, classes=5)
        if classes != 5:  # (the options' per-class arrays are for 5 classes)
            x = rng.normal(0, 4, (200, classes))
            t = (rng.dirichlet(np.ones(classes), 200) if case.get("soft")
                 else rng.integers(0, classes, 200))
            options = {k: v for k, v in options.items() if not isinstance(v, np.ndarray)
                       and k != "ignore_index"}
        x = x.astype(dtype)
        t = t.astype(dtype) if case.get("soft") else t
        options = {k: on(backend, v.astype(dtype)) if isinstance(v, np.ndarray) else v
                   for k, v in options.items()}
        call = dict(backend=backend, **options)
        y, p = on(backend, t), on(backend, x)
        grad = host(lb.cross_entropy.grad(y, p, **call))
        for other in (lb.cross_entropy.value_and_grad(y, p, **call)[1],
                      lb.cross_entropy.grad_and_hess(y, p, **call)[0]):
            assert host(other).tobytes() == grad.tobytes(), (classes, case)


@pytest.mark.parametrize("case", CE_CASES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_hessian_is_the_derivative_of_the_gradient(backend, case, reduction):
    rng = np.random.default_rng(7)
    t, x, options = _ce_inputs(rng, case)
    options = {k: on(backend, v) if isinstance(v, np.ndarray) else v for k, v in options.items()}
    call = dict(reduction=reduction, backend=backend, **options)
    grad, hess = lb.cross_entropy.grad_and_hess(on(backend, t), on(backend, x), **call)
    expected = np.empty_like(x)
    for c in range(x.shape[1]):  # rows are independent: class c of every row at once
        step = np.zeros_like(x)
        step[:, c] = STEP
        up = host(lb.cross_entropy.grad(on(backend, t), on(backend, x + step), **call))
        down = host(lb.cross_entropy.grad(on(backend, t), on(backend, x - step), **call))
        expected[:, c] = (up[:, c] - down[:, c]) / (2 * STEP)
    np.testing.assert_allclose(host(hess), expected, rtol=1e-6, atol=1e-9)
    if "ignore_index" in options:
        ignored = t == options["ignore_index"]
        assert ignored.any() and np.all(host(hess)[ignored] == 0)


def test_cross_entropy_hessian_near_a_softmax_of_one(backend):
    """1 - s at s within an ulp of 1 is the other classes' share, not 1 - s rounded to 0:
    float32 against float64 written here (the sum of the others, never 1 - s)."""
    x = np.array([[0.0, -20.0, -25.0, -30.0], [12.0, -9.0, -14.0, -10.0],
                  [0.0, -17.0, -18.0, -90.0], [3.0, 3.0, -20.0, -20.0]], np.float32)
    t = np.array([0, 1, 2, 3])
    for options in ({}, {"softcap": 30.0}):
        z = x.astype(np.float64)
        slope = np.ones_like(z)
        if options:
            tanh = np.tanh(z / 30.0)
            z, slope = 30.0 * tanh, 1.0 - tanh**2
        e = np.exp(z - z.max(axis=1, keepdims=True))
        others = np.array([[np.sum(np.delete(row, c)) for c in range(4)] for row in e])
        total = e.sum(axis=1, keepdims=True)
        softmax = e / total
        expected = softmax * (others / total) * slope**2
        if options:  # the chain rule's second term: (s - onehot) (-2 t (1 - t^2) / 30)
            onehot = np.eye(4)[t]
            expected += (softmax - onehot) * (-2.0 * tanh * slope / 30.0)
        _, hess = lb.cross_entropy.grad_and_hess(on(backend, t), on(backend, x),
                                                reduction="sum", backend=backend, **options)
        assert expected[0, 0] < 6e-8  # 1 - s under float32's spacing below 1: s rounds to 1
        np.testing.assert_allclose(host(hess), expected, rtol=2e-5, atol=1e-30)


def test_cross_entropy_of_few_classes_across_blocks_and_chunks():
    """The Numba kernel for rows of few classes (blocks of rows, several parallel chunks)
    against float64: ignored rows, a NaN row, infinite logits, ties at the max, a row
    whose other classes are under 1e-16 of the max's; value, gradient, Hessian, the
    gradient of grad_and_hess equal to value_and_grad's, and grad_out=y_pred."""
    pytest.importorskip("numba")
    rng = np.random.default_rng(16)
    x = rng.normal(0, 3, (3001, 10)).astype(np.float32)  # 3 chunks of 5 blocks
    t = rng.integers(0, 10, 3001)
    t[7::11] = -100
    x[5] = np.nan
    x[6, :3] = np.inf
    x[9, :] = -np.inf
    x[10, [2, 7]] = 5.0  # a tie at the max
    x[10, [0, 1, 3, 4, 5, 6, 8, 9]] = 0.0
    x[12] = -50.0  # others' share e^-50: 1 - s rounds to 0, the Hessian does not
    x[12, 4] = 0.0
    x64 = x.astype(np.float64)
    for reduction in REDUCTIONS:
        value, grad = lb.cross_entropy.value_and_grad(t, x, reduction=reduction,
                                                      backend="numba")
        g, hess = lb.cross_entropy.grad_and_hess(t, x, reduction=reduction, backend="numba")
        np.testing.assert_array_equal(g, grad)
        with np.errstate(invalid="ignore"):
            expected_value = lb.cross_entropy(t, x64, reduction=reduction, backend="numpy")
            expected_grad, expected_hess = lb.cross_entropy.grad_and_hess(
                t, x64, reduction=reduction, backend="numpy")
        scale = np.nanmax(np.abs(expected_grad))
        np.testing.assert_allclose(value, expected_value, rtol=2e-5)
        np.testing.assert_allclose(grad, expected_grad, rtol=2e-5, atol=2e-6 * scale)
        np.testing.assert_allclose(hess, expected_hess, rtol=2e-5, atol=2e-6 * scale)
        assert np.isnan(grad[5]).all() and np.isnan(hess[5]).all()
        assert 0 < hess[12, 4] < 1e-20
        np.testing.assert_allclose(hess[12, 4], expected_hess[12, 4], rtol=2e-5)
        x_copy = x.copy()
        g, h = lb.cross_entropy.grad_and_hess(t, x_copy, reduction=reduction, backend="numba",
                                              out=(x_copy, np.empty_like(x)))
        np.testing.assert_array_equal(g, grad)
        np.testing.assert_array_equal(h, hess)


def test_cross_entropy_hessian_on_another_axis(backend):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 5, 6))
    t = rng.integers(0, 5, (4, 6))
    grad, hess = lb.cross_entropy.grad_and_hess(on(backend, t), on(backend, x), axis=1,
                                               backend=backend)
    moved_grad, moved_hess = lb.cross_entropy.grad_and_hess(
        on(backend, t.reshape(-1)), on(backend, np.moveaxis(x, 1, -1).reshape(-1, 5)),
        backend=backend)
    assert hess.shape == x.shape
    np.testing.assert_allclose(host(np.moveaxis(host(hess), 1, -1).reshape(-1, 5)),
                               host(moved_hess), rtol=1e-14)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_low_precision_hessians_match_float64(backend, dtype):
    rng = np.random.default_rng(5)
    tol = {np.float16: 2e-2, np.float32: 2e-5}[dtype]
    for loss in (*ELEMENTWISE, *TRANSCENDENTAL):
        y, p = _elementwise_inputs(loss, rng, (257,))
        function = getattr(lb, loss)
        _, hess = function.grad_and_hess(on(backend, y.astype(dtype)), on(backend, p.astype(dtype)),
                                         reduction="sum", backend=backend)
        _, expected = function.grad_and_hess(y.astype(dtype).astype(np.float64),
                                             p.astype(dtype).astype(np.float64), reduction="sum",
                                             backend="numpy")
        assert host(hess).dtype == dtype
        np.testing.assert_allclose(host(hess), expected, rtol=tol, atol=tol * np.abs(expected).max(),
                                   err_msg=loss)
    t, x, _ = _ce_inputs(rng, {}, rows=33, classes=7)
    _, hess = lb.cross_entropy.grad_and_hess(on(backend, t), on(backend, x.astype(dtype)),
                                             backend=backend)
    _, expected = lb.cross_entropy.grad_and_hess(t, x.astype(dtype).astype(np.float64),
                                                 backend="numpy")
    np.testing.assert_allclose(host(hess), expected, rtol=tol, atol=tol * expected.max())


# --- against the autodiff frameworks (sum of the per-element losses) ---------------------


def _torchvision_focal(x, y, alpha=0.25, gamma=2.0):
    """torchvision.ops.sigmoid_focal_loss, reduction="none", as torchvision writes it."""
    import torch
    import torch.nn.functional as F

    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    return (alpha * y + (1 - alpha) * (1 - y)) * ce * (1 - p_t) ** gamma


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch is not installed")
def test_hessians_match_torch_func_hessian(backend):
    import torch
    import torch.nn.functional as F
    from torch.func import hessian

    rng = np.random.default_rng(11)
    n = 9
    cases = {
        "mse": lambda y, w: (lambda p: (w * (p - y) ** 2).sum()),
        "binary_cross_entropy": lambda y, w: (
            lambda p: F.binary_cross_entropy(p, y, weight=w, reduction="sum")),
        "binary_cross_entropy_with_logits": lambda y, w: (
            lambda p: F.binary_cross_entropy_with_logits(p, y, weight=w, pos_weight=torch.tensor(
                1.7, dtype=torch.float64), reduction="sum")),
        "hinge": lambda y, w: (lambda p: (w * torch.clamp(1 - y * p, min=0)).sum()),
        "mae": lambda y, w: (lambda p: (w * F.l1_loss(p, y, reduction="none")).sum()),
        "huber": lambda y, w: (lambda p: (w * F.huber_loss(p, y, reduction="none")).sum()),
        "smooth_l1": lambda y, w: (lambda p: (w * F.smooth_l1_loss(p, y, reduction="none")).sum()),
        "log_cosh": lambda y, w: (lambda p: (w * torch.log(torch.cosh(p - y))).sum()),
        "squared_hinge": lambda y, w: (lambda p: (w * torch.clamp(1 - y * p, min=0) ** 2).sum()),
        # soft_margin_loss has no forward-mode derivative in torch: its definition
        "soft_margin": lambda y, w: (lambda p: (w * F.softplus(-y * p)).sum()),
        "sigmoid_focal": lambda y, w: (lambda p: (w * _torchvision_focal(p, y)).sum()),
        "poisson_nll": lambda y, w: (
            lambda p: (w * F.poisson_nll_loss(p, y, log_input=True, reduction="none")).sum()),
        "kl_div": lambda y, w: (lambda p: (w * F.kl_div(p, y, reduction="none")).sum()),
        "pinball": lambda y, w: (
            lambda p: (w * torch.maximum(0.5 * (y - p), 0.5 * (p - y))).sum()),
    }
    for loss, make in cases.items():
        y, p = _elementwise_inputs(loss, rng, (n,))
        w = rng.uniform(0.5, 2, n)
        options = {"pos_weight": 1.7} if loss == "binary_cross_entropy_with_logits" else {}
        _, hess = getattr(lb, loss).grad_and_hess(on(backend, y), on(backend, p), reduction="sum",
                                                  weight=on(backend, w), backend=backend, **options)
        f = make(torch.tensor(y), torch.tensor(w))
        expected = torch.diagonal(hessian(f)(torch.tensor(p))).numpy()
        # PyTorch's BCE backward divides by max(p (1 - p), 1e-12): 1e-11 apart
        rtol = 1e-9 if loss == "binary_cross_entropy" else 1e-12
        np.testing.assert_allclose(host(hess), expected, rtol=rtol, atol=1e-12, err_msg=loss)
    # cross_entropy: the diagonal of each row's block, class weights and smoothing
    rows, classes = 6, 4
    x = rng.normal(0, 2, (rows, classes))
    t = rng.integers(0, classes, rows)
    cw = rng.uniform(0.5, 2, classes)
    _, hess = lb.cross_entropy.grad_and_hess(on(backend, t), on(backend, x), reduction="sum",
                                             class_weight=on(backend, cw), label_smoothing=0.1,
                                             backend=backend)
    f = lambda z: F.cross_entropy(z, torch.tensor(t), weight=torch.tensor(cw),  # noqa: E731
                                  label_smoothing=0.1, reduction="sum")
    full = hessian(f)(torch.tensor(x)).numpy().reshape(rows * classes, rows * classes)
    np.testing.assert_allclose(host(hess), np.diag(full).reshape(rows, classes), rtol=1e-12,
                               atol=1e-14)


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")
def test_hessians_match_jax_hessian(backend):
    import jax

    enabled = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)  # float64, for this test only
    try:
        _check_against_jax(backend, jax)
    finally:
        jax.config.update("jax_enable_x64", enabled)


def _check_against_jax(backend, jax):
    import jax.numpy as jnp

    rng = np.random.default_rng(12)
    y, p = _elementwise_inputs("binary_cross_entropy_with_logits", rng, (8,))
    # optax's form: (1 - y) x + softplus(-x)
    f = lambda x: jnp.sum((1 - y) * x + jax.nn.softplus(-x))  # noqa: E731
    expected = np.diag(np.asarray(jax.hessian(f)(jnp.asarray(p))))
    _, hess = lb.binary_cross_entropy_with_logits.grad_and_hess(
        on(backend, y), on(backend, p), reduction="sum", backend=backend)
    np.testing.assert_allclose(host(hess), expected, rtol=1e-12)
    # sigmoid focal, written from its definition (torchvision's), soft labels
    y, p = _elementwise_inputs("sigmoid_focal", rng, (9,))
    y = rng.random(9)

    def focal(x):
        prob = jax.nn.sigmoid(x)
        ce = jax.nn.softplus(x) - x * y
        return jnp.sum((0.25 * y + 0.75 * (1 - y)) * (prob * (1 - y) + (1 - prob) * y) ** 2 * ce)

    expected = np.diag(np.asarray(jax.hessian(focal)(jnp.asarray(p))))
    _, hess = lb.sigmoid_focal.grad_and_hess(on(backend, y), on(backend, p), reduction="sum",
                                             backend=backend)
    np.testing.assert_allclose(host(hess), expected, rtol=1e-10, atol=1e-14)
    x = rng.normal(0, 2, (5, 6))
    q = rng.dirichlet(np.ones(6), 5)
    g = lambda z: jnp.sum(-q * jax.nn.log_softmax(z, axis=-1))  # noqa: E731
    full = np.asarray(jax.hessian(g)(jnp.asarray(x))).reshape(30, 30)
    _, hess = lb.cross_entropy.grad_and_hess(on(backend, q), on(backend, x), reduction="sum",
                                             backend=backend)
    np.testing.assert_allclose(host(hess), np.diag(full).reshape(5, 6), rtol=1e-12, atol=1e-15)


# --- special values: the same on every backend ------------------------------------------


def _special(backend, dtype):
    inf, nan = np.inf, np.nan
    out = {}
    y = np.array([0, 1, 0, 1, 0.5, 1, 0, 1], dtype)
    x = np.array([inf, inf, -inf, -inf, nan, 0, 40, -40], dtype)
    out["bce_logits"] = lb.binary_cross_entropy_with_logits.grad_and_hess(
        on(backend, y), on(backend, x), reduction="sum", backend=backend)
    y = np.array([0, 1, 0, 1, 1, 0.5], dtype)
    p = np.array([0, 1, -1, 2, nan, 1e-30], dtype)
    out["bce"] = lb.binary_cross_entropy.grad_and_hess(on(backend, y), on(backend, p),
                                                       reduction="sum", backend=backend)
    y = np.array([1, -1, 1, 1], dtype)
    s = np.array([1, -1, nan, inf], dtype)  # two kinks
    out["hinge"] = lb.hinge.grad_and_hess(on(backend, y), on(backend, s), reduction="sum",
                                          backend=backend)
    out["mse"] = lb.mse.grad_and_hess(on(backend, np.zeros(3, dtype)),
                                      on(backend, np.array([inf, nan, 1], dtype)),
                                      reduction="sum", backend=backend)
    logits = np.array([[0, -inf, -inf], [1e4, 0, -1e4], [nan, 0, 0], [0, 0, 0]], dtype)
    out["ce"] = lb.cross_entropy.grad_and_hess(on(backend, np.array([0, 1, 2, -100])),
                                               on(backend, logits), reduction="sum",
                                               backend=backend)
    inf_nan = [inf, -inf, nan]
    second = {  # (loss, y, p): kinks, infinities, NaN
        "log_cosh": (np.zeros(4), [inf, 800, nan, 0]),
        "soft_margin": ([1, -1, 0, 1], [inf, inf, inf, nan]),
        "sigmoid_focal": ([1, 1, 0, 0, 1, 0.5], [inf, -inf, inf, -inf, nan, 0]),
        "poisson_nll": ([0, 2, 1, 3], [inf, -inf, nan, 0]),
        "mae": (np.zeros(4), [0, inf, nan, -2]),
        "huber": (np.zeros(6), [1, -1, 1.5, -0.5, *inf_nan[1:]]),
        "smooth_l1": (np.zeros(6), [1, -1, 1.5, -0.5, *inf_nan[1:]]),
        "squared_hinge": ([1, -1, 1, 0, 1], [1, -1, nan, inf, 0.5]),
        "kl_div": ([0.5, nan, 0], [-1, -1, -inf]),
        "pinball": (np.zeros(4), [0, nan, 2, -inf]),
    }
    for loss, (y, p) in second.items():
        if dtype == np.float32 or loss in TRANSCENDENTAL:  # (float32: no extra Numba kernels)
            out[loss] = getattr(lb, loss).grad_and_hess(
                on(backend, np.asarray(y, dtype)), on(backend, np.asarray(p, dtype)),
                reduction="sum", backend=backend)
    return {k: tuple(host(a) for a in v) for k, v in out.items()}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_special_values(backend, dtype):
    got = _special(backend, dtype)
    _, h = got["bce_logits"]
    np.testing.assert_array_equal(h[:4], 0)  # sigma(x) sigma(-x) -> 0 at +-inf, no NaN
    assert np.isnan(h[4])
    assert h[5] == 0.25 and h[6] > 0 and h[7] > 0  # 4e-18: no 1 - sigma cancellation
    np.testing.assert_allclose(h[6:], np.exp(-40.0), rtol=1e-5)
    _, h = got["bce"]
    e = max(1e-15, float(np.finfo(dtype).eps))  # the clip bound: eps=1e-15 or the dtype's
    clip_hess = [1 / (1 - e) ** 2, 1 / (1 - e) ** 2, 1 / (1 - e) ** 2, 1 / (1 - e) ** 2]
    np.testing.assert_allclose(h[:4], clip_hess, rtol=1e-6)  # outside the clip: at the bound
    assert np.isnan(h[4]) and np.isclose(h[5], 0.5 / e**2 + 0.5 / (1 - e) ** 2, rtol=1e-6)
    g, h = got["hinge"]
    np.testing.assert_array_equal(h[[0, 1, 3]], 0)
    assert np.isnan(h[2])  # NaN in, NaN out, as the gradient
    np.testing.assert_array_equal(g[:2], 0)  # the kink: gradient 0, Hessian 0
    np.testing.assert_array_equal(got["mse"][1], 2)
    _, h = got["ce"]
    np.testing.assert_array_equal(h[0], 0)  # softmax one-hot: 0, and 0 for the -inf classes
    np.testing.assert_array_equal(h[1], 0)
    assert np.isnan(h[2]).all()  # a NaN logit makes the row NaN, as its gradient
    np.testing.assert_array_equal(h[3], 0)  # ignored row
    # the second set: 0 at and beyond the kinks (PyTorch's convention at |e| = delta, beta),
    # NaN exactly where the gradient is NaN, the limits at infinities
    _, h = got["log_cosh"]
    np.testing.assert_array_equal(h, [0, 0, np.nan, 1])
    _, h = got["soft_margin"]
    np.testing.assert_array_equal(h, [0, 0, 0, np.nan])
    _, h = got["sigmoid_focal"]
    np.testing.assert_array_equal(h[:5], [0, 0, 0, 0, np.nan])
    # x = 0, y = 1/2: q = 1/2, r = 1/2, ce = log 2, s = 0: alpha_t q^2 p (1 - p) = 0.5/4/4
    np.testing.assert_allclose(h[5], 0.5 / 16, rtol=1e-6)
    _, h = got["poisson_nll"]
    np.testing.assert_array_equal(h, [np.inf, 0, np.nan, 1])
    if "mae" in got:
        np.testing.assert_array_equal(got["mae"][1], [0, 0, np.nan, 0])
        np.testing.assert_array_equal(got["huber"][1], [1, 1, 0, 1, 0, np.nan])
        np.testing.assert_array_equal(got["smooth_l1"][1], [0, 0, 0, 1, 0, np.nan])
        np.testing.assert_array_equal(got["squared_hinge"][1], [0, 0, np.nan, 0, 2])
        np.testing.assert_array_equal(got["kl_div"][1], [0, np.nan, 0])
        np.testing.assert_array_equal(got["pinball"][1], [0, np.nan, 0, 0])
    if backend != "numpy":  # the same as the reference backend, NaN in the same places
        reference = _special("numpy", dtype)
        for key, pair in got.items():
            for a, b in zip(pair, reference[key], strict=True):
                np.testing.assert_allclose(a, b, rtol=2e-6 if dtype == np.float32 else 1e-15,
                                           err_msg=key)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("label", "sign"), [(1.0, 1.0), (0.0, -1.0)])
def test_focal_hessian_of_well_classified_samples(backend, dtype, label, sign):
    """Far on the right side, loss = alpha_t q^gamma ce with q ~ ce ~ exp(-|x|): loss ~
    exp(-(gamma + 1) |x|), so grad = -+(gamma + 1) loss and hess = (gamma + 1)^2 loss to
    O(exp(-|x|)). p - y computed as p - 1 would lose every digit of it."""
    x = sign * np.array([16.0, 18.0, 20.0, 24.0], dtype)
    y = np.full(4, label, dtype)
    loss = host(lb.sigmoid_focal(on(backend, y), on(backend, x), reduction="none",
                                 backend=backend)).astype(np.float64)
    grad, hess = (host(a) for a in lb.sigmoid_focal.grad_and_hess(
        on(backend, y), on(backend, x), reduction="none", backend=backend))
    rtol = 1e-5  # the asymptotic forms' own error, ~e^-16, and float32's rounding
    np.testing.assert_allclose(grad, -sign * 3 * loss, rtol=rtol)
    np.testing.assert_allclose(hess, 9 * loss, rtol=rtol)


# --- out= pairs, errors ------------------------------------------------------------------


@pytest.mark.parametrize("loss", [*ELEMENTWISE, "sigmoid_focal", "cross_entropy"])
def test_out_pair(backend, loss):
    rng = np.random.default_rng(1)
    if loss == "cross_entropy":
        t, x, _ = _ce_inputs(rng, {}, rows=9, classes=4)
    else:
        t, x = _elementwise_inputs(loss, rng, (5, 6))
    t, x = on(backend, t), on(backend, x)
    function = getattr(lb, loss)
    grad, hess = function.grad_and_hess(t, x, backend=backend)
    grad_out, hess_out = on(backend, np.empty(x.shape)), on(backend, np.empty(x.shape))
    g, h = function.grad_and_hess(t, x, backend=backend, out=(grad_out, hess_out))
    assert g is grad_out and h is hess_out
    np.testing.assert_array_equal(host(g), host(grad))
    np.testing.assert_array_equal(host(h), host(hess))
    # grad_out may be y_pred itself
    x_copy = x.copy()
    hess_out = on(backend, np.empty(x.shape))
    g, h = function.grad_and_hess(t, x_copy, backend=backend, out=(x_copy, hess_out))
    assert g is x_copy
    np.testing.assert_array_equal(host(g), host(grad))
    np.testing.assert_array_equal(host(h), host(hess))
    # None in the pair, as in NumPy's out= of two results: that one is a new array (it
    # once returned no gradient at all for (None, hess_out), and failed for (grad_out, None))
    for grad_out, hess_out in ((None, on(backend, np.empty(x.shape))),
                               (on(backend, np.empty(x.shape)), None), (None, None)):
        g, h = function.grad_and_hess(t, x, backend=backend, out=(grad_out, hess_out))
        assert g is not None and h is not None and g is not grad and h is not hess
        assert (g is grad_out) == (grad_out is not None)
        assert (h is hess_out) == (hess_out is not None)
        np.testing.assert_array_equal(host(g), host(grad))
        np.testing.assert_array_equal(host(h), host(hess))


def test_multiclass_hinge_hessian_in_place_reads_the_scores(backend):
    """grad_out=y_pred: the Hessian's NaN rows are those of the scores, not of the gradient
    written over them (a NaN row weight makes a NaN gradient row; Numba once read that)."""
    labels = on(backend, np.array([0, 2, 1]))
    x = on(backend, np.array([[2.0, 1.5, -1.0], [0.2, 0.5, 0.1], [1.0, 3.0, 0.0]]))
    weight = on(backend, np.array([1.0, np.nan, 1.0]))
    x_copy, hess_out = x.copy(), on(backend, np.empty(x.shape))
    g, h = lb.multiclass_hinge.grad_and_hess(labels, x_copy, weight=weight, backend=backend,
                                             out=(x_copy, hess_out))
    assert np.isnan(host(g)[1]).any()
    np.testing.assert_array_equal(host(h), np.zeros((3, 3)))


@pytest.mark.parametrize("options", [{}, {"softcap": 5.0}, {"soft": True}])
def test_out_pair_in_place_above_16384_classes(backend, options):
    """grad_out=y_pred where the GPU writes the Hessian in a launch of its own (rows above
    16384 classes): it must read the logits before the gradient is written over them (it
    read the gradient once)."""
    rng = np.random.default_rng(3)
    t, x, options = _ce_inputs(rng, options, rows=3, classes=20_000)
    t, x = on(backend, t), on(backend, x)
    grad, hess = lb.cross_entropy.grad_and_hess(t, x, backend=backend, **options)
    x_copy, hess_out = x.copy(), on(backend, np.empty(x.shape))
    g, h = lb.cross_entropy.grad_and_hess(t, x_copy, backend=backend, out=(x_copy, hess_out),
                                          **options)
    assert g is x_copy and h is hess_out
    np.testing.assert_array_equal(host(g), host(grad))
    np.testing.assert_array_equal(host(h), host(hess))


def test_out_pair_errors(backend):
    rng = np.random.default_rng(2)
    y, p = (on(backend, a) for a in _elementwise_inputs("mse", rng, (4, 3)))
    buffer = on(backend, np.empty((4, 3)))
    cases = [
        (buffer, TypeError, "pair"),
        ((buffer,), TypeError, "pair"),
        ((buffer, buffer), ValueError, "distinct"),
        ((buffer, p), ValueError, "hess_out must not share memory"),
        ((buffer, y), ValueError, "hess_out must not share memory"),
        ((y, on(backend, np.empty((4, 3)))), ValueError,
         "^grad_out must not share memory with y_true"),
        ((on(backend, np.empty(5)), None), ValueError, "^grad_out has shape"),
        ((p[1:], None), ValueError, "^grad_out has shape"),
        ((buffer, on(backend, np.empty((4, 3), np.float32))), ValueError, "hess_out has shape"),
        ((buffer, on(backend, np.empty((3, 4)))), ValueError, "hess_out has shape"),
        ((buffer, on(backend, np.empty((4, 6)))[:, ::2]), ValueError, "C-contiguous"),
    ]
    for out, error, match in cases:
        with pytest.raises(error, match=match):
            lb.mse.grad_and_hess(y, p, backend=backend, out=out)
    if backend != "cupy":
        whole = np.empty(24)
        with pytest.raises(ValueError, match="distinct"):
            lb.mse.grad_and_hess(y, p, backend=backend,
                                 out=(whole[:12].reshape(4, 3), whole[6:18].reshape(4, 3)))
    with pytest.raises(ValueError, match="reduction"):
        lb.mse.grad_and_hess(y, p, backend=backend, reduction="avg")
    # the classes on another axis than the last: the kernel reads a moved copy of y_pred,
    # but hess_out=y_pred is refused all the same (it was accepted, and took the Hessian)
    x = on(backend, rng.normal(size=(3, 4)))
    labels = on(backend, np.array([0, 2, 1, 2]))
    for hess_out in (x, x[:]):
        with pytest.raises(ValueError, match="hess_out must not share memory"):
            lb.cross_entropy.grad_and_hess(labels, x, axis=0, backend=backend,
                                           out=(None, hess_out))
    if backend != "cupy":  # partial overlaps, as the last axis refuses them
        logits, probabilities = np.zeros(16), np.full(16, 0.25)
        x, probs = logits[:12].reshape(3, 4), probabilities[:12].reshape(3, 4)
        for out, match in (((None, probabilities[4:].reshape(3, 4)), "hess_out must not share"),
                           ((probabilities[4:].reshape(3, 4), None),
                            "grad_out must not share memory with y_true"),
                           ((logits[4:].reshape(3, 4), None), "grad_out overlaps y_pred")):
            with pytest.raises(ValueError, match=match):
                lb.cross_entropy.grad_and_hess(probs, x, axis=0, backend=backend, out=out)


def test_empty_input(backend):
    grad, hess = lb.mse.grad_and_hess(on(backend, np.empty(0)), on(backend, np.empty(0)),
                                      backend=backend)
    assert grad.shape == hess.shape == (0,)


def test_dask_grad_and_hess_is_lazy_and_equal():
    da = pytest.importorskip("dask.array", reason="Dask is not installed")
    import dask

    rng = np.random.default_rng(4)
    y, p = _elementwise_inputs("binary_cross_entropy_with_logits", rng, (100, 6))
    w = rng.uniform(0, 2, 6)
    with dask.config.set(scheduler="synchronous"):
        grad, hess = lb.binary_cross_entropy_with_logits.grad_and_hess(
            da.from_array(y, chunks=(30, 6)), da.from_array(p, chunks=(30, 6)), weight=w,
            backend="numpy")
        assert isinstance(grad, da.Array) and isinstance(hess, da.Array)
        expected = lb.binary_cross_entropy_with_logits.grad_and_hess(y, p, weight=w,
                                                                     backend="numpy")
        np.testing.assert_array_equal(grad.compute(), expected[0])
        np.testing.assert_array_equal(hess.compute(), expected[1])
        t, x, _ = _ce_inputs(rng, {}, rows=50, classes=4)
        grad, hess = lb.cross_entropy.grad_and_hess(da.from_array(t, chunks=20),
                                                    da.from_array(x, chunks=(20, 4)),
                                                    backend="numpy")
        expected = lb.cross_entropy.grad_and_hess(t, x, backend="numpy")
        np.testing.assert_array_equal(hess.compute(), expected[1])
        np.testing.assert_array_equal(grad.compute(), expected[0])
        with pytest.raises(ValueError, match="Dask"):
            lb.mse.grad_and_hess(da.from_array(y), da.from_array(p),
                                 out=(np.empty_like(p), np.empty_like(p)))


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch is not installed")
def test_torch_tensors_get_torch_results():
    import torch

    rng = np.random.default_rng(6)
    y, p = _elementwise_inputs("binary_cross_entropy_with_logits", rng, (3, 4))
    grad, hess = lb.binary_cross_entropy_with_logits.grad_and_hess(torch.tensor(y),
                                                                   torch.tensor(p))
    expected = lb.binary_cross_entropy_with_logits.grad_and_hess(y, p)
    assert isinstance(grad, torch.Tensor) and isinstance(hess, torch.Tensor)
    np.testing.assert_array_equal(hess.numpy(), expected[1])
    np.testing.assert_array_equal(grad.numpy(), expected[0])
    t, x, _ = _ce_inputs(rng, {}, rows=5, classes=3)
    t[1] = 7  # check_labels=False: a bad row is NaN, gradient and Hessian
    _, hess = lb.cross_entropy.grad_and_hess(torch.tensor(t), torch.tensor(x),
                                             check_labels=False)
    assert np.isnan(hess[1].numpy()).all() and np.isfinite(hess[0].numpy()).all()
    grad, hess = lb.mse.grad_and_hess(torch.tensor(y), torch.tensor(p), out=(None, None))
    np.testing.assert_array_equal(hess.numpy(), lb.mse.grad_and_hess(y, p)[1])


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch is not installed")
def test_torch_out_pairs():
    """out=(grad_out, hess_out) of torch tensors: written and returned (either may be None,
    bfloat16 through the float32 pass), a class axis other than the last, and the refusals:
    another library, dtype, layout, requires grad, the two overlapping, one over y_pred."""
    import torch

    rng = np.random.default_rng(7)
    y, p = _elementwise_inputs("binary_cross_entropy_with_logits", rng, (3, 4))
    ty, tp = torch.tensor(y), torch.tensor(p)
    expected = lb.binary_cross_entropy_with_logits.grad_and_hess(y, p)
    for pair in ((torch.empty_like(tp), torch.empty_like(tp)), (None, torch.empty_like(tp)),
                 (torch.empty_like(tp), None)):
        results = lb.binary_cross_entropy_with_logits.grad_and_hess(ty, tp, out=pair)
        for result, given, reference in zip(results, pair, expected, strict=True):
            assert isinstance(result, torch.Tensor)
            assert given is None or (result is given and result.data_ptr() == given.data_ptr())
            np.testing.assert_array_equal(result.numpy(), reference)
    by, bp = ty.bfloat16(), tp.bfloat16()
    pair = (torch.empty_like(bp), torch.empty_like(bp))
    grad, hess = lb.log_cosh.grad_and_hess(by, bp, out=pair)
    assert grad is pair[0] and hess is pair[1]
    for result, reference in zip((grad, hess), lb.log_cosh.grad_and_hess(by, bp), strict=True):
        torch.testing.assert_close(result, reference, rtol=0, atol=0)
    t, x, _ = _ce_inputs(rng, {}, rows=5, classes=3)
    x = np.ascontiguousarray(np.moveaxis(np.stack([x, x[::-1]]), 2, 1))  # (2, 3, 5), axis 1
    t = np.stack([t, t[::-1]])
    pair = (torch.empty(2, 3, 5, dtype=torch.float64), torch.empty(2, 3, 5, dtype=torch.float64))
    results = lb.cross_entropy.grad_and_hess(torch.tensor(t), torch.tensor(x), axis=1, out=pair)
    for result, given, reference in zip(results, pair,
                                        lb.cross_entropy.grad_and_hess(t, x, axis=1), strict=True):
        assert result is given
        np.testing.assert_allclose(result.numpy(), reference, rtol=1e-15, atol=0)
    buffer = torch.empty(24, dtype=torch.float64)
    good = torch.empty_like(tp)
    for out, message in (((good, np.empty((3, 4))), "hess_out must be a torch array"),
                         ((good, torch.empty(3, 4)), "hess_out has shape .* dtype"),
                         ((good, torch.empty(4, 3, dtype=torch.float64).T), "contiguous"),
                         ((good, torch.empty_like(tp).requires_grad_()), "hess_out requires"),
                         ((buffer[:12].view(3, 4), buffer[6:18].view(3, 4)), "share no memory"),
                         ((good, good), "share no memory"),
                         ((good, tp), "hess_out must not share memory with y_true or y_pred")):
        with pytest.raises(ValueError, match=message):
            lb.mse.grad_and_hess(ty, tp, out=out)
    # bfloat16 computes into buffers of its own and copies into the user's: their memory is
    # checked all the same (an overlapping pair took the Hessian for the gradient)
    bits = torch.zeros(24, dtype=torch.bfloat16)
    for out, message in (((bits[:12].view(3, 4), bits[6:18].view(3, 4)), "share no memory"),
                         ((torch.empty_like(bp), bp), "hess_out must not share memory"),
                         ((by, torch.empty_like(bp)), "grad_out must not share memory with "
                                                      "y_true")):
        with pytest.raises(ValueError, match=message):
            lb.mse.grad_and_hess(by, bp, out=out)
    with pytest.raises(ValueError, match="overlaps y_pred without being it"):
        lb.mse.grad(by, bits[:12].view(3, 4), out=bits[2:14].view(3, 4))
    inplace = bp.clone()
    grad = lb.mse.grad(by, inplace, out=inplace)  # y_pred itself: in place
    assert grad is inplace
    torch.testing.assert_close(grad, lb.mse.grad(by, bp), rtol=0, atol=0)

