"""
End-to-end tests of the runtime: a real ``twistd -n chanserv`` process,
real sockets, a real SQLite database file.
"""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.harness import TwistdProcess, free_port

PROJECT = Path(__file__).parent / "project"


def get(port: int, path: str, timeout: float = 10) -> tuple[int, bytes]:
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=timeout) as r:
        return r.status, r.read()


@pytest.fixture
def db(tmp_path: Path) -> dict[str, str]:
    return {"E2E_DB": str(tmp_path / "db.sqlite3")}


def test_starts_logs_ready_and_exits_zero_on_sigterm(db: dict[str, str]) -> None:
    """twistd chanserv logs ready, serves, and exits 0 within 10 s of SIGTERM, no traceback."""
    port = free_port()
    with TwistdProcess(PROJECT, "e2eproj.settings", port=port, env=db) as proc:
        assert "chanserv ready: mode=all" in proc.output()
        assert get(port, "/hello/") == (200, b"Hello world")
        started = time.monotonic()
        assert proc.stop() == 0
        assert time.monotonic() - started < 10
    assert "chanserv stopped" in proc.output()
    assert "Traceback" not in proc.output()


def test_default_routes_without_channel_layers(db: dict[str, str]) -> None:
    """Without CHANNEL_LAYERS the server uses the in-memory layer and serves Django views."""
    port = free_port()
    env = dict(db, E2E_LAYER="none")
    with TwistdProcess(PROJECT, "e2eproj.settings", port=port, env=env) as proc:
        assert "InMemoryChannelLayer" in proc.output()
        assert get(port, "/hello/") == (200, b"Hello world")
        assert proc.stop() == 0


@pytest.mark.parametrize("mode", ["worker", "interface"])
def test_split_modes_refuse_the_in_process_layer(mode: str, db: dict[str, str]) -> None:
    """--mode=worker or interface with an in-process layer exits non-zero, saying why."""
    proc = TwistdProcess(PROJECT, "e2eproj.settings", args=["--mode=" + mode], env=db)
    assert proc.run_to_exit() != 0
    out = proc.output()
    assert "--mode=%s needs a channel layer that crosses processes" % mode in out
    assert "Traceback" not in out


def test_missing_settings_is_a_clear_error(db: dict[str, str]) -> None:
    """An unimportable settings module exits non-zero with a one-line error, no traceback."""
    proc = TwistdProcess(PROJECT, "nosuch.settings", env=db)
    assert proc.run_to_exit() != 0
    assert "Cannot import the settings module 'nosuch.settings'" in proc.output()
    assert "Traceback" not in proc.output()


def test_bad_backend_names_the_setting(db: dict[str, str]) -> None:
    """An unknown layer BACKEND exits non-zero naming the setting and the bad path."""
    proc = TwistdProcess(PROJECT, "e2eproj.settings", env=dict(db, E2E_LAYER="broken"))
    assert proc.run_to_exit() != 0
    out = proc.output()
    assert "CHANNEL_LAYERS['default']['BACKEND']" in out
    assert "no.such.Layer" in out
    assert "Traceback" not in out


def test_consumer_in_flight_finishes_before_exit(db: dict[str, str], tmp_path: Path) -> None:
    """On SIGTERM a consumer already running finishes its work before the process exits 0."""
    port = free_port()
    marker = tmp_path / "marker.txt"
    with TwistdProcess(PROJECT, "e2eproj.settings", port=port, env=db) as proc:
        status, body = get(port, "/marker/?path=%s&delay=1.5&text=finished" % marker)
        assert (status, body) == (200, b"queued")
        time.sleep(0.3)  # let the worker pick the message up
        assert not marker.exists()
        assert proc.stop() == 0
    assert marker.read_text() == "finished"
