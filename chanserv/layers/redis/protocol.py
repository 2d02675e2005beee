"""
The pieces under :class:`~chanserv.layers.redis.connection.RedisShard`: the
errors, a shard's address, txredisapi's protocol adapted for a server
(raw ``bytes`` replies, a deadline per command, the global reactor replaced
by the shard's), and one blocking pop.

Reactor thread only.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import txredisapi
from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from chanserv.layers.redis.config import RedisAddress
from chanserv.layers.redis.errors import RedisTimeout, RedisUnavailable
from chanserv.log import Logger

if TYPE_CHECKING:
    from chanserv.layers.redis.connection import RedisShard

__all__ = [
    "BlockingPop",
    "ConnectionFactory",
    "RedisAddress",
    "RedisConnectionProtocol",
    "RedisTimeout",
    "RedisUnavailable",
    "translate_failure",
]

log = Logger()


class RedisConnectionProtocol(txredisapi.RedisProtocol):
    """
    txredisapi's protocol with raw ``bytes`` replies, a deadline per
    command, and its owner told when the connection goes.
    """

    def __init__(self, shard: RedisShard) -> None:
        address = shard.address
        super().__init__(
            charset=None,
            replyTimeout=None,
            password=address.password,
            dbid=address.db,
            convertNumbers=False,
            username=address.username,
        )
        # txredisapi schedules with the global reactor's callLater.
        self.callLater = shard.reactor.callLater
        self.shard = shard
        #: (deadline, argument bytes) of each command awaiting its reply.
        self.pending: deque[tuple[float, int]] = deque()
        self.pending_bytes = 0
        self.timed_out = False
        self.client_id: int | None = None
        #: Replies received so far, and its value when the timeout sweep
        #: last found the oldest command overdue (see RedisShard._sweep).
        self.replies = 0
        self.overdue_at: int | None = None

    def execute_command(self, *args: Any, **kwargs: Any) -> Deferred[Any]:
        """Send a command; ``timeout`` (seconds) overrides the reply timeout."""
        timeout = kwargs.pop("timeout", None)
        d = super().execute_command(*args, **kwargs)
        size = sum(len(a) for a in args if isinstance(a, (bytes, str)))
        if timeout is None:
            timeout = self.shard.reply_timeout
        self.pending.append((self.shard.reactor.seconds() + timeout, size))
        self.pending_bytes += size
        return d

    def replyReceived(self, reply: Any) -> None:
        self.replies += 1
        if self.pending:
            self.pending_bytes -= self.pending.popleft()[1]
        super().replyReceived(reply)

    if txredisapi.RedisProtocol is txredisapi.BaseRedisProtocol:
        # The pure-Python parser: after each bulk string txredisapi pauses
        # the transport and parses the rest of the chunk in a later reactor
        # turn (callLater(0)), which costs a turn per string.  Parse it in a
        # loop in the same turn instead (no recursion, same order).

        _rest: bytes | None = None

        def setLineMode(self, extra: bytes = b"") -> None:
            self.line_mode = 1
            if extra:
                self._rest = extra

        def dataReceived(self, data: bytes, unpause: bool = False) -> None:
            super().dataReceived(data, unpause)
            while self._rest is not None:
                rest, self._rest = self._rest, None
                super().dataReceived(rest)

    def connectionLost(self, why: Any) -> None:
        if self.timed_out:
            error = RedisTimeout(
                "Redis at %s did not answer within the timeout" % (self.shard.address,)
            )
            while self.replyQueue.waiting:
                self.replyReceived(error)
        # txredisapi never fires whenConnected() if AUTH or SELECT failed.
        me: Any = self
        waiting: list[Deferred[Any]] = me._waiting_for_connect
        me._waiting_for_connect = []
        for d in waiting:
            d.errback(
                RedisUnavailable(
                    "The connection to Redis at %s closed before it was ready"
                    % (self.shard.address,)
                )
            )
        super().connectionLost(why)
        self.pending.clear()
        self.pending_bytes = 0
        self.shard._connection_lost(self)


class ConnectionFactory(protocol.Factory):
    """Builds the shard's protocols and takes txredisapi's callbacks."""

    noisy = False
    isLazy = True  # txredisapi: log AUTH/SELECT failures rather than raise

    def __init__(
        self,
        shard: RedisShard,
        built: Callable[[RedisConnectionProtocol], None] | None = None,
    ) -> None:
        self.shard = shard
        self.built = built
        self.latest: RedisConnectionProtocol | None = None

    def buildProtocol(self, addr: Any) -> RedisConnectionProtocol:
        p = RedisConnectionProtocol(self.shard)
        p.factory = self
        self.latest = p
        if self.built is not None:
            self.built(p)
        return p

    def stopTrying(self) -> None:
        # Called by txredisapi when AUTH or SELECT fail: keep retrying with
        # back-off, so that fixing the server needs no restart here.
        pass

    def connectionError(self, why: str) -> None:
        log.error("{why} ({address})", why=why, address=self.shard.address)


def translate_failure(failure: Failure, address: RedisAddress) -> Failure:
    # txredisapi's ConnectionError is not the builtin one.
    if failure.check(txredisapi.ConnectionError) and not failure.check(RedisUnavailable):
        return Failure(RedisUnavailable("Redis at %s: %s" % (address, failure.getErrorMessage())))
    return failure


class BlockingPop:
    """
    One ``BLPOP keys timeout`` on a blocking connection of ``shard``.

    :attr:`deferred` fires with ``(list key, reference)`` as ``bytes``, with
    None when the pop timed out on the server or was ended by
    :meth:`unblock`, or fails (:class:`RedisUnavailable`, ...).  A reference
    popped is out of Redis: whoever gets it either consumes it or pushes it
    back.
    """

    def __init__(self, shard: RedisShard, keys: Sequence[str], timeout: float) -> None:
        self.shard = shard
        self.deferred: Deferred[tuple[bytes, bytes] | None] = Deferred()
        self._keys = keys
        self._timeout = timeout
        self._proto: RedisConnectionProtocol | None = None
        self._unblocked = False
        self._acquiring: Deferred[RedisConnectionProtocol] | None
        acquiring = self._acquiring = shard._acquire_blocking()
        acquiring.addCallbacks(self._got_connection, self._failed)
        acquiring.addErrback(lambda f: log.failure("Error in a blocking pop", f))

    def _got_connection(self, proto: RedisConnectionProtocol) -> None:
        self._acquiring = None
        if self._unblocked:
            self.shard._release_blocking(proto)
            self.deferred.callback(None)
            return
        self._proto = proto
        t = self._timeout
        wire_timeout: float = int(t) if t == int(t) else t
        d = self.shard._run(
            proto,
            ("BLPOP", *self._keys, wire_timeout),
            timeout=t + self.shard.reply_timeout,
        )
        d.addCallbacks(self._popped, self._failed)
        d.addErrback(lambda f: log.failure("Error in a blocking pop", f))

    def _popped(self, result: Any) -> None:
        proto, self._proto = self._proto, None
        # Fire first: a reference nobody wants is pushed back on the command
        # connection before this connection is released (and maybe closed).
        self.deferred.callback((result[0], result[1]) if result else None)
        if proto is not None:
            self.shard._release_blocking(proto)

    def _failed(self, failure: Failure) -> None:
        self._acquiring = None
        proto, self._proto = self._proto, None
        if proto is not None and failure.check(txredisapi.ResponseError):
            self.shard._release_blocking(proto)  # an error reply: the connection is fine
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
