"""
chanserv.handler: AsgiRequest, AsgiHandler, ViewConsumer.

Messages are built key for key as the interface server sends them (channels1
reference §2.1) and go through the real in-memory layer.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from django.core import signals
from django.core.exceptions import BadRequest, RequestDataTooBig
from django.http import HttpResponse
from django.test import override_settings

from chanserv.exceptions import RequestAborted, RequestTimeout, ResponseLater
from chanserv.handler import AsgiHandler, AsgiRequest, ViewConsumer
from chanserv.layers import InMemoryChannelLayer
from chanserv.layers.base import random_string
from chanserv.message import Message
from tests import handler_urls
from tests.handler_urls import CHUNK

PREFIX = "http.response.test!"

pytestmark = pytest.mark.usefixtures("test_urls")


@pytest.fixture
def test_urls():
    """Fixture: every test here runs with ROOT_URLCONF set to tests.handler_urls."""
    with override_settings(ROOT_URLCONF="tests.handler_urls"):
        yield


@pytest.fixture
def layer() -> InMemoryChannelLayer:
    return InMemoryChannelLayer()


def http_request(layer: Any, path: str = "/hello/", **overrides: Any) -> Message:
    """An ``http.request`` Message, with every key the server sends."""
    content: dict[str, Any] = {
        "reply_channel": PREFIX + random_string(),
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "query_string": b"",
        "root_path": "",
        "headers": [[b"host", b"testserver"]],
        "body": b"",
        "body_channel": None,
        "client": ["10.0.0.7", 51234],
        "server": ["127.0.0.1", 8000],
    }
    content.update(overrides)
    # Through the layer's encoding, as a worker would receive it.
    return Message(layer.unpack(layer.prepare(content)), "http.request", layer)


def replies(layer: Any) -> list[dict[str, Any]]:
    """Every reply queued on the test prefix, in order."""
    found = []
    while True:
        _, message = layer.receive([PREFIX], block=False)
        if message is None:
            return found
        found.append(message)


def run(layer: Any, path: str = "/hello/", **overrides: Any) -> list[dict[str, Any]]:
    return list(AsgiHandler()(http_request(layer, path, **overrides)))


def body_of(messages: list[dict[str, Any]]) -> bytes:
    return b"".join(m.get("content", b"") for m in messages)


class SignalCounter:
    def __init__(self, signal: Any) -> None:
        self.calls: list[dict[str, Any]] = []
        self.signal = signal

    def __call__(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)

    def __enter__(self) -> SignalCounter:
        self.signal.connect(self, weak=False)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.signal.disconnect(self)


# -- AsgiRequest: META ---------------------------------------------------------


def test_meta_mapping(layer):
    """AsgiRequest maps the message's keys and headers onto Django's META, path and GET."""
    message = http_request(
        layer,
        "/app/hello/",
        method="post",
        root_path="/app",
        query_string=b"q=%C3%A4&r=\xc3\xa4",
        headers=[
            [b"host", b"localhost"],
            [b"content-type", b"text/plain; charset=latin-1"],
            [b"content-length", b"5"],
            [b"user-agent", b"probe/1"],
        ],
        body=b"hello",
    )
    request = AsgiRequest(message)
    meta = request.META
    assert request.path == "/app/hello/"
    assert request.path_info == "/hello/"
    assert request.script_name == "/app"
    assert request.method == "POST"
    assert meta["REQUEST_METHOD"] == "POST"
    assert meta["QUERY_STRING"] == "q=%C3%A4&r=ä"
    assert meta["SCRIPT_NAME"] == "/app"
    assert meta["PATH_INFO"] == "/hello/"
    assert meta["wsgi.multithread"] is True
    assert meta["wsgi.multiprocess"] is True
    assert meta["REMOTE_ADDR"] == "10.0.0.7"
    assert meta["REMOTE_HOST"] == "10.0.0.7"
    assert meta["REMOTE_PORT"] == 51234
    assert meta["SERVER_NAME"] == "127.0.0.1"
    assert meta["SERVER_PORT"] == "8000"
    assert meta["CONTENT_TYPE"] == "text/plain; charset=latin-1"
    assert meta["CONTENT_LENGTH"] == "5"
    assert meta["HTTP_HOST"] == "localhost"
    assert meta["HTTP_USER_AGENT"] == "probe/1"
    assert "HTTP_CONTENT_TYPE" not in meta
    assert request.encoding == "latin-1"
    assert request.content_type == "text/plain"
    assert request.GET["q"] == "ä"
    assert request.GET["r"] == "ä"
    assert request.body == b"hello"
    assert request.get_host() == "localhost"
    assert request.reply_channel == message.reply_channel
    assert request.message is message


@pytest.mark.parametrize(
    "root_path, path, path_info",
    [
        ("/app", "/app/hello/", "/hello/"),
        ("/app/", "/app/hello/", "/hello/"),
        ("/app", "/app", "/"),
        ("/app", "/application/x", "/application/x"),
        ("/app", "/other/", "/other/"),
        ("", "/hello/", "/hello/"),
    ],
)
def test_path_info_strips_root_path_on_a_segment(layer, root_path, path, path_info):
    """path_info is the path minus root_path, stripped only on a whole path segment."""
    request = AsgiRequest(http_request(layer, path, root_path=root_path))
    assert request.path == path
    assert request.path_info == path_info
    assert request.META["PATH_INFO"] == path_info


def test_no_client_no_server(layer):
    """Without client or server, META has SERVER_NAME 'unknown', port '0' and no REMOTE_ADDR."""
    request = AsgiRequest(http_request(layer, client=None, server=None))
    assert request.META["SERVER_NAME"] == "unknown"
    assert request.META["SERVER_PORT"] == "0"
    assert "REMOTE_ADDR" not in request.META


def test_unknown_charset_is_ignored(layer):
    """An unknown charset in Content-Type leaves the request encoding as None."""
    request = AsgiRequest(
        http_request(layer, headers=[[b"content-type", b"text/plain; charset=no-such"]])
    )
    assert request.encoding is None


def test_duplicate_headers_joined(layer):
    """Repeated headers are joined with commas in META; repeated cookies are all parsed."""
    request = AsgiRequest(
        http_request(
            layer,
            headers=[
                [b"x-dup", b"one"],
                [b"host", b"testserver"],
                [b"x-dup", b"two"],
                [b"cookie", b"a=1"],
                [b"x-dup", b"three"],
                [b"cookie", b"b=2"],
            ],
        )
    )
    assert request.META["HTTP_X_DUP"] == "one,two,three"
    assert request.COOKIES == {"a": "1", "b": "2"}


@pytest.mark.parametrize(
    "headers",
    [
        [[b"x-auth-user", b"bob"], [b"x_auth_user", b"admin"]],
        [[b"x_auth_user", b"admin"], [b"x-auth-user", b"bob"]],
    ],
)
def test_underscore_header_cannot_spoof_dash_header(layer, headers):
    """A header spelt with underscores never overrides its dashed form in META."""
    # CVE-2026-3902: only the "-" spelling reaches META.
    request = AsgiRequest(http_request(layer, headers=headers))
    assert request.META["HTTP_X_AUTH_USER"] == "bob"
    assert request.headers["X-Auth-User"] == "bob"


def test_underscore_header_alone_is_dropped(layer):
    """A header whose name has underscores is dropped from META even when alone."""
    request = AsgiRequest(http_request(layer, headers=[[b"x_forwarded_for", b"1.2.3.4"]]))
    assert "HTTP_X_FORWARDED_FOR" not in request.META


def test_499_duplicate_headers(layer):
    """499 repeats of one header are all kept, joined by commas in order."""
    # CVE-2025-14550: as many repeats as Twisted lets through.
    values = [b"%03d" % i + b"v" * 97 for i in range(499)]
    request = AsgiRequest(http_request(layer, headers=[[b"x-dupe", v] for v in values]))
    joined = request.META["HTTP_X_DUPE"]
    assert joined.split(",") == [v.decode() for v in values]
    assert len(joined) == 499 * 100 + 498


def test_duplicate_headers_joined_linearly(layer):
    """Repeated headers are joined in linear time: 20,000 repeats of 1 KiB finish at once."""
    # 20,000 repeats of 1 KiB: joined once this is ~20 MiB of copying; the
    # 1.x "META[n] + ',' + v" per repeat would copy ~200 GB and never end.
    values = [b"z" * 1024] * 20000
    request = AsgiRequest(
        {"path": "/", "method": "GET", "headers": [(b"x-many", v) for v in values]}
    )
    assert len(request.META["HTTP_X_MANY"]) == 20000 * 1025 - 1


def test_legacy_dict_headers(layer):
    """Headers given as a legacy dict, with str or bytes values, reach META."""
    request = AsgiRequest(
        http_request(
            layer,
            headers={"Content-Type": "application/json", "X-Legacy": b"yes", "Host": "h.example"},
        )
    )
    assert request.META["CONTENT_TYPE"] == "application/json"
    assert request.META["HTTP_X_LEGACY"] == "yes"
    assert request.META["HTTP_HOST"] == "h.example"


def test_scheme_and_cookies(layer):
    """The scheme sets is_secure() and request.scheme; the Cookie header fills COOKIES."""
    request = AsgiRequest(
        http_request(layer, scheme="https", headers=[[b"cookie", b"sessionid=abc; x=y"]])
    )
    assert request.is_secure()
    assert request.scheme == "https"
    assert request.COOKIES == {"sessionid": "abc", "x": "y"}
    assert not AsgiRequest(http_request(layer)).is_secure()


def test_response_later_alias():
    """AsgiRequest.ResponseLater is chanserv's ResponseLater exception."""
    assert AsgiRequest.ResponseLater is ResponseLater


def test_malformed_message_is_bad_request(layer):
    """A message missing keys or with a non-bytes header value raises BadRequest."""
    with pytest.raises(BadRequest):
        AsgiRequest({"method": "GET"})
    with pytest.raises(BadRequest):
        AsgiRequest(http_request(layer, headers=[[b"x-number", 5]]))


# -- AsgiRequest: body ----------------------------------------------------------


def body_channel(layer: Any, *chunks: dict[str, Any]) -> str:
    name = layer.new_channel("http.request.body?")
    for chunk in chunks:
        layer.send(name, chunk)
    return name


def test_body_from_body_channel(layer):
    """The body is the message's body followed by every chunk read off the body channel."""
    name = body_channel(
        layer,
        {"content": b"second,", "more_content": True},
        {"content": b"", "more_content": True},
        {"content": b"third"},
    )
    request = AsgiRequest(http_request(layer, method="POST", body=b"first,", body_channel=name))
    assert request.body == b"first,second,third"
    assert layer.receive([name]) == (None, None)


def test_body_chunks_from_another_thread(layer):
    """Body chunks sent while the request blocks on the body channel are all read in order."""
    # The reader blocks on the layer; the chunks are pushed while it waits.
    name = layer.new_channel("http.request.body?")
    parts = [b"%05d" % i for i in range(50)]

    def sender() -> None:
        for i, part in enumerate(parts):
            layer.send(name, {"content": part, "more_content": i < len(parts) - 1})

    thread = threading.Thread(target=sender)
    thread.start()
    try:
        request = AsgiRequest(http_request(layer, method="POST", body_channel=name))
    finally:
        thread.join()
    assert request.body == b"".join(parts)


def test_body_closed_aborts(layer):
    """A body channel message with closed=True raises RequestAborted."""
    name = body_channel(layer, {"content": b"part", "more_content": True}, {"closed": True})
    with pytest.raises(RequestAborted):
        AsgiRequest(http_request(layer, method="POST", body_channel=name))


def test_body_timeout_without_waiting(layer):
    """With body_receive_timeout 0, a body still to come raises RequestTimeout at once."""
    name = body_channel(layer, {"content": b"part", "more_content": True})

    class Impatient(AsgiRequest):
        body_receive_timeout = 0

    with pytest.raises(RequestTimeout):
        Impatient(http_request(layer, method="POST", body_channel=name))


def test_body_timeout_after_blocking_waits(layer):
    """Reading the body raises RequestTimeout once body_receive_timeout passes on its clock,
    after several blocking receives.
    """
    # The layer's blocking receive gives up several times before the
    # request's own deadline (measured on a fake clock) passes.
    layer.receive_block_timeout = 0.001
    name = body_channel(layer, {"content": b"part", "more_content": True})
    ticks = iter(range(1000))

    class Counted(AsgiRequest):
        body_receive_timeout = 5
        clock = staticmethod(lambda: float(next(ticks)))

    with pytest.raises(RequestTimeout):
        Counted(http_request(layer, method="POST", body_channel=name))
    # start at 0, then one check per wait: waited at 1, 2, 3, 4, gave up at 5.
    assert next(ticks) == 6


def test_body_chunk_content_must_be_bytes(layer):
    """A body chunk whose content is not bytes raises BadRequest."""
    name = body_channel(layer, {"content": "text"})
    with pytest.raises(BadRequest):
        AsgiRequest(http_request(layer, method="POST", body_channel=name))


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000)
def test_body_limit_stops_reading(layer):
    """A chunked body over DATA_UPLOAD_MAX_MEMORY_SIZE raises RequestDataTooBig
    and stops reading at the chunk that crosses it.
    """
    # CVE-2026-33034: no Content-Length, chunks past the limit.  Reading stops
    # at the chunk that crosses it; the rest is never taken.
    chunks = [{"content": b"a" * 400, "more_content": True} for _ in range(10)]
    name = body_channel(layer, *chunks)
    with pytest.raises(RequestDataTooBig):
        AsgiRequest(http_request(layer, method="POST", body_channel=name))
    assert layer.channel_statistics(name)["messages_pending"] == 7


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000)
def test_body_limit_declared_length(layer):
    """A Content-Length over the limit raises RequestDataTooBig before any chunk is read."""
    name = body_channel(layer, {"content": b"a" * 10})
    with pytest.raises(RequestDataTooBig):
        AsgiRequest(
            http_request(
                layer,
                method="POST",
                headers=[[b"content-length", b"1001"]],
                body_channel=name,
            )
        )
    assert layer.channel_statistics(name)["messages_pending"] == 1


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000)
def test_body_limit_in_message_body(layer):
    """A message body over the limit raises RequestDataTooBig; one at the limit is accepted."""
    with pytest.raises(RequestDataTooBig):
        AsgiRequest(http_request(layer, method="POST", body=b"b" * 1001))
    assert AsgiRequest(http_request(layer, method="POST", body=b"b" * 1000)).body == b"b" * 1000


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000, FILE_UPLOAD_MAX_MEMORY_SIZE=1000)
def test_multipart_upload_may_exceed_the_limit(layer):
    """File parts of a multipart upload may exceed DATA_UPLOAD_MAX_MEMORY_SIZE."""
    # File parts are limited by Django's upload handlers, not the body limit.
    upload = b"u" * 5000
    payload = (
        b"--B\r\n"
        b'Content-Disposition: form-data; name="field"\r\n\r\nvalue\r\n'
        b"--B\r\n"
        b'Content-Disposition: form-data; name="doc"; filename="doc.bin"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + upload + b"\r\n--B--\r\n"
    )
    name = body_channel(
        layer,
        {"content": payload[:3000], "more_content": True},
        {"content": payload[3000:]},
    )
    messages = run(
        layer,
        "/body/",
        method="POST",
        headers=[[b"host", b"testserver"], [b"content-type", b"multipart/form-data; boundary=B"]],
        body_channel=name,
    )
    assert messages[0]["status"] == 200
    assert json.loads(body_of(messages)) == {
        "length": None,
        "post": {"field": "value"},
        "files": {"doc": 5000},
    }


# -- AsgiHandler -----------------------------------------------------------------


def test_view_response(layer):
    """AsgiHandler turns a view's response into one reply with status, headers and content."""
    messages = run(layer)
    assert messages == [
        {
            "status": 200,
            "headers": [(b"Content-Type", b"text/plain")],
            "content": b"Hello world",
            "more_content": False,
        }
    ]


def test_header_names_keep_their_case_and_cookies_as_1x(layer):
    """Reply headers are (bytes, bytes) tuples named in the response's case, as in Channels 1.x,
    and each cookie is its own Set-Cookie header."""
    messages = run(layer, "/cookie/")
    headers = messages[0]["headers"]
    assert all(type(h) is tuple and [type(x) for x in h] == [bytes, bytes] for h in headers)
    assert headers[0] == (b"Content-Type", b"text/html; charset=utf-8")
    cookies = [value for name, value in headers if name == b"Set-Cookie"]
    assert len(cookies) == 2
    assert cookies[0].startswith(b"flavour=oatmeal;")
    assert b"HttpOnly" in cookies[0]
    assert cookies[1].startswith(b"second=2;")
    assert (b"X-Custom-Header", b"Value") in run(layer, "/headers/")[0]["headers"]


def test_content_chunked_at_512_kib(layer):
    """Response content is split into 512 KiB chunks; only the first has status and headers."""
    messages = run(layer, "/big/")
    assert [len(m["content"]) for m in messages] == [CHUNK, CHUNK, 10]
    assert [m["more_content"] for m in messages] == [True, True, False]
    assert messages[0]["status"] == 200
    assert all("status" not in m and "headers" not in m for m in messages[1:])
    assert body_of(messages) == b"x" * (2 * CHUNK + 10)


def test_empty_content(layer):
    """An empty response is one reply with empty content and more_content False."""
    messages = run(layer, "/empty/")
    assert len(messages) == 1
    assert messages[0]["content"] == b""
    assert messages[0]["more_content"] is False


def test_streaming_response(layer):
    """A streaming response is sent chunk by chunk, big chunks split, then an empty last one."""
    messages = run(layer, "/stream/")
    assert [len(m["content"]) for m in messages] == [5, CHUNK, 100, 4, 0]
    assert [m["more_content"] for m in messages] == [True, True, True, True, False]
    assert messages[0]["status"] == 200
    assert body_of(messages) == b"first" + b"y" * (CHUNK + 100) + b"last"


def test_empty_streaming_response(layer):
    """An empty streaming response is one reply with status, empty content, no more_content."""
    messages = run(layer, "/empty-stream/")
    assert len(messages) == 1
    assert messages[0]["status"] == 200
    assert messages[0]["content"] == b""
    assert messages[0]["more_content"] is False


def test_file_response_in_512_kib_blocks(layer):
    """A FileResponse is sent in 512 KiB blocks with its content-length header."""
    messages = run(layer, "/file/")
    assert [len(m["content"]) for m in messages] == [CHUNK, CHUNK, 4, 0]
    assert messages[-1]["more_content"] is False
    assert (b"Content-Length", b"%d" % (2 * CHUNK + 4)) in messages[0]["headers"]
    assert body_of(messages).endswith(b"tail")


def test_signals_and_close(layer):
    """request_started fires on start and request_finished when the replies are closed early."""
    with (
        SignalCounter(signals.request_started) as started,
        SignalCounter(signals.request_finished) as finished,
    ):
        replies_iter = AsgiHandler()(http_request(layer, "/stream/"))
        first = next(replies_iter)
        assert first["status"] == 200
        assert len(started.calls) == 1
        assert started.calls[0]["message"]["path"] == "/stream/"
        assert finished.calls == []
        replies_iter.close()  # the consumer stops early: the response still closes
        assert len(finished.calls) == 1
        list(AsgiHandler()(http_request(layer)))
        assert len(finished.calls) == 2


def test_root_path_and_script_prefix(layer):
    """root_path becomes the script prefix for reverse(), for that request only."""
    messages = run(layer, "/app/where/", root_path="/app")
    assert json.loads(body_of(messages)) == {
        "path": "/app/where/",
        "path_info": "/where/",
        "script_name": "/app",
        "reverse": "/app/where/",
    }
    # The prefix belongs to the request, not to the thread's next one.
    assert json.loads(body_of(run(layer, "/where/")))["reverse"] == "/where/"


def test_bytes_path_is_decoded_as_1x_servers_sent_it(layer):
    """A bytes path and root_path (1.x interface servers) are served, decoded from UTF-8."""
    messages = run(layer, b"/where/", root_path=b"")
    assert messages[0]["status"] == 200
    assert json.loads(body_of(messages))["path_info"] == "/where/"
    request = AsgiRequest(http_request(layer, "/app/caf\u00e9/".encode(), root_path=b"/app"))
    assert (request.path, request.script_name, request.path_info) == (
        "/app/caf\u00e9/",
        "/app",
        "/caf\u00e9/",
    )


def test_bytes_path_with_invalid_utf8_is_repercented(layer):
    """Invalid UTF-8 in a bytes path is percent-encoded again, as Django's WSGI handler does."""
    request = AsgiRequest(http_request(layer, b"/bad/\xff/"))
    assert request.path == "/bad/%FF/"


def test_bytes_method_is_decoded(layer):
    """A bytes method (1.x interface servers) is decoded; a non-text path is still a 400."""
    assert AsgiRequest(http_request(layer, method=b"post")).method == "POST"
    with pytest.raises(BadRequest):
        AsgiRequest(http_request(layer, path=5))
    with pytest.raises(BadRequest):
        AsgiRequest(http_request(layer, root_path=5))


def test_undecodable_query_string_gives_400(layer):
    """A query string that cannot be decoded is answered with 400."""
    messages = run(layer, query_string=b"q=\xff\xfe")
    assert messages[0]["status"] == 400


def test_body_timeout_gives_408(layer):
    """A request whose body times out is answered with 408."""

    class Impatient(AsgiRequest):
        body_receive_timeout = 0

    class Handler(AsgiHandler):
        request_class = Impatient

    name = body_channel(layer, {"content": b"x", "more_content": True})
    messages = list(Handler()(http_request(layer, method="POST", body_channel=name)))
    assert messages[0]["status"] == 408


def test_aborted_request_sends_nothing(layer):
    """An aborted request sends no reply but still fires request_finished."""
    name = body_channel(layer, {"closed": True})
    with SignalCounter(signals.request_finished) as finished:
        assert run(layer, method="POST", body_channel=name) == []
    assert len(finished.calls) == 1


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000)
def test_body_over_limit_gives_413(layer):
    """A body over DATA_UPLOAD_MAX_MEMORY_SIZE is answered with 413."""
    name = body_channel(layer, *[{"content": b"a" * 600, "more_content": True}] * 3)
    messages = run(layer, "/body/", method="POST", body_channel=name)
    assert messages[0]["status"] == 413


def test_view_error_gives_500(layer):
    """A view that raises is answered with Django's 500 page."""
    messages = run(layer, "/boom/")
    assert messages[0]["status"] == 500
    assert b"Server Error (500)" in body_of(messages)


def test_failing_error_handling_gives_plain_500(layer):
    """When the 500 handler itself fails, a plain-text 'Internal Server Error' 500 is sent."""
    with override_settings(ROOT_URLCONF=handler_urls.BrokenErrorHandlerUrls):
        messages = run(layer, "/boom/")
    assert messages[0]["status"] == 500
    assert (b"Content-Type", b"text/plain") in messages[0]["headers"]
    assert body_of(messages) == b"Internal Server Error"


def test_failing_error_handling_shows_traceback_under_debug(layer):
    """With DEBUG_PROPAGATE_EXCEPTIONS, a view error is answered 500 with its traceback."""
    # Django's error handling re-raises instead of answering.
    with override_settings(DEBUG=True, DEBUG_PROPAGATE_EXCEPTIONS=True):
        messages = run(layer, "/boom/")
    assert messages[0]["status"] == 500
    assert b"ValueError: the view failed" in body_of(messages)


def test_response_later_sends_nothing(layer):
    """A view raising ResponseLater sends no reply but request_finished still fires."""
    with SignalCounter(signals.request_finished) as finished:
        assert run(layer, "/later/") == []
    assert len(finished.calls) == 1


@override_settings(
    MIDDLEWARE=[
        "django.contrib.sessions.middleware.SessionMiddleware",
        "tests.handler_urls.CatchEverythingMiddleware",
    ]
)
def test_response_later_passes_exception_middleware(layer):
    """ResponseLater bypasses process_exception middleware, which still sees other errors."""
    assert run(layer, "/later/") == []
    # The middleware does see other exceptions.
    messages = run(layer, "/boom/")
    assert json.loads(body_of(messages)) == {"caught": "ValueError"}


def test_tutorial_http_consumer(layer):
    """The tutorial's consumer sends an encode_response() reply on the reply channel."""

    # The tutorial's first consumer, verbatim but for the import.
    def http_consumer(message):
        response = HttpResponse("Hello world! You asked for %s" % message.content["path"])
        for chunk in AsgiHandler.encode_response(response):
            message.reply_channel.send(chunk)

    message = http_request(layer, "/some/path")
    http_consumer(message)
    sent = replies(layer)
    assert len(sent) == 1
    assert sent[0]["status"] == 200
    assert sent[0]["content"] == b"Hello world! You asked for /some/path"
    # Through the layer (msgpack) the tuples arrive as lists.
    assert [b"Content-Type", b"text/html; charset=utf-8"] in sent[0]["headers"]


# -- ViewConsumer ------------------------------------------------------------------


def test_view_consumer_sends_replies(layer):
    """ViewConsumer sends every chunk of the response on the message's reply channel."""
    message = http_request(layer, "/big/")
    ViewConsumer()(message)
    sent = []
    while True:
        channel, reply = layer.receive([PREFIX])
        if reply is None:
            break
        assert channel == message.content["reply_channel"]
        sent.append(reply)
    assert [len(m["content"]) for m in sent] == [CHUNK, CHUNK, 10]
    assert sent[0]["status"] == 200


def test_view_consumer_response_later_then_other_consumer(layer):
    """After ResponseLater, ViewConsumer sends nothing and another consumer may reply later."""
    message = http_request(layer, "/later/")
    ViewConsumer()(message)
    assert replies(layer) == []
    # Another consumer answers later, on the same reply channel.
    for chunk in AsgiHandler.encode_response(HttpResponse("done")):
        message.reply_channel.send(chunk)
    assert body_of(replies(layer)) == b"done"


def test_view_consumer_waits_for_room(layer):
    """ViewConsumer waits for room on a full reply channel and sends every chunk in turn."""
    # Capacity 1 on the reply prefix; a reader drains it in another thread.
    full_layer = InMemoryChannelLayer(channel_capacity={PREFIX: 1})
    message = http_request(full_layer, "/big/")
    received: list[dict[str, Any]] = []

    def reader() -> None:
        while True:
            _, reply = full_layer.receive([PREFIX], block=True)
            if reply is None:
                return
            received.append(reply)
            if not reply.get("more_content"):
                return

    thread = threading.Thread(target=reader)
    thread.start()
    ViewConsumer()(message)
    thread.join()
    assert [len(m["content"]) for m in received] == [CHUNK, CHUNK, 10]


def test_view_consumer_gives_up_on_a_gone_client(layer):
    """ViewConsumer gives up after send_timeout on a full channel and finishes the request."""
    full_layer = InMemoryChannelLayer(channel_capacity={PREFIX: 1})
    consumer = ViewConsumer()
    consumer.send_timeout = 0.01
    with SignalCounter(signals.request_finished) as finished:
        consumer(http_request(full_layer, "/big/"))
    assert len(finished.calls) == 1
    assert len(replies(full_layer)) == 1


def test_view_consumer_waits_on_a_blocked_reply_channel_past_send_timeout(layer):
    """ViewConsumer keeps waiting on a blocked reply channel past send_timeout,
    and sends everything once it is unblocked.
    """
    # The interface blocked the channel: its client is slow, not gone.
    blocked_layer = InMemoryChannelLayer()
    message = http_request(blocked_layer, "/big/")
    channel = message.reply_channel.name
    blocked_layer.block_local_channel(channel)
    consumer = ViewConsumer()
    consumer.send_timeout = 0.01  # each wait ends at once, and is renewed
    done = threading.Event()
    thread = threading.Thread(target=lambda: (consumer(message), done.set()))
    thread.start()
    assert not done.wait(0.3)  # still waiting, many send_timeouts later
    assert replies(blocked_layer) == []
    blocked_layer.unblock_local_channel(channel)  # the client caught up
    thread.join(30)
    assert done.is_set()
    assert [len(m["content"]) for m in replies(blocked_layer)] == [CHUNK, CHUNK, 10]


def test_view_consumer_gives_up_on_a_channel_blocked_too_long(layer):
    """ViewConsumer gives up on a channel blocked past blocked_timeout, sending nothing."""
    blocked_layer = InMemoryChannelLayer()
    message = http_request(blocked_layer, "/big/")
    blocked_layer.block_local_channel(message.reply_channel.name)
    consumer = ViewConsumer()
    consumer.send_timeout = 0.01
    consumer.blocked_timeout = 0.05
    with SignalCounter(signals.request_finished) as finished:
        consumer(message)
    assert len(finished.calls) == 1
    assert replies(blocked_layer) == []


def test_view_consumer_without_wait_support_backs_off(layer):
    """Without send_prepared_wait, ViewConsumer backs off and gives up on a full channel."""

    class NoWait(InMemoryChannelLayer):
        send_prepared_wait = None  # type: ignore[assignment]

    full_layer = NoWait(channel_capacity={PREFIX: 1})
    consumer = ViewConsumer()
    consumer.send_timeout = 0.02
    consumer(http_request(full_layer, "/big/"))
    assert len(replies(full_layer)) == 1


@override_settings(SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies")
def test_isolation_between_concurrent_requests(layer):
    """Concurrent requests on one ViewConsumer each reply to their own client with their own
    session and headers.
    """
    # CVE-2020-35681: one consumer, many threads, every request in flight at
    # once; each reply goes to its own client with its own session.
    count = 16
    consumer = ViewConsumer()
    handler_urls.barrier = threading.Barrier(count, timeout=30)
    messages = [
        http_request(
            layer,
            "/isolation/",
            reply_channel="http.response.c%02d!%s" % (i, random_string()),
            headers=[
                [b"host", b"testserver"],
                [b"cookie", b"sessionid=session-%02d" % i],
                [b"x-request-id", b"request-%02d" % i],
            ],
        )
        for i in range(count)
    ]
    errors: list[BaseException] = []

    def work(message: Message) -> None:
        try:
            consumer(message)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(m,)) for m in messages]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        handler_urls.barrier = None
    assert errors == []
    for i in range(count):
        _, reply = layer.receive(["http.response.c%02d!" % i])
        assert reply is not None
        assert json.loads(reply["content"]) == {
            "session_key": "session-%02d" % i,
            "request_id": "request-%02d" % i,
        }
        assert layer.receive(["http.response.c%02d!" % i]) == (None, None)
