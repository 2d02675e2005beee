"""
TLS listeners of the interface server on real sockets (the global reactor in
its thread), with a self-signed certificate made in the test: ALPN gives
``h2`` to a client offering it, ``http/1.1`` to one that offers only that,
and a client without ALPN still gets HTTP/1.1 -- each one then exchanges a
request with a consumer over the in-memory layer.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest

from chanserv.layers.inmemory import InMemoryChannelLayer
from tests.server import test_site as site_tests
from tests.server.test_site import Start, _self_signed

# The real-socket fixtures of test_site: the reactor thread's layer, and
# start(*endpoints, **config) -> (InterfaceServer, listening ports).
layer = site_tests.layer
start = site_tests.start

# Twisted's ssl: endpoint hands pyOpenSSL objects to pyOpenSSL, which now warns.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:OpenSSL")


@pytest.fixture
def tls_endpoint(tmp_path: Path) -> Iterator[str]:
    key, cert = _self_signed(tmp_path)
    yield "ssl:port=0:interface=127.0.0.1:privateKey=%s:certKey=%s" % (key, cert)


def connect(port: Any, alpn: list[str] | None) -> ssl.SSLSocket:
    """A TLS connection to ``port`` offering ``alpn`` (None: no ALPN extension)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    raw = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=10)
    return context.wrap_socket(raw, server_hostname="localhost")


def answer(layer: InMemoryChannelLayer, body: bytes) -> dict[str, Any]:
    """Take the next ``http.request`` and reply 200 with ``body``; return the request."""
    _, message = layer.receive(["http.request"], block=True)
    layer.send(
        message["reply_channel"],
        {"status": 200, "headers": [[b"content-type", b"text/plain"]], "content": body},
    )
    return message


def http11_exchange(sock: ssl.SSLSocket, layer: InMemoryChannelLayer) -> tuple[bytes, Any]:
    sock.sendall(b"GET /one HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    message = answer(layer, b"over http/1.1")
    response = b""
    while chunk := sock.recv(65536):
        response += chunk
    return response, message


class H2Client:
    """A minimal HTTP/2 client over a TLS socket (the ``h2`` package)."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.sock = sock
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.h2.initiate_connection()
        self.sock.sendall(self.h2.data_to_send())

    def get(self, path: bytes, layer: InMemoryChannelLayer | None) -> tuple[int, bytes, Any]:
        """
        GET ``path`` on a new stream; with ``layer``, answer it as a consumer.
        Returns ``(status, body, the http.request message or None)``.
        """
        stream_id = self.h2.get_next_available_stream_id()
        self.h2.send_headers(
            stream_id,
            [
                (b":method", b"GET"),
                (b":path", path),
                (b":scheme", b"https"),
                (b":authority", b"lh"),
            ],
            end_stream=True,
        )
        self.sock.sendall(self.h2.data_to_send())
        message = answer(layer, b"over h2") if layer is not None else None
        status, body = 0, b""
        while True:
            data = self.sock.recv(65536)
            assert data, "the server closed the connection"
            for event in self.h2.receive_data(data):
                if getattr(event, "stream_id", None) != stream_id:
                    continue
                if isinstance(event, h2.events.ResponseReceived):
                    status = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                    self.h2.acknowledge_received_data(event.flow_controlled_length, stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    return status, body, message
            self.sock.sendall(self.h2.data_to_send())


def test_alpn_h2_is_chosen_and_served(
    start: Start, layer: InMemoryChannelLayer, tls_endpoint: str, tmp_path: Path
) -> None:
    """ALPN picks h2; its requests go out as https, version 2, and are access-logged."""
    log = tmp_path / "access.log"
    _, [port] = start(tls_endpoint, access_log=str(log))
    with connect(port, ["h2", "http/1.1"]) as sock:
        assert sock.selected_alpn_protocol() == "h2"
        client = H2Client(sock)
        status, body, message = client.get(b"/two?x=1", layer)
        assert (status, body) == (200, b"over h2")
        assert message is not None
        assert message["http_version"] == "2"
        assert message["scheme"] == "https"
        assert (message["path"], message["query_string"]) == ("/two", b"x=1")
        assert [b"host", b"lh"] in message["headers"]
        # A refusal ends its stream with 400, in the access log as on HTTP/1.1.
        status, _, _ = client.get(b"/a%00b", None)
        assert status == 400
    lines = log.read_text().splitlines()
    assert '"GET /two?x=1 HTTP/2" 200 7' in lines[0]
    assert '"GET /a%00b HTTP/2" 400' in lines[1]


@pytest.mark.parametrize("alpn", [["http/1.1"], None], ids=["alpn-http1.1", "no-alpn"])
def test_http11_with_or_without_alpn(
    start: Start, layer: InMemoryChannelLayer, tls_endpoint: str, alpn: list[str] | None
) -> None:
    """A TLS client offering only http/1.1, or no ALPN at all, is served HTTP/1.1."""
    _, [port] = start(tls_endpoint)
    with connect(port, alpn) as sock:
        assert sock.selected_alpn_protocol() == (None if alpn is None else "http/1.1")
        response, message = http11_exchange(sock, layer)
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert response.endswith(b"over http/1.1\r\n0\r\n\r\n")
    assert message["http_version"] == "1.1"
    assert message["scheme"] == "https"


def test_http2_off_negotiates_http11(
    start: Start, layer: InMemoryChannelLayer, tls_endpoint: str
) -> None:
    """With http2=False, ALPN negotiates http/1.1 even when the client offers h2."""
    _, [port] = start(tls_endpoint, http2=False)
    with connect(port, ["h2", "http/1.1"]) as sock:
        assert sock.selected_alpn_protocol() == "http/1.1"
        response, _ = http11_exchange(sock, layer)
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")


def test_websocket_over_tls_with_alpn(
    start: Start, layer: InMemoryChannelLayer, tls_endpoint: str
) -> None:
    """A wss:// WebSocket over TLS with ALPN http/1.1 connects with scheme wss and echoes."""
    from websockets.sync.client import connect as ws_connect

    _, [port] = start(tls_endpoint)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])  # as a browser opening wss://
    url = "wss://127.0.0.1:%d/ws/" % port.getHost().port
    accepted: list[dict[str, Any]] = []

    def accept() -> None:
        _, message = layer.receive(["websocket.connect"], block=True)
        accepted.append(message)
        layer.send(message["reply_channel"], {"accept": True})

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    with ws_connect(url, ssl=context, open_timeout=10) as ws:
        acceptor.join(10)
        [connect_message] = accepted
        assert connect_message["scheme"] == "wss"
        ws.send("hello")
        _, received = layer.receive(["websocket.receive"], block=True)
        assert received["text"] == "hello"
        layer.send(connect_message["reply_channel"], {"text": "back"})
        assert ws.recv(timeout=10) == "back"
