"""The losses as differentiable PyTorch functions and ``nn.Module`` classes.

Names, argument order ``(input, target)`` and defaults follow ``torch.nn.functional`` where
torch has the loss (``mse_loss``, ``binary_cross_entropy``, ``binary_cross_entropy_with_logits``,
``cross_entropy``); the rest keep our names in the same order (``hinge``). Each call is one
``torch.library.custom_op`` (``lossbackends::value_and_grad``, with a fake implementation,
so ``torch.compile(fullgraph=True)`` traces it): its forward runs the fused
``value_and_grad`` once, zero-copy on the tensors' memory, and keeps the gradient; backward
multiplies that gradient by the upstream gradient (a scalar, or one per element / per row
for ``reduction="none"``). The gradient is taken with respect to ``input`` only.

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
-100 instead): the same results for ``p`` in ``[e, 1 - e]``. Shapes must match exactly (no
broadcasting of ``target``). Second derivatives raise ``RuntimeError``.

``inplace_backward=True`` (keyword) writes the gradient into ``input``'s memory during the
forward (no buffer besides the logits: the fused cross-entropy trick), in eager mode. Only
for an ``input`` that nothing else reads afterwards, e.g. the logits straight out of a
linear layer: any other use of ``input`` would see the gradient.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import Tensor

from . import losses as _losses
from ._loss import Loss

__all__ = [
    "BCELoss",
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "HingeLoss",
    "MSELoss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "hinge",
    "mse_loss",
]

_P = inspect.Parameter


@dataclass(frozen=True)
class _Entry:
    """One loss of this module: how torch's arguments become ours.

    ``params``: the signature after ``(input, target)`` as ``(name, default)`` in torch's
    order. ``tensors``: torch's tensor options and our names for them (at most two).
    ``floats`` / ``ints``: number options, torch name -> ours. ``per_row``: the loss has a
    class axis (dim 1, or 0 for unbatched input), one loss per row for ``"none"``.
    ``mean_by_weight``: ``"mean"`` divides by the weights' sum (torch's weighted MSE).
    """

    loss: Loss
    module: str
    params: tuple[tuple[str, Any], ...]
    tensors: dict[str, str] = field(default_factory=dict)
    floats: dict[str, str] = field(default_factory=dict)
    ints: dict[str, str] = field(default_factory=dict)
    per_row: bool = False
    mean_by_weight: bool = False
    doc: str = ""


_LEGACY = (("size_average", None), ("reduce", None))

# Adding a loss: one entry here (the catalogue's losses follow the same pattern).
_TABLE: dict[str, _Entry] = {
    "mse_loss": _Entry(
        _losses.mse, "MSELoss", (*_LEGACY, ("reduction", "mean"), ("weight", None)),
        tensors={"weight": "weight"}, mean_by_weight=True,
        doc="``torch.nn.functional.mse_loss``: ``(input - target)^2``; with ``weight`` "
            "(same shape), ``\"mean\"`` divides by ``weight.sum()`` as torch does."),
    "binary_cross_entropy": _Entry(
        _losses.binary_cross_entropy, "BCELoss",
        (("weight", None), *_LEGACY, ("reduction", "mean"), ("eps", 1e-15)),
        tensors={"weight": "weight"}, floats={"eps": "eps"},
        doc="``torch.nn.functional.binary_cross_entropy`` on probabilities; ``input`` is "
            "clipped to ``[e, 1 - e]``, ``e = max(eps, finfo(dtype).eps)`` (torch clamps "
            "each log at -100 instead: equal for ``input`` in ``[e, 1 - e]``)."),
    "binary_cross_entropy_with_logits": _Entry(
        _losses.binary_cross_entropy_with_logits, "BCEWithLogitsLoss",
        (("weight", None), *_LEGACY, ("reduction", "mean"), ("pos_weight", None)),
        tensors={"weight": "weight", "pos_weight": "pos_weight"},
        doc="``torch.nn.functional.binary_cross_entropy_with_logits``; ``pos_weight`` is a "
            "scalar or a vector over the last dimension."),
    "cross_entropy": _Entry(
        _losses.cross_entropy, "CrossEntropyLoss",
        (("weight", None), ("size_average", None), ("ignore_index", -100), ("reduce", None),
         ("reduction", "mean"), ("label_smoothing", 0.0)),
        tensors={"weight": "class_weight"}, floats={"label_smoothing": "label_smoothing"},
        ints={"ignore_index": "ignore_index"}, per_row=True,
        doc="``torch.nn.functional.cross_entropy``: logits with the classes on dim 1 (dim 0 "
            "unbatched), class indices or probabilities as ``target``; ``weight`` are class "
            "weights. A class index outside ``[0, C)`` that is not ``ignore_index`` raises "
            "``ValueError``."),
    "hinge": _Entry(
        _losses.hinge, "HingeLoss", (("margin", 1.0), ("reduction", "mean"), ("weight", None)),
        tensors={"weight": "weight"}, floats={"margin": "margin"},
        doc="Our ``hinge``: ``max(0, margin - target * input)``, labels ±1 used as given."),
}

_SECOND_ORDER = (
    "lossbackends.torch computes first derivatives only; for second derivatives use "
    "torch.nn.functional's loss (or lossbackends' grad_and_hess where it exists)"
)


def _class_axis(entry: _Entry, ndim: int) -> int | None:
    return (1 if ndim >= 2 else 0) if entry.per_row else None


def _our_options(entry: _Entry, ndim: int, t1, t2, floats, ints) -> dict:
    options: dict[str, Any] = {}
    for ours, value in zip(entry.tensors.values(), (t1, t2), strict=False):
        if value is not None:
            options[ours] = value
    options.update(zip(entry.floats.values(), floats, strict=True))
    options.update(zip(entry.ints.values(), ints, strict=True))
    axis = _class_axis(entry, ndim)
    if axis is not None:
        options["axis"] = axis
    return options


@torch.library.custom_op("lossbackends::value_and_grad", mutates_args=())
def _value_and_grad(loss: str, input: Tensor, target: Tensor, t1: Optional[Tensor],  # noqa: UP045
                    t2: Optional[Tensor], floats: list[float], ints: list[int],  # noqa: UP045
                    reduction: str) -> tuple[Tensor, Tensor]:
    entry = _TABLE[loss]
    options = _our_options(entry, input.ndim, t1, t2, floats, ints)
    value, grad = entry.loss.value_and_grad(target, input, reduction=reduction, **options)
    # contiguous, as the fake below says: a class axis other than the last comes back as a
    # moved view, whose strides torch.compile would find different from the fake's
    return value, grad.contiguous()


@_value_and_grad.register_fake
def _(loss, input, target, t1, t2, floats, ints, reduction):
    entry = _TABLE[loss]
    if reduction != "none":
        shape: tuple = ()
    else:
        axis = _class_axis(entry, input.ndim)
        shape = tuple(input.shape) if axis is None else tuple(
            s for i, s in enumerate(input.shape) if i != axis)
    return input.new_empty(shape), torch.empty_like(input, memory_format=torch.contiguous_format)


def _setup(ctx, inputs, output):
    loss, input, reduction = inputs[0], inputs[1], inputs[7]
    ctx.axis = _class_axis(_TABLE[loss], input.ndim) if reduction == "none" else None
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(output[1])


def _scaled(ctx, grad: Tensor, upstream: Tensor | None) -> Tensor | None:
    if upstream is None:
        return None
    if ctx.axis is not None:  # reduction="none" of a per-row loss: one upstream per row
        upstream = upstream.unsqueeze(ctx.axis)
    return grad * upstream  # a scalar, or one upstream gradient per element


def _backward(ctx, upstream, upstream_of_grad):
    if upstream_of_grad is not None:  # something differentiates the saved gradient
        raise RuntimeError(_SECOND_ORDER)
    (grad,) = ctx.saved_tensors
    return None, _scaled(ctx, grad, upstream), None, None, None, None, None, None


_value_and_grad.register_autograd(_backward, setup_context=_setup)


class _InPlace(torch.autograd.Function):
    """``inplace_backward=True``: the gradient is written into ``input``'s memory in the
    forward and kept by reference (Liger-Kernel's trick; eager mode: a custom op may not
    both mutate its input and have an autograd formula)."""

    @staticmethod
    def forward(ctx, loss, input, target, t1, t2, floats, ints, reduction):
        entry = _TABLE[loss]
        options = _our_options(entry, input.ndim, t1, t2, floats, ints)
        buffer = input.detach()
        value, _ = entry.loss.value_and_grad(target, buffer, reduction=reduction, out=buffer,
                                             **options)
        ctx.axis = _class_axis(entry, input.ndim) if reduction == "none" else None
        ctx.gradient = buffer  # not save_for_backward: input's memory changed on purpose
        # autograd learns that input changed: a leaf that requires grad is refused, and a
        # tensor saved earlier for another backward raises there instead of being wrong
        ctx.mark_dirty(input)
        return value, input

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, upstream, _input_after):
        return None, _scaled(ctx, ctx.gradient, upstream), None, None, None, None, None, None


def _apply(name: str, input: Tensor, target: Tensor, options: dict) -> Tensor:
    entry = _TABLE[name]
    inplace = options.pop("inplace_backward", False)
    size_average, reduce = options.pop("size_average", None), options.pop("reduce", None)
    reduction = options.pop("reduction")
    if size_average is not None or reduce is not None:
        reduction = torch.nn._reduction.legacy_get_string(size_average, reduce)
    if not isinstance(input, Tensor) or not isinstance(target, Tensor):
        raise TypeError(f"{name} takes tensors as input and target (got "
                        f"{type(input).__name__}, {type(target).__name__})")
    tensors = [options.pop(key) for key in entry.tensors]
    for key, value in [("target", target), *zip(entry.tensors, tensors, strict=True)]:
        if isinstance(value, Tensor) and value.requires_grad:
            raise ValueError(
                f"{name}: {key} requires grad, but lossbackends.torch differentiates with "
                f"respect to input only; pass {key}.detach() (or use torch.nn.functional)"
            )
    tensors = [torch.as_tensor(t, dtype=input.dtype, device=input.device)
               if t is not None and not isinstance(t, Tensor) else t for t in tensors]
    tensors += [None] * (2 - len(tensors))
    floats = [float(options.pop(key)) for key in entry.floats]
    ints = [int(options.pop(key)) for key in entry.ints]
    weighted_mean = entry.mean_by_weight and reduction == "mean" and tensors[0] is not None
    call_reduction = "sum" if weighted_mean else reduction
    if inplace:
        if not input.is_contiguous():
            raise ValueError("inplace_backward=True needs a contiguous input (see .contiguous())")
        value = _InPlace.apply(name, input, target, *tensors, floats, ints, call_reduction)[0]
    else:
        value = _value_and_grad(name, input, target, *tensors, floats, ints, call_reduction)[0]
    if weighted_mean:
        if tensors[0].shape != input.shape:
            raise ValueError(f"{name}: weight has shape {tuple(tensors[0].shape)}; torch "
                             f"needs the input's shape {tuple(input.shape)}")
        value = value / tensors[0].sum()
    return value


def _functional(name: str) -> Callable[..., Tensor]:
    entry = _TABLE[name]
    signature = inspect.Signature(
        [_P("input", _P.POSITIONAL_OR_KEYWORD, annotation=Tensor),
         _P("target", _P.POSITIONAL_OR_KEYWORD, annotation=Tensor)]
        + [_P(key, _P.POSITIONAL_OR_KEYWORD, default=default) for key, default in entry.params]
        + [_P("inplace_backward", _P.KEYWORD_ONLY, default=False)],
        return_annotation=Tensor,
    )
    defaults = {key: default for key, default in entry.params}
    positional = [key for key, _ in entry.params]

    def loss(input: Tensor, target: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        if len(args) > len(positional):
            raise TypeError(f"{name}() takes at most {len(positional) + 2} positional arguments")
        options = {**defaults, "inplace_backward": False}
        for key in kwargs:
            if key not in options:
                raise TypeError(f"{name}() got an unexpected keyword argument {key!r}")
        options.update(zip(positional, args, strict=False))
        options.update(kwargs)
        return _apply(name, input, target, options)

    loss.__name__ = loss.__qualname__ = name
    loss.__signature__ = signature  # type: ignore[attr-defined]
    loss.__doc__ = (f"{entry.doc}\n\nDifferentiable with respect to ``input``; signature "
                    f"``{name}{signature}``.\n\n{entry.loss.__doc__}")
    return loss


def _module(name: str) -> type:
    entry = _TABLE[name]
    functional = _FUNCTIONS[name]
    params = [_P(key, _P.POSITIONAL_OR_KEYWORD, default=default) for key, default in entry.params]
    params.append(_P("inplace_backward", _P.KEYWORD_ONLY, default=False))
    signature = inspect.Signature([_P("self", _P.POSITIONAL_OR_KEYWORD), *params])

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        torch.nn.Module.__init__(self)
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        options = dict(bound.arguments)
        del options["self"]
        for key in entry.tensors:  # tensors are buffers, as in torch's modules
            self.register_buffer(key, options.pop(key))
        self._options = options

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        tensors = {key: getattr(self, key) for key in entry.tensors}
        return functional(input, target, **self._options, **tensors)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self._options.items() if k in ("reduction",)
                         or v != dict(entry.params).get(k, False))

    __init__.__signature__ = signature  # type: ignore[attr-defined]
    return type(entry.module, (torch.nn.Module,), {
        "__init__": __init__, "forward": forward, "extra_repr": extra_repr,
        "__doc__": f"``nn.Module`` form of :func:`{name}`.", "__module__": __name__,
    })


_FUNCTIONS = {name: _functional(name) for name in _TABLE}
mse_loss = _FUNCTIONS["mse_loss"]
binary_cross_entropy = _FUNCTIONS["binary_cross_entropy"]
binary_cross_entropy_with_logits = _FUNCTIONS["binary_cross_entropy_with_logits"]
cross_entropy = _FUNCTIONS["cross_entropy"]
hinge = _FUNCTIONS["hinge"]

_MODULES = {name: _module(name) for name in _TABLE}
MSELoss = _MODULES["mse_loss"]
BCELoss = _MODULES["binary_cross_entropy"]
BCEWithLogitsLoss = _MODULES["binary_cross_entropy_with_logits"]
CrossEntropyLoss = _MODULES["cross_entropy"]
HingeLoss = _MODULES["hinge"]
