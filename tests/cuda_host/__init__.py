"""The CuPy backend on the host: ``kernels/`` compiled with g++ against ``shim.h`` (CUDA's
device dialect, each CUDA thread a fiber of one CPU thread) and launched through a stand-in for the few CuPy names
``lossbackends/backends/cupy_backend.py`` uses, on NumPy arrays. So the backend's host code
and its kernels' logic run in CI, where there is no GPU: ``tests/test_cuda_host.py``
compares them with the NumPy backend. What it cannot show (speed, float16 arithmetic of the
hardware exp, streams) stays for ``ci/gpu``.

Each kernel file is built once per source text into one shared library holding every name
expression of ``all_modules()`` (float32 and float64, float16 and bfloat16 too), cached
under ``$LOSSBACKENDS_CUDA_HOST_CACHE`` or the system's temporary directory.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import types
from pathlib import Path
from unittest import mock

import numpy as np

from lossbackends import _cuda_sources, _dispatch

HERE = Path(__file__).resolve().parent
SM_COUNT = 2  # the emulated device's multiprocessors (the grids stay small)

# asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h.bits) : "f"(x)) -> h.bits = lb_cvt_rn_f16_f32(x)
_CVT = re.compile(r'asm\("(cvt[.\w]+) %0, %1;"\s*:\s*"=\w"\(([^)]*)\)\s*:\s*"\w"\(([^)]*)\)\);')

# the kernels' parameter types as the signature string of lb_signature spells them
_POINTEE = {"float": np.float32, "double": np.float64, "half": np.float16,
            "bf16": np.float16, "i64": np.int64, "int": np.int32,
            "u32": np.uint32}
_SCALAR = {"i64": np.int64, "int": np.int32, "float": np.float32, "double": np.float64}

_LAUNCHER = r"""
#include <utility>
template <typename T> struct lb_name;
template <> struct lb_name<float> { static constexpr const char* v = "float"; };
template <> struct lb_name<double> { static constexpr const char* v = "double"; };
template <> struct lb_name<half_t> { static constexpr const char* v = "half"; };
template <> struct lb_name<bf16_t> { static constexpr const char* v = "bf16"; };
template <> struct lb_name<long long> { static constexpr const char* v = "i64"; };
template <> struct lb_name<int> { static constexpr const char* v = "int"; };
template <> struct lb_name<unsigned> { static constexpr const char* v = "u32"; };
template <typename T> struct lb_name<T*> { static constexpr const char* v = "ptr"; };
template <typename P> void lb_describe(std::string& s) {
    using B = std::remove_cv_t<P>;
    if constexpr (std::is_pointer_v<B>) {
        s += "*"; s += lb_name<std::remove_cv_t<std::remove_pointer_t<B>>>::v;
    } else {
        s += lb_name<B>::v;
    }
    s += " ";
}
template <typename... P, std::size_t... I>
void lb_call(void (*k)(P...), void** args, std::index_sequence<I...>) {
    k(*static_cast<std::remove_cv_t<P>*>(args[I])...);
}
template <typename... P> int lb_launch_one(void (*k)(P...), unsigned grid, unsigned block, void** args) {
    return lb_run(grid, block, [&] { lb_call(k, args, std::index_sequence_for<P...>{}); });
}
template <typename... P> std::string lb_signature_of(void (*)(P...)) {
    std::string s;
    (lb_describe<P>(s), ...);
    return s;
}
"""


_FLAGS = ["-std=c++20", "-O1", "-shared", "-fPIC", "-Wno-unknown-pragmas"]
SHARED_MEMORY = 48 * 1024  # CUDA's limit per block without an opt-in, static included
# with it (the function's max_dynamic_shared_size_bytes): sm_90's 227 KiB (shim.h's buffer)
SHARED_MEMORY_OPT_IN = 227 * 1024
# what a kernel's own static shared memory may take (ce_stream's row_combine: 800 bytes),
# which the launch does not see: dynamic memory beyond the rest needs the opt-in
STATIC_ALLOWANCE = 1024
MAX_THREADS = 1024


def _cache_dir() -> Path:
    """``$LOSSBACKENDS_CUDA_HOST_CACHE``, or a directory of this user's in the temporary
    directory (only theirs: a library found there is loaded)."""
    root = os.environ.get("LOSSBACKENDS_CUDA_HOST_CACHE") or (
        Path(tempfile.gettempdir()) / f"lossbackends-cuda-host-{os.getuid()}")
    path = Path(root)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def expressions(filename: str) -> list[str]:
    """Every name expression of ``filename`` that ``all_modules()`` builds, and for
    cross-entropy the GPU sweep's candidates (``benchmarks/gpu_sweep.py``)."""
    from benchmarks import gpu_sweep

    found = []
    for name, exprs in _cuda_sources.all_modules():
        if name == filename:
            found += exprs
    if filename == "cross_entropy.cu":
        for variant in gpu_sweep.variants():
            for case in gpu_sweep.CASES:
                if variant.applies(case):
                    found += gpu_sweep.kernel_expressions(variant,
                                                          _cuda_sources.TYPE_NAMES[case.dtype])
    return [e for i, e in enumerate(found) if e not in found[:i]]


def translation_unit(filename: str, names: list[str]) -> str:
    code = _cuda_sources.source(filename).replace("extern __shared__", "extern")
    code = _CVT.sub(lambda m: f"{m[2]} = lb_{m[1].replace('.', '_')}({m[3]});", code)
    # (the sm_90 section, which the shim's __CUDA_ARCH__ of 800 leaves out, keeps its PTX)
    emulated = re.sub(r"#if !defined\(__CUDA_ARCH__\) \|\| __CUDA_ARCH__ >= 900.*?#endif", "",
                      re.sub(r"//.*", "", code), flags=re.DOTALL)
    if re.search(r"\basm\b", emulated):
        raise RuntimeError(f"{filename}: inline PTX the host shim does not translate")
    table = ",\n".join(f"    {{[](unsigned g, unsigned b, void** a) {{ return lb_launch_one(&{n}, g, b, a); }},"
                       f" [] {{ return lb_signature_of(&{n}); }}}}" for n in names)
    return (f'#include "{HERE / "shim.h"}"\n#include <string>\n#include <type_traits>\n'
            + code + _LAUNCHER
            + "struct lb_entry { int (*launch)(unsigned, unsigned, void**); std::string (*sig)(); };\n"
            + f"static const lb_entry lb_entries[] = {{\n{table}\n}};\n"
            + 'extern "C" int lb_launch(int i, unsigned g, unsigned b, void** a) '
              "{ return lb_entries[i].launch(g, b, a); }\n"
            + 'extern "C" int lb_signature(int i, char* out, int size) {\n'
              "    const std::string s = lb_entries[i].sig();\n"
              "    std::strncpy(out, s.c_str(), size); return (int)s.size(); }\n")


class Library:
    """One kernel file built for the host: ``launch(name, grid, block, args)``."""

    def __init__(self, filename: str):
        self.names = expressions(filename)
        unit = translation_unit(filename, self.names)
        compiler = shutil.which("g++")
        if compiler is None:
            raise RuntimeError("g++ is not installed")
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
        key = hashlib.sha256("\n".join([unit, (HERE / "shim.h").read_text(), version,
                                         *_FLAGS]).encode()).hexdigest()[:16]
        path = _cache_dir() / f"{Path(filename).stem}-{key}.so"
        # one build per file: pytest-xdist's workers wait for the one that builds (13 s of
        # g++ on a fresh clone) instead of each building it at once on the same cores
        with open(path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not path.exists():
                source = path.with_suffix(f".{os.getpid()}.cpp")
                source.write_text(unit)
                partial = path.with_suffix(f".{os.getpid()}.tmp")
                built = subprocess.run([compiler, *_FLAGS, "-o", str(partial), str(source)],
                                       capture_output=True, text=True)
                if built.returncode:
                    raise RuntimeError(f"g++ failed on {filename} (built from {source}):\n"
                                       + built.stderr[-4000:])
                partial.replace(path)
                source.unlink()
        self._lib = ctypes.CDLL(str(path))
        self._lib.lb_launch.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                        ctypes.POINTER(ctypes.c_void_p)]
        self._index = {name: i for i, name in enumerate(self.names)}
        self._signatures: dict[str, list[str]] = {}
        # one launch at a time: the shim's state is global (blocks, shared memory), and
        # ctypes lets other Python threads run during a call
        self._lock = threading.Lock()

    def signature(self, name: str) -> list[str]:
        found = self._signatures.get(name)
        if found is None:
            buffer = ctypes.create_string_buffer(4096)
            self._lib.lb_signature(self._index[name], buffer, 4096)
            found = self._signatures[name] = buffer.value.decode().split()
        return found

    def launch(self, name: str, grid, block, args, shared_mem: int = 0,
               allowed: int = 0) -> None:
        """``allowed``: the function's opt-in to more dynamic shared memory."""
        if name not in self._index:
            raise KeyError(f"{name} is not among the expressions all_modules() builds")
        limit = allowed if allowed >= shared_mem else SHARED_MEMORY - STATIC_ALLOWANCE
        if shared_mem > min(limit, SHARED_MEMORY_OPT_IN - STATIC_ALLOWANCE):
            raise ValueError(f"{name}: {shared_mem} bytes of dynamic shared memory, more than "
                             f"CUDA's {SHARED_MEMORY} without an opt-in (here {allowed})")
        if not 0 < int(block[0]) <= MAX_THREADS or int(grid[0]) <= 0:
            raise ValueError(f"{name}: a launch of {grid} blocks of {block} threads")
        signature = self.signature(name)
        if len(args) != len(signature):
            raise TypeError(f"{name} takes {len(signature)} arguments, got {len(args)}")
        keep, pointers = [], (ctypes.c_void_p * len(args))()
        for i, (arg, kind) in enumerate(zip(args, signature, strict=True)):
            if kind.startswith("*"):
                if arg is not None:
                    if not isinstance(arg, np.ndarray) or arg.dtype != _POINTEE[kind[1:]]:
                        raise TypeError(f"{name} argument {i}: {kind[1:]} pointer, got "
                                        f"{getattr(arg, 'dtype', type(arg))}")
                    if not arg.flags.c_contiguous:
                        raise TypeError(f"{name} argument {i}: not C-contiguous")
                cell = ctypes.c_void_p(None if arg is None else arg.ctypes.data)
            else:
                if not isinstance(arg, np.generic) or arg.dtype != _SCALAR[kind]:
                    raise TypeError(f"{name} argument {i}: a {kind} scalar, got {arg!r}")
                cell = ctypes.create_string_buffer(arg.tobytes(), arg.nbytes)
            keep.append(cell)
            pointers[i] = ctypes.addressof(cell)
        with self._lock:
            failed = self._lib.lb_launch(self._index[name], int(grid[0]), int(block[0]), pointers)
        if failed:
            raise RuntimeError(f"{name} failed on the host (a shim limit, such as a shuffle "
                               "after a lane returned, or a deadlock)")


# -- the stand-in for CuPy -------------------------------------------------------------


class DeviceArray(np.ndarray):
    """A NumPy array standing in for a CuPy one: CuPy's ``.data.ptr`` and ``.get()``, and
    ``__cuda_array_interface__`` on a type of module ``cupy``, by which the library tells
    GPU arrays and CuPy's (the dispatcher, Dask's chunk check)."""

    __cuda_array_interface__ = property(lambda self: {"data": (self.ctypes.data, False)})

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.ctypes.data)

    def get(self, stream=None, order="C", out=None, blocking=True):
        if out is None:
            return np.array(self).view(np.ndarray)
        out[...] = self  # (kernels ran at their launch: nothing to wait for)
        return out


DeviceArray.__module__ = "cupy"


def device(value):
    """``value`` (an array, or a tuple of them) as DeviceArray views; anything else as it is."""
    if isinstance(value, np.ndarray) and not isinstance(value, DeviceArray):
        return value.view(DeviceArray)
    if isinstance(value, tuple):
        return tuple(device(v) for v in value)
    return value


def _on_device(function):
    return lambda *args, **kwargs: device(function(*args, **kwargs))


class _Function:
    def __init__(self, library: Library, name: str):
        self._library, self._name = library, name
        self.num_regs = 32
        self.max_dynamic_shared_size_bytes = 0  # (CuPy's attribute: set to opt in)
        self.shared_size_bytes = STATIC_ALLOWANCE  # (CuPy's: the static shared memory)

    def __call__(self, grid, block, args, shared_mem=0):
        self._library.launch(self._name, grid, block, args, shared_mem,
                             self.max_dynamic_shared_size_bytes)


_LIBRARIES: dict[str, Library] = {}


def library(filename: str) -> Library:
    found = _LIBRARIES.get(filename)
    if found is None:
        found = _LIBRARIES[filename] = Library(filename)
    return found


def _load(filename: str, expressions: list[str], capability) -> dict[str, _Function]:
    """The backend's ``_load`` on the host: the functions of the library built for the host."""
    if filename not in ("elementwise.cu", "cross_entropy.cu"):
        raise ValueError("the host emulation builds kernels/elementwise.cu and "
                         "kernels/cross_entropy.cu only")
    return {name: _Function(library(filename), name) for name in expressions}


class _RuntimeError(Exception):
    pass


class _Event:
    """CuPy's Event: kernels here run at their launch, so recording and waiting do nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def record(self, stream=None):
        pass

    def synchronize(self):
        pass


def fake_cupy() -> types.ModuleType:
    """A ``cupy`` module: NumPy's namespace behind it, its arrays DeviceArray, kernels built
    for the host (``cupy_backend()`` swaps the backend's ``_load`` for ``_load``), one device of SM_COUNT multiprocessors."""
    cp = types.ModuleType("cupy")

    def __getattr__(name):
        found = getattr(np, name)
        return _on_device(found) if callable(found) and not isinstance(found, type) else found

    cp.__getattr__ = __getattr__
    cp.ndarray = DeviceArray
    # CuPy's reductions give 0-d arrays (on the device), not NumPy scalars
    cp.count_nonzero = lambda *a, **k: device(np.asarray(np.count_nonzero(*a, **k)))

    def asarray(a, dtype=None, **kwargs):  # CuPy's: a device array that needs no cast is
        if isinstance(a, DeviceArray) and dtype in (None, a.dtype) and not kwargs:
            return a  # returned itself, not a view
        return device(np.asarray(a, dtype, **kwargs))

    cp.asarray = asarray
    cp.asnumpy = lambda a, *args, **kwargs: np.array(a).view(np.ndarray)
    runtime = types.SimpleNamespace(
        getDevice=lambda: 0, getDeviceCount=lambda: 1, CUDARuntimeError=_RuntimeError,
        getDeviceProperties=lambda i: {"multiProcessorCount": SM_COUNT, "major": 8, "minor": 0,
                                       "sharedMemPerBlockOptin": SHARED_MEMORY_OPT_IN})
    cp.cuda = types.SimpleNamespace(runtime=runtime,
                                    get_current_stream=lambda: types.SimpleNamespace(ptr=0),
                                    alloc_pinned_memory=bytearray, Event=_Event)
    return cp


def cupy_backend():
    """``lossbackends/backends/cupy_backend.py`` loaded against the stand-in (its own
    module object; the dispatch's registry is left alone)."""
    path = Path(_cuda_sources.__file__).parent / "backends" / "cupy_backend.py"
    spec = importlib.util.spec_from_file_location("lossbackends.backends._cupy_on_host", path)
    module = importlib.util.module_from_spec(spec)
    saved, register = sys.modules.get("cupy"), _dispatch.register
    sys.modules["cupy"] = fake_cupy()
    _dispatch.register = lambda *a, **k: None
    try:
        spec.loader.exec_module(module)
        module.nvrtc_load, module._load = module._load, _load  # (the first for tests/test_nvrtc)
    finally:
        _dispatch.register = register
        if saved is None:
            del sys.modules["cupy"]
        else:
            sys.modules["cupy"] = saved
    return module


def assert_same_bits(got: tuple, expected: tuple, message: str) -> None:
    """Each result of ``got`` has the bits of ``expected``'s (compared as integers: -0 and
    NaNs too): what two settings of one kernel must give, here or on the card."""
    for a, b in zip(got, expected, strict=True):
        a, b = np.asarray(a), np.asarray(b)
        bits = f"u{a.dtype.itemsize}"
        np.testing.assert_array_equal(a.view(bits), b.view(bits), err_msg=message)


def same_bits_under(module, name: str, values: tuple, call, message: str) -> None:
    """``call()`` with ``module.<name>`` set to each of two ``values`` in turn (restored
    after): the two results have the same bits."""
    results = []
    for value in values:
        with mock.patch.object(module, name, value):
            results.append(call())
    assert_same_bits(*results, message)


# -- calls as users make them ------------------------------------------------------------


def available() -> str | None:
    """Why the kernels cannot run on the host here, or None."""
    if shutil.which("g++") is None:
        return "g++ is not installed: the CUDA kernels cannot be built for the host"
    return None


_BACKEND = None


def backend():
    """The CuPy backend's module on the stand-in, loaded once (``cupy_backend``)."""
    global _BACKEND
    if _BACKEND is None:
        _BACKEND = cupy_backend()
    return _BACKEND


def value_and_grad(name: str, y_true, y_pred, *, reduction: str = "mean", hess: bool = False,
                   **options):
    """``lb.<name>.value_and_grad`` (``grad_and_hess`` with the value when ``hess``: value,
    gradient, Hessian) on NumPy arrays, computed by the CuPy backend's kernels on the host:
    the loss's own preparation and the library's result handling (``_compute.compute``)."""
    from lossbackends import _compute, losses

    kernel = backend().KERNELS[name]

    def on_device(y, p, weight, params, reduction, scale, grad, want_value, hess=None):
        params = device(params)
        extra = {} if hess is None else {"hess": device(hess)}
        value = kernel(device(y), device(p), device(weight), params, reduction, scale,
                       device(grad), want_value, **extra)
        return None if value is None else np.asarray(value).view(np.ndarray)

    loss = losses.LOSSES[name]
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    prep = loss._prepare(np, y_true, y_pred, **options)
    results = _compute.compute(np, on_device, prep, y_true, reduction, True, _compute._WANT_GRAD,
                               _compute._WANT_GRAD if hess else None)
    return tuple(None if r is None else (r.view(np.ndarray) if isinstance(r, np.ndarray) else r)
                 for r in results)
