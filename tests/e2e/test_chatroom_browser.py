"""
A real browser on the complete chat application (examples/chatroom):
Debian's Chromium, driven by Playwright, against a real ``twistd -n
chanserv`` process with its own SQLite database.

Two people, each in their own browser context (their own cookies), log in
through the login form, meet in one room and talk; a reload shows the
conversation again, rendered from the database.  A second test stops the
server under an open page and starts it again: the page reconnects by
itself and shows what was said meanwhile.

Chromium is the system's (``/usr/bin/chromium``); Playwright never
downloads a browser.  Without it the tests fail -- they are not skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.e2e.harness import TwistdProcess
from tests.e2e.test_browser import TIMEOUT_MS, chromium_browser
from tests.e2e.test_chatroom import (
    USERS,
    Site,
    add_messages,
    saved_messages,
    site,  # noqa: F401 -- fixture: a copy of the database, a server on it
    start_site,
    template_db,  # noqa: F401 -- fixture: the migrated database, once per module
)
from tests.e2e.test_examples import stop_cleanly

#: Milliseconds a page may take to reconnect after the server came back:
#: the client's back-off waits up to 8 s by then, plus the start-up.
RECONNECT_TIMEOUT_MS = 45_000


@pytest.fixture
def browser() -> Iterator[Browser]:
    with chromium_browser() as chromium:
        yield chromium


class Person:
    """One user in their own browser context, with the page they are on."""

    def __init__(self, browser: Browser, base: str, name: str, errors: list[str]) -> None:
        self.name = name
        self.base = base
        self.context: BrowserContext = browser.new_context()
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page: Page = self.context.new_page()
        self.page.on("pageerror", lambda error: errors.append("%s: %s" % (name, error)))
        self.page.on(
            "console",
            lambda msg: errors.append("%s: %s" % (name, msg.text)) if msg.type == "error" else None,
        )

    def log_in(self) -> None:
        """Through the login form, as a person does: the room list follows."""
        self.page.goto(self.base + "/")
        expect(self.page).to_have_url(self.base + "/accounts/login/?next=/")
        self.page.fill("#id_username", self.name)
        self.page.fill("#id_password", USERS[self.name])
        self.page.click("#login")
        expect(self.page).to_have_url(self.base + "/")
        expect(self.page.locator("#username")).to_have_text(self.name)

    def create_room(self, name: str) -> None:
        self.page.fill("#id_name", name)
        self.page.click("#create-room")
        self.wait_connected()

    def join_room(self, name: str) -> None:
        self.page.goto(self.base + "/")
        self.page.get_by_role("link", name=name, exact=True).click()
        self.wait_connected()

    def wait_connected(self, timeout: int = TIMEOUT_MS) -> None:
        expect(self.page.locator("#status")).to_have_text("connected", timeout=timeout)

    def say(self, text: str) -> None:
        self.page.fill("#message-input", text)
        self.page.click("#send")
        expect(self.page.locator("#message-input")).to_have_value("")

    def expect_messages(self, expected: list[tuple[str, str]]) -> None:
        """The room's messages, (user, text) in order, are exactly ``expected``."""
        messages = self.page.locator("#messages li.message")
        expect(messages).to_have_count(len(expected))
        expect(messages.locator(".user")).to_have_text([user for user, _ in expected])
        expect(messages.locator(".text")).to_have_text([text for _, text in expected])

    def screenshot(self, tmp_path: Path) -> str:
        path = tmp_path / ("chatroom-%s.png" % self.name)
        try:
            self.page.screenshot(path=str(path), full_page=True)
            return str(path)
        except Exception as e:
            return "(no screenshot of %s's page: %s)" % (self.name, e)


def explain(
    e: Exception, people: list[Person], errors: list[str], server: TwistdProcess, tmp_path: Path
) -> AssertionError:
    """The failure, with screenshots, the browsers' errors and the server log."""
    shots = [person.screenshot(tmp_path) for person in people]
    return AssertionError(
        "%s\nscreenshots: %s\nbrowser errors: %s\nserver log:\n%s"
        % (e, ", ".join(shots), errors, server.output())
    )


def test_two_users_chat_in_a_room_and_the_history_survives_a_reload(
    site: Site,  # noqa: F811
    browser: Browser,
    tmp_path: Path,
) -> None:
    """In Chromium, two users chat in a new room; markup they type shows as text.

    A reload renders the conversation from the database, and the chat goes on.
    """
    expect.set_options(timeout=TIMEOUT_MS)
    base = "http://127.0.0.1:%d" % site.port
    errors: list[str] = []
    alice = Person(browser, base, "alice", errors)
    bob = Person(browser, base, "bob", errors)
    try:
        alice.log_in()
        bob.log_in()
        alice.create_room("Tea Room")
        expect(alice.page).to_have_url(base + "/rooms/tea-room/")
        alice.expect_messages([])
        expect(alice.page.locator("#no-messages")).to_be_visible()
        bob.join_room("Tea Room")
        expect(bob.page).to_have_url(base + "/rooms/tea-room/")

        alice.say("hello bob")
        conversation = [("alice", "hello bob")]
        bob.expect_messages(conversation)
        alice.expect_messages(conversation)

        # Markup typed by a user is shown as text, never run or rendered.
        bob.say("hi <b>alice</b> <img src=x onerror=alert(1)>")
        conversation.append(("bob", "hi <b>alice</b> <img src=x onerror=alert(1)>"))
        alice.expect_messages(conversation)
        bob.expect_messages(conversation)
        for person in (alice, bob):
            expect(person.page.locator("#messages b, #messages img")).to_have_count(0)
            expect(person.page.locator("#no-messages")).to_be_hidden()
        expect(alice.page.locator("#messages li.own .text")).to_have_text(["hello bob"])

        # Reload: the page comes back with the conversation, rendered by the
        # server from the database (it is in the HTML itself, not sent by the
        # socket afterwards).
        response = alice.page.reload()
        assert response is not None and response.status == 200
        html = response.text()
        assert "hello bob" in html
        assert "hi &lt;b&gt;alice&lt;/b&gt; &lt;img src=x onerror=alert(1)&gt;" in html
        alice.expect_messages(conversation)
        alice.wait_connected()

        # And the conversation goes on after the reload.
        bob.say("still here?")
        conversation.append(("bob", "still here?"))
        alice.expect_messages(conversation)
        bob.expect_messages(conversation)

        assert saved_messages(site.db) == [("tea-room", user, text) for user, text in conversation]
        assert errors == []
    except Exception as e:
        raise explain(e, [alice, bob], errors, site.server, tmp_path) from e
    finally:
        alice.context.close()
        bob.context.close()


def test_the_page_reconnects_after_the_server_restarts(
    template_db: Path,  # noqa: F811
    browser: Browser,
    tmp_path: Path,
) -> None:
    """After a server restart the room page reconnects, shows what it missed, chats on."""
    expect.set_options(timeout=TIMEOUT_MS)
    first = start_site(template_db, tmp_path)
    servers = [first.server]
    errors: list[str] = []
    base = "http://127.0.0.1:%d" % first.port
    alice = Person(browser, base, "alice", errors)
    try:
        alice.log_in()
        alice.join_room("Lobby")
        alice.say("before the restart")
        alice.expect_messages([("alice", "before the restart")])

        stop_cleanly(first.server)
        expect(alice.page.locator("#status")).to_have_attribute("data-state", "reconnecting")
        expect(alice.page.locator("#send")).to_be_disabled()
        # Said while alice's page was cut off (from another process).
        add_messages(first.db, "lobby", "bob", ["while you were away"])

        # The same database and port: sessions are in the database, so the
        # page's cookie still logs it in.
        second = start_site(template_db, tmp_path, port=first.port)
        servers.append(second.server)
        alice.wait_connected(timeout=RECONNECT_TIMEOUT_MS)
        alice.expect_messages([("alice", "before the restart"), ("bob", "while you were away")])
        alice.say("after the restart")
        alice.expect_messages(
            [
                ("alice", "before the restart"),
                ("bob", "while you were away"),
                ("alice", "after the restart"),
            ]
        )
        stop_cleanly(second.server)
        # The page's reconnection attempts while the server was down fail:
        # the browser reports them as console errors.
        assert all("WebSocket connection to" in error for error in errors), errors
    except Exception as e:
        raise explain(e, [alice], errors, servers[-1], tmp_path) from e
    finally:
        alice.context.close()
        for server in servers:
            server.__exit__()
