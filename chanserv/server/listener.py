"""
One listening endpoint as a service (:class:`ListenerService`), which logs
its URL once listening and turns a port it cannot bind into a one-line
:class:`ListenError`; and the endpoint descriptions it takes.  Reactor
thread only.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from twisted.application.service import Service
from twisted.internet import endpoints
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.python.failure import Failure

from chanserv.log import Logger

__all__ = ["ListenError", "ListenerService", "address_url", "endpoint_from_string"]

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


class ListenError(Exception):
    """
    An endpoint could not listen; the message is one line naming the
    address, the reason and what to change.
    """


#: What to do about the usual reasons a port cannot be bound.
_LISTEN_ADVICE = {
    errno.EADDRINUSE: "address already in use: another process listens there; stop it, "
    "or choose another port",
    errno.EACCES: "permission denied: ports below 1024 need root or CAP_NET_BIND_SERVICE "
    "(or choose a port above 1023)",
    errno.EADDRNOTAVAIL: "address not available: no interface of this machine has it "
    "(check --bind)",
}


def address_url(address: object, tls: bool = False) -> str | None:
    """
    The URL clients use for a listening ``address``: ``http://H:P/``
    (``https`` with ``tls``, IPv6 hosts in brackets) or ``unix:/path``;
    None for an address of another kind.
    """
    if isinstance(address, (IPv4Address, IPv6Address)):
        host = address.host
        if isinstance(address, IPv6Address) or ":" in host:
            host = "[%s]" % host
        return "%s://%s:%d/" % ("https" if tls else "http", host, address.port)
    if isinstance(address, UNIXAddress):
        name: object = address.name
        if isinstance(name, bytes):
            name = name.decode("utf-8", "backslashreplace")
        return "unix:%s" % (name,)
    return None


def _listen_error(failure: Failure, description: str, tls: bool) -> ListenError:
    error = failure.value
    code = getattr(getattr(error, "socketError", None), "errno", None)
    if code is None:
        code = getattr(error, "errno", None)
    reason = _LISTEN_ADVICE.get(code) if isinstance(code, int) else None
    if reason is None:
        reason = str(getattr(error, "socketError", None) or error)
    where = description
    if isinstance(error, CannotListenError) and isinstance(error.port, int):
        host = error.interface or "0.0.0.0"
        address = (IPv6Address if ":" in host else IPv4Address)("TCP", host, error.port)
        where = address_url(address, tls) or description
    return ListenError(" ".join(("Cannot listen on %s: %s" % (where, reason)).split()))


class ListenerService(Service):
    """
    Listens with ``factory`` on ``endpoint`` (an ``IStreamServerEndpoint``)
    while running.

    The port is bound in ``privilegedStartService`` (before ``twistd`` drops
    privileges) or else in ``startService``.  A failure the endpoint reports
    at once is raised from there; one it reports later is logged.
    ``stopService`` stops listening (or cancels a pending listen) and
    returns a Deferred that fires once the port is closed.

    Once listening it logs ``Listening on URL`` (:func:`address_url`; the
    endpoint's description when the address has no URL).  A port that
    cannot be bound raises :class:`ListenError`, one line.

    :param description: the endpoint's description, for messages.
    :param tls: whether clients speak TLS to it (``https://`` URLs).
    """

    def __init__(
        self,
        endpoint: IStreamServerEndpoint,
        factory: IProtocolFactory,
        description: str | None = None,
        tls: bool = False,
    ) -> None:
        self.endpoint = endpoint
        self.factory = factory
        self.description = description if description is not None else str(endpoint)
        self.tls = tls
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

        def listening(port: IListeningPort) -> IListeningPort:
            try:
                url = address_url(port.getHost(), self.tls) or self.description
            except Exception:  # a port of an endpoint plugin that cannot tell
                url = self.description
            log.info("Listening on {url}", url=url)
            return port

        self._listening = self.endpoint.listen(self.factory)
        self._listening.addCallback(listening)
        self._listening.addErrback(not_listening)
        starting = False
        if failed:
            self._listening = None
            raise _listen_error(failed[0], self.description, self.tls)

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
