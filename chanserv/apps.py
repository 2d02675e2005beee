"""
The Django app: ``"chanserv"`` in ``INSTALLED_APPS`` adds the ``runserver``
and ``runworker`` commands.  Runs in the main thread, when Django sets up.
"""

from django.apps import AppConfig


class ChanservConfig(AppConfig):
    """
    The Django app.  ``"chanserv"`` in ``INSTALLED_APPS`` adds the
    ``runserver`` (HTTP + WebSockets + workers) and ``runworker`` commands.
    """

    name = "chanserv"
    verbose_name = "chanserv"
    #: Django picks this class for ``"chanserv"`` in ``INSTALLED_APPS``, not
    #: the 1.x-named subclass below.
    default = True

    def ready(self) -> None:
        # Django takes a command from the first app in INSTALLED_APPS that
        # has it, and django.contrib.staticfiles (usually listed first) ships
        # its own WSGI runserver: chanserv's stands in for it, as in 1.x.
        from chanserv.hacks import monkeypatch_django

        monkeypatch_django()


class ChannelsConfig(ChanservConfig):
    """Channels 1.x's name for the app's configuration: the same app."""

    default = False
