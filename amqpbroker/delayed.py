"""Delayed delivery, as RabbitMQ's rabbitmq-delayed-message-exchange plugin and LavinMQ:

- exchange type ``x-delayed-message``, routing as the type named by ``x-delayed-type``
  (a ``Decorator``); LavinMQ's form, ``x-delayed-exchange: true`` on an exchange of any
  type (``exchanges.VARIANTS``: the type's class with the delaying route in front);
- a message with header ``x-delay`` (ms, 1 .. 2^32-1; strings and floats coerced as the
  plugin's rabbit_delayed_message_utils) is kept (``DelayedSet``) and routed when due,
  through the type, to the bindings that exist then, with ``x-delay`` rewritten to its
  negative (the plugin's swap_delay_header: the released message is not delayed again, and
  consumers can tell it came through the delay).  No ``x-delay``, 0, negative or a value of
  another type routes at once.

The publish counts as routed (``DEFERRED``: no ``mandatory`` return, since where it goes
is not known yet; the plugin returns 312 at once); a persistent message on a durable
exchange confirms once its store row is committed.  At release, an unroutable message goes
to the exchange's alternate exchange (``routing``) or is dropped and counted
(``drop_unroutable``).  Deleting the exchange drops what it holds, as the plugin."""
from __future__ import annotations

import math
import re
import struct

from . import errors
from .confirms import join
from .delayset import DelayedSet
from .exchanges import VARIANTS, Decorator, deferred, register
from .message import F_HEADERS, set_headers, split_properties, table_items

MAX_DELAY = 4_294_967_295  # the plugin's ERL_MAX_T
_INTS = {b"b": ">b", b"B": ">B", b"s": ">h", b"u": ">H", b"I": ">i", b"i": ">I", b"l": ">q"}
_FLOATS = {b"f": ">f", b"d": ">d"}
_DIGITS = re.compile(rb"[+-]?[0-9]+")  # what Erlang's binary_to_integer accepts
_KEY = b"\x07x-delay"                  # the header's name as a table encodes it


def coerce_delay(tagged: bytes) -> int | None:
    """An ``x-delay`` value (tagged wire bytes) -> ms, as the plugin's get_delay: integer
    types as they are, a string parsed as an integer, a float truncated; None for anything
    else (routed at once)."""
    tag = tagged[:1]
    fmt = _INTS.get(tag)
    if fmt is not None:
        return struct.unpack_from(fmt, tagged, 1)[0]
    fmt = _FLOATS.get(tag)
    if fmt is not None:
        value = struct.unpack_from(fmt, tagged, 1)[0]
        return math.trunc(value) if math.isfinite(value) else None
    if tag == b"S":
        s = tagged[5:]
        return int(s) if _DIGITS.fullmatch(s) else None
    return None


def delay_of(msg) -> int | None:
    """The ms to keep ``msg`` for, or None to route it now."""
    props = msg.props
    if not msg.flags & F_HEADERS or _KEY not in props:  # the usual case: one search
        return None
    for key, value in table_items(split_properties(props)[F_HEADERS]):
        if key == "x-delay":  # the first one, as rabbit_misc:table_lookup
            d = coerce_delay(value)
            return d if d is not None and 0 < d <= MAX_DELAY else None
    return None


def released(msg):
    """``msg`` as it is routed when due: ``x-delay`` set to minus its delay (a signedint,
    as the plugin; a long below -2^31), every other property and header byte kept."""
    d = delay_of(msg)
    if d is None:
        return msg
    neg = b"I" + struct.pack(">i", -d) if d <= 1 << 31 else b"l" + struct.pack(">q", -d)
    return msg.with_props(set_headers(msg.props, {"x-delay": neg}))


class Delaying:
    """What both forms share: the ``DelayedSet`` and the release."""
    delayed: DelayedSet | None = None

    def _start(self, vhost) -> None:
        self.vhost = vhost
        self.delayed = DelayedSet(vhost, self.name, self._release, self.durable)

    def _stop(self) -> None:
        if self.delayed is not None:
            self.delayed.drop()

    def _defer(self, msg, delay: int):
        return deferred(self.delayed.add(msg, delay))

    def _release(self, msg) -> None:
        result = self._route_now(released(msg))
        if result is not None and not result[0]:
            self.counters.drop_unroutable += 1  # no queue and no alternate exchange

    def _route_now(self, msg):
        raise NotImplementedError


class DelayedMessageExchange(Delaying, Decorator):
    type = "x-delayed-message"
    inner_type_arg = "x-delayed-type"

    @classmethod
    def validate(cls, args: dict, where: str) -> None:
        if args.get("x-delayed-type") == "x-delayed-message":  # the plugin's own text
            raise errors.PreconditionFailed(
                "Invalid argument, 'x-delayed-message' can't be used for 'x-delayed-type'")
        super().validate(args, where)

    def create(self, vhost) -> None:
        super().create(vhost)
        self._start(vhost)

    def delete(self, vhost) -> None:
        super().delete(vhost)
        self._stop()

    def route(self, msg, keys):
        d = delay_of(msg)
        if d is None:
            return self.inner.route(msg, keys)
        return self._defer(msg, d)

    def _route_now(self, msg):
        return self.release(msg)  # Decorator.release: through the inner type


register(DelayedMessageExchange)

_VARIANTS: dict[type, type] = {}


def delaying(cls: type) -> type:
    """LavinMQ's ``x-delayed-exchange: true``: the class of a delayed exchange of type
    ``cls`` (same type name, same routing, same bindings index), made once per type."""
    if issubclass(cls, Delaying):
        return cls
    variant = _VARIANTS.get(cls)
    if variant is not None:
        return variant

    class Variant(Delaying, cls):
        def create(self, vhost) -> None:
            cls.create(self, vhost)
            self._start(vhost)

        def delete(self, vhost) -> None:
            cls.delete(self, vhost)
            self._stop()

        def route(self, msg, keys):
            d = delay_of(msg)
            if d is None:  # (a released message: its x-delay is negative now)
                return cls.route(self, msg, keys)
            return self._defer(msg, d)

        def _route_now(self, msg):
            if self.deleted:
                return None
            return self.vhost.publish(self, msg)

    Variant.__name__ = Variant.__qualname__ = f"Delayed{cls.__name__}"
    _VARIANTS[cls] = Variant
    return Variant


VARIANTS["x-delayed-exchange"] = delaying


# ---------------------------------------------------------------------- x-delivery-delay

QUEUE_KEY = "amq.delivery-delay/"  # the store's key for a queue's: no exchange is named so


def delay_queue(vhost, q) -> None:
    """The queue argument ``x-delivery-delay`` (ms, as SQS DelaySeconds): every message
    enqueued is kept that long first, on the same ``DelayedSet`` (stored when persistent
    and the queue durable), then enqueued as if published then: TTL, length limits and
    overflow apply from that moment."""
    def release(msg):
        if not q.deleted:
            vhost._deliver([q], msg, True)
    vhost.delivery_delays[q] = DelayedSet(vhost, QUEUE_KEY + q.name, release, q.durable)


def deliver_delaying(vhost, queues, msg):
    """``vhost._deliver`` when some queue of the vhost has a delivery delay: those of
    ``queues`` that have one keep the message, the others take it now; the joined ticket."""
    delays = vhost.delivery_delays
    now, ticket = [], True
    for q in queues:
        d = delays.get(q)
        if d is None:
            now.append(q)
        else:  # (counted as a publish to the queue when it is enqueued)
            ticket = join(ticket, d.add(msg, q.args.delivery_delay))
    if now:
        t = vhost._deliver(now, msg, True)
        ticket = t and join(ticket, t)
    return ticket
