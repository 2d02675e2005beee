"""
The private names of Twisted that chanserv uses, HTTP/2 aside (checked on
Twisted 26.4.0 to 26.10.0, pinned by ``tests/test_compat_pins.py``), each
behind the helper that states why it is needed: the HTTP/1.1 parser's
bad-request hook and the reactor's exit signal.
Reactor thread only.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from twisted.web import http

__all__ = ["HookedHTTPChannel", "forget_exit_signal"]


class HookedHTTPChannel(http.HTTPChannel):
    """
    Twisted's ``HTTPChannel``, whose own refusals of a request (its private
    ``_respondToBadRequestAndDisconnect``) call :meth:`twisted_refused`.
    """

    def twisted_refused(self) -> None:
        """
        Twisted's parser refused the request being read.  By default, what
        Twisted does: a bare ``400`` and a closed connection.  Reactor thread.
        """
        super()._respondToBadRequestAndDisconnect()

    def _respondToBadRequestAndDisconnect(self) -> None:
        self.twisted_refused()


def forget_exit_signal(reactor: Any, signals: Collection[int]) -> bool:
    # Any: reads and resets the reactor's private _exitSignal, which no
    # IReactor* interface declares.
    """
    If ``reactor`` was stopped by one of ``signals``, forget that signal so
    that ``twistd`` exits with status 0 instead of killing itself with it.
    Returns whether it did.  Reactor thread, after an orderly stop.
    """
    if getattr(reactor, "_exitSignal", None) in signals:
        reactor._exitSignal = None
        return True
    return False
