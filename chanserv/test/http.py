"""
``HttpClient``: the deprecated Channels 1.x name of
:class:`~chanserv.test.websocket.WSClient`.  Any thread (the test's).
"""

from __future__ import annotations

import warnings
from typing import Any

from chanserv.test.websocket import WSClient

__all__ = ["HttpClient"]


class HttpClient(WSClient):
    """Deprecated: use :class:`~chanserv.test.websocket.WSClient` (same API)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Any: passed through unchanged to WSClient.__init__ (this class is its deprecated
        # alias).
        warnings.warn(
            "HttpClient is deprecated; use chanserv.test.WSClient",
            DeprecationWarning,
            stacklevel=2,
        )
        super().__init__(*args, **kwargs)
