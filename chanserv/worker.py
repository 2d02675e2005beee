"""
The workers.  :class:`WorkerService` takes messages off the channel layer
on the reactor thread, only as many as pool threads are free, and runs each
consumer in a pool thread (:meth:`WorkerService.handle`); a reply channel's
messages run one at a time, in order, within the process.  :class:`Worker`
and :class:`WorkerGroup` are the Channels 1.x synchronous workers (from
:mod:`chanserv._sync_worker`), whose ``run()`` loops in the calling thread.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from time import perf_counter
from typing import TYPE_CHECKING, Any, Literal

from django.conf import settings
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from chanserv._sync_worker import (
    DEFAULT_MESSAGE_RETRIES,
    Worker,
    WorkerGroup,
    filter_channels,
    requeue_message,
    run_consumer,
)
from chanserv.asgi import ChannelLayerWrapper
from chanserv.channel import pending_message_store
from chanserv.exceptions import RouteTimeout
from chanserv.interfaces import IChannelLayer, ISendHandOff
from chanserv.log import Logger
from chanserv.message import Message
from chanserv.routing import Router
from chanserv.signals import worker_process_ready, worker_ready
from chanserv.stats import ConsumerStats, Histogram, PerThread, consumer_name
from chanserv.threads import WorkerPool, batcher_for
from chanserv.types import Content, Received

if TYPE_CHECKING:
    from chanserv.interfaces import IReactorChannelLayer

log = Logger()
#: Channels 1.x's module logger (chanserv logs through :data:`log`).
logger = logging.getLogger("django.channels")

__all__ = [
    "DEFAULT_MESSAGE_RETRIES",
    "DEFAULT_PULL_COALESCE",
    "ORDERING_SETTING",
    "ReplyChannelLanes",
    "Worker",
    "WorkerGroup",
    "WorkerService",
    "filter_channels",
    "requeue_message",
    "run_consumer",
]

#: The Django setting that turns per-reply-channel ordering off when False.
ORDERING_SETTING = "CHANSERV_ORDERED_REPLY_CHANNELS"

#: Seconds :class:`WorkerService` waits, by default with a layer whose
#: receive is a round trip, before asking for more messages after a batch
#: that left threads idle while others run.  Measured on the Redis echo
#: benchmark: about 8 % less CPU per round trip than asking at once, and
#: the same from 0.5 to 3 ms.
DEFAULT_PULL_COALESCE = 0.0005


def _ordering_setting() -> bool:
    """``settings.CHANSERV_ORDERED_REPLY_CHANNELS`` (True when unset or unconfigured)."""
    if not settings.configured:
        return True
    return bool(getattr(settings, ORDERING_SETTING, True))


_Parked = tuple[int | None, str, Content]


class ReplyChannelLanes:
    """
    The messages of each reply channel of this process, one at a time and in
    ``order``.  Any thread: every method is a few dict operations under one
    lock, which :class:`WorkerService` also holds while it takes messages off the
    layer, so that no message is admitted before one taken earlier.

    A reply channel with a message in flight has a *lane*.  A message that
    finds its lane busy is parked there -- sorted by ``order``; one without an
    ``order`` stays where it arrived and is not overtaken -- and runs right
    after the one in flight, on the thread that ran it (or, when that one's
    sends were handed off to the layer, once they are through: see
    :meth:`WorkerService._consume`).  Nothing waits for a gap: a message
    whose predecessor is not here runs when the lane is free.
    A *late* message, whose ``order`` is below one already started (put back
    by ``ConsumeLater``; or a last ``websocket.receive`` taken after the
    ``websocket.disconnect``, which comes on another channel), runs at once
    outside the lane: its successor already started, and
    :func:`~chanserv.sessions.enforce_ordering`, if used, is waiting for it.  A lane is dropped when nothing is parked in
    it, so an idle reply channel costs nothing.

    :param max_parked: messages parked in all lanes together before the
        worker stops taking more off the layer.
    :param on_room: called, from the thread that started it, when a parked
        message starts while the worker held a receive back (:attr:`starved`).
    """

    def __init__(self, max_parked: int, on_room: Callable[[], None]) -> None:
        if max_parked < 1:
            raise ValueError("max_parked must be at least 1, not %r" % (max_parked,))
        self.lock = threading.Lock()
        self.max_parked = max_parked
        #: Messages parked in all lanes (read without the lock as a hint).
        self.parked = 0
        #: The worker took fewer messages than it had idle threads because of
        #: parked ones; the next parked message to start calls ``on_room``.
        self.starved = False
        self._on_room = on_room
        # Busy reply channel -> highest ``order`` started in its lane (or None).
        self._started: dict[str, int | None] = {}
        # Busy reply channel -> its parked messages; only while there are any.
        self._queues: dict[str, deque[_Parked]] = {}

    def __len__(self) -> int:
        """Reply channels with a message in flight."""
        return len(self._started)

    def admit_locked(self, channel: str, content: Content) -> str | Literal[False] | None:
        """
        Admit a message just taken off ``channel``; the caller holds
        :attr:`lock`.  Returns the reply channel whose lane the message now
        holds (pass it to :meth:`release` once it ran), None when it runs
        outside any lane (no reply channel, or late), or False when it was
        parked: it is no longer the caller's to run.
        """
        reply = content.get("reply_channel")
        if reply is None or reply.__class__ is not str:
            return None
        order = content.get("order")
        if order.__class__ is not int:
            order = None
        started = self._started
        if reply not in started:
            started[reply] = order
            return reply
        top = started[reply]
        if order is not None and top is not None and order < top:
            return None
        item = (order, channel, content)
        queue = self._queues.get(reply)
        if queue is None:
            self._queues[reply] = deque((item,))
        elif order is None or queue[-1][0] is None or queue[-1][0] <= order:
            queue.append(item)
        else:
            # Arrived before an earlier order: insert after every parked
            # message with a lower or equal order, or without one.
            i = len(queue)
            while i > 0:
                before = queue[i - 1][0]
                if before is None or before <= order:
                    break
                i -= 1
            queue.insert(i, item)
        self.parked += 1
        return False

    def release(self, reply: str) -> Received | None:
        """
        The message holding ``reply``'s lane has run: return the next parked
        one, ``(channel, content)``, which now holds the lane and is the
        caller's to run, or None when the lane is dropped.  Any thread.
        """
        with self.lock:
            queue = self._queues.get(reply)
            if queue is None:
                del self._started[reply]
                return None
            order, channel, content = queue.popleft()
            if not queue:
                del self._queues[reply]
            if order is not None:
                top = self._started[reply]
                if top is None or order > top:
                    self._started[reply] = order
            self.parked -= 1
            wake, self.starved = self.starved, False
        if wake:
            self._on_room()
        return channel, content


class WorkerService(Service):
    """
    Dispatches messages from ``layer``, routed by ``router``, to ``pool``.

    It takes messages off the layer only when a pool thread is free
    (``receive_many_twisted`` limited to the idle threads), so a backlog
    stays in the layer, where capacity turns it into back-pressure, never
    in an unbounded queue in this process.

    :param layer: the channel layer itself: its reactor face is used on
        the reactor thread and its synchronous face from pool threads.
    :param router: the :class:`~chanserv.routing.Router` that picks each
        message's consumer; its channels are the ones listened on.
    :param pool: the started-before-us :class:`~chanserv.threads.WorkerPool`.
    :param consumer_layer: what consumers see as ``message.channel_layer``:
        in a project, the layer's
        :class:`~chanserv.asgi.ChannelLayerWrapper` (its ``alias`` and
        ``router`` too, as in Channels 1.x); ``layer`` if None.
    :param only_channels: globs; listen only on routed channels matching one.
    :param exclude_channels: globs; never listen on channels matching one.
    :param message_retries: how often ``ConsumeLater`` may requeue a message.
    :param graceful_timeout: seconds ``stopService`` waits for consumers in
        flight before giving up on them.
    :param ordered: run the messages of one reply channel one at a time, in
        ``order`` (:class:`ReplyChannelLanes`); None reads the
        ``CHANSERV_ORDERED_REPLY_CHANNELS`` setting (default True).
    :param max_parked: messages that may wait in lanes behind their reply
        channel's message in flight; default: the largest capacity among
        ``channels`` (at least the pool's size).  They count against what is
        taken off the layer, so a backlog beyond that stays in the layer.
    :param pull_coalesce: seconds to wait, after a batch that left threads
        idle while others run, before asking the layer for more (a
        completion asks at once).  Asking at once mostly finds the channels
        empty and then takes the next message alone, through a blocking
        pop: two script calls and a blocking round trip per message.
        Waiting lets the next receive take what arrived meanwhile in one
        call.  None: :data:`DEFAULT_PULL_COALESCE` for a layer whose
        receive is a round trip, 0 (ask at once) for one whose receive is
        only a lock (``cheap_receive``).
    """

    name = "worker"
    #: Seconds between attempts to receive again after the layer failed.
    retry_delays = (0.1, 0.5, 1.0, 2.0, 5.0)

    def __init__(
        self,
        reactor: IReactorTime,
        layer: IReactorChannelLayer,
        router: Router,
        pool: WorkerPool,
        only_channels: Sequence[str] | None = None,
        exclude_channels: Sequence[str] | None = None,
        message_retries: int = DEFAULT_MESSAGE_RETRIES,
        graceful_timeout: float = 30.0,
        verbosity: int = 1,
        ordered: bool | None = None,
        max_parked: int | None = None,
        consumer_layer: ChannelLayerWrapper | IReactorChannelLayer | None = None,
        pull_coalesce: float | None = None,
    ) -> None:
        self._reactor = reactor
        self.layer = layer
        self.channel_layer = layer if consumer_layer is None else consumer_layer
        self.router = router
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
        self._pulling = False
        self._pull_again = False
        if pull_coalesce is None:
            pull_coalesce = 0.0 if getattr(layer, "cheap_receive", False) else DEFAULT_PULL_COALESCE
        if pull_coalesce < 0:
            raise ValueError("pull_coalesce must not be negative, not %r" % (pull_coalesce,))
        self.pull_coalesce = pull_coalesce
        self._coalesce_call: Any = None
        self._batcher = batcher_for(reactor)
        if ordered is None:
            ordered = _ordering_setting()
        self.ordered = ordered
        #: The per-reply-channel lanes, or None when ordering is off.
        self.lanes: ReplyChannelLanes | None = None
        #: Each pool thread's counts of the messages it handled (by channel)
        #: and of its consumers' run times and exceptions (by consumer).
        self.stats: PerThread[ConsumerStats] = PerThread(ConsumerStats)
        #: Seconds from asking the layer for a batch to getting it (reactor
        #: thread): the layer's round trip under load, plus any wait for
        #: messages when the channels are empty.
        self.receive_seconds = Histogram()
        self._receive_started = 0.0
        # The consumers' held sends are handed to the layer when it takes
        # them (ISendHandOff): then pool threads need not wait for them.
        self._store = pending_message_store if ISendHandOff.providedBy(layer) else None
        # Consumer runs whose sends the layer may still be making for them
        # (ISendHandOff): raised by the pool thread before the consumer
        # runs, lowered by it when nothing was handed off, else on the
        # reactor thread once the sends are through.  Never negative.
        self._hand_offs_lock = threading.Lock()
        self.hand_offs_in_flight = 0
        if ordered:
            self.lanes = ReplyChannelLanes(
                max_parked or self._default_max_parked(), self._room_for_more
            )

    def _default_max_parked(self) -> int:
        # The layer's own bound on a backlog: as many messages as the largest
        # of our channels may hold.  Far less lets one socket that sends in
        # bursts -- a long run of its messages in a FIFO channel -- take the
        # whole budget and hold the other sockets' messages back behind it.
        capacity = 0
        get_capacity = getattr(self.layer, "get_capacity", None)
        if get_capacity is not None:
            for name in self.channels:
                try:
                    capacity = max(capacity, int(get_capacity(name)))
                except Exception:
                    log.failure("Reading the capacity of {channel} failed", channel=name)
        return max(self.pool.size, capacity)

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
        # As Channels 1.x's runworker: the process, then the worker (one
        # WorkerService per process here, whatever the number of threads).
        worker_process_ready.send(sender=self)
        worker_ready.send(sender=self)
        self._pull()

    def _pull(self) -> None:
        # A layer that has messages answers at once, and _received pulls
        # again: loop here rather than recurse, since parked messages leave
        # the idle threads idle and so the pulls may go on for a while.
        if self._pulling:
            self._pull_again = True
            return
        self._pulling = True
        try:
            self._pull_again = True
            while self._pull_again:
                self._pull_again = False
                self._pull_once()
        finally:
            self._pulling = False

    def _pull_once(self) -> None:
        if not self.running or self._receiving is not None or not self.channels:
            return
        if self._retry_call is not None:
            return
        free = self.pool.idle
        if free <= 0:
            return
        lanes = self.lanes
        self._receive_started = perf_counter()
        if lanes is None:
            d = self.layer.receive_many_twisted(self.channels, free)
            self._receiving = d
        else:
            with lanes.lock:
                # Parked messages are taken, not yet run: only as many more
                # as leave the parked total within its bound, so a flooding
                # socket's backlog stays in the layer.
                room = lanes.max_parked - lanes.parked
                if room < free:
                    lanes.starved = True
                    if room <= 0:
                        return
                    free = room
                # Set under the lock: pool threads take no message themselves
                # while a batch may be between the layer and _received.
                d = self.layer.receive_many_twisted(self.channels, free)
                self._receiving = d
        d.addCallbacks(self._received, self._receive_failed)
        d.addErrback(lambda f: log.failure("Worker dispatch failed", f))

    def _received(self, batch: list[Received]) -> None:
        self.receive_seconds.observe(perf_counter() - self._receive_started)
        self._failures = 0
        submit = self.pool.submit
        lanes = self.lanes
        if lanes is None:
            self._receiving = None
            for channel, content in batch:
                submit(self._consume, channel, content, None, on_done=self._done)
        else:
            with lanes.lock:
                self._receiving = None
                admit = lanes.admit_locked
                for channel, content in batch:
                    lane = admit(channel, content)
                    if lane is not False:
                        submit(self._consume, channel, content, lane, on_done=self._done)
        if batch and self.pull_coalesce and self.pool.busy and self.pool.idle:
            # Threads are left idle while others run: ask again a little
            # later (or at the first completion), for what arrives meanwhile.
            if self._coalesce_call is None:
                self._coalesce_call = self._reactor.callLater(
                    self.pull_coalesce, self._coalesced_pull
                )
            return
        self._pull()

    def _coalesced_pull(self) -> None:
        self._coalesce_call = None
        self._pull()

    def _room_for_more(self) -> None:
        # A pool thread, from ReplyChannelLanes.release: a parked message
        # started while a receive was held back for the parked ones.
        self._batcher.call(self._pull)

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
        else:
            self._check_drained()

    def _check_drained(self) -> None:
        if self._drained is not None and self.pool.busy == 0 and self.hand_offs_in_flight == 0:
            d, self._drained = self._drained, None
            d.callback(None)

    def _hand_off_sent(self, lane: str | None) -> None:
        # Reactor thread: the sends a consumer run handed off are through.
        # Its lane is released only now, so the next message of that reply
        # channel runs after them, as when the thread sent them itself.
        self._add_hand_offs(-1)
        if lane is not None:
            following = self.lanes.release(lane)  # type: ignore[union-attr]
            if following is not None:
                # Parked messages run even while stopping: they were taken
                # off the layer already.
                channel, content = following
                self.pool.submit(self._consume, channel, content, lane, on_done=self._done)
        if not self.running:
            self._check_drained()

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
        if self._coalesce_call is not None:
            self._coalesce_call.cancel()
            self._coalesce_call = None
        if self._receiving is not None:
            d, self._receiving = self._receiving, None
            d.cancel()
        drained: Deferred[None] = Deferred()
        if self.pool.busy == 0 and self.hand_offs_in_flight == 0:
            drained.callback(None)
            return drained
        log.info(
            "Waiting for {n} consumer(s) in flight to finish "
            "({s} consumer run(s) whose messages are not sent yet)",
            n=self.pool.busy,
            s=self.hand_offs_in_flight,
        )
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

    def _consume(self, channel: str, content: Content, lane: str | None) -> None:
        """
        Handle a message, then the messages parked behind it in its reply
        channel's ``lane`` (None: it holds none), then -- with a layer whose
        receive is only a lock
        (:attr:`~chanserv.layers.base.BaseChannelLayer.cheap_receive`) --
        keep taking the next waiting message from this thread while there is
        one.  Under load a message then goes from the layer to a free thread
        without a round trip through the reactor; when the channels are
        empty the thread returns to the pool.  Runs in a pool thread.

        With a layer that takes a consumer's held sends
        (:class:`~chanserv.interfaces.ISendHandOff`), the thread does not
        wait for them; the message's lane is then released on the reactor
        thread once they are through (:meth:`_hand_off_sent`), which starts
        the next parked message in a pool thread.
        """
        lanes = self.lanes
        layer = self.layer
        store = self._store
        # Its synchronous face, for pool threads (both layers provide both).
        receive = IChannelLayer(layer).receive if getattr(layer, "cheap_receive", False) else None
        while True:
            if store is not None:
                # Counted before the consumer runs: its hand-off may be
                # through, on the reactor thread, before this thread is back.
                self._add_hand_offs(1)
                store.expect_hand_off(partial(self._hand_off_sent, lane))
            if lane is None:
                try:
                    self.handle(channel, content)
                finally:
                    if store is not None and not store.handed_off():
                        self._add_hand_offs(-1)
            else:
                try:
                    self.handle(channel, content)
                except BaseException:
                    # handle() logs and swallows consumer errors; this only
                    # keeps the lane moving should it ever fail itself.
                    log.failure("Handling a message on {channel} failed", channel=channel)
                if store is not None:
                    if store.handed_off():
                        return  # the lane is released once the sends are through
                    self._add_hand_offs(-1)
                following = lanes.release(lane)  # type: ignore[union-attr]
                if following is not None:
                    # Parked messages run even while stopping: they were
                    # taken off the layer already.
                    channel, content = following
                    continue
            if receive is None:
                return
            taken = self._take_next(receive)
            if taken is None:
                return
            channel, content, lane = taken

    def _add_hand_offs(self, n: int) -> None:
        with self._hand_offs_lock:
            self.hand_offs_in_flight += n

    def _take_next(
        self, receive: Callable[[Sequence[str]], Any]
    ) -> tuple[str, Content, str | None] | None:
        """
        The next message this pool thread runs itself, taken with the
        layer's cheap ``receive`` and admitted to its lane, or None: the
        worker is stopping, nothing is waiting, the parked messages are at
        their bound, or the reactor is taking a batch (a message taken here
        could otherwise be admitted before an earlier one of its reply
        channel in that batch).
        """
        channels = self.channels
        lanes = self.lanes
        if lanes is None:
            if not self.running:
                return None
            channel, content = receive(channels)
            return None if channel is None else (channel, content, None)
        while self.running and lanes.parked < lanes.max_parked:
            with lanes.lock:
                if self._receiving is not None:
                    return None
                channel, content = receive(channels)
                if channel is None:
                    return None
                lane = lanes.admit_locked(channel, content)
            if lane is not False:
                return channel, content, lane
        return None

    def handle(self, channel: str, content: Content) -> None:
        """
        Route and run one message.  Runs in a pool thread.

        Never raises: every consumer error is logged, so one failing consumer
        does not affect the others.
        """
        message = Message(content, channel, self.channel_layer)
        try:
            match = self.router.match(message)
        except RouteTimeout as e:
            # An application's pattern, not a bug here: no traceback.
            self.stats.get().route_failed += 1
            log.error("{error}; {outcome}", error=e, outcome=e.answer(message))
            return
        except Exception:
            self.stats.get().route_failed += 1
            log.failure("Routing a message on {channel} failed", channel=channel)
            return
        if match is None:
            self.stats.get().no_route += 1
            log.error(
                "Could not find a route for a message on {channel} (path {path!r}); it was dropped",
                channel=channel,
                path=content.get("path"),
            )
            return
        consumer, kwargs = match
        if self.verbosity > 1:
            log.debug("{channel} -> {consumer}", channel=channel, consumer=consumer_name(consumer))
        # This thread's own counters (chanserv.metrics reads them at scrape
        # time): no lock, no prometheus_client call per message.
        stats = self.stats.get()
        handled = stats.handled
        handled[channel] = handled.get(channel, 0) + 1
        started = perf_counter()
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
            name = consumer_name(consumer)
            stats.errors[name] = stats.errors.get(name, 0) + 1
            log.failure(
                "Error in consumer {consumer} for {channel}", consumer=name, channel=channel
            )
        else:
            name = consumer_name(consumer)
        runs = stats.runs.get(name)
        if runs is None:
            runs = stats.runs[name] = Histogram()
        runs.observe(perf_counter() - started)
