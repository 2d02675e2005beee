"""
The Django app: ``"chanserv"`` in ``INSTALLED_APPS`` adds the ``runserver``
and ``runworker`` commands.  Runs in the main thread, when Django sets up.
"""

from django.apps import AppConfig, apps


class ChanservConfig(AppConfig):
    """
    The Django app.  ``"chanserv"`` in ``INSTALLED_APPS`` adds the
    ``runserver`` (HTTP + WebSockets + workers) and ``runworker`` commands.
    """

    name = "chanserv"
    verbose_name = "chanserv"

    def ready(self) -> None:
        # Django takes a command from the first app in INSTALLED_APPS that
        # has it, and django.contrib.staticfiles (usually listed first) ships
        # its own WSGI runserver.  chanserv serves static files itself (see
        # chanserv.staticfiles), so its runserver stands in for that one
        # wherever the apps are listed -- as Channels 1.x did.  Both commands
        # are imported only then: staticfiles is an optional app.
        if apps.is_installed("django.contrib.staticfiles"):
            from django.contrib.staticfiles.management.commands import runserver

            from chanserv.management.commands.runserver import Command

            runserver.Command = Command
