"""
The data binding of chat messages (Channels 1.x "Data Binding"): every
``Message`` saved or deleted -- from a socket, a view, the admin or a
management command -- is sent to its room's Group as a ``create``,
``update`` or ``delete`` on the ``messages`` stream; and a socket may send
those actions itself, each one allowed or refused by :meth:`has_permission`.

Outbound frames: ``{"stream": "messages", "payload": {"action", "pk",
"data": {"room", "user", "username", "text", "created"}, "model"}}``.
A refused inbound action is answered, to its sender only, with
``{"stream": "messages", "payload": {"error": "...", "action", "pk"}}``.
"""

from chanserv.binding.websockets import WebsocketBinding

from .models import MAX_MESSAGE_LENGTH, Message, group_name


def as_id(value):
    """``value`` as a primary key (an int, or a string of digits), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 19:
        return int(value)
    return None


def clean_text(value):
    """``(text, None)`` for a valid message text, or ``(None, reason)``."""
    if not isinstance(value, str):
        return None, "A message is a string."
    text = value.strip()
    if not text:
        return None, "The message is empty."
    if len(text) > MAX_MESSAGE_LENGTH:
        return None, "A message has at most %d characters." % MAX_MESSAGE_LENGTH
    try:
        text.encode("utf-8")  # JSON may carry lone surrogates ("\ud800")
    except UnicodeEncodeError:
        return None, "The message is not valid text."
    return text, None


def joined_rooms(message):
    """The ids of the rooms this socket has joined (kept in its channel session)."""
    return set(message.channel_session.get("rooms", []))


class MessageBinding(WebsocketBinding):
    model = Message
    stream = "messages"
    fields = ["room", "user", "text", "created"]

    # Outbound

    @classmethod
    def group_names(cls, instance):
        return [group_name(instance.room_id)]

    def serialize_data(self, instance):
        data = super().serialize_data(instance)
        # The user's name, for display: the model field is the user's pk.
        data["username"] = instance.user.get_username() if instance.user_id else ""
        return data

    # Inbound

    def run_action(self, action, pk, data):
        # has_permission, create and update leave the reason of a refusal
        # here; the sender is told, nobody else hears of it.
        self.refusal = None
        super().run_action(action, pk, data)
        if self.refusal:
            self.message.reply_channel.send(
                self.encode(self.stream, {"error": self.refusal, "action": action, "pk": pk})
            )

    def refuse(self, reason):
        self.refusal = reason
        return False

    def has_permission(self, user, action, pk):
        """
        A logged-in user may create a message in a room this socket has
        joined, and update or delete only their own messages.
        """
        if not user.is_authenticated:
            return self.refuse("Log in first.")
        if action == "create":
            room = as_id(self.data.get("room")) if isinstance(self.data, dict) else None
            if room is None or room not in joined_rooms(self.message):
                return self.refuse("Join the room before you write in it.")
            return True
        if action in ("update", "delete"):
            pk = as_id(pk)
            if pk is None or not Message.objects.filter(pk=pk, user=user).exists():
                return self.refuse("You can only change your own messages.")
            return True
        return self.refuse("Unknown action %r." % (action,))

    def create(self, data):
        # Only the room and the text come from the client; the author is the
        # socket's user, the time is now.
        text, error = clean_text(data.get("text"))
        if error:
            self.refuse(error)
            return
        Message.objects.create(room_id=as_id(data["room"]), user=self.user, text=text)

    def update(self, pk, data):
        text, error = clean_text(data.get("text") if isinstance(data, dict) else None)
        if error:
            self.refuse(error)
            return
        message = Message.objects.get(pk=as_id(pk))
        message.text = text
        message.save(update_fields=["text"])
