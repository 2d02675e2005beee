"""
The worker: takes messages off the channel layer and runs their consumers.

:class:`Worker` is a service on the reactor thread.  It asks the layer for
messages only when a pool thread is free -- ``receive_many_twisted`` with a
limit equal to the number of idle threads -- so the backlog stays in the
layer, where capacity turns it into back-pressure (a 503, a paused socket)
instead of an unbounded queue in this process.  Each message then runs in a
pool thread through :meth:`Worker.handle`: route, ``consumer_started``,
consumer, ``consumer_finished``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure

from chanserv.exceptions import (
    ChannelFull,
    ChannelSocketException,
    ConsumeLater,
    DenyConnection,
)
from chanserv.log import Logger
from chanserv.message import Message, send_waiting
from chanserv.signals import consumer_finished, consumer_started, worker_ready
from chanserv.threads import WorkerPool, batcher_for

log = Logger()

__all__ = [
    "DEFAULT_MESSAGE_RETRIES",
    "Worker",
    "filter_channels",
    "requeue_message",
    "run_consumer",
]

#: How often ``ConsumeLater`` may requeue a message before it is dropped.
DEFAULT_MESSAGE_RETRIES = 10


def filter_channels(
    channels: Iterable[str],
    only_channels: Sequence[str] | None = None,
    exclude_channels: Sequence[str] | None = None,
) -> list[str]:
    """
    The channels a worker listens on: ``channels`` kept if they match one of
    the ``only_channels`` globs (when given) and none of ``exclude_channels``.
    """
    result = []
    for name in sorted(channels):
        if only_channels and not any(fnmatch.fnmatchcase(name, p) for p in only_channels):
            continue
        if exclude_channels and any(fnmatch.fnmatchcase(name, p) for p in exclude_channels):
            continue
        result.append(name)
    return result


class Worker(Service):
    """
    Dispatches routed messages from ``channel_layer`` to ``pool``.

    :param channel_layer: a layer wrapper with a ``router`` (see
        :mod:`chanserv.asgi`); its reactor face is used on the reactor thread
        and its synchronous face from pool threads.
    :param pool: the started-before-us :class:`~chanserv.threads.WorkerPool`.
    :param only_channels: globs; listen only on routed channels matching one.
    :param exclude_channels: globs; never listen on channels matching one.
    :param message_retries: how often ``ConsumeLater`` may requeue a message.
    :param graceful_timeout: seconds ``stopService`` waits for consumers in
        flight before giving up on them.
    """

    name = "worker"
    #: Seconds between attempts to receive again after the layer failed.
    retry_delays = (0.1, 0.5, 1.0, 2.0, 5.0)

    def __init__(
        self,
        reactor: Any,
        channel_layer: Any,
        pool: WorkerPool,
        only_channels: Sequence[str] | None = None,
        exclude_channels: Sequence[str] | None = None,
        message_retries: int = DEFAULT_MESSAGE_RETRIES,
        graceful_timeout: float = 30.0,
        verbosity: int = 1,
    ) -> None:
        self._reactor = reactor
        self.channel_layer = channel_layer
        self.router = channel_layer.router
        self.pool = pool
        self.message_retries = message_retries
        self.graceful_timeout = graceful_timeout
        self.verbosity = verbosity
        self.channels = filter_channels(self.router.channels, only_channels, exclude_channels)
        self._receiving: Deferred[Any] | None = None
        self._failures = 0
        self._retry_call: Any = None
        self._drained: Deferred[None] | None = None
        self._pull_scheduled = False
        self._batcher = batcher_for(reactor)

    # -- reactor thread ------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        if not self.channels:
            log.warn(
                "The worker has no channels to listen on; check the routing and "
                "--only-channels / --exclude-channels"
            )
        else:
            log.info("Worker listening on {channels}", channels=", ".join(self.channels))
        worker_ready.send(sender=self)
        self._pull()

    def _pull(self) -> None:
        if not self.running or self._receiving is not None or not self.channels:
            return
        if self._retry_call is not None:
            return
        free = self.pool.idle
        if free <= 0:
            return
        d = self.channel_layer.receive_many_twisted(self.channels, free)
        self._receiving = d
        d.addCallbacks(self._received, self._receive_failed)
        d.addErrback(lambda f: log.failure("Worker dispatch failed", f))

    def _received(self, batch: list[tuple[str, dict[str, Any]]]) -> None:
        self._receiving = None
        self._failures = 0
        for channel, content in batch:
            self.pool.submit(self._consume, channel, content, on_done=self._done)
        self._pull()

    def _receive_failed(self, failure: Failure) -> None:
        self._receiving = None
        if failure.check(CancelledError) and not self.running:
            return
        delay = self.retry_delays[min(self._failures, len(self.retry_delays) - 1)]
        self._failures += 1
        if failure.check(ConnectionError):
            # The layer is unreachable (Redis down or restarting): expected
            # and handled here, so no traceback.
            log.warn(
                "Channel layer unavailable ({error}); receiving again in {delay}s",
                error=failure.value,
                delay=delay,
            )
        else:
            log.failure(
                "Receiving from the channel layer failed; retrying in {delay}s",
                failure,
                delay=delay,
            )
        self._retry_call = self._reactor.callLater(delay, self._retry)

    def _retry(self) -> None:
        self._retry_call = None
        self._pull()

    def _done(self) -> None:
        if self.running:
            # Completions arrive in batches (one reactor wake-up for all the
            # threads that finished meanwhile): pull once after the batch,
            # for as many messages as threads came free, rather than one
            # receive per completion.
            if not self._pull_scheduled:
                self._pull_scheduled = True
                self._batcher.call(self._scheduled_pull)
        elif self._drained is not None and self.pool.busy == 0:
            d, self._drained = self._drained, None
            d.callback(None)

    def _scheduled_pull(self) -> None:
        self._pull_scheduled = False
        self._pull()

    def stopService(self) -> Deferred[None]:
        """
        Stop taking messages; fire once the consumers in flight have
        finished, or after ``graceful_timeout`` seconds (logged).
        """
        super().stopService()
        if self._retry_call is not None:
            self._retry_call.cancel()
            self._retry_call = None
        if self._receiving is not None:
            d, self._receiving = self._receiving, None
            d.cancel()
        drained: Deferred[None] = Deferred()
        if self.pool.busy == 0:
            drained.callback(None)
            return drained
        log.info("Waiting for {n} consumer(s) in flight to finish", n=self.pool.busy)
        self._drained = drained

        def gave_up(result: Any, timeout: float) -> None:
            self._drained = None
            log.warn(
                "{n} consumer(s) still running after {t}s; stopping without them",
                n=self.pool.busy,
                t=timeout,
            )

        drained.addTimeout(self.graceful_timeout, self._reactor, onTimeoutCancel=gave_up)
        return drained

    # -- pool thread ---------------------------------------------------------

    def _consume(self, channel: str, content: dict[str, Any]) -> None:
        """
        Handle a message, then -- with a layer whose receive is only a lock
        (:attr:`~chanserv.layers.base.BaseChannelLayer.cheap_receive`) --
        keep taking the next waiting message from this thread while there is
        one.  Under load a message then goes from the layer to a free thread
        without a round trip through the reactor; when the channels are
        empty the thread returns to the pool.  Runs in a pool thread.
        """
        self.handle(channel, content)
        layer = self.channel_layer
        if not getattr(layer, "cheap_receive", False):
            return
        channels = self.channels
        while self.running:
            next_channel, next_content = layer.receive(channels)
            if next_channel is None:
                return
            self.handle(next_channel, next_content)

    def handle(self, channel: str, content: dict[str, Any]) -> None:
        """
        Route and run one message.  Runs in a pool thread.

        Never raises: every consumer error is logged, so one failing consumer
        does not affect the others.
        """
        message = Message(content, channel, self.channel_layer)
        try:
            match = self.router.match(message)
        except Exception:
            log.failure("Routing a message on {channel} failed", channel=channel)
            return
        if match is None:
            log.error(
                "Could not find a route for a message on {channel} (path {path!r}); it was dropped",
                channel=channel,
                path=content.get("path"),
            )
            return
        consumer, kwargs = match
        if self.verbosity > 1:
            log.debug("{channel} -> {consumer}", channel=channel, consumer=consumer)
        try:
            run_consumer(
                consumer,
                message,
                kwargs,
                sender=self.__class__,
                message_retries=self.message_retries,
            )
        except BaseException:
            # Logged, never propagated: SystemExit and KeyboardInterrupt from a
            # consumer must not take the pool thread down.
            log.failure(
                "Error in consumer {consumer} for {channel}", consumer=consumer, channel=channel
            )


def run_consumer(
    consumer: Callable[..., Any],
    message: Message,
    kwargs: Mapping[str, Any],
    sender: Any,
    message_retries: int = DEFAULT_MESSAGE_RETRIES,
) -> Any:
    """
    Run ``consumer(message, **kwargs)`` as the worker does, in the calling
    thread (a pool thread; the test client's thread).

    The run is bracketed by ``consumer_started`` (``environ={}``) and
    ``consumer_finished`` -- sent even when the consumer raises; an error in
    a ``consumer_finished`` receiver is logged.  ``message.__doomed__`` is set
    when the message is on its last retry.  Handled here, as in Channels 1.x:

    - :class:`DenyConnection`: ``{"close": True}`` on the reply channel of a
      ``websocket.connect``; on any other channel it is logged as an error;
    - :class:`ChannelSocketException`: ``e.run(message)`` (its errors logged);
    - :class:`ConsumeLater`: :func:`requeue_message`.

    :param sender: the ``sender`` of the signals.
    :param message_retries: how often ``ConsumeLater`` may requeue a message.
    :returns: what the consumer returned, or None when it raised one of the
        exceptions above.
    :raises: any other exception of the consumer, after ``consumer_finished``.
    """
    channel = message.channel.name
    content = message.content
    if content.get("__retries__", 0) == message_retries:
        message.__doomed__ = True  # type: ignore[attr-defined]
    consumer_started.send(sender=sender, environ={})
    try:
        return consumer(message, **kwargs)
    except DenyConnection:
        if channel == "websocket.connect" and message.reply_channel is not None:
            message.reply_channel.send({"close": True})
        else:
            log.error(
                "DenyConnection raised by {consumer} on {channel}; it is only "
                "meaningful on websocket.connect",
                consumer=consumer,
                channel=channel,
            )
    except ChannelSocketException as e:
        try:
            e.run(message)
        except Exception:
            log.failure("Handling {exc!r} failed", exc=e)
    except ConsumeLater:
        requeue_message(message.channel_layer, channel, content, message_retries)
    finally:
        try:
            consumer_finished.send(sender=sender)
        except Exception:
            log.failure("Error in a consumer_finished receiver")
    return None


def requeue_message(
    layer: Any, channel: str, content: dict[str, Any], message_retries: int
) -> None:
    """
    Put ``content`` back on ``channel`` with ``__retries__`` incremented, or
    drop it (logged) once it was requeued ``message_retries`` times.  A full
    channel is waited on briefly, then the message is dropped (logged).
    Never raises ``ChannelFull``.  A worker thread: it may block.
    """
    retries = content.get("__retries__", 0) + 1
    if retries > message_retries:
        log.error(
            "Message on {channel} was requeued {n} times (ConsumeLater); dropped",
            channel=channel,
            n=message_retries,
        )
        return
    content = dict(content)
    content["__retries__"] = retries
    try:
        send_waiting(layer, channel, layer.prepare(content), 0.5)
    except ChannelFull:
        log.error("Channel {channel} is full; a requeued message was dropped", channel=channel)
