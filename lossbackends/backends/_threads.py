"""The Numba backend's threads: a large input's fixed chunks shared out among a few Python
threads, each calling the same serial kernel's machine code (compiled ``nogil``).

Numba's own ``parallel=True`` built a second version of every kernel (2-10 s of compiling
each, against about 1 s for the serial one: its parfor passes), and each of its threading
layers had a catch: ``workqueue`` aborts on concurrent calls (numba#8563), GNU OpenMP's
killed forked children and spun under load, TBB is one more binary dependency.

The protocol: ``shared``, a float64 array the threads of one call share, holds the next
chunk to take and the count of chunks done (its first two elements, int64 counters in
float64s' places), then each chunk's partial result. The calling thread and the workers
all run the kernel; each takes the next chunk (an atomic add) until none is left, writes
the chunk's partial result into its place and counts it done when it takes the next. When
the calling thread runs out of chunks, it cancels each worker that has not started yet
and, without the GIL, waits until every chunk is done (each running worker has at most
one left). So a worker that wakes late (a sleeping thread took tens of microseconds to
wake on the 2-core virtual machines we measure on) just takes fewer chunks or none, and
the call never waits for a thread to wake: not even for the GIL a worker needs to return
from the kernel, which the caller held when it returned first (waiting for that return
cost 30-60 us a call at n = 3e5, where MSE on two threads took longer than on one). A
worker that returns after the call keeps its reference to the caller's arrays until then,
which only holds the gradient cache back (it reuses a buffer only it references); it
writes nothing more: every chunk is done. With ``shared`` None a kernel
runs every chunk in order on its own thread (one argument for both: Numba unboxes every
array argument of a call into a record of its own, about 550 instructions, 80 ns here).
Workers read a counter of posted calls for a while before they sleep (see ``_POSTED``),
and run on the CPUs other than the calling thread's (``_placement``).

The number of threads is Numba's: ``NUMBA_NUM_THREADS`` (default: the CPUs), read on each
shared call.
"""

from __future__ import annotations

import os
import queue
import threading
import time

import numba
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from . import _placement
from ._numba_intrinsics import inline

# the kernels' last argument: the chunks' counter and partial results (see above)
SHARED = types.Optional(numba.float64[::1])


def _counter(context, builder, signature, args):
    """A pointer to ``counters[index]`` as an int64 (the intrinsics' arguments): an int64
    array's element, or a float64 array's (``shared``'s first) in the same place."""
    array_type, array = signature.args[0], args[0]
    if isinstance(array_type, types.Optional):  # (never None where the kernels call it)
        array = context.cast(builder, array, array_type, array_type.type)
        array_type = array_type.type
    array = context.make_array(array_type)(context, builder, array)
    pointer = cgutils.get_item_pointer(context, builder, array_type, array, [args[1]])
    return builder.bitcast(pointer, context.get_value_type(types.int64).as_pointer())


def _is_counters(counters) -> bool:
    if isinstance(counters, types.Optional):
        counters = counters.type
    return isinstance(counters, types.Array) and counters.dtype in (types.int64, types.float64)


@intrinsic
def _fetch_add(typingctx, counters, index, increment):
    """counters[index] += increment, atomically; returns the value it had."""
    if not _is_counters(counters):
        return None

    def codegen(context, builder, signature, args):
        increment = context.cast(builder, args[2], signature.args[2], types.int64)
        return builder.atomic_rmw("add", _counter(context, builder, signature, args),
                                  increment, "seq_cst")

    return types.int64(counters, types.intp, increment), codegen


@intrinsic
def _compare_exchange(typingctx, counters, index, expected, value):
    """counters[index] = value if it is ``expected``, atomically; returns whether it was."""
    if not _is_counters(counters):
        return None

    def codegen(context, builder, signature, args):
        pair = builder.cmpxchg(_counter(context, builder, signature, args), args[2], args[3],
                               "seq_cst", "seq_cst")
        return builder.extract_value(pair, 1)

    return types.boolean(counters, types.intp, types.int64, types.int64), codegen


@intrinsic
def _load(typingctx, counters, index):
    """counters[index], read atomically (never hoisted out of a waiting loop)."""
    if not _is_counters(counters):
        return None

    def codegen(context, builder, signature, args):
        return builder.load_atomic(_counter(context, builder, signature, args), "seq_cst", 8)

    return types.int64(counters, types.intp), codegen


def _await(counters, index, target, spins, settle):
    """Whether ``counters[index]`` reaches ``target`` within ``spins`` reads (without the
    GIL); once it has, ``settle`` more reads first."""
    for _ in range(spins):
        if _load(counters, index) >= target:
            for _ in range(settle):
                _load(counters, index)
            return True
    return False


# ``shared``'s layout. The calling thread's view of it starts at element 0, the workers'
# at element 1 (``share``): its first element tells a kernel which it is.
_CHUNKS, _TAKEN, _DONE, _RESULTS = 0, 1, 2, 3  # after the view's first element and ``_AT``
_AT = (2, 1)  # where the counters start in the calling thread's view, and in a worker's
_LAST_BITS = 32  # chunks taken from the last: the high half of ``_TAKEN``
_LEFT_TO_CALLER = 2


@inline
def _start_of(shared):
    """Where the counters start in this thread's view of ``shared``."""
    return _AT[1] if shared[0] != 0.0 else _AT[0]


@inline
def claim(shared, previous):
    """The chunk to run after ``previous`` (-1 at first): when the chunks are ``shared``,
    the next one not yet taken (``previous`` is then counted done), the calling thread's
    from the first chunk up, the workers' from the last down, or the count of chunks when
    none is left; else ``previous + 1``. Taken from both ends, each thread's chunks of one
    call are where its chunks of the last call were, and often still in its own L2 (at
    n = 3e5 two threads took chunk after chunk in turn, and the pair ran MSE slower than
    one thread)."""
    if shared is None:
        return previous + 1
    at = _start_of(shared)
    if previous >= 0:
        _fetch_add(shared, at + _DONE, 1)  # after the chunk's writes (sequentially consistent)
    chunks = np.int64(shared[at + _CHUNKS])
    first = at == _AT[0]
    # a worker leaves the last chunks to the calling thread (of a call of 8 or more),
    # so that it is back from the kernel, and has taken the GIL for the moment it needs
    # it, while the caller still runs without it (a worker that came back after the
    # caller slept on the GIL until the caller's next kernel: 60 us here, every call)
    limit = chunks if first else chunks - min(_LEFT_TO_CALLER, chunks // 8)
    while True:
        taken = _load(shared, at + _TAKEN)
        from_first, from_last = taken & ((1 << _LAST_BITS) - 1), taken >> _LAST_BITS
        if from_first + from_last >= limit:
            return chunks
        if _compare_exchange(shared, at + _TAKEN, taken,
                             taken + (1 if first else 1 << _LAST_BITS)):
            return from_first if first else chunks - 1 - from_last


@inline
def record(shared, chunk, total, result):
    """A chunk's sum ``total``: into its place in ``shared`` when the chunks are shared
    (the caller adds them in order), else added to the running ``result`` (the chunks run
    in order); returns the running result."""
    if shared is None:
        return result + total
    shared[_start_of(shared) + _RESULTS + chunk] = total
    return result


def threads() -> int:
    """How many threads a large input is shared among: Numba's ``NUMBA_NUM_THREADS``."""
    return max(1, int(numba.config.NUMBA_NUM_THREADS))


_tasks: queue.SimpleQueue = queue.SimpleQueue()
_workers = 0  # threads started (lazily: none until a large input comes)
_start = threading.Lock()


class _Task:
    """A worker's share of one call, ``code(*args)``. ``started`` is taken by whichever
    comes first: the worker, which runs it, or the caller, which cancels it and drops
    ``args`` (no reference to the caller's arrays outlives its call, not even in the
    queue: the gradient cache reuses a buffer that only it references). ``finished`` is
    released when it has run."""

    __slots__ = ("code", "args", "started", "finished", "error")

    def __init__(self, code, args):
        self.code, self.args, self.error = code, args, None
        self.started, self.finished = threading.Lock(), threading.Lock()
        self.finished.acquire()

    def run(self) -> int:
        """Run it unless cancelled; returns the count of calls posted before it ended."""
        if not self.started.acquire(blocking=False):
            return int(_POSTED_COUNT[0])  # cancelled: the call is over
        try:
            self.code(*self.args)
        except BaseException as exc:  # (an allocation that failed): the caller raises it
            self.error = exc
        self.args = None
        posted = int(_POSTED_COUNT[0])  # (a call posted after this read: its task is queued)
        self.finished.release()
        return posted

    def cancel(self) -> bool:
        """Whether it is cancelled (it had not started; it never will)."""
        if self.args is None:  # cancelled already (asked again after a signal)
            return True
        if self.started.acquire(blocking=False):
            self.args = None
            return True
        return False


# The calls shared so far. A worker that has run its task keeps reading this for a while
# (``_await``: ``_SPINS`` reads, about SPIN_SECONDS) before it sleeps, and once it changes
# waits ``_SETTLE`` reads more (a few us: the caller, holding the GIL, is entering its
# kernel) before it asks for the GIL: a thread asleep, on a lock or on the GIL, took tens
# of microseconds to wake here. The second of two shared calls in a row (a boosting
# objective's grad_and_hess, then its finishing pass) ran on one thread; its finishing pass
# took 0.39-0.52 ms a call (median) at n = 1e6, 0.30-0.34 ms with the wait. The reads are
# counted, and their count is set from their speed on the first shared call
# (``_calibrate``): a fixed 50 000 reads lasted 65 us on one machine and 18 us on another
# (Intel Sapphire Rapids), where the worker then slept between back-to-back calls of MSE
# at n = 3e5 and started 65 us after each was posted (8 us with the wait; the call took
# 111 instead of 135 us). The calling thread waits for the last chunks the same way before
# it sleeps on the workers' locks.
_POSTED = np.zeros(1)  # an int64 in a float64's place, as ``shared``'s counters
_POSTED_COUNT = _POSTED.view(np.int64)
SPIN_SECONDS, SETTLE_SECONDS = 100e-6, 5e-6
_SPINS = _SETTLE = 0  # (set by ``_calibrate``)


def _work() -> None:
    _placement.register()
    while True:
        posted = _tasks.get().run()
        # tasks queued meanwhile first (cancelled ones are dropped at once): a worker that
        # saw two posts as one, then waited for each next post before it took the oldest
        # task, ran every call's task one call late, cancelled, while calls came faster
        # than its watch (the queue grew by hundreds over 40 000 calls at n = 131073)
        if _tasks.qsize():
            continue
        _await_code()(_POSTED, 0, posted + 1, _SPINS, _SETTLE)


_AWAIT: list = []


def _await_code():
    """``_await``'s machine code, compiled (or loaded from the cache) on the first call
    that shares chunks, by the calling thread: a worker never enters Numba's compiler
    (its dispatcher compiles, or loads from the cache, under a process-wide lock, and a
    fork while a worker held it left the child's lock taken for good: the child hung)."""
    if not _AWAIT:
        with _start:  # (once, when several threads make their first shared call at once)
            if not _AWAIT:
                from ._numba_common import _jit

                code = _jit(_await, "_await").compile(
                    (numba.float64[::1], numba.intp, numba.int64, numba.int64, numba.int64))
                _calibrate(code)
                _AWAIT.append(code)
    return _AWAIT[0]


def _calibrate(code) -> None:
    """``_SPINS`` and ``_SETTLE``: how many of ``code``'s reads last ``SPIN_SECONDS`` and
    ``SETTLE_SECONDS``, from the fastest of a few timed waits that never end early."""
    global _SPINS, _SETTLE
    never = np.zeros(1)
    reads, fastest = 20_000, float("inf")
    for _ in range(5):
        start = time.perf_counter()
        code(never, 0, 1, reads, 0)
        fastest = min(fastest, time.perf_counter() - start)
    per_second = min(reads / max(fastest, 1e-9), 1e10)  # (a clock too coarse: bounded)
    _SPINS, _SETTLE = int(per_second * SPIN_SECONDS), int(per_second * SETTLE_SECONDS)


def _ensure_workers(count: int) -> None:
    global _workers
    with _start:
        while _workers < count:
            threading.Thread(target=_work, name=f"lossbackends-{_workers}", daemon=True).start()
            _workers += 1


def wait_until_idle(timeout: float = 60.0) -> None:
    """Returns once every worker is past the tasks queued before this call: each takes
    one task that waits for all of them. A worker frees its kernel's scratch memory as
    the kernel ends, which may come after the call has returned; tests that count
    Numba's allocations and frees call this first."""
    with _start:
        count = _workers
    if count:
        everyone = threading.Barrier(count + 1)
        for _ in range(count):
            _tasks.put(_Task(everyone.wait, ()))
        everyone.wait(timeout=timeout)


def _new_shared(chunks: int) -> np.ndarray:
    """One call's ``shared``, the calling thread's view: its first element 0, then the
    workers' mark (their view starts there), the count of chunks, the counters (0 in
    either type: chunks taken, chunks done), then the chunks' results."""
    shared = np.zeros(_AT[0] + _RESULTS + chunks)
    shared[_AT[0] - _AT[1]], shared[_AT[0] + _CHUNKS] = 1.0, chunks
    return shared


def _workers_view(shared: np.ndarray) -> np.ndarray:
    """The workers' view of ``shared`` (see ``_start_of``)."""
    return shared[_AT[0] - _AT[1]:]


def share(code, args: tuple, chunks: int) -> tuple:
    """``code(*args, shared)`` on the calling thread and on ``threads() - 1`` workers at
    once, sharing ``chunks`` chunks (see the module's protocol); returns the calling
    thread's result and the chunks' partial results (to be added in order), once every
    chunk is done."""
    count = min(threads(), chunks)
    _await_code()  # compiled here, never by a worker (see there)
    _ensure_workers(count - 1)
    shared = _new_shared(chunks)
    tasks = [_Task(code, (*args, _workers_view(shared))) for _ in range(count - 1)]
    _placement.enter()
    try:
        for task in tasks:
            _tasks.put(task)
        # posted last: a worker that sees it finds its task queued, and the caller about
        # to release the GIL in its kernel
        _POSTED_COUNT[0] += 1
        result = code(*args, shared)
    finally:
        try:
            _end(tasks, shared, chunks)
        finally:
            _placement.leave()
    if shared.view(np.int64)[_AT[0] + _DONE] < chunks:  # a worker failed (else none did)
        for task in tasks:
            if task.error is not None:
                raise task.error
    return result, shared[_AT[0] + _RESULTS:]


def _end(tasks: list, shared: np.ndarray, chunks: int) -> None:
    """Cancel the tasks that have not started and wait until every chunk is done: awake
    first, without the GIL (each running worker has at most one chunk left), then, if that
    takes long or cannot happen (a failed kernel), until the running tasks are over, on
    their locks. An exception raised meanwhile by a signal handler (Ctrl-C) is raised once
    no task can write into the caller's arrays any more."""
    pending = None
    running = []
    for task in tasks:
        while True:
            try:
                if not task.cancel():
                    running.append(task)
                break
            except BaseException as exc:  # (a signal: cancelled or not, decide again)
                pending = pending or exc
    done = not running
    try:
        done = done or _await_code()(shared, _AT[0] + _DONE, chunks, _SPINS, 0)
    except BaseException as exc:
        pending = pending or exc
    if not done:
        for task in running:
            while True:
                try:
                    task.finished.acquire()
                    break
                except BaseException as exc:
                    pending = pending or exc
    if pending is not None:
        raise pending


def _after_fork() -> None:
    """A forked child has none of its parent's threads: it starts its own on demand (the
    parent's queue may hold tasks no thread will take)."""
    global _tasks, _workers, _start
    _tasks, _workers, _start = queue.SimpleQueue(), 0, threading.Lock()
    _placement.forget()


os.register_at_fork(after_in_child=_after_fork)
