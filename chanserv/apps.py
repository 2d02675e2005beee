from django.apps import AppConfig


class ChanservConfig(AppConfig):
    """The Django app: ``"chanserv"`` in ``INSTALLED_APPS`` adds its commands."""

    name = "chanserv"
    verbose_name = "chanserv"
