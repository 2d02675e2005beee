"""
Every request bounded in time: the head and body deadline
(``request_timeout`` with ``request_min_rate``), over ``StringTransport`` on
a ``task.Clock``, with the single periodic sweep of the helpers' server.

The clock starts at ``START``; the sweep runs every whole second after it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from twisted.logger import LogLevel, capturedLogs
from twisted.python import usage

from chanserv.server.body import BodyStreamer
from chanserv.server.config import ServerConfig
from tests.server.http_helpers import START, Connection, Server, simple_request
from tests.server.test_options import parse

TRICKLE_HEAD = simple_request(b"/up", b"Content-Length: 1000000\r\n", b"POST")


def elapsed(server: Server) -> float:
    return server.clock.seconds() - START


def trickle(server: Server, conn: Connection, data: bytes, limit: int = 1000) -> float:
    """
    Send ``data`` one byte per second of the clock until the server starts
    closing the connection; return the time (since ``START``) it did.
    """
    for i in range(limit):
        if conn.closing:
            return elapsed(server)
        conn.send(data[i % len(data) : i % len(data) + 1])
        server.advance(1)
    pytest.fail("the connection was never closed")


class LoudEvents:
    """The info-level (or louder) events chanserv.server.http logged."""

    def __init__(self, events: Sequence[dict[str, Any]]) -> None:
        self._events = events

    def __call__(self) -> list[dict[str, Any]]:
        return [
            event
            for event in self._events
            if event.get("log_namespace") == "chanserv.server.http"
            and event.get("log_level") in (LogLevel.info, LogLevel.warn, LogLevel.error)
        ]


@pytest.fixture
def infos() -> Iterator[LoudEvents]:
    with capturedLogs() as events:
        yield LoudEvents(events)


# -- a trickled body ---------------------------------------------------------------------


def test_trickled_body_gets_408_at_the_deadline(infos: LoudEvents) -> None:
    """A body trickled past request_timeout gets one logged 408, then the connection is cut."""
    # body_timeout never fires: a byte comes every second.
    server = Server(request_timeout=10, request_min_rate=0)
    conn = server.connect()
    conn.send(TRICKLE_HEAD)
    closed_at = trickle(server, conn, b"x")
    assert closed_at == 10
    assert conn.written().startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"connection: close\r\n" in conn.written()
    assert server.receive() is None
    assert server.factory.deadline_closes == {"request": 1}
    # Once, at info level, not per byte.
    assert len(infos()) == 1
    assert "408" in infos()[0]["log_format"]
    # Nothing more is read, and the connection is gone for good.
    conn.send(b"x" * 100 + simple_request())
    assert server.receive() is None
    server.advance(20)  # a client that does not go is cut after the close grace
    assert conn.transport.disconnected
    assert server.factory.deadline_closes == {"request": 1}


def test_min_rate_allowance_barely_delays_a_trickle() -> None:
    """request_min_rate extends the deadline only by what was received: 10 bytes, 10 ms."""
    # With the default rate (1 KiB/s), ten bytes buy ten milliseconds.
    server = Server(request_timeout=10)
    conn = server.connect()
    conn.send(TRICKLE_HEAD)
    closed_at = trickle(server, conn, b"x")
    assert closed_at == 11  # 10.01 s, seen by the next sweep
    assert conn.status() == 408


def test_trickled_chunked_body_gets_408() -> None:
    """A trickled chunked body gets 408 at request_timeout, as a Content-Length one does."""
    server = Server(request_timeout=10, request_min_rate=0)
    conn = server.connect()
    conn.send(simple_request(b"/up", b"Transfer-Encoding: chunked\r\n", b"POST"))
    closed_at = trickle(server, conn, b"1\r\nx\r\n")
    assert closed_at == 10
    assert conn.status() == 408


def test_trickled_streamed_body_is_closed_on_the_body_channel() -> None:
    """A streamed body past its deadline gets 408, a closed body chunk and http.disconnect."""
    # 100 KiB at once (dispatched, streaming), then one byte per second: the
    # allowance of 100 s for those bytes runs out at 110 s.
    server = Server(request_timeout=10)
    conn = server.connect()
    conn.send(TRICKLE_HEAD + b"a" * 100 * 1024)
    message = server.request()
    assert message["body_channel"] is not None
    closed_at = trickle(server, conn, b"x")
    assert closed_at == 111
    assert conn.written().startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    chunks = []
    while (chunk := server.receive(message["body_channel"])) is not None:
        chunks.append(chunk)
    assert chunks[-1] == {"closed": True}
    assert server.request("http.disconnect")["reply_channel"] == message["reply_channel"]
    assert server.factory.deadline_closes == {"request": 1}
    # A reply arriving late is dropped.
    before = conn.written()
    server.reply(message, status=200, content=b"too late")
    assert conn.written() == before


def test_trickled_streamed_body_after_the_response_started_is_cut() -> None:
    """A body past its deadline after the response started is cut, with no 408 sent."""
    server = Server(request_timeout=10, request_min_rate=0)
    conn = server.connect()
    conn.send(TRICKLE_HEAD + b"a" * 100 * 1024)
    message = server.request()
    server.reply(message, status=200, content=b"reading...", more_content=True)
    trickle(server, conn, b"x")
    assert conn.status() == 200
    assert b"408" not in conn.written()
    assert server.factory.deadline_closes == {"request": 1}


def test_time_the_server_does_not_read_is_not_held_against_the_client() -> None:
    """Time the server stops reading for a full body channel is not held against the client."""
    # The body channel takes one chunk; the application reads nothing for
    # 30 s, so the server stops reading the client (who is not at fault).
    server = Server(
        request_timeout=10,
        request_min_rate=0,
        body_inline_size=10,
        body_chunk_size=10,
        channel_capacity={"http.request.body*": 1},
    )
    conn = server.connect()
    conn.send(simple_request(b"/up", b"Content-Length: 100\r\n", b"POST") + b"a" * 35)
    message = server.request()
    assert conn.transport.producerState == "paused"
    server.advance(30)
    assert not conn.closing
    # The application catches up: reading resumes, and the client has the
    # rest of its 10 s.
    for _ in range(2):
        assert server.request(message["body_channel"])["more_content"]
        server.run()
    assert conn.transport.producerState == "producing"
    server.advance(5)
    assert not conn.closing
    server.advance(6)
    assert conn.status() == 408
    assert server.factory.deadline_closes == {"request": 1}


def test_paused_seconds_adds_up_the_pauses() -> None:
    """BodyStreamer.paused_seconds sums the time reading was paused, stopping at stop()."""
    from twisted.internet.task import Clock

    class Producer:
        def pauseProducing(self) -> None:
            pass

        def resumeProducing(self) -> None:
            pass

    clock = Clock()
    streamer = BodyStreamer(None, "http.request.body?x", 10, Producer(), started=False, clock=clock)
    assert streamer.paused_seconds(clock.seconds()) == 0
    clock.advance(3)
    streamer.feed(b"x" * 20)  # two chunks buffered, nothing sent yet: paused
    assert streamer.paused
    clock.advance(4)
    assert streamer.paused_seconds(clock.seconds()) == 4
    streamer.stop()
    assert not streamer.paused
    clock.advance(5)
    assert streamer.paused_seconds(clock.seconds()) == 4


# -- a slow head ---------------------------------------------------------------------------


def test_slow_head_gets_408_at_the_request_deadline(infos: LoudEvents) -> None:
    """A head trickled past request_timeout gets one logged 408 and is counted as head."""
    server = Server(request_timeout=5, header_timeout=15)
    conn = server.connect()
    closed_at = trickle(server, conn, simple_request(b"/", b"X-Slow: " + b"a" * 40 + b"\r\n"))
    assert closed_at == 5
    assert conn.written().startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert server.receive() is None
    assert server.factory.deadline_closes == {"head": 1}
    assert len(infos()) == 1


def test_slow_head_gets_408_at_the_header_deadline() -> None:
    """A head trickled past header_timeout gets 408 though request_timeout is later."""
    server = Server(request_timeout=60, header_timeout=7)
    conn = server.connect()
    closed_at = trickle(server, conn, simple_request(b"/", b"X-Slow: " + b"a" * 40 + b"\r\n"))
    assert closed_at == 7
    assert conn.status() == 408


def test_stray_crlf_before_the_request_line_does_not_stop_the_head_clock() -> None:
    """A stray CRLF before the request line does not restart the header_timeout clock."""
    server = Server(header_timeout=5)
    conn = server.connect()
    conn.send(b"\r\nPOST /up HTTP/1.1\r\n")
    closed_at = trickle(server, conn, b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
    assert closed_at == 5
    assert conn.status() == 408


def test_head_then_slow_body_counts_from_the_first_byte_of_the_head() -> None:
    """The request deadline counts from the head's first byte, not from the body's."""
    server = Server(request_timeout=10, request_min_rate=0)
    conn = server.connect()
    for byte in range(len(TRICKLE_HEAD)):
        if elapsed(server) >= 6:
            break
        conn.send(TRICKLE_HEAD[byte : byte + 1])
        server.advance(1)
    conn.send(TRICKLE_HEAD[byte:])  # the rest of the head at once
    assert not conn.closing
    closed_at = trickle(server, conn, b"x")
    assert closed_at == 10
    assert server.factory.deadline_closes == {"request": 1}


# -- normal requests are unaffected --------------------------------------------------------


def _send_paced(server: Server, conn: Connection, data: bytes, piece: int, interval: float) -> None:
    """Send ``data`` in ``piece``-byte writes ``interval`` seconds apart (no sweep skipped)."""
    for offset in range(0, len(data), piece):
        assert not conn.closing, "closed after %d bytes" % (offset,)
        conn.send(data[offset : offset + piece])
        server.clock.advance(interval)
        server.run()


def test_multi_megabyte_upload_at_a_normal_pace_passes() -> None:
    """A 4 MiB upload at 512 KiB/s outlasts request_timeout yet passes, kept by the min rate."""
    # 4 MiB at 512 KiB/s takes 8 s, longer than request_timeout (3 s): the
    # rate keeps it going.
    server = Server(request_timeout=3, body_timeout=5)
    conn = server.connect()
    data = bytes(i % 251 for i in range(4 * 1024 * 1024))
    conn.send(simple_request(b"/up", b"Content-Length: %d\r\n" % len(data), b"POST"))
    received: list[bytes] = []
    message: dict[str, Any] | None = None
    for offset in range(0, len(data), 16 * 1024):
        assert not conn.closing, "closed after %d bytes" % (offset,)
        conn.send(data[offset : offset + 16 * 1024])
        server.clock.advance(1 / 32)
        server.run()
        if message is None:
            message = server.receive()
            if message is not None:
                received.append(message["body"])
        if message is not None:
            while (chunk := server.receive(message["body_channel"])) is not None:
                received.append(chunk["content"])
    assert message is not None
    assert elapsed(server) == 8
    assert b"".join(received) == data
    server.reply(message, status=200, content=b"stored")
    assert conn.status() == 200
    assert not conn.closing
    assert not server.factory.deadline_closes


def test_strict_total_lets_a_fast_upload_through() -> None:
    """With no min rate a fast upload within request_timeout passes; no deadline after it."""
    server = Server(request_timeout=3, request_min_rate=0)
    conn = server.connect()
    data = b"z" * (2 * 1024 * 1024)
    conn.send(simple_request(b"/up", b"Content-Length: %d\r\n" % len(data), b"POST"))
    _send_paced(server, conn, data, 64 * 1024, 1 / 16)  # 2 s
    message = server.request()
    while (chunk := server.receive(message["body_channel"])) is not None:
        if not chunk["more_content"]:
            break
    else:
        pytest.fail("the body never completed")
    server.advance(10)  # the body is complete: no deadline applies any more
    server.reply(message, status=200)
    assert conn.status() == 200
    assert not server.factory.deadline_closes


def test_small_requests_and_a_slow_application_are_unaffected() -> None:
    """A slow application is not subject to request_timeout once the request is read."""
    server = Server(request_timeout=2, http_timeout=100)
    conn = server.connect()
    conn.send(simple_request(b"/a", b"Content-Length: 3\r\n", b"POST") + b"abc")
    message = server.request()
    server.advance(30)  # the application takes its time: not a request deadline
    server.reply(message, status=200, content=b"ok")
    assert conn.status() == 200
    assert not conn.closing
    assert not server.factory.deadline_closes


# -- keep-alive: a deadline per request ---------------------------------------------------------


def test_deadline_restarts_for_each_keep_alive_request() -> None:
    """Each keep-alive request has its own request_timeout, counted from its own start."""
    server = Server(request_timeout=10, request_min_rate=0, idle_timeout=100)
    conn = server.connect()
    conn.send(simple_request(b"/a", b"Content-Length: 3\r\n", b"POST") + b"abc")
    server.reply(server.request(), status=200, content=b"one")
    assert conn.status() == 200
    server.advance(8)
    conn.transport.clear()
    conn.send(TRICKLE_HEAD)
    started = elapsed(server)
    closed_at = trickle(server, conn, b"x")
    assert closed_at - started == 10
    assert conn.status() == 408


def test_deadline_of_a_pipelined_request_starts_when_it_is_read() -> None:
    """A pipelined request's deadline starts when the server turns to it, not on arrival."""
    # The second request waits (buffered by Twisted) while the application
    # answers the first; its clock starts when the server turns to it.
    server = Server(request_timeout=10, request_min_rate=0, http_timeout=100)
    conn = server.connect()
    first = simple_request(b"/a", b"Content-Length: 3\r\n", b"POST") + b"abc"
    conn.send(first + TRICKLE_HEAD + b"x")
    message = server.request()
    for _ in range(8):
        conn.send(b"x")
        server.advance(1)
    server.reply(message, status=200, content=b"one")
    assert not conn.closing
    started = elapsed(server)
    closed_at = trickle(server, conn, b"x")
    assert closed_at - started == 10
    assert conn.written().count(b"HTTP/1.1 ") == 2
    assert b"HTTP/1.1 408 Request Timeout\r\n" in conn.written()


def test_each_missed_deadline_is_counted(infos: LoudEvents) -> None:
    """Each missed deadline is counted by kind (request or head) and logged once."""
    server = Server(request_timeout=5, request_min_rate=0)
    connections = [server.connect() for _ in range(3)]
    for conn in connections[:2]:
        conn.send(TRICKLE_HEAD)
    connections[2].send(b"POST /up HT")
    server.advance(6)
    assert all(conn.status() == 408 for conn in connections)
    assert server.factory.deadline_closes == {"request": 2, "head": 1}
    assert len(infos()) == 3


def test_body_idle_timeout_is_counted_separately() -> None:
    """A body idle past body_timeout gets 408 and is counted as body_idle."""
    server = Server(request_timeout=100, body_timeout=5)
    conn = server.connect()
    conn.send(TRICKLE_HEAD + b"abc")
    server.advance(6)
    assert conn.status() == 408
    assert server.factory.deadline_closes == {"body_idle": 1}


# -- configuration --------------------------------------------------------------------------


def test_defaults() -> None:
    """request_timeout defaults to 60 s and request_min_rate to 1 KiB/s, options or not."""
    config = ServerConfig()
    assert (config.request_timeout, config.request_min_rate) == (60, 1024)
    assert parse() == dataclasses.replace(config, access_log="-")  # the options' default


def test_options() -> None:
    """--request-timeout and --request-min-rate (K suffix, 0 allowed) set the config."""
    config = parse("--request-timeout", "3", "--request-min-rate", "2K")
    assert (config.request_timeout, config.request_min_rate) == (3, 2048)
    assert parse("--request-min-rate", "0").request_min_rate == 0


@pytest.mark.parametrize(
    "argv,flag",
    [
        (["--request-timeout", "0"], "--request-timeout"),
        (["--request-timeout", "-1"], "--request-timeout"),
        (["--request-timeout", "soon"], "request-timeout"),
        (["--request-min-rate", "-1"], "--request-min-rate"),
        (["--request-min-rate", "fast"], "request-min-rate"),
    ],
)
def test_bad_options_name_the_flag(argv: list[str], flag: str) -> None:
    """A bad --request-timeout or --request-min-rate is a UsageError naming the flag."""
    with pytest.raises(usage.UsageError, match=flag):
        parse(*argv)


@pytest.mark.parametrize("value", [True, 1.5, -1, "1024"])
def test_bad_min_rate_is_refused(value: Any) -> None:
    """ServerConfig refuses a request_min_rate that is a bool, a float, negative or a string."""
    with pytest.raises(ValueError, match="request_min_rate"):
        ServerConfig(request_min_rate=value)
