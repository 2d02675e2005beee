"""
:class:`Channel` and :class:`Group`: the public way to send.

Both resolve their layer from :data:`chanserv.channel_layers` by alias
(``"default"``) unless given one.  Inside a consumer, sends are held until
the consumer finishes (see :mod:`chanserv.message`); ``immediately=True``
sends at once.  Names and messages are checked when ``send`` is called, in
the caller's thread.
"""

from __future__ import annotations

from typing import Any

from chanserv.message import pending_message_store

__all__ = ["DEFAULT_CHANNEL_LAYER", "Channel", "Group"]

DEFAULT_CHANNEL_LAYER = "default"


def _resolve(alias: str, channel_layer: Any) -> Any:
    if channel_layer is not None:
        return channel_layer
    from chanserv.asgi import channel_layers

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

    def send(self, content: dict[str, Any], immediately: bool = False) -> None:
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

    def send(self, content: dict[str, Any], immediately: bool = False) -> None:
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
