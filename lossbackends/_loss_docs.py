"""The numpydoc sections every loss's docstring gets, written once: its parameters, the
options' entries (``_OPTION_DOCS``; "type, default" filled in from the preparing
function's signature), what the calls return, the errors, and the shared notes
(``with_conventions``, which ``_loss.Loss`` applies to each loss's own docstring).
"""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable

_LABELS_01 = "Labels or probabilities in [0, 1], shaped like ``y_pred``."
_LABELS_PM1 = "Labels, +1 or -1, shaped like ``y_pred``."
_CLASS_INDICES = "Class indices (integers, ``y_pred``'s shape without ``axis``)"
# y_true by loss, where the generic entry ("The targets, shaped like y_pred") would not say
# what it holds
_Y_TRUE = {
    "cross_entropy": f"{_CLASS_INDICES}, or probabilities shaped like ``y_pred``.",
    "multiclass_hinge": f"{_CLASS_INDICES}.",
    "binary_cross_entropy": _LABELS_01,
    "binary_cross_entropy_with_logits": _LABELS_01,
    "sigmoid_focal": f"{_LABELS_01[:-1]}; others are not checked: the loss is then "
                     "torchvision's formula as written (NaN where ``1 - p_t`` is negative "
                     "and ``gamma`` not an integer), the gradient and Hessian its "
                     "derivatives.",
    "hinge": _LABELS_PM1,
    "squared_hinge": _LABELS_PM1,
    "soft_margin": _LABELS_PM1,
    "kl_div": "Target probabilities (log-probabilities with ``log_target``), shaped like "
              "``y_pred``.",
    "poisson_nll": "Counts (the target of the Poisson rate), shaped like ``y_pred``.",
}
# each option's (type, meaning); "loss.option" where a loss's differs
_OPTION_DOCS = {
    "weight": ("array_like, optional", "Each element's weight, broadcast to ``y_pred``'s "
               "shape (see Notes)."),
    "multiclass_hinge.weight": ("array_like, optional", "Each row's weight, broadcast to "
                                "``y_true``'s shape (see Notes)."),
    "eps": ("float", "Probabilities are clipped to ``[e, 1 - e]``, ``e = max(eps, "
            "finfo(dtype).eps)``."),
    "poisson_nll.eps": ("float", "Added to ``y_pred`` inside the log when ``log_input`` "
                        "is False."),
    "pos_weight": ("float or array_like, optional", "The positive term's weight ``q``, a "
                   "scalar or a vector broadcast on the last axis (PyTorch's)."),
    "axis": ("int", "The class axis of ``y_pred``."),
    "class_weight": ("array_like of length C, optional", "Each class's weight ``w_c``."),
    "ignore_index": ("int", "A label that marks a row to ignore (loss and gradient 0)."),
    "label_smoothing": ("float", "``ε`` of the smoothed target ``(1 - ε) q + ε / C``, in "
                        "[0, 1]."),
    "z_loss": ("float", "PaLM's z-loss coefficient, finite and >= 0 (0: off)."),
    "softcap": ("float or None", "Logits capped at ``softcap tanh(x / softcap)`` first, "
                "finite and > 0 (None: off)."),
    "check_labels": ("bool", "Raise ``LabelError`` for a class index outside ``[0, C)``; "
                     "False skips the check (on a GPU, its one synchronisation) and gives "
                     "such a row NaN."),
    "margin": ("float", "The margin ``m``."),
    "delta": ("float", "Where the quadratic branch turns linear, > 0 (inf: half the "
              "squared error)."),
    "beta": ("float", "Where the quadratic branch turns linear, finite and >= 0 (0: "
             "``mae``)."),
    "alpha": ("float or None", "The positive class's balancing weight, in [0, 1] (None: "
              "no balancing)."),
    "gamma": ("float", "The focusing exponent, >= 0."),
    "log_input": ("bool", "Whether ``y_pred`` is the rate's log."),
    "full": ("bool", "Add Stirling's approximation of ``log(y!)``."),
    "log_target": ("bool", "Whether ``y_true`` holds log-probabilities."),
    "quantile": ("float", "The quantile ``τ``, in [0, 1]."),
}

_PARAMETERS = """Parameters
----------
y_true : array_like
{y_true}y_pred : array_like
{y_pred}{options}reduction : {{"mean", "sum", "none"}}, default "mean"
    The {units}' losses averaged ({mean}), summed, or each returned.
backend : {{"numpy", "numba", "cupy", "auto"}} or None, default None
    The backend that computes it; None follows ``lossbackends.use_backend``, then
    ``LOSSBACKENDS_BACKEND``, then the arrays' kind.

Returns
-------
value : scalar or array
    ``loss(...)``: in ``y_pred``'s dtype, a NumPy scalar for NumPy inputs, a 0-d array of
    ``y_pred``'s library for the others (an array of each {unit}'s loss for ``"none"``).
    ``.grad(...)`` returns the gradient, shaped like ``y_pred``; ``.value_and_grad(...)``
    both, from one pass; ``.grad_and_hess(...)`` the gradient and the Hessian's diagonal.
    ``.grad`` and ``.value_and_grad`` take ``out=`` (writeable, C-contiguous and aligned, as
    ``numpy.empty`` gives, shaped like ``y_pred``, ``y_pred`` itself allowed);
    ``.grad_and_hess`` takes ``out=(grad, hess)``.

Raises
------
ValueError
    For shapes that do not match, an unknown reduction or backend, an ``out=`` of the
    wrong shape, dtype, layout or device, or an option out of its range{labels}.
TypeError
    For an option the loss does not take or of the wrong type (a float where an integer
    goes is refused, not truncated), an ``out=`` that is not an array, or a NumPy masked
    array (a loss would ignore its mask).

Notes
-----
{shapes}{weights}Dtypes: computed in ``y_pred``'s floating dtype (float16 in float32 and rounded back;
integer or bool ``y_pred`` as float64); ``y_true`` and the weights are cast to it; host
sums accumulate in float64, in a fixed order (the same bits run to run).

Examples
--------
"""


_SHAPES = """Shapes: ``y_true`` and ``y_pred`` of one shape, any number of dimensions (0-d and empty
included){weight}; the gradient and the Hessian are shaped like ``y_pred``.

"""

_WEIGHTS = """Weights: ``weight`` multiplies each {unit}'s loss and gradient, and ``"mean"`` divides
the sum by the number of {unit}s, weighted or not, as torch's ``huber_loss`` does
(scikit-learn's ``sample_weight``, and torch's ``mse_loss`` and ``l1_loss``, divide by the
weights' sum: ``reduction="sum"``, then divide by ``weight.sum()``; ``lossbackends.torch``
follows torch).
A weight beyond the largest number of ``y_pred``'s dtype, where it is cast (65504 for
float16), is a ``ValueError`` on the host (not checked on a GPU, nor inside
``lossbackends.jax``'s traced calls, where it is inf).

"""


def _option_entries(name: str, options: list[inspect.Parameter]) -> str:
    """The numpydoc entries of the loss's own options, each with its default."""
    entries = []
    for parameter in options:
        kind, text = _OPTION_DOCS.get(f"{name}.{parameter.name}",
                                      _OPTION_DOCS[parameter.name])
        default = parameter.default
        if default is not None or "optional" not in kind:
            kind = f"{kind}, default {default!r}"
        entries.append(f"{parameter.name} : {kind}\n{_entry(text)}")
    return "".join(entries)


def _entry(text: str) -> str:
    """A numpydoc entry's description, indented and wrapped."""
    return "".join(f"    {line}\n" for line in textwrap.wrap(text, 84))


def with_conventions(doc: str, name: str, prepare: Callable, class_indices: bool) -> str:
    """``doc`` with the sections every loss shares before its example: its parameters,
    returns, errors and notes, in numpydoc's form."""
    unit = "row" if class_indices else "element"
    options = list(inspect.signature(prepare).parameters.values())[3:]
    weighted = any(option.name == "weight" for option in options)
    text = _PARAMETERS.format(
        y_true=_entry(_Y_TRUE.get(name, "The targets, shaped like ``y_pred``.")),
        mean="as described above" if class_indices else "over every element: see Notes",
        y_pred=_entry("Logits or scores, the classes on ``axis``." if class_indices
                      else "The predictions the gradient is taken with respect to."),
        options=_option_entries(name, options),
        unit=unit, units=f"{unit}s",
        labels=("; ``lossbackends.LabelError`` (a ``ValueError``) for a class index "
                "outside ``[0, C)``" if class_indices else ""),
        shapes="" if class_indices else _SHAPES.format(
            weight="; ``weight`` broadcasts to it" if weighted else ""),
        weights=_WEIGHTS.format(unit=unit) if weighted else "")
    lines = doc.split("\n")
    at = next((i for i, line in enumerate(lines) if line.lstrip().startswith(">>>")), len(lines))
    indent = " " * 4
    block = [(indent + line) if line else "" for line in text.split("\n")]
    return "\n".join(lines[:at] + block + lines[at:])
