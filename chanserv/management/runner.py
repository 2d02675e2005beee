"""
Running a chanserv service tree in the foreground of a management command,
doing what ``twistd`` would: console logging (text or JSON lines, Django's
``django`` logger included), ports bound before the reactor runs, start
once it runs, an orderly stop.  Main thread: it runs the reactor there, so
that thread then is the reactor thread.
"""

from __future__ import annotations

import sys
from typing import IO, Any

from twisted.application.service import Service
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)

from chanserv.asgi import ChannelLayerWrapper, channel_layers
from chanserv.exceptions import InvalidChannelLayerError
from chanserv.log import install_django_logging, json_file_observer, set_verbosity

_LEVELS = {0: LogLevel.warn, 1: LogLevel.info, 2: LogLevel.debug}


def cross_process_layer(alias: str, refusal: str) -> ChannelLayerWrapper:
    """
    The channel layer ``alias`` of ``CHANNEL_LAYERS``, for a command that runs
    beside other processes (``runworker``, ``rundelay``).  Main thread.

    :raises CommandError: the alias is not configured, or its layer lives
        inside one process; ``refusal`` is then the message, formatted with
        the alias and the layer's class name.
    """
    from django.core.management.base import CommandError

    try:
        wrapper = channel_layers[alias]
    except InvalidChannelLayerError as e:
        raise CommandError(str(e)) from None
    if wrapper.local_only():
        raise CommandError(refusal % (alias, type(wrapper.channel_layer).__name__))
    return wrapper


def start_console_logging(
    verbosity: int, stream: IO[str] | None = None, log_format: str = "text"
) -> None:
    """
    Send Twisted's log to ``stream`` (stdout) at ``verbosity`` 0, 1 or 2, as
    text lines or (``log_format="json"``) one JSON object per line; the
    ``django`` logger's records go there too.  After ``django.setup()``.
    """
    from django.conf import settings

    predicate: Any = LogLevelFilterPredicate(defaultLogLevel=_LEVELS.get(verbosity, LogLevel.info))
    out = stream or sys.stdout
    lines: Any = json_file_observer(out) if log_format == "json" else textFileLogObserver(out)
    observer: Any = FilteringLogObserver(lines, [predicate])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    set_verbosity(verbosity)
    install_django_logging(bool(settings.DEBUG))


def run_in_foreground(root: Service, reactor: Any, install_signal_handlers: bool = True) -> None:
    # Any: an IReactorCore whose run() also takes installSignalHandlers, as
    # every Twisted reactor's does though no IReactor* interface declares it.
    """
    Bind ``root``'s ports now (``privilegedStartService``), start it when
    ``reactor`` runs, stop it before the reactor shuts down (SIGINT/SIGTERM
    with ``install_signal_handlers``), and run the reactor until then.
    Blocks.

    :raises chanserv.server.listener.ListenError: a port cannot be bound
        (one line; nothing was started).
    """
    root.privilegedStartService()
    reactor.callWhenRunning(root.startService)
    reactor.addSystemEventTrigger("before", "shutdown", root.stopService)
    reactor.run(installSignalHandlers=install_signal_handlers)
