"""
The pieces under :class:`~chanserv.layers.redis.connection.RedisShard`:
txredisapi's protocol adapted for a server (raw ``bytes`` replies, a
deadline per command, chanserv's errors), its factory, and one blocking
pop.  Reactor thread only.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeAlias

import txredisapi
from twisted.internet import protocol
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.python.failure import Failure

from chanserv.layers.redis.errors import RedisTimeout, RedisUnavailable
from chanserv.log import Logger

__all__ = [
    "BlockingConnections",
    "BlockingPop",
    "ConnectionFactory",
    "RedisArg",
    "RedisConnectionProtocol",
    "RedisReply",
    "TxredisapiHooks",
    "is_demotion",
]

log = Logger()

#: An argument of a Redis command.
RedisArg: TypeAlias = str | bytes | int | float

# Any: a Redis reply is whatever RESP value txredisapi decodes (bytes, int,
# None, or lists nesting those), and only each command's caller knows which
# shape its command returns.
#: A decoded Redis reply.
RedisReply: TypeAlias = Any

#: hiredis's C encoder of a Redis command (its arguments -> the bytes to
#: write), or None without hiredis (a dependency, so only on a bare install).
pack_command: Callable[[tuple[RedisArg, ...]], bytes] | None
try:
    # hiredis's stub types the argument as a 1-tuple; it takes any length.
    from hiredis import pack_command  # type: ignore[assignment]
except ImportError:  # pragma: no cover
    pack_command = None

#: Error replies meaning the server is (now) a replica: the master was
#: demoted by a failover.  A script's error carries the code after a "-".
_DEMOTED = re.compile(r"(?:^|-)(?:READONLY|UNBLOCKED|MASTERDOWN)\b")


def is_demotion(message: str) -> bool:
    """Whether an error reply says that the server is no master (any more)."""
    return _DEMOTED.search(message) is not None


# -- txredisapi internals --------------------------------------------------------
#
# Everything txredisapi 1.6 offers beyond its public API that this layer
# relies on is in this section, and each name is pinned by a test in
# tests/layers/redis/test_txredisapi_internals.py that fails with a clear
# message on a release that changes it:
#
# - ``replyReceived(reply)``: called once per complete reply, by both
#   parsers (txredisapi's own Monitor and Subscriber protocols override it);
#   counting replies here gives each command's deadline bookkeeping.
# - ``setLineMode(extra)`` / ``dataReceived(data, unpause)`` of the
#   pure-Python parser (used when ``hiredis`` is not installed): after each
#   bulk string it pauses the transport and parses the rest of the chunk in
#   a later turn of the *global* reactor (``self.callLater(0, ...)``).  That
#   costs a reactor turn per string and ignores the injected reactor, so the
#   rest is parsed here in a loop in the same turn instead (same order, no
#   recursion, no timer).  With hiredis, setLineMode is never called.
# - ``replyQueue`` (a DeferredQueue that ``replyReceived`` puts each reply
#   in, in order) and ``handle_reply`` (raises a reply that is an error):
#   RedisConnectionProtocol.execute_command encodes a command with hiredis's
#   ``pack_command`` (C; about 7x faster than txredisapi's per-argument
#   Python) and takes its reply from the queue itself, as txredisapi's own
#   ``execute_command`` does when not pipelining and not in MULTI, which
#   this layer never is.
# - ``tryConvertData(data)``: both parsers pass each reply (and, in lists,
#   each element) through it; with ``charset=None`` and
#   ``convertNumbers=False``, as here, it returns what it is given, at the
#   cost of a Python call per element, so RedisConnectionProtocol returns
#   the reply as is.


_Protocol: Any = object  # typing: the mixin's super() is a txredisapi protocol


class TxredisapiHooks(_Protocol):
    """
    The hooks listed above, as a mixin for txredisapi's protocols (before
    ``RedisProtocol``, ``BaseRedisProtocol`` or ``HiredisProtocol`` in the
    bases).
    """

    _rest: bytes | None = None

    def reply_arrived(self) -> None:
        """One complete reply was parsed (before it is handed out)."""

    def replyReceived(self, reply: RedisReply) -> None:
        self.reply_arrived()
        super().replyReceived(reply)

    def setLineMode(self, extra: bytes = b"") -> None:
        self.line_mode = 1
        if extra:
            self._rest = extra

    def dataReceived(self, data: bytes, unpause: bool = False) -> None:
        super().dataReceived(data, unpause)
        while self._rest is not None:
            rest, self._rest = self._rest, None
            super().dataReceived(rest)


# -- end of txredisapi internals ---------------------------------------------------


class RedisConnectionProtocol(TxredisapiHooks, txredisapi.RedisProtocol):
    """
    txredisapi's protocol with raw ``bytes`` replies, a deadline per
    command (enforced by the owner's sweep: see ``RedisShard``), failures
    as :class:`RedisUnavailable` / :class:`RedisTimeout`, and its factory
    told when the connection goes.

    It sends nothing by itself: logging in (AUTH, SELECT) is the owner's
    first commands, so that an error there is an ordinary failed command.

    :param clock: an ``IReactorTime`` (the shard's reactor), for the deadlines.
    :param reply_timeout: default seconds for a reply.
    :param label: where it is connected, for messages.
    """

    def __init__(self, clock: IReactorTime, reply_timeout: float, label: str) -> None:
        super().__init__(charset=None, replyTimeout=None, convertNumbers=False)
        self.clock = clock
        self.reply_timeout = reply_timeout
        self.label = label
        #: (deadline, size in bytes) of each command awaiting its reply.
        self.pending: deque[tuple[float, int]] = deque()
        self.pending_bytes = 0
        #: Set by the owner's sweep before it aborts the connection.
        self.timed_out = False
        #: Set when an error reply said the server is a replica now.
        self.demoted = False
        self.client_id: int | None = None
        #: Replies received so far, and its value when the timeout sweep
        #: last found the oldest command overdue (see RedisShard._sweep).
        self.replies = 0
        self.overdue_at: int | None = None

    def execute_command(
        self, *args: RedisArg, timeout: float | None = None
    ) -> Deferred[RedisReply]:
        """
        Send a command; its Deferred fires with the reply (``bytes``,
        ``int``, lists of those, None) or fails with ``ResponseError`` (an
        error reply), :class:`RedisUnavailable` (connection lost, or the
        server is a replica now: then the connection is dropped) or
        :class:`RedisTimeout` (dropped for want of a reply).

        :param timeout: seconds for the reply; the ``reply_timeout`` if None.
        """
        if not self.connected:
            return fail(RedisUnavailable("Not connected to Redis at %s" % (self.label,)))
        command = None
        if pack_command is not None:
            try:
                command = pack_command(args)
            except TypeError:
                pass  # an argument hiredis does not encode (a bool...): txredisapi's way
        d: Deferred[Any]
        if command is None:
            d = super().execute_command(*args)
            size = sum(len(a) for a in args if isinstance(a, (bytes, str)))
        else:
            self.transport.write(command)
            d = self.replyQueue.get().addCallback(self.handle_reply)
            size = len(command)
        if timeout is None:
            timeout = self.reply_timeout
        self.pending.append((self.clock.seconds() + timeout, size))
        self.pending_bytes += size
        return d.addErrback(self._translate)

    def tryConvertData(self, data: RedisReply) -> RedisReply:
        # Raw replies: txredisapi's conversion would return them unchanged
        # (see "txredisapi internals"), one call per element of a pop's reply.
        return data

    def _translate(self, failure: Failure) -> Failure:
        if failure.check(txredisapi.ResponseError):
            if is_demotion(str(failure.value)):
                self.demoted = True
                if self.connected and self.transport is not None:
                    self.transport.abortConnection()
                return Failure(
                    RedisUnavailable(
                        "Redis at %s is no master now (%s); reconnecting"
                        % (self.label, failure.getErrorMessage())
                    )
                )
            return failure
        if failure.check(RedisUnavailable):
            return failure
        if self.timed_out:
            return Failure(
                RedisTimeout("Redis at %s did not answer within the timeout" % (self.label,))
            )
        if failure.check(txredisapi.ConnectionError):
            return Failure(
                RedisUnavailable(
                    "The connection to Redis at %s was lost: %s"
                    % (self.label, failure.getErrorMessage())
                )
            )
        return failure

    def reply_arrived(self) -> None:
        self.replies += 1
        if self.pending:
            self.pending_bytes -= self.pending.popleft()[1]

    def connectionLost(self, why: Failure) -> None:
        super().connectionLost(why)
        self.pending.clear()
        self.pending_bytes = 0
        factory = self.factory
        if isinstance(factory, ConnectionFactory) and factory.lost is not None:
            factory.lost(self)


class ConnectionFactory(protocol.Factory):
    """
    Builds :class:`RedisConnectionProtocol` instances.

    :param built: called with each protocol as it is built.
    :param lost: called with each protocol whose connection was lost.
    """

    noisy = False

    def __init__(
        self,
        clock: IReactorTime,
        reply_timeout: float,
        label: str,
        built: Callable[[RedisConnectionProtocol], None] | None = None,
        lost: Callable[[RedisConnectionProtocol], None] | None = None,
    ) -> None:
        self.clock = clock
        self.reply_timeout = reply_timeout
        self.label = label
        self.built = built
        self.lost = lost
        self.latest: RedisConnectionProtocol | None = None

    def buildProtocol(self, addr: IAddress | None) -> RedisConnectionProtocol:
        p = RedisConnectionProtocol(self.clock, self.reply_timeout, self.label)
        p.factory = self
        self.latest = p
        if self.built is not None:
            self.built(p)
        return p


class BlockingConnections(Protocol):
    """What a :class:`BlockingPop` needs of its shard."""

    @property
    def reactor(self) -> IReactorTime: ...

    @property
    def reply_timeout(self) -> float: ...

    def acquire_blocking(self) -> Deferred[RedisConnectionProtocol]:
        """A connection for one blocking command (cancellable while waiting)."""

    def release_blocking(self, proto: RedisConnectionProtocol) -> None:
        """Give back what :meth:`acquire_blocking` gave."""

    def execute(self, *args: RedisArg, timeout: float | None = None) -> Deferred[RedisReply]:
        """Run a command on the command connection."""


class BlockingPop:
    """
    One ``BLPOP keys timeout`` on a blocking connection of ``shard``.

    :attr:`deferred` fires with ``(list key, reference)`` as ``bytes``, with
    None when the pop timed out on the server or was ended by
    :meth:`unblock`, or fails (:class:`RedisUnavailable`, ...).  A reference
    popped is out of Redis: whoever gets it either consumes it or pushes it
    back.
    """

    def __init__(self, shard: BlockingConnections, keys: Sequence[str], timeout: float) -> None:
        self.shard = shard
        self.deferred: Deferred[tuple[bytes, bytes] | None] = Deferred()
        self._keys = keys
        self._timeout = timeout
        self._proto: RedisConnectionProtocol | None = None
        self._unblocked = False
        self._acquiring: Deferred[RedisConnectionProtocol] | None
        acquiring = self._acquiring = shard.acquire_blocking()
        acquiring.addCallbacks(self._got_connection, self._failed)
        acquiring.addErrback(lambda f: log.failure("Error in a blocking pop", f))

    def _got_connection(self, proto: RedisConnectionProtocol) -> None:
        self._acquiring = None
        if self._unblocked:
            self.shard.release_blocking(proto)
            self.deferred.callback(None)
            return
        self._proto = proto
        t = self._timeout
        wire_timeout: float = int(t) if t == int(t) else t
        d = proto.execute_command(
            "BLPOP", *self._keys, wire_timeout, timeout=t + self.shard.reply_timeout
        )
        d.addCallbacks(self._popped, self._failed)
        d.addErrback(lambda f: log.failure("Error in a blocking pop", f))

    def _popped(self, result: Any) -> None:
        proto, self._proto = self._proto, None
        # Fire first: a reference nobody wants is pushed back on the command
        # connection before this connection is released (and maybe closed).
        self.deferred.callback((result[0], result[1]) if result else None)
        if proto is not None:
            self.shard.release_blocking(proto)

    def _failed(self, failure: Failure) -> None:
        self._acquiring = None
        proto, self._proto = self._proto, None
        if proto is not None and failure.check(txredisapi.ResponseError):
            self.shard.release_blocking(proto)  # an error reply: the connection is fine
        if self._unblocked and failure.check(RedisUnavailable) is None:
            self.deferred.callback(None)
        else:
            self.deferred.errback(failure)

    @property
    def client_id(self) -> int | None:
        """The server-side id of the connection blocked in this pop, if any."""
        return self._proto.client_id if self._proto is not None else None

    def unblock(self) -> None:
        """End the pop early; it then fires None (or what it had popped)."""
        if self._unblocked or self.deferred.called:
            return
        self._unblocked = True
        if self._acquiring is not None:
            self._acquiring.cancel()
        else:
            self._send_unblock(0)

    def _send_unblock(self, attempt: int) -> None:
        # CLIENT UNBLOCK goes over the command connection, so it can reach
        # the server before the BLPOP itself (then it answers 0): try again
        # a few times, backing off, while this pop is still in flight.
        proto = self._proto
        if proto is None or proto.client_id is None:
            return  # Redis < 5: the pop runs to its timeout
        d = self.shard.execute("CLIENT", "UNBLOCK", proto.client_id)

        def done(unblocked: Any) -> None:
            if not unblocked and self._proto is proto and attempt < 8:
                self.shard.reactor.callLater(0.002 * 2**attempt, self._send_unblock, attempt + 1)

        d.addCallbacks(done, lambda f: log.debug("CLIENT UNBLOCK failed: {f}", f=f))
        d.addErrback(lambda f: log.failure("Ending a blocking pop", f))
