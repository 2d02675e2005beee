"""
How the Redis layer's synchronous face reaches a reactor: the attached one,
or the global reactor started in a daemon thread.  Called from any thread
but the reactor thread (it would wait for itself); the operations it runs
go to the reactor thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python import threadable
from twisted.python.failure import Failure

from chanserv.layers.redis.errors import RedisTimeout
from chanserv.log import Logger

__all__ = ["call_in_reactor", "check_not_reactor_thread", "running_reactor"]

log = Logger()

_start_lock = threading.Lock()
_NOTHING = object()


def check_not_reactor_thread() -> None:
    """:raises RuntimeError: called on the reactor thread."""
    if threadable.isInIOThread():
        raise RuntimeError(
            "The synchronous face of RedisChannelLayer (send, receive, group_add, ...) "
            "cannot be used on the reactor thread: it would wait for the reactor "
            "itself. Use the reactor face there (send_twisted, receive_many_twisted, "
            "send_group_twisted, ...)."
        )


def running_reactor(timeout: float = 10.0) -> Any:
    # Any: the global reactor, as attach_reactor and call_in_reactor take it: it provides
    # IReactorCore, IReactorTime, IReactorTCP and IReactorFromThreads at once, which no single
    # interface type says.
    """
    The global reactor, started (once) in a daemon thread if it is not
    running yet.  Not on the reactor thread.

    :raises RuntimeError: it could not be started (for example it already
        ran and stopped: reactors cannot be restarted).
    """
    from twisted.internet import reactor as global_reactor

    reactor: Any = global_reactor
    if reactor.running:
        return reactor
    with _start_lock:
        if reactor.running:
            return reactor
        started = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            try:
                reactor.run(installSignalHandlers=False)
            except BaseException as e:
                errors.append(e)
                started.set()

        reactor.callWhenRunning(started.set)
        log.info("Starting the Twisted reactor in a background thread for the Redis layer")
        threading.Thread(target=run, name="chanserv-reactor", daemon=True).start()
        started.wait(timeout)
        if not reactor.running:
            raise RuntimeError(
                "The Redis channel layer could not start a reactor for this process: %s"
                % (errors[0] if errors else "it did not start within %ss" % timeout)
            )
    return reactor


class _Handoff:
    """A result passed from the reactor thread to one waiting thread."""

    def __init__(self, on_abandoned: Callable[[Any], None] | None) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._result: Any = _NOTHING
        self._abandoned = False
        self._on_abandoned = on_abandoned
        self.deferred: Deferred[Any] | None = None

    def deliver(self, result: Any) -> None:
        # Reactor thread.
        with self._cond:
            if not self._abandoned:
                self._result = result
                self._cond.notify()
                return
        # The caller gave up waiting: hand the result back (a message taken
        # off Redis is pushed back), never drop it silently.
        if isinstance(result, Failure):
            log.debug("A synchronous Redis call finished after its caller timed out: {f}", f=result)
        elif self._on_abandoned is not None:
            try:
                self._on_abandoned(result)
            except Exception:
                log.failure("Could not hand back the result of an abandoned Redis call")

    def wait(self, reactor: Any, timeout: float) -> Any:
        with self._cond:
            if not self._cond.wait_for(lambda: self._result is not _NOTHING, timeout):
                self._abandoned = True
                reactor.callFromThread(self._cancel)
                raise RedisTimeout(
                    "The Redis channel layer did not answer within %ss "
                    "(is the reactor or the Redis server stuck?)" % (timeout,)
                )
            result = self._result
        if isinstance(result, Failure):
            result.raiseException()
        return result

    def _cancel(self) -> None:
        if self.deferred is not None and not self.deferred.called:
            self.deferred.cancel()


def call_in_reactor(
    reactor: Any,
    f: Callable[..., Any],
    *args: Any,
    timeout: float,
    on_abandoned: Callable[[Any], None] | None = None,
) -> Any:
    # Any: f's arguments and result are the caller's (a Deferred's result is waited for and
    # returned instead); the reactor is one attach_reactor took (see there).
    """
    Run ``f(*args)`` on ``reactor``'s thread and return its result, waiting
    for it if it is a Deferred; raise what it raised.  Not on the reactor
    thread.

    :param timeout: seconds to wait; then the Deferred is cancelled and
        :class:`RedisTimeout` raised.
    :param on_abandoned: called on the reactor thread with a result that
        arrives after the timeout.
    """
    check_not_reactor_thread()
    handoff = _Handoff(on_abandoned)

    def run() -> None:
        d = maybeDeferred(f, *args)
        handoff.deferred = d
        d.addBoth(handoff.deliver)

    reactor.callFromThread(run)
    return handoff.wait(reactor, timeout)
