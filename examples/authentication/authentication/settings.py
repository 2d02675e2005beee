"""
Settings of the authentication example.

The tutorial's "Authentication" chat: a logged-in user chats with every
user whose username has the same first letter.  The WebSocket finds the
user through the Django session: its cookie, or -- for a WebSocket served
on another host or port -- a ``session_key`` query parameter.

Run it from the folder holding manage.py::

    python manage.py migrate
    twistd -n chanserv --settings=authentication.settings

``CHANSERV_EXAMPLE_DB`` overrides the SQLite file (default: db.sqlite3 next
to manage.py); the tests use it to give each run its own database.
``CHANSERV_EXAMPLE_WS_URL`` (e.g. ``ws://127.0.0.1:9000/``) makes the chat
page open its WebSocket there, with ``?session_key=`` (see the README).
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

# An example, never a production site: the key is public and DEBUG is on.
SECRET_KEY = "chanserv-example-authentication-not-secret"
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

ROOT_URLCONF = "authentication.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
            ]
        },
    }
]

# The sessions (HTTP and channel) are in the database: SESSION_ENGINE's
# default.  Signed-cookie sessions cannot work (see the tutorial).
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("CHANSERV_EXAMPLE_DB", str(BASE_DIR / "db.sqlite3")),
    }
}

LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

#: Where the chat page opens its WebSocket: "" for this server (the session
#: cookie goes along), or another server's URL, given the session key in
#: the query string as the tutorial shows.
CHAT_WEBSOCKET_URL = os.environ.get("CHANSERV_EXAMPLE_WS_URL", "")

# The tutorial's settings: chanserv takes the Channels 1.x backend name as
# an alias of its own in-process layer.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "asgiref.inmemory.ChannelLayer",
        "ROUTING": "authentication.routing.channel_routing",
    },
}
