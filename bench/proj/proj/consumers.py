import time

from chanserv import Group


def echo(message):
    if message.get("text") is not None:
        message.reply_channel.send({"text": message["text"]})
    else:
        message.reply_channel.send({"bytes": message["bytes"]})


def slow(message):
    time.sleep(0.01)
    message.reply_channel.send({"text": message["text"]})


def chat_connect(message, room):
    Group("room-" + room).add(message.reply_channel)
    message.reply_channel.send({"accept": True})


def chat_receive(message, room):
    if message.get("text") is not None:
        Group("room-" + room).send({"text": message["text"]})


def chat_disconnect(message, room):
    Group("room-" + room).discard(message.reply_channel)
