"""
The signals of the consumer lifecycle: ``consumer_started`` and
``consumer_finished`` are sent in the pool thread running each consumer;
``worker_process_ready`` and ``worker_ready`` once per process, from the
reactor thread.
"""

from __future__ import annotations

import threading

from django.db import close_old_connections
from django.db.backends.signals import connection_created
from django.dispatch import Signal

from chanserv._compat.django import ReceiverCheck
from chanserv.channel import pending_message_store

__all__ = [
    "consumer_finished",
    "consumer_started",
    "send_consumer_finished",
    "send_consumer_started",
    "worker_process_ready",
    "worker_ready",
]


def _cached_signal() -> Signal:
    # Sent twice per consumed message: cache the live receivers per sender,
    # as Django's use_caching does, but in a plain dict so that any sender
    # -- None included, which Django's weak cache refuses -- works.  Django
    # clears the cache whenever a receiver connects or disconnects.
    signal = Signal(use_caching=True)
    signal.sender_receivers_cache = {}
    return signal


consumer_started = _cached_signal()  # sender=handler class; kwargs: environ
consumer_finished = _cached_signal()  # sender=handler class
worker_ready = Signal()  # sender=Worker instance
worker_process_ready = Signal()  # sender=Worker instance

consumer_started.connect(
    close_old_connections, dispatch_uid="chanserv.close_old_connections.started"
)
consumer_finished.connect(
    close_old_connections, dispatch_uid="chanserv.close_old_connections.finished"
)
consumer_started.connect(pending_message_store.activate, dispatch_uid="chanserv.pending.activate")
consumer_finished.connect(
    pending_message_store.send_and_flush, dispatch_uid="chanserv.pending.flush"
)


_STARTED_CHECK = ReceiverCheck(
    consumer_started,
    ("chanserv.close_old_connections.started", "chanserv.pending.activate"),
)
_FINISHED_CHECK = ReceiverCheck(
    consumer_finished,
    ("chanserv.close_old_connections.finished", "chanserv.pending.flush"),
)

# Set in a thread once it opened a database connection: only then can there
# be an old connection to close.
_opened = threading.local()


def _connection_created(**kwargs: object) -> None:
    _opened.db = True


connection_created.connect(_connection_created, dispatch_uid="chanserv.db_opened", weak=False)


def send_consumer_started(sender: object, environ: dict[str, object]) -> None:
    """
    ``consumer_started.send(sender=sender, environ=environ)``.  While only
    chanserv's own receivers are connected they are called directly, in
    order, and ``close_old_connections`` only in a thread that has opened a
    database connection: the same effect for a fraction of the cost.  A
    receiver's exception propagates.  The pool thread about to run a
    consumer.
    """
    if _STARTED_CHECK.only_ours():
        if getattr(_opened, "db", False):
            close_old_connections()
        pending_message_store.activate()
    else:
        consumer_started.send(sender=sender, environ=environ)


def send_consumer_finished(sender: object) -> None:
    """
    ``consumer_finished.send(sender=sender)``, with the shortcut of
    :func:`send_consumer_started`.  The pool thread that ran the consumer.
    """
    if _FINISHED_CHECK.only_ours():
        if getattr(_opened, "db", False):
            close_old_connections()
        pending_message_store.send_and_flush()
    else:
        consumer_finished.send(sender=sender)
