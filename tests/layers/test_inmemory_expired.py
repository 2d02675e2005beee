"""
The in-memory layer counts the messages that expire unread
(``expired_count``, globally and per channel), driven by a
:class:`ClockReactor` that is its clock and, for the sweep, its reactor.
Everything runs in the test's thread.
"""

from __future__ import annotations

import unittest

from chanserv.layers import InMemoryChannelLayer, _memory
from tests.support import ClockReactor


class ExpiredCountTests(unittest.TestCase):
    def setUp(self) -> None:
        self.reactor = ClockReactor()

    def layer(self, **config: float) -> InMemoryChannelLayer:
        return InMemoryChannelLayer(clock=self.reactor, **config)  # type: ignore[arg-type]

    def test_expired_messages_are_counted_globally_and_per_channel(self) -> None:
        """Messages left unread past expiry count in their channel's and the global expired_count."""
        layer = self.layer(expiry=10)
        for _ in range(3):
            layer.send("a", {})
        layer.send("b", {})
        self.assertEqual(layer.receive(["a"]), ("a", {}))
        self.reactor.advance(9.9)
        self.assertEqual(layer.global_statistics()["expired_count"], 0)
        self.reactor.advance(0.1)
        self.assertEqual(layer.channel_statistics("a")["expired_count"], 2)
        self.assertEqual(layer.channel_statistics("b")["expired_count"], 1)
        self.assertEqual(layer.channel_statistics("c")["expired_count"], 0)
        stats = layer.global_statistics()
        self.assertEqual(stats["expired_count"], 3)
        self.assertEqual(stats["messages_pending"], 0)
        self.assertEqual(stats["messages_count"], 4, "sent messages stay counted as sent")

    def test_only_the_messages_past_expiry_are_counted(self) -> None:
        """A later message of the same channel is counted only once it expires too."""
        layer = self.layer(expiry=10)
        layer.send("a", {"n": 1})
        self.reactor.advance(5)
        layer.send("a", {"n": 2})
        self.reactor.advance(5)
        self.assertEqual(layer.channel_statistics("a")["expired_count"], 1)
        self.assertEqual(layer.receive(["a"]), ("a", {"n": 2}))
        self.reactor.advance(10)
        self.assertEqual(layer.global_statistics()["expired_count"], 1)

    def test_a_local_channel_counts_on_its_own_name(self) -> None:
        """Process-local channels of one prefix each count their own expired messages."""
        layer = self.layer(expiry=1)
        layer.send("p!a", {})
        layer.send("p!a", {})
        layer.send("p!b", {})
        self.reactor.advance(1)
        self.assertEqual(layer.channel_statistics("p!a")["expired_count"], 2)
        self.assertEqual(layer.channel_statistics("p!b")["expired_count"], 1)
        self.assertEqual(layer.channel_statistics("p!c")["expired_count"], 0)
        self.assertEqual(layer.global_statistics()["expired_count"], 3)

    def test_group_members_count_the_message_they_missed(self) -> None:
        """A group message expiring unread counts once for each member that missed it."""
        layer = self.layer(expiry=1)
        for member in ("m1", "m2", "p!x"):
            layer.group_add("g", member)
        layer.send_group("g", {})
        self.assertEqual(layer.receive(["m1"]), ("m1", {}))
        self.reactor.advance(1)
        self.assertEqual(layer.channel_statistics("m1")["expired_count"], 0)
        self.assertEqual(layer.channel_statistics("m2")["expired_count"], 1)
        self.assertEqual(layer.channel_statistics("p!x")["expired_count"], 1)
        self.assertEqual(layer.global_statistics()["expired_count"], 2)

    def test_the_sweep_counts_without_any_call(self) -> None:
        """With a reactor attached, the sweep finds and counts expired messages."""
        layer = self.layer(expiry=2)
        layer.attach_reactor(self.reactor)
        self.addCleanup(layer.detach_reactor)
        layer.send("a", {})
        self.reactor.advance(1)
        self.reactor.advance(1)  # the sweep drops it
        self.assertEqual(layer._expired_total, 1)
        self.assertEqual(layer.global_statistics()["expired_count"], 1)

    def test_flush_and_a_gone_local_channel_forget_the_counts(self) -> None:
        """flush() resets expired_count; discard_local_channel forgets the channel's."""
        layer = self.layer(expiry=1)
        layer.send("p!a", {})
        layer.send("b", {})
        self.reactor.advance(1)
        layer.discard_local_channel("p!a")
        self.assertEqual(layer.channel_statistics("p!a")["expired_count"], 0)
        self.assertEqual(layer.channel_statistics("b")["expired_count"], 1)
        self.assertEqual(layer.global_statistics()["expired_count"], 2)
        layer.flush()
        self.assertEqual(layer.channel_statistics("b")["expired_count"], 0)
        self.assertEqual(layer.global_statistics()["expired_count"], 0)

    def test_idle_channels_forget_their_counts_but_not_the_total(self) -> None:
        """An idle channel's expired_count is forgotten with it; the global total stays."""
        layer = self.layer(expiry=1)
        layer.send(layer.new_channel("tmp?"), {})
        layer.send("p!a", {})
        self.reactor.advance(_memory.IDLE_RETENTION + _memory.HOUSEKEEPING_INTERVAL + 1)
        self.assertEqual(layer.global_statistics()["expired_count"], 2)
        self.assertEqual(layer._expired, {})
