"""
OrderedSender, against a layer whose sends complete when the test says so
(as Redis's do) and one whose sends complete at once (the in-memory
layer's): order, waiting for room on a full channel, pausing and resuming
the producer, outages, and the final message after everything else.  The
layer that answers later answers through Deferreds and, every test again,
through the sender as its sink (ISendToSink, as the Redis layer does).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from zope.interface import implementer

from chanserv.exceptions import ChannelFull, MessageTooLarge
from chanserv.interfaces import ISendToSink, SendSink
from chanserv.server.delivery import RETRY_DELAY
from chanserv.server.sender import OrderedSender


class Layer:
    """Sends stay pending until the test settles them, oldest first."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, dict[str, Any], Deferred[None]]] = []
        self.delivered: list[tuple[str, dict[str, Any]]] = []
        self.room: list[Deferred[None]] = []

    def send_twisted(self, channel: str, message: dict[str, Any]) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.pending.append((channel, message, d))
        return d

    def when_capacity_twisted(self, channel: str) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.room.append(d)
        return d

    def ok(self, count: int = 1) -> None:
        for _ in range(count):
            channel, message, d = self.pending.pop(0)
            self.delivered.append((channel, message))
            d.callback(None)

    def refuse(self, error: Exception) -> None:
        _, _, d = self.pending.pop(0)
        d.errback(error)

    def has_room(self) -> None:
        self.room.pop(0).callback(None)

    def in_flight(self) -> list[dict[str, Any]]:
        return [message for _, message, _ in self.pending]

    def texts(self) -> list[Any]:
        return [message.get("n") for _, message in self.delivered]


@implementer(ISendToSink)
class SinkLayer(Layer):
    """The same, its stream sends answered through the sender as their sink."""

    def send_twisted_to(self, channel: str, message: dict[str, Any], sink: SendSink) -> None:
        # A sink has a Deferred's callback and errback: settled as one.
        self.pending.append((channel, message, sink))  # type: ignore[arg-type]


_layer_class: type[Layer] = Layer


@pytest.fixture(autouse=True, params=["deferred", "sink"])
def answered_through(request: Any) -> Iterator[str]:
    """Every test with each way of answering the stream's sends."""
    global _layer_class
    _layer_class = Layer if request.param == "deferred" else SinkLayer
    yield request.param
    _layer_class = Layer


class Producer:
    def __init__(self) -> None:
        self.paused = False
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.paused = True
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.paused = False
        self.calls.append("resume")


def make(**kwargs: Any) -> tuple[OrderedSender, Layer, Producer, Clock, list[Any]]:
    layer, producer, clock, errors = _layer_class(), Producer(), Clock(), []
    options: dict[str, Any] = {"pause_at": 3, "resume_at": 0, "clock": clock}
    options.update(kwargs)
    sender = OrderedSender(layer, "c", producer, on_error=errors.append, **options)
    return sender, layer, producer, clock, errors


def msg(n: int) -> dict[str, Any]:
    return {"n": n}


# -- order ---------------------------------------------------------------------


def test_one_send_in_flight_and_order_kept() -> None:
    """OrderedSender keeps one send in flight and delivers the messages in the order given."""
    sender, layer, _, _, _ = make()
    for n in range(4):
        sender.send(msg(n))
    assert layer.in_flight() == [msg(0)]
    layer.ok()
    assert layer.in_flight() == [msg(1)]
    layer.ok(3)
    assert layer.texts() == [0, 1, 2, 3]
    assert sender.delivered == 4


def test_a_layer_that_answers_at_once_does_not_recurse() -> None:
    """Sends that complete at once loop rather than recurse: 5000 queued do not overflow."""
    sent = []

    class Immediate:
        def send_twisted(self, channel: str, message: dict[str, Any]) -> Deferred[None]:
            sent.append(message)
            return succeed(None)

    sender = OrderedSender(Immediate(), "c", started=False)
    for n in range(5000):  # all waiting: 5000 nested sends would overflow the stack
        sender.send(msg(n))
    sender.start()
    assert [m["n"] for m in sent] == list(range(5000))
    assert sender.delivered == 5000


def test_not_started_only_queues() -> None:
    """A sender not yet started only queues; start() sends the queue in order."""
    sender, layer, _, _, _ = make(started=False)
    sender.send(msg(1))
    sender.send(msg(2))
    assert layer.pending == []
    sender.start()
    layer.ok(2)
    assert layer.texts() == [1, 2]


# -- a full channel ------------------------------------------------------------------


def test_channel_full_keeps_the_message_and_sends_it_first_when_there_is_room() -> None:
    """ChannelFull blocks and pauses; the refused message goes first when there is room."""
    sender, layer, producer, clock, errors = make()
    sender.send(msg(1))
    sender.send(msg(2))
    clock.advance(5)
    layer.refuse(ChannelFull())
    assert sender.blocked and producer.paused
    assert sender.blocked_since == 5
    sender.send(msg(3))
    assert layer.pending == []  # nothing goes while full
    clock.advance(2)
    layer.has_room()
    assert not sender.blocked
    assert layer.in_flight() == [msg(1)]
    layer.refuse(ChannelFull())  # full again: still since 5
    assert sender.blocked_since == 5
    layer.has_room()
    layer.ok(3)
    assert layer.texts() == [1, 2, 3]
    assert sender.blocked_since is None
    assert not producer.paused
    assert errors == []


def test_channel_full_without_a_clock_has_no_since() -> None:
    """Without a clock a blocked sender has no blocked_since time."""
    sender, layer, _, _, _ = make(clock=None)
    sender.send(msg(1))
    layer.refuse(ChannelFull())
    assert sender.blocked and sender.blocked_since is None


# -- back-pressure ------------------------------------------------------------------


def test_pauses_at_pause_at_waiting_and_resumes_at_resume_at() -> None:
    """The producer is paused once at pause_at waiting messages and resumed at resume_at."""
    sender, layer, producer, _, _ = make(pause_at=3, resume_at=1)
    for n in range(4):  # one in flight, three waiting
        sender.send(msg(n))
    assert producer.calls == ["pause"]
    layer.ok()  # two waiting: above resume_at
    assert producer.paused
    layer.ok()  # one waiting
    assert producer.calls == ["pause", "resume"]
    layer.ok(2)
    assert producer.calls == ["pause", "resume"]


def test_paused_seconds_adds_up_the_pauses() -> None:
    """paused_seconds counts the time blocked on a full channel, not the time after."""
    sender, layer, _, clock, _ = make()
    sender.send(msg(1))
    layer.refuse(ChannelFull())
    clock.advance(4)
    assert sender.paused_seconds(clock.seconds()) == 4
    layer.has_room()
    clock.advance(10)
    assert sender.paused_seconds(clock.seconds()) == 4


def test_a_gone_connection_is_not_paused() -> None:
    """With no producer left a blocked sender counts as paused but pauses nothing."""
    sender, layer, producer, _, _ = make()
    sender.producer = None
    sender.send(msg(1))
    layer.refuse(ChannelFull())
    assert sender.paused and producer.calls == []


# -- other failures -------------------------------------------------------------------


def test_outage_drops_the_rest_and_tells_the_owner_the_final_message_still_goes() -> None:
    """An outage drops the queue, reports once and resumes; the final message still goes."""
    sender, layer, producer, _, errors = make()
    for n in range(5):
        sender.send(msg(n))
    assert producer.paused
    layer.ok()
    layer.refuse(ConnectionError("down"))
    assert len(errors) == 1 and errors[0].check(ConnectionError)
    assert layer.pending == []  # 2, 3 and 4 dropped, no retry
    assert not producer.paused
    sender.send(msg(5))  # after the gap nothing more of the stream goes
    d = sender.finish(lambda: {"last": sender.delivered})
    assert layer.in_flight() == [{"last": 1}]
    layer.ok()
    assert d.called and sender.done


def test_an_error_handling_an_answer_is_logged_not_raised_into_the_layer() -> None:
    """An owner whose on_error raises: the layer's answer returns, the error is logged."""

    def broken(failure: Any) -> None:
        raise RuntimeError("on_error broke (expected by the test)")

    layer = _layer_class()
    sender = OrderedSender(layer, "c", on_error=broken)
    sender.send(msg(1))
    with capturedLogs() as events:
        layer.refuse(ConnectionError("down"))
    assert [e["log_format"] for e in events] == ["An ordered send's callback failed"]
    assert [e["log_failure"].type for e in events] == [RuntimeError]


def test_message_too_large_is_reported_too() -> None:
    """MessageTooLarge from the layer is reported to on_error."""
    sender, layer, _, _, errors = make()
    sender.send(msg(1))
    layer.refuse(MessageTooLarge("big"))
    assert errors[0].check(MessageTooLarge)


# -- the final message ------------------------------------------------------------------


def test_final_message_goes_after_every_message_given_before() -> None:
    """The final message goes after every message given before finish, none given after."""
    sender, layer, producer, _, _ = make()
    for n in range(4):
        sender.send(msg(n))
    layer.refuse(ChannelFull())  # 0 waits for room, 1..3 behind it
    d = sender.finish(lambda: {"order": sender.delivered + 1}, channel="end", timeout=10)
    sender.send(msg(99))  # after finish: dropped
    layer.has_room()
    layer.ok(4)
    assert not d.called
    assert layer.in_flight() == [{"order": 5}]
    assert layer.pending[0][0] == "end"
    layer.ok()
    assert d.called and sender.done
    assert layer.texts() == [0, 1, 2, 3, None]
    assert not producer.paused


def test_final_message_with_a_timeout_waits_for_room_and_through_an_outage() -> None:
    """A final message with a timeout waits for room and is retried after an outage."""
    sender, layer, _, clock, _ = make()
    d = sender.finish({"end": True}, timeout=10)
    layer.refuse(ChannelFull())
    layer.has_room()
    layer.refuse(ConnectionError("down"))
    assert layer.pending == []
    clock.advance(RETRY_DELAY)  # tried again
    layer.ok()
    assert d.called and layer.delivered == [("c", {"end": True})]


def test_final_message_given_up_after_its_timeout() -> None:
    """A final message still failing at its timeout is given up, failing with the error."""
    sender, layer, _, clock, _ = make()
    d = sender.finish({"end": True}, timeout=1)
    failures: list[Any] = []
    d.addErrback(failures.append)
    for _ in range(3):
        layer.refuse(ConnectionError("down"))
        clock.advance(RETRY_DELAY)
    assert failures and failures[0].check(ConnectionError)
    assert sender.done


def test_final_message_with_no_timeout_waits_like_the_stream() -> None:
    """A final message with no timeout waits for room without pausing the finished stream."""
    sender, layer, producer, _, _ = make()
    sender.send(msg(1))
    d = sender.finish({"last": True})
    layer.ok()
    layer.refuse(ChannelFull())
    assert sender.blocked and not d.called
    assert not producer.paused  # the stream is over: nothing more to read
    layer.has_room()
    layer.ok()
    assert d.called and sender.done


def test_final_message_with_timeout_zero_is_one_attempt() -> None:
    """A final message with timeout=0 gets one attempt: ChannelFull fails it at once."""
    sender, layer, _, _, _ = make()
    d = sender.finish({"closed": True}, timeout=0)
    failures: list[Any] = []
    d.addErrback(failures.append)
    layer.refuse(ChannelFull())
    assert failures[0].check(ChannelFull)
    assert layer.room == [] and sender.done


def test_finish_without_a_final_message_fires_once_flushed() -> None:
    """finish() with no final message fires once the queued messages are delivered."""
    sender, layer, _, _, _ = make()
    sender.send(msg(1))
    d = sender.finish()
    assert not d.called
    layer.ok()
    assert d.called and sender.done


def test_finish_again_replaces_a_final_message_not_sent_yet() -> None:
    """finish() again cancels the unsent final message and sends the new one instead."""
    sender, layer, _, _, _ = make()
    sender.send(msg(1))
    first = sender.finish({"last": 1})
    cancelled: list[Any] = []
    first.addErrback(cancelled.append)
    second = sender.finish({"last": 2})
    assert cancelled[0].check(CancelledError)
    layer.ok(2)
    assert layer.delivered[-1] == ("c", {"last": 2}) and second.called


# -- drop and stop ------------------------------------------------------------------------


def test_drop_discards_the_rest_but_not_the_final_message() -> None:
    """drop() discards queued messages and the wait for room, but the final message goes."""
    sender, layer, producer, _, errors = make()
    for n in range(4):
        sender.send(msg(n))
    layer.ok()
    layer.refuse(ChannelFull())  # 1 waits for room
    room = layer.room[0]
    d = sender.finish(lambda: {"order": sender.delivered + 1}, timeout=5)
    sender.drop()
    assert room.called  # the wait is cancelled
    assert not producer.paused
    assert layer.in_flight() == [{"order": 2}]
    layer.ok()
    assert d.called and layer.texts() == [0, None]
    assert errors == []


def test_a_message_in_flight_refused_as_full_after_drop_is_dropped() -> None:
    """A send in flight refused as full after drop() is not retried; the final goes next."""
    sender, layer, _, _, _ = make()
    sender.send(msg(1))
    sender.drop()
    sender.finish({"closed": True}, timeout=0)
    layer.refuse(ChannelFull())
    assert layer.room == []
    assert layer.in_flight() == [{"closed": True}]


def test_stop_sends_nothing_more_and_resumes() -> None:
    """stop() cancels the final message and the wait for room, resumes, sends nothing more."""
    sender, layer, producer, _, errors = make()
    sender.send(msg(1))
    sender.send(msg(2))
    layer.refuse(ChannelFull())
    d = sender.finish({"last": True})
    cancelled: list[Any] = []
    d.addErrback(cancelled.append)
    sender.stop()
    assert cancelled[0].check(CancelledError)
    assert layer.room[0].called and not producer.paused
    sender.send(msg(3))
    assert layer.pending == [] and sender.done
    assert errors == []


def test_finish_after_stop_fails_at_once() -> None:
    """finish() after stop() fails at once with CancelledError."""
    sender, _, _, _, _ = make()
    sender.stop()
    d = sender.finish({"last": True})
    failures: list[Any] = []
    d.addErrback(failures.append)
    assert failures[0].check(CancelledError)


def test_a_failure_after_stop_is_not_reported() -> None:
    """A send failing after stop() is not reported, and the sender is then done."""
    sender, layer, _, _, errors = make()
    sender.send(msg(1))
    sender.stop()
    assert not sender.done  # its send is still out
    layer.refuse(ConnectionError("down"))
    assert errors == [] and sender.done


# -- a source -------------------------------------------------------------------------------


class Countdown:
    """A source of messages built when taken."""

    def __init__(self, count: int) -> None:
        self.left = count

    def take(self) -> dict[str, Any] | None:
        if not self.left:
            return None
        self.left -= 1
        return msg(self.left)

    def __len__(self) -> int:
        return self.left

    def clear(self) -> None:
        self.left = 0


def test_a_source_is_taken_from_as_the_sender_can_send() -> None:
    """A source is taken from one message per send, pausing by how many it still holds."""
    source = Countdown(3)
    sender, layer, producer, _, _ = make(source=source, pause_at=2, resume_at=1)
    sender.pump()
    assert layer.in_flight() == [msg(2)] and len(source) == 2
    assert producer.paused
    layer.ok()
    assert not producer.paused
    layer.ok(2)
    assert layer.texts() == [2, 1, 0]
