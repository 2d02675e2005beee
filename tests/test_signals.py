"""The consumer lifecycle signals: any sender, receivers connected at any time."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import close_old_connections

from chanserv.signals import consumer_finished, consumer_started


def test_receivers_connected_after_a_send_are_called_with_any_sender() -> None:
    """A receiver connected after earlier sends is called, for any sender, while connected."""
    calls: list[Any] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        calls.append(sender)

    for sender in (None, object, "text"):
        consumer_started.send(sender=sender, environ={})  # fills the cache
        consumer_started.connect(receiver, weak=False, dispatch_uid="t-late")
        try:
            consumer_started.send(sender=sender, environ={})
        finally:
            consumer_started.disconnect(dispatch_uid="t-late")
        consumer_started.send(sender=sender, environ={})
    assert calls == [None, object, "text"]


def test_close_old_connections_is_connected_to_both_signals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """consumer_started and consumer_finished both close old database connections."""
    import django.db

    checked: list[bool] = []

    class Connections:
        def all(self, initialized_only: bool = False) -> list[Any]:
            checked.append(initialized_only)
            return []

    # close_old_connections looks the connections up when it runs.
    monkeypatch.setattr(django.db, "connections", Connections())
    for signal in (consumer_started, consumer_finished):
        checked.clear()
        signal.send(sender=None, environ={})
        assert checked, "close_old_connections is not connected to %r" % (signal,)
    assert close_old_connections.__module__ == "django.db"
