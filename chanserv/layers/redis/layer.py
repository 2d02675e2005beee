"""
The Redis channel layer: ``asgi_redis.RedisChannelLayer``'s configuration on
txredisapi, with O(1) group sends, connection-lived memberships and state
loss detection (Redis >= 5).  The reactor face runs on the reactor thread;
the synchronous face on any thread but the reactor thread (:mod:`.sync`).
"""

from __future__ import annotations

import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.python.failure import Failure
from zope.interface import implementer

from chanserv.interfaces import (
    IChannelLayer,
    IReactorChannelLayer,
    ISendHandOff,
    ISendToSink,
    SendSink,
)
from chanserv.layers.base import BaseChannelLayer, CapacityPattern, LocalReceiver, Prepared
from chanserv.layers.redis.codec import MessageCodec
from chanserv.layers.redis.config import (
    compile_capacities,
    connection_options,
    consistent_hash,
    lua_capacities,
    parse_hosts,
)
from chanserv.layers.redis.connection import RedisShard
from chanserv.layers.redis.errors import RedisTimeout, RedisUnavailable
from chanserv.layers.redis.handoff import HandedOffSends, HandOffBudget, HeldSend, SendFailure
from chanserv.layers.redis.operations import RawMessage, RedisOperations, unwrap
from chanserv.layers.redis.receive import (
    CapacityWatch,
    LocalReceiverLoop,
    ProcessHeartbeat,
    ReceiveOperation,
)
from chanserv.layers.redis.scripts import ALL_SCRIPTS
from chanserv.layers.redis.sync import call_in_reactor, check_not_reactor_thread, running_reactor
from chanserv.log import Logger
from chanserv.threads import batcher_for
from chanserv.types import Content, Received

__all__ = ["RedisChannelLayer", "RedisTimeout", "RedisUnavailable", "parse_hosts"]

log = Logger()


@implementer(IChannelLayer, IReactorChannelLayer, ISendHandOff, ISendToSink)
class RedisChannelLayer(BaseChannelLayer):
    """
    A channel layer in one or more Redis servers.

    :param hosts: one shard each: ``redis://`` URLs (with password and
        database), ``(host, port)`` pairs, or dicts -- ``{"address": url}``,
        ``{"host": ..., "port": ...}``, or a Sentinel service
        ``{"sentinels": [(host, port), ...], "master_name": ...,
        "sentinel_kwargs": {...}}`` as channels_redis names it.  A bare
        string raises ValueError.
    :param prefix: prefix of every key (``"asgi:"``); no whitespace or NUL.
    :param expiry: see :class:`~chanserv.layers.base.BaseChannelLayer`, as
        for ``group_expiry``, ``capacity``, ``channel_capacity`` and
        ``max_message_size``.
    :param symmetric_encryption_keys: a list of keys: messages are stored
        encrypted (Fernet, first key encrypts, all decrypt).  Needs
        ``cryptography``.
    :param stats_prefix: prefix of the statistics counters.
    :param connection_kwargs: ``socket_timeout`` (seconds for any reply,
        default 2.5), ``socket_connect_timeout`` (5), ``password``,
        ``username``, ``db``, ``ssl`` (for pairs in ``hosts``),
        ``reconnect_max_delay`` (2), ``max_blocking_connections`` (64 per
        shard).  redis-py options with no meaning here are ignored.
    :param blpop_timeout: seconds a blocking pop waits on the server before
        it is issued again (5).

    Faces: the synchronous one from any thread but the reactor's (it raises
    RuntimeError there); the reactor face on the reactor thread, after
    :meth:`attach_reactor`.  Operations fail with :class:`RedisUnavailable`
    (a :class:`ConnectionError`) while Redis is unreachable and with
    :class:`RedisTimeout` when it does not answer in time.
    """

    extensions = ["groups", "flush", "statistics", "twisted"]
    local_only = False

    RedisUnavailable = RedisUnavailable
    RedisTimeout = RedisTimeout

    def __init__(
        self,
        hosts: Any = None,
        prefix: str = "asgi:",
        expiry: float = 60,
        group_expiry: float = 86400,
        capacity: int = 100,
        channel_capacity: Mapping[CapacityPattern, int]
        | Sequence[tuple[CapacityPattern, int]]
        | None = None,
        symmetric_encryption_keys: Sequence[str | bytes] | None = None,
        stats_prefix: str = "asgi-meta:",
        connection_kwargs: Mapping[str, Any] | None = None,
        max_message_size: int = 1024 * 1024,
        blpop_timeout: float = 5,
    ) -> None:
        # Any: hosts and connection_kwargs are the layer's CONFIG as the project wrote it
        # (channels_redis forms), checked here entry by entry.
        super().__init__(
            expiry=expiry,
            group_expiry=group_expiry,
            capacity=capacity,
            channel_capacity=channel_capacity,
            max_message_size=max_message_size,
        )
        for name, value in (("prefix", prefix), ("stats_prefix", stats_prefix)):
            # No whitespace nor NUL: a message in a list is told from a
            # reference to a body key by its leading NUL, and its parts are
            # separated by spaces.
            if not isinstance(value, str) or not value or re.search(r"[\s\x00]", value):
                raise ValueError(
                    "%s must be a non-empty str without spaces or NULs, not %r" % (name, value)
                )
        if prefix.startswith(stats_prefix) or stats_prefix.startswith(prefix):
            raise ValueError("prefix and stats_prefix must not be prefixes of each other")
        if not isinstance(blpop_timeout, (int, float)) or blpop_timeout <= 0:
            raise ValueError("blpop_timeout must be a positive number, not %r" % (blpop_timeout,))
        options = connection_options(connection_kwargs)
        self.prefix = prefix
        self.stats_prefix = stats_prefix
        self.blpop_timeout = blpop_timeout
        self.hosts = parse_hosts(hosts, options)
        self.ring_size = len(self.hosts)
        self.reply_timeout = float(options["socket_timeout"])
        self.connect_timeout = float(options["socket_connect_timeout"])
        self.reconnect_max_delay = float(options["reconnect_max_delay"])
        self.max_blocking_connections = options["max_blocking_connections"]
        self.sync_timeout = (
            self.connect_timeout + blpop_timeout + (3 + self.ring_size) * self.reply_timeout + 5
        )
        self._codec = MessageCodec(symmetric_encryption_keys, expiry)
        self.operations = RedisOperations(
            prefix=prefix,
            stats_prefix=stats_prefix,
            expiry=expiry,
            group_expiry=group_expiry,
            default_capacity=capacity,
            get_capacity=self.get_capacity,
            lua_capacities=lua_capacities(self.channel_capacity),
            codec=self._codec,
            unpack=self.unpack,
        )
        self.reactor: Any = None
        self.shards: list[RedisShard] = []
        self._service: MultiService | None = None
        self._auto_attached = False
        self._detaching = False
        self._receives: set[ReceiveOperation] = set()
        self._local: dict[str, tuple[LocalReceiverLoop, ProcessHeartbeat]] = {}
        self._unregistering: list[Deferred[None]] = []
        self._watches: dict[str, CapacityWatch] = {}
        #: Group sends made through this process (reactor thread).
        self.group_sends = 0
        #: Seconds each send of this process took, to Redis and back (reactor thread).
        self.send_seconds = self.operations.send_seconds
        #: What consumers' hand-offs (:meth:`hand_off_sends`) hold in flight.
        self.hand_off_budget = HandOffBudget(self.hand_off_max_messages, self.hand_off_max_bytes)
        self._attach_lock = threading.Lock()
        # Messages of a group reference beyond a receive's limit, per
        # process prefix, for the next receive (any thread).
        self._spill: dict[str, deque[Received]] = {}
        self._spill_lock = threading.Lock()

    @staticmethod
    def _compile_capacities(channel_capacity: Any) -> list[Any]:
        return compile_capacities(channel_capacity)

    def __repr__(self) -> str:
        return "<%s hosts=%s prefix=%r>" % (
            type(self).__name__,
            [str(a) for a in self.hosts],
            self.prefix,
        )

    def consistent_hash(self, value: str) -> int:
        """The shard index of a channel's list (pass the non-local name)."""
        return consistent_hash(value, self.ring_size)

    # -- group spill-over (any thread) --------------------------------------------

    def _take_spilled(self, names: Sequence[str], limit: int) -> list[Received]:
        if not self._spill:
            return []
        taken: list[Received] = []
        with self._spill_lock:
            for name in names:
                queue = self._spill.get(name)
                while queue and len(taken) < limit:
                    taken.append(queue.popleft())
                if queue is not None and not queue:
                    del self._spill[name]
        return taken

    def _keep(self, decoded: list[Received], limit: int) -> list[Received]:
        # A group reference expands to its local members: what is beyond
        # ``limit`` waits for the next receive of that prefix.
        if len(decoded) <= limit:
            return decoded
        with self._spill_lock:
            for channel, message in decoded[limit:]:
                prefix = self.non_local_name(channel)
                self._spill.setdefault(prefix, deque()).append((channel, message))
        return decoded[:limit]

    # -- synchronous face (any thread but the reactor's) -------------------------------

    def _sync(self, f: Any, *args: Any, timeout: float | None = None, **kw: Any) -> Any:
        reactor = self._sync_reactor()
        return call_in_reactor(reactor, f, *args, timeout=timeout or self.sync_timeout, **kw)

    def _sync_reactor(self) -> Any:
        check_not_reactor_thread()
        if self.reactor is not None:
            return self.reactor
        with self._attach_lock:
            if self.reactor is None:
                reactor = running_reactor()
                call_in_reactor(reactor, self._attach_for_sync, reactor, timeout=10)
        return self.reactor

    def _attach_for_sync(self, reactor: Any) -> None:
        if self.reactor is None:
            self.attach_reactor(reactor)
            self._auto_attached = True

    def _bytes(self, data: Prepared) -> bytes:
        # This layer's prepare() always serialises; a FlatMessage can only
        # come from another layer's prepare(): serialise it here.
        return data if isinstance(data, bytes) else self.serialise(dict(data))

    def send_prepared(self, channel: str, data: Prepared) -> None:
        """
        Send prepared ``data`` to ``channel``; returns once Redis has it.
        Encryption happens in the calling thread.

        :raises ChannelFull: the channel holds its capacity already (for a
            process-local channel: its own messages, not its process's).
        :raises RedisUnavailable: Redis is unreachable; RedisTimeout: it did
            not answer in time (the message may then have been sent).
        """
        self.valid_channel_name(channel)
        self._sync(self._send_payload, channel, self._codec.encode(self._bytes(data)))

    def send_prepared_wait(self, channel: str, data: Prepared, timeout: float) -> None:
        """
        :meth:`send_prepared`, waiting up to ``timeout`` s for room if full
        or blocked (:class:`~chanserv.exceptions.ChannelBlocked` if it still
        was at the end).
        """
        self.valid_channel_name(channel)
        payload = self._codec.encode(self._bytes(data))
        self._sync(self._send_wait, channel, payload, timeout, timeout=timeout + self.sync_timeout)

    def receive(self, channels: Sequence[str], block: bool = False) -> Received | tuple[None, None]:
        """
        One message from ``channels``, or ``(None, None)``; ``block=True``
        waits up to ``blpop_timeout`` seconds.  Decryption and unpacking
        happen in the calling thread.

        :raises TypeError: invalid names; RedisUnavailable, RedisTimeout.
        """
        names = self._receive_names(channels)
        if not names:
            return None, None
        spilled = self._take_spilled(names, 1)
        if spilled:
            return spilled[0]
        raw = self._sync(self._receive_raw, names, block, on_abandoned=self._hand_back)
        if not raw:
            return None, None
        decoded = self._keep(self.operations.decode_items(raw), 1)
        return decoded[0] if decoded else (None, None)

    def new_channel(self, pattern: str) -> str:
        """``pattern`` (ending in ``?``) plus 12 random letters, unused in Redis."""
        self._check_new_channel_pattern(pattern)
        result: str = self._sync(self.new_channel_twisted, pattern)
        return result

    def group_add(self, group: str, channel: str) -> None:
        """Add ``channel`` to ``group`` (again: refreshes its membership)."""
        self.valid_group_name(group)
        self.valid_channel_name(channel)
        self._sync(self.group_add_twisted, group, channel)

    def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``; nothing happens if it is absent."""
        self.valid_group_name(group)
        self.valid_channel_name(channel)
        self._sync(self.group_discard_twisted, group, channel)

    def group_channels(self, group: str) -> list[str]:
        """The members, lapsed ones dropped first."""
        self.valid_group_name(group)
        result: list[str] = self._sync(self.group_channels_twisted, group)
        return result

    def send_group_prepared(self, group: str, data: Prepared) -> None:
        """Send to every member; one script per shard, never ChannelFull."""
        self.valid_group_name(group)
        self._sync(self._send_group_payload, group, self._codec.encode(self._bytes(data)))

    #: Bounds of what hand-offs may hold in flight (see HandOffBudget).
    hand_off_max_messages = 10_000
    hand_off_max_bytes = 64 * 1024 * 1024

    def hand_off_sends(
        self,
        sends: Sequence[tuple[str, str, Prepared]],
        full_timeout: float,
        blocked_timeout: float,
        done: Callable[[list[SendFailure]], None],
    ) -> bool:
        """
        :class:`~chanserv.interfaces.ISendHandOff`: send ``sends`` --
        ``(kind, name, data)``, kind ``"channel"`` or ``"group"``, names
        already checked -- from the reactor thread, in their order
        (:class:`~chanserv.layers.redis.handoff.HandedOffSends`), and return
        at once; ``done(failures)`` runs on the reactor thread once all are
        through.  Encryption happens in the calling thread.  Any thread but
        the reactor's.

        :returns: False, having taken nothing, when the layer is not
            attached to a reactor or its :attr:`hand_off_budget` is used up:
            the caller then sends them itself.
        """
        reactor = self.reactor
        if reactor is None:
            return False
        encode = self._codec.encode
        held = [HeldSend(kind, name, encode(self._bytes(data))) for kind, name, data in sends]
        size = sum(len(send.payload) for send in held)
        if not self.hand_off_budget.take(len(held), size):
            return False
        batcher_for(reactor).call(
            self._start_hand_off, held, size, full_timeout, blocked_timeout, done
        )
        return True

    def _start_hand_off(
        self,
        held: list[HeldSend],
        size: int,
        full_timeout: float,
        blocked_timeout: float,
        done: Callable[[list[SendFailure]], None],
    ) -> None:
        # Reactor thread.
        def through(failures: list[SendFailure]) -> None:
            self.hand_off_budget.give_back(len(held), size)
            done(failures)

        HandedOffSends(
            held,
            self._send_payload_to,
            self._send_wait,
            self._send_group_payload,
            self.reactor,
            full_timeout,
            blocked_timeout,
            through,
        ).start()

    def flush(self) -> None:
        """Delete every key under ``prefix`` and ``stats_prefix`` on every shard."""
        with self._spill_lock:
            self._spill.clear()
        self._sync(self.flush_twisted, timeout=max(60.0, self.sync_timeout))

    def global_statistics(self) -> dict[str, float]:
        """
        Counters summed over the shards (a SCAN: for occasional monitoring):
        the ASGI statistics, plus ``expired_count``, the messages dropped
        because they waited past ``expiry`` unread (counted when a send,
        receive or group call of any process finds them).
        """
        result: dict[str, float] = self._sync(self.global_statistics_twisted)
        return result

    def channel_statistics(self, channel: str) -> dict[str, float]:
        """
        The counters of ``channel`` (a local channel's own, not its
        process's), ``expired_count`` included (see :meth:`global_statistics`).
        """
        self.valid_channel_name(channel)
        result: dict[str, float] = self._sync(self.channel_statistics_twisted, channel)
        return result

    # -- reactor face: attachment ------------------------------------------------

    def attach_reactor(self, reactor: Any) -> None:
        # Any: the reactor must provide IReactorTime and IReactorFromThreads (the Redis layer's
        # also IReactorTCP), and Python's types have no intersection of interfaces.
        """
        Start the connection service of every shard on ``reactor``.  Redis
        being down is no error: operations fail fast until it is up.
        Reactor thread (or before the reactor runs).

        :raises RuntimeError: already attached (to this reactor by the
            synchronous face's fallback is fine: the caller takes it over).
        """
        if self.reactor is not None:
            if self.reactor is reactor and self._auto_attached:
                self._auto_attached = False
                return
            raise RuntimeError("This RedisChannelLayer is already attached to a reactor")
        service = MultiService()
        shards = []
        for address in self.hosts:
            shard = RedisShard(
                reactor,
                address,
                scripts=ALL_SCRIPTS,
                reply_timeout=self.reply_timeout,
                connect_timeout=self.connect_timeout,
                reconnect_max=self.reconnect_max_delay,
                max_blocking=self.max_blocking_connections,
            )
            shard.setServiceParent(service)
            shards.append(shard)
        self.reactor = reactor
        self.shards = shards
        self.operations.shards = shards
        self.operations.reactor = reactor
        self._service = service
        service.startService()

    def detach_reactor(self) -> Deferred[None]:
        """
        Stop local receivers, cancel receives in flight (what they had
        popped is pushed back) and capacity waits, then close every
        connection.  Fires once they are closed.  Reactor thread.
        """
        service = self._service
        if service is None or self._detaching:
            return succeed(None)
        self._detaching = True
        for prefix in list(self._local):
            self.remove_local_receiver(prefix)
        for receive in list(self._receives):
            receive.deferred.cancel()
        for watch in list(self._watches.values()):
            watch.stop()

        def detached(result: Any) -> Any:
            self.reactor = None
            self.shards = []
            self.operations.shards = []
            self.operations.reactor = None
            self._service = None
            self._detaching = False
            self._auto_attached = False
            return result

        # Unregistering goes out before the connections close.
        unregistering, self._unregistering = self._unregistering, []
        d: Deferred[Any] = gatherResults(unregistering, consumeErrors=True)
        d.addBoth(lambda _: service.stopService())
        return d.addBoth(detached).addCallback(lambda _: None)

    def quiescent_twisted(self) -> Deferred[bool]:
        """
        True when nothing is moving: no receive between steps, no message
        being handed back, and every receive in flight is blocked in BLPOP
        on the server (checked with ``CLIENT LIST``, so no reply is on its
        way).  For tests and diagnostics.  Reactor thread.
        """
        if self.operations.handbacks:
            return succeed(False)
        blocked: dict[int, list[int]] = {}
        for receive in self._receives:
            clients = receive.blocked_clients()
            if clients is None:
                return succeed(False)
            for shard, client_id in clients:
                blocked.setdefault(shard, []).append(client_id)
        for index, redis_shard in enumerate(self.shards):
            if redis_shard.blocking_in_use != len(blocked.get(index, ())):
                return succeed(False)  # an abandoned pop is still coming back
        checks = [
            self.shards[index].execute("CLIENT", "LIST", "ID", *ids)
            for index, ids in blocked.items()
        ]

        def all_blocked(listings: list[bytes]) -> bool:
            lines = [line for listing in listings for line in listing.splitlines() if line]
            wanted = sum(len(ids) for ids in blocked.values())
            return len(lines) == wanted and all(
                "b" in dict(f.split(b"=", 1) for f in line.split() if b"=" in f)[b"flags"].decode()
                for line in lines
            )

        return gatherResults(checks).addCallback(all_blocked)

    def _require_attached(self) -> None:
        if self.reactor is None or self._detaching:
            raise RuntimeError(
                "RedisChannelLayer's reactor face needs attach_reactor() first "
                "(the layer service does it in a server)"
            )

    # -- reactor face: receiving -------------------------------------------------

    def _receive_names(self, channels: Any) -> list[str]:
        if isinstance(channels, (str, bytes)):
            self.valid_channel_names(channels)  # raises: a lone name is not a list
        names = list(channels)
        self.valid_channel_names(names, receive=True)
        return list(dict.fromkeys(names))

    def _start_receive(
        self,
        names: list[str],
        limit: int,
        block: bool,
        loop: bool,
        decode: Callable[[list[RawMessage]], list[Any]],
    ) -> Deferred[list[Any]]:
        receive = ReceiveOperation(
            self.operations,
            self.operations.plan(names),
            limit,
            block,
            loop,
            decode,
            self.blpop_timeout,
            self._note_received,
        )
        self._receives.add(receive)

        def done(result: Any) -> Any:
            self._receives.discard(receive)
            return result

        receive.deferred.addBoth(done)
        return receive.start()

    def receive_many_twisted(self, channels: Sequence[str], limit: int) -> Deferred[list[Received]]:
        """
        1 to ``limit`` ``(channel, message)`` pairs from ``channels``, as
        soon as there are some (blocking pops, no polling).  Cancelling
        takes nothing.  Fails with :class:`RedisUnavailable` when no shard
        holding the channels is reachable or a connection is lost or times
        out meanwhile: the caller retries (with a back-off).  Reactor thread.
        """
        try:
            self._require_attached()
            names = self._receive_names(channels)
            if not names:
                raise ValueError("receive_many_twisted needs at least one channel")
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise ValueError("limit must be a positive int, not %r" % (limit,))
        except Exception:
            return fail()
        spilled = self._take_spilled(names, limit)
        if spilled:
            return succeed(spilled)
        decode = self.operations.decode_items
        return self._start_receive(
            names, limit, True, True, lambda items: self._keep(decode(items), limit)
        )

    def _receive_local(self, names: list[str], limit: int) -> Deferred[list[Received]]:
        # A local receiver's loop: every member of a group message at once.
        return self._start_receive(names, limit, True, True, self.operations.decode_items)

    def _receive_raw(self, names: list[str], block: bool) -> Deferred[list[Any]]:
        # Reactor thread, for the synchronous receive: raw, decoded by the caller.
        self._require_attached()
        return self._start_receive(names, 1, block, False, list)

    def _hand_back(self, items: list[RawMessage]) -> None:
        # Reactor thread: a synchronous receive gave up; put its message back.
        for item in items:
            self.operations.requeue(item.shard, [item])

    def add_local_receiver(
        self,
        prefix: str,
        callback: LocalReceiver,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        """
        Read ``prefix``'s inbox (one per process) forever and hand every
        batch of messages to ``callback(batch)`` on the reactor thread --
        a group message once per local member, in one batch, the members
        sharing one (read-only) dict.  Messages already queued come first.
        Survives Redis outages.

        The process is registered while the receiver runs (a heartbeat every
        second): its local channels' group memberships then never lapse by
        time -- they end with :meth:`discard_local_channel` or when the
        process dies.  When Redis turns out to have lost its state,
        ``on_lost()`` is called: every membership is gone, so the caller
        closes its connections for clients to reconnect and rejoin.

        :raises TypeError: ``prefix`` is not a valid name ending with ``!``.
        :raises ValueError: ``prefix`` has a receiver already.
        """
        self._require_attached()
        self._check_local_prefix(prefix)
        if prefix in self._local:
            raise ValueError("%r has a local receiver already" % (prefix,))
        shard = self.shards[self.consistent_hash(prefix)]
        loop = LocalReceiverLoop(self.reactor, self._receive_local, shard.when_up, prefix, callback)
        heartbeat = ProcessHeartbeat(
            self.operations, self.reactor, prefix, on_lost or self._lost_unhandled
        )
        self._local[prefix] = (loop, heartbeat)
        heartbeat.start()
        loop.start()

    @staticmethod
    def _lost_unhandled() -> None:
        log.warn("A local receiver without on_lost: its connections may have lost memberships")

    def remove_local_receiver(self, prefix: str) -> None:
        """Stop reading ``prefix``'s inbox and unregister it (no-op without one)."""
        entry = self._local.pop(prefix, None)
        if entry is None:
            return
        loop, heartbeat = entry
        loop.stop()
        unregistering = heartbeat.stop()
        if unregistering is not None:
            self._unregistering.append(unregistering)
            unregistering.addBoth(self._unregistered, unregistering)

    def _unregistered(self, result: Any, d: Deferred[None]) -> Any:
        if d in self._unregistering:
            self._unregistering.remove(d)
        return result

    def discard_local_channel(self, channel: str) -> None:
        """
        The connection of local channel ``channel`` is gone: remove it from
        every group and unblock it, now (fire and forget; a failure is
        logged, and the membership then ends at the latest with its
        process).  Reactor thread.
        """
        if self.reactor is None or self._detaching:
            return
        d = self.operations.leave_all(channel)
        d.addErrback(
            lambda f: log.info(
                "Could not remove {channel} from its groups: {error}",
                channel=channel,
                error=unwrap(f).getErrorMessage(),
            )
        )

    def block_local_channel(self, channel: str) -> None:
        """
        Refuse sends to ``channel`` with ChannelBlocked, from every process,
        until :meth:`unblock_local_channel` or :meth:`discard_local_channel`
        (see :meth:`IReactorChannelLayer.block_local_channel
        <chanserv.interfaces.IReactorChannelLayer.block_local_channel>`): one
        command, fire and forget (a failure is logged; the interface's cap
        on what a connection holds still applies).  Sends already on their
        way to Redis still arrive.  The mark goes with the process's other
        keys (see :mod:`~chanserv.layers.redis.scripts`).  Reactor thread.

        :raises TypeError: ``channel`` is not a valid ``prefix!local`` name.
        """
        self._check_local_channel(channel)
        self._set_blocked(channel, True)

    def unblock_local_channel(self, channel: str) -> None:
        """
        End :meth:`block_local_channel`: one command, fire and forget.
        Waiting senders see it at their next room check (within a second,
        see :class:`~chanserv.layers.redis.receive.CapacityWatch`).  Reactor
        thread.

        :raises TypeError: ``channel`` is not a valid ``prefix!local`` name.
        """
        self._check_local_channel(channel)
        self._set_blocked(channel, False)

    def _set_blocked(self, channel: str, blocked: bool) -> None:
        if self.reactor is None or self._detaching:
            return
        d = self.operations.set_blocked(channel, blocked)
        d.addErrback(
            lambda f: log.info(
                "Could not {what} {channel}: {error}",
                what="block" if blocked else "unblock",
                channel=channel,
                error=unwrap(f).getErrorMessage(),
            )
        )

    def count_full(self, channel: str, count: int = 1) -> None:
        """
        Count ``count`` messages that could not be delivered to ``channel``
        because its queue was full (in its and the global
        ``channel_full_count``).  Fire and forget.  Reactor thread.
        """
        if self.reactor is None or self._detaching:
            return
        d = self.operations.count_full(channel, count)
        d.addErrback(
            lambda f: log.info(
                "Could not count a drop on {channel}: {error}",
                channel=channel,
                error=unwrap(f).getErrorMessage(),
            )
        )

    # -- reactor face: sends, groups, statistics ----------------------------------

    def _send_payload(self, channel: str, payload: bytes) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self._send_payload_to(channel, payload, d)
        return d

    def _send_payload_to(self, channel: str, payload: bytes, sink: SendSink) -> None:
        try:
            self._require_attached()
        except Exception:
            sink.errback(Failure())
            return
        self.operations.send_to(channel, payload, sink)

    def _send_wait(self, channel: str, payload: bytes, timeout: float) -> Deferred[None]:
        try:
            self._require_attached()
        except Exception:
            return fail()
        return self.operations.send_wait(
            channel, payload, timeout, self.reactor, self.when_capacity_twisted
        )

    def _send_group_payload(self, group: str, payload: bytes) -> Deferred[None]:
        try:
            self._require_attached()
        except Exception:
            return fail()
        self.group_sends += 1
        return self.operations.send_group(group, payload).addCallback(lambda _: None)

    def send_twisted(self, channel: str, message: Content) -> Deferred[None]:
        """
        Send ``message`` to ``channel``.  Fails with ChannelFull,
        MessageTooLarge, TypeError, RedisUnavailable or RedisTimeout.
        """
        d: Deferred[None] = Deferred()
        self.send_twisted_to(channel, message, d)
        return d

    def send_twisted_to(self, channel: str, message: Content, sink: SendSink) -> None:
        """:class:`~chanserv.interfaces.ISendToSink`: :meth:`send_twisted`, told to ``sink``."""
        try:
            self._require_attached()
            self.valid_channel_name(channel)
            payload = self._codec.encode(self.serialise(message))
        except Exception:
            sink.errback(Failure())
            return
        self.operations.send_to(channel, payload, sink)

    def send_group_twisted(self, group: str, message: Content) -> Deferred[None]:
        """Send ``message`` to every member of ``group`` (never ChannelFull)."""
        try:
            self._require_attached()
            self.valid_group_name(group)
            payload = self._codec.encode(self.serialise(message))
        except Exception:
            return fail()
        self.group_sends += 1
        return self.operations.send_group(group, payload).addCallback(lambda _: None)

    def new_channel_twisted(self, pattern: str) -> Deferred[str]:
        """A fresh ``pattern`` + 12 CSPRNG letters name not in use."""
        try:
            self._require_attached()
            self._check_new_channel_pattern(pattern)
        except Exception:
            return fail()
        return self.operations.new_channel(pattern)

    def group_add_twisted(self, group: str, channel: str) -> Deferred[None]:
        """Add (or refresh) ``channel`` in ``group``."""
        try:
            self._require_attached()
            self.valid_group_name(group)
            self.valid_channel_name(channel)
        except Exception:
            return fail()
        return self.operations.group_add(group, channel)

    def group_discard_twisted(self, group: str, channel: str) -> Deferred[None]:
        """Remove ``channel`` from ``group`` (no-op if absent)."""
        try:
            self._require_attached()
            self.valid_group_name(group)
            self.valid_channel_name(channel)
        except Exception:
            return fail()
        return self.operations.group_discard(group, channel)

    def group_channels_twisted(self, group: str) -> Deferred[list[str]]:
        """The members of ``group``, lapsed ones dropped first."""
        try:
            self._require_attached()
            self.valid_group_name(group)
        except Exception:
            return fail()
        return self.operations.group_channels(group)

    def flush_twisted(self) -> Deferred[None]:
        """Delete every key under ``prefix`` and ``stats_prefix``."""
        try:
            self._require_attached()
        except Exception:
            return fail()
        return self.operations.flush()

    def global_statistics_twisted(self) -> Deferred[dict[str, float]]:
        """See :meth:`global_statistics`."""
        try:
            self._require_attached()
        except Exception:
            return fail()
        result: Deferred[dict[str, float]] = self.operations.global_statistics()
        return result

    def channel_statistics_twisted(self, channel: str) -> Deferred[dict[str, float]]:
        """See :meth:`channel_statistics`."""
        try:
            self._require_attached()
            self.valid_channel_name(channel)
        except Exception:
            return fail()
        return self.operations.channel_statistics(channel)

    # -- reactor face: capacity --------------------------------------------------

    def when_capacity_twisted(self, channel: str) -> Deferred[None]:
        """
        Fires once ``channel`` holds fewer messages than its capacity; see
        :class:`~chanserv.layers.redis.receive.CapacityWatch` for how.
        """
        try:
            self._require_attached()
            self.valid_channel_name(channel)
        except Exception:
            return fail()
        watch = self._watches.get(channel)
        if watch is None:
            watch = self._watches[channel] = CapacityWatch(
                self.operations, self.reactor, channel, self._forget_watch
            )
        return watch.add()

    def _forget_watch(self, watch: CapacityWatch) -> None:
        if self._watches.get(watch.channel) is watch:
            del self._watches[watch.channel]

    def _note_received(self, list_keys: Iterable[bytes]) -> None:
        # A receive made room: re-check the watches of those channels now.
        if not self._watches:
            return
        start = len(self.prefix)
        for key in list_keys:
            name = key.decode("utf-8")[start:]
            for channel, watch in list(self._watches.items()):
                if channel == name or (name.endswith("!") and channel.startswith(name)):
                    watch.check()
