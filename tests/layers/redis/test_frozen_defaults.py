"""
A frozen ``redis-server`` (SIGSTOP) with the layer's *default* connection
options: new work fails with :class:`RedisUnavailable` within 5 s (the
interface's 503), at once once the freeze is noticed, and after SIGCONT the
layer is back within 5 s -- also after a freeze long enough for the
reconnection back-off to reach its cap.
"""

from __future__ import annotations

import threading
import time
import unittest
from typing import Any

from chanserv.layers.redis import RedisChannelLayer, RedisUnavailable
from tests.redisserver import RedisServer
from tests.support import in_reactor, reactor_thread

BOUND = 5.0


class FrozenDefaultsTests(unittest.TestCase):
    def setUp(self) -> None:
        self.server = RedisServer()
        self.server.start()
        self.addCleanup(self.server.cleanup)
        # Default connection_kwargs: what a site gets without tuning.
        self.layer = RedisChannelLayer(hosts=[self.server.url], prefix="fd:", stats_prefix="fdm:")
        in_reactor(self.layer.attach_reactor, reactor_thread())
        self.addCleanup(lambda: in_reactor(self.layer.detach_reactor, timeout=30))
        in_reactor(self.layer.shards[0].when_up, timeout=10)

    def test_frozen_is_noticed_and_thawed_is_reconnected_within_5_s(self) -> None:
        """With default options a frozen Redis fails sends within 5 s, then in under 0.5 s.

        Once thawed the shard is up again within 5 s and both channel kinds deliver.
        """
        layer = self.layer
        batches: list[Any] = []
        arrived = threading.Event()
        in_reactor(layer.add_local_receiver, "fd!", lambda b: (batches.append(b), arrived.set()))
        layer.send("fd.warm", {"n": 0})
        self.assertEqual(layer.receive(["fd.warm"], block=True), ("fd.warm", {"n": 0}))

        self.server.freeze()
        try:
            frozen_at = time.monotonic()
            with self.assertRaises(RedisUnavailable):
                layer.send("fd.lost", {})  # may or may not have happened
            noticed = time.monotonic() - frozen_at
            started = time.monotonic()
            with self.assertRaises(RedisUnavailable):
                layer.send("fd.lost", {})
            fail_fast = time.monotonic() - started
            # Stay frozen long enough for the back-off to reach its cap.
            time.sleep(8)
            with self.assertRaises(RedisUnavailable):
                layer.send("fd.lost", {})
        finally:
            self.server.thaw()
        thawed_at = time.monotonic()
        in_reactor(layer.shards[0].when_up, timeout=30)
        back = time.monotonic() - thawed_at
        print(
            "\nfrozen redis, default options: send failed %.2f s after SIGSTOP, then in "
            "%.3f s; up %.2f s after SIGCONT" % (noticed, fail_fast, back)
        )
        self.assertLess(noticed, BOUND)
        self.assertLess(fail_fast, 0.5)
        self.assertLess(back, BOUND)
        layer.send("fd", {"n": 1})
        self.assertEqual(layer.receive(["fd"], block=True), ("fd", {"n": 1}))
        layer.send("fd!a", {"n": 2})
        self.assertTrue(arrived.wait(10))
        self.assertEqual(batches, [[("fd!a", {"n": 2})]])
