"""The Numba backend's threads (``backends/_threads``): a large input's chunks shared out
among threads give the same bits on any number of them, a worker that fails is raised by
the caller, and a forked child runs large inputs on threads of its own."""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import lossbackends as lb

pytest.importorskip("numba", reason="Numba is not installed")
from lossbackends.backends import _placement, _threads  # noqa: E402
from lossbackends.backends.numba_backend import PARALLEL_MIN_ELEMENTS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _large_calls():
    """One call of each kind of kernel, each over more than one chunk (float32: kernels
    the other tests compile too)."""
    rng = np.random.default_rng(21)
    n = PARALLEL_MIN_ELEMENTS + 1001
    y, p = rng.random(n).astype(np.float32), rng.random(n).astype(np.float32)
    w = rng.random(n).astype(np.float32)
    logits = rng.standard_normal((2000, 40)).astype(np.float32)
    labels = rng.integers(0, 40, 2000)
    few = rng.standard_normal((20000, 10)).astype(np.float32)
    few_labels = rng.integers(0, 10, 20000)
    return {
        "mse": lambda: lb.mse.value_and_grad(y, p, backend="numba"),
        "weighted bce": lambda: lb.binary_cross_entropy.value_and_grad(y, p, weight=w,
                                                                       backend="numba"),
        "cross_entropy": lambda: lb.cross_entropy.value_and_grad(labels, logits,
                                                                 backend="numba"),
        "cross_entropy, few classes": lambda: lb.cross_entropy.value_and_grad(
            few_labels, few, backend="numba"),
        "multiclass_hinge": lambda: lb.multiclass_hinge.value_and_grad(labels, logits,
                                                                       backend="numba"),
    }


@pytest.mark.parametrize("count", [2, 3, 7])
def test_any_number_of_threads_gives_the_same_bits(monkeypatch, count):
    calls = _large_calls()
    monkeypatch.setattr(_threads, "threads", lambda: 1)
    expected = {name: call() for name, call in calls.items()}
    monkeypatch.setattr(_threads, "threads", lambda: count)
    for name, call in calls.items():
        value, grad = call()
        assert value.tobytes() == expected[name][0].tobytes(), name
        np.testing.assert_array_equal(grad, expected[name][1], err_msg=name)


def test_chunks_are_taken_once_each_from_both_ends_and_counted_done():
    """``claim`` on one call's ``shared``, the calling thread's view and a worker's taken
    in turn: every chunk exactly once, the caller's from the first up, the worker's from
    the last down, the last two left to the caller, each counted done when the next is
    taken, and the count of chunks once none is left."""
    from numba import njit

    @njit
    def take(view, previous):
        return _threads.claim(view, previous)

    chunks = 16
    shared = _threads._new_shared(chunks)
    caller, worker = shared, _threads._workers_view(shared)
    taken = {"caller": [], "worker": []}
    previous = {"caller": -1, "worker": -1}
    for _ in range(chunks + 4):
        for name, view in (("caller", caller), ("worker", worker)):
            if previous[name] < chunks:  # (a kernel stops at the first ``chunks``)
                previous[name] = take(view, previous[name])
                if previous[name] < chunks:
                    taken[name].append(previous[name])
    assert sorted(taken["caller"] + taken["worker"]) == list(range(chunks))
    assert taken["caller"] == list(range(len(taken["caller"])))
    assert taken["worker"] == list(range(chunks - 1, chunks - 1 - len(taken["worker"]), -1))
    assert len(taken["caller"]) == chunks // 2 + 1  # in turn, then the two left to it
    assert shared.view(np.int64)[_threads._AT[0] + _threads._DONE] == chunks
    assert take(caller, -1) == chunks and take(worker, -1) == chunks


def test_a_worker_takes_the_tasks_queued_meanwhile_before_it_waits(monkeypatch):
    """Tasks left queued (posts a worker saw as one, their calls over: cancelled) are
    taken one after another, not one per next post, which left a worker a call behind
    for as long as calls came faster than its watch."""
    monkeypatch.setattr(_threads, "threads", lambda: 2)
    _threads.share(lambda shared: None, (), 4)  # the worker exists
    waits = []
    await_code = _threads._await_code

    def counted():
        if threading.current_thread().name.startswith("lossbackends-"):
            waits.append(1)
        return await_code()

    monkeypatch.setattr(_threads, "_await_code", counted)
    time.sleep(0.01)  # past its watch: the worker waits for a task on the queue
    stale = [_threads._Task(lambda *args: None, ()) for _ in range(20)]
    for task in stale:
        assert task.cancel()
        _threads._tasks.put(task)
    deadline = time.monotonic() + 10
    while _threads._tasks.qsize() and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(0.01)
    assert _threads._tasks.qsize() == 0
    assert len(waits) <= 2, f"{len(waits)} waits for 20 queued tasks"


def test_a_worker_that_raises_is_waited_for_then_raised(monkeypatch):
    """A worker whose kernel raises (an allocation that failed): the caller waits for the
    worker that started, then raises its error; the threads still work afterwards."""
    monkeypatch.setattr(_threads, "threads", lambda: 2)
    ran = []

    def kernel(shared):
        if threading.current_thread() is threading.main_thread():
            time.sleep(0.2)  # the worker starts meanwhile
            ran.append("caller")
            return "caller"
        ran.append("worker")
        raise MemoryError("a worker's allocation")

    with pytest.raises(MemoryError, match="a worker's allocation"):
        _threads.share(kernel, (), 4)
    assert sorted(ran) == ["caller", "worker"]
    calls = _large_calls()
    value = calls["mse"]()[0]
    monkeypatch.setattr(_threads, "threads", lambda: 1)
    assert calls["mse"]()[0].tobytes() == value.tobytes()


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="no interval timers here")
def test_a_signal_while_a_worker_runs_is_raised_after_it_has_finished(monkeypatch):
    """Ctrl-C (here a timer's handler raising) while the caller waits for a worker: the
    call raises only once the worker is done with the caller's arrays."""
    monkeypatch.setattr(_threads, "threads", lambda: 2)
    done = []

    def kernel(shared):
        if threading.current_thread() is threading.main_thread():
            deadline = time.monotonic() + 30
            while not done and time.monotonic() < deadline:  # until the worker runs
                time.sleep(0.001)
            signal.setitimer(signal.ITIMER_REAL, 0.05)  # comes while the caller waits
            return
        done.append("started")
        time.sleep(0.5)  # the worker: still running when the signal comes
        done.append("worker")

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    # no garbage collection meanwhile: the handler's exception raised inside a gc callback
    # (hypothesis installs one) is swallowed as unraisable, and the call would never see it
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        with pytest.raises(KeyboardInterrupt):
            _threads.share(kernel, (), 4)
        assert done == ["started", "worker"]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if gc_was_enabled:
            gc.enable()


# run in a fresh interpreter: the test process's other libraries' threads (JAX's) make
# its own fork unsafe
_FORK = """
import multiprocessing, sys
import numpy as np
import lossbackends as lb
from lossbackends.backends import _threads
from lossbackends.backends.numba_backend import PARALLEL_MIN_ELEMENTS

_threads.threads = lambda: 2
rng = np.random.default_rng(21)
n = PARALLEL_MIN_ELEMENTS + 1001
y, p = rng.random(n).astype(np.float32), rng.random(n).astype(np.float32)

def value():
    return float(lb.mse.value_and_grad(y, p, backend="numba")[0])

def child(queue):
    queue.put(value())

if __name__ == "__main__":
    expected = value()  # the parent's threads are running
    assert _threads._workers == 1
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    process = context.Process(target=child, args=(queue,))
    process.start()
    process.join(60)
    if process.is_alive():
        process.kill()
        sys.exit("the forked child hung")
    assert queue.get(timeout=5) == expected
    print("ok")
"""


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(),
                    reason="no fork on this platform")
def test_a_forked_child_runs_large_inputs_on_threads_of_its_own(tmp_path):
    """The parent's threads do not exist in a forked child: it starts its own."""
    script = tmp_path / "fork.py"
    script.write_text(_FORK)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}  # this checkout's
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


# in a fresh interpreter: it sets its own CPUs, and its workers start with them
_PLACES = """
import os, sys, threading, time
import numpy as np
import lossbackends as lb
from lossbackends.backends import _placement, _threads
from lossbackends.backends.numba_backend import PARALLEL_MIN_ELEMENTS

mode = sys.argv[1]
rng = np.random.default_rng(21)
n = PARALLEL_MIN_ELEMENTS + 1001
y, p = rng.random(n).astype(np.float32), rng.random(n).astype(np.float32)
cpus = os.sched_getaffinity(0)
if mode == "one CPU":  # the caller's only CPU is also its worker's
    cpus = {min(cpus)}
    os.sched_setaffinity(0, cpus)
if mode == "not placed":  # as where the platform has no sched_getcpu or sched_setaffinity
    _placement._current_cpu = None
_threads.threads = lambda: 1
expected = lb.mse.value_and_grad(y, p, backend="numba")
_threads.threads = lambda: 2


def check():
    value, grad = lb.mse.value_and_grad(y, p, backend="numba")
    assert value == expected[0] and np.array_equal(grad, expected[1])


deadline = time.monotonic() + 60
if mode == "not placed":  # the worker lives, takes its tasks, and is never placed
    while _threads._tasks.qsize() or not any(
            thread.name.startswith("lossbackends") for thread in threading.enumerate()):
        check()
        assert time.monotonic() < deadline, "no worker took its tasks"
    for _ in range(20):
        check()
    time.sleep(0.1)
    assert _threads._tasks.qsize() == 0 and _placement._workers == []
    print("ok")
    sys.exit()
while not (_placement._workers and _placement._kept_off[0] >= 0):  # the worker placed
    check()
    assert time.monotonic() < deadline, "the worker was never placed"
check()
[(worker, own, given)] = _placement._workers
assert own == cpus, (own, cpus)
off = _placement._kept_off[0]
assert off in cpus, (off, cpus)
allowed = os.sched_getaffinity(worker)
assert allowed == given == ((cpus - {off}) or cpus), (allowed, given, cpus, off)
if mode == "all":
    _placement.enter()  # (as a caller whose call overlaps another's, in another thread)
    _placement.enter()
    assert os.sched_getaffinity(worker) == cpus  # their own CPUs while calls overlap
    _placement.leave()
    _placement.leave()
    os.sched_setaffinity(worker, {off})  # the user's choice: the caller's CPU
    check()
    assert os.sched_getaffinity(worker) == {off}  # kept, and the worker's own from now on
    assert _placement._workers[0][1] == {off}
print("ok")
"""


@pytest.mark.skipif(_placement._current_cpu is None or len(os.sched_getaffinity(0)) < 2,
                    reason="places its threads on Linux, with two CPUs or more")
@pytest.mark.parametrize("mode", ["all", "one CPU", "not placed"])
def test_workers_run_off_the_calling_threads_cpu(tmp_path, mode):
    """Before a shared call the workers are given their CPUs but the caller's (a worker
    with only that one keeps it), their own while calls overlap, and the user's where the
    user set some; where threads are not placed, the workers run as ever; the result keeps
    its bits."""
    script = tmp_path / "places.py"
    script.write_text(_PLACES)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}  # this checkout's
    done = subprocess.run([sys.executable, str(script), mode], capture_output=True,
                          text=True, timeout=300, env=env)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
