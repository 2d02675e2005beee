"""
End-to-end: clients that stop reading under a heavy broadcast, on one
``twistd -n chanserv`` process with the in-memory layer.

60 WebSockets are members of one group (the e2e project's
``/group/<name>/`` route, tests/e2e/project/e2eproj/nodes.py): 50 asyncio
clients that read everything, and 10 plain sockets with a 4 KiB receive
buffer that complete the handshake and never read again.  A 61st socket,
on ``/broadcast/<name>/`` (not a member), says a 16 KiB text 100 times a
second for 12 s, and the consumer sends each one to the group -- longer
than the 2 s a WebSocket's outgoing queue may stay past
``--ws-send-queue-size``.

- every socket that does not read is closed with 1013 once its queue is
  past the cap (the close frame may not get out to a client that does not
  read: then the connection is cut after it) -- the messages it dropped
  filled more than the cap and at most four times it -- and each close is
  counted: the server's log line, its close and drop counts, and the
  layer's ``channel_full_count`` (the project's ``/diag/``);
- the server's resident memory stays within what the caps allow;
- the 50 readers get every broadcast, in order, with no gap, and stay open.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.e2e.harness import TwistdProcess, free_port
from tests.e2e.tutorial_support import stop_cleanly
from tests.e2e.ws_support import OVERFLOW, frames, raw_websocket, read_to_the_end

PROJECT = Path(__file__).parent / "project"
GROUP = "slowreaders"

READERS = 50
NON_READERS = 10
#: Characters (and, ASCII, bytes) per broadcast: a sequence number, then padding.
SIZE = 16 * 1024
RATE = 100  # broadcasts a second
MESSAGES = 12 * RATE  # 12 s of them
MiB = 1024 * 1024
#: --ws-send-queue-size.  The reply channel's capacity (the project's 100
#: messages, 1.6 MiB of them) is the queue's other bound: the bytes come first.
SEND_QUEUE = 1 * MiB
#: chanserv.server.websocket.HARD_FACTOR: a queue past this many times the
#: cap overflows at once; below it, only after the 2 s grace.
HARD_FACTOR = 4
#: Resident memory the server may gain over its level with every socket
#: open and before the first broadcast: each socket that does not read holds
#: at most HARD_FACTOR x SEND_QUEUE of messages before it is closed (10 x 4
#: x 1 MiB = 40 MiB), plus a margin for the messages in flight to the
#: readers, the transports' buffers and the allocators' slack (40 MiB).
#: Without the cap the 10 queues would grow by 10 x 16 KiB x 100/s x 12 s
#: (about 190 MiB, less what the kernel's buffers hold) and the bound would
#: not hold: with --ws-send-queue-size=1G and a capacity of 100,000 the
#: server grew by 169 MiB and closed none of them.
RSS_BOUND = NON_READERS * HARD_FACTOR * SEND_QUEUE + 40 * MiB
#: Seconds any single network step, or catching up, may take.
TIMEOUT = 30.0


def broadcast_text(n: int) -> str:
    return ("%06d " % n).ljust(SIZE, "x")


def rss_kb(pid: int) -> int:
    """``VmRSS`` of process ``pid``, in KiB."""
    for line in Path("/proc/%d/status" % pid).read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


class RssSampler:
    """Samples a process's ``VmRSS`` every 50 ms on its own thread until stopped."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[int] = []  # KiB
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(rss_kb(self.pid))
            self._stop.wait(0.05)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


@dataclass
class Reader:
    """One reading member: the sequence numbers it received, in order."""

    ws: ClientConnection
    received: list[int] = field(default_factory=list)
    #: Texts that were not a whole broadcast.
    malformed: int = 0
    closed: bool = False
    close_code: int | None = None

    async def read_everything(self) -> None:
        try:
            async for message in self.ws:
                if isinstance(message, str) and len(message) == SIZE:
                    self.received.append(int(message[:6]))
                else:
                    self.malformed += 1
        except ConnectionClosed:
            pass
        finally:
            self.closed = True
            self.close_code = self.ws.close_code


def diag(port: int) -> dict[str, Any]:
    url = "http://127.0.0.1:%d/diag/" % port
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def wait_for(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))
        time.sleep(0.05)


async def open_reader(port: int) -> Reader:
    ws = await connect(
        "ws://127.0.0.1:%d/group/%s/" % (port, GROUP),
        open_timeout=TIMEOUT,
        close_timeout=5,
        ping_interval=None,
        compression=None,
        proxy=None,
        max_queue=None,
    )
    return Reader(ws)


async def broadcast(port: int) -> None:
    """MESSAGES texts to the group, RATE a second (on a fixed schedule: no drift)."""
    async with connect(
        "ws://127.0.0.1:%d/broadcast/%s/" % (port, GROUP),
        open_timeout=TIMEOUT,
        ping_interval=None,
        compression=None,
        proxy=None,
    ) as ws:
        loop = asyncio.get_running_loop()
        started = loop.time()
        for n in range(MESSAGES):
            delay = started + n / RATE - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await ws.send(broadcast_text(n))


@dataclass
class Run:
    readers: list[Reader]
    rss_before_kb: int
    rss_samples_kb: list[int]
    #: Seconds from the first broadcast to the last one sent.
    broadcast_seconds: float
    #: Overflow log lines seen by the end of the broadcast.
    overflows_by_the_end: int
    #: The close codes of the readers the server closed.
    readers_closed: list[int | None]


async def run_broadcast(proc: TwistdProcess, port: int) -> Run:
    """
    Open the readers, check the group has every socket, then broadcast
    while sampling the server's resident memory until every reader has
    every message (or TIMEOUT passed).
    """
    readers = list(await asyncio.gather(*(open_reader(port) for _ in range(READERS))))
    tasks = [asyncio.create_task(r.read_everything()) for r in readers]
    try:
        with urllib.request.urlopen(
            "http://127.0.0.1:%d/groupsize/%s/" % (port, GROUP), timeout=TIMEOUT
        ) as response:
            members = json.loads(response.read())["members"]
        assert members == READERS + NON_READERS
        assert proc.proc is not None
        rss_before = rss_kb(proc.proc.pid)
        with RssSampler(proc.proc.pid) as sampler:
            started = time.monotonic()
            await broadcast(port)
            broadcast_seconds = time.monotonic() - started
            overflows = len(OVERFLOW.findall(proc.output()))
            deadline = time.monotonic() + TIMEOUT
            while time.monotonic() < deadline and not all(
                len(r.received) >= MESSAGES or r.closed for r in readers
            ):
                await asyncio.sleep(0.05)
        closed = [r.close_code for r in readers if r.closed]
        return Run(readers, rss_before, sampler.samples, broadcast_seconds, overflows, closed)
    finally:
        await asyncio.gather(*(r.ws.close() for r in readers))
        await asyncio.gather(*tasks)


def test_non_readers_are_closed_at_the_cap_and_readers_miss_nothing(tmp_path: Path) -> None:
    """Sockets that stop reading are closed 1013 past --ws-send-queue-size, drops counted.

    Readers get every broadcast in order; server memory stays within the caps.
    """
    port = free_port()
    env = {"E2E_LAYER": "memory", "E2E_DB": str(tmp_path / "db.sqlite3")}
    args = ["--ws-send-queue-size=%d" % SEND_QUEUE]
    non_readers: list[tuple[socket.socket, bytes]] = []
    with TwistdProcess(PROJECT, "e2eproj.settings", args=args, port=port, env=env) as proc:
        try:
            for _ in range(NON_READERS):
                non_readers.append(
                    raw_websocket(port, "/group/%s/" % GROUP, receive_buffer=4096, timeout=TIMEOUT)
                )
            run = asyncio.run(run_broadcast(proc, port))

            # Every socket that does not read was closed, its drop logged.
            wait_for(
                lambda: len(OVERFLOW.findall(proc.output())) >= NON_READERS,
                what="%d sockets closed with 1013" % NON_READERS,
            )
            endings = []
            for sock, early in non_readers:
                data, ending = read_to_the_end(sock, early, timeout=TIMEOUT)
                received = list(frames(data))
                texts = [payload.decode("ascii") for opcode, payload in received if opcode == 1]
                # What got through before the queue: every broadcast from the
                # first, in order.
                assert [int(t[:6]) for t in texts] == list(range(len(texts)))
                closes = [payload for opcode, payload in received if opcode == 8]
                if closes:
                    assert [int.from_bytes(c[:2], "big") for c in closes] == [1013]
                    assert received[-1][0] == 8, "the close frame is the last frame"
                endings.append("%s%s" % (ending, " after 1013" if closes else ""))
            counts = diag(port)
        finally:
            for sock, _ in non_readers:
                sock.close()
        log = proc.output()
        stop_cleanly(proc)

    overflows = [(m.group(1), int(m.group(2))) for m in OVERFLOW.finditer(log)]
    # One close per socket that does not read, and none of a reader.
    assert len(overflows) == NON_READERS, overflows
    assert len({channel for channel, _ in overflows}) == NON_READERS
    # Closed at the cap: past it (or the queue would not have overflowed),
    # and never past HARD_FACTOR times it.
    dropped = [n for _, n in overflows]
    for n in dropped:
        assert SEND_QUEUE < n * SIZE <= HARD_FACTOR * SEND_QUEUE + SIZE, dropped
    # Counted by the server and in the layer's statistics.
    assert counts["overflow_closes"] == NON_READERS
    assert counts["overflow_dropped"] == sum(dropped)
    # (The layer's count is global: a websocket.receive found full would add to it.)
    assert counts["layer_full_count"] >= sum(dropped)

    # The readers were never closed, and got every broadcast, in order,
    # with no gap.
    assert run.readers_closed == []
    for reader in run.readers:
        assert reader.malformed == 0
        assert reader.received == list(range(MESSAGES)), len(reader.received)

    # Memory stayed within what the caps allow.
    peak = max(run.rss_samples_kb)
    assert len(run.rss_samples_kb) >= 10
    assert (peak - run.rss_before_kb) * 1024 <= RSS_BOUND, (run.rss_before_kb, peak)
    print(
        "\n%d broadcasts of %d KiB in %.1f s; %d/%d sockets that do not read closed by "
        "the end of it (%s), dropping %s messages; server RSS %d MiB before, peak %d MiB "
        "(+%d MiB, bound +%d MiB), %d samples"
        % (
            MESSAGES,
            SIZE // 1024,
            run.broadcast_seconds,
            run.overflows_by_the_end,
            NON_READERS,
            ", ".join(sorted(set(endings))),
            "/".join(map(str, dropped)),
            run.rss_before_kb // 1024,
            peak // 1024,
            (peak - run.rss_before_kb) // 1024,
            RSS_BOUND // MiB,
            len(run.rss_samples_kb),
        )
    )
