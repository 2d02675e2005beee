"""
Worker tests: real pool threads, the real in-memory layer, the global
reactor running in a background thread (tests.support.reactor_thread).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connections
from twisted.python import threadable

from chanserv.asgi import ChannelLayerWrapper, channel_layers
from chanserv.channel import Channel
from chanserv.exceptions import ConsumeLater, DenyConnection, WebsocketCloseException
from chanserv.layers import InMemoryChannelLayer
from chanserv.routing import route
from chanserv.service import ChanservService, LayerService
from chanserv.signals import consumer_finished, consumer_started
from chanserv.threads import WorkerPool
from chanserv.worker import Worker, filter_channels
from tests.support import in_reactor, reactor_thread

TIMEOUT = 10


class Recorder:
    """Collects calls from consumers and lets the test wait for N of them."""

    def __init__(self) -> None:
        self.calls: list[Any] = []
        self._cond = threading.Condition()

    def add(self, item: Any) -> None:
        with self._cond:
            self.calls.append(item)
            self._cond.notify_all()

    def wait_for(self, n: int) -> list[Any]:
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self.calls) >= n, timeout=TIMEOUT)
        assert ok, "only %d of %d calls arrived: %r" % (len(self.calls), n, self.calls)
        return list(self.calls)


@pytest.fixture
def runtime() -> Iterator[Any]:
    """Builds and tears down layer + pool + worker for a routing list."""
    reactor = reactor_thread()
    started: list[ChanservService] = []
    previous: list[Any] = []

    def start(routing: list[Any], threads: int = 2, **worker_kw: Any) -> ChannelLayerWrapper:
        layer = InMemoryChannelLayer()
        wrapper = ChannelLayerWrapper(layer, "default", routing)
        # Channel("...") and Group("...") resolve the "default" alias.
        previous.append(channel_layers.set("default", wrapper))
        root = ChanservService()
        LayerService(reactor, wrapper).setServiceParent(root)
        pool = WorkerPool(reactor, threads)
        pool.setServiceParent(root)
        Worker(reactor, wrapper, pool, **worker_kw).setServiceParent(root)
        in_reactor(root.startService)
        started.append(root)
        return wrapper

    yield start
    for root in started:
        in_reactor(root.stopService)
    if previous:
        channel_layers.set("default", previous[0])


def test_consumer_runs_in_a_pool_thread(runtime: Any) -> None:
    rec = Recorder()

    def consumer(message: Any) -> None:
        rec.add((threading.current_thread().name, threadable.isInIOThread(), message["n"]))

    layer = runtime([route("test.run", consumer)])
    layer.send("test.run", {"n": 1})
    [(name, in_io, n)] = rec.wait_for(1)
    assert name.startswith("chanserv-worker-")
    assert in_io is False
    assert n == 1


def test_filters_and_kwargs_reach_consumer(runtime: Any) -> None:
    rec = Recorder()

    def consumer(message: Any, room: str) -> None:
        rec.add(room)

    layer = runtime([route("test.room", consumer, path=r"^/rooms/(?P<room>\w+)/$")])
    layer.send("test.room", {"path": "/rooms/lobby/"})
    assert rec.wait_for(1) == ["lobby"]


def test_failing_consumer_does_not_stop_the_others(runtime: Any) -> None:
    rec = Recorder()

    def consumer(message: Any) -> None:
        kind = message["kind"]
        if kind == "raise":
            raise RuntimeError("consumer failure (expected by the test)")
        if kind == "exit":
            raise SystemExit(3)
        if kind == "interrupt":
            raise KeyboardInterrupt()
        rec.add(kind)

    layer = runtime([route("test.fail", consumer)], threads=1)
    for kind in ("raise", "exit", "interrupt", "raise", "ok"):
        layer.send("test.fail", {"kind": kind})
    assert rec.wait_for(1) == ["ok"]
    # Still alive and taking messages after every kind of failure.
    layer.send("test.fail", {"kind": "again"})
    assert rec.wait_for(2) == ["ok", "again"]


def test_consume_later_requeues_then_gives_up(runtime: Any) -> None:
    rec = Recorder()

    def consumer(message: Any) -> None:
        rec.add(message.get("__retries__", 0))
        if message["mode"] == "always":
            raise ConsumeLater()
        if message.get("__retries__", 0) < 2:
            raise ConsumeLater()

    layer = runtime([route("test.later", consumer)], message_retries=3)
    layer.send("test.later", {"mode": "twice"})
    assert rec.wait_for(3) == [0, 1, 2]
    layer.send("test.later", {"mode": "always"})
    calls = rec.wait_for(3 + 4)
    assert calls[3:] == [0, 1, 2, 3]
    # Given up: nothing is left on the channel for a fifth run.
    assert in_reactor(lambda: layer.channel_statistics("test.later"))["messages_pending"] == 0


def test_pending_sends_flushed_after_consumer_in_order(runtime: Any) -> None:
    seen_during: list[Any] = []

    def consumer(message: Any) -> None:
        for i in range(3):
            Channel("test.out").send({"i": i})
        # Held back until the consumer finishes: nothing is visible yet.
        seen_during.append(message.channel_layer.receive(["test.out"]))
        if message["fail"]:
            raise RuntimeError("after sending (expected by the test)")

    rec = Recorder()
    layer = runtime(
        [route("test.in", consumer), route("test.out", lambda m: rec.add(m["i"]))], threads=1
    )
    layer.send("test.in", {"fail": False})
    assert rec.wait_for(3) == [0, 1, 2]
    layer.send("test.in", {"fail": True})
    assert rec.wait_for(6) == [0, 1, 2, 0, 1, 2]
    assert seen_during == [(None, None), (None, None)]


def test_immediately_bypasses_buffer(runtime: Any) -> None:
    rec = Recorder()
    seen: list[Any] = []

    def consumer(message: Any) -> None:
        Channel("test.direct").send({"x": 1}, immediately=True)
        seen.append(message.channel_layer.receive(["test.direct"]))
        rec.add("done")

    layer = runtime([route("test.imm", consumer)])
    layer.send("test.imm", {})
    rec.wait_for(1)
    assert seen == [("test.direct", {"x": 1})]


def test_close_old_connections_runs_around_each_consumer(
    runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # close_old_connections() walks connections.all(initialized_only=True);
    # record each walk, in the thread that made it.
    events: list[tuple[str, str]] = []

    def fake_all(initialized_only: bool = False) -> list[Any]:
        events.append(("close_old_connections", threading.current_thread().name))
        return []

    monkeypatch.setattr(connections, "all", fake_all)

    def consumer(message: Any) -> None:
        events.append(("consumer", threading.current_thread().name))

    done = threading.Event()
    layer = runtime([route("test.db", consumer)], threads=1)
    consumer_finished.connect(lambda **kw: done.set(), weak=False, dispatch_uid="t-db")
    try:
        layer.send("test.db", {})
        assert done.wait(TIMEOUT)
    finally:
        consumer_finished.disconnect(dispatch_uid="t-db")
    kinds = [kind for kind, _ in events]
    assert kinds == ["close_old_connections", "consumer", "close_old_connections"]
    assert len({thread for _, thread in events}) == 1


def test_signals_bracket_consumer(runtime: Any) -> None:
    order: list[str] = []
    rec = Recorder()
    consumer_started.connect(
        lambda **kw: order.append("started"), weak=False, dispatch_uid="t-started"
    )
    consumer_finished.connect(
        lambda **kw: (order.append("finished"), rec.add(1)), weak=False, dispatch_uid="t-finished"
    )
    try:
        layer = runtime([route("test.sig", lambda m: order.append("consumer"))])
        layer.send("test.sig", {})
        rec.wait_for(1)
    finally:
        consumer_started.disconnect(dispatch_uid="t-started")
        consumer_finished.disconnect(dispatch_uid="t-finished")
    assert order == ["started", "consumer", "finished"]


def test_deny_connection_replies_close(runtime: Any) -> None:
    def connect(message: Any) -> None:
        raise DenyConnection()

    layer = runtime([route("websocket.connect", connect)])
    reply = "test.reply" + "!abc"
    layer.send("websocket.connect", {"reply_channel": reply, "path": "/"})
    got = layer.receive(["test.reply!"], block=True)
    assert got == (reply, {"close": True})


def test_websocket_close_exception(runtime: Any) -> None:
    def receive(message: Any) -> None:
        raise WebsocketCloseException(4001)

    layer = runtime([route("websocket.receive", receive)])
    layer.send("websocket.receive", {"reply_channel": "srv.response!x", "text": "hi"})
    assert layer.receive(["srv.response!"], block=True) == ("srv.response!x", {"close": 4001})


def test_websocket_close_exception_validates_code() -> None:
    for bad in (999, 1002, 1006, 1015, 2999, 5000, "1000", True):
        with pytest.raises(ValueError):
            WebsocketCloseException(bad)  # type: ignore[arg-type]


def test_unrouted_message_is_dropped_and_worker_goes_on(runtime: Any) -> None:
    rec = Recorder()
    layer = runtime([route("test.only", lambda m: rec.add(m["path"]), path=r"^/yes/$")])
    layer.send("test.only", {"path": "/no/"})
    layer.send("test.only", {"path": "/yes/"})
    assert rec.wait_for(1) == ["/yes/"]


def test_messages_taken_only_when_a_thread_is_free(runtime: Any) -> None:
    release = threading.Event()
    rec = Recorder()

    def slow(message: Any) -> None:
        rec.add(message["n"])
        release.wait(TIMEOUT)

    layer = runtime([route("test.slow", slow)], threads=2)
    for n in range(5):
        layer.send("test.slow", {"n": n})
    rec.wait_for(2)
    # Two threads busy: the other three stay in the layer, not in memory here.
    assert layer.channel_statistics("test.slow")["messages_pending"] == 3
    release.set()
    assert sorted(rec.wait_for(5)) == [0, 1, 2, 3, 4]


def test_filter_channels_globs() -> None:
    channels = {"http.request", "websocket.connect", "websocket.receive", "chat-messages"}
    assert filter_channels(channels, ["websocket.*"]) == ["websocket.connect", "websocket.receive"]
    assert filter_channels(channels, None, ["websocket.*", "http.*"]) == ["chat-messages"]
    assert filter_channels(channels, ["*"], ["chat-*"]) == [
        "http.request",
        "websocket.connect",
        "websocket.receive",
    ]


def test_stop_waits_for_consumers_in_flight() -> None:
    reactor = reactor_thread()
    layer = InMemoryChannelLayer()
    rec = Recorder()
    release = threading.Event()

    def slow(message: Any) -> None:
        rec.add("started")
        release.wait(TIMEOUT)
        rec.add("finished")

    wrapper = ChannelLayerWrapper(layer, "default", [route("test.stop", slow)])
    root = ChanservService()
    LayerService(reactor, wrapper).setServiceParent(root)
    pool = WorkerPool(reactor, 1)
    pool.setServiceParent(root)
    Worker(reactor, wrapper, pool).setServiceParent(root)
    in_reactor(root.startService)
    layer.send("test.stop", {})
    rec.wait_for(1)
    threading.Timer(0.2, release.set).start()
    in_reactor(root.stopService)
    assert rec.calls == ["started", "finished"]
    # Each thread reports its exit just before returning: join to be sure.
    for t in threading.enumerate():
        if t.name.startswith("chanserv-worker-"):
            t.join(TIMEOUT)
            assert not t.is_alive()


def test_stop_gives_up_after_graceful_timeout() -> None:
    reactor = reactor_thread()
    layer = InMemoryChannelLayer()
    stuck = threading.Event()
    rec = Recorder()

    def stuck_consumer(message: Any) -> None:
        rec.add(1)
        stuck.wait(TIMEOUT)

    wrapper = ChannelLayerWrapper(layer, "default", [route("test.stuck", stuck_consumer)])
    pool = WorkerPool(reactor, 1, name="stuck-pool")
    worker = Worker(reactor, wrapper, pool, graceful_timeout=0.3)
    in_reactor(layer.attach_reactor, reactor)
    in_reactor(pool.startService)
    in_reactor(worker.startService)
    layer.send("test.stuck", {})
    rec.wait_for(1)
    in_reactor(worker.stopService)  # returns after ~0.3 s despite the stuck consumer
    assert pool.busy == 1
    stuck.set()
    in_reactor(pool.stopService)
    in_reactor(layer.detach_reactor)


def test_free_thread_takes_the_next_message_without_the_reactor(runtime: Any) -> None:
    # With the in-memory layer a thread that finished a message takes the
    # next waiting one itself: it goes on even while the reactor is busy.
    reactor = reactor_thread()
    first_running = threading.Event()
    release_first = threading.Event()
    reactor_blocked = threading.Event()
    release_reactor = threading.Event()
    rec = Recorder()

    def consumer(message: Any) -> None:
        if message["n"] == 0:
            first_running.set()
            release_first.wait(TIMEOUT)
        rec.add(message["n"])

    layer = runtime([route("test.steal", consumer)], threads=1)
    layer.send("test.steal", {"n": 0})
    assert first_running.wait(TIMEOUT)
    for n in range(1, 6):
        layer.send("test.steal", {"n": n})

    def block() -> None:
        reactor_blocked.set()
        release_reactor.wait(TIMEOUT)

    reactor.callFromThread(block)
    assert reactor_blocked.wait(TIMEOUT)
    try:
        release_first.set()
        assert rec.wait_for(6) == [0, 1, 2, 3, 4, 5]
    finally:
        release_reactor.set()
