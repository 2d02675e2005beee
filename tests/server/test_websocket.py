"""
Protocol tests of chanserv.server.websocket: the handed-over upgrade, every
key of websocket.connect / receive / disconnect, every reply case of
reference §2.2 (with chanserv's additions), timeouts, receive back-pressure
and shutdown -- over StringTransports, the real HTTP side, the in-memory
layer and a Clock; and the hand-over from live TCP and TLS transports.
"""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import twisted.test
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, globalLogPublisher

from chanserv.layers.inmemory import InMemoryChannelLayer
from chanserv.server.config import ServerConfig
from chanserv.server.http import HTTPFactory
from chanserv.server.replies import ReplyRegistry
from chanserv.server.websocket import (
    _AT_REST,
    _HANDSHAKE_ONLY,
    CLOSE_HANDSHAKE_TIMEOUT,
    MAX_BACKLOG,
    WebSocketFactory,
    WebSocketProtocol,
)
from tests.server.wshelpers import (
    ACCEPT,
    BINARY,
    CLOSE,
    PING,
    PONG,
    TEXT,
    Harness,
    close_code,
    frame,
    handshake_request,
    parse_frames,
)
from tests.support import in_reactor, reactor_thread


@pytest.fixture
def errors() -> Iterator[list[dict[str, Any]]]:
    """Error-level log events of the WebSocket module."""
    events: list[dict[str, Any]] = []

    def observer(event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "chanserv.server.websocket" and event["log_level"] in (
            LogLevel.error,
            LogLevel.critical,
        ):
            events.append(event)

    globalLogPublisher.addObserver(observer)
    yield events
    globalLogPublisher.removeObserver(observer)


# -- websocket.connect ---------------------------------------------------------------


def test_connect_message_has_every_key_and_the_handshake_waits() -> None:
    """websocket.connect has every ASGI key; the handshake is held until the app answers."""
    h = Harness(root_path="/app")
    request = handshake_request(
        path=b"/chat/r%C3%A9sum%C3%A9/?room=1&b=%20",
        extra=[
            (b"X-Custom", b"one"),
            (b"X_Auth_User", b"admin"),
            (b"Cookie", b"a=1"),
            (b"X-Custom", b"two"),
            (b"Sec-WebSocket-Protocol", b"chat, superchat"),
        ],
    )
    client = h.connect(request)
    assert client.transport.value() == b""  # held until the application answers
    connect = h.receive("websocket.connect")
    assert connect is not None
    assert set(connect) == {
        "reply_channel",
        "path",
        "headers",
        "query_string",
        "client",
        "server",
        "order",
        "scheme",
        "root_path",
        "subprotocols",
    }
    assert connect["reply_channel"].startswith(h.registry.prefix)
    assert len(connect["reply_channel"]) - len(h.registry.prefix) >= 12
    assert connect["path"] == "/chat/résumé/"
    assert connect["query_string"] == b"room=1&b=%20"
    assert connect["client"] == ["10.1.2.3", 52000]
    assert connect["server"] == ["127.0.0.1", 8000]
    assert connect["order"] == 0
    assert connect["scheme"] == "ws"
    assert connect["root_path"] == "/app"
    assert connect["subprotocols"] == ["chat", "superchat"]
    headers = connect["headers"]
    assert all(isinstance(n, bytes) and isinstance(v, bytes) for n, v in headers)
    assert all(n == n.lower() for n, _ in headers)
    names = [n for n, _ in headers]
    assert b"x_auth_user" not in names
    assert [v for n, v in headers if n == b"x-custom"] == [b"one", b"two"]
    assert names.index(b"host") < names.index(b"upgrade") < names.index(b"x-custom")
    assert h.access_log.actions == ["connecting"]
    assert h.access_log.entries[0][1] == {"path": "/chat/résumé/", "client": "10.1.2.3:52000"}


def test_scheme_is_wss_over_tls() -> None:
    """A WebSocket over TLS has scheme "wss" in websocket.connect."""
    h = Harness()
    h.connect(secure=True)
    connect = h.receive("websocket.connect")
    assert connect is not None and connect["scheme"] == "wss"


@pytest.mark.parametrize("proxy_headers", [True, False])
def test_proxy_headers_only_when_enabled(proxy_headers: bool) -> None:
    """X-Forwarded-* set websocket.connect's client and scheme only with proxy_headers."""
    h = Harness(proxy_headers=proxy_headers)
    h.connect(
        handshake_request(
            extra=[
                (b"X-Forwarded-For", b"203.0.113.9, 10.0.0.1"),
                (b"X-Forwarded-Port", b"4431"),
                (b"X-Forwarded-Proto", b"https"),
            ]
        )
    )
    connect = h.receive("websocket.connect")
    assert connect is not None
    if proxy_headers:
        assert (connect["client"], connect["scheme"]) == (["203.0.113.9", 4431], "wss")
    else:
        assert (connect["client"], connect["scheme"]) == (["10.1.2.3", 52000], "ws")


def test_connect_full_is_503_with_no_disconnect() -> None:
    """A full websocket.connect channel answers 503 and sends no websocket.disconnect."""
    h = Harness(channel_capacity={"websocket.connect": 1})
    h.connect()
    client = h.connect()
    assert client.status() == 503
    assert client.transport.disconnecting
    client.lose()
    assert len(h.receive_all("websocket.connect")) == 1
    assert h.receive_all("websocket.disconnect") == []
    assert len(h.registry) == 1  # only the first connection's reply channel
    assert client.protocol not in h.factory.connections


# -- the handshake reply -------------------------------------------------------------


def test_accept_sends_101_without_extensions_or_subprotocol() -> None:
    """An accept sends 101 with the right Sec-WebSocket-Accept, no extension, no subprotocol."""
    h = Harness()
    client, _ = h.open(
        handshake_request(
            extra=[(b"Sec-WebSocket-Extensions", b"permessage-deflate; client_max_window_bits")]
        )
    )
    headers = client.response_headers()
    assert headers[b"sec-websocket-accept"] == ACCEPT.encode()
    assert headers[b"server"] == b"chanserv"
    assert b"sec-websocket-extensions" not in headers
    assert b"sec-websocket-protocol" not in headers
    assert h.access_log.actions == ["connecting", "connected"]


def test_accept_may_choose_an_offered_subprotocol() -> None:
    """An accept naming an offered subprotocol sends it in Sec-WebSocket-Protocol."""
    h = Harness()
    client = h.connect(handshake_request(extra=[(b"Sec-WebSocket-Protocol", b"v1, v2")]))
    connect = h.receive("websocket.connect")
    assert connect is not None
    h.reply(connect["reply_channel"], {"accept": True, "subprotocol": "v2"})
    assert client.status() == 101
    assert client.response_headers()[b"sec-websocket-protocol"] == b"v2"


def test_subprotocol_not_offered_is_an_ignored_reply(errors: list[dict[str, Any]]) -> None:
    """An accept naming a subprotocol the client did not offer is logged and ignored."""
    h = Harness()
    client = h.connect(handshake_request(extra=[(b"Sec-WebSocket-Protocol", b"v1")]))
    connect = h.receive("websocket.connect")
    assert connect is not None
    h.reply(connect["reply_channel"], {"accept": True, "subprotocol": "v3"})
    assert client.transport.value() == b""
    assert len(errors) == 1
    h.reply(connect["reply_channel"], {"accept": True})
    assert client.status() == 101


def test_server_whitelist_picks_the_first_offered_protocol() -> None:
    """With ws_protocols set, the first protocol the client offered from that list is chosen."""
    h = Harness(ws_protocols=("b", "a"))
    client = h.connect(handshake_request(extra=[(b"Sec-WebSocket-Protocol", b"x, a, b")]))
    connect = h.receive("websocket.connect")
    assert connect is not None
    h.reply(connect["reply_channel"], {"accept": True})
    assert client.response_headers()[b"sec-websocket-protocol"] == b"a"


@pytest.mark.parametrize(
    "reply",
    [{"accept": False}, {"close": True}, {"close": 4001}, {"accept": False, "text": "no"}],
)
def test_reject_while_connecting_is_403(reply: dict[str, Any]) -> None:
    """A refusal or close before the accept answers 403 and sends websocket.disconnect 1006."""
    h = Harness()
    client = h.connect()
    connect = h.receive("websocket.connect")
    assert connect is not None
    h.reply(connect["reply_channel"], reply)
    assert client.status() == 403
    assert b"\r\n\r\n" in client.transport.value()
    assert client.transport.value().endswith(b"\r\n\r\n")  # no frame follows
    assert client.transport.disconnecting
    client.lose()
    assert h.access_log.actions == ["connecting", "rejected"]
    # The application learns the socket is gone (it may have added it to groups).
    disconnect = h.receive("websocket.disconnect")
    assert disconnect == {
        "reply_channel": connect["reply_channel"],
        "code": 1006,
        "path": "/chat/room",
        "order": 1,
    }
    assert h.factory.connections == set()
    assert connect["reply_channel"] not in h.registry


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ({"text": "hi"}, (TEXT, b"hi")),
        ({"bytes": b"\x00\x01"}, (BINARY, b"\x00\x01")),
        ({"text": ""}, (TEXT, b"")),
        ({"bytes": b""}, (BINARY, b"")),
    ],
)
def test_text_or_bytes_while_connecting_accepts_then_sends(
    reply: dict[str, Any], expected: tuple[int, bytes]
) -> None:
    """Text or bytes before the accept accept the socket, then send that frame."""
    h = Harness()
    client = h.connect()
    connect = h.receive("websocket.connect")
    assert connect is not None
    h.reply(connect["reply_channel"], reply)
    assert client.status() == 101
    assert client.frames() == [expected]


def test_text_and_close_while_connecting_accepts_sends_and_closes() -> None:
    """Text with close before the accept accepts, sends the text, then closes with 1000."""
    h = Harness()
    client = h.connect()
    connect = h.receive("websocket.connect")
    assert connect is not None
    h.reply(connect["reply_channel"], {"text": "bye", "close": True})
    frames = client.frames()
    assert frames[0] == (TEXT, b"bye")
    assert frames[1][0] == CLOSE and close_code(frames[1][1]) == 1000


def test_empty_reply_while_connecting_changes_nothing() -> None:
    """A reply with close False and nothing else leaves a connecting socket as it was."""
    h = Harness()
    client = h.connect()
    connect = h.receive("websocket.connect")
    assert connect is not None
    h.reply(connect["reply_channel"], {"close": False})
    assert client.transport.value() == b""
    assert client.protocol.state == WebSocketProtocol.STATE_CONNECTING


def test_connect_timeout_is_403() -> None:
    """No answer within websocket_connect_timeout gives 403; a later accept changes nothing."""
    h = Harness(websocket_connect_timeout=5)
    client = h.connect()
    h.tick(4.5)
    assert client.transport.value() == b""
    h.tick(1)
    assert client.status() == 403
    assert not client.transport.disconnected  # a 403, not the handshake-timeout abort
    assert h.access_log.actions == ["connecting", "rejected"]
    # A late accept finds nothing to accept.
    connect = h.receive("websocket.connect")
    assert connect is not None
    h.reply(connect["reply_channel"], {"accept": True})
    assert client.status() == 403


def test_client_gone_while_connecting() -> None:
    """A client gone before the accept sends disconnect 1006; a late accept writes nothing."""
    h = Harness()
    client = h.connect()
    connect = h.receive("websocket.connect")
    assert connect is not None
    client.lose()
    assert h.receive("websocket.disconnect") == {
        "reply_channel": connect["reply_channel"],
        "code": 1006,
        "path": "/chat/room",
        "order": 1,
    }
    written = client.transport.value()
    h.reply(connect["reply_channel"], {"accept": True, "text": "late"})
    assert client.transport.value() == written == b""
    assert h.factory.connections == set()


# -- open ------------------------------------------------------------------------------


def test_receive_messages_are_numbered_and_empty_ones_kept() -> None:
    """websocket.receive messages are numbered from 1; empty and fragmented ones are kept."""
    h = Harness()
    client, connect = h.open()
    client.text("hello")
    client.binary(b"\x00\xff")
    client.text("")
    client.binary(b"")
    client.send(frame(TEXT, "é".encode(), fin=False) + frame(0, "ü".encode()))
    received = h.receive_all("websocket.receive")
    base = {"reply_channel": connect["reply_channel"], "path": "/chat/room"}
    assert received == [
        dict(base, order=1, text="hello"),
        dict(base, order=2, bytes=b"\x00\xff"),
        dict(base, order=3, text=""),
        dict(base, order=4, bytes=b""),
        dict(base, order=5, text="éü"),
    ]
    assert all(type(m["order"]) is int for m in received)


def test_an_open_socket_keeps_in_its_own_dict_only_what_differs_from_rest() -> None:
    """
    Once open, a socket's instance dict holds neither what only the handshake
    needed nor the attributes still at their resting value (read from the
    class): at most 20 keys, which a copied dict holds in 32 slots (464
    bytes, against 832 from 21 keys on), for each idle socket.  What
    later changes -- traffic, a close -- is set on the socket itself.
    """
    h = Harness()
    client, connect = h.open()
    (proto,) = h.factory.connections
    state = vars(proto)
    assert not set(state) & (set(_AT_REST) | set(_HANDSHAKE_ONLY))
    assert len(state) <= 20, sorted(state)
    assert (proto.wasClean, proto.localCloseCode, proto.data) == (False, None, b"")
    client.text("hello")
    assert h.receive("websocket.receive")["text"] == "hello"
    h.reply(connect["reply_channel"], {"text": "back"})
    assert [(op, data) for op, data in client.frames()] == [(TEXT, b"back")]
    client.close(1000)
    assert client.frames()[-1][0] == CLOSE
    client.lose()
    assert proto.wasClean is True and vars(proto)["wasClean"] is True
    assert proto.remoteCloseCode == 1000
    # The class's copies are untouched.
    assert (WebSocketProtocol.wasClean, WebSocketProtocol.remoteCloseCode) == (False, None)


def test_replies_while_open() -> None:
    """An open socket sends text and bytes replies as frames and ignores accept keys."""
    h = Harness()
    client, connect = h.open()
    reply = connect["reply_channel"]
    h.reply(reply, {"text": "a"})
    h.reply(reply, {"bytes": b"b"})
    h.reply(reply, {"text": ""})
    h.reply(reply, {"bytes": b""})
    h.reply(reply, {"accept": True})  # ignored when open
    h.reply(reply, {"accept": False})  # ignored too
    h.reply(reply, {"accept": True, "subprotocol": "late", "text": "c"})  # only text counts
    assert client.frames() == [
        (TEXT, b"a"),
        (BINARY, b"b"),
        (TEXT, b""),
        (BINARY, b""),
        (TEXT, b"c"),
    ]
    assert client.protocol.state == WebSocketProtocol.STATE_OPEN


@pytest.mark.parametrize(
    ("close", "code", "logged"),
    [(True, 1000, False), (1000, 1000, False), (4000, 4000, False), (3000, 3000, False),
     (1011, 1011, False), (1013, 1013, False), (1001, 1001, False), (1008, 1008, False),
     (1002, 1000, True), (1006, 1000, True), (999, 1000, True), (5000, 1000, True),
     ("x", 1000, True)],
)  # fmt: skip
def test_close_codes(close: Any, code: int, logged: bool, errors: list[dict[str, Any]]) -> None:
    """A reply's close code is sent if valid; an invalid one is logged and sent as 1000."""
    h = Harness()
    client, connect = h.open()
    client.text("one")
    h.reply(connect["reply_channel"], {"text": "last", "close": close})
    frames = client.frames()
    assert frames[0] == (TEXT, b"last")
    assert frames[1][0] == CLOSE and close_code(frames[1][1]) == code
    assert bool(errors) == logged
    client.close(code)  # the client answers; the server drops TCP
    assert client.transport.disconnecting
    client.lose()
    h.receive_all("websocket.receive")
    assert h.receive("websocket.disconnect") == {
        "reply_channel": connect["reply_channel"],
        "code": code,
        "path": "/chat/room",
        "order": 2,
    }


@pytest.mark.parametrize(
    "reply",
    [
        {"text": "a", "bytes": b"b"},
        {"text": "a", "extra": 1},
        {"text": b"not str"},
        {"bytes": "not bytes"},
        {"content": b"http style"},
    ],
)
def test_malformed_replies_are_logged_and_ignored(
    reply: dict[str, Any], errors: list[dict[str, Any]]
) -> None:
    """A malformed reply is logged and ignored; the socket still serves later replies."""
    h = Harness()
    client, connect = h.open()
    h.reply(connect["reply_channel"], reply)
    h.reply(connect["reply_channel"], {"text": "still fine"})
    assert client.frames() == [(TEXT, b"still fine")]
    assert len(errors) == 1


@pytest.mark.parametrize(("client_close", "code"), [(1000, 1000), (4321, 4321), (None, 1005)])
def test_disconnect_after_client_close(client_close: int | None, code: int) -> None:
    """A client's close gives websocket.disconnect with its code (1005 if none), next order."""
    h = Harness()
    client, connect = h.open()
    client.text("a")
    client.text("b")
    client.close(client_close)
    assert client.frames()[-1][0] == CLOSE
    client.lose()
    assert h.receive("websocket.disconnect") == {
        "reply_channel": connect["reply_channel"],
        "code": code,
        "path": "/chat/room",
        "order": 3,
    }
    assert h.access_log.actions == ["connecting", "connected", "disconnected"]
    assert h.factory.connections == set()
    assert connect["reply_channel"] not in h.registry


def test_disconnect_after_tcp_drop_is_1006_and_late_replies_are_dropped() -> None:
    """A TCP drop sends websocket.disconnect 1006; replies after it write nothing."""
    h = Harness()
    client, connect = h.open()
    client.lose()
    assert h.receive("websocket.disconnect") == {
        "reply_channel": connect["reply_channel"],
        "code": 1006,
        "path": "/chat/room",
        "order": 1,
    }
    before = client.transport.value()
    h.reply(connect["reply_channel"], {"text": "late", "close": True})
    assert client.transport.value() == before


def test_data_after_a_close_frame_is_ignored() -> None:
    """Client data after the server sent its close frame is not delivered."""
    h = Harness()
    client, connect = h.open()
    h.reply(connect["reply_channel"], {"close": True})
    client.text("after close")
    assert h.receive_all("websocket.receive") == []


# -- timeouts ---------------------------------------------------------------------------


def test_websocket_timeout_closes_with_1000() -> None:
    """A socket open for websocket_timeout is closed with 1000."""
    h = Harness(websocket_timeout=60, ping_interval=0)
    client, _ = h.open()
    h.tick(59)
    assert client.frames() == []
    h.tick(2)
    assert [(op, close_code(p)) for op, p in client.frames()] == [(CLOSE, 1000)]


def test_no_websocket_timeout() -> None:
    """With websocket_timeout None an open socket is never closed for its age."""
    h = Harness(websocket_timeout=None, ping_interval=0)
    client, _ = h.open()
    h.tick(10**6)
    assert client.frames() == []


def test_idle_socket_is_pinged_and_dropped_without_pong() -> None:
    """
    An idle socket is pinged after ping_interval of silence on its side.
    Without a pong within ping_timeout it is dropped with websocket.disconnect 1006.
    """
    h = Harness(ping_interval=20, ping_timeout=30)
    client, _ = h.open()
    h.tick(10)
    client.text("activity")
    h.tick(15)
    assert client.frames() == []  # active 15 s ago
    h.tick(6)
    frames = client.frames()
    assert [op for op, _ in frames] == [PING]
    client.send(frame(PONG, frames[0][1]))
    h.tick(21)  # answered: the next ping comes an interval later
    pings = [p for op, p in client.frames() if op == PING]
    assert len(pings) == 2
    h.tick(29)
    assert not client.transport.disconnecting
    h.tick(2)
    assert client.transport.disconnecting  # no pong within ping_timeout
    client.lose()
    disconnect = h.receive("websocket.disconnect")
    assert disconnect is not None and disconnect["code"] == 1006


# -- back-pressure ------------------------------------------------------------------------


def _burst(client: Any, count: int) -> None:
    client.send(b"".join(frame(TEXT, str(i).encode()) for i in range(count)))


def test_receive_full_pauses_reading_and_loses_nothing() -> None:
    """A full websocket.receive pauses reading; held messages then go in order, none lost."""
    h = Harness(channel_capacity={"websocket.receive": 3})
    client, _ = h.open()
    _burst(client, 10)
    assert client.transport.producerState == "paused"
    got = [m["text"] for m in h.receive_all("websocket.receive")]
    h.reactor.run_pending()  # room: the held messages go on
    while client.transport.producerState == "paused":
        got += [m["text"] for m in h.receive_all("websocket.receive")]
        h.reactor.run_pending()
    got += [m["text"] for m in h.receive_all("websocket.receive")]
    assert got == [str(i) for i in range(10)]
    assert client.transport.producerState == "producing"
    client.text("more")
    assert [m["order"] for m in h.receive_all("websocket.receive")] == [11]


def test_receive_full_too_long_closes_with_1013() -> None:
    """websocket.receive full for ws_receive_full_timeout closes the socket with 1013."""
    h = Harness(channel_capacity={"websocket.receive": 2}, ws_receive_full_timeout=10)
    client, connect = h.open()
    _burst(client, 5)
    assert client.transport.producerState == "paused"
    h.tick(9)
    assert client.frames() == []
    h.tick(2)
    frames = client.frames()
    assert [(op, close_code(p)) for op, p in frames] == [(CLOSE, 1013)]
    assert client.transport.producerState == "producing"  # to read the close reply
    client.close(1013)
    client.lose()
    assert len(h.receive_all("websocket.receive")) == 2
    assert h.receive("websocket.disconnect") == {
        "reply_channel": connect["reply_channel"],
        "code": 1013,
        "path": "/chat/room",
        "order": 3,
    }


def test_held_messages_are_delivered_before_disconnect() -> None:
    """Messages held by a full channel are delivered before websocket.disconnect."""
    h = Harness(channel_capacity={"websocket.receive": 2})
    client, _ = h.open()
    _burst(client, 4)
    client.close()
    client.lose()
    assert h.receive_all("websocket.disconnect") == []  # waits for the held ones
    got = h.receive_all("websocket.receive")
    h.reactor.run_pending()
    got += h.receive_all("websocket.receive")
    h.reactor.run_pending()
    assert [m["order"] for m in got] == [1, 2, 3, 4]
    disconnect = h.receive("websocket.disconnect")
    assert disconnect is not None and disconnect["order"] == 5
    assert h.factory.connections == set()


def test_message_too_large_for_the_layer_closes_with_1009() -> None:
    """A message over the layer's max_message_size closes the socket with 1009, undelivered."""
    h = Harness()
    h.layer.max_message_size = 1000
    client, _ = h.open()
    client.text("x" * 2000)
    frames = client.frames()
    assert [(op, close_code(p)) for op, p in frames] == [(CLOSE, 1009)]
    assert h.receive_all("websocket.receive") == []


# -- hand-over ------------------------------------------------------------------------------


def test_takeover_detaches_the_http_channel() -> None:
    """On upgrade the WebSocket protocol takes over the transport as its streaming producer."""
    h = Harness()
    client = h.connect()
    protocol = client.protocol
    assert isinstance(client.transport, StringTransport)
    # The HTTP channel unregistered; the WebSocket registered itself to
    # hear when the client stops reading.
    assert client.transport.producer is protocol
    assert client.transport.streaming
    assert protocol.transport is client.transport
    assert protocol in h.factory.connections


def test_bytes_in_the_same_read_as_the_upgrade_wait_for_the_accept() -> None:
    """A frame sent along with the upgrade is delivered only after the accept."""
    h = Harness()
    client = h.connect(handshake_request() + frame(TEXT, b"early"))
    assert h.receive_all("websocket.receive") == []
    connect = h.receive("websocket.connect")
    assert connect is not None
    h.reply(connect["reply_channel"], {"accept": True})
    assert [m["text"] for m in h.receive_all("websocket.receive")] == ["early"]
    assert client.status() == 101


def test_upgrade_pipelined_behind_a_request_keeps_the_bytes_after_it() -> None:
    """An upgrade pipelined behind a request waits its turn and keeps the frames after it."""
    h = Harness()
    plain = b"GET /plain HTTP/1.1\r\nHost: example.com\r\n\r\n"
    client = h.connect(plain + handshake_request() + frame(TEXT, b"early"))
    request = h.receive("http.request")
    assert request is not None and h.receive("websocket.connect") is None
    h.reply(request["reply_channel"], {"status": 204, "more_content": False})
    connect = h.receive("websocket.connect")
    assert connect is not None
    h.reply(connect["reply_channel"], {"accept": True})
    assert [m["text"] for m in h.receive_all("websocket.receive")] == ["early"]
    response, upgrade = client.transport.value().split(b"\r\n\r\n", 2)[:2]
    assert response.startswith(b"HTTP/1.1 204") and upgrade.startswith(b"HTTP/1.1 101")


def test_early_bytes_are_never_parsed_as_a_second_handshake() -> None:
    """Bytes before the accept are held as frames, never read as a second handshake."""
    h = Harness()
    client = h.connect()
    client.send(handshake_request(path=b"/other"))
    assert len(h.receive_all("websocket.connect")) == 1
    assert client.transport.value() == b""


# -- shutdown --------------------------------------------------------------------------------


def test_close_all() -> None:
    """
    close_all closes open sockets with 1001 and answers handshakes 503.
    Its Deferred fires once every connection is gone.
    """
    h = Harness()
    open_client, open_connect = h.open()
    pending = h.connect()
    d = h.factory.close_all()
    assert [(op, close_code(p)) for op, p in open_client.frames()] == [(CLOSE, 1001)]
    assert pending.status() == 503
    late = h.connect()
    assert late.status() == 503
    assert not d.called
    late.lose()
    pending.lose()
    assert not d.called
    open_client.close(1001)
    open_client.lose()
    assert d.called
    disconnects = {m["reply_channel"]: m["code"] for m in h.receive_all("websocket.disconnect")}
    assert disconnects[open_connect["reply_channel"]] == 1001


def test_close_all_with_nothing_open_fires_at_once() -> None:
    """close_all with no connection returns an already-fired Deferred."""
    h = Harness()
    assert h.factory.close_all().called


def test_factory_options() -> None:
    """
    The autobahn factory takes the config's limits and is strict.
    No status page, compression, forwarded-for trust or timers; only version 13.
    """
    h = Harness(max_ws_frame_size=1234, max_ws_message_size=5678, ping_timeout=7)
    f = h.factory
    assert f.webStatus is False
    assert f.maxFramePayloadSize == 1234 and f.maxMessagePayloadSize == 5678
    assert f.utf8validateIncoming and f.requireMaskedClientFrames
    assert f.perMessageCompressionAccept([object()]) is None
    assert f.trustXForwardedFor == 0
    # Every timeout is the sweep's (autobahn's timers run on txaio's global reactor).
    assert f.autoPingTimeout == 0 and f.autoPingInterval == 0
    assert f.openHandshakeTimeout == 0 and f.closeHandshakeTimeout == 0
    assert f.server == "chanserv"
    assert f.versions == [13]


def test_autobahn_schedules_no_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Autobahn schedules no timer: pings, lifetime and close drops are the sweep's."""
    import txaio

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("autobahn scheduled a timer of its own")

    class NoTimer:
        call_later = staticmethod(refuse)

    monkeypatch.setattr(txaio, "make_batched_timer", lambda *a, **k: NoTimer())
    monkeypatch.setattr(txaio, "call_later", refuse)
    h = Harness(ping_interval=5, ping_timeout=5, websocket_timeout=30)
    client, _ = h.open()
    h.tick(6)  # a ping
    client.send(frame(PONG, b""))
    h.tick(31)  # the lifetime's close, whose answer never comes
    h.tick(2)
    assert client.transport.disconnecting


def test_unanswered_close_is_dropped_by_the_sweep() -> None:
    """A close the client never answers is dropped after CLOSE_HANDSHAKE_TIMEOUT."""
    h = Harness(ping_interval=0)
    client, _ = h.open()
    h.factory.close_all(1001)
    assert [(op, close_code(p)) for op, p in client.frames()] == [(CLOSE, 1001)]
    h.tick(CLOSE_HANDSHAKE_TIMEOUT - 0.1)
    assert not client.transport.disconnecting
    h.tick(0.1)  # unanswered for CLOSE_HANDSHAKE_TIMEOUT
    assert client.transport.disconnecting
    client.lose()
    disconnect = h.receive("websocket.disconnect")
    assert disconnect is not None and disconnect["code"] == 1001


def test_idle_connection_memory() -> None:
    """An idle open socket costs under 6000 bytes of Python memory."""
    import gc
    import tracemalloc

    h = Harness()
    for _ in range(20):  # warm caches
        h.open()
    h.receive_all("websocket.connect")
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    clients = [h.open()[0] for _ in range(200)]
    h.receive_all("websocket.connect")
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    per_connection = grown / len(clients)
    # Python-level bytes per idle open socket, StringTransport included; the
    # DESIGN budget is 10 KB of RSS in total.
    assert per_connection < 6000, per_connection


# -- a layer with real round trips ---------------------------------------------------


class SlowLayer:
    """The in-memory layer, with each send's result held until released."""

    sends_at_once = False  # its sends complete when released, not at once

    def __init__(self, layer: Any) -> None:
        self._layer = layer
        self.held: list[tuple[Deferred[None], Deferred[None]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._layer, name)

    def send_twisted(self, channel: str, message: dict[str, Any]) -> Deferred[None]:
        done = self._layer.send_twisted(channel, message)
        held: Deferred[None] = Deferred()
        self.held.append((done, held))
        return held

    def release(self, count: int = 1) -> None:
        for _ in range(count):
            done, held = self.held.pop(0)
            done.chainDeferred(held)


def test_sends_in_flight_keep_order_and_bound_the_backlog() -> None:
    """Receives wait in order behind a send in flight; past MAX_BACKLOG reading pauses."""
    h = Harness()
    slow = SlowLayer(h.layer)
    h.factory.layer = slow
    client = h.connect()
    slow.release()  # websocket.connect
    connect = h.receive("websocket.connect")
    assert connect is not None
    h.reply(connect["reply_channel"], {"accept": True})
    _burst(client, MAX_BACKLOG + 10)
    assert len(slow.held) == 1  # one send in flight, the rest held in order
    assert client.transport.producerState == "paused"
    while slow.held:
        slow.release()
    assert client.transport.producerState == "producing"
    got = h.receive_all("websocket.receive")
    assert [m["text"] for m in got] == [str(i) for i in range(MAX_BACKLOG + 10)]
    assert [m["order"] for m in got] == list(range(1, MAX_BACKLOG + 11))


def test_client_gone_while_connect_is_in_flight() -> None:
    """A client gone while websocket.connect is in flight has its disconnect sent after it."""
    h = Harness()
    slow = SlowLayer(h.layer)
    h.factory.layer = slow
    client = h.connect()
    client.lose()
    assert h.factory.connections  # kept until its messages are out
    slow.release()  # websocket.connect reaches the layer
    slow.release()  # and websocket.disconnect after it
    assert [name for name, _ in h.consumer_messages()] == [
        "websocket.connect",
        "websocket.disconnect",
    ]
    assert h.factory.connections == set()


def test_handshake_timeout_covers_the_connect_send() -> None:
    """A websocket.connect send not done by websocket_handshake_timeout drops the connection."""
    h = Harness(websocket_handshake_timeout=3, websocket_connect_timeout=60)
    slow = SlowLayer(h.layer)
    h.factory.layer = slow
    client = h.connect()
    h.tick(2.5)
    assert not client.transport.disconnecting
    h.tick(1)
    assert client.transport.disconnected  # websocket.connect never made it: dropped
    assert client.transport.value() == b""


def test_abort_all_cuts_and_still_disconnects() -> None:
    """abort_all cuts every socket at once and still sends websocket.disconnect."""
    h = Harness(channel_capacity={"websocket.receive": 1})
    client, _ = h.open()
    _burst(client, 3)
    h.factory.abort_all()
    assert client.transport.disconnected
    client.lose()
    assert len(h.receive_all("websocket.receive")) == 1
    disconnect = h.receive("websocket.disconnect")
    assert disconnect is not None and disconnect["order"] == 2
    assert h.factory.connections == set()


# -- real sockets: the hand-over from a live TCP or TLS transport ---------------------------

PEM = str(Path(twisted.test.__file__).with_name("server.pem"))


def _recv_until(sock: Any, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        assert chunk, "connection closed early: %r" % (data,)
        data += chunk
    return data


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pyOpenSSL, loading the PEM
@pytest.mark.parametrize("secure", [False, True])
def test_over_real_sockets(secure: bool) -> None:
    """The hand-over works on live TCP and TLS: early frame, 100 KB frame, close 4000."""
    reactor = reactor_thread()
    layer = InMemoryChannelLayer()

    def start() -> Deferred[Any]:
        layer.attach_reactor(reactor)
        registry = ReplyRegistry(layer)
        registry.startService()
        config = ServerConfig()
        ws = WebSocketFactory(reactor, layer, registry, config, None)
        site = HTTPFactory(reactor, layer, registry, config, websocket_factory=ws)
        description = (
            "ssl:0:interface=127.0.0.1:privateKey=%s:certKey=%s" % (PEM, PEM)
            if secure
            else "tcp:0:interface=127.0.0.1"
        )
        return serverFromString(reactor, description).listen(site)

    port = in_reactor(start)
    try:
        sock = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=10)
        if secure:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            sock = context.wrap_socket(sock)
        with sock:
            # A frame sent along with the upgrade must wait for the accept.
            sock.sendall(handshake_request() + frame(TEXT, b"early"))
            _, connect = layer.receive(["websocket.connect"], block=True)
            assert connect is not None
            assert connect["scheme"] == ("wss" if secure else "ws")
            layer.send(connect["reply_channel"], {"accept": True})
            head, _, rest = _recv_until(sock, b"\r\n\r\n").partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101 ")
            _, received = layer.receive(["websocket.receive"], block=True)
            assert received is not None and received["text"] == "early"
            sock.sendall(frame(BINARY, b"\x00" * 100_000))
            _, received = layer.receive(["websocket.receive"], block=True)
            assert received is not None and received["bytes"] == b"\x00" * 100_000
            layer.send(connect["reply_channel"], {"text": "bye", "close": 4000})
            data = rest
            while len(parse_frames(data)) < 2:
                data += sock.recv(65536)
            frames = parse_frames(data)
            assert frames[0] == (TEXT, b"bye") and close_code(frames[1][1]) == 4000
            sock.sendall(frame(CLOSE, struct.pack("!H", 4000)))
            try:  # the server drops the TCP connection (autobahn aborts it)
                assert sock.recv(65536) == b""
            except ConnectionResetError:
                pass
            _, disconnect = layer.receive(["websocket.disconnect"], block=True)
            assert disconnect is not None and disconnect["code"] == 4000
            assert disconnect["order"] == 3
    finally:
        in_reactor(port.stopListening)
        in_reactor(layer.detach_reactor)


def test_layer_outage_on_connect_is_503(monkeypatch: pytest.MonkeyPatch) -> None:
    """A layer failing to take websocket.connect answers the handshake 503 and closes."""
    from twisted.internet.defer import fail

    h = Harness()
    monkeypatch.setattr(
        h.layer, "send_twisted", lambda channel, message: fail(ConnectionError("down"))
    )
    client = h.connect()
    assert client.status() == 503
    assert client.transport.disconnecting


@pytest.mark.parametrize("at_once", [True, False], ids=["send", "send_twisted"])
def test_layer_outage_on_receive_closes_1011(
    monkeypatch: pytest.MonkeyPatch, at_once: bool
) -> None:
    """A layer failing to take websocket.receive closes the socket with 1011, on either face."""
    from twisted.internet.defer import fail

    h = Harness()
    client, _ = h.open()
    monkeypatch.setattr(h.layer, "sends_at_once", at_once)

    def down(channel: str, message: object) -> None:
        raise ConnectionError("down")

    monkeypatch.setattr(h.layer, "send", down)
    monkeypatch.setattr(
        h.layer, "send_twisted", lambda channel, message: fail(ConnectionError("down"))
    )
    client.text("lost to the outage")
    frames = client.frames()
    assert frames[-1][0] == CLOSE and close_code(frames[-1][1]) == 1011
