"""
The Redis channel layer against real ``redis-server`` processes started on
free ports (:mod:`tests.redisserver`): the layer contract on one host and on
two shards, then what only the Redis layer promises -- one round trip per
shard for a group send, nothing left behind, encryption, the synchronous
face from a process with no reactor, and the faults (Redis down at
start-up, restarted, frozen).
"""

from __future__ import annotations

import fnmatch
import itertools
import json
import os
import re
import subprocess
import sys
import threading
import time
import unittest
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, DeferredList, gatherResults

from chanserv.exceptions import ChannelBlocked, ChannelFull
from chanserv.layers.redis import RedisChannelLayer, RedisTimeout, RedisUnavailable
from chanserv.layers.redis.config import glob_to_lua, parse_hosts
from tests.layers.contract import LayerContractTests
from tests.redisserver import RedisServer
from tests.support import in_reactor, reactor_thread

_servers: dict[str, RedisServer] = {}
_prefixes = itertools.count(1)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def server(name: str) -> RedisServer:
    """A redis-server for this module, started on first use."""
    if name not in _servers:
        s = RedisServer()
        s.start()
        _servers[name] = s
    return _servers[name]


def tearDownModule() -> None:
    for s in _servers.values():
        s.cleanup()
    _servers.clear()


def new_layer(hosts: list[Any], **config: Any) -> RedisChannelLayer:
    """A layer with its own key prefixes, attached to the test reactor."""
    n = next(_prefixes)
    config.setdefault("connection_kwargs", {})
    config["connection_kwargs"] = {
        "socket_timeout": 2,
        "reconnect_max_delay": 1,
        **config["connection_kwargs"],
    }
    config.setdefault("blpop_timeout", 1)
    layer = RedisChannelLayer(hosts=hosts, prefix="t%d:" % n, stats_prefix="tm%d:" % n, **config)
    in_reactor(layer.attach_reactor, reactor_thread())
    return layer


def close(layer: RedisChannelLayer) -> None:
    in_reactor(layer.detach_reactor, timeout=30)


def settle(*layers: RedisChannelLayer, timeout: float = 10.0) -> None:
    """Wait until the layers have nothing in motion (see quiescent_twisted)."""
    deadline = time.monotonic() + timeout
    while not all(in_reactor(layer.quiescent_twisted) for layer in layers):
        if time.monotonic() > deadline:
            raise AssertionError("the Redis layer did not settle in %ss" % timeout)


def wait_up(layer: RedisChannelLayer, timeout: float = 15.0) -> None:
    """Wait (pushed by the shards, not polled) until every shard is up."""
    for shard in layer.shards:
        in_reactor(shard.when_up, timeout=timeout)


class RedisContractMixin(LayerContractTests):
    """The contract on real Redis: time is real, results come over sockets."""

    def hosts(self) -> list[Any]:
        raise NotImplementedError()

    def setUp(self) -> None:
        self.layers: list[RedisChannelLayer] = []
        super().setUp()

    def tearDown(self) -> None:
        for layer in self.layers:
            in_reactor(layer.flush_twisted)
            close(layer)
        super().tearDown()

    def make_layer(self, **config: Any) -> RedisChannelLayer:
        layer = new_layer(self.hosts(), **config)
        self.layers.append(layer)
        return layer

    def advance(self, seconds: float) -> None:
        time.sleep(seconds)  # the server's clock

    def run_reactor_face(self, f: Any, *args: Any) -> Any:
        return in_reactor(f, *args)

    def start_reactor_face(self, f: Any, *args: Any) -> Any:
        return in_reactor(lambda: [f(*args)])[0]

    def settle(self) -> None:
        settle(*self.layers)

    def result_of(self, d: Deferred[Any]) -> Any:
        return in_reactor(lambda: d)

    def test_local_receiver_batches(self) -> None:
        """
        Messages queued before the receiver reads its list arrive in one
        call; over a network, later ones arrive in order, in batches of
        whatever was there when the receiver got back to Redis.
        """
        layer = self.layer
        for n in (1, 2, 3):
            layer.send("lr!%s" % "aba"[n - 1], {"n": n})
        calls = self.local_receiver(layer, "lr!")
        self.settle()
        self.assertEqual(calls, [[("lr!a", {"n": 1}), ("lr!b", {"n": 2}), ("lr!a", {"n": 3})]])
        for n in (4, 5, 6):
            layer.send("lr!c", {"n": n})
        self.settle()
        self.assertEqual([m["n"] for batch in calls for _, m in batch], [1, 2, 3, 4, 5, 6])
        self.assert_nothing(["lr!"])


class TestRedisContract(RedisContractMixin, unittest.TestCase):
    def hosts(self) -> list[Any]:
        return [server("a").url]


class TestShardedRedisContract(RedisContractMixin, unittest.TestCase):
    def hosts(self) -> list[Any]:
        return [server("a").url, server("b").address]


class RedisTestCase(unittest.TestCase):
    def layer(self, hosts: list[Any] | None = None, **config: Any) -> RedisChannelLayer:
        layer = new_layer(hosts or [server("a").url], **config)
        self.addCleanup(close, layer)
        self.addCleanup(self.flush, layer)
        return layer

    @staticmethod
    def flush(layer: RedisChannelLayer) -> None:
        if layer.reactor is not None:
            wait_up(layer)
            in_reactor(layer.flush_twisted)

    @staticmethod
    def drain(layer: RedisChannelLayer, channels: list[str]) -> list[Any]:
        """Everything waiting on ``channels``, in one non-blocking receive."""
        batch = in_reactor(
            layer._start_receive, channels, 1000, False, False, layer.operations.decode_items
        )
        return list(batch)

    def keys(self, layer: RedisChannelLayer, s: RedisServer | None = None) -> list[str]:
        return (s or server("a")).keys(layer.prefix + "*")


class TestConfiguration(unittest.TestCase):
    def test_hosts(self) -> None:
        """hosts takes URLs and (host, port) pairs, else localhost; bad ones are ValueError."""
        with self.assertRaises(ValueError):
            RedisChannelLayer(hosts="redis://localhost:6379")
        addresses = parse_hosts(
            ["redis://:s%40cret@h1:7000/3", ("h2", 7001), "rediss://user:pw@h3?db=2", "redis://h4"],
            {"password": "default"},
        )
        self.assertEqual(
            [(a.host, a.port, a.db, a.password, a.username, a.tls) for a in addresses],
            [
                ("h1", 7000, 3, "s@cret", None, False),
                ("h2", 7001, None, "default", None, False),
                ("h3", 6379, 2, "pw", "user", True),
                ("h4", 6379, None, "default", None, False),
            ],
        )
        self.assertEqual([str(a) for a in parse_hosts(None)], ["redis://localhost:6379/0"])
        for bad in (["unix:///tmp/r.sock"], [("h", "6379")], [42], ["redis://h/x"]):
            with self.subTest(hosts=bad), self.assertRaises(ValueError):
                RedisChannelLayer(hosts=bad)

    def test_options(self) -> None:
        """socket_timeout sets the reply timeout; misspelt or invalid options are ValueError."""
        layer = RedisChannelLayer(
            connection_kwargs={"socket_timeout": 0.5, "socket_keepalive": True}
        )
        self.assertEqual(layer.reply_timeout, 0.5)
        self.assertEqual(layer.extensions, ["groups", "flush", "statistics", "twisted"])
        self.assertFalse(layer.local_only)
        for bad in (
            {"connection_kwargs": {"socket_timout": 1}},
            {"connection_kwargs": {"socket_timeout": 0}},
            {"prefix": "with space:"},
            {"prefix": ""},
            {"prefix": "asgi:", "stats_prefix": "asgi:meta:"},
            {"symmetric_encryption_keys": "one-string"},
            {"blpop_timeout": 0},
        ):
            with self.subTest(config=bad), self.assertRaises(ValueError):
                RedisChannelLayer(**bad)

    def test_globs_become_equivalent_lua_patterns(self) -> None:
        """glob_to_lua() gives Lua patterns that match as fnmatch does, else None."""
        globs = ["http.*", "http.request", "a?c", "[ab]x*", "[!a-c]*", "*.x-y_z", "d*!", "*"]
        names = ["http.request", "http.", "httpxrequest", "abc", "a.c", "ax", "bxx", "cx", "dx"]
        names += ["q.x-y_z", "d.r!", "d!", "", "x"]
        pairs = [(g, n) for g in globs for n in names]
        script = (
            "local out = {} for i = 1, #ARGV, 2 do "
            "out[#out + 1] = string.match(ARGV[i + 1], ARGV[i]) and 1 or 0 end return out"
        )
        args = [x for g, n in pairs for x in (glob_to_lua(g) or "", n)]
        lua = server("a").cli("EVAL", script, "0", *args).split()
        expected = ["1" if fnmatch.fnmatchcase(n, g) else "0" for g, n in pairs]
        self.assertEqual(
            list(zip(pairs, lua, strict=True)), list(zip(pairs, expected, strict=True))
        )
        for untranslatable in ("[", "[a", "[%]", "[z-a]"):
            self.assertIsNone(glob_to_lua(untranslatable))

    def test_sync_face_refuses_the_reactor_thread(self) -> None:
        """The sync API called on the reactor thread raises RuntimeError, not a deadlock."""
        layer = RedisChannelLayer(hosts=[server("a").url])
        with self.assertRaisesRegex(RuntimeError, "reactor thread"):
            in_reactor(layer.send, "x", {})

    def test_password_and_database(self) -> None:
        """A URL's password and /db are used: messages land in that db of a locked Redis."""
        s = RedisServer(args=["--requirepass", "pa ss"], password="pa ss")
        s.start()
        self.addCleanup(s.cleanup)
        layer = new_layer(["redis://:pa%20ss@127.0.0.1:" + str(s.port) + "/3"])
        self.addCleanup(close, layer)
        layer.send("db3", {"n": 1})
        self.assertEqual(s.keys(layer.prefix + "db3", db=3), [layer.prefix + "db3"])
        self.assertEqual(s.keys(layer.prefix + "*", db=0), [])
        self.assertEqual(layer.receive(["db3"]), ("db3", {"n": 1}))


class TestRedisSpecifics(RedisTestCase):
    def test_group_send_is_one_round_trip_per_shard(self) -> None:
        """A group send is one EVALSHA per shard, whatever the members; each member gets it."""
        a, b = server("a"), server("b")
        layer = self.layer([a.url, b.url], capacity=1000)
        members = ["gm%d" % i for i in range(60)] + ["gp%d!m%d" % (i % 4, i) for i in range(140)]
        for member in members:
            layer.group_add("big", member)
        on_shard = [
            sum(layer.consistent_hash(layer.non_local_name(m)) == i for m in members)
            for i in (0, 1)
        ]
        self.assertTrue(all(on_shard), "both shards hold members")
        layer.send_group("big", {"warm": "up"})  # loads the scripts
        with a.monitor() as on_a, b.monitor() as on_b:
            layer.send_group("big", {"n": 1})
        self.assertEqual((on_a, on_b), (["evalsha"], ["evalsha"]))
        received = {
            name: [m for _, m in self.drain(layer, [name])] for name in members if "!" not in name
        }
        for prefix in ("gp0!", "gp1!", "gp2!", "gp3!"):
            for channel, message in self.drain(layer, [prefix]):
                received.setdefault(channel, []).append(message)
        self.assertEqual(received, {m: [{"warm": "up"}, {"n": 1}] for m in members})

    def test_group_send_pushes_one_reference_per_process_whatever_the_members(self) -> None:
        """
        A group send to M local members on one process writes one reference
        to that process's inbox; INFO commandstats (which counts commands
        run by scripts too) shows the same cost for 10 and for 1,000
        members, and the body travels once per process.
        """
        redis = server("a")
        layer = self.layer([redis.url], capacity=10)
        costs = {}
        for size in (10, 1000):
            group = "o1_%d" % size
            for i in range(size):
                layer.group_add(group, "o1p%d!m%d" % (size, i))
            layer.send_group(group, {"warm": "up"})
            self.drain(layer, ["o1p%d!" % size])
            before = redis.command_calls()
            layer.send_group(group, {"n": 1})
            after = redis.command_calls()
            costs[size] = {
                k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)
            }
            self.assertEqual(
                in_reactor(
                    layer.operations.shards[0].execute, "LLEN", "%so1p%d!" % (layer.prefix, size)
                ),
                1,
            )
            got = self.drain(layer, ["o1p%d!" % size])
            self.assertEqual(
                sorted(c for c, _ in got), sorted("o1p%d!m%d" % (size, i) for i in range(size))
            )
            self.assertTrue(all(m == {"n": 1} for _, m in got))
            self.assertTrue(all(m is got[0][1] for _, m in got), "members share one dict")
        # A per-second statistics bucket gets its EXPIRE only in a new
        # second: that one command depends on the clock, not the members.
        for cost in costs.values():
            cost.pop("expire", None)
        self.assertEqual(costs[10], costs[1000])

    def test_statistics_counters_expire_an_hour_after_their_last_second_of_use(self) -> None:
        """
        A channel's counters get their hour-long expiry when created and again
        in each later second they are bumped in (not on every message).
        """
        redis = server("a")
        layer = self.layer([redis.url], capacity=100)
        key = "%sttlc:messages_count" % (layer.stats_prefix,)
        layer.send("ttlc", {})
        self.assertTrue(3590 <= int(redis.cli("TTL", key)) <= 3600)
        redis.cli("EXPIRE", key, "100")
        time.sleep(1.1)  # a bump in a new second refreshes the expiry
        layer.send("ttlc", {})
        self.assertTrue(3590 <= int(redis.cli("TTL", key)) <= 3600)
        self.assertEqual(redis.cli("GET", key), "2")
        self.assertEqual(layer.channel_statistics("ttlc")["messages_count"], 2)

    def test_sends_of_one_reactor_turn_travel_in_one_script_call(self) -> None:
        """20 sends of one reactor turn are one EVALSHA, keeping their order and capacity."""
        redis = server("a")
        layer = self.layer([redis.url], capacity=15)
        layer.send("warm", {})  # loads the scripts

        def twenty() -> Deferred[Any]:
            sends = [layer.send_twisted("batch", {"i": i}) for i in range(20)]
            return DeferredList(sends, consumeErrors=True)

        with redis.monitor() as commands:
            outcomes = in_reactor(twenty)
        self.assertEqual(commands, ["evalsha"])
        self.assertEqual([ok for ok, _ in outcomes], [True] * 15 + [False] * 5)
        self.assertTrue(all(f.check(ChannelFull) for ok, f in outcomes if not ok))
        self.assertEqual([m["i"] for _, m in self.drain(layer, ["batch"])], list(range(15)))

    def test_capacity_is_per_local_channel_not_per_process(self) -> None:
        """Each reply channel has its own capacity; a full one does not block its neighbours."""
        layer = self.layer(capacity=3)
        for _ in range(3):
            layer.send("pc!busy", {})
        with self.assertRaises(ChannelFull):
            layer.send("pc!busy", {})
        layer.send("pc!quiet", {"ok": True})
        self.assertEqual(layer.channel_statistics("pc!busy")["messages_pending"], 3)
        self.assertEqual(layer.channel_statistics("pc!busy")["channel_full_count"], 1)
        got = self.drain(layer, ["pc!"])
        self.assertEqual(len(got), 4)
        layer.send("pc!busy", {})  # room again once read

    def test_a_flushed_redis_is_noticed_by_the_heartbeat(self) -> None:
        """FLUSHALL (or a restart without persistence) calls on_lost within seconds."""
        redis = server("lost")
        layer = self.layer([redis.url])
        lost: list[float] = []
        calls: list[Any] = []
        in_reactor(
            layer.add_local_receiver, "hb!", calls.append, lambda: lost.append(time.monotonic())
        )
        self.addCleanup(in_reactor, layer.remove_local_receiver, "hb!")
        deadline = time.monotonic() + 5
        while layer.prefix + ":alive:hb!" not in redis.keys(layer.prefix + "*"):
            self.assertLess(time.monotonic(), deadline, "the process never registered")
            time.sleep(0.05)
        layer.group_add("hbg", "hb!a")
        time.sleep(1.5)
        self.assertEqual(lost, [])  # beating normally is no loss
        flushed = time.monotonic()
        redis.cli("FLUSHALL")
        while not lost:
            self.assertLess(time.monotonic() - flushed, 5, "state loss not noticed in 5 s")
            time.sleep(0.05)
        # Registered again: its new members are kept.
        time.sleep(1.5)
        self.assertIn(layer.prefix + ":alive:hb!", redis.keys(layer.prefix + "*"))
        self.assertEqual(len(lost), 1)

    def test_memberships_of_a_dead_process_go_with_its_heartbeat(self) -> None:
        """A registered process whose heartbeat expired is forgotten by group sends."""
        redis = server("a")
        layer = self.layer([redis.url])
        ops = layer.operations
        self.assertTrue(in_reactor(ops.heartbeat, "dead!", 0.3, True, False))
        layer.group_add("dg", "dead!a")
        layer.group_add("dg", "dg_plain")
        self.assertEqual(sorted(layer.group_channels("dg")), ["dead!a", "dg_plain"])
        time.sleep(0.5)  # its heartbeat lapses: the process is dead
        layer.send_group("dg", {"n": 1})
        self.assertEqual(layer.group_channels("dg"), ["dg_plain"])
        self.assertEqual(self.drain(layer, ["dead!"]), [])
        self.assertFalse([k for k in redis.keys(layer.prefix + "*") if "dead!" in k])
        # Its heartbeat after that says Redis lost its state.
        self.assertFalse(in_reactor(ops.heartbeat, "dead!", 0.3, False, False))

    def test_a_receive_deletes_the_body(self) -> None:
        """Receiving a message deletes its body: only membership keys are left in Redis."""
        layer = self.layer()
        for i in range(5):
            layer.send("body", {"i": i})
            layer.send("body.local!%d" % i, {"i": i})
        layer.group_add("bg", "body.local!x")
        layer.group_add("bg", "body")
        layer.group_add("bg", "body2")
        layer.send_group("bg", {"group": True})
        self.assertEqual(len(self.drain(layer, ["body", "body.local!"])), 12)
        self.assertEqual(in_reactor(layer.receive_many_twisted, ["body2"], 10)[0][0], "body2")
        memberships = (":group", ":procs:", ":pgroups:")
        leftover = [k for k in self.keys(layer) if not any(m in k for m in memberships)]
        self.assertEqual(leftover, [])

    def test_regex_capacity_in_group_sends(self) -> None:
        """Group sends honour regex channel_capacity: a full member misses the message."""
        layer = self.layer(channel_capacity={re.compile(r"^lim\."): 1, "other": 3})
        for member in ("lim.a", "lim.b", "free"):
            layer.group_add("rg", member)
        layer.send_group("rg", {"n": 1})
        layer.send_group("rg", {"n": 2})
        self.assertEqual([m["n"] for _, m in self.drain(layer, ["lim.a"])], [1])
        self.assertEqual([m["n"] for _, m in self.drain(layer, ["free"])], [1, 2])

    def test_encryption_stores_nothing_readable(self) -> None:
        """With encryption keys no message text is readable in Redis; receivers decrypt it."""
        layer = self.layer(symmetric_encryption_keys=["first key", b"older key"])
        secret = "the secret text"
        layer.group_add("crypt", "crypt!member")
        layer.send("crypt", {"text": secret, "bytes": b"secret bytes"})
        layer.send_group("crypt", {"text": secret})
        s = server("a")
        values = []
        for key in self.keys(layer):
            kind = s.cli("TYPE", key)
            if kind == "string":
                values.append(s.cli("GET", key))
            elif kind == "list":
                values.append(s.cli("LRANGE", key, "0", "-1"))
        self.assertTrue(values)
        for value in values:
            self.assertNotIn("secret", value)
        self.assertEqual(layer.receive(["crypt"])[1], {"text": secret, "bytes": b"secret bytes"})
        self.assertEqual(layer.receive(["crypt!"]), ("crypt!member", {"text": secret}))

    def test_a_retired_key_still_decrypts(self) -> None:
        """Messages under a retired key decrypt while it is listed; without it they drop."""
        old = self.layer(symmetric_encryption_keys=["old key"])
        old.send("rotate", {"n": 1})
        old.send("rotate", {"n": 2})
        rotated = RedisChannelLayer(
            hosts=[server("a").url],
            prefix=old.prefix,
            stats_prefix=old.stats_prefix,
            symmetric_encryption_keys=["new key", "old key"],
        )
        self.assertEqual(rotated.receive(["rotate"]), ("rotate", {"n": 1}))
        new_only = RedisChannelLayer(
            hosts=[server("a").url],
            prefix=old.prefix,
            stats_prefix=old.stats_prefix,
            symmetric_encryption_keys=["new key"],
        )
        # Not readable without the old key: dropped (and logged), never garbage.
        self.assertEqual(new_only.receive(["rotate"]), (None, None))
        rotated.send("rotate", {"n": 3})
        self.assertEqual(old.receive(["rotate"]), (None, None))  # encrypted with "new key"
        for other in (rotated, new_only):
            close(other)

    def test_plain_process_without_a_reactor_sends(self) -> None:
        """A script (no reactor of its own) sends with Channel and Group."""
        layer = self.layer()
        batches: list[Any] = []
        got_group = threading.Event()

        def receiver(batch: list[Any]) -> None:
            batches.append(batch)
            got_group.set()

        in_reactor(layer.add_local_receiver, "sockets!", receiver)
        layer.group_add("chat", "sockets!one")
        script = """
import json, sys
from django.conf import settings
settings.configure(CHANNEL_LAYERS={"default": {
    "BACKEND": "asgi_redis.RedisChannelLayer",
    "CONFIG": json.loads(sys.argv[1]),
    "ROUTING": [],
}})
import django
django.setup()
from twisted.internet import reactor
assert not reactor.running
from chanserv import Channel, Group
Channel("chat-messages").send({"text": "from cron"})
Group("chat").send({"text": "to the group"})
print("sent")
"""
        config = {
            "hosts": [server("a").url],
            "prefix": layer.prefix,
            "stats_prefix": layer.stats_prefix,
        }
        result = subprocess.run(
            [sys.executable, "-c", script, json.dumps(config)],
            capture_output=True,
            timeout=30,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": ROOT},
        )
        self.assertEqual(result.returncode, 0, result.stderr.decode())
        self.assertEqual(result.stdout.strip(), b"sent")
        self.assertEqual(layer.receive(["chat-messages"]), ("chat-messages", {"text": "from cron"}))
        self.assertTrue(got_group.wait(10))
        self.assertEqual(batches, [[("sockets!one", {"text": "to the group"})]])

    def test_cancelled_pop_is_pushed_back_in_order(self) -> None:
        """A BLPOP that cannot be ended early puts what it took back first."""
        layer = self.layer()
        d = in_reactor(lambda: [layer.receive_many_twisted(["pb"], 5)])[0]
        settle(layer)  # blocked in BLPOP on the server

        def cancel_then_send() -> Deferred[None]:
            for proto in layer.shards[0]._blocking_all:
                proto.client_id = None  # as with Redis < 5: no CLIENT UNBLOCK
            d.cancel()
            return layer.send_twisted("pb", {"n": 1})

        in_reactor(cancel_then_send)
        with self.assertRaises(CancelledError):
            in_reactor(lambda: d)
        layer.send("pb", {"n": 2})
        settle(layer, timeout=5)
        self.assertEqual([m["n"] for _, m in self.drain(layer, ["pb"])], [1, 2])

    def test_detach_leaves_messages_in_redis(self) -> None:
        """Detaching ends the pops in flight: later messages stay for others."""
        layer = new_layer([server("a").url])
        pending = in_reactor(lambda: [layer.receive_many_twisted(["dt"], 1)])[0]
        in_reactor(layer.add_local_receiver, "dt!", lambda batch: None)
        settle(layer)
        close(layer)
        with self.assertRaises(CancelledError):
            in_reactor(lambda: pending)
        self.assertEqual(server("a").cli("CLIENT", "LIST", "TYPE", "normal").count("cmd=blpop"), 0)
        other = self.layer()
        other.prefix, other.stats_prefix = layer.prefix, layer.stats_prefix
        other.send("dt", {"n": 1})
        other.send("dt!x", {"n": 2})
        self.assertEqual(other.receive(["dt"]), ("dt", {"n": 1}))
        self.assertEqual(other.receive(["dt!"]), ("dt!x", {"n": 2}))

    def test_when_capacity_rechecks_for_other_processes(self) -> None:
        """when_capacity fires once another process makes room on a shared channel."""
        layer = self.layer(capacity=2)
        elsewhere = RedisChannelLayer(
            hosts=[server("a").url], prefix=layer.prefix, stats_prefix=layer.stats_prefix
        )
        self.addCleanup(close, elsewhere)
        layer.send("wc", {})
        layer.send("wc", {})
        d = in_reactor(lambda: [layer.when_capacity_twisted("wc")])[0]
        self.assertFalse(in_reactor(lambda: d.called))
        self.assertEqual(elsewhere.receive(["wc"])[0], "wc")  # another "process" makes room
        in_reactor(lambda: d)
        layer.send("wc", {})
        with self.assertRaises(ChannelFull):
            layer.send("wc", {})

    def test_when_capacity_wakes_only_as_many_as_there_is_room_for(self) -> None:
        """One freed slot wakes at most two of 50 waiters for capacity, not all of them."""
        layer = self.layer(capacity=2)
        layer.send("wr", {})
        layer.send("wr", {})

        def waiter() -> Deferred[None]:
            # As a real sender does: once woken, take the room.
            d = layer.when_capacity_twisted("wr")
            d.addCallback(lambda _: layer.send_twisted("wr", {}))
            d.addErrback(lambda f: f.trap(CancelledError, ChannelFull))
            return d

        waiters = in_reactor(lambda: [waiter() for _ in range(50)])
        self.assertEqual(layer.receive(["wr"])[0], "wr")  # one slot free
        in_reactor(lambda: waiters[0])
        time.sleep(0.3)  # rechecks run; the slot was taken again
        # Before, all 50 were woken to retry.  A recheck racing the woken
        # sender's send may wake one more, who finds the channel full.
        self.assertLessEqual(in_reactor(lambda: sum(d.called for d in waiters)), 2)
        in_reactor(lambda: [d.cancel() for d in waiters])

    def test_send_prepared_wait(self) -> None:
        """send_prepared_wait() raises ChannelFull at its timeout, or sends once room frees."""
        layer = self.layer(capacity=1)
        layer.send("spw", {"n": 1})
        data = layer.prepare({"n": 2})
        with self.assertRaises(ChannelFull):
            layer.send_prepared_wait("spw", data, 0.2)
        done = threading.Event()
        t = threading.Thread(target=lambda: (layer.send_prepared_wait("spw", data, 10), done.set()))
        t.start()
        self.assertEqual(layer.receive(["spw"]), ("spw", {"n": 1}))
        t.join(10)
        self.assertTrue(done.is_set())
        self.assertEqual(layer.receive(["spw"]), ("spw", {"n": 2}))

    def test_blocking_costs_one_command_per_transition_none_per_send(self) -> None:
        """Blocking or unblocking a local channel is one command; sends cost none extra.

        The mark is a field of the process's expiring count hash; blocked sends fail.
        """
        redis = server("a")
        layer = self.layer([redis.url])
        layer.send("bk!a", {"warm": "up"})  # loads the scripts

        def barrier() -> Deferred[Any]:
            # The layer's commands go in order on one connection.
            return layer.shards[0].execute("PING")

        with redis.monitor() as commands:
            in_reactor(layer.block_local_channel, "bk!a")
            in_reactor(barrier)
        self.assertEqual(commands, ["evalsha", "ping"])
        with redis.monitor() as commands:
            with self.assertRaises(ChannelBlocked):
                layer.send("bk!a", {"n": 1})
            layer.send("bk!b", {"n": 2})
        self.assertEqual(commands, ["evalsha", "evalsha"])
        # The mark is a field of the process's count hash, which expires.
        counts = layer.prefix + ":count:bk!"
        self.assertEqual(redis.cli("HGET", counts, "bk!a blocked"), "1")
        self.assertTrue(0 < int(redis.cli("PTTL", counts)) <= layer.operations.list_ttl_ms)
        with redis.monitor() as commands:
            in_reactor(layer.unblock_local_channel, "bk!a")
            in_reactor(barrier)
        self.assertEqual(commands, ["evalsha", "ping"])
        self.assertEqual(redis.cli("HGET", counts, "bk!a blocked"), "")
        layer.send("bk!a", {"n": 3})
        self.assertEqual(
            [m for _, m in self.drain(layer, ["bk!"])], [{"warm": "up"}, {"n": 2}, {"n": 3}]
        )

    def test_block_mark_never_outlives_its_connection_or_process(self) -> None:
        """A block mark goes with its connection, its process, or its expired inbox keys."""
        redis = server("a")
        layer = self.layer([redis.url], expiry=0.5)  # the inbox's keys live 2 s
        for name in ("bo!a", "bo!b", "bo!c"):
            in_reactor(layer.block_local_channel, name)
        # The connection goes: discard_local_channel.
        in_reactor(layer.discard_local_channel, "bo!a")
        in_reactor(lambda: layer.shards[0].execute("PING"))
        layer.send("bo!a", {"n": 1})
        with self.assertRaises(ChannelBlocked):
            layer.send("bo!b", {"n": 2})
        # The process dies: every key it held goes, its marks too.
        self.assertTrue(in_reactor(layer.operations.heartbeat, "bo!", 5, True, False))
        in_reactor(layer.operations.unregister, "bo!")
        layer.send("bo!b", {"n": 3})
        # Nothing sent to the process for longer than its inbox lives: gone too.
        in_reactor(layer.block_local_channel, "bo!c")
        in_reactor(lambda: layer.shards[0].execute("PING"))
        with self.assertRaises(ChannelBlocked):
            layer.send("bo!c", {"n": 4})
        self.drain(layer, ["bo!"])
        time.sleep(layer.operations.list_ttl_ms / 1000 + 0.2)
        self.assertEqual(self.keys(layer), [])
        layer.send("bo!c", {"n": 5})


class TestInlineMessages(RedisTestCase):
    """A message sent to one channel travels inside its list: no body key."""

    def elements(self, layer: RedisChannelLayer, key: str) -> list[bytes]:
        result: list[bytes] = in_reactor(layer.shards[0].execute, "LRANGE", key, 0, -1)
        return result

    def test_a_direct_send_is_one_list_element(self) -> None:
        """Sends to a channel and to a local name: a NUL-led element each, no other key but the inbox count."""
        layer = self.layer()
        layer.send("inl", {"n": 1})
        layer.send("inlp!a", {"n": 2})
        prefix = layer.prefix
        self.assertEqual(
            sorted(self.keys(layer)),
            sorted([prefix + "inl", prefix + "inlp!", prefix + ":count:inlp!"]),
        )
        [plain] = self.elements(layer, prefix + "inl")
        [local] = self.elements(layer, prefix + "inlp!")
        deadline, channel, _ = plain[1:].split(b" ", 2)
        self.assertEqual((plain[:1], channel), (b"\0", b""))
        self.assertEqual(local[1:].split(b" ", 2)[1], b"inlp!a")
        now_ms = time.time() * 1000
        self.assertTrue(now_ms < int(deadline) <= now_ms + layer.expiry * 1000 + 50, deadline)
        self.assertEqual(layer.receive(["inl"]), ("inl", {"n": 1}))
        self.assertEqual(layer.receive(["inlp!"]), ("inlp!a", {"n": 2}))
        self.assertEqual(self.elements(layer, prefix + "inl"), [])

    def test_a_message_handed_back_keeps_its_place_and_deadline(self) -> None:
        """What a receive took and gives back is the same element at the head, counted again."""
        layer = self.layer()
        for n in range(3):
            layer.send("hb", {"n": n})
            layer.send("hbp!a", {"n": n})
        before = {key: self.elements(layer, layer.prefix + key) for key in ("hb", "hbp!")}
        taken = in_reactor(layer._start_receive, ["hb", "hbp!"], 4, False, False, list)
        self.assertEqual(len(taken), 4)
        self.assertEqual(layer.channel_statistics("hbp!a")["messages_pending"], 1)
        # As a receive cancelled while its pop was in flight gives them back.
        in_reactor(layer.operations.requeue, 0, taken)
        settle(layer)
        self.assertEqual({key: self.elements(layer, layer.prefix + key) for key in before}, before)
        self.assertEqual(layer.channel_statistics("hbp!a")["messages_pending"], 3)
        self.assertEqual([m["n"] for _, m in self.drain(layer, ["hb"])], [0, 1, 2])
        self.assertEqual([m["n"] for _, m in self.drain(layer, ["hbp!"])], [0, 1, 2])

    def test_references_of_an_older_release_are_still_read(self) -> None:
        """A body key and its reference, as an older release sent them, are received once."""
        layer = self.layer()
        shard = layer.shards[0]
        body = layer._codec.encode(layer.serialise({"old": True}))
        for key, ref, target in (("k1", "k1", "old"), ("k2", "k2 oldp!a", "oldp!")):
            in_reactor(shard.execute, "SET", layer.prefix + key, body, "PX", 10000)
            in_reactor(shard.execute, "RPUSH", layer.prefix + target, layer.prefix + ref)
        self.assertEqual(layer.receive(["old"]), ("old", {"old": True}))
        self.assertEqual(layer.receive(["oldp!"]), ("oldp!a", {"old": True}))
        self.assertEqual(self.keys(layer), [])

    def test_one_turns_sends_to_one_channel_check_capacity_and_count_each(self) -> None:
        """Sends of one turn past capacity: the first fit, the rest are full; each counted once."""
        layer = self.layer(capacity=3)
        layer.send("cap1", {"n": 0})

        def burst() -> Deferred[list[Any]]:
            sends = [
                layer.send_twisted(name, {"n": n}) for n in range(1, 6) for name in ("cap1", "cap2")
            ]
            return DeferredList(sends, consumeErrors=True)

        outcomes = in_reactor(burst)
        fits = [ok for ok, _ in outcomes]
        self.assertEqual(fits[0::2], [True, True, False, False, False])  # cap1 had one
        self.assertEqual(fits[1::2], [True, True, True, False, False])
        self.assertTrue(all(r.check(ChannelFull) for ok, r in outcomes if not ok))
        for name, sent, full in (("cap1", 3, 3), ("cap2", 3, 2)):
            stats = layer.channel_statistics(name)
            self.assertEqual((stats["messages_count"], stats["channel_full_count"]), (sent, full))
        self.assertEqual([m["n"] for _, m in self.drain(layer, ["cap1"])], [0, 1, 2])
        self.assertEqual([m["n"] for _, m in self.drain(layer, ["cap2"])], [1, 2, 3])

    def test_a_prefix_with_a_nul_is_refused(self) -> None:
        """A NUL would make a body key look like an inline message: prefixes may not hold one."""
        for name in ("prefix", "stats_prefix"):
            with self.subTest(name=name), self.assertRaises(ValueError):
                RedisChannelLayer(hosts=[server("a").url], **{name: "a\x00b:"})


class TestRedisFaults(RedisTestCase):
    def test_redis_down_at_start_up(self) -> None:
        """With Redis down at start-up every call fails fast; once it is up, traffic flows."""
        s = RedisServer()  # not started: nothing listens on its port
        self.addCleanup(s.cleanup)
        layer = self.layer([s.url])  # attaching is fine
        with self.assertRaises(RedisUnavailable) as raised:
            layer.send("down", {})
        self.assertNotIsInstance(raised.exception, RedisTimeout)  # failed fast
        with self.assertRaises(RedisUnavailable):
            layer.receive(["down"], block=True)
        with self.assertRaises(RedisUnavailable):
            in_reactor(layer.receive_many_twisted, ["down"], 1)
        batches: list[Any] = []
        arrived = threading.Event()
        in_reactor(layer.add_local_receiver, "down!", lambda b: (batches.append(b), arrived.set()))
        s.start()
        wait_up(layer)
        layer.send("down", {"n": 1})
        layer.send("down!x", {"n": 2})
        self.assertEqual(layer.receive(["down"]), ("down", {"n": 1}))
        self.assertTrue(arrived.wait(10))
        self.assertEqual(batches, [[("down!x", {"n": 2})]])

    def test_redis_restart_mid_traffic(self) -> None:
        """Across a Redis restart sends fail, then resume with the scripts reloaded.

        Nothing is delivered twice; every send acknowledged after the restart arrives.
        """
        s = RedisServer()
        s.start()
        self.addCleanup(s.cleanup)
        layer = self.layer([s.url], capacity=10_000)
        received: list[int] = []
        in_reactor(layer.add_local_receiver, "rs!", lambda b: received.extend(m["i"] for _, m in b))
        acked: list[int] = []
        failed: list[int] = []
        errors: list[BaseException] = []
        restarted = threading.Event()
        acked_after_restart: list[int] = []
        enough = [threading.Event(), threading.Event()]
        stop = threading.Event()

        def send() -> None:
            for i in itertools.count():
                if stop.is_set():
                    return
                try:
                    layer.send("rs!x", {"i": i})
                except RedisUnavailable:
                    failed.append(i)
                    continue
                except BaseException as e:  # pragma: no cover - reported below
                    errors.append(e)
                    enough[0].set()
                    enough[1].set()
                    return
                after = restarted.is_set()
                done = acked_after_restart if after else acked
                done.append(i)
                if len(done) >= 200:
                    enough[after].set()

        sender = threading.Thread(target=send)
        sender.start()
        self.assertTrue(enough[0].wait(30))
        s.restart()  # loses everything: --save '' --appendonly no
        restarted.set()
        wait_up(layer)
        self.assertTrue(enough[1].wait(30))
        stop.set()
        sender.join(30)
        self.assertFalse(sender.is_alive(), "a send hung")
        self.assertEqual(errors, [])
        self.assertTrue(failed, "some sends failed while Redis was away")
        settle(layer)
        self.assertEqual(len(received), len(set(received)), "a message was delivered twice")
        self.assertLessEqual(set(received), set(acked) | set(acked_after_restart) | set(failed))
        self.assertLessEqual(set(acked_after_restart), set(received))
        self.assertGreaterEqual(s.command_calls().get("script|load", 0), 1)  # reloaded

    def test_redis_frozen(self) -> None:
        """A frozen Redis times out sends and pops, then fails commands at once until thawed.

        After the thaw both channel kinds deliver again.
        """
        s = RedisServer()
        s.start()
        self.addCleanup(s.cleanup)
        layer = self.layer([s.url], connection_kwargs={"socket_timeout": 0.5}, blpop_timeout=0.5)
        batches: list[Any] = []
        arrived = threading.Event()
        in_reactor(layer.add_local_receiver, "fz!", lambda b: (batches.append(b), arrived.set()))
        waiting = in_reactor(lambda: [layer.receive_many_twisted(["fz"], 1)])[0]
        settle(layer)
        s.freeze()
        try:
            with self.assertRaises(RedisTimeout):
                layer.send("fz.lost", {})  # may or may not have happened
            with self.assertRaises(RedisUnavailable):
                in_reactor(lambda: waiting)  # the blocking pop timed out too
            with self.assertRaises(RedisUnavailable):
                layer.receive(["fz"], block=True)
            # While it is down, nothing piles up: commands fail at once.
            shard = layer.shards[0]
            self.assertNotEqual(shard.state, "up")
            with self.assertRaises(RedisUnavailable) as raised:
                layer.send("fz.lost", {})
            self.assertNotIsInstance(raised.exception, RedisTimeout)
        finally:
            s.thaw()
        wait_up(layer)
        layer.send("fz", {"n": 1})
        self.assertEqual(layer.receive(["fz"], block=True), ("fz", {"n": 1}))
        layer.send("fz!a", {"n": 2})
        self.assertTrue(arrived.wait(10))
        self.assertEqual(batches, [[("fz!a", {"n": 2})]])

    def test_scripts_are_reloaded_after_noscript(self) -> None:
        """After SCRIPT FLUSH, sends and group sends reload the scripts and all succeed."""
        layer = self.layer()
        layer.group_add("ns", "ns!a")
        server("a").cli("SCRIPT", "FLUSH")
        results = in_reactor(
            lambda: gatherResults(
                [layer.send_twisted("ns", {"i": i}) for i in range(3)]
                + [layer.send_group_twisted("ns", {"group": True})]
            )
        )
        self.assertEqual(results, [None] * 4)
        self.assertEqual(len(self.drain(layer, ["ns"])), 3)
        self.assertEqual(layer.receive(["ns!"]), ("ns!a", {"group": True}))

    def test_commands_in_flight_are_bounded(self) -> None:
        """Against a frozen Redis, commands past max_pending fail at once; the rest time out."""
        s = RedisServer()
        s.start()
        self.addCleanup(s.cleanup)
        layer = self.layer([s.url], connection_kwargs={"socket_timeout": 0.5})
        layer.send("bound", {})
        layer.shards[0].max_pending = 20
        s.freeze()
        try:
            results = in_reactor(
                lambda: Deferred.fromCoroutine(self._send_many(layer, 35)), timeout=10
            )
        finally:
            s.thaw()
        self.assertEqual(results.count("overloaded"), 15)
        self.assertEqual(results.count("timeout"), 20)

    @staticmethod
    async def _send_many(layer: RedisChannelLayer, n: int) -> list[str]:
        # Commands of their own (sends made in one turn would share one).
        sends = [layer.group_add_twisted("bound", "bound%d" % i) for i in range(n)]
        results = []
        for d in sends:
            try:
                await d
                results.append("sent")
            except RedisTimeout:
                results.append("timeout")
            except RedisUnavailable:
                results.append("overloaded")
        return results
