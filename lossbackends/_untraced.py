"""What torch.compile must run without tracing it: the plain API, and the refusal of
``inplace_backward=True``.

Imported only where torch and Dynamo are loaded already: from inside a call that Dynamo
is tracing (``torch.compiler.is_dynamo_compiling()``; Dynamo runs an ``import`` as it
traces), or for the refusal under torch.func (which loads Dynamo). So ``import
lossbackends`` and ``import lossbackends.torch`` never load Dynamo (~2 s) for it. A
``torch.compiler.disable``'d function is where Dynamo graph-breaks; it then runs it with
Dynamo off for every frame below it (our dispatch, NumPy, Numba's compiler), on the real
arrays. ``fullgraph=True`` forbids the graph break:
its error gives the function's ``reason`` (torch 2.8 and later).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

PLAIN_API = (
    "lossbackends' plain calls (lossbackends.<loss>(...), .grad, .value_and_grad, "
    ".grad_and_hess) run NumPy, Numba or CuPy kernels outside torch's graph: under "
    "torch.compile they run eagerly at a graph break, which fullgraph=True forbids; use "
    "lossbackends.torch's losses in a compiled graph"
)

INPLACE = (
    "inplace_backward=True is eager-only (it mutates input inside an autograd.Function, "
    "which torch.compile and torch.func cannot trace); drop it there: the default keeps a "
    "separate gradient buffer"
)


def _disabled(reason: str) -> Callable:
    """torch.compiler.disable, with ``reason`` where torch takes one (2.8 and later)."""
    if "reason" in inspect.signature(torch.compiler.disable).parameters:
        return torch.compiler.disable(reason=reason)
    return torch.compiler.disable


@_disabled(PLAIN_API)
def run(loss: Any, method: str, *args: Any, **kwargs: Any) -> Any:
    """``loss.<method>(*args, **kwargs)``, eagerly."""
    return getattr(loss, method)(*args, **kwargs)


@_disabled(INPLACE)
def refuse_inplace(name: str) -> None:
    """The error, raised when the compiled code runs: a ``raise`` that Dynamo traced sends
    the frame back to eager mode, where ``torch.compiler.is_compiling()`` is False and
    nothing would raise (fullgraph=False)."""
    raise RuntimeError(f"{name}: {INPLACE}")
