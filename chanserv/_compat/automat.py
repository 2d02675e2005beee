"""
The private names of automat that chanserv uses.

Checked on automat 24.8.1 to 25.4.16; ``tests/test_compat_pins.py`` pins
each one.

- ``TypeMachine.__automat_automaton__`` and its ``outputForInput``: automat
  finds an input's transition by scanning every transition of the machine
  and comparing states with their dataclass ``__eq__`` -- about 3 us per
  input for the WebSocket life cycle, several inputs per connection.
  :func:`indexed` puts a dict, built once from the public
  ``allTransitions()``, in front of that scan on one machine's automaton.
  An input with no transition still gets automat's own answer
  (``NoTransition``).  A release that renames them only makes each input
  slower: :func:`indexed` then returns the machine unchanged.
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
