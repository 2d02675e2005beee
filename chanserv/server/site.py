"""
The interface server as one service (:class:`InterfaceServer`): reply
dispatch, HTTP and WebSocket factories, listeners (ALPN ``h2`` on TLS), the
timeout sweep and the access log, started in order and stopped gracefully.
Reactor thread only.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from twisted.application.internet import TimerService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks, maybeDeferred
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.logger import LogLevel

from chanserv.interfaces import IReactorChannelLayer
from chanserv.log import Logger, is_enabled
from chanserv.server.accesslog import ACCESS_NAMESPACE, AccessLogWriter
from chanserv.server.config import ServerConfig
from chanserv.server.http import HTTPFactory, HTTPProtocol
from chanserv.server.listener import ListenerService, endpoint_from_string
from chanserv.server.replies import ReplyRegistry
from chanserv.server.websocket import WebSocketFactory

__all__ = ["InterfaceServer"]

log = Logger()

#: Seconds to wait for aborted connections to be gone.
ABORT_GRACE = 5.0


def _is_tls(description: str) -> bool:
    return description.split(":", 1)[0].strip().lower() == "ssl"


def http2_take_over() -> Callable[[HTTPProtocol], None] | None:
    """
    What takes a TLS connection over once ALPN chose ``h2``
    (:func:`chanserv.server.http2.take_over`), or None when Twisted's HTTP/2
    support (``twisted[http2]``: the ``h2`` and ``priority`` packages) is
    not installed.
    """
    # Imported here: h2 and priority are an optional dependency.
    try:
        from chanserv.server.http2 import take_over
    except ImportError:
        return None
    return take_over


def _bounded(reactor: IReactorTime, d: Deferred[Any], timeout: float) -> Deferred[bool]:
    """Fires True when ``d`` fires, or False after ``timeout`` seconds."""
    result: Deferred[bool] = Deferred()

    def expire() -> None:
        if not result.called:
            result.callback(False)

    call = reactor.callLater(timeout, expire)

    def done(outcome: Any) -> None:
        if call.active():
            call.cancel()
        if not result.called:
            result.callback(True)

    d.addErrback(lambda f: log.failure("Error while draining connections", f))
    d.addBoth(done)
    return result


class InterfaceServer(MultiService):
    """
    HTTP and WebSocket on every endpoint of ``config``.

    :param reactor: the reactor (listening, time, timers).
    :param layer: the channel layer (:class:`~chanserv.interfaces.IChannelLayer`
        and :class:`~chanserv.interfaces.IReactorChannelLayer`); its reactor
        face must be attached before this service starts.
    :param config: a :class:`~chanserv.server.config.ServerConfig`.
    :param routed_channels: the channels a consumer takes (the router's),
        or None if unknown; see :class:`~chanserv.server.http.HTTPFactory`.

    Attributes: ``replies``, ``http_factory``, ``websocket_factory``,
    ``listeners`` (a :class:`~chanserv.server.listener.ListenerService` per
    endpoint; their ports: :meth:`listening_ports`).  A port that cannot be
    bound fails ``privilegedStartService``/``startService`` with a one-line
    :class:`~chanserv.server.listener.ListenError`.  The access log
    (``config.access_log``): ``"-"`` for twisted.logger events (none at
    verbosity 0), a path for an NCSA file, None for none.
    """

    name = "interface"

    def __init__(
        self,
        reactor: Any,
        layer: IReactorChannelLayer,
        config: ServerConfig,
        routed_channels: Collection[str] | None = None,
    ) -> None:
        # Any: the reactor must provide IReactorTime and what the endpoints need (IReactorTCP,
        # IReactorSSL, IReactorUNIX, IReactorSocket), and Python's types have no intersection of
        # interfaces.
        super().__init__()
        self.reactor = reactor
        self.layer = layer
        self.config = config
        self.access_log: AccessLogWriter | None = None
        self.replies = ReplyRegistry(layer)
        self.replies.setServiceParent(self)
        self.websocket_factory = WebSocketFactory(reactor, layer, self.replies, config, None)
        self.http_factory = HTTPFactory(
            reactor,
            layer,
            self.replies,
            config,
            websocket_factory=self.websocket_factory,
            routed_channels=routed_channels,
        )
        if config.http2:
            take_over = http2_take_over()
            if take_over is not None:
                self.http_factory.alternative_protocols[b"h2"] = take_over
            elif any(_is_tls(description) for description in config.endpoints):
                log.warn(
                    "HTTP/2 is not available (install twisted[http2]): "
                    "TLS endpoints negotiate HTTP/1.1 only"
                )
        self.sweeper = TimerService(config.sweep_interval, self._sweep)
        self.sweeper.clock = reactor
        self.sweeper.setServiceParent(self)
        self.listeners: list[ListenerService] = []
        for description in config.endpoints:
            endpoint = endpoint_from_string(reactor, description)
            listener = ListenerService(
                endpoint, self.http_factory, description, tls=_is_tls(description)
            )
            listener.setServiceParent(self)
            self.listeners.append(listener)

    def _sweep(self) -> None:
        now = self.reactor.seconds()
        self.http_factory.check_timeouts(now)
        self.websocket_factory.check_timeouts(now)

    def startService(self) -> None:
        target = self.config.access_log
        if target == "-" and not is_enabled(ACCESS_NAMESPACE, LogLevel.info):
            target = None  # -v 0: no event to build per request only to drop it
        if target is not None and self.access_log is None:
            self.access_log = AccessLogWriter.open(target, self.reactor)
        self.http_factory.access_log = self.access_log
        self.websocket_factory.access_log = self.access_log
        super().startService()

    def listening_ports(self) -> Deferred[list[IListeningPort]]:
        """The ``IListeningPort`` of every listener, once they listen."""
        waiting = [listener.listening_port() for listener in self.listeners]
        d = DeferredList(waiting, fireOnOneErrback=True, consumeErrors=True)
        return d.addCallback(lambda results: [port for _, port in results if port is not None])

    @inlineCallbacks
    def stopService(self) -> Any:
        # Any: an inlineCallbacks generator yielding Deferreds of several result types; the
        # decorated method returns a Deferred that fires with None.
        """
        Stop listening, drain HTTP (bounded by ``graceful_timeout``), close
        WebSockets with 1001, then stop the sweep and the reply dispatch.
        """
        Service.stopService(self)
        yield DeferredList(
            [maybeDeferred(listener.stopService) for listener in self.listeners],
            consumeErrors=True,
        )
        grace = self.config.graceful_timeout
        http_done = _bounded(self.reactor, self.http_factory.drain(), grace)
        ws_done = _bounded(self.reactor, self.websocket_factory.close_all(1001), grace)
        http_ok = yield http_done
        if not http_ok:
            log.warn(
                "{count} HTTP connections still busy after {grace}s: cut",
                count=len(self.http_factory.connections),
                grace=grace,
            )
            self.http_factory.abort_all()
            # An aborted connection is gone an iteration later.
            yield _bounded(self.reactor, self.http_factory.drain(), ABORT_GRACE)
        ws_ok = yield ws_done
        if not ws_ok:
            log.warn("WebSockets still open after {grace}s: cut", grace=grace)
            self.websocket_factory.abort_all()
            yield _bounded(self.reactor, self.websocket_factory.close_all(1001), ABORT_GRACE)
        yield maybeDeferred(self.sweeper.stopService)
        yield maybeDeferred(self.replies.stopService)
        if self.access_log is not None:
            self.access_log.close()
            self.access_log = None
