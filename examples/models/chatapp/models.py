from django.db import models


class ChatMessage(models.Model):
    """One message said in a room: what the tutorial's ``msg_consumer`` saves."""

    room = models.CharField(max_length=100, db_index=True)
    message = models.TextField()
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return "%s: %s" % (self.room, self.message)
