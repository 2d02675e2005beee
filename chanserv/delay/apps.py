"""
The Django app of the delay server, ``"chanserv.delay"`` in
``INSTALLED_APPS``, and the service it adds to ``twistd chanserv``.  Main
thread, when Django sets up and the service tree is built.
"""

from typing import Any

from django.apps import AppConfig
from twisted.application.service import Service


class DelayConfig(AppConfig):
    """
    The delay server's app.  Its label is ``chanserv_delay``: Channels 1.x
    used ``channels.delay``, which current Django refuses (a label must be a
    Python identifier), so the table is ``chanserv_delay_delayedmessage``.
    """

    name = "chanserv.delay"
    label = "chanserv_delay"
    verbose_name = "chanserv delay server"
    default_auto_field = "django.db.models.AutoField"

    def make_service(self, reactor: Any, layer: Any, pool: Any) -> Service:
        # Any: what DelayService takes (an IReactorTime reactor, a layer with both faces, a
        # WorkerPool); twistd chanserv's tree calls this without importing the delay server.
        """
        The delay server for ``twistd chanserv``'s tree: a
        :class:`~chanserv.delay.service.DelayService` on ``layer``, doing
        its database work in ``pool``, on the default database.
        """
        from chanserv.delay.service import DelayService

        return DelayService(reactor, layer, pool)
