"""
The private names of automat that chanserv uses (checked on automat 24.8.1
to 25.4.16, pinned by ``tests/test_compat_pins.py``): a dict in front of a
machine's transition scan.  :func:`indexed` runs once per machine at import
time (any thread); the machines it returns run on the reactor thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

__all__ = ["AUTOMATON_ATTRIBUTE", "indexed"]

#: The attribute of a built ``TypeMachine`` holding its automaton.
AUTOMATON_ATTRIBUTE = "__automat_automaton__"

_M = TypeVar("_M")


def indexed(machine: _M) -> _M:
    """
    ``machine`` (a built ``automat.TypeMachine``), its transitions looked up
    in a dict rather than scanned.  Call once per machine class, at import.
    """
    automaton: Any = getattr(machine, AUTOMATON_ATTRIBUTE, None)
    scan = getattr(automaton, "outputForInput", None)
    if scan is None or not hasattr(automaton, "allTransitions"):
        return machine
    table = {
        (id(state), symbol): (to, tuple(outputs))
        for state, symbol, to, outputs in automaton.allTransitions()
    }

    def output_for_input(state: Any, symbol: str) -> tuple[Any, Sequence[Any]]:
        found = table.get((id(state), symbol))
        return scan(state, symbol) if found is None else found

    automaton.outputForInput = output_for_input
    return machine
