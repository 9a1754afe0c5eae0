"""Every example in the package's docstrings and in the README runs, each once: the docs
site shows these docstrings (the docs' build runs only its pages' own examples, ci/docs).

doctest's finder skips the losses (``Loss`` instances, neither functions nor classes), so
their docstrings are parsed here; the torch and JAX forms have examples of their own."""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import lossbackends
from lossbackends.losses import LOSSES

FLAGS = doctest.NORMALIZE_WHITESPACE
MODULES = sorted(m.name for m in pkgutil.walk_packages(lossbackends.__path__, "lossbackends.")
                 if m.name != "lossbackends.__main__")


def _key(test: doctest.DocTest) -> tuple:
    return tuple((e.source, e.want) for e in test.examples)


def _loss_tests() -> list[doctest.DocTest]:
    parser = doctest.DocTestParser()
    return [parser.get_doctest(loss.__doc__, {}, f"lossbackends.{name}", None, 0)
            for name, loss in sorted(LOSSES.items())]


def _run(tests: list[doctest.DocTest]) -> None:
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in tests:
        runner.run(test)
    failed = runner.summarize(verbose=False).failed
    assert failed == 0, f"{failed} docstring example(s) failed; their output is above"


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_has_an_example_that_runs(name):
    (test,) = [t for t in _loss_tests() if t.name == f"lossbackends.{name}"]
    assert test.examples, f"lossbackends.{name}'s docstring has no example"
    _run([test])


def test_readme_examples():
    for module in ("torch", "jax", "xgboost", "lightgbm", "sklearn"):  # the tour uses them
        pytest.importorskip(module, reason=f"the README's tour imports {module} (ci/test "
                            "installs it)")
    readme = Path(__file__).resolve().parents[1] / "README.md"
    text = re.sub(r"^```.*$", "", readme.read_text(), flags=re.M)  # a fence ends the output
    test = doctest.DocTestParser().get_doctest(text, {}, "README.md", str(readme), 0)
    assert len(test.examples) >= 8
    _run([test])


def test_readme_loss_table_lists_every_loss_with_its_options_and_defaults():
    """The tour's table: one row per loss, its options (but reduction, weight and backend)
    with their defaults as the loss's signature has them, in its order."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \|([^|]*)\| [^|]+ \|$", readme, flags=re.M)
    assert sorted(name for name, _ in rows) == sorted(LOSSES)
    for name, options in rows:
        parameters = inspect.signature(LOSSES[name]._prepare_options).parameters
        expected = [f"{k}={parameters[k].default!r}" for k in LOSSES[name]._options
                    if k != "weight"]
        assert re.findall(r"`([^`]+)`", options) == expected, name


def test_a_loss_s_signature_shows_its_options():
    """What inspect.signature and IPython show of a loss: its options by name and default
    after reduction and backend, where the call itself takes **options."""
    assert str(inspect.signature(LOSSES["huber"])) == (
        "(y_true: Any, y_pred: Any, *, reduction: str = 'mean', "
        "backend: str | None = None, weight=None, delta=1.0) -> Any")
    for name, loss in LOSSES.items():
        parameters = inspect.signature(loss).parameters
        assert tuple(parameters) == ("y_true", "y_pred", "reduction", "backend",
                                     *loss._options), name


# a docs page's example that needs a GPU: ci/docs skips it without one, tests/test_gpu.py
# runs it on the card (ci/gpu)
_GPU_EXAMPLE = re.compile(r"```\{testcode\}\n:skipif: not have_cupy\n\n(.*?)```", re.S)


def gpu_examples() -> list[tuple[str, str]]:
    """(page, code) of each GPU example of the docs' pages."""
    docs = Path(__file__).resolve().parents[1] / "docs"
    return [(str(page), code) for page in sorted(docs.rglob("*.md"))
            for code in _GPU_EXAMPLE.findall(page.read_text())]


def test_the_docs_python_blocks_compile():
    """A page's ```python block (code shown, never run: it needs a cluster's scheduler)
    is Python at least, so that a renamed call cannot rot there unseen."""
    docs = Path(__file__).resolve().parents[1] / "docs"
    blocks = [(page, code) for page in sorted(docs.glob("guide/*.md"))
              for code in re.findall(r"```python\n(.*?)```", page.read_text(), re.S)]
    assert blocks
    for page, code in blocks:
        compile(code, str(page), "exec")


def test_the_gpu_examples_of_the_docs_are_found():
    """Every example the docs skip without a GPU is found for tests/test_gpu.py, and is
    Python; the pages' GPU examples are the ones with ``:skipif: not have_cupy``."""
    found = gpu_examples()
    pages = {Path(page).name for page, _ in found}
    assert {"arrays.md", "gpu.md"} <= pages
    docs = Path(__file__).resolve().parents[1] / "docs"
    marked = sum(page.read_text().count(":skipif: not have_cupy") for page in docs.rglob("*.md"))
    assert len(found) == marked
    for page, code in found:
        compile(code, page, "exec")


@pytest.mark.parametrize("modname", MODULES)
def test_module_examples(modname):
    try:
        module = importlib.import_module(modname)
    except ModuleNotFoundError as exc:  # cupy_backend without CuPy; torch.py, jax.py without
        if (exc.name or "").startswith("lossbackends"):  # ours: a bug, not a missing library
            raise
        pytest.skip(f"{modname} cannot be imported here: {exc}")
    seen = {_key(t) for t in _loss_tests()}  # run by the test above
    tests = [t for t in doctest.DocTestFinder().find(module, modname)
             if t.examples and _key(t) not in seen]
    _run(tests)


@pytest.mark.parametrize("modname", [m for m in MODULES if m.startswith("lossbackends.backends.")])
def test_each_backend_module_imports_first(modname):
    """Each backend module imports on its own, first, in a fresh process: the modules import
    one another, and a cycle among them fails only when one of them is imported first
    (the test above imports them after the package, in one process)."""
    run = subprocess.run([sys.executable, "-c", f"import {modname}"], capture_output=True,
                         text=True, cwd=Path(__file__).resolve().parents[1])
    for package, why in _OPTIONAL.items():
        if f"ModuleNotFoundError: No module named '{package}'" in run.stderr:
            pytest.skip(why)
    assert run.returncode == 0, run.stderr


# the optional packages a backend module imports, and why a test of it skips without them
_OPTIONAL = {"cupy": "CuPy is not installed",
             "cuda": "cuda-bindings is not installed (pip install 'lossbackends[kernels]')"}
