"""
The example test module that docs/testing.rst shows
(``examples/chat/chatapp/tests.py``, on ``chanserv.test``) passes under
``python manage.py test chatapp`` as a user runs it, in a subprocess with
Django's own test runner; and it catches a broken consumer.  Main thread.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.e2e.harness import REPO

CHAT = REPO / "examples" / "chat"


def manage_test(project: Path, db: Path) -> tuple[int, str]:
    """Run ``manage.py test chatapp -v 2`` in ``project``; the exit code and the output."""
    env = dict(os.environ, CHANSERV_EXAMPLE_DB=str(db), PYTHONPATH=str(REPO))
    env.pop("DJANGO_SETTINGS_MODULE", None)  # manage.py must pick its own
    result = subprocess.run(
        [sys.executable, "manage.py", "test", "chatapp", "-v", "2", "--no-input"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        timeout=120,
    )
    return result.returncode, result.stdout


def test_the_chat_examples_tests_pass_under_manage_py_test(tmp_path: Path) -> None:
    """`manage.py test chatapp` in examples/chat runs the four documented tests, all passing."""
    code, out = manage_test(CHAT, tmp_path / "chat.sqlite3")
    assert code == 0, out
    assert "Ran 4 tests" in out and "\nOK" in out, out
    assert "test_a_message_reaches_every_member" in out, out


def test_the_chat_examples_tests_catch_a_broken_consumer(tmp_path: Path) -> None:
    """The same tests fail on a copy of the example whose ws_message drops the [user] prefix."""
    project = tmp_path / "chat"
    shutil.copytree(CHAT, project, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3"))
    consumers = project / "chatapp" / "consumers.py"
    source = consumers.read_text()
    assert '"[user] %s"' in source
    consumers.write_text(source.replace('"[user] %s"', '"%s"'))
    code, out = manage_test(project, tmp_path / "chat.sqlite3")
    assert code != 0, out
    assert "FAILED (failures=" in out and "'[user] hi'" in out, out
