"""The CuPy backend's own NVRTC compile (``lossbackends/backends/_nvrtc.py``), without a GPU:
no flush-to-zero in the code it generates (CuPy's compile appends ``-ftz=true``, and on an
H200 float32 subnormals became 0), and its disk cache."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("cuda.bindings", reason="NVRTC comes with the kernels extra: "
                    "pip install -e '.[kernels]'")

from lossbackends._cuda_sources import elementwise_expressions, main_expressions  # noqa: E402
from lossbackends.backends import _nvrtc  # noqa: E402

_OPCODE_WITH_FTZ = re.compile(r"\b[a-z0-9]+(?:\.[a-z0-9]+)*\.ftz(?:\.[a-z0-9]+)*")


def _flushing(ptx: str) -> list[str]:
    """The instructions that flush float32 subnormals: every one with .ftz but PTX's
    approximations (ex2.approx, rcp.approx, div.approx: __expf, __fdividef and the
    library's expf, whose ranges keep them away from subnormals), .ftz by definition."""
    return sorted({op for op in _OPCODE_WITH_FTZ.findall(ptx) if ".approx." not in op})


@pytest.mark.parametrize("module", [("elementwise.cu", elementwise_expressions("float")),
                                    ("cross_entropy.cu", main_expressions("float"))])
def test_float_arithmetic_keeps_subnormals(module):
    ptx = _nvrtc.compile_module(*module, "compute_90").binary.decode(errors="replace")
    assert "fma.rn.f32" in ptx and "mul" in ptx
    flushing = _flushing(ptx)
    assert not flushing, f"instructions that flush float32 subnormals: {flushing}"


def test_the_probe_sees_a_flushing_compile():
    """``_flushing`` finds what -ftz=true generates (so the test above can fail)."""
    compiled = _nvrtc.compile_module("elementwise.cu", elementwise_expressions("float")[:2],
                                     "compute_90", ("-ftz=true",))
    found = _flushing(compiled.binary.decode(errors="replace"))
    assert "mul.rn.ftz.f32" in found or "fma.rn.ftz.f32" in found, found


def test_the_disk_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSBACKENDS_KERNEL_CACHE", str(tmp_path / "kernels"))
    expressions = ["finalize<float>"]
    path, lowered = _nvrtc.cached("elementwise.cu", expressions, "compute_90")
    assert path.parent == tmp_path / "kernels" and path.suffix == ".ptx"
    assert set(lowered) == {"finalize<float>"} and lowered["finalize<float>"] in path.read_text()

    def compile_again(*args, **kwargs):
        raise AssertionError("compiled again: the cache was not read")

    monkeypatch.setattr(_nvrtc, "compile_module", compile_again)
    assert _nvrtc.cached("elementwise.cu", expressions, "compute_90") == (path, lowered)
    # another target or other expressions are other binaries
    with pytest.raises(AssertionError, match="compiled again"):
        _nvrtc.cached("elementwise.cu", expressions, "compute_80")


def test_compiling_leaves_python_s_shared_bytes_alone():
    """NVRTC's buffers are our own: writing a one-byte log into ``b" " * 1``, CPython's
    shared singleton, made every b" " in the process b"\x00"."""
    _nvrtc.compile_module("elementwise.cu", ["finalize<float>"], "compute_90")
    assert bytes([32]) == b"\x20" and b"a b".split(b" ") == [b"a", b"b"]


def test_a_damaged_entry_is_compiled_again(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSBACKENDS_KERNEL_CACHE", str(tmp_path))
    expressions = ["finalize<float>"]
    path, lowered = _nvrtc.cached("elementwise.cu", expressions, "compute_90")
    whole = path.read_bytes()
    record = path.with_suffix(".json")
    for damage in (lambda: path.write_bytes(whole[: len(whole) // 2]),  # a crash mid-write
                   lambda: path.write_bytes(b""),
                   lambda: record.write_text("{}"),  # valid JSON, not a record
                   lambda: record.write_text("null"),
                   lambda: record.unlink()):
        damage()
        again, names = _nvrtc.cached("elementwise.cu", expressions, "compute_90")
        assert again == path and names == lowered and path.read_bytes() == whole
    assert not [p for p in tmp_path.iterdir() if p.suffix not in (".ptx", ".json")]


def test_without_a_home_the_cache_is_a_private_folder(monkeypatch):
    def no_home():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.delenv("LOSSBACKENDS_KERNEL_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/is/ignored")
    monkeypatch.setattr(_nvrtc.Path, "home", staticmethod(no_home))
    assert _nvrtc.cache_dir() is None
    path, _ = _nvrtc.cached("elementwise.cu", ["finalize<float>"], "compute_90")
    assert path.parent == _nvrtc._private_dir()


def test_an_unwritable_cache_falls_back_to_a_private_folder(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("LOSSBACKENDS_KERNEL_CACHE", str(blocker / "kernels"))
    path, lowered = _nvrtc.cached("elementwise.cu", ["finalize<double>"], "compute_90")
    assert path.parent == _nvrtc._private_dir() and path.exists()


def test_targets():
    assert _nvrtc.target(9, 0) == "sm_90"
    newest = max(_nvrtc._check(_nvrtc.nvrtc.nvrtcGetSupportedArchs()))
    # a device newer than this NVRTC knows gets PTX of the newest it knows
    assert _nvrtc.target(99, 9) == f"compute_{newest}"


def test_the_backend_loads_what_nvrtc_compiled(tmp_path, monkeypatch):
    """cupy_backend._load: the device's target compiled (a cubin for sm_90), loaded by
    ``cupy.RawModule(path=...)``, each function found by its lowered name (a stand-in for
    CuPy records what the backend asks of it; the GPU runs it for real)."""
    import cuda_host

    monkeypatch.setenv("LOSSBACKENDS_KERNEL_CACHE", str(tmp_path))
    backend = cuda_host.cupy_backend()
    asked = []

    class RawModule:
        def __init__(self, *, path):
            self.binary = Path(path).read_bytes()
            asked.append(Path(path))

        def get_function(self, name):
            assert name.encode() in self.binary  # (the ELF's symbol table)
            return name

    monkeypatch.setattr(backend.cp, "RawModule", RawModule, raising=False)
    expressions = ["finalize<float>", "finalize<double>"]
    functions = backend.nvrtc_load("elementwise.cu", expressions, (9, 0))
    assert [p.suffix for p in asked] == [".cubin"] and asked[0].parent == tmp_path
    assert set(functions) == set(expressions)
    assert all(name.startswith("_Z") for name in functions.values())  # mangled
