"""
End-to-end tests of the opt-in ``channels`` alias: the tutorial's chat and
routing examples, copied with every ``chanserv`` import and app name turned
back into ``channels`` (as a Channels 1.x project has them), run unchanged by
a real ``twistd chanserv`` and by ``manage.py runserver``, in a fresh virtual
environment on which the one documented step (``python -m chanserv.alias
enable``) was run.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from websockets.sync.client import ClientConnection, connect

from tests.e2e.harness import REPO, TWISTD, TwistdProcess, free_port
from tests.support import default_signals

EXAMPLES = REPO / "examples"

#: Seconds any single network step may take before the test fails.
TIMEOUT = 10.0

_REWRITES = [
    (re.compile(r"^(\s*)from chanserv\b", re.M), r"\1from channels"),
    (re.compile(r"^(\s*)import chanserv\b", re.M), r"\1import channels"),
    (re.compile(r'^(\s*)"chanserv",$', re.M), r'\1"channels",'),
]


def as_channels_project(example: str, dest: Path) -> Path:
    """Copy ``examples/<example>`` to ``dest``, its Python code written for Channels 1.x."""
    shutil.copytree(
        EXAMPLES / example, dest, ignore=shutil.ignore_patterns("*.sqlite3", "__pycache__")
    )
    for path in dest.rglob("*.py"):
        text = path.read_text()
        for pattern, replacement in _REWRITES:
            text = pattern.sub(replacement, text)
        path.write_text(text)
        # Only prose (docstrings, comments) may still say chanserv.
        code = [line for line in text.splitlines() if re.match(r"\s*(from|import) ", line)]
        assert not [line for line in code if "chanserv" in line], path
    settings = (dest / example / "settings.py").read_text()
    assert '    "channels",\n' in settings and '"chanserv"' not in settings
    return dest


@pytest.fixture(scope="module")
def channels_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """
    A new virtual environment that sees the test environment's packages, on
    which ``python -m chanserv.alias enable`` was run; its python.
    """
    root = tmp_path_factory.mktemp("channels-env")
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120
    )
    python = root / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    # The packages of the environment running the tests (Django, Twisted...).
    Path(purelib, "_test_parent_env.pth").write_text(
        "import site; site.addsitedir(%r)\n" % (sysconfig.get_paths()["purelib"],)
    )
    result = run(python, ["-m", "chanserv.alias", "enable"], cwd=root)
    assert result.returncode == 0, result.stderr
    assert Path(purelib, "chanserv-channels-alias.pth").exists()
    return python


def environ(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", **extra)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


def run(
    python: Path, args: Sequence[str], cwd: Path, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), *args],
        cwd=cwd,
        env=environ(**extra),
        capture_output=True,
        text=True,
        timeout=120,
    )


def migrated(python: Path, project: Path) -> Path:
    """``manage.py migrate`` through the alias, into a new SQLite file."""
    db = project / "db.sqlite3"
    result = run(
        python,
        ["manage.py", "migrate", "-v", "0", "--no-input"],
        project,
        CHANSERV_EXAMPLE_DB=str(db),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return db


def twistd(python: Path, project: Path, settings: str, db: Path) -> TwistdProcess:
    """A real ``twistd -n chanserv`` script, run by the aliased environment's python."""
    proc = TwistdProcess(project, settings, port=free_port(), env={"CHANSERV_EXAMPLE_DB": str(db)})
    proc.cmd = [str(python), TWISTD, *proc.cmd[1:]]
    return proc


def ws(port: int, path: str) -> ClientConnection:
    return connect("ws://127.0.0.1:%d%s" % (port, path), open_timeout=TIMEOUT)


def chat_round(port: int, path: str, prefix: str) -> None:
    """Two sockets in one room: each message reaches both."""
    with ws(port, path) as alice, ws(port, path) as bob:
        alice.send("hi from alice")
        assert alice.recv(timeout=TIMEOUT) == prefix + "hi from alice"
        assert bob.recv(timeout=TIMEOUT) == prefix + "hi from alice"
        bob.send("hi from bob")
        assert alice.recv(timeout=TIMEOUT) == prefix + "hi from bob"
        assert bob.recv(timeout=TIMEOUT) == prefix + "hi from bob"


def stopped_cleanly(proc: TwistdProcess) -> str:
    code = proc.stop()
    out = proc.output()
    assert code in (0, -signal.SIGTERM), out
    assert "Traceback" not in out, out
    return out


def test_chat_example_as_channels_project_under_twistd(channels_env: Path, tmp_path: Path) -> None:
    """The tutorial's Groups chat, importing channels, runs on twistd chanserv through the alias."""
    project = as_channels_project("chat", tmp_path / "chat")
    db = migrated(channels_env, project)
    with twistd(channels_env, project, "chat.settings", db) as proc:
        assert proc.port is not None
        conn = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=TIMEOUT)
        conn.request("GET", "/")
        page = conn.getresponse()
        assert page.status == 200
        assert b"new WebSocket(" in page.read()
        conn.close()
        chat_round(proc.port, "/chat/", "[user] ")
        stopped_cleanly(proc)


def test_routing_example_as_channels_project_under_twistd(
    channels_env: Path, tmp_path: Path
) -> None:
    """The tutorial's routing example (include, sessions, auth, AsgiRequest) runs through the alias."""
    project = as_channels_project("routing", tmp_path / "routing")
    db = migrated(channels_env, project)
    with twistd(channels_env, project, "routing.settings", db) as proc:
        assert proc.port is not None
        chat_round(proc.port, "/chat/lobby/", "")
        with ws(proc.port, "/chat/lobby/") as listener:
            conn = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=TIMEOUT)
            body = urllib.parse.urlencode({"room": "lobby", "text": "polled"})
            conn.request(
                "POST",
                "/poll/",
                body=body,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            response = conn.getresponse()
            assert (response.status, response.read()) == (
                200,
                b'{"room": "lobby", "sent": "polled"}',
            )
            conn.close()
            assert listener.recv(timeout=TIMEOUT) == "polled"
        stopped_cleanly(proc)


@pytest.fixture
def runserver(channels_env: Path, tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """The chat example, importing channels, under ``manage.py runserver --noreload``."""
    project = as_channels_project("chat", tmp_path / "chat")
    db = migrated(channels_env, project)
    port = free_port()
    proc = subprocess.Popen(
        [str(channels_env), "manage.py", "runserver", "--noreload", "127.0.0.1:%d" % port],
        cwd=project,
        env=environ(CHANSERV_EXAMPLE_DB=str(db)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=default_signals,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
                conn.request("GET", "/")
                assert conn.getresponse().status == 200
                conn.close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield port, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def test_chat_example_as_channels_project_under_runserver(
    runserver: tuple[int, subprocess.Popen[str]],
) -> None:
    """manage.py runserver, found through INSTALLED_APPS = ["channels"], serves the chat."""
    port, proc = runserver
    chat_round(port, "/chat/", "[user] ")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(15) == 0
    out = proc.stdout.read() if proc.stdout else ""
    assert "Starting chanserv development server" in out
    assert "Traceback" not in out


def test_runworker_is_found_through_the_alias(channels_env: Path, tmp_path: Path) -> None:
    """manage.py runworker of a channels project is chanserv's (it refuses the in-process layer)."""
    project = as_channels_project("chat", tmp_path / "chat")
    result = run(
        channels_env, ["manage.py", "runworker"], project, CHANSERV_EXAMPLE_DB=str(tmp_path / "db")
    )
    assert result.returncode != 0
    assert "runworker needs a channel layer that crosses processes" in result.stdout + result.stderr


def test_same_project_fails_without_the_step(tmp_path: Path) -> None:
    """The rewritten project in the test environment itself (no alias step): channels is not found."""
    project = as_channels_project("chat", tmp_path / "chat")
    result = run(
        Path(sys.executable),
        ["manage.py", "check"],
        project,
        CHANSERV_EXAMPLE_DB=str(tmp_path / "db"),
    )
    assert result.returncode != 0
    assert "No module named 'channels'" in result.stderr


def test_example_test_suite_runs_on_channels_test(channels_env: Path, tmp_path: Path) -> None:
    """The chat example's own tests, importing channels.test, pass under manage.py test."""
    project = as_channels_project("chat", tmp_path / "chat")
    tests = (project / "chatapp" / "tests.py").read_text()
    assert "from channels.test import ChannelTestCase, Client, WSClient, apply_routes" in tests
    result = run(
        channels_env,
        ["manage.py", "test", "chatapp", "-v", "2", "--noinput"],
        project,
        CHANSERV_EXAMPLE_DB=str(tmp_path / "db.sqlite3"),
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert re.search(r"^Ran [1-9]\d* tests? in ", out, re.M), out
    assert "FAILED" not in out and "\nOK\n" in out + "\n", out


#: The other tutorial examples: (folder, settings module).
TUTORIAL_EXAMPLES = [
    ("hello", "hello.settings"),
    ("echo", "echo.settings"),
    ("persisting_data", "persisting_data.settings"),
    ("authentication", "authentication.settings"),
    ("security", "security.settings"),
    ("models", "models.settings"),
    ("ordering", "ordering.settings"),
    ("chatroom", "chatroom.settings"),
]


@pytest.mark.parametrize(
    ("example", "settings"), TUTORIAL_EXAMPLES, ids=[e for e, _ in TUTORIAL_EXAMPLES]
)
def test_every_tutorial_example_starts_and_serves_through_the_alias(
    channels_env: Path, tmp_path: Path, example: str, settings: str
) -> None:
    """Each tutorial example, importing channels, migrates, loads its routing and consumers, serves HTTP."""
    project = as_channels_project(example, tmp_path / example)
    db = migrated(channels_env, project)
    with twistd(channels_env, project, settings, db) as proc:
        assert proc.port is not None
        conn = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=TIMEOUT)
        conn.request("GET", "/")
        response = conn.getresponse()
        response.read()
        conn.close()
        assert response.status < 500
        out = stopped_cleanly(proc)
    assert "Listening on http://127.0.0.1:%d/" % proc.port in out
