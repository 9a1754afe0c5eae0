"""What a new process pays before its first result (the start-up bars of
the host issue, docs/guide/performance.md): ``import lossbackends`` after NumPy (under 50 ms, importing no backend's
library), and the first call, Numba's on-disk cache (or CuPy's kernel cache) warm (under
0.5 s). Each sample is a fresh interpreter, timed by itself; one process before the samples
fills the caches, as a user's first run does."""

from __future__ import annotations

import json
import subprocess
import sys

from . import core

# (the libraries the contract forbids ``import lossbackends`` to load)
BACKEND_LIBRARIES = ("numba", "cupy", "torch", "jax", "dask")

_IMPORT = f"""
import json, sys, time
import numpy
start = time.perf_counter()
import lossbackends
seconds = time.perf_counter() - start
print(json.dumps([seconds, [m for m in {BACKEND_LIBRARIES!r} if m in sys.modules]]))
"""

# the first call of each kind a training script makes: an elementwise loss and
# cross-entropy, value and gradient, on arrays of the device's own library
_FIRST_CALL = """
import json, sys, time
if {hide_scipy!r}:  # as on a machine without SciPy
    sys.modules["scipy"] = None
import numpy as np
import lossbackends as lb
xp = np
if {device!r} == "gpu":
    import cupy as xp
    xp.zeros(1).sum().item()  # (the CUDA context is the process's, not the first call's)
rng = np.random.default_rng(0)
y, p = (xp.asarray(rng.random(1000, dtype=np.float32)) for _ in range(2))
labels = xp.asarray(rng.integers(0, 10, 64))
logits = xp.asarray(rng.standard_normal((64, 10), dtype=np.float32))
start = time.perf_counter()
lb.mse.value_and_grad(y, p, backend={backend!r})
lb.cross_entropy.value_and_grad(labels, logits, backend={backend!r})[0].item()
print(json.dumps([time.perf_counter() - start, "scipy" in sys.modules]))
"""


def _fresh(code: str) -> list:
    """What ``code``, run in a fresh interpreter, printed last (as JSON)."""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    try:
        if run.returncode:
            raise ValueError
        return json.loads(run.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):  # (the child's own error, or no JSON line)
        raise RuntimeError(f"a start-up sample's process failed (exit {run.returncode}); "
                           f"its output:\n{run.stdout[-1000:]}\n{run.stderr[-3000:]}") from None


def rows(device: str, backend: str, roofline: float, samples: int = 7) -> list[dict]:
    """Rows ``import`` (backend ``lossbackends``; ``loaded``: backend libraries the import
    loaded, which should be none) and ``first_call`` (on ``backend``; ``loaded``: "scipy"
    where the call imported SciPy), seconds per fresh process, ``samples`` of each,
    the processes of the two in turn. Where the first call imports SciPy (Numba's BLAS
    check does, whatever the kernel: 0.2-0.5 s on the development host), also
    ``first_call_without_scipy``, SciPy hidden from that process."""
    first = [_FIRST_CALL.format(device=device, backend=backend, hide_scipy=hide)
             for hide in (False, True)]
    _fresh(first[0])  # fills the on-disk caches, as the first run of a user's script does
    imports, calls, hidden = [], [], []
    for _ in range(samples):
        imports.append(_fresh(_IMPORT))
        calls.append(_fresh(first[0]))
        if calls[0][1]:
            hidden.append(_fresh(first[1]))
    loaded = sorted({m for _, modules in imports for m in modules})
    out = [core.row("startup", "import", "lossbackends", "float32", (0,),
                    [s for s, _ in imports], 0, roofline, device=device, loaded=" ".join(loaded)),
           core.row("startup", "first_call", backend, "float32", (1000,), [s for s, _ in calls],
                    0, roofline, device=device, loaded="scipy" if calls[0][1] else "")]
    if hidden:
        out.append(core.row("startup", "first_call_without_scipy", backend, "float32", (1000,),
                            [s for s, _ in hidden], 0, roofline, device=device, loaded=""))
    return out


def lines(rows_: list[dict]) -> list[str]:
    """The start-up rows in words, for the summaries."""
    out = []
    for r in rows_:
        if r["op"] == "import":
            loaded = r.get("loaded") or "none"
            out.append(f"import lossbackends after NumPy, fresh process: "
                       f"{1e3 * float(r['seconds_median']):.1f} ms (median); backend "
                       f"libraries it loaded: {loaded}")
        elif r["op"] == "first_call":
            scipy = " (Numba imported SciPy)" if r.get("loaded") == "scipy" else ""
            out.append(f"first calls in a fresh process ({r['backend']}, caches warm; MSE at "
                       f"n = 1000 and cross-entropy 64 x 10, value_and_grad): "
                       f"{float(r['seconds_median']):.2f} s (median){scipy}")
        elif r["op"] == "first_call_without_scipy":
            out.append(f"the same, SciPy hidden: {float(r['seconds_median']):.2f} s (median)")
    return out
