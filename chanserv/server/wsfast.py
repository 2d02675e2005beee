"""
The fast path for small WebSocket data frames, beside autobahn; reactor thread
only.  Why: nearly all traffic is small single-frame messages, and reading one
through autobahn's general frame machine costs more CPU than the rest of an
echo round trip.  What: :func:`read_frames` takes complete frames with FIN set,
RSV clear, opcode 1 or 2, masked, a minimal 7- or 16-bit length within the
connection's limits and (text) valid UTF-8, and hands the first other frame and
all that follows to autobahn (control frames, fragments, large or compressed
frames, every protocol error and its close code); :func:`frame` builds the
matching server frames.  Held to autobahn's behaviour by a property test
(``tests/server/test_wsfast.py``) and the Autobahn test suite.
"""

from __future__ import annotations

from collections.abc import Callable

from autobahn.websocket.xormasker import create_xor_masker

__all__ = ["MAX_FAST_PAYLOAD", "frame", "read_frames", "unmask"]

#: The largest payload either direction takes here: the 16-bit length form.
MAX_FAST_PAYLOAD = 0xFFFF

#: Up to this size the integer XOR beats autobahn's native masker (whose
#: per-call cost dominates for small payloads).
_INT_UNMASK_MAX = 2048

_TEXT = 0x81  # FIN, RSV 0, opcode 1
_BINARY = 0x82  # FIN, RSV 0, opcode 2


def unmask(mask: bytes, payload: bytes) -> bytes:
    """``payload`` XOR the 4-byte ``mask`` repeated (RFC 6455 §5.3)."""
    n = len(payload)
    if n > _INT_UNMASK_MAX:
        return create_xor_masker(mask, n).process(payload)
    if n == 0:
        return b""
    key = int.from_bytes((mask * ((n >> 2) + 1))[:n], "little")
    return (int.from_bytes(payload, "little") ^ key).to_bytes(n, "little")


def read_frames(
    data: bytes,
    limit: int,
    on_text: Callable[[str], bool],
    on_bytes: Callable[[bytes], bool],
) -> int:
    """
    Read the complete fast-path frames at the start of ``data`` (client to
    server, so masked), calling ``on_text(str)`` or ``on_bytes(bytes)`` for
    each message in order; each returns whether reading may go on (False
    once the connection is no longer open).  A fast-path frame has FIN set,
    RSV bits clear, opcode 1 or 2, a mask, a payload length in the 7- or
    16-bit form with minimal encoding, within ``limit`` and (text) valid
    UTF-8; the first frame that is anything else stops the reading.

    Only to be called at a frame boundary, with nothing buffered and no
    fragmented message started (autobahn's state).  ``limit`` is the largest
    payload taken here, at most :data:`MAX_FAST_PAYLOAD`: the connection's
    frame and message size limits.

    :return: how many bytes were consumed; ``data[result:]`` starts at a
        frame boundary and belongs to autobahn (a frame this path does not
        take, an incomplete one, or anything after a callback said stop).
    """
    pos = 0
    end = len(data)
    while end - pos >= 6:
        op = data[pos]
        if op != _TEXT and op != _BINARY:
            break
        n = data[pos + 1] ^ 0x80  # 0..127 only when the mask bit is set
        if n < 126:
            start = pos + 6
        elif n == 126:
            if end - pos < 8:
                break
            n = (data[pos + 2] << 8) | data[pos + 3]
            if n < 126:
                break  # not minimal: autobahn's protocol error
            start = pos + 8
        else:
            break  # unmasked, or the 64-bit length form
        stop = start + n
        if n > limit or stop > end:
            break
        payload = unmask(data[start - 4 : start], data[start:stop])
        if op == _TEXT:
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError:
                break  # autobahn closes with 1007
            pos = stop
            if not on_text(text):
                break
        else:
            pos = stop
            if not on_bytes(payload):
                break
    return pos


def frame(payload: bytes, binary: bool) -> bytes | None:
    """
    The unfragmented, unmasked server frame carrying ``payload``, or None
    when it is longer than :data:`MAX_FAST_PAYLOAD` (autobahn frames it).
    """
    n = len(payload)
    op = _BINARY if binary else _TEXT
    if n < 126:
        return bytes((op, n)) + payload
    if n <= MAX_FAST_PAYLOAD:
        return bytes((op, 126, n >> 8, n & 0xFF)) + payload
    return None
