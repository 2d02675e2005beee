"""
A real browser on examples/multichat: Debian's Chromium, driven by
Playwright, against a real ``twistd -n chanserv`` with its own SQLite
database and a real ``redis-server`` for the channel layer.

Two people, each in their own browser context, log in and join one room;
a message typed by one, one made by ``manage.py post_message`` and one
added in the admin (by a superuser in a third context) appear on both
pages through the data binding; a write refused by ``has_permission``
reaches nobody and its sender is told; a "/remind in 2 seconds" arrives
after its delay; the author's delete removes the message from both pages.

The same flow runs twice: on the example as it is (``chanserv`` imports)
and on a copy written for Channels 1.x (``channels`` imports, ``"channels"``
and ``"channels.delay"`` apps) run through ``python -m chanserv.alias
enable``.  Without Chromium the test fails -- it is not skipped.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect

from tests.e2e.multichat_support import (
    USERS,
    Project,
    Site,
    channels_project,
    chanserv_project,
    make_database,
    room_ids,
    running_site,
    saved_messages,
)
from tests.e2e.test_alias import channels_env  # noqa: F401 -- fixture: python with the alias
from tests.e2e.test_browser import TIMEOUT_MS, chromium_browser

#: Seconds the reminder waits.
DELAY = 2


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The migrated database with the users and rooms, once for both projects.

    The copy for Channels 1.x has the same models, migrations and app labels.
    """
    db = tmp_path_factory.mktemp("multichat") / "template.sqlite3"
    make_database(chanserv_project(), db)
    return db


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium_browser() as chromium:
        yield chromium


class Person:
    """One user in their own browser context, with their page."""

    def __init__(self, browser: Browser, site: Site, name: str, errors: list[str]) -> None:
        self.name = name
        self.base = site.base
        self.context: BrowserContext = browser.new_context()
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page: Page = self.context.new_page()
        self.page.on("pageerror", lambda error: errors.append("%s: %s" % (name, error)))
        self.page.on(
            "console",
            lambda msg: errors.append("%s: %s" % (name, msg.text)) if msg.type == "error" else None,
        )

    def log_in(self, path: str = "/") -> None:
        """Open ``path``, which asks for a login: log in there, and be back on ``path``."""
        self.submit_login(path)
        expect(self.page).to_have_url(self.base + path)

    def submit_login(self, path: str) -> None:
        """Open ``path``, which asks for a login, and submit the login form."""
        self.page.goto(self.base + path)
        expect(self.page.locator("#id_username")).to_be_visible()
        self.page.fill("#id_username", self.name)
        self.page.fill("#id_password", USERS[self.name])
        self.page.locator("#login-form [type=submit]").click()

    def join(self, title: str) -> None:
        expect(self.page.locator("#status")).to_have_text("connected")
        self.page.get_by_role("button", name=title, exact=True).click()
        expect(self.page.locator("section.room h2", has_text=title)).to_be_visible()

    def room(self, room_id: int) -> Locator:
        return self.page.locator('section.room[data-room-id="%d"]' % room_id)

    def say(self, room_id: int, text: str) -> None:
        room = self.room(room_id)
        room.locator("input[name=text]").fill(text)
        room.locator("button.send").click()
        expect(room.locator("input[name=text]")).to_have_value("")

    def expect_messages(self, room_id: int, expected: list[tuple[str, str]]) -> None:
        """The room's panel shows exactly ``expected``: (user, text), in order."""
        messages = self.room(room_id).locator("li.message")
        expect(messages).to_have_count(len(expected))
        expect(messages.locator(".user")).to_have_text([user for user, _ in expected])
        expect(messages.locator(".text")).to_have_text([text for _, text in expected])

    def screenshot(self, tmp_path: Path) -> str:
        path = tmp_path / ("multichat-%s.png" % self.name)
        try:
            self.page.screenshot(path=str(path), full_page=True)
            return str(path)
        except Exception as e:
            return "(no screenshot of %s's page: %s)" % (self.name, e)


def add_in_the_admin(root: Person, room: str, text: str) -> None:
    """A superuser adds a message in the admin (logging in there first)."""
    root.log_in("/admin/chat/message/add/")
    root.page.select_option("#id_room", label=room)
    root.page.fill("#id_text", text)
    root.page.click("input[name=_save]")
    expect(root.page).to_have_url(root.base + "/admin/chat/message/")
    expect(root.page.locator(".messagelist")).to_contain_text("was added successfully")


@pytest.fixture(params=["chanserv", "channels"])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Project:
    """The example as it is, or written for Channels 1.x and run through the alias."""
    if request.param == "chanserv":
        chosen = chanserv_project()
    else:
        chosen = channels_project(tmp_path / "multichat", request.getfixturevalue("channels_env"))
    assert chosen.imports == request.param
    return chosen


def test_rooms_binding_admin_command_permission_and_delay_in_two_browsers(
    project: Project, template_db: Path, browser: Browser, tmp_path: Path
) -> None:
    """In Chromium, changes from a page, post_message and the admin reach both pages.

    A refused write reaches nobody and its sender sees why; a reminder
    arrives after its delay; the author's delete removes it from both.
    """
    expect.set_options(timeout=TIMEOUT_MS)
    errors: list[str] = []
    with running_site(project, template_db, tmp_path) as site:
        ids = room_ids(site.db)
        lobby = ids["Lobby"]
        people = [Person(browser, site, name, errors) for name in ("alice", "bob", "root")]
        alice, bob, root = people
        try:
            # Both at once: the server checks the two passwords side by side.
            for person in (alice, bob):
                person.submit_login("/")
            for person in (alice, bob):
                expect(person.page).to_have_url(site.base + "/")
            alice.join("Lobby")
            bob.join("Lobby")

            # From a page, through the binding's inbound create.
            alice.say(lobby, "hello <b>bob</b>")
            conversation = [("alice", "hello <b>bob</b>")]
            bob.expect_messages(lobby, conversation)
            alice.expect_messages(lobby, conversation)
            expect(bob.page.locator("section.room b")).to_have_count(0)

            # From another process, and from the admin.
            site.manage("post_message", "Lobby", "from the command")
            conversation.append(("announcement", "from the command"))
            bob.expect_messages(lobby, conversation)
            alice.expect_messages(lobby, conversation)
            add_in_the_admin(root, "Lobby", "from the admin")
            conversation.append(("announcement", "from the admin"))
            bob.expect_messages(lobby, conversation)
            alice.expect_messages(lobby, conversation)

            # has_permission: bob has not joined the Attic, so he may not
            # write there; he is told, nobody else hears of it.
            bob.page.evaluate(
                "room => window.multichat.send('messages',"
                " {action: 'create', data: {room: room, text: 'sneaky'}})",
                ids["Attic"],
            )
            expect(bob.page.locator("#error")).to_have_text("Join the room before you write in it.")
            expect(alice.page.locator("#error")).to_be_hidden()

            # A reminder, through the delay server.
            start = time.monotonic()
            alice.say(lobby, "/remind in %d seconds tea time" % DELAY)
            notice = alice.room(lobby).locator(".notice")
            expect(notice).to_have_text("Your message will be sent in %d s." % DELAY)
            expect(bob.room(lobby).get_by_text("tea time")).to_have_count(0)
            conversation.append(("alice", "tea time"))
            bob.expect_messages(lobby, conversation)
            assert time.monotonic() - start >= DELAY - 0.1
            alice.expect_messages(lobby, conversation)

            # The author deletes her first message: gone from both pages.
            alice.room(lobby).locator("li.message", has_text="hello").locator(".delete").click()
            del conversation[0]
            bob.expect_messages(lobby, conversation)
            alice.expect_messages(lobby, conversation)
            expect(bob.room(lobby).locator(".delete")).to_have_count(0)  # none is his

            assert saved_messages(site.db) == [
                ("Lobby", None, "from the command"),
                ("Lobby", None, "from the admin"),
                ("Lobby", "alice", "tea time"),
            ]
            assert errors == []
        except Exception as e:
            shots = [person.screenshot(tmp_path) for person in people]
            raise AssertionError(
                "%s\nscreenshots: %s\nbrowser errors: %s\nserver log:\n%s"
                % (e, ", ".join(shots), errors, site.server.output())
            ) from e
        finally:
            for person in people:
                person.context.close()
