"""
Settings of the models example.

The tutorial's "Models" chat: every message goes through the
``chat-messages`` channel, whose consumer saves it as a ``ChatMessage`` and
broadcasts it to the room -- whoever sent it: a WebSocket, a view, or a
management command in another process (with the Redis layer).

Run it from the folder holding manage.py::

    python manage.py migrate
    twistd -n chanserv --settings=models.settings

``CHANSERV_EXAMPLE_DB`` overrides the SQLite file (default: db.sqlite3 next
to manage.py); the tests use it to give each run its own database.
``CHANSERV_EXAMPLE_REDIS`` (e.g. ``redis://127.0.0.1:6379/0``) switches to
the Redis channel layer, which other processes -- ``manage.py
post_message`` -- can reach.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

# An example, never a production site: the key is public and DEBUG is on.
SECRET_KEY = "chanserv-example-models-not-secret"
DEBUG = True
ALLOWED_HOSTS: list[str] = []  # with DEBUG on: localhost, 127.0.0.1 and [::1]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "chanserv",
    "chatapp",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "models.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]

# The chat messages and the channel sessions (SESSION_ENGINE's default) are
# in the database, hence the ``migrate`` before the first run.
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("CHANSERV_EXAMPLE_DB", str(BASE_DIR / "db.sqlite3")),
    }
}

USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The tutorial's settings: chanserv takes the Channels 1.x backend names as
# aliases of its own layers.  The in-process layer carries messages within
# the server only; the Redis layer between processes.
if os.environ.get("CHANSERV_EXAMPLE_REDIS"):
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "asgi_redis.RedisChannelLayer",
            "CONFIG": {"hosts": [os.environ["CHANSERV_EXAMPLE_REDIS"]]},
            "ROUTING": "models.routing.channel_routing",
        },
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "asgiref.inmemory.ChannelLayer",
            "ROUTING": "models.routing.channel_routing",
        },
    }
