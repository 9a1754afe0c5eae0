"""The CuPy backend's code and CUDA kernels run on the host (``tests/cuda_host``: the
kernels built with g++ against a shim of CUDA's device dialect, each CUDA thread a fiber of
one CPU thread), against the NumPy backend: every cross-entropy kernel family (by class count),
option and dtype, with Hessians, the multiclass hinge, the elementwise Hessians, the label
errors and misaligned rows. ``tests/test_robustness.py`` runs its special-value harness on
them too. Speed, the hardware's float math and streams are ``ci/gpu``'s."""

from __future__ import annotations

import ctypes
import functools
import mmap

import cuda_host
import numpy as np
import pytest
import reference

import lossbackends as lb
from lossbackends import _cuda_sources
from lossbackends.losses import LOSSES

pytestmark = pytest.mark.skipif(cuda_host.available() is not None,
                                reason=cuda_host.available() or "")

# a class count per kernel: ce_small, the warp-per-row rows (three capacities), a block per
# row, the streaming kernel (and its Hessian instance)
CLASSES = {"small": 7, "warp": 100, "warp-wide": 1000, "block": 5000, "stream": 20000}
TOLERANCE = {np.float16: 2e-3, np.float32: 2e-5, np.float64: 1e-12}


def _assert_close(got, want, dtype, what):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, what
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"NaNs of {what}")
    finite = np.isfinite(want)
    np.testing.assert_array_equal(got[~finite & ~np.isnan(want)], want[~finite & ~np.isnan(want)],
                                  err_msg=f"infinities of {what}")
    # relative to each element, and absolute to the largest magnitude up to 1: one
    # outlier (a loss of 7e7) must not excuse every other element
    scale = min(np.abs(want[finite]).max(), 1.0) if finite.any() else 0.0
    tol = TOLERANCE[dtype]
    np.testing.assert_allclose(got[finite], want[finite], rtol=tol, atol=tol * scale,
                               err_msg=what)


def _compare(name, y, p, reduction, **options):
    dtype = p.dtype.type
    want = LOSSES[name].grad_and_hess(y, p, reduction=reduction, backend="numpy", **options)
    value = LOSSES[name](y, p, reduction=reduction, backend="numpy", **options)
    got = cuda_host.value_and_grad(name, y, p, reduction=reduction, hess=True, **options)
    for what, g, w in zip(("value", "gradient", "Hessian"), got, (value, *want), strict=True):
        _assert_close(g, w, dtype, f"{what} of {name} {np.dtype(dtype).name} {reduction} "
                                   f"{p.shape} {options}")
    if name == "cross_entropy":  # without the Hessian, rows above ROWS_MAX_CLASSES stream
        got = cuda_host.value_and_grad(name, y, p, reduction=reduction, **options)
        for what, g, w in zip(("value", "gradient"), got, (value, want[0]), strict=True):
            _assert_close(g, w, dtype, f"{what} (no Hessian) of {name} {np.dtype(dtype).name} "
                                       f"{reduction} {p.shape} {options}")


def test_the_backend_launches_only_what_all_modules_builds():
    """Every kernel a call launches is among ``all_modules()``'s expressions (what
    ``ci/kernels`` compiles): the host library holds those only, and a launch of another
    name fails."""
    names = set(cuda_host.expressions("cross_entropy.cu"))
    for type_name in _cuda_sources.TYPE_NAMES.values():
        for config in _cuda_sources.ROW_CONFIGS:
            assert config.expression(type_name) in names
    with pytest.raises(KeyError, match="all_modules"):
        cuda_host.library("cross_entropy.cu").launch("ce_rows<float, 32, 4, 8, 2>", (1,), (32,), ())


@pytest.mark.parametrize("family", CLASSES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_cross_entropy_kernels(family, dtype):
    classes = CLASSES[family]
    wide = classes > 1000  # a block of threads per row, slower as fibers: fewer cases
    rows = 2 if wide else 9
    rng = np.random.default_rng(classes)
    x = (rng.normal(size=(rows, classes)) * 4).astype(dtype)
    labels = rng.integers(0, classes, rows)
    labels[1] = -100
    probs = rng.dirichlet(np.ones(classes), rows).astype(dtype)
    class_weight = rng.uniform(0.5, 2, classes).astype(dtype)
    for target, options in [
        (labels, {}),
        (labels, {"label_smoothing": 0.1, "class_weight": class_weight}),
        (labels, {"z_loss": 1e-3, "softcap": 5.0}),
        (probs, {"class_weight": class_weight, "label_smoothing": 0.05}),
        (probs, {"z_loss": 1e-2}),
    ]:
        for reduction in ("mean", "none") if wide else ("mean", "sum", "none"):
            _compare("cross_entropy", target, x, reduction, **options)


@pytest.mark.parametrize("family", CLASSES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_confident_rows_label_gradient(family, dtype):
    """A confident row's gradient at the label, -(1 - s) (with the z-loss 2 z lse s -
    (1 - s), times a class weight, softcap's 1 - tanh^2), relative to itself in every
    kernel family and its Hessian instance: s - 1 rounded to 0 within an ulp of s = 1 (a
    label logit 25 above zeros gave 0 for -1.4e-8). Against ``reference.label_gradient``;
    the Hessian's chain-rule term with softcap carries it."""
    classes = CLASSES[family]
    x, labels = reference.confident_rows(classes, dtype)
    rtol = 2e-6 if dtype == np.float32 else 1e-12
    class_weight = np.linspace(0.5, 2.0, classes).astype(dtype)
    for options in ({}, {"z_loss": 1e-3}, {"class_weight": class_weight}, {"softcap": 30.0}):
        cap = options.get("softcap")
        expected = reference.label_gradient(labels, x, **options)
        for hess in (False, True):
            got = cuda_host.value_and_grad("cross_entropy", labels, x, reduction="sum",
                                           hess=hess, **options)[1]
            # (softcap: the float32 capped logits are a few ulps of the cap off, and each
            # exp with them; see the numerics guide)
            np.testing.assert_allclose(np.asarray(got, np.float64)[np.arange(3), labels],
                                       expected,
                                       rtol=rtol if cap is None or dtype == np.float64 else 2e-5,
                                       err_msg=f"{family} {options} hess={hess}")


@pytest.mark.parametrize("family", CLASSES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_softcap_gradient_of_saturated_logits(family, dtype):
    """softcap's chain rule keeps each gradient element's relative accuracy where 1 -
    tanh^2 would cancel (logits far beyond the cap: ``sech_squared``, and in the streaming
    kernel what ``kept_of_capped`` keeps), in every kernel family, its Hessian instance
    included, against ``reference.cross_entropy_liger`` (1 / cosh^2)."""
    classes = CLASSES[family]
    rows = 2 if classes > 1000 else 5
    gen = np.random.default_rng(classes)
    for softcap in (1.0, 30.0):
        x = (gen.uniform(-9, 9, (rows, classes)) * softcap).astype(dtype)
        labels = gen.integers(0, classes, rows)
        expected = reference.cross_entropy_liger(labels, x, reduction="sum", softcap=softcap)[1]
        # the float32 capped logits are rounded to an ulp of the cap, and each exp with them
        rtol = 1e-12 if dtype == np.float64 else 4e-6 * softcap
        for hess in (False, True):
            got = cuda_host.value_and_grad("cross_entropy", labels, x, reduction="sum",
                                           hess=hess, softcap=softcap)[1]
            np.testing.assert_allclose(np.asarray(got, np.float64), expected, rtol=rtol,
                                       atol=np.finfo(dtype).tiny,
                                       err_msg=f"{family} softcap={softcap} hess={hess}")


def _sweep_variants():
    from benchmarks import gpu_sweep

    return gpu_sweep.variants()


@pytest.mark.parametrize("variant", _sweep_variants(), ids=lambda v: v.name)
def test_gpu_sweep_candidates(variant):
    """Each candidate of the GPU sweep (``benchmarks/gpu_sweep.py``) computes what the NumPy
    backend does, so that minutes of GPU time go to timing correct kernels: a class count where it runs, in the float types of the sweep's
    cases it runs in (bfloat16 as float16: the same template but for its conversions)."""
    from benchmarks import gpu_sweep

    dtypes = {np.float32 if case.dtype == "float32" else np.float16
              for case in gpu_sweep.CASES if variant.applies(case)}
    backend = cuda_host.backend()
    classes = max(variant.low, min(variant.high, 600)) + 3  # (not a multiple of the pack)
    if variant.high < classes:
        classes = variant.high
    rng = np.random.default_rng(classes)
    saved = {name: getattr(backend, name) for name in variant.settings}
    try:
        for name, value in variant.settings.items():
            setattr(backend, name, value)
        for dtype in sorted(dtypes, key=str):
            x = (rng.normal(size=(3, classes)) * 4).astype(dtype)
            labels = np.array([0, classes - 1, 5])
            _compare("cross_entropy", labels, x, "mean", z_loss=1e-3)
            _compare("cross_entropy", labels, x, "none", softcap=20.0)
    finally:
        for name, value in saved.items():
            setattr(backend, name, value)


@pytest.mark.parametrize("family", CLASSES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_confident_rows_are_relatively_exact(family, dtype):
    """A confident row's loss, log1p(sum of the others' exps), to a few ulps: a sum that
    held the max's exp(0) = 1 kept it to an ulp of 1 (0 for a loss of 6e-40)."""
    classes = CLASSES[family]
    margins = np.array([5.0, 20.0, 60.0, 90.0], dtype)
    x = np.zeros((margins.size, classes), dtype)
    x[:, 0] = margins
    x[:, 1] = margins / 2  # one other class nearer
    labels = np.zeros(margins.size, np.int64)
    exact = np.log1p(np.exp(-margins.astype(np.float64) / 2)
                     + (classes - 2) * np.exp(-margins.astype(np.float64)))
    value = cuda_host.value_and_grad("cross_entropy", labels, x, reduction="none")[0]
    np.testing.assert_allclose(value, exact, rtol=8 * np.finfo(dtype).eps)


@pytest.mark.parametrize("family", CLASSES)
def test_cross_entropy_special_values_in_wide_rows(family):
    """Infinities, NaN and float32's extremes in rows of every kernel: the same results as
    the NumPy backend (the robustness harness covers the rows of few classes)."""
    classes = CLASSES[family]
    f = float(np.finfo(np.float32).max)
    rows = np.zeros((6, classes), np.float32)
    rows[0, 3] = np.inf
    rows[1, [2, 5]] = np.inf
    rows[2, :] = -np.inf
    rows[3, 4] = np.nan
    rows[4, [1, 6]] = [f, -f]
    rows[5, 0] = 1e4
    labels = np.array([3, 0, 1, 2, 6, 0])
    for options in ({}, {"label_smoothing": 0.1}, {"z_loss": 1e-3, "softcap": 30.0}):
        _compare("cross_entropy", labels, rows, "none", **options)


def test_cross_entropy_unaligned_rows():
    """Rows whose pointers are not 16-byte aligned (no packed loads) and class counts that
    are not a multiple of the pack."""
    rng = np.random.default_rng(1)
    for classes in (101, 5003, 20001):
        base = rng.normal(size=3 * classes + 1).astype(np.float32)
        x = base[1:].reshape(3, classes)  # 4 bytes past an aligned start
        _compare("cross_entropy", np.array([0, 5, classes - 1]), x, "sum", z_loss=1e-3)


def test_cross_entropy_label_errors():
    """The labels' pass flags a bad label for every reduction (the main kernels no longer
    do), once: the next call with good labels passes; an ignored label is not bad, even
    negative; multiclass_hinge's check is the same pass (0 as its ignore_index, a class)."""
    x = np.zeros((3, 40), np.float32)
    for reduction in ("mean", "sum", "none"):
        for bad in (40, -1):
            with pytest.raises(ValueError, match=f"y_true\\[1\\] = {bad}"):
                cuda_host.value_and_grad("cross_entropy", np.array([0, bad, 1]), x,
                                         reduction=reduction)
            value, grad = cuda_host.value_and_grad("cross_entropy", np.array([0, 39, 1]), x,
                                                   reduction=reduction)
            np.testing.assert_allclose(np.asarray(value).sum(), np.log(40) * (
                1 if reduction == "mean" else 3), rtol=1e-6)
    cuda_host.value_and_grad("cross_entropy", np.array([0, -7, 1]), x, ignore_index=-7)
    for bad in (40, -1):
        with pytest.raises(ValueError, match=f"y_true\\[2\\] = {bad}"):
            cuda_host.value_and_grad("multiclass_hinge", np.array([0, 1, bad]), x)
    value, _ = cuda_host.value_and_grad("multiclass_hinge", np.array([0, 1, 39]), x,
                                        reduction="sum")
    np.testing.assert_allclose(value, 3.0, rtol=1e-6)  # max(0, 1 + 0 - 0) a row
    value, grad = cuda_host.value_and_grad("cross_entropy", np.array([0, 40, 1]), x,
                                           reduction="none", check_labels=False)
    assert np.isnan(value[1]) and np.isnan(grad[1]).all()
    assert np.isfinite(value[[0, 2]]).all() and np.isfinite(grad[[0, 2]]).all()


@pytest.mark.parametrize("classes", [10, 2000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_multiclass_hinge(classes, dtype):
    rng = np.random.default_rng(classes)
    x = rng.normal(size=(9, classes)).astype(dtype)
    labels = rng.integers(0, classes, 9)
    x[2, labels[2]] = np.nan
    weight = rng.uniform(0.5, 2, 9).astype(dtype)
    for reduction in ("mean", "sum", "none"):
        _compare("multiclass_hinge", labels, x, reduction, weight=weight)
        _compare("multiclass_hinge", labels, x, reduction, margin=0.5)
    with pytest.raises(ValueError, match="multiclass_hinge"):
        cuda_host.value_and_grad("multiclass_hinge", np.array([0, classes]), x[:2])


ELEMENTWISE = sorted(_cuda_sources.LOSS_IDS)
_LABELS = {"binary_cross_entropy": (0, 1), "binary_cross_entropy_with_logits": (0, 1),
           "sigmoid_focal": (0, 1), "kl_div": (0, 1), "poisson_nll": (0, 5)}
_PREDICTIONS = {"binary_cross_entropy": (0.01, 0.99), "kl_div": (-5, 0)}


@pytest.mark.parametrize("name", ELEMENTWISE)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_elementwise_hessians_and_blocks(name, dtype):
    """Each elementwise loss's value, gradient and Hessian, in one block (n <= 8192) and in
    several (partial sums, then finalize), aligned and not."""
    rng = np.random.default_rng(len(name))
    for n in (1000, 20001):
        y = rng.uniform(*_LABELS.get(name, (-2, 2)), n + 1).astype(dtype)
        if name in ("hinge", "squared_hinge", "soft_margin"):
            y = np.sign(y) + (y == 0)
        p = rng.uniform(*_PREDICTIONS.get(name, (-3, 3)), n + 1).astype(dtype)
        for a, b in ((y[:n], p[:n]), (y[1:], p[1:])):
            _compare(name, a, b, "mean")
            _compare(name, a, b, "none", weight=np.linspace(0.5, 2, n).astype(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_absolute_error_gradient_at_a_zero_difference_is_plus_zero(dtype):
    """sign(-0) = +0 in the kernels too (NumPy's, PyTorch's); NaN kept."""
    p = np.full(37, -0.0, dtype)
    p[5] = np.nan
    _, grad = cuda_host.value_and_grad("mae", np.zeros(37, dtype), p, reduction="sum")
    np.testing.assert_array_equal(np.isnan(grad), np.isnan(p))
    assert not np.signbit(np.asarray(grad)[~np.isnan(p)]).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_with_logits_labels_beyond_0_1_without_pos_weight(dtype):
    """Without ``pos_weight`` softplus's weight is 1, not (1 - y) + y, which is NaN for a
    NaN or infinite label and 0 for a float32 label of 2^25 (the kernel gave a NaN Hessian
    where NumPy's is 0.25, and a loss of 0 for 0.69)."""
    y = np.array([np.nan, np.inf, -np.inf, 2.0**25, -(2.0**25), 0.3, 1.0], dtype)
    p = np.array([0.0, 1.0, -1.0, 0.0, 2.0, 0.5, -3.0], dtype)
    _compare("binary_cross_entropy_with_logits", y, p, "none")


def _before_a_guard_page(values):
    """``values`` copied to memory that ends where an unreadable page begins: a kernel
    that reads past the array's end faults instead of reading its neighbour's bytes."""
    page = mmap.PAGESIZE
    span = -(-values.nbytes // page) * page
    memory = mmap.mmap(-1, span + page)
    start = np.frombuffer(memory, np.uint8).ctypes.data
    if ctypes.CDLL(None).mprotect(ctypes.c_void_p(start + span), ctypes.c_size_t(page), 0):
        pytest.skip("mprotect refused the guard page")
    guarded = np.frombuffer(memory, values.dtype, values.size, span - values.nbytes)
    guarded[...] = values.reshape(-1)
    return guarded.reshape(values.shape)


@pytest.mark.parametrize("classes", [7, 100, 1025, 20000])
def test_cross_entropy_reads_nothing_past_the_probabilities_or_class_weights(classes):
    """The rows' padding past ``classes`` (1025 classes take the 2048-wide kernel) reads
    no probability or class weight: each ends at an unreadable page here."""
    rng = np.random.default_rng(classes)
    x = rng.normal(size=(2, classes)).astype(np.float32)
    probs = _before_a_guard_page(rng.dirichlet(np.ones(classes), 2).astype(np.float32))
    class_weight = _before_a_guard_page(rng.uniform(0.5, 2, classes).astype(np.float32))
    labels = np.array([0, classes - 1])
    _compare("cross_entropy", probs, x, "mean", class_weight=class_weight,
             label_smoothing=0.05)
    _compare("cross_entropy", labels, x, "sum", class_weight=class_weight,
             label_smoothing=0.1)


def test_every_elementwise_loss_has_a_kernel():
    assert {n for n, loss in LOSSES.items() if not loss._class_indices} == set(ELEMENTWISE)
    assert lb.mse.name in ELEMENTWISE


def _to_bfloat16(values):
    """float32 values rounded to bfloat16 (to nearest, even), as bits."""
    u = np.asarray(values, np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def _from_bfloat16(bits):
    return (np.asarray(bits).view(np.uint16).astype(np.uint32) << 16).view(np.float32)


@pytest.mark.parametrize("name, classes", [("cross_entropy", c) for c in CLASSES.values()]
                         + [("binary_cross_entropy_with_logits", None)])
def test_bfloat16_kernels(name, classes):
    """bfloat16 (torch's CUDA tensors: float16 views of its bits, ``HALF_IS_BFLOAT16``)
    against the NumPy backend in float32 on the same values, to bfloat16's rounding."""
    from lossbackends import _arrays

    rng = np.random.default_rng(classes)
    shape = (3, classes) if classes else (5001,)
    x = _from_bfloat16(_to_bfloat16(rng.normal(size=shape) * 3))
    y = (np.array([0, classes - 1, 2]) if classes
         else _from_bfloat16(_to_bfloat16(rng.uniform(0, 1, shape))))
    on_device = y if classes else _to_bfloat16(y).view(np.float16)
    token = _arrays.HALF_IS_BFLOAT16.set(True)
    try:
        got = cuda_host.value_and_grad(name, on_device, _to_bfloat16(x).view(np.float16),
                                       reduction="none", hess=True)
    finally:
        _arrays.HALF_IS_BFLOAT16.reset(token)
    want = (LOSSES[name](y, x, reduction="none", backend="numpy"),
            *LOSSES[name].grad_and_hess(y, x, reduction="none", backend="numpy"))
    for what, g, w in zip(("value", "gradient", "Hessian"), got, want, strict=True):
        np.testing.assert_allclose(_from_bfloat16(g), w, rtol=8e-3,
                                   atol=8e-3 * np.abs(w).max(), err_msg=f"{what} of {name}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_the_plain_rows_kernel_gives_the_generic_kernel_s_bits(dtype):
    """``ce_rows_plain`` (the plain call's warp-per-row kernel, ``CE_ROWS_PLAIN``) gives the
    bits of ``ce_rows``: values, row losses and gradients, with ties at the max (the label
    among them), a confident row, NaN, infinite logits and a row of -inf, ignored and bad
    labels (those warps take the generic body), z-loss, an overflowing z-loss scale, "none"
    and "mean", packed and unpacked rows."""
    backend = cuda_host.backend()
    rng = np.random.default_rng(3)
    for classes in (40, 130, 600, 997, 1000):  # (40: every warp's last lanes hold padding)
        x = (rng.normal(size=(40, classes)) * 3).astype(dtype)
        labels = rng.integers(0, classes, 40)
        x[1, [3, 9]] = 7.5  # ties at the max, the label one of them
        labels[1] = 9
        x[2, labels[2]] = 60.0  # a confident row
        x[5, 4] = np.nan
        x[6, 2] = np.inf
        x[7] = -np.inf
        x[8, 0] = -np.inf
        labels[12] = -100  # ignored: that warp takes the generic body
        rows_bad = labels.copy()
        rows_bad[30] = classes + 2  # a bad label (check_labels=False: a NaN row)
        for target, options in ((labels, {}), (labels, {"z_loss": 1e-4}),
                                (labels, {"z_loss": 1e30}),
                                (rows_bad, {"check_labels": False})):
            for reduction in ("none", "mean"):
                cuda_host.same_bits_under(
                    backend, "CE_ROWS_PLAIN", (True, False), functools.partial(
                        cuda_host.value_and_grad, "cross_entropy", target, x,
                        reduction=reduction, **options), f"{classes} {options} {reduction}")
    ran = {name for _, name in backend._device()._functions}
    assert any(name.startswith("ce_rows_plain<") for name in ran)


@pytest.mark.parametrize("dtype, threads, in_flight, staged_kib, classes", [
    (np.float32, 256, 4, 48, 20000),  # 3072 of 5000 packs staged, the rest read downwards
    (np.float32, 512, 4, 0, 20000),  # downwards only
    (np.float16, 256, 2, 48, 30000),  # 3072 of 3750 packs staged
    (np.float32, 256, 4, 48, 20003),  # rows of an odd length: not packed, nothing staged
    (np.float32, 256, 4, 32, 5000),  # the whole row staged (ROW_STREAM's rows)
])
def test_the_streaming_kernel_gives_the_same_bits_staged_and_downwards(
        dtype, threads, in_flight, staged_kib, classes):
    """``ce_stream`` with the row's end kept in shared memory and the gradient's pass read
    from the top down (candidates of the GPU sweep) gives the bits of the same threads and
    packs in flight without them (another thread count combines the threads' sums in
    another order): the value's pass is the same, and each gradient element depends on
    its own logit and the row's sums alone. Ties at the max, an infinite logit, an ignored row, softcap (float32
    stages the capped logits' tanh) and z-loss; rows of an odd length (no packs)."""
    from lossbackends._cuda_sources import StreamConfig

    backend = cuda_host.backend()
    config = StreamConfig(threads, in_flight, down=True, staged_kib=staged_kib)
    plain = StreamConfig(threads, in_flight)
    rng = np.random.default_rng(classes)
    x = (rng.normal(size=(3, classes)) * 4).astype(dtype)
    labels = np.array([5, classes - 1, -100])
    x[0, [5, classes - 2]] = 9.0  # ties at the max, the label one of them, one staged
    x[1, 17] = np.inf
    settings = tuple(dict.fromkeys(backend.STREAM, c) for c in (config, plain))
    setting = "ROW_STREAM" if classes <= _cuda_sources.LONGEST_ROWS else "STREAM"
    for options in ({}, {"softcap": 15.0}, {"z_loss": 1e-4}):
        for reduction in ("none", "mean"):
            cuda_host.same_bits_under(backend, setting, settings, functools.partial(
                cuda_host.value_and_grad, "cross_entropy", labels, x, reduction=reduction,
                **options), f"{options} {reduction}")
    ran = {name for _, name in backend._device()._functions}
    assert config.expression(_cuda_sources.TYPE_NAMES[np.dtype(dtype).name]) in ran


def test_the_mean_s_label_pass_over_several_blocks():
    """The "mean"'s label pass: blocks of 4096 rows, the last to finish adds their sums
    and writes the scale, and sets the block count back for the next call (two calls)."""
    rng = np.random.default_rng(5)
    rows = 2 * 4096 + 3
    x = rng.normal(size=(rows, 7)).astype(np.float32)
    labels = rng.integers(0, 7, rows)
    weight = rng.uniform(0.5, 2, 7).astype(np.float32)
    for step in (5, 3):  # (another count each call: a stale scale cannot pass)
        labels[::step] = -100
        want = LOSSES["cross_entropy"].value_and_grad(labels, x, class_weight=weight,
                                                      backend="numpy")
        got = cuda_host.value_and_grad("cross_entropy", labels, x, class_weight=weight)
        _assert_close(got[0], want[0], np.float32, "value")
        _assert_close(got[1], want[1], np.float32, "gradient")


def test_a_device_with_less_shared_memory_takes_the_unstaged_kernel(monkeypatch):
    """Where a block cannot have a setting's stage (sm_75: 64 KiB with the opt-in, float32's
    setting above 16384 classes stages 96 KiB), the same setting unstaged runs: the same
    bits, and no launch beyond the device's limit (the emulation refuses one)."""
    backend = cuda_host.backend()
    rng = np.random.default_rng(11)
    x = (rng.normal(size=(3, 20000)) * 4).astype(np.float32)
    labels = np.array([5, 19999, -100])
    want = cuda_host.value_and_grad("cross_entropy", labels, x, reduction="none")
    monkeypatch.setattr(cuda_host, "SHARED_MEMORY_OPT_IN", 64 * 1024)
    monkeypatch.setattr(backend._device(), "shared_optin", 64 * 1024)
    got = cuda_host.value_and_grad("cross_entropy", labels, x, reduction="none")
    cuda_host.assert_same_bits(got, want, "unstaged on a 64 KiB device")
    unstaged = backend.STREAM["float"].unstaged().expression("float")
    assert unstaged != backend.STREAM["float"].expression("float")
    assert ("cross_entropy.cu", unstaged) in backend._device()._functions


def test_a_call_that_fails_after_the_labels_pass_leaves_no_flag(monkeypatch):
    """A call whose labels' pass set the flag and which then fails (here an allocation)
    clears it, on the device and (waiting for its copy) in the thread's pinned flag: the
    next call, with good labels, passes (it raised IndexError, reading the stale flag and
    finding no bad label)."""
    backend = cuda_host.backend()
    x = np.zeros((3, 40), np.float32)
    empty = backend.cp.empty

    def failing(*args, **kwargs):
        raise MemoryError("out of device memory")

    for name in ("cross_entropy", "multiclass_hinge"):
        monkeypatch.setattr(backend.cp, "empty", failing)
        with pytest.raises(MemoryError):
            cuda_host.value_and_grad(name, np.array([0, 40, 1]), x, reduction="none")
        assert backend._device().workspace("label_error", 1, np.int32)[0] == 0
        monkeypatch.setattr(backend.cp, "empty", empty)
        value, _ = cuda_host.value_and_grad(name, np.array([0, 39, 1]), x, reduction="none")
        assert np.isfinite(value).all()
