"""
Pins on what the Redis layer uses of txredisapi beyond its public API: the
"txredisapi internals" section of ``chanserv/layers/redis/protocol.py``.
One test per name; each fails with a message saying what changed, so that
a txredisapi release that drops or changes one is caught here rather than
as a slow or stuck layer.
"""

from __future__ import annotations

import inspect
from typing import Any

import txredisapi
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from chanserv.layers.redis.protocol import RedisConnectionProtocol, TxredisapiHooks

REVIEW = "; review the 'txredisapi internals' section of chanserv/layers/redis/protocol.py"

# Three replies in one chunk: bulk strings inside a nested multi-bulk, a
# bulk string, and an integer; the pure-Python parser meets several
# "rest of the chunk after a bulk string" points in it.
CHUNK = b"*2\r\n$3\r\nabc\r\n*2\r\n$1\r\nx\r\n$0\r\n\r\n$5\r\nhello\r\n:42\r\n"
REPLIES = [[b"abc", [b"x", b""]], b"hello", 42]


class Counting(TxredisapiHooks):
    """The hooks, counting replies, over whichever parser is mixed in."""

    def __init__(self) -> None:
        super().__init__(charset=None, convertNumbers=False)
        self.arrived = 0
        self.replies: list[Any] = []

    def reply_arrived(self) -> None:
        self.arrived += 1

    def callLater(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError(
            "txredisapi's pure-Python parser scheduled a reactor call (%r): it no longer "
            "hands the rest of a chunk to setLineMode(extra)%s" % (args, REVIEW)
        )


class PurePython(Counting, txredisapi.BaseRedisProtocol):
    pass


class Installed(Counting, txredisapi.RedisProtocol):
    pass


def feed(proto: Any, chunk: bytes) -> list[Any]:
    proto.makeConnection(StringTransport())
    replies = []
    for _ in REPLIES:
        proto.replyQueue.get().addCallback(replies.append)
    proto.dataReceived(chunk)
    return replies


class InternalsTests(SynchronousTestCase):
    def test_RedisProtocol_is_one_of_the_two_parsers(self) -> None:
        """txredisapi.RedisProtocol is BaseRedisProtocol or HiredisProtocol, nothing else."""
        self.assertIn(
            txredisapi.RedisProtocol,
            (txredisapi.BaseRedisProtocol, txredisapi.HiredisProtocol),
            "txredisapi.RedisProtocol is neither BaseRedisProtocol nor HiredisProtocol" + REVIEW,
        )

    def test_setLineMode_takes_the_rest_of_the_chunk(self) -> None:
        """setLineMode(extra) lets the pure-Python parser parse a whole chunk in one turn."""
        parameters = inspect.signature(txredisapi.BaseRedisProtocol.setLineMode).parameters
        self.assertIn("extra", parameters, "setLineMode() lost its 'extra' argument" + REVIEW)
        proto = PurePython()
        self.assertEqual(
            feed(proto, CHUNK),
            REPLIES,
            "the pure-Python parser did not parse a whole chunk in one turn" + REVIEW,
        )
        self.assertFalse(proto.paused, "the parser left the transport paused" + REVIEW)
        self.assertEqual(proto.line_mode, 1, "setLineMode() no longer means line_mode = 1" + REVIEW)

    def test_setLineMode_byte_by_byte(self) -> None:
        """The pure-Python parser loses no bytes when replies arrive one byte per read."""
        # Bulk strings split across reads: the rest is sometimes empty.
        proto = PurePython()
        proto.makeConnection(StringTransport())
        replies: list[Any] = []
        for _ in REPLIES:
            proto.replyQueue.get().addCallback(replies.append)
        for i in range(len(CHUNK)):
            proto.dataReceived(CHUNK[i : i + 1])
        self.assertEqual(replies, REPLIES, "the parser lost bytes across reads" + REVIEW)

    def test_dataReceived_takes_unpause(self) -> None:
        """Both txredisapi parsers' dataReceived() still take the 'unpause' argument."""
        for cls in (txredisapi.BaseRedisProtocol, txredisapi.HiredisProtocol):
            parameters = inspect.signature(cls.dataReceived).parameters
            self.assertIn(
                "unpause",
                parameters,
                "%s.dataReceived() lost its 'unpause' argument%s" % (cls.__name__, REVIEW),
            )

    def test_replyReceived_is_called_once_per_reply(self) -> None:
        """Both txredisapi parsers call replyReceived() exactly once per (nested) reply."""
        for cls in (PurePython, Installed):
            proto = cls()
            self.assertEqual(feed(proto, CHUNK), REPLIES)
            self.assertEqual(
                proto.arrived,
                len(REPLIES),
                "%s does not call replyReceived() once per reply%s" % (cls.__mro__[2], REVIEW),
            )

    def test_the_layer_protocol_counts_replies(self) -> None:
        """RedisConnectionProtocol counts replies and pops one pending command per reply."""

        class Clock:
            def seconds(self) -> float:
                return 0.0

        proto = RedisConnectionProtocol(Clock(), 1.0, "test")
        proto.makeConnection(StringTransport())
        results: list[Any] = []
        for key in ("a", "b", "c"):
            proto.execute_command("GET", key).addCallback(results.append)
        self.assertEqual(len(proto.pending), 3)
        proto.dataReceived(b"$1\r\n1\r\n$1\r\n2\r\n")
        self.assertEqual((results, proto.replies, len(proto.pending)), ([b"1", b"2"], 2, 1))

    def test_replyQueue_hands_out_replies_in_order_and_handle_reply_raises_errors(self) -> None:
        """replyQueue.get() fires with each reply in order; handle_reply() raises an error reply."""
        for cls in (PurePython, Installed):
            proto = cls()
            proto.makeConnection(StringTransport())
            first = proto.replyQueue.get().addCallback(proto.handle_reply)
            second = proto.replyQueue.get().addCallback(proto.handle_reply)
            proto.dataReceived(b"$2\r\nok\r\n-ERR nope\r\n")
            self.assertEqual(
                self.successResultOf(first),
                b"ok",
                "%s's replyQueue no longer hands out replies%s" % (cls.__mro__[2], REVIEW),
            )
            failure = self.failureResultOf(second)
            self.assertTrue(
                failure.check(txredisapi.ResponseError),
                "%s.handle_reply() no longer raises an error reply%s" % (cls.__mro__[2], REVIEW),
            )

    def test_the_layer_never_pipelines_or_uses_multi(self) -> None:
        """RedisConnectionProtocol starts outside pipelining and MULTI, the state its direct path needs."""
        proto = RedisConnectionProtocol(type("C", (), {"seconds": lambda self: 0.0})(), 1.0, "t")
        proto.makeConnection(StringTransport())
        self.assertFalse(proto.pipelining, "txredisapi's protocol starts pipelining" + REVIEW)
        self.assertFalse(proto.inMulti, "txredisapi's protocol starts in MULTI" + REVIEW)

    def test_tryConvertData_leaves_raw_replies_as_they_are(self) -> None:
        """With charset None and convertNumbers False, txredisapi's tryConvertData is the identity."""
        reply = [b"abc", [b"1", b"2.5", b"", None, 7], b"\x00\xff raw", -3]
        for cls in (PurePython, Installed):
            proto = cls()
            self.assertEqual(
                proto.tryConvertData(reply),
                reply,
                "%s.tryConvertData() changes raw replies: RedisConnectionProtocol's identity "
                "override no longer matches it%s" % (cls.__mro__[2], REVIEW),
            )
            self.assertEqual((proto.charset, proto.convertNumbers), (None, False))
        proto = RedisConnectionProtocol(type("C", (), {"seconds": lambda self: 0.0})(), 1.0, "t")
        self.assertEqual((proto.charset, proto.convertNumbers), (None, False))
        self.assertIs(proto.tryConvertData(reply), reply)
