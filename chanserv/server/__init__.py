"""
The interface server: HTTP/1.1 (twisted.web) and WebSocket (autobahn) on the
same listeners, speaking ASGI 1.0 ``www`` messages to the channel layer.

No Django here.  :class:`chanserv.server.site.InterfaceServer` is the service
to start; :class:`chanserv.server.config.ServerConfig` holds its knobs.
"""
