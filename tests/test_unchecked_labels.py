"""check_labels=False: a bad class index gives its row a NaN loss and gradient on every
backend (the GPU skips the check's synchronisation; JAX's traced calls cannot raise)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import host, on
from reference import cross_entropy as ce_reference

import lossbackends as lb


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_bad_labels_give_nan_rows(backend, reduction, dtype):
    rng = np.random.default_rng(0)
    x = rng.normal(0, 2, (6, 5)).astype(dtype)
    t = np.array([0, 7, 2, -100, -3, 4])  # rows 1 and 4 are bad, row 3 ignored
    with pytest.raises(ValueError, match="not a class index"):
        lb.cross_entropy(on(backend, t), on(backend, x), backend=backend)
    value, grad = lb.cross_entropy.value_and_grad(on(backend, t), on(backend, x),
                                                  reduction=reduction, check_labels=False,
                                                  backend=backend)
    value, grad = host(value), host(grad)
    good = np.array([True, False, True, True, False, True])
    assert np.isnan(grad[~good]).all() and np.isfinite(grad[good]).all()
    assert (grad[3] == 0).all()
    if reduction == "none":
        assert np.isnan(value[~good]).all()
        ref, _ = ce_reference(np.where(good, t, -100), x, reduction="none")
        np.testing.assert_allclose(value[good], ref[good], rtol=2e-3 if dtype == "float16" else 1e-5)
    else:
        assert np.isnan(value)
    # the good rows' gradient is the one they have when the bad rows are ignored ("sum")
    if reduction == "sum":
        _, ref_grad = ce_reference(np.where(good, t, -100), x, reduction="sum")
        np.testing.assert_allclose(grad[good], ref_grad[good], rtol=2e-3 if dtype == "float16" else 1e-5,
                                   atol=1e-3 if dtype == "float16" else 1e-7)


def test_bad_labels_are_not_kept_rows_of_the_z_loss_mean(backend):
    """With class weights, the z-loss's "mean" divides by the kept rows' count: a bad label
    (a NaN row) is not one of them, so the good rows' gradient is the one they have with
    that row ignored, on every backend (the GPU counted it once)."""
    rng = np.random.default_rng(1)
    x = rng.normal(0, 2, (6, 5))
    t = np.array([0, 7, 2, -100, 3, 4])  # row 1 is bad, row 3 ignored
    w = rng.uniform(0.5, 2.0, 5)
    options = dict(z_loss=1e-2, class_weight=on(backend, w), backend=backend)
    _, grad = lb.cross_entropy.value_and_grad(on(backend, t), on(backend, x),
                                              check_labels=False, **options)
    _, expected = lb.cross_entropy.value_and_grad(on(backend, np.where(t == 7, -100, t)),
                                                  on(backend, x), **options)
    good = t != 7
    assert np.isnan(host(grad)[~good]).all()
    np.testing.assert_allclose(host(grad)[good], host(expected)[good], rtol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_multiclass_hinge_bad_labels_give_nan_rows(backend, reduction):
    """multiclass_hinge takes check_labels too (the GPU's check synchronises): a bad label's
    row is NaN, the others as they are with that row left out."""
    rng = np.random.default_rng(2)
    x = rng.normal(0, 2, (6, 5))
    t = np.array([0, 7, 2, -1, 3, 4])  # rows 1 and 3 are bad
    with pytest.raises(ValueError, match="not a class index"):
        lb.multiclass_hinge(on(backend, t), on(backend, x), backend=backend)
    value, grad = lb.multiclass_hinge.value_and_grad(
        on(backend, t), on(backend, x), reduction=reduction, check_labels=False,
        backend=backend)
    _, hess = lb.multiclass_hinge.grad_and_hess(on(backend, t), on(backend, x),
                                                reduction=reduction, check_labels=False,
                                                backend=backend)
    value, grad, hess = host(value), host(grad), host(hess)
    good = np.array([True, False, True, False, True, True])
    assert np.isnan(grad[~good]).all() and np.isnan(hess[~good]).all()
    expected, expected_grad = lb.multiclass_hinge.value_and_grad(
        t[good], x[good], reduction="none" if reduction == "none" else "sum", backend="numpy")
    scale = 1 / 6 if reduction == "mean" else 1.0
    np.testing.assert_allclose(grad[good], expected_grad * scale, rtol=1e-12)
    assert (hess[good] == 0).all()
    if reduction == "none":
        assert np.isnan(value[~good]).all()
        np.testing.assert_allclose(value[good], expected, rtol=1e-12)
    else:
        assert np.isnan(value)
    with pytest.raises(TypeError, match="check_labels must be True or False"):
        lb.multiclass_hinge(on(backend, t), on(backend, x), check_labels="no", backend=backend)
