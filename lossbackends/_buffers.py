"""Host gradient buffers the caller has let go, handed back instead of fresh memory.

Why: a call without ``out=`` needs a new gradient each time. On Linux a large NumPy array
(over glibc's mmap threshold, 32 MiB at most) is fresh ``mmap`` memory, and the kernel
pays a page fault and the OS's zeroing of every page the first time it writes the
gradient, then ``munmap`` when the caller drops it: measured on the 2-core development
machine, MSE ``value_and_grad`` at n = 1e7 (float32) took 1.1-1.9x the ``out=`` call (1.9x
with NumPy's huge-page ``madvise`` off), BCE with logits 1.4x, and a bare
``np.empty(10**7, np.float32).fill(0)`` as long as the whole ``out=`` call. First-touching
the pages in the parallel kernel is what the kernel already does (both threads write the
gradient), and a process-wide ``mallopt`` would change every other allocation of the
user's process; so the library keeps the few large gradients it returned and hands one
back once nothing but this cache references it (``sys.getrefcount``): its pages are
already mapped, and the call costs what ``out=`` costs.

What is held, and when memory is reused:

- only NumPy gradients of at least ``MIN_BYTES`` (1 MiB; below that malloc's own free lists
  already reuse memory, and the small-call cost stays untouched: callers check the size
  first);
- at most ``PER_SIZE`` (8) buffers of one size class: a loop ``value, grad =
  loss.value_and_grad(...)`` needs two (the previous gradient is still bound while the
  next call runs), a step that keeps more of one size into the next as many as it holds
  at once (``grad_and_hess`` and a ``value_and_grad`` of the same predictions: five;
  three losses' results: six). With four kept, those took fresh memory every call (three
  losses at n = 1e7, float32, Numba: the default call at 50 % of ``out=``'s speed; 98 %
  with eight). A class is a byte size rounded up to one of eight per power of two
  (``size_class``: at most an eighth more), so that the gradients of a loop over batches
  or sequences of varying lengths share a few buffers instead of each size keeping its
  own (200 calls of random sizes from 1.2 to 7.6 MB, nothing kept by the caller, held 0.9
  GB before, 0.1 GB now). At most ``limit`` bytes in all (1 GiB by default;
  ``LOSSBACKENDS_HOST_CACHE_BYTES`` sets it at import, ``4e9``, ``4GB``, ``4GiB`` or
  ``inf``, and ``0`` turns the cache off); the least recently used sizes make room for
  new ones;
- every array of ``MIN_BYTES`` or more starts at a multiple of ``ALIGNMENT`` (64) bytes,
  a cache line, whether from the cache or not: the Numba kernels write a gradient of 64
  MiB or more by streaming stores in their loop only where it starts one (NumPy's own
  start 16 bytes past one); and, given the input it is computed from (``near``), at the
  line at or before that input's place in its 4 KiB page. A CPU takes a load for one that
  may depend on an earlier store when their addresses agree in the low 12 bits ("4K
  aliasing"), and a gradient starting 48 to 128 bytes past the inputs' place in the page
  (a line-aligned start after NumPy's 16 bytes) has each vector loop's loads of the next
  elements wait on its last stores: the default call then took 1.07-1.14x the time of an
  ``out=`` starting where the inputs do (log_cosh and kl_div ``value_and_grad`` at n = 1e7
  and 1e8, float32, two threads, 2026-12-04, AMD EPYC);
- a buffer is handed back only when its reference count shows that this cache alone holds
  it: every array the user got from it, any view, slice, ``np.asarray`` of it, memoryview,
  DLPack capsule, ``torch.from_numpy`` tensor or container holding one keeps a reference to
  the buffer, so nothing a user can still reach is ever overwritten. The check and the
  handing out happen under one lock, so two threads never get the same buffer. The count
  a free buffer reads is measured at import by the same function that checks it
  (``_unreferenced_count``: interpreters read it differently); where none tells a free
  buffer from a held one (a free-threaded Python, whose counts are not exact; no
  ``sys.getrefcount``) the cache is off.

``empty_cache()`` drops every buffer this cache holds (memory the user still uses stays
theirs). CuPy arrays never come here: CuPy's memory pool does this on the GPU.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
import threading
import warnings
from collections import OrderedDict

import numpy as np

MIN_BYTES = 1 << 20
# the cheap pre-check callers make on the element count: 1 MiB of float64 (the widest dtype)
MIN_ITEMS = MIN_BYTES // 8
PER_SIZE = 8
# large gradients start a cache line (NumPy's start 16 bytes past one): the Numba kernels
# write those of 64 MiB and more by streaming stores, which need it
ALIGNMENT = 64
PAGE = 4096  # the low address bits a CPU compares between loads and earlier stores
ENV_VAR = "LOSSBACKENDS_HOST_CACHE_BYTES"


# the units ``LOSSBACKENDS_HOST_CACHE_BYTES`` takes after its number (any case): "4e9",
# "4 GB", "1GiB", "512MiB"; "inf" for no limit
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}


def _limit_from_env() -> int:
    text = os.environ.get(ENV_VAR, "").strip()
    if not text:
        return 1 << 30
    number = text.rstrip("BbKkMmGgTtIi ")
    unit = _UNITS.get(text[len(number):].strip().lower())
    try:
        limit = float(number) * unit if unit is not None else math.nan
    except ValueError:
        limit = math.nan
    if math.isnan(limit):  # warned, not raised: import must not fail on it
        warnings.warn(f"{ENV_VAR}={text!r} is not a number of bytes; the default (1 GiB) "
                      "applies. Set it to a number of bytes (4e9, 4GB, 1GiB; inf for no "
                      "limit), or 0 to turn the cache off.", RuntimeWarning, stacklevel=2)
        return 1 << 30
    if limit < 0:
        warnings.warn(f"{ENV_VAR}={text!r} is negative; the cache is off, as with 0. Set it "
                      "to a number of bytes, or 0 to turn the cache off.",
                      RuntimeWarning, stacklevel=2)
        return 0
    return int(min(limit, sys.maxsize))


def _first_free(bucket: list, unreferenced: int):
    """The first buffer of ``bucket`` whose reference count is ``unreferenced`` (what a
    buffer referenced by the bucket alone reads in this loop), or None."""
    getrefcount = sys.getrefcount
    for buf in bucket:
        if getrefcount(buf) == unreferenced:
            return buf
    return None


def _unreferenced_count() -> int | None:
    """What ``_first_free`` reads for a buffer that only its bucket references, measured
    by that function itself (3 on CPython 3.10-3.13: the list, the loop variable and
    getrefcount's argument; CPython 3.14 may borrow the loop variable's reference and read
    one less), or None where no count tells a free buffer from one held once more (no
    ``sys.getrefcount``, as on PyPy; counts that are not exact, as without the GIL): the
    cache is then off, so a buffer the user still holds can never be handed out."""
    if not getattr(sys, "_is_gil_enabled", lambda: True)() or not hasattr(sys, "getrefcount"):
        return None
    free = [np.empty(1, np.uint8)]
    held = [np.empty(1, np.uint8)]
    user = held[0][:]  # a view: one more reference to the buffer, as a user's array holds
    found = [count for count in range(1, 8) if _first_free(free, count) is not None]
    if len(found) != 1 or _first_free(held, found[0]) is not None:
        return None
    del user
    return found[0]


_UNREFERENCED = _unreferenced_count()
limit = _limit_from_env() if _UNREFERENCED is not None else 0

_lock = threading.Lock()
# whether this thread is in the cache: a call made from a signal handler or a finalizer
# (``__del__``, a garbage collection inside np.empty) while its thread holds the lock takes
# fresh memory instead of waiting on that lock forever
_inside = threading.local()
# size class -> buffers (1-D uint8 arrays owning their memory), least recently used first
_buckets: OrderedDict[int, list[np.ndarray]] = OrderedDict()
_held = 0  # bytes of every buffer in _buckets, in use by the caller or not



def _reset_after_fork() -> None:
    global _lock
    _lock = threading.Lock()  # a lock held by another thread at fork would never be released


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def empty(shape: tuple, dtype: np.dtype, nbytes: int, near=None) -> np.ndarray:
    """An uninitialised C-contiguous array, like ``np.empty(shape, dtype)``, whose memory
    may be a buffer this cache handed out before and nothing references any more; from
    ``MIN_BYTES`` on it starts at a multiple of ``ALIGNMENT`` bytes, the one at or before
    the place in its ``PAGE`` of ``near`` (the NumPy array or torch tensor the kernel
    reads beside it; None: a page's start). Each buffer is ``PAGE`` bytes longer than
    ``nbytes``' size class, and counted so."""
    if nbytes < MIN_BYTES:
        return np.empty(shape, dtype)
    # (the address is read only here: a tenth of a small call's time, ``ctypes.data``)
    address = 0 if near is None else (_data_address(near) if isinstance(near, np.ndarray)
                                      else near.data_ptr())
    if size_class(nbytes) + PAGE <= limit:
        with _Locked() as locked:
            if locked:
                return _take(shape, dtype, nbytes, address)
    return _placed(shape, dtype, np.empty(nbytes + PAGE, np.uint8), address)


class _Locked:
    """``with _Locked() as locked``: the cache's lock, held, and ``locked`` True; or, where
    this thread is already inside the cache (a signal handler or a finalizer, run while it
    held the lock), ``locked`` False at once instead of a wait forever on its own lock.
    (A class, not ``contextlib.contextmanager``'s generator: about 1 us less per call.)"""

    __slots__ = ("locked",)

    def __enter__(self) -> bool:
        self.locked = not getattr(_inside, "cache", False)
        if self.locked:
            _inside.cache = True  # (before the lock: a signal between the two finds it set)
            try:
                _lock.acquire()
            except BaseException:
                _inside.cache = False
                raise
        return self.locked

    def __exit__(self, *_) -> None:
        if self.locked:
            _lock.release()
            _inside.cache = False


def _placed(shape, dtype, buf, address):
    """The array of ``shape`` in ``buf`` (``PAGE`` bytes longer than it), from the
    ``ALIGNMENT``-byte boundary whose place in a page is ``address``'s, rounded down: its
    base is ``buf`` itself (a slice of buf would be collapsed to buf, and the reference
    count would not see it)."""
    start = (address % PAGE // ALIGNMENT * ALIGNMENT
             - _data_address(buf)) % PAGE
    return np.ndarray(shape, dtype, buf, start)


def _data_address(a: np.ndarray) -> int:
    """``a.ctypes.data``, for a quarter of its time where ``a`` is writeable: a ctypes
    object over its buffer reads the pointer in 0.25 us, where ``a.ctypes`` and
    ``__array_interface__`` build objects of their own (1 us each; at 1 MiB, where a call
    takes 20-50 us, the two addresses a gradient's placing read took 2 us)."""
    if a.flags.writeable:
        try:
            return ctypes.addressof(ctypes.c_char.from_buffer(a))
        except (TypeError, ValueError, BufferError):  # not C-contiguous, empty, or unexported
            pass
    return a.ctypes.data


def size_class(nbytes: int) -> int:
    """``nbytes`` rounded up to a multiple of an eighth of the power of two at or below it:
    at most an eighth more, eight classes per power of two."""
    shift = max(nbytes.bit_length() - 4, 0)
    return -(-nbytes >> shift) << shift


def _take(shape, dtype, nbytes, address):
    global _held
    nbytes = size_class(nbytes)
    size = nbytes + PAGE  # the buffer's bytes
    bucket = _buckets.get(nbytes)
    if bucket is None:
        bucket = _buckets[nbytes] = []
    else:
        _buckets.move_to_end(nbytes)
        buf = _first_free(bucket, _UNREFERENCED)
        if buf is not None:  # (the array made here references buf before the lock goes)
            # writeable again: a user may have cleared the flag through ``grad.base`` before
            # dropping the gradient, and a new gradient is writeable (it may be an ``out=``)
            buf.flags.writeable = True
            return _placed(shape, dtype, buf, address)
    # None free: a new buffer. Make room by forgetting other sizes, least recently used
    # first, then this size's oldest buffers (still in use: the caller keeps them).
    while _held + size > limit or len(bucket) >= PER_SIZE:
        if len(_buckets) > 1 and len(bucket) < PER_SIZE:
            oldest = next(iter(_buckets))
            _held -= (oldest + PAGE) * len(_buckets.pop(oldest))
        else:
            bucket.pop(0)
            _held -= size
    buf = np.empty(size, np.uint8)
    bucket.append(buf)
    _held += size
    return _placed(shape, dtype, buf, address)


def empty_cache() -> int:
    """Drop every host gradient buffer lossbackends keeps for reuse; return their bytes,
    those of gradients you still hold included (they stay valid, freed when you drop them):
    an upper bound on the memory this call frees. Each buffer is its gradient's bytes
    rounded up to one of eight sizes per power of two (at most an eighth more: nearby sizes
    share buffers), and 4 KiB longer (room to place it, see ``lossbackends._buffers``).

    A call without ``out=`` returns gradients of 1 MiB or more in memory that lossbackends
    keeps (up to 1 GiB by default, environment variable ``LOSSBACKENDS_HOST_CACHE_BYTES``:
    bytes, ``4GB`` or ``4GiB``, ``inf`` for no limit, ``0`` for none), so that the next
    call reuses it once you have dropped every reference to the gradient, instead of
    paying the operating system's page faults on fresh memory.
    Arrays you still hold are never reused and stay valid after this call; the memory of
    those you dropped goes back to the allocator (and, for large ones, to the OS). A
    gradient from the cache is a view of its buffer (``grad.base``;
    ``grad.flags.owndata`` is False, so ``grad.resize`` refuses: copy it first); a weak
    reference to ``grad.base`` may see the buffer handed to a later call once ``grad`` is
    dropped.
    A loop ``value, grad = loss.value_and_grad(...)`` alternates two buffers of one size,
    so gradients over half the limit (float64 at n = 1e8 with the default) are allocated
    afresh each call: raise the limit, or pass ``out=``.

    >>> import numpy as np
    >>> import lossbackends as lb
    >>> _ = lb.empty_cache()  # start from an empty cache
    >>> y, p = np.zeros(1 << 20, np.float32), np.ones(1 << 20, np.float32)
    >>> grad = lb.mse.grad(y, p, backend="numpy")  # 4 MiB, kept for the next call
    >>> del grad
    >>> lb.empty_cache()  # the bytes it held: the 4 MiB gradient's buffer
    4198400
    >>> lb.empty_cache()
    0
    >>> grad = lb.mse.grad(y, p, backend="numpy")
    >>> lb.empty_cache()  # counted, though grad keeps its memory
    4198400

    Called from a signal handler or finalizer while its own thread is inside the cache,
    it frees nothing and returns 0 (and a loss called there takes fresh memory).
    """
    global _held
    with _Locked() as locked:
        if not locked:  # (re-entered: nothing freed, rather than a deadlock)
            return 0
        held = _held
        _buckets.clear()
        _held = 0
    return held


def cached_bytes() -> int:
    """Bytes of the buffers the cache references (some may be in use by the caller)."""
    return _held
