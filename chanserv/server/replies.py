"""
Reply channels: how a consumer's answer finds its HTTP request or WebSocket.

Each interface-server process draws one prefix, ``chanserv.response.<12
CSPRNG letters>!``, and gives every connection ``prefix + <16 CSPRNG
letters>`` (unguessable: a reply channel name keys the channel session).  One
local receiver on the prefix gets every reply for this process from the layer,
in batches on the reactor thread, with no polling; :class:`ReplyRegistry`
hands each message to its connection's ``deliver(message)``.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed

from chanserv.layers.base import random_string
from chanserv.log import Logger

__all__ = ["REPLY_PREFIX", "ReplyConnection", "ReplyRegistry"]

log = Logger()

#: Start of every reply channel name (then random letters and ``!``).
REPLY_PREFIX = "chanserv.response."


class ReplyConnection(Protocol):
    """What a connection registered for replies provides."""

    def deliver(self, message: dict[str, Any]) -> None:
        """
        Handle one reply ``message`` (reactor thread).  The dict may be shared
        with other receivers of a group send: read it, never mutate it.
        """


class ReplyRegistry(Service):
    """
    Maps this process's reply channels to their connections.

    :param layer: the channel layer (reactor face used: ``add_local_receiver``
        and ``remove_local_receiver``).

    All methods run on the reactor thread.  ``startService`` installs the
    local receiver for :attr:`prefix`; ``stopService`` removes it.
    """

    name = "replies"

    def __init__(self, layer: Any) -> None:
        self._layer = layer
        #: The process-local prefix, ending with ``!``.
        self.prefix = REPLY_PREFIX + random_string(12) + "!"
        self._connections: dict[str, ReplyConnection] = {}

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
        """Forget ``name``; later replies on it are dropped.  No-op if unknown."""
        self._connections.pop(name, None)

    def __len__(self) -> int:
        return len(self._connections)

    def __contains__(self, name: object) -> bool:
        return name in self._connections

    def startService(self) -> None:
        super().startService()
        self._layer.add_local_receiver(self.prefix, self._dispatch)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self._layer.remove_local_receiver(self.prefix)
        return succeed(None)

    def _dispatch(self, batch: list[tuple[str, dict[str, Any]]]) -> None:
        # Reactor thread, called by the layer with every reply that arrived
        # since the last call.
        connections = self._connections
        for channel, message in batch:
            connection = connections.get(channel)
            if connection is None:
                log.debug("Reply on unknown channel {channel} dropped", channel=channel)
                continue
            try:
                connection.deliver(message)
            except Exception:
                log.failure("Delivering a reply on {channel} failed", channel=channel)
