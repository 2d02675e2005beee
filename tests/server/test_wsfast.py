"""
Tests of chanserv.server.wsfast, the fast path for small WebSocket frames:
the frame reader and writer on their own, and -- with Hypothesis -- the same
random client byte streams fed to a connection with the fast path and to one
where autobahn reads every frame, which must give identical
``websocket.receive`` messages, disconnects and server bytes (close frames,
their codes, pongs).  Plus ``write_now`` over a real TCP connection.
"""

from __future__ import annotations

import os
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import protocol as tprotocol
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint

from chanserv._compat.twisted import write_now
from chanserv.server.wsfast import MAX_FAST_PAYLOAD, frame, read_frames, unmask
from tests.server.wshelpers import Harness
from tests.support import in_reactor, reactor_thread


def client_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    mask: bytes = b"\x01\x02\x03\x04",
    long_form: int = 0,
) -> bytes:
    """A client frame; ``long_form`` 16 or 64 forces a (non-minimal) length form."""
    n = len(payload)
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    bit = 0x80 if masked else 0
    if long_form == 64 or n > 0xFFFF:
        header = struct.pack("!BBQ", first, bit | 127, n)
    elif long_form == 16 or n >= 126:
        header = struct.pack("!BBH", first, bit | 126, n)
    else:
        header = struct.pack("!BB", first, bit | n)
    if not masked:
        return header + payload
    stream = (mask * (n // 4 + 1))[:n]
    body = bytes(a ^ b for a, b in zip(payload, stream, strict=True))
    return header + mask + body


# -- the reader and writer on their own ---------------------------------------------


def test_unmask_matches_the_rfc_xor_for_every_size_path() -> None:
    """Unmasking XORs with the repeated mask, small (integer) and large (native) alike."""
    mask = b"\xa1\xb2\xc3\xd4"
    for n in (0, 1, 3, 4, 5, 125, 2048, 2049, 70000):
        payload = os.urandom(n)
        expected = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert unmask(mask, payload) == expected


def test_read_frames_takes_complete_small_data_frames_in_order() -> None:
    """Text and binary frames of both length forms are read, in order, and fully consumed."""
    got: list[Any] = []
    data = (
        client_frame(1, "héllo".encode())
        + client_frame(2, b"\x00\xff" * 100)
        + client_frame(1, b"")
        + client_frame(2, b"x" * 300, mask=b"\xff\x00\xff\x00")
    )
    used = read_frames(
        data, MAX_FAST_PAYLOAD, lambda t: got.append(t) or True, lambda b: got.append(b) or True
    )
    assert used == len(data)
    assert got == ["héllo", b"\x00\xff" * 100, "", b"x" * 300]


@pytest.mark.parametrize(
    "stopper",
    [
        client_frame(9, b"ping"),  # control frame
        client_frame(8, b"\x03\xe8"),  # close
        client_frame(1, b"frag", fin=False),  # fragment
        client_frame(0, b"cont"),  # continuation
        client_frame(1, b"x", rsv=4),  # compressed / reserved bit
        client_frame(1, b"x", masked=False),  # unmasked
        client_frame(1, b"x", long_form=16),  # non-minimal length
        client_frame(2, b"x" * 70000),  # 64-bit length form
        client_frame(1, b"\xff\xfe"),  # invalid UTF-8
        client_frame(1, b"a" * 200)[:50],  # incomplete
    ],
    ids=[
        "ping",
        "close",
        "fragment",
        "continuation",
        "rsv",
        "unmasked",
        "non-minimal",
        "long",
        "bad-utf8",
        "incomplete",
    ],
)
def test_read_frames_stops_at_the_first_frame_it_does_not_take(stopper: bytes) -> None:
    """Reading stops at a frame boundary before anything but a small valid data frame."""
    got: list[Any] = []
    first = client_frame(1, b"one")
    data = first + stopper + client_frame(1, b"two")
    used = read_frames(
        data, MAX_FAST_PAYLOAD, lambda t: got.append(t) or True, lambda b: got.append(b) or True
    )
    assert used == len(first)
    assert got == ["one"]


def test_read_frames_respects_the_size_limit_and_a_stop_from_the_callback() -> None:
    """A payload over ``limit`` stops the path; a callback returning False stops after its frame."""
    got: list[str] = []
    big = client_frame(1, b"a" * 11)
    assert read_frames(big, 10, lambda t: got.append(t) or True, lambda b: True) == 0
    data = client_frame(1, b"a") + client_frame(1, b"b")
    used = read_frames(data, 10, lambda t: got.append(t) and False, lambda b: True)
    assert used == len(client_frame(1, b"a"))
    assert got == ["a"]


def test_frame_is_byte_identical_to_autobahns_server_frames() -> None:
    """Server frames built here equal autobahn's for every size the fast path takes."""
    h = Harness()
    client, _ = h.open()
    proto = client.protocol
    for n in (0, 1, 125, 126, 127, 1000, 65535):
        for binary in (False, True):
            payload = (b"\x00\xff" * n)[:n] if binary else (b"a" * n)
            client.transport.clear()
            proto.sendMessage(payload, binary)
            assert frame(payload, binary) == client.transport.value()
    assert frame(b"x" * (MAX_FAST_PAYLOAD + 1), False) is None


# -- the same streams through both paths ---------------------------------------------

_utf8 = st.text(max_size=40).map(lambda s: s.encode("utf-8"))
_payload = st.one_of(
    _utf8,
    st.binary(max_size=40),
    st.binary(min_size=120, max_size=300),
    st.just(b"\xed\xa0\x80"),  # a UTF-8 surrogate, invalid
    st.just(b"\xc3"),  # a truncated code point
)


@st.composite
def frames(draw: Any) -> bytes:
    opcode = draw(st.sampled_from([1, 1, 1, 2, 2, 2, 0, 8, 9, 10, 3, 11]))
    payload = draw(_payload)
    if opcode == 8 and draw(st.booleans()):
        code = draw(st.sampled_from([1000, 1001, 1005, 1006, 999, 3000, 4999, 5000]))
        payload = struct.pack("!H", code) + draw(_utf8)
    if opcode >= 8 and draw(st.booleans()):
        payload = payload[:125]
    return client_frame(
        opcode,
        payload,
        fin=draw(st.sampled_from([True, True, True, False])),
        rsv=draw(st.sampled_from([0, 0, 0, 0, 0, 0, 4, 1])),
        masked=draw(st.sampled_from([True] * 15 + [False])),
        mask=draw(st.binary(min_size=4, max_size=4)),
        long_form=draw(st.sampled_from([0] * 12 + [16, 64])),
    )


@st.composite
def streams(draw: Any) -> list[bytes]:
    """Frames as a byte stream, cut into random chunks (reads)."""
    data = b"".join(draw(st.lists(frames(), max_size=12)))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    chunks, last = [], 0
    for cut in [*cuts, len(data)]:
        chunks.append(data[last:cut])
        last = cut
    return [c for c in chunks if c]


def run_stream(chunks: list[bytes], fast: bool, limit: int) -> tuple[Any, ...]:
    """Feed ``chunks`` to a fresh open connection; what the application and client saw."""
    h = Harness(max_ws_frame_size=limit, max_ws_message_size=limit)
    if not fast:
        h.factory.protocol._fast_limit = -1  # every frame to autobahn
    client, _ = h.open()
    client.transport.clear()
    for chunk in chunks:
        client.send(chunk)
    received = [
        (m.get("text"), m.get("bytes"), m["order"]) for m in h.receive_all("websocket.receive")
    ]
    server_bytes = client.transport.value()
    client.lose()
    disconnects = [m.get("code") for m in h.receive_all("websocket.disconnect")]
    return received, server_bytes, disconnects


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks=streams(), limit=st.sampled_from([1 << 20, 200, 64]))
def test_fast_path_and_autobahn_give_identical_events_and_close_codes(
    chunks: list[bytes], limit: int
) -> None:
    """Any client byte stream gives the same messages, disconnect and server bytes on both paths."""
    assert run_stream(chunks, True, limit) == run_stream(chunks, False, limit)


# -- write_now on a real TCP connection -----------------------------------------------


class _Collect(tprotocol.Protocol):
    def __init__(self, expected: int, done: Deferred[bytes]) -> None:
        self.buffer: list[bytes] = []
        self.size = 0
        self.expected = expected
        self.done = done

    def dataReceived(self, data: bytes) -> None:
        self.buffer.append(data)
        self.size += len(data)
        if self.size >= self.expected:
            self.done.callback(b"".join(self.buffer))


def test_write_now_keeps_order_across_direct_sends_and_twisted_buffering() -> None:
    """Small direct sends and a large buffered write interleave; all bytes arrive in order."""
    reactor = reactor_thread()
    in_reactor(lambda: ensureDeferred(_send_through_write_now(reactor)), timeout=60)


async def _send_through_write_now(reactor: Any) -> None:
    chunks = [b"%06d" % i for i in range(2000)]
    chunks.insert(1000, os.urandom(8 * 1024 * 1024))  # fills the socket: Twisted buffers the rest
    chunks += [b"%06d" % i for i in range(2000, 3000)]
    expected = b"".join(chunks)

    server_side: Deferred[Any] = Deferred()

    class Sender(tprotocol.Protocol):
        def connectionMade(self) -> None:
            server_side.callback(self.transport)

    factory = tprotocol.Factory.forProtocol(Sender)
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
    done: Deferred[bytes] = Deferred()
    try:
        await TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
            tprotocol.Factory.forProtocol(lambda: _Collect(len(expected), done))
        )
        transport = await server_side
        for chunk in chunks:
            write_now(transport, chunk)
        got = await done
        assert got == expected
        transport.loseConnection()
    finally:
        await port.stopListening()
