"""
The layer contract bound to :class:`InMemoryChannelLayer`, on a
:class:`ClockReactor` that is both its clock and its reactor, plus what only
the in-memory layer promises.
"""

from __future__ import annotations

import threading
import unittest
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import globalLogPublisher

from chanserv.exceptions import ChannelFull
from chanserv.layers import InMemoryChannelLayer, _memory
from chanserv.threads import batcher_for
from tests.layers.contract import LayerContractTests
from tests.support import ClockReactor


class InMemoryContract(LayerContractTests, unittest.TestCase):
    def setUp(self) -> None:
        self.reactor = ClockReactor()
        self.layers: list[InMemoryChannelLayer] = []
        super().setUp()

    def tearDown(self) -> None:
        for layer in self.layers:
            layer.detach_reactor()
        super().tearDown()

    def make_layer(self, **config: Any) -> InMemoryChannelLayer:
        layer = InMemoryChannelLayer(clock=self.reactor, **config)
        layer.attach_reactor(self.reactor)
        self.layers.append(layer)
        return layer

    def advance(self, seconds: float) -> None:
        self.reactor.advance(seconds)
        self.reactor.run_pending()

    def run_reactor_face(self, f: Any, *args: Any) -> Any:
        result = f(*args)
        if isinstance(result, Deferred):
            return self.result_of(result)
        self.settle()
        return result

    def start_reactor_face(self, f: Any, *args: Any) -> Any:
        return f(*args)

    def settle(self) -> None:
        self.reactor.run_pending()


class NotifyingCondition(threading.Condition):
    """A Condition that tells when someone starts waiting on it."""

    def __init__(self, lock: Any) -> None:
        super().__init__(lock)
        self.waiting = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.waiting.set()  # the lock is still held: a send cannot slip in first
        return super().wait(timeout)


class InMemorySpecifics(unittest.TestCase):
    def setUp(self) -> None:
        self.reactor = ClockReactor()

    def attached(self, **config: Any) -> InMemoryChannelLayer:
        layer = InMemoryChannelLayer(clock=self.reactor, **config)
        layer.attach_reactor(self.reactor)
        self.addCleanup(layer.detach_reactor)
        return layer

    def result(self, d: Deferred[Any]) -> Any:
        self.reactor.run_pending()
        results: list[Any] = []
        d.addBoth(results.append)
        self.assertEqual(len(results), 1, "no result")
        return results[0]

    def test_defaults(self) -> None:
        """The in-memory layer is local-only: 60 s expiry, 1 day groups, 100 capacity, 1 MiB."""
        layer = InMemoryChannelLayer()
        self.assertTrue(layer.local_only)
        self.assertEqual(
            (layer.expiry, layer.group_expiry, layer.capacity, layer.max_message_size),
            (60, 86400, 100, 1024 * 1024),
        )
        self.assertEqual(layer.extensions, ["groups", "flush", "statistics", "twisted"])

    def test_sync_face_without_a_reactor(self) -> None:
        """Unattached, the sync API works and expires on its clock; the reactor API raises."""
        layer = InMemoryChannelLayer(expiry=10, group_expiry=20, capacity=2, clock=self.reactor)
        layer.group_add("g", "a")
        layer.group_add("g", "b!x")
        layer.send_group("g", {"n": 1})
        self.assertEqual(layer.receive(["a"]), ("a", {"n": 1}))
        self.assertEqual(layer.receive(["b!"]), ("b!x", {"n": 1}))
        layer.send("a", {})
        layer.send("a", {})
        with self.assertRaises(ChannelFull):
            layer.send("a", {})
        self.reactor.advance(10)
        self.assertEqual(layer.receive(["a"]), (None, None))
        self.assertEqual(layer.group_channels("g"), ["b!x"])  # "a" left on expiry
        self.reactor.advance(20)
        self.assertEqual(layer.group_channels("g"), [])
        self.assertEqual(layer.global_statistics()["messages_count"], 4)
        layer.flush()
        self.assertEqual(layer.global_statistics()["messages_count"], 0)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        for call in (
            layer.receive_many_twisted(["a"], 1),
            layer.when_capacity_twisted("a"),
        ):
            self.assertIsInstance(self.result(call).value, RuntimeError)
        with self.assertRaises(RuntimeError):
            layer.add_local_receiver("p!", print)

    def test_real_clock_by_default(self) -> None:
        """Without a clock argument the layer runs on the real clock."""
        layer = InMemoryChannelLayer()
        layer.send("c", {"n": 1})
        self.assertEqual(layer.receive(["c"]), ("c", {"n": 1}))

    def test_blocking_receive_is_woken_by_a_send_from_another_thread(self) -> None:
        """A blocking receive() is woken at once by a send from another thread."""
        layer = InMemoryChannelLayer(clock=self.reactor)
        layer.receive_block_timeout = 120.0  # only a send can end the wait in time
        cond = layer._receive_cond = NotifyingCondition(layer._lock)
        results: list[Any] = []
        receiver = threading.Thread(
            target=lambda: results.append(layer.receive(["other", "blk!"], block=True))
        )
        receiver.start()
        self.assertTrue(cond.waiting.wait(30))
        sender = threading.Thread(target=layer.send, args=("blk!x", {"n": 1}))
        sender.start()
        sender.join(30)
        receiver.join(30)
        self.assertFalse(receiver.is_alive())
        self.assertEqual(results, [("blk!x", {"n": 1})])

    def test_blocking_receive_gives_up_after_its_timeout(self) -> None:
        """A blocking receive() with nothing sent returns (None, None) after its timeout."""
        layer = InMemoryChannelLayer(clock=self.reactor)
        layer.receive_block_timeout = 0.01
        self.assertEqual(layer.receive(["nothing"], block=True), (None, None))

    def test_send_prepared_wait(self) -> None:
        """send_prepared_wait() raises ChannelFull at its timeout, or sends once room frees."""
        layer = InMemoryChannelLayer(capacity=1, clock=self.reactor)
        layer.send("w", {"n": 0})
        with self.assertRaises(ChannelFull):
            layer.send_prepared_wait("w", layer.prepare({"n": 1}), 0.01)
        cond = layer._space_cond = NotifyingCondition(layer._lock)
        errors: list[Any] = []

        def wait_and_send() -> None:
            try:
                layer.send_prepared_wait("w", layer.prepare({"n": 2}), 120)
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        sender = threading.Thread(target=wait_and_send)
        sender.start()
        self.assertTrue(cond.waiting.wait(30))
        self.assertEqual(layer.receive(["w"]), ("w", {"n": 0}))
        sender.join(30)
        self.assertFalse(sender.is_alive())
        self.assertEqual(errors, [])
        self.assertEqual(layer.receive(["w"]), ("w", {"n": 2}))

    def test_one_sweep_timer_not_one_per_message(self) -> None:
        """Expiry runs on one sweep timer, not a timer per message; detaching cancels it."""
        layer = self.attached(expiry=5)
        for i in range(50):
            layer.send("c%d" % (i % 5), {})
        self.assertEqual(len(self.reactor.getDelayedCalls()), 1)
        layer.detach_reactor()
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_sweep_expires_without_any_call(self) -> None:
        """The sweep expires messages, freeing room, without any call into the layer."""
        layer = self.attached(expiry=5, capacity=1)
        layer.send("sw", {})
        d = layer.when_capacity_twisted("sw")
        self.reactor.advance(4)
        self.reactor.run_pending()
        self.assertFalse(d.called)
        self.reactor.advance(1)  # the sweep, not a layer call, expires it
        self.reactor.run_pending()
        self.assertIsNone(self.result(d))

    def test_idle_channels_are_forgotten(self) -> None:
        """Idle channels leave no state after the retention; unexpired groups are kept."""
        layer = self.attached(expiry=1)
        for _ in range(20):
            layer.send(layer.new_channel("tmp?"), {})
        layer.group_add("g", "member")
        self.reactor.advance(_memory.IDLE_RETENTION + _memory.HOUSEKEEPING_INTERVAL + 1)
        self.reactor.run_pending()
        self.assertEqual(layer._channels, {})
        self.assertEqual(layer._expiry_heap, [])
        self.assertEqual(len(layer._groups), 1)  # group_expiry has not passed

    def test_a_gone_local_channel_leaves_nothing_behind(self) -> None:
        """
        ``discard_local_channel`` (its connection went) forgets everything the
        layer kept for a reply channel: memberships and counters, also those
        a late reply made again.  Names are never reused, so nothing waits
        for the idle retention.
        """
        layer = self.attached()
        layer.add_local_receiver("gone!", lambda batch: None)
        names = ["gone!%d" % i for i in range(100)]
        for name in names:
            layer.group_add("room", name)
            layer.send(name, {"accept": True})
        layer.send_group("room", {"text": "hi"})
        layer.count_full(names[0], 2)
        self.reactor.run_pending()
        self.assertEqual(len(layer._counters), 100)
        for name in names:
            layer.discard_local_channel(name)
        self.assertEqual(layer._counters, {})
        self.assertEqual(layer.group_channels("room"), [])
        self.assertEqual((len(layer._groups), layer._groups._groups_of), (0, {}))
        layer.send(names[1], {"late": True})  # a reply after its connection went
        self.assertEqual(list(layer._counters), [names[1]])
        layer.discard_local_channel(names[1])  # as the reply dispatch does then
        self.assertEqual(layer._counters, {})
        self.assertEqual(layer.channel_statistics(names[0])["channel_full_count"], 0)
        # The process's own counts stay.
        stats = layer.global_statistics()
        self.assertEqual((stats["messages_count"], stats["channel_full_count"]), (201, 2))
        self.assertEqual(layer._counters, {})

    def test_group_send_shares_one_dict_between_local_members(self) -> None:
        """A group send to local members delivers one shared message dict, in one batch."""
        layer = self.attached()
        calls: list[Any] = []
        layer.add_local_receiver("shared!", calls.append)
        for i in range(100):
            layer.group_add("room", "shared!%d" % i)
        layer.send_group("room", {"text": "hi"})
        layer.send_group("room", {"text": "again"})
        self.reactor.run_pending()
        self.assertEqual(len(calls), 1)
        batch = calls[0]
        self.assertEqual(len(batch), 200)
        self.assertEqual(len({id(m) for _, m in batch}), 2)
        self.assertEqual(batch[0], ("shared!0", {"text": "hi"}))
        self.assertEqual(batch[-1], ("shared!99", {"text": "again"}))

    def test_local_receiver_sends_from_threads_coalesce(self) -> None:
        """Sends from several threads to a local receiver arrive in one batch."""
        layer = self.attached()
        calls: list[Any] = []
        layer.add_local_receiver("thr!", calls.append)
        threads = [
            threading.Thread(target=layer.send, args=("thr!%d" % i, {"i": i})) for i in range(5)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.reactor.run_pending()
        self.assertEqual(len(calls), 1)
        self.assertEqual(sorted(m["i"] for _, m in calls[0]), list(range(5)))

    def test_local_receiver_errors_are_logged_not_raised(self) -> None:
        """A local receiver's exception is logged, not raised; the receiver stays on."""
        layer = self.attached()
        logged: list[Any] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_failure") is not None:
                logged.append(event["log_failure"])

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

        def broken(batch: Any) -> None:
            raise RuntimeError("boom")

        layer.add_local_receiver("br!", broken)
        layer.send("br!x", {})
        self.reactor.run_pending()
        self.assertEqual([f.type for f in logged], [RuntimeError])
        layer.send("br!y", {})  # the receiver is still there
        self.reactor.run_pending()
        self.assertEqual(len(logged), 2)

    def test_add_local_receiver_checks_prefix(self) -> None:
        """Local receivers need a name ending in !, once each; removing twice is harmless."""
        layer = self.attached()
        for prefix in ("noprefix", "a!b", "a?b"):
            with self.assertRaises(TypeError):
                layer.add_local_receiver(prefix, print)
        layer.add_local_receiver("dup!", print)
        with self.assertRaises(ValueError):
            layer.add_local_receiver("dup!", print)
        layer.remove_local_receiver("dup!")
        layer.remove_local_receiver("dup!")  # a second removal is harmless

    def test_waiters_each_get_their_own_message(self) -> None:
        """Two receive_many_twisted() waiters on one channel each get a different message."""
        layer = self.attached()
        d1 = layer.receive_many_twisted(["q"], 1)
        d2 = layer.receive_many_twisted(["q"], 1)
        layer.send("q", {"n": 1})
        layer.send("q", {"n": 2})
        self.assertEqual(self.result(d1), [("q", {"n": 1})])
        self.assertEqual(self.result(d2), [("q", {"n": 2})])

    def test_cancelled_woken_waiter_hands_over(self) -> None:
        """A woken waiter cancelled before it runs hands its message to the next waiter."""
        layer = self.attached()
        d1 = layer.receive_many_twisted(["q"], 1)
        d2 = layer.receive_many_twisted(["q"], 1)
        layer.send("q", {"n": 1})  # wakes d1's waiter...
        d1.addErrback(lambda f: None)
        d1.cancel()  # ...which goes away before the reactor runs it
        self.assertEqual(self.result(d2), [("q", {"n": 1})])

    def test_waiter_survives_flush(self) -> None:
        """A receive waiter pending across flush() still gets the next message sent."""
        layer = self.attached()
        d = layer.receive_many_twisted(["fl"], 1)
        layer.flush()
        layer.send("fl", {"after": True})
        self.assertEqual(self.result(d), [("fl", {"after": True})])

    def test_sync_receive_can_take_a_message_a_waiter_was_woken_for(self) -> None:
        """A sync receive() may take the message a waiter was woken for; it waits on."""
        layer = self.attached()
        d = layer.receive_many_twisted(["st"], 1)
        layer.send("st", {"n": 1})
        self.assertEqual(layer.receive(["st"]), ("st", {"n": 1}))
        self.reactor.run_pending()
        self.assertFalse(d.called)  # it goes on waiting
        layer.send("st", {"n": 2})
        self.assertEqual(self.result(d), [("st", {"n": 2})])

    def test_rotation_alternates_channels(self) -> None:
        """receive() over several channels takes from each in turn, not one until empty."""
        layer = InMemoryChannelLayer(clock=self.reactor)
        for i in range(3):
            layer.send("x", {"i": i})
            layer.send("y", {"i": i})
        got = [layer.receive(["x", "y"])[0] for _ in range(6)]
        self.assertEqual(sorted(got[0:2]), ["x", "y"])
        self.assertEqual(sorted(got[2:4]), ["x", "y"])
        self.assertEqual(sorted(got[4:6]), ["x", "y"])

    def test_rates_per_second(self) -> None:
        """Statistics give the past whole second's message and ChannelFull rates."""
        layer = InMemoryChannelLayer(capacity=2, clock=self.reactor)
        self.reactor.advance(10.2)
        for _ in range(3):
            try:
                layer.send("r", {})
            except ChannelFull:
                pass
        stats = layer.channel_statistics("r")
        self.assertEqual((stats["messages_count"], stats["messages_count_per_second"]), (2, 0))
        self.reactor.advance(1)
        stats = layer.global_statistics()
        self.assertEqual(stats["messages_count_per_second"], 2)
        self.assertEqual(stats["channel_full_count_per_second"], 1)
        self.reactor.advance(1)
        self.assertEqual(layer.global_statistics()["messages_count_per_second"], 0)

    def test_flush_frees_room_for_waiters(self) -> None:
        """flush() fires the waiters for room on a full channel."""
        layer = self.attached(capacity=1)
        layer.send("ff", {})
        d = layer.when_capacity_twisted("ff")
        layer.flush()
        self.assertIsNone(self.result(d))

    def test_freed_room_wakes_only_as_many_waiters_as_it_holds(self) -> None:
        """Freed room wakes as many waiters for capacity as it holds, oldest first."""
        # 1,000 senders wait on a full channel: each freed slot wakes one of
        # them, oldest first -- not all 1,000 to retry and wait again.
        layer = self.attached(capacity=2)
        layer.send("fw", {"n": 0})
        layer.send("fw", {"n": 1})
        waiters = [layer.when_capacity_twisted("fw") for _ in range(1000)]
        self.assertFalse(any(d.called for d in waiters))
        layer.receive(["fw"])
        self.reactor.advance(0)
        self.assertEqual([d.called for d in waiters[:2]], [True, False])
        self.assertEqual(sum(d.called for d in waiters), 1)
        layer.send("fw", {"n": 2})  # the woken one takes the room
        layer.receive(["fw"])  # one slot free: one more woken
        self.reactor.advance(0)
        self.assertEqual(sum(d.called for d in waiters), 2)
        layer.receive(["fw"])  # empty: room for two
        self.reactor.advance(0)
        self.assertEqual(sum(d.called for d in waiters), 4)
        self.assertTrue(all(d.called for d in waiters[:4]))
        # A cancelled waiter leaves the line; the next one is woken instead.
        waiters[4].cancel()
        layer.send("fw", {"n": 3})
        layer.send("fw", {"n": 4})
        layer.receive(["fw"])
        self.reactor.advance(0)
        self.assertTrue(waiters[5].called)
        self.assertEqual(sum(d.called for d in waiters[6:]), 0)

    def test_when_capacity_of_a_local_receiver_prefix(self) -> None:
        """A local receiver's channels are not capped: when_capacity fires at once past it."""
        layer = self.attached(capacity=1)
        layer.add_local_receiver("wl!", lambda batch: None)
        layer.send("wl!a", {})
        layer.send("wl!b", {})
        self.assertTrue(layer.when_capacity_twisted("wl!c").called)
        layer.remove_local_receiver("wl!")

    def _waiting_sender(
        self, layer: InMemoryChannelLayer, channel: str, data: bytes
    ) -> tuple[threading.Thread, list[BaseException]]:
        """A thread in send_prepared_wait, returned once it waits for room."""
        cond = layer._space_cond = NotifyingCondition(layer._lock)
        errors: list[BaseException] = []

        def send() -> None:
            try:
                layer.send_prepared_wait(channel, data, 120)
            except BaseException as e:  # pragma: no cover - reported by the test
                errors.append(e)

        sender = threading.Thread(target=send)
        sender.start()
        self.assertTrue(cond.waiting.wait(30))
        return sender, errors

    def test_send_prepared_wait_paces_a_thread_to_the_reactor(self) -> None:
        """
        Worker threads cannot run further ahead of the reactor than
        max_in_flight_bytes per local receiver: one scheduling slice cannot
        pile a whole response into one batch.
        """
        layer = self.attached()
        layer.max_in_flight_bytes = 1000
        batches: list[list[Any]] = []
        layer.add_local_receiver("pace!", batches.append)
        chunk = layer.prepare({"content": b"x" * 600})
        layer.send_prepared_wait("pace!a", chunk, 120)
        layer.send_prepared_wait("pace!b", chunk, 120)  # 600 bytes were in flight
        sender, errors = self._waiting_sender(layer, "pace!a", chunk)  # 1,200 in flight
        layer.send("pace!a", {"content": b"x" * 600})  # send itself is never held back
        self.reactor.run_pending()  # the reactor takes the batch: room again
        sender.join(30)
        self.assertFalse(sender.is_alive())
        self.assertEqual(errors, [])
        self.reactor.run_pending()
        self.assertEqual([len(batch) for batch in batches], [3, 1])
        # Past its timeout a paced send goes through all the same.
        for _ in range(3):
            layer.send_prepared_wait("pace!c", chunk, 0)
        layer.remove_local_receiver("pace!")

    def test_a_waiting_sender_is_released_when_the_connection_goes(self) -> None:
        """A sender held by a blocked local channel is freed when it or its receiver goes."""
        layer = self.attached()
        layer.add_local_receiver("rel!", lambda batch: None)
        data = layer.prepare({"n": 1})
        for release in (
            lambda: layer.discard_local_channel("rel!a"),
            lambda: layer.remove_local_receiver("rel!"),
        ):
            layer.block_local_channel("rel!a")
            sender, errors = self._waiting_sender(layer, "rel!a", data)
            release()
            sender.join(30)
            self.assertFalse(sender.is_alive())
            self.assertEqual(errors, [])

    def test_flush_drops_block_marks(self) -> None:
        """flush() drops block marks: waiters for room fire and sends go through."""
        layer = self.attached()
        layer.block_local_channel("fl!a")
        room = layer.when_capacity_twisted("fl!a")
        layer.flush()
        self.assertIsNone(self.result(room))
        layer.send("fl!a", {})

    def test_attach_twice_is_refused_and_detach_ends_the_reactor_face(self) -> None:
        """attach_reactor() twice raises; detached, the reactor API fails until re-attached."""
        layer = self.attached()
        with self.assertRaises(RuntimeError):
            layer.attach_reactor(self.reactor)
        layer.detach_reactor()
        self.assertIsInstance(self.result(layer.receive_many_twisted(["a"], 1)).value, RuntimeError)
        layer.attach_reactor(self.reactor)  # and it can be attached again
        self.assertEqual(len(self.reactor.getDelayedCalls()), 1)

    def test_wakeups_are_coalesced(self) -> None:
        """A burst of sends costs one hand-off per receiver or waiter, not one per message."""
        layer = self.attached()
        batcher = batcher_for(self.reactor)
        calls: list[Any] = []
        layer.add_local_receiver("co!", calls.append)
        d = layer.receive_many_twisted(["co"], 100)
        for i in range(10):
            layer.send("co!x", {"i": i})
            layer.send("co", {"i": i})
        self.assertEqual(len(batcher._calls), 2)
        self.assertEqual(len(self.result(d)), 10)
        self.assertEqual([len(batch) for batch in calls], [10])
