"""lossbackends.torch under torch's transforms: torch.compile (fullgraph, AOTAutograd,
compiled autograd, symbolic options), torch.func (grad, vjp, vmap), forward mode,
autocast, and the custom op itself (its path under a mode, its fake on meta tensors, a
second import). The eager autograd paths and the catalogue are in test_torch.py."""

from __future__ import annotations

import subprocess
import sys

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'lossbackends[torch]')")
import numpy as np  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import lossbackends as lb  # noqa: E402
import lossbackends.torch as lbt  # noqa: E402

D = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_vmap_of_an_empty_batch():
    """Empty results of torch's shapes (there is no example to run the kernel on)."""
    for reduction in ("mean", "none"):
        x, t = torch.randn(0, 4, 3, dtype=D), torch.zeros(0, 4, dtype=torch.long)
        for ours, theirs in ((lbt.cross_entropy, F.cross_entropy), (lbt.mse_loss, F.mse_loss)):
            target = t if ours is lbt.cross_entropy else x.clone()
            got = torch.func.vmap(lambda a, b, f=ours, r=reduction: f(a, b, reduction=r))(x, target)
            want = torch.func.vmap(lambda a, b, f=theirs, r=reduction: f(a, b, reduction=r))(x, target)
            assert got.shape == want.shape and got.dtype == want.dtype


def test_compiled_training_step():
    """One compile (AOTAutograd through the fake implementation and the autograd formula;
    the aot_eager backend skips Inductor's C++ build, which costs ~20 s on CI's 2 cores)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 4, dtype=D)
    x, t = torch.randn(16, 8, dtype=D), torch.randint(0, 4, (16,))

    def forward(x, t):
        return lbt.cross_entropy(model(x), t, label_smoothing=0.1)

    compiled = torch.compile(forward, fullgraph=True, backend="aot_eager")
    loss = compiled(x, t)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    expected = F.cross_entropy(model(x), t, label_smoothing=0.1)
    expected.backward()
    torch.testing.assert_close(loss, expected)
    for got, want in zip(grads, (p.grad for p in model.parameters()), strict=True):
        torch.testing.assert_close(got, want)


def test_compiled_evaluation_computes_the_value_alone():
    """With grad mode off (no_grad, inference_mode), a compiled call computes the value
    alone: no gradient, so nothing left in the host gradient cache (a compiled evaluation
    step computed the gradient and kept its 2 MiB here); vmap's rule and training as
    before."""
    x, t = torch.randn(512, 1000), torch.randint(0, 1000, (512,))
    compiled = torch.compile(lambda x, t: lbt.cross_entropy(x, t, label_smoothing=0.1),
                             fullgraph=True, backend="aot_eager")
    for mode in (torch.no_grad, torch.inference_mode):
        lb.empty_cache()
        with mode():
            value = compiled(x, t)
        assert lb.empty_cache() == 0, mode
        torch.testing.assert_close(value, F.cross_entropy(x, t, label_smoothing=0.1))
    rows = torch.compile(torch.func.vmap(lambda a, b: lbt.mse_loss(a, b)), backend="aot_eager")
    a, b = torch.randn(4, 50, dtype=D), torch.randn(4, 50, dtype=D)
    with torch.no_grad():
        torch.testing.assert_close(rows(a, b), ((a - b) ** 2).mean(1))
    xr = x.clone().requires_grad_()
    compiled(xr, t).backward()  # (grad mode on: the gradient, as before)
    xt = x.clone().requires_grad_()
    F.cross_entropy(xt, t, label_smoothing=0.1).backward()
    torch.testing.assert_close(xr.grad, xt.grad)


def test_compile_with_the_class_axis_not_last():
    x = torch.randn(2, 3, 4, requires_grad=True)
    t = torch.randint(0, 3, (2, 4))
    loss = torch.compile(lambda q: lbt.cross_entropy(q, t), fullgraph=True, backend="aot_eager")(x)
    loss.backward()
    x2 = x.detach().clone().requires_grad_()
    F.cross_entropy(x2, t).backward()
    torch.testing.assert_close(x.grad, x2.grad)


def test_custom_op_path_equals_the_eager_path():
    """Eager calls run a plain autograd.Function; under a mode (as under torch.compile) the
    custom op runs, its options encoded in its schema (None as NaN, bools as ints): the
    same values and gradients."""
    from torch.overrides import TorchFunctionMode

    class Passthrough(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    x = torch.randn(4, 3, generator=_gen(13), dtype=D)
    y = (torch.rand(4, 3, generator=_gen(14)) < 0.5).to(D)
    labels = torch.tensor([0, 2, 1, 1])
    for ours, target, options in ((lbt.sigmoid_focal, y, {"alpha": None, "gamma": 1.0}),
                                  (lbt.poisson_nll_loss, y, {"full": True}),
                                  (lbt.cross_entropy, labels, {"softcap": 2.0, "z_loss": 0.1})):
        eager, traced = x.clone().requires_grad_(), x.clone().requires_grad_()
        value = ours(eager, target, reduction="sum", **options)
        value.backward()
        with Passthrough():
            assert not lbt._eager(traced, target)
            op_value = ours(traced, target, reduction="sum", **options)
        op_value.backward()
        assert torch.equal(value, op_value) and torch.equal(eager.grad, traced.grad)


def test_compiled_autograd_runs_the_backward_of_both_paths():
    """Compiled autograd (torch._dynamo.config.compiled_autograd) keys each Function's
    backward by ``_compiled_autograd_key``: the eager Function's and the op's autograd
    formula's (under a mode), both single-level Functions, have Function's own. The
    gradients are torch's."""
    from torch.overrides import TorchFunctionMode

    class Passthrough(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    x = torch.randn(8, 5, generator=_gen(15), dtype=D)
    labels = torch.tensor([0, 2, 1, 1, 4, 3, 0, 2])
    # (set before torch.compile wraps the function: patched around the call alone, the
    # backward ran uncompiled; torch's own patch, not monkeypatch: pytest 9.2's undo
    # deletes an entry its module's __dict__ lacks, which hides the option from every
    # later torch.compile of the process, "config.compiled_autograd does not exist")
    with torch._dynamo.config.patch(compiled_autograd=True):
        backward = torch.compile(lambda value: value.backward(), backend="eager")
        for mode in (None, Passthrough):
            ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
            if mode is None:
                value = lbt.cross_entropy(ours, labels)
            else:
                with mode():
                    value = lbt.cross_entropy(ours, labels)
            backward(value)
            F.cross_entropy(theirs, labels).backward()
            torch.testing.assert_close(ours.grad, theirs.grad)
    torch._dynamo.reset()


def test_inplace_backward_under_compile_is_a_clear_error():
    """In both fullgraph modes (without it, a raise that Dynamo traced used to send the
    frame back to eager mode, which then wrote into input; two lambdas: Dynamo's cache is
    per code object)."""
    leaf = torch.randn(4, 3, dtype=D, requires_grad=True)
    t = torch.tensor([0, 1, 2, 0])
    for compiled in (
            torch.compile(lambda q: lbt.cross_entropy(q * 1.0, t, inplace_backward=True),
                          fullgraph=True, backend="eager"),
            torch.compile(lambda q: lbt.mse_loss(q * 1.0, torch.zeros_like(q),
                                                 inplace_backward=True), backend="eager")):
        with pytest.raises(RuntimeError, match="inplace_backward=True is eager-only"):
            compiled(leaf)
    assert leaf.grad is None


def test_plain_api_under_compile_runs_eagerly():
    """A plain call (torch tensors or NumPy arrays) inside torch.compile is a graph break
    where it runs eagerly, Dynamo never tracing our dispatch or NumPy code: the values and
    gradients of eager mode, out= written; fullgraph=True refuses the graph break."""
    labels, logits = torch.tensor([0, 1, 2, 0]), torch.randn(4, 3, generator=_gen(21), dtype=D)
    want_value, want_grad = lb.cross_entropy.value_and_grad(labels, logits)
    out = logits.clone()
    value, grad = torch.compile(lambda t, q: lb.cross_entropy.value_and_grad(t, q, out=q),
                                backend="eager")(labels, out)
    assert grad is out and torch.equal(out, want_grad) and torch.equal(value, want_value)
    a, b = torch.zeros(3, dtype=D), torch.ones(3, dtype=D)
    third = torch.full((3,), 2 / 3, dtype=D)  # mse's gradient and Hessian: 2 (b - a) / n, 2 / n
    value, (grad, hess) = torch.compile(lambda a, b: (lb.mse(a, b), lb.mse.grad_and_hess(a, b)),
                                        backend="eager")(a, b)
    assert value.item() == 1.0
    torch.testing.assert_close(grad, third)
    torch.testing.assert_close(hess, third)
    y, p = np.zeros(3), np.ones(3)  # NumPy arrays (Dynamo traces NumPy code as torch's)
    got = torch.compile(lambda y, p: lb.mse.grad(y, p, out=p), backend="eager")(y, p)
    assert got is p
    np.testing.assert_allclose(p, third.numpy())
    with pytest.raises(RuntimeError, match="use lossbackends.torch's losses"):
        torch.compile(lambda a, b: lb.mse(a, b), fullgraph=True, backend="eager")(a, b)


def test_second_derivatives_under_compile_are_torch_s_to_refuse():
    """Under torch.compile the backward is AOTAutograd's compiled graph, which traced our
    autograd formula once: it does not run at backward time, and cannot raise ours. A
    second derivative through the compiled region is never a number: ``.backward()`` gives
    torch's error; the saved gradient (detached by AOTAutograd) links nothing to input, so
    ``autograd.grad`` says input was not used (None with allow_unused=True, as for
    torch's own compiled cross_entropy)."""
    compiled = torch.compile(lambda q: lbt.mse_loss(q, torch.zeros_like(q)), fullgraph=True,
                             backend="aot_eager")
    x = torch.ones(3, dtype=D, requires_grad=True)
    (grad,) = torch.autograd.grad(compiled(x), x, create_graph=True)
    torch.testing.assert_close(grad, torch.full((3,), 2 / 3, dtype=D))
    with pytest.raises(RuntimeError, match="not have been used in the graph"):
        torch.autograd.grad(grad.sum(), x, retain_graph=True)
    assert torch.autograd.grad(grad.sum(), x, allow_unused=True, retain_graph=True) == (None,)
    with pytest.raises(RuntimeError, match="does not currently support double backward"):
        grad.sum().backward()


def test_torch_func_grad_vjp_and_vmap():
    """torch.func.grad, vjp and vmap(grad) equal those of torch.nn.functional's loss;
    second and forward-mode derivatives raise the clear errors."""
    torch.manual_seed(1)
    z = torch.randn(3, dtype=D)
    ours = torch.func.grad(lambda q: lbt.mse_loss(q, torch.zeros_like(q)))(z)
    torch.testing.assert_close(ours, 2 * z / 3)
    torch.testing.assert_close(
        ours, torch.func.grad(lambda q: F.mse_loss(q, torch.zeros_like(q)))(z))
    x, t = torch.randn(4, 3, 5, dtype=D), torch.randint(0, 5, (4, 3))
    t[1, 2] = -100  # an ignored row
    for options in ({}, {"label_smoothing": 0.1, "reduction": "sum"}):
        got = torch.func.vmap(torch.func.grad(lambda q, c, o=options: lbt.cross_entropy(q, c, **o)))(x, t)
        want = torch.func.vmap(torch.func.grad(lambda q, c, o=options: F.cross_entropy(q, c, **o)))(x, t)
        torch.testing.assert_close(got, want)
    upstream = torch.randn(3, dtype=D)
    value, pull = torch.func.vjp(lambda q: lbt.cross_entropy(q, t[0], reduction="none"), x[0])
    value2, pull2 = torch.func.vjp(lambda q: F.cross_entropy(q, t[0], reduction="none"), x[0])
    torch.testing.assert_close(value, value2)
    torch.testing.assert_close(pull(upstream)[0], pull2(upstream)[0])
    with pytest.raises(RuntimeError, match="first derivatives only"):
        torch.func.grad(torch.func.grad(lambda q: lbt.mse_loss(q, torch.zeros_like(q))))(z[0])
    with pytest.raises(RuntimeError, match="no forward-mode derivative"):
        torch.func.hessian(lambda q: lbt.mse_loss(q, torch.zeros_like(q)))(z)


def test_vmap_records_where_something_below_it_differentiates():
    """vmap's rule runs the kernel directly where nothing below it records (vmap(grad), a
    vmap of tensors that need no grad), and through autograd where something does:
    grad(vmap(...)), a vmap whose output is backpropagated, nested vmaps. Each equals
    torch.nn.functional's."""
    torch.manual_seed(3)
    p, y = torch.randn(4, 2, 5, dtype=D), torch.randn(4, 2, 5, dtype=D)

    def per_example(f):
        return torch.func.vmap(lambda q, t: f(q, t))

    ours, theirs = per_example(lbt.huber_loss), per_example(F.huber_loss)
    torch.testing.assert_close(ours(p, y), theirs(p, y))
    torch.testing.assert_close(
        torch.func.vmap(torch.func.vmap(torch.func.grad(lbt.huber_loss)))(p, y),
        torch.func.vmap(torch.func.vmap(torch.func.grad(F.huber_loss)))(p, y))
    torch.testing.assert_close(
        torch.func.grad(lambda q: ours(q, y).sum())(p),
        torch.func.grad(lambda q: theirs(q, y).sum())(p))
    leaf, other = p.clone().requires_grad_(), p.clone().requires_grad_()
    ours(leaf, y).pow(2).sum().backward()
    theirs(other, y).pow(2).sum().backward()
    torch.testing.assert_close(leaf.grad, other.grad)
    with torch.no_grad():
        torch.testing.assert_close(ours(leaf, y), theirs(leaf, y))


def test_compiled_kl_div_mean_and_huber_as_torch():
    """fullgraph=True: kl_div's "mean" warned through warnings.warn, which Dynamo cannot
    trace; under torch.compile the op's fake warns, at trace time (as torch's own kl_div
    warns when Dynamo runs it on fake tensors). Values and gradients are torch's."""
    x = torch.randn(6, 4, generator=_gen(31), dtype=D).log_softmax(1)
    t = torch.randn(6, 4, generator=_gen(32), dtype=D).softmax(1)
    y = torch.randn(6, 4, generator=_gen(33), dtype=D) * 2
    for ours, theirs, target, warns in ((lbt.kl_div, F.kl_div, t, True),
                                        (lbt.huber_loss, F.huber_loss, y, False)):
        compiled = torch.compile(lambda a, b, f=ours: f(a, b), fullgraph=True,
                                 backend="aot_eager")
        got, want = x.clone().requires_grad_(), x.clone().requires_grad_()
        if warns:
            with pytest.warns(UserWarning, match="batchmean"):
                value = compiled(got, target)
            with pytest.warns(UserWarning, match="batchmean"):
                expected = theirs(want, target)
        else:
            value, expected = compiled(got, target), theirs(want, target)
        torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-14)
        value.backward()
        expected.backward()
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-12, atol=1e-14)


def _per_example_grads(loss_fn, model):
    """Per-example gradients of the parameters, torch.func's recipe."""
    def loss_of(params, x, t):
        out = torch.func.functional_call(model, params, (x.unsqueeze(0),))
        return loss_fn(out, t.unsqueeze(0))
    return torch.func.vmap(torch.func.grad(loss_of), in_dims=(None, 0, 0))


@pytest.mark.parametrize("name", ["mse_loss", "cross_entropy"])
def test_compiled_torch_func_grad_and_per_example_grads(name):
    """torch.compile (fullgraph=True) of torch.func.grad and of vmap(grad), the per-example
    recipe, runs the op under torch.func's transforms (which refused the autograd.Function
    that custom_op had made, without setup_context): torch.nn.functional's values."""
    torch.manual_seed(5)
    model = torch.nn.Linear(5, 3, dtype=D)
    params = {k: v.detach() for k, v in model.named_parameters()}
    x = torch.randn(7, 5, dtype=D)
    t = torch.randint(0, 3, (7,)) if name == "cross_entropy" else torch.randn(7, 3, dtype=D)
    ours, theirs = getattr(lbt, name), getattr(F, name)

    def grad_of(loss_fn):
        return torch.func.grad(lambda p: loss_fn(torch.func.functional_call(model, p, (x,)), t))

    for make in (grad_of, lambda f: _per_example_grads(f, model)):
        args = (params,) if make is grad_of else (params, x, t)
        got = torch.compile(make(ours), fullgraph=True, backend="aot_eager")(*args)
        want = make(theirs)(*args)
        assert got.keys() == want.keys()
        for key in want:
            assert got[key].shape == want[key].shape
            torch.testing.assert_close(got[key], want[key], rtol=1e-12, atol=1e-14)


def test_torch_func_of_the_op_and_compiled_errors():
    """The op itself takes torch.func's transforms (its autograd formula a single-level
    Function): grad and vmap(grad) as torch's mse_loss. A second derivative, forward mode
    and a gradient for target raise ours, compiled too (there a forward tangent was
    dropped, a zero Hessian, and a target's gradient missing)."""
    z = torch.randn(4, 3, generator=_gen(41), dtype=D)

    def op(q):
        return torch.ops.lossbackends.value_and_grad(
            "mse_loss", q, torch.zeros_like(q), None, None, [], [], "mean")[0]

    def ours(q):
        return lbt.mse_loss(q, torch.zeros_like(q))

    def theirs(q):
        return F.mse_loss(q, torch.zeros_like(q))

    grad, vmap = torch.func.grad, torch.func.vmap
    torch.testing.assert_close(grad(op)(z), grad(theirs)(z))
    torch.testing.assert_close(vmap(grad(op))(z), vmap(grad(theirs))(z))
    cases = [(lambda q, f=f: grad(grad(f))(q[0, 0]), (z,), "first derivatives only")
             for f in (op, ours)]
    cases += [(torch.func.hessian(f), (z,), "no forward-mode derivative") for f in (op, ours)]
    cases.append((grad(lbt.mse_loss, argnums=1), (z, z.clone()), "target requires grad"))
    for call, args, message in cases:
        for f in (call, torch.compile(call, fullgraph=True, backend="aot_eager")):
            with pytest.raises(Exception, match=message):  # (compiled: TorchRuntimeError)
                f(*args)


def test_a_bad_label_under_compile_is_named_in_torch_s_terms():
    """The op's kernel raises at run time of the compiled graph: target[2], as eagerly (it
    said y_true[2] there)."""
    x, t = torch.randn(4, 3, requires_grad=True), torch.tensor([0, 1, 7, 0])
    compiled = torch.compile(lambda a, b: lbt.cross_entropy(a, b), fullgraph=True,
                             backend="aot_eager")
    for call in (lbt.cross_entropy, compiled):
        with pytest.raises(lb.LabelError, match=r"^cross_entropy: target\[2\] = 7 "):
            call(x, t)


def test_forward_mode_in_a_dual_level_raises():
    """A dual tensor of torch.autograd.forward_ad, eager: ours raises (the eager Function
    dropped the tangent: a None tangent, a silent zero derivative), requires_grad or not;
    plain tensors inside the dual level still compute, backward too."""
    import torch.autograd.forward_ad as fwAD

    x = torch.randn(4, 3, generator=_gen(51), dtype=D)
    t = torch.randn(4, 3, generator=_gen(52), dtype=D)
    with fwAD.dual_level():
        for requires_grad in (False, True):
            dual = fwAD.make_dual(x.clone().requires_grad_(requires_grad), torch.ones_like(x))
            with pytest.raises(RuntimeError, match="no forward-mode derivative"):
                lbt.mse_loss(dual, t)
        leaf = x.clone().requires_grad_()
        value = lbt.mse_loss(leaf, t)
        value.backward()
        torch.testing.assert_close(value, F.mse_loss(x, t))
        torch.testing.assert_close(leaf.grad, 2 * (x - t) / x.numel())


def test_a_second_import_redefines_the_op():
    """torch takes one library per namespace: importlib.reload of lossbackends.torch keeps
    the op (defined in ``lossbackends._torch_op``), an import after both modules left
    sys.modules defines it again (the earlier one dropped), and the op, its fake
    (torch.compile) and its autocast rule work after each. In a subprocess: the other
    tests' modules stay as they are."""
    code = """if True:
        import importlib, sys, torch
        import lossbackends.torch as lt
        x, t = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3)
        expected = torch.nn.functional.mse_loss(x, t)
        def check(module):
            torch._dynamo.reset()
            value = torch.compile(lambda a, b: module.mse_loss(a, b), fullgraph=True,
                                  backend="aot_eager")(x, t)
            assert torch.allclose(value, expected), (value, expected)
            op = torch.ops.lossbackends.value_and_grad
            with torch.autocast("cpu", dtype=torch.bfloat16):
                value = op("mse_loss", x.detach().bfloat16(), t.bfloat16(), None, None, [], [],
                           "mean")[0]
            assert value.dtype == torch.float32
        check(lt)
        check(importlib.reload(lt))
        del sys.modules["lossbackends.torch"], sys.modules["lossbackends._torch_op"]
        import lossbackends.torch as again
        check(again)
        print("ok")
    """
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def _value_and_grad_of(loss_fn, x, *args):
    x = x.detach().requires_grad_()
    value = loss_fn(x, *args)
    value.backward()
    return value.detach(), x.grad


def test_symbolic_options_under_compile():
    """A float option that Dynamo makes symbolic (a second value recompiles with it
    dynamic; ``dynamic=True`` from the start) traces with fullgraph=True, as torch's losses
    do: it becomes the number it stands for (a guard on its value), the values and
    gradients torch's."""
    torch.manual_seed(2)
    x, y = torch.randn(6, dtype=D), torch.randn(6, dtype=D)
    ours = torch.compile(lambda q, t, d: lbt.huber_loss(q, t, delta=d), fullgraph=True,
                         backend="aot_eager")
    for delta in (0.5, 0.7, 0.9):
        got = _value_and_grad_of(ours, x, y, delta)
        want = _value_and_grad_of(lambda q, t, d: F.huber_loss(q, t, delta=d), x, y, delta)
        torch.testing.assert_close(got, want)
    logits, labels = torch.randn(4, 3, dtype=D), torch.tensor([0, 2, 1, 0])
    probabilities = torch.rand(4, 3, dtype=D) * 0.8 + 0.1
    for name, target in (("cross_entropy", labels), ("huber_loss", y[:3].expand(4, 3)),
                         ("smooth_l1_loss", y[:3].expand(4, 3)),
                         ("binary_cross_entropy", probabilities.flip(0))):
        inputs = probabilities if name == "binary_cross_entropy" else logits
        ours = torch.compile(lambda q, t, n=name: getattr(lbt, n)(q, t), fullgraph=True,
                             dynamic=True, backend="aot_eager")
        got = _value_and_grad_of(ours, inputs, target)
        want = _value_and_grad_of(getattr(F, name), inputs, target)
        torch.testing.assert_close(got, want)
    module, reference = lbt.CrossEntropyLoss(), torch.nn.CrossEntropyLoss()
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    for smoothing in (0.0, 0.1, 0.2):  # a schedule: the attribute changes between calls
        module.label_smoothing = reference.label_smoothing = smoothing
        got = _value_and_grad_of(compiled, logits, labels)
        torch.testing.assert_close(got, _value_and_grad_of(reference, logits, labels))


@pytest.mark.parametrize("compiled", [False, True])
def test_autocast_computes_in_float32_as_torch(compiled):
    """Under torch.autocast the loss runs in float32, as autocast's fp32 policy runs
    torch's losses: the same dtype, value and gradient (through a bfloat16 layer)."""
    torch.manual_seed(3)
    layer = torch.nn.Linear(8, 10)
    x = torch.randn(4, 8)
    labels, target = torch.randint(0, 10, (4,)), torch.rand(4, 10)
    for ours, theirs, t in ((lbt.cross_entropy, F.cross_entropy, labels),
                            (lbt.mse_loss, F.mse_loss, target),
                            (lbt.mse_loss, F.mse_loss, target.bfloat16()),
                            (lbt.binary_cross_entropy_with_logits,
                             F.binary_cross_entropy_with_logits, target)):
        if compiled:
            ours = torch.compile(ours, fullgraph=True, backend="aot_eager")
        results = []
        for loss_fn in (ours, theirs):
            layer.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = layer(x)
                assert logits.dtype == torch.bfloat16
                value = loss_fn(logits, t)
            value.backward()
            results.append((value.dtype, value.detach(), layer.weight.grad.clone()))
        (dtype, value, grad), (want_dtype, want_value, want_grad) = results
        assert dtype == want_dtype == torch.float32
        torch.testing.assert_close(value, want_value)
        torch.testing.assert_close(grad, want_grad)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the op called directly: its rule
        value, grad = torch.ops.lossbackends.value_and_grad(
            "mse_loss", torch.ones(3, dtype=torch.bfloat16), torch.zeros(3), None, None, [],
            [], "mean")
    assert value.dtype == grad.dtype == torch.float32


def test_inplace_backward_under_autocast():
    """In place, the gradient goes into the bfloat16 logits themselves (no float32 copy: the
    option's point, mixed precision's usual case), computed in float32 inside: the
    layer's gradient is torch's under autocast to bfloat16's rounding of the logits'
    gradient; without inplace_backward the loss is float32 as torch's."""
    layer = torch.nn.Linear(8, 10)
    x, labels = torch.randn(4, 8), torch.randint(0, 10, (4,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = layer(x)
        value = lbt.cross_entropy(logits, labels, inplace_backward=True)
        assert logits.dtype == torch.bfloat16
    value.backward()
    grad = layer.weight.grad.clone()
    layer.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = F.cross_entropy(layer(x), labels)
        assert lbt.cross_entropy(layer(x), labels).dtype == expected.dtype == torch.float32
    expected.backward()
    torch.testing.assert_close(value.item(), expected.item(), rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(grad, layer.weight.grad, rtol=2e-2, atol=2e-2)


def test_inplace_backward_under_vmap_is_a_clear_error():
    """vmap's wrapper hides input.requires_grad: seen through, the in-place write is refused
    as under torch.func.grad (not dropped); with no gradient to take, the value alone."""
    x = torch.randn(4, 3, dtype=D, requires_grad=True) * 1.0
    t = torch.zeros(4, 3, dtype=D)
    kept = x.detach().clone()

    def per_example(q, c):
        return lbt.mse_loss(q, c, inplace_backward=True)

    for transform in (torch.func.vmap(per_example),
                      torch.compile(torch.func.vmap(per_example), backend="eager")):
        with pytest.raises(RuntimeError, match="inplace_backward=True is eager-only"):
            transform(x, t)
    assert torch.equal(x.detach(), kept)
    want = F.mse_loss(x, t, reduction="none").mean(1).detach()
    torch.testing.assert_close(torch.func.vmap(per_example)(x.detach(), t), want)
    with torch.no_grad():
        torch.testing.assert_close(torch.func.vmap(per_example)(x, t), want)
    assert torch.equal(x.detach(), kept)


def test_meta_tensors_give_torch_shapes():
    """On the ``meta`` device (shapes without data: model summaries, deferred init) the
    op's fake implementation answers, as torch's losses do there."""
    x = torch.zeros(4, 3, device="meta", requires_grad=True)
    t = torch.zeros(4, dtype=torch.long, device="meta")
    for reduction in ("mean", "none"):
        ours = lbt.cross_entropy(x, t, reduction=reduction)
        theirs = F.cross_entropy(x, t, reduction=reduction)
        assert (ours.device.type, ours.shape, ours.dtype) == ("meta", theirs.shape, theirs.dtype)
    lbt.mse_loss(x, torch.zeros(4, 3, device="meta")).backward()
    assert x.grad.device.type == "meta" and x.grad.shape == x.shape
    value = lbt.cross_entropy(x * 1.0, t, inplace_backward=True)  # nothing to write: no-op
    assert value.device.type == "meta" and value.shape == ()
    # the checks hold there too, as torch's own
    with pytest.raises(ValueError, match=r"target has shape \(5,\)"):
        lbt.cross_entropy(x, torch.zeros(5, dtype=torch.long, device="meta"))
    with pytest.raises(ValueError, match=r"delta must be in \(0, inf\]"):
        lbt.huber_loss(x, x.detach(), delta=-1.0)
    with pytest.raises(ValueError, match=r"input is on the meta device but other tensors are on"):
        lbt.mse_loss(x, torch.zeros(4, 3))
    # and the other way round: a CPU input with a meta target or weight (the op's fake
    # gave an uninitialised value there)
    cpu = torch.ones(4, 3)
    for call in (lambda: lbt.mse_loss(cpu, torch.zeros(4, 3, device="meta")),
                 lambda: lbt.mse_loss(cpu.clone().requires_grad_(), x.detach()),
                 lambda: lbt.mse_loss(cpu, cpu, weight=x.detach()),
                 lambda: lbt.cross_entropy(cpu, t)):
        with pytest.raises(ValueError, match=r"on the meta device but input is on cpu"):
            call()
