"""How an elementwise loss's mathematics is declared for the Numba kernels
(``loss_math``: its constants and the choices its kernel makes), the sizes those choices
turn on, and the small helpers every loss's mathematics shares. The losses themselves are
``_numba_losses``'s and ``_numba_losses_by_option``'s.
"""
from __future__ import annotations

import numpy as np

from ._numba_intrinsics import inline
from ._numba_math import ONE, ZERO

_f32 = np.float32
TWO = _f32(2.0)  # (the losses' constants, float32: see ``_numba_losses``)
FOUR = _f32(4.0)
LN2 = _f32(np.log(2.0))

# ``loss_math``'s ``sum_in_loop_from``: always, or from the size where a thread's share
# of y, p and the gradient outgrows its L2 (2^19 elements, 6 MB of float32 between two
# cores of 2 MB of L2 each; a multiple of ``CHUNKS``). ``IN_DRAM``: where an input
# streams from DRAM (2^21 elements, 25 MB: beyond the caches of the cores we run on, as
# far as a call's time shows), where the optimistic kernels prefetch.
ALWAYS, BEYOND_L2, IN_DRAM = 0, 1 << 19, 1 << 21


def loss_math(*constants, hard_labels=None, hard_gradient=False, sum_in_loop_from=None,
              wide_vectors=True, stream_with_value=True, limits=None, gradient_checked=False):
    """Compiles a loss's mathematics ``(y, p, param, pos, k)`` inline, and records in its
    ``constants`` the constant tuples of the ``fast_*`` functions it calls (``EXP32_WIDE``,
    ``EXP32_LOW``, ``LOG32``, ``LOG1P32``), in the order it reads them from ``k``, or None for none. The
    elementwise kernel takes ``held(constants)`` once before its loops and passes it as
    ``k`` (see ``_numba_intrinsics.held``: vectorised exp and log then keep their constants in
    registers, or on the stack, instead of fetching each again on every iteration).

    ``hard_labels``: the same loss for labels of 0 and 1 only, cheaper (compiled by this
    decorator too, with the same constants), which the kernel runs on blocks whose labels
    are all 0 or 1 (see ``_numba_elementwise._elementwise_kernel``), or None.
    ``hard_gradient``: whether its gradient is cheaper too (else only the kernels that
    compute the value take it).
    ``sum_in_loop_from``: the least number of elements from which the kernel adds the
    losses in float64 in the loop that computes them (``ALWAYS``, ``BEYOND_L2``), instead of
    writing a block of them to L1 and summing it after (see
    ``_numba_elementwise._elementwise_block``); None: never. The float64 sum caps LLVM's
    vectors at 4 lanes, which only losses of a few operations bear: MSE's value_and_grad
    then took 0.21 instead of 0.33 ns per element in L2 and 0.38 instead of 0.54 at 1e7
    (two threads), MAE's 0.29 and 0.42 instead of 0.31 and 0.52. Huber, smooth L1,
    (squared) hinge and pinball took 1.3-1.8x as long in L2 that way, but 0.56-0.98 of the
    time from 3e6 elements on, where the second pass over each block kept them at 57-85 %
    of the triad (2026-12-03, Xeon); the losses with an exp or a log took 3-6x as long
    (not vectorised at all).
    ``wide_vectors``: whether the kernel's loop over a block runs the CPU's widest vectors
    (``_numba_common.wide_vectors``): 512 bits instead of LLVM's 256 on AVX-512 CPUs.
    The losses with an exp or a log, MSE and MAE took 0.66-0.94 of the time with them in
    cache (n = 1e5, one thread) and 0.79-0.99 at 1e7; the piecewise losses of a few
    operations (hinge, squared hinge, huber, smooth L1, pinball) 1.04-1.19x as long at 1e4
    to 1e6: their block's loop keeps 256 (the block's sum, ``_sum_span``, is wide for all),
    except in the kernels that sum in their loop (from ``BEYOND_L2``), which take
    ``wide_form``, the same function compiled with ``wide_vectors``: there 512 took
    0.59-0.98 of the time (3e6 to 1e8, two threads), and the wide kernel summing in its
    loop overtook the block kernel from about 4e5 elements (0.76-0.85 of the time at 7e5
    to 1.5e6; at 2.7e5 to 3.3e5 hinge and pinball 1.05-1.16x as long): hence
    ``BEYOND_L2`` (2026-12-04, two threads).
    ``stream_with_value``: whether the kernel that sums the value in its loop may write
    the gradient by streaming stores, as the gradient-only kernel does
    (``_numba_common.STREAM_FROM_BYTES``).
    ``limits``: for a loss whose formula gives NaN where the value has a limit (0 inf,
    inf - inf) or where it is not computed (kl_div's log of 0, ``fast_log_normal``), its
    twin that takes those limits (compiled by this decorator too, with the same
    constants, the same gradient and Hessian), which the kernel runs from the first block
    whose sum came out NaN to the end of the thread's chunks
    (``_numba_elementwise._elementwise_kernel``): a compare per block instead of selects per
    element (poisson_nll's value_and_grad took 0.48 instead of 0.57 ns per element in
    cache, one thread). The twin's value must equal the loss's own wherever that is not
    NaN (up to the sign of a zero, which the compiler's ``nsz`` leaves open anyway), and
    the value be summed from its block (``sum_in_loop_from`` None).
    ``gradient_checked``: whether the gradient and Hessian too are right only where the
    value is not NaN (an exp exact only within a range, the value NaN outside it): the
    kernels that do not sum the value, which could not tell, then run the ``limits`` twin."""
    assert limits is None or sum_in_loop_from is None, "limits need the block's sum"
    assert not gradient_checked or limits is not None, "a checked gradient needs a twin"
    assert limits is None or limits.constants == (constants or None), "one k for both"

    def compile_(function, wide=wide_vectors):
        compiled = inline(function)
        compiled.constants = constants or None
        # (the wide twin's form for hard labels is that form's wide twin)
        hard = hard_labels.wide_form if wide and hard_labels is not None else hard_labels
        compiled.hard_labels = hard
        compiled.hard_gradient = hard_gradient
        compiled.sum_in_loop_from = sum_in_loop_from
        compiled.wide_vectors = wide
        compiled.stream_with_value = stream_with_value
        compiled.limits = limits
        compiled.gradient_checked = gradient_checked
        # (a second dispatcher of the same function: ``wide_vectors_for`` reads the flag
        # from the function's type, so the two compile apart)
        compiled.wide_form = compiled if wide else compile_(function, True)
        if hard is not None:
            assert hard.constants == compiled.constants, "one k for both forms"
            assert hard.wide_vectors == wide, "one vector width for both"
        return compiled

    return compile_


@inline
def _zero_or_nan(e):
    """0, or NaN where e is NaN: the Hessian of a piecewise-linear loss, NaN where its
    gradient is."""
    return ZERO if e == e else e


@inline
def _sign(e):
    """sign(e): +0 at +-0 (NumPy's and PyTorch's), NaN kept."""
    return ONE if e > ZERO else (-ONE if e < ZERO else _zero_or_nan(e))
