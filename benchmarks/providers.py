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
``value_and_grad`` only. The PyTorch peers are written in ``providers_torch``.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import lossbackends as lb

from . import core
from .providers_torch import _torch, torch_host


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


# --- JAX: jit(value_and_grad) -------------------------------------------------------------


def _jax_losses(jax, jnp) -> dict:
    """Each loss of the suite in ``jax.numpy``, ``(y, p) -> mean``, the definitions of
    ``providers_torch._torch_loss`` (the options at their defaults; the row cases as in
    core.ROW_CASES)."""
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
