"""
A real Redis Sentinel set-up for tests: a master ``redis-server``, a
replica of it (``--replicaof``) and three ``redis-sentinel`` processes
watching them, all on free ports of 127.0.0.1 with their files in a
temporary directory, and stopped by pid.  Failures are detected after
``down_after`` seconds (1 by default), so a failover takes a few seconds.

::

    cluster = SentinelCluster()
    cluster.start()                  # waits until the sentinels agree
    hosts = [cluster.hosts_entry()]  # {"sentinels": [...], "master_name": ...}
    old = cluster.master_address()   # ("127.0.0.1", port), as the sentinels say
    cluster.kill_master()            # SIGKILL: the sentinels fail over
    new = cluster.wait_for_failover(old)
    cluster.cleanup()
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from typing import Any

from tests.redisserver import REDIS_CLI, RedisServer, free_port

__all__ = ["REDIS_SENTINEL", "SentinelCluster", "SentinelProcess"]

REDIS_SENTINEL = shutil.which("redis-sentinel") or "/usr/bin/redis-sentinel"


def _fields(output: str) -> dict[str, str]:
    lines = output.splitlines()
    return dict(zip(lines[::2], lines[1::2], strict=False))


class SentinelProcess:
    """One ``redis-sentinel`` watching ``master_name`` at a master's port."""

    def __init__(
        self,
        directory: str,
        master_name: str,
        master_port: int,
        quorum: int,
        down_after_ms: int,
        failover_timeout_ms: int,
    ) -> None:
        self.port = free_port()
        self.master_name = master_name
        self.dir = os.path.join(directory, "sentinel-%d" % self.port)
        os.mkdir(self.dir)
        # The sentinel rewrites its configuration file: it must be its own.
        self.config = os.path.join(self.dir, "sentinel.conf")
        with open(self.config, "w") as f:
            f.write(
                "\n".join(
                    [
                        "port %d" % self.port,
                        "bind 127.0.0.1",
                        "daemonize no",
                        'dir "%s"' % self.dir,
                        "sentinel monitor %s 127.0.0.1 %d %d" % (master_name, master_port, quorum),
                        "sentinel down-after-milliseconds %s %d" % (master_name, down_after_ms),
                        "sentinel failover-timeout %s %d" % (master_name, failover_timeout_ms),
                        "sentinel parallel-syncs %s 1" % (master_name,),
                        "",
                    ]
                )
            )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(os.path.join(self.dir, "sentinel.log"), "ab")
        try:
            self.process = subprocess.Popen(
                [REDIS_SENTINEL, self.config], stdout=log, stderr=subprocess.STDOUT
            )
        finally:
            log.close()

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            [REDIS_CLI, "-p", str(self.port), "--raw", *args],
            capture_output=True,
            timeout=10,
            check=True,
        )
        return result.stdout.decode("utf-8", "replace").strip()

    def master_state(self) -> dict[str, str]:
        """``SENTINEL MASTER`` as a dict ({} if it does not answer yet)."""
        try:
            return _fields(self.cli("SENTINEL", "MASTER", self.master_name))
        except (subprocess.SubprocessError, OSError):
            return {}

    def master_address(self) -> tuple[str, int] | None:
        try:
            lines = self.cli("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name).split()
        except (subprocess.SubprocessError, OSError):
            return None
        return (lines[0], int(lines[1])) if len(lines) == 2 else None

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()  # this process's own pid
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


class SentinelCluster:
    """
    A master, a replica and ``sentinels`` sentinels (quorum 2).

    :param down_after: seconds before a silent master is considered down.
    :param failover_timeout: the sentinels' ``failover-timeout``, seconds.
    """

    def __init__(
        self,
        master_name: str = "mymaster",
        sentinels: int = 3,
        down_after: float = 1.0,
        failover_timeout: float = 3.0,
    ) -> None:
        self.master_name = master_name
        self.dir = tempfile.mkdtemp(prefix="chanserv-sentinel-")
        self.master = RedisServer()
        self.replica = RedisServer(args=["--replicaof", "127.0.0.1", str(self.master.port)])
        self.servers = {self.master.port: self.master, self.replica.port: self.replica}
        self.sentinels = [
            SentinelProcess(
                self.dir,
                master_name,
                self.master.port,
                quorum=2,
                down_after_ms=int(down_after * 1000),
                failover_timeout_ms=int(failover_timeout * 1000),
            )
            for _ in range(sentinels)
        ]

    def start(self, timeout: float = 30.0) -> None:
        """Start everything; return once the sentinels know each other and the replica."""
        self.master.start()
        self.replica.start()
        self._wait(
            lambda: "master_link_status:up" in self.replica.cli("INFO", "replication"),
            timeout,
            "the replica to sync",
        )
        for sentinel in self.sentinels:
            sentinel.start()
        others = str(len(self.sentinels) - 1)

        def agreed() -> bool:
            states = [s.master_state() for s in self.sentinels]
            return all(
                st.get("num-other-sentinels") == others and st.get("num-slaves") == "1"
                for st in states
            )

        self._wait(agreed, timeout, "the sentinels to discover each other and the replica")

    @staticmethod
    def _wait(condition: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError("timed out waiting for %s" % (what,))
            time.sleep(0.05)

    def hosts_entry(self, **extra: Any) -> dict[str, Any]:
        """The layer's ``hosts`` entry for this service (one shard)."""
        return {
            "sentinels": [("127.0.0.1", s.port) for s in self.sentinels],
            "master_name": self.master_name,
            **extra,
        }

    def master_address(self) -> tuple[str, int] | None:
        """The master, as the first sentinel that answers names it."""
        for sentinel in self.sentinels:
            address = sentinel.master_address()
            if address is not None:
                return address
        return None

    def server_at(self, port: int) -> RedisServer:
        return self.servers[port]

    def kill_master(self) -> tuple[str, int]:
        """SIGKILL the current master; its address."""
        address = self.master_address()
        assert address is not None, "no sentinel names a master"
        self.server_at(address[1]).kill()
        return address

    def wait_for_failover(self, old: tuple[str, int], timeout: float = 30.0) -> tuple[str, int]:
        """Wait until every sentinel names a master other than ``old``; it."""

        def moved() -> bool:
            named = {s.master_address() for s in self.sentinels}
            return len(named) == 1 and None not in named and old not in named

        self._wait(moved, timeout, "the sentinels to fail over from %s:%d" % old)
        address = self.master_address()
        assert address is not None
        return address

    def cleanup(self) -> None:
        """Stop every process (by pid) and remove the files."""
        for sentinel in self.sentinels:
            sentinel.stop()
        for server in self.servers.values():
            server.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)
