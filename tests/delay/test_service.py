"""
DelayService on a clock: the real in-memory layer attached to a
ClockReactor, a pool that runs its tasks when the test says so, and an
in-memory store due by the same clock, so that due times are exact.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.logger import LogLevel, capturedLogs, formatEvent
from zope.interface.verify import verifyObject

from chanserv.delay.service import DELAY_CHANNEL, MAX_DELAY, DelayService, check_delay_message
from chanserv.delay.store import IDelayStore
from chanserv.layers import InMemoryChannelLayer
from chanserv.testing import ClockReactor
from tests.delay.support import MemoryStore, QueuedPool


class Delay:
    """One delay service with its clock, layer, pool and store."""

    def __init__(
        self,
        reactor: ClockReactor | None = None,
        layer: InMemoryChannelLayer | None = None,
        store: MemoryStore | None = None,
        **kwargs: Any,
    ) -> None:
        self.reactor = reactor or ClockReactor()
        if layer is None:
            layer = InMemoryChannelLayer(capacity=100, expiry=3600)
            layer.attach_reactor(self.reactor)
        self.layer = layer
        self.pool = QueuedPool()
        self.store = store or MemoryStore(self.reactor)
        self.service = DelayService(self.reactor, self.layer, self.pool, self.store, **kwargs)

    def start(self) -> Delay:
        self.service.startService()
        self.settle()
        return self

    def delay(self, channel: str, content: dict[str, Any], delay: Any) -> None:
        self.layer.send(DELAY_CHANNEL, {"channel": channel, "content": content, "delay": delay})
        self.settle()

    def settle(self) -> None:
        """Run what is due now on the reactor and in the pool, until nothing is left."""
        for _ in range(100):
            self.reactor.run_pending()
            if not self.pool.run():
                return
        raise AssertionError("the service never settled")

    def advance(self, seconds: float) -> None:
        self.reactor.advance(seconds)
        self.settle()

    def take(self, channel: str = "out") -> list[Any]:
        """Everything waiting on ``channel`` now."""
        got = []
        while True:
            name, content = self.layer.receive([channel])
            if name is None:
                return got
            got.append(content)


def test_store_double_provides_the_interface() -> None:
    """The tests' store provides IDelayStore, so the service is tested against the contract."""
    assert verifyObject(IDelayStore, MemoryStore(ClockReactor()))


def test_message_is_sent_at_its_due_time_not_before() -> None:
    """A message delayed 1500 ms reaches its channel at 1.5 s on the clock, not a tick before."""
    d = Delay().start()
    d.delay("out", {"text": "hi"}, 1500)
    assert d.service.stored == 1
    d.advance(1.499)
    assert d.take() == []
    d.advance(0.001)
    assert d.take() == [{"text": "hi"}]
    assert (d.service.sent, d.store.rows) == (1, {})


def test_messages_go_out_in_order_of_due_time_then_of_arrival() -> None:
    """Each message goes out at its own due time; those due together keep their arrival order."""
    d = Delay().start()
    for name, delay in [("a", 3000), ("b", 1000), ("c", 2000), ("d", 1000)]:
        d.layer.send(DELAY_CHANNEL, {"channel": "out", "content": {"n": name}, "delay": delay})
    d.settle()
    arrivals = []
    for _ in range(3):
        d.advance(1.0)
        arrivals.append([m["n"] for m in d.take()])
    assert arrivals == [["b", "d"], ["c"], ["a"]]


def test_zero_delay_is_sent_at_once() -> None:
    """A delay of 0 sends the message as soon as it is stored, with no clock movement."""
    d = Delay().start()
    d.delay("out", {"x": 1}, 0)
    assert d.take() == [{"x": 1}]


def test_far_message_is_found_by_the_poll_and_sent_on_time() -> None:
    """A message due beyond the look-ahead holds no timer; a later poll finds it and it is exact."""
    d = Delay(sleep=1.0).start()
    d.delay("out", {"far": True}, 10_000)
    assert d.service._heap == []  # no timer for a message 10 s away
    for _ in range(9):
        d.advance(1.0)
    assert d.take() == []
    d.advance(0.5)
    assert d.take() == []
    d.advance(0.5)
    assert d.take() == [{"far": True}]


INVALID = [
    ({"test": "value"}, "no 'channel' and no 'content' and no 'delay'"),
    ({"channel": "out", "content": {}}, "no 'delay'"),
    ({"channel": 5, "content": {}, "delay": 1}, "'channel' is int"),
    ({"channel": "bad name!?", "content": {}, "delay": 1}, "not a channel name"),
    ({"channel": "out", "content": "x", "delay": 1}, "'content' is str, not a dict"),
    ({"channel": "out", "content": {}, "delay": "10"}, "'delay' is str"),
    ({"channel": "out", "content": {}, "delay": True}, "'delay' is bool"),
    ({"channel": "out", "content": {}, "delay": -1}, "not between 0 and"),
    ({"channel": "out", "content": {}, "delay": math.inf}, "not between 0 and"),
    ({"channel": "out", "content": {}, "delay": MAX_DELAY + 1}, "not between 0 and"),
    ({"channel": "out", "content": {"b": b"\x00"}, "delay": 1}, "cannot be stored as JSON"),
]


@pytest.mark.parametrize(("message", "reason"), INVALID)
def test_invalid_message_is_logged_counted_and_the_server_goes_on(
    message: dict[str, Any], reason: str
) -> None:
    """An invalid message is logged with what is wrong and counted; the next valid one is sent."""
    d = Delay().start()
    with capturedLogs() as events:
        d.layer.send(DELAY_CHANNEL, message)
        d.delay("out", {"ok": 1}, 0)
    errors = [formatEvent(e) for e in events if e["log_level"] == LogLevel.error]
    assert len(errors) == 1 and reason in errors[0], errors
    assert "asgi.delay" in errors[0]
    assert d.service.invalid == 1
    assert d.take() == [{"ok": 1}]
    assert d.service.running


def test_check_accepts_a_float_delay() -> None:
    """check_delay_message returns channel, content and delay of a valid message."""
    ok = check_delay_message({"channel": "out", "content": {"a": 1}, "delay": 1.5}, str)
    assert ok == ("out", {"a": 1}, 1.5)


def test_full_channel_keeps_the_message_and_retries() -> None:
    """A due message that finds its channel full stays stored, is counted, and goes out later."""
    d = Delay(requeue_delay=1.0).start()
    for i in range(100):  # the layer's capacity
        d.layer.send("out", {"fill": i})
    with capturedLogs() as events:
        d.delay("out", {"late": True}, 500)
        d.advance(0.5)
    assert d.service.full == 1
    assert len(d.store.rows) == 1
    assert any("full" in formatEvent(e) for e in events if e["log_level"] == LogLevel.warn)
    assert len(d.take()) == 100  # the channel has room again
    d.advance(0.999)
    assert d.take() == []
    d.advance(0.001)
    assert d.take() == [{"late": True}]
    assert (d.service.sent, d.store.rows) == (1, {})


def test_restart_sends_what_the_store_holds_at_its_due_time() -> None:
    """A new service finds stored messages: overdue ones at start, the others at their due time."""
    reactor = ClockReactor()
    store = MemoryStore(reactor)
    store.add([("out", {"n": "overdue"}, 0), ("out", {"n": "soon"}, 700)])
    reactor.advance(0.2)
    d = Delay(reactor=reactor, store=store).start()
    assert [m["n"] for m in d.take()] == ["overdue"]
    d.advance(0.499)
    assert d.take() == []
    d.advance(0.001)
    assert [m["n"] for m in d.take()] == ["soon"]


def test_backlog_of_overdue_messages_is_sent_without_waiting_for_polls() -> None:
    """After a restart, more overdue messages than a batch all go out at once, in order."""
    reactor = ClockReactor()
    store = MemoryStore(reactor)
    store.add([("out", {"n": i}, 0) for i in range(250)])
    reactor.advance(5)
    layer = InMemoryChannelLayer(capacity=1000, expiry=3600)
    layer.attach_reactor(reactor)
    d = Delay(reactor=reactor, layer=layer, store=store, batch=100).start()
    assert [m["n"] for m in d.take()] == list(range(250))


def test_two_delay_servers_send_a_message_once() -> None:
    """Two services sharing the store and the layer both see a message; it is sent once."""
    reactor = ClockReactor()
    layer = InMemoryChannelLayer(expiry=3600)
    layer.attach_reactor(reactor)
    store = MemoryStore(reactor)
    a = Delay(reactor=reactor, layer=layer, store=store).start()
    b = Delay(reactor=reactor, layer=layer, store=store).start()
    a.delay("out", {"once": True}, 1500)
    for _ in range(4):
        reactor.advance(0.5)
        a.settle()
        b.settle()
    assert a.take() == [{"once": True}]
    assert a.service.sent + b.service.sent == 1
    assert "send" in store.calls[store.calls.index("send") + 1 :], "both tried to claim it"


def test_moved_due_date_is_respected() -> None:
    """A message whose due date another server moved later is sent at the new date."""
    d = Delay().start()
    d.delay("out", {"moved": True}, 1000)
    [(message_id, (due, channel, text))] = d.store.rows.items()
    d.store.rows[message_id] = (due + 1.0, channel, text)
    d.advance(1.0)
    assert d.take() == []
    d.advance(1.0)
    assert d.take() == [{"moved": True}]


def test_store_failure_keeps_the_received_messages_and_retries() -> None:
    """The store failing logs once, keeps what was received, and stores it once it works."""
    d = Delay().start()
    d.store.fail = RuntimeError("database is down")
    with capturedLogs() as events:
        d.delay("out", {"kept": True}, 0)
        d.advance(0.1)
        d.advance(0.5)
    failures = [e for e in events if e.get("log_failure") is not None]
    assert len(failures) == 1, [formatEvent(e) for e in events]
    assert d.service.stored == 0
    d.store.fail = None
    with capturedLogs() as events:
        d.advance(1.0)
    assert any("works again" in formatEvent(e) for e in events)
    assert d.take() == [{"kept": True}]


def test_stop_waits_for_what_was_received_then_leaves_no_timer() -> None:
    """stopService stores messages already received before it fires, and cancels its timers."""
    d = Delay().start()
    d.layer.send(DELAY_CHANNEL, {"channel": "out", "content": {}, "delay": 60_000})
    d.reactor.run_pending()  # received and checked; the pool has not run yet
    stopped: Deferred[None] = d.service.stopService()
    assert not stopped.called
    d.pool.run()
    assert stopped.called
    assert len(d.store.rows) == 1
    own = [c for c in d.reactor.getDelayedCalls() if c.func.__self__ is not d.layer]
    assert own == []


def test_stop_gives_up_after_its_timeout_and_says_what_is_lost() -> None:
    """A store that never works lets stopService fire after stop_timeout, the loss logged."""
    d = Delay(stop_timeout=5.0).start()
    d.store.fail = RuntimeError("database is down")
    d.delay("out", {}, 0)
    stopped = d.service.stopService()
    with capturedLogs() as events:
        for _ in range(6):
            d.advance(1.0)
    assert stopped.called
    assert any("not stored: they are lost" in formatEvent(e) for e in events)
    assert d.service.lost == 1


def test_bad_parameters_are_refused() -> None:
    """sleep must be positive and batch at least 1."""
    reactor = ClockReactor()
    with pytest.raises(ValueError, match="sleep"):
        DelayService(reactor, None, QueuedPool(), MemoryStore(reactor), sleep=0)
    with pytest.raises(ValueError, match="batch"):
        DelayService(reactor, None, QueuedPool(), MemoryStore(reactor), batch=0)
