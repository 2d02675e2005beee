"""
:class:`DelayedMessage`, a message waiting in the database for its due
time, as in Channels 1.x, and the one place that claims and sends it.  Pool
thread (or any thread outside the reactor's): every method queries the
database.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any, Literal

from django.db import models, router, transaction
from django.utils import timezone

from chanserv.exceptions import ChannelFull

__all__ = ["DelayedMessage", "DelayedMessageQuerySet", "SendOutcome"]

#: What :meth:`DelayedMessage.send` did: ``"sent"``; ``"gone"``, another
#: delay server claimed the row first (or it was deleted); ``"full"``, the
#: channel was full and the row waits ``requeue_delay`` more.
SendOutcome = Literal["sent", "gone", "full"]


class _Requeue(Exception):
    """Raised inside the claim's transaction to roll the delete back."""


class DelayedMessageQuerySet(models.QuerySet["DelayedMessage"]):
    """The queries of the delay server."""

    def is_due(self, now: datetime | None = None) -> DelayedMessageQuerySet:
        """Messages whose due date is ``now`` (default: ``timezone.now()``) or earlier."""
        return self.filter(due_date__lte=now or timezone.now())

    def due_within(self, seconds: float, now: datetime | None = None) -> DelayedMessageQuerySet:
        """
        Messages due in ``seconds`` from ``now`` or earlier, the earliest
        first (ties in the order they were stored).
        """
        now = now or timezone.now()
        return self.filter(due_date__lte=now + timedelta(seconds=seconds)).order_by(
            "due_date", "pk"
        )


class DelayedMessage(models.Model):
    """
    A message for ``channel_name``, its ``content`` as JSON, to be sent at
    ``due_date``.  Setting :attr:`delay` (milliseconds) sets ``due_date``.
    """

    due_date = models.DateTimeField(db_index=True)
    channel_name = models.CharField(max_length=512)
    content = models.TextField()

    objects = DelayedMessageQuerySet.as_manager()

    class Meta:
        # Stated, not derived from INSTALLED_APPS: a model imported before its
        # app is installed (API docs, the compatibility checks) would
        # otherwise join the enclosing ``chanserv`` app.
        app_label = "chanserv_delay"

    def __str__(self) -> str:
        return "message for %s due %s" % (self.channel_name, self.due_date)

    @property
    def delay(self) -> float:
        """The delay last set, in milliseconds."""
        return float(getattr(self, "_delay", 0))

    @delay.setter
    def delay(self, milliseconds: float) -> None:
        self._delay = milliseconds
        self.due_date = timezone.now() + timedelta(milliseconds=milliseconds)

    def send(self, channel_layer: Any = None, requeue_delay: float = 1000) -> SendOutcome:
        # Any: a channel layer or its ChannelLayerWrapper, or a third-party ASGI 1 layer;
        # only its send (and its ChannelFull, if it has one) is used.
        """
        Claim this message and send its content to its channel on
        ``channel_layer`` (default: the project's default layer), at once.

        The claim is the deletion of the row, in one transaction with the
        send: if another delay server deleted it first, nothing is sent
        (``"gone"``), so a message is never sent twice.  If the channel is
        full the deletion is rolled back and the message is due again in
        ``requeue_delay`` milliseconds (``"full"``).

        :raises ValueError: the stored content is not a JSON object (the
            row is kept: nothing was claimed).
        :raises TypeError: the channel name or the content is refused by
            the layer; MessageTooLarge and the layer's connection errors
            likewise propagate, the row kept.
        """
        if channel_layer is None:
            from chanserv.asgi import channel_layers
            from chanserv.channel import DEFAULT_CHANNEL_LAYER

            channel_layer = channel_layers[DEFAULT_CHANNEL_LAYER]
        content = json.loads(self.content)
        if not isinstance(content, dict):
            raise ValueError("the stored content is not a JSON object: %.80r" % (self.content,))
        full = getattr(channel_layer, "ChannelFull", ChannelFull)
        using = self._state.db or router.db_for_write(type(self), instance=self)
        rows = type(self).objects.using(using).filter(pk=self.pk)
        try:
            with transaction.atomic(using=using):
                deleted, _ = rows.delete()
                if not deleted:
                    return "gone"
                try:
                    channel_layer.send(self.channel_name, content)
                except full:
                    raise _Requeue() from None
        except _Requeue:
            self.delay = requeue_delay
            rows.update(due_date=self.due_date)
            return "full"
        return "sent"
