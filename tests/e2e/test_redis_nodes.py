"""
End-to-end: chanserv scaled out over a real ``redis-server`` -- interface
nodes and worker nodes as separate ``twistd -n chanserv`` processes, a plain
Python process sending into the running site, ``--mode=all`` on Redis, and
the tutorial's ``manage.py runserver --noworker`` + ``manage.py runworker``.

The faults (a worker killed, Redis down or restarted, SIGTERM) are in
tests/e2e/test_redis_faults.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.e2e.harness import REPO, TwistdProcess, free_port
from tests.e2e.redis_support import (
    PROJECT,
    SETTINGS,
    TIMEOUT,
    Cluster,
    chat_round,
    http_get,
    interrupt,
    recv_until,
    start_all,
    stop_cleanly,
    wait_for,
    ws_connect,
)


class Site(NamedTuple):
    cluster: Cluster
    interface_a: TwistdProcess
    interface_b: TwistdProcess
    worker_1: TwistdProcess
    worker_2: TwistdProcess

    @property
    def port_a(self) -> int:
        assert self.interface_a.port is not None
        return self.interface_a.port

    @property
    def port_b(self) -> int:
        assert self.interface_b.port is not None
        return self.interface_b.port


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """Redis, two interface nodes and two worker nodes, all separate processes."""
    cluster = Cluster(tmp_path_factory.mktemp("redis-site"))
    try:
        nodes = Site(
            cluster,
            cluster.node("interface"),
            cluster.node("interface"),
            cluster.node("worker", "--threads=2"),
            cluster.node("worker", "--threads=2"),
        )
        start_all(nodes[1:])
        yield nodes
        for proc in nodes[1:]:
            out = stop_cleanly(proc)
            assert "RedisChannelLayer" in out
    finally:
        cluster.close()


def pid(proc: TwistdProcess) -> int:
    assert proc.proc is not None
    return proc.proc.pid


def test_one_interface_two_workers_serve_http_and_the_chat(site: Site) -> None:
    """Over Redis, one interface and two workers serve views, both workers taking requests.

    The chat works between two sockets on the interface node.
    """
    port = site.port_a
    # A Django view, run by a worker process.
    assert http_get(port, "/hello/")[:2] == (200, "Hello world")
    # A consumer: each request gets its own token back, and both workers
    # take requests (whichever's blocking pop is first in line).
    workers = {pid(site.worker_1), pid(site.worker_2)}
    served: set[int] = set()

    def both_workers_answered() -> bool:
        token = "t%d" % len(served)
        reply = http_get(port, "/whoami/?" + token)
        assert reply.status == 200, reply
        answered_token, pid = reply.body.split()
        assert answered_token == token
        served.add(int(pid))
        return served == workers

    wait_for(both_workers_answered, what="both workers to answer /whoami/")
    # The tutorial's Groups chat: two clients on one interface node.
    with ws_connect(port, "/chat/") as one, ws_connect(port, "/chat/") as two:
        chat_round([one, two], "same node")


def test_chat_across_two_interface_nodes(site: Site) -> None:
    """Chat messages reach sockets on two different interface nodes, both ways."""
    with (
        ws_connect(site.port_a, "/chat/") as on_a,
        ws_connect(site.port_b, "/chat/") as on_b,
        ws_connect(site.port_b, "/chat/") as also_on_b,
    ):
        chat_round([on_a, on_b, also_on_b], "across")
        chat_round([on_b, on_a, also_on_b], "again")


def test_plain_python_process_sends_to_a_group_and_a_channel(site: Site) -> None:
    """
    A script with no reactor running (as from cron, a Celery task): the
    layer's synchronous face runs a reactor in a daemon thread.  The group
    message goes straight to the sockets; the channel message goes through a
    worker (``e2e.forward`` -> ``Group("chat")``).
    """
    script = (
        "import django\n"
        "django.setup()\n"
        "from twisted.internet import reactor\n"
        "assert not reactor.running\n"
        "from chanserv import Channel, Group\n"
        "Group('chat').send({'text': 'to the group from a script'})\n"
        "Channel('e2e.forward').send({'group': 'chat', 'text': 'via a channel from a script'})\n"
        "print('sent')\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PROJECT), str(REPO)]))
    env.update(site.cluster.env(DJANGO_SETTINGS_MODULE=SETTINGS))
    with ws_connect(site.port_a, "/chat/") as on_a, ws_connect(site.port_b, "/chat/") as on_b:
        result = subprocess.run(
            [sys.executable, "-c", script],
            env=env,
            cwd=site.cluster.workdir,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout == "sent\n"
        for client in (on_a, on_b):
            received = recv_until(client, "via a channel from a script")
            # Sent in this order from one thread; the second took a worker hop.
            assert received == ["to the group from a script", "via a channel from a script"]


def test_mode_all_on_redis_serves_everything_in_one_process(tmp_path: Path) -> None:
    """--mode=all on Redis serves views, consumers, chat and echo in one process."""
    cluster = Cluster(tmp_path)
    try:
        node = cluster.node("all", "--threads=2")
        start_all([node])
        assert node.port is not None
        assert "mode=all, layer='default' (RedisChannelLayer)" in node.output()
        assert http_get(node.port, "/hello/")[:2] == (200, "Hello world")
        reply = http_get(node.port, "/whoami/?solo")
        assert reply[:2] == (200, "solo %d" % pid(node))
        with ws_connect(node.port, "/chat/") as one, ws_connect(node.port, "/chat/") as two:
            chat_round([one, two], "all in one")
        with ws_connect(node.port, "/echo/") as echo:
            echo.send("ping")
            assert echo.recv(TIMEOUT) == "ping %d" % pid(node)
        # All of it went through Redis (the layer's scripts ran there).
        assert cluster.redis.command_calls().get("evalsha", 0) > 0
        stop_cleanly(node)
    finally:
        cluster.close()


def test_runserver_noworker_and_runworker_over_redis(tmp_path: Path) -> None:
    """runserver --noworker plus runworker over Redis serve views and chat; SIGINT exits 0.

    The tutorial's commands: ``runserver --noworker`` plus ``runworker``.
    """
    cluster = Cluster(tmp_path)
    try:
        port = free_port()
        worker = cluster.manage("runworker", "--threads=2")
        server = cluster.manage("runserver", "--noreload", "--noworker", "127.0.0.1:%d" % port)

        def served() -> bool:
            assert server.poll() is None and worker.poll() is None
            try:
                return http_get(port, "/hello/", timeout=2).status == 200
            except OSError:  # not listening yet
                return False

        wait_for(served, timeout=30, what="runserver + runworker to answer /hello/")
        reply = http_get(port, "/whoami/?tutorial")
        assert reply[:2] == (200, "tutorial %d" % worker.pid)
        with ws_connect(port, "/chat/") as one, ws_connect(port, "/chat/") as two:
            chat_round([one, two], "tutorial")
        assert interrupt(server) == 0
        assert interrupt(worker) == 0
        server_log = cluster.log_of(server)
        worker_log = cluster.log_of(worker)
        assert "no workers" in server_log and "RedisChannelLayer" in server_log, server_log
        assert "Traceback" not in server_log + worker_log, server_log + worker_log
    finally:
        cluster.close()
