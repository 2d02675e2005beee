"""
Helpers of the end-to-end tests of examples/multichat: the project -- as it
is (``chanserv`` imports) or as a Channels 1.x project would have it
(``channels`` imports, run through the alias) --, its SQLite database made
by its own ``manage.py``, a real ``redis-server`` for the channel layer
(``manage.py post_message`` reaches the server only through it) and a real
``twistd -n chanserv`` serving it.  Test-process main thread only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.harness import REPO, TWISTD, TwistdProcess, free_port
from tests.e2e.test_chatroom import copy_database, query
from tests.e2e.test_examples import stop_cleanly
from tests.redisserver import RedisServer

EXAMPLE = REPO / "examples" / "multichat"
SETTINGS = "multichat.settings"
#: The accounts every database has: two users and a superuser.
USERS = {
    "alice": "alice-secret-passphrase",
    "bob": "bob-secret-passphrase",
    "root": "root-secret-passphrase",
}
#: The rooms every database has, by title: whether staff only.
ROOMS = {"Lobby": False, "Attic": False, "Staff room": True}


@dataclass(frozen=True)
class Project:
    """The multichat project on disk and the interpreter that runs it."""

    path: Path
    python: Path

    @property
    def imports(self) -> str:
        """``"chanserv"`` or ``"channels"``: what its code imports."""
        settings = (self.path / "multichat" / "settings.py").read_text()
        return "channels" if '"channels.delay"' in settings else "chanserv"


def chanserv_project() -> Project:
    """The example as it is in the repository, run by this interpreter."""
    return Project(EXAMPLE, Path(sys.executable))


def channels_project(dest: Path, python: Path) -> Project:
    """
    A copy of the example in ``dest`` written for Channels 1.x -- every
    ``chanserv`` import and app name turned into ``channels`` -- run by
    ``python``, an interpreter on which ``python -m chanserv.alias enable``
    was run.
    """
    from tests.e2e.test_alias import as_channels_project

    path = as_channels_project("multichat", dest)
    settings = path / "multichat" / "settings.py"
    text = settings.read_text().replace('"chanserv.delay"', '"channels.delay"')
    settings.write_text(text)
    # Prose (docstrings, comments) may still say chanserv -- the twistd
    # plugin keeps its name --, the app names may not.
    assert '"channels.delay",' in text
    assert '"chanserv"' not in text and '"chanserv.' not in text
    return Project(path, python)


def environ(db: Path, redis_url: str | None, **extra: str) -> dict[str, str]:
    """The environment of the project's processes: its database and layer."""
    env = dict(os.environ, PYTHONPATH=str(REPO), CHANSERV_EXAMPLE_DB=str(db), **extra)
    env.pop("DJANGO_SETTINGS_MODULE", None)  # manage.py picks its own
    env.pop("CHANSERV_EXAMPLE_REDIS", None)
    if redis_url:
        env["CHANSERV_EXAMPLE_REDIS"] = redis_url
    return env


def manage(
    project: Project, db: Path, *args: str, redis_url: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the project's ``manage.py`` on database ``db``; returncode 0 unless not ``check``."""
    result = subprocess.run(
        [str(project.python), "manage.py", *args],
        cwd=project.path,
        env=environ(db, redis_url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def make_database(project: Project, db: Path) -> None:
    """Migrate ``db`` and add :data:`USERS` and :data:`ROOMS`."""
    manage(project, db, "migrate", "-v", "0", "--no-input")
    code = (
        "from django.contrib.auth.models import User\n"
        "from chat.models import Room\n"
        "for name, password in %r.items():\n"
        "    if name == 'root':\n"
        "        User.objects.create_superuser(name, password=password)\n"
        "    else:\n"
        "        User.objects.create_user(name, password=password)\n"
        "for title, staff_only in %r.items():\n"
        "    Room.objects.create(title=title, staff_only=staff_only)\n" % (USERS, ROOMS)
    )
    manage(project, db, "shell", "-v", "0", "-c", code)


def room_ids(db: Path) -> dict[str, int]:
    """``{title: id}`` of every room."""
    return {title: pk for pk, title in query(db, "SELECT id, title FROM chat_room")}


def saved_messages(db: Path) -> list[tuple[str, str | None, str]]:
    """Every message: (room title, username or None, text), by id."""
    return [
        (title, user, text)
        for title, user, text in query(
            db,
            "SELECT r.title, u.username, m.text FROM chat_message m "
            "JOIN chat_room r ON m.room_id = r.id LEFT JOIN auth_user u ON m.user_id = u.id "
            "ORDER BY m.id",
        )
    ]


@dataclass
class Site:
    """A running multichat: its project, database, Redis and server."""

    project: Project
    db: Path
    redis: RedisServer | None
    server: TwistdProcess

    @property
    def port(self) -> int:
        assert self.server.port is not None
        return self.server.port

    @property
    def base(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    @property
    def redis_url(self) -> str | None:
        return self.redis.url if self.redis is not None else None

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The project's ``manage.py`` with the server's database and layer."""
        return manage(self.project, self.db, *args, redis_url=self.redis_url, check=check)


@contextmanager
def running_site(
    project: Project, template: Path, workdir: Path, redis: bool = True
) -> Iterator[Site]:
    """
    A copy of ``template`` in ``workdir``, a ``redis-server`` (unless not
    ``redis``: the in-memory layer) and ``twistd -n chanserv`` serving the
    project on them, run by the project's interpreter.  The server must
    stop cleanly at the end of a block that raised nothing.
    """
    db = workdir / "multichat.sqlite3"
    copy_database(template, db)
    server_redis = RedisServer() if redis else None
    if server_redis is not None:
        server_redis.start()
    server = TwistdProcess(
        project.path,
        SETTINGS,
        port=free_port(),
        env=environ(db, server_redis.url if server_redis else None),
    )
    server.cmd = [str(project.python), TWISTD, *server.cmd[1:]]
    try:
        server.start()
        yield Site(project, db, server_redis, server)
        stop_cleanly(server)
    finally:
        server.__exit__()
        if server_redis is not None:
            server_redis.stop()


def frame(stream: str, payload: dict[str, Any]) -> str:
    """A multiplexed frame, as the page sends it."""
    return json.dumps({"stream": stream, "payload": payload})
