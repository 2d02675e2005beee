"""
HTTP/1.1 on twisted.web, hardened: :class:`HTTPProtocol` refuses what
Twisted's parser lets through, serves pipelined requests in order, hands
WebSocket upgrades over and negotiates ALPN; :class:`HTTPFactory` sweeps
the deadlines.  Reactor thread only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IAddress,
    IHandshakeListener,
    IProtocolNegotiationFactory,
    IReactorTime,
)
from twisted.internet.protocol import connectionDone
from twisted.protocols import basic
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.http_headers import Headers
from zope.interface import implementer

from chanserv._compat.twisted import HookedHTTPChannel
from chanserv.interfaces import IReactorChannelLayer, IReplyDispatch
from chanserv.log import Logger
from chanserv.server.proxy import address_pair
from chanserv.server.request import WebRequest
from chanserv.server.validate import (
    TargetError,
    has_forbidden_value_byte,
    is_token,
    request_line_problem,
)

if TYPE_CHECKING:
    from chanserv.server.accesslog import AccessLogWriter
    from chanserv.server.config import ServerConfig
    from chanserv.server.websocket import WebSocketFactory

__all__ = ["HTTPFactory", "HTTPProtocol"]

log = Logger()

#: Seconds a connection being closed may take to flush before it is aborted.
ABORT_TIMEOUT = 15.0

_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
}


class _ReadControl:
    """Pause/resume reading a channel's transport, unless it is closing."""

    __slots__ = ("_channel",)

    def __init__(self, channel: HTTPProtocol) -> None:
        self._channel = channel

    def pauseProducing(self) -> None:
        # A TCP or TLS transport: its producer half and ``disconnecting``
        # belong to no single Twisted interface.
        transport: Any = self._channel.transport
        if transport is not None and not transport.disconnecting:
            transport.pauseProducing()

    def resumeProducing(self) -> None:
        transport: Any = self._channel.transport
        if transport is not None and not transport.disconnecting:
            transport.resumeProducing()


@implementer(IHandshakeListener)
class HTTPProtocol(HookedHTTPChannel):
    """
    One HTTP connection.  What Twisted's parser lets through, it refuses
    always with a status line, ``Connection: close`` and a closed
    connection, and never with a message to a consumer:

    ==========================================================  ============
    input                                                       answer
    ==========================================================  ============
    malformed request line, ``G\\x01T``, ``GET  /``, HTTP/9.9    400
    lowercase method (``get`` is never ``GET``)                 400
    non-ASCII or control bytes in the target, ``%00``,          400
    bad UTF-8 after percent-decoding, a fragment
    header name not a token (``Foo Bar:``, ``X :``, NUL)        400
    header value with a control byte or ``\\x85``               400
    (CVE-2026-44546: ``\\x0b \\x0c \\x1c \\x1d \\x1e`` too)
    obs-fold continuation line (refused, not joined)            400
    bare LF or bare CR in the head (answered at once)           400
    no Host, or two, on HTTP/1.1; two on HTTP/1.0               400
    CL+TE, two CL, ``+5``, ``0x5``, bad chunk framing           400
    ``Transfer-Encoding`` other than ``chunked``, or on 1.0     400
    request line over 16 KiB                                    414
    a header line over 16 KiB, a head over 16 KiB,              431
    more than 500 headers
    body over ``max_body_size`` (CL up front; chunked as        413
    counted)
    head not complete within ``header_timeout`` of its first    408
    byte (not reset per byte: slowloris)
    head and body not complete within ``request_timeout`` of    408
    their first byte plus ``1 / request_min_rate`` s per body
    byte received (a trickled body; server pauses not counted)
    a body silent for ``body_timeout``                          408
    a client that reads nothing for ``http_timeout``, or lets   connection
    four times ``http_send_queue_size`` of response pile up     cut
    ==========================================================  ============

    Attributes the request and the WebSocket side use: ``factory``,
    ``persistent``, ``discarding`` (True once the connection reads nothing
    more), ``read_control`` (an ``IPushProducer`` pausing the transport);
    and :meth:`account_written`, :meth:`unsent_bytes`, :meth:`abort`.

    Only public hooks of ``HTTPChannel`` and ``LineReceiver`` are used (the
    one exception, Twisted's own refusals, comes through
    :class:`~chanserv._compat.twisted.HookedHTTPChannel`); the parse state
    the checks need is kept here.
    """

    requestFactory = WebRequest  # type: ignore[assignment]
    factory: HTTPFactory

    discarding = False
    upgraded = False
    _in_head = False  # between the request line and the blank line
    _head_started: float | None = None  # first byte of the current head
    _idle_since: float | None = None
    _closing_since: float | None = None
    _write_blocked_since: float | None = None  # the client stopped reading
    unsent_while_blocked = 0
    _reading = False  # inside our own LineReceiver.dataReceived
    _handling = False  # from allContentReceived to requestDone: later bytes wait
    _head_size = 0  # bytes of the current head's lines so far
    _header_count = 0  # header lines of the current head accepted so far
    _request_version = b""  # the current request line's HTTP version

    def __init__(self) -> None:
        super().__init__()
        self.read_control = _ReadControl(self)

    def connectionMade(self) -> None:
        super().connectionMade()
        self._idle_since = self.factory.clock.seconds()
        self.factory.track(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.factory.untrack(self)

    def handshakeCompleted(self) -> None:
        """
        A TLS handshake is done (``IHandshakeListener``), before any request
        byte is read: if ALPN chose a protocol other than ``http/1.1`` that
        the factory serves (``factory.alternative_protocols``, e.g. ``h2``),
        that protocol takes the connection over.
        """
        negotiated = getattr(self.transport, "negotiatedProtocol", None)
        take_over = self.factory.alternative_protocols.get(negotiated) if negotiated else None
        if take_over is not None:
            take_over(self)

    # -- parsing hooks ---------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self.discarding:
            return
        if self._head_started is None and self.line_mode and not self._handling:
            self._head_started = self.factory.clock.seconds()
            self._idle_since = None
        # LineReceiver's, not HTTPChannel's: no per-read timer reset.
        if self._reading:
            # Pipelined bytes replayed by requestDone inside our own read:
            # LineReceiver queues them for the read in progress.
            basic.LineReceiver.dataReceived(self, data)
            return
        self._reading = True
        try:
            basic.LineReceiver.dataReceived(self, data)
        finally:
            self._reading = False
        if self.discarding or self.upgraded or not self.line_mode or self._handling:
            return
        # What LineReceiver keeps is the incomplete line: any LF in it has no
        # CR before it.  Twisted would wait for a CRLF that never comes.
        pending = self.clearLineBuffer()
        if b"\n" in pending or b"\r" in pending[:-1]:
            self.reject(400, "Bare LF or CR in the request head")
        elif pending:
            basic.LineReceiver.dataReceived(self, pending)  # kept, still incomplete

    def lineReceived(self, line: bytes) -> None:
        if self.discarding:
            return
        if b"\n" in line or b"\r" in line:
            self.reject(400, "Bare LF or CR in the request head")
            return
        if not self._in_head:
            if not line:
                # A stray CRLF between requests (tolerated once, as Twisted).
                super().lineReceived(line)
                self._head_started = None
                if not self.requests:
                    self._idle_since = self.factory.clock.seconds()
                return
            problem = request_line_problem(line)
            if problem is None and not line.endswith((b" HTTP/1.1", b" HTTP/1.0")):
                problem = "Unsupported HTTP version"
            if problem is not None:
                self.reject(400, problem)
                return
            if self._head_started is None:
                # A stray CRLF earlier in the same read cleared it.
                self._head_started = self.factory.clock.seconds()
            queued = len(self.requests)
            super().lineReceived(line)
            if self.discarding or len(self.requests) == queued:
                return  # refused by Twisted, or after the last request of the connection
            method, target, version = line.split(b" ")
            self._in_head = True
            self._head_size = len(line)
            self._header_count = 0
            self._request_version = version
            try:
                self.requests[-1].request_line_received(method, target, version)
            except TargetError as e:
                self.reject(400, str(e))
            return
        if not line:
            self._in_head = False
            super().lineReceived(line)
            return
        if line[:1] in (b" ", b"\t"):
            self.reject(400, "Obsolete line folding")
            return
        if self._head_size + len(line) > self.totalHeadersSize:
            self.reject(431, "Request header section too large")
            return
        self._head_size += len(line)
        super().lineReceived(line)

    def headerReceived(self, line: bytes) -> bool:
        if self.discarding:
            return False
        name, colon, value = line.partition(b":")
        if not colon or not is_token(name):
            self.reject(400, "Malformed header name")
            return False
        value = value.strip(b" \t")
        if has_forbidden_value_byte(value):
            self.reject(400, "Control byte in a header value")
            return False
        if self._header_count >= self.maxHeaders:
            self.reject(431, "Too many headers")
            return False
        name = name.lower()
        if name == b"transfer-encoding":
            if self._request_version != b"HTTP/1.1" or value.lower() != b"chunked":
                self.reject(400, "Unsupported Transfer-Encoding")
                return False
        elif name == b"content-length" and len(value) > 18:
            self.reject(413, "Request body too large")
            return False
        if not super().headerReceived(line):
            return False
        self._header_count += 1
        self.requests[-1].header_pairs.append((name, value))
        return True

    def allHeadersReceived(self) -> None:
        if self.discarding:
            return
        started, self._head_started = self._head_started, None
        request = self.requests[-1]
        problem = request.head_problem(self.length)
        if problem is not None:
            self.reject(*problem)
            return
        # Before Twisted answers "Expect: 100-continue", so a refused body is
        # never invited.
        super().allHeadersReceived()
        if self.factory.stopping:
            self.persistent = False
        request.head_complete(self.factory.clock.seconds() if started is None else started)

    def allContentReceived(self) -> None:
        if self.discarding:
            return
        self._handling = True
        super().allContentReceived()

    def lineLengthExceeded(self, line: bytes) -> None:
        if self._in_head:
            self.reject(431, "Request header line too long")
        else:
            self.reject(414, "Request line too long")

    def twisted_refused(self) -> None:
        # Twisted's own refusals (CL/TE conflicts, chunk framing) come here.
        self.reject(400, "Bad request")

    # -- refusing ----------------------------------------------------------------

    def reject(self, code: int, reason: str) -> None:
        """
        Refuse the request being read with ``code`` and close the connection;
        read nothing more.  A request already dispatched (its body streaming)
        is told through ``body_failed`` instead.
        """
        if self.discarding:
            return
        self.discarding = True
        self._head_started = None
        request = self.requests[-1] if self.requests else None
        if request is not None and request.dispatched:
            request.body_failed(code, reason)
            return
        transport: Any = self.transport
        log.debug(
            "HTTP {code} to {peer}: {reason}", code=code, peer=transport.getPeer(), reason=reason
        )
        body = (reason + "\n").encode("utf-8")
        transport.write(
            b"HTTP/1.1 %d %s\r\nconnection: close\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\n\r\n%s" % (code, _REASONS.get(code, b"Error"), len(body), body)
        )
        self.factory.log_refusal(self, request, code)
        self.loseConnection()

    def deadline_missed(self, kind: str, reason: str) -> None:
        """
        The request being read missed a deadline: count the close in
        ``factory.deadline_closes[kind]``, log it once (info) and refuse the
        request with 408 (see :meth:`reject`).  Nothing happens if the
        connection is already refusing or closing.

        :param kind: ``"head"``, ``"request"`` or ``"body_idle"``.
        :param reason: the text of the 408 response.
        """
        if self.discarding or self._closing_since is not None:
            return
        self.factory.deadline_closes[kind] += 1
        transport: Any = self.transport
        log.info(
            "{reason}: 408 to {peer}, connection closed",
            reason=reason,
            peer=transport.getPeer() if transport is not None else None,
        )
        self.reject(408, reason)

    def stop_reading(self) -> None:
        """Ignore everything the client sends from now on."""
        self.discarding = True
        self._head_started = None

    def loseConnection(self) -> None:
        if self._closing_since is not None:
            return  # closing already
        self._closing_since = self.factory.clock.seconds()
        super().loseConnection()

    def hand_over(self) -> None:
        """The connection becomes a WebSocket: stop tracking and touching it."""
        self.upgraded = True
        self._head_started = None
        self.factory.untrack(self)

    # -- lifecycle ---------------------------------------------------------------

    def requestDone(self, request: http.Request) -> None:
        self._idle_since = self.factory.clock.seconds()
        if self.factory.stopping:
            self.persistent = False
        if self.persistent:
            self._handling = False  # the next request may be read (and replayed)
        super().requestDone(request)

    def pauseProducing(self) -> None:
        # The transport's write buffer is full: the client is not keeping up.
        if self._write_blocked_since is None:
            self._write_blocked_since = self.factory.clock.seconds()
        super().pauseProducing()

    def resumeProducing(self) -> None:
        # The transport's write buffer drained: the client took it all.
        self._write_blocked_since = None
        self.unsent_while_blocked = 0
        super().resumeProducing()
        for request in list(self.requests):
            request.resume_replies()

    def account_written(self, size: int) -> int:
        """
        Account ``size`` response bytes about to be written; return the
        bytes then waiting for the client beyond what the transport buffers:
        those written since the transport paused this channel (0 while it
        keeps up).
        """
        if self._write_blocked_since is None:
            return 0
        self.unsent_while_blocked += size
        return self.unsent_while_blocked

    def unsent_bytes(self) -> int:
        """What :meth:`account_written` last returned, until the transport drains."""
        return self.unsent_while_blocked

    def abort(self) -> None:
        """Cut the connection now, discarding unsent data."""
        self.stop_reading()
        self.persistent = False
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Headers) -> None:
        # As Twisted's, with names written lowercased.
        sequence = [version, b" ", code, b" ", reason, b"\r\n"]
        for name, values in headers.getAllRawHeaders():
            name = name.lower()
            for value in values:
                sequence.extend((name, b": ", value, b"\r\n"))
        sequence.append(b"\r\n")
        transport: Any = self.transport
        transport.writeSequence(sequence)

    def check_timeouts(self, now: float) -> None:
        """Apply this connection's timeouts at reactor time ``now``."""
        config = self.factory.config
        blocked = self._write_blocked_since
        if blocked is not None and now - blocked >= config.http_timeout:
            log.info("Client read nothing for {seconds}s: connection cut", seconds=now - blocked)
            self.abort()
            return
        if self._closing_since is not None:
            transport: Any = self.transport
            if now - self._closing_since >= ABORT_TIMEOUT and transport is not None:
                transport.abortConnection()
            return
        if self._head_started is not None:
            allowed = min(config.header_timeout, config.request_timeout)
            if now - self._head_started >= allowed:
                self.deadline_missed("head", "Request header timeout")
            return
        if self.requests:
            self.requests[0].check_timeouts(now)
        elif self._idle_since is not None and now - self._idle_since >= config.idle_timeout:
            self.loseConnection()

    def is_idle(self) -> bool:
        """No request is being read or answered."""
        return not self.requests and self._head_started is None


@implementer(IProtocolNegotiationFactory)
class HTTPFactory(http.HTTPFactory):
    """
    Builds :class:`HTTPProtocol` connections and tracks them.

    :param reactor: the reactor (its clock: ``seconds()``).
    :param layer: the channel layer (reactor face).
    :param replies: the :class:`~chanserv.server.replies.ReplyRegistry`.
    :param config: the :class:`~chanserv.server.config.ServerConfig`.
    :param access_log: an :class:`~chanserv.server.accesslog.AccessLogWriter`
        or None (may be set later).
    :param websocket_factory: what takes upgrade requests over
        (``upgrade(request)``), or None to refuse them (400).
    :param routed_channels: the channels a consumer takes (the router's),
        or None if unknown: then every message is sent.  ``http.disconnect``
        is sent only if it is routed.

    Reactor thread only.
    """

    protocol = HTTPProtocol  # type: ignore[assignment]
    noisy = False  # no "Starting factory" lines: the listening port logs already

    def __init__(
        self,
        reactor: IReactorTime,
        layer: IReactorChannelLayer,
        replies: IReplyDispatch,
        config: ServerConfig,
        access_log: AccessLogWriter | None = None,
        websocket_factory: WebSocketFactory | None = None,
        routed_channels: Collection[str] | None = None,
    ) -> None:
        super().__init__(timeout=None, reactor=reactor)  # type: ignore[arg-type]
        #: The reactor, for its clock (``seconds()``).
        self.clock: IReactorTime = reactor
        self.layer = layer
        self.replies = replies
        self.config = config
        self.access_log = access_log
        self.websocket_factory = websocket_factory
        self.routed_channels = routed_channels
        self.connections: set[HTTPProtocol] = set()
        #: Protocols a TLS listener may negotiate (ALPN) besides
        #: ``http/1.1``, in order of preference, each with the callable that
        #: takes a connection over once its handshake chose it (see
        #: :meth:`HTTPProtocol.handshakeCompleted`).  The interface server
        #: adds ``h2`` (:func:`chanserv.server.http2.take_over`).
        self.alternative_protocols: dict[bytes, Callable[[HTTPProtocol], None]] = {}
        #: Connections closed (with 408) for a missed deadline, by kind:
        #: ``"head"`` (``header_timeout``), ``"request"`` (``request_timeout``
        #: with ``request_min_rate``), ``"body_idle"`` (``body_timeout``).
        self.deadline_closes: Counter[str] = Counter()
        #: http.request messages sent to the layer (or on their way), and
        #: those the layer refused as full (answered 503).
        self.requests_sent = 0
        self.requests_full = 0
        #: http.disconnect messages lost: the layer stayed full or unreachable
        #: for its expiry, or the send failed.
        self.disconnects_lost = 0
        self.stopping = False
        self._drain_waiters: list[Deferred[None]] = []

    def buildProtocol(self, addr: IAddress | None) -> HTTPProtocol:  # type: ignore[override]
        protocol = self.protocol()
        protocol.factory = self
        protocol.timeOut = None  # no per-connection idle timer: check_timeouts sweeps
        return protocol

    def acceptableProtocols(self) -> list[bytes]:
        """
        The ALPN protocols of a TLS listener, in the server's order of
        preference: :attr:`alternative_protocols`, then ``http/1.1``
        (``IProtocolNegotiationFactory``).

        Twisted's TLS asks the wrapped factory for these; one that names none
        makes every handshake offering ALPN (every browser, curl) fail with
        an internal-error alert.
        """
        return [*self.alternative_protocols, b"http/1.1"]

    def startFactory(self) -> None:
        # No log file and no per-second date timer: the access log is ours.
        pass

    def stopFactory(self) -> None:
        pass

    def track(self, protocol: HTTPProtocol) -> None:
        self.connections.add(protocol)

    def untrack(self, protocol: HTTPProtocol) -> None:
        self.connections.discard(protocol)
        if self._drain_waiters and not self.connections:
            waiters, self._drain_waiters = self._drain_waiters, []
            for d in waiters:
                d.callback(None)

    def log(self, request: Any) -> None:
        # Any: Twisted's HTTPFactory.log takes any http.Request, and this override may not
        # narrow that to the WebRequest (client_and_scheme) every chanserv request is.
        """Access-log a finished response (called by ``Request.finish``)."""
        if self.access_log is not None:
            client, _ = request.client_and_scheme()
            self.access_log.http(
                client,
                request.method,
                request.uri,
                request.clientproto,
                request.code,
                request.sentLength,
            )

    def log_refusal(self, protocol: HTTPProtocol, request: http.Request | None, code: int) -> None:
        """Access-log a request refused before it reached the application."""
        if self.access_log is None:
            return
        method = uri = version = b"-"
        if request is not None and request.clientproto != http.Request.clientproto:
            method, uri, version = request.method, request.uri, request.clientproto
        transport: Any = protocol.transport
        client = address_pair(transport.getPeer())
        self.access_log.http(client, method, uri, version, code, None)

    def check_timeouts(self, now: float) -> None:
        """Apply every connection's timeouts at reactor time ``now``."""
        for protocol in list(self.connections):
            try:
                protocol.check_timeouts(now)
            except Exception:
                log.failure("HTTP timeout check failed")

    def drain(self) -> Deferred[None]:
        """
        Start a graceful stop: idle connections close now, busy ones after
        their current response.  The Deferred fires once all are gone.
        """
        self.stopping = True
        for protocol in list(self.connections):
            protocol.persistent = False
            if protocol.is_idle():
                protocol.loseConnection()
        if not self.connections:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._drain_waiters.append(d)
        return d

    def abort_all(self) -> None:
        """Cut every remaining connection (the graceful stop ran out of time)."""
        for protocol in list(self.connections):
            transport: Any = protocol.transport
            if transport is not None:
                transport.abortConnection()
