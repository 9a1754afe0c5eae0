"""What ``lossbackends.torch``'s functions tell a torch user: the arguments' errors in
torch's terms (``input``, ``target``, ``weight``, the function's own name:
``_in_torch_terms``), and the refusal of a target or weight that requires grad
(``_refuse_grad``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ._torch_table import TABLE as _TABLE
from .backends._host import LabelError as _LabelError


def _refuse_grad(name: str, named) -> None:
    """A ValueError for a tensor of ``named`` ((key, value) pairs: the target, weights)
    that requires grad where autograd records: its gradient would be missing."""
    if not torch.is_grad_enabled():
        return
    for key, value in named:
        if isinstance(value, Tensor) and value.requires_grad:
            raise ValueError(
                f"{name}: {key} requires grad, but lossbackends.torch differentiates with "
                f"respect to input only; pass {key}.detach() (or use torch.nn.functional)"
            )


# the plain API's names in its messages, as a torch user calls them (the arguments'
# order first: torch's is (input, target))
_TORCH_TERMS = (("the order is (y_true, y_pred)", "the order is (input, target)"),
                ("y_true", "target"), ("y_pred", "input"), ("class_weight", "weight"),
                (".astype(int)", ".long()"))


def _in_torch_terms(name: str, call: Callable, *args: Any, **kwargs: Any) -> Any:
    """``call(*args, **kwargs)``, its argument errors (a ValueError or TypeError, or a
    LabelError, kept one) in torch's terms: ``target``, ``input`` and ``weight``, the
    message starting with the function's name."""
    try:
        return call(*args, **kwargs)
    except (ValueError, TypeError) as exc:
        message = str(exc)
        for ours, theirs in _TORCH_TERMS:
            message = message.replace(ours, theirs)
        entry = _TABLE.get(name)  # our loss's name starting the message: torch's instead
        if entry is not None and message.startswith(f"{entry.loss.name}: "):
            message = f"{name}: {message[len(entry.loss.name) + 2:]}"
        if type(exc) is _LabelError and message != str(exc):
            raise _LabelError(message, exc.label, exc.row, exc.classes, exc.loss) from None
        if type(exc) not in (ValueError, TypeError) or message == str(exc):
            raise
        prefix = "" if message.startswith(f"{name}:") else f"{name}: "
        raise type(exc)(prefix + message) from None
