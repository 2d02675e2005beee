"""
Consumers of the live-server tests (pool thread): a WebSocket joins the
group "live" and is answered with the number of users in the database.
"""

from django.contrib.auth.models import User

from chanserv import Group
from chanserv.routing import route


def ws_connect(message):
    message.reply_channel.send({"accept": True})
    Group("live").add(message.reply_channel)


def ws_receive(message):
    message.reply_channel.send({"text": "%s: %d users" % (message["text"], User.objects.count())})


def ws_disconnect(message):
    Group("live").discard(message.reply_channel)


channel_routing = [
    route("websocket.connect", ws_connect),
    route("websocket.receive", ws_receive),
    route("websocket.disconnect", ws_disconnect),
]
