"""
Reply channels: unguessable names per connection, and :class:`ReplyRegistry`,
which hands every reply for this process to its connection, counts what
cannot be delivered, blocks the channel of a slow client and tells
connections when the layer lost its state.  Reactor thread only.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from chanserv.interfaces import IReactorChannelLayer, IReplyDispatch, ReplyConnection
from chanserv.layers.base import random_string
from chanserv.log import Logger
from chanserv.types import Received

__all__ = ["REPLY_PREFIX", "ReplyConnection", "ReplyRegistry"]

log = Logger()

#: Start of every reply channel name (then random letters and ``!``).
REPLY_PREFIX = "chanserv.response."


@implementer(IReplyDispatch)
class ReplyRegistry(Service):
    """
    Maps this process's reply channels to their connections.

    :param layer: the channel layer (reactor face used: ``add_local_receiver``
        and ``remove_local_receiver``).

    All methods run on the reactor thread.  ``startService`` installs the
    local receiver for :attr:`prefix`; ``stopService`` removes it.

    Nothing is dropped silently: a reply for a connection that is gone is
    counted (:attr:`gone`) and its channel removed from every group; an
    overflow a connection reports (:meth:`overflowed`) is counted here and
    in the layer's ``channel_full_count``; when the layer has lost its
    state every connection is told (``layer_state_lost``).  A blocked
    channel (:meth:`block`) stays blocked until :meth:`unblock` or until
    its connection goes.
    """

    name = "replies"

    def __init__(self, layer: IReactorChannelLayer) -> None:
        self._layer = layer
        #: The process-local prefix, ending with ``!``.
        self.prefix = REPLY_PREFIX + random_string(12) + "!"
        self._connections: dict[str, ReplyConnection] = {}
        #: Replies that found no connection (it had gone).
        self.gone = 0
        #: Messages dropped because a connection's queue overflowed.
        self.dropped = 0
        #: Connections closed for an overflowing queue.
        self.overflow_closes = 0
        #: Times the layer reported its state lost.
        self.state_losses = 0
        #: Replies handed to this process so far (:attr:`gone` included).
        self.replies = 0

    def new_reply_channel(self) -> str:
        """A fresh reply channel name: :attr:`prefix` + 16 CSPRNG letters."""
        return self.prefix + random_string(16)

    def register(self, name: str, connection: ReplyConnection) -> None:
        """
        Deliver replies on ``name`` to ``connection`` until :meth:`unregister`.

        :raises ValueError: ``name`` is not one of this registry's names, or
            is registered already.
        """
        if not name.startswith(self.prefix):
            raise ValueError("%r is not a reply channel of this process" % (name,))
        if name in self._connections:
            raise ValueError("reply channel %r is registered already" % (name,))
        self._connections[name] = connection

    def unregister(self, name: str) -> None:
        """
        Forget ``name``: its connection is gone.  It leaves every group now
        and is no longer blocked; later replies on it are counted in
        :attr:`gone`.  No-op if unknown.
        """
        if self._connections.pop(name, None) is not None:
            self._discard(name)

    def _discard(self, name: str) -> None:
        discard = getattr(self._layer, "discard_local_channel", None)
        if discard is not None:
            try:
                discard(name)
            except Exception:
                log.failure("Removing {channel} from its groups failed", channel=name)

    def block(self, name: str) -> bool:
        """
        Have the layer refuse sends to ``name`` (``block_local_channel``)
        until :meth:`unblock` or :meth:`unregister`; False if it cannot
        (then only the connection's own cap bounds what it holds).
        """
        return self._call_layer("block_local_channel", name, "Blocking {channel} failed")

    def unblock(self, name: str) -> None:
        """End :meth:`block` for ``name`` (``unblock_local_channel``)."""
        self._call_layer("unblock_local_channel", name, "Unblocking {channel} failed")

    def _call_layer(self, method: str, name: str, failed: str) -> bool:
        call = getattr(self._layer, method, None)
        if call is None:
            return False
        try:
            call(name)
        except NotImplementedError:
            return False
        except Exception:
            log.failure(failed, channel=name)
            return False
        return True

    def overflowed(self, name: str, dropped: int) -> None:
        """
        ``name``'s connection could not take ``dropped`` messages (its client
        stopped reading) and is being closed: count them here and in the
        layer's statistics.
        """
        self.dropped += dropped
        self.overflow_closes += 1
        count = getattr(self._layer, "count_full", None)
        if count is not None:
            try:
                count(name, dropped)
            except Exception:
                log.failure("Counting a drop on {channel} failed", channel=name)

    def __len__(self) -> int:
        return len(self._connections)

    def __contains__(self, name: object) -> bool:
        return name in self._connections

    def startService(self) -> None:
        super().startService()
        self._layer.add_local_receiver(self.prefix, self._dispatch, self._state_lost)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self._layer.remove_local_receiver(self.prefix)
        return succeed(None)

    def _dispatch(self, batch: list[Received]) -> None:
        # Reactor thread, called by the layer with every reply that arrived
        # since the last call.
        self.replies += len(batch)
        connections = self._connections
        missing: set[str] | None = None
        for channel, message in batch:
            connection = connections.get(channel)
            if connection is None:
                self.gone += 1
                if missing is None:
                    missing = set()
                missing.add(channel)
                continue
            try:
                connection.deliver(message)
            except Exception:
                log.failure("Delivering a reply on {channel} failed", channel=channel)
        if missing:
            # Its connection is gone (a group_add that came after it
            # closed, say): make sure it is in no group any more.
            for channel in missing:
                log.debug("Reply on {channel}, whose connection is gone", channel=channel)
                self._discard(channel)

    def _state_lost(self) -> None:
        # Reactor thread, called by the layer.
        self.state_losses += 1
        log.warn(
            "The channel layer lost its state: ending {n} connection(s) so that "
            "their clients reconnect",
            n=len(self._connections),
        )
        for channel, connection in list(self._connections.items()):
            try:
                connection.layer_state_lost()
            except Exception:
                log.failure("Ending {channel} after a state loss failed", channel=channel)
