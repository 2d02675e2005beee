"""
Receiving from the Redis layer: one push-based receive, a process-local
list read forever into a callback, the heartbeat of an interface process
and waiting for room on a full channel.  Reactor thread only.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from chanserv.layers.redis.connection import BlockingPop
from chanserv.layers.redis.errors import RedisUnavailable
from chanserv.layers.redis.operations import RawMessage, RedisOperations
from chanserv.log import Logger
from chanserv.types import Received

__all__ = ["CapacityWatch", "LocalReceiverLoop", "ProcessHeartbeat", "ReceiveOperation"]

log = Logger()


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
        ops: RedisOperations,
        plan: dict[int, list[str]],
        limit: int,
        block: bool,
        loop: bool,
        decode: Callable[[list[RawMessage]], list[Any]],
        blpop_timeout: float,
        on_received: Callable[[set[bytes]], None],
    ) -> None:
        # Any: the batch is whatever decode makes of the raw messages: the raw messages
        # themselves or (channel, message) pairs, depending on the caller.
        self._ops = ops
        self._blpop_timeout = blpop_timeout
        self._on_received = on_received
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
        # Any: the batch is whatever decode makes of the raw messages: the raw messages
        # themselves or (channel, message) pairs, depending on the caller.
        self._round()
        return self.deferred

    def _keys(self, shard: int) -> list[str]:
        keys = list(self._plan[shard])
        random.shuffle(keys)
        return keys

    def _available(self) -> list[int]:
        shards = self._ops.shards
        return [i for i in self._plan if shards[i].available]

    def _round(self) -> None:
        shards = self._available()
        if not shards:
            first = next(iter(self._plan))
            self._fail(Failure(self._ops.shards[first].unavailable_error()))
            return
        start = self._ops.next_receive_index() % len(shards)
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
        d = self._ops.pop_many(shard, self._keys(shard), self._limit, None)
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
            self._ops.requeue(shard, items)
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
        timeout = self._blpop_timeout
        # All pops exist before any result is looked at: one may fail at once.
        self._pops = {i: self._ops.shards[i].blpop(self._keys(i), timeout) for i in shards}
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
                self._ops.push_back(shard, key, ref)
            else:
                self._winning = True
                for other in list(self._pops.values()):
                    other.unblock()
                d = self._ops.pop_many(shard, self._keys(shard), self._limit, (key, ref))
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
            self._ops.requeue(shard, items)
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
        self._on_received({item.list_key for item in items})
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
    Reads the inbox of process prefix ``prefix`` forever, handing each batch
    (up to :attr:`batch` references; a group reference is one per member)
    to ``callback`` on the reactor thread.

    :param receive_many: the layer's ``receive_many_twisted``.
    :param when_up: a Deferred firing once the inbox's shard is up.

    When Redis is unreachable it waits -- a back-off of at most 5 s against
    repeated failures, then until the shard is up again -- and carries on.
    """

    batch = 100
    max_delay = 5.0

    def __init__(
        self,
        reactor: IReactorTime,
        receive_many: Callable[[list[str], int], Deferred[list[Received]]],
        when_up: Callable[[], Deferred[None]],
        prefix: str,
        callback: Callable[[list[Received]], None],
    ) -> None:
        self._reactor = reactor
        self._receive_many = receive_many
        self._when_up = when_up
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
        d = self._pending = self._receive_many([self._prefix], self.batch)
        d.addCallbacks(self._got, self._failed)
        d.addErrback(lambda f: log.failure("Local receiver for {prefix}", f, prefix=self._prefix))

    def _got(self, batch: list[Received]) -> None:
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
        self._timer = self._reactor.callLater(delay, self._resume)

    def _resume(self) -> None:
        self._timer = None
        if not self.running:
            return
        d = self._pending = self._when_up()
        d.addCallback(lambda _: self._next())
        d.addErrback(
            lambda f: (
                None
                if f.check(CancelledError)
                else log.failure("Local receiver for {prefix}", f, prefix=self._prefix)
            )
        )


class ProcessHeartbeat:
    """
    Keeps an interface process registered in Redis, and notices when Redis
    has lost its state.

    Every :attr:`interval` seconds it refreshes the process's heartbeat key
    (TTL :attr:`ttl`).  While the key lives, the process's group
    memberships never lapse; once it is gone, other processes forget them.
    A beat that finds the key gone although the process registered means
    Redis lost its state (a restart without persistence, a failover to an
    empty replica, FLUSHALL): ``on_lost()`` is called -- the interface then
    closes its connections so clients reconnect and rejoin -- and the
    process registers again.  Every :attr:`bury_every` beats it also
    forgets dead processes.  Reactor thread only.
    """

    interval = 1.0
    ttl = 15.0
    bury_every = 30

    def __init__(
        self, ops: RedisOperations, reactor: IReactorTime, process: str, on_lost: Callable[[], None]
    ) -> None:
        self._ops = ops
        self._reactor = reactor
        self.process = process
        self._on_lost = on_lost
        self._timer: Any = None
        self._beats = 0
        self._failing = False
        self.registered = False
        self.running = False

    def start(self) -> None:
        self.running = True
        self._beat()

    def stop(self) -> Deferred[None] | None:
        """Stop beating; unregister (the Deferred of that) if registered."""
        self.running = False
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if not self.registered:
            return None
        self.registered = False
        d = self._ops.unregister(self.process)
        d.addErrback(
            lambda f: log.info("Could not unregister {p} from Redis: {e}", p=self.process, e=f)
        )
        return d

    def _beat(self) -> None:
        self._timer = None
        if not self.running:
            return
        self._beats += 1
        bury = self._beats % self.bury_every == 0
        d = self._ops.heartbeat(self.process, self.ttl, not self.registered, bury)
        d.addCallbacks(self._beaten, self._failed)
        d.addErrback(lambda f: log.failure("Heartbeat of {p}", f, p=self.process))

    def _schedule(self) -> None:
        if self.running:
            self._timer = self._reactor.callLater(self.interval, self._beat)

    def _beaten(self, alive: bool) -> None:
        if self._failing:
            self._failing = False
            log.info("Heartbeat of {process} reached Redis again", process=self.process)
        if not self.running:
            return
        if alive:
            self.registered = True
            self._schedule()
            return
        log.warn(
            "Redis lost the state of {process} (restarted empty, failed over or "
            "flushed): closing its connections so that clients reconnect and rejoin",
            process=self.process,
        )
        self.registered = False
        try:
            self._on_lost()
        except Exception:
            log.failure("Handling the loss of Redis state failed")
        self._beat()

    def _failed(self, failure: Failure) -> None:
        if not self.running or failure.check(CancelledError):
            return
        if not self._failing:
            self._failing = True
            log.warn(
                "Heartbeat of {process} failed ({error}); retrying",
                process=self.process,
                error=failure.getErrorMessage(),
            )
        self._schedule()


class CapacityWatch:
    """
    The waiters for room on one channel.

    Redis tells nobody when a list gets shorter, so room is checked right
    away, again after every receive of this channel by this process, and
    otherwise on a timer backing off from 50 ms to 1 s -- a bounded
    recheck, one timer per watched channel, stopped once nobody waits.  A
    check wakes as many waiters as there is room for, oldest first.
    """

    delays = (0.05, 0.1, 0.2, 0.5, 1.0)

    def __init__(
        self,
        ops: RedisOperations,
        reactor: IReactorTime,
        channel: str,
        forget: Callable[[CapacityWatch], None],
    ) -> None:
        self._ops = ops
        self._reactor = reactor
        self._forget = forget
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
        d = self._ops.room(self.channel).addBoth(self._checked)
        d.addErrback(lambda f: log.failure("Capacity watch of {c}", f, c=self.channel))

    def _checked(self, result: Any) -> None:
        self._checking = False
        if isinstance(result, Failure):
            log.debug("Capacity check of {channel} failed: {f}", channel=self.channel, f=result)
        elif result:
            # Only as many as there is room for, oldest first: a freed slot
            # must not make every waiter retry (and all but one wait again).
            waiters, self.waiters = self.waiters[:result], self.waiters[result:]
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
        self._timer = self._reactor.callLater(delay, self.check)

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
        self._forget(self)
        waiters, self.waiters = self.waiters, []
        for d in waiters:
            d.cancel()
