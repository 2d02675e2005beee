"""
Packaging: what the sdist and the wheel ship, and what their metadata claims.

Builds the sdist of the working tree, then the wheel from that sdist (as
``python -m build`` does, so a file the sdist misses is missing from the wheel
too), and checks that both ship the ``LICENSE`` and ``chanserv/py.typed``;
that the wheel, installed the way the README does (a regular, non-editable
install), gives ``twistd`` the ``chanserv`` plugin without shipping Twisted's
own ``twisted/plugins/__init__.py``; and that the classifiers name the Python
and Django versions the nox matrix (``noxfile.py``) tests, no more, no fewer.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tarfile
import venv
import zipfile
from email.message import Message
from email.parser import Parser
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parents[1]
_TWISTD_HELP = (
    "import sys; sys.argv = ['twistd', '--help']\nfrom twisted.scripts.twistd import run\nrun()"
)
_PURELIB = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
#: Django's feature releases around the supported ones: the Django
#: requirement must admit exactly the tested series among them.
_DJANGO_FEATURE_RELEASES = ("3.2", "4.0", "4.1", "4.2", "5.0", "5.1", "5.2", "6.0", "6.1")


def _run(python: Path, code: str) -> str:
    return subprocess.run(
        [str(python), "-c", code], check=True, capture_output=True, text=True, cwd="/"
    ).stdout.strip()


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The sdist of the working tree and the wheel built from it."""
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(REPO)],
        capture_output=True,
        text=True,
        cwd=out,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    [sdist] = out.glob("chanserv-*.tar.gz")
    [wheel] = out.glob("chanserv-*.whl")
    return sdist, wheel


@pytest.fixture(scope="module")
def wheel(dists: tuple[Path, Path]) -> Path:
    """The wheel, built from the sdist."""
    return dists[1]


def _wheel_metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return Parser().parsestr(archive.read(name).decode("utf-8"))


def _nox_constants() -> dict[str, Any]:
    """``noxfile.py``'s matrix constants, read without importing nox."""
    wanted = {"PYTHONS", "DJANGO_SERIES", "LATEST"}
    found: dict[str, Any] = {}
    for node in ast.parse((REPO / "noxfile.py").read_text(encoding="utf-8")).body:
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        if isinstance(target, ast.Name) and target.id in wanted and node.value is not None:
            found[target.id] = ast.literal_eval(node.value)
    assert set(found) == wanted, "noxfile.py lacks %s" % sorted(wanted - set(found))
    return found


def _requirements(metadata: Message, name: str) -> list[Requirement]:
    """The ``Requires-Dist`` entries of the distribution ``name``."""
    requirements = [Requirement(r) for r in metadata.get_all("Requires-Dist") or []]
    return [r for r in requirements if r.name.lower() == name]


def _classified(metadata: Message, prefix: str) -> set[str]:
    """The versions of the classifiers ``prefix`` + a dotted version."""
    return {
        c[len(prefix) :]
        for c in metadata.get_all("Classifier") or []
        if c.startswith(prefix) and "." in c[len(prefix) :]
    }


def test_wheel_ships_py_typed_and_the_license(wheel: Path) -> None:
    """The wheel ships chanserv/py.typed and LICENSE in its .dist-info, named by the metadata."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert "chanserv/py.typed" in names
        licenses = [n for n in names if ".dist-info/" in n and n.endswith("/LICENSE")]
        assert len(licenses) == 1, names
        assert archive.read(licenses[0]) == (REPO / "LICENSE").read_bytes()
    metadata = _wheel_metadata(wheel)
    assert metadata["License-Expression"] == "BSD-3-Clause"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert "Typing :: Typed" in (metadata.get_all("Classifier") or [])


def test_sdist_ships_py_typed_and_the_license(dists: tuple[Path, Path]) -> None:
    """The sdist ships LICENSE at its top and chanserv/py.typed."""
    sdist = dists[0]
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
    top = sdist.name.removesuffix(".tar.gz")
    assert "%s/LICENSE" % top in names
    assert "%s/chanserv/py.typed" % top in names


def test_classifiers_name_the_pythons_and_djangos_the_nox_matrix_tests(wheel: Path) -> None:
    """The Python and Django classifiers and python_requires are the nox matrix's versions."""
    nox = _nox_constants()
    metadata = _wheel_metadata(wheel)
    assert _classified(metadata, "Programming Language :: Python :: ") == set(nox["PYTHONS"])
    assert _classified(metadata, "Framework :: Django :: ") == set(nox["DJANGO_SERIES"])
    assert metadata["Requires-Python"] == ">=%s" % nox["PYTHONS"][0]
    # Every claimed version runs in a session: "lowest" on the oldest Python
    # and the Django floor's series, "latest" on LATEST's pairs (noxfile.py).
    [django] = _requirements(metadata, "django")
    [floor] = [spec.version for spec in django.specifier if spec.operator == ">="]
    lowest_series = ".".join(floor.split(".")[:2])
    assert {python for python, _ in nox["LATEST"]} | {nox["PYTHONS"][0]} == set(nox["PYTHONS"])
    assert {django for _, django in nox["LATEST"]} | {lowest_series} == set(nox["DJANGO_SERIES"])


def test_django_requirement_admits_exactly_the_tested_series(wheel: Path) -> None:
    """Requires-Dist admits Django's tested LTS series and none of the releases around them."""
    series = _nox_constants()["DJANGO_SERIES"]
    [django] = _requirements(_wheel_metadata(wheel), "django")
    specifier: SpecifierSet = django.specifier
    admitted = {v for v in _DJANGO_FEATURE_RELEASES if specifier.contains("%s.99" % v)}
    assert admitted == set(series)


def test_wheel_installs_the_plugin(tmp_path: Path, wheel: Path) -> None:
    """The wheel installs the twistd plugin, without Twisted's own __init__ files or tests."""
    names = zipfile.ZipFile(wheel).namelist()
    assert "twisted/plugins/chanserv_plugin.py" in names
    assert "twisted/plugins/__init__.py" not in names
    assert "twisted/__init__.py" not in names
    assert "chanserv/tap.py" in names
    assert not [n for n in names if n.startswith("tests/")]

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    purelib = Path(_run(py, "import sysconfig; print(sysconfig.get_paths()['purelib'])"))
    # The new environment sees this one's dependencies (Twisted, Django...)
    # through a .pth file, but chanserv itself only from the wheel.
    (purelib / "deps.pth").write_text(_run(Path(sys.executable), _PURELIB) + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(py),
            "install",
            "-q",
            "--no-deps",
            # chanserv may already be installed where deps.pth points (the
            # README's `make test` installs it there): install into the new
            # environment regardless.
            "--ignore-installed",
            str(wheel),
        ],
        check=True,
        cwd=tmp_path,
    )
    assert (purelib / "twisted" / "plugins" / "chanserv_plugin.py").exists()
    assert not (purelib / "twisted" / "plugins" / "__init__.py").exists()
    help_text = subprocess.run(
        [str(py), "-c", _TWISTD_HELP],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    out = help_text.stdout + help_text.stderr
    assert "chanserv" in out, out
    # The chanserv module Twisted loads is the installed one, not the tree.
    where = _run(py, "import importlib.util as u; print(u.find_spec('chanserv.tap').origin)")
    assert where.startswith(str(env_dir)), where
