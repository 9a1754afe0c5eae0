"""What the Numba row kernels share (cross-entropy's in ``_numba_rows`` and
``_numba_cross_entropy_few``, multiclass hinge's in ``_numba_multiclass_hinge``): their
argument types, the launch over chunks of rows (``_launch``), and a cross-entropy row's
pieces: its sums (shifted by the row's max, apart from one class, below the max's 1), its
max, and its exp passes (plain, and capped by softcap), written by streaming stores where
the gradient is large (``_stream_row``, ``_stream_gradient``).
"""

from __future__ import annotations

import numba
import numpy as np

from ._numba_common import (
    SUM_SPAN,
    _in_order,
    _jit,
    _sum,
    add_compensated,
    compensated,
    copy_streaming,
    holds_64_bits,
    lines_head,
    prefetch_lines,
    store_streaming,
    wide_vectors,
)
from ._numba_intrinsics import inline, maximum, minimum, order_bits
from ._numba_math import (
    ZERO,
    capped_tanh,
    fast_exp_normal,
    fast_tanh,
    sech_squared,
    softcap_near_zero,
    tanh_slope,
)
from ._threads import share

_EMPTY_LOSSES = np.empty(0)  # no per-row losses wanted
_ROW_LOSSES = numba.float64[::1]  # per-row losses: float64, allocated here (aligned)
_INT, _REAL, _BOOL, _NONE = numba.int64, numba.float64, numba.boolean, numba.none


# (the kernel's types function, its key) -> the row kernel's machine code
_CODE: dict[tuple, object] = {}


def _launch(kernel, types, key: tuple, chunks: int, args: tuple) -> tuple[float, int]:
    """Run ``kernel`` on ``args`` over ``chunks`` chunks of rows (on this thread alone for
    one, else shared among the threads), through its machine code for the argument types
    ``types(*key)`` (see ``array_type``): compiled once per key, one version for writeable
    and read-only inputs, and no dispatcher to type the arguments on every call. Returns
    (the reduced loss, first bad row or -1)."""
    code = _CODE.get((types, key))
    if code is None:
        code = _CODE[types, key] = kernel.compile(types(*key))
    if chunks == 1:
        total, bad_row, scale = code(*args, None)
    else:
        # every thread checks all the labels before it writes: they agree on the bad row
        (_, bad_row, scale), partials = share(code, args, chunks)
        if bad_row >= 0:  # nothing was written, partial sums included
            return 0.0, bad_row
        total = _in_order(partials)
    return total * scale, bad_row


@inline
def _shifted(v, top):
    """v - top, with 0 where v equals the row's max ``top`` (also when both are inf: an
    infinite logit at the max counts as equal to it, not inf - inf = NaN)."""
    return ZERO if v == top else v - top


def _shifted_sum(values, top, factor):
    """sum(factor * (values - top)) (see ``_shifted``) in float64; reassociated like
    ``_sum``. Each term is weighted before the sum: terms of one sign, so the sum never
    overflows before its final value does."""
    wide_vectors()
    total = 0.0
    for i in range(values.size):
        total += factor * _shifted(values[i], top)
    return total


def _shifted_dot(weights, values, top, factor):
    """sum(factor * weights * (values - top)) (see ``_shifted_sum``), where a zero weight
    contributes 0 even against an infinite difference (a weight that is 0 once times
    ``factor``, a subnormal's underflow, too: NumPy's rule)."""
    wide_vectors()
    total = 0.0
    for i in range(values.size):
        w = factor * weights[i]
        total += w * _shifted(values[i], top) if w != 0 else 0.0
    return total


def _sum_below_one(values):
    """(sum(values), the sum of those other than 1) in float64, reassociated like ``_sum``.
    A row's exps shifted by its max hold 1 for the max: 1 + e rounds e to float64's ulp of
    1 (a confident row's loss log(1 + e) was 1e-4 relative off at 128000 classes), so the
    loss takes log1p of the others' sum (``_log_sum``)."""
    wide_vectors()
    total, below = 0.0, 0.0
    for i in range(values.size):
        v = values[i]
        total += v
        below += v if v != 1.0 else 0.0
    return total, below


def _sum_except(values, index):
    """sum(values) without ``values[index]`` (float64, ``_sum``): the other classes' exps,
    apart from the one the loss is taken against (log1p(rest / e_ref))."""
    wide_vectors()
    kept = values[index]
    values[index] = 0
    rest = _sum(values)
    values[index] = kept
    return rest


_shifted_sum_span = _jit(_shifted_sum, "_shifted_sum", reassociate=True)
_shifted_dot_span = _jit(_shifted_dot, "_shifted_dot", reassociate=True)
_sum_below_one_span = _jit(_sum_below_one, "_sum_below_one", reassociate=True)
_sum_except = _jit(_sum_except, "_sum_except")


# (the three sums over spans for float64 rows, as ``_sum``: see ``SUM_SPAN``; inlined,
# so that float32 rows call the span's function alone, as before)
@inline
def _shifted_sum(values, top, factor):
    if not holds_64_bits(values):
        return _shifted_sum_span(values, top, factor)
    total, error = 0.0, 0.0
    for start in range(0, values.size, SUM_SPAN):
        total, error = add_compensated(
            total, error, _shifted_sum_span(values[start:start + SUM_SPAN], top, factor))
    return compensated(total, error)


@inline
def _shifted_dot(weights, values, top, factor):
    if not holds_64_bits(values):
        return _shifted_dot_span(weights, values, top, factor)
    total, error = 0.0, 0.0
    for start in range(0, values.size, SUM_SPAN):
        stop = start + SUM_SPAN
        total, error = add_compensated(total, error, _shifted_dot_span(
            weights[start:stop], values[start:stop], top, factor))
    return compensated(total, error)


@inline
def _sum_below_one(values):
    if not holds_64_bits(values):
        return _sum_below_one_span(values)
    total, total_error, below, below_error = 0.0, 0.0, 0.0, 0.0
    for start in range(0, values.size, SUM_SPAN):
        span_total, span_below = _sum_below_one_span(values[start:start + SUM_SPAN])
        total, total_error = add_compensated(total, total_error, span_total)
        below, below_error = add_compensated(below, below_error, span_below)
    return compensated(total, total_error), compensated(below, below_error)


@inline
def _others(total, below):
    """sum - 1 for ``total, below = _sum_below_one(exps)``: the 1s beyond the max's
    (ties; their count is the sums' difference) plus the others' sum, without the max's 1
    that would round the others away."""
    return (np.rint(total - below) - 1.0) + below


@inline
def _log_sum(total, below):
    """log(total) as log1p(``_others``): exact where the max's 1 dominates."""
    return np.log1p(_others(total, below))




@inline
def _row_max_min(x):
    """(max(x), min(x)) in one pass, NaN if any element is NaN. (The loop starts at 0,
    x[0] taken twice: from 1, LLVM ran rows of up to 64 float32 classes in its scalar
    remainder, one element after another; from 0 they take its vectors, 2x as fast.)"""
    wide_vectors()
    top = low = x[0]
    for c in range(x.size):
        top = maximum(top, x[c])
        low = minimum(low, x[c])
    return top, low


# a row whose logits lie within this of its max has only normal float32 exps (exp(-87)
# > 2^-126): there exp needs no clamp and no subnormal scaling, and x - max no care for
# infinities (the usual row; the others take the exp that holds everywhere)
NORMAL_REACH = 87.0

# The exp pass goes in spans of SPAN logits, each after a prefetch of the same span of the
# next row, for rows of at most PREFETCH_ROW_BYTES: the hardware's prefetcher follows a
# stream, not the row to come, so without it each row's first pass waited on memory while
# the passes in cache left it idle (4096 x 1000 and 1024 x 32000: 0.92 and 0.83 of the
# time). Rows of 128256 classes gained nothing (1.01-1.05): the bound is that
# measurement (see the measurement log).
SPAN = 256
PREFETCH_ROW_BYTES = 1 << 18


@inline
def _stream_gradient(exps, target, scale, capped_row, logits, cap, inv_cap, label,
                     label_value):
    """target = exps * scale, times softcap's chain rule where ``capped_row`` is not
    empty (``softcap_slope`` of the row's ``logits``, not known to be within +-cap), with
    ``label_value`` at ``label``, by streaming stores as ``_stream_row``: a row's last pass
    and its copy in one (the same bits)."""
    wide_vectors()
    head = lines_head(target)
    lines, rest = target[head:], exps[head:]  # (from 0: LLVM vectorises the loops)
    at = label - head
    if capped_row.size:
        for c in range(head):
            slope = softcap_slope(capped_row[c], logits[c], cap, inv_cap, False)[1]
            target[c] = label_value if c == label else (exps[c] * scale) * slope
        capped, far_logits = capped_row[head:], logits[head:]
        for c in range(lines.size):
            slope = softcap_slope(capped[c], far_logits[c], cap, inv_cap, False)[1]
            store_streaming(lines, c, label_value if c == at else (rest[c] * scale) * slope)
    else:
        for c in range(head):
            target[c] = label_value if c == label else exps[c] * scale
        for c in range(lines.size):
            store_streaming(lines, c, label_value if c == at else rest[c] * scale)


@inline
def softcap_slope(v, x, cap, inv_cap, near):
    """(t, 1 - t^2): softcap's tanh t = v / cap (``capped_tanh``) of the capped logit v of
    logit x, and the chain rule's slope, from t alone in a row ``near`` (every logit within
    +-cap: nothing cancels), else ``sech_squared``, which keeps a saturated logit's slope to
    its last bits where 1 - t^2 cancels."""
    t = capped_tanh(v, cap, inv_cap)
    return t, (tanh_slope(t) if near else sech_squared(x * inv_cap, t))


def _softcap_chain(near):
    """softcap's chain rule on a row's gradient ``g`` and, where not empty, its Hessian
    ``h`` (h slope^2 - g 2 t slope / cap, from g before its own), for rows ``near`` (every
    logit within +-cap) or not (``softcap_slope``): two functions, a closure constant
    each, where a select between the two slopes took the far one's exp in every row
    (grad_and_hess 1.45x slower within the cap)."""

    @inline
    def chain(g, h, capped_row, logits, cap, inv_cap):
        wide_vectors()
        two_inv_cap = inv_cap + inv_cap
        if h.size:
            for c in range(g.size):
                t, slope = softcap_slope(capped_row[c], logits[c], cap, inv_cap, near)
                h[c] = h[c] * (slope * slope) - g[c] * (two_inv_cap * t * slope)
        for c in range(g.size):
            g[c] = g[c] * softcap_slope(capped_row[c], logits[c], cap, inv_cap, near)[1]

    return chain


_softcap_chain_near, _softcap_chain_far = _softcap_chain(True), _softcap_chain(False)


@inline
def _stream_row(source, target):
    """target = source, by streaming stores from target's first cache line on (plain
    stores before it), in the CPU's widest vectors."""
    wide_vectors()
    copy_streaming(source, target)


@inline
def _exps_normal(xr, top, g, k, upcoming):
    """g = exp(xr - top) for a row whose exps are all normal (``NORMAL_REACH``), the lines
    of ``upcoming`` (the next row, or an empty one) prefetched span by span (``SPAN``)."""
    wide_vectors()
    for start in range(0, xr.size, SPAN):
        stop = min(xr.size, start + SPAN)
        prefetch_lines(upcoming, start, stop)
        gs, xs = g[start:stop], xr[start:stop]  # (from 0: LLVM vectorises the loop)
        for c in range(stop - start):
            gs[c] = fast_exp_normal(xs[c] - top, k)


@inline
def _capped_exps(xr, cap, inv_cap, g, capped_row, near_k, tanh_k, exp_k, upcoming):
    """capped_row = v = cap tanh(xr / cap) and g = exp(v - cap), ``upcoming`` prefetched
    as in ``_exps_normal``. First as if every logit were within +-cap
    (``softcap_near_zero``, a polynomial); a row with one beyond (or a NaN), which the
    largest reach's bits tell (``order_bits``), is done again with ``fast_tanh``. Returns
    whether every logit was within +-cap (``softcap_slope``'s ``near``)."""
    wide_vectors()
    reach = order_bits(xr.dtype.type(0.0))
    for start in range(0, xr.size, SPAN):
        stop = min(xr.size, start + SPAN)
        prefetch_lines(upcoming, start, stop)
        gs, xs, vs = g[start:stop], xr[start:stop], capped_row[start:stop]
        for c in range(stop - start):
            v, z = softcap_near_zero(xs[c], cap, near_k)
            reach = max(reach, order_bits(z))  # (z = x^2 >= +0, or a NaN)
            vs[c] = v
            gs[c] = fast_exp_normal(v - cap, exp_k)  # in [exp(-80), 1]
    if reach <= order_bits(near_k[2]):
        return True
    for c in range(xr.size):  # (not all within +-cap, or a NaN)
        v = cap * fast_tanh(xr[c] * inv_cap, tanh_k)
        capped_row[c] = v
        g[c] = fast_exp_normal(v - cap, exp_k)
    return False


@inline
def _capped_exps_folded(xr, cap, inv_cap, exps, out, near_k, tanh_k, exp_k, upcoming, ref):
    """The capped row's exps, and the same with softcap's chain rule folded in, for a row
    with a gradient and no Hessian: exps = e = exp(v - cap) and out = e (1 - t^2), v = cap
    t, t = tanh(xr / cap), in one pass. The gradient's pass is then plain cross-entropy's
    (out times a scale), with no row of v written and read again for the chain rule (see
    the measurement log). Computed as ``_capped_exps`` computes them; returns v at class
    ``ref``, by the same formulas."""
    wide_vectors()
    reach = order_bits(xr.dtype.type(0.0))  # (the reach's bits: see ``order_bits``)
    for start in range(0, xr.size, SPAN):
        stop = min(xr.size, start + SPAN)
        prefetch_lines(upcoming, start, stop)
        es, outs, xs = exps[start:stop], out[start:stop], xr[start:stop]
        for c in range(stop - start):  # (from 0: LLVM vectorises the loop)
            v, z = softcap_near_zero(xs[c], cap, near_k)
            reach = max(reach, order_bits(z))  # (z = x^2 >= +0, or a NaN)
            e = fast_exp_normal(v - cap, exp_k)  # in [exp(-80), 1]
            es[c] = e
            outs[c] = e * tanh_slope(v * inv_cap)
    if reach <= order_bits(near_k[2]):
        return softcap_near_zero(xr[ref], cap, near_k)[0]
    for c in range(xr.size):  # (not all within +-cap, or a NaN)
        v = cap * fast_tanh(xr[c] * inv_cap, tanh_k)
        e = fast_exp_normal(v - cap, exp_k)
        exps[c] = e
        out[c] = e * softcap_slope(v, xr[c], cap, inv_cap, False)[1]
    return cap * fast_tanh(xr[ref] * inv_cap, tanh_k)
