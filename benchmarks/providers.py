"""Who is measured: our backends and the peers, each as ``make(loss, op, inputs) -> call``.

A provider returns a zero-argument callable that computes ``op`` (``value``, ``grad`` or
``value_and_grad``) and returns ``(value, grad)`` (either may be ``None``), or ``None`` when
it cannot compute that loss or op. Peers appear only when their library is installed.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import lossbackends as lb


@dataclass(frozen=True)
class Provider:
    name: str
    device: str  # "host" or "gpu"
    make: Callable
    ours: bool = False


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# --- our backends ----------------------------------------------------------------------


def ours(backend: str):
    """Our backends, writing the gradient into a preallocated ``out`` (as the triad writes
    into its preallocated ``c``): fresh memory would add the OS's page zeroing."""

    def make(loss, op, inputs):
        function = getattr(lb, loss)
        y, p = inputs["y"], inputs["p"]
        out = p.copy() if op != "value" else None
        if op == "value":
            return lambda: (function(y, p, backend=backend), None)
        if op == "grad":
            return lambda: (None, function.grad(y, p, backend=backend, out=out))
        return lambda: function.value_and_grad(y, p, backend=backend, out=out)

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
    }[loss]


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

            function = LigerCrossEntropyLoss()
        else:
            function = _torch_loss(torch, loss)
            if mode == "compile":
                # compiling costs seconds per shape: only where the performance notes
                # compare it (MSE at 1e8 and more, cross-entropy)
                if loss != "cross_entropy" and (loss != "mse" or inputs["p"].size < 10**8):
                    return None
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


# --- JAX: jit(value_and_grad) -------------------------------------------------------------


def _jax(loss, op, inputs):
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # share the GPU
    import jax
    import jax.numpy as jnp

    def value(y, p):
        if loss == "mse":
            return jnp.mean((p - y) ** 2)
        if loss == "hinge":
            return jnp.mean(jnp.maximum(0, 1 - y * p))
        if loss == "binary_cross_entropy_with_logits":
            return jnp.mean((1 - y) * p + jnp.logaddexp(0, -p))
        if loss == "cross_entropy":
            lse = jax.nn.logsumexp(p, axis=-1)
            return jnp.mean(lse - jnp.take_along_axis(p, y[:, None], axis=-1)[:, 0])
        e = 1e-15
        q = jnp.clip(p, e, 1 - e)
        return -jnp.mean(y * jnp.log(q) + (1 - y) * jnp.log(1 - q))

    y, p = jnp.asarray(np.asarray(inputs["y_host"])), jnp.asarray(np.asarray(inputs["p_host"]))
    if op == "value":
        f = jax.jit(value)
        return lambda: (f(y, p).block_until_ready(), None)
    f = jax.jit(jax.value_and_grad(value, argnums=1))

    def call():
        v, g = f(y, p)
        g.block_until_ready()
        return v, (None if op == "value" else g)

    return call


def providers(device: str) -> list[Provider]:
    """Every provider that can run on ``device`` here."""
    found = []
    names = lb.available_backends()
    if device == "host":
        found += [Provider(b, "host", ours(b), ours=True) for b in ("numpy", "numba") if b in names]
        found.append(Provider("seed", "host", _seed))
        if _installed("torch"):
            found.append(Provider("torch", "host", _torch("cpu")))
        if _installed("jax"):
            found.append(Provider("jax", "host", _jax))
    else:
        if "cupy" in names:
            found.append(Provider("cupy", "gpu", ours("cupy"), ours=True))
        if _installed("torch"):
            import torch

            if torch.cuda.is_available():
                found.append(Provider("torch", "gpu", _torch("cuda")))
                found.append(Provider("torch.compile", "gpu", _torch("compile")))
                if _installed("liger_kernel"):
                    found.append(Provider("liger", "gpu", _torch("liger")))
    return found
