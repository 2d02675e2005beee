"""
The interface server: HTTP/1.1, HTTP/2 and WebSocket on the same listeners,
speaking ASGI 1.0 ``www`` messages to the channel layer, with no Django.
Start :class:`chanserv.server.site.InterfaceServer`; its knobs are
:class:`chanserv.server.config.ServerConfig`.  Reactor thread only.
"""
