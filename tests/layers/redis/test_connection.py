"""
:class:`RedisShard` on a ``MemoryReactorClock`` with in-memory connections
(:mod:`tests.layers.redis.fakes`): readiness (login, ROLE, scripts),
reconnection back-off, reply timeouts of a frozen server, fail-fast while
down, NOSCRIPT, READONLY after a failover, and blocking pops.  Time is the
clock's; no sockets, no sleeps.
"""

from __future__ import annotations

import itertools
from typing import Any

import txredisapi
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from chanserv.layers.redis import connection
from chanserv.layers.redis.config import DEFAULT_OPTIONS, RedisAddress
from chanserv.layers.redis.connection import RedisShard
from chanserv.layers.redis.errors import RedisTimeout, RedisUnavailable
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

ADDRESS = RedisAddress("redis.test", 6379)


class ShardTestCase(SynchronousTestCase):
    def make_shard(self, address: Any = ADDRESS, **kwargs: Any) -> RedisShard:
        self.reactor = MemoryReactorClock()
        kwargs.setdefault("scripts", [SCRIPT])
        shard = RedisShard(self.reactor, address, **kwargs)
        shard.startService()
        return shard

    def up(self, **kwargs: Any) -> tuple[RedisShard, FakeConnection]:
        shard = self.make_shard(**kwargs)
        server = accept(self.reactor, 6379)
        ready(server)
        self.assertEqual(shard.state, "up")
        return shard, server

    def pump(self, seconds: float, step: float = 0.05) -> None:
        """Advance the clock in steps, as a running reactor would."""
        end = self.reactor.seconds() + seconds
        while self.reactor.seconds() < end - 1e-9:
            self.reactor.advance(min(step, end - self.reactor.seconds()))

    def attempt_times(self, until: float, step: float = 0.01) -> list[float]:
        """Refuse every connection attempt up to ``until``; when each came."""
        times = []
        while self.reactor.seconds() < until:
            while self.reactor.tcpClients:
                times.append(round(self.reactor.seconds(), 2))
                refuse(self.reactor)
            self.reactor.advance(step)
        return times


class DefaultsTests(SynchronousTestCase):
    def test_defaults_bound_detection_and_reconnection(self) -> None:
        """
        With the default options, a frozen server is noticed within 3.5 s
        (reply timeout plus two sweeps) and one back is reconnected to
        within 2.1 s (back-off cap plus jitter): both under 5 s.
        """
        shard = RedisShard(MemoryReactorClock(), ADDRESS)
        self.assertEqual(shard.reply_timeout, DEFAULT_OPTIONS["socket_timeout"])
        self.assertLessEqual(shard.reply_timeout + 2 * shard.sweep_interval, 3.5)
        self.assertLessEqual(shard.reconnect_max + 0.1, 2.1)


class ReadinessTests(ShardTestCase):
    def test_commands_wait_for_the_first_attempt(self) -> None:
        """A command issued before the first connection is ready is sent once it is up."""
        shard = self.make_shard()
        d = shard.execute("GET", "k")
        self.assertNoResult(d)
        server = accept(self.reactor)
        ready(server)
        self.assertEqual(server.commands(), [[b"GET", b"k"]])
        server.reply(b"v")
        self.assertEqual(self.successResultOf(d), b"v")

    def test_login_then_role_then_scripts(self) -> None:
        """A new connection sends AUTH, SELECT db, then ROLE and SCRIPT LOAD; then it is up."""
        address = RedisAddress("redis.test", 6379, db=3, password="pw", username="me")
        shard = self.make_shard(address=address)
        server = accept(self.reactor)
        self.assertEqual(server.commands(), [[b"AUTH", b"me", b"pw"]])
        server.reply(OK)
        self.assertEqual(server.commands(), [[b"SELECT", b"3"]])
        server.reply(OK)
        ready(server)
        self.assertEqual(shard.state, "up")

    def test_failed_login_is_retried_with_back_off(self) -> None:
        """A refused AUTH drops the connection, is logged, fails commands, and is retried."""
        shard = self.make_shard(address=RedisAddress("redis.test", 6379, password="bad"))
        server = accept(self.reactor)
        with capturedLogs() as events:
            server.reply(Error("WRONGPASS invalid username-password pair"))
        self.assertTrue(server.dropped)
        server.close()
        self.assertEqual(shard.state, "down")
        self.assertIn("WRONGPASS", " ".join(str(e.get("reason")) for e in events))
        self.assertIsInstance(
            self.failureResultOf(shard.execute("GET", "k")).value, RedisUnavailable
        )
        self.reactor.advance(0.31)
        server = accept(self.reactor)
        self.assertEqual(server.commands(), [[b"AUTH", b"bad"]])

    def test_a_replica_is_refused(self) -> None:
        """A server whose ROLE says replica is dropped, logged and retried; no scripts load."""
        shard = self.make_shard()
        server = accept(self.reactor)
        self.assertEqual(server.commands(), [[b"ROLE"]])
        with capturedLogs() as events:
            server.reply(replica_of("10.0.0.9", 6379))
        self.assertTrue(server.dropped)
        self.assertEqual(server.commands(), [])  # no scripts loaded there
        server.close()
        self.assertEqual(shard.state, "down")
        messages = " ".join(str(e.get("reason")) for e in events)
        self.assertIn("is a replica of 10.0.0.9:6379, not a master", messages)
        # Tried again after the back-off; now it is the master.
        self.reactor.advance(0.31)
        ready(accept(self.reactor))
        self.assertEqual(shard.state, "up")

    def test_a_server_refusing_role_is_accepted(self) -> None:
        """A server that rejects ROLE as unknown is taken for a master: scripts load, up."""
        shard = self.make_shard()
        server = accept(self.reactor)
        self.assertEqual(server.commands(), [[b"ROLE"]])
        server.reply(Error("ERR unknown command 'ROLE'"))
        self.assertEqual(server.commands(), [[b"SCRIPT", b"LOAD", SCRIPT.source.encode()]])
        server.reply(SCRIPT.sha)
        self.assertEqual(shard.state, "up")


class ReconnectTests(ShardTestCase):
    def test_back_off_doubles_up_to_the_cap(self) -> None:
        """Reconnection back-off doubles from 0.2 s up to reconnect_max, plus the jitter."""
        self.patch(connection.random, "random", lambda: 0.5)  # jitter: 0.05 s
        shard = self.make_shard(reconnect_max=2.0)
        times = self.attempt_times(until=12)
        self.assertEqual(shard.state, "down")
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # 0.2, 0.4, 0.8, 1.6, then 2.0 s, each plus the jitter; and
        # HostnameEndpoint reports a refusal at its next 0.3 s tick.
        expected = [0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]
        self.assertGreaterEqual(len(gaps), len(expected), gaps)
        for gap, delay in zip(gaps, expected, strict=False):
            self.assertLessEqual(abs(gap - (delay + 0.3 + 0.05)), 0.03, gaps)

    def test_fails_fast_while_down_and_recovers(self) -> None:
        """While down, commands fail at once with RedisUnavailable; it then reconnects."""
        shard, server = self.up()
        server.close(clean=False)
        self.assertEqual(shard.state, "down")
        failure = self.failureResultOf(shard.execute("GET", "k"))
        self.assertIsInstance(failure.value, RedisUnavailable)
        self.assertNotIsInstance(failure.value, RedisTimeout)
        self.reactor.advance(0.31)
        ready(accept(self.reactor))
        self.assertEqual(shard.state, "up")
        self.assertNoResult(shard.execute("GET", "k"))

    def test_in_flight_commands_fail_when_the_connection_goes(self) -> None:
        """A lost connection fails its in-flight commands RedisUnavailable, not RedisTimeout."""
        shard, server = self.up()
        d = shard.execute("GET", "k")
        server.close(clean=False)
        failure = self.failureResultOf(d)
        self.assertIsInstance(failure.value, RedisUnavailable)
        self.assertNotIsInstance(failure.value, RedisTimeout)

    def test_when_up_fires_on_reconnection(self) -> None:
        """when_up() called while down waits, and fires once the shard has reconnected."""
        shard, server = self.up()
        server.close()
        d = shard.when_up()
        self.assertNoResult(d)
        self.reactor.advance(0.31)
        ready(accept(self.reactor))
        self.successResultOf(d)


class TimeoutTests(ShardTestCase):
    """A frozen server: connections stay open, no byte comes back."""

    def test_frozen_server_is_dropped_within_timeout_plus_two_sweeps(self) -> None:
        """An unanswered command drops the connection in reply timeout + two sweeps, < 5 s.

        It fails RedisTimeout; later commands fail at once with RedisUnavailable.
        """
        shard, server = self.up()
        started = self.reactor.seconds()
        d = shard.execute("GET", "k")
        self.pump(shard.reply_timeout - 0.1)
        self.assertFalse(server.dropped)
        self.assertNoResult(d)
        while not server.dropped:
            self.reactor.advance(0.05)
        elapsed = self.reactor.seconds() - started
        self.assertLessEqual(elapsed, shard.reply_timeout + 2 * shard.sweep_interval)
        self.assertLess(elapsed, 5.0)
        server.close()
        self.assertIsInstance(self.failureResultOf(d).value, RedisTimeout)
        # New work fails at once from now on (no waiting for a timeout).
        failure = self.failureResultOf(shard.execute("GET", "k"))
        self.assertNotIsInstance(failure.value, RedisTimeout)
        self.assertIsInstance(failure.value, RedisUnavailable)

    def test_a_busy_reactor_is_not_a_frozen_server(self) -> None:
        """An overdue reply read between two sweeps keeps the connection; both commands end."""
        # A reply read between the two sweeps keeps the connection.
        shard, server = self.up()
        first = shard.execute("GET", "a")
        second = shard.execute("GET", "b")
        self.pump(shard.reply_timeout + shard.sweep_interval)
        server.commands()
        server.reply(b"1")  # overdue, but the server is alive
        self.pump(shard.sweep_interval)
        self.assertFalse(server.dropped)
        self.assertEqual(self.successResultOf(first), b"1")
        server.reply(b"2")
        self.assertEqual(self.successResultOf(second), b"2")

    def test_frozen_at_connect_keeps_backing_off_then_reconnects_when_thawed(self) -> None:
        """A server silent at connect is dropped after the reply timeout, retried with back-off.

        Once it answers again the shard is up within reconnect_max.
        """
        shard = self.make_shard(reconnect_max=2.0)
        attempts = []
        for _ in range(4):
            while not self.reactor.tcpClients:
                self.reactor.advance(0.05)
            attempts.append(self.reactor.seconds())
            server = accept(self.reactor)
            self.assertEqual(server.commands(), [[b"ROLE"]])  # never answered
            while not server.dropped:
                self.reactor.advance(0.05)
            server.close()
            self.assertEqual(shard.state, "down")
            self.assertIsInstance(
                self.failureResultOf(shard.execute("PING")).value, RedisUnavailable
            )
        # Each attempt waits a reply timeout (plus sweeps), then the back-off.
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        for gap, delay in zip(gaps, [0.2, 0.4, 0.8], strict=True):
            self.assertGreaterEqual(gap, shard.reply_timeout + delay)
            self.assertLessEqual(gap, shard.reply_timeout + 2 * shard.sweep_interval + delay + 0.2)
        # Thawed: the next attempt is answered and the shard is up.
        thawed = self.reactor.seconds()
        while not self.reactor.tcpClients:
            self.reactor.advance(0.05)
        ready(accept(self.reactor))
        self.assertEqual(shard.state, "up")
        self.assertLessEqual(self.reactor.seconds() - thawed, shard.reconnect_max + 0.15)

    def test_commands_in_flight_are_bounded(self) -> None:
        """Beyond max_pending commands in flight, further ones fail with 'Too many commands'."""
        shard, server = self.up(max_pending=3)
        sent = [shard.execute("GET", "k%d" % i) for i in range(5)]
        for d in sent[3:]:
            self.assertIn("Too many commands", str(self.failureResultOf(d).value))
        self.assertEqual(len(server.commands()), 3)


class ScriptTests(ShardTestCase):
    def test_noscript_loads_once_and_runs_again(self) -> None:
        """NOSCRIPT replies cause one SCRIPT LOAD, then each failed EVALSHA is sent again."""
        shard, server = self.up()
        first = shard.eval(SCRIPT, ["k"], [1])
        second = shard.eval(SCRIPT, ["k"], [2])
        evalsha = [b"EVALSHA", SCRIPT.sha.encode(), b"1", b"k"]
        self.assertEqual(server.commands(), [evalsha + [b"1"], evalsha + [b"2"]])
        noscript = Error("NOSCRIPT No matching script. Please use EVAL.")
        server.reply(noscript, noscript)
        self.assertEqual(server.commands(), [[b"SCRIPT", b"LOAD", SCRIPT.source.encode()]])
        server.reply(SCRIPT.sha)
        self.assertEqual(server.commands(), [evalsha + [b"1"], evalsha + [b"2"]])
        server.reply(10, 20)
        self.assertEqual(self.successResultOf(first), 10)
        self.assertEqual(self.successResultOf(second), 20)

    def test_other_error_replies_are_the_callers(self) -> None:
        """A script's error reply fails the caller with ResponseError; the connection stays."""
        shard, server = self.up()
        d = shard.eval(SCRIPT, [], [])
        server.reply(Error("ERR Error running script: boom"))
        self.failureResultOf(d, txredisapi.ResponseError)
        self.assertFalse(server.dropped)
        self.assertEqual(shard.state, "up")

    def test_scripts_are_loaded_on_every_reconnection(self) -> None:
        """Every reconnection loads the scripts again before the shard is up."""
        shard, server = self.up()
        server.close()
        self.reactor.advance(0.31)
        ready(accept(self.reactor))  # asserts the SCRIPT LOAD
        self.assertEqual(shard.state, "up")


class ReadOnlyTests(ShardTestCase):
    def test_readonly_drops_the_connection_and_reconnects(self) -> None:
        """A READONLY reply fails 'no master now', drops the connection, logs, reconnects."""
        shard, server = self.up()
        d = shard.execute("RPUSH", "k", "v")
        with capturedLogs() as events:
            server.reply(Error("READONLY You can't write against a read only replica."))
            failure = self.failureResultOf(d)
            self.assertIsInstance(failure.value, RedisUnavailable)
            self.assertIn("no master now", str(failure.value))
            self.assertTrue(server.dropped)
            server.close()
        self.assertEqual(shard.state, "down")
        self.assertIn("no master now", " ".join(e["log_format"] for e in events))
        self.reactor.advance(0.31)
        ready(accept(self.reactor))
        self.assertEqual(shard.state, "up")

    def test_readonly_from_a_script_counts_too(self) -> None:
        """A -READONLY inside a script's error reply also fails and drops the connection."""
        shard, server = self.up()
        d = shard.eval(SCRIPT, ["k"], [])
        server.reply(
            Error(
                "ERR Error running script (call to f_x): @user_script:1: "
                "-READONLY You can't write against a read only replica."
            )
        )
        self.assertIsInstance(self.failureResultOf(d).value, RedisUnavailable)
        self.assertTrue(server.dropped)

    def test_demoted_blocking_connection_drops_the_command_connection(self) -> None:
        """UNBLOCKED on a BLPOP drops it and the command connection; the shard is down."""
        shard, server = self.up()
        pop = shard.blpop(["q"], 5)
        blocking = accept(self.reactor)
        self.assertEqual(blocking.commands(), [[b"CLIENT", b"ID"]])
        blocking.reply(7)
        self.assertEqual(blocking.commands(), [[b"BLPOP", b"q", b"5"]])
        blocking.reply(
            Error("UNBLOCKED force unblock from blocking operation, instance state changed")
        )
        self.assertIsInstance(self.failureResultOf(pop.deferred).value, RedisUnavailable)
        self.assertTrue(blocking.dropped)
        blocking.close()
        self.assertTrue(server.dropped)
        server.close()
        self.assertEqual(shard.state, "down")


class BlockingPopTests(ShardTestCase):
    def blocked(self, shard: RedisShard, timeout: float = 5) -> tuple[Any, FakeConnection]:
        pop = shard.blpop(["q1", "q2"], timeout)
        blocking = accept(self.reactor)
        self.assertEqual(blocking.commands(), [[b"CLIENT", b"ID"]])
        blocking.reply(42)
        self.assertEqual(blocking.commands(), [[b"BLPOP", b"q1", b"q2", str(timeout).encode()]])
        self.assertEqual(pop.client_id, 42)
        return pop, blocking

    def test_pop_and_reuse(self) -> None:
        """BLPOP runs after CLIENT ID, fires the popped pair, and reuses the idle connection."""
        shard, _ = self.up()
        pop, blocking = self.blocked(shard)
        blocking.reply([b"q2", b"ref"])
        self.assertEqual(self.successResultOf(pop.deferred), (b"q2", b"ref"))
        again = shard.blpop(["q1"], 5)
        self.assertEqual(self.reactor.tcpClients, [])  # the idle connection is reused
        self.assertEqual(blocking.commands(), [[b"BLPOP", b"q1", b"5"]])
        blocking.reply(None)
        self.assertIsNone(self.successResultOf(again.deferred))

    def test_unblock_sends_client_unblock(self) -> None:
        """unblock() sends CLIENT UNBLOCK with the pop's client id; the pop then fires None."""
        shard, server = self.up()
        pop, blocking = self.blocked(shard)
        pop.unblock()
        self.assertEqual(server.commands(), [[b"CLIENT", b"UNBLOCK", b"42"]])
        server.reply(1)
        blocking.reply(None)
        self.assertIsNone(self.successResultOf(pop.deferred))

    def test_blocking_pop_deadline_is_its_timeout_plus_the_reply_timeout(self) -> None:
        """A BLPOP connection is dropped, RedisTimeout, after its timeout plus reply timeout."""
        shard, server = self.up()
        pop, blocking = self.blocked(shard, timeout=5)
        server.reply()  # nothing for the command connection
        self.pump(5 + shard.reply_timeout - 0.1)
        self.assertFalse(blocking.dropped)
        self.pump(2 * shard.sweep_interval + 0.1)
        self.assertTrue(blocking.dropped)
        blocking.close()
        self.assertIsInstance(self.failureResultOf(pop.deferred).value, RedisTimeout)

    def test_a_frozen_command_connection_takes_the_blocking_ones_along(self) -> None:
        """Dropping a frozen command connection drops blocking ones too; their pops fail."""
        shard, server = self.up()
        pop, blocking = self.blocked(shard)
        d = shard.execute("GET", "k")
        self.pump(shard.reply_timeout + 2 * shard.sweep_interval)
        self.assertTrue(server.dropped)
        server.close()
        self.failureResultOf(d, RedisTimeout)
        self.assertTrue(blocking.dropped)  # long before its own deadline
        blocking.close()
        self.assertIsInstance(self.failureResultOf(pop.deferred).value, RedisUnavailable)

    def test_no_blocking_connection_while_down(self) -> None:
        """A BLPOP while down fails RedisUnavailable at once and opens no connection."""
        shard, server = self.up()
        server.close()
        pop = shard.blpop(["q"], 5)
        self.assertIsInstance(self.failureResultOf(pop.deferred).value, RedisUnavailable)
        self.assertEqual(self.reactor.tcpClients, [])


class StopTests(ShardTestCase):
    def test_stop_closes_everything(self) -> None:
        """stopService() unblocks pops, closes blocking then command connections, stops."""
        shard, server = self.up()
        pop = shard.blpop(["q"], 5)
        blocking = accept(self.reactor)
        blocking.reply(3)
        pop.unblock()
        stopped: Deferred[None] = shard.stopService()
        self.assertEqual(server.commands(), [[b"CLIENT", b"UNBLOCK", b"3"]])
        server.reply(1)
        blocking.reply(None)
        self.assertIsNone(self.successResultOf(pop.deferred))
        # Once the pop is back, its connection goes, then the command one.
        self.assertTrue(blocking.dropped)
        self.assertFalse(server.dropped)
        blocking.close()
        self.assertTrue(server.dropped)
        server.close()
        self.successResultOf(stopped)
        self.assertEqual(shard.state, "stopped")
        self.assertIsInstance(
            self.failureResultOf(shard.execute("GET", "k")).value, RedisUnavailable
        )
