"""The Numba backend's threads: a large input's fixed chunks shared out among a few Python
threads, each calling the same serial kernel's machine code (compiled ``nogil``).

Numba's own ``parallel=True`` built a second version of every kernel (2-10 s of compiling
each, against about 1 s for the serial one: its parfor passes), and each of its threading
layers had a catch: ``workqueue`` aborts on concurrent calls (numba#8563), GNU OpenMP's
killed forked children and spun under load, TBB is one more binary dependency.

The protocol: ``shared``, a float64 array the threads of one call share, holds the next
chunk to take (its first element, an int64 counter in a float64's place) and then each
chunk's partial result. The calling thread and the workers all run the kernel; each takes
the next chunk (an atomic add) until none is left and writes the chunk's partial result
into its place. When the calling thread runs out of chunks, it cancels each worker that
has not started yet and waits for those that have (each has at most one chunk left). So a
worker that wakes late (a sleeping thread took tens of microseconds to wake on the 2-core
virtual machines we measure on) just takes fewer chunks or none, and the call never waits
for a thread to wake; and no worker holds the caller's arrays once the call has returned
(the gradient cache reuses a buffer only it references). With ``shared`` None a kernel
runs every chunk in order on its own thread (one argument for both: Numba unboxes every
array argument of a call into a record of its own, about 550 instructions, 80 ns here).
Workers read a counter of posted calls for a while before they sleep (see ``_POSTED``).

The number of threads is Numba's: ``NUMBA_NUM_THREADS`` (default: the CPUs), read on each
shared call.
"""

from __future__ import annotations

import os
import queue
import threading

import numba
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ._numba_math import inline

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
def _fetch_add(typingctx, counters, index):
    """counters[index] += 1, atomically; returns the value it had."""
    if not _is_counters(counters):
        return None

    def codegen(context, builder, signature, args):
        return builder.atomic_rmw("add", _counter(context, builder, signature, args),
                                  context.get_constant(types.int64, 1), "seq_cst")

    return types.int64(counters, types.intp), codegen


@intrinsic
def _load(typingctx, counters, index):
    """counters[index], read atomically (never hoisted out of a waiting loop)."""
    if not _is_counters(counters):
        return None

    def codegen(context, builder, signature, args):
        return builder.load_atomic(_counter(context, builder, signature, args), "seq_cst", 8)

    return types.int64(counters, types.intp), codegen


def _await(posted, seen, spins, settle):
    """Whether ``posted[0]`` changes from ``seen`` within ``spins`` reads (without the GIL);
    once it has, ``settle`` more reads first."""
    for _ in range(spins):
        if _load(posted, 0) != seen:
            for _ in range(settle):
                _load(posted, 0)
            return True
    return False


@inline
def claim(shared, previous):
    """The chunk to run after ``previous`` (-1 at first): the next one not yet taken when
    the chunks are ``shared``, else ``previous + 1``."""
    if shared is None:
        return previous + 1
    return _fetch_add(shared, 0)


@inline
def record(shared, chunk, total, result):
    """A chunk's sum ``total``: into its place in ``shared`` when the chunks are shared
    (the caller adds them in order), else added to the running ``result`` (the chunks run
    in order); returns the running result."""
    if shared is None:
        return result + total
    shared[1 + chunk] = total
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

    __slots__ = ("code", "args", "ended", "started", "finished", "error")

    def __init__(self, code, args, ended):
        self.code, self.args, self.ended, self.error = code, args, ended, None
        self.started, self.finished = threading.Lock(), threading.Lock()
        self.finished.acquire()

    def run(self) -> int:
        """Run it unless cancelled; returns the count of calls posted before it ended."""
        if not self.started.acquire(blocking=False):
            return int(_POSTED[0])  # cancelled: the call is over
        try:
            self.code(*self.args)
        except BaseException as exc:  # (an allocation that failed): the caller raises it
            self.error = exc
        self.args = None
        posted = int(_POSTED[0])  # before the caller can go on to post another call
        self.ended[0] += 1  # a hint for the caller's wait (a lost count costs a spin)
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
# (``_await``: _SPINS reads, about 65 us here) before it sleeps, and once it changes waits
# _SETTLE reads more (a few us: the caller, holding the GIL, is entering its kernel)
# before it asks for the GIL: a thread asleep took tens of microseconds to wake here, and
# the second of two shared calls in a row (a boosting objective's grad_and_hess, then its
# finishing pass) ran on one thread; its finishing pass took 0.39-0.52 ms a call (median)
# at n = 1e6, 0.30-0.34 ms with the wait. The calling thread waits for a started worker
# the same way before it sleeps on its lock.
_POSTED = np.zeros(1, np.int64)
_SPINS = 50_000
_SETTLE = 5_000


def _work() -> None:
    while True:
        _await_code()(_POSTED, _tasks.get().run(), _SPINS, _SETTLE)


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

                counter = numba.int64[::1]
                _AWAIT.append(_jit(_await, "_await").compile(
                    (counter, numba.int64, numba.int64, numba.int64)))
    return _AWAIT[0]


def _ensure_workers(count: int) -> None:
    global _workers
    with _start:
        while _workers < count:
            threading.Thread(target=_work, name=f"lossbackends-{_workers}", daemon=True).start()
            _workers += 1


def share(code, args: tuple, chunks: int) -> tuple:
    """``code(*args, shared)`` on the calling thread and on ``threads() - 1`` workers at
    once, sharing ``chunks`` chunks (see the module's protocol); returns the calling
    thread's result and the chunks' partial results (to be added in order), once every
    chunk is done."""
    count = min(threads(), chunks)
    _await_code()  # compiled here, never by a worker (see there)
    _ensure_workers(count - 1)
    shared = np.zeros(1 + chunks)  # the counter (0 in either type), then the results
    ended = np.zeros(1, np.int64)  # the workers of this call that have run
    tasks = [_Task(code, (*args, shared), ended) for _ in range(count - 1)]
    _POSTED[0] += 1
    try:
        for task in tasks:
            _tasks.put(task)
        result = code(*args, shared)
    finally:
        _end(tasks, ended)
    for task in tasks:
        if task.error is not None:
            raise task.error
    return result, shared[1:]


def _end(tasks: list, ended: np.ndarray) -> None:
    """Cancel the tasks that have not started and wait for those that have (each has at
    most one chunk left): awake first, without the GIL, then on their locks (a thread
    asleep in a lock took tens of microseconds to wake). An exception raised meanwhile by
    a signal handler (Ctrl-C) is raised once every task is over, never while one may
    still write into the caller's arrays."""
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
    try:
        for seen in range(len(running)):
            _await_code()(ended, seen, _SPINS, 0)
    except BaseException as exc:
        pending = pending or exc
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


os.register_at_fork(after_in_child=_after_fork)
