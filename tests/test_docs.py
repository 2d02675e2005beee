"""
The documentation site under docs/: it builds with every warning an error
(broken references included), its code samples run (Sphinx's doctest
builder), and its reference is complete -- every option of the three
commands, every setting the code reads, every layer option and every name
the public modules export has an entry.  Main thread (Sphinx runs in a
child process).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from django.conf import global_settings

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PACKAGE = REPO / "chanserv"
SETTINGS_PAGE = DOCS / "reference" / "settings.rst"

#: The modules whose ``__all__`` the API reference documents, name by name.
PUBLIC_MODULES = (
    "chanserv",
    "chanserv.asgi",
    "chanserv.auth",
    "chanserv.binding",
    "chanserv.binding.base",
    "chanserv.binding.websockets",
    "chanserv.channel",
    "chanserv.delay.models",
    "chanserv.delay.service",
    "chanserv.delay.worker",
    "chanserv.exceptions",
    "chanserv.generic",
    "chanserv.generic.base",
    "chanserv.generic.websockets",
    "chanserv.handler",
    "chanserv.interfaces",
    "chanserv.layers",
    "chanserv.layers.base",
    "chanserv.layers.inmemory",
    "chanserv.layers.redis",
    "chanserv.message",
    "chanserv.ordering",
    "chanserv.routing",
    "chanserv.security.websockets",
    "chanserv.sessions",
    "chanserv.signals",
    "chanserv.staticfiles",
    "chanserv.tap",
    "chanserv.test",
    "chanserv.testing",
)

#: The keys of an entry of CHANNEL_LAYERS (read in chanserv.asgi).
LAYER_ENTRY_KEYS = ("BACKEND", "ROUTING", "CONFIG", "TEST_CONFIG")
#: The keys of a Redis Sentinel entry of the Redis layer's ``hosts``.
SENTINEL_KEYS = ("sentinels", "master_name", "sentinel_kwargs")
#: What ``settings.X`` reads that is not a setting.
NOT_SETTINGS = frozenset({"SETTINGS_MODULE", "configured"})

#: Values equal by identity to unrelated objects: compared by name instead.
_VALUES = (str, bytes, int, float, bool, tuple, type(None))


def _sphinx(builder: str, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            builder,
            "-d",
            str(out / "doctrees"),
            str(DOCS),
            str(out / builder),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The site built as HTML into a fresh folder, and the build's result."""
    out = tmp_path_factory.mktemp("docs")
    return out, _sphinx("html", out)


@pytest.fixture(scope="module")
def inventory(site: tuple[Path, subprocess.CompletedProcess[str]]) -> Mapping[str, Any]:
    """The site's objects.inv: every entry by type, then by name."""
    from sphinx.util.inventory import InventoryFile

    out, build = site
    assert build.returncode == 0, build.stderr
    with open(out / "html" / "objects.inv", "rb") as f:
        return InventoryFile.load(f, "", lambda base, uri: uri)


def test_site_builds_with_no_warning(site: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    """`sphinx -W` builds the HTML site: no warning, no unresolved reference."""
    out, build = site
    assert build.returncode == 0, build.stderr
    assert "WARNING" not in build.stderr, build.stderr
    for page in ("index", "reference/settings", "reference/commands", "changelog"):
        assert (out / "html" / (page + ".html")).is_file(), page


def test_code_samples_run(site: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    """Every `>>>` sample and doctest block of the site runs and prints what the page says."""
    out, _ = site
    build = _sphinx("doctest", out)
    report = (out / "doctest" / "output.txt").read_text(encoding="utf-8")
    assert build.returncode == 0, build.stderr + report
    assert "0 failures in tests" in report, report
    ran = re.search(r"^\s*(\d+) tests$", report, re.MULTILINE)
    assert ran and int(ran.group(1)) > 0, report


def _options(inventory: Mapping[str, Any], program: str) -> set[str]:
    prefix = program.replace(" ", "-") + "."
    return {name[len(prefix) :] for name in inventory["std:cmdoption"] if name.startswith(prefix)}


def test_every_twistd_option_has_an_entry(inventory: Mapping[str, Any]) -> None:
    """Each option of `twistd chanserv`, long and short, has an entry in the commands page."""
    from chanserv.tap import Options

    options = Options()
    expected = {"--" + spec.rstrip("=") for spec in options.longOpt}
    expected |= {"-" + name for name in options.synonyms if len(name) == 1}
    assert len(expected) > 40
    assert expected - _options(inventory, "twistd chanserv") == set()


#: Each management command and the package of its module.
COMMANDS = {
    "runserver": "chanserv.management",
    "runworker": "chanserv.management",
    "rundelay": "chanserv.delay.management",
}


def _help_flags(text: str) -> set[str]:
    """The flags of an argparse ``--help`` text."""
    flags: set[str] = set()
    for line in text.splitlines():
        match = re.match(r"  (-\S.*?)(?:\s{2,}|$)", line)
        if match:
            flags.update(re.findall(r"(?:^|, )(--?[\w-]+)", match.group(1)))
    return flags


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_management_command_option_has_an_entry(
    inventory: Mapping[str, Any], command: str
) -> None:
    """Each flag of `manage.py runserver`/`runworker`/`rundelay --help` has an entry, or one of Django's common options."""
    module = importlib.import_module("%s.commands.%s" % (COMMANDS[command], command))
    flags = _help_flags(module.Command().create_parser("manage.py", command).format_help())
    assert {"--layer", "--settings"} <= flags or {"--threads", "--settings"} <= flags
    documented = _options(inventory, "manage.py " + command) | _options(inventory, "manage.py")
    assert flags - documented == set()


def test_every_alias_option_has_an_entry(
    inventory: Mapping[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """Each flag and action of `python -m chanserv.alias --help` has an entry in the commands page."""
    from chanserv.alias import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    flags = _help_flags(text)
    actions = re.search(r"\{([\w,]+)\}", text)
    assert "--target" in flags and actions is not None
    documented = _options(inventory, "python -m chanserv.alias")
    assert (flags | set(actions.group(1).split(","))) - documented == set()


def _setting_reads(path: Path) -> Iterator[str]:
    """The settings a module reads: ``settings.X`` and ``getattr(settings, X)``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    constants = {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "settings"
            and node.attr.isupper()
        ):
            yield node.attr
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr")
            and len(node.args) >= 2
            and isinstance(node.args[0], ast.Name)
            and node.args[0].id == "settings"
        ):
            name = node.args[1]
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                yield name.value
            elif isinstance(name, ast.Name) and name.id in constants:
                yield constants[name.id]


def _settings_read() -> set[str]:
    names = {name for path in PACKAGE.rglob("*.py") for name in _setting_reads(path)}
    return names - NOT_SETTINGS


def test_every_setting_the_code_reads_is_documented(inventory: Mapping[str, Any]) -> None:
    """Each setting chanserv reads is in the settings page; chanserv's own ones have an entry."""
    page = SETTINGS_PAGE.read_text(encoding="utf-8")
    found = _settings_read()
    assert {"CHANNEL_LAYERS", "CHANSERV_ROUTE_TIMEOUT", "DEBUG"} <= found
    assert {name for name in found if "``%s``" % name not in page} == set()
    own = {name for name in found if not hasattr(global_settings, name)}
    assert own - set(inventory["std:setting"]) == set()


def test_every_layer_option_is_documented() -> None:
    """Each CHANNEL_LAYERS key and each option of both layers and of connection_kwargs is in the settings page."""
    from chanserv.layers import InMemoryChannelLayer, RedisChannelLayer
    from chanserv.layers.redis import config

    page = SETTINGS_PAGE.read_text(encoding="utf-8")
    options = set(LAYER_ENTRY_KEYS) | set(SENTINEL_KEYS)
    for layer in (InMemoryChannelLayer, RedisChannelLayer):
        options |= set(inspect.signature(layer).parameters)
    options |= set(config._CONNECTION_KWARGS) | set(config._SENTINEL_KWARGS)
    assert {"capacity", "hosts", "symmetric_encryption_keys", "socket_timeout"} <= options
    assert {name for name in options if "``%s``" % name not in page} == set()


def _find(dotted: str) -> Any:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for name in parts[i:]:
                obj = getattr(obj, name)
        except Exception:  # a descriptor may raise outside its context
            return None
        return obj
    return None


def _public_names(module: Any) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    return [
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and getattr(value, "__module__", None) == module.__name__
        and (inspect.isclass(value) or inspect.isfunction(value))
    ]


def test_every_public_name_has_an_entry(inventory: Mapping[str, Any]) -> None:
    """Each name a public module exports has an API entry, under its own or another import path."""
    entries = [
        name for kind, items in inventory.items() if kind.startswith("py:") for name in items
    ]
    by_identity = {id(obj) for obj in map(_find, entries) if obj is not None}
    suffixes = {name.rpartition(".")[2] for name in entries}
    missing = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in _public_names(module):
            value = getattr(module, name)
            known = name in suffixes if isinstance(value, _VALUES) else id(value) in by_identity
            if not known:
                missing.append("%s.%s" % (module_name, name))
    assert missing == [], missing
