"""
chanserv.test.ChannelLiveServerTestCase: a project's own suite
(tests/test/liveproject) run by a real ``manage.py test`` against a file
SQLite database, and the refusal of an in-memory one here.  Tests run in
the main thread; the live server's consumers in pool threads.
"""

from __future__ import annotations

import os
import subprocess
import sys
import unittest
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from chanserv.test import ChannelLiveServerTestCase

REPO = Path(__file__).resolve().parents[2]
PROJECT = Path(__file__).parent / "liveproject"


def test_projects_live_server_tests_pass(tmp_path: Path) -> None:
    """manage.py test runs live-server tests: views, static files, WebSockets, DB rows, groups."""
    env = dict(os.environ, PYTHONPATH=str(REPO), LIVE_TEST_DB=str(tmp_path / "live.sqlite3"))
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "test", "liveapp", "-v", "2", "--noinput"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "Ran 4 tests" in out, out
    for name in (
        "test_http_view_and_static_file",
        "test_websocket_consumer_sees_the_tests_data",
        "test_group_send_from_the_test_reaches_the_socket",
        "test_a_second_class_gets_a_server_of_its_own",
    ):
        assert "%s (liveapp.tests." % (name,) in out, out
    assert out.count(" ... ok\n") == 4, out
    assert "Traceback" not in out, out


def test_in_memory_database_is_refused() -> None:
    """With SQLite in memory (these tests' settings), setUpClass raises ImproperlyConfigured."""

    class Live(ChannelLiveServerTestCase):
        def test_never_runs(self) -> None:
            """Never runs: the class cannot start."""
            raise AssertionError("ran")

    result = unittest.TestResult()
    unittest.defaultTestLoader.loadTestsFromTestCase(Live).run(result)
    assert result.testsRun == 0
    assert len(result.errors) == 1
    trace = result.errors[0][1]
    assert ImproperlyConfigured.__name__ in trace
    assert "can not be used with in memory databases (default)" in trace
    assert Live._live_server is None
