"""The synchronous core of one virtual host: declare, bind, delete, publish, route,
enqueue, dispatch.  Only the event-loop thread calls it, so there are no locks."""
from __future__ import annotations

import base64
import os
import time

from . import delayed  # noqa: F401  (registers x-delayed-message, x-delayed-exchange)
from . import dedupex  # noqa: F401  (registers x-message-deduplication, its variant)
from . import errors, policies, recovery, values
from .confirms import REFUSED, SAFE, join
from .dlx import dead_letter
from .exchanges import Binding, DefaultExchange, Exchange, exchange_class, exchange_type
from .exchanges.base import Taken
from .exchanges.routing import route
from .limits import declare_queue as queue_limit
from .message import Message
from .metrics import VhostCounters
from .queues import QUEUE_ARGS, QueueArgs, QueueType, kind_of
from .queuetimers import QueueTimers
from .scheduler import Scheduler
from .store import MemoryStore
from .store.base import BindingDef, ExchangeDef, QueueDef

REPLY_TO = "amq.rabbitmq.reply-to"


_INT_TYPES = {"byte", "unsignedbyte", "short", "unsignedshort", "signedint", "unsignedint",
              "long"}


def _type_class(type_name: str) -> str:
    if type_name in _INT_TYPES:
        return "int"
    return "float" if type_name in ("float", "double") else type_name


def _fmt(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def check_arg_equivalence(key: str, where: str, new, new_type: str | None, cur,
                          cur_type: str | None) -> None:
    """RabbitMQ's rabbit_misc:assert_args_equivalence, with its texts: values of the same
    type class compare by value (an int is an int whatever its width)."""
    if new is None and cur is None:
        return
    # a value we only have decoded (arguments given in YAML, say): the type it is sent as
    names, guess = values.TYPE_NAMES, values.guess_tag
    new_type = new_type or (names[guess(new)] if new is not None else None)
    cur_type = cur_type or (names[guess(cur)] if cur is not None else None)
    if new is not None and cur is not None:
        if _type_class(new_type) == _type_class(cur_type):
            if new == cur and isinstance(new, bool) == isinstance(cur, bool):
                return
            shown_new, shown_cur = f"'{_fmt(new)}'", f"'{_fmt(cur)}'"
        else:
            shown_new = f"the value '{_fmt(new)}' of type '{new_type}'"
            shown_cur = f"the value '{_fmt(cur)}' of type '{cur_type}'"
    else:
        shown_new = "none" if new is None else f"the value '{_fmt(new)}' of type '{new_type}'"
        shown_cur = "none" if cur is None else f"the value '{_fmt(cur)}' of type '{cur_type}'"
    raise errors.PreconditionFailed(
        f"inequivalent arg '{key}' {where}: received {shown_new} but current is {shown_cur}")


def _bool(b: bool) -> str:
    return "true" if b else "false"


class VirtualHost:
    def __init__(self, name: str, clock=time.monotonic, store=None, scheduler=None):
        self.name = name
        self.limits: dict = {}  # max-connections, max-queues (limits.py): the broker's
        self.store = store if store is not None else MemoryStore()
        self.clock = clock                       # monotonic seconds; tests pass their own
        self.wall_clock = time.time              # what outlives a restart (delayed.py)
        self.exchanges: dict[str, Exchange] = {}
        self.queues: dict[str, QueueType] = {}
        self.reply_to: dict[str, object] = {}    # direct reply-to: token -> channel
        # the broker's (one for every vhost); a vhost made alone gets its own
        self.scheduler = scheduler if scheduler is not None else Scheduler()
        self.timers = QueueTimers(self)          # the queues' wake-ups in it
        self.counters = VhostCounters()          # totals, refreshed off the hot path
        self.delivery_delays: dict = {}          # queue -> its x-delivery-delay DelayedSet
        self.policies = policies.Policies()      # (policies.py applies them)
        self.default_exchange = DefaultExchange()
        self.default_exchange.create(self)
        for name, type_, internal in (
                ("amq.direct", "direct", False), ("amq.fanout", "fanout", False),
                ("amq.topic", "topic", False), ("amq.headers", "headers", False),
                ("amq.match", "headers", False), ("amq.rabbitmq.trace", "topic", True)):
            self._add_exchange(exchange_type(type_)(name, durable=True, internal=internal))

    # ------------------------------------------------------------------ names

    def _in(self) -> str:
        return f"in vhost '{self.name}'"

    def get_exchange(self, name: str) -> Exchange:
        ex = self.exchanges.get(name)
        if ex is None:
            raise errors.NotFound(f"no exchange '{name}' {self._in()}")
        return ex

    def get_queue(self, name: str, owner=None) -> QueueType:
        q = self.queues.get(name)
        if q is None:
            raise errors.NotFound(f"no queue '{name}' {self._in()}")
        self.check_exclusive(q, owner)
        return q

    def check_exclusive(self, q: QueueType, owner) -> None:
        if q.exclusive_owner is not None and q.exclusive_owner is not owner:
            raise errors.ResourceLocked(
                f"cannot obtain exclusive access to locked queue '{q.name}' {self._in()}. "
                "It could be originally declared on another connection or the exclusive "
                "property value does not match that of the original declaration.")

    # ------------------------------------------------------------------ exchanges

    def declare_exchange(self, name: str, type_: str, passive: bool, durable: bool,
                         auto_delete: bool, internal: bool, arguments: dict,
                         arg_types: dict | None = None) -> Exchange:
        arg_types = arg_types or {}
        if name == "":
            raise errors.AccessRefused("operation not permitted on the default exchange")
        ex = self.exchanges.get(name)
        if passive:
            if ex is None:
                raise errors.NotFound(f"no exchange '{name}' {self._in()}")
            return ex
        if ex is None:
            if name.startswith("amq."):
                raise errors.AccessRefused(
                    f"exchange name '{name}' contains reserved prefix 'amq.*'")
            cls = exchange_class(type_, arguments)
            if cls is None:
                raise errors.PreconditionFailed(f"unknown exchange type '{type_}'")
            cls.validate(arguments, f"for exchange '{name}' {self._in()}")
            ex = cls(name, durable, auto_delete, internal, arguments)
            ex.arg_types = arg_types
            self._add_exchange(ex)
            if durable:
                self.store.put_exchange(ExchangeDef(self.name, name, type_, auto_delete,
                                                    internal, arguments, arg_types))
            return ex
        where = f"for exchange '{name}' {self._in()}"
        if ex.type != type_:
            raise errors.PreconditionFailed(
                f"inequivalent arg 'type' {where}: received '{type_}' but current is "
                f"'{ex.type}'")
        for arg, new, cur in (("durable", durable, ex.durable),
                              ("auto_delete", auto_delete, ex.auto_delete),
                              ("internal", internal, ex.internal)):
            if new != cur:
                raise errors.PreconditionFailed(
                    f"inequivalent arg '{arg}' {where}: received '{_bool(new)}' but current "
                    f"is '{_bool(cur)}'")
        ex.assert_args_equivalence(arguments, arg_types, where, check_arg_equivalence)
        return ex

    def _add_exchange(self, ex: Exchange) -> None:
        self.exchanges[ex.name] = ex
        ex.create(self)
        policies.apply_exchange(self, ex)

    def delete_exchange(self, name: str, if_unused: bool) -> None:
        if name == "":
            raise errors.AccessRefused("operation not permitted on the default exchange")
        if name.startswith("amq."):
            raise errors.AccessRefused(
                f"deletion of system exchange '{name}' {self._in()} not allowed")
        ex = self.exchanges.get(name)
        if ex is None:
            return  # idempotent
        if if_unused and ex.bindings:
            raise errors.PreconditionFailed(f"exchange '{name}' {self._in()} in use")
        self._remove_exchange(ex)

    def _remove_exchange(self, ex: Exchange) -> None:
        if self.exchanges.get(ex.name) is not ex:
            return
        del self.exchanges[ex.name]
        ex.deleted = True
        if ex.durable:
            self.store.delete_exchange(self.name, ex.name)
        for b in list(ex.bindings.values()) + list(ex.incoming):
            self._drop_binding(b)
        ex.delete(self)

    def _drop_binding(self, b: Binding) -> None:
        """Remove a binding, then auto-delete its source if that was its last binding (as
        RabbitMQ: bindings to an exchange do not keep it)."""
        src = b.source
        if src.remove(b.key) is None:
            return  # already gone (with its source or its destination)
        if src.durable and b.destination.durable:
            self.store.delete_binding(self._binding_def(b))
        if src.auto_delete and not src.deleted and not src.bindings:
            self._remove_exchange(src)

    def bind(self, source_name: str, dest, routing_key: str, arguments: dict) -> None:
        if source_name == "":
            raise errors.AccessRefused("operation not permitted on the default exchange")
        source = self.get_exchange(source_name)
        b = Binding(source, dest, routing_key, arguments)
        if source.add(b):
            if source.durable and dest.durable:
                self.store.put_binding(self._binding_def(b))

    def _binding_def(self, b: Binding) -> BindingDef:
        kind = "exchange" if isinstance(b.destination, Exchange) else "queue"
        return BindingDef(self.name, b.source.name, kind, b.destination.name, b.routing_key,
                          b.arguments)

    def unbind(self, source_name: str, dest, routing_key: str, arguments: dict) -> None:
        if source_name == "":
            raise errors.AccessRefused("operation not permitted on the default exchange")
        source = self.exchanges.get(source_name)
        if source is None:
            return  # idempotent
        b = source.bindings.get(Binding(source, dest, routing_key, arguments).key)
        if b is not None:
            self._drop_binding(b)

    # ------------------------------------------------------------------ queues

    def new_queue_name(self) -> str:
        return "amq.gen-" + base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")

    def declare_queue(self, name: str, passive: bool, durable: bool, exclusive: bool,
                      auto_delete: bool, arguments: dict, owner,
                      arg_types: dict | None = None) -> QueueType:
        arg_types = arg_types or {}
        q = self.queues.get(name) if name else None
        now = self.clock()
        if passive:
            if q is None:
                raise errors.NotFound(f"no queue '{name}' {self._in()}")
            self.check_exclusive(q, owner)
            q.touch(now)  # as RabbitMQ's queue stat: a passive declare renews x-expires
            return q
        if q is None:
            if name.startswith("amq."):
                raise errors.AccessRefused(
                    f"queue name '{name}' contains reserved prefix 'amq.*'")
            queue_limit(self.limits, len(self.queues), name or self.new_queue_name(), self.name)
            args = QueueArgs.parse(name, self.name, arguments, arg_types)
            kind_of(args).check_declare(name, durable, exclusive, self._in())
            if not name:
                name = self.new_queue_name()
            # exclusive queues are transient whatever `durable` says
            q = self._new_queue(name, durable and not exclusive, owner if exclusive else None,
                                auto_delete, arguments, args, now, arg_types)
            if q.durable:
                self.store.put_queue(QueueDef(self.name, name, auto_delete, arguments,
                                              arg_types))
            q.touch(now)
            self.counters.queues_created += 1
            self.counters.queues_declared += 1
            return q
        self.check_exclusive(q, owner)
        if q.exclusive_owner is not None and not exclusive:
            self.check_exclusive(q, None)  # the strict check: exclusive must match too
        where = f"for queue '{name}' {self._in()}"
        if (durable and not exclusive) != q.durable and not q.exclusive_owner:
            raise errors.PreconditionFailed(
                f"inequivalent arg 'durable' {where}: received '{_bool(durable)}' but current "
                f"is '{_bool(q.durable)}'")
        if auto_delete != q.auto_delete:
            raise errors.PreconditionFailed(
                f"inequivalent arg 'auto_delete' {where}: received '{_bool(auto_delete)}' but "
                f"current is '{_bool(q.auto_delete)}'")
        for key in QUEUE_ARGS:
            new, cur = arguments.get(key), q.arguments.get(key)
            if key == "x-queue-type":  # absent equals classic
                new, cur = new or "classic", cur or "classic"
            check_arg_equivalence(key, where, new, arg_types.get(key), cur,
                                  q.arg_types.get(key))
        q.touch(now)  # a redeclare renews the x-expires lease
        self.counters.queues_declared += 1
        return q

    def _new_queue(self, name, durable, owner, auto_delete, arguments, args, now,
                   arg_types) -> QueueType:
        """Through the queue-type registry, by ``x-queue-type``."""
        q = kind_of(args).factory(name, durable, owner, auto_delete, arguments, args,
                                  self.dead_letter, self.timers.schedule, now, self.store,
                                  self.name, arg_types)
        self.queues[name] = q
        if args.delivery_delay:
            delayed.delay_queue(self, q)
        policies.apply_queue(self, q, now)
        return q

    def purge_queue(self, q: QueueType) -> int:
        """Queue.Purge: its ready messages, and those still held by its x-delivery-delay
        (as SQS's PurgeQueue); the count is of the ready ones, as RabbitMQ's."""
        if q in self.delivery_delays:
            self.delivery_delays[q].drop()
        return q.purge()

    def delete_queue(self, q: QueueType) -> int:
        if q.deleted:
            return 0
        if q.durable:
            self.store.delete_queue(self.name, q.name)  # its messages go with it
        self.queues.pop(q.name, None)
        self.counters.queues_deleted += 1
        for b in list(q.bindings):
            self._drop_binding(b)
        self.timers.cancel(q)
        if q in self.delivery_delays:
            self.delivery_delays.pop(q).drop()
        return q.delete()

    # ------------------------------------------------------------------ recovery

    def restore(self, recovered) -> None:
        """Rebuild durable definitions and messages from the store (recovery.py)."""
        recovery.restore(self, recovered)

    # ------------------------------------------------------------------ publish

    def publish(self, exchange: Exchange, msg: Message) -> tuple[list[QueueType], object]:
        """Route and enqueue.  Returns the Route (false: unroutable, for ``mandatory``; a
        plain list of the one queue on the default exchange's fast path) and the publish's
        confirm ticket (``confirms``): the queues' tickets joined, or REFUSED when one
        refused the message (``reject-publish`` overflow: a nack)."""
        if exchange is self.default_exchange and not msg.cc and not msg.bcc:  # the hot path
            q = self.queues.get(msg.routing_key)
            if q is None:
                return [], SAFE
            queues = [q]
        else:
            queues = route(self, exchange, msg)
            if type(queues) is Taken and queues.deferred:  # kept by a type (delayed.py)
                ticket = self._deliver(queues, msg)
                return queues, ticket and join(ticket, queues.deferred)
        return queues, self._deliver(queues, msg)

    def _deliver(self, queues: list[QueueType], msg: Message, due: bool = False):
        if self.delivery_delays and not due:  # some queue has x-delivery-delay
            return delayed.deliver_delaying(self, queues, msg)
        now = self.clock()
        if len(queues) == 1:  # the usual case, without the bookkeeping
            q = queues[0]
            ticket = q.accept(msg, now)
            if not ticket:
                return REFUSED
            q.counters.publish += 1
            q.dispatch(now)
            q.after_publish(now)
            return ticket
        ticket = SAFE
        accepted = []
        for q in queues:
            t = q.accept(msg, now)
            if t:
                accepted.append(q)
                q.counters.publish += 1
                if ticket is not REFUSED:
                    ticket = join(ticket, t)
            else:
                ticket = REFUSED
        for q in accepted:
            q.dispatch(now)
            q.after_publish(now)
        return ticket

    # ------------------------------------------------------------------ dead letters

    def dead_letter(self, queue: QueueType, msg: Message, reason: str) -> None:
        """The queues' callback for a message that died: to its DLX (dlx.py)."""
        dead_letter(self, queue, msg, reason)
