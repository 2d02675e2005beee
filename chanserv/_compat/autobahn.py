"""
The private names of autobahn that chanserv uses (checked on autobahn
26.7.1 to 26.11.1, pinned by ``tests/test_compat_pins.py``): forgetting an
open socket's handshake key.  Reactor thread only.
"""

from __future__ import annotations

__all__ = ["forget_handshake_key"]

#: The instance attribute autobahn keeps the client's key in.
HANDSHAKE_KEY_ATTRIBUTE = "_wskey"


def forget_handshake_key(protocol: object) -> None:
    """
    Drop the client's handshake key from ``protocol``, an open
    ``WebSocketServerProtocol`` (after ``onOpen`` autobahn never reads it).
    Reactor thread.
    """
    protocol.__dict__.pop(HANDSHAKE_KEY_ATTRIBUTE, None)
