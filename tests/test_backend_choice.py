"""Choosing the backend: the argument, ``use_backend`` blocks (per thread, per asyncio
task), ``LOSSBACKENDS_BACKEND``, what ``import lossbackends`` loads, Numba's cache and an
installed Numba that cannot run, ``python -m lossbackends``'s self-check, and results
the same from every thread and every call."""

from __future__ import annotations

import asyncio
import importlib
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import host, on

import lossbackends as lb

ROOT = Path(__file__).resolve().parents[1]


def test_import_loads_neither_numba_nor_cupy():
    code = ("import sys, lossbackends, numpy as np; lossbackends.mse(np.ones(3), np.ones(3), "
            "backend='numpy'); print(sorted(m for m in ('numba', 'cupy', 'torch', 'jax', 'dask') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT, env={**os.environ, "LOSSBACKENDS_BACKEND": ""})
    assert out.stdout.strip() == "[]"


def _run_env(value, code):
    env = {k: v for k, v in os.environ.items() if k != "LOSSBACKENDS_BACKEND"}
    if value is not None:
        env["LOSSBACKENDS_BACKEND"] = value
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env=env)


def test_unavailable_backend_names_the_extra():
    code = ("import sys; sys.modules['cupy'] = None; import lossbackends as lb, numpy as np\n"
            "try:\n    lb.mse(np.ones(2), np.ones(2), backend='cupy')\n"
            "except ValueError as e: print(e)")
    out = _run_env(None, code).stdout
    assert "cannot run on host" in out
    code = ("import sys; sys.modules['numba'] = None; import lossbackends as lb, numpy as np\n"
            "try:\n    lb.mse(np.ones(2), np.ones(2), backend='numba')\n"
            "except ValueError as e: print(e)")
    out = _run_env(None, code).stdout
    assert "backend 'numba' is not available here" in out
    assert "pip install 'lossbackends[numba]'" in out


def test_environment_variable():
    code = "import lossbackends as lb; print(lb.get_backend())"
    assert _run_env(None, code).stdout.strip() == "auto"
    assert _run_env("numpy", code).stdout.strip() == "numpy"
    assert _run_env("NumPy ", code).stdout.strip() == "numpy"
    bad = _run_env("tensorflow", "import lossbackends as lb, numpy as np; lb.mse(np.ones(2), np.ones(2))")
    assert bad.returncode != 0
    assert "unknown LOSSBACKENDS_BACKEND='tensorflow'" in bad.stderr
    assert "auto, numpy, numba, cupy" in bad.stderr
    # an invalid value raises where it applies, not where an argument or a block wins
    code = ("import lossbackends as lb, numpy as np; print(lb.mse(np.ones(2), np.zeros(2), "
            "backend='numpy')); print(lb.use_backend('numpy').__enter__())")
    assert _run_env("tensorflow", code).stdout.split() == ["1.0", "numpy"]
    # the variable decides which kernel runs: a backend that cannot run here says so
    code = "import lossbackends as lb, numpy as np; print(lb.mse(np.ones(2), np.zeros(2)))"
    assert _run_env("numpy", code).stdout.strip() == "1.0"


def test_precedence_argument_over_context_over_environment():
    assert lb.get_backend() in ("auto", os.environ.get("LOSSBACKENDS_BACKEND", "auto").strip().lower())
    with lb.use_backend("numpy"):
        assert lb.get_backend() == "numpy"
        with lb.use_backend("auto"):
            assert lb.get_backend() == "auto"
        assert lb.get_backend() == "numpy"
        # the call's argument wins: cupy cannot take host arrays, so it is an error
        with pytest.raises(ValueError, match="cannot run on host"):
            lb.mse(np.ones(2), np.ones(2), backend="cupy")


def test_one_use_backend_object_enters_again_and_checks_its_name_at_once():
    """Entered again inside its own block (a nested block of the same backend) and after
    it; a name that is not a backend's raises at the call, before any ``with``."""
    block = lb.use_backend("numpy")
    with block:
        with lb.use_backend("auto"):
            with block:
                assert lb.get_backend() == "numpy"
            assert lb.get_backend() == "auto"
        assert lb.get_backend() == "numpy"
    with block as name:
        assert name == lb.get_backend() == "numpy"
    with pytest.raises(ValueError, match="unknown backend 'NumPy'; choose one of"):
        lb.use_backend("NumPy")


def test_one_use_backend_object_shared_by_threads_and_tasks():
    """Blocks of one object open at once in two threads, and in two asyncio tasks, leaving
    in either order: each sees its block, and after it what it saw before."""
    block = lb.use_backend("numpy")
    before = lb.get_backend()
    barrier = threading.Barrier(2)
    seen = {}

    def worker(delay):
        with block:
            barrier.wait()
            time.sleep(delay)
            inside = lb.get_backend()
        seen[delay] = (inside, lb.get_backend())

    threads = [threading.Thread(target=worker, args=(d,)) for d in (0.05, 0.0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {0.05: ("numpy", before), 0.0: ("numpy", before)}

    async def task(delay):
        with block:
            await asyncio.sleep(delay)
            inside = lb.get_backend()
        return inside, lb.get_backend()

    async def main():
        return await asyncio.gather(task(0.02), task(0.0))

    assert asyncio.run(main()) == [("numpy", before)] * 2
    assert lb.get_backend() == before
    with pytest.raises(RuntimeError, match="without its __enter__"):
        block.__exit__(None, None, None)


def test_use_backend_as_a_decorator_gives_each_call_a_block():
    before = lb.get_backend()

    @lb.use_backend("numpy")
    def backend_inside():
        """Its docstring."""
        return lb.get_backend()

    seen = []
    threads = [threading.Thread(target=lambda: seen.append(backend_inside())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == ["numpy"] * 4
    assert backend_inside.__doc__ == "Its docstring."
    assert lb.get_backend() == before


def test_use_backend_is_per_thread():
    seen = {}
    barrier = threading.Barrier(2)

    def worker(name):
        with lb.use_backend(name):
            barrier.wait()
            seen[name] = lb.get_backend()
            barrier.wait()

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("numpy", "auto")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"numpy": "numpy", "auto": "auto"}


def test_use_backend_is_per_asyncio_task():
    async def task(name, delay):
        with lb.use_backend(name):
            await asyncio.sleep(delay)
            return lb.get_backend()

    async def main():
        return await asyncio.gather(task("numpy", 0.02), task("auto", 0.01))

    assert asyncio.run(main()) == ["numpy", "auto"]


def test_numba_without_a_writable_cache_warns_once_and_computes():
    pytest.importorskip("numba", reason="Numba is not installed")
    caching = importlib.import_module("numba.core.caching")
    if not hasattr(getattr(caching, "CacheImpl", None), "_locator_classes"):
        pytest.skip("this Numba has no CacheImpl._locator_classes to empty")
    code = ("import numba.core.caching as c, warnings; c.CacheImpl._locator_classes = []; "
            "warnings.simplefilter('always'); import numpy as np, lossbackends as lb; "
            "print(lb.mse(np.ones(3, np.float32), np.zeros(3, np.float32), backend='numba'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1.0"
    assert out.stderr.count("Numba cannot cache the lossbackends kernels") == 1


def test_an_edit_of_numba_math_recompiles_the_kernels(tmp_path):
    """Numba's cache checks only the file a kernel is written in; the math the kernels
    inline lives in another file, and changing it must not load kernels compiled before."""
    pytest.importorskip("numba", reason="Numba is not installed")
    shutil.copytree(ROOT / "lossbackends", tmp_path / "lossbackends",
                    ignore=shutil.ignore_patterns("__pycache__"))
    code = ("import numpy as np, lossbackends as lb; "
            "print(lb.mse(np.ones(3, np.float32), np.zeros(3, np.float32), backend='numba'))")
    env = {key: value for key, value in os.environ.items() if key != "NUMBA_CACHE_DIR"}
    env["NUMBA_DEBUG_CACHE"] = "1"

    def run() -> str:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             cwd=tmp_path, env=env)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip().endswith("1.0")
        return out.stdout

    assert "data saved" in run()
    assert "data loaded" in run()  # the on-disk cache works
    math = tmp_path / "lossbackends" / "backends" / "_numba_math.py"
    math.write_text(math.read_text() + "\n# an edit\n")
    again = run()
    assert "data loaded" not in again and "data saved" in again


def test_available_backends():
    names = lb.available_backends()
    assert names[0] == "numpy" and set(names) <= {"numpy", "numba", "cupy"}


def test_calls_from_many_threads_agree(backend):
    if backend == "cupy":
        pytest.skip("host threads sharing one GPU stream: covered by the GPU tests")
    rng = np.random.default_rng(13)
    # float32, as test_large_float32_sum_is_accurate: the same parallel kernel, one compile
    y = rng.normal(size=400_000).astype(np.float32)
    p = rng.normal(size=400_000).astype(np.float32)
    expected = lb.mse(y, p, backend=backend)
    results = []

    def worker():
        results.append(lb.mse(y, p, backend=backend))

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == expected for r in results)


def test_results_are_bitwise_reproducible(backend):
    rng = np.random.default_rng(14)
    y = on(backend, rng.normal(size=1_000_003).astype(np.float32))
    p = on(backend, rng.normal(size=1_000_003).astype(np.float32))
    first = lb.mse.value_and_grad(y, p, backend=backend)
    for _ in range(3):
        again = lb.mse.value_and_grad(y, p, backend=backend)
        assert host(again[0]).tobytes() == host(first[0]).tobytes()
        assert np.array_equal(host(again[1]), host(first[1]))


def test_python_main_self_check():
    out = subprocess.run([sys.executable, "-m", "lossbackends"], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    assert "auto picks" in out.stdout and "self-check passed" in out.stdout


def test_python_main_diagnoses_the_environment_variable():
    """A bad LOSSBACKENDS_BACKEND is reported (not a traceback) and fails the self-check;
    'cupy' for host calls says that they fail."""
    env = {**os.environ, "LOSSBACKENDS_BACKEND": "foo"}
    out = subprocess.run([sys.executable, "-m", "lossbackends"], capture_output=True, text=True,
                         cwd=ROOT, env=env)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "calls without backend= fail here: unknown LOSSBACKENDS_BACKEND='foo'" in out.stdout
    assert "self-check FAILED" in out.stdout
    env["LOSSBACKENDS_BACKEND"] = "cupy"
    out = subprocess.run([sys.executable, "-m", "lossbackends"], capture_output=True, text=True,
                         cwd=ROOT, env=env)
    assert "calls without backend= fail on host arrays: 'cupy' cannot run them" in out.stdout
    # no options: --help says what it does, an unknown one is refused (not ignored)
    out = subprocess.run([sys.executable, "-m", "lossbackends", "--help"], capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 0 and "which backends run here" in out.stdout
    out = subprocess.run([sys.executable, "-m", "lossbackends", "--quick"], capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 2 and "unrecognized arguments: --quick" in out.stderr


@pytest.mark.parametrize("how", ["disabled", "broken"])
def test_an_installed_numba_that_cannot_run_leaves_auto_on_numpy(how, tmp_path):
    """Numba installed but unable to run (``NUMBA_DISABLE_JIT=1``, Numba's debugging switch,
    whose decorators leave Python functions; or an import that fails, as a Numba older than
    the NumPy it meets does): "auto" computes with NumPy and warns once why, the objectives
    too; ``backend="numba"`` says why it cannot run; ``python -m lossbackends`` says so and
    passes. (Every call failed, naming a pip install of what was installed.)"""
    env = {**os.environ}
    if how == "disabled":
        env["NUMBA_DISABLE_JIT"] = "1"
        why = "NUMBA_DISABLE_JIT=1"
    else:
        (tmp_path / "numba").mkdir()
        (tmp_path / "numba" / "__init__.py").write_text(
            'raise ImportError("Numba needs NumPy 2.3 or less")\n')
        env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT)])
        why = "Numba needs NumPy 2.3 or less"
    code = """if True:
        import warnings
        import numpy as np
        import lossbackends as lb
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            print(lb.mse(np.array([1.0, 2.0]), np.array([1.0, 3.0])))
            grad, hess = lb.xgboost.objective(lb.mse)(np.array([0.0, 1.0]), np.array([0.5, 1.0]))
        print(len(caught), caught[0].filename, caught[0].message)  # (the user's line)
        print(lb.available_backends())
        try:
            lb.mse(np.zeros(2), np.ones(2), backend="numba")
        except ValueError as exc:
            print(exc)
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    value, warned, available, refused = out.stdout.strip().split("\n")
    assert value == "0.5"
    assert warned.startswith("1 <string> Numba is installed but cannot run here") and why in warned
    assert available == "['numpy']"
    assert refused.startswith("backend 'numba' cannot run here") and why in refused
    main = subprocess.run([sys.executable, "-m", "lossbackends"], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=300)
    assert main.returncode == 0 and "Traceback" not in main.stderr, main.stderr[-2000:]
    assert "auto picks 'numpy' for host arrays (Numba is installed but cannot run" in main.stdout
    assert "RuntimeWarning" not in main.stderr  # (the self-check's own rows say why)


def test_cupy_without_cupy_says_it_is_not_installed():
    # the install is the first thing to fix, not the arrays' device
    import importlib.util

    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed")
    for _ in range(2):  # an error is not cached: the second call says the same
        with pytest.raises(ValueError, match=r"^backend 'cupy' is not available here \(.*cupy.*\); "
                           r"install it with: pip install 'lossbackends\[cuda12\]'.* cannot run "
                           r"on host"):
            lb.mse(np.ones(2), np.ones(2), backend="cupy")
    with lb.use_backend("cupy"), pytest.raises(ValueError, match="pip install 'lossbackends"):
        lb.mse(np.ones(2), np.ones(2))
