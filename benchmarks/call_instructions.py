"""Instructions per small call, counted by Valgrind's callgrind: a measure of the per-call
path that a busy host does not move (the suite's times of the same calls varied 3.3-6 us
between runs on the shared 2-core machines; these counts vary by about 50 in 20000).

    python -m benchmarks.call_instructions [--calls 4000]

Prints the user-space instructions of one call at n = 1000 (MSE ``value_and_grad``,
float32): the default call and ``out=`` on the Numba backend, the NumPy backend's call and
its registered kernel called directly (their difference: the dispatch layer, as the
suite's ``dispatch_overhead`` row measures it in time), and ``np.empty`` of the gradient.
Each count is over ``--calls`` calls less as many calls of an empty function. Needs
``valgrind`` (``callgrind_control`` on the PATH); about a minute.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _calls() -> dict:
    import numpy as np

    import lossbackends as lb
    from lossbackends.backends import numpy_backend

    rng = np.random.default_rng(0)
    y, p = rng.random(1000, dtype=np.float32), rng.random(1000, dtype=np.float32)
    g = np.empty_like(p)
    f = lb.mse.value_and_grad
    return {
        "nothing": lambda: None,
        "numba": lambda: f(y, p, backend="numba"),
        "numba:out": lambda: f(y, p, out=g, backend="numba"),
        "numpy": lambda: f(y, p, backend="numpy"),
        "numpy kernel": lambda: numpy_backend.mse(y, p, None, (), "mean", 1e-3,
                                                  np.empty_like(p), True),
        "np.empty": lambda: np.empty(p.shape, p.dtype),
    }


def _child(folder: Path, count: int) -> None:
    """Run each call ``count`` times once the parent has turned counting on, asking for a
    dump of the counts after each (a file the parent removes once it has dumped)."""
    calls = _calls()
    for call in calls.values():  # compiled, cached and warm first
        for _ in range(50):
            call()
    (folder / "ready").touch()
    while not (folder / "go").exists():
        time.sleep(0.005)
    request = folder / "dump"
    for call in calls.values():
        for _ in range(count):
            call()
        request.touch()
        while request.exists():
            time.sleep(0.005)


def measure(count: int) -> dict[str, float]:
    """Instructions per call of each of ``_calls()``, less an empty function's."""
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        out = folder / "callgrind.out"
        process = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--smc-check=all-non-file",
             f"--callgrind-out-file={out}", sys.executable, "-m", "benchmarks.call_instructions",
             "--child", name, "--calls", str(count)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        control = ["callgrind_control"]
        while not (folder / "ready").exists():
            if process.poll() is not None:
                raise RuntimeError("the measured process ended before it was ready")
            time.sleep(0.2)
        subprocess.run([*control, "-i", "on", str(process.pid)], capture_output=True, check=True)
        (folder / "go").touch()
        names = list(_calls())
        for _ in names:
            while not (folder / "dump").exists():
                time.sleep(0.05)
            subprocess.run([*control, "-d", str(process.pid)], capture_output=True, check=True)
            subprocess.run([*control, "-z", str(process.pid)], capture_output=True, check=True)
            (folder / "dump").unlink()
        process.wait()
        parts = sorted(folder.glob("callgrind.out.*"), key=lambda f: int(f.suffix[1:]))
        totals = []
        for part in parts[: len(names)]:
            summary = next(line for line in part.read_text().splitlines()
                           if line.startswith("summary:"))
            totals.append(int(summary.split()[1]) / count)
    per_call = dict(zip(names, totals, strict=True))
    empty = per_call.pop("nothing")
    return {name: value - empty for name, value in per_call.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(Path(args.child), args.calls)
        return
    os.environ.setdefault("PYTHONHASHSEED", "0")  # the same dict layouts run to run
    counts = measure(args.calls)
    for name, value in counts.items():
        print(f"{name:14s} {value:8.0f} instructions per call")
    print(f"{'dispatch':14s} {counts['numpy'] - counts['numpy kernel']:8.0f} instructions per "
          "call (NumPy call less its kernel called directly)")


if __name__ == "__main__":
    main()
