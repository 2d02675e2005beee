"""
The order and the waits of handed-off sends (HandedOffSends), on a
task.Clock, with fake sends whose answers the tests give; and the bounds of
what hand-offs hold in flight (HandOffBudget).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from chanserv.exceptions import ChannelBlocked, ChannelFull
from chanserv.layers.redis.handoff import HandedOffSends, HandOffBudget, HeldSend, SendFailure

FULL_TIMEOUT = 2.0
BLOCKED_TIMEOUT = 5.0


def channel(name: str) -> HeldSend:
    return HeldSend("channel", name, b"to " + name.encode())


def group(name: str) -> HeldSend:
    return HeldSend("group", name, b"to " + name.encode())


class FakeSends:
    """
    The three sends HandedOffSends makes, each answered by the test through
    the Deferred it returned; ``issued`` lists them in the order they were
    made, as ``(call, name)`` (``"send_wait"`` with its timeout).
    """

    def __init__(self) -> None:
        self.issued: list[tuple[Any, ...]] = []
        self.deferreds: list[Deferred[None]] = []
        self.clock = Clock()
        self.done: list[list[SendFailure]] = []

    def _issue(self, *call: Any) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.issued.append(call)
        self.deferreds.append(d)
        return d

    def send(self, name: str, payload: bytes, sink: Any) -> None:
        assert payload == b"to " + name.encode()
        self._issue("send", name).addCallbacks(sink.callback, sink.errback)

    def send_wait(self, name: str, payload: bytes, timeout: float) -> Deferred[None]:
        assert payload == b"to " + name.encode()
        return self._issue("send_wait", name, timeout)

    def send_group(self, name: str, payload: bytes) -> Deferred[None]:
        assert payload == b"to " + name.encode()
        return self._issue("send_group", name)

    def start(self, sends: list[HeldSend], done: Any = None) -> HandedOffSends:
        handed = HandedOffSends(
            sends,
            self.send,
            self.send_wait,
            self.send_group,
            self.clock,
            FULL_TIMEOUT,
            BLOCKED_TIMEOUT,
            done if done is not None else self.done.append,
        )
        handed.start()
        return handed

    def answer(self, i: int) -> None:
        """The i-th send issued went through."""
        self.deferreds[i].callback(None)

    def refuse(self, i: int, error: Exception) -> None:
        """The i-th send issued failed with ``error``."""
        self.deferreds[i].errback(error)


def failed(failures: list[SendFailure]) -> list[tuple[str, type[BaseException] | None]]:
    """(name, exception type) of each failure, in order."""
    return [(f.send.name, f.failure.type) for f in failures]


# -- order ----------------------------------------------------------------------


def test_consecutive_channel_sends_go_out_together() -> None:
    """Consecutive channel sends are all issued at once, before any answer; done once all are."""
    fake = FakeSends()
    fake.start([channel("a"), channel("b"), channel("c")])
    assert fake.issued == [("send", "a"), ("send", "b"), ("send", "c")]
    fake.answer(1)
    fake.answer(0)
    assert fake.done == []
    fake.answer(2)
    assert fake.done == [[]]
    assert len(fake.issued) == 3


def test_a_group_send_waits_for_the_channel_sends_before_it() -> None:
    """A group send goes once the channel sends before it are through; what follows, once it is."""
    fake = FakeSends()
    fake.start([channel("a"), channel("b"), group("g"), channel("c"), channel("d")])
    assert fake.issued == [("send", "a"), ("send", "b")]
    fake.answer(0)
    assert len(fake.issued) == 2
    fake.answer(1)
    assert fake.issued[2:] == [("send_group", "g")]
    fake.clock.advance(60)  # nothing goes on time alone
    assert len(fake.issued) == 3
    fake.answer(2)
    assert fake.issued[3:] == [("send", "c"), ("send", "d")]
    fake.answer(3)
    fake.answer(4)
    assert fake.done == [[]]


def test_consecutive_group_sends_go_one_at_a_time() -> None:
    """Group sends in a row go one after the other, each once the previous one is through."""
    fake = FakeSends()
    fake.start([group("g1"), group("g2"), channel("a")])
    assert fake.issued == [("send_group", "g1")]
    fake.answer(0)
    assert fake.issued[1:] == [("send_group", "g2")]
    fake.answer(1)
    assert fake.issued[2:] == [("send", "a")]
    fake.answer(2)
    assert fake.done == [[]]


def test_nothing_to_send_is_done_at_once() -> None:
    """An empty hand-off calls done([]) at start, once."""
    fake = FakeSends()
    fake.start([])
    assert fake.issued == []
    assert fake.done == [[]]


# -- full and blocked channels ----------------------------------------------------


def test_full_refusals_are_retried_waiting_in_order_before_the_rest() -> None:
    """
    Sends refused as full are retried with send_wait(full_timeout) one at a
    time in their order (not the order of the answers), and the sends after
    the batch wait for the retries.
    """
    fake = FakeSends()
    fake.start([channel("a"), channel("b"), channel("c"), group("g")])
    fake.refuse(2, ChannelFull("c"))
    fake.refuse(0, ChannelFull("a"))
    assert len(fake.issued) == 3  # b still out
    fake.answer(1)
    assert fake.issued[3:] == [("send_wait", "a", FULL_TIMEOUT)]
    fake.answer(3)
    assert fake.issued[4:] == [("send_wait", "c", FULL_TIMEOUT)]
    fake.answer(4)
    assert fake.issued[5:] == [("send_group", "g")]
    fake.answer(5)
    assert fake.done == [[]]


def test_a_channel_that_stays_full_is_reported_and_the_rest_go() -> None:
    """A retry that fails with ChannelFull is a SendFailure; the next retry and the rest go."""
    fake = FakeSends()
    fake.start([channel("a"), channel("b"), channel("c")])
    fake.refuse(0, ChannelFull("a"))
    fake.refuse(1, ChannelFull("b"))
    fake.answer(2)
    assert fake.issued[3:] == [("send_wait", "a", FULL_TIMEOUT)]
    fake.clock.advance(FULL_TIMEOUT)
    fake.refuse(3, ChannelFull("a"))
    assert fake.issued[4:] == [("send_wait", "b", FULL_TIMEOUT)]  # a is not tried again
    fake.answer(4)
    assert [failed(f) for f in fake.done] == [[("a", ChannelFull)]]
    assert fake.done[0][0].send == channel("a")


def test_a_blocked_channel_is_waited_on_up_to_blocked_timeout() -> None:
    """
    A retry refused as blocked is tried again while less than blocked_timeout
    has passed on the clock since the retries began; then it is a SendFailure.
    """
    fake = FakeSends()
    fake.start([channel("a"), channel("b")])
    fake.refuse(0, ChannelFull("a"))
    fake.answer(1)
    assert fake.issued[2:] == [("send_wait", "a", FULL_TIMEOUT)]
    waits = 0
    while fake.clock.seconds() < BLOCKED_TIMEOUT:
        fake.clock.advance(FULL_TIMEOUT)
        fake.refuse(len(fake.issued) - 1, ChannelBlocked("a"))
        waits += 1
        if fake.clock.seconds() < BLOCKED_TIMEOUT:
            assert fake.issued[-1] == ("send_wait", "a", FULL_TIMEOUT)
            assert fake.done == []
    # Refused at 2 s and 4 s (tried again), then at 6 s: given up.
    assert waits == 3
    assert len(fake.issued) == 2 + 3
    assert [failed(f) for f in fake.done] == [[("a", ChannelBlocked)]]


def test_a_blocked_channel_unblocked_in_time_is_sent() -> None:
    """A blocked channel unblocked before blocked_timeout gets its message; nothing fails."""
    fake = FakeSends()
    fake.start([channel("a"), group("g")])
    fake.refuse(0, ChannelFull("a"))
    fake.clock.advance(FULL_TIMEOUT)
    fake.refuse(1, ChannelBlocked("a"))
    assert fake.issued[2:] == [("send_wait", "a", FULL_TIMEOUT)]
    fake.answer(2)
    assert fake.issued[3:] == [("send_group", "g")]
    fake.answer(3)
    assert fake.done == [[]]


# -- other failures ---------------------------------------------------------------


def test_other_failures_are_reported_at_once_and_the_rest_still_go() -> None:
    """A channel or group send failing otherwise is a SendFailure, not retried; the rest go."""
    fake = FakeSends()
    fake.start([channel("a"), channel("b"), group("g"), channel("c")])
    fake.refuse(0, ConnectionError("layer unreachable"))
    fake.answer(1)
    assert fake.issued[2:] == [("send_group", "g")]  # a not retried
    fake.refuse(2, ConnectionError("layer unreachable"))
    assert fake.issued[3:] == [("send", "c")]
    assert fake.done == []
    fake.answer(3)
    assert [failed(f) for f in fake.done] == [[("a", ConnectionError), ("g", ConnectionError)]]
    assert fake.done[0][1].send == group("g")


def test_done_is_called_once_even_if_it_raises() -> None:
    """done runs exactly once with the failures; an error in it is logged, not repeated."""
    calls: list[list[SendFailure]] = []

    def done(failures: list[SendFailure]) -> None:
        calls.append(failures)
        raise RuntimeError("done failed (expected by the test)")

    fake = FakeSends()
    fake.start([channel("a"), channel("b")], done=done)
    fake.refuse(0, ConnectionError("layer unreachable"))
    with capturedLogs() as events:
        fake.answer(1)
    assert [failed(f) for f in calls] == [[("a", ConnectionError)]]
    assert [e["log_format"] for e in events] == ["Sending handed-off messages failed"]


def test_a_send_function_that_raises_reports_every_send_not_made() -> None:
    """
    A send that raises instead of failing its Deferred (a bug) ends the
    hand-off, logged, with every send not known to be made reported lost,
    never silently missing.
    """
    fake = FakeSends()
    issued = fake.send

    def send(name: str, payload: bytes, sink: Any) -> None:
        if name == "c":
            raise RuntimeError("send broke (expected by the test)")
        issued(name, payload, sink)

    fake.send = send  # type: ignore[method-assign]
    with capturedLogs() as events:
        fake.start([channel("a"), channel("b"), group("g")])
        fake.answer(0)
        fake.start([channel("b2"), channel("c"), channel("d")])
    assert failed(fake.done[0]) == [
        ("b2", RuntimeError),
        ("c", RuntimeError),
        ("d", RuntimeError),
    ]
    assert [e["log_format"] for e in events] == ["Sending handed-off messages failed"]
    # The first hand-off is untouched: it goes on once b answers.
    fake.answer(1)
    fake.answer(3)
    assert len(fake.done) == 2 and fake.done[1] == []


# -- budget -----------------------------------------------------------------------


def test_budget_takes_within_its_bounds_and_refuses_beyond() -> None:
    """take() reserves while both bounds hold, refuses beyond either, and give_back frees room."""
    budget = HandOffBudget(max_messages=10, max_bytes=100)
    assert budget.take(5, 50)
    assert budget.take(5, 50)  # exactly at both bounds
    assert (budget.messages, budget.bytes) == (10, 100)
    assert not budget.take(1, 0)  # one message too many
    budget.give_back(5, 50)
    assert not budget.take(1, 51)  # one byte too many
    assert not budget.take(6, 1)
    assert (budget.messages, budget.bytes) == (5, 50)
    assert budget.take(5, 50)
    budget.give_back(5, 50)
    budget.give_back(5, 50)
    assert (budget.messages, budget.bytes) == (0, 0)


def test_budget_takes_one_oversize_hand_off_when_nothing_is_in_flight() -> None:
    """With nothing in flight a hand-off of any size is taken; then nothing more until it is back."""
    budget = HandOffBudget(max_messages=10, max_bytes=100)
    assert budget.take(50, 1000)
    assert not budget.take(1, 1)
    budget.give_back(50, 1000)
    assert (budget.messages, budget.bytes) == (0, 0)
    assert budget.take(1, 1)
