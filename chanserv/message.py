"""
:class:`Message`, what a consumer receives; the Channels 1.x names of the
pending-message store are importable from here too.  Pool threads (any
thread in a test's own consumer calls).
"""

from __future__ import annotations

import copy
from collections.abc import ItemsView, Iterator, KeysView, ValuesView
from typing import TYPE_CHECKING, Any

from chanserv.channel import (
    BLOCKED_TIMEOUT,
    Channel,
    PendingMessageStore,
    pending_message_store,
    send_waiting,
)
from chanserv.types import Content, Value

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser
    from django.contrib.auth.models import AnonymousUser
    from django.contrib.sessions.backends.base import SessionBase

__all__ = [
    "BLOCKED_TIMEOUT",
    "Message",
    "PendingMessageStore",
    "find_message",
    "pending_message_store",
    "send_waiting",
]


class Message:
    """
    A message being consumed: its ``content`` dict, the ``channel`` it came
    on and the ``channel_layer`` it came through.

    Dict-like for reading: ``message["text"]``, ``"text" in message``,
    ``.get``, ``.keys``, ``.values``, ``.items``.  ``reply_channel`` is a
    :class:`~chanserv.channel.Channel` for the content's ``reply_channel``,
    or None.  Decorators add the attributes declared below; each is absent
    until its decorator runs (``hasattr`` tells), so they have no default.
    """

    #: The channel session: :func:`~chanserv.sessions.channel_session`.
    channel_session: SessionBase
    #: The HTTP session, or None without a session key:
    #: :func:`~chanserv.sessions.http_session`.
    http_session: SessionBase | None
    #: The user: :func:`~chanserv.auth.channel_session_user`,
    #: :func:`~chanserv.auth.http_session_user` and the like.
    user: AbstractBaseUser | AnonymousUser
    #: True on the last run a ``ConsumeLater`` may requeue (set by the worker).
    __doomed__: bool

    def __init__(self, content: Content, channel_name: str, channel_layer: Any) -> None:
        # Any: the layer the message came through, as Channel takes it: a chanserv layer, its
        # ChannelLayerWrapper or a third-party ASGI 1 layer (Channels 1.x API).
        self.content = content
        self.channel_layer = channel_layer
        self.channel = Channel(channel_name, channel_layer=channel_layer)
        reply = content.get("reply_channel")
        self.reply_channel: Channel | None = (
            Channel(reply, channel_layer=channel_layer) if reply else None
        )

    def __getitem__(self, key: str) -> Value:
        return self.content[key]

    def __contains__(self, key: object) -> bool:
        return key in self.content

    def __iter__(self) -> Iterator[str]:
        return iter(self.content)

    def keys(self) -> KeysView[str]:
        return self.content.keys()

    def values(self) -> ValuesView[Value]:
        return self.content.values()

    def items(self) -> ItemsView[str, Value]:
        return self.content.items()

    def get(self, key: str, default: Value = None) -> Value:
        return self.content.get(key, default)

    def copy(self) -> Message:
        """A new Message with a deep copy of the content."""
        return self.__class__(copy.deepcopy(self.content), self.channel.name, self.channel_layer)

    def __repr__(self) -> str:
        return "<Message on %r: %r>" % (self.channel.name, sorted(self.content))


def find_message(args: tuple[object, ...], decorator: str) -> Message:
    """
    The :class:`Message` among the first two positional ``args`` (a
    function's ``message``, or a method's after ``self``): how the consumer
    decorators find it, on functions and methods alike.

    :raises ValueError: there is none.
    """
    for arg in args[:2]:
        if isinstance(arg, Message):
            return arg
    raise ValueError("%s called without Message instance" % (decorator,))
