"""
The HTTP side over StringTransport, continued: back-pressure, timeouts,
request bodies (inline, streamed, refused), the WebSocket hand-off and the
graceful drain.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from chanserv.exceptions import ChannelBlocked, ChannelFull
from chanserv.server.request import BLOCK_GRACE
from tests.layers.test_inmemory import NotifyingCondition
from tests.server.http_helpers import Server, simple_request


@pytest.fixture
def server() -> Server:
    return Server()


# -- back-pressure and timeouts -----------------------------------------------------------


def test_full_request_channel_gives_503() -> None:
    """A full http.request channel gives 503 "Request queue full." and keeps the connection."""
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
    """With http.request full, each pipelined request gets a 503, its body read past, no 400."""
    server = Server(channel_capacity={"http.request": 1})
    server.layer.send("http.request", {"filler": True})
    conn = server.connect()
    post = simple_request(b"/p", b"Content-Length: 3\r\n", b"POST") + b"abc"
    conn.send(post + post + simple_request(b"/g"))
    assert conn.written().count(b"HTTP/1.1 503 Service Unavailable\r\n") == 3
    assert b" 400 " not in conn.written()
    assert not conn.closing


def test_http_timeout_gives_503() -> None:
    """No reply within http_timeout gives 503 and http.disconnect; a later reply is dropped."""
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
    """A streaming response is cut only once silent for http_timeout, never while it goes on."""
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
    """A keep-alive connection idle for idle_timeout after its response is closed."""
    server = Server(idle_timeout=30)
    conn = server.connect()
    conn.send(simple_request())
    server.reply(server.request(), status=200)
    server.advance(29)
    assert not conn.closing
    server.advance(2)
    assert conn.closing


def test_slowloris_header_deadline_is_not_reset_per_byte() -> None:
    """header_timeout runs from the first byte of the head, so a byte-a-second head gets 408."""
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
    """A body silent for body_timeout is answered 408 and never delivered."""
    server = Server(body_timeout=5)
    conn = server.connect()
    conn.send(simple_request(b"/", b"Content-Length: 10\r\n", b"POST") + b"abc")
    server.advance(6)
    assert conn.status() == 408
    assert server.receive() is None


def _stream(server: Server, conn: Any, first: bytes = b"x" * 600) -> str:
    """Start a streamed response on ``conn``; its reply channel."""
    conn.send(simple_request())
    request = server.request()
    server.reply(request, status=200, content=first, more_content=True)
    return str(request["reply_channel"])


def test_client_that_falls_behind_blocks_its_reply_channel() -> None:
    """
    A client slower than http_send_queue_size blocks its reply channel until it drains.
    Blocked senders wait rather than fail, and nothing is dropped.
    """
    server = Server(http_send_queue_size=1000)
    conn = server.connect()
    reply = _stream(server, conn)
    conn.protocol.pauseProducing()  # what the transport does when its buffer is full
    server.reply({"reply_channel": reply}, content=b"x" * 600, more_content=True)
    server.layer.send(reply, {"content": b"x" * 500, "more_content": True})  # 1,100 > 1,000
    server.run()
    with pytest.raises(ChannelBlocked):
        server.layer.send(reply, {"content": b"late", "more_content": True})
    assert issubclass(ChannelBlocked, ChannelFull)  # capacity semantics
    # The application waits for room: a worker thread in send_prepared_wait...
    data = server.layer.prepare({"content": b"y" * 100, "more_content": True})
    cond = server.layer._space_cond = NotifyingCondition(server.layer._lock)
    waiter = threading.Thread(target=server.layer.send_prepared_wait, args=(reply, data, 30))
    waiter.start()
    assert cond.waiting.wait(30)
    # ... and the reactor face.
    room = server.layer.when_capacity_twisted(reply)
    assert not room.called
    conn.protocol.resumeProducing()  # the client took it all
    waiter.join(10)
    assert not waiter.is_alive()
    server.run()
    assert room.called
    assert conn.written().endswith(b"y" * 100 + b"\r\n")
    server.layer.send(reply, {"content": b"z", "more_content": True})
    # Nothing was refused for a full queue, nothing dropped.
    assert server.layer.channel_statistics(reply)["channel_full_count"] == 0
    assert server.replies.overflow_closes == 0
    assert not conn.transport.disconnected


def test_client_that_keeps_up_is_never_blocked() -> None:
    """A client whose transport drains after each burst never has its reply channel blocked."""
    blocked: list[str] = []
    server = Server(http_send_queue_size=1000)
    server.layer.block_local_channel = blocked.append  # type: ignore[method-assign]
    conn = server.connect()
    reply = _stream(server, conn)
    for _ in range(50):
        server.layer.send(reply, {"content": b"x" * 900, "more_content": True})
        server.run()
        conn.protocol.pauseProducing()  # a burst fills the transport's buffer...
        conn.protocol.resumeProducing()  # ... and it drains
    server.layer.send(reply, {"content": b"", "more_content": False})
    server.run()
    assert blocked == []
    assert conn.written().count(b"x" * 900) == 50


def _cannot_block(channel: str) -> None:
    raise NotImplementedError()


def test_response_piling_up_past_four_times_the_cap_is_cut_and_counted() -> None:
    """Response piling up past 4x http_send_queue_size aborts the connection and is counted."""
    server = Server(http_send_queue_size=1000)
    server.layer.block_local_channel = _cannot_block  # type: ignore[method-assign]
    conn = server.connect()
    reply = _stream(server, conn)
    conn.protocol.pauseProducing()
    for _ in range(5):
        server.layer.send(reply, {"content": b"x" * 900, "more_content": True})
    server.run()
    assert conn.transport.disconnected  # aborted: nothing more is buffered
    assert conn.written().count(b"x" * 900) == 4
    assert server.replies.overflow_closes == 1
    assert server.replies.dropped == 1
    assert server.layer.channel_statistics(reply)["channel_full_count"] == 1
    # Once the connection is gone its channel is not served.
    conn.lose()
    server.layer.send(reply, {"content": b"after", "more_content": True})
    server.run()
    assert server.replies.gone == 1


def test_burst_on_its_way_when_blocked_is_written_then_the_cap_holds() -> None:
    """Replies queued before the block are all written; past BLOCK_GRACE the cap holds."""
    server = Server(http_send_queue_size=1000)
    conn = server.connect()
    reply = _stream(server, conn)
    conn.protocol.pauseProducing()
    # Sent before the block could take effect (a layer's backlog): written
    # whatever it adds up to, within the grace.
    for _ in range(5):
        server.layer.send(reply, {"content": b"x" * 900, "more_content": True})
    server.run()
    assert conn.written().count(b"x" * 900) == 5
    assert not conn.transport.disconnected
    with pytest.raises(ChannelBlocked):
        server.layer.send(reply, {"content": b"x", "more_content": True})
    # Past the grace, replies that get past the block (a group send does)
    # and pile up beyond four times the cap cut the connection.
    server.layer.group_add("news", reply)
    server.advance(BLOCK_GRACE + 0.5)
    server.layer.send_group("news", {"content": b"x" * 900, "more_content": True})
    server.run()
    assert conn.transport.disconnected
    assert server.replies.overflow_closes == 1


def test_client_that_reads_nothing_is_cut_and_its_channel_released() -> None:
    """A paused client is cut after http_timeout; its blocked reply channel is then released."""
    server = Server(http_send_queue_size=1000, http_timeout=10)
    conn = server.connect()
    reply = _stream(server, conn)
    conn.protocol.pauseProducing()
    server.reply({"reply_channel": reply}, content=b"x" * 1200, more_content=True)
    room = server.layer.when_capacity_twisted(reply)
    server.advance(9)
    assert not conn.transport.disconnected
    assert not room.called  # the application waits: it is not "stalled"
    server.advance(2)
    assert conn.transport.disconnected
    conn.lose()  # what the transport does after abortConnection
    server.run()
    assert room.called  # released: its sends now go to a gone channel
    server.layer.send(reply, {"content": b"x", "more_content": True})
    server.run()
    assert server.replies.gone == 1
    assert server.request("http.disconnect")["reply_channel"] == reply


def test_client_blocked_for_http_timeout_is_cut() -> None:
    """A client that reads nothing for http_timeout is cut, even while the application sends."""
    server = Server(http_timeout=10)
    conn = server.connect()
    conn.send(simple_request())
    request = server.request()
    server.reply(request, status=200, content=b"x", more_content=True)
    conn.protocol.pauseProducing()
    for _ in range(3):
        server.advance(4)
        server.reply(request, content=b"x", more_content=True)  # the app is busy...
    assert conn.transport.disconnected  # ...but the client read nothing for 12 s


def test_closing_connection_is_aborted_if_it_does_not_go() -> None:
    """A connection being closed that does not go within ABORT_TIMEOUT (15 s) is aborted."""
    server = Server()
    conn = server.connect()
    conn.send(b"BAD\r\n\r\n")
    assert conn.closing
    assert not conn.transport.disconnected
    server.advance(16)
    assert conn.transport.disconnected


# -- bodies --------------------------------------------------------------------------------


def test_content_length_over_the_limit_gives_413_before_any_consumer() -> None:
    """A Content-Length over max_body_size gets 413, not 100 Continue, and reaches no one."""
    server = Server(max_body_size=100)
    conn = server.connect()
    conn.send(simple_request(b"/", b"Content-Length: 101\r\nExpect: 100-continue\r\n", b"POST"))
    assert conn.status() == 413
    assert b"100 Continue" not in conn.written()
    assert conn.closing
    assert server.receive() is None


def test_content_length_at_the_limit_is_accepted() -> None:
    """A body of exactly max_body_size bytes is accepted and delivered."""
    server = Server(max_body_size=100)
    conn = server.connect()
    conn.send(simple_request(b"/", b"Content-Length: 100\r\n", b"POST") + b"x" * 100)
    assert server.request()["body"] == b"x" * 100


def test_chunked_body_over_the_limit_gives_413() -> None:
    """A chunked body that grows past max_body_size gets 413 and reaches no consumer."""
    server = Server(max_body_size=100)
    conn = server.connect()
    conn.send(simple_request(b"/", b"Transfer-Encoding: chunked\r\n", b"POST"))
    for _ in range(3):
        conn.send(b"32\r\n" + b"y" * 50 + b"\r\n")
    assert conn.status() == 413
    assert conn.closing
    assert server.receive() is None


def test_expect_continue_is_answered_for_acceptable_bodies(server: Server) -> None:
    """Expect: 100-continue with an acceptable body size is answered 100 Continue at once."""
    conn = server.connect()
    conn.send(simple_request(b"/", b"Content-Length: 3\r\nExpect: 100-continue\r\n", b"POST"))
    assert conn.written() == b"HTTP/1.1 100 Continue\r\n\r\n"
    conn.send(b"abc")
    assert server.request()["body"] == b"abc"


def _body(size: int) -> bytes:
    return bytes(i % 251 for i in range(size))


def test_large_body_streams_on_the_body_channel() -> None:
    """A body over body_inline_size starts inline, the rest goes in chunks on a body channel."""
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
    """A chunked body over body_inline_size continues on the body channel to its end."""
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
    """A full body channel pauses reading from the client until there is room again."""
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
    """A client gone mid-body ends the body channel with "closed" and sends http.disconnect."""
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
    """A response before the upload ends closes the connection; nothing after it is read."""
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
    """A streamed body passing max_body_size gets 413 and its body channel ends with closed."""
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
    """A valid WebSocket upgrade is handed to the factory and leaves the HTTP side silent."""
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
    """A WebSocket upgrade with no WebSocket factory configured is answered 400."""
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
    """
    A malformed upgrade is answered 400 and closed, never handed to the WebSocket side:
    POST, HTTP/1.0, no Connection: Upgrade, a body, a repeated header or a control byte.
    """
    websockets = FakeWebSocketFactory()
    server = Server(websocket_factory=websockets)
    conn = server.connect()
    conn.send(raw)
    assert conn.status() == 400
    assert conn.closing
    assert websockets.upgraded == []
    assert server.receive() is None


def test_upgrade_to_something_else_is_plain_http() -> None:
    """Upgrade to anything but websocket (h2c) is served as a plain http.request."""
    websockets = FakeWebSocketFactory()
    server = Server(websocket_factory=websockets)
    server.connect().send(simple_request(b"/", b"Upgrade: h2c\r\nConnection: Upgrade\r\n"))
    assert server.request()["path"] == "/"
    assert websockets.upgraded == []


# -- graceful drain ---------------------------------------------------------------------------------


def test_drain_closes_idle_and_waits_for_busy(server: Server) -> None:
    """drain() closes idle connections at once and busy ones after their response."""
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


def test_layer_outage_gives_503_not_500(monkeypatch: pytest.MonkeyPatch) -> None:
    """A layer failing to take http.request gives 503 "Channel layer unavailable.", not 500."""
    from twisted.internet.defer import fail

    server = Server()
    monkeypatch.setattr(
        server.layer,
        "send_twisted",
        lambda channel, message: fail(ConnectionError("Redis at 127.0.0.1:6379 is down")),
    )
    conn = server.connect()
    conn.send(simple_request())
    assert conn.written().startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert conn.written().endswith(b"Channel layer unavailable.\n")
    assert len(server.replies) == 0


@pytest.mark.parametrize("routed", [True, False])
def test_http_disconnect_is_sent_only_when_routed(routed: bool) -> None:
    """http.disconnect is sent only when some consumer routes that channel."""
    server = Server()
    server.factory.routed_channels = (
        {"http.request", "http.disconnect"} if routed else {"http.request"}
    )
    conn = server.connect()
    conn.send(simple_request())
    request = server.request()
    server.reply(request, status=200, content=b"ok")
    assert conn.written().startswith(b"HTTP/1.1 200 OK\r\n")
    sent = server.receive("http.disconnect")
    if routed:
        assert sent == {"reply_channel": request["reply_channel"], "path": "/"}
    else:
        # Nothing would read it: it is not left to fill the channel.
        assert sent is None
