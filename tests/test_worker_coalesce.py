"""
WorkerService's pull coalescing: after a batch that left pool threads idle
while others run, a worker on a layer whose receive is a round trip asks
for more only ``pull_coalesce`` seconds later, or at the first completion;
on a layer whose receive is a lock it asks at once.  Driven with a
ClockReactor, a layer whose receives the test answers, and a pool that
records submissions instead of running them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet.defer import Deferred

from chanserv.routing import Router, route
from chanserv.testing import ClockReactor
from chanserv.worker import DEFAULT_PULL_COALESCE, WorkerService


class AnsweredLayer:
    """A layer whose ``receive_many_twisted`` calls the test answers."""

    cheap_receive = False

    def __init__(self) -> None:
        self.receives: list[tuple[list[str], int, Deferred[list[Any]]]] = []

    def receive_many_twisted(self, channels: list[str], limit: int) -> Deferred[list[Any]]:
        d: Deferred[list[Any]] = Deferred()
        self.receives.append((list(channels), limit, d))
        return d

    def answer(self, *messages: tuple[str, dict[str, Any]]) -> None:
        """Fire the last receive with ``messages``."""
        self.receives[-1][2].callback(list(messages))


class CheapLayer(AnsweredLayer):
    """The same, claiming a receive that is only a lock."""

    cheap_receive = True


class RecordingPool:
    """A pool of ``size`` threads whose tasks the test completes."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.busy = 0
        self.tasks: list[Callable[[], None] | None] = []

    @property
    def idle(self) -> int:
        return max(0, self.size - self.busy)

    def submit(self, task: Any, *args: Any, on_done: Callable[[], None] | None = None) -> None:
        self.busy += 1
        self.tasks.append(on_done)

    def complete(self) -> None:
        """The oldest task finished: its completion runs (as on the reactor thread)."""
        on_done = self.tasks.pop(0)
        self.busy -= 1
        if on_done is not None:
            on_done()


def start(
    layer: AnsweredLayer, threads: int = 4, **kw: Any
) -> tuple[WorkerService, ClockReactor, RecordingPool]:
    """A started WorkerService on ``layer``, listening on ``test.work``."""
    reactor = ClockReactor()
    pool = RecordingPool(threads)
    router = Router([route("test.work", lambda message: None)])
    worker = WorkerService(reactor, layer, router, pool, ordered=False, **kw)  # type: ignore[arg-type]
    worker.startService()
    return worker, reactor, pool


def test_after_a_batch_that_leaves_threads_idle_the_next_receive_waits() -> None:
    """Two of four threads busy after a batch: no receive until pull_coalesce passed, then one for the two idle threads."""
    layer = AnsweredLayer()
    worker, reactor, pool = start(layer)
    assert worker.pull_coalesce == DEFAULT_PULL_COALESCE
    assert [limit for _, limit, _ in layer.receives] == [4]
    layer.answer(("test.work", {"n": 1}), ("test.work", {"n": 2}))
    assert pool.busy == 2
    reactor.run_pending()
    assert len(layer.receives) == 1
    reactor.advance(DEFAULT_PULL_COALESCE / 2)
    assert len(layer.receives) == 1
    reactor.advance(DEFAULT_PULL_COALESCE / 2)
    assert [limit for _, limit, _ in layer.receives] == [4, 2]
    worker.stopService()


def test_a_completion_asks_at_once_and_the_timer_then_finds_a_receive_in_flight() -> None:
    """A completion before pull_coalesce asks at once; the timer firing later makes no second receive."""
    layer = AnsweredLayer()
    worker, reactor, pool = start(layer)
    layer.answer(("test.work", {"n": 1}))
    pool.complete()
    reactor.run_pending()
    assert [limit for _, limit, _ in layer.receives] == [4, 4]
    reactor.advance(DEFAULT_PULL_COALESCE)
    assert len(layer.receives) == 2
    assert reactor.getDelayedCalls() == []
    worker.stopService()


def test_an_empty_batch_or_a_full_pool_asks_without_waiting() -> None:
    """An empty batch asks again at once; a batch taking every thread waits for completions, with no timer."""
    layer = AnsweredLayer()
    worker, reactor, pool = start(layer, threads=2)
    layer.answer()
    assert [limit for _, limit, _ in layer.receives] == [2, 2]
    layer.answer(("test.work", {"n": 1}), ("test.work", {"n": 2}))
    assert pool.idle == 0
    assert reactor.getDelayedCalls() == []
    pool.complete()
    reactor.run_pending()
    assert [limit for _, limit, _ in layer.receives] == [2, 2, 1]
    worker.stopService()


def test_a_cheap_receive_asks_at_once_by_default() -> None:
    """With a layer whose receive is a lock, the next receive goes out at once."""
    layer = CheapLayer()
    worker, _reactor, _pool = start(layer)
    assert worker.pull_coalesce == 0
    layer.answer(("test.work", {"n": 1}))
    assert [limit for _, limit, _ in layer.receives] == [4, 3]
    worker.stopService()


def test_pull_coalesce_zero_asks_at_once_and_negative_is_refused() -> None:
    """pull_coalesce=0 restores asking at once on any layer; a negative delay is a ValueError."""
    layer = AnsweredLayer()
    worker, _reactor, _pool = start(layer, pull_coalesce=0)
    layer.answer(("test.work", {"n": 1}))
    assert [limit for _, limit, _ in layer.receives] == [4, 3]
    worker.stopService()
    with pytest.raises(ValueError, match="pull_coalesce"):
        start(AnsweredLayer(), pull_coalesce=-1)


def test_stopping_cancels_a_waiting_receive() -> None:
    """stopService cancels the pending coalesced receive: no receive after it, no call left."""
    layer = AnsweredLayer()
    worker, reactor, _pool = start(layer)
    layer.answer(("test.work", {"n": 1}))
    worker.stopService()
    # Only the wait for the consumer in flight is left.
    assert [call.getTime() for call in reactor.getDelayedCalls()] == [worker.graceful_timeout]
    reactor.advance(1)
    assert len(layer.receives) == 1
