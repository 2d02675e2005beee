"""
The in-memory channel layer, the embedded default: channels, groups and
waiters in this process's memory under one lock.  Its synchronous face
works from any thread (a pool thread, a unit test with no reactor); its
reactor face runs on the reactor thread, and wake-ups reach it through the
shared :class:`~chanserv.threads.ReactorBatcher`.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from zope.interface import implementer

from chanserv.exceptions import ChannelBlocked, ChannelFull
from chanserv.interfaces import IChannelLayer, IReactorChannelLayer
from chanserv.layers._memory import (
    HOUSEKEEPING_INTERVAL,
    IDLE_RETENTION,
    Batch,
    ChannelState,
    Counters,
    GroupIndex,
    Rate,
    Receiver,
    Waiter,
    queue_key,
)
from chanserv.layers.base import (
    RESERVED_KEY,
    BaseChannelLayer,
    CapacityPattern,
    FlatMessage,
    LocalReceiver,
    Prepared,
    flat_copy,
    random_string,
)
from chanserv.log import Logger
from chanserv.threads import ReactorBatcher, batcher_for
from chanserv.types import Content, Received

__all__ = ["InMemoryChannelLayer"]

log = Logger()


@implementer(IChannelLayer, IReactorChannelLayer)
class InMemoryChannelLayer(BaseChannelLayer):
    """
    The in-reactor channel layer (``local_only``: one process only).

    Takes the :class:`BaseChannelLayer` arguments plus ``clock``, an object
    with ``seconds()`` (``task.Clock`` in tests; ``time.monotonic`` by
    default) that times expiry and statistics.  The synchronous face may be
    called from any thread, with or without a reactor; the reactor face needs
    :meth:`attach_reactor` first and runs on the reactor thread only.
    """

    extensions = ["groups", "flush", "statistics", "twisted"]
    local_only = True
    cheap_receive = True
    sends_at_once = True

    #: Longest wait, in real seconds, of ``receive(channels, block=True)``
    #: before it returns ``(None, None)``; a send ends the wait at once.
    receive_block_timeout = 5.0

    #: Seconds between expiry sweeps while a reactor is attached.
    sweep_interval = 1.0

    #: Bytes sent to the channels of one local receiver that may wait for
    #: the reactor before :meth:`send_prepared_wait` waits too: worker
    #: threads streaming responses run ahead of the interface by at most
    #: this much (plus one message each), however threads are scheduled --
    #: without it, one scheduling slice can put megabytes in one batch, past
    #: any bound on what a connection holds.  ``send`` is never held back.
    max_in_flight_bytes = 256 * 1024

    def __init__(
        self,
        expiry: float = 60,
        group_expiry: float = 86400,
        capacity: int = 100,
        channel_capacity: Mapping[CapacityPattern, int]
        | Sequence[tuple[CapacityPattern, int]]
        | None = None,
        max_message_size: int = 1024 * 1024,
        clock: IReactorTime | None = None,
    ) -> None:
        super().__init__(expiry, group_expiry, capacity, channel_capacity, max_message_size)
        self._seconds: Callable[[], float] = clock.seconds if clock is not None else time.monotonic
        self._lock = threading.Lock()
        self._receive_cond = threading.Condition(self._lock)
        self._space_cond = threading.Condition(self._lock)
        self._channels: dict[str, ChannelState] = {}
        self._counters: dict[str, Counters] = {}  # per process-local channel
        self._expiry_heap: list[tuple[float, str]] = []
        self._groups = GroupIndex(group_expiry, self._is_connected)
        self._receivers: dict[str, Receiver] = {}
        # Blocked local channels (block_local_channel), each with the
        # reactor face's waiters for it; bytes sent to served local
        # channels not yet handed to their receiver.
        self._blocked: dict[str, list[Deferred[None]]] = {}
        self._sent = Rate()
        self._full = Rate()
        # Messages that expired unread: in all, and per channel name (a
        # process-local channel on its own name), forgotten with the rest of
        # a channel's statistics.
        self._expired_total = 0
        self._expired: dict[str, int] = {}
        #: Group sends, and the member deliveries they made (a member whose
        #: channel was full is counted in ``channel_full_count`` instead).
        self.group_sends = 0
        self.group_deliveries = 0
        self._rotation = 0
        self._next_housekeeping = self._seconds() + HOUSEKEEPING_INTERVAL
        # Calls for the reactor gathered under the lock, made after it.
        self._post: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        self._batcher: ReactorBatcher | None = None
        self._checked_keys: dict[tuple[str, ...], list[str]] = {}
        self._reactor: Any = None
        self._sweep_call: IDelayedCall | None = None

    # -- internals (the _locked ones need self._lock held) --------------------

    def _begin_locked(self) -> float:
        """The time now, after dropping whatever expiry and housekeeping are due."""
        now = self._seconds()
        heap = self._expiry_heap
        if heap and heap[0][0] <= now:
            self._expire_messages_locked(now)
        if now >= self._next_housekeeping:
            self._housekeep_locked(now)
        return now

    def _take_post_locked(self) -> list[tuple[Callable[..., None], tuple[Any, ...]]]:
        post = self._post
        if post:
            self._post = []
        return post

    def _run_post(self, post: list[tuple[Callable[..., None], tuple[Any, ...]]]) -> None:
        # Outside the lock.  Only the reactor face registers anything that
        # posts calls, and it needs a batcher.
        if post and self._batcher is not None:
            for f, args in post:
                self._batcher.call(f, *args)

    def _channel_locked(self, key: str, now: float) -> ChannelState:
        ch = self._channels.get(key)
        if ch is None:
            ch = self._channels[key] = ChannelState(self.get_capacity(key), now)
        return ch

    def _is_connected(self, channel: str) -> bool:
        # GroupIndex's keep(): a local channel of a process with a receiver
        # (an interface server) keeps its memberships until its connection
        # goes (discard_local_channel).  Called under the lock.
        return "!" in channel and queue_key(channel) in self._receivers

    def _full_locked(self, ch: ChannelState, key: str, name: str) -> bool:
        if key == name:
            return len(ch.queue) >= ch.capacity
        counts = ch.counts
        return counts is not None and counts.get(name, 0) >= self.get_capacity(name)

    def _stats_of_locked(
        self, ch: ChannelState, key: str, name: str, now: float
    ) -> ChannelState | Counters:
        # A local channel's counters are its own, not its process's.
        return ch if key == name else self._counters_locked(name, now)

    def _counters_locked(self, name: str, now: float) -> Counters:
        counters = self._counters.get(name)
        if counters is None:
            counters = self._counters[name] = Counters(now)
        else:
            counters.last_used = now
        return counters

    def _uncount_locked(self, ch: ChannelState, name: str) -> None:
        counts = ch.counts
        if counts is not None:
            left = counts.get(name, 0) - 1
            if left > 0:
                counts[name] = left
            else:
                counts.pop(name, None)

    def _enqueue_locked(
        self, ch: ChannelState, key: str, name: str, data: Prepared, now: float
    ) -> bool:
        queue = ch.queue
        if self._full_locked(ch, key, name):
            self._stats_of_locked(ch, key, name, now).full.add(now)
            self._full.add(now)
            return False
        expires = now + self.expiry
        queue.append((expires, name, data))
        if key != name:
            if ch.counts is None:
                ch.counts = {}
            ch.counts[name] = ch.counts.get(name, 0) + 1
        if not ch.expiry_scheduled:
            ch.expiry_scheduled = True
            heapq.heappush(self._expiry_heap, (expires, key))
        self._stats_of_locked(ch, key, name, now).sent.add(now)
        self._sent.add(now)
        ch.last_used = now
        if ch.waiters:
            self._wake_one_locked(ch)
        if ch.sync_waiting:
            self._receive_cond.notify_all()
        return True

    def _deliver_locked(
        self, receiver: Receiver, ch: ChannelState, name: str, message: Content, now: float
    ) -> None:
        receiver.pending.append((name, message))
        self._counters_locked(name, now).sent.add(now)
        self._sent.add(now)
        ch.last_used = now
        if not receiver.scheduled:
            receiver.scheduled = True
            self._post.append((self._deliver, (receiver,)))

    def _wake_one_locked(self, ch: ChannelState) -> None:
        for waiter in ch.waiters:
            if not waiter.woken:
                waiter.woken = True
                self._post.append((self._service, (waiter,)))
                return

    def _removed_locked(self, ch: ChannelState) -> None:
        """
        Messages left ``ch``: tell whoever waits for room.  Of the reactor
        face's waiters, only as many as there is room for are woken, oldest
        first: with thousands waiting on a full channel, one freed slot must
        not make all of them retry (and all but one wait again).  A process
        channel (per-name counts) wakes them all: its room is per name.
        """
        if not (ch.space_waiters or ch.sync_space_waiting):
            return
        if ch.counts is not None:
            room = len(ch.space_waiters)
        else:
            room = ch.capacity - len(ch.queue)
            if room <= 0:
                return
        waiters = ch.space_waiters
        if waiters:
            if room >= len(waiters):
                woken, ch.space_waiters = waiters, []
            else:
                woken, ch.space_waiters = waiters[:room], waiters[room:]
            self._post.append((self._fire_space, (woken,)))
        if ch.sync_space_waiting:
            self._space_cond.notify_all()

    def _take_locked(self, keys: list[str], limit: int) -> list[tuple[str, Prepared]]:
        # Round robin over the keys, starting one further on every call, so a
        # busy channel cannot starve a quiet one.
        n = len(keys)
        start = self._rotation % n
        self._rotation += 1
        channels = self._channels
        ready = []
        for i in range(n):
            ch = channels.get(keys[(start + i) % n])
            if ch is not None and ch.queue:
                ready.append(ch)
        if not ready:
            return []
        taken: list[tuple[str, Prepared]] = []
        remaining = ready
        while remaining and len(taken) < limit:
            still = []
            for ch in remaining:
                _, name, data = ch.queue.popleft()
                if ch.counts is not None:
                    self._uncount_locked(ch, name)
                taken.append((name, data))
                if len(taken) >= limit:
                    break
                if ch.queue:
                    still.append(ch)
            remaining = still
        for ch in ready:
            self._removed_locked(ch)
        return taken

    def _expire_messages_locked(self, now: float) -> None:
        heap = self._expiry_heap
        channels = self._channels
        while heap and heap[0][0] <= now:
            key = heapq.heappop(heap)[1]
            ch = channels.get(key)
            if ch is None:
                continue
            ch.expiry_scheduled = False
            queue = ch.queue
            if queue and queue[0][0] <= now:
                expired: dict[str, int] = {}
                while queue and queue[0][0] <= now:
                    name = queue.popleft()[1]
                    expired[name] = expired.get(name, 0) + 1
                    if ch.counts is not None:
                        self._uncount_locked(ch, name)
                counts = self._expired
                for name, n in expired.items():
                    self._groups.evict(name)
                    counts[name] = counts.get(name, 0) + n
                    self._expired_total += n
                self._removed_locked(ch)
            if queue:
                ch.expiry_scheduled = True
                heapq.heappush(heap, (queue[0][0], key))

    def _housekeep_locked(self, now: float) -> None:
        self._next_housekeeping = now + HOUSEKEEPING_INTERVAL
        self._groups.expire_all(now)
        idle_before = now - IDLE_RETENTION
        channels = self._channels
        for key in [k for k, ch in channels.items() if ch.last_used <= idle_before and ch.idle()]:
            del channels[key]
        counters = self._counters
        for name in [n for n, c in counters.items() if c.last_used <= idle_before]:
            del counters[name]
        expired = self._expired
        for name in [n for n in expired if n not in channels and n not in counters]:
            del expired[name]

    def _receive_keys(self, channels: Any) -> list[str]:
        # A worker receives from the same channels every time: remember the
        # checked, deduplicated keys of a few recent channel lists.
        if isinstance(channels, (str, bytes)):
            self.valid_channel_names(channels)  # raises: a lone name is not a list
        names = tuple(channels)
        try:
            keys = self._checked_keys.get(names)
        except TypeError:
            keys = None  # an unhashable name: the check below says what is wrong
        if keys is None:
            self.valid_channel_names(names, receive=True)
            if len(self._checked_keys) >= 64:
                self._checked_keys.clear()
            keys = self._checked_keys[names] = list(dict.fromkeys(names))
        return keys

    # -- synchronous face (any thread) ----------------------------------------

    def prepare(self, message: object) -> Prepared:
        """
        The copy a send makes, in the sender's thread: a flat message (``str``
        keys, scalar values, clearly within ``max_message_size``) is copied
        as a :class:`~chanserv.layers.base.FlatMessage` -- a shallow copy is
        a full one, and cheaper than msgpack both ways; anything else is
        serialised (:meth:`serialise`), which checks it.  A receiver gets an
        equal dict of the same types either way.  Any thread.
        """
        flat = flat_copy(message, self.max_message_size, RESERVED_KEY)
        if flat is not None:
            return flat
        return self.serialise(message)

    def send_prepared(self, channel: str, data: Prepared) -> None:
        """
        Queue prepared ``data`` on ``channel`` (or hand it to the local
        receiver of its ``prefix!``).  Any thread; never blocks.

        :raises ChannelFull: the channel (for ``prefix!local``, the prefix)
            holds ``get_capacity(channel)`` messages already.
        :raises ChannelBlocked: the channel is blocked
            (:meth:`block_local_channel`).
        """
        refused = self._offer(channel, data, pace=False)
        if refused is not None:
            raise self._refusal(channel, refused)

    def send_prepared_wait(self, channel: str, data: Prepared, timeout: float) -> None:
        """
        :meth:`send_prepared`, waiting up to ``timeout`` real seconds for room
        if the channel is full or blocked -- and, for a channel served by a
        local receiver, while :attr:`max_in_flight_bytes` sent to that
        receiver's channels still wait for the reactor (past ``timeout`` it
        is sent all the same).  A worker thread only: it blocks.

        :raises ChannelFull: the channel stayed full for ``timeout`` seconds;
            :class:`~chanserv.exceptions.ChannelBlocked` if it was blocked at
            the end.
        """
        deadline = time.monotonic() + timeout
        key = queue_key(channel)
        while True:
            remaining = deadline - time.monotonic()
            refused = self._offer(channel, data, pace=remaining > 0)
            if refused is None:
                return
            if remaining <= 0:
                raise self._refusal(channel, refused, timeout)
            with self._lock:
                now = self._begin_locked()
                ch = self._channel_locked(key, now)
                remaining = deadline - time.monotonic()
                if remaining > 0 and self._must_wait_locked(ch, key, channel):
                    ch.sync_space_waiting += 1
                    try:
                        self._space_cond.wait(remaining)
                    finally:
                        ch.sync_space_waiting -= 1
                post = self._take_post_locked()
            self._run_post(post)

    def _offer(self, channel: str, data: Prepared, pace: bool) -> str | None:
        """
        Send ``data`` to ``channel``; None if sent, else why not: ``"full"``,
        ``"blocked"``, or (only with ``pace``) ``"busy"``: too many bytes
        for its local receiver still wait for the reactor.
        """
        key = queue_key(channel)
        message = None
        if key in self._receivers:
            message = self.unpack(data)  # in the sender's thread, not under the lock
        with self._lock:
            now = self._begin_locked()
            ch = self._channel_locked(key, now)
            receiver = self._receivers.get(key)
            refused: str | None = None
            if self._blocked and channel in self._blocked:
                refused = "blocked"  # flow control, not a full queue: not counted
            elif receiver is not None:
                if pace and receiver.in_flight >= self.max_in_flight_bytes:
                    refused = "busy"
                else:
                    if message is None:
                        message = self.unpack(data)
                    self._deliver_locked(receiver, ch, channel, message, now)
                    size = data.nbytes if type(data) is FlatMessage else len(data)
                    receiver.pending_bytes += size
                    receiver.in_flight += size
            elif not self._enqueue_locked(ch, key, channel, data, now):
                refused = "full"
            post = self._take_post_locked()
        self._run_post(post)
        return refused

    def _must_wait_locked(self, ch: ChannelState, key: str, channel: str) -> bool:
        # Whether a paced send to ``channel`` would be refused now.
        if self._blocked and channel in self._blocked:
            return True
        receiver = self._receivers.get(key)
        if receiver is not None:
            return receiver.in_flight >= self.max_in_flight_bytes
        return self._full_locked(ch, key, channel)

    def _refusal(self, channel: str, refused: str, waited: float | None = None) -> ChannelFull:
        if refused == "blocked":
            return ChannelBlocked(
                "Channel %r is blocked by its interface server%s"
                % (channel, "" if waited is None else " (waited %ss)" % (waited,))
            )
        return ChannelFull(
            "Channel %r %s (capacity %d)"
            % (
                channel,
                "is full" if waited is None else "stayed full for %ss" % (waited,),
                self.get_capacity(channel),
            )
        )

    def receive(self, channels: Sequence[str], block: bool = False) -> Received | tuple[None, None]:
        """
        Take the oldest message of one of ``channels``: ``(channel, message)``
        or ``(None, None)``.  Any thread.  For process-local channels pass the
        ``prefix!``; the full name comes back.  ``block=True`` waits (pushed by
        sends, never polling) up to :attr:`receive_block_timeout` seconds, so
        never use it on the reactor thread.

        :raises TypeError: an invalid name, a ``prefix!local`` name, or a lone
            ``str`` instead of a list.
        """
        keys = self._receive_keys(channels)
        if not keys:
            return None, None
        deadline = None
        with self._lock:
            while True:
                now = self._begin_locked()
                taken = self._take_locked(keys, 1)
                if taken or not block:
                    break
                if deadline is None:
                    deadline = time.monotonic() + self.receive_block_timeout
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                waiting = [self._channel_locked(key, now) for key in keys]
                for ch in waiting:
                    ch.sync_waiting += 1
                try:
                    self._receive_cond.wait(remaining)
                finally:
                    for ch in waiting:
                        ch.sync_waiting -= 1
            post = self._take_post_locked()
        self._run_post(post)
        if not taken:
            return None, None
        name, data = taken[0]
        return name, self.unpack(data)

    def new_channel(self, pattern: str) -> str:
        """
        ``pattern`` (ending with ``?``) plus 12 CSPRNG letters, a name not in
        use.  :raises TypeError: a pattern not ending with ``?``, or invalid.
        """
        self._check_new_channel_pattern(pattern)
        while True:
            name = pattern + random_string(12)
            if name not in self._channels:
                return name

    def group_add(self, group: str, channel: str) -> None:
        """Add ``channel`` to ``group`` (again: refreshes its group expiry)."""
        self.valid_group_name(group)
        self.valid_channel_name(channel)
        with self._lock:
            now = self._begin_locked()
            self._groups.add(group, channel, now)
            post = self._take_post_locked()
        self._run_post(post)

    def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``; nothing happens if it is absent."""
        self.valid_group_name(group)
        self.valid_channel_name(channel)
        with self._lock:
            self._begin_locked()
            self._groups.discard(group, channel)
            post = self._take_post_locked()
        self._run_post(post)

    def group_channels(self, group: str) -> list[str]:
        """The current members of ``group``, in the order they were added."""
        self.valid_group_name(group)
        with self._lock:
            now = self._begin_locked()
            result = list(self._groups.members(group, now))
            post = self._take_post_locked()
        self._run_post(post)
        return result

    def send_group_prepared(self, group: str, data: Prepared) -> None:
        """
        Send prepared ``data`` to every member of ``group`` under one lock;
        full members are skipped (counted as ``channel_full``), never raised.
        Members with a local receiver all get the same unpacked dict.
        """
        message = self.unpack(data) if self._receivers else None
        with self._lock:
            now = self._begin_locked()
            members = self._groups.members(group, now)
            self.group_sends += 1
            if members:
                self.group_deliveries += len(members)
                receivers = self._receivers
                for name in members:
                    key = queue_key(name)
                    ch = self._channel_locked(key, now)
                    receiver = receivers.get(key) if receivers else None
                    if receiver is None:
                        if not self._enqueue_locked(ch, key, name, data, now):
                            self.group_deliveries -= 1
                        continue
                    if message is None:
                        message = self.unpack(data)
                    self._deliver_locked(receiver, ch, name, message, now)
            post = self._take_post_locked()
        self._run_post(post)

    def flush(self) -> None:
        """
        Drop every message, group, statistic and block mark.  Waiting
        receivers are not cancelled: they go on waiting.  Done when it
        returns.
        """
        with self._lock:
            for ch in self._channels.values():
                ch.queue.clear()
                ch.counts = None
                ch.expiry_scheduled = False
                ch.sent = Rate()
                ch.full = Rate()
                self._removed_locked(ch)
            self._channels = {k: ch for k, ch in self._channels.items() if not ch.idle()}
            self._counters = {}
            self._expiry_heap = []
            self._groups.clear()
            for receiver in self._receivers.values():
                receiver.pending = []
                self._landed_locked(receiver, receiver.pending_bytes)
                receiver.pending_bytes = 0
            for channel in list(self._blocked):
                self._unblock_locked(channel)
            self._sent = Rate()
            self._full = Rate()
            self._expired_total = 0
            self._expired = {}
            post = self._take_post_locked()
        self._run_post(post)

    def _stats(
        self, now: float, sent: Rate, full: Rate, heads: list[ChannelState], expired: int
    ) -> dict[str, float]:
        oldest = min((ch.queue[0][0] for ch in heads if ch.queue), default=None)
        return {
            "messages_count": sent.total,
            "messages_count_per_second": sent.per_second(now),
            "messages_pending": sum(len(ch.queue) for ch in heads),
            "messages_max_age": 0 if oldest is None else max(0, now - (oldest - self.expiry)),
            "channel_full_count": full.total,
            "channel_full_count_per_second": full.per_second(now),
            "expired_count": expired,
        }

    def global_statistics(self) -> dict[str, float]:
        """
        Counts since start (or the last flush) across every channel: the
        ASGI statistics, plus ``expired_count``, the messages dropped
        because they waited past :attr:`expiry` unread.
        """
        with self._lock:
            now = self._begin_locked()
            stats = self._stats(
                now,
                self._sent,
                self._full,
                list(self._channels.values()),
                self._expired_total,
            )
            post = self._take_post_locked()
        self._run_post(post)
        return stats

    def channel_statistics(self, channel: str) -> dict[str, float]:
        """
        Counts for ``channel``: the ASGI statistics, plus ``expired_count``,
        its messages dropped because they waited past :attr:`expiry` unread.
        A process-local channel's are its own: its messages sent, refused or
        dropped, and expired, and its messages waiting.
        """
        self.valid_channel_name(channel)
        key = queue_key(channel)
        with self._lock:
            now = self._begin_locked()
            if key == channel:
                ch = self._channels.get(channel) or ChannelState(0, now)
                stats = self._stats(now, ch.sent, ch.full, [ch], self._expired.get(channel, 0))
            else:
                counters = self._counters.get(channel) or Counters(now)
                stats = self._stats(
                    now, counters.sent, counters.full, [], self._expired.get(channel, 0)
                )
                head = self._channels.get(key)
                entries = [e for e in head.queue if e[1] == channel] if head is not None else []
                stats["messages_pending"] = len(entries)
                stats["messages_max_age"] = (
                    max(0, now - (entries[0][0] - self.expiry)) if entries else 0
                )
            post = self._take_post_locked()
        self._run_post(post)
        return stats

    def count_full(self, channel: str, count: int = 1) -> None:
        """
        Count ``count`` messages that could not be delivered to ``channel``
        because its queue was full -- a connection that stopped reading, its
        interface's queue for it overflowing -- in its and the global
        ``channel_full_count``.  Any thread.
        """
        with self._lock:
            now = self._begin_locked()
            key = queue_key(channel)
            state: ChannelState | Counters = (
                self._channel_locked(key, now)
                if key == channel
                else self._counters_locked(channel, now)
            )
            for _ in range(count):
                state.full.add(now)
                self._full.add(now)
            post = self._take_post_locked()
        self._run_post(post)

    def discard_local_channel(self, channel: str) -> None:
        """
        The connection of local channel ``channel`` is gone: it leaves every
        group now, and its statistics are forgotten.  (While a receiver
        serves its prefix, its memberships never lapse by time.)  Any thread.
        """
        with self._lock:
            self._begin_locked()
            self._groups.evict(channel)
            # Reply channel names are never reused: counters kept for their
            # idle retention would grow with the rate of connections.
            self._counters.pop(channel, None)
            self._expired.pop(channel, None)
            if self._blocked:
                self._unblock_locked(channel)
            post = self._take_post_locked()
        self._run_post(post)

    def block_local_channel(self, channel: str) -> None:
        """
        Refuse sends to ``channel`` with ChannelBlocked until
        :meth:`unblock_local_channel` or :meth:`discard_local_channel`
        (see :meth:`IReactorChannelLayer.block_local_channel
        <chanserv.interfaces.IReactorChannelLayer.block_local_channel>`).  Takes
        effect at once: every send that returned before still arrives, none
        after is accepted.  Any thread.
        """
        self._check_local_channel(channel)
        with self._lock:
            self._blocked.setdefault(channel, [])

    def unblock_local_channel(self, channel: str) -> None:
        """Accept sends to ``channel`` again and wake its waiters.  Any thread."""
        self._check_local_channel(channel)
        with self._lock:
            self._unblock_locked(channel)
            post = self._take_post_locked()
        self._run_post(post)

    def _unblock_locked(self, channel: str) -> None:
        waiters = self._blocked.pop(channel, None)
        if waiters is None:
            return
        if waiters:
            self._post.append((self._fire_space, (waiters,)))
        ch = self._channels.get(queue_key(channel))
        if ch is not None and ch.sync_space_waiting:
            self._space_cond.notify_all()

    # -- reactor face (reactor thread only) -------------------------------------

    def attach_reactor(self, reactor: Any) -> None:
        # Any: the reactor must provide IReactorTime and IReactorFromThreads (the Redis layer's
        # also IReactorTCP), and Python's types have no intersection of interfaces.
        """
        Bind the layer to ``reactor``: wake-ups go through its batcher, and an
        expiry sweep runs every :attr:`sweep_interval` seconds (one timer for
        the whole layer).
        """
        if self._reactor is not None:
            raise RuntimeError("This layer is already attached to a reactor")
        self._reactor = reactor
        self._batcher = batcher_for(reactor)
        self._sweep_call = reactor.callLater(self.sweep_interval, self._sweep)

    def detach_reactor(self) -> Deferred[None]:
        """
        Stop the expiry sweep.  Waiters and local receivers are left alone:
        their owners cancel and remove them first.
        """
        call, self._sweep_call = self._sweep_call, None
        if call is not None and call.active():
            call.cancel()
        self._reactor = None
        return succeed(None)

    def _sweep(self) -> None:
        # Reactor thread: a rescheduling timer rather than a LoopingCall,
        # whose constructor would install the global reactor.
        try:
            with self._lock:
                self._begin_locked()
                post = self._take_post_locked()
            self._run_post(post)
        except Exception:
            log.failure("The in-memory layer's expiry sweep failed")
        if self._reactor is not None:
            self._sweep_call = self._reactor.callLater(self.sweep_interval, self._sweep)

    def _require_reactor(self) -> None:
        if self._reactor is None:
            raise RuntimeError("The reactor face needs attach_reactor() first")

    def receive_many_twisted(self, channels: Sequence[str], limit: int) -> Deferred[list[Received]]:
        """
        1 to ``limit`` ``(channel, message)`` pairs from ``channels``: at once
        if any are queued, else when a send (from any thread) brings some.
        Cancelling the Deferred takes nothing.  Invalid arguments fail it.
        """
        try:
            self._require_reactor()
            keys = self._receive_keys(channels)
            if not keys:
                raise ValueError("receive_many_twisted needs at least one channel")
            if not isinstance(limit, int) or limit < 1:
                raise ValueError("limit must be a positive int, not %r" % (limit,))
        except Exception:
            return fail()
        d: Deferred[Batch] | None = None
        with self._lock:
            now = self._begin_locked()
            taken = self._take_locked(keys, limit)
            if not taken:
                waiter = Waiter(keys, limit)
                d = waiter.deferred = Deferred(lambda _: self._cancel_waiter(waiter))
                for key in keys:
                    self._channel_locked(key, now).waiters.append(waiter)
            post = self._take_post_locked()
        self._run_post(post)
        if d is not None:
            return d
        return succeed([(name, self.unpack(data)) for name, data in taken])

    def _unregister_locked(self, waiter: Waiter) -> None:
        waiter.done = True
        for key in waiter.keys:
            ch = self._channels.get(key)
            if ch is not None and waiter in ch.waiters:
                ch.waiters.remove(waiter)
        # Another waiter takes over what this one was woken for.
        for key in waiter.keys:
            ch = self._channels.get(key)
            if ch is not None and ch.queue and ch.waiters:
                self._wake_one_locked(ch)

    def _service(self, waiter: Waiter) -> None:
        # Reactor thread, via the batcher: a send woke this waiter.
        taken: list[tuple[str, Prepared]] = []
        with self._lock:
            if not waiter.done:
                self._begin_locked()
                taken = self._take_locked(waiter.keys, waiter.limit)
                if taken:
                    self._unregister_locked(waiter)
                else:
                    waiter.woken = False  # someone else took it; wait on
            post = self._take_post_locked()
        self._run_post(post)
        if taken and waiter.deferred is not None:
            waiter.deferred.callback([(name, self.unpack(data)) for name, data in taken])

    def _cancel_waiter(self, waiter: Waiter) -> None:
        with self._lock:
            if not waiter.done:
                self._unregister_locked(waiter)
            post = self._take_post_locked()
        self._run_post(post)

    def send_twisted(self, channel: str, message: Content) -> Deferred[None]:
        """:meth:`send`, as an already-fired Deferred."""
        try:
            self.send(channel, message)
        except Exception:
            return fail()
        return succeed(None)

    def send_group_twisted(self, group: str, message: Content) -> Deferred[None]:
        """:meth:`send_group`, as an already-fired Deferred."""
        try:
            self.send_group(group, message)
        except Exception:
            return fail()
        return succeed(None)

    def add_local_receiver(
        self,
        prefix: str,
        callback: LocalReceiver,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        """
        From now on, messages for ``prefix`` + local names skip the queue:
        they go to ``callback(batch)`` on the reactor thread, every message
        sent before the batcher's next drain in one ``batch`` list -- a
        group send's members all in one callback, sharing one dict
        (read-only).  Messages already queued for ``prefix`` are handed
        over too.  The receiver owns each channel's capacity from then on
        (the interface server's per-connection queue, which closes a
        connection that overflows and reports it with :meth:`count_full`,
        and :meth:`block_local_channel` for a client that reads slowly);
        :meth:`send_prepared_wait` paces a sender to the reactor
        (:attr:`max_in_flight_bytes`).
        Memberships of the prefix's channels no longer lapse by time; they
        end with :meth:`discard_local_channel`.  ``on_lost`` is accepted
        for the reply dispatch contract and never called: this layer's
        state cannot be lost while the process runs.

        :raises TypeError: ``prefix`` is not a valid name ending with ``!``.
        :raises ValueError: ``prefix`` has a receiver already.
        """
        self._require_reactor()
        self._check_local_prefix(prefix)
        with self._lock:
            if prefix in self._receivers:
                raise ValueError("%r has a local receiver already" % (prefix,))
            now = self._begin_locked()
            receiver = self._receivers[prefix] = Receiver(prefix, callback)
            ch = self._channels.get(prefix)
            if ch is not None and ch.queue:
                for _, name, data in ch.queue:
                    self._deliver_locked(receiver, ch, name, self.unpack(data), now)
                ch.queue.clear()
                ch.counts = None
                self._removed_locked(ch)
            post = self._take_post_locked()
        self._run_post(post)

    def remove_local_receiver(self, prefix: str) -> None:
        """
        Stop delivering to ``prefix``'s receiver (no-op without one); a batch
        not yet delivered is dropped, later messages are queued again.
        """
        with self._lock:
            receiver = self._receivers.pop(prefix, None)
            if receiver is not None:
                receiver.active = False
                receiver.pending = []
                self._landed_locked(receiver, receiver.pending_bytes)
                receiver.pending_bytes = 0
            # Its connections are gone with it: nothing stays blocked.
            for channel in [c for c in self._blocked if queue_key(c) == prefix]:
                self._unblock_locked(channel)
            post = self._take_post_locked()
        self._run_post(post)

    def _deliver(self, receiver: Receiver) -> None:
        # Reactor thread, via the batcher.
        with self._lock:
            batch = receiver.pending
            size = receiver.pending_bytes
            receiver.pending = []
            receiver.pending_bytes = 0
            receiver.scheduled = False
            active = receiver.active
        if active and batch:
            try:
                receiver.callback(batch)
            except Exception:
                log.failure("A local receiver failed on {count} messages", count=len(batch))
        if size:
            # Handled (written, for a response): paced senders may go on.
            with self._lock:
                self._landed_locked(receiver, size)

    def _landed_locked(self, receiver: Receiver, size: int) -> None:
        """``size`` bytes of direct sends to ``receiver`` left the layer."""
        receiver.in_flight -= size
        ch = self._channels.get(receiver.key)
        if ch is not None and ch.sync_space_waiting > 0:
            self._space_cond.notify_all()

    def when_capacity_twisted(self, channel: str) -> Deferred[None]:
        """
        A Deferred firing (on the reactor thread) once ``channel`` holds fewer
        messages than its capacity and is not blocked: already fired if so
        now.  Room comes from receives, expiry, flush and unblocking.
        """
        try:
            self._require_reactor()
            self.valid_channel_name(channel)
        except Exception:
            return fail()
        key = queue_key(channel)
        d: Deferred[None] | None = None
        with self._lock:
            self._begin_locked()
            ch = self._channels.get(key)
            blocked = self._blocked.get(channel) if self._blocked else None
            if blocked is not None:
                d = Deferred(lambda cancelled: self._cancel_blocked(channel, cancelled))
                blocked.append(d)
            elif (
                key not in self._receivers
                and ch is not None
                and self._full_locked(ch, key, channel)
            ):
                d = Deferred(lambda cancelled: self._cancel_space(key, cancelled))
                ch.space_waiters.append(d)
            post = self._take_post_locked()
        self._run_post(post)
        return d if d is not None else succeed(None)

    def _cancel_blocked(self, channel: str, d: Deferred[None]) -> None:
        with self._lock:
            waiters = self._blocked.get(channel)
            if waiters is not None and d in waiters:
                waiters.remove(d)

    def _cancel_space(self, key: str, d: Deferred[None]) -> None:
        with self._lock:
            ch = self._channels.get(key)
            if ch is not None and d in ch.space_waiters:
                ch.space_waiters.remove(d)

    @staticmethod
    def _fire_space(deferreds: list[Deferred[None]]) -> None:
        # Reactor thread, via the batcher.
        for d in deferreds:
            if not d.called:
                d.callback(None)
