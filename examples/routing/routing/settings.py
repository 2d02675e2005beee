"""
Settings of the routing example.

The tutorial's "Routing" section: ``include(chat_routing, path=r"^/chat")``
sends WebSockets on ``/chat/<room_name>/`` to the chat consumers, with
``room_name`` from the path, and ``POST /poll/`` to ``poll_consumer``.

Run it from the folder holding manage.py::

    python manage.py migrate
    twistd -n chanserv --settings=routing.settings

``CHANSERV_EXAMPLE_DB`` overrides the SQLite file (default: db.sqlite3 next
to manage.py); the tests use it to give each run its own database.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

# An example, never a production site: the key is public and DEBUG is on.
SECRET_KEY = "chanserv-example-routing-not-secret"
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

ROOT_URLCONF = "routing.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]

# The channel sessions live where Django's sessions do: the database
# (SESSION_ENGINE's default), hence the ``migrate`` before the first run.
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("CHANSERV_EXAMPLE_DB", str(BASE_DIR / "db.sqlite3")),
    }
}

USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The tutorial's settings: chanserv takes the Channels 1.x backend name as
# an alias of its own in-process layer.  The routing is the list named
# ``routing`` in routing/routing.py, as in the tutorial.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "asgiref.inmemory.ChannelLayer",
        "ROUTING": "routing.routing.routing",
    },
}
