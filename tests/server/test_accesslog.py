"""
The access log: NCSA-style lines in a file, twisted.logger events in the
process log (text and JSON), WebSocket events, redaction, escaping.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from twisted.internet import task
from twisted.logger import LogLevel, capturedLogs, formatEvent

from chanserv.log import json_line, set_verbosity
from chanserv.server.accesslog import (
    ACCESS_NAMESPACE,
    AccessLogEvents,
    AccessLogWriter,
    redact_query,
)

START = 1763733336.0  # 21/Nov/2025:13:55:36 UTC


@pytest.fixture
def log() -> tuple[AccessLogWriter, io.StringIO]:
    clock = task.Clock()
    clock.advance(START)
    stream = io.StringIO()
    return AccessLogWriter(stream, clock), stream


def test_http_line(log: tuple[AccessLogWriter, io.StringIO]) -> None:
    """An HTTP entry is NCSA-style: host or '-', UTC time, request line, status, size or '-'."""
    writer, stream = log
    writer.http(["10.0.0.7", 5000], b"POST", b"/form/?a=1", b"HTTP/1.1", 302, 0)
    writer.http(None, b"GET", b"/x", b"HTTP/1.0", 200, None)
    assert stream.getvalue() == (
        '10.0.0.7 - - [21/Nov/2025:13:55:36 +0000] "POST /form/?a=1 HTTP/1.1" 302 0\n'
        '- - - [21/Nov/2025:13:55:36 +0000] "GET /x HTTP/1.0" 200 -\n'
    )


@pytest.mark.parametrize(
    "action,word",
    [
        ("connecting", "WSCONNECTING"),
        ("connected", "WSCONNECT"),
        ("rejected", "WSREJECT"),
        ("disconnected", "WSDISCONNECT"),
    ],
)
def test_websocket_lines(log: tuple[AccessLogWriter, io.StringIO], action: str, word: str) -> None:
    """Each WebSocket event is logged as its WS* verb and path, with '-' for status and size."""
    writer, stream = log
    writer.websocket(action, {"path": "/ws/chat/", "client": "127.0.0.1:40000"})
    assert (
        stream.getvalue()
        == '127.0.0.1 - - [21/Nov/2025:13:55:36 +0000] "%s /ws/chat/" - -\n' % word
    )


def test_websocket_line_with_query_and_list_client(
    log: tuple[AccessLogWriter, io.StringIO],
) -> None:
    """A WebSocket entry takes the host from a list client and redacts session_key."""
    writer, stream = log
    writer.websocket(
        "connected",
        {"path": "/ws/", "client": ["::1", 1], "query_string": b"session_key=abc&room=2"},
    )
    assert '"WSCONNECT /ws/?session_key=[redacted]&room=2"' in stream.getvalue()
    assert stream.getvalue().startswith("::1 - - ")
    assert "abc" not in stream.getvalue()


@pytest.mark.parametrize(
    "query,expected",
    [
        (b"", b""),
        (b"a=1", b"a=1"),
        (b"session_key=s3cr3t", b"session_key=[redacted]"),
        (b"a=1&session_key=s3cr3t&b=2", b"a=1&session_key=[redacted]&b=2"),
        (b"session%5Fkey=s3cr3t", b"session%5Fkey=[redacted]"),
        (b"session%5fkey=s3cr3t", b"session%5fkey=[redacted]"),
        (b"session_key=a&session_key=b", b"session_key=[redacted]&session_key=[redacted]"),
        (b"session_key", b"session_key=[redacted]"),
        (b"my_session_key=x", b"my_session_key=x"),
    ],
)
def test_redact_query(query: bytes, expected: bytes) -> None:
    """redact_query blanks every session_key value, even percent-encoded, and no other key."""
    assert redact_query(query) == expected


def test_hostile_bytes_are_escaped(log: tuple[AccessLogWriter, io.StringIO]) -> None:
    """Quotes, backslashes, control and non-ASCII bytes are escaped: one entry, one line."""
    writer, stream = log
    writer.http(["1.2.3.4", 1], b"GET", b'/a"b\\c\xc3\xa4', b"HTTP/1.1", 200, 1)
    writer.websocket("connected", {"path": '/x"\n\r\x00ä', "client": None})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert '"GET /a\\"b\\\\c\\xc3\\xa4 HTTP/1.1"' in lines[0]
    assert '"WSCONNECT /x\\"\\n\\r\\x00\\xe4"' in lines[1]


def test_open_file_appends_and_closes(tmp_path: Path) -> None:
    """AccessLogWriter.open appends to an existing log file instead of truncating it."""
    path = tmp_path / "access.log"
    path.write_text("old\n")
    clock = task.Clock()
    writer = AccessLogWriter.open(str(path), clock)
    writer.http(None, b"GET", b"/", b"HTTP/1.1", 200, 2)
    writer.close()
    lines = path.read_text().splitlines()
    assert lines[0] == "old"
    assert lines[1].endswith('"GET / HTTP/1.1" 200 2')


def test_dash_is_the_process_log(capsys: pytest.CaptureFixture[str]) -> None:
    """The path "-" makes access lines twisted.logger events, never raw stdout writes."""
    writer = AccessLogWriter.open("-", task.Clock())
    assert isinstance(writer, AccessLogEvents)
    with capturedLogs() as events:
        writer.websocket("connecting", {"path": "/", "client": None})
        writer.close()
    assert [formatEvent(e) for e in events] == ['- "WSCONNECTING /" - -']
    assert capsys.readouterr().out == ""


def test_events_are_one_line_without_a_second_timestamp() -> None:
    """An access event reads CLIENT "REQUEST" STATUS SIZE, info level, namespace chanserv.access."""
    writer = AccessLogEvents()
    with capturedLogs() as events:
        writer.http(["10.0.0.7", 5000], b"GET", b"/a?session_key=x", b"HTTP/1.1", 200, 11)
        writer.http(None, b"-", b"-", b"-", 400, None)
        writer.websocket("connected", {"path": "/chat/", "client": "10.0.0.8:4000"})
        writer.websocket("disconnected", {"path": "/chat/", "client": "10.0.0.8:4000"})
    assert [formatEvent(e) for e in events] == [
        '10.0.0.7 "GET /a?session_key=[redacted] HTTP/1.1" 200 11',
        '- "- - -" 400 -',
        '10.0.0.8 "WSCONNECT /chat/" - -',
        '10.0.0.8 "WSDISCONNECT /chat/" - -',
    ]
    assert {(e["log_namespace"], e["log_level"]) for e in events} == {
        (ACCESS_NAMESPACE, LogLevel.info)
    }


def test_events_as_json_carry_the_fields() -> None:
    """In JSON mode an access line is one object with client, request, status and size."""
    with capturedLogs() as events:
        AccessLogEvents().http(["::1", 1], b"POST", b"/f", b"HTTP/2", 302, 0)
    record = json.loads(json_line(events[0]))
    assert record["namespace"] == "chanserv.access" and record["level"] == "info"
    assert record["message"] == '::1 "POST /f HTTP/2" 302 0'
    assert (record["client"], record["request"], record["status"], record["size"]) == (
        "::1",
        "POST /f HTTP/2",
        302,
        0,
    )


def test_events_follow_the_verbosity() -> None:
    """At verbosity 0 access events (info) are dropped by chanserv's filter."""
    set_verbosity(0)
    try:
        with capturedLogs() as events:
            AccessLogEvents().http(None, b"GET", b"/", b"HTTP/1.1", 200, 0)
    finally:
        set_verbosity(1)
    assert events == []


def test_write_errors_do_not_propagate() -> None:
    """A failing write to the log stream is swallowed, never raised to the caller."""
    stream = io.StringIO()
    stream.close()
    writer = AccessLogWriter(stream, task.Clock())
    writer.http(None, b"GET", b"/", b"HTTP/1.1", 200, 0)  # no exception
