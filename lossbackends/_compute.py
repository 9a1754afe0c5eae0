"""A prepared call's run on its kernel: the result buffers (a new gradient, from
``_buffers`` where large, or the user's ``out=``, checked against the arguments' memory),
the kernel called, and the results in the user's layout (a class axis moved back, an
empty input's value). ``Loss`` (``_loss.py``) and the Dask blocks (``_dask.py``) call
``compute``.
"""

from __future__ import annotations

import warnings

import numpy as np

from . import _arrays, _buffers, _dispatch
from ._prepare import Prepared
from .backends._host import LabelError, label_error


def _empty_value(xp, prep: Prepared, reduction: str):
    dtype = prep.p.dtype
    if reduction == "none":
        return xp.zeros(prep.value_shape, dtype)
    if reduction == "sum":
        value = np.zeros((), dtype)
    else:
        warnings.warn("mean of an empty input is NaN", RuntimeWarning,
                      stacklevel=_dispatch.callers_level())
        value = np.full((), np.nan, dtype)
    return value[()] if xp is np else xp.asarray(value)

def _buffer(xp, out, prep: Prepared, y_true, name: str, grad_out=None, y_pred=None,
            weights=()):
    """The kernel's buffer for a result shaped like y_pred: ``out`` is ``_WANT_GRAD`` (a new
    array) or the user's array, checked; cross_entropy with the classes on another axis than
    the last computes into a new array, written back into ``out`` after the kernel."""
    p, shape = prep.p, prep.shape
    if out is _WANT_GRAD:
        return _new_grad(xp, p.shape, p.dtype, p.size, p)
    _check_out(xp, out, y_true, prep.y, p, shape, name, grad_out, y_pred)
    # the weights the kernel reads (weight, class_weight, pos_weight) must not be written
    # under it either, nor the user's arrays they were made from (a cast or broadcast copy)
    if any(isinstance(w, xp.ndarray) and _overlaps(xp, out, w)
           for w in (prep.weight, *prep.params, *weights)):
        raise ValueError(f"{name} must not share memory with the weights; pass an array of "
                         "its own")
    if prep.class_axis is not None and prep.class_axis != len(shape) - 1:
        return _new_grad(xp, p.shape, p.dtype, p.size, p)
    return out if out.shape == p.shape else out.reshape(p.shape)


def compute(xp, kernel, prep: Prepared, y_true, reduction: str, want_value: bool, out,
            hess_out=None, y_pred=None, weights=()):
    """Run ``kernel`` on prepared arguments: allocate or check the gradient buffer (``out``
    is ``None`` for no gradient, ``_WANT_GRAD`` to allocate one, or the user's array), and
    give ``(value, grad)`` in the user's layout. ``prep.scale`` is what ``"mean"`` multiplies
    by (a Dask block passes the whole array's). ``hess_out`` (``None``, ``_WANT_GRAD`` or
    the user's array, with a gradient) asks for the Hessian's diagonal too: the result is
    then ``(value, grad, hess)``. ``y_pred`` and ``weights`` (the options' values, arrays
    among them): the user's, which the preparation may have copied, for the buffers'
    memory checks."""
    grad = None if out is None else _buffer(xp, out, prep, y_true,
                                            "out" if hess_out is None else "grad_out",
                                            None, y_pred, weights)
    hess = None if hess_out is None else _buffer(xp, hess_out, prep, y_true, "hess_out",
                                                 None if out is _WANT_GRAD else out, y_pred,
                                                 weights)
    if prep.p.size:
        scale = prep.scale if reduction == "mean" else 1.0
        args = (prep.y, prep.p, prep.weight, prep.params, reduction, scale, grad, want_value)
        try:
            value = kernel(*args) if hess is None else kernel(*args, hess=hess)
        except LabelError as exc:  # kernels count rows flat: name the user's index
            if len(prep.value_shape) < 2:
                raise
            where = np.unravel_index(exc.row, prep.value_shape)
            raise label_error(exc.label, exc.row, exc.classes,
                              f"y_true[{', '.join(map(str, where))}]", exc.loss) from None
    else:
        value = _empty_value(xp, prep, reduction) if want_value else None
    if prep.class_axis is not None:  # back to the user's layout
        value, grad = _class_axis_back(xp, value, grad, prep, out)
        if hess is not None:
            hess = _class_axis_back(xp, None, hess, prep, hess_out)[1]
    return (value, grad) if hess_out is None else (value, grad, hess)

_POOL_MIN_ITEMS = _buffers.MIN_ITEMS


def _new_grad(xp, shape, dtype, n, near):
    """A new gradient buffer of ``n`` elements: ``xp.empty``, except that a NumPy one of
    1 MiB or more may reuse a gradient returned before that nothing references any more
    (``_buffers``: it spares the page faults of fresh memory), and is placed by ``near``,
    the array the kernel reads beside it (see ``_buffers.empty``). The size is checked
    first, so that small calls pay nothing for it."""
    if n < _POOL_MIN_ITEMS or xp is not np:
        return xp.empty(shape, dtype)
    return _buffers.empty(shape, dtype, n * dtype.itemsize, near)

class _WantGrad:
    """Marker for "allocate the gradient" (``out`` not given)."""


_WANT_GRAD = _WantGrad()


def _check_out(xp, out, y_true, y, p, shape, name: str = "out", grad_out=None,
               y_pred=None) -> None:
    """Raise unless ``out`` can receive the gradient: y_pred's ``shape`` as the user passed
    it, the computation's array ``p`` (its dtype and device), sharing no memory with
    ``y_true`` or its converted array ``y``. ``name``, what the messages call it: ``"out"``
    (``grad``, ``value_and_grad``), ``"grad_out"`` (``grad_and_hess``) or ``"hess_out"``:
    the Hessian's buffer, which must not share memory with ``y_pred`` either (the kernels
    read ``y_pred`` after writing it), nor with ``grad_out``, the gradient's buffer.
    ``y_pred``, the user's array where the computation's is a copy (the classes moved to
    the last axis): its memory is checked too, as the copy hides it."""
    if type(out) is not type(p):  # (an array of y_pred's own type passes at once)
        if not (hasattr(out, "shape") and hasattr(out, "flags")):
            kind = type(out)
            raise TypeError(f"{name} must be an array like y_pred (a NumPy array for host "
                            "inputs, a CuPy array for GPU inputs), not "
                            + (kind.__qualname__ if kind.__module__ == "builtins"
                               else f"{kind.__module__}.{kind.__qualname__}"))
        if _dispatch.device_of(out) != _dispatch.device_of(p):
            raise ValueError(
                f"{name} must be an array on the same device as y_pred (a NumPy array for "
                "host inputs, a CuPy array for GPU inputs)"
            )
    # the cheapest checks first: at n = 1000 this function is a quarter of the call
    if out.shape != shape or (out.dtype is not p.dtype and out.dtype != p.dtype):
        what = "Hessian" if name == "hess_out" else "gradient"
        swapped = (f" in native byte order: pass an array of dtype {str(p.dtype)!r}, or None "
                   "for a new one (a byte-swapped y_pred, computed in native order, cannot "
                   "take its own gradient in place)"
                   if out.shape == shape and out.dtype.newbyteorder() == p.dtype else "")
        raise ValueError(
            f"{name} has shape {tuple(out.shape)} and dtype {out.dtype}; the {what} needs shape "
            f"{shape} and dtype {p.dtype}{swapped}"
        )
    flags = out.flags  # (a new object each time it is read: read once)
    # (carray: C-contiguous, aligned and writeable; aligned: the Numba kernels' code
    # writes aligned arrays; CuPy's flags have neither attribute, and a CuPy array at an
    # odd address takes the kernels' scalar path)
    if not (flags.carray if xp is np else flags.c_contiguous):
        raise ValueError(f"{name} must be a writeable, C-contiguous, aligned array, as "
                         "numpy.empty gives (see numpy.require(a, requirements='CWA'))")
    owned = xp is np and flags.owndata  # (``_overlaps``'s, out's once for all)
    if name == "hess_out" and grad_out is not None and _overlaps(xp, out, grad_out, owned):
        raise ValueError(_arrays.PAIR_SHARES)  # (the user's gradient)
    if y_pred is not None:  # (the user's arrays, where the kernel's may be copies of them)
        _check_users_arrays(xp, out, name, y_true, y, y_pred, p)
    if name == "hess_out":
        if (out is y_true or out is p or _overlaps(xp, out, y, owned)
                or _overlaps(xp, out, p, owned)):
            raise ValueError(_HESS_SHARES)
        return
    if out is y_true or _overlaps(xp, out, y, owned):
        raise ValueError(_SHARES_Y_TRUE.format(name=name))
    if out is not p and _overlaps(xp, out, p, owned) and _address(out) != _address(p):
        # a kernel would write elements it has still to read (same shape, dtype and
        # contiguity: the same address is the same memory)
        raise ValueError(_OVERLAPS_Y_PRED.format(name=name))


_HESS_SHARES = "hess_out must not share memory with y_true or y_pred; pass a separate array"
_SHARES_Y_TRUE = "{name} must not share memory with y_true; it may be y_pred itself"
_OVERLAPS_Y_PRED = ("{name} overlaps y_pred without being it; pass y_pred itself as {name} "
                    "(the gradient in place) or an array of its own")


def _check_users_arrays(xp, out, name: str, y_true, y, y_pred, p) -> None:
    """``_check_out``'s memory rules for the user's ``y_true`` and ``y_pred`` where the
    kernel reads copies of them, ``y`` and ``p`` (the classes moved to the last axis):
    the copies hide them (hess_out=y_pred once took the Hessian there)."""
    moved_y = y_true if y_true is not y and isinstance(y_true, xp.ndarray) else None
    moved_p = y_pred if y_pred is not p and isinstance(y_pred, xp.ndarray) else None
    hess = name == "hess_out"
    if moved_y is not None and _overlaps(xp, out, moved_y):
        raise ValueError(_HESS_SHARES if hess else _SHARES_Y_TRUE.format(name=name))
    if moved_p is not None and _overlaps(xp, out, moved_p):
        if hess:
            raise ValueError(_HESS_SHARES)
        # (its memory exactly: y_pred itself, or a C-contiguous view of the same start)
        if out is not moved_p and not (moved_p.flags.c_contiguous
                                       and _address(out) == _address(moved_p)):
            raise ValueError(_OVERLAPS_Y_PRED.format(name=name))


def _overlaps(xp, a, b, a_owned: bool | None = None) -> bool:
    """Whether the arrays ``a`` and ``b`` may share memory (their byte bounds overlap).

    Two NumPy arrays that each own their memory (OWNDATA: NumPy frees it with the array)
    share it only when they are one array: the usual case, told by their flags for a fifth
    of what ``np.may_share_memory`` costs (0.5 us, a seventh of a call at n = 1000). Not so
    for CuPy, whose arrays made from a pointer or through DLPack also say they own it.
    ``a_owned``: ``a``'s flag where the caller has read it (reading flags makes an object)."""
    if xp is np and (a.flags.owndata if a_owned is None else a_owned) and b.flags.owndata:
        return a is b
    return xp.may_share_memory(a, b)  # NumPy's and CuPy's: a comparison of byte bounds


def _address(a) -> int:
    interface = getattr(a, "__array_interface__", None) or a.__cuda_array_interface__
    return interface["data"][0]


def _class_axis_back(xp, value, grad, prep: Prepared, out):
    """cross_entropy's results, computed on (rows, classes), in the user's layout."""
    if value is not None and value.ndim == 1:  # reduction="none": one loss per row
        value = value.reshape(prep.value_shape)
    if grad is None:
        return value, None
    axis, shape = prep.class_axis, prep.shape
    if axis == len(shape) - 1:
        return value, (grad.reshape(shape) if out is _WANT_GRAD else out)
    moved_shape = shape[:axis] + shape[axis + 1 :] + (shape[axis],)
    grad = xp.moveaxis(grad.reshape(moved_shape), -1, axis)
    if out is _WANT_GRAD:  # C-contiguous, as the out= it may be passed as next
        out = _new_grad(xp, shape, grad.dtype, grad.size, grad)
    out[...] = grad
    return value, out
