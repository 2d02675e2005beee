"""
The opt-in ``channels`` name: once per environment, run
``python -m chanserv.alias enable`` and a Channels 1.x project runs with no
source change (``import channels``, ``INSTALLED_APPS = ["channels"]``,
``mock.patch("channels.x.y")`` all reach chanserv's own modules).  It writes
a one-line ``.pth`` file into the environment's site-packages (``--target``
elsewhere) that installs :mod:`chanserv._alias_hook` at interpreter start.
``disable`` removes it, ``status`` reports it.  Without it nothing is
aliased; with a real ``channels`` installed, ``enable`` refuses.  Command
line, main thread.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from pathlib import Path

from chanserv._alias_hook import ALIAS, installed, real_channels_origin

__all__ = ["PTH_LINE", "PTH_NAME", "AliasRefused", "disable", "enable", "main", "pth_path"]

#: The file written into site-packages, and its one line.  The line is
#: cheap: it runs chanserv/_alias_hook.py from its file, importing neither
#: the chanserv package (typing, re...) nor Django, scanning no metadata;
#: and it does nothing once chanserv is uninstalled, so a forgotten file
#: breaks no interpreter.
PTH_NAME = "chanserv-channels-alias.pth"
PTH_LINE = (
    "import importlib.machinery as im, os; s = im.PathFinder.find_spec('chanserv'); "
    "p = s and s.submodule_search_locations and "
    "os.path.join(s.submodule_search_locations[0], '_alias_hook.py'); "
    "h = p and type(os)('_chanserv_alias_hook'); "
    "h and (im.SourceFileLoader(h.__name__, p).exec_module(h), h.install())\n"
)


class AliasRefused(Exception):
    """``enable`` found a real ``channels`` distribution or package."""


def site_packages() -> Path:
    """This environment's site-packages (``sysconfig``'s ``purelib``)."""
    return Path(sysconfig.get_paths()["purelib"])


def pth_path(target: str | os.PathLike[str] | None = None) -> Path:
    """The alias's ``.pth`` file in ``target`` (default: :func:`site_packages`)."""
    return Path(target if target is not None else site_packages()) / PTH_NAME


def real_channels(search_path: Sequence[str] | None = None) -> str | None:
    """
    A description of the real ``channels`` found -- an installed
    distribution or an importable module on ``search_path`` (default
    ``sys.path``), past any import hook -- or None.
    """
    try:
        dist = importlib.metadata.distribution(ALIAS)
    except importlib.metadata.PackageNotFoundError:
        pass
    else:
        return "distribution %s %s" % (dist.metadata["Name"], dist.version)
    origin = real_channels_origin(search_path)
    return None if origin is None else "package at %s" % (origin,)


def enable(target: str | os.PathLike[str] | None = None) -> Path:
    """
    Write the ``.pth`` file into ``target`` (default: site-packages) and
    return its path.  Idempotent.

    :raises AliasRefused: a real ``channels`` is installed or importable.
    """
    path = pth_path(target)
    found = real_channels([str(path.parent), *sys.path])
    if found is not None:
        raise AliasRefused(
            "refused: a real 'channels' is installed (%s); uninstall it before "
            "enabling chanserv's 'channels' alias" % (found,)
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written whole or not at all: a half-written .pth line would be run.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".chanserv-alias-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(PTH_LINE)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def disable(target: str | os.PathLike[str] | None = None) -> bool:
    """Remove the ``.pth`` file; return whether there was one."""
    try:
        pth_path(target).unlink()
    except FileNotFoundError:
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m chanserv.alias {enable,disable,status} [--target DIR]``; the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m chanserv.alias",
        description="Make 'import channels' import chanserv in this environment (opt-in).",
    )
    parser.add_argument("action", choices=("enable", "disable", "status"))
    parser.add_argument(
        "--target",
        metavar="DIR",
        help="the site directory to write to (default: %s)" % (site_packages(),),
    )
    args = parser.parse_args(argv)
    path = pth_path(args.target)
    if args.action == "enable":
        try:
            enable(args.target)
        except AliasRefused as e:
            print("chanserv.alias: %s" % (e,), file=sys.stderr)
            return 1
        print("enabled: 'channels' imports chanserv in new interpreters (%s)" % (path,))
        return 0
    if args.action == "disable":
        if disable(args.target):
            print("disabled: removed %s" % (path,))
        else:
            print("already disabled: no %s" % (path,))
        return 0
    state = "enabled" if path.exists() else "disabled"
    print("%s (%s); active in this interpreter: %s" % (state, path, "yes" if installed() else "no"))
    return 0 if state == "enabled" else 1


if __name__ == "__main__":  # pragma: no cover - the command line
    sys.exit(main())
