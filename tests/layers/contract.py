"""
The channel-layer contract, as one test mixin that every chanserv layer's
tests bind to their layer (STYLE: "one contract test suite for the channel
layer, subclassed by the in-reactor and the Redis layer's tests").

It covers the 18 tests of the asgiref 1.1.2 conformance suite (reference
§5; the ``test_conformance_*`` methods, numbered as there), every rule of
reference §1.1-1.4, and the reactor face of ``chanserv.layers.base``.

Bind it with::

    class TestMyLayer(LayerContractTests, unittest.TestCase):
        def make_layer(self, **config): ...
        def advance(self, seconds): ...
        def run_reactor_face(self, f, *args): ...
        def start_reactor_face(self, f, *args): ...
        def settle(self): ...

Hooks:

- ``make_layer(**config)``: a fresh, empty layer, its reactor face usable.
  ``config`` holds any of ``expiry``, ``group_expiry``, ``capacity``,
  ``channel_capacity``, ``max_message_size``.
- ``advance(seconds)``: let that much layer time pass (a fake clock, or a
  real sleep for a layer whose clock is a server's).
- ``run_reactor_face(f, *args)``: call ``f(*args)`` on the reactor thread;
  if it returns a Deferred, wait for it; return the result or raise the
  failure.
- ``start_reactor_face(f, *args)``: call ``f(*args)`` on the reactor thread
  and return what it returns (a Deferred) without waiting for it.
- ``settle()``: let the reactor do everything already handed to it.
- ``result_of(d)`` (provided; override for a real reactor): wait for a
  Deferred from ``start_reactor_face`` and return its result or raise.
- ``receive_tries`` (attribute): how many non-blocking receives may be
  needed to see a message (the number of shards, as in asgiref).
"""

from __future__ import annotations

import datetime
import re
import threading
import time
from collections import OrderedDict
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from chanserv.exceptions import ChannelBlocked, ChannelFull, MessageTooLarge
from chanserv.interfaces import IChannelLayer, IReactorChannelLayer

__all__ = ["LayerContractTests"]

# The configuration the asgiref conformance suite runs layers with.
CONFORMANCE = {"expiry": 1, "group_expiry": 2, "capacity": 5}
EXPIRY_DELAY = 1.1

VALID_CHANNELS = ["a", "a.b-c_d", "A9", "a!", "a!b", "a!b.c-d_e", "a?b", "a?b.c", "x" * 99]
INVALID_CHANNELS = [
    "",
    "a b",
    "ü",
    "a!ü",
    "caf\u00e9",
    "x" * 100,
    "a!b!c",
    "a?b?c",
    "a!b?c",
    "a?",
    "a\n",
    "a/b",
    "!a",
    b"abc",
    5,
    None,
]
INVALID_GROUPS = ["", "a b", "ü", "a!b", "a?b", "a!", "x" * 100, "g\n", b"g", None]
UNSERIALISABLE = [
    {"when": datetime.datetime(2020, 1, 1)},
    {"tags": {1, 2}},
    {"thing": object()},
    {"big": 2**64},
    {"nested": {"deep": [1, {"x": {1, 2}}]}},
    {1: "int key"},
    {"nested": {b"bytes key": 1}},
    {"in_list": [{2: "int key"}]},
    {"flat": 1, b"late": "a bytes key after a str one"},
    {"first": {"x": 1}, 3: "an int key after a nested value"},
    {"__asgi_channel__": "x!y"},
    [("a", 1)],
    "text",
    None,
]


class LayerContractTests:
    """The contract every channel layer passes; see the module docstring."""

    receive_tries = 1

    # -- hooks ------------------------------------------------------------------

    def make_layer(self, **config: Any) -> Any:
        raise NotImplementedError()

    def advance(self, seconds: float) -> None:
        raise NotImplementedError()

    def run_reactor_face(self, f: Any, *args: Any) -> Any:
        raise NotImplementedError()

    def start_reactor_face(self, f: Any, *args: Any) -> Any:
        raise NotImplementedError()

    def settle(self) -> None:
        raise NotImplementedError()

    def result_of(self, d: Deferred[Any]) -> Any:
        self.settle()
        results: list[Any] = []
        d.addBoth(results.append)
        if not results:
            raise AssertionError("%r has no result" % (d,))
        if isinstance(results[0], Failure):
            results[0].raiseException()
        return results[0]

    # -- helpers ------------------------------------------------------------------

    def setUp(self) -> None:
        super().setUp()
        self.layer = self.make_layer(**CONFORMANCE)

    def receive(self, channels: list[str], layer: Any = None) -> Any:
        layer = layer or self.layer
        for _ in range(self.receive_tries):
            result = layer.receive(channels)
            if result[0] is not None:
                return result
        return None, None

    def drain(self, channels: list[str], layer: Any = None) -> list[Any]:
        out = []
        while True:
            channel, message = self.receive(channels, layer)
            if channel is None:
                return out
            out.append((channel, message))

    def assert_nothing(self, channels: list[str], layer: Any = None) -> None:
        self.assertEqual(self.receive(channels, layer), (None, None))

    def wait_for(self, condition: Any, timeout: float = 5.0) -> None:
        """Let the reactor work until ``condition()`` holds (or fail)."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                self.fail("condition not met within %ss" % timeout)
            self.settle()
            time.sleep(0.01)

    def local_receiver(self, layer: Any, prefix: str) -> list[Any]:
        """Register a local receiver on ``prefix``; return the list of its batches."""
        calls: list[Any] = []
        self.run_reactor_face(layer.add_local_receiver, prefix, calls.append)
        self.addCleanup(self.run_reactor_face, layer.remove_local_receiver, prefix)
        return calls

    # -- the interfaces (chanserv.interfaces) -------------------------------------

    def test_provides_the_synchronous_face(self) -> None:
        self.assertTrue(verifyObject(IChannelLayer, self.layer))

    def test_provides_the_reactor_face(self) -> None:
        self.assertTrue(verifyObject(IReactorChannelLayer, self.layer))

    # -- asgiref 1.1.2 conformance (reference §5) -----------------------------

    def test_conformance_01_send_recv(self) -> None:
        layer = self.layer
        for colour in ("blue", "green", "yellow"):
            layer.send("sr_test", {"value": colour})
        layer.send("sr_test2", {"value": "red"})
        got = [self.receive(["sr_test"]) for _ in range(3)]
        self.assertEqual([c for c, _ in got], ["sr_test"] * 3)
        self.assertEqual({m["value"] for _, m in got}, {"blue", "green", "yellow"})
        self.assertEqual(self.receive(["sr_test", "sr_test2"]), ("sr_test2", {"value": "red"}))
        self.assert_nothing(["sr_test"])

    def test_conformance_02_single_process_receive(self) -> None:
        self.layer.send("spr_test!a", {"value": "x"})
        self.assertEqual(self.receive(["spr_test!"]), ("spr_test!a", {"value": "x"}))

    def test_conformance_03_single_process_receive_error(self) -> None:
        with self.assertRaises(TypeError):
            self.layer.receive(["spr_test!c"])

    def test_conformance_04_message_expiry(self) -> None:
        self.layer.send("me_test", {"value": "blue"})
        self.advance(EXPIRY_DELAY)
        self.assert_nothing(["me_test"])

    def test_conformance_05_new_channel_single_reader(self) -> None:
        name1 = self.layer.new_channel("test.foo?")
        name2 = self.layer.new_channel("test.foo?")
        for name in (name1, name2):
            self.assertIsInstance(name, str)
            self.assertEqual(name.count("?"), 1)
            self.assertFalse(name.endswith("?"))
        self.assertNotEqual(name1, name2)
        self.layer.send(name1, {"value": "blue"})
        self.assertEqual(self.receive([name1, name2]), (name1, {"value": "blue"}))

    def test_conformance_06_new_channel_failures(self) -> None:
        for pattern in ("test!", "test.foo"):
            with self.assertRaises(TypeError):
                self.layer.new_channel(pattern)

    def test_conformance_07_strings(self) -> None:
        message = {
            "a": "\u00a3",
            "b": b"\xc2\xa3",
            "nested": {"c": "\U0001f600 \u2603", "d": b"\x00\x01\x02\xff", "e": ["x", b"x"]},
        }
        self.layer.send("str_test", message)
        channel, received = self.receive(["str_test"])
        self.assertEqual(channel, "str_test")
        self.assertEqual(received, message)
        self.assertIsInstance(received["a"], str)
        self.assertIsInstance(received["b"], bytes)
        self.assertIsInstance(received["nested"]["c"], str)
        self.assertIsInstance(received["nested"]["d"], bytes)
        self.assertEqual([type(v) for v in received["nested"]["e"]], [str, bytes])

    def test_conformance_08_groups(self) -> None:
        layer = self.layer
        for name in ("tg_test", "tg_test2", "tg_test3"):
            layer.group_add("tgroup", name)
        layer.group_discard("tgroup", "tg_test2")
        layer.send_group("tgroup", {"value": "orange"})
        self.assertEqual(self.receive(["tg_test"]), ("tg_test", {"value": "orange"}))
        self.assertEqual(self.receive(["tg_test3"]), ("tg_test3", {"value": "orange"}))
        self.assert_nothing(["tg_test2"])

    def test_conformance_09_groups_process(self) -> None:
        layer = self.layer
        for name in ("tgp!test", "tgp!test2", "tgp!test3"):
            layer.group_add("tgroup", name)
        layer.group_discard("tgroup", "tgp!test2")
        layer.send_group("tgroup", {"value": "orange"})
        got = self.drain(["tgp!"])
        self.assertEqual(
            sorted(got), [("tgp!test", {"value": "orange"}), ("tgp!test3", {"value": "orange"})]
        )

    def test_conformance_10_group_channels(self) -> None:
        layer = self.layer
        layer.group_add("tgroup", "tg_test")
        layer.group_add("tgroup", "tg_test2")
        self.assertEqual(set(layer.group_channels("tgroup")), {"tg_test", "tg_test2"})
        layer.group_discard("tgroup", "tg_test")
        self.assertEqual(set(layer.group_channels("tgroup")), {"tg_test2"})

    def test_conformance_11_flush(self) -> None:
        self.assertIn("flush", self.layer.extensions)
        self.layer.send("fl_test", {})
        self.layer.flush()
        self.assert_nothing(["fl_test"])

    def test_conformance_12_flush_groups(self) -> None:
        self.layer.group_add("fl_group", "fl_test")
        self.layer.flush()
        self.assertEqual(list(self.layer.group_channels("fl_group")), [])
        self.layer.send_group("fl_group", {})
        self.assert_nothing(["fl_test"])

    def test_conformance_13_group_expiry(self) -> None:
        layer = self.layer
        self.assertEqual(layer.group_expiry, 2)
        layer.group_add("gr_group", "gr_test")
        self.advance(layer.group_expiry + 1)
        layer.send_group("gr_group", {"value": "orange"})
        self.assert_nothing(["gr_test"])

    def test_conformance_14_capacity(self) -> None:
        for _ in range(5):
            self.layer.send("cap_test", {"hey": True})
        with self.assertRaises(self.layer.ChannelFull):
            self.layer.send("cap_test", {"hey": True})

    def test_conformance_15_capacity_process(self) -> None:
        """
        Capacity of process-local channels is per channel: asgiref's test
        filled one quota shared by the whole ``capp!`` process, which let
        one busy connection make every other one of its process miss
        messages.  Each local channel fills on its own here.
        """
        for i in range(5):
            self.layer.send("capp!%s" % i, {"hey": True})
        for _ in range(4):
            self.layer.send("capp!0", {"hey": True})
        with self.assertRaises(self.layer.ChannelFull):
            self.layer.send("capp!0", {"hey": True})
        self.layer.send("capp!final", {"hey": True})

    def test_conformance_16_capacity_group(self) -> None:
        self.layer.group_add("tgroup", "tg_test")
        for _ in range(6):
            self.layer.send_group("tgroup", {"hey": True})
        self.assertEqual(len(self.drain(["tg_test"])), 5)

    def test_conformance_17_exceptions(self) -> None:
        self.assertIs(self.layer.ChannelFull, ChannelFull)
        self.assertIs(self.layer.MessageTooLarge, MessageTooLarge)
        self.assertTrue(issubclass(self.layer.ChannelFull, Exception))

    def test_conformance_18_message_alteration_after_send(self) -> None:
        message = {"value": [1, 2, 3], "nested": {"k": "v"}}
        self.layer.send("alter_test", message)
        message["value"][0] = 123
        message["nested"]["k"] = "changed"
        message["extra"] = True
        self.assertEqual(
            self.receive(["alter_test"]),
            ("alter_test", {"value": [1, 2, 3], "nested": {"k": "v"}}),
        )

    # -- names (§1.3) -------------------------------------------------------------

    def test_extensions_and_attributes(self) -> None:
        layer = self.make_layer(expiry=7, group_expiry=9, capacity=3, channel_capacity={"a": 2})
        for ext in ("groups", "flush", "statistics", "twisted"):
            self.assertIn(ext, layer.extensions)
        self.assertEqual((layer.expiry, layer.group_expiry, layer.capacity), (7, 9, 3))
        self.assertEqual(layer.get_capacity("a"), 2)

    def test_valid_channel_names_are_accepted(self) -> None:
        for name in VALID_CHANNELS:
            self.layer.send(name, {"n": name})
        self.assertEqual(self.receive(["a!"]), ("a!", {"n": "a!"}))
        self.assertEqual(self.receive(["a!"])[0], "a!b")
        self.assertEqual(self.receive(["x" * 99]), ("x" * 99, {"n": "x" * 99}))

    def test_invalid_channel_names_are_refused(self) -> None:
        for name in INVALID_CHANNELS:
            with self.subTest(name=name):
                with self.assertRaises(TypeError):
                    self.layer.send(name, {})
                with self.assertRaises(TypeError):
                    self.layer.receive([name])
                with self.assertRaises(TypeError):
                    self.layer.group_add("g", name)
        self.assertEqual(self.layer.global_statistics()["messages_count"], 0)

    def test_receive_needs_a_list_and_a_prefix(self) -> None:
        self.layer.send("abc", {})
        with self.assertRaises(TypeError):
            self.layer.receive("abc")
        for name in ("a!b", "daphne.response.x!y"):
            with self.assertRaises(TypeError):
                self.layer.receive(["abc", name])
        self.assertEqual(self.receive(["abc"]), ("abc", {}))
        self.assertEqual(self.layer.receive([]), (None, None))

    def test_receive_accepts_any_sequence_and_duplicates(self) -> None:
        self.layer.send("t1", {"n": 1})
        self.assertEqual(self.layer.receive(("t1", "t1")), ("t1", {"n": 1}))
        self.layer.send("t1", {"n": 2})
        self.assertEqual(self.layer.receive(iter(["t2", "t1"])), ("t1", {"n": 2}))

    def test_local_and_plain_channels_are_distinct(self) -> None:
        self.layer.send("same", {"to": "plain"})
        self.layer.send("same!x", {"to": "local"})
        self.assertEqual(self.receive(["same!"]), ("same!x", {"to": "local"}))
        self.assertEqual(self.receive(["same"]), ("same", {"to": "plain"}))

    def test_invalid_group_names_are_refused(self) -> None:
        layer = self.layer
        for name in INVALID_GROUPS:
            with self.subTest(name=name):
                for method, args in (
                    (layer.group_add, (name, "c")),
                    (layer.group_discard, (name, "c")),
                    (layer.group_channels, (name,)),
                    (layer.send_group, (name, {})),
                ):
                    with self.assertRaises(TypeError):
                        method(*args)
        self.layer.group_add("x" * 99, "c")
        self.assertEqual(list(self.layer.group_channels("x" * 99)), ["c"])

    def test_new_channel(self) -> None:
        names = {self.layer.new_channel("http.request.body?") for _ in range(50)}
        self.assertEqual(len(names), 50)
        for name in names:
            prefix, _, rest = name.partition("?")
            self.assertEqual(prefix, "http.request.body")
            self.assertGreaterEqual(len(rest), 12)
            self.assertTrue(rest.isascii() and rest.isalpha())
        for pattern in ("x!", "x", "x?y?", "ü?", "?", "x" * 90 + "?", b"x?", None):
            with self.subTest(pattern=pattern):
                with self.assertRaises(TypeError):
                    self.layer.new_channel(pattern)

    def test_single_reader_and_process_local_order(self) -> None:
        name = self.layer.new_channel("order?")
        for i in range(5):
            self.layer.send(name, {"i": i})
        self.assertEqual([m["i"] for _, m in self.drain([name])], list(range(5)))
        for i, local in enumerate(["a", "b", "a", "c", "b"]):
            self.layer.send("ord!" + local, {"i": i})
        self.assertEqual(
            [(c, m["i"]) for c, m in self.drain(["ord!"])],
            [("ord!a", 0), ("ord!b", 1), ("ord!a", 2), ("ord!c", 3), ("ord!b", 4)],
        )

    # -- capacity ----------------------------------------------------------------

    def test_capacity_patterns(self) -> None:
        layer = self.make_layer(
            capacity=3,
            channel_capacity=OrderedDict(
                [
                    ("http.request", 1),
                    ("http.*", 2),
                    (re.compile(r"^websocket\.(connect|receive)$"), 4),
                    ("daphne.response*", 5),
                    ("http.response", 9),  # never used: "http.*" matches first
                ]
            ),
        )
        expected = {
            "http.request": 1,
            "http.response": 2,
            "http.disconnect": 2,
            "websocket.connect": 4,
            "websocket.receive": 4,
            "websocket.disconnect": 3,
            "other": 3,
        }
        for name, capacity in expected.items():
            with self.subTest(channel=name):
                for _ in range(capacity):
                    layer.send(name, {})
                with self.assertRaises(ChannelFull):
                    layer.send(name, {})
        # Each local name under a prefix has a quota of its own.
        for _ in range(5):
            layer.send("daphne.response.P!0", {})
        with self.assertRaises(ChannelFull):
            layer.send("daphne.response.P!0", {})
        layer.send("daphne.response.P!other", {})
        layer.send("daphne.response.Q!0", {})

    def test_capacity_from_pairs(self) -> None:
        layer = self.make_layer(capacity=10, channel_capacity=[("a.*", 1), ("a.b", 7)])
        layer.send("a.b", {})
        with self.assertRaises(ChannelFull):
            layer.send("a.b", {})

    def test_receive_frees_capacity(self) -> None:
        for _ in range(5):
            self.layer.send("cap", {})
        self.receive(["cap"])
        self.layer.send("cap", {})
        with self.assertRaises(ChannelFull):
            self.layer.send("cap", {})

    def test_full_channel_leaves_others_alone(self) -> None:
        for _ in range(5):
            self.layer.send("full", {})
        self.layer.send("empty", {"ok": 1})
        self.assertEqual(self.receive(["empty"]), ("empty", {"ok": 1}))

    # -- expiry ------------------------------------------------------------------

    def test_message_lives_until_expiry(self) -> None:
        self.layer.send("live", {"n": 1})
        self.advance(0.5)
        self.layer.send("live", {"n": 2})
        self.assertEqual(self.receive(["live"]), ("live", {"n": 1}))
        self.advance(0.6)  # the second message is 0.6 s old: still there
        self.assertEqual(self.receive(["live"]), ("live", {"n": 2}))

    def test_expiry_frees_capacity(self) -> None:
        for _ in range(5):
            self.layer.send("capx", {})
        self.advance(EXPIRY_DELAY)
        for _ in range(5):
            self.layer.send("capx", {"new": True})
        self.assertEqual(len(self.drain(["capx"])), 5)

    def test_group_message_eviction(self) -> None:
        """A channel whose message expires leaves all its groups."""
        layer = self.layer
        layer.group_add("ev1", "ev_dead")
        layer.group_add("ev2", "ev_dead")
        layer.group_add("ev1", "ev_alive")
        layer.group_add("ev1", "ev_local!dead")
        layer.send_group("ev1", {"n": 1})
        self.assertEqual(self.receive(["ev_alive"]), ("ev_alive", {"n": 1}))
        self.advance(EXPIRY_DELAY)
        self.assert_nothing(["ev_dead"])
        self.assertEqual(list(layer.group_channels("ev1")), ["ev_alive"])
        self.assertEqual(list(layer.group_channels("ev2")), [])

    # -- groups ------------------------------------------------------------------

    def test_group_add_is_idempotent_and_discard_forgiving(self) -> None:
        layer = self.layer
        layer.group_add("g", "c1")
        layer.group_add("g", "c1")
        layer.group_discard("g", "absent")
        layer.group_discard("no_such_group", "c1")
        self.assertEqual(list(layer.group_channels("g")), ["c1"])
        self.assertEqual(list(layer.group_channels("no_such_group")), [])
        layer.send_group("g", {"once": True})
        self.assertEqual(self.drain(["c1"]), [("c1", {"once": True})])
        layer.send_group("no_such_group", {})  # nobody: fine

    def test_group_expiry_counts_from_last_add(self) -> None:
        layer = self.layer
        layer.group_add("ge", "kept")
        layer.group_add("ge", "dropped")
        self.advance(1.5)
        layer.group_add("ge", "kept")
        self.advance(1.5)
        self.assertEqual(list(layer.group_channels("ge")), ["kept"])
        layer.send_group("ge", {})
        self.assert_nothing(["dropped"])
        self.assertEqual(self.receive(["kept"]), ("kept", {}))

    def test_send_group_skips_full_members(self) -> None:
        layer = self.layer
        layer.group_add("sg", "sg_full")
        layer.group_add("sg", "sg_free")
        for i in range(5):
            layer.send("sg_full", {"i": i})
        layer.send_group("sg", {"group": True})
        self.assertEqual(self.receive(["sg_free"]), ("sg_free", {"group": True}))
        self.assertEqual([m for _, m in self.drain(["sg_full"])], [{"i": i} for i in range(5)])
        self.assertEqual(layer.channel_statistics("sg_full")["channel_full_count"], 1)

    def test_send_group_copies_per_member(self) -> None:
        layer = self.layer
        layer.group_add("cp", "cp1")
        layer.group_add("cp", "cp2")
        message = {"list": [1]}
        layer.send_group("cp", message)
        message["list"].append(2)
        _, first = self.receive(["cp1"])
        first["list"].append(3)
        self.assertEqual(self.receive(["cp2"]), ("cp2", {"list": [1]}))

    # -- messages ----------------------------------------------------------------

    def test_value_types_round_trip(self) -> None:
        message = {
            "str": "text",
            "bytes": b"bin",
            "empty_str": "",
            "empty_bytes": b"",
            "int": -(2**63),
            "uint": 2**64 - 1,
            "float": 1.5,
            "bools": [True, False],
            "none": None,
            "list": [1, "a", b"b", [None]],
            "tuple": (1, 2),
            "dict": {"k": {"k2": b"v"}},
        }
        self.layer.send("types", message)
        _, received = self.receive(["types"])
        expected = dict(message, tuple=[1, 2])
        self.assertEqual(received, expected)
        self.assertIs(received["bools"][0], True)
        self.assertIsInstance(received["float"], float)

    def test_unserialisable_messages_raise_type_error(self) -> None:
        layer = self.layer
        layer.group_add("bad", "bad_member")
        for message in UNSERIALISABLE:
            with self.subTest(message=message):
                with self.assertRaises(TypeError):
                    layer.send("bad_target", message)
                with self.assertRaises(TypeError):
                    layer.send_group("bad", message)
        self.assert_nothing(["bad_target", "bad_member"])
        self.assertEqual(layer.global_statistics()["messages_count"], 0)

    def test_message_too_large(self) -> None:
        layer = self.make_layer(max_message_size=1000)
        layer.group_add("big", "big_member")
        layer.send("big", {"b": b"x" * 900})
        with self.assertRaises(MessageTooLarge):
            layer.send("big", {"b": b"x" * 1001})
        with self.assertRaises(MessageTooLarge):
            layer.send_group("big", {"b": b"x" * 1001})
        self.assertEqual(len(self.drain(["big"], layer)), 1)
        self.assert_nothing(["big_member"], layer)

    def test_one_megabyte_messages_are_supported(self) -> None:
        layer = self.make_layer()
        layer.send("mb", {"body": b"\x00" * 1_000_000, "text": "é" * 10})
        _, message = self.receive(["mb"], layer)
        self.assertEqual(len(message["body"]), 1_000_000)

    # -- statistics, flush, fairness ---------------------------------------------

    def test_statistics(self) -> None:
        layer = self.layer
        keys = {
            "messages_count",
            "messages_count_per_second",
            "messages_pending",
            "messages_max_age",
            "channel_full_count",
            "channel_full_count_per_second",
            "expired_count",  # chanserv's: messages dropped for expiring unread
        }
        self.assertEqual(set(layer.global_statistics()), keys)
        self.assertEqual(set(layer.channel_statistics("st")), keys)
        for _ in range(5):
            layer.send("st", {})
        layer.send("st2", {})
        with self.assertRaises(ChannelFull):
            layer.send("st", {})
        self.receive(["st"])
        self.advance(0.5)
        stats = layer.channel_statistics("st")
        self.assertEqual(stats["messages_count"], 5)
        self.assertEqual(stats["messages_pending"], 4)
        self.assertEqual(stats["channel_full_count"], 1)
        self.assertGreaterEqual(stats["messages_max_age"], 0.5)
        self.assertLess(stats["messages_max_age"], 1)
        total = layer.global_statistics()
        self.assertEqual(total["messages_count"], 6)
        self.assertEqual(total["messages_pending"], 5)
        self.assertEqual(total["channel_full_count"], 1)
        layer.send("stp!a", {})
        layer.send("stp!b", {})
        self.assertEqual(layer.channel_statistics("stp!a")["messages_pending"], 1)

    def test_flush_empties_everything(self) -> None:
        layer = self.layer
        layer.send("f1", {})
        layer.send("f2!x", {})
        layer.group_add("fg", "f1")
        layer.flush()
        self.assert_nothing(["f1", "f2!"])
        self.assertEqual(list(layer.group_channels("fg")), [])
        self.assertEqual(layer.global_statistics()["messages_pending"], 0)
        for _ in range(5):  # full capacity is available again
            layer.send("f1", {})

    def test_busy_channel_does_not_starve_a_quiet_one(self) -> None:
        layer = self.make_layer(capacity=100)
        for i in range(60):
            layer.send("busy", {"i": i})
        for i in range(20):
            layer.send("quiet", {"i": i})
        got = [layer.receive(["busy", "quiet"])[0] for _ in range(40)]
        self.assertGreaterEqual(got.count("quiet"), 10)

    # -- threads -------------------------------------------------------------------

    def test_concurrent_senders_and_receivers(self) -> None:
        """Nothing lost, nothing duplicated, with threads on both sides."""
        layer = self.make_layer(capacity=100_000)
        senders, receivers, per_sender = 4, 4, 1500
        expected = senders * per_sender
        channels = ["ts.plain", "ts.local!"]
        received: list[list[tuple[str, int, int]]] = [[] for _ in range(receivers)]
        errors: list[BaseException] = []
        count_lock = threading.Lock()
        counted = [0]
        all_received = threading.Event()

        def send(sender: int) -> None:
            try:
                for i in range(per_sender):
                    target = "ts.plain" if i % 2 else "ts.local!%d" % sender
                    layer.send(target, {"s": sender, "i": i})
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)
                all_received.set()

        def receive(n: int) -> None:
            try:
                while True:
                    channel, message = layer.receive(channels, block=True)
                    if channel is None:
                        continue
                    if message.get("stop"):
                        return
                    received[n].append((channel, message["s"], message["i"]))
                    with count_lock:
                        counted[0] += 1
                        if counted[0] == expected:
                            all_received.set()
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)
                all_received.set()

        threads = [threading.Thread(target=receive, args=(n,)) for n in range(receivers)]
        threads += [threading.Thread(target=send, args=(n,)) for n in range(senders)]
        for t in threads:
            t.start()
        all_received.wait(60)
        for _ in range(receivers):
            layer.send("ts.plain", {"stop": True})
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        everything = [item for part in received for item in part]
        self.assertEqual(len(everything), expected)
        self.assertEqual(
            {(s, i) for _, s, i in everything},
            {(s, i) for s in range(senders) for i in range(per_sender)},
        )
        for channel, s, i in everything:
            self.assertEqual(channel, "ts.plain" if i % 2 else "ts.local!%d" % s)
        self.assert_nothing(channels, layer)

    # -- reactor face ----------------------------------------------------------------

    def test_receive_many_twisted_immediate(self) -> None:
        layer = self.layer
        for i in range(3):
            layer.send("rm", {"i": i})
        first = self.run_reactor_face(layer.receive_many_twisted, ["rm"], 2)
        self.assertEqual(first, [("rm", {"i": 0}), ("rm", {"i": 1})])
        second = self.run_reactor_face(layer.receive_many_twisted, ["other", "rm"], 5)
        self.assertEqual(second, [("rm", {"i": 2})])

    def test_receive_many_twisted_limit_and_prefixes(self) -> None:
        layer = self.make_layer(capacity=50)
        for i in range(10):
            layer.send("lim!%d" % (i % 3), {"i": i})
        batch = self.run_reactor_face(layer.receive_many_twisted, ["lim!"], 4)
        self.assertEqual(batch, [("lim!%d" % (i % 3), {"i": i}) for i in range(4)])
        rest = self.run_reactor_face(layer.receive_many_twisted, ["lim!"], 100)
        self.assertEqual([m["i"] for _, m in rest], list(range(4, 10)))

    def test_receive_many_twisted_waits_for_a_send(self) -> None:
        layer = self.layer
        d = self.start_reactor_face(layer.receive_many_twisted, ["wait", "wait!"], 10)
        self.settle()
        self.assertFalse(d.called)
        layer.send("wait!abc", {"n": 1})
        self.assertEqual(self.result_of(d), [("wait!abc", {"n": 1})])
        self.assert_nothing(["wait", "wait!"])

    def test_receive_twisted(self) -> None:
        layer = self.layer
        d = self.start_reactor_face(layer.receive_twisted, ["rt"])
        self.settle()
        self.assertFalse(d.called)
        layer.send("rt", {"n": 1})
        layer.send("rt", {"n": 2})
        self.assertEqual(self.result_of(d), ("rt", {"n": 1}))
        self.assertEqual(self.receive(["rt"]), ("rt", {"n": 2}))

    def test_cancelled_receive_takes_nothing(self) -> None:
        layer = self.layer
        d = self.start_reactor_face(layer.receive_many_twisted, ["cx"], 1)
        failures: list[Failure] = []
        d.addErrback(failures.append)
        self.run_reactor_face(d.cancel)
        self.assertEqual(len(failures), 1)
        failures[0].trap(CancelledError)
        layer.send("cx", {"n": 1})
        self.settle()
        self.assertEqual(self.receive(["cx"]), ("cx", {"n": 1}))

    def test_receive_many_twisted_refuses_bad_arguments(self) -> None:
        layer = self.layer
        for channels, limit in ((["a!b"], 1), ("abc", 1), (["abc"], 0), ([], 1)):
            with self.subTest(channels=channels, limit=limit):
                with self.assertRaises((TypeError, ValueError)):
                    self.run_reactor_face(layer.receive_many_twisted, channels, limit)

    def test_send_twisted(self) -> None:
        layer = self.layer
        self.run_reactor_face(layer.send_twisted, "stw", {"n": 1})
        self.assertEqual(self.receive(["stw"]), ("stw", {"n": 1}))
        for _ in range(5):
            layer.send("stw", {})
        with self.assertRaises(ChannelFull):
            self.run_reactor_face(layer.send_twisted, "stw", {})
        with self.assertRaises(TypeError):
            self.run_reactor_face(layer.send_twisted, "stw2", {"bad": {1, 2}})

    def test_send_group_twisted_never_fails_when_full(self) -> None:
        layer = self.layer
        layer.group_add("sgt", "sgt1")
        for _ in range(6):
            self.run_reactor_face(layer.send_group_twisted, "sgt", {"n": 1})
        self.assertEqual(len(self.drain(["sgt1"])), 5)
        with self.assertRaises(MessageTooLarge):
            self.run_reactor_face(layer.send_group_twisted, "sgt", {"b": b"x" * (2 * 1024**2)})

    def test_local_receiver_batches(self) -> None:
        """Messages sent before the reactor gets to them arrive in one call."""
        layer = self.layer
        calls = self.local_receiver(layer, "lr!")
        layer.send("lr!a", {"n": 1})
        layer.send("lr!b", {"n": 2})
        layer.send("lr!a", {"n": 3})
        self.settle()
        self.assertEqual(calls, [[("lr!a", {"n": 1}), ("lr!b", {"n": 2}), ("lr!a", {"n": 3})]])
        self.assert_nothing(["lr!"])

    def test_local_receiver_ignores_capacity(self) -> None:
        layer = self.layer
        calls = self.local_receiver(layer, "lrc!")
        for i in range(20):
            layer.send("lrc!x", {"i": i})
        self.settle()
        self.assertEqual([m["i"] for batch in calls for _, m in batch], list(range(20)))

    def test_local_receiver_gets_group_sends(self) -> None:
        layer = self.layer
        calls = self.local_receiver(layer, "lrg!")
        for member in ("lrg!a", "lrg!b", "lrg_plain"):
            layer.group_add("lrg", member)
        layer.send_group("lrg", {"hello": "all"})
        self.settle()
        self.assertEqual(
            [pair for batch in calls for pair in batch],
            [("lrg!a", {"hello": "all"}), ("lrg!b", {"hello": "all"})],
        )
        self.assertEqual(self.receive(["lrg_plain"]), ("lrg_plain", {"hello": "all"}))

    def test_local_receiver_takes_over_queued_and_gives_back(self) -> None:
        layer = self.layer
        layer.send("lrq!early", {"n": 0})
        calls = self.local_receiver(layer, "lrq!")
        self.settle()
        self.assertEqual(calls, [[("lrq!early", {"n": 0})]])
        self.run_reactor_face(layer.remove_local_receiver, "lrq!")
        layer.send("lrq!late", {"n": 1})
        self.settle()
        self.assertEqual(len(calls), 1)
        self.assertEqual(self.receive(["lrq!"]), ("lrq!late", {"n": 1}))

    def test_served_local_channels_keep_their_memberships(self) -> None:
        """
        While a local receiver serves a prefix (an interface server), its
        channels' memberships never lapse by group_expiry: they end when the
        connection goes (discard_local_channel).  Others lapse as before.
        """
        layer = self.layer
        calls = self.local_receiver(layer, "keep!")
        for member in ("keep!a", "keep!b", "keep_plain", "unserved!x"):
            layer.group_add("keepg", member)
        self.advance(CONFORMANCE["group_expiry"] + 0.5)
        self.assertEqual(sorted(layer.group_channels("keepg")), ["keep!a", "keep!b"])
        layer.send_group("keepg", {"still": "here"})
        self.settle()
        self.wait_for(lambda: sum(len(batch) for batch in calls) >= 2)
        self.assertEqual(
            sorted(pair for batch in calls for pair in batch),
            [("keep!a", {"still": "here"}), ("keep!b", {"still": "here"})],
        )
        self.run_reactor_face(layer.discard_local_channel, "keep!a")
        self.assertEqual(layer.group_channels("keepg"), ["keep!b"])

    def test_count_full_is_per_channel_and_global(self) -> None:
        layer = self.layer
        self.run_reactor_face(layer.count_full, "cf!sock", 3)
        self.wait_for(lambda: layer.channel_statistics("cf!sock")["channel_full_count"] == 3)
        self.assertEqual(layer.channel_statistics("cf!other")["channel_full_count"], 0)
        self.assertEqual(layer.global_statistics()["channel_full_count"], 3)

    def test_when_capacity_twisted(self) -> None:
        layer = self.layer
        self.assertIsNone(self.run_reactor_face(layer.when_capacity_twisted, "wc"))
        for _ in range(5):
            layer.send("wc!x", {})
        # Another local channel of the same process has room of its own.
        self.assertIsNone(self.run_reactor_face(layer.when_capacity_twisted, "wc!y"))
        d = self.start_reactor_face(layer.when_capacity_twisted, "wc!x")
        cancelled = self.start_reactor_face(layer.when_capacity_twisted, "wc!x")
        cancelled.addErrback(lambda f: f.trap(CancelledError))
        self.run_reactor_face(cancelled.cancel)
        self.settle()
        self.assertFalse(d.called)
        self.receive(["wc!"])
        self.assertIsNone(self.result_of(d))
        layer.send("wc!x", {})  # the room that was announced is really there

    # -- blocking a local channel (the interface server's flow control) ---------

    def test_blocked_local_channel_refuses_sends_until_unblocked(self) -> None:
        layer = self.layer
        calls = self.local_receiver(layer, "blk!")
        layer.send("blk!a", {"n": 0})
        self.run_reactor_face(layer.block_local_channel, "blk!a")
        self.run_reactor_face(layer.block_local_channel, "blk!a")  # idempotent
        with self.assertRaises(ChannelBlocked) as caught:
            layer.send("blk!a", {"n": 1})
        self.assertIsInstance(caught.exception, layer.ChannelFull)  # capacity semantics
        self.assertIs(layer.ChannelBlocked, ChannelBlocked)
        with self.assertRaises(ChannelBlocked):
            self.run_reactor_face(layer.send_twisted, "blk!a", {"n": 1})
        layer.send("blk!b", {"n": 2})  # its neighbours are not blocked
        room = self.start_reactor_face(layer.when_capacity_twisted, "blk!a")
        self.settle()
        self.assertFalse(room.called)
        self.run_reactor_face(layer.unblock_local_channel, "blk!a")
        self.assertIsNone(self.result_of(room))
        layer.send("blk!a", {"n": 3})
        self.wait_for(lambda: sum(len(batch) for batch in calls) >= 3)
        self.assertEqual(sorted(m["n"] for batch in calls for _, m in batch), [0, 2, 3])
        # Flow control, not a full queue: nothing counted.
        self.assertEqual(layer.channel_statistics("blk!a")["channel_full_count"], 0)
        self.run_reactor_face(layer.unblock_local_channel, "blk!zz")  # not blocked: no-op

    def test_discard_local_channel_ends_a_block(self) -> None:
        layer = self.layer
        self.local_receiver(layer, "bld!")
        self.run_reactor_face(layer.block_local_channel, "bld!a")
        self.run_reactor_face(layer.block_local_channel, "bld!b")
        room = self.start_reactor_face(layer.when_capacity_twisted, "bld!a")
        self.run_reactor_face(layer.discard_local_channel, "bld!a")  # its connection went
        self.assertIsNone(self.result_of(room))
        layer.send("bld!a", {"n": 1})
        with self.assertRaises(ChannelBlocked):
            layer.send("bld!b", {"n": 2})

    def test_send_prepared_wait_waits_while_blocked(self) -> None:
        layer = self.layer
        self.local_receiver(layer, "blw!")
        self.run_reactor_face(layer.block_local_channel, "blw!a")
        data = layer.prepare({"n": 1})
        with self.assertRaises(ChannelBlocked):
            layer.send_prepared_wait("blw!a", data, 0.05)
        errors: list[BaseException] = []

        def wait_and_send() -> None:
            try:
                layer.send_prepared_wait("blw!a", data, 60)
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        sender = threading.Thread(target=wait_and_send)
        sender.start()
        sender.join(0.3)
        self.assertTrue(sender.is_alive())  # blocked: it cannot have sent
        self.run_reactor_face(layer.unblock_local_channel, "blw!a")
        sender.join(30)
        self.assertFalse(sender.is_alive())
        self.assertEqual(errors, [])

    def test_block_takes_process_local_names_only(self) -> None:
        layer = self.layer
        for name in ("plain", "pl!", "pl?x", "bad name!x", 5):
            with self.assertRaises(TypeError, msg=repr(name)):
                self.run_reactor_face(layer.block_local_channel, name)
            with self.assertRaises(TypeError, msg=repr(name)):
                self.run_reactor_face(layer.unblock_local_channel, name)
