"""
The HTTP side of the interface server over StringTransport: the
``http.request`` message key by key, every reply case, pipelining,
``http.disconnect``, back-pressure and timeouts, proxy headers, the access
log.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import address

from chanserv.server.config import ServerConfig
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
    conn = server.connect()
    conn.send(b"GET /old HTTP/1.0\r\n\r\n")
    message = server.request()
    assert message["http_version"] == "1.0"
    assert message["headers"] == []


def test_root_path_comes_from_config() -> None:
    server = Server(root_path="/app")
    server.connect().send(simple_request(b"/app/x"))
    message = server.request()
    assert message["root_path"] == "/app"
    assert message["path"] == "/app/x"


def test_client_daphne_root_path_header_is_ignored_and_dropped() -> None:
    server = Server(root_path="/app")
    server.connect().send(simple_request(b"/x", b"Daphne-Root-Path: /evil\r\n"))
    message = server.request()
    assert message["root_path"] == "/app"
    assert [b"daphne-root-path", b"/evil"] not in message["headers"]


def test_underscore_headers_are_dropped(server: Server) -> None:
    server.connect().send(simple_request(b"/", b"X_Auth_User: admin\r\nX-Auth-User: bob\r\n"))
    assert server.request()["headers"] == [[b"host", b"example.com"], [b"x-auth-user", b"bob"]]


def test_unix_socket_connection_has_no_client_or_server(server: Server) -> None:
    server.unix_connect().send(simple_request())
    message = server.request()
    assert message["client"] is None
    assert message["server"] is None


def test_ipv6_addresses(server: Server) -> None:
    conn = server.connect(
        peer=address.IPv6Address("TCP", "::1", 40000), host=address.IPv6Address("TCP", "::1", 8000)
    )
    conn.send(simple_request())
    message = server.request()
    assert message["client"] == ["::1", 40000]
    assert message["server"] == ["::1", 8000]


def test_absolute_form_keeps_the_host_header(server: Server) -> None:
    server.connect().send(b"GET http://evil.example/p?q=1 HTTP/1.1\r\nHost: good.example\r\n\r\n")
    message = server.request()
    assert message["path"] == "/p"
    assert message["query_string"] == b"q=1"
    assert message["headers"] == [[b"host", b"good.example"]]


def test_options_asterisk(server: Server) -> None:
    server.connect().send(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
    message = server.request()
    assert message["method"] == "OPTIONS"
    assert message["path"] == "*"


def test_small_body_is_inline(server: Server) -> None:
    server.connect().send(simple_request(b"/post", b"Content-Length: 5\r\n", b"POST") + b"hello")
    message = server.request()
    assert message["method"] == "POST"
    assert message["body"] == b"hello"
    assert message["body_channel"] is None


def test_body_waits_for_the_whole_body(server: Server) -> None:
    conn = server.connect()
    conn.send(simple_request(b"/post", b"Content-Length: 10\r\n", b"POST") + b"hello")
    assert server.receive() is None
    conn.send(b"world")
    assert server.request()["body"] == b"helloworld"


def test_small_chunked_body_is_inline(server: Server) -> None:
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
    conn = server.connect()
    conn.send(simple_request())
    server.reply(server.request(), status=200, headers=[[b"content-length", b"2"]], content=b"ok")
    assert conn.written() == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


def test_response_defaults(server: Server) -> None:
    conn = server.connect()
    conn.send(simple_request())
    server.reply(server.request(), status=204)
    assert conn.written() == b"HTTP/1.1 204 No Content\r\n\r\n"


def test_response_chunks_with_more_content(server: Server) -> None:
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
    conn = server.connect()
    conn.send(simple_request(b"/", b"", b"HEAD"))
    server.reply(
        server.request(), status=200, headers=[[b"content-length", b"5"]], content=b"hello"
    )
    assert conn.written() == b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"
    assert not conn.closing


def test_http_10_response_closes(server: Server) -> None:
    conn = server.connect()
    conn.send(b"GET / HTTP/1.0\r\n\r\n")
    server.reply(server.request(), status=200, content=b"old")
    assert conn.written() == b"HTTP/1.0 200 OK\r\nconnection: close\r\n\r\nold"
    assert conn.closing


def test_connection_close_from_the_client(server: Server) -> None:
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
    conn = server.connect()
    conn.send(simple_request())
    request = server.request()
    server.reply(request, status=200, content=b"a", more_content=True)
    server.reply(request, status=404, content=b"b")
    assert b"404" not in conn.written()
    assert conn.closing


def test_bad_chunk_content_cuts_the_connection(server: Server) -> None:
    conn = server.connect()
    conn.send(simple_request())
    request = server.request()
    server.reply(request, status=200, content=b"a", more_content=True)
    server.reply(request, content="str")
    assert conn.closing


def test_response_longer_than_content_length_is_cut(server: Server) -> None:
    conn = server.connect()
    conn.send(simple_request())
    server.reply(
        server.request(), status=200, headers=[[b"content-length", b"2"]], content=b"okEXTRA"
    )
    assert conn.written().endswith(b"\r\n\r\nok")
    assert conn.closing


def test_response_shorter_than_content_length_closes_after(server: Server) -> None:
    conn = server.connect()
    conn.send(simple_request())
    server.reply(server.request(), status=200, headers=[[b"content-length", b"5"]], content=b"ok")
    assert conn.closing


def test_application_transfer_encoding_is_dropped(server: Server) -> None:
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
    server.layer.send(server.replies.prefix + "nobodyhereatall", {"status": 200})
    server.run()  # no error


# -- pipelining and keep-alive -------------------------------------------------------


def test_pipelined_requests_are_answered_in_order(server: Server) -> None:
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
    conn = server.connect()
    conn.send(simple_request(b"/one") + simple_request(b"/two"))
    first = server.request()
    server.reply(first, status=200, content=b"1")
    second = server.request()
    server.reply(first, status=200, content=b"late")  # the first reply channel is gone
    server.reply(second, status=200, content=b"2")
    assert b"late" not in conn.written()


def test_keep_alive_serves_sequential_requests(server: Server) -> None:
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
    conn = server.connect()
    conn.send(b"GET / HTTP/1.1\r\nHost: a\r\n")
    conn.lose()
    assert server.receive("http.disconnect") is None
    assert server.receive() is None


# -- back-pressure and timeouts -----------------------------------------------------------


def test_full_request_channel_gives_503() -> None:
    server = Server(channel_capacity={"http.request": 1})
    server.layer.send("http.request", {"filler": True})
    conn = server.connect()
    conn.send(simple_request())
    assert conn.written().startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert conn.written().endswith(b"Request queue full.\n")
    assert server.request() == {"filler": True}
    assert server.receive() is None
    assert server.receive("http.disconnect") is None
    assert len(server.replies) == 0
    # The connection stays usable once there is room again.
    conn.transport.clear()
    conn.send(simple_request(b"/again"))
    assert server.request()["path"] == "/again"


def test_full_request_channel_with_pipelined_bodies() -> None:
    server = Server(channel_capacity={"http.request": 1})
    server.layer.send("http.request", {"filler": True})
    conn = server.connect()
    post = simple_request(b"/p", b"Content-Length: 3\r\n", b"POST") + b"abc"
    conn.send(post + post + simple_request(b"/g"))
    assert conn.written().count(b"HTTP/1.1 503 Service Unavailable\r\n") == 3
    assert b" 400 " not in conn.written()
    assert not conn.closing


def test_http_timeout_gives_503() -> None:
    server = Server(http_timeout=10)
    conn = server.connect()
    conn.send(simple_request())
    request = server.request()
    server.advance(9)
    assert conn.written() == b""
    server.advance(2)
    assert conn.written().startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"Worker server failed to respond within time limit." in conn.written()
    assert server.request("http.disconnect")["reply_channel"] == request["reply_channel"]
    # A reply after the timeout is dropped.
    before = conn.written()
    server.reply(request, status=200, content=b"too late")
    assert conn.written() == before


def test_streaming_response_is_not_cut_while_it_progresses() -> None:
    server = Server(http_timeout=10)
    conn = server.connect()
    conn.send(simple_request())
    request = server.request()
    server.reply(request, status=200, content=b"x", more_content=True)
    for _ in range(4):
        server.advance(6)
        server.reply(request, content=b"x", more_content=True)
    assert not conn.closing
    server.advance(11)  # silent for longer than http_timeout: cut
    assert conn.closing


def test_idle_keep_alive_connection_is_closed() -> None:
    server = Server(idle_timeout=30)
    conn = server.connect()
    conn.send(simple_request())
    server.reply(server.request(), status=200)
    server.advance(29)
    assert not conn.closing
    server.advance(2)
    assert conn.closing


def test_slowloris_header_deadline_is_not_reset_per_byte() -> None:
    server = Server(header_timeout=10, idle_timeout=100)
    conn = server.connect()
    head = simple_request(b"/", b"X-Slow: " + b"a" * 30 + b"\r\n")
    for i in range(12):
        conn.send(head[i : i + 1])
        server.advance(1)
    assert conn.written().startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert conn.closing
    assert server.receive() is None


def test_slow_inline_body_times_out() -> None:
    server = Server(body_timeout=5)
    conn = server.connect()
    conn.send(simple_request(b"/", b"Content-Length: 10\r\n", b"POST") + b"abc")
    server.advance(6)
    assert conn.status() == 408
    assert server.receive() is None


def test_closing_connection_is_aborted_if_it_does_not_go() -> None:
    server = Server()
    conn = server.connect()
    conn.send(b"BAD\r\n\r\n")
    assert conn.closing
    assert not conn.transport.disconnected
    server.advance(16)
    assert conn.transport.disconnected


# -- bodies --------------------------------------------------------------------------------


def test_content_length_over_the_limit_gives_413_before_any_consumer() -> None:
    server = Server(max_body_size=100)
    conn = server.connect()
    conn.send(simple_request(b"/", b"Content-Length: 101\r\nExpect: 100-continue\r\n", b"POST"))
    assert conn.status() == 413
    assert b"100 Continue" not in conn.written()
    assert conn.closing
    assert server.receive() is None


def test_content_length_at_the_limit_is_accepted() -> None:
    server = Server(max_body_size=100)
    conn = server.connect()
    conn.send(simple_request(b"/", b"Content-Length: 100\r\n", b"POST") + b"x" * 100)
    assert server.request()["body"] == b"x" * 100


def test_chunked_body_over_the_limit_gives_413() -> None:
    server = Server(max_body_size=100)
    conn = server.connect()
    conn.send(simple_request(b"/", b"Transfer-Encoding: chunked\r\n", b"POST"))
    for _ in range(3):
        conn.send(b"32\r\n" + b"y" * 50 + b"\r\n")
    assert conn.status() == 413
    assert conn.closing
    assert server.receive() is None


def test_expect_continue_is_answered_for_acceptable_bodies(server: Server) -> None:
    conn = server.connect()
    conn.send(simple_request(b"/", b"Content-Length: 3\r\nExpect: 100-continue\r\n", b"POST"))
    assert conn.written() == b"HTTP/1.1 100 Continue\r\n\r\n"
    conn.send(b"abc")
    assert server.request()["body"] == b"abc"


def _body(size: int) -> bytes:
    return bytes(i % 251 for i in range(size))


def test_large_body_streams_on_the_body_channel() -> None:
    server = Server(body_inline_size=100, body_chunk_size=64)
    conn = server.connect()
    data = _body(1000)
    conn.send(simple_request(b"/up", b"Content-Length: 1000\r\n", b"POST") + data[:150])
    message = server.request()
    assert message["body"] == data[:100]
    body_channel = message["body_channel"]
    assert body_channel.startswith("http.request.body?")
    conn.send(data[150:])
    chunks = []
    while True:
        chunk = server.receive(body_channel)
        assert chunk is not None
        chunks.append(chunk)
        if not chunk.get("more_content"):
            break
    assert all(set(c) == {"content", "more_content"} for c in chunks)
    assert all(len(c["content"]) == 64 for c in chunks[:-1])
    assert message["body"] + b"".join(c["content"] for c in chunks) == data
    server.reply(message, status=200, content=b"thanks")
    assert conn.written().startswith(b"HTTP/1.1 200 OK\r\n")
    assert not conn.closing


def test_streamed_chunked_body() -> None:
    server = Server(body_inline_size=10, body_chunk_size=8)
    conn = server.connect()
    conn.send(simple_request(b"/up", b"Transfer-Encoding: chunked\r\n", b"POST"))
    conn.send(b"14\r\n" + b"a" * 20 + b"\r\n")
    message = server.request()
    assert message["body"] == b"a" * 10
    conn.send(b"5\r\nbbbbb\r\n0\r\n\r\n")
    received = b""
    while True:
        chunk = server.request(message["body_channel"])
        received += chunk["content"]
        if not chunk["more_content"]:
            break
    assert received == b"a" * 10 + b"bbbbb"


def test_full_body_channel_pauses_the_client() -> None:
    server = Server(
        body_inline_size=10, body_chunk_size=10, channel_capacity={"http.request.body*": 1}
    )
    conn = server.connect()
    data = _body(100)
    conn.send(simple_request(b"/up", b"Content-Length: 100\r\n", b"POST") + data[:11])
    message = server.request()
    assert message["body"] == data[:10]
    assert conn.transport.producerState == "producing"
    conn.send(data[11:50])
    # One chunk fits in the channel; the next one waits and reading stops.
    assert conn.transport.producerState == "paused"
    received = [message["body"]]
    pending = data[50:]
    for _ in range(100):
        chunk = server.receive(message["body_channel"])
        if chunk is not None:
            received.append(chunk["content"])
            if not chunk["more_content"]:
                break
        server.run()  # room in the channel: the waiting chunk goes, reading resumes
        if pending and conn.transport.producerState == "producing":
            conn.send(pending)
            pending = b""
    else:
        pytest.fail("the body never completed")
    assert b"".join(received) == data
    assert conn.transport.producerState == "producing"


def test_client_gone_mid_body_sends_closed() -> None:
    server = Server(body_inline_size=10, body_chunk_size=10)
    conn = server.connect()
    conn.send(simple_request(b"/up", b"Content-Length: 100\r\n", b"POST") + b"x" * 25)
    message = server.request()
    conn.lose()
    chunks = []
    while (chunk := server.receive(message["body_channel"])) is not None:
        chunks.append(chunk)
    assert chunks[-1] == {"closed": True}
    assert server.request("http.disconnect")["reply_channel"] == message["reply_channel"]


def test_early_response_to_a_streaming_upload_closes_after() -> None:
    server = Server(body_inline_size=10, body_chunk_size=10)
    conn = server.connect()
    conn.send(simple_request(b"/up", b"Content-Length: 100\r\n", b"POST") + b"x" * 25)
    message = server.request()
    server.reply(message, status=401, content=b"no")
    assert conn.written().startswith(b"HTTP/1.1 401 Unauthorized\r\n")
    assert b"connection: close\r\n" in conn.written()
    assert conn.closing
    conn.send(b"x" * 75 + simple_request(b"/smuggled"))
    assert server.receive() is None


def test_streamed_body_over_the_limit_closes_it() -> None:
    server = Server(body_inline_size=10, body_chunk_size=10, max_body_size=50)
    conn = server.connect()
    conn.send(simple_request(b"/up", b"Transfer-Encoding: chunked\r\n", b"POST"))
    conn.send(b"14\r\n" + b"a" * 20 + b"\r\n")
    message = server.request()
    conn.send(b"28\r\n" + b"b" * 40 + b"\r\n")
    assert conn.status() == 413
    assert conn.closing
    chunks = []
    while (chunk := server.receive(message["body_channel"])) is not None:
        chunks.append(chunk)
    assert chunks[-1] == {"closed": True}


# -- proxy headers -------------------------------------------------------------------------

PROXIED = (
    b"X-Forwarded-For: 203.0.113.9, 10.0.0.2\r\n"
    b"X-Forwarded-Port: 8443\r\n"
    b"X-Forwarded-Proto: https\r\n"
)


def test_proxy_headers_off_by_default(server: Server) -> None:
    server.connect().send(simple_request(b"/", PROXIED))
    message = server.request()
    assert message["client"] == ["192.168.1.1", 54321]
    assert message["scheme"] == "http"


def test_proxy_headers_on() -> None:
    server = Server(proxy_headers=True)
    server.connect().send(simple_request(b"/", PROXIED))
    message = server.request()
    assert message["client"] == ["203.0.113.9", 8443]
    assert message["scheme"] == "https"
    # The headers themselves are still passed on.
    assert [b"x-forwarded-proto", b"https"] in message["headers"]


def test_proxy_headers_without_port() -> None:
    server = Server(proxy_headers=True)
    server.connect().send(simple_request(b"/", b"X-Forwarded-For: 2001:db8::1\r\n"))
    assert server.request()["client"] == ["2001:db8::1", 0]


def test_proxy_headers_garbage_is_ignored() -> None:
    server = Server(proxy_headers=True)
    server.connect().send(
        simple_request(b"/", b"X-Forwarded-For: <script>\r\nX-Forwarded-Proto: gopher\r\n")
    )
    message = server.request()
    assert message["client"] == ["192.168.1.1", 54321]
    assert message["scheme"] == "http"


# -- access log ------------------------------------------------------------------------------


def test_access_log_line(server: Server) -> None:
    conn = server.connect()
    conn.send(simple_request(b"/chat/?room=1&session_key=SECRETKEY&x=2"))
    server.reply(server.request(), status=200, content=b"12345")
    assert server.access.getvalue() == (
        "192.168.1.1 - - [21/Nov/2025:13:55:36 +0000] "
        '"GET /chat/?room=1&session_key=[redacted]&x=2 HTTP/1.1" 200 5\n'
    )
    assert "SECRETKEY" not in server.access.getvalue()


def test_access_log_uses_the_proxied_client() -> None:
    server = Server(proxy_headers=True)
    conn = server.connect()
    conn.send(simple_request(b"/", PROXIED))
    server.reply(server.request(), status=404)
    assert server.access.getvalue().startswith("203.0.113.9 - - [")
    assert server.access.getvalue().endswith('"GET / HTTP/1.1" 404 0\n')


def test_access_log_refusal(server: Server) -> None:
    conn = server.connect()
    conn.send(b"GET /x HTTP/1.1\r\n\r\n")  # no Host
    assert conn.status() == 400
    assert server.access.getvalue().endswith('"GET /x HTTP/1.1" 400 -\n')


# -- WebSocket hand-off -------------------------------------------------------------------------


class FakeWebSocketFactory:
    def __init__(self) -> None:
        self.upgraded: list[Any] = []

    def upgrade(self, request: Any) -> None:
        self.upgraded.append(request)


UPGRADE = (
    b"GET /ws/?room=1 HTTP/1.1\r\n"
    b"Host: example.com\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: keep-alive, Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"Origin: http://example.com\r\n"
)


def test_valid_upgrade_is_handed_over() -> None:
    websockets = FakeWebSocketFactory()
    server = Server(websocket_factory=websockets)
    conn = server.connect()
    conn.send(UPGRADE + b"\r\n")
    [request] = websockets.upgraded
    assert request.wants_websocket
    assert request.asgi_path == "/ws/"
    assert request.query_string == b"room=1"
    assert (b"origin", b"http://example.com") in request.header_pairs
    assert conn.protocol not in server.factory.connections
    assert conn.written() == b""
    assert server.receive() is None


def test_upgrade_without_websocket_factory_is_refused(server: Server) -> None:
    conn = server.connect()
    conn.send(UPGRADE + b"\r\n")
    assert conn.status() == 400
    assert server.receive() is None


@pytest.mark.parametrize(
    "raw",
    [
        UPGRADE.replace(b"GET", b"POST") + b"\r\n",
        UPGRADE.replace(b"HTTP/1.1", b"HTTP/1.0") + b"\r\n",
        UPGRADE.replace(b"keep-alive, Upgrade", b"keep-alive") + b"\r\n",
        UPGRADE + b"Content-Length: 10\r\n\r\n0123456789",
        UPGRADE + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        UPGRADE + b"Origin: http://evil.example\r\n\r\n",
        UPGRADE + b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        UPGRADE + b"Sec-WebSocket-Version: 13\r\n\r\n",
        UPGRADE + b"Host: evil.example\r\n\r\n",
        UPGRADE + b"X-Padding: innocent\x0bX-Secret-Auth: admin-token\r\n\r\n",
    ],
)
def test_bad_upgrade_is_refused(raw: bytes) -> None:
    websockets = FakeWebSocketFactory()
    server = Server(websocket_factory=websockets)
    conn = server.connect()
    conn.send(raw)
    assert conn.status() == 400
    assert conn.closing
    assert websockets.upgraded == []
    assert server.receive() is None


def test_upgrade_to_something_else_is_plain_http() -> None:
    websockets = FakeWebSocketFactory()
    server = Server(websocket_factory=websockets)
    server.connect().send(simple_request(b"/", b"Upgrade: h2c\r\nConnection: Upgrade\r\n"))
    assert server.request()["path"] == "/"
    assert websockets.upgraded == []


# -- graceful drain ---------------------------------------------------------------------------------


def test_drain_closes_idle_and_waits_for_busy(server: Server) -> None:
    idle = server.connect()
    busy = server.connect()
    busy.send(simple_request())
    request = server.request()
    d = server.factory.drain()
    assert idle.closing
    idle.lose()
    assert not d.called
    server.reply(request, status=200, content=b"done")
    assert b"connection: close" in busy.written()
    assert busy.closing
    busy.lose()
    assert d.called


def test_config_defaults_are_documented_values() -> None:
    config = ServerConfig()
    assert config.http_timeout == 120
    assert config.max_body_size == 10 * 1024 * 1024
