"""
The table of Channels 1.1.8 names in ``docs/compatibility.rst``: every
chanserv name it gives imports, and every row says why when it is not
*same*.  Main thread.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

TABLE = Path(__file__).resolve().parent.parent / "docs" / "compatibility.rst"
ROW = re.compile(
    r"^   \* - ``(?P<old>[\w.]+)``\n     - (?P<new>``[\w.]+``|—)\n     - (?P<status>[a-z ]+)\n     -(?P<note>.*)$",
    re.MULTILINE,
)


def _rows() -> list[dict[str, str]]:
    return [match.groupdict() for match in ROW.finditer(TABLE.read_text(encoding="utf-8"))]


def _resolve(dotted: str) -> object:
    """Import the longest module prefix of ``dotted``, then get the rest."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            target = getattr(target, name)
        return target
    raise ModuleNotFoundError(dotted)


def test_the_table_has_a_row_per_name_of_every_1x_module() -> None:
    """The table lists the 1.x names once each, from every public 1.x module."""
    rows = _rows()
    olds = [row["old"] for row in rows]
    assert len(olds) == len(set(olds))
    modules = {old.rsplit(".", 1)[0] for old in olds}
    for module in (
        "channels.asgi",
        "channels.auth",
        "channels.binding.base",
        "channels.binding.websockets",
        "channels.delay.models",
        "channels.exceptions",
        "channels.generic.websockets",
        "channels.handler",
        "channels.routing",
        "channels.sessions",
        "channels.test.base",
        "channels.utils",
        "channels.worker",
    ):
        assert module in modules
    assert len(rows) >= 100


@pytest.mark.parametrize("row", _rows(), ids=lambda row: row["old"])
def test_each_chanserv_name_in_the_table_imports(row: dict[str, str]) -> None:
    """A *same* or *fixed* row names a chanserv object that exists; others say why not."""
    assert row["status"] in ("same", "fixed", "not provided")
    if row["status"] == "not provided":
        assert row["new"] == "—"
        assert row["note"].strip(), "a name that is not provided says why"
        return
    if row["status"] == "fixed":
        assert row["note"].strip(), "a fixed name says what was fixed"
    new = row["new"].strip("`")
    assert new.rsplit(".", 1)[-1] == row["old"].rsplit(".", 1)[-1], "the 1.x name is kept"
    _resolve(new)  # raises when the name is missing
