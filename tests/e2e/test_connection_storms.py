"""
End-to-end: storms of WebSocket connections leave nothing behind.

A real ``twistd chanserv --mode=all`` process with the in-memory layer takes
rounds of 1,000 WebSocket connections, opened 100 at a time: each one sends
one message, waits for its answer and closes cleanly.  Half go to ``/chat/``
(the tutorial's chat: it joins ``Group("chat")`` on connect and broadcasts
every message to the group), half to ``/echo/``.  After every round, once
the server is quiet, the test reads the process's resident memory (VmRSS)
and, through the e2e project's ``/diag/`` view (e2eproj/diag.py), the sizes
of its per-connection structures and its live Python allocations.  After
the last round everything a connection creates is gone again, the live
allocations are back to what they were after the first round, and the
resident memory is within 10 % of it.

The resident memory does not come all the way back: Python's small-object
allocator gives an arena back only once every object in it is freed, and
the C allocator keeps freed memory for reuse, so the process stays at the
high-water mark of its busiest moment (a few MB over the first round's;
flat from the third round on).  ``E2E_STORM_TRIM=1`` shows it: after
``malloc_trim(0)`` the resident memory falls back towards the first
round's, with the count of pymalloc arenas.

``E2E_STORM_REPORT=1`` prints the measurements of every round; with
``E2E_STORM_TRACEMALLOC=n`` too (``n`` frames per allocation; rounds get
several times slower and the process larger), the allocation sites that
grew since the first round.  ``E2E_STORM_TRIM=1`` lowers the following
rounds' resident memory: use it for diagnosis only.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests.e2e.harness import TwistdProcess, free_port

PROJECT = Path(__file__).parent / "project"

ROUNDS = 5
PER_ROUND = 1000
BATCH = 100
#: One connection in ECHO_EVERY goes to /echo/, the others to /chat/.
ECHO_EVERY = 2
TIMEOUT = 30.0

#: Sizes that grow with every connection while it lives and must come back
#: to their value before the first storm (e2eproj/diag.py names them).
PER_CONNECTION = (
    "ws_connections",
    "http_connections",
    "replies",
    "chat_members",
    "layer_groups",
    "layer_group_channels",
    "layer_counters",
    "layer_receivers",
    "layer_pending",
    "worker_lanes",
    "worker_parked",
    "delayed_calls",
    "readers",
    "writers",
)

#: Sizes that follow the named channels in use (websocket.connect, ...):
#: they may grow during the first storm, never after it.
PER_CHANNEL = (
    "layer_channels",
    "layer_expiry_heap",
    "valid_names",
    "valid_receive_names",
    "capacity_cache",
)


def raise_fd_limit(wanted: int) -> None:
    """Raise the soft RLIMIT_NOFILE (inherited by the server) to ``wanted``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        limit = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))


def rss_kb(pid: int) -> int:
    """``VmRSS`` of process ``pid``, in KiB."""
    for line in Path("/proc/%d/status" % pid).read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` so far."""
    fields = Path("/proc/%d/stat" % pid).read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def diag(port: int, query: str = "") -> dict[str, Any]:
    url = "http://127.0.0.1:%d/diag/%s" % (port, query)
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def diag_settled(port: int, query: str, lanes: int) -> dict[str, Any]:
    """
    ``/diag/`` once the previous diagnostic request has let go of its
    worker lane: a request's lane is released after its consumer returns,
    which is after its response went out, so the next request can see it
    for an instant.  Polls until ``worker_lanes`` is ``lanes`` (what one
    request in flight, this one, holds).
    """
    deadline = time.monotonic() + TIMEOUT
    while True:
        state = diag(port, query)
        if state["worker_lanes"] == lanes or time.monotonic() > deadline:
            return state
        time.sleep(0.05)


def wait_quiet(port: int, baseline: dict[str, Any]) -> dict[str, Any]:
    """
    Poll ``/diag/`` until no connection of the storm is left and every
    ``websocket.disconnect`` ran (the chat group is empty); the last answer.
    """
    deadline = time.monotonic() + TIMEOUT
    while True:
        state = diag(port)
        if (
            state["ws_connections"] == 0
            and state["replies"] == baseline["replies"]
            and state["chat_members"] == 0
            and state["worker_parked"] == 0
            and state["layer_pending"] == 0
        ):
            return state
        if time.monotonic() > deadline:
            raise AssertionError("the server did not become quiet: %r" % (state,))
        time.sleep(0.1)


async def one_client(port: int, n: int) -> None:
    """Connect, send one message, wait for its answer, close cleanly."""
    token = "storm-%d" % n
    if n % ECHO_EVERY == 0:
        path, answered = "/echo/", (lambda m: m.startswith(token + " "))
    else:
        path, answered = "/chat/", (lambda m: m == "[user] " + token)
    async with connect(
        "ws://127.0.0.1:%d%s" % (port, path),
        open_timeout=TIMEOUT,
        close_timeout=TIMEOUT,
        ping_interval=None,
        compression=None,
        proxy=None,
        max_queue=None,
    ) as ws:
        await ws.send(token)
        async with asyncio.timeout(TIMEOUT):
            async for message in ws:
                if answered(message):
                    break


async def storm(port: int, first: int) -> None:
    for start in range(first, first + PER_ROUND, BATCH):
        await asyncio.gather(*(one_client(port, n) for n in range(start, start + BATCH)))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TwistdProcess]:
    raise_fd_limit(4 * BATCH + 256)
    env = {"E2E_DB": str(tmp_path / "db.sqlite3"), "E2E_CAPACITY": "1000"}
    # A loaded machine (or tracemalloc) must not turn a slow accept into a 403:
    # this test is about memory, not timeouts.
    args = ["--mode=all", "--websocket-connect-timeout=%d" % TIMEOUT]
    proc = TwistdProcess(PROJECT, "e2eproj.settings", args=args, port=free_port(), env=env)
    with proc:
        yield proc
        assert proc.stop() == 0
    assert "Traceback" not in proc.output()


def report_round(
    n: int, pid: int, started: float, rss: int, blocks: int, quiet: dict[str, Any]
) -> None:
    print(
        "round %d at %.1fs: %d KiB resident, %d allocated blocks; CPU seconds so far: "
        "server %.1f, clients %.1f"
        % (n, time.monotonic() - started, rss, blocks, cpu_seconds(pid), time.process_time())
    )
    print("  ", {k: v for k, v in quiet.items() if k in PER_CONNECTION + PER_CHANNEL})


def test_memory_returns_after_storms(server: TwistdProcess) -> None:
    """After 5 rounds of 1,000 WebSockets nothing of any connection is left in the server.

    Live objects return to the baseline; resident memory stays within 10 % of round 1.
    """
    assert server.proc is not None and server.port is not None
    pid, port = server.proc.pid, server.port
    report = os.environ.get("E2E_STORM_REPORT") == "1"
    trim = os.environ.get("E2E_STORM_TRIM") == "1"
    tracing = int(os.environ.get("E2E_STORM_TRACEMALLOC", "0"))
    baseline = diag_settled(port, "?objects=1", 1)  # the diagnostic request's own lane
    if tracing:
        diag(port, "?tracemalloc=start&frames=%d" % tracing)
    started = time.monotonic()
    rss: list[int] = []
    blocks: list[int] = []
    first: dict[str, Any] = {}
    for n in range(ROUNDS):
        asyncio.run(storm(port, n * PER_ROUND))
        quiet = wait_quiet(port, baseline)
        rss.append(rss_kb(pid))
        blocks.append(diag(port, "?objects=1")["allocated_blocks"])
        first = first or quiet
        if report:
            report_round(n + 1, pid, started, rss[-1], blocks[-1], quiet)
        if tracing:
            traced = diag(port, "?tracemalloc=%s" % ("mark" if n == 0 else "diff"))
            if report:
                print(json.dumps(traced["tracemalloc"], indent=1))
        if trim:
            state = diag(port, "?trim=1&pymalloc=1")
            print("   after malloc_trim(0): %d KiB" % state["rss_kb_trimmed"], state["pymalloc"])
    final = diag_settled(port, "?objects=1", baseline["worker_lanes"])
    if report:
        print("before  ", baseline)
        print("round 1 ", first)
        print("round %d " % ROUNDS, final)
    # Nothing of any connection is left: not a structure's entry, not an object.
    assert {k: final[k] for k in PER_CONNECTION} == {k: baseline[k] for k in PER_CONNECTION}
    assert {k: final[k] for k in PER_CHANNEL} == {k: first[k] for k in PER_CHANNEL}
    assert final["objects"] == baseline["objects"]
    assert final["disconnects_lost"] == 0
    if not tracing:  # (its snapshots are live allocations too)
        # One object kept per connection would be 4,000 blocks more.
        assert blocks[-1] - blocks[0] < (ROUNDS - 1) * PER_ROUND // 4, blocks
    assert rss[-1] <= 1.10 * rss[0], "resident KiB after each round: %r" % (rss,)
