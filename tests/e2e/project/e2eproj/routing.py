from chanserv.routing import route
from e2eproj import consumers, ordered

channel_routing = [
    route("e2e.marker", consumers.write_marker),
    route("http.request", consumers.slow_http, path=r"^/slow/$"),
    route("http.request", consumers.gated_http, path=r"^/gated/$"),
    route("websocket.connect", ordered.ordered_connect, path=r"^/ordered/$"),
    route("websocket.receive", ordered.ordered_receive, path=r"^/ordered/$"),
]
