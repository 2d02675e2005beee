"""
WorkerService tests: real pool threads, the real in-memory layer, the global
reactor running in a background thread (tests.support.reactor_thread).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connections
from django.test import override_settings
from twisted.python import threadable

from chanserv.asgi import ChannelLayerWrapper, channel_layers
from chanserv.channel import Channel
from chanserv.exceptions import ConsumeLater, DenyConnection, WebsocketCloseException
from chanserv.layers import InMemoryChannelLayer
from chanserv.routing import route
from chanserv.service import ChanservService, LayerService
from chanserv.signals import (
    consumer_finished,
    consumer_started,
    worker_process_ready,
    worker_ready,
)
from chanserv.threads import WorkerPool
from chanserv.worker import ReplyChannelLanes, WorkerService, filter_channels
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

    def wait_until(self, predicate: Callable[[list[Any]], bool]) -> list[Any]:
        with self._cond:
            ok = self._cond.wait_for(lambda: predicate(self.calls), timeout=TIMEOUT)
        assert ok, "the calls never matched: %r" % (self.calls,)
        return list(self.calls)


@pytest.fixture
def runtime() -> Iterator[Any]:
    """Builds and tears down layer + pool + worker for a routing list."""
    reactor = reactor_thread()
    started: list[ChanservService] = []
    previous: list[Any] = []

    workers: list[WorkerService] = []

    def start(
        routing: list[Any],
        threads: int = 2,
        capacity: int = 100,
        layer: Any = None,
        **worker_kw: Any,
    ) -> ChannelLayerWrapper:
        """The tree on ``layer`` (a new in-memory layer of ``capacity`` if None)."""
        if layer is None:
            layer = InMemoryChannelLayer(capacity=capacity)
        wrapper = ChannelLayerWrapper(layer, "default", routing)
        # Channel("...") and Group("...") resolve the "default" alias.
        previous.append(channel_layers.set("default", wrapper))
        root = ChanservService()
        LayerService(reactor, wrapper).setServiceParent(root)
        pool = WorkerPool(reactor, threads)
        pool.setServiceParent(root)
        worker = WorkerService(
            reactor,
            wrapper.channel_layer,
            wrapper.router,
            pool,
            consumer_layer=wrapper,
            **worker_kw,
        )
        worker.setServiceParent(root)
        workers.append(worker)
        in_reactor(root.startService)
        started.append(root)
        return wrapper

    # The WorkerService of the last start(), for the tests that look into it.
    start.workers = workers  # type: ignore[attr-defined]
    yield start
    for root in started:
        in_reactor(root.stopService)
    if previous:
        channel_layers.set("default", previous[0])


def test_consumer_runs_in_a_pool_thread(runtime: Any) -> None:
    """Consumers run in a chanserv-worker pool thread, never in the reactor thread."""
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
    """The worker calls the consumer with the kwargs captured by its route's filters."""
    rec = Recorder()

    def consumer(message: Any, room: str) -> None:
        rec.add(room)

    layer = runtime([route("test.room", consumer, path=r"^/rooms/(?P<room>\w+)/$")])
    layer.send("test.room", {"path": "/rooms/lobby/"})
    assert rec.wait_for(1) == ["lobby"]


def test_failing_consumer_does_not_stop_the_others(runtime: Any) -> None:
    """A consumer raising an error, SystemExit or KeyboardInterrupt does not stop the worker."""
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
    """ConsumeLater requeues the message with __retries__ counted, up to message_retries."""
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
    """Sends in a consumer are held until it ends, then sent in order, even if it raised."""
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
    """A send(immediately=True) in a consumer is on the layer before the consumer ends."""
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


@pytest.mark.parametrize("extra_receiver", [False, True], ids=["direct", "through-send"])
def test_close_old_connections_runs_around_each_consumer_once_the_thread_used_the_database(
    runtime: Any, monkeypatch: pytest.MonkeyPatch, extra_receiver: bool
) -> None:
    """
    Old connections are checked before and after each consumer, in its thread, once that
    thread has opened a database connection; before that there is none to close.
    """
    # close_old_connections() walks connections.all(initialized_only=True);
    # record each walk, in the thread that made it.
    events: list[tuple[str, str]] = []
    real_all = connections.all

    def recording_all(initialized_only: bool = False) -> list[Any]:
        events.append(("close_old_connections", threading.current_thread().name))
        return real_all(initialized_only=initialized_only)

    monkeypatch.setattr(connections, "all", recording_all)

    def consumer(message: Any) -> None:
        events.append(("consumer", threading.current_thread().name))
        if message.get("open"):
            connections["default"].ensure_connection()

    layer = runtime([route("test.db", consumer)], threads=1)
    if extra_receiver:  # a receiver of the application's: Signal.send runs them all
        consumer_started.connect(lambda **kw: None, weak=False, dispatch_uid="t-db-started")
        consumer_finished.connect(lambda **kw: None, weak=False, dispatch_uid="t-db-finished")
    try:
        for content in ({}, {"open": True}, {}):
            layer.send("test.db", content)
        expected = 9 if extra_receiver else 6
        deadline = time.monotonic() + TIMEOUT
        while len(events) < expected and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # nothing more comes
    finally:
        consumer_started.disconnect(dispatch_uid="t-db-started")
        consumer_finished.disconnect(dispatch_uid="t-db-finished")
    kinds = [kind for kind, _ in events]
    if extra_receiver:
        # Signal.send calls Django's close_old_connections every time.
        assert kinds == ["close_old_connections", "consumer", "close_old_connections"] * 3
    else:
        assert kinds == [
            "consumer",  # no connection yet: nothing to close
            "consumer",  # opens one: checked after it
            "close_old_connections",
            "close_old_connections",  # and around every later consumer
            "consumer",
            "close_old_connections",
        ]
    assert len({thread for _, thread in events}) == 1


def test_signals_bracket_consumer(runtime: Any) -> None:
    """consumer_started is sent before each consumer and consumer_finished after it."""
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


def test_process_then_worker_ready_are_sent_once_when_it_starts(runtime: Any) -> None:
    """A starting worker sends worker_process_ready, then worker_ready, once each, as sender."""
    sent: list[tuple[str, Any]] = []
    worker_process_ready.connect(
        lambda sender, **kw: sent.append(("process", sender)), weak=False, dispatch_uid="t-wpr"
    )
    worker_ready.connect(
        lambda sender, **kw: sent.append(("worker", sender)), weak=False, dispatch_uid="t-wr"
    )
    try:
        runtime([route("test.ready", lambda m: None)], threads=4)
    finally:
        worker_process_ready.disconnect(dispatch_uid="t-wpr")
        worker_ready.disconnect(dispatch_uid="t-wr")
    worker = runtime.workers[-1]
    assert sent == [("process", worker), ("worker", worker)]


def test_deny_connection_replies_close(runtime: Any) -> None:
    """A connect consumer raising DenyConnection makes the worker reply {'close': True}."""

    def connect(message: Any) -> None:
        raise DenyConnection()

    layer = runtime([route("websocket.connect", connect)])
    reply = "test.reply" + "!abc"
    layer.send("websocket.connect", {"reply_channel": reply, "path": "/"})
    got = layer.receive(["test.reply!"], block=True)
    assert got == (reply, {"close": True})


def test_websocket_close_exception(runtime: Any) -> None:
    """WebsocketCloseException(code) makes the worker send close with that code."""

    def receive(message: Any) -> None:
        raise WebsocketCloseException(4001)

    layer = runtime([route("websocket.receive", receive)])
    layer.send("websocket.receive", {"reply_channel": "srv.response!x", "text": "hi"})
    assert layer.receive(["srv.response!"], block=True) == ("srv.response!x", {"close": 4001})


def test_websocket_close_exception_validates_code() -> None:
    """WebsocketCloseException refuses reserved, out-of-range and non-int codes."""
    for bad in (999, 1002, 1006, 1015, 2999, 5000, "1000", True):
        with pytest.raises(ValueError):
            WebsocketCloseException(bad)  # type: ignore[arg-type]


def test_unrouted_message_is_dropped_and_worker_goes_on(runtime: Any) -> None:
    """A message no route matches is dropped and the worker handles the next one."""
    rec = Recorder()
    layer = runtime([route("test.only", lambda m: rec.add(m["path"]), path=r"^/yes/$")])
    layer.send("test.only", {"path": "/no/"})
    layer.send("test.only", {"path": "/yes/"})
    assert rec.wait_for(1) == ["/yes/"]


def test_messages_taken_only_when_a_thread_is_free(runtime: Any) -> None:
    """The worker takes messages off the layer only while a pool thread is free."""
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
    """filter_channels keeps channels matching the include globs and not the exclude globs."""
    channels = {"http.request", "websocket.connect", "websocket.receive", "chat-messages"}
    assert filter_channels(channels, ["websocket.*"]) == ["websocket.connect", "websocket.receive"]
    assert filter_channels(channels, None, ["websocket.*", "http.*"]) == ["chat-messages"]
    assert filter_channels(channels, ["*"], ["chat-*"]) == [
        "http.request",
        "websocket.connect",
        "websocket.receive",
    ]


def test_stop_waits_for_consumers_in_flight() -> None:
    """Stopping the service waits for running consumers to finish and their threads to exit."""
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
    WorkerService(
        reactor, wrapper.channel_layer, wrapper.router, pool, consumer_layer=wrapper
    ).setServiceParent(root)
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
    """Stopping the worker returns after graceful_timeout even with a consumer still stuck."""
    reactor = reactor_thread()
    layer = InMemoryChannelLayer()
    stuck = threading.Event()
    rec = Recorder()

    def stuck_consumer(message: Any) -> None:
        rec.add(1)
        stuck.wait(TIMEOUT)

    wrapper = ChannelLayerWrapper(layer, "default", [route("test.stuck", stuck_consumer)])
    pool = WorkerPool(reactor, 1, name="stuck-pool")
    worker = WorkerService(
        reactor,
        wrapper.channel_layer,
        wrapper.router,
        pool,
        consumer_layer=wrapper,
        graceful_timeout=0.3,
    )
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
    """With the in-memory layer, a freed thread takes the next message even while the reactor
    is busy.
    """
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


# -- one reply channel at a time, in order --------------------------------------


def test_lanes_park_sort_release_and_forget() -> None:
    """ReplyChannelLanes park messages of a busy reply channel, release them by order,
    run late ones at once and forget idle lanes.
    """
    woken: list[int] = []
    lanes = ReplyChannelLanes(max_parked=10, on_room=lambda: woken.append(1))

    def admit(reply: str | None, order: Any = None, channel: str = "websocket.receive") -> Any:
        content: dict[str, Any] = {"n": (reply, order)}
        if reply is not None:
            content["reply_channel"] = reply
        if order is not None:
            content["order"] = order
        with lanes.lock:
            return lanes.admit_locked(channel, content)

    assert admit(None) is None  # no reply channel: no lane
    assert admit("r!a", 1) == "r!a"  # free: it holds the lane now
    assert admit("r!b") == "r!b"
    # Busy: parked, sorted by order; one without an order stays where it
    # arrived, and no later message overtakes it.
    assert admit("r!a", 4) is False
    assert admit("r!a", 2) is False
    assert admit("r!a", 3) is False
    assert admit("r!a", "x") is False  # not an int: no order
    assert admit("r!a", 6) is False
    assert admit("r!a", 5) is False
    assert lanes.parked == 6
    assert len(lanes) == 2

    def drain(reply: str) -> list[Any]:
        ran = []
        while (following := lanes.release(reply)) is not None:
            ran.append(following[1]["n"][1])
        return ran

    assert drain("r!a") == [2, 3, 4, "x", 5, 6]
    # Late: an order below one already started runs at once, outside the lane.
    assert admit("r!b", 5) is False
    assert lanes.release("r!b") is not None  # order 5 starts
    assert admit("r!b", 4) is None
    assert lanes.release("r!b") is None
    assert len(lanes) == 0 and lanes.parked == 0 and lanes._queues == {}
    assert woken == []
    # A receive held back for the parked messages is resumed by the next start.
    assert admit("r!c", 1) == "r!c"
    assert admit("r!c", 2) is False
    lanes.starved = True
    assert lanes.release("r!c") is not None
    assert woken == [1] and lanes.starved is False
    assert lanes.release("r!c") is None
    assert len(lanes) == 0


class GatedConsumer:
    """
    A consumer recording ``("begin"|"end", reply_channel, order, thread)``;
    a message whose ``(reply_channel, order)`` has a gate waits for it.
    Counts two messages of one reply channel running at once.
    """

    def __init__(self) -> None:
        self.rec = Recorder()
        self.gates: dict[tuple[str, Any], threading.Event] = {}
        self.overlaps = 0
        self._active: dict[str, int] = {}
        self._lock = threading.Lock()

    def gate(self, reply: str, order: Any) -> threading.Event:
        event = self.gates[(reply, order)] = threading.Event()
        return event

    def __call__(self, message: Any) -> None:
        reply = message["reply_channel"]
        order = message.get("order")
        with self._lock:
            self._active[reply] = self._active.get(reply, 0) + 1
            if self._active[reply] > 1:
                self.overlaps += 1
        thread = threading.current_thread().name
        self.rec.add(("begin", reply, order, thread))
        gate = self.gates.get((reply, order))
        if gate is not None:
            assert gate.wait(TIMEOUT)
        with self._lock:
            self._active[reply] -= 1
        self.rec.add(("end", reply, order, thread))

    def ran(self, reply: str) -> list[tuple[str, Any]]:
        return [(kind, order) for kind, r, order, _ in self.rec.calls if r == reply]

    def ended(self, reply: str, order: Any) -> Callable[[list[Any]], bool]:
        return lambda calls: any(c[:3] == ("end", reply, order) for c in calls)


def receive(layer: Any, reply: str, order: int | None) -> None:
    content: dict[str, Any] = {"reply_channel": reply, "path": "/", "text": "x"}
    if order is not None:
        content["order"] = order
    layer.send("websocket.receive", content)


def stop_and_check_lanes(worker: WorkerService) -> None:
    """Stop the worker (it waits for every consumer): no lane is left."""
    in_reactor(worker.stopService)
    lanes = worker.lanes
    assert lanes is not None
    assert len(lanes) == 0 and lanes.parked == 0 and lanes._queues == {}


def test_one_reply_channel_runs_one_message_at_a_time_in_order(runtime: Any) -> None:
    """Messages of one reply channel run one at a time, in order, while others run meanwhile."""
    consumer = GatedConsumer()
    layer = runtime([route("websocket.receive", consumer)], threads=4)
    worker = runtime.workers[-1]
    release = consumer.gate("r!a", 1)
    for order in (1, 2, 3):
        receive(layer, "r!a", order)
    receive(layer, "r!b", 1)
    # b runs meanwhile on another thread; a's next messages, taken off the
    # layer before b, wait parked behind a's first.
    consumer.rec.wait_until(consumer.ended("r!b", 1))
    assert consumer.ran("r!a") == [("begin", 1)]
    assert worker.lanes.parked == 2
    release.set()
    consumer.rec.wait_until(consumer.ended("r!a", 3))
    assert consumer.ran("r!a") == [
        ("begin", 1),
        ("end", 1),
        ("begin", 2),
        ("end", 2),
        ("begin", 3),
        ("end", 3),
    ]
    assert consumer.overlaps == 0
    # They ran right after one another, on the thread that finished the first.
    assert len({c[3] for c in consumer.rec.calls if c[1] == "r!a"}) == 1
    stop_and_check_lanes(worker)


def test_parked_messages_run_sorted_by_order(runtime: Any) -> None:
    """Messages parked behind a busy reply channel run sorted by their order key."""
    consumer = GatedConsumer()
    layer = runtime([route("websocket.receive", consumer)], threads=4)
    release = consumer.gate("r!a", 1)
    for order in (1, 4, 3, 2):
        receive(layer, "r!a", order)
    receive(layer, "r!b", 1)
    consumer.rec.wait_until(consumer.ended("r!b", 1))
    release.set()
    consumer.rec.wait_until(consumer.ended("r!a", 4))
    assert [o for kind, o in consumer.ran("r!a") if kind == "begin"] == [1, 2, 3, 4]
    assert consumer.overlaps == 0
    stop_and_check_lanes(runtime.workers[-1])


def test_late_message_runs_at_once(runtime: Any) -> None:
    """A message whose order is below one already started runs at once, not parked."""
    # Order 1 taken after order 2 started (ConsumeLater put it back, say):
    # waiting behind 2 would only deadlock enforce_ordering, which waits for 1.
    consumer = GatedConsumer()
    layer = runtime([route("websocket.receive", consumer)], threads=2)
    release = consumer.gate("r!a", 2)
    receive(layer, "r!a", 2)
    consumer.rec.wait_until(lambda calls: len(calls) == 1)
    receive(layer, "r!a", 1)
    consumer.rec.wait_until(consumer.ended("r!a", 1))
    assert consumer.ran("r!a") == [("begin", 2), ("begin", 1), ("end", 1)]
    release.set()
    consumer.rec.wait_until(consumer.ended("r!a", 2))
    stop_and_check_lanes(runtime.workers[-1])


def test_a_thread_taking_its_next_message_parks_it_too(runtime: Any) -> None:
    """A thread taking its own next message parks one for a busy reply channel, then goes on."""
    # With the in-memory layer a thread that finished takes the next message
    # itself; one for a busy reply channel is parked, and it takes another.
    consumer = GatedConsumer()
    layer = runtime([route("websocket.receive", consumer)], threads=2)
    worker = runtime.workers[-1]
    release_a = consumer.gate("r!a", 1)
    release_c = consumer.gate("r!c", 1)
    receive(layer, "r!a", 1)
    receive(layer, "r!c", 1)
    consumer.rec.wait_until(lambda calls: len(calls) == 2)
    # Both threads busy: nothing more is taken by the reactor.
    receive(layer, "r!a", 2)
    receive(layer, "r!d", 1)
    release_c.set()
    consumer.rec.wait_until(consumer.ended("r!d", 1))
    assert consumer.ran("r!a") == [("begin", 1)]
    assert worker.lanes.parked == 1
    release_a.set()
    consumer.rec.wait_until(consumer.ended("r!a", 2))
    assert consumer.ran("r!a") == [("begin", 1), ("end", 1), ("begin", 2), ("end", 2)]
    stop_and_check_lanes(worker)


def test_parked_messages_count_against_what_is_taken(runtime: Any) -> None:
    """At most max_parked messages are parked; the rest of a flood stays in the layer."""
    consumer = GatedConsumer()
    layer = runtime([route("websocket.receive", consumer)], threads=2, max_parked=2)
    worker = runtime.workers[-1]
    release = consumer.gate("r!a", 1)
    receive(layer, "r!a", 1)
    consumer.rec.wait_until(lambda calls: len(calls) == 1)
    for order in range(2, 12):
        receive(layer, "r!a", order)

    def state() -> tuple[int, int]:
        pending = layer.channel_statistics("websocket.receive")["messages_pending"]
        return worker.lanes.parked, pending

    # One thread is idle, but a flooding socket does not move its backlog
    # into memory: at most max_parked wait here, the rest in the layer.
    assert in_reactor(state) == (2, 8)
    release.set()
    consumer.rec.wait_until(consumer.ended("r!a", 11))
    assert [o for kind, o in consumer.ran("r!a") if kind == "begin"] == list(range(1, 12))
    assert consumer.overlaps == 0
    stop_and_check_lanes(worker)


def test_many_sockets_in_order_and_nothing_left_behind(runtime: Any) -> None:
    """Many sockets at once each get their messages in order, one at a time, no lane left."""
    consumer = GatedConsumer()
    layer = runtime([route("websocket.receive", consumer)], threads=4)
    # 90 messages: within the channel's capacity (100).
    sockets = ["r!s%d" % i for i in range(30)]
    for order in range(1, 4):
        for reply in sockets:
            receive(layer, reply, order)
    consumer.rec.wait_for(2 * 3 * len(sockets))
    for reply in sockets:
        assert [o for kind, o in consumer.ran(reply) if kind == "begin"] == [1, 2, 3]
    assert consumer.overlaps == 0
    stop_and_check_lanes(runtime.workers[-1])


def test_consume_later_does_not_stall_the_lane(runtime: Any) -> None:
    """ConsumeLater frees the reply channel's lane, so later messages and the retry both run."""
    rec = Recorder()

    def consumer(message: Any) -> None:
        rec.add((message["order"], message.get("__retries__", 0)))
        if message["order"] == 1 and not message.get("__retries__"):
            raise ConsumeLater()

    layer = runtime([route("websocket.receive", consumer)], threads=2)
    receive(layer, "r!a", 1)
    receive(layer, "r!a", 2)
    assert sorted(rec.wait_for(3)) == [(1, 0), (1, 1), (2, 0)]
    stop_and_check_lanes(runtime.workers[-1])


def test_messages_without_reply_channel_run_concurrently(runtime: Any) -> None:
    """Messages without a reply channel run concurrently on different threads."""
    both = threading.Barrier(2, timeout=TIMEOUT)
    rec = Recorder()

    def consumer(message: Any) -> None:
        both.wait()  # BrokenBarrierError unless the other one runs meanwhile
        rec.add(message["n"])

    layer = runtime([route("test.plain", consumer)], threads=2)
    layer.send("test.plain", {"n": 1})
    layer.send("test.plain", {"n": 2})
    assert sorted(rec.wait_for(2)) == [1, 2]


@pytest.mark.parametrize("how", ["argument", "setting"])
def test_ordering_off_runs_one_reply_channel_concurrently(runtime: Any, how: str) -> None:
    """With ordering off, by argument or setting, one socket's messages run concurrently."""
    both = threading.Barrier(2, timeout=TIMEOUT)
    rec = Recorder()

    def consumer(message: Any) -> None:
        both.wait()
        rec.add(message["order"])

    routes = [route("websocket.receive", consumer)]
    if how == "argument":
        layer = runtime(routes, threads=2, ordered=False)
    else:
        with override_settings(CHANSERV_ORDERED_REPLY_CHANNELS=False):
            layer = runtime(routes, threads=2)
    assert runtime.workers[-1].lanes is None
    receive(layer, "r!a", 1)
    receive(layer, "r!a", 2)
    assert sorted(rec.wait_for(2)) == [1, 2]


def test_ordering_is_on_by_default(runtime: Any) -> None:
    """Reply-channel ordering is on by default, with max_parked equal to channel capacity."""
    runtime([route("websocket.receive", lambda m: None)])
    worker = runtime.workers[-1]
    assert worker.ordered is True and worker.lanes is not None
    # As many parked messages as the channel may hold in the layer.
    assert worker.lanes.max_parked == 100


def test_a_long_run_of_parked_messages_is_taken_without_recursing(runtime: Any) -> None:
    """A backlog of 1,500 parked messages of one socket is taken in a loop, not by recursion,
    and runs in order.
    """
    # While the reactor is busy, 1,500 messages of one socket pile up in the
    # layer.  Each one taken is parked, leaving the idle thread idle, so the
    # worker takes the next at once: in a loop, not one call deeper each time.
    reactor = reactor_thread()
    consumer = GatedConsumer()
    layer = runtime([route("websocket.receive", consumer)], threads=2, capacity=2000)
    worker = runtime.workers[-1]
    assert worker.lanes.max_parked == 2000  # the channel's capacity
    release = consumer.gate("r!a", 1)
    receive(layer, "r!a", 1)
    consumer.rec.wait_until(lambda calls: len(calls) == 1)
    reactor_blocked = threading.Event()
    release_reactor = threading.Event()

    def block() -> None:
        reactor_blocked.set()
        release_reactor.wait(TIMEOUT)

    reactor.callFromThread(block)
    assert reactor_blocked.wait(TIMEOUT)
    try:
        for order in range(2, 1502):
            receive(layer, "r!a", order)
    finally:
        release_reactor.set()
    assert in_reactor(lambda: worker.lanes.parked) == 1500
    release.set()
    consumer.rec.wait_until(consumer.ended("r!a", 1501))
    assert [o for kind, o in consumer.ran("r!a") if kind == "begin"] == list(range(1, 1502))
    stop_and_check_lanes(worker)
