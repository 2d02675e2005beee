"""
Sphinx configuration of chanserv's documentation.

Build it with ``make docs`` (HTML in ``docs/_build/html``); the test suite
builds it too, with warnings as errors, and runs its code samples
(``tests/test_docs.py``).  Autodoc imports chanserv from this checkout,
after ``django.setup()`` with ``docs/_settings.py``.  Main thread.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# This checkout's chanserv, not an installed copy; docs/_ext for the
# directives that generate the option tables.
sys.path[:0] = [str(HERE.parent), str(HERE / "_ext"), str(HERE)]
os.environ["DJANGO_SETTINGS_MODULE"] = "_settings"

import django  # noqa: E402

django.setup()

import chanserv  # noqa: E402

project = "chanserv"
author = "the chanserv authors"
copyright = "chanserv's authors; BSD-3-Clause"
release = chanserv.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "chanserv_docs",
]

root_doc = "index"
# Option names keep their two hyphens, quotes stay straight.
smartquotes = False
exclude_patterns = ["_build", "_ext", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []

html_theme = "alabaster"
html_title = "chanserv %s" % release
html_static_path: list[str] = []
html_theme_options = {
    "description": "The Django Channels 1.x programming model on one Twisted server",
    "fixed_sidebar": True,
}

# -- autodoc ----------------------------------------------------------------

autodoc_default_options = {
    "members": True,
    "undoc-members": True,
    "show-inheritance": True,
}
autodoc_member_order = "bysource"
# Signatures stay readable: the types are in the docstrings' prose and in
# the annotations shown in the description.
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_preserve_defaults = True

# -- cross-references ---------------------------------------------------------

# Every reference must resolve (-n), but for the names of other projects:
# there is no network at build time for intersphinx, so references to
# Python's standard library, Twisted, Django, zope.interface, autobahn and
# txredisapi stay plain text.
nitpicky = True
#: chanserv's modules that are not part of the reference (the server's
#: internals, the worker, the Redis layer's parts): docstrings name their
#: classes, which stay plain text here; docs/internals.rst describes them.
PRIVATE_MODULES = (
    r"_compat|apps|lazy|locks|log|management|metrics|server|service|session_store|"
    r"stats|threads|types|worker|layers\._memory|"
    r"layers\.redis\.(codec|config|connection|errors|layer|operations|protocol|"
    r"receive|scripts|sentinel|sync)"
)
nitpick_ignore_regex = [
    (r"py:.*", r"chanserv\.(%s)(\..*)?" % PRIVATE_MODULES),
    # Private names, and the type variables and aliases of signatures.
    (r"py:.*", r"(chanserv\.)?([\w.]+\.)?_\w+"),
    (r"py:class", r"(chanserv\.[\w.]+\.)?(F|T|CapacityPattern|Routable|Content)"),
    # Django's classes in annotations, imported only for type checkers.
    (r"py:class", r"AbstractBaseUser|AnonymousUser|SessionBase|HttpRequest|HttpResponse"),
    (r"py:.*", r"(twisted|django|zope|autobahn|txredisapi|automat|prometheus_client)(\..*)?"),
    (
        r"py:.*",
        r"(collections|typing|types|re|io|threading|socket|asyncio|concurrent|"
        r"enum|ipaddress|pathlib|json|datetime|http|urllib|email|argparse|logging|"
        r"os|hashlib|weakref|contextlib|dataclasses)\..*",
    ),
]

# -- doctest ----------------------------------------------------------------

doctest_global_setup = """
import django
from django.conf import settings
"""
