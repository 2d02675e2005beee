"""The tutorial's first consumer ("First Consumers"), with ``channels`` -> ``chanserv``."""

from django.http import HttpResponse

from chanserv.handler import AsgiHandler


def http_consumer(message):
    # Make standard HTTP response - access ASGI path attribute directly
    response = HttpResponse("Hello world! You asked for %s" % message.content["path"])
    # Encode that response into message format (ASGI)
    for chunk in AsgiHandler.encode_response(response):
        message.reply_channel.send(chunk)
