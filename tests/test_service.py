"""
Unit tests of chanserv.service: the layer's reactor face bound for the life
of the process, and the root service's ordered start, sequential reverse
stop, ready message and exit status -- on a memory reactor, no thread.
"""

from __future__ import annotations

import signal
from typing import Any

from twisted.application.service import IService, Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from chanserv.layers.inmemory import InMemoryChannelLayer
from chanserv.service import ChanservService, LayerService
from chanserv.testing import ClockReactor


class RecordingLayer:
    """Records attach_reactor / detach_reactor; detaching returns :attr:`detached`."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.detached: Deferred[None] = Deferred()

    def attach_reactor(self, reactor: Any) -> None:
        self.calls.append(("attach", reactor))

    def detach_reactor(self) -> Deferred[None]:
        self.calls.append(("detach", None))
        return self.detached


class Recording(Service):
    """A child service that writes its start and stop in ``journal``."""

    def __init__(self, name: str, journal: list[str], stopped: Deferred[None] | None = None):
        self.setName(name)
        self.journal = journal
        self.stopped = stopped

    def startService(self) -> None:
        super().startService()
        self.journal.append("start " + self.name)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self.journal.append("stop " + self.name)
        return self.stopped if self.stopped is not None else succeed(None)


class LayerServiceTests(SynchronousTestCase):
    def test_is_a_service_named_layer(self) -> None:
        """LayerService provides IService under the name "layer"."""
        service = LayerService(ClockReactor(), RecordingLayer())
        verifyObject(IService, service)
        self.assertEqual(service.name, "layer")

    def test_start_attaches_the_injected_reactor(self) -> None:
        """startService binds the layer to the reactor it was given."""
        reactor, layer = ClockReactor(), RecordingLayer()
        LayerService(reactor, layer).startService()
        self.assertEqual(layer.calls, [("attach", reactor)])

    def test_stop_waits_for_the_layer_to_detach(self) -> None:
        """stopService detaches, and fires only when the layer has let go."""
        layer = RecordingLayer()
        service = LayerService(ClockReactor(), layer)
        service.startService()
        d = service.stopService()
        self.assertEqual(layer.calls[-1], ("detach", None))
        self.assertFalse(service.running)
        self.assertNoResult(d)
        layer.detached.callback(None)
        self.assertIsNone(self.successResultOf(d))

    def test_in_memory_layer_round_trip(self) -> None:
        """With the real in-memory layer: its timers run on the reactor only while started."""
        reactor, layer = ClockReactor(), InMemoryChannelLayer()
        service = LayerService(reactor, layer)
        service.startService()
        self.assertEqual(len(reactor.getDelayedCalls()), 1, "the expiry sweep")
        self.successResultOf(service.stopService())
        self.assertEqual(reactor.getDelayedCalls(), [])


class ChanservServiceTests(SynchronousTestCase):
    def tree(self, *stops: Deferred[None] | None) -> tuple[ChanservService, list[str]]:
        journal: list[str] = []
        root = ChanservService("all set", reactor=ClockReactor())
        for i, stopped in enumerate(stops):
            Recording("child%d" % i, journal, stopped).setServiceParent(root)
        return root, journal

    def test_starts_in_order_then_logs_ready(self) -> None:
        """Children start in the order added; the ready message comes after all of them."""
        root, journal = self.tree(None, None)
        verifyObject(IService, root)
        with capturedLogs() as events:
            root.startService()
        self.assertEqual(journal, ["start child0", "start child1"])
        ready = [e for e in events if e.get("log_namespace") == "chanserv.service"]
        self.assertEqual([formatEvent(e) for e in ready], ["all set"])
        self.assertEqual(ready[0]["log_level"], LogLevel.info)

    def test_stops_in_reverse_one_after_the_other(self) -> None:
        """Each child stops only once the one started after it has stopped."""
        last: Deferred[None] = Deferred()
        root, journal = self.tree(None, last)
        root.startService()
        d = root.stopService()
        self.assertEqual(journal[2:], ["stop child1"])
        self.assertNoResult(d)
        last.callback(None)
        self.assertEqual(journal[2:], ["stop child1", "stop child0"])
        self.assertIsNone(self.successResultOf(d))

    def test_a_failing_stop_is_logged_and_the_rest_still_stop(self) -> None:
        """A child whose stop fails is logged; the others stop and stopService succeeds."""
        root, journal = self.tree(None, fail(RuntimeError("stuck")))
        root.startService()
        with capturedLogs() as events:
            self.successResultOf(root.stopService())
        self.assertEqual(journal[2:], ["stop child1", "stop child0"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertIn("chanserv stopped", [formatEvent(e) for e in events])

    def test_orderly_stop_after_sigterm_exits_zero(self) -> None:
        """A complete stop after SIGTERM forgets the signal (twistd then exits 0)."""
        reactor = ClockReactor()
        reactor._exitSignal = signal.SIGTERM  # type: ignore[attr-defined]
        root = ChanservService(reactor=reactor)
        root.startService()
        self.successResultOf(root.stopService())
        self.assertIsNone(reactor._exitSignal)  # type: ignore[attr-defined]

    def test_unclean_stop_keeps_the_signal(self) -> None:
        """A stop with a failure keeps SIGTERM, so the exit status tells."""
        reactor = ClockReactor()
        reactor._exitSignal = signal.SIGTERM  # type: ignore[attr-defined]
        root = ChanservService(reactor=reactor)
        Recording("bad", [], fail(RuntimeError("stuck"))).setServiceParent(root)
        root.startService()
        self.successResultOf(root.stopService())
        self.flushLoggedErrors(RuntimeError)
        self.assertEqual(reactor._exitSignal, signal.SIGTERM)  # type: ignore[attr-defined]
