"""Where the Numba backend's worker threads run (``_threads``): on Linux, on their CPUs
less the calling thread's while one shared call runs alone.

On the 2-CPU virtual machines we measure on, a worker woken while the calling thread ran
its kernel was often put on the caller's CPU (the scheduler's wake-affine choice) and
started only when the caller's kernel was over, the other CPU idle meanwhile: after a
millisecond or more of idle CPUs, about half the calls ran on one thread. Kept off the
caller's CPU, a worker started 58-66 us after its post, every time (MSE at n = 1e6 after 2
ms asleep: 0.41-0.46 ms a call before, 0.30-0.35 after; performance-log.md).

So before a shared call the workers are given their CPUs less the caller's (a worker whose
only CPU is the caller's keeps it): a ``sched_setaffinity`` per worker when the caller's
CPU changed (0.6 us each), none otherwise (``sched_getcpu``, 0.1-0.15 us). While shared
calls overlap (callers in several threads), the workers have their own CPUs back: kept off
one caller's CPU, they would be put on the other's (two callers pinned to two CPUs took
1.4x as long a call at n = 2e5 that way). A worker's own CPUs are those it started with,
or those the user has set on it since (``taskset -a``), which the next placement finds.
Elsewhere the scheduler decides alone.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading

_PLACES = sys.platform.startswith("linux") and hasattr(os, "sched_setaffinity")
try:
    _current_cpu = ctypes.CDLL(None).sched_getcpu if _PLACES else None
except (OSError, AttributeError):  # (a C library without it)
    _current_cpu = None

# ``_kept_off``: the CPU the workers are kept off, or one of these
_OWN = -1  # their own CPUs, all of them
_STALE = -2  # a worker started since the last placement

_workers: list = []  # per worker: [native thread id, its own CPUs, the CPUs we gave it]
_kept_off = [_OWN]
_in_flight = [0]  # shared calls running now
_lock = threading.Lock()  # (over both, and over a placement)


def register() -> None:
    """Called by each worker as it starts (nothing here can fail it)."""
    if _current_cpu is None:
        return
    try:
        cpus = frozenset(os.sched_getaffinity(0))
    except OSError:
        return
    with _lock:
        _workers.append([threading.get_native_id(), cpus, cpus])
        _kept_off[0] = _STALE


def enter() -> None:
    """Before a shared call: the workers kept off this thread's CPU if no other shared
    call is running, else given their own CPUs."""
    with _lock:
        _in_flight[0] += 1
        if _current_cpu is not None:
            cpu = _current_cpu() if _in_flight[0] == 1 else _OWN
            _place(cpu if cpu >= 0 else _OWN)


def leave() -> None:
    """After a shared call (every ``enter`` has its ``leave``)."""
    with _lock:
        _in_flight[0] -= 1


def _place(off: int) -> None:
    """Each worker on its own CPUs less ``off`` (``_OWN``: all of them)."""
    if off == _kept_off[0]:
        return
    _kept_off[0] = off
    for worker in _workers:
        thread, own, given = worker
        try:
            now = frozenset(os.sched_getaffinity(thread))
            if now != given:  # set by the user since: the worker's own CPUs from now on
                own = worker[1] = now
            wanted = (own - {off}) or own
            if wanted != now:
                os.sched_setaffinity(thread, wanted)
            worker[2] = wanted
        except OSError:  # (a worker gone, or CPUs the process lost): its CPUs stay as they are
            pass


def forget() -> None:
    """In a forked child, which has none of its parent's threads."""
    global _lock
    _workers.clear()
    _kept_off[0], _in_flight[0] = _OWN, 0
    _lock = threading.Lock()
