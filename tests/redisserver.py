"""
A real ``redis-server`` for tests: started on a free port in a temporary
directory, with persistence off, and stopped again.

::

    server = RedisServer()
    server.start()          # waits until it answers PING
    server.url              # "redis://127.0.0.1:<port>/0"
    server.cli("INFO", "commandstats")
    server.freeze(); server.thaw()   # SIGSTOP / SIGCONT
    server.kill()           # SIGKILL, as a crash
    server.restart()        # same port, empty data set
    server.stop()

A server that was never started (or was stopped) leaves its port unused:
that is "Redis is down" for the fault tests.  Nothing here assumes a Redis
already running on the machine.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

__all__ = ["REDIS_CLI", "REDIS_SERVER", "RedisServer", "free_port"]

# 1700000000.123456 [0 127.0.0.1:53422] "EVALSHA" "..." -- or [0 lua] for scripts
_MONITOR_LINE = re.compile(r'^\S+ \[\d+ (\S+)\] "([^"]+)"')

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """
    One ``redis-server`` process on 127.0.0.1.

    :param port: the port to use; a free one if None.  The port is kept
        across :meth:`restart`, so clients can reconnect to the same address.
    :param args: more ``redis-server`` options, e.g. ``["--requirepass", "x"]``.
    :param password: what ``cli`` and the readiness check log in with.
    """

    def __init__(
        self, port: int | None = None, args: list[str] | None = None, password: str | None = None
    ) -> None:
        self.port = port if port is not None else free_port()
        self.args = list(args or [])
        self.password = password
        self.dir = tempfile.mkdtemp(prefix="chanserv-redis-")
        self.process: subprocess.Popen[bytes] | None = None
        self.frozen = False

    @property
    def url(self) -> str:
        return "redis://127.0.0.1:%d/0" % (self.port,)

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it answers PING."""
        if self.process is not None:
            raise RuntimeError("redis-server is already running on port %d" % (self.port,))
        log = open(os.path.join(self.dir, "redis.log"), "ab")
        try:
            self.process = subprocess.Popen(
                [
                    REDIS_SERVER,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    self.dir,
                    "--daemonize",
                    "no",
                    *self.args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError(
                    "redis-server exited at start-up on port %d; see %s/redis.log"
                    % (self.port, self.dir)
                )
            if self._pings():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("redis-server on port %d did not answer in %ss" % (self.port, timeout))

    def _pings(self) -> bool:
        try:
            return self.cli("PING") == "PONG"
        except (subprocess.SubprocessError, OSError):
            return False

    def stop(self) -> None:
        """Stop the server (thawing it first if frozen); the data is lost."""
        process, self.process = self.process, None
        if process is None:
            return
        if self.frozen:
            self.thaw_process(process)
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self.process.pid if self.process is not None else None

    def kill(self) -> None:
        """SIGKILL the server (as a crash would): no clean shutdown."""
        process, self.process = self.process, None
        if process is None:
            return
        process.kill()  # signals this process's own pid only
        process.wait(10)
        self.frozen = False

    def restart(self) -> None:
        """Stop and start again on the same port."""
        self.stop()
        self.start()

    def freeze(self) -> None:
        """SIGSTOP the server: connections stay open, nothing is answered."""
        if self.process is None:
            raise RuntimeError("redis-server is not running")
        self.process.send_signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        """SIGCONT a frozen server."""
        if self.process is not None:
            self.thaw_process(self.process)

    def thaw_process(self, process: subprocess.Popen[bytes]) -> None:
        process.send_signal(signal.SIGCONT)
        self.frozen = False

    def cli(self, *args: str, db: int = 0) -> str:
        """Run one command with ``redis-cli``; its output, stripped."""
        login = ["--no-auth-warning", "-a", self.password] if self.password is not None else []
        result = subprocess.run(
            [REDIS_CLI, "-p", str(self.port), "-n", str(db), *login, "--raw", *args],
            capture_output=True,
            timeout=10,
            check=True,
        )
        return result.stdout.decode("utf-8", "replace").strip()

    def keys(self, pattern: str = "*", db: int = 0) -> list[str]:
        """The keys matching ``pattern`` (SCAN, so it's fine on any size)."""
        output = self.cli("--scan", "--pattern", pattern, db=db)
        return sorted(line for line in output.splitlines() if line)

    def command_calls(self) -> dict[str, int]:
        """``INFO commandstats`` as {command: calls}."""
        calls = {}
        for line in self.cli("INFO", "commandstats").splitlines():
            if line.startswith("cmdstat_"):
                name, _, rest = line.partition(":")
                fields = dict(item.split("=", 1) for item in rest.split(","))
                calls[name[len("cmdstat_") :]] = int(fields["calls"])
        return calls

    @contextlib.contextmanager
    def monitor(self) -> Iterator[list[str]]:
        """
        Collect, with ``MONITOR``, the commands clients send inside the
        ``with`` block (lower-case names; commands run by scripts are left
        out, as they are no round trips).
        """
        login = ["--no-auth-warning", "-a", self.password] if self.password is not None else []
        proc = subprocess.Popen(
            [REDIS_CLI, "-p", str(self.port), *login, "monitor"], stdout=subprocess.PIPE
        )
        assert proc.stdout is not None
        try:
            if proc.stdout.readline().strip() != b"OK":
                raise RuntimeError("redis-cli monitor did not start")
            commands: list[str] = []
            yield commands
            self.cli("ECHO", "chanserv-monitor-end")
            for line in proc.stdout:
                if b"chanserv-monitor-end" in line:
                    break
                match = _MONITOR_LINE.match(line.decode("utf-8", "replace"))
                if match and match.group(1) != "lua":
                    commands.append(match.group(2).lower())
        finally:
            proc.kill()
            proc.wait()

    def cleanup(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
