"""
Class-based WebSocket consumers, as in Channels 1.x: plain and JSON
consumers, and a demultiplexer that runs several JSON consumers over one
socket, one per *stream*.  Pool threads only: every method runs in the
worker thread consuming the message.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from django.core.serializers.json import DjangoJSONEncoder

from chanserv.auth import channel_and_http_session_user_from_http, channel_session_user_from_http
from chanserv.channel import Channel, Group
from chanserv.exceptions import SendNotAvailableOnDemultiplexer
from chanserv.generic.base import BaseConsumer
from chanserv.message import Message
from chanserv.sessions import enforce_ordering
from chanserv.types import Content, JSONValue

__all__ = [
    "JsonWebsocketConsumer",
    "WebsocketConsumer",
    "WebsocketDemultiplexer",
    "WebsocketMultiplexer",
]


def _frame(text: str | None, bytes: bytes | None, close: bool | int) -> Content:
    message: Content = {}
    if close:
        message["close"] = close
    if text is not None:
        message["text"] = text
    elif bytes is not None:
        message["bytes"] = bytes
    else:
        raise ValueError("You must pass text or bytes")
    return message


class WebsocketConsumer(BaseConsumer):
    """
    A WebSocket: override :meth:`connect`, :meth:`receive` and
    :meth:`disconnect` (the ``raw_*`` methods do the bookkeeping).

    Class attributes, besides :class:`~chanserv.generic.base.BaseConsumer`'s:

    - :attr:`http_user`: the Django user of the handshake's session becomes
      ``self.message.user`` on every message
      (:func:`~chanserv.auth.channel_session_user_from_http`);
    - :attr:`http_user_and_session`: the same, and ``self.message.http_session``
      on every message
      (:func:`~chanserv.auth.channel_and_http_session_user_from_http`);
    - :attr:`strict_ordering`: consume the socket's messages in order
      (:func:`~chanserv.sessions.enforce_ordering`);
    - :attr:`groups`: the groups the socket joins on connect and leaves on
      disconnect (or override :meth:`connection_groups`).

    ``self.path`` is the message's ``path``.
    """

    method_mapping: ClassVar[Mapping[str, str]] = {
        "websocket.connect": "raw_connect",
        "websocket.receive": "raw_receive",
        "websocket.disconnect": "raw_disconnect",
    }

    http_user: bool = False
    http_user_and_session: bool = False
    strict_ordering: bool = False
    #: Removed in Channels 1.0; True raises ValueError.
    slight_ordering: bool = False
    groups: Sequence[str] | None = None

    path: str | None

    def get_handler(self, message: Message, **kwargs: Any) -> Callable[..., Any]:
        # Any: consumer keyword arguments (the route's captured groups and whatever the
        # project's code passes) go to the project's handlers unchanged, as in Channels 1.x. A
        # handler's signature and result are the project's own.
        """
        The handler, with the decorators the flags ask for; sets ``self.path``.

        :raises ValueError: ``slight_ordering`` is set.
        """
        if self.http_user or self.http_user_and_session:
            self.channel_session_user = True
        self.path = message.get("path")
        handler = super().get_handler(message, **kwargs)
        if self.http_user_and_session:
            handler = channel_and_http_session_user_from_http(handler)
        elif self.http_user:
            handler = channel_session_user_from_http(handler)
        if self.strict_ordering:
            return enforce_ordering(handler)
        if self.slight_ordering:
            raise ValueError(
                "Slight ordering is now always on. Please remove `slight_ordering=True`."
            )
        return handler

    @property
    def multiplexed(self) -> bool:
        """True when a :class:`WebsocketDemultiplexer` runs this consumer."""
        return "multiplexer" in self.kwargs

    def connection_groups(self, **kwargs: Any) -> Sequence[str]:
        # Any: consumer keyword arguments (the route's captured groups and whatever the
        # project's code passes) go to the project's methods unchanged, as in Channels 1.x.
        """
        The groups the socket is in while connected (a list, not a str);
        ``kwargs`` are the routing's.  By default :attr:`groups`.
        """
        return self.groups or []

    def raw_connect(self, message: Message, **kwargs: Any) -> None:
        # Any: consumer keyword arguments (the route's captured groups and whatever the
        # project's code passes) go to the project's methods unchanged, as in Channels 1.x.
        """Join :meth:`connection_groups`, then :meth:`connect`."""
        for group in self.connection_groups(**kwargs):
            Group(group, channel_layer=message.channel_layer).add(message.reply_channel)  # type: ignore[arg-type]
        self.connect(message, **kwargs)

    def connect(self, message: Message, **kwargs: Any) -> None:
        # Any: consumer keyword arguments (the route's captured groups and whatever the
        # project's code passes) go to the project's methods unchanged, as in Channels 1.x.
        """
        The socket is opening: accept it (the default) with
        ``message.reply_channel.send({"accept": True})``, or refuse it with
        ``{"close": True}`` or by raising
        :class:`~chanserv.exceptions.DenyConnection`.
        """
        if not self.multiplexed:
            self.message.reply_channel.send({"accept": True})  # type: ignore[union-attr]

    def raw_receive(self, message: Message, **kwargs: Any) -> None:
        # Any: consumer keyword arguments (the route's captured groups and whatever the
        # project's code passes) go to the project's methods unchanged, as in Channels 1.x.
        """Pass the frame's ``text`` or ``bytes`` to :meth:`receive`."""
        if "text" in message:
            self.receive(text=message["text"], **kwargs)
        elif "bytes" in message:
            self.receive(bytes=message["bytes"], **kwargs)
        else:
            raise ValueError("A websocket.receive message has neither text nor bytes")

    def receive(self, text: str | None = None, bytes: bytes | None = None, **kwargs: Any) -> None:
        # Any: consumer keyword arguments (the route's captured groups and whatever the
        # project's code passes) go to the project's methods unchanged, as in Channels 1.x.
        """A frame came: exactly one of ``text`` and ``bytes`` is set."""

    def send(
        self, text: str | None = None, bytes: bytes | None = None, close: bool | int = False
    ) -> None:
        """
        Send a text or binary frame down the socket; ``close`` (True, or a
        close code) closes it after the frame.

        :raises ValueError: neither ``text`` nor ``bytes`` was given.
        :raises SendNotAvailableOnDemultiplexer: a demultiplexer runs this
            consumer: answer with ``multiplexer.send`` instead.
        """
        if self.multiplexed:
            raise SendNotAvailableOnDemultiplexer(
                "%s runs under a demultiplexer: use the multiplexer keyword "
                "argument's send() to answer on its stream" % (type(self).__name__,)
            )
        self.message.reply_channel.send(_frame(text, bytes, close))  # type: ignore[union-attr]

    @classmethod
    def group_send(
        cls,
        name: str,
        text: str | None = None,
        bytes: bytes | None = None,
        close: bool | int = False,
    ) -> None:
        """Send a frame (and optionally a close) to every socket in group ``name``."""
        Group(name).send(_frame(text, bytes, close))

    def close(self, status: bool | int = True) -> None:
        """Close the socket: ``status`` is True (code 1000) or a close code."""
        self.message.reply_channel.send({"close": status})  # type: ignore[union-attr]

    def raw_disconnect(self, message: Message, **kwargs: Any) -> None:
        # Any: consumer keyword arguments (the route's captured groups and whatever the
        # project's code passes) go to the project's methods unchanged, as in Channels 1.x.
        """Leave :meth:`connection_groups`, then :meth:`disconnect`."""
        for group in self.connection_groups(**kwargs):
            Group(group, channel_layer=message.channel_layer).discard(message.reply_channel)  # type: ignore[arg-type]
        self.disconnect(message, **kwargs)

    def disconnect(self, message: Message, **kwargs: Any) -> None:
        # Any: consumer keyword arguments (the route's captured groups and whatever the
        # project's code passes) go to the project's methods unchanged, as in Channels 1.x.
        """The socket closed."""


class JsonWebsocketConsumer(WebsocketConsumer):
    """
    A WebSocket exchanging JSON text frames: :meth:`receive` gets the decoded
    content, :meth:`send` encodes.  Binary frames raise ``ValueError``.
    """

    def raw_receive(self, message: Message, **kwargs: Any) -> None:
        # Any: consumer keyword arguments (the route's captured groups and whatever the
        # project's code passes) go to the project's methods unchanged, as in Channels 1.x.
        """
        :raises ValueError: a binary frame, or text that is not JSON.
        """
        if "text" in message:
            self.receive(self.decode_json(message["text"]), **kwargs)
        else:
            raise ValueError("No text section for incoming WebSocket frame!")

    def receive(self, content: JSONValue, **kwargs: Any) -> None:  # type: ignore[override]
        # Any: consumer keyword arguments (the route's captured groups and whatever the
        # project's code passes) go to the project's methods unchanged, as in Channels 1.x.
        """A frame came, decoded from JSON."""

    def send(self, content: JSONValue, close: bool | int = False) -> None:  # type: ignore[override]
        """Send ``content`` encoded as JSON (see :meth:`WebsocketConsumer.send`)."""
        super().send(text=self.encode_json(content), close=close)

    @classmethod
    def decode_json(cls, text: str) -> JSONValue:
        return json.loads(text)

    @classmethod
    def encode_json(cls, content: JSONValue) -> str:
        return json.dumps(content)

    @classmethod
    def group_send(cls, name: str, content: JSONValue, close: bool | int = False) -> None:  # type: ignore[override]
        """Send ``content`` as JSON to every socket in group ``name``."""
        WebsocketConsumer.group_send(name, cls.encode_json(content), close=close)


class WebsocketMultiplexer:
    """
    Sends on one stream of a demultiplexed socket: frames
    ``{"stream": stream, "payload": payload}`` (JSON with Django's encoder,
    so dates, decimals and UUIDs go through).  A demultiplexer passes one to
    each sub-consumer as its ``multiplexer`` keyword argument.
    """

    stream: str | None = None
    reply_channel: Channel | None = None

    def __init__(self, stream: str, reply_channel: Channel | None) -> None:
        self.stream = stream
        self.reply_channel = reply_channel

    def send(self, payload: JSONValue) -> None:
        """Send ``payload`` on this stream to this socket."""
        self.reply_channel.send(self.encode(self.stream, payload))  # type: ignore[union-attr, arg-type]

    @classmethod
    def encode_json(cls, content: JSONValue) -> str:
        return json.dumps(content, cls=DjangoJSONEncoder)

    @classmethod
    def encode(cls, stream: str, payload: JSONValue) -> Content:
        """The reply message carrying ``payload`` on ``stream``."""
        return {"text": cls.encode_json({"stream": stream, "payload": payload})}

    @classmethod
    def group_send(
        cls, name: str, stream: str, payload: JSONValue, close: bool | int = False
    ) -> None:
        """Send ``payload`` on ``stream`` to every socket in group ``name``."""
        message = cls.encode(stream, payload)
        if close:
            message["close"] = close
        Group(name).send(message)


class WebsocketDemultiplexer(JsonWebsocketConsumer):
    """
    One socket, several JSON consumers: a frame ``{"stream": name, "payload":
    {...}}`` goes to ``consumers[name]`` -- called as ``consumer(message,
    multiplexer=..., **kwargs)`` with a message whose ``text`` is the payload
    -- and the sub-consumer answers with ``multiplexer.send(...)``.  Connect
    accepts the socket and then goes to every sub-consumer, as does
    disconnect.  The reply channel is the socket's, so sessions and users
    work in sub-consumers as usual.

    :attr:`consumers`: ``{stream name: consumer}`` (classes or functions);
    :attr:`multiplexer_class`: the class of the ``multiplexer`` argument.
    """

    consumers: ClassVar[Mapping[str, Callable[..., Any]]] = {}
    multiplexer_class: ClassVar[type[WebsocketMultiplexer]] = WebsocketMultiplexer

    def _multiplexer(self, stream: str) -> WebsocketMultiplexer:
        return self.multiplexer_class(stream, self.message.reply_channel)

    def receive(self, content: JSONValue, **kwargs: Any) -> None:  # type: ignore[override]
        # Any: consumer keyword arguments (the route's captured groups and whatever the
        # project's code passes) go to the project's methods unchanged, as in Channels 1.x.
        """
        Hand the frame's payload to its stream's consumer.

        :raises ValueError: not a ``{"stream", "payload"}`` object, an
            unknown stream, or a payload that is not an object.
        """
        if not (isinstance(content, dict) and "stream" in content and "payload" in content):
            raise ValueError("Invalid multiplexed frame received (no stream/payload key)")
        stream = content["stream"]
        consumer = self.consumers.get(stream) if isinstance(stream, str) else None
        if consumer is None:
            raise ValueError("Invalid multiplexed frame received (stream not mapped)")
        payload = content["payload"]
        if not isinstance(payload, dict):
            raise ValueError("Multiplexed frame payload is not a dict")
        # A copy: the decorators' attributes (user, sessions) carry over, the
        # frame itself stays as the client sent it.
        message = copy.copy(self.message)
        message.content = dict(self.message.content)
        message.content["text"] = self.encode_json(payload)
        kwargs["multiplexer"] = self._multiplexer(stream)
        consumer(message, **kwargs)

    def connect(self, message: Message, **kwargs: Any) -> None:
        # Any: consumer keyword arguments (the route's captured groups and whatever the
        # project's code passes) go to the project's methods unchanged, as in Channels 1.x.
        """Accept the socket, then pass the connect to every sub-consumer."""
        self.message.reply_channel.send({"accept": True})  # type: ignore[union-attr]
        for stream, consumer in self.consumers.items():
            kwargs["multiplexer"] = self._multiplexer(stream)
            consumer(message, **kwargs)

    def disconnect(self, message: Message, **kwargs: Any) -> None:
        # Any: consumer keyword arguments (the route's captured groups and whatever the
        # project's code passes) go to the project's methods unchanged, as in Channels 1.x.
        """Pass the disconnect to every sub-consumer."""
        for stream, consumer in self.consumers.items():
            kwargs["multiplexer"] = self._multiplexer(stream)
            consumer(message, **kwargs)

    def send(self, *args: object, **kwargs: object) -> None:
        """:raises SendNotAvailableOnDemultiplexer: always."""
        raise SendNotAvailableOnDemultiplexer("Use multiplexer.send of the multiplexer kwarg.")

    @classmethod
    def group_send(cls, *args: object, **kwargs: object) -> None:
        """:raises SendNotAvailableOnDemultiplexer: always."""
        raise SendNotAvailableOnDemultiplexer("Use WebsocketMultiplexer.group_send")
