"""
The opt-in ``channels`` alias (chanserv.alias, chanserv._alias_hook): the
finder's mapping to chanserv's own module objects, in this process; the
``.pth`` step, its refusals and its absence, in fresh interpreters where
``site.addsitedir`` runs the real ``.pth`` mechanism.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest

import chanserv
import chanserv.routing
from chanserv import alias
from chanserv._alias_hook import ChannelsAliasFinder, install, installed

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def aliased() -> Iterator[None]:
    """The finder installed in this process, and every trace of it removed afterwards."""
    assert not installed()
    install()
    try:
        yield
    finally:
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, ChannelsAliasFinder)]
        for name in [n for n in sys.modules if n == "channels" or n.startswith("channels.")]:
            del sys.modules[name]


def python(
    code: str, *, cwd: Path, extra_path: tuple[Path, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with the working tree importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *map(str, extra_path)])
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def alias_cli(
    *args: str, cwd: Path, extra_path: tuple[Path, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """``python -m chanserv.alias ARGS`` in a fresh interpreter."""
    return python(
        "import sys; from chanserv.alias import main; sys.exit(main(%r))" % (list(args),),
        cwd=cwd,
        extra_path=extra_path,
    )


def fake_channels_package(root: Path) -> Path:
    """A directory holding an importable ``channels`` package, as pip would leave it."""
    (root / "channels").mkdir(parents=True)
    (root / "channels" / "__init__.py").write_text("REAL = True\n")
    return root


# -- the finder, in this process ---------------------------------------------------


def test_channels_names_are_chanserv_module_objects(aliased: None) -> None:
    """channels and channels.<x> are the very module objects chanserv and chanserv.<x>."""
    import channels
    import channels.generic.websockets
    import channels.routing

    import chanserv.generic.websockets

    assert channels is chanserv
    assert channels.routing is chanserv.routing
    assert sys.modules["channels.routing"] is chanserv.routing
    assert channels.generic.websockets is chanserv.generic.websockets
    # The module keeps its own identity: name and spec are chanserv's.
    assert chanserv.routing.__name__ == "chanserv.routing"
    assert chanserv.routing.__spec__ is not None
    assert chanserv.routing.__spec__.name == "chanserv.routing"


def test_tutorial_imports_through_the_alias(aliased: None) -> None:
    """The 1.x tutorial's imports give chanserv's classes and functions."""
    from channels import Group, route
    from channels.sessions import channel_session

    from chanserv.channel import Group as ChanservGroup
    from chanserv.sessions import channel_session as chanserv_channel_session

    assert Group is ChanservGroup
    assert route is chanserv.routing.route
    assert channel_session is chanserv_channel_session


def test_mock_patch_through_channels_patches_chanserv(aliased: None) -> None:
    """mock.patch("channels.x.y") replaces chanserv.x.y itself, and puts it back."""
    original = chanserv.routing.Router
    with mock.patch("channels.routing.Router") as patched:
        assert chanserv.routing.Router is patched
    assert chanserv.routing.Router is original


def test_pickle_and_getmodule_see_one_module(aliased: None) -> None:
    """A class reached through channels pickles and resolves as chanserv's."""
    import inspect

    import channels.routing

    assert pickle.loads(pickle.dumps(channels.routing.Router)) is chanserv.routing.Router
    assert inspect.getmodule(channels.routing.route) is chanserv.routing


def test_names_1x_lacks_are_reachable_and_missing_ones_fail(aliased: None) -> None:
    """The whole chanserv namespace is aliased; a name chanserv lacks is ModuleNotFoundError."""
    import channels.testing

    import chanserv.testing

    assert channels.testing is chanserv.testing
    with pytest.raises(ModuleNotFoundError, match=r"channels\.no_such_module"):
        import channels.no_such_module


def test_finder_ignores_other_names() -> None:
    """The finder answers only channels and channels.<x> (channelsfoo is not ours)."""
    finder = ChannelsAliasFinder()
    assert finder.find_spec("channelsfoo", None) is None
    assert finder.find_spec("django", None) is None
    spec = finder.find_spec("channels.routing", None)
    assert spec is not None
    assert spec.name == "channels.routing"


def test_finder_refuses_when_a_real_channels_appears(tmp_path: Path, aliased: None) -> None:
    """A real channels on sys.path after the alias was enabled: import channels is a clear ImportError."""
    fake_channels_package(tmp_path)
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(ImportError, match="a real 'channels' package is installed"):
            import channels  # noqa: F401
    finally:
        sys.path.remove(str(tmp_path))
    assert "channels" not in sys.modules


def test_django_apps_load_as_chanserv_with_commands(tmp_path: Path) -> None:
    """INSTALLED_APPS = ["channels"] loads the chanserv app; runserver and runworker are chanserv's."""
    site = tmp_path / "site"
    assert alias.enable(site) == site / alias.PTH_NAME
    result = python(
        """
        import site, sys
        site.addsitedir(%r)
        from django.conf import settings
        settings.configure(INSTALLED_APPS=["django.contrib.staticfiles", "channels"])
        import django
        django.setup()
        from django.apps import apps
        from django.core.management import get_commands, load_command_class
        print(apps.get_app_config("chanserv").name, apps.is_installed("chanserv"))
        commands = get_commands()
        for name in ("runserver", "runworker"):
            print(name, type(load_command_class(commands[name], name)).__module__)
        """
        % (str(site),),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:3] == [
        "chanserv True",
        "runserver chanserv.management.commands.runserver",
        "runworker chanserv.management.commands.runworker",
    ]


def test_delay_app_loads_through_the_alias(tmp_path: Path) -> None:
    """INSTALLED_APPS = ["channels.delay"] loads chanserv's delay app."""
    site = tmp_path / "site"
    alias.enable(site)
    result = python(
        """
        import site
        site.addsitedir(%r)
        from django.conf import settings
        settings.configure(INSTALLED_APPS=["channels", "channels.delay"])
        import django
        django.setup()
        from django.apps import apps
        import channels.delay, chanserv.delay
        print(sorted(a.name for a in apps.get_app_configs()), channels.delay is chanserv.delay)
        """
        % (str(site),),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['chanserv', 'chanserv.delay'] True"


# -- the .pth step, in fresh interpreters -------------------------------------------


def test_pth_step_aliases_and_stays_cheap(tmp_path: Path) -> None:
    """After enable, the .pth line installs the finder, importing neither chanserv, typing, Django nor metadata."""
    site = tmp_path / "site"
    result = alias_cli("enable", "--target", str(site), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (site / alias.PTH_NAME).read_text() == alias.PTH_LINE
    result = python(
        """
        import site, sys
        before = set(sys.modules)
        site.addsitedir(%r)
        loaded = set(sys.modules) - before
        heavy = ("chanserv", "channels", "django", "twisted", "typing", "re", "collections")
        print(sorted(n for n in loaded if n.split(".")[0] in heavy or n == "importlib.metadata"))
        import channels, chanserv
        print(channels is chanserv)
        """
        % (str(site),),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["[]", "True"]


def test_reload_keeps_one_module(tmp_path: Path) -> None:
    """importlib.reload of a module reached through channels reloads chanserv's, under its name."""
    site = tmp_path / "site"
    alias.enable(site)
    result = python(
        """
        import importlib, site, sys
        site.addsitedir(%r)
        import channels.routing
        module = importlib.reload(channels.routing)
        print(module is sys.modules["chanserv.routing"] is sys.modules["channels.routing"], module.__name__)
        """
        % (str(site),),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True chanserv.routing"


def test_nothing_is_aliased_without_the_step(tmp_path: Path) -> None:
    """A fresh interpreter without the .pth (never enabled, or disabled) cannot import channels."""
    site = tmp_path / "site"
    code = """
        import site
        site.addsitedir(%r)
        try:
            import channels
        except ModuleNotFoundError as e:
            print("absent", e.name)
        else:
            print("present", channels.__name__)
        """ % (str(site),)
    assert python(code, cwd=tmp_path).stdout.strip() == "absent channels"
    alias.enable(site)
    assert python(code, cwd=tmp_path).stdout.strip() == "present chanserv"
    result = alias_cli("disable", "--target", str(site), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not (site / alias.PTH_NAME).exists()
    assert python(code, cwd=tmp_path).stdout.strip() == "absent channels"


def test_enable_refuses_a_real_channels_package(tmp_path: Path) -> None:
    """enable with an importable channels package: one line on stderr, exit 1, no .pth."""
    real = fake_channels_package(tmp_path / "real")
    site = tmp_path / "site"
    result = alias_cli("enable", "--target", str(site), cwd=tmp_path, extra_path=(real,))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert "refused: a real 'channels' is installed (package at %s" % (real,) in result.stderr
    assert not (site / alias.PTH_NAME).exists()


def test_enable_refuses_a_real_channels_distribution(tmp_path: Path) -> None:
    """enable with a channels distribution installed (metadata only): refused, exit 1."""
    real = tmp_path / "real"
    dist_info = real / "channels-1.1.8.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: channels\nVersion: 1.1.8\n")
    site = tmp_path / "site"
    result = alias_cli("enable", "--target", str(site), cwd=tmp_path, extra_path=(real,))
    assert result.returncode == 1
    assert "distribution channels 1.1.8" in result.stderr
    assert not (site / alias.PTH_NAME).exists()


def test_enabled_alias_refuses_at_import_a_real_channels(tmp_path: Path) -> None:
    """A real channels installed after enable: import channels raises ImportError naming both fixes."""
    site = tmp_path / "site"
    alias.enable(site)
    real = fake_channels_package(tmp_path / "real")
    result = python(
        """
        import site
        site.addsitedir(%r)
        import channels
        """
        % (str(site),),
        cwd=tmp_path,
        extra_path=(real,),
    )
    assert result.returncode == 1
    assert (
        "ImportError: chanserv's 'channels' alias is enabled, but a real 'channels'"
        in result.stderr
    )
    assert "python -m chanserv.alias disable" in result.stderr


def test_status_and_forgotten_pth(tmp_path: Path) -> None:
    """status exits 0 when enabled and 1 when not; a .pth left after chanserv is gone is harmless."""
    site = tmp_path / "site"
    assert alias_cli("status", "--target", str(site), cwd=tmp_path).returncode == 1
    alias.enable(site)
    result = alias_cli("status", "--target", str(site), cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("enabled")
    # No chanserv on the path at all (-I -S: no PYTHONPATH, no site-packages).
    isolated = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            "import site; site.addsitedir(%r); print('ok')" % (str(site),),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert (isolated.stdout, isolated.stderr) == ("ok\n", "")
