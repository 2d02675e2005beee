"""
Tests for chanserv.testing: the clock reactor, the memory transport, the
client-side wire helpers, and the harness driving HTTP and WebSocket traffic
through a real interface server with no socket and no thread.
"""

from __future__ import annotations

import io
import struct
import textwrap
from typing import Any

from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime, ITCPTransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from chanserv.routing import route
from chanserv.server.accesslog import AccessLogWriter
from chanserv.server.config import ServerConfig
from chanserv.testing import (
    ClockReactor,
    Frame,
    HTTPResponse,
    InterfaceHarness,
    MemoryTransport,
    Opcode,
    close_code,
    decode_frames,
    encode_frame,
    http_request,
    parse_responses,
    websocket_accept,
    websocket_request,
)


class Recorder(Protocol):
    """Records why its connection was lost."""

    def __init__(self) -> None:
        self.reasons: list[Failure] = []

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.reasons.append(reason)


class ClockReactorTests(SynchronousTestCase):
    def test_provides_time_and_calls_from_threads(self) -> None:
        """A ClockReactor is an IReactorTime and an IReactorFromThreads."""
        reactor = ClockReactor()
        verifyObject(IReactorTime, reactor)
        verifyObject(IReactorFromThreads, reactor)

    def test_call_from_thread_waits_for_run_pending(self) -> None:
        """callFromThread runs nothing at once; run_pending runs it at the same time."""
        reactor = ClockReactor()
        calls: list[float] = []
        reactor.callFromThread(lambda: calls.append(reactor.seconds()))
        self.assertEqual(calls, [])
        reactor.run_pending()
        self.assertEqual(calls, [0.0])

    def test_run_pending_runs_chains_due_now_but_not_later_calls(self) -> None:
        """run_pending follows calls scheduled for now by due calls; later ones wait."""
        reactor = ClockReactor()
        calls: list[str] = []
        reactor.callLater(0, lambda: reactor.callLater(0, calls.append, "chained"))
        reactor.callLater(1, calls.append, "later")
        reactor.run_pending()
        self.assertEqual(calls, ["chained"])


class MemoryTransportTests(SynchronousTestCase):
    def test_is_a_tcp_transport(self) -> None:
        """Servers that set TCP options on their transport can use it."""
        transport = MemoryTransport()
        verifyObject(ITCPTransport, transport)
        transport.setTcpNoDelay(True)
        self.assertTrue(transport.getTcpNoDelay())

    def test_lose_delivers_connection_lost_once(self) -> None:
        """lose() calls connectionLost on the reading protocol once, ConnectionDone by default."""
        transport, protocol = MemoryTransport(), Recorder()
        transport.protocol = protocol
        transport.lose()
        transport.lose()
        self.assertEqual(len(protocol.reasons), 1)
        protocol.reasons[0].trap(ConnectionDone)
        self.assertFalse(transport.connected)

    def test_close_without_reactor_waits_for_lose(self) -> None:
        """With no reactor, a server close leaves the transport disconnecting, not lost."""
        transport, protocol = MemoryTransport(), Recorder()
        transport.protocol = protocol
        transport.loseConnection()
        self.assertTrue(transport.disconnecting)
        self.assertEqual(protocol.reasons, [])

    def test_close_with_reactor_ends_on_the_next_turn(self) -> None:
        """With a reactor, loseConnection ends the connection on the next turn, not inside."""
        reactor = ClockReactor()
        transport, protocol = MemoryTransport(reactor=reactor), Recorder()
        transport.protocol = protocol
        transport.loseConnection()
        transport.loseConnection()
        self.assertEqual(protocol.reasons, [])
        reactor.run_pending()
        self.assertEqual(len(protocol.reasons), 1)
        protocol.reasons[0].trap(ConnectionDone)

    def test_abort_ends_with_connection_aborted(self) -> None:
        """abortConnection (even after loseConnection) ends with ConnectionAborted."""
        reactor = ClockReactor()
        transport, protocol = MemoryTransport(reactor=reactor), Recorder()
        transport.protocol = protocol
        transport.loseConnection()
        transport.abortConnection()
        reactor.run_pending()
        [reason] = protocol.reasons
        reason.trap(ConnectionAborted)
        self.assertTrue(transport.disconnected)

    def test_unregister_producer_without_one_is_allowed(self) -> None:
        """As on TCP, unregistering a producer that is not there is no error."""
        MemoryTransport().unregisterProducer()


class WireTests(SynchronousTestCase):
    def test_http_request_frames_a_body(self) -> None:
        """http_request puts Host first and adds Content-Length for a body."""
        self.assertEqual(
            http_request(b"POST", b"/p", [(b"X-A", b"1")], b"abc"),
            b"POST /p HTTP/1.1\r\nHost: testserver\r\nX-A: 1\r\nContent-Length: 3\r\n\r\nabc",
        )

    def test_http_request_keeps_the_callers_framing(self) -> None:
        """No Content-Length is added when the headers frame the body already."""
        raw = http_request(b"POST", b"/", [(b"Transfer-Encoding", b"chunked")], b"0\r\n\r\n")
        self.assertNotIn(b"Content-Length", raw)
        self.assertEqual(http_request(host=None), b"GET / HTTP/1.1\r\n\r\n")

    def test_websocket_request_offers_subprotocols(self) -> None:
        """websocket_request has the required headers, the offer, then the caller's."""
        raw = websocket_request(b"/ws", [(b"Origin", b"http://o")], subprotocols=["a", "b"])
        head = raw.split(b"\r\n")
        self.assertEqual(head[0], b"GET /ws HTTP/1.1")
        self.assertIn(b"Sec-WebSocket-Protocol: a, b", head)
        self.assertEqual(head[-3], b"Origin: http://o")
        self.assertEqual(websocket_accept(), b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")

    def test_parse_responses_by_length_and_chunks(self) -> None:
        """Content-Length and chunked bodies (trailers dropped) are parsed in sequence."""
        data = (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n1;ext=1\r\nd\r\n0\r\nX-T: 1\r\n\r\n"
            b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 2"
        )
        responses, rest = parse_responses(data)
        self.assertEqual(
            responses,
            [
                HTTPResponse(200, b"OK", ((b"content-length", b"2"),), b"hi"),
                HTTPResponse(404, b"Not Found", ((b"transfer-encoding", b"chunked"),), b"abcd"),
                HTTPResponse(204, b"No Content", (), b""),
            ],
        )
        self.assertEqual(rest, b"HTTP/1.1 2")
        self.assertEqual(responses[1].header(b"Transfer-Encoding"), b"chunked")

    def test_parse_responses_waits_for_a_complete_body(self) -> None:
        """An incomplete body, or an unframed one while open, is not a response yet."""
        self.assertEqual(parse_responses(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhi")[0], [])
        self.assertEqual(parse_responses(b"HTTP/1.1 200 OK\r\n\r\n3\r\nabc\r\n")[0], [])
        unframed = b"HTTP/1.1 200 OK\r\n\r\nuntil the end"
        self.assertEqual(parse_responses(unframed)[0], [])
        [response] = parse_responses(unframed, closed=True)[0]
        self.assertEqual(response.body, b"until the end")

    def test_parse_responses_stops_after_101(self) -> None:
        """What follows a 101 is another protocol: left as the rest."""
        responses, rest = parse_responses(b"HTTP/1.1 101 Switching\r\nUpgrade: x\r\n\r\n\x81\x00")
        self.assertEqual([r.status for r in responses], [101])
        self.assertEqual(rest, b"\x81\x00")

    def test_encode_frame_masks_the_payload(self) -> None:
        """A client frame carries a mask key and the payload XORed with it."""
        data = encode_frame(Opcode.TEXT, b"hello")
        self.assertEqual(data[0], 0x81)
        self.assertEqual(data[1], 0x80 | 5)
        key, body = data[2:6], data[6:]
        self.assertEqual(bytes(b ^ key[i % 4] for i, b in enumerate(body)), b"hello")

    def test_encode_frame_length_forms_and_lies(self) -> None:
        """encode_frame uses 7-, 16- or 64-bit length forms, and writes a given length as is."""
        self.assertEqual(
            encode_frame(Opcode.BINARY, b"x" * 126, masked=False)[1:4], b"\x7e\x00\x7e"
        )
        big = encode_frame(Opcode.BINARY, b"x" * 65536, masked=False)
        self.assertEqual(big[1:10], b"\x7f" + struct.pack("!Q", 65536))
        self.assertEqual(encode_frame(Opcode.PING, b"", masked=False, length=3), b"\x89\x03")
        self.assertEqual(encode_frame(Opcode.TEXT, fin=False, rsv=4, masked=False), b"\x41\x00")

    def test_decode_frames_leaves_a_partial_frame_out(self) -> None:
        """decode_frames returns the complete server frames only."""
        data = b"\x81\x02hi" + b"\x88\x02\x03\xe8" + b"\x82\x7e\x01\x00" + b"x" * 10
        self.assertEqual(
            decode_frames(data), [Frame(Opcode.TEXT, b"hi"), Frame(Opcode.CLOSE, b"\x03\xe8")]
        )
        self.assertEqual(close_code(b"\x03\xe8"), 1000)
        self.assertIsNone(close_code(b""))


class HTTPHarnessTests(SynchronousTestCase):
    def test_http_round_trip(self) -> None:
        """A request reaches the layer as http.request; the reply is written to the client."""
        harness = InterfaceHarness()
        client = harness.connect()
        client.send_request(b"POST", b"/form?x=1", [(b"Content-Type", b"text/plain")], b"body")
        request = harness.expect("http.request")
        self.assertEqual(
            (request["method"], request["path"], request["query_string"], request["body"]),
            ("POST", "/form", b"x=1", b"body"),
        )
        self.assertEqual(request["scheme"], "http")
        harness.reply(
            request, {"status": 201, "headers": [[b"X-Done", b"yes"]], "content": b"made"}
        )
        response = client.response()
        self.assertEqual((response.status, response.body), (201, b"made"))
        self.assertEqual(response.header(b"x-done"), b"yes")
        self.assertFalse(client.closing)
        self.assertEqual(harness.expect("http.disconnect")["path"], "/form")

    def test_secure_connections_are_https(self) -> None:
        """connect(secure=True) gives scheme https."""
        harness = InterfaceHarness()
        harness.connect(secure=True).send_request()
        self.assertEqual(harness.expect("http.request")["scheme"], "https")

    def test_advance_runs_the_sweep(self) -> None:
        """Time moved with advance() applies http_timeout: a 503."""
        harness = InterfaceHarness(ServerConfig(http_timeout=10))
        client = harness.connect()
        client.send_request()
        harness.expect("http.request")
        harness.advance(9)
        self.assertEqual(client.responses(), [])
        harness.advance(1)
        self.assertEqual(client.response().status, 503)
        self.assertFalse(client.closing, "a 503 keeps the connection")

    def test_without_sweep_time_alone_applies_no_timeout(self) -> None:
        """sweep=False: only sweep() applies timeouts."""
        harness = InterfaceHarness(ServerConfig(http_timeout=10), sweep=False)
        client = harness.connect()
        client.send_request()
        harness.advance(60)
        self.assertEqual(client.responses(), [])
        harness.sweep()
        self.assertEqual(client.response().status, 503)

    def test_without_complete_closes_the_test_ends_the_connection(self) -> None:
        """complete_closes=False: a server close stays closing until the client's lose()."""
        harness = InterfaceHarness(complete_closes=False)
        client = harness.connect()
        client.send(b"GARBAGE\r\n\r\n")
        self.assertEqual(client.response().status, 400)
        self.assertTrue(client.closing)
        self.assertFalse(client.closed)
        client.lose()
        self.assertTrue(client.closed)
        self.assertEqual(harness.http_factory.connections, set())

    def test_access_log(self) -> None:
        """An access log given to the harness gets a line per response."""
        stream = io.StringIO()
        harness = InterfaceHarness(access_log=AccessLogWriter(stream, ClockReactor()))
        client = harness.connect()
        client.send_request(path=b"/logged")
        harness.reply(harness.expect("http.request"), {"status": 200})
        self.assertIn('"GET /logged HTTP/1.1" 200', stream.getvalue())

    def test_endpoints_listen_on_the_memory_reactor(self) -> None:
        """The config's endpoints are listened on by the memory reactor only."""
        harness = InterfaceHarness(ServerConfig(endpoints=("tcp:8123",)))
        [(port, factory, _, _)] = harness.reactor.tcpServers
        self.assertEqual(port, 8123)
        self.assertIs(factory, harness.http_factory)

    def test_stop_cuts_what_outlives_the_grace(self) -> None:
        """A request still unanswered when graceful_timeout has passed is cut."""
        harness = InterfaceHarness(ServerConfig(graceful_timeout=5))
        client = harness.connect()
        client.send_request()
        harness.expect("http.request")
        d = harness.stop()
        harness.advance(4)
        self.assertNoResult(d)
        self.assertFalse(client.closing)
        harness.advance(1)
        self.successResultOf(d)
        self.assertTrue(client.closed)


class WebSocketHarnessTests(SynchronousTestCase):
    def open(self, harness: InterfaceHarness, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        ws = harness.open_websocket(b"/chat/?room=1", **kwargs)
        connect = harness.expect("websocket.connect")
        self.assertIsNone(ws.status(), "the handshake waits for the application")
        harness.reply(connect, {"accept": True})
        self.assertEqual(ws.status(), 101)
        return ws, connect

    def test_connect_accept_receive_and_server_close(self) -> None:
        """Accept, a message each way, then a close code from the application seen by the client."""
        harness = InterfaceHarness()
        ws, connect = self.open(harness)
        self.assertEqual((connect["path"], connect["query_string"]), ("/chat/", b"room=1"))
        handshake = ws.handshake_response()
        assert handshake is not None
        self.assertEqual(handshake.header(b"sec-websocket-accept"), websocket_accept())
        ws.send_text("hello")
        ws.send_bytes(b"\x00\x01")
        received = harness.receive_all("websocket.receive")
        self.assertEqual(
            [(m.get("text"), m.get("bytes"), m["order"]) for m in received],
            [("hello", None, 1), (None, b"\x00\x01", 2)],
        )
        harness.reply(connect, {"text": "welcome", "close": 4001})
        self.assertEqual(ws.texts(), ["welcome"])
        self.assertEqual(ws.close_code(), 4001)
        self.assertFalse(ws.closed)
        ws.send_close(4001)
        self.assertTrue(ws.closed)
        disconnect = harness.expect("websocket.disconnect")
        self.assertEqual((disconnect["code"], disconnect["order"]), (4001, 3))

    def test_client_close_code_reaches_the_application(self) -> None:
        """A client's close frame is answered (1000) and its code sent in websocket.disconnect."""
        harness = InterfaceHarness()
        ws, _ = self.open(harness)
        ws.send_close(4321, "bye")
        self.assertEqual(ws.close_code(), 1000)
        self.assertTrue(ws.closed)
        self.assertEqual(harness.expect("websocket.disconnect")["code"], 4321)

    def test_client_that_goes_away_gives_1006(self) -> None:
        """A connection lost without a close frame is a 1006 disconnect."""
        harness = InterfaceHarness()
        ws, _ = self.open(harness)
        ws.lose()
        self.assertEqual(harness.expect("websocket.disconnect")["code"], 1006)

    def test_reject_and_connect_timeout(self) -> None:
        """{"close": True} while connecting is a 403; so is silence past the connect timeout."""
        harness = InterfaceHarness(ServerConfig(websocket_connect_timeout=5))
        rejected = harness.open_websocket()
        harness.reply(harness.expect("websocket.connect"), {"close": True})
        self.assertEqual(rejected.status(), 403)
        ignored = harness.open_websocket()
        harness.expect("websocket.connect")
        harness.advance(5)
        self.assertEqual(ignored.status(), 403)

    def test_ping_is_answered_and_secure_is_wss(self) -> None:
        """A ping gets its pong; secure=True gives scheme wss."""
        harness = InterfaceHarness()
        ws, connect = self.open(harness, secure=True, subprotocols=["chat"])
        self.assertEqual((connect["scheme"], connect["subprotocols"]), ("wss", ["chat"]))
        ws.send_ping(b"p")
        self.assertIn(Frame(Opcode.PONG, b"p"), ws.frames())
        self.assertEqual(ws.binaries(), [])

    def test_stop_closes_websockets_with_1001(self) -> None:
        """stop() closes open sockets with 1001, fires once they are gone, and detaches the layer."""
        harness = InterfaceHarness(ServerConfig(graceful_timeout=5))
        ws, _ = self.open(harness)
        d = harness.stop()
        self.assertEqual(ws.close_code(), 1001)
        self.assertNoResult(d)
        ws.send_close(1001)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(harness.expect("websocket.disconnect")["code"], 1001)
        harness.layer.attach_reactor(ClockReactor())  # free again


def echo(message: Any) -> None:
    message.reply_channel.send({"text": message["text"].upper()})


class ConsumeTests(SynchronousTestCase):
    def test_consumer_runs_inline_against_the_harness_layer(self) -> None:
        """consume() routes the message, runs the consumer here, and delivers its reply."""
        harness = InterfaceHarness()
        ws = harness.open_websocket(b"/echo/")
        routing = [route("websocket.receive", echo)]
        harness.consume("websocket.connect", routing)  # the default route accepts
        self.assertEqual(ws.status(), 101)
        ws.send_text("hi")
        harness.consume("websocket.receive", routing)
        self.assertEqual(ws.texts(), ["HI"])

    def test_consume_without_a_message_fails(self) -> None:
        """consume() on an empty channel is a test failure."""
        harness = InterfaceHarness()
        self.assertRaises(AssertionError, harness.consume, "websocket.receive", [])


class DocumentationTests(SynchronousTestCase):
    def test_module_example_runs_as_written(self) -> None:
        """The usage example of InterfaceHarness's docstring passes."""
        import chanserv.testing

        doc = textwrap.dedent(chanserv.testing.InterfaceHarness.__doc__ or "")
        example = doc[doc.index("    from chanserv.testing") : doc.index("Every method that")]
        namespace: dict[str, Any] = {}
        exec(textwrap.dedent(example), namespace)
        namespace["test_hello"]()
        namespace["test_echo"]()
