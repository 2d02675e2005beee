"""
HTTP/2 after an ALPN ``h2`` handshake, over memory transports with the
clock: the hand-over from the HTTP/1.1 channel, the ``http.request`` message,
the per-stream refusals of the HTTP/1.1 side, body limits, timeouts, the
drain, and the stream resets that keep a connection usable.

The TLS layer is a ``ProtocolWrapper`` that says ``h2`` was negotiated; the
real handshake is in test_tls.py.  The client is the ``h2`` package, with its
own checks off where a test sends what a hostile client would.
"""

from __future__ import annotations

import sys
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
from h2.errors import ErrorCodes
from twisted.internet.interfaces import IProtocolNegotiationFactory
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from zope.interface.verify import verifyObject

from chanserv.exceptions import ChannelBlocked
from chanserv.server import http2
from chanserv.server.http import HTTPFactory
from chanserv.server.http2 import HTTP2Connection, take_over
from tests.server.http_helpers import Server


class NegotiatedTLS(ProtocolWrapper):
    """Stands for Twisted's TLS protocol once its handshake chose ``h2``."""

    negotiatedProtocol = b"h2"


class Client:
    """An HTTP/2 client connection to ``server`` through :class:`NegotiatedTLS`."""

    def __init__(self, server: Server, validate: bool = True) -> None:
        self.server = server
        self.transport = StringTransport()
        channel = server.factory.buildProtocol(None)
        self.tls = NegotiatedTLS(WrappingFactory(server.factory), channel)
        self.tls.makeConnection(self.transport)
        channel.handshakeCompleted()
        self.connection: HTTP2Connection = self.tls.wrappedProtocol  # type: ignore[assignment]
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=validate,
            normalize_outbound_headers=validate,
        )
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.initiate_connection()
        self.events: list[Any] = []
        self.flush()

    def flush(self) -> None:
        """Exchange what both sides have to send, until neither has anything."""
        for _ in range(100):
            self.server.run()
            outgoing = self.h2.data_to_send()
            if outgoing:
                self.tls.dataReceived(outgoing)
            incoming = self.transport.value()
            self.transport.clear()
            if incoming:
                self.events += self.h2.receive_data(incoming)
            if not outgoing and not incoming:
                return

    def request(
        self,
        path: bytes = b"/",
        method: bytes = b"GET",
        headers: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
        body: bytes | None = None,
        end: bool = True,
    ) -> int:
        """Send a request on a new stream; returns its id."""
        stream_id = self.h2.get_next_available_stream_id()
        head = [
            (b":method", method),
            (b":path", path),
            (b":scheme", b"https"),
            (b":authority", b"example.com"),
            *headers,
        ]
        self.h2.send_headers(stream_id, head, end_stream=end and body is None)
        self.flush()
        if body is not None:
            self.send_data(stream_id, body, end)
        return stream_id

    def send_data(self, stream_id: int, data: bytes, end: bool = False) -> None:
        """Send ``data`` in frames the flow-control window allows, as a client must."""
        while True:
            room = min(
                self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size
            )
            if room <= 0:
                raise AssertionError("the server stopped reading the body")
            frame, data = data[:room], data[room:]
            self.h2.send_data(stream_id, frame, end_stream=end and not data)
            self.flush()
            if not data:
                return

    def response(self, stream_id: int) -> tuple[int | None, dict[bytes, bytes], bytes, bool]:
        """``(status, headers, body, ended)`` received on ``stream_id``."""
        status, headers, body, ended = None, {}, b"", False
        for event in self.events:
            if getattr(event, "stream_id", None) != stream_id:
                continue
            if isinstance(event, h2.events.ResponseReceived):
                headers = dict(event.headers)
                status = int(headers.pop(b":status"))
            elif isinstance(event, h2.events.DataReceived):
                body += event.data
                self.h2.acknowledge_received_data(event.flow_controlled_length, stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                ended = True
        return status, headers, body, ended

    def reset_code(self, stream_id: int) -> int | None:
        """The error code of the server's RST_STREAM on ``stream_id``, if any."""
        for event in self.events:
            if isinstance(event, h2.events.StreamReset) and event.stream_id == stream_id:
                return int(event.error_code)
        return None

    def terminated(self) -> Any:
        """The server's GOAWAY event, if any."""
        for event in self.events:
            if isinstance(event, h2.events.ConnectionTerminated):
                return event
        return None


@pytest.fixture
def server() -> Server:
    return Server()


def refused(client: Client, stream_id: int) -> int | None:
    status, _, _, ended = client.response(stream_id)
    assert ended
    return status


def still_serves(server: Server, client: Client) -> None:
    stream_id = client.request(b"/next")
    request = server.request()
    assert request["path"] == "/next"
    server.reply(request, status=200, content=b"next")
    client.flush()
    assert client.response(stream_id) == (200, {}, b"next", True)


# -- negotiation and hand-over --------------------------------------------------


def test_factory_offers_h2_first_when_served(server: Server) -> None:
    """The HTTP factory offers ALPN http/1.1 alone, or h2 before it once h2 is served."""
    factory = server.factory
    assert verifyObject(IProtocolNegotiationFactory, factory)
    assert factory.acceptableProtocols() == [b"http/1.1"]
    factory.alternative_protocols[b"h2"] = take_over
    assert factory.acceptableProtocols() == [b"h2", b"http/1.1"]


def test_interface_server_serves_h2_unless_turned_off() -> None:
    """InterfaceServer offers h2 over ALPN by default and only http/1.1 with http2=False."""
    from chanserv.layers.inmemory import InMemoryChannelLayer
    from chanserv.server.config import ServerConfig
    from chanserv.server.site import InterfaceServer
    from tests.support import ClockReactor

    reactor, layer = ClockReactor(), InMemoryChannelLayer()
    on = InterfaceServer(reactor, layer, ServerConfig())
    off = InterfaceServer(reactor, layer, ServerConfig(http2=False))
    assert on.http_factory.acceptableProtocols() == [b"h2", b"http/1.1"]
    assert off.http_factory.acceptableProtocols() == [b"http/1.1"]


def test_without_twisted_http2_tls_offers_http11(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the HTTP/2 module importable, TLS listeners offer only http/1.1."""
    from chanserv.layers.inmemory import InMemoryChannelLayer
    from chanserv.server.config import ServerConfig
    from chanserv.server.site import InterfaceServer, http2_take_over
    from tests.support import ClockReactor

    monkeypatch.setitem(sys.modules, "chanserv.server.http2", None)  # as if h2 were missing
    assert http2_take_over() is None
    server = InterfaceServer(ClockReactor(), InMemoryChannelLayer(), ServerConfig())
    assert server.http_factory.acceptableProtocols() == [b"http/1.1"]


def test_no_http2_flag() -> None:
    """The --no-http2 option turns http2 off; it is on by default."""
    from tests.server.test_options import parse

    assert parse().http2 is True
    assert parse("--no-http2").http2 is False


def test_handshake_without_h2_keeps_http11(server: Server) -> None:
    """A TLS handshake that negotiates no protocol keeps the HTTP/1.1 channel."""
    server.factory.alternative_protocols[b"h2"] = take_over
    channel = server.factory.buildProtocol(None)
    tls = ProtocolWrapper(WrappingFactory(server.factory), channel)
    tls.makeConnection(StringTransport())
    channel.handshakeCompleted()  # no negotiatedProtocol: HTTP/1.1
    assert tls.wrappedProtocol is channel
    assert server.factory.connections == {channel}


def test_h2_replaces_the_channel(server: Server) -> None:
    """ALPN h2 replaces the HTTP/1.1 channel with an HTTP2Connection that sends its preface."""
    server.factory.alternative_protocols[b"h2"] = take_over
    client = Client(server)
    assert isinstance(client.connection, HTTP2Connection)
    assert server.factory.connections == {client.connection}
    settings = [e for e in client.events if isinstance(e, h2.events.RemoteSettingsChanged)]
    assert settings, "the server's HTTP/2 preface"


def test_a_transport_that_cannot_switch_is_aborted(server: Server) -> None:
    """take_over on a transport that cannot change protocol logs an error and drops it."""
    errors: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_level") == LogLevel.error:
            errors.append(event)

    transport = StringTransport()
    channel = server.factory.buildProtocol(None)
    channel.makeConnection(transport)
    globalLogPublisher.addObserver(observe)
    try:
        take_over(channel)
    finally:
        globalLogPublisher.removeObserver(observe)
    assert transport.disconnecting
    assert errors and "cannot change protocol" in errors[0]["log_format"]


# -- requests -----------------------------------------------------------------------


@pytest.fixture
def client(server: Server) -> Client:
    server.factory.alternative_protocols[b"h2"] = take_over
    return Client(server)


def test_get_becomes_the_same_http_request(server: Server, client: Client) -> None:
    """
    An h2 GET gives the same http.request as HTTP/1.1, with http_version "2" and joined cookies.
    Connection-specific reply headers are dropped from the response.
    """
    stream_id = client.request(
        b"/caf%C3%A9?q=1",
        headers=[(b"x-one", b"1"), (b"cookie", b"a=1"), (b"cookie", b"b=2"), (b"x_auth", b"no")],
    )
    request = server.request()
    assert request["http_version"] == "2"
    assert request["method"] == "GET"
    assert request["path"] == "/café"
    assert request["query_string"] == b"q=1"
    assert request["scheme"] == "http"  # the stand-in transport is not TLS
    headers = request["headers"]
    assert [b"host", b"example.com"] in headers
    assert [b"x-one", b"1"] in headers
    assert [b"cookie", b"a=1; b=2"] in headers  # split cookies joined (RFC 9113 §8.2.3)
    assert not [name for name, _ in headers if name.startswith(b":") or b"_" in name]
    assert request["body"] == b""
    server.reply(
        request,
        status=201,
        headers=[
            [b"content-type", b"text/plain"],
            [b"connection", b"close"],
            [b"transfer-encoding", b"chunked"],
            [b"te", b"gzip"],
        ],
        content=b"made",
    )
    client.flush()
    status, response_headers, body, ended = client.response(stream_id)
    assert (status, body, ended) == (201, b"made", True)
    assert response_headers == {b"content-type": b"text/plain"}
    assert server.request("http.disconnect")["reply_channel"] == request["reply_channel"]
    assert '"GET /caf%C3%A9?q=1 HTTP/2" 201 4' in server.access.getvalue()
    assert client.terminated() is None
    assert server.factory.connections == {client.connection}


def test_streams_are_served_side_by_side(server: Server, client: Client) -> None:
    """Concurrent streams are served independently and may be answered in any order."""
    first, second = client.request(b"/1"), client.request(b"/2")
    one, two = server.request(), server.request()
    server.reply(two, status=200, content=b"two")
    server.reply(one, status=200, content=b"one")
    client.flush()
    assert client.response(first)[2] == b"one"
    assert client.response(second)[2] == b"two"


def test_post_body_inline_and_streamed(client: Client) -> None:
    """An h2 body arrives inline when small, and past body_inline_size on a body channel."""
    server = client.server
    stream_id = client.request(b"/small", b"POST", [(b"content-length", b"3")], b"abc")
    assert server.request()["body"] == b"abc"
    big = b"x" * (server.config.body_inline_size + 10)
    stream_id = client.request(b"/big", b"POST", body=big[:30000], end=False)
    assert server.receive() is None
    client.send_data(stream_id, big[30000:60000])
    client.send_data(stream_id, big[60000:], end=True)
    request = server.request()
    assert request["body"] == big[: server.config.body_inline_size]
    chunks = b""
    while (chunk := server.receive(request["body_channel"])) is not None:
        chunks += chunk["content"]
    assert request["body"] + chunks == big


@pytest.mark.parametrize(
    ("path", "method", "headers", "status"),
    [
        (b"/", b"get", [], 400),
        (b"/a%00b", b"GET", [], 400),
        (b"/a b", b"GET", [], 400),
        (b"/\xc3\xa4", b"GET", [], 400),
        (b"/x#frag", b"GET", [], 400),
        (b"/", b"GET", [(b"foo(bar", b"1")], 400),
        (b"/", b"GET", [(b"x-padding", b"innocent\x0bx-secret-auth: admin")], 400),
        (b"/", b"GET", [(b"x-nel", b"a\xc2\x85b")], 400),
        (b"/", b"POST", [(b"content-length", b"99999999999")], 413),
        (b"/" + b"a" * 17000, b"GET", [], 414),
        (b"/", b"GET", [(b"x-big", b"a" * 17000)], 431),
        (b"/", b"GET", [(b"x-h%d" % i, b"1") for i in range(501)], 431),
    ],
)
def test_what_http11_refuses_is_refused_per_stream(
    path: bytes, method: bytes, headers: list[tuple[bytes, bytes]], status: int
) -> None:
    """What HTTP/1.1 refuses gets the same status on its stream; the connection goes on."""
    server = Server(max_body_size=1000)
    server.factory.alternative_protocols[b"h2"] = take_over
    client = Client(server, validate=False)
    stream_id = client.request(path, method, headers, end=method == b"GET")
    assert refused(client, stream_id) == status
    assert server.receive() is None
    assert client.terminated() is None
    assert '" %d ' % status in server.access.getvalue()
    assert "HTTP/2" in server.access.getvalue()
    still_serves(server, client)


def test_refused_body_is_not_invited() -> None:
    """A body over max_body_size gets 413 without a 100 Continue first."""
    server = Server(max_body_size=1000)
    server.factory.alternative_protocols[b"h2"] = take_over
    client = Client(server)
    headers = [(b"content-length", b"5000"), (b"expect", b"100-continue")]
    stream_id = client.request(b"/up", b"POST", headers, end=False)
    assert refused(client, stream_id) == 413
    assert not [e for e in client.events if isinstance(e, h2.events.InformationalResponseReceived)]


def test_connect_is_refused(server: Server) -> None:
    """An h2 CONNECT request is answered 400 and never delivered."""
    server.factory.alternative_protocols[b"h2"] = take_over
    client = Client(server)
    stream_id = client.h2.get_next_available_stream_id()
    client.h2.send_headers(
        stream_id, [(b":method", b"CONNECT"), (b":authority", b"example.com:443")]
    )
    client.flush()
    assert client.response(stream_id)[0] == 400
    assert server.receive() is None


@pytest.mark.parametrize(
    "headers",
    [
        [(b"transfer-encoding", b"chunked")],
        [(b"host", b"a.example"), (b"host", b"b.example")],
        [(b"x-nul", b"a\x00b")],
        [(b"content-length", b"+5")],
        [(b"content-length", b"5"), (b"content-length", b"6")],
    ],
)
def test_what_h2_refuses_ends_the_connection(
    server: Server, headers: list[tuple[bytes, bytes]]
) -> None:
    """Headers the h2 stack rejects end the connection with GOAWAY PROTOCOL_ERROR."""
    server.factory.alternative_protocols[b"h2"] = take_over
    client = Client(server, validate=False)
    client.request(b"/", b"POST", headers)
    assert client.terminated().error_code == ErrorCodes.PROTOCOL_ERROR
    assert server.receive() is None
    assert server.factory.connections == set()


def test_body_over_the_limit_mid_stream_gets_413_and_a_reset() -> None:
    """A body passing max_body_size mid-stream gets 413 and RST_STREAM NO_ERROR, not GOAWAY."""
    server = Server(max_body_size=1000)
    server.factory.alternative_protocols[b"h2"] = take_over
    client = Client(server)
    stream_id = client.request(b"/up", b"POST", body=b"x" * 600, end=False)
    # The server answers and resets the stream while more of the body is
    # still on its way: it is ignored and the connection stays.
    client.h2.send_data(stream_id, b"x" * 600)
    client.tls.dataReceived(client.h2.data_to_send())
    server.run()
    client.h2.send_data(stream_id, b"late")
    client.flush()
    assert client.response(stream_id)[0] == 413
    assert client.reset_code(stream_id) == ErrorCodes.NO_ERROR
    assert server.receive() is None
    assert client.terminated() is None
    still_serves(server, client)


def test_response_before_the_body_ends_resets_the_stream(client: Client) -> None:
    """A response before the request body ends is sent whole, then the stream reset NO_ERROR."""
    server = client.server
    stream_id = client.request(b"/early", b"POST", body=b"x" * 100_000, end=False)
    request = server.request()
    assert request["body_channel"]
    server.reply(request, status=200, content=b"early")
    client.flush()
    assert client.response(stream_id) == (200, {}, b"early", True)
    assert client.reset_code(stream_id) == ErrorCodes.NO_ERROR
    still_serves(server, client)


def test_client_reset_sends_disconnect(client: Client) -> None:
    """A client's RST_STREAM sends http.disconnect and frees the reply channel."""
    server = client.server
    stream_id = client.request(b"/gone")
    request = server.request()
    client.h2.reset_stream(stream_id)
    client.flush()
    assert server.request("http.disconnect")["reply_channel"] == request["reply_channel"]
    assert len(server.replies) == 0
    server.reply(request, status=200, content=b"too late")  # dropped quietly
    still_serves(server, client)


def test_bad_reply_resets_the_stream_once_started(client: Client) -> None:
    """A malformed reply after the response started resets the stream with INTERNAL_ERROR."""
    server = client.server
    stream_id = client.request(b"/broken")
    request = server.request()
    server.reply(request, status=200, content=b"part", more_content=True)
    server.reply(request, status=200, content=b"second status")
    client.flush()
    assert client.reset_code(stream_id) == ErrorCodes.INTERNAL_ERROR
    assert server.request("http.disconnect")["reply_channel"] == request["reply_channel"]
    still_serves(server, client)


# -- timeouts, slow readers, drain ---------------------------------------------------------


def test_no_response_in_time_gives_503() -> None:
    """No reply within http_timeout answers the stream 503 with the time-limit message."""
    server = Server(http_timeout=10)
    server.factory.alternative_protocols[b"h2"] = take_over
    client = Client(server)
    stream_id = client.request(b"/slow")
    server.request()
    server.advance(11)
    client.flush()
    status, _, body, ended = client.response(stream_id)
    assert (status, ended) == (503, True)
    assert body == b"Worker server failed to respond within time limit.\n"


def test_stalled_body_gets_408() -> None:
    """A request body silent for body_timeout answers its stream 408; the connection goes on."""
    server = Server(body_timeout=5, request_timeout=100)
    server.factory.alternative_protocols[b"h2"] = take_over
    client = Client(server)
    stream_id = client.request(b"/up", b"POST", [(b"content-length", b"10")], b"abc", end=False)
    server.advance(6)
    client.flush()
    assert client.response(stream_id)[0] == 408
    assert server.factory.deadline_closes["body_idle"] == 1
    assert server.receive() is None
    still_serves(server, client)


def test_idle_connection_is_closed_despite_pings() -> None:
    """Client pings do not keep an h2 connection alive: idle_timeout ends it with GOAWAY."""
    server = Server(idle_timeout=10)
    server.factory.alternative_protocols[b"h2"] = take_over
    client = Client(server)
    for _ in range(3):
        server.advance(3)
        client.h2.ping(b"12345678")
        client.flush()
    assert client.terminated() is None
    server.advance(2)
    client.flush()
    assert client.terminated().error_code == ErrorCodes.NO_ERROR
    assert client.transport.disconnecting


def test_client_that_reads_nothing_is_cut() -> None:
    """An h2 client that reads nothing for http_timeout is aborted."""
    server = Server(http_timeout=10)
    server.factory.alternative_protocols[b"h2"] = take_over
    client = Client(server)
    client.connection.pauseProducing()  # the transport's buffer is full
    server.advance(11)
    assert client.transport.disconnected  # aborted


def test_stream_behind_a_paused_connection_blocks_its_reply_channel() -> None:
    """A stream's queue past http_send_queue_size blocks its reply channel until it drains."""
    server = Server(http_send_queue_size=10_000)
    server.factory.alternative_protocols[b"h2"] = take_over
    client = Client(server)
    stream_id = client.request(b"/download")
    request = server.request()
    reply = request["reply_channel"]
    server.reply(request, status=200, content=b"x" * 6000, more_content=True)
    client.flush()
    client.connection.pauseProducing()  # the transport is full: frames wait in the stream
    server.reply(request, content=b"x" * 6000, more_content=True)
    server.layer.send(reply, {"content": b"x" * 6000, "more_content": True})  # 12 KB queued
    server.run()
    with pytest.raises(ChannelBlocked):
        server.layer.send(reply, {"content": b"late", "more_content": True})
    room = server.layer.when_capacity_twisted(reply)
    client.connection.resumeProducing()  # the client reads again
    client.flush()
    server.advance(1)  # the sweep sees the stream's queue drained
    assert room.called
    server.layer.send(reply, {"content": b"y", "more_content": False})
    client.flush()
    assert client.response(stream_id)[2:] == (b"x" * 18_000 + b"y", True)
    assert client.reset_code(stream_id) is None
    assert server.replies.overflow_closes == 0


def test_stream_drained_by_the_send_loop_unblocks_its_reply_channel() -> None:
    """A stream queue drained by the send loop unblocks its reply channel without the sweep."""
    # The client keeps up: no window event, no transport pause once resumed
    # -- only Twisted's send loop, one frame (16 KiB at most) per reactor
    # turn, drains the queue.
    server = Server(http_send_queue_size=1000)
    server.factory.alternative_protocols[b"h2"] = take_over
    client = Client(server)
    stream_id = client.request(b"/download")
    request = server.request()
    client.connection.pauseProducing()  # the transport is full: frames wait
    server.reply(request, status=200, content=b"x" * 40000, more_content=True)
    with pytest.raises(ChannelBlocked):
        server.layer.send(request["reply_channel"], {"content": b"y"})
    client.connection.resumeProducing()  # one frame goes at once: still behind
    with pytest.raises(ChannelBlocked):
        server.layer.send(request["reply_channel"], {"content": b"y"})
    client.flush()  # the loop sends the rest, a frame per turn
    assert client.response(stream_id)[2] == b"x" * 40000
    # Unblocked by the loop itself: no sweep (the clock has not moved).
    server.layer.send(request["reply_channel"], {"content": b"y"})
    client.flush()
    assert client.response(stream_id)[2:] == (b"x" * 40000 + b"y", True)


def test_unread_response_over_four_times_the_cap_cuts_the_stream() -> None:
    """Unsent response past four times http_send_queue_size resets the stream INTERNAL_ERROR."""
    server = Server(http_send_queue_size=1000)
    server.factory.alternative_protocols[b"h2"] = take_over

    def cannot_block(channel: str) -> None:
        raise NotImplementedError()

    server.layer.block_local_channel = cannot_block  # type: ignore[method-assign]
    client = Client(server)
    stream_id = client.request(b"/download")
    request = server.request()
    reply = request["reply_channel"]
    server.reply(request, status=200, content=b"", more_content=True)
    client.connection.pauseProducing()
    # A layer that cannot block: only the cap on what piles up holds.
    for _ in range(5):
        server.layer.send(reply, {"content": b"x" * 900, "more_content": True})
    server.run()
    client.connection.resumeProducing()
    client.flush()
    assert client.reset_code(stream_id) == ErrorCodes.INTERNAL_ERROR
    assert server.replies.overflow_closes == 1
    assert server.layer.global_statistics()["channel_full_count"] == 1
    assert server.request("http.disconnect")["reply_channel"] == reply
    still_serves(server, client)


def test_stream_whose_client_takes_nothing_is_cut_after_http_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stream whose queue does not move for http_timeout is reset, releasing its channel."""
    server = Server(http_send_queue_size=1000, http_timeout=10)
    server.factory.alternative_protocols[b"h2"] = take_over
    client = Client(server)
    stream_id = client.request(b"/download")
    request = server.request()
    reply = request["reply_channel"]
    # A stream whose window the client never opens again: its data stays
    # queued (the connection itself keeps serving other streams).
    monkeypatch.setattr(http2.StreamChannel, "unsent_bytes", lambda self: 1500)
    server.reply(request, status=200, content=b"x" * 600, more_content=True)
    room = server.layer.when_capacity_twisted(reply)
    server.advance(9)
    assert client.reset_code(stream_id) is None
    assert not room.called  # blocked, not a stalled application
    server.advance(2)
    client.flush()
    assert client.reset_code(stream_id) == ErrorCodes.INTERNAL_ERROR
    assert room.called  # the application's wait ends
    monkeypatch.undo()
    still_serves(server, client)


def test_stream_tells_its_request_when_its_window_opens(client: Client) -> None:
    """A stream's producer resuming (its window opened) resumes its request's replies."""
    server = client.server
    client.request(b"/download")
    request = server.request()
    server.reply(request, status=200, content=b"x", more_content=True)
    [channel] = client.connection._channels.values()
    assert isinstance(channel.stream.producer, http2._StreamWriting)
    calls: list[str] = []
    channel.request.resume_replies = lambda: calls.append("resume")  # type: ignore[method-assign]
    channel.stream.producer.resumeProducing()  # what H2Stream.windowUpdated calls
    assert calls == ["resume"]


# -- flow control: a client that does not open its window ------------------------


class SendLoop:
    """
    Counts the runs of ``connection``'s send loop (Twisted's private
    ``_sendPrioritisedData``) from now on, and stops it past ``limit``: a
    loop that spins on ``callLater(0)`` would keep ``Clock.advance`` busy
    forever; this way it fails an assertion instead.
    """

    def __init__(self, connection: HTTP2Connection, limit: int = 100) -> None:
        self.connection = connection
        self.limit = limit
        self.runs = 0
        run = connection._sendPrioritisedData

        def counted(*args: Any) -> None:
            self.runs += 1
            if self.runs <= limit:
                run(*args)

        self._counted = counted
        connection._sendPrioritisedData = counted  # type: ignore[method-assign]

    def scheduled(self) -> int:
        """How many runs of the loop are waiting on the clock."""
        calls = self.connection.factory.clock.getDelayedCalls()
        return sum(1 for call in calls if call.func is self._counted)

    def assert_parked(self) -> None:
        """The loop waits for a stream to send (not on the clock), and never spun."""
        assert self.runs <= self.limit, "the send loop spun: %d runs" % self.runs
        assert self.scheduled() == 0, "the send loop is still scheduled"
        assert self.connection._sendingDeferred is not None


def received(client: Client, stream_id: int) -> tuple[int, bool]:
    """
    ``(bytes, ended)`` received on ``stream_id`` so far, without giving the
    flow-control window back (as :meth:`Client.response` does).
    """
    size, ended = 0, False
    for event in client.events:
        if getattr(event, "stream_id", None) != stream_id:
            continue
        if isinstance(event, h2.events.DataReceived):
            size += len(event.data)
        elif isinstance(event, h2.events.StreamEnded):
            ended = True
    return size, ended


def body_of(client: Client, stream_id: int) -> bytes:
    return b"".join(
        e.data
        for e in client.events
        if isinstance(e, h2.events.DataReceived) and e.stream_id == stream_id
    )


def open_window(client: Client, increment: int, stream_id: int | None = None) -> None:
    """The client sends WINDOW_UPDATE (for the connection when ``stream_id`` is None)."""
    client.h2.increment_flow_control_window(increment, stream_id=stream_id)
    client.flush()


WINDOW = 65_535  # the initial flow-control window, of each stream and the connection


def test_exhausted_stream_window_parks_the_send_loop_until_opened(client: Client) -> None:
    """A stream out of window parks the send loop (no spinning) until WINDOW_UPDATE opens it."""
    server = client.server
    open_window(client, 10_000)  # the connection's window: 75,535
    loop = SendLoop(client.connection)
    stream_id = client.request(b"/big")
    body = bytes(range(256)) * 800  # 204,800 bytes
    server.reply(server.request(), status=200, content=body)
    client.flush()
    assert received(client, stream_id) == (WINDOW, False)
    loop.assert_parked()
    runs = loop.runs
    server.advance(5)
    assert loop.runs == runs, "the send loop ran with nothing to send"
    assert client.transport.value() == b""  # nothing more written

    open_window(client, 5000, stream_id)  # the stream's window is the limit
    assert received(client, stream_id) == (WINDOW + 5000, False)
    loop.assert_parked()

    open_window(client, 500_000, stream_id)  # now the connection's (5,000 left) is
    assert received(client, stream_id) == (WINDOW + 10_000, False)
    assert client.connection.conn.local_flow_control_window(stream_id) == 0
    loop.assert_parked()

    open_window(client, 500_000)  # the connection's window opens: the rest goes
    assert received(client, stream_id) == (len(body), True)
    assert body_of(client, stream_id) == body
    assert loop.runs <= loop.limit
    assert client.reset_code(stream_id) is None
    still_serves(server, client)


def test_flow_blocked_stream_does_not_hold_back_another(client: Client) -> None:
    """A stream blocked on its window does not delay another stream's response."""
    server = client.server
    open_window(client, 1_000_000)  # only the streams' windows limit
    loop = SendLoop(client.connection)
    blocked, free = client.request(b"/big"), client.request(b"/small")
    big_request, small_request = server.request(), server.request()
    server.reply(big_request, status=200, content=b"b" * 200_000)
    client.flush()
    assert received(client, blocked) == (WINDOW, False)
    loop.assert_parked()
    # The other stream has a window of its own: its response goes whole.
    server.reply(small_request, status=200, content=b"s" * 50_000)
    client.flush()
    assert received(client, free) == (50_000, True)
    assert body_of(client, free) == b"s" * 50_000
    assert received(client, blocked) == (WINDOW, False)
    loop.assert_parked()
    open_window(client, 1_000_000, blocked)
    assert received(client, blocked) == (200_000, True)


def test_exhausted_connection_window_wakes_every_stream_when_opened(client: Client) -> None:
    """When the connection window reopens, every stream waiting on it sends again."""
    server = client.server
    loop = SendLoop(client.connection)
    first, second = client.request(b"/1"), client.request(b"/2")
    one, two = server.request(), server.request()
    server.reply(one, status=200, content=b"1" * 40_000)
    server.reply(two, status=200, content=b"2" * 40_000)
    client.flush()
    # 65,535 bytes in all, shared: then nothing can go on either stream.
    sent = received(client, first)[0] + received(client, second)[0]
    assert sent == WINDOW
    loop.assert_parked()
    runs = loop.runs
    server.advance(5)
    assert loop.runs == runs
    assert client.transport.value() == b""
    # Both streams' own windows are open (each took < 65,535): the
    # connection's WINDOW_UPDATE lets both finish.
    open_window(client, 1_000_000)
    assert received(client, first) == (40_000, True)
    assert received(client, second) == (40_000, True)
    assert body_of(client, first) == b"1" * 40_000
    assert body_of(client, second) == b"2" * 40_000
    assert loop.runs <= loop.limit


def test_larger_initial_window_setting_wakes_a_parked_stream(client: Client) -> None:
    """A larger SETTINGS_INITIAL_WINDOW_SIZE wakes a stream parked on its window."""
    from h2.settings import SettingCodes

    server = client.server
    open_window(client, 1_000_000)
    loop = SendLoop(client.connection)
    stream_id = client.request(b"/big")
    server.reply(server.request(), status=200, content=b"x" * 100_000)
    client.flush()
    assert received(client, stream_id) == (WINDOW, False)
    loop.assert_parked()
    # SETTINGS_INITIAL_WINDOW_SIZE opens every stream's window (RFC 9113
    # §6.9.2) without a WINDOW_UPDATE.
    client.h2.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 1_000_000})
    client.flush()
    assert received(client, stream_id) == (100_000, True)


def test_end_of_stream_goes_with_an_exhausted_window(client: Client) -> None:
    """END_STREAM is sent even when the stream's flow-control window is exhausted."""
    # END_STREAM carries no data: neither window holds it back.
    server = client.server
    loop = SendLoop(client.connection)
    whole = client.request(b"/whole")
    server.reply(server.request(), status=200, content=b"w" * WINDOW)
    client.flush()
    assert received(client, whole) == (WINDOW, True)
    open_window(client, WINDOW)
    later = client.request(b"/later")
    request = server.request()
    server.reply(request, status=200, content=b"l" * WINDOW, more_content=True)
    client.flush()
    assert received(client, later) == (WINDOW, False)
    server.reply(request, content=b"", more_content=False)
    client.flush()
    assert received(client, later) == (WINDOW, True)
    assert loop.runs <= loop.limit
    assert loop.scheduled() == 0


def test_drain_finishes_streams_refuses_new_ones_then_closes(client: Client) -> None:
    """Drain lets open streams finish, answers new ones 503, then sends GOAWAY NO_ERROR."""
    server = client.server
    first = client.request(b"/in-flight")
    request = server.request()
    drained = server.factory.drain()
    assert not drained.called
    late = client.request(b"/late")
    assert client.response(late)[0] == 503
    assert server.receive() is None
    server.reply(request, status=200, content=b"done")
    client.flush()
    assert client.response(first)[2] == b"done"
    assert client.terminated().error_code == ErrorCodes.NO_ERROR
    assert client.transport.disconnecting
    client.tls.connectionLost(None)  # type: ignore[arg-type]
    assert drained.called


def test_idle_connection_closes_at_once_on_drain(client: Client) -> None:
    """Drain closes an h2 connection with no open stream at once."""
    drained = client.server.factory.drain()
    client.flush()
    assert client.terminated() is not None
    client.tls.connectionLost(None)  # type: ignore[arg-type]
    assert drained.called


def test_plain_factory_offers_only_http11() -> None:
    """A plain HTTPFactory offers only http/1.1 over ALPN."""
    from chanserv.layers.inmemory import InMemoryChannelLayer
    from chanserv.server.config import ServerConfig
    from tests.support import ClockReactor

    factory = HTTPFactory(ClockReactor(), InMemoryChannelLayer(), None, ServerConfig())
    assert factory.acceptableProtocols() == [b"http/1.1"]
