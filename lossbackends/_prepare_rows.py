"""The arguments of the losses with a class axis (cross-entropy, multiclass hinge), checked
once for all backends, as ``_prepare`` does for the elementwise losses: logits as (rows,
classes) with the classes last, labels as int64 class indices (or probabilities shaped
like the logits), each option as the kernels take it, and the errors that name the fix.
"""

from __future__ import annotations

import numpy as np

from ._prepare import (
    _INF,
    CHECK_VALUES,
    Prepared,
    _check_weights,
    as_prediction,
    as_sample_weight,
    as_values,
    bool_option,
    broadcast_weight,
    int_option,
    margin_option,
    normal_option,
    real_number,
    real_option,
    same_device,
)
from .backends._host import label_error

_INT64 = np.iinfo(np.int64)


def class_indices(xp, t, classes: int, shape: tuple, check_labels: bool, ignore_index: int,
                   name: str, probabilities: bool):
    """Integer or bool class indices as int64. Labels int64 cannot hold (uint64 from 2^63,
    Python ints beyond) are out of range of every class: they raise the label error with
    their value as given, never wrapped (2^64 - 100 cast would be -100, ignore_index);
    with ``check_labels=False`` they become a negative label other than ``ignore_index``,
    so that their rows get NaN, like those of every other bad label. ``name``: the loss,
    which the error names; ``probabilities``: whether it takes them instead (its advice)."""
    wide = None  # where the labels are beyond int64
    if t.dtype.kind == "u" and t.dtype.itemsize == 8 and t.size:
        wide = t > _INT64.max
    elif t.dtype == object and xp is np:  # Python ints too large for any NumPy integer
        if all(isinstance(v, int) and not isinstance(v, bool) for v in t.flat):
            wide = np.array([not _INT64.min <= v <= _INT64.max for v in t.flat],
                            bool).reshape(t.shape)
    if wide is not None and wide.any():
        if check_labels:
            row = int(xp.flatnonzero(wide.reshape(-1))[0])
            raise label_error(int(t.reshape(-1)[row]), row, classes, loss=name)
        bad = -1 if ignore_index != -1 else -2
        if t.dtype == object:
            t = np.array([bad if w else v for v, w in zip(t.flat, wide.flat, strict=True)],
                         np.int64).reshape(t.shape)
        else:  # the wrapped values are all replaced
            t = xp.where(wide, xp.int64(bad), t.astype(xp.int64))
    if t.dtype.kind not in "biu":
        instead = f", or pass probabilities shaped like the logits {shape}" if probabilities else ""
        raise TypeError(
            f"y_true of shape {t.shape} holds class indices and must be integers, not "
            f"{t.dtype}; cast with .astype(int){instead}"
        )
    return t.astype(xp.int64, copy=False)


def class_axis(name: str, axis, ndim: int) -> int:
    """The class axis of logits with ``ndim`` dimensions, in [0, ndim), or the error that
    says what is wrong (a loss with a class axis: ``name``)."""
    if ndim == 0:
        raise ValueError(f"{name} needs logits with a class axis; got a 0-d y_pred")
    axis = int_option(name, "axis", axis)
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for logits with {ndim} dimensions")
    return axis % ndim


def target_shape_error(name: str, target, y_pred, shape: tuple, axis: int,
                       probabilities: bool) -> ValueError:
    """The error for a ``target`` (y_true) of a shape the logits of ``shape`` do not take;
    integer logits beside float labels suggest the arguments' order."""
    batch_shape = shape[:axis] + shape[axis + 1:]
    expected = f" or probabilities of shape {shape}" if probabilities else ""
    swapped = (target.dtype.kind == "f" and getattr(y_pred, "dtype", None) is not None
               and np.dtype(y_pred.dtype).kind in "biu")
    hint = ("; y_pred holds integers: is it the labels? the order is (y_true, y_pred)"
            if swapped else "")
    return ValueError(
        f"y_true has shape {tuple(target.shape)}; {name} with logits of shape {shape} and "
        f"axis={axis} expects class indices of shape {batch_shape}{expected}{hint}")


def class_axis_inputs(xp, y_true, y_pred, axis, name, probabilities, check_labels=True,
                       ignore_index=-100):
    """Logits with a class axis as (rows, classes), C-contiguous, the classes last, and
    y_true as int64 class indices (rows,) or (with ``probabilities``) probabilities shaped
    like the logits (rows, classes). Returns (target, x2d, shape, batch_shape, axis)."""
    x = as_prediction(xp, y_pred, contiguous=False)
    axis = class_axis(name, axis, x.ndim)
    shape = tuple(x.shape)
    classes = shape[axis]
    if classes == 0:
        raise ValueError(f"{name} needs at least one class; logits have shape {x.shape}")
    batch_shape = x.shape[:axis] + x.shape[axis + 1 :]
    t = xp.asarray(y_true)
    if axis != x.ndim - 1:
        x = xp.moveaxis(x, axis, -1)
    x2d = xp.ascontiguousarray(x).reshape(-1, classes)
    if probabilities and t.shape == shape:
        # Probabilities over the classes, shaped like the logits.
        t = as_values(xp, t, x2d.dtype, "y_true")
        if axis != t.ndim - 1:
            t = xp.moveaxis(t, axis, -1)
        target = xp.ascontiguousarray(t).reshape(-1, classes)
    elif t.shape == batch_shape:
        target = xp.ascontiguousarray(class_indices(xp, t, classes, shape, check_labels,
                                                     ignore_index, name, probabilities)
                                       ).reshape(-1)
    else:
        raise target_shape_error(name, t, y_pred, shape, axis, probabilities)
    return target, x2d, shape, batch_shape, axis


def prepare_cross_entropy(
    xp,
    y_true,
    y_pred,
    *,
    axis=-1,
    class_weight=None,
    ignore_index=-100,
    label_smoothing=0.0,
    z_loss=0.0,
    softcap=None,
    check_labels=True,
):
    ignore_index = int_option("cross_entropy", "ignore_index", ignore_index)
    check_labels = bool_option("cross_entropy", "check_labels", check_labels)
    if not _INT64.min <= ignore_index <= _INT64.max:
        raise ValueError(f"ignore_index must fit in int64; got {ignore_index}")
    target, x2d, shape, batch_shape, axis = class_axis_inputs(
        xp, y_true, y_pred, axis, "cross_entropy", probabilities=True,
        check_labels=check_labels, ignore_index=ignore_index)
    classes = shape[axis]
    if ignore_index >= 0 and target.ndim == 2:  # probabilities: no label to ignore
        # (PyTorch's rule too; a negative one, the default -100, cannot be a class)
        raise ValueError(
            f"ignore_index={ignore_index} applies to class indices; y_true holds probabilities "
            "(the logits' shape), which have no label to ignore: leave ignore_index at its "
            "default (to leave rows out, take reduction='none' and drop them)"
        )
    label_smoothing = real_option("cross_entropy", "label_smoothing", label_smoothing, 0.0, 1.0)
    z_loss = real_number("cross_entropy", "z_loss", z_loss)
    if not 0.0 <= z_loss < _INF:
        raise ValueError("cross_entropy: z_loss must be a finite number >= 0 (0 turns it off); "
                         f"got {z_loss}")
    if softcap is not None:
        softcap = real_number("cross_entropy", "softcap", softcap)
        if not 0.0 < softcap < _INF:
            raise ValueError(
                "cross_entropy: softcap must be a finite number > 0, or None for no capping; "
                f"got {softcap}")
        normal_option("cross_entropy: ", "softcap", softcap, x2d.dtype, "logits")
    if class_weight is not None:
        same_device("class_weight", class_weight, x2d)
        if xp is np and CHECK_VALUES.get():  # (not on a GPU: that would wait for it)
            _check_weights("cross_entropy", "class_weight", "the weight of each class",
                           class_weight, x2d.dtype)
        class_weight = as_values(xp, class_weight, x2d.dtype, "class_weight")
        if class_weight.shape != (classes,):
            raise ValueError(
                f"class_weight has shape {class_weight.shape}; pass one weight per class, "
                f"shape ({classes},)"
            )
    # the last: the mean's denominator when the caller knows it (a Dask block: the whole
    # array's), else None: the kernel finds it from the labels
    params = (ignore_index, label_smoothing, check_labels, z_loss, softcap, None)
    return Prepared(target, x2d, class_weight, params, 1.0, shape, batch_shape, axis)


def prepare_multiclass_hinge(xp, y_true, y_pred, *, weight=None, margin=1.0, axis=-1,
                             check_labels=True):
    check_labels = bool_option("multiclass_hinge", "check_labels", check_labels)
    labels, x2d, shape, batch_shape, axis = class_axis_inputs(
        xp, y_true, y_pred, axis, "multiclass_hinge", probabilities=False,
        check_labels=check_labels)
    margin = margin_option("multiclass_hinge", margin, x2d.dtype)
    if weight is not None:  # one per row: the labels' shape, broadcast
        same_device("weight", weight, x2d)
        w = broadcast_weight(xp, as_sample_weight(xp, weight, x2d.dtype), batch_shape,
                             rows=True)
        weight = xp.ascontiguousarray(w).reshape(-1)
    # the last: the mean's denominator (the row count) when the caller knows it (a Dask
    # block: the whole array's), else None: the kernel's own row count
    params = (margin, check_labels, None)
    return Prepared(labels, x2d, weight, params, 1.0, shape, batch_shape, axis)
