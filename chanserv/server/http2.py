"""
HTTP/2 over TLS (ALPN ``h2``) on Twisted's own (private) HTTP/2 connection,
with the checks, limits, timeouts and access log of the HTTP/1.1 side; each
stream carries one :class:`~chanserv.server.request.WebRequest`.  Every use
of Twisted's private HTTP/2 is here, pinned by
``tests/server/test_tls_h2_pins.py``.  Reactor thread only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import priority
from h2.errors import ErrorCodes
from h2.exceptions import ProtocolError
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IAddress, IProducer
from twisted.internet.protocol import connectionDone
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from twisted.web._http2 import H2Stream
from twisted.web.http import H2Connection, Request
from twisted.web.http_headers import Headers

from chanserv.log import Logger
from chanserv.server.http import ABORT_TIMEOUT, HTTPFactory, HTTPProtocol
from chanserv.server.request import WebRequest
from chanserv.server.validate import (
    TargetError,
    has_forbidden_value_byte,
    is_token,
    request_line_problem,
)

__all__ = ["HTTP2Connection", "HTTP2Request", "StreamChannel", "take_over"]

log = Logger()

#: Response headers that are connection-specific in HTTP/2 (RFC 9113
#: §8.2.2): never sent, whatever the application says.
_HOP_BY_HOP = (
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"transfer-encoding",
    b"upgrade",
    b"te",
)


def take_over(channel: HTTPProtocol) -> None:
    """
    Give ``channel``'s connection, whose TLS handshake has just chosen
    ``h2``, to a new :class:`HTTP2Connection`.

    Called by :meth:`HTTPProtocol.handshakeCompleted
    <chanserv.server.http.HTTPProtocol.handshakeCompleted>`, before any
    application byte is read: the TLS transport (a ``ProtocolWrapper``)
    delivers every later byte to the new connection, and ``channel`` is
    neither tracked nor touched again.  A transport that cannot change its
    protocol is aborted (logged as an error): its client expects HTTP/2.
    """
    transport: Any = channel.transport
    if not isinstance(transport, ProtocolWrapper):
        log.error(
            "h2 negotiated on {transport}, which cannot change protocol: connection aborted",
            transport=type(transport).__name__,
        )
        transport.abortConnection()
        return
    wrapper: Any = transport
    wrapper.unregisterProducer()  # the channel registered itself
    connection = HTTP2Connection(channel.factory)
    wrapper.wrappedProtocol = connection
    connection.makeConnection(wrapper)  # tracked before the channel is untracked
    channel.hand_over()
    channel.transport = None
    wrapper.registerProducer(connection, True)


class HTTP2Connection(H2Connection):
    """
    One HTTP/2 connection: Twisted's, with :class:`HTTP2Request` requests,
    the factory's bookkeeping and the sweep's timeouts (Twisted's own
    per-connection timer is off).

    It sits in ``factory.connections`` next to the HTTP/1.1 channels and
    answers the factory the same way: :meth:`check_timeouts`,
    :meth:`is_idle`, :meth:`loseConnection`, ``transport``, and
    ``persistent`` (set to False when the server drains: new streams get
    503, and the connection closes once its last stream is done).

    Twisted's send loop (``_sendPrioritisedData``) sends a frame of the
    stream ``next(self.priority)`` names, then runs again at
    ``callLater(0)``; it waits on ``_sendingDeferred`` only once the
    priority tree has no unblocked stream.  A stream with data queued and no
    flow-control window left is not blocked by Twisted, so the loop would
    spin on it until its client sends ``WINDOW_UPDATE``: here the tree
    blocks it instead (:meth:`_sendable`), and :meth:`dataReceived`
    unblocks it and restarts the loop once a frame has opened its window.

    :param factory: the :class:`~chanserv.server.http.HTTPFactory`.
    """

    timeOut = None  # no TimeoutMixin timer: the factory's sweep checks

    def __init__(self, factory: HTTPFactory) -> None:
        super().__init__(factory.clock)
        self.factory: Any = factory
        self.requestFactory = self._new_request
        #: False once the server drains (``HTTPFactory.drain``).
        self.persistent = True
        self._channels: dict[int, StreamChannel] = {}
        self._idle_since: float | None = None
        self._closing_since: float | None = None
        self._write_blocked_since: float | None = None
        self._lost = False
        self._names_dropped = False
        #: Streams blocked in ``priority`` for want of a flow-control window.
        self._stalled: set[int] = set()
        self.priority = _SendablePriority(self._sendable, self._sent_on)

    # -- IProtocol ---------------------------------------------------------------

    def connectionMade(self) -> None:
        super().connectionMade()
        self._idle_since = self.factory.clock.seconds()
        self.factory.track(self)

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        if self._stalled:
            # The frames may have opened windows: WINDOW_UPDATE on a stream
            # or the connection, or SETTINGS_INITIAL_WINDOW_SIZE (which
            # Twisted does not look at).
            self._wake_stalled()

    def connectionLost(self, reason: Failure = connectionDone, *args: object, **kw: object) -> None:
        # Twisted calls this itself (on GOAWAY, on a protocol error), then the
        # transport calls it again: both are fine.
        self._lost = True
        super().connectionLost(reason, *args, **kw)
        self.factory.untrack(self)

    # -- streams -----------------------------------------------------------------

    def _new_request(self, stream: Any, queued: bool = False) -> HTTP2Request:
        # Twisted's H2Stream calls its requestFactory from its constructor,
        # before the stream is registered (nothing can be written yet).
        channel = StreamChannel(self, stream)
        self._channels[stream.streamID] = channel
        if self._names_dropped:
            channel.request.bad_header_name = True
        return channel.request

    def _requestReceived(self, event: Any) -> None:
        # h2 lets through header names that are not tokens ("foo(bar"), on
        # which twisted.web's Headers raises out of dataReceived: the
        # connection would drop with a traceback.  They are left out of the
        # stream, and its request is refused with 400.
        headers = event.headers
        self._names_dropped = any(n[:1] != b":" and not is_token(n) for n, _ in headers)
        if self._names_dropped:
            event.headers = [(n, v) for n, v in headers if n[:1] == b":" or is_token(n)]
        try:
            super()._requestReceived(event)
        finally:
            self._names_dropped = False
        self._idle_since = None
        channel = self._channels.get(event.stream_id)
        if channel is not None:
            # The stream is registered: a refusal can be written now.
            channel.request.begin()

    def _requestDone(self, streamID: int) -> None:
        super()._requestDone(streamID)
        self._channels.pop(streamID, None)
        self._stalled.discard(streamID)
        if self._lost:
            return
        state = self.conn.streams.get(streamID)
        if state is not None and not state.closed:
            # The response is complete but the request is not: ask the
            # client to stop sending it (RFC 9113 §8.1).  Without this, its
            # next DATA frame would name a stream Twisted has forgotten.
            self.conn.reset_stream(streamID, ErrorCodes.NO_ERROR)
            self._tryToWriteControlData()
        if not self.streams:
            self._idle_since = self.factory.clock.seconds()
            if not self.persistent:
                self.loseConnection()

    def reset_stream(self, stream_id: int, error_code: int = ErrorCodes.INTERNAL_ERROR) -> None:
        """
        End stream ``stream_id`` now with ``RST_STREAM(error_code)``; its
        request is told its connection is lost.  Nothing happens if the
        stream is already done.
        """
        stream = self.streams.get(stream_id)
        if stream is None or self._lost:
            return
        if not stream.producing:
            # Hand back the flow-control window of what it held back.
            stream.resumeProducing()
        self.conn.reset_stream(stream_id, error_code)
        if self._tryToWriteControlData():
            stream.connectionLost(Failure(ConnectionLost("Stream reset by the server")))
            self._requestDone(stream_id)

    # -- write side ----------------------------------------------------------------

    def _sendable(self, stream_id: int) -> bool:
        """
        Whether the send loop, to which the priority tree is about to hand
        stream ``stream_id``, can make progress on it.  Not when its window
        (or the connection's) is exhausted while data is queued for it: the
        stream is then remembered as stalled, for :meth:`_wake_stalled`.
        The end of a stream carries no data, and goes with no window.
        """
        window = self.conn.local_flow_control_window(stream_id)
        if window > 0 or self.remainingOutboundWindow(stream_id) >= window:
            self._stalled.discard(stream_id)
            return True
        self._stalled.add(stream_id)
        return False

    def _sent_on(self, stream_id: int) -> None:
        """
        The send loop wrote a frame of stream ``stream_id``'s queue: if its
        reply channel was blocked for a client that fell behind, the queue
        may now be short enough to let the application go on.  Without
        this, a stream whose client keeps up -- its window open, the
        transport never paused -- would wait for the next sweep: Twisted
        writes one frame per reactor turn, so a fast application fills the
        queue whatever the client's speed.
        """
        channel = self._channels.get(stream_id)
        if channel is not None:
            channel.request.resume_replies()

    def _wake_stalled(self) -> None:
        """
        Unblock the stalled streams whose window is open again, and restart
        the send loop if it waits for a stream to send (as Twisted's
        ``writeDataToStream`` and ``endRequest`` do).
        """
        woken = False
        for stream_id in list(self._stalled):
            if self.conn.local_flow_control_window(stream_id) > 0:
                # Its data is still queued: only the loop takes it, and the
                # loop has not been given the stream since it stalled.
                self._stalled.discard(stream_id)
                self.priority.unblock(stream_id)
                woken = True
        sending = self._sendingDeferred
        if woken and sending is not None:
            self._sendingDeferred = None
            sending.callback(None)

    def pauseProducing(self) -> None:
        if self._write_blocked_since is None:
            self._write_blocked_since = self.factory.clock.seconds()
        super().pauseProducing()

    def resumeProducing(self) -> None:
        self._write_blocked_since = None
        super().resumeProducing()
        for channel in list(self._channels.values()):
            channel.request.resume_replies()

    # -- what the factory asks ---------------------------------------------------

    def is_idle(self) -> bool:
        """No stream is open."""
        return not self.streams

    def loseConnection(self) -> None:
        """Send ``GOAWAY`` and close (once); streams still open are cut."""
        transport: Any = self.transport
        if self._closing_since is not None or transport is None:
            return
        self._closing_since = self.factory.clock.seconds()
        try:
            self.conn.close_connection()
        except ProtocolError:
            pass  # the h2 state machine is closed already
        else:
            transport.write(self.conn.data_to_send())
        transport.loseConnection()

    def check_timeouts(self, now: float) -> None:
        """Apply this connection's and its requests' timeouts at reactor time ``now``."""
        config = self.factory.config
        transport: Any = self.transport
        if transport is None:
            return
        blocked = self._write_blocked_since
        if blocked is not None and now - blocked >= config.http_timeout:
            log.info("Client read nothing for {seconds}s: connection cut", seconds=now - blocked)
            transport.abortConnection()
            return
        if self._closing_since is not None:
            if now - self._closing_since >= ABORT_TIMEOUT:
                transport.abortConnection()
            return
        for channel in list(self._channels.values()):
            channel.request.check_timeouts(now)
        idle = self._idle_since
        if not self.streams and idle is not None and now - idle >= config.idle_timeout:
            self.loseConnection()


class _SendablePriority(priority.PriorityTree):
    """
    An ``H2Connection``'s priority tree that never hands its send loop a
    stream the loop cannot send on: such a stream is blocked, and the next
    one is chosen (``priority.DeadlockError`` when none is left, on which
    the loop waits).  The loop asks for the next stream after writing a
    frame of the one it was given: ``sent_on`` hears of that stream then.

    :param sendable: called with the stream id the tree chose; False if the
        stream must be blocked.
    :param sent_on: called with the stream id handed out last, once the
        loop asks for the next one (it has written that stream's frame).
    """

    def __init__(self, sendable: Callable[[int], bool], sent_on: Callable[[int], None]) -> None:
        super().__init__()
        self._sendable = sendable
        self._sent_on = sent_on
        self._last: int | None = None

    def __next__(self) -> int:
        last = self._last
        if last is not None:
            self._last = None
            self._sent_on(last)
        while True:
            stream_id: int = super().__next__()
            if self._sendable(stream_id):
                self._last = stream_id
                return stream_id
            self.block(stream_id)


class _StreamReading:
    """``IPushProducer`` pausing the request body of one stream (flow control)."""

    __slots__ = ("_connection", "_stream")

    def __init__(self, connection: HTTP2Connection, stream: H2Stream) -> None:
        self._connection = connection
        self._stream = stream

    def _active(self) -> bool:
        return self._connection.streams.get(self._stream.streamID) is self._stream

    def pauseProducing(self) -> None:
        if self._active():
            self._stream.pauseProducing()

    def resumeProducing(self) -> None:
        if self._active() and not self._stream.producing:
            self._stream.resumeProducing()

    def stopProducing(self) -> None:
        pass


class _StreamWriting:
    """
    The ``IPushProducer`` a stream's response registers with its
    ``H2Stream``: told when the stream's flow-control window opens again.
    """

    __slots__ = ("_channel",)

    def __init__(self, channel: StreamChannel) -> None:
        self._channel = channel

    def pauseProducing(self) -> None:
        pass  # the window is full: the request sees it in what is queued

    def resumeProducing(self) -> None:
        self._channel.request.resume_replies()

    def stopProducing(self) -> None:
        pass


class StreamChannel:
    """
    What :class:`~chanserv.server.request.WebRequest` asks of its channel
    (an :class:`~chanserv.server.http.HTTPProtocol` on HTTP/1.1), for one
    HTTP/2 stream: ``factory``, ``persistent``, ``discarding``,
    ``read_control``, :meth:`reject`, :meth:`deadline_missed`,
    :meth:`stop_reading`, :meth:`loseConnection` and :meth:`abort` (end the
    stream, not the connection), :meth:`account_written`,
    :meth:`unsent_bytes`, and the transport methods
    ``twisted.web.http.Request`` writes through.

    :param connection: the :class:`HTTP2Connection`.
    :param stream: Twisted's ``H2Stream``.
    """

    #: A stream has no transport of its own (as Twisted's ``H2Stream``).
    transport = None
    #: Per stream, so nothing to keep or close: set by the request, unused.
    persistent = True
    #: True once the stream's request body is ignored.
    discarding = False

    def __init__(self, connection: HTTP2Connection, stream: H2Stream) -> None:
        self.connection = connection
        self.stream = stream
        self.factory: Any = connection.factory
        self.read_control = _StreamReading(connection, stream)
        self._writing: _StreamWriting | None = None
        self.request = HTTP2Request(self)

    # -- what the request asks ---------------------------------------------------

    def reject(self, code: int, reason: str) -> None:
        """
        Refuse the stream's request with ``code``: a plain-text response on
        the stream (access-logged), the rest of its body ignored.  A request
        already dispatched is told through ``body_failed`` instead.
        """
        if self.discarding:
            return
        self.stop_reading()
        request = self.request
        if request.dispatched:
            request.body_failed(code, reason)
            return
        log.debug(
            "HTTP/2 {code} to {peer}: {reason}",
            code=code,
            peer=self.stream.getPeer(),
            reason=reason,
        )
        request.refuse(code, reason)

    def deadline_missed(self, kind: str, reason: str) -> None:
        """
        The request missed a deadline: counted in
        ``factory.deadline_closes[kind]``, logged once (info), answered 408
        (see :meth:`reject`).  Nothing happens once the stream is refusing.
        """
        if self.discarding or self.request.finished:
            return
        self.factory.deadline_closes[kind] += 1
        log.info(
            "{reason}: 408 to {peer} (HTTP/2 stream {stream})",
            reason=reason,
            peer=self.stream.getPeer(),
            stream=self.stream.streamID,
        )
        self.reject(408, reason)

    def stop_reading(self) -> None:
        """Ignore the rest of the request body (the stream is reset once answered)."""
        self.discarding = True
        self.read_control.resumeProducing()  # frees what the stream held back

    def loseConnection(self) -> None:
        """Cut this stream (``RST_STREAM(INTERNAL_ERROR)``); the connection stays."""
        self.discarding = True
        self.connection.reset_stream(self.stream.streamID, ErrorCodes.INTERNAL_ERROR)

    def abort(self) -> None:
        """Cut this stream now (as :meth:`loseConnection`: what it queued goes)."""
        self.loseConnection()

    def account_written(self, size: int) -> int:
        """
        ``size`` response bytes are about to be written: the bytes then
        waiting for the client on this stream (see :meth:`unsent_bytes`).
        """
        if self._writing is None:
            # From the first write on, the stream tells us when its window
            # opens (Twisted's H2Stream, through its producer).
            self._writing = _StreamWriting(self)
            self.stream.registerProducer(self._writing, True)
        return self.unsent_bytes() + size

    def unsent_bytes(self) -> int:
        """
        Response bytes queued on this stream and not yet sent: held back by
        its flow-control window, or by the connection's transport (which
        Twisted only writes to while it is not paused).  0 once it is closed.
        """
        stream_id = self.stream.streamID
        connection = self.connection
        try:
            window = connection.conn.local_flow_control_window(stream_id)
            queued = window - connection.remainingOutboundWindow(stream_id)
        except (KeyError, ProtocolError):  # the stream is done
            return 0
        return max(0, int(queued))

    # -- what twisted.web.http.Request writes through ---------------------------

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Headers) -> None:
        for name in _HOP_BY_HOP:
            headers.removeHeader(name)
        self.stream.writeHeaders(version, code, reason, headers)

    def write(self, data: bytes) -> None:
        self.stream.write(data)

    def writeSequence(self, data: list[bytes]) -> None:
        self.stream.writeSequence(data)

    def requestDone(self, request: Request) -> None:
        self.stream.requestDone(request)

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        self.stream.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self.stream.unregisterProducer()

    def getPeer(self) -> IAddress:
        return self.stream.getPeer()

    def getHost(self) -> IAddress:
        return self.stream.getHost()

    def isSecure(self) -> bool:
        return bool(self.stream.isSecure())


class HTTP2Request(WebRequest):
    """
    The request of one HTTP/2 stream: a
    :class:`~chanserv.server.request.WebRequest` whose head comes from the
    stream's header block.  What the ``h2`` package lets through is refused
    per stream, as on HTTP/1.1, before any message reaches the layer:

    ==========================================================  ============
    input                                                       answer
    ==========================================================  ============
    lowercase or malformed ``:method``; ``:path`` with bytes    400
    outside visible ASCII, a fragment, ``%00``, bad UTF-8;
    ``CONNECT``
    header name not a token; a control byte or ``\\x85`` in     400
    a value; ``content-length`` not digits, or two differing
    (h2 4.x refuses these two itself)
    ``:path`` over 16 KiB                                       414
    more than 500 headers, or over 16 KiB of them               431
    body over ``max_body_size`` (declared or counted)           413
    a new stream while the server drains                        503
    ==========================================================  ============

    Twisted's ``H2Stream`` builds it, adds the headers (``:authority`` as
    ``Host``), then calls :meth:`parseCookies`, where the head is checked --
    before Twisted would answer ``Expect: 100-continue``, so a refused body
    is never invited.  :meth:`begin` follows once the stream can carry a
    response: it answers a refused head or starts the body deadlines.
    """

    channel: Any  # a StreamChannel; None once the stream is gone

    #: Set when the stream had a header name that is not a token (refused).
    bad_header_name = False
    _checked = False
    _problem: tuple[int, str] | None = None

    def __init__(self, channel: StreamChannel) -> None:
        super().__init__(channel)
        self._received_at = self._factory.clock.seconds()

    def parseCookies(self) -> None:
        super().parseCookies()
        if self.check_head() is not None:
            self.requestHeaders.removeHeader(b"expect")

    def check_head(self) -> tuple[int, str] | None:
        """``(status, reason)`` if the head must be refused, else None (checked once)."""
        if not self._checked:
            self._checked = True
            self._problem = self._head_problem()
        return self._problem

    def begin(self) -> None:
        """The stream is registered: refuse its head, or let its body come."""
        problem = self.check_head()
        if problem is not None:
            self.channel.reject(*problem)
        else:
            self.head_complete(self._received_at)

    def refuse(self, code: int, reason: str) -> None:
        """Answer ``code`` with ``reason`` as plain text (the stream's refusal)."""
        self._respond_error(code, reason)

    def _reading(self) -> bool:
        # DATA may still come after the response is finished (the channel
        # is gone then) or refused, until the stream is reset.
        channel = getattr(self, "channel", None)
        return (
            channel is not None
            and not channel.discarding
            and not self.finished
            and self.check_head() is None
        )

    def handleContentChunk(self, data: bytes) -> None:
        if self._reading():
            super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        # Twisted's H2Stream calls this at the end of the stream's body.
        if self._reading():
            super().requestReceived(command, path, version)

    def _head_problem(self) -> tuple[int, str] | None:
        stream = self.channel.stream
        method, target = stream.command, stream.path
        self.clientproto = b"HTTP/2"
        if method is None or target is None:
            # h2 lets CONNECT through without :path.
            self.method, self.uri = method or b"-", b"-"
            return 400, "CONNECT is not served"
        self.method, self.uri = method, target
        if len(target) > HTTPProtocol.MAX_LENGTH:
            return 414, "Request target too long"
        line_problem = request_line_problem(b"%s %s HTTP/2" % (method, target))
        if line_problem is not None:
            return 400, line_problem
        try:
            self.request_line_received(method, target, b"HTTP/2")
        except TargetError as e:
            return 400, str(e)
        if self.bad_header_name:
            return 400, "Malformed header name"
        pairs: list[tuple[bytes, bytes]] = []
        size = 0
        lengths: set[bytes] = set()
        for raw_name, values in self.requestHeaders.getAllRawHeaders():
            name = raw_name.lower()
            if name == b"host":
                # :authority, and a Host header h2 has checked is the same.
                values = list(dict.fromkeys(values))
            if not is_token(name):
                return 400, "Malformed header name"
            for value in values:
                if has_forbidden_value_byte(value):
                    return 400, "Control byte in a header value"
                size += len(name) + len(value) + 2
                pairs.append((name, value))
            if name == b"content-length":
                lengths.update(values)
        if len(pairs) > HTTPProtocol.maxHeaders:
            return 431, "Too many headers"
        if size > HTTPProtocol.totalHeadersSize:
            return 431, "Request header section too large"
        self.header_pairs = pairs
        length = None
        if lengths:
            value = lengths.pop()
            if lengths or not value.isdigit():
                return 400, "Malformed Content-Length"
            if len(value) > 18:
                return 413, "Request body too large"
            length = int(value)
        problem = self.head_problem(length)
        if problem is not None:
            return problem
        if self._factory.stopping:
            return 503, "Server shutting down"
        return None
