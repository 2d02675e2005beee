"""
Shards behind Redis Sentinel, on a ``MemoryReactorClock``: the master is
resolved by asking the sentinels in turn (fake sentinel replies fed as RESP
bytes) on every (re)connection, a replica is refused, and READONLY after a
failover makes the shard reconnect to the new master.  (The name resolver
of the memory reactor maps every host to 127.0.0.1, so the fakes tell
servers apart by port.)
"""

from __future__ import annotations

from typing import Any

from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from chanserv.layers.redis.config import SentinelAddress
from chanserv.layers.redis.connection import RedisShard
from chanserv.layers.redis.errors import MasterNotFound, RedisUnavailable
from chanserv.layers.redis.sentinel import SentinelEndpoint
from tests.layers.redis.fakes import (
    OK,
    SCRIPT,
    Error,
    FakeConnection,
    accept,
    ready,
    refuse,
    replica_of,
)

SENTINELS = (("s1.test", 26379), ("s2.test", 26380), ("s3.test", 26381))
ADDRESS = SentinelAddress(master_name="mymaster", sentinels=SENTINELS)
ASK = [[b"SENTINEL", b"GET-MASTER-ADDR-BY-NAME", b"mymaster"]]


class SentinelTestCase(SynchronousTestCase):
    def make_shard(self, address: SentinelAddress = ADDRESS, **kwargs: Any) -> RedisShard:
        self.reactor = MemoryReactorClock()
        shard = RedisShard(self.reactor, address, scripts=[SCRIPT], **kwargs)
        shard.startService()
        return shard

    def pump(self, seconds: float, step: float = 0.05) -> None:
        end = self.reactor.seconds() + seconds
        while self.reactor.seconds() < end - 1e-9:
            self.reactor.advance(min(step, end - self.reactor.seconds()))

    def answer(self, port: int, master: tuple[str, int] | None) -> FakeConnection:
        """The sentinel on ``port`` is asked, answers, and is hung up on."""
        sentinel = accept(self.reactor, port)
        self.assertEqual(sentinel.commands(), ASK)
        sentinel.reply(None if master is None else [master[0], str(master[1])])
        self.assertTrue(sentinel.dropped, "a sentinel connection is for one question")
        sentinel.close()
        return sentinel

    def wait_for_attempt(self, port: int, within: float) -> None:
        end = self.reactor.seconds() + within
        while not any(a[1] == port for a in self.reactor.tcpClients):
            self.assertLess(self.reactor.seconds(), end, "no connection to port %d" % port)
            self.reactor.advance(0.01)


class ResolutionTests(SentinelTestCase):
    def test_connects_to_the_master_the_sentinel_names(self) -> None:
        """A sentinel shard asks a sentinel first, then connects to the master it names."""
        shard = self.make_shard()
        self.assertEqual([a[1] for a in self.reactor.tcpClients], [26379])  # not the master yet
        self.answer(26379, ("10.0.0.5", 6380))
        master = accept(self.reactor, 6380)
        ready(master)
        self.assertEqual(shard.state, "up")
        self.assertEqual(shard.master, ("10.0.0.5", 6380))
        self.assertEqual(
            str(shard.address), "sentinel://s1.test:26379,s2.test:26380,s3.test:26381/mymaster/0"
        )

    def test_next_sentinel_when_one_refuses(self) -> None:
        """A sentinel refusing the connection is passed over for the next one at once."""
        shard = self.make_shard()
        refuse(self.reactor, 26379)
        self.wait_for_attempt(26380, within=0.5)
        self.answer(26380, ("10.0.0.5", 6380))
        ready(accept(self.reactor, 6380))
        self.assertEqual(shard.state, "up")

    def test_next_sentinel_when_one_does_not_answer_in_time(self) -> None:
        """A sentinel silent for sentinel_timeout is dropped and the next one asked."""
        address = SentinelAddress("mymaster", SENTINELS, sentinel_timeout=1.0)
        shard = self.make_shard(address)
        frozen = accept(self.reactor, 26379)
        self.assertEqual(frozen.commands(), ASK)
        self.pump(0.9)
        self.assertEqual(self.reactor.tcpClients, [])
        self.pump(0.2)
        self.assertTrue(frozen.dropped)
        frozen.close()
        self.answer(26380, ("10.0.0.5", 6380))
        ready(accept(self.reactor, 6380))
        self.assertEqual(shard.state, "up")

    def test_a_sentinel_that_knows_no_such_master_is_skipped(self) -> None:
        """A sentinel that knows no master of that name is skipped for the next one."""
        shard = self.make_shard()
        self.answer(26379, None)
        self.answer(26380, ("10.0.0.5", 6380))
        ready(accept(self.reactor, 6380))
        self.assertEqual(shard.state, "up")

    def test_no_master_anywhere_fails_fast_and_retries(self) -> None:
        """No sentinel naming a master: down, logged why, commands fail, asked again later."""
        shard = self.make_shard()
        with capturedLogs() as events:
            for port in (26379, 26380, 26381):
                self.answer(port, None)
        self.assertEqual(shard.state, "down")
        reasons = " ".join(str(e.get("reason")) for e in events)
        self.assertIn("No sentinel of sentinel://", reasons)
        self.assertIn("s3.test:26381 knows no master named 'mymaster'", reasons)
        failure = self.failureResultOf(shard.execute("GET", "k"))
        self.assertIsInstance(failure.value, RedisUnavailable)
        # Asked again after the back-off.
        self.wait_for_attempt(26379, within=0.5)

    def test_the_sentinel_that_answered_is_asked_first_next_time(self) -> None:
        """The sentinel that last named the master is the first one asked next time."""
        shard = self.make_shard()
        refuse(self.reactor, 26379)
        self.wait_for_attempt(26380, within=0.5)
        self.answer(26380, ("10.0.0.5", 6380))
        master = accept(self.reactor, 6380)
        ready(master)
        master.close()
        self.assertEqual(shard.state, "down")
        self.wait_for_attempt(26380, within=0.5)
        self.assertEqual([a[1] for a in self.reactor.tcpClients], [26380])

    def test_passwords_for_the_sentinels_and_for_the_master(self) -> None:
        """Sentinels get AUTH with the sentinel login; the master its own password and db."""
        address = SentinelAddress(
            "mymaster",
            SENTINELS,
            password="master-pw",
            db=2,
            sentinel_password="sentinel-pw",
            sentinel_username="watcher",
        )
        shard = self.make_shard(address)
        sentinel = accept(self.reactor, 26379)
        self.assertEqual(sentinel.commands(), [[b"AUTH", b"watcher", b"sentinel-pw"]])
        sentinel.reply(OK)
        self.assertEqual(sentinel.commands(), ASK)
        sentinel.reply(["10.0.0.5", "6380"])
        master = accept(self.reactor, 6380)
        self.assertEqual(master.commands(), [[b"AUTH", b"master-pw"]])
        master.reply(OK)
        self.assertEqual(master.commands(), [[b"SELECT", b"2"]])
        master.reply(OK)
        ready(master)
        self.assertEqual(shard.state, "up")

    def test_stopping_while_resolving_cancels_the_question(self) -> None:
        """stopService() while asking a sentinel drops that connection and stops the shard."""
        shard = self.make_shard()
        sentinel = accept(self.reactor, 26379)
        stopped = shard.stopService()
        self.assertTrue(sentinel.dropped)
        sentinel.close()
        self.successResultOf(stopped)
        self.assertEqual(shard.state, "stopped")

    def test_resolve_master_reports_every_reason(self) -> None:
        """MasterNotFound names every sentinel with why it failed: refused, error, no answer."""
        self.reactor = MemoryReactorClock()
        reactor = self.reactor

        def endpoint_to(host: str, port: int, tls: bool) -> HostnameEndpoint:
            return HostnameEndpoint(reactor, host, port, timeout=1.0)

        endpoint = SentinelEndpoint(self.reactor, ADDRESS, endpoint_to, 1.0)
        d = endpoint.resolve_master()
        refuse(self.reactor, 26379)
        self.pump(0.35)
        sentinel = accept(self.reactor, 26380)
        sentinel.reply(Error("ERR unknown command"))
        sentinel.close()
        accept(self.reactor, 26381)
        self.pump(1.05)
        message = str(self.failureResultOf(d, MasterNotFound).value)
        self.assertIn("s1.test:26379: ", message)
        self.assertIn("s2.test:26380: ERR unknown command", message)
        self.assertIn("s3.test:26381 did not answer in 1s", message)


class FailoverTests(SentinelTestCase):
    def up(self, master: tuple[str, int] = ("10.0.0.5", 6380)) -> tuple[RedisShard, FakeConnection]:
        shard = self.make_shard()
        self.answer(26379, master)
        server = accept(self.reactor, master[1])
        ready(server)
        self.assertEqual(shard.state, "up")
        return shard, server

    def test_a_replica_named_during_failover_is_refused_then_the_new_master_taken(self) -> None:
        """A named master that says it is a replica is left; the next sentinel is asked."""
        shard = self.make_shard()
        self.answer(26379, ("10.0.0.5", 6380))
        stale = accept(self.reactor, 6380)
        self.assertEqual(stale.commands(), [[b"ROLE"]])
        stale.reply(replica_of("10.0.0.6", 6381))  # demoted: a sentinel lagged
        self.assertTrue(stale.dropped)
        stale.close()
        self.assertEqual(shard.state, "down")
        # Re-resolved, not just reconnected; and by another sentinel, in
        # case the first one lags behind.
        self.wait_for_attempt(26380, within=0.5)
        self.assertEqual([a[1] for a in self.reactor.tcpClients], [26380])
        self.answer(26380, ("10.0.0.6", 6381))
        ready(accept(self.reactor, 6381))
        self.assertEqual(shard.state, "up")
        self.assertEqual(shard.master, ("10.0.0.6", 6381))

    def test_readonly_reconnects_to_the_new_master(self) -> None:
        """READONLY drops command and blocking connections; all reconnect to the new master."""
        shard, old = self.up()
        pop = shard.blpop(["q"], 5)
        blocking = accept(self.reactor, 6380)
        blocking.reply(9)
        self.assertEqual(blocking.commands(), [[b"CLIENT", b"ID"], [b"BLPOP", b"q", b"5"]])
        d = shard.execute("RPUSH", "k", "v")
        old.reply(Error("READONLY You can't write against a read only replica."))
        self.assertIn("no master now", str(self.failureResultOf(d, RedisUnavailable).value))
        self.assertTrue(old.dropped)
        old.close()
        # The blocking connections on the demoted server go too.
        self.assertTrue(blocking.dropped)
        blocking.close()
        self.failureResultOf(pop.deferred, RedisUnavailable)
        self.assertEqual(shard.state, "down")
        self.wait_for_attempt(26379, within=0.5)
        self.answer(26379, ("10.0.0.6", 6381))
        new = accept(self.reactor, 6381)
        ready(new)
        self.assertEqual(shard.state, "up")
        self.assertEqual(shard.master, ("10.0.0.6", 6381))
        # New blocking connections go to the new master.
        shard.blpop(["q"], 5)
        self.assertEqual([a[1] for a in self.reactor.tcpClients], [6381])

    def test_master_moved_while_disconnected_drops_idle_blocking_connections(self) -> None:
        """Idle blocking connections to an old master are dropped once a new one is named."""
        shard, old = self.up()
        pop = shard.blpop(["q"], 5)
        blocking = accept(self.reactor, 6380)
        blocking.reply(9, None)  # CLIENT ID, then the pop times out: now idle
        self.assertIsNone(self.successResultOf(pop.deferred))
        self.assertFalse(blocking.dropped)
        old.close(clean=False)  # killed; this idle connection has not noticed yet
        self.wait_for_attempt(26379, within=0.5)
        self.answer(26379, ("10.0.0.6", 6381))
        ready(accept(self.reactor, 6381))
        self.assertTrue(blocking.dropped)
        blocking.close()
        shard.blpop(["q"], 5)
        self.assertEqual([a[1] for a in self.reactor.tcpClients], [6381])

    def test_a_master_the_sentinels_no_longer_name_is_left(self) -> None:
        """The periodic check leaves a master the sentinels no longer name, for the new one."""
        # SENTINEL FAILOVER or a partition: the old master still answers as
        # a master, but the sentinels have moved on.
        shard, old = self.up()
        interval = shard.sentinel_check_interval
        self.pump(interval)
        self.answer(26379, ("10.0.0.5", 6380))  # still the one: nothing happens
        self.assertFalse(old.dropped)
        self.pump(interval)
        with capturedLogs() as events:
            self.answer(26379, ("10.0.0.6", 6381))
        formats = " ".join(e["log_format"] for e in events)
        self.assertIn("now name {master} as the master; leaving", formats)
        self.assertTrue(old.dropped)
        old.close()
        self.assertEqual(shard.state, "down")
        self.wait_for_attempt(26379, within=0.5)
        self.answer(26379, ("10.0.0.6", 6381))
        ready(accept(self.reactor, 6381))
        self.assertEqual(shard.master, ("10.0.0.6", 6381))

    def test_sentinels_unreachable_while_up_changes_nothing(self) -> None:
        """Sentinels unreachable at the periodic check leave the shard up on its master."""
        shard, old = self.up()
        self.pump(shard.sentinel_check_interval)
        for port in (26379, 26380, 26381):
            refuse(self.reactor, port)
            self.pump(0.35)
        self.assertFalse(old.dropped)
        self.assertEqual(shard.state, "up")
