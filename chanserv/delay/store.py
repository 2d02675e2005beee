"""
Where the delay server keeps its messages: :class:`IDelayStore`, the
contract :class:`~chanserv.delay.service.DelayService` relies on, and
:class:`DatabaseStore`, which keeps them as
:class:`~chanserv.delay.models.DelayedMessage` rows.  Every method of a
store runs in a pool thread: it may block on the database.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple, TypeVar

from zope.interface import Interface, implementer

from chanserv.exceptions import MessageTooLarge
from chanserv.types import Content

__all__ = ["DatabaseStore", "IDelayStore", "SendResult", "Stored", "ToStore"]

#: A validated message for the store: ``(channel, content, delay in ms)``.
ToStore = tuple[str, Content, float]

#: What :meth:`IDelayStore.add` made of one message: ``(id, seconds until
#: due)``, or ``(None, why it cannot be stored)``.
Stored = tuple[int, float] | tuple[None, str]


class SendResult(NamedTuple):
    """What :meth:`IDelayStore.send` did with one message."""

    #: ``sent``; ``gone`` (another delay server sent it, or it was deleted);
    #: ``full`` (the channel was full: due again in ``due_in``);
    #: ``not_due`` (its due date moved: due in ``due_in``); ``failed`` (it can
    #: never be sent and was removed: ``error`` says why).
    outcome: Literal["sent", "gone", "full", "not_due", "failed"]
    channel: str = ""
    due_in: float = 0.0
    error: str = ""


class IDelayStore(Interface):
    """
    Durable storage of delayed messages, shared by every delay server of a
    site.  Each method is called from a pool thread, one call at a time per
    delay server.
    """

    def add(messages: Sequence[ToStore]) -> list[Stored]:
        """
        Store each of ``messages``, due ``delay`` ms from now; one result
        per message, in order.  A message that cannot be stored (content
        not representable) gets ``(None, reason)``; the others are stored.
        """

    def due_within(seconds: float, limit: int) -> list[tuple[int, float]]:
        """
        Up to ``limit`` ``(id, seconds until due)`` of the messages due in
        ``seconds`` or earlier (overdue: negative), the earliest first.
        """

    def send(message_id: int, layer: Any, requeue_delay: float) -> SendResult:
        # Any: the channel layer's synchronous face (IChannelLayer) or a third-party ASGI 1
        # layer, of which only send and ChannelFull are used.
        """
        Claim message ``message_id`` if it is due and send it on ``layer``
        (its synchronous face); at most one caller of all the site's delay
        servers sends it.  ``requeue_delay``: seconds a message that found
        its channel full waits before the next attempt.

        :raises Exception: the database or the layer failed (the message
            is kept for a later attempt).
        """


_R = TypeVar("_R")


def _connections_checked(method: Callable[..., _R]) -> Callable[..., _R]:
    """
    Bracket a store method as Django brackets a request (and the worker a
    consumer): connections past ``CONN_MAX_AGE`` or broken are closed
    before and after, so a database restart is survived.
    """

    @functools.wraps(method)
    def checked(*args: Any, **kwargs: Any) -> _R:
        # Any: the wrapped method's own arguments.
        from django.db import close_old_connections

        close_old_connections()
        try:
            return method(*args, **kwargs)
        finally:
            close_old_connections()

    return checked


#: A message due this close (seconds) is sent rather than rescheduled: the
#: reactor's and the database's clocks are read at slightly different times.
DUE_TOLERANCE = 0.01


@implementer(IDelayStore)
class DatabaseStore:
    """
    :class:`IDelayStore` on the ``DelayedMessage`` table of the database
    ``using`` (Django's alias).  ``now`` returns the current time (default
    ``django.utils.timezone.now``), replaceable in tests.
    """

    def __init__(self, using: str = "default", now: Callable[[], datetime] | None = None) -> None:
        from django.utils import timezone

        self.using = using
        self.now = now or timezone.now

    def _manager(self) -> Any:
        # Any: DelayedMessage's manager (a DelayedMessageQuerySet) on the chosen database.
        from chanserv.delay.models import DelayedMessage

        return DelayedMessage.objects.using(self.using)

    @_connections_checked
    def add(self, messages: Sequence[ToStore]) -> list[Stored]:
        from django.db import transaction

        from chanserv.delay.models import DelayedMessage

        now = self.now()
        results: list[Stored] = []
        rows: list[tuple[int, DelayedMessage]] = []
        for index, (channel, content, delay) in enumerate(messages):
            try:
                text = json.dumps(content)
            except (TypeError, ValueError) as e:
                # bytes, for one: the 1.x table keeps content as JSON.
                results.append((None, "its content cannot be stored as JSON (%s)" % (e,)))
                continue
            row = DelayedMessage(
                channel_name=channel,
                content=text,
                due_date=now + timedelta(milliseconds=delay),
            )
            results.append((0, delay / 1000.0))
            rows.append((index, row))
        with transaction.atomic(using=self.using):
            for index, row in rows:
                row.save(using=self.using)
                results[index] = (row.pk, results[index][1])  # type: ignore[assignment]
        return results

    @_connections_checked
    def due_within(self, seconds: float, limit: int) -> list[tuple[int, float]]:
        now = self.now()
        rows = self._manager().due_within(seconds, now).values_list("pk", "due_date")[:limit]
        return [(pk, (due - now).total_seconds()) for pk, due in rows]

    @_connections_checked
    def send(self, message_id: int, layer: Any, requeue_delay: float) -> SendResult:
        # Any: see IDelayStore.send.
        message = self._manager().filter(pk=message_id).first()
        if message is None:
            return SendResult("gone")
        channel = message.channel_name
        due_in = (message.due_date - self.now()).total_seconds()
        if due_in > DUE_TOLERANCE:
            return SendResult("not_due", channel, due_in)
        too_large = getattr(layer, "MessageTooLarge", MessageTooLarge)
        try:
            outcome = message.send(layer, requeue_delay=requeue_delay * 1000)
        except (TypeError, ValueError, too_large) as e:
            # It can never be sent (a row written by hand or by an older
            # version, or a layer with a smaller limit): keep it from being
            # retried forever; the service logs it with its content.
            self._manager().filter(pk=message_id).delete()
            return SendResult(
                "failed",
                channel,
                error="%s: %s; content: %.200s" % (type(e).__name__, e, message.content),
            )
        if outcome == "full":
            return SendResult("full", channel, requeue_delay)
        return SendResult(outcome, channel)
