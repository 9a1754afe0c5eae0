"""Arrays of other libraries (PyTorch, JAX, anything with DLPack): recognised, read and
handed back without a copy.

A call whose ``y_true`` or ``y_pred`` is such an array goes through ``run_foreign``: each
array argument becomes a NumPy (host) or CuPy (GPU) view of the same memory, the ordinary
call runs on those views, and its results come back as ``y_pred``'s library: a 0-d tensor
or array for the value, a view of the gradient buffer the kernel wrote, or ``out`` itself.

Each library's adapter (which arrays are whose, their devices, their views and results)
is ``_foreign``'s; this module runs the call on them and checks ``out=`` against the
arguments.

NumPy and CuPy arrays never come here (``_dispatch.route`` keeps them on the fast path).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable
from typing import Any

import numpy as np

from ._foreign import CUDA, HOST, _aligned_empty, adapter
from .backends._host import LabelError

# NumPy and CuPy have no bfloat16: torch's bfloat16 CUDA tensors reach the CuPy backend as
# float16 views of their bits, inside a block where this is True (``run_foreign``); its
# kernels are then the bf16_t instantiations. A context variable: per thread and task.
HALF_IS_BFLOAT16: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "lossbackends_half_is_bfloat16", default=False)


def _float_dtype(x) -> Any:
    """The dtype the computation has for a NumPy/CuPy ``y_pred``: its own when floating,
    float64 for integers and bools (as in ``_prepare.as_prediction``)."""
    dtype = np.dtype(x.dtype)
    return dtype if dtype.kind == "f" else np.dtype(np.float64)


_ARRAY_OPTIONS = ("weight", "pos_weight", "class_weight")  # options that are arrays


def run_foreign(run: Callable, y_true, y_pred, options: dict, out, want_grad: bool,
                out_marker, hess_out=None) -> tuple[Any, ...]:
    """``run(y_true, y_pred, options, out, hess_out) -> (value, grad)`` on NumPy/CuPy views
    of the arguments, its results given back as ``y_pred``'s library; a ``run`` that also
    gives the Hessian, ``(value, grad, hess)``, gets it back converted the same way.

    ``out`` is None (no gradient), ``out_marker`` (allocate it) or the user's buffer;
    ``hess_out`` likewise for the Hessian (None: not asked).
    bfloat16 ``y_pred``: on a GPU (torch) the kernels read and write the bits themselves
    (float16 views, ``HALF_IS_BFLOAT16``); elsewhere a float32 pass, as float16 on the host.
    """
    lead = adapter(type(y_pred))
    if lead is not None:
        device = lead.device(y_pred)
    else:  # a NumPy/CuPy/list y_pred with a foreign y_true: results stay NumPy/CuPy
        from ._dispatch import device_of as native_device

        device = (native_device(y_pred), 0)
    given_out = out is not None and out is not out_marker
    given_hess = hess_out is not None and hess_out is not out_marker
    bfloat16 = lead is not None and lead.is_bfloat16(y_pred)
    raw = bfloat16 and device[0] == CUDA and lead.raw_bfloat16 and _size(y_pred) > 0
    float32_pass = bfloat16 and not raw
    for given, buffer, name in ((given_out, out, "out" if hess_out is None else "grad_out"),
                                (given_hess, hess_out, "hess_out")):
        if not given:
            continue
        _check_foreign_out(lead, buffer, name)
        kind = adapter(type(buffer))
        # a bfloat16 buffer takes a bfloat16 result only (any other would be computed into
        # a float32 copy of it, and lost)
        if ((float32_pass and (tuple(buffer.shape) != tuple(y_pred.shape)
                               or buffer.dtype != y_pred.dtype))
                or (not bfloat16 and kind is not None and kind.is_bfloat16(buffer))):
            what = "Hessian" if name == "hess_out" else "gradient"
            raise ValueError(
                f"{name} has shape {tuple(buffer.shape)} and dtype {buffer.dtype}; the {what} "
                f"needs shape {tuple(y_pred.shape)} and dtype "
                f"{getattr(y_pred, 'dtype', 'of y_pred')}"
            )
    converted: dict[int, Any] = {}  # id -> view: out=y_pred stays the same object

    def view(name: str, x):
        if x is None:
            return None
        key = id(x)
        found = converted.get(key)
        if found is not None:
            return found
        kind = adapter(type(x))
        if x is y_pred and kind is not None and not bfloat16:  # its device is known already
            found = converted[key] = native(kind, x, name)
            return found
        if kind is None:
            if raw and (name in _ARRAY_OPTIONS or name == "out" or (
                    name == "y_true" and np.shape(x) == tuple(y_pred.shape))):
                x = lead.bfloat16_like(x, y_pred, name)  # a number, or a NumPy/CuPy array
            else:
                return x  # NumPy, CuPy, lists, scalars: the ordinary checks apply
            kind = lead
        where = kind.device(x)
        if where != device:
            raise ValueError(
                f"{name} is on {_where(where)} but y_pred is on {_where(device)}; move it "
                "first (for torch: .to(y_pred.device)): lossbackends never copies between "
                "devices behind your back"
            )
        if raw:
            if not kind.is_bfloat16(x) and (name != "y_true" or x.shape == y_pred.shape):
                x = lead.bfloat16_like(x, y_pred, name)  # values in y_pred's dtype
            if kind.is_bfloat16(x):
                x = kind.bits_as_half(x)
        elif kind.is_bfloat16(x):  # the float32 pass (y_true, weights: cast to y_pred's dtype)
            x = kind.to_float32(x)
        found = converted[key] = native(kind, x, name)
        return found

    def native(kind, x, name: str):
        try:
            return kind.to_native(x, device[0])
        except (TypeError, RuntimeError) as exc:
            # torch's float8 and complex32 ("unsupported ScalarType"), JAX's float8
            # ("Unsupported dtype in DLTensor"); other errors are DLPack's own
            if "nsupported" not in str(exc):
                raise
            fix = ("pass an array of y_pred's dtype" if name.endswith("out") else
                   f"cast it to float32 first ({name}.float() for a torch tensor, "
                   f"{name}.astype('float32') for a JAX array)")
            raise TypeError(f"{name} has dtype {x.dtype}, which NumPy and CuPy cannot hold "
                            f"({exc}); {fix}") from exc

    if float32_pass and (given_out or given_hess):
        _check_copied_into(device[0], y_true, y_pred, options, out if given_out else None,
                           hess_out if given_hess else None)
    with (lead.stream(y_pred, device) if lead is not None and device[0] == CUDA
          else contextlib.nullcontext()):
        p = view("y_pred", y_pred)
        y = view("y_true", y_true)
        options = {key: view(key, value) for key, value in options.items()}
        native_out, native_hess = out, hess_out
        # the float32 pass writes buffers of its own, copied into the user's after
        if given_out:
            native_out = out_marker if float32_pass else view("out", out)
        elif want_grad and lead is not None and not lead.mutable and device[0] == HOST:
            native_out = _aligned_empty(p.shape, _float_dtype(p))  # XLA takes it as it is
        if given_hess:
            native_hess = out_marker if float32_pass else view("hess_out", hess_out)
        token = HALF_IS_BFLOAT16.set(True) if raw else None
        try:
            value, grad, *hess = run(y, p, options, native_out, native_hess)
        except LabelError:
            if device[0] == CUDA and (given_out or given_hess):  # (the GPU kernels write
                _written(lead, (given_out, out), (given_hess, hess_out))  # before raising)
            raise
        finally:
            if token is not None:
                HALF_IS_BFLOAT16.reset(token)
        if (given_out or given_hess) and not float32_pass:  # (that pass copies in: marked)
            _written(lead, (given_out, out), (given_hess, hess_out))
        if lead is None:
            return (value, grad, *hess)
        if float32_pass:
            finish = lead.finish_bfloat16
        elif raw:
            def finish(a, like):
                return lead.half_as_bits(lead.from_native(a, like))
        else:
            finish = lead.from_native
        if value is not None:
            value = finish(value, y_pred)
        if grad is not None:
            grad = _into(lead, grad, out, float32_pass) if given_out else finish(grad, y_pred)
        if hess:  # (grad_and_hess)
            hess = [_into(lead, hess[0], hess_out, float32_pass) if given_hess
                    else finish(hess[0], y_pred)]
    return (value, grad, *hess)


def _written(lead, *buffers) -> None:
    """Tell ``lead``'s library which of its ``(given, buffer)`` pairs were written."""
    if lead is not None:
        for given, buffer in buffers:
            if given:
                lead.written(buffer)


def _into(lead, result, buffer, float32_pass: bool):
    """The user's ``buffer``, holding ``result`` (computed into it, or, by the float32
    pass, into a buffer of its own, copied in now)."""
    if float32_pass:
        lead.copy_into(buffer, result)
    return buffer


def _check_foreign_out(lead, out, name: str) -> None:
    """Raise unless ``out`` (called ``name``) can take a result for a ``y_pred`` of the
    library ``lead`` (None: a NumPy/CuPy ``y_pred``): a mutable array of that library,
    contiguous, not lazily negated, not requiring grad."""
    if lead is not None and not lead.mutable:
        raise ValueError(
            f"{name}= cannot be used when y_pred is a {lead.name} array: {lead.name} arrays "
            "are immutable, so no result is written into one; use the returned arrays "
            "instead"
        )
    if lead is None and adapter(type(out)) is not None:  # (a foreign weight led here)
        raise ValueError(f"{name} must be a NumPy or CuPy array like y_pred (got "
                         f"{type(out).__module__}.{type(out).__qualname__})")
    # the same library (a subclass of its array type is one)
    if lead is not None and getattr(adapter(type(out)), "module", None) is not lead.module:
        raise ValueError(
            f"{name} must be a {lead.name} array like y_pred (got "
            f"{type(out).__module__}.{type(out).__qualname__})"
        )
    if lead is not None and lead.is_lazy(out):
        raise ValueError(
            f"{name} is a lazily negated or conjugated torch view (such as .conj().imag): its "
            "memory does not hold its values, and a result written there would go into "
            "a copy; pass a tensor of its own (torch.empty_like(y_pred)), or "
            f"{name}.resolve_neg() and use that tensor"
        )
    if lead is not None and lead.frozen_here(out):
        raise ValueError(
            f"{name} is an inference tensor (made under torch.inference_mode()), which torch "
            "lets nothing write outside inference mode: make the call inside "
            f"torch.inference_mode(), or pass a tensor made outside it ({name}.clone() or "
            "torch.empty_like(y_pred))"
        )
    if not getattr(out, "is_contiguous", lambda: True)():  # (torch's name for it)
        raise ValueError(
            f"{name} must be a contiguous tensor, as torch.empty_like(y_pred, "
            "memory_format=torch.contiguous_format) gives (a non-contiguous one's "
            "result would need a copy, then a copy back)"
        )
    if getattr(out, "requires_grad", False):
        raise ValueError(
            f"{name} requires grad: autograd would not see the result written into it "
            f"(torch refuses in-place writes there too); pass {name}=tensor.detach() to "
            "overwrite its memory anyway, or use lossbackends.torch (inplace_backward=True)"
        )


PAIR_SHARES = "out=(grad_out, hess_out) must be two distinct arrays that share no memory"


def _check_copied_into(where: str, y_true, y_pred, options: dict, out, hess_out) -> None:
    """The float32 pass computes into buffers of its own, then copies into the user's
    (bfloat16) ``out`` and ``hess_out``: their memory is checked here as ``_compute._check_out``
    checks every other call's views (the two buffers share none; neither shares any with
    ``y_true`` or the weights, nor ``hess_out`` with ``y_pred``; ``out`` is ``y_pred``'s
    memory exactly or none of it), on NumPy views of their bits."""
    def memory(x):
        kind = adapter(type(x))
        if kind is None:
            return x if isinstance(x, np.ndarray) else None
        bits = getattr(kind, "bits_as_half", None)
        if kind.is_bfloat16(x):
            if bits is None:
                return None
            x = bits(x)
        return kind.to_native(x, where)

    def shares(a, b) -> bool:
        a, b = memory(a), memory(b)
        return a is not None and b is not None and bool(np.may_share_memory(a, b))

    read = [y_true, *(value for value in options.values() if hasattr(value, "shape"))]
    name = "out" if hess_out is None else "grad_out"
    if out is not None and hess_out is not None and shares(out, hess_out):
        raise ValueError(PAIR_SHARES)
    if hess_out is not None and any(shares(hess_out, x) for x in (y_pred, *read)):
        raise ValueError("hess_out must not share memory with y_true, y_pred or the weights; "
                         "pass a separate array")
    if out is None:
        return
    if any(shares(out, x) for x in read):
        raise ValueError(f"{name} must not share memory with y_true or the weights; it may be "
                         "y_pred itself")
    if shares(out, y_pred):
        a, b = memory(out), memory(y_pred)
        if (a.__array_interface__["data"][0], a.shape, a.strides) != (
                b.__array_interface__["data"][0], b.shape, b.strides):
            raise ValueError(f"{name} overlaps y_pred without being it; pass y_pred itself as "
                             f"{name} (the gradient in place) or an array of its own")


def _size(x) -> int:
    return int(np.prod(x.shape, dtype=np.int64))


def _where(device: tuple[str, int]) -> str:
    return "the CPU" if device[0] == HOST else f"CUDA device {device[1]}"
