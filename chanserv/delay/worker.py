"""
The delay server in the foreground of a process, as Channels 1.x's
``channels.delay.worker.Worker`` ran it, and the service tree that
``manage.py rundelay`` runs: :func:`build_delay_service`.  ``Worker.run``
runs the reactor in the calling thread (the main thread), which so becomes
the reactor thread.
"""

from __future__ import annotations

from typing import Any

from chanserv.asgi import ChannelLayerWrapper
from chanserv.delay.service import DelayService
from chanserv.management.runner import run_in_foreground
from chanserv.service import ChanservService, LayerService
from chanserv.threads import WorkerPool

__all__ = ["Worker", "build_delay_service"]


def build_delay_service(reactor: Any, channel_layer: Any, sleep: float = 1.0) -> ChanservService:
    # Any: the reactor must provide IReactorTime, IReactorFromThreads (and IReactorTCP for
    # the Redis layer); channel_layer is a ChannelLayerWrapper, whose attributes are the
    # layer's.
    """
    The service tree of ``rundelay``: ``channel_layer``'s reactor face, a
    pool of one thread named ``chanserv-delay`` and the delay server
    looking at the database every ``sleep`` seconds.
    """
    root = ChanservService(
        ready_message="chanserv delay server ready: layer=%r (%s)"
        % (channel_layer.alias, type(channel_layer.channel_layer).__name__),
        reactor=reactor,
    )
    LayerService(reactor, channel_layer).setServiceParent(root)
    pool = WorkerPool(reactor, 1, name="chanserv-delay")
    pool.setServiceParent(root)
    DelayService(reactor, channel_layer.channel_layer, pool, sleep=sleep).setServiceParent(root)
    return root


class Worker:
    """
    Channels 1.x's delay worker: :meth:`run` serves ``asgi.delay`` on
    ``channel_layer`` until the process is told to stop.  Unlike 1.x's,
    an invalid message is logged and skipped (1.x's loop ended on it), the
    database is looked at every ``database_sleep_duration`` seconds with
    the reactor waiting instead of sleeping, and several delay servers on
    one database never send a message twice.

    :param channel_layer: a layer, or the ``ChannelLayerWrapper`` of
        ``channel_layers[alias]``.
    :param signal_handlers: let SIGINT and SIGTERM stop :meth:`run`.
    :param database_sleep_duration: seconds between looks at the database.
    """

    def __init__(
        self,
        channel_layer: Any,
        signal_handlers: bool = True,
        database_sleep_duration: float = 1.0,
    ) -> None:
        # Any: a chanserv layer or its ChannelLayerWrapper (1.x passed either).
        if not isinstance(channel_layer, ChannelLayerWrapper):
            channel_layer = ChannelLayerWrapper(channel_layer, "default", [])
        self.channel_layer = channel_layer
        self.signal_handlers = signal_handlers
        self.database_sleep_duration = database_sleep_duration

    def run(self) -> None:
        """Run the delay server on the global reactor until it stops.  Blocks."""
        from twisted.internet import reactor

        root = build_delay_service(reactor, self.channel_layer, self.database_sleep_duration)
        run_in_foreground(root, reactor, install_signal_handlers=self.signal_handlers)
