"""
Channels 1.x's ``monkeypatch_django``: chanserv's ``runserver`` stands in
for the WSGI one of ``django.contrib.staticfiles``, wherever the apps are
listed.  chanserv's app calls it when Django is ready; 1.x code that calls
it again changes nothing.  Main thread, when Django sets up.
"""

from __future__ import annotations

__all__ = ["monkeypatch_django"]


def monkeypatch_django() -> None:
    """
    Make ``manage.py runserver`` chanserv's when ``django.contrib.staticfiles``
    is installed (Django takes a command from the first app that has it, and
    staticfiles, usually listed first, ships its own).  1.x re-parented the
    staticfiles command class; chanserv puts its own class in its place, so
    ``--nostatic``/``--insecure`` keep working through chanserv's static file
    serving.  Does nothing without staticfiles.  Idempotent.
    """
    from django.apps import apps

    if not apps.is_installed("django.contrib.staticfiles"):
        return
    from django.contrib.staticfiles.management.commands import runserver

    from chanserv.management.commands.runserver import Command

    runserver.Command = Command
