"""
The Redis commands behind :class:`~chanserv.layers.redis.RedisChannelLayer`'s
reactor face: sends, groups, flush, statistics, and the pops and hand-backs
that :mod:`~chanserv.layers.redis.receive` drives.  A mixin, so that the
layer module stays about configuration and the two faces.

Reactor thread only.  Every method returns a Deferred; none raises.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import txredisapi
from twisted.internet.defer import Deferred, FirstError, fail, gatherResults, inlineCallbacks
from twisted.python.failure import Failure

from chanserv.exceptions import ChannelFull
from chanserv.layers.base import random_string
from chanserv.layers.redis.connection import RedisShard
from chanserv.layers.redis.receive import RawMessage
from chanserv.layers.redis.scripts import (
    CHANNEL_STATS,
    GROUP_ADD,
    GROUP_DISCARD,
    GROUP_MEMBERS,
    GROUP_SEND,
    LISTS_STATS,
    POP_MANY,
    REQUEUE,
    ROOM,
    SEND,
)
from chanserv.log import Logger

if TYPE_CHECKING:
    from chanserv.layers.redis.codec import MessageCodec

__all__ = ["RedisOperations"]

log = Logger()

STAT_MESSAGES_COUNT = "messages_count"
STAT_MESSAGES_PENDING = "messages_pending"
STAT_MESSAGES_MAX_AGE = "messages_max_age"
STAT_CHANNEL_FULL = "channel_full_count"
PER_SECOND = "_per_second"
GLOBAL_STATS_KEY = "#global#"  # not a valid channel name
CHANNEL_STATS_TTL = 3600
GLOBAL_STATS_TTL = 86400


def _unwrap(failure: Failure) -> Failure:
    if failure.check(FirstError):
        error: Any = failure.value
        sub: Failure = error.subFailure
        return sub
    return failure


def _is_full(error: Any) -> bool:
    # The script's error_reply("full"); Redis 7 sends it as "ERR full", and
    # txredisapi only strips an "ERR" prefix not followed by a space.
    text = str(error)
    return text == "full" or text.startswith(("ERR full", "full"))


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisOperations:
    """Mixin of :class:`~chanserv.layers.redis.RedisChannelLayer`."""

    # Provided by RedisChannelLayer and BaseChannelLayer.
    prefix: str
    stats_prefix: str
    expiry: float
    group_expiry: float
    capacity: int
    ring_size: int
    shards: list[RedisShard]
    reactor: Any
    _handbacks: int
    _lua_capacities: list[str | int] | None
    _codec: MessageCodec

    if TYPE_CHECKING:

        def get_capacity(self, channel: str) -> int: ...
        def unpack(self, data: bytes) -> dict[str, Any]: ...
        def when_capacity_twisted(self, channel: str) -> Deferred[None]: ...
        def non_local_name(self, name: str) -> str: ...
        def consistent_hash(self, value: str) -> int: ...
        def prepare(self, message: Any) -> bytes: ...
        def valid_channel_name(self, name: Any, receive: bool = False) -> bool: ...
        def valid_group_name(self, name: Any) -> bool: ...
        def _check_new_channel_pattern(self, pattern: Any) -> None: ...
        def _require_attached(self) -> None: ...

    # -- keys -------------------------------------------------------------------

    @property
    def _expiry_ms(self) -> int:
        return max(1, int(self.expiry * 1000))

    def _stat(self, name: str, stat: str) -> str:
        return "%s%s:%s" % (self.stats_prefix, name, stat)

    @property
    def _list_ttl_ms(self) -> int:
        # A list outlives its newest message by expiry + 1 s: an expired
        # reference left in it still shows that its channel missed a message.
        return 2 * self._expiry_ms + 1000

    def _group_key(self, group: str) -> str:
        return "%s:group:%s" % (self.prefix, group)

    def _groups_index_key(self, channel: str) -> str:
        return "%s:groups:%s" % (self.prefix, channel)

    def _shard_of(self, channel: str) -> RedisShard:
        """The shard of a channel's list (and of its group memberships)."""
        return self.shards[self.consistent_hash(self.non_local_name(channel))]

    # -- sends --------------------------------------------------------------------

    def send_twisted(self, channel: str, message: dict[str, Any]) -> Deferred[None]:
        """
        Send ``message`` to ``channel``: one EVALSHA doing the capacity check
        and the push atomically.  Fails with ChannelFull, MessageTooLarge,
        TypeError, RedisUnavailable or RedisTimeout.
        """
        try:
            self._require_attached()
            self.valid_channel_name(channel)
            payload = self._codec.encode(self.prepare(message))
        except Exception:
            return fail()
        return self.send_payload(channel, payload)

    def send_payload(self, channel: str, payload: bytes) -> Deferred[None]:
        """Send already encoded ``payload`` (a checked name) to ``channel``."""
        try:
            self._require_attached()
        except Exception:
            return fail()
        name = self.non_local_name(channel)
        body_key = self.prefix + uuid.uuid4().hex
        capacity = self.get_capacity(channel)
        keys = [
            body_key,
            self.prefix + name,
            self._stat(name, STAT_MESSAGES_COUNT),
            self._stat(name, STAT_CHANNEL_FULL),
            self._stat(GLOBAL_STATS_KEY, STAT_MESSAGES_COUNT),
            self._stat(GLOBAL_STATS_KEY, STAT_CHANNEL_FULL),
        ]
        ref = body_key + " " + channel if "!" in channel else body_key
        args = [
            payload,
            self._expiry_ms,
            capacity,
            ref,
            CHANNEL_STATS_TTL,
            GLOBAL_STATS_TTL,
            self.prefix,
            self._list_ttl_ms,
            "0" if "?" in name else "1",  # no counters per single-use channel
        ]

        def failed(failure: Failure) -> Any:
            failure.trap(txredisapi.ResponseError)
            if _is_full(failure.value):
                raise ChannelFull("Channel %r is full (capacity %d)" % (channel, capacity))
            return failure

        d = self._shard_of(channel).eval(SEND, keys, args)
        return d.addCallbacks(lambda _: None, failed)

    def send_group_twisted(self, group: str, message: dict[str, Any]) -> Deferred[None]:
        """
        Send ``message`` to every member of ``group`` with room (full ones
        are skipped: never ChannelFull).  One script per shard.
        """
        try:
            self._require_attached()
            self.valid_group_name(group)
            payload = self._codec.encode(self.prepare(message))
        except Exception:
            return fail()
        return self.send_group_payload(group, payload)

    def send_group_payload(self, group: str, payload: bytes) -> Deferred[None]:
        """:meth:`send_group_twisted` with an encoded ``payload``."""
        try:
            self._require_attached()
        except Exception:
            return fail()
        group_key = self._group_key(group)
        sends = [self._send_group_on(shard, group_key, payload) for shard in self.shards]
        return gatherResults(sends, consumeErrors=True).addCallbacks(lambda _: None, _unwrap)

    def _send_group_on(self, shard: RedisShard, group_key: str, payload: bytes) -> Deferred[Any]:
        keys = [
            group_key,
            self._stat(GLOBAL_STATS_KEY, STAT_MESSAGES_COUNT),
            self._stat(GLOBAL_STATS_KEY, STAT_CHANNEL_FULL),
        ]
        head = [
            payload,
            self._expiry_ms,
            float(self.group_expiry),
            self.prefix + uuid.uuid4().hex,
            self.prefix,
            self.stats_prefix,
            self.capacity,
            CHANNEL_STATS_TTL,
            GLOBAL_STATS_TTL,
            self._list_ttl_ms,
        ]
        if self._lua_capacities is not None:
            return shard.eval(GROUP_SEND, keys, [*head, "auto", *self._lua_capacities])

        # A channel_capacity regex Lua cannot evaluate: read the members,
        # resolve their capacities here, then send (two round trips).
        def given(members: list[bytes]) -> Any:
            if not members:
                return None
            pairs: list[Any] = []
            for member in members:
                name = member.decode("utf-8")
                pairs += [name, self.get_capacity(name)]
            return shard.eval(GROUP_SEND, keys, [*head, "given", *pairs])

        d = shard.eval(GROUP_MEMBERS, [group_key], [float(self.group_expiry), self.prefix])
        return d.addCallback(given)

    # -- groups and names ---------------------------------------------------------------

    def new_channel_twisted(self, pattern: str) -> Deferred[str]:
        """A fresh ``pattern`` + 12 CSPRNG letters name not in use on its shard."""
        try:
            self._require_attached()
            self._check_new_channel_pattern(pattern)
        except Exception:
            return fail()

        def attempt(n: int) -> Deferred[str]:
            name = pattern + random_string(12)
            shard = self.shards[self.consistent_hash(name)]
            d = shard.execute("EXISTS", self.prefix + name)
            return d.addCallback(lambda exists: attempt(n + 1) if exists and n < 20 else name)

        return attempt(0)

    def group_add_twisted(self, group: str, channel: str) -> Deferred[None]:
        """Add (or refresh) ``channel`` in ``group`` for ``group_expiry`` seconds."""
        try:
            self._require_attached()
            self.valid_group_name(group)
            self.valid_channel_name(channel)
        except Exception:
            return fail()
        expiry_ms = max(1, int(self.group_expiry * 1000))
        keys = [self._group_key(group), self._groups_index_key(channel)]
        d = self._shard_of(channel).eval(GROUP_ADD, keys, [channel, expiry_ms, group])
        return d.addCallback(lambda _: None)

    def group_discard_twisted(self, group: str, channel: str) -> Deferred[None]:
        """Remove ``channel`` from ``group`` (no-op if absent)."""
        try:
            self._require_attached()
            self.valid_group_name(group)
            self.valid_channel_name(channel)
        except Exception:
            return fail()
        keys = [self._group_key(group), self._groups_index_key(channel)]
        d = self._shard_of(channel).eval(GROUP_DISCARD, keys, [channel, group])
        return d.addCallback(lambda _: None)

    def group_channels_twisted(self, group: str) -> Deferred[list[str]]:
        """The members of ``group`` on every shard, expired ones dropped first."""
        try:
            self._require_attached()
            self.valid_group_name(group)
        except Exception:
            return fail()
        key = self._group_key(group)
        args = [float(self.group_expiry), self.prefix]
        reads = [shard.eval(GROUP_MEMBERS, [key], args) for shard in self.shards]

        def merge(results: list[list[bytes]]) -> list[str]:
            names = [m.decode("utf-8") for members in results for m in members or []]
            return list(dict.fromkeys(names))

        return gatherResults(reads, consumeErrors=True).addCallbacks(merge, _unwrap)

    # -- flush and statistics -------------------------------------------------------------

    def flush_twisted(self) -> Deferred[None]:
        """Delete every key under ``prefix`` and ``stats_prefix`` (SCAN + DEL)."""
        try:
            self._require_attached()
        except Exception:
            return fail()
        flushes = [self._flush_shard(shard) for shard in self.shards]
        return gatherResults(flushes, consumeErrors=True).addCallbacks(lambda _: None, _unwrap)

    @inlineCallbacks
    def _flush_shard(self, shard: RedisShard) -> Any:
        for prefix in (self.prefix, self.stats_prefix):
            pattern = _glob_escape(prefix) + "*"
            cursor: Any = b"0"
            while True:
                cursor, keys = yield shard.execute("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
                if keys:
                    yield shard.execute("DEL", *keys)
                if cursor in (b"0", "0", 0):
                    break

    def _stats(self, results: list[list[int]], pending: int, pttl: int) -> dict[str, float]:
        # results: CHANNEL_STATS replies; pending, pttl: from lists.
        ttls = [r[3] for r in results if r[3] >= 0] + ([pttl] if pttl >= 0 else [])
        return {
            STAT_MESSAGES_COUNT: sum(r[0] for r in results),
            STAT_MESSAGES_COUNT + PER_SECOND: sum(r[4] for r in results),
            STAT_MESSAGES_PENDING: pending + sum(r[2] for r in results),
            STAT_MESSAGES_MAX_AGE: max(0.0, self.expiry - min(ttls) / 1000.0) if ttls else 0,
            STAT_CHANNEL_FULL: sum(r[1] for r in results),
            STAT_CHANNEL_FULL + PER_SECOND: sum(r[5] for r in results),
        }

    def global_statistics_twisted(self) -> Deferred[dict[str, float]]:
        """
        The counters (and their last whole second) summed over the shards,
        and the messages pending in every list and the age of the oldest
        (a SCAN of the layer's keys: meant for occasional monitoring).
        """
        try:
            self._require_attached()
        except Exception:
            return fail()
        return self._global_statistics()

    @inlineCallbacks
    def _global_statistics(self) -> Any:
        keys = [
            self.prefix + GLOBAL_STATS_KEY,
            self._stat(GLOBAL_STATS_KEY, STAT_MESSAGES_COUNT),
            self._stat(GLOBAL_STATS_KEY, STAT_CHANNEL_FULL),
        ]
        results = []
        pending, pttl = 0, -2
        for shard in self.shards:
            results.append((yield shard.eval(CHANNEL_STATS, keys, [])))
            pattern = _glob_escape(self.prefix) + "*"
            cursor: Any = b"0"
            while True:
                cursor, batch = yield shard.execute("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
                if batch:
                    more, left = yield shard.eval(LISTS_STATS, batch, [])
                    pending += more
                    if left >= 0 and (pttl < 0 or left < pttl):
                        pttl = left
                if cursor in (b"0", "0", 0):
                    break
        return self._stats(results, pending, pttl)

    def channel_statistics_twisted(self, channel: str) -> Deferred[dict[str, float]]:
        """
        The counters of ``channel`` (its prefix, for a process-local name;
        none are kept for single-use ``?`` channels, so they count 0), its
        pending messages and the age of the oldest.
        """
        try:
            self._require_attached()
            self.valid_channel_name(channel)
        except Exception:
            return fail()
        name = self.non_local_name(channel)
        keys = [
            self.prefix + name,
            self._stat(name, STAT_MESSAGES_COUNT),
            self._stat(name, STAT_CHANNEL_FULL),
        ]
        d = self._shard_of(name).eval(CHANNEL_STATS, keys, [])
        return d.addCallback(lambda result: self._stats([result], 0, -2))

    # -- receiving (driven by redis_receive) ------------------------------------------------

    def pop_many(
        self,
        shard: int,
        keys: Sequence[str],
        limit: int,
        first: tuple[bytes, bytes] | None,
    ) -> Deferred[list[RawMessage]]:
        """Up to ``limit`` messages from ``keys`` on ``shard`` (and ``first``)."""
        args: list[Any] = [limit, self.prefix]
        if first is not None:
            args += [first[0], first[1]]
        d = self.shards[shard].eval(POP_MANY, keys, args)

        def split(flat: list[bytes]) -> list[RawMessage]:
            flat = flat or []
            return [
                RawMessage(shard, flat[i], flat[i + 1], flat[i + 2])
                for i in range(0, len(flat) - 2, 3)
            ]

        return d.addCallback(split)

    def push_back(self, shard: int, key: bytes, ref: bytes) -> None:
        """Put a reference a BLPOP took back at the head of its list."""
        target = self.shards[shard]
        pushed = gatherResults(
            [
                target.execute("LPUSH", key, ref),
                target.execute("PEXPIRE", key, self._list_ttl_ms),
            ],
            consumeErrors=True,
        )
        self._handbacks += 1
        pushed.addErrback(self._hand_back_failed, key)
        pushed.addBoth(self._hand_back_done)

    def requeue(self, shard: int, items: list[RawMessage]) -> None:
        """Put messages a receive took (bodies and all) back at the heads of their lists."""
        if not items:
            return
        args: list[Any] = [self._expiry_ms, self._list_ttl_ms]
        for item in items:
            new_key = (self.prefix + uuid.uuid4().hex).encode("utf-8")
            _, space, full_name = item.ref.partition(b" ")
            new_ref = (
                new_key + b" " + full_name if item.list_key.endswith(b"!") and space else new_key
            )
            args += [new_key, new_ref, item.body]
        d = self.shards[shard].eval(REQUEUE, [item.list_key for item in items], args)
        self._handbacks += 1
        d.addErrback(self._hand_back_failed, items[0].list_key)
        d.addBoth(self._hand_back_done)

    def _hand_back_done(self, _: Any) -> None:
        self._handbacks -= 1

    @staticmethod
    def _hand_back_failed(failure: Failure, key: bytes) -> None:
        log.error(
            "A message taken off {key} for a receive nobody waits for any more could "
            "not be put back, and is lost: {error}",
            key=key.decode("utf-8", "replace"),
            error=_unwrap(failure).getErrorMessage(),
        )

    def has_room(self, name: str) -> Deferred[bool]:
        """Whether non-local channel ``name`` holds fewer than its capacity."""
        d = self._shard_of(name).eval(ROOM, [self.prefix + name], [self.prefix])
        return d.addCallback(lambda length: length < self.get_capacity(name))

    # -- decoding and waiting ------------------------------------------------------

    def decode_items(self, items: list[RawMessage]) -> list[tuple[str, dict[str, Any]]]:
        """``(channel, message)`` pairs; undecodable messages are logged, dropped."""
        result = []
        for item in items:
            list_key = item.list_key.decode("utf-8")
            channel = list_key[len(self.prefix) :]
            if channel.endswith("!"):
                _, _, full = item.ref.decode("utf-8").partition(" ")
                channel = full or channel
            try:
                message = self.unpack(self._codec.decode(item.body))
            except Exception as e:
                log.error(
                    "Dropped a message on {channel} that could not be decoded: {error}",
                    channel=channel,
                    error=e,
                )
                continue
            result.append((channel, message))
        return result

    def _send_wait(self, channel: str, payload: bytes, timeout: float) -> Deferred[None]:
        deadline = self.reactor.seconds() + timeout

        def attempt() -> Deferred[None]:
            return self.send_payload(channel, payload).addErrback(full)

        def full(failure: Failure) -> Any:
            failure.trap(ChannelFull)
            remaining = deadline - self.reactor.seconds()
            if remaining <= 0:
                return failure
            waiting = self.when_capacity_twisted(channel)
            waiting.addTimeout(remaining, self.reactor)
            return waiting.addCallbacks(lambda _: attempt(), lambda _: failure)

        return attempt()
