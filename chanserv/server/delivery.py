"""
Sending the messages an interface server must never drop
(``websocket.disconnect``, ``http.disconnect``) by waiting for room, bounded
by the layer's expiry.  Reactor thread only.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from chanserv.exceptions import ChannelFull
from chanserv.interfaces import IReactorChannelLayer
from chanserv.types import Content

__all__ = ["send_until_delivered"]

#: Seconds between attempts while the layer is unreachable.
RETRY_DELAY = 0.5


def send_until_delivered(
    layer: IReactorChannelLayer,
    reactor: IReactorTime,
    channel: str,
    message: Content,
    timeout: float,
) -> Deferred[None]:
    """
    Send ``message`` to ``channel`` with the layer's reactor face; while
    the channel is full, wait for room (``when_capacity_twisted``) and try
    again; while the layer is unreachable (a ``ConnectionError``), try
    again every :data:`RETRY_DELAY` seconds.  Gives up ``timeout`` seconds
    after the first attempt: the Deferred then fails with the last error.
    Other errors (an invalid message) fail it at once.  Callers give the
    layer's expiry plus a second: by then everything that was ahead of
    the message has been read or has expired.
    """
    deadline = reactor.seconds() + timeout
    result: Deferred[None] = Deferred()

    def attempt() -> None:
        d = layer.send_twisted(channel, message)
        d.addCallbacks(result.callback, failed)

    def failed(failure: Failure) -> None:
        remaining = deadline - reactor.seconds()
        if remaining <= 0 or not failure.check(ChannelFull, ConnectionError):
            result.errback(failure)
            return
        if failure.check(ChannelFull):
            room: Deferred[None] = layer.when_capacity_twisted(channel)
            room.addTimeout(remaining, reactor)
            room.addCallbacks(lambda _: attempt(), lambda _: result.errback(failure))
        else:
            reactor.callLater(min(RETRY_DELAY, remaining), attempt)

    attempt()
    return result
