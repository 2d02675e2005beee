"""
The consumer lifecycle shared by both workers (:func:`run_consumer`,
:func:`requeue_message`, :func:`filter_channels`), and the Channels 1.x
synchronous :class:`Worker` / :class:`WorkerGroup`, re-exported by
:mod:`chanserv.worker`: ``run()`` takes messages with the layer's blocking
``receive`` and runs their consumers in the calling thread -- the main
thread of a script, or any thread but the reactor thread.
"""

from __future__ import annotations

import fnmatch
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from twisted.python import threadable

from chanserv.channel import send_waiting
from chanserv.exceptions import (
    ChannelFull,
    ChannelSocketException,
    ConsumeLater,
    DenyConnection,
    RouteTimeout,
)
from chanserv.log import Logger
from chanserv.message import Message
from chanserv.signals import send_consumer_finished, send_consumer_started, worker_ready
from chanserv.types import Content
from chanserv.utils import name_that_thing

if TYPE_CHECKING:
    from chanserv.asgi import ChannelLayerWrapper
    from chanserv.interfaces import IChannelLayer
    from chanserv.layers.base import BaseChannelLayer

log = Logger("chanserv.worker")

__all__ = [
    "DEFAULT_MESSAGE_RETRIES",
    "Worker",
    "WorkerGroup",
    "filter_channels",
    "requeue_message",
    "run_consumer",
]

#: How often ``ConsumeLater`` may requeue a message before it is dropped.
DEFAULT_MESSAGE_RETRIES = 10

Requeue = Callable[[str, Content], None]


def filter_channels(
    channels: Iterable[str],
    only_channels: Sequence[str] | None = None,
    exclude_channels: Sequence[str] | None = None,
) -> list[str]:
    """
    The channels a worker listens on, sorted: ``channels`` kept if they
    match one of the ``only_channels`` globs (when given) and none of
    ``exclude_channels`` (``fnmatch`` globs, case-sensitive).
    """
    return sorted(_filtered(channels, only_channels, exclude_channels))


def _filtered(
    channels: Iterable[str],
    only_channels: Sequence[str] | None,
    exclude_channels: Sequence[str] | None,
) -> list[str]:
    result = []
    for name in channels:
        if only_channels and not any(fnmatch.fnmatchcase(name, p) for p in only_channels):
            continue
        if exclude_channels and any(fnmatch.fnmatchcase(name, p) for p in exclude_channels):
            continue
        result.append(name)
    return result


def run_consumer(
    consumer: Callable[..., Any],
    message: Message,
    kwargs: Mapping[str, Any],
    sender: object,
    message_retries: int = DEFAULT_MESSAGE_RETRIES,
    requeue: Requeue | None = None,
) -> Any:
    # Any: a consumer is the project's callable: its keyword arguments (the route's captured
    # groups) and its result are its own (Channels 1.x API).
    """
    Run ``consumer(message, **kwargs)`` as the workers do, in the calling
    thread (a pool thread; a :class:`Worker`'s thread; the test client's).

    The run is bracketed by ``consumer_started`` (``environ={}``) and
    ``consumer_finished`` -- sent even when the consumer raises; an error in
    a ``consumer_finished`` receiver is logged.  ``message.__doomed__`` is set
    when the message is on its last retry.  Handled here, as in Channels 1.x:

    - :class:`DenyConnection`: ``{"close": True}`` on the reply channel of a
      ``websocket.connect``; on any other channel it is logged as an error;
    - :class:`ChannelSocketException`: ``e.run(message)`` (its errors logged);
    - :class:`ConsumeLater`: ``requeue(channel, content)``, by default
      :func:`requeue_message` on ``message.channel_layer``.

    :param sender: the ``sender`` of the signals.
    :param message_retries: how often ``ConsumeLater`` may requeue a message.
    :returns: what the consumer returned, or None when it raised one of the
        exceptions above.
    :raises: any other exception of the consumer, after ``consumer_finished``.
    """
    channel = message.channel.name
    content = message.content
    if content.get("__retries__", 0) == message_retries:
        message.__doomed__ = True
    send_consumer_started(sender, {})
    try:
        return consumer(message, **kwargs)
    except DenyConnection:
        if channel == "websocket.connect" and message.reply_channel is not None:
            message.reply_channel.send({"close": True})
        else:
            log.error(
                "DenyConnection raised by {consumer} on {channel}; it is only "
                "meaningful on websocket.connect",
                consumer=name_that_thing(consumer),
                channel=channel,
            )
    except ChannelSocketException as e:
        try:
            e.run(message)
        except Exception:
            log.failure("Handling {exc!r} failed", exc=e)
    except ConsumeLater:
        if requeue is None:
            requeue_message(message.channel_layer, channel, content, message_retries)
        else:
            requeue(channel, content)
    finally:
        try:
            send_consumer_finished(sender)
        except Exception:
            log.failure("Error in a consumer_finished receiver")
    return None


def requeue_message(
    layer: BaseChannelLayer | IChannelLayer | ChannelLayerWrapper,
    channel: str,
    content: Content,
    message_retries: int,
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


class _Terminated(BaseException):
    """Raised by :meth:`Worker.sigterm_handler` to leave an idle ``run()`` at once."""


class Worker:
    """
    The Channels 1.x worker: :meth:`run` loops in the calling thread, taking
    one message at a time from ``channel_layer`` (blocking ``receive``),
    routing it with ``channel_layer.router`` and running its consumer, until
    :attr:`termed` is set.  ``twistd chanserv`` and ``runworker`` use
    :class:`~chanserv.worker.WorkerService` instead; this class is for code
    and tests that drive a worker directly, as they did with Channels 1.x.

    :param channel_layer: a :class:`~chanserv.asgi.ChannelLayerWrapper`
        (``channel_layers[alias]``), or any ASGI 1 layer with a ``router``.
    :param callback: ``callback(channel, message)``, called before each
        routed consumer runs.
    :param message_retries: how often ``ConsumeLater`` may requeue a message.
    :param signal_handlers: in the main thread, have SIGTERM and SIGINT set
        :attr:`termed` while ``run()`` lasts (previous handlers restored after).
    :param only_channels: globs; listen only on routed channels matching one.
    :param exclude_channels: globs; never listen on channels matching one.

    Unlike Channels 1.x: a consumer's ``SystemExit`` or ``KeyboardInterrupt``
    ends ``run()`` (a bare ``except`` swallowed them); a requeue that finds
    the channel full waits for room (``requeue_timeout``) and a message then
    dropped is counted (:attr:`dropped`) and logged, not lost silently; a
    signal on an idle worker makes ``run()`` return instead of ``sys.exit``;
    ``run()`` refuses the reactor thread, and installs no handler off the
    main thread, where ``signal.signal`` raised.
    """

    #: Seconds a requeued message waits for room in its full channel.
    requeue_timeout = 0.5
    #: Least seconds between two receives that found nothing (for a layer
    #: whose blocking receive returns at once, as ``asgiref.inmemory`` did).
    idle_pause = 0.01

    def __init__(
        self,
        channel_layer: Any,
        callback: Callable[[str, Message], object] | None = None,
        message_retries: int = DEFAULT_MESSAGE_RETRIES,
        signal_handlers: bool = True,
        only_channels: Sequence[str] | None = None,
        exclude_channels: Sequence[str] | None = None,
    ) -> None:
        # Any: a ChannelLayerWrapper or a third-party ASGI 1 layer with a router (1.x API).
        self.channel_layer = channel_layer
        self.callback = callback
        self.message_retries = message_retries
        self.signal_handlers = signal_handlers
        self.only_channels = only_channels
        self.exclude_channels = exclude_channels
        self._wake = threading.Event()
        self.termed = False
        #: True while a message is being handled.
        self.in_job = False
        #: Messages routed and run; consumers that raised; ConsumeLater
        #: requeues; messages dropped (retries exhausted, channel full, no
        #: route, routing failed); of those, the ones no route matched and
        #: the ones whose routing failed (an error or a filter out of time).
        self.handled = 0
        self.errors = 0
        self.requeued = 0
        self.dropped = 0
        self.no_route = 0
        self.route_failed = 0

    @property
    def termed(self) -> bool:
        """Set it (any thread) to end :meth:`run` after the current message."""
        return self._wake.is_set()

    @termed.setter
    def termed(self, value: bool) -> None:
        if value:
            self._wake.set()
        else:
            self._wake.clear()

    def install_signal_handler(self) -> Callable[[], None]:
        """
        Route SIGTERM and SIGINT to :meth:`sigterm_handler`; main thread
        only.  Returns the function that puts the previous handlers back.
        """
        previous = {
            signo: signal.signal(signo, self.sigterm_handler)
            for signo in (signal.SIGTERM, signal.SIGINT)
        }

        def restore() -> None:
            for signo, handler in previous.items():
                signal.signal(signo, handler)

        return restore

    def sigterm_handler(self, signo: int, stack_frame: FrameType | None) -> None:
        """Set :attr:`termed`; an idle worker leaves ``run()`` at once."""
        self.termed = True
        if self.in_job:
            log.info("Shutdown signal received while busy, waiting for loop termination")
        else:
            log.info("Shutdown signal received while idle, terminating immediately")
            raise _Terminated()

    def apply_channel_filters(self, channels: Iterable[str]) -> list[str]:
        """``channels`` (order kept) filtered by ``only_channels`` and ``exclude_channels``."""
        return _filtered(channels, self.only_channels, self.exclude_channels)

    def ready(self) -> None:
        """Send ``worker_ready`` (``sender=self``): the worker is set up."""
        worker_ready.send(sender=self)

    def run(self) -> None:
        """
        Dispatch messages until :attr:`termed`, in the calling thread: any
        thread but the reactor thread (the receive blocks).

        :raises RuntimeError: called on the reactor thread.
        """
        if threadable.isInIOThread():
            raise RuntimeError(
                "Worker.run() blocks; it cannot run on the reactor thread "
                "(use chanserv.worker.WorkerService there)"
            )
        restore = None
        if self.signal_handlers and threading.current_thread() is threading.main_thread():
            restore = self.install_signal_handler()
        try:
            self._loop()
        except _Terminated:
            pass
        finally:
            if restore is not None:
                restore()

    def _loop(self) -> None:
        layer = self.channel_layer
        channels = self.apply_channel_filters(layer.router.channels)
        if channels:
            log.info("Listening on channels {channels}", channels=", ".join(sorted(channels)))
        else:
            log.warn("The worker has no channels to listen on; check the routing and filters")
        receive = getattr(layer, "receive", None) or layer.receive_many
        while not self.termed:
            self.in_job = False
            if not channels:
                # Nothing to receive: only termed (or a signal) ends this.
                self._wake.wait(1.0)
                continue
            started = time.monotonic()
            channel, content = receive(channels, block=True)
            self.in_job = True
            if channel is None:
                rest = self.idle_pause - (time.monotonic() - started)
                if rest > 0:
                    self._wake.wait(rest)
                continue
            self.handle(channel, content)
        self.in_job = False

    def handle(self, channel: str, content: Content) -> None:
        """
        Route and run one message, in the calling thread.  A consumer's
        ``Exception`` is logged with its traceback and counted; ``SystemExit``
        and ``KeyboardInterrupt`` propagate.
        """
        log.debug(
            "Got message on {channel} (reply {reply})",
            channel=channel,
            reply=content.get("reply_channel", "none"),
        )
        layer = self.channel_layer
        message = Message(content, channel, layer)
        if content.get("__retries__", 0) == self.message_retries:
            message.__doomed__ = True
        try:
            match = layer.router.match(message)
        except RouteTimeout as e:
            self.dropped += 1
            self.route_failed += 1
            log.error("{error}; {outcome}", error=e, outcome=e.answer(message))
            return
        except Exception:
            self.dropped += 1
            self.route_failed += 1
            log.failure("Routing a message on {channel} failed", channel=channel)
            return
        if match is None:
            self.dropped += 1
            self.no_route += 1
            log.error(
                "Could not find match for message on {channel}! Check your routing.",
                channel=channel,
            )
            return
        consumer, kwargs = match
        if self.callback is not None:
            self.callback(channel, message)
        name = name_that_thing(consumer)
        log.debug("Dispatching message on {channel} to {consumer}", channel=channel, consumer=name)
        self.handled += 1
        try:
            run_consumer(
                consumer,
                message,
                kwargs,
                sender=self.__class__,
                message_retries=self.message_retries,
                requeue=self._requeue,
            )
        except Exception:
            self.errors += 1
            log.failure(
                "Error processing message with consumer {consumer}:",
                consumer=name,
                channel=channel,
            )

    def _requeue(self, channel: str, content: Content) -> None:
        # ConsumeLater: back on the channel with __retries__ counted, through
        # the layer's own send first (as 1.x), then waiting for room.
        retries = content.get("__retries__", 0) + 1
        if retries > self.message_retries:
            self.dropped += 1
            log.warn(
                "Exceeded number of retries for message on channel {channel}: {content}",
                channel=channel,
                content=repr(content)[:100],
            )
            return
        content = dict(content)
        content["__retries__"] = retries
        layer = self.channel_layer
        full = getattr(layer, "ChannelFull", ChannelFull)
        try:
            try:
                layer.send(channel, content)
            except full:
                self._send_when_room(layer, channel, content, full)
        except full:
            self.dropped += 1
            log.error(
                "Channel {channel} stayed full for {timeout}s; a message requeued by "
                "ConsumeLater was dropped ({dropped} so far)",
                channel=channel,
                timeout=self.requeue_timeout,
                dropped=self.dropped,
            )
        else:
            self.requeued += 1

    def _send_when_room(self, layer: Any, channel: str, content: Content, full: Any) -> None:
        # Any: the worker's layer (wrapper or third-party ASGI 1 layer) and its ChannelFull class.
        if hasattr(layer, "prepare") and hasattr(layer, "send_prepared"):
            send_waiting(layer, channel, layer.prepare(content), self.requeue_timeout)
            return
        # A foreign layer that cannot tell when there is room: 1.x's retries.
        deadline = time.monotonic() + self.requeue_timeout
        while True:
            threading.Event().wait(0.05)
            try:
                layer.send(channel, content)
                return
            except full:
                if time.monotonic() >= deadline:
                    raise


class WorkerGroup(Worker):
    """
    ``n_threads`` workers: ``n_threads - 1`` in daemon threads, started by
    :meth:`run`, and this one in the calling thread.  When this one's loop
    ends (:attr:`termed`, a signal) the others are told to stop and waited
    for up to ``join_timeout`` seconds each -- Channels 1.x left them to die
    with the process in the middle of their consumers.  Takes the
    :class:`Worker` arguments plus ``n_threads`` (default: the CPU count).

    :raises ValueError: ``n_threads`` is below 1.
    """

    #: Seconds :meth:`run` waits for each sub-worker once it stops.
    join_timeout = 10.0

    def __init__(self, *args: Any, n_threads: int | None = None, **kwargs: Any) -> None:
        # Any: the Worker arguments, passed through as Channels 1.x did.
        if n_threads is None:
            n_threads = multiprocessing.cpu_count()
        if n_threads < 1:
            raise ValueError("n_threads must be at least 1, not %r" % (n_threads,))
        super().__init__(*args, **kwargs)
        kwargs["signal_handlers"] = False
        self.workers = [Worker(*args, **kwargs) for _ in range(n_threads - 1)]
        self.threads: list[threading.Thread] = []

    def sigterm_handler(self, signo: int, stack_frame: FrameType | None) -> None:
        """Stop every worker; this one leaves its loop at once."""
        log.info("Shutdown signal received by WorkerGroup, terminating")
        self.termed = True
        for worker in self.workers:
            worker.termed = True
        if not self.in_job:
            raise _Terminated()

    def ready(self) -> None:
        """``worker_ready`` for the group, then for each sub-worker."""
        super().ready()
        for worker in self.workers:
            worker.ready()

    def run(self) -> None:
        """Start the sub-workers' threads, run this worker, then stop and join them."""
        self.threads = [
            threading.Thread(
                target=self._run_sub, args=(worker,), name="chanserv-worker-%d" % (i + 1,)
            )
            for i, worker in enumerate(self.workers)
        ]
        for thread in self.threads:
            thread.daemon = True
            thread.start()
        try:
            super().run()
        finally:
            for worker in self.workers:
                worker.termed = True
            for thread in self.threads:
                thread.join(self.join_timeout)
                if thread.is_alive():
                    log.warn(
                        "{thread} still running {timeout}s after the worker group stopped",
                        thread=thread.name,
                        timeout=self.join_timeout,
                    )

    @staticmethod
    def _run_sub(worker: Worker) -> None:
        try:
            worker.run()
        except BaseException:
            log.failure("A WorkerGroup thread stopped on an error")
