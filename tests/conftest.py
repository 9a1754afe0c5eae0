"""Every test that takes the ``backend`` fixture runs on each backend; a backend that
cannot run here is skipped with the reason."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

BACKENDS = ("numpy", "numba", "cupy")

if os.environ.get("LOSSBACKENDS_CUDA_HOST"):  # the "cupy" backend on the host (tests/cuda_host)
    import sys

    import cuda_host

    sys.modules["cupy"] = cuda_host.fake_cupy()
    from lossbackends.backends import cupy_backend

    cupy_backend._load = cuda_host._load


def examples(n: int) -> int:
    """Hypothesis examples per test, scaled by LOSSBACKENDS_EXAMPLES (ci/gpu runs fewer)."""
    return max(5, int(n * float(os.environ.get("LOSSBACKENDS_EXAMPLES", "1"))))


def _skip_reason(name: str) -> str | None:
    if name == "numba" and importlib.util.find_spec("numba") is None:
        return "Numba is not installed (pip install 'lossbackends[numba]')"
    if name == "cupy" and not os.environ.get("LOSSBACKENDS_CUDA_HOST"):
        if importlib.util.find_spec("cupy") is None:
            return "CuPy is not installed: no GPU backend here (ci/gpu runs these on a GPU)"
        import cupy

        try:
            if cupy.cuda.runtime.getDeviceCount() == 0:
                return "no CUDA GPU on this machine"
        except cupy.cuda.runtime.CUDARuntimeError as exc:
            return f"no usable CUDA GPU on this machine ({exc})"
    only = os.environ.get("LOSSBACKENDS_TEST_BACKENDS")
    if only and name not in only.split(","):
        return f"LOSSBACKENDS_TEST_BACKENDS={only}"
    return None


@pytest.fixture(params=BACKENDS, scope="session")
def backend(request):
    reason = _skip_reason(request.param)
    if reason:
        pytest.skip(reason)
    return request.param


def on(backend: str, array):
    """``array`` placed where ``backend`` computes (CuPy arrays for cupy)."""
    if array is None:
        return None
    if backend == "cupy":
        import cupy

        return cupy.asarray(array)
    return np.asarray(array)


def host(value):
    """A backend's result as a NumPy array (copies GPU results back)."""
    if hasattr(value, "__cuda_array_interface__"):
        import cupy

        return cupy.asnumpy(value)
    return np.asarray(value)


def bits(value) -> bytes:
    """A result's bytes with every NaN as the one quiet NaN: the bits up to a NaN's sign and
    payload, which IEEE 754 leaves unspecified. x86 gives an operation's NaN operand back, so
    a NaN's sign follows which operand the compiler put first, or whether it negated before
    or inside a fused multiply-add, and two kernels of one loss may differ there (sigmoid
    focal's float64 ``grad_and_hess`` against ``value_and_grad`` on an AMD EPYC Zen 3)."""
    array = host(value)
    return np.where(np.isnan(array), np.array(np.nan, array.dtype), array).tobytes()


def starting_a_line(shape, dtype, past=0, fill=None):
    """An array of ``shape`` starting ``past`` elements after a 64-byte boundary, inside a
    buffer (its ``.base``) with room on both sides, filled with ``fill`` when given."""
    size, itemsize = int(np.prod(shape)), np.dtype(dtype).itemsize
    buffer = np.empty(size + past + 64, dtype) if fill is None else np.full(
        size + past + 64, fill, dtype)
    start = (-buffer.__array_interface__["data"][0]) % 64 // itemsize + past
    return buffer[start:start + size].reshape(shape)
