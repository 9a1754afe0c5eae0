"""``python -m lossbackends``: which backends run here, what ``auto`` picks and why, and
the seed's examples on each available backend as a self-check."""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
import warnings

import numpy as np

import lossbackends as lb

from . import _dispatch

SEED_EXAMPLES = [  # (drop-in, loss, y_true, y_pred, the seed's printed result)
    ("mse_loss", "mse", [3, -0.5, 2, 7], [2.5, 0.0, 2, 8], 0.375),
    ("binary_cross_entropy_loss", "binary_cross_entropy", [0, 1, 1, 0], [0.1, 0.8, 0.9, 0.2],
     0.164252033486018),
    ("hinge_loss", "hinge", [-1, 1, 1, -1], [-1.5, 1.2, 0.9, -0.8], 0.075),
]
# the name column of the self-check's rows: the longest loss or drop-in name
NAME_WIDTH = max(len(name) for example in SEED_EXAMPLES for name in example[:2])


def _describe(name: str) -> tuple[bool, str]:
    """(runs here, a line about it)."""
    if name == "numpy":
        return True, f"NumPy {np.__version__}"
    try:
        module = _dispatch.load_backend(name)
    except ValueError as exc:
        return False, str(exc)
    if name == "numba":
        import numba

        return True, f"Numba {numba.__version__} ({numba.config.NUMBA_NUM_THREADS} threads)"
    import cupy

    count = module.device_count()
    if count == 0:
        return False, f"CuPy {cupy.__version__} is installed but sees no CUDA GPU"
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.runtime.getDevice())
    return True, f"CuPy {cupy.__version__} on {props['name'].decode()} ({count} GPU(s))"


def main(argv: list[str] | None = None) -> int:
    # no options: --help says what it does, anything else is refused (not ignored)
    argparse.ArgumentParser(prog="python -m lossbackends", description=__doc__).parse_args(argv)
    print(f"lossbackends {lb.__version__} (Python {platform.python_version()}, "
          f"{platform.machine()})")
    runnable = []
    for name in _dispatch.BACKEND_NAMES:
        ok, line = _describe(name)
        print(f"  {name:6s} {'yes' if ok else 'no ':3s}  {line}")
        if ok:
            runnable.append(name)
    with warnings.catch_warnings():  # (a Numba that cannot run: its row above says why)
        warnings.simplefilter("ignore", RuntimeWarning)
        host = _dispatch.auto_host_backend()
    why = ("Numba is installed" if host == "numba"
           else "Numba is installed but cannot run: its row above says why"
           if importlib.util.find_spec("numba") is not None
           else "Numba is not installed (pip install 'lossbackends[numba]')")
    failures = 0
    try:
        choice = lb.get_backend()
    except ValueError as exc:  # an unknown LOSSBACKENDS_BACKEND: every plain call raises it
        print(f"calls without backend= fail here: {exc}")
        choice = None
        failures += 1
    if choice == "auto":
        # name CuPy arrays only where CuPy runs; elsewhere its row above says why not
        gpu = " and 'cupy' for CuPy arrays" if "cupy" in runnable else ""
        print(f"auto picks {host!r} for host arrays ({why}){gpu}")
    elif choice is not None:
        print(f"auto picks nothing: {choice!r} is chosen "
              f"(use_backend or LOSSBACKENDS_BACKEND={choice})")
        if choice == "cupy" or choice not in runnable:
            where = "on host arrays" if choice == "cupy" else "here"
            print(f"  calls without backend= fail {where}: {choice!r} cannot run them")

    for name in runnable:
        xp = np
        if name == "cupy":
            import cupy as xp
        for _, loss, y, p, expected in SEED_EXAMPLES:
            value = float(getattr(lb, loss)(xp.asarray(y), xp.asarray(p), backend=name))
            ok = abs(value - expected) < 1e-12
            failures += not ok
            print(f"  {name:6s} {loss:{NAME_WIDTH}s} {value:.15g} {'ok' if ok else f'EXPECTED {expected}'}")
    for drop_in, _, y, p, expected in SEED_EXAMPLES:
        value = float(getattr(lb, drop_in)(np.asarray(y), np.asarray(p)))
        ok = abs(value - expected) < 1e-15
        failures += not ok
        print(f"  seed   {drop_in:{NAME_WIDTH}s} {value!r} {'ok' if ok else f'EXPECTED {expected}'}")
    print("self-check passed" if not failures else f"self-check FAILED ({failures})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
