"""
The dependency matrix.  ``make test`` runs ``lowest`` after the main suite
(which runs in ``.venv`` on the newest releases, with Django 5.2); ``nox``
runs every session.

- ``lowest``: every floor of ``install_requires`` in ``setup.cfg``, pinned
  exactly (Twisted, autobahn, Django 4.2, txredisapi, msgpack, ...), on the
  oldest supported Python, so a floor that no longer works fails here rather
  than at a user's;
- ``latest``: the newest releases ``setup.cfg`` allows, once per Django LTS
  series (each at its latest patch).

``lowest`` and the main suite run every Python of ``PYTHONS`` and every
Django series of ``DJANGO_SERIES``: the classifiers in ``setup.cfg`` name
exactly those (``tests/test_packaging.py`` checks).  Each session installs
chanserv (``pip install .``, as the README does) into its own virtualenv under
``.nox/`` and runs the suite but for the end-to-end tests, plus one
end-to-end smoke test (a real ``twistd chanserv`` that starts, serves, stops).

    nox                                          # every session
    nox -s lowest
    nox -s "latest(python='3.11', django='4.2')"
"""

from __future__ import annotations

import configparser
import os
from pathlib import Path

import nox
from packaging.requirements import Requirement

nox.options.sessions = ["lowest", "latest"]
nox.options.default_venv_backend = "venv"
# The classifiers claim every Python of the matrix: one that cannot be found
# fails the run instead of skipping its session.
nox.options.error_on_missing_interpreters = True

ROOT = Path(__file__).parent

#: The Pythons the matrix runs, oldest first: ``python_requires`` and the
#: classifiers in ``setup.cfg`` name the same.  3.11 is autobahn 25.9's floor.
#: 3.12 and 3.13 passed ``latest`` once, but each session adds ~3 minutes to
#: ``make test``: add them here, to LATEST, to the classifiers, and run
#: ``nox`` whole in the Makefile, when the main suite allows.
PYTHONS = ("3.11",)
#: The Django LTS series chanserv supports: the classifiers and the Django
#: requirement in ``setup.cfg`` say the same.  ``lowest`` runs Django 4.2
#: (4.2.30, also its last release), the main suite 5.2, ``latest`` both.
DJANGO_SERIES = ("4.2", "5.2")
#: ``latest``'s (Python, Django series) pairs.
LATEST = (("3.11", "4.2"), ("3.11", "5.2"))

#: What the fast suite needs besides chanserv (the ``test`` extra without
#: the browser, the linters and nox itself).
TEST_REQUIREMENTS = (
    "pytest>=8",
    "pytest-xdist>=3.5",
    "hypothesis>=6",
    "websockets>=13",
    "cryptography",
    "build>=1.2",
)

#: The end-to-end smoke test: start, serve the default routes, stop on SIGTERM.
SMOKE_TESTS = (
    "tests/e2e/test_core.py::test_starts_logs_ready_and_exits_zero_on_sigterm",
    "tests/e2e/test_core.py::test_default_routes_without_channel_layers",
)


def _append_pyenv_pythons_to_path() -> None:
    """Let nox find every Python pyenv installed, not only the active ones.

    nox follows a pyenv shim (``python3.12``) only to the versions pyenv has
    active; appended to ``PATH``, the other versions' ``bin`` folders shadow
    nothing.  Without pyenv, nox looks for ``python3.12`` and the like on ``PATH``.
    """
    versions = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found = sorted(str(path) for path in versions.glob("3.*/bin"))
    if found:
        os.environ["PATH"] = os.pathsep.join([os.environ.get("PATH", os.defpath), *found])


_append_pyenv_pythons_to_path()


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
        # In two processes, as the main suite (the Makefile says why).
        "-n",
        "2",
        "tests",
        "--ignore=tests/e2e",
        # The documentation site: the main suite builds it (no Sphinx here).
        "--ignore=tests/test_docs.py",
        # The import contracts do not depend on the dependencies' versions;
        # the main suite checks them, with the linters installed.
        "--deselect=tests/test_import_layers.py::test_import_contracts_are_kept",
    )
    session.run("python", "-m", "pytest", "-q", *SMOKE_TESTS)


@nox.session(python=PYTHONS[0])
def lowest(session: nox.Session) -> None:
    """The suite on the lowest supported version of every dependency and of Python."""
    pins = [floor(requirement) for requirement in install_requires()]
    session.install(".", *pins, *TEST_REQUIREMENTS)
    run_tests(session)


@nox.session
@nox.parametrize("python,django", LATEST)
def latest(session: nox.Session, django: str) -> None:
    """The suite on the newest releases, with the latest patch of a Django LTS."""
    session.install("--upgrade", ".", "django~=%s.0" % (django,), *TEST_REQUIREMENTS)
    run_tests(session)
