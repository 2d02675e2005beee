"""
Security helpers for consumers: :mod:`chanserv.security.websockets` checks
the ``Origin`` of WebSocket handshakes.  Their code runs in pool threads.
"""
