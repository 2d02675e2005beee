"""
The service tree of one chanserv process: :class:`ChanservService` starts
layer, pool, worker and interface server in order and stops them one after
the other in reverse order.  Reactor thread only.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred
from twisted.internet.interfaces import IReactorCore

from chanserv._compat.twisted import forget_exit_signal
from chanserv.interfaces import IReactorChannelLayer
from chanserv.log import Logger

if TYPE_CHECKING:
    from chanserv.asgi import ChannelLayerWrapper

log = Logger()

_GRACEFUL_SIGNALS = (signal.SIGTERM, signal.SIGINT)

__all__ = ["ChanservService", "LayerService"]


class LayerService(Service):
    """
    Binds a channel layer to the reactor for the life of the process: its
    reactor face, timers and connections start and stop here.
    """

    name = "layer"

    def __init__(
        self, reactor: Any, channel_layer: IReactorChannelLayer | ChannelLayerWrapper
    ) -> None:
        # Any: the reactor goes to the layer's attach_reactor, whose reactor must provide
        # IReactorTime and IReactorFromThreads (and IReactorTCP for the Redis layer): no
        # intersection type says so.
        self._reactor = reactor
        self.channel_layer = channel_layer

    def startService(self) -> None:
        super().startService()
        self.channel_layer.attach_reactor(self._reactor)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return maybeDeferred(self.channel_layer.detach_reactor)


class ChanservService(MultiService):
    """
    The root service.  Children start in the order they were added --
    layer, pool, worker, interface server -- and, unlike ``MultiService``,
    ``stopService`` stops them one after the other in reverse order, each
    waiting for the previous one: listeners close first, consumers in
    flight finish while the pool and the layer still run, and the layer
    goes last.  ``ready_message`` is logged once all have started.
    Reactor thread only.
    """

    def __init__(
        self, ready_message: str = "chanserv ready", reactor: IReactorCore | None = None
    ) -> None:
        super().__init__()
        self.ready_message = ready_message
        self._reactor = reactor

    def startService(self) -> None:
        super().startService()
        # Not a "message" field: Twisted's legacy log observers replace that
        # key in the shared event with (), and the line would read "()".
        log.info("{ready_message}", ready_message=self.ready_message)

    @inlineCallbacks
    def stopService(self) -> Any:
        # Any: an inlineCallbacks generator yielding its children's stopService Deferreds (of
        # any result); the decorated method returns a Deferred that fires with None.
        Service.stopService(self)
        clean = True
        for child in reversed(list(self)):
            assert IService.providedBy(child)
            try:
                yield maybeDeferred(child.stopService)
            except Exception:
                clean = False
                log.failure("Error stopping {service}", service=child)
        log.info("chanserv stopped")
        if clean:
            # twistd re-kills itself with the signal that stopped the reactor
            # so that the exit status says "killed by SIGTERM".  A SIGTERM or
            # SIGINT that led to a complete, orderly stop is a normal exit:
            # report it as 0, which process supervisors treat as success.
            forget_exit_signal(self._reactor, _GRACEFUL_SIGNALS)
