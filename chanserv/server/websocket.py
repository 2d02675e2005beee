"""
The WebSocket half of the interface server: autobahn behind the HTTP port,
fed a handshake rebuilt from the validated request, speaking ASGI 1.0
``websocket.*`` with back-pressure both ways, bounded queues and one
periodic timeout sweep.  Reactor thread only.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from automat import TypeMachine, TypeMachineBuilder
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.python.failure import Failure

from chanserv._compat.autobahn import forget_handshake_key
from chanserv._compat.automat import indexed
from chanserv._compat.twisted import write_now
from chanserv.exceptions import ChannelFull, MessageTooLarge, is_valid_close_code
from chanserv.log import Logger
from chanserv.server.sender import OrderedSender
from chanserv.server.wsfast import MAX_FAST_PAYLOAD, frame, read_frames
from chanserv.server.wshandshake import BadHandshake, build_connect, handshake_bytes, take_transport
from chanserv.types import Content

if TYPE_CHECKING:
    from collections.abc import Sequence

    from chanserv.interfaces import IReactorChannelLayer, IReplyDispatch
    from chanserv.server.accesslog import AccessLogWriter
    from chanserv.server.config import ServerConfig
    from chanserv.server.request import WebRequest

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

_OPEN_STATE = WebSocketServerProtocol.STATE_OPEN

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
    "openHandshakeTimeoutCall",
)

#: Attributes autobahn sets on every connection, with their values while
#: the socket is open and nothing is happening.  They are class attributes
#: of :class:`WebSocketProtocol` too, and a socket drops from its instance
#: dict each one that still holds that value when it opens: an idle socket
#: reads the class's copy, and whatever sets one again (a ping, a close)
#: gets an instance attribute as before.  Autobahn only reads and assigns
#: these (no ``del``, no ``hasattr``); all are public names.
_AT_REST: dict[str, object] = {
    "autoPingPending": None,
    "autoPingPendingCall": None,
    "autoPingPendingSent": None,
    "autoPingPendingSeq": 0,
    "autoPingTimeoutCall": None,
    "closeHandshakeTimeoutCall": None,
    "closedByMe": False,
    "current_frame": None,
    # The buffer of bytes not yet parsed, and the sender's state.
    "data": b"",
    "send_state": WebSocketServerProtocol.SEND_STATE_GROUND,
    "droppedByMe": False,
    "failedByMe": False,
    "inside_message": False,
    "localCloseCode": None,
    "localCloseReason": None,
    "remoteCloseCode": None,
    "remoteCloseReason": None,
    "trackedTimings": None,
    "triggered": False,
    "wasClean": False,
    "wasCloseHandshakeTimeout": False,
    "wasMaxFramePayloadSizeExceeded": False,
    "wasMaxMessagePayloadSizeExceeded": False,
    "wasNotCleanReason": None,
    "wasOpenHandshakeTimeout": False,
    "wasServerConnectionDropTimeout": False,
    "wasServingFlashSocketPolicyFile": False,
    "websocket_protocol_in_use": None,
    # The only version the factory accepts (RFC 6455).
    "websocket_version": 13,
}


def _at_rest(value: object, default: object) -> bool:
    return value is default or (type(value) is type(default) and value == default)


class WebSocketProtocol(WebSocketServerProtocol):
    """
    One WebSocket connection, from the handed-over upgrade request to
    ``websocket.disconnect``.  Reactor thread only.

    Its life is a state machine (:func:`_build_life`, with ``automat``):
    *upgrading* (autobahn reads the handshake) → *handshaking*
    (``websocket.connect`` on its way to the layer) → *connecting* (the
    application decides) → *open* → *closing* (a close frame went out) →
    *closed* (the TCP connection is gone: the messages still held, then
    ``websocket.disconnect``, go to the layer); a refused handshake is
    *refused* until the TCP connection goes.  The per-message paths --
    a frame in, a reply out -- stay off the machine (each input costs a
    few microseconds): they only test autobahn's own ``state``.
    ``websocket.receive`` messages go through an
    :class:`~chanserv.server.sender.OrderedSender`, which orders them,
    holds them while the channel is full (pausing the transport) and sends
    ``websocket.disconnect`` after the last of them.

    Per-connection state is kept to a few attributes (class-level defaults
    until they change) so an idle socket costs little on top of autobahn.
    """

    reply_channel = ""
    path = ""
    client = ""  # "host:port" for the access log, "" if unknown
    opened_at = 0.0  # reactor seconds at upgrade
    last_active = 0.0  # last inbound message or ping sent
    order = 0  # websocket.receive messages created so far
    close_code: int | None = None  # code of a close this server started
    _machine: _Life | None = None  # the state machine (see _life)
    # websocket.connect: None not sent (or refused by the layer: no
    # disconnect), False on its way, True on the layer.
    _connect_sent: bool | None = None
    _receives: OrderedSender | None = None  # websocket.receive, then disconnect; lazy
    _connect: Content | None = None  # websocket.connect until sent
    _handshake: Deferred[str | None] | None = None  # onConnect's result, until decided
    _write_paused = False  # the transport's write buffer is full
    _out: deque[tuple[bytes | None, Any]] | None = None  # replies waiting for the client
    _out_bytes = 0
    _out_limit = 0  # messages, the reply channel's capacity
    _over_since: float | None = None  # when the queue went past its bound
    send_queue: Any = ()
    websocket_protocols: list[str] = []  # never mutated: autobahn assigns a new list
    openHandshakeTimeoutCall = None
    _ping_sent_at: float | None = None  # a ping waits for its pong
    _fast_limit = 0  # the largest payload of the fast path (set by the factory)

    # -- handshake -------------------------------------------------------------

    @property
    def _life(self) -> _Life:
        # The machine's inputs.  An open socket drops its machine
        # (_enter_open) and rebuilds it, in the open state, on its next
        # input: an idle socket, the common case, holds none.
        life = self._machine
        if life is None:
            life = self._machine = _LIFE(self, _OPEN)
        return life

    def _sender(self) -> OrderedSender:
        # websocket.receive and websocket.disconnect go through one sender,
        # made when the first of them must go (an idle socket holds none);
        # they wait for websocket.connect while it is on its way.
        receives = self._receives
        if receives is None:
            factory = self.factory
            transport: Any = self.transport  # TCP or TLS: both are push producers
            receives = self._receives = OrderedSender(
                factory.layer,
                "websocket.receive",
                transport,
                pause_at=MAX_BACKLOG,
                resume_at=0,
                on_error=self._receive_failed,
                clock=factory.reactor,
                started=self._connect_sent is True,
            )
        return receives

    def _stream_start(self) -> None:
        # The machine's output once websocket.connect is on the layer.
        self._connect_sent = True
        if self._receives is not None:
            self._receives.start()

    def _stream_stop(self) -> None:
        # The machine's output once websocket.connect failed: no disconnect.
        self._connect_sent = None
        if self._receives is not None:
            self._receives.stop()  # the finish() Deferred, if any, fails

    def connectionMade(self) -> None:
        super().connectionMade()
        self._machine = _LIFE(self)
        # Only used by chopped or "sync" writes, which chanserv never makes:
        # the class-level empty tuple spares an idle socket a deque.
        del self.send_queue

    def processHandshake(self) -> None:
        # autobahn calls this for every read while CONNECTING; after the first
        # (the fed handshake) anything the client sends before our 101 is
        # kept, bounded, for after the accept -- never parsed as a handshake.
        # ``_connect`` is there (upgrading) until the machine sends it or
        # refuses the handshake: not an input, which would cost a transition.
        if self._connect is not None:
            super().processHandshake()
        elif len(self.data) > MAX_EARLY_DATA:
            self.dropConnection(abort=True)

    def onConnect(self, request: object) -> Deferred[str | None]:  # type: ignore[override]
        return self._life.handshake()

    def _send_connect(self) -> Deferred[str | None]:
        # The machine's output for handshake(): upgrading -> handshaking.
        factory = self.factory
        message, self._connect = self._connect, None
        assert message is not None
        message["reply_channel"] = self.reply_channel
        factory.registry.register(self.reply_channel, self)
        # websocket.receive and websocket.disconnect wait for websocket.connect.
        self._connect_sent = False
        d: Deferred[str | None] = Deferred()
        self._handshake = d
        life = self._life
        sent = factory.layer.send_twisted("websocket.connect", message)
        sent.addCallbacks(lambda _: life.connect_sent(), life.connect_failed)
        sent.addErrback(lambda f: log.failure("websocket.connect handling failed", f))
        return d

    def _connect_refusal(self, failure: Failure) -> tuple[int, str]:
        # The HTTP refusal for a websocket.connect the layer did not take.
        if failure.check(ChannelFull):
            self.factory.connects_full += 1
            log.warn("websocket.connect is full: {path} answered 503", path=self.path)
            return 503, "Connection queue at capacity"
        if failure.check(ConnectionError):
            log.warn(
                "Channel layer unavailable ({error}): WebSocket {path} answered 503",
                error=failure.value,
                path=self.path,
            )
            return 503, "Channel layer unavailable"
        log.failure("Sending websocket.connect failed", failure)
        return 500, "Internal Server Error"

    def accept(self, subprotocol: str | None) -> None:
        """Complete a pending handshake (101), speaking ``subprotocol`` if not None."""
        # Not an input: a pending handshake (handshaking or connecting) is
        # the one with a Deferred; the 101's onOpen is the input (opened).
        d, self._handshake = self._handshake, None
        # Not after autobahn dropped the connection (its connectionLost, and
        # so onClose, comes a reactor turn later).
        if d is not None and self.state == self.STATE_CONNECTING:
            d.callback(subprotocol)  # autobahn's succeedHandshake: 101, onOpen

    def reject(self, code: int, reason: str) -> None:
        """Refuse a pending handshake with HTTP ``code`` and close."""
        self._life.refuse(code, reason, None)

    def failHandshake(
        self,
        reason: str,
        code: int = 400,
        responseHeaders: Sequence[tuple[str, str]] | None = None,
    ) -> None:
        # Every refusal, ours or autobahn's (bad key, version...), ends here.
        self._life.refuse(code, reason, responseHeaders)

    def _refuse_now(self, code: int, reason: str, headers: Any = None) -> None:
        # The machine's output for every refusal: -> refused.
        self._handshake = None
        self._connect = None  # never parsed nor sent now (processHandshake)
        if self.state == self.STATE_CONNECTING:
            self.factory.handshakes_rejected += 1
            self.factory.log_action("rejected", self)
            super().failHandshake(reason, code, headers)

    def onOpen(self) -> None:
        self._life.opened()

    def _enter_open(self) -> None:
        # The machine's output for opened(): -> open.
        self.last_active = self.factory.reactor.seconds()
        # Drop what only the handshake needed and re-pack the instance dict:
        # a dict never shrinks by itself, and an idle socket lives long.
        state = self.__dict__
        # The machine is now open: an idle socket need not hold it (_life).
        state.pop("_machine", None)
        for name in _HANDSHAKE_ONLY:
            state.pop(name, None)
        for name, default in _AT_REST.items():
            if name in state and _at_rest(state[name], default):
                del state[name]
        forget_handshake_key(self)
        self.__dict__ = dict(state)
        self.factory.handshakes_accepted += 1
        self.factory.log_action("connected", self)

    def shutdown(self, code: int) -> None:
        """The server stops: refuse a pending handshake (503), close an open socket with ``code``."""
        self._life.shutdown(code)

    # -- replies -----------------------------------------------------------------

    def deliver(self, message: Content) -> None:
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
            subprotocol is not None
            and self.state == self.STATE_CONNECTING
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
        if self.state != self.STATE_OPEN:
            if self.state != self.STATE_CONNECTING:
                return  # closing or gone: the client has its close code
            # The handshake waits for the application's decision.
            if "accept" in message and not message["accept"]:
                self._life.refuse(403, "Access denied", None)
                return
            if message.get("accept") or text is not None or data is not None:
                self.accept(subprotocol or self._default_subprotocol())
            elif close:
                self._life.refuse(403, "Access denied", None)
                return
            if self.state != self.STATE_OPEN:
                return  # not accepted yet
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
            self._write_message(payload, binary)
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

    def _write_message(self, payload: bytes, binary: bool) -> None:
        # The socket is open and nothing of ours waits: a small message is
        # framed here (chanserv.server.wsfast), a larger one by autobahn.
        data = frame(payload, binary)
        if data is None:
            self.sendMessage(payload, binary)
        else:
            write_now(self.transport, data)

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
            self._write_message(payload, kind)
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
        self._life.state_lost()

    def _close_for_state_loss(self) -> None:
        # The machine's output for state_lost() while open.
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
        # Every close frame goes out here, ours, autobahn's (protocol errors)
        # and the answer to the client's: open -> closing.  One that starts
        # the closing handshake is timed by check(); after an answer
        # autobahn drops the connection at once.
        if self.state == self.STATE_OPEN:
            self._life.closing(self.factory.reactor.seconds())
        super().sendCloseFrame(code, reasonUtf8, isReply)

    def close(self, code: int) -> None:
        """Start a closing handshake with ``code`` (any valid code)."""
        if self.state == self.STATE_OPEN:
            self.close_code = code
            self.sendCloseFrame(code=code, isReply=False)

    # -- incoming messages -------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        # Small data frames at a frame boundary take the fast path
        # (chanserv.server.wsfast); the rest, from the first frame it does
        # not take, goes to autobahn, and so does everything while autobahn
        # holds a partial frame or a fragmented message.
        if (
            self.state == _OPEN_STATE
            and self.current_frame is None
            and not self.data
            and not self.inside_message
        ):
            used = read_frames(data, self._fast_limit, self._receive_text, self._receive_bytes)
            if used:
                if used == len(data):
                    return
                data = data[used:]
        super().dataReceived(data)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        # autobahn's path: it validated the UTF-8 of a text message.
        if isBinary:
            self._receive("bytes", payload)
        else:
            self._receive("text", payload.decode("utf-8"))

    def _receive_text(self, text: str) -> bool:
        return self._receive("text", text)

    def _receive_bytes(self, data: bytes) -> bool:
        return self._receive("bytes", data)

    def _receive(self, key: str, value: str | bytes) -> bool:
        # One websocket.receive; returns whether the socket is still open.
        if self.state != _OPEN_STATE:
            return False  # data after a close frame is ignored
        self.order += 1
        message: Content = {
            "reply_channel": self.reply_channel,
            "path": self.path,
            "order": self.order,
            key: value,
        }
        self.last_active = self.factory.reactor.seconds()
        if self._ping_sent_at is not None:
            self._ping_sent_at = None  # a message shows the client is there, as a pong would
        receives = self._receives
        if receives is None:
            receives = self._sender()
        receives.send(message)
        return self.state == _OPEN_STATE

    def onPong(self, payload: bytes) -> None:
        self.last_active = self.factory.reactor.seconds()
        self._ping_sent_at = None

    def _receive_failed(self, failure: Failure) -> None:
        # The sender's on_error: a websocket.receive failed, not for a full
        # channel; the messages held behind it are dropped.
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
        self.close(code)

    def _give_up(self, code: int) -> None:
        """Drop held messages and close with ``code``; disconnect follows."""
        if self._connect_sent is not None:
            self._sender().drop()
        self.close(code)

    def abort(self) -> None:
        """Cut the connection now, dropping held messages; disconnect follows."""
        if self._connect_sent is not None:
            self._sender().drop()
        self._life.abort()

    def _cut(self) -> None:
        # The machine's output for abort() until the connection is gone.
        transport: Any = self.transport  # TCP or TLS: both abort
        if transport is not None:
            transport.abortConnection()

    # -- end ---------------------------------------------------------------------

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        # Called once, when the TCP connection is gone.
        if self.close_code is None and self.localCloseCode is not None and self.closedByMe:
            self.close_code = self.localCloseCode
        if self.close_code is not None:
            due = self.close_code
        elif wasClean:
            due = 1005 if code is None else code
        else:
            due = 1006
        self._life.lost(due)

    def _gone(self, code: int, was_open: bool) -> None:
        # The machine's output for lost(): -> closed.
        self._handshake = None
        factory = self.factory
        if self.reply_channel:
            factory.registry.unregister(self.reply_channel)
        if was_open:
            factory.log_action("disconnected", self)
        if self._connect_sent is None:  # websocket.connect never reached the layer
            factory.finished(self)
            return
        receives = self._sender()
        receives.producer = None
        reply_channel, path = self.reply_channel, self.path

        def disconnect() -> Content:
            # Built when every websocket.receive before it is sent (or dropped).
            return {
                "reply_channel": reply_channel,
                "code": code,
                "path": path,
                "order": receives.delivered + 1,
            }

        # A full websocket.disconnect is waited on, up to the layer's expiry:
        # by then everything ahead of it was read or expired.
        d = receives.finish(
            disconnect, channel="websocket.disconnect", timeout=factory.layer.expiry + 1
        )
        d.addErrback(self._disconnect_failed)
        d.addBoth(lambda _: factory.finished(self))

    def _disconnect_failed(self, failure: Failure) -> None:
        if failure.check(CancelledError):
            return  # websocket.connect never reached the layer: nothing to end
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
        state = self.state
        if state == self.STATE_CONNECTING:
            self._life.tick(now)  # the handshake's timeouts
            return
        if self._over_since is not None and now - self._over_since >= OVERFLOW_GRACE:
            self._overflow()
            return
        config = self.factory.config
        receives = self._receives
        if (
            receives is not None
            and receives.blocked_since is not None
            and now - receives.blocked_since >= config.ws_receive_full_timeout
        ):
            log.warn(
                "websocket.receive stayed full for {channel}: closing with 1013",
                channel=self.reply_channel,
            )
            self.factory.receive_full_closes += 1
            self._give_up(1013)
            return
        if state == self.STATE_CLOSING:
            self._life.tick(now)  # the closing handshake's timeout
            return
        if state != self.STATE_OPEN:
            return
        timeout = config.websocket_timeout
        if timeout is not None and now - self.opened_at >= timeout:
            self.close(1000)
        elif self._ping_sent_at is not None:
            if config.ping_timeout and now - self._ping_sent_at >= config.ping_timeout:
                self.onAutoPingTimeout()  # no pong (nor message) in time: dropped
        elif config.ping_interval and now - self.last_active >= config.ping_interval:
            self.last_active = self._ping_sent_at = now
            self.sendPing()

    def _check_handshake_timeout(self, now: float) -> None:
        # The machine's output for tick() until websocket.connect is on the
        # layer: the protocol part of the handshake.  Dropped, unclean, as
        # autobahn's own timer would.
        if now - self.opened_at >= self.factory.config.websocket_handshake_timeout:
            self.onOpenHandshakeTimeout()

    def _check_connect_timeout(self, now: float) -> None:
        # The machine's output for tick() while the application decides.
        if now - self.opened_at >= self.factory.config.websocket_connect_timeout:
            log.info("WebSocket {path} not accepted in time: 403", path=self.path)
            self._life.refuse(403, "Access denied", None)

    def _check_close_timeout(self, now: float, since: float) -> None:
        # The machine's output for tick() while closing, since ``since``.
        if now - since >= CLOSE_HANDSHAKE_TIMEOUT:
            self.onCloseHandshakeTimeout()  # our close frame was never answered


# What an open socket reads once _enter_open dropped its own copy.
for _name, _default in _AT_REST.items():
    setattr(WebSocketProtocol, _name, _default)
del _name, _default


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


class _Life(Protocol):
    """
    The inputs of a WebSocket connection's life.  :func:`_build_life`
    builds the machine that implements them for one
    :class:`WebSocketProtocol`: each is named for what happened, and what
    it does depends on the state the connection is in.
    """

    def handshake(self) -> Deferred[str | None]:
        """autobahn parsed the handshake: the Deferred decides it (``onConnect``)."""

    def connect_sent(self) -> None:
        """``websocket.connect`` is on the layer."""

    def connect_failed(self, failure: Failure) -> None:
        """The layer did not take ``websocket.connect``."""

    def opened(self) -> None:
        """The 101 went out (autobahn's ``onOpen``)."""

    def refuse(self, code: int, reason: str, headers: Any) -> None:
        """Refuse the handshake with HTTP ``code`` (the application, a timeout, autobahn)."""

    def closing(self, since: float) -> None:
        """A close frame went out at reactor time ``since``."""

    def tick(self, now: float) -> None:
        """The periodic check, while autobahn is connecting or closing."""

    def shutdown(self, code: int) -> None:
        """The server stops (:meth:`WebSocketFactory.close_all`)."""

    def state_lost(self) -> None:
        """The channel layer lost its state."""

    def abort(self) -> None:
        """Cut the connection now."""

    def lost(self, code: int) -> None:
        """The TCP connection is gone; ``code`` goes in ``websocket.disconnect``."""


def _build_life() -> tuple[TypeMachine[_Life, WebSocketProtocol], Any]:
    """
    The life of a WebSocket connection, as Twisted's ``ClientService``
    models its own: the states, and for each the inputs it can get and what
    they do (the protocol's methods).  Every input is fed on the reactor
    thread; one fed by an output (a refusal decided by a timeout, the 101's
    ``onOpen``) runs once that output is done.
    """
    machine = TypeMachineBuilder(_Life, WebSocketProtocol)
    upgrading = machine.state("upgrading")
    handshaking = machine.state("handshaking")
    connecting = machine.state("connecting")
    is_open = machine.state("open")

    def closing_since(life: _Life, ws: WebSocketProtocol, since: float) -> float:
        return float(since)  # the closing handshake's timer starts

    closing = machine.state("closing", closing_since)
    refused = machine.state("refused")
    closed = machine.state("closed")

    # -- the common path -------------------------------------------------------

    @upgrading.upon(_Life.handshake).to(handshaking)
    def send_connect(life: _Life, ws: WebSocketProtocol) -> Deferred[Any]:
        return ws._send_connect()

    @is_open.upon(_Life.connect_sent).loop()  # accepted before the send's result
    @closing.upon(_Life.connect_sent, nodata=True).loop()
    @refused.upon(_Life.connect_sent).loop()
    @handshaking.upon(_Life.connect_sent).to(connecting)
    def receives_go(life: _Life, ws: WebSocketProtocol) -> None:
        ws._stream_start()
        ws.factory.log_action("connecting", ws)

    @handshaking.upon(_Life.opened).to(is_open)
    @connecting.upon(_Life.opened).to(is_open)
    def enter_open(life: _Life, ws: WebSocketProtocol) -> None:
        ws._enter_open()

    is_open.upon(_Life.closing).to(closing).returns(None)  # closing_since keeps the time

    @is_open.upon(_Life.lost).to(closed)
    def disconnected(life: _Life, ws: WebSocketProtocol, code: int) -> None:
        ws._gone(code, was_open=True)

    # From closing, which has data, to closed, which has none: automat
    # passes the data, nodata or not.
    @closing.upon(_Life.lost).to(closed)
    def disconnected_closing(life: _Life, ws: WebSocketProtocol, since: float, code: int) -> None:
        ws._gone(code, was_open=True)

    # -- handshakes that do not open -------------------------------------------

    @upgrading.upon(_Life.refuse).to(refused)
    @handshaking.upon(_Life.refuse).to(refused)
    @connecting.upon(_Life.refuse).to(refused)
    def refuse(life: _Life, ws: WebSocketProtocol, code: int, reason: str, headers: Any) -> None:
        ws._refuse_now(code, reason, headers)

    closing.upon(_Life.refuse, nodata=True).loop().returns(None)  # too late to refuse
    for late in (is_open, refused, closed):
        late.upon(_Life.refuse).loop().returns(None)

    @handshaking.upon(_Life.connect_failed).to(refused)
    def refuse_unsent(life: _Life, ws: WebSocketProtocol, failure: Failure) -> None:
        ws._stream_stop()  # no websocket.disconnect for it either
        ws._refuse_now(*ws._connect_refusal(failure))

    @is_open.upon(_Life.connect_failed).loop()
    @closing.upon(_Life.connect_failed, nodata=True).loop()
    def answered_anyway(life: _Life, ws: WebSocketProtocol, failure: Failure) -> None:
        # The application answered, so websocket.connect reached it after all.
        log.warn(
            "websocket.connect reported failed ({error}) after {path} was accepted: going on",
            error=failure.value,
            path=ws.path,
        )
        receives_go(life, ws)

    @refused.upon(_Life.connect_failed).loop()
    @closed.upon(_Life.connect_failed).loop()
    def nothing_to_end(life: _Life, ws: WebSocketProtocol, failure: Failure) -> None:
        ws._stream_stop()  # the finish() Deferred, if any, fails: no disconnect

    @closed.upon(_Life.connect_sent).loop()
    def disconnect_goes(life: _Life, ws: WebSocketProtocol) -> None:
        ws._stream_start()  # its websocket.disconnect is waiting

    @upgrading.upon(_Life.lost).to(closed)
    @handshaking.upon(_Life.lost).to(closed)
    @connecting.upon(_Life.lost).to(closed)
    @refused.upon(_Life.lost).to(closed)
    def gone_unopened(life: _Life, ws: WebSocketProtocol, code: int) -> None:
        ws._gone(code, was_open=False)

    # -- timeouts ----------------------------------------------------------------

    @upgrading.upon(_Life.tick).loop()
    @handshaking.upon(_Life.tick).loop()
    def handshake_timeout(life: _Life, ws: WebSocketProtocol, now: float) -> None:
        ws._check_handshake_timeout(now)

    @connecting.upon(_Life.tick).loop()
    def connect_timeout(life: _Life, ws: WebSocketProtocol, now: float) -> None:
        ws._check_connect_timeout(now)

    @closing.upon(_Life.tick).loop()
    def close_timeout(life: _Life, ws: WebSocketProtocol, since: float, now: float) -> None:
        ws._check_close_timeout(now, since)

    # -- the server ends it --------------------------------------------------------

    @handshaking.upon(_Life.shutdown).to(refused)
    @connecting.upon(_Life.shutdown).to(refused)
    def refuse_for_shutdown(life: _Life, ws: WebSocketProtocol, code: int) -> None:
        ws._refuse_now(503, "Server shutting down")

    @is_open.upon(_Life.shutdown).loop()
    def close_for_shutdown(life: _Life, ws: WebSocketProtocol, code: int) -> None:
        ws.close(code)

    closing.upon(_Life.shutdown, nodata=True).loop().returns(None)  # ending already
    for ending in (upgrading, refused, closed):
        ending.upon(_Life.shutdown).loop().returns(None)

    @handshaking.upon(_Life.state_lost).to(refused)
    @connecting.upon(_Life.state_lost).to(refused)
    def refuse_for_state_loss(life: _Life, ws: WebSocketProtocol) -> None:
        ws._refuse_now(503, "Channel layer lost its state")

    @is_open.upon(_Life.state_lost).loop()
    def close_for_state_loss(life: _Life, ws: WebSocketProtocol) -> None:
        ws._close_for_state_loss()

    closing.upon(_Life.state_lost, nodata=True).loop().returns(None)
    for ending in (refused, closed):
        ending.upon(_Life.state_lost).loop().returns(None)

    @upgrading.upon(_Life.abort).loop()
    @handshaking.upon(_Life.abort).loop()
    @connecting.upon(_Life.abort).loop()
    @is_open.upon(_Life.abort).loop()
    @closing.upon(_Life.abort, nodata=True).loop()
    @refused.upon(_Life.abort).loop()
    def cut(life: _Life, ws: WebSocketProtocol) -> None:
        ws._cut()

    closed.upon(_Life.abort).loop().returns(None)  # its disconnect follows

    return indexed(machine.build()), is_open


#: Builds the machine of one connection (``WebSocketProtocol.connectionMade``).
#: ``_LIFE(protocol, _OPEN)`` builds one already open (``WebSocketProtocol._life``).
_LIFE, _OPEN = _build_life()


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
        self,
        reactor: IReactorTime,
        layer: IReactorChannelLayer,
        registry: IReplyDispatch,
        config: ServerConfig,
        access_log: AccessLogWriter | None,
    ) -> None:
        super().__init__(server="chanserv", reactor=reactor)
        self.layer = layer
        self.registry = registry
        self.config = config
        self.access_log = access_log
        self.connections: set[WebSocketProtocol] = set()
        #: websocket.disconnect messages that could not be sent in time.
        self.disconnects_lost = 0
        #: Handshakes answered 101, and refused (an HTTP error), so far.
        self.handshakes_accepted = 0
        self.handshakes_rejected = 0
        #: websocket.receive messages made by connections now gone (those of
        #: open ones are their ``order``: see :meth:`messages_received`).
        self.receives_of_gone = 0
        #: Sockets closed with 1013 because websocket.receive stayed full.
        self.receive_full_closes = 0
        #: websocket.connect messages the layer refused as full (answered 503).
        self.connects_full = 0
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
            {
                **{name: getattr(self, name) for name in WebSocketProtocol.CONFIG_ATTRS},
                "_fast_limit": min(
                    limit
                    for limit in (
                        MAX_FAST_PAYLOAD,
                        config.max_ws_frame_size,
                        config.max_ws_message_size,
                    )
                    if limit > 0
                ),
            },
        )

    def upgrade(self, request: WebRequest) -> None:
        """
        Take over ``request``'s connection as a WebSocket.

        ``request`` is a validated upgrade request (``twisted.web.http.Request``
        with no body); after this call the HTTP side must not touch it or its
        channel again.  Never raises: bad handshakes get an HTTP error.
        """
        protocol = self.protocol()
        protocol.factory = self
        try:
            message: Content | None = build_connect(request, self.config)
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

    def messages_received(self) -> int:
        """websocket.receive messages made so far (counted per connection, summed here)."""
        return self.receives_of_gone + sum(protocol.order for protocol in self.connections)

    def finished(self, protocol: WebSocketProtocol) -> None:
        """``protocol`` is gone and its messages are sent: forget it."""
        if protocol in self.connections:
            self.connections.discard(protocol)
            self.receives_of_gone += protocol.order
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
            protocol.shutdown(code)
        if not self.connections:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._drain_waiters.append(d)
        return d
