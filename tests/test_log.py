"""
chanserv.log: the verbosity filter, the bridge that sends the ``django``
logger's records through twisted.logger once (no duplicate from Django's
console handler), and JSON lines that parse.
"""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure

from chanserv import log


@pytest.fixture
def django_logger() -> Iterator[logging.Logger]:
    """A stand-in for the ``django`` logger as Django's default LOGGING leaves it."""
    logger = logging.getLogger("chanserv_test_django")
    console = logging.StreamHandler()
    console.set_name("console")
    mail = logging.NullHandler()
    mail.set_name("mail_admins")
    logger.handlers[:] = [console, mail]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger
    logger.handlers[:] = []


def test_bridge_replaces_django_console_handler(django_logger: logging.Logger) -> None:
    """Installing the bridge takes Django's console handler off, keeps others, once only."""
    bridge = log.install_django_logging(True, django_logger.name)
    again = log.install_django_logging(True, django_logger.name)
    assert again is bridge
    names = [h.get_name() for h in django_logger.handlers]
    assert "console" not in names and "mail_admins" in names
    assert [h for h in django_logger.handlers if isinstance(h, log.DjangoLogHandler)] == [bridge]


def test_django_records_become_one_twisted_event_each(django_logger: logging.Logger) -> None:
    """A django.request record arrives once, in its namespace, level mapped, message formatted."""
    log.install_django_logging(True, django_logger.name)
    child = logging.getLogger(django_logger.name + ".request")
    with capturedLogs() as events:
        child.warning("Not Found: %s", "/nope/")
        child.info("an info line")
    assert [(e["log_namespace"], e["log_level"], formatEvent(e)) for e in events] == [
        (child.name, LogLevel.warn, "Not Found: /nope/"),
        (child.name, LogLevel.info, "an info line"),
    ]


def test_django_errors_carry_their_traceback(django_logger: logging.Logger) -> None:
    """A record with exc_info becomes an event with log_failure (the observer prints it)."""
    log.install_django_logging(False, django_logger.name)
    with capturedLogs() as events:
        try:
            raise ZeroDivisionError("boom")
        except ZeroDivisionError:
            django_logger.error("Internal Server Error: %s", "/boom/", exc_info=True)
        django_logger.warning("dropped without DEBUG")
    [event] = events
    assert formatEvent(event) == "Internal Server Error: /boom/"
    assert event["log_level"] == LogLevel.error
    assert isinstance(event["log_failure"], Failure)
    assert event["log_failure"].check(ZeroDivisionError)


def test_django_records_follow_the_verbosity(django_logger: logging.Logger) -> None:
    """At verbosity 0 Django's info and warning records are dropped, errors kept."""
    log.install_django_logging(True, django_logger.name)
    log.set_verbosity(0)
    try:
        with capturedLogs() as events:
            django_logger.info("quiet")
            django_logger.error("loud")
    finally:
        log.set_verbosity(1)
    assert [formatEvent(e) for e in events] == ["loud"]


def test_is_enabled_follows_the_verbosity() -> None:
    """is_enabled says whether chanserv's filter lets an event of a level through."""
    assert log.is_enabled("chanserv.access", LogLevel.info)
    log.set_verbosity(0)
    try:
        assert not log.is_enabled("chanserv.access", LogLevel.info)
        assert log.is_enabled("chanserv.access", LogLevel.warn)
    finally:
        log.set_verbosity(1)


def test_json_lines_parse() -> None:
    """Each event is one line of JSON with time, level, namespace, message and its fields."""
    stream = io.StringIO()
    observer = log.json_file_observer(stream)
    logger = log.Logger("chanserv.test", observer=observer)
    logger.info("ready: {what} on {port}", what='"quoted"\nname', port=8000)
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
        logger.failure("it broke")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["level"] == "info" and first["namespace"] == "chanserv.test"
    assert first["message"] == 'ready: "quoted"\nname on 8000'
    assert (first["what"], first["port"]) == ('"quoted"\nname', 8000)
    assert first["time"].endswith("+00:00")
    assert second["level"] == "critical" and "ZeroDivisionError" in second["traceback"]


def test_twistd_json_observer_writes_to_stdout_with_nodaemon(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """twistd -n without --logfile (or with -l -): the JSON observer writes to stdout."""
    log.set_twistd_json_target("-", True)
    observer = log.twistd_json_observer()
    log.Logger("chanserv.test", observer=observer).warn("hello")
    assert json.loads(capsys.readouterr().out)["message"] == "hello"


def test_setup_logger_is_1x_console_logger(capfd: pytest.CaptureFixture[str]) -> None:
    """``setup_logger`` prints the named logger's records once, INFO by default and DEBUG above verbosity 1."""
    from chanserv.log import handler, setup_logger

    name = "tests.setup_logger"
    logger = setup_logger(name)
    handler.setStream(sys.stderr)
    assert setup_logger(name) is logger and logger.handlers.count(handler) == 1
    assert logger.level == logging.INFO and logger.propagate is False
    logger.debug("hidden")
    logger.info("shown %d", 1)
    err = capfd.readouterr().err
    assert "INFO - test_log - shown 1" in err and "hidden" not in err
    assert setup_logger(name, verbosity=2).level == logging.DEBUG
    logger.removeHandler(handler)
