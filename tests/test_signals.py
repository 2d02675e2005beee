"""The consumer lifecycle signals: any sender, receivers connected at any time."""

from __future__ import annotations

from typing import Any

from django.db import close_old_connections

from chanserv.signals import consumer_finished, consumer_started


def test_receivers_connected_after_a_send_are_called_with_any_sender() -> None:
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


def test_close_old_connections_is_connected_to_both_signals() -> None:
    for signal in (consumer_started, consumer_finished):
        receivers = [r for r in signal._live_receivers(None)[0]]
        assert close_old_connections in receivers
