"""
:class:`Message`, what a consumer receives.

The store that holds a consumer's sends until it finishes lives with the
sending, in :mod:`chanserv.channel`; its names are importable from here too,
where Channels 1.x kept them (``channels.message.pending_message_store``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from chanserv.channel import (
    BLOCKED_TIMEOUT,
    Channel,
    PendingMessageStore,
    pending_message_store,
    send_waiting,
)

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

    def __init__(self, content: dict[str, Any], channel_name: str, channel_layer: Any) -> None:
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


def find_message(args: tuple[Any, ...], decorator: str) -> Message:
    """
    The :class:`Message` among the first two positional ``args`` (a
    function's ``message``, or a method's after ``self``): how the consumer
    decorators find it, on functions and methods alike.

    :raises ValueError: there is none.
    """
    for arg in args[:2]:
        if isinstance(arg, Message):
            return arg
    raise ValueError("%s called without a Message instance" % (decorator,))
