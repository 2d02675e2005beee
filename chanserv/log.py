"""
chanserv's loggers, whose events pass one level filter set by the
process's ``--verbosity`` before reaching Twisted's global publisher;
twistd's observers are left alone.  Any thread.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted import logger as _logger

__all__ = ["Logger", "set_verbosity"]

_LEVELS = {0: _logger.LogLevel.warn, 1: _logger.LogLevel.info, 2: _logger.LogLevel.debug}

_predicate: Any = _logger.LogLevelFilterPredicate(defaultLogLevel=_logger.LogLevel.info)
_publisher: Any = _logger.globalLogPublisher
_observer: Any = _logger.FilteringLogObserver(_publisher, [_predicate])


def set_verbosity(verbosity: int) -> None:
    """Show chanserv's events at ``verbosity`` 0, 1 or 2 from now on."""
    _predicate.setLogLevelForNamespace("", _LEVELS.get(verbosity, _logger.LogLevel.info))


class Logger(_logger.Logger):
    """A ``twisted.logger.Logger`` that goes through chanserv's level filter."""

    def __init__(
        self,
        namespace: str | None = None,
        source: object = None,
        observer: _logger.ILogObserver | None = None,
    ) -> None:
        if namespace is None:
            namespace = sys._getframe(1).f_globals.get("__name__", "chanserv")
        super().__init__(namespace, source, observer or _observer)
