"""
The delay server end to end: a real ``twistd chanserv`` (--mode=all, the
in-memory layer) with a real SQLite database sends a delayed message on
time and still sends it after a restart between its storing and its due
time; ``manage.py rundelay`` does the same against a real Redis.  The
project is tests/e2e/project with tests.delay.e2e_settings.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import REPO, TwistdProcess, free_port
from tests.e2e.redis_support import close_layer, sync_layer, wait_for
from tests.redisserver import RedisServer

PROJECT = Path(__file__).parent / "project"
SETTINGS = "tests.delay.e2e_settings"
TABLE = "chanserv_delay_delayedmessage"


def project_env(db: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, E2E_DB=str(db), PYTHONPATH=str(REPO), **extra)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A SQLite database migrated by ``manage.py migrate``, the delay table included."""
    path = tmp_path / "db.sqlite3"
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0", "--settings=" + SETTINGS],
        cwd=PROJECT,
        env=project_env(path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return path


def rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM %s" % TABLE).fetchone()[0])


def arrivals(log: Path) -> dict[str, dict[str, Any]]:
    if not log.exists():
        return {}
    return {m["tag"]: m for m in map(json.loads, log.read_text().splitlines())}


def twistd(db: Path, log: Path) -> TwistdProcess:
    """twistd chanserv on the project, not started: ``with`` starts it."""
    return TwistdProcess(
        PROJECT,
        SETTINGS,
        args=["--threads", "2"],
        port=free_port(),
        env={"E2E_DB": str(db), "E2E_DELAY_LOG": str(log), "E2E_LAYER": "memory"},
    )


def schedule(proc: TwistdProcess, ms: int, tag: str) -> None:
    url = "http://127.0.0.1:%d/delay/?ms=%d&tag=%s" % (proc.port, ms, tag)
    with urllib.request.urlopen(url, timeout=10) as reply:
        assert reply.read() == b"queued"


def stop(proc: TwistdProcess) -> None:
    code = proc.stop()
    assert code in (0, -signal.SIGTERM), proc.output()
    assert "Traceback" not in proc.output(), proc.output()


def test_twistd_sends_a_delayed_message_between_1_5_and_2_5_s_later(
    db: Path, tmp_path: Path
) -> None:
    """Under twistd chanserv --mode=all, a message delayed 1500 ms arrives 1.5 to 2.5 s later."""
    log = tmp_path / "arrived.jsonl"
    with twistd(db, log) as proc:
        assert "Delay server listening on asgi.delay" in proc.output()
        schedule(proc, 1500, "a")
        arrived = wait_for(lambda: arrivals(log).get("a"), what="the delayed message")
        stop(proc)
    assert 1.5 <= arrived["arrived"] - arrived["sent"] <= 2.5, arrived
    assert rows(db) == 0


def test_twistd_sends_a_delayed_message_after_a_restart(db: Path, tmp_path: Path) -> None:
    """Stored, then twistd restarted before its due time: the message still arrives, on time."""
    log = tmp_path / "arrived.jsonl"
    with twistd(db, log) as first:
        schedule(first, 6000, "r")
        wait_for(lambda: rows(db) == 1, what="the message in the database")
        stop(first)
    assert arrivals(log) == {}
    with twistd(db, log) as second:
        ready = time.time()
        arrived = wait_for(lambda: arrivals(log).get("r"), timeout=20, what="the message")
        stop(second)
    due = arrived["sent"] + 6.0
    assert arrived["arrived"] >= due - 0.01, arrived
    assert arrived["arrived"] <= max(due, ready) + 1.5, (arrived, ready)
    assert rows(db) == 0


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_rundelay_over_redis_skips_invalid_messages_and_sends_on_time(
    db: Path, redis: RedisServer
) -> None:
    """manage.py rundelay logs an invalid message, goes on, and sends a valid one 1.5 s later."""
    out = db.with_suffix(".log")
    with out.open("w") as output:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "rundelay", "--settings=" + SETTINGS],
            cwd=PROJECT,
            env=project_env(db, E2E_LAYER="redis", E2E_REDIS_URLS=redis.url, PYTHONUNBUFFERED="1"),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    layer = sync_layer(redis.url)
    try:
        wait_for(lambda: "delay server ready" in out.read_text(), what="rundelay ready")
        layer.send("asgi.delay", {"test": "value"})
        sent = time.time()
        layer.send("asgi.delay", {"channel": "delay.out", "content": {"n": 1}, "delay": 1500})
        got = wait_for(lambda: layer.receive(["delay.out"], block=True)[1], what="the message")
        elapsed = time.time() - sent
    finally:
        close_layer(layer)
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    log = out.read_text()
    assert got == {"n": 1}
    assert 1.5 <= elapsed <= 2.5, elapsed
    assert "Invalid message on asgi.delay ignored: it has no 'channel'" in log, log
    assert "Traceback" not in log, log
    assert rows(db) == 0
