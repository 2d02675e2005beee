"""
Test plumbing for the WebSocket protocol tests: a factory wired to the
in-memory layer and a ``ClockReactor``, upgrade requests parsed by the real
HTTP side (``HTTPFactory``) over a ``StringTransport``, and a minimal client
that builds masked frames with ``struct`` and reads the server's frames back.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from chanserv.layers.inmemory import InMemoryChannelLayer
from chanserv.server.config import ServerConfig
from chanserv.server.http import HTTPFactory
from chanserv.server.replies import ReplyRegistry
from chanserv.server.websocket import WebSocketFactory, WebSocketProtocol
from tests.support import ClockReactor

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = base64.b64encode(
    hashlib.sha1(KEY + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
).decode()

TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 1, 2, 8, 9, 10, 0


def handshake_request(
    path: bytes = b"/chat/room?x=1",
    headers: list[tuple[bytes, bytes]] | None = None,
    extra: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
) -> bytes:
    """Raw bytes of an upgrade request."""
    if headers is None:
        headers = [
            (b"Host", b"example.com"),
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade"),
            (b"Sec-WebSocket-Key", KEY),
            (b"Sec-WebSocket-Version", b"13"),
        ]
    lines = [b"GET " + path + b" HTTP/1.1"]
    lines += [name + b": " + value for name, value in list(headers) + list(extra)]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def frame(
    opcode: int,
    payload: bytes = b"",
    fin: bool = True,
    masked: bool = True,
    rsv: int = 0,
    length: int | None = None,
) -> bytes:
    """One client frame; ``length`` overrides the encoded payload length."""
    n = len(payload) if length is None else length
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if masked else 0
    if n < 126:
        header = struct.pack("!BB", first, mask_bit | n)
    elif n < 65536:
        header = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, n)
    if not masked:
        return header + payload
    key = b"\x37\xfa\x21\x3d"
    stream = (key * (len(payload) // 4 + 1))[: len(payload)]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(
        len(payload), "big"
    )
    return header + key + body


def parse_frames(data: bytes) -> list[tuple[int, bytes]]:
    """``(opcode, payload)`` of each complete server frame in ``data``."""
    frames = []
    while len(data) >= 2:
        opcode = data[0] & 0x0F
        n = data[1] & 0x7F
        i = 2
        if n == 126:
            (n,) = struct.unpack("!H", data[2:4])
            i = 4
        elif n == 127:
            (n,) = struct.unpack("!Q", data[2:10])
            i = 10
        assert not data[1] & 0x80, "server frames are never masked"
        frames.append((opcode, data[i : i + n]))
        data = data[i + n :]
    return frames


def close_code(payload: bytes) -> int | None:
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None


class Transport(StringTransport):
    """A StringTransport that, like TCP transports, lets any caller
    unregister a producer when there is none."""

    def unregisterProducer(self) -> None:
        self.producer = None
        self.streaming = None


class AccessLog:
    """Records ``websocket(action, details)`` calls."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, dict[str, Any]]] = []

    def websocket(self, action: str, details: dict[str, Any]) -> None:
        self.entries.append((action, details))

    @property
    def actions(self) -> list[str]:
        return [action for action, _ in self.entries]


class Client:
    """The client end of one connection."""

    def __init__(self, harness: Harness, transport: StringTransport) -> None:
        self.harness = harness
        self.transport = transport

    @property
    def protocol(self) -> WebSocketProtocol:
        protocol = self.transport.protocol  # type: ignore[attr-defined]
        assert isinstance(protocol, WebSocketProtocol)
        return protocol

    def send(self, data: bytes) -> None:
        """Bytes from the client, through whatever reads the transport now."""
        self.transport.protocol.dataReceived(data)  # type: ignore[attr-defined]
        self.harness.reactor.run_pending()

    def text(self, value: str) -> None:
        self.send(frame(TEXT, value.encode("utf-8")))

    def binary(self, value: bytes) -> None:
        self.send(frame(BINARY, value))

    def close(self, code: int | None = 1000) -> None:
        self.send(frame(CLOSE, b"" if code is None else struct.pack("!H", code)))

    def status(self) -> int:
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

    def frames(self) -> list[tuple[int, bytes]]:
        data = self.transport.value()
        assert data.startswith(b"HTTP/1.1 101"), data[:200]
        return parse_frames(data.split(b"\r\n\r\n", 1)[1])

    def lose(self) -> None:
        """The TCP connection goes away (after a loseConnection, or not)."""
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.harness.reactor.run_pending()


class Harness:
    """A WebSocketFactory on the in-memory layer and a ClockReactor."""

    def __init__(self, capacity: int = 100, channel_capacity: Any = None, **config: Any) -> None:
        self.reactor = ClockReactor()
        self.reactor.advance(1000)
        self.layer = InMemoryChannelLayer(
            capacity=capacity, channel_capacity=channel_capacity, clock=self.reactor
        )
        self.layer.attach_reactor(self.reactor)
        self.registry = ReplyRegistry(self.layer)
        self.registry.startService()
        self.config = ServerConfig(**config)
        self.access_log = AccessLog()
        self.factory = WebSocketFactory(
            self.reactor, self.layer, self.registry, self.config, self.access_log
        )
        self.http_factory = HTTPFactory(
            self.reactor, self.layer, self.registry, self.config, websocket_factory=self.factory
        )

    def connect(
        self, request: bytes | None = None, secure: bool = False, header_limit: int = 16384
    ) -> Client:
        """
        A new connection, through the real HTTP side, that sends ``request``
        (a valid upgrade by default).  ``header_limit`` raises the HTTP
        side's header-size limits, to reach the WebSocket side with inputs
        it would refuse first.
        """
        transport = Transport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8000),
            peerAddress=IPv4Address("TCP", "10.1.2.3", 52000),
        )
        channel = self.http_factory.buildProtocol(transport.getPeer())
        channel.totalHeadersSize = channel.MAX_LENGTH = header_limit
        if secure:
            channel.isSecure = lambda: True  # type: ignore[method-assign]
        channel.makeConnection(transport)
        channel.dataReceived(handshake_request() if request is None else request)
        self.reactor.run_pending()
        return Client(self, transport)

    def receive(self, channel: str) -> dict[str, Any] | None:
        """The next message on ``channel``, or None."""
        _, message = self.layer.receive([channel])
        return message

    def receive_all(self, channel: str) -> list[dict[str, Any]]:
        messages = []
        while True:
            message = self.receive(channel)
            if message is None:
                return messages
            messages.append(message)

    def consumer_messages(self) -> list[tuple[str, dict[str, Any]]]:
        """Everything queued on the three websocket.* channels."""
        result = []
        for name in ("websocket.connect", "websocket.receive", "websocket.disconnect"):
            result += [(name, m) for m in self.receive_all(name)]
        return result

    def reply(self, reply_channel: str, message: dict[str, Any]) -> None:
        self.layer.send(reply_channel, message)
        self.reactor.run_pending()

    def open(self, request: bytes | None = None) -> tuple[Client, dict[str, Any]]:
        """A connection accepted by the application; returns it and its connect."""
        client = self.connect(request)
        connect = self.receive("websocket.connect")
        assert connect is not None
        self.reply(connect["reply_channel"], {"accept": True})
        assert client.status() == 101
        return client, connect

    def tick(self, seconds: float) -> None:
        """Advance time and run the sweep, as site.py's periodic check does."""
        self.reactor.advance(seconds)
        self.factory.check_timeouts(self.reactor.seconds())
        self.reactor.run_pending()
