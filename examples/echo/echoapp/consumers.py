"""The tutorial's echo consumer ("First Consumers"), with ``channels`` -> ``chanserv``."""


# Connected to websocket.receive
def ws_message(message):
    # ASGI WebSocket packet-received and send-packet message types
    # both have a "text" key for their textual data.
    # (A binary frame has "bytes" instead of "text"; the tutorial leaves
    # that case out, echo it as binary.)
    if "bytes" in message.content:
        message.reply_channel.send({"bytes": message.content["bytes"]})
        return
    message.reply_channel.send(
        {
            "text": message.content["text"],
        }
    )
