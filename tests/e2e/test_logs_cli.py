"""
Logs a person can read and errors in one line, from real ``twistd -n
chanserv`` and ``manage.py`` processes: a ``Listening on URL`` line per
endpoint, the access log on by default (one line per request and per
WebSocket event, one timestamp), Django's log lines through the same
observer, ``--log-format=json``, and one-line start-up errors with exit
code 1 and "did you mean" suggestions.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.e2e.harness import REPO, TwistdProcess, free_port

PROJECT = Path(__file__).parent / "project"

#: twistd's text log line: an RFC 3339 time, [namespace#level], the text.
TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}"


def get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as r:
            r.read()
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within %ss" % timeout)
        time.sleep(0.05)


def access_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if "[chanserv.access#info]" in line]


@pytest.fixture
def db(tmp_path: Path) -> dict[str, str]:
    return {"E2E_DB": str(tmp_path / "db.sqlite3")}


# -- start-up lines ---------------------------------------------------------------------


def test_one_listening_line_per_endpoint_tcp_and_unix(db: dict[str, str], tmp_path: Path) -> None:
    """Each endpoint logs "Listening on" its URL once, TCP as http://, UNIX as unix:/path."""
    port = free_port()
    sock = tmp_path / "chanserv.sock"
    args = ["-u", str(sock)]
    with TwistdProcess(PROJECT, "e2eproj.settings", args=args, port=port, env=db) as proc:
        out = proc.output()
        tcp_line = "Listening on http://127.0.0.1:%d/" % port
        unix_line = "Listening on unix:%s" % sock
        assert out.count(tcp_line) == 1 and out.count(unix_line) == 1, out
        assert re.search(
            r"^%s \[chanserv\.server\.listener#info\] %s$" % (TIMESTAMP, re.escape(tcp_line)),
            out,
            re.M,
        )
        assert out.index(tcp_line) < out.index("chanserv ready")
        assert proc.stop() == 0


def test_tls_endpoint_logs_an_https_url(db: dict[str, str], tmp_path: Path) -> None:
    """A TLS endpoint logs "Listening on https://127.0.0.1:PORT/"."""
    from tests.e2e.test_tls import self_signed

    key, cert = self_signed(tmp_path)
    port = free_port()
    endpoint = "ssl:port=%d:interface=127.0.0.1:privateKey=%s:certKey=%s" % (port, key, cert)
    with TwistdProcess(PROJECT, "e2eproj.settings", args=["-e", endpoint], env=db) as proc:
        assert proc.output().count("Listening on https://127.0.0.1:%d/" % port) == 1
        assert proc.stop() == 0


# -- the access log ---------------------------------------------------------------------


def test_access_log_is_on_by_default_one_line_per_request_and_websocket_event(
    db: dict[str, str],
) -> None:
    """By default each request and WebSocket connect/disconnect is one line, one timestamp."""
    port = free_port()
    with TwistdProcess(PROJECT, "e2eproj.settings", port=port, env=db) as proc:
        assert get(port, "/hello/") == 200
        with connect("ws://127.0.0.1:%d/echo/" % port, open_timeout=10) as ws:
            ws.send("ping")
            assert ws.recv(10).startswith("ping")  # the echo adds its pid
        wait_for(lambda: "WSDISCONNECT" in proc.output())
        lines = access_lines(proc.output())
        assert proc.stop() == 0
    prefix = r"^%s \[chanserv\.access#info\] 127\.0\.0\.1 " % TIMESTAMP
    hello = [line for line in lines if '"GET /hello/ ' in line]
    assert len(hello) == 1, lines
    assert re.match(prefix + r'"GET /hello/ HTTP/1\.1" 200 11$', hello[0]), hello
    for word in ("WSCONNECTING", "WSCONNECT", "WSDISCONNECT"):
        matching = [line for line in lines if '"%s /echo/"' % word in line]
        assert len(matching) == 1, lines
        assert re.match(prefix + '"%s /echo/" - -$' % word, matching[0]), matching
    out = proc.output()
    assert "[stdout#info]" not in out
    assert " - - [" not in out  # no second (NCSA) timestamp


def test_access_log_can_be_turned_off_and_verbosity_0_is_quiet(db: dict[str, str]) -> None:
    """--no-access-log writes no access line; -v 0 writes neither access nor listening lines."""
    for args, listening in ((["--no-access-log"], True), (["-v", "0"], False)):
        port = free_port()
        with TwistdProcess(
            PROJECT, "e2eproj.settings", args=args, port=port, env=db, ready_text="reactor class"
        ) as proc:
            wait_for(lambda: proc._port_open())
            assert get(port, "/hello/") == 200
            time.sleep(0.3)
            out = proc.output()
            assert proc.stop() == 0
        assert access_lines(out) == [], out
        assert ("Listening on" in out) is listening, out


def test_access_log_to_a_file_keeps_the_ncsa_format(db: dict[str, str], tmp_path: Path) -> None:
    """--access-log=PATH writes NCSA common-log lines there, not into the process log."""
    port = free_port()
    path = tmp_path / "access.log"
    args = ["--access-log", str(path)]
    with TwistdProcess(PROJECT, "e2eproj.settings", args=args, port=port, env=db) as proc:
        assert get(port, "/hello/") == 200
        assert proc.stop() == 0
    [line] = path.read_text().splitlines()
    assert re.match(r'^127\.0\.0\.1 - - \[[^]]+ \+0000\] "GET /hello/ HTTP/1\.1" 200 11$', line)
    assert access_lines(proc.output()) == []


# -- Django's log and JSON --------------------------------------------------------------


def test_django_errors_come_through_the_same_observer_once(db: dict[str, str]) -> None:
    """A view's exception: Django's "Internal Server Error" line once, in chanserv's format."""
    port = free_port()
    with TwistdProcess(PROJECT, "e2eproj.settings", port=port, env=db) as proc:
        assert get(port, "/boom/") == 500
        wait_for(lambda: "ZeroDivisionError" in proc.output())
        out = proc.output()
        assert proc.stop() == 0
    assert out.count("Internal Server Error: /boom/") == 1, out
    assert re.search(
        r"^%s \[django\.request#error\] Internal Server Error: /boom/$" % TIMESTAMP, out, re.M
    ), out
    assert "[stderr#error]" not in out


def test_json_log_lines_parse(db: dict[str, str]) -> None:
    """--log-format=json: every line is one JSON object; access and Django lines have fields."""
    port = free_port()
    args = ["--log-format=json"]
    with TwistdProcess(PROJECT, "e2eproj.settings", args=args, port=port, env=db) as proc:
        assert get(port, "/hello/") == 200
        assert get(port, "/boom/") == 500
        wait_for(lambda: "ZeroDivisionError" in proc.output())
        assert proc.stop() == 0
    records = [json.loads(line) for line in proc.output().splitlines() if line.strip()]
    assert all({"time", "level", "namespace", "message"} <= set(r) for r in records)
    [access] = [r for r in records if r.get("request") == "GET /hello/ HTTP/1.1"]
    assert (access["namespace"], access["status"], access["size"]) == ("chanserv.access", 200, 11)
    assert access["message"] == '127.0.0.1 "GET /hello/ HTTP/1.1" 200 11'
    [error] = [r for r in records if r["namespace"] == "django.request"]
    assert error["level"] == "error" and "ZeroDivisionError" in error["traceback"]
    assert any(r["message"] == "Listening on http://127.0.0.1:%d/" % port for r in records)


# -- errors in one line -----------------------------------------------------------------


def one_line_error(proc: TwistdProcess) -> str:
    """Run ``proc`` to its exit: code 1, no traceback, no usage text; the error line."""
    code = proc.run_to_exit()
    out = proc.output()
    assert code == 1, out
    assert "Traceback" not in out and "Usage:" not in out and "--help  " not in out, out
    return out


@pytest.mark.parametrize(
    "settings, env, args, says",
    [
        ("nosuch.settings", {}, [], "Cannot import the settings module 'nosuch.settings'"),
        ("e2eproj.setings", {}, [], "did you mean 'e2eproj.settings'?"),
        (
            "e2eproj.settings",
            {"E2E_LAYER": "misspelt"},
            [],
            "'asgiref.inmemory.ChanelLayer' is not one of the Channels 1.x layers chanserv "
            "stands in for",
        ),
        (
            "e2eproj.settings",
            {"E2E_LAYER": "misspelt"},
            [],
            "did you mean 'asgiref.inmemory.ChannelLayer'?",
        ),
        (
            "e2eproj.settings",
            {"E2E_LAYER": "badrouting"},
            [],
            "did you mean 'e2eproj.routing.channel_routing'?",
        ),
        ("e2eproj.settings", {}, ["--mode=workers"], "did you mean 'worker'?"),
        ("e2eproj.settings", {}, ["--acess-log=-"], "did you mean '--access-log'?"),
    ],
    ids=[
        "missing-settings",
        "misspelt-settings",
        "misspelt-backend",
        "backend-suggestion",
        "misspelt-routing",
        "misspelt-mode",
        "misspelt-option",
    ],
)
def test_start_up_mistakes_are_one_line(
    settings: str, env: dict[str, str], args: list[str], says: str, db: dict[str, str]
) -> None:
    """A settings, CHANNEL_LAYERS or option mistake: one stderr line, exit 1, no usage dump."""
    proc = TwistdProcess(PROJECT, settings, args=args, env=dict(db, **env))
    out = one_line_error(proc)
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    assert lines[0].startswith("twistd chanserv: ") and says in lines[0], out


def test_port_in_use_is_one_line(db: dict[str, str]) -> None:
    """A port already in use: one log line naming its URL and what to change, exit 1."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = TwistdProcess(PROJECT, "e2eproj.settings", port=port, env=db)
        out = one_line_error(proc)
    [line] = [line for line in out.splitlines() if "Cannot listen" in line]
    assert re.match(
        r"^%s \[chanserv#critical\] Cannot listen on http://127\.0\.0\.1:%d/: "
        r"address already in use: .*choose another port$" % (TIMESTAMP, port),
        line,
    ), out


# -- the management commands ------------------------------------------------------------


def manage(*args: str, env: dict[str, str]) -> tuple[int, str]:
    full_env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", **env)
    full_env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    return result.returncode, result.stdout.decode(errors="replace")


@pytest.mark.parametrize(
    "args",
    [
        ["runserver", "--noreload"],
        ["runserver"],  # under the autoreloader: a secondary thread, then os._exit(1)
        ["runworker"],
    ],
    ids=["runserver-noreload", "runserver-autoreload", "runworker"],
)
def test_management_commands_report_a_misspelt_backend_in_one_line(
    args: list[str], db: dict[str, str]
) -> None:
    """runserver/runworker with a misspelt BACKEND: a one-line CommandError, exit 1."""
    if args[0] == "runserver":
        args = [*args, "127.0.0.1:%d" % free_port()]
    code, out = manage(*args, env=dict(db, E2E_LAYER="misspelt"))
    assert code == 1, out
    assert "Traceback" not in out, out
    [line] = [line for line in out.splitlines() if "did you mean" in line]
    assert line.startswith("CommandError: ") and "'asgiref.inmemory.ChannelLayer'?" in line


def test_runserver_port_in_use_is_one_line(db: dict[str, str]) -> None:
    """runserver on a port in use: "CommandError: Cannot listen on http://...", exit 1."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code, out = manage("runserver", "--noreload", "127.0.0.1:%d" % port, env=db)
    assert code == 1, out
    assert "Traceback" not in out, out
    assert (
        "CommandError: Cannot listen on http://127.0.0.1:%d/: address already in use" % (port)
        in out
    ), out
