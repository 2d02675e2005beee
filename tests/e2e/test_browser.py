"""
A real browser on the chat example: Debian's Chromium, driven by Playwright,
loads the chat page in two tabs; a message typed in one appears in both.

Chromium is the system's (``/usr/bin/chromium``, Debian's ``chromium``
package; ``make test`` installs it); Playwright only drives it and never
downloads a browser.  Without it the test fails -- it is not skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from tests.e2e.harness import TwistdProcess
from tests.e2e.test_examples import start_example, stop_cleanly

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Milliseconds any browser step may take.
TIMEOUT_MS = 15_000


@pytest.fixture
def chat_server(tmp_path: Path) -> Iterator[TwistdProcess]:
    proc = start_example("chat", tmp_path)
    try:
        yield proc
        stop_cleanly(proc)
    finally:
        proc.__exit__()


def launch_chromium(playwright: Playwright) -> Browser:
    """Debian's Chromium, headless; a clear failure (never a skip) when it is missing."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            "%s is missing: install Debian's chromium package (apt-get install chromium; "
            "`make test` runs scripts/ensure-system-deps, which does it as root)" % CHROMIUM,
            pytrace=False,
        )
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


@contextmanager
def chromium_browser() -> Iterator[Browser]:
    """:func:`launch_chromium` for the duration of a ``with`` block."""
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        try:
            yield chromium
        finally:
            chromium.close()


def open_chat(page: Page, url: str, errors: list[str]) -> None:
    """Load the chat page and wait until its socket is in the group."""
    page.on("pageerror", lambda error: errors.append("%s: %s" % (page.url, error)))
    page.on(
        "console",
        lambda msg: errors.append("%s: %s" % (page.url, msg.text)) if msg.type == "error" else None,
    )
    page.goto(url)
    expect(page.locator("#status")).to_have_text("open")
    # The tutorial's script sends "hello world" on open; its echo through
    # the group proves this tab has joined.
    expect(page.locator("#messages li").filter(has_text="[user] hello world")).not_to_have_count(0)


def say(page: Page, text: str) -> None:
    page.fill("#message-input", text)
    page.click("#send")
    expect(page.locator("#message-input")).to_have_value("")


def expect_message(page: Page, text: str) -> None:
    expect(page.get_by_text(text, exact=True)).to_have_count(1)


def test_a_message_sent_in_one_tab_appears_in_both(
    chat_server: TwistdProcess, tmp_path: Path
) -> None:
    """In Chromium, a message typed in one chat tab shows up, as text, in both tabs."""
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            chat_in_two_tabs(
                browser, "http://127.0.0.1:%d/" % chat_server.port, chat_server, tmp_path
            )
        finally:
            browser.close()


def chat_in_two_tabs(browser: Browser, url: str, server: TwistdProcess, tmp_path: Path) -> None:
    """Both tabs join; each one's message shows up in both lists."""
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    first, second = context.new_page(), context.new_page()
    errors: list[str] = []
    try:
        open_chat(first, url, errors)
        open_chat(second, url, errors)

        say(first, "hello from the first tab")
        expect_message(second, "[user] hello from the first tab")
        expect_message(first, "[user] hello from the first tab")

        say(second, "and back from the second <b>tab</b>")
        expect_message(first, "[user] and back from the second <b>tab</b>")
        expect_message(second, "[user] and back from the second <b>tab</b>")

        assert errors == []
    except Exception as e:
        shots = []
        for name, page in (("first", first), ("second", second)):
            path = tmp_path / ("chat-%s-tab.png" % name)
            try:
                page.screenshot(path=str(path), full_page=True)
                shots.append(str(path))
            except Exception as shot_error:
                shots.append("(no screenshot of the %s tab: %s)" % (name, shot_error))
        raise AssertionError(
            "%s\nscreenshots: %s\nbrowser errors: %s\nserver log:\n%s"
            % (e, ", ".join(shots), errors, server.output())
        ) from e
    finally:
        context.close()
