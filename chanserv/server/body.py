"""
Streaming a large request body to its ``http.request.body?`` channel.

A request whose body is larger than ``body_inline_size`` is dispatched with
the first part in ``body`` and a ``body_channel``; :class:`BodyStreamer` then
sends the rest there as ASGI 1.0 Request Body Chunks -- ``{"content",
"more_content"}``, or ``{"closed": True}`` when the client goes away -- one
send at a time so chunks stay in order on any layer.  While the channel is
full the connection is not read (its transport is paused, so TCP slows the
client) until the layer says there is room again: a slow consumer slows the
upload instead of filling memory.  Given a clock, the streamer also adds up
how long it kept the connection paused, so that time is not held against
the client by the request's deadline (:meth:`BodyStreamer.paused_seconds`).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure

from chanserv.exceptions import ChannelFull
from chanserv.log import Logger

__all__ = ["BodyStreamer"]

log = Logger()


class BodyStreamer:
    """
    Sends body bytes fed to it to ``channel`` in chunks.  Reactor thread only.

    :param layer: the channel layer (``send_twisted``, ``when_capacity_twisted``).
    :param channel: the body channel name.
    :param chunk_size: bytes per chunk message (the last one may be shorter).
    :param producer: the connection's ``IPushProducer`` (its transport),
        paused while the channel is full or too much is buffered.
    :param on_error: called with a Failure if a send fails for a reason other
        than ``ChannelFull`` (the request cannot continue).
    :param started: send as soon as there is something to send; if False,
        only buffer until :meth:`start` (the request itself is not on the
        layer yet).
    :param clock: an ``IReactorTime`` (``seconds()``) to time the pauses
        with, or None not to time them.
    """

    def __init__(
        self,
        layer: Any,
        channel: str,
        chunk_size: int,
        producer: Any,
        on_error: Any = None,
        started: bool = True,
        clock: Any = None,
    ) -> None:
        self._layer = layer
        self.channel = channel
        self._chunk_size = chunk_size
        self._producer = producer
        self._on_error = on_error
        self._buffer = bytearray()
        self._complete = False  # the whole body was fed
        self._closed_due = False  # {"closed": True} to send
        self._done = False  # the last message is taken: nothing more to send
        self._retry: dict[str, Any] | None = None  # message to send again
        self._sending = False
        self._pumping = False
        self._room: Deferred[None] | None = None
        self._paused = False
        self._clock = clock
        self._paused_at = 0.0  # when the current pause began
        self._paused_total = 0.0  # seconds of the pauses that ended
        self._started = started
        #: True while the channel is full and the streamer waits for room.
        self.blocked = False

    def start(self) -> None:
        """Begin sending (see ``started``)."""
        self._started = True
        self._pump()

    @property
    def paused(self) -> bool:
        """True while the streamer keeps the connection from being read."""
        return self._paused

    def paused_seconds(self, now: float) -> float:
        """
        Seconds the streamer has kept the connection paused up to reactor
        time ``now`` (0 without a clock).
        """
        if self._clock is None:
            return 0.0
        if self._paused:
            return self._paused_total + max(0.0, now - self._paused_at)
        return self._paused_total

    @property
    def finished(self) -> bool:
        """True once the last message has been sent (or the streamer stopped)."""
        return self._done and self._retry is None and not self._sending

    def feed(self, data: bytes) -> None:
        """More body bytes arrived."""
        if self._done or self._complete:
            return
        self._buffer += data
        self._pump()

    def finish(self) -> None:
        """The body is complete: send what is left with ``more_content`` False."""
        if self._done:
            return
        self._complete = True
        self._pump()

    def abort(self) -> None:
        """
        The client went away (or the body was refused) before the end: drop
        what is buffered and send ``{"closed": True}`` -- unless the channel is
        full, in which case nothing more is sent (the consumer's body read
        times out).
        """
        if self._done and self._retry is None:
            return
        self._buffer = bytearray()
        self._retry = None
        if self.blocked:
            self.stop()
            return
        self._closed_due = True
        self._done = False
        self._pump()

    def stop(self) -> None:
        """Stop silently: nothing more is sent, a wait for room is cancelled."""
        self._done = True
        self._closed_due = False
        self._retry = None
        self._buffer = bytearray()
        self.blocked = False
        room, self._room = self._room, None
        if room is not None:
            room.cancel()
        self._flow()

    # -- internals -----------------------------------------------------------

    def _take(self) -> dict[str, Any] | None:
        if self.blocked or not self._started:
            return None
        if self._retry is not None:
            message, self._retry = self._retry, None
            return message
        if self._closed_due:
            self._closed_due = False
            self._done = True
            return {"closed": True}
        if self._done:
            return None
        size = self._chunk_size
        if len(self._buffer) >= size and (len(self._buffer) > size or not self._complete):
            chunk = bytes(self._buffer[:size])
            del self._buffer[:size]
            return {"content": chunk, "more_content": True}
        if self._complete:
            self._done = True
            chunk = bytes(self._buffer)
            self._buffer = bytearray()
            return {"content": chunk, "more_content": False}
        return None

    def _pump(self) -> None:
        # Loops instead of recursing: with the in-memory layer each send's
        # Deferred has fired before send_twisted returns.
        if self._pumping:
            return
        self._pumping = True
        try:
            while not self._sending:
                message = self._take()
                if message is None:
                    break
                self._sending = True
                d = self._layer.send_twisted(self.channel, message)
                d.addCallbacks(self._sent, self._failed, errbackArgs=(message,))
                d.addErrback(lambda f: log.failure("Streaming a request body failed", f))
        finally:
            self._pumping = False
        self._flow()

    def _sent(self, _: None) -> None:
        self._sending = False
        self._pump()

    def _failed(self, failure: Failure, message: dict[str, Any]) -> None:
        self._sending = False
        if failure.check(ChannelFull) and self._closed_due:
            self._pump()  # the client is gone: send the closed message instead
            return
        if failure.check(ChannelFull) and not message.get("closed"):
            self._retry = message
            self.blocked = True
            self._flow()
            self._room = self._layer.when_capacity_twisted(self.channel)
            self._room.addCallbacks(self._has_room, self._room_failed)
            return
        if failure.check(ChannelFull):
            log.debug("Body channel {channel} full: closed message dropped", channel=self.channel)
            self.stop()
            return
        self.stop()
        if self._on_error is not None:
            self._on_error(failure)
        else:
            log.failure("Sending to body channel {channel} failed", failure, channel=self.channel)

    def _has_room(self, _: None) -> None:
        self._room = None
        self.blocked = False
        self._pump()

    def _room_failed(self, failure: Failure) -> None:
        self._room = None
        if not failure.check(CancelledError):
            log.failure("Waiting for room on {channel} failed", failure, channel=self.channel)

    def _flow(self) -> None:
        # Keep at most two chunks in memory; read nothing while blocked.
        want_pause = not self._done and (self.blocked or len(self._buffer) >= 2 * self._chunk_size)
        if want_pause and not self._paused:
            self._paused = True
            if self._clock is not None:
                self._paused_at = self._clock.seconds()
            self._producer.pauseProducing()
        elif not want_pause and self._paused:
            self._paused = False
            if self._clock is not None:
                self._paused_total += max(0.0, self._clock.seconds() - self._paused_at)
            self._producer.resumeProducing()
