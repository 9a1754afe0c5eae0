"""The CuPy backend: launches the CUDA kernels of ``kernels/`` on CuPy arrays.

Kernels are compiled on first use by NVRTC (``_nvrtc``: cached on disk; not through
CuPy's compile, which flushes float32 subnormals to zero), loaded with
``cupy.RawModule(path=...)`` and memoised here per device, with the launch parameters and
the small workspaces (per-block partial sums, the mean's scale, the label-error flag) per
device, stream and thread, so a call allocates only what it returns. Nothing here
synchronises with the host, except the documented label checks of ``cross_entropy`` and
``multiclass_hinge`` (``check_labels=False`` skips them).
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading

import cupy as cp
import numpy as np

from .. import _dispatch
from .._arrays import HALF_IS_BFLOAT16
from .._cuda_sources import (
    HESS_STREAM,
    LONGEST_ROWS,
    LOSS_IDS,
    MH_WARP_CLASSES,
    MH_WARP_ROWS,
    ROW_CONFIGS,
    ROW_STREAM,
    ROWS_MAX_CLASSES,
    SMALL_CLASSES,
    SMALL_ROWS,
    STREAM,
    TYPE_NAMES,
    RowConfig,
    StreamConfig,
    cross_entropy_expressions,
    elementwise_expressions,
    multiclass_hinge_expressions,
    small_expression,
)
from ._host import label_error

xp = cp

BLOCK = 256  # threads per block of the elementwise kernel
MAX_BLOCKS_PER_SM = 8  # 8 x 256 threads fill an SM, if the registers allow
SINGLE_BLOCK_MAX = 8192  # up to here one block writes the value: a single launch
# the options of an elementwise loss, three numbers as its preparation gives them (a
# loss with fewer is padded with zeros): kernels/losses.cuh reads them
_NO_OPTIONS = (0.0, 0.0, 0.0)


def device_count() -> int:
    try:
        return cp.cuda.runtime.getDeviceCount()
    except cp.cuda.runtime.CUDARuntimeError:
        return 0


class _Device:
    """What is cached per GPU: compiled functions, properties, workspaces per stream."""

    def __init__(self, device_id: int):
        props = cp.cuda.runtime.getDeviceProperties(device_id)
        self.sm_count = props["multiProcessorCount"]
        self.capability = (props["major"], props["minor"])
        # a block's most shared memory with the opt-in (sm_75 64 KiB, sm_80 99 KiB, sm_90
        # 227 KiB): a streaming setting staging more falls back to its unstaged kernel
        self.shared_optin = props.get("sharedMemPerBlockOptin", 48 * 1024)
        self._functions: dict[tuple[str, str], object] = {}
        self._shared: dict[int, int] = {}  # id(function) -> its dynamic shared memory opt-in
        self._local = threading.local()  # each thread's workspaces (see ``workspace``)

    def function(self, filename: str, expressions: list[str], expression: str):
        found = self._functions.get((filename, expression))
        if found is None:
            for name, function in _load(filename, expressions, self.capability).items():
                self._functions[filename, name] = function
            found = self._functions[filename, expression]
        return found

    def opt_in_shared(self, function, size: int) -> None:
        """Let ``function`` launch with ``size`` bytes of dynamic shared memory (where its
        static and dynamic shared memory pass 48 KiB it must ask first), once per
        function."""
        if self._shared.get(id(function), 0) < size:
            function.max_dynamic_shared_size_bytes = size
            self._shared[id(function)] = size

    def workspace(self, name: str, size: int, dtype, zeroed: bool = False) -> cp.ndarray:
        """A scratch buffer of at least ``size`` elements, reused by this thread's calls on
        this stream: kernels on one stream run in order, so reuse is safe. Not shared with
        other threads: their calls on the same stream (the default stream is every
        thread's) would launch between ours, a call's partial sums summed as another's."""
        workspaces = getattr(self._local, "workspaces", None)
        if workspaces is None:
            workspaces = self._local.workspaces = {}
        key = (cp.cuda.get_current_stream().ptr, name)
        buffer = workspaces.get(key)
        if buffer is None or buffer.size < size or buffer.dtype != dtype:
            buffer = (cp.zeros if zeroed else cp.empty)(max(size, 1), dtype)
            workspaces[key] = buffer
        return buffer


def _labels_pass(device: _Device, function, labels: cp.ndarray, classes: int,
                 ignore_index: int, class_weight=None, acc=np.float32, scale: bool = False,
                 error: cp.ndarray | None = None) -> cp.ndarray | None:
    """Launch ``ce_labels``: the label check into ``error`` and, with ``scale``, the "mean"'s
    gradient scale (returned, on the device). With ``error``, the flag's copy to the host
    follows it on the stream, asynchronously (pinned memory), and an event after the copy:
    the call launches its main kernels before ``_label_check`` waits for that event, so the
    card runs them while the host waits, and the host returns before they end."""
    rows = labels.size
    blocks = min(-(-rows // 4096), device.sm_count * 2)
    partials = done = scale_buffer = None
    if scale:
        partials = device.workspace("label_weights", blocks, acc)
        # (the blocks count themselves here; the last sets it back to 0 for the next call)
        done = device.workspace("label_blocks", 1, np.uint32, zeroed=True)
        scale_buffer = device.workspace("mean_scale", 1, acc)
    function((blocks,), (1024,), (labels, np.int64(rows), class_weight, np.int64(classes),
                                  np.int64(ignore_index), partials, done, scale_buffer, error))
    if error is not None:
        local = device._local
        if getattr(local, "flag", None) is None:
            local.flag = np.ndarray(1, np.int32, buffer=cp.cuda.alloc_pinned_memory(4))
            local.flag_copied = cp.cuda.Event(disable_timing=True)
        error[:1].get(out=local.flag, blocking=False)
        local.flag_copied.record()
    return scale_buffer


@contextlib.contextmanager
def _label_check(device: _Device, error: cp.ndarray | None, labels: cp.ndarray, classes: int,
                 ignore_index: int, loss: str):
    """Around a call's launches after ``_labels_pass``: then waits for the flag's copy (the
    one documented synchronisation) and raises the first bad label's LabelError. When the
    launches raise, it waits for the copy all the same and clears the flag, so that no later
    call reads this call's flag, on the device or in the thread's pinned copy."""
    if error is None:
        yield
        return
    local = device._local
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):  # (best effort: the call's own error stands)
            local.flag_copied.synchronize()
            error.fill(0)
        raise
    _wait(local.flag_copied)
    if not local.flag[0]:
        return
    error.fill(0)
    host_labels = cp.asnumpy(labels)
    bad = np.flatnonzero((host_labels != ignore_index)
                         & ((host_labels < 0) | (host_labels >= classes)))
    if bad.size:  # (always: only a bad label sets the flag)
        row = int(bad[0])
        raise label_error(int(host_labels[row]), row, classes, loss=loss)


def _wait(event) -> None:
    """The host waits for ``event``; under a CUDA graph's capture, which forbids that, an
    error that names the fix instead of CUDA's."""
    try:
        event.synchronize()
    except cp.cuda.runtime.CUDARuntimeError as exc:
        try:
            capturing = cp.cuda.get_current_stream().is_capturing()
        except Exception:  # noqa: BLE001 (the capture's state unknown: CUDA's error stands)
            capturing = False
        if capturing:
            raise RuntimeError(
                "the label check waits for the GPU, which a CUDA graph capture does not "
                "allow: pass check_labels=False to the calls you capture") from exc
        raise


def _load(filename: str, expressions: list[str], capability: tuple[int, int]) -> dict:
    """``kernels/<filename>``'s functions by name expression, for a device of this compute
    capability."""
    try:
        from . import _nvrtc  # (cuda.bindings: imported with the first kernel)
    except ImportError as exc:
        raise ImportError(
            "the CuPy backend compiles its kernels with NVRTC through cuda-bindings: "
            "pip install 'lossbackends[cuda13]' (or [cuda12], matching your CuPy)") from exc

    path, lowered = _nvrtc.cached(filename, expressions, _nvrtc.target(*capability))
    module = cp.RawModule(path=str(path))
    return {name: module.get_function(lowered[name]) for name in expressions}


_DEVICES: dict[int, _Device] = {}


def _device() -> _Device:
    device_id = cp.cuda.runtime.getDevice()
    found = _DEVICES.get(device_id)
    if found is None:
        found = _DEVICES[device_id] = _Device(device_id)
    return found


# dtype -> (name in the kernels' templates, accumulation type); bfloat16 arrives as float16
# views inside a HALF_IS_BFLOAT16 block (torch's bfloat16 tensors, see _arrays)
_TYPES = {np.dtype(name): (TYPE_NAMES[name], np.float64 if name == "float64" else np.float32)
          for name in ("float16", "float32", "float64")}
_FLOAT16 = np.dtype(np.float16)
# below these, a float option casts to the accumulation type without overflow (float32's
# largest plus half its ulp rounds to inf, ties to even); at and beyond, its infinity
_CAST_LIMIT = {np.float32: 2.0**128 - 2.0**103, np.float64: math.inf}
_BFLOAT16 = (TYPE_NAMES["bfloat16"], np.float32)


def _types(dtype) -> tuple:
    """(template name, accumulation type) of this call's ``dtype``."""
    if dtype == _FLOAT16 and HALF_IS_BFLOAT16.get():
        return _BFLOAT16
    return _TYPES[dtype]


def _aligned(*arrays) -> bool:
    """Whether 16-byte packs may be used: every pointer 16-byte aligned."""
    bits = 0
    for a in arrays:
        if a is not None:
            bits |= a.data.ptr
    return bits % 16 == 0


def _elementwise(loss: str):
    loss_id = LOSS_IDS[loss]
    # (device, dtype, template name, with a Hessian) -> (kernel, finalize, acc type, pack
    # width, grid)
    launchers: dict = {}

    def launcher(device, dtype, type_name, with_hess):
        acc = _types(dtype)[1]
        expressions = elementwise_expressions(type_name)
        function = device.function("elementwise.cu", expressions,
                                   f"elementwise<{type_name}, {loss_id}, "
                                   f"{'true' if with_hess else 'false'}>")
        # One full wave of resident blocks: the grid-stride loop covers the rest.
        registers_per_block = -(-function.num_regs // 8) * 8 * BLOCK
        resident = max(1, min(MAX_BLOCKS_PER_SM, 65536 // registers_per_block))
        found = launchers[device, dtype, type_name, with_hess] = (
            function,
            device.function("elementwise.cu", expressions, f"finalize<{type_name}>"),
            acc,
            16 // dtype.itemsize,
            device.sm_count * resident,
        )
        return found

    def kernel(y, p, weight, params, reduction, scale, grad, want_value, hess=None):
        device = _device()
        type_name = _types(p.dtype)[0]
        with_hess = hess is not None
        found = launchers.get((device, p.dtype, type_name, with_hess))
        function, finalize, acc, width, wave = found or launcher(device, p.dtype, type_name,
                                                                 with_hess)
        n = p.size
        pos_weight, options = None, _NO_OPTIONS
        if loss_id == LOSS_IDS["binary_cross_entropy_with_logits"]:
            (pos_weight,) = params
        elif params:
            # booleans are 1.0 and 0.0 in the kernel; an option beyond the accumulation
            # type's largest is its infinity (huber's delta = 1e39 in float32), unwarned
            options = tuple(o if abs(o) < _CAST_LIMIT[acc] else math.copysign(math.inf, o)
                            for o in (*params, 0.0, 0.0)[:3])
        losses = cp.empty(p.shape, p.dtype) if want_value and reduction == "none" else None
        value = cp.empty((), p.dtype) if want_value and reduction != "none" else None
        if n <= SINGLE_BLOCK_MAX:
            blocks = 1
        else:
            blocks = min(-(-n // (BLOCK * width)), wave)
        partials = device.workspace("partials", blocks, acc) if value is not None and blocks > 1 else None
        function(
            (blocks,), (BLOCK,),
            (y, p, weight, pos_weight, np.int64(1 if pos_weight is None else pos_weight.size),
             grad, losses, hess, partials, value, np.int64(n),
             np.int32(_aligned(y, p, weight, grad, losses, hess)), acc(scale), acc(options[0]),
             acc(options[1]), acc(options[2])),
        )
        if partials is not None:
            finalize((1,), (1024,), (partials, np.int64(blocks), value, acc(scale)))
        return losses if reduction == "none" else value

    kernel.__name__ = kernel.__qualname__ = loss
    return kernel


# The cross-entropy kernels' settings, read on each call (``benchmarks.gpu_sweep`` sets
# others to measure them): the register-resident row configurations and the longest rows
# they take, the streaming kernel's for longer rows and for rows of up to 16384 classes,
# ce_small's rows per block.
# Whether a plain call (class labels without class weights, smoothing, softcap or Hessian)
# of a warp-per-row configuration takes ce_rows_plain: fewer instructions per element (see
# kernels/cross_entropy_rows.cuh), the same bits (tests/test_gpu.py, on the H200). At
# 65536 x 1000 float32 the kernel alone ran at 0.86 of copy against ce_rows' 0.30
# (benchmarks/results/gpu-h200/kernel-variants-2026-12-04-2.csv).
CE_ROWS_PLAIN = True


def _row_config(classes: int, with_hess: bool) -> RowConfig | None:
    """The register-resident configuration for rows of ``classes``, None for the streaming
    kernel (above ROWS_MAX_CLASSES, except with a Hessian, which the streaming kernel
    computes in a second launch)."""
    if classes > ROWS_MAX_CLASSES and not with_hess:
        return None
    return next((c for c in ROW_CONFIGS if c.capacity >= classes), None)


@functools.cache
def _ce_names(type_name: str, stream: StreamConfig, small_rows: int) -> dict:
    """The kernels' names of cross-entropy calls of one type and settings (``stream``: the
    streaming setting of the call's rows; formatted once: a call looks them up)."""
    return {
        "common": cross_entropy_expressions(type_name),
        "small": small_expression(type_name, small_rows),
        "stream": [stream.expression(type_name, False, capped) for capped in (0, 1)],
        "hess": [HESS_STREAM.expression(type_name, True, capped) for capped in (0, 1)],
        "labels": f"ce_labels<{type_name}>",
        "finalize": f"ce_finalize<{type_name}>",
        "z_factor": f"ce_z_factor<{type_name}>",
    }


def cross_entropy(target, x, class_weight, params, reduction, scale, grad, want_value, hess=None):
    ignore_index, smoothing, check_labels, z_loss, softcap, denominator = params
    device = _device()
    type_name, acc = _types(x.dtype)
    rows_per_block = SMALL_ROWS
    rows, classes = x.shape
    # (rows the register-resident kernels would hold take a streaming setting of their own)
    stream = (STREAM if classes > LONGEST_ROWS else ROW_STREAM)[type_name]
    names = _ce_names(type_name, stream, rows_per_block)
    common = names["common"]
    soft = target.ndim == 2
    labels, probs = (None, target) if soft else (target, None)
    error = device.workspace("label_error", 1, np.int32, zeroed=True) if check_labels and not soft else None

    # The gradient's scale: 1 / rows for probabilities, for class indices the kept rows'
    # summed weights, found by the labels' pass (with the label check) before the logits
    # are read.
    grad_scale, scale_buffer = 1.0, None
    label_scale = reduction == "mean" and denominator is None and not soft
    if reduction == "mean" and not label_scale:
        if denominator is not None:  # known to the caller (a Dask block: the whole array's)
            grad_scale = 1.0 / denominator if denominator else float("inf")
        else:
            grad_scale = 1.0 / rows
    if label_scale or error is not None:
        scale_buffer = _labels_pass(
            device, device.function("cross_entropy.cu", common, names["labels"]), labels,
            classes, ignore_index, class_weight, acc, label_scale, error)
    with _label_check(device, error, labels, classes, ignore_index, "cross_entropy"):
        # the z-loss's "mean" divides by the kept rows' count (Liger-Kernel's rule): with class
        # weights, their summed weights over that count multiplies it, found on the device
        z_factor = None
        if z_loss and scale_buffer is not None and class_weight is not None:
            # (a label outside [0, C), kept by check_labels=False, is a NaN row, not kept: as
            # the host backends count)
            kept = cp.count_nonzero((labels != ignore_index) & (labels >= 0)
                                    & (labels < classes)).astype(cp.int64)
            z_factor = device.workspace("z_factor", 1, acc)
            device.function("cross_entropy.cu", common, names["z_factor"])(
                (1,), (1,), (scale_buffer, kept, z_factor))
        row_out = cp.empty(rows, x.dtype) if want_value and reduction == "none" else None
        value = cp.empty((), x.dtype) if want_value and reduction != "none" else None
        small = classes <= SMALL_CLASSES
        # per-row losses, or per-block sums for ce_small: what the value's pass adds up
        partial_count = -(-rows // rows_per_block) if small else rows
        row_loss = device.workspace("row_loss", partial_count, acc) if value is not None else None

        # (the labels' pass checked them: a bad label's row gets NaN here)
        args = (x, labels, probs, class_weight, grad, row_loss, row_out, np.int64(rows),
                np.int64(classes), np.int64(ignore_index), acc(smoothing), acc(grad_scale),
                scale_buffer, hess, acc(z_loss), z_factor, acc(0.0 if softcap is None else softcap))
        at_rows, at_hess = 7, 13  # (the places of rows and hess in args)
        packed = np.int32(_aligned(x, grad, hess) and classes * x.dtype.itemsize % 16 == 0)
        config = None if small else _row_config(classes, hess is not None)
        if small:
            function = device.function("cross_entropy.cu", [names["small"]], names["small"])
            function((-(-rows // rows_per_block),), (rows_per_block,), args,
                     shared_mem=rows_per_block * classes * np.dtype(acc).itemsize)
        elif config is None:
            capped = int(softcap is not None)
            name = names["stream"][capped]
            if hess is not None:  # the Hessian in a launch of its own (see ce_stream), first:
                # it reads the logits, which the gradient may overwrite (out=(y_pred, hess))
                device.function("cross_entropy.cu", common, names["hess"][capped])(
                    (rows,), (HESS_STREAM.threads,),
                    (x, labels, probs, class_weight, None, None, None, *args[at_rows:], packed))
            function = device.function("cross_entropy.cu", [name], name)
            staged = stream.staged_bytes if packed else 0  # (no packs: nothing to stage)
            if staged and staged + function.shared_size_bytes > device.shared_optin:
                stream = stream.unstaged()  # (the same bits: tests/test_cuda_host.py)
                name = stream.expression(type_name, False, bool(capped))
                function = device.function("cross_entropy.cu", [name], name)
                staged = 0
            if staged:  # (its static shared memory counts too: 48 KiB staged needs the opt-in)
                device.opt_in_shared(function, staged)
            function((rows,), (stream.threads,),
                     (*args[:at_hess], None, *args[at_hess + 1:], packed), shared_mem=staged)
        else:
            plain = (CE_ROWS_PLAIN and config.threads == 32 and labels is not None
                     and class_weight is None and not smoothing and softcap is None and hess is None)
            expression = config.expression(type_name, plain)
            function = device.function("cross_entropy.cu", [expression], expression)
            function((-(-rows // config.rows_per_block),), (config.block,), (*args, packed))

        if value is not None:
            device.function("cross_entropy.cu", common, names["finalize"])(
                (1,), (1024,),
                (row_loss, np.int64(partial_count), value, acc(grad_scale), scale_buffer),
            )
    return row_out if reduction == "none" else value


def multiclass_hinge(labels, x, weight, params, reduction, scale, grad, want_value, hess=None):
    margin, check_labels, denominator = params
    device = _device()
    type_name, acc = _types(x.dtype)
    expressions = multiclass_hinge_expressions(type_name)
    rows, classes = x.shape
    # a bad label's row gets NaN; the error costs one small synchronisation (documented),
    # for the labels' pass alone, which check_labels=False skips (ignore_index 0, a class)
    error = device.workspace("label_error", 1, np.int32, zeroed=True) if check_labels else None
    if error is not None:
        _labels_pass(device, device.function("cross_entropy.cu", expressions,
                                              f"ce_labels<{type_name}>"),
                     labels, classes, 0, error=error)
    with _label_check(device, error, labels, classes, 0, "multiclass_hinge"):
        row_scale = 1.0
        if reduction == "mean":
            row_scale = 1.0 / (rows if denominator is None else denominator)
        row_out = cp.empty(rows, x.dtype) if want_value and reduction == "none" else None
        value = cp.empty((), x.dtype) if want_value and reduction != "none" else None
        row_loss = device.workspace("row_loss", rows, acc) if value is not None else None
        args = (x, labels, weight, grad, row_loss, row_out, np.int64(rows), np.int64(classes),
                acc(margin), acc(row_scale))
        if hess is not None:  # piecewise linear: 0 away from the kinks; NaN rows NaN (a NaN
            # score, or a bad label): before the kernel, which may write the gradient over x
            bad = (labels < 0) | (labels >= classes)
            _zero_but_nan_rows(x, bad, hess, type_name == _BFLOAT16[0])
        if classes <= MH_WARP_CLASSES:
            name = f"mh_rows<{type_name}, 32, {MH_WARP_ROWS}>"
            device.function("cross_entropy.cu", expressions, name)(
                (-(-rows // MH_WARP_ROWS),), (32 * MH_WARP_ROWS,), args)
        else:
            name = f"mh_rows<{type_name}, 1024, 1>"
            device.function("cross_entropy.cu", expressions, name)((rows,), (1024,), args)
        if value is not None:
            device.function("cross_entropy.cu", expressions, f"ce_finalize<{type_name}>")(
                (1,), (1024,), (row_loss, np.int64(rows), value, acc(row_scale), None))
    return row_out if reduction == "none" else value


def _zero_but_nan_rows(x, bad_rows, out, bfloat16: bool) -> None:
    """``out`` = 0, NaN on the rows of ``x`` that hold a NaN and on ``bad_rows`` (a bool
    per row). bfloat16 comes as float16 views of its bits (``_types``), so there NaN is
    read and written as bfloat16 bits: float16's isnan takes bfloat16's infinities and
    values from 2^121 for NaN, and its NaN is a bfloat16 number (2^125)."""
    if not bfloat16:
        nan_rows = cp.isnan(x).any(axis=1) | bad_rows
        out[...] = cp.where(nan_rows[:, None], cp.nan, 0).astype(x.dtype)
        return
    # a bfloat16 NaN: every exponent bit set and a mantissa that is not zero
    nan_rows = (((x.view(cp.uint16) & 0x7FFF) > 0x7F80).any(axis=1) | bad_rows)[:, None]
    out.view(cp.uint16)[...] = cp.where(nan_rows, 0x7FC0, 0).astype(cp.uint16)


KERNELS = {loss: _elementwise(loss) for loss in LOSS_IDS}
KERNELS["cross_entropy"] = cross_entropy
KERNELS["multiclass_hinge"] = multiclass_hinge
_dispatch.register("cupy", KERNELS)
