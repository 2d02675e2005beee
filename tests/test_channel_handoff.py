"""
PendingMessageStore handing a consumer's held sends to its layer
(ISendHandOff) instead of sending them from the worker thread: when it
does and when it does not, and what becomes of the sends that could not be
made.  A fresh store in the test's thread, with fake layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.logger import capturedLogs
from twisted.python.failure import Failure

from chanserv.channel import PendingMessageStore
from chanserv.exceptions import ChannelFull
from chanserv.layers.base import BaseChannelLayer, Prepared
from chanserv.layers.redis.handoff import HeldSend, SendFailure

STAYED_FULL = (
    "Channel {channel} stayed full for {timeout}s; a message sent by the consumer was dropped"
)
NOT_SENT = "A message the consumer sent to {kind} {name} could not be sent"


class SendingLayer(BaseChannelLayer):
    """A layer recording the sends made to it, ``(kind, name, content)``, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, str, Any]] = []

    def send_prepared_wait(self, channel: str, data: Prepared, timeout: float) -> None:
        self.sent.append(("channel", channel, self.unpack(data)))

    def send_group_prepared(self, group: str, data: Prepared) -> None:
        self.sent.append(("group", group, self.unpack(data)))


class HandOffLayer(SendingLayer):
    """
    A SendingLayer that also takes hand-offs (``take``: whether it does,
    or an exception it raises); ``hand_offs`` records each call.
    """

    def __init__(self, take: bool | Exception = True) -> None:
        super().__init__()
        self.take = take
        self.hand_offs: list[tuple[list[tuple[str, str, Any]], float, float, Any]] = []

    def hand_off_sends(
        self, sends: Any, full_timeout: float, blocked_timeout: float, done: Any
    ) -> bool:
        self.hand_offs.append(
            (
                [(kind, name, self.unpack(data)) for kind, name, data in sends],
                full_timeout,
                blocked_timeout,
                done,
            )
        )
        if isinstance(self.take, Exception):
            raise self.take
        return self.take


def hold(store: PendingMessageStore, *sends: tuple[BaseChannelLayer, str, str, Any]) -> None:
    """Start a consumer run in this thread and hold ``(layer, kind, name, content)`` sends."""
    store.activate()
    for layer, kind, name, content in sends:
        assert store.append(layer, kind, name, layer.prepare(content))


def three_sends(layer: BaseChannelLayer) -> list[tuple[BaseChannelLayer, str, str, Any]]:
    return [
        (layer, "channel", "a", {"n": 1}),
        (layer, "group", "g", {"n": 2}),
        (layer, "channel", "b", {"n": 3}),
    ]


SENT = [("channel", "a", {"n": 1}), ("group", "g", {"n": 2}), ("channel", "b", {"n": 3})]


def test_sends_are_handed_off_after_expect_hand_off() -> None:
    """After expect_hand_off the flush hands the sends, in order, to the layer and sends none."""
    store = PendingMessageStore()
    layer = HandOffLayer()
    on_sent: list[int] = []
    store.expect_hand_off(lambda: on_sent.append(1))
    hold(store, *three_sends(layer))
    store.send_and_flush()
    [(sends, full_timeout, blocked_timeout, done)] = layer.hand_offs
    assert sends == SENT
    assert (full_timeout, blocked_timeout) == (store.full_timeout, store.blocked_timeout)
    assert layer.sent == []
    assert not store.is_active()
    assert store.handed_off() is True
    assert store.handed_off() is False  # told once
    assert on_sent == []
    done([])
    assert on_sent == [1]
    assert store.dropped == 0


def test_no_hand_off_without_expect_hand_off() -> None:
    """Without expect_hand_off the flush sends in this thread, even to a layer that takes them."""
    store = PendingMessageStore()
    layer = HandOffLayer()
    hold(store, *three_sends(layer))
    store.send_and_flush()
    assert layer.hand_offs == []
    assert layer.sent == SENT
    assert store.handed_off() is False


def test_the_expectation_is_for_one_flush() -> None:
    """expect_hand_off covers the next flush only; the one after sends in this thread."""
    store = PendingMessageStore()
    layer = HandOffLayer()
    store.expect_hand_off(lambda: None)
    hold(store, (layer, "channel", "a", {"n": 1}))
    store.send_and_flush()
    hold(store, (layer, "channel", "b", {"n": 2}))
    store.send_and_flush()
    assert [sends for sends, *_ in layer.hand_offs] == [[("channel", "a", {"n": 1})]]
    assert layer.sent == [("channel", "b", {"n": 2})]


def test_handed_off_forgets_an_unused_expectation() -> None:
    """handed_off() after a run that sent nothing is False and ends the expectation."""
    store = PendingMessageStore()
    layer = HandOffLayer()
    on_sent: list[int] = []
    store.expect_hand_off(lambda: on_sent.append(1))
    hold(store)
    store.send_and_flush()  # nothing held: nothing to hand off
    assert store.handed_off() is False
    hold(store, (layer, "channel", "a", {"n": 1}))
    store.send_and_flush()
    assert layer.hand_offs == []
    assert layer.sent == [("channel", "a", {"n": 1})]
    assert on_sent == []


def test_no_hand_off_to_a_layer_without_hand_off_sends() -> None:
    """A layer without hand_off_sends gets the sends from this thread, in order."""
    store = PendingMessageStore()
    layer = SendingLayer()
    on_sent: list[int] = []
    store.expect_hand_off(lambda: on_sent.append(1))
    hold(store, *three_sends(layer))
    store.send_and_flush()
    assert layer.sent == SENT
    assert store.handed_off() is False
    assert on_sent == []


def test_no_hand_off_when_the_sends_span_two_layers() -> None:
    """Sends held for two layers are all sent from this thread, each to its layer."""
    store = PendingMessageStore()
    one, two = HandOffLayer(), HandOffLayer()
    store.expect_hand_off(lambda: None)
    hold(store, (one, "channel", "a", {"n": 1}), (two, "channel", "b", {"n": 2}))
    store.send_and_flush()
    assert one.hand_offs == two.hand_offs == []
    assert one.sent == [("channel", "a", {"n": 1})]
    assert two.sent == [("channel", "b", {"n": 2})]
    assert store.handed_off() is False


def test_sends_a_layer_does_not_take_are_sent_from_this_thread() -> None:
    """When hand_off_sends returns False, the sends go from this thread in order."""
    store = PendingMessageStore()
    layer = HandOffLayer(take=False)
    on_sent: list[int] = []
    store.expect_hand_off(lambda: on_sent.append(1))
    hold(store, *three_sends(layer))
    store.send_and_flush()
    assert len(layer.hand_offs) == 1
    assert layer.sent == SENT
    assert store.handed_off() is False
    assert on_sent == []


def test_a_hand_off_that_raises_is_logged_and_sent_from_this_thread() -> None:
    """When hand_off_sends raises, it is logged and the sends go from this thread in order."""
    store = PendingMessageStore()
    layer = HandOffLayer(take=RuntimeError("hand-off failed (expected by the test)"))
    store.expect_hand_off(lambda: None)
    hold(store, *three_sends(layer))
    with capturedLogs() as events:
        store.send_and_flush()
    assert layer.sent == SENT
    assert store.handed_off() is False
    assert [e["log_format"] for e in events] == [
        "Handing held messages to {layer} failed; sending them here"
    ]


def test_a_flush_in_the_middle_of_a_consumer_is_not_handed_off() -> None:
    """send_and_flush(hand_off=False) sends from this thread; the consumer's last flush may hand off."""
    store = PendingMessageStore()
    layer = HandOffLayer()
    store.expect_hand_off(lambda: None)
    hold(store, (layer, "channel", "a", {"n": 1}))
    store.send_and_flush(hand_off=False)
    assert layer.sent == [("channel", "a", {"n": 1})]
    assert layer.hand_offs == []
    hold(store, (layer, "channel", "b", {"n": 2}))
    store.send_and_flush()
    assert [sends for sends, *_ in layer.hand_offs] == [[("channel", "b", {"n": 2})]]
    assert store.handed_off() is True


def test_failed_handed_off_sends_are_counted_and_logged_as_in_the_thread() -> None:
    """
    Sends the layer could not make are counted in dropped and logged with the
    words of a flush in the thread, before on_sent runs.
    """

    # The same two failures sent from the thread, for the words.
    class FailingLayer(SendingLayer):
        def send_prepared_wait(self, channel: str, data: Prepared, timeout: float) -> None:
            raise ChannelFull(channel)

        def send_group_prepared(self, group: str, data: Prepared) -> None:
            raise ConnectionError("layer unreachable")

    store = PendingMessageStore()
    failing = FailingLayer()
    hold(store, (failing, "channel", "a", {"n": 1}), (failing, "group", "g", {"n": 2}))
    with capturedLogs() as in_thread:
        store.send_and_flush()
    assert store.dropped == 2

    layer = HandOffLayer()
    seen_by_on_sent: list[tuple[int, int]] = []
    with capturedLogs() as handed:
        store.expect_hand_off(lambda: seen_by_on_sent.append((store.dropped, len(handed))))
        hold(store, (layer, "channel", "a", {"n": 1}), (layer, "group", "g", {"n": 2}))
        store.send_and_flush()
        assert store.handed_off() is True
        [(_, _, _, done)] = layer.hand_offs
        assert handed == []
        done(
            [
                SendFailure(HeldSend("channel", "a", b""), Failure(ChannelFull("a"))),
                SendFailure(HeldSend("group", "g", b""), Failure(ConnectionError("unreachable"))),
            ]
        )
    assert store.dropped == 4
    assert seen_by_on_sent == [(4, 2)]

    def words(events: Sequence[Any]) -> list[tuple[str, str, Any]]:
        return [
            (
                e["log_level"].name,
                e["log_format"],
                e.get("channel") or (e.get("kind"), e.get("name")),
            )
            for e in events
        ]

    assert words(handed) == words(in_thread)
    assert words(handed) == [
        ("error", STAYED_FULL, "a"),
        ("critical", NOT_SENT, ("group", "g")),
    ]
    assert handed[0]["timeout"] == store.full_timeout
    assert handed[1]["log_failure"].check(ConnectionError)


def test_a_failing_on_sent_is_logged() -> None:
    """An error in on_sent is logged; the hand-off's end does not raise."""
    store = PendingMessageStore()
    layer = HandOffLayer()

    def on_sent() -> None:
        raise RuntimeError("on_sent failed (expected by the test)")

    store.expect_hand_off(on_sent)
    hold(store, (layer, "channel", "a", {"n": 1}))
    store.send_and_flush()
    [(_, _, _, done)] = layer.hand_offs
    with capturedLogs() as events:
        done([])
    assert [e["log_format"] for e in events] == ["Error after sending handed-off messages"]
    assert events[0]["log_failure"].check(RuntimeError)
