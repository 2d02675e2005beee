"""
The delay app installed for the tests of this folder only (so the rest of
the suite builds its service trees without it), with its table migrated
into the test database.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.conf import settings
from django.test.utils import override_settings


@pytest.fixture(scope="package", autouse=True)
def delay_app() -> Iterator[None]:
    """``chanserv.delay`` in INSTALLED_APPS while this folder's tests run."""
    from django.core.management import get_commands

    with override_settings(INSTALLED_APPS=[*settings.INSTALLED_APPS, "chanserv.delay"]):
        get_commands.cache_clear()
        yield
    get_commands.cache_clear()


@pytest.fixture(name="delay_db")
def delay_db_fixture() -> Iterator[None]:
    """The test database with the delay table, emptied after each test."""
    from django.core.management import call_command

    from chanserv.delay.models import DelayedMessage
    from tests.consumer_support import _setup_databases

    _setup_databases()
    call_command("migrate", "chanserv_delay", verbosity=0)
    yield
    DelayedMessage.objects.all().delete()
