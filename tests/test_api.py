"""The contract: seed drop-ins, gradients by finite differences, errors that name the fix,
``out=`` and the memory it may share (choosing the backend: test_backend_choice.py; the
dispatch's fast path: test_fast_path.py; the docstrings' examples: test_docstrings.py)."""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import reference
from conftest import host, on

import lossbackends as lb

LOSSES = ("mse", "binary_cross_entropy", "binary_cross_entropy_with_logits", "hinge",
          "cross_entropy")


# --- the seed -------------------------------------------------------------------------


def test_seed_examples_exactly():
    assert lb.mse_loss(np.array([3, -0.5, 2, 7]), np.array([2.5, 0.0, 2, 8])) == 0.375
    assert lb.binary_cross_entropy_loss(
        np.array([0, 1, 1, 0]), np.array([0.1, 0.8, 0.9, 0.2])) == 0.164252033486018
    # the seed prints 0.07499999999999998 (1 - 0.9 is not 0.1 in binary): same bits here
    value = lb.hinge_loss(np.array([-1, 1, 1, -1]), np.array([-1.5, 1.2, 0.9, -0.8]))
    assert value == np.mean(np.maximum(0, 1 - np.array([-1, 1, 1, -1]) * np.array([-1.5, 1.2, 0.9, -0.8])))
    assert round(float(value), 15) == 0.075


def test_seed_drop_ins_are_the_seeds_functions_to_the_last_bit():
    """float64 inputs of sizes where 1 / n is not exact: the seed's np.mean divides the sum
    by n (the losses' "mean" multiplies by 1 / n: one result in five differed in the last
    bit); a list too."""
    rng = np.random.default_rng(11)
    for n in (3, 5, 7, 10, 1003):
        for _ in range(10):
            y, p, labels = rng.random(n), rng.random(n), (rng.random(n) < 0.5) * 1.0
            signs, scores = np.where(rng.random(n) < 0.5, -1.0, 1.0), rng.normal(size=n)
            for got, want in (
                    (lb.mse_loss(y, p), reference.seed_mse_loss(y, p)),
                    (lb.binary_cross_entropy_loss(labels, p),
                     reference.seed_binary_cross_entropy_loss(labels, p)),
                    (lb.hinge_loss(signs, scores), reference.seed_hinge_loss(signs, scores))):
                assert type(got) is np.float64 and got.tobytes() == want.tobytes()
    assert lb.mse_loss([0.33, 0.99, 0.32], [0.79, 0.87, 0.39]) == 0.07696666666666667


def test_seed_bce_drop_in_keeps_the_library_s_rules_beyond_float64():
    """binary_cross_entropy_loss takes the seed's formula for float64 host inputs only: a
    float32 p = 1 stays finite (clipped at float32's eps, where the seed's 1 - 1e-15 rounds
    to 1: NaN), shapes must match, and a torch tensor gives a tensor."""
    value = lb.binary_cross_entropy_loss(np.float32([1, 0]), np.float32([1, 0]))
    assert value.dtype == np.float32 and np.isclose(value, np.finfo(np.float32).eps, rtol=1e-6)
    with pytest.raises(ValueError, match="must match"):
        lb.binary_cross_entropy_loss(np.array([[0, 1], [1, 0]]), np.array([0.3, 0.6]))
    torch = pytest.importorskip("torch")
    got = lb.binary_cross_entropy_loss(torch.tensor([1.0, 0.0]), torch.tensor([0.8, 0.1]))
    assert isinstance(got, torch.Tensor)
    assert np.isclose(got.item(), -(np.log(0.8) + np.log1p(-0.1)) / 2, rtol=1e-6)


def test_label_error_crosses_processes_and_losses_have_names():
    """LabelError pickles with its fields (a process pool died on it), and a loss has a
    function's __name__ (scikit-learn's make_scorer reads it)."""
    import pickle

    with pytest.raises(lb.LabelError) as info:
        lb.cross_entropy([5], [[1.0, 2.0]])
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is lb.LabelError and str(again) == str(info.value)
    assert (again.label, again.row, again.classes, again.loss) == (5, 0, 2, "cross_entropy")
    assert lb.mse.__name__ == lb.mse.__qualname__ == "mse"
    # a loss pickles by reference, as a function: the module's own object comes back
    for loss in (lb.mse, lb.cross_entropy, lb.sigmoid_focal):
        assert pickle.loads(pickle.dumps(loss)) is loss


def test_seed_examples_on_every_backend(backend):
    cases = [("mse", [3, -0.5, 2, 7], [2.5, 0.0, 2, 8], 0.375),
             ("binary_cross_entropy", [0, 1, 1, 0], [0.1, 0.8, 0.9, 0.2], 0.164252033486018),
             ("hinge", [-1, 1, 1, -1], [-1.5, 1.2, 0.9, -0.8], 0.075)]
    for name, y, p, expected in cases:
        value = getattr(lb, name)(on(backend, np.array(y)), on(backend, np.array(p)), backend=backend)
        assert abs(float(host(value)) - expected) < 1e-15


# --- gradients against central finite differences (float64) ---------------------------


def _fd_inputs(name, rng):
    if name == "cross_entropy":
        return rng.integers(0, 7, 5), rng.normal(size=(5, 7))
    if name == "binary_cross_entropy":
        return (rng.random(12) < 0.5).astype(float), rng.uniform(0.05, 0.95, 12)
    if name == "hinge":
        y = np.where(rng.random(12) < 0.5, -1.0, 1.0)
        p = rng.normal(size=12)
        p[np.abs(1 - y * p) < 0.05] += 0.2  # stay off the kink
        return y, p
    return rng.normal(size=12), rng.normal(size=12)


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_gradient_matches_finite_differences(backend, name, reduction):
    rng = np.random.default_rng(11)
    y, p = _fd_inputs(name, rng)
    options = {}
    if name == "cross_entropy":
        options = {"label_smoothing": 0.1, "class_weight": rng.uniform(0.5, 2, 7)}
    elif name != "hinge":
        options = {"weight": rng.uniform(0.5, 2, p.shape)}
    if name == "binary_cross_entropy_with_logits":
        options["pos_weight"] = 1.7
    loss = getattr(lb, name)

    def value(q):
        dev = {k: on(backend, v) if isinstance(v, np.ndarray) else v for k, v in options.items()}
        return float(host(loss(on(backend, y), on(backend, q), reduction=reduction,
                               backend=backend, **dev)))

    dev = {k: on(backend, v) if isinstance(v, np.ndarray) else v for k, v in options.items()}
    grad = host(loss.grad(on(backend, y), on(backend, p), reduction=reduction, backend=backend, **dev))
    np.testing.assert_allclose(grad, _central_differences(value, p), rtol=1e-6, atol=1e-8)


def _central_differences(value, p, h=1e-6):
    """d value / d p by central differences, one element of ``p`` at a time."""
    numeric = np.zeros_like(p)
    for index in np.ndindex(p.shape):
        up, down = p.copy(), p.copy()
        up[index] += h
        down[index] -= h
        numeric[index] = (value(up) - value(down)) / (2 * h)
    return numeric


def _fd_option_inputs(case, rng):
    """(loss, y, p, options) of ``case``: an option or layout the test above leaves out."""
    if case == "hinge margin":
        y = np.where(rng.random(12) < 0.5, -1.0, 1.0)
        p = rng.normal(size=12)
        p[np.abs(0.5 - y * p) < 0.05] += 0.2  # off the kink at 0.5
        return "hinge", y, p, {"margin": 0.5, "weight": rng.uniform(0.5, 2, 12)}
    if case == "bce eps":  # soft labels, predictions inside the clip bounds [0.1, 0.9]
        y = rng.random(12)
        return "binary_cross_entropy", y, rng.uniform(0.2, 0.8, 12), {"eps": 0.1}
    if case == "cross_entropy soft labels":
        t = rng.dirichlet(np.ones(7), 5)
        return "cross_entropy", t, rng.normal(size=(5, 7)), {"label_smoothing": 0.2}
    # the class axis first: (classes, rows) logits
    return ("cross_entropy", rng.integers(0, 7, 5), rng.normal(size=(7, 5)),
            {"axis": 0, "class_weight": rng.uniform(0.5, 2, 7)})


@pytest.mark.parametrize("case", ["hinge margin", "bce eps", "cross_entropy soft labels",
                                  "cross_entropy axis 0"])
def test_gradient_with_options_matches_finite_differences(backend, case):
    name, y, p, options = _fd_option_inputs(case, np.random.default_rng(13))
    loss = getattr(lb, name)
    dev = {k: on(backend, v) if isinstance(v, np.ndarray) else v for k, v in options.items()}

    def value(q):
        return float(host(loss(on(backend, y), on(backend, q), backend=backend, **dev)))

    grad = host(loss.grad(on(backend, y), on(backend, p), backend=backend, **dev))
    numeric = _central_differences(value, p)
    assert np.abs(numeric).max() > 1e-3  # (the inputs reach the loss's slope)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", ["mse", "binary_cross_entropy_with_logits", "hinge"])
def test_none_gradient_is_the_vjp_with_ones(backend, name):
    """reduction="none": .grad is each element's own derivative, so an upstream gradient
    u multiplies it elementwise (checked with random u, not ones)."""
    rng = np.random.default_rng(12)
    y, p = _fd_inputs(name, rng)
    u = rng.normal(size=p.shape)
    loss = getattr(lb, name)
    per_element = host(loss.grad(on(backend, y), on(backend, p), reduction="none", backend=backend))
    weighted = host(loss.grad(on(backend, y), on(backend, p), reduction="sum",
                              weight=on(backend, u), backend=backend))
    np.testing.assert_allclose(per_element * u, weighted, rtol=1e-12, atol=1e-15)


# --- errors that name the fix -----------------------------------------------------------


def test_unknown_backend_and_reduction():
    with pytest.raises(ValueError, match="unknown backend 'jax'; choose one of 'auto', 'numpy'"):
        lb.mse(np.ones(2), np.ones(2), backend="jax")
    with pytest.raises(ValueError, match="unknown backend"):
        with lb.use_backend("torch"):
            pass
    with pytest.raises(ValueError, match="unknown reduction 'avg'; choose one of 'mean', 'sum', 'none'"):
        lb.mse(np.ones(2), np.ones(2), reduction="avg")


def test_unknown_option_names_the_loss_and_its_options():
    # the error names the loss and what it takes, not the private function that prepares it
    with pytest.raises(TypeError, match=r"^mse\(\) got an unexpected keyword argument 'delta'; "
                       "its options are weight, reduction and backend$"):
        lb.mse(np.ones(2), np.ones(2), delta=1.0)
    with pytest.raises(TypeError, match=r"huber\(\) .* 'detla'; its options are weight, delta,"):
        lb.huber.value_and_grad(np.ones(2), np.ones(2), detla=1.0)
    with pytest.raises(TypeError, match=r"'weight'; .*class_weight, .* per-class weights are "
                       r"class_weight= \(torch's weight=\)"):
        lb.cross_entropy(np.array([0, 1]), np.ones((2, 3)), weight=np.ones(2))


def test_shape_mismatch_names_both_shapes(backend):
    with pytest.raises(ValueError, match=r"y_true has shape \(3, 1\) but y_pred has shape \(3,\)"):
        lb.mse(on(backend, np.ones((3, 1))), on(backend, np.ones(3)), backend=backend)
    with pytest.raises(ValueError, match=r"weight has shape \(4,\), which does not broadcast"):
        lb.mse(on(backend, np.ones(3)), on(backend, np.ones(3)), weight=on(backend, np.ones(4)),
               backend=backend)
    with pytest.raises(ValueError, match="pos_weight has shape"):
        lb.binary_cross_entropy_with_logits(on(backend, np.ones((2, 3))), on(backend, np.ones((2, 3))),
                                            pos_weight=on(backend, np.ones(2)), backend=backend)


def test_cross_entropy_argument_errors(backend):
    x = on(backend, np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"expects class indices of shape \(4,\) or probabilities"):
        lb.cross_entropy(on(backend, np.zeros(5, int)), x, backend=backend)
    with pytest.raises(TypeError, match="must be integers"):
        lb.cross_entropy(on(backend, np.zeros(4)), x, backend=backend)
    with pytest.raises(ValueError, match=r"class_weight has shape \(2,\)"):
        lb.cross_entropy(on(backend, np.zeros(4, int)), x, class_weight=on(backend, np.ones(2)),
                         backend=backend)
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        lb.cross_entropy(on(backend, np.zeros(4, int)), x, label_smoothing=1.5, backend=backend)
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        lb.cross_entropy(on(backend, np.zeros(4, int)), x, axis=2, backend=backend)


@pytest.mark.parametrize("options", [{}, {"weight": None}], ids=["fast_path", "prepared"])
def test_out_errors(backend, options):
    y, p = on(backend, np.ones(6)), on(backend, np.ones(6))

    def grad(y, p, out):
        return lb.mse.grad(y, p, out=out, backend=backend, **options)

    with pytest.raises(ValueError, match=r"out has shape \(5,\) and dtype float64; the gradient needs"):
        grad(y, p, on(backend, np.ones(5)))
    with pytest.raises(ValueError, match="dtype float32"):
        grad(y, p, on(backend, np.ones(6, np.float32)))
    with pytest.raises(ValueError, match="C-contiguous"):
        grad(on(backend, np.ones(3)), on(backend, np.ones(3)), on(backend, np.ones(6))[::2])
    with pytest.raises(ValueError, match="must not share memory with y_true"):
        grad(y, p, y)
    labels_and_more = on(backend, np.ones(12))
    with pytest.raises(ValueError, match="must not share memory with y_true"):
        grad(labels_and_more[:6], p, labels_and_more[3:9])
    if backend != "cupy":
        with pytest.raises(TypeError, match="out must be an array .* not list"):
            grad(y, p, [0.0] * 6)
        read_only = np.zeros(6)
        read_only.flags.writeable = False
        with pytest.raises(ValueError, match="writeable"):
            grad(y, p, read_only)
        # a byte-swapped y_pred as its own out: computed in native order, so the message
        # says why it cannot be in place and what to pass
        swapped = np.ones(6, np.dtype(np.float64).newbyteorder())
        with pytest.raises(ValueError, match=r"in native byte order: pass an array of dtype "
                                             r"'float64', or None for a new one"):
            grad(y, swapped, swapped)
    out = on(backend, np.full(6, np.nan))
    assert grad(y, on(backend, np.full(6, 3.0)), out) is out
    np.testing.assert_array_equal(host(out), np.full(6, 2 * 2.0 / 6))


def test_bad_dtypes():
    with pytest.raises(TypeError, match="y_pred has dtype complex128"):
        lb.mse(np.ones(2), np.ones(2, complex))
    with pytest.raises(TypeError, match="y_true has dtype <U1"):
        lb.mse(np.array(["a", "b"]), np.ones(2))
    with pytest.raises(TypeError, match="unexpected keyword argument 'margin'"):
        lb.mse(np.ones(2), np.ones(2), margin=2.0)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_unpickled_arrays_give_the_same_results(backend, dtype):
    """Arrays sent through pickle (multiprocessing, joblib, Dask's workers) carry a dtype
    equal to NumPy's own but not the same object (float16 ones failed on Numba: the
    kernels told float16 by identity)."""
    import pickle

    rng = np.random.default_rng(5)
    y, p = rng.random(50).astype(dtype), rng.uniform(0.1, 0.9, 50).astype(dtype)
    labels, logits = rng.integers(0, 4, 6), rng.standard_normal((6, 4)).astype(dtype)
    again = [pickle.loads(pickle.dumps(a)) for a in (y, p, logits)]
    assert again[1].dtype == dtype and again[1].dtype is not np.dtype(dtype)
    for fresh, unpickled in (((y, p), again[:2]), ((labels, logits), (labels, again[2]))):
        loss = lb.cross_entropy if fresh[0] is labels else lb.binary_cross_entropy
        for call in (loss, loss.value_and_grad, loss.grad_and_hess):
            expected = call(*fresh, backend=backend)
            got = call(*unpickled, backend=backend)
            for a, b in zip(np.atleast_1d(got) if call is loss else got,
                            np.atleast_1d(expected) if call is loss else expected, strict=True):
                np.testing.assert_array_equal(a, b)
                assert np.asarray(a).dtype == dtype


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_masked_arrays_are_refused(backend):
    """numpy.asarray drops a masked array's mask: the masked elements would count, silently."""
    masked = np.ma.array([1.0, 2.0], mask=[False, True])
    calls = {"y_true": lambda: lb.mse(masked, np.zeros(2), backend=backend),
             "y_pred": lambda: lb.mse.grad(np.zeros(2), masked, backend=backend),
             "weight": lambda: lb.mae(np.zeros(2), np.ones(2), weight=masked, backend=backend)}
    for name, call in calls.items():
        with pytest.raises(TypeError, match=f"{name} is a masked array .* weight of 0"):
            call()
    with pytest.raises(TypeError, match="y_true is a masked array"):
        lb.cross_entropy(np.ma.array([0, 1]), np.zeros((2, 3)), backend=backend)
    # the advice works: a weight of 0 where masked
    kept = lb.mse(np.zeros(2), masked.data, weight=~np.ma.getmaskarray(masked),
                  reduction="sum", backend=backend)
    assert kept == 1.0


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_errors_name_the_argument_and_the_fix(backend):
    """Messages of the user's own mistakes: the option by its name (not float()'s or
    operator.index's message), a float refused where an integer goes (never truncated),
    the arguments' order when integer logits meet float labels, no internal exception
    chained before a routing error."""
    x, labels = np.array([[1.0, 2.0, 3.0], [3.0, 1.0, 0.0]]), np.array([0, 2])
    half = np.full(2, 0.5)
    cases = [
        (TypeError, "binary_cross_entropy: eps must be a real number, not str",
         lambda: lb.binary_cross_entropy(half, half, eps="a", backend=backend)),
        (ValueError, "hinge: margin must be in", lambda: lb.hinge(
            half, half, margin=float("nan"), backend=backend)),
        (TypeError, "cross_entropy: label_smoothing must be a real number, not NoneType",
         lambda: lb.cross_entropy(labels, x, label_smoothing=None, backend=backend)),
        (TypeError, "cross_entropy: axis must be an integer, not float",
         lambda: lb.cross_entropy(labels, x, axis=1.0, backend=backend)),
        (TypeError, "cross_entropy: ignore_index must be an integer, not float",
         lambda: lb.cross_entropy(labels, x, ignore_index=1.5, backend=backend)),
        (TypeError, "check_labels must be True or False, not 'no'",
         lambda: lb.cross_entropy(labels, x, check_labels="no", backend=backend)),
        (TypeError, r"y_pred has dtype object \(from a NoneType\)",
         lambda: lb.mse(half, None, backend=backend)),
        (ValueError, r"y_pred holds integers: is it the labels\? the order is \(y_true, y_pred\)",
         lambda: lb.cross_entropy(x, labels, backend=backend)),
    ]
    for error, message, call in cases:
        with pytest.raises(error, match=message):
            call()
    # multiclass_hinge takes no probabilities: its advice does not offer them
    with pytest.raises(TypeError, match=r"\.astype\(int\)$"):
        lb.multiclass_hinge(labels.astype(float), x, backend=backend)
    with pytest.raises(ValueError, match="unknown backend 'gpu'") as info:
        lb.mse(half, half, backend="gpu")
    assert info.value.__context__ is None  # (it was "during handling of KeyError")
    with pytest.raises(ValueError, match=r"unknown backend \['numpy'\]") as info:
        lb.mse(half, half, backend=["numpy"])  # (unhashable: a TypeError in the lookup)
    assert info.value.__context__ is None
    # what float() and bool() took stays accepted: 0-d arrays, NumPy scalars, Fractions
    from fractions import Fraction

    for eps in (np.array(1e-7), np.float32(1e-7), Fraction(1, 10**7)):
        assert lb.binary_cross_entropy(half, half, eps=eps, backend=backend) == np.log(2)
    plain = lb.cross_entropy(labels, x, label_smoothing=0.1, backend=backend)
    assert lb.cross_entropy(labels, x, label_smoothing=np.array(0.1), check_labels=np.array(
        True), ignore_index=np.array(-100), axis=np.int64(-1), backend=backend) == plain


def test_cuda_array_interface_is_asked_of_the_instance():
    """A class may define ``__cuda_array_interface__`` as a property that refuses a CPU
    instance (as torch's does): such an instance is a host array, read by ``__array__``;
    one whose property answers is a GPU array, and the two mixed are the devices error.
    Neither kind of call is cached by type (the next instance may live elsewhere)."""

    class Either:
        def __init__(self, values, on_gpu=False):
            self.values, self.on_gpu = np.asarray(values), on_gpu

        @property
        def __cuda_array_interface__(self):
            if not self.on_gpu:
                raise AttributeError("a CPU instance")
            return {"shape": self.values.shape, "typestr": "<f8", "data": (0, False),
                    "version": 3}

        def __array__(self, dtype=None, copy=None):
            return self.values

    assert lb.mse(Either([1.0, 2.0]), Either([0.0, 0.0])) == 2.5
    np.testing.assert_array_equal(lb.mse.grad(Either([1.0, 2.0]), Either([0.0, 0.0])),
                                  [-1.0, -2.0])
    with pytest.raises(ValueError, match="live on different devices"):
        lb.mse(Either([1.0, 2.0]), Either([0.0, 0.0], on_gpu=True))
    if "cupy" not in lb.available_backends():
        with pytest.raises(ValueError, match="backend 'cupy' is not available here"):
            lb.mse(Either([1.0, 2.0], on_gpu=True), Either([0.0, 0.0], on_gpu=True))
    assert lb.mse(Either([3.0]), Either([1.0])) == 4.0  # a host call again after a GPU one


def test_cuda_array_interface_on_the_instance_alone():
    """The contract's "anything with ``__cuda_array_interface__`` on the instance": a
    wrapper that sets it in ``__init__`` (its class has none) is a GPU array, not a host
    array of dtype object, and its type is asked instance by instance from then on. A
    type whose first instance holds none stays a host type decided by its type (its
    routes kept), and an attribute a ``__getattr__`` answers (a pandas column of that
    name) is not read; NumPy arrays and their subclasses are host arrays by type."""
    from lossbackends import _dispatch

    interface = {"shape": (3,), "typestr": "<f4", "data": (0, False), "version": 3}

    class Wrapper:
        def __init__(self, interface=None):
            if interface is not None:
                self.__cuda_array_interface__ = interface

    class Answers:  # the name answered by __getattr__, as a pandas column of that name is
        def __init__(self, values):
            self.values = np.asarray(values)

        def __getattr__(self, name):
            if name == "__cuda_array_interface__":
                return interface
            raise AttributeError(name)

        def __array__(self, dtype=None, copy=None):
            return self.values

    gpu = Wrapper(interface)
    assert _dispatch.device_of(gpu) == "cuda"
    assert _dispatch.device_of(Wrapper()) == "host"  # asked one by one
    assert _dispatch.device_of(Answers([1.0])) == "host"
    assert _dispatch._DEVICE_OF_TYPE[Answers] == "host"  # by type, from then on
    assert lb.mse(Answers([1.0, 2.0]), Answers([0.0, 0.0])) == 2.5
    assert _dispatch.device_of(np.zeros(3)) == "host"
    if "cupy" not in lb.available_backends():
        with pytest.raises(ValueError, match="backend 'cupy' is not available here"):
            lb.mse(gpu, gpu)


def test_lists_are_accepted_on_the_host():
    assert lb.mse([1, 2], [1, 4], backend="numpy") == 2.0
    assert isinstance(lb.mse.grad([1, 2], [1, 4], backend="numpy"), np.ndarray)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_out_overlapping_y_pred_without_being_it_is_refused(backend):
    buf = np.arange(11.0)
    with pytest.raises(ValueError, match="out overlaps y_pred without being it"):
        lb.mse.grad(np.zeros(10), buf[:-1], out=buf[1:], backend=backend)
    p = np.arange(10.0)
    assert lb.mse.grad(np.zeros(10), p, out=p, backend=backend) is p  # in place is fine
    np.testing.assert_allclose(p, 2 * np.arange(10.0) / 10)


def test_out_is_checked_against_the_memory_it_may_share():
    """Arrays that own their memory are told apart by their flags, the others by their
    bounds (np.may_share_memory): an out that owns its memory next to y_true and y_pred
    that do not (views) is accepted when it is apart from them, refused when it is inside."""
    buf = np.zeros(30)
    y, p = buf[:10], buf[10:20]
    assert not (y.flags.owndata or p.flags.owndata)
    out = np.empty(10)
    assert lb.mse.grad(y, p, out=out, backend="numpy") is out
    assert lb.mse.grad(y, p, out=buf[20:], backend="numpy").base is buf
    with pytest.raises(ValueError, match="must not share memory with y_true"):
        lb.mse.grad(y, np.ones(10), out=buf[5:15], backend="numpy")
    with pytest.raises(ValueError, match="out overlaps y_pred without being it"):
        lb.mse.grad(np.zeros(10), p, out=buf[15:25], backend="numpy")
    # nor the weights the kernel reads (the gradient was silently wrong)
    for backend in ("numpy", "numba"):
        with pytest.raises(ValueError, match="out must not share memory with the weights"):
            lb.mse.grad(np.zeros(10), np.ones(10), out=buf[1:11], weight=buf[0:10],
                        backend=backend)
        with pytest.raises(ValueError, match="out must not share memory with the weights"):
            lb.binary_cross_entropy_with_logits.grad(np.zeros(10), np.ones(10), out=buf[:10],
                                                     pos_weight=buf[:10], backend=backend)
        # nor the user's weights where the kernel reads a copy of them (broadcast, cast,
        # strided), which were overwritten
        grid, grid32 = np.zeros((4, 3)), np.zeros((4, 3), np.float32)
        labels = np.array([0, 1, 2, 0])
        for loss, y_true, out, options in (
                ("mse", np.zeros((4, 3)), grid, {"weight": grid[0]}),
                ("cross_entropy", labels, grid32,
                 {"class_weight": grid32.reshape(-1)[:6].view(np.float64)}),
                ("multiclass_hinge", labels, grid, {"weight": grid[:, 0]})):
            with pytest.raises(ValueError, match="out must not share memory with the weights"):
                getattr(lb, loss).grad(y_true, np.ones_like(out), out=out, backend=backend,
                                       **options)
        # nor the user's narrow class indices, which the quick path casts to int64
        narrow = grid32.reshape(-1)[:4].view(np.int32)  # (labels 0)
        with pytest.raises(ValueError, match="out must not share memory with y_true"):
            lb.cross_entropy.grad(narrow, np.ones_like(grid32), out=grid32, backend=backend)


def test_a_bad_label_is_named_by_its_index_in_y_true():
    t = np.zeros((3, 5), np.int64)
    t[2, 3] = 9
    with pytest.raises(ValueError, match=r"y_true\[2, 3\] = 9"):
        lb.cross_entropy(t, np.zeros((3, 4, 5)), axis=1, backend="numpy")


def _declared_for_type_checkers(module) -> list[str]:
    """The public names the module's ``if TYPE_CHECKING:`` block declares."""
    tree = ast.parse(inspect.getsource(module))
    (block,) = [node for node in tree.body if isinstance(node, ast.If)
                and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"]
    names = [node.name for node in block.body if isinstance(node, ast.ClassDef | ast.FunctionDef)]
    names += [target.id for node in block.body if isinstance(node, ast.Assign)
              for target in node.targets]
    return sorted(name for name in names if not name.startswith("_"))


@pytest.mark.parametrize("library", ["torch", "jax"])
def test_wrappers_declare_their_names_for_type_checkers(library):
    """lossbackends.torch's and .jax's functions (and torch's modules) are made at run time;
    a TYPE_CHECKING block declares them for mypy and pyright, and must name exactly
    __all__ (type checkers reported lbt.cross_entropy as unknown)."""
    pytest.importorskip(library, reason=f"{library} is not installed")
    module = importlib.import_module(f"lossbackends.{library}")
    assert _declared_for_type_checkers(module) == module.__all__
    assert all(isinstance(getattr(module, name), type) == name[0].isupper()
               for name in module.__all__)


@pytest.mark.parametrize(("library", "what"), [("torch", "PyTorch"), ("jax", "JAX")])
def test_a_missing_library_says_what_to_install(library, what):
    code = f"import sys; sys.modules[{library!r}] = None; import lossbackends.{library}"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert run.returncode == 1
    assert (f"ModuleNotFoundError: lossbackends.{library} needs {what}: pip install "
            f"'lossbackends[{library}]'") in run.stderr, run.stderr
    assert f"import of {library} halted" in run.stderr  # the original, chained
