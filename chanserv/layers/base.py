"""
What every chanserv channel layer shares: name rules, capacity lookup and
message preparation (validation, msgpack copy, size limit).  The
synchronous face is called from any thread; the reactor face
(``*_twisted``, ``add_local_receiver``) on the reactor thread only.
"""

from __future__ import annotations

import fnmatch
import re
import secrets
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from re import Pattern
from typing import Any

import msgpack
from twisted.internet.defer import Deferred

from chanserv.exceptions import ChannelBlocked, ChannelFull, MessageTooLarge
from chanserv.interfaces import LocalReceiver
from chanserv.types import Content, FlatMessage, Prepared, Received

__all__ = ["BaseChannelLayer", "FlatMessage", "LocalReceiver", "Prepared", "flat_copy"]


CapacityPattern = str | Pattern[str]

# \Z, not $: "$" would also match before a trailing newline ("name\n").
_CHANNEL_NAME = re.compile(r"^[a-zA-Z\d\-_.]+((\?|\!)[\d\w\-_.]*)?\Z", re.ASCII)
_GROUP_NAME = re.compile(r"^[a-zA-Z\d\-_.]+\Z", re.ASCII)
_RANDOM_ALPHABET = string.ascii_letters

#: Keys the layers and the worker reserve inside messages.
RESERVED_KEY = "__asgi_channel__"

MAX_NAME_LENGTH = 100

# Channel names already found valid (see valid_channel_name).
_VALID_CACHE_SIZE = 10000
_valid_names: set[str] = set()
_valid_receive_names: set[str] = set()


_INT_MIN = -(1 << 63)
_INT_MAX = (1 << 64) - 1


def flat_copy(message: object, limit: int, reserved: str) -> FlatMessage | None:
    """
    A :class:`FlatMessage` copy of ``message`` if it is a plain ``dict``
    of ``str`` keys and scalar values that msgpack would carry unchanged,
    without the ``reserved`` key, and certainly within ``limit`` bytes
    serialised; else None (the caller serialises it, and so checks it).
    """
    if type(message) is not dict:
        return None
    nbytes = worst = 8
    for key, value in message.items():
        if type(key) is not str:
            return None
        kind = type(value)
        if kind is str:
            n = len(key) + len(value)
            nbytes += n + 9
            worst += 4 * n + 9
        elif kind is bytes:
            nbytes += len(key) + len(value) + 9
            worst += 4 * len(key) + len(value) + 9
        elif kind is int:
            if not _INT_MIN <= value <= _INT_MAX:
                return None
            nbytes += len(key) + 9
            worst += 4 * len(key) + 9
        elif kind is float or kind is bool or value is None:
            nbytes += len(key) + 9
            worst += 4 * len(key) + 9
        else:
            return None
    if worst > limit or reserved in message:
        return None
    copy = FlatMessage(message)
    copy.nbytes = nbytes
    return copy


def random_string(length: int = 12) -> str:
    """``length`` letters from a CSPRNG: unguessable channel-name parts."""
    return "".join(secrets.choice(_RANDOM_ALPHABET) for _ in range(length))


class BaseChannelLayer:
    """
    The shared half of a channel layer.

    :param expiry: seconds an unread message lives (ASGI recommends 60).
    :param group_expiry: seconds a group membership lives after its last
        ``group_add`` (86400).
    :param capacity: default maximum of queued messages per channel (100).
        Every process-local ``prefix!local`` channel (each connection) has
        its own quota, wherever its messages wait.
    :param channel_capacity: per-channel overrides, a mapping (use an ordered
        one for precedence) or a sequence of pairs from a pattern -- an
        ``fnmatch`` glob if a ``str``, a regex (``re.match``) if compiled --
        to a capacity.  The first match wins; patterns are matched against the
        non-local name (``prefix!`` for process-local channels).
    :param max_message_size: largest serialised message, in bytes, that
        ``send`` accepts; larger ones raise :class:`MessageTooLarge`.
        Default 1 MiB.
    """

    extensions: list[str] = []

    #: True for layers that cannot carry messages between processes; such a
    #: layer is refused by ``--mode=interface`` and ``--mode=worker``.
    local_only = False

    #: True when a non-blocking ``receive`` from a worker thread costs no
    #: more than a lock (no network round trip): the worker then lets a pool
    #: thread that finished a message take the next one itself.
    cheap_receive = False
    sends_at_once = False

    ChannelFull = ChannelFull
    ChannelBlocked = ChannelBlocked
    MessageTooLarge = MessageTooLarge

    def __init__(
        self,
        expiry: float = 60,
        group_expiry: float = 86400,
        capacity: int = 100,
        channel_capacity: Mapping[CapacityPattern, int]
        | Sequence[tuple[CapacityPattern, int]]
        | None = None,
        max_message_size: int = 1024 * 1024,
    ) -> None:
        if expiry <= 0:
            raise ValueError("expiry must be positive, not %r" % (expiry,))
        if group_expiry <= 0:
            raise ValueError("group_expiry must be positive, not %r" % (group_expiry,))
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError("capacity must be a positive int, not %r" % (capacity,))
        if not isinstance(max_message_size, int) or max_message_size < 1:
            raise ValueError(
                "max_message_size must be a positive int, not %r" % (max_message_size,)
            )
        self.expiry = expiry
        self.group_expiry = group_expiry
        self.capacity = capacity
        self.max_message_size = max_message_size
        self.channel_capacity = self._compile_capacities(channel_capacity or {})
        self._capacity_cache: dict[str, int] = {}

    # -- capacity -----------------------------------------------------------

    @staticmethod
    def _compile_capacities(
        channel_capacity: Mapping[CapacityPattern, int] | Sequence[tuple[CapacityPattern, int]],
    ) -> list[tuple[Pattern[str], int]]:
        items = (
            list(channel_capacity.items())
            if isinstance(channel_capacity, Mapping)
            else list(channel_capacity)
        )
        compiled = []
        for pattern, value in items:
            if not isinstance(value, int) or value < 1:
                raise ValueError(
                    "channel_capacity[%r] must be a positive int, not %r" % (pattern, value)
                )
            if isinstance(pattern, str):
                compiled.append((re.compile(fnmatch.translate(pattern)), value))
            elif hasattr(pattern, "match"):
                compiled.append((pattern, value))
            else:
                raise ValueError(
                    "channel_capacity pattern %r is neither a glob string nor a "
                    "compiled regex" % (pattern,)
                )
        return compiled

    def get_capacity(self, channel: str) -> int:
        """
        The capacity of ``channel``: that of the first ``channel_capacity``
        pattern matching its non-local name, else ``capacity``.
        """
        name = self.non_local_name(channel)
        cached = self._capacity_cache.get(name)
        if cached is not None:
            return cached
        result = self.capacity
        for pattern, value in self.channel_capacity:
            if pattern.match(name):
                result = value
                break
        # Not a single-reader name: one is made for every request body.
        if "?" not in name and len(self._capacity_cache) < 10000:
            self._capacity_cache[name] = result
        return result

    # -- names --------------------------------------------------------------

    @staticmethod
    def valid_channel_name(name: Any, receive: bool = False) -> bool:
        # Any: any value may be checked (TypeError if it is not a valid name); the fast path
        # tests the exact type first and the checks that follow rely on a helper that raises,
        # which typing cannot narrow on.
        """
        Check a channel name; return True or raise :class:`TypeError`.  The
        rules: :meth:`chanserv.interfaces.IChannelLayer.valid_channel_name`.
        """
        # Names recur (the worker's channel list, the channels consumers send
        # to): skip the checks for a name already found valid.  Bounded.
        if type(name) is not str:
            BaseChannelLayer._check_channel_name(name, receive)
        if receive:
            if name in _valid_receive_names:
                return True
        elif name in _valid_names:
            return True
        BaseChannelLayer._check_channel_name(name, receive)
        if "?" in name or 0 <= name.find("!") < len(name) - 1:
            # A reply or body channel's name is made for one connection or
            # request: kept, it would fill the cache with the names of
            # connections long gone.  Its checks take about a microsecond.
            return True
        cache = _valid_receive_names if receive else _valid_names
        if len(cache) >= _VALID_CACHE_SIZE:
            cache.clear()
        cache.add(name)
        return True

    @staticmethod
    def _check_channel_name(name: Any, receive: bool) -> None:
        if not isinstance(name, str):
            raise TypeError("Channel name must be a str, not %r" % (type(name).__name__,))
        if len(name) >= MAX_NAME_LENGTH:
            raise TypeError(
                "Channel name %r is %d characters long; the limit is %d"
                % (name[:20] + "...", len(name), MAX_NAME_LENGTH - 1)
            )
        if not _CHANNEL_NAME.match(name):
            raise TypeError(
                "Channel name %r is invalid: use ASCII letters, digits, '-', '_' "
                "and '.', with at most one '?' or '!'" % (name,)
            )
        if "?" in name and name.endswith("?"):
            raise TypeError("Single-reader channel name %r must not end with '?'" % (name,))
        if receive and "!" in name and not name.endswith("!"):
            raise TypeError(
                "Process-local channel %r: receive on its prefix, up to and "
                "including the '!'" % (name,)
            )

    @classmethod
    def valid_channel_names(cls, names: object, receive: bool = False) -> bool:
        """Check a list of channel names (a lone ``str`` is refused)."""
        if isinstance(names, (str, bytes)) or not isinstance(names, Iterable):
            raise TypeError("channels must be a list of names, not %r" % (names,))
        for name in names:
            cls.valid_channel_name(name, receive=receive)
        return True

    @staticmethod
    def valid_group_name(name: object) -> bool:
        """Check a group name; return True or raise :class:`TypeError`."""
        if not isinstance(name, str):
            raise TypeError("Group name must be a str, not %r" % (type(name).__name__,))
        if len(name) >= MAX_NAME_LENGTH:
            raise TypeError(
                "Group name %r is %d characters long; the limit is %d"
                % (name[:20] + "...", len(name), MAX_NAME_LENGTH - 1)
            )
        if not _GROUP_NAME.match(name):
            raise TypeError(
                "Group name %r is invalid: use ASCII letters, digits, '-', '_' and '.'" % (name,)
            )
        return True

    @staticmethod
    def non_local_name(name: str) -> str:
        """``prefix!`` for a process-local ``prefix!local`` name, else ``name``."""
        if "!" in name:
            return name[: name.find("!") + 1]
        return name

    def _check_local_prefix(self, prefix: Any) -> None:
        """:raises TypeError: ``prefix`` is not a valid name ending with ``!``."""
        self.valid_channel_name(prefix, receive=True)
        if not prefix.endswith("!"):
            raise TypeError("A local receiver's prefix ends with '!', not %r" % (prefix,))

    def _check_local_channel(self, channel: Any) -> None:
        """:raises TypeError: ``channel`` is not a valid ``prefix!local`` name."""
        self.valid_channel_name(channel)
        bang = channel.find("!")
        if bang < 0 or bang == len(channel) - 1:
            raise TypeError("%r is not a process-local 'prefix!local' channel" % (channel,))
        self._check_local_prefix(channel[: bang + 1])

    def _check_new_channel_pattern(self, pattern: Any) -> None:
        if not isinstance(pattern, str) or not pattern.endswith("?"):
            raise TypeError(
                "new_channel() takes a pattern ending in '?', not %r; "
                "process-local '!' names are made by the interface server" % (pattern,)
            )
        # The name new_channel returns: pattern plus 12 random letters.
        self.valid_channel_name(pattern + "x" * 12)

    # -- messages -----------------------------------------------------------

    def prepare(self, message: object) -> Prepared:
        """
        Validate ``message`` and make the copy the contract requires, for
        this layer's ``send_prepared``: :meth:`serialise` here; a layer that
        keeps messages in this process may return a :class:`FlatMessage`
        instead, with the same checks and the same result for the receiver.
        Any thread.
        """
        return self.serialise(message)

    def serialise(self, message: object) -> bytes:
        """
        Validate and serialise ``message`` for sending, with msgpack: the
        copy the contract requires, and the check that it holds only types
        every layer carries (``dict`` with ``str`` keys, ``list``/``tuple``,
        ``str``, ``bytes``, 64-bit ``int``, ``float``, ``bool``, ``None``).
        Any thread; nothing changes state before it returns.

        :raises TypeError: not a dict, a non-``str`` key, the reserved key
            ``__asgi_channel__``, or a value of a type no layer can carry.
        :raises MessageTooLarge: larger than ``max_message_size`` serialised.
        """
        if not isinstance(message, dict):
            raise TypeError("A message must be a dict, not %r" % (type(message).__name__,))
        if RESERVED_KEY in message:
            raise TypeError("The message key %r is reserved for the layer" % (RESERVED_KEY,))
        try:
            data = msgpack.packb(message, use_bin_type=True, strict_types=False)
        except (TypeError, ValueError, OverflowError) as e:
            raise TypeError("Message cannot be sent: %s" % (e,)) from None
        self._check_keys(message)
        if len(data) > self.max_message_size:
            raise MessageTooLarge(
                "Message is %d bytes serialised; the limit is %d"
                % (len(data), self.max_message_size)
            )
        return data

    @staticmethod
    def _check_keys(value: Any) -> None:
        # msgpack accepts int and bytes keys; ASGI messages have str keys only.
        # Every message's path: the top level in one pass, then only the
        # nested values, if any (a flat dict of str keys: no stack at all).
        stack: list[Any] | None = None
        for k, item in value.items():
            if type(k) is not str:
                stack = [value]  # the walk below decides (a str subclass is fine)
                break
            if isinstance(item, (dict, list, tuple)):
                if stack is None:
                    stack = [item]
                else:
                    stack.append(item)
        if stack is None:
            return
        while stack:
            v = stack.pop()
            if isinstance(v, dict):
                for k, item in v.items():
                    if not isinstance(k, str):
                        raise TypeError("Message keys must be str, not %r" % (k,))
                    if isinstance(item, (dict, list, tuple)):
                        stack.append(item)
            elif isinstance(v, (list, tuple)):
                stack.extend(item for item in v if isinstance(item, (dict, list, tuple)))

    @staticmethod
    def unpack(data: Prepared) -> Content:
        """A fresh dict from a prepared message."""
        if type(data) is FlatMessage:
            return dict(data)  # its values are immutable: a full copy
        result: Content = msgpack.unpackb(data, raw=False, use_list=True)
        return result

    # -- synchronous face (any thread) -----------------------------------------

    def send(self, channel: str, message: Content) -> None:
        """Send ``message`` to ``channel``; may raise ChannelFull, MessageTooLarge."""
        self.valid_channel_name(channel)
        self.send_prepared(channel, self.prepare(message))

    def send_prepared(self, channel: str, data: Prepared) -> None:
        """``send`` with a message already through :meth:`prepare`."""
        raise NotImplementedError()

    def receive(self, channels: Sequence[str], block: bool = False) -> Received | tuple[None, None]:
        """
        Take one message from any of ``channels``: ``(channel, message)`` or
        ``(None, None)``.  ``block=True`` waits a bounded time for one.
        """
        raise NotImplementedError()

    def receive_many(
        self, channels: Sequence[str], block: bool = False
    ) -> Received | tuple[None, None]:
        """Deprecated alias of :meth:`receive`, kept for 1.x code."""
        import warnings

        warnings.warn("receive_many is deprecated; use receive", DeprecationWarning, stacklevel=2)
        return self.receive(channels, block=block)

    def new_channel(self, pattern: str) -> str:
        """A fresh single-reader channel name: ``pattern`` ends with ``?``."""
        raise NotImplementedError()

    def group_add(self, group: str, channel: str) -> None:
        raise NotImplementedError()

    def group_discard(self, group: str, channel: str) -> None:
        raise NotImplementedError()

    def group_channels(self, group: str) -> list[str]:
        raise NotImplementedError()

    def send_group(self, group: str, message: Content) -> None:
        """Send to every member; full members are skipped, never an error."""
        self.valid_group_name(group)
        self.send_group_prepared(group, self.prepare(message))

    def send_group_prepared(self, group: str, data: Prepared) -> None:
        raise NotImplementedError()

    def flush(self) -> None:
        raise NotImplementedError()

    def global_statistics(self) -> dict[str, float]:
        raise NotImplementedError()

    def channel_statistics(self, channel: str) -> dict[str, float]:
        raise NotImplementedError()

    # -- reactor face (reactor thread only) ------------------------------------

    def attach_reactor(self, reactor: Any) -> None:
        # Any: the reactor must provide IReactorTime and IReactorFromThreads (the Redis layer's
        # also IReactorTCP), and Python's types have no intersection of interfaces.
        """Bind the layer to the reactor that will call its reactor face."""
        raise NotImplementedError()

    def detach_reactor(self) -> Deferred[None]:
        """Release reactor resources (timers, connections)."""
        raise NotImplementedError()

    def receive_twisted(self, channels: Sequence[str]) -> Deferred[Received]:
        """A Deferred firing with the next ``(channel, message)``."""
        d = self.receive_many_twisted(channels, 1)
        return d.addCallback(lambda batch: batch[0])

    def receive_many_twisted(self, channels: Sequence[str], limit: int) -> Deferred[list[Received]]:
        """
        A Deferred firing with 1 to ``limit`` messages from ``channels``, as
        soon as at least one is there.  Cancelling it takes nothing.
        """
        raise NotImplementedError()

    def send_twisted(self, channel: str, message: Content) -> Deferred[None]:
        """``send`` as a Deferred (fails with ChannelFull and the like)."""
        raise NotImplementedError()

    def send_group_twisted(self, group: str, message: Content) -> Deferred[None]:
        raise NotImplementedError()

    def add_local_receiver(
        self,
        prefix: str,
        callback: LocalReceiver,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        """See :meth:`chanserv.interfaces.IReactorChannelLayer.add_local_receiver`."""
        raise NotImplementedError()

    def remove_local_receiver(self, prefix: str) -> None:
        raise NotImplementedError()

    def when_capacity_twisted(self, channel: str) -> Deferred[None]:
        """A Deferred firing once ``channel`` has room for another message."""
        raise NotImplementedError()

    def block_local_channel(self, channel: str) -> None:
        """See :meth:`chanserv.interfaces.IReactorChannelLayer.block_local_channel`."""
        raise NotImplementedError()

    def unblock_local_channel(self, channel: str) -> None:
        """See :meth:`chanserv.interfaces.IReactorChannelLayer.unblock_local_channel`."""
        raise NotImplementedError()
