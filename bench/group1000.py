#!/usr/bin/env python3
"""group1000 - broadcast to one large group, bounded, loopback only.

Opens --members WebSockets (default 1000) to one room URL such as
ws://127.0.0.1:PORT/chat/ROOM/, with at most --connect-concurrency
handshakes in flight, plus one extra sender socket that is a member too.
After --settle seconds the sender sends one broadcast every --interval
seconds (default 0.1) for --duration seconds (default 10). The server
fans every text frame out to every member of the room, the sender
included.

Payloads follow wsload.py's chat mode: "RUNID|SENDER|SEQ|TIMESTAMP|PAD", with
TIMESTAMP the sender's perf_counter at send time (one clock: every socket
lives in this process). For every broadcast the script records when each
member received it and when the last one did. Receiving continues up to
--drain seconds after the last send, or until every broadcast has reached
every member.

Prints one JSON object on stdout: members, broadcasts sent, deliveries
expected/made and the delivered fraction, how many broadcasts reached every
member, the last-delivery latency per broadcast (p50/p90/p99/max, ms), the
per-delivery latency, connection errors and the closes seen (by close code).
Exit status 0, or 2 after the hard wall-clock stop (partial results).

Run with the load generator's venv (websockets >= 13; uvloop if present).
"""

import argparse
import asyncio
import ipaddress
import json
import math
import os
import random
import resource
import signal
import sys
import time
from urllib.parse import urlparse

import websockets
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

now = time.perf_counter  # one monotonic clock shared by every socket in this process


def pct(sorted_vals, p):
    if not sorted_vals:
        return None
    k = min(len(sorted_vals) - 1, max(0, round(p / 100.0 * (len(sorted_vals) - 1))))
    return sorted_vals[k]


def lat_summary(vals, points=(50, 90, 99)):
    """Percentiles of seconds, in milliseconds."""
    if not vals:
        return {"n": 0}
    s = sorted(vals)
    out = {"n": len(s), "min": round(s[0] * 1000, 3)}
    for p in points:
        out["p%d" % p] = round(pct(s, p) * 1000, 3)
    out["max"] = round(s[-1] * 1000, 3)
    out["mean"] = round(sum(s) / len(s) * 1000, 3)
    return out


def check_loopback(url):
    u = urlparse(url)
    if u.scheme not in ("ws", "wss"):
        sys.exit("group1000: URL must be ws:// or wss://")
    host = u.hostname or ""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    sys.exit("group1000: refusing non-loopback target %r (only 127.0.0.0/8, localhost, ::1)" % host)


def proc_snapshot(pid):
    rss = cpu = None
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        pass
    return {"rss": rss, "cpu_s": cpu}


def server_delta(s0, s1, seconds):
    out = {}
    for pid, a in s0.items():
        b = s1.get(pid, {})
        cpu = None
        if a["cpu_s"] is not None and b.get("cpu_s") is not None:
            cpu = b["cpu_s"] - a["cpu_s"]
        out[pid] = {
            "rss_bytes": b.get("rss"),
            "cpu_s": round(cpu, 3) if cpu is not None else None,
            "cpu_util": round(cpu / seconds, 3) if cpu is not None and seconds > 0 else None,
        }
    return out


def self_cpu():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class Counter(dict):
    def add(self, key, n=1):
        self[key] = self.get(key, 0) + n


async def open_many(args, n, errors, deadline):
    """Open n sockets, at most --connect-concurrency handshakes at a time."""
    sem = asyncio.Semaphore(args.connect_concurrency)
    conns, hs = [], []

    async def one(i):
        async with sem:
            remaining = deadline - now()
            if remaining <= 0:
                errors.add("connect_deadline")
                return
            t = now()
            try:
                ws = await asyncio.wait_for(
                    ws_connect(
                        args.url,
                        open_timeout=None,
                        close_timeout=2,
                        ping_interval=None,
                        max_size=2**20,
                        compression=None,
                        max_queue=None,
                    ),
                    timeout=min(args.open_timeout, remaining),
                )
            except asyncio.TimeoutError:
                errors.add("connect_timeout")
                return
            except Exception as e:  # every kind of failure is counted
                errors.add("connect:%s" % type(e).__name__)
                return
            hs.append(now() - t)
            conns.append((i, ws))

    await asyncio.gather(*(one(i) for i in range(n)))
    conns.sort(key=lambda c: c[0])
    return [ws for _, ws in conns], hs


async def close_all(conns, timeout=5.0):
    async def close(ws):
        try:
            await ws.close()
        except Exception:
            pass

    try:
        await asyncio.wait_for(asyncio.gather(*(close(ws) for ws in conns)), timeout)
    except asyncio.TimeoutError:
        for ws in conns:
            try:
                ws.transport.abort()
            except Exception:
                pass


async def run(args, result, errors, closes):
    t_connect = now()
    members, hs = await open_many(args, args.members, errors, t_connect + args.connect_timeout)
    # the sender joins last, so the settle period covers its membership too
    sender, hs_s = await open_many(args, 1, errors, t_connect + args.connect_timeout)
    conns = members + sender
    el = now() - t_connect
    result["connect"] = {
        "requested": args.members + 1,
        "opened": len(conns),
        "seconds": round(el, 3),
        "rate_per_s": round(len(conns) / el, 1) if el > 0 else None,
        "handshake_ms": lat_summary(hs + hs_s),
    }
    if not sender:
        errors.add("no_sender")
        await close_all(conns)
        return
    await asyncio.sleep(args.settle)  # let the group membership settle

    n = len(conns)
    # broadcasts at t_start + k * interval for k < max_b: 100 for 10 s every 100 ms
    max_b = max(1, math.ceil(round(args.duration / args.interval, 6)))
    count = [0] * max_b  # deliveries per broadcast
    last = [0.0] * max_b  # time of the latest delivery per broadcast
    sent_at = [0.0] * max_b
    seen = [bytearray(max_b) for _ in range(n)]  # per socket: broadcasts received
    lat = []
    totals = Counter(delivered=0, duplicates=0, foreign=0, complete=0, sent=0)
    done = asyncio.Event()
    sending = [True]
    run_id = "%08x" % random.getrandbits(32)
    pad = "x" * max(0, args.payload_size - 32)

    snap0 = {str(p): proc_snapshot(p) for p in args.server_pid}
    cpu0 = self_cpu()
    t_start = now()

    async def receiver(k, ws):
        mine = seen[k]
        while True:
            try:
                m = await ws.recv()
            except ConnectionClosed as e:
                code = e.rcvd.code if e.rcvd is not None else "none"
                closes.add(str(code))
                return
            except Exception as e:
                errors.add("recv:%s" % type(e).__name__)
                return
            t = now()
            try:
                rid, _sid, seq, ts, _ = m.split("|", 4)
                if rid != run_id:
                    totals.add("foreign")
                    continue
                seq = int(seq)
                ts = float(ts)
            except (ValueError, AttributeError, TypeError):
                errors.add("bad_message")
                continue
            if not 0 <= seq < max_b:
                errors.add("bad_seq")
                continue
            if mine[seq]:
                totals.add("duplicates")
                continue
            mine[seq] = 1
            lat.append(t - ts)
            totals.add("delivered")
            count[seq] += 1
            last[seq] = t
            if count[seq] == n:
                totals.add("complete")
                if not sending[0] and totals["complete"] == totals["sent"]:
                    done.set()

    async def send_loop(ws):
        seq = 0
        while seq < max_b:
            d = t_start + seq * args.interval - now()
            if d > 0:
                await asyncio.sleep(d)
            t = now()
            try:
                await ws.send("%s|0|%d|%.9f|%s" % (run_id, seq, t, pad))
            except Exception as e:
                errors.add("send:%s" % type(e).__name__)
                return
            sent_at[seq] = t
            totals.add("sent")
            seq += 1

    rx = [asyncio.ensure_future(receiver(k, ws)) for k, ws in enumerate(conns)]
    await send_loop(sender[0])
    send_el = now() - t_start
    sending[0] = False
    if totals["complete"] == totals["sent"]:
        done.set()
    try:
        await asyncio.wait_for(done.wait(), args.drain)
    except asyncio.TimeoutError:
        pass
    drain_el = now() - t_start - send_el
    for task in rx:
        task.cancel()
    await asyncio.gather(*rx, return_exceptions=True)

    sent = totals["sent"]
    expected = sent * n
    last_all = [last[s] - sent_at[s] for s in range(sent) if count[s]]
    last_complete = [last[s] - sent_at[s] for s in range(sent) if count[s] == n]
    per_b = sorted(count[:sent])
    result["group"] = {
        "members": n,
        "members_requested": args.members + 1,
        "interval_s": args.interval,
        "send_seconds": round(send_el, 3),
        "drain_seconds": round(drain_el, 3),
        "broadcasts_sent": sent,
        "expected_deliveries": expected,
        "deliveries": totals["delivered"],
        "delivered_fraction": round(totals["delivered"] / expected, 5) if expected else None,
        "broadcasts_complete": totals["complete"],
        "broadcasts_with_no_delivery": sum(1 for c in per_b if c == 0),
        "duplicates": totals["duplicates"],
        "foreign_messages": totals["foreign"],
        "payload_bytes": len(pad) + 32,
        # per broadcast: the latest delivery seen, over every broadcast that reached anyone
        "last_delivery_ms": lat_summary(last_all),
        # the same over the broadcasts that reached every member
        "last_delivery_complete_ms": lat_summary(last_complete),
        "delivery_ms": lat_summary(lat),
        "per_broadcast_deliveries": (
            {"min": per_b[0], "p50": per_b[len(per_b) // 2], "max": per_b[-1]} if per_b else {}
        ),
    }
    result["client_cpu_s"] = round(self_cpu() - cpu0, 3)
    snap1 = {str(p): proc_snapshot(p) for p in args.server_pid}
    result["server"] = server_delta(snap0, snap1, now() - t_start)
    await close_all(conns)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--url", required=True, help="ws://127.0.0.1:PORT/chat/ROOM/")
    p.add_argument("-n", "--members", type=int, default=1000, help="receiving sockets")
    p.add_argument("--interval", type=float, default=0.1, help="seconds between broadcasts")
    p.add_argument("-d", "--duration", type=float, default=10.0, help="send phase seconds")
    p.add_argument("--settle", type=float, default=2.0, help="pause after connecting")
    p.add_argument("--drain", type=float, default=5.0, help="max seconds after the last send")
    p.add_argument("--payload-size", type=int, default=64, help="approx. message size in bytes")
    p.add_argument("--connect-concurrency", type=int, default=100)
    p.add_argument("--connect-timeout", type=float, default=60.0, help="whole connect phase")
    p.add_argument("--open-timeout", type=float, default=15.0, help="one handshake")
    p.add_argument(
        "--server-pid",
        type=int,
        action="append",
        default=[],
        help="server process id to sample CPU and RSS from /proc (repeatable)",
    )
    p.add_argument("--hard-timeout", type=float, default=None)
    p.add_argument("--label", default=None, help="free text copied into the JSON")
    p.add_argument("--no-uvloop", action="store_true")
    a = p.parse_args(argv)
    check_loopback(a.url)
    if a.members < 0 or a.interval <= 0 or a.duration <= 0:
        p.error("--members must be >= 0, --interval and --duration > 0")
    if a.hard_timeout is None:
        a.hard_timeout = a.connect_timeout + a.settle + a.duration + a.drain + 15
    return a


async def amain(args):
    errors, closes = Counter(), Counter()
    result = {
        "tool": "group1000",
        "url": args.url,
        "label": args.label,
        "websockets": websockets.__version__,
        "loop": type(asyncio.get_running_loop()).__module__,
        "hard_stop": False,
    }
    task = asyncio.ensure_future(run(args, result, errors, closes))
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout=args.hard_timeout)
    except asyncio.TimeoutError:
        result["hard_stop"] = True
        task.cancel()
        try:
            await asyncio.wait_for(task, 2)
        except BaseException:
            pass
    result["closes"] = dict(closes)
    result["closes_total"] = sum(closes.values())
    result["errors"] = dict(errors)
    result["errors_total"] = sum(errors.values())
    return result


def main(argv=None):
    args = parse_args(argv)
    # last-resort guard: the process never outlives hard_timeout + 15 s
    signal.signal(signal.SIGALRM, lambda *_: os._exit(3))
    signal.alarm(int(args.hard_timeout + 15))
    if not args.no_uvloop:
        try:
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        except ImportError:
            pass
    res = asyncio.run(amain(args))
    print(json.dumps(res), flush=True)
    return 2 if res["hard_stop"] else 0


if __name__ == "__main__":
    sys.exit(main())
