"""The synchronous core of one virtual host: declare, bind, delete, publish, route,
enqueue, dispatch.  Only the event-loop thread calls it, so there are no locks."""
from __future__ import annotations

import base64
import os
from decimal import Decimal

from . import errors
from .exchanges import TYPES, Binding, Exchange
from .message import Message
from .queues import Queue

# Queue arguments RabbitMQ implements (compared on redeclare).  Those marked False are
# implemented by RabbitMQ but not yet by us: declaring them is refused with 406, never
# silently ignored.
QUEUE_ARGS: dict[str, bool] = {
    "x-queue-type": True,
    "x-queue-mode": True,          # lazy/default: a no-op for an in-memory queue
    "x-queue-version": True,       # classic queue storage version: a no-op here
    "x-queue-master-locator": True,
    "x-queue-leader-locator": True,
    "x-message-ttl": False,
    "x-expires": False,
    "x-max-length": False,
    "x-max-length-bytes": False,
    "x-overflow": False,
    "x-dead-letter-exchange": False,
    "x-dead-letter-routing-key": False,
    "x-max-priority": False,
    "x-single-active-consumer": False,
    "x-delivery-limit": False,
    "x-dead-letter-strategy": False,
}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _describe(value) -> str:
    """RabbitMQ's rendering of a value in inequivalent-arg texts."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        t = "bool"
    elif _is_int(value):
        t = "signedint" if -2**31 <= value < 2**31 else "long"
    elif isinstance(value, float):
        t = "double"
    elif isinstance(value, Decimal):
        t = "decimal"
    elif isinstance(value, (dict,)):
        t = "table"
    elif isinstance(value, list):
        t = "array"
    else:
        t = "longstr"
    v = str(value).lower() if isinstance(value, bool) else value
    return f"the value '{v}' of type '{t}'"


def _arg_equal(a, b) -> bool:
    if _is_int(a) and _is_int(b):
        return a == b
    if type(a) is not type(b):
        return False
    return a == b


def _bool(b: bool) -> str:
    return "true" if b else "false"


class VirtualHost:
    def __init__(self, name: str):
        self.name = name
        self.exchanges: dict[str, Exchange] = {}
        self.queues: dict[str, Queue] = {}
        for name, type_ in (("amq.direct", "direct"), ("amq.fanout", "fanout"),
                            ("amq.topic", "topic"), ("amq.headers", "headers"),
                            ("amq.match", "headers")):
            self.exchanges[name] = TYPES[type_](name, durable=True)
        self.exchanges["amq.rabbitmq.trace"] = TYPES["topic"]("amq.rabbitmq.trace",
                                                              durable=True, internal=True)

    # ------------------------------------------------------------------ names

    def _in(self) -> str:
        return f"in vhost '{self.name}'"

    def get_exchange(self, name: str) -> Exchange:
        ex = self.exchanges.get(name)
        if ex is None:
            raise errors.NotFound(f"no exchange '{name}' {self._in()}")
        return ex

    def get_queue(self, name: str, owner=None) -> Queue:
        q = self.queues.get(name)
        if q is None:
            raise errors.NotFound(f"no queue '{name}' {self._in()}")
        self.check_exclusive(q, owner)
        return q

    def check_exclusive(self, q: Queue, owner) -> None:
        if q.exclusive_owner is not None and q.exclusive_owner is not owner:
            raise errors.ResourceLocked(
                f"cannot obtain exclusive access to locked queue '{q.name}' {self._in()}. "
                "It could be originally declared on another connection or the exclusive "
                "property value does not match that of the original declaration.")

    # ------------------------------------------------------------------ exchanges

    def declare_exchange(self, name: str, type_: str, passive: bool, durable: bool,
                         auto_delete: bool, internal: bool, arguments: dict) -> Exchange:
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
            cls = TYPES.get(type_)
            if cls is None:
                raise errors.PreconditionFailed(f"unknown exchange type '{type_}'")
            ae = arguments.get("alternate-exchange")
            if ae is not None and not isinstance(ae, str):
                raise errors.PreconditionFailed(
                    f"invalid arg 'alternate-exchange' for exchange '{name}' {self._in()}")
            ex = cls(name, durable, auto_delete, internal, arguments)
            self.exchanges[name] = ex
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
        # among the arguments RabbitMQ compares only alternate-exchange
        new_ae, cur_ae = arguments.get("alternate-exchange"), ex.arguments.get(
            "alternate-exchange")
        if not (new_ae is None and cur_ae is None) and (
                new_ae is None or cur_ae is None or not _arg_equal(new_ae, cur_ae)):
            raise errors.PreconditionFailed(
                f"inequivalent arg 'alternate-exchange' {where}: received {_describe(new_ae)}"
                f" but current is {_describe(cur_ae)}")
        return ex

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
        for b in list(ex.bindings.values()):
            self._drop_binding(b)
        # bindings where this exchange is the destination
        for other in list(self.exchanges.values()):
            for b in [b for b in other.bindings.values() if b.destination is ex]:
                self._drop_binding(b)

    def _drop_binding(self, b: Binding) -> None:
        """Remove a binding, then auto-delete an exchange that lost its last binding."""
        b.source.remove(b.key)
        dest = b.destination
        if isinstance(dest, Queue):
            try:
                dest.bindings.remove(b)
            except ValueError:
                pass
        for ex in (b.source, dest):
            if isinstance(ex, Exchange) and ex.auto_delete and not ex.deleted and \
                    not self._has_bindings(ex):
                self._remove_exchange(ex)

    def _has_bindings(self, ex: Exchange) -> bool:
        if ex.bindings:
            return True
        return any(b.destination is ex for o in self.exchanges.values()
                   for b in o.bindings.values())

    def bind(self, source_name: str, dest, routing_key: str, arguments: dict) -> None:
        if source_name == "":
            raise errors.AccessRefused("operation not permitted on the default exchange")
        source = self.get_exchange(source_name)
        b = Binding(source, dest, routing_key, arguments)
        if source.add(b) and isinstance(dest, Queue):
            dest.bindings.append(b)

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

    def validate_queue_args(self, name: str, args: dict) -> None:
        for key, value in args.items():
            supported = QUEUE_ARGS.get(key)
            if supported is False:
                raise errors.PreconditionFailed(
                    f"queue argument '{key}' for queue '{name}' {self._in()} is not "
                    "supported by amqpbroker yet")
        qt = args.get("x-queue-type")
        if qt is not None and qt != "classic":
            if qt in ("quorum", "stream"):
                raise errors.PreconditionFailed(
                    f"queue type '{qt}' for queue '{name}' {self._in()} is not supported by "
                    "amqpbroker yet")
            raise errors.PreconditionFailed(
                f"invalid arg 'x-queue-type' for queue '{name}' {self._in()}: "
                f"{{unsupported_queue_type,{qt!r}}}")

    def declare_queue(self, name: str, passive: bool, durable: bool, exclusive: bool,
                      auto_delete: bool, arguments: dict, owner) -> Queue:
        q = self.queues.get(name) if name else None
        if passive:
            if q is None:
                raise errors.NotFound(f"no queue '{name}' {self._in()}")
            self.check_exclusive(q, owner)
            return q
        if q is None:
            if not name:
                name = self.new_queue_name()
            elif name.startswith("amq."):
                raise errors.AccessRefused(
                    f"queue name '{name}' contains reserved prefix 'amq.*'")
            self.validate_queue_args(name, arguments)
            # exclusive queues are transient whatever `durable` says
            q = Queue(name, durable and not exclusive, owner if exclusive else None,
                      auto_delete, arguments)
            self.queues[name] = q
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
            if new is None and cur is None:
                continue
            if new is None or cur is None or not _arg_equal(new, cur):
                raise errors.PreconditionFailed(
                    f"inequivalent arg '{key}' {where}: received {_describe(new)} but current"
                    f" is {_describe(cur)}")
        return q

    def delete_queue(self, q: Queue) -> int:
        if q.deleted:
            return 0
        q.deleted = True
        n = q.message_count
        self.queues.pop(q.name, None)
        for b in list(q.bindings):
            self._drop_binding(b)
        q.purge()
        for c in list(q.consumers):  # their channels forget them, and may tell the client
            q.remove_consumer(c)
            c.channel.server_cancel(c)
        return n

    # ------------------------------------------------------------------ publish

    def route(self, exchange: Exchange, msg: Message) -> list[Queue]:
        """Every queue the message reaches, once each: exchange-to-exchange bindings are
        followed (cycles tolerated), then alternate exchanges for an unroutable message."""
        if exchange.name == "":
            q = self.queues.get(msg.routing_key)
            return [q] if q is not None else []
        queues: dict[int, Queue] = {}
        visited: set[int] = set()
        headers = None
        rk = msg.routing_key
        pending = [exchange]
        ae_chain: set[int] = set()
        while True:
            while pending:
                ex = pending.pop()
                if id(ex) in visited:
                    continue
                visited.add(id(ex))
                if ex.type == "headers" and headers is None:
                    headers = msg.headers or {}
                for dest in ex.route(rk, headers):
                    if isinstance(dest, Queue):
                        queues[id(dest)] = dest
                    else:
                        pending.append(dest)
            if queues:
                return list(queues.values())
            # unroutable: try the alternate exchange chain of the publish exchange
            ae_chain.add(id(exchange))
            ae_name = exchange.alternate_exchange
            if ae_name is None:
                return []
            ae = self.exchanges.get(ae_name)
            if ae is None or id(ae) in ae_chain:
                return []
            exchange = ae
            pending = [ae]
            visited = set()

    def publish(self, exchange: Exchange, msg: Message) -> list[Queue]:
        queues = self.route(exchange, msg)
        for q in queues:
            q.enqueue(msg)
        for q in queues:
            q.dispatch()
        return queues
