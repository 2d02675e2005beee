"""
The private names of autobahn that chanserv uses.

Checked on autobahn 26.7.1 to 26.11.1; ``tests/test_compat_pins.py`` pins
each one.

- ``WebSocketServerProtocol._wskey``: the client's ``Sec-WebSocket-Key``,
  set by ``processHandshake`` and read once, by ``succeedHandshake`` (the
  101).  An idle socket lives long and its attributes are most of what it
  costs: :func:`forget_handshake_key` drops this one once the socket is open.
  A release that renames it only makes each socket a few dozen bytes larger.

Nothing else: autobahn's timers (``factory._batched_timer``, on txaio's
global reactor) are all switched off through ``setProtocolOptions`` and the
server's sweep applies those timeouts; pings go out through ``sendPing``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["forget_handshake_key"]

#: The instance attribute autobahn keeps the client's key in.
HANDSHAKE_KEY_ATTRIBUTE = "_wskey"


def forget_handshake_key(protocol: Any) -> None:
    """
    Drop the client's handshake key from ``protocol``, an open
    ``WebSocketServerProtocol`` (after ``onOpen`` autobahn never reads it).
    Reactor thread.
    """
    protocol.__dict__.pop(HANDSHAKE_KEY_ATTRIBUTE, None)
