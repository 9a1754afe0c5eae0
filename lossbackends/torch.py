"""The losses as differentiable PyTorch functions and ``nn.Module`` classes.

Names, argument order ``(input, target)`` and defaults follow ``torch.nn.functional`` where
torch has the loss (``mse_loss``, ``l1_loss``, ``huber_loss``, ``smooth_l1_loss``,
``soft_margin_loss``, ``poisson_nll_loss``, ``kl_div``, ``binary_cross_entropy``,
``binary_cross_entropy_with_logits``, ``cross_entropy``); the rest keep our names in the
same order (``hinge``, ``squared_hinge``, ``log_cosh``, ``sigmoid_focal``, ``pinball``,
``multiclass_hinge``), and every loss has its ``nn.Module`` (``MSELoss``, ``L1Loss``, ...,
``HingeLoss``, ``SigmoidFocalLoss``, ...). Each is one custom operator
(``lossbackends::value_and_grad``, defined with ``torch.library``, with a fake
implementation, so ``torch.compile(fullgraph=True)`` traces it): its forward runs the
fused ``value_and_grad`` once, zero-copy on the tensors' memory, and keeps the gradient;
backward multiplies that gradient by the upstream gradient (a scalar, or one per element
/ per row for ``reduction="none"``), or, in an eager call on the CPU whose backward
records nothing, for an upstream of 1 (``.backward()`` of the loss itself), hands the
kept gradient on as it is, as Liger-Kernel's cross-entropy does (a pass less: the step of
cross-entropy at 4096 x 1000 took half the time): ``input.grad`` is then that memory (a
retained graph's is a copy), and ``torch.autograd.grad(loss, input, retain_graph=True)``
returns the kept tensor (once: a later backward of that graph gives a tensor of its own),
which a later backward refuses once it was changed in place, as PyTorch refuses any saved
tensor changed so. The gradient is taken with respect to ``input``
only. Under torch.func's transforms (``grad``, ``vjp``, ``jacrev``, ``vmap``) an
autograd.Function of the same forward and backward runs, ``vmap`` one example at a time;
under ``torch.compile`` the op's own autograd formula and vmap rule do (``fullgraph=True``
too: per-example gradients by ``vmap(grad(...))``). Forward-mode and second derivatives
raise ``RuntimeError``. Eager calls on plain tensors run the same forward and backward as
a ``torch.autograd.Function`` (the custom op's dispatch alone costs ~100 µs a call); with
no gradient to take (``torch.no_grad()``, an ``input`` that does not require grad) the
value alone is computed, as it is by compiled calls with grad mode off (an op of its own,
``lossbackends::value``). Mixed dtypes follow torch, loss by loss: promoted as
``torch.result_type`` says (the input is cast and its gradient cast back, as torch
does), or computed in ``input``'s dtype (``huber_loss``, ``soft_margin_loss``; for
``huber_loss`` with a ``weight`` of a wider dtype, in that one: torch's result dtype, as
it multiplies the loss by the weight), or
refused (``binary_cross_entropy``); an integer ``input`` in a floating target's dtype,
else in the default dtype, as torch promotes it.
Under ``torch.autocast`` every loss runs in float32, as autocast's fp32 policy runs
torch's losses: floating tensors other than float64 are cast (their gradients cast back);
``binary_cross_entropy`` too, which torch refuses under CUDA autocast; not with
``inplace_backward=True`` (below).
Under ``torch.compile`` a float option that Dynamo makes symbolic (a new ``delta`` or
``label_smoothing`` value, ``dynamic=True``) is specialised: a guard on its value, one
recompile per value, as torch does for a Python float by default.

>>> import torch, lossbackends.torch as lbt
>>> x = torch.tensor([[2.0, 1.0, 0.1], [0.5, 0.2, 3.0]], requires_grad=True)
>>> loss = lbt.cross_entropy(x, torch.tensor([0, 2]))
>>> loss.backward()
>>> print(f"{loss.item():.6f}")
0.275297
>>> print(x.grad.round(decimals=4))
tensor([[-0.1705,  0.1212,  0.0493],
        [ 0.0359,  0.0266, -0.0625]])

Differences from ``torch.nn.functional`` (documented per function): ``binary_cross_entropy``
clips the probabilities at ``e = max(eps, finfo(dtype).eps)`` (torch clamps each log at
-100 instead): the same losses for ``p`` in ``[e, 1 - e]``, and gradients where
``p (1 - p) >= 1e-12`` (torch's backward divides by at least 1e-12; ours is the exact
derivative, which differs in float64 within about 1e-12 of 0 and 1). Shapes must match
exactly (no broadcasting of ``target``). Second derivatives raise ``RuntimeError``: ours
in eager mode and under torch.func (compiled too, inside Dynamo's ``TorchRuntimeError``); under
``torch.compile`` of a plain ``.backward()``, torch's. There the backward is
AOTAutograd's compiled graph, which traced our autograd formula once, so the formula
does not run at backward time: a ``.backward()`` through the gradient raises torch's
"does not currently support double backward", and ``torch.autograd.grad(..., inputs)``
finds no path to ``input`` (AOTAutograd saves the fused gradient detached, as it saves
every tensor made inside the graph): "appears to not have been used in the graph", or
``None`` with ``allow_unused=True``, as for torch's own compiled ``cross_entropy``.

``inplace_backward=True`` (keyword) writes the gradient into ``input``'s memory during the
forward (no buffer besides the logits: the fused cross-entropy trick), when a gradient is
taken (``input.requires_grad`` outside ``torch.no_grad()``; otherwise the value alone,
``input`` untouched). Eager mode only: under ``torch.compile`` or torch.func
(``vmap`` included, whose wrapper hides ``requires_grad``: there it raises when the
wrapped ``input`` requires grad; under ``torch.compile`` of ``vmap`` whenever grad mode is
on) it raises ``RuntimeError``. Under ``torch.autocast`` the gradient goes into ``input``'s
own dtype (a float32 copy would cost the memory the option saves), computed in float32
inside the kernels; the loss has that dtype too. Only for an
``input`` that nothing else reads afterwards, e.g. the logits straight out of a linear
layer: any other use of ``input`` would see the gradient.
Autograd keeps that memory as a saved tensor: freed by ``backward()`` (kept by
``retain_graph=True``), and a write into ``input`` before it raises there (autograd's
version check, which saved-tensor hooks such as ``save_on_cpu`` skip).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

try:
    import torch
except ModuleNotFoundError as exc:
    if exc.name != "torch":  # torch there but broken: its own error says what
        raise
    raise ModuleNotFoundError("lossbackends.torch needs PyTorch: pip install "
                              "'lossbackends[torch]'", name="torch") from exc
from torch import Tensor

from ._loss import REDUCTIONS as _REDUCTIONS
from ._loss import unknown_reduction as _unknown_reduction
from ._prepare import bool_option as _bool_option
from ._prepare import int_option as _int_option
from ._prepare import real_number as _real_number
from ._torch_op import (
    _C,
    _check_on_meta,
    _class_axis,
    _Eager,
    _eager,
    _Func,
    _InPlace,
    _is_compiling,
    _value,
    _value_and_grad,
    _value_op,
    _ValueOf,
    _warn_mean,
)
from ._torch_table import EXAMPLES as _EXAMPLES
from ._torch_table import TABLE as _TABLE
from ._torch_table import Entry as _Entry
from ._torch_terms import _in_torch_terms, _refuse_grad

_P = inspect.Parameter

def _compute_dtype(entry: _Entry, name: str, input: Tensor, target: Tensor, weight) -> Any:
    """The dtype torch computes ``name`` in (see ``_Entry.dtypes``), or None for input's."""
    if input.is_complex():  # (not floating either: the cast below would drop its imaginary part)
        raise TypeError(f"{name}: input has dtype {input.dtype}; pass a real (bool, integer or "
                        "float16/32/64) tensor: input.real or input.abs(), as your loss needs")
    if not input.is_floating_point():
        if entry.loss._class_indices:  # integer logits: the arguments swapped, which the
            return None  # loss's own check names
        # an integer or bool input (it cannot require grad) as torch promotes it: to a
        # floating target's dtype, else to the default dtype (torch's poisson_nll_loss of
        # two integer tensors is float32), where the plain call's rule would give float64
        # (torch refuses some of these losses integers: computed here all the same)
        floating = [other.dtype for other in (target, weight)
                    if isinstance(other, Tensor) and other.is_floating_point()]
        if not floating or entry.loss.name == "poisson_nll":
            # (torch's poisson_nll_loss takes exp(input) first: an integer's is in the
            # default dtype, then promoted with the target: float32 beside a float16 one)
            floating.append(torch.get_default_dtype())
        dtype = floating[0]
        for other in floating[1:]:
            dtype = torch.promote_types(dtype, other)
        return dtype
    if entry.dtypes == "same":
        if target.is_floating_point() and target.dtype != input.dtype:
            raise TypeError(
                f"{name}: input is {input.dtype} but target is {target.dtype}; torch's "
                f"{name} takes one floating dtype: pass target.to(input.dtype)")
        return None
    # torch.result_type's answer, from the dtypes alone (which torch.compile traces): a
    # floating tensor promotes unless it is 0-d beside a dimensioned input. With "input",
    # torch computes the loss in input's dtype, then multiplies it by the weight: only the
    # weight promotes (huber_loss of float32 with a float64 weight is float64)
    dtype = input.dtype
    for other in (None if entry.dtypes == "input" else target,
                  weight if entry.weight_like_input else None):
        if isinstance(other, Tensor) and other.is_floating_point() and (other.ndim
                                                                        or not input.ndim):
            dtype = torch.promote_types(dtype, other.dtype)
    return None if dtype == input.dtype else dtype


def _autocast(input: Tensor) -> bool:
    """Whether torch.autocast is on for ``input``'s device type (none but the CPU and CUDA
    here: torch has no autocast state for ``meta``)."""
    device_type = input.device.type
    return device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type)


def _autocast_cast(tensor: Tensor | None) -> Tensor | None:
    """``tensor`` as autocast's fp32 policy casts it (``torch.library``'s rule): a floating
    tensor other than float64 in float32 (none, or an integer tensor, as it is)."""
    if tensor is not None and tensor.is_floating_point() and tensor.dtype not in (
            torch.float32, torch.float64):
        return tensor.to(torch.float32)
    return tensor


def _requires_grad_under_vmap(input: Tensor) -> bool:
    """``input.requires_grad`` under torch.func's transforms: that of the tensor vmap's
    wrappers hold (a BatchedTensor says False; autograd records on what it wraps)."""
    functorch = _C._functorch
    while functorch.is_batchedtensor(input):
        input = functorch.get_unwrapped(input)
    return input.requires_grad


def _apply(name: str, entry: _Entry, input: Tensor, target: Tensor, options: dict) -> Tensor:
    # in place only when a gradient is taken: otherwise the value alone, input untouched
    # (on the meta device there is no memory to write: the op's fake implementation)
    inplace = (options["inplace_backward"] and isinstance(input, Tensor) and input.requires_grad
               and torch.is_grad_enabled() and not input.is_meta)
    if options["inplace_backward"] and isinstance(input, Tensor) and torch.is_grad_enabled():
        if _is_compiling():  # (there vmap's wrapper shows, not what it wraps: refused)
            refuse = inplace or _C._functorch.is_batchedtensor(input)
        else:  # torch.func: vmap's wrapper says requires_grad=False, so see through it (or
            # the in-place write would be dropped without a word)
            refuse = (_C._functorch.peek_interpreter_stack() is not None
                      and _requires_grad_under_vmap(input))
        if refuse:
            from ._untraced import refuse_inplace  # (compile, torch.func: Dynamo is loaded)

            refuse_inplace(name)  # raises, also where torch.compile graph-breaks at it
    reduction = options["reduction"]
    if options.get("size_average") is not None or options.get("reduce") is not None:
        reduction = torch.nn._reduction.legacy_get_string(options["size_average"],
                                                           options["reduce"])
    if not isinstance(input, Tensor) or not isinstance(target, Tensor):
        raise TypeError(f"{name} takes tensors as input and target (got "
                        f"{type(input).__name__}, {type(target).__name__})")
    batchmean = reduction == "batchmean" and entry.batchmean
    if batchmean:
        reduction = "sum"
    elif reduction not in _REDUCTIONS:
        raise _unknown_reduction(reduction, f"{name}: ", ("batchmean",) if entry.batchmean else ())
    elif reduction == "mean" and entry.batchmean and not _is_compiling():
        _warn_mean(stacklevel=3)  # (under torch.compile, from the op's fake: see there)
    tensors = [options[key] for key in entry.tensors]
    _refuse_grad(name, (("target", target), *zip(entry.tensors, tensors, strict=True)))
    # numbers where tensors go (weight=2.0, pos_weight=3.0): tensors of input's dtype
    tensors = [torch.as_tensor(t, dtype=input.dtype, device=input.device)
               if t is not None and not isinstance(t, Tensor) else t for t in tensors]
    # (in place, the gradient goes into input's own dtype: no float32 copy, whose memory
    # the option exists to save; the kernels compute a bfloat16/float16 input in float32)
    if _autocast(input) and not inplace:
        input, target = _autocast_cast(input), _autocast_cast(target)
        tensors = [_autocast_cast(t) for t in tensors]
    weight = tensors[0] if tensors else None
    if entry.weight_like_input and weight is not None and weight.shape != input.shape:
        raise ValueError(f"{name}: weight has shape {tuple(weight.shape)}; torch needs the "
                         f"input's shape {tuple(input.shape)}")
    dtype = _compute_dtype(entry, name, input, target, weight)
    if dtype is not None:
        if inplace:
            raise ValueError(f"inplace_backward=True needs one dtype: input is {input.dtype}, "
                             f"the computation {dtype} (cast the other arguments to it)")
        input = input.to(dtype)  # autograd casts the gradient back to input's dtype
    tensors += [None] * (2 - len(tensors))
    floats = []
    for key in entry.floats:
        value = options[key]
        if value is None and key in entry.optional:
            value = _NONE
        else:
            value = _real_number(name, key, _concrete(value))
            if value != value:  # NaN stands for None in the op: refuse it here
                raise ValueError(f"{name}: {key} must be a number, not NaN")
        floats.append(value)
    ints = [_int_option(name, key, _concrete(options[key]))  # (1.5 not truncated)
            for key in entry.ints]
    ints += [int(_bool_option(name, key, _concrete(options[key]))) for key in entry.bools]
    weighted_mean = entry.mean_by_weight and reduction == "mean" and weight is not None
    call_reduction = "sum" if weighted_mean else reduction
    args = (name, input, target, *tensors, floats, ints, call_reduction)
    if input.is_meta:
        _check_on_meta(name, entry, input, target, tensors, floats, ints)
    if inplace:
        if not input.is_contiguous():
            raise ValueError("inplace_backward=True needs a contiguous input (see .contiguous())")
        if input.is_leaf:  # (autograd's own error would not say what to do)
            raise ValueError("inplace_backward=True writes the gradient into input, which "
                             "autograd forbids for a leaf that requires grad (a parameter); "
                             "pass a computed tensor (a layer's output), or drop inplace_backward")
        found = []
        gradient = _in_torch_terms(name, _InPlace.apply, *args, found)
        axis = _class_axis(entry, input.ndim) if call_reduction == "none" else None
        value = _ValueOf.apply(gradient, found, axis)
    elif not _eager(input, target, *tensors):
        if not input.is_meta and any(isinstance(t, Tensor) and t.is_meta
                                     for t in (target, *tensors)):
            # (the op would dispatch to its fake, whose value holds no number)
            raise ValueError(f"{name}: a tensor is on the meta device but input is on "
                             f"{input.device}; put them all on one device")
        # under torch.compile the op (torch.func's transforms included: _OpAutograd), as
        # Dynamo cannot trace _Func's NumPy forward; eagerly under torch.func, _Func: the
        # same formula without the op's dispatch
        functorch = not _is_compiling() and _C._functorch.peek_interpreter_stack() is not None
        if functorch:
            value = _Func.apply(*args)[0]
        elif torch.is_grad_enabled():  # (Dynamo guards on grad mode: one graph for each)
            value = _value_and_grad(*args)[0]
        else:  # (no_grad, inference_mode: nothing differentiates, so no gradient)
            value = _value_op(*args)
    elif input.requires_grad and torch.is_grad_enabled():
        value = _in_torch_terms(name, _Eager.apply, *args)[0]
    else:  # nothing to differentiate: the value alone (no gradient buffer)
        value = _value(*args)
    if weighted_mean:
        value = value / tensors[0].sum()
    elif batchmean and input.ndim:
        value = value / input.shape[0]
    return value


_NONE = float("nan")  # None of an optional float option, inside the op


def _concrete(value: Any) -> Any:
    """An option that Dynamo made symbolic (a float after a recompile for a new value, or
    a number under ``dynamic=True``: a SymFloat or SymInt, which Dynamo shows as a
    ``float`` or ``int`` that has no ``ndim`` for the checks to ask) as the Python number
    it stands for. Dynamo guards on the value, so a new one recompiles, as for a Python
    float by default (``torch._dynamo.config.specialize_float``): the op takes numbers,
    not symbols, and the checks need them. Anything else as it is (eager calls: no
    import, no cost)."""
    if ((_is_compiling() and (type(value) is float or type(value) is int))
            or isinstance(value, (torch.SymFloat, torch.SymInt))):
        from torch.fx.experimental.symbolic_shapes import guard_scalar

        return guard_scalar(value)
    return value


def _functional(name: str) -> Callable[..., Tensor]:
    entry = _TABLE[name]
    signature = inspect.Signature(
        [_P("input", _P.POSITIONAL_OR_KEYWORD, annotation=Tensor),
         _P("target", _P.POSITIONAL_OR_KEYWORD, annotation=Tensor)]
        + [_P(key, _P.POSITIONAL_OR_KEYWORD, default=default) for key, default in entry.params]
        + [_P(key, _P.KEYWORD_ONLY, default=default) for key, default in entry.kwonly]
        + [_P("inplace_backward", _P.KEYWORD_ONLY, default=False)],
        return_annotation=Tensor,
    )
    defaults = {key: default for key, default in (*entry.params, *entry.kwonly)}
    defaults["inplace_backward"] = False
    positional = [key for key, _ in entry.params]

    def loss(input: Tensor, target: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        options = defaults.copy()
        if args:
            if len(args) > len(positional):
                raise TypeError(f"{name}() takes at most {len(positional) + 2} positional "
                                "arguments")
            options.update(zip(positional, args, strict=False))
        if kwargs:
            if not kwargs.keys() <= defaults.keys():
                unknown = next(key for key in kwargs if key not in defaults)
                raise TypeError(f"{name}() got an unexpected keyword argument {unknown!r}")
            options.update(kwargs)
        return _apply(name, entry, input, target, options)

    loss.__name__ = loss.__qualname__ = name
    loss.__signature__ = signature  # type: ignore[attr-defined]
    loss.__doc__ = _doc(name, entry)
    return loss


def _doc(name: str, entry: _Entry) -> str:
    x, t, opts, value, grad = _EXAMPLES[name]
    opts = f", {opts}" if opts else ""
    return f"""{entry.doc}

The value and gradient are :obj:`lossbackends.{entry.loss.name}`'s (its page has the
formulas) with ``y_pred = input`` and ``y_true = target``; differentiable with respect to
``input`` only, first derivatives only (torch.func: see :doc:`/guide/training`).
``inplace_backward=True``: see :mod:`lossbackends.torch`.

>>> import torch, lossbackends.torch as lbt
>>> x = torch.tensor({x}, requires_grad=True)
>>> loss = lbt.{name}(x, torch.tensor({t}){opts})
>>> loss.backward()
>>> print(f"{{loss.item():.4f}}")
{value}
>>> print(x.grad.round(decimals=4))
{grad}
"""


def _module(name: str) -> type:
    entry = _TABLE[name]
    functional = _FUNCTIONS[name]
    params = [_P(key, _P.POSITIONAL_OR_KEYWORD, default=default) for key, default in entry.params]
    params += [_P(key, _P.KEYWORD_ONLY, default=default) for key, default in entry.kwonly]
    params.append(_P("inplace_backward", _P.KEYWORD_ONLY, default=False))
    signature = inspect.Signature([_P("self", _P.POSITIONAL_OR_KEYWORD), *params])
    defaults = dict((*entry.params, *entry.kwonly))
    names = [p.name for p in params]  # the options, tensors (buffers) included

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        torch.nn.Module.__init__(self)
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        arguments = bound.arguments
        if arguments.get("size_average") is not None or arguments.get("reduce") is not None:
            # torch's modules turn the deprecated pair into reduction once, here: a later
            # ``module.reduction = ...`` then applies
            arguments["reduction"] = torch.nn._reduction.legacy_get_string(
                arguments["size_average"], arguments["reduce"])
            arguments["size_average"] = arguments["reduce"] = None
        for key in names:
            if key in entry.tensors:  # tensors are buffers, as in torch's modules
                self.register_buffer(key, bound.arguments[key])
            else:  # attributes read at each forward, as torch's modules do
                setattr(self, key, bound.arguments[key])

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return functional(input, target, **{key: getattr(self, key) for key in names})

    def extra_repr(self) -> str:
        shown = {k: getattr(self, k) for k in names if k not in entry.tensors}
        return ", ".join(f"{k}={v!r}" for k, v in shown.items()
                         if k == "reduction" or v != defaults.get(k, False))

    __init__.__signature__ = signature  # type: ignore[attr-defined]
    return type(entry.module, (torch.nn.Module,), {
        "__init__": __init__, "forward": forward, "extra_repr": extra_repr,
        "__doc__": _module_doc(name, entry, signature), "__module__": __name__,
    })


def _module_doc(name: str, entry: _Entry, signature: inspect.Signature) -> str:
    x, t, opts, value, _ = _EXAMPLES[name]
    params = str(signature).replace("(self, ", "(", 1)
    names = " and ".join(f"``{key}``" for key in entry.tensors)
    buffers = (f" {names} {'is a buffer' if len(entry.tensors) == 1 else 'are buffers'} "
               "(moved by ``.to()``)." if entry.tensors else "")
    return f"""``nn.Module`` form of :func:`{name}`: ``{entry.module}{params}`` keeps the
options, ``forward(input, target)`` is ``{name}(input, target, **options)``.{buffers}

>>> import torch, lossbackends.torch as lbt
>>> criterion = lbt.{entry.module}({opts})
>>> print(f"{{criterion(torch.tensor({x}), torch.tensor({t})).item():.4f}}")
{value}
"""


_FUNCTIONS = {name: _functional(name) for name in _TABLE}
_MODULES = {name: _module(name) for name in _TABLE}
globals().update(_FUNCTIONS)
globals().update({cls.__name__: cls for cls in _MODULES.values()})
__all__ = sorted([*_FUNCTIONS, *(cls.__name__ for cls in _MODULES.values())])

if TYPE_CHECKING:  # the names above, for type checkers (tests/test_api.py keeps them __all__)
    def _loss(input: Tensor, target: Tensor, *args: Any, **kwargs: Any) -> Tensor: ...

    class _LossModule(torch.nn.Module):
        def __init__(self, *args: Any, **kwargs: Any) -> None: ...
        def forward(self, input: Tensor, target: Tensor) -> Tensor: ...

    binary_cross_entropy = binary_cross_entropy_with_logits = cross_entropy = hinge = _loss
    huber_loss = kl_div = l1_loss = log_cosh = mse_loss = multiclass_hinge = pinball = _loss
    poisson_nll_loss = sigmoid_focal = smooth_l1_loss = soft_margin_loss = _loss
    squared_hinge = _loss

    class BCELoss(_LossModule): ...
    class BCEWithLogitsLoss(_LossModule): ...
    class CrossEntropyLoss(_LossModule): ...
    class HingeLoss(_LossModule): ...
    class HuberLoss(_LossModule): ...
    class KLDivLoss(_LossModule): ...
    class L1Loss(_LossModule): ...
    class LogCoshLoss(_LossModule): ...
    class MSELoss(_LossModule): ...
    class MulticlassHingeLoss(_LossModule): ...
    class PinballLoss(_LossModule): ...
    class PoissonNLLLoss(_LossModule): ...
    class SigmoidFocalLoss(_LossModule): ...
    class SmoothL1Loss(_LossModule): ...
    class SoftMarginLoss(_LossModule): ...
    class SquaredHingeLoss(_LossModule): ...
