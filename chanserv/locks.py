"""
:class:`SocketLocks`: a re-entrant lock per reply channel with ordered
waiting, the in-process mechanism of turn-taking; :mod:`chanserv.ordering`
decides whose turn it is.  Pool threads only, never the reactor thread
(it blocks).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["MAX_GAP_WATCHERS", "SocketLocks", "SocketState", "Turn"]

#: Threads per process that may each wait out a whole gap timeout.
MAX_GAP_WATCHERS = 2


class SocketState:
    """What this process knows about one reply channel (guarded by the lock)."""

    __slots__ = ("closed", "cond", "depth", "next_order", "owner", "present", "users", "watched")

    def __init__(self, lock: threading.Lock) -> None:
        self.cond = threading.Condition(lock)
        self.owner: int | None = None  # thread ident holding the socket
        self.depth = 0
        self.users = 0  # threads using this record; it is dropped at 0
        self.present: Counter[int] = Counter()  # orders of ordered threads here
        self.next_order: int | None = None  # last known next order
        self.watched = False  # a thread waits out the gap timeout
        self.closed = False  # this process closed the socket


class Turn:
    """How :meth:`SocketLocks.hold_in_order` ended for one thread."""

    __slots__ = ("nested", "state", "waited_out", "watcher")

    def __init__(self, state: SocketState) -> None:
        self.state = state
        self.nested = False  # the thread held the socket already
        self.waited_out = False  # the predecessor did not come in time
        self.watcher = False  # ... and the wait was the gap timeout


class SocketLocks:
    """
    Per-reply-channel mutual exclusion between the threads of this process,
    re-entrant per thread, with ordered waiting for
    :func:`~chanserv.ordering.enforce_ordering`.
    Records exist only while a thread uses them.  Worker threads only.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, SocketState] = {}
        self._watchers = 0

    def _enter_locked(self, name: str) -> SocketState:
        state = self._states.get(name)
        if state is None:
            state = self._states[name] = SocketState(self._lock)
        state.users += 1
        return state

    def _leave_locked(self, name: str, state: SocketState) -> None:
        state.depth -= 1
        if state.depth == 0:
            state.owner = None
            state.cond.notify_all()
        state.users -= 1
        if state.users == 0:
            del self._states[name]

    @contextmanager
    def hold(self, name: str) -> Iterator[SocketState]:
        """Hold ``name``: wait until no other thread of this process does."""
        me = threading.get_ident()
        with self._lock:
            state = self._enter_locked(name)
            if state.owner != me:
                while state.owner is not None:
                    state.cond.wait()
                state.owner = me
            state.depth += 1
        try:
            yield state
        finally:
            with self._lock:
                self._leave_locked(name, state)

    @contextmanager
    def hold_in_order(
        self,
        name: str,
        order: int,
        known_next: int | None,
        local_wait: float,
        gap_timeout: float | None,
    ) -> Iterator[Turn]:
        """
        Hold ``name`` once ``order`` may be its turn: when nothing is known
        about the socket's next order, when that is ``order`` or later, or
        when the predecessor did not come in time (``waited_out``).  A
        predecessor handled by a thread here is waited for without limit;
        one that is not, ``local_wait`` seconds -- or, for a single watcher
        per socket when ``gap_timeout`` is given, ``gap_timeout`` seconds.
        """
        me = threading.get_ident()
        with self._lock:
            state = self._enter_locked(name)
            state.present[order] += 1
            if known_next is not None and (
                state.next_order is None or state.next_order < known_next
            ):
                state.next_order = known_next
            turn = Turn(state)
            if state.owner == me:
                turn.nested = True
            else:
                self._wait_turn_locked(state, turn, order, local_wait, gap_timeout)
                state.owner = me
            state.depth += 1
        try:
            yield turn
        finally:
            with self._lock:
                state.present[order] -= 1
                if state.present[order] <= 0:
                    del state.present[order]
                if turn.watcher:
                    state.watched = False
                    self._watchers -= 1
                self._leave_locked(name, state)

    def _wait_turn_locked(
        self,
        state: SocketState,
        turn: Turn,
        order: int,
        local_wait: float,
        gap_timeout: float | None,
    ) -> None:
        missing: int | None = None
        since = 0.0
        while True:
            if state.owner is not None:
                state.cond.wait()
                continue
            expected = state.next_order
            if expected is None or expected >= order or state.closed:
                return
            if state.present[expected] > 0:
                missing = None  # it is here and will run
                state.cond.wait()
                continue
            now = time.monotonic()
            if missing != expected:
                missing, since = expected, now
            if (
                gap_timeout is not None
                and not turn.watcher
                and not state.watched
                and self._watchers < MAX_GAP_WATCHERS
            ):
                state.watched = turn.watcher = True
                self._watchers += 1
            limit = gap_timeout if turn.watcher and gap_timeout is not None else local_wait
            remaining = since + limit - now
            if remaining <= 0:
                turn.waited_out = True
                return
            state.cond.wait(remaining)

    def learn(self, state: SocketState, next_order: int) -> None:
        """Record the socket's next order, as just read or written."""
        with self._lock:
            state.next_order = next_order

    def close(self, state: SocketState) -> None:
        with self._lock:
            state.closed = True
            state.cond.notify_all()
