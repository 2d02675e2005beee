"""
ListenerService with a fake endpoint: a failure to bind raises a one-line
ListenError from the start, a late one is logged, the URL is logged once
listening, the port can be waited for, and stopping closes the port or
cancels a pending listen.
"""

from __future__ import annotations

import errno
from typing import Any

import pytest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import CannotListenError
from twisted.logger import capturedLogs, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from chanserv.server.listener import ListenError, ListenerService, address_url


class Port:
    stopped = False

    def __init__(self, address: Any = None) -> None:
        self.address = address or IPv4Address("TCP", "127.0.0.1", 8000)

    def getHost(self) -> Any:
        return self.address

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
        """A bind failure at privileged start raises ListenError and leaves no port."""
        service = ListenerService(Endpoint(fail(CannotListenError("", 80, "in use"))), None)
        with pytest.raises(ListenError):
            service.privilegedStartService()
        assert self.successResultOf(service.listening_port()) is None

    def test_port_in_use_is_one_line_saying_what_to_change(self) -> None:
        """A port in use: "Cannot listen on URL: address already in use", the flags to change."""
        in_use = OSError(errno.EADDRINUSE, "Address already in use")
        error = CannotListenError("127.0.0.1", 8000, in_use)
        service = ListenerService(Endpoint(fail(error)), None, "tcp:8000", tls=True)
        with pytest.raises(ListenError) as raised:
            service.privilegedStartService()
        message = str(raised.value)
        assert message.startswith(
            "Cannot listen on https://127.0.0.1:8000/: address already in use: "
        )
        assert message.endswith("stop it, or choose another port") and "\n" not in message

    def test_other_listen_errors_name_the_endpoint(self) -> None:
        """A failure with no known errno names the endpoint description and the error."""
        service = ListenerService(Endpoint(fail(ValueError("bad"))), None, "weird:1")
        with pytest.raises(ListenError, match=r"^Cannot listen on weird:1: bad$"):
            service.privilegedStartService()

    def test_logs_its_url_once_listening(self) -> None:
        """Once the port is bound, "Listening on URL" is logged with the port's real URL."""
        for address, tls, url in [
            (IPv4Address("TCP", "127.0.0.1", 8000), False, "http://127.0.0.1:8000/"),
            (IPv4Address("TCP", "0.0.0.0", 443), True, "https://0.0.0.0:443/"),
            (IPv6Address("TCP", "::1", 8001), False, "http://[::1]:8001/"),
            (UNIXAddress(b"/run/app.sock"), False, "unix:/run/app.sock"),
        ]:
            pending: Deferred[Any] = Deferred()
            service = ListenerService(Endpoint(pending), None, "x", tls=tls)
            with capturedLogs() as events:
                service.privilegedStartService()
                assert not events  # not before it listens
                pending.callback(Port(address))
            assert [formatEvent(e) for e in events] == ["Listening on " + url]

    def test_address_url_of_an_unknown_address_is_none(self) -> None:
        """An address that is neither TCP nor UNIX has no URL (the description is used)."""
        assert address_url(object()) is None

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
