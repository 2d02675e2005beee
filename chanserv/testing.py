"""
Twisted-level test doubles: HTTP and WebSocket traffic through the real
interface server over memory transports, with a clock the test moves (what
``treq.testing`` is to treq); :mod:`chanserv.test` runs consumers without a
server.  No socket and no running reactor: everything runs in the test's
thread (any thread), which plays the reactor thread.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import struct
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IReactorFromThreads,
    ITCPTransport,
)
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from zope.interface import alsoProvides, implementer

from chanserv.channel import DEFAULT_CHANNEL_LAYER
from chanserv.layers.inmemory import InMemoryChannelLayer
from chanserv.server.accesslog import AccessLogWriter
from chanserv.server.config import ServerConfig
from chanserv.server.http import HTTPProtocol
from chanserv.server.site import InterfaceServer
from chanserv.server.websocket import WebSocketProtocol
from chanserv.types import Content, ContentMapping

__all__ = [
    "WEBSOCKET_KEY",
    "ClockReactor",
    "Frame",
    "HTTPClient",
    "HTTPResponse",
    "InterfaceHarness",
    "MemoryTransport",
    "Opcode",
    "WebSocketClient",
    "close_code",
    "decode_frames",
    "encode_frame",
    "http_request",
    "parse_responses",
    "websocket_accept",
    "websocket_request",
]

#: The ``Sec-WebSocket-Key`` of :func:`websocket_request` (RFC 6455's example).
WEBSOCKET_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="

_WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MASK = b"\x37\xfa\x21\x3d"


def websocket_accept(key: bytes = WEBSOCKET_KEY) -> bytes:
    """The ``Sec-WebSocket-Accept`` a server must answer ``key`` with."""
    return base64.b64encode(hashlib.sha1(key + _WEBSOCKET_GUID).digest())


# -- reactor and transport -----------------------------------------------------------------------


@implementer(IReactorFromThreads)
class ClockReactor(MemoryReactorClock):
    """
    Twisted's ``MemoryReactorClock`` (an ``IReactorTime`` whose time moves
    only with ``advance``; listening calls recorded) plus ``callFromThread``,
    queued like ``callLater(0)``: code that would cross threads -- the
    layer's wake-ups, the worker pool's completions -- runs on the next
    :meth:`run_pending`.  Still single-threaded: call it from the test's
    thread only.
    """

    def callFromThread(
        self, callable: Callable[..., object], *args: object, **kwargs: object
    ) -> None:
        self.callLater(0, callable, *args, **kwargs)

    def run_pending(self, rounds: int = 50) -> None:
        """Run every call due now, and those they schedule for now, up to ``rounds`` turns."""
        for _ in range(rounds):
            # Typed as Any: mypy cannot call methods declared by a zope Interface.
            calls: Sequence[Any] = self.getDelayedCalls()
            if not any(call.getTime() <= self.seconds() for call in calls):
                return
            self.advance(0)


class MemoryTransport(StringTransport):
    """
    A ``StringTransport`` for one server connection.

    :attr:`protocol` is the protocol reading it (the server's, which the
    WebSocket hand-over replaces); :meth:`lose` ends the connection as the
    client going away would.  With a ``reactor``, a close by the server
    (``loseConnection``, ``abortConnection``) ends the connection on the next
    reactor turn, as a TCP transport does once it has flushed; without one,
    the transport stays ``disconnecting`` until the test calls :meth:`lose`.
    It provides ``ITCPTransport`` and, like a TCP transport, lets
    ``unregisterProducer`` be called with no producer registered.
    """

    def __init__(
        self,
        host: IAddress | None = None,
        peer: IAddress | None = None,
        reactor: ClockReactor | None = None,
    ) -> None:
        super().__init__(hostAddress=host, peerAddress=peer)
        self.protocol: Protocol | None = None
        self._reactor = reactor
        self._lose_reason: type[Exception] | None = None
        self.no_delay = False
        self.keep_alive = False
        alsoProvides(self, ITCPTransport)

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.no_delay = enabled

    def getTcpNoDelay(self) -> bool:
        return self.no_delay

    def setTcpKeepAlive(self, enabled: bool) -> None:
        self.keep_alive = enabled

    def getTcpKeepAlive(self) -> bool:
        return self.keep_alive

    def loseWriteConnection(self) -> None:
        """``ITCPTransport``'s half-close: taken as a full close."""
        self.loseConnection()

    def unregisterProducer(self) -> None:
        self.producer = None
        self.streaming = None

    def loseConnection(self) -> None:
        super().loseConnection()
        self._end_later(ConnectionDone)

    def abortConnection(self) -> None:
        self.disconnected = True
        self.disconnecting = True
        self._end_later(ConnectionAborted)

    def _end_later(self, reason: type[Exception]) -> None:
        if self._reactor is None or not self.connected:
            return
        scheduled = self._lose_reason is not None
        if not scheduled or reason is ConnectionAborted:
            self._lose_reason = reason
        if not scheduled:
            self._reactor.callLater(0, self._end)

    def _end(self) -> None:
        reason = self._lose_reason or ConnectionDone
        self.lose(Failure(reason()))

    def lose(self, reason: Failure | None = None) -> None:
        """
        The connection is gone: ``connectionLost`` on :attr:`protocol` (once;
        later calls do nothing).  ``reason`` defaults to ``ConnectionDone``.
        """
        if not self.connected:
            return
        self.connected = False
        if self.protocol is not None:
            self.protocol.connectionLost(reason or Failure(ConnectionDone()))


# -- the wire, client side -----------------------------------------------------------------------


def http_request(
    method: bytes = b"GET",
    path: bytes = b"/",
    headers: Sequence[tuple[bytes, bytes]] = (),
    body: bytes = b"",
    *,
    host: bytes | None = b"testserver",
    version: bytes = b"HTTP/1.1",
) -> bytes:
    """
    Raw bytes of one request: the request line, ``Host: host`` (unless
    ``host`` is None), ``headers`` as given, and ``Content-Length`` when
    there is a ``body`` and ``headers`` frame it with neither
    ``Content-Length`` nor ``Transfer-Encoding``.  Nothing is checked: bad
    requests are made the same way.
    """
    lines = [method + b" " + path + b" " + version]
    if host is not None:
        lines.append(b"Host: " + host)
    lines += [name + b": " + value for name, value in headers]
    framed = {name.lower() for name, _ in headers} & {b"content-length", b"transfer-encoding"}
    if body and not framed:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def websocket_request(
    path: bytes = b"/",
    headers: Sequence[tuple[bytes, bytes]] = (),
    *,
    subprotocols: Sequence[str] = (),
    host: bytes | None = b"testserver",
    key: bytes = WEBSOCKET_KEY,
) -> bytes:
    """
    Raw bytes of a valid WebSocket opening handshake for ``path``, offering
    ``subprotocols``, with ``headers`` (``Origin``, ``Cookie``...) after the
    required ones.
    """
    required = [
        (b"Upgrade", b"websocket"),
        (b"Connection", b"Upgrade"),
        (b"Sec-WebSocket-Key", key),
        (b"Sec-WebSocket-Version", b"13"),
    ]
    if subprotocols:
        required.append((b"Sec-WebSocket-Protocol", ", ".join(subprotocols).encode("ascii")))
    return http_request(b"GET", path, [*required, *headers], host=host)


class HTTPResponse(NamedTuple):
    """One parsed HTTP/1.1 response; header names lowercased, in order."""

    status: int
    reason: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (any case), or None."""
        name = name.lower()
        return next((value for key, value in self.headers if key == name), None)


def parse_responses(data: bytes, closed: bool = False) -> tuple[list[HTTPResponse], bytes]:
    """
    The complete responses at the start of ``data`` and the bytes after
    them.  Bodies are framed by ``Transfer-Encoding: chunked`` (trailers
    dropped), ``Content-Length``, or -- only when ``closed`` -- the end of
    the connection; 1xx, 204 and 304 have none, and parsing stops after a
    ``101`` (what follows is another protocol).  A response to ``HEAD`` is
    not told apart: parse those with ``Content-Length: 0`` in mind.
    """
    responses: list[HTTPResponse] = []
    while True:
        head, found, rest = data.partition(b"\r\n\r\n")
        if not found:
            return responses, data
        status_line, *lines = head.split(b"\r\n")
        _, code, reason = (status_line.split(b" ", 2) + [b""])[:3]
        status = int(code)
        headers = tuple(
            (name.strip().lower(), value.strip())
            for name, _, value in (line.partition(b":") for line in lines)
        )
        response = HTTPResponse(status, reason, headers, b"")
        if status < 200 or status in (204, 304):
            body: bytes | None = b""
        elif b"chunked" in (response.header(b"transfer-encoding") or b"").lower():
            body, rest = _dechunk(rest)
        elif response.header(b"content-length") is not None:
            length = int(response.header(b"content-length") or b"0")
            body, rest = (rest[:length], rest[length:]) if len(rest) >= length else (None, rest)
        else:
            body, rest = (rest, b"") if closed else (None, rest)
        if body is None:
            return responses, data
        responses.append(response._replace(body=body))
        data = rest
        if status == 101:
            return responses, data


def _dechunk(data: bytes) -> tuple[bytes | None, bytes]:
    # (body, rest), or (None, data) while the last chunk has not come.
    chunks: list[bytes] = []
    rest = data
    while True:
        size_line, found, rest = rest.partition(b"\r\n")
        if not found:
            return None, data
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            if rest.startswith(b"\r\n"):
                return b"".join(chunks), rest[2:]
            trailers_end = rest.find(b"\r\n\r\n")
            if trailers_end < 0:
                return None, data
            return b"".join(chunks), rest[trailers_end + 4 :]
        if len(rest) < size + 2:
            return None, data
        chunks.append(rest[:size])
        rest = rest[size + 2 :]


class Opcode(enum.IntEnum):
    """WebSocket frame opcodes (RFC 6455 §5.2)."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


class Frame(NamedTuple):
    """One server frame: its opcode (an int, :class:`Opcode` values) and payload."""

    opcode: int
    payload: bytes


def encode_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    masked: bool = True,
    rsv: int = 0,
    length: int | None = None,
) -> bytes:
    """
    One client frame, masked as a client's must be (``masked=False`` makes
    the protocol error).  ``rsv`` sets the three reserved bits; ``length``
    overrides the length written in the header, to lie about it.
    """
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
    stream = (_MASK * (len(payload) // 4 + 1))[: len(payload)]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(
        len(payload), "big"
    )
    return header + _MASK + body


def decode_frames(data: bytes) -> list[Frame]:
    """
    Every complete server frame in ``data`` (a partial one at the end is
    left out).

    :raises AssertionError: a masked frame (servers never mask).
    """
    frames = []
    while len(data) >= 2:
        n = data[1] & 0x7F
        start = 2
        if n == 126:
            if len(data) < 4:
                break
            (n,) = struct.unpack("!H", data[2:4])
            start = 4
        elif n == 127:
            if len(data) < 10:
                break
            (n,) = struct.unpack("!Q", data[2:10])
            start = 10
        if len(data) < start + n:
            break
        assert not data[1] & 0x80, "server frames are never masked"
        frames.append(Frame(data[0] & 0x0F, data[start : start + n]))
        data = data[start + n :]
    return frames


def close_code(payload: bytes) -> int | None:
    """The status code of a close frame's ``payload``, or None if it has none."""
    return int(struct.unpack("!H", payload[:2])[0]) if len(payload) >= 2 else None


# -- clients ---------------------------------------------------------------------------------------


class _Client:
    """The client end of one in-memory connection to a harness."""

    def __init__(self, harness: InterfaceHarness, transport: MemoryTransport) -> None:
        self.harness = harness
        self.transport = transport

    def send(self, data: bytes) -> None:
        """Bytes from the client, to whatever reads the connection now; then run what is due."""
        reader = self.transport.protocol
        assert reader is not None and self.transport.connected, "the connection is closed"
        reader.dataReceived(data)
        self.harness.run()

    def written(self) -> bytes:
        """Every byte the server wrote so far."""
        return bytes(self.transport.value())

    @property
    def closing(self) -> bool:
        """The server closed (or aborted) the connection."""
        return bool(self.transport.disconnecting)

    @property
    def closed(self) -> bool:
        """The connection is gone (the server saw ``connectionLost``)."""
        return not self.transport.connected

    def lose(self) -> None:
        """The client goes away (or the server's close completes); then run what is due."""
        self.transport.lose()
        self.harness.run()


class HTTPClient(_Client):
    """
    The client end of an HTTP/1.1 connection (:meth:`InterfaceHarness.connect`).
    :attr:`protocol` is the server's :class:`~chanserv.server.http.HTTPProtocol`.
    """

    def __init__(
        self, harness: InterfaceHarness, transport: MemoryTransport, protocol: HTTPProtocol
    ) -> None:
        super().__init__(harness, transport)
        self.protocol = protocol

    def send_request(
        self,
        method: bytes = b"GET",
        path: bytes = b"/",
        headers: Sequence[tuple[bytes, bytes]] = (),
        body: bytes = b"",
    ) -> None:
        """Send one request made by :func:`http_request`."""
        self.send(http_request(method, path, headers, body))

    def responses(self) -> list[HTTPResponse]:
        """The complete responses written so far (:func:`parse_responses`)."""
        return parse_responses(self.written(), closed=self.closed)[0]

    def response(self) -> HTTPResponse:
        """
        The first complete response.

        :raises AssertionError: none is complete yet.
        """
        responses = self.responses()
        assert responses, "no complete response yet: %r" % (self.written()[:200],)
        return responses[0]


class WebSocketClient(_Client):
    """
    The client end of a WebSocket (:meth:`InterfaceHarness.open_websocket`):
    the opening handshake was sent; once the server answered ``101``, send
    frames and read the server's.
    """

    @property
    def protocol(self) -> WebSocketProtocol | None:
        """The server's WebSocket protocol, once the HTTP side handed over."""
        reader = self.transport.protocol
        return reader if isinstance(reader, WebSocketProtocol) else None

    def handshake_response(self) -> HTTPResponse | None:
        """The server's answer to the opening handshake, or None while it decides."""
        responses = parse_responses(self.written(), closed=self.closed)[0]
        return responses[0] if responses else None

    def status(self) -> int | None:
        """The HTTP status of :meth:`handshake_response`, or None."""
        response = self.handshake_response()
        return None if response is None else response.status

    def frames(self) -> list[Frame]:
        """Every frame the server sent after its ``101`` (none before one)."""
        responses, rest = parse_responses(self.written())
        if not responses or responses[0].status != 101:
            return []
        return decode_frames(rest)

    def texts(self) -> list[str]:
        """The text messages the server sent."""
        return [f.payload.decode("utf-8") for f in self.frames() if f.opcode == Opcode.TEXT]

    def binaries(self) -> list[bytes]:
        """The binary messages the server sent."""
        return [f.payload for f in self.frames() if f.opcode == Opcode.BINARY]

    def close_code(self) -> int | None:
        """The code of the server's close frame, or None (no close frame, or no code in it)."""
        closes = [f.payload for f in self.frames() if f.opcode == Opcode.CLOSE]
        return close_code(closes[0]) if closes else None

    def send_text(self, text: str) -> None:
        self.send(encode_frame(Opcode.TEXT, text.encode("utf-8")))

    def send_bytes(self, data: bytes) -> None:
        self.send(encode_frame(Opcode.BINARY, data))

    def send_ping(self, payload: bytes = b"") -> None:
        self.send(encode_frame(Opcode.PING, payload))

    def send_close(self, code: int | None = 1000, reason: str = "") -> None:
        """A close frame (with no payload at all when ``code`` is None)."""
        payload = b"" if code is None else struct.pack("!H", code) + reason.encode("utf-8")
        self.send(encode_frame(Opcode.CLOSE, payload))


# -- the harness ---------------------------------------------------------------------------------


class InterfaceHarness:
    """
    An :class:`~chanserv.server.site.InterfaceServer` on a
    :class:`ClockReactor` and an in-memory layer, started, with in-memory
    client connections.

    :param config: the server's configuration (default ``ServerConfig()``).
        Its endpoints are "listened on" by the memory reactor only
        (``reactor.tcpServers``); clients come from :meth:`connect`.
    :param reactor: default: a new :class:`ClockReactor`.
    :param layer: an :class:`~chanserv.layers.InMemoryChannelLayer` not
        attached to any reactor yet; default: a new one timed by ``reactor``.
    :param access_log: an :class:`~chanserv.server.accesslog.AccessLogWriter`
        (``AccessLogWriter(io.StringIO(), reactor)`` to read it), or None.
    :param sweep: run the server's periodic timeout sweep while time moves
        (every ``config.sweep_interval``).  With False the sweep only runs
        when the test calls :meth:`sweep`.
    :param complete_closes: a connection the server closes is gone on the
        next reactor turn (``connectionLost``), as over TCP.  With False it
        stays ``closing`` until the test calls its ``lose()``.

    Attributes: ``reactor``, ``layer``, ``config``, ``server`` and its
    ``replies``, ``http_factory`` and ``websocket_factory``.

    A test plays the client with the connection objects and the application with
    the harness (take messages off the layer, reply)::

        from chanserv.testing import InterfaceHarness

        def test_hello() -> None:
            harness = InterfaceHarness()
            client = harness.connect()
            client.send_request(b"GET", b"/hello")
            request = harness.expect("http.request")
            harness.reply(request, {"status": 200, "content": b"Hello!"})
            assert client.response().body == b"Hello!"

        def test_echo() -> None:
            harness = InterfaceHarness()
            ws = harness.open_websocket(b"/chat/")
            connect = harness.expect("websocket.connect")
            harness.reply(connect, {"accept": True})
            ws.send_text("hi")
            assert harness.expect("websocket.receive")["text"] == "hi"
            harness.reply(connect, {"text": "hi", "close": 4000})
            assert ws.texts() == ["hi"] and ws.close_code() == 4000
            ws.send_close(4000)
            assert harness.expect("websocket.disconnect")["code"] == 4000

    Every method that feeds the server runs what the reactor then has due, so
    replies are written before it returns; time only moves with
    :meth:`InterfaceHarness.advance`.  Everything runs in the test's thread.
    """

    def __init__(
        self,
        config: ServerConfig | None = None,
        *,
        reactor: ClockReactor | None = None,
        layer: InMemoryChannelLayer | None = None,
        access_log: AccessLogWriter | None = None,
        sweep: bool = True,
        complete_closes: bool = True,
    ) -> None:
        self.reactor = reactor if reactor is not None else ClockReactor()
        self.layer = layer if layer is not None else InMemoryChannelLayer(clock=self.reactor)
        self.layer.attach_reactor(self.reactor)
        self.config = config if config is not None else ServerConfig()
        self.server = InterfaceServer(self.reactor, self.layer, self.config)
        self.replies = self.server.replies
        self.http_factory = self.server.http_factory
        self.websocket_factory = self.server.websocket_factory
        self.complete_closes = complete_closes
        if not sweep:
            # Twisted's TimerService takes its clock as a public attribute:
            # one that never moves runs the sweep only once, at start.
            self.server.sweeper.clock = Clock()
        self.server.access_log = access_log
        self.server.startService()

    # -- connections -------------------------------------------------------------

    def _transport(
        self, peer: IAddress | None, host: IAddress | None, secure: bool
    ) -> tuple[MemoryTransport, HTTPProtocol]:
        transport = MemoryTransport(host, peer, self.reactor if self.complete_closes else None)
        protocol = self.http_factory.buildProtocol(transport.getPeer())
        if secure:
            # What a TLS transport would tell it; the bytes stay plain.
            protocol.isSecure = lambda: True  # type: ignore[method-assign]
        transport.protocol = protocol
        protocol.makeConnection(transport)
        return transport, protocol

    def connect(
        self, peer: IAddress | None = None, host: IAddress | None = None, secure: bool = False
    ) -> HTTPClient:
        """
        A new client connection, nothing sent yet.  ``peer`` and ``host``
        default to ``StringTransport``'s addresses; ``secure`` makes it
        HTTPS (``wss`` for a WebSocket).
        """
        transport, protocol = self._transport(peer, host, secure)
        return HTTPClient(self, transport, protocol)

    def open_websocket(
        self,
        path: bytes = b"/",
        headers: Sequence[tuple[bytes, bytes]] = (),
        *,
        subprotocols: Sequence[str] = (),
        peer: IAddress | None = None,
        secure: bool = False,
    ) -> WebSocketClient:
        """
        A new connection that sends a valid opening handshake
        (:func:`websocket_request`): its ``websocket.connect`` is on the
        layer, and the handshake waits for the application's answer.
        """
        transport, _ = self._transport(peer, None, secure)
        client = WebSocketClient(self, transport)
        client.send(websocket_request(path, headers, subprotocols=subprotocols))
        return client

    # -- the application's side ------------------------------------------------------

    def receive(self, channel: str) -> Content | None:
        """Take the next message off ``channel``, or None."""
        return self.layer.receive([channel])[1]

    def receive_all(self, channel: str) -> list[Content]:
        """Take every message off ``channel``."""
        messages = []
        while (message := self.receive(channel)) is not None:
            messages.append(message)
        return messages

    def expect(self, channel: str) -> Content:
        """
        Take the next message off ``channel``.

        :raises AssertionError: there is none.
        """
        message = self.receive(channel)
        assert message is not None, "nothing on %s" % (channel,)
        return message

    def reply(self, to: str | ContentMapping, message: ContentMapping) -> None:
        """
        Send ``message`` to a reply channel -- ``to`` itself, or the
        ``reply_channel`` of the message ``to`` -- and let the reactor
        deliver it.
        """
        channel = to if isinstance(to, str) else to["reply_channel"]
        self.layer.send(channel, dict(message))
        self.run()

    def consume(self, channel: str, routing: Any = None, alias: str = DEFAULT_CHANNEL_LAYER) -> Any:
        # Any: routing is any routing form, checked by Router at run time, and the result is
        # whatever the project's consumer returned (Channels 1.x API).
        """
        Take the next message off ``channel`` and run its consumer here, in
        the calling thread, as a worker would (:class:`chanserv.test.Client`
        ``.consume``: routed, bracketed by ``consumer_started`` /
        ``consumer_finished``, database connections kept); then deliver what
        it sent.  While it runs, the harness's layer is ``channel_layers[alias]``
        with ``routing`` (default: that alias's routing from the settings),
        so ``Group(...)`` and ``Channel(...)`` reach it.  Needs Django set up.
        Nothing is delivered while the consumer runs, so one that sends
        connections more than the layer's ``max_in_flight_bytes`` (256 KiB)
        in one run waits the store's ``full_timeout`` (2 real seconds) per
        message past that.

        :returns: what the consumer returned.
        :raises AssertionError: no message, or no route for it.
        """
        from chanserv.asgi import ChannelLayerWrapper, channel_layers
        from chanserv.test import Client

        if routing is None:
            routing = channel_layers[alias].routing
        previous = channel_layers.set(alias, ChannelLayerWrapper(self.layer, alias, routing))
        try:
            result = Client(alias).consume(channel)
        finally:
            channel_layers.set(alias, previous)
        self.run()
        return result

    # -- time ------------------------------------------------------------------------

    def run(self) -> None:
        """Run what the reactor has due now (:meth:`ClockReactor.run_pending`)."""
        self.reactor.run_pending()

    def advance(self, seconds: float) -> None:
        """
        Let ``seconds`` pass in steps of ``config.sweep_interval`` at most,
        running what falls due at each step, the sweep included.
        """
        step = self.config.sweep_interval
        left = seconds
        while left > 0:
            self.reactor.advance(min(step, left))
            self.run()
            left -= step
        self.run()

    def sweep(self) -> None:
        """Apply every connection's timeouts now, as the periodic sweep does."""
        now = self.reactor.seconds()
        self.http_factory.check_timeouts(now)
        self.websocket_factory.check_timeouts(now)
        self.run()

    def stop(self) -> Deferred[None]:
        """
        Stop the server as ``twistd`` would (requests in flight may finish,
        WebSockets close with 1001; :meth:`advance` past
        ``config.graceful_timeout`` for what lingers), then detach the layer.
        Fires when done.
        """
        d: Deferred[None] = self.server.stopService()
        d.addCallback(lambda _: self.layer.detach_reactor())
        self.run()
        return d
