"""
Receiving from the Redis layer, on the reactor thread: one receive
(:class:`ReceiveOperation`), a process-local ``prefix!`` list read forever
into a callback (:class:`LocalReceiverLoop`), and waiting for room on a full
channel (:class:`CapacityWatch`).

A receive is push-based: when nothing is waiting it blocks in ``BLPOP``
(with a timeout, then again) rather than polling.

1. *Non-blocking pass*: the shards holding the channels are tried in turn
   (starting from a rotating shard) with the ``pop_many`` script, which
   pops up to ``limit`` references round-robin across the channel lists
   (shuffled on every call, so no channel starves another) and reads and
   deletes their bodies in the same step.  The first shard with messages
   ends the receive: one round trip when messages are waiting.
2. *Blocking pass*: otherwise a ``BLPOP`` on a blocking connection of each
   of those shards.  The first reference popped wins; ``pop_many`` on that
   shard then reads its body and takes up to ``limit - 1`` more.  The other
   pops are ended with ``CLIENT UNBLOCK``.

A reference popped by a ``BLPOP`` that is no longer wanted (another shard
won, the receive was cancelled or its synchronous caller gave up) is put
back at the head of its list with ``LPUSH``: its body is still in Redis.
Messages whose bodies a cancelled receive already took are put back with
fresh body keys by the ``requeue`` script.  Either way a message is
delivered at most once, and lost only if Redis fails during the hand-back
(logged).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure

from chanserv.layers.redis.errors import RedisUnavailable
from chanserv.layers.redis.protocol import BlockingPop
from chanserv.log import Logger

if TYPE_CHECKING:
    from chanserv.layers.redis import RedisChannelLayer

__all__ = ["CapacityWatch", "LocalReceiverLoop", "RawMessage", "ReceiveOperation"]

log = Logger()


class RawMessage(NamedTuple):
    """A message taken off Redis, not yet decoded."""

    shard: int
    list_key: bytes
    ref: bytes
    body: bytes


class ReceiveOperation:
    """
    One receive of up to ``limit`` messages from the lists in ``plan``
    (shard index -> list keys).

    :param block: wait in BLPOP when nothing is there.
    :param loop: when a blocking pass times out, start again (the reactor
        face: it waits until a message comes); else fire ``[]``.
    :param decode: turns the raw messages into the result; an empty result
        counts as "nothing yet" when looping.

    :attr:`deferred` fires with the decoded batch, or fails with
    :class:`RedisUnavailable` (no shard reachable, a connection lost or
    timed out) or an error reply.  Cancelling it takes nothing.
    """

    def __init__(
        self,
        layer: RedisChannelLayer,
        plan: dict[int, list[str]],
        limit: int,
        block: bool,
        loop: bool,
        decode: Callable[[list[RawMessage]], list[Any]],
    ) -> None:
        self._layer = layer
        self._plan = plan
        self._limit = limit
        self._block = block
        self._loop = loop
        self._decode = decode
        self._done = False
        self._pops: dict[int, BlockingPop] = {}
        self._winning = False
        self._error: Failure | None = None
        self.deferred: Deferred[list[Any]] = Deferred(self._cancel)

    def blocked_clients(self) -> list[tuple[int, int]] | None:
        """
        ``(shard, client id)`` of each of its pops if it is blocked in BLPOP
        on every shard (and nothing else), else None.
        """
        if self._done or self._winning or not self._pops:
            return None
        clients = []
        for shard, pop in self._pops.items():
            if pop.client_id is None:
                return None
            clients.append((shard, pop.client_id))
        return clients

    def start(self) -> Deferred[list[Any]]:
        self._round()
        return self.deferred

    def _keys(self, shard: int) -> list[str]:
        keys = list(self._plan[shard])
        random.shuffle(keys)
        return keys

    def _available(self) -> list[int]:
        shards = self._layer.shards
        return [i for i in self._plan if shards[i].available]

    def _round(self) -> None:
        shards = self._available()
        if not shards:
            first = next(iter(self._plan))
            self._fail(Failure(self._layer.shards[first].unavailable_error()))
            return
        start = self._layer.next_receive_index() % len(shards)
        self._nonblocking(shards[start:] + shards[:start], 0)

    # -- non-blocking pass ----------------------------------------------------

    def _nonblocking(self, order: list[int], i: int) -> None:
        if self._done:
            return
        if i >= len(order):
            if self._block:
                self._blocking()
            else:
                self._succeed([])
            return
        shard = order[i]
        d = self._layer.pop_many(shard, self._keys(shard), self._limit, None)
        d.addCallbacks(
            self._nonblocking_popped,
            self._nonblocking_failed,
            callbackArgs=(order, i, shard),
            errbackArgs=(order, i),
        )
        d.addErrback(self._crashed)

    def _nonblocking_popped(
        self, items: list[RawMessage], order: list[int], i: int, shard: int
    ) -> None:
        if self._done:
            self._layer.requeue(shard, items)
        elif not (items and self._deliver(items)):
            self._nonblocking(order, i + 1)

    def _nonblocking_failed(self, failure: Failure, order: list[int], i: int) -> None:
        if self._done:
            return
        if failure.check(RedisUnavailable) and i + 1 < len(order):
            self._nonblocking(order, i + 1)  # that shard is down: try the others
        else:
            self._fail(failure)

    # -- blocking pass ----------------------------------------------------------

    def _blocking(self) -> None:
        shards = self._available()
        if not shards:
            self._round()  # fails with the reason
            return
        timeout = self._layer.blpop_timeout
        # All pops exist before any result is looked at: one may fail at once.
        self._pops = {i: self._layer.shards[i].blpop(self._keys(i), timeout) for i in shards}
        for shard, pop in list(self._pops.items()):
            pop.deferred.addCallbacks(
                self._popped, self._pop_failed, callbackArgs=(shard,), errbackArgs=(shard,)
            )
            pop.deferred.addErrback(self._crashed)

    def _popped(self, result: tuple[bytes, bytes] | None, shard: int) -> None:
        self._pops.pop(shard, None)
        if result is not None:
            key, ref = result
            if self._done or self._winning:
                self._layer.push_back(shard, key, ref)
            else:
                self._winning = True
                for other in list(self._pops.values()):
                    other.unblock()
                d = self._layer.pop_many(shard, self._keys(shard), self._limit, (key, ref))
                d.addCallbacks(
                    self._won, self._won_failed, callbackArgs=(shard,), errbackArgs=(shard,)
                )
                d.addErrback(self._crashed)
                return
        self._settle()

    def _pop_failed(self, failure: Failure, shard: int) -> None:
        self._pops.pop(shard, None)
        if self._error is None and not self._done:
            self._error = failure
            for other in list(self._pops.values()):
                other.unblock()  # fail now rather than after their timeout
        self._settle()

    def _won(self, items: list[RawMessage], shard: int) -> None:
        self._winning = False
        if self._done:
            self._layer.requeue(shard, items)
        elif items and self._deliver(items):
            return
        self._settle()  # its body had expired: carry on

    def _won_failed(self, failure: Failure, shard: int) -> None:
        self._winning = False
        if self._error is None and not self._done:
            self._error = failure
        self._settle()

    def _settle(self) -> None:
        # Continue once every pop of this pass has come back.
        if self._done or self._pops or self._winning:
            return
        error, self._error = self._error, None
        if error is not None:
            self._fail(error)
        elif self._loop:
            self._round()
        else:
            self._succeed([])

    # -- outcome ----------------------------------------------------------------

    def _deliver(self, items: list[RawMessage]) -> bool:
        # False when nothing could be decoded and the receive waits on.
        self._layer.note_received({item.list_key for item in items})
        result = self._decode(items)
        if not result and self._loop:
            return False
        self._done = True
        for pop in list(self._pops.values()):
            pop.unblock()
        self.deferred.callback(result)
        return True

    def _succeed(self, items: list[RawMessage]) -> None:
        self._done = True
        self.deferred.callback(self._decode(items))

    def _fail(self, failure: Failure) -> None:
        self._done = True
        for pop in list(self._pops.values()):
            pop.unblock()
        self.deferred.errback(failure)

    def _cancel(self, d: Deferred[list[Any]]) -> None:
        self._done = True
        for pop in list(self._pops.values()):
            pop.unblock()

    def _crashed(self, failure: Failure) -> None:
        log.failure("Error in a Redis receive", failure)
        if not self._done:
            self._fail(failure)


class LocalReceiverLoop:
    """
    Reads the process-local list of ``prefix`` forever, handing each batch
    (up to :attr:`batch` messages) to ``callback`` on the reactor thread.

    When Redis is unreachable it waits -- a back-off of at most 5 s against
    repeated failures, then until the shard is up again -- and carries on.
    """

    batch = 100
    max_delay = 5.0

    def __init__(
        self,
        layer: RedisChannelLayer,
        prefix: str,
        callback: Callable[[list[tuple[str, dict[str, Any]]]], None],
    ) -> None:
        self._layer = layer
        self._prefix = prefix
        self._callback = callback
        self._failures = 0
        self._pending: Deferred[Any] | None = None
        self._timer: Any = None
        self.running = False

    def start(self) -> None:
        self.running = True
        self._next()

    def stop(self) -> None:
        self.running = False
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()

    def _next(self) -> None:
        if not self.running:
            return
        d = self._pending = self._layer.receive_many_twisted([self._prefix], self.batch)
        d.addCallbacks(self._got, self._failed)
        d.addErrback(lambda f: log.failure("Local receiver for {prefix}", f, prefix=self._prefix))

    def _got(self, batch: list[tuple[str, dict[str, Any]]]) -> None:
        self._pending = None
        if self._failures:
            log.info("Local receiver for {prefix} is receiving again", prefix=self._prefix)
        self._failures = 0
        if not self.running:
            # Stopped while this was in flight: nobody takes these any more.
            return
        try:
            self._callback(batch)
        except Exception:
            log.failure("A local receiver failed on {count} messages", count=len(batch))
        self._next()

    def _failed(self, failure: Failure) -> None:
        self._pending = None
        if not self.running or failure.check(CancelledError):
            return
        delay = min(self.max_delay, 0.1 * 2**self._failures)
        if self._failures == 0:
            log.warn(
                "Local receiver for {prefix} is waiting for Redis: {error}",
                prefix=self._prefix,
                error=failure.getErrorMessage(),
            )
        self._failures += 1
        self._timer = self._layer.reactor.callLater(delay, self._resume)

    def _resume(self) -> None:
        self._timer = None
        if not self.running:
            return
        shard = self._layer.shards[self._layer.consistent_hash(self._prefix)]
        d = self._pending = shard.when_up()
        d.addCallback(lambda _: self._next())
        d.addErrback(
            lambda f: (
                None
                if f.check(CancelledError)
                else log.failure("Local receiver for {prefix}", f, prefix=self._prefix)
            )
        )


class CapacityWatch:
    """
    The waiters for room on one channel (its non-local name).

    Redis tells nobody when a list gets shorter, so room is checked (LLEN)
    right away, again after every receive of this channel by this process,
    and otherwise on a timer backing off from 50 ms to 1 s -- a bounded
    recheck, one timer per watched channel, stopped once nobody waits.
    """

    delays = (0.05, 0.1, 0.2, 0.5, 1.0)

    def __init__(self, layer: RedisChannelLayer, channel: str) -> None:
        self._layer = layer
        self.channel = channel
        self.waiters: list[Deferred[None]] = []
        self._attempt = 0
        self._timer: Any = None
        self._checking = False
        self._again = False

    def add(self) -> Deferred[None]:
        d: Deferred[None] = Deferred(self._cancelled)
        self.waiters.append(d)
        if not self._checking and self._timer is None:
            self.check()
        return d

    def check(self) -> None:
        """Check for room now (coalesced with a check in flight)."""
        if self._checking:
            self._again = True
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._checking = True
        d = self._layer.has_room(self.channel).addBoth(self._checked)
        d.addErrback(lambda f: log.failure("Capacity watch of {c}", f, c=self.channel))

    def _checked(self, result: Any) -> None:
        self._checking = False
        if isinstance(result, Failure):
            log.debug("Capacity check of {channel} failed: {f}", channel=self.channel, f=result)
        elif result:
            waiters, self.waiters = self.waiters, []
            for d in waiters:
                d.callback(None)
        if not self.waiters:
            self.stop()
            return
        if self._again:
            self._again = False
            self.check()
            return
        delay = self.delays[min(self._attempt, len(self.delays) - 1)]
        self._attempt += 1
        self._timer = self._layer.reactor.callLater(delay, self.check)

    def _cancelled(self, d: Deferred[None]) -> None:
        if d in self.waiters:
            self.waiters.remove(d)
        if not self.waiters:
            self.stop()

    def stop(self) -> None:
        """Forget the watch; pending waiters are cancelled."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._layer.forget_watch(self)
        waiters, self.waiters = self.waiters, []
        for d in waiters:
            d.cancel()
