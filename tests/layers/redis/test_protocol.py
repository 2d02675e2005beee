"""
Unit tests of chanserv.layers.redis.protocol on its own, over a
``StringTransport`` and a ``task.Clock``: a command's deadline bookkeeping,
how failures are translated (demotion, lost connection, timeout), the
factory's hooks, and a blocking pop against a fake shard -- including the
``CLIENT UNBLOCK`` retries that tests/layers/redis/test_connection.py
(the whole shard) does not reach.
"""

from __future__ import annotations

from typing import Any

import txredisapi
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from chanserv.layers.redis import protocol
from chanserv.layers.redis.errors import RedisTimeout, RedisUnavailable
from chanserv.layers.redis.protocol import (
    BlockingPop,
    ConnectionFactory,
    RedisConnectionProtocol,
    is_demotion,
)
from tests.layers.redis.fakes import Error, encode, parse_commands

LABEL = "redis.test:6379"


def connected(clock: Clock, factory: ConnectionFactory | None = None) -> Any:
    """A protocol connected over a StringTransport, and that transport."""
    factory = factory or ConnectionFactory(clock, 2.0, LABEL)
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


def sent(transport: StringTransport) -> list[list[bytes]]:
    commands = parse_commands(transport.value())
    transport.clear()
    return commands


class DemotionTests(SynchronousTestCase):
    def test_replica_errors_are_demotions(self) -> None:
        """READONLY, UNBLOCKED and MASTERDOWN -- bare or after a script's "-" -- mean demoted."""
        for message in (
            "READONLY You can't write against a read only replica.",
            "UNBLOCKED force unblock from blocking operation",
            "MASTERDOWN Link with MASTER is down",
            "ERR Error running script (call to f_x): @user_script:1: -READONLY You can't write",
        ):
            self.assertTrue(is_demotion(message), message)
        for message in ("ERR unknown command", "ERR READONLY in the middle", "READONLYX"):
            self.assertFalse(is_demotion(message), message)


class EncodingTests(SynchronousTestCase):
    """Commands go out encoded by hiredis, as txredisapi would encode them."""

    def written(self, *args: Any) -> bytes:
        proto, transport = connected(Clock())
        proto.execute_command(*args)
        return bytes(transport.value())

    def test_hiredis_encodes_what_txredisapi_would(self) -> None:
        """str (UTF-8), binary bytes and ints: the same bytes either way."""
        self.assertIsNotNone(protocol.pack_command)
        args = ("EVALSHA", "ab" * 20, 0, "caf\u00e9", b"\x00\r\n\xff", -5, 2**70, "")
        with_hiredis = self.written(*args)
        self.patch(protocol, "pack_command", None)
        self.assertEqual(with_hiredis, self.written(*args))
        self.assertEqual(
            parse_commands(with_hiredis),
            [[str(a).encode("utf-8") if isinstance(a, (str, int)) else a for a in args]],
        )

    def test_a_float_keeps_its_value(self) -> None:
        """A float argument (a BLPOP timeout, the group expiry) reads back as the same number."""
        [[_, written]] = parse_commands(self.written("X", 1.25))
        self.assertEqual(float(written), 1.25)

    def test_an_argument_hiredis_refuses_takes_txredisapis_way(self) -> None:
        """hiredis takes no bool: the command is still sent, as txredisapi encodes it."""
        proto, transport = connected(Clock())
        d = proto.execute_command("SET", "k", True)
        self.assertEqual(sent(transport), [[b"SET", b"k", b"True"]])
        # On that path, a command's size is its arguments' bytes.
        self.assertEqual([size for _, size in proto.pending], [4])
        proto.dataReceived(encode(b"OK"))
        self.assertEqual(self.successResultOf(d), b"OK")

    def test_without_hiredis_replies_errors_and_losses_still_arrive(self) -> None:
        """With no pack_command, txredisapi encodes; replies, error replies and a lost connection as before."""
        self.patch(protocol, "pack_command", None)
        proto, transport = connected(Clock())
        ok = proto.execute_command("GET", "k")
        bad = proto.execute_command("NOPE")
        lost = proto.execute_command("GET", "j")
        self.assertEqual(sent(transport), [[b"GET", b"k"], [b"NOPE"], [b"GET", b"j"]])
        proto.dataReceived(encode(b"v") + encode(Error("ERR unknown command 'NOPE'")))
        self.assertEqual(self.successResultOf(ok), b"v")
        self.failureResultOf(bad, txredisapi.ResponseError)
        proto.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(lost, RedisUnavailable)
        self.assertEqual((list(proto.pending), proto.pending_bytes), ([], 0))


class ProtocolTests(SynchronousTestCase):
    def test_not_connected_fails_fast(self) -> None:
        """A command before the connection is made fails at once with RedisUnavailable."""
        proto = RedisConnectionProtocol(Clock(), 2.0, LABEL)
        self.failureResultOf(proto.execute_command("GET", "k"), RedisUnavailable)

    def test_each_command_gets_a_deadline_until_its_reply(self) -> None:
        """Each command queues (deadline, bytes), reply timeout or its own; replies pop them."""
        clock = Clock()
        clock.advance(10)
        proto, transport = connected(clock)
        first = proto.execute_command("GET", "key")
        second = proto.execute_command("BLPOP", "q", 5, timeout=7.0)
        get, blpop = (
            b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n",
            b"*3\r\n$5\r\nBLPOP\r\n$1\r\nq\r\n$1\r\n5\r\n",
        )
        self.assertEqual(transport.value(), get + blpop)
        # Each command's size is the bytes written for it.
        self.assertEqual(list(proto.pending), [(12.0, len(get)), (17.0, len(blpop))])
        self.assertEqual(proto.pending_bytes, len(get) + len(blpop))
        proto.dataReceived(encode(b"value"))
        self.assertEqual(self.successResultOf(first), b"value")
        self.assertEqual((list(proto.pending), proto.replies), ([(17.0, len(blpop))], 1))
        self.assertEqual(proto.pending_bytes, len(blpop))
        self.assertNoResult(second)

    def test_demotion_drops_the_connection(self) -> None:
        """A READONLY reply marks it demoted, aborts the connection, fails as RedisUnavailable."""
        proto, transport = connected(Clock())
        d = proto.execute_command("SET", "k", "v")
        proto.dataReceived(encode(Error("READONLY You can't write against a read only replica.")))
        failure = self.failureResultOf(d, RedisUnavailable)
        self.assertIn("no master now", failure.getErrorMessage())
        self.assertTrue(proto.demoted and transport.disconnected)

    def test_other_error_replies_are_the_callers(self) -> None:
        """Any other error reply is the caller's ResponseError; the connection stays."""
        proto, transport = connected(Clock())
        d = proto.execute_command("INCR", "k")
        proto.dataReceived(encode(Error("WRONGTYPE Operation against a key")))
        self.failureResultOf(d, txredisapi.ResponseError)
        self.assertFalse(transport.disconnecting)

    def test_lost_connection_fails_commands_in_flight(self) -> None:
        """The connection goes: in-flight commands fail RedisUnavailable; the factory is told."""
        lost: list[Any] = []
        factory = ConnectionFactory(Clock(), 2.0, LABEL, lost=lost.append)
        proto, _ = connected(Clock(), factory)
        d = proto.execute_command("GET", "k")
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertIn(LABEL, self.failureResultOf(d, RedisUnavailable).getErrorMessage())
        self.assertEqual((lost, list(proto.pending), proto.pending_bytes), ([proto], [], 0))

    def test_timed_out_connection_fails_with_redis_timeout(self) -> None:
        """Dropped by the owner's sweep (timed_out): in-flight commands fail RedisTimeout."""
        proto, _ = connected(Clock())
        d = proto.execute_command("GET", "k")
        proto.timed_out = True
        proto.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(d, RedisTimeout)

    def test_factory_reports_each_protocol_built(self) -> None:
        """The factory calls built() with each protocol and keeps the latest."""
        built: list[Any] = []
        factory = ConnectionFactory(Clock(), 3.0, LABEL, built=built.append)
        proto = factory.buildProtocol(None)
        self.assertEqual((built, factory.latest, proto.factory), ([proto], proto, factory))
        self.assertEqual((proto.reply_timeout, proto.label), (3.0, LABEL))


class FakeShard:
    """The :class:`BlockingConnections` side of a blocking pop, by hand."""

    reply_timeout = 2.0

    def __init__(self) -> None:
        self.reactor = Clock()
        self.acquiring: Deferred[Any] = Deferred()
        self.released: list[Any] = []
        self.executed: list[tuple[tuple[Any, ...], Deferred[Any]]] = []

    def acquire_blocking(self) -> Deferred[Any]:
        return self.acquiring

    def release_blocking(self, proto: Any) -> None:
        self.released.append(proto)

    def execute(self, *args: Any, timeout: float | None = None) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.executed.append((args, d))
        return d


class BlockingPopTests(SynchronousTestCase):
    def start(self, timeout: float = 5, client_id: int | None = 42) -> Any:
        self.shard = FakeShard()
        pop = BlockingPop(self.shard, ["q1", "q2"], timeout)
        self.proto, self.transport = connected(self.shard.reactor)
        self.proto.client_id = client_id
        self.shard.acquiring.callback(self.proto)
        return pop

    def test_pop_fires_then_releases_the_connection(self) -> None:
        """BLPOP sends its timeout; the popped pair fires, then the connection is freed."""
        pop = self.start(timeout=5)
        self.assertEqual(sent(self.transport), [[b"BLPOP", b"q1", b"q2", b"5"]])
        self.assertEqual(self.proto.pending[0][0], 5 + FakeShard.reply_timeout)
        self.proto.dataReceived(encode([b"q2", b"ref"]))
        self.assertEqual(self.successResultOf(pop.deferred), (b"q2", b"ref"))
        self.assertEqual(self.shard.released, [self.proto])

    def test_fractional_timeouts_stay_fractional(self) -> None:
        """A timeout of 0.5 s goes on the wire as 0.5 (txredisapi writes 0.500000), not 0."""
        self.start(timeout=0.5)
        [[*_, wire_timeout]] = sent(self.transport)
        self.assertEqual(float(wire_timeout), 0.5)

    def test_unblock_while_acquiring_cancels_and_fires_none(self) -> None:
        """Unblocked before it has a connection: the wait is cancelled, the pop fires None."""
        shard = FakeShard()
        pop = BlockingPop(shard, ["q"], 5)
        pop.unblock()
        self.assertIsNone(self.successResultOf(pop.deferred))
        self.assertEqual(shard.executed, [])

    def test_client_unblock_is_retried_while_the_pop_is_in_flight(self) -> None:
        """CLIENT UNBLOCK answered 0 (it overtook the BLPOP) is sent again, backing off."""
        pop = self.start()
        pop.unblock()
        pop.unblock()  # once is enough
        [(args, answer)] = self.shard.executed
        self.assertEqual(args, ("CLIENT", "UNBLOCK", 42))
        answer.callback(0)
        self.shard.reactor.advance(0.002)
        self.assertEqual(len(self.shard.executed), 2)
        self.shard.executed[1][1].callback(0)
        self.shard.reactor.advance(0.003)
        self.assertEqual(len(self.shard.executed), 2, "backing off: 0.004 s this time")
        self.shard.reactor.advance(0.001)
        self.assertEqual(len(self.shard.executed), 3)
        self.proto.dataReceived(encode(None))  # the pop ends
        self.shard.executed[2][1].callback(0)
        self.shard.reactor.advance(1)
        self.assertEqual(len(self.shard.executed), 3, "no retry once the pop is back")
        self.assertIsNone(self.successResultOf(pop.deferred))

    def test_without_client_ids_unblock_waits_for_the_timeout(self) -> None:
        """Redis < 5 (no client id): nothing is sent; the pop runs to its timeout."""
        pop = self.start(client_id=None)
        pop.unblock()
        self.assertEqual(self.shard.executed, [])
        self.assertNoResult(pop.deferred)

    def test_error_reply_releases_the_connection_and_fails(self) -> None:
        """An error reply to BLPOP: the connection is fine and freed; the pop fails with it."""
        pop = self.start()
        self.proto.dataReceived(encode(Error("WRONGTYPE Operation against a key")))
        self.failureResultOf(pop.deferred, txredisapi.ResponseError)
        self.assertEqual(self.shard.released, [self.proto])

    def test_lost_connection_fails_even_an_unblocked_pop(self) -> None:
        """RedisUnavailable is never hidden, even after unblock(): the reference may be lost."""
        pop = self.start()
        pop.unblock()
        self.proto.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(pop.deferred, RedisUnavailable)
        self.assertEqual(self.shard.released, [])
