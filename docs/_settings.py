"""
Django settings for building the documentation: enough for
``django.setup()``, so that autodoc can import every public module, and for
the doctest samples, which run on the in-memory channel layer.  Main thread
(Sphinx imports it once, before reading the pages).
"""

SECRET_KEY = "chanserv-docs-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "chanserv",
    "chanserv.delay",
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
USE_TZ = True
SESSION_ENGINE = "django.contrib.sessions.backends.db"
CHANNEL_LAYERS = {
    "default": {"BACKEND": "chanserv.layers.InMemoryChannelLayer", "ROUTING": []},
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
