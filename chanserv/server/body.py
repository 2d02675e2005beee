"""
Streaming a large request body to its ``http.request.body?`` channel as
ASGI 1.0 Request Body Chunks, in order, pausing the client while the
channel is full.  Reactor thread only.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.python.failure import Failure

from chanserv.exceptions import ChannelFull
from chanserv.interfaces import IReactorChannelLayer
from chanserv.log import Logger
from chanserv.server.sender import OrderedSender
from chanserv.types import Content

__all__ = ["BodyStreamer"]

log = Logger()


class BodyStreamer:
    """
    Sends body bytes fed to it to ``channel`` in chunks, through an
    :class:`~chanserv.server.sender.OrderedSender`.  Reactor thread only.

    :param layer: the channel layer's reactor face.
    :param channel: the body channel name.
    :param chunk_size: bytes per chunk message (the last one may be shorter).
    :param producer: what pauses reading the connection (``pauseProducing``,
        ``resumeProducing``): paused while the channel is full or two chunks
        are buffered.
    :param on_error: called with a Failure if a send fails for a reason other
        than ``ChannelFull`` (the request cannot continue).
    :param started: send as soon as there is something to send; if False,
        only buffer until :meth:`start` (the request itself is not on the
        layer yet).
    :param clock: to time the pauses with, or None not to time them.
    """

    def __init__(
        self,
        layer: IReactorChannelLayer,
        channel: str,
        chunk_size: int,
        producer: IPushProducer,
        on_error: Callable[[Failure], object] | None = None,
        started: bool = True,
        clock: IReactorTime | None = None,
    ) -> None:
        self.channel = channel
        self._on_error = on_error
        self._chunks = _Chunks(chunk_size)
        self._ended = False  # the last message is handed out, or stopped
        self._sender = OrderedSender(
            layer,
            channel,
            producer,
            pause_at=2,  # whole chunks buffered: at most two in memory
            resume_at=1,
            source=self._chunks,
            on_error=self._failed,
            clock=clock,
            started=started,
        )

    def start(self) -> None:
        """Begin sending (see ``started``)."""
        self._sender.start()

    @property
    def blocked(self) -> bool:
        """True while the channel is full and the streamer waits for room."""
        return self._sender.blocked

    @property
    def paused(self) -> bool:
        """True while the streamer keeps the connection from being read."""
        return self._sender.paused

    def paused_seconds(self, now: float) -> float:
        """
        Seconds the streamer has kept the connection paused up to reactor
        time ``now`` (0 without a clock).
        """
        return self._sender.paused_seconds(now)

    @property
    def finished(self) -> bool:
        """True once the last message has been sent (or the streamer stopped)."""
        return self._sender.done

    def feed(self, data: bytes) -> None:
        """More body bytes arrived."""
        chunks = self._chunks
        if self._ended or chunks.complete:
            return
        chunks.buffer += data
        self._sender.pump()

    def finish(self) -> None:
        """The body is complete: send what is left with ``more_content`` False."""
        if self._ended or self._chunks.complete:
            return
        self._chunks.complete = True
        self._ending(self._sender.finish(self._last_chunk))

    def abort(self) -> None:
        """
        The client went away (or the body was refused) before the end: drop
        what is buffered and send ``{"closed": True}`` -- unless the channel is
        full, in which case nothing more is sent (the consumer's body read
        times out).
        """
        sender = self._sender
        if sender.blocked:
            self.stop()
            return
        if self._ended:
            return
        self._chunks.complete = True  # nothing more is fed
        sender.drop()
        self._ending(sender.finish(self._closed, timeout=0))

    def stop(self) -> None:
        """Stop silently: nothing more is sent, a wait for room is cancelled."""
        self._ended = True
        self._sender.stop()

    # -- internals -----------------------------------------------------------------

    def _last_chunk(self) -> Content:
        # Called by the sender when every chunk before it is on the layer.
        self._ended = True
        return self._chunks.rest()

    def _closed(self) -> Content:
        self._ended = True
        return {"closed": True}

    def _failed(self, failure: Failure) -> None:
        self.stop()
        if self._on_error is not None:
            self._on_error(failure)
        else:
            log.failure("Sending to body channel {channel} failed", failure, channel=self.channel)

    def _ending(self, d: Deferred[None]) -> None:
        d.addErrback(self._final_failed)
        d.addErrback(
            lambda f: log.failure("Ending the body on {channel} failed", f, channel=self.channel)
        )

    def _final_failed(self, failure: Failure) -> None:
        if failure.check(CancelledError):
            return  # stopped, or the last chunk replaced by {"closed": True}
        if failure.check(ChannelFull):  # only {"closed": True} is not waited on
            log.debug("Body channel {channel} full: closed message dropped", channel=self.channel)
            return
        self._failed(failure)


class _Chunks:
    """
    The body bytes not sent yet, cut into chunk messages as the sender
    takes them (a :class:`~chanserv.server.sender.MessageSource`): a chunk
    is cut only when its turn comes, so a body whose end is known by then
    ends with a full chunk rather than an extra empty one.
    """

    __slots__ = ("buffer", "complete", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.buffer = bytearray()
        self.complete = False  # the whole body was fed

    def take(self) -> Content | None:
        """The next chunk, unless it may be the last (see :meth:`rest`)."""
        buffer, size = self.buffer, self.size
        if len(buffer) > size or (len(buffer) == size and not self.complete):
            chunk = bytes(buffer[:size])
            del buffer[:size]
            return {"content": chunk, "more_content": True}
        return None

    def rest(self) -> Content:
        """The last chunk: what is left, with ``more_content`` False."""
        chunk = bytes(self.buffer)
        self.buffer = bytearray()
        return {"content": chunk, "more_content": False}

    def __len__(self) -> int:
        return len(self.buffer) // self.size

    def clear(self) -> None:
        self.buffer = bytearray()
