"""What the row losses' tests share (``test_row_losses``, ``test_row_losses_extremes``):
tolerances per dtype, the comparison against a float64 reference, and cross-entropy's
inputs and options."""

from __future__ import annotations

import numpy as np
from conftest import BACKENDS, _skip_reason, host

TOL = {np.float16: 2e-2, np.float32: 2e-5, np.float64: 1e-11}
REDUCTIONS = ("mean", "sum", "none")
RUNNABLE = [b for b in BACKENDS if _skip_reason(b) is None]  # (the tests that loop over them)


def assert_close(actual, expected, dtype, what):
    """Within ``TOL`` relative, and absolute to a fifth of it times the largest finite
    expected magnitude: a softmax's small entries are checked too (an absolute ``TOL``
    passed every entry under it), and a few roundings of the largest are allowed anywhere
    (the label's p - 1 cancels; softcap's slope 1 - t^2 from the rounded t is within 7e-7
    absolute in float32, numerics.md, times a coefficient that may exceed the largest
    entry)."""
    tol = TOL[dtype]
    expected = np.asarray(expected, np.float64)
    finite = np.abs(expected[np.isfinite(expected)])
    largest = float(finite.max()) if finite.size else 0.0
    np.testing.assert_allclose(np.asarray(host(actual), np.float64), expected, rtol=tol,
                               atol=tol * 0.2 * largest, err_msg=what)


def ce_inputs(rows, classes, dtype, seed=0, ignore_index=-100):
    """(labels, logits) of ``rows`` x ``classes``, every fifth row from the second ignored."""
    r = np.random.default_rng(seed)
    x = (r.normal(size=(rows, classes)) * 4).astype(dtype)
    labels = r.integers(0, classes, rows)
    labels[1::5] = ignore_index  # ignored rows
    return labels, x


# cross_entropy's options, alone and together ("w": ``options_for`` puts class weights)
CE_OPTIONS = [
    {"z_loss": 1e-2},
    {"softcap": 3.0},
    {"z_loss": 0.1, "softcap": 2.0},
    {"z_loss": 0.1, "label_smoothing": 0.2},
    {"z_loss": 0.1, "class_weight": "w"},
    {"softcap": 2.5, "label_smoothing": 0.1, "class_weight": "w"},
    {"z_loss": 0.05, "softcap": 1.5, "label_smoothing": 0.3, "class_weight": "w",
     "ignore_index": 2},
]


def options_for(options, classes):
    """``options`` with ``class_weight="w"`` made ``classes`` weights from 0.5 to 2."""
    options = dict(options)
    if options.get("class_weight") == "w":
        options["class_weight"] = np.linspace(0.5, 2.0, classes)
    return options
