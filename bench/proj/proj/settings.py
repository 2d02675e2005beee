"""The benchmark project: the anchors' echo, chat and hello, Channels 1.x style."""

import os

SECRET_KEY = "chanserv-bench-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["chanserv"]
MIDDLEWARE: list = []
ROOT_URLCONF = "proj.urls"
DATABASES: dict = {}
USE_TZ = True
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}

# Same per-channel bound as the anchors (capacity 1000).
if os.environ.get("CHANNEL_LAYER", "memory") == "redis":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "chanserv.layers.RedisChannelLayer",
            "ROUTING": "proj.routing.channel_routing",
            "CONFIG": {
                "hosts": [("127.0.0.1", int(os.environ.get("REDIS_PORT", "6379")))],
                "capacity": 1000,
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "chanserv.layers.InMemoryChannelLayer",
            "ROUTING": "proj.routing.channel_routing",
            "CONFIG": {"capacity": 1000},
        }
    }
