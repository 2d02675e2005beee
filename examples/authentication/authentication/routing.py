"""
The routing of the authentication example: every WebSocket, whatever its
path, goes to the tutorial's consumers; HTTP requests go to the Django
views (urls.py): the login, sign-up and chat pages.
"""

from chatapp.consumers import ws_add, ws_disconnect, ws_message

from chanserv.routing import route

channel_routing = [
    route("websocket.connect", ws_add),
    route("websocket.receive", ws_message),
    route("websocket.disconnect", ws_disconnect),
]
