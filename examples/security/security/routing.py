"""
The routing of the security example: WebSockets go to the tutorial's
consumers -- ``/same-origin/`` to the stricter connect consumer (the page
must come from this very scheme, host and port) -- and HTTP requests go to
the Django views (urls.py): the login, sign-up and chat pages.
"""

from chatapp.consumers import ws_add, ws_add_same_origin, ws_disconnect, ws_message

from chanserv.routing import route

channel_routing = [
    route("websocket.connect", ws_add_same_origin, path=r"^/same-origin/$"),
    route("websocket.connect", ws_add),
    route("websocket.receive", ws_message),
    route("websocket.disconnect", ws_disconnect),
]
