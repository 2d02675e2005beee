"""
Test support shared by chanserv's own tests.

- :class:`ClockReactor`: :class:`chanserv.testing.ClockReactor`, a memory
  reactor with a clock that also takes ``callFromThread`` (queued as
  ``callLater(0)``), for unit tests of code that crosses threads through
  :class:`chanserv.threads.ReactorBatcher`; ``advance(0)`` or
  ``run_pending()`` runs what was handed over.
- :func:`reactor_thread`: the global reactor running in a daemon thread for
  the rest of the test session, for tests that need real sockets (Redis,
  the worker pool).  :func:`in_reactor` runs a function on it and waits.
"""

from __future__ import annotations

import queue
import signal
import threading
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from chanserv.testing import ClockReactor

__all__ = ["ClockReactor", "in_reactor", "reactor_thread"]


_started = threading.Event()
_lock = threading.Lock()


def reactor_thread() -> Any:
    """Start (once) and return the global reactor, running in a daemon thread."""
    from twisted.internet import reactor

    with _lock:
        if not _started.is_set():
            t = threading.Thread(
                target=reactor.run,  # type: ignore[attr-defined]
                kwargs={"installSignalHandlers": False},
                name="test-reactor",
                daemon=True,
            )
            reactor.callWhenRunning(_started.set)  # type: ignore[attr-defined]
            t.start()
            if not _started.wait(10):
                raise RuntimeError("the test reactor did not start")
    return reactor


def in_reactor(f: Callable[..., Any], *args: Any, timeout: float = 10.0, **kw: Any) -> Any:
    """
    Call ``f(*args, **kw)`` on the reactor thread and return its result,
    waiting for it if it is a Deferred.  Raises what ``f`` raised, or
    ``TimeoutError`` after ``timeout`` seconds.
    """
    reactor = reactor_thread()
    results: queue.Queue[tuple[bool, Any]] = queue.Queue()

    def call() -> None:
        d = defer.maybeDeferred(f, *args, **kw)

        def done(result: Any) -> None:
            if isinstance(result, Failure):
                results.put((False, result))
            else:
                results.put((True, result))

        d.addBoth(done)

    reactor.callFromThread(call)
    try:
        ok, value = results.get(timeout=timeout)
    except queue.Empty:
        raise TimeoutError("no result from the reactor within %ss" % (timeout,)) from None
    if not ok:
        value.raiseException()
    return value


def default_signals() -> None:
    """
    ``preexec_fn`` for test subprocesses that are stopped with SIGINT: give
    the child SIGINT's default disposition, so that a test run started with
    SIGINT ignored (in the background, under some CI wrappers) -- which its
    children would inherit -- still stops them.  Runs in the forked child.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
