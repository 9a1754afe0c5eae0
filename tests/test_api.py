"""The contract: seed drop-ins, backend choice, errors, gradients by finite differences,
start-up (the docstrings' examples: test_docstrings.py)."""

from __future__ import annotations

import ast
import asyncio
import importlib
import inspect
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import reference
from conftest import host, on

import lossbackends as lb

ROOT = Path(__file__).resolve().parents[1]
LOSSES = ("mse", "binary_cross_entropy", "binary_cross_entropy_with_logits", "hinge",
          "cross_entropy")


# --- the seed -------------------------------------------------------------------------


def test_seed_examples_exactly():
    assert lb.mse_loss(np.array([3, -0.5, 2, 7]), np.array([2.5, 0.0, 2, 8])) == 0.375
    assert lb.binary_cross_entropy_loss(
        np.array([0, 1, 1, 0]), np.array([0.1, 0.8, 0.9, 0.2])) == 0.164252033486018
    # the seed prints 0.07499999999999998 (1 - 0.9 is not 0.1 in binary): same bits here
    value = lb.hinge_loss(np.array([-1, 1, 1, -1]), np.array([-1.5, 1.2, 0.9, -0.8]))
    assert value == np.mean(np.maximum(0, 1 - np.array([-1, 1, 1, -1]) * np.array([-1.5, 1.2, 0.9, -0.8])))
    assert round(float(value), 15) == 0.075


def test_seed_drop_ins_are_the_seeds_functions_to_the_last_bit():
    """float64 inputs of sizes where 1 / n is not exact: the seed's np.mean divides the sum
    by n (the losses' "mean" multiplies by 1 / n: one result in five differed in the last
    bit); a list too."""
    rng = np.random.default_rng(11)
    for n in (3, 5, 7, 10, 1003):
        for _ in range(10):
            y, p, labels = rng.random(n), rng.random(n), (rng.random(n) < 0.5) * 1.0
            signs, scores = np.where(rng.random(n) < 0.5, -1.0, 1.0), rng.normal(size=n)
            for got, want in (
                    (lb.mse_loss(y, p), reference.seed_mse_loss(y, p)),
                    (lb.binary_cross_entropy_loss(labels, p),
                     reference.seed_binary_cross_entropy_loss(labels, p)),
                    (lb.hinge_loss(signs, scores), reference.seed_hinge_loss(signs, scores))):
                assert type(got) is np.float64 and got.tobytes() == want.tobytes()
    assert lb.mse_loss([0.33, 0.99, 0.32], [0.79, 0.87, 0.39]) == 0.07696666666666667


def test_seed_bce_drop_in_keeps_the_library_s_rules_beyond_float64():
    """binary_cross_entropy_loss takes the seed's formula for float64 host inputs only: a
    float32 p = 1 stays finite (clipped at float32's eps, where the seed's 1 - 1e-15 rounds
    to 1: NaN), shapes must match, and a torch tensor gives a tensor."""
    value = lb.binary_cross_entropy_loss(np.float32([1, 0]), np.float32([1, 0]))
    assert value.dtype == np.float32 and np.isclose(value, np.finfo(np.float32).eps, rtol=1e-6)
    with pytest.raises(ValueError, match="must match"):
        lb.binary_cross_entropy_loss(np.array([[0, 1], [1, 0]]), np.array([0.3, 0.6]))
    torch = pytest.importorskip("torch")
    got = lb.binary_cross_entropy_loss(torch.tensor([1.0, 0.0]), torch.tensor([0.8, 0.1]))
    assert isinstance(got, torch.Tensor)
    assert np.isclose(got.item(), -(np.log(0.8) + np.log1p(-0.1)) / 2, rtol=1e-6)


def test_label_error_crosses_processes_and_losses_have_names():
    """LabelError pickles with its fields (a process pool died on it), and a loss has a
    function's __name__ (scikit-learn's make_scorer reads it)."""
    import pickle

    with pytest.raises(lb.LabelError) as info:
        lb.cross_entropy([5], [[1.0, 2.0]])
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is lb.LabelError and str(again) == str(info.value)
    assert (again.label, again.row, again.classes, again.loss) == (5, 0, 2, "cross_entropy")
    assert lb.mse.__name__ == lb.mse.__qualname__ == "mse"
    # a loss pickles by reference, as a function: the module's own object comes back
    for loss in (lb.mse, lb.cross_entropy, lb.sigmoid_focal):
        assert pickle.loads(pickle.dumps(loss)) is loss


def test_seed_examples_on_every_backend(backend):
    cases = [("mse", [3, -0.5, 2, 7], [2.5, 0.0, 2, 8], 0.375),
             ("binary_cross_entropy", [0, 1, 1, 0], [0.1, 0.8, 0.9, 0.2], 0.164252033486018),
             ("hinge", [-1, 1, 1, -1], [-1.5, 1.2, 0.9, -0.8], 0.075)]
    for name, y, p, expected in cases:
        value = getattr(lb, name)(on(backend, np.array(y)), on(backend, np.array(p)), backend=backend)
        assert abs(float(host(value)) - expected) < 1e-15


# --- gradients against central finite differences (float64) ---------------------------


def _fd_inputs(name, rng):
    if name == "cross_entropy":
        return rng.integers(0, 7, 5), rng.normal(size=(5, 7))
    if name == "binary_cross_entropy":
        return (rng.random(12) < 0.5).astype(float), rng.uniform(0.05, 0.95, 12)
    if name == "hinge":
        y = np.where(rng.random(12) < 0.5, -1.0, 1.0)
        p = rng.normal(size=12)
        p[np.abs(1 - y * p) < 0.05] += 0.2  # stay off the kink
        return y, p
    return rng.normal(size=12), rng.normal(size=12)


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_gradient_matches_finite_differences(backend, name, reduction):
    rng = np.random.default_rng(11)
    y, p = _fd_inputs(name, rng)
    options = {}
    if name == "cross_entropy":
        options = {"label_smoothing": 0.1, "class_weight": rng.uniform(0.5, 2, 7)}
    elif name != "hinge":
        options = {"weight": rng.uniform(0.5, 2, p.shape)}
    if name == "binary_cross_entropy_with_logits":
        options["pos_weight"] = 1.7
    loss = getattr(lb, name)

    def value(q):
        dev = {k: on(backend, v) if isinstance(v, np.ndarray) else v for k, v in options.items()}
        return float(host(loss(on(backend, y), on(backend, q), reduction=reduction,
                               backend=backend, **dev)))

    dev = {k: on(backend, v) if isinstance(v, np.ndarray) else v for k, v in options.items()}
    grad = host(loss.grad(on(backend, y), on(backend, p), reduction=reduction, backend=backend, **dev))
    np.testing.assert_allclose(grad, _central_differences(value, p), rtol=1e-6, atol=1e-8)


def _central_differences(value, p, h=1e-6):
    """d value / d p by central differences, one element of ``p`` at a time."""
    numeric = np.zeros_like(p)
    for index in np.ndindex(p.shape):
        up, down = p.copy(), p.copy()
        up[index] += h
        down[index] -= h
        numeric[index] = (value(up) - value(down)) / (2 * h)
    return numeric


def _fd_option_inputs(case, rng):
    """(loss, y, p, options) of ``case``: an option or layout the test above leaves out."""
    if case == "hinge margin":
        y = np.where(rng.random(12) < 0.5, -1.0, 1.0)
        p = rng.normal(size=12)
        p[np.abs(0.5 - y * p) < 0.05] += 0.2  # off the kink at 0.5
        return "hinge", y, p, {"margin": 0.5, "weight": rng.uniform(0.5, 2, 12)}
    if case == "bce eps":  # soft labels, predictions inside the clip bounds [0.1, 0.9]
        y = rng.random(12)
        return "binary_cross_entropy", y, rng.uniform(0.2, 0.8, 12), {"eps": 0.1}
    if case == "cross_entropy soft labels":
        t = rng.dirichlet(np.ones(7), 5)
        return "cross_entropy", t, rng.normal(size=(5, 7)), {"label_smoothing": 0.2}
    # the class axis first: (classes, rows) logits
    return ("cross_entropy", rng.integers(0, 7, 5), rng.normal(size=(7, 5)),
            {"axis": 0, "class_weight": rng.uniform(0.5, 2, 7)})


@pytest.mark.parametrize("case", ["hinge margin", "bce eps", "cross_entropy soft labels",
                                  "cross_entropy axis 0"])
def test_gradient_with_options_matches_finite_differences(backend, case):
    name, y, p, options = _fd_option_inputs(case, np.random.default_rng(13))
    loss = getattr(lb, name)
    dev = {k: on(backend, v) if isinstance(v, np.ndarray) else v for k, v in options.items()}

    def value(q):
        return float(host(loss(on(backend, y), on(backend, q), backend=backend, **dev)))

    grad = host(loss.grad(on(backend, y), on(backend, p), backend=backend, **dev))
    numeric = _central_differences(value, p)
    assert np.abs(numeric).max() > 1e-3  # (the inputs reach the loss's slope)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", ["mse", "binary_cross_entropy_with_logits", "hinge"])
def test_none_gradient_is_the_vjp_with_ones(backend, name):
    """reduction="none": .grad is each element's own derivative, so an upstream gradient
    u multiplies it elementwise (checked with random u, not ones)."""
    rng = np.random.default_rng(12)
    y, p = _fd_inputs(name, rng)
    u = rng.normal(size=p.shape)
    loss = getattr(lb, name)
    per_element = host(loss.grad(on(backend, y), on(backend, p), reduction="none", backend=backend))
    weighted = host(loss.grad(on(backend, y), on(backend, p), reduction="sum",
                              weight=on(backend, u), backend=backend))
    np.testing.assert_allclose(per_element * u, weighted, rtol=1e-12, atol=1e-15)


# --- choosing the backend --------------------------------------------------------------


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


# --- errors that name the fix -----------------------------------------------------------


def test_unknown_backend_and_reduction():
    with pytest.raises(ValueError, match="unknown backend 'jax'; choose one of 'auto', 'numpy'"):
        lb.mse(np.ones(2), np.ones(2), backend="jax")
    with pytest.raises(ValueError, match="unknown backend"):
        with lb.use_backend("torch"):
            pass
    with pytest.raises(ValueError, match="unknown reduction 'avg'; choose one of 'mean', 'sum', 'none'"):
        lb.mse(np.ones(2), np.ones(2), reduction="avg")


def test_unknown_option_names_the_loss_and_its_options():
    # the error names the loss and what it takes, not the private function that prepares it
    with pytest.raises(TypeError, match=r"^mse\(\) got an unexpected keyword argument 'delta'; "
                       "its options are weight, reduction and backend$"):
        lb.mse(np.ones(2), np.ones(2), delta=1.0)
    with pytest.raises(TypeError, match=r"huber\(\) .* 'detla'; its options are weight, delta,"):
        lb.huber.value_and_grad(np.ones(2), np.ones(2), detla=1.0)
    with pytest.raises(TypeError, match=r"'weight'; .*class_weight, .* per-class weights are "
                       r"class_weight= \(torch's weight=\)"):
        lb.cross_entropy(np.array([0, 1]), np.ones((2, 3)), weight=np.ones(2))


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


def test_shape_mismatch_names_both_shapes(backend):
    with pytest.raises(ValueError, match=r"y_true has shape \(3, 1\) but y_pred has shape \(3,\)"):
        lb.mse(on(backend, np.ones((3, 1))), on(backend, np.ones(3)), backend=backend)
    with pytest.raises(ValueError, match=r"weight has shape \(4,\), which does not broadcast"):
        lb.mse(on(backend, np.ones(3)), on(backend, np.ones(3)), weight=on(backend, np.ones(4)),
               backend=backend)
    with pytest.raises(ValueError, match="pos_weight has shape"):
        lb.binary_cross_entropy_with_logits(on(backend, np.ones((2, 3))), on(backend, np.ones((2, 3))),
                                            pos_weight=on(backend, np.ones(2)), backend=backend)


def test_cross_entropy_argument_errors(backend):
    x = on(backend, np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"expects class indices of shape \(4,\) or probabilities"):
        lb.cross_entropy(on(backend, np.zeros(5, int)), x, backend=backend)
    with pytest.raises(TypeError, match="must be integers"):
        lb.cross_entropy(on(backend, np.zeros(4)), x, backend=backend)
    with pytest.raises(ValueError, match=r"class_weight has shape \(2,\)"):
        lb.cross_entropy(on(backend, np.zeros(4, int)), x, class_weight=on(backend, np.ones(2)),
                         backend=backend)
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        lb.cross_entropy(on(backend, np.zeros(4, int)), x, label_smoothing=1.5, backend=backend)
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        lb.cross_entropy(on(backend, np.zeros(4, int)), x, axis=2, backend=backend)


@pytest.mark.parametrize("options", [{}, {"weight": None}], ids=["fast_path", "prepared"])
def test_out_errors(backend, options):
    y, p = on(backend, np.ones(6)), on(backend, np.ones(6))

    def grad(y, p, out):
        return lb.mse.grad(y, p, out=out, backend=backend, **options)

    with pytest.raises(ValueError, match=r"out has shape \(5,\) and dtype float64; the gradient needs"):
        grad(y, p, on(backend, np.ones(5)))
    with pytest.raises(ValueError, match="dtype float32"):
        grad(y, p, on(backend, np.ones(6, np.float32)))
    with pytest.raises(ValueError, match="C-contiguous"):
        grad(on(backend, np.ones(3)), on(backend, np.ones(3)), on(backend, np.ones(6))[::2])
    with pytest.raises(ValueError, match="must not share memory with y_true"):
        grad(y, p, y)
    labels_and_more = on(backend, np.ones(12))
    with pytest.raises(ValueError, match="must not share memory with y_true"):
        grad(labels_and_more[:6], p, labels_and_more[3:9])
    if backend != "cupy":
        with pytest.raises(TypeError, match="out must be an array .* not list"):
            grad(y, p, [0.0] * 6)
        read_only = np.zeros(6)
        read_only.flags.writeable = False
        with pytest.raises(ValueError, match="writeable"):
            grad(y, p, read_only)
        # a byte-swapped y_pred as its own out: computed in native order, so the message
        # says why it cannot be in place and what to pass
        swapped = np.ones(6, np.dtype(np.float64).newbyteorder())
        with pytest.raises(ValueError, match=r"in native byte order: pass an array of dtype "
                                             r"'float64', or None for a new one"):
            grad(y, swapped, swapped)
    out = on(backend, np.full(6, np.nan))
    assert grad(y, on(backend, np.full(6, 3.0)), out) is out
    np.testing.assert_array_equal(host(out), np.full(6, 2 * 2.0 / 6))


def test_bad_dtypes():
    with pytest.raises(TypeError, match="y_pred has dtype complex128"):
        lb.mse(np.ones(2), np.ones(2, complex))
    with pytest.raises(TypeError, match="y_true has dtype <U1"):
        lb.mse(np.array(["a", "b"]), np.ones(2))
    with pytest.raises(TypeError, match="unexpected keyword argument 'margin'"):
        lb.mse(np.ones(2), np.ones(2), margin=2.0)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_unpickled_arrays_give_the_same_results(backend, dtype):
    """Arrays sent through pickle (multiprocessing, joblib, Dask's workers) carry a dtype
    equal to NumPy's own but not the same object (float16 ones failed on Numba: the
    kernels told float16 by identity)."""
    import pickle

    rng = np.random.default_rng(5)
    y, p = rng.random(50).astype(dtype), rng.uniform(0.1, 0.9, 50).astype(dtype)
    labels, logits = rng.integers(0, 4, 6), rng.standard_normal((6, 4)).astype(dtype)
    again = [pickle.loads(pickle.dumps(a)) for a in (y, p, logits)]
    assert again[1].dtype == dtype and again[1].dtype is not np.dtype(dtype)
    for fresh, unpickled in (((y, p), again[:2]), ((labels, logits), (labels, again[2]))):
        loss = lb.cross_entropy if fresh[0] is labels else lb.binary_cross_entropy
        for call in (loss, loss.value_and_grad, loss.grad_and_hess):
            expected = call(*fresh, backend=backend)
            got = call(*unpickled, backend=backend)
            for a, b in zip(np.atleast_1d(got) if call is loss else got,
                            np.atleast_1d(expected) if call is loss else expected, strict=True):
                np.testing.assert_array_equal(a, b)
                assert np.asarray(a).dtype == dtype


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_masked_arrays_are_refused(backend):
    """numpy.asarray drops a masked array's mask: the masked elements would count, silently."""
    masked = np.ma.array([1.0, 2.0], mask=[False, True])
    calls = {"y_true": lambda: lb.mse(masked, np.zeros(2), backend=backend),
             "y_pred": lambda: lb.mse.grad(np.zeros(2), masked, backend=backend),
             "weight": lambda: lb.mae(np.zeros(2), np.ones(2), weight=masked, backend=backend)}
    for name, call in calls.items():
        with pytest.raises(TypeError, match=f"{name} is a masked array .* weight of 0"):
            call()
    with pytest.raises(TypeError, match="y_true is a masked array"):
        lb.cross_entropy(np.ma.array([0, 1]), np.zeros((2, 3)), backend=backend)
    # the advice works: a weight of 0 where masked
    kept = lb.mse(np.zeros(2), masked.data, weight=~np.ma.getmaskarray(masked),
                  reduction="sum", backend=backend)
    assert kept == 1.0


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_errors_name_the_argument_and_the_fix(backend):
    """Messages of the user's own mistakes: the option by its name (not float()'s or
    operator.index's message), a float refused where an integer goes (never truncated),
    the arguments' order when integer logits meet float labels, no internal exception
    chained before a routing error."""
    x, labels = np.array([[1.0, 2.0, 3.0], [3.0, 1.0, 0.0]]), np.array([0, 2])
    half = np.full(2, 0.5)
    cases = [
        (TypeError, "binary_cross_entropy: eps must be a real number, not str",
         lambda: lb.binary_cross_entropy(half, half, eps="a", backend=backend)),
        (ValueError, "hinge: margin must be in", lambda: lb.hinge(
            half, half, margin=float("nan"), backend=backend)),
        (TypeError, "cross_entropy: label_smoothing must be a real number, not NoneType",
         lambda: lb.cross_entropy(labels, x, label_smoothing=None, backend=backend)),
        (TypeError, "cross_entropy: axis must be an integer, not float",
         lambda: lb.cross_entropy(labels, x, axis=1.0, backend=backend)),
        (TypeError, "cross_entropy: ignore_index must be an integer, not float",
         lambda: lb.cross_entropy(labels, x, ignore_index=1.5, backend=backend)),
        (TypeError, "check_labels must be True or False, not 'no'",
         lambda: lb.cross_entropy(labels, x, check_labels="no", backend=backend)),
        (TypeError, r"y_pred has dtype object \(from a NoneType\)",
         lambda: lb.mse(half, None, backend=backend)),
        (ValueError, r"y_pred holds integers: is it the labels\? the order is \(y_true, y_pred\)",
         lambda: lb.cross_entropy(x, labels, backend=backend)),
    ]
    for error, message, call in cases:
        with pytest.raises(error, match=message):
            call()
    # multiclass_hinge takes no probabilities: its advice does not offer them
    with pytest.raises(TypeError, match=r"\.astype\(int\)$"):
        lb.multiclass_hinge(labels.astype(float), x, backend=backend)
    with pytest.raises(ValueError, match="unknown backend 'gpu'") as info:
        lb.mse(half, half, backend="gpu")
    assert info.value.__context__ is None  # (it was "during handling of KeyError")
    # what float() and bool() took stays accepted: 0-d arrays, NumPy scalars, Fractions
    from fractions import Fraction

    for eps in (np.array(1e-7), np.float32(1e-7), Fraction(1, 10**7)):
        assert lb.binary_cross_entropy(half, half, eps=eps, backend=backend) == np.log(2)
    plain = lb.cross_entropy(labels, x, label_smoothing=0.1, backend=backend)
    assert lb.cross_entropy(labels, x, label_smoothing=np.array(0.1), check_labels=np.array(
        True), ignore_index=np.array(-100), axis=np.int64(-1), backend=backend) == plain


def test_cuda_array_interface_is_asked_of_the_instance():
    """A class may define ``__cuda_array_interface__`` as a property that refuses a CPU
    instance (as torch's does): such an instance is a host array, read by ``__array__``;
    one whose property answers is a GPU array, and the two mixed are the devices error.
    Neither kind of call is cached by type (the next instance may live elsewhere)."""

    class Either:
        def __init__(self, values, on_gpu=False):
            self.values, self.on_gpu = np.asarray(values), on_gpu

        @property
        def __cuda_array_interface__(self):
            if not self.on_gpu:
                raise AttributeError("a CPU instance")
            return {"shape": self.values.shape, "typestr": "<f8", "data": (0, False),
                    "version": 3}

        def __array__(self, dtype=None, copy=None):
            return self.values

    assert lb.mse(Either([1.0, 2.0]), Either([0.0, 0.0])) == 2.5
    np.testing.assert_array_equal(lb.mse.grad(Either([1.0, 2.0]), Either([0.0, 0.0])),
                                  [-1.0, -2.0])
    with pytest.raises(ValueError, match="live on different devices"):
        lb.mse(Either([1.0, 2.0]), Either([0.0, 0.0], on_gpu=True))
    if "cupy" not in lb.available_backends():
        with pytest.raises(ValueError, match="backend 'cupy' is not available here"):
            lb.mse(Either([1.0, 2.0], on_gpu=True), Either([0.0, 0.0], on_gpu=True))
    assert lb.mse(Either([3.0]), Either([1.0])) == 4.0  # a host call again after a GPU one


def test_cuda_array_interface_on_the_instance_alone():
    """The contract's "anything with ``__cuda_array_interface__`` on the instance": a
    wrapper that sets it in ``__init__`` (its class has none) is a GPU array, not a host
    array of dtype object, and its type is asked instance by instance from then on. A
    type whose first instance holds none stays a host type decided by its type (its
    routes kept), and an attribute a ``__getattr__`` answers (a pandas column of that
    name) is not read; NumPy arrays and their subclasses are host arrays by type."""
    from lossbackends import _dispatch

    interface = {"shape": (3,), "typestr": "<f4", "data": (0, False), "version": 3}

    class Wrapper:
        def __init__(self, interface=None):
            if interface is not None:
                self.__cuda_array_interface__ = interface

    class Answers:  # the name answered by __getattr__, as a pandas column of that name is
        def __init__(self, values):
            self.values = np.asarray(values)

        def __getattr__(self, name):
            if name == "__cuda_array_interface__":
                return interface
            raise AttributeError(name)

        def __array__(self, dtype=None, copy=None):
            return self.values

    gpu = Wrapper(interface)
    assert _dispatch.device_of(gpu) == "cuda"
    assert _dispatch.device_of(Wrapper()) == "host"  # asked one by one
    assert _dispatch.device_of(Answers([1.0])) == "host"
    assert _dispatch._DEVICE_OF_TYPE[Answers] == "host"  # by type, from then on
    assert lb.mse(Answers([1.0, 2.0]), Answers([0.0, 0.0])) == 2.5
    assert _dispatch.device_of(np.zeros(3)) == "host"
    if "cupy" not in lb.available_backends():
        with pytest.raises(ValueError, match="backend 'cupy' is not available here"):
            lb.mse(gpu, gpu)


# options of numbers for each loss that takes some (the fast path prepares them once)
_NUMBER_OPTIONS = {
    "binary_cross_entropy": [{"eps": 1e-3}],
    "binary_cross_entropy_with_logits": [{"pos_weight": 2.0}],  # (made an array: prepared)
    "hinge": [{"margin": 0.5}],
    "huber": [{"delta": 0.3}, {"delta": 2.0}],
    "smooth_l1": [{"beta": 0.5}, {"beta": 0.0}],
    "squared_hinge": [{"margin": 2.0}],
    "sigmoid_focal": [{"alpha": 0.5, "gamma": 1.0}, {"gamma": 0.0, "alpha": None}],
    "poisson_nll": [{"log_input": False, "full": True, "eps": 1e-6}, {"full": True}],
    "kl_div": [{"log_target": True}],
    # (a float 0 and -0.0 are equal keys: their losses' zeros differ in sign)
    "pinball": [{"quantile": 0.9}, {"quantile": 0.0}, {"quantile": -0.0}],
    "cross_entropy": [{"label_smoothing": 0.1}, {"z_loss": 1e-3, "softcap": 5.0},
                      {"ignore_index": 1, "check_labels": False}, {"axis": -1},
                      # every option at its default, as lossbackends.torch passes them
                      {"label_smoothing": 0.0, "z_loss": 0.0, "softcap": None,
                       "ignore_index": -100, "check_labels": True, "axis": 1},
                      {"label_smoothing": -0.0, "axis": -1}],
    "multiclass_hinge": [{"margin": 2.0}, {"check_labels": False}],
}


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("name", sorted(_NUMBER_OPTIONS))
def test_options_of_numbers_skip_the_preparation_with_the_same_results(backend, name,
                                                                      monkeypatch):
    """A call whose options are numbers takes the fast path, its options prepared once for
    the dtype: the same bits as through the full preparation, for every reduction, the
    gradient, the Hessian and out=; a bad value still raises as it did."""
    loss = getattr(lb, name)
    rng = np.random.default_rng(7)
    rows = name in ("cross_entropy", "multiclass_hinge")
    for dtype in (np.float32, np.float64):
        p = rng.standard_normal((40, 5) if rows else 200).astype(dtype)
        y = (rng.integers(0, 5, 40) if rows else
             (rng.random(200) > 0.5).astype(dtype) if name in (
                 "binary_cross_entropy", "binary_cross_entropy_with_logits", "sigmoid_focal")
             else np.sign(rng.standard_normal(200)).astype(dtype) if "hinge" in name
             else rng.random(200).astype(dtype))
        if name == "binary_cross_entropy":
            p = np.clip(np.abs(p) / 4, 0.01, 0.99).astype(dtype)
        if name in ("poisson_nll", "kl_div"):
            y = rng.random(200).astype(dtype) * 3
        if rows:
            y[::7] = 1  # (ignore_index=1 leaves these out)
        # (Numba's float64 kernels of each call kind compile for seconds each, and the
        # fast path is the dispatch's, the same for every backend: NumPy's runs them all)
        every = backend == "numpy" or dtype == np.float32
        for options in _NUMBER_OPTIONS[name]:
            fast = _every_call(loss, y, p, backend, options, every)
            with monkeypatch.context() as m:  # the full preparation, every call
                m.setattr(type(loss), "_numbers_prepared",
                          lambda self, dtype, options: lb._loss._NOT_PLAIN)
                slow = _every_call(loss, y, p, backend, options, every)
            for what in fast:
                for a, b in zip(*(r if isinstance(r, tuple) else (r,)
                                  for r in (fast[what], slow[what])), strict=True):
                    np.testing.assert_array_equal(a, b, err_msg=f"{name} {options} {what}")
    # (the fast path was taken: sets prepared once are kept; pos_weight becomes an array)
    kept = [found for found in loss._with_numbers.values() if found is not lb._loss._NOT_PLAIN]
    assert kept or name == "binary_cross_entropy_with_logits"
    with pytest.raises((ValueError, TypeError)):  # a bad value: refused, and not kept
        loss(y, p, backend=backend, **{**_NUMBER_OPTIONS[name][0], **_BAD_OPTION[name]})


def test_options_at_their_defaults_and_float_zeros_are_kept_as_numbers():
    """Options at their defaults (lossbackends.torch passes them all: ``axis=1`` of 2-D
    logits, ``label_smoothing=0.0``) are kept as prepared numbers, not prepared on every
    call; a float 0 and -0.0, equal as keys, are kept apart (pinball's zeros follow the
    quantile's sign)."""
    x = np.zeros((4, 3), np.float32)
    defaults = {"label_smoothing": 0.0, "z_loss": 0.0, "softcap": None,
                "ignore_index": -100, "check_labels": True, "axis": 1}
    lb.cross_entropy.value_and_grad(np.arange(4) % 3, x, **defaults)
    kept = {key: found for key, found in lb.cross_entropy._with_numbers.items()
            if ("axis", 1) in key and ("label_smoothing", 0.0) in key}
    assert kept and lb._loss._NOT_PLAIN not in kept.values()
    p = np.array([0.0, 1.0, -2.0], np.float32)
    y = np.zeros(3, np.float32)
    signs = {}
    for quantile in (0.0, -0.0, 0.0):
        loss, grad = lb.pinball.value_and_grad(y, p, quantile=quantile, reduction="none")
        signs.setdefault(np.signbit(quantile), []).append(
            (np.signbit(loss).tolist(), np.signbit(grad).tolist()))
    assert signs[False] == [([True, False, False], [False, False, True])] * 2
    assert signs[True] == [([False, False, True], [False, False, False])]


def _every_call(loss, y, p, backend, options, every=True) -> dict:
    """Each kind of call of ``loss`` with ``options`` (``every``: else the default call
    alone): its results by name."""
    found = {reduction: loss.value_and_grad(y, p, reduction=reduction, backend=backend,
                                            **options)
             for reduction in (("mean", "sum", "none") if every else ("mean",))}
    if not every:
        return found
    found["grad_and_hess"] = loss.grad_and_hess(y, p, backend=backend, **options)
    out = np.empty_like(p)
    found["out="] = (loss.value_and_grad(y, p, backend=backend, out=out, **options)[0], out)
    return found


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_options_of_numbers_with_integer_predictions_or_numpy_scalars(backend, monkeypatch):
    """Integer and bool y_pred are computed in float64 with options too (the preparation
    casts them: they never take the kept sets); NumPy scalars as options are kept like
    Python numbers; a refused value is not kept, and the call's own arrays are checked
    first, as through the preparation."""
    y = np.array([0.0, 1.0, 2.0, 3.0])
    for p in (np.array([1, 0, 5, 3]), np.array([1, 0, 5, 3], np.int32),
              np.array([True, False, True, True])):
        value, grad = lb.huber.value_and_grad(y, p, delta=2.0, backend=backend,
                                              reduction="none")
        expected, expected_grad = lb.huber.value_and_grad(y, p.astype(np.float64), delta=2.0,
                                                          backend=backend, reduction="none")
        assert value.dtype == grad.dtype == np.float64
        np.testing.assert_array_equal(value, expected)
        np.testing.assert_array_equal(grad, expected_grad)
    logits = np.array([[1, 2, 3], [0, 0, 1]])
    np.testing.assert_allclose(
        lb.cross_entropy(np.array([0, 2]), logits, label_smoothing=0.1, backend=backend),
        lb.cross_entropy(np.array([0, 2]), logits.astype(float), label_smoothing=0.1,
                         backend=backend), rtol=0, atol=0)
    p = np.linspace(-1, 1, 8)
    loss = lb.huber
    assert loss(p, p * 2, delta=np.float64(0.75), backend=backend) == loss(
        p, p * 2, delta=0.75, backend=backend)
    assert (p.dtype, ("delta", 0.75), np.float64) in loss._with_numbers
    with pytest.raises(ValueError, match="must match exactly"):  # the arrays, first
        loss(np.zeros(3), np.zeros(4), delta=10**400, backend=backend)
    count = len(loss._with_numbers)
    for bad in (-1.0, -2.0, 10**400):
        with pytest.raises((ValueError, OverflowError)):
            loss(p, p, delta=bad, backend=backend)
    assert len(loss._with_numbers) == count  # refused values: not kept


_BAD_OPTION = {"binary_cross_entropy": {"eps": -1.0}, "hinge": {"margin": float("nan")},
               "binary_cross_entropy_with_logits": {"pos_weight": -1.0},
               "huber": {"delta": -1.0}, "smooth_l1": {"beta": -1.0},
               "squared_hinge": {"margin": float("nan")}, "sigmoid_focal": {"gamma": -1.0},
               "poisson_nll": {"eps": -1.0}, "kl_div": {"log_target": None},
               "pinball": {"quantile": 1.5}, "cross_entropy": {"label_smoothing": 2.0},
               "multiclass_hinge": {"margin": float("nan")}}


def test_option_sets_kept_are_bounded():
    """A schedule that moves an option each step (label smoothing annealed) keeps at most
    ``_NUMBER_OPTION_SETS`` prepared sets; beyond them each call prepares its own."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 8)
    loss = lb.cross_entropy
    kept = lb._loss._NUMBER_OPTION_SETS
    for i in range(kept + 20):
        smoothing = i / (kept + 40)
        expected = reference.cross_entropy(labels, x, label_smoothing=smoothing)[0]
        np.testing.assert_allclose(loss(labels, x, label_smoothing=smoothing), expected,
                                   rtol=1e-5)
    assert len(loss._with_numbers) == kept
    # True, 1 and 1.0 are equal keys in a dict: the kept sets tell them apart by type
    y, p = rng.random(16), rng.random(16)
    assert np.isfinite(lb.poisson_nll(y, p, full=True))
    for value in (1, 1.0):
        with pytest.raises(TypeError, match="full must be True or False"):
            lb.poisson_nll(y, p, full=value)
    assert np.isfinite(lb.cross_entropy(labels, x, ignore_index=1))
    with pytest.raises(TypeError, match="ignore_index must be an integer"):
        lb.cross_entropy(labels, x, ignore_index=1.0)


def test_lists_are_accepted_on_the_host():
    assert lb.mse([1, 2], [1, 4], backend="numpy") == 2.0
    assert isinstance(lb.mse.grad([1, 2], [1, 4], backend="numpy"), np.ndarray)


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


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_out_overlapping_y_pred_without_being_it_is_refused(backend):
    buf = np.arange(11.0)
    with pytest.raises(ValueError, match="out overlaps y_pred without being it"):
        lb.mse.grad(np.zeros(10), buf[:-1], out=buf[1:], backend=backend)
    p = np.arange(10.0)
    assert lb.mse.grad(np.zeros(10), p, out=p, backend=backend) is p  # in place is fine
    np.testing.assert_allclose(p, 2 * np.arange(10.0) / 10)


def test_out_is_checked_against_the_memory_it_may_share():
    """Arrays that own their memory are told apart by their flags, the others by their
    bounds (np.may_share_memory): an out that owns its memory next to y_true and y_pred
    that do not (views) is accepted when it is apart from them, refused when it is inside."""
    buf = np.zeros(30)
    y, p = buf[:10], buf[10:20]
    assert not (y.flags.owndata or p.flags.owndata)
    out = np.empty(10)
    assert lb.mse.grad(y, p, out=out, backend="numpy") is out
    assert lb.mse.grad(y, p, out=buf[20:], backend="numpy").base is buf
    with pytest.raises(ValueError, match="must not share memory with y_true"):
        lb.mse.grad(y, np.ones(10), out=buf[5:15], backend="numpy")
    with pytest.raises(ValueError, match="out overlaps y_pred without being it"):
        lb.mse.grad(np.zeros(10), p, out=buf[15:25], backend="numpy")
    # nor the weights the kernel reads (the gradient was silently wrong)
    for backend in ("numpy", "numba"):
        with pytest.raises(ValueError, match="out must not share memory with the weights"):
            lb.mse.grad(np.zeros(10), np.ones(10), out=buf[1:11], weight=buf[0:10],
                        backend=backend)
        with pytest.raises(ValueError, match="out must not share memory with the weights"):
            lb.binary_cross_entropy_with_logits.grad(np.zeros(10), np.ones(10), out=buf[:10],
                                                     pos_weight=buf[:10], backend=backend)
        # nor the user's weights where the kernel reads a copy of them (broadcast, cast,
        # strided), which were overwritten
        grid, grid32 = np.zeros((4, 3)), np.zeros((4, 3), np.float32)
        labels = np.array([0, 1, 2, 0])
        for loss, y_true, out, options in (
                ("mse", np.zeros((4, 3)), grid, {"weight": grid[0]}),
                ("cross_entropy", labels, grid32,
                 {"class_weight": grid32.reshape(-1)[:6].view(np.float64)}),
                ("multiclass_hinge", labels, grid, {"weight": grid[:, 0]})):
            with pytest.raises(ValueError, match="out must not share memory with the weights"):
                getattr(lb, loss).grad(y_true, np.ones_like(out), out=out, backend=backend,
                                       **options)
        # nor the user's narrow class indices, which the quick path casts to int64
        narrow = grid32.reshape(-1)[:4].view(np.int32)  # (labels 0)
        with pytest.raises(ValueError, match="out must not share memory with y_true"):
            lb.cross_entropy.grad(narrow, np.ones_like(grid32), out=grid32, backend=backend)


def test_numba_runs_the_machine_code_of_a_plain_call_directly():
    """The Numba backend calls the compiled code of its elementwise kernels without their
    dispatcher, one version for writeable and read-only inputs (JAX's arrays are
    read-only), aligned or not (here an unaligned y_pred), with the same results."""
    pytest.importorskip("numba", reason="Numba is not installed")
    from lossbackends.backends import numba_backend

    usual_code = numba_backend.KERNELS["mse"].usual_code
    rng = np.random.default_rng(3)
    y, p = rng.random(1000), rng.random(1000)
    expected_value, expected_grad = lb.mse.value_and_grad(y, p, backend="numpy")
    value, grad = lb.mse.value_and_grad(y, p, backend="numba")
    np.testing.assert_allclose(value, expected_value, rtol=1e-12)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-12)
    # (variant, value, summed in the loop, dtype number, no gradient, no weight, no
    # pos_weight, no Hessian, streaming stores)
    key = (None, True, True, np.dtype(np.float64).num, False, True, True, True, False)
    assert key in usual_code
    code = usual_code[key]
    y.flags.writeable = p.flags.writeable = False
    value, grad = lb.mse.value_and_grad(y, p, backend="numba")
    assert usual_code[key] is code  # the same compiled code for read-only inputs
    np.testing.assert_allclose(value, expected_value, rtol=1e-12)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-12)
    unaligned = np.empty(p.nbytes + 1, np.uint8)[1:].view(p.dtype)
    unaligned[...] = p
    assert not unaligned.flags.aligned
    known = set(usual_code)
    value, grad = lb.mse.value_and_grad(y, unaligned, backend="numba")
    assert set(usual_code) == known and usual_code[key] is code
    np.testing.assert_allclose(value, expected_value, rtol=1e-12)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-12)
    # the code writes aligned arrays: an out= at an odd address is refused, on every backend
    for backend in ("numba", "numpy"):
        with pytest.raises(ValueError, match="aligned array, as numpy.empty gives"):
            lb.mse.value_and_grad(y, p, backend=backend, out=unaligned)


@pytest.mark.parametrize("loss", ["mse", "binary_cross_entropy", "huber"])
def test_numba_plain_calls_give_the_bits_of_the_general_path(loss):
    """A plain call (C-contiguous arrays, no option) runs the kernel's launch for it
    (``kernel.plain``); passing ``weight=None`` takes the general path through the
    preparation and the kernel's own choice of its code: the same bits, for every method,
    reduction, dtype (float16 through float32), shape, and a size shared among threads."""
    pytest.importorskip("numba", reason="Numba is not installed")
    from lossbackends.backends import numba_backend

    function = getattr(lb, loss)
    rng = np.random.default_rng(8)
    for dtype in (np.float16, np.float32, np.float64):
        for shape in ((1000,), (25, 40), (numba_backend.PARALLEL_MIN_ELEMENTS + 7,)):
            y = rng.random(shape).astype(dtype)
            p = rng.random(shape).astype(dtype)
            for reduction in ("mean", "sum"):
                for method in ("__call__", "grad", "value_and_grad"):
                    call = getattr(function, method)
                    with np.errstate(over="ignore"):  # float16's large sums: inf on both
                        plain = call(y, p, reduction=reduction, backend="numba")
                        general = call(y, p, reduction=reduction, backend="numba",
                                       weight=None)
                    if not isinstance(plain, tuple):
                        plain, general = (plain,), (general,)
                    for a, b in zip(plain, general, strict=True):
                        assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), (
                            dtype, shape, reduction, method)
    launched = {key[:4] for key in numba_backend.KERNELS[loss].plain}  # (less the options)
    assert (np.dtype(np.float32), "sum", True, False) in launched  # value_and_grad's
    assert (np.dtype(np.float64), "mean", False, False) in launched  # grad's
    assert (np.dtype(np.float64), "mean", True, True) in launched  # the value's


def test_a_loss_of_the_same_name_with_other_defaults_keeps_its_own():
    """The Numba backend's launches of plain calls are kept per kernel, which every Loss of
    one name shares: a Loss with other default options gets its own launch, not the first
    one made (and "none" gives an array that owns its memory, as on NumPy)."""
    pytest.importorskip("numba", reason="Numba is not installed")
    from lossbackends._prepare import prepare_huber

    def prepare(xp, y_true, y_pred, *, weight=None, delta=2.0):
        return prepare_huber(xp, y_true, y_pred, weight=weight, delta=delta)

    wide = lb.Loss("huber", prepare, "Huber with delta=2 by default")
    y, p = np.zeros(4), np.array([0.5, -2.0, 3.0, 1.5])
    assert lb.huber(y, p, backend="numba") == 1.28125  # (0.125 + 1.5 + 2.5 + 1) / 4
    assert wide(y, p, backend="numba") == 1.8125  # (0.125 + 2 + 4 + 1.125) / 4
    assert lb.huber(y, p, backend="numba") == 1.28125
    losses = wide(y, p, backend="numba", reduction="none")
    np.testing.assert_array_equal(losses, [0.125, 2.0, 4.0, 1.125])
    assert losses.flags.owndata


def test_numba_row_kernels_run_one_compiled_version_for_every_kind_of_input():
    """cross_entropy's and multiclass_hinge's Numba kernels run their machine code for
    writeable, read-only (JAX's) and unaligned logits and labels alike: no new version."""
    pytest.importorskip("numba", reason="Numba is not installed")
    from lossbackends.backends import _numba_row_common

    rng = np.random.default_rng(4)
    x, t = rng.standard_normal((16, 40)), rng.integers(0, 40, 16)
    for loss in (lb.cross_entropy, lb.multiclass_hinge):
        expected = loss.value_and_grad(t, x, backend="numpy")
        loss.value_and_grad(t, x, backend="numba")
        known = set(_numba_row_common._CODE)
        frozen_x, frozen_t = x.copy(), t.copy()
        frozen_x.flags.writeable = frozen_t.flags.writeable = False
        unaligned = np.empty(x.nbytes + 1, np.uint8)[1:].view(x.dtype).reshape(x.shape)
        unaligned[...] = x
        for labels, logits in ((frozen_t, frozen_x), (t, unaligned)):
            value, grad = loss.value_and_grad(labels, logits, backend="numba")
            np.testing.assert_allclose(value, expected[0], rtol=1e-12)
            np.testing.assert_allclose(grad, expected[1], rtol=1e-12, atol=1e-15)
        assert set(_numba_row_common._CODE) == known


def test_a_bad_label_is_named_by_its_index_in_y_true():
    t = np.zeros((3, 5), np.int64)
    t[2, 3] = 9
    with pytest.raises(ValueError, match=r"y_true\[2, 3\] = 9"):
        lb.cross_entropy(t, np.zeros((3, 4, 5)), axis=1, backend="numpy")


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


def _declared_for_type_checkers(module) -> list[str]:
    """The public names the module's ``if TYPE_CHECKING:`` block declares."""
    tree = ast.parse(inspect.getsource(module))
    (block,) = [node for node in tree.body if isinstance(node, ast.If)
                and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"]
    names = [node.name for node in block.body if isinstance(node, ast.ClassDef | ast.FunctionDef)]
    names += [target.id for node in block.body if isinstance(node, ast.Assign)
              for target in node.targets]
    return sorted(name for name in names if not name.startswith("_"))


@pytest.mark.parametrize("library", ["torch", "jax"])
def test_wrappers_declare_their_names_for_type_checkers(library):
    """lossbackends.torch's and .jax's functions (and torch's modules) are made at run time;
    a TYPE_CHECKING block declares them for mypy and pyright, and must name exactly
    __all__ (type checkers reported lbt.cross_entropy as unknown)."""
    pytest.importorskip(library, reason=f"{library} is not installed")
    module = importlib.import_module(f"lossbackends.{library}")
    assert _declared_for_type_checkers(module) == module.__all__
    assert all(isinstance(getattr(module, name), type) == name[0].isupper()
               for name in module.__all__)


@pytest.mark.parametrize(("library", "what"), [("torch", "PyTorch"), ("jax", "JAX")])
def test_a_missing_library_says_what_to_install(library, what):
    code = f"import sys; sys.modules[{library!r}] = None; import lossbackends.{library}"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert run.returncode == 1
    assert (f"ModuleNotFoundError: lossbackends.{library} needs {what}: pip install "
            f"'lossbackends[{library}]'") in run.stderr, run.stderr
    assert f"import of {library} halted" in run.stderr  # the original, chained
