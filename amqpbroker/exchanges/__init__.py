"""Exchange types: a registry keyed by type name, used by declare (vhost), config
validation and recovery.  ``register(cls)`` adds a type (a subclass of ``Exchange``, or of
``Decorator`` for one that wraps another type), ``unregister(name)`` removes it,
``exchange_type(name)`` looks it up (None if unknown), ``EXCHANGE_TYPES`` is the mapping.
``exchange_class(name, arguments)`` is the class an exchange declared with those arguments
gets: a boolean argument registered in ``VARIANTS`` (LavinMQ's ``x-delayed-exchange: true``)
turns any type into a variant of it.  Routing one message is ``routing.route``."""
from __future__ import annotations

from .base import DEFERRED, DROPPED, Binding, Exchange, Outcome, Route, deferred

EXCHANGE_TYPES: dict[str, type[Exchange]] = {}
# argument -> make(cls): the class of an exchange of type ``cls`` declared with that
# argument true (registered by the module that implements it: delayed.py)
VARIANTS: dict[str, object] = {}


def register(cls: type[Exchange]) -> type[Exchange]:
    """Add an exchange type under ``cls.type`` (usable as a class decorator)."""
    if not cls.type:
        raise ValueError(f"{cls.__name__} has no type name")
    if EXCHANGE_TYPES.get(cls.type, cls) is not cls:
        raise ValueError(f"exchange type {cls.type!r} is already registered")
    EXCHANGE_TYPES[cls.type] = cls
    return cls


def unregister(name: str) -> None:
    EXCHANGE_TYPES.pop(name, None)


def exchange_type(name) -> type[Exchange] | None:
    return EXCHANGE_TYPES.get(name) if isinstance(name, str) else None


def exchange_class(name, arguments: dict) -> type[Exchange] | None:
    """The class to instantiate for a declare (or a recovered row) of type ``name``."""
    cls = exchange_type(name)
    if cls is not None and arguments:
        for arg, make in VARIANTS.items():
            if arguments.get(arg) is True:
                cls = make(cls)
    return cls


# the built-in types, in the order config texts list them (imported after the registry's
# functions: decorator.py looks the wrapped type up through them)
from .decorator import Decorator  # noqa: E402
from .default import DefaultExchange  # noqa: E402
from .direct import DirectExchange  # noqa: E402
from .fanout import FanoutExchange  # noqa: E402
from .headers import HeadersExchange, header_value_equal, headers_match  # noqa: E402
from .topic import TopicExchange, split_topic, topic_match  # noqa: E402

for _cls in (DirectExchange, FanoutExchange, TopicExchange, HeadersExchange):
    register(_cls)

__all__ = ["DEFERRED", "DROPPED", "EXCHANGE_TYPES", "VARIANTS", "Binding", "Decorator",
           "DefaultExchange", "deferred", "exchange_class",
           "DirectExchange", "Exchange", "FanoutExchange", "HeadersExchange", "Outcome",
           "Route", "TopicExchange", "exchange_type", "header_value_equal", "headers_match",
           "register", "split_topic", "topic_match", "unregister"]
