"""
:class:`Binding`, Channels 1.x's data binding: a model's creates, updates
and deletes go out to groups, and clients' create, update and delete
messages come in and change the model.  Outbound code runs in any thread
that saves or deletes an instance (a pool thread, a management command, an
admin view): the signal receivers serialise there and then, and the
``Group`` sends follow the transaction's commit (``transaction.on_commit``;
1.x sent them even for a transaction that then rolled back; directly in a
``TestCase``'s own transaction they go at once).  Inbound code runs in the
pool thread consuming the message.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, models, router, transaction
from django.db.models.signals import ModelSignal, post_delete, post_save, pre_delete, pre_save
from django.db.models.utils import make_model_tuple

from chanserv._compat.django import only_test_case_atomics
from chanserv.auth import channel_session_user
from chanserv.channel import Group
from chanserv.log import Logger
from chanserv.message import Message
from chanserv.sessions import channel_session
from chanserv.types import Content, JSONValue

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser
    from django.contrib.auth.models import AnonymousUser

__all__ = ["ACTIONS", "CREATE", "DELETE", "UPDATE", "Binding", "BindingMetaclass"]

log = Logger()

CREATE = "create"
UPDATE = "update"
DELETE = "delete"
#: The actions a binding sends and accepts.
ACTIONS = (CREATE, UPDATE, DELETE)

# The attribute of a saved or deleted instance that carries, from its pre_
# to its post_ signal, the groups each binding had it in before the change.
_GROUPS_BEFORE = "_binding_group_names"


class BindingMetaclass(type):
    """
    Checks and registers every concrete binding class when it is created:
    a bad configuration raises ``ImproperlyConfigured`` there and then, and
    the binding's signal receivers are connected as soon as its model is
    registered with Django (at once when it already is), so, unlike 1.x,
    no ``AppConfig.ready`` hook is needed.  Runs in the thread importing
    the class (usually the main thread).
    """

    #: Every concrete binding class created, in order.
    binding_classes: ClassVar[list[type[Binding]]] = []
    #: Kept for Channels 1.x code that reads it: registration is always immediate.
    register_immediately: ClassVar[bool] = True

    def __new__(mcs, name: str, bases: tuple[type, ...], body: dict[str, Any]) -> BindingMetaclass:
        # Any: a class body holds whatever the project's binding defines.
        klass = super().__new__(mcs, name, bases, body)
        if any(isinstance(base, BindingMetaclass) for base in bases):
            binding: Any = klass
            if not binding.is_abstract():
                binding.check_configuration()
                mcs.binding_classes.append(binding)
                binding.register()
        return klass

    @classmethod
    def register_all(mcs) -> None:
        """Register every binding class (idempotent; 1.x's ready-time hook)."""
        for binding_class in mcs.binding_classes:
            binding_class.register()


class Binding(metaclass=BindingMetaclass):
    """
    A two-way binding between a Django model and groups of channels.

    Outbound (model to groups) needs :meth:`group_names`, :meth:`serialize`
    and :meth:`encode`.  For a save, :meth:`pre_change_receiver` notes the
    groups the *stored* row was in and :meth:`post_change_receiver` compares
    them with the groups the saved instance is in now: the groups it left get
    a ``delete``, those it stays in an ``update``, those it joined a
    ``create`` (1.x read the "before" groups from the instance already
    changed in memory, so an instance moved between groups never left the
    old one).  Messages are built in the saving thread and sent when the
    transaction commits -- at once in autocommit; in a Django ``TestCase``
    use ``captureOnCommitCallbacks(execute=True)`` or
    :class:`~chanserv.test.TransactionChannelTestCase`.

    Inbound (messages to model) needs :meth:`deserialize`,
    :meth:`has_permission`, :meth:`create` and :meth:`update`; route
    :meth:`consumer` (a demultiplexer's ``consumers`` entry).

    Class attributes: :attr:`model` (a model class or ``"app_label.Model"``;
    ``None`` in the class body makes an abstract binding), :attr:`fields`
    (names, or ``["__all__"]``) or :attr:`exclude`, :attr:`stream`, and the
    decorators :attr:`channel_session_user` (default) and
    :attr:`channel_session`.

    :raises ImproperlyConfigured: at class creation, for a concrete binding
        with no model, neither fields nor exclude, or malformed ones.
    """

    #: The model, or "app_label.ModelName" (replaced by the class once loaded).
    model: ClassVar[type[models.Model] | str | None] = None
    #: "app_label.modelname", set when the model is loaded.
    model_label: ClassVar[str]
    #: The fields sent and accepted; ``["__all__"]`` for every field.
    fields: ClassVar[Sequence[str] | None] = None
    #: The fields never sent nor accepted (when :attr:`fields` is not set).
    exclude: ClassVar[Sequence[str] | None] = None
    #: The name the protocol sends the binding's messages under.
    stream: ClassVar[str | None] = None

    channel_session_user: ClassVar[bool] = True
    channel_session: ClassVar[bool] = False

    # Any: Django's signal keyword arguments (created, raw, using, update_fields, origin...).
    #: The keyword arguments of the signal being handled (outbound).
    signal_kwargs: dict[str, Any] | None = None

    instance: models.Model
    message: Message
    kwargs: dict[str, Any]
    # Any: the route's and the demultiplexer's keyword arguments, as in Channels 1.x.
    action: str
    pk: JSONValue
    data: JSONValue
    user: AbstractBaseUser | AnonymousUser

    # -- configuration -------------------------------------------------------------

    @classmethod
    def is_abstract(cls) -> bool:
        """True when the class body itself sets ``model = None`` (a base to subclass)."""
        return cls.model is None and "model" in cls.__dict__

    @classmethod
    def check_configuration(cls) -> None:
        """
        Check the class attributes of a concrete binding; called at class creation.

        :raises ImproperlyConfigured: no model, neither fields nor exclude,
            or fields/exclude that are not lists of field names.
        """
        name = cls.__qualname__
        model = cls.model
        if model is None:
            raise ImproperlyConfigured(
                "Binding %s has no model: set model to a model class or 'app_label.ModelName' "
                "(or model = None in the class body for an abstract binding)" % (name,)
            )
        if not isinstance(model, str) and not (
            isinstance(model, type) and issubclass(model, models.Model)
        ):
            raise ImproperlyConfigured(
                "Binding %s: model must be a model class or 'app_label.ModelName', not %r"
                % (name, model)
            )
        if cls.fields is None and cls.exclude is None:
            raise ImproperlyConfigured(
                "Binding %s sets neither fields nor exclude: list the fields to send "
                "(fields = ['__all__'] for every one) or the ones to keep back" % (name,)
            )
        for attribute in ("fields", "exclude"):
            value = getattr(cls, attribute)
            if value is None:
                continue
            if isinstance(value, str) and not (attribute == "fields" and value == "__all__"):
                raise ImproperlyConfigured(
                    "Binding %s: %s must be a list of field names, not the string %r"
                    % (name, attribute, value)
                )
            if not all(isinstance(field, str) for field in value):
                raise ImproperlyConfigured(
                    "Binding %s: %s must hold field names (str)" % (name, attribute)
                )
        if cls.fields is not None and not cls.all_fields() and "__all__" in cls.fields:
            raise ImproperlyConfigured(
                "Binding %s: '__all__' cannot be listed with other fields" % (name,)
            )

    @classmethod
    def all_fields(cls) -> bool:
        """True when :attr:`fields` is ``"__all__"`` or ``["__all__"]`` (any sequence)."""
        fields = cls.fields
        if fields is None:
            return False
        return fields == "__all__" or list(fields) == ["__all__"]

    @classmethod
    def field_allowed(cls, field: str | models.Field[Any, Any]) -> bool:
        # Any: a model field of any value type.
        """
        Whether ``field`` (a name, or a model field known by its name and
        attname) is sent, and may be set by clients.
        """
        names = {field} if isinstance(field, str) else {field.name, field.attname}
        if cls.fields is not None:
            return cls.all_fields() or not names.isdisjoint(cls.fields)
        return names.isdisjoint(cls.exclude or ())

    @classmethod
    def register(cls) -> None:
        """
        Connect the binding to its model's ``pre_save``, ``post_save``,
        ``pre_delete`` and ``post_delete`` signals once the model is loaded
        (at once if it is).  Idempotent.

        :raises ImproperlyConfigured: when the model loads: fields or exclude
            name a field the model does not have.
        """
        if cls.is_abstract():
            return
        assert cls.model is not None
        try:
            key = make_model_tuple(cls.model)
        except ValueError as e:
            raise ImproperlyConfigured("Binding %s: %s" % (cls.__qualname__, e)) from e
        apps.lazy_model_operation(cls._model_loaded, key)

    @classmethod
    def _receivers(cls) -> list[tuple[ModelSignal, Callable[..., None], str]]:
        uid = "chanserv.binding:%s.%s:%x" % (cls.__module__, cls.__qualname__, id(cls))
        return [
            (pre_save, cls.pre_save_receiver, uid + ":pre_save"),
            (post_save, cls.post_save_receiver, uid + ":post_save"),
            (pre_delete, cls.pre_delete_receiver, uid + ":pre_delete"),
            (post_delete, cls.post_delete_receiver, uid + ":post_delete"),
        ]

    @classmethod
    def _model_loaded(cls, model: type[models.Model]) -> None:
        cls.model = model
        cls.model_label = "%s.%s" % (model._meta.app_label.lower(), model._meta.model_name)
        known: set[str] = set()
        for field in model._meta.fields + model._meta.many_to_many:
            known.update((field.name, field.attname))
        named = [] if cls.all_fields() else list(cls.fields or ()) + list(cls.exclude or ())
        unknown = sorted(set(named) - known)
        if unknown:
            raise ImproperlyConfigured(
                "Binding %s: %s has no field %s"
                % (cls.__qualname__, cls.model_label, ", ".join(unknown))
            )
        # Strong references: a binding class works as long as the process
        # runs (1.x kept every class in a list), unless unregistered.
        for signal, receiver, uid in cls._receivers():
            signal.connect(receiver, sender=model, weak=False, dispatch_uid=uid)

    @classmethod
    def unregister(cls) -> None:
        """Disconnect the binding from its model's signals (tests, reloads)."""
        if isinstance(cls.model, type):
            for signal, _receiver, uid in cls._receivers():
                signal.disconnect(sender=cls.model, dispatch_uid=uid)
        if cls in BindingMetaclass.binding_classes:
            BindingMetaclass.binding_classes.remove(cls)

    # -- outbound: any thread that saves or deletes ----------------------------------

    @classmethod
    def encode(cls, stream: str | None, payload: Content) -> Content:
        """The message that carries ``payload`` on ``stream`` to the groups."""
        raise NotImplementedError()

    @classmethod
    def pre_save_receiver(cls, instance: models.Model, **kwargs: Any) -> None:
        # Any: Django's pre_save keyword arguments.
        """``pre_save``: note the groups before the change."""
        action = CREATE if instance._state.adding else UPDATE
        cls.pre_change_receiver(instance, action, using=kwargs.get("using"))

    @classmethod
    def post_save_receiver(cls, instance: models.Model, created: bool, **kwargs: Any) -> None:
        # Any: Django's post_save keyword arguments.
        """``post_save``: send to the groups."""
        cls.post_change_receiver(instance, CREATE if created else UPDATE, **kwargs)

    @classmethod
    def pre_delete_receiver(cls, instance: models.Model, **kwargs: Any) -> None:
        # Any: Django's pre_delete keyword arguments.
        """``pre_delete``: note the groups before the delete."""
        cls.pre_change_receiver(instance, DELETE, using=kwargs.get("using"))

    @classmethod
    def post_delete_receiver(cls, instance: models.Model, **kwargs: Any) -> None:
        # Any: Django's post_delete keyword arguments.
        """``post_delete``: send the delete to the groups."""
        cls.post_change_receiver(instance, DELETE, **kwargs)

    @classmethod
    def pre_change_receiver(
        cls, instance: models.Model, action: str, using: str | None = None
    ) -> None:
        """
        Note, on ``instance``, the groups it is in before the change: none
        for a create; for an update those of the row as stored in database
        ``using`` (one query: the instance in memory already has the new
        values); for a delete those of the instance being deleted.
        """
        if action == CREATE:
            before: set[str] = set()
        elif action == UPDATE:
            stored = cls._stored(instance, using)
            before = set(cls.group_names(stored)) if stored is not None else set()
        else:
            before = set(cls.group_names(instance))
        instance.__dict__.setdefault(_GROUPS_BEFORE, {})[cls] = before

    @classmethod
    def _stored(cls, instance: models.Model, using: str | None) -> models.Model | None:
        if instance.pk is None:
            return None
        model = type(instance)
        alias = using or router.db_for_read(model, instance=instance)
        return model._base_manager.using(alias).filter(pk=instance.pk).first()

    @classmethod
    def post_change_receiver(cls, instance: models.Model, action: str, **kwargs: Any) -> None:
        # Any: Django's signal keyword arguments, kept as signal_kwargs.
        """
        Send ``delete`` to the groups the instance left, ``update`` to those
        it stayed in and ``create`` to those it joined (in that order, as
        Django DDP did), once the transaction commits.  Runs in the thread
        that saved or deleted the instance -- any thread: a pool thread, a
        management command, an admin view's request thread.  A row the save
        inserted counts as new everywhere, whatever ``pre_save`` guessed.
        """
        pending = instance.__dict__.get(_GROUPS_BEFORE, {})
        noted = pending.pop(cls, None)
        if not pending:
            instance.__dict__.pop(_GROUPS_BEFORE, None)
        after = set() if action == DELETE else set(cls.group_names(instance))
        if action == CREATE:
            before = set()  # a row just inserted was in nobody's view
        elif noted is not None:
            before = noted
        else:  # connected between this change's pre_ and post_ signals
            before = set(cls.group_names(instance)) if action == DELETE else after
        self = cls()
        self.instance = instance
        self.send_messages(instance, before - after, DELETE, **kwargs)
        self.send_messages(instance, before & after, UPDATE, **kwargs)
        self.send_messages(instance, after - before, CREATE, **kwargs)

    def send_messages(
        self, instance: models.Model, group_names: Iterable[str], action: str, **kwargs: Any
    ) -> None:
        # Any: Django's signal keyword arguments, kept as signal_kwargs.
        """
        Serialise ``instance`` for ``action`` now (a deleted instance still
        has its pk) and send it to ``group_names`` when the transaction of
        database ``kwargs["using"]`` commits.  A :meth:`serialize` that
        returns ``{}`` sends nothing.

        :raises TypeError: a group name is invalid (raised here, in the
            saving thread, not at commit).
        """
        groups = [Group(name) for name in sorted(group_names)]
        if not groups:
            return
        self.signal_kwargs = kwargs
        payload = self.serialize(instance, action)
        if payload == {}:
            return
        message = self.encode(self.stream, payload)
        for group in groups:
            group.channel_layer.valid_group_name(group.name)
        send = functools.partial(_send_to_groups, groups, message)
        using = kwargs.get("using") or DEFAULT_DB_ALIAS
        if only_test_case_atomics(using):
            # Directly inside a TestCase's own transaction, which is rolled
            # back, never committed: send now, as 1.x did, so tests written
            # for 1.x see the message.
            send()
        else:
            transaction.on_commit(send, using=using)

    @classmethod
    def group_names(cls, instance: models.Model) -> Iterable[str]:
        """The names of the groups that see ``instance``."""
        raise NotImplementedError()

    def serialize(self, instance: models.Model, action: str) -> Content:
        """The payload for ``action`` on ``instance`` (``{}``: send nothing)."""
        raise NotImplementedError()

    # -- inbound: the pool thread consuming the message --------------------------------

    @classmethod
    def trigger_inbound(cls, message: Message, **kwargs: Any) -> None:
        # Any: the route's and the demultiplexer's keyword arguments, as in Channels 1.x.
        """
        The consumer proper: :meth:`deserialize` the message and run its
        action as ``message.user`` (``AnonymousUser`` when there is none).
        """
        from django.contrib.auth.models import AnonymousUser

        self = cls()
        self.message = message
        self.kwargs = kwargs
        self.action, self.pk, self.data = self.deserialize(message)
        self.user = getattr(message, "user", None) or AnonymousUser()
        self.run_action(self.action, self.pk, self.data)

    @classmethod
    def get_handler(cls) -> Callable[..., None]:
        """:meth:`trigger_inbound` with the session decorators the class asks for."""
        handler = cls.trigger_inbound
        if cls.channel_session_user:
            return channel_session_user(handler)
        if cls.channel_session:
            return channel_session(handler)
        return handler

    @classmethod
    def consumer(cls, message: Message, **kwargs: Any) -> None:
        # Any: the route's and the demultiplexer's keyword arguments, as in Channels 1.x.
        """The consumer to route, or to list in a demultiplexer's ``consumers``."""
        cls.get_handler()(message, **kwargs)

    def deserialize(self, message: Message) -> tuple[str, JSONValue, JSONValue]:
        """``(action, pk, data)`` from the message: pk None on create, data None on delete."""
        raise NotImplementedError()

    def has_permission(
        self, user: AbstractBaseUser | AnonymousUser, action: str, pk: JSONValue
    ) -> bool:
        """Whether ``user`` (maybe ``AnonymousUser``) may do ``action`` on ``pk``."""
        raise NotImplementedError()

    def run_action(self, action: str, pk: JSONValue, data: JSONValue) -> None:
        """
        Do ``action`` if :meth:`has_permission` allows it (a refusal is
        logged and changes nothing).

        :raises ValueError: ``action`` is none of create, update, delete.
        """
        if action not in ACTIONS:
            raise ValueError("Bad action %r: expected one of %s" % (action, ", ".join(ACTIONS)))
        if not self.has_permission(self.user, action, pk):
            log.info(
                "{binding} refused {action} of pk {pk!r} to {user}",
                binding=type(self).__qualname__,
                action=action,
                pk=pk,
                user=self.user,
            )
            return
        if action == CREATE:
            self.create(data)
        elif action == UPDATE:
            self.update(pk, data)
        else:
            self.delete(pk)

    def create(self, data: JSONValue) -> None:
        """Create an instance from ``data``."""
        raise NotImplementedError()

    def update(self, pk: JSONValue, data: JSONValue) -> None:
        """Apply ``data`` to the instance ``pk``."""
        raise NotImplementedError()

    def delete(self, pk: JSONValue) -> None:
        """Delete the instance ``pk`` (its delete signals fire, so it goes outbound)."""
        model: Any = self.model
        model._default_manager.filter(pk=pk).delete()


def _send_to_groups(groups: Sequence[Group], message: Content) -> None:
    """
    Send ``message`` to ``groups``: runs in the committing thread, so a
    failure is logged (the change is committed; raising would only break
    the caller's commit) and the other groups still get it.
    """
    for group in groups:
        try:
            group.send(message)
        except Exception:
            log.failure("A binding message to group {group} could not be sent", group=group.name)
