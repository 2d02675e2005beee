"""
``python manage.py post_message ROOM MESSAGE``: say something in a room from
outside the server -- from cron, say -- through the ``chat-messages``
channel, which the server's ``msg_consumer`` saves and broadcasts.
"""

from django.core.management.base import BaseCommand, CommandError

from chanserv import DEFAULT_CHANNEL_LAYER, Channel, channel_layers


class Command(BaseCommand):
    help = (
        "Send MESSAGE to ROOM through the chat-messages channel, as a cron job would: the "
        "server saves it as a ChatMessage and sends it to the room's sockets. This needs a "
        "channel layer shared between processes (the Redis layer: set CHANSERV_EXAMPLE_REDIS "
        "for the server and for this command). The in-memory layer lives inside one process, "
        "so no message could reach the server from here: the command refuses to run with it."
    )

    def add_arguments(self, parser):
        parser.add_argument("room")
        parser.add_argument("message")

    def handle(self, *args, room, message, **options):
        layer = channel_layers[DEFAULT_CHANNEL_LAYER]
        if layer.local_only():
            raise CommandError(
                "The channel layer %s only carries messages inside one process: this "
                "command cannot reach the server with it. Use the Redis layer (set "
                "CHANSERV_EXAMPLE_REDIS, e.g. redis://127.0.0.1:6379/0, for the server "
                "and for this command), or post from the page instead." % (layer,)
            )
        Channel("chat-messages").send({"room": room, "message": message})
        self.stdout.write("Sent to chat-messages for room %r." % (room,))
