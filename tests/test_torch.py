"""lossbackends.torch: torch.nn.functional's losses as custom ops with our fused kernels,
eagerly: values, gradients, modules, errors, in-place backward, the catalogue (under
torch.compile, torch.func, autocast and on meta tensors: test_torch_transforms.py)."""

from __future__ import annotations

import gc
import weakref

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'lossbackends[torch]')")
import numpy as np  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import lossbackends as lb  # noqa: E402
import lossbackends.torch as lbt  # noqa: E402

D = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _hinge_reference(input, target, margin=1.0, reduction="mean", weight=None):
    losses = torch.clamp(margin - target * input, min=0)
    if weight is not None:
        losses = losses * weight
    return {"mean": losses.mean, "sum": losses.sum}.get(reduction, lambda: losses)()


def _case(name, shape=(5, 4), seed=0):
    """(input, target, tensor options) for ``name``: inputs away from kinks and clips."""
    g = _gen(seed)
    if name == "cross_entropy":
        x = torch.randn(shape, generator=g, dtype=D) * 2
        t = torch.randint(0, shape[1], (shape[0],) + shape[2:], generator=g)
        return x, t
    if name == "binary_cross_entropy":
        return (torch.rand(shape, generator=g, dtype=D) * 0.9 + 0.05,
                (torch.rand(shape, generator=g) < 0.5).to(D))
    if name == "hinge":
        t = torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0).to(D)
        s = torch.randn(shape, generator=g, dtype=D) * 2
        s = torch.where((1 - t * s).abs() < 0.05, s + 0.2 * t, s)  # off the kink
        return s, t
    return torch.randn(shape, generator=g, dtype=D), torch.rand(shape, generator=g, dtype=D)


# (our function, its options, torch's function with the same options)
CASES = {
    "mse": ("mse_loss", {}, F.mse_loss),
    "mse-weight": ("mse_loss", {"weight": "elementwise"}, F.mse_loss),
    "bce": ("binary_cross_entropy", {}, F.binary_cross_entropy),
    "bce-weight": ("binary_cross_entropy", {"weight": "row"}, F.binary_cross_entropy),
    "bce-logits": ("binary_cross_entropy_with_logits", {}, F.binary_cross_entropy_with_logits),
    "bce-logits-weights": ("binary_cross_entropy_with_logits",
                           {"weight": "row", "pos_weight": "last"},
                           F.binary_cross_entropy_with_logits),
    "ce": ("cross_entropy", {}, F.cross_entropy),
    "ce-options": ("cross_entropy", {"weight": "classes", "ignore_index": 1,
                                     "label_smoothing": 0.2}, F.cross_entropy),
    "ce-probabilities": ("cross_entropy", {"probabilities": True, "weight": "classes",
                                           "label_smoothing": 0.1}, F.cross_entropy),
    "hinge": ("hinge", {"margin": 0.5, "weight": "elementwise"}, _hinge_reference),
}


def _arguments(case, shape=(5, 4)):
    name, spec, reference = CASES[case]
    x, t = _case(name, shape)
    options = {}
    g = _gen(7)
    for key, value in spec.items():
        if value == "elementwise":
            options[key] = torch.rand(shape, generator=g, dtype=D) + 0.5
        elif value == "row":
            options[key] = torch.rand(shape[-1], generator=g, dtype=D) + 0.5
        elif value == "last":
            options[key] = torch.rand(shape[-1], generator=g, dtype=D) * 3
        elif value == "classes":
            options[key] = torch.rand(shape[1], generator=g, dtype=D) + 0.5
        elif key == "probabilities":
            t = torch.softmax(torch.randn(shape, generator=g, dtype=D), dim=1)
        else:
            options[key] = value
    return getattr(lbt, name), reference, x, t, options


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("case", CASES)
def test_equal_to_torch(case, reduction):
    ours, reference, x, t, options = _arguments(case)
    x.requires_grad_()
    value = ours(x, t, reduction=reduction, **options)
    expected = reference(x, t, reduction=reduction, **options)
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-14)
    upstream = torch.randn(expected.shape, generator=_gen(3), dtype=D)  # random, not ones
    (grad,) = torch.autograd.grad(value, x, upstream)
    (expected_grad,) = torch.autograd.grad(expected, x, upstream)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("case", CASES)
def test_gradcheck(case, reduction):
    ours, _, x, t, options = _arguments(case, (3, 4))
    x.requires_grad_()
    assert torch.autograd.gradcheck(lambda a: ours(a, t, reduction=reduction, **options), (x,))


def test_ignored_rows_and_three_dimensional_logits():
    x = torch.randn(3, 5, 2, generator=_gen(4), dtype=D, requires_grad=True)  # classes on dim 1
    t = torch.tensor([[0, -100], [4, 2], [-100, -100]])
    loss = lbt.cross_entropy(x, t, label_smoothing=0.3)
    torch.testing.assert_close(loss, F.cross_entropy(x, t, label_smoothing=0.3))
    loss.backward()
    assert torch.all(x.grad[2] == 0) and torch.all(x.grad[0, :, 1] == 0)
    assert torch.autograd.gradcheck(lambda a: lbt.cross_entropy(a, t, reduction="none"), (x,))


def test_non_contiguous_inputs():
    x = torch.randn(4, 6, generator=_gen(5), dtype=D).T.requires_grad_()  # (6, 4), strided
    t = torch.rand(4, 6, generator=_gen(6), dtype=D).T
    assert not x.is_contiguous() and not t.is_contiguous()
    value = lbt.mse_loss(x, t)
    torch.testing.assert_close(value, F.mse_loss(x, t))
    assert torch.autograd.gradcheck(lambda a: lbt.binary_cross_entropy_with_logits(a, t), (x,))
    logits = torch.randn(5, 3, generator=_gen(8), dtype=D)[:, ::2].requires_grad_()
    labels = torch.tensor([0, 1, 1, 0, 1])
    assert torch.autograd.gradcheck(lambda a: lbt.cross_entropy(a, labels), (logits,))


def test_modules():
    weight = torch.rand(4, dtype=D) + 0.5
    module = lbt.CrossEntropyLoss(weight, ignore_index=2, label_smoothing=0.1)
    assert torch.equal(module.weight, weight) and "weight" in dict(module.named_buffers())
    x, t = _case("cross_entropy")
    torch.testing.assert_close(
        module(x, t), torch.nn.CrossEntropyLoss(weight, ignore_index=2, label_smoothing=0.1)(x, t))
    x, t = _case("mse")
    torch.testing.assert_close(lbt.MSELoss(reduction="sum")(x, t), F.mse_loss(x, t, reduction="sum"))
    p, y = _case("binary_cross_entropy")
    torch.testing.assert_close(lbt.BCELoss()(p, y), F.binary_cross_entropy(p, y))
    torch.testing.assert_close(lbt.BCEWithLogitsLoss(pos_weight=torch.tensor(2.0, dtype=D))(x, t),
                               F.binary_cross_entropy_with_logits(x, t, pos_weight=torch.tensor(2.0, dtype=D)))
    s, labels = _case("hinge")
    torch.testing.assert_close(lbt.HingeLoss(margin=2.0)(s, labels), _hinge_reference(s, labels, 2.0))
    # the legacy size_average / reduce arguments, as torch reads them (and warns)
    with pytest.warns(UserWarning, match="size_average"):
        legacy = lbt.mse_loss(x, t, size_average=False)
    torch.testing.assert_close(legacy, F.mse_loss(x, t, reduction="sum"))
    # options set after construction count, as torch's modules read them at each forward
    ours, theirs = lbt.CrossEntropyLoss(), torch.nn.CrossEntropyLoss()
    x, t = _case("cross_entropy")
    for module in (ours, theirs):
        module.ignore_index, module.label_smoothing, module.reduction = 2, 0.3, "none"
    torch.testing.assert_close(ours(x, t), theirs(x, t))
    ours, theirs = lbt.HuberLoss(), torch.nn.HuberLoss()
    ours.delta = theirs.delta = 0.1
    x, t = _case("mse")
    torch.testing.assert_close(ours(x, t), theirs(x, t))


@pytest.mark.parametrize("upstream", [1.0, 2.5, "per row"])
def test_backward_of_large_inputs_keeps_each_gradient_its_own(upstream):
    """Large CPU inputs (the gradient cache's sizes): an upstream of 1 hands the kept
    gradient on, another one scales it into a cached buffer; either way each step's
    gradient equals torch's, and a gradient still held is not overwritten by the next
    steps; a graph kept for a second backward gives the same gradient twice."""
    rng = np.random.default_rng(7)
    x = torch.tensor(rng.standard_normal((4096, 70)), requires_grad=True)
    t = torch.tensor(rng.integers(0, 70, 4096))
    reduction = "none" if upstream == "per row" else "mean"
    scale = (torch.tensor(rng.random(4096)) if upstream == "per row"
             else torch.tensor(upstream, dtype=D))

    def step(f):
        x.grad = None
        (f(x, t, reduction=reduction) * scale).sum().backward()
        return x.grad

    held = [step(lbt.cross_entropy) for _ in range(3)]
    x2 = x.detach().clone() + 1
    with torch.no_grad():
        x.copy_(x2)  # the next steps' gradients differ from the held ones
    later = [step(lbt.cross_entropy) for _ in range(3)]
    with torch.no_grad():
        x.copy_(x2 - 1)
    expected = step(F.cross_entropy)
    for grad in held:
        torch.testing.assert_close(grad, expected)
    with torch.no_grad():
        x.copy_(x2)
    torch.testing.assert_close(later[-1], step(F.cross_entropy))
    loss = (lbt.cross_entropy(x, t, reduction=reduction) * scale).sum()
    first, = torch.autograd.grad(loss, x, retain_graph=True)
    second, = torch.autograd.grad(loss, x)
    torch.testing.assert_close(first, second)
    # the kept gradient goes out once: the second is a tensor of its own, which a change
    # of the first leaves as it was (the same tensor twice before; a review's finding)
    assert first.data_ptr() != second.data_ptr()
    kept = second.clone()
    first.add_(1)
    torch.testing.assert_close(second, kept)


def test_two_threads_backpropagating_one_graph_get_tensors_of_their_own():
    """Two threads taking the gradient of one retained graph at once: each gets its own
    tensor (the kept one goes out once; a flag read, then set, let both take it in about
    5 % of the graphs: a review's finding)."""
    import threading

    shared = 0
    for _ in range(300):
        x = torch.randn(64, 100, requires_grad=True)
        loss = lbt.cross_entropy(x, torch.randint(0, 100, (64,)))
        results, gate = [None, None], threading.Barrier(2)

        def run(k, loss=loss, x=x, results=results, gate=gate):
            gate.wait()
            results[k], = torch.autograd.grad(loss, x, retain_graph=True)

        threads = [threading.Thread(target=run, args=(k,)) for k in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        torch.testing.assert_close(results[0], results[1])
        shared += results[0].data_ptr() == results[1].data_ptr()
    assert shared == 0


@pytest.mark.parametrize("rows", [8, 4096])  # (4096 x 70 float64: the cache's sizes)
@pytest.mark.parametrize("between", ["data zero", "zero", "clip", "none"])
def test_a_retained_graph_backpropagated_again_is_not_changed_by_grad(rows, between):
    """Backward through a retained graph, ``.grad`` changed in place in between (as
    ``zero_grad(set_to_none=False)``, old ``.data`` code and in-place clipping do): each
    backward adds the loss's own gradient, which the kept one handed on must not share
    memory with (found by a review: a wrong gradient, or a refused backward)."""
    rng = np.random.default_rng(3)
    x = torch.tensor(rng.standard_normal((rows, 70)), requires_grad=True)
    t = torch.tensor(rng.integers(0, 70, rows))
    expected, = torch.autograd.grad(F.cross_entropy(x, t), x)
    change = {"data zero": lambda: x.grad.data.zero_(), "zero": lambda: x.grad.zero_(),
              "clip": lambda: torch.nn.utils.clip_grad_norm_([x], 1e9),
              "none": lambda: None}[between]
    loss = lbt.cross_entropy(x, t)
    loss.backward(retain_graph=True)
    change()
    loss.backward(retain_graph=True)
    loss.backward()
    times = 2 if between in ("data zero", "zero") else 3
    torch.testing.assert_close(x.grad, times * expected)


def test_create_graph_and_a_direct_call_of_the_op_on_large_inputs():
    """``create_graph=True`` with an upstream other than 1 on the cache's sizes, and the
    op's gradient output held by its caller across a backward: both as before the fast
    paths (no error; the output not aliased by ``.grad``)."""
    x = torch.randn(4096 * 70, dtype=D, requires_grad=True)
    t = torch.randn(4096 * 70, dtype=D)
    grad, = torch.autograd.grad(lbt.mse_loss(x, t) * 2, x, create_graph=True)
    torch.testing.assert_close(grad, 4 * (x - t).detach() / x.numel())
    value, g = torch.ops.lossbackends.value_and_grad("mse_loss", x, torch.zeros_like(x),
                                                     None, None, [], [], "mean")
    held = g.clone()
    value.backward()
    lbt.mse_loss(x, torch.ones_like(x)).backward()
    assert torch.equal(g, held) and x.grad.data_ptr() != g.data_ptr()


def test_second_derivatives_raise():
    x, t = _case("mse")
    x.requires_grad_()
    (grad,) = torch.autograd.grad(lbt.mse_loss(x, t), x, create_graph=True)
    with pytest.raises(RuntimeError, match="first derivatives only"):
        grad.sum().backward()


def test_target_requiring_grad_is_an_error():
    x, t = _case("mse")
    with pytest.raises(ValueError, match="input only"):
        lbt.mse_loss(x, t.requires_grad_())
    # under vmap too, where the tensors the check sees are vmap's wrappers (the gradient
    # was missing, and a weight's wrong)
    w = torch.rand(5, 4, dtype=D, requires_grad=True)
    for key, call in (("target", lambda: torch.func.vmap(lbt.mse_loss)(x, t)),
                      ("weight", lambda: torch.func.vmap(
                          lambda a, b, c: lbt.mse_loss(a, b, weight=c))(x, t.detach(), w))):
        with pytest.raises(ValueError, match=f"{key} requires grad"):
            call()
    # no gradient is taken under no_grad: torch's own losses take such a target there
    with torch.no_grad():
        torch.testing.assert_close(lbt.mse_loss(x, t), F.mse_loss(x, t))


def test_option_types_are_checked_not_converted():
    """An integer option refuses a float (1.5 was truncated to 1: another ignore_index,
    silently), a real one a string, by the option's name; numbers where tensors go are
    tensors."""
    x, t = torch.randn(2, 3, dtype=D), torch.tensor([0, 1])
    with pytest.raises(TypeError, match="cross_entropy: ignore_index must be an integer"):
        lbt.cross_entropy(x, t, ignore_index=1.5)
    with pytest.raises(TypeError, match="huber_loss: delta must be a real number, not str"):
        lbt.huber_loss(x, torch.zeros_like(x), delta="a")
    # a value out of range: the plain API's message, under torch's name (it said "huber:")
    with pytest.raises(ValueError, match=r"^huber_loss: delta must be in \(0, inf\]"):
        lbt.huber_loss(x, torch.zeros_like(x), delta=-1.0)
    with pytest.raises(ValueError, match=r"^smooth_l1_loss: beta must be in \[0, inf\)"):
        lbt.smooth_l1_loss(x, torch.zeros_like(x), beta=-1.0)
    # 0-d tensors, as torch's own functions take them
    torch.testing.assert_close(lbt.huber_loss(x, torch.zeros_like(x), delta=torch.tensor(0.5)),
                               F.huber_loss(x, torch.zeros_like(x), delta=0.5))
    z = torch.zeros_like(x)
    torch.testing.assert_close(lbt.binary_cross_entropy_with_logits(x, z, pos_weight=3.0),
                               F.binary_cross_entropy_with_logits(
                                   x, z, pos_weight=torch.tensor(3.0, dtype=D)))


def test_errors_use_torch_s_names():
    """The plain API's argument errors, as a torch user called the function: target and
    input (in torch's order), weight, .long()."""
    x = torch.randn(4, 3, dtype=D, requires_grad=True)
    cases = [
        (r"^mse_loss: target has shape \(4,\) but input has shape \(4, 3\)",
         lambda: lbt.mse_loss(x, torch.zeros(4, dtype=D))),
        (r"^cross_entropy: weight has shape \(2,\)",
         lambda: lbt.cross_entropy(x, torch.zeros(4, dtype=torch.long),
                                   weight=torch.ones(2, dtype=D))),
        (r"the order is \(input, target\)",
         lambda: lbt.cross_entropy(torch.zeros(4, dtype=torch.long), x.detach())),
    ]
    for message, call in cases:
        with pytest.raises(ValueError, match=message):
            call()
    with pytest.raises(TypeError, match=r"target of shape \(4,\) .* cast with \.long\(\)"):
        lbt.cross_entropy(x, torch.zeros(4, dtype=D))


@pytest.mark.filterwarnings("ignore:`torch.jit.trace:DeprecationWarning")  # (torch 2.13's)
def test_jit_trace_records_the_op():
    """torch.jit.trace of a call without a gradient recorded its value as a constant."""
    x, t = _case("mse")
    traced = torch.jit.trace(lbt.MSELoss(), (x, t), check_trace=False)
    other = torch.randn(5, 4, dtype=D, requires_grad=True)
    value = traced(other, t)
    torch.testing.assert_close(value, F.mse_loss(other, t))
    value.backward()
    torch.testing.assert_close(other.grad, 2 * (other - t).detach() / other.numel())


def test_modules_turn_size_average_and_reduce_into_reduction():
    """As torch's modules: once, at construction; a later ``reduction`` then applies."""
    x, t = _case("mse")
    with pytest.warns(UserWarning, match="size_average"):
        ours, theirs = lbt.MSELoss(size_average=False), torch.nn.MSELoss(size_average=False)
    assert ours.reduction == theirs.reduction == "sum"
    assert repr(ours) == "MSELoss(reduction='sum')"
    ours.reduction = theirs.reduction = "mean"
    torch.testing.assert_close(ours(x, t), theirs(x, t))


def test_inplace_backward_only_when_asked():
    x, t = _case("cross_entropy", (6, 5))
    leaf = x.clone().requires_grad_()
    logits = leaf * 2.0  # a non-leaf, as out of a linear layer
    before = logits.detach().clone()
    loss = lbt.cross_entropy(logits, t)
    assert torch.equal(logits.detach(), before)  # the default never writes into input
    loss.backward()
    expected = leaf.grad.clone()
    leaf.grad = None
    logits = leaf * 2.0
    pointer = logits.data_ptr()
    loss2 = lbt.cross_entropy(logits, t, inplace_backward=True)
    assert not torch.equal(logits.detach(), before)  # now input holds the gradient
    loss2.backward()
    torch.testing.assert_close(loss2, loss)
    torch.testing.assert_close(leaf.grad, expected)
    assert logits.data_ptr() == pointer


def test_bfloat16():
    x, t = _case("mse", (64,))
    xb, tb = x.to(torch.bfloat16).requires_grad_(), t.to(torch.bfloat16)
    loss = lbt.mse_loss(xb, tb, reduction="sum")
    loss.backward()
    assert loss.dtype == xb.grad.dtype == torch.bfloat16
    torch.testing.assert_close(loss.float(), F.mse_loss(xb.float(), tb.float(), reduction="sum"),
                               rtol=1e-2, atol=0)
    torch.testing.assert_close(xb.grad.float(), 2 * (xb.detach().float() - tb.float()),
                               rtol=1e-2, atol=1e-2)


def test_inplace_backward_is_seen_by_autograd():
    """inplace_backward=True marks input dirty: a leaf is refused (by us, saying what to
    pass: autograd's own error did not), and a tensor saved for another backward raises
    there instead of giving a wrong gradient."""
    leaf = torch.ones(2, 3, requires_grad=True)
    with pytest.raises(ValueError, match="leaf .* pass a computed tensor"):
        lbt.cross_entropy(leaf, torch.tensor([0, 1]), inplace_backward=True)
    a = torch.randn(5, 4, requires_grad=True)
    logits = a * 2
    other = (logits ** 2).sum()
    loss = lbt.cross_entropy(logits, torch.tensor([0, 1, 2, 3, 0]), inplace_backward=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        (loss + other).backward()


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_inplace_backward_on_a_view(reduction):
    """Logits that are a view, as a language model's (x @ W).view(-1, V): torch refused a
    Function that changes a view in place and returns two tensors (the value and input)."""
    torch.manual_seed(3)
    x = torch.randn(2, 3, 4, dtype=D)
    w = torch.randn(4, 5, dtype=D, requires_grad=True)
    t = torch.randint(0, 5, (6,))
    upstream = torch.rand(6, dtype=D) if reduction == "none" else torch.tensor(1.0, dtype=D)
    logits = (x @ w).view(-1, 5)
    assert logits._is_view()
    loss = lbt.cross_entropy(logits, t, reduction=reduction, inplace_backward=True)
    loss.backward(upstream)
    expected = F.cross_entropy((x @ w).view(-1, 5), t, reduction=reduction)
    (grad,) = torch.autograd.grad(expected, w, upstream)
    torch.testing.assert_close(loss, expected.detach())
    torch.testing.assert_close(w.grad, grad)
    # the returned loss may be edited in place, as any loss (gradient accumulation's /=)
    w.grad = None
    loss = lbt.cross_entropy((x @ w).view(-1, 5), t, reduction=reduction, inplace_backward=True)
    loss /= 4
    loss.backward(upstream)
    torch.testing.assert_close(w.grad, grad / 4)


def test_inplace_backward_releases_the_logits_after_backward():
    """The gradient written into the logits is freed by backward, not kept for as long as
    the loss lives (a training loop held the last step's logits during the next forward);
    retain_graph=True keeps it, as for torch's saved tensors, and a write into the logits
    between two backwards raises instead of being read as the gradient."""
    a = torch.randn(5, 4, requires_grad=True)
    t = torch.tensor([0, 1, 2, 3, 0])
    logits = a * 2
    storage = weakref.ref(logits.untyped_storage())
    loss = lbt.cross_entropy(logits, t, inplace_backward=True)
    del logits
    gc.collect()
    assert storage() is not None  # the gradient, until backward uses it
    loss.backward()
    gc.collect()
    assert storage() is None
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        loss.backward()
    a.grad = None
    logits = a * 2
    loss = lbt.cross_entropy(logits, t, inplace_backward=True)
    loss.backward(retain_graph=True)
    first = a.grad.clone()
    loss.backward(retain_graph=True)
    torch.testing.assert_close(a.grad, 2 * first)
    logits.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


# --- the rest of the catalogue: torch's own losses where torch has them, else references
# written here in torch (torchvision's formula for the focal loss)


def _focal_reference(input, target, alpha=0.25, gamma=2.0, reduction="mean", weight=None):
    p = torch.sigmoid(input)
    ce = F.binary_cross_entropy_with_logits(input, target, reduction="none")
    losses = ce * (1 - (p * target + (1 - p) * (1 - target))) ** gamma
    if alpha is not None:
        losses = losses * (alpha * target + (1 - alpha) * (1 - target))
    return _reduced(losses, reduction, weight)


def _reduced(losses, reduction, weight=None):
    if weight is not None:
        losses = losses * weight
    return {"mean": losses.mean, "sum": losses.sum}.get(reduction, lambda: losses)()


def _multiclass_hinge_reference(input, target, margin=1.0, reduction="mean", weight=None):
    own = input.gather(1, target.unsqueeze(1)).squeeze(1)
    others = input.masked_fill(F.one_hot(target, input.shape[1]).bool(), -torch.inf)
    return _reduced(torch.clamp(margin + others.amax(1) - own, min=0), reduction, weight)


def _capped_cross_entropy_reference(input, target, reduction="mean", z_loss=0.0, softcap=None):
    x = input if softcap is None else softcap * torch.tanh(input / softcap)
    losses = F.cross_entropy(x, target, reduction="none") + z_loss * torch.logsumexp(x, 1) ** 2
    return _reduced(losses, reduction)


def _signs(shape, g):
    return torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0).to(D)


# case: (our function, its options, the reference, (input, target) maker)
MORE = {
    "l1-weight": ("l1_loss", {"weight": "elementwise"}, F.l1_loss, None),
    "huber-weight": ("huber_loss", {"delta": 0.7, "weight": "elementwise"}, F.huber_loss, None),
    "smooth_l1": ("smooth_l1_loss", {"beta": 0.5}, F.smooth_l1_loss, None),
    "soft_margin": ("soft_margin_loss", {}, F.soft_margin_loss,
                    lambda g, s: (torch.randn(s, generator=g, dtype=D), _signs(s, g))),
    "poisson": ("poisson_nll_loss", {}, F.poisson_nll_loss,
                lambda g, s: (torch.randn(s, generator=g, dtype=D),
                              torch.randint(0, 5, s, generator=g).to(D))),
    "poisson-rates-full": ("poisson_nll_loss", {"log_input": False, "full": True},
                           F.poisson_nll_loss,
                           lambda g, s: (torch.rand(s, generator=g, dtype=D) * 3 + 0.1,
                                         torch.randint(0, 5, s, generator=g).to(D))),
    "kl_div-log_target": ("kl_div", {"log_target": True}, F.kl_div,
                          lambda g, s: (torch.log_softmax(torch.randn(s, generator=g, dtype=D), 1),
                                        torch.log_softmax(torch.randn(s, generator=g, dtype=D), 1))),
    "squared_hinge": ("squared_hinge", {"margin": 0.5, "weight": "elementwise"},
                      lambda i, t, margin, reduction, weight: _reduced(
                          torch.clamp(margin - t * i, min=0) ** 2, reduction, weight),
                      lambda g, s: (torch.randn(s, generator=g, dtype=D), _signs(s, g))),
    "log_cosh": ("log_cosh", {}, lambda i, t, reduction: _reduced(
        torch.log(torch.cosh(i - t)), reduction), None),
    "focal": ("sigmoid_focal", {"alpha": 0.3, "gamma": 1.5}, _focal_reference,
              lambda g, s: (torch.randn(s, generator=g, dtype=D) * 2,
                            (torch.rand(s, generator=g) < 0.5).to(D))),
    "focal-no-alpha": ("sigmoid_focal", {"alpha": None}, _focal_reference,
                       lambda g, s: (torch.randn(s, generator=g, dtype=D) * 2,
                                     (torch.rand(s, generator=g) < 0.5).to(D))),
    "pinball": ("pinball", {"quantile": 0.8, "weight": "elementwise"},
                lambda i, t, quantile, reduction, weight: _reduced(
                    quantile * torch.clamp(t - i, min=0) + (1 - quantile) * torch.clamp(i - t, min=0),
                    reduction, weight), None),
    "multiclass_hinge": ("multiclass_hinge", {"margin": 0.8, "weight": "rows"},
                         _multiclass_hinge_reference,
                         lambda g, s: (torch.randn(s, generator=g, dtype=D) * 2,
                                       torch.randint(0, s[1], s[:1], generator=g))),
    "ce-z_loss-softcap": ("cross_entropy", {"z_loss": 0.01, "softcap": 1.5},
                          _capped_cross_entropy_reference,
                          lambda g, s: (torch.randn(s, generator=g, dtype=D) * 2,
                                        torch.randint(0, s[1], s[:1], generator=g))),
}


def _more(case, shape=(5, 4)):
    name, spec, reference, make = MORE[case]
    g = _gen(11)
    x, t = make(g, shape) if make else (torch.randn(shape, generator=g, dtype=D),
                                        torch.randn(shape, generator=g, dtype=D))
    options = {key: (torch.rand(shape if value == "elementwise" else shape[:1], generator=g,
                                dtype=D) + 0.5 if value in ("elementwise", "rows") else value)
               for key, value in spec.items()}
    return getattr(lbt, name), reference, x, t, options


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")  # kl_div's, as torch's
@pytest.mark.parametrize("case", MORE)
def test_catalogue(case):
    """Each reduction's value and its gradient under a random upstream gradient equal the
    reference's; gradcheck in float64."""
    ours, reference, x, t, options = _more(case)
    x.requires_grad_()
    for reduction in ("mean", "sum", "none"):
        value = ours(x, t, reduction=reduction, **options)
        expected = reference(x, t, reduction=reduction, **options)
        torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-14)
        upstream = torch.randn(expected.shape, generator=_gen(3), dtype=D)
        (grad,) = torch.autograd.grad(value, x, upstream)
        (expected_grad,) = torch.autograd.grad(expected, x, upstream)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-14)
    x3 = x.detach()[:3].clone().requires_grad_()
    t3 = t[:3]
    options3 = {k: (v[:3] if isinstance(v, torch.Tensor) else v) for k, v in options.items()}
    assert torch.autograd.gradcheck(lambda a: ours(a, t3, reduction="none", **options3), (x3,))


def test_kl_div_reductions_as_torch():
    _, _, x, t, _ = _more("kl_div-log_target")
    t = t.exp()
    torch.testing.assert_close(lbt.kl_div(x, t, reduction="batchmean"),
                               F.kl_div(x, t, reduction="batchmean"))
    with pytest.warns(UserWarning, match="batchmean"):
        value = lbt.kl_div(x, t)
    with pytest.warns(UserWarning, match="batchmean"):
        torch.testing.assert_close(value, F.kl_div(x, t))
    with pytest.raises(ValueError, match="batchmean"):
        lbt.kl_div(x, t, reduction="batch")
    with pytest.raises(ValueError, match="unknown reduction 'batchmean'"):
        lbt.l1_loss(x, t, reduction="batchmean")


def test_complex_input_is_refused_not_cast_to_real():
    """A complex input is not floating, and was cast to the default dtype as an integer
    one is, its imaginary part dropped (torch refuses it: "not implemented for
    'ComplexFloat'"); every loss now refuses it, as the plain call refuses a complex y_pred."""
    x = torch.tensor([1 + 2j, 3 - 1j], requires_grad=True)
    for loss, target in ((lbt.mse_loss, torch.zeros(2)), (lbt.l1_loss, torch.zeros(2)),
                         (lbt.huber_loss, torch.zeros(2)),
                         (lbt.binary_cross_entropy_with_logits, torch.ones(2)),
                         (lbt.poisson_nll_loss, torch.ones(2))):
        with pytest.raises(TypeError, match=r": input has dtype torch\.complex64; pass a real "
                                            r"\(bool, integer or float16/32/64\) tensor"):
            loss(x, target)
    assert x.grad is None


def test_mixed_dtypes_as_torch():
    """torch's promotion per loss: result_type (mse, l1, ...), input's dtype (huber,
    soft_margin), one dtype required (binary_cross_entropy)."""
    g = _gen(12)
    x = torch.randn(6, generator=g).requires_grad_()  # float32
    t = torch.randn(6, generator=g, dtype=D)
    for ours, theirs in ((lbt.mse_loss, F.mse_loss), (lbt.l1_loss, F.l1_loss),
                         (lbt.huber_loss, F.huber_loss), (lbt.soft_margin_loss, F.soft_margin_loss)):
        value, expected = ours(x, t, reduction="sum"), theirs(x, t, reduction="sum")
        assert value.dtype == expected.dtype
        torch.testing.assert_close(value, expected)
        (grad,) = torch.autograd.grad(value, x)
        assert grad.dtype == torch.float32
        # (torch's own backward fails for mixed dtypes where it computes in input's dtype)
        expected = theirs(x, t.to(value.dtype), reduction="sum")
        torch.testing.assert_close(grad, torch.autograd.grad(expected, x)[0])
    assert lbt.mse_loss(x, t.float(), weight=torch.ones(6, dtype=D)).dtype == D
    # huber_loss: the loss in input's dtype, times the weight, promoted as torch's product
    # (it was float32 with a float64 weight; a review's finding)
    for w_dtype, want in ((D, D), (torch.float16, torch.float32)):
        w = torch.rand(6, generator=g, dtype=w_dtype)
        for reduction in ("mean", "sum", "none"):
            value = lbt.huber_loss(x, t.float(), weight=w, reduction=reduction)
            expected = F.huber_loss(x, t.float(), weight=w, reduction=reduction)
            assert value.dtype == expected.dtype == want
            torch.testing.assert_close(value, expected)
            (grad,) = torch.autograd.grad(value.sum(), x)
            assert grad.dtype == torch.float32
            torch.testing.assert_close(grad, torch.autograd.grad(expected.sum(), x)[0])
    with pytest.raises(TypeError, match="target.to"):
        lbt.binary_cross_entropy(x.sigmoid(), t.clamp(0, 1))
    # an integer input: a floating target's dtype, else the default dtype, as torch gives
    # (it was float64, the plain call's rule for integers)
    ints, floats = torch.tensor([1, 2, 5]), torch.tensor([1.0, 3.0, 2.5])
    for ours, theirs in ((lbt.mse_loss, F.mse_loss), (lbt.l1_loss, F.l1_loss),
                         (lbt.smooth_l1_loss, F.smooth_l1_loss),
                         (lbt.poisson_nll_loss, F.poisson_nll_loss)):
        for target in (floats, floats.double()):
            value, expected = ours(ints, target), theirs(ints, target)
            assert value.dtype == expected.dtype == target.dtype
            torch.testing.assert_close(value, expected)
    value, expected = lbt.poisson_nll_loss(ints, ints), F.poisson_nll_loss(ints, ints)
    assert value.dtype == expected.dtype == torch.get_default_dtype()
    torch.testing.assert_close(value, expected)
    for half in (torch.float16, torch.bfloat16):  # exp(input) first: float32, as torch's
        value, expected = (lbt.poisson_nll_loss(ints, floats.to(half)),
                           F.poisson_nll_loss(ints, floats.to(half)))
        assert value.dtype == expected.dtype == torch.float32
        torch.testing.assert_close(value, expected)


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")
def test_every_module():
    """The nn.Module of every loss equals its function; options are kept, tensors are
    buffers."""
    assert {"L1Loss", "HuberLoss", "SmoothL1Loss", "SoftMarginLoss", "PoissonNLLLoss",
            "KLDivLoss", "SquaredHingeLoss", "LogCoshLoss", "SigmoidFocalLoss", "PinballLoss",
            "MulticlassHingeLoss"} <= set(lbt.__all__)
    for case in MORE:
        ours, _, x, t, options = _more(case)
        x.requires_grad_()
        module = getattr(lbt, lbt._TABLE[ours.__name__].module)(**options)
        torch.testing.assert_close(module(x, t), ours(x, t, **options))
    assert "delta=0.5" in repr(lbt.HuberLoss(delta=0.5))


def test_option_errors():
    x, t = torch.randn(3, 4, dtype=D), torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="softcap"):
        lbt.cross_entropy(x, t, softcap=float("nan"))
    with pytest.raises(TypeError, match="log_input must be True or False"):
        lbt.poisson_nll_loss(x, x, log_input="yes")
    with pytest.raises(ValueError, match="weight has shape"):
        lbt.l1_loss(x, x, weight=torch.ones(4, dtype=D))
    with pytest.raises(TypeError, match="unexpected keyword argument 'delta'"):
        lbt.smooth_l1_loss(x, x, delta=1.0)
    # torch's per-channel pos_weight (C, 1, 1) for (N, C, H, W): the message says how
    images, channels = torch.randn(2, 3, 4, 5, dtype=D), torch.tensor([1.0, 2.0, 3.0], dtype=D)
    targets = torch.rand(2, 3, 4, 5, dtype=D)
    with pytest.raises(ValueError, match=r"pos_weight has shape \(3, 1, 1\).*move the "
                                         r"channels last \(target and input moveaxis"):
        lbt.binary_cross_entropy_with_logits(images, targets, pos_weight=channels.view(3, 1, 1))
    torch.testing.assert_close(
        lbt.binary_cross_entropy_with_logits(images.movedim(1, -1), targets.movedim(1, -1),
                                             pos_weight=channels),
        F.binary_cross_entropy_with_logits(images, targets, pos_weight=channels.view(3, 1, 1)))


def test_inplace_backward_without_a_gradient_leaves_input_alone():
    """inplace_backward=True writes into input only when a gradient is taken: under
    no_grad, or for an input that does not require grad, the value alone."""
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 5, dtype=D)
    crit = lbt.CrossEntropyLoss(inplace_backward=True)
    x, y = torch.randn(100, 8, dtype=D), torch.randint(0, 5, (100,))
    with torch.no_grad():
        logits = model(x)
        before = logits.clone()
        loss = crit(logits, y)
    assert torch.equal(logits, before)
    torch.testing.assert_close(loss, F.cross_entropy(before, y))
    plain = before.clone()
    torch.testing.assert_close(crit(plain, y), F.cross_entropy(before, y))
    assert torch.equal(plain, before)


def test_docstrings_are_torch_s_own():
    """Each function's docstring has its own torch example and links the plain loss's page
    for the formulas, instead of repeating its (NumPy, y_true-first) docstring."""
    for name in lbt._TABLE:
        doc = getattr(lbt, name).__doc__
        assert f"lbt.{name}(x, torch.tensor(" in doc
        assert f":obj:`lossbackends.{lbt._TABLE[name].loss.name}`" in doc
        assert "y_true, y_pred" not in doc and "lb." not in doc
        module = lbt._TABLE[name].module
        assert f"lbt.{module}(" in getattr(lbt, module).__doc__


@pytest.mark.parametrize("name", ["cross_entropy", "multiclass_hinge"])
def test_check_labels_false_gives_nan_rows(name):
    """check_labels=False, the plain API's option (on a GPU it spares the check's
    synchronisation, which a CUDA graph cannot capture): a bad class index's row is NaN,
    the others as with it ignored; the module takes it too."""
    x = torch.randn(4, 3, generator=_gen(8), dtype=D, requires_grad=True)
    t = torch.tensor([0, 5, 1, 2])
    with pytest.raises(lb.LabelError, match=r"target\[1\] = 5 is not a class index") as error:
        getattr(lbt, name)(x, t)  # in torch's terms, still a LabelError
    assert (error.value.row, error.value.label, error.value.classes) == (1, 5, 3)
    loss = getattr(lbt, name)(x, t, reduction="none", check_labels=False)
    upstream = torch.rand(4, generator=_gen(9), dtype=D)
    loss.backward(upstream)
    plain = getattr(lb, name)
    value, grad = plain.value_and_grad(t.numpy(), x.detach().numpy(), reduction="none",
                                       check_labels=False)
    np.testing.assert_array_equal(loss.detach().numpy(), value)
    np.testing.assert_allclose(x.grad.numpy(), grad * upstream.numpy()[:, None], rtol=1e-12)
    assert torch.isnan(x.grad[1]).all() and not torch.isnan(x.grad[[0, 2, 3]]).any()
    module = getattr(lbt, lbt._TABLE[name].module)(check_labels=False)
    assert torch.isnan(module(x, t))
