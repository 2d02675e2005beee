"""
chanserv.utils.name_that_thing: Channels 1.x's naming of consumers, classes
and layers, with its Python 3 failures (bound methods, mocks) fixed.
"""

from __future__ import annotations

from typing import Any
from unittest import mock

from chanserv.asgi import ChannelLayerWrapper
from chanserv.layers import InMemoryChannelLayer
from chanserv.utils import name_that_thing


def consumer(message: Any) -> None:
    """A module-level consumer."""


class Consumer:
    """A class-based consumer."""

    def __call__(self, message: Any) -> None:
        """Called per message."""

    def connect(self, message: Any) -> None:
        """A handler method."""

    @classmethod
    def as_route(cls) -> None:
        """A classmethod."""

    class Inner:
        """A nested class."""


class SubConsumer(Consumer):
    """Inherits connect."""


def test_functions_and_classes_are_module_qualname() -> None:
    """Functions and classes are named module.qualname, nested ones included."""
    assert name_that_thing(consumer) == "tests.test_utils.consumer"
    assert name_that_thing(Consumer) == "tests.test_utils.Consumer"
    assert name_that_thing(Consumer.Inner) == "tests.test_utils.Consumer.Inner"

    def local() -> None:
        pass

    assert name_that_thing(local) == (
        "tests.test_utils.test_functions_and_classes_are_module_qualname.<locals>.local"
    )


def test_instances_are_named_after_their_class() -> None:
    """A callable consumer object and a layer are named after their class, as in 1.x."""
    assert name_that_thing(Consumer()) == "tests.test_utils.Consumer"
    assert name_that_thing(InMemoryChannelLayer()) == (
        "chanserv.layers.inmemory.InMemoryChannelLayer"
    )


def test_bound_methods_are_named_after_the_instance_class() -> None:
    """A bound method (1.x raised AttributeError) is Class.method of its instance's class."""
    assert name_that_thing(Consumer().connect) == "tests.test_utils.Consumer.connect"
    assert name_that_thing(SubConsumer().connect) == "tests.test_utils.SubConsumer.connect"
    assert name_that_thing(Consumer.as_route) == "tests.test_utils.Consumer.as_route"


def test_builtins_keep_their_names() -> None:
    """Builtin functions and builtin bound methods get their own names, not their type's."""
    assert name_that_thing(len) == "builtins.len"
    assert name_that_thing([].append) == "builtins.list.append"
    assert name_that_thing(3) == "builtins.int"


def test_mocks_are_named_mock_spec_or_not() -> None:
    """Every mock is "<mock>", a spec'd one too (1.x named it after its spec's class)."""
    assert name_that_thing(mock.Mock()) == "<mock>"
    assert name_that_thing(mock.MagicMock()) == "<mock>"
    assert name_that_thing(mock.Mock(spec=consumer)) == "<mock>"
    assert name_that_thing(mock.NonCallableMock(spec=Consumer)) == "<mock>"
    assert name_that_thing(mock.Mock().method) == "<mock>"


def test_wrapper_str_names_the_layer_class() -> None:
    """ChannelLayerWrapper's str is "alias (layer class)", through name_that_thing."""
    wrapper = ChannelLayerWrapper(InMemoryChannelLayer(), "default", [])
    assert str(wrapper) == "default (chanserv.layers.inmemory.InMemoryChannelLayer)"
