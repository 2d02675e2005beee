#!/usr/bin/env python3
"""echo_cpu - server CPU per WebSocket echo round trip, chanserv against the peer.

Run by hand, never as a test: the figures depend on the machine and on what
else runs on it, so nothing here asserts a time or a rate.

What it measures, for each server in turn (a fresh server process per run):

- round trips per second of the harness's load generator in echo mode
  (``wsload.py echo``: closed loop, 50 clients by default, ~64-byte text
  messages, as ``run_anchors.py``'s echo test);
- the server's CPU (utime + stime from ``/proc``) per round trip, split into
  the main thread (the reactor for chanserv, the event loop for the peer) and
  every other thread (chanserv's worker threads), read per thread from
  ``/proc/PID/task/TID/stat`` with the names from ``.../comm``;
- with ``--layer redis``, Redis's CPU per round trip as well, ``total`` (the
  server's and Redis's), and from Redis's ``INFO commandstats`` (after a
  ``CONFIG RESETSTAT`` just before the window: the statistics of a Redis
  that was already running are reset) the commands per round trip
  (``cmd/rt``), the EVALSHA calls per round trip (``esha/rt``) and the
  Redis us spent in them per round trip (``esha_us``; a script's time
  includes the commands it calls, which commandstats also counts on their
  own); ``--json`` gives every command's figures (``redis_commands``);
- with ``--workers N`` (``--layer redis`` only), chanserv as one interface
  process and N worker processes: ``us/rt`` is then all of them, ``main``
  and ``other`` the interface's threads, ``iface`` the interface process and
  ``w1`` .. ``wN`` each worker process (``processes`` in ``--json``, with
  their threads), and ``win`` the sum over all of them;
- the time the server's threads spent runnable but waiting for a core, per
  round trip (``runq``, from ``/proc/PID/task/TID/schedstat``; with
  ``--layer redis`` Redis's own as ``r.runq``), and the share of the
  machine's CPU time that was idle in the window (``idle%``): with a
  closed loop of clients, time spent waiting for a core is part of every
  round trip;
- the client's RTT p50/p99 and its own CPU per round trip; ``xcl``, the
  servers' CPU per round trip (Redis's included) divided by the client's:
  the client does the same work per round trip whatever the server, so
  this figure moves far less than the others when the machine's speed
  drifts between runs; and how many cores other processes on the machine
  used during the window. A window in which they used more than
  ``--max-others`` cores (0.15) is disturbed and is run again, up to
  ``--max-tries`` (3) times; the table shows every attempt, the summary
  the last one.

The servers:

- chanserv: ``twistd -n --pidfile= -l - chanserv --settings=proj.settings -v 0
  -b 127.0.0.1 -p PORT`` in ``bench/proj`` with ``PYTHONPATH`` = this
  repository and ``CHANNEL_LAYER`` = memory (default) or redis; with
  ``--workers N``, that command plus ``--mode=interface``, and N times the
  same command without ``-b``/``-p`` plus ``--mode=worker`` (same folder and
  environment);
- the peer: uvicorn + Channels 4 from the harness's ``modern/`` folder,
  started as ``run_anchors.py``'s ``modern-uvicorn-memory`` (or
  ``-redis``) configuration starts it.

Each run: start the server on a free port, wait until the port accepts (with
``--workers``, 2 s more for the workers to subscribe), run wsload for a
warm-up (``--warmup`` s), then run wsload again for the measured window (``--duration`` s). The per-thread CPU is read just before
and just after the measured wsload run; the round trips and the window are
that run's own count and seconds. The CPU therefore includes the measured
run's 50 WebSocket handshakes and closes (well under 1 % of the total);
the ``win`` column is the process CPU wsload itself read over the
round-trip loop only (``--server-pid``), for comparison.

How to run (the harness folder is the one built as ``../shared/bench/HOWTO.md``
and ``bench/README.md`` describe; it holds ``modern/``, ``benchenv/`` and
``bench/wsload.py``), from the repository root::

    python3 bench/echo_cpu.py --harness /path/to/harness
    python3 bench/echo_cpu.py --harness /path/to/harness --reps 3
    python3 bench/echo_cpu.py --harness /path/to/harness --servers chanserv --json
    python3 bench/echo_cpu.py --harness /path/to/harness --layer redis
    python3 bench/echo_cpu.py --harness /path/to/harness --layer redis --workers 2

``--reps N`` alternates the servers (chanserv, peer, chanserv, peer, ...),
and the summary gives the medians and the ratio chanserv / peer, so compare
figures from one invocation only. Keep the machine otherwise idle: the
server and the load generator share its cores.

Standard library only (Python 3.10+); the servers and the load generator run
from their own virtual environments.
"""

import argparse
import json
import os
import resource
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")
WORKER_SETTLE_S = 2.0  # with --workers: wait after the interface's port accepts


# ------------------------------------------------------------------ /proc
def proc_cpu(pid):
    """utime + stime of a whole process (exited threads included), seconds."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def thread_cpu(pid):
    """{tid: (name, seconds)} for every live thread of pid."""
    out: dict = {}
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for t in tids:
        base = "/proc/%d/task/%s/" % (pid, t)
        try:
            with open(base + "stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(base + "comm") as f:
                name = f.read().strip()
        except OSError:  # the thread ended meanwhile
            continue
        out[int(t)] = (name, (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return out


def run_delay(pid):
    """Seconds the live threads of pid have spent runnable but waiting for a
    core (the second field of ``/proc/PID/task/TID/schedstat``), or None."""
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return None
    total = 0
    for t in tids:
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, t)) as f:
                total += int(f.read().split()[1])
        except (OSError, IndexError, ValueError):  # ended meanwhile, or no schedstats
            continue
    return total / 1e9


def snapshot(pid):
    return {"total": proc_cpu(pid), "threads": thread_cpu(pid), "run_delay": run_delay(pid)}


def machine_busy():
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def children_cpu():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def self_cpu():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def delta(before, after):
    """after - before, or None when either reading is missing."""
    return None if before is None or after is None else after - before


def thread_delta(pid, s0, s1):
    """Main-thread and other-thread CPU seconds of pid between two snapshots."""
    t0, t1 = s0["threads"], s1["threads"]
    main = t1.get(pid, ("", 0.0))[1] - t0.get(pid, ("", 0.0))[1]
    total = s1["total"] - s0["total"]
    threads = []
    for tid, (name, sec) in t1.items():
        d = sec - t0.get(tid, (name, 0.0))[1]  # a thread born in the window counts whole
        if d > 0:
            threads.append({"tid": tid, "name": name, "main": tid == pid, "cpu_s": round(d, 3)})
    threads.sort(key=lambda x: -x["cpu_s"])
    # "other" comes from the process total, so threads that ended in the window count too
    return {"total_s": total, "main_s": main, "other_s": total - main, "threads": threads}


# --------------------------------------------------------------- processes
def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_accepts(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def redis_ping(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def redis_pid(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"INFO server\r\n")
            data = b""
            while b"process_id:" not in data or not data.endswith(b"\r\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    for line in data.decode("latin-1").splitlines():
        if line.startswith("process_id:"):
            return int(line.split(":", 1)[1])
    return None


def redis_call(port, command):
    """Send one inline command to the Redis on port; its status or bulk reply as text."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(command.encode("ascii") + b"\r\n")
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                raise OSError("redis closed the connection during %s" % command)
            data += chunk
        head, rest = data.split(b"\r\n", 1)
        if head[:1] == b"-":
            raise RuntimeError("redis %s: %s" % (command, head[1:].decode("latin-1")))
        if head[:1] != b"$":
            return head[1:].decode("latin-1")
        size = int(head[1:])
        while len(rest) < size + 2:
            chunk = s.recv(65536)
            if not chunk:
                raise OSError("redis closed the connection during %s" % command)
            rest += chunk
        return rest[:size].decode("latin-1")


# this script's own commands, left out of the counts
OWN_COMMANDS = ("info", "config|resetstat", "config")


def redis_commandstats(port):
    """{command: (calls, usec)} from INFO commandstats, this script's own commands left out."""
    out = {}
    for line in redis_call(port, "INFO commandstats").splitlines():
        if not line.startswith("cmdstat_"):
            continue
        name, _, fields = line[len("cmdstat_") :].partition(":")
        if name in OWN_COMMANDS:
            continue
        kv = dict(f.split("=", 1) for f in fields.split(",") if "=" in f)
        out[name] = (int(kv.get("calls", 0)), int(kv.get("usec", 0)))
    return out


class Server:
    """A server: one process, or (chanserv with --workers) an interface and N workers."""

    def __init__(self, name, argv, cwd, env, log_dir, worker_argv=None, workers=0):
        self.name, self.argv, self.cwd, self.env = name, argv, cwd, env
        self.log_dir = log_dir
        self.worker_argv, self.workers = worker_argv, workers
        self.proc = None
        self.log_path = None
        self.worker_procs = []  # [(log path, Popen)]

    def spawn(self, argv, port, log_path):
        env = dict(os.environ)
        env.update(self.env)
        with open(log_path, "w") as log:
            return subprocess.Popen(
                [a.format(port=port) for a in argv],
                cwd=self.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def start(self, port, timeout=60.0):
        """Start every process; return the pid of the one on the port once it accepts."""
        self.log_path = os.path.join(self.log_dir, "%s-%d.log" % (self.name, port))
        self.worker_procs = []
        try:
            self.proc = self.spawn(self.argv, port, self.log_path)
            for i in range(1, self.workers + 1):
                path = os.path.join(self.log_dir, "%s-w%d-%d.log" % (self.name, i, port))
                self.worker_procs.append((path, self.spawn(self.worker_argv, port, path)))
            problem = self.wait_ready(port, timeout)
        except BaseException:
            self.stop()
            raise
        if problem is None:
            return self.proc.pid
        self.stop()
        raise RuntimeError(problem)

    def wait_ready(self, port, timeout):
        """None once the port accepts (and the workers had WORKER_SETTLE_S), else why not."""
        deadline = time.monotonic() + timeout
        while True:
            dead = self.dead()
            if dead:
                return dead
            if port_accepts(port):
                break
            if time.monotonic() >= deadline:
                return "%s did not accept on port %d; log %s:\n%s" % (
                    self.name,
                    port,
                    self.log_path,
                    log_tail(self.log_path),
                )
            time.sleep(0.1)
        if self.workers:
            # the workers subscribe to their channels after they start; give them that moment
            time.sleep(WORKER_SETTLE_S)
            return self.dead()
        return None

    def dead(self):
        """Why a process of this server has exited, or None while all run."""
        for label, path, p in [("", self.log_path, self.proc)] + [
            (" worker %d" % i, path, p) for i, (path, p) in enumerate(self.worker_procs, 1)
        ]:
            if p is not None and p.poll() is not None:
                return "%s%s exited (rc %s); log %s:\n%s" % (
                    self.name,
                    label,
                    p.returncode,
                    path,
                    log_tail(path),
                )
        return None

    def pids(self):
        """The pids of every process, the one on the port first."""
        assert self.proc is not None, "not started"
        return [self.proc.pid] + [p.pid for _, p in self.worker_procs]

    def stop(self, timeout=15.0):
        """SIGTERM every process still running, then kill those left after timeout s."""
        procs = [p for p in [self.proc] + [p for _, p in self.worker_procs] if p is not None]
        running = [p for p in procs if p.poll() is None]
        for p in running:
            p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in running:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)


def log_tail(path, n=30):
    try:
        with open(path) as f:
            return "".join(f.readlines()[-n:])
    except (OSError, TypeError):
        return ""


def make_servers(a, log_dir):
    common = {"PYTHONUNBUFFERED": "1", "CHANNEL_LAYER": a.layer, "REDIS_PORT": str(a.redis_port)}
    chanserv = [
        a.twistd,
        "-n",
        "--pidfile=",
        "-l",
        "-",
        "chanserv",
        "--settings=proj.settings",
        "-v",
        "0",
    ]
    extra = shlex.split(a.chanserv_args)
    listen = ["-b", "127.0.0.1", "-p", "{port}"]
    if a.workers:
        # one interface process on the port, the consumers in a.workers worker processes
        worker = [*chanserv, "--mode=worker", *extra]
        chanserv = [*chanserv, *listen, "--mode=interface", *extra]
    else:
        worker = None
        chanserv = [*chanserv, *listen, *extra]
    # as run_anchors.py's modern-uvicorn-memory / modern-uvicorn-redis configurations
    uvicorn = [
        "../bin/uvicorn",
        "proj.asgi:application",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    return {
        "chanserv": Server(
            "chanserv",
            chanserv,
            os.path.join(REPO, "bench", "proj"),
            dict(common, PYTHONPATH=REPO),
            log_dir,
            worker_argv=worker,
            workers=a.workers,
        ),
        "peer": Server("peer", uvicorn, os.path.join(a.harness, "modern", "proj"), common, log_dir),
    }


def start_redis(port, log_dir):
    """A private redis-server on port, or None if one answers there already."""
    if redis_ping(port):
        return None
    p = subprocess.Popen(
        [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            log_dir,
            "--logfile",
            os.path.join(log_dir, "redis.log"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if redis_ping(port):
            return p
        if p.poll() is not None:
            break
        time.sleep(0.1)
    if p.poll() is None:
        p.terminate()
        p.wait(timeout=5)
    raise RuntimeError("redis-server did not start on port %d" % port)


# --------------------------------------------------------------------- load
def wsload(a, port, seconds, pids, label):
    cmd = [
        os.path.join(a.harness, "benchenv", "bin", "python"),
        os.path.join(a.harness, "bench", "wsload.py"),
        "echo",
        "--url",
        "ws://127.0.0.1:%d/echo/" % port,
        "-c",
        str(a.clients),
        "-d",
        str(seconds),
        "--label",
        label,
    ]
    for p in pids:
        cmd += ["--server-pid", str(p)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    lines = out.stdout.strip().splitlines()
    if out.returncode not in (0, 2) or not lines:
        raise RuntimeError("wsload failed (rc %d): %s" % (out.returncode, out.stderr[-2000:]))
    res = json.loads(lines[-1])
    if "echo" not in res:
        raise RuntimeError("wsload gave no echo result: %s" % lines[-1][:2000])
    return res


def wait_quiet(exclude_pids, limit, max_wait):
    """Wait (up to max_wait s) until processes other than ours use < limit cores."""
    deadline = time.monotonic() + max_wait
    while True:
        b0, c0 = machine_busy()
        own0 = sum(proc_cpu(p) or 0.0 for p in exclude_pids) + self_cpu()
        time.sleep(1.0)
        b1, c1 = machine_busy()
        own1 = sum(proc_cpu(p) or 0.0 for p in exclude_pids) + self_cpu()
        cores = os.cpu_count() or 1
        busy = (b1 - b0) / (c1 - c0) * cores if c1 > c0 else 0.0
        other = max(0.0, busy - (own1 - own0))
        if other < limit or time.monotonic() >= deadline:
            return round(other, 3)


def one_run(a, server, redis_pid_, rep):
    port = free_port()
    pid = server.start(port)
    try:
        pids = server.pids()
        label = "%s-r%d" % (server.name, rep)
        if a.warmup > 0:
            w = wsload(a, port, a.warmup, pids, label + "-warmup")
            if w.get("errors_total"):
                print("warning: warm-up errors %s" % w.get("errors"), file=sys.stderr)
        bg = wait_quiet(pids + ([redis_pid_] if redis_pid_ else []), 0.2, a.quiet_wait)
        if a.layer == "redis":
            redis_call(a.redis_port, "CONFIG RESETSTAT")
        s0 = {p: snapshot(p) for p in pids}
        r0 = proc_cpu(redis_pid_) if redis_pid_ else None
        rq0 = run_delay(redis_pid_) if redis_pid_ else None
        m0, ch0, self0 = machine_busy(), children_cpu(), self_cpu()
        t0 = time.monotonic()
        res = wsload(a, port, a.duration, pids, label)
        wall = time.monotonic() - t0
        s1 = {p: snapshot(p) for p in pids}
        r1 = proc_cpu(redis_pid_) if redis_pid_ else None
        rq1 = run_delay(redis_pid_) if redis_pid_ else None
        m1, ch1, self1 = machine_busy(), children_cpu(), self_cpu()
        cmdstats = redis_commandstats(a.redis_port) if a.layer == "redis" else None
    finally:
        server.stop()
    echo = res["echo"]
    n = echo["round_trips"]
    if not n:
        raise RuntimeError("%s: no round trips (%s)" % (server.name, res.get("errors")))
    deltas = [thread_delta(p, s0[p], s1[p]) for p in pids]
    d = deltas[0]  # the process on the port: main / other threads
    server_s = sum(x["total_s"] for x in deltas)
    client = ch1 - ch0
    cores = os.cpu_count() or 1
    # the share of the machine's CPU time that was busy in the window
    busy = (m1[0] - m0[0]) / (m1[1] - m0[1]) if m1[1] > m0[1] else None
    machine = busy * cores * wall if busy is not None else 0.0
    redis_s = delta(r0, r1)
    others = machine - server_s - client - (self1 - self0) - (redis_s or 0.0)
    waits = [delta(s0[p]["run_delay"], s1[p]["run_delay"]) for p in pids]
    runq = sum(waits) if None not in waits else None
    redis_runq = delta(rq0, rq1)
    idle = 100.0 * (1 - busy) if busy is not None else None
    wins = [(res.get("server") or {}).get(str(p), {}).get("cpu_s") for p in pids]
    win = sum(wins) if None not in wins else None
    us = 1e6 / n
    out = {
        "server": server.name,
        "rep": rep,
        "layer": a.layer,
        "clients": echo["connections"],
        "seconds": echo["seconds"],
        "round_trips": n,
        "rt_per_s": round(n / echo["seconds"], 1),
        "cpu_us_per_rt": round(server_s * us, 1),
        "main_us_per_rt": round(d["main_s"] * us, 1),
        "other_us_per_rt": round(d["other_s"] * us, 1),
        "window_us_per_rt": round(win * us, 1) if win is not None else None,
        "redis_us_per_rt": round(redis_s * us, 1) if redis_s is not None else None,
        "total_us_per_rt": round((server_s + redis_s) * us, 1) if redis_s is not None else None,
        "client_us_per_rt": round(client * us, 1),
        # The servers' CPU (and Redis's) in units of the load generator's CPU per
        # round trip: the client does the same work per round trip whatever the
        # server, so this ratio moves far less with the machine's speed.
        "cpu_per_client_cpu": round((server_s + (redis_s or 0.0)) / client, 3)
        if client > 0
        else None,
        "server_cores": round(server_s / wall, 3),
        "other_procs_cores": round(max(0.0, others) / wall, 3),
        "quiet_before_cores": bg,
        "runq_us_per_rt": round(runq * us, 1) if runq is not None else None,
        "redis_runq_us_per_rt": round(redis_runq * us, 1) if redis_runq is not None else None,
        "idle_pct": round(idle, 1) if idle is not None else None,
        "rtt_p50_ms": echo["rtt_ms"].get("p50"),
        "rtt_p99_ms": echo["rtt_ms"].get("p99"),
        "errors": res.get("errors_total"),
        "threads": d["threads"],
        "pid": pid,
    }
    if len(pids) > 1:
        # chanserv with --workers: the interface, then each worker, as a whole
        out["iface_us_per_rt"] = round(d["total_s"] * us, 1)
        for i, x in enumerate(deltas[1:], 1):
            out["w%d_us_per_rt" % i] = round(x["total_s"] * us, 1)
        out["processes"] = [
            {
                "role": "iface" if i == 0 else "w%d" % i,
                "pid": p,
                "cpu_us_per_rt": round(x["total_s"] * us, 1),
                "main_us_per_rt": round(x["main_s"] * us, 1),
                "other_us_per_rt": round(x["other_s"] * us, 1),
                "runq_us_per_rt": round(w * us, 1) if w is not None else None,
                "threads": x["threads"],
            }
            for i, (p, x, w) in enumerate(zip(pids, deltas, waits, strict=True))
        ]
    if cmdstats is not None:
        calls, usec = cmdstats.get("evalsha", (0, 0))
        out["redis_cmds_per_rt"] = round(sum(c for c, _ in cmdstats.values()) / n, 2)
        out["evalsha_per_rt"] = round(calls / n, 3)
        out["evalsha_us_per_rt"] = round(usec / n, 2)
        out["redis_commands"] = {
            name: {"calls_per_rt": round(c / n, 3), "us_per_rt": round(u / n, 2)}
            for name, (c, u) in sorted(cmdstats.items(), key=lambda kv: -kv[1][1])
        }
    return out


# ------------------------------------------------------------------ output
COLS = [
    ("server", "%-8s", "server"),
    ("rep", "%3s", "rep"),
    ("rt/s", "%8.0f", "rt_per_s"),
    ("us/rt", "%6.1f", "cpu_us_per_rt"),
    ("main", "%6.1f", "main_us_per_rt"),
    ("other", "%6.1f", "other_us_per_rt"),
    ("win", "%6.1f", "window_us_per_rt"),
    ("redis", "%6.1f", "redis_us_per_rt"),
    ("p50ms", "%6.2f", "rtt_p50_ms"),
    ("p99ms", "%6.2f", "rtt_p99_ms"),
    ("client", "%6.1f", "client_us_per_rt"),
    ("xcl", "%5.2f", "cpu_per_client_cpu"),
    ("others", "%6.2f", "other_procs_cores"),
    ("runq", "%6.1f", "runq_us_per_rt"),
    ("idle%", "%5.1f", "idle_pct"),
]


# with --layer redis, after the "redis" column
REDIS_COLS = [
    ("total", "%6.1f", "total_us_per_rt"),
    ("cmd/rt", "%6.2f", "redis_cmds_per_rt"),
    ("esha/rt", "%7.3f", "evalsha_per_rt"),
    ("esha_us", "%7.2f", "evalsha_us_per_rt"),
    ("r.runq", "%6.1f", "redis_runq_us_per_rt"),
]


def columns(redis, workers):
    """The table's columns: COLS, with the Redis ones and one per worker as they apply."""
    cols = []
    for col in COLS:
        if col[2] == "redis_us_per_rt":
            if redis:
                cols += [col, *REDIS_COLS]
            continue
        cols.append(col)
        if col[2] == "other_us_per_rt" and workers:
            cols.append(("iface", "%6.1f", "iface_us_per_rt"))
            cols += [("w%d" % i, "%6.1f", "w%d_us_per_rt" % i) for i in range(1, workers + 1)]
    return cols


def width_of(f):
    return int("".join(c for c in f.split(".")[0] if c.isdigit()) or 0)


def fmt_row(r, cols):
    cells = []
    for _head, f, key in cols:
        v = r.get(key)
        cells.append(("%" + str(width_of(f)) + "s") % "-" if v is None else f % v)
    return "  ".join(cells)


def header(cols):
    return "  ".join(
        (("%-" if key == "server" else "%") + str(width_of(f)) + "s") % head
        for head, f, key in cols
    )


def median_of(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.median(vals), 2) if vals else None


def summarise(runs_by_server, cols):
    out = {}
    keys = [k for _, _, k in COLS + cols if k not in ("server", "rep")]
    keys = list(dict.fromkeys(keys))
    for name, runs in runs_by_server.items():
        if runs:
            m = {k: median_of(runs, k) for k in keys}
            m.update(server=name, rep="med")
            out[name] = m
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--harness", required=True, help="harness folder (modern/, benchenv/, bench/)")
    ap.add_argument("--servers", default="chanserv,peer", help="comma list: chanserv, peer")
    ap.add_argument("--reps", type=int, default=1, help="runs per server, alternating")
    ap.add_argument("--clients", "-c", type=int, default=50, help="echo connections")
    ap.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds (0 = none)")
    ap.add_argument("--duration", "-d", type=float, default=10.0, help="measured seconds")
    ap.add_argument("--layer", choices=["memory", "redis"], default="memory")
    ap.add_argument(
        "--redis-port",
        type=int,
        default=int(os.environ.get("REDIS_PORT", "16379")),
        help="with --layer redis: started here unless a redis answers (default $REDIS_PORT "
        "or 16379)",
    )
    ap.add_argument("--twistd", default=os.path.join(REPO, ".venv", "bin", "twistd"))
    ap.add_argument("--chanserv-args", default="", help="extra chanserv options, one string")
    ap.add_argument(
        "--workers",
        type=int,
        default=0,
        help="with --layer redis: run chanserv as one --mode=interface process on the port "
        "and this many --mode=worker processes (0 = one process, --mode=all)",
    )
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=20.0,
        help="before each window, wait up to this many seconds for other processes to use "
        "< 0.2 cores (0 = do not wait)",
    )
    ap.add_argument(
        "--max-others",
        type=float,
        default=0.15,
        help="a window in which other processes used more cores than this is disturbed "
        "and run again",
    )
    ap.add_argument("--max-tries", type=int, default=3, help="attempts per run (disturbed)")
    ap.add_argument("--json", action="store_true", help="one JSON object per server")
    a = ap.parse_args(argv)
    # a SIGTERM to this script still stops the servers (the finally clauses below)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    a.harness = os.path.abspath(a.harness)
    servers = [s.strip() for s in a.servers.split(",") if s.strip()]
    bad = [s for s in servers if s not in ("chanserv", "peer")]
    if bad or not servers or a.reps < 1 or a.max_tries < 1:
        ap.error("--servers takes chanserv and/or peer; --reps and --max-tries >= 1")
    if a.workers < 0 or (a.workers and a.layer != "redis"):
        ap.error("--workers takes N >= 0, and N > 0 needs --layer redis")
    for path in ("benchenv/bin/python", "bench/wsload.py") + (
        ("modern/bin/uvicorn",) if "peer" in servers else ()
    ):
        if not os.path.exists(os.path.join(a.harness, path)):
            ap.error("the harness has no %s" % path)

    with tempfile.TemporaryDirectory(prefix="echo_cpu-") as log_dir:
        all_servers = make_servers(a, log_dir)
        redis_proc = start_redis(a.redis_port, log_dir) if a.layer == "redis" else None
        rpid = redis_pid(a.redis_port) if a.layer == "redis" else None
        runs: dict = {s: [] for s in servers}
        redis = a.layer == "redis"
        cols = columns(redis, a.workers)
        try:
            if not a.json:
                print(
                    "echo, %d clients, %.0f s warm-up + %.0f s measured, layer %s; CPU in us "
                    "per round trip (main = reactor / event-loop thread, win = process CPU "
                    "over wsload's loop only, client = load generator, others = cores used "
                    "by other processes)" % (a.clients, a.warmup, a.duration, a.layer),
                    flush=True,
                )
                if a.workers:
                    print(
                        "chanserv: 1 interface + %d worker processes; us/rt = all of them, "
                        "main / other = the interface's threads, iface = the interface, "
                        "w1.. = each worker" % a.workers,
                        flush=True,
                    )
                if redis:
                    print(
                        "total = server + redis; cmd/rt = Redis commands, esha/rt = EVALSHA "
                        "calls and esha_us = Redis us in EVALSHA, per round trip",
                        flush=True,
                    )
                print(header(cols), flush=True)
            for rep in range(1, a.reps + 1):
                for name in servers:
                    for attempt in range(1, a.max_tries + 1):
                        r = one_run(a, all_servers[name], rpid, rep)
                        r["attempt"] = attempt
                        r["disturbed"] = r["other_procs_cores"] > a.max_others
                        if not a.json:
                            print(fmt_row(r, cols) + ("  disturbed" if r["disturbed"] else ""))
                            sys.stdout.flush()
                        if not r["disturbed"]:
                            break
                    runs[name].append(r)
        finally:
            for s in all_servers.values():
                s.stop()
            if redis_proc is not None:
                redis_proc.terminate()
                redis_proc.wait(timeout=10)

    med = summarise(runs, cols)
    ratio = None
    if "chanserv" in med and "peer" in med:
        c, p = med["chanserv"], med["peer"]
        ratio = {
            "rt_per_s": round(c["rt_per_s"] / p["rt_per_s"], 3),
            "cpu_us_per_rt": round(c["cpu_us_per_rt"] / p["cpu_us_per_rt"], 3),
            "cpu_per_client_cpu": round(c["cpu_per_client_cpu"] / p["cpu_per_client_cpu"], 3)
            if c.get("cpu_per_client_cpu") and p.get("cpu_per_client_cpu")
            else None,
            "per_rep_rt_per_s": [
                round(x["rt_per_s"] / y["rt_per_s"], 3)
                for x, y in zip(runs["chanserv"], runs["peer"], strict=False)
            ],
        }
    if a.json:
        for name in servers:
            obj = {
                "server": name,
                "layer": a.layer,
                "workers": a.workers if name == "chanserv" else 0,
                "clients": a.clients,
                "warmup_s": a.warmup,
                "duration_s": a.duration,
                "median": {k: v for k, v in med[name].items() if k not in ("server", "rep")},
                "runs": runs[name],
            }
            if name == "chanserv" and ratio:
                obj["vs_peer"] = ratio
            print(json.dumps(obj), flush=True)
        return 0
    if a.reps > 1:
        print("medians over %d runs:" % a.reps)
        for name in servers:
            print(fmt_row(med[name], cols))
    for name in servers:
        last = runs[name][-1]
        for proc in last.get("processes") or [{"role": "", "threads": last["threads"]}]:
            print(
                "%s%s threads (last run, busiest first): %s"
                % (
                    name,
                    " " + proc["role"] if proc["role"] else "",
                    ", ".join(
                        "%s%s %.2fs" % (t["name"], "*" if t["main"] else "", t["cpu_s"])
                        for t in proc["threads"][:4]
                    ),
                )
            )
        if last.get("redis_commands"):
            print(
                "%s redis commands (last run, per round trip: calls, us): %s"
                % (
                    name,
                    ", ".join(
                        "%s %.2f %.1f" % (cmd, v["calls_per_rt"], v["us_per_rt"])
                        for cmd, v in list(last["redis_commands"].items())[:6]
                    ),
                )
            )
    dist = ["%s r%d" % (r["server"], r["rep"]) for v in runs.values() for r in v if r["disturbed"]]
    if dist:
        print("still disturbed after %d tries (kept): %s" % (a.max_tries, ", ".join(dist)))
    if ratio:
        print(
            "chanserv / peer: round trips/s %.2fx (per rep: %s), CPU per round trip %.2fx, "
            "in load-generator units (xcl) %s"
            % (
                ratio["rt_per_s"],
                ", ".join("%.2f" % x for x in ratio["per_rep_rt_per_s"]),
                ratio["cpu_us_per_rt"],
                "-"
                if ratio["cpu_per_client_cpu"] is None
                else "%.2fx" % ratio["cpu_per_client_cpu"],
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
