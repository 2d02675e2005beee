"""
The private names of Twisted that chanserv uses (HTTP/2 aside: see
:mod:`chanserv.server.http2`).

Checked on Twisted 26.4.0 to 26.10.0; ``tests/test_compat_pins.py`` pins
each one.

- ``HTTPChannel._respondToBadRequestAndDisconnect()``: where Twisted's
  HTTP/1.1 parser sends its bare ``400`` and closes.  chanserv checks every
  request head before Twisted parses it, so in practice only a malformed
  chunked body still ends there; :class:`HookedHTTPChannel` routes it to
  :meth:`~HookedHTTPChannel.twisted_refused`, so that such a refusal is
  answered, logged and counted like chanserv's own (and a body already
  streaming to the application is told).  No public hook exists: Twisted
  calls it from its transfer decoders.
- ``ReactorBase._exitSignal``: the signal that stopped the reactor, which
  ``twistd`` re-raises on itself after the reactor stops, so that its exit
  status says "killed by SIGTERM".  :func:`forget_exit_signal` clears it
  after an orderly stop so the process exits 0.  Without it, a graceful stop
  exits ``-SIGTERM`` -- what plain ``twistd`` does.
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
    """
    If ``reactor`` was stopped by one of ``signals``, forget that signal so
    that ``twistd`` exits with status 0 instead of killing itself with it.
    Returns whether it did.  Reactor thread, after an orderly stop.
    """
    if getattr(reactor, "_exitSignal", None) in signals:
        reactor._exitSignal = None
        return True
    return False
