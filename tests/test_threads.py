"""Tests for chanserv.threads: the batcher and the worker pool."""

from __future__ import annotations

import threading
from typing import Any

from chanserv.threads import ReactorBatcher, WorkerPool, batcher_for
from tests.support import ClockReactor, in_reactor, reactor_thread


def test_batcher_coalesces_calls_from_threads_into_one_wakeup() -> None:
    """ReactorBatcher runs calls from many threads in one reactor wakeup."""
    clock = ClockReactor()
    batcher = ReactorBatcher(clock)
    seen: list[int] = []
    threads = [threading.Thread(target=batcher.call, args=(seen.append, n)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # One pending drain, however many calls were made.
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(0)
    assert sorted(seen) == list(range(20))
    assert clock.getDelayedCalls() == []


def test_batcher_keeps_order_and_survives_errors() -> None:
    """ReactorBatcher runs calls in order; one that raises does not stop the others."""
    clock = ClockReactor()
    batcher = ReactorBatcher(clock)
    seen: list[Any] = []

    def boom() -> None:
        raise ValueError("expected by the test")

    batcher.call(seen.append, 1)
    batcher.call(boom)
    batcher.call(seen.append, 2)
    clock.advance(0)
    assert seen == [1, 2]
    batcher.call(seen.append, 3)
    clock.advance(0)
    assert seen == [1, 2, 3]


def test_batcher_for_is_shared_per_reactor() -> None:
    """batcher_for gives one shared batcher per reactor."""
    a, b = ClockReactor(), ClockReactor()
    assert batcher_for(a) is batcher_for(a)
    assert batcher_for(a) is not batcher_for(b)


def test_pool_runs_tasks_in_named_threads_and_reports_completion() -> None:
    """WorkerPool runs tasks on its named threads, reports each done, and stops its threads."""
    reactor = reactor_thread()
    pool = WorkerPool(reactor, 3, name="t-pool")
    in_reactor(pool.startService)
    names: list[str] = []
    done = threading.Event()
    completed: list[int] = []

    def task(n: int) -> None:
        names.append(threading.current_thread().name)

    def on_done(n: int) -> None:
        completed.append(n)
        if len(completed) == 30:
            done.set()

    def submit_all() -> None:
        for n in range(30):
            pool.submit(task, n, on_done=lambda n=n: on_done(n))
        assert pool.busy <= 30

    in_reactor(submit_all)
    assert done.wait(10)
    assert sorted(completed) == list(range(30))
    assert set(names) <= {"t-pool-1", "t-pool-2", "t-pool-3"}
    assert in_reactor(lambda: (pool.busy, pool.idle)) == (0, 3)
    in_reactor(pool.stopService)
    # A thread reports its exit just before it returns: let it return.
    for thread in [t for t in threading.enumerate() if t.name.startswith("t-pool-")]:
        thread.join(5)
    assert not [t for t in threading.enumerate() if t.name.startswith("t-pool-")]


def test_pool_survives_base_exceptions() -> None:
    """A pool thread survives tasks raising SystemExit, KeyboardInterrupt or errors."""
    reactor = reactor_thread()
    pool = WorkerPool(reactor, 1, name="t-exc")
    in_reactor(pool.startService)
    done = threading.Event()
    ran: list[str] = []

    def bad(exc: BaseException) -> None:
        raise exc

    def good() -> None:
        ran.append(threading.current_thread().name)
        done.set()

    def submit() -> None:
        pool.submit(bad, SystemExit(1))
        pool.submit(bad, KeyboardInterrupt())
        pool.submit(bad, RuntimeError("expected"))
        pool.submit(good)

    in_reactor(submit)
    assert done.wait(10)
    assert ran == ["t-exc-1"]
    in_reactor(pool.stopService)


def test_pool_rejects_empty_size() -> None:
    """WorkerPool raises ValueError for a size of 0."""
    import pytest

    with pytest.raises(ValueError):
        WorkerPool(ClockReactor(), 0)
