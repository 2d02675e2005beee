"""
:class:`Channel` and :class:`Group`, the public way to send, and
:data:`pending_message_store`, which holds a consumer's sends until it
finishes.  Sends are checked in the caller's thread, which may be any
thread; the store is per thread and is used in the pool thread running a
consumer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from twisted.python.failure import Failure

from chanserv.asgi import ChannelLayerWrapper, channel_layers
from chanserv.exceptions import ChannelBlocked, ChannelFull
from chanserv.log import Logger
from chanserv.types import Content

if TYPE_CHECKING:
    from chanserv.interfaces import IChannelLayer
    from chanserv.layers.base import BaseChannelLayer, Prepared

log = Logger()

__all__ = [
    "BLOCKED_TIMEOUT",
    "DEFAULT_CHANNEL_LAYER",
    "Channel",
    "Group",
    "PendingMessageStore",
    "pending_message_store",
    "send_waiting",
]

DEFAULT_CHANNEL_LAYER = "default"

#: Seconds a send may wait on a channel its interface server blocked
#: (``ChannelBlocked``: the client takes its messages slowly).  The
#: interface ends a block when the client catches up, and when it cuts a
#: client that reads nothing (``--http-timeout``, 120 s): this is only the
#: safety net above that.
BLOCKED_TIMEOUT = 300.0


def _resolve(alias: str, channel_layer: Any) -> Any:
    if channel_layer is not None:
        return channel_layer
    return channel_layers[alias]


class _Named:
    """A name on a channel layer, resolved by alias on first use."""

    def __init__(
        self, name: str, alias: str = DEFAULT_CHANNEL_LAYER, channel_layer: Any = None
    ) -> None:
        if isinstance(name, bytes):
            name = name.decode("ascii")
        self.name = name
        self.alias = alias
        self._layer = channel_layer

    @property
    def channel_layer(self) -> Any:
        if self._layer is None:
            self._layer = _resolve(self.alias, None)
        return self._layer


class Channel(_Named):
    """
    A named channel.  ``Channel("chat-messages").send({...})``.

    :raises TypeError: on ``send`` when the content is not a dict, the name is
        invalid, or the content holds a value no layer can carry.
    """

    def send(self, content: Content, immediately: bool = False) -> None:
        """
        Send ``content``; held until the running consumer finishes unless
        ``immediately`` (or outside a consumer).  May raise ChannelFull when
        sent at once.
        """
        if not isinstance(content, dict):
            raise TypeError("You can only send dicts as content on channels.")
        layer = self.channel_layer
        layer.valid_channel_name(self.name)
        data = layer.prepare(content)
        if immediately or not pending_message_store.append(layer, "channel", self.name, data):
            layer.send_prepared(self.name, data)

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return "<Channel %s>" % (self.name,)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Channel) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)


class Group(_Named):
    """
    A named group of channels.  ``Group("chat").add(message.reply_channel)``.
    """

    @staticmethod
    def _channel_name(channel: Channel | str) -> str:
        if isinstance(channel, Channel):
            return channel.name
        if isinstance(channel, bytes):
            return channel.decode("ascii")
        return channel

    def add(self, channel: Channel | str) -> None:
        """Add a channel (a :class:`Channel` or a name); idempotent."""
        self.channel_layer.group_add(self.name, self._channel_name(channel))

    def discard(self, channel: Channel | str) -> None:
        """Remove a channel; no error if it is not a member."""
        self.channel_layer.group_discard(self.name, self._channel_name(channel))

    def channel_names(self) -> list[str]:
        return list(self.channel_layer.group_channels(self.name))

    def send(self, content: Content, immediately: bool = False) -> None:
        """
        Send ``content`` to every member (full members are skipped).

        :raises ValueError: the content is not a dict.
        """
        if not isinstance(content, dict):
            raise ValueError("You can only send dicts as content on channels.")
        layer = self.channel_layer
        layer.valid_group_name(self.name)
        data = layer.prepare(content)
        if immediately or not pending_message_store.append(layer, "group", self.name, data):
            layer.send_group_prepared(self.name, data)

    def __repr__(self) -> str:
        return "<Group %s>" % (self.name,)


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
    :attr:`blocked_timeout` (see :func:`send_waiting`).  Every held send
    that could not be sent is counted in :attr:`dropped` (exported as
    ``chanserv_messages_dropped_total{reason="send_failed"}``).

    A worker that calls :meth:`expect_hand_off` before running a consumer
    lets the flush hand the sends to a layer providing
    :class:`~chanserv.interfaces.ISendHandOff`: the layer makes them, in
    the same order and with the same waits, from the reactor thread, and
    the worker thread goes on at once.
    """

    full_timeout = 2.0
    blocked_timeout = BLOCKED_TIMEOUT

    def __init__(self) -> None:
        self._local = threading.local()
        self._dropped_lock = threading.Lock()
        #: Held sends dropped since the process started: the channel stayed
        #: full (or blocked), or the layer failed.  Read from any thread.
        self.dropped = 0

    def activate(self, **kwargs: object) -> None:
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

    def expect_hand_off(self, on_sent: Callable[[], None]) -> None:
        """
        Let this thread's next :meth:`send_and_flush` hand its sends to the
        layer (when it provides ``ISendHandOff`` and takes them);
        ``on_sent()`` then runs on the reactor thread once they are all
        through -- sent, or dropped (counted and logged).  The worker thread
        about to run a consumer; :meth:`handed_off` tells afterwards.
        """
        self._local.on_sent = on_sent
        self._local.handed_off = False

    def handed_off(self) -> bool:
        """
        Whether the flush since :meth:`expect_hand_off` handed its sends off
        (then ``on_sent`` runs, once); forgets the expectation.  The same
        worker thread.
        """
        local = self._local
        handed = getattr(local, "handed_off", False)
        local.handed_off = False
        local.on_sent = None
        return handed

    def send_and_flush(self, hand_off: bool = True, **kwargs: object) -> None:
        """
        Send this thread's held messages, in order, and stop holding.  A send
        that fails (the channel stayed full, the layer is unreachable) is
        logged and counted in :attr:`dropped`, and the rest are still sent;
        nothing is raised.

        :param hand_off: False: send them from this thread even when a hand-off
            is expected (a flush in the middle of a consumer).
        """
        local = self._local
        pending = getattr(local, "pending", [])
        local.active = False
        local.pending = []
        on_sent = getattr(local, "on_sent", None) if hand_off else None
        if on_sent is not None:
            local.on_sent = None
            if pending and self._hand_off(pending, on_sent):
                local.handed_off = True
                return
        for layer, kind, name, data in pending:
            try:
                if kind == "group":
                    layer.send_group_prepared(name, data)
                else:
                    send_waiting(layer, name, data, self.full_timeout, self.blocked_timeout)
            except Exception:
                self._dropped(kind, name, Failure())

    def _hand_off(
        self, pending: list[tuple[Any, str, str, Prepared]], on_sent: Callable[[], None]
    ) -> bool:
        layer = pending[0][0]
        hand_off = getattr(layer, "hand_off_sends", None)
        if hand_off is None or any(item[0] is not layer for item in pending):
            return False
        try:
            return bool(
                hand_off(
                    [(kind, name, data) for _, kind, name, data in pending],
                    self.full_timeout,
                    self.blocked_timeout,
                    partial(self._handed_off_sent, on_sent),
                )
            )
        except Exception:
            # Not taken (it raised before taking anything): sent from here.
            log.failure("Handing held messages to {layer} failed; sending them here", layer=layer)
            return False

    def _handed_off_sent(self, on_sent: Callable[[], None], failures: list[Any]) -> None:
        # Reactor thread: a hand-off is through.
        for failed in failures:
            self._dropped(failed.send.kind, failed.send.name, failed.failure)
        try:
            on_sent()
        except Exception:
            log.failure("Error after sending handed-off messages")

    def _dropped(self, kind: str, name: str, failure: Failure) -> None:
        # A held send given up, from this thread or from a hand-off.
        self._count_dropped()
        if kind == "channel" and failure.check(ChannelFull):
            log.error(
                "Channel {channel} stayed full for {timeout}s; a message "
                "sent by the consumer was dropped",
                channel=name,
                timeout=self.full_timeout,
            )
        else:
            log.failure(
                "A message the consumer sent to {kind} {name} could not be sent",
                failure,
                kind=kind,
                name=name,
            )

    def _count_dropped(self) -> None:
        # Several pool threads may drop at once; this is the drop path only.
        with self._dropped_lock:
            self.dropped += 1


def send_waiting(
    layer: BaseChannelLayer | IChannelLayer | ChannelLayerWrapper,
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
        _send_backing_off(layer, channel, data, timeout)
        return
    started = time.monotonic()
    while True:
        try:
            wait(channel, data, timeout)
            return
        except ChannelBlocked:
            if time.monotonic() - started >= blocked_timeout:
                raise


def _send_backing_off(layer: Any, channel: str, data: Prepared, timeout: float) -> None:
    """
    :func:`send_waiting` for a layer that cannot tell when there is room:
    try again with a bounded back-off (5 ms doubling to 250 ms) for up to
    ``timeout`` seconds.  A worker thread.
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    pause = threading.Event()
    while True:
        try:
            layer.send_prepared(channel, data)
            return
        except ChannelFull:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise
        pause.wait(min(delay, remaining))
        delay = min(delay * 2, 0.25)


pending_message_store = PendingMessageStore()
