"""
The import hook behind ``python -m chanserv.alias enable``: a ``sys.meta_path``
finder that answers ``channels`` and ``channels.<x>`` with the very module
objects ``chanserv`` and ``chanserv.<x>``.  Installed by the one line of the
alias's ``.pth`` file at interpreter start (standard library only, nothing
imported until ``channels`` is).  Any thread: whichever imports, under
the import system's per-module lock.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys

# Interpreter start runs this file: only what the import system has loaded
# already, so no typing, collections.abc or importlib.util here.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.abc import Loader as _LoaderBase
    from types import ModuleType
else:
    _LoaderBase = object

__all__ = ["ALIAS", "TARGET", "ChannelsAliasFinder", "install", "installed", "real_channels_origin"]

#: The name aliased, and the package it stands for.
ALIAS = "channels"
TARGET = "chanserv"


def real_channels_origin(path: Sequence[str] | None = None) -> str | None:
    """
    Where a real top-level ``channels`` module or package would be imported
    from on ``path`` (default ``sys.path``), looked up past every
    ``sys.meta_path`` hook, or None when there is none.  Any thread.
    """
    spec = importlib.machinery.PathFinder.find_spec(ALIAS, list(path) if path is not None else None)
    if spec is None or spec.origin in (None, "namespace"):
        # A bare ``channels/`` folder (a namespace portion) is no installed
        # package: the alias goes first and wins over it.
        return None
    return spec.origin


# Neither class derives from importlib.abc at run time (only for mypy): on
# Python 3.11 that module loads importlib.resources, tempfile and more,
# some 15 ms at every interpreter start.
class _AliasLoader(_LoaderBase):
    """Hands back ``target``'s own module object for the aliased name."""

    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # a throw-away module; exec_module swaps the real one in

    def exec_module(self, module: ModuleType) -> None:
        # The import system returns whatever sys.modules holds under the
        # name once this returns, so the aliased name is bound to chanserv's
        # module itself (its __name__ and __spec__ stay chanserv's, so
        # reload, pickle and inspect all see one module).
        sys.modules[module.__name__] = importlib.import_module(self.target)


class ChannelsAliasFinder:
    """
    Finds ``channels`` and ``channels.<x>`` as ``chanserv`` and
    ``chanserv.<x>``; finds nothing else.  The first import of ``channels``
    raises ImportError when a real ``channels`` is importable too.
    """

    chanserv_channels_alias = True

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        """The alias's spec for ``fullname``, or None (not ours, or no such chanserv module)."""
        if fullname != ALIAS and not fullname.startswith(ALIAS + "."):
            return None
        if fullname == ALIAS:
            origin = real_channels_origin()
            if origin is not None:
                raise ImportError(
                    "chanserv's 'channels' alias is enabled, but a real 'channels' package "
                    "is installed (%s): uninstall one of them, or run "
                    "'python -m chanserv.alias disable'" % (origin,),
                    name=fullname,
                )
        target_name = TARGET + fullname[len(ALIAS) :]
        import importlib.util

        target_spec = importlib.util.find_spec(target_name)
        if target_spec is None:
            return None
        return importlib.machinery.ModuleSpec(
            fullname,
            _AliasLoader(target_name),
            origin=target_spec.origin,
            is_package=target_spec.submodule_search_locations is not None,
        )


def installed() -> bool:
    """Whether the finder is on ``sys.meta_path`` in this interpreter."""
    # By a marker, not the class: the .pth line runs this file as a module
    # of its own, so its class is not chanserv._alias_hook's.
    return any(getattr(finder, "chanserv_channels_alias", False) for finder in sys.meta_path)


def install() -> None:
    """
    Put the finder first on ``sys.meta_path`` (before the path finder, which
    would otherwise load ``channels.x`` a second time from chanserv's files).
    Idempotent.  Called by the ``.pth`` line, which runs this file by its
    path (as module ``_chanserv_alias_hook``), not importing chanserv.
    """
    if not installed():
        sys.meta_path.insert(0, ChannelsAliasFinder())
