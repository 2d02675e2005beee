"""
Private building blocks of :mod:`chanserv.layers.inmemory`: per-channel
state, counters, waiters, local receivers and the group index.  Any thread,
always under the layer's one lock; none of them locks anything itself.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection

from twisted.internet.defer import Deferred

from chanserv.layers.base import LocalReceiver, Prepared
from chanserv.types import Received

__all__ = [
    "HOUSEKEEPING_INTERVAL",
    "IDLE_RETENTION",
    "Batch",
    "ChannelState",
    "Counters",
    "GroupIndex",
    "Rate",
    "Receiver",
    "Waiter",
    "queue_key",
]

#: Seconds between two housekeeping passes: expired group memberships of
#: groups nobody touched, and the records of idle channels.
HOUSEKEEPING_INTERVAL = 60.0

#: An empty channel unused for this long is forgotten, statistics included.
IDLE_RETENTION = 60.0

Entry = tuple[float, str, Prepared]  # (expires at, full channel name, data)
Batch = list[Received]


class Rate:
    """A counter that also knows how many counts fell in the last whole second."""

    __slots__ = ("_current", "_previous", "_second", "total")

    def __init__(self) -> None:
        self.total = 0
        self._second = 0
        self._current = 0
        self._previous = 0

    def add(self, now: float) -> None:
        second = int(now)
        if second != self._second:
            self._previous = self._current if second == self._second + 1 else 0
            self._second = second
            self._current = 0
        self._current += 1
        self.total += 1

    def per_second(self, now: float) -> int:
        second = int(now)
        if second == self._second:
            return self._previous
        if second == self._second + 1:
            return self._current
        return 0


class Counters:
    """The counters of one process-local channel (its queue is its prefix's)."""

    __slots__ = ("full", "last_used", "sent")

    def __init__(self, now: float) -> None:
        self.sent = Rate()
        self.full = Rate()
        self.last_used = now


class Waiter:
    """A pending ``receive_many_twisted``."""

    __slots__ = ("deferred", "done", "keys", "limit", "woken")

    def __init__(self, keys: list[str], limit: int) -> None:
        self.keys = keys
        self.limit = limit
        self.deferred: Deferred[Batch] | None = None
        self.woken = False  # a service call is queued on the batcher
        self.done = False  # fired or cancelled


class Receiver:
    """
    A local receiver of prefix ``key``: its callback and the batch waiting
    for the reactor.  ``pending_bytes`` counts the bytes of that batch's
    direct sends; ``in_flight`` those and the bytes of the batch the
    reactor is handling now (what paced senders wait on).
    """

    __slots__ = ("active", "callback", "in_flight", "key", "pending", "pending_bytes", "scheduled")

    def __init__(self, key: str, callback: LocalReceiver) -> None:
        self.key = key
        self.callback = callback
        self.pending: Batch = []
        self.pending_bytes = 0
        self.in_flight = 0
        self.scheduled = False
        self.active = True


class ChannelState:
    """The state of one queue key: a channel name, or a ``prefix!``."""

    __slots__ = (
        "capacity",
        "counts",
        "expiry_scheduled",
        "full",
        "last_used",
        "queue",
        "sent",
        "space_waiters",
        "sync_space_waiting",
        "sync_waiting",
        "waiters",
    )

    def __init__(self, capacity: int, now: float) -> None:
        self.capacity = capacity
        self.queue: deque[Entry] = deque()
        #: For a ``prefix!`` key: queued messages per local name (capacity
        #: is per local channel, not per process).
        self.counts: dict[str, int] | None = None
        self.sent = Rate()
        self.full = Rate()
        self.waiters: list[Waiter] = []
        self.space_waiters: list[Deferred[None]] = []
        self.sync_waiting = 0
        self.sync_space_waiting = 0
        self.expiry_scheduled = False  # has an entry in the expiry heap
        self.last_used = now

    def idle(self) -> bool:
        return not (
            self.queue
            or self.waiters
            or self.space_waiters
            or self.sync_waiting
            or self.sync_space_waiting
            or self.expiry_scheduled
        )


def queue_key(name: str) -> str:
    """The queue a channel's messages go to: ``prefix!`` for ``prefix!local``."""
    bang = name.find("!")
    return name if bang < 0 else name[: bang + 1]


class GroupIndex:
    """
    Group memberships with the time of their last ``add``, and the reverse
    index (channel -> groups) that lets an expiring channel leave all its
    groups at once.  A membership lapses ``group_expiry`` after its last add.
    """

    def __init__(self, group_expiry: float, keep: Callable[[str], bool] | None = None) -> None:
        self.group_expiry = group_expiry
        #: ``keep(channel)`` true: the membership does not lapse by time
        #: (a local channel whose connection is open).
        self.keep = keep
        self._members: dict[str, dict[str, float]] = {}  # group -> {channel: added at}
        self._groups_of: dict[str, set[str]] = {}  # channel -> groups

    def __len__(self) -> int:
        return len(self._members)

    def add(self, group: str, channel: str, now: float) -> None:
        members = self._members.get(group)
        if members is None:
            members = self._members[group] = {}
        members[channel] = now
        groups = self._groups_of.get(channel)
        if groups is None:
            groups = self._groups_of[channel] = set()
        groups.add(group)

    def discard(self, group: str, channel: str) -> None:
        members = self._members.get(group)
        if members is not None and channel in members:
            self._drop(group, members, channel)

    def members(self, group: str, now: float) -> Collection[str]:
        """The live members of ``group`` in the order of their first add (a view)."""
        members = self._members.get(group)
        if members is None:
            return ()
        self._expire(group, members, now)
        return members.keys()

    def evict(self, channel: str) -> None:
        """Drop ``channel`` from every group it is in."""
        for group in self._groups_of.pop(channel, ()):
            members = self._members.get(group)
            if members is not None:
                members.pop(channel, None)
                if not members:
                    del self._members[group]

    def expire_all(self, now: float) -> None:
        for group, members in list(self._members.items()):
            self._expire(group, members, now)

    def clear(self) -> None:
        self._members.clear()
        self._groups_of.clear()

    def _expire(self, group: str, members: dict[str, float], now: float) -> None:
        cutoff = now - self.group_expiry
        keep = self.keep
        for channel in [c for c, added in members.items() if added <= cutoff]:
            if keep is not None and keep(channel):
                members[channel] = now
            else:
                self._drop(group, members, channel)

    def _drop(self, group: str, members: dict[str, float], channel: str) -> None:
        members.pop(channel, None)
        groups = self._groups_of.get(channel)
        if groups is not None:
            groups.discard(group)
            if not groups:
                del self._groups_of[channel]
        if not members:
            self._members.pop(group, None)
