"""
Django's view layer behind the ``http.request`` channel: the request built
from ASGI 1.0 messages, the handler that runs middleware and views and
encodes the response, and the default ``http.request`` consumer.  Pool
threads only, never the reactor thread: reading a streamed body and the
views block.
"""

from __future__ import annotations

import io
import logging
import sys
import tempfile
import threading
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Generator, Iterator
from typing import IO, Any

from django import http
from django.conf import settings
from django.core import signals
from django.core.exceptions import BadRequest, RequestDataTooBig
from django.urls import set_script_prefix
from django.utils.encoding import repercent_broken_unicode
from django.utils.functional import cached_property

from chanserv._compat.django import Handler, StreamedRequest, set_response_handler
from chanserv.channel import BLOCKED_TIMEOUT, send_waiting
from chanserv.exceptions import ChannelFull, RequestAborted, RequestTimeout
from chanserv.exceptions import ResponseLater as _ResponseLater
from chanserv.log import Logger
from chanserv.message import Message
from chanserv.types import Content

__all__ = ["AsgiHandler", "AsgiRequest", "ViewConsumer"]

log = Logger()
request_logger = logging.getLogger("django.request")
#: Channels 1.x's module logger (chanserv logs through :data:`log`).
logger = logging.getLogger("django.channels")

#: Attribute set on a request whose view raised ResponseLater.
_RESPONSE_LATER_FLAG = "_chanserv_response_later"


def _latin1(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("latin1")
    if isinstance(value, str):
        return value
    raise BadRequest("header names and values must be bytes, not %r" % (type(value).__name__,))


def _text_path(value: object) -> object:
    """
    A ``path``/``root_path`` as ``str``: interface servers of Channels 1.x
    days may send ``bytes`` -- the path already percent-decoded, as ASGI 1
    says, only not yet decoded from UTF-8.  They are decoded as Django's
    WSGI handler decodes ``PATH_INFO``: invalid UTF-8 sequences are
    percent-encoded again rather than refused.  Other values pass unchanged.
    """
    if isinstance(value, (bytes, bytearray)):
        return repercent_broken_unicode(bytes(value)).decode("utf-8")
    return value


class AsgiRequest(StreamedRequest):
    """
    A Django request built from an ``http.request`` message.

    ``META`` follows WSGI: ``REQUEST_METHOD``, ``QUERY_STRING`` (UTF-8
    decoded), ``SCRIPT_NAME`` (``root_path``, or ``FORCE_SCRIPT_NAME`` when
    set, as Django does), ``PATH_INFO``, ``REMOTE_*`` from ``client``,
    ``SERVER_NAME``/``SERVER_PORT`` from ``server`` (``"unknown"``/``"0"``
    without it), ``CONTENT_TYPE``, ``CONTENT_LENGTH`` and ``HTTP_*``.
    Repeated headers are joined with ``","`` (``"; "`` for ``Cookie``), in
    linear time; header names holding ``_`` are ignored, so ``X_Foo`` can
    never pose as ``X-Foo`` (CVE-2015-0219, CVE-2026-3902).  Legacy dict
    headers ``{name: value}`` are accepted, and a ``bytes`` ``path``,
    ``root_path`` or ``method``, as 1.x interface servers may send them.

    The body is the message's ``body`` followed by every chunk read from its
    ``body_channel`` until one has ``more_content`` false.  It is spooled:
    past ``FILE_UPLOAD_MAX_MEMORY_SIZE`` it goes to a temporary file.  Except
    for ``multipart/form-data`` (whose file parts Django limits separately),
    a body -- declared or actual -- larger than
    ``DATA_UPLOAD_MAX_MEMORY_SIZE`` stops the reading at once.  A request
    with a body and no ``Content-Length`` (a chunked upload) gets
    ``CONTENT_LENGTH`` set to the size read, which Django's multipart parser
    needs.

    Construction blocks while the body arrives; call it in a worker thread.

    :raises RequestTimeout: the body did not complete within
        :attr:`body_receive_timeout` seconds.
    :raises RequestAborted: a body chunk said ``closed``: the client left.
    :raises RequestDataTooBig: the body is over ``DATA_UPLOAD_MAX_MEMORY_SIZE``.
    :raises UnicodeDecodeError: the query string is not UTF-8.
    :raises BadRequest: the message is malformed.
    """

    ResponseLater = _ResponseLater

    #: Seconds the whole body may take to arrive over ``body_channel``.
    body_receive_timeout: float = 60

    #: The clock the body deadline is measured with.
    clock: Callable[[], float] = staticmethod(time.monotonic)

    def __init__(self, message: Message) -> None:
        self.message = message
        self.reply_channel = getattr(message, "reply_channel", None)
        self.resolver_match = None
        content = message.content if hasattr(message, "content") else message
        path = _text_path(content.get("path"))
        method = content.get("method")
        if isinstance(method, bytes):
            method = method.decode("ascii")
        if not isinstance(path, str) or not isinstance(method, str):
            raise BadRequest("an http.request message needs str 'path' and 'method'")
        root_path = _text_path(content.get("root_path"))
        if root_path is not None and not isinstance(root_path, str):
            raise BadRequest("an http.request message's 'root_path' must be str")
        self.path = path
        self.script_name = settings.FORCE_SCRIPT_NAME or root_path or ""
        self.path_info = self._strip_script_name(path, self.script_name)
        self.method = method.upper()
        query_string = content.get("query_string") or b""
        if isinstance(query_string, bytes):
            query_string = query_string.decode("utf-8")
        self.META: dict[str, Any] = {
            "REQUEST_METHOD": self.method,
            "QUERY_STRING": query_string,
            "SCRIPT_NAME": self.script_name,
            "PATH_INFO": self.path_info,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
        }
        client = content.get("client")
        if client:
            self.META["REMOTE_ADDR"] = client[0]
            self.META["REMOTE_HOST"] = client[0]
            self.META["REMOTE_PORT"] = client[1]
        server = content.get("server")
        if server:
            self.META["SERVER_NAME"] = server[0]
            self.META["SERVER_PORT"] = str(server[1])
        else:
            self.META["SERVER_NAME"] = "unknown"
            self.META["SERVER_PORT"] = "0"
        self.META.update(self._headers_meta(content.get("headers") or []))
        self.parse_content_type()
        self.set_body(self._read_body(content))

    @staticmethod
    def _strip_script_name(path: str, script_name: str) -> str:
        """``path`` without ``script_name``, cut on a segment boundary only."""
        prefix = script_name.rstrip("/")
        if prefix and (path == prefix or path.startswith(prefix + "/")):
            path = path[len(prefix) :]
        return path or "/"

    # -- headers -------------------------------------------------------------

    @staticmethod
    def _headers_meta(headers: Any) -> dict[str, str]:
        """META entries for ``headers``; every value joined once (linear)."""
        if isinstance(headers, dict):
            headers = headers.items()
        collected: defaultdict[str, list[str]] = defaultdict(list)
        for name, value in headers:
            name = _latin1(name).lower()
            # A '_' would map to the same META key as a '-': spoofing.
            if "_" in name:
                continue
            if name == "content-length":
                key = "CONTENT_LENGTH"
            elif name == "content-type":
                key = "CONTENT_TYPE"
            else:
                key = "HTTP_" + name.upper().replace("-", "_")
            collected[key].append(_latin1(value))
        meta = {key: ",".join(values) for key, values in collected.items()}
        if "HTTP_COOKIE" in meta:
            # RFC 9113 §8.2.3: split cookie fields are rejoined with "; ".
            meta["HTTP_COOKIE"] = "; ".join(collected["HTTP_COOKIE"])
        return meta

    # -- body ----------------------------------------------------------------

    def _body_limit(self) -> int | None:
        """The most body bytes read before RequestDataTooBig, or None."""
        limit: int | None = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is None or self.content_type == "multipart/form-data":
            return None
        return limit

    def _read_body(self, content: Content | Message) -> IO[bytes]:
        limit = self._body_limit()
        declared = self.META.get("CONTENT_LENGTH")
        if limit is not None and declared:
            try:
                too_big = int(declared) > limit
            except ValueError:
                too_big = False
            if too_big:
                raise RequestDataTooBig("Content-Length is over DATA_UPLOAD_MAX_MEMORY_SIZE.")
        body = content.get("body") or b""
        if not isinstance(body, bytes):
            raise BadRequest("the request body must be bytes")
        if limit is not None and len(body) > limit:
            raise RequestDataTooBig("Request body exceeded DATA_UPLOAD_MAX_MEMORY_SIZE.")
        body_channel = content.get("body_channel")
        if not body_channel:
            if body and not declared:
                self.META["CONTENT_LENGTH"] = str(len(body))
            return io.BytesIO(body)
        stream = tempfile.SpooledTemporaryFile(
            max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE, mode="w+b"
        )
        try:
            stream.write(body)
            size = len(body)
            for chunk in self._body_chunks(body_channel):
                size += len(chunk)
                if limit is not None and size > limit:
                    raise RequestDataTooBig("Request body exceeded DATA_UPLOAD_MAX_MEMORY_SIZE.")
                stream.write(chunk)
            stream.seek(0)
            if size and not declared:
                self.META["CONTENT_LENGTH"] = str(size)
        except BaseException:
            stream.close()
            raise
        return stream

    def _body_chunks(self, body_channel: str) -> Iterator[bytes]:
        """
        The contents of the chunks on ``body_channel``, up to the last one.

        Waits with the layer's bounded blocking receive (pushed wake-ups, no
        polling), as many times as it takes until the deadline.
        """
        layer = self.message.channel_layer
        deadline = self.clock() + self.body_receive_timeout
        while True:
            _, chunk = layer.receive([body_channel], block=False)
            while chunk is None:
                if self.clock() >= deadline:
                    raise RequestTimeout()
                _, chunk = layer.receive([body_channel], block=True)
            if chunk.get("closed", False):
                raise RequestAborted()
            data = chunk.get("content", b"")
            if not isinstance(data, bytes):
                raise BadRequest("a request body chunk's content must be bytes")
            if data:
                yield data
            if not chunk.get("more_content", False):
                return

    # -- HttpRequest hooks -----------------------------------------------------

    @cached_property
    def GET(self) -> http.QueryDict:
        return http.QueryDict(self.META["QUERY_STRING"])

    def transport_scheme(self) -> str:
        content = self.message.content if hasattr(self.message, "content") else self.message
        return str(content.get("scheme") or "http")

    @cached_property
    def COOKIES(self) -> dict[str, str]:
        return http.parse_cookie(self.META.get("HTTP_COOKIE", ""))

    def close(self) -> None:
        super().close()
        self.body_stream.close()


class AsgiHandler(Handler):
    """
    Runs ``http.request`` messages through Django's middleware and views.

    ``handler(message)`` returns an iterator of reply messages (a generator:
    nothing happens until it is iterated).  It calls ``set_script_prefix``,
    sends ``request_started``, builds the request and gets the response;
    closing the response (done when the iterator ends or is closed) sends
    ``request_finished``.

    - a query string that is not UTF-8 or a malformed message gives 400;
    - :class:`~chanserv.exceptions.RequestTimeout` gives 408;
    - a body over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` gives 413;
    - :class:`~chanserv.exceptions.RequestAborted` gives no reply at all;
    - :class:`~chanserv.exceptions.ResponseLater` raised by the view, past
      the exception middleware, gives no reply: another consumer answers;
    - any other error gets Django's own 500 handling, and if that fails in
      turn, a ``text/plain`` 500.

    The middleware is loaded once, on first use, under a lock.  One handler
    may run in many worker threads at once: it keeps no per-request state.
    """

    request_class = AsgiRequest

    #: Largest ``content`` of one reply message, and FileResponse's block.
    chunk_size = 512 * 1024

    def __init__(self) -> None:
        super().__init__()
        self._load_lock = threading.Lock()
        self._middleware_loaded = False

    def _ensure_middleware(self) -> None:
        if not self._middleware_loaded:
            with self._load_lock:
                if not self._middleware_loaded:
                    self.load_middleware()
                    self._middleware_loaded = True

    def __call__(self, message: Message) -> Generator[Content, None, None]:
        """The reply messages for ``message``; runs in a worker thread."""
        self._ensure_middleware()
        content = message.content if hasattr(message, "content") else message
        root_path = _text_path(content.get("root_path"))
        set_script_prefix(
            settings.FORCE_SCRIPT_NAME or (root_path if isinstance(root_path, str) else "")
        )
        signals.request_started.send(sender=self.__class__, message=message)
        response, send = self._respond(message)
        if response is None:
            signals.request_finished.send(sender=self.__class__)
            return
        try:
            if send:
                yield from self.encode_response(response)
        finally:
            response.close()

    def _respond(self, message: Any) -> tuple[http.HttpResponseBase | None, bool]:
        """
        ``(response, send)``: the response for ``message`` and whether to
        send it; ``(None, False)`` when there is no response at all.
        """
        try:
            request = self.request_class(message)
        except (UnicodeDecodeError, BadRequest):
            request_logger.warning(
                "Bad Request (%s)",
                sys.exc_info()[0].__name__,  # type: ignore[union-attr]
                exc_info=sys.exc_info(),
                extra={"status_code": 400},
            )
            response: http.HttpResponseBase = http.HttpResponseBadRequest()
        except RequestTimeout:
            response = http.HttpResponse("408 Request Timeout (upload too slow)", status=408)
        except RequestDataTooBig:
            response = http.HttpResponse("413 Payload too large", status=413)
        except RequestAborted:
            return None, False
        else:
            try:
                response = self.get_response(request)
            except Exception:
                request.close()
                response = self._plain_server_error()
            if getattr(request, _RESPONSE_LATER_FLAG, False):
                set_response_handler(response, self.__class__)
                return response, False
        set_response_handler(response, self.__class__)
        return response, True

    def view_response(self, request: http.HttpRequest) -> http.HttpResponseBase:
        # Innermost: ResponseLater from the view (or template rendering)
        # becomes a flag on the request and a placeholder response, which
        # the response middleware sees and __call__ then drops.
        try:
            return super().view_response(request)
        except _ResponseLater:
            setattr(request, _RESPONSE_LATER_FLAG, True)
            return http.HttpResponse(status=204)

    def process_exception_by_middleware(
        self, exception: Exception, request: http.HttpRequest
    ) -> http.HttpResponseBase | None:
        """ResponseLater goes past the exception middleware, untouched."""
        if isinstance(exception, _ResponseLater):
            raise exception
        response: http.HttpResponseBase | None = super().process_exception_by_middleware(
            exception, request
        )
        return response

    @staticmethod
    def _plain_server_error() -> http.HttpResponseBase:
        """Django's own error handling failed: the last-resort 500."""
        request_logger.error("Internal Server Error (error handling failed)", exc_info=True)
        return http.HttpResponseServerError(
            traceback.format_exc() if settings.DEBUG else "Internal Server Error",
            content_type="text/plain",
        )

    # -- encoding --------------------------------------------------------------

    @classmethod
    def encode_response(cls, response: http.HttpResponseBase) -> Iterator[Content]:
        """
        The ASGI 1.0 response messages for a Django ``response``.

        The first has ``status`` and ``headers``: ``(name, value)`` tuples of
        ``bytes`` as Channels 1.x made them -- names in the case the response
        gave them (``Content-Type``: some clients are not RFC-compliant about
        case), values latin-1, each cookie a ``Set-Cookie`` (without the
        leading space 1.x left in its value).  ``content`` is cut in
        :attr:`chunk_size` pieces, each message but the last with
        ``more_content`` true.  A streaming response gives a message per
        chunk and then an empty last one.  Does not close the response.
        """
        headers: list[tuple[bytes, bytes]] = []
        for name, value in response.items():
            headers.append(
                (
                    name.encode("ascii") if isinstance(name, str) else bytes(name),
                    value.encode("latin1") if isinstance(value, str) else bytes(value),
                )
            )
        for cookie in response.cookies.values():
            headers.append((b"Set-Cookie", cookie.output(header="").encode("ascii").strip()))
        message: dict[str, Any] = {"status": response.status_code, "headers": headers}
        if response.streaming:
            if isinstance(response, http.FileResponse):
                response.block_size = cls.chunk_size
            for part in response:
                for chunk, _ in cls.chunk_bytes(part):
                    if not chunk:
                        continue
                    message["content"] = chunk
                    message["more_content"] = True
                    yield message
                    message = {}
            message["content"] = b""
            message["more_content"] = False
            yield message
        else:
            for chunk, last in cls.chunk_bytes(response.content):
                message["content"] = chunk
                message["more_content"] = not last
                yield message
                message = {}

    @classmethod
    def chunk_bytes(cls, data: bytes) -> Iterator[tuple[bytes, bool]]:
        """``(chunk, is_last)`` pairs cutting ``data`` in :attr:`chunk_size` pieces."""
        if not data:
            yield data, True
            return
        view = memoryview(data)
        for position in range(0, len(data), cls.chunk_size):
            end = position + cls.chunk_size
            yield bytes(view[position:end]), end >= len(data)


class ViewConsumer:
    """
    The default ``http.request`` consumer: Django's views through
    :class:`AsgiHandler`.  Runs in a worker thread.

    Every reply message is sent at once (``immediately=True``: a streamed
    response is not held back until the consumer ends).  When the reply
    channel is full it waits for room -- through the layer's
    ``send_prepared_wait`` when it has one (woken by the layer, not polled),
    else retrying with a short bounded back-off -- for at most
    :attr:`send_timeout` seconds per message; then the client is taken to be
    gone, the rest of the response is dropped and an error is logged.

    A reply channel its interface server *blocked*
    (:class:`~chanserv.exceptions.ChannelBlocked`: the client takes the
    response more slowly than it is made) is waited on for up to
    :attr:`blocked_timeout` seconds instead: the interface unblocks it as
    the client catches up, so the response is made at the client's pace,
    and discards it when the client is gone (``--http-timeout``), which
    ends the wait -- the rest then goes to a gone channel, where the
    interface counts it.
    """

    handler_class: type[AsgiHandler] = AsgiHandler

    #: Seconds one reply message may wait for room on a full reply channel.
    send_timeout: float = 10.0

    #: Seconds one reply message may wait on a reply channel that its
    #: interface server blocked.  A safety net above the interface's
    #: ``--http-timeout`` (120), by which it cuts a client that reads
    #: nothing and so ends the block.
    blocked_timeout: float = BLOCKED_TIMEOUT

    def __init__(self) -> None:
        self.handler = self.handler_class()

    def __call__(self, message: Message, **kwargs: object) -> None:
        reply_channel = message.reply_channel
        if reply_channel is None:
            log.error("http.request message with no reply_channel dropped")
            return
        layer = reply_channel.channel_layer
        replies = self.handler(message)
        try:
            for reply in replies:
                if not self._send(layer, reply_channel.name, reply):
                    log.error(
                        "Reply channel {channel} stayed full or blocked too long; the "
                        "client is gone, the rest of its response was dropped",
                        channel=reply_channel.name,
                    )
                    return
        finally:
            replies.close()

    def _send(self, layer: Any, channel: str, reply: Content) -> bool:
        """Send ``reply`` now, or wait a bounded time for room; False if full."""
        layer.valid_channel_name(channel)
        try:
            send_waiting(
                layer, channel, layer.prepare(reply), self.send_timeout, self.blocked_timeout
            )
            return True
        except ChannelFull:
            return False
