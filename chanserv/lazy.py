"""
A package's public names loaded on first use (PEP 562): importing the
package then loads only what its caller uses.  Any thread (the import
system's lock guards each first load).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["lazy_names"]


def lazy_names(
    package: str, homes: Mapping[str, str], public: Sequence[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    # Any: a module's __getattr__ returns whatever the named attribute is (classes, functions,
    # constants); each is typed where it is defined, and mypy reads those.
    """
    The module-level ``__getattr__`` and ``__dir__`` of ``package``.

    :param package: the package's ``__name__``.
    :param homes: each public name and the module that defines it.
    :param public: the package's ``__all__``.
    """

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError("module %r has no attribute %r" % (package, name))
        return getattr(importlib.import_module(home), name)

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(public))

    return __getattr__, __dir__
