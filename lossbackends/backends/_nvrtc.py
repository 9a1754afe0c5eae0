"""The CUDA modules compiled with NVRTC and cached on disk: one compile function for the
CuPy backend (run time) and ``ci/check_kernels.py`` (CI, no GPU), with the same options.

Why not ``cupy.RawModule(code=...)``: CuPy appends ``-ftz=true`` to every NVRTC compile
(``cupy.cuda.compiler``), and NVRTC takes the last of repeated options, so float32
arithmetic flushed subnormal operands and results to zero. On an H200 (2026-12-04)
sigmoid(-90) = 8.2e-40 came back 0, and MAE's gradient at a difference of 1e-45 was 0
instead of +-1. The NumPy and Numba backends and PyTorch's CUDA kernels keep subnormals;
so do ours, compiled here and loaded by CuPy from the file (``cupy.RawModule(path=...)``).

The binaries and each kernel's lowered (mangled) name are cached under
``$LOSSBACKENDS_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/lossbackends/kernels`` (by default
``~/.cache/lossbackends/kernels``), keyed by the source text, the name expressions, the
options, the target and NVRTC's version; delete the folder to clear it. Imports
``cuda.bindings`` (the ``cuda12``/``cuda13`` extras and ``kernels``), never CuPy.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from functools import cache
from pathlib import Path
from typing import NamedTuple

from cuda.bindings import nvrtc

from .._cuda_sources import OPTIONS, source


class Compiled(NamedTuple):
    binary: bytes  # a cubin for an sm_XX target, PTX for compute_XX
    lowered: dict[str, str]  # name expression -> the symbol in the binary
    log: str


def _check(result):
    if result[0] != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise RuntimeError(f"NVRTC error {result[0]}")
    return result[1:] if len(result) > 2 else (result[1] if len(result) == 2 else None)


def version() -> tuple[int, int]:
    return tuple(_check(nvrtc.nvrtcVersion()))


@cache
def target(major: int, minor: int) -> str:
    """The target for a device of compute capability ``major.minor``: its own machine code
    (``sm_XX``) where this NVRTC knows it, else PTX of the newest architecture it knows
    below (``compute_XX``, which the driver assembles)."""
    archs = _check(nvrtc.nvrtcGetSupportedArchs())
    capability = 10 * major + minor
    if capability in archs:
        return f"sm_{capability}"
    older = [a for a in archs if a <= capability]
    if not older:
        raise RuntimeError(f"NVRTC {version()} supports no architecture at or below "
                           f"sm_{capability}; install an NVRTC for this GPU")
    return f"compute_{max(older)}"


def compile_module(filename: str, expressions: list[str], target: str,
                   extra_options: tuple[str, ...] = ()) -> Compiled:
    """``kernels/<filename>`` with ``expressions`` instantiated, for ``target`` (``sm_XX``:
    a cubin; ``compute_XX``: PTX), with ``OPTIONS``; a RuntimeError holds NVRTC's log."""
    program = _check(nvrtc.nvrtcCreateProgram(source(filename).encode(), filename.encode(),
                                              0, [], []))
    try:
        for expression in expressions:
            _check(nvrtc.nvrtcAddNameExpression(program, expression.encode()))
        options = [o.encode() for o in (*OPTIONS, f"-arch={target}", *extra_options)]
        status = nvrtc.nvrtcCompileProgram(program, len(options), options)[0]
        log = b" " * _check(nvrtc.nvrtcGetProgramLogSize(program))
        _check(nvrtc.nvrtcGetProgramLog(program, log))
        log = log.decode(errors="replace").rstrip("\x00")
        if status != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise RuntimeError(f"{filename} {expressions} {target} failed:\n{log}")
        cubin = target.startswith("sm_")
        size = _check((nvrtc.nvrtcGetCUBINSize if cubin else nvrtc.nvrtcGetPTXSize)(program))
        binary = b" " * size
        _check((nvrtc.nvrtcGetCUBIN if cubin else nvrtc.nvrtcGetPTX)(program, binary))
        lowered = {e: _check(nvrtc.nvrtcGetLoweredName(program, e.encode())).decode()
                   for e in expressions}
        return Compiled(binary, lowered, log)
    finally:
        nvrtc.nvrtcDestroyProgram(program)


def cache_dir() -> Path:
    found = os.environ.get("LOSSBACKENDS_KERNEL_CACHE")
    if found:
        return Path(found)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lossbackends" / "kernels"


@cache
def _private_dir() -> Path:  # where the cache folder cannot be written: this process's own
    return Path(tempfile.mkdtemp(prefix="lossbackends-kernels-"))


def _write(path: Path, data: bytes) -> None:
    """Whole or not at all (a rename), as another process may compile the same module."""
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as file:
        file.write(data)
    os.replace(file.name, path)


def cached(filename: str, expressions: list[str], target: str) -> tuple[Path, dict[str, str]]:
    """The binary's path and the lowered names of ``expressions``, compiled on first use."""
    key = hashlib.sha256(json.dumps(
        [source(filename), list(expressions), OPTIONS, target, version()]).encode()).hexdigest()
    suffix = "cubin" if target.startswith("sm_") else "ptx"
    compiled = None
    for directory in (cache_dir(), _private_dir()):
        binary, names = directory / f"{key[:40]}.{suffix}", directory / f"{key[:40]}.json"
        if binary.exists():  # the names are written first
            try:
                return binary, json.loads(names.read_text())
            except (OSError, ValueError):
                pass
        compiled = compiled or compile_module(filename, expressions, target)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            _write(names, json.dumps(compiled.lowered).encode())
            _write(binary, compiled.binary)
        except OSError:
            continue
        return binary, compiled.lowered
    raise OSError(f"cannot write the compiled kernels to {cache_dir()} or {_private_dir()}")
