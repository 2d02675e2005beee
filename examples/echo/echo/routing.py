"""WebSocket messages go to the echo consumer; HTTP goes to the Django views."""

from echoapp.consumers import ws_message

from chanserv.routing import route

channel_routing = [
    route("websocket.receive", ws_message),
]
