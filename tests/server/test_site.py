"""
The interface server on real sockets (the global reactor in its thread):
TCP, UNIX and inherited-descriptor listeners, the access log, the WebSocket
hand-off, and a graceful stop.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.logger import capturedLogs, formatEvent
from websockets.sync.client import connect as ws_connect

from chanserv.layers.inmemory import InMemoryChannelLayer
from chanserv.server.config import ServerConfig
from chanserv.server.listener import endpoint_from_string
from chanserv.server.site import InterfaceServer
from tests.support import in_reactor, reactor_thread

Start = Callable[..., tuple[InterfaceServer, list[Any]]]


@pytest.fixture
def layer() -> Iterator[InMemoryChannelLayer]:
    reactor = reactor_thread()
    layer = InMemoryChannelLayer()
    in_reactor(layer.attach_reactor, reactor)
    yield layer
    in_reactor(layer.detach_reactor)


@pytest.fixture
def start(layer: InMemoryChannelLayer) -> Iterator[Start]:
    reactor = reactor_thread()
    servers: list[InterfaceServer] = []

    def start(*endpoints: str, **changes: Any) -> tuple[InterfaceServer, list[Any]]:
        config = ServerConfig(endpoints=endpoints, **changes)
        server = in_reactor(InterfaceServer, reactor, layer, config)
        in_reactor(server.privilegedStartService)
        in_reactor(server.startService)
        servers.append(server)
        return server, in_reactor(server.listening_ports)

    yield start
    for server in servers:
        if server.running:
            in_reactor(server.stopService)


def exchange(sock: socket.socket, layer: InMemoryChannelLayer, path: bytes = b"/hello") -> bytes:
    """Send a request, answer it as a consumer would, return the raw response."""
    sock.settimeout(10)
    sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
    channel, message = layer.receive(["http.request"], block=True)
    assert channel == "http.request"
    layer.send(
        message["reply_channel"],
        {"status": 200, "headers": [[b"content-type", b"text/plain"]], "content": b"Hello!"},
    )
    response = b""
    while chunk := sock.recv(65536):
        response += chunk
    return response


def test_tcp_listener(start: Start, layer: InMemoryChannelLayer, tmp_path: Path) -> None:
    """A TCP listener serves a request through the layer and access-logs it by client IP."""
    log = tmp_path / "access.log"
    server, [port] = start("tcp:port=0:interface=127.0.0.1", access_log=str(log))
    address = port.getHost()
    with socket.create_connection((address.host, address.port)) as sock:
        response = exchange(sock, layer)
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert response.endswith(b"Hello!\r\n0\r\n\r\n")
    in_reactor(server.stopService)
    [line] = log.read_text().splitlines()
    assert line.startswith("127.0.0.1 - - [")
    assert line.endswith('"GET /hello HTTP/1.1" 200 6')


def test_unix_socket_listener(start: Start, layer: InMemoryChannelLayer, tmp_path: Path) -> None:
    """A unix: endpoint serves HTTP over a UNIX socket."""
    path = tmp_path / "chanserv.sock"
    start("unix:%s" % (path,))
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(path))
        response = exchange(sock, layer, b"/unix")
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")


def test_each_endpoint_logs_its_url_and_dash_logs_access_events(
    start: Start, layer: InMemoryChannelLayer, tmp_path: Path
) -> None:
    """One "Listening on URL" per endpoint once bound; access_log "-": one event per request."""
    path = tmp_path / "chanserv.sock"
    with capturedLogs() as events:
        server, ports = start("tcp:port=0:interface=127.0.0.1", "unix:%s" % (path,), access_log="-")
        tcp = ports[0].getHost().port
        with socket.create_connection(("127.0.0.1", tcp)) as sock:
            exchange(sock, layer, b"/logged")
        in_reactor(server.stopService)
    lines = [formatEvent(e) for e in events]
    assert [line for line in lines if line.startswith("Listening on ")] == [
        "Listening on http://127.0.0.1:%d/" % tcp,
        "Listening on unix:%s" % (path,),
    ]
    access = [formatEvent(e) for e in events if e["log_namespace"] == "chanserv.access"]
    assert access == ['127.0.0.1 "GET /logged HTTP/1.1" 200 6']


def test_inherited_descriptor(start: Start, layer: InMemoryChannelLayer) -> None:
    """An fd: endpoint adopts an inherited listening socket and serves HTTP on it."""
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen(5)
    port_number = listening.getsockname()[1]
    fileno = listening.detach()  # the endpoint adopts (and closes) it
    start("fd:fileno=%d" % fileno)
    with socket.create_connection(("127.0.0.1", port_number)) as sock:
        response = exchange(sock, layer, b"/fd")
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")


def test_two_endpoints(start: Start, layer: InMemoryChannelLayer) -> None:
    """The server listens on every configured endpoint, each one serving requests."""
    _, ports = start("tcp:port=0:interface=127.0.0.1", "tcp:port=0:interface=127.0.0.1")
    assert len(ports) == 2
    for port in ports:
        with socket.create_connection(("127.0.0.1", port.getHost().port)) as sock:
            assert exchange(sock, layer).startswith(b"HTTP/1.1 200 OK\r\n")


def test_port_in_use_fails_start(start: Start) -> None:
    """Starting on a port already in use raises from the start."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        with pytest.raises(Exception, match=r"[Aa]ddress already in use|Couldn't listen"):
            start("tcp:port=%d:interface=127.0.0.1" % taken.getsockname()[1])


def test_bad_fd_endpoint() -> None:
    """An fd: endpoint whose fileno is not a number is a ValueError."""
    with pytest.raises(ValueError):
        endpoint_from_string(None, "fd:fileno=notanumber")


def test_websocket_upgrade_is_handed_over(start: Start, layer: InMemoryChannelLayer) -> None:
    """A WebSocket upgrade becomes websocket.connect with path and query, never http.request."""
    _, [port] = start("tcp:port=0:interface=127.0.0.1")
    url = "ws://127.0.0.1:%d/ws/?room=1" % port.getHost().port
    connect: dict[str, Any] = {}

    def accept() -> None:
        _, message = layer.receive(["websocket.connect"], block=True)
        connect.update(message)
        layer.send(message["reply_channel"], {"accept": True})

    acceptor = threading.Thread(target=accept)
    acceptor.start()
    with ws_connect(url, open_timeout=10) as websocket:
        acceptor.join(10)
        assert connect["path"] == "/ws/"
        assert connect["query_string"] == b"room=1"
        websocket.send("hi")
        _, received = layer.receive(["websocket.receive"], block=True)
        assert received["text"] == "hi"
    assert layer.receive(["http.request"]) == (None, None)


def test_graceful_stop_lets_a_request_finish(start: Start, layer: InMemoryChannelLayer) -> None:
    """A graceful stop waits for the request in flight; its response says Connection: close."""
    server, [port] = start("tcp:port=0:interface=127.0.0.1", graceful_timeout=10)
    address = port.getHost()
    with socket.create_connection((address.host, address.port)) as sock:
        sock.settimeout(10)
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n")
        _, message = layer.receive(["http.request"], block=True)
        [stopping] = in_reactor(lambda: [server.stopService()])
        assert not in_reactor(lambda: stopping.called)
        # The request in flight is answered, then its connection closes.
        layer.send(message["reply_channel"], {"status": 200, "content": b"done"})
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
        assert response.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"connection: close\r\n" in response
    in_reactor(lambda: stopping)


def test_graceful_stop_cuts_what_outlives_the_grace(
    start: Start, layer: InMemoryChannelLayer
) -> None:
    """A graceful stop cuts connections still open when the grace ends, unregistering them."""
    server, [port] = start("tcp:port=0:interface=127.0.0.1", graceful_timeout=0.2)
    with socket.create_connection(("127.0.0.1", port.getHost().port)) as sock:
        sock.settimeout(10)
        sock.sendall(b"GET /never HTTP/1.1\r\nHost: test\r\n\r\n")
        layer.receive(["http.request"], block=True)
        in_reactor(server.stopService)
        try:
            assert sock.recv(65536) == b""
        except ConnectionResetError:
            pass  # cut: an abort may reach the client as a reset
    assert len(server.replies) == 0


def _self_signed(directory: Path) -> tuple[Path, Path]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


# Twisted's ssl: endpoint hands pyOpenSSL objects to pyOpenSSL, which now warns.
@pytest.mark.filterwarnings("ignore::DeprecationWarning:OpenSSL")
def test_tls_endpoint_gives_https(
    start: Start, layer: InMemoryChannelLayer, tmp_path: Path
) -> None:
    """An ssl: endpoint serves HTTP/1.1 over TLS with scheme https in http.request."""
    import ssl

    key, cert = _self_signed(tmp_path)
    _, [port] = start("ssl:port=0:interface=127.0.0.1:privateKey=%s:certKey=%s" % (key, cert))
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port.getHost().port)) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as sock:
            sock.settimeout(10)
            sock.sendall(b"GET /secure HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            _, message = layer.receive(["http.request"], block=True)
            assert message["scheme"] == "https"
            layer.send(message["reply_channel"], {"status": 200, "content": b"tls"})
            response = b""
            while chunk := sock.recv(65536):
                response += chunk
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")


def test_ipv6_loopback(start: Start, layer: InMemoryChannelLayer) -> None:
    """A [::1] listener serves IPv6, client and server addresses given without brackets."""
    from chanserv.server.options import tcp_endpoint

    _, [port] = start(tcp_endpoint("[::1]", 0))
    with socket.create_connection(("::1", port.getHost().port)) as sock:
        sock.settimeout(10)
        sock.sendall(b"GET /v6 HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        _, message = layer.receive(["http.request"], block=True)
        assert message["client"][0] == "::1"
        assert message["server"] == ["::1", port.getHost().port]
        layer.send(message["reply_channel"], {"status": 204})
        assert sock.recv(65536).startswith(b"HTTP/1.1 204 No Content\r\n")
