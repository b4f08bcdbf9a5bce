"""The exchange-type protocol: ``Exchange`` (one instance per exchange, its class is the
type), ``Binding``, and ``Route``, what routing one message gives.  No pamqp here: a type
sees the ``Message`` (routing key, decoded headers on demand), never frames.

A type is a subclass of ``Exchange`` registered by name (``exchanges.register``).  Its hooks,
as RabbitMQ's rabbit_exchange_type callbacks:

- ``validate(args, where)`` (classmethod): at declare, before the exchange exists (406);
- ``assert_args_equivalence(args, arg_types, where, compare)``: at redeclare;
- ``validate_binding(routing_key, args)``: at bind (406);
- ``create(vhost)`` / ``delete(vhost)``: the exchange now exists in / has left ``vhost``
  (declared or recovered; deleted);
- ``_added(b)`` / ``_removed(b)``: keep the routing index, one binding at a time;
- ``route(msg, keys)``: the destinations for one message (queues or exchanges, each once
  for one key), or the outcome ``DEFERRED`` / ``DROPPED``.
"""
from __future__ import annotations

from .. import errors
from ..metrics import ExchangeCounters
from .filtered import Filtered, binding_policy


def _canon(value):
    """A hashable, comparable form of a binding-argument value (tables and arrays nest)."""
    if isinstance(value, dict):
        return tuple(sorted((k, _canon(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_canon(v) for v in value)
    return (type(value).__name__ if isinstance(value, bool) else "", value)


class Outcome:
    """A routing outcome without destinations that still counts as routed, for
    ``mandatory`` and for confirms: the type took the message (``DEFERRED``: kept to be
    routed later, as the delayed exchange; ``DROPPED``: discarded on purpose).  The
    deduplicating exchanges (dedupex.py) return one with a ticket for a duplicate (the
    first one's entry) and for a message they routed themselves (its queues' and its
    entry's tickets joined)."""

    __slots__ = ("name", "ticket")

    def __init__(self, name: str, ticket=None):
        self.name = name
        # a DEFERRED outcome's confirm ticket (confirms.py): when what the type kept is
        # safe (True: now; a store generation: a stored delayed message); None: DROPPED
        self.ticket = ticket

    def __repr__(self) -> str:
        return self.name


DEFERRED = Outcome("DEFERRED", True)
DROPPED = Outcome("DROPPED")


def deferred(ticket) -> Outcome:
    """DEFERRED with a confirm ticket other than "safe now" (a stored delayed message)."""
    return DEFERRED if ticket is True else Outcome("DEFERRED", ticket)


class Route(list):
    """What routing one message gave: the queues it reaches, each once (the list itself;
    ``queues`` is the same), and whether some exchange on the way deferred or dropped it
    (``deferred``: False, or the confirm ticket of what was kept, truthy).
    True when the message counts as routed (it reached a queue, or a type took it): a false
    Route is what ``mandatory`` returns.  A list, so that the usual case costs what a list
    costs (truth by length, no Python-level ``__bool__``); a plain list of queues is a Route
    without outcome, which the vhost's default-exchange fast path gives."""

    __slots__ = ()
    deferred = False
    dropped = False

    @property
    def queues(self) -> list:
        return self

    @staticmethod
    def taken(queues, deferred: bool, dropped: bool) -> "Route":
        """A Route with an outcome: true even without queues."""
        r = _Taken(queues)
        r.deferred, r.dropped = deferred, dropped
        return r

    def __repr__(self) -> str:
        extra = "".join(f", {k}" for k in ("deferred", "dropped") if getattr(self, k))
        return f"Route({[getattr(q, 'name', q) for q in self]}{extra})"


class _Taken(Route):
    __slots__ = ("deferred", "dropped")

    def __bool__(self) -> bool:
        return True


# the class of a Route with an outcome: the vhost tests ``type(route) is Taken`` on every
# routed publish (a class attribute read through a slotted instance costs ~300 instructions
# in CPython 3.11, the type test ~50)
Taken = _Taken


class Binding:
    """``target``: what the type's index holds and routing gives for this binding: the
    destination, or a ``filtered.Filtered`` for a binding with a filter policy (then
    ``view``, a copy whose destination is that, is what ``_added``/``_removed`` see)."""
    __slots__ = ("source", "destination", "routing_key", "arguments", "key", "target",
                 "view")

    def __init__(self, source, destination, routing_key: str, arguments: dict):
        self.source = source
        self.destination = destination  # a Queue or an Exchange
        self.routing_key = routing_key
        self.arguments = arguments or {}
        self.key = (id(destination), routing_key, _canon(self.arguments))
        self.target = destination
        self.view = self


class Exchange:
    """``bindings``: this exchange the source, by binding key.  ``incoming``: bindings with
    this exchange the destination (exchange-to-exchange), as an ordered set; a queue's
    ``bindings`` is the same for the queue.  ``e2e``: how many of ``bindings`` go to an
    exchange or have a filter policy (routing takes a shorter path without them).  Every change is O(1) plus the
    type's index."""
    type = ""
    # the arguments a redeclare must repeat (RabbitMQ compares only alternate-exchange;
    # LavinMQ's x-delayed-exchange and x-message-deduplication change what the exchange
    # does, so they are compared too)
    compared_args: tuple[str, ...] = ("alternate-exchange", "x-delayed-exchange",
                                      "x-message-deduplication")

    def __init__(self, name: str, durable: bool = True, auto_delete: bool = False,
                 internal: bool = False, arguments: dict | None = None):
        self.name = name
        self.durable = durable
        self.auto_delete = auto_delete
        self.internal = internal
        self.arguments = arguments or {}
        self.arg_types: dict[str, str] = {}  # wire types of the arguments, for texts
        self.bindings: dict[tuple, Binding] = {}  # key -> binding, this exchange the source
        self.incoming: dict[Binding, None] = {}   # bindings to this exchange
        self.e2e = 0
        self.deleted = False
        self.counters = ExchangeCounters()  # counted by the channels that publish here
        self.policy = None                  # the policy that applies (policies.py)

    @property
    def alternate_exchange(self) -> str | None:
        ae = self.arguments.get("alternate-exchange")  # the argument wins over a policy's
        if ae is None and self.policy is not None:
            ae = self.policy.definition.get("alternate-exchange")
        return ae if isinstance(ae, str) else None

    # ------------------------------------------------------------------ type hooks

    @classmethod
    def validate(cls, args: dict, where: str) -> None:
        """Refuse, at declare, arguments this type cannot work with (406).  ``where``:
        "for exchange 'x' in vhost '/'", for the texts."""
        ae = args.get("alternate-exchange")
        if ae is not None and not isinstance(ae, str):
            raise errors.PreconditionFailed(f"invalid arg 'alternate-exchange' {where}")

    def assert_args_equivalence(self, args: dict, arg_types: dict, where: str,
                                compare) -> None:
        """A redeclare with ``args``: 406 unless they agree with ours on ``compared_args``.
        ``compare(key, where, new, new_type, cur, cur_type)`` raises for one argument
        (the vhost's, RabbitMQ's rabbit_misc:assert_args_equivalence)."""
        for key in self.compared_args:
            compare(key, where, args.get(key), arg_types.get(key), self.arguments.get(key),
                    self.arg_types.get(key))

    def validate_binding(self, routing_key: str, arguments: dict) -> None:
        """Refuse a binding this type cannot route by (406)."""

    def create(self, vhost) -> None:
        """The exchange now exists in ``vhost`` (declared, predeclared or recovered)."""

    def delete(self, vhost) -> None:
        """The exchange has been deleted from ``vhost`` (its bindings are gone too)."""

    def _added(self, b: Binding) -> None:
        """Update the routing index for one new binding."""

    def _removed(self, b: Binding) -> None:
        """Update the routing index for one removed binding."""

    def route(self, msg, keys):
        """The destinations of ``msg`` for its routing ``keys`` (a sequence of strings):
        an iterable of queues and exchanges, each once for one key (routing removes the
        repeats across keys and exchanges), or ``DEFERRED`` / ``DROPPED``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ bindings

    def add(self, b: Binding) -> bool:
        """Add a binding (and to its destination's set); False if it exists."""
        if b.key in self.bindings:
            return False
        self.validate_binding(b.routing_key, b.arguments)
        dest = b.destination
        policy = binding_policy(b.arguments) if b.arguments else None
        if policy is not None:
            # the type indexes a Filtered in place of the destination; routing checks it
            b.target = Filtered(dest, policy)
            v = b.view = Binding.__new__(Binding)
            v.source, v.destination, v.routing_key = b.source, b.target, b.routing_key
            v.arguments, v.key, v.target, v.view = b.arguments, b.key, b.target, v
        self.bindings[b.key] = b
        if isinstance(dest, Exchange):
            dest.incoming[b] = None
        else:
            dest.bindings[b] = None
        if policy is not None or isinstance(dest, Exchange):
            self.e2e += 1
        self._added(b.view)
        return True

    def remove(self, key: tuple) -> Binding | None:
        b = self.bindings.pop(key, None)
        if b is not None:
            dest = b.destination
            if isinstance(dest, Exchange):
                dest.incoming.pop(b, None)
            else:
                dest.bindings.pop(b, None)
            if b.target is not dest or isinstance(dest, Exchange):
                self.e2e -= 1
            self._removed(b.view)
        return b
