"""
The Redis layer behind real Redis Sentinel processes
(:mod:`tests.redissentinel`): it finds the master through the sentinels,
sends, receives and group-sends; when the master is killed (SIGKILL) or
demoted (``SENTINEL FAILOVER``) the sentinels promote the replica and
traffic resumes on it within a bound.  After a kill nothing is received
twice; after a demotion, only what the old master handed out during the
switch can be (asynchronous replication).  Default connection options
throughout.
"""

from __future__ import annotations

import itertools
import threading
import time
import unittest
from collections.abc import Callable
from typing import Any

from chanserv.layers.redis import RedisChannelLayer, RedisUnavailable
from tests.redissentinel import SentinelCluster
from tests.support import in_reactor, reactor_thread

#: Seconds from the kill until sends succeed again.  The sentinels need
#: down-after (1 s) plus an election and a promotion (2-3 s here); the
#: layer then reconnects within its back-off cap (2 s).
FAILOVER_BOUND = 15.0


def wait_up(layer: RedisChannelLayer, timeout: float = 15.0) -> None:
    for shard in layer.shards:
        in_reactor(shard.when_up, timeout=timeout)


class SentinelFailoverTests(unittest.TestCase):
    """Each test has its own master, replica and three sentinels."""

    def setUp(self) -> None:
        self.cluster = SentinelCluster()
        self.addCleanup(self.cluster.cleanup)
        self.cluster.start()

    def make_layer(self, **config: Any) -> RedisChannelLayer:
        layer = RedisChannelLayer(
            hosts=[self.cluster.hosts_entry()],
            prefix="sf:",
            stats_prefix="sfm:",
            blpop_timeout=1,
            capacity=10_000,
            **config,
        )
        in_reactor(layer.attach_reactor, reactor_thread())
        self.addCleanup(lambda: in_reactor(layer.detach_reactor, timeout=30))
        wait_up(layer)
        return layer

    def check_basics(self, layer: RedisChannelLayer, tag: str) -> None:
        """Send, receive and group-send through the shard."""
        layer.send("sf.plain", {"n": tag})
        self.assertEqual(layer.receive(["sf.plain"], block=True), ("sf.plain", {"n": tag}))
        layer.group_add("room" + tag, "sf.member" + tag)
        layer.send_group("room" + tag, {"to": tag})
        self.assertEqual(
            layer.receive(["sf.member" + tag], block=True), ("sf.member" + tag, {"to": tag})
        )

    def through_failover(self, fault: Callable[[], None]) -> dict[str, Any]:
        """
        Send unique ids to a process-local channel from a thread while
        ``fault`` makes the sentinels fail over; return what happened: the
        ids acknowledged (with when), failed and received, when the fault
        was done, and when the shard was seen on the new master.
        """
        layer = self.make_layer()
        old = self.cluster.master_address()
        self.assertIsNotNone(old)
        self.assertEqual(in_reactor(lambda: layer.shards[0].master), old)
        self.check_basics(layer, "before")
        received: list[int] = []
        lock = threading.Lock()

        def deliver(batch: list[tuple[str, dict[str, Any]]]) -> None:
            with lock:
                received.extend(message["id"] for _, message in batch)

        in_reactor(layer.add_local_receiver, "sf!", deliver)
        acked: dict[int, float] = {}
        failed: list[int] = []
        errors: list[BaseException] = []
        stop = threading.Event()

        def send() -> None:
            for i in itertools.count():
                if stop.is_set():
                    return
                try:
                    layer.send("sf!x", {"id": i})
                except RedisUnavailable:
                    failed.append(i)
                    stop.wait(0.01)  # a real client backs off too
                    continue
                except BaseException as e:  # pragma: no cover - reported below
                    errors.append(e)
                    return
                acked[i] = time.monotonic()

        sender = threading.Thread(target=send)
        sender.start()
        try:
            deadline = time.monotonic() + 10
            while len(acked) < 200 and time.monotonic() < deadline:
                time.sleep(0.01)
            self.assertGreaterEqual(len(acked), 200, "traffic before the failover")
            fault()
            fault_at = time.monotonic()
            deadline = fault_at + FAILOVER_BOUND + 15
            while in_reactor(lambda: layer.shards[0].master) == old:
                self.assertLess(time.monotonic(), deadline, "the shard stayed on the old master")
                time.sleep(0.05)
            switched_at = time.monotonic()
            deadline = switched_at + 15
            while len([t for t in acked.values() if t > switched_at]) < 200:
                self.assertLess(time.monotonic(), deadline, "traffic on the new master")
                self.assertEqual(errors, [])
                time.sleep(0.05)
        finally:
            stop.set()
            sender.join(30)
        self.assertFalse(sender.is_alive(), "a send hung")
        self.assertEqual(errors, [])
        new = self.cluster.wait_for_failover(old)  # type: ignore[arg-type]
        self.assertEqual(in_reactor(lambda: layer.shards[0].master), new)

        # Everything acknowledged by the new master arrives, and nothing twice.
        acked_after = {i for i, t in acked.items() if t > switched_at}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with lock:
                if acked_after <= set(received):
                    break
            time.sleep(0.05)
        with lock:
            got = list(received)
        twice = sorted(i for i in set(got) if got.count(i) > 1)
        self.assertLessEqual(acked_after, set(got))
        self.assertLessEqual(set(got), set(acked) | set(failed))
        self.check_basics(layer, "after")
        after = sorted(t for t in acked.values() if t > fault_at)
        return {
            "failed": failed,
            "resumed": after[0] - fault_at,
            "switched": switched_at - fault_at,
            "twice": twice,
            "sent_before_switch": {i for i, t in acked.items() if t <= switched_at},
        }

    def test_traffic_resumes_on_the_new_master_after_a_kill(self) -> None:
        """After the master is killed, sends fail, then resume on the new one within 15 s.

        The shard moves to the new master within 15 s and no message is received twice.
        """
        outcome = self.through_failover(self.cluster.kill_master)
        print(
            "\nsentinel failover (SIGKILL of the master): sends resumed %.2f s after the "
            "kill; the shard was on the new master %.2f s after it"
            % (outcome["resumed"], outcome["switched"])
        )
        self.assertTrue(
            outcome["failed"], "sends failed (RedisUnavailable) while there was no master"
        )
        self.assertLess(outcome["resumed"], FAILOVER_BOUND)
        self.assertLess(outcome["switched"], FAILOVER_BOUND)
        self.assertEqual(outcome["twice"], [], "a message was received twice")

    def test_a_demoted_master_is_left_for_the_new_one(self) -> None:
        """On SENTINEL FAILOVER the shard leaves the demoted master for the new one in 15 s.

        Only messages sent before the switch may be received twice.
        """
        # SENTINEL FAILOVER: the old master lives on and is made a replica
        # of the new one, so the layer meets READONLY, UNBLOCKED, CLIENT
        # KILL or ROLE "slave" there, whichever comes first.
        sentinel = self.cluster.sentinels[0]
        outcome = self.through_failover(
            lambda: sentinel.cli("SENTINEL", "FAILOVER", self.cluster.master_name)
        )
        print(
            "\nsentinel failover (SENTINEL FAILOVER, the old master demoted): the shard "
            "was on the new master %.2f s after it; %d message(s) received twice"
            % (outcome["switched"], len(outcome["twice"]))
        )
        self.assertLess(outcome["switched"], FAILOVER_BOUND)
        # Replication is asynchronous: until the shard leaves the old master
        # (at most sentinel_check_interval after the sentinels switched),
        # what it pops there is not popped on the new master, which may
        # deliver it again.  Only messages sent before the switch can come
        # twice; none sent after it.
        self.assertLessEqual(set(outcome["twice"]), outcome["sent_before_switch"])
