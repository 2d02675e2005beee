"""
Static files for development, served like Django's ``runserver`` does when
``django.contrib.staticfiles`` is installed and ``DEBUG`` is on, with paths
checked before any file is looked up.  Not for production.  Pool threads
only, never the reactor thread.
"""

from __future__ import annotations

import os
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from django import http
from django.apps import apps
from django.conf import settings
from django.core.exceptions import BadRequest
from django.core.handlers.exception import response_for_exception

from chanserv.handler import AsgiHandler, ViewConsumer

__all__ = [
    "StaticFilesConsumer",
    "StaticFilesHandler",
    "configure_static_serving",
    "default_http_consumer",
    "static_files_enabled",
]


class _Serving:
    """The process-wide choice of ``runserver --nostatic`` / ``--insecure``."""

    enabled = True
    insecure = False


def configure_static_serving(enabled: bool = True, insecure: bool = False) -> None:
    """
    Set, for this process, whether static files may be served at all
    (``runserver --nostatic`` gives ``enabled=False``) and whether they are
    served with ``DEBUG`` off (``--insecure``).  Call it at start-up, before
    the routes are built.
    """
    _Serving.enabled = enabled
    _Serving.insecure = insecure


def static_files_enabled(insecure: bool = False) -> bool:
    """
    Whether static files should be served: ``django.contrib.staticfiles``
    is installed and ``DEBUG`` is on -- or ``insecure`` is given, or was
    configured by :func:`configure_static_serving` -- unless serving was
    turned off there.
    """
    if not _Serving.enabled:
        return False
    return apps.is_installed("django.contrib.staticfiles") and bool(
        settings.DEBUG or insecure or _Serving.insecure
    )


def default_http_consumer(insecure: bool = False) -> ViewConsumer:
    """
    The consumer for ``http.request`` when no route takes it: a
    :class:`StaticFilesConsumer` if :func:`static_files_enabled`, else a
    :class:`~chanserv.handler.ViewConsumer`.
    """
    if static_files_enabled(insecure):
        return StaticFilesConsumer()
    return ViewConsumer()


def _check_static_path(relative: str) -> None:
    """
    Refuse a path (relative to ``STATIC_URL``) that tries to leave the
    static directories.

    :raises BadRequest: control characters.
    :raises Http404: ``..``, ``\\``, empty segments, a leading ``/``.
    """
    for candidate in (relative, unquote(relative)):
        if any(ord(c) < 32 or ord(c) == 127 for c in candidate):
            raise BadRequest("control character in a static file path")
        if "\\" in candidate or candidate.startswith("/"):
            raise http.Http404("invalid static file path")
        segments = candidate.split("/")
        # A trailing "" (a directory) is left to serve() to refuse.
        if ".." in segments or "" in segments[:-1]:
            raise http.Http404("invalid static file path")


def _static_roots() -> list[str]:
    """The directories the configured finders serve from, resolved."""
    from django.contrib.staticfiles import finders

    roots = []
    for finder in finders.get_finders():
        for location in getattr(finder, "locations", ()):
            roots.append(location[1] if isinstance(location, tuple) else location)
        for storage in getattr(finder, "storages", {}).values():
            location = getattr(storage, "location", None)
            if location:
                roots.append(location)
    return [os.path.realpath(root) for root in roots]


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _check_no_escape(relative: str) -> None:
    """
    Refuse a found file whose real location (symbolic links resolved) is
    outside every static directory although its path is inside one.

    :raises Http404: the file is a link out of its static directory.
    """
    from django.contrib.staticfiles import finders

    found = finders.find(os.path.normpath(relative).lstrip("/"))
    if not found:
        return
    found_path = found[0] if isinstance(found, list) else found
    roots = _static_roots()
    real = os.path.realpath(found_path)
    if any(_inside(real, root) for root in roots):
        return
    if any(_inside(os.path.abspath(found_path), root) for root in roots):
        raise http.Http404("static file links out of its directory")
    # Found by a finder whose directories are unknown here: its own business.


class StaticFilesHandler(AsgiHandler):
    """
    An :class:`~chanserv.handler.AsgiHandler` that answers requests under
    ``STATIC_URL`` itself, with ``django.contrib.staticfiles.views.serve``
    (no middleware, as in Django's handler), and hands every other request to
    the views.  A missing file gives Django's 404 (the technical page under
    ``DEBUG``).  Runs in worker threads.
    """

    def __init__(self) -> None:
        super().__init__()
        self.base_url = urlparse(self.get_base_url())

    @staticmethod
    def get_base_url() -> str:
        from django.contrib.staticfiles import utils

        utils.check_settings()
        return str(settings.STATIC_URL)

    def _should_handle(self, path: str) -> bool:
        return path.startswith(self.base_url.path) and not self.base_url.netloc

    def file_path(self, url: str) -> str:
        """The path of the file, relative to the static directories."""
        return url2pathname(url.removeprefix(self.base_url.path))

    def serve(self, request: http.HttpRequest) -> http.HttpResponseBase:
        from django.contrib.staticfiles.views import serve

        relative = request.path.removeprefix(self.base_url.path)
        _check_static_path(relative)
        _check_no_escape(relative)
        response: http.HttpResponseBase = serve(
            request, self.file_path(request.path), insecure=True
        )
        return response

    def get_response(self, request: http.HttpRequest) -> http.HttpResponseBase:
        if not self._should_handle(request.path):
            return super().get_response(request)
        try:
            response = self.serve(request)
        except Exception as e:
            response = response_for_exception(request, e)
        finally:
            # A static file never reads the request's body: free it now.
            request.close()
        return response


class StaticFilesConsumer(ViewConsumer):
    """
    A :class:`~chanserv.handler.ViewConsumer` that also serves static files
    under ``STATIC_URL``, through the staticfiles finders; pool threads only.

    Paths are checked before any file is looked up: a ``..`` segment (also
    after one more round of percent-decoding), a backslash, an empty
    segment or a leading ``/`` give 404; a NUL or other control character
    gives 400; a file reached through a symbolic link leading out of its
    static directory gives 404.
    """

    handler_class = StaticFilesHandler
