"""The one class every loss is: a call's path from the user's arguments to a kernel.

A call goes: find the kernel (``_dispatch._ROUTES``, or ``_dispatch.route`` for a new
kind of call), turn the arguments into canonical arrays (the loss's ``prepare`` in
``_prepare.py``: dtypes, shapes, contiguity, options; errors name the fix; arrays that
are canonical already, with no option, skip it), allocate or check the gradient buffer,
then hand plain arrays and numbers to the registered kernel (``_compute.compute``). A
kernel never re-checks anything and computes whatever the call asked for in one pass.

Kernel signature, the same on every backend::

    kernel(y, p, weight, params, reduction, scale, grad, want_value, hess=None) -> value | None

``grad`` is ``None`` or a C-contiguous buffer shaped like ``p`` to fill (it may be ``p``
itself); ``scale`` is what the reduction multiplies the sum and the gradient by: ``1/n``
for an elementwise ``"mean"``, else 1 (the losses with a class axis find their mean's
denominator in the kernel: ``cross_entropy`` from the labels, ``multiclass_hinge`` the
rows). ``hess`` is ``None`` or a C-contiguous buffer shaped like ``p`` (never ``p``
itself) to fill with the diagonal of the Hessian of each element's (row's) own
loss, with the gradient's weights and scale; it is only asked together with ``grad``.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from math import copysign as _copysign
from typing import Any

import numpy as np

from . import _arrays, _dispatch, _foreign
from ._compute import _POOL_MIN_ITEMS, _WANT_GRAD, _check_out, _new_grad, compute
from ._loss_docs import with_conventions
from ._prepare import FLOAT_DTYPES, Prepared, refuse_masked

REDUCTIONS = ("mean", "sum", "none")


def unknown_reduction(reduction: object, prefix: str = "", extra: tuple = ()) -> ValueError:
    """The error of a reduction not in ``REDUCTIONS`` (nor ``extra``, a front's own)."""
    names = ", ".join(map(repr, (*REDUCTIONS, *extra)))
    # (PyTorch's kl_div has it; lossbackends.torch.kl_div too)
    batchmean = ('; for PyTorch\'s "batchmean", pass reduction="sum" and divide by the '
                 "batch size" if reduction == "batchmean" and "batchmean" not in extra else "")
    return ValueError(f"{prefix}unknown reduction {reduction!r}; choose one of {names}"
                      f"{batchmean}")


# --- under torch.compile ----------------------------------------------------------------
# Dynamo would trace a plain call into our dispatch, NumPy and Numba's compiler (with NumPy
# arrays replaced by its own) and fail there. So each entry point first asks whether
# Dynamo is tracing it, and if so hands the call to ``_untraced.run`` through ``_eagerly``
# (which imports it then: Dynamo runs imports as it traces), a torch.compiler.disable'd
# function: torch's own way to keep code out of a graph. Dynamo graph-breaks at it and runs it eagerly, off for
# every frame below. torch is looked up, never imported: without it the check is one
# dict lookup a call (15-30 ns); with it, also torch.compiler.is_dynamo_compiling (False
# unless Dynamo traces it), bound once (~40 ns, where looking it up each time took ~150).
_MODULES = sys.modules


def _first_traced() -> bool:
    """``_traced()``, whether Dynamo is tracing this call, the first time torch is
    imported: it binds ``_traced`` to torch.compiler.is_dynamo_compiling."""
    global _traced
    torch = _MODULES["torch"]
    # (None: torch's import blocked, sys.modules["torch"] = None; no is_dynamo_compiling
    # yet: another thread is importing torch, and nothing can be traced before it is done)
    compiling = getattr(getattr(torch, "compiler", None), "is_dynamo_compiling", None)
    if compiling is None:
        return False
    _traced = compiling
    return _traced()


_traced = _first_traced


def _eagerly(loss: Loss, method: str, *args: Any, **kwargs: Any) -> Any:
    """``loss.<method>(*args, **kwargs)`` outside Dynamo's trace (see above)."""
    from ._untraced import run

    return run(loss, method, *args, **kwargs)


# --- the loss object -------------------------------------------------------------------


class Loss:
    """A loss function and its gradient with respect to ``y_pred``.

    ``loss(y_true, y_pred, **options)`` gives the value, ``loss.grad(...)`` the gradient
    shaped like ``y_pred``, ``loss.value_and_grad(...)`` both from one fused pass. Common
    keyword options: ``reduction`` (``"mean"``, ``"sum"`` or ``"none"``) and ``backend``
    (``None``, ``"auto"``, ``"numpy"``, ``"numba"``, ``"cupy"``); ``.grad`` and
    ``.value_and_grad`` also take ``out``, a writeable, C-contiguous, aligned array shaped
    like ``y_pred`` (it may be ``y_pred`` itself) that receives the gradient.
    ``.grad_and_hess`` gives the gradient and the diagonal of the Hessian from one fused
    pass (``out`` is then a pair).

    >>> import numpy as np
    >>> import lossbackends as lb
    >>> isinstance(lb.mse, lb.Loss), lb.mse.__name__
    (True, 'mse')
    >>> grad = np.empty(2)
    >>> value, same = lb.mse.value_and_grad([0.0, 1.0], [1.0, 1.0], out=grad)
    >>> print(value, same is grad, grad)
    0.5 True [1. 0.]
    """

    def __init__(self, name: str, prepare: Callable[..., Prepared], doc: str, *,
                 class_indices: bool = False):
        """``class_indices``: y_pred has a class axis, and a plain call passes one class
        index per row (cross_entropy)."""
        self.name = name
        # as a function's: what scikit-learn's make_scorer, functools and loggers read,
        # and where pickle finds it (``__reduce__``)
        self.__name__ = self.__qualname__ = name
        self.__module__ = "lossbackends"
        self._prepare_options = prepare
        # the options the loss takes, for the message of a misspelt or foreign one
        options = list(inspect.signature(prepare).parameters.values())[3:]
        self._options = tuple(option.name for option in options)
        # the call's signature with the loss's own options and their defaults, where the
        # method's has **options: what inspect.signature and IPython show
        self.__signature__ = _CALL.replace(parameters=[*_CALL.parameters.values(), *options])
        self.__doc__ = with_conventions(doc, name, prepare, class_indices)
        # What a plain call (canonical arrays, no option) hands the kernel, by y_pred's
        # dtype: the loss's params (they depend on the dtype alone) and y_true's dtype;
        # for the fast path of ``_run``.
        self._class_indices = class_indices
        self._plain: dict[np.dtype, tuple[tuple, np.dtype]] = {}
        for dtype in FLOAT_DTYPES:
            if class_indices:  # (rows, classes) logits, an int64 class index per row
                plain = prepare(np, np.zeros(1, np.int64), np.zeros((1, 1), dtype))
            else:
                plain = prepare(np, np.zeros(1, dtype), np.zeros(1, dtype))
            self._plain[dtype] = (plain.params, plain.y.dtype)

        self._with_numbers: dict[tuple, tuple[tuple, np.dtype | None]] = {}

    def _numbers_prepared(self, dtype: np.dtype, options: dict) -> tuple:
        """``(params, y_true's dtype)`` for a call of ``dtype`` whose options are numbers,
        bools or None (``delta=2.0``, ``label_smoothing=0.1``), as ``_plain`` holds them for
        no option: the loss's preparation, on stand-in arrays of that dtype, runs once for
        them and is kept (up to ``_NUMBER_OPTION_SETS`` sets), so that the next such call
        skips it too (huber with ``delta=2.0`` at n = 1000: 8.0 us a call before, 3.5
        after). Else ``_NOT_PLAIN``, and the call takes the full preparation: an array
        among them, params that hold an array (a ``pos_weight`` made one), an ``axis``
        other than the last of (rows, classes) logits (the stand-in's layout: the quick
        path takes 2-D logits only), a y_pred that is not float16/32/64 (the preparation
        casts it), or options the stand-ins refuse (not kept: the call then raises there,
        on its own arrays). The key holds each value's type (``True``, ``1`` and ``1.0``
        are equal, and an option may take one and refuse another) and the sign of each
        float 0 (-0.0 is equal to 0.0). ``lossbackends.torch`` passes every option, its
        defaults (``label_smoothing=0.0``, ``axis=1``) included: cross-entropy of 64 x 10
        took 36 us a call through the preparation, 8 without options."""
        values = options.values()
        if not all(type(v) in _NUMBERS for v in values):  # (arrays, tensors: never keys)
            return _NOT_PLAIN
        key = (dtype, *options.items(), *map(type, values),
               *[_copysign(1.0, v) for v in values if not v and isinstance(v, _FLOATS)])
        try:
            return self._with_numbers[key]
        except KeyError:
            pass
        found = _NOT_PLAIN
        # (a float dtype: integer and bool y_pred are cast to float64 by the preparation)
        if dtype in FLOAT_DTYPES:
            y, p = ((np.zeros(1, np.int64), np.zeros((1, 1), dtype)) if self._class_indices
                    else (np.zeros(1, dtype), np.zeros(1, dtype)))
            try:
                prep = self._prepare(np, y, p, **options)
            except Exception:  # noqa: BLE001 (refused: not kept; the call raises on its own arrays)
                return _NOT_PLAIN
            if (prep.p.dtype == dtype and prep.weight is None
                    and prep.class_axis in (None, p.ndim - 1)
                    and not any(isinstance(v, np.ndarray) for v in prep.params)):
                found = (prep.params, prep.y.dtype)
        # (a NaN is not equal to itself: a new one's key would never be found again)
        if len(self._with_numbers) < _NUMBER_OPTION_SETS and all(v == v for v in values):
            self._with_numbers[key] = found
        return found

    def __repr__(self) -> str:
        return f"<lossbackends loss {self.name!r}>"

    def __reduce__(self) -> str:
        """Pickled by reference, as a function is: ``lossbackends.<name>`` itself comes back
        (a process pool's workers get their own module's loss, not a copy of its state)."""
        return self.__qualname__

    def _prepare(self, xp, y_true, y_pred, **options) -> Prepared:
        """The loss's preparation (its argument checks, for every backend); an option it
        does not take is a TypeError that names the loss and its options, not the
        preparing function."""
        refuse_masked(y_true, y_pred, options)
        try:
            return self._prepare_options(xp, y_true, y_pred, **options)
        except TypeError:
            unknown = sorted(set(options) - set(self._options))
            if not unknown:
                raise
            hint = ""
            if self.name == "cross_entropy" and "weight" in unknown:
                hint = "; per-class weights are class_weight= (torch's weight=)"
            elif unknown[0] == "out":
                hint = (f"; out= is the gradient's buffer, for {self.name}.grad, "
                        ".value_and_grad and .grad_and_hess")
            raise TypeError(
                f"{self.name}() got an unexpected keyword argument {unknown[0]!r}; its "
                f"options are {', '.join(self._options)}, reduction and backend{hint}"
            ) from None

    def __call__(self, y_true: Any, y_pred: Any, *, reduction: str = "mean",
                 backend: str | None = None, **options: Any) -> Any:
        if "torch" in _MODULES and _traced():
            return _eagerly(self, "__call__", y_true, y_pred, reduction=reduction,
                            backend=backend, **options)
        return self._run(y_true, y_pred, reduction, backend, options, True, None)[0]

    def grad(self, y_true: Any, y_pred: Any, *, reduction: str = "mean",
             backend: str | None = None, out: Any = None, **options: Any) -> Any:
        """The gradient ``d loss / d y_pred``, shaped like ``y_pred``: written into ``out``
        where given, else a new array (on the host, one of 1 MiB or more in memory that
        lossbackends keeps and reuses once you drop it: :func:`lossbackends.empty_cache`)."""
        if "torch" in _MODULES and _traced():
            return _eagerly(self, "grad", y_true, y_pred, reduction=reduction,
                            backend=backend, out=out, **options)
        out = _WANT_GRAD if out is None else out
        return self._run(y_true, y_pred, reduction, backend, options, False, out)[1]

    def value_and_grad(self, y_true: Any, y_pred: Any, *, reduction: str = "mean",
                       backend: str | None = None, out: Any = None,
                       **options: Any) -> tuple[Any, Any]:
        """``(value, gradient)`` computed in one fused pass over the inputs; the gradient as
        :meth:`grad` gives it (into ``out``, or a new array)."""
        if "torch" in _MODULES and _traced():
            return _eagerly(self, "value_and_grad", y_true, y_pred, reduction=reduction,
                            backend=backend, out=out, **options)
        out = _WANT_GRAD if out is None else out
        return self._run(y_true, y_pred, reduction, backend, options, True, out)

    def grad_and_hess(self, y_true: Any, y_pred: Any, *, reduction: str = "mean",
                      backend: str | None = None, out: tuple[Any, Any] | None = None,
                      **options: Any) -> tuple[Any, Any]:
        """``(gradient, hessian)`` from one fused pass, both shaped like ``y_pred``.

        ``hessian`` is the diagonal of the Hessian of each element's (for ``cross_entropy``
        and ``multiclass_hinge``, each row's) own loss, with the gradient's weights and
        reduction scale: what a gradient-boosting library takes with the gradient (the
        loss's docstring gives the formula). ``out`` is ``(grad_out, hess_out)``: two
        distinct writeable C-contiguous arrays shaped like ``y_pred``, sharing no memory
        with ``y_true``; ``grad_out`` may be ``y_pred`` itself, ``hess_out`` may not. Either
        may be ``None``, as in NumPy's ``out=`` of two results: that one is a new array
        (``out=(None, hess_out)`` writes the Hessian into ``hess_out`` and returns a new
        gradient).
        """
        if "torch" in _MODULES and _traced():
            return _eagerly(self, "grad_and_hess", y_true, y_pred, reduction=reduction,
                            backend=backend, out=out, **options)
        if out is None:
            grad_out = hess_out = _WANT_GRAD
        else:
            if not isinstance(out, (tuple, list)) or len(out) != 2:
                raise TypeError("out must be a pair (grad_out, hess_out) of arrays shaped like "
                                "y_pred, or None")
            grad_out, hess_out = out
            if grad_out is hess_out and grad_out is not None:  # (any overlap: _check_out)
                raise ValueError(_arrays.PAIR_SHARES)
            grad_out = _WANT_GRAD if grad_out is None else grad_out
            hess_out = _WANT_GRAD if hess_out is None else hess_out
        _, grad, hess = self._run(y_true, y_pred, reduction, backend, options, False, grad_out,
                                  hess_out)
        return grad, hess

    def _run(self, y_true, y_pred, reduction, backend, options, want_value, out, hess=None):
        """``(value, grad)``, or ``(value, grad, hess)`` when ``hess`` is given (then
        ``_WANT_GRAD``, "allocate it", or the user's array)."""
        if reduction not in REDUCTIONS:
            raise unknown_reduction(reduction)
        # the route of a call like an earlier one: one dict lookup; a new kind of call's is
        # made and checked by ``_dispatch.route``
        choice = backend
        if choice is None:  # (``_dispatch.settings_choice()``, inline)
            choice = ((_dispatch._CONTEXT_CHOICE.get() or _dispatch._ENV_CHOICE)
                      if _dispatch._BLOCK_ENTERED else _dispatch._ENV_CHOICE)
        try:
            route = _dispatch._ROUTES[self.name, choice, type(y_true), type(y_pred)]
        except (KeyError, TypeError):  # (TypeError: a backend that is not a name)
            route = None
        if route is None:  # (outside the except: its errors are the user's)
            route = _dispatch.route(self.name, choice, backend is None, y_true, y_pred)
        kernel, xp, native, plain = route
        # Most calls pass two non-empty C-contiguous arrays of the backend's own type and
        # no option (``out`` is checked as always): of one float dtype and shape, or
        # (rows, classes) logits and int64 class indices. The kernel takes those as they
        # are, so they skip the preparation, with the cheapest checks there are:
        # ascontiguousarray(a) is ``a`` itself exactly when ``a`` is C-contiguous and not
        # 0-d; a dtype that is equal without being the same object takes the long way.
        if native and (contiguous := xp.ascontiguousarray)(y_pred) is y_pred:
            dtype, n, shape = y_pred.dtype, y_pred.size, y_pred.shape
            if options:  # numbers, prepared once for the dtype (``_numbers_prepared``);
                # on the host (the GPU's params were never seen through this path)
                params, target_dtype = (self._numbers_prepared(dtype, options) if xp is np
                                        else _NOT_PLAIN)
                plain = None  # (a launch per value, as a schedule moves it, would pile up)
            else:
                params, target_dtype = self._plain.get(dtype, _NOT_PLAIN)
            target = y_true  # what the kernel reads
            if not (class_indices := self._class_indices):
                target_shape = shape
            else:
                target_shape = shape[:1] if len(shape) == 2 else None
                if (y_true.dtype is not target_dtype and target_dtype is not None
                        and y_true.dtype.kind in "biu" and y_true.dtype.itemsize < 8
                        and y_true.shape == target_shape):
                    # narrower class indices (JAX's int32, uint8) as int64, exactly, as the
                    # preparation casts them: a copy of the labels (a row's 4 or so bytes)
                    # instead of the preparation's 25 us (cross-entropy 32 x 100: 36 us a
                    # call with int32 labels, 13 with int64)
                    target = y_true.astype(target_dtype)
            if (n and target.dtype is target_dtype and contiguous(target) is target
                    and target.shape == target_shape):
                # a class axis's kernel finds the mean's denominator (labels, or rows)
                scale = 1.0 / n if reduction == "mean" and not class_indices else 1.0
                if out is None:
                    grad = None
                elif out is _WANT_GRAD:  # the size check inline: small calls skip a call
                    grad = (xp.empty(shape, dtype) if n < _POOL_MIN_ITEMS
                            else _new_grad(xp, shape, dtype, n, y_pred))
                else:  # (against the user's own y_true too where target is a copy of it)
                    _check_out(xp, out, y_true, target, y_pred, shape,
                               "out" if hess is None else "grad_out", None,
                               None if target is y_true else y_pred)
                    grad = out
                if hess is None:
                    if plain is not None and reduction != "none":  # its launch, directly
                        key = (dtype, reduction, want_value, grad is None, params)
                        launch = plain.get(key) or plain.build(key)
                        return launch(target, y_pred, scale, grad), grad
                    return kernel(target, y_pred, None, params, reduction, scale, grad,
                                  want_value), grad
                if hess is _WANT_GRAD:
                    hess = _new_grad(xp, shape, dtype, n, y_pred)
                else:
                    _check_out(xp, hess, y_true, target, y_pred, shape, "hess_out", grad,
                               None if target is y_true else y_pred)
                return kernel(target, y_pred, None, params, reduction, scale, grad, want_value,
                              hess=hess), grad, hess
        if xp is None:  # Dask or foreign arrays: the route's function takes the whole call
            return kernel(self, y_true, y_pred, reduction, backend, options, want_value, out,
                          hess)
        if options and any(map(_foreign.is_foreign, options.values())):
            return run_foreign(self, y_true, y_pred, reduction, backend, options, want_value,
                               out, hess)
        if options:  # (a Dask option of an in-memory call would be computed at once, silently)
            from ._dask import is_dask_array  # (here: _dask imports this module)

            for key, value in options.items():
                if is_dask_array(value):
                    lazy = ("pass Dask arrays for them too (dask.array.from_array) for a lazy "
                            "result, or " if key == "weight" else "")  # (the others: never)
                    raise TypeError(f"{key} is a Dask array but y_true and y_pred are not: "
                                    f"{lazy}pass {key}.compute() for this call")
        prep = self._prepare(xp, y_true, y_pred, **options)
        return compute(xp, kernel, prep, y_true, reduction, want_value, out, hess, y_pred,
                       options.values())


def run_foreign(loss: Loss, y_true, y_pred, reduction, backend, options, want_value, out,
                hess=None):
    """A call with torch/JAX/DLPack arrays: ``loss._run`` on NumPy/CuPy views of them, the
    results as ``y_pred``'s library (see ``_arrays``). ``hess``: ``_WANT_GRAD`` or the
    user's array asks for the Hessian too."""

    def run(y, p, native_options, native_out, native_hess):
        return loss._run(y, p, reduction, backend, native_options, want_value, native_out,
                         native_hess)

    return _arrays.run_foreign(run, y_true, y_pred, options, out, out is not None, _WANT_GRAD,
                               hess)


# ``Loss.__call__``'s signature without self and **options, taken once (its annotations
# evaluated: Any, not 'Any'): each loss's adds the options of its preparation
_CALL = inspect.signature(Loss.__call__, eval_str=True)
_CALL = _CALL.replace(parameters=[p for name, p in _CALL.parameters.items()
                                  if name != "self" and p.kind is not p.VAR_KEYWORD])
_NOT_PLAIN = ((), None)  # (params, y_true's dtype) of a call that takes the full preparation
# the option values prepared once: Python's numbers and NumPy's scalars (a schedule's
# np.linspace), and None
_NUMBERS = frozenset((int, float, bool, type(None), np.float64, np.float32, np.float16,
                      np.int64, np.int32, np.bool_))
_FLOATS = (float, np.floating)  # (a float 0's sign is in the key: -0.0 == 0.0)
_NUMBER_OPTION_SETS = 256  # per loss: a schedule's every value beyond these is prepared anew
