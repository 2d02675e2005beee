"""
Exceptions of the Channels 1.x programming model, under their 1.x names;
this module imports nothing of chanserv.  Any thread: raised by consumers
and the handler in pool threads, by layers in any thread.
"""

from __future__ import annotations

from typing import Any, Protocol


class Sender(Protocol):
    """What the exceptions send replies through: a reply channel."""

    def send(self, content: dict[str, Any], immediately: bool = False) -> None:
        # Any: an ASGI message's values are any msgpack-serialisable value
        # (chanserv.types.Content, which this module may not import).
        ...


class Replyable(Protocol):
    """What the exceptions answer: a message, through its reply channel."""

    @property
    def reply_channel(self) -> Sender | None: ...


#: Close codes of RFC 6455 §7.4.1 that an application may send from the
#: server side: normal closure, going away, policy violation, internal
#: error, try again later.  3000-4999 are open to applications too.
SERVER_CLOSE_CODES = frozenset({1000, 1001, 1008, 1011, 1013})


def is_valid_close_code(code: object) -> bool:
    """Whether an application may close a WebSocket with ``code``."""
    if isinstance(code, bool) or not isinstance(code, int):
        return False
    return code in SERVER_CLOSE_CODES or 3000 <= code <= 4999


class ChannelFull(Exception):
    """
    The channel is at capacity; the message was not sent.

    Raised by ``send`` (never by ``send_group``, which drops silently for full
    members, as ASGI 1.0 requires).
    """


class ChannelBlocked(ChannelFull):
    """
    The channel is paused by the interface server it is local to: its
    client takes the response more slowly than the application sends it.

    A :class:`ChannelFull` (capacity semantics: the message was not sent),
    raised by ``send`` while the block lasts.  It ends when the client has
    caught up (the interface unblocks the channel) or is gone (the channel
    is discarded, and what is sent to it then is counted as gone).
    """


class MessageTooLarge(Exception):
    """
    The message serialises to more than the layer's ``max_message_size``.
    """


class InvalidChannelLayerError(ValueError):
    """
    ``CHANNEL_LAYERS`` is misconfigured; the text names the setting and value.
    """


class ConsumeLater(Exception):
    """
    Put the message back on its channel to be consumed again later.

    The worker requeues it with ``__retries__`` incremented and drops it,
    logging an error, once the retry limit (10 by default) is reached.
    """


class ResponseLater(Exception):
    """
    Raised from a view: the response will be sent later by another consumer.
    """


class RequestTimeout(Exception):
    """
    The request body did not arrive in time (answered with 408).
    """


class RequestAborted(Exception):
    """
    The client went away while its request body was being read.
    """


class DenyConnection(Exception):
    """
    Raised by a ``websocket.connect`` consumer to refuse the handshake.

    The worker answers ``{"close": True}`` on the reply channel, which the
    interface server turns into a 403.  Raised on any other channel it is an
    error and is logged as one.
    """


class ChannelSocketException(Exception):
    """
    Base for exceptions that carry their own handling: the worker calls
    ``run(message)`` when a consumer raises one.
    """

    def run(self, message: Replyable) -> None:
        raise NotImplementedError()


class WebsocketCloseException(ChannelSocketException):
    """
    Close the WebSocket of the message being consumed with ``code``.

    ``code`` is ``None`` (a plain close, 1000), 1000, or an application's
    code in 3000–4999 (RFC 6455 §7.4.2); anything else raises ValueError
    here, where the consumer made the mistake.  Unlike
    channels 1.1.8 this works with any reply channel and validates the code
    correctly.
    """

    def __init__(self, code: int | None = None) -> None:
        if code is not None:
            if isinstance(code, bool) or not isinstance(code, int):
                raise ValueError("invalid close code %r: must be an int" % (code,))
            if code != 1000 and not 3000 <= code <= 4999:
                raise ValueError("invalid close code %r: must be 1000 or in 3000-4999" % (code,))
        super().__init__(code)
        self._code = code

    def run(self, message: Replyable) -> None:
        if message.reply_channel is None:
            raise ValueError("WebsocketCloseException raised for a message with no reply channel")
        close: Any = True if self._code is None else self._code
        message.reply_channel.send({"close": close}, immediately=True)


class RouteTimeout(Exception):
    """
    Matching a route filter's regular expression against a message ran out
    of time: routing one message may spend at most ``CHANSERV_ROUTE_TIMEOUT``
    seconds (0.5 by default) in regular expressions, so a pattern that
    backtracks catastrophically cannot hold a worker thread for long.

    Raised by ``Router.match`` (and ``route(...).match``); the worker logs it
    -- naming the route, the filter and the channel -- and calls
    :meth:`answer`.

    :ivar route: the ``repr`` of the route or include whose filter timed out.
    :ivar key: the filter's key (``"path"``).
    :ivar pattern: the filter's pattern.
    :ivar channel: the message's channel.
    :ivar timeout: the time limit, in seconds.
    """

    def __init__(self, route: str, key: str, pattern: str, channel: str, timeout: float) -> None:
        super().__init__(route, key, pattern, channel, timeout)
        self.route = route
        self.key = key
        self.pattern = pattern
        self.channel = channel
        self.timeout = timeout

    def __str__(self) -> str:
        return (
            "Routing a message on %s ran out of time (%gs, CHANSERV_ROUTE_TIMEOUT) "
            "in filter %s=%r of %s"
            % (self.channel, self.timeout, self.key, self.pattern, self.route)
        )

    def answer(self, message: Replyable) -> str:
        """
        Tell the client, as far as one is waiting, and say how:

        - ``http.request``: a plain ``500 Internal Server Error`` (the fault
          is the application's pattern, not the request);
        - ``websocket.connect``: ``{"close": True}`` -- the handshake is
          refused with a 403;
        - ``websocket.receive``: ``{"close": 1011}`` -- an open socket must
          not silently miss a message;
        - any other channel: nothing, the message is dropped.

        Never raises: a failure to send is described in the result.  A
        worker thread.

        :returns: what was done, for the log (``"answered 500"``).
        """
        reply: dict[str, Any]
        if self.channel == "http.request":
            reply = {
                "status": 500,
                "headers": [[b"content-type", b"text/plain; charset=utf-8"]],
                "content": b"500 Internal Server Error\n",
                "more_content": False,
            }
            outcome = "answered 500"
        elif self.channel == "websocket.connect":
            reply, outcome = {"close": True}, "handshake refused (403)"
        elif self.channel == "websocket.receive":
            reply, outcome = {"close": 1011}, "socket closed with 1011"
        else:
            return "message dropped"
        if message.reply_channel is None:
            return "message dropped (no reply channel)"
        try:
            message.reply_channel.send(reply, immediately=True)
        except Exception as e:
            return "message dropped; the answer could not be sent: %r" % (e,)
        return outcome


class SendNotAvailableOnDemultiplexer(Exception):
    """
    ``send`` and ``group_send`` make no sense on a demultiplexer itself.
    """
