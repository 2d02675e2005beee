"""
Settings of the project tests/test/test_liveserver.py runs ``manage.py
test`` on: a file SQLite test database (``LIVE_TEST_DB``), the in-memory
channel layer, static files, DEBUG off as Django's test runner has it.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "chanserv-live-server-tests-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "chanserv",
    "liveapp",
]

ROOT_URLCONF = "liveapp.urls"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["LIVE_TEST_DB"] + ".main",
        "TEST": {"NAME": os.environ["LIVE_TEST_DB"]},
    }
}

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "asgiref.inmemory.ChannelLayer",
        "ROUTING": "liveapp.routing.channel_routing",
    },
}
