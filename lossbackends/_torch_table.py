"""``lossbackends.torch``'s table: for each loss, its name, signature, options and
docstring in torch's terms, and the example its docstring prints. Adding a loss to
``lossbackends.torch``: one ``Entry`` in ``TABLE`` and one line in ``EXAMPLES``; the
functions and ``nn.Module`` classes are made from them (``torch.py``). Plain data: torch is
not imported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import losses as _losses
from ._loss import Loss


@dataclass(frozen=True)
class Entry:
    """One loss of this module: how torch's arguments become ours.

    ``params``: the signature after ``(input, target)`` as ``(name, default)`` in torch's
    order; ``kwonly``: keyword-only extras of ours after them. ``tensors``: torch's tensor
    options and our names for them (at most two). ``floats`` / ``ints`` / ``bools``: number
    options, torch name -> ours; ``optional``: the floats that may be ``None``.
    ``per_row``: the loss has a class axis (dim 1, or 0 for unbatched input), one loss per
    row for ``"none"``. ``mean_by_weight``: ``"mean"`` divides by the weights' sum (torch's
    weighted MSE and L1). ``weight_like_input``: torch wants ``weight`` shaped like
    ``input``, and it takes part in the dtype promotion. ``dtypes``: torch's rule for an
    ``input`` and ``target`` of different dtypes: ``"promote"`` computes in
    ``torch.result_type`` (the input is cast, autograd casts its gradient back),
    ``"input"`` in ``input``'s dtype, ``"same"`` refuses two floating dtypes.
    ``batchmean``: ``reduction="batchmean"`` exists (``kl_div``).
    """

    loss: Loss
    module: str
    params: tuple[tuple[str, Any], ...]
    kwonly: tuple[tuple[str, Any], ...] = ()
    tensors: dict[str, str] = field(default_factory=dict)
    floats: dict[str, str] = field(default_factory=dict)
    optional: frozenset[str] = frozenset()
    ints: dict[str, str] = field(default_factory=dict)
    bools: dict[str, str] = field(default_factory=dict)
    per_row: bool = False
    mean_by_weight: bool = False
    weight_like_input: bool = False
    dtypes: str = "promote"
    batchmean: bool = False
    doc: str = ""


_LEGACY = (("size_average", None), ("reduce", None))
_OURS = (("reduction", "mean"), ("weight", None))  # our losses: reduction, then weight
_WEIGHT = {"weight": "weight"}

TABLE: dict[str, Entry] = {
    "mse_loss": Entry(
        _losses.mse, "MSELoss", (*_LEGACY, ("reduction", "mean"), ("weight", None)),
        tensors=_WEIGHT, mean_by_weight=True, weight_like_input=True,
        doc="``torch.nn.functional.mse_loss``: ``(input - target)^2``; with ``weight`` "
            "(input's shape), ``\"mean\"`` divides by ``weight.sum()`` as torch does."),
    "l1_loss": Entry(
        _losses.mae, "L1Loss", (*_LEGACY, ("reduction", "mean"), ("weight", None)),
        tensors=_WEIGHT, mean_by_weight=True, weight_like_input=True,
        doc="``torch.nn.functional.l1_loss`` (our ``mae``): ``|input - target|``, gradient "
            "0 at a tie; with ``weight`` (input's shape), ``\"mean\"`` divides by "
            "``weight.sum()`` as torch does."),
    "huber_loss": Entry(
        _losses.huber, "HuberLoss", (("reduction", "mean"), ("delta", 1.0), ("weight", None)),
        tensors=_WEIGHT, floats={"delta": "delta"}, weight_like_input=True, dtypes="input",
        doc="``torch.nn.functional.huber_loss`` (our ``huber``); with ``weight`` (input's "
            "shape), ``\"mean\"`` divides by the number of elements as torch does. Computed "
            "in ``input``'s dtype, as torch, or with a ``weight`` of a wider dtype in that "
            "one, the result's dtype torch gives (it computes the loss in ``input``'s "
            "dtype, then multiplies by the weight): float32 with a float64 weight gives "
            "float64, within float32's rounding of torch's."),
    "smooth_l1_loss": Entry(
        _losses.smooth_l1, "SmoothL1Loss", (*_LEGACY, ("reduction", "mean"), ("beta", 1.0)),
        floats={"beta": "beta"},
        doc="``torch.nn.functional.smooth_l1_loss`` (our ``smooth_l1``); ``beta=0`` is "
            "``l1_loss``."),
    "soft_margin_loss": Entry(
        _losses.soft_margin, "SoftMarginLoss", (*_LEGACY, ("reduction", "mean")),
        dtypes="input",
        doc="``torch.nn.functional.soft_margin_loss`` (our ``soft_margin``): "
            "``log(1 + exp(-target * input))``, labels ±1. Computed in ``input``'s dtype, as "
            "torch."),
    "poisson_nll_loss": Entry(
        _losses.poisson_nll, "PoissonNLLLoss",
        (("log_input", True), ("full", False), ("size_average", None), ("eps", 1e-8),
         ("reduce", None), ("reduction", "mean")),
        floats={"eps": "eps"}, bools={"log_input": "log_input", "full": "full"},
        doc="``torch.nn.functional.poisson_nll_loss`` (our ``poisson_nll``)."),
    "kl_div": Entry(
        _losses.kl_div, "KLDivLoss", (*_LEGACY, ("reduction", "mean"), ("log_target", False)),
        bools={"log_target": "log_target"}, batchmean=True,
        doc="``torch.nn.functional.kl_div`` (our ``kl_div``): ``input`` holds "
            "log-probabilities; ``reduction=\"batchmean\"`` divides the sum by "
            "``input.size(0)`` (the divergence's definition), ``\"mean\"`` by the number of "
            "elements, with torch's warning. A target probability of 0 costs 0, also "
            "where torch gives NaN: beside an input of ``-inf``, and with "
            "``log_target=True`` a target of ``-inf``."),
    "binary_cross_entropy": Entry(
        _losses.binary_cross_entropy, "BCELoss",
        (("weight", None), *_LEGACY, ("reduction", "mean"), ("eps", 1e-15)),
        tensors=_WEIGHT, floats={"eps": "eps"}, dtypes="same",
        doc="``torch.nn.functional.binary_cross_entropy`` on probabilities; ``input`` is "
            "clipped to ``[e, 1 - e]``, ``e = max(eps, finfo(dtype).eps)`` (torch clamps "
            "each log at -100 instead: equal losses for ``input`` in ``[e, 1 - e]``, and "
            "gradients where ``input (1 - input) >= 1e-12``, torch's backward's floor; in "
            "float64 ours, the exact derivative, differs within about 1e-12 of 0 and 1). "
            "A floating ``target`` must have ``input``'s dtype, as in torch."),
    "binary_cross_entropy_with_logits": Entry(
        _losses.binary_cross_entropy_with_logits, "BCEWithLogitsLoss",
        (("weight", None), *_LEGACY, ("reduction", "mean"), ("pos_weight", None)),
        tensors={"weight": "weight", "pos_weight": "pos_weight"},
        doc="``torch.nn.functional.binary_cross_entropy_with_logits``; ``pos_weight`` is a "
            "scalar or a vector over the last dimension (torch's ``(C, 1, 1)`` for "
            "``(N, C, H, W)`` is refused: move the classes last, ``input.movedim(1, -1)`` "
            "and the same for ``target``). Mixed dtypes are promoted "
            "(``torch.result_type``; torch itself gives ``target``'s dtype)."),
    "cross_entropy": Entry(
        _losses.cross_entropy, "CrossEntropyLoss",
        (("weight", None), ("size_average", None), ("ignore_index", -100), ("reduce", None),
         ("reduction", "mean"), ("label_smoothing", 0.0)),
        kwonly=(("z_loss", 0.0), ("softcap", None), ("check_labels", True)),
        tensors={"weight": "class_weight"},
        floats={"label_smoothing": "label_smoothing", "z_loss": "z_loss", "softcap": "softcap"},
        optional=frozenset({"softcap"}), ints={"ignore_index": "ignore_index"},
        bools={"check_labels": "check_labels"}, per_row=True,
        doc="``torch.nn.functional.cross_entropy``: logits with the classes on dim 1 (dim 0 "
            "unbatched), class indices or probabilities as ``target``; ``weight`` are class "
            "weights. A class index outside ``[0, C)`` that is not ``ignore_index`` raises "
            "``ValueError``. Keyword-only extras of ours (Liger-Kernel's): ``z_loss`` "
            "(PaLM's ``z * lse^2`` per row) and ``softcap`` (``c * tanh(x / c)`` first); "
            "and ``check_labels=False``: such a row's loss and gradient are NaN instead, "
            "with no synchronisation on a GPU (for CUDA graphs)."),
    "hinge": Entry(
        _losses.hinge, "HingeLoss", (("margin", 1.0), *_OURS),
        tensors=_WEIGHT, floats={"margin": "margin"},
        doc="Our ``hinge``: ``max(0, margin - target * input)``, labels ±1 used as given."),
    "squared_hinge": Entry(
        _losses.squared_hinge, "SquaredHingeLoss", (("margin", 1.0), *_OURS),
        tensors=_WEIGHT, floats={"margin": "margin"},
        doc="Our ``squared_hinge``: ``max(0, margin - target * input)^2``, labels ±1."),
    "log_cosh": Entry(
        _losses.log_cosh, "LogCoshLoss", _OURS, tensors=_WEIGHT,
        doc="Our ``log_cosh``: ``log(cosh(input - target))``, computed without overflow."),
    "sigmoid_focal": Entry(
        _losses.sigmoid_focal, "SigmoidFocalLoss", (("alpha", 0.25), ("gamma", 2.0), *_OURS),
        tensors=_WEIGHT, floats={"alpha": "alpha", "gamma": "gamma"},
        optional=frozenset({"alpha"}),
        doc="Our ``sigmoid_focal``, in ``torchvision.ops.sigmoid_focal_loss``'s argument "
            "order ``(input, target, alpha, gamma, reduction)``; unlike torchvision, "
            "``reduction`` defaults to ``\"mean\"`` (as every loss here) and no balancing "
            "is ``alpha=None`` (torchvision's ``alpha=-1``)."),
    "pinball": Entry(
        _losses.pinball, "PinballLoss", (("quantile", 0.5), *_OURS),
        tensors=_WEIGHT, floats={"quantile": "quantile"},
        doc="Our ``pinball`` (quantile) loss, ``quantile`` in [0, 1]."),
    "multiclass_hinge": Entry(
        _losses.multiclass_hinge, "MulticlassHingeLoss", (("margin", 1.0), *_OURS),
        kwonly=(("check_labels", True),), tensors=_WEIGHT, floats={"margin": "margin"},
        bools={"check_labels": "check_labels"}, per_row=True,
        doc="Our ``multiclass_hinge`` (Crammer-Singer: the largest other class's margin "
            "violation per row): scores with the classes on dim 1 (dim 0 unbatched), one "
            "class index per row, ``weight`` one per row. Not ``torch.nn.functional."
            "multi_margin_loss``, which sums the violations over the classes and divides by "
            "C (Weston-Watkins). A class index outside ``[0, C)`` raises ``ValueError``; "
            "``check_labels=False`` gives its row NaN instead, with no synchronisation on a "
            "GPU."),
}

# the docstrings' examples: input, target, options, and what they print (the value, then
# input's gradient); lossbackends/jax.py has the same data in its own argument order
_V, _P2 = "[0.5, -1.0, 2.0]", "[[2.0, 1.0, 0.1], [0.5, 0.2, 3.0]]"
EXAMPLES: dict[str, tuple[str, str, str, str, str]] = {
    "mse_loss": (_V, "[0.0, 0.0, 1.0]", "", "0.7500", "tensor([ 0.3333, -0.6667,  0.6667])"),
    "l1_loss": (_V, "[0.0, 0.0, 1.0]", "", "0.8333", "tensor([ 0.3333, -0.3333,  0.3333])"),
    "huber_loss": ("[0.5, -1.0, 3.0]", "[0.0, 0.0, 1.0]", "", "0.7083",
                   "tensor([ 0.1667, -0.3333,  0.3333])"),
    "smooth_l1_loss": ("[0.5, -1.0, 3.0]", "[0.0, 0.0, 1.0]", "beta=0.5", "0.9167",
                       "tensor([ 0.3333, -0.3333,  0.3333])"),
    "soft_margin_loss": (_V, "[1.0, -1.0, -1.0]", "", "0.9714",
                         "tensor([-0.1258,  0.0896,  0.2936])"),
    "poisson_nll_loss": (_V, "[1.0, 0.0, 3.0]", "", "0.9686", "tensor([0.2162, 0.1226, 1.4630])"),
    "kl_div": ("[[-1.6, -1.2, -0.7]]", "[[0.1, 0.6, 0.3]]", "reduction='batchmean'", "0.1921",
               "tensor([[-0.1000, -0.6000, -0.3000]])"),
    "binary_cross_entropy": ("[0.9, 0.2, 0.6]", "[1.0, 0.0, 0.0]", "", "0.4149",
                             "tensor([-0.3704,  0.4167,  0.8333])"),
    "binary_cross_entropy_with_logits": (_V, "[1.0, 0.0, 0.0]", "", "0.9714",
                                         "tensor([-0.1258,  0.0896,  0.2936])"),
    "cross_entropy": (_P2, "[0, 2]", "label_smoothing=0.1", "0.4120",
                      "tensor([[-0.1372,  0.1045,  0.0326],\n"
                      "        [ 0.0192,  0.0099, -0.0292]])"),
    "hinge": (_V, "[1.0, -1.0, -1.0]", "", "1.1667", "tensor([-0.3333,  0.0000,  0.3333])"),
    "squared_hinge": (_V, "[1.0, -1.0, -1.0]", "", "3.0833",
                      "tensor([-0.3333,  0.0000,  2.0000])"),
    "log_cosh": (_V, "[0.0, 0.0, 1.0]", "", "0.3292", "tensor([ 0.1540, -0.2539,  0.2539])"),
    "sigmoid_focal": (_V, "[1.0, 0.0, 0.0]", "", "0.4238",
                      "tensor([-0.0115,  0.0131,  0.2692])"),
    "pinball": (_V, "[0.0, 0.0, 1.0]", "quantile=0.9", "0.3500",
                "tensor([ 0.0333, -0.3000,  0.0333])"),
    "multiclass_hinge": (_P2, "[1, 2]", "", "1.0000",
                         "tensor([[ 0.5000, -0.5000,  0.0000],\n"
                         "        [ 0.0000,  0.0000,  0.0000]])"),
}
