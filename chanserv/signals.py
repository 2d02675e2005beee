"""
The signals of the consumer lifecycle.

``consumer_started`` and ``consumer_finished`` bracket every consumer run, in
the pool thread that runs it.  Django's ``close_old_connections`` is connected
to both, so a worker thread never reuses a database connection that went stale
or is past ``CONN_MAX_AGE``; the thread's buffered sends are flushed on
``consumer_finished`` (see :mod:`chanserv.message`).

``worker_ready`` is sent, from the reactor thread, when the worker dispatcher
starts taking messages; ``worker_process_ready`` once per process before that.
"""

from __future__ import annotations

from django.db import close_old_connections
from django.dispatch import Signal

consumer_started = Signal()  # sender=handler class; kwargs: environ
consumer_finished = Signal()  # sender=handler class
worker_ready = Signal()  # sender=Worker instance
worker_process_ready = Signal()  # sender=Worker instance

consumer_started.connect(
    close_old_connections, dispatch_uid="chanserv.close_old_connections.started"
)
consumer_finished.connect(
    close_old_connections, dispatch_uid="chanserv.close_old_connections.finished"
)


def _connect_pending_store() -> None:
    from chanserv.message import pending_message_store

    consumer_started.connect(
        pending_message_store.activate, dispatch_uid="chanserv.pending.activate"
    )
    consumer_finished.connect(
        pending_message_store.send_and_flush, dispatch_uid="chanserv.pending.flush"
    )


_connect_pending_store()
