"""Rows for ``lossbackends.torch``: the loss's forward and backward in a training step,
through our custom op, against ``torch.nn.functional`` eager and ``torch.compile`` of the
same step, measured in turn in the same run (``python -m benchmarks --torch-module``).

Each step is ``x.grad = None; loss = f(x, target); loss.backward()``, its value and
gradient checked against the float64 reference before it is timed. Rows have
``op="torch_step"`` and the backend ``lossbackends.torch``, ``torch-eager`` or
``torch-compile``; ``dtype`` float32.
"""

from __future__ import annotations

import numpy as np

from . import core

LOSSES = {"cross_entropy": "cross_entropy", "mse": "mse_loss"}  # ours -> torch's name
# (the smallest: a step where the loss's own work is a few microseconds, so the rows show
# what our wrapper costs beside torch's autograd)
SHAPES = {
    "full": {"cross_entropy": [(64, 10), (4096, 1000), (1024, 32000)],
             "mse": [(1000,), (10**6,), (10**7,)]},
    "quick": {"cross_entropy": [(64, 10), (4096, 1000)], "mse": [(1000,), (10**6,)]},
    "smoke": {"cross_entropy": [(64, 10)], "mse": [(1000,)]},
}


def _steps(torch, loss: str, inputs: dict, device: str) -> dict:
    import lossbackends.torch as lbt

    where = "cuda" if device == "gpu" else "cpu"
    target = torch.as_tensor(np.asarray(inputs["y"]), device=where)
    x = torch.as_tensor(np.asarray(inputs["p"]), device=where).clone().requires_grad_(True)
    name = LOSSES[loss]
    ours, theirs = getattr(lbt, name), getattr(torch.nn.functional, name)
    compiled = torch.compile(theirs, dynamic=False)

    def step_of(function):
        def step():
            x.grad = None
            value = function(x, target)
            value.backward()
            return value, x.grad

        return step

    return {"lossbackends.torch": step_of(ours), "torch-eager": step_of(theirs),
            "torch-compile": step_of(compiled)}


def rows(device: str, roofline: float, size: str = "full") -> list[dict]:
    """The training-step rows; ``roofline``: the GPU run's copy bandwidth (host rows take
    the triad in turn with their steps)."""
    import torch

    out = []
    for loss, shapes in SHAPES[size].items():
        for shape in shapes:
            inputs = core.host_inputs(loss, shape, "float32")
            expected = core.reference(loss, "value_and_grad", inputs)
            steps = _steps(torch, loss, inputs, device)
            errors = {name: core.check(step(), expected, "float32") for name, step in steps.items()}
            nbytes = core.minimum_bytes(loss, "value_and_grad", shape, 4)
            if device == "gpu":  # the run's copy bandwidth
                times, local = [core.time_gpu(step) for step in steps.values()], roofline
            else:  # the triad taken in turn with the steps
                times, local = core.time_host_with_triad(list(steps.values()), nbytes)
            out += [core.row(loss, "torch_step", name, "float32", shape, samples, nbytes,
                             local, device=device, max_rel_error=errors[name],
                             roofline_gbps=local)
                    for name, samples in zip(steps, times, strict=True)]
    return out
