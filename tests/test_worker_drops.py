"""
The messages a worker drops are counted: no route matched, routing failed,
a consumer's held-back send that could not be sent.  WorkerService.handle()
and the 1.x Worker.handle() are called in the test's thread, with a
ClockReactor and the real in-memory layer; held sends are flushed the way
the worker does it, around a consumer run in the test's thread.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from chanserv.asgi import ChannelLayerWrapper
from chanserv.channel import Channel, pending_message_store
from chanserv.exceptions import ChannelFull, RouteTimeout
from chanserv.layers.base import BaseChannelLayer
from chanserv.layers.inmemory import InMemoryChannelLayer
from chanserv.message import Message
from chanserv.routing import route
from chanserv.testing import ClockReactor
from chanserv.threads import WorkerPool
from chanserv.worker import Worker, WorkerService
from tests.test_channel import (  # its autouse fixture, and the consumer bracket
    no_consumer_left_running,  # noqa: F401
    run_consumer,
)


class BrokenRouter:
    """A router whose matching fails with ``error``."""

    channels = frozenset({"t"})

    def __init__(self, error: Exception) -> None:
        self.error = error

    def match(self, message: Message) -> Any:
        # Any: the router contract's (consumer, kwargs) or None; this one only raises.
        raise self.error


def service(routing: list[Any] | None = None, router: Any = None) -> WorkerService:
    """A WorkerService (not started) on an in-memory layer, for calling handle()."""
    reactor = ClockReactor()
    layer = InMemoryChannelLayer(clock=reactor)
    wrapper = ChannelLayerWrapper(layer, "default", routing or [])
    return WorkerService(
        reactor,
        layer,
        router if router is not None else wrapper.router,
        WorkerPool(reactor, 1),
        consumer_layer=wrapper,
    )


def totals(worker: WorkerService) -> tuple[int, int]:
    """(no_route, route_failed) summed over the worker's threads."""
    every = worker.stats.all()
    return sum(s.no_route for s in every), sum(s.route_failed for s in every)


def test_worker_service_counts_a_message_no_route_matches() -> None:
    """WorkerService.handle() counts an unrouted message in its thread's no_route, not a routed one."""
    ran: list[str] = []
    worker = service([route("t", lambda m: ran.append(m["path"]), path=r"^/yes$")])
    worker.handle("t", {"path": "/no"})
    worker.handle("t", {"path": "/yes"})
    worker.handle("other", {})
    assert ran == ["/yes"]
    assert totals(worker) == (2, 0)


def test_worker_service_counts_no_route_per_thread() -> None:
    """Each pool thread counts its own unrouted messages; the sum covers them all."""
    worker = service([])
    thread = threading.Thread(target=worker.handle, args=("t", {}))
    thread.start()
    thread.join(10)
    worker.handle("t", {})
    assert sorted(s.no_route for s in worker.stats.all()) == [1, 1]


def test_worker_service_counts_routing_failures() -> None:
    """A route filter out of time or a failing router is counted as route_failed."""
    timeout = RouteTimeout("route('t')", "path", "(a+)+$", "t", 0.5)
    worker = service(router=BrokenRouter(timeout))
    worker.handle("t", {})
    assert totals(worker) == (0, 1)
    failing = service(router=BrokenRouter(ValueError("router bug")))
    failing.handle("t", {})
    assert totals(failing) == (0, 1)


def test_sync_worker_counts_no_route_and_routing_failures() -> None:
    """The 1.x Worker counts an unrouted message in no_route and a failed match in route_failed."""
    layer = InMemoryChannelLayer()
    wrapper = ChannelLayerWrapper(layer, "default", [route("t", lambda m: None, path=r"^/yes$")])
    worker = Worker(wrapper, signal_handlers=False)
    worker.handle("t", {"path": "/no"})
    worker.handle("t", {"path": "/yes"})
    assert (worker.no_route, worker.route_failed, worker.dropped, worker.handled) == (1, 0, 1, 1)
    wrapper.router = BrokenRouter(ValueError("router bug"))  # type: ignore[assignment]
    worker.handle("t", {"path": "/yes"})
    assert (worker.no_route, worker.route_failed, worker.dropped) == (1, 1, 2)


# -- held sends ---------------------------------------------------------------


class FailingLayer(BaseChannelLayer):
    """A layer whose channel "full" is always full and "broken" always fails."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []

    def send_prepared(self, channel: str, data: bytes) -> None:
        if channel == "full":
            raise ChannelFull(channel)
        if channel == "broken":
            raise ConnectionError("layer unreachable")
        self.sent.append(channel)


def test_held_sends_that_fail_are_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """A held send to a channel that stays full, or to a failing layer, adds one to dropped."""
    monkeypatch.setattr(pending_message_store, "full_timeout", 0.0)
    failing = FailingLayer()
    before = pending_message_store.dropped

    def consumer() -> None:
        Channel("full", channel_layer=failing).send({"n": 1})
        Channel("broken", channel_layer=failing).send({"n": 2})
        Channel("ok", channel_layer=failing).send({"n": 3})

    run_consumer(consumer)
    assert failing.sent == ["ok"]
    assert pending_message_store.dropped - before == 2


def test_held_sends_that_go_through_are_not_counted() -> None:
    """A flush whose sends all go through leaves dropped as it was."""
    layer = InMemoryChannelLayer()
    before = pending_message_store.dropped
    run_consumer(lambda: Channel("a", channel_layer=layer).send({"n": 1}))
    assert layer.receive(["a"]) == ("a", {"n": 1})
    assert pending_message_store.dropped == before


def test_held_send_drops_from_many_threads_are_all_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Threads dropping at the same time lose no count."""
    monkeypatch.setattr(pending_message_store, "full_timeout", 0.0)
    failing = FailingLayer()
    before = pending_message_store.dropped

    def consumer() -> None:
        for _ in range(50):
            Channel("broken", channel_layer=failing).send({})

    threads = [threading.Thread(target=run_consumer, args=(consumer,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert pending_message_store.dropped - before == 200
