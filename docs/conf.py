"""Sphinx configuration: the API reference from the docstrings, the user guide in MyST.

Built by ``bash ci/docs`` (warnings are errors). Nothing here needs a GPU, CuPy or the
network: intersphinx is off, MathJax is loaded by the reader's browser.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's package, whatever is installed
sys.path.insert(0, str(Path(__file__).parent / "_ext"))

import lossbackends  # noqa: E402

project = "lossbackends"
author = "the lossbackends developers"
copyright = "2026, the lossbackends developers"
release = version = lossbackends.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.doctest",
    "myst_parser",
    "lossdocs",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]
root_doc = "index"
nitpicky = False

# --- API reference ---------------------------------------------------------------------
autosummary_generate = True
autosummary_ignore_module_all = False  # a module's public names are its __all__
autosummary_imported_members = False
autodoc_typehints = "signature"
autodoc_member_order = "bysource"
autodoc_default_options = {"exclude-members": "__init__"}
autodoc_inherit_docstrings = False  # torch.nn.Module's forward and extra_repr are not ours
napoleon_google_docstring = False
napoleon_numpy_docstring = True

# --- MyST prose -------------------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "dollarmath", "deflist"]
myst_heading_anchors = 3

# --- doctest builder: the examples of the guide's pages ----------------------------------
# Docstring examples (plain ">>>" blocks pulled in by autodoc) run in the test suite
# (tests/test_docstrings.py), so this builder runs only the pages' own {doctest} and
# {testcode} blocks, not those a second time.
doctest_test_doctest_blocks = ""
doctest_global_setup = """
import numpy as np
import lossbackends as lb

try:  # the GPU examples run where CuPy has a device, and are skipped elsewhere
    import cupy
    have_cupy = cupy.cuda.runtime.getDeviceCount() > 0
except Exception:
    have_cupy = False
"""

# --- HTML -------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"lossbackends {version}"
html_static_path: list[str] = []
html_theme_options = {
    "navigation_depth": 2,
    "show_toc_level": 2,
    "navbar_align": "left",
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_context = {"default_mode": "auto"}
html_show_sourcelink = False
