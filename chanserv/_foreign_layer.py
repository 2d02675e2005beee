"""
:class:`ForeignChannelLayer`: any ASGI 1 channel layer class named in
``CHANNEL_LAYERS`` (``asgi_ipc``, ``asgi_rabbitmq``, one's own), seen
through chanserv's two faces.  Its synchronous face -- what consumers,
``Channel``/``Group`` and the 1.x ``Worker`` use -- calls the layer from
any thread; its reactor face runs the layer's blocking calls in a small
named pool of threads and hands results to the reactor thread.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from chanserv.exceptions import ChannelFull, MessageTooLarge
from chanserv.interfaces import LocalReceiver
from chanserv.layers.base import BaseChannelLayer
from chanserv.log import Logger
from chanserv.types import Content, Received

__all__ = ["ForeignChannelLayer", "missing_asgi_methods"]

log = Logger()

#: What a class needs to pass for an ASGI 1 channel layer.
REQUIRED_METHODS = ("send", "new_channel")


def missing_asgi_methods(cls: type) -> list[str]:
    """The ASGI 1 layer methods ``cls`` lacks (``receive`` or ``receive_many`` counts once)."""
    missing = [name for name in REQUIRED_METHODS if not callable(getattr(cls, name, None))]
    if not any(callable(getattr(cls, name, None)) for name in ("receive", "receive_many")):
        missing.append("receive")
    return missing


def _bridge(own: type[Exception], theirs: object) -> type[Exception]:
    """An exception class that is both ``own`` and the layer's ``theirs``, if it can be made."""
    if not isinstance(theirs, type) or not issubclass(theirs, Exception):
        return own
    if issubclass(theirs, own):
        return theirs
    try:
        return type(own.__name__, (own, theirs), {"__module__": __name__})
    except TypeError:  # incompatible layouts: chanserv's class alone
        return own


class ForeignChannelLayer:
    """
    A third-party ASGI 1 layer instance (``layer``) adapted to chanserv.

    Its ``ChannelFull`` (and ``MessageTooLarge``) are raised as classes
    that are both chanserv's and the layer's, so either ``except`` works.
    Unknown attributes are looked up on the layer.

    The reactor face (``attach_reactor`` first; reactor thread only) runs
    blocking receives and sends in a pool of at most :attr:`max_threads`
    threads, and each ``add_local_receiver`` prefix in a thread of its own.
    Such a layer cannot tell when a channel has room, nor accept a blocked
    or discarded local channel: ``when_capacity_twisted`` checks again
    every :attr:`room_poll_interval` seconds, and slow clients are bounded
    by the interface server's own caps only.  A receive that finds nothing
    waits at least :attr:`idle_pause` seconds before the next, for layers
    whose ``block=True`` does not block.
    """

    cheap_receive = False
    sends_at_once = False
    max_threads = 8
    room_poll_interval = 0.05
    idle_pause = 0.01

    def __init__(self, layer: Any) -> None:
        # Any: the third-party layer, duck-typed as ASGI 1 says.
        self.foreign_layer = layer
        self.ChannelFull = _bridge(ChannelFull, getattr(layer, "ChannelFull", None))
        self.MessageTooLarge = _bridge(MessageTooLarge, getattr(layer, "MessageTooLarge", None))
        self._theirs_full = getattr(layer, "ChannelFull", None)
        self._theirs_large = getattr(layer, "MessageTooLarge", None)
        self._receive = getattr(layer, "receive", None) or layer.receive_many
        self._reactor: Any = None
        self._pool: ThreadPool | None = None
        self._receivers: dict[str, threading.Event] = {}
        self._stopping = threading.Event()

    def __getattr__(self, name: str) -> Any:
        if name == "foreign_layer":
            raise AttributeError(name)
        return getattr(self.foreign_layer, name)

    def __repr__(self) -> str:
        return "<ForeignChannelLayer %r>" % (self.foreign_layer,)

    # -- synchronous face (any thread) -------------------------------------------

    @property
    def extensions(self) -> list[str]:
        """The layer's ASGI extensions (``twisted`` never: its reactor face is this one)."""
        return [e for e in getattr(self.foreign_layer, "extensions", []) if e != "twisted"]

    @property
    def local_only(self) -> bool:
        """The layer's own ``local_only`` if it says, else False."""
        return bool(getattr(self.foreign_layer, "local_only", False))

    @property
    def expiry(self) -> float:
        """The layer's ``expiry`` (ASGI's recommended 60 if it has none)."""
        return float(getattr(self.foreign_layer, "expiry", 60))

    def get_capacity(self, channel: str) -> int:
        """The layer's ``get_capacity(channel)``, else its ``capacity``, else 100."""
        get = getattr(self.foreign_layer, "get_capacity", None)
        if callable(get):
            return int(get(channel))
        return int(getattr(self.foreign_layer, "capacity", 100))

    def valid_channel_name(self, name: Any, receive: bool = False) -> bool:
        # Any: any value may be checked, as IChannelLayer.valid_channel_name.
        """The layer's own check if it has one, else chanserv's; True or TypeError."""
        check = getattr(self.foreign_layer, "valid_channel_name", None)
        if callable(check):
            return bool(check(name, receive=receive))
        return BaseChannelLayer.valid_channel_name(name, receive=receive)

    def valid_group_name(self, name: Any) -> bool:
        # Any: any value may be checked, as IChannelLayer.valid_group_name.
        """The layer's own check if it has one, else chanserv's; True or TypeError."""
        check = getattr(self.foreign_layer, "valid_group_name", None)
        if callable(check):
            return bool(check(name))
        return BaseChannelLayer.valid_group_name(name)

    def prepare(self, message: object) -> Any:
        # Any: a deep copy of the message, which the layer serialises itself.
        """A deep copy of ``message`` (the copy the contract requires).  :raises TypeError:"""
        if not isinstance(message, dict):
            raise TypeError("A message must be a dict, not %r" % (type(message).__name__,))
        return copy.deepcopy(message)

    @staticmethod
    def unpack(data: Any) -> Content:
        # Any: what prepare returned.
        """A fresh copy of a prepared message."""
        result: Content = copy.deepcopy(data)
        return result

    def send(self, channel: str, message: Content) -> None:
        """The layer's ``send``; its ChannelFull / MessageTooLarge raised as the bridged classes."""
        try:
            self.foreign_layer.send(channel, message)
        except Exception as e:
            self._translate(e)
            raise

    def _translate(self, e: Exception) -> None:
        for theirs, ours in (
            (self._theirs_full, self.ChannelFull),
            (self._theirs_large, self.MessageTooLarge),
        ):
            if (
                isinstance(theirs, type)
                and isinstance(e, theirs)
                and not isinstance(e, ours)
                and ours is not theirs
            ):
                raise ours(*e.args) from e

    def send_prepared(self, channel: str, data: Any) -> None:
        # Any: what prepare returned.
        """:meth:`send` of a prepared message."""
        self.send(channel, data)

    def send_group(self, group: str, message: Content) -> None:
        """The layer's ``send_group`` (``groups`` extension)."""
        self.foreign_layer.send_group(group, message)

    def send_group_prepared(self, group: str, data: Any) -> None:
        # Any: what prepare returned.
        """:meth:`send_group` of a prepared message."""
        self.send_group(group, data)

    def receive(self, channels: Sequence[str], block: bool = False) -> Received | tuple[None, None]:
        """The layer's ``receive`` (or ``receive_many``)."""
        channel, message = self._receive(list(channels), block=block)
        if channel is None:
            return None, None
        return channel, message

    def receive_many(
        self, channels: Sequence[str], block: bool = False
    ) -> Received | tuple[None, None]:
        """Alias of :meth:`receive`, kept for 1.x code."""
        return self.receive(channels, block=block)

    # -- reactor face (reactor thread only) --------------------------------------

    def attach_reactor(self, reactor: Any) -> None:
        # Any: provides IReactorTime and IReactorFromThreads, as IReactorChannelLayer says.
        """Start the pool of threads that run the layer's blocking calls."""
        if self._reactor is not None:
            raise RuntimeError("The layer is attached to a reactor already")
        self._reactor = reactor
        self._stopping.clear()
        self._pool = ThreadPool(0, self.max_threads, name="chanserv-foreign-layer")
        self._pool.start()

    def detach_reactor(self) -> Deferred[None]:
        """Stop the local receivers and the pool; fires once their threads are gone."""
        reactor, pool = self._reactor, self._pool
        self._reactor = self._pool = None
        self._stopping.set()
        for stop in self._receivers.values():
            stop.set()
        self._receivers.clear()
        done: Deferred[None] = Deferred()
        if pool is None:
            done.callback(None)
            return done

        def stop_pool() -> None:
            # Joins threads that may sit in a blocking receive: off the reactor.
            pool.stop()
            reactor.callFromThread(done.callback, None)

        threading.Thread(target=stop_pool, name="chanserv-foreign-layer-stop", daemon=True).start()
        return done

    def _in_pool(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        if self._pool is None:
            raise RuntimeError("attach_reactor() first")
        return deferToThreadPool(self._reactor, self._pool, f, *args)

    def send_twisted(self, channel: str, message: Content) -> Deferred[None]:
        """:meth:`send` in a pool thread."""
        return self._in_pool(self.send, channel, message)

    def send_group_twisted(self, group: str, message: Content) -> Deferred[None]:
        """:meth:`send_group` in a pool thread."""
        return self._in_pool(self.send_group, group, message)

    def when_capacity_twisted(self, channel: str) -> Deferred[None]:
        """Fires after :attr:`room_poll_interval`: the layer cannot say when there is room."""
        return deferLater(self._reactor, self.room_poll_interval, lambda: None)

    def _wait_one(self, channels: list[str], stop: threading.Event) -> Received | None:
        # A pool thread: block in the layer until a message or ``stop``.
        while not stop.is_set() and not self._stopping.is_set():
            started = time.monotonic()
            received = self.receive(channels, block=True)
            if received[0] is not None:
                return received
            rest = self.idle_pause - (time.monotonic() - started)
            if rest > 0:
                stop.wait(rest)
        return None

    def receive_twisted(self, channels: Sequence[str]) -> Deferred[Received]:
        """A Deferred firing with the next ``(channel, message)``."""
        return self.receive_many_twisted(channels, 1).addCallback(lambda batch: batch[0])

    def receive_many_twisted(self, channels: Sequence[str], limit: int) -> Deferred[list[Received]]:
        """
        A Deferred firing with the next message from ``channels`` (one per
        call), received by a pool thread.  Cancelling it takes nothing: a
        message the thread got meanwhile is sent back to its channel.
        """
        names = list(channels)
        stop = threading.Event()
        result: Deferred[list[Received]] = Deferred(lambda d: stop.set())

        def got(received: Received | None) -> None:
            if received is None:
                return
            if result.called:
                self._put_back(*received)
            else:
                result.callback([received])

        def failed(failure: Any) -> None:
            if not result.called:
                result.errback(failure)
            else:
                log.failure("Receiving from {layer} failed", failure, layer=self)

        self._in_pool(self._wait_one, names, stop).addCallbacks(got, failed)
        return result

    def _put_back(self, channel: str, message: Content) -> None:
        def put() -> None:
            try:
                self.send(channel, message)
            except Exception:
                log.failure(
                    "A message taken from {channel} after its receive was cancelled "
                    "could not be put back; it was lost",
                    channel=channel,
                )

        if self._pool is not None:
            self._pool.callInThread(put)
        else:
            log.error(
                "A message taken from {channel} as the layer stopped was lost", channel=channel
            )

    def add_local_receiver(
        self,
        prefix: str,
        callback: LocalReceiver,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        """
        Deliver every message received on ``prefix`` to ``callback([(channel,
        message)])`` on the reactor thread, from a thread of its own that
        blocks in the layer's receive.  ``on_lost`` is never called: a
        foreign layer does not report lost state.

        :raises TypeError: ``prefix`` is not a valid name ending with ``!``.
        :raises ValueError: ``prefix`` has a receiver already.
        """
        self.valid_channel_name(prefix, receive=True)
        if not isinstance(prefix, str) or not prefix.endswith("!"):
            raise TypeError("A local receiver's prefix ends with '!', not %r" % (prefix,))
        if prefix in self._receivers:
            raise ValueError("%r has a local receiver already" % (prefix,))
        if self._reactor is None:
            raise RuntimeError("attach_reactor() first")
        stop = threading.Event()
        self._receivers[prefix] = stop
        reactor = self._reactor

        def deliver(received: Received) -> None:
            if self._receivers.get(prefix) is stop:
                callback([received])
            else:
                log.debug("Reply on {channel} after its receiver left", channel=received[0])

        def loop() -> None:
            while True:
                try:
                    received = self._wait_one([prefix], stop)
                except Exception:
                    log.failure("Receiving replies on {prefix} failed", prefix=prefix)
                    stop.wait(1.0)
                    continue
                if received is None:
                    return
                reactor.callFromThread(deliver, received)

        threading.Thread(target=loop, name="chanserv-foreign-replies", daemon=True).start()

    def remove_local_receiver(self, prefix: str) -> None:
        """Stop delivering to ``prefix``'s receiver; no-op without one."""
        stop = self._receivers.pop(prefix, None)
        if stop is not None:
            stop.set()
