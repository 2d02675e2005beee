"""
The signals of the consumer lifecycle: ``consumer_started`` and
``consumer_finished`` are sent in the pool thread running each consumer;
``worker_process_ready`` and ``worker_ready`` once per process, from the
reactor thread.
"""

from __future__ import annotations

from django.db import close_old_connections
from django.dispatch import Signal

from chanserv.channel import pending_message_store


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
