"""
Slow clients against a real ``twistd -n chanserv`` process: 300 sockets
trickling request bodies at one byte per second are all closed by the
request deadline (``--request-timeout``) plus one sweep, while normal
requests keep being answered.
"""

from __future__ import annotations

import errno
import resource
import selectors
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.harness import TwistdProcess, free_port

PROJECT = Path(__file__).parent / "project"

SOCKETS = 300
DEADLINE = 3.0
SWEEP = 1.0  # the server's sweep interval (its default)
SLACK = 2.0  # connection set-up, scheduling on a busy machine

HEAD = (
    b"POST /hello/ HTTP/1.1\r\n"
    b"Host: 127.0.0.1\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Length: 1000000\r\n"
    b"\r\n"
)


@pytest.fixture
def enough_file_descriptors() -> Iterator[None]:
    """Room for the slow sockets, the probe and the server (within the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * SOCKETS
    if soft != resource.RLIM_INFINITY and soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip("the hard file descriptor limit (%d) is too low" % hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@dataclass
class SlowClient:
    sock: socket.socket
    sent_head_at: float
    received: bytes = b""
    closed_at: float | None = None
    error: str | None = None
    bytes_sent: int = 0


@dataclass
class Probe:
    """GETs ``/hello/`` over and over until stopped, on its own thread."""

    port: int
    answers: list[tuple[float, int, bytes]] = field(default_factory=list)
    failures: list[tuple[float, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        url = "http://127.0.0.1:%d/hello/" % self.port
        while not self.stop.is_set():
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    self.answers.append((time.monotonic(), response.status, response.read()))
            except Exception as e:
                self.failures.append((time.monotonic(), repr(e)))
            self.stop.wait(0.1)


def _read(client: SlowClient, now: float) -> None:
    try:
        data = client.sock.recv(65536)
    except BlockingIOError:
        return
    except OSError as e:
        client.error = errno.errorcode.get(e.errno or 0, str(e))
        client.closed_at = now
        return
    if data:
        client.received += data
    else:
        client.closed_at = now


@pytest.mark.usefixtures("enough_file_descriptors")
def test_slow_bodies_are_closed_at_the_deadline_while_others_are_served(tmp_path: Path) -> None:
    """300 dribbled request bodies get 408 and are closed at --request-timeout plus a sweep.

    Other clients are answered throughout; each close is logged once.
    """
    port = free_port()
    endpoint = "tcp:port=%d:interface=127.0.0.1:backlog=1024" % port
    args = ["-e", endpoint, "--request-timeout", str(DEADLINE)]
    env = {"E2E_DB": str(tmp_path / "db.sqlite3")}
    with TwistdProcess(PROJECT, "e2eproj.settings", args=args, env=env) as proc:
        wait_for_port(port)
        probe = Probe(port)
        probe_thread = threading.Thread(target=probe.run, name="probe", daemon=True)
        probe_thread.start()
        clients: list[SlowClient] = []
        selector = selectors.DefaultSelector()
        try:
            for _ in range(SOCKETS):
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                sock.sendall(HEAD)
                sock.setblocking(False)
                client = SlowClient(sock, time.monotonic())
                clients.append(client)
                selector.register(sock, selectors.EVENT_READ, client)
            last_head = clients[-1].sent_head_at
            give_up = last_head + DEADLINE + SWEEP + SLACK + 3
            next_byte = time.monotonic()
            while time.monotonic() < give_up:
                now = time.monotonic()
                if now >= next_byte:
                    next_byte = now + 1.0
                    for client in clients:
                        if client.closed_at is None:
                            try:
                                client.sock.send(b"x")
                                client.bytes_sent += 1
                            except OSError:
                                pass  # closed by the server: the read below sees it
                for key, _ in selector.select(timeout=0.05):
                    client = key.data
                    _read(client, time.monotonic())
                    if client.closed_at is not None:
                        selector.unregister(client.sock)
                if all(c.closed_at is not None for c in clients):
                    break
            all_closed_at = time.monotonic()
            # The probe keeps going a little after the storm.
            time.sleep(0.5)
        finally:
            probe.stop.set()
            probe_thread.join(10)
            selector.close()
            for client in clients:
                client.sock.close()
        output = proc.output()

    still_open = [c for c in clients if c.closed_at is None]
    assert not still_open, "%d slow sockets still open" % len(still_open)
    lifetimes = [c.closed_at - c.sent_head_at for c in clients if c.closed_at is not None]
    # Not before the deadline, and by the deadline plus a sweep (and slack).
    assert min(lifetimes) >= DEADLINE - 0.5
    assert max(lifetimes) <= DEADLINE + SWEEP + SLACK, sorted(lifetimes)[-10:]
    # Whatever the server got to send is a 408, never anything else.
    answered = [c for c in clients if c.received]
    assert all(c.received.startswith(b"HTTP/1.1 408 Request Timeout\r\n") for c in answered)
    assert len(answered) >= SOCKETS // 2, "only %d sockets saw the 408" % len(answered)
    # One log line per close.
    assert output.count("Request not received in time: 408 to") == SOCKETS
    assert "Traceback" not in output
    # The probe was answered throughout.
    assert not probe.failures, probe.failures[:5]
    assert len(probe.answers) >= 5
    assert all(status == 200 and body == b"Hello world" for _, status, body in probe.answers)
    assert probe.answers[-1][0] >= all_closed_at


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
