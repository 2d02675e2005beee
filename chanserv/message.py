"""
:class:`Message`, what a consumer receives, and the per-thread store that
buffers a consumer's sends until it finishes.

Consumer atomicity (as in Channels 1.x): between ``consumer_started`` and
``consumer_finished`` in one thread, ``Channel.send`` and ``Group.send``
validate and serialise the message at once -- so a bad message raises in the
consumer -- but hold it back; when the consumer returns *or raises*, the
held messages are sent in order.  ``immediately=True`` bypasses the buffer.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from chanserv.exceptions import ChannelBlocked, ChannelFull
from chanserv.log import Logger

if TYPE_CHECKING:
    from chanserv.channel import Channel
    from chanserv.layers.base import BaseChannelLayer, Prepared

log = Logger()

__all__ = ["BLOCKED_TIMEOUT", "Message", "PendingMessageStore", "pending_message_store"]

#: Seconds a send may wait on a channel its interface server blocked
#: (``ChannelBlocked``: the client takes its messages slowly).  The
#: interface ends a block when the client catches up, and when it cuts a
#: client that reads nothing (``--http-timeout``, 120 s): this is only the
#: safety net above that.
BLOCKED_TIMEOUT = 300.0


class Message:
    """
    A message being consumed: its ``content`` dict, the ``channel`` it came
    on and the ``channel_layer`` it came through.

    Dict-like for reading: ``message["text"]``, ``"text" in message``,
    ``.get``, ``.keys``, ``.values``, ``.items``.  ``reply_channel`` is a
    :class:`~chanserv.channel.Channel` for the content's ``reply_channel``,
    or None.  Decorators add attributes (``channel_session``, ``user``...).
    """

    def __init__(self, content: dict[str, Any], channel_name: str, channel_layer: Any) -> None:
        from chanserv.channel import Channel

        self.content = content
        self.channel_layer = channel_layer
        self.channel = Channel(channel_name, channel_layer=channel_layer)
        reply = content.get("reply_channel")
        self.reply_channel: Channel | None = (
            Channel(reply, channel_layer=channel_layer) if reply else None
        )

    def __getitem__(self, key: str) -> Any:
        return self.content[key]

    def __contains__(self, key: object) -> bool:
        return key in self.content

    def __iter__(self) -> Iterator[str]:
        return iter(self.content)

    def keys(self) -> Any:
        return self.content.keys()

    def values(self) -> Any:
        return self.content.values()

    def items(self) -> Any:
        return self.content.items()

    def get(self, key: str, default: Any = None) -> Any:
        return self.content.get(key, default)

    def copy(self) -> Message:
        """A new Message with a deep copy of the content."""
        return self.__class__(copy.deepcopy(self.content), self.channel.name, self.channel_layer)

    def __repr__(self) -> str:
        return "<Message on %r: %r>" % (self.channel.name, sorted(self.content))


class PendingMessageStore:
    """
    Sends held back per thread while a consumer runs.

    :meth:`activate` and :meth:`send_and_flush` are connected to
    ``consumer_started`` and ``consumer_finished``; in a thread that is not
    running a consumer, :meth:`append` returns False and the caller sends at
    once.  A flush that meets ``ChannelFull`` waits for room (pushed by the
    layer, not polled) up to :attr:`full_timeout` seconds per message, then
    logs the message as lost and goes on with the rest; a channel its
    interface server blocked (a slow client) is waited on up to
    :attr:`blocked_timeout` (see :func:`send_waiting`).
    """

    full_timeout = 2.0
    blocked_timeout = BLOCKED_TIMEOUT

    def __init__(self) -> None:
        self._local = threading.local()

    def activate(self, **kwargs: Any) -> None:
        self._local.active = True
        self._local.pending = []

    def is_active(self) -> bool:
        return getattr(self._local, "active", False)

    def append(self, layer: BaseChannelLayer, kind: str, name: str, data: Prepared) -> bool:
        """Hold a prepared send (``kind`` is "channel" or "group")."""
        if not getattr(self._local, "active", False):
            return False
        self._local.pending.append((layer, kind, name, data))
        return True

    def send_and_flush(self, **kwargs: Any) -> None:
        """
        Send this thread's held messages, in order, and stop holding.  A send
        that fails (the channel stayed full, the layer is unreachable) is
        logged and the rest are still sent; nothing is raised.
        """
        pending = getattr(self._local, "pending", [])
        self._local.active = False
        self._local.pending = []
        for layer, kind, name, data in pending:
            try:
                if kind == "group":
                    layer.send_group_prepared(name, data)
                else:
                    self._send(layer, name, data)
            except Exception:
                log.failure(
                    "A message the consumer sent to {kind} {name} could not be sent",
                    kind=kind,
                    name=name,
                )

    def _send(self, layer: BaseChannelLayer, name: str, data: Prepared) -> None:
        try:
            send_waiting(layer, name, data, self.full_timeout, self.blocked_timeout)
        except ChannelFull:
            log.error(
                "Channel {channel} stayed full for {timeout}s; a message "
                "sent by the consumer was dropped",
                channel=name,
                timeout=self.full_timeout,
            )


def send_waiting(
    layer: Any,
    channel: str,
    data: Prepared,
    timeout: float,
    blocked_timeout: float = BLOCKED_TIMEOUT,
) -> None:
    """
    Send a prepared message, through the layer's ``send_prepared_wait``
    where it has one (woken by the layer, not polled; it also paces a
    thread that runs ahead of the interface server): if ``channel`` is
    full, wait up to ``timeout`` seconds for room; while its interface
    server keeps it blocked (:class:`~chanserv.exceptions.ChannelBlocked`:
    its client is slow, not gone), wait on, up to ``blocked_timeout``
    seconds in all.  A worker thread: it may block.

    :raises ChannelFull: still full after ``timeout`` (ChannelBlocked:
        still blocked after ``blocked_timeout``).
    """
    wait = getattr(layer, "send_prepared_wait", None)
    if wait is None:
        layer.send_prepared(channel, data)
        return
    started = time.monotonic()
    while True:
        try:
            wait(channel, data, timeout)
            return
        except ChannelBlocked:
            if time.monotonic() - started >= blocked_timeout:
                raise


pending_message_store = PendingMessageStore()
