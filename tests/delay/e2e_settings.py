"""
The end-to-end project (tests/e2e/project) with the delay app installed and
the routing of tests.delay.e2e_routing, for tests/e2e/test_delay.py.  Run
from the project's folder, so that ``e2eproj`` imports.
"""

from e2eproj.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "chanserv.delay"]  # noqa: F405
if "CHANNEL_LAYERS" in globals():
    CHANNEL_LAYERS["default"]["ROUTING"] = "tests.delay.e2e_routing.channel_routing"  # noqa: F405
