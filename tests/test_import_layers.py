"""
The direction of imports: the import-linter contracts of ``setup.cfg`` hold
(layers, no cycles, what the channel layers and the exceptions may not
import), and the package's top-level names load lazily, so that importing
the channel layers loads no Django.

Each check runs in a fresh interpreter on the working tree: this process
has long since imported Django and most of chanserv.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    """``argv`` run in the repository, importing chanserv from the working tree."""
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=env, timeout=120)


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return _run(sys.executable, "-c", code)


def test_import_contracts_are_kept() -> None:
    """lint-imports finds every contract kept, function-level imports included."""
    # The main suite runs it; nox's dependency sessions, which install the
    # test requirements without the linters, deselect it (noxfile.py).
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = _run(str(lint_imports), "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr


_NO_DJANGO = """
import sys
import chanserv.layers
from chanserv.layers import BaseChannelLayer, InMemoryChannelLayer
import chanserv.layers.redis
loaded = sorted(m for m in sys.modules if m == "django" or m.startswith("django."))
assert not loaded, loaded
"""


def test_channel_layers_load_no_django() -> None:
    """Both channel layers import without Django (nor, so, the model above them)."""
    result = _python(_NO_DJANGO)
    assert result.returncode == 0, result.stderr


_LAZY = """
import sys
import chanserv
loaded = sorted(m for m in sys.modules if m.startswith("chanserv"))
assert loaded == ["chanserv", "chanserv.lazy"], loaded
from chanserv import (
    DEFAULT_CHANNEL_LAYER, Channel, Group, channel_layers, include, route, route_class,
)
import chanserv.asgi, chanserv.channel, chanserv.routing
assert Channel is chanserv.channel.Channel and Group is chanserv.channel.Group
assert DEFAULT_CHANNEL_LAYER == "default"
assert channel_layers is chanserv.asgi.channel_layers
assert (route, route_class, include) == (
    chanserv.routing.route, chanserv.routing.route_class, chanserv.routing.include
)
assert set(chanserv.__all__) <= set(dir(chanserv))
try:
    chanserv.Nothing
except AttributeError:
    pass
else:
    raise AssertionError("chanserv.Nothing")
"""


def test_top_level_names_load_on_first_use() -> None:
    """``import chanserv`` loads nothing more; the Channels 1.x names still import."""
    result = _python(_LAZY)
    assert result.returncode == 0, result.stderr
