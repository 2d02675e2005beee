"""
Unit tests of chanserv.message beyond tests/test_channel.py (which drives
Message and the global store through Channel and Group): a store of its
own, the group half of a flush, and :func:`send_waiting`'s choice between
waiting and giving up -- with fake layers, in this thread.
"""

from __future__ import annotations

from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from chanserv.exceptions import ChannelBlocked, ChannelFull
from chanserv.message import BLOCKED_TIMEOUT, Message, PendingMessageStore, send_waiting


class PlainLayer:
    """A layer with no ``send_prepared_wait``: records what it is sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, bytes]] = []

    def send_prepared(self, channel: str, data: bytes) -> None:
        self.sent.append(("channel", channel, data))

    def send_group_prepared(self, group: str, data: bytes) -> None:
        if group == "broken":
            raise ConnectionError("unreachable")
        self.sent.append(("group", group, data))


class WaitingLayer(PlainLayer):
    """``send_prepared_wait`` raising ``refusals`` in turn, then sending."""

    def __init__(self, *refusals: Exception) -> None:
        super().__init__()
        self.refusals = list(refusals)
        self.timeouts: list[float] = []

    def send_prepared_wait(self, channel: str, data: bytes, timeout: float) -> None:
        self.timeouts.append(timeout)
        if self.refusals:
            raise self.refusals.pop(0)
        self.send_prepared(channel, data)


class MessageTests(SynchronousTestCase):
    def test_empty_reply_channel_is_none(self) -> None:
        """An empty reply_channel is no reply channel."""
        self.assertIsNone(Message({"reply_channel": ""}, "x", PlainLayer()).reply_channel)

    def test_copy_keeps_the_class(self) -> None:
        """copy() of a Message subclass is of that subclass, on the same channel."""

        class Special(Message):
            pass

        clone = Special({"a": 1}, "x", PlainLayer()).copy()
        self.assertIsInstance(clone, Special)
        self.assertEqual((clone.channel.name, clone.content), ("x", {"a": 1}))


class PendingMessageStoreTests(SynchronousTestCase):
    def test_inactive_store_holds_nothing(self) -> None:
        """Outside a consumer, append refuses (the caller sends at once)."""
        store = PendingMessageStore()
        self.assertFalse(store.is_active())
        self.assertFalse(store.append(PlainLayer(), "channel", "a", b"1"))  # type: ignore[arg-type]

    def test_flush_sends_in_order_and_deactivates(self) -> None:
        """Held channel and group sends go out in order at the flush; then it stops holding."""
        store, layer = PendingMessageStore(), PlainLayer()
        store.activate()
        self.assertTrue(store.append(layer, "channel", "a", b"1"))  # type: ignore[arg-type]
        self.assertTrue(store.append(layer, "group", "g", b"2"))  # type: ignore[arg-type]
        self.assertEqual(layer.sent, [])
        store.send_and_flush()
        self.assertEqual(layer.sent, [("channel", "a", b"1"), ("group", "g", b"2")])
        self.assertFalse(store.is_active())
        store.send_and_flush()  # nothing held: nothing happens
        self.assertEqual(len(layer.sent), 2)

    def test_a_failed_group_send_is_logged_and_the_rest_sent(self) -> None:
        """A group send that fails is logged as an error; later sends still go."""
        store, layer = PendingMessageStore(), PlainLayer()
        store.activate()
        store.append(layer, "group", "broken", b"1")  # type: ignore[arg-type]
        store.append(layer, "channel", "a", b"2")  # type: ignore[arg-type]
        with capturedLogs() as events:
            store.send_and_flush()
        self.assertEqual(layer.sent, [("channel", "a", b"2")])
        self.assertEqual(len(self.flushLoggedErrors(ConnectionError)), 1)
        self.assertEqual([e["name"] for e in events if "name" in e], ["broken"])

    def test_flush_waits_with_the_stores_timeouts(self) -> None:
        """A held channel send waits for room up to the store's full_timeout."""
        store, layer = PendingMessageStore(), WaitingLayer()
        store.full_timeout = 7.0
        store.activate()
        store.append(layer, "channel", "a", b"1")  # type: ignore[arg-type]
        store.send_and_flush()
        self.assertEqual(layer.timeouts, [7.0])

    def test_channel_that_stays_full_is_logged_as_dropped(self) -> None:
        """ChannelFull at the flush: an error naming the channel, no exception."""
        store, layer = PendingMessageStore(), WaitingLayer(ChannelFull("a"))
        store.activate()
        store.append(layer, "channel", "a", b"1")  # type: ignore[arg-type]
        with capturedLogs() as events:
            store.send_and_flush()
        errors = [e for e in events if e["log_level"] == LogLevel.error]
        self.assertEqual([e["channel"] for e in errors], ["a"])
        self.assertEqual(layer.sent, [])


class SendWaitingTests(SynchronousTestCase):
    def test_layer_without_waiting_sends_at_once(self) -> None:
        """A layer with no send_prepared_wait gets a plain send_prepared."""
        layer = PlainLayer()
        send_waiting(layer, "a", b"1", timeout=5)
        self.assertEqual(layer.sent, [("channel", "a", b"1")])

    def test_full_is_not_retried(self) -> None:
        """ChannelFull from the layer's own wait is the end: raised, not retried."""
        layer = WaitingLayer(ChannelFull("a"))
        self.assertRaises(ChannelFull, send_waiting, layer, "a", b"1", 5)
        self.assertEqual(layer.timeouts, [5])

    def test_blocked_is_waited_on_until_unblocked(self) -> None:
        """ChannelBlocked (a slow client) is waited on again while time is left."""
        layer = WaitingLayer(ChannelBlocked("a"), ChannelBlocked("a"))
        send_waiting(layer, "a", b"1", 5)
        self.assertEqual((layer.timeouts, layer.sent), ([5, 5, 5], [("channel", "a", b"1")]))

    def test_blocked_past_the_blocked_timeout_is_raised(self) -> None:
        """Still blocked once blocked_timeout has passed: ChannelBlocked is raised."""
        layer = WaitingLayer(ChannelBlocked("a"), ChannelBlocked("a"))
        self.assertRaises(ChannelBlocked, send_waiting, layer, "a", b"1", 5, blocked_timeout=0)
        self.assertEqual(layer.timeouts, [5])
        self.assertGreater(BLOCKED_TIMEOUT, PendingMessageStore.full_timeout)
