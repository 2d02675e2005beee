"""
:class:`DelayService`, the delay server as an ``IService``: it takes the
messages of ``asgi.delay`` off the layer, checks them, has the store keep
them, and sends each at its due time, found by one timer for the earliest
and a look at the store every ``sleep`` seconds (restarts, other nodes).
Its methods run on the reactor thread; the store's, in pool threads.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from chanserv.delay.store import IDelayStore, SendResult, Stored, ToStore
from chanserv.log import Logger
from chanserv.types import Content, Received

log = Logger()

__all__ = ["DELAY_CHANNEL", "MAX_DELAY", "DelayService", "check_delay_message"]

#: The channel of the ASGI delay protocol.
DELAY_CHANNEL = "asgi.delay"

#: The longest delay accepted, in milliseconds (ten years).
MAX_DELAY = 10 * 366 * 24 * 3600 * 1000

_T = TypeVar("_T")


def check_delay_message(content: Content, valid_channel_name: Callable[[str], object]) -> ToStore:
    """
    The ``(channel, content, delay)`` of an ``asgi.delay`` message.
    ``valid_channel_name`` is the layer's check of a channel name (raises
    :class:`TypeError`).  Any thread.

    :raises ValueError: what is wrong with the message, in words.
    """
    missing = [key for key in ("channel", "content", "delay") if key not in content]
    if missing:
        raise ValueError(
            "it has no %s (an asgi.delay message has the keys 'channel', 'content' "
            "and 'delay')" % " and no ".join(repr(key) for key in missing)
        )
    channel, body, delay = content["channel"], content["content"], content["delay"]
    if not isinstance(channel, str):
        raise ValueError("its 'channel' is %s, not a str" % type(channel).__name__)
    try:
        valid_channel_name(channel)
    except TypeError as e:
        raise ValueError("its 'channel' %r is not a channel name: %s" % (channel, e)) from None
    if not isinstance(body, dict):
        raise ValueError("its 'content' is %s, not a dict" % type(body).__name__)
    if isinstance(delay, bool) or not isinstance(delay, (int, float)):
        raise ValueError("its 'delay' is %s, not a number of milliseconds" % type(delay).__name__)
    if not math.isfinite(delay) or not 0 <= delay <= MAX_DELAY:
        raise ValueError(
            "its 'delay' %r is not between 0 and %d milliseconds (ten years)" % (delay, MAX_DELAY)
        )
    return channel, body, delay


class DelayService(Service):
    """
    Receives ``asgi.delay`` messages from ``layer`` and sends each one's
    ``content`` to its ``channel`` after its ``delay``.

    Nothing is lost silently: an invalid message is logged (what is wrong
    with it) and counted in :attr:`invalid`, and the service goes on; a
    message whose channel is full stays stored and is tried again
    ``requeue_delay`` seconds later (:attr:`full`); one that can never be
    sent is logged with its content and counted in :attr:`failed`.  All
    the work with the store is done one job at a time, in ``pool``.

    :param reactor: provides ``IReactorTime``.
    :param layer: the channel layer: its reactor face receives, its
        synchronous face sends from the pool thread.
    :param pool: runs the store's calls (a
        :class:`~chanserv.threads.WorkerPool` or anything with its
        ``submit(task, on_done=...)``).
    :param store: an :class:`~chanserv.delay.store.IDelayStore`; default:
        a :class:`~chanserv.delay.store.DatabaseStore` on the default database.
    :param sleep: seconds between looks at the store for messages due soon.
    :param batch: most messages taken off the layer, stored or sent per job.
    :param requeue_delay: seconds before a message that found its channel
        full is tried again.
    :param stop_timeout: seconds ``stopService`` waits for the job in
        flight and the messages received but not stored yet.
    """

    name = "delay"
    #: Seconds between attempts after the layer or the store failed.
    retry_delays = (0.1, 0.5, 1.0, 2.0, 5.0)

    def __init__(
        self,
        reactor: Any,
        layer: Any,
        pool: Any,
        store: IDelayStore | None = None,
        sleep: float = 1.0,
        batch: int = 100,
        requeue_delay: float = 1.0,
        stop_timeout: float = 30.0,
    ) -> None:
        # Any: the reactor provides IReactorTime; the layer both IReactorChannelLayer and
        # IChannelLayer, and Python's types have no intersection of interfaces; the pool is
        # a WorkerPool or a test double with its submit().
        if sleep <= 0:
            raise ValueError("sleep must be positive, not %r" % (sleep,))
        if batch < 1:
            raise ValueError("batch must be at least 1, not %r" % (batch,))
        self._reactor = reactor
        self.layer = layer
        self.pool = pool
        if store is None:
            # Deferred: it loads Django's ORM, which a test's store does not need.
            from chanserv.delay.store import DatabaseStore

            store = DatabaseStore()
        self.store = store
        self.sleep = sleep
        self.batch = batch
        self.requeue_delay = requeue_delay
        self.stop_timeout = stop_timeout
        #: Messages stored, sent, refused as invalid, found full (each
        #: time), removed as unsendable, and received but never stored (a
        #: stop that timed out).  Reactor thread.
        self.lost = 0
        self.stored = 0
        self.sent = 0
        self.invalid = 0
        self.full = 0
        self.failed = 0
        # (reactor time due, id) of the messages due within the look-ahead.
        self._heap: list[tuple[float, int]] = []
        self._scheduled: set[int] = set()
        self._timer: Any = None
        self._receiving: Deferred[list[Received]] | None = None
        self._receive_looping = False
        self._receive_again = False
        self._receive_failures = 0
        self._receive_retry: Any = None
        # Received and checked, not stored yet.
        self._to_store: list[ToStore] = []
        self._store_failures = 0
        self._store_retry: Any = None
        self._poll_wanted = False
        self._poll: LoopingCall | None = None
        self._job_running = False
        self._db_failing = False
        self._stopped: Deferred[None] | None = None

    @property
    def lookahead(self) -> float:
        """Seconds ahead within which messages get a place on the timer."""
        return 2 * self.sleep

    # -- start and stop --------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        log.info("Delay server listening on {channel}", channel=DELAY_CHANNEL)
        poll = self._poll = LoopingCall(self._want_poll)
        poll.clock = self._reactor
        poll.start(self.sleep, now=True).addErrback(
            lambda f: log.failure("The delay server's look at the store failed", f)
        )
        self._receive()

    def stopService(self) -> Deferred[None]:
        """
        Stop receiving and sending; fire once the job in flight is over and
        what was received is stored (logged and counted as lost after
        ``stop_timeout`` seconds).
        """
        super().stopService()
        for call in (self._timer, self._receive_retry):
            if call is not None and call.active():
                call.cancel()
        self._timer = self._receive_retry = None
        if self._poll is not None and self._poll.running:
            self._poll.stop()
        self._poll = None
        if self._receiving is not None:
            d, self._receiving = self._receiving, None
            d.cancel()
        stopped: Deferred[None] = Deferred()
        self._stopped = stopped
        self._maybe_stopped()
        if not stopped.called:

            def gave_up(result: object, timeout: float) -> None:
                self._stopped = None
                if self._store_retry is not None and self._store_retry.active():
                    self._store_retry.cancel()
                if self._to_store:
                    self.lost += len(self._to_store)
                    log.error(
                        "Delay server stopped after {timeout}s with {n} received message(s) "
                        "not stored: they are lost",
                        timeout=timeout,
                        n=len(self._to_store),
                    )
                    self._to_store = []

            stopped.addTimeout(self.stop_timeout, self._reactor, onTimeoutCancel=gave_up)
        return stopped

    def _maybe_stopped(self) -> None:
        if self._stopped is None or self._job_running or self._to_store:
            return
        if self._store_retry is not None and self._store_retry.active():
            return
        d, self._stopped = self._stopped, None
        d.callback(None)

    # -- receiving -------------------------------------------------------------

    def _receive(self) -> None:
        # Loops rather than recursing: a layer holding messages answers at
        # once, and a batch of invalid messages asks for the next at once.
        if self._receive_looping:
            self._receive_again = True
            return
        self._receive_looping = True
        try:
            self._receive_again = True
            while self._receive_again:
                self._receive_again = False
                if (
                    not self.running
                    or self._receiving is not None
                    or self._to_store
                    or self._receive_retry is not None
                ):
                    return
                d = self.layer.receive_many_twisted([DELAY_CHANNEL], self.batch)
                self._receiving = d
                d.addCallbacks(self._received, self._receive_failed)
                d.addErrback(lambda f: log.failure("The delay server's receive failed", f))
        finally:
            self._receive_looping = False

    def _received(self, batch: list[Received]) -> None:
        self._receiving = None
        self._receive_failures = 0
        for _, content in batch:
            try:
                self._to_store.append(check_delay_message(content, self.layer.valid_channel_name))
            except ValueError as e:
                self.invalid += 1
                log.error(
                    "Invalid message on {channel} ignored: {reason}",
                    channel=DELAY_CHANNEL,
                    reason=str(e),
                )
        if self._to_store:
            self._kick()
        else:
            self._receive()

    def _receive_failed(self, failure: Failure) -> None:
        self._receiving = None
        if failure.check(CancelledError) or not self.running:
            return
        delay = self.retry_delays[min(self._receive_failures, len(self.retry_delays) - 1)]
        self._receive_failures += 1
        if failure.check(ConnectionError):
            log.warn(
                "Channel layer unavailable ({error}); the delay server receives again in {delay}s",
                error=failure.value,
                delay=delay,
            )
        else:
            log.failure(
                "The delay server's receive failed; retrying in {delay}s", failure, delay=delay
            )
        self._receive_retry = self._reactor.callLater(delay, self._retry_receive)

    def _retry_receive(self) -> None:
        self._receive_retry = None
        self._receive()

    # -- the jobs, one at a time, in the pool ------------------------------------

    def _want_poll(self) -> None:
        self._poll_wanted = True
        self._kick()

    def _kick(self) -> None:
        """
        Start the next job unless one runs -- sends that are due first,
        then storing what was received, then a look at the store -- and
        set the timer for the next message due.
        """
        if not self._job_running:
            due = self._take_due() if self.running else []
            if due:
                self._run(self._send_all, (due,), self._sent, self._send_failed)
            elif self._to_store and self._store_retry is None:
                batch = self._to_store[: self.batch]
                self._run(self.store.add, (batch,), self._stored, self._store_failed)
            elif self._poll_wanted and self.running:
                self._poll_wanted = False
                self._run(
                    self.store.due_within,
                    (self.lookahead, self.batch),
                    self._polled,
                    self._poll_failed,
                )
        self._arm()
        if not self._job_running:
            self._maybe_stopped()

    def _run(
        self,
        task: Callable[..., _T],
        args: tuple[Any, ...],
        done: Callable[[_T], None],
        failed: Callable[[Failure], None],
    ) -> None:
        # Any: the task's arguments, as many as it takes.
        self._job_running = True
        results: list[_T] = []
        failures: list[Failure] = []

        def work() -> None:
            # Pool thread.
            try:
                results.append(task(*args))
            except BaseException:
                failures.append(Failure())

        def finish() -> None:
            # Reactor thread.
            self._job_running = False
            try:
                if results:
                    self._store_works()
                    done(results[0])
                else:
                    failed(failures[0] if failures else Failure(RuntimeError("the job never ran")))
            except Exception:
                log.failure("The delay server failed to handle a job's result")
            self._kick()

        self.pool.submit(work, on_done=finish)

    def _store_works(self) -> None:
        if self._db_failing:
            self._db_failing = False
            log.info("The delay server's database works again")

    def _store_failure(self, what: str, failure: Failure) -> None:
        # Once per outage, not every second while the database is down.
        if self._db_failing:
            log.debug("{what} failed again: {error}", what=what, error=failure.value)
            return
        self._db_failing = True
        log.failure("{what} failed (the delay server retries)", failure, what=what)

    # -- due messages ------------------------------------------------------------

    def _schedule(self, message_id: int, due_in: float) -> None:
        if message_id in self._scheduled or due_in > self.lookahead:
            # Far off: a later look at the store finds it in time.
            return
        heapq.heappush(self._heap, (self._reactor.seconds() + max(0.0, due_in), message_id))
        self._scheduled.add(message_id)

    def _take_due(self) -> list[int]:
        now = self._reactor.seconds()
        due: list[int] = []
        heap = self._heap
        while heap and heap[0][0] <= now and len(due) < self.batch:
            _, message_id = heapq.heappop(heap)
            self._scheduled.discard(message_id)
            due.append(message_id)
        return due

    def _arm(self) -> None:
        # One timer, for the earliest message; none while the earliest is
        # due already: the job running now calls _kick when it ends.
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        if not self.running or not self._heap:
            return
        delay = self._heap[0][0] - self._reactor.seconds()
        if delay > 0:
            self._timer = self._reactor.callLater(delay, self._kick)

    def _send_all(self, ids: list[int]) -> list[tuple[int, SendResult]]:
        # Pool thread.
        return [(i, self.store.send(i, self.layer, self.requeue_delay)) for i in ids]

    def _sent(self, results: list[tuple[int, SendResult]]) -> None:
        for message_id, result in results:
            outcome = result.outcome
            if outcome == "sent":
                self.sent += 1
                log.debug("Delayed message sent to {channel}", channel=result.channel)
            elif outcome == "full":
                self.full += 1
                log.warn(
                    "Delayed message for {channel}: the channel is full; trying again in {delay}s",
                    channel=result.channel,
                    delay=result.due_in,
                )
                self._schedule(message_id, result.due_in)
            elif outcome == "not_due":
                self._schedule(message_id, result.due_in)
            elif outcome == "failed":
                self.failed += 1
                log.error(
                    "Delayed message for {channel} cannot be sent and was removed: {error}",
                    channel=result.channel,
                    error=result.error,
                )

    def _send_failed(self, failure: Failure) -> None:
        # The messages stay stored; the next look at the store finds them.
        self._poll_wanted = False
        self._store_failure("Sending delayed messages", failure)

    # -- storing -----------------------------------------------------------------

    def _stored(self, results: list[Stored]) -> None:
        done = self._to_store[: len(results)]
        del self._to_store[: len(results)]
        self._store_failures = 0
        for (channel, _, _), (message_id, detail) in zip(done, results, strict=True):
            if message_id is None:
                self.invalid += 1
                log.error(
                    "Invalid message on {channel} ignored: the message for {to} {reason}",
                    channel=DELAY_CHANNEL,
                    to=channel,
                    reason=detail,
                )
            else:
                self.stored += 1
                assert isinstance(detail, float)
                self._schedule(message_id, detail)
        if not self._to_store:
            self._receive()

    def _store_failed(self, failure: Failure) -> None:
        delay = self.retry_delays[min(self._store_failures, len(self.retry_delays) - 1)]
        self._store_failures += 1
        self._store_failure(
            "Storing %d delayed message(s)" % min(len(self._to_store), self.batch), failure
        )
        self._store_retry = self._reactor.callLater(delay, self._retry_store)

    def _retry_store(self) -> None:
        self._store_retry = None
        self._kick()

    # -- looking at the store ----------------------------------------------------

    def _polled(self, rows: list[tuple[int, float]]) -> None:
        new = [row for row in rows if row[0] not in self._scheduled]
        for message_id, due_in in new:
            self._schedule(message_id, due_in)
        if len(rows) >= self.batch and new and rows[-1][1] <= 0:
            # A backlog of overdue messages (a restart, say): look again
            # as soon as these are sent, not a whole sleep later.
            self._poll_wanted = True

    def _poll_failed(self, failure: Failure) -> None:
        self._store_failure("Looking for due delayed messages", failure)
