"""
Byte-level checks of requests on top of Twisted's parser, and of an
application's replies before any of it is written.  Pure functions, called
on the reactor thread.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from chanserv.types import Content

__all__ = [
    "BadReply",
    "TargetError",
    "checked_content",
    "checked_start",
    "has_forbidden_value_byte",
    "is_token",
    "parse_target",
    "request_line_problem",
]

_TCHAR = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

#: Bytes refused in header values: every control byte but HTAB, DEL, and
#: NEL (0x85), which Python's splitlines() treats as a line break.
FORBIDDEN_VALUE_BYTES = bytes(range(0x00, 0x09)) + bytes(range(0x0A, 0x20)) + b"\x7f\x85"

#: Bytes allowed in a request target: visible ASCII.
_TARGET_BYTES = bytes(range(0x21, 0x7F))

_LOWERCASE = b"abcdefghijklmnopqrstuvwxyz"


class TargetError(ValueError):
    """A request target that cannot be served (answered with 400)."""


def is_token(value: bytes) -> bool:
    """Is ``value`` a non-empty RFC 9110 token (a valid method or header name)?"""
    return bool(value) and not value.translate(None, _TCHAR)


def has_forbidden_value_byte(value: bytes) -> bool:
    """Does ``value`` hold a byte from :data:`FORBIDDEN_VALUE_BYTES`?"""
    return len(value.translate(None, FORBIDDEN_VALUE_BYTES)) != len(value)


def request_line_problem(line: bytes) -> str | None:
    """
    What is wrong with a request line that Twisted's parser would accept,
    or None.  (Twisted itself refuses a wrong number of spaces and versions
    other than HTTP/1.0 and HTTP/1.1.)
    """
    parts = line.split(b" ")
    if len(parts) != 3:
        return "Malformed request line"
    method, target, _ = parts
    if not is_token(method):
        return "Malformed method"
    if len(method.translate(None, _LOWERCASE)) != len(method):
        return "Methods are case-sensitive: lowercase letters refused"
    if not target or target.translate(None, _TARGET_BYTES):
        return "Request target with bytes outside printable ASCII"
    return None


def parse_target(method: bytes, target: bytes) -> tuple[bytes, bytes, str]:
    """
    Split a request target into ``(raw path, query string, decoded path)``.

    Origin-form (``/p?q``) is the normal case.  Absolute-form
    (``http://host/p?q``) is accepted as RFC 9112 §3.2.2 requires, but only
    its path and query are kept: the Host header stays what the client sent.
    ``OPTIONS *`` gives path ``"*"``.

    :raises TargetError: another form, a ``#`` fragment, a path that does not
        percent-decode to UTF-8, or one that decodes to a NUL.
    """
    if b"#" in target:
        raise TargetError("Fragment in request target")
    if target.startswith(b"/"):
        raw_path, _, query = target.partition(b"?")
    elif target == b"*" and method == b"OPTIONS":
        return b"*", b"", "*"
    else:
        scheme, sep, rest = target.partition(b"://")
        if not sep or scheme.lower() not in (b"http", b"https"):
            raise TargetError("Unsupported request target form")
        cut = len(rest)
        for delimiter in (b"/", b"?"):
            index = rest.find(delimiter)
            if index != -1:
                cut = min(cut, index)
        if cut == 0:
            raise TargetError("Absolute-form target without authority")
        path_and_query = rest[cut:]
        if not path_and_query.startswith(b"/"):
            path_and_query = b"/" + path_and_query
        raw_path, _, query = path_and_query.partition(b"?")
    try:
        path = unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError:
        raise TargetError("Path does not decode to UTF-8") from None
    if "\x00" in path:
        raise TargetError("NUL in path")
    return raw_path, query, path


#: Control bytes refused in response header values (HTAB allowed).
_RESPONSE_FORBIDDEN = bytes(range(0x00, 0x09)) + bytes(range(0x0A, 0x20)) + b"\x7f"


class BadReply(ValueError):
    """A reply message that cannot be written (answered with 500)."""


def checked_start(
    message: Content,
) -> tuple[int, list[tuple[bytes, bytes]], int | None]:
    """
    ``(status, headers, declared length)`` of a first reply, checked:
    ``status`` an int in 200-599; ``headers`` a list of ``[name, value]``
    bytes pairs with token names (returned lowercased) and no control bytes
    in values; at most one distinct, well-formed ``Content-Length``.

    :raises BadReply: anything that cannot be written as is.
    """
    status = message.get("status")
    if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
        raise BadReply("status must be an int from 200 to 599, not %r" % (status,))
    raw = message.get("headers", ())
    if not isinstance(raw, (list, tuple)):
        raise BadReply("headers must be a list of [name, value] pairs")
    headers = []
    lengths = set()
    for pair in raw:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise BadReply("header %r is not a [name, value] pair" % (pair,))
        name, value = pair
        if not isinstance(name, bytes) or not isinstance(value, bytes):
            raise BadReply("header %r: name and value must be bytes" % (pair,))
        if not is_token(name):
            raise BadReply("header name %r is not a token" % (name,))
        if len(value.translate(None, _RESPONSE_FORBIDDEN)) != len(value):
            raise BadReply("header %r: control byte in the value" % (name,))
        name = name.lower()
        if name == b"content-length":
            lengths.add(value.strip(b" \t"))
        headers.append((name, value))
    declared = None
    if lengths:
        value = lengths.pop()
        if lengths or not value.isdigit() or len(value) > 18:
            raise BadReply("conflicting or malformed Content-Length")
        declared = int(value)
    return status, headers, declared


def checked_content(message: Content) -> bytes:
    """The ``content`` of a reply (default ``b""``).  :raises BadReply: not bytes."""
    content = message.get("content", b"")
    if not isinstance(content, bytes):
        raise BadReply("content must be bytes, not %s" % (type(content).__name__,))
    return content
