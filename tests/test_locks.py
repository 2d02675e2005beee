"""
Unit tests of chanserv.locks: what one thread sees of :class:`SocketLocks`
-- re-entrant holds, when an ordered hold may go at once, the single gap
watcher per socket and the per-process cap on watchers.  Waits are given
zero seconds, so nothing sleeps; how threads wait for each other is tested
through ``enforce_ordering`` in tests/test_ordering.py.
"""

from __future__ import annotations

from contextlib import ExitStack

from twisted.trial.unittest import SynchronousTestCase

from chanserv.locks import MAX_GAP_WATCHERS, SocketLocks


class HoldTests(SynchronousTestCase):
    def test_hold_is_reentrant(self) -> None:
        """A thread holding a socket may hold it again; it is released at the outer exit."""
        locks = SocketLocks()
        with locks.hold("a") as outer:
            with locks.hold("a") as inner:
                self.assertIs(inner, outer)
                self.assertEqual(outer.depth, 2)
            self.assertIsNotNone(outer.owner)
        self.assertIsNone(outer.owner)
        self.assertEqual(outer.depth, 0)

    def test_records_live_only_while_used(self) -> None:
        """Once nobody uses a socket, the next hold starts from a fresh record."""
        locks = SocketLocks()
        with locks.hold("a") as first:
            locks.learn(first, 5)
        with locks.hold("a") as second:
            self.assertIsNot(second, first)
            self.assertIsNone(second.next_order)

    def test_sockets_are_independent(self) -> None:
        """Holding one socket holds no other."""
        locks = SocketLocks()
        with locks.hold("a") as a, locks.hold("b") as b:
            self.assertIsNot(a, b)
            self.assertEqual((a.depth, b.depth), (1, 1))


class HoldInOrderTests(SynchronousTestCase):
    def test_goes_at_once_when_nothing_is_known(self) -> None:
        """No next order known for the socket: any order may run."""
        with SocketLocks().hold_in_order("a", 7, None, 0, None) as turn:
            self.assertFalse(turn.waited_out or turn.nested or turn.watcher)

    def test_goes_at_once_when_it_is_its_turn_or_later(self) -> None:
        """Its order is the socket's next one (or already passed): no wait."""
        locks = SocketLocks()
        for order, known_next in [(3, 3), (2, 3)]:
            with locks.hold_in_order("a", order, known_next, 0, None) as turn:
                self.assertFalse(turn.waited_out)

    def test_known_next_only_moves_forward(self) -> None:
        """A smaller known_next than the record's does not take it back."""
        locks = SocketLocks()
        with locks.hold_in_order("a", 9, 9, 0, None) as turn:
            with locks.hold_in_order("a", 9, 4, 0, None):
                self.assertEqual(turn.state.next_order, 9)

    def test_missing_predecessor_is_waited_out(self) -> None:
        """The predecessor is not in this process and the wait is over: it goes, waited_out."""
        with SocketLocks().hold_in_order("a", 5, 3, 0, None) as turn:
            self.assertTrue(turn.waited_out)
            self.assertFalse(turn.watcher)

    def test_nested_hold_does_not_wait(self) -> None:
        """A thread that holds the socket already is nested: it never waits for its own turn."""
        locks = SocketLocks()
        with locks.hold("a"):
            with locks.hold_in_order("a", 5, 3, 10, None) as turn:
                self.assertTrue(turn.nested)
                self.assertFalse(turn.waited_out)

    def test_learn_and_close(self) -> None:
        """learn() records the next order; close() marks the socket closed for waiters."""
        locks = SocketLocks()
        with locks.hold("a") as state:
            locks.learn(state, 12)
            locks.close(state)
            self.assertEqual((state.next_order, state.closed), (12, True))

    def test_one_gap_watcher_per_socket(self) -> None:
        """With a gap timeout, the first waiter of a socket watches the gap; a second does not."""
        locks = SocketLocks()
        with locks.hold_in_order("a", 5, 3, 0, 0) as first:
            self.assertTrue(first.watcher and first.waited_out)
            state = first.state
            self.assertTrue(state.watched)
        self.assertFalse(state.watched)

    def test_watchers_are_capped_per_process(self) -> None:
        """At most MAX_GAP_WATCHERS sockets are watched at once; the others use the local wait."""
        locks = SocketLocks()
        with ExitStack() as stack:
            turns = [
                stack.enter_context(locks.hold_in_order("s%d" % i, 5, 3, 0, 0))
                for i in range(MAX_GAP_WATCHERS + 1)
            ]
            self.assertEqual([t.watcher for t in turns], [True] * MAX_GAP_WATCHERS + [False])
            self.assertTrue(turns[-1].waited_out)
        with locks.hold_in_order("again", 5, 3, 0, 0) as turn:
            self.assertTrue(turn.watcher, "the watchers were released")
