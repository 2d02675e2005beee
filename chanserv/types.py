"""
Names for the types of values chanserv carries without looking into them.

An ASGI message is a ``dict`` with ``str`` keys whose values are whatever
msgpack serialises (``list``/``tuple``, ``dict``, ``str``, ``bytes``,
``int``, ``float``, ``bool``, ``None``, nested), and a WebSocket JSON
consumer's content is whatever :func:`json.loads` returns: no Python type
narrower than ``Any`` describes them, so the ``Any`` is written once, here,
and the signatures use these names.

This module imports nothing of chanserv: it sits at the bottom of the
import layering.  Any thread: it only names types.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias

__all__ = [
    "Content",
    "ContentMapping",
    "FlatMessage",
    "JSONValue",
    "Prepared",
    "Received",
    "Value",
]

# Any: an ASGI message value is any msgpack-serialisable value (nested
# lists, dicts, str, bytes, int, float, bool, None), which Python's type
# system cannot spell without a recursive alias that mypy would then check
# at every read of a message; users' consumers read these values freely.
#: One value of an ASGI message.
Value: TypeAlias = Any

#: An ASGI message (the content of a :class:`~chanserv.message.Message`).
Content: TypeAlias = dict[str, Value]

#: A read-only ASGI message, or content to build one from.
ContentMapping: TypeAlias = Mapping[str, Value]

#: A ``(channel, message)`` pair, as a receive returns it.
Received: TypeAlias = tuple[str, Content]

# Any: what json.loads returns (and json.dumps takes) is any JSON value.
#: A decoded JSON document: the content of a JSON WebSocket frame.
JSONValue: TypeAlias = Any


class FlatMessage(dict[str, Value]):
    """
    A layer's private copy of a flat message: ``str`` keys and immutable
    scalar values only (``str``, ``bytes``, ``int``, ``float``, ``bool``,
    None), so a shallow copy is a full one.  ``nbytes`` approximates its
    serialised size (for pacing).  Made by
    :func:`chanserv.layers.base.flat_copy`.
    """

    __slots__ = ("nbytes",)
    nbytes: int


#: A message as a layer's ``prepare`` returns it: opaque, only for the same
#: layer's ``send_prepared``, ``send_group_prepared`` and ``unpack`` --
#: msgpack bytes, or a :class:`FlatMessage` from a layer that keeps its
#: messages in this process.
Prepared: TypeAlias = "bytes | FlatMessage"
