"""
:class:`BaseConsumer`, the root of the class-based consumers: instantiated
once per message, it dispatches the message to the method its
``method_mapping`` names for the channel.  Pool threads only: everything
runs in the worker thread that consumes the message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from chanserv.auth import channel_session_user
from chanserv.message import Message
from chanserv.routing import RouteClass, route_class
from chanserv.sessions import channel_session

__all__ = ["BaseConsumer"]


class BaseConsumer:
    """
    A consumer class, instantiated (and run) for each message, in the pool
    thread consuming it: the constructor dispatches the message to the
    method :attr:`method_mapping` names for its channel.

    :param message: the :class:`~chanserv.message.Message` being consumed,
        kept as :attr:`message`.
    :param kwargs: the routing's keyword arguments (named groups of the
        filters), kept as :attr:`kwargs` and passed on to the handler.
    :raises ValueError: the message's channel is not in
        :attr:`method_mapping`.

    Class attributes:

    - :attr:`method_mapping`: ``{channel name: method name}``; its keys are
      the channels the class is routed on (:meth:`channel_names`);
    - :attr:`channel_session`: wrap the handler in
      :func:`chanserv.sessions.channel_session`;
    - :attr:`channel_session_user`: wrap it in
      :func:`chanserv.auth.channel_session_user` (which includes the
      channel session).
    """

    method_mapping: ClassVar[Mapping[str, str]] = {}
    channel_session: bool = False
    channel_session_user: bool = False

    def __init__(self, message: Message, **kwargs: Any) -> None:
        # Any: consumer keyword arguments (the route's captured groups and whatever the
        # project's code passes) go to the project's handlers unchanged, as in Channels 1.x.
        self.message = message
        self.kwargs = kwargs
        self.dispatch(message, **kwargs)

    @classmethod
    def channel_names(cls) -> set[str]:
        """The channels this class consumes: the keys of :attr:`method_mapping`."""
        return set(cls.method_mapping)

    @classmethod
    def as_route(cls, attrs: Mapping[str, Any] | None = None, **filters: Any) -> RouteClass:
        # Any: attrs are class attributes of the project's choosing; filters are route filters,
        # checked by compile_filters at run time (Channels 1.x API).
        """
        A :func:`~chanserv.routing.route_class` for this class, or -- with
        ``attrs`` -- for a subclass of the same name with those class
        attributes: ``ChatConsumer.as_route(attrs={"strict_ordering": True},
        path=r"^/chat/")``.

        :raises TypeError: ``attrs`` is not a dict.
        """
        consumer: type[BaseConsumer] = cls
        if attrs:
            if not isinstance(attrs, Mapping):
                raise TypeError("as_route(attrs=...) must be a dict, not %r" % (attrs,))
            namespace = {"__module__": cls.__module__, "__qualname__": cls.__qualname__}
            namespace.update(attrs)
            consumer = type(cls.__name__, (cls,), namespace)
        return route_class(consumer, **filters)

    def get_handler(self, message: Message, **kwargs: Any) -> Callable[..., Any]:
        # Any: consumer keyword arguments (the route's captured groups and whatever the
        # project's code passes) go to the project's handlers unchanged, as in Channels 1.x.
        # A handler's signature and result are the project's own.
        """
        The callable that consumes ``message``: the bound method named by
        :attr:`method_mapping` for the message's channel, wrapped in the
        session decorators the flags ask for.  Subclasses wrap it further.

        :raises ValueError: no method is mapped for the channel.
        """
        name = message.channel.name
        try:
            method_name = self.method_mapping[name]
        except KeyError:
            raise ValueError(
                "%s has no handler for channel %r; its method_mapping covers %s"
                % (type(self).__name__, name, ", ".join(sorted(self.method_mapping)) or "nothing")
            ) from None
        handler: Callable[..., Any] = getattr(self, method_name)
        if self.channel_session_user:
            return channel_session_user(handler)
        if self.channel_session:
            return channel_session(handler)
        return handler

    def dispatch(self, message: Message, **kwargs: Any) -> Any:
        # Any: consumer keyword arguments (the route's captured groups and whatever the
        # project's code passes) go to the project's handlers unchanged, as in Channels 1.x.
        # A handler's signature and result are the project's own.
        """Run the handler of ``message`` with ``kwargs``; return its result."""
        return self.get_handler(message, **kwargs)(message, **kwargs)
