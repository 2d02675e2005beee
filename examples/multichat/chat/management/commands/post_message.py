"""
``python manage.py post_message ROOM TEXT [--user NAME]``: save a message in
a room from outside the server -- a cron job, a script.  The data binding
sends it to the room's open pages like any other save, through the channel
layer: that reaches the server only over a layer shared between processes
(Redis); with the in-memory layer the message is saved, and shown on the
next join, but no open page hears of it -- the command says so.
"""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q

from chanserv import DEFAULT_CHANNEL_LAYER, channel_layers
from chat.models import Message, Room


class Command(BaseCommand):
    help = (
        "Save TEXT as a message in ROOM (its title or id), as an announcement or, with "
        "--user, as that user's. Open pages get it through the data binding when the "
        "channel layer is shared between processes (Redis: set CHANSERV_EXAMPLE_REDIS for "
        "the server and for this command); with the in-memory layer they see it only on "
        "their next join."
    )

    def add_arguments(self, parser):
        parser.add_argument("room", help="the room's title or id")
        parser.add_argument("text")
        parser.add_argument("--user", help="the author's username (default: an announcement)")

    def handle(self, *args, room, text, user, **options):
        match = Q(title=room) | Q(pk=int(room)) if room.isdigit() else Q(title=room)
        found = Room.objects.filter(match).first()
        if found is None:
            raise CommandError("There is no room %r." % (room,))
        author = None
        if user:
            author = get_user_model().objects.filter(username=user).first()
            if author is None:
                raise CommandError("There is no user %r." % (user,))
        text = text.strip()
        if not text:
            raise CommandError("The message is empty.")
        message = Message.objects.create(room=found, user=author, text=text)
        self.stdout.write("Saved message %d in %s." % (message.pk, found))
        if channel_layers[DEFAULT_CHANNEL_LAYER].local_only():
            self.stderr.write(
                "The in-memory channel layer cannot reach the server from this process: open "
                "pages see the message only when they join the room again. Use the Redis "
                "layer (CHANSERV_EXAMPLE_REDIS) to have it sent to them."
            )
