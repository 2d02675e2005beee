"""
WorkerService with a layer that takes its consumers' held sends
(ISendHandOff): a reply channel's next message waits until the sends of
the one before are through, other messages do not, and stopping waits for
the sends in flight.  First on the in-memory layer with a hand-off the
test lets through, then on the Redis layer and a real redis-server.  Real
pool threads and the global reactor in a background thread, as in
tests/test_worker.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.logger import capturedLogs
from zope.interface import alsoProvides

from chanserv.asgi import ChannelLayerWrapper
from chanserv.channel import Channel, pending_message_store
from chanserv.interfaces import ISendHandOff
from chanserv.layers import InMemoryChannelLayer
from chanserv.layers.redis import RedisChannelLayer
from chanserv.routing import route
from chanserv.worker import WorkerService
from tests.layers.test_redis import wait_up
from tests.redisserver import RedisServer
from tests.support import in_reactor
from tests.test_worker import (  # noqa: F401  (runtime: a fixture)
    TIMEOUT,
    GatedConsumer,
    Recorder,
    receive,
    runtime,
    stop_and_check_lanes,
)


def wait_until(predicate: Callable[[], bool]) -> None:
    """Wait until ``predicate()`` (called on the reactor thread) is true."""
    deadline = time.monotonic() + TIMEOUT
    while not in_reactor(predicate):
        assert time.monotonic() < deadline, "never came true"
        time.sleep(0.005)


class HeldHandOffs:
    """
    ``hand_off_sends`` for the in-memory layer: it takes every hand-off and
    holds it until the test lets it through (:meth:`let_through`), which
    makes its sends on the reactor thread and calls its ``done([])``.
    """

    def __init__(self, layer: InMemoryChannelLayer) -> None:
        self.layer = layer
        self.handed: list[tuple[list[tuple[str, str, Any]], Any]] = []
        self.through: set[int] = set()
        #: False: hand-offs are refused (the threads send themselves).
        self.taking = True
        self._cond = threading.Condition()

    def hand_off_sends(
        self, sends: Any, full_timeout: float, blocked_timeout: float, done: Any
    ) -> bool:
        with self._cond:
            if not self.taking:
                return False
            self.handed.append((list(sends), done))
            self._cond.notify_all()
        return True

    def wait_for(self, n: int) -> list[list[tuple[str, str, Any]]]:
        """The sends of the first ``n`` hand-offs (each ``(kind, name, content)``)."""
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self.handed) >= n, timeout=TIMEOUT)
            assert ok, "only %d of %d hand-offs came" % (len(self.handed), n)
            return [
                [(kind, name, self.layer.unpack(data)) for kind, name, data in sends]
                for sends, _ in self.handed
            ]

    def let_through(self, i: int) -> None:
        """Make the ``i``-th hand-off's sends, and say it is through."""
        with self._cond:
            sends, done = self.handed[i]
        assert i not in self.through
        self.through.add(i)

        def send() -> None:
            for kind, name, data in sends:
                if kind == "group":
                    self.layer.send_group_prepared(name, data)
                else:
                    self.layer.send_prepared(name, data)
            done([])

        in_reactor(send)

    def let_all_through(self) -> None:
        """Let every hand-off held so far through."""
        for i in range(len(self.handed)):
            if i not in self.through:
                self.let_through(i)

    def stop_holding(self) -> None:
        """Refuse hand-offs from now on, and let the ones held through."""
        with self._cond:
            self.taking = False
        self.let_all_through()


@pytest.fixture
def held(
    runtime: Any,  # noqa: F811
) -> Iterator[Callable[..., Any]]:
    """runtime(), its layer holding every hand-off until the test lets it through."""
    made: list[HeldHandOffs] = []

    def start(
        routing: list[Any], capacity: int = 100, **kw: Any
    ) -> tuple[ChannelLayerWrapper, HeldHandOffs]:
        layer = InMemoryChannelLayer(capacity=capacity)
        hand_offs = HeldHandOffs(layer)
        layer.hand_off_sends = hand_offs.hand_off_sends  # type: ignore[attr-defined]
        # The worker hands off only to a layer that declares it can.
        alsoProvides(layer, ISendHandOff)
        made.append(hand_offs)
        return runtime(routing, layer=layer, **kw), hand_offs

    start.workers = runtime.workers  # type: ignore[attr-defined]
    yield start
    # None left held: the worker's stop would wait for them.
    for hand_offs in made:
        hand_offs.stop_holding()


def replier(rec: Recorder) -> Callable[[Any], None]:
    """A consumer that replies with its message's n (and records it)."""

    def consumer(message: Any) -> None:
        rec.add((message.get("reply_channel"), message["n"]))
        if message.reply_channel is not None:
            message.reply_channel.send({"n": message["n"]})
        else:
            Channel("test.out").send({"n": message["n"]})

    return consumer


def replies(layer: Any, channel: str) -> list[Any]:
    """Everything waiting on ``channel`` (a process-local prefix or a name)."""
    got: list[tuple[str, Any]] = []
    while True:
        name, content = layer.receive([channel])
        if name is None:
            return got
        got.append((name, content["n"]))


def first_held_second_sent(
    held: Any,
) -> tuple[Recorder, Any, HeldHandOffs, WorkerService]:
    """
    A replier worker with two threads: r!a's first message ran and its
    sends are held; r!a's second message is sent.
    """
    rec = Recorder()
    layer, hand_offs = held([route("test.in", replier(rec))], threads=2)
    worker = held.workers[-1]
    layer.send("test.in", {"reply_channel": "r!a", "n": 1})
    assert hand_offs.wait_for(1) == [[("channel", "r!a", {"n": 1})]]
    layer.send("test.in", {"reply_channel": "r!a", "n": 2})
    return rec, layer, hand_offs, worker


def test_a_reply_channel_waits_for_the_hand_off_of_its_previous_message(held: Any) -> None:
    """
    A reply channel's next message runs only once the sends its previous
    message handed off are through, and then at once.
    """
    rec, layer, hand_offs, worker = first_held_second_sent(held)
    # Every thread free, yet 2 waits, parked, for 1's sends.
    wait_until(lambda: worker.lanes.parked == 1 and worker.pool.busy == 0)
    assert worker.hand_offs_in_flight == 1
    assert rec.calls == [("r!a", 1)]
    assert replies(layer, "r!") == []  # the hand-off holds 1's reply
    hand_offs.let_through(0)
    assert rec.wait_for(2) == [("r!a", 1), ("r!a", 2)]
    assert hand_offs.wait_for(2)[1] == [("channel", "r!a", {"n": 2})]
    hand_offs.let_through(1)
    assert replies(layer, "r!") == [("r!a", 1), ("r!a", 2)]
    stop_and_check_lanes(worker)
    assert worker.hand_offs_in_flight == 0


def test_other_messages_do_not_wait_for_a_hand_off(held: Any) -> None:
    """While one reply channel's sends are held, other reply channels and messages without
    one run, and the held reply channel's next message waits.
    """
    rec, layer, hand_offs, worker = first_held_second_sent(held)
    layer.send("test.in", {"reply_channel": "r!b", "n": 3})
    layer.send("test.in", {"n": 4})
    layer.send("test.in", {"reply_channel": "r!b", "n": 5})
    # r!b's first hand-off is held too: its second message waits in turn.
    rec.wait_until(lambda calls: {n for _, n in calls} >= {1, 3, 4})
    sends = hand_offs.wait_for(3)
    wait_until(lambda: worker.lanes.parked == 2 and worker.pool.busy == 0)
    assert sorted(rec.calls, key=str) == sorted([("r!a", 1), ("r!b", 3), (None, 4)], key=str)
    assert sorted(s[0][1] for s in sends) == ["r!a", "r!b", "test.out"]
    assert worker.hand_offs_in_flight == 3
    hand_offs.let_all_through()
    rec.wait_for(5)
    hand_offs.wait_for(5)
    hand_offs.let_all_through()
    got = replies(layer, "r!")
    assert [n for name, n in got if name == "r!a"] == [1, 2]
    assert [n for name, n in got if name == "r!b"] == [3, 5]
    assert replies(layer, "test.out") == [("test.out", 4)]
    stop_and_check_lanes(worker)


def test_a_gated_reply_channel_keeps_one_message_at_a_time(held: Any) -> None:
    """With hand-offs, a reply channel's messages still run one at a time, in order."""
    consumer = GatedConsumer()

    def consumer_replying(message: Any) -> None:
        consumer(message)
        message.reply_channel.send({"n": message["order"]})

    layer, hand_offs = held([route("websocket.receive", consumer_replying)], threads=3)
    for order in (1, 2, 3):
        receive(layer, "r!a", order)
    for n in range(1, 4):
        hand_offs.wait_for(n)
        assert [kind for kind, _ in consumer.ran("r!a")] == ["begin", "end"] * n
        hand_offs.let_through(n - 1)
    consumer.rec.wait_until(consumer.ended("r!a", 3))
    assert [o for kind, o in consumer.ran("r!a") if kind == "begin"] == [1, 2, 3]
    assert consumer.overlaps == 0
    assert replies(layer, "r!") == [("r!a", 1), ("r!a", 2), ("r!a", 3)]
    stop_and_check_lanes(held.workers[-1])


@pytest.mark.parametrize("reply_channel", ["r!a", None], ids=["reply-channel", "none"])
def test_stop_waits_for_the_hand_offs_in_flight(held: Any, reply_channel: str | None) -> None:
    """stopService's Deferred fires only once the sends handed off are through."""
    rec = Recorder()
    layer, hand_offs = held([route("test.in", replier(rec))], threads=2)
    worker = held.workers[-1]
    content: dict[str, Any] = {"n": 1}
    if reply_channel is not None:
        content["reply_channel"] = reply_channel
    layer.send("test.in", content)
    hand_offs.wait_for(1)
    stopped: Deferred[None] = in_reactor(lambda: [worker.stopService()])[0]
    wait_until(lambda: worker.pool.busy == 0)
    assert worker.hand_offs_in_flight == 1
    assert not stopped.called
    hand_offs.let_through(0)
    in_reactor(lambda: stopped)
    assert worker.hand_offs_in_flight == 0


def test_stop_waits_for_a_parked_message_and_its_hand_off(held: Any) -> None:
    """A message parked behind a held hand-off still runs while stopping, and stop waits for its
    sends too.
    """
    rec, layer, hand_offs, worker = first_held_second_sent(held)
    wait_until(lambda: worker.lanes.parked == 1)
    stopped: Deferred[None] = in_reactor(lambda: [worker.stopService()])[0]
    hand_offs.let_through(0)
    hand_offs.wait_for(2)
    wait_until(lambda: worker.pool.busy == 0)
    assert not stopped.called
    hand_offs.let_through(1)
    in_reactor(lambda: stopped)
    assert rec.calls == [("r!a", 1), ("r!a", 2)]
    assert replies(layer, "r!") == [("r!a", 1), ("r!a", 2)]


# -- the Redis layer, on a real redis-server -----------------------------------------


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    server = RedisServer()
    server.start()
    yield server.url
    server.cleanup()


@pytest.fixture
def redis_runtime(
    runtime: Any,  # noqa: F811
    redis_url: str,
) -> Iterator[Callable[..., Any]]:
    """runtime() on a RedisChannelLayer of its own (emptied afterwards)."""
    layers: list[RedisChannelLayer] = []

    def start(
        routing: list[Any], threads: int = 2, **layer_kw: Any
    ) -> tuple[ChannelLayerWrapper, WorkerService]:
        n = len(layers)
        layer = RedisChannelLayer(
            hosts=[redis_url],
            prefix="ho%d:" % n,
            stats_prefix="hom%d:" % n,
            blpop_timeout=1,
            connection_kwargs={"socket_timeout": 2},
            **layer_kw,
        )
        layers.append(layer)
        wrapper = runtime(routing, threads=threads, layer=layer)
        wait_up(layer)
        return wrapper, runtime.workers[-1]

    yield start
    for layer in layers:
        in_reactor(layer.flush_twisted)


def count_hand_offs(layer: RedisChannelLayer, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """What each of the layer's hand_off_sends calls returned, from now on."""
    taken: list[bool] = []
    real = layer.hand_off_sends

    def counting(*args: Any) -> bool:
        result = real(*args)
        taken.append(result)
        return result

    monkeypatch.setattr(layer, "hand_off_sends", counting)
    return taken


def test_redis_replies_to_one_reply_channel_arrive_in_order(
    redis_runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A consumer replying to 500 messages of one reply channel: every reply arrives, in order,
    each handed off to the Redis layer.
    """
    count = 500
    rec = Recorder()
    wrapper, worker = redis_runtime([route("test.in", replier(rec))], threads=4, capacity=1000)
    layer = wrapper.channel_layer
    taken = count_hand_offs(layer, monkeypatch)
    for n in range(count):
        wrapper.send("test.in", {"reply_channel": "r!a", "n": n})
    got: list[int] = []
    deadline = time.monotonic() + 30
    while len(got) < count and time.monotonic() < deadline:
        name, content = wrapper.receive(["r!"], block=True)
        if name is not None:
            assert name == "r!a"
            got.append(content["n"])
    assert got == list(range(count))
    in_reactor(worker.stopService)
    assert taken == [True] * count
    assert worker.hand_offs_in_flight == 0
    assert (layer.hand_off_budget.messages, layer.hand_off_budget.bytes) == (0, 0)


def test_redis_send_to_a_channel_that_stays_full_is_dropped_counted_and_logged(
    redis_runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handed-off send to a channel that stays full is dropped after full_timeout, counted in
    dropped and logged, and the consumer's other sends still go.
    """
    monkeypatch.setattr(pending_message_store, "full_timeout", 0.2)
    rec = Recorder()

    def consumer(message: Any) -> None:
        Channel("test.full").send({"n": 1})
        Channel("test.other").send({"n": 2})
        rec.add("ran")

    wrapper, worker = redis_runtime(
        [route("test.drop", consumer)], channel_capacity={"test.full": 1}
    )
    layer = wrapper.channel_layer
    taken = count_hand_offs(layer, monkeypatch)
    wrapper.send("test.full", {"n": 0})
    before = pending_message_store.dropped
    with capturedLogs() as events:
        wrapper.send("test.drop", {})
        rec.wait_for(1)
        # Stopping waits for the hand-off, retry included, to be through.
        in_reactor(worker.stopService)
    assert taken == [True]
    assert pending_message_store.dropped - before == 1
    full = [e for e in events if e.get("channel") == "test.full"]
    assert [(e["log_level"].name, e["timeout"]) for e in full] == [("error", 0.2)]
    assert "stayed full" in full[0]["log_format"]
    assert wrapper.receive(["test.full"]) == ("test.full", {"n": 0})
    assert wrapper.receive(["test.full"]) == (None, None)
    assert wrapper.receive(["test.other"]) == ("test.other", {"n": 2})
