"""Dask arrays through the same calls: a graph of one task per block, each running our fused
kernel once.

Every block task computes its gradient block and its share of the value (the losses of
``reduction="none"``, or a partial sum) in one kernel call, with the whole array's mean
scale, so each gradient block has the bits the in-memory call gives it. The partials are
added by Dask's tree reduction in float64, in an order fixed by the chunks: the same
chunks give the same bits. Losses with a class axis (``cross_entropy``) need that axis in
one chunk; their ``"mean"`` with class indices divides by the kept rows' summed weights,
found first by a pass over the labels alone (never a second pass over the logits).

Nothing here imports Dask until a Dask array is passed, and nothing is computed until the
caller asks: results are lazy Dask arrays. ``value`` and ``grad`` share their block tasks,
so computing them together (``dask.compute(value, grad)``) runs the kernel once per block.
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _dispatch
from ._compute import _WANT_GRAD, compute
from ._prepare import as_prediction, broadcast_weight, check_same_shape
from ._prepare_rows import class_axis, target_shape_error
from .backends._host import _up

_DASK_TYPES: dict[type, bool] = {}


def is_dask_array(x: object) -> bool:
    """Whether ``x`` is a ``dask.array.Array``, from its type alone (cached; Dask is never
    imported to find out)."""
    kind = type(x)
    found = _DASK_TYPES.get(kind)
    if found is None:
        found = _DASK_TYPES[kind] = (
            kind.__module__.startswith("dask.array") and hasattr(kind, "__dask_graph__")
        )
    return found


@dataclass(frozen=True)
class _Spec:
    """What every block task of one call needs besides its blocks."""

    loss: str
    backend: str
    options: tuple  # (name, value) pairs: the options that are the same for every block
    reduction: str  # the block's reduction: "none", "sum" or "mean" (with `scale`)
    scale: float  # "mean" of an elementwise loss: 1 / (the whole array's size)
    want_value: bool
    want_grad: bool
    want_hess: bool = False
    class_axis: int | None = None
    batch_shape: tuple = ()  # a loss with a class axis: the shape of its rows, for errors
    denominator: float | None = None  # "mean" of a loss with a class axis, when known now


def run(loss, y_true, y_pred, reduction: str, backend: str | None, options: dict,
        want_value: bool, out: Any, hess: Any = None) -> tuple[Any, ...]:
    """``loss`` on Dask arrays (either argument): lazy ``(value, grad)`` with ``y_pred``'s
    chunks (``None`` where not asked); ``(value, grad, hess)`` when ``hess`` is given."""

    if (out is not None and out is not _WANT_GRAD) or (hess is not None and hess is not _WANT_GRAD):
        raise ValueError(
            "out= cannot be used with Dask arrays (they are lazy and immutable); drop out= "
            "and compute or store the returned gradient (dask.array.store writes it into an "
            "array of yours)"
        )
    want_grad = out is not None
    for name, a in (("y_true", y_true), ("y_pred", y_pred)):
        meta = getattr(a, "_meta", a)
        if type(meta).__module__.partition(".")[0] not in ("numpy", "cupy", "builtins"):
            kind = f"{type(meta).__module__}.{type(meta).__qualname__}"
            raise TypeError(
                f"{name} is {f'a Dask array of {kind} chunks' if is_dask_array(a) else kind}: "
                "Dask arrays of NumPy or CuPy chunks are supported (with NumPy or CuPy "
                "arrays beside them); convert, e.g. x.map_blocks(numpy.asarray)"
            )
    p = y_pred if is_dask_array(y_pred) else _cut(loss, y_pred, y_true, options)
    for name, a in (("y_true", y_true), ("y_pred", p), ("weight", options.get("weight"))):
        if is_dask_array(a) and any(math.isnan(c) for chunks in a.chunks for c in chunks):
            raise ValueError(
                f"{name} has chunks of unknown size (after boolean indexing, say); call "
                f"{name}.compute_chunk_sizes() first"
            )
    backend_name = _dispatch.backend_for(backend, p._meta)
    dtype = _result_dtype(p.dtype)
    for name, value in options.items():
        if name != "weight" and is_dask_array(value):
            raise TypeError(
                f"{name} is a Dask array; pass it as a NumPy or CuPy array (it is small and "
                "goes to every block as it is)"
            )
    wants = (want_value, want_grad, hess is not None)
    if p.size == 0:
        return _in_memory(loss, y_true, p, reduction, backend_name, options, want_value, out,
                          hess)
    if loss._class_indices:
        return _rows(loss, y_true, p, reduction, backend_name, options, wants, dtype)
    return _elementwise(loss, y_true, p, reduction, backend_name, options, wants, dtype)


def _cut(loss, y_pred, y_true, options):
    """An in-memory ``y_pred`` beside a Dask ``y_true``, as a Dask array: cut as ``y_true``
    is where their shapes agree, else in Dask's own chunks, but with the class axis of a
    loss that has one whole (its blocks are whole rows; Dask's own chunks cut the class
    axis of large logits, which the caller could not fix on an in-memory array)."""
    import dask.array as da

    x = y_pred if hasattr(y_pred, "shape") and hasattr(y_pred, "dtype") else np.asarray(y_pred)
    if not loss._class_indices:
        return da.from_array(x, chunks=y_true.chunks if y_true.shape == x.shape else "auto")
    axis = class_axis(loss.name, options.get("axis", -1), x.ndim)
    return da.from_array(x, chunks=tuple(-1 if i == axis else "auto" for i in range(x.ndim)))


def _in_memory(loss, y_true, p, reduction, backend, options, want_value, out, hess):
    """An empty input: nothing to cut into blocks, so the in-memory call gives the results
    (its warning for the mean included), wrapped as Dask arrays."""
    import dask.array as da

    xp = _dispatch.load_backend(backend).xp
    y = y_true.compute() if is_dask_array(y_true) else y_true
    options = {k: (v.compute() if is_dask_array(v) else v) for k, v in options.items()}
    results = loss._run(y, xp.empty(p.shape, p.dtype), reduction, backend, options,
                        want_value, out, hess)
    return tuple(None if a is None else _as_dask(da, xp, a) for a in results)


def _as_dask(da, xp, a):
    """An in-memory result as a Dask array; a scalar (a reduced value) as one that computes
    to that scalar, as the blocks' sum does (``from_array`` would give a 0-d array)."""
    if isinstance(a, np.generic):  # (CuPy's reduced values are 0-d arrays, as in memory)
        import dask

        return da.from_delayed(dask.delayed(a), shape=(), dtype=a.dtype)
    return da.from_array(xp.asarray(a))


def _check_options(loss, p, y_dtype, y_small_shape, options, kept_axis: int,
                   y_shape: tuple):
    """Run the loss's own checks on tiny stand-ins (the arrays' dtypes; the kept axis at
    full length, every other axis of length 1 or 0), so that bad options raise now, not at
    compute time. A message that names a stand-in's shape as y_true's, y_pred's or the
    logits' names the array's (``y_shape``, y_pred's): only after those words, so that
    the shape of another argument (a weight of shape (1,)) is never renamed."""
    small = tuple(d if i == kept_axis else min(d, 1) for i, d in enumerate(p.shape))
    options = dict(options)
    weight = options.get("weight")
    if weight is not None:  # its dtype checked; its shape is checked by the caller
        options["weight"] = np.ones((), getattr(weight, "dtype", np.float64))
    y_small = y_small_shape(small)
    try:
        loss._prepare(np, np.zeros(y_small, y_dtype), np.zeros(small, p.dtype), **options)
    except (TypeError, ValueError) as exc:
        message = str(exc)
        for words, stand_in, shape in (("y_true of shape ", y_small, y_shape),
                                       ("y_true has shape ", y_small, y_shape),
                                       ("y_pred has shape ", small, p.shape),
                                       ("the logits ", small, p.shape),
                                       ("logits of shape ", small, p.shape)):
            message = message.replace(f"{words}{tuple(stand_in)}", f"{words}{tuple(shape)}")
        if message == str(exc):
            raise
        try:
            renamed = type(exc)(message)
        except Exception:  # an error class of other arguments: as it was
            raise exc from None
        raise renamed from None


def _elementwise(loss, y_true, p, reduction, backend, options, wants, dtype):
    import dask.array as da

    y = da.asarray(y_true)
    check_same_shape(y.shape, p.shape)
    options = dict(options)
    weight = options.pop("weight", None)
    pos_weight = options.get("pos_weight")
    _check_options(loss, p, y.dtype, lambda small: small, dict(options, weight=weight),
                   p.ndim - 1, y.shape)
    index = string.ascii_letters[: p.ndim]
    args = [y.rechunk(p.chunks), index, p, index]
    if weight is not None:
        w = broadcast_weight(da, da.asarray(weight), p.shape)
        args += [w.rechunk(p.chunks), index]
    else:
        args += [None, None]
    if pos_weight is not None and getattr(pos_weight, "size", np.size(pos_weight)) > 1 and p.ndim:
        # a vector along the last axis: each block takes its own stretch of it
        last = p.shape[-1]
        vector = (pos_weight if hasattr(pos_weight, "reshape") else np.asarray(pos_weight)
                  ).reshape(-1)
        vector = vector if vector.size == last else vector.repeat(last)
        options.pop("pos_weight")
        args += [da.from_array(vector, chunks=(p.chunks[-1],)), index[-1]]
    else:
        args += [None, None]
    spec = _Spec(loss.name, backend, tuple(options.items()), reduction,
                 1.0 / p.size if reduction == "mean" else 1.0, *wants)
    pairs = da.blockwise(_elementwise_block, index, *args, dtype=dtype, meta=_meta(p, dtype),
                         spec=spec, token=f"lossbackends-{loss.name}")
    return _results(pairs, p, spec, dtype)


def _elementwise_block(y, p, weight, pos_weight, *, spec: _Spec):
    loss = _loss_named(spec.loss)
    options = dict(spec.options)
    if weight is not None:
        options["weight"] = weight
    if pos_weight is not None:
        options["pos_weight"] = pos_weight
    return _compute_block(loss, spec, y, p, options)


def _rows(loss, y_true, p, reduction, backend, options, wants, dtype):
    """A loss with a class axis (``cross_entropy``, ``multiclass_hinge``): blocks of whole
    rows."""
    import dask.array as da

    options = dict(options)
    axis = options.pop("axis", -1)
    name = loss.name
    axis = class_axis(name, axis, p.ndim)
    if len(p.chunks[axis]) != 1:
        raise ValueError(
            f"the class axis ({axis}) of y_pred is cut into {len(p.chunks[axis])} chunks; "
            f"each row must be one chunk: y_pred = y_pred.rechunk({{{axis}: -1}})"
        )
    y = da.asarray(y_true)
    batch_shape = p.shape[:axis] + p.shape[axis + 1:]
    batch_chunks = p.chunks[:axis] + p.chunks[axis + 1:]
    index = string.ascii_letters[: p.ndim]
    batch_index = index[:axis] + index[axis + 1:]
    probabilities = name == "cross_entropy"  # (multiclass_hinge takes class indices only)
    soft = probabilities and y.shape == p.shape
    if not soft and y.shape != batch_shape:
        raise target_shape_error(name, y, p, tuple(p.shape), axis, probabilities)
    _check_options(loss, p, y.dtype,
                   lambda small: small if soft else small[:axis] + small[axis + 1:],
                   dict(options, axis=axis), axis, y.shape)
    if soft:
        y, y_index = y.rechunk(p.chunks), index
    else:
        y, y_index = y.rechunk(batch_chunks), batch_index
    # "mean": the row count with probabilities; with class indices, a lazy scalar from a
    # pass over the labels
    denominator = labels_denominator = None
    row_loss = loss.name != "cross_entropy"  # multiclass_hinge: no ignored rows
    # multiclass_hinge's weight= (one per row, the labels' shape, broadcast): cut as the
    # rows are, each block its own stretch; its mean divides by the row count all the same
    row_weight = None
    if options.get("weight") is not None:
        row_weight = broadcast_weight(da, da.asarray(options.pop("weight")), batch_shape,
                                      rows=True).rechunk(batch_chunks)
    kept_rows = None
    if reduction == "mean":
        if soft or row_loss:
            denominator = float(math.prod(batch_shape))
        else:
            classes = p.shape[axis]
            labels_denominator = _label_weight_sum(y, options, dtype, classes)
            if options.get("z_loss") and options.get("class_weight") is not None:
                # the z-loss's mean divides by the kept rows' count, not by their summed
                # class weights (as in memory): a second pass, the count
                kept_rows = _label_weight_sum(y, dict(options, class_weight=None), dtype,
                                              classes)
    # where each block starts along each row axis, to name a bad label's global row
    starts = []
    for letter, chunks in zip(batch_index, batch_chunks, strict=True):
        offsets = np.cumsum((0, *chunks[:-1]))
        starts += [da.from_array(offsets, chunks=1), letter]
    spec = _Spec(loss.name, backend, tuple(options.items()), reduction, 1.0, *wants, axis,
                 batch_shape, denominator)
    pairs = da.blockwise(
        _rows_block, index, y, y_index, p, index,
        *((labels_denominator, "") if labels_denominator is not None else (None, None)),
        *((kept_rows, "") if kept_rows is not None else (None, None)),
        *((row_weight, batch_index) if row_weight is not None else (None, None)),
        *starts, dtype=dtype, meta=_meta(p, dtype), spec=spec, align_arrays=False,
        token=f"lossbackends-{loss.name}",
    )
    return _results(pairs, p, spec, dtype, drop_axis=axis)


def _label_weight_sum(labels, options, dtype, classes):
    """The ``"mean"``'s denominator with class indices: the summed class weights of the
    kept rows (their count without weights), by a pass over the labels alone. The weights
    are rounded to the computation's dtype first, as the kernels see them. A label outside
    ``[0, classes)`` (a NaN row with ``check_labels=False``, else an error) is not kept."""
    class_weight = options.get("class_weight")
    if class_weight is not None:
        if not hasattr(class_weight, "astype"):
            class_weight = np.asarray(class_weight)
        class_weight = class_weight.astype(dtype).astype(np.float64)
    parts = labels.map_blocks(_label_weights_block, ignore_index=options.get("ignore_index", -100),
                              class_weight=class_weight, classes=classes,
                              chunks=(1,) * labels.ndim, dtype=np.float64,
                              meta=_meta(labels, np.float64))
    return parts.sum(dtype=np.float64)


def _label_weights_block(labels, *, ignore_index, class_weight, classes):
    kept = labels[(labels != ignore_index) & (labels >= 0) & (labels < classes)]
    # (as indices: bool labels would index class_weight as a mask)
    total = kept.size if class_weight is None else class_weight[kept.astype(np.intp)].sum()
    # in the labels' array type (NumPy or CuPy), as the graph's meta says
    return np.full_like(labels, float(total), dtype=np.float64, shape=(1,) * labels.ndim)


def _rows_block(t, x, denominator, kept_rows, weight, *starts, spec: _Spec):
    from .backends._host import LabelError, label_error

    loss = _loss_named(spec.loss)
    options = dict(spec.options, axis=spec.class_axis)
    if weight is not None:  # (multiclass_hinge's, one per row of the block)
        options["weight"] = weight
    if denominator is not None:  # found by the pass over the labels
        denominator = float(denominator)
    z_scale = None
    if kept_rows is not None and float(kept_rows) > 0:
        # z-loss with class weights, "mean": the kernels scale z by the summed weights over
        # the kept rows' count where they find both themselves; given the whole array's
        # denominator, they take z as it is, so it comes scaled
        z_scale = denominator / float(kept_rows)
    try:
        return _compute_block(loss, spec, t, x, options,
                              spec.denominator if denominator is None else denominator,
                              z_scale)
    except LabelError as exc:
        batch = x.shape[: spec.class_axis] + x.shape[spec.class_axis + 1:]
        local = np.unravel_index(exc.row, batch)
        where = tuple(int(s[0]) + int(i) for s, i in zip(starts, local, strict=True))
        flat = int(np.ravel_multi_index(where, spec.batch_shape))
        raise label_error(exc.label, flat, exc.classes,
                          f"y_true[{', '.join(map(str, where))}]", exc.loss) from None


def _compute_block(loss, spec: _Spec, y, p, options, denominator=None, z_scale=None):
    """One block's ``(gradient or None, losses or partial sum or None, Hessian or None)``;
    a row loss's ``denominator`` (its mean's) and ``cross_entropy``'s ``z_scale`` (its
    z-loss's factor) given by the caller, after the options' checks."""
    backend = _dispatch.load_backend(spec.backend)
    xp = backend.xp
    want_value, reduction = spec.want_value, spec.reduction
    if p.size == 0:  # an empty block inside a non-empty array: nothing to add
        dtype = _result_dtype(p.dtype)
        grad = xp.empty(p.shape, dtype) if spec.want_grad else None
        hess = xp.empty(p.shape, dtype) if spec.want_hess else None
        if reduction != "none":
            return grad, _partial(xp, p, 0.0), hess
        # no losses, shaped as the block's share of the result (its rows, for a class axis)
        axis = spec.class_axis
        shape = p.shape if axis is None else p.shape[:axis] + p.shape[axis + 1:]
        return grad, (xp.empty(shape, dtype) if want_value else None), hess
    prep = loss._prepare(xp, y, p, **options)
    if spec.class_axis is None:
        prep = prep._replace(scale=spec.scale)
    elif denominator is not None:
        params = (*prep.params[:-1], denominator)
        if z_scale is not None:  # (ignore_index, smoothing, check_labels, z_loss, softcap, _)
            params = (*params[:3], params[3] * z_scale, *params[4:])
        prep = prep._replace(params=params)
    # float16 computes in float32 (the contract), as the host kernels do (``in_float32``):
    # here in the block's call itself, so that its partial sum stays float32 (rounded to
    # float16 before the float64 sum of the blocks, the value came 1 ulp off the
    # in-memory call's), the gradient and Hessian rounded to float16 after, as there
    half = xp is np and prep.p.dtype == np.float16 and want_value and reduction != "none"
    if half:
        prep = prep._replace(y=_up(prep.y), p=_up(prep.p), weight=_up(prep.weight),
                             params=tuple(map(_up, prep.params)))
    value, grad, *hess = compute(xp, _dispatch.kernel_for(loss.name, spec.backend), prep, y,
                                 reduction, want_value, _WANT_GRAD if spec.want_grad else None,
                                 _WANT_GRAD if spec.want_hess else None)
    hess = hess[0] if hess else None
    if half:
        with np.errstate(all="ignore"):  # (beyond float16's range: inf, as in memory)
            grad, hess = (None if a is None else a.astype(np.float16) for a in (grad, hess))
    if want_value and reduction != "none":
        value = _partial(xp, p, value)
    return grad, value, hess


def _result_dtype(dtype) -> np.dtype:
    """The dtype of the results for ``y_pred`` of ``dtype``: its own floating dtype, float64
    for integers and bools (as the in-memory call's)."""
    return as_prediction(np, np.empty(0, dtype)).dtype


def _partial(xp, p, value):
    """A block's share of the value as a float64 array of one element per axis."""
    return xp.asarray(value, dtype=np.float64).reshape((1,) * p.ndim)


def _results(pairs, p, spec: _Spec, dtype, drop_axis=None):
    import dask.array as da

    grad = value = hess = None
    if spec.want_grad:
        grad = pairs.map_blocks(_first, dtype=dtype, meta=_meta(p, dtype),
                                token="lossbackends-grad")
    if spec.want_hess:
        hess = pairs.map_blocks(_third, dtype=dtype, meta=_meta(p, dtype),
                                token="lossbackends-hess")
    if spec.want_value:
        if spec.reduction == "none" and drop_axis is None:
            value = pairs.map_blocks(_second, dtype=dtype, meta=_meta(p, dtype),
                                     token="lossbackends-losses")
        elif spec.reduction == "none":  # one loss per row: the class axis (one block) goes
            index = string.ascii_letters[: p.ndim]
            value = da.blockwise(_second_of_row, index.replace(index[drop_axis], ""), pairs,
                                 index, dtype=dtype, meta=_meta(p, dtype, p.ndim - 1),
                                 token="lossbackends-losses")
        else:
            ones = tuple((1,) * len(c) for c in p.chunks)
            partials = pairs.map_blocks(_second, chunks=ones, dtype=np.float64,
                                        meta=_meta(p, np.float64), token="lossbackends-partials")
            # Dask's tree sum in float64: its order is fixed by the chunks
            value = partials.sum(dtype=np.float64).astype(dtype)
    return (value, grad, hess) if spec.want_hess else (value, grad)


def _first(pair):
    return pair[0]


def _second(pair):
    return pair[1]


def _third(triple):
    return triple[2]


def _second_of_row(pairs):
    """Blockwise hands over the blocks along a dropped axis as a list: here one block."""
    (pair,) = pairs
    return pair[1]


def _meta(a, dtype, ndim=None):
    """An empty array of ``a``'s chunk type (NumPy or CuPy): what Dask calls ``meta``."""
    shape = (0,) * (a.ndim if ndim is None else ndim)
    return np.empty_like(a._meta, dtype=dtype, shape=shape)


def _loss_named(name: str):
    from .losses import LOSSES

    return LOSSES[name]
