"""
Hostile HTTP input (security.md §1a, §1b, §1e, §3a-§3c): each is answered
with the right status, the connection closes, nothing reaches
``http.request`` -- not even a canary request pipelined behind it -- and the
server keeps serving other connections.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chanserv.server.validate import FORBIDDEN_VALUE_BYTES, is_token
from tests.server.http_helpers import Server, simple_request

CANARY = b"GET /canary HTTP/1.1\r\nHost: a\r\n\r\n"
HOST = b"Host: a\r\n"

SMUGGLING_BYTES = [b"\x00", b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e", b"\x85"]


def _refused(raw: bytes, status: int, **config: object) -> Server:
    server = Server(**config)  # type: ignore[arg-type]
    conn = server.connect()
    conn.send(raw + CANARY)
    assert conn.status() == status, conn.written()[:200]
    assert b"connection: close\r\n" in conn.written()
    assert conn.closing
    assert server.receive() is None
    # The connection reads nothing more, the server serves everyone else.
    conn.send(CANARY)
    assert server.receive() is None
    other = server.connect()
    other.send(simple_request(b"/fine"))
    message = server.request()
    assert message["path"] == "/fine"
    server.reply(message, status=200, content=b"ok")
    assert other.status() == 200
    return server


# -- request line -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        b"GET  / HTTP/1.1",
        b"GET / HTTP/9.9",
        b"GET / HTTP/2.0",
        b"GET / FOO\x00\xff",
        b"G\x01T / HTTP/1.1",
        b"get / HTTP/1.1",
        b"Get / HTTP/1.1",
        b"GET /\xc3\xa4\xc3\xb6 HTTP/1.1",
        b"GET /?\xc3\xa4 HTTP/1.1",
        b"GET /a\x00b HTTP/1.1",
        b"GET /a\x7fb HTTP/1.1",
        b"GET /%00 HTTP/1.1",
        b"GET /%ff%fe HTTP/1.1",
        b"GET /a#fragment HTTP/1.1",
        b"GET /a\rb HTTP/1.1",
        b"CONNECT example.com:443 HTTP/1.1",
        b"GET * HTTP/1.1",
        b"GET relative HTTP/1.1",
        b"GET ftp://x/ HTTP/1.1",
        b"GET / HTTP/1.1 extra",
        b"GET /",
        b"/ HTTP/1.1",
    ],
)
def test_bad_request_line(line: bytes) -> None:
    """A malformed or unsupported request line is answered 400 and the connection closed."""
    _refused(line + b"\r\n" + HOST + b"\r\n", 400)


def test_lowercase_method_is_not_get() -> None:
    """Methods are case-sensitive: "get" is refused with 400, not served as GET."""
    _refused(b"get /canary HTTP/1.1\r\n" + HOST + b"\r\n", 400)


def test_request_line_too_long() -> None:
    """A request line over the 16 KiB limit is answered 414 and the connection closed."""
    _refused(b"GET /" + b"a" * (17 * 1024) + b" HTTP/1.1\r\n" + HOST + b"\r\n", 414)


def test_bare_lf_request_is_answered_at_once() -> None:
    """A head ended by bare LFs is answered 400 at once, not left waiting for a CRLF."""
    server = Server()
    conn = server.connect()
    conn.send(b"GET / HTTP/1.1\nHost: a\n\n")
    # No CRLF ever comes: Twisted alone would wait for the idle timeout.
    assert conn.status() == 400
    assert conn.closing
    assert server.receive() is None


def test_bare_lf_inside_the_head() -> None:
    """A bare LF between header lines is refused with 400."""
    _refused(b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", 400)


def test_bare_cr_in_a_value() -> None:
    """A bare CR inside a header value is refused with 400."""
    _refused(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400)


# -- header names and values ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [b"foo bar: baz", b"foo\x00bar: baz", b"foo\xffbar: baz", b"foo\x01bar: baz", b": empty"]
    + [b"a" + bytes([c]) + b"b: v" for c in b'"(),/;<=>?@[\\]{}']
    + [b"Content-Length : 0", b"Host : a", b"NoColonHere", b"X\t: tab"],
)
def test_bad_header_name(header: bytes) -> None:
    """A header name that is empty, not a token or followed by blanks is refused with 400."""
    _refused(b"GET / HTTP/1.1\r\n" + HOST + header + b"\r\n\r\n", 400)


@pytest.mark.parametrize("byte", SMUGGLING_BYTES + [b"\x01", b"\x08", b"\x7f", b"\x1f"])
def test_smuggling_byte_in_a_value(byte: bytes) -> None:
    """A header value holding a byte str.splitlines() splits on is refused with 400."""
    # CVE-2026-44546: these split lines for str.splitlines().
    _refused(
        b"GET / HTTP/1.1\r\n"
        + HOST
        + b"X-Padding: innocent"
        + byte
        + b"X-Secret-Auth: admin-token\r\n\r\n",
        400,
    )


def test_obs_fold_is_refused() -> None:
    """An obs-fold continuation line (leading space or tab) is refused with 400."""
    _refused(b"GET / HTTP/1.1\r\n" + HOST + b"X-Folded: a\r\n b\r\n\r\n", 400)
    _refused(b"GET / HTTP/1.1\r\n" + HOST + b"X-Folded: a\r\n\tb\r\n\r\n", 400)


def test_tab_inside_a_value_is_fine() -> None:
    """A tab inside a header value is kept and the value passed on unchanged."""
    server = Server()
    server.connect().send(b"GET / HTTP/1.1\r\n" + HOST + b"X-Tab: a\tb\r\n\r\n")
    assert [b"x-tab", b"a\tb"] in server.request()["headers"]


def test_utf8_value_is_passed_as_bytes() -> None:
    """A UTF-8 header value reaches http.request as its raw bytes."""
    server = Server()
    server.connect().send(b"GET / HTTP/1.1\r\n" + HOST + "X-Name: Zoë".encode() + b"\r\n\r\n")
    assert [b"x-name", "Zoë".encode()] in server.request()["headers"]


# -- Host ---------------------------------------------------------------------------------------


def test_missing_host_on_http_11() -> None:
    """An HTTP/1.1 request without a Host header is refused with 400."""
    _refused(b"GET / HTTP/1.1\r\n\r\n", 400)


def test_duplicate_host() -> None:
    """Two Host headers are refused with 400, on HTTP/1.1 and HTTP/1.0 alike."""
    _refused(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400)
    _refused(b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400)


# -- header section size ---------------------------------------------------------------------------


def test_one_17k_header_line() -> None:
    """A single header line over 16 KiB is answered 431 and the connection closed."""
    _refused(b"GET / HTTP/1.1\r\n" + HOST + b"X-Big: " + b"a" * (17 * 1024) + b"\r\n\r\n", 431)


def test_header_section_over_16k() -> None:
    """A header section over 16 KiB in total, of small lines, is answered 431."""
    lines = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 1000) for i in range(17))
    _refused(b"GET / HTTP/1.1\r\n" + HOST + lines + b"\r\n", 431)


def test_501_headers() -> None:
    """A request with more than 500 header lines is answered 431."""
    lines = b"".join(b"X: %d\r\n" % i for i in range(501))
    _refused(b"GET / HTTP/1.1\r\n" + HOST + lines + b"\r\n", 431)


def test_499_duplicates_are_served() -> None:
    """A request with exactly 500 headers, 499 of them repeats, is delivered whole."""
    server = Server()
    lines = b"X-Dupe: " + b"d" * 20 + b"\r\n"
    server.connect().send(b"GET / HTTP/1.1\r\n" + HOST + lines * 499 + b"\r\n")
    headers = server.request()["headers"]
    assert len(headers) == 500
    assert headers.count([b"x-dupe", b"d" * 20]) == 499


# -- body framing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "head_and_body",
    [
        b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n",
        b"Content-Length: 56\r\nContent-Length: 0\r\n\r\n",
        b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        b"Content-Length: +5\r\n\r\nhello",
        b"Content-Length: -5\r\n\r\n",
        b"Content-Length: 0x5\r\n\r\nhello",
        b"Content-Length: 5 5\r\n\r\nhello",
        b"Content-Length: five\r\n\r\n",
        b"Transfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n",
        b"Transfer-Encoding: chunked\r\n\r\n+3\r\nabc\r\n0\r\n\r\n",
        b"Transfer-Encoding: chunked\r\n\r\n3;\nx\r\nabc\r\n0\r\n\r\n",
        b"Transfer-Encoding: chunked\r\n\r\n3;\x00\r\nabc\r\n0\r\n\r\n",
        b"Transfer-Encoding: chunked\r\n\r\n" + b"0" * 1100 + b"3\r\nabc\r\n0\r\n\r\n",
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\n",
        b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        b"Transfer-Encoding: identity\r\nContent-Length: 0\r\n\r\n",
        b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ],
)
def test_bad_body_framing(head_and_body: bytes) -> None:
    """Conflicting, repeated or malformed body framing headers are refused with 400."""
    _refused(b"POST /upload HTTP/1.1\r\n" + HOST + head_and_body, 400)


def test_chunked_on_http_10() -> None:
    """Transfer-Encoding: chunked on an HTTP/1.0 request is refused with 400."""
    _refused(
        b"POST /upload HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400
    )


def test_huge_content_length() -> None:
    """A Content-Length beyond the body limit, up to thousands of digits, is answered 413."""
    _refused(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: %d\r\n\r\n" % 2**63, 413)
    _refused(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: " + b"9" * 5000 + b"\r\n\r\n", 413)


def test_understated_content_length_does_not_smuggle() -> None:
    """Bytes past Content-Length are the next request, read only after this response."""
    server = Server()
    conn = server.connect()
    conn.send(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    message = server.request()
    assert message["body"] == b"hello"
    # The rest is the next pipelined request, read only after this response.
    assert server.receive() is None
    server.reply(message, status=200)
    assert server.request()["path"] == "/smuggled"


# -- slow clients ----------------------------------------------------------------------------------------


def test_upgrade_whose_headers_never_finish_times_out() -> None:
    """An upgrade request whose head never ends is answered 408 after the header timeout."""
    server = Server(header_timeout=5)
    conn = server.connect()
    conn.send(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n")
    server.advance(6)
    assert conn.status() == 408
    assert conn.closing


def test_many_pipelined_requests_pause_the_transport() -> None:
    """Pipelined requests are delivered one at a time, the transport paused meanwhile."""
    server = Server()
    conn = server.connect()
    conn.send(simple_request() * 2000)
    assert server.request()["path"] == "/"
    assert server.receive() is None
    assert conn.transport.producerState == "paused"


# -- properties ----------------------------------------------------------------------------------------------

_SETTINGS = settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)


@_SETTINGS
@given(st.binary(max_size=40).filter(lambda v: b"\r\n" not in v))
def test_header_value_is_refused_or_passed_unchanged(value: bytes) -> None:
    """Any header value is refused with 400 or delivered with only outer blanks stripped."""
    server = Server()
    conn = server.connect()
    conn.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Value: " + value + b"\r\n\r\n")
    stripped = value.strip(b" \t")
    bad = any(b in FORBIDDEN_VALUE_BYTES for b in stripped) or b"\r" in value or b"\n" in value
    message = server.receive()
    if bad:
        assert message is None
        assert conn.status() == 400
    else:
        assert message is not None
        assert message["headers"] == [[b"host", b"a"], [b"x-value", stripped]]


@_SETTINGS
@given(
    st.binary(min_size=1, max_size=20).filter(
        lambda n: b":" not in n and b"\r" not in n and b"\n" not in n
    )
)
def test_header_name_is_refused_or_passed_lowercased(name: bytes) -> None:
    """A header name is refused with 400, dropped ("_", daphne-root-path) or lowercased."""
    server = Server()
    conn = server.connect()
    conn.send(b"GET / HTTP/1.1\r\nHost: a\r\n" + name + b": v\r\n\r\n")
    message = server.receive()
    lowered = name.lower()
    if not is_token(name) or lowered in (b"host", b"content-length", b"transfer-encoding"):
        # Not a token; or a second Host, or a bad length/encoding ("v").
        assert message is None
        assert conn.status() == 400
    else:
        assert message is not None
        dropped = b"_" in name or lowered == b"daphne-root-path"
        expected = [] if dropped else [[lowered, b"v"]]
        assert message["headers"] == [[b"host", b"a"], *expected]


@_SETTINGS
@given(st.binary(max_size=300))
def test_garbage_never_crashes_and_never_smuggles(data: bytes) -> None:
    """
    Arbitrary bytes get only a 4xx or 100 Continue and deliver no forbidden header byte.
    Other connections are still served afterwards.
    """
    server = Server()
    conn = server.connect()
    conn.send(data)
    conn.send(b"\r\n\r\n")
    written = conn.written()
    assert written == b"" or written.startswith((b"HTTP/1.1 4", b"HTTP/1.1 100 Continue"))
    while (message := server.receive()) is not None:
        assert set(message) >= {"reply_channel", "path", "headers"}
        assert not any(b in FORBIDDEN_VALUE_BYTES for _, v in message["headers"] for b in v)
    other = server.connect()
    other.send(simple_request(b"/still-here"))
    assert server.request()["path"] == "/still-here"
