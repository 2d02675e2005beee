"""
End-to-end test of ``--metrics``: a real ``twistd chanserv`` with the
in-memory layer and one worker thread, a scripted run over real sockets
(HTTP requests, 20 WebSockets, a group send, a full ``http.request``), and
the scraped counters compared with what happened; ``/healthz`` and
``/readyz`` on the metrics endpoint, readiness falling during a graceful
stop.
"""

from __future__ import annotations

import errno
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from tests.e2e.harness import TwistdProcess, free_port

PROJECT = Path(__file__).parent / "project"
TIMEOUT = 15.0

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def get(port: int, path: str, timeout: float = TIMEOUT) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def scrape(port: int) -> Samples:
    status, body = get(port, "/metrics")
    assert status == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode("utf-8"))
        for sample in family.samples
    }


def metric(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def eventually(port: int, check: Callable[[Samples], bool], what: str) -> Samples:
    """Scrape until ``check`` holds (counters of pool threads land a moment later)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        samples = scrape(port)
        if check(samples):
            return samples
        assert time.monotonic() < deadline, "%s never held; last scrape: %r" % (what, samples)
        time.sleep(0.05)


def wait_for_file(path: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not path.exists():
        assert time.monotonic() < deadline, "%s never appeared" % path
        time.sleep(0.02)


def release(gate: Path) -> None:
    """Let ``gated_http`` go on: open its FIFO for writing once it reads it."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            os.close(os.open(gate, os.O_WRONLY | os.O_NONBLOCK))
            return
        except OSError as e:
            if e.errno != errno.ENXIO:  # nobody reads the FIFO yet
                raise
        assert time.monotonic() < deadline, "the gated consumer never waited on its gate"
        time.sleep(0.02)


def test_scraped_counters_match_a_scripted_run(tmp_path: Path) -> None:
    """Every counter of a scripted run equals what happened; health and readiness as specified."""
    markers = tmp_path / "markers"
    markers.mkdir()
    gate = markers / "gate"
    os.mkfifo(gate)
    env = {
        "E2E_DB": str(tmp_path / "db.sqlite3"),
        "E2E_CAPACITY": "5",
        "E2E_MARKER_DIR": str(markers),
    }
    port, mport = free_port(), free_port()
    args = [
        "--threads=1",
        "--graceful-timeout=20",
        "--metrics=tcp:%d:interface=127.0.0.1" % mport,
    ]
    with (
        TwistdProcess(PROJECT, "e2eproj.settings", args=args, port=port, env=env) as proc,
        ThreadPoolExecutor(max_workers=8) as pool,
        ExitStack() as stack,
    ):
        assert get(mport, "/healthz") == (200, b"ok\n")
        assert get(mport, "/readyz") == (200, b"ready\n")
        assert get(mport, "/")[0] == 404
        before = scrape(mport)
        assert metric(before, "chanserv_worker_threads") == 1
        assert metric(before, "chanserv_ready") == 1
        assert (
            metric(
                before, "chanserv_interface_messages_total", direction="in", channel="http.request"
            )
            == 0
        )

        # HTTP: five requests, and the metrics path on the public port (a 404 from Django).
        for n in range(5):
            assert get(port, "/whoami/?%d" % n)[0] == 200
        assert get(port, "/metrics")[0] == 404
        http_done = eventually(
            mport,
            lambda s: (
                metric(s, "chanserv_worker_messages_total", channel="http.request") == 6
                and metric(s, "chanserv_open_connections", kind="http") == 0
            ),
            "six requests handled",
        )
        assert (
            metric(
                http_done,
                "chanserv_interface_messages_total",
                direction="in",
                channel="http.request",
            )
            == 6
        )
        assert metric(http_done, "chanserv_sends_refused_total", channel="http.request") == 0

        # 20 WebSockets in one group; one message to the group reaches all 20.
        with ExitStack() as members:
            sockets = [
                members.enter_context(
                    connect("ws://127.0.0.1:%d/group/metrics/" % port, open_timeout=TIMEOUT)
                )
                for _ in range(20)
            ]
            sockets[0].send("to all")
            assert [ws.recv(timeout=TIMEOUT) for ws in sockets] == ["to all"] * 20
            open_ = eventually(
                mport,
                lambda s: (
                    metric(s, "chanserv_worker_messages_total", channel="websocket.receive") == 1
                ),
                "the group message handled",
            )
        assert metric(open_, "chanserv_websocket_handshakes_total", outcome="accepted") == 20
        assert metric(open_, "chanserv_websocket_handshakes_total", outcome="rejected") == 0
        assert metric(open_, "chanserv_open_connections", kind="websocket") == 20
        assert metric(open_, "chanserv_worker_messages_total", channel="websocket.connect") == 20
        assert (
            metric(
                open_,
                "chanserv_interface_messages_total",
                direction="in",
                channel="websocket.receive",
            )
            == 1
        )
        assert metric(open_, "chanserv_group_sends_total") == 1
        assert metric(open_, "chanserv_group_deliveries_total") == 20
        # 20 accepts and 20 group deliveries went out since the HTTP part.
        out = ("chanserv_interface_messages_total", "out", "reply")
        replies = metric(open_, out[0], direction=out[1], channel=out[2]) - metric(
            http_done, out[0], direction=out[1], channel=out[2]
        )
        assert replies == 40
        closed = eventually(
            mport,
            lambda s: (
                metric(s, "chanserv_worker_messages_total", channel="websocket.disconnect") == 20
                and metric(s, "chanserv_open_connections", kind="websocket") == 0
            ),
            "the 20 sockets gone",
        )
        assert metric(closed, "chanserv_messages_dropped_total", reason="gone") == 0
        assert (
            metric(
                closed,
                "chanserv_consumer_run_seconds_count",
                consumer="e2eproj.nodes.group_connect",
            )
            == 20
        )
        assert (
            metric(
                closed, "chanserv_consumer_exceptions_total", consumer="e2eproj.nodes.group_connect"
            )
            == 0
        )

        # A full channel: the one thread held, five requests fill http.request
        # (capacity 5), a sixth is refused with 503.
        held = pool.submit(get, port, "/gated/", 60)
        wait_for_file(markers / "started")
        waiting = [pool.submit(get, port, "/whoami/?w%d" % n, 60) for n in range(5)]
        eventually(
            mport,
            lambda s: (
                metric(
                    s, "chanserv_interface_messages_total", direction="in", channel="http.request"
                )
                == 12
            ),
            "five requests waiting",
        )
        assert get(port, "/whoami/?refused")[0] == 503
        release(gate)
        assert held.result(TIMEOUT)[0] == 200
        assert [f.result(TIMEOUT)[0] for f in waiting] == [200] * 5
        full = scrape(mport)
        assert metric(full, "chanserv_sends_refused_total", channel="http.request") == 1
        assert metric(full, "chanserv_layer_channel_full_total") == 1
        assert (
            metric(
                full, "chanserv_interface_messages_total", direction="in", channel="http.request"
            )
            == 13
        )

        # A graceful stop: /readyz falls to 503 while a request is in flight
        # and a WebSocket is open; /healthz stays 200 until the end.
        (markers / "started").unlink()
        echo = stack.enter_context(connect("ws://127.0.0.1:%d/echo/" % port, open_timeout=TIMEOUT))
        held = pool.submit(get, port, "/gated/", 60)
        wait_for_file(markers / "started")
        assert get(mport, "/readyz")[0] == 200
        assert proc.proc is not None
        proc.proc.terminate()
        deadline = time.monotonic() + TIMEOUT
        while (status := get(mport, "/readyz"))[0] != 503:
            assert time.monotonic() < deadline, "/readyz never fell"
            time.sleep(0.02)
        assert b"draining" in status[1]
        assert get(mport, "/healthz") == (200, b"ok\n")
        echo.close()  # closed by the server with 1001 already
        release(gate)
        assert held.result(TIMEOUT)[0] == 200
        assert proc.proc.wait(TIMEOUT) == 0
    assert "Traceback" not in proc.output()


def test_readiness_follows_redis(tmp_path: Path) -> None:
    """With the Redis layer, /readyz is 503 while Redis is down and 200 again once it is back."""
    from tests.e2e.redis_support import Cluster, stop_cleanly, wait_for

    cluster = Cluster(tmp_path)
    try:
        mport = free_port()
        node = cluster.node("all", "--threads=2", "--metrics=tcp:%d:interface=127.0.0.1" % mport)
        node.start()
        wait_for(lambda: get(mport, "/readyz")[0] == 200, what="ready with Redis up")
        assert get(mport, "/healthz")[0] == 200
        assert node.port is not None
        assert get(node.port, "/whoami/?redis")[0] == 200
        sent = metric(scrape(mport), "chanserv_layer_send_seconds_count")
        assert sent >= 1, "http.request went to Redis and back"
        cluster.redis.stop()
        status = wait_for(
            lambda: (reply := get(mport, "/readyz"))[0] == 503 and reply,
            what="not ready with Redis down",
        )
        assert b"layer unreachable" in status[1]
        assert get(mport, "/healthz")[0] == 200, "alive all the same"
        assert 0.0 in [
            value for (name, _), value in scrape(mport).items() if name == "chanserv_redis_up"
        ]
        cluster.redis.start()
        wait_for(lambda: get(mport, "/readyz")[0] == 200, timeout=30, what="ready again")
        samples = scrape(mport)
        assert (
            sum(v for (n, _), v in samples.items() if n == "chanserv_redis_reconnects_total") >= 1
        )
        assert sum(v for (n, _), v in samples.items() if n == "chanserv_redis_up") >= 1
        stop_cleanly(node)
    finally:
        cluster.close()
