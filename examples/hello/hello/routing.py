"""Every ``http.request`` goes to the tutorial's consumer, none to the views."""

from chanserv.routing import route

channel_routing = [
    route("http.request", "helloapp.consumers.http_consumer"),
]
