"""
Unit tests of chanserv.server.request (WebRequest) through
:class:`chanserv.testing.InterfaceHarness`, for what the HTTP protocol tests
(test_http*.py, test_hostile_http.py, test_deadlines.py) leave out: the
head checks' WebSocket branches, the application's own ``Connection:
close``, bodiless statuses, a failed ``http.request`` send, a failed
WebSocket hand-over and a layer that lost its state.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.trial.unittest import SynchronousTestCase

from chanserv.layers.inmemory import InMemoryChannelLayer
from chanserv.server.config import ServerConfig
from chanserv.testing import HTTPClient, InterfaceHarness, websocket_request


class BrokenLayer(InMemoryChannelLayer):
    """An in-memory layer whose ``http.request`` sends fail unexpectedly."""

    def send_twisted(self, channel: str, message: dict[str, Any]) -> Deferred[None]:
        if channel == "http.request":
            return fail(RuntimeError("the layer broke"))
        return super().send_twisted(channel, message)


class HeadCheckTests(SynchronousTestCase):
    """WebRequest.head_problem: what makes a request a WebSocket upgrade, and size limits."""

    def test_websocket_among_other_upgrade_tokens_is_an_upgrade(self) -> None:
        """Upgrade is a token list, compared without case: "h2c, WebSocket" upgrades."""
        harness = InterfaceHarness()
        raw = websocket_request(b"/ws").replace(b"Upgrade: websocket", b"Upgrade: h2c, WebSocket")
        harness.connect().send(raw)
        self.assertEqual(harness.expect("websocket.connect")["path"], "/ws")

    def test_upgrade_with_an_empty_body_is_an_upgrade(self) -> None:
        """Content-Length: 0 is no body: the upgrade goes ahead."""
        harness = InterfaceHarness()
        harness.open_websocket(b"/ws", [(b"Content-Length", b"0")])
        self.assertIsNotNone(harness.receive("websocket.connect"))

    def test_two_hosts_on_http_10_are_refused(self) -> None:
        """HTTP/1.0 may leave Host out, but never send two."""
        harness = InterfaceHarness()
        client = harness.connect()
        client.send(b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n")
        self.assertEqual(client.response().status, 400)
        self.assertIsNone(harness.receive("http.request"))

    def test_no_body_limit_when_max_body_size_is_none(self) -> None:
        """max_body_size=None: a huge Content-Length is not refused up front."""
        harness = InterfaceHarness(ServerConfig(max_body_size=None))
        client = harness.connect()
        client.send_request(b"POST", b"/", [(b"Content-Length", b"%d" % (1 << 40))])
        self.assertEqual(client.written(), b"")
        self.assertFalse(client.closing)


class ResponseTests(SynchronousTestCase):
    """WebRequest.deliver / _start_response / _finish_response."""

    def respond(self, reply: dict[str, Any], method: bytes = b"GET") -> HTTPClient:
        self.harness = InterfaceHarness()
        client = self.harness.connect()
        client.send_request(method)
        self.harness.reply(self.harness.expect("http.request"), reply)
        return client

    def test_application_connection_close_ends_the_connection(self) -> None:
        """A Connection: close header from the application closes after the response."""
        client = self.respond({"status": 200, "headers": [[b"Connection", b"close"]]})
        self.assertEqual(client.response().header(b"connection"), b"close")
        self.assertTrue(client.closed)

    def test_bodiless_status_with_a_content_length_keeps_the_connection(self) -> None:
        """A 304 declaring a length it never sends is complete: no close."""
        client = self.respond({"status": 304, "headers": [[b"content-length", b"5"]]})
        self.assertEqual(
            client.written(), b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n"
        )
        self.assertFalse(client.closing)

    def test_chunks_then_the_end_of_the_response(self) -> None:
        """more_content keeps the response open; the last message completes it, then http.disconnect."""
        client = self.respond({"status": 200, "content": b"a", "more_content": True})
        self.assertEqual(client.responses(), [])
        self.assertIsNone(self.harness.receive("http.disconnect"))
        request_channel = client.protocol.requests[0].reply_channel
        assert request_channel is not None
        self.harness.reply(request_channel, {"content": b"b"})
        self.assertEqual(client.response().body, b"ab")
        self.assertEqual(self.harness.expect("http.disconnect")["reply_channel"], request_channel)


class DispatchFailureTests(SynchronousTestCase):
    """WebRequest._request_failed and _upgrade."""

    def test_request_too_large_for_the_layer_gives_500(self) -> None:
        """An http.request over the layer's max_message_size: 500, closed, nothing sent."""
        harness = InterfaceHarness(layer=InMemoryChannelLayer(max_message_size=1024))
        client = harness.connect()
        client.send_request(b"POST", b"/big", body=b"x" * 2000)
        self.assertEqual(client.response().status, 500)
        self.assertTrue(client.closed)
        self.assertIsNone(harness.receive("http.request"))
        self.assertIsNone(harness.receive("http.disconnect"))

    def test_unexpected_send_failure_gives_500_and_is_logged(self) -> None:
        """Any other failure sending http.request: 500, and the failure is logged."""
        harness = InterfaceHarness(layer=BrokenLayer())
        client = harness.connect()
        client.send_request()
        self.assertEqual(client.response().status, 500)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_failed_websocket_hand_over_aborts_the_connection(self) -> None:
        """An exception while the WebSocket side takes over: logged, connection aborted."""
        harness = InterfaceHarness()

        def upgrade(request: Any) -> None:
            raise RuntimeError("no hand-over")

        self.patch(harness.websocket_factory, "upgrade", upgrade)
        client = harness.open_websocket()
        self.assertTrue(client.transport.disconnected)
        self.assertEqual(client.written(), b"")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class StateLostTests(SynchronousTestCase):
    """WebRequest.layer_state_lost, as the reply registry calls it."""

    def test_before_the_response_gives_503(self) -> None:
        """Its reply may be lost with the layer's state: 503, the connection kept."""
        harness = InterfaceHarness()
        client = harness.connect()
        client.send_request()
        client.protocol.requests[0].layer_state_lost()
        response = client.response()
        self.assertEqual(response.status, 503)
        self.assertEqual(response.body, b"Channel layer lost its state; please retry\n")
        self.assertFalse(client.closing)

    def test_after_the_response_started_cuts_the_connection(self) -> None:
        """A response already on the wire cannot be answered again: the connection is cut."""
        harness = InterfaceHarness()
        client = harness.connect()
        client.send_request()
        reply = {"status": 200, "content": b"a", "more_content": True}
        harness.reply(harness.expect("http.request"), reply)
        client.protocol.requests[0].layer_state_lost()
        harness.run()
        self.assertTrue(client.closed)
        self.assertNotIn(b"503", client.written())
