"""
Every private name of a dependency that chanserv uses, one module per
dependency: :mod:`~chanserv._compat.twisted`, :mod:`~chanserv._compat.autobahn`,
:mod:`~chanserv._compat.automat` and :mod:`~chanserv._compat.django`.

chanserv uses the public API of its dependencies.  Where nothing public
exists, the private name is used only in these modules, behind a small named
function (or, for a method Twisted or Django calls, one override), with the
reason and the versions it was checked on.  ``tests/test_compat_pins.py``
pins each one: it fails naming the dependency and its version when a
release drops or changes a name.  Nothing else in chanserv touches a
private name of Twisted, autobahn, txaio or Django, except
:mod:`chanserv.server.http2` (Twisted's HTTP/2, which is private as a whole;
its pins are ``tests/server/test_tls_h2_pins.py``) and the Redis layer's
protocol (txredisapi).
"""
