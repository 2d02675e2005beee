"""
Every private name of a dependency that chanserv uses, one module per
dependency, each behind a small named function or override and pinned by
``tests/test_compat_pins.py``; nothing else in chanserv touches a private
name (see ``docs/internals.rst`` for the exceptions).  Import time in any
thread; each helper runs in the thread of its caller, stated on it.
"""
