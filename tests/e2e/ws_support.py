"""
WebSocket clients at the byte level, for the end-to-end tests of clients
that stop reading (tests/e2e/test_redis_scale.py,
tests/e2e/test_slow_readers.py): a handshake on a plain socket with a small
receive buffer, which the test then never reads, so the server's buffers
and its queue for the socket fill up; reading what the server sent once it
ended the connection; and the frames in it.  ``OVERFLOW`` matches the line
the server logs when it gives up on such a socket.
"""

from __future__ import annotations

import base64
import os
import re
import socket
import time
from collections.abc import Iterator

#: What the interface logs when it closes a socket that does not read.
OVERFLOW = re.compile(
    r"WebSocket (\S+) does not read its messages: (\d+) dropped, closing with 1013"
)


def raw_websocket(
    port: int, path: str, receive_buffer: int, timeout: float = 10.0
) -> tuple[socket.socket, bytes]:
    """
    A WebSocket handshake on a plain socket with a small receive buffer;
    the socket and whatever came after the 101's head.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode("ascii")
    sock.sendall(
        (
            "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
            % (path, port, key)
        ).encode("ascii")
    )
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1)
        assert chunk, data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 "), head
    return sock, rest


def read_to_the_end(sock: socket.socket, data: bytes, timeout: float) -> tuple[bytes, str]:
    """Read until the server ends the connection; the bytes and how it ended."""
    deadline = time.monotonic() + timeout
    chunks = [data]
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(1 << 16)
        except ConnectionResetError:
            return b"".join(chunks), "reset"
        except TimeoutError:
            raise AssertionError("the connection was still open after %ss" % timeout) from None
        if not chunk:
            return b"".join(chunks), "closed"
        chunks.append(chunk)


def frames(data: bytes) -> Iterator[tuple[int, bytes]]:
    """The complete (opcode, payload) server frames in ``data`` (unmasked)."""
    at = 0
    while at + 2 <= len(data):
        opcode, length = data[at] & 0x0F, data[at + 1] & 0x7F
        at += 2
        if length == 126:
            if at + 2 > len(data):
                return
            length = int.from_bytes(data[at : at + 2], "big")
            at += 2
        elif length == 127:
            if at + 8 > len(data):
                return
            length = int.from_bytes(data[at : at + 8], "big")
            at += 8
        if at + length > len(data):
            return
        yield opcode, data[at : at + length]
        at += length
