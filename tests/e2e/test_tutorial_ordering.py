"""
End-to-end: ``enforce_ordering`` under real ``twistd -n chanserv --threads 8``
processes, each with its own SQLite database (the channel sessions).

- examples/ordering, the tutorial's "Enforcing Ordering" counter: each
  socket's count goes up by one per message, in sending order;
- the issue's concurrency requirement, on the e2e project's ``/ordered/``
  route (tests/e2e/project/e2eproj/ordered.py): one socket sends 1,000
  numbered messages; the consumer records each one, and the records are in
  order, none missing, no two consumers of the socket ever overlapping,
  although several worker threads ran them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import REPO, TwistdProcess, free_port
from tests.e2e.tutorial_support import (
    Browser,
    drain,
    migrate,
    recv,
    start,
    stop_cleanly,
    ws,
)

EXAMPLE = "ordering"
E2E_PROJECT = Path(__file__).parent / "project"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwistdProcess]:
    db = tmp_path_factory.mktemp(EXAMPLE) / "db.sqlite3"
    migrate(EXAMPLE, db)
    proc = start(EXAMPLE, db, args=["--threads", "8"])
    try:
        yield proc
        stop_cleanly(proc)
    finally:
        proc.__exit__()


def test_page_is_served_by_a_django_view(server: TwistdProcess) -> None:
    """The ordering example's page is a Django view with a WebSocket and a burst button."""
    status, _, page = Browser(server.port).open("/")
    assert status == 200
    assert "new WebSocket(" in page and 'id="burst"' in page


def test_the_counter_goes_up_in_sending_order(server: TwistdProcess) -> None:
    """The ordering example numbers one socket's 300 messages 1, 2, 3... in sending order."""
    with ws(server.port, "/chat/") as socket_:
        texts = ["message %d" % i for i in range(300)]
        for text in texts:
            socket_.send(text)
        received = [recv(socket_) for _ in texts]
    assert received == ["%d: %s" % (n, text) for n, text in enumerate(texts, 1)]


def test_each_socket_counts_its_own_messages(server: TwistdProcess) -> None:
    """Each socket's counter counts only its own messages, in its sending order."""
    with ws(server.port, "/") as a, ws(server.port, "/") as b:
        for i in range(50):
            a.send("a%d" % i)
            b.send("b%d" % i)
        # Both are in Group("chat"): each sees all 100 messages.
        seen_by_a = [recv(a) for _ in range(100)]
        seen_by_b = [recv(b) for _ in range(100)]
        assert drain(a) == drain(b) == []
    for seen in (seen_by_a, seen_by_b):
        assert sorted(seen) == sorted(
            ["%d: a%d" % (i + 1, i) for i in range(50)]
            + ["%d: b%d" % (i + 1, i) for i in range(50)]
        )
        # Each socket's messages arrive in its own sending order.
        for prefix in ("a", "b"):
            mine = [m for m in seen if m.split(": ")[1].startswith(prefix)]
            assert mine == ["%d: %s%d" % (i + 1, prefix, i) for i in range(50)]


# -- the concurrency requirement: 1,000 messages, --threads 8 -------------------


def test_one_socket_1000_messages_8_threads_recorded_in_order(tmp_path: Path) -> None:
    """enforce_ordering alone keeps 1,000 messages of one socket serial and in order.

    Several of 8 threads run them; each sees the session count of all before it.
    """
    db = tmp_path / "db.sqlite3"
    markers = tmp_path / "markers"
    markers.mkdir()
    env = {"E2E_DB": str(db), "E2E_MARKER_DIR": str(markers), "E2E_CAPACITY": "100"}
    manage_env = dict(os.environ, PYTHONPATH=str(REPO), **env)
    manage_env.pop("DJANGO_SETTINGS_MODULE", None)  # manage.py must pick its own
    migrated = subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0", "--no-input"],
        cwd=E2E_PROJECT,
        env=manage_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrated.returncode == 0, migrated.stderr
    port = free_port()
    # --no-ordering: by default the worker itself runs one socket's messages
    # one at a time, each on the thread that finished the one before; here
    # enforce_ordering alone must keep the order across threads.
    args = ["--threads", "8", "--no-ordering"]
    with TwistdProcess(E2E_PROJECT, "e2eproj.settings", args=args, port=port, env=env) as proc:
        with ws(port, "/ordered/") as socket_:
            for n in range(1000):
                socket_.send(str(n))
            socket_.send("done")
            assert socket_.recv(timeout=120) == "done"
        stop_cleanly(proc)

    lines = (markers / "ordered.txt").read_text().splitlines()
    assert len(lines) == 2000
    threads = set()
    for n in range(1000):
        begin = lines[2 * n].split()
        end = lines[2 * n + 1].split()
        # begin/end pairs never interleave: one consumer at a time, in the
        # order sent (order n + 1: the connect was 0), and the session's
        # running count saw every earlier message.
        assert begin[:3] == ["begin", str(n + 1), str(n)], lines[2 * n]
        assert end[:4] == ["end", str(n + 1), str(n), str(n + 1)], lines[2 * n + 1]
        assert begin[3] == end[4]
        threads.add(begin[3])
    # Several of the 8 threads took part: the order held across threads.
    assert len(threads) > 1, threads
