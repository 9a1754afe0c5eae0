"""What the two host backends (NumPy, Numba) share."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def rounding_of_sum(a, b, s):
    """(a + b) - s exactly, for s = a + b rounded (Knuth's TwoSum), elementwise on arrays
    and numbers; the Numba kernels inline it (they compile without reassociation, which
    would cancel it to 0)."""
    bb = s - a
    return (a - (s - bb)) + (b - bb)


class LabelError(ValueError):
    """An integer class index outside ``[0, C)`` that is not ``ignore_index``; ``row`` is
    the flat row it was found in (a Dask block renames it to its global row), ``loss`` the
    loss that was called.

    >>> import lossbackends as lb
    >>> try:
    ...     lb.cross_entropy([0, 3], [[1.0, 2.0, 0.5], [0.1, 0.2, 0.3]])
    ... except lb.LabelError as error:
    ...     print(error.label, error.row, error.classes)
    3 1 3
    """

    def __init__(self, message: str, label: int, row: int, classes: int, loss: str):
        super().__init__(message)
        self.label, self.row, self.classes, self.loss = label, row, classes, loss

    def __reduce__(self):  # all five, so that it crosses processes (pickle, Dask, joblib)
        return type(self), (self.args[0], self.label, self.row, self.classes, self.loss)


def label_error(label: int, row: int, classes: int, where: str | None = None,
                loss: str = "cross_entropy") -> LabelError:
    """The error for an integer class index outside ``[0, C)`` (every backend raises it),
    named after ``loss``; ``where`` names the element (default ``y_true[row]``). Only
    cross-entropy has ``ignore_index``: only its message offers it."""
    where = f"y_true[{row}]" if where is None else where
    message = f"{loss}: {where} = {label} is not a class index in [0, {classes})"
    if loss == "cross_entropy":
        message += " nor ignore_index; fix the labels or set ignore_index to mark rows to skip"
    else:
        message += "; fix the labels"
    return LabelError(message, label, row, classes, loss)


# float16's type number: compare ``dtype.num`` with it, not the dtype with ``is``: an array
# unpickled (multiprocessing, joblib, Dask's workers) has a dtype equal to np.float16's
# but not the same object, and ``==`` takes twice as long on every call
HALF = np.dtype(np.float16).num


def _up(a):
    return a.astype(np.float32) if isinstance(a, np.ndarray) and a.dtype == np.float16 else a


def _down(out, a) -> None:
    """``out[...] = a``: float32 into float16 by NumPy's cast (the Numba backend's is the
    CPU's own, ``_numba_half``)."""
    np.copyto(out, a, casting="same_kind")


def in_float32(kernel: Callable, y, p, weight, params, reduction, scale, grad, want_value,
               hess=None, up: Callable = _up, down: Callable = _down):
    """Run ``kernel`` on float16 inputs in float32 and give float16 results (the contract:
    float16 is accepted and computed in float32); ``up`` and ``down`` convert."""
    grad32 = None if grad is None else np.empty(p.shape, np.float32)
    args = (up(y), up(p), up(weight), tuple(map(up, params)), reduction, scale, grad32,
            want_value)
    hess32 = None if hess is None else np.empty(p.shape, np.float32)
    value = kernel(*args) if hess is None else kernel(*args, hess=hess32)
    # a float32 result beyond float16's range rounds to inf, one below it to a subnormal
    # or 0: results, which NumPy's casts would warn of (``quiet``)
    with np.errstate(all="ignore"):
        if hess is not None:
            down(hess, hess32)
        if grad is not None:
            down(grad, grad32)
        if value is None:
            return None
        if reduction != "none":
            return np.float16(value)
        values = np.empty(value.shape, np.float16)
        down(values, value)
        return values


try:  # NumPy's errstate(all="ignore") made once, set through the context variable that
    # errstate itself sets (0.2 µs a call, where the context manager costs 0.8: it builds
    # the state anew each time); NumPy's own context manager wherever these move
    from numpy._core._ufunc_config import _extobj_contextvar
    from numpy._core.umath import _make_extobj

    _IGNORE_ALL = _make_extobj(all="ignore", bufsize=8192)  # (NumPy's default buffer)
    _token = _extobj_contextvar.set(_IGNORE_ALL)
    try:  # NumPy still reads that variable: else its context manager
        _reads_it = np.geterr()["over"] == "ignore" and np.getbufsize() == 8192
    finally:
        _extobj_contextvar.reset(_token)
    if not _reads_it:
        raise ValueError("NumPy's error state is kept elsewhere")
except (ImportError, TypeError, ValueError, KeyError):
    _extobj_contextvar = _IGNORE_ALL = None


def cast_quietly(a, dtype, order: str = "K"):
    """``a.astype(dtype, order=order)`` (a NumPy or CuPy array), a value beyond the dtype's
    largest becoming inf, and one below its smallest subnormal 0, without NumPy's warnings
    (or errors, under the caller's ``np.seterr``): results, as everywhere (``quiet``)."""
    with np.errstate(all="ignore"):
        return a.astype(dtype, order=order)


def quiet(kernel: Callable) -> Callable:
    """``kernel`` (a NumPy backend's) with NumPy's floating-point warnings off: there NaN
    and inf are data, which propagate as the Numba and CUDA kernels propagate them, and
    inf - inf, 0 * inf or an overflow to inf are results, not events (NumPy would warn,
    or under ``np.seterr(all="raise")`` raise). One ``errstate(all="ignore")`` per call,
    around all of it."""

    def run(*args, **kwargs):
        if _IGNORE_ALL is None:
            with np.errstate(all="ignore"):
                return kernel(*args, **kwargs)
        token = _extobj_contextvar.set(_IGNORE_ALL)
        try:
            return kernel(*args, **kwargs)
        finally:
            _extobj_contextvar.reset(token)

    run.__name__ = run.__qualname__ = kernel.__name__
    run.__doc__ = kernel.__doc__
    return run


def half_in_float32(kernel: Callable, up: Callable = _up, down: Callable = _down) -> Callable:
    """``kernel``, running float16 inputs through ``in_float32`` (with ``up`` and ``down``)."""

    def run(y, p, weight, params, reduction, scale, grad, want_value, hess=None):
        if p.dtype.num != HALF:  # hess only when asked: kernels without one take 8
            if hess is None:
                return kernel(y, p, weight, params, reduction, scale, grad, want_value)
            return kernel(y, p, weight, params, reduction, scale, grad, want_value, hess)
        return in_float32(kernel, y, p, weight, params, reduction, scale, grad, want_value,
                          hess, up, down)

    run.__name__ = run.__qualname__ = kernel.__name__
    run.__doc__ = kernel.__doc__
    return run


# Cross-entropy: below what sum of a row's exps (shifted by its max: the max's is 1) the
# host backends take its log(sum) as log1p of the others' sum, summed apart: log(1 + e)
# from the rounded sum has an absolute error of an ulp of 1, a relative one of 1e-15 at
# e = 1/8 (few ulp of float64). Other rows take the one sum and log: a second sum on every
# row cost Numba's plain cross-entropy a tenth to a fifth of its time. (A threshold the
# Numba kernel computed, for each dtype, cost a tenth at 1024 x 32000 however it was
# written; a constant does not.)
CONFIDENT = 1.125
# where a class-index loss's params hold check_labels and ignore_index (None: it has none)
_LABEL_PARAMS = {"cross_entropy": (2, 0), "multiclass_hinge": (1, None)}


def bad_labels_as_nan(kernel: Callable) -> Callable:
    """A class-index loss's host ``kernel`` (cross_entropy, multiclass_hinge), where
    ``check_labels=False`` gives rows with a label outside ``[0, C)`` (and not
    ``ignore_index``) a NaN loss and gradient, as on the GPU, instead of the error: what a
    call inside a traced JAX function needs (an exception in a callback is undefined
    there). One scan of the labels, only when the check is off."""
    check_at, ignore_at = _LABEL_PARAMS[kernel.__name__]

    def run(target, x, weight, params, reduction, scale, grad, want_value, hess=None):
        if params[check_at] or target.ndim != 1:  # checked (the default), or probabilities
            return kernel(target, x, weight, params, reduction, scale, grad, want_value, hess)
        ignore_index = None if ignore_at is None else params[ignore_at]
        bad = (target < 0) | (target >= x.shape[1])
        if ignore_index is not None:
            bad &= target != ignore_index
        if not bad.any():
            return kernel(target, x, weight, params, reduction, scale, grad, want_value, hess)
        # the bad rows computed as ignored, or as class 0 where nothing is ignored (in
        # bounds either way), then marked NaN
        value = kernel(np.where(bad, 0 if ignore_index is None else ignore_index, target), x,
                       weight, params, reduction, scale, grad, want_value, hess)
        if grad is not None:
            grad[bad] = np.nan
        if hess is not None:
            hess[bad] = np.nan
        if value is None:
            return None
        if reduction == "none":
            value[bad] = np.nan
            return value
        return value.dtype.type(np.nan)

    run.__name__ = run.__qualname__ = kernel.__name__
    run.__doc__ = kernel.__doc__
    return run
