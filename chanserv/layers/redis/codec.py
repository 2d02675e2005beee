"""
What the Redis layer stores for a message: the msgpack bytes from
``BaseChannelLayer.prepare``, encrypted as asgi_redis does (Fernet keys in
a ``MultiFernet``) when ``symmetric_encryption_keys`` is set.  Any thread:
the caller's, sending or receiving.
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Sequence
from typing import Any

__all__ = ["MessageCodec", "UndecodableMessage"]


class UndecodableMessage(ValueError):
    """A stored message could not be decrypted (wrong key, tampered, too old)."""


class MessageCodec:
    """
    Encrypts and decrypts stored messages.  Any thread.

    With keys, the first encrypts and every one decrypts, so keys rotate by
    putting the new one first and dropping the old one once its messages
    have expired; a token older than ``expiry + 10`` seconds is refused.

    :param keys: None or empty for no encryption, else a list of ``str`` or
        ``bytes`` keys.
    :raises ValueError: ``keys`` is a lone string, or ``cryptography`` is
        not installed.
    """

    def __init__(self, keys: Sequence[str | bytes] | None, expiry: float) -> None:
        self.ttl = math.ceil(expiry) + 10
        self._crypter: Any = None
        if not keys:
            return
        if isinstance(keys, (str, bytes)):
            raise ValueError("symmetric_encryption_keys must be a list of keys, not one string")
        try:
            from cryptography.fernet import Fernet, MultiFernet
        except ImportError:
            raise ValueError(
                "symmetric_encryption_keys needs the 'cryptography' package "
                "(pip install 'chanserv[encryption]')"
            ) from None
        fernets = []
        for key in keys:
            if isinstance(key, str):
                key = key.encode("utf-8")
            if not isinstance(key, bytes) or not key:
                raise ValueError("Each symmetric encryption key must be a non-empty str or bytes")
            fernets.append(Fernet(base64.urlsafe_b64encode(hashlib.sha256(key).digest())))
        self._crypter = MultiFernet(fernets)

    @property
    def encrypted(self) -> bool:
        return self._crypter is not None

    def encode(self, data: bytes) -> bytes:
        """The bytes to store for prepared message ``data``."""
        if self._crypter is None:
            return data
        token: bytes = self._crypter.encrypt(data)
        return token

    def decode(self, stored: bytes) -> bytes:
        """
        The prepared message from stored bytes.

        :raises UndecodableMessage: it does not decrypt with any key.
        """
        if self._crypter is None:
            return stored
        from cryptography.fernet import InvalidToken

        try:
            data: bytes = self._crypter.decrypt(stored, ttl=self.ttl)
        except InvalidToken:
            raise UndecodableMessage(
                "A message in Redis could not be decrypted with any of the "
                "symmetric_encryption_keys (wrong key, tampered or expired)"
            ) from None
        return data
