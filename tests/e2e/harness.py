"""
Run real ``twistd -n chanserv`` processes for end-to-end tests.

The process runs from the project's folder with the working tree first on
``PYTHONPATH``, so it serves the code under test; the plugin module is found
through the tree's ``twisted/plugins`` (the packaging test checks the
installed wheel separately).
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TWISTD = str(Path(sys.executable).with_name("twistd"))


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TwistdProcess:
    """
    One ``twistd -n chanserv`` process.

    ``start()`` waits until ``ready_text`` appears in its log (and, when a
    port is given, until the port accepts connections); ``stop()`` sends
    SIGTERM and returns the exit code.  The combined log is in ``output()``.
    """

    def __init__(
        self,
        project_dir: Path,
        settings: str,
        args: Sequence[str] = (),
        port: int | None = None,
        env: dict[str, str] | None = None,
        ready_text: str = "chanserv ready",
    ) -> None:
        self.project_dir = Path(project_dir)
        self.port = port
        self.ready_text = ready_text
        self.logfile = tempfile.NamedTemporaryFile(
            prefix="chanserv-e2e-", suffix=".log", delete=False
        )
        # Processes not used as a context manager leave their log behind;
        # remove it when the test run ends.
        atexit.register(_unlink_quietly, self.logfile.name)
        cmd = [TWISTD, "-n", "--pidfile=", "-l", "-", "chanserv", "--settings=" + settings]
        if port is not None:
            cmd += ["-p", str(port)]
        self.cmd = cmd + list(args)
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO)] + ([self.env["PYTHONPATH"]] if self.env.get("PYTHONPATH") else [])
        )
        self.env.pop("DJANGO_SETTINGS_MODULE", None)
        self.env["PYTHONUNBUFFERED"] = "1"
        if env:
            self.env.update(env)
        self.proc: subprocess.Popen[bytes] | None = None
        self._final_output: str | None = None

    def start(self, timeout: float = 30.0) -> TwistdProcess:
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=self.project_dir,
            env=self.env,
            stdout=self.logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    "twistd exited with %s before it was ready:\n%s"
                    % (self.proc.returncode, self.output())
                )
            if self.ready_text in self.output() and self._port_open():
                return self
            time.sleep(0.05)
        self.kill()
        raise RuntimeError("twistd was not ready within %ss:\n%s" % (timeout, self.output()))

    def _port_open(self) -> bool:
        if self.port is None:
            return True
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def run_to_exit(self, timeout: float = 30.0) -> int:
        """Run a process expected to exit by itself; return its exit code."""
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=self.project_dir,
            env=self.env,
            stdout=self.logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        return self.proc.wait(timeout)

    def output(self) -> str:
        if self._final_output is not None:
            return self._final_output
        return Path(self.logfile.name).read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait; returns the exit code (kills after timeout)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> TwistdProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
        self._final_output = self.output()
        try:
            os.unlink(self.logfile.name)
        except OSError:
            pass
