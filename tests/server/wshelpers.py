"""
The WebSocket protocol tests' names for :class:`chanserv.testing.InterfaceHarness`:
:class:`Harness` is a harness whose WebSocket factory is the one under test
(``h.factory``), upgrade requests parsed by the real HTTP side, timeouts
applied only by :meth:`Harness.tick`, and WebSocket events recorded in
``h.access_log``; a :class:`Client` is a
:class:`~chanserv.testing.WebSocketClient` whose closes wait for
:meth:`Client.lose`.  Frames are built and read with
:func:`chanserv.testing.encode_frame` and
:func:`~chanserv.testing.decode_frames`.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address

from chanserv.layers.inmemory import InMemoryChannelLayer
from chanserv.server.config import ServerConfig
from chanserv.server.websocket import WebSocketProtocol
from chanserv.testing import (
    WEBSOCKET_KEY,
    ClockReactor,
    InterfaceHarness,
    Opcode,
    WebSocketClient,
    close_code,
    decode_frames,
    encode_frame,
    websocket_accept,
    websocket_request,
)

__all__ = [
    "ACCEPT",
    "BINARY",
    "CLOSE",
    "CONTINUATION",
    "KEY",
    "PING",
    "PONG",
    "TEXT",
    "AccessLog",
    "Client",
    "Harness",
    "close_code",
    "frame",
    "handshake_request",
    "parse_frames",
]

KEY = WEBSOCKET_KEY
ACCEPT = websocket_accept(KEY).decode()

TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = (
    Opcode.TEXT,
    Opcode.BINARY,
    Opcode.CLOSE,
    Opcode.PING,
    Opcode.PONG,
    Opcode.CONTINUATION,
)

frame = encode_frame
parse_frames = decode_frames


def handshake_request(
    path: bytes = b"/chat/room?x=1",
    headers: list[tuple[bytes, bytes]] | None = None,
    extra: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
) -> bytes:
    """Raw bytes of an upgrade request: ``headers`` replace the valid ones."""
    if headers is None:
        return websocket_request(path, extra, host=b"example.com")
    lines = [b"GET " + path + b" HTTP/1.1"]
    lines += [name + b": " + value for name, value in list(headers) + list(extra)]
    return b"\r\n".join(lines) + b"\r\n\r\n"


class AccessLog:
    """Records ``websocket(action, details)`` calls."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, dict[str, Any]]] = []

    def websocket(self, action: str, details: dict[str, Any]) -> None:
        self.entries.append((action, details))

    @property
    def actions(self) -> list[str]:
        return [action for action, _ in self.entries]


class Client(WebSocketClient):
    """The client end of one connection."""

    @property
    def protocol(self) -> WebSocketProtocol:
        protocol = self.transport.protocol
        assert isinstance(protocol, WebSocketProtocol)
        return protocol

    def send(self, data: bytes) -> None:
        """Bytes from the client, through whatever reads the transport now."""
        self.transport.protocol.dataReceived(data)  # type: ignore[union-attr]
        self.harness.run()

    def text(self, value: str) -> None:
        self.send_text(value)

    def binary(self, value: bytes) -> None:
        self.send_bytes(value)

    def close(self, code: int | None = 1000) -> None:
        self.send_close(code)

    def status(self) -> int:  # type: ignore[override]
        """The HTTP status of the server's handshake response."""
        line = self.transport.value().split(b"\r\n", 1)[0]
        return int(line.split()[1])

    def response_headers(self) -> dict[bytes, bytes]:
        head = self.transport.value().split(b"\r\n\r\n", 1)[0]
        result = {}
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            result[name.strip().lower()] = value.strip()
        return result

    def frames(self) -> list[Any]:  # type: ignore[override]
        data = self.transport.value()
        assert data.startswith(b"HTTP/1.1 101"), data[:200]
        return super().frames()

    def lose(self) -> None:
        """The TCP connection goes away (after a loseConnection, or not)."""
        self.transport.lose()
        self.harness.run()


class Harness(InterfaceHarness):
    """A WebSocketFactory on the in-memory layer and a ClockReactor."""

    def __init__(self, capacity: int = 100, channel_capacity: Any = None, **config: Any) -> None:
        reactor = ClockReactor()
        reactor.advance(1000)
        super().__init__(
            ServerConfig(**config),
            reactor=reactor,
            layer=InMemoryChannelLayer(
                capacity=capacity, channel_capacity=channel_capacity, clock=reactor
            ),
            sweep=False,
            complete_closes=False,
        )
        self.registry = self.replies
        self.access_log = AccessLog()
        self.factory = self.websocket_factory
        self.factory.access_log = self.access_log

    def connect(  # type: ignore[override]
        self, request: bytes | None = None, secure: bool = False, header_limit: int = 16384
    ) -> Client:
        """
        A new connection, through the real HTTP side, that sends ``request``
        (a valid upgrade by default).  ``header_limit`` raises the HTTP
        side's header-size limits, to reach the WebSocket side with inputs
        it would refuse first.
        """
        http = super().connect(
            peer=IPv4Address("TCP", "10.1.2.3", 52000),
            host=IPv4Address("TCP", "127.0.0.1", 8000),
            secure=secure,
        )
        http.protocol.totalHeadersSize = http.protocol.MAX_LENGTH = header_limit
        client = Client(self, http.transport)
        client.send(handshake_request() if request is None else request)
        return client

    def receive_all(self, channel: str) -> list[dict[str, Any]]:
        return super().receive_all(channel)

    def consumer_messages(self) -> list[tuple[str, dict[str, Any]]]:
        """Everything queued on the three websocket.* channels."""
        result = []
        for name in ("websocket.connect", "websocket.receive", "websocket.disconnect"):
            result += [(name, m) for m in self.receive_all(name)]
        return result

    def open(self, request: bytes | None = None) -> tuple[Client, dict[str, Any]]:
        """A connection accepted by the application; returns it and its connect."""
        client = self.connect(request)
        connect = self.expect("websocket.connect")
        self.reply(connect, {"accept": True})
        assert client.status() == 101
        return client, connect

    def tick(self, seconds: float) -> None:
        """Advance time and run the sweep, as site.py's periodic check does."""
        self.reactor.advance(seconds)
        self.factory.check_timeouts(self.reactor.seconds())
        self.reactor.run_pending()
