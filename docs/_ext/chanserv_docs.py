"""
Sphinx directives that write chanserv's option tables from the code, so
the reference cannot drift from it, and the ``setting`` object type.

- ``.. twistd-options:: chanserv.tap.Options``: one ``.. option::`` per
  option of a ``twisted.python.usage.Options`` class (under the current
  ``.. program::``), with its short form, default and help;
- ``.. django-command-options:: chanserv.management.commands.runworker``:
  the same for the arguments a management command's ``add_arguments``
  declares;
- ``.. zope-interfaces:: chanserv.interfaces``: every interface of a
  module's ``__all__``, with its attributes and methods;
- ``.. setting:: NAME`` and ``:setting:`NAME```: a Django setting;
- a Python reference resolves as the name would in Python (inherited
  methods, imported and re-exported names); those of ``docs/internals.rst``
  to private names are plain text;
- class attributes that alias another class are left out of autodoc, and
  so are private bases in "Bases:".

Main thread (Sphinx reads the pages in the process that runs it).
"""

from __future__ import annotations

import argparse
import ast
import functools
import importlib
import inspect
import re
import sys
import textwrap
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import make_refnode

_SPECIAL = re.compile(r"([\\`*_|\[\]<>])")


def escape(text: str) -> str:
    """``text`` as plain reST text: markup characters escaped, spaces folded."""
    return _SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def _import(dotted: str) -> Any:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _shown_default(value: object) -> str | None:
    """The default as the table shows it, or None when there is none to show."""
    if value is None or value == [] or value is False:
        return None
    return "``%s``" % (value,) if value != "" else '``""``'


class _OptionsDirective(SphinxDirective):
    required_arguments = 1
    has_content = False

    def entries(self) -> list[tuple[str, str, str | None]]:
        """``(signature, help, default)`` of each option, in the page's order."""
        raise NotImplementedError

    def run(self) -> list[Any]:
        lines: list[str] = []
        for signature, text, default in self.entries():
            lines += ["", ".. option:: " + signature, ""]
            body = escape(text) if text else "(no description)"
            if default is not None:
                body += "  Default: %s." % (default,)
            lines.append("   " + body)
        lines.append("")
        return self.parse_text_to_nodes("\n".join(lines))

    def parse_text_to_nodes(self, text: str) -> list[Any]:
        container = nodes.container()
        source = self.get_source_info()[0]
        self.state.nested_parse(StringList(text.splitlines(), source=source), 0, container)
        return list(container.children)


class TwistdOptions(_OptionsDirective):
    """The options of a ``usage.Options`` class, from its parsed tables, by name."""

    def entries(self) -> list[tuple[str, str, str | None]]:
        options = _import(self.arguments[0])()
        shorts: dict[str, str] = {}
        for name, target in options.synonyms.items():
            if len(name) == 1:
                shorts[target] = name
        result = []
        for spec in sorted(options.longOpt):
            takes_value = spec.endswith("=")
            name = spec.rstrip("=")
            metavar = "=" + name.upper().replace("-", "_") if takes_value else ""
            forms = ["--" + name + metavar]
            if name in shorts:
                forms.insert(0, "-" + shorts[name] + (" " + metavar[1:] if takes_value else ""))
            default = options.defaults.get(name) if takes_value else None
            result.append((", ".join(forms), options.docs.get(name, ""), _shown_default(default)))
        return result


class _Recorder(argparse.ArgumentParser):
    """An argument parser that remembers the actions added to it, in order."""

    def __init__(self) -> None:
        super().__init__(add_help=False)
        self.recorded: list[argparse.Action] = []

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.recorded.append(action)
        return action


class DjangoCommandOptions(_OptionsDirective):
    """The arguments a management command's ``add_arguments`` declares."""

    def entries(self) -> list[tuple[str, str, str | None]]:
        command = importlib.import_module(self.arguments[0]).Command()
        parser = _Recorder()
        command.add_arguments(parser)
        result = []
        for action in parser.recorded:
            metavar = action.metavar or action.dest.upper()
            if not action.option_strings:
                signature = str(metavar).lower()
            elif action.nargs == 0:
                signature = ", ".join(action.option_strings)
            else:
                signature = ", ".join("%s %s" % (flag, metavar) for flag in action.option_strings)
            text = action.help or ""
            if "%(" in text:
                text = text % {"default": action.default, "prog": "manage.py"}
            default = None if action.nargs == 0 else _shown_default(action.default)
            result.append((signature, str(text), default))
        return result


#: Pages about chanserv's insides, whose Python references may name private
#: modules and classes that the reference does not describe.
INTERNAL_PAGES = ("internals",)


#: What :func:`_find` returns for a name that does not exist.
MISSING = object()


def _find(dotted: str) -> Any:
    """
    The object ``dotted`` names (a module, then attributes), or
    :data:`MISSING`.  Only chanserv's modules are imported; others must be
    loaded already.
    """
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        name = ".".join(parts[:i])
        obj = sys.modules.get(name)
        if obj is None and parts[0] == "chanserv":
            try:
                # A build that reuses the pickled pages runs no autodoc.
                obj = importlib.import_module(name)
            except ImportError:
                continue
        if obj is None:
            continue
        try:
            for name in parts[i:]:
                obj = getattr(obj, name)
        except Exception:  # a descriptor may raise anything outside its context
            return MISSING
        return obj
    return MISSING


#: Values that equal objects elsewhere by identity (interned strings,
#: small numbers): never resolved by identity.
_VALUES = (str, bytes, int, float, bool, tuple, type(None))


#: ``(key, names)`` of :func:`_documented_names`: identities are only valid
#: in this process, so the cache lives here, not in the pickled environment.
_names_cache: list[Any] = [None, {}]


def _documented_names(env: Any) -> dict[int, str]:
    """The documented Python name of each object, by identity (cached per build)."""
    objects = env.domains["py"].objects
    key = (id(objects), len(objects))
    if _names_cache[0] != key:
        names: dict[int, str] = {}
        for fullname, entry in objects.items():
            if entry.objtype == "module" or entry.aliased:
                continue
            obj = _find(fullname) if fullname.startswith("chanserv.") else MISSING
            if obj is not MISSING and not isinstance(obj, _VALUES):
                names.setdefault(id(obj), fullname)
        _names_cache[:] = [key, names]
    return _names_cache[1]


@functools.cache
def _instance_attributes(cls: type) -> frozenset[str]:
    """The names ``self.NAME = ...`` assigns in the methods of ``cls`` and its bases."""
    names: set[str] = set()
    for klass in cls.__mro__:
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        for node in ast.walk(tree):
            targets = node.targets if isinstance(node, ast.Assign) else []
            if isinstance(node, (ast.AnnAssign, ast.AugAssign)):
                targets = [node.target]
            names.update(
                t.attr
                for t in targets
                if isinstance(t, ast.Attribute)
                and isinstance(t.value, ast.Name)
                and t.value.id == "self"
            )
    return frozenset(names)


def _candidates(target: str, module: str | None, cls: str | None) -> list[str]:
    """Where Python would look ``target`` up, from a docstring of ``module.cls``."""
    found: list[str] = []
    context = _find("%s.%s" % (module, cls)) if module and cls else MISSING
    if isinstance(context, type):
        for klass in context.__mro__:
            found.append("%s.%s.%s" % (klass.__module__, klass.__qualname__, target))
            found.append("%s.%s" % (klass.__module__, target))
    if module:
        found.append("%s.%s" % (module, target))
    found.append(target)
    return found


def resolve_as_python(app: Sphinx, env: Any, node: Any, contnode: Any) -> Any:
    """
    Resolve a Python reference Sphinx found no target for as Python would
    resolve the name: in the namespace of the class and module it appears
    in (an inherited method, a name imported into the module), or at an
    import path the object is re-exported from (``chanserv.test.Client``),
    to wherever the object is documented.  A name that exists but has no
    entry (another project's, a private one of chanserv's, an instance
    attribute the class sets in a method) is plain text; a name Python
    would not find stays a warning.
    """
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip(".~")
    module, cls = node.get("py:module"), node.get("py:class")
    objects = env.domains["py"].objects
    names = _documented_names(env)
    for candidate in _candidates(target, module, cls):
        if candidate in objects:
            fullname = candidate
        else:
            obj = _find(candidate)
            if obj is MISSING:
                continue
            if isinstance(obj, _VALUES) or id(obj) not in names:
                return contnode
            fullname = names[id(obj)]
        entry = objects[fullname]
        return make_refnode(
            app.builder, node["refdoc"], entry.docname, entry.node_id, contnode, fullname
        )
    context = _find("%s.%s" % (module, cls)) if module and cls else MISSING
    if isinstance(context, type) and target in _instance_attributes(context):
        return contnode
    if node.get("refdoc") in INTERNAL_PAGES:
        return contnode
    return None


def skip_class_aliases(
    app: Sphinx, what: str, name: str, obj: object, skip: bool, options: Any
) -> bool | None:
    """
    Leave out a class attribute that only repeats a class defined elsewhere
    under its own name (``BaseChannelLayer.ChannelFull = ChannelFull``): the
    class has its own entry, and a second one would make every reference to
    it ambiguous.
    """
    if (
        what == "class"
        and isinstance(obj, type)
        and obj.__qualname__ == obj.__name__ == name.rpartition(".")[2]
    ):
        return True
    return None


def public_bases(app: Sphinx, name: str, obj: object, options: Any, bases: list[Any]) -> None:
    """
    Show a class's public bases: a private one gives way to its own bases
    (``object`` only when nothing else is left).
    """
    shown: list[Any] = []
    pending = list(bases)
    while pending:
        base = pending.pop(0)
        if base is object or base in shown:
            continue
        if getattr(base, "__name__", "").startswith("_") and isinstance(base, type):
            pending[:0] = list(base.__bases__)
            continue
        shown.append(base)
    bases[:] = shown or [object]


def _indented(text: str, prefix: str) -> list[str]:
    return [(prefix + line).rstrip() for line in inspect.cleandoc(text or "").splitlines()]


class ZopeInterfaces(SphinxDirective):
    """
    Every ``zope.interface`` interface in a module's ``__all__``, with its
    attributes and methods (autodoc sees none of them: an interface is not
    a class, and its methods are not attributes).
    """

    required_arguments = 1
    has_content = False

    def run(self) -> list[Any]:
        from zope.interface.interfaces import IInterface, IMethod

        module = importlib.import_module(self.arguments[0])
        lines = [".. py:currentmodule:: " + module.__name__, ""]
        for name in module.__all__:
            interface = getattr(module, name)
            if not IInterface.providedBy(interface):
                continue
            lines += [".. py:class:: " + name, ""]
            bases = [b for b in interface.__bases__ if b.__name__ != "Interface"]
            if bases:
                shown = ", ".join(":class:`%s.%s`" % (b.__module__, b.__name__) for b in bases)
                lines += ["   Extends " + shown + ".", ""]
            lines += _indented(interface.__doc__ or "", "   ") + [""]
            for member in interface.names(all=False):
                description = interface[member]
                if IMethod.providedBy(description):
                    signature = description.getSignatureString()
                    lines += ["   .. py:method:: %s%s" % (member, signature), ""]
                else:
                    lines += ["   .. py:attribute:: " + member, ""]
                lines += _indented(description.getDoc() or "", "      ") + [""]
        container = nodes.container()
        source = self.get_source_info()[0]
        self.state.nested_parse(StringList(lines, source=source), 0, container)
        return list(container.children)


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("missing-reference", resolve_as_python)
    app.connect("autodoc-skip-member", skip_class_aliases)
    app.connect("autodoc-process-bases", public_bases)
    app.add_directive("twistd-options", TwistdOptions)
    app.add_directive("django-command-options", DjangoCommandOptions)
    app.add_directive("zope-interfaces", ZopeInterfaces)
    app.add_object_type(
        "setting", "setting", indextemplate="pair: %s; setting", objname="Django setting"
    )
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}


__all__ = [
    "DjangoCommandOptions",
    "TwistdOptions",
    "ZopeInterfaces",
    "escape",
    "public_bases",
    "resolve_as_python",
    "setup",
    "skip_class_aliases",
]
