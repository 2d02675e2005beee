"""
The chat's consumers, written the Channels 1.x way (``channels`` replaced by
``chanserv`` in the imports).

One WebSocket per page, ``/chat/stream/``, carries JSON frames ``{"stream",
"payload"}``; :class:`Demultiplexer` hands each payload to its stream:

- ``rooms`` (:class:`RoomsConsumer`), the commands of the 1.x multichat:
  ``{"command": "join", "room": id}`` -- answered ``{"join": id, "title",
  "messages": [...]}``, the room's recent history --, ``{"command":
  "leave", "room": id}`` -- answered ``{"leave": id}`` -- and ``{"command":
  "send", "room": id, "message": text, "delay": seconds}``: the message is
  saved ``delay`` seconds later (through the delay server, the
  ``asgi.delay`` channel) and answered at once ``{"scheduled": id,
  "delay"}``; without ``delay``, it is saved now.  A command that cannot be
  done is answered ``{"error": code, "message": text}``.
- ``messages`` (:class:`chat.bindings.MessageBinding`), the data binding:
  every change of a message of the socket's rooms comes this way, and the
  page writes (``create``) and deletes its own messages through it.
"""

import logging

from django.contrib.auth import get_user_model

from chanserv import Channel, Group
from chanserv.generic.websockets import JsonWebsocketConsumer, WebsocketDemultiplexer

from .bindings import MessageBinding, as_id, clean_text, joined_rooms
from .models import Message, Room, group_name

logger = logging.getLogger(__name__)

#: The longest delay of a "send later", in seconds.
MAX_DELAY = 3600
#: The channel the delay server sends a delayed message to (routing.py).
DELAYED_CHANNEL = "chat.delayed"


class ClientError(Exception):
    """A command that cannot be done: ``code`` for programs, ``text`` for people."""

    def __init__(self, code, text):
        super().__init__(code)
        self.code = code
        self.text = text


def get_room_or_error(room_id, user):
    """The room ``room_id`` if ``user`` may be in it; else :class:`ClientError`."""
    if not user.is_authenticated:
        raise ClientError("USER_HAS_TO_LOGIN", "Log in first.")
    pk = as_id(room_id)
    room = Room.objects.filter(pk=pk).first() if pk is not None else None
    if room is None:
        raise ClientError("ROOM_INVALID", "There is no such room.")
    if room.staff_only and not user.is_staff:
        raise ClientError("ROOM_ACCESS_DENIED", "Only staff may enter this room.")
    return room


def serialized_history(room):
    """The room's recent messages as the binding sends them: ``[{"pk", "data"}]``."""
    binding = MessageBinding()
    return [{"pk": m.pk, "data": binding.serialize_data(m)} for m in room.history()]


class RoomsConsumer(JsonWebsocketConsumer):
    """The ``rooms`` stream: join, leave and send, as the 1.x multichat did."""

    channel_session_user = True

    def connect(self, message, multiplexer, **kwargs):
        message.channel_session["rooms"] = []

    def disconnect(self, message, multiplexer, **kwargs):
        # Out of every room's Group.  If this did not run (a crash), the
        # Group would drop the socket once its messages expire.
        for room_id in joined_rooms(message):
            Group(group_name(room_id)).discard(message.reply_channel)

    def receive(self, content, multiplexer, **kwargs):
        commands = {"join": self.join, "leave": self.leave, "send": self.send_message}
        command = commands.get(content.get("command"))
        try:
            if command is None:
                raise ClientError("UNKNOWN_COMMAND", "Commands are join, leave and send.")
            command(content, multiplexer)
        except ClientError as error:
            multiplexer.send({"error": error.code, "message": error.text})

    def join(self, content, multiplexer):
        room = get_room_or_error(content.get("room"), self.message.user)
        # Join first, then read the history: a message saved in between
        # comes twice (the page shows it once), never not at all.
        Group(room.group_name).add(self.message.reply_channel)
        self.message.channel_session["rooms"] = sorted(joined_rooms(self.message) | {room.pk})
        multiplexer.send(
            {"join": room.pk, "title": room.title, "messages": serialized_history(room)}
        )

    def leave(self, content, multiplexer):
        room = get_room_or_error(content.get("room"), self.message.user)
        Group(room.group_name).discard(self.message.reply_channel)
        self.message.channel_session["rooms"] = sorted(joined_rooms(self.message) - {room.pk})
        multiplexer.send({"leave": room.pk})

    def send_message(self, content, multiplexer):
        room = get_room_or_error(content.get("room"), self.message.user)
        if room.pk not in joined_rooms(self.message):
            raise ClientError("ROOM_ACCESS_DENIED", "Join the room before you write in it.")
        text, error = clean_text(content.get("message"))
        if error:
            raise ClientError("MESSAGE_INVALID", error)
        delay = content.get("delay")
        if delay is None:
            # Saved; the binding sends it to the room.
            Message.objects.create(room=room, user=self.message.user, text=text)
            return
        if isinstance(delay, bool) or not isinstance(delay, int) or not 1 <= delay <= MAX_DELAY:
            raise ClientError("DELAY_INVALID", "A delay is 1 to %d seconds." % MAX_DELAY)
        # The delay server (chanserv.delay) keeps it and, ``delay`` ms later,
        # sends ``content`` on to the channel named -- see deliver_delayed.
        Channel("asgi.delay").send(
            {
                "channel": DELAYED_CHANNEL,
                "content": {"room": room.pk, "user": self.message.user.pk, "text": text},
                "delay": delay * 1000,
            },
            immediately=True,
        )
        multiplexer.send({"scheduled": room.pk, "delay": delay})


class Demultiplexer(WebsocketDemultiplexer):
    """The page's socket: the logged-in user's, with the two streams."""

    # The login of the page's session cookie becomes message.user, on the
    # handshake and (through the channel session) on every later message.
    http_user = True

    consumers = {
        "rooms": RoomsConsumer,
        "messages": MessageBinding.consumer,
    }

    def connect(self, message, **kwargs):
        if not message.user.is_authenticated:
            message.reply_channel.send({"close": True})  # the handshake gets 403
            return
        super().connect(message, **kwargs)


# Connected to chat.delayed: a "send later" whose time has come.
def deliver_delayed(message):
    room = Room.objects.filter(pk=message["room"]).first()
    user = get_user_model().objects.filter(pk=message["user"]).first()
    if room is None or user is None or (room.staff_only and not user.is_staff):
        # Deleted (or demoted) while the message waited: say so in the log.
        logger.warning("Delayed message dropped: room %s or user %s is gone", room, user)
        return
    Message.objects.create(room=room, user=user, text=message["text"])


# Connected to websocket.connect on any other path.
def refuse(message):
    message.reply_channel.send({"close": True})
