"""
The contracts between chanserv's parts, as ``zope.interface`` interfaces:
the synchronous and the reactor faces of a channel layer, and the interface
server's reply dispatch.  This module only declares; each interface states
who may call it: the synchronous face from any thread (the Redis layer's
not on the reactor thread), the others on the reactor thread only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface

from chanserv.types import Content, Prepared, Received

__all__ = [
    "IChannelLayer",
    "IReactorChannelLayer",
    "IReplyDispatch",
    "ISendHandOff",
    "ISendToSink",
    "LocalReceiver",
    "ReplyConnection",
    "SendSink",
]

# Interface methods take no ``self``: zope.interface (and mypy-zope) add it.


class IChannelLayer(Interface):
    """
    The synchronous face of a channel layer (ASGI 1.0).  Every method may be
    called from any thread unless the layer says otherwise; none needs the
    reactor.

    Messages are ``dict`` with ``str`` keys holding ``list``/``tuple``,
    ``str``, ``bytes``, ``int`` (64-bit), ``float``, ``bool`` and ``None``;
    a message is copied on send (mutating it afterwards changes nothing).
    """

    extensions = Attribute(
        "The ASGI extensions provided, a list of str: chanserv's layers have "
        "'groups', 'flush', 'statistics' and 'twisted'."
    )
    expiry = Attribute("Seconds an unread message lives.")
    group_expiry = Attribute("Seconds a group membership lives after its last group_add.")
    capacity = Attribute("Default maximum of queued messages per channel.")
    max_message_size = Attribute("Largest serialised message, in bytes, that send accepts.")
    local_only = Attribute(
        "True when the layer cannot carry messages between processes; "
        "--mode=interface and --mode=worker refuse such a layer."
    )
    cheap_receive = Attribute(
        "True when a non-blocking receive from a worker thread costs no more "
        "than a lock (no network round trip)."
    )
    ChannelFull = Attribute("The exception raised when a channel is at capacity.")
    ChannelBlocked = Attribute(
        "The ChannelFull subclass raised while a channel is blocked by its interface server."
    )
    MessageTooLarge = Attribute("The exception raised for a message over max_message_size.")

    def send(channel: str, message: Content) -> None:
        """
        Send ``message`` to ``channel``.

        :raises TypeError: an invalid channel name or message.
        :raises ChannelFull: the channel holds its capacity already
            (``ChannelBlocked`` while it is blocked).
        :raises MessageTooLarge: the message is over ``max_message_size``.
        """

    def send_group(group: str, message: Content) -> None:
        """
        Send ``message`` to every member of ``group``.  Members that are
        full are skipped: never an error.

        :raises TypeError: an invalid group name or message.
        :raises MessageTooLarge: the message is over ``max_message_size``.
        """

    def prepare(message: object) -> Prepared:
        """
        Validate ``message`` and copy it for :meth:`send_prepared`: the copy
        the contract requires (msgpack bytes; a layer that keeps messages in
        this process may make a :class:`~chanserv.types.FlatMessage`), and
        the check of the types it holds.

        :raises TypeError: not a dict, a non-``str`` key, the reserved key
            ``__asgi_channel__``, or a value of a type no layer can carry.
        :raises MessageTooLarge: larger than ``max_message_size`` serialised.
        """

    def unpack(data: Prepared) -> Content:
        """A fresh dict from data returned by :meth:`prepare`."""

    def send_prepared(channel: str, data: Prepared) -> None:
        """:meth:`send` with a message already through :meth:`prepare`."""

    def send_group_prepared(group: str, data: Prepared) -> None:
        """:meth:`send_group` with a message already through :meth:`prepare`."""

    def send_prepared_wait(channel: str, data: Prepared, timeout: float) -> None:
        """
        :meth:`send_prepared`, waiting up to ``timeout`` seconds for room
        while the channel is full or blocked.  A worker thread only: it
        blocks.

        :raises ChannelFull: the channel stayed full for ``timeout`` seconds
            (``ChannelBlocked`` if it was blocked at the end).
        """

    def receive(channels: Sequence[str], block: bool = False) -> Received | tuple[None, None]:
        """
        Take one message from any of ``channels``: ``(channel, message)``,
        or ``(None, None)`` if there is none.  ``block=True`` waits a bounded
        time for one.  A process-local channel is received on its prefix
        (up to and including the ``!``).

        :raises TypeError: ``channels`` is a lone name or holds an invalid one.
        """

    def receive_many(channels: Sequence[str], block: bool = False) -> Received | tuple[None, None]:
        """Deprecated alias of :meth:`receive`, kept for 1.x code."""

    def new_channel(pattern: str) -> str:
        """
        A fresh single-reader channel name: ``pattern`` (ending with ``?``)
        plus random letters, unused in the layer.

        :raises TypeError: ``pattern`` does not end with ``?``.
        """

    def group_add(group: str, channel: str) -> None:
        """Add ``channel`` to ``group`` (or renew its membership) for ``group_expiry``."""

    def group_discard(group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``; no-op if it is not a member."""

    def group_channels(group: str) -> list[str]:
        """The current members of ``group``."""

    def flush() -> None:
        """Forget every message, group and counter of the layer."""

    def global_statistics() -> dict[str, float]:
        """Layer-wide counters (``messages_count``, ``channel_full_count``, ...)."""

    def channel_statistics(channel: str) -> dict[str, float]:
        """Counters of ``channel`` (``messages_count``, ``messages_pending``, ...)."""

    def valid_channel_name(name: object, receive: bool = False) -> bool:
        """
        Check a channel name; return True or raise :class:`TypeError`.

        A name is a ``str`` shorter than 100 characters of ASCII letters,
        digits, ``-``, ``_`` and ``.``, with at most one ``?`` (single-reader)
        or ``!`` (process-local) type character.  A ``?`` name needs a part
        after the ``?``.  With ``receive=True`` a ``!`` name must end at the
        ``!``: readers receive on the prefix.
        """

    def valid_channel_names(names: object, receive: bool = False) -> bool:
        """Check a list of channel names (a lone ``str`` is refused)."""

    def valid_group_name(name: object) -> bool:
        """Check a group name; return True or raise :class:`TypeError`."""

    def get_capacity(channel: str) -> int:
        """
        The capacity of ``channel``: that of the first ``channel_capacity``
        pattern matching its non-local name, else ``capacity``.
        """


#: ``callback(batch)`` of :meth:`IReactorChannelLayer.add_local_receiver`:
#: ``batch`` is a list of ``(channel, message)`` pairs, delivered on the
#: reactor thread.
LocalReceiver = Callable[[list[Received]], None]


class IReactorChannelLayer(Interface):
    """
    The reactor face of a channel layer: Deferreds instead of blocking
    calls.  Called **on the reactor thread only**, between
    :meth:`attach_reactor` and :meth:`detach_reactor`.  The ``*_twisted``
    methods report errors by failing their Deferred, never by raising.
    """

    sends_at_once = Attribute(
        "True when send_twisted always fires before it returns (nothing "
        "crosses a network): a caller on the reactor thread may then call "
        "the synchronous send() instead, which raises what the Deferred "
        "would fail with and spares the Deferred."
    )

    def attach_reactor(reactor: Any) -> None:
        # Any: the reactor must provide IReactorTime and IReactorFromThreads (the Redis layer's
        # also IReactorTCP), and Python's types have no intersection of interfaces.
        """
        Bind the layer to the reactor that will call this face.  It
        provides ``IReactorTime`` and ``IReactorFromThreads`` (the Redis
        layer also needs ``IReactorTCP``): typed ``Any``, as Python types
        have no intersection of interfaces.

        :raises RuntimeError: the layer is attached already.
        """

    def detach_reactor() -> Deferred[None]:
        """
        Release the reactor's resources (timers, connections); the Deferred
        fires once they are gone.
        """

    def receive_twisted(channels: Sequence[str]) -> Deferred[Received]:
        """A Deferred firing with the next ``(channel, message)`` from ``channels``."""

    def receive_many_twisted(channels: Sequence[str], limit: int) -> Deferred[list[Received]]:
        """
        A Deferred firing with 1 to ``limit`` messages from ``channels``, as
        soon as at least one is there.  Cancelling it takes nothing.
        """

    def send_twisted(channel: str, message: Content) -> Deferred[None]:
        """
        :meth:`IChannelLayer.send` as a Deferred (fails with ChannelFull and
        the like).  The caller hands ``message`` over: the interface server
        builds each one and never reads or changes it afterwards, so no
        isolation requires a copy (the layer still checks it).
        """

    def send_group_twisted(group: str, message: Content) -> Deferred[None]:
        """:meth:`IChannelLayer.send_group` as a Deferred."""

    def when_capacity_twisted(channel: str) -> Deferred[None]:
        """
        A Deferred firing once ``channel`` has room for another message (and
        is not blocked).  Cancellable.
        """

    def add_local_receiver(
        prefix: str,
        callback: LocalReceiver,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        """
        Deliver every message for ``prefix`` + local names to
        ``callback(batch)`` on the reactor thread instead of a queue: this is
        how an interface server's replies reach their connections without
        polling.  Messages already queued for the prefix are handed over
        too.  The members of a group send share one dict: read-only.  The
        receiver owns its channels' capacity (see :meth:`count_full`,
        :meth:`block_local_channel`), and their group memberships no longer
        lapse by time: they end with :meth:`discard_local_channel`.
        ``on_lost()`` is called if the layer loses its state (memberships,
        queued messages).

        :raises TypeError: ``prefix`` is not a valid name ending with ``!``.
        :raises ValueError: ``prefix`` has a receiver already.
        """

    def remove_local_receiver(prefix: str) -> None:
        """Stop delivering to ``prefix``'s receiver; no-op without one."""

    def discard_local_channel(channel: str) -> None:
        """
        The connection of local channel ``channel`` is gone: it leaves every
        group now, is no longer blocked, and its statistics are forgotten.
        Never raises (a layer that fails logs it).
        """

    def count_full(channel: str, count: int = 1) -> None:
        """
        Count ``count`` messages that could not be delivered to ``channel``
        (its connection's queue overflowed) in its and the global
        ``channel_full_count``.  Never raises.
        """

    def block_local_channel(channel: str) -> None:
        """
        Pause sends to ``channel``, a ``prefix!local`` channel of this
        process: until :meth:`unblock_local_channel` (or
        :meth:`discard_local_channel`, when its connection goes), ``send``
        to it raises :class:`~chanserv.exceptions.ChannelBlocked` (a
        ``ChannelFull``), ``send_prepared_wait`` waits, and
        :meth:`when_capacity_twisted` fires only once it is unblocked.
        Messages sent before still arrive.  The interface server blocks a
        response's reply channel while its client is not taking what was
        written, so the application slows to the client's pace.  Idempotent;
        refusals while blocked are not counted in ``channel_full_count``
        (nothing is lost).  A mark never outlives the process that set it.

        :raises TypeError: ``channel`` is not a valid ``prefix!local`` name.
        """

    def unblock_local_channel(channel: str) -> None:
        """
        End :meth:`block_local_channel`: sends to ``channel`` go through
        again and whoever waits for room on it is woken.  No-op if it is
        not blocked.

        :raises TypeError: ``channel`` is not a valid ``prefix!local`` name.
        """


class ISendHandOff(Interface):
    """
    A layer that sends a consumer's held messages for the worker thread
    that ran it, so that the thread does not wait for each send to reach a
    remote store (the Redis layer; the in-process layer's sends cost a
    lock, and it has no need of this).
    """

    def hand_off_sends(
        sends: Sequence[tuple[str, str, Prepared]],
        full_timeout: float,
        blocked_timeout: float,
        done: Callable[[list[Any]], None],
    ) -> bool:
        """
        Take ``sends`` -- ``(kind, name, data)`` with kind ``"channel"`` or
        ``"group"``, names checked, data from :meth:`IChannelLayer.prepare`
        -- and return at once; the layer then sends them from the reactor
        thread in their order, as the thread would have: a full channel is
        waited on up to ``full_timeout`` seconds (a blocked one up to
        ``blocked_timeout``) before the sends after it go.
        ``done(failures)`` runs on the reactor thread once every send is
        through, ``failures`` holding each one that could not be made
        (objects with ``send`` -- its kind and name -- and ``failure``).  A
        worker thread.

        :returns: False, having taken nothing, when the layer cannot take
            them now (not attached to a reactor; as much as it may hold in
            flight is in flight): the caller then sends them itself,
            waiting, which paces a consumer that sends faster than the
            messages leave.
        """


class SendSink(Protocol):
    """
    Where a send's outcome goes instead of a Deferred of its own
    (:class:`ISendToSink`): ``callback(None)`` once the layer accepted the
    message, ``errback(reason)`` (the exception, or a Failure) when it was
    refused or failed.  Neither may raise.  Reactor thread.
    """

    def callback(self, result: None) -> object: ...

    def errback(self, reason: BaseException | Failure) -> object: ...


class ISendToSink(Interface):
    """
    A layer whose reactor-face sends can report to a :class:`SendSink`
    instead of returning a new Deferred (the Redis layer, whose sends
    answer later, batched): a caller that sends a message at a time and
    keeps its own state -- the interface server's per-connection senders --
    then needs no Deferred per message.
    """

    def send_twisted_to(channel: str, message: Content, sink: SendSink) -> None:
        """
        :meth:`IReactorChannelLayer.send_twisted`, its outcome given to
        ``sink`` (possibly before this returns, as a failed Deferred would
        fire).  Reactor thread.
        """


class ReplyConnection(Protocol):
    """What a connection registered for replies (:class:`IReplyDispatch`) provides."""

    def deliver(self, message: Content) -> None:
        """
        Handle one reply ``message`` (reactor thread).  The dict may be shared
        with other receivers of a group send: read it, never mutate it.
        """

    def layer_state_lost(self) -> None:
        """
        The layer lost its state (group memberships, queued replies): end
        the connection so that its client starts over (reactor thread).
        """


class IReplyDispatch(Interface):
    """
    Reply channels for the connections of one interface-server process, as
    the HTTP and WebSocket protocols use them.  Every method runs on the
    reactor thread.

    A registered connection provides ``deliver(message)`` (one reply; the
    dict may be shared with other receivers, read-only) and
    ``layer_state_lost()`` (the layer lost its state: end the connection);
    see :class:`ReplyConnection`.
    """

    prefix = Attribute("The process-local prefix of every reply channel, ending with '!'.")

    def new_reply_channel() -> str:
        """A fresh, unguessable reply channel name under :attr:`prefix`."""

    def register(name: str, connection: ReplyConnection) -> None:
        """
        Deliver replies on ``name`` to ``connection`` until :meth:`unregister`.

        :raises ValueError: ``name`` is not one of this process's reply
            channels, or is registered already.
        """

    def unregister(name: str) -> None:
        """
        Forget ``name``: its connection is gone.  It leaves every group now
        and is no longer blocked; later replies on it are counted, not
        delivered.  No-op if unknown.
        """

    def block(name: str) -> bool:
        """
        Have the layer refuse sends to ``name`` until :meth:`unblock` or
        :meth:`unregister`; False if the layer cannot (then only the
        connection's own cap bounds what it holds).  Never raises.
        """

    def unblock(name: str) -> None:
        """End :meth:`block` for ``name``.  Never raises."""

    def overflowed(name: str, dropped: int) -> None:
        """
        ``name``'s connection could not take ``dropped`` messages (its client
        stopped reading) and is being closed: count them.  Never raises.
        """
