"""
Addresses of a connection, and what a trusted proxy (``--proxy-headers``)
says about them through ``X-Forwarded-*``; values that are not addresses or
ports are ignored.  Reactor thread only.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = ["HostPort", "address_pair", "forwarded"]

#: ``[host, port]``: a connection's address as ASGI's ``client`` and ``server`` give it.
HostPort = list[str | int]

_SECURE = {b"https": True, b"wss": True, b"http": False, b"ws": False}


def address_pair(address: object) -> HostPort | None:
    """``[host, port]`` of an IPv4/IPv6 address; None for others (UNIX sockets)."""
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if isinstance(host, str) and isinstance(port, int) and not isinstance(port, bool):
        return [host, port]
    return None


def _first(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for header, value in headers:
        if header == name:
            return value
    return None


def forwarded(
    headers: Iterable[tuple[bytes, bytes]], client: HostPort | None, secure: bool
) -> tuple[HostPort | None, bool]:
    """
    Apply proxy headers to a connection's ``client`` and ``secure`` flag.

    :param headers: ``(lowercased name, value)`` pairs of the request.
    :returns: ``(client, secure)``: the client from ``X-Forwarded-For`` (and
        ``-Port``) if it holds an IP address, the scheme from
        ``X-Forwarded-Proto`` if it is ``http``, ``https``, ``ws`` or ``wss``;
        the arguments unchanged otherwise.
    """
    headers = list(headers)
    forwarded_for = _first(headers, b"x-forwarded-for")
    if forwarded_for is not None:
        host = _ip(forwarded_for.split(b",", 1)[0].strip(b" \t"))
        if host is not None:
            port = 0
            forwarded_port = _first(headers, b"x-forwarded-port")
            if forwarded_port is not None:
                forwarded_port = forwarded_port.strip(b" \t")
                if forwarded_port.isdigit() and len(forwarded_port) <= 5:
                    value = int(forwarded_port)
                    if value <= 65535:
                        port = value
            client = [host, port]
    forwarded_proto = _first(headers, b"x-forwarded-proto")
    if forwarded_proto is not None:
        proto = forwarded_proto.split(b",", 1)[0].strip(b" \t").lower()
        secure = _SECURE.get(proto, secure)
    return client, secure


def _ip(value: bytes) -> str | None:
    if value.startswith(b"[") and value.endswith(b"]"):
        value = value[1:-1]
    try:
        return str(ipaddress.ip_address(value.decode("ascii")))
    except (UnicodeDecodeError, ValueError):
        return None
