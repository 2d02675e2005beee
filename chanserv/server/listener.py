"""
One listening endpoint as a service (:class:`ListenerService`), and the
endpoint descriptions it takes.  Reactor thread only.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.application.service import Service
from twisted.internet import endpoints
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.python.failure import Failure

from chanserv.log import Logger

__all__ = ["ListenerService", "endpoint_from_string"]

log = Logger()


def endpoint_from_string(reactor: Any, description: str) -> IStreamServerEndpoint:
    # Any: an endpoint description may need any of IReactorTCP, IReactorSSL,
    # IReactorUNIX and IReactorSocket, and Python's types have no
    # intersection of interfaces.
    """
    A server endpoint for ``description``: any ``serverFromString`` string,
    or ``fd:fileno=N`` (also ``fd:N``) for an inherited listening socket,
    whose address family is read from the socket itself.

    :raises ValueError: a malformed description or an unusable descriptor.
    """
    if description.startswith("fd:"):
        argument = description[3:]
        if argument.startswith("fileno="):
            argument = argument[len("fileno=") :]
        if not argument.isdigit():
            raise ValueError("fd endpoint needs fileno=N, not %r" % (description,))
        fileno = int(argument)
        try:
            probe = socket.socket(fileno=fileno)
        except OSError as e:
            raise ValueError("file descriptor %d is not a socket: %s" % (fileno, e)) from None
        family = probe.family
        probe.detach()
        return endpoints.AdoptedStreamServerEndpoint(reactor, fileno, family)
    return endpoints.serverFromString(reactor, description)


class ListenerService(Service):
    """
    Listens with ``factory`` on ``endpoint`` (an ``IStreamServerEndpoint``)
    while running.

    The port is bound in ``privilegedStartService`` (before ``twistd`` drops
    privileges) or else in ``startService``.  A failure the endpoint reports
    at once is raised from there; one it reports later is logged.
    ``stopService`` stops listening (or cancels a pending listen) and
    returns a Deferred that fires once the port is closed.
    """

    def __init__(self, endpoint: IStreamServerEndpoint, factory: IProtocolFactory) -> None:
        self.endpoint = endpoint
        self.factory = factory
        self._listening: Deferred[IListeningPort] | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        super().startService()
        if self._listening is None:
            self._listen()

    def _listen(self) -> None:
        starting = True
        failed: list[Failure] = []

        def not_listening(failure: Failure) -> None:
            if starting:
                failed.append(failure)
            elif not failure.check(CancelledError):
                log.failure("Cannot listen on {endpoint}", failure, endpoint=self.endpoint)

        self._listening = self.endpoint.listen(self.factory)
        self._listening.addErrback(not_listening)
        starting = False
        if failed:
            self._listening = None
            failed[0].raiseException()

    def listening_port(self) -> Deferred[IListeningPort | None]:
        """
        Fires with the ``IListeningPort`` once listening; with None if the
        service is not started or listening failed.
        """
        listening = self._listening
        if listening is None:
            return succeed(None)
        result: Deferred[IListeningPort | None] = Deferred()

        def relay(port: IListeningPort) -> IListeningPort:
            result.callback(port)
            return port

        listening.addCallback(relay)
        return result

    def stopService(self) -> Deferred[None]:
        super().stopService()
        listening, self._listening = self._listening, None
        if listening is None:
            return succeed(None)
        listening.cancel()

        def stop(port: Any) -> Any:
            return None if port is None else port.stopListening()

        return listening.addCallback(stop)
