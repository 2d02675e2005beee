"""
Metrics and health (chanserv.metrics, chanserv.stats): the collector over
the real interface server (chanserv.testing), a real WorkerService's handle() and
the in-memory layer; health with a ClockReactor; the metrics site rendered
over memory transports.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.application.service import MultiService
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from chanserv import tap
from chanserv.asgi import ChannelLayerWrapper
from chanserv.exceptions import DenyConnection
from chanserv.layers.inmemory import InMemoryChannelLayer
from chanserv.log import set_verbosity
from chanserv.metrics import STALE_AFTER, STATE_LOSS_HOLD, Health, MetricsCollector, MetricsService
from chanserv.routing import route
from chanserv.server.config import ServerConfig
from chanserv.stats import Histogram, PerThread, consumer_name
from chanserv.testing import ClockReactor, InterfaceHarness
from chanserv.threads import WorkerPool
from chanserv.worker import WorkerService


def registry_of(collector: MetricsCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


class HistogramTests(SynchronousTestCase):
    def test_bounds_are_inclusive_and_export_is_cumulative(self) -> None:
        """A value equal to a bound counts in that bucket (le); the export is cumulative."""
        histogram = Histogram((0.1, 1.0))
        for v in (0.05, 0.1, 0.5, 1.0, 3.0):
            histogram.observe(v)
        self.assertEqual(histogram.counts, [2, 2, 1])
        self.assertEqual(histogram.count, 5)
        collector = MetricsCollector()
        worker = WorkerService.__new__(WorkerService)  # only its histogram and stats are read here
        worker.receive_seconds = histogram
        worker.stats = PerThread(lambda: None)  # type: ignore[arg-type,return-value]
        worker.lanes = None
        collector.worker = worker
        registry = registry_of(collector)
        name = "chanserv_layer_receive_seconds"
        self.assertEqual(value(registry, name + "_bucket", le="0.1"), 2)
        self.assertEqual(value(registry, name + "_bucket", le="1.0"), 4)
        self.assertEqual(value(registry, name + "_bucket", le="+Inf"), 5)
        self.assertEqual(value(registry, name + "_count"), 5)
        self.assertAlmostEqual(value(registry, name + "_sum"), 4.65)

    def test_per_thread_gives_each_thread_its_own(self) -> None:
        """PerThread hands every thread its own object and lists them all, ended threads too."""
        counters: PerThread[list[int]] = PerThread(lambda: [0])
        counters.get()[0] += 1

        def work() -> None:
            counters.get()[0] += 10

        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
        self.assertIs(counters.get(), counters.get())
        self.assertEqual(sorted(c[0] for c in counters.all()), [1, 10])

    def test_consumer_name(self) -> None:
        """A consumer is named module.qualname, functions and classes alike."""
        self.assertEqual(consumer_name(echo), "tests.test_metrics.echo")
        self.assertEqual(consumer_name(HistogramTests), "tests.test_metrics.HistogramTests")


def echo(message: Any) -> None:
    message.reply_channel.send({"text": message.content.get("text", "")})


def deny(message: Any) -> None:
    raise DenyConnection()


def broken(message: Any) -> None:
    raise RuntimeError("consumer bug")


class InterfaceCollectorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.harness = InterfaceHarness(ServerConfig(ws_send_queue_size=1024))
        self.addCleanup(lambda: self.harness.stop())
        self.collector = MetricsCollector(self.harness.layer)
        self.collector.watch_interface(self.harness.server)
        self.registry = registry_of(self.collector)

    def value(self, name: str, **labels: str) -> float | None:
        return value(self.registry, name, **labels)

    def test_http_and_websocket_traffic_is_counted(self) -> None:
        """Requests, handshakes, receives, replies and open connections match what happened."""
        harness = self.harness
        for _ in range(3):
            client = harness.connect()
            client.send_request(b"GET", b"/")
            harness.reply(harness.expect("http.request"), {"status": 200, "content": b"ok"})
            self.assertEqual(client.response().status, 200)
        sockets = []
        for _ in range(2):
            ws = harness.open_websocket(b"/chat/")
            harness.reply(harness.expect("websocket.connect"), {"accept": True})
            sockets.append(ws)
        refused = harness.open_websocket(b"/chat/")
        harness.reply(harness.expect("websocket.connect"), {"accept": False})
        self.assertEqual(refused.status(), 403)
        for i, ws in enumerate(sockets):
            for n in range(i + 1):
                ws.send_text("m%d" % n)
        received = harness.receive_all("websocket.receive")
        self.assertEqual(len(received), 3)
        for message in received:
            harness.reply(message, {"text": "back"})
        self.assertEqual(
            self.value("chanserv_interface_messages_total", direction="in", channel="http.request"),
            3,
        )
        self.assertEqual(
            self.value(
                "chanserv_interface_messages_total", direction="in", channel="websocket.receive"
            ),
            3,
        )
        # 3 responses, 3 accepts + refusal, 3 texts
        self.assertEqual(
            self.value("chanserv_interface_messages_total", direction="out", channel="reply"), 9
        )
        self.assertEqual(self.value("chanserv_websocket_handshakes_total", outcome="accepted"), 2)
        self.assertEqual(self.value("chanserv_websocket_handshakes_total", outcome="rejected"), 1)
        self.assertEqual(self.value("chanserv_open_connections", kind="websocket"), 2)
        sockets[0].send_close(1000)
        harness.run()
        self.assertEqual(self.value("chanserv_open_connections", kind="websocket"), 1)
        self.assertEqual(
            self.value(
                "chanserv_interface_messages_total", direction="in", channel="websocket.receive"
            ),
            3,
            "a gone socket's messages stay counted",
        )

    def test_full_request_channel_and_gone_replies_are_counted(self) -> None:
        """A full http.request answers 503 and counts as refused; a reply to nobody as gone."""
        harness = self.harness
        capacity = harness.layer.get_capacity("http.request")
        clients = []
        for _ in range(capacity + 1):
            client = harness.connect()
            client.send_request(b"GET", b"/")
            clients.append(client)
        self.assertEqual(clients[-1].response().status, 503)
        self.assertEqual(self.value("chanserv_sends_refused_total", channel="http.request"), 1)
        self.assertEqual(self.value("chanserv_layer_channel_full_total"), 1)
        harness.reply(harness.replies.prefix + "nobodyhere", {"status": 200})
        self.assertEqual(self.value("chanserv_messages_dropped_total", reason="gone"), 1)

    def test_group_sends_are_counted_with_their_deliveries(self) -> None:
        """A group send counts once, and once per member it reached."""
        harness = self.harness
        for _ in range(3):
            ws = harness.open_websocket(b"/")
            connect = harness.expect("websocket.connect")
            harness.reply(connect, {"accept": True})
            harness.layer.group_add("room", connect["reply_channel"])
        harness.layer.send_group("room", {"text": "all"})
        harness.run()
        self.assertEqual(ws.texts(), ["all"])
        self.assertEqual(self.value("chanserv_group_sends_total"), 1)
        self.assertEqual(self.value("chanserv_group_deliveries_total"), 3)

    def test_overflow_is_counted_as_drops_and_a_close(self) -> None:
        """A socket whose client stops reading past the hard bound: its queue counted as dropped."""
        harness = self.harness
        ws = harness.open_websocket(b"/")
        connect = harness.expect("websocket.connect")
        harness.reply(connect, {"accept": True})
        ws.protocol.pauseProducing()  # the client stopped reading
        for _ in range(5):
            harness.reply(connect, {"bytes": b"x" * 1024})
        self.assertEqual(ws.close_code(), 1013)
        self.assertEqual(self.value("chanserv_websocket_closes_total", reason="overflow"), 1)
        self.assertGreater(self.value("chanserv_messages_dropped_total", reason="overflow"), 0)


class CapacityCollectorTests(SynchronousTestCase):
    def test_full_connect_and_receive_channels_are_counted(self) -> None:
        """A full websocket.connect counts as refused; a receive full too long as a 1013 close."""
        reactor = ClockReactor()
        layer = InMemoryChannelLayer(capacity=1, clock=reactor)
        harness = InterfaceHarness(
            ServerConfig(ws_receive_full_timeout=2), reactor=reactor, layer=layer
        )
        self.addCleanup(lambda: harness.stop())
        collector = MetricsCollector(layer)
        collector.watch_interface(harness.server)
        registry = registry_of(collector)
        ws = harness.open_websocket(b"/")
        refused = harness.open_websocket(b"/")
        self.assertEqual(refused.status(), 503)
        self.assertEqual(
            value(registry, "chanserv_sends_refused_total", channel="websocket.connect"), 1
        )
        self.assertEqual(
            value(registry, "chanserv_websocket_handshakes_total", outcome="rejected"), 1
        )
        harness.reply(harness.expect("websocket.connect"), {"accept": True})
        ws.send_text("one")
        ws.send_text("two")  # websocket.receive holds one: this one waits
        harness.advance(3)
        self.assertEqual(ws.close_code(), 1013)
        self.assertEqual(
            value(registry, "chanserv_websocket_closes_total", reason="receive_full"), 1
        )


class WorkerCollectorTests(SynchronousTestCase):
    def test_consumer_runs_exceptions_and_pool_gauges(self) -> None:
        """handle() counts messages per channel, run times and exceptions per consumer."""
        reactor = ClockReactor()
        layer = InMemoryChannelLayer(clock=reactor)
        wrapper = ChannelLayerWrapper(
            layer, "default", [route("a.b", echo), route("c.d", broken), route("e.f", deny)]
        )
        pool = WorkerPool(reactor, 3)
        worker = WorkerService(reactor, layer, wrapper.router, pool, consumer_layer=wrapper)
        collector = MetricsCollector(layer)
        collector.watch_worker(worker, pool)
        registry = registry_of(collector)
        reply = layer.new_channel("reply?")
        for _ in range(2):
            worker.handle("a.b", {"reply_channel": reply, "text": "x"})
        worker.handle("c.d", {})
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

        thread = threading.Thread(target=worker.handle, args=("e.f", {}))
        thread.start()
        thread.join()
        self.assertEqual(value(registry, "chanserv_worker_messages_total", channel="a.b"), 2)
        self.assertEqual(value(registry, "chanserv_worker_messages_total", channel="c.d"), 1)
        self.assertEqual(value(registry, "chanserv_worker_messages_total", channel="e.f"), 1)
        self.assertEqual(
            value(
                registry, "chanserv_consumer_exceptions_total", consumer="tests.test_metrics.broken"
            ),
            1,
        )
        self.assertIsNone(
            value(
                registry, "chanserv_consumer_exceptions_total", consumer="tests.test_metrics.deny"
            ),
            "DenyConnection is handled, not an error",
        )
        self.assertEqual(
            value(
                registry, "chanserv_consumer_run_seconds_count", consumer="tests.test_metrics.echo"
            ),
            2,
        )
        self.assertEqual(value(registry, "chanserv_worker_threads"), 3)
        self.assertEqual(value(registry, "chanserv_worker_busy"), 0)
        self.assertEqual(value(registry, "chanserv_worker_parked_messages"), 0)
        self.assertEqual(value(registry, "chanserv_layer_messages_total"), 2)


class DroppedMessagesTests(SynchronousTestCase):
    def test_worker_and_layer_drops_are_reasons_of_one_family(self) -> None:
        """no_route, route_failed, send_failed and expired join the interface's reasons in one family."""
        from chanserv.channel import pending_message_store

        reactor = ClockReactor()
        layer = InMemoryChannelLayer(expiry=5, clock=reactor)
        wrapper = ChannelLayerWrapper(layer, "default", [route("a.b", echo, path=r"^/yes$")])
        pool = WorkerPool(reactor, 1)
        worker = WorkerService(reactor, layer, wrapper.router, pool, consumer_layer=wrapper)
        collector = MetricsCollector(layer)
        collector.watch_worker(worker, pool)
        registry = registry_of(collector)
        sent_failed = pending_message_store.dropped

        def dropped(reason: str) -> float | None:
            return value(registry, "chanserv_messages_dropped_total", reason=reason)

        self.assertEqual(dropped("no_route"), 0)
        self.assertEqual(dropped("expired"), 0)
        worker.handle("a.b", {"path": "/no"})
        worker.handle("x.y", {})
        self.assertEqual(dropped("no_route"), 2)
        self.assertEqual(dropped("route_failed"), 0)
        self.assertEqual(dropped("send_failed"), sent_failed)
        layer.send("a.b", {})
        layer.send("p!a", {})
        reactor.advance(5)
        self.assertEqual(dropped("expired"), 2)
        self.assertIsNone(dropped("overflow"), "no interface watched")

        interface = InterfaceHarness(ServerConfig())
        self.addCleanup(lambda: interface.stop())
        collector.watch_interface(interface.server)
        self.assertEqual(dropped("overflow"), 0)
        self.assertEqual(dropped("no_route"), 2)
        families = [m for m in collector.collect() if m.name == "chanserv_messages_dropped"]
        self.assertEqual(len(families), 1)

    def test_send_failed_follows_the_pending_store(self) -> None:
        """send_failed is the pending store's count of held sends that could not be sent."""
        from chanserv.channel import pending_message_store

        reactor = ClockReactor()
        layer = InMemoryChannelLayer(clock=reactor)
        wrapper = ChannelLayerWrapper(layer, "default", [])
        pool = WorkerPool(reactor, 1)
        collector = MetricsCollector(layer)
        collector.watch_worker(WorkerService(reactor, layer, wrapper.router, pool), pool)
        registry = registry_of(collector)
        before = value(registry, "chanserv_messages_dropped_total", reason="send_failed")
        pending_message_store._count_dropped()
        self.assertEqual(
            value(registry, "chanserv_messages_dropped_total", reason="send_failed"),
            (before or 0) + 1,
        )


class HealthTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = ClockReactor()
        self.health = Health(self.reactor)
        self.root = MultiService()
        self.root.startService()
        self.health.service = self.root
        self.health.layer = InMemoryChannelLayer()
        self.health.start()
        self.addCleanup(self.health.stop)

    def test_alive_while_the_heartbeat_runs(self) -> None:
        """The heartbeat keeps /healthz good while time passes; stalled, it goes stale."""
        self.reactor.advance(60)
        self.assertTrue(self.health.alive())
        self.health.stop()
        self.reactor.advance(STALE_AFTER + 1)
        self.assertFalse(self.health.alive())

    def test_readiness_falls_when_the_root_stops(self) -> None:
        """Ready while the root runs; 'draining' as soon as its stopService begins."""
        self.assertEqual(self.health.not_ready(), [])
        self.root.stopService()
        self.assertEqual(self.health.not_ready(), ["draining"])

    def test_readiness_needs_the_pool(self) -> None:
        """A pool that is not running makes the process not ready."""
        self.health.pool = WorkerPool(self.reactor, 1)
        self.assertEqual(self.health.not_ready(), ["worker pool not running"])

    def test_readiness_holds_off_after_a_state_loss(self) -> None:
        """After the layer reports its state lost, not ready for STATE_LOSS_HOLD seconds."""
        harness = InterfaceHarness(reactor=self.reactor)
        self.addCleanup(lambda: harness.stop())
        self.health.interface = harness.server
        harness.replies._state_lost()
        self.reactor.advance(1)
        self.assertEqual(self.health.not_ready(), ["layer lost its state"])
        self.reactor.advance(STATE_LOSS_HOLD)
        self.assertEqual(self.health.not_ready(), [])

    def test_redis_shards_must_be_up(self) -> None:
        """A Redis layer with a shard that is not up is not ready."""

        class Shard:
            state, address = "down", ("redis", 6379)

        class Layer:
            shards = [Shard()]

        self.health.layer = Layer()
        self.assertEqual(self.health.not_ready(), ["layer unreachable (('redis', 6379))"])


class MetricsServiceTests(SynchronousTestCase):
    def render(self, service: MetricsService, path: bytes) -> tuple[int, bytes]:
        request = DummyRequest([path])
        resource = service.site.getResourceFor(request)
        body = resource.render(request)
        return request.responseCode or 200, body

    def test_tree_serves_metrics_health_and_readiness(self) -> None:
        """build_service(metrics=...) puts the service first; it serves the three pages only."""
        reactor = ClockReactor()
        layer = InMemoryChannelLayer()
        root = tap.build_service(
            reactor,
            mode="interface",
            channel_layer=ChannelLayerWrapper(layer, "default", []),
            server_config=ServerConfig(endpoints=("tcp:8123",)),
            metrics="tcp:9100:interface=127.0.0.1",
        )
        children = list(root)
        service = children[0]
        self.assertIsInstance(service, MetricsService)
        root.startService()
        self.assertEqual(
            [(port, interface) for port, _, _, interface in reactor.tcpServers],
            [(9100, "127.0.0.1"), (8123, "")],
        )
        code, body = self.render(service, b"metrics")
        self.assertEqual(code, 200)
        self.assertNotIn(b"chanserv_worker_threads", body, "no pool in this mode")
        self.assertIn(b'chanserv_open_connections{kind="websocket"} 0.0', body)
        self.assertIn(b"chanserv_ready 1.0", body)
        self.assertEqual(self.render(service, b"healthz"), (200, b"ok\n"))
        self.assertEqual(self.render(service, b"readyz"), (200, b"ready\n"))
        self.assertEqual(self.render(service, b"")[0], 404)
        stopping = root.stopService()
        code, body = self.render(service, b"readyz")
        self.assertEqual(code, 503)
        self.assertIn(b"draining", body)
        reactor.advance(60)
        reactor.run_pending()
        self.successResultOf(stopping)


class OptionTests(SynchronousTestCase):
    def setUp(self) -> None:
        # Parsing puts folders on sys.path and sets DJANGO_SETTINGS_MODULE.
        self.patch(sys, "path", list(sys.path))
        self.addCleanup(os.environ.__setitem__, "DJANGO_SETTINGS_MODULE", "tests.settings")

    def parse(self, *argv: str) -> tap.Options:
        options = tap.Options()
        options.parseOptions(["--settings=tests.settings", *argv])
        return options

    def test_metrics_is_off_by_default_and_reaches_build_service(self) -> None:
        """--metrics defaults to none; its endpoint string goes to build_service as metrics."""
        self.assertIsNone(self.parse()["metrics"])
        calls: list[dict[str, Any]] = []
        self.patch(tap, "build_service", lambda reactor, **kwargs: calls.append(kwargs))
        self.addCleanup(set_verbosity, 1)
        tap.makeService(self.parse("--metrics=tcp:9100:interface=127.0.0.1"))
        self.assertEqual(calls[0]["metrics"], "tcp:9100:interface=127.0.0.1")

    def test_a_bad_endpoint_is_a_usage_error(self) -> None:
        """An endpoint string Twisted cannot parse fails option parsing, naming --metrics."""
        # A UsageError, which twistd chanserv may turn into a one-line exit.
        error = self.assertRaises((usage.UsageError, SystemExit), self.parse, "--metrics=nope:9100")
        self.assertIn("--metrics", str(error))


class RedisLayerCountersTests(SynchronousTestCase):
    def test_sends_are_timed_and_exported_with_the_shards(self) -> None:
        """A Redis send's round trip lands in send_seconds; shards export up and reconnects."""
        from twisted.internet.defer import Deferred
        from twisted.internet.task import Clock

        from chanserv.layers.redis import RedisChannelLayer

        layer = RedisChannelLayer(hosts=["redis://127.0.0.1:1/0"])
        replies: list[Deferred[list[int]]] = []

        class Shard:
            state, address, reconnects = "up", "127.0.0.1:1", 3

            def eval(self, script: object, keys: object, args: object) -> Deferred[list[int]]:
                replies.append(Deferred())
                return replies[-1]

        # Two sends in one reactor turn: one script call, two round trips timed.
        layer.operations.shards = [Shard()]  # type: ignore[list-item]
        layer.operations.reactor = clock = Clock()
        sent = [layer.operations.send("a", b"1"), layer.operations.send("b", b"2")]
        clock.advance(0)
        self.assertEqual(len(replies), 1)
        self.assertEqual(layer.send_seconds.count, 0)
        replies[0].callback([1, 1])
        self.assertEqual([self.successResultOf(d) for d in sent], [None, None])
        self.assertEqual(layer.send_seconds.count, 2)

        layer.shards = [Shard()]  # type: ignore[list-item]
        registry = registry_of(MetricsCollector(layer))
        self.assertEqual(value(registry, "chanserv_layer_send_seconds_count"), 2)
        self.assertEqual(value(registry, "chanserv_redis_up", shard="127.0.0.1:1"), 1)
        self.assertEqual(value(registry, "chanserv_redis_reconnects_total", shard="127.0.0.1:1"), 3)
        self.assertIsNone(value(registry, "chanserv_layer_messages_total"), "not scraped for Redis")
