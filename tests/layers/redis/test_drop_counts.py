"""
The Redis layer counts what it drops.  Its scripts count the messages that
expired unread, in the same statistics keys as ``channel_full_count``
(global and per channel), and the layer keeps a local view
(``operations.expired``) for the metrics: against a real ``redis-server``
on a free port (:mod:`tests.redisserver`), the layer attached to the test
reactor thread while the test's thread waits.  Undecodable messages and
failed hand-backs are counted too (in the test's thread, fake shards).
"""

from __future__ import annotations

import itertools
import time
import unittest
from typing import Any
from unittest import mock

from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred, fail

from chanserv.layers.redis import RedisChannelLayer
from chanserv.layers.redis.operations import RawMessage
from chanserv.metrics import MetricsCollector
from tests.redisserver import RedisServer
from tests.support import in_reactor, reactor_thread

EXPIRY = 0.2
_prefixes = itertools.count(1)
_server: list[RedisServer] = []


def redis_url() -> str:
    """The module's redis-server, started on first use."""
    if not _server:
        s = RedisServer()
        s.start()
        _server.append(s)
    return _server[0].url


def tearDownModule() -> None:
    for s in _server:
        s.cleanup()
    _server.clear()


class ExpiredCountTests(unittest.TestCase):
    def setUp(self) -> None:
        n = next(_prefixes)
        self.layer = RedisChannelLayer(
            hosts=[redis_url()],
            prefix="xe%d:" % n,
            stats_prefix="xem%d:" % n,
            expiry=EXPIRY,
            connection_kwargs={"socket_timeout": 2},
        )
        in_reactor(self.layer.attach_reactor, reactor_thread())
        for shard in self.layer.shards:
            in_reactor(shard.when_up, timeout=15)
        self.addCleanup(in_reactor, self.layer.detach_reactor, timeout=30)
        self.addCleanup(in_reactor, self.layer.flush_twisted)

    def expire(self) -> None:
        time.sleep(EXPIRY + 0.1)  # the server's clock

    def expired(self, channel: str | None = None) -> Any:
        stats = (
            self.layer.global_statistics()
            if channel is None
            else self.layer.channel_statistics(channel)
        )
        return stats["expired_count"]

    def local_view(self) -> int:
        count: int = self.layer.operations.expired
        return count

    def test_a_receive_counts_what_expired(self) -> None:
        """Messages a receive finds expired count in their channels', the global and the local count."""
        layer = self.layer
        layer.send("a", {})
        layer.send("a", {})
        layer.send("b", {})
        self.assertEqual(layer.receive(["b"]), ("b", {}))
        self.expire()
        self.assertEqual(layer.receive(["a", "b"]), (None, None))
        self.assertEqual(self.expired("a"), 2)
        self.assertEqual(self.expired("b"), 0)
        self.assertEqual(self.expired(), 2)
        self.assertEqual(self.local_view(), 2)
        # Once dropped, they are not counted again.
        self.assertEqual(layer.receive(["a"]), (None, None))
        self.assertEqual(self.expired(), 2)

    def test_a_send_counts_what_it_purges_on_each_local_name(self) -> None:
        """A send to a local channel counts its inbox's expired messages on each local name."""
        layer = self.layer
        layer.send("q!a", {})
        layer.send("q!a", {})
        layer.send("q!b", {})
        self.expire()
        layer.send("q!c", {})
        self.assertEqual(self.expired("q!a"), 2)
        self.assertEqual(self.expired("q!b"), 1)
        self.assertEqual(self.expired("q!c"), 0)
        self.assertEqual(self.expired(), 3)
        self.assertEqual(self.local_view(), 3)

    def test_group_members_count_the_message_they_missed(self) -> None:
        """A group message expiring unread counts for the members that missed it, local or not."""
        layer = self.layer
        for member in ("m1", "m2", "q!x", "q!y"):
            layer.group_add("g", member)
        layer.send_group("g", {})
        self.assertEqual(layer.receive(["m2"]), ("m2", {}))
        self.expire()
        self.assertEqual(layer.receive(["m1", "m2"]), (None, None))
        layer.send("q!z", {})  # purges q!'s inbox: the group reference
        self.assertEqual(self.expired("m1"), 1)
        self.assertEqual(self.expired("m2"), 0)
        self.assertEqual(self.expired("q!x"), 1)
        self.assertEqual(self.expired("q!y"), 1)
        self.assertEqual(self.expired(), 3)
        self.assertEqual(self.local_view(), 3)

    def test_group_members_and_group_sends_count_what_they_purge(self) -> None:
        """Listing a group's members, or sending to it, counts the expired messages it drops."""
        layer = self.layer
        layer.group_add("g", "m1")
        layer.send("m1", {})
        self.expire()
        self.assertEqual(layer.group_channels("g"), [])  # m1 missed a message: evicted
        self.assertEqual(self.expired("m1"), 1)
        layer.group_add("g", "m2")
        layer.send("m2", {})
        self.expire()
        layer.send_group("g", {})
        self.assertEqual(self.expired("m2"), 1)
        self.assertEqual(self.expired(), 2)
        self.assertEqual(self.local_view(), 2)

    def test_single_use_channels_count_globally_only(self) -> None:
        """A ``?`` channel keeps no counters of its own; its expired messages count globally."""
        layer = self.layer
        name = layer.new_channel("once?")
        layer.send(name, {})
        self.expire()
        self.assertEqual(layer.receive([name]), (None, None))
        self.assertEqual(self.expired(name), 0)
        self.assertEqual(self.expired(), 1)

    def test_metrics_read_the_local_view_without_a_round_trip(self) -> None:
        """The expired reason of chanserv_messages_dropped_total is the local view, read in memory."""
        layer = self.layer
        layer.send("a", {})
        self.expire()
        self.assertEqual(layer.receive(["a"]), (None, None))
        registry = CollectorRegistry(auto_describe=False)
        registry.register(MetricsCollector(layer))
        shard = type(layer.shards[0])
        no_call = AssertionError("a scrape made a Redis call")
        with (
            mock.patch.object(shard, "eval", side_effect=no_call),
            mock.patch.object(shard, "execute", side_effect=no_call),
        ):
            value = registry.get_sample_value(
                "chanserv_messages_dropped_total", {"reason": "expired"}
            )
        self.assertEqual(value, 1)


class FailingShard:
    """A shard whose every command fails as if Redis went away."""

    def eval(self, *args: Any) -> Deferred[Any]:
        return fail(ConnectionError("Redis went away"))

    def execute(self, *args: Any) -> Deferred[Any]:
        return fail(ConnectionError("Redis went away"))


class TakenAndDroppedTests(unittest.TestCase):
    def setUp(self) -> None:
        self.layer = RedisChannelLayer(hosts=["redis://127.0.0.1:1/0"])
        self.ops = self.layer.operations

    def test_undecodable_messages_are_counted(self) -> None:
        """A message taken off Redis that does not decode is dropped and counted; the rest decode."""
        good = self.ops.codec.encode(self.layer._bytes(self.layer.prepare({"n": 1})))
        items = [
            RawMessage(0, b"asgi:a", b"asgi:k1", b"not a message"),
            RawMessage(0, b"asgi:a", b"asgi:k2", good),
        ]
        self.assertEqual(self.ops.decode_items(items), [("a", {"n": 1})])
        self.assertEqual(self.ops.undecodable, 1)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(MetricsCollector(self.layer))
        self.assertEqual(
            registry.get_sample_value("chanserv_messages_dropped_total", {"reason": "undecodable"}),
            1,
        )

    def test_messages_that_cannot_be_put_back_are_counted(self) -> None:
        """A hand-back that fails counts every message it carried as lost."""
        self.ops.shards = [FailingShard()]  # type: ignore[list-item]
        self.ops.push_back(0, b"asgi:a", b"asgi:k1")
        self.assertEqual(self.ops.lost, 1)
        items = [RawMessage(0, b"asgi:a", b"asgi:k%d" % i, b"body") for i in range(3)]
        self.ops.requeue(0, items)
        self.assertEqual(self.ops.lost, 4)
        self.assertEqual(self.ops.handbacks, 0)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(MetricsCollector(self.layer))
        self.assertEqual(
            registry.get_sample_value(
                "chanserv_messages_dropped_total", {"reason": "handback_lost"}
            ),
            4,
        )
