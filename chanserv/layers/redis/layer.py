"""
The Redis channel layer: ``asgi_redis.RedisChannelLayer``'s configuration
and key layout, on txredisapi, for sites that run interface servers and
workers as separate processes (and on several machines).

What differs from asgi_redis 1.4.3, and why:

- One long-lived set of connections per shard, owned by a service that
  starts and stops with :meth:`~RedisChannelLayer.attach_reactor` /
  :meth:`~RedisChannelLayer.detach_reactor` (asgi_redis opened a pool per
  Twisted receive); blocking pops on their own connections, timed out even
  when the server is frozen; fail-fast with :class:`RedisUnavailable` while
  Redis is down and reconnection with a capped back-off
  (:mod:`~chanserv.layers.redis.connection`).
- A receive takes the body off Redis in the same script that pops the
  reference (the Twisted path of asgi_redis never deleted bodies), and can
  take a batch (:mod:`~chanserv.layers.redis.receive`).
- ``send_group`` is one script per shard, whatever the group's size: it
  drops expired members, then pushes one shared (read-counted) body to every
  member with room, skipping full ones -- not a loop of sends in Python.
  Group memberships live on the shard of the *member's* list, so each
  shard's script only touches its own keys; ``send_group`` and
  ``group_channels`` run on every shard (in parallel).
- A process-local channel's full name travels in the list reference, not
  in the body, so one body serves a whole group.
- The synchronous face works in any process: without an attached reactor
  it starts the global one in a daemon thread (:mod:`.sync`).

- Every channel lives on its hashed shard, normal channels too (asgi_redis
  sent those round-robin): capacity is then exact, a channel's messages
  stay in order, and a receive blocks only on the shards of its channels.
  The price: one channel's traffic is served by one Redis server.
- A channel whose message expired unread leaves all its groups, as the
  ASGI spec recommends (see :mod:`.scripts`).

Sharding is asgi_redis's hash: ``crc32`` of the (non-local) name over 4096
slots, split evenly between the hosts.  Changing ``hosts`` loses data.

Requires Redis >= 5 (>= 6 for a fractional ``blpop_timeout``).
"""

from __future__ import annotations

import binascii
import itertools
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, fail, gatherResults, succeed

from chanserv.layers.base import BaseChannelLayer, CapacityPattern, LocalReceiver, Prepared
from chanserv.layers.redis.codec import MessageCodec
from chanserv.layers.redis.config import (
    compile_capacities,
    connection_options,
    lua_capacities,
    parse_hosts,
)
from chanserv.layers.redis.connection import RedisShard
from chanserv.layers.redis.errors import RedisTimeout, RedisUnavailable
from chanserv.layers.redis.operations import RedisOperations
from chanserv.layers.redis.receive import (
    CapacityWatch,
    LocalReceiverLoop,
    RawMessage,
    ReceiveOperation,
)
from chanserv.layers.redis.scripts import ALL_SCRIPTS
from chanserv.layers.redis.sync import call_in_reactor, check_not_reactor_thread, running_reactor
from chanserv.log import Logger

__all__ = ["RedisChannelLayer", "RedisTimeout", "RedisUnavailable", "parse_hosts"]

log = Logger()


class RedisChannelLayer(RedisOperations, BaseChannelLayer):
    """
    A channel layer in one or more Redis servers.

    :param hosts: ``redis://`` URLs (with password and database) or
        ``(host, port)`` pairs; one shard each.  A bare string raises
        ValueError.
    :param prefix: prefix of every key (``"asgi:"``); no whitespace.
    :param expiry, group_expiry, capacity, channel_capacity, max_message_size:
        see :class:`~chanserv.layers.base.BaseChannelLayer`.
    :param symmetric_encryption_keys: a list of keys: messages are stored
        encrypted (Fernet, first key encrypts, all decrypt).  Needs
        ``cryptography``.
    :param stats_prefix: prefix of the statistics counters.
    :param connection_kwargs: ``socket_timeout`` (seconds for any reply,
        default 5), ``socket_connect_timeout`` (5), ``password``,
        ``username``, ``db``, ``ssl`` (for pairs in ``hosts``),
        ``reconnect_max_delay`` (5), ``max_blocking_connections`` (64 per
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
        super().__init__(
            expiry=expiry,
            group_expiry=group_expiry,
            capacity=capacity,
            channel_capacity=channel_capacity,
            max_message_size=max_message_size,
        )
        for name, value in (("prefix", prefix), ("stats_prefix", stats_prefix)):
            if not isinstance(value, str) or not value or re.search(r"\s", value):
                raise ValueError(
                    "%s must be a non-empty str without spaces, not %r" % (name, value)
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
        self._lua_capacities = lua_capacities(self.channel_capacity)
        self.reactor: Any = None
        self.shards: list[RedisShard] = []
        self._service: MultiService | None = None
        self._auto_attached = False
        self._detaching = False
        self._ops: set[ReceiveOperation] = set()
        self._local: dict[str, LocalReceiverLoop] = {}
        self._watches: dict[str, CapacityWatch] = {}
        self._receive_counter = itertools.count()
        self._handbacks = 0
        self._attach_lock = threading.Lock()

    @staticmethod
    def _compile_capacities(channel_capacity: Any) -> list[Any]:
        return compile_capacities(channel_capacity)

    def __repr__(self) -> str:
        return "<%s hosts=%s prefix=%r>" % (
            type(self).__name__,
            [str(a) for a in self.hosts],
            self.prefix,
        )

    # -- sharding -------------------------------------------------------------

    def consistent_hash(self, value: str) -> int:
        """
        The shard index of a channel's list (pass the non-local name) and
        of its group memberships: asgi_redis's hash.
        """
        bigval = binascii.crc32(value.encode("utf-8")) & 0xFFF
        return int(bigval / (4096 / self.ring_size))

    def next_receive_index(self) -> int:
        return next(self._receive_counter)

    def _plan(self, names: Sequence[str]) -> dict[int, list[str]]:
        # shard index -> list keys to read for a receive on ``names``.
        plan: dict[int, list[str]] = {}
        for name in names:
            plan.setdefault(self.consistent_hash(name), []).append(self.prefix + name)
        return plan

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

    def send_prepared(self, channel: str, data: Prepared) -> None:
        """
        Send prepared ``data`` to ``channel``; returns once Redis has it.
        Encryption happens in the calling thread.

        :raises ChannelFull: the channel is at capacity (on every shard
            that is up, for a normal channel).
        :raises RedisUnavailable: Redis is unreachable; RedisTimeout: it did
            not answer in time (the message may then have been sent).
        """
        self.valid_channel_name(channel)
        self._sync(self.send_payload, channel, self._codec.encode(data))

    def send_prepared_wait(self, channel: str, data: Prepared, timeout: float) -> None:
        """:meth:`send_prepared`, waiting up to ``timeout`` s for room if full."""
        self.valid_channel_name(channel)
        payload = self._codec.encode(data)
        self._sync(self._send_wait, channel, payload, timeout, timeout=timeout + self.sync_timeout)

    def receive(
        self, channels: Sequence[str], block: bool = False
    ) -> tuple[str, dict[str, Any]] | tuple[None, None]:
        """
        One message from ``channels``, or ``(None, None)``; ``block=True``
        waits up to ``blpop_timeout`` seconds.  Decryption and unpacking
        happen in the calling thread.

        :raises TypeError: invalid names; RedisUnavailable, RedisTimeout.
        """
        names = self._receive_names(channels)
        if not names:
            return None, None
        raw = self._sync(self._receive_raw, names, block, on_abandoned=self._hand_back)
        if not raw:
            return None, None
        decoded = self.decode_items(raw)
        return decoded[0] if decoded else (None, None)

    def new_channel(self, pattern: str) -> str:
        """``pattern`` (ending in ``?``) plus 12 random letters, unused in Redis."""
        self._check_new_channel_pattern(pattern)
        result: str = self._sync(self.new_channel_twisted, pattern)
        return result

    def group_add(self, group: str, channel: str) -> None:
        self.valid_group_name(group)
        self.valid_channel_name(channel)
        self._sync(self.group_add_twisted, group, channel)

    def group_discard(self, group: str, channel: str) -> None:
        self.valid_group_name(group)
        self.valid_channel_name(channel)
        self._sync(self.group_discard_twisted, group, channel)

    def group_channels(self, group: str) -> list[str]:
        """The members, expired ones dropped first."""
        self.valid_group_name(group)
        result: list[str] = self._sync(self.group_channels_twisted, group)
        return result

    def send_group_prepared(self, group: str, data: Prepared) -> None:
        """Send to every member with room; one script per shard."""
        self.valid_group_name(group)
        self._sync(self.send_group_payload, group, self._codec.encode(data))

    def flush(self) -> None:
        """Delete every key under ``prefix`` and ``stats_prefix`` on every shard."""
        self._sync(self.flush_twisted, timeout=max(60.0, self.sync_timeout))

    def global_statistics(self) -> dict[str, float]:
        result: dict[str, float] = self._sync(self.global_statistics_twisted)
        return result

    def channel_statistics(self, channel: str) -> dict[str, float]:
        self.valid_channel_name(channel)
        result: dict[str, float] = self._sync(self.channel_statistics_twisted, channel)
        return result

    # -- reactor face: attachment ------------------------------------------------

    def attach_reactor(self, reactor: Any) -> None:
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
        for loop in list(self._local.values()):
            loop.stop()
        self._local.clear()
        for op in list(self._ops):
            op.deferred.cancel()
        for watch in list(self._watches.values()):
            watch.stop()

        def detached(result: Any) -> Any:
            self.reactor = None
            self.shards = []
            self._service = None
            self._detaching = False
            self._auto_attached = False
            return result

        d: Deferred[Any] = service.stopService()
        return d.addBoth(detached).addCallback(lambda _: None)

    def quiescent_twisted(self) -> Deferred[bool]:
        """
        True when nothing is moving: no receive between steps, no message
        being handed back, and every receive in flight is blocked in BLPOP
        on the server (checked with ``CLIENT LIST``, so no reply is on its
        way).  For tests and diagnostics.  Reactor thread.
        """
        if self._handbacks:
            return succeed(False)
        blocked: dict[int, list[int]] = {}
        for op in self._ops:
            clients = op.blocked_clients()
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
        self, names: list[str], limit: int, block: bool, loop: bool, decode: Any
    ) -> Deferred[list[Any]]:
        op = ReceiveOperation(self, self._plan(names), limit, block, loop, decode)
        self._ops.add(op)

        def done(result: Any) -> Any:
            self._ops.discard(op)
            return result

        op.deferred.addBoth(done)
        return op.start()

    def receive_many_twisted(
        self, channels: Sequence[str], limit: int
    ) -> Deferred[list[tuple[str, dict[str, Any]]]]:
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
        return self._start_receive(names, limit, True, True, self.decode_items)

    def _receive_raw(self, names: list[str], block: bool) -> Deferred[list[Any]]:
        # Reactor thread, for the synchronous receive: raw, decoded by the caller.
        self._require_attached()
        return self._start_receive(names, 1, block, False, list)

    def _hand_back(self, items: list[RawMessage]) -> None:
        # Reactor thread: a synchronous receive gave up; put its message back.
        for item in items:
            self.requeue(item.shard, [item])

    def add_local_receiver(self, prefix: str, callback: LocalReceiver) -> None:
        """
        Read ``prefix``'s Redis list (one per process) forever and hand
        every batch of messages to ``callback(batch)`` on the reactor thread;
        messages already queued come first.  Survives Redis outages.

        :raises TypeError: ``prefix`` is not a valid name ending with ``!``.
        :raises ValueError: ``prefix`` has a receiver already.
        """
        self._require_attached()
        self.valid_channel_name(prefix, receive=True)
        if not prefix.endswith("!"):
            raise TypeError("A local receiver's prefix ends with '!', not %r" % (prefix,))
        if prefix in self._local:
            raise ValueError("%r has a local receiver already" % (prefix,))
        loop = self._local[prefix] = LocalReceiverLoop(self, prefix, callback)
        loop.start()

    def remove_local_receiver(self, prefix: str) -> None:
        """Stop reading ``prefix``'s list (no-op without a receiver)."""
        loop = self._local.pop(prefix, None)
        if loop is not None:
            loop.stop()

    # -- reactor face: capacity --------------------------------------------------

    def when_capacity_twisted(self, channel: str) -> Deferred[None]:
        """
        Fires once ``channel`` (its shard, or any shard for a normal
        channel) holds fewer messages than its capacity; see
        :class:`~chanserv.layers.redis.receive.CapacityWatch` for how.
        """
        try:
            self._require_attached()
            self.valid_channel_name(channel)
        except Exception:
            return fail()
        name = self.non_local_name(channel)
        watch = self._watches.get(name)
        if watch is None:
            watch = self._watches[name] = CapacityWatch(self, name)
        return watch.add()

    def forget_watch(self, watch: CapacityWatch) -> None:
        if self._watches.get(watch.channel) is watch:
            del self._watches[watch.channel]

    def note_received(self, list_keys: Iterable[bytes]) -> None:
        # A receive made room: re-check the watches of those channels now.
        if not self._watches:
            return
        start = len(self.prefix)
        for key in list_keys:
            watch = self._watches.get(key.decode("utf-8")[start:])
            if watch is not None:
                watch.check()
