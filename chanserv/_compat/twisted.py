"""
The private names of Twisted that chanserv uses, HTTP/2 aside (checked on
Twisted 26.4.0 to 26.10.0, pinned by ``tests/test_compat_pins.py``), each
behind the helper that states why it is needed: the HTTP/1.1 parser's
bad-request hook, the reactor's exit signal, writing to a socket at once.
Reactor thread only.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from twisted.internet import tcp
from twisted.internet.interfaces import ITransport
from twisted.web import http

__all__ = ["HookedHTTPChannel", "forget_exit_signal", "write_now"]


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


def write_now(transport: ITransport | None, data: bytes) -> None:
    """
    ``transport.write(data)``, but sent to the socket at once when the
    transport is a plain TCP connection whose write buffer is empty: no
    write-readiness registration, no later ``doWrite`` and its two
    ``epoll_ctl`` calls, for the small reply frames that are nearly all of
    a WebSocket's traffic.  Whatever the socket does not take right away
    (or every byte, on an error, which the read side then reports) goes
    through ``write`` as usual, after nothing else, so order holds.
    Reactor thread.

    Uses Twisted's private ``_tempDataLen`` and ``_writeDisconnected``
    (checked on Twisted 26.4.0 to 26.10.0, pinned in
    ``tests/test_compat_pins.py``); without them every write takes
    ``write``.
    """
    if (
        type(transport) is tcp.Server
        and not transport.dataBuffer
        and not getattr(transport, "_tempDataLen", 1)
        and transport.connected
        and not transport.disconnecting
        and not getattr(transport, "_writeDisconnected", True)
    ):
        try:
            sent = transport.socket.send(data)
        except OSError:
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    if transport is not None:  # None: the connection is gone already
        transport.write(data)
