from __future__ import annotations

import pytest

from tests.consumer_support import _setup_databases


@pytest.fixture(autouse=True, scope="session")
def _test_databases() -> None:
    """The test database, created once, for the ChannelTestCase classes here."""
    _setup_databases()
