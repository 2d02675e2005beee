"""
The WebSocket half of the interface server: autobahn behind the HTTP port.

:mod:`chanserv.server.http` parses and validates an ``Upgrade: websocket``
request, then calls :meth:`WebSocketFactory.upgrade`, which takes the
connection over: a fresh :class:`WebSocketProtocol` gets the transport and a
handshake rebuilt from the *validated* request -- the request line and only
the headers autobahn acts on, one line each, never a body
(:mod:`chanserv.server.wshandshake`) -- so no byte the HTTP parser let
through can be re-read differently by autobahn (the CVE-2026-44546 class).
The connection then speaks ASGI 1.0 ``websocket.*``
(reference §2.2) with these additions and fixes:

- ``websocket.connect`` also carries ``scheme``, ``root_path`` and the offered
  ``subprotocols``; ``{"accept": True, "subprotocol": name}`` picks one of
  them (echoed in the 101).  Without a choice, the first offered one listed in
  ``ws_protocols`` is used, as daphne did.
- Empty text and binary messages are received and sent like any other; while
  connecting, a ``text`` or ``bytes`` reply (even empty) accepts implicitly.
  A reply's ``text``/``bytes`` goes out before its ``close``.
- ``websocket.receive`` full: the socket is no longer read (TCP back-pressure
  reaches the client) and the message is kept; it is sent again once the
  channel has room, in order.  Only if the channel stays full (no message
  gets through) for ``ws_receive_full_timeout`` is the socket closed with
  1013; the messages still held are then dropped and ``websocket.disconnect``
  (code 1013) is still sent, with ``order`` one past the last message
  delivered.  Sends are made one at a time per socket, so order holds with
  layers whose sends take a round trip too; at most :data:`MAX_BACKLOG`
  messages wait behind one in flight before reading pauses.
- ``websocket.disconnect`` is sent for every connection whose
  ``websocket.connect`` reached the layer (also after a reject), after all of
  its ``websocket.receive`` messages; a full ``websocket.disconnect`` is
  waited on (up to the layer's expiry), never dropped.
- Replies wait in a per-socket queue while the client does not read (the
  transport's write buffer is full and it paused this producer).  The queue
  is bounded by the reply channel's capacity in messages and by
  ``ws_send_queue_size`` in bytes.  If it stays past either bound for
  :data:`OVERFLOW_GRACE` seconds (a burst a reading client drains is
  fine), or ever grows past :data:`HARD_FACTOR` times it, its messages are
  dropped, counted (the layer's ``channel_full_count`` for the reply
  channel) and the socket closed with 1013, so the client reconnects and
  resynchronises: never an open socket that silently missed a message.  When the layer has
  lost its state, the socket is closed with 1012.  ``code`` is the close code this server
  sent if it started the close, else the client's (1005 when its close frame
  had none, 1006 when the TCP connection just went away).
- A malformed reply (unknown key, both ``text`` and ``bytes``, wrong types, a
  ``subprotocol`` the client did not offer) is logged as an error and ignored
  as a whole.  An invalid ``close`` code is logged and replaced by 1000.
- Permessage-deflate is never negotiated (no deflate bombs), frames and
  messages are capped (``max_ws_frame_size`` / ``max_ws_message_size``: close
  1009), UTF-8 and masking are checked (1007 / 1002), and protocol errors
  close with a close frame rather than a silent drop.

Timeouts: ``websocket_handshake_timeout`` covers the protocol part of the
handshake, until ``websocket.connect`` is on the layer (then the connection
is dropped, as autobahn's ``openHandshakeTimeout`` would); the application's
decision is then bounded by ``websocket_connect_timeout`` (403).  That,
``websocket_timeout`` (close 1000), the idle ping and its ``ping_timeout``,
:data:`CLOSE_HANDSHAKE_TIMEOUT` and ``ws_receive_full_timeout`` are all
checked by :meth:`WebSocketFactory.check_timeouts`, called by the server's
one periodic sweep.  autobahn's own timeouts are off, so it schedules no
timer at all (its timers would go to txaio's global reactor, not the
injected one).

Everything here runs on the reactor thread.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure

from chanserv._compat.autobahn import forget_handshake_key
from chanserv.exceptions import ChannelFull, MessageTooLarge, is_valid_close_code
from chanserv.log import Logger
from chanserv.server.delivery import send_until_delivered
from chanserv.server.wshandshake import BadHandshake, build_connect, handshake_bytes, take_transport

__all__ = ["WebSocketFactory", "WebSocketProtocol"]

log = Logger()

#: Bytes a client may send after its handshake and before the 101 (it
#: should send none): beyond this the connection is dropped.
MAX_EARLY_DATA = 64 * 1024

#: Messages held behind a websocket.receive send still in flight (a layer
#: with real round trips) before the socket stops being read.
MAX_BACKLOG = 64

#: Seconds a socket's outgoing queue may stay past its bound (the reply
#: channel's capacity, ``ws_send_queue_size``) before the socket is closed
#: with 1013: a reading client drains a burst well within it.
OVERFLOW_GRACE = 2.0

#: Past this many times its bound the queue overflows at once, whatever
#: the grace: the memory one socket can hold stays bounded.
HARD_FACTOR = 4

#: Seconds a client gets to answer a close frame this server sent before the
#: connection is dropped (autobahn's default ``closeHandshakeTimeout``).
CLOSE_HANDSHAKE_TIMEOUT = 1.0

_REPLY_KEYS = frozenset(("accept", "text", "bytes", "close", "subprotocol"))


#: Attributes autobahn and this module only use before the 101 (those read
#: later too have class-level defaults).
_HANDSHAKE_ONLY = (
    "http_request_data",
    "http_response_data",
    "http_headers",
    "http_status_line",
    "http_request_uri",
    "http_request_path",
    "http_request_params",
    "http_request_host",
    "websocket_origin",
    "websocket_extensions",
    "websocket_protocols",
    "_connect",
    "_handshake",
    "_connect_pending",
    "openHandshakeTimeoutCall",
)


class WebSocketProtocol(WebSocketServerProtocol):
    """
    One WebSocket connection, from the handed-over upgrade request to
    ``websocket.disconnect``.  Reactor thread only.

    Per-connection state is kept to a few attributes (class-level defaults
    until they change) so an idle socket costs little on top of autobahn.
    """

    reply_channel = ""
    path = ""
    client = ""  # "host:port" for the access log, "" if unknown
    opened_at = 0.0  # reactor seconds at upgrade
    last_active = 0.0  # last inbound message or ping sent
    order = 0  # websocket.receive messages created so far
    delivered = 0  # ... and handed to the layer
    connect_sent = False
    opened = False  # 101 sent
    lost = False  # connection gone
    close_code: int | None = None  # code of a close this server started
    _connect: dict[str, Any] | None = None  # websocket.connect until sent
    _handshake: Deferred[Any] | None = None  # onConnect's result, until decided
    _parsed = False  # autobahn has seen the handshake
    _connect_pending = False  # websocket.connect send in flight
    _pumping = False
    _paused = False  # reading paused for back-pressure
    _busy = False  # a websocket.receive send is in flight or waiting for room
    _backlog: deque[dict[str, Any]] | None = None  # messages waiting behind it
    _full_since: float | None = None
    _room: Deferred[None] | None = None  # when_capacity wait
    _disconnect_due: int | None = None  # disconnect code, once lost
    _write_paused = False  # the transport's write buffer is full
    _out: deque[tuple[bytes | None, Any]] | None = None  # replies waiting for the client
    _out_bytes = 0
    _out_limit = 0  # messages, the reply channel's capacity
    _over_since: float | None = None  # when the queue went past its bound
    send_queue: Any = ()
    websocket_protocols: list[str] = []  # never mutated: autobahn assigns a new list
    openHandshakeTimeoutCall = None
    _ping_sent_at: float | None = None  # a ping waits for its pong
    _closing_since: float | None = None  # this server sent a close frame, unanswered

    # -- handshake -------------------------------------------------------------

    def processHandshake(self) -> None:
        # autobahn calls this for every read while CONNECTING; after the first
        # (the fed handshake) anything the client sends before our 101 is
        # kept, bounded, for after the accept -- never parsed as a handshake.
        if not self._parsed:
            super().processHandshake()
        elif len(self.data) > MAX_EARLY_DATA:
            self.dropConnection(abort=True)

    def onConnect(self, request: Any) -> Deferred[Any]:  # type: ignore[override]
        self._parsed = True
        factory = self.factory
        message, self._connect = self._connect, None
        assert message is not None
        message["reply_channel"] = self.reply_channel
        factory.registry.register(self.reply_channel, self)
        d: Deferred[Any] = Deferred()
        self._handshake = d
        self._connect_pending = True
        sent = factory.layer.send_twisted("websocket.connect", message)
        sent.addCallbacks(self._connect_sent, self._connect_failed)
        sent.addErrback(lambda f: log.failure("websocket.connect handling failed", f))
        return d

    def _connect_sent(self, _: None) -> None:
        self._connect_pending = False
        self.connect_sent = True
        # From here the application decides, within websocket_connect_timeout.
        if self.lost:
            self._maybe_disconnect()
        else:
            self.factory.log_action("connecting", self)

    def _connect_failed(self, failure: Failure) -> None:
        self._connect_pending = False
        if failure.check(ChannelFull):
            log.warn("websocket.connect is full: {path} answered 503", path=self.path)
            self.reject(503, "Connection queue at capacity")
        elif failure.check(ConnectionError):
            log.warn(
                "Channel layer unavailable ({error}): WebSocket {path} answered 503",
                error=failure.value,
                path=self.path,
            )
            self.reject(503, "Channel layer unavailable")
        else:
            log.failure("Sending websocket.connect failed", failure)
            self.reject(500, "Internal Server Error")
        if self.lost:
            self.factory.finished(self)

    def accept(self, subprotocol: str | None) -> None:
        """Complete the handshake (101), speaking ``subprotocol`` if not None."""
        d, self._handshake = self._handshake, None
        # Not after autobahn dropped the connection (its connectionLost, and
        # so onClose, comes a reactor turn later).
        if d is not None and self.state == self.STATE_CONNECTING:
            d.callback(subprotocol)  # autobahn's succeedHandshake: 101, onOpen

    def reject(self, code: int, reason: str) -> None:
        """Refuse a pending handshake with HTTP ``code`` and close."""
        if self._handshake is not None and self.state == self.STATE_CONNECTING:
            self.failHandshake(reason, code)

    def failHandshake(self, reason: str, code: int = 400, responseHeaders: Any = None) -> None:
        # Every refusal, ours or autobahn's (bad key, version...), ends here.
        self._handshake = None
        self.factory.log_action("rejected", self)
        super().failHandshake(reason, code, responseHeaders)

    def connectionMade(self) -> None:
        super().connectionMade()
        # Only used by chopped or "sync" writes, which chanserv never makes:
        # the class-level empty tuple spares an idle socket a deque.
        del self.send_queue

    def onOpen(self) -> None:
        self.opened = True
        self.last_active = self.factory.reactor.seconds()
        # Drop what only the handshake needed and re-pack the instance dict:
        # a dict never shrinks by itself, and an idle socket lives long.
        state = self.__dict__
        for name in _HANDSHAKE_ONLY:
            state.pop(name, None)
        forget_handshake_key(self)
        self.__dict__ = dict(state)
        self.factory.log_action("connected", self)

    # -- replies -----------------------------------------------------------------

    def deliver(self, message: dict[str, Any]) -> None:
        """Handle a reply from the application (``ReplyConnection``)."""
        text = message.get("text")
        data = message.get("bytes")
        subprotocol = message.get("subprotocol")
        problem = None
        if not _REPLY_KEYS.issuperset(message):
            problem = "unknown keys %s" % sorted(set(message) - _REPLY_KEYS)
        elif text is not None and data is not None:
            problem = "both text and bytes"
        elif text is not None and not isinstance(text, str):
            problem = "text is not a str"
        elif data is not None and not isinstance(data, bytes):
            problem = "bytes is not bytes"
        elif (
            self._handshake is not None
            and subprotocol is not None
            and subprotocol not in self.websocket_protocols
        ):
            problem = "subprotocol %r was not offered" % (subprotocol,)
        if problem is not None:
            log.error(
                "Invalid WebSocket reply on {channel} ignored: {problem}",
                channel=self.reply_channel,
                problem=problem,
            )
            return
        close = message.get("close")
        if self._handshake is not None:
            if "accept" in message and not message["accept"]:
                self.reject(403, "Access denied")
                return
            if message.get("accept") or text is not None or data is not None:
                self.accept(subprotocol or self._default_subprotocol())
            elif close:
                self.reject(403, "Access denied")
                return
        if self.state != self.STATE_OPEN:
            return  # not accepted yet, or closing: the client has its close code
        if text is not None:
            self._send_reply(text.encode("utf-8"), False)
        elif data is not None:
            self._send_reply(data, True)
        if close:
            code = _close_code(close, self.reply_channel)
            if self._out is not None:
                self._out.append((None, code))  # after what is queued
            else:
                self.close(code)

    # -- the outgoing queue (IPushProducer of the transport's write side) ------

    def _send_reply(self, payload: bytes, binary: bool) -> None:
        if self._out is None and not self._write_paused:
            self.sendMessage(payload, binary)
            return
        out = self._out
        if out is None:
            out = self._out = deque()
            self._out_limit = self.factory.layer.get_capacity(self.reply_channel)
        out.append((payload, binary))
        self._out_bytes += len(payload)
        if self._over_since is None:
            if self._over_bound(1):
                # Maybe only a burst that arrived in one reactor turn, before
                # the transport could write any of it: the periodic check
                # closes the socket if it is still over OVERFLOW_GRACE later.
                self._over_since = self.factory.reactor.seconds()
        elif self._over_bound(HARD_FACTOR):
            self._overflow()

    def _over_bound(self, factor: int) -> bool:
        out = self._out
        return out is not None and (
            len(out) > factor * self._out_limit
            or self._out_bytes > factor * self.factory.config.ws_send_queue_size
        )

    def pauseProducing(self) -> None:
        """The transport's write buffer is full: queue replies from now on."""
        self._write_paused = True

    def resumeProducing(self) -> None:
        """The transport's write buffer drained: send what is queued."""
        self._write_paused = False
        out = self._out
        while out and not self._write_paused and self.state == self.STATE_OPEN:
            payload, kind = out.popleft()
            if payload is None:
                self._out = None
                self._out_bytes = 0
                self.close(kind)
                return
            self._out_bytes -= len(payload)
            self.sendMessage(payload, kind)
        if not out:
            self._out = None
            self._out_bytes = 0
        if self._over_since is not None and not self._over_bound(1):
            self._over_since = None  # it reads: back within bounds

    def stopProducing(self) -> None:
        """The connection is going: drop the queue (its close code is sent)."""
        self._out = None
        self._out_bytes = 0

    def _overflow(self) -> None:
        # The client stopped reading: drop its queue, count it, close 1013.
        out = self._out
        dropped = sum(1 for payload, _ in out if payload is not None) if out else 0
        self._out = None
        self._out_bytes = 0
        self._over_since = None
        log.warn(
            "WebSocket {channel} does not read its messages: {n} dropped, closing with 1013",
            channel=self.reply_channel,
            n=dropped,
        )
        self.factory.registry.overflowed(self.reply_channel, dropped)
        self.close(1013)

    def layer_state_lost(self) -> None:
        """The layer lost its state (``ReplyConnection``): reject 503 or close 1012."""
        if self._handshake is not None:
            self.reject(503, "Channel layer lost its state")
        elif self.state == self.STATE_OPEN:
            self._out = None
            self._out_bytes = 0
            self.close(1012)

    def _default_subprotocol(self) -> str | None:
        for name in self.websocket_protocols:
            if name in self.factory.config.ws_protocols:
                return name
        return None

    def sendCloseFrame(
        self, code: int | None = None, reasonUtf8: bytes | None = None, isReply: bool = False
    ) -> None:
        # Every close frame goes out here, ours and autobahn's (protocol
        # errors): one that starts the closing handshake is timed by check().
        if not isReply and self.state == self.STATE_OPEN:
            self._closing_since = self.factory.reactor.seconds()
        super().sendCloseFrame(code, reasonUtf8, isReply)

    def close(self, code: int) -> None:
        """Start a closing handshake with ``code`` (any valid code)."""
        if self.state == self.STATE_OPEN:
            self.close_code = code
            self.sendCloseFrame(code=code, isReply=False)

    # -- incoming messages -------------------------------------------------------

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.state != self.STATE_OPEN:
            return  # data after a close frame is ignored
        self.order += 1
        message: dict[str, Any] = {
            "reply_channel": self.reply_channel,
            "path": self.path,
            "order": self.order,
        }
        if isBinary:
            message["bytes"] = payload
        else:
            message["text"] = payload.decode("utf-8")
        self.last_active = self.factory.reactor.seconds()
        if self._ping_sent_at is not None:
            self._ping_sent_at = None  # a message shows the client is there, as a pong would
        if self._busy:
            backlog = self._backlog
            if backlog is None:
                backlog = self._backlog = deque()
            backlog.append(message)
            if len(backlog) == MAX_BACKLOG:
                # A layer slower than the client: stop reading until it drains.
                self._pause()
        else:
            self._send_receive(message)

    def onPong(self, payload: bytes) -> None:
        self.last_active = self.factory.reactor.seconds()
        self._ping_sent_at = None

    def _send_receive(self, message: dict[str, Any]) -> None:
        self._busy = True
        d = self.factory.layer.send_twisted("websocket.receive", message)
        d.addCallbacks(self._receive_sent, self._receive_failed, errbackArgs=(message,))
        d.addErrback(lambda f: log.failure("websocket.receive handling failed", f))

    def _receive_sent(self, _: None) -> None:
        self.delivered += 1
        self._busy = False
        self._full_since = None
        backlog = self._backlog
        if backlog:
            # Loop rather than recurse: with a layer whose sends fire at once,
            # _send_receive comes back here before returning.
            if self._pumping:
                return
            self._pumping = True
            try:
                while backlog and not self._busy:
                    self._send_receive(backlog.popleft())
            finally:
                self._pumping = False
            if backlog or self._busy:
                return
        self._backlog = None
        self._resume()
        if self.lost:
            self._maybe_disconnect()

    def _receive_failed(self, failure: Failure, message: dict[str, Any]) -> None:
        if failure.check(ChannelFull):
            # Keep the message, stop reading, retry when there is room.
            if self._backlog is None:
                self._backlog = deque()
            self._backlog.appendleft(message)
            if self._full_since is None:
                self._full_since = self.factory.reactor.seconds()
            if not self.lost:
                self._pause()
            self._room = self.factory.layer.when_capacity_twisted("websocket.receive")
            self._room.addCallbacks(self._retry, self._room_failed)
            return
        if failure.check(MessageTooLarge):
            log.warn(
                "WebSocket message on {channel} too large for the layer: closing with 1009",
                channel=self.reply_channel,
            )
            code = 1009
        elif failure.check(ConnectionError):
            log.warn(
                "Channel layer unavailable ({error}): closing {channel} with 1011",
                error=failure.value,
                channel=self.reply_channel,
            )
            code = 1011
        else:
            log.failure("Sending websocket.receive failed", failure)
            code = 1011
        self._give_up(code)

    def _retry(self, _: None) -> None:
        self._room = None
        backlog = self._backlog
        assert backlog
        self._busy = False
        self._send_receive(backlog.popleft())

    def _room_failed(self, failure: Failure) -> None:
        self._room = None
        if not failure.check(CancelledError):
            log.failure("Waiting for room on websocket.receive failed", failure)

    def _drop_held(self) -> None:
        room, self._room = self._room, None
        self._backlog = None
        self._busy = False
        self._full_since = None
        if room is not None:
            room.cancel()

    def _give_up(self, code: int) -> None:
        """Drop held messages and close with ``code``; disconnect follows."""
        self._drop_held()
        if self.lost:
            self._maybe_disconnect()
        else:
            self.close(code)
            self._resume()

    def abort(self) -> None:
        """Cut the connection now, dropping held messages; disconnect follows."""
        self._drop_held()
        if self.lost:
            self._maybe_disconnect()
        elif self.transport is not None:
            transport: Any = self.transport  # TCP or TLS: both abort
            transport.abortConnection()

    def _pause(self) -> None:
        if self.transport is not None:
            self._paused = True
            transport: Any = self.transport  # TCP or TLS: both are push producers
            transport.pauseProducing()

    def _resume(self) -> None:
        # Called after every delivered message: touch the transport (and the
        # reactor's reader set) only when reading was actually paused.
        if self._paused and not self.lost and self.transport is not None:
            self._paused = False
            transport: Any = self.transport
            transport.resumeProducing()

    # -- end ---------------------------------------------------------------------

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        # Called once, when the TCP connection is gone.
        self.lost = True
        self._handshake = None
        factory = self.factory
        if self.reply_channel:
            factory.registry.unregister(self.reply_channel)
        if self.opened:
            factory.log_action("disconnected", self)
        if self.close_code is None and self.localCloseCode is not None and self.closedByMe:
            self.close_code = self.localCloseCode
        if self.close_code is not None:
            self._disconnect_due = self.close_code
        elif wasClean:
            self._disconnect_due = 1005 if code is None else code
        else:
            self._disconnect_due = 1006
        if self.connect_sent:
            self._maybe_disconnect()
        elif not self._connect_pending:
            factory.finished(self)

    def _maybe_disconnect(self) -> None:
        if self._busy or self._disconnect_due is None:
            return  # after the held websocket.receive messages
        code, self._disconnect_due = self._disconnect_due, None
        message = {
            "reply_channel": self.reply_channel,
            "code": code,
            "path": self.path,
            "order": self.delivered + 1,
        }
        factory = self.factory
        d = send_until_delivered(
            factory.layer,
            factory.reactor,
            "websocket.disconnect",
            message,
            factory.layer.expiry + 1,
        )
        d.addErrback(self._disconnect_failed)
        d.addBoth(lambda _: factory.finished(self))

    def _disconnect_failed(self, failure: Failure) -> None:
        self.factory.disconnects_lost += 1
        if failure.check(ChannelFull):
            log.error(
                "websocket.disconnect stayed full for the layer's expiry: lost for {channel}",
                channel=self.reply_channel,
            )
        elif failure.check(ConnectionError):
            log.error(
                "Channel layer unavailable ({error}) for the layer's expiry: "
                "websocket.disconnect lost for {channel}",
                error=failure.value,
                channel=self.reply_channel,
            )
        else:
            log.failure("Sending websocket.disconnect failed", failure)

    def check(self, now: float) -> None:
        """The periodic timeout check for this connection (``check_timeouts``)."""
        config = self.factory.config
        age = now - self.opened_at
        if self.state == self.STATE_CONNECTING and not self.connect_sent:
            # The protocol part of the handshake (websocket.connect not on
            # the layer yet): dropped, unclean, as autobahn's own timer would.
            if age >= config.websocket_handshake_timeout:
                self.onOpenHandshakeTimeout()
            return
        if self._handshake is not None:
            if self.connect_sent and age >= config.websocket_connect_timeout:
                log.info("WebSocket {path} not accepted in time: 403", path=self.path)
                self.reject(403, "Access denied")
            return
        if self._over_since is not None and now - self._over_since >= OVERFLOW_GRACE:
            self._overflow()
            return
        if (
            self._full_since is not None
            and now - self._full_since >= config.ws_receive_full_timeout
        ):
            log.warn(
                "websocket.receive stayed full for {channel}: closing with 1013",
                channel=self.reply_channel,
            )
            self._give_up(1013)
            return
        if self.state == self.STATE_CLOSING:
            closing = self._closing_since
            if closing is not None and now - closing >= CLOSE_HANDSHAKE_TIMEOUT:
                self.onCloseHandshakeTimeout()  # our close frame was never answered
            return
        if self.state != self.STATE_OPEN:
            return
        timeout = config.websocket_timeout
        if timeout is not None and age >= timeout:
            self.close(1000)
        elif self._ping_sent_at is not None:
            if config.ping_timeout and now - self._ping_sent_at >= config.ping_timeout:
                self.onAutoPingTimeout()  # no pong (nor message) in time: dropped
        elif config.ping_interval and now - self.last_active >= config.ping_interval:
            self.last_active = self._ping_sent_at = now
            self.sendPing()


def _close_code(close: Any, channel: str) -> int:
    if close is True:
        return 1000
    if is_valid_close_code(close):
        return int(close)
    log.error(
        "Invalid close code {close!r} on {channel}: closing with 1000",
        close=close,
        channel=channel,
    )
    return 1000


class WebSocketFactory(WebSocketServerFactory):
    """
    Builds and tracks the WebSocket connections of one interface server.

    :param reactor: the reactor (timers and time; autobahn's timers too).
    :param layer: the channel layer (reactor face: ``send_twisted``,
        ``when_capacity_twisted``).
    :param registry: the :class:`~chanserv.server.replies.ReplyRegistry`.
    :param config: the :class:`~chanserv.server.config.ServerConfig`.
    :param access_log: an object with ``websocket(action, details)``, or None.

    Reactor thread only.
    """

    protocol = WebSocketProtocol

    def __init__(
        self, reactor: Any, layer: Any, registry: Any, config: Any, access_log: Any
    ) -> None:
        super().__init__(server="chanserv", reactor=reactor)
        self.layer = layer
        self.registry = registry
        self.config = config
        self.access_log = access_log
        self.connections: set[WebSocketProtocol] = set()
        #: websocket.disconnect messages that could not be sent in time.
        self.disconnects_lost = 0
        self._closing = False
        self._drain_waiters: list[Deferred[None]] = []
        self.setProtocolOptions(
            versions=[13],
            webStatus=False,
            utf8validateIncoming=True,
            requireMaskedClientFrames=True,
            maskServerFrames=False,
            applyMask=True,
            maxFramePayloadSize=config.max_ws_frame_size,
            maxMessagePayloadSize=config.max_ws_message_size,
            failByDrop=False,  # close frames with 1002/1007/1009, not a silent drop
            # Every timeout is applied by check_timeouts (the one sweep):
            # autobahn's timers would run on txaio's global reactor.
            openHandshakeTimeout=0,
            closeHandshakeTimeout=0,
            autoPingInterval=0,
            autoPingTimeout=0,
            perMessageCompressionAccept=lambda offers: None,
            # Origin policy belongs to the application (origin validators).
            allowedOrigins=["*"],
            allowNullOrigin=True,
            maxConnections=0,
            trustXForwardedFor=0,
        )
        # autobahn copies every option onto each new protocol instance unless
        # the class has it: a subclass holding them spares each socket ~30
        # instance attributes.
        self.protocol = type(  # type: ignore[assignment]
            "WebSocketProtocol",
            (WebSocketProtocol,),
            {name: getattr(self, name) for name in WebSocketProtocol.CONFIG_ATTRS},
        )

    def upgrade(self, request: Any) -> None:
        """
        Take over ``request``'s connection as a WebSocket.

        ``request`` is a validated upgrade request (``twisted.web.http.Request``
        with no body); after this call the HTTP side must not touch it or its
        channel again.  Never raises: bad handshakes get an HTTP error.
        """
        protocol = self.protocol()
        protocol.factory = self
        try:
            message: dict[str, Any] | None = build_connect(request, self.config)
            problem = ""
        except BadHandshake as e:
            message, problem = None, str(e)
        transport, buffered = take_transport(request, protocol)
        protocol.opened_at = protocol.last_active = self.reactor.seconds()
        protocol.makeConnection(transport)
        # Told when the client stops reading (write buffer full) and again
        # when it caught up: replies queue, bounded, in between.
        transport.registerProducer(protocol, True)
        resume: Any = IPushProducer(transport, None)
        if resume is not None:
            resume.resumeProducing()  # the channel may have paused it
        self.connections.add(protocol)
        if message is None:
            protocol.failHandshake(problem, 400)
            return
        protocol.path = message["path"]
        client = message["client"]
        protocol.client = "%s:%s" % tuple(client) if client else ""
        if self._closing:
            protocol.failHandshake("Server shutting down", 503)
            return
        protocol.reply_channel = self.registry.new_reply_channel()
        protocol._connect = message
        protocol.dataReceived(handshake_bytes(request))
        if buffered:
            protocol.dataReceived(buffered)

    def log_action(self, action: str, protocol: WebSocketProtocol) -> None:
        """Access-log ``action`` (connecting, connected, rejected, disconnected)."""
        if self.access_log is not None:
            self.access_log.websocket(
                action, {"path": protocol.path, "client": protocol.client or None}
            )

    def finished(self, protocol: WebSocketProtocol) -> None:
        """``protocol`` is gone and its messages are sent: forget it."""
        self.connections.discard(protocol)
        if self._drain_waiters and not self.connections:
            waiters, self._drain_waiters = self._drain_waiters, []
            for d in waiters:
                d.callback(None)

    def check_timeouts(self, now: float) -> None:
        """Apply every connection's timeouts at reactor time ``now``."""
        for protocol in list(self.connections):
            try:
                protocol.check(now)
            except Exception:
                log.failure("WebSocket timeout check failed")

    def abort_all(self) -> None:
        """Cut every connection now (a graceful :meth:`close_all` ran out of time)."""
        for protocol in list(self.connections):
            protocol.abort()

    def close_all(self, code: int = 1001) -> Deferred[None]:
        """
        Refuse new upgrades (503), reject pending handshakes (503) and close
        open sockets with ``code``.  The Deferred fires once every connection
        is gone and its ``websocket.disconnect`` sent.
        """
        self._closing = True
        for protocol in list(self.connections):
            if protocol._handshake is not None:
                protocol.reject(503, "Server shutting down")
            else:
                protocol.close(code)
        if not self.connections:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._drain_waiters.append(d)
        return d
