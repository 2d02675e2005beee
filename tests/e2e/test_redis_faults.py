"""
End-to-end faults of a site scaled out over a real ``redis-server``: a
worker node killed with SIGKILL mid-traffic, Redis down when the nodes
start, Redis restarted under traffic, and graceful SIGTERM of interface and
worker nodes.  Every process (redis-server included) is cleaned up by the
test that started it.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.e2e.harness import TwistdProcess
from tests.e2e.redis_support import (
    TIMEOUT,
    Cluster,
    Reply,
    chat_round,
    http_get,
    start_all,
    stop_cleanly,
    wait_for,
    ws_connect,
)


def pid(proc: TwistdProcess) -> int:
    assert proc.proc is not None
    return proc.proc.pid


class Traffic:
    """
    Threads sending ``/whoami/?<unique token>`` one request after the other
    until :meth:`stop`; every reply is recorded with its token and the time
    it arrived.  A reply carrying another request's token fails the test.
    """

    def __init__(self, port: int, clients: int = 3) -> None:
        self.port = port
        self.replies: list[tuple[float, str, Reply]] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(clients)
        ]

    def start(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def _run(self, n: int) -> None:
        count = 0
        while not self._stop.is_set():
            count += 1
            token = "c%d-%d" % (n, count)
            try:
                reply = http_get(self.port, "/whoami/?" + token, timeout=30)
            except BaseException as e:
                with self._lock:
                    self.errors.append(e)
                return
            with self._lock:
                self.replies.append((time.monotonic(), token, reply))
            if reply.status != 200:
                self._stop.wait(0.02)  # a 503 comes back at once: don't spin

    def since(self, when: float) -> list[Reply]:
        with self._lock:
            return [reply for at, _, reply in self.replies if at > when]

    def stop(self) -> list[tuple[float, str, Reply]]:
        self._stop.set()
        for t in self._threads:
            t.join(60)
            assert not t.is_alive(), "a request hung"
        assert not self.errors, self.errors
        for _, token, reply in self.replies:
            if reply.status == 200:
                assert reply.body.split()[0] == token, (token, reply)
        return self.replies


def test_kill_9_of_one_worker_the_other_carries_on(tmp_path: Path) -> None:
    """After kill -9 of one worker the other serves all traffic; no request ever hangs.

    The request in flight on the killed worker gets 503 once --http-timeout runs out.
    """
    http_timeout = 2.0
    cluster = Cluster(tmp_path)
    try:
        gates = {}
        for name in ("w1", "w2"):
            gates[name] = tmp_path / name
            gates[name].mkdir()
            os.mkfifo(gates[name] / "gate")
        interface = cluster.node("interface", "--http-timeout=%s" % http_timeout)
        w1 = cluster.node("worker", "--threads=1", env={"E2E_MARKER_DIR": str(gates["w1"])})
        w2 = cluster.node("worker", "--threads=1", env={"E2E_MARKER_DIR": str(gates["w2"])})
        start_all([interface, w1, w2])
        assert interface.port is not None
        traffic = Traffic(interface.port).start()
        try:
            wait_for(
                lambda: (
                    {int(r.body.split()[1]) for r in traffic.since(0) if r.status == 200}
                    == {pid(w1), pid(w2)}
                ),
                what="both workers to serve the traffic",
            )
            # Make w1 die *with a consumer in flight*: /gated/ holds the one
            # thread of whichever worker takes it.  If w2 takes it, w2 has no
            # idle thread, so the next one can only go to w1; w2 is let go.
            held: list[threading.Thread] = []
            gated: list[Reply] = []

            def hold() -> None:
                port = interface.port
                assert port is not None
                t = threading.Thread(
                    target=lambda: gated.append(http_get(port, "/gated/")), daemon=True
                )
                t.start()
                held.append(t)

            started = {name: gates[name] / "started" for name in gates}
            hold()
            first = wait_for(
                lambda: [name for name in started if started[name].exists()],
                what="a worker to take /gated/",
            )
            if first == ["w2"]:
                hold()
                wait_for(started["w1"].exists, what="w1 to take /gated/")
                with open(gates["w2"] / "gate", "wb"):
                    pass  # w2's consumer reads EOF and answers
            killed_at = time.monotonic()
            assert w1.proc is not None
            w1.proc.kill()
            assert w1.proc.wait(10) == -9
            # w2 carries on with the traffic.  Once --http-timeout has run
            # out for everything sent before the kill, every request is
            # answered.
            settled = killed_at + http_timeout
            wait_for(
                lambda: len([r for r in traffic.since(settled) if r.status == 200]) >= 20,
                timeout=http_timeout + TIMEOUT,
                what="20 answers after the kill",
            )
        finally:
            replies = traffic.stop()
        for t in held:
            t.join(http_timeout + 10)
            assert not t.is_alive()
        # The request whose consumer died with w1 got its 503 once
        # --http-timeout ran out (w2's, if any, was answered or timed out).
        assert len(gated) == len(held)
        assert [r.body for r in gated if r.status == 200] in ([], ["released"])
        assert any(r.status == 503 for r in gated), gated
        assert all(r.seconds < http_timeout + 5 for r in gated), gated
        statuses = Counter(reply.status for _, _, reply in replies)
        assert set(statuses) <= {200, 503}, statuses
        for _, _, reply in replies:
            # Never a hang: answered, or 503 once --http-timeout ran out.
            assert reply.seconds < http_timeout + 5, reply
        after = [r for at, _, r in replies if at > settled]
        assert after and all(r.status == 200 for r in after), after
        assert {int(r.body.split()[1]) for r in after} == {pid(w2)}
        assert interface.proc is not None and interface.proc.poll() is None
        assert "Traceback" not in interface.output()
        stop_cleanly(interface)
        stop_cleanly(w2)
    finally:
        cluster.close()


def test_redis_down_at_start_up_then_up(tmp_path: Path) -> None:
    """Redis down at start: both nodes run, log it, and answer HTTP and handshakes 503 at once.

    Once Redis is up they serve HTTP, WebSockets and chat without a restart.
    """
    cluster = Cluster(tmp_path, start_redis=False)
    try:
        interface = cluster.node("interface", "--http-timeout=30")
        worker = cluster.node("worker", "--threads=2")
        start_all([interface, worker])
        port = interface.port
        assert port is not None
        # It started, and says it is waiting for Redis.
        wait_for(
            lambda: (
                "Redis at %s is unreachable" % cluster.redis.url in interface.output()
                and "is waiting for Redis" in interface.output()
            ),
            what="the interface node to log that it waits for Redis",
        )
        wait_for(
            lambda: (
                "Redis at %s is unreachable" % cluster.redis.url in worker.output()
                and "receiving again in" in worker.output()
            ),
            what="the worker node to log that it retries",
        )
        # HTTP answered 503 at once, not after the 30 s --http-timeout;
        # a WebSocket handshake too.
        for path in ("/hello/", "/whoami/?down"):
            reply = http_get(port, path)
            assert reply.status == 503, reply
            assert reply.body == "Channel layer unavailable.\n"
            assert reply.seconds < 5, reply
        with pytest.raises(InvalidStatus) as refused:
            ws_connect(port, "/chat/")
        assert refused.value.response.status_code == 503
        # Redis comes up: served without a restart of either node.
        cluster.redis.start()
        wait_for(
            lambda: http_get(port, "/hello/").status == 200,
            timeout=20,
            what="/hello/ to be served once Redis is up",
        )
        reply = http_get(port, "/whoami/?up")
        assert reply[:2] == (200, "up %d" % pid(worker))
        with (
            ws_connect(port, "/chat/") as one,
            ws_connect(port, "/chat/") as two,
        ):
            chat_round([one, two], "after start-up")
        assert "Reconnected to Redis at %s" % cluster.redis.url in interface.output()
        assert "Traceback" not in interface.output()
        stop_cleanly(interface)
        stop_cleanly(worker)
    finally:
        cluster.close()


class EchoClient:
    """
    A thread on ``/echo/`` sending unique tokens, one at a time, each
    awaited for ``patience`` seconds (a token lost with Redis' data is
    given up on; the connection goes on).  Records every text received and
    how the connection ended.
    """

    def __init__(self, port: int, n: int, patience: float = 3.0) -> None:
        self.port = port
        self.n = n
        self.patience = patience
        self.sent: list[str] = []
        self.received: list[str] = []
        self.closed_with: int | None = None
        self.error: BaseException | None = None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> EchoClient:
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            with ws_connect(self.port, "/echo/") as ws:
                while not self.stopping.is_set():
                    token = "e%d-%d" % (self.n, len(self.sent))
                    self.sent.append(token)
                    ws.send(token)
                    deadline = time.monotonic() + self.patience
                    while time.monotonic() < deadline:
                        try:
                            text = ws.recv(max(0.0, deadline - time.monotonic()))
                        except TimeoutError:
                            break
                        assert isinstance(text, str)
                        self.received.append(text)
                        if text.split()[0] == token:
                            break
        except ConnectionClosed as e:
            self.closed_with = e.rcvd.code if e.rcvd is not None else None
        except BaseException as e:
            self.error = e

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(self.patience + TIMEOUT)
        assert not self.thread.is_alive(), "client %d hung" % self.n
        assert self.error is None, self.error

    def answered_since(self, count: int) -> int:
        return len(self.received) - count


def test_redis_restarted_mid_traffic(tmp_path: Path) -> None:
    """Across a Redis restart requests get 200 or 503, never hang; sockets close 1011/1012.

    Echo replies are never duplicated, misrouted or reordered; all works again after.
    """
    http_timeout = 3.0
    cluster = Cluster(tmp_path)
    try:
        interface = cluster.node("interface", "--http-timeout=%s" % http_timeout)
        worker = cluster.node("worker", "--threads=4")
        start_all([interface, worker])
        port = interface.port
        assert port is not None
        traffic = Traffic(port, clients=2).start()
        echoes = [EchoClient(port, n).start() for n in range(3)]
        try:
            wait_for(lambda: all(len(e.received) >= 5 for e in echoes), what="echo traffic")
            wait_for(lambda: len(traffic.since(0)) >= 10, what="HTTP traffic")
            with ws_connect(port, "/echo/") as idle:
                # Redis goes away...
                cluster.redis.stop()
                down_at = time.monotonic()
                wait_for(
                    lambda: any(
                        r.body == "Channel layer unavailable.\n" for r in traffic.since(down_at)
                    ),
                    what="a 503 while Redis is down",
                )
                # ...a message sent meanwhile closes its WebSocket with 1011...
                idle.send("while down")
                with pytest.raises(ConnectionClosed) as closed:
                    idle.recv(TIMEOUT)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
            # ...and it comes back, empty, on the same port.
            cluster.redis.start()
            up_at = time.monotonic()
            wait_for(
                lambda: len([r for r in traffic.since(up_at) if r.status == 200]) >= 10,
                timeout=20,
                what="HTTP answered again after the restart",
            )
            counts = [len(e.received) for e in echoes]
            wait_for(
                lambda: all(
                    e.closed_with is not None or e.answered_since(c) >= 3
                    for e, c in zip(echoes, counts, strict=True)
                ),
                timeout=20,
                what="every open echo connection answered again",
            )
        finally:
            for e in echoes:
                e.stop()
            replies = traffic.stop()
        # Requests in flight got 503 (at once, or after --http-timeout):
        # never a hang, never an answer to another request (Traffic.stop).
        assert {reply.status for _, _, reply in replies} <= {200, 503}
        assert all(reply.seconds < http_timeout + 5 for _, _, reply in replies)
        for e in echoes:
            # Only its own tokens, each at most once, in the order sent.
            tokens = [text.split()[0] for text in e.received]
            assert len(tokens) == len(set(tokens)), tokens
            assert set(tokens) <= set(e.sent), (tokens, e.sent)
            assert tokens == sorted(tokens, key=e.sent.index)
            # 1011: a send failed while Redis was down; 1012: the interface
            # noticed that Redis came back empty and asked it to reconnect.
            assert e.closed_with in (None, 1011, 1012), e.closed_with
        # Everything works again, the chat included.
        reply = http_get(port, "/whoami/?after")
        assert reply[:2] == (200, "after %d" % pid(worker))
        with ws_connect(port, "/chat/") as one, ws_connect(port, "/chat/") as two:
            chat_round([one, two], "after the restart")
        stop_cleanly(interface)
        assert worker.stop() == 0
    finally:
        cluster.close()


def test_sigterm_worker_finishes_in_flight_interface_closes_1001(tmp_path: Path) -> None:
    """A SIGTERMed worker finishes its consumer in flight, whose reply still goes out.

    A stopped interface node closes its WebSockets with 1001 and exits 0.
    """
    markers = tmp_path / "markers"
    markers.mkdir()
    cluster = Cluster(tmp_path)
    try:
        interface = cluster.node("interface")
        worker = cluster.node("worker", "--threads=2", env={"E2E_MARKER_DIR": str(markers)})
        start_all([interface, worker])
        port = interface.port
        assert port is not None
        # A WebSocket, open before the worker goes.
        with ws_connect(port, "/echo/") as ws:
            ws.send("hello")
            assert ws.recv(TIMEOUT) == "hello %d" % pid(worker)
            # A consumer in flight on the worker (sleeps 1 s, then writes
            # "finished" and answers) when the worker gets SIGTERM.
            answer: list[Reply] = []
            request = threading.Thread(
                target=lambda: answer.append(http_get(port, "/slow/?delay=1")), daemon=True
            )
            request.start()
            wait_for((markers / "started").exists, what="the slow consumer to start")
            assert not (markers / "finished").exists()
            out = stop_cleanly(worker)
            assert (markers / "finished").exists()
            assert "Waiting for 1 consumer(s) in flight to finish" in out
            # Its reply still went out through Redis before the layer stopped.
            request.join(TIMEOUT)
            assert [reply[:2] for reply in answer] == [(200, "slept 1.0")]
            # The interface node closes its WebSockets with 1001 ("going away").
            interface_stopped: list[int] = []
            stopper = threading.Thread(
                target=lambda: interface_stopped.append(interface.stop()), daemon=True
            )
            stopper.start()
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(TIMEOUT)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        stopper.join(TIMEOUT)
        assert interface_stopped == [0]
        assert "chanserv stopped" in interface.output()
        assert "Traceback" not in interface.output()
    finally:
        cluster.close()


def test_frozen_redis_answers_503_within_5s_and_recovers_within_5s(tmp_path: Path) -> None:
    """
    ``kill -STOP`` of Redis: the interface stops waiting on it and answers
    new requests 503 within 5 s (not after its HTTP timeout); once Redis
    runs again, requests are served within 5 s.
    """
    cluster = Cluster(tmp_path)
    try:
        interface = cluster.node("interface", "--http-timeout=60")
        worker = cluster.node("worker", "--threads=4")
        start_all([interface, worker])
        port = interface.port
        assert port is not None
        assert http_get(port, "/whoami/?before").status == 200
        cluster.redis.freeze()
        frozen = time.monotonic()
        try:
            reply = wait_for(
                lambda: (r := http_get(port, "/whoami/?frozen", timeout=10)).status == 503 and r,
                timeout=15,
                what="a 503 while Redis is frozen",
            )
            assert reply.status == 503
            # Requests made meanwhile waited for the detection, not for the
            # HTTP timeout: the first 503 came within 5 s of the freeze.
            assert time.monotonic() - frozen < 5.0, reply
        finally:
            cluster.redis.thaw()
        thawed = time.monotonic()
        wait_for(
            lambda: http_get(port, "/whoami/?thawed", timeout=10).status == 200,
            timeout=15,
            what="service again after the thaw",
        )
        assert time.monotonic() - thawed < 5.0
    finally:
        cluster.close()
