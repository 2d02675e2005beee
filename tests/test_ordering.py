"""
enforce_ordering (chanserv.ordering, exported by chanserv.sessions): in-order
runs, waiting, the wait channel, closing with 1011, and many threads.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import override_settings

from chanserv import locks, ordering
from chanserv.asgi import ChannelLayerWrapper, channel_layers
from chanserv.channel import pending_message_store
from chanserv.exceptions import ConsumeLater
from chanserv.layers import InMemoryChannelLayer
from chanserv.message import Message
from chanserv.ordering import ORDER_KEY, socket_locks, wait_channel_name
from chanserv.routing import route
from chanserv.service import ChanservService, LayerService
from chanserv.sessions import channel_session, enforce_ordering, session_for_reply_channel
from chanserv.signals import consumer_finished, consumer_started
from chanserv.threads import WorkerPool
from chanserv.worker import WorkerService
from tests.consumer_support import (  # noqa: F401
    db_fixture,
    layer_fixture,
    receive_all,
    replies,
    reply_channel_name,
    run_consumer,
)
from tests.support import in_reactor, reactor_thread

pytestmark = pytest.mark.usefixtures("db")

TIMEOUT = 30  # a failure guard only: never reached when the code works


class Recorder:
    """Orders seen by a consumer, with a wait for N of them."""

    def __init__(self) -> None:
        self.orders: list[int] = []
        self._cond = threading.Condition()

    def __call__(self, message: Message, **kwargs: Any) -> None:
        with self._cond:
            self.orders.append(message.content["order"])
            self._cond.notify_all()

    def wait_for(self, n: int) -> list[int]:
        with self._cond:
            done = self._cond.wait_for(lambda: len(self.orders) >= n, timeout=TIMEOUT)
        assert done, "only %d of %d messages were consumed" % (len(self.orders), n)
        return list(self.orders)


def msg(reply: str, order: int, **extra: Any) -> dict[str, Any]:
    content = {"reply_channel": reply, "path": "/", "order": order}
    content.update(extra)
    return content


@pytest.fixture
def no_local_wait(monkeypatch: Any) -> None:
    """Early messages go to the wait channel at once, no watcher thread."""
    monkeypatch.setattr(ordering, "LOCAL_WAIT", 0.0)
    monkeypatch.setattr(ordering, "REMOTE_WAIT", 0.0)
    monkeypatch.setattr(locks, "MAX_GAP_WATCHERS", 0)


def test_decorator_forms() -> None:
    """enforce_ordering works with or without parentheses; slight=True raises ValueError."""

    def consumer(message: Message) -> None:
        pass

    assert enforce_ordering(consumer).__name__ == "consumer"
    assert enforce_ordering()(consumer).__name__ == "consumer"
    with pytest.raises(ValueError, match="Slight ordering"):
        enforce_ordering(slight=True)
    with pytest.raises(ValueError, match="Slight ordering"):
        enforce_ordering(consumer, slight=True)


def test_missing_order_is_an_error(layer: Any) -> None:
    """enforce_ordering raises ValueError for a message with no order or a non-int order."""
    consumer = enforce_ordering(Recorder())
    with pytest.raises(ValueError, match="No `order` value"):
        run_consumer(consumer, "websocket.receive", {"reply_channel": "a!b", "text": "x"}, layer)
    with pytest.raises(ValueError, match="must be an int"):
        run_consumer(consumer, "websocket.receive", msg("a!b", "x"), layer)  # type: ignore[arg-type]


def test_missing_reply_channel_is_an_error(layer: Any) -> None:
    """enforce_ordering raises ValueError for a message without a reply_channel."""
    consumer = enforce_ordering(Recorder())
    with pytest.raises(ValueError, match="reply_channel"):
        run_consumer(consumer, "websocket.receive", {"order": 1}, layer)


def test_in_order_messages_run_and_advance_the_counter(layer: Any) -> None:
    """In-order messages run at once and advance the session's next-order counter."""
    reply = reply_channel_name()
    rec = Recorder()
    consumer = enforce_ordering(rec)
    for n in range(3):
        run_consumer(consumer, "websocket.receive", msg(reply, n), layer)
    assert rec.orders == [0, 1, 2]
    assert session_for_reply_channel(reply)[ORDER_KEY] == 3


def test_works_on_methods(layer: Any) -> None:
    """enforce_ordering works on a consumer method, finding the message after self."""
    reply = reply_channel_name()
    seen = []

    class Consumer:
        @enforce_ordering
        def receive(self, message: Message) -> None:
            seen.append((self.__class__.__name__, message["order"]))

    run_consumer(Consumer().receive, "websocket.connect", msg(reply, 0), layer)
    assert seen == [("Consumer", 0)]


def test_out_of_order_waits_on_the_wait_channel_then_drains(
    layer: Any, no_local_wait: None
) -> None:
    """An early message is put on the wait channel and requeued once the due one has run."""
    reply = reply_channel_name()
    rec = Recorder()
    consumer = enforce_ordering(rec)
    run_consumer(consumer, "websocket.connect", msg(reply, 0), layer)
    run_consumer(consumer, "websocket.receive", msg(reply, 2, text="second"), layer)
    assert rec.orders == [0]
    assert layer.channel_statistics(wait_channel_name(reply))["messages_pending"] == 1
    # The due message runs, then puts the waiting one back on its channel.
    run_consumer(consumer, "websocket.receive", msg(reply, 1, text="first"), layer)
    assert rec.orders == [0, 1]
    [requeued] = receive_all(layer, "websocket.receive")
    assert requeued == msg(reply, 2, text="second")  # original_channel removed
    run_consumer(consumer, "websocket.receive", requeued, layer)
    assert rec.orders == [0, 1, 2]


def test_wait_channel_name() -> None:
    """A reply channel's wait channel is __wait__. plus its name with ! turned into ?."""
    assert wait_channel_name("daphne.response.AB!cd") == "__wait__.daphne.response.AB?cd"


def test_already_consumed_order_is_dropped(layer: Any) -> None:
    """A repeated order that already ran is dropped, neither run nor requeued."""
    reply = reply_channel_name()
    rec = Recorder()
    consumer = enforce_ordering(rec)
    run_consumer(consumer, "websocket.connect", msg(reply, 0), layer)
    run_consumer(consumer, "websocket.receive", msg(reply, 1), layer)
    run_consumer(consumer, "websocket.receive", msg(reply, 1), layer)
    assert rec.orders == [0, 1]
    assert receive_all(layer, wait_channel_name(reply)) == []
    assert receive_all(layer, "websocket.receive") == []


def test_order_one_starts_when_connect_was_not_ordered(layer: Any) -> None:
    """Order 1 runs first when the connect consumer was not under enforce_ordering."""
    reply = reply_channel_name()
    rec = Recorder()
    consumer = enforce_ordering(rec)
    run_consumer(channel_session(lambda m: None), "websocket.connect", msg(reply, 0), layer)
    run_consumer(consumer, "websocket.receive", msg(reply, 1), layer)
    run_consumer(consumer, "websocket.receive", msg(reply, 2), layer)
    assert rec.orders == [1, 2]


def test_consume_later_does_not_advance(layer: Any) -> None:
    """ConsumeLater under enforce_ordering requeues the message and leaves the counter as is."""
    reply = reply_channel_name()
    attempts = []

    @enforce_ordering
    def consumer(message: Message) -> None:
        attempts.append(message["order"])
        if len(attempts) == 1:
            raise ConsumeLater()

    run_consumer(consumer, "websocket.connect", msg(reply, 0), layer)
    [requeued] = receive_all(layer, "websocket.connect")
    assert session_for_reply_channel(reply).get(ORDER_KEY) is None
    run_consumer(consumer, "websocket.connect", requeued, layer)
    assert attempts == [0, 0]
    assert session_for_reply_channel(reply)[ORDER_KEY] == 1


def test_consumer_error_still_advances(layer: Any) -> None:
    """A consumer that raises still advances the counter and saves its channel session."""
    reply = reply_channel_name()

    @enforce_ordering
    def consumer(message: Message) -> None:
        message.channel_session["seen"] = message["order"]  # type: ignore[attr-defined]
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        run_consumer(consumer, "websocket.connect", msg(reply, 0), layer)
    session = session_for_reply_channel(reply)
    assert session[ORDER_KEY] == 1
    assert session["seen"] == 0


def test_sends_are_flushed_before_the_next_message_may_run(layer: Any) -> None:
    """enforce_ordering flushes a consumer's held sends before the next message may run."""
    reply = reply_channel_name()

    @enforce_ordering
    def consumer(message: Message) -> None:
        message.reply_channel.send({"text": "n%d" % message["order"]})  # type: ignore[union-attr]

    message = Message(msg(reply, 0), "websocket.connect", layer)
    consumer_started.send(sender=None, environ={})
    try:
        consumer(message)
        # Still inside the consumer run: the reply has gone already.
        assert replies(layer, reply) == [{"text": "n0"}]
        assert pending_message_store.is_active()
    finally:
        consumer_finished.send(sender=None)


def test_full_wait_channel_closes_with_1011(layer: Any, no_local_wait: None) -> None:
    """A full wait channel closes the socket with 1011; its later messages are dropped."""
    small = ChannelLayerWrapper(
        InMemoryChannelLayer(channel_capacity={"__wait__.*": 1}), "default", []
    )
    reply = reply_channel_name()
    rec = Recorder()
    consumer = enforce_ordering(rec)
    run_consumer(consumer, "websocket.connect", msg(reply, 0), small)
    run_consumer(consumer, "websocket.receive", msg(reply, 2), small)
    assert replies(small, reply) == []
    run_consumer(consumer, "websocket.receive", msg(reply, 3), small)
    assert replies(small, reply) == [{"close": 1011}]
    assert rec.orders == [0]
    # Later messages of the closed socket are dropped quietly.
    run_consumer(consumer, "websocket.receive", msg(reply, 4), small)
    assert replies(small, reply) == []
    assert rec.orders == [0]


def test_gap_older_than_the_timeout_closes_with_1011(
    layer: Any, no_local_wait: None, monkeypatch: Any
) -> None:
    """A gap in the orders older than the gap timeout closes the socket with 1011."""
    now = [1000.0]
    monkeypatch.setattr(ordering, "wall_clock", lambda: now[0])
    reply = reply_channel_name()
    rec = Recorder()
    consumer = enforce_ordering(rec)
    run_consumer(consumer, "websocket.connect", msg(reply, 0), layer)
    run_consumer(consumer, "websocket.receive", msg(reply, 2), layer)  # 1 is lost
    now[0] += 9.5
    run_consumer(consumer, "websocket.receive", msg(reply, 3), layer)
    assert replies(layer, reply) == []
    now[0] += 0.5  # 10 s after the gap was first seen
    run_consumer(consumer, "websocket.receive", msg(reply, 4), layer)
    assert replies(layer, reply) == [{"close": 1011}]
    assert rec.orders == [0]


@override_settings(CHANNEL_ORDERING_GAP_TIMEOUT=0)
def test_gap_watcher_closes_with_1011(layer: Any) -> None:
    """With the in-memory layer, a gap outlasting its timeout closes the socket with 1011."""
    # With the in-memory layer a thread waits out the gap itself (here 0 s).
    reply = reply_channel_name()
    rec = Recorder()
    consumer = enforce_ordering(rec)
    run_consumer(consumer, "websocket.connect", msg(reply, 0), layer)
    run_consumer(consumer, "websocket.receive", msg(reply, 2), layer)
    assert replies(layer, reply) == [{"close": 1011}]
    assert rec.orders == [0]
    assert receive_all(layer, wait_channel_name(reply)) == []


@pytest.fixture
def waiting_signal(monkeypatch: Any) -> Iterator[threading.Event]:
    """An event set when a thread starts waiting for its turn."""
    event = threading.Event()
    original = socket_locks._wait_turn_locked

    def wait_turn(*args: Any, **kwargs: Any) -> None:
        event.set()
        original(*args, **kwargs)

    monkeypatch.setattr(socket_locks, "_wait_turn_locked", wait_turn)
    yield event


@override_settings(CHANNEL_ORDERING_GAP_TIMEOUT=TIMEOUT)
def test_early_message_waits_in_its_thread_for_its_turn(
    layer: Any, waiting_signal: threading.Event
) -> None:
    """An early message waits in its thread for its turn and runs right after the due one."""
    reply = reply_channel_name()
    rec = Recorder()
    consumer = enforce_ordering(rec)
    run_consumer(consumer, "websocket.connect", msg(reply, 0), layer)
    early = threading.Thread(
        target=run_consumer, args=(consumer, "websocket.receive", msg(reply, 2), layer)
    )
    early.start()
    assert waiting_signal.wait(TIMEOUT)
    run_consumer(consumer, "websocket.receive", msg(reply, 1), layer)
    early.join(TIMEOUT)
    assert not early.is_alive()
    assert rec.orders == [0, 1, 2]
    assert receive_all(layer, wait_channel_name(reply)) == []


# -- many threads, the real worker -------------------------------------------------


@pytest.fixture
def worker_runtime() -> Iterator[Any]:
    """Layer + pool + worker on the reactor thread, for a routing list."""
    reactor = reactor_thread()
    started: list[ChanservService] = []
    previous: list[Any] = []

    def start(routing: list[Any], threads: int) -> ChannelLayerWrapper:
        wrapper = ChannelLayerWrapper(InMemoryChannelLayer(), "default", routing)
        previous.append(channel_layers.set("default", wrapper))
        root = ChanservService()
        LayerService(reactor, wrapper).setServiceParent(root)
        pool = WorkerPool(reactor, threads)
        pool.setServiceParent(root)
        WorkerService(
            reactor, wrapper.channel_layer, wrapper.router, pool, consumer_layer=wrapper
        ).setServiceParent(root)
        in_reactor(root.startService)
        started.append(root)
        return wrapper

    yield start
    for root in started:
        in_reactor(root.stopService)
    if previous:
        channel_layers.set("default", previous[0])


def send_waiting(layer: Any, channel: str, content: dict[str, Any]) -> None:
    """Send, waiting while the channel is full (back-pressure)."""
    layer.send_prepared_wait(channel, layer.prepare(content), TIMEOUT)


def test_thousand_messages_eight_threads_in_order(worker_runtime: Any) -> None:
    """1,000 messages of one socket on eight worker threads run strictly in order."""
    rec = Recorder()
    routing = [
        route("websocket.connect", enforce_ordering(rec)),
        route("websocket.receive", enforce_ordering(rec)),
    ]
    layer = worker_runtime(routing, threads=8)
    reply = reply_channel_name()
    send_waiting(layer, "websocket.connect", msg(reply, 0))
    rec.wait_for(1)
    for n in range(1, 1001):
        send_waiting(layer, "websocket.receive", msg(reply, n, text=str(n)))
    assert rec.wait_for(1001) == list(range(1001))
    with socket_locks.hold(reply):  # the last save follows the last record
        assert session_for_reply_channel(reply)[ORDER_KEY] == 1001
    assert receive_all(layer, wait_channel_name(reply)) == []


def test_channel_session_updates_are_not_lost_between_threads(worker_runtime: Any) -> None:
    """Channel session updates of one socket on eight threads are never lost."""
    done = Recorder()

    @channel_session
    def count(message: Message) -> None:
        session = message.channel_session  # type: ignore[attr-defined]
        session["n"] = session.get("n", 0) + 1
        done(message)

    layer = worker_runtime([route("websocket.receive", count)], threads=8)
    reply = reply_channel_name()
    for n in range(200):
        send_waiting(layer, "websocket.receive", msg(reply, n + 1))
    done.wait_for(200)
    # The last save may finish just after the last consumer recorded itself.
    with socket_locks.hold(reply):
        assert session_for_reply_channel(reply)["n"] == 200


def test_drain_by_another_process_before_our_send_is_caught(
    layer: Any, no_local_wait: None, monkeypatch: Any
) -> None:
    """A message sent to the wait channel just after another process drained it is requeued."""
    reply = reply_channel_name()
    rec = Recorder()
    consumer = enforce_ordering(rec)
    run_consumer(consumer, "websocket.connect", msg(reply, 0), layer)
    send = layer.channel_layer.send

    def send_after_the_other_process(channel: str, content: dict[str, Any]) -> None:
        if channel == wait_channel_name(reply):
            # Meanwhile another process ran message 1 and found the wait
            # channel empty: this message is now due but nobody will drain.
            session = session_for_reply_channel(reply)
            session[ORDER_KEY] = 2
            session.save()
            rec.orders.append(1)
        send(channel, content)

    monkeypatch.setattr(layer.channel_layer, "send", send_after_the_other_process)
    run_consumer(consumer, "websocket.receive", msg(reply, 2), layer)
    [requeued] = receive_all(layer, "websocket.receive")
    run_consumer(consumer, "websocket.receive", requeued, layer)
    assert rec.orders == [0, 1, 2]


def test_wait_channel_name_of_a_long_reply_channel(layer: Any) -> None:
    """A long reply channel gets a short hashed wait channel, whose messages are requeued."""
    reply = "r" * 80 + "!" + "x" * 12
    name = wait_channel_name(reply)
    assert name.startswith("__wait__.h?") and len(name) < 100
    layer.send(name, {"original_channel": "websocket.receive", "order": 3})
    message = Message(msg(reply, 2), "websocket.receive", layer)
    ordering.requeue_messages(message)
    assert receive_all(layer, "websocket.receive") == [{"order": 3}]
