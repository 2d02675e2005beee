"""
One HTTP request's life as ASGI 1.0 messages: :class:`WebRequest` sends
``http.request``, checks and writes the application's replies at the
client's pace, and sends ``http.disconnect`` when routed.  Reactor thread
only.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.http_headers import Headers
from twisted.web.iweb import INonQueuedRequestFactory
from zope.interface import provider

from chanserv.exceptions import ChannelFull, MessageTooLarge
from chanserv.layers.base import random_string
from chanserv.log import Logger
from chanserv.server.body import BodyStreamer
from chanserv.server.delivery import send_until_delivered
from chanserv.server.proxy import HostPort, address_pair, forwarded
from chanserv.server.validate import BadReply, checked_content, checked_start, parse_target
from chanserv.types import Content

__all__ = ["BLOCK_GRACE", "BODY_CHANNEL_PATTERN", "HARD_FACTOR", "WebRequest"]

log = Logger()

#: Past this many times ``http_send_queue_size`` waiting for its client, a
#: response's connection is cut (see :data:`BLOCK_GRACE`).
HARD_FACTOR = 4

#: Seconds after its reply channel is blocked during which what was already
#: on its way (sent before the block took effect) is written, however much:
#: the in-memory layer paces a sender to the reactor, but a Redis inbox may
#: hold a backlog of the channel's messages when the block lands.
BLOCK_GRACE = 1.0

#: ``new_channel`` pattern of body channels (a CSPRNG suffix is added here,
#: as the layers' ``new_channel`` does, without a call to the layer's
#: synchronous face from the reactor thread).
BODY_CHANNEL_PATTERN = "http.request.body?"

#: Request headers never forwarded to the application: daphne let clients set
#: ``root_path`` through this one (security.md §1a).
_UNTRUSTED_HEADERS = frozenset((b"daphne-root-path",))

#: Reason phrases of RFC 9110 where Twisted still has older ones, so a
#: refusal reads the same whether the channel or the request writes it.
_REASONS = {408: b"Request Timeout", 413: b"Content Too Large"}

#: Headers that may appear only once in a WebSocket upgrade (security.md §1a).
_UNIQUE_UPGRADE_HEADERS = (b"origin", b"sec-websocket-key", b"sec-websocket-version")


def _tokens(values: list[bytes]) -> set[bytes]:
    return {t.strip(b" \t").lower() for v in values for t in v.split(b",")}


@provider(INonQueuedRequestFactory)
class WebRequest(http.Request):
    """
    An HTTP request handed to the application over the channel layer.

    Besides ``twisted.web.http.Request``'s attributes (``method``, ``uri``,
    ``path`` -- the raw path --, ``clientproto``, ``requestHeaders``), the
    WebSocket side may read:

    - ``header_pairs``: every request header as ``(lowercased name, value)``
      bytes, in order, duplicates kept, already validated;
    - ``asgi_path`` (decoded str), ``query_string`` (bytes);
    - ``wants_websocket``: True for a valid ``Upgrade: websocket`` request.
    """

    channel: Any  # an HTTPProtocol; None once the connection is lost
    reply_channel: str | None = None
    wants_websocket = False
    dispatched = False  # http.request built and sent (or being sent)
    delivered = False  # ... and accepted by the layer
    head_done = False
    body_complete = False
    response_started = False
    connection_lost = False  # connectionLost was called: nothing more can be written
    asgi_path = ""
    query_string = b""
    _streamer: BodyStreamer | None = None
    _declared_length: int | None = None
    _disconnect_sent = False
    _replies_blocked_since: float | None = None  # reply channel blocked: the client is behind
    _replies_block_held = False  # ... and the layer holds the application back
    _app_active_at = 0.0
    _body_active_at = 0.0
    _started_at = 0.0  # the first byte of the request

    def __init__(self, channel: Any) -> None:
        # Any: channel is an HTTP/1.1 HTTPProtocol or an HTTP/2 StreamChannel, which import this
        # module (so it may not name them); either has the factory, discarding and reject read
        # here.
        super().__init__(channel, parsePOSTFormSubmission=False)
        # Kept: Twisted drops self.channel when the connection is lost.
        self._factory = channel.factory
        self.header_pairs: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._body_size = 0
        self.body_received = 0

    # -- head ------------------------------------------------------------------

    def request_line_received(self, method: bytes, target: bytes, version: bytes) -> None:
        """
        Record the request line (already checked by the channel).

        :raises chanserv.server.validate.TargetError: a target that cannot be
            served.
        """
        self.method, self.uri, self.clientproto = method, target, version
        self.args = {}
        self.path, self.query_string, self.asgi_path = parse_target(method, target)

    def head_problem(self, length: int | None) -> tuple[int, str] | None:
        """
        ``(status, reason)`` if the complete head must be refused, else None.

        :param length: the body length: ``Content-Length``, None for chunked.
        """
        version = self.clientproto
        counts: dict[bytes, int] = {}
        for name, _ in self.header_pairs:
            counts[name] = counts.get(name, 0) + 1
        hosts = counts.get(b"host", 0)
        if hosts > 1 or (version == b"HTTP/1.1" and hosts == 0):
            return 400, "Exactly one Host header is required"
        upgrade = [v for n, v in self.header_pairs if n == b"upgrade"]
        if upgrade and b"websocket" in _tokens(upgrade):
            connection = [v for n, v in self.header_pairs if n == b"connection"]
            if self.method != b"GET" or version != b"HTTP/1.1":
                return 400, "A WebSocket upgrade must be a GET over HTTP/1.1"
            if b"upgrade" not in _tokens(connection):
                return 400, "A WebSocket upgrade needs Connection: Upgrade"
            if length is None or length > 0:
                return 400, "A WebSocket upgrade cannot have a body"
            for name in _UNIQUE_UPGRADE_HEADERS:
                if counts.get(name, 0) > 1:
                    return 400, "Duplicate %s header" % (name.decode("ascii"),)
            self.wants_websocket = True
        max_body = self._factory.config.max_body_size
        if max_body is not None and length is not None and length > max_body:
            return 413, "Request body too large"
        return None

    def head_complete(self, started: float) -> None:
        """
        The head passed every check; the body (if any) follows.

        :param started: reactor time of the request's first byte, from which
            its deadline (``request_timeout``) is counted.
        """
        self.head_done = True
        self._started_at = started
        self._body_active_at = self._factory.clock.seconds()

    def asgi_headers(self) -> list[list[bytes]]:
        """The headers for ``http.request``: names with ``_`` dropped (CVE-2015-0219)."""
        return [
            [name, value]
            for name, value in self.header_pairs
            if b"_" not in name and name not in _UNTRUSTED_HEADERS
        ]

    def client_and_scheme(self) -> tuple[HostPort | None, str]:
        """``client`` and ``scheme`` for the message, proxy headers applied if enabled."""
        client = address_pair(self.client)
        secure = self.isSecure()
        if self._factory.config.proxy_headers:
            client, secure = forwarded(self.header_pairs, client, secure)
        return client, "https" if secure else "http"

    # -- body ------------------------------------------------------------------

    def gotLength(self, length: int | None) -> None:
        # The body is kept in self._body (or streamed), never in a temp file.
        self.content = BytesIO()

    def handleContentChunk(self, data: bytes) -> None:
        channel = self.channel
        if self.finished or channel is None or channel.discarding:
            return
        factory = channel.factory
        config = factory.config
        now = factory.clock.seconds()
        self.body_received += len(data)
        self._body_active_at = now
        if config.max_body_size is not None and self.body_received > config.max_body_size:
            channel.reject(413, "Request body too large")
            return
        if self._streamer is not None:
            self._app_active_at = now  # an upload in progress is progress
            self._streamer.feed(data)
            return
        self._body.append(data)
        self._body_size += len(data)
        if self._body_size > config.body_inline_size:
            self._dispatch(streaming=True)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        # Called by the channel once the whole body has arrived.  The request
        # line was recorded earlier (request_line_received).
        self.body_complete = True
        if self._streamer is not None:
            self._streamer.finish()
        elif not self.dispatched:
            self.process()

    def process(self) -> None:
        if self.wants_websocket:
            self._upgrade()
        else:
            self._dispatch(streaming=False)

    def body_failed(self, code: int, reason: str) -> None:
        """
        The body of a dispatched request went wrong (too large, malformed, too
        slow): the body channel gets ``{"closed": True}``, the client ``code``
        (or a cut connection if the response has started).  Logged at debug
        level, like the channel's other refusals (a missed deadline is logged
        by the channel).
        """
        log.debug(
            "Request body on {channel} refused: {reason}", channel=self.reply_channel, reason=reason
        )
        if self._streamer is not None:
            self._streamer.abort()
        if self.response_started:
            self._abort_connection()
        else:
            self._respond_error(code, reason)

    def _body_send_failed(self, failure: Failure) -> None:
        log.failure("Sending a request body chunk failed", failure)
        self.body_failed(500, "Internal Server Error")

    # -- dispatch ----------------------------------------------------------------

    def _dispatch(self, streaming: bool) -> None:
        channel = self.channel
        factory = self._factory
        config = factory.config
        self.dispatched = True
        self._app_active_at = factory.clock.seconds()
        body = b"".join(self._body)
        rest = b""
        self._body = []
        self._body_size = 0
        body_channel = None
        if streaming:
            body, rest = body[: config.body_inline_size], body[config.body_inline_size :]
            body_channel = BODY_CHANNEL_PATTERN + random_string(16)
            self._streamer = BodyStreamer(
                factory.layer,
                body_channel,
                config.body_chunk_size,
                channel.read_control,
                on_error=self._body_send_failed,
                started=False,
                clock=factory.clock,
            )
            self._streamer.feed(rest)
        self.reply_channel = factory.replies.new_reply_channel()
        factory.replies.register(self.reply_channel, self)
        client, scheme = self.client_and_scheme()
        message = {
            "reply_channel": self.reply_channel,
            "http_version": self.clientproto.decode("ascii")[5:],
            "method": self.method.decode("ascii"),
            "scheme": scheme,
            "path": self.asgi_path,
            "query_string": self.query_string,
            "root_path": config.root_path,
            "headers": self.asgi_headers(),
            "body": body,
            "body_channel": body_channel,
            "client": client,
            "server": address_pair(self.host),
        }
        factory.requests_sent += 1
        d: Deferred[None] = factory.layer.send_twisted("http.request", message)
        d.addCallbacks(self._request_sent, self._request_failed)
        d.addErrback(lambda f: log.failure("Handling the http.request send failed", f))

    def _request_sent(self, _: None) -> None:
        self.delivered = True
        if self.connection_lost or self.finished:
            # Gone (or answered by a timeout) while the send was in flight.
            if self._streamer is not None:
                self._streamer.stop()
            self._send_disconnect()
        elif self._streamer is not None:
            self._streamer.start()

    def _request_failed(self, failure: Failure) -> None:
        self._unregister()
        if self._streamer is not None:
            self._streamer.stop()
        if failure.check(ChannelFull):
            self._factory.requests_full += 1
            log.warn("http.request is full: {path} answered 503", path=self.asgi_path)
            code, text = 503, "Request queue full."
        elif failure.check(ConnectionError):
            # The layer's store (Redis) is unreachable: a retryable outage.
            log.warn(
                "Channel layer unavailable ({error}): {path} answered 503",
                error=failure.value,
                path=self.asgi_path,
            )
            code, text = 503, "Channel layer unavailable."
        elif failure.check(MessageTooLarge):
            log.error(
                "http.request for {path} too large for the layer: {f}",
                path=self.asgi_path,
                f=failure.value,
            )
            code, text = 500, "Internal Server Error"
        else:
            log.failure("Sending http.request failed", failure)
            code, text = 500, "Internal Server Error"
        self._respond_error(code, text)

    def _upgrade(self) -> None:
        channel = self.channel
        websocket_factory = self._factory.websocket_factory
        if websocket_factory is None:
            self._respond_error(400, "WebSocket connections are not served here")
            return
        channel.hand_over()
        try:
            websocket_factory.upgrade(self)
        except Exception:
            log.failure("WebSocket upgrade failed")
            # A TCP or TLS transport: abortConnection is not on ITransport.
            transport: Any = getattr(channel, "transport", None) or self.transport
            if transport is not None:
                transport.abortConnection()

    # -- replies -------------------------------------------------------------------

    def deliver(self, message: Content) -> None:
        """Write one Response or Response Chunk message (``ReplyConnection``)."""
        if self.finished or self.connection_lost:
            return
        self._app_active_at = self._factory.clock.seconds()
        if not self.response_started:
            try:
                status, headers, declared = checked_start(message)
                content = checked_content(message)
            except BadReply as e:
                log.error(
                    "Invalid response on {channel} for {path}: {problem}; answering 500",
                    channel=self.reply_channel,
                    path=self.asgi_path,
                    problem=str(e),
                )
                self._respond_error(500, "Internal Server Error")
                return
            self._start_response(status, headers, declared)
        else:
            if "status" in message:
                log.error(
                    "Second response (a status in a chunk) on {channel}: connection closed",
                    channel=self.reply_channel,
                )
                self._abort_connection()
                return
            try:
                content = checked_content(message)
            except BadReply as e:
                log.error(
                    "Invalid response chunk on {channel}: {problem}",
                    channel=self.reply_channel,
                    problem=str(e),
                )
                self._abort_connection()
                return
        more = message.get("more_content", False)
        if content and not self._write_checked(content, more):
            return
        if not more:
            self._finish_response()

    def _start_response(
        self, status: int, headers: list[tuple[bytes, bytes]], declared: int | None
    ) -> None:
        self.response_started = True
        self.setResponseCode(status)
        self._declared_length = declared
        for name, value in headers:
            if name == b"transfer-encoding":
                log.debug(
                    "Application Transfer-Encoding header dropped on {channel}",
                    channel=self.reply_channel,
                )
                continue
            if name == b"connection" and b"close" in _tokens([value]):
                self.channel.persistent = False
            self.responseHeaders.addRawHeader(name, value)
        if not self.body_complete or not self.channel.persistent:
            self.responseHeaders.setRawHeaders(b"connection", [b"close"])

    def _write_checked(self, content: bytes, more: bool) -> bool:
        channel = self.channel
        queued = channel.account_written(len(content))
        limit = self._factory.config.http_send_queue_size
        if queued > limit and more:
            self._block_replies()
        if queued > HARD_FACTOR * limit and not self._in_block_grace():
            self._overflow(queued, limit)
            return False
        declared = self._declared_length
        if declared is not None and self.sentLength + len(content) > declared:
            log.error(
                "Response on {channel} longer than its Content-Length: connection closed",
                channel=self.reply_channel,
            )
            self.write(content[: declared - self.sentLength])
            self._abort_connection()
            return False
        self.write(content)
        return True

    def _overflow(self, queued: int, limit: int) -> None:
        # The reply channel was blocked long ago (or cannot be) and still
        # the response piles up: cut, count, log once.
        log.warn(
            "Client of {path} does not take its response: {queued} bytes waiting, over "
            "{factor} x {limit}: connection cut",
            path=self.asgi_path,
            queued=queued,
            factor=HARD_FACTOR,
            limit=limit,
        )
        if self.reply_channel is not None:
            self._factory.replies.overflowed(self.reply_channel, 1)
        self.channel.abort()

    def _block_replies(self) -> None:
        """The client is behind: the application waits (reply channel blocked)."""
        if self._replies_blocked_since is not None or self.reply_channel is None:
            return
        self._replies_blocked_since = self._factory.clock.seconds()
        self._replies_block_held = self._factory.replies.block(self.reply_channel)

    def _in_block_grace(self) -> bool:
        # What arrives this soon after a block was sent before it took effect.
        since = self._replies_blocked_since
        return (
            since is not None
            and self._replies_block_held
            and self._factory.clock.seconds() - since < BLOCK_GRACE
        )

    def resume_replies(self) -> None:
        """
        The client may have caught up (called by the channel when its
        transport drains or an HTTP/2 stream may send again, and by the
        sweep): unblock the reply channel if at most half of
        ``http_send_queue_size`` still waits for the client.
        """
        if self._replies_blocked_since is None:
            return
        channel = getattr(self, "channel", None)
        if channel is None:
            return
        if channel.unsent_bytes() > self._factory.config.http_send_queue_size // 2:
            return
        self._replies_blocked_since = None
        if self.reply_channel is not None and self.reply_channel in self._factory.replies:
            self._factory.replies.unblock(self.reply_channel)

    def _respond_error(self, code: int, text: str) -> None:
        """Answer ``code`` with a plain-text body, or cut the connection if too late."""
        if self.finished or self.connection_lost:
            return
        if self.startedWriting:
            self._abort_connection()
            return
        self.response_started = True
        self.responseHeaders = Headers()
        self.setResponseCode(code, _REASONS.get(code))
        body = (text + "\n").encode("utf-8")
        self.responseHeaders.setRawHeaders(b"content-type", [b"text/plain; charset=utf-8"])
        self.responseHeaders.setRawHeaders(b"content-length", [b"%d" % len(body)])
        if (code >= 500 and code != 503) or not self.body_complete:
            self.channel.persistent = False
        if not self.channel.persistent:
            self.responseHeaders.setRawHeaders(b"connection", [b"close"])
        self._declared_length = None
        self.write(body)
        self._finish_response()

    def _finish_response(self) -> None:
        channel = self.channel
        if not self.body_complete:
            # The rest of the body will never be read: the connection cannot
            # carry another request.
            channel.persistent = False
            channel.stop_reading()
            if self._streamer is not None:
                self._streamer.abort()
        declared = self._declared_length
        if (
            declared is not None
            and self.sentLength < declared
            and self.method != b"HEAD"
            and self.code not in http.NO_BODY_CODES
        ):
            log.error(
                "Response on {channel} shorter than its Content-Length: connection closed",
                channel=self.reply_channel,
            )
            channel.persistent = False
        self.finish()

    def finish(self) -> None:
        self._unregister()
        self._send_disconnect()
        super().finish()

    def _abort_connection(self) -> None:
        channel = self.channel
        if channel is None:
            return
        channel.persistent = False
        if self._streamer is not None and not self.body_complete:
            self._streamer.abort()
        channel.stop_reading()
        channel.loseConnection()

    # -- the end -----------------------------------------------------------------

    def _unregister(self) -> None:
        # The layer forgets the channel, block included (discard_local_channel).
        self._replies_blocked_since = None
        if self.reply_channel is not None:
            self._factory.replies.unregister(self.reply_channel)

    def _send_disconnect(self) -> None:
        if self._disconnect_sent or not self.delivered:
            return
        self._disconnect_sent = True
        factory = self._factory
        routed = factory.routed_channels
        if routed is not None and "http.disconnect" not in routed:
            return  # no consumer takes it (see HTTPFactory's routed_channels)
        d = send_until_delivered(
            factory.layer,
            factory.clock,
            "http.disconnect",
            {"reply_channel": self.reply_channel, "path": self.asgi_path},
            factory.layer.expiry + 1,
        )
        d.addErrback(self._disconnect_failed)

    def _disconnect_failed(self, failure: Failure) -> None:
        self._factory.disconnects_lost += 1
        if failure.check(ChannelFull):
            log.error(
                "http.disconnect stayed full for the layer's expiry: lost for {channel}",
                channel=self.reply_channel,
            )
        elif failure.check(ConnectionError):
            log.error(
                "Channel layer unavailable ({error}) for the layer's expiry: "
                "http.disconnect lost for {channel}",
                error=failure.value,
                channel=self.reply_channel,
            )
        else:
            log.failure("Sending http.disconnect failed", failure)

    def layer_state_lost(self) -> None:
        """
        The layer lost its state, and with it maybe this request's reply
        (``ReplyConnection``): 503 if the response has not started, else
        the connection is cut.
        """
        log.info("Channel layer lost its state: {path} answered 503", path=self.asgi_path)
        self._respond_error(503, "Channel layer lost its state; please retry")

    def connectionLost(self, reason: Failure) -> None:
        self.connection_lost = True
        if self.dispatched and not self.finished:
            self._unregister()
            if self._streamer is not None:
                if self.body_complete:
                    self._streamer.stop()
                else:
                    self._streamer.abort()
            self._send_disconnect()
        super().connectionLost(reason)

    def body_deadline(self, now: float) -> float:
        """
        Reactor time by which the body must be complete, as of ``now``:
        ``request_timeout`` after the request's first byte, plus ``1 /
        request_min_rate`` seconds per body byte received so far, plus the
        time the server kept the connection paused (its body channel full).
        """
        config = self._factory.config
        deadline = self._started_at + config.request_timeout
        if config.request_min_rate:
            deadline += self.body_received / config.request_min_rate
        if self._streamer is not None:
            deadline += self._streamer.paused_seconds(now)
        return deadline

    def check_timeouts(self, now: float) -> None:
        """
        Apply the body deadline, the body idle timeout and the application
        timeout at reactor time ``now`` (the periodic sweep's; reactor
        thread).  A missed body deadline is answered by the channel
        (``deadline_missed``): 408 and a closed connection, ``{"closed":
        True}`` on the body channel of a streamed body.
        """
        if self.finished or self.connection_lost:
            return
        config = self._factory.config
        channel = self.channel
        if self.head_done and not self.body_complete:
            streamer = self._streamer
            if streamer is not None and streamer.paused:
                # The server stopped reading, not the client.
                self._body_active_at = now
            if now >= self.body_deadline(now):
                channel.deadline_missed("request", "Request not received in time")
                return
            if now - self._body_active_at >= config.body_timeout:
                channel.deadline_missed("body_idle", "Request body timeout")
                return
        if not self.dispatched:
            return
        if self._replies_blocked_since is not None:
            self.resume_replies()  # an HTTP/2 stream may have drained without a signal
        blocked = self._replies_blocked_since
        if blocked is not None:
            if now - blocked >= config.http_timeout:
                # On HTTP/1.1 the channel's own check (the transport paused
                # for that long) comes first; this is for an HTTP/2 stream
                # whose window the client never opens again.
                log.info(
                    "Client took nothing of {path} for {seconds}s: connection cut",
                    path=self.asgi_path,
                    seconds=now - blocked,
                )
                channel.abort()
                return
            self._app_active_at = now  # the client is slow, not the application
        if now - self._app_active_at >= config.http_timeout:
            if not self.response_started:
                log.info("No response for {path} in time: 503", path=self.asgi_path)
                self._respond_error(503, "Worker server failed to respond within time limit.")
            else:
                log.info("Response for {path} stalled: connection closed", path=self.asgi_path)
                self._abort_connection()
