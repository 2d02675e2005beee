"""
Running a chanserv service tree in the foreground of a management command,
doing what ``twistd`` would: console logging, start once the reactor runs,
an orderly stop.  Main thread: it runs the reactor there, so that thread
then is the reactor thread.
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

from chanserv.log import set_verbosity

_LEVELS = {0: LogLevel.warn, 1: LogLevel.info, 2: LogLevel.debug}


def start_console_logging(verbosity: int, stream: IO[str] | None = None) -> None:
    """Send Twisted's log to ``stream`` (stdout) at ``verbosity`` 0, 1 or 2."""
    predicate: Any = LogLevelFilterPredicate(defaultLogLevel=_LEVELS.get(verbosity, LogLevel.info))
    text: Any = textFileLogObserver(stream or sys.stdout)
    observer: Any = FilteringLogObserver(text, [predicate])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    set_verbosity(verbosity)


def run_in_foreground(root: Service, reactor: Any, install_signal_handlers: bool = True) -> None:
    # Any: an IReactorCore whose run() also takes installSignalHandlers, as
    # every Twisted reactor's does though no IReactor* interface declares it.
    """
    Start ``root`` when ``reactor`` runs, stop it before the reactor shuts
    down (SIGINT/SIGTERM with ``install_signal_handlers``), and run the
    reactor until then.  Blocks.
    """
    reactor.callWhenRunning(root.startService)
    reactor.addSystemEventTrigger("before", "shutdown", root.stopService)
    reactor.run(installSignalHandlers=install_signal_handlers)
