"""
``chanserv.hacks.monkeypatch_django`` and the app's 1.x-named
configuration.  Main thread.
"""

from __future__ import annotations

from django.apps import apps
from django.contrib.staticfiles.management.commands import runserver

from chanserv.apps import ChannelsConfig, ChanservConfig
from chanserv.hacks import monkeypatch_django
from chanserv.management.commands.runserver import Command


def test_runserver_of_staticfiles_is_chanservs_and_stays_so() -> None:
    """With staticfiles installed, its runserver command is chanserv's, also after a second call."""
    assert apps.is_installed("django.contrib.staticfiles")
    assert runserver.Command is Command
    monkeypatch_django()
    assert runserver.Command is Command


def test_the_app_is_configured_by_chanservconfig_and_channelsconfig_is_the_same_app() -> None:
    """Django picks ChanservConfig for "chanserv"; ChannelsConfig (1.x's name) is the same app."""
    assert type(apps.get_app_config("chanserv")) is ChanservConfig
    assert issubclass(ChannelsConfig, ChanservConfig)
    assert ChannelsConfig.name == "chanserv"
