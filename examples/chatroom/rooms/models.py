"""
Rooms and their messages.

A message's ``id`` gives the order of a room's history: the page shows the
last :data:`HISTORY_LENGTH` by id, and the JavaScript client places every
message it receives by id and asks for the ones it missed after a reconnect
(``?after=<id>``).
"""

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

#: How many messages a room page shows, and a reconnecting client gets back.
HISTORY_LENGTH = 50
#: The longest message accepted, in characters.
MAX_MESSAGE_LENGTH = 2000


class Room(models.Model):
    name = models.CharField(max_length=50, unique=True)
    slug = models.SlugField(max_length=50, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("rooms:room", args=[self.slug])

    def history(self, after: int | None = None) -> list["Message"]:
        """
        The last :data:`HISTORY_LENGTH` messages, oldest first; with
        ``after``, only those whose id is greater.
        """
        messages = self.messages.select_related("user")
        if after is not None:
            messages = messages.filter(id__gt=after)
        return list(reversed(messages.order_by("-id")[:HISTORY_LENGTH]))


class Message(models.Model):
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_messages"
    )
    text = models.TextField(max_length=MAX_MESSAGE_LENGTH)
    timestamp = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["room", "id"], name="rooms_message_room_id")]

    def __str__(self) -> str:
        return "%s in %s: %s" % (self.user, self.room, self.text[:50])

    def as_dict(self) -> dict[str, object]:
        """What the clients get: ``{"id", "user", "text", "time"}`` (ISO 8601)."""
        return {
            "id": self.id,
            "user": self.user.get_username(),
            "text": self.text,
            "time": self.timestamp.isoformat(),
        }
