"""The custom operator behind ``lossbackends.torch`` and the autograd functions that run
its forward and backward: ``lossbackends::value_and_grad`` (``torch.library``), its fake
implementation (``torch.compile``), autograd formula, vmap rule and autocast rule; the
eager ``torch.autograd.Function`` of the same forward and backward (``_Eager``), the one
torch.func's transforms run (``_Func``) and ``inplace_backward``'s (``_InPlace``,
``_ValueOf``). ``lossbackends.torch`` documents what they do for its users; the messages
it gives them are ``_torch_terms``'s.
"""

from __future__ import annotations

import functools
import sys
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch._functorch.utils import enable_single_level_autograd_function as _single_level
from torch.autograd.forward_ad import _set_fwd_grad_enabled as _fwd_grad_enabled

from . import _buffers
from ._torch_table import TABLE as _TABLE
from ._torch_table import Entry as _Entry
from ._torch_terms import _in_torch_terms, _refuse_grad

_SECOND_ORDER = (
    "lossbackends.torch computes first derivatives only; for second derivatives use "
    "torch.nn.functional's loss (or lossbackends' grad_and_hess where it exists)"
)

_FORWARD_MODE = (
    "lossbackends.torch has no forward-mode derivative (torch.func.jvp, jacfwd, hessian); "
    "use torch.func.grad, vjp or jacrev, or torch.nn.functional's loss"
)


def _class_axis(entry: _Entry, ndim: int) -> int | None:
    return (1 if ndim >= 2 else 0) if entry.per_row else None


def _our_options(entry: _Entry, ndim: int, t1, t2, floats, ints) -> dict:
    """The plain API's options from the op's arguments: ``floats`` in ``entry.floats``'
    order (NaN is ``None`` for the optional ones), ``ints`` those of ``entry.ints`` then
    ``entry.bools`` (0 or 1)."""
    options: dict[str, Any] = {}
    for ours, value in zip(entry.tensors.values(), (t1, t2), strict=False):
        if value is not None:
            options[ours] = value
    for (key, ours), value in zip(entry.floats.items(), floats, strict=True):
        options[ours] = None if value != value and key in entry.optional else value
    ints = iter(ints)
    for ours, value in zip(entry.ints.values(), ints, strict=False):
        options[ours] = value
    for ours, value in zip(entry.bools.values(), ints, strict=False):
        options[ours] = bool(value)
    axis = _class_axis(entry, ndim)
    if axis is not None:
        options["axis"] = axis
    return options


def _check_on_meta(name: str, entry: _Entry, input: Tensor, target: Tensor, tensors: list,
                   floats: list, ints: list) -> None:
    """The plain API's argument checks (shapes, dtypes) for tensors on the ``meta``
    device, which hold no data: on NumPy stand-ins of their shapes and dtypes (zero-strided,
    no memory), so that a bad call raises there as on the CPU and as torch's losses do."""
    others = {t.device.type for t in (target, *tensors) if isinstance(t, Tensor)} - {"meta"}
    if others:
        raise ValueError(f"{name}: input is on the meta device but other tensors are on "
                         f"{sorted(others)}; put them all on one device")

    def stand_in(t):
        if t is None:
            return None
        dtype = torch.float32 if t.dtype in (torch.bfloat16, torch.float16) else t.dtype
        return np.broadcast_to(np.zeros((), torch.empty((), dtype=dtype).numpy().dtype), t.shape)

    options = _our_options(entry, input.ndim, *map(stand_in, tensors), floats, ints)
    _in_torch_terms(name, entry.loss._prepare, np, stand_in(target), stand_in(input), **options)


# the dtypes whose CPU tensors NumPy views as they are (``_on_host``)
_NUMPY_DTYPES = frozenset((torch.float16, torch.float32, torch.float64, torch.int8,
                           torch.int16, torch.int32, torch.int64, torch.uint8, torch.uint16,
                           torch.uint32, torch.uint64, torch.bool))


def _on_host(*tensors) -> bool:
    """Whether ``tensors`` (or None) are CPU tensors of dtypes NumPy holds: then the plain
    API takes their NumPy views (``Tensor.numpy(force=True)``: detached, resolved, no copy)
    and its results go back by ``torch.from_numpy``, without the conversion of foreign
    arrays in general (``_arrays.run_foreign``: devices, bfloat16, ``out=``), which cost
    a cross-entropy training step of 64 x 10 logits 8-10 of its 140 us."""
    return all(t is None or (t.is_cpu and t.dtype in _NUMPY_DTYPES) for t in tensors)


def _plain_arguments(entry: _Entry, input, target, t1, t2, floats, ints) -> tuple:
    """``(y_true, y_pred, options, on_host)``: the plain API's arguments for the op's, as
    NumPy views where ``_on_host``, else as they are."""
    host = _on_host(input, target, t1, t2)
    if host:
        input, target = input.numpy(force=True), target.numpy(force=True)
        t1 = None if t1 is None else t1.numpy(force=True)
        t2 = None if t2 is None else t2.numpy(force=True)
    return target, input, _our_options(entry, input.ndim, t1, t2, floats, ints), host


def _value(loss, input, target, t1, t2, floats, ints, reduction):
    """The value alone (the plain call: no gradient buffer)."""
    entry = _TABLE[loss]
    y, p, options, host = _plain_arguments(entry, input, target, t1, t2, floats, ints)
    value = _in_torch_terms(loss, entry.loss, y, p, reduction=reduction, **options)
    return torch.from_numpy(np.asarray(value)) if host else value


def _compute(loss, input, target, t1, t2, floats, ints, reduction):
    """The fused value and gradient, the gradient contiguous (as the fake says: a class axis
    other than the last comes back as a moved view, whose strides torch.compile would find
    different from the fake's)."""
    entry = _TABLE[loss]
    y, p, options, host = _plain_arguments(entry, input, target, t1, t2, floats, ints)
    # (in torch's terms: the op's kernel raises under torch.compile too, a bad label's
    # LabelError included)
    value, grad = _in_torch_terms(loss, entry.loss.value_and_grad, y, p, reduction=reduction,
                                  **options)
    if host:
        value, grad = torch.from_numpy(np.asarray(value)), torch.from_numpy(grad)
    return value, grad.contiguous()


# Defined with torch.library, not custom_op: custom_op's register_autograd makes an
# autograd.Function without setup_context, which torch.func's transforms refuse
# (pytorch#170834), and torch.compile of torch.func.grad or vmap(grad) of a loss runs the
# op under them; ours is _OpAutograd below.


def _library() -> torch.library.Library:
    """The ``lossbackends`` namespace's library: one per namespace (torch's rule), so a
    second import of this module (``importlib.reload``, a module dropped from
    ``sys.modules``) first drops the earlier import's op, then defines its own."""
    package = vars(sys.modules[__package__])
    earlier = {id(lib): lib for lib in (globals().get("_LIB"),
                                        getattr(package.get("_torch_op"), "_LIB", None))
               if lib is not None}
    for lib in earlier.values():
        lib._destroy()
    return torch.library.Library("lossbackends", "DEF")


_LIB = _library()
_LIB.define("value_and_grad(str loss, Tensor input, Tensor target, Tensor? t1, Tensor? t2, "
            "float[] floats, SymInt[] ints, str reduction) -> (Tensor, Tensor)",
            tags=(torch.Tag.pt2_compliant_tag,))
_value_and_grad = torch.ops.lossbackends.value_and_grad.default
torch.library.register_kernel(_value_and_grad, None, _compute, lib=_LIB)
# the value alone, for a compiled call with grad mode off (torch.no_grad, inference_mode:
# an evaluation step), which would otherwise compute a gradient no one reads and keep its
# memory in the host cache (eager calls take the plain call there: _apply). Grad mode
# off, nothing can differentiate it, so it has no autograd formula
_LIB.define("value(str loss, Tensor input, Tensor target, Tensor? t1, Tensor? t2, "
            "float[] floats, SymInt[] ints, str reduction) -> Tensor",
            tags=(torch.Tag.pt2_compliant_tag,))
_value_op = torch.ops.lossbackends.value.default
torch.library.register_kernel(_value_op, None, _value, lib=_LIB)


@torch.library.register_fake(_value_and_grad, lib=_LIB)
def _fake(loss, input, target, t1, t2, floats, ints, reduction):
    entry = _TABLE[loss]
    if reduction != "none":
        shape: tuple = ()
        if reduction == "mean" and entry.batchmean and _is_compiling():
            # Dynamo cannot trace warnings.warn (_apply skips it there): warned while
            # tracing, as torch's kl_div warns when Dynamo runs it on fake tensors
            _warn_mean(stacklevel=1)
    else:
        axis = _class_axis(entry, input.ndim)
        shape = tuple(input.shape) if axis is None else tuple(
            s for i, s in enumerate(input.shape) if i != axis)
    return input.new_empty(shape), torch.empty_like(input, memory_format=torch.contiguous_format)


@torch.library.register_fake(_value_op, lib=_LIB)
def _fake_value(loss, input, target, t1, t2, floats, ints, reduction):
    return _fake(loss, input, target, t1, t2, floats, ints, reduction)[0]


def _warn_mean(stacklevel: int) -> None:
    warnings.warn(  # torch's warning, as torch gives it
        "reduction: 'mean' divides the total loss by both the batch size and the support "
        "size.'batchmean' divides only by the batch size, and aligns with the KL div math "
        "definition.'mean' will be changed to behave the same as 'batchmean' in the next "
        "major release.", stacklevel=stacklevel + 1)


def _save(ctx, loss: str, input: Tensor, reduction: str, grad: Tensor,
          hand_on: bool = False) -> None:
    """Keeps the gradient for backward; with ``hand_on`` (an eager call, whose gradient
    output no one else holds) also a detached alias of it, which backward may hand on
    as it is (``_scaled``): saved as a tensor of its own (an output is saved without its
    tensor), it has another reference while a retained graph keeps it, so that autograd
    then copies it into ``.grad`` instead of taking it over."""
    ctx.axis = _class_axis(_TABLE[loss], input.ndim) if reduction == "none" else None
    ctx.set_materialize_grads(False)
    if hand_on:
        ctx.hand_on = True  # (taken by the first backward: ``_backward``)
        ctx.save_for_backward(grad, grad.detach())
    else:
        ctx.save_for_backward(grad)


def _setup(ctx, inputs, output):
    _save(ctx, inputs[0], inputs[1], inputs[7], output[1])


# CPU dtypes whose scaled gradient may take a buffer of the host gradient cache
_CACHED_DTYPES = {torch.float16: np.dtype(np.float16), torch.float32: np.dtype(np.float32),
                  torch.float64: np.dtype(np.float64)}


def _scaled(ctx, grad: Tensor, upstream: Tensor | None,
            kept: Tensor | None = None) -> Tensor | None:
    if upstream is None:
        return None
    if ctx.axis is not None:  # reduction="none" of a per-row loss: one upstream per row
        upstream = upstream.unsqueeze(ctx.axis)
    # a scalar, or one upstream gradient per element. In an eager backward on the CPU
    # that records nothing (not create_graph, not traced), ``kept`` (``_save``) as it
    # is for an upstream of 1 (``loss.backward()``), as Liger-Kernel's cross-entropy
    # skips its multiply: the pass took 1.8 of the 4.5 ms of cross-entropy's training
    # step at 4096 x 1000, which ran at 1.04x torch.compile's time with it and 0.53x
    # without (on a GPU, reading the upstream's value would wait for the device).
    # Otherwise a large result goes into a buffer of the host gradient cache
    # (``_buffers``), whose pages are mapped already
    eager = (type(grad) is Tensor and type(upstream) is Tensor and grad.device.type == "cpu"
             and not torch.is_grad_enabled() and not _is_compiling()
             and not _C._are_functorch_transforms_active())
    if eager and kept is not None and upstream.ndim == 0 and upstream.item() == 1:
        return kept
    dtype = _CACHED_DTYPES.get(grad.dtype)
    if eager and dtype is not None and grad.numel() >= _buffers.MIN_ITEMS:
        out = torch.from_numpy(_buffers.empty(tuple(grad.shape), dtype,
                                              grad.numel() * dtype.itemsize, grad))
        return torch.mul(grad, upstream, out=out)
    return grad * upstream


def _backward(ctx, upstream, upstream_of_grad):
    if upstream_of_grad is not None:  # something differentiates the saved gradient
        raise RuntimeError(_SECOND_ORDER)
    grad, *kept = ctx.saved_tensors
    # the kept alias goes out once at most: a later backward of a retained graph gives a
    # tensor of its own (two results that are one tensor would change together). The
    # first backward takes the right to it, in one step (dict.pop: two threads
    # backpropagating the graph at once cannot both take it)
    if kept and not ctx.__dict__.pop("hand_on", False):
        kept = ()
    return (None, _scaled(ctx, grad, upstream, *kept), None, None, None, None, None,
            None)


def _redispatch(keyset, *args):
    """The op below autograd: its kernel, or its fake implementation."""
    with _C._AutoDispatchBelowAutograd():
        return _value_and_grad.redispatch(keyset & _C._after_autograd_keyset, *args)


class _OpAutograd(torch.autograd.function._SingleLevelFunction):
    """The op's autograd formula: a single-level Function, as torch's own fix for custom
    ops under torch.func has it, recorded by the one level whose autograd runs the op's
    Autograd kernel (a plain Function there goes to torch.func's custom_function_call,
    which has no kernel below torch.func's dispatch)."""

    @staticmethod
    def forward(ctx, keyset, modes, loss, input, target, t1, t2, floats, ints, reduction):
        # the caller's grad modes, which apply turned off: an outer torch.func level
        # records the op too, so that differentiating the gradient reaches our backward
        # there, which raises (off, a second derivative was a silent zero)
        with torch.set_grad_enabled(modes[0]), _fwd_grad_enabled(modes[1]):
            value, grad = _redispatch(keyset, loss, input, target, t1, t2, floats, ints,
                                      reduction)
        _save(ctx, loss, input, reduction, grad)
        return value, grad

    @staticmethod
    def backward(ctx, upstream, upstream_of_grad):
        return None, None, *_backward(ctx, upstream, upstream_of_grad)

    # (Function's own: compiled autograd keys each Function's backward by it, and a
    # single-level Function lacks it)
    _compiled_autograd_key = staticmethod(torch.autograd.Function._compiled_autograd_key)

    @staticmethod
    def jvp(ctx, *tangents):
        raise RuntimeError(_FORWARD_MODE)


def _autograd(keyset, loss, input, target, t1, t2, floats, ints, reduction):
    args = (loss, input, target, t1, t2, floats, ints, reduction)
    tensors = (input, target, t1, t2)
    # a forward-mode tangent shows in no flag of the tensors: under torch.func or inside a
    # dual level the Function runs, whose jvp raises (the kernel alone drops the tangent:
    # a zero derivative)
    if ((torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors))
            or _C._functorch.peek_interpreter_stack() is not None
            or torch.autograd.forward_ad._current_level >= 0):
        # (Dynamo shows torch.func.grad's tensors as not requiring grad: _apply's check
        # let a target that needs a gradient through)
        _refuse_grad(loss, zip(("target", *_TABLE[loss].tensors), tensors[1:], strict=False))
        with _single_level():
            return _OpAutograd.apply(keyset, (torch.is_grad_enabled(), _C._is_fwd_grad_enabled()),
                                     *args)
    return _redispatch(keyset, *args)


_LIB.impl("value_and_grad", _autograd, "Autograd", with_keyset=True)


def _per_example(apply, info, in_dims, loss, input, *rest, outputs: int = 2):
    """A vmap rule: ``apply`` (the op, or ``_Func``) once per example, its ``outputs``
    (the value and gradient, or the value) then stacked (the kernels are not torch ops, so
    no rule can be generated)."""
    # here the tensors are vmap's own: their requires_grad is the outer autograd's,
    # which the check in _apply could not see through vmap's wrappers
    _refuse_grad(loss, zip(("target", *_TABLE[loss].tensors), rest[:3], strict=False))
    tensors = (input, *rest[:3])
    dims = in_dims[1:5]
    if info.batch_size == 0:  # no example to run: empty results of the fake's shapes
        one = [t if d is None else t.new_empty(t.shape[:d] + t.shape[d + 1:])
               for t, d in zip(tensors, dims, strict=True)]
        fakes = _fake(loss, *one, *rest[3:])[:outputs]
        return tuple(f.new_empty((0, *f.shape)) for f in fakes), (0,) * outputs

    def example(i):
        return [t if d is None else t.select(d, i) for t, d in zip(tensors, dims, strict=True)]

    results = [apply(loss, *example(i), *rest[3:]) for i in range(info.batch_size)]
    return tuple(torch.stack(o) for o in zip(*results, strict=True)), (0,) * outputs


def _value_per_example(info, in_dims, *args):
    """The value op's vmap rule: ``_per_example``'s, of its one output."""
    (value,), (dim,) = _per_example(lambda *a: (_value_op(*a),), info, in_dims, *args,
                                    outputs=1)
    return value, dim


torch.library.register_vmap(_value_and_grad, functools.partial(_per_example, _value_and_grad),
                            lib=_LIB)
torch.library.register_vmap(_value_op, _value_per_example, lib=_LIB)

# torch.autocast: the loss in float32, as autocast's fp32 policy runs torch's losses (its
# floating inputs cast, float64 left alone, the gradient cast back by autograd). _apply
# casts before any path (eager calls do not reach the op's dispatch); this rule is for
# the op called directly (torch.ops.lossbackends.value_and_grad). (torch 2.5 and later.)
if hasattr(torch.library, "register_autocast"):
    for _device_type in ("cpu", "cuda"):
        for _op in (_value_and_grad, _value_op):
            torch.library.register_autocast(_op, _device_type, torch.float32, lib=_LIB)


class _Eager(torch.autograd.function._SingleLevelFunction):
    """The custom op's forward and backward as a plain autograd function: what an eager call
    runs (the custom op's dispatch costs ~100 µs a call; torch.compile, fake tensors and
    tensor subclasses take the custom op, torch.func's transforms ``_Func``). Single-level
    (``Function``'s C++ ``apply`` itself): ``Function.apply``'s Python, for torch.func's
    transforms, which never apply here (``_eager``), took 2-3 µs a call."""

    @staticmethod
    def forward(ctx, loss, input, target, t1, t2, floats, ints, reduction):
        # (not the setup_context form: its apply binds a signature per call, ~40 µs)
        value, grad = _compute(loss, input, target, t1, t2, floats, ints, reduction)
        _save(ctx, loss, input, reduction, grad, hand_on=True)
        return value, grad

    backward = staticmethod(_backward)
    _compiled_autograd_key = _OpAutograd._compiled_autograd_key  # (see there)


_PLAIN = frozenset((Tensor, torch.nn.Parameter))
_C = torch._C
_is_compiling = torch.compiler.is_compiling


def _eager(*tensors) -> bool:
    """Plain tensors outside torch.compile, torch.jit.trace (which records the custom op;
    our NumPy calls it would take for constants), modes and torch.func transforms; not on
    the ``meta`` device (the op's fake implementation gives its shapes there)."""
    return (all(type(t) in _PLAIN and not t.is_meta for t in tensors if t is not None)
            and not _is_compiling() and not _C._is_tracing()
            and not _C._is_torch_function_mode_enabled()
            and not _C._len_torch_dispatch_stack()
            and _untransformed())


def _untransformed() -> bool:
    """No torch.func transform applies and no forward-AD dual level is open (inside one:
    the op, whose formula's jvp raises; the eager Function would drop a tangent, a silent
    zero derivative): autograd alone may record."""
    return (_C._functorch.peek_interpreter_stack() is None
            and torch.autograd.forward_ad._current_level < 0)


class _Func(torch.autograd.Function):
    """The forward and backward under torch.func's transforms, which need the setup_context
    form and a vmap rule; ``vmap`` runs the fused kernel once per example (the kernels are
    not torch ops, so no rule can be generated), the value and gradient then stacked."""

    @staticmethod
    def forward(loss, input, target, t1, t2, floats, ints, reduction):
        return _compute(loss, input, target, t1, t2, floats, ints, reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _setup(ctx, inputs, output)

    backward = staticmethod(_backward)

    @staticmethod
    def jvp(ctx, *tangents):
        raise RuntimeError(_FORWARD_MODE)

    @staticmethod
    def vmap(info, in_dims, *args):
        # where nothing below this level records (no transform left, no tensor that requires
        # grad, no dual level), each example is the kernel's call itself: Function.apply
        # binds its signature on every call, two thirds of vmap(grad)'s time per example
        if _untransformed() and not (torch.is_grad_enabled() and any(
                isinstance(a, Tensor) and a.requires_grad for a in args[1:5])):
            return _per_example(_compute, info, in_dims, *args)
        return _per_example(_Func.apply, info, in_dims, *args)


class _InPlace(torch.autograd.Function):
    """``inplace_backward=True``: the gradient is written into ``input``'s memory in the
    forward (Liger-Kernel's trick; eager mode: a custom op may not both mutate its input and
    have an autograd formula). Its one output is ``input``, so marked changed; the value
    comes from ``_ValueOf`` of it. (Torch refuses a Function that changes a view, the
    usual logits ``(x @ W).view(-1, V)``, in place and returns two tensors.)"""

    @staticmethod
    def forward(ctx, loss, input, target, t1, t2, floats, ints, reduction, found):
        entry = _TABLE[loss]
        options = _our_options(entry, input.ndim, t1, t2, floats, ints)
        buffer = input.detach()
        value, _ = entry.loss.value_and_grad(target, buffer, reduction=reduction, out=buffer,
                                             **options)
        found.append(value)  # (a value output too would make two)
        # autograd learns that input changed: a leaf that requires grad is refused, and a
        # tensor saved earlier for another backward raises there instead of being wrong
        ctx.mark_dirty(input)
        return input

    @staticmethod
    def backward(ctx, upstream):  # input holds the gradient now: _ValueOf's backward's
        return None, upstream, None, None, None, None, None, None, None


class _ValueOf(torch.autograd.Function):
    """The loss's value, whose gradient with respect to ``gradient`` (``_InPlace``'s output:
    the logits' memory, holding the loss's gradient) is that memory times the upstream
    gradient."""

    @staticmethod
    def forward(ctx, gradient, found, axis):
        # the value from _InPlace's list, not as an argument: an argument returned as it
        # is would be a view of it, which a later in-place edit (loss /= 4) may not change
        value = found.pop()
        ctx.axis = axis
        # a saved tensor (a plain attribute kept the logits' memory alive as long as the
        # loss, so a training loop held two steps' logits): autograd frees it after
        # backward, keeps it for retain_graph=True, and refuses it if written since
        ctx.save_for_backward(gradient)
        return value

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, upstream):
        (gradient,) = ctx.saved_tensors
        return _scaled(ctx, gradient, upstream), None, None
