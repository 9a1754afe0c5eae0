"""The PyTorch peers of the suite, as ``providers`` lists them: eager PyTorch (autograd:
forward, then backward), ``torch.compile`` and Liger-Kernel on a GPU (``_torch``), and on
the host the value and gradient written by hand, eager (``torch-hand``) and compiled
(``torch.compile``), in both forms (``torch_host``). Each is a ``make(loss, op, inputs) ->
call`` as ``providers``' docstring says.
"""

from __future__ import annotations

import math

from . import core

# --- PyTorch eager (forward, then backward), torch.compile, Liger-Kernel -----------------


def _torch_loss(torch, loss):
    F = torch.nn.functional
    return {
        "mse": F.mse_loss,
        "binary_cross_entropy": F.binary_cross_entropy,
        "binary_cross_entropy_with_logits": F.binary_cross_entropy_with_logits,
        "hinge": lambda p, y: torch.clamp(1 - y * p, min=0).mean(),
        "cross_entropy": F.cross_entropy,
        "mae": F.l1_loss,
        "huber": F.huber_loss,
        "smooth_l1": F.smooth_l1_loss,
        "soft_margin": F.soft_margin_loss,
        "poisson_nll": F.poisson_nll_loss,
        # ours divides by the element count, as torch's "mean" (which warns that it will
        # become "batchmean"): the sum over the count says the same without the warning
        "kl_div": lambda p, y: F.kl_div(p, y, reduction="sum") / p.numel(),
        # torch has no function of these: written from torch operations, as hinge
        "log_cosh": lambda p, y: (F.softplus(-2 * (p - y)) + (p - y) - math.log(2)).mean(),
        "squared_hinge": lambda p, y: torch.clamp(1 - y * p, min=0).square().mean(),
        "pinball": lambda p, y: torch.maximum(0.5 * (y - p), 0.5 * (p - y)).mean(),
        "sigmoid_focal": lambda p, y: _torch_focal(torch, p, y),
        # the row cases (benchmarks.core.ROW_CASES) as their definitions in torch operations:
        # Liger-Kernel's z-loss, Gemma 2's soft-capping, and Crammer-Singer's hinge
        # (F.multi_margin_loss is Weston-Watkins': a sum over the other classes, not a max)
        "cross_entropy_z_loss": lambda x, y: (
            F.cross_entropy(x, y) + 1e-4 * torch.logsumexp(x, dim=-1).square().mean()),
        "cross_entropy_softcap": lambda x, y: F.cross_entropy(30.0 * torch.tanh(x / 30.0), y),
        "multiclass_hinge": lambda x, y: torch.clamp(
            1 + x.scatter(1, y[:, None], -math.inf).amax(dim=1)
            - x.gather(1, y[:, None])[:, 0], min=0).mean(),
    }.get(loss)


def _torch_focal(torch, x, y, alpha=0.25, gamma=2.0):
    """torchvision's sigmoid_focal_loss (mean), from torch operations."""
    p = torch.sigmoid(x)
    ce = torch.nn.functional.binary_cross_entropy_with_logits(x, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    return ((alpha * y + (1 - alpha) * (1 - y)) * ce * (1 - p_t) ** gamma).mean()


def _torch(mode: str):
    def make(loss, op, inputs):
        import torch

        device = "cuda" if mode != "cpu" else "cpu"
        y = torch.as_tensor(inputs["y"], device=device)
        x = torch.as_tensor(inputs["p"], device=device).clone()
        if mode == "liger":
            if loss != "cross_entropy":
                return None
            from liger_kernel.transformers import LigerCrossEntropyLoss

            # (it writes the gradient into the logits, by design: from the second call on
            # it reads the last gradient, at the same cost: no path depends on the values)

            function = LigerCrossEntropyLoss()
        else:
            function = _torch_loss(torch, loss)
            if function is None:
                return None
            if mode == "compile":
                # compiling costs seconds per shape: only where the performance notes
                # compare it (MSE at 1e8 and more, cross-entropy)
                if loss not in core.ROW_LOSSES and (loss != "mse" or inputs["p"].size < 10**8):
                    return None
                _room_for_compiles(torch)
                function = torch.compile(function, dynamic=False)
        if op == "value":
            def value():
                with torch.no_grad():
                    return function(x, y), None
            return value
        x.requires_grad_(True)

        def step():
            x.grad = None
            result = function(x, y)
            result.backward()
            return result, x.grad

        return step

    return make


# --- PyTorch on the host, written by hand: value and gradient without autograd ---------


def _hand_eager(torch, loss):
    """``f(x, y, g) -> (value, g)``: the value and the gradient of the mean reduction with
    the fewest passes eager PyTorch allows, the gradient written into ``g`` (in-place and
    ``out=`` operations; temporaries only where PyTorch has no fused form)."""
    F = torch.nn.functional

    def mse(x, y, g):
        n = x.numel()
        torch.sub(x, y, out=g)
        value = g.square().sum() / n  # (torch.dot sums in float32: 3e-3 off at 1e8)
        return value, g.mul_(2.0 / n)

    def bce(x, y, g):
        n = x.numel()
        q = x.clamp(1e-7, 1 - 1e-7)  # float32's eps, as ours clips
        value = F.binary_cross_entropy(q, y)
        torch.sub(q, y, out=g)
        return value, g.div_(q.mul_(1 - q)).mul_(1.0 / n)

    def bce_logits(x, y, g):
        n = x.numel()
        value = F.binary_cross_entropy_with_logits(x, y)
        torch.sigmoid(x, out=g)
        return value, g.sub_(y).mul_(1.0 / n)

    def hinge(x, y, g):
        n = x.numel()
        margin = torch.mul(y, x).neg_().add_(1).clamp_(min=0)
        value = margin.mean()
        torch.mul(y, margin > 0, out=g)
        return value, g.mul_(-1.0 / n)

    def cross_entropy(x, y, g):
        rows, at = x.shape[0], torch.arange(x.shape[0])
        torch.ops.aten._log_softmax.out(x, 1, False, out=g)  # one read of x, into g
        value = -g[at, y].mean()
        g.exp_()  # the softmax, in place: no temporary of the logits' size
        g[at, y] -= 1
        return value, g.mul_(1.0 / rows)

    # the catalogue's losses at their default options (core.host_inputs' labels)
    def absolute_error(weight):  # mae (1) and pinball at quantile 0.5 (half of it)
        def loss(x, y, g):
            n = x.numel()
            torch.sub(x, y, out=g)
            # (torch's sum is accurate in float32; torch.dot and vector_norm were 1e-3 to
            # 0.17 off at 1e8, and failed the suite's check)
            value = g.abs().sum() * (weight / n)
            return value, g.sign_().mul_(weight / n)
        return loss

    def clipped_error(forward):  # huber (delta = 1) and smooth_l1 (beta = 1)
        def loss(x, y, g):
            n = x.numel()
            value = forward(x, y)  # torch's one-pass forward
            torch.sub(x, y, out=g)
            return value, g.clamp_(-1.0, 1.0).mul_(1.0 / n)
        return loss

    def log_cosh(x, y, g):
        n = x.numel()
        torch.sub(x, y, out=g)
        value = (F.softplus(-2.0 * g) + g).mean() - math.log(2.0)
        return value, g.tanh_().mul_(1.0 / n)

    def squared_hinge(x, y, g):  # margin 1, labels -1 and 1
        n = x.numel()
        torch.mul(y, x, out=g).neg_().add_(1.0).clamp_(min=0.0)
        value = g.square().sum() / n
        return value, g.mul_(y).mul_(-2.0 / n)

    def soft_margin(x, y, g):
        n = x.numel()
        value = F.soft_margin_loss(x, y)
        torch.mul(y, x, out=g).neg_().sigmoid_()
        return value, g.mul_(y).mul_(-1.0 / n)

    def sigmoid_focal(x, y, g, alpha=0.25):  # gamma = 2
        # d/dx of a_t ce (1 - p_t)^2 = a_t (1 - p_t) ((p - y)(1 - p_t)
        #                                            - 2 ce p (1 - p) (2 y - 1))
        n = x.numel()
        p = torch.sigmoid(x)
        ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
        q = 1 - (p * y + (1 - p) * (1 - y))  # 1 - p_t
        a = alpha * y + (1 - alpha) * (1 - y)
        value = (a * ce).mul_(q).mul_(q).sum() / n
        torch.sub(p, y, out=g).mul_(q)
        g.sub_(2 * ce * p * (1 - p) * (2 * y - 1))
        return value, g.mul_(q).mul_(a).mul_(1.0 / n)

    def poisson_nll(x, y, g):  # log_input, full=False
        n = x.numel()
        torch.exp(x, out=g)
        value = (g - y * x).sum() / n
        return value, g.sub_(y).mul_(1.0 / n)

    def kl_div(x, y, g):  # y probabilities, x log-probabilities; the mean over elements
        n = x.numel()
        value = torch.special.xlogy(y, y).sub_(y * x).sum() / n
        return value, torch.mul(y, -1.0 / n, out=g)

    return {"mse": mse, "binary_cross_entropy": bce,
            "binary_cross_entropy_with_logits": bce_logits, "hinge": hinge,
            "cross_entropy": cross_entropy, "mae": absolute_error(1.0),
            "huber": clipped_error(F.huber_loss), "smooth_l1": clipped_error(F.smooth_l1_loss),
            "log_cosh": log_cosh, "squared_hinge": squared_hinge,
            "soft_margin": soft_margin, "sigmoid_focal": sigmoid_focal,
            "poisson_nll": poisson_nll, "kl_div": kl_div,
            "pinball": absolute_error(0.5)}.get(loss)  # None: no hand-written form (the row options)


def _hand_pure(torch, loss):
    """``f(x, y) -> (value, grad)`` as expressions, for ``torch.compile`` to fuse."""
    F = torch.nn.functional

    def mse(x, y):
        d = x - y
        return (d * d).mean(), d * (2.0 / x.numel())

    def bce(x, y):
        q = x.clamp(1e-7, 1 - 1e-7)
        value = -(y * torch.log(q) + (1 - y) * torch.log(1 - q)).mean()
        return value, (q - y) / (q * (1 - q)) / x.numel()

    def bce_logits(x, y):
        return (F.binary_cross_entropy_with_logits(x, y),
                (torch.sigmoid(x) - y) / x.numel())

    def hinge(x, y):
        margin = 1 - y * x
        return margin.clamp(min=0).mean(), torch.where(margin > 0, -y, 0.0) / x.numel()

    def cross_entropy(x, y):
        rows, classes = x.shape
        lse = torch.logsumexp(x, 1, keepdim=True)
        value = (lse[:, 0] - x.gather(1, y[:, None])[:, 0]).mean()
        onehot = (torch.arange(classes, device=x.device)[None, :] == y[:, None]).to(x.dtype)
        return value, (torch.exp(x - lse) - onehot) / rows

    def _onehot(x, y):
        classes = x.shape[1]
        return (torch.arange(classes, device=x.device)[None, :] == y[:, None]).to(x.dtype)

    def cross_entropy_z_loss(x, y, z=1e-4):  # the row cases of benchmarks.core.ROW_CASES
        lse = torch.logsumexp(x, 1, keepdim=True)
        value = (lse[:, 0] - x.gather(1, y[:, None])[:, 0]).mean() + z * lse.square().mean()
        return value, (torch.exp(x - lse) * (1 + 2 * z * lse) - _onehot(x, y)) / x.shape[0]

    def cross_entropy_softcap(x, y, cap=30.0):
        t = torch.tanh(x / cap)
        value, grad = cross_entropy(cap * t, y)
        return value, grad * (1 - t * t)

    def multiclass_hinge(x, y):
        best, first = x.scatter(1, y[:, None], -math.inf).max(dim=1)  # the first at ties
        slack = 1 + best - x.gather(1, y[:, None])[:, 0]
        active = (slack > 0).to(x.dtype)[:, None] / x.shape[0]
        return (slack.clamp(min=0).mean(),
                (_onehot(x, first) - _onehot(x, y)) * active)

    written = {"mse": mse, "binary_cross_entropy": bce,
               "binary_cross_entropy_with_logits": bce_logits, "hinge": hinge,
               "cross_entropy": cross_entropy, "cross_entropy_z_loss": cross_entropy_z_loss,
               "cross_entropy_softcap": cross_entropy_softcap,
               "multiclass_hinge": multiclass_hinge}.get(loss)
    return written or _derived_pure(torch, loss)


def _derived_pure(torch, loss):
    """The value and gradient of ``_torch_loss`` by ``torch.func.grad_and_value``, with no
    autograd tape: what ``torch.compile`` fuses for the losses without a hand-written form
    (Dynamo traces the transform; the gradient comes out as one expression)."""
    function = _torch_loss(torch, loss)
    if function is None:
        return None
    grad_and_value = torch.func.grad_and_value(function)

    def pure(x, y):
        grad, value = grad_and_value(x, y)
        return value, grad

    return pure


_COMPILED: dict = {}


def _room_for_compiles(torch) -> None:
    """Dynamo keeps its compiled variants per code object (``pure_out`` is one for every
    loss, ``F.cross_entropy`` one for every shape) and falls back to eager past 8 of them,
    silently: room for every loss, shape and grad mode of a run."""
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), 256))


def _compiled(torch, loss, out, backend, dynamic):
    """One compiled function per (loss, form), kept for the whole run. ``dynamic=False``
    (the full run): code specialised to each shape, what a training loop of fixed shapes
    gets, at one compile per shape (a few seconds each, tens the first time in a fresh
    environment); ``dynamic=True`` (``--quick``): one compile per loss and form for every
    size, which bounds the quick run's compile time (its code measured 5-10 % slower than
    the specialised one on MSE at 1e7)."""
    key = (loss, out, backend, dynamic)
    if key not in _COMPILED:
        _room_for_compiles(torch)
        pure = _hand_pure(torch, loss)
        if out:
            def pure_out(x, y, g):
                value, grad = pure(x, y)
                g.copy_(grad)  # inductor writes the fused result straight into g
                return value, g

            function = pure_out
        else:
            function = pure
        _COMPILED[key] = torch.compile(function, backend=backend, dynamic=dynamic)
    return _COMPILED[key]


def torch_host(kind: str, out: bool, *, dynamic: bool = False, compile_backend: str = "inductor"):
    """PyTorch CPU peers for ``value_and_grad``: ``kind`` ``"hand"`` (eager, written by
    hand) or ``"compile"`` (``torch.compile`` of the hand-written expressions)."""

    def make(loss, op, inputs):
        if op != "value_and_grad":
            return None
        import torch

        if _hand_pure(torch, loss) is None:  # torch has no form of this loss
            return None
        y = torch.as_tensor(inputs["y"])
        x = torch.as_tensor(inputs["p"]).clone()
        if kind == "hand":
            function = _hand_eager(torch, loss)
            if function is None:  # written for torch.compile only (the row cases)
                return None
            if out:
                g = torch.empty_like(x)
                return lambda: function(x, y, g)
            return lambda: function(x, y, torch.empty_like(x))
        function = _compiled(torch, loss, out, compile_backend, dynamic)
        if out:
            g = torch.empty_like(x)
            return lambda: function(x, y, g)
        return lambda: function(x, y)

    return make
