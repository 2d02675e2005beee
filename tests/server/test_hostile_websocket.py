"""
Hostile WebSocket input (security.md §1a, §1d, §3d, §3e): each case ends with
an HTTP error or a close frame with the right code, and the application sees
no more than the spec allows -- nothing for a refused handshake; for a
connection failed after the 101, its websocket.connect and one
websocket.disconnect carrying the failure's code, and no websocket.receive.
"""

from __future__ import annotations

import struct
import time
from typing import Any

import pytest
from twisted.internet.address import IPv4Address

from chanserv.server.config import ServerConfig
from chanserv.server.websocket import MAX_EARLY_DATA
from chanserv.server.wshandshake import (
    MAX_SUBPROTOCOLS,
    BadHandshake,
    build_connect,
    handshake_bytes,
)
from tests.server.wshelpers import (
    BINARY,
    CLOSE,
    CONTINUATION,
    KEY,
    PING,
    TEXT,
    Client,
    Harness,
    close_code,
    frame,
    handshake_request,
)

BASE = [
    (b"Host", b"example.com"),
    (b"Upgrade", b"websocket"),
    (b"Connection", b"Upgrade"),
]


def refused(h: Harness, client: Client, status: int) -> None:
    """The handshake got ``status`` and closed; the application saw nothing."""
    assert client.status() == status
    assert client.transport.disconnecting
    client.lose()
    assert h.consumer_messages() == []
    assert h.factory.connections == set()
    assert len(h.registry) == 0
    assert h.access_log.actions == ["rejected"]


def failed(h: Harness, client: Client, code: int) -> None:
    """
    The open socket was failed with a close frame ``code``; the TCP connection
    is dropped at the latest after the close-handshake timeout; the application
    saw connect, no receive, one disconnect with ``code``.
    """
    frames = client.frames()
    assert frames and frames[-1][0] == CLOSE, frames
    assert close_code(frames[-1][1]) == code
    assert [op for op, _ in frames].count(CLOSE) == 1
    h.tick(2)  # the client never answers the close: dropped
    assert client.transport.disconnecting
    client.lose()
    messages = h.consumer_messages()
    assert [name for name, _ in messages] == ["websocket.disconnect"]
    assert messages[0][1]["code"] == code
    assert messages[0][1]["order"] == 1


def opened(h: Harness) -> Client:
    client, _ = h.open()
    return client


# -- §3d handshake -----------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [None, b"", b"c2hvcnQ=", b"dGhlIHNhbXBsZSBub25jZQ", b"dGhlIHNhbXBsZSBub25jZQ==AA", b"!!!!!!!!!!!!!!!!!!!!!!=="],
)  # fmt: skip
def test_missing_or_bad_key_is_400(key: bytes | None) -> None:
    """A missing, empty or malformed Sec-WebSocket-Key is answered 400; the app sees nothing."""
    h = Harness()
    headers = [*BASE, (b"Sec-WebSocket-Version", b"13")]
    if key is not None:
        headers.append((b"Sec-WebSocket-Key", key))
    refused(h, h.connect(handshake_request(headers=headers)), 400)


@pytest.mark.parametrize("version", [b"8", b"14", b"0", b"abc"])
def test_bad_version_is_400_naming_13(version: bytes) -> None:
    """A version other than 13 is answered 400, naming 13 when the value is a number."""
    h = Harness()
    client = h.connect(
        handshake_request(
            headers=[*BASE, (b"Sec-WebSocket-Key", KEY), (b"Sec-WebSocket-Version", version)]
        )
    )
    if version.isdigit():
        assert client.response_headers()[b"sec-websocket-version"] == b"13"
    refused(h, client, 400)


def test_missing_version_is_400() -> None:
    """An upgrade without Sec-WebSocket-Version is answered 400; the app sees nothing."""
    h = Harness()
    client = h.connect(handshake_request(headers=[*BASE, (b"Sec-WebSocket-Key", KEY)]))
    refused(h, client, 400)


class ParsedRequest:
    """What the WebSocket side reads of a request the HTTP side parsed."""

    def __init__(self, pairs: list[tuple[bytes, bytes]]) -> None:
        self.header_pairs = pairs
        self.asgi_path = "/ws"
        self.query_string = b""

    def asgi_headers(self) -> list[list[bytes]]:
        return [[n, v] for n, v in self.header_pairs if b"_" not in n]

    def client_and_scheme(self) -> tuple[list[Any], str]:
        return ["10.0.0.1", 1], "http"

    def getHost(self) -> Any:
        return IPv4Address("TCP", "127.0.0.1", 8000)


LINE_BREAKS = [b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e", b"\x85", b"\x00", b"\r", b"\n"]


@pytest.mark.parametrize("byte", LINE_BREAKS[:6])
def test_line_break_bytes_in_headers_are_400_and_reach_nobody(byte: bytes) -> None:
    """A splitlines() break byte in an upgrade header is answered 400 and reaches no one."""
    # CVE-2026-44546, the probe of security.md §1a: autobahn's splitlines()
    # would cut at these bytes; the HTTP side refuses the request first.
    h = Harness()
    client = h.connect(
        handshake_request(extra=[(b"X-Padding", b"innocent" + byte + b"X-Secret-Auth: admin")])
    )
    assert client.status() == 400
    assert h.factory.connections == set()
    assert h.consumer_messages() == []


@pytest.mark.parametrize("byte", LINE_BREAKS)
def test_line_break_bytes_are_refused_again_before_autobahn(byte: bytes) -> None:
    """build_connect raises BadHandshake for a header with a line-breaking byte or NUL."""
    # The second line of defence, should a header reach the hand-over anyway.
    request = ParsedRequest(
        [(b"host", b"a"), (b"sec-websocket-protocol", b"chat" + byte + b"origin: https://evil")]
    )
    with pytest.raises(BadHandshake):
        build_connect(request, ServerConfig())


def test_autobahn_sees_only_the_handshake_headers() -> None:
    """Autobahn is fed only Host, Upgrade, Connection, key and version, never other headers."""
    request = ParsedRequest(
        [
            (b"host", b"example.com"),
            (b"x-padding", b"innocent\x0bsec-websocket-key: AAAA"),
            (b"upgrade", b"websocket"),
            (b"origin", b"https://evil.example"),
            (b"connection", b"Upgrade"),
            (b"sec-websocket-key", KEY),
            (b"x-forwarded-for", b"1.2.3.4"),
            (b"sec-websocket-version", b"13"),
            (b"sec-websocket-extensions", b"permessage-deflate"),
            (b"cookie", b"sessionid=secret"),
        ]
    )
    assert handshake_bytes(request) == (
        b"GET / HTTP/1.1\r\nhost: example.com\r\nupgrade: websocket\r\n"
        b"connection: Upgrade\r\nsec-websocket-key: " + KEY + b"\r\n"
        b"sec-websocket-version: 13\r\n\r\n"
    )


@pytest.mark.parametrize(
    "value",
    [
        b",".join(b"p%d" % i for i in range(10_000)),
        b",".join(b"p%d" % i for i in range(MAX_SUBPROTOCOLS + 1)),
        b"chat, sup(er)",
        b"chat,,other",
        b"chat, ",
        b"a\xffb",
        b"chat, chat",
    ],
)
def test_bad_subprotocol_lists_are_400_in_bounded_time(value: bytes) -> None:
    """An oversized, malformed or duplicate subprotocol list is answered 400 in under 0.5 s."""
    h = Harness()
    started = time.process_time()
    client = h.connect(
        handshake_request(extra=[(b"Sec-WebSocket-Protocol", value)]), header_limit=2**20
    )
    assert time.process_time() - started < 0.5
    refused(h, client, 400)


def test_max_subprotocols_is_accepted() -> None:
    """Exactly MAX_SUBPROTOCOLS subprotocols are accepted, all passed in websocket.connect."""
    h = Harness()
    value = b",".join(b"p%d" % i for i in range(MAX_SUBPROTOCOLS))
    h.connect(handshake_request(extra=[(b"Sec-WebSocket-Protocol", value)]))
    connect = h.receive("websocket.connect")
    assert connect is not None and len(connect["subprotocols"]) == MAX_SUBPROTOCOLS


@pytest.mark.parametrize(
    "offer",
    [
        b"permessage-deflate",
        b"permessage-deflate; client_max_window_bits=7",
        b"permessage-deflate; server_max_window_bits=16",
        b"x-webkit-deflate-frame",
    ],
)
def test_deflate_is_declined_and_compressed_frames_are_1002(offer: bytes) -> None:
    """Compression offers are declined; a compressed (RSV1) frame fails the socket with 1002."""
    h = Harness()
    client, _ = h.open(handshake_request(extra=[(b"Sec-WebSocket-Extensions", offer)]))
    assert b"sec-websocket-extensions" not in client.response_headers()
    # A deflate bomb: RSV1 set on a compressed frame -- never inflated.
    bomb = b"\xed\xc1\x01\x01\x00\x00\x00\x80\x90\xfe\xa7\xed\x0f\x00" * 4
    client.send(frame(BINARY, bomb, rsv=4))
    failed(h, client, 1002)


def test_early_data_flood_before_the_accept_is_dropped() -> None:
    """
    Over MAX_EARLY_DATA bytes before the accept abort the connection.
    A late accept or connect timeout then writes nothing; one websocket.disconnect follows.
    """
    h = Harness()
    client = h.connect()
    connect = h.receive("websocket.connect")
    assert connect is not None
    client.send(b"x" * (MAX_EARLY_DATA + 1))
    assert client.transport.disconnected  # aborted
    # An accept arriving before the connection is really gone does nothing.
    h.reply(connect["reply_channel"], {"accept": True})
    h.tick(10)  # nor does the connect timeout
    assert client.transport.value() == b""
    client.lose()
    disconnect = h.receive("websocket.disconnect")
    assert disconnect is not None and disconnect["order"] == 1
    assert h.consumer_messages() == []


def test_status_page_redirect_is_never_served() -> None:
    """A GET with a key but no Upgrade goes to http.request; autobahn's status page is off."""
    # CVE-2020-35678: a non-upgrade GET never reaches autobahn (and its
    # status page is off anyway).
    h = Harness()
    assert h.factory.webStatus is False
    client = h.connect(
        handshake_request(
            path=b"/ws/?redirect=http%3A%2F%2Fx%0D%0ASet-Cookie%3A%20pwn%3D1",
            headers=[(b"Host", b"example.com"), (b"Sec-WebSocket-Key", KEY)],
        )
    )
    assert client.transport.value() == b""  # an ordinary request, for the app
    assert h.factory.connections == set()
    assert h.receive("http.request") is not None
    assert h.consumer_messages() == []


# -- §3e frames --------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(frame(TEXT, b"hi", masked=False), id="unmasked"),
        pytest.param(frame(TEXT, b"hi", rsv=1), id="rsv3"),
        pytest.param(frame(TEXT, b"hi", rsv=2), id="rsv2"),
        pytest.param(frame(TEXT, b"hi", rsv=4), id="rsv1"),
        pytest.param(frame(3, b"hi"), id="opcode3"),
        pytest.param(frame(7, b"hi"), id="opcode7"),
        pytest.param(frame(0xB, b"hi"), id="opcode11"),
        pytest.param(frame(0xF, b"hi"), id="opcode15"),
        pytest.param(frame(PING, b"x" * 126), id="control-126"),
        pytest.param(frame(PING, b"x", fin=False) + frame(CONTINUATION, b"y"), id="fragmented-ping"),
        pytest.param(frame(CLOSE, b"\x03", fin=False), id="fragmented-close"),
        pytest.param(frame(CONTINUATION, b"x"), id="continuation-first"),
        pytest.param(frame(TEXT, b"a", fin=False) + frame(TEXT, b"b"), id="text-mid-message"),
        pytest.param(frame(CLOSE, b"\x03"), id="close-1-byte"),
        pytest.param(frame(CLOSE, struct.pack("!H", 999)), id="close-999"),
        pytest.param(frame(CLOSE, struct.pack("!H", 1005)), id="close-1005"),
        pytest.param(frame(CLOSE, struct.pack("!H", 1016)), id="close-1016"),
        pytest.param(frame(CLOSE, struct.pack("!H", 5000)), id="close-5000"),
        pytest.param(b"\x82\xff" + struct.pack("!Q", 2**63) + b"\x00" * 4, id="length-msb"),
        pytest.param(b"\x82\xfe\x00\x05" + b"\x00" * 4 + b"hello", id="length-not-minimal"),
    ],
)  # fmt: skip
def test_protocol_errors_close_with_1002(data: bytes) -> None:
    """A protocol-violating frame fails the socket with close code 1002."""
    h = Harness()
    client = opened(h)
    client.send(data)
    failed(h, client, 1002)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(frame(TEXT, b"\xc3\x28"), id="invalid"),
        pytest.param(frame(TEXT, b"\xed\xa0\x80"), id="surrogate"),
        pytest.param(frame(TEXT, b"ok\xc3", fin=False) + frame(CONTINUATION, b"\x28"), id="split"),
        pytest.param(frame(TEXT, b"\xe2\x82"), id="truncated"),
        pytest.param(frame(CLOSE, struct.pack("!H", 1000) + b"\xff"), id="close-reason"),
    ],
)
def test_invalid_utf8_closes_with_1007(data: bytes) -> None:
    """Invalid UTF-8 in a text message or a close reason fails the socket with 1007."""
    h = Harness()
    client = opened(h)
    client.send(data)
    failed(h, client, 1007)


def test_invalid_utf8_fails_fast_before_the_message_ends() -> None:
    """Invalid UTF-8 in a first fragment fails the socket with 1007 before the message ends."""
    h = Harness()
    client = opened(h)
    client.send(frame(TEXT, b"\xff" + b"a" * 10, fin=False))
    failed(h, client, 1007)


def test_frame_over_the_limit_is_1009_before_buffering() -> None:
    """A frame announcing more than the frame limit fails with 1009, buffering no payload."""
    h = Harness(max_ws_frame_size=1024, max_ws_message_size=4096)
    client = opened(h)
    # Only the header of a 2**40-byte frame, then a stream of its payload.
    client.send(frame(BINARY, b"", length=2**40)[:10] + b"\x00\x00\x00\x00")
    assert client.frames() and close_code(client.frames()[-1][1]) == 1009
    for _ in range(64):
        client.send(b"\x00" * 65536)
    assert len(client.protocol.data) < 65536 * 2  # nothing accumulated
    failed(h, client, 1009)


def test_fragmented_message_over_the_limit_is_1009() -> None:
    """Fragments within the frame limit that sum past the message limit fail with 1009."""
    h = Harness(max_ws_frame_size=1024, max_ws_message_size=4096)
    client = opened(h)
    client.send(
        b"".join(frame(TEXT if i == 0 else CONTINUATION, b"a" * 1000, fin=False) for i in range(4))
    )
    assert client.protocol.state == client.protocol.STATE_OPEN
    client.send(frame(CONTINUATION, b"a" * 1000))
    failed(h, client, 1009)


def test_default_limits_are_one_mebibyte() -> None:
    """By default a frame of one byte over 1 MiB fails the socket with 1009."""
    h = Harness()
    client = opened(h)
    client.send(frame(BINARY, b"\x00" * (1024 * 1024 + 1)))
    failed(h, client, 1009)


def test_pings_are_answered_without_reaching_the_application() -> None:
    """Each ping is answered with a pong, and none reaches websocket.receive."""
    h = Harness()
    client = opened(h)
    client.send(frame(PING, b"p") * 1000)
    assert [op for op, _ in client.frames()].count(10) == 1000
    assert h.receive_all("websocket.receive") == []


def test_data_after_the_clients_close_is_ignored() -> None:
    """A data frame after the client's close is ignored: only websocket.disconnect follows."""
    h = Harness()
    client = opened(h)
    client.send(frame(CLOSE, struct.pack("!H", 1000)) + frame(TEXT, b"after"))
    client.lose()
    messages = h.consumer_messages()
    assert [name for name, _ in messages] == ["websocket.disconnect"]
