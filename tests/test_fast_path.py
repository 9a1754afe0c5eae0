"""The dispatch's fast path: options of numbers prepared once per dtype (and bounded),
and the Numba backend calling its kernels' compiled code directly; each gives the bits
of the full preparation."""

from __future__ import annotations

import numpy as np
import pytest
import reference

import lossbackends as lb

# options of numbers for each loss that takes some (the fast path prepares them once)
_NUMBER_OPTIONS = {
    "binary_cross_entropy": [{"eps": 1e-3}],
    "binary_cross_entropy_with_logits": [{"pos_weight": 2.0}],  # (made an array: prepared)
    "hinge": [{"margin": 0.5}],
    "huber": [{"delta": 0.3}, {"delta": 2.0}],
    "smooth_l1": [{"beta": 0.5}, {"beta": 0.0}],
    "squared_hinge": [{"margin": 2.0}],
    "sigmoid_focal": [{"alpha": 0.5, "gamma": 1.0}, {"gamma": 0.0, "alpha": None}],
    "poisson_nll": [{"log_input": False, "full": True, "eps": 1e-6}, {"full": True}],
    "kl_div": [{"log_target": True}],
    # (a float 0 and -0.0 are equal keys: their losses' zeros differ in sign)
    "pinball": [{"quantile": 0.9}, {"quantile": 0.0}, {"quantile": -0.0}],
    "cross_entropy": [{"label_smoothing": 0.1}, {"z_loss": 1e-3, "softcap": 5.0},
                      {"ignore_index": 1, "check_labels": False}, {"axis": -1},
                      # every option at its default, as lossbackends.torch passes them
                      {"label_smoothing": 0.0, "z_loss": 0.0, "softcap": None,
                       "ignore_index": -100, "check_labels": True, "axis": 1},
                      {"label_smoothing": -0.0, "axis": -1}],
    "multiclass_hinge": [{"margin": 2.0}, {"check_labels": False}],
}


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("name", sorted(_NUMBER_OPTIONS))
def test_options_of_numbers_skip_the_preparation_with_the_same_results(backend, name,
                                                                      monkeypatch):
    """A call whose options are numbers takes the fast path, its options prepared once for
    the dtype: the same bits as through the full preparation, for every reduction, the
    gradient, the Hessian and out=; a bad value still raises as it did."""
    loss = getattr(lb, name)
    rng = np.random.default_rng(7)
    rows = name in ("cross_entropy", "multiclass_hinge")
    for dtype in (np.float32, np.float64):
        p = rng.standard_normal((40, 5) if rows else 200).astype(dtype)
        y = (rng.integers(0, 5, 40) if rows else
             (rng.random(200) > 0.5).astype(dtype) if name in (
                 "binary_cross_entropy", "binary_cross_entropy_with_logits", "sigmoid_focal")
             else np.sign(rng.standard_normal(200)).astype(dtype) if "hinge" in name
             else rng.random(200).astype(dtype))
        if name == "binary_cross_entropy":
            p = np.clip(np.abs(p) / 4, 0.01, 0.99).astype(dtype)
        if name in ("poisson_nll", "kl_div"):
            y = rng.random(200).astype(dtype) * 3
        if rows:
            y[::7] = 1  # (ignore_index=1 leaves these out)
        # (Numba's float64 kernels of each call kind compile for seconds each, and the
        # fast path is the dispatch's, the same for every backend: NumPy's runs them all)
        every = backend == "numpy" or dtype == np.float32
        for options in _NUMBER_OPTIONS[name]:
            fast = _every_call(loss, y, p, backend, options, every)
            with monkeypatch.context() as m:  # the full preparation, every call
                m.setattr(type(loss), "_numbers_prepared",
                          lambda self, dtype, options: lb._loss._NOT_PLAIN)
                slow = _every_call(loss, y, p, backend, options, every)
            for what in fast:
                for a, b in zip(*(r if isinstance(r, tuple) else (r,)
                                  for r in (fast[what], slow[what])), strict=True):
                    np.testing.assert_array_equal(a, b, err_msg=f"{name} {options} {what}")
    # (the fast path was taken: sets prepared once are kept; pos_weight becomes an array)
    kept = [found for found in loss._with_numbers.values() if found is not lb._loss._NOT_PLAIN]
    assert kept or name == "binary_cross_entropy_with_logits"
    with pytest.raises((ValueError, TypeError)):  # a bad value: refused, and not kept
        loss(y, p, backend=backend, **{**_NUMBER_OPTIONS[name][0], **_BAD_OPTION[name]})


def test_options_at_their_defaults_and_float_zeros_are_kept_as_numbers(monkeypatch):
    """Options at their defaults (lossbackends.torch passes them all: ``axis=1`` of 2-D
    logits, ``label_smoothing=0.0``) are kept as prepared numbers, not prepared on every
    call; a float 0 and -0.0, equal as keys, are kept apart (pinball's zeros follow the
    quantile's sign)."""
    # (an empty store: the worker's earlier tests may have filled it to its bound)
    monkeypatch.setattr(lb.cross_entropy, "_with_numbers", {})
    x = np.zeros((4, 3), np.float32)
    defaults = {"label_smoothing": 0.0, "z_loss": 0.0, "softcap": None,
                "ignore_index": -100, "check_labels": True, "axis": 1}
    lb.cross_entropy.value_and_grad(np.arange(4) % 3, x, **defaults)
    kept = {key: found for key, found in lb.cross_entropy._with_numbers.items()
            if ("axis", 1) in key and ("label_smoothing", 0.0) in key}
    assert kept and lb._loss._NOT_PLAIN not in kept.values()
    p = np.array([0.0, 1.0, -2.0], np.float32)
    y = np.zeros(3, np.float32)
    signs = {}
    for quantile in (0.0, -0.0, 0.0):
        loss, grad = lb.pinball.value_and_grad(y, p, quantile=quantile, reduction="none")
        signs.setdefault(np.signbit(quantile), []).append(
            (np.signbit(loss).tolist(), np.signbit(grad).tolist()))
    assert signs[False] == [([False, False, False], [False, False, False])] * 2
    assert signs[True] == [([True, False, True], [False, False, False])]


def _every_call(loss, y, p, backend, options, every=True) -> dict:
    """Each kind of call of ``loss`` with ``options`` (``every``: else the default call
    alone): its results by name."""
    found = {reduction: loss.value_and_grad(y, p, reduction=reduction, backend=backend,
                                            **options)
             for reduction in (("mean", "sum", "none") if every else ("mean",))}
    if not every:
        return found
    found["grad_and_hess"] = loss.grad_and_hess(y, p, backend=backend, **options)
    out = np.empty_like(p)
    found["out="] = (loss.value_and_grad(y, p, backend=backend, out=out, **options)[0], out)
    return found


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_options_of_numbers_with_integer_predictions_or_numpy_scalars(backend, monkeypatch):
    """Integer and bool y_pred are computed in float64 with options too (the preparation
    casts them: they never take the kept sets); NumPy scalars as options are kept like
    Python numbers; a refused value is not kept, and the call's own arrays are checked
    first, as through the preparation."""
    y = np.array([0.0, 1.0, 2.0, 3.0])
    for p in (np.array([1, 0, 5, 3]), np.array([1, 0, 5, 3], np.int32),
              np.array([True, False, True, True])):
        value, grad = lb.huber.value_and_grad(y, p, delta=2.0, backend=backend,
                                              reduction="none")
        expected, expected_grad = lb.huber.value_and_grad(y, p.astype(np.float64), delta=2.0,
                                                          backend=backend, reduction="none")
        assert value.dtype == grad.dtype == np.float64
        np.testing.assert_array_equal(value, expected)
        np.testing.assert_array_equal(grad, expected_grad)
    logits = np.array([[1, 2, 3], [0, 0, 1]])
    np.testing.assert_allclose(
        lb.cross_entropy(np.array([0, 2]), logits, label_smoothing=0.1, backend=backend),
        lb.cross_entropy(np.array([0, 2]), logits.astype(float), label_smoothing=0.1,
                         backend=backend), rtol=0, atol=0)
    p = np.linspace(-1, 1, 8)
    loss = lb.huber
    assert loss(p, p * 2, delta=np.float64(0.75), backend=backend) == loss(
        p, p * 2, delta=0.75, backend=backend)
    assert (p.dtype, ("delta", 0.75), np.float64) in loss._with_numbers
    with pytest.raises(ValueError, match="must match exactly"):  # the arrays, first
        loss(np.zeros(3), np.zeros(4), delta=10**400, backend=backend)
    count = len(loss._with_numbers)
    for bad in (-1.0, -2.0, 10**400):
        with pytest.raises((ValueError, OverflowError)):
            loss(p, p, delta=bad, backend=backend)
    assert len(loss._with_numbers) == count  # refused values: not kept


_BAD_OPTION = {"binary_cross_entropy": {"eps": -1.0}, "hinge": {"margin": float("nan")},
               "binary_cross_entropy_with_logits": {"pos_weight": -1.0},
               "huber": {"delta": -1.0}, "smooth_l1": {"beta": -1.0},
               "squared_hinge": {"margin": float("nan")}, "sigmoid_focal": {"gamma": -1.0},
               "poisson_nll": {"eps": -1.0}, "kl_div": {"log_target": None},
               "pinball": {"quantile": 1.5}, "cross_entropy": {"label_smoothing": 2.0},
               "multiclass_hinge": {"margin": float("nan")}}


def test_option_sets_kept_are_bounded():
    """A schedule that moves an option each step (label smoothing annealed) keeps at most
    ``_NUMBER_OPTION_SETS`` prepared sets; beyond them each call prepares its own."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 8)
    loss = lb.cross_entropy
    kept = lb._loss._NUMBER_OPTION_SETS
    for i in range(kept + 20):
        smoothing = i / (kept + 40)
        expected = reference.cross_entropy(labels, x, label_smoothing=smoothing)[0]
        np.testing.assert_allclose(loss(labels, x, label_smoothing=smoothing), expected,
                                   rtol=1e-5)
    assert len(loss._with_numbers) == kept
    # True, 1 and 1.0 are equal keys in a dict: the kept sets tell them apart by type
    y, p = rng.random(16), rng.random(16)
    assert np.isfinite(lb.poisson_nll(y, p, full=True))
    for value in (1, 1.0):
        with pytest.raises(TypeError, match="full must be True or False"):
            lb.poisson_nll(y, p, full=value)
    assert np.isfinite(lb.cross_entropy(labels, x, ignore_index=1))
    with pytest.raises(TypeError, match="ignore_index must be an integer"):
        lb.cross_entropy(labels, x, ignore_index=1.0)


def test_numba_runs_the_machine_code_of_a_plain_call_directly():
    """The Numba backend calls the compiled code of its elementwise kernels without their
    dispatcher, one version for writeable and read-only inputs (JAX's arrays are
    read-only), aligned or not (here an unaligned y_pred), with the same results."""
    pytest.importorskip("numba", reason="Numba is not installed")
    from lossbackends.backends import numba_backend

    usual_code = numba_backend.KERNELS["mse"].usual_code
    rng = np.random.default_rng(3)
    y, p = rng.random(1000), rng.random(1000)
    expected_value, expected_grad = lb.mse.value_and_grad(y, p, backend="numpy")
    value, grad = lb.mse.value_and_grad(y, p, backend="numba")
    np.testing.assert_allclose(value, expected_value, rtol=1e-12)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-12)
    # (variant, value, summed in the loop, dtype number, no gradient, no weight, no
    # pos_weight, no Hessian, streaming stores)
    key = (None, True, True, np.dtype(np.float64).num, False, True, True, True, False)
    assert key in usual_code
    code = usual_code[key]
    y.flags.writeable = p.flags.writeable = False
    value, grad = lb.mse.value_and_grad(y, p, backend="numba")
    assert usual_code[key] is code  # the same compiled code for read-only inputs
    np.testing.assert_allclose(value, expected_value, rtol=1e-12)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-12)
    unaligned = np.empty(p.nbytes + 1, np.uint8)[1:].view(p.dtype)
    unaligned[...] = p
    assert not unaligned.flags.aligned
    known = set(usual_code)
    value, grad = lb.mse.value_and_grad(y, unaligned, backend="numba")
    assert set(usual_code) == known and usual_code[key] is code
    np.testing.assert_allclose(value, expected_value, rtol=1e-12)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-12)
    # the code writes aligned arrays: an out= at an odd address is refused, on every backend
    for backend in ("numba", "numpy"):
        with pytest.raises(ValueError, match="aligned array, as numpy.empty gives"):
            lb.mse.value_and_grad(y, p, backend=backend, out=unaligned)


@pytest.mark.parametrize("loss", ["mse", "binary_cross_entropy", "huber"])
def test_numba_plain_calls_give_the_bits_of_the_general_path(loss):
    """A plain call (C-contiguous arrays, no option) runs the kernel's launch for it
    (``kernel.plain``); passing ``weight=None`` takes the general path through the
    preparation and the kernel's own choice of its code: the same bits, for every method,
    reduction, dtype (float16 through float32), shape, and a size shared among threads."""
    pytest.importorskip("numba", reason="Numba is not installed")
    from lossbackends.backends import numba_backend

    function = getattr(lb, loss)
    rng = np.random.default_rng(8)
    for dtype in (np.float16, np.float32, np.float64):
        for shape in ((1000,), (25, 40), (numba_backend.PARALLEL_MIN_ELEMENTS + 7,)):
            y = rng.random(shape).astype(dtype)
            p = rng.random(shape).astype(dtype)
            for reduction in ("mean", "sum"):
                for method in ("__call__", "grad", "value_and_grad"):
                    call = getattr(function, method)
                    with np.errstate(over="ignore"):  # float16's large sums: inf on both
                        plain = call(y, p, reduction=reduction, backend="numba")
                        general = call(y, p, reduction=reduction, backend="numba",
                                       weight=None)
                    if not isinstance(plain, tuple):
                        plain, general = (plain,), (general,)
                    for a, b in zip(plain, general, strict=True):
                        assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), (
                            dtype, shape, reduction, method)
    launched = {key[:4] for key in numba_backend.KERNELS[loss].plain}  # (less the options)
    assert (np.dtype(np.float32), "sum", True, False) in launched  # value_and_grad's
    assert (np.dtype(np.float64), "mean", False, False) in launched  # grad's
    assert (np.dtype(np.float64), "mean", True, True) in launched  # the value's


def test_a_loss_of_the_same_name_with_other_defaults_keeps_its_own():
    """The Numba backend's launches of plain calls are kept per kernel, which every Loss of
    one name shares: a Loss with other default options gets its own launch, not the first
    one made (and "none" gives an array that owns its memory, as on NumPy)."""
    pytest.importorskip("numba", reason="Numba is not installed")
    from lossbackends._prepare import prepare_huber

    def prepare(xp, y_true, y_pred, *, weight=None, delta=2.0):
        return prepare_huber(xp, y_true, y_pred, weight=weight, delta=delta)

    wide = lb.Loss("huber", prepare, "Huber with delta=2 by default")
    y, p = np.zeros(4), np.array([0.5, -2.0, 3.0, 1.5])
    assert lb.huber(y, p, backend="numba") == 1.28125  # (0.125 + 1.5 + 2.5 + 1) / 4
    assert wide(y, p, backend="numba") == 1.8125  # (0.125 + 2 + 4 + 1.125) / 4
    assert lb.huber(y, p, backend="numba") == 1.28125
    losses = wide(y, p, backend="numba", reduction="none")
    np.testing.assert_array_equal(losses, [0.125, 2.0, 4.0, 1.125])
    assert losses.flags.owndata


def test_numba_row_kernels_run_one_compiled_version_for_every_kind_of_input():
    """cross_entropy's and multiclass_hinge's Numba kernels run their machine code for
    writeable, read-only (JAX's) and unaligned logits and labels alike: no new version."""
    pytest.importorskip("numba", reason="Numba is not installed")
    from lossbackends.backends import _numba_row_common

    rng = np.random.default_rng(4)
    x, t = rng.standard_normal((16, 40)), rng.integers(0, 40, 16)
    for loss in (lb.cross_entropy, lb.multiclass_hinge):
        expected = loss.value_and_grad(t, x, backend="numpy")
        loss.value_and_grad(t, x, backend="numba")
        known = set(_numba_row_common._CODE)
        frozen_x, frozen_t = x.copy(), t.copy()
        frozen_x.flags.writeable = frozen_t.flags.writeable = False
        unaligned = np.empty(x.nbytes + 1, np.uint8)[1:].view(x.dtype).reshape(x.shape)
        unaligned[...] = x
        for labels, logits in ((frozen_t, frozen_x), (t, unaligned)):
            value, grad = loss.value_and_grad(labels, logits, backend="numba")
            np.testing.assert_allclose(value, expected[0], rtol=1e-12)
            np.testing.assert_allclose(grad, expected[1], rtol=1e-12, atol=1e-15)
        assert set(_numba_row_common._CODE) == known
