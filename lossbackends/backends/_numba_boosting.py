"""The boosting objectives' finishing pass on the host, in Numba: a library's conventions
(its scale of the gradient and of the Hessian, its Hessian floor, sample weights where the
loss takes none) applied to ``grad_and_hess``'s results in one pass over them, in place,
instead of one NumPy pass per operation; the labels of the losses that take probabilities
are checked in the same pass. (An elementwise loss that no library scales takes its floor
in the kernel's own pass instead, ``_boosting._floored``: no pass here.) Imported by
``lossbackends._boosting`` on first use only."""

from __future__ import annotations

import numba
import numpy as np

from . import _threads
from ._numba_common import CHUNKS, PARALLEL_MIN_ELEMENTS, _jit, aligned_stack, array_type
from ._numba_elementwise import weighted_floor
from ._numba_intrinsics import inline
from ._threads import claim


@inline
def _element(grad, hess, i, g_scale, h_scale, bound, fixed, constant, negative):
    grad[i] = grad[i] * g_scale
    if constant:
        hess[i] = fixed
    else:  # h weighted, bound = floor w
        hess[i] = weighted_floor(hess[i] * h_scale, bound, negative)


def _finish(grad, hess, weight, labels, columns, grad_scale, hess_scale, floor, weigh,
            constant, chunks, worsts, shared):
    aligned_stack()
    dtype = grad.dtype.type
    g_scale, h_scale = dtype(grad_scale), dtype(hess_scale)
    low, fixed, is_constant = dtype(floor), dtype(constant), constant > 0
    # The labels' largest bit pattern, read as unsigned integers: a float is in [0, 1]
    # exactly when its bits are at most 1.0's (a set sign bit, NaN and anything above 1
    # are larger; -0.0 too, which the caller tells apart). An integer max: one vector
    # instruction per 8 labels, exact in any order (counting them cost three times more)
    check = labels.size > 0
    result = labels.dtype.type(0)
    rows = hess.size // columns if columns else 0
    size = (rows + chunks - 1) // chunks
    chunk = claim(shared, -1)
    while chunk < chunks:  # chunks of rows (of ``columns`` elements)
        first_row, last_row = min(rows, chunk * size), min(rows, chunk * size + size)
        start, stop = first_row * columns, last_row * columns
        # slices, so indices start at 0: LLVM then sees no negative-index wraparound and
        # vectorises the loops (indices from ``start`` took 6x as long)
        gs, hs = grad[start:stop], hess[start:stop]
        ls = labels[start:stop] if check else labels
        worst = labels.dtype.type(0)
        if weight.size == 0:  # one scale for every element: plain loops, vectorised
            if grad_scale != 1.0:  # (a scale of 1 leaves the gradient unread)
                for i in range(gs.size):
                    gs[i] = gs[i] * g_scale
            for i in range(hs.size):
                if is_constant:
                    hs[i] = fixed
                else:
                    h = hs[i] * h_scale
                    hs[i] = weighted_floor(h, low, False)
                if check:
                    worst = max(worst, ls[i])
        elif columns == 1:  # a weight per element (binary, regression): a flat loop,
            ws = weight[start:stop]  # vectorised (the row loop took 10x as long here)
            for i in range(hs.size):
                w = dtype(ws[i])
                gw = g_scale * w if weigh else g_scale
                hw = h_scale * w if weigh else h_scale
                _element(gs, hs, i, gw, hw, low * w, fixed * w, is_constant, w < 0)
                if check:
                    worst = max(worst, ls[i])
        else:
            ws = weight[first_row:last_row]
            for row in range(ws.size):
                w = dtype(ws[row])
                gw, hw = (g_scale * w, h_scale * w) if weigh else (g_scale, h_scale)
                # the row's slices, from 0 as above (indices from row * columns took
                # 1.2-1.4x as long for the whole objective at 10 and 100 classes)
                at = row * columns
                g_row, h_row = gs[at:at + columns], hs[at:at + columns]
                l_row = ls[at:at + columns] if check else ls
                for i in range(columns):
                    _element(g_row, h_row, i, gw, hw, low * w, fixed * w, is_constant, w < 0)
                    if check:
                        worst = max(worst, l_row[i])
        if shared is None:
            result = max(result, worst)
        else:  # shared: the caller takes the max of the chunks'
            worsts[chunk] = worst
        chunk = claim(shared, chunk)
    return result


# one thread below PARALLEL_MIN_ELEMENTS, shared among the threads above (``_threads``):
# the pass took a quarter of a binary logistic objective's call at n = 1e6 on one
_FINISH = _jit(_finish, "boosting_finish")
# (one thread: the largest label is returned, not written; writeable, as a shared call's)
_NO_WORSTS = {np.dtype(bits): np.empty(0, bits) for bits in (np.uint32, np.uint64)}


def finish(grad, hess, weight, labels, columns, grad_scale, hess_scale, floor, weigh,
           constant):
    """In place, for element i of row r = i // columns, w = weight[r] (1 where ``weight``
    is empty): grad *= grad_scale (and w with ``weigh``); hess = constant w where
    ``constant`` > 0, else max(hess hess_scale, floor) w (``hess`` already weighted without
    ``weigh``: the smaller of it and floor w for a negative w), NaN kept.
    ``grad`` and ``hess`` are flat C-contiguous arrays of one float dtype. ``labels`` (one
    per element, or empty: no check) are the labels' bits, the unsigned integer view of
    that dtype: the largest is returned (0 without labels); all are in [0, 1] where it is
    at most 1.0's bits."""
    code = _CODE.get(grad.dtype.num)
    if code is None:
        code = _CODE[grad.dtype.num] = _FINISH.compile(_types(grad.dtype, labels.dtype))
    args = (grad, hess, np.ascontiguousarray(weight), labels, columns, grad_scale, hess_scale,
            floor, weigh, constant)
    if hess.size < PARALLEL_MIN_ELEMENTS:
        return code(*args, 1, _NO_WORSTS[labels.dtype], None)
    worsts = np.zeros(CHUNKS, labels.dtype)
    _threads.share(code, (*args, CHUNKS, worsts), CHUNKS)
    return int(worsts.max())  # (a Python int, as the one-thread call returns)


# the dtype's number -> the pass's machine code, called directly: the dispatcher's typing
# of its thirteen arguments held the GIL for a share's thread while the caller typed them
# (about 10 us each)
_CODE: dict[int, object] = {}


def _types(dtype, bits) -> tuple:
    real, written = array_type(dtype, 1), array_type(dtype, 1, writes=True)
    return (written, written, real, array_type(bits, 1), numba.int64, numba.float64,
            numba.float64, numba.float64, numba.boolean, numba.float64, numba.int64,
            array_type(bits, 1, writes=True), _threads.SHARED)
