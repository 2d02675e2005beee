"""Settings of the project the end-to-end tests run under twistd."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "chanserv-e2e-not-secret"
DEBUG = os.environ.get("E2E_DEBUG") == "1"
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "chanserv",
]
STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
MIDDLEWARE = ["django.contrib.sessions.middleware.SessionMiddleware"]
ROOT_URLCONF = "e2eproj.urls"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("E2E_DB", str(BASE_DIR / "e2e.sqlite3")),
    }
}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

_layer = os.environ.get("E2E_LAYER", "memory")
if _layer == "none":
    pass  # no CHANNEL_LAYERS at all: chanserv's defaults
elif _layer == "memory":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "asgiref.inmemory.ChannelLayer",
            "ROUTING": "e2eproj.routing.channel_routing",
            "CONFIG": {"capacity": int(os.environ.get("E2E_CAPACITY", "100"))},
        }
    }
elif _layer == "misspelt":
    # tests/e2e/test_logs_cli.py: a typo in a Channels 1.x backend name.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "asgiref.inmemory.ChanelLayer",
            "ROUTING": "e2eproj.routing.channel_routing",
        }
    }
elif _layer == "badrouting":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "asgiref.inmemory.ChannelLayer",
            "ROUTING": "e2eproj.routing.chanel_routing",
        }
    }
elif _layer == "broken":
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "no.such.Layer", "ROUTING": "e2eproj.routing.channel_routing"}
    }
elif _layer == "redis":
    # The Redis layer (tests/e2e/test_redis_*.py): E2E_REDIS_URLS is one or
    # more comma-separated redis:// URLs (one shard each); the short
    # reconnect back-off lets the fault tests see recoveries quickly.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "asgi_redis.RedisChannelLayer",
            "ROUTING": "e2eproj.routing.channel_routing",
            "CONFIG": {
                "hosts": os.environ["E2E_REDIS_URLS"].split(","),
                "prefix": "e2e:",
                "capacity": int(os.environ.get("E2E_CAPACITY", "100")),
                "group_expiry": float(os.environ.get("E2E_GROUP_EXPIRY", "86400")),
                "blpop_timeout": 1,
                "connection_kwargs": {
                    "socket_timeout": 2,
                    "socket_connect_timeout": 2,
                    "reconnect_max_delay": 0.5,
                },
            },
        }
    }
