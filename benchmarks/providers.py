"""Who is measured: our backends and the peers, each as ``make(loss, op, inputs) -> call``.

A provider returns a zero-argument callable that computes ``op`` (``value``, ``grad`` or
``value_and_grad``) and returns ``(value, grad)`` (either may be ``None``), or ``None`` when
it cannot compute that loss or op. Peers appear only when their library is installed.

Each provider has a ``form``: ``"alloc"`` when the call allocates the gradient (what users
write: our default call, autograd, a function returning a new array), ``"out"`` when the
gradient goes into a buffer the caller made once (our ``out=``, a peer's in-place or
``out=`` operations). Ratios to the peers are taken like with like (``report``). On the
host, the peers are PyTorch eager (autograd, and the fused form written by hand, in both
forms: every elementwise loss and plain cross-entropy), ``torch.compile`` of the value and
gradient as expressions (both forms), and
``jax.jit(jax.value_and_grad)``; the hand-written and compiled forms are measured for
``value_and_grad`` only.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import lossbackends as lb

from . import core


@dataclass(frozen=True)
class Provider:
    name: str
    device: str  # "host" or "gpu"
    make: Callable
    ours: bool = False
    form: str = "alloc"  # "alloc": the call allocates the gradient; "out": preallocated
    peer: bool = True  # another library (not ours, not the seed): counted as a peer
    # the loss it computes when not the case's own: plain cross-entropy beside a row option
    loss: str | None = None


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# --- our backends ----------------------------------------------------------------------


def ours(backend: str, out: bool = False):
    """Our backends as users call them (the call allocates the gradient), or with the
    gradient written into a preallocated ``out`` (as the triad writes into its
    preallocated ``c``); ``value`` has no gradient, so only the first measures it."""

    def make(loss, op, inputs):
        function, options = core.loss_call(loss)
        y, p = inputs["y"], inputs["p"]
        if op == "value":
            return None if out else (lambda: (function(y, p, backend=backend, **options), None))
        if not out:
            if op == "grad":
                return lambda: (None, function.grad(y, p, backend=backend, **options))
            return lambda: function.value_and_grad(y, p, backend=backend, **options)
        buffer = p.copy()
        if op == "grad":
            return lambda: (None, function.grad(y, p, backend=backend, out=buffer, **options))
        return lambda: function.value_and_grad(y, p, backend=backend, out=buffer, **options)

    return make


def plain_cross_entropy(backend: str, out: bool = False):
    """Plain cross-entropy on the inputs of a row-option case (z-loss, softcap, multiclass
    hinge), measured in turn with the option itself, so that the option's cost over plain
    cross-entropy is a ratio of the same moments (``report.option_table``); None in the
    other cases."""
    plain = ours(backend, out)

    def make(loss, op, inputs):
        if loss not in core.ROW_LOSSES or loss == "cross_entropy":
            return None
        return plain("cross_entropy", op, inputs)

    return make


# --- the seed's NumPy code as written, with its gradients written the same way ---------


def _seed(loss, op, inputs):
    y, p = inputs["y"], inputs["p"]
    n = p.size
    if loss == "mse":
        def value():
            return np.mean((y - p) ** 2)

        def grad():
            return 2 * (p - y) / n
    elif loss == "binary_cross_entropy":
        def value():
            epsilon = 1e-15
            q = np.clip(p, epsilon, 1 - epsilon)
            return -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))

        def grad():
            epsilon = 1e-15
            q = np.clip(p, epsilon, 1 - epsilon)
            return (q - y) / (q * (1 - q)) / n
    elif loss == "hinge":
        def value():
            return np.mean(np.maximum(0, 1.0 - y * p))

        def grad():
            return np.where(1.0 - y * p > 0, -y, 0) / n
    elif loss == "cross_entropy":
        rows = np.arange(p.shape[0])

        def softmax():
            e = np.exp(p - p.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)

        def value():
            return -np.mean(np.log(softmax()[rows, y]))

        def grad():
            g = softmax()
            g[rows, y] -= 1
            return g / p.shape[0]
    else:
        return None
    if op == "value":
        return lambda: (value(), None)
    if op == "grad":
        return lambda: (None, grad())
    return lambda: (value(), grad())


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


# --- JAX: jit(value_and_grad) -------------------------------------------------------------


def _jax_losses(jax, jnp) -> dict:
    """Each loss of the suite in ``jax.numpy``, ``(y, p) -> mean``, the definitions of
    ``_torch_loss`` (the options at their defaults; the row cases as in core.ROW_CASES)."""
    softplus, logsumexp = jax.nn.softplus, jax.nn.logsumexp

    def picked(p, y):  # each row's logit of its label
        return jnp.take_along_axis(p, y[:, None], axis=-1)[:, 0]

    def cross_entropy(y, p):
        return jnp.mean(logsumexp(p, axis=-1) - picked(p, y))

    def bce(y, p):
        q = jnp.clip(p, 1e-15, 1 - 1e-15)
        return -jnp.mean(y * jnp.log(q) + (1 - y) * jnp.log(1 - q))

    def huber(y, p):  # delta = 1 (and smooth_l1 with beta = 1)
        a = jnp.abs(p - y)
        return jnp.mean(jnp.where(a <= 1, 0.5 * a * a, a - 0.5))

    def sigmoid_focal(y, p, alpha=0.25):  # torchvision's, gamma = 2
        prob = jax.nn.sigmoid(p)
        ce = (1 - y) * p + softplus(-p)
        p_t = prob * y + (1 - prob) * (1 - y)
        return jnp.mean((alpha * y + (1 - alpha) * (1 - y)) * ce * (1 - p_t) ** 2)

    def multiclass_hinge(y, p):
        others = jnp.where(jnp.arange(p.shape[1]) == y[:, None], -jnp.inf, p)
        return jnp.mean(jnp.maximum(0, 1 + others.max(axis=1) - picked(p, y)))

    return {
        "mse": lambda y, p: jnp.mean((p - y) ** 2),
        "mae": lambda y, p: jnp.mean(jnp.abs(p - y)),
        "huber": huber, "smooth_l1": huber,
        "log_cosh": lambda y, p: jnp.mean(softplus(-2 * (p - y)) + (p - y) - jnp.log(2.0)),
        "pinball": lambda y, p: jnp.mean(jnp.maximum(0.5 * (y - p), 0.5 * (p - y))),
        "poisson_nll": lambda y, p: jnp.mean(jnp.exp(p) - y * p),
        "kl_div": lambda y, p: jnp.mean(jax.scipy.special.xlogy(y, y) - y * p),
        "binary_cross_entropy": bce,
        "binary_cross_entropy_with_logits": lambda y, p: jnp.mean((1 - y) * p + softplus(-p)),
        "sigmoid_focal": sigmoid_focal,
        "hinge": lambda y, p: jnp.mean(jnp.maximum(0, 1 - y * p)),
        "squared_hinge": lambda y, p: jnp.mean(jnp.maximum(0, 1 - y * p) ** 2),
        "soft_margin": lambda y, p: jnp.mean(softplus(-y * p)),
        "cross_entropy": cross_entropy,
        "cross_entropy_z_loss": lambda y, p: (
            cross_entropy(y, p) + 1e-4 * jnp.mean(logsumexp(p, axis=-1) ** 2)),
        "cross_entropy_softcap": lambda y, p: cross_entropy(y, 30.0 * jnp.tanh(p / 30.0)),
        "multiclass_hinge": multiclass_hinge,
    }


def _jax(loss, op, inputs):
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # share the GPU
    import jax
    import jax.numpy as jnp

    value = _jax_losses(jax, jnp).get(loss)
    # float64 inputs: JAX computes them in float32 unless x64 is enabled process-wide
    # (which would change its float32 rows too), so it has no float64 row
    if value is None or np.asarray(inputs.get("p_host", inputs["p"])).dtype == np.float64:
        return None

    y = jnp.asarray(np.asarray(inputs.get("y_host", inputs["y"])))
    p = jnp.asarray(np.asarray(inputs.get("p_host", inputs["p"])))
    if op == "value":
        f = jax.jit(value)
        return lambda: (f(y, p).block_until_ready(), None)
    if op == "grad":  # the gradient alone, as our grad computes it
        g = jax.jit(jax.grad(value, argnums=1))
        return lambda: (None, g(y, p).block_until_ready())
    f = jax.jit(jax.value_and_grad(value, argnums=1))

    def call():
        v, g = f(y, p)
        g.block_until_ready()
        return v, g

    return call



def providers(device: str, quick: bool = False) -> list[Provider]:
    """Every provider that can run on ``device`` here (``quick``: torch.compile with
    dynamic shapes, one compile per loss and form)."""
    found = []
    names = lb.available_backends()
    if device == "host":
        for b in [b for b in ("numpy", "numba") if b in names]:
            found.append(Provider(b, "host", ours(b), ours=True, peer=False))
            found.append(Provider(f"{b}:out", "host", ours(b, out=True), ours=True,
                                  form="out", peer=False))
        if "numba" in names:
            found.append(Provider("numba:plain", "host", plain_cross_entropy("numba"), ours=True,
                                  peer=False, loss="cross_entropy"))
            found.append(Provider("numba:plain:out", "host",
                                  plain_cross_entropy("numba", out=True), ours=True, form="out",
                                  peer=False, loss="cross_entropy"))
        found.append(Provider("seed", "host", _seed, peer=False))
        if _installed("torch"):
            found += [Provider("torch", "host", _torch("cpu")),  # autograd
                      Provider("torch-hand", "host", torch_host("hand", False)),
                      Provider("torch-hand:out", "host", torch_host("hand", True), form="out"),
                      Provider("torch.compile", "host",
                               torch_host("compile", False, dynamic=quick)),
                      Provider("torch.compile:out", "host",
                               torch_host("compile", True, dynamic=quick), form="out")]
        if _installed("jax"):
            found.append(Provider("jax", "host", _jax))
    else:
        if "cupy" in names:
            found.append(Provider("cupy", "gpu", ours("cupy", out=True), ours=True, form="out",
                                  peer=False))
        if _installed("torch"):
            import torch

            if torch.cuda.is_available():
                found.append(Provider("torch", "gpu", _torch("cuda")))
                found.append(Provider("torch.compile", "gpu", _torch("compile")))
                if _installed("liger_kernel"):
                    found.append(Provider("liger", "gpu", _torch("liger")))
    return found
