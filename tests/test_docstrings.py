"""
Docstrings that state contracts: each chanserv module says in one short
paragraph what it is for and which thread runs its code, and every test
says what it pins.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "chanserv"
TESTS = REPO / "tests"

#: The most lines a module docstring may have.
MAX_MODULE_DOCSTRING_LINES = 12
#: The phrases that name a thread (case and line breaks do not matter).
THREAD_PHRASES = ("reactor thread", "pool thread", "any thread", "main thread")

MODULES = sorted(PACKAGE.rglob("*.py"))
TEST_FILES = sorted(TESTS.rglob("test_*.py"))


def _relative(path: Path) -> str:
    return str(path.relative_to(REPO))


def _module_docstring(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""


def _tests_without_docstring(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        "%s:%d %s" % (_relative(path), node.lineno, node.name)
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.name.startswith("test")
        and not ast.get_docstring(node)
    ]


@pytest.mark.parametrize("path", MODULES, ids=_relative)
def test_module_docstring_is_one_short_paragraph(path: Path) -> None:
    """Every chanserv module has a docstring of at most 12 lines."""
    doc = _module_docstring(path)
    assert doc, "%s has no module docstring" % _relative(path)
    lines = len(doc.splitlines())
    assert lines <= MAX_MODULE_DOCSTRING_LINES, "%s: module docstring of %d lines" % (
        _relative(path),
        lines,
    )


@pytest.mark.parametrize("path", MODULES, ids=_relative)
def test_module_docstring_names_its_thread(path: Path) -> None:
    """Every chanserv module docstring says which thread runs its code."""
    text = " ".join(_module_docstring(path).split()).lower()
    assert any(phrase in text for phrase in THREAD_PHRASES), (
        "%s: the module docstring names none of %s" % (_relative(path), ", ".join(THREAD_PHRASES))
    )


@pytest.mark.parametrize("path", TEST_FILES, ids=_relative)
def test_every_test_has_a_docstring(path: Path) -> None:
    """Every test function or method in tests/ has a docstring."""
    missing = _tests_without_docstring(path)
    assert not missing, "%d tests without a docstring:\n%s" % (len(missing), "\n".join(missing))
