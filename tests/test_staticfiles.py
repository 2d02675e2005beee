"""
chanserv.staticfiles: static files served like runserver does, and the
path-traversal attempts of security.md §3g refused.

The static directory is ``<tmp>/static``; a canary file sits one level above
it, in ``<tmp>``, and must never be served.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from django.test import override_settings

from chanserv.handler import ViewConsumer
from chanserv.layers import InMemoryChannelLayer
from chanserv.staticfiles import (
    StaticFilesConsumer,
    StaticFilesHandler,
    configure_static_serving,
    default_http_consumer,
    static_files_enabled,
)
from tests.test_handler import body_of, http_request, replies

CANARY = b"CANARY-above-the-static-root"


@pytest.fixture
def static_dir(tmp_path):
    static = tmp_path / "static"
    (static / "css").mkdir(parents=True)
    (static / "css" / "site.css").write_bytes(b"body { color: teal; }\n")
    (static / "big.bin").write_bytes(b"b" * (600 * 1024))
    (tmp_path / "canary.txt").write_bytes(CANARY)
    os.symlink(tmp_path / "canary.txt", static / "link.txt")
    os.symlink(tmp_path, static / "up")
    with override_settings(
        DEBUG=True,
        STATIC_URL="/static/",
        STATIC_ROOT=str(tmp_path / "collected"),
        STATICFILES_DIRS=[str(static)],
        STATICFILES_FINDERS=["django.contrib.staticfiles.finders.FileSystemFinder"],
    ):
        yield tmp_path


@pytest.fixture
def layer() -> InMemoryChannelLayer:
    return InMemoryChannelLayer()


def fetch(layer: Any, path: str, consumer: Any = None) -> list[dict[str, Any]]:
    (consumer or StaticFilesConsumer())(http_request(layer, path))
    return replies(layer)


def test_static_files_enabled():
    """Static serving is on under DEBUG or insecure, and only with staticfiles installed;
    default_http_consumer follows it.
    """
    with override_settings(DEBUG=False):
        assert not static_files_enabled()
        assert static_files_enabled(insecure=True)
        assert type(default_http_consumer()) is ViewConsumer
        assert isinstance(default_http_consumer(insecure=True), StaticFilesConsumer)
    with override_settings(DEBUG=True):
        assert static_files_enabled()
        assert isinstance(default_http_consumer(), StaticFilesConsumer)
        with override_settings(
            INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "chanserv"]
        ):
            assert not static_files_enabled()
            assert type(default_http_consumer()) is ViewConsumer


def test_configure_static_serving():
    """configure_static_serving overrides the DEBUG rule either way until it is reset."""
    try:
        configure_static_serving(enabled=True, insecure=True)
        with override_settings(DEBUG=False):
            assert static_files_enabled()
        configure_static_serving(enabled=False)
        with override_settings(DEBUG=True):
            assert not static_files_enabled()
            assert not static_files_enabled(insecure=True)
            assert type(default_http_consumer()) is ViewConsumer
    finally:
        configure_static_serving()
    with override_settings(DEBUG=False):
        assert not static_files_enabled()


def test_serves_a_static_file(static_dir, layer):
    """A file under STATIC_URL is served with 200, its content type and its content."""
    messages = fetch(layer, "/static/css/site.css")
    assert messages[0]["status"] == 200
    assert [b"Content-Type", b"text/css"] in messages[0]["headers"]
    assert body_of(messages) == b"body { color: teal; }\n"
    assert messages[-1]["more_content"] is False


def test_large_static_file_in_512_kib_chunks(static_dir, layer):
    """A large static file is sent in 512 KiB chunks, then an empty last one."""
    messages = fetch(layer, "/static/big.bin")
    assert [len(m["content"]) for m in messages] == [512 * 1024, 88 * 1024, 0]


def test_other_paths_go_to_the_views(static_dir, layer):
    """Paths outside STATIC_URL are passed on to the Django views."""
    messages = fetch(layer, "/hello/")
    assert messages[0]["status"] == 200
    assert body_of(messages) == b"Hello world"


def test_missing_file_is_404(static_dir, layer):
    """A missing static file is answered with 404."""
    messages = fetch(layer, "/static/css/nope.css")
    assert messages[0]["status"] == 404


def test_directory_is_404(static_dir, layer):
    """A static directory is answered with 404, never listed."""
    assert fetch(layer, "/static/css/")[0]["status"] == 404


@pytest.mark.parametrize(
    "path",
    [
        # The path as the server puts it in the message: percent-decoded once.
        "/static/../canary.txt",  # raw ../ or ..%2f or %2e%2e/
        "/static/css/../../canary.txt",
        "/static/%2e%2e/canary.txt",  # the client sent %252e%252e/
        "/static/..%2fcanary.txt",  # the client sent ..%252f
        "/static/..\\canary.txt",
        "/static/css\\..\\..\\canary.txt",
        "/static//etc/passwd",
        "/static/a\x00.css",
        "/static/link.txt",  # a symbolic link out of the static directory
        "/static/up/canary.txt",  # through a linked directory
    ],
)
def test_traversal_attempts_are_refused(static_dir, layer, path):
    """Escapes by dots, backslashes, NUL or symlinks is refused; the canary is never served."""
    messages = fetch(layer, path)
    assert messages[0]["status"] in (400, 404)
    assert CANARY not in body_of(messages)


def test_absolute_path_to_the_canary_is_refused(static_dir, layer):
    """An absolute filesystem path under STATIC_URL is answered 404, never served."""
    messages = fetch(layer, "/static/" + str(static_dir / "canary.txt"))
    assert messages[0]["status"] == 404
    assert CANARY not in body_of(messages)


def test_nul_is_a_bad_request(static_dir, layer):
    """A NUL byte in a static path is answered with 400."""
    assert fetch(layer, "/static/a\x00.css")[0]["status"] == 400


def test_technical_404_under_debug_plain_404_otherwise(static_dir, layer):
    """A missing static file gets the technical 404 page under DEBUG, a plain 404 otherwise."""
    assert b"Page not found" in body_of(fetch(layer, "/static/nope.css"))
    with override_settings(DEBUG=False):
        messages = fetch(layer, "/static/nope.css")
    assert messages[0]["status"] == 404
    assert b"Page not found" not in body_of(messages)


def test_handler_is_the_consumers(static_dir):
    """StaticFilesConsumer serves through a StaticFilesHandler."""
    assert isinstance(StaticFilesConsumer().handler, StaticFilesHandler)
