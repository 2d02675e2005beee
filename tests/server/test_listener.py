"""
ListenerService with a fake endpoint: a failure to bind raises from the
start, a late one is logged, the port can be waited for, and stopping closes
the port or cancels a pending listen.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import CannotListenError
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from chanserv.server.listener import ListenerService


class Port:
    stopped = False

    def stopListening(self) -> Deferred[None]:
        self.stopped = True
        return succeed(None)


class Endpoint:
    def __init__(self, result: Deferred[Any]) -> None:
        self.result = result
        self.factories: list[Any] = []

    def listen(self, factory: Any) -> Deferred[Any]:
        self.factories.append(factory)
        return self.result


class ListenerServiceTests(SynchronousTestCase):
    def test_listens_once_and_stops_listening(self) -> None:
        """The service listens once with its factory, and stopping it closes the port."""
        port = Port()
        endpoint = Endpoint(succeed(port))
        service = ListenerService(endpoint, "factory")
        service.privilegedStartService()
        service.startService()
        assert endpoint.factories == ["factory"]
        assert self.successResultOf(service.listening_port()) is port
        self.successResultOf(service.stopService())
        assert port.stopped and not service.running
        assert self.successResultOf(service.listening_port()) is None

    def test_a_port_that_cannot_be_bound_fails_the_start(self) -> None:
        """A bind failure at privileged start raises from the start and leaves no port."""
        service = ListenerService(Endpoint(fail(CannotListenError("", 80, "in use"))), None)
        with pytest.raises(CannotListenError):
            service.privilegedStartService()
        assert self.successResultOf(service.listening_port()) is None

    def test_a_late_failure_is_logged(self) -> None:
        """A listen that fails after start is logged as "Cannot listen" and yields no port."""
        pending: Deferred[Any] = Deferred()
        service = ListenerService(Endpoint(pending), None)
        service.startService()
        waiting = service.listening_port()
        self.assertNoResult(waiting)
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        try:
            pending.errback(CannotListenError("", 80, "in use"))
        finally:
            globalLogPublisher.removeObserver(events.append)
        assert self.successResultOf(waiting) is None
        assert any("Cannot listen" in e.get("log_format", "") for e in events)
        self.flushLoggedErrors(CannotListenError)

    def test_stopping_cancels_a_pending_listen(self) -> None:
        """Stopping the service before the port is bound cancels the pending listen."""
        cancelled: list[Deferred[Any]] = []
        pending: Deferred[Any] = Deferred(cancelled.append)
        service = ListenerService(Endpoint(pending), None)
        service.startService()
        self.successResultOf(service.stopService())
        assert cancelled == [pending]
