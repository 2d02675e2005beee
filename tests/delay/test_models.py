"""
DelayedMessage and DatabaseStore on the real test database (SQLite), and
DelayService on a clock over that database: what Channels 1.x's
tests/test_delay.py pinned, and the claim that makes a message go out once.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any
from unittest import mock

import pytest
from django.core.management import call_command
from zope.interface.verify import verifyObject

from chanserv.delay.service import DELAY_CHANNEL, DelayService
from chanserv.delay.store import DatabaseStore, IDelayStore
from chanserv.layers import InMemoryChannelLayer
from chanserv.testing import ClockReactor
from tests.delay.support import QueuedPool

pytestmark = pytest.mark.usefixtures("delay_db")

START = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)


def model() -> Any:
    from chanserv.delay.models import DelayedMessage

    return DelayedMessage


def make(content: Any = None, delay: float = 5000, channel: str = "out") -> Any:
    message = model()(
        channel_name=channel, content=json.dumps(content or {"test": "data"}), delay=delay
    )
    message.save()
    return message


def layer(capacity: int = 100) -> InMemoryChannelLayer:
    return InMemoryChannelLayer(capacity=capacity, expiry=3600)


def test_migration_matches_the_model() -> None:
    """The shipped migration creates the table the model describes (makemigrations --check)."""
    call_command("makemigrations", "chanserv_delay", check=True, dry_run=True, verbosity=0)
    assert model()._meta.db_table == "chanserv_delay_delayedmessage"


def test_delay_sets_the_due_date() -> None:
    """Setting delay (ms) sets due_date that far from now and reads back."""
    with mock.patch("django.utils.timezone.now", return_value=START):
        message = model()(channel_name="out", content="{}", delay=2500)
    assert message.due_date == START + timedelta(milliseconds=2500)
    assert message.delay == 2500


def test_is_due_lists_messages_once_their_date_is_past() -> None:
    """is_due() holds a message only from its due date on (Channels 1.x)."""
    message = make()
    assert model().objects.is_due().count() == 0
    later = message.due_date + timedelta(milliseconds=1)
    with mock.patch("django.utils.timezone.now", return_value=later):
        assert model().objects.is_due().count() == 1


def test_send_sends_the_content_and_deletes_the_row() -> None:
    """send() puts the stored content on its channel and deletes the row (Channels 1.x)."""
    memory = layer()
    message = make({"test": "value"})
    assert message.send(channel_layer=memory) == "sent"
    assert memory.receive(["out"]) == ("out", {"test": "value"})
    assert model().objects.count() == 0


def test_two_copies_of_a_row_send_it_once() -> None:
    """Two servers holding the same row: the one that deletes it sends; the other gets "gone"."""
    memory = layer()
    message = make({"once": True})
    first, second = model().objects.get(pk=message.pk), model().objects.get(pk=message.pk)
    assert (first.send(memory), second.send(memory)) == ("sent", "gone")
    assert memory.receive(["out"]) == ("out", {"once": True})
    assert memory.receive(["out"]) == (None, None)


def test_full_channel_keeps_the_row_due_again_later() -> None:
    """ChannelFull rolls the claim back: the row stays, due requeue_delay ms from now."""
    memory = layer(capacity=1)
    memory.send("out", {"blocker": True})
    message = make()
    with mock.patch("django.utils.timezone.now", return_value=START):
        assert message.send(memory, requeue_delay=1000) == "full"
    kept = model().objects.get(pk=message.pk)
    assert kept.due_date == START + timedelta(seconds=1)
    assert memory.receive(["out"]) == ("out", {"blocker": True})
    assert memory.receive(["out"]) == (None, None)


class Now:
    """A clock for DatabaseStore: START plus the test reactor's seconds."""

    def __init__(self, reactor: ClockReactor) -> None:
        self.reactor = reactor

    def __call__(self) -> datetime:
        return START + timedelta(seconds=self.reactor.seconds())


def test_store_provides_its_interface() -> None:
    """DatabaseStore provides IDelayStore."""
    assert verifyObject(IDelayStore, DatabaseStore())


def test_store_adds_and_lists_due_messages_earliest_first() -> None:
    """add() returns ids and seconds until due; due_within() lists the earliest first, limited."""
    reactor = ClockReactor()
    store = DatabaseStore(now=Now(reactor))
    results = store.add([("out", {"n": 1}, 3000), ("out", {"n": 2}, 1000), ("out", {"b": b""}, 0)])
    (a, due_a), (b, due_b), (missing, reason) = results
    assert (due_a, due_b) == (3.0, 1.0)
    assert missing is None and "cannot be stored as JSON" in str(reason)
    assert store.due_within(1.0, 10) == [(b, 1.0)]
    assert store.due_within(5.0, 1) == [(b, 1.0)]
    reactor.advance(4)
    assert store.due_within(0, 10) == [(b, -3.0), (a, -1.0)]


def test_store_send_outcomes() -> None:
    """send(): not_due before the date, sent once due, gone afterwards."""
    reactor = ClockReactor()
    store = DatabaseStore(now=Now(reactor))
    memory = layer()
    [(message_id, _)] = store.add([("out", {"x": 1}, 1000)])
    result = store.send(message_id, memory, 1.0)
    assert (result.outcome, result.channel, result.due_in) == ("not_due", "out", 1.0)
    reactor.advance(1)
    assert store.send(message_id, memory, 1.0).outcome == "sent"
    assert store.send(message_id, memory, 1.0).outcome == "gone"
    assert memory.receive(["out"]) == ("out", {"x": 1})


@pytest.mark.parametrize(
    ("channel", "content", "error"),
    [("out", "not json", "JSONDecodeError"), ("bad name!?", "{}", "TypeError")],
)
def test_store_removes_a_message_that_can_never_be_sent(
    channel: str, content: str, error: str
) -> None:
    """A row that can never be sent (bad JSON, bad channel) is removed and reported, content included."""
    row = model().objects.create(channel_name=channel, content=content, due_date=START)
    result = DatabaseStore(now=lambda: START).send(row.pk, layer(), 1.0)
    assert (result.outcome, result.channel) == ("failed", channel)
    assert error in result.error and content in result.error
    assert model().objects.count() == 0


def test_service_over_the_database_sends_on_time_and_after_a_restart() -> None:
    """Stored in the database, a message is sent at its due time, by a restarted server too."""
    reactor = ClockReactor()
    memory = layer()
    memory.attach_reactor(reactor)
    store = DatabaseStore(now=Now(reactor))

    def settle(pool: QueuedPool) -> None:
        for _ in range(50):
            reactor.run_pending()
            if not pool.run():
                return

    pool = QueuedPool()
    first = DelayService(reactor, memory, pool, store)
    first.startService()
    memory.send(DELAY_CHANNEL, {"channel": "out", "content": {"n": 1}, "delay": 1500})
    memory.send(DELAY_CHANNEL, {"channel": "out", "content": {"n": 2}, "delay": 2500})
    settle(pool)
    assert model().objects.count() == 2
    stopped = first.stopService()
    settle(pool)
    assert stopped.called

    reactor.advance(1.0)
    pool = QueuedPool()
    second = DelayService(reactor, memory, pool, DatabaseStore(now=Now(reactor)))
    second.startService()
    settle(pool)
    reactor.advance(0.499)
    settle(pool)
    assert memory.receive(["out"]) == (None, None)
    reactor.advance(0.001)
    settle(pool)
    assert memory.receive(["out"]) == ("out", {"n": 1})
    reactor.advance(1.0)
    settle(pool)
    assert memory.receive(["out"]) == ("out", {"n": 2})
    assert model().objects.count() == 0
    second.stopService()
    settle(pool)
