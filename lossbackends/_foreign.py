"""The adapters of other libraries' arrays (PyTorch, JAX, anything with DLPack): how
lossbackends recognises them, reads their device, views their memory as NumPy (host) or
CuPy (GPU) arrays and gives results back as the library's own, without a copy. A call
with such arrays runs through ``_arrays.run_foreign``, on these.

The library of an array is recognised by its type (cached), with ``sys.modules``: nothing
here imports torch, JAX or CuPy. The device is read from each array
(``__dlpack_device__()``), never from its class alone: torch and JAX define
``__cuda_array_interface__`` on the class, as a property that raises for CPU arrays.
"""

from __future__ import annotations

import contextlib
import math
import sys

import numpy as np

HOST, CUDA = "host", "cuda"
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


def _aligned_empty(shape: tuple, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on a 64-byte boundary."""
    dtype = np.dtype(dtype)
    count = math.prod(shape)
    raw = np.empty(count * dtype.itemsize + _ALIGN, np.uint8)
    start = -raw.ctypes.data % _ALIGN
    return raw[start:start + count * dtype.itemsize].view(dtype).reshape(shape)
