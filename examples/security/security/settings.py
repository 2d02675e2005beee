"""
Settings of the security example.

The tutorial's "Security" section: the "Authentication" chat (a logged-in
user chats with every user whose username has the same first letter), its
``websocket.connect`` consumer decorated with ``allowed_hosts_only``: only
pages served from a host in ``ALLOWED_HOSTS`` may open a WebSocket, so a
foreign site cannot use a visitor's session cookie to chat in their name.

Run it from the folder holding manage.py::

    python manage.py migrate
    twistd -n chanserv --settings=security.settings

``CHANSERV_EXAMPLE_DB`` overrides the SQLite file (default: db.sqlite3 next
to manage.py); the tests use it to give each run its own database.
``CHANSERV_EXAMPLE_ALLOWED_HOSTS`` adds host names (comma-separated) to
``ALLOWED_HOSTS``, e.g. the name the site is served under.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

# An example, never a production site: the key is public and DEBUG is on.
SECRET_KEY = "chanserv-example-security-not-secret"
DEBUG = True
# Listed explicitly (rather than left empty, which Django and chanserv read
# as "localhost, 127.0.0.1 and [::1]" under DEBUG): the origin check uses it.
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"] + [
    host.strip()
    for host in os.environ.get("CHANSERV_EXAMPLE_ALLOWED_HOSTS", "").split(",")
    if host.strip()
]

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

ROOT_URLCONF = "security.urls"

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

# The tutorial's settings: chanserv takes the Channels 1.x backend name as
# an alias of its own in-process layer.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "asgiref.inmemory.ChannelLayer",
        "ROUTING": "security.routing.channel_routing",
    },
}
