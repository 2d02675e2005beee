"""The tutorial's chat routing, for the "Enforcing Ordering" consumers."""

from chatapp.consumers import ws_add, ws_disconnect, ws_message

from chanserv.routing import route

channel_routing = [
    route("websocket.connect", ws_add),
    route("websocket.receive", ws_message),
    route("websocket.disconnect", ws_disconnect),
]
