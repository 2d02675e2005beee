"""
The dependency matrix.  ``make test`` runs ``lowest`` after the main suite
(which runs on the newest releases, with Django 5.2); ``nox`` runs it all.

- ``lowest``: every floor of ``install_requires`` in ``setup.cfg``, pinned
  exactly (Twisted, autobahn, Django, txredisapi, ...), so a floor that no
  longer works fails here rather than at a user's;
- ``latest``: the newest releases ``setup.cfg`` allows, once per Django LTS
  series (4.2 and 5.2, each at its latest patch).

Each session installs chanserv (``pip install .``, as the README does) into
its own virtualenv under ``.nox/``, made with the interpreter running nox,
and runs the suite but for the end-to-end tests, plus one end-to-end smoke
test (a real ``twistd chanserv`` process that starts, serves and stops).

    nox                          # every session
    nox -s lowest
    nox -s "latest(django='4.2')"
"""

from __future__ import annotations

import configparser
from pathlib import Path

import nox
from packaging.requirements import Requirement

nox.options.sessions = ["lowest", "latest"]
nox.options.default_venv_backend = "venv"

ROOT = Path(__file__).parent

#: What the fast suite needs besides chanserv (the ``test`` extra without
#: the browser, the linters and nox itself).
TEST_REQUIREMENTS = ("pytest>=8", "hypothesis>=6", "websockets>=13", "cryptography")

#: The end-to-end smoke test: start, serve the default routes, stop on SIGTERM.
SMOKE_TESTS = (
    "tests/e2e/test_core.py::test_starts_logs_ready_and_exits_zero_on_sigterm",
    "tests/e2e/test_core.py::test_default_routes_without_channel_layers",
)


def install_requires() -> list[Requirement]:
    """The requirements of ``setup.cfg``'s ``install_requires``."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config["options"]["install_requires"].strip().splitlines()
    return [Requirement(line) for line in lines if line.strip()]


def floor(requirement: Requirement) -> str:
    """``requirement`` pinned to its ``>=`` floor: ``name[extras]==floor``."""
    floors = [spec.version for spec in requirement.specifier if spec.operator == ">="]
    if len(floors) != 1:
        raise ValueError("%s: exactly one >= floor is needed to test it" % (requirement,))
    extras = "[%s]" % ",".join(sorted(requirement.extras)) if requirement.extras else ""
    return "%s%s==%s" % (requirement.name, extras, floors[0])


def run_tests(session: nox.Session) -> None:
    session.run("python", "-m", "pip", "list", "--format=freeze", silent=False)
    session.run(
        "python",
        "-m",
        "pytest",
        "-q",
        "tests",
        "--ignore=tests/e2e",
        # The import contracts do not depend on the dependencies' versions;
        # the main suite checks them, with the linters installed.
        "--deselect=tests/test_import_layers.py::test_import_contracts_are_kept",
    )
    session.run("python", "-m", "pytest", "-q", *SMOKE_TESTS)


@nox.session
def lowest(session: nox.Session) -> None:
    """The suite on the lowest supported version of every dependency."""
    pins = [floor(requirement) for requirement in install_requires()]
    session.install(".", *pins, *TEST_REQUIREMENTS)
    run_tests(session)


@nox.session
@nox.parametrize("django", ["4.2", "5.2"])
def latest(session: nox.Session, django: str) -> None:
    """The suite on the newest releases, with the latest patch of a Django LTS."""
    session.install("--upgrade", ".", "django~=%s.0" % (django,), *TEST_REQUIREMENTS)
    run_tests(session)
