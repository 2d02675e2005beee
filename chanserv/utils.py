"""
Small helpers with their Channels 1.x names: :func:`name_that_thing`, the
dotted name of a consumer, class or layer for log lines and metrics.  Pure
functions of their argument, safe in any thread; imports nothing of chanserv.
"""

from __future__ import annotations

import sys
import types

__all__ = ["name_that_thing"]

_MOCK_MODULES = ("unittest.mock", "mock")
_FUNCTION_TYPES = (types.FunctionType, types.BuiltinFunctionType)


def _is_mock(thing: object) -> bool:
    # A Mock answers every attribute (im_class, __self__, ...) and a spec'd
    # one lies about its __class__: ask type() of the mock classes, which
    # exist only if a mock module was imported (so importing none here).
    for module_name in _MOCK_MODULES:
        module = sys.modules.get(module_name)
        base = getattr(module, "NonCallableMock", None)
        if (
            isinstance(base, type)
            and isinstance(type(thing), type)
            and issubclass(type(thing), base)
        ):
            return True
    return False


def _dotted(thing: object) -> str:
    module = getattr(thing, "__module__", None)
    name = getattr(thing, "__qualname__", None) or getattr(thing, "__name__", None)
    if not isinstance(name, str):
        return repr(thing)
    return "%s.%s" % (module, name) if isinstance(module, str) and module else name


def name_that_thing(thing: object) -> str:
    """
    The dotted name of ``thing``: ``module.qualname`` of a function, class
    or builtin; ``module.Class.method`` of a bound method (named after the
    instance's class, as Channels 1.x meant to); the class's name for any
    other instance (a callable consumer object); ``"<mock>"`` for a
    ``unittest.mock`` (or ``mock``) object, spec'd or not.  Never raises.

    Fixed from Channels 1.x (whose Python 2 ``im_class`` branch is gone):
    a bound method of an instance raised ``AttributeError``, a classmethod
    lost its method name, a builtin was named ``builtin_function_or_method``,
    a spec'd mock was named after its spec, and names used ``__name__``
    where ``__qualname__`` tells nested classes and methods apart.
    """
    if _is_mock(thing):
        return "<mock>"
    if isinstance(thing, types.MethodType):
        owner = thing.__self__
        owner_name = name_that_thing(owner if isinstance(owner, type) else type(owner))
        return "%s.%s" % (owner_name, getattr(thing.__func__, "__name__", "?"))
    if isinstance(thing, (type, *_FUNCTION_TYPES)):
        if isinstance(thing, types.BuiltinFunctionType) and not isinstance(
            thing.__self__, (types.ModuleType, type(None))
        ):
            # A builtin bound method ([].append): named after its instance's class.
            return "%s.%s" % (name_that_thing(type(thing.__self__)), thing.__name__)
        return _dotted(thing)
    return _dotted(type(thing))
