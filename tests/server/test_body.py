"""
BodyStreamer against a layer whose sends complete later (as Redis's do):
one send in flight at a time, order kept through ChannelFull, back-pressure.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed

from chanserv.exceptions import ChannelFull, MessageTooLarge
from chanserv.server.body import BodyStreamer


class SlowLayer:
    """Sends stay pending until the test settles them."""

    def __init__(self) -> None:
        self.pending: list[tuple[dict[str, Any], Deferred[None]]] = []
        self.delivered: list[dict[str, Any]] = []
        self.room: list[Deferred[None]] = []

    def send_twisted(self, channel: str, message: dict[str, Any]) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.pending.append((message, d))
        return d

    def ok(self) -> None:
        message, d = self.pending.pop(0)
        self.delivered.append(message)
        d.callback(None)

    def full(self) -> None:
        _, d = self.pending.pop(0)
        d.errback(ChannelFull())

    def when_capacity_twisted(self, channel: str) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.room.append(d)
        return d


class Producer:
    def __init__(self) -> None:
        self.paused = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False


def make(layer: Any, chunk: int = 4, started: bool = True) -> tuple[BodyStreamer, Producer]:
    producer = Producer()
    return BodyStreamer(layer, "http.request.body?abc", chunk, producer, started=started), producer


def test_one_send_in_flight_and_order_kept() -> None:
    """The body goes out in chunk-sized messages, one send in flight at a time, in order."""
    layer = SlowLayer()
    streamer, _ = make(layer)
    streamer.feed(b"aaaabbbbcc")
    assert [m for m, _ in layer.pending] == [{"content": b"aaaa", "more_content": True}]
    layer.ok()
    assert [m for m, _ in layer.pending] == [{"content": b"bbbb", "more_content": True}]
    streamer.finish()
    layer.ok()
    layer.ok()
    assert layer.delivered == [
        {"content": b"aaaa", "more_content": True},
        {"content": b"bbbb", "more_content": True},
        {"content": b"cc", "more_content": False},
    ]
    assert streamer.finished


def test_exact_multiple_ends_with_the_last_chunk() -> None:
    """A body ending on a chunk boundary, known before sending, ends with that chunk."""
    layer = SlowLayer()
    streamer, _ = make(layer, started=False)
    streamer.feed(b"aaaa")
    streamer.finish()
    streamer.start()
    layer.ok()
    assert layer.delivered == [{"content": b"aaaa", "more_content": False}]
    assert streamer.finished


def test_end_known_late_gives_an_empty_last_chunk() -> None:
    """When the end is known after the last chunk went, an empty last chunk closes the body."""
    layer = SlowLayer()
    streamer, _ = make(layer)
    streamer.feed(b"aaaa")
    streamer.finish()
    layer.ok()
    layer.ok()
    assert layer.delivered == [
        {"content": b"aaaa", "more_content": True},
        {"content": b"", "more_content": False},
    ]


def test_channel_full_blocks_pauses_and_retries_in_order() -> None:
    """ChannelFull pauses reading until the channel has room, then retries, order kept."""
    layer = SlowLayer()
    streamer, producer = make(layer)
    streamer.feed(b"aaaabbbb")
    layer.full()
    assert streamer.blocked and producer.paused
    streamer.feed(b"cccc")
    assert layer.pending == []
    layer.room.pop().callback(None)
    assert not streamer.blocked
    layer.ok()
    layer.ok()
    streamer.finish()
    layer.ok()
    layer.ok()
    assert [m["content"] for m in layer.delivered] == [b"aaaa", b"bbbb", b"cccc", b""]
    assert not producer.paused


def test_too_much_buffered_pauses_reading() -> None:
    """More than a chunk waiting behind the send in flight pauses reading until it drains."""
    layer = SlowLayer()
    streamer, producer = make(layer)
    streamer.feed(b"a" * 4)  # in flight
    streamer.feed(b"b" * 8)  # two chunks waiting
    assert producer.paused
    layer.ok()
    layer.ok()
    assert not producer.paused


def test_not_started_only_buffers() -> None:
    """A streamer not yet started only buffers; start() sends what it holds, in chunks."""
    layer = SlowLayer()
    streamer, _ = make(layer, started=False)
    streamer.feed(b"aaaabb")
    streamer.finish()
    assert layer.pending == []
    streamer.start()
    layer.ok()
    layer.ok()
    assert [m["content"] for m in layer.delivered] == [b"aaaa", b"bb"]


def test_abort_sends_closed_after_the_send_in_flight() -> None:
    """Abort drops buffered chunks and sends {"closed": True} after the send in flight."""
    layer = SlowLayer()
    streamer, _ = make(layer)
    streamer.feed(b"aaaabbbb")
    streamer.abort()
    layer.ok()
    layer.ok()
    assert layer.delivered == [{"content": b"aaaa", "more_content": True}, {"closed": True}]
    assert streamer.finished


def test_abort_while_blocked_sends_nothing_more() -> None:
    """Abort while blocked on ChannelFull cancels the wait, sends nothing, resumes reading."""
    layer = SlowLayer()
    streamer, producer = make(layer)
    streamer.feed(b"aaaa")
    layer.full()
    room = layer.room[0]
    streamer.abort()
    assert room.called  # cancelled
    assert layer.pending == []
    assert not producer.paused
    assert streamer.finished


def test_abort_after_the_end_sends_nothing() -> None:
    """Abort after the whole body was sent sends nothing more."""
    layer = SlowLayer()
    streamer, _ = make(layer)
    streamer.feed(b"aa")
    streamer.finish()
    layer.ok()
    streamer.abort()
    assert layer.pending == []


def test_other_send_errors_are_reported() -> None:
    """A send error other than ChannelFull goes to on_error once and finishes the streamer."""
    errors = []

    class Failing:
        def send_twisted(self, channel: str, message: dict[str, Any]) -> Deferred[None]:
            return fail(MessageTooLarge("big"))

    streamer = BodyStreamer(Failing(), "http.request.body?x", 4, Producer(), on_error=errors.append)
    streamer.feed(b"aaaab")
    assert len(errors) == 1 and errors[0].check(MessageTooLarge)
    assert streamer.finished


def test_synchronous_layer_does_not_recurse() -> None:
    """Sends that complete at once loop rather than recurse: 5000 chunks do not overflow."""
    sent = []

    class Immediate:
        def send_twisted(self, channel: str, message: dict[str, Any]) -> Deferred[None]:
            sent.append(message)
            return succeed(None)

    streamer = BodyStreamer(Immediate(), "http.request.body?x", 1, Producer())
    streamer.feed(b"x" * 5000)  # 5000 sends: would overflow the stack if recursive
    streamer.finish()
    assert len(sent) == 5001
    assert sent[-2] == {"content": b"x", "more_content": True}
    assert sent[-1] == {"content": b"", "more_content": False}
