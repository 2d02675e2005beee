"""
Connections to one Redis server (a *shard*): :class:`RedisShard` keeps a
pipelined command connection and a bounded pool of blocking connections up,
with timeouts for every command, fail-fast while down, master-only
connections, bounded memory and scripts reloaded on reconnection.  Reactor
thread only (the injected reactor, never txredisapi's global one).
"""

from __future__ import annotations

import hashlib
import random
from collections import deque
from collections.abc import Sequence
from typing import Any

import txredisapi
from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import Service
from twisted.internet import task
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    FirstError,
    fail,
    gatherResults,
    succeed,
)
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.python.failure import Failure

from chanserv.layers.redis.config import (
    DEFAULT_OPTIONS,
    Address,
    RedisAddress,
    SentinelAddress,
)
from chanserv.layers.redis.errors import RedisTimeout, RedisUnavailable
from chanserv.layers.redis.protocol import (
    BlockingPop,
    ConnectionFactory,
    RedisArg,
    RedisConnectionProtocol,
    RedisReply,
)
from chanserv.layers.redis.sentinel import SentinelEndpoint
from chanserv.log import Logger

__all__ = ["BlockingPop", "RedisShard", "RedisTimeout", "RedisUnavailable", "Script"]

log = Logger()


class Script:
    """A Lua script and its SHA1, for EVALSHA (with EVAL after NOSCRIPT)."""

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source.strip() + "\n"
        self.sha = hashlib.sha1(self.source.encode("utf-8")).hexdigest()

    def __repr__(self) -> str:
        return "<Script %s %s>" % (self.name, self.sha[:8])


def _reason(failure: Failure) -> str:
    error: Any = failure.value
    if isinstance(error, FirstError):
        error = error.subFailure.value
    return str(error) or type(error).__name__


class RedisShard(Service):
    """
    The connections to one Redis server.  Reactor thread only.

    :param reactor: provides ``IReactorTime`` and ``IReactorTCP`` (and
        ``IReactorPluggableNameResolver`` for host names).
    :param address: a fixed server or a Sentinel-managed service.
    :param scripts: loaded on every (re)connection before it counts as up.
    :param reply_timeout: seconds for a reply (a blocking pop: its own
        timeout plus this).
    :param connect_timeout: seconds to connect.
    :param reconnect_max: cap of the reconnection back-off, in seconds.

    :ivar state: ``"connecting"`` (first attempt in progress: commands wait
        for it), ``"up"``, ``"down"`` (commands fail fast) or ``"stopped"``.
    :ivar master: ``(host, port)`` of the server the command connection is
        (or was last) up with.
    """

    #: Most blocking connections kept open while unused.
    max_idle_blocking = 4
    #: Seconds between two checks, while up, that the sentinels still name
    #: the server the shard is on.  A failover that leaves the old master
    #: running (``SENTINEL FAILOVER``, a partition) is noticed within this
    #: much rather than when the old master is made a replica.
    sentinel_check_interval = 1.0

    def __init__(
        self,
        reactor: Any,
        address: Address,
        scripts: Sequence[Script] = (),
        reply_timeout: float = DEFAULT_OPTIONS["socket_timeout"],
        connect_timeout: float = DEFAULT_OPTIONS["socket_connect_timeout"],
        reconnect_max: float = DEFAULT_OPTIONS["reconnect_max_delay"],
        max_blocking: int = 64,
        max_pending: int = 10000,
        max_pending_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        # Any: the reactor must provide IReactorTCP (HostnameEndpoint) and IReactorTime, and
        # Python's types have no intersection of interfaces.
        self.reactor = reactor
        self.address = address
        self.name = str(address)
        self.scripts = list(scripts)
        self.reply_timeout = reply_timeout
        self.connect_timeout = connect_timeout
        self.reconnect_max = reconnect_max
        self.max_blocking = max_blocking
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self.state = "stopped"
        self.master: tuple[str, int] | None = None
        self._sentinel: SentinelEndpoint | None = None
        if isinstance(address, SentinelAddress):
            self._sentinel = SentinelEndpoint(
                reactor,
                address,
                self._direct_endpoint,
                address.sentinel_timeout or reply_timeout,
            )
        self._stopping = False
        self._rejected = 0
        #: Connections made again after one was lost.
        self.reconnects = 0
        self._refusal: str | None = None
        self._factory: Any = ConnectionFactory(
            reactor, reply_timeout, self.name, self._command_built, self._connection_lost
        )
        self._client: ClientService | None = None
        self._command: RedisConnectionProtocol | None = None
        self._state_waiters: list[Deferred[None]] = []
        self._blocking_all: set[RedisConnectionProtocol] = set()
        self._blocking_idle: list[RedisConnectionProtocol] = []
        self._blocking_waiters: deque[Deferred[RedisConnectionProtocol]] = deque()
        self._blocking_connecting: set[Deferred[Any]] = set()
        self._drained: Deferred[None] | None = None
        self._loading: dict[str, Deferred[Any]] = {}
        self._load_waiters: dict[str, list[Deferred[Any]]] = {}
        self._sweeper: task.LoopingCall | None = None
        self._checker: task.LoopingCall | None = None
        self._checking = False

    # -- lifecycle ----------------------------------------------------------

    def _direct_endpoint(self, host: str, port: int, tls: bool) -> Any:
        endpoint: Any = HostnameEndpoint(self.reactor, host, port, timeout=self.connect_timeout)
        if tls:
            from twisted.internet.ssl import optionsForClientTLS

            endpoint = wrapClientTLS(optionsForClientTLS(host), endpoint)
        return endpoint

    def _command_endpoint(self) -> Any:
        if self._sentinel is not None:
            return self._sentinel
        address = self.address
        assert isinstance(address, RedisAddress)
        return self._direct_endpoint(address.host, address.port, address.tls)

    def _where(self) -> tuple[str, int]:
        # The server a connection made now goes to.
        if self._sentinel is not None:
            assert self._sentinel.resolved is not None
            return self._sentinel.resolved
        address = self.address
        assert isinstance(address, RedisAddress)
        return (address.host, address.port)

    def startService(self) -> None:
        super().startService()
        self.state = "connecting"
        self._stopping = False
        backoff = backoffPolicy(
            initialDelay=0.1,
            maxDelay=self.reconnect_max,
            factor=2.0,
            jitter=lambda: random.random() * 0.1,
        )
        # ClientService forgets failed attempts once TCP connects, but a
        # connection dropped before it was ready (a frozen server accepts
        # connections; a replica answers) must keep backing off: count
        # those too.
        self._rejected = 0
        self._client = ClientService(
            self._command_endpoint(),
            self._factory,
            retryPolicy=lambda attempt: backoff(max(attempt, self._rejected)),
            clock=self.reactor,
        )
        self._client.whenConnected(failAfterFailures=1).addCallbacks(
            lambda _: None, self._first_attempt_failed
        )
        self._client.startService()
        sweeper = self._sweeper = task.LoopingCall(self._sweep)
        sweeper.clock = self.reactor
        sweeper.start(self.sweep_interval, now=False).addErrback(
            lambda f: log.failure("The Redis timeout sweep stopped", f)
        )
        if self._sentinel is not None:
            checker = self._checker = task.LoopingCall(self._check_master_unmoved)
            checker.clock = self.reactor
            checker.start(self.sentinel_check_interval, now=False).addErrback(
                lambda f: log.failure("The Sentinel check stopped", f)
            )

    @property
    def sweep_interval(self) -> float:
        """Seconds between two timeout sweeps; overdue is noticed in two."""
        return min(0.5, max(0.05, self.reply_timeout / 4))

    def stopService(self) -> Deferred[None]:
        """
        Let blocking pops that were ended (``unblock``) come back, for up to
        the reply timeout, then close every connection.  Fires when closed.
        """
        super().stopService()
        # The command connection stays up meanwhile: what those pops bring
        # back is pushed back through it.
        self._stopping = True
        while self._blocking_waiters:
            self._blocking_waiters.popleft().errback(
                RedisUnavailable("The Redis layer was detached")
            )
        for attempt in list(self._blocking_connecting):
            attempt.cancel()
        busy = len(self._blocking_all) - len(self._blocking_idle)
        drained: Deferred[None] = Deferred()
        if busy <= 0:
            drained.callback(None)
        else:
            self._drained = drained
            drained.addTimeout(self.reply_timeout, self.reactor, onTimeoutCancel=lambda *a: None)
        return drained.addCallback(self._close)

    def _close(self, _: Any) -> Deferred[None]:
        self._drained = None
        self.state = "stopped"
        self._fire_state_waiters()
        for loop in (self._sweeper, self._checker):
            if loop is not None and loop.running:
                loop.stop()
        self._sweeper = self._checker = None
        closing: list[Deferred[Any]] = []
        if self._client is not None:
            closing.append(self._client.stopService())
        for proto in list(self._blocking_all):
            closing.append(proto.whenDisconnected())
            proto.transport.loseConnection()
        self._blocking_idle = []
        return gatherResults(closing, consumeErrors=True).addBoth(lambda _: None)

    # -- command connection state ----------------------------------------------

    def _login(self, proto: RedisConnectionProtocol) -> Deferred[Any]:
        # AUTH and SELECT, as the first commands of a new connection.
        address = self.address
        d: Deferred[Any] = proto.whenConnected()
        if address.password is not None:
            user = [address.username] if address.username else []
            d.addCallback(lambda _: self._run(proto, ("AUTH", *user, address.password), None))
        if address.db:
            d.addCallback(lambda _: self._run(proto, ("SELECT", address.db), None))
        return d

    def _command_built(self, proto: RedisConnectionProtocol) -> None:
        # A new command connection counts as up only once it is logged in,
        # has said it is a master (ROLE; a frozen server that still accepts
        # TCP connections does not count as up either) and has the scripts
        # loaded, so that a restarted server has them before anything runs
        # (NOSCRIPT is still handled).  ClientService's own
        # prepareConnection is not used: it cannot drop a connection that
        # failed it.
        where = self._where()
        if self._sentinel is not None:
            proto.label = "%s:%d (master of %s)" % (*where, self.name)
        d = self._login(proto)
        d.addCallback(lambda _: self._check_master(proto))
        d.addCallback(
            lambda _: gatherResults(
                [self._run(proto, ("SCRIPT", "LOAD", sc.source), None) for sc in self.scripts],
                consumeErrors=True,
            )
        )

        def ready(_: Any) -> None:
            if not proto.connected or self._stopping:
                return
            moved = self.master is not None and self.master != where
            self._command = proto
            self.master = where
            self._rejected = 0
            self._refusal = None
            if moved:
                # Blocking connections left on the old server would pop
                # from a replica (or a stale master): start afresh.
                self._drop_blocking()
            previous, self.state = self.state, "up"
            if previous == "connecting":
                log.info("Connected to Redis at {address}", address=proto.label)
            else:
                self.reconnects += 1
                log.info("Reconnected to Redis at {address}", address=proto.label)
            self._fire_state_waiters()

        def failed(failure: Failure) -> None:
            self._rejected += 1
            if proto.connected:
                proto.transport.abortConnection()
            if self._sentinel is not None:
                self._sentinel.distrust()
            reason = _reason(failure)
            if self.state == "connecting":
                self._first_attempt_failed(failure)
            elif reason != self._refusal and not self._stopping:
                log.warn(
                    "Redis at {address} is not ready: {reason}; retrying (back-off at most {max}s)",
                    address=proto.label,
                    reason=reason,
                    max=self.reconnect_max,
                )
            self._refusal = reason

        d.addCallbacks(ready, failed)
        d.addErrback(lambda f: log.failure("Preparing a Redis connection", f))

    def _check_master(self, proto: RedisConnectionProtocol) -> Deferred[None]:
        # ROLE: fails with RedisUnavailable unless the server is a master.
        d = self._run(proto, ("ROLE",), None)
        return d.addCallbacks(
            self._check_role, self._role_unknown, callbackArgs=(proto,), errbackArgs=(proto,)
        )

    @staticmethod
    def _check_role(reply: Any, proto: RedisConnectionProtocol) -> None:
        role = reply[0] if isinstance(reply, list) and reply else None
        if role == b"master":
            return
        if role in (b"slave", b"replica"):
            of = ""
            if len(reply) >= 3 and isinstance(reply[1], bytes):
                of = " of %s:%s" % (reply[1].decode("utf-8", "replace"), reply[2])
            raise RedisUnavailable("Redis at %s is a replica%s, not a master" % (proto.label, of))
        if role == b"sentinel":
            raise RedisUnavailable(
                "%s is a Redis Sentinel: name it under 'sentinels' with the 'master_name' "
                "of the service" % (proto.label,)
            )
        raise RedisUnavailable("Redis at %s answered ROLE with %r" % (proto.label, reply))

    @staticmethod
    def _role_unknown(failure: Failure, proto: RedisConnectionProtocol) -> None:
        # A server that refuses ROLE (renamed or forbidden, as on some hosted
        # Redis) answered all the same, so it is up; READONLY will still
        # tell if it is a replica.
        failure.trap(txredisapi.ResponseError)
        log.debug("Redis at {address} refused ROLE: {f}", address=proto.label, f=failure.value)

    def _check_master_unmoved(self) -> None:
        # Ask the sentinels (one short-lived connection) who the master is;
        # if not the server the shard is on, leave that server.
        sentinel = self._sentinel
        if sentinel is None or self.state != "up" or self._checking:
            return
        self._checking = True

        def named(master: tuple[str, int]) -> None:
            command = self._command
            if self.state != "up" or master == self.master or command is None:
                return
            log.warn(
                "The sentinels of {address} now name {master} as the master; leaving {old}",
                address=self.address,
                master="%s:%d" % master,
                old=command.label,
            )
            command.demoted = True
            command.transport.abortConnection()

        def done(result: Any) -> None:
            self._checking = False
            if isinstance(result, Failure):
                # No answer is no news: the connection's own checks stand.
                log.debug("Sentinel check of {a}: {f}", a=self.address, f=result.value)

        d = sentinel.resolve_master()
        d.addCallback(named)
        d.addBoth(done)
        d.addErrback(lambda f: log.failure("Checking the master with the sentinels", f))

    def _first_attempt_failed(self, failure: Failure) -> None:
        if failure.check(CancelledError):
            return
        if self.state == "connecting" and not self._stopping:
            self.state = "down"
            log.error(
                "Redis at {address} is unreachable ({reason}); operations fail until "
                "it answers, retrying with back-off (at most {max}s apart)",
                address=self.address,
                reason=_reason(failure),
                max=self.reconnect_max,
            )
            self._fire_state_waiters()

    def _connection_lost(self, proto: RedisConnectionProtocol) -> None:
        if proto is self._command:
            self._command = None
            if self.state == "up":
                self.state = "down"
                if proto.demoted:
                    log.warn(
                        "Redis at {address} is no master now (a failover?); reconnecting "
                        "to the master",
                        address=proto.label,
                    )
                else:
                    log.warn(
                        "Lost the connection to Redis at {address}; reconnecting "
                        "(back-off at most {max}s)",
                        address=proto.label,
                        max=self.reconnect_max,
                    )
            if proto.timed_out or proto.demoted:
                self._drop_blocking()  # on the same frozen or demoted server
        elif proto.demoted and self._command is not None and self._command.connected:
            # A blocking connection learnt it first (UNBLOCKED, READONLY):
            # the command connection is on that server too.
            self._command.demoted = True
            self._command.transport.abortConnection()
        if proto in self._blocking_all:
            self._blocking_all.discard(proto)
            if proto in self._blocking_idle:
                self._blocking_idle.remove(proto)
            self._check_drained()
            self._serve_blocking_waiters()

    def _drop_blocking(self) -> None:
        # Pops in flight fail with RedisUnavailable; their callers retry
        # once the shard is up again.
        for proto in list(self._blocking_all):
            if proto.connected:
                proto.transport.abortConnection()

    def _fire_state_waiters(self) -> None:
        waiters, self._state_waiters = self._state_waiters, []
        for d in waiters:
            d.callback(None)

    def _next_state(self) -> Deferred[None]:
        d: Deferred[None] = Deferred(
            lambda d: self._state_waiters.remove(d) if d in self._state_waiters else None
        )
        self._state_waiters.append(d)
        return d

    @property
    def available(self) -> bool:
        """True when commands would be tried (up, or first attempt running)."""
        return self.state in ("up", "connecting")

    def when_up(self) -> Deferred[None]:
        """A Deferred firing once the shard is up (now, if it is)."""
        if self.state == "up":
            return succeed(None)
        return self._next_state().addCallback(lambda _: self.when_up())

    def unavailable_error(self) -> RedisUnavailable:
        if self.state == "stopped" or self._stopping:
            return RedisUnavailable("The Redis layer is not attached to a reactor")
        return RedisUnavailable("Redis at %s is unreachable; reconnecting" % (self.address,))

    # -- commands ---------------------------------------------------------------

    def execute(self, *args: RedisArg, timeout: float | None = None) -> Deferred[RedisReply]:
        """
        Run one command on the command connection.

        :raises RedisUnavailable: (in the Deferred) down, lost, overloaded,
            or the server is a replica now.
        :raises RedisTimeout: no reply within the timeout.
        :raises txredisapi.ResponseError: an error reply.
        """
        if self.state == "up" and self._command is not None:
            return self._run(self._command, args, timeout)
        if self.state == "connecting":
            return self._next_state().addCallback(lambda _: self.execute(*args, timeout=timeout))
        return fail(self.unavailable_error())

    def _run(
        self, proto: RedisConnectionProtocol, args: Sequence[Any], timeout: float | None
    ) -> Deferred[Any]:
        if len(proto.pending) >= self.max_pending or proto.pending_bytes >= self.max_pending_bytes:
            return fail(
                RedisUnavailable(
                    "Too many commands are waiting for Redis at %s (%d, %d bytes)"
                    % (self.address, len(proto.pending), proto.pending_bytes)
                )
            )
        return proto.execute_command(*args, timeout=timeout)

    def eval(
        self, script: Script, keys: Sequence[RedisArg], args: Sequence[RedisArg]
    ) -> Deferred[RedisReply]:
        """
        Run ``script`` with EVALSHA.  On NOSCRIPT (``SCRIPT FLUSH``, a
        failover) the script is loaded once -- concurrent callers share the
        load -- and run again.
        """
        d = self.execute("EVALSHA", script.sha, len(keys), *keys, *args)

        def noscript(failure: Failure) -> Any:
            failure.trap(txredisapi.ResponseError)
            if not str(failure.value).startswith("NOSCRIPT"):
                return failure
            loaded = self._loading.get(script.sha)
            if loaded is None:
                loaded = self._loading[script.sha] = self.execute("SCRIPT", "LOAD", script.source)
                loaded.addBoth(self._loaded, script.sha)
            waiting: Deferred[Any] = Deferred()
            self._load_waiters.setdefault(script.sha, []).append(waiting)
            return waiting.addCallback(
                lambda _: self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
            )

        return d.addErrback(noscript)

    def _loaded(self, result: Any, sha: str) -> None:
        del self._loading[sha]
        for waiting in self._load_waiters.pop(sha, []):
            if isinstance(result, Failure):
                waiting.errback(result)
            else:
                waiting.callback(None)

    # -- blocking connections ------------------------------------------------------

    def blpop(self, keys: Sequence[str], timeout: float) -> BlockingPop:
        """A :class:`BlockingPop` on a blocking connection of this shard."""
        return BlockingPop(self, keys, timeout)

    def acquire_blocking(self) -> Deferred[RedisConnectionProtocol]:
        """
        A blocking connection for one command (an idle one, or a new one
        once there is room), to give back with :meth:`release_blocking`.
        Cancelling the Deferred gives up waiting.

        :raises RedisUnavailable: (in the Deferred) the shard is down or
            stopping, or the connection could not be opened.
        """
        if self.state == "connecting":
            return self._next_state().addCallback(lambda _: self.acquire_blocking())
        if self.state != "up" or self._stopping:
            return fail(self.unavailable_error())
        d: Deferred[RedisConnectionProtocol] = Deferred(self._cancel_blocking_waiter)
        self._blocking_waiters.append(d)
        self._serve_blocking_waiters()
        return d

    def _cancel_blocking_waiter(self, d: Deferred[RedisConnectionProtocol]) -> None:
        if d in self._blocking_waiters:
            self._blocking_waiters.remove(d)

    def _serve_blocking_waiters(self) -> None:
        while self._blocking_waiters and self._blocking_idle:
            self._blocking_waiters.popleft().callback(self._blocking_idle.pop())
        if self.state != "up":
            return
        room = self.max_blocking - len(self._blocking_all) - len(self._blocking_connecting)
        wanted = len(self._blocking_waiters) - len(self._blocking_connecting)
        for _ in range(max(0, min(room, wanted))):
            self._new_blocking()

    def _new_blocking(self) -> None:
        assert self.master is not None  # set before the shard is first up
        label = str(self.address) if self._sentinel is None else "%s:%d" % self.master
        factory = ConnectionFactory(
            self.reactor, self.reply_timeout, label, lost=self._connection_lost
        )
        attempt = self._direct_endpoint(*self.master, self.address.tls).connect(factory)
        self._blocking_connecting.add(attempt)

        def connected(proto: RedisConnectionProtocol) -> Deferred[RedisConnectionProtocol]:
            self._blocking_connecting.discard(attempt)
            self._blocking_all.add(proto)
            d = self._login(proto)
            d.addCallback(lambda _: self._run(proto, ("CLIENT", "ID"), None))

            def got_id(client_id: Any) -> RedisConnectionProtocol:
                proto.client_id = int(client_id)
                return proto

            def no_id(failure: Failure) -> RedisConnectionProtocol:
                failure.trap(txredisapi.ResponseError)  # Redis < 5: no CLIENT ID/UNBLOCK
                return proto

            d.addCallbacks(got_id, no_id)
            d.addErrback(self._abort_then_fail, proto)
            return d

        def failed(failure: Failure) -> None:
            self._blocking_connecting.discard(attempt)
            if self._blocking_waiters:
                self._blocking_waiters.popleft().errback(
                    RedisUnavailable(
                        "Cannot open a connection to Redis at %s: %s" % (label, _reason(failure))
                    )
                )

        attempt.addCallbacks(connected)
        attempt.addCallbacks(self.release_blocking, failed)
        attempt.addErrback(lambda f: log.failure("Opening a blocking Redis connection", f))

    @staticmethod
    def _abort_then_fail(failure: Failure, proto: RedisConnectionProtocol) -> Failure:
        if proto.connected:
            proto.transport.abortConnection()
        return failure

    def release_blocking(self, proto: RedisConnectionProtocol) -> None:
        """Give back a connection from :meth:`acquire_blocking` (closed if broken)."""
        if not proto.connected or proto.timed_out or self._stopping:
            if proto.connected:
                proto.transport.loseConnection()
        elif self._blocking_waiters:
            self._blocking_waiters.popleft().callback(proto)
        elif len(self._blocking_idle) < self.max_idle_blocking:
            self._blocking_idle.append(proto)
        else:
            proto.transport.loseConnection()
        self._check_drained()

    def _check_drained(self) -> None:
        if self._drained is not None and len(self._blocking_all) <= len(self._blocking_idle):
            d, self._drained = self._drained, None
            d.callback(None)

    @property
    def blocking_in_use(self) -> int:
        """Blocking connections carrying (or opening for) a pop."""
        return len(self._blocking_all) - len(self._blocking_idle) + len(self._blocking_connecting)

    # -- timeouts -----------------------------------------------------------------

    def _protocols(self) -> list[RedisConnectionProtocol]:
        protos = list(self._blocking_all)
        latest = self._factory.latest
        if latest is not None and latest.connected:
            protos.append(latest)
        return protos

    def _sweep(self) -> None:
        # A connection is dropped when its oldest command is overdue at two
        # sweeps in a row with no reply in between: between two sweeps the
        # reactor reads its sockets, so a busy reactor (replies waiting to
        # be read) is not mistaken for a silent server.
        now = self.reactor.seconds()
        overdue = []
        for proto in self._protocols():
            if not proto.pending or proto.pending[0][0] > now:
                proto.overdue_at = None
            elif proto.overdue_at != proto.replies:
                proto.overdue_at = proto.replies
            elif not proto.timed_out and proto.transport:
                overdue.append(proto)
        for proto in overdue:
            proto.timed_out = True
            proto.transport.abortConnection()
        if overdue:
            log.warn(
                "Redis at {address} did not answer in time; dropped {n} connection(s)",
                address=self.address,
                n=len(overdue),
            )
            if self._command is not None and self._command not in overdue:
                # Probe: if the server is frozen, this times out too and the
                # shard goes down until it answers again.
                self.execute("PING").addErrback(
                    lambda f: log.debug("Probe of Redis at {a}: {f}", a=self.address, f=f)
                )
