"""The access log: NCSA-style lines, WebSocket events, redaction, escaping."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from twisted.internet import task

from chanserv.server.accesslog import AccessLogWriter, redact_query

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


def test_dash_is_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    """The path "-" makes the access log write to standard output."""
    writer = AccessLogWriter.open("-", task.Clock())
    writer.websocket("connecting", {"path": "/", "client": None})
    writer.close()
    assert '"WSCONNECTING /" - -' in capsys.readouterr().out


def test_write_errors_do_not_propagate() -> None:
    """A failing write to the log stream is swallowed, never raised to the caller."""
    stream = io.StringIO()
    stream.close()
    writer = AccessLogWriter(stream, task.Clock())
    writer.http(None, b"GET", b"/", b"HTTP/1.1", 200, 0)  # no exception
