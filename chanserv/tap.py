"""
``twistd chanserv``: the command-line options, checked before the process
serves (settings, ``CHANNEL_LAYERS``, the mode against the layer;
``django.setup()`` runs here, once), and :func:`makeService`, which only
builds the service tree.  Main thread, before the reactor runs.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from twisted.python import usage

from chanserv.asgi import ChannelLayerWrapper, channel_layers
from chanserv.exceptions import InvalidChannelLayerError
from chanserv.log import set_verbosity
from chanserv.server.options import ServerOptionsMixin, server_config_from_options
from chanserv.service import ChanservService, LayerService
from chanserv.threads import WorkerPool

__all__ = ["DEFAULT_THREADS", "Options", "build_service", "makeService"]

#: Default size of the worker pool.  Consumers and views are plain blocking
#: Django code: a thread waiting on the database or another service holds no
#: CPU, so the pool is sized for concurrency, not for cores.  16 threads keep
#: a consumer doing 10 ms of blocking work at ~1,600 messages/s, cost about
#: 64 KB of resident memory each, and stay under the default connection
#: limits of PostgreSQL (100) and MySQL (151) for several processes.  Lower it
#: for SQLite-backed sites with many writes; raise it for I/O-heavy views.
DEFAULT_THREADS = 16

MODES = ("all", "interface", "worker")


class Options(ServerOptionsMixin, usage.Options):
    """
    Options of ``twistd chanserv``; see ``twistd chanserv --help``.

    Parsing checks everything that can be checked before the process
    serves -- the settings module, ``CHANNEL_LAYERS``, the mode against the
    layer -- so a mistake ends ``twistd`` with a one-line message and a
    non-zero exit, not a traceback.  ``django.setup()`` runs here, once.
    Main thread.
    """

    synopsis = "[options]"
    longdesc = (
        "Serve a Django project with the Channels 1.x programming model: HTTP and "
        "WebSockets on one port, a channel layer and a pool of worker threads. "
        "Run it from the project's folder (the one holding manage.py)."
    )

    optParameters = [
        ["settings", None, None, "Django settings module (default: $DJANGO_SETTINGS_MODULE)."],
        [
            "mode",
            None,
            "all",
            "all: interface server and workers in one process; interface: HTTP and "
            "WebSockets only; worker: consumers only. interface and worker need a "
            "cross-process (Redis) layer.",
        ],
        ["layer", None, "default", "Alias of the channel layer in CHANNEL_LAYERS."],
        ["threads", None, DEFAULT_THREADS, "Worker threads running consumers and views.", int],
        ["verbosity", "v", 1, "0: warnings only, 1: info, 2: debug.", int],
        [
            "graceful-timeout",
            None,
            30.0,
            "Seconds to let consumers and requests in flight finish on shutdown.",
            float,
        ],
    ] + ServerOptionsMixin.server_parameters

    optFlags = list(ServerOptionsMixin.server_flags) + [
        [
            "no-ordering",
            None,
            "Let the messages of one reply channel run concurrently (overrides the "
            "CHANSERV_ORDERED_REPLY_CHANNELS setting).",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["pythonpath"] = []
        self["only_channels"] = []
        self["exclude_channels"] = []

    def opt_pythonpath(self, value: str) -> None:
        """A folder to add to sys.path (repeatable)."""
        self["pythonpath"].append(value)

    def opt_only_channels(self, value: str) -> None:
        """Only consume channels matching this glob (repeatable)."""
        self["only_channels"].append(value)

    def opt_exclude_channels(self, value: str) -> None:
        """Never consume channels matching this glob (repeatable)."""
        self["exclude_channels"].append(value)

    def postOptions(self) -> None:
        if self["mode"] not in MODES:
            raise usage.UsageError(
                "--mode must be one of %s, not %r" % (", ".join(MODES), self["mode"])
            )
        if self["threads"] < 1:
            raise usage.UsageError("--threads must be at least 1, not %d" % self["threads"])
        if self["verbosity"] not in (0, 1, 2):
            raise usage.UsageError("--verbosity must be 0, 1 or 2")
        if self["graceful-timeout"] < 0:
            raise usage.UsageError("--graceful-timeout must not be negative")
        self["server_config"] = server_config_from_options(self)
        self._setup_django()
        self._load_layer()

    def _setup_django(self) -> None:
        # twistd's script does not put the current folder on sys.path the
        # way `python manage.py` does; do it so the project imports.
        for path in reversed([os.getcwd(), *self["pythonpath"]]):
            path = os.path.abspath(path)
            if path not in sys.path:
                sys.path.insert(0, path)
        settings_module = self["settings"] or os.environ.get("DJANGO_SETTINGS_MODULE")
        if not settings_module:
            raise usage.UsageError(
                "No Django settings: pass --settings=myproject.settings or set "
                "DJANGO_SETTINGS_MODULE"
            )
        os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
        try:
            importlib.import_module(settings_module)
        except ImportError as e:
            raise usage.UsageError(
                "Cannot import the settings module %r: %s (sys.path starts with %s)"
                % (settings_module, e, sys.path[0])
            )
        import django

        try:
            django.setup()
        except Exception as e:
            raise usage.UsageError("Django setup failed: %s: %s" % (type(e).__name__, e))

    def _load_layer(self) -> None:
        alias = self["layer"]
        try:
            wrapper = channel_layers[alias]
        except InvalidChannelLayerError as e:
            raise usage.UsageError(str(e))
        if self["mode"] != "all" and wrapper.local_only():
            raise usage.UsageError(
                "--mode=%s needs a channel layer that crosses processes, but "
                "CHANNEL_LAYERS[%r] is %s, which lives inside one process: nothing "
                "would ever reach the other side. Use --mode=all, or the Redis layer "
                "(chanserv.layers.RedisChannelLayer)."
                % (self["mode"], alias, type(wrapper.channel_layer).__name__)
            )
        self["channel_layer"] = wrapper


def makeService(options: Options) -> ChanservService:
    """Build the service tree for ``options`` (already checked)."""
    from twisted.internet import reactor

    set_verbosity(options["verbosity"])
    return build_service(
        reactor,
        mode=options["mode"],
        channel_layer=options["channel_layer"],
        threads=options["threads"],
        server_config=options["server_config"],
        only_channels=options["only_channels"],
        exclude_channels=options["exclude_channels"],
        graceful_timeout=options["graceful-timeout"],
        verbosity=options["verbosity"],
        ordered=False if options["no-ordering"] else None,
    )


def build_service(
    reactor: Any,
    *,
    mode: str,
    channel_layer: ChannelLayerWrapper,
    threads: int = DEFAULT_THREADS,
    server_config: Any = None,
    only_channels: Sequence[str] = (),
    exclude_channels: Sequence[str] = (),
    graceful_timeout: float = 30.0,
    verbosity: int = 1,
    ordered: bool | None = None,
) -> ChanservService:
    # Any: the reactor must provide IReactorTime, IReactorFromThreads and what the endpoints
    # need (IReactorTCP, IReactorSSL, ...), and Python's types have no intersection of
    # interfaces; server_config (a ServerConfig) may be None in the worker mode only, which its
    # type cannot tie to mode.
    """
    The service tree of one process: the layer, then (``all``/``worker``)
    the pool and the worker, then (``all``/``interface``) the interface
    server.  Used by ``twistd chanserv`` and the ``runserver`` /
    ``runworker`` management commands.
    """
    # Deferred, downward, for their cost: the worker and the Django views
    # load Django, the interface server twisted.web and autobahn; a mode
    # uses only some, and Options (twistd chanserv --help) needs none.
    from chanserv.server.site import InterfaceServer
    from chanserv.staticfiles import default_http_consumer
    from chanserv.worker import Worker

    if mode not in MODES:
        raise ValueError("mode must be one of %s, not %r" % (", ".join(MODES), mode))
    layer_name = type(channel_layer.channel_layer).__name__
    root = ChanservService(
        ready_message="chanserv ready: mode=%s, layer=%r (%s), threads=%s"
        % (mode, channel_layer.alias, layer_name, threads if mode != "interface" else 0),
        reactor=reactor,
    )
    LayerService(reactor, channel_layer).setServiceParent(root)
    if mode in ("all", "worker"):
        channel_layer.router.check_default(default_http_consumer())
        pool = WorkerPool(reactor, threads)
        pool.setServiceParent(root)
        Worker(
            reactor,
            channel_layer.channel_layer,
            channel_layer.router,
            pool,
            consumer_layer=channel_layer,
            only_channels=only_channels,
            exclude_channels=exclude_channels,
            graceful_timeout=graceful_timeout,
            verbosity=verbosity,
            ordered=ordered,
        ).setServiceParent(root)
    if mode in ("all", "interface"):
        # The server takes the layer itself; what it needs of the routing
        # (is http.disconnect read?) it is told.
        InterfaceServer(
            reactor,
            channel_layer.channel_layer,
            server_config,
            routed_channels=frozenset(channel_layer.router.channels),
        ).setServiceParent(root)
    return root
