"""
:class:`ChannelLiveServerTestCase`: Channels 1.x's live-server test case --
a ``TransactionTestCase`` with a real server on a free port for Selenium or
WebSocket clients.  Where 1.x forked Daphne and a worker, chanserv serves
in this process: the whole service tree (interface server, worker pool) on
the global reactor, run in a daemon thread.  Setup and teardown run in the
test's thread and wait on the reactor thread; consumers run in the pool.
"""

from __future__ import annotations

import threading
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.test.testcases import TransactionTestCase
from django.utils.functional import classproperty
from twisted.application.service import IService
from twisted.internet.threads import blockingCallFromThread
from twisted.python import threadable

from chanserv.asgi import ChannelLayerWrapper, channel_layers
from chanserv.channel import DEFAULT_CHANNEL_LAYER

__all__ = ["ChannelLiveServerTestCase", "LiveServer"]

_start_lock = threading.Lock()


def background_reactor(timeout: float = 10.0) -> Any:
    # Any: the global reactor: IReactorCore, IReactorTCP and IReactorFromThreads at once,
    # which no single interface type says.
    """
    The global reactor, started (once) in a daemon thread unless it is
    running already.  Not on the reactor thread.

    :raises RuntimeError: it cannot run (it already ran and stopped).
    """
    from twisted.internet import reactor as global_reactor

    reactor: Any = global_reactor
    with _start_lock:
        if reactor.running:
            return reactor
        started = threading.Event()
        failed: list[BaseException] = []

        def run() -> None:
            try:
                reactor.run(installSignalHandlers=False)
            except BaseException as e:
                failed.append(e)
                started.set()

        reactor.callWhenRunning(started.set)
        threading.Thread(target=run, name="chanserv-live-server-reactor", daemon=True).start()
        started.wait(timeout)
        if not reactor.running:
            raise RuntimeError(
                "ChannelLiveServerTestCase could not start the Twisted reactor: %s"
                % (failed[0] if failed else "it did not start within %ss" % (timeout,))
            )
    return reactor


class LiveServer:
    """
    chanserv's service tree (``mode=all``) on ``host`` and ``port`` (0: a
    free one), serving the default channel layer with its routing, started
    and stopped from any thread but the reactor's.

    :param threads: worker threads (Channels 1.x's ``worker_threads``).
    :param serve_static: serve ``STATIC_URL`` through the staticfiles
        finders, whatever ``DEBUG`` says, as 1.x's live server did.
    """

    def __init__(
        self,
        host: str = "localhost",
        port: int = 0,
        threads: int = 1,
        serve_static: bool = True,
        alias: str = DEFAULT_CHANNEL_LAYER,
    ) -> None:
        self.host = host
        self.requested_port = port
        self.threads = threads
        self.serve_static = serve_static
        self.alias = alias
        self.port: int | None = None
        self._root: IService | None = None
        self._reactor: Any = None

    def _http_consumer(self) -> Any:
        # Any: a ViewConsumer (or StaticFilesConsumer), called by the worker as a consumer.
        from django.apps import apps

        from chanserv.handler import ViewConsumer
        from chanserv.staticfiles import StaticFilesConsumer

        if self.serve_static and apps.is_installed("django.contrib.staticfiles"):
            return StaticFilesConsumer()
        return ViewConsumer()

    def start(self, timeout: float = 30.0) -> int:
        """
        Build and start the tree; return the port it listens on.

        :raises RuntimeError: called on the reactor thread, or already started.
        :raises: what starting raised (a port in use, a bad routing).
        """
        if threadable.isInIOThread():
            raise RuntimeError("LiveServer.start() would wait for the reactor thread it runs on")
        if self._root is not None:
            raise RuntimeError("the live server is already started")
        from chanserv.server.config import ServerConfig
        from chanserv.tap import build_service

        configured = channel_layers[self.alias]
        if "flush" in getattr(configured.channel_layer, "extensions", ()):
            configured.channel_layer.flush()
        # A router of its own: the default routes chosen here (static files)
        # do not stick to the project's layer for later tests.
        wrapper = ChannelLayerWrapper(configured.channel_layer, self.alias, configured.routing)
        wrapper.router.check_default(self._http_consumer())
        host = self.host.replace(":", r"\:")
        config = ServerConfig(
            endpoints=("tcp:port=%d:interface=%s" % (self.requested_port, host),),
            access_log=None,
            graceful_timeout=5.0,
        )
        reactor = background_reactor()
        root = build_service(
            reactor, mode="all", channel_layer=wrapper, threads=self.threads, server_config=config
        )

        def start_on_reactor() -> Any:
            # Any: a Deferred firing with the listening ports (IListeningPort).
            from chanserv.server.site import InterfaceServer

            root.privilegedStartService()
            root.startService()
            (interface,) = [child for child in root if isinstance(child, InterfaceServer)]
            return interface.listening_ports()

        ports = _blocking(reactor, timeout, start_on_reactor)
        self._reactor, self._root = reactor, root
        self.port = int(ports[0].getHost().port)
        return self.port

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the tree (open sockets closed, consumers in flight finished); idempotent."""
        root, self._root = self._root, None
        if root is not None and root.running:
            _blocking(self._reactor, timeout, root.stopService)


def _blocking(reactor: Any, timeout: float, f: Any) -> Any:
    # Any: f returns a Deferred or a value of any type, handed back to the caller's thread.
    """``f()`` on the reactor thread, waited for from this one at most ``timeout`` seconds."""
    from twisted.internet.defer import maybeDeferred

    def call() -> Any:
        return maybeDeferred(f).addTimeout(timeout, reactor)

    return blockingCallFromThread(reactor, call)


def _in_memory_databases() -> list[str]:
    return [
        alias
        for alias in connections
        if connections[alias].vendor == "sqlite" and connections[alias].is_in_memory_db()
    ]


class ChannelLiveServerTestCase(TransactionTestCase):
    """
    A ``TransactionTestCase`` with a live chanserv server, started once per
    class after the class's settings overrides, stopped when the class ends
    (1.x started one per test).  ``live_server_url`` and
    ``live_server_ws_url`` name it.  The database must be one other threads
    can open (not SQLite in memory), as in 1.x; the default channel layer is
    served, flushed first, and with the in-memory layer the test's own
    thread shares it (``Group(...).send`` from the test reaches the sockets).
    """

    host: str = "localhost"
    port: int = 0
    worker_threads: int = 1
    serve_static: bool = True
    _live_server: LiveServer | None = None

    @classproperty
    def live_server_url(cls) -> str:
        """``http://host:port``."""
        return "http://%s:%s" % (cls.host, cls._server_port())

    @classproperty
    def live_server_ws_url(cls) -> str:
        """``ws://host:port``."""
        return "ws://%s:%s" % (cls.host, cls._server_port())

    @classmethod
    def _server_port(cls) -> int:
        server = cls._live_server
        if server is None or server.port is None:
            raise RuntimeError("the live server runs only between setUpClass and tearDownClass")
        return server.port

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        in_memory = _in_memory_databases()
        if in_memory:
            # unittest runs the class cleanups (Django's settings overrides)
            # when setUpClass raises.
            raise ImproperlyConfigured(
                "ChannelLiveServerTestCase can not be used with in memory databases (%s): "
                "the server's worker threads could not see the test's data; give the "
                "test database a file (DATABASES[...]['TEST']['NAME'])" % (", ".join(in_memory),)
            )
        server = LiveServer(cls.host, cls.port, cls.worker_threads, cls.serve_static)
        server.start()
        cls._live_server = server
        cls.addClassCleanup(cls._stop_live_server)

    @classmethod
    def _stop_live_server(cls) -> None:
        server, cls._live_server = cls._live_server, None
        if server is not None:
            server.stop()
