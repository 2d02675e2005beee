#!/usr/bin/env python
"""The live-server test project's command line (tests/test/test_liveserver.py runs its tests)."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "liveproject.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
