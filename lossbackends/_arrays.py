"""Arrays of other libraries (PyTorch, JAX, anything with DLPack): recognised, read and
handed back without a copy.

A call whose ``y_true`` or ``y_pred`` is such an array goes through ``run_foreign``: each
array argument becomes a NumPy (host) or CuPy (GPU) view of the same memory, the ordinary
call runs on those views, and its results come back as ``y_pred``'s library: a 0-d tensor
or array for the value, a view of the gradient buffer the kernel wrote, or ``out`` itself.

The library of an array is recognised by its type (cached), with ``sys.modules``: nothing
here imports torch, JAX or CuPy. The device is read from each array
(``__dlpack_device__()``), never from its class alone: torch and JAX define
``__cuda_array_interface__`` on the class, as a property that raises for CPU arrays.
NumPy and CuPy arrays never come here (``_dispatch.route`` keeps them on the fast path).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from .backends._host import LabelError

HOST, CUDA = "host", "cuda"

# NumPy and CuPy have no bfloat16: torch's bfloat16 CUDA tensors reach the CuPy backend as
# float16 views of their bits, inside a block where this is True (``run_foreign``); its
# kernels are then the bf16_t instantiations. A context variable: per thread and task.
HALF_IS_BFLOAT16: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "lossbackends_half_is_bfloat16", default=False)
_HOST = (HOST, 0)
# DLPack device types (dlpack.h): CPU, CUDA, CUDA pinned host memory, CUDA managed memory
_DL_DEVICES = {1: HOST, 2: CUDA, 3: HOST, 13: CUDA}
_ALIGN = 64  # bytes: XLA imports a CPU buffer without a copy only at this alignment


def _cupy():
    """CuPy, which computes on GPU arrays, or the error that says how to install it."""
    try:
        import cupy
    except ImportError as exc:
        raise ValueError(
            f"GPU arrays are computed by the CuPy backend, which is not available here ({exc}); "
            "install it with: pip install 'lossbackends[cuda12]' (or [cuda13])"
        ) from exc
    return cupy


def _root_module(kind: type):
    return sys.modules.get(kind.__module__.partition(".")[0])


class Foreign:
    """How lossbackends reads and returns the arrays of one library, through DLPack.

    ``name`` names the library in messages; ``module`` is the library's top module (already
    imported: it made the array), whose ``from_dlpack`` makes the results, if it has one.
    """

    name = "DLPack"
    mutable = True
    raw_bfloat16 = False  # whether bfloat16 reaches the GPU kernels as its bits

    def __init__(self, kind: type):
        self.kind = kind
        self.module = _root_module(kind)
        if self.name == "DLPack":
            self.name = f"{kind.__module__}.{kind.__qualname__}"

    def device(self, x) -> tuple[str, int]:
        """(``"host"`` or ``"cuda"``, device index), from the array itself."""
        dl_type, index = x.__dlpack_device__()
        device = _DL_DEVICES.get(int(dl_type))
        if device is None:
            raise TypeError(
                f"{self.name} array on DLPack device {dl_type!r}: lossbackends computes on the "
                "CPU (NumPy, Numba) and on CUDA GPUs (CuPy); move it to one of those first"
            )
        return device, int(index)

    def is_bfloat16(self, x) -> bool:
        dtype = getattr(x, "dtype", None)
        try:
            return _BFLOAT16[dtype]
        except (KeyError, TypeError):  # (TypeError: an unhashable dtype)
            found = str(dtype).endswith("bfloat16")
            with contextlib.suppress(TypeError):
                _BFLOAT16[dtype] = found
            return found

    def to_float32(self, x):
        """bfloat16 cannot cross DLPack into NumPy or CuPy: the float32 pass."""
        return x.astype("float32")

    def to_native(self, x, device: str):
        """A NumPy or CuPy view of ``x`` (the same memory)."""
        if device == HOST:
            return np.from_dlpack(x)
        return _cupy().from_dlpack(x)

    def from_native(self, a, like):
        """``a`` (NumPy/CuPy, or a NumPy scalar) as this library's array, the same memory."""
        make = getattr(self.module, "from_dlpack", None)
        if make is None:  # no way back into the caller's library: NumPy's results, the
            return a      # value a NumPy scalar, as for NumPy inputs
        return make(np.asarray(a) if isinstance(a, np.generic) else a)

    def finish_bfloat16(self, a, like):
        return self.from_native(a, like).astype(like.dtype)

    def copy_into(self, out, a) -> None:
        """Write the float32 pass's gradient ``a`` into the bfloat16 ``out``."""
        out[...] = self.finish_bfloat16(a, out)

    def is_lazy(self, x) -> bool:
        """Whether ``x``'s values are its memory's only through a lazy flag (torch's
        negated or conjugated views): reading it takes a copy, so it cannot be ``out``."""
        return False

    def frozen_here(self, x) -> bool:
        """Whether the library refuses writes into ``x`` here (torch's inference tensors,
        outside inference mode), so it cannot be ``out``."""
        return False

    def written(self, x) -> None:
        """Tell the library that ``x``'s memory was written behind its back (``out``)."""

    def stream(self, x, device: tuple[str, int]):
        """The context the GPU work runs in: the array's device (its library's stream
        where the library has one, see ``_Torch``)."""
        if device[0] != CUDA:
            return contextlib.nullcontext()
        return _cupy().cuda.Device(device[1])


class _Torch(Foreign):
    name = "torch"
    raw_bfloat16 = True

    def __init__(self, kind: type):
        super().__init__(kind)
        self.module = sys.modules["torch"]  # (a subclass may be defined anywhere)

    def bits_as_half(self, x):
        """A bfloat16 tensor's bits as a float16 tensor (a view: CuPy has no bfloat16)."""
        return x.detach().view(self.module.float16)

    def half_as_bits(self, t):
        return t.view(self.module.bfloat16)

    def bfloat16_like(self, x, like, name: str):
        """``x`` (a number, an array or another tensor) as a bfloat16 tensor on ``like``'s
        device: the cast the front makes for other dtypes, made here because the front
        only sees float16 views."""
        if name == "out":
            raise ValueError(f"out must be a bfloat16 torch tensor like y_pred, not {type(x)}")
        torch = self.module
        if isinstance(x, torch.Tensor):
            return x.detach().to(torch.bfloat16)
        if isinstance(x, (int, float)):
            return torch.tensor(x, dtype=torch.bfloat16, device=like.device)
        raise TypeError(
            f"{name} must be a torch tensor (or a number) when y_pred is a bfloat16 CUDA "
            f"tensor; got {type(x).__module__}.{type(x).__qualname__}"
        )

    def device(self, x) -> tuple[str, int]:
        if x.is_cpu:  # cheaper than __dlpack_device__, the same answer
            return _HOST
        device = x.device
        if device.type == "cuda":
            return CUDA, device.index
        raise TypeError(  # (torch's own DLPack error would not say what to do)
            f"torch tensor on device {device.type!r}: lossbackends computes on the CPU and on "
            "CUDA GPUs; move it with .cpu() or .cuda() first")

    def is_bfloat16(self, x) -> bool:
        return x.dtype is self.module.bfloat16

    def to_float32(self, x):
        return x.detach().float()

    def is_lazy(self, x) -> bool:
        return x.is_neg() or x.is_conj()

    def frozen_here(self, x) -> bool:
        return x.is_inference() and not self.module.is_inference_mode_enabled()

    def written(self, x) -> None:
        # the version counter autograd checks: a tensor saved for a backward pass (the
        # tensor itself, a .detach() of it, a view) then raises there, as after torch's
        # own in-place ops, instead of giving a gradient from the overwritten values
        self.module.autograd.graph.increment_version(x)

    def to_native(self, x, device: str):
        # a tensor that requires grad is read, never recorded; a lazily negated or
        # conjugated view (.conj().imag) is resolved first (NumPy cannot see those bits)
        if device == HOST:
            # torch's own zero-copy view (half the cost of np.from_dlpack), those steps
            # taken in C++ (force=True: 1.2 us a tensor, 2.2 as three calls from here)
            return x.numpy(force=True)
        return _cupy().from_dlpack(x.detach().resolve_neg().resolve_conj())

    def from_native(self, a, like):
        if isinstance(a, np.generic):
            a = np.asarray(a)
        if isinstance(a, np.ndarray):
            return self.module.from_numpy(a)
        return self.module.from_dlpack(a)

    def finish_bfloat16(self, a, like):
        return self.from_native(a, like).to(self.module.bfloat16)

    def copy_into(self, out, a) -> None:
        out.copy_(self.from_native(a, out))

    def stream(self, x, device: tuple[str, int]):
        """torch's current stream on the tensor's device, as CuPy's: the kernels queue
        behind torch's work with no synchronisation."""
        if device[0] != CUDA:
            return contextlib.nullcontext()
        return _torch_stream(self.module, device[1])


@contextlib.contextmanager
def _torch_stream(torch, index: int):
    cupy = _cupy()
    with cupy.cuda.Device(index):
        stream = torch.cuda.current_stream(index)
        with cupy.cuda.ExternalStream(stream.cuda_stream, index):
            yield


class _Jax(Foreign):
    name = "jax"
    mutable = False

    def __init__(self, kind: type):
        super().__init__(kind)
        self.module = sys.modules["jax"]
        # (JAX has started: an array of it exists, and its devices are fixed; a JAX of
        # JAX_PLATFORMS=cuda has no CPU backend: then each result asks y_pred)
        try:
            cpus = self.module.devices("cpu")
        except RuntimeError:
            cpus = ()
        self.only_cpu = cpus[0] if len(cpus) == 1 else None

    def to_float32(self, x):
        return x.astype(self.module.numpy.float32)

    def from_native(self, a, like):
        if not isinstance(a, (np.ndarray, np.generic)):  # CuPy's: on its GPU, as it is
            return self.module.numpy.from_dlpack(a)
        # host memory, on y_pred's own CPU device (JAX may have several; asked only then:
        # half a microsecond)
        device = self.only_cpu or like.device
        if isinstance(a, np.generic) or a.ndim == 0:  # the value: one number
            b = _aligned_empty((), a.dtype)
            b[()] = a
            found = _jax_host_import(self.module, b, device)
            return self.module.numpy.asarray(b, device=device) if found is None else found
        found = _jax_host_import(self.module, a, device)
        return self.module.numpy.from_dlpack(a, device=device) if found is None else found

    def device(self, x) -> tuple[str, int]:
        if isinstance(x, self.module.core.Tracer):  # the first thing asked of an array
            raise TypeError(
                "lossbackends' plain calls take concrete arrays, not JAX tracers: inside "
                "jax.jit, jax.grad or jax.vmap use lossbackends.jax (e.g. "
                "lossbackends.jax.cross_entropy), which works under them"
            )
        try:
            return super().device(x)
        except BufferError as exc:  # (JAX's own error would not say what to do)
            raise ValueError(
                f"a JAX array sharded over several devices cannot be read in place ({exc}); "
                "put it on one device first: jax.device_put(x, jax.devices()[0]) (the host "
                "computes the loss as one array either way)"
            ) from None


_BFLOAT16: dict = {}  # dtype -> whether it is bfloat16 (whose name only says so)
_JAX_IMPORT: list = []  # [jaxlib's buffer import] once it worked, [None] if it did not


def _jax_host_import(jax, a: np.ndarray, device):
    """A JAX array over ``a``'s memory (no copy) on the CPU ``device``, from jaxlib's
    DLPack import itself:
    ``jax.numpy.from_dlpack`` costs ~100 µs a call more around it (a stream query that
    raises on the CPU, then ``jnp.asarray``, which does nothing for a canonical dtype).
    A private function: on any surprise (missing, other signature, other result) this
    says None for good and the public ``from_dlpack`` takes every call."""
    if not _JAX_IMPORT:
        try:
            from jax._src.lib import _jax

            found = _jax.dlpack_managed_tensor_to_buffer
            probe = _aligned_empty((3,), np.float32)
            probe[:] = 1.5
            result = found(probe.__dlpack__(), device, None, None, 1)
            ok = (isinstance(result, jax.Array) and result.dtype == probe.dtype
                  and result.shape == probe.shape and result.unsafe_buffer_pointer()
                  == probe.ctypes.data and float(result[2]) == 1.5)
        except Exception:  # noqa: BLE001 (any failure: the public path)
            ok = False
        _JAX_IMPORT.append(found if ok else None)
    found = _JAX_IMPORT[0]
    if (found is None or a.ctypes.data % _ALIGN or not a.flags.c_contiguous
            or a.dtype not in _JAX_NATIVE or (a.dtype.itemsize == 8 and not getattr(
                jax.config, "jax_enable_x64", False))):  # else JAX would make it float32
        return None
    return found(a.__dlpack__(), device, None, None, 1)


_JAX_NATIVE = frozenset(map(np.dtype, (np.float16, np.float32, np.float64)))

# type -> its adapter, or None for NumPy, CuPy and everything else the ordinary path takes
_KINDS: dict[type, Foreign | None] = {}


def adapter(kind: type) -> Foreign | None:
    """The adapter of an array type, or None when the ordinary path takes it (NumPy and
    CuPy arrays, lists, scalars, objects with ``__array__`` or ``__cuda_array_interface__``
    and no DLPack)."""
    try:
        return _KINDS[kind]
    except KeyError:
        pass
    found: Foreign | None = None
    # the libraries' classes, where imported; a module another thread is still importing
    # may lack them yet (then no array of it exists: the answer is not kept, as it might
    # change when the import is done)
    jax, torch = sys.modules.get("jax"), sys.modules.get("torch")
    tracer = getattr(getattr(jax, "core", None), "Tracer", None)
    jax_array = getattr(jax, "Array", None)
    tensor = getattr(torch, "Tensor", None)
    settled = ((jax is None or None not in (tracer, jax_array))
               and (torch is None or tensor is not None))
    if tracer is not None and issubclass(kind, tracer):  # no DLPack: _Jax explains
        found = _Jax(kind)
    elif (not issubclass(kind, np.ndarray) and hasattr(kind, "__dlpack__")
            and hasattr(kind, "__dlpack_device__")
            and kind.__module__.partition(".")[0] != "cupy"):
        if tensor is not None and issubclass(kind, tensor):
            found = _Torch(kind)
        elif jax_array is not None and issubclass(kind, jax_array):
            found = _Jax(kind)
        else:
            found = Foreign(kind)
    if settled:
        _KINDS[kind] = found
    return found


def is_foreign(x: object) -> bool:
    return adapter(type(x)) is not None


def device_of(x: object) -> str | None:
    """``"host"`` or ``"cuda"`` for a foreign array (from the instance), None otherwise."""
    found = adapter(type(x))
    return None if found is None else found.device(x)[0]


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
    (bfloat16) ``out`` and ``hess_out``: their memory is checked here as ``_loss._check_out``
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


def _aligned_empty(shape: tuple, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on a 64-byte boundary."""
    dtype = np.dtype(dtype)
    count = math.prod(shape)
    raw = np.empty(count * dtype.itemsize + _ALIGN, np.uint8)
    start = -raw.ctypes.data % _ALIGN
    return raw[start:start + count * dtype.itemsize].view(dtype).reshape(shape)
