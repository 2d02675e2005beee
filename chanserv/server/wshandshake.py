"""
The hand-over of a validated HTTP upgrade request to autobahn: the
``websocket.connect`` message, the few handshake bytes autobahn is fed, and
the transport moved over.  Reactor thread only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IProtocol
from twisted.protocols.policies import ProtocolWrapper

from chanserv.server.proxy import address_pair
from chanserv.types import Content

if TYPE_CHECKING:
    from chanserv.server.config import ServerConfig
    from chanserv.server.request import WebRequest

__all__ = [
    "HANDSHAKE_HEADERS",
    "MAX_SUBPROTOCOLS",
    "BadHandshake",
    "build_connect",
    "handshake_bytes",
    "take_transport",
]

#: The request headers autobahn needs to check a handshake.  Origin is not
#: among them: origin policy is the application's (origin validators), and
#: autobahn would refuse origins such as ``file://`` that apps may allow.
HANDSHAKE_HEADERS = (
    b"host",
    b"upgrade",
    b"connection",
    b"sec-websocket-key",
    b"sec-websocket-version",
    b"sec-websocket-protocol",
)

#: Control bytes (HTAB excepted) and NEL: line breaks to ``splitlines()`` on
#: latin-1 text, or worse.  The HTTP side refuses them too.
_UNSAFE = bytes(range(0x00, 0x09)) + bytes(range(0x0A, 0x20)) + b"\x7f\x85"

_TCHAR = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

#: More offered subprotocols than this: 400 (bounded work per handshake).
MAX_SUBPROTOCOLS = 64


class BadHandshake(ValueError):
    """The upgrade request cannot be handed to autobahn (answered with 400)."""


def build_connect(request: WebRequest, config: ServerConfig) -> Content:
    """
    The ``websocket.connect`` message for ``request``, without
    ``reply_channel``: reference §2.2 plus ``scheme``, ``root_path`` and the
    offered ``subprotocols`` (in the client's order).

    :raises BadHandshake: an unsafe byte in a header autobahn will see, or a
        ``Sec-WebSocket-Protocol`` that is not a list of at most
        :data:`MAX_SUBPROTOCOLS` tokens.
    """
    offered: list[str] = []
    for name, value in request.header_pairs:
        if name not in HANDSHAKE_HEADERS:
            continue
        if len(value.translate(None, _UNSAFE)) != len(value):
            raise BadHandshake("Control character in a handshake header")
        if name == b"sec-websocket-protocol":
            for token in value.split(b","):
                token = token.strip(b" \t")
                if not token or token.translate(None, _TCHAR):
                    raise BadHandshake("Malformed Sec-WebSocket-Protocol")
                offered.append(token.decode("ascii"))
                if len(offered) > MAX_SUBPROTOCOLS:
                    raise BadHandshake("Too many subprotocols offered")
    client, scheme = request.client_and_scheme()
    return {
        "path": request.asgi_path,
        "headers": request.asgi_headers(),
        "query_string": request.query_string,
        "client": client,
        "server": address_pair(request.getHost()),
        "order": 0,
        "scheme": "wss" if scheme == "https" else "ws",
        "root_path": config.root_path,
        "subprotocols": offered,
    }


def handshake_bytes(request: WebRequest) -> bytes:
    """The handshake autobahn is fed: a request line and HANDSHAKE_HEADERS."""
    # The target is not needed (the application gets path and query string
    # in websocket.connect); "/" spares autobahn parsing a hostile query.
    lines = [b"GET / HTTP/1.1"]
    lines += [
        name + b": " + value for name, value in request.header_pairs if name in HANDSHAKE_HEADERS
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def take_transport(request: WebRequest, protocol: IProtocol) -> tuple[Any, bytes]:
    # Any: the transport is used as an ITransport (makeConnection) and an
    # IConsumer (registerProducer), and Python's types have no intersection
    # of interfaces.
    """
    Detach ``request``'s connection from its HTTP channel and make
    ``protocol`` its reader (it is not connected yet: call
    ``makeConnection``).  Returns ``(transport, bytes the channel had read
    past the request)``; those belong to the WebSocket, in that order.

    The request is handed over as soon as its head is parsed, from inside
    the channel's ``dataReceived`` or its replay of pipelined bytes: the
    channel holds nothing for a later request then, only the rest of the
    current read, in its line buffer (``clearLineBuffer``, which also ends
    the channel's parsing loop).  Anything the channel would still be given
    goes to ``protocol``.
    """
    channel = request.channel
    transport: Any = channel.transport
    channel.transport = None
    channel.rawDataReceived = protocol.dataReceived
    channel.dataReceived = protocol.dataReceived
    buffered: bytes = channel.clearLineBuffer()
    if isinstance(transport, ProtocolWrapper):  # TLS
        transport.wrappedProtocol = protocol
    elif isinstance(getattr(transport, "protocol", None), ProtocolWrapper):
        transport.protocol.wrappedProtocol = protocol
    else:
        transport.protocol = protocol
    # The channel registered itself as the transport's producer.
    transport.unregisterProducer()
    return transport, buffered
