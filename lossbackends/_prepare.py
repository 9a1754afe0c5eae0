"""The arguments of every loss, checked once for all backends.

Each loss has a ``prepare`` function here: it turns ``(y_true, y_pred, **options)`` into
canonical arrays (dtypes, shapes, contiguity) and the options into the numbers the
kernels take (``Prepared``), and raises the errors that name the fix. Kernels never check
again. ``Loss`` (``_loss.py``) calls it; ``losses.py`` pairs each with its ``Loss``. The
losses with a class axis have theirs in ``_prepare_rows.py``, on the checks here.
"""

from __future__ import annotations

import contextvars
import math
import numbers
import operator
import sys
from typing import Any, NamedTuple

import numpy as np

from . import _dispatch
from .backends._host import cast_quietly

FLOAT_DTYPES = frozenset(map(np.dtype, (np.float16, np.float32, np.float64)))


class Prepared(NamedTuple):
    """Canonical arguments for a kernel, plus what the front needs to shape the results."""

    y: Any
    p: Any
    weight: Any
    params: tuple  # the loss's options as the kernel takes them (numbers, arrays or None)
    scale: float  # what "mean" multiplies the sum and the gradient by (1 with a class axis:
    # those kernels find the denominator themselves)
    shape: tuple  # y_pred's shape as the user passed it
    value_shape: tuple  # the shape of ``reduction="none"`` results
    # None: the kernel works in y_pred's own shape (elementwise losses). cross_entropy's
    # kernel works on (rows, classes) with the classes last; this is their axis in y_pred.
    class_axis: int | None = None


# --- argument checking, shared by every loss and backend -------------------------------


def as_prediction(xp: Any, y_pred: Any, contiguous: bool = True) -> Any:
    """``y_pred`` as a float16/32/64 array; integers and bools become float64."""
    p = xp.asarray(y_pred)
    if p.dtype not in FLOAT_DTYPES:
        native = p.dtype.newbyteorder("=")  # byte-swapped data is computed natively
        if native in FLOAT_DTYPES:
            p = p.astype(native)
        elif p.dtype.kind in "biu":
            p = p.astype(xp.float64)
        else:
            got = f" (from a {type(y_pred).__name__})" if p.dtype == object else ""
            # a loss passed where a booster takes an objective: it calls obj(preds, data)
            library = type(y_pred).__module__.partition(".")[0]
            named = {"xgboost": "an XGBoost", "lightgbm": "a LightGBM"}.get(library)
            boosting = (f"; a loss is not {named} objective: pass "
                        f"lossbackends.{library}.objective(loss)" if named else "")
            raise TypeError(
                f"y_pred has dtype {p.dtype}{got}; pass a float16, float32 or float64 array "
                f"(integer and bool arrays are computed as float64){boosting}"
            )
    if contiguous and not p.flags.c_contiguous:
        p = xp.ascontiguousarray(p)
    return p


def refuse_masked(y_true: Any, y_pred: Any, options: dict[str, Any]) -> None:
    """Refuse NumPy masked arrays among the arguments: ``asarray`` would drop the mask,
    and the masked elements would count in the loss."""
    # not imported, or being imported by another thread: no masked array exists yet
    masked = getattr(sys.modules.get("numpy.ma"), "MaskedArray", None)
    if masked is None:
        return
    for name, value in (("y_true", y_true), ("y_pred", y_pred), *options.items()):
        if isinstance(value, masked):
            raise TypeError(
                f"{name} is a masked array (numpy.ma), whose mask a loss would ignore; pass "
                "plain arrays: the elements to keep (numpy.ma.compressed), or the data with a "
                "weight of 0 where masked")


def as_values(xp: Any, values: Any, dtype: np.dtype, name: str) -> Any:
    """A real-valued array (``y_true``, a weight) cast to the computation's dtype,
    C-contiguous: the kernels index it in C order (``astype`` alone keeps a column-major
    layout, which a GPU kernel would read in the wrong order)."""
    a = xp.asarray(values)
    if a.dtype == dtype:
        return a if a.flags.c_contiguous else xp.ascontiguousarray(a)
    if a.dtype.kind not in "biuf":
        # (ml_dtypes' bfloat16 and float8 are of kind "V": NumPy cannot compute on them)
        cast = (f" ({name}.astype(numpy.float32))" if a.dtype.kind == "V"
                and "float" in a.dtype.name else "")
        raise TypeError(f"{name} has dtype {a.dtype}; pass a real (bool, integer or float16/32/"
                        f"64) array{cast}")
    return cast_quietly(a, dtype, order="C")  # (beyond the dtype's largest: inf, as data)


def as_sample_weight(xp: Any, weight: Any, dtype: np.dtype) -> Any:
    """``weight=`` as ``as_values`` casts it; on the host, a finite weight beyond the
    largest number of y_pred's dtype, inf there (every loss infinite, NaN where it is 0;
    float16's 65504 is a realistic weight), is refused as ``pos_weight``'s is. The cast
    itself reports it, no pass of its own; not on a GPU, which would be waited for, nor
    inside lossbackends.jax's callbacks (``CHECK_VALUES``)."""
    if not (xp is np and CHECK_VALUES.get()):
        return as_values(xp, weight, dtype, "weight")
    a = np.asarray(weight)
    if a.dtype == dtype or a.dtype.kind not in "iuf":  # no cast, exact (bool), or refused
        return as_values(np, a, dtype, "weight")
    try:
        with np.errstate(all="ignore", over="raise"):  # (a weight's underflow: a result)
            return a.astype(dtype, order="C")
    except FloatingPointError:
        raise ValueError(f"weight has values beyond the largest {np.dtype(dtype)} number "
                         f"({float(np.finfo(dtype).max)!r}; y_pred's dtype, where weights are "
                         "cast); pass smaller weights (the loss scales with them), or y_pred "
                         "in a wider dtype") from None


def same_device(name: str, value: Any, p: Any) -> None:
    """Arrays must live with y_pred; a plain scalar (Python or NumPy) goes anywhere."""
    if isinstance(value, (int, float, np.generic)):
        return
    if _dispatch.device_of(value) != _dispatch.device_of(p):
        raise ValueError(
            f"{name} lives on a different device from y_pred; move it first "
            "(cupy.asarray or cupy.asnumpy)"
        )


def check_same_shape(y_shape: tuple, p_shape: tuple) -> None:
    """An elementwise loss's y_true and y_pred: one shape, exactly."""
    if y_shape != p_shape:
        raise ValueError(
            f"y_true has shape {y_shape} but y_pred has shape {p_shape}; they must match "
            "exactly (only weight broadcasts; reshape one of them)"
        )


def broadcast_weight(xp: Any, weight: Any, shape: tuple, rows: bool = False) -> Any:
    """``weight`` broadcast to ``shape`` (``rows``: one weight per row, the labels' shape),
    or the error that says it does not broadcast."""
    try:
        return xp.broadcast_to(weight, shape)
    except ValueError:
        whose = "the labels' shape" if rows else "y_pred's shape"
        per_row = " (one weight per row)" if rows else ""
        raise ValueError(f"weight has shape {weight.shape}, which does not broadcast to "
                         f"{whose} {shape}{per_row}") from None


def prepare_elementwise(xp, y_true, y_pred, *, weight=None) -> Prepared:
    """The canonical arguments of an elementwise loss; ``params`` is ``()`` (a loss with
    options of its own puts them there)."""
    p = as_prediction(xp, y_pred)
    dtype = p.dtype
    y = as_values(xp, y_true, dtype, "y_true")
    shape = p.shape
    check_same_shape(y.shape, shape)
    if weight is not None:
        same_device("weight", weight, p)
        weight = as_sample_weight(xp, weight, dtype)
        if weight.shape != shape:
            full = broadcast_weight(xp, weight, shape)
            # a view where no element repeats; else a writeable copy: NumPy's broadcast
            # views are read-only, a type of their own to Numba (one more compilation)
            weight = weight.reshape(shape) if weight.size == full.size else full.copy()
    n = p.size
    return Prepared(y, p, weight, (), 1.0 / n if n else 1.0, shape, shape)


# --- the preparation of each loss: its options, checked once for every backend ---------

# The clip bound of binary_cross_entropy is eps raised to the dtype's machine epsilon
# (the contract's max(eps, finfo(dtype).eps)), so 1 - eps stays < 1 and the gradient,
# at most 1 / (e (1 - e)), stays finite in the dtype: float16's is 1024 at its bound
# (float32's epsilon there gave 8.4e6, inf once rounded to float16).
_EPS = {np.dtype(t): float(np.finfo(t).eps) for t in (np.float16, np.float32, np.float64)}


prepare_mse = prepare_elementwise  # mse has no option of its own


def prepare_bce(xp, y_true, y_pred, *, weight=None, eps=1e-15):
    prep = prepare_elementwise(xp, y_true, y_pred, weight=weight)
    eps = real_option("binary_cross_entropy", "eps", eps, 0.0, 0.5, high_open=True)
    return prep._replace(params=(max(eps, _EPS[prep.p.dtype]),))


def prepare_bce_with_logits(xp, y_true, y_pred, *, weight=None, pos_weight=None):
    prep = prepare_elementwise(xp, y_true, y_pred, weight=weight)
    p = prep.p
    if pos_weight is not None:
        same_device("pos_weight", pos_weight, p)
        if xp.asarray(pos_weight).dtype == bool:  # (as every real option's bool; torch too)
            raise TypeError("binary_cross_entropy_with_logits: pos_weight must be a real "
                            "number or array, not a bool")
        if xp is np and CHECK_VALUES.get():  # (not on a GPU: that would wait for it)
            _check_weights("binary_cross_entropy_with_logits", "pos_weight",
                           "the weight of a positive label", pos_weight, p.dtype)
        pw = as_values(xp, pos_weight, p.dtype, "pos_weight")
        last = p.shape[-1] if p.ndim else 1
        if pw.ndim > 1 or pw.size not in (1, last):
            # torch's per-channel (C, 1, 1) for (N, C, H, W): the channels must come last
            channels = ("; for one weight per channel C of (N, C, ...) y_pred, as a "
                        "(C, 1, 1) pos_weight gives in torch, move the channels last "
                        "(y_true and y_pred moveaxis(1, -1)) and pass a vector of length C"
                        if pw.ndim > 1 and pw.size == pw.shape[0] else "")
            raise ValueError(
                f"pos_weight has shape {pw.shape}; it broadcasts on the last axis, so pass a "
                f"scalar or a vector of length {last} (y_pred's last dimension){channels}"
            )
        pw = pw.reshape(-1)  # a writeable array either way (see prepare_elementwise)
        pos_weight = pw if pw.size == last else xp.broadcast_to(pw, (last,)).copy()
    return prep._replace(params=(pos_weight,))


# Whether the values of array options are checked (pos_weight's): off inside
# lossbackends.jax's callbacks, where an exception is undefined (a traced bad value then
# gives what the formula gives, NaN for an infinite one, as a bad label gives a NaN row)
CHECK_VALUES: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "lossbackends_check_values", default=True)


def _check_weights(loss: str, name: str, what: str, weights, dtype: np.dtype) -> None:
    """Host weights of a label or class (``pos_weight``, ``class_weight``): finite and >= 0
    (an infinite one made every loss and gradient NaN, silently), and within y_pred's dtype
    (they are cast there). A few numbers: checked on each call."""
    values = np.asarray(weights)
    if values.dtype.kind not in "biuf":
        return  # (as_values names the dtype)
    values = values.astype(np.float64).reshape(-1)
    bad = values[~((values >= 0.0) & np.isfinite(values))]
    if bad.size:
        raise ValueError(f"{loss}: {name} must be finite and >= 0 ({what}); got "
                         f"{float(bad[0])!r}")
    largest = float(np.finfo(dtype).max)
    if values.size and values.max() > largest:
        raise ValueError(f"{loss}: {name} = {float(values.max())!r} is beyond the largest "
                         f"{np.dtype(dtype)} (y_pred's dtype, where it is cast); pass smaller "
                         "weights, or y_pred in a wider dtype")


def prepare_hinge(xp, y_true, y_pred, *, weight=None, margin=1.0):
    prep = prepare_elementwise(xp, y_true, y_pred, weight=weight)
    return prep._replace(params=(margin_option("hinge", margin, prep.p.dtype),))


_INF = float("inf")


def computing_dtype(dtype) -> np.dtype:
    """The dtype the backends compute ``dtype``'s inputs in: float32 for float16."""
    return np.dtype(np.float32) if dtype == np.float16 else np.dtype(dtype)


def margin_option(loss: str, margin, dtype, *, squared: bool = False) -> float:
    """A margin loss's ``margin``: finite in the computing dtype (an infinite one makes
    every loss infinite, and ``inf - inf`` where a score is infinite too; a margin beyond
    float32's largest number is inf there), as weights are; ``squared`` (squared_hinge):
    at most the square root of its largest number, beyond which every loss near a score of
    0 is inf."""
    margin = real_option(loss, "margin", margin, -_INF, _INF, low_open=True, high_open=True)
    computing = computing_dtype(dtype)
    largest = float(np.finfo(computing).max)
    inputs = f"in which {np.dtype(dtype)} inputs are computed"
    fix = "; pass a smaller margin, or y_pred in a wider dtype"
    with np.errstate(all="ignore"):  # (what the kernels see: the margin in that dtype)
        if np.isinf(computing.type(margin)):
            raise ValueError(f"{loss}: margin = {margin!r} is beyond the largest {computing} "
                             f"number ({largest!r}), {inputs}{fix}")
    if squared and margin > math.sqrt(largest):
        raise ValueError(f"{loss}: margin = {margin!r} is beyond the square root of the "
                         f"largest {computing} number ({math.sqrt(largest)!r}), {inputs}: "
                         f"its loss overflows{fix}")
    return margin


def real_option(loss: str, name: str, value, low: float = -_INF, high: float = _INF, *,
                low_open: bool = False, high_open: bool = False) -> float:
    """A real option as a float in ``[low, high]`` (open at an end with ``low_open`` or
    ``high_open``), never NaN."""
    value = real_number(loss, name, value)
    if not ((low < value if low_open else low <= value)
            and (value < high if high_open else value <= high)):  # (NaN fails both)
        # (an infinite end that is allowed is closed: huber's delta may be inf)
        bounds = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{loss}: {name} must be in {bounds}; got {value}")
    return value


def _scalar(value):
    """A 0-d array or tensor as its Python number (what ``float()`` took before); anything
    else as it is."""
    if getattr(value, "ndim", None) == 0 and not isinstance(value, numbers.Number):
        item = getattr(value, "item", None)
        return value if item is None else item()
    return value


def real_number(loss: str, name: str, value) -> float:
    """A real option (a number of any real type or a 0-d array or tensor of one, not a bool)
    as a float: a string or None is a TypeError that names the option, not ``float()``'s
    message."""
    if type(value) is float:  # (most calls: the ABC check below takes a microsecond)
        return value
    value = _scalar(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{loss}: {name} must be a real number, not {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:  # an int (or Fraction) beyond float64's range
        raise ValueError(f"{loss}: {name} is beyond float64's range (about 1.8e308); pass "
                         "a float") from None


def int_option(loss: str, name: str, value) -> int:
    """An integer option (a Python or NumPy integer, not a bool): a float is refused, not
    truncated."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{loss}: {name} must be an integer, not a bool")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{loss}: {name} must be an integer, not {type(value).__name__}"
                        ) from None


def normal_option(prefix: str, name: str, value: float, dtype: np.dtype, what: str, *,
                  zero: bool = False, above: bool = False) -> float:
    """``value`` (>= 0), unless it is outside the normal numbers of the computing dtype
    (float32's for float16 ``dtype``): the kernels divide by it, or multiply by its
    reciprocal, which must be finite (and exact to its rounding). 0 passes with ``zero``,
    anything above the largest (inf included) with ``above``. ``prefix`` starts the
    message, ``what`` names the inputs (``logits``, ``inputs``)."""
    computing = computing_dtype(dtype)
    info = np.finfo(computing)
    tiny, largest = float(info.tiny), float(info.max)
    if not (tiny <= value <= largest or (zero and value == 0.0) or (above and value > largest)):
        bounds = f"at least {tiny!r}" if above else f"within [{tiny!r}, {largest!r}]"
        raise ValueError(
            f"{prefix}{name} must be {'0 or ' if zero else ''}{bounds} "
            f"(the normal {computing} numbers) for {np.dtype(dtype)} {what}; got {value!r}")
    return value


def bool_option(loss: str, name: str, value) -> bool:
    value = _scalar(value)
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{loss}: {name} must be True or False, not {value!r}")
    return bool(value)


prepare_mae = prepare_elementwise  # no option of its own
prepare_log_cosh = prepare_elementwise
prepare_soft_margin = prepare_elementwise


def prepare_huber(xp, y_true, y_pred, *, weight=None, delta=1.0):
    prep = prepare_elementwise(xp, y_true, y_pred, weight=weight)
    # torch.nn.functional.huber_loss requires delta > 0 too (inf: half the squared error);
    # one that rounds to 0 or a subnormal in the inputs' dtype would zero every loss
    delta = real_option("huber", "delta", delta, 0.0, _INF, low_open=True)
    return prep._replace(params=(normal_option("huber: ", "delta", delta, prep.p.dtype,
                                               "inputs", above=True),))


def prepare_smooth_l1(xp, y_true, y_pred, *, weight=None, beta=1.0):
    prep = prepare_elementwise(xp, y_true, y_pred, weight=weight)
    # beta = 0 is the absolute error, as in PyTorch; a negative beta is an error there too
    beta = real_option("smooth_l1", "beta", beta, 0.0, _INF, high_open=True)
    return prep._replace(params=(normal_option("smooth_l1: ", "beta", beta, prep.p.dtype,
                                               "inputs", zero=True),))


def prepare_squared_hinge(xp, y_true, y_pred, *, weight=None, margin=1.0):
    prep = prepare_elementwise(xp, y_true, y_pred, weight=weight)
    return prep._replace(params=(margin_option("squared_hinge", margin, prep.p.dtype,
                                                 squared=True),))


def prepare_sigmoid_focal(xp, y_true, y_pred, *, weight=None, alpha=0.25, gamma=2.0):
    prep = prepare_elementwise(xp, y_true, y_pred, weight=weight)
    if alpha is None:  # no balancing: alpha_t = 1 for every label
        positive, negative = 1.0, 1.0
    else:
        alpha = _scalar(alpha)  # (a 0-d array or tensor as its number: the same hint)
        if isinstance(alpha, (int, float, np.integer, np.floating)) and alpha < 0:
            raise ValueError(f"sigmoid_focal: alpha must be in [0, 1], or None for no balancing "
                             f"(torchvision's alpha=-1); got {alpha}")
        positive = real_option("sigmoid_focal", "alpha", alpha, 0.0, 1.0)
        negative = 1.0 - positive
    gamma = real_option("sigmoid_focal", "gamma", gamma, 0.0, _INF, high_open=True)
    computing = computing_dtype(prep.p.dtype)
    # beyond it the Hessian's gamma (gamma - 1) is inf, times a modulator of 0: NaN
    largest = float(np.sqrt(np.finfo(computing).max))
    if gamma > largest:
        raise ValueError(f"sigmoid_focal: gamma must be at most {largest!r} (the square root "
                         f"of the largest {computing} number) for {prep.p.dtype} inputs; got "
                         f"{gamma!r}")
    # alpha_t = a y + b (1 - y): (alpha, 1 - alpha) balanced, (1, 1) not
    return prep._replace(params=(positive, negative, gamma))


def prepare_poisson_nll(xp, y_true, y_pred, *, weight=None, log_input=True, full=False,
                         eps=1e-8):
    prep = prepare_elementwise(xp, y_true, y_pred, weight=weight)
    log_input = bool_option("poisson_nll", "log_input", log_input)
    eps = real_option("poisson_nll", "eps", eps, 0.0, _INF, high_open=True)
    computing = computing_dtype(prep.p.dtype)
    if not log_input and eps > float(np.finfo(computing).max):
        # (x + eps would be inf: every loss -inf, every gradient 1)
        raise ValueError(f"poisson_nll: eps = {eps!r} is beyond the largest {computing} number "
                         f"for {prep.p.dtype} inputs; pass a smaller eps (default 1e-8)")
    return prep._replace(params=(log_input, bool_option("poisson_nll", "full", full), eps))


def prepare_kl_div(xp, y_true, y_pred, *, weight=None, log_target=False):
    prep = prepare_elementwise(xp, y_true, y_pred, weight=weight)
    return prep._replace(params=(bool_option("kl_div", "log_target", log_target),))


def prepare_pinball(xp, y_true, y_pred, *, weight=None, quantile=0.5):
    prep = prepare_elementwise(xp, y_true, y_pred, weight=weight)
    quantile = real_option("pinball", "quantile", quantile, 0.0, 1.0)
    # 1 - quantile in float64, once for every backend: after a cast to float32 it lost the
    # small side (quantile 0.99999999: 0); the gradient below the target, 0 - quantile:
    # +0, not -0, for quantile 0
    return prep._replace(params=(quantile, 1.0 - quantile, 0.0 - quantile))
