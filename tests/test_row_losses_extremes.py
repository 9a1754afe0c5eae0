"""multiclass_hinge and cross_entropy's options (issue 15) at the extremes, on every
backend: special values (inf, NaN, the dtype's largest, subnormals), confident rows whose
losses and gradients must stay relatively exact, and softcap's two tanh forms and their
ends; against the float64 references of ``reference.py``."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import reference
from conftest import BACKENDS, examples, host, on
from hypothesis import given, settings
from hypothesis import strategies as st
from row_helpers import REDUCTIONS, RUNNABLE, assert_close, options_for

import lossbackends as lb

rng = np.random.default_rng(16)


@pytest.mark.parametrize("classes", [3, 64, 20000])  # (the GPU's three row kernels)
@pytest.mark.parametrize("dtype, big", [(np.float32, 1e38), (np.float32, 3e38),
                                        (np.float64, 1e300), (np.float64, 1e308),
                                        (np.float64, np.inf)])
def test_z_loss_at_logits_near_the_largest_gives_0_where_the_softmax_is_0(backend, dtype, big,
                                                                          classes):
    """2 z lse overflows at such logits (or is infinite): the classes whose softmax is 0
    have gradient and Hessian 0 (the limit), not 0 * inf = NaN; the top class's Hessian is
    2 z (found by a fuzzer: NaN on both host backends in float64, on Numba in float32)."""
    x = np.zeros((2, classes), dtype)
    x[0, 0], x[0, 2:] = big, -1.0
    x[1] = np.linspace(-3.0, 3.0, classes)
    labels = np.array([0, 2])
    grad, hess = lb.cross_entropy.grad_and_hess(on(backend, labels), on(backend, x), z_loss=0.75,
                                                reduction="sum", backend=backend)
    grad, hess = host(grad), host(hess)
    top = 2 * 0.75 * np.float64(big)  # 2 z lse, lse = big, less the label's 1
    with np.errstate(over="ignore"):  # (inf where it overflows)
        assert grad[0, 0] == np.asarray(top).astype(dtype)
    np.testing.assert_array_equal(grad[0, 1:], 0.0)
    np.testing.assert_array_equal(hess[0], [1.5] + [0.0] * (classes - 1))
    # the other row as the same row alone
    g1, h1 = lb.cross_entropy.grad_and_hess(on(backend, labels[1:]), on(backend, x[1:]),
                                            z_loss=0.75, reduction="sum", backend=backend)
    np.testing.assert_array_equal(grad[1:], host(g1))
    np.testing.assert_array_equal(hess[1:], host(h1))


def test_z_loss_scale_overflowing_only_in_float32_keeps_finite_results(backend):
    """Two logits tied at float32's largest: 2 z lse overflows float32 but each half of it
    does not; the gradient and Hessian are finite, as in float64 (Numba's float32 scale
    gave inf for one of the two Hessians, found by review). The host backends only: the
    CUDA kernels accumulate float32 rows in float32 (the GPU guide says so)."""
    if backend == "cupy":
        pytest.skip("the CUDA kernels accumulate float32 rows in float32: 2 z lse is inf")
    top = np.finfo(np.float32).max
    x = np.array([[top, top, 0.0, 0.0]], np.float32)
    grad, hess = lb.cross_entropy.grad_and_hess(on(backend, np.array([2])), on(backend, x),
                                                z_loss=0.75, reduction="sum", backend=backend)
    lse = np.float64(top) + np.log(2.0)
    np.testing.assert_allclose(host(grad)[0, :2], 0.75 * lse, rtol=1e-6)
    np.testing.assert_allclose(host(hess)[0, :2], 2 * 0.75 * lse * 0.25 + 2 * 0.75 * 0.25,
                               rtol=1e-6)
    np.testing.assert_array_equal(host(grad)[0, 2:], [-1.0, 0.0])


@pytest.mark.parametrize("z_loss, softcap", [(1e30, None), (3e38, None), (1.0, 30.0),
                                             (1e6, 30.0), (1e-4, 30.0)])
def test_a_huge_z_loss_keeps_a_confident_row_s_gradient_and_hessian(backend, z_loss, softcap):
    """A confident row's lse is near 0 (1e-13 here), where log(sum exp) keeps only the
    bits of sum - 1 that 1 + it kept: 2 z lse, the gradient's coefficient, was 1e-3 off
    on Numba at z = 1e30, and with softcap (exps shifted by softcap, lse = softcap +
    log(sum)) the label's gradient had the wrong sign from z = 1 (found by review); the
    NumPy backend takes lse from the max by log1p of the others' sum, and now Numba too.
    At z = 3e38, 2 z is beyond float32 where c = 1 + 2 z lse is not: the Hessian's 2 z
    s^2 was inf times an s^2 of 0, NaN, on both host backends, where the exact value is
    0.49. Against float64 by the formulas, here."""
    if backend == "cupy":
        pytest.skip("the CUDA kernels accumulate float32 rows in float32 (the GPU guide)")
    x = np.array([[0.0, -30.0, -60.0], [1.0, 2.0, -50.0]], np.float32)
    labels = np.array([0, 1])
    value, grad = lb.cross_entropy.value_and_grad(on(backend, labels), on(backend, x),
                                                  z_loss=z_loss, softcap=softcap,
                                                  reduction="none", backend=backend)
    _, hess = lb.cross_entropy.grad_and_hess(on(backend, labels), on(backend, x), z_loss=z_loss,
                                             softcap=softcap, reduction="none", backend=backend)
    expected_value, expected_grad = reference.cross_entropy_liger(
        labels, x, reduction="none", z_loss=z_loss, softcap=softcap)
    # the Hessian (the reference has none): c s (1 - s) + 2 z s^2 in the capped logits v =
    # softcap t, then softcap's chain rule, slope^2 h - g 2 t slope / softcap
    x64 = x.astype(np.float64)
    t = np.tanh(x64 / softcap) if softcap else x64
    v = softcap * t if softcap else x64
    slope = 1.0 / np.cosh(x64 / softcap) ** 2 if softcap else 1.0
    top = v.max(axis=1, keepdims=True)
    others = np.where(v == top, 0.0, np.exp(v - top)).sum(axis=1, keepdims=True)
    lse = top + np.log1p(others)
    s = np.exp(v - lse)
    c = 1.0 + 2.0 * z_loss * lse
    one_less = np.where(v == top, others / (1.0 + others), 1.0 - s)  # 1 - s, exact
    grad_v = c * s - np.eye(3)[labels]
    hess_v = c * s * one_less + 2.0 * z_loss * s * s
    expected = {"value": expected_value, "gradient": expected_grad,
                "Hessian": (hess_v * slope**2 - grad_v * (2.0 * t * slope / softcap)
                            if softcap else hess_v)}
    with np.errstate(over="ignore"):  # (inf where float32 overflows, as the results)
        for name, got in (("value", value), ("gradient", grad), ("Hessian", hess)):
            want, got = expected[name].astype(np.float32), host(got)
            assert not np.isnan(got).any(), name
            np.testing.assert_array_equal(np.isinf(got), np.isinf(want), err_msg=name)
            finite = np.isfinite(want)
            np.testing.assert_allclose(got[finite], want[finite], rtol=2e-5, err_msg=name)


def test_a_nan_probability_makes_its_row_nan(backend):
    """A soft target with a NaN probability: the row's loss, gradient and Hessian are NaN on
    every backend (the NumPy backend kept zeros there for a while, found by review)."""
    target = np.array([[0.5, np.nan, 0.5, 0.0], [0.25, 0.25, 0.25, 0.25]])
    x = np.array([[1.0, 2.0, -200.0, 0.0], [1.0, 2.0, 3.0, 4.0]])
    for z_loss in (0.0, 0.5):
        value, grad = lb.cross_entropy.value_and_grad(on(backend, target), on(backend, x),
                                                      z_loss=z_loss, reduction="none",
                                                      backend=backend)
        _, hess = lb.cross_entropy.grad_and_hess(on(backend, target), on(backend, x),
                                                 z_loss=z_loss, reduction="none", backend=backend)
        assert np.isnan(host(value)[0]) and np.isfinite(host(value)[1])
        assert np.isnan(host(grad)[0]).all() and np.isnan(host(hess)[0]).all()
        assert np.isfinite(host(grad)[1]).all() and np.isfinite(host(hess)[1]).all()


def test_multiclass_hinge_rows_of_equal_infinite_scores(backend):
    """Equal infinite scores count as equal: a row of -inf with the label first has slack
    = margin > 0, so +1 goes to the first other class (the NumPy backend's argmax found
    the label's own column, hidden as -inf, and the -1 overwrote the +1)."""
    x = np.full((3, 3), -np.inf)
    x[2] = np.inf
    labels = np.array([0, 2, 1])
    value, grad = lb.multiclass_hinge.value_and_grad(on(backend, labels), on(backend, x),
                                                     reduction="none", backend=backend)
    np.testing.assert_array_equal(host(value), [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(host(grad), [[-1, 1, 0], [1, 0, -1], [1, -1, 0]])


def test_multiclass_hinge_weight_0_costs_nothing_against_an_infinite_slack(backend):
    """0 inf = 0, as cross_entropy's class weights and hinge's labels take it (the row's
    loss was NaN while its gradient was 0); a NaN score stays NaN."""
    x = np.array([[-np.inf, np.inf], [1.0, 2.0], [np.nan, 1.0], [0.0, np.inf]])
    weight = np.array([0.0, 0.0, 0.0, 2.0])
    value = lb.multiclass_hinge(on(backend, np.zeros(4, np.int64)), on(backend, x),
                                weight=on(backend, weight), reduction="none", backend=backend)
    np.testing.assert_array_equal(host(value), [0.0, 0.0, np.nan, np.inf])


def test_multiclass_hinge_weighted_row_loss_in_the_dtype(backend):
    """A row's weighted loss is rounded in the scores' dtype before the rows' sum, as
    every loss weighs its elements: 2 x float32's largest slack is inf, so the mean is inf
    on every backend (Numba's was a float64 product and a finite mean, 1.36e38, where its
    own "sum" and "none" and the NumPy backend gave inf; found by the special-scores test)."""
    x = np.zeros((5, 7), np.float32)
    x[0, 1] = np.finfo(np.float32).max
    weight = np.array([2, 0, 0, 0, 0], np.float32)
    labels = np.zeros(5, np.int64)
    for reduction in REDUCTIONS:
        value = host(lb.multiclass_hinge(on(backend, labels), on(backend, x),
                                         weight=on(backend, weight), margin=0.0,
                                         reduction=reduction, backend=backend))
        np.testing.assert_array_equal(value.reshape(-1)[:1], [np.inf])


@pytest.mark.parametrize("softcap", [None, 30.0])
def test_cross_entropy_class_weight_near_the_largest(backend, softcap):
    """A label's class weight of float64's largest: the loss and gradient are that weight
    times the unweighted ones, finite (Numba's with softcap were inf: its exps, shifted by
    softcap, made the scale weight / sum overflow; its doubled weight overflowed the
    label's exact form; below its row's max, the label's w rest overflowed on both host
    backends, rest > 1). A row of one class has gradient 0."""
    big = np.finfo(np.float64).max
    x = np.array([[0.5, 1.0, -2.0], [3.0, -1.0, 0.25], [2.0, 0.5, -1.0]])
    labels = np.array([1, 2, 1])
    value, grad = reference.cross_entropy_liger(labels, x, reduction="none", softcap=softcap)
    for reduction in ("sum", "none"):
        got_value, got_grad = lb.cross_entropy.value_and_grad(
            on(backend, labels), on(backend, x), class_weight=on(backend, [1.0, big, 0.5]),
            softcap=softcap, reduction=reduction, backend=backend)
        weights = np.array([[big], [0.5], [big]])
        np.testing.assert_allclose(host(got_grad), grad * weights, rtol=1e-13, err_msg=reduction)
        with np.errstate(over="ignore"):  # (the third row's loss: inf)
            expected = value * weights[:, 0]
        np.testing.assert_allclose(host(got_value), expected if reduction == "none"
                                   else expected.sum(), rtol=1e-13, err_msg=reduction)
    one = lb.cross_entropy.grad(on(backend, [0]), on(backend, [[0.5]]),
                                class_weight=on(backend, [big]), softcap=softcap,
                                reduction="sum", backend=backend)
    np.testing.assert_array_equal(host(one), [[0.0]])


def test_cross_entropy_no_z_loss_with_an_overflowed_denominator(backend):
    """"mean" whose kept class weights sum past float64's largest, without a z-loss: the
    gradient the NumPy backend gives, not NaN (Numba scaled its z-loss coefficient of 0 by
    the denominator over the kept rows' count: 0 inf)."""
    x, labels = np.array([[2.0, 1.0], [-5.0, 1.0]]), np.array([0, 0])
    weight = np.array([np.finfo(np.float64).max, 1.0])
    expected = lb.cross_entropy.grad(labels, x, class_weight=weight, backend="numpy")
    got = lb.cross_entropy.grad(on(backend, labels), on(backend, x),
                                class_weight=on(backend, weight), backend=backend)
    assert not np.isnan(expected).any()
    np.testing.assert_array_equal(host(got), expected)


def test_cross_entropy_smoothing_weight_that_underflows(backend):
    """A class weight of float64's smallest subnormal, whose share of the smoothing (e / C
    w) underflows to 0, against an infinite logit: that class costs nothing, the label's
    own weight makes the loss inf, not NaN (Numba tested the weight before the product)."""
    x = np.array([[1e-3, np.inf, 2.0]])
    weight = np.array([5e-324, 1.0, 0.5])
    value, grad = lb.cross_entropy.value_and_grad(
        on(backend, [0]), on(backend, x), label_smoothing=0.1, class_weight=on(backend, weight),
        reduction="none", backend=backend)
    np.testing.assert_array_equal(host(value), [np.inf])
    # s = (0, 1, 0): s sum_c w_c q_c - w q, the label's entry -0.9 w_0 rounded to w_0
    spread = 0.1 / 3
    np.testing.assert_allclose(host(grad), [[-5e-324, 0.5 * spread, -0.5 * spread]],
                               rtol=1e-13, atol=0)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "cupy"], indirect=True)
def test_cross_entropy_float32_extremes_in_float64(backend):
    """The host backends weigh float32 rows in float64 (the CUDA kernels in float32: gpu.md):
    a z-loss's 2 z lse beside a class weight of float32's largest (the label's gradient is
    2 z lse = 3.4e34: Numba's overflowed float32 scale gave inf) and a probability target's
    w q below float32's smallest against a logit of -inf (NumPy's float32 w q was 0: a finite
    loss)."""
    top = np.finfo(np.float32).max
    x = np.array([[0.5, top / 2, -2.0]], np.float32)
    grad = lb.cross_entropy.grad(np.array([1]), x, z_loss=1e-4, reduction="sum",
                                 class_weight=np.array([1, top, 1], np.float32), backend=backend)
    np.testing.assert_array_equal(grad, np.array([[0, 2e-4 * (float(top) / 2), 0]], np.float32))
    probs = np.array([[0.25, 0.0, 0.0]], np.float32)
    value = lb.cross_entropy(probs, np.array([[-np.inf, 0.07, -1.5]], np.float32),
                             class_weight=np.array([1e-45, 0, 1], np.float32), reduction="none",
                             backend=backend)
    np.testing.assert_array_equal(value, [np.inf])


def test_softcap_rows_within_and_beyond_the_cap(backend):
    """float32 softcap takes a polynomial tanh for a row whose logits all lie within
    +-softcap and the rational one for a row with any beyond (or a NaN): rows of each kind,
    side by side and with a logit at exactly +-softcap, against the float64 reference."""
    cap = 30.0
    x = (rng.normal(size=(8, 1000)) * 6).clip(-29, 29).astype(np.float32)
    x[1, 17] = cap  # on the edge: still within
    x[2, 3] = -cap
    x[3, 999] = np.nextafter(np.float32(cap), np.float32(np.inf))  # one just beyond
    x[4, 0] = -60.0
    x[5] *= 4.0  # many beyond
    x[6, 5] = np.nan
    labels = rng.integers(0, 1000, 8)
    expected = reference.cross_entropy_liger(labels, x.astype(np.float64), softcap=cap,
                                             reduction="none")
    value, grad = lb.cross_entropy.value_and_grad(on(backend, labels), on(backend, x),
                                                  softcap=cap, reduction="none", backend=backend)
    # in place, where the gradient overwrites the logits as the row is read: the same bits
    xd = on(backend, x.copy())
    value_in_place, _ = lb.cross_entropy.value_and_grad(on(backend, labels), xd, out=xd,
                                                        softcap=cap, reduction="none",
                                                        backend=backend)
    np.testing.assert_array_equal(host(value_in_place), host(value))
    np.testing.assert_array_equal(host(xd), host(grad))
    value, grad = np.asarray(host(value), np.float64), np.asarray(host(grad), np.float64)
    assert np.isnan(value[6]) and np.isnan(grad[6]).all()
    keep = np.arange(8) != 6
    np.testing.assert_allclose(value[keep], expected[0][keep], rtol=2e-6)
    np.testing.assert_allclose(grad[keep], expected[1][keep], rtol=2e-5, atol=2e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", [{}, {"z_loss": 1e-3, "class_weight": "w", "ignore_index": 7}])
def test_softcap_label_anywhere_in_its_row(backend, dtype, options):
    """With class labels, no smoothing and no Hessian, Numba caps, exponentiates and
    folds the chain rule into the gradient in one pass over the row (in spans of 256
    logits), then sums the exps but the label's and scales the gradient as plain
    cross-entropy does: labels at every span's ends, rows within and beyond the cap,
    against the float64 reference; the value alone, and the gradient of ``grad_and_hess``
    (the chain rule in a pass of its own), agree with it."""
    classes = 600  # (spans of 256, 256 and 88 logits)
    labels = np.array([0, 1, 255, 256, 257, 511, 512, 598, 599, 7, 300, 100])
    x = (rng.normal(size=(labels.size, classes)) * 3).astype(dtype)
    x[np.arange(labels.size), labels] += 6.0
    x[4, 20] = 40.0  # a logit beyond the cap: the row again with the tanh that holds anywhere
    x[10, 300] = -45.0  # the label itself beyond it
    cap = 30.0
    options = options_for(options, classes)
    expected = reference.cross_entropy_liger(labels, x.astype(np.float64), softcap=cap,
                                             reduction="none", **options)
    args = (on(backend, labels), on(backend, x))
    # (the class weights where the logits are: a GPU call refuses host weights)
    options = {key: on(backend, value) if isinstance(value, np.ndarray) else value
               for key, value in options.items()}
    value, grad = lb.cross_entropy.value_and_grad(*args, softcap=cap, reduction="none",
                                                  backend=backend, **options)
    assert_close(value, expected[0], dtype, "value")
    assert_close(grad, expected[1], dtype, "gradient")
    alone = lb.cross_entropy(*args, softcap=cap, reduction="none", backend=backend, **options)
    assert host(alone).tobytes() == host(value).tobytes()
    with_hess = lb.cross_entropy.grad_and_hess(*args, softcap=cap, reduction="none",
                                               backend=backend, **options)[0]
    rtol = 2e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(host(with_hess), host(grad), rtol=rtol,
                               atol=rtol * np.abs(host(grad)).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softcap_at_the_ends_of_the_polynomials_range(backend, dtype):
    """Numba caps rows within +-softcap by a polynomial whose coefficients are scaled by
    the softcap (``softcap_constants``) for softcaps in [1/512, 40], and takes the max's
    pass and the rational tanh outside: at both ends and one step beyond each, rows with
    logits at exactly +-softcap, one ulp beyond, and well within, against the float64
    reference."""
    for cap in (np.nextafter(1 / 512, 0), 1 / 512, 40.0, np.nextafter(40.0, np.inf)):
        c = dtype(cap)
        x = (rng.uniform(-1, 1, size=(4, 300)) * c).astype(dtype)
        x[0, 7], x[0, 8] = c, -c
        x[1, 299] = np.nextafter(c, dtype(np.inf))
        x[2, 0] = -np.nextafter(c, dtype(np.inf))
        labels = np.array([7, 0, 5, 299])
        expected = reference.cross_entropy_liger(labels, x.astype(np.float64), softcap=cap,
                                                 reduction="none")
        value, grad = lb.cross_entropy.value_and_grad(on(backend, labels), on(backend, x),
                                                      softcap=cap, reduction="none",
                                                      backend=backend)
        rtol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(np.asarray(host(value), np.float64), expected[0],
                                   rtol=rtol, err_msg=f"softcap {cap!r}")
        np.testing.assert_allclose(np.asarray(host(grad), np.float64), expected[1],
                                   rtol=rtol, atol=rtol * np.abs(expected[1]).max(),
                                   err_msg=f"softcap {cap!r}")


def test_softcap_losses_of_well_classified_rows_are_relatively_exact(backend):
    """A row whose label dominates has a small loss (here about 1e-5), exact to float32's
    relative accuracy, and a one-class row's loss is 0: Numba's exps are shifted by
    softcap, not by the row's max (its label's exp is rounded, not 1), which once left an
    absolute error of 1e-7 (0.5 % of such a loss)."""
    x = (rng.normal(size=(64, 1000)) * 2).astype(np.float32)
    labels = rng.integers(0, 1000, 64)
    x[np.arange(64), labels] = 25.0
    value = lb.cross_entropy(on(backend, labels), on(backend, x), softcap=30.0,
                             reduction="none", backend=backend)
    expected = reference.cross_entropy_liger(labels, x.astype(np.float64), softcap=30.0,
                                             reduction="none")[0]
    assert 1e-6 < expected.min() and expected.max() < 1e-4
    # (the CUDA kernels cap the logits in float32: the ulps of tanh and of the products
    # near the cap move every z by up to about 3e-6, measured 4e-6 relative on the host
    # emulation; Numba's capped logits are rounded once, at most 1.22e-6 relative over
    # 1000 draws of this test; NumPy's twice, tanh then its product by the softcap, 0.7
    # ulp off at the label's 20.47 here, at most 2.29e-6 over the same draws, and a fifth
    # of them above 2e-6)
    rtol = {"cupy": 1e-5, "numpy": 3e-6}.get(backend, 2e-6)
    np.testing.assert_allclose(np.asarray(host(value), np.float64), expected, rtol=rtol)
    one_class = on(backend, (rng.normal(size=(50, 1)) * 3).astype(np.float32))
    value = lb.cross_entropy(on(backend, np.zeros(50, np.int64)), one_class, softcap=5.0,
                             reduction="none", backend=backend)
    np.testing.assert_array_equal(host(value), np.zeros(50, np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_confident_rows_losses_are_relatively_exact(backend, dtype):
    """A row whose label dominates by 30 has a loss of log1p((C - 1) e^-30), 8e-13 at 10
    classes: the max's exp is 1, and a sum 1 + e keeps e only to float64's ulp of 1, so
    Numba's loss was 1e-3 relative off at 10 classes and 6e-5 at 128000 (NumPy's 2e-4 at
    10); with softcap and probability targets or label smoothing, the two terms
    log(sum) and the dot cancelled (a negative loss, -7e-9 for 6.7e-9). Host backends: the
    GPU sums float32 rows in float32 (the GPU guide)."""
    if backend == "cupy":
        pytest.skip("the GPU's sums are float32 for float32 rows (docs/guide/gpu.md)")
    rtol = 2e-6 if dtype == np.float32 else 1e-13
    for classes in (10, 20000, 128000):
        x = np.zeros((1, classes), dtype)
        x[0, 0] = 30.0
        value = lb.cross_entropy(on(backend, np.zeros(1, np.int64)), on(backend, x),
                                 reduction="none", backend=backend)
        expected = np.log1p((classes - 1) * np.exp(-30.0))
        np.testing.assert_allclose(np.asarray(host(value), np.float64), [expected], rtol=rtol,
                                   err_msg=f"{classes} classes")
    # softcap 30: the capped logits' difference d decides the loss, log1p(e^-d), to
    # float32's rounding of the capped logits (absolute 1e-6 in d: relative in the loss)
    x = np.array([[5.0, -15.0]], dtype)
    capped = 30.0 * np.tanh(x.astype(np.float64) / 30.0)
    expected = np.log1p(np.exp(capped[0, 1] - capped[0, 0]))
    value = lb.cross_entropy(on(backend, np.array([[1.0, 0.0]], dtype)), on(backend, x),
                             softcap=30.0, reduction="none", backend=backend)
    np.testing.assert_allclose(np.asarray(host(value), np.float64), [expected],
                               rtol=2e-5 if dtype == np.float32 else 1e-12)
    x = np.array([[0.0, -20.0]], dtype)
    capped = 30.0 * np.tanh(x.astype(np.float64) / 30.0)
    eps = 1e-9  # q = (1 - eps) onehot + eps / 2
    lse = capped[0, 0] + np.log1p(np.exp(capped[0, 1] - capped[0, 0]))
    expected = (1 - eps / 2) * (lse - capped[0, 0]) + eps / 2 * (lse - capped[0, 1])
    value = lb.cross_entropy(on(backend, np.zeros(1, np.int64)), on(backend, x), softcap=30.0,
                             label_smoothing=eps, reduction="none", backend=backend)
    np.testing.assert_allclose(np.asarray(host(value), np.float64), [expected],
                               rtol=2e-5 if dtype == np.float32 else 1e-12)


def test_float64_rows_sum_as_accurately_as_pairwise(backend):
    """float64 rows of many classes: the row's sums of exps (and the dot of probability
    targets) within a few ulp, as NumPy's pairwise sum. Numba's single reassociated loop
    (32 partial sums of C / 32 terms) put a confident row's loss 543 ulp off at 128000
    classes, and its label's gradient 2500 (a review's finding); it sums spans of 256 and
    adds them compensated. Rows of zeros beside the label (equal terms: the worst case for
    a running sum), and of random logits against ``math.fsum``."""
    if backend == "cupy":
        pytest.skip("the GPU's sums are float32 for float32 rows (docs/guide/gpu.md)")
    for classes in (1000, 32000, 128000):
        for top in (5.0, 25.0):
            x = np.zeros((1, classes))
            x[0, 0] = top
            r = (classes - 1) * math.exp(-top)
            value, grad = lb.cross_entropy.value_and_grad(
                on(backend, np.zeros(1, np.int64)), on(backend, x), reduction="sum",
                backend=backend)
            np.testing.assert_allclose(float(host(value)), math.log1p(r), rtol=5e-16,
                                       atol=0, err_msg=f"{classes} classes, top {top}")
            np.testing.assert_allclose(float(host(grad)[0, 0]), -r / (1 + r), rtol=1e-15,
                                       atol=0, err_msg=f"{classes} classes, top {top}")
        x = rng.normal(size=(1, classes))
        q = rng.random((1, classes))
        q /= q.sum()
        shifted = (x - x.max())[0]
        lse = x.max() + math.log(math.fsum(np.exp(shifted).tolist()))
        expected = lse - math.fsum((q[0] * x[0]).tolist())  # (sum q = 1 to 1e-16)
        value = lb.cross_entropy(on(backend, q), on(backend, x), reduction="sum",
                                 backend=backend)
        np.testing.assert_allclose(float(host(value)), expected, rtol=5e-15, atol=0,
                                   err_msg=f"{classes} classes, probabilities")


def test_losses_under_one_and_a_half_are_exact_to_float32(backend):
    """Rows whose loss lies in [0.1, 1.4] (the label's exp a fifth to nine tenths of the
    row's sum) at 1000 and 32000 classes: within 2 ulp of the float64 loss on the host,
    whose sums of exps are float64. A float32 sum of each span of 256 exps, taken in the
    exp pass (tried: 14 % faster), was 18 ulp off here."""
    for classes in (1000, 32000):
        x = rng.normal(size=(64, classes)).astype(np.float32)
        labels = rng.integers(0, classes, 64)
        loss = rng.uniform(0.1, 1.4, 64)
        others = np.exp(x.astype(np.float64)).sum(axis=1) - np.exp(x[np.arange(64), labels])
        # log1p(others / e_label) = loss
        x[np.arange(64), labels] = np.log(others / np.expm1(loss))
        expected = reference.cross_entropy_liger(labels, x.astype(np.float64),
                                                 reduction="none")[0]
        assert 0.09 < expected.min() and expected.max() < 1.41
        value = lb.cross_entropy(on(backend, labels), on(backend, x), reduction="none",
                                 backend=backend)
        if backend == "cupy":  # (float32 sums: docs/guide/gpu.md)
            continue
        np.testing.assert_allclose(np.asarray(host(value), np.float64), expected,
                                   rtol=2.4e-7, err_msg=f"{classes} classes")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_confident_rows_label_gradient_is_relatively_exact(backend, dtype):
    """The label's gradient of a confident row is -(1 - s_label), the other classes' share:
    computed as s_label - 1 in the logits' dtype it cancelled, 1.3 % off in float32 for a
    label logit 20 above 999 zeros, and 0 instead of -1.4e-8 at 25. Against the float64
    of ``reference.label_gradient`` (plain, z_loss, class weights, softcap). Every row
    kernel of the host: 10 classes (Numba's few-classes kernel), 1000 and 20000 (on a GPU:
    ce_small, ce_rows and ce_stream, whose float32 sums and exps allow a little more)."""
    rtol = 2e-6 if dtype == np.float32 else 1e-12
    if backend == "cupy" and dtype == np.float32:
        rtol = 2e-5
    for classes in (10, 1000, 20000):
        x, labels = reference.confident_rows(classes, dtype)
        for options in ({}, {"z_loss": 1e-3}, {"class_weight": "w"}, {"softcap": 30.0}):
            options = options_for(options, classes)
            expected = reference.label_gradient(labels, x, **options)
            cw = options.get("class_weight")
            kw = dict(options, class_weight=None if cw is None else on(backend, cw))
            _, grad = lb.cross_entropy.value_and_grad(on(backend, labels), on(backend, x),
                                                      reduction="sum", backend=backend, **kw)
            np.testing.assert_allclose(np.asarray(host(grad), np.float64)[np.arange(3), labels],
                                       expected, rtol=rtol, err_msg=f"{classes} {options}")
    # a gradient of 0 (one class; the others' exps underflowed) is +0, as s - 1 gave
    for x in (np.zeros((1, 1), dtype), np.array([[800.0, 0.0, 0.0]], dtype)):
        grad = lb.cross_entropy.grad(on(backend, np.zeros(1, np.int64)), on(backend, x),
                                     backend=backend)
        assert not np.signbit(np.asarray(host(grad))[0, 0]), x.shape


def test_softcap_gradients_keep_their_sign_near_saturation(backend):
    """Logits of 8 to 10 softcaps, where tanh is within an ulp of 1: the gradient of a
    class other than the label is >= 0 and the label's <= 0, as softmax's are (Numba's
    tanh crossed 1 there by an ulp, and the slope 1 - tanh^2 turned negative)."""
    cap = 5.0
    x = np.sort(rng.uniform(8 * cap, 10 * cap, (50, 200)), axis=1).astype(np.float32)
    x[:, ::2] *= -1
    labels = np.zeros(50, np.int64)  # the label's logit is the smallest positive one
    expected = reference.cross_entropy_liger(labels, x.astype(np.float64), softcap=cap)[1]
    args = (on(backend, labels), on(backend, x))
    for grad in (lb.cross_entropy.value_and_grad(*args, softcap=cap, backend=backend)[1],
                 lb.cross_entropy.grad_and_hess(*args, softcap=cap, backend=backend)[0]):
        grad = host(grad)
        assert (grad[:, 1:] >= 0).all() and (grad[:, 0] <= 0).all()
        # the slope's documented absolute error (7e-7; 0 from about 8 softcaps) times the
        # softmax (about 1/200 here)
        np.testing.assert_allclose(grad, expected, rtol=0, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softcap_saturated_logits_get_the_gradient_and_hessian_of_their_slope(backend, dtype):
    """Logits of 50 and 100 softcaps, where tanh is 1 in float32 and float64: the chain
    rule's slope is 4 exp(-2|u|) (1e-43 and 6e-87), not 1 - t^2, whose t an ulp under 1
    left gradients of 1e-16 (float64) to 6e-8 (float32) for about one cap in seven when
    Numba took t back from the capped logit as v / cap (a review's finding), and which is
    0 where t rounds to 1: each element as the float64 reference (``reference``'s 1 /
    cosh^2) gives it, 0 or subnormal where float32 cannot hold it, for softcaps on both
    sides of the range where the exps are shifted by the cap (1/512 to 40), with the
    Hessian (of the same size) and without."""
    labels = np.zeros(1, np.int64)
    tiny, rtol = np.finfo(dtype).tiny, (1e-5 if dtype == np.float32 else 1e-12)
    for cap in np.exp(rng.uniform(np.log(1e-3), np.log(1e3), 40)):
        x = np.array([[0.0, 50 * cap, -50 * cap, 100 * cap]], dtype)
        expected = reference.cross_entropy_liger(labels, x, reduction="mean", softcap=cap)[1]
        args = (on(backend, labels), on(backend, x))
        grad = host(lb.cross_entropy.value_and_grad(*args, softcap=cap, backend=backend)[1])
        pair = lb.cross_entropy.grad_and_hess(*args, softcap=cap, backend=backend)
        for result in (grad, host(pair[0])):
            np.testing.assert_allclose(result, expected, rtol=rtol, atol=tiny, err_msg=str(cap))
        # the Hessian's: slope^2 h - g 2 t slope / cap, of the slope's size
        assert (np.abs(host(pair[1])[0, 1:]) <= 1e-40 * (1 + 2 / cap)).all(), (cap, pair[1])
        assert grad[0, 0] < 0 and host(pair[0])[0, 0] < 0, cap  # (the label's)


def test_softcap_rows_agree_across_the_two_tanh_forms(backend):
    """The same logits within +-softcap, alone (the polynomial tanh) and beside one -inf
    logit (which sends the row to the rational tanh; capped to -softcap, its exp is
    e^-60 of the others'): the same loss and gradients to float32's accuracy."""
    x = (rng.normal(size=(4, 500)) * 6).clip(-29, 29).astype(np.float32)
    labels = rng.integers(0, 500, 4)
    within = lb.cross_entropy.value_and_grad(on(backend, labels), on(backend, x), softcap=30.0,
                                             reduction="none", backend=backend)
    beyond = lb.cross_entropy.value_and_grad(
        on(backend, labels), on(backend, np.hstack([x, np.full((4, 1), -np.inf, np.float32)])),
        softcap=30.0, reduction="none", backend=backend)
    np.testing.assert_allclose(host(beyond[0]), host(within[0]), rtol=2e-6)
    np.testing.assert_allclose(host(beyond[1])[:, :-1], host(within[1]), rtol=1e-5, atol=1e-9)


def _hinge_rows_reference(labels, x, weight, margin, reduction, dtype):
    """multiclass_hinge's (value, gradient) with its rules at special scores, written out
    row by row apart from the backends: a NaN score makes its row NaN; equal scores (two
    infinities of one sign too) leave a gap of 0; the best other class is the first at
    the max; the gap best - s_y, the slack m + gap and a row's weighted loss are rounded
    in the dtype, as every backend computes them (the rows' sum in float64, its result in
    the dtype again); a weight of 0 times an infinite slack is 0."""
    rows, classes = x.shape
    w = np.ones(rows) if weight is None else np.asarray(weight, np.float64)
    denominator = rows if reduction == "mean" else 1
    losses, grad = np.zeros(rows), np.zeros((rows, classes))
    with np.errstate(invalid="ignore", over="ignore"):
        for i in range(rows):
            row, y = x[i].astype(np.float64), int(labels[i])
            if np.isnan(row).any():
                losses[i], grad[i] = np.nan, np.nan
                continue
            others = [j for j in range(classes) if j != y]
            if not others:
                continue  # nothing to beat: 0
            best = max(row[j] for j in others)
            best_j = next(j for j in others if row[j] == best)
            gap = 0.0 if best == row[y] else float(dtype(best - row[y]))
            slack = float(dtype(margin + gap))
            if slack > 0:
                losses[i] = 0.0 if w[i] == 0 else float(dtype(w[i] * slack))
                grad[i, best_j], grad[i, y] = w[i] / denominator, -w[i] / denominator
    with np.errstate(over="ignore"):  # (rows of float64's largest: an infinite sum)
        value = losses if reduction == "none" else losses.sum() / denominator
        return np.asarray(value, dtype).astype(np.float64), grad


@settings(max_examples=examples(60), deadline=None)
@given(data=st.data())
def test_multiclass_hinge_special_scores(data):
    """Every backend over rows of special scores (+-0, +-inf, NaN, subnormals, the largest
    finite, values at and beside the margin's kink, ties), margins, weights (0 among
    them) and reductions, against ``_hinge_rows_reference``."""
    dtype = data.draw(st.sampled_from([np.float32, np.float64]))
    info = np.finfo(dtype)
    margin = data.draw(st.sampled_from([0.0, 1.0, 2.5]))
    kink = [float(v) for m in (margin, -margin)
            for v in (np.nextafter(dtype(m), dtype(-np.inf)), dtype(m),
                      np.nextafter(dtype(m), dtype(np.inf)))]
    special = [0.0, -0.0, np.inf, -np.inf, float(info.smallest_subnormal), float(info.max),
               -float(info.max), 1.0, -3.0, *kink]
    rows = data.draw(st.integers(1, 6))
    classes = data.draw(st.integers(1, 7))
    values = st.sampled_from(special) | st.just(np.nan) if data.draw(st.booleans()) else (
        st.sampled_from(special))
    x = np.array(data.draw(st.lists(values, min_size=rows * classes, max_size=rows * classes)),
                 dtype).reshape(rows, classes)
    labels = np.array(data.draw(st.lists(st.integers(0, classes - 1), min_size=rows,
                                         max_size=rows)), np.int64)
    weight = data.draw(st.none() | st.lists(st.sampled_from([0.0, 0.5, 2.0]), min_size=rows,
                                            max_size=rows).map(lambda w: np.array(w, dtype)))
    reduction = data.draw(st.sampled_from(REDUCTIONS))
    value, grad = _hinge_rows_reference(labels, x, weight, margin, reduction, dtype)
    eps = float(info.eps)
    for backend in RUNNABLE:
        got_value, got_grad = lb.multiclass_hinge.value_and_grad(
            on(backend, labels), on(backend, x), weight=on(backend, weight), margin=margin,
            reduction=reduction, backend=backend)
        what = f"{backend} {np.dtype(dtype).name} {reduction} margin={margin}\n{x}\n{labels}"
        # (the losses are >= 0: a sum has no cancellation, a few roundings at most)
        np.testing.assert_allclose(np.asarray(host(got_value), np.float64), value, rtol=4 * eps,
                                   atol=0, err_msg=f"value of {what}")
        np.testing.assert_allclose(np.asarray(host(got_grad), np.float64), grad, rtol=2 * eps,
                                   atol=0, err_msg=f"gradient of {what}")


@settings(max_examples=examples(30), deadline=None)
@given(data=st.data())
def test_softcap_and_z_loss_at_special_logits(data):
    """Cross-entropy with softcap (and z_loss, smoothing, class weights, ignored rows) over
    logits of special values on every backend, against ``reference.cross_entropy_liger``:
    the cap makes +-inf, +-max and subnormal logits finite (+-softcap, 0), a NaN makes its
    row NaN; softcaps either side of 40 (the Numba kernels shift by the cap below it)."""
    dtype = np.float32  # (float64's kernels: the reference tests above)
    info = np.finfo(dtype)
    rows = data.draw(st.integers(1, 4))
    classes = data.draw(st.sampled_from([1, 2, 3, 7, 33]))
    specials = [0.0, -0.0, np.inf, -np.inf, float(info.smallest_subnormal), float(info.max),
                -float(info.max), 1e4, -1e4, 30.0, -90.0]
    logits = st.sampled_from(specials) | st.floats(-20, 20, width=info.bits)
    if data.draw(st.booleans()):
        logits = logits | st.just(np.nan)
    x = np.array(data.draw(st.lists(logits, min_size=rows * classes, max_size=rows * classes)),
                 dtype).reshape(rows, classes)
    labels = np.array(data.draw(st.lists(st.integers(0, classes - 1) | st.just(-100),
                                         min_size=rows, max_size=rows)), np.int64)
    reduction = data.draw(st.sampled_from(REDUCTIONS))
    if reduction == "mean" and (labels == -100).all():
        labels[0] = 0  # (the mean of no row: test_losses' empty-mean tests)
    softcap = data.draw(st.sampled_from([0.5, 5.0, 30.0, 50.0]))
    z_loss = data.draw(st.sampled_from([0.0, 1e-3, 0.1]))
    smoothing = data.draw(st.sampled_from([0.0, 0.1]))
    class_weight = data.draw(st.none() | st.lists(st.sampled_from([0.5, 1.0, 2.0]),
                                                  min_size=classes, max_size=classes))
    options = dict(softcap=softcap, z_loss=z_loss, label_smoothing=smoothing)
    with np.errstate(invalid="ignore", over="ignore"):
        value, grad = reference.cross_entropy_liger(labels, x, reduction=reduction,
                                                    class_weight=class_weight, **options)
    grad[labels == -100] = 0.0  # (an ignored row's logits are not read: the reference's
    # chain rule multiplies its 0 by a NaN logit's slope)
    # the capped logits are within +-softcap: the losses' terms, lse and its square are
    # bounded by it, so each result is within a few roundings of those bounds
    eps = float(info.eps)
    bound = (1 + 2 * softcap + np.log(classes)) * (1 + z_loss * (2 * softcap + np.log(classes)))
    kept = max(1, int((labels != -100).sum())) if reduction != "mean" else 1
    for backend in RUNNABLE:
        weight = None if class_weight is None else on(backend, np.array(class_weight, dtype))
        got_value, got_grad = lb.cross_entropy.value_and_grad(
            on(backend, labels), on(backend, x), reduction=reduction, class_weight=weight,
            backend=backend, **options)
        what = f"{backend} {np.dtype(dtype).name} {reduction} {options}\n{x}\n{labels}"
        np.testing.assert_allclose(np.asarray(host(got_value), np.float64), value,
                                   rtol=64 * eps, atol=64 * eps * bound * kept,
                                   err_msg=f"value of {what}")
        np.testing.assert_allclose(np.asarray(host(got_grad), np.float64), grad,
                                   rtol=64 * eps, atol=64 * eps * (1 + 2 * z_loss * bound),
                                   err_msg=f"gradient of {what}")


def test_special_values(backend):
    """NaN makes its row NaN; equal infinite scores count as equal; softcap makes
    infinite logits finite (loss and gradient finite)."""
    x = np.array([[np.nan, 0.0, 1.0], [np.inf, np.inf, 0.0], [0.0, 1.0, -np.inf]])
    labels = np.array([1, 0, 0])
    value, grad = lb.multiclass_hinge.value_and_grad(on(backend, labels), on(backend, x),
                                                     reduction="none", backend=backend)
    value, grad = host(value), host(grad)
    assert np.isnan(value[0]) and np.isnan(grad[0]).all()
    assert value[1] == 1.0 and (grad[1] == [-1, 1, 0]).all()
    assert value[2] == 2.0 and (grad[2] == [-1, 1, 0]).all()
    capped = np.array([[np.inf, 0.0, -np.inf], [1e30, -1e30, 0.0]])
    value, grad = lb.cross_entropy.value_and_grad(on(backend, np.array([2, 1])),
                                                  on(backend, capped), softcap=5.0, z_loss=0.1,
                                                  reduction="none", backend=backend)
    # (the infinities as +-1e4: 2000 softcaps, where the reference's slope 1 / cosh^2 is
    # 0, the limit at infinity, as is the backends' 1 - tanh^2)
    expected = reference.cross_entropy_liger([2, 1], np.clip(capped, -1e4, 1e4), softcap=5.0,
                                             z_loss=0.1, reduction="none")
    np.testing.assert_allclose(host(value), expected[0], rtol=1e-12)
    np.testing.assert_allclose(host(grad), expected[1], atol=1e-300)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_softcap_within_the_normal_numbers(backend, dtype):
    """The kernels multiply by softcap and 1 / softcap: from the computing dtype's smallest
    normal (float16's is float32's) to its largest, both are finite and the results right
    (at the smallest, the logits capped to about 0 and the slopes of all but the zero
    logit 0); outside, a ValueError that names the bounds (1 / softcap was inf in float32
    and a zero logit gave NaN; a softcap beyond float32's largest gave NaN rows)."""
    computing = np.float32 if dtype == np.float16 else dtype
    info = np.finfo(computing)
    tiny, largest = float(info.tiny), float(info.max)
    x = np.array([[0.0, 1.0, -3.0, 2.0], [1.0, 2.0, 3.0, 100.0]], dtype)
    labels = on(backend, np.array([0, 2]))
    tol = 1e-3 if dtype == np.float16 else 1e-6
    plain = lb.cross_entropy(labels, on(backend, x), reduction="none", backend=backend)
    for softcap, value, grad in [(tiny, [np.log(4)] * 2, [[-0.75, 0, 0, 0], [0, 0, 0, 0]]),
                                 (largest, host(plain), None)]:
        with warnings.catch_warnings():  # x / softcap overflows to inf: tanh 1, no warning
            warnings.simplefilter("error")
            v, g = lb.cross_entropy.value_and_grad(labels, on(backend, x), softcap=softcap,
                                                   reduction="none", backend=backend)
        np.testing.assert_allclose(np.asarray(host(v), np.float64), value, rtol=tol)
        if grad is not None:
            np.testing.assert_allclose(np.asarray(host(g), np.float64), grad, atol=tol)
    bounds = re.escape(f"softcap must be within [{tiny!r}, {largest!r}] (the normal "
                       f"{np.dtype(computing)} numbers) for {np.dtype(dtype)} logits")
    outside = [np.nextafter(tiny, 0)] + ([largest * 1.0001] if computing == np.float32 else [])
    for softcap in outside:
        with pytest.raises(ValueError, match=bounds):
            lb.cross_entropy(labels, on(backend, x), softcap=softcap, backend=backend)


def test_softcap_ignored_rows_with_a_nan_logit_get_zeros(backend):
    """An ignored row's gradient and Hessian are exactly 0 with softcap too: its chain rule
    (1 - tanh^2 of a NaN logit) once made NumPy's NaN."""
    x = on(backend, np.array([[np.nan, 1.0, 2.0], [0.5, 1.0, 2.0]]))
    labels = on(backend, np.array([-100, 1]))
    for softcap in (None, 2.0):
        grad, hess = lb.cross_entropy.grad_and_hess(labels, x, softcap=softcap,
                                                    backend=backend)
        np.testing.assert_array_equal(host(grad)[0], 0.0)
        np.testing.assert_array_equal(host(hess)[0], 0.0)
        assert np.isfinite(host(grad)[1]).all()
        np.testing.assert_array_equal(
            host(lb.cross_entropy.grad(labels, x, softcap=softcap, backend=backend))[0], 0.0)


def test_cross_entropy_rows_either_side_of_normal_exps(backend):
    """Rows whose logits lie within 87 of their max have only normal float32 exps, and the
    Numba kernel takes a leaner exp there; wider rows keep the exp with subnormal results
    (a softmax probability of 1e-40 is not 0). Both sides against float64."""
    rows = []
    for reach in (0.5, 86.9, 87.0, 87.1, 95.0, 103.0):
        row = np.linspace(-reach, 0.0, 40)
        rows.append(np.roll(row, 7))
    x = np.array(rows, np.float32)
    t = np.array([0, 39, 5, 7, 12, 3])
    value, grad = lb.cross_entropy.value_and_grad(on(backend, t), on(backend, x),
                                                  reduction="none", backend=backend)
    expected, expected_grad = reference.cross_entropy(t, x.astype(np.float64), reduction="none")
    np.testing.assert_allclose(host(value), expected, rtol=2e-6)
    # (a subnormal holds fewer digits: its rounding is absolute, half of 2^-149)
    np.testing.assert_allclose(host(grad), expected_grad, rtol=1e-5, atol=2.0**-149)
    tiny = host(grad)[5].min(initial=1.0, where=host(grad)[5] > 0)
    assert 0 < tiny < 2.0**-126  # a subnormal probability, kept
