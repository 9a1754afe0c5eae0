"""The losses as JAX functions with a custom VJP: ``jax.jit``, ``jax.grad`` and ``jax.vmap``
work, on the CPU.

Each function runs our fused ``value_and_grad`` once on the host through
``jax.pure_callback`` (under ``vmap``, one callback for the batch, which computes its
examples one at a time, since a reduction must not mix examples) and keeps the gradient
for the backward pass, which multiplies it by the upstream cotangent (a scalar, or one per
element / per row for ``reduction="none"``).

Every loss of the plain API, with its names, argument order ``(y_true, y_pred)`` and
options (``lossbackends.mse`` ...); the array options (``weight``, ``pos_weight``,
``class_weight``) are traced, every other option is static (a Python number, bool or
None). Mixed floating dtypes of ``y_true``, ``y_pred`` and the weights are promoted as JAX
promotes them (``jnp.result_type``, weak Python numbers included; ``y_pred``'s gradient in
its own dtype), where the plain API computes in ``y_pred``'s. The derivative is taken
with respect to ``y_pred`` only: a differentiated ``y_true`` or weight (``jax.grad`` with
respect to it, or one computed from what is differentiated) raises ``ValueError`` while
tracing, as ``lossbackends.torch`` refuses a target that requires grad, never a silent
zero gradient; ``jax.lax.stop_gradient`` marks one a constant.

Arguments are checked while tracing, by the plain API's own checks run on stand-ins of the
arguments' shapes and dtypes (once per signature): a bad shape, dtype or option, or a
backend that cannot compute host arrays (``use_backend("cupy")``), raises its
``ValueError`` / ``TypeError`` then, never an error from inside the callback. A call with
nothing traced is the plain call (a JAX array back): a class index outside ``[0, C)``
raises ``ValueError`` there, as in ``lossbackends.cross_entropy``. Inside a traced call it
cannot raise (an exception in a callback is undefined): its row gets a NaN loss and
gradient, as ``check_labels=False`` gives, and a ``RuntimeWarning`` carries the plain
call's error for it (under ``vmap``, the row of its example; with warnings made errors, a
line on stderr instead: nothing raises inside the callback; the call run again with the
check only where its result holds a NaN). An explicit ``check_labels=False`` warns of
nothing, an explicit ``check_labels=True`` raises ``ValueError`` while tracing. Nor is
``pos_weight`` checked there (finite and >= 0, a ``ValueError`` in the plain call): a
bad value gives what the formula gives, NaN for a NaN one, and for an infinite one inf
where the label is above 0 and NaN where it is 0. JAX arrays on a GPU raise
``ValueError`` (no silent copy to the host).

The host backend is the one that applies (``use_backend``, ``LOSSBACKENDS_BACKEND``) when
the call is traced, as a Dask graph takes it when built: JAX may run the callback on a
thread of its own, outside the caller's ``use_backend`` block, and a jitted function keeps
the backend of its trace.

Several threads at once: JAX's CPU client (async dispatch, its default since 0.4.33; seen
with 0.10.2) runs a computation whose inputs are not ready yet (the last step's output)
on one of its worker threads, and ``jax.pure_callback`` copies each input over 100 KiB
on those same workers before our function sees it. Once every worker holds a callback,
each waits for a copy that no worker is free to make: the process hangs (two Python
threads on 2 cores did, on any backend). Run
``jax.config.update("jax_cpu_enable_async_dispatch", False)`` before the process's
first JAX computation (later, or as an environment variable, it changes nothing), or
call from one thread.

>>> import jax, jax.numpy as jnp, lossbackends.jax as lbj
>>> logits, labels = jnp.array([[2.0, 1.0, 0.1], [0.5, 0.2, 3.0]]), jnp.array([0, 2])
>>> print(f"{float(jax.jit(lbj.cross_entropy)(labels, logits)):.6f}")
0.275297
>>> print(jax.grad(lambda x: lbj.cross_entropy(labels, x))(logits).round(4))
[[-0.1705  0.1212  0.0493]
 [ 0.0359  0.0266 -0.0625]]
"""

from __future__ import annotations

import contextlib
import functools
import sys
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

try:
    import jax
except ModuleNotFoundError as exc:
    if exc.name != "jax":  # jax there but incomplete (jaxlib): its own error says what
        raise
    raise ModuleNotFoundError("lossbackends.jax needs JAX: pip install 'lossbackends[jax]'",
                              name="jax") from exc
import jax.numpy as jnp
import numpy as np
from jax._src.interpreters import ad as _ad  # the tracer types only (no public name)
from jax.custom_derivatives import SymbolicZero

from . import losses as _losses
from ._dispatch import backend_for, load_backend
from ._loss import REDUCTIONS, Loss, unknown_reduction
from ._prepare import CHECK_VALUES
from .backends._host import LabelError

# the array options of each loss (traced); every other option is static (a Python number)
_ARRAY_OPTIONS = {name: ("weight",) for name in _losses.LOSSES}
_ARRAY_OPTIONS["binary_cross_entropy_with_logits"] = ("weight", "pos_weight")
_ARRAY_OPTIONS["cross_entropy"] = ("class_weight",)

__all__ = sorted(_ARRAY_OPTIONS)


def _check_device(x: Any, name: str) -> None:
    """CPU arrays only: the callback would copy GPU arrays to the host behind your back."""
    if isinstance(x, jax.core.Tracer):
        if jax.default_backend() != "cpu":
            raise ValueError(_GPU_ERROR.format(name=name, where=jax.default_backend()))
        return
    devices = x.devices() if hasattr(x, "devices") else ()
    for device in devices:
        if device.platform != "cpu":
            raise ValueError(_GPU_ERROR.format(name=name, where=device.platform))


_GPU_ERROR = (
    "lossbackends.jax computes on the CPU, but {name} is on {where}: move it with "
    "jax.device_put(x, jax.devices('cpu')[0]) (or run with JAX_PLATFORMS=cpu); a GPU path "
    "for JAX does not exist yet, and lossbackends never copies to the host behind your back"
)


_SECOND_ORDER = (
    "lossbackends.jax has first derivatives only (jax.grad, jax.vjp, jax.jacrev): "
    "jax.hessian, jax.jacfwd, jax.jvp and a gradient of a gradient are not supported; "
    "write the loss in jax.numpy for them"
)


_CONSTANT = (
    "lossbackends.jax.{name}: {key} is differentiated, but lossbackends.jax differentiates "
    "with respect to y_pred only (its gradient would be missing): wrap it in "
    "jax.lax.stop_gradient({key}) where it is a constant, or write the loss in jax.numpy"
)


# the tracers of forward-mode and linearized differentiation (jax.grad linearizes)
_DIFFERENTIATING = tuple(getattr(_ad, name) for name in ("JVPTracer", "LinearizeTracer")
                         if hasattr(_ad, name))


def _out_shapes(reduction: str, p_shape: tuple, axis: int | None, dtype) -> tuple:
    if reduction != "none":
        value_shape: tuple = ()
    elif axis is None:
        value_shape = p_shape
    else:
        value_shape = p_shape[:axis] + p_shape[axis + 1:]
    return (jax.ShapeDtypeStruct(value_shape, dtype), jax.ShapeDtypeStruct(p_shape, dtype))


@functools.cache
def _function(name: str, reduction: str, static: tuple, number_names: tuple,
              array_names: tuple, backend: str, warn_labels: bool = False) -> Callable:
    """The custom-VJP function of one loss with these static options, on ``backend``
    (cached: jit traces each once). The float options named by ``number_names`` are not
    in the key but an operand (``_numbers``): a new value reuses this function and its
    callback, whose compiled state JAX keeps for good (each value cost ~1.5 MB under an
    un-jitted grad). ``warn_labels``: whether a NaN result is looked into for a bad class
    index, which a warning then names (``_warn_bad_label``)."""
    loss: Loss = _losses.LOSSES[name]
    fixed = dict(static)
    # a loss per row (its class indices come unchecked, check_labels=False, from ``_make``:
    # a bad one gives a NaN row, as an exception inside a callback is undefined)
    axis = fixed.get("axis", -1) if loss._class_indices else None

    def host(y, p, *operands, want_grad=True):
        options = fixed
        if number_names:
            numbers = np.asarray(operands[0]).view(np.float64).tolist()
            options = {**fixed, **dict(zip(number_names, numbers, strict=True))}
            operands = operands[1:]
        y, p = np.asarray(y), np.asarray(p)
        arrays = dict(zip(array_names, map(np.asarray, operands), strict=True))
        unchecked = CHECK_VALUES.set(False)  # (no exception inside a callback: see there)
        try:
            if want_grad:
                value, grad = loss.value_and_grad(y, p, reduction=reduction, backend=backend,
                                                  **options, **arrays)
            else:
                value = loss(y, p, reduction=reduction, backend=backend, **options, **arrays)
                grad = None
            value = np.asarray(value)
            if warn_labels and y.dtype.kind in "biu" and np.isnan(value).any():
                _warn_bad_label(loss, y, p, backend, {**options, **arrays})
        finally:
            CHECK_VALUES.reset(unchecked)
        return (value, grad) if want_grad else value

    @functools.cache
    def callback(y_ndim: int, out: tuple, want_grad: bool) -> Callable:
        """``host`` for a ``y_true`` of ``y_ndim`` dimensions and these results ((shape,
        dtype) pairs), as ``vmap_method="expand_dims"`` calls it: under ``vmap`` every
        argument comes with a leading axis per level (of 1 where it is not batched), and
        the batch's examples are computed one by one, in one callback (``_per_example``).
        One object per signature, kept for good: JAX tells callbacks apart by equality
        and keeps each one's compiled code, so a callback made again for a signature
        would be compiled again, its old code kept (a bounded cache that dropped them
        grew by megabytes a shape past its bound); JAX keeps as many compilations as
        there are signatures anyway."""

        def run(y, *arrays):
            extra = np.ndim(y) - y_ndim  # the vmap levels: the same for every argument
            if extra == 0:
                return host(y, *arrays, want_grad=want_grad)
            results = _per_example(functools.partial(host, want_grad=want_grad),
                                   (y, *arrays), extra, out)
            return tuple(results) if want_grad else results[0]

        return run

    def call(y, p, operands, want_grad):
        # (a Python float differentiated by an eager jax.grad reaches the forward as
        # JAX's typed float, without a shape)
        p = _as_array(p)
        p_axis = None if axis is None else axis % p.ndim
        shapes = _out_shapes(reduction, p.shape, p_axis, p.dtype)
        if not want_grad:  # the value alone: the callback hands JAX one array, not two
            shapes = shapes[:1]
        run = callback(np.ndim(y), tuple((s.shape, np.dtype(s.dtype)) for s in shapes),
                       want_grad)
        return jax.pure_callback(run, shapes if want_grad else shapes[0], y, p, *operands,
                                 vmap_method="expand_dims")

    @jax.custom_vjp
    def f(y, p, *operands):  # not differentiated
        return call(y, p, operands, False)

    # the arguments besides y_pred, as messages name them (the float options' operand too)
    constants = ("y_true", *(("a float option",) if number_names else ()), *array_names)

    def forward(y, p, *operands):
        # (symbolic zeros: each argument comes as its value and whether it is differentiated)
        # a second differentiation (jax.hessian, a grad of a grad) hands the forward a
        # differentiating tracer: our error, not JAX's "Pure callbacks do not support JVP"
        # (a check once per trace; a custom JVP around the callback cost ~10% of an
        # un-jitted jax.grad call)
        if any(isinstance(a.value, _DIFFERENTIATING) for a in (p, y, *operands)):
            raise TypeError(_SECOND_ORDER)
        # y_true or a weight differentiated: an error, not the zero gradient the backward
        # would give it (as lossbackends.torch refuses a target that requires grad)
        for key, argument in zip(constants, (y, *operands), strict=True):
            if argument.perturbed:
                raise ValueError(_CONSTANT.format(name=name, key=key))
        y, p, operands = y.value, p.value, tuple(a.value for a in operands)
        value, grad = call(y, p, operands, True)
        return value, (grad, y, operands)

    def backward(residual, upstream):
        grad, y, operands = residual
        if isinstance(upstream, SymbolicZero):  # (the value unused where it is differentiated)
            upstream = jnp.zeros(upstream.aval.shape, upstream.aval.dtype)
        if reduction == "none" and axis is not None:  # one upstream cotangent per row
            upstream = jnp.expand_dims(upstream, axis % grad.ndim)
        zeros = jax.tree_util.tree_map(_zero_cotangent, (y, operands))
        return (zeros[0], grad * upstream, *zeros[1])

    f.defvjp(forward, backward, symbolic_zeros=True)
    return f


_HOST_SAMPLE = np.empty(0)  # what the traced calls' arrays are to the backends: host ones


def _per_example(host: Callable, arrays: tuple, extra: int, out: tuple) -> list:
    """``host``'s results for each example of a batch of ``vmap``: ``arrays`` with
    ``extra`` leading axes each (of 1 where an argument is not batched along one), the
    results' unbatched (shape, dtype) pairs in ``out``; each example is the plain call's,
    to the bit (a reduction must not mix examples), in one callback where JAX's
    ``"sequential"`` made one per example (a jitted ``vmap(grad)`` of mse over 256
    examples of 1000: 3.8 ms, 46 with one callback per example, 0.16 in jax.numpy)."""
    arrays = tuple(map(np.asarray, arrays))
    batch = np.broadcast_shapes(*(a.shape[:extra] for a in arrays))
    # (the unbatched arguments' axes of 1 as views over the batch: no copy)
    arrays = [np.broadcast_to(a, batch + a.shape[extra:]) for a in arrays]
    results = [np.empty(batch + shape, dtype) for shape, dtype in out]
    for index in np.ndindex(batch):
        got = host(*(a[index] for a in arrays))
        for result, value in zip(results, got if isinstance(got, tuple) else (got,),
                                 strict=True):
            result[index] = value
    return results


def _numbers(values: list) -> np.ndarray:
    """Float options as one operand: their float64 bits as uint32 pairs, exact where JAX
    (without jax_enable_x64) would round a float64 operand to float32."""
    return np.array(values, np.float64).view(np.uint32)


def _warn_bad_label(loss: Loss, y: np.ndarray, p: np.ndarray, backend: str,
                    options: dict) -> None:
    """A ``RuntimeWarning`` with the plain call's ``LabelError`` for these class indices,
    if they hold a bad one: inside a traced call, where its row's NaN is all a bad label
    can give (never silent, as optax's NaN is: optax#1185). The plain call's own check
    (the kernel run again, with ``check_labels=True``), only where the result holds a NaN."""
    try:
        loss(y, p, reduction="sum", backend=backend, **{**options, "check_labels": True})
    except LabelError as error:
        message = (f"{error} (inside a traced call, which cannot raise: its row's loss and "
                   "gradient are NaN)")
        # nothing may raise inside a callback: warnings made errors (or a hook that
        # raises) write to stderr instead, where there is one
        try:
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        except Exception:
            with contextlib.suppress(Exception):
                sys.stderr.write(f"RuntimeWarning: {message}\n")


def _zero_cotangent(x):
    if jnp.issubdtype(x.dtype, jnp.inexact):
        return jnp.zeros_like(x)
    return np.zeros(x.shape, jax.dtypes.float0)  # integer labels have no tangent space


@contextlib.contextmanager
def _options_of_this_module():
    """An unknown option's TypeError lists this module's options: no ``backend=`` here."""
    try:
        yield
    except TypeError as exc:
        message = str(exc).replace(", reduction and backend", " and reduction")
        if message == str(exc):
            raise
        raise TypeError(message) from None


@functools.lru_cache(maxsize=256)
def _check_arguments(name: str, y: tuple, p: tuple, arrays: tuple, static: tuple) -> None:
    """The plain API's own checks (``Loss._prepare``: shapes, dtypes, options) on
    stand-ins with the arguments' shapes and dtypes (zero-strided: no memory of that
    size), once per signature, so that a bad call raises TypeError/ValueError while
    tracing, not inside the callback. ``y``, ``p``: (shape, dtype); ``arrays``: (name,
    shape, dtype) triples."""

    def stand_in(shape, dtype):
        return np.broadcast_to(np.zeros((), dtype), shape)

    loss: Loss = _losses.LOSSES[name]
    loss._prepare(np, stand_in(*y), stand_in(*p), **dict(static),
                  **{key: stand_in(shape, dtype) for key, shape, dtype in arrays})


def _as_array(x) -> jax.Array:
    """``x`` as a JAX array (tracers are; jnp.asarray of one costs ~50 µs a call)."""
    return x if isinstance(x, jax.Array) else jnp.asarray(x)


def _signature(x) -> tuple:
    return tuple(x.shape), np.dtype(x.dtype)


def _not_static(name: str, array_names: tuple, why: str) -> TypeError:
    return TypeError(f"lossbackends.jax.{name}: options other than {', '.join(array_names)} "
                     f"must be Python numbers, bools or None (static), not arrays ({why})")


def _make(name: str) -> Callable:
    loss: Loss = _losses.LOSSES[name]
    array_names = _ARRAY_OPTIONS[name]

    def fn(y_true: Any, y_pred: Any, *, reduction: str = "mean", **options: Any) -> jax.Array:
        if reduction not in REDUCTIONS:
            raise unknown_reduction(reduction)
        if "backend" in options or "out" in options:
            raise TypeError(f"lossbackends.jax.{name} computes on the host backend that applies "
                            "(use_backend / LOSSBACKENDS_BACKEND) and returns new arrays: no "
                            "backend= or out= here")
        y, p = _as_array(y_true), _as_array(y_pred)
        _check_device(p, "y_pred")
        _check_device(y, "y_true")
        if not jnp.issubdtype(p.dtype, jnp.floating):
            # (float labels beside them: the arguments swapped, as optax's order has them)
            swapped = ("; y_pred holds integers: is it the labels? the order is (y_true, "
                       "y_pred)" if jnp.issubdtype(y.dtype, jnp.floating)
                       and not jnp.issubdtype(p.dtype, jnp.complexfloating) else "")
            raise TypeError(f"y_pred has dtype {p.dtype}; pass a floating array (JAX "
                            f"differentiates floats only: y_pred.astype(jnp.float32)){swapped}")
        arrays = []
        names = []
        for key in array_names:
            value = options.pop(key, None)
            if value is not None:
                value = _as_array(value)
                _check_device(value, key)
                arrays.append(value)
                names.append(key)
        # mixed floating dtypes follow JAX, as jnp would compute the loss: in the dtype
        # jnp.result_type gives y_pred, y_true and the weights (float64 y_true, float32
        # y_pred: float64 with jax_enable_x64; a Python number is weak and changes
        # nothing), y_pred cast to it and its gradient cast back by JAX's rule for the cast
        floats = [a for a in (y, *arrays) if jnp.issubdtype(a.dtype, jnp.floating)]
        promoted = jnp.result_type(p, *floats)
        if promoted != p.dtype:
            p = p.astype(promoted)
        traced = [key for key, value in options.items() if isinstance(value, jax.core.Tracer)]
        if traced:  # (with concrete arrays the plain call would say it takes no tracers)
            raise _not_static(name, array_names, f"{traced[0]} is traced")
        if not any(isinstance(a, jax.core.Tracer) for a in (y, p, *arrays)):
            # nothing traced: the plain call, which raises for a bad label as lb's does
            with _options_of_this_module():
                return loss(y, p, reduction=reduction, **options,
                            **dict(zip(names, arrays, strict=True)))
        # NumPy has no bfloat16: bfloat16 arrays are passed as float32 (exactly), and a
        # bfloat16 y_pred is computed in float32, its results rounded back
        bfloat16 = p.dtype == jnp.bfloat16
        if bfloat16:
            p = p.astype(jnp.float32)
        y = y.astype(jnp.float32) if y.dtype == jnp.bfloat16 else y
        arrays = [a.astype(jnp.float32) if a.dtype == jnp.bfloat16 else a for a in arrays]
        static = tuple(sorted(options.items()))
        try:
            with _options_of_this_module():
                _check_arguments(name, _signature(y), _signature(p), tuple(
                    (key, *_signature(a)) for key, a in zip(names, arrays, strict=True)), static)
        except TypeError as exc:
            if "unhashable" not in str(exc):
                raise
            raise _not_static(name, array_names, str(exc)) from None
        if loss._class_indices:
            # a traced call cannot raise: NaN rows instead
            if options.get("check_labels", False):
                raise ValueError(
                    f"lossbackends.jax.{name}: check_labels=True cannot raise inside a "
                    "traced call (jit, grad, vmap: an exception in a callback is undefined); "
                    "there a label outside [0, C) gives its row a NaN loss and gradient. Drop "
                    "check_labels, or check the labels outside the traced function")
            static = tuple(sorted({**options, "check_labels": False}.items()))
        # float values are operands (see _function); bools, ints and None stay in the key
        numbers = tuple(key for key, value in static if isinstance(value, float))
        # the backend that applies here, resolved for host arrays: the callback may run on
        # a thread of JAX's, outside this thread's use_backend block. One that cannot
        # compute them (cupy, or one not installed) raises now, as the plain call does,
        # not inside the callback
        backend = backend_for(None, _HOST_SAMPLE)
        load_backend(backend)
        f = _function(name, reduction, tuple(kv for kv in static if kv[0] not in numbers),
                      numbers, tuple(names), backend,
                      loss._class_indices and "check_labels" not in options)
        if numbers:
            arrays.insert(0, _numbers([options[key] for key in numbers]))
        value = f(y, p, *arrays)
        return value.astype(jnp.bfloat16) if bfloat16 else value

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = _doc(name, array_names)
    return fn


# the docstrings' examples: y_true, y_pred, options, and what they print (the value, then
# the gradient); lossbackends/_torch_table.py has the same data in torch's argument order
_V, _P2 = "[0.5, -1.0, 2.0]", "[[2.0, 1.0, 0.1], [0.5, 0.2, 3.0]]"
_EXAMPLES: dict[str, tuple[str, str, str, str, str]] = {
    "mse": ("[0.0, 0.0, 1.0]", _V, "", "0.7500", "[ 0.3333 -0.6667  0.6667]"),
    "mae": ("[0.0, 0.0, 1.0]", _V, "", "0.8333", "[ 0.3333 -0.3333  0.3333]"),
    "huber": ("[0.0, 0.0, 1.0]", "[0.5, -1.0, 3.0]", "", "0.7083", "[ 0.1667 -0.3333  0.3333]"),
    "smooth_l1": ("[0.0, 0.0, 1.0]", "[0.5, -1.0, 3.0]", "beta=0.5", "0.9167",
                  "[ 0.3333 -0.3333  0.3333]"),
    "soft_margin": ("[1.0, -1.0, -1.0]", _V, "", "0.9714", "[-0.1258  0.0896  0.2936]"),
    "poisson_nll": ("[1.0, 0.0, 3.0]", _V, "", "0.9686", "[0.2162 0.1226 1.463 ]"),
    "kl_div": ("[[0.1, 0.6, 0.3]]", "[[-1.6, -1.2, -0.7]]", "reduction='sum'", "0.1921",
               "[[-0.1 -0.6 -0.3]]"),
    "binary_cross_entropy": ("[1.0, 0.0, 0.0]", "[0.9, 0.2, 0.6]", "", "0.4149",
                             "[-0.3704  0.4167  0.8333]"),
    "binary_cross_entropy_with_logits": ("[1.0, 0.0, 0.0]", _V, "", "0.9714",
                                         "[-0.1258  0.0896  0.2936]"),
    "cross_entropy": ("[0, 2]", _P2, "label_smoothing=0.1", "0.4120",
                      "[[-0.1372  0.1045  0.0326]\n [ 0.0192  0.0099 -0.0292]]"),
    "hinge": ("[1.0, -1.0, -1.0]", _V, "", "1.1667", "[-0.3333  0.      0.3333]"),
    "squared_hinge": ("[1.0, -1.0, -1.0]", _V, "", "3.0833", "[-0.3333  0.      2.    ]"),
    "log_cosh": ("[0.0, 0.0, 1.0]", _V, "", "0.3292", "[ 0.154  -0.2539  0.2539]"),
    "sigmoid_focal": ("[1.0, 0.0, 0.0]", _V, "", "0.4238", "[-0.0115  0.0131  0.2692]"),
    "pinball": ("[0.0, 0.0, 1.0]", _V, "quantile=0.9", "0.3500", "[ 0.0333 -0.3     0.0333]"),
    "multiclass_hinge": ("[1, 2]", _P2, "", "1.0000", "[[ 0.5 -0.5  0. ]\n [ 0.   0.   0. ]]"),
}


def _doc(name: str, array_names: tuple) -> str:
    y, p, opts, value, grad = _EXAMPLES[name]
    opts = f", {opts}" if opts else ""
    arrays = " and ".join(f"``{key}``" for key in array_names)
    return f""":obj:`lossbackends.{name}` as a JAX function: the same arguments ``(y_true,
y_pred)``, options and formulas (on its page), computed on the CPU by a host callback.
``jax.jit``, ``jax.grad`` / ``jax.vjp`` (with respect to ``y_pred``; first derivatives
only, see :doc:`/guide/training`) and ``jax.vmap`` work; {arrays} may be traced, every
other option is static. No ``backend=`` or ``out=``.

>>> import jax, jax.numpy as jnp, numpy as np, lossbackends.jax as lbj
>>> y, p = jnp.array({y}), jnp.array({p})
>>> loss = lambda q: lbj.{name}(y, q{opts})
>>> print(f"{{float(jax.jit(loss)(p)):.4f}}")
{value}
>>> print(np.asarray(jax.grad(loss)(p)).round(4))
{grad}
"""


globals().update({name: _make(name) for name in _ARRAY_OPTIONS})

if TYPE_CHECKING:  # the names above, for type checkers (tests/test_api.py keeps them __all__)
    def _loss(y_true: Any, y_pred: Any, *, reduction: str = "mean",
              **options: Any) -> jax.Array: ...

    binary_cross_entropy = binary_cross_entropy_with_logits = cross_entropy = hinge = _loss
    huber = kl_div = log_cosh = mae = mse = multiclass_hinge = pinball = poisson_nll = _loss
    sigmoid_focal = smooth_l1 = soft_margin = squared_hinge = _loss
