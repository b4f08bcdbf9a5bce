"""``Decorator``: an exchange type that wraps another routing type, named by one of its
arguments, as RabbitMQ's delayed-message exchange wraps the type in ``x-delayed-type``.

The decorator is the exchange the vhost knows (its name, bindings, store row); ``inner`` is
an instance of the wrapped type that shares its ``bindings`` dict and keeps the routing
index.  A subclass overrides ``route(msg, keys)``: return ``self.inner.route(msg, keys)`` to
route now, ``DEFERRED`` after keeping the message (``self.release(msg)`` routes it later,
from a ``self.vhost.scheduler`` call, say), or ``DROPPED`` to discard it on purpose.  The
delayed exchange (``inner_type_arg = "x-delayed-type"``) of issue 10 is such a subclass;
``delete`` is where it cancels what it scheduled.  (The deduplicating exchanges are a
mixin in front of a type instead: dedupex.py.)"""
from __future__ import annotations

from .. import errors
from .base import Exchange


class Decorator(Exchange):
    type = ""
    inner_type_arg = ""  # the argument naming the wrapped type, e.g. "x-delayed-type"

    def __init__(self, name: str, durable: bool = True, auto_delete: bool = False,
                 internal: bool = False, arguments: dict | None = None):
        super().__init__(name, durable, auto_delete, internal, arguments)
        from . import exchange_type  # the registry (this module is imported by it)
        inner_cls = exchange_type(self.arguments.get(self.inner_type_arg))
        if inner_cls is None or issubclass(inner_cls, Decorator):
            # validate() refuses this at declare; a store row is checked at recovery
            raise errors.PreconditionFailed(self._bad_inner())
        self.inner = inner_cls(name, durable, auto_delete, internal, self.arguments)
        self.inner.bindings = self.bindings  # one set of bindings, the inner's index
        self.vhost = None

    @classmethod
    def _bad_inner(cls) -> str:
        return f"Invalid argument, '{cls.inner_type_arg}' must be an existing exchange type"

    @property
    def compared_args(self) -> tuple[str, ...]:
        return Exchange.compared_args + (self.inner_type_arg,)

    @classmethod
    def validate(cls, args: dict, where: str) -> None:
        super().validate(args, where)
        from . import exchange_type
        inner = args.get(cls.inner_type_arg)
        inner_cls = exchange_type(inner) if isinstance(inner, str) else None
        if inner_cls is None or issubclass(inner_cls, Decorator):
            raise errors.PreconditionFailed(cls._bad_inner())
        inner_cls.validate(args, where)

    def validate_binding(self, routing_key, arguments):
        self.inner.validate_binding(routing_key, arguments)

    def create(self, vhost) -> None:
        self.vhost = vhost
        self.inner.create(vhost)

    def delete(self, vhost) -> None:
        self.inner.delete(vhost)

    def _added(self, b):
        self.inner.e2e = self.e2e  # release() routes from the inner: it takes no fast path
        self.inner._added(b)

    def _removed(self, b):
        self.inner.e2e = self.e2e
        self.inner._removed(b)

    def route(self, msg, keys):
        return self.inner.route(msg, keys)

    def release(self, msg):
        """Route a message this exchange deferred, now, through the wrapped type (its
        exchange-to-exchange bindings and alternate exchange too), and enqueue it.  Returns
        the vhost's ``publish`` result; nothing once the exchange is deleted."""
        if self.deleted or self.vhost is None:
            return None
        return self.vhost.publish(self.inner, msg)
