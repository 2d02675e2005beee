"""
End-to-end, in a real browser: the pages of the tutorial section examples
(examples/persisting_data, authentication, security, routing, models,
ordering) run
their JavaScript against a real ``twistd -n chanserv``: two tabs chat
through the server.  Headless Chromium (the system's, as in
tests/e2e/test_browser.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.e2e.harness import TwistdProcess
from tests.e2e.test_browser import TIMEOUT_MS, launch_chromium
from tests.e2e.tutorial_support import migrate, start, stop_cleanly


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """``serve(example)``: migrate and start it; returns its base URL."""
    started: list[TwistdProcess] = []

    def serve(example: str) -> str:
        db = tmp_path / ("%s.sqlite3" % example)
        migrate(example, db)
        started.append(start(example, db))
        return "http://127.0.0.1:%d" % started[-1].port

    try:
        yield serve
        for proc in started:
            stop_cleanly(proc)
    finally:
        for proc in started:
            proc.__exit__()


def new_page(browser: Browser, errors: list[str]) -> Page:
    page = browser.new_context().new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.on("pageerror", lambda error: errors.append("%s: %s" % (page.url, error)))
    return page


def say(page: Page, text: str) -> None:
    page.fill("#message-input", text)
    page.click("#send")


def test_persisting_data_page(browser: Browser, serve: Callable[[str], str]) -> None:
    """In Chromium, two users join a room on the persisting_data page; both see a message."""
    url = serve("persisting_data")
    errors: list[str] = []
    pages = []
    for name in ("alice", "bob"):
        page = new_page(browser, errors)
        page.goto(url + "/")
        page.fill("#room", "lobby")
        page.fill("#username", name)
        page.click("#join")
        expect(page.locator("#status")).to_have_text("in room lobby")
        pages.append(page)
    say(pages[0], "hello from alice")
    for page in pages:
        expect(page.locator("#messages li")).to_have_text(["alice: hello from alice"])
    assert errors == []


@pytest.mark.parametrize("example", ["authentication", "security"])
def test_login_and_chat_pages(browser: Browser, serve: Callable[[str], str], example: str) -> None:
    """In Chromium, the auth examples' sign-up and login lead to a chat two users share."""
    # security: the page's origin (127.0.0.1) is in ALLOWED_HOSTS.
    url = serve(example)
    errors: list[str] = []
    pages = []
    for name in ("alice", "anna"):
        page = new_page(browser, errors)
        page.goto(url + "/signup/")
        page.fill("#id_username", name)
        page.fill("#id_password1", "s3cret-Passw0rd")
        page.fill("#id_password2", "s3cret-Passw0rd")
        page.click("#signup")
        page.wait_for_url(url + "/login/")
        page.fill("#id_username", name)
        page.fill("#id_password", "s3cret-Passw0rd")
        page.click("#login")
        page.wait_for_url(url + "/")
        expect(page.locator("#username")).to_have_text(name)
        expect(page.locator("#status")).to_have_text("open")
        pages.append(page)
    say(pages[1], "hi alice")
    for page in pages:
        expect(page.locator("#messages li")).to_have_text(["hi alice"])
    assert errors == []


def test_routing_page(browser: Browser, serve: Callable[[str], str]) -> None:
    """In Chromium, the routing page's room gets messages sent over the socket and by POST."""
    url = serve("routing")
    errors: list[str] = []
    pages = []
    for _ in range(2):
        page = new_page(browser, errors)
        page.goto(url + "/")
        page.fill("#room", "kitchen")
        page.click("#join")
        expect(page.locator("#status")).to_have_text("in room kitchen")
        pages.append(page)
    say(pages[0], "over the socket")
    for page in pages:
        expect(page.locator("#messages li")).to_have_text(["over the socket"])
    pages[1].fill("#message-input", "over POST /poll/")
    pages[1].click("#post")
    for page in pages:
        expect(page.locator("#messages li")).to_have_text(["over the socket", "over POST /poll/"])
    assert errors == []


def test_models_page_keeps_the_history(browser: Browser, serve: Callable[[str], str]) -> None:
    """In Chromium, a message on the models page is saved and shown as history on reload."""
    url = serve("models")
    errors: list[str] = []
    page = new_page(browser, errors)
    page.goto(url + "/")
    page.fill("#room", "attic")
    page.click("button[type=submit]")
    page.wait_for_url(url + "/rooms/attic/")
    expect(page.locator("#status")).to_have_text("open")
    say(page, "saved for later")
    expect(page.locator("#messages li")).to_have_text(["saved for later"])
    page.reload()
    expect(page.locator("#messages li.history")).to_have_text(["saved for later"])
    assert errors == []


def test_ordering_page_burst(browser: Browser, serve: Callable[[str], str]) -> None:
    """In Chromium, the ordering page's burst of 20 messages comes back in order."""
    url = serve("ordering")
    errors: list[str] = []
    page = new_page(browser, errors)
    page.goto(url + "/")
    expect(page.locator("#status")).to_have_text("open")
    page.click("#burst")
    expected = ["%d: burst message %d" % (i, i) for i in range(1, 21)]
    expect(page.locator("#messages li")).to_have_text(expected)
    assert errors == []
