from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    verbose_name = "Chat"

    def ready(self) -> None:
        # A binding sends model changes once its class exists: import it in
        # every process -- the server, the admin's, a management command's.
        from . import bindings  # noqa: F401
