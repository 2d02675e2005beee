"""
Packaging: the wheel installs the twistd plugin where Twisted finds it.

Builds the wheel from the working tree, installs it into a fresh virtualenv
the way the README does (a regular, non-editable install), and checks that
``twistd --help`` lists ``chanserv`` and that Twisted's own
``twisted/plugins/__init__.py`` was not shipped over.
"""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_TWISTD_HELP = (
    "import sys; sys.argv = ['twistd', '--help']\nfrom twisted.scripts.twistd import run\nrun()"
)
_PURELIB = "import sysconfig; print(sysconfig.get_paths()['purelib'])"


def _run(python: Path, code: str) -> str:
    return subprocess.run(
        [str(python), "-c", code], check=True, capture_output=True, text=True, cwd="/"
    ).stdout.strip()


def test_wheel_installs_the_plugin(tmp_path: Path) -> None:
    """The wheel installs the twistd plugin, without Twisted's own __init__ files or tests."""
    wheel_dir = tmp_path / "wheel"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(wheel_dir),
            str(REPO),
        ],
        check=True,
        cwd=tmp_path,
    )
    [wheel] = wheel_dir.glob("chanserv-*.whl")
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
