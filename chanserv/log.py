"""
chanserv's loggers, whose events pass one level filter set by the
process's ``--verbosity`` before reaching Twisted's global publisher
(twistd's observers are left alone); the bridge that sends the stdlib
``django`` logger's records there too; and the JSON-lines observer of
``--log-format=json``.  Any thread.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from datetime import datetime, timezone
from typing import IO, Any

from twisted.python.failure import Failure

from twisted import logger as _logger

__all__ = [
    "DjangoLogHandler",
    "Logger",
    "install_django_logging",
    "is_enabled",
    "json_file_observer",
    "json_line",
    "set_twistd_json_target",
    "set_verbosity",
    "setup_logger",
    "twistd_json_observer",
]

_LEVELS = {0: _logger.LogLevel.warn, 1: _logger.LogLevel.info, 2: _logger.LogLevel.debug}
_ORDER = list(_logger.LogLevel.iterconstants())

_predicate: Any = _logger.LogLevelFilterPredicate(defaultLogLevel=_logger.LogLevel.info)
_publisher: Any = _logger.globalLogPublisher
_observer: Any = _logger.FilteringLogObserver(_publisher, [_predicate])


def set_verbosity(verbosity: int) -> None:
    """Show chanserv's events at ``verbosity`` 0, 1 or 2 from now on."""
    _predicate.setLogLevelForNamespace("", _LEVELS.get(verbosity, _logger.LogLevel.info))


def is_enabled(namespace: str, level: _logger.LogLevel) -> bool:
    """Whether chanserv's filter lets an event of ``level`` in ``namespace`` through."""
    return _ORDER.index(level) >= _ORDER.index(_predicate.logLevelForNamespace(namespace))


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


# -- the stdlib (Django) bridge ----------------------------------------------------------------


def _twisted_level(levelno: int) -> _logger.LogLevel:
    if levelno >= logging.CRITICAL:
        return _logger.LogLevel.critical
    if levelno >= logging.ERROR:
        return _logger.LogLevel.error
    if levelno >= logging.WARNING:
        return _logger.LogLevel.warn
    if levelno >= logging.INFO:
        return _logger.LogLevel.info
    return _logger.LogLevel.debug


class DjangoLogHandler(logging.Handler):
    """
    A ``logging.Handler`` that re-emits each record as a twisted.logger
    event through chanserv's filter: namespace the logger's name
    (``django.request``), the level mapped, the message formatted once, an
    exception as ``log_failure`` (the observer prints its traceback).  Any
    thread: Django logs from the pool threads.
    """

    def __init__(self, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self._loggers: dict[str, Logger] = {}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.stack_info:
                text += "\n" + record.stack_info
            failure = None
            if record.exc_info and record.exc_info[1] is not None:
                failure = Failure(record.exc_info[1], record.exc_info[0], record.exc_info[2])
            log = self._loggers.get(record.name)
            if log is None:
                log = self._loggers[record.name] = Logger(record.name)
            if failure is None:
                log.emit(_twisted_level(record.levelno), "{log_text}", log_text=text)
            else:
                log.emit(
                    _twisted_level(record.levelno),
                    "{log_text}",
                    log_text=text,
                    log_failure=failure,
                )
        except Exception:
            self.handleError(record)


def install_django_logging(debug: bool, logger_name: str = "django") -> DjangoLogHandler:
    """
    Send the ``django`` logger's records to the twisted.logger observers:
    INFO and up with ``debug`` (what Django's console handler shows), else
    ERROR and up (500s, security errors).  Django's default ``console``
    handler is taken off that logger, so no line is printed twice; other
    handlers (``mail_admins``, the project's own) stay.  Idempotent.
    Main thread, after ``django.setup()``.
    """
    target = logging.getLogger(logger_name)
    for handler in list(target.handlers):
        if isinstance(handler, DjangoLogHandler):
            return handler
        if (
            handler.get_name() == "console"
            and type(handler) is logging.StreamHandler
            and getattr(handler, "stream", None) in (sys.stderr, sys.__stderr__, sys.stdout)
        ):
            target.removeHandler(handler)
    bridge = DjangoLogHandler(logging.INFO if debug else logging.ERROR)
    target.addHandler(bridge)
    return bridge


#: The stream handler :func:`setup_logger` attaches (Channels 1.x's ``handler``).
handler = logging.StreamHandler()


def setup_logger(name: str, verbosity: int = 1) -> logging.Logger:
    """
    Channels 1.x's console logger for a management command: the stdlib
    logger ``name`` at INFO (DEBUG with ``verbosity`` above 1), printing
    through :data:`handler` to stderr as ``time - LEVEL - module - message``
    and not propagating (so a line is never printed twice).  chanserv's own
    commands log through twisted.logger instead; this is for 1.x code that
    calls it.  Idempotent.  Main thread.
    """
    handler.setFormatter(
        logging.Formatter(fmt="%(asctime)s - %(levelname)s - %(module)s - %(message)s")
    )
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG if verbosity > 1 else logging.INFO)
    if handler not in logger.handlers:
        logger.addHandler(handler)
    logger.propagate = False
    return logger


# -- JSON lines ---------------------------------------------------------------------------------

#: Keys of legacy (twisted.python.log) events that are not fields.
_LEGACY_KEYS = frozenset({"message", "system", "isError", "time", "format", "why", "failure"})
_SCALARS = (str, int, float, bool, type(None))


def json_line(event: _logger.LogEvent) -> str:
    """
    ``event`` as one JSON object (no newline): ``time`` (ISO 8601, UTC),
    ``level``, ``namespace``, ``message`` (the event formatted), then
    ``traceback`` if it carries a failure and its other scalar fields
    (an access line's ``client``, ``request``, ``status``, ``size``).
    """
    level = event.get("log_level")
    when = event.get("log_time")
    record: dict[str, Any] = {
        "time": (
            datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="milliseconds")
            if isinstance(when, (int, float))
            else None
        ),
        "level": level.name if level is not None and level in _ORDER else "info",
        "namespace": event.get("log_namespace") or "-",
        "message": _logger.formatEvent(event),
    }
    failure = event.get("log_failure")
    if isinstance(failure, Failure):
        try:
            record["traceback"] = failure.getTraceback()
        except Exception:
            record["traceback"] = repr(failure)
    for key, value in event.items():
        if (
            isinstance(value, _SCALARS)
            and not key.startswith("log_")
            and key not in _LEGACY_KEYS
            and key not in record
        ):
            record[key] = value
    return json.dumps(record)


def json_file_observer(stream: IO[Any]) -> _logger.FileLogObserver:
    """An observer writing every event to ``stream`` as one JSON object per line."""
    return _logger.FileLogObserver(stream, lambda event: json_line(event) + "\n")


_twistd_target: dict[str, Any] = {"logfile": None, "nodaemon": True}


def set_twistd_json_target(logfile: str | None, nodaemon: bool) -> None:
    """Where :func:`twistd_json_observer` writes: twistd's ``--logfile`` and ``-n``."""
    _twistd_target.update(logfile=logfile, nodaemon=nodaemon)


def twistd_json_observer() -> _logger.FileLogObserver:
    """
    The log observer factory ``twistd chanserv --log-format=json`` hands to
    twistd (its ``--logger``): JSON lines where twistd would write text --
    stdout with ``-n`` and no ``--logfile`` or ``--logfile=-``, else the
    file (``twistd.log`` by default; rotated on SIGUSR1 like twistd's).
    """
    from twisted.python import logfile as _logfile

    name, nodaemon = _twistd_target["logfile"], _twistd_target["nodaemon"]
    stream: IO[Any]
    if name == "-" or (nodaemon and not name):
        if not nodaemon:
            sys.exit("Daemons cannot log to stdout, exiting!")
        stream = sys.stdout
    else:
        rotating = _logfile.LogFile.fromFullPath(name or "twistd.log")
        stream = rotating
        if not signal.getsignal(signal.SIGUSR1):

            def rotate(signum: int, frame: Any) -> None:
                from twisted.internet import reactor

                reactor.callFromThread(rotating.rotate)  # type: ignore[attr-defined]

            signal.signal(signal.SIGUSR1, rotate)
    return json_file_observer(stream)
