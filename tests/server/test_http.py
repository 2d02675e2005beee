"""
The HTTP side of the interface server over StringTransport: the
``http.request`` message key by key, every reply case, pipelining,
keep-alive, ``http.disconnect``, proxy headers, the access log.  (Timeouts,
bodies and the WebSocket hand-off: test_http_flow.py.)
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import address

from tests.server.http_helpers import Server, simple_request

REQUEST_KEYS = {
    "reply_channel",
    "http_version",
    "method",
    "scheme",
    "path",
    "query_string",
    "root_path",
    "headers",
    "body",
    "body_channel",
    "client",
    "server",
}


@pytest.fixture
def server() -> Server:
    return Server()


# -- http.request ---------------------------------------------------------------


def test_request_message_has_every_key(server: Server) -> None:
    """http.request has exactly the ASGI keys: decoded path, raw query, lowercased headers."""
    conn = server.connect()
    conn.send(
        b"GET /caf%C3%A9/a%20b?x=1&y=%20z HTTP/1.1\r\n"
        b"Host: example.com\r\n"
        b"X-Foo: one\r\n"
        b"Accept: */*\r\n"
        b"x-FOO: two\r\n"
        b"\r\n"
    )
    message = server.request()
    assert set(message) == REQUEST_KEYS
    assert message["reply_channel"].startswith(server.replies.prefix)
    assert len(message["reply_channel"]) - len(server.replies.prefix) >= 12
    assert message["http_version"] == "1.1"
    assert message["method"] == "GET"
    assert message["scheme"] == "http"
    assert message["path"] == "/café/a b"
    assert message["query_string"] == b"x=1&y=%20z"
    assert message["root_path"] == ""
    assert message["headers"] == [
        [b"host", b"example.com"],
        [b"x-foo", b"one"],
        [b"accept", b"*/*"],
        [b"x-foo", b"two"],
    ]
    assert message["body"] == b""
    assert message["body_channel"] is None
    assert message["client"] == ["192.168.1.1", 54321]
    assert message["server"] == ["10.0.0.1", 12345]


def test_http_10_request(server: Server) -> None:
    """An HTTP/1.0 request without Host is delivered with http_version "1.0" and no headers."""
    conn = server.connect()
    conn.send(b"GET /old HTTP/1.0\r\n\r\n")
    message = server.request()
    assert message["http_version"] == "1.0"
    assert message["headers"] == []


def test_root_path_comes_from_config() -> None:
    """root_path comes from the config, and path keeps the full request path including it."""
    server = Server(root_path="/app")
    server.connect().send(simple_request(b"/app/x"))
    message = server.request()
    assert message["root_path"] == "/app"
    assert message["path"] == "/app/x"


def test_client_daphne_root_path_header_is_ignored_and_dropped() -> None:
    """A client's Daphne-Root-Path header neither sets root_path nor reaches the application."""
    server = Server(root_path="/app")
    server.connect().send(simple_request(b"/x", b"Daphne-Root-Path: /evil\r\n"))
    message = server.request()
    assert message["root_path"] == "/app"
    assert [b"daphne-root-path", b"/evil"] not in message["headers"]


def test_underscore_headers_are_dropped(server: Server) -> None:
    """Header names with underscores are dropped, so they cannot pose as their dashed twins."""
    server.connect().send(simple_request(b"/", b"X_Auth_User: admin\r\nX-Auth-User: bob\r\n"))
    assert server.request()["headers"] == [[b"host", b"example.com"], [b"x-auth-user", b"bob"]]


def test_unix_socket_connection_has_no_client_or_server(server: Server) -> None:
    """A request over a UNIX socket has client and server None."""
    server.unix_connect().send(simple_request())
    message = server.request()
    assert message["client"] is None
    assert message["server"] is None


def test_ipv6_addresses(server: Server) -> None:
    """IPv6 client and server addresses are passed as [host, port] without brackets."""
    conn = server.connect(
        peer=address.IPv6Address("TCP", "::1", 40000), host=address.IPv6Address("TCP", "::1", 8000)
    )
    conn.send(simple_request())
    message = server.request()
    assert message["client"] == ["::1", 40000]
    assert message["server"] == ["::1", 8000]


def test_absolute_form_keeps_the_host_header(server: Server) -> None:
    """An absolute-form target gives path and query only; the Host header is left as sent."""
    server.connect().send(b"GET http://evil.example/p?q=1 HTTP/1.1\r\nHost: good.example\r\n\r\n")
    message = server.request()
    assert message["path"] == "/p"
    assert message["query_string"] == b"q=1"
    assert message["headers"] == [[b"host", b"good.example"]]


def test_options_asterisk(server: Server) -> None:
    """OPTIONS * is delivered with path "*"."""
    server.connect().send(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
    message = server.request()
    assert message["method"] == "OPTIONS"
    assert message["path"] == "*"


def test_small_body_is_inline(server: Server) -> None:
    """A small Content-Length body is delivered inline in body, with no body_channel."""
    server.connect().send(simple_request(b"/post", b"Content-Length: 5\r\n", b"POST") + b"hello")
    message = server.request()
    assert message["method"] == "POST"
    assert message["body"] == b"hello"
    assert message["body_channel"] is None


def test_body_waits_for_the_whole_body(server: Server) -> None:
    """http.request is sent only once the whole Content-Length body has arrived."""
    conn = server.connect()
    conn.send(simple_request(b"/post", b"Content-Length: 10\r\n", b"POST") + b"hello")
    assert server.receive() is None
    conn.send(b"world")
    assert server.request()["body"] == b"helloworld"


def test_small_chunked_body_is_inline(server: Server) -> None:
    """A small chunked body is decoded and delivered inline, Transfer-Encoding header kept."""
    conn = server.connect()
    conn.send(
        simple_request(b"/c", b"Transfer-Encoding: chunked\r\n", b"PUT")
        + b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    message = server.request()
    assert message["body"] == b"hello world"
    assert message["body_channel"] is None
    assert [b"transfer-encoding", b"chunked"] in message["headers"]


# -- replies --------------------------------------------------------------------------


def test_response_is_written(server: Server) -> None:
    """
    A reply is written with its status, headers lowercased in order, and a chunked body.
    The connection stays open.
    """
    conn = server.connect()
    conn.send(simple_request())
    request = server.request()
    server.reply(
        request,
        status=201,
        headers=[[b"Content-Type", b"text/plain"], [b"X-Multi", b"1"], [b"x-multi", b"2"]],
        content=b"made",
    )
    assert conn.written() == (
        b"HTTP/1.1 201 Created\r\n"
        b"content-type: text/plain\r\n"
        b"x-multi: 1\r\n"
        b"x-multi: 2\r\n"
        b"transfer-encoding: chunked\r\n"
        b"\r\n"
        b"4\r\nmade\r\n0\r\n\r\n"
    )
    assert not conn.closing


def test_response_with_content_length_is_not_chunked(server: Server) -> None:
    """A reply with Content-Length is written as is, not chunked."""
    conn = server.connect()
    conn.send(simple_request())
    server.reply(server.request(), status=200, headers=[[b"content-length", b"2"]], content=b"ok")
    assert conn.written() == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


def test_response_defaults(server: Server) -> None:
    """A reply with only a status writes a bare status line: no headers, no body."""
    conn = server.connect()
    conn.send(simple_request())
    server.reply(server.request(), status=204)
    assert conn.written() == b"HTTP/1.1 204 No Content\r\n\r\n"


def test_response_chunks_with_more_content(server: Server) -> None:
    """
    Replies with more_content stream as chunks, empty ones skipped.
    The final reply ends the body and sends http.disconnect.
    """
    conn = server.connect()
    conn.send(simple_request())
    request = server.request()
    server.reply(request, status=200, content=b"a", more_content=True)
    assert conn.written().endswith(b"1\r\na\r\n")
    server.reply(request, content=b"bc", more_content=True)
    server.reply(request, content=b"", more_content=True)
    assert server.receive("http.disconnect") is None
    server.reply(request, content=b"d")
    assert conn.written().endswith(b"1\r\na\r\n2\r\nbc\r\n1\r\nd\r\n0\r\n\r\n")
    assert server.request("http.disconnect") == {
        "reply_channel": request["reply_channel"],
        "path": "/",
    }


def test_head_response_has_no_body(server: Server) -> None:
    """A HEAD response keeps its Content-Length but writes no body, and keeps the connection."""
    conn = server.connect()
    conn.send(simple_request(b"/", b"", b"HEAD"))
    server.reply(
        server.request(), status=200, headers=[[b"content-length", b"5"]], content=b"hello"
    )
    assert conn.written() == b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"
    assert not conn.closing


def test_http_10_response_closes(server: Server) -> None:
    """An HTTP/1.0 response is unchunked, says Connection: close and closes the connection."""
    conn = server.connect()
    conn.send(b"GET / HTTP/1.0\r\n\r\n")
    server.reply(server.request(), status=200, content=b"old")
    assert conn.written() == b"HTTP/1.0 200 OK\r\nconnection: close\r\n\r\nold"
    assert conn.closing


def test_connection_close_from_the_client(server: Server) -> None:
    """A client's Connection: close is echoed in the response and the connection then closes."""
    conn = server.connect()
    conn.send(simple_request(b"/", b"Connection: close\r\n"))
    server.reply(server.request(), status=200, headers=[[b"content-length", b"0"]])
    assert b"connection: close\r\n" in conn.written()
    assert conn.closing


@pytest.mark.parametrize(
    "reply",
    [
        {"status": 99},
        {"status": 600},
        {"status": "200"},
        {"status": True},
        {"content": b"no status"},
        {"status": 200, "headers": [[b"x", b"a\r\nSet-Cookie: pwn=1"]]},
        {"status": 200, "headers": [[b"x", b"a\nSet-Cookie: pwn=1"]]},
        {"status": 200, "headers": [[b"x", b"a\x00b"]]},
        {"status": 200, "headers": [["X-Str", b"v"]]},
        {"status": 200, "headers": [[b"X-Str", "v"]]},
        {"status": 200, "headers": [[b"Bad Name", b"v"]]},
        {"status": 200, "headers": [[b"Set-Cookie: pwn=1\r\nX", b"v"]]},
        {"status": 200, "headers": [[b"x"]]},
        {"status": 200, "headers": {"x": "y"}},
        {"status": 200, "content": "text, not bytes"},
        {"status": 200, "headers": [[b"content-length", b"1"], [b"content-length", b"2"]]},
        {
            "status": 200,
            "headers": [[b"content-length", b"1"], [b"Content-Length", b"2"]],
            "content": b"x",
        },
        {"status": 200, "headers": [[b"content-length", b"-1"]]},
    ],
)
def test_malformed_first_reply_gives_500(server: Server, reply: dict[str, Any]) -> None:
    """
    A malformed first reply is answered 500 with none of its content; the connection closes.
    http.disconnect is still sent.
    """
    conn = server.connect()
    conn.send(simple_request())
    server.reply(server.request(), **reply)
    written = conn.written()
    assert written.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b"pwn" not in written
    assert b"x-str" not in written.lower()
    assert b"text, not bytes" not in written
    assert conn.closing
    assert server.receive("http.disconnect") is not None


def test_status_in_a_later_message_cuts_the_connection(server: Server) -> None:
    """A status in a reply after the response started is not written; the connection is cut."""
    conn = server.connect()
    conn.send(simple_request())
    request = server.request()
    server.reply(request, status=200, content=b"a", more_content=True)
    server.reply(request, status=404, content=b"b")
    assert b"404" not in conn.written()
    assert conn.closing


def test_bad_chunk_content_cuts_the_connection(server: Server) -> None:
    """Non-bytes content in a later reply chunk cuts the connection."""
    conn = server.connect()
    conn.send(simple_request())
    request = server.request()
    server.reply(request, status=200, content=b"a", more_content=True)
    server.reply(request, content="str")
    assert conn.closing


def test_response_longer_than_content_length_is_cut(server: Server) -> None:
    """Content past the declared Content-Length is not written and the connection is closed."""
    conn = server.connect()
    conn.send(simple_request())
    server.reply(
        server.request(), status=200, headers=[[b"content-length", b"2"]], content=b"okEXTRA"
    )
    assert conn.written().endswith(b"\r\n\r\nok")
    assert conn.closing


def test_response_shorter_than_content_length_closes_after(server: Server) -> None:
    """A response ending short of its Content-Length closes the connection."""
    conn = server.connect()
    conn.send(simple_request())
    server.reply(server.request(), status=200, headers=[[b"content-length", b"5"]], content=b"ok")
    assert conn.closing


def test_application_transfer_encoding_is_dropped(server: Server) -> None:
    """The application's Transfer-Encoding is dropped; its Content-Length framing is used."""
    conn = server.connect()
    conn.send(simple_request())
    server.reply(
        server.request(),
        status=200,
        headers=[[b"content-length", b"2"], [b"transfer-encoding", b"chunked"]],
        content=b"ok",
    )
    assert conn.written() == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


def test_reply_on_an_unknown_channel_is_dropped(server: Server) -> None:
    """A reply on a reply channel no request owns is dropped, counted, and raises nothing."""
    gone = server.replies.gone
    server.layer.send(server.replies.prefix + "nobodyhereatall", {"status": 200})
    server.run()  # no error
    assert server.replies.gone == gone + 1


# -- pipelining and keep-alive -------------------------------------------------------


def test_pipelined_requests_are_answered_in_order(server: Server) -> None:
    """Pipelined requests are read one at a time, each after the previous one is answered."""
    conn = server.connect()
    conn.send(
        simple_request(b"/slow", b"X-Request-Id: 1\r\n")
        + simple_request(b"/fast", b"X-Request-Id: 2\r\n")
        + simple_request(b"/third", b"X-Request-Id: 3\r\n")
    )
    first = server.request()
    assert first["path"] == "/slow"
    # The next request is only read once the first is answered.
    assert server.receive() is None
    server.reply(first, status=200, headers=[[b"x-request-id", b"1"]], content=b"slow")
    second = server.request()
    assert second["path"] == "/fast"
    server.reply(second, status=200, headers=[[b"x-request-id", b"2"]], content=b"fast")
    third = server.request()
    server.reply(third, status=200, headers=[[b"x-request-id", b"3"]], content=b"third")
    written = conn.written()
    assert written.index(b"x-request-id: 1") < written.index(b"slow")
    assert written.index(b"slow") < written.index(b"x-request-id: 2") < written.index(b"fast")
    assert written.index(b"fast") < written.index(b"x-request-id: 3") < written.index(b"third")
    assert not conn.closing


def test_late_reply_for_an_earlier_request_is_dropped(server: Server) -> None:
    """A reply to a request already answered is dropped, not written into the next response."""
    conn = server.connect()
    conn.send(simple_request(b"/one") + simple_request(b"/two"))
    first = server.request()
    server.reply(first, status=200, content=b"1")
    second = server.request()
    server.reply(first, status=200, content=b"late")  # the first reply channel is gone
    server.reply(second, status=200, content=b"2")
    assert b"late" not in conn.written()


def test_keep_alive_serves_sequential_requests(server: Server) -> None:
    """One keep-alive connection serves several requests in turn and stays open."""
    conn = server.connect()
    for n in range(3):
        conn.send(simple_request(b"/%d" % n))
        request = server.request()
        assert request["path"] == "/%d" % n
        server.reply(request, status=200, content=b"r%d" % n)
    assert conn.written().count(b"HTTP/1.1 200 OK") == 3
    assert not conn.closing


# -- http.disconnect -------------------------------------------------------------------


def test_disconnect_after_a_complete_response(server: Server) -> None:
    """A finished response sends http.disconnect with the decoded path and frees its channel."""
    conn = server.connect()
    conn.send(simple_request(b"/p%C3%A4"))
    request = server.request()
    server.reply(request, status=200)
    assert server.request("http.disconnect") == {
        "reply_channel": request["reply_channel"],
        "path": "/pä",
    }
    assert request["reply_channel"] not in server.replies


def test_disconnect_on_premature_close(server: Server) -> None:
    """A client gone before the reply sends one http.disconnect; a later reply is dropped."""
    conn = server.connect()
    conn.send(simple_request(b"/gone"))
    request = server.request()
    conn.lose()
    assert server.request("http.disconnect") == {
        "reply_channel": request["reply_channel"],
        "path": "/gone",
    }
    assert request["reply_channel"] not in server.replies
    server.reply(request, status=200)  # dropped: nowhere to write
    assert server.receive("http.disconnect") is None


def test_no_disconnect_for_a_request_never_dispatched(server: Server) -> None:
    """A connection lost mid-head sends neither http.request nor http.disconnect."""
    conn = server.connect()
    conn.send(b"GET / HTTP/1.1\r\nHost: a\r\n")
    conn.lose()
    assert server.receive("http.disconnect") is None
    assert server.receive() is None


# -- proxy headers -------------------------------------------------------------------------

PROXIED = (
    b"X-Forwarded-For: 203.0.113.9, 10.0.0.2\r\n"
    b"X-Forwarded-Port: 8443\r\n"
    b"X-Forwarded-Proto: https\r\n"
)


def test_proxy_headers_off_by_default(server: Server) -> None:
    """X-Forwarded-* headers change neither client nor scheme unless proxy_headers is on."""
    server.connect().send(simple_request(b"/", PROXIED))
    message = server.request()
    assert message["client"] == ["192.168.1.1", 54321]
    assert message["scheme"] == "http"


def test_proxy_headers_on() -> None:
    """With proxy_headers, client and scheme come from X-Forwarded-*; the headers are kept."""
    server = Server(proxy_headers=True)
    server.connect().send(simple_request(b"/", PROXIED))
    message = server.request()
    assert message["client"] == ["203.0.113.9", 8443]
    assert message["scheme"] == "https"
    # The headers themselves are still passed on.
    assert [b"x-forwarded-proto", b"https"] in message["headers"]


def test_proxy_headers_without_port() -> None:
    """With proxy_headers and no X-Forwarded-Port, the client port is 0."""
    server = Server(proxy_headers=True)
    server.connect().send(simple_request(b"/", b"X-Forwarded-For: 2001:db8::1\r\n"))
    assert server.request()["client"] == ["2001:db8::1", 0]


def test_proxy_headers_garbage_is_ignored() -> None:
    """An unparsable X-Forwarded-For or unknown proto leaves client and scheme as they are."""
    server = Server(proxy_headers=True)
    server.connect().send(
        simple_request(b"/", b"X-Forwarded-For: <script>\r\nX-Forwarded-Proto: gopher\r\n")
    )
    message = server.request()
    assert message["client"] == ["192.168.1.1", 54321]
    assert message["scheme"] == "http"


# -- access log ------------------------------------------------------------------------------


def test_access_log_line(server: Server) -> None:
    """The access log writes one common-log line with the session_key query value redacted."""
    conn = server.connect()
    conn.send(simple_request(b"/chat/?room=1&session_key=SECRETKEY&x=2"))
    server.reply(server.request(), status=200, content=b"12345")
    assert server.access.getvalue() == (
        "192.168.1.1 - - [21/Nov/2025:13:55:36 +0000] "
        '"GET /chat/?room=1&session_key=[redacted]&x=2 HTTP/1.1" 200 5\n'
    )
    assert "SECRETKEY" not in server.access.getvalue()


def test_access_log_uses_the_proxied_client() -> None:
    """With proxy_headers, the access log names the forwarded client address."""
    server = Server(proxy_headers=True)
    conn = server.connect()
    conn.send(simple_request(b"/", PROXIED))
    server.reply(server.request(), status=404)
    assert server.access.getvalue().startswith("203.0.113.9 - - [")
    assert server.access.getvalue().endswith('"GET / HTTP/1.1" 404 0\n')


def test_access_log_refusal(server: Server) -> None:
    """A request refused before dispatch is logged with its status and "-" for the size."""
    conn = server.connect()
    conn.send(b"GET /x HTTP/1.1\r\n\r\n")  # no Host
    assert conn.status() == 400
    assert server.access.getvalue().endswith('"GET /x HTTP/1.1" 400 -\n')


def test_a_lost_disconnect_is_counted(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """An http.disconnect the layer never took (full or unreachable for its expiry) is counted."""
    from twisted.internet.defer import fail

    from chanserv.exceptions import ChannelFull
    from chanserv.server import request as request_module

    failures = iter([ChannelFull("http.disconnect"), ConnectionError("layer down")])
    monkeypatch.setattr(request_module, "send_until_delivered", lambda *a: fail(next(failures)))
    for path in (b"/full", b"/down"):
        conn = server.connect()
        conn.send(simple_request(path))
        server.reply(server.request(), status=200)
    assert server.factory.disconnects_lost == 2
