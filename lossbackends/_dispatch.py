"""Choosing a backend and finding its kernel.

Precedence (first that applies): the call's ``backend=`` argument, the innermost
``use_backend`` block of this thread or asyncio task, ``LOSSBACKENDS_BACKEND``, then
``auto`` (the inputs decide). Nothing here imports Numba or CuPy to look at an array:
device arrays are recognised by their type, cached per type, and a backend module is
imported only when a call first needs it.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import importlib.util
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

import numpy as np

from . import _foreign

BACKEND_NAMES = ("numpy", "numba", "cupy")
_CHOICES = ("auto", *BACKEND_NAMES)
ENV_VAR = "LOSSBACKENDS_BACKEND"


@dataclass(frozen=True)
class Backend:
    """How to load one backend: its module, where its arrays live, how to install it."""

    name: str
    device: str  # "host" or "cuda"
    module: str
    install: str  # the pip command that makes it available


_BACKENDS = {
    "numpy": Backend("numpy", "host", "lossbackends.backends.numpy_backend", "pip install lossbackends"),
    "numba": Backend(
        "numba", "host", "lossbackends.backends.numba_backend", "pip install 'lossbackends[numba]'"
    ),
    "cupy": Backend(
        "cupy",
        "cuda",
        "lossbackends.backends.cupy_backend",
        "pip install 'lossbackends[cuda12]' (or [cuda13]) on a machine with an NVIDIA GPU",
    ),
}

# (loss name, backend name) -> kernel. Filled by each backend module when it is imported.
_REGISTRY: dict[tuple[str, str], Callable] = {}
_LOADED: dict[str, ModuleType] = {}


def register(backend: str, kernels: dict[str, Callable]) -> None:
    """Called by a backend module at import: map each of its losses to its kernel."""
    for loss, kernel in kernels.items():
        _REGISTRY[loss, backend] = kernel


def load_backend(name: str) -> ModuleType:
    """Import a backend's module (once), or say how to install what it needs."""
    module = _LOADED.get(name)
    if module is not None:
        return module
    spec = _BACKENDS[name]
    try:
        module = importlib.import_module(spec.module)
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError):  # (a package that is not installed)
            raise ValueError(f"backend {name!r} is not available here ({exc}); install it "
                             f"with: {spec.install}") from exc
        raise ValueError(f"backend {name!r} cannot run here: {exc}") from exc
    _LOADED[name] = module
    return module


def kernel_for(loss: str, backend: str) -> Callable:
    """The registered kernel of ``loss`` on ``backend``."""
    kernel = _REGISTRY.get((loss, backend))
    if kernel is None:
        load_backend(backend)
        kernel = _REGISTRY.get((loss, backend))
    if kernel is None:
        have = sorted(b for (name, b) in _REGISTRY if name == loss)
        raise NotImplementedError(
            f"backend {backend!r} has no kernel for {loss!r}; backends that have one: {have}"
        )
    return kernel


def check_backend_name(name: object, source: str = "backend") -> str:
    if name not in _CHOICES:
        raise ValueError(f"unknown {source} {name!r}; choose one of {', '.join(map(repr, _CHOICES))}")
    return name  # type: ignore[return-value]


# --- the user's choice -----------------------------------------------------------------

_CONTEXT_CHOICE: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "lossbackends_backend", default=None
)
# the open ``use_backend`` blocks of this thread or task, innermost last: each one's token
# for setting ``_CONTEXT_CHOICE`` back as it leaves. Kept here, not in the block's object,
# so that one object may be entered by several threads and tasks at once.
_OPEN_BLOCKS: contextvars.ContextVar[tuple[contextvars.Token, ...]] = contextvars.ContextVar(
    "lossbackends_blocks", default=()
)
# whether a ``use_backend`` block was ever entered: until then a call without ``backend=``
# skips the context variable's lookup (about 1 % of a call at n = 1000)
_BLOCK_ENTERED = False


def _read_env() -> tuple[str, str | None]:
    """(choice, error): the environment variable, read once at import. An invalid value is
    kept as the choice, so the call it applies to raises ``error`` (see ``_choose``)."""
    raw = os.environ.get(ENV_VAR, "").strip()
    if not raw:
        return "auto", None
    if raw.lower() not in _CHOICES:
        return raw, (
            f"unknown {ENV_VAR}={raw!r}; set it to one of {', '.join(_CHOICES)} or unset it"
        )
    return raw.lower(), None


_ENV_CHOICE, _ENV_ERROR = _read_env()


def settings_choice() -> str:
    """What the settings choose for a call without ``backend=``: the innermost
    ``use_backend`` block, else ``LOSSBACKENDS_BACKEND`` (unchecked: an invalid variable's
    value is returned, and ``_choose`` raises its error). ``Loss._run`` has this inline
    (a call's cost at n = 1000 counts every function call)."""
    return (_CONTEXT_CHOICE.get() or _ENV_CHOICE) if _BLOCK_ENTERED else _ENV_CHOICE


_F = TypeVar("_F", bound=Callable[..., Any])  # (``use_backend`` as a decorator keeps its type)


class use_backend:  # noqa: N801 (a function to its callers, as numpy.errstate)
    """Use backend ``name`` for calls inside this block (per thread and per asyncio task).

    ``name`` is one of ``"auto"``, ``"numpy"``, ``"numba"``, ``"cupy"``, checked here: an
    unknown name raises ``ValueError`` at the call, naming the valid ones. Blocks nest;
    the innermost wins; a call's own ``backend=`` argument still wins over the block. One
    ``use_backend`` object may be entered again, inside its own block or after it, and by
    several threads and tasks at once. It is also a decorator: the function's calls run
    inside such a block (a plain function's: the body of an ``async def`` or a generator
    runs after the call returns, outside it).

    >>> import lossbackends as lb
    >>> with lb.use_backend("numpy"):
    ...     print(lb.get_backend())
    numpy
    >>> @lb.use_backend("numpy")
    ... def reference_loss(y_true, y_pred):
    ...     return lb.mse(y_true, y_pred), lb.get_backend()
    >>> print(*reference_loss([1.0, 2.0], [0.0, 0.0]))
    2.5 numpy
    """

    def __init__(self, name: str) -> None:
        check_backend_name(name)
        self._name = name

    @property
    def name(self) -> str:
        """The backend this block uses."""
        return self._name

    def __enter__(self) -> str:
        global _BLOCK_ENTERED
        _BLOCK_ENTERED = True
        _OPEN_BLOCKS.set((*_OPEN_BLOCKS.get(), _CONTEXT_CHOICE.set(self._name)))
        return self._name

    def __exit__(self, *exc_info: object) -> None:
        *outer, token = _OPEN_BLOCKS.get() or (None,)
        if token is None:
            raise RuntimeError("use_backend's __exit__ without its __enter__: use it in a "
                               "with statement")
        _OPEN_BLOCKS.set(tuple(outer))
        _CONTEXT_CHOICE.reset(token)

    def __call__(self, function: _F) -> _F:
        @functools.wraps(function)
        def inside(*args, **kwargs):
            with self:
                return function(*args, **kwargs)

        return inside  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"use_backend({self.name!r})"


def get_backend() -> str:
    """The backend that applies now: the innermost ``use_backend``, else
    ``LOSSBACKENDS_BACKEND``, else ``"auto"`` (the inputs decide at each call).

    >>> import lossbackends as lb
    >>> with lb.use_backend("numpy"):
    ...     print(lb.get_backend())
    numpy
    """
    choice = settings_choice()
    if choice not in _CHOICES:
        raise ValueError(_ENV_ERROR)
    return choice


# --- auto: what the arrays say ---------------------------------------------------------

_DEVICE_OF_TYPE: dict[type, str | None] = {}
_BY_INSTANCE = "by instance"  # a type whose instances may live on either device


def device_of(x: object) -> str:
    """``"host"`` or ``"cuda"``: where ``x`` lives.

    NumPy and CuPy arrays are told by their type (cached), which never imports CuPy.
    Arrays of other libraries with DLPack (torch, JAX) are asked one by one
    (``__dlpack_device__``): torch and JAX define ``__cuda_array_interface__`` on the
    class even for CPU arrays. Any other class that defines ``__cuda_array_interface__``
    is asked whether the instance has it (a property may refuse for a CPU instance), and
    so is a class whose first instance seen holds it in its own ``__dict__`` (the
    contract's "on the instance"); a class whose first instance holds none is a host type
    from then on, decided, like NumPy's, by its type alone (the routes of its calls are
    kept: pandas' objects pay no per-call lookup).
    """
    kind = type(x)
    try:
        device = _DEVICE_OF_TYPE[kind]
    except KeyError:
        if _foreign.adapter(kind) is not None:
            device = None  # ask the instance
        elif not hasattr(kind, "__cuda_array_interface__"):
            # a wrapper may set the interface on its instances (in ``__init__``): a type
            # whose first instance seen holds it is asked instance by instance from then
            # on; any other, NumPy's subclasses and pandas' included, is a host type
            device = _BY_INSTANCE if _holds_interface(x) else "host"
        elif kind.__module__.partition(".")[0] == "cupy":
            device = "cuda"
        else:
            device = _BY_INSTANCE
        _DEVICE_OF_TYPE[kind] = device
    if device is _BY_INSTANCE:
        return "cuda" if hasattr(x, "__cuda_array_interface__") else "host"
    return device or _foreign.device_of(x)


def _holds_interface(x: object) -> bool:
    """Whether ``x``'s own ``__dict__`` holds ``__cuda_array_interface__`` (read without
    ``__getattr__``, which pandas answers with a column of that name); never for NumPy
    arrays and their subclasses, host arrays whatever their attributes."""
    if isinstance(x, np.ndarray):
        return False
    try:
        return "__cuda_array_interface__" in vars(x)
    except Exception:  # no __dict__ (or one that refuses): no interface of its own
        return False


_HOST_AUTO: list[str] = []  # the host backend auto picks, decided once


def callers_level() -> int:
    """The ``stacklevel`` of a warning raised here that names the user's line: the first
    frame outside this package, however many of its layers the call went through (NumPy
    arrays, torch and JAX tensors, Dask blocks)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level


_PACKAGE = os.path.dirname(__file__) + os.sep


def auto_host_backend() -> str:
    """``numba`` when it is installed and its backend imports, else ``numpy``: decided by
    the first call that asks, which imports the numba backend (as that call's kernel
    would). An installed Numba that cannot run (one older than the NumPy it meets,
    ``NUMBA_DISABLE_JIT=1``) leaves ``numpy``, with a warning that says why."""
    if not _HOST_AUTO:
        host = "numpy"
        if importlib.util.find_spec("numba") is not None:
            try:
                load_backend("numba")
                host = "numba"
            except ValueError as exc:
                warnings.warn(f"Numba is installed but cannot run here ({exc.__cause__}); "
                              "'auto' computes NumPy arrays with the numpy backend (slower). "
                              "Fix Numba's installation, or set LOSSBACKENDS_BACKEND=numpy "
                              "to choose it and silence this warning.", RuntimeWarning,
                              stacklevel=callers_level())
        _HOST_AUTO.append(host)
    return _HOST_AUTO[0]


def _describe(x: object) -> str:
    kind = type(x)
    return f"{kind.__module__}.{kind.__qualname__}"


# (kernel, xp, native, plain): the kernel, the backend's array module (numpy or cupy),
# whether y_true and y_pred are both of the array type of xp itself, and the kernel's
# launches of plain calls (``kernel.plain``, see ``numba_backend.PlainCalls``) or None. A
# plain tuple: it is unpacked on every call, and a NamedTuple unpacks a few times slower.
# With xp None, the kernel is a function that takes the whole call: Dask arrays
# (``_dask.run``), or torch/JAX/DLPack arrays, whose device each instance tells
# (``_loss.run_foreign`` views them as NumPy/CuPy and routes again).
Route = tuple[Callable, ModuleType, bool, Any]

# (loss, choice, type of y_true, type of y_pred) -> Route; a route is stored once its
# first call has passed every check of ``route``
_ROUTES: dict[tuple, Route] = {}


def route(loss: str, choice: object, from_settings: bool, y_true: object,
          y_pred: object) -> Route:
    """(kernel, xp, native, plain) for a new kind of call: the kernel it runs, and what the
    front needs to know to prepare its inputs (see ``Route``), checked, and stored in
    ``_ROUTES`` for the next call of its kind. ``choice``: the call's ``backend=``, else
    the settings' (``from_settings``). ``Loss._run`` looks a known kind up in ``_ROUTES``
    itself, one dict lookup a call, and calls this where it finds none."""
    from . import _dask

    # Dask and foreign (torch, JAX, DLPack) arrays: no array module, and a function that
    # takes the whole call (see ``Loss._run``): for Dask a graph of block calls, each
    # routed by its chunks' type; for the others, the call on NumPy/CuPy views of them.
    runner = None
    if _dask.is_dask_array(y_pred) or _dask.is_dask_array(y_true):
        runner = _dask.run
    elif _foreign.adapter(type(y_true)) is not None or _foreign.adapter(type(y_pred)) is not None:
        from ._loss import run_foreign

        runner = run_foreign
    if runner is not None:
        found = _ROUTES[loss, choice, type(y_true), type(y_pred)] = (runner, None, False, None)
        return found
    device = device_of(y_pred)
    if device_of(y_true) != device:
        raise ValueError(
            f"y_true ({_describe(y_true)}) and y_pred ({_describe(y_pred)}) live on different "
            "devices; move one of them first (cupy.asarray or cupy.asnumpy): lossbackends "
            "never copies between host and GPU behind your back"
        )
    name = _choose(choice, device, from_settings)
    xp = load_backend(name).xp
    kernel = kernel_for(loss, name)
    found = (kernel, xp, type(y_true) is type(y_pred) is xp.ndarray,
             getattr(kernel, "plain", None))
    if _BY_INSTANCE not in (_DEVICE_OF_TYPE[type(y_true)], _DEVICE_OF_TYPE[type(y_pred)]):
        _ROUTES[loss, choice, type(y_true), type(y_pred)] = found  # else: each call's own
    return found


def _choose(choice: object, device: str, from_settings: bool) -> str:
    """The backend for ``choice`` on ``device``, or the error that says why there is none."""
    if choice not in _CHOICES:
        if from_settings:  # use_backend checks its name, so this is the environment's
            raise ValueError(_ENV_ERROR)
        check_backend_name(choice)
    name = choice
    if name == "auto":
        name = "cupy" if device == "cuda" else auto_host_backend()
    if _BACKENDS[name].device != device:
        where = "GPU" if device == "cuda" else "host (NumPy)"
        fix = (
            "use backend='cupy' (or 'auto'), or move them with cupy.asnumpy"
            if device == "cuda"
            else "move them to the GPU with cupy.asarray, or use a host backend ('numpy', 'numba')"
        )
        mismatch = f"cannot run on {where} arrays; {fix}"
        try:
            load_backend(name)
        except ValueError as exc:
            # missing is the first thing to fix: moving the arrays alone would not help
            raise ValueError(f"{exc}. Even then it {mismatch}") from exc.__cause__
        raise ValueError(f"backend {name!r} {mismatch}")
    return name


def backend_for(backend: str | None, sample: object) -> str:
    """The backend that computes arrays like ``sample`` under the call's ``backend=`` and
    the settings in force (the same precedence as ``Loss._run``'s)."""
    choice = settings_choice() if backend is None else backend
    return _choose(choice, device_of(sample), backend is None)


def available_backends() -> list[str]:
    """The backends that can run here: installed, and for ``cupy`` with a GPU present;
    ``"numpy"`` always. ``python -m lossbackends`` prints them with what ``auto`` picks.

    >>> import lossbackends as lb
    >>> "numpy" in lb.available_backends()
    True
    """
    names = ["numpy"]
    with contextlib.suppress(ValueError):
        load_backend("numba")
        names.append("numba")
    try:
        module = load_backend("cupy")
        if module.device_count() > 0:
            names.append("cupy")
    except (ValueError, RuntimeError):
        pass
    return names
