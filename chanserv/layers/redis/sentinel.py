"""
Redis Sentinel: :class:`SentinelEndpoint` connects to whichever server the
sentinels name as a service's master right now.  Reactor thread only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
)
from zope.interface import implementer

from chanserv.layers.redis.config import SentinelAddress
from chanserv.layers.redis.errors import MasterNotFound
from chanserv.layers.redis.protocol import ConnectionFactory, RedisConnectionProtocol
from chanserv.log import Logger

__all__ = ["SentinelEndpoint"]

log = Logger()

#: (host, port, tls) -> an endpoint connecting there.
EndpointTo = Callable[[str, int, bool], Any]  # an IStreamClientEndpoint


@implementer(IStreamClientEndpoint)
class SentinelEndpoint:
    """
    Connects to the current master of ``address.master_name``.

    Each :meth:`connect` resolves the master anew (:meth:`resolve_master`),
    then connects to it through ``endpoint_to(host, port, address.tls)``.
    Its Deferred fails with :class:`MasterNotFound` when no sentinel named
    a master; cancelling it stops the resolution or the connection.

    :param reactor: provides ``IReactorTime`` (and whatever ``endpoint_to``
        needs).
    :param address: the service and its sentinels.
    :param endpoint_to: makes the endpoints, to sentinels and to the master.
    :param timeout: seconds for one sentinel to answer, connecting included;
        then the next one is asked.

    :ivar resolved: ``(host, port)`` of the master last named, or None.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        address: SentinelAddress,
        endpoint_to: EndpointTo,
        timeout: float,
    ) -> None:
        self.reactor = reactor
        self.address = address
        self.endpoint_to = endpoint_to
        self.timeout = timeout
        self.resolved: tuple[str, int] | None = None
        self._first = 0  # the sentinel that answered last is asked first

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        d = self.resolve_master()

        def connect_to(master: tuple[str, int]) -> Deferred[IProtocol]:
            endpoint = self.endpoint_to(master[0], master[1], self.address.tls)
            connecting: Deferred[IProtocol] = endpoint.connect(protocolFactory)
            return connecting

        return d.addCallback(connect_to)

    def distrust(self) -> None:
        """
        The master last named was not one (a replica, or silent): ask the
        next sentinel first from now on, in case that one lagged behind.
        """
        self._first = (self._first + 1) % len(self.address.sentinels)

    def resolve_master(self) -> Deferred[tuple[str, int]]:
        """
        Ask the sentinels in turn for the master's ``(host, port)``.

        :raises MasterNotFound: (in the Deferred) no sentinel answered with
            an address; the message has each one's reason.
        """
        return Deferred.fromCoroutine(self._resolve())

    async def _resolve(self) -> tuple[str, int]:
        sentinels = self.address.sentinels
        reasons = []
        for i in range(len(sentinels)):
            index = (self._first + i) % len(sentinels)
            host, port = sentinels[index]
            try:
                master = await self._ask(host, port)
            except CancelledError:
                raise
            except TimeoutError:
                reasons.append("%s:%d did not answer in %gs" % (host, port, self.timeout))
                continue
            except Exception as e:  # any failure of one sentinel: ask the next
                reasons.append("%s:%d: %s" % (host, port, str(e) or type(e).__name__))
                continue
            if master is None:
                reasons.append(
                    "%s:%d knows no master named %r" % (host, port, self.address.master_name)
                )
                continue
            self._first = index
            if master != self.resolved:
                log.info(
                    "Sentinel {sentinel} names {master} as the master of {name}",
                    sentinel="%s:%d" % (host, port),
                    master="%s:%d" % master,
                    name=self.address.master_name,
                )
            self.resolved = master
            return master
        raise MasterNotFound(
            "No sentinel of %s named its master: %s" % (self.address, "; ".join(reasons))
        )

    def _ask(self, host: str, port: int) -> Deferred[tuple[str, int] | None]:
        factory = ConnectionFactory(self.reactor, self.timeout, "sentinel %s:%d" % (host, port))
        endpoint = self.endpoint_to(host, port, self.address.sentinel_tls)
        d = Deferred.fromCoroutine(self._query(endpoint, factory))
        return d.addTimeout(self.timeout, self.reactor)

    async def _query(self, endpoint: Any, factory: ConnectionFactory) -> tuple[str, int] | None:
        proto: RedisConnectionProtocol = await endpoint.connect(factory)
        try:
            await proto.whenConnected()
            if self.address.sentinel_password is not None:
                user = [self.address.sentinel_username] if self.address.sentinel_username else []
                await proto.execute_command("AUTH", *user, self.address.sentinel_password)
            reply = await proto.sentinel_get_master_addr_by_name(self.address.master_name)
        finally:
            # One question per connection: nothing else is waiting on it.
            proto.transport.abortConnection()
        if reply is None:
            return None
        if not (isinstance(reply, list) and len(reply) == 2):
            raise ValueError("unexpected reply %r" % (reply,))
        host, port = reply
        return (host.decode("utf-8") if isinstance(host, bytes) else str(host), int(port))
