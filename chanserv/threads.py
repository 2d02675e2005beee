"""
Thread plumbing: :class:`WorkerPool`, the pool threads that run Django
code, fed through one queue, and :class:`ReactorBatcher`, which coalesces
calls from any thread into one ``callFromThread`` per reactor iteration.
Submissions and completions run on the reactor thread, the work in pool
threads.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.python import threadable

from chanserv.log import Logger

log = Logger()

__all__ = ["ReactorBatcher", "WorkerPool", "batcher_for"]


class ReactorBatcher:
    """
    Runs callables on the reactor thread, many per wake-up.

    :meth:`call` may be used from any thread.  Calls are queued under a lock
    and executed, in order, by a single drain scheduled with
    ``callFromThread`` (from another thread) or ``callLater(0)`` (from the
    reactor thread, so nothing re-enters the caller).  While a drain is
    pending, further calls only append to the queue: a burst of N calls costs
    one reactor wake-up.
    """

    def __init__(self, reactor: Any) -> None:
        # Any: the reactor must provide IReactorTime (callLater) and IReactorFromThreads
        # (callFromThread), and Python's types have no intersection of interfaces.
        self._reactor = reactor
        self._lock = threading.Lock()
        self._calls: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._scheduled = False

    #: Rounds of newly queued calls one drain may run before it yields to the
    #: reactor.
    max_rounds = 4

    def call(self, f: Callable[..., object], *args: object) -> None:
        """
        Arrange for ``f(*args)`` to run on the reactor thread.  Any thread.
        """
        with self._lock:
            self._calls.append((f, args))
            if self._scheduled:
                return
            self._scheduled = True
        if threadable.isInIOThread():
            self._reactor.callLater(0, self._drain)
        else:
            self._reactor.callFromThread(self._drain)

    def _drain(self) -> None:
        # Reactor thread.  Calls queued while a batch runs -- by the batch
        # itself or by other threads -- are run in this same drain (no new
        # wake-up, no extra reactor iteration), for a few rounds at most so
        # that a steady stream of calls cannot starve the sockets.
        for _ in range(self.max_rounds):
            with self._lock:
                calls = self._calls
                if not calls:
                    self._scheduled = False
                    return
                self._calls = deque()
            for f, args in calls:
                try:
                    f(*args)
                except Exception:
                    log.failure("Error in a call handed to the reactor")
        with self._lock:
            if not self._calls:
                self._scheduled = False
                return
        self._reactor.callLater(0, self._drain)


_batchers: dict[int, tuple[Any, ReactorBatcher]] = {}
_batchers_lock = threading.Lock()


def batcher_for(reactor: Any) -> ReactorBatcher:
    # Any: the reactor must provide IReactorTime (callLater) and IReactorFromThreads
    # (callFromThread), and Python's types have no intersection of interfaces.
    """
    The :class:`ReactorBatcher` shared by everything that crosses to
    ``reactor``, so that the layer's wake-ups and the pool's completions
    share one reactor wake-up.
    """
    with _batchers_lock:
        entry = _batchers.get(id(reactor))
        if entry is None or entry[0] is not reactor:
            entry = (reactor, ReactorBatcher(reactor))
            _batchers[id(reactor)] = entry
        return entry[1]


_STOP = object()


class WorkerPool(Service):
    """
    A named, bounded pool of threads for Django code, as an ``IService``.

    Work is submitted from the reactor thread with :meth:`submit`; each task
    runs in one of ``size`` threads named ``<name>-<n>``; its ``on_done``
    callback then runs on the reactor thread, batched with every other
    completion that happened meanwhile.

    A task that raises anything -- ``SystemExit`` and ``KeyboardInterrupt``
    included -- is logged and the thread carries on, so the pool never
    shrinks.  Callers that need admission control (take work only when a
    thread is free) use :attr:`idle` and the completion callbacks; the queue
    itself is unbounded.

    ``stopService`` lets queued and running tasks finish, then returns a
    Deferred that fires once every thread has exited.
    """

    def __init__(self, reactor: Any, size: int, name: str = "chanserv-worker") -> None:
        # Any: the reactor must provide IReactorTime (callLater) and IReactorFromThreads
        # (callFromThread), and Python's types have no intersection of interfaces.
        if size < 1:
            raise ValueError("a worker pool needs at least one thread, not %r" % (size,))
        self._reactor = reactor
        self.size = size
        self.name = name
        # queue.SimpleQueue: put and get are C code; a blocked get waits
        # without holding the GIL.  (A threading.Condition costs a Python-level
        # lock allocation per wait and a Python loop per notify.)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._busy = 0
        self._exited = 0
        self._stopped: Deferred[None] | None = None
        self._batcher = batcher_for(reactor)

    @property
    def busy(self) -> int:
        """Tasks submitted and not yet completed.  Reactor thread."""
        return self._busy

    @property
    def idle(self) -> int:
        """Threads that a newly submitted task would find free.  Reactor thread."""
        return max(0, self.size - self._busy)

    def startService(self) -> None:
        super().startService()
        self._exited = 0
        self._stopped = None
        for n in range(self.size):
            t = threading.Thread(target=self._run, name="%s-%d" % (self.name, n + 1), daemon=True)
            self._threads.append(t)
            t.start()

    def submit(
        self,
        task: Callable[..., object],
        *args: object,
        on_done: Callable[[], None] | None = None,
    ) -> None:
        """
        Run ``task(*args)`` in a pool thread.  Reactor thread.

        ``on_done()`` runs afterwards on the reactor thread, whether the task
        returned or raised.
        """
        self._busy += 1
        self._queue.put((task, args, on_done))

    def _complete(self, on_done: Callable[[], None] | None) -> None:
        # Reactor thread, via the batcher.
        self._busy -= 1
        if on_done is not None:
            on_done()

    def _run(self) -> None:
        # Pool thread.
        get = self._queue.get
        while True:
            item = get()
            if item is _STOP:
                break
            task, args, on_done = item
            try:
                task(*args)
            except BaseException:
                # SystemExit and KeyboardInterrupt included: a consumer must
                # not be able to take a pool thread down with it.
                log.failure(
                    "Unhandled error in pool thread {thread}",
                    thread=threading.current_thread().name,
                )
            self._batcher.call(self._complete, on_done)
        self._batcher.call(self._thread_exited)

    def _thread_exited(self) -> None:
        # Reactor thread.
        self._exited += 1
        if self._exited == len(self._threads) and self._stopped is not None:
            self._threads = []
            d, self._stopped = self._stopped, None
            d.callback(None)

    def stopService(self) -> Deferred[None]:
        """
        Stop every thread once the work already queued is done.
        """
        super().stopService()
        d: Deferred[None] = Deferred()
        if not self._threads:
            d.callback(None)
            return d
        self._stopped = d
        for _ in self._threads:
            self._queue.put(_STOP)
        return d
