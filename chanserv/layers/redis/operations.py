"""
The Redis commands of the Redis channel layer (sends, groups, flush,
statistics, heartbeats, pops and hand-backs), on names already checked and
payloads already encoded.  Reactor thread only; every method returns a
Deferred or logs its own failures, and none raises.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable, Sequence
from time import perf_counter
from typing import Any, NamedTuple

import txredisapi
from twisted.internet.defer import Deferred, FirstError, gatherResults, inlineCallbacks, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from chanserv.exceptions import ChannelBlocked, ChannelFull
from chanserv.interfaces import SendSink
from chanserv.layers.base import random_string
from chanserv.layers.redis.codec import MessageCodec
from chanserv.layers.redis.config import consistent_hash
from chanserv.layers.redis.connection import RedisShard
from chanserv.layers.redis.errors import RedisUnavailable
from chanserv.layers.redis.protocol import RedisArg
from chanserv.layers.redis.scripts import (
    BLOCK,
    CHANNEL_STATS,
    CHANNEL_STATS_TTL,
    COUNT_FULL,
    GLOBAL_STATS_KEY,
    GLOBAL_STATS_TTL,
    GROUP_ADD,
    GROUP_DISCARD,
    GROUP_MEMBERS,
    GROUP_SEND,
    HEARTBEAT,
    LEAVE_ALL,
    LISTS_STATS,
    POP_MANY,
    REQUEUE,
    ROOM,
    SEND,
    SEND_MANY,
    STAT_EXPIRED,
    UNREGISTER,
)
from chanserv.log import Logger
from chanserv.stats import Histogram
from chanserv.types import Content, Received

__all__ = ["GroupSendResult", "RawMessage", "RedisOperations"]

log = Logger()

STAT_MESSAGES_COUNT = "messages_count"
STAT_MESSAGES_PENDING = "messages_pending"
STAT_MESSAGES_MAX_AGE = "messages_max_age"
STAT_CHANNEL_FULL = "channel_full_count"
PER_SECOND = "_per_second"
#: Most messages in one send_many script call.
SEND_BATCH = 256


class RawMessage(NamedTuple):
    """
    A message taken off Redis, not yet decoded.  ``members`` is empty for a
    message sent to one channel, else the local channels a group send
    reached in this process.
    """

    shard: int
    list_key: bytes
    ref: bytes
    body: bytes
    members: tuple[str, ...] = ()


class GroupSendResult(NamedTuple):
    """What one shard's group send did."""

    sent: int  # references pushed to non-local members
    full: int  # non-local members skipped for being full
    processes: int  # inboxes that got the group reference
    deliveries: int  # local members those processes will deliver to


def unwrap(failure: Failure) -> Failure:
    """The first failure inside a ``gatherResults`` FirstError."""
    if failure.check(FirstError):
        error: Any = failure.value
        sub: Failure = error.subFailure
        return sub
    return failure


def _is_error(error: Any, reply: str) -> bool:
    # A script's error_reply(reply); Redis 7 sends "full" as "ERR full", and
    # txredisapi only strips an "ERR" prefix not followed by a space.
    text = str(error)
    return text == reply or text.startswith(("ERR " + reply, reply))


def _blocked(channel: str) -> ChannelBlocked:
    return ChannelBlocked("Channel %r is blocked by its interface server" % (channel,))


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _non_local(name: str) -> str:
    bang = name.find("!")
    return name if bang < 0 else name[: bang + 1]


class RedisOperations:
    """
    The layer's commands over ``shards`` (set by the layer when it attaches
    to a reactor; empty otherwise).

    :param prefix, stats_prefix: key prefixes.
    :param expiry, group_expiry: seconds.
    :param get_capacity: a channel's capacity.
    :param lua_capacities: ``channel_capacity`` as (Lua pattern, capacity)
        pairs, or None when a regex needs Python to resolve it.
    :param default_capacity: ``capacity``.
    :param codec: decrypts stored bodies.
    :param unpack: turns prepared bytes into a message dict.
    """

    def __init__(
        self,
        prefix: str,
        stats_prefix: str,
        expiry: float,
        group_expiry: float,
        default_capacity: int,
        get_capacity: Callable[[str], int],
        lua_capacities: list[str | int] | None,
        codec: MessageCodec,
        unpack: Callable[[bytes], Content],
    ) -> None:
        self.prefix = prefix
        self.stats_prefix = stats_prefix
        self.expiry = expiry
        self.group_expiry = group_expiry
        self.default_capacity = default_capacity
        self.get_capacity = get_capacity
        self.lua_capacities = lua_capacities
        self.codec = codec
        self.unpack = unpack
        self.shards: list[RedisShard] = []
        self.reactor: Any = None
        self._outbox: dict[int, list[tuple[Any, ...]]] = {}
        self._flush_scheduled = False
        #: Messages taken off Redis and being put back right now.
        self.handbacks = 0
        #: Messages this process's script calls found expired unread and
        #: dropped (each is found by one call only, so the sum over the
        #: processes is the cluster's; Redis keeps the ``expired_count``
        #: statistics too).
        self.expired = 0
        #: Messages taken off Redis and dropped: undecodable ones, and those
        #: a cancelled receive could not put back.
        self.undecodable = 0
        self.lost = 0
        self._receive_counter = 0
        # Body keys: 64 random bits for this process, then a counter, so no
        # two processes (nor two messages) share one; cheaper than a UUID
        # per message.
        self._body_key_base = "%s%s." % (prefix, secrets.token_hex(8))
        self._body_keys = itertools.count()
        #: Seconds each send of this process took, to Redis and back
        #: (reactor thread).
        self.send_seconds = Histogram()

    # -- keys -------------------------------------------------------------------

    @property
    def expiry_ms(self) -> int:
        return max(1, int(self.expiry * 1000))

    @property
    def list_ttl_ms(self) -> int:
        # A list outlives its newest message by expiry + 1 s: an expired
        # reference left in it still shows that its channel missed a message.
        return 2 * self.expiry_ms + 1000

    def stat_key(self, name: str, stat: str) -> str:
        return "%s%s:%s" % (self.stats_prefix, name, stat)

    def groups_index_key(self, channel: str) -> str:
        return "%s:groups:%s" % (self.prefix, channel)

    def count_key(self, process: str) -> str:
        return "%s:count:%s" % (self.prefix, process)

    def new_body_key(self) -> str:
        """A key no other message's body has (no space, no ``!``)."""
        return "%s%x" % (self._body_key_base, next(self._body_keys))

    def shard_index(self, channel: str) -> int:
        """The shard of a channel's list (its process's inbox for a local name)."""
        return consistent_hash(_non_local(channel), len(self.shards))

    def shard_of(self, channel: str) -> RedisShard:
        return self.shards[self.shard_index(channel)]

    def plan(self, names: Sequence[str]) -> dict[int, list[str]]:
        """Shard index -> list keys to read for a receive on ``names``."""
        plan: dict[int, list[str]] = {}
        ring = len(self.shards)
        for name in names:
            plan.setdefault(consistent_hash(name, ring), []).append(self.prefix + name)
        return plan

    def next_receive_index(self) -> int:
        """A rotating start, so receives spread over the shards."""
        self._receive_counter += 1
        return self._receive_counter

    # -- sends --------------------------------------------------------------------

    def send(self, channel: str, payload: bytes) -> Deferred[None]:
        """
        Send encoded ``payload`` to ``channel`` (a checked name), atomically
        checking its capacity (per channel, also for a process-local one).
        Fails with ChannelFull.

        Sends made in one reactor turn travel together: one ``send_many``
        script per shard (per SEND_BATCH messages, each call after the one
        before; a channel refused in one is refused in the rest untried), in
        the order they were made, when the turn ends (one ``callLater(0)``
        per batch, not per message).
        """
        if self.reactor is None:
            return self.send_one(channel, payload)
        d: Deferred[None] = Deferred()
        self._enqueue(channel, payload, d)
        return d

    def send_to(self, channel: str, payload: bytes, sink: SendSink) -> None:
        """
        :meth:`send`, its outcome given to ``sink`` instead of a new
        Deferred: the hand-off's many sends need no Deferred each.
        """
        if self.reactor is None:
            self.send_one(channel, payload).addCallbacks(sink.callback, sink.errback)
            return
        self._enqueue(channel, payload, sink)

    def _enqueue(self, channel: str, payload: bytes, outcome: SendSink) -> None:
        index = self.shard_index(channel)
        self._outbox.setdefault(index, []).append((channel, payload, outcome))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.reactor.callLater(0, self._flush_outbox)

    def _flush_outbox(self) -> None:
        self._flush_scheduled = False
        outbox, self._outbox = self._outbox, {}
        for index, entries in outbox.items():
            self._send_batches(index, entries, 0, {})

    def _send_batches(
        self,
        index: int,
        entries: list[tuple[str, bytes, Deferred[None]]],
        start: int,
        refused: dict[str, int],
    ) -> None:
        # One script call per SEND_BATCH messages, each once the one before
        # has answered: a channel refused (full or blocked) in one is refused
        # in the next without being tried, so a later message to it never
        # gets in ahead of an earlier one that has to wait for room.
        batch = entries[start : start + SEND_BATCH]
        if refused:
            tried = []
            for entry in batch:
                outcome = refused.get(entry[0])
                if outcome is None:
                    tried.append(entry)
                else:
                    entry[2].errback(self._refusal(entry[0], outcome))
            batch = tried
        following = start + SEND_BATCH
        if following >= len(entries):
            if batch:
                self._send_batch(index, batch, refused)
            return
        answered = self._send_batch(index, batch, refused) if batch else succeed(None)
        answered.addCallback(lambda _: self._send_batches(index, entries, following, refused))
        answered.addErrback(lambda f: log.failure("Sending a batch to Redis", f))

    def _refusal(self, channel: str, outcome: int) -> ChannelFull:
        if outcome == 2:
            return _blocked(channel)
        return ChannelFull(
            "Channel %r is full (capacity %d)" % (channel, self.get_capacity(channel))
        )

    def _send_batch(
        self,
        index: int,
        entries: list[tuple[str, bytes, Deferred[None]]],
        refused: dict[str, int],
    ) -> Deferred[None]:
        """
        One ``send_many`` call; fires (with None) once every entry's
        Deferred has fired, the channels it refused noted in ``refused``.
        """
        # Two arguments per message, three when some channel may have a
        # capacity of its own: this is every message's path.
        args: list[Any] = [
            self.prefix,
            self.stats_prefix,
            self.expiry_ms,
            self.list_ttl_ms,
            CHANNEL_STATS_TTL,
            GLOBAL_STATS_TTL,
        ]
        if self.lua_capacities == []:
            args.append(self.default_capacity)
            for channel, payload, _ in entries:
                args += (channel, payload)
        else:
            args.append("")
            get_capacity = self.get_capacity
            for channel, payload, _ in entries:
                args += (channel, payload, get_capacity(channel))
        try:
            shard = self.shards[index]
        except IndexError:
            sent: Deferred[Any] = Deferred()
            sent.errback(RedisUnavailable("The Redis layer is not attached to a reactor"))
        else:
            sent = shard.eval(SEND_MANY, [], args)
        started = perf_counter()

        def done(results: list[Any]) -> None:
            self.send_seconds.observe_many(perf_counter() - started, len(entries))
            if len(results) > len(entries):
                # The script's last reply: the messages it found expired.
                self.expired += int(results.pop())
            for (channel, _, d), outcome in zip(entries, results, strict=True):
                outcome = int(outcome)
                if outcome == 1:
                    d.callback(None)
                else:
                    refused.setdefault(channel, outcome)
                    d.errback(self._refusal(channel, outcome))

        def failed(failure: Failure) -> None:
            for _, _, d in entries:
                d.errback(failure)

        sent.addCallbacks(done, failed)
        sent.addErrback(lambda f: log.failure("Sending a batch to Redis", f))
        return sent

    def send_one(self, channel: str, payload: bytes) -> Deferred[None]:
        """:meth:`send` as a script call of its own, right now."""
        name = _non_local(channel)
        local = name != channel
        capacity = self.get_capacity(channel)
        stat_name = channel if local else name
        keys = [
            self.prefix + name,
            self.stat_key(stat_name, STAT_MESSAGES_COUNT),
            self.stat_key(stat_name, STAT_CHANNEL_FULL),
            self.stat_key(GLOBAL_STATS_KEY, STAT_MESSAGES_COUNT),
            self.stat_key(GLOBAL_STATS_KEY, STAT_CHANNEL_FULL),
            self.count_key(name),
        ]
        args: list[RedisArg] = [
            payload,
            self.expiry_ms,
            capacity,
            CHANNEL_STATS_TTL,
            GLOBAL_STATS_TTL,
            self.prefix,
            self.list_ttl_ms,
            "0" if "?" in name else "1",  # no counters per single-use channel
            channel,
            self.stats_prefix,
        ]

        def failed(failure: Failure) -> Any:
            failure.trap(txredisapi.ResponseError)
            if _is_error(failure.value, "full"):
                raise ChannelFull("Channel %r is full (capacity %d)" % (channel, capacity))
            if _is_error(failure.value, "blocked"):
                raise _blocked(channel)
            return failure

        d = self.shard_of(channel).eval(SEND, keys, args)
        return d.addCallbacks(self._sent_one, failed, callbackArgs=(perf_counter(),))

    def _sent_one(self, reply: Any, started: float) -> None:
        self.send_seconds.observe(perf_counter() - started)
        # 1, or {1, messages found expired} when there were any (the common
        # reply stays a plain integer: this is every message's path).
        if reply != 1:
            self.expired += int(reply[1])

    def send_group(self, group: str, payload: bytes) -> Deferred[list[GroupSendResult]]:
        """
        Send ``payload`` to every member of ``group``: one script per shard,
        whatever the number of members.  Never ChannelFull.
        """
        sends = [self._send_group_on(shard, group, payload) for shard in self.shards]
        return gatherResults(sends, consumeErrors=True).addErrback(unwrap)

    def _send_group_on(
        self, shard: RedisShard, group: str, payload: bytes
    ) -> Deferred[GroupSendResult]:
        keys = [
            "%s:group:%s" % (self.prefix, group),
            "%s:procs:%s" % (self.prefix, group),
            self.stat_key(GLOBAL_STATS_KEY, STAT_MESSAGES_COUNT),
            self.stat_key(GLOBAL_STATS_KEY, STAT_CHANNEL_FULL),
        ]
        head: list[RedisArg] = [
            payload,
            self.expiry_ms,
            float(self.group_expiry),
            self.new_body_key(),
            self.prefix,
            self.stats_prefix,
            self.default_capacity,
            CHANNEL_STATS_TTL,
            GLOBAL_STATS_TTL,
            self.list_ttl_ms,
            group,
        ]

        def result(reply: list[Any]) -> GroupSendResult:
            self.expired += int(reply[4])
            return GroupSendResult(*(int(x) for x in reply[:4]))

        if self.lua_capacities is not None:
            d = shard.eval(GROUP_SEND, keys, [*head, "auto", *self.lua_capacities])
            return d.addCallback(result)

        # A channel_capacity regex Lua cannot evaluate: read the non-local
        # members, resolve their capacities here, then send.
        def given(members: list[bytes]) -> Any:
            pairs: list[Any] = []
            for member in members:
                name = member.decode("utf-8")
                if "!" not in name:
                    pairs += [name, self.get_capacity(name)]
            return shard.eval(GROUP_SEND, keys, [*head, "given", *pairs]).addCallback(result)

        args: list[RedisArg] = [group, float(self.group_expiry), self.prefix, self.stats_prefix]
        d = shard.eval(GROUP_MEMBERS, [], args)
        return d.addCallback(self._members).addCallback(given)

    # -- groups and names ---------------------------------------------------------------

    def new_channel(self, pattern: str) -> Deferred[str]:
        """A fresh ``pattern`` + 12 CSPRNG letters name not in use on its shard."""

        def attempt(n: int) -> Deferred[str]:
            name = pattern + random_string(12)
            d = self.shard_of(name).execute("EXISTS", self.prefix + name)
            return d.addCallback(lambda exists: attempt(n + 1) if exists and n < 20 else name)

        return attempt(0)

    def group_add(self, group: str, channel: str) -> Deferred[None]:
        """Add (or refresh) ``channel`` in ``group``."""
        expiry_ms = max(1, int(self.group_expiry * 1000))
        d = self.shard_of(channel).eval(
            GROUP_ADD, [self.groups_index_key(channel)], [channel, expiry_ms, group, self.prefix]
        )
        return d.addCallback(lambda _: None)

    def group_discard(self, group: str, channel: str) -> Deferred[None]:
        """Remove ``channel`` from ``group`` (no-op if absent)."""
        d = self.shard_of(channel).eval(GROUP_DISCARD, [], [channel, group, self.prefix])
        return d.addCallback(lambda _: None)

    def leave_all(self, channel: str) -> Deferred[None]:
        """``channel`` is gone: remove it from every group (and unblock it)."""
        d = self.shard_of(channel).eval(LEAVE_ALL, [], [channel, self.prefix])
        return d.addCallback(lambda _: None)

    def set_blocked(self, channel: str, blocked: bool) -> Deferred[None]:
        """Block or unblock local channel ``channel`` (a checked ``P!x`` name)."""
        process = _non_local(channel)
        d = self.shard_of(channel).eval(
            BLOCK, [self.count_key(process)], [channel, "1" if blocked else "0", self.list_ttl_ms]
        )
        return d.addCallback(lambda _: None)

    def group_channels(self, group: str) -> Deferred[list[str]]:
        """The members of ``group`` on every shard, lapsed ones dropped first."""
        args: list[RedisArg] = [group, float(self.group_expiry), self.prefix, self.stats_prefix]
        reads = [
            shard.eval(GROUP_MEMBERS, [], args).addCallback(self._members) for shard in self.shards
        ]

        def merge(results: list[list[bytes]]) -> list[str]:
            names = [m.decode("utf-8") for members in results for m in members or []]
            return list(dict.fromkeys(names))

        return gatherResults(reads, consumeErrors=True).addCallbacks(merge, unwrap)

    def _members(self, reply: list[Any]) -> list[bytes]:
        # GROUP_MEMBERS: {messages found expired, members...}
        self.expired += int(reply[0])
        return list(reply[1:])

    # -- process registration ---------------------------------------------------------

    def heartbeat(
        self, process: str, ttl: float, register: bool, bury_dead: bool
    ) -> Deferred[bool]:
        """
        Keep ``process`` (a ``prefix!``) registered as alive for ``ttl``
        seconds; ``register`` (re)registers it.  Fires False when it was
        registered but its heartbeat was gone: Redis lost its state.
        """
        args: list[RedisArg] = [
            self.prefix,
            process,
            max(1, int(ttl * 1000)),
            "1" if register else "0",
            "1" if bury_dead else "0",
        ]
        d = self.shard_of(process).eval(HEARTBEAT, [], args)
        return d.addCallback(lambda reply: bool(int(reply)))

    def unregister(self, process: str) -> Deferred[None]:
        """Forget ``process`` and everything it held (a clean stop)."""
        d = self.shard_of(process).eval(UNREGISTER, [], [self.prefix, process])
        return d.addCallback(lambda _: None)

    def count_full(self, channel: str, count: int) -> Deferred[None]:
        """Count ``count`` messages dropped for ``channel`` (its queue overflowed)."""
        keys = [
            self.stat_key(channel, STAT_CHANNEL_FULL),
            self.stat_key(GLOBAL_STATS_KEY, STAT_CHANNEL_FULL),
        ]
        d = self.shard_of(channel).eval(
            COUNT_FULL, keys, [count, CHANNEL_STATS_TTL, GLOBAL_STATS_TTL]
        )
        return d.addCallback(lambda _: None)

    # -- flush and statistics -------------------------------------------------------------

    def flush(self) -> Deferred[None]:
        """Delete every key under ``prefix`` and ``stats_prefix`` (SCAN + DEL)."""
        flushes = [self._flush_shard(shard) for shard in self.shards]
        return gatherResults(flushes, consumeErrors=True).addCallbacks(lambda _: None, unwrap)

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
            STAT_EXPIRED: sum(r[6] for r in results),
        }

    @inlineCallbacks
    def global_statistics(self) -> Any:
        # Any: an inlineCallbacks generator, whose yielded Deferreds carry untyped Redis
        # replies; its caller gets a Deferred firing with a dict of str to float.
        """
        The counters (and their last whole second) summed over the shards,
        and the messages pending in every list and the age of the oldest
        (a SCAN of the layer's keys: meant for occasional monitoring).
        ``expired_count`` counts the messages dropped because they expired
        unread, found by any process.
        """
        keys = [
            self.prefix + GLOBAL_STATS_KEY,
            self.stat_key(GLOBAL_STATS_KEY, STAT_MESSAGES_COUNT),
            self.stat_key(GLOBAL_STATS_KEY, STAT_CHANNEL_FULL),
            self.count_key(GLOBAL_STATS_KEY),
            self.stat_key(GLOBAL_STATS_KEY, STAT_EXPIRED),
        ]
        results = []
        pending, pttl = 0, -2
        for shard in self.shards:
            results.append((yield shard.eval(CHANNEL_STATS, keys, [GLOBAL_STATS_KEY])))
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

    def channel_statistics(self, channel: str) -> Deferred[dict[str, float]]:
        """
        The counters of ``channel`` (none are kept for single-use ``?``
        channels, so they count 0), its pending messages and the age of the
        oldest message of its list.  Its ``expired_count`` counts its
        messages dropped because they expired unread (seen when a send,
        receive or group call next looked at its list).
        """
        name = _non_local(channel)
        keys = [
            self.prefix + name,
            self.stat_key(channel, STAT_MESSAGES_COUNT),
            self.stat_key(channel, STAT_CHANNEL_FULL),
            self.count_key(name),
            self.stat_key(channel, STAT_EXPIRED),
        ]
        d = self.shard_of(name).eval(CHANNEL_STATS, keys, [channel])
        return d.addCallback(lambda result: self._stats([result], 0, -2))

    # -- receiving (driven by receive.py) ------------------------------------------------

    def pop_many(
        self,
        shard: int,
        keys: Sequence[str],
        limit: int,
        first: tuple[bytes, bytes] | None,
    ) -> Deferred[list[RawMessage]]:
        """Up to ``limit`` references from ``keys`` on ``shard`` (and ``first``)."""
        args: list[Any] = [limit, self.prefix, float(self.group_expiry), self.stats_prefix]
        if first is not None:
            args += [first[0], first[1]]
        d = self.shards[shard].eval(POP_MANY, keys, args)

        def split(flat: list[Any]) -> list[RawMessage]:
            flat = flat or []
            if len(flat) % 4:
                # The messages found expired follow the quadruples.
                self.expired += int(flat[-1])
            return [
                RawMessage(
                    shard,
                    flat[i],
                    flat[i + 1],
                    flat[i + 2],
                    tuple(flat[i + 3].decode("utf-8").split()) if flat[i + 3] else (),
                )
                for i in range(0, len(flat) - 3, 4)
            ]

        return d.addCallback(split)

    def push_back(self, shard: int, key: bytes, ref: bytes) -> None:
        """Put a reference a BLPOP took back at the head of its list."""
        target = self.shards[shard]
        pushed = gatherResults(
            [
                target.execute("LPUSH", key, ref),
                target.execute("PEXPIRE", key, self.list_ttl_ms),
            ],
            consumeErrors=True,
        )
        self.handbacks += 1
        pushed.addErrback(self._hand_back_failed, key)
        pushed.addBoth(self._hand_back_done)

    def requeue(self, shard: int, items: Sequence[RawMessage]) -> None:
        """Put messages a receive took (bodies and all) back at the heads of their lists."""
        if not items:
            return
        args: list[Any] = [self.expiry_ms, self.list_ttl_ms, self.prefix]
        for item in items:
            if item.ref[:1] == b"\0":
                # Inline: whole again, with its deadline.
                args += [b"", item.ref + b" " + item.body, b""]
                continue
            new_key = (self.new_body_key()).encode("utf-8")
            _, space, target = item.ref.partition(b" ")
            new_ref = new_key + b" " + target if item.list_key.endswith(b"!") and space else new_key
            args += [new_key, new_ref, item.body]
        d = self.shards[shard].eval(REQUEUE, [item.list_key for item in items], args)
        self.handbacks += 1
        d.addErrback(self._hand_back_failed, items[0].list_key, len(items))
        d.addBoth(self._hand_back_done)

    def _hand_back_done(self, _: Any) -> None:
        self.handbacks -= 1

    def _hand_back_failed(self, failure: Failure, key: bytes, count: int = 1) -> None:
        self.lost += count
        log.error(
            "A message taken off {key} for a receive nobody waits for any more could "
            "not be put back, and is lost: {error}",
            key=key.decode("utf-8", "replace"),
            error=unwrap(failure).getErrorMessage(),
        )

    def room(self, channel: str) -> Deferred[int]:
        """How many more messages ``channel`` can take now (0: full or blocked)."""
        name = _non_local(channel)
        d = self.shard_of(name).eval(
            ROOM,
            [self.prefix + name, self.count_key(name)],
            [self.prefix, channel, self.stats_prefix],
        )
        return d.addCallback(self._room_left, channel)

    def _room_left(self, reply: Any, channel: str) -> int:
        # {queued, or -1 when blocked; messages found expired}
        queued = int(reply[0])
        self.expired += int(reply[1])
        return 0 if queued < 0 else max(0, self.get_capacity(channel) - queued)

    # -- decoding ------------------------------------------------------------------

    def decode_items(self, items: Sequence[RawMessage]) -> list[Received]:
        """
        ``(channel, message)`` pairs: a group message once per member, the
        members sharing one dict (read-only).  Undecodable messages are
        logged and dropped.
        """
        result: list[Received] = []
        start = len(self.prefix)
        for item in items:
            channel = item.list_key.decode("utf-8")[start:]
            if channel.endswith("!") and not item.members:
                _, _, full = item.ref.decode("utf-8").partition(" ")
                channel = full or channel
            try:
                message = self.unpack(self.codec.decode(item.body))
            except Exception as e:
                self.undecodable += 1
                log.error(
                    "Dropped a message on {channel} that could not be decoded: {error}",
                    channel=channel,
                    error=e,
                )
                continue
            if item.members:
                result.extend((member, message) for member in item.members)
            else:
                result.append((channel, message))
        return result

    # -- waiting for room ------------------------------------------------------------

    def send_wait(
        self,
        channel: str,
        payload: bytes,
        timeout: float,
        reactor: IReactorTime,
        when_capacity: Callable[[str], Deferred[None]],
    ) -> Deferred[None]:
        """
        :meth:`send`, waiting up to ``timeout`` seconds for room if full or
        blocked; then it fails with the last refusal (ChannelBlocked if the
        channel was blocked).
        """
        deadline = reactor.seconds() + timeout

        def attempt() -> Deferred[None]:
            return self.send(channel, payload).addErrback(full)

        def full(failure: Failure) -> Any:
            failure.trap(ChannelFull)
            remaining = deadline - reactor.seconds()
            if remaining <= 0:
                return failure
            waiting = when_capacity(channel)
            waiting.addTimeout(remaining, reactor)
            return waiting.addCallbacks(lambda _: attempt(), lambda _: failure)

        return attempt()
