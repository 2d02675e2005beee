"""
Rooms and their messages.

A ``Room`` is what the 1.x multichat called one: a title, and whether only
staff may enter.  Its sockets are in :attr:`Room.group_name`, the Group the
data binding (:mod:`chat.bindings`) sends every change of the room's
messages to.  A ``Message`` without a user is an announcement (from the
admin or ``manage.py post_message``).
"""

from django.conf import settings
from django.db import models
from django.utils import timezone

#: How many messages a socket gets when it joins a room.
HISTORY_LENGTH = 50
#: The longest message accepted, in characters.
MAX_MESSAGE_LENGTH = 1000


class Room(models.Model):
    title = models.CharField(max_length=100, unique=True)
    # Only staff users may join (and see) a staff-only room.
    staff_only = models.BooleanField(default=False)

    class Meta:
        ordering = ["title"]

    def __str__(self) -> str:
        return self.title

    @property
    def group_name(self) -> str:
        """The Group of the sockets in this room."""
        return group_name(self.pk)

    def history(self) -> list["Message"]:
        """The last :data:`HISTORY_LENGTH` messages, oldest first."""
        recent = self.messages.select_related("user").order_by("-id")[:HISTORY_LENGTH]
        return list(reversed(recent))


def group_name(room_id: int) -> str:
    """The Group of the sockets in room ``room_id``."""
    return "room-%d" % room_id


class Message(models.Model):
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="chat_messages",
        help_text="Empty for an announcement.",
    )
    text = models.TextField(max_length=MAX_MESSAGE_LENGTH)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return "%s in %s: %s" % (self.user or "announcement", self.room, self.text[:50])
