"""
:class:`OrderedSender`: one message in flight at a time to one channel of
the layer, waiting for room instead of dropping and pausing the client
meanwhile, then the message that ends the stream.  Reactor thread only.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.python.failure import Failure

from chanserv.exceptions import ChannelFull
from chanserv.interfaces import IChannelLayer, IReactorChannelLayer, ISendToSink
from chanserv.log import Logger
from chanserv.server.delivery import send_until_delivered
from chanserv.types import Content

__all__ = ["MessageSource", "OrderedSender"]

log = Logger()

Message = Content


class MessageSource(Protocol):
    """
    Where an :class:`OrderedSender` takes its messages from when it is not
    given them one by one: the source builds each message when its turn
    comes (a request body is cut into chunks as they are sent).
    """

    def take(self) -> Message | None:
        """The next message to send, or None if there is none yet."""

    def __len__(self) -> int:
        """How many messages are ready to be taken (what ``pause_at`` counts)."""

    def clear(self) -> None:
        """Forget every message not taken yet."""


class OrderedSender:
    """
    Sends a stream of messages to ``channel``, in order, then a final one.
    Reactor thread only: every method, and the layer's Deferreds.

    **Order.**  A message is handed to the layer (``send_twisted``) only
    once the layer has accepted the one before it, so the messages arrive
    in the order they were given on every layer.  ``delivered`` counts the
    messages of the stream the layer accepted.

    **Channel full** (:class:`~chanserv.exceptions.ChannelFull`).  The
    refused message is kept and sent again, before any other, once
    ``when_capacity_twisted`` says the channel has room.  Meanwhile the
    sender is :attr:`blocked` and the producer paused; ``blocked_since``
    (with a clock) is when the stream last stopped getting through.  The
    sender never gives up by itself: how long a full channel is acceptable
    is the owner's call (:meth:`drop`).

    **Back-pressure.**  The producer (an ``IPushProducer``: the
    connection's transport) is paused while the channel is full or while
    ``pause_at`` or more messages wait behind the one in flight, and
    resumed once there is room and at most ``resume_at`` wait.  Once the
    final message is handed to the layer it is never paused again: there
    is nothing more to read for this stream.  Set :attr:`producer` to None
    when the connection is gone.

    **Other failures** -- a layer outage (``ConnectionError``),
    :class:`~chanserv.exceptions.MessageTooLarge`, anything else: the
    stream now has a gap, so the sender drops what is left of it (as
    :meth:`drop` does) and calls ``on_error(failure)`` for the owner to
    end the connection; it does not retry.  The final message still goes.

    **The end.**  :meth:`finish` sends a final message once every message
    given before it has been accepted or dropped, with its own rules for a
    full channel or an outage (see there).  :meth:`drop` discards the rest
    of the stream, keeping the final message; :meth:`stop` sends nothing
    more at all.

    :param layer: the channel layer's reactor face.
    :param channel: the channel the stream goes to.
    :param producer: what to pause (the transport), or None.
    :param pause_at: messages waiting (not counting the one in flight) at
        which the producer is paused.
    :param resume_at: messages waiting at or below which it is resumed.
    :param source: a :class:`MessageSource` to take the messages from; without
        one, messages are given with :meth:`send`.
    :param on_error: called with the Failure when a message of the stream
        fails for a reason other than a full channel; None to log it.
    :param clock: for ``blocked_since``, :meth:`paused_seconds` and a final
        message's timeout; None to do without them (and without a timeout).
    :param started: False to only queue until :meth:`start` (what the
        stream follows is not on the layer yet).
    """

    __slots__ = (
        "_clock",
        "_closed",
        "_current",
        "_dropped",
        "_final",
        "_final_sent",
        "_finishing",
        "_held",
        "_layer",
        "_on_error",
        "_pause_at",
        "_paused_at",
        "_paused_total",
        "_pumping",
        "_queue",
        "_resume_at",
        "_retry",
        "_room",
        "_send_now",
        "_send_to",
        "_source",
        "_stopped",
        "blocked_since",
        "channel",
        "delivered",
        "paused",
        "producer",
    )

    def __init__(
        self,
        layer: IReactorChannelLayer,
        channel: str,
        producer: IPushProducer | None = None,
        *,
        pause_at: int = 1,
        resume_at: int = 0,
        source: MessageSource | None = None,
        on_error: Callable[[Failure], object] | None = None,
        clock: IReactorTime | None = None,
        started: bool = True,
    ) -> None:
        self._layer = layer
        # The synchronous send of a layer whose sends complete at once.
        self._send_now = (
            IChannelLayer(layer).send if getattr(layer, "sends_at_once", False) else None
        )
        # A layer that answers later, to this sender itself (no Deferred per message).
        sink_layer = ISendToSink(layer, None)
        self._send_to = None if sink_layer is None else sink_layer.send_twisted_to
        self.channel = channel
        self.producer = producer
        self._pause_at = pause_at
        self._resume_at = resume_at
        self._source = source
        self._on_error = on_error
        self._clock = clock
        self._held = not started
        #: Messages of the stream the layer accepted.
        self.delivered = 0
        #: Reactor time since when no message got through a full channel.
        self.blocked_since: float | None = None
        #: True while the sender keeps the producer paused.
        self.paused = False
        self._paused_at = 0.0
        self._paused_total = 0.0
        self._queue: deque[Message] | None = None  # given, not sent yet
        self._current: Message | None = None  # in flight
        self._retry: Message | None = None  # refused as full, sent again on room
        self._room: Deferred[None] | None = None  # the wait for room
        self._pumping = False
        self._closed = False  # dropped, finished or stopped: send() takes no more
        self._dropped = False
        self._stopped = False
        # (final, channel, timeout) from finish() until the final message is sent
        self._final: tuple[Any, str, float | None] | None = None
        self._final_sent = False
        self._finishing: Deferred[None] | None = None

    # -- state ------------------------------------------------------------------

    @property
    def blocked(self) -> bool:
        """True while the channel is full and the sender waits for room."""
        return self._room is not None

    @property
    def done(self) -> bool:
        """
        True once the final message has been handed to the layer (or the
        sender stopped) and nothing is in flight or waiting for room.
        """
        return (self._final_sent or self._stopped) and self._current is None and self._retry is None

    def paused_seconds(self, now: float) -> float:
        """
        Seconds the producer has been kept paused up to reactor time
        ``now`` (0 without a clock).
        """
        if self._clock is None:
            return 0.0
        if self.paused:
            return self._paused_total + max(0.0, now - self._paused_at)
        return self._paused_total

    # -- the stream -------------------------------------------------------------

    def send(self, message: Message) -> None:
        """
        Send ``message`` after every message given before it (it is
        dropped if the stream was dropped, finished or stopped).  For a
        sender without a source.
        """
        if self._closed:
            return
        queue = self._queue
        if queue is None:
            if (
                self._current is None
                and self._room is None
                and not self._held
                and not self._pumping
            ):
                self._transmit(message)
                return
            queue = self._queue = deque()
        queue.append(message)
        if not self.paused and len(queue) >= self._pause_at:
            self._flow()

    def pump(self) -> None:
        """The source has new messages (or fewer): send what can be sent."""
        self._pump()

    def start(self) -> None:
        """Begin sending (see ``started``)."""
        self._held = False
        self._pump()

    # -- the end ----------------------------------------------------------------

    def finish(
        self,
        final: Message | Callable[[], Message] | None = None,
        *,
        channel: str | None = None,
        timeout: float | None = None,
    ) -> Deferred[None]:
        """
        End the stream: messages given later are dropped.  Once every
        message given before (and every message the source still gives)
        has been accepted by the layer or dropped, send ``final`` to
        ``channel`` (by default the stream's).  ``final``
        is a message, or a callable called at that moment to build it (a
        ``websocket.disconnect`` counts the messages delivered), or None
        for no final message.

        ``timeout`` sets the final message's rules: None, those of the
        stream (a full channel is waited on, for as long as it takes);
        0, one attempt; more, a full channel is waited on and an
        unreachable layer retried
        (:func:`~chanserv.server.delivery.send_until_delivered`) for up to
        that many seconds after the first attempt.

        Called again before the final message was handed to the layer, the
        new one replaces it (the first Deferred fails with
        ``CancelledError``).

        :return: a Deferred that fires with None once the final message is
            on the layer (or, without one, once the stream is all sent),
            fails with the last error if it could not be sent, and with
            ``CancelledError`` if :meth:`stop` came first or the final
            message was already handed out.
        """
        if self._stopped or self._final_sent:
            return fail(CancelledError())
        self._closed = True
        previous = self._finishing
        d: Deferred[None] = Deferred()
        self._finishing = d
        self._final = (final, channel or self.channel, timeout)
        if previous is not None:
            previous.errback(CancelledError())
        self._pump()
        return d

    def drop(self) -> None:
        """
        Drop the rest of the stream: the messages waiting, the one waiting
        for room (whose wait is cancelled), the one in flight should the
        layer refuse it as full, and every message given later.  The final
        message still goes, once nothing is in flight.
        """
        self._dropped = self._closed = True
        self._queue = None
        if self._source is not None:
            self._source.clear()
        if not self._final_sent:
            self._retry = None
            self.blocked_since = None
            self._cancel_room()
        self._pump()

    def stop(self) -> None:
        """
        Send nothing more, the final message included (a :meth:`finish`
        Deferred not fired yet fails with ``CancelledError``); cancel a wait
        for room and resume the producer.  A message in flight still
        completes, but its failure is only logged.
        """
        self._stopped = self._closed = True
        self._queue = None
        if self._source is not None:
            self._source.clear()
        self._retry = None
        self._final = None
        self.blocked_since = None
        self._cancel_room()
        if self._current is None or not self._final_sent:
            self._resolve(Failure(CancelledError()))
        self._flow()

    # -- internals --------------------------------------------------------------

    def _pump(self) -> None:
        # Loops instead of recursing: with the in-memory layer each send's
        # Deferred has fired before send_twisted returns.
        if self._pumping:
            return
        self._pumping = True
        try:
            while (
                self._current is None
                and self._room is None
                and not self._held
                and not self._stopped
            ):
                message = self._retry
                if message is not None:
                    self._retry = None
                elif self._final_sent:
                    break
                else:
                    message = self._take()
                    if message is None:
                        if self._final is not None:
                            self._send_final()
                        break
                self._transmit(message)
        finally:
            self._pumping = False
        self._flow()

    def _take(self) -> Message | None:
        if self._dropped:
            return None
        if self._source is not None:
            return self._source.take()
        queue = self._queue
        if queue:
            return queue.popleft()
        self._queue = None  # a deque is large: an idle stream keeps none
        return None

    def _waiting(self) -> int:
        if self._source is not None:
            return len(self._source)
        queue = self._queue
        return 0 if queue is None else len(queue)

    def _transmit(self, message: Message) -> None:
        self._current = message
        channel = self.channel if not self._final_sent else self._final_channel()
        send_now = self._send_now
        if send_now is None:
            send_to = self._send_to
            if send_to is not None:
                send_to(channel, message, self)  # callback / errback below
                return
            d = self._layer.send_twisted(channel, message)
            d.addCallbacks(self._sent, self._failed)
            d.addErrback(_crashed)
            return
        # What send_twisted would do, without its already-fired Deferred.
        try:
            send_now(channel, message)
        except Exception:
            failure = Failure()
            try:
                self._failed(failure)
            except Exception:
                _crashed(Failure())
            return
        try:
            self._sent(None)
        except Exception:
            _crashed(Failure())

    def callback(self, result: None) -> None:
        """
        :class:`~chanserv.interfaces.SendSink`: the layer accepted the
        message in flight (an :class:`~chanserv.interfaces.ISendToSink`
        layer answers here instead of through a Deferred).
        """
        try:
            self._sent(None)
        except Exception:
            _crashed(Failure())

    def errback(self, reason: BaseException | Failure) -> None:
        """:class:`~chanserv.interfaces.SendSink`: the message in flight was refused or failed."""
        try:
            self._failed(reason if isinstance(reason, Failure) else Failure(reason))
        except Exception:
            _crashed(Failure())

    def _final_channel(self) -> str:
        final = self._final
        return self.channel if final is None else final[1]

    def _sent(self, _: None) -> None:
        self._current = None
        if self._final_sent:
            self._final = None
            self._resolve(None)
            self._flow()
            return
        self.delivered += 1
        self.blocked_since = None
        if self._pumping:
            return  # the loop in _pump goes on
        if self._queue is None and self._source is None and self._final is None and not self.paused:
            return  # nothing waits: the common case, kept short
        self._pump()

    def _failed(self, failure: Failure) -> None:
        message, self._current = self._current, None
        if self._final_sent:
            if failure.check(ChannelFull) and not self._stopped:
                self._wait_for_room(message)
            else:
                self._final = None
                self._resolve(failure)
            return
        if self._stopped:
            if not failure.check(ChannelFull, ConnectionError):
                log.failure("Sending to {channel} failed", failure, channel=self.channel)
            return
        if failure.check(ChannelFull):
            if self._dropped:
                self._pump()  # not sent after all: on to the final message
            else:
                self._wait_for_room(message)
            return
        self.drop()
        if self._on_error is not None:
            self._on_error(failure)
        else:
            log.failure("Sending to {channel} failed", failure, channel=self.channel)

    def _wait_for_room(self, message: Message | None) -> None:
        self._retry = message
        if self.blocked_since is None and self._clock is not None:
            self.blocked_since = self._clock.seconds()
        channel = self.channel if not self._final_sent else self._final_channel()
        room = self._room = self._layer.when_capacity_twisted(channel)
        self._flow()
        room.addCallbacks(self._has_room, self._room_failed)

    def _has_room(self, _: None) -> None:
        self._room = None
        self._pump()

    def _room_failed(self, failure: Failure) -> None:
        self._room = None
        if not failure.check(CancelledError):
            log.failure("Waiting for room on {channel} failed", failure, channel=self.channel)

    def _cancel_room(self) -> None:
        room, self._room = self._room, None
        if room is not None:
            room.cancel()

    def _send_final(self) -> None:
        assert self._final is not None
        final, channel, timeout = self._final
        self._final_sent = True
        message = final() if callable(final) else final
        if message is None:
            self._final = None
            self._resolve(None)
            return
        if timeout is None:
            self._transmit(message)  # the stream's rules
            return
        self._current = message
        if timeout > 0:
            assert self._clock is not None, "a timeout needs a clock"
            d = send_until_delivered(self._layer, self._clock, channel, message, timeout)
        else:
            d = self._layer.send_twisted(channel, message)
        d.addCallbacks(self._final_done, self._final_failed)
        d.addErrback(_crashed)

    def _final_done(self, _: None) -> None:
        self._current = None
        self._final = None
        self._resolve(None)

    def _final_failed(self, failure: Failure) -> None:
        self._current = None
        self._final = None
        self._resolve(failure)

    def _resolve(self, result: Failure | None) -> None:
        d, self._finishing = self._finishing, None
        if d is None:
            return
        if result is None:
            d.callback(None)
        else:
            d.errback(result)

    def _flow(self) -> None:
        if self._stopped or self._final_sent:
            want = False
        elif self.paused:
            want = self._room is not None or self._waiting() > self._resume_at
        else:
            want = self._room is not None or self._waiting() >= self._pause_at
        if want == self.paused:
            return
        self.paused = want
        clock = self._clock
        if want:
            if clock is not None:
                self._paused_at = clock.seconds()
            if self.producer is not None:
                self.producer.pauseProducing()
        else:
            if clock is not None:
                self._paused_total += max(0.0, clock.seconds() - self._paused_at)
            if self.producer is not None:
                self.producer.resumeProducing()


def _crashed(failure: Failure) -> None:
    log.failure("An ordered send's callback failed", failure)
