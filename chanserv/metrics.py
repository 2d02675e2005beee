"""
Metrics and health on an endpoint of their own (``--metrics``):
:class:`MetricsCollector` turns the counters the server, the worker, the
pool and the layer keep as plain integers into Prometheus families at
scrape time, in a process-local registry; :class:`Health` says whether the
process is alive (its reactor turns) and ready (layer reachable, pool
running, not draining); :class:`MetricsService` serves ``/metrics``,
``/healthz`` and ``/readyz`` with a small twisted.web site.  Everything
here runs on the reactor thread; the counters it reads are written there
or, for the consumers, each by its own pool thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from twisted.application.service import MultiService
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.web import pages
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site

from chanserv.log import Logger
from chanserv.server.listener import ListenerService, endpoint_from_string
from chanserv.stats import Histogram

if TYPE_CHECKING:
    from chanserv.server.site import InterfaceServer
    from chanserv.threads import WorkerPool
    from chanserv.worker import WorkerService

__all__ = ["Health", "MetricsCollector", "MetricsService"]

log = Logger()

#: Seconds between two heartbeats of :class:`Health`.
HEARTBEAT_INTERVAL = 1.0
#: A heartbeat older than this many seconds makes ``/healthz`` answer 503.
STALE_AFTER = 5.0
#: Seconds ``/readyz`` answers 503 after the layer lost its state, while
#: the clients of the closed connections reconnect elsewhere.
STATE_LOSS_HOLD = 5.0


def _histogram(
    name: str,
    documentation: str,
    labelled: Iterable[tuple[list[str], list[Histogram]]],
    labels: list[str],
) -> HistogramMetricFamily:
    """One family from histograms (summed per label set) of the same bounds."""
    family = HistogramMetricFamily(name, documentation, labels=labels)
    for values, parts in labelled:
        if not parts:
            continue
        bounds = parts[0].bounds
        counts = [0] * (len(bounds) + 1)
        total = [0.0]
        for part in parts:
            part.add_to(counts, total)
        buckets: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip([*map(repr, bounds), "+Inf"], counts, strict=True):
            running += n
            buckets.append((bound, running))
        family.add_metric(values, buckets, total[0])
    return family


class MetricsCollector:
    """
    A ``prometheus_client`` collector of one process's counters.  It holds
    references to what it reads (:meth:`watch_interface`,
    :meth:`watch_worker`, :attr:`layer`) and builds every family when
    scraped: nothing is counted through ``prometheus_client`` on the
    per-message paths.  Reactor thread.
    """

    def __init__(self, layer: Any = None, health: Health | None = None) -> None:
        # Any: either layer (its counters are read by name, duck-typed).
        self.layer = layer
        self.health = health
        self.interface: InterfaceServer | None = None
        self.worker: WorkerService | None = None
        self.pool: WorkerPool | None = None

    def watch_interface(self, interface: InterfaceServer) -> None:
        """Export the counters of ``interface`` (its factories and reply dispatch)."""
        self.interface = interface

    def watch_worker(self, worker: WorkerService, pool: WorkerPool) -> None:
        """Export the counters of ``worker`` and ``pool``."""
        self.worker = worker
        self.pool = pool

    def collect(self) -> Iterator[Metric]:
        """Every family, built now.  Reactor thread."""
        yield from self._interface()
        yield from self._worker()
        yield from self._layer()
        yield self._dropped()
        if self.health is not None:
            ready = GaugeMetricFamily(
                "chanserv_ready", "1 while /readyz answers 200 (layer, pool, not draining)."
            )
            ready.add_metric([], 1.0 if not self.health.not_ready() else 0.0)
            yield ready

    def _interface(self) -> Iterator[Metric]:
        interface = self.interface
        if interface is None:
            return
        http = interface.http_factory
        ws = interface.websocket_factory
        replies = interface.replies
        connections = GaugeMetricFamily(
            "chanserv_open_connections", "Connections open now, by kind.", labels=["kind"]
        )
        connections.add_metric(["http"], len(http.connections))
        connections.add_metric(["websocket"], len(ws.connections))
        yield connections
        handshakes = CounterMetricFamily(
            "chanserv_websocket_handshakes",
            "WebSocket handshakes answered, by outcome (accepted: 101; rejected: an HTTP error).",
            labels=["outcome"],
        )
        handshakes.add_metric(["accepted"], ws.handshakes_accepted)
        handshakes.add_metric(["rejected"], ws.handshakes_rejected)
        yield handshakes
        messages = CounterMetricFamily(
            "chanserv_interface_messages",
            "Messages the interface server sent to the layer (in) or was handed (out), by channel.",
            labels=["direction", "channel"],
        )
        messages.add_metric(["in", "http.request"], http.requests_sent)
        messages.add_metric(["in", "websocket.receive"], ws.messages_received())
        messages.add_metric(["out", "reply"], replies.replies)
        yield messages
        refused = CounterMetricFamily(
            "chanserv_sends_refused",
            "Messages the layer refused because their channel was full, by channel (answered 503).",
            labels=["channel"],
        )
        refused.add_metric(["http.request"], http.requests_full)
        refused.add_metric(["websocket.connect"], ws.connects_full)
        yield refused
        closes = CounterMetricFamily(
            "chanserv_websocket_closes",
            "WebSockets this server closed for a bound, by reason.",
            labels=["reason"],
        )
        closes.add_metric(["overflow"], replies.overflow_closes)
        closes.add_metric(["receive_full"], ws.receive_full_closes)
        yield closes
        deadlines = CounterMetricFamily(
            "chanserv_http_deadline_closes",
            "HTTP connections closed with 408 for a missed deadline, by kind.",
            labels=["kind"],
        )
        for kind in ("head", "request", "body_idle"):
            deadlines.add_metric([kind], http.deadline_closes.get(kind, 0))
        yield deadlines
        losses = CounterMetricFamily(
            "chanserv_layer_state_losses", "Times the channel layer reported its state lost."
        )
        losses.add_metric([], replies.state_losses)
        yield losses

    def _worker(self) -> Iterator[Metric]:
        pool = self.pool
        if pool is not None:
            threads = GaugeMetricFamily("chanserv_worker_threads", "Threads of the worker pool.")
            threads.add_metric([], pool.size)
            yield threads
            busy = GaugeMetricFamily(
                "chanserv_worker_busy",
                "Messages handed to the pool and not finished (running or about to).",
            )
            busy.add_metric([], pool.busy)
            yield busy
        worker = self.worker
        if worker is None:
            return
        parked = GaugeMetricFamily(
            "chanserv_worker_parked_messages",
            "Messages waiting behind an earlier message of their reply channel.",
        )
        parked.add_metric([], worker.lanes.parked if worker.lanes is not None else 0)
        yield parked
        handled: dict[str, int] = {}
        errors: dict[str, int] = {}
        runs: dict[str, list[Histogram]] = {}
        for stats in worker.stats.all():
            for channel, n in stats.handled.copy().items():
                handled[channel] = handled.get(channel, 0) + n
            for name, n in stats.errors.copy().items():
                errors[name] = errors.get(name, 0) + n
            for name, histogram in stats.runs.copy().items():
                runs.setdefault(name, []).append(histogram)
        messages = CounterMetricFamily(
            "chanserv_worker_messages",
            "Messages the worker routed to a consumer, by channel.",
            labels=["channel"],
        )
        for channel in sorted(handled):
            messages.add_metric([channel], handled[channel])
        yield messages
        exceptions = CounterMetricFamily(
            "chanserv_consumer_exceptions",
            "Exceptions consumers raised (logged with a traceback), by consumer.",
            labels=["consumer"],
        )
        for name in sorted(errors):
            exceptions.add_metric([name], errors[name])
        yield exceptions
        yield _histogram(
            "chanserv_consumer_run_seconds",
            "Seconds a consumer run took, signals included, by consumer.",
            [([name], runs[name]) for name in sorted(runs)],
            ["consumer"],
        )
        yield _histogram(
            "chanserv_layer_receive_seconds",
            "Seconds from the worker asking the layer for a batch to getting it "
            "(includes waiting while the channels are empty).",
            [([], [worker.receive_seconds])],
            [],
        )

    def _dropped(self) -> Metric:
        """
        One family of every message this process dropped, by reason: the
        interface's (overflow, gone, disconnect_lost), the worker's (no_route,
        route_failed, send_failed) and the layer's (expired; with Redis also
        undecodable and handback_lost).
        """
        dropped = CounterMetricFamily(
            "chanserv_messages_dropped",
            "Messages that could not be delivered, by reason.",
            labels=["reason"],
        )
        interface = self.interface
        if interface is not None:
            dropped.add_metric(["overflow"], interface.replies.dropped)
            dropped.add_metric(["gone"], interface.replies.gone)
            dropped.add_metric(
                ["disconnect_lost"],
                interface.websocket_factory.disconnects_lost
                + interface.http_factory.disconnects_lost,
            )
        worker = self.worker
        if worker is not None:
            # Imported here: a process without a worker loads no Django.
            from chanserv.channel import pending_message_store

            no_route = route_failed = 0
            for stats in worker.stats.all():
                no_route += stats.no_route
                route_failed += stats.route_failed
            dropped.add_metric(["no_route"], no_route)
            dropped.add_metric(["route_failed"], route_failed)
            dropped.add_metric(["send_failed"], pending_message_store.dropped)
        expired = self._expired()
        if expired is not None:
            dropped.add_metric(["expired"], expired)
        operations = getattr(self.layer, "operations", None)
        if operations is not None and hasattr(operations, "undecodable"):
            # Redis layer: messages taken off Redis and then dropped.
            dropped.add_metric(["undecodable"], operations.undecodable)
            dropped.add_metric(["handback_lost"], operations.lost)
        return dropped

    def _expired(self) -> int | None:
        """
        Messages the layer dropped because they expired unread: the
        in-memory layer's count (a lock and a sum), or the Redis layer's
        local view -- those this process's script calls found, so that the
        sum over processes is the cluster's -- with no round trip.
        """
        layer = self.layer
        if layer is None:
            return None
        if getattr(layer, "local_only", False):
            count: int = layer.global_statistics().get("expired_count", 0)
            return count
        operations = getattr(layer, "operations", None)
        return getattr(operations, "expired", None)

    def _layer(self) -> Iterator[Metric]:
        layer = self.layer
        if layer is None:
            return
        groups = CounterMetricFamily(
            "chanserv_group_sends", "Group sends made through this process's layer."
        )
        groups.add_metric([], getattr(layer, "group_sends", 0))
        yield groups
        if hasattr(layer, "group_deliveries"):
            deliveries = CounterMetricFamily(
                "chanserv_group_deliveries",
                "Member deliveries of group sends (in-memory layer; full members excluded).",
            )
            deliveries.add_metric([], layer.group_deliveries)
            yield deliveries
        if getattr(layer, "local_only", False):
            # In-process: a lock and a sum, cheap enough for every scrape.  (The
            # Redis layer's are cluster-wide and cost a SCAN: not scraped.)
            stats = layer.global_statistics()
            sent = CounterMetricFamily(
                "chanserv_layer_messages", "Messages the in-memory layer accepted."
            )
            sent.add_metric([], stats["messages_count"])
            yield sent
            full = CounterMetricFamily(
                "chanserv_layer_channel_full",
                "Messages the in-memory layer refused for a full channel, plus those a "
                "connection dropped when its queue overflowed.",
            )
            full.add_metric([], stats["channel_full_count"])
            yield full
            pending = GaugeMetricFamily(
                "chanserv_layer_messages_pending", "Messages waiting in the in-memory layer."
            )
            pending.add_metric([], stats["messages_pending"])
            yield pending
        send_seconds = getattr(layer, "send_seconds", None)
        if send_seconds is not None:
            yield _histogram(
                "chanserv_layer_send_seconds",
                "Seconds a send from this process took, to Redis and back (Redis layer).",
                [([], [send_seconds])],
                [],
            )
        shards = getattr(layer, "shards", None)
        if shards is not None:
            up = GaugeMetricFamily(
                "chanserv_redis_up", "1 while the shard's connection is up.", labels=["shard"]
            )
            reconnects = CounterMetricFamily(
                "chanserv_redis_reconnects",
                "Connections to the shard made again after one was lost.",
                labels=["shard"],
            )
            for shard in shards:
                label = str(shard.address)
                up.add_metric([label], 1.0 if shard.state == "up" else 0.0)
                reconnects.add_metric([label], shard.reconnects)
            yield up
            yield reconnects


class Health:
    """
    Liveness and readiness of one process.  A heartbeat, rescheduled every
    :data:`HEARTBEAT_INTERVAL` seconds with ``callLater``, shows that the
    reactor turns; readiness falls as soon as the root service stops
    running (the very start of a graceful stop), when the layer is
    unreachable or just lost its state, or when the pool is not running.
    Reactor thread.
    """

    def __init__(self, reactor: IReactorTime) -> None:
        self.reactor = reactor
        self.beat = reactor.seconds()
        self._call: IDelayedCall | None = None
        self._state_losses = 0
        self._lost_at: float | None = None
        #: The service whose ``running`` says the process serves (the root).
        self.service: Any = None
        self.layer: Any = None
        self.pool: WorkerPool | None = None
        self.interface: InterfaceServer | None = None

    def start(self) -> None:
        """Start the heartbeat."""
        self._beat()

    def stop(self) -> None:
        """Stop the heartbeat."""
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()

    def _beat(self) -> None:
        self.beat = now = self.reactor.seconds()
        interface = self.interface
        if interface is not None and interface.replies.state_losses != self._state_losses:
            self._state_losses = interface.replies.state_losses
            self._lost_at = now
        self._call = self.reactor.callLater(HEARTBEAT_INTERVAL, self._beat)

    def alive(self) -> bool:
        """The heartbeat is recent: the reactor turns."""
        return self.reactor.seconds() - self.beat <= STALE_AFTER

    def not_ready(self) -> list[str]:
        """Why the process is not ready; empty when it is."""
        reasons = []
        if self.service is not None and not self.service.running:
            reasons.append("draining")
        layer = self.layer
        for shard in getattr(layer, "shards", None) or ():
            if shard.state != "up":
                reasons.append("layer unreachable (%s)" % (shard.address,))
        if (
            layer is not None
            and getattr(layer, "shards", ()) == []
            and not getattr(layer, "local_only", False)
        ):
            reasons.append("layer not attached")
        lost_at = self._lost_at
        if lost_at is not None and self.reactor.seconds() - lost_at < STATE_LOSS_HOLD:
            reasons.append("layer lost its state")
        if self.pool is not None and not self.pool.running:
            reasons.append("worker pool not running")
        return reasons


class _Page(Resource):
    isLeaf = True

    def __init__(self, render: Any) -> None:
        super().__init__()
        self._render = render

    def render_GET(self, request: Request) -> bytes:
        code, content_type, body = self._render()
        request.setResponseCode(code)
        request.setHeader(b"content-type", content_type)
        request.setHeader(b"cache-control", b"no-store")
        return body

    render_HEAD = render_GET


class _Root(Resource):
    def getChild(self, path: bytes, request: Request) -> IResource:
        return pages.notFound()  # anything but the three pages


class _QuietSite(Site):
    def log(self, request: Any) -> None:
        pass  # one line per scrape or probe would drown the log


class MetricsService(MultiService):
    """
    Serves ``/metrics`` (Prometheus text format), ``/healthz`` (200 while
    the reactor turns, else 503) and ``/readyz`` (200 when ready, else 503
    with the reasons) on ``endpoint`` (a server endpoint string), never on
    the public port.  Add it to the root service first, so that it stops
    last: ``/readyz`` answers 503 for the whole graceful stop.  Reactor
    thread.
    """

    name = "metrics"

    def __init__(self, reactor: Any, endpoint: str, layer: Any = None) -> None:
        # Any: the endpoint may need any of IReactorTCP, IReactorSSL, IReactorUNIX, and
        # IReactorTime (the heartbeat); the layer is either layer, duck-typed.
        super().__init__()
        self.health = Health(reactor)
        self.health.layer = layer
        self.collector = MetricsCollector(layer, self.health)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        ProcessCollector(registry=self.registry)
        root = _Root()
        root.putChild(b"metrics", _Page(self._metrics))
        root.putChild(b"healthz", _Page(self._healthz))
        root.putChild(b"readyz", _Page(self._readyz))
        self.site = _QuietSite(root)
        self.endpoint = endpoint
        self.listener = ListenerService(
            endpoint_from_string(reactor, endpoint), self.site, description=endpoint
        )
        self.listener.setServiceParent(self)

    def watch_interface(self, interface: InterfaceServer) -> None:
        """Export and check ``interface`` (counters; state losses for readiness)."""
        self.collector.watch_interface(interface)
        self.health.interface = interface

    def watch_worker(self, worker: WorkerService, pool: WorkerPool) -> None:
        """Export ``worker`` and ``pool``; readiness needs ``pool`` running."""
        self.collector.watch_worker(worker, pool)
        self.health.pool = pool

    def startService(self) -> None:
        self.health.service = self.parent if self.parent is not None else self
        self.health.start()
        super().startService()
        log.info("Metrics, /healthz and /readyz on {endpoint}", endpoint=self.endpoint)

    def stopService(self) -> Any:
        # Any: MultiService.stopService's Deferred (of a list of results).
        self.health.stop()
        return super().stopService()

    def _metrics(self) -> tuple[int, bytes, bytes]:
        return 200, CONTENT_TYPE_LATEST.encode("ascii"), generate_latest(self.registry)

    def _healthz(self) -> tuple[int, bytes, bytes]:
        if self.health.alive():
            return 200, b"text/plain", b"ok\n"
        return 503, b"text/plain", b"reactor stalled\n"

    def _readyz(self) -> tuple[int, bytes, bytes]:
        reasons = self.health.not_ready()
        if not reasons:
            return 200, b"text/plain", b"ready\n"
        return 503, b"text/plain", ("not ready: %s\n" % "; ".join(reasons)).encode("utf-8")
