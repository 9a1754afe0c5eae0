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
options, the target and NVRTC's build; delete the folder to clear it. An entry is the
binary and, written after it, a record of its names, size and hash: an entry whose binary
does not match its record is compiled again. Imports ``cuda.bindings`` (the
``cuda12``/``cuda13`` extras and ``kernels``), never CuPy.
"""

from __future__ import annotations

import contextlib
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


def _read(size_of, read, program) -> bytes:
    """A buffer NVRTC fills (log, PTX, cubin), without its closing NUL. In a bytearray of
    our own: a bytes object of one byte is CPython's shared singleton, and NVRTC writing
    into ``b" " * 1`` made every b" " in the process b"\\x00"."""
    buffer = bytearray(_check(size_of(program)))
    _check(read(program, buffer))
    return bytes(buffer[:-1] if buffer.endswith(b"\0") else buffer)


def version() -> tuple[int, int]:
    return tuple(_check(nvrtc.nvrtcVersion()))


@cache
def build() -> str:
    """NVRTC's version and build, as the PTX of an empty program names them (a patch
    release changes it, which ``version()`` does not)."""
    program = _check(nvrtc.nvrtcCreateProgram(b"", b"empty.cu", 0, [], []))
    try:
        _check(nvrtc.nvrtcCompileProgram(program, 0, []))
        ptx = _read(nvrtc.nvrtcGetPTXSize, nvrtc.nvrtcGetPTX, program).decode(errors="replace")
    finally:
        nvrtc.nvrtcDestroyProgram(program)
    return "\n".join(line for line in ptx.splitlines()[:8] if line.startswith("//"))


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
        log = _read(nvrtc.nvrtcGetProgramLogSize, nvrtc.nvrtcGetProgramLog, program)
        log = log.decode(errors="replace")
        if status != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise RuntimeError(f"{filename} {expressions} {target} failed:\n{log}")
        if target.startswith("sm_"):
            binary = _read(nvrtc.nvrtcGetCUBINSize, nvrtc.nvrtcGetCUBIN, program)
        else:  # (PTX text; the file keeps no NUL)
            binary = _read(nvrtc.nvrtcGetPTXSize, nvrtc.nvrtcGetPTX, program)
        lowered = {e: _check(nvrtc.nvrtcGetLoweredName(program, e.encode())).decode()
                   for e in expressions}
        return Compiled(binary, lowered, log)
    finally:
        nvrtc.nvrtcDestroyProgram(program)


def cache_dir() -> Path | None:
    """The cache's folder, or None where none can be named (no home directory)."""
    found = os.environ.get("LOSSBACKENDS_KERNEL_CACHE")
    if found:
        return Path(found)
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # (a relative one is to be ignored, as the XDG spec says)
        try:
            base = Path.home() / ".cache"
        except RuntimeError:  # no HOME, and a user id with no entry in passwd
            return None
    return Path(base) / "lossbackends" / "kernels"


@cache
def _private_dir() -> Path:  # where the cache folder cannot be written: this process's own
    return Path(tempfile.mkdtemp(prefix="lossbackends-kernels-"))


def _write(path: Path, data: bytes) -> None:
    """Whole or not at all (a rename), as another process may compile the same module;
    readable by all, as a folder shared through LOSSBACKENDS_KERNEL_CACHE needs."""
    file = tempfile.NamedTemporaryFile(dir=path.parent, delete=False)
    try:
        with file:
            file.write(data)
        os.chmod(file.name, 0o644)
        os.replace(file.name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(file.name)
        raise


def _entry(binary: Path, record: Path) -> dict[str, str] | None:
    """The lowered names of a complete cache entry, or None (missing, or its binary not the
    one its record describes: a crash mid-write, a damaged disk)."""
    try:
        found = json.loads(record.read_text())
        data = binary.read_bytes()
        if (len(data) == found["size"] and hashlib.sha256(data).hexdigest() == found["sha256"]
                and isinstance(found["names"], dict)):
            return found["names"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def cached(filename: str, expressions: list[str], target: str) -> tuple[Path, dict[str, str]]:
    """The binary's path and the lowered names of ``expressions``, compiled on first use."""
    key = hashlib.sha256(json.dumps(
        [source(filename), list(expressions), OPTIONS, target, build()]).encode()).hexdigest()
    suffix = "cubin" if target.startswith("sm_") else "ptx"
    compiled = None
    shared = cache_dir()
    for directory in ([shared] if shared else []) + [None]:
        directory = directory or _private_dir()  # (made only when needed)
        binary, record = directory / f"{key[:40]}.{suffix}", directory / f"{key[:40]}.json"
        names = _entry(binary, record)
        if names is not None:
            return binary, names
        compiled = compiled or compile_module(filename, expressions, target)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            _write(binary, compiled.binary)  # the binary first: the record marks it whole
            _write(record, json.dumps({
                "names": compiled.lowered, "size": len(compiled.binary),
                "sha256": hashlib.sha256(compiled.binary).hexdigest()}).encode())
        except OSError:
            continue
        return binary, compiled.lowered
    raise OSError(f"cannot write the compiled kernels to {shared} or {_private_dir()}")
