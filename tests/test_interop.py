"""torch tensors, JAX arrays and other DLPack arrays through the plain API: recognised by
instance, read and returned without a copy, results of y_pred's library."""

from __future__ import annotations

import contextlib
import importlib.util
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest
from reference import cross_entropy as ce_reference
from reference import elementwise

import lossbackends as lb
from lossbackends import _dispatch, _foreign

torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'lossbackends[torch]')")

HOST_BACKENDS = ("numpy", "numba")
ELEMENTWISE = ("mse", "binary_cross_entropy", "binary_cross_entropy_with_logits", "hinge")


def _host_backend(backend):
    if backend == "cupy":
        pytest.skip("torch CUDA tensors are tested in tests/test_gpu.py")
    return backend


def _inputs(loss, shape, seed=0):
    rng = np.random.default_rng(seed)
    if loss == "binary_cross_entropy":
        return (rng.random(shape) < 0.5).astype(np.float64), rng.uniform(0.02, 0.98, shape)
    if loss == "hinge":
        return np.where(rng.random(shape) < 0.5, -1.0, 1.0), rng.normal(0, 2, shape)
    return rng.random(shape), rng.normal(0, 2, shape)


def test_the_issue_example():
    value = lb.mse(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0]))
    assert isinstance(value, torch.Tensor) and value.shape == () and value.item() == 2.5


@pytest.mark.parametrize("loss", ELEMENTWISE)
@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_cpu_against_the_reference(backend, loss, reduction, dtype):
    _host_backend(backend)
    y, p = _inputs(loss, (7, 5))
    ty, tp = torch.tensor(y, dtype=dtype), torch.tensor(p, dtype=dtype, requires_grad=True)
    value, grad = getattr(lb, loss).value_and_grad(ty, tp, reduction=reduction, backend=backend)
    ref_value, ref_grad = elementwise(loss, y, p, reduction=reduction)
    assert isinstance(value, torch.Tensor) and isinstance(grad, torch.Tensor)
    assert value.dtype == dtype and grad.dtype == dtype and grad.shape == tp.shape
    assert value.grad_fn is None and not grad.requires_grad  # read detached, no graph
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(value.numpy(), ref_value, rtol=tol, atol=tol)
    np.testing.assert_allclose(grad.numpy(), ref_grad, rtol=tol, atol=tol)


def test_torch_cross_entropy_with_options(backend):
    _host_backend(backend)
    rng = np.random.default_rng(1)
    x = rng.normal(0, 2, (4, 6, 3))  # classes on axis 1
    t = rng.integers(0, 6, (4, 3))
    t[0, 0] = -100
    w = rng.uniform(0.5, 2, 6)
    value, grad = lb.cross_entropy.value_and_grad(
        torch.tensor(t), torch.tensor(x), axis=1, class_weight=torch.tensor(w),
        label_smoothing=0.1, backend=backend)
    ref_value, ref_grad = ce_reference(t, x, axis=1, class_weight=w, label_smoothing=0.1)
    assert isinstance(value, torch.Tensor) and isinstance(grad, torch.Tensor)
    np.testing.assert_allclose(value.item(), ref_value, rtol=1e-12)
    np.testing.assert_allclose(grad.numpy(), ref_grad, rtol=1e-10, atol=1e-14)


def _spy(monkeypatch, loss, backend):
    """Record the data pointers the kernel of ``loss`` receives and writes."""
    seen = {}
    kernel = _dispatch.kernel_for(loss, backend)

    def spy(y, p, weight, params, reduction, scale, grad, want_value):
        seen["p"] = p.ctypes.data
        seen["y"] = y.ctypes.data
        seen["grad"] = None if grad is None else grad.ctypes.data
        value = kernel(y, p, weight, params, reduction, scale, grad, want_value)
        seen["value"] = value.ctypes.data if isinstance(value, np.ndarray) and value.ndim else None
        return value

    monkeypatch.setitem(_dispatch._REGISTRY, (loss, backend), spy)
    monkeypatch.setattr(_dispatch, "_ROUTES", {})  # routes remember their kernel
    return seen


def test_torch_is_zero_copy_in_and_out(monkeypatch):
    seen = _spy(monkeypatch, "mse", "numpy")
    y, p = torch.rand(1000, dtype=torch.float64), torch.randn(1000, dtype=torch.float64)
    p.requires_grad_()
    losses, grad = lb.mse.value_and_grad(y, p, reduction="none", backend="numpy")
    assert seen["y"] == y.data_ptr() and seen["p"] == p.data_ptr()  # views in
    assert seen["grad"] == grad.data_ptr() and seen["value"] == losses.data_ptr()  # views out
    out = torch.empty(1000, dtype=torch.float64)
    _, grad = lb.mse.value_and_grad(y, p, out=out, backend="numpy")
    assert grad is out and seen["grad"] == out.data_ptr()
    expected = 2 * (p.detach() - y) / 1000
    torch.testing.assert_close(out, expected)
    q = p.detach().clone()
    _, grad = lb.mse.value_and_grad(y, q, out=q, backend="numpy")  # in place
    assert grad is q and seen["grad"] == q.data_ptr() == seen["p"]
    torch.testing.assert_close(q, expected)


def test_out_must_match_y_pred_library():
    y, p = torch.zeros(3), torch.ones(3)
    with pytest.raises(ValueError, match="out must be a torch array"):
        lb.mse.grad(y, p, out=np.empty(3, np.float32))
    # a NumPy y_pred with a torch weight takes the foreign path: its out stays NumPy's (a
    # torch out was written and NumPy views returned)
    ny, npred, weight = np.zeros(3, np.float32), np.ones(3, np.float32), torch.ones(3)
    with pytest.raises(ValueError, match="out must be a NumPy or CuPy array like y_pred"):
        lb.mse.grad(ny, npred, weight=weight, out=torch.empty(3))
    with pytest.raises(ValueError, match="grad_out must be a NumPy or CuPy array"):
        lb.mse.grad_and_hess(ny, npred, weight=weight, out=(torch.empty(3), None))
    with pytest.raises(ValueError, match="dtype"):
        lb.mse.grad(y, p, out=torch.empty(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="contiguous tensor, as torch.empty_like"):
        lb.mse.grad(torch.zeros(3, 2), torch.ones(3, 2), out=torch.empty(2, 3).T)
    # a bfloat16 out takes a bfloat16 y_pred's gradient only: any other was computed into a
    # float32 copy of it and lost, the tensor handed back unwritten
    for dtype in (torch.float32, torch.float64):
        out = torch.full((3,), 7.0, dtype=torch.bfloat16)
        with pytest.raises(ValueError, match=f"dtype torch.bfloat16; .* dtype {dtype}"):
            lb.mse.grad(torch.zeros(3, dtype=dtype), torch.ones(3, dtype=dtype), out=out)
    out = torch.full((3,), 7.0, dtype=torch.bfloat16)
    grad = lb.mse.grad(torch.zeros(3, dtype=torch.bfloat16), torch.ones(3, dtype=torch.bfloat16),
                       out=out)
    assert grad is out and torch.equal(out, torch.full((3,), 2 / 3, dtype=torch.bfloat16))


def test_mixed_libraries_follow_y_pred():
    y, p = np.array([1.0, 2.0]), torch.tensor([0.0, 0.0], dtype=torch.float64)
    value, grad = lb.mse.value_and_grad(y, p)
    assert isinstance(value, torch.Tensor) and isinstance(grad, torch.Tensor)
    assert value.item() == 2.5
    value, grad = lb.mse.value_and_grad(torch.tensor([1.0, 2.0]), np.zeros(2))
    assert isinstance(value, np.floating) and isinstance(grad, np.ndarray) and value == 2.5
    # a torch weight with NumPy inputs is read the same way
    value = lb.mse(np.ones(2), np.zeros(2), weight=torch.tensor([1.0, 3.0], requires_grad=True))
    assert isinstance(value, np.floating) and value == 2.0


def test_non_contiguous_tensors():
    p = torch.randn(6, 4, dtype=torch.float64).T  # a transposed view
    y = torch.rand(4, 6, dtype=torch.float64)
    value, grad = lb.mse.value_and_grad(y, p)
    ref_value, ref_grad = elementwise("mse", y.numpy(), p.numpy())
    np.testing.assert_allclose(value.item(), ref_value, rtol=1e-12)
    np.testing.assert_allclose(grad.numpy(), ref_grad, rtol=1e-12)


class _UserTensor(torch.Tensor):
    """A tensor subclass defined outside torch (its module is the test's, not torch's)."""


def test_torch_devices_we_cannot_compute_on_name_the_fix():
    with pytest.raises(TypeError, match=r"device 'meta': .* move it with .cpu\(\) or .cuda\(\)"):
        lb.mse(torch.zeros(2, device="meta"), torch.zeros(2, device="meta"))


def test_torch_subclasses_defined_anywhere():
    p = torch.tensor([1.0, 2.0], dtype=torch.bfloat16).as_subclass(_UserTensor)
    y = torch.zeros(2, dtype=torch.bfloat16).as_subclass(_UserTensor)
    value, grad = lb.mse.value_and_grad(y, p)
    assert isinstance(value, torch.Tensor) and value.dtype == torch.bfloat16
    assert value.item() == 2.5 and grad.tolist() == [1.0, 2.0]
    g = torch.empty(2, dtype=torch.float64).as_subclass(_UserTensor)
    lb.mse.grad(torch.zeros(2, dtype=torch.float64), torch.tensor([1.0, 2.0], dtype=torch.float64),
                out=g)
    assert g.tolist() == [1.0, 2.0]


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_bfloat16_through_a_float32_pass(loss):
    rng = np.random.default_rng(2)
    if loss == "cross_entropy":
        y, p = torch.tensor(rng.integers(0, 5, 8)), torch.tensor(rng.normal(0, 2, (8, 5)))
    else:
        y, p = (torch.tensor(a) for a in _inputs(loss, 40))
    pb = p.to(torch.bfloat16)
    yb = y.to(torch.bfloat16) if loss != "cross_entropy" else y
    fn = getattr(lb, loss)
    value, grad = fn.value_and_grad(yb, pb, reduction="sum")
    assert value.dtype == grad.dtype == torch.bfloat16 and grad.shape == pb.shape
    ref_value, ref_grad = fn.value_and_grad(yb.float() if loss != "cross_entropy" else y,
                                            pb.float(), reduction="sum")
    assert value == ref_value.to(torch.bfloat16)
    assert torch.equal(grad, ref_grad.to(torch.bfloat16))
    out = torch.empty_like(pb)
    _, grad2 = fn.value_and_grad(yb, pb, reduction="sum", out=out)
    assert grad2 is out and torch.equal(out, grad)
    _, grad3 = fn.value_and_grad(yb, pb, reduction="sum", out=pb)  # in place
    assert grad3 is pb and torch.equal(pb, grad)


# --- any other DLPack array: a stand-in library ----------------------------------------


def _fake_library(device_type=1):
    """A module ``fakearrays`` with an array type exposing only DLPack."""
    module = types.ModuleType("fakearrays")

    class FakeArray:
        def __init__(self, data):
            self.data = np.asarray(data)

        def __dlpack__(self, **kwargs):
            return self.data.__dlpack__(**kwargs)

        def __dlpack_device__(self):
            return (device_type, 0)

    FakeArray.__module__ = "fakearrays"
    module.FakeArray = FakeArray
    return module, FakeArray


def test_any_dlpack_array(monkeypatch):
    module, FakeArray = _fake_library()
    monkeypatch.setitem(sys.modules, "fakearrays", module)
    value, grad = lb.mse.value_and_grad(FakeArray([1.0, 2.0]), FakeArray([0.0, 0.0]))
    # no from_dlpack: NumPy's results, the value a NumPy scalar as for NumPy inputs
    assert isinstance(value, np.float64) and value == 2.5
    np.testing.assert_array_equal(grad, [-1.0, -2.0])
    module.from_dlpack = lambda a: FakeArray(np.from_dlpack(a))  # now it has one
    _foreign._KINDS.pop(FakeArray, None)
    value = lb.mse(FakeArray([1.0, 2.0]), FakeArray([0.0, 0.0]))
    assert isinstance(value, FakeArray) and value.data == 2.5


def test_devices_are_read_from_the_instance(monkeypatch):
    module, FakeArray = _fake_library(device_type=2)  # "CUDA"
    monkeypatch.setitem(sys.modules, "fakearrays", module)
    with pytest.raises(ValueError, match="y_true is on CUDA device 0 but y_pred is on the CPU"):
        lb.mse(FakeArray([1.0]), torch.zeros(1))
    if importlib.util.find_spec("cupy") is None:  # GPU arrays here: say what computes them
        with pytest.raises(ValueError, match=r"lossbackends\[cuda12\]"):
            lb.mse(FakeArray([1.0]), FakeArray([0.0]))
    # torch defines __cuda_array_interface__ on the class: a CPU tensor is still a host array
    assert hasattr(torch.Tensor, "__cuda_array_interface__")
    assert _dispatch.device_of(torch.zeros(1)) == "host"
    assert lb.mse_loss(torch.tensor([3.0]), torch.tensor([1.0])).item() == 4.0


def test_torch_stream_context(monkeypatch):
    """CUDA tensors run on torch's current stream as CuPy's, on the tensor's device (the CPU
    side of it; tests/test_gpu.py runs it for real)."""
    calls = []

    class Recorder:
        def __init__(self, *args):
            calls.append((type(self).__name__, args))

        def __enter__(self):
            calls.append(("enter", type(self).__name__))

        def __exit__(self, *exc):
            calls.append(("exit", type(self).__name__))

    fake_cupy = types.SimpleNamespace(cuda=types.SimpleNamespace(
        Device=type("Device", (Recorder,), {}),
        ExternalStream=type("ExternalStream", (Recorder,), {})))
    fake_torch = types.SimpleNamespace(cuda=types.SimpleNamespace(
        current_stream=lambda index: types.SimpleNamespace(cuda_stream=1234 + index)))
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    with _foreign._torch_stream(fake_torch, 1):
        calls.append(("body",))
    assert calls == [("Device", (1,)), ("enter", "Device"),
                     ("ExternalStream", (1235, 1)), ("enter", "ExternalStream"), ("body",),
                     ("exit", "ExternalStream"), ("exit", "Device")]


# --- JAX -------------------------------------------------------------------------------


def test_jax_arrays(monkeypatch):
    jnp = pytest.importorskip("jax.numpy", reason="JAX is not installed (pip install 'lossbackends[jax]')")
    jax = sys.modules["jax"]
    value = lb.mse(jnp.array([1.0, 2.0]), jnp.array([0.0, 0.0]))
    assert isinstance(value, jax.Array) and value.shape == () and float(value) == 2.5
    seen = _spy(monkeypatch, "mse", "numpy")
    y, p = jnp.linspace(0, 1, 1000), jnp.linspace(-1, 2, 1000)
    # jaxlib's buffer import, then the public jax.numpy.from_dlpack it falls back to
    for fallback in (False, True):
        if fallback:
            monkeypatch.setattr(_foreign, "_JAX_IMPORT", [None])
        value, grad = lb.mse.value_and_grad(y, p, backend="numpy")
        assert isinstance(grad, jax.Array) and grad.dtype == jnp.float32
        assert isinstance(value, jax.Array) and value.shape == () and value.dtype == jnp.float32
        assert grad.unsafe_buffer_pointer() == seen["grad"]  # the kernel's buffer, no copy
        assert seen["p"] == p.unsafe_buffer_pointer()
        np.testing.assert_allclose(np.asarray(grad), 2 * (np.asarray(p) - np.asarray(y)) / 1000,
                                   rtol=1e-6)
        np.testing.assert_allclose(float(value), np.mean((np.asarray(p) - np.asarray(y)) ** 2),
                                   rtol=1e-6)
        assert float((grad * 2)[1]) == 2 * float(grad[1])  # an ordinary JAX array
    with pytest.raises(ValueError, match="immutable"):
        lb.mse.grad(y, p, out=p)
    bf = lb.mse.value_and_grad(y.astype(jnp.bfloat16), p.astype(jnp.bfloat16))
    assert bf[0].dtype == bf[1].dtype == jnp.bfloat16


def test_jax_results_on_y_preds_device_and_sharded_arrays_refused():
    """JAX with two CPU devices (a process of its own: the count is fixed at JAX's start):
    the results come back on y_pred's device, in place; an array sharded over both is
    refused with a message that names the fix (its DLPack export raised BufferError)."""
    pytest.importorskip("jax", reason="JAX is not installed (pip install 'lossbackends[jax]')")
    script = textwrap.dedent("""
        import os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
        import jax, jax.numpy as jnp, numpy as np
        from jax.sharding import Mesh, NamedSharding, PartitionSpec
        import lossbackends as lb, lossbackends.jax as lbj
        second = jax.devices()[1]
        y = jax.device_put(jnp.linspace(0, 1, 1000), second)
        p = jax.device_put(jnp.linspace(-1, 2, 1000), second)
        value, grad = lb.mse.value_and_grad(y, p)
        print(value.devices() == grad.devices() == lbj.mse(y, p).devices() == {second})
        print(np.allclose(np.asarray(grad), 2 * (np.asarray(p) - np.asarray(y)) / 1000))
        sharded = NamedSharding(Mesh(np.array(jax.devices()), ("x",)), PartitionSpec("x"))
        try:
            lb.mse(jax.device_put(y, sharded), jax.device_put(p, sharded))
        except ValueError as exc:
            print("jax.device_put(x, jax.devices()[0])" in str(exc))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=Path(__file__).parents[1], check=True)
    assert result.stdout.split() == ["True", "True", "True"], result.stderr[-2000:]


def test_jax_gpu_results_stay_on_their_gpu(monkeypatch):
    """A CuPy result (a JAX GPU y_pred) goes to jax.numpy.from_dlpack as it is, with no
    device (which would copy it to the host); a JAX without a CPU backend
    (JAX_PLATFORMS=cuda) still makes the adapter (the CPU side of it, with stand-ins)."""
    jax = pytest.importorskip("jax", reason="JAX is not installed (pip install 'lossbackends[jax]')")
    adapter = _foreign._Jax(type(jax.numpy.zeros(1)))
    seen = {}
    monkeypatch.setattr(adapter.module.numpy, "from_dlpack",
                        lambda a, **kwargs: seen.update(kwargs) or "on its GPU")

    class CupyLike:  # what the CuPy backend gives back
        ndim = 1

    assert adapter.from_native(CupyLike(), None) == "on its GPU" and seen == {}
    scalar = CupyLike()
    scalar.ndim = 0  # the value, a 0-d CuPy array: not copied into host memory either
    assert adapter.from_native(scalar, None) == "on its GPU" and seen == {}
    monkeypatch.setattr(jax, "devices", lambda *a: (_ for _ in ()).throw(
        RuntimeError("Unknown backend cpu")))
    assert _foreign._Jax(type(jax.numpy.zeros(1))).only_cpu is None


def test_bfloat16_cuda_tensors_reach_the_kernels_as_their_bits(monkeypatch):
    """The CPU side of torch's bfloat16 CUDA path, with CPU tensors posing as CUDA ones:
    the kernel gets float16 views of the bits inside a HALF_IS_BFLOAT16 block (the CuPy
    backend then runs the bf16_t kernels), writes bfloat16 bits, and the results are
    bfloat16 tensors over that memory (tests/test_gpu.py runs it on a GPU)."""
    from lossbackends._arrays import HALF_IS_BFLOAT16

    monkeypatch.setattr(_foreign._Torch, "device", lambda self, x: (_foreign.CUDA, 0))
    monkeypatch.setattr(_foreign._Torch, "to_native", lambda self, x, device: x.detach().numpy())
    monkeypatch.setattr(_foreign._Torch, "stream", lambda self, x, device: contextlib.nullcontext())
    seen = {}
    kernel = _dispatch.kernel_for("mse", "numpy")

    def bits(a):  # a float16 array of bfloat16 bits, as float32 values
        return torch.from_numpy(np.ascontiguousarray(a)).view(torch.bfloat16).float().numpy()

    def fake_bf16_kernel(y, p, weight, params, reduction, scale, grad, want_value):
        assert HALF_IS_BFLOAT16.get() and p.dtype == np.float16 and y.dtype == np.float16
        seen.update(p=p.ctypes.data, grad=None if grad is None else grad.ctypes.data)
        y32, p32 = bits(y), bits(p)
        w32 = None if weight is None else bits(weight)
        g32 = None if grad is None else np.empty(p.shape, np.float32)
        value = kernel(y32, p32, w32, params, reduction, scale, g32, want_value)
        if grad is not None:
            grad[...] = torch.from_numpy(g32).to(torch.bfloat16).view(torch.float16).numpy()
        if value is None:
            return None
        as_bits = torch.from_numpy(np.asarray(value, np.float32)).to(torch.bfloat16)
        return as_bits.view(torch.float16).numpy()

    monkeypatch.setitem(_dispatch._REGISTRY, ("mse", "numpy"), fake_bf16_kernel)
    monkeypatch.setattr(_dispatch, "_ROUTES", {})
    y = torch.linspace(-1, 1, 16, dtype=torch.bfloat16)
    p = torch.linspace(0, 3, 16, dtype=torch.bfloat16)
    value, grad = lb.mse.value_and_grad(y, p, backend="numpy", reduction="sum")
    assert not HALF_IS_BFLOAT16.get()
    assert value.dtype == grad.dtype == torch.bfloat16 and seen["p"] == p.data_ptr()
    assert grad.data_ptr() == seen["grad"]  # the kernel's buffer, viewed as bfloat16
    expected = 2 * (p.float() - y.float())
    torch.testing.assert_close(grad, expected.to(torch.bfloat16))
    torch.testing.assert_close(value.float(), ((p.float() - y.float()) ** 2).sum(),
                               rtol=1e-2, atol=0)
    # float32 targets and weights are cast to bfloat16 (the front sees float16 views only)
    value2 = lb.mse(y.float(), p, weight=torch.ones(16), backend="numpy", reduction="sum")
    assert value2 == value
    with pytest.raises(TypeError, match="must be a torch tensor"):
        lb.mse(y.float().numpy(), p, backend="numpy")
    q = p.clone()
    _, grad = lb.mse.value_and_grad(y, q, out=q, backend="numpy", reduction="sum")
    assert grad is q and seen["grad"] == seen["p"] == q.data_ptr()
    torch.testing.assert_close(q, expected.to(torch.bfloat16))


def test_review_fixes_out_requiring_grad_negated_views_and_jax_tracers():
    torch = pytest.importorskip("torch")
    h = torch.randn(5, 3, requires_grad=True) * 1.0
    with pytest.raises(ValueError, match="out requires grad"):
        lb.cross_entropy.grad(torch.tensor([0, 1, 2, 0, 1]), h, out=h)
    q = torch.randn(3, dtype=torch.complex64).conj().imag  # a lazily negated view
    assert torch.allclose(lb.mse(torch.zeros(3), q), (q ** 2).mean())
    # as out= (or in place) such a view would get the gradient in a copy, the tensor itself
    # left as it was: refused, torch's .numpy() refuses it too
    for out in (q, torch.empty(3)._neg_view(), torch.randn(3, dtype=torch.complex64).conj()):
        y_pred = q if out is q else torch.randn(3, dtype=out.dtype)
        with pytest.raises(ValueError, match="lazily negated or conjugated"):
            lb.mse.grad(torch.zeros(3, dtype=out.dtype), y_pred, out=out)
    jax = pytest.importorskip("jax")
    with pytest.raises(TypeError, match="lossbackends.jax"):
        jax.jit(lambda p: lb.mse(jax.numpy.zeros(3), p))(jax.numpy.ones(3))


def test_a_tensor_written_by_out_is_seen_by_autograd():
    """A torch tensor that receives a result through out= is marked written (its version
    counter, which a .detach() of it shares): a backward pass that saved it raises, as after
    torch's own in-place ops, instead of a gradient from the overwritten values (it once
    gave w.grad equal to the new gradient, silently). An inference tensor is refused
    outside inference mode, as torch refuses writes into one there."""
    w = torch.randn(4, requires_grad=True)
    x = torch.randn(4)
    z = (w * x).sum()  # saves x for w's gradient
    lb.mse.grad(torch.zeros(4), x, out=x)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        z.backward()
    x = torch.randn(3, 5)
    labels = torch.tensor([0, 4, 2])
    for method, out in (("grad", x), ("value_and_grad", x.detach()),
                        ("grad_and_hess", (torch.empty(3, 5), torch.empty(3, 5)))):
        buffers = out if isinstance(out, tuple) else (out,)
        before = [b._version for b in buffers]
        getattr(lb.cross_entropy, method)(labels, x, out=out)
        assert [b._version for b in buffers] == [v + 1 for v in before], method
    half = torch.empty(3, 5, dtype=torch.bfloat16)  # (the float32 pass copies in: once)
    lb.cross_entropy.grad(labels, x.to(torch.bfloat16), out=half)
    assert half._version == 1
    # a refused call (a wrong shape, a bad label on the host) writes nothing, and marks
    # nothing: a backward that saved out still runs
    s = torch.randn(3, 5, requires_grad=True).sigmoid()
    kept = s.detach()  # (sigmoid's backward reads its output)
    with pytest.raises(ValueError, match="shape"):
        lb.cross_entropy.grad(labels, torch.randn(3, 4), out=kept)
    with pytest.raises(lb.LabelError):
        lb.cross_entropy.grad(torch.tensor([0, 9, 2]), torch.randn(3, 5), out=kept)
    assert kept._version == 0
    s.sum().backward()
    with torch.inference_mode():
        frozen = torch.randn(4)
    with pytest.raises(ValueError, match=r"inference tensor .* torch.inference_mode\(\)"):
        lb.mse.grad(torch.zeros(4), torch.randn(4), out=frozen)
    with torch.inference_mode():
        grad = lb.mse.grad(torch.zeros(4), frozen, out=frozen)
    assert grad is frozen


def test_a_library_being_imported_by_another_thread_breaks_no_call():
    """torch, JAX and numpy.ma as another thread's import leaves them in sys.modules while it
    runs (modules without their attributes yet): calls go on as without them (they raised
    AttributeError for the whole of torch's import, seconds, and a cold start of 8 threads
    crashed in 2 runs out of 5 while Numba's cache load imported numpy.ma); once imported,
    the libraries' arrays are recognised as before."""
    script = textwrap.dedent("""
        import sys, types
        import numpy as np
        import lossbackends as lb
        real = {name: sys.modules.pop(name, None) for name in ("torch", "jax", "numpy.ma")}
        for name in real:  # half imported: the module object, none of its names yet
            sys.modules[name] = types.ModuleType(name)
        print(lb.mse([0.0, 1.0], [1.0, 1.0], backend="numpy"),
              lb.mse(np.zeros(2), np.ones(2), backend="numpy"))
        for name, module in real.items():
            if module is None:
                del sys.modules[name]
            else:
                sys.modules[name] = module
        import numpy.ma, torch, jax.numpy as jnp
        try:
            lb.mse(np.ma.array([0.0, 1.0], mask=[0, 1]), np.ones(2))
        except TypeError as error:
            print("masked", "numpy.ma" in str(error))
        print(type(lb.mse(torch.zeros(2), torch.ones(2))).__name__,
              type(lb.mse(jnp.zeros(2), jnp.ones(2))).__name__)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=Path(__file__).parents[1], timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:3] == ["0.5 1.0", "masked True", "Tensor ArrayImpl"]


def test_dtypes_numpy_cannot_hold_name_the_cast():
    """torch's float8 and complex32, and ml_dtypes' bfloat16 NumPy arrays as y_true or a
    weight: a TypeError that names the cast (torch's own said "unsupported ScalarType")."""
    with pytest.raises(TypeError, match=r"y_pred has dtype torch.float8_e4m3fn.*y_pred.float\(\)"):
        lb.mse(torch.zeros(3), torch.zeros(3, dtype=torch.float8_e4m3fn))
    with pytest.raises(TypeError, match=r"y_true has dtype torch.float8_e4m3fn.*y_true.float\(\)"):
        lb.mse(torch.zeros(3, dtype=torch.float8_e4m3fn), torch.zeros(3))
    ml_dtypes = pytest.importorskip("ml_dtypes")
    with pytest.raises(TypeError, match=r"weight has dtype bfloat16.*astype\(numpy.float32\)"):
        lb.mse(np.zeros(2), np.ones(2), weight=np.ones(2, ml_dtypes.bfloat16))
