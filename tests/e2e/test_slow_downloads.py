"""
Streamed downloads to clients that read slowly or not at all, against a
real ``twistd -n chanserv`` process (in-memory layer; then an interface
and a worker process over Redis): a 64 MiB
``StreamingHttpResponse`` in 64 KiB chunks is made at its client's pace
(``--http-send-queue-size``), so a client that stops reading for ten
seconds pins a few MiB of the server, not the response; when it reads
again it gets every byte, in order.  Meanwhile a client reading at 2 MiB/s
gets its download whole and other clients are served as usual.
"""

from __future__ import annotations

import hashlib
import socket
import struct
import threading
import time
from pathlib import Path

from tests.e2e.harness import TwistdProcess, free_port
from tests.e2e.redis_support import Cluster, start_all, stop_cleanly
from tests.e2e.test_slow_clients import Probe, wait_for_port

PROJECT = Path(__file__).parent / "project"

CHUNK = 64 * 1024
CHUNKS = 1024  # 64 MiB
PACED_CHUNKS = 384  # 24 MiB: 12 s at the pace below
PACE = 2 * 1024 * 1024  # bytes per second
STALL = 10.0  # seconds the stalled client reads nothing
#: Growth of the server's resident memory allowed while the client stalls:
#: far below the 64 MiB it would take to buffer the response.
RSS_BOUND = 20 * 1024 * 1024


def expected_digest(chunks: int) -> str:
    digest = hashlib.sha256()
    for i in range(chunks):
        digest.update(struct.pack(">Q", i) * (CHUNK // 8))
    return digest.hexdigest()


def rss(pid: int) -> int:
    """Resident memory of process ``pid``, in bytes (``VmRSS``)."""
    with open("/proc/%d/status" % pid) as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for %d" % pid)


class Download:
    """A raw-socket GET of ``/stream/`` whose reading the test controls."""

    def __init__(self, port: int, chunks: int, path: bytes = b"/stream/") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        # A small receive buffer: the server sees a stalled reader sooner.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 128 * 1024)
        self.sock.sendall(
            b"GET %s?chunks=%d&size=%d HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % (path, chunks, CHUNK)
        )
        self.digest = hashlib.sha256()
        self.received = 0
        head = b""
        while b"\r\n\r\n" not in head:
            data = self.sock.recv(4096)
            assert data, "connection closed before the response head"
            head += data
        head, _, rest = head.partition(b"\r\n\r\n")
        self.head = head.decode("latin-1")
        assert self.head.startswith("HTTP/1.1 200 "), self.head
        lengths = [
            line.split(":", 1)[1].strip()
            for line in self.head.split("\r\n")
            if line.lower().startswith("content-length:")
        ]
        self.length = int(lengths[0])
        self._take(rest)

    def _take(self, data: bytes) -> None:
        self.digest.update(data)
        self.received += len(data)

    def read(self, limit: int) -> int:
        """Read up to ``limit`` bytes of the body; how many came (0: closed)."""
        data = self.sock.recv(min(limit, 256 * 1024))
        self._take(data)
        return len(data)

    def read_all(self) -> None:
        while self.received < self.length:
            assert self.read(self.length - self.received), "closed at %d" % self.received

    def read_paced(self, rate: float) -> None:
        started = time.monotonic()
        while self.received < self.length:
            # Never more than ``rate`` bytes a second since the start.
            allowed = int((time.monotonic() - started) * rate) - self.received
            if allowed <= 0:
                time.sleep(0.01)
                continue
            assert self.read(min(allowed, self.length - self.received)), (
                "closed at %d" % self.received
            )

    def close(self) -> None:
        self.sock.close()


def check_downloads(port: int, pid: int) -> None:
    """
    The stalled download, the paced one and the probe against the server
    listening on ``port``, whose interface process is ``pid``.
    """
    # Warm up: Django, the handler and the allocator have run a download.
    warm = Download(port, 64)
    warm.read_all()
    warm.close()
    baseline = rss(pid)

    stalled = Download(port, CHUNKS)
    paced = Download(port, PACED_CHUNKS)
    paced_thread = threading.Thread(target=paced.read_paced, args=(PACE,), daemon=True)
    paced_thread.start()
    probe = Probe(port)
    probe_thread = threading.Thread(target=probe.run, daemon=True)
    probe_thread.start()
    try:
        peak = baseline
        stall_until = time.monotonic() + STALL
        while time.monotonic() < stall_until:
            peak = max(peak, rss(pid))
            time.sleep(0.25)
        stalled.read_all()
        paced_thread.join(60)
        assert not paced_thread.is_alive(), "the paced download did not finish"
    finally:
        probe.stop.set()
        probe_thread.join(10)
        stalled.close()
        paced.close()

    growth = peak - baseline
    assert growth < RSS_BOUND, "RSS grew %.1f MiB while the client stalled" % (growth / 2**20)
    assert stalled.received == stalled.length == CHUNKS * CHUNK
    assert stalled.digest.hexdigest() == expected_digest(CHUNKS)
    assert paced.received == paced.length == PACED_CHUNKS * CHUNK
    assert paced.digest.hexdigest() == expected_digest(PACED_CHUNKS)
    assert not probe.failures, probe.failures[:5]
    assert len(probe.answers) >= 10
    assert all(status == 200 and body == b"Hello world" for _, status, body in probe.answers)


def check_log(output: str) -> None:
    for sign in ("Traceback", "connection cut", "too long", "stayed full"):
        assert sign not in output, output


def test_stalled_and_slow_downloads_hold_little_memory_and_complete(tmp_path: Path) -> None:
    """A stalled 64 MiB streamed download holds little memory and arrives whole later.

    A paced download completes too, while other clients are served.
    """
    port = free_port()
    args = ["-e", "tcp:port=%d:interface=127.0.0.1" % port]
    env = {"E2E_DB": str(tmp_path / "db.sqlite3")}
    with TwistdProcess(PROJECT, "e2eproj.settings", args=args, env=env) as proc:
        wait_for_port(port)
        assert proc.proc is not None
        check_downloads(port, proc.proc.pid)
        output = proc.output()
    check_log(output)


def test_over_redis_the_worker_process_waits_for_the_client(tmp_path: Path) -> None:
    """Over Redis, a stalled streamed download also holds little memory and arrives whole.

    The same checks with an interface and a worker process: the worker waits for the client.
    """
    cluster = Cluster(tmp_path)
    try:
        interface = cluster.node("interface")
        worker = cluster.node("worker")
        start_all([interface, worker])
        assert interface.port is not None and interface.proc is not None
        check_downloads(interface.port, interface.proc.pid)
        check_log(stop_cleanly(interface))
        check_log(stop_cleanly(worker))
    finally:
        cluster.close()


def test_over_redis_a_consumer_streaming_to_a_stalled_client_loses_nothing(
    tmp_path: Path,
) -> None:
    """
    A Channels 1.x consumer that sends a 16 MiB response in 256 chunks to a
    client that stops reading: the worker hands the held chunks to the
    Redis layer, which waits while the client's reply channel is full or
    blocked and goes on when it reads again.  Every byte arrives, in
    order; nothing is dropped, and the worker logs no error.
    """
    chunks = 256
    cluster = Cluster(tmp_path)
    try:
        interface = cluster.node("interface")
        worker = cluster.node("worker")
        start_all([interface, worker])
        assert interface.port is not None
        stalled = Download(interface.port, chunks, path=b"/cstream/")
        try:
            time.sleep(3.0)  # reads nothing meanwhile
            stalled.read_all()
        finally:
            stalled.close()
        assert stalled.received == stalled.length == chunks * CHUNK
        assert stalled.digest.hexdigest() == expected_digest(chunks)
        check_log(stop_cleanly(interface))
        check_log(stop_cleanly(worker))
    finally:
        cluster.close()
