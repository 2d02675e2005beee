"""
``twistd chanserv``: the command-line options, checked before the process
serves (settings, ``CHANNEL_LAYERS``, the mode against the layer;
``django.setup()`` runs here, once), and :func:`makeService`, which only
builds the service tree.  Main thread, before the reactor runs.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from twisted.python import usage

from chanserv.asgi import ChannelLayerWrapper, channel_layers
from chanserv.exceptions import InvalidChannelLayerError
from chanserv.log import Logger, install_django_logging, set_twistd_json_target, set_verbosity
from chanserv.routing import did_you_mean
from chanserv.server.listener import ListenError
from chanserv.server.options import ServerOptionsMixin, server_config_from_options
from chanserv.service import ChanservService, LayerService
from chanserv.threads import WorkerPool

__all__ = [
    "DEFAULT_THREADS",
    "LOG_FORMATS",
    "Options",
    "OptionsError",
    "build_service",
    "makeService",
]

#: Default size of the worker pool.  Consumers and views are plain blocking
#: Django code: a thread waiting on the database or another service holds no
#: CPU, so the pool is sized for concurrency, not for cores.  16 threads keep
#: a consumer doing 10 ms of blocking work at ~1,600 messages/s, cost about
#: 64 KB of resident memory each, and stay under the default connection
#: limits of PostgreSQL (100) and MySQL (151) for several processes.  Lower it
#: for SQLite-backed sites with many writes; raise it for I/O-heavy views.
DEFAULT_THREADS = 16

MODES = ("all", "interface", "worker")

LOG_FORMATS = ("text", "json")


class OptionsError(SystemExit):
    """
    A mistake on the command line or in the settings, found before the
    process serves: ``twistd chanserv: <one line>`` on stderr and exit code
    1 (a ``SystemExit``, so twistd prints neither the usage nor a traceback).
    """

    def __init__(self, message: str) -> None:
        super().__init__("twistd chanserv: " + " ".join(message.split()))


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
            "log-format",
            None,
            "text",
            "text: twistd's log lines; json: one JSON object per line (time, level, "
            "namespace, message and the event's fields), for log shippers.",
        ],
        [
            "graceful-timeout",
            None,
            30.0,
            "Seconds to let consumers and requests in flight finish on shutdown.",
            float,
        ],
        [
            "metrics",
            None,
            None,
            "Serve Prometheus /metrics, /healthz and /readyz on this server endpoint "
            "(e.g. tcp:9100:interface=127.0.0.1); default: none.",
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

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse, turning every ``UsageError`` into an :class:`OptionsError`:
        one line, exit code 1, no usage text.
        """
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            message = str(e)
            unknown = re.match(r"option --([\w-]+) not recognized", message)
            if unknown:
                flags = [name.rstrip("=") for name in self.longOpt]
                message += did_you_mean(unknown.group(1), flags).replace("'", "'--", 1)
            if re.match(r"option |No such option", message):
                message += " (twistd chanserv --help lists the options)"
            raise OptionsError(message) from None

    def postOptions(self) -> None:
        if self["mode"] not in MODES:
            raise usage.UsageError(
                "--mode must be one of %s, not %r%s"
                % (", ".join(MODES), self["mode"], did_you_mean(self["mode"], MODES))
            )
        if self["log-format"] not in LOG_FORMATS:
            raise usage.UsageError(
                "--log-format must be text or json, not %r%s"
                % (self["log-format"], did_you_mean(self["log-format"], LOG_FORMATS))
            )
        if self["threads"] < 1:
            raise usage.UsageError("--threads must be at least 1, not %d" % self["threads"])
        if self["verbosity"] not in (0, 1, 2):
            raise usage.UsageError("--verbosity must be 0, 1 or 2")
        if self["graceful-timeout"] < 0:
            raise usage.UsageError("--graceful-timeout must not be negative")
        if self["metrics"] is not None:
            self._check_metrics_endpoint(self["metrics"])
        self["server_config"] = server_config_from_options(self)
        self._setup_django()
        self._load_layer()
        if self["log-format"] == "json":
            self._log_json()

    def _log_json(self) -> None:
        # twistd builds its log observer after parsing, from its --logger
        # (a dotted name): point it at chanserv's JSON observer.
        parent: Any = getattr(self, "parent", None)
        if parent is None:
            return
        if parent.get("logger") or parent.get("syslog"):
            raise usage.UsageError(
                "--log-format=json writes where --logfile says; drop twistd's --logger/--syslog"
            )
        set_twistd_json_target(parent.get("logfile"), bool(parent.get("nodaemon")))
        parent["logger"] = "chanserv.log.twistd_json_observer"

    @staticmethod
    def _check_metrics_endpoint(description: str) -> None:
        from chanserv.server.listener import endpoint_from_string

        try:
            # Parsed only: no reactor is touched until the endpoint listens.
            endpoint_from_string(None, description)
        except Exception as e:
            raise usage.UsageError(
                "--metrics: %r is not a server endpoint (%s); for example "
                "tcp:9100:interface=127.0.0.1" % (description, e)
            )

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
                "DJANGO_SETTINGS_MODULE%s" % (_settings_hint("", sys.path[0]),)
            )
        os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
        try:
            importlib.import_module(settings_module)
        except ImportError as e:
            raise usage.UsageError(
                "Cannot import the settings module %r: %s (sys.path starts with %s)%s"
                % (settings_module, e, sys.path[0], _settings_hint(settings_module, sys.path[0]))
            )
        except Exception as e:
            raise usage.UsageError(
                "The settings module %r failed: %s: %s%s"
                % (settings_module, type(e).__name__, e, _where(e))
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


def _settings_hint(module: str, folder: str) -> str:
    """A "did you mean" among the ``*/settings.py`` of ``folder``."""
    try:
        found = sorted(
            "%s.settings" % entry.name
            for entry in os.scandir(folder)
            if entry.is_dir() and os.path.isfile(os.path.join(entry.path, "settings.py"))
        )
    except OSError:
        return ""
    if not module:
        return " (this folder has %s)" % ", ".join(found) if found else ""
    return did_you_mean(module, found)


def _where(error: BaseException) -> str:
    """`` (file, line N)`` of the frame that raised ``error``."""
    if isinstance(error, SyntaxError) and error.filename:
        return " (%s, line %s)" % (error.filename, error.lineno)
    frames = traceback.extract_tb(error.__traceback__)
    return " (%s, line %s)" % (frames[-1].filename, frames[-1].lineno) if frames else ""


def _report_listen_errors() -> None:
    # A port twistd cannot bind raises ListenError out of
    # privilegedStartService, past twistd (which removes its pidfile and, as
    # a daemon, reports the message to the parent): log it as one line
    # instead of the interpreter's traceback, and exit 1.
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        if issubclass(kind, ListenError):
            Logger("chanserv").critical("{error}", error=str(value))
            return
        previous(kind, value, tb)

    if not getattr(previous, "chanserv_listen_errors", False):
        hook.chanserv_listen_errors = True  # type: ignore[attr-defined]
        sys.excepthook = hook


def makeService(options: Options) -> ChanservService:
    """Build the service tree for ``options`` (already checked)."""
    from django.conf import settings
    from twisted.internet import reactor

    set_verbosity(options["verbosity"])
    install_django_logging(bool(settings.DEBUG))
    _report_listen_errors()
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
        metrics=options["metrics"],
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
    metrics: str | None = None,
) -> ChanservService:
    # Any: the reactor must provide IReactorTime, IReactorFromThreads and what the endpoints
    # need (IReactorTCP, IReactorSSL, ...), and Python's types have no intersection of
    # interfaces; server_config (a ServerConfig) may be None in the worker mode only, which its
    # type cannot tie to mode.
    """
    The service tree of one process: the layer, then (``all``/``worker``)
    the pool and the worker, then (``all``/``interface``) the interface
    server.  Used by ``twistd chanserv`` and the ``runserver`` /
    ``runworker`` management commands.  With ``metrics`` (a server endpoint
    string) a :class:`~chanserv.metrics.MetricsService` comes first, so
    that it stops last.
    """
    # Deferred, downward, for their cost: the worker and the Django views
    # load Django, the interface server twisted.web and autobahn; a mode
    # uses only some, and Options (twistd chanserv --help) needs none.
    from chanserv.server.site import InterfaceServer
    from chanserv.staticfiles import default_http_consumer
    from chanserv.worker import WorkerService

    if mode not in MODES:
        raise ValueError("mode must be one of %s, not %r" % (", ".join(MODES), mode))
    layer_name = type(channel_layer.channel_layer).__name__
    root = ChanservService(
        ready_message="chanserv ready: mode=%s, layer=%r (%s), threads=%s"
        % (mode, channel_layer.alias, layer_name, threads if mode != "interface" else 0),
        reactor=reactor,
    )
    metrics_service = None
    if metrics:
        # Deferred: prometheus_client is only loaded when asked for.
        from chanserv.metrics import MetricsService

        metrics_service = MetricsService(reactor, metrics, channel_layer.channel_layer)
        metrics_service.setServiceParent(root)
    LayerService(reactor, channel_layer).setServiceParent(root)
    if mode in ("all", "worker"):
        channel_layer.router.check_default(default_http_consumer())
        pool = WorkerPool(reactor, threads)
        pool.setServiceParent(root)
        worker = WorkerService(
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
        )
        worker.setServiceParent(root)
        if metrics_service is not None:
            metrics_service.watch_worker(worker, pool)
        from django.apps import apps

        if apps.is_installed("chanserv.delay"):
            # The delay server, after the worker so that it stops first (its
            # jobs share the pool); asked of its app, which imports the rest.
            delay_app: Any = apps.get_app_config("chanserv_delay")
            delay = delay_app.make_service(reactor, channel_layer.channel_layer, pool)
            delay.setServiceParent(root)
    if mode in ("all", "interface"):
        # The server takes the layer itself; what it needs of the routing
        # (is http.disconnect read?) it is told.
        interface = InterfaceServer(
            reactor,
            channel_layer.channel_layer,
            server_config,
            routed_channels=frozenset(channel_layer.router.channels),
        )
        interface.setServiceParent(root)
        if metrics_service is not None:
            metrics_service.watch_interface(interface)
    return root
