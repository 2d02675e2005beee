from twisted.application.service import ServiceMaker

chanserv = ServiceMaker(
    "chanserv",
    "chanserv.tap",
    "Django Channels 1.x application server: HTTP, WebSockets, channel layer and workers",
    "chanserv",
)
