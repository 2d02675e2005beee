"""
Settings of the chatroom example: a complete chat site with accounts, rooms
and a history kept in the database.

Run it from the folder holding manage.py::

    python manage.py migrate
    twistd -n chanserv --settings=chatroom.settings

``CHANSERV_EXAMPLE_DB`` overrides the SQLite file (default: db.sqlite3 next
to manage.py); the tests use it to give each run its own database.

These are development settings (DEBUG on, a public SECRET_KEY): see the
README's "Going to production" for what to change.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

# An example, never a production site as it is: the key is public and DEBUG
# is on, so chanserv serves the static files itself (as runserver does).
SECRET_KEY = "chanserv-example-chatroom-not-secret"
DEBUG = True
# With DEBUG on and an empty list: localhost, 127.0.0.1 and [::1].  The
# WebSocket consumer's @allowed_hosts_only checks the Origin against it too.
ALLOWED_HOSTS: list[str] = []

INSTALLED_APPS = [
    "rooms",  # first, so its registration/ templates win over the admin's
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "chanserv",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "chatroom.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("CHANSERV_EXAMPLE_DB", str(BASE_DIR / "db.sqlite3")),
        "OPTIONS": {
            # Many worker threads write (messages, channel sessions): wait for
            # the lock instead of failing with "database is locked", and let
            # readers go on while a write is in progress.
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL;",
        },
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "rooms:list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Served from the apps' static/ folders by chanserv while DEBUG is on;
# ``manage.py collectstatic`` copies them to STATIC_ROOT for production.
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# The tutorial's settings: chanserv takes the Channels 1.x backend name as an
# alias of its own in-process layer.  Sessions (HTTP and channel sessions
# alike) are Django's default database sessions.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "asgiref.inmemory.ChannelLayer",
        "ROUTING": "chatroom.routing.channel_routing",
    },
}
