"""The Numba backend's float32 exp, log, log1p and tanh, compiled with the kernels' own fast-math
flags, against float64: a flag that lets LLVM reassociate (it folds exp's two-part ln 2)
shows here as a loss of ulps."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("numba", reason="Numba is not installed (pip install 'lossbackends[numba]')")

from numba import njit  # noqa: E402

from lossbackends.backends._numba_intrinsics import FASTMATH, held  # noqa: E402
from lossbackends.backends._numba_math import (  # noqa: E402
    EXP32,
    EXP32_LOW,
    EXP32_WIDE,
    LOG1P32,
    LOG32,
    TANH32,
    fast_exp,
    fast_exp_nonpositive,
    fast_exp_normal,
    fast_log,
    fast_log1p,
    fast_log_normal,
    fast_tanh,
    softcap_constants,
    softcap_near_zero,
)


def _compiled(function, constants=None):
    """``function`` over an array, its ``constants`` (or None) passed as the kernels pass
    them: ``held`` before the loop."""

    @njit(fastmath=set(FASTMATH))
    def apply(x, out):
        k = held(constants)
        for i in range(x.size):
            out[i] = function(x[i], k)

    def run(x):
        out = np.empty_like(x)
        apply(x, out)
        return out

    return run


def _ulps(actual, expected):
    """|actual - expected| in units of the float32 spacing at ``expected`` (2^-149 in the
    subnormal range)."""
    spacing = np.spacing(np.abs(expected).astype(np.float32)).astype(np.float64)
    return np.abs(actual.astype(np.float64) - expected) / np.maximum(spacing, 2.0**-149)


rng = np.random.default_rng(21)
SMALLEST_NORMAL = np.finfo(np.float32).tiny
# every subnormal float32 in steps of 37 (and the smallest ones), as float32
SUBNORMALS = np.concatenate([np.arange(1, 64), np.arange(64, 0x00800000, 37)]).astype(np.uint32).view(np.float32)


def test_exp_is_within_one_ulp_and_keeps_its_special_values():
    x = np.concatenate([rng.uniform(-87, 0, 200_000), rng.uniform(-1, 0, 50_000)]).astype(np.float32)
    assert _ulps(_compiled(fast_exp)(x), np.exp(x.astype(np.float64))).max() <= 1.05
    special = np.array([-np.inf, -1e30, -110.0, 0.0, -0.0, np.nan, np.inf, 1e30], np.float32)
    np.testing.assert_array_equal(_compiled(fast_exp)(special),
                                  [0.0, 0.0, 0.0, 1.0, 1.0, np.nan, np.inf, np.inf])


def test_exp_has_subnormal_results_and_overflows_where_float32_does():
    """Below 2^-126 the results are subnormal, not 0 (sigmoid(-90) = 8.19e-40), within an
    ulp of the subnormal spacing; above log(largest float32) they are inf."""
    x = np.concatenate([rng.uniform(-104, -87, 200_000), rng.uniform(0, 89, 200_000),
                        [-103.972, -103.9721, -90.0, -87.3365, 88.7228, 88.72284]]).astype(np.float32)
    expected = np.exp(x.astype(np.float64))
    actual = _compiled(fast_exp)(x)
    with np.errstate(over="ignore"):
        overflow = expected.astype(np.float32) == np.inf  # rounded to float32
    assert _ulps(actual[~overflow], expected[~overflow]).max() <= 1.05
    # within one ulp of the threshold the rounding may go either way
    near = np.abs(x[overflow] - 88.72284) < 1e-5
    assert np.isinf(actual[overflow][~near]).all()
    assert actual[x == np.float32(-90.0)][0] == np.float32(8.1940087e-40)
    assert actual[x == np.float32(-103.972)][0] == np.float32(2.0**-149)  # rounds up to the smallest


def test_log_is_within_0_85_ulp_and_keeps_nan():
    # every float32 in [0.5, 2), where the reduction's boundary sqrt(1/2) lies, and a
    # sample of every binade
    every = np.arange(0x3F000000, 0x40000000, dtype=np.uint32).view(np.float32)
    sample = np.exp(rng.uniform(-87, 88, 200_000)).astype(np.float32)
    sample = sample[(sample >= np.finfo(np.float32).tiny) & np.isfinite(sample)]
    for x in (every, sample):
        assert _ulps(_compiled(fast_log)(x), np.log(x.astype(np.float64))).max() <= 0.85
    x = np.full(40, 0.25, np.float32)
    x[[0, 17, 39]] = np.nan  # in the vectorised loop and in its scalar tail
    np.testing.assert_array_equal(np.isnan(_compiled(fast_log)(x)), np.isnan(x))


def test_log_of_subnormals_zero_inf_and_negatives():
    assert _ulps(_compiled(fast_log)(SUBNORMALS), np.log(SUBNORMALS.astype(np.float64))).max() <= 0.85
    special = np.array([0.0, -0.0, -1.0, -np.inf, np.inf, np.nan, SMALLEST_NORMAL], np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = np.log(special.astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(_compiled(fast_log)(special), expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_normal_gives_the_bits_of_log_for_positive_normals_and_nan_elsewhere(dtype):
    """``fast_log_normal``: ``fast_log`` to the bit for every positive normal x (each
    binade, the largest and smallest normals), NaN elsewhere (0, subnormals, negatives,
    infinities, NaN): its callers (kl_div, poisson_nll) find by that NaN the elements
    whose limits they take elsewhere."""
    info = np.finfo(dtype)
    normal = np.concatenate([np.exp(rng.uniform(np.log(info.tiny), np.log(info.max), 100_000)),
                             rng.uniform(0.5, 2, 50_000), [info.tiny, info.max, 1.0]]).astype(dtype)
    normal = normal[np.isfinite(normal) & (normal >= info.tiny)]
    bits = np.uint32 if dtype == np.float32 else np.uint64
    others = np.array([0.0, -0.0, info.smallest_subnormal, info.tiny * 0.999, -info.tiny, -1.0,
                       -info.max, np.inf, -np.inf, np.nan], dtype)
    for constants in (None, LOG32) if dtype == np.float32 else (None,):
        np.testing.assert_array_equal(_compiled(fast_log_normal, constants)(normal).view(bits),
                                      _compiled(fast_log)(normal).view(bits))
        assert np.isnan(_compiled(fast_log_normal, constants)(others)).all()


def test_log1p_is_within_one_and_a_half_ulps_on_0_to_1():
    x = np.concatenate([rng.uniform(0, 1, 200_000), np.exp(rng.uniform(-80, 0, 50_000))]).astype(np.float32)
    assert _ulps(_compiled(fast_log1p)(x), np.log1p(x.astype(np.float64))).max() <= 1.5
    assert _compiled(fast_log1p)(np.zeros(1, np.float32))[0] == 0.0


def test_log1p_keeps_subnormal_arguments():
    """log1p(x) = x to the last bit of a subnormal x (the smallest, 2^-149, included)."""
    np.testing.assert_array_equal(_compiled(fast_log1p)(SUBNORMALS), SUBNORMALS)
    x = np.array([SMALLEST_NORMAL, np.nan, 1.0], np.float32)
    np.testing.assert_array_equal(_compiled(fast_log1p)(x),
                                  np.log1p(x.astype(np.float64)).astype(np.float32))


def test_exp_nonpositive_gives_the_bits_of_exp():
    """For x <= 0 (subnormal results, their rounding threshold, -inf and NaN included) the
    softplus family's exp is ``fast_exp`` to the bit."""
    x = np.concatenate([rng.uniform(-110, 0, 300_000), -np.exp(rng.uniform(-104, 4, 100_000)),
                        -SUBNORMALS[::50], [-103.972, -103.9721, -90.0, -87.3365, -104.0,
                                            -1e30, -np.inf, 0.0, -0.0, np.nan]]).astype(np.float32)
    np.testing.assert_array_equal(_compiled(fast_exp_nonpositive)(x).view(np.uint32),
                                  _compiled(fast_exp)(x).view(np.uint32))


def test_exp_normal_is_within_one_ulp_on_its_range():
    x = np.concatenate([rng.uniform(-87, 88, 200_000), rng.uniform(-1, 1, 50_000)]).astype(np.float32)
    assert _ulps(_compiled(fast_exp_normal)(x), np.exp(x.astype(np.float64))).max() <= 1.05
    assert np.isnan(_compiled(fast_exp_normal)(np.array([np.nan], np.float32))[0])


def test_tanh_is_within_a_few_ulps_and_keeps_its_special_values():
    """The rational fit: within 3 ulp below |x| = 1 (softcap's usual range), 5.75 near
    saturation (5.73 at |x| = 7.392191, the most over every float32 from 1/16 to 10);
    tanh x = x for tiny x (subnormals included), +-1 at +-inf."""
    small = np.concatenate([rng.uniform(-1, 1, 200_000), np.exp(rng.uniform(-87, 0, 50_000))])
    large = np.concatenate([rng.uniform(-12, 12, 200_000), [7.392191, -7.392191]])
    for x, bound in ((small, 3.0), (large, 5.75)):
        x = x.astype(np.float32)
        assert _ulps(_compiled(fast_tanh)(x), np.tanh(x.astype(np.float64))).max() <= bound
    np.testing.assert_array_equal(_compiled(fast_tanh)(SUBNORMALS), SUBNORMALS)
    # never beyond +-1 (the fit crossed 1 by an ulp near |x| = 8.2-10: softcap's slope
    # 1 - t^2 was negative there), every float32 from 7 to 11 of both signs
    edge = np.arange(np.float32(7.0).view(np.int32), np.float32(11.0).view(np.int32),
                     dtype=np.int32).view(np.float32)
    t = _compiled(fast_tanh)(np.concatenate([edge, -edge]))
    assert np.abs(t).max() == 1.0
    special = np.array([np.inf, -np.inf, 1e30, -20.0, 0.0, np.nan], np.float32)
    np.testing.assert_array_equal(_compiled(fast_tanh)(special), [1.0, -1.0, 1.0, -1.0, 0.0, np.nan])


@pytest.mark.parametrize("cap", [40.0, 30.0, 2.5, 1.0, 1.0 / 512.0])
def test_softcap_near_zero_is_within_two_ulps_on_its_range(cap):
    """The polynomial softcap takes for logits within +-softcap, its coefficients scaled by
    the powers of 1 / softcap^2 (``softcap_constants``, over the range the kernels take
    it): softcap tanh(x / softcap) within 2 ulp on [-softcap, softcap], both ends
    included, and x^2 as its second result; odd; x itself for tiny x (subnormals
    included); NaN kept."""
    cap32 = np.float32(cap)

    @njit(fastmath=set(FASTMATH))
    def reach_limit(cap):
        return softcap_constants(cap)[2]

    @njit(fastmath=set(FASTMATH))
    def run(x):
        v, z = np.empty_like(x), np.empty_like(x)
        k = softcap_constants(cap32)
        for i in range(x.size):
            v[i], z[i] = softcap_near_zero(x[i], cap32, k)
        return v, z

    x = np.concatenate([rng.uniform(-cap, cap, 400_000), np.exp(rng.uniform(-87, 0, 50_000)),
                        [cap, -cap, np.nextafter(cap32, np.float32(0))]]).astype(np.float32)
    x = x[np.abs(x) <= cap32]  # (exp's draws beyond a small softcap)
    v, z = run(x)
    expected = cap * np.tanh(x.astype(np.float64) / cap)
    assert _ulps(v, expected).max() <= 2.0
    np.testing.assert_array_equal(z, np.square(x))  # (compared with cap^2: no rounding of x / cap)
    assert reach_limit(cap32) == cap32 * cap32 and reach_limit(np.float64(cap)) == 1.0
    np.testing.assert_array_equal(run(-x)[0], -v)
    np.testing.assert_array_equal(run(SUBNORMALS)[0], SUBNORMALS)
    np.testing.assert_array_equal(run(np.array([0.0, np.nan], np.float32))[0], [0.0, np.nan])


@pytest.mark.parametrize(("function", "constants"), [
    (fast_exp, EXP32_WIDE), (fast_exp_nonpositive, EXP32_LOW), (fast_exp_normal, EXP32),
    (fast_log, LOG32), (fast_log1p, LOG1P32), (fast_tanh, TANH32)],
    ids=["exp", "exp_nonpositive", "exp_normal", "log", "log1p", "tanh"])
def test_held_constants_give_the_same_bits(function, constants):
    """The constants held in registers (``held``, as the kernels pass them) change no bit of
    any result: specials, subnormals and a sample of every binade, both signs."""
    magnitudes = np.exp(rng.uniform(-87, 88, 100_000)).astype(np.float32)
    x = np.concatenate([magnitudes, -magnitudes, SUBNORMALS[::50], rng.uniform(-1, 1, 50_000),
                        [0.0, -0.0, np.inf, -np.inf, np.nan, 88.72284, -103.972, 1.0, 10.0]]
                       ).astype(np.float32)
    if function is fast_exp_normal:
        x = x[np.abs(x) <= 87]
    if function is fast_exp_nonpositive:
        x = x[~(x > 0)]
    if function is fast_log1p:
        x = np.abs(x[np.abs(x) <= 1])
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(_compiled(function, constants)(x).view(np.uint32),
                                      _compiled(function)(x).view(np.uint32))


def test_kernels_vectorise_whoever_compiles_the_helpers_first(tmp_path):
    """The helpers compile once per process with the kernels' flags, whichever function
    calls them first: unset, they took a caller's, and a test's njit function (Python's
    error model: a zero-division check) first made every later kernel of the process
    scalar (10x slower), and the disk cache kept it so for later processes."""
    script = textwrap.dedent("""
        import re
        import numpy as np
        from numba import njit
        import lossbackends as lb
        from lossbackends.backends import numba_backend
        from lossbackends.backends._numba_intrinsics import held
        from lossbackends.backends._numba_math import EXP32_WIDE, LOG1P32, fast_exp, fast_log1p

        @njit  # Python's error model, no fast-math: unlike every kernel
        def first(x, out):
            k, e = held(LOG1P32), held(EXP32_WIDE)
            for i in range(x.size):
                out[i] = fast_log1p(x[i], k) / x[i] + fast_exp(x[i], e)

        x = np.ones(64, np.float32)
        first(x, np.empty_like(x))
        lb.binary_cross_entropy_with_logits.value_and_grad(x, x, backend="numba")
        code = numba_backend.KERNELS["binary_cross_entropy_with_logits"].dispatchers[None, True, False, False]
        ir = "".join(code.inspect_llvm().values())
        # exp's and log1p's fused products, in vector lanes
        print(bool(re.search(r"llvm[.]fma[.]v[0-9]+f32", ir)))
    """)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}  # compiled here, not loaded
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, cwd=Path(__file__).parents[1], check=True)
    assert result.stdout.split() == ["True"]


@pytest.mark.skipif(platform.machine().lower() not in {"x86_64", "amd64"},
                    reason="checks x86 instructions")
def test_streaming_kernels_store_without_reading(tmp_path):
    """The streaming form of a kernel (``numba_backend.STREAM_FROM_BYTES``) writes the
    gradient by vector non-temporal stores (``vmovntps``, ``movntps`` without AVX), fenced
    once per chunk;
    the plain form by none. (LLVM's vectoriser refuses a loop whose non-temporal store it
    cannot vectorise: this is what shows the loop kept its vectors.)"""
    script = textwrap.dedent("""
        import numpy as np
        import lossbackends as lb
        from lossbackends.backends import numba_backend
        numba_backend.STREAM_FROM_BYTES = 1 << 12
        n = numba_backend.PARALLEL_MIN_ELEMENTS
        buffer = np.empty(n + 16, np.float32)
        start = (-buffer.__array_interface__["data"][0]) % 64 // 4
        ones = np.ones(n, np.float32)
        for out in (buffer[start + 1:start + 1 + n], buffer[start:start + n]):  # off, on
            lb.mse.value_and_grad(ones, ones, out=out, backend="numba")
        for stream in (False, True):
            code = numba_backend.KERNELS["mse"].dispatchers[None, True, True, stream]
            asm = "".join(code.inspect_asm().values())
            print(len(code.signatures), "movntp" in asm, "sfence" in asm)  # (v)movntps
    """)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}  # compiled here, not loaded
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, cwd=Path(__file__).parents[1], check=True)
    assert result.stdout.split() == ["1", "False", "False", "1", "True", "True"]


# --- float64: the same functions, vectorisable, within an ulp ------------------------

# x86's 80-bit long double (64-bit mantissa) measures float64's ulps to a thousandth;
# where long double is float64 itself (Windows, Arm macOS) there is no reference
EXTENDED = np.finfo(np.longdouble).nmant >= 63
needs_extended = pytest.mark.skipif(not EXTENDED, reason="np.longdouble is not wider than "
                                    "float64 here: no reference for float64's ulps")
SUBNORMALS64 = np.concatenate([np.arange(1, 64), np.arange(64, 1 << 52, (1 << 52) // 3001)]
                              ).astype(np.uint64).view(np.float64)


def _ulps64(actual, x, function):
    """|actual - function(x)| in units of the float64 spacing at the exact value (2^-1074 in
    the subnormal range), ``function`` evaluated in long double."""
    with np.errstate(over="ignore", under="ignore"):
        expected = function(x.astype(np.longdouble))
    spacing = np.spacing(np.abs(expected.astype(np.float64)))
    return (np.abs(actual.astype(np.longdouble) - expected)
            / np.maximum(spacing, 2.0**-1074)).astype(np.float64)


@needs_extended
def test_float64_exp_is_within_0_85_ulp_over_its_whole_range():
    """exp's float64 twin (Cody-Waite, Taylor's degree 13, what rounding the reduced
    argument lost carried along): subnormal results and overflow where float64 has them."""
    x = np.concatenate([rng.uniform(-745, 709.78, 300_000), rng.uniform(-1, 1, 100_000),
                        rng.uniform(-745.13, -708, 50_000), [-745.1332191019411, -708.4]])
    for function in (fast_exp, fast_exp_nonpositive, fast_exp_normal):
        part = x[x <= 0] if function is fast_exp_nonpositive else (
            x[(x >= -708) & (x <= 709)] if function is fast_exp_normal else x)
        ulps = _ulps64(_compiled(function)(part), part, np.exp)
        normal = part > -708.39  # (a subnormal result is rounded twice: within an ulp)
        assert ulps[normal].max() <= 0.85 and ulps.max() <= 1.0, function
    special = np.array([-np.inf, -1e300, -746.0, 0.0, -0.0, np.nan, np.inf, 1e300, 709.79])
    np.testing.assert_array_equal(_compiled(fast_exp)(special),
                                  [0.0, 0.0, 0.0, 1.0, 1.0, np.nan, np.inf, np.inf, np.inf])
    assert _compiled(fast_exp)(np.array([-745.0]))[0] == 5e-324  # the smallest subnormal


@needs_extended
def test_float64_exp_nonpositive_gives_the_bits_of_exp():
    x = np.concatenate([rng.uniform(-750, 0, 200_000), -np.exp(rng.uniform(-700, 6, 50_000)),
                        [-745.1332191019411, -1e300, -np.inf, 0.0, -0.0, np.nan]])
    np.testing.assert_array_equal(_compiled(fast_exp_nonpositive)(x).view(np.uint64),
                                  _compiled(fast_exp)(x).view(np.uint64))


@needs_extended
def test_float64_log_is_within_0_85_ulp_and_keeps_its_special_values():
    """fdlibm's log: every binade, [0.5, 2) densely (the reduction's boundary sqrt(1/2)),
    subnormals; 0, negatives, inf and NaN as NumPy has them."""
    x = np.concatenate([np.exp(rng.uniform(-708, 709, 200_000)), rng.uniform(0.5, 2, 200_000),
                        rng.uniform(1 - 1e-6, 1 + 1e-6, 20_000), SUBNORMALS64])
    assert _ulps64(_compiled(fast_log)(x), x, np.log).max() <= 0.85
    special = np.array([0.0, -0.0, -1.0, -np.inf, np.inf, np.nan, 1.0, 2.0**-1022])
    with np.errstate(divide="ignore", invalid="ignore"):
        np.testing.assert_array_equal(_compiled(fast_log)(special), np.log(special))


@needs_extended
def test_float64_log1p_is_within_one_and_a_quarter_ulps_on_0_and_up():
    x = np.concatenate([rng.uniform(0, 1, 200_000), np.exp(rng.uniform(-745, 0, 100_000)),
                        rng.uniform(0, 1e-7, 20_000), np.exp(rng.uniform(0, 700, 20_000))])
    assert _ulps64(_compiled(fast_log1p)(x), x, np.log1p).max() <= 1.25
    # x itself where 1 + x rounds to 1 (subnormals included); inf and NaN kept
    np.testing.assert_array_equal(_compiled(fast_log1p)(SUBNORMALS64), SUBNORMALS64)
    special = np.array([0.0, 1e-300, np.inf, np.nan])
    np.testing.assert_array_equal(_compiled(fast_log1p)(special), np.log1p(special))


@needs_extended
def test_float64_tanh_is_within_2_25_ulp_and_keeps_its_special_values():
    """tanh from expm1 (``tanh_parts64``): softcap's float64 tanh, log_cosh's gradient."""
    magnitudes = np.concatenate([rng.uniform(0, 3, 200_000), np.exp(rng.uniform(-700, 6, 50_000)),
                                 SUBNORMALS64])
    x = np.concatenate([magnitudes, -magnitudes])
    assert _ulps64(_compiled(fast_tanh)(x), x, np.tanh).max() <= 2.25
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 400.0, -1e300])
    result = _compiled(fast_tanh)(special)
    np.testing.assert_array_equal(result, [0.0, -0.0, 1.0, -1.0, np.nan, 1.0, -1.0])
    assert np.signbit(result[1]) and not np.signbit(result[0])


@needs_extended
def test_float64_log_cosh_within_7_ulp_and_its_gradient_within_2_25():
    """log_cosh's float64 form (log1p of cosh a - 1 from expm1 below a = 1, a + log1p(t) -
    log 2 above), through the public call: values and gradients against long double, +0
    at 0, and the saturated ends."""
    import lossbackends as lb

    a = np.concatenate([rng.uniform(0, 1, 100_000), np.exp(rng.uniform(-30, 0, 50_000)),
                        rng.uniform(1, 40, 50_000), rng.uniform(300, 800, 5_000)])
    e = np.concatenate([a, -a])
    zeros = np.zeros_like(e)
    value = lb.log_cosh(zeros, e, reduction="none", backend="numba")
    grad = lb.log_cosh.grad(zeros, e, reduction="sum", backend="numba")
    exact_a = a.astype(np.longdouble)
    # log cosh in forms exact in long double: log1p(2 sinh(a/2)^2), and a + log1p(exp(-2a)) - log 2
    exact = np.where(exact_a < 1, np.log1p(2 * np.sinh(exact_a / 2) ** 2),
                     exact_a + np.log1p(np.exp(-2 * exact_a)) - np.log(np.longdouble(2)))
    exact = np.concatenate([exact, exact])
    spacing = np.maximum(np.spacing(np.abs(exact.astype(np.float64))), 2.0**-1074)
    assert (np.abs(value.astype(np.longdouble) - exact) / spacing).max() <= 7.0
    assert _ulps64(grad, e, np.tanh).max() <= 2.25
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e300])
    g = lb.log_cosh.grad(np.zeros(6), special, reduction="sum", backend="numba")
    np.testing.assert_array_equal(g, [0.0, 0.0, 1.0, -1.0, np.nan, 1.0])
    # tanh(+-0) = +-0, as NumPy's, in float32 too (a sign taken by copysign)
    special32 = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 3e38], np.float32)
    g32 = lb.log_cosh.grad(np.zeros(6, np.float32), special32, reduction="sum",
                           backend="numba")
    np.testing.assert_array_equal(g32, [0.0, 0.0, 1.0, -1.0, np.nan, 1.0])
    for zero_grad in (g[:2], g32[:2]):
        np.testing.assert_array_equal(np.signbit(zero_grad), [False, True])
    np.testing.assert_array_equal(
        lb.log_cosh(np.zeros(6), special, reduction="none", backend="numba"),
        [0.0, 0.0, np.inf, np.inf, np.nan, 1e300 - np.log(2)])


def test_float16_conversions_give_numpys_bits():
    """The Numba backend's float16 conversions (the CPU's own, ``_numba_half``) give the
    bits of NumPy's casts: every float16 up to float32, and float32 values down to float16
    around every rounding case (ties, subnormals, overflow, NaN, signed zeros)."""
    from lossbackends.backends import _numba_half

    every = np.arange(2**16, dtype=np.uint16).view(np.float16)
    widened = _numba_half.up(every.reshape(256, 256))
    expected = every.astype(np.float32).reshape(256, 256)
    same_nan = np.isnan(widened) & np.isnan(expected)
    assert np.array_equal(widened.view(np.uint32)[~same_nan], expected.view(np.uint32)[~same_nan])
    assert np.array_equal(np.isnan(widened), np.isnan(expected))
    rng = np.random.default_rng(0)
    # each float16 as float32, its neighbours and the midpoints between float16 values
    exact = every[np.isfinite(every)].astype(np.float32)
    around = np.concatenate([exact, np.nextafter(exact, np.float32(np.inf)),
                             np.nextafter(exact, np.float32(-np.inf)),
                             (exact[:-1] + np.diff(exact) / 2).astype(np.float32),
                             rng.standard_normal(10**5).astype(np.float32) * 1e-6,
                             np.array([np.inf, -np.inf, np.nan, 65520.0, 1e30, 2.98e-8,
                                       2.99e-8, -0.0], np.float32)])
    narrowed = np.empty(around.shape, np.float16)
    _numba_half.down(narrowed, around)
    with np.errstate(all="ignore"):
        reference = around.astype(np.float16)
    assert np.array_equal(np.isnan(narrowed), np.isnan(reference))
    finite = ~np.isnan(reference)
    assert np.array_equal(narrowed.view(np.uint16)[finite], reference.view(np.uint16)[finite])


def test_float16_without_the_cpus_conversions_falls_back_to_numpy():
    """Numba compiling for features without F16C (NUMBA_CPU_FEATURES) takes NumPy's casts:
    the CPU's conversions there were calls LLVM could not link, a segmentation fault."""
    code = ("import numpy as np, lossbackends as lb; from lossbackends.backends import "
            "_numba_half as h; p = np.full(3, 0.5, np.float16); "
            "g = lb.mse.grad(np.zeros_like(p), p, backend='numba'); "
            "assert h.up.__module__.endswith('_host') and g.dtype == np.float16, g; "
            "print(repr(g.astype(float).tolist()))")
    env = {**os.environ, "NUMBA_CPU_FEATURES": "-f16c"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=Path(__file__).parent.parent)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == repr([float(np.float16(1 / 3))] * 3)  # 2 (p - y) / n
