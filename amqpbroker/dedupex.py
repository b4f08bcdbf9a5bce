"""Deduplicating exchanges, as the rabbitmq-message-deduplication plugin and LavinMQ:

- exchange type ``x-message-deduplication``, routing as fanout, ``x-cache-size`` required;
- LavinMQ's form, ``x-message-deduplication: true`` on an exchange of any type
  (``exchanges.VARIANTS``: the type's class with the check in front), ``x-cache-size``
  128 by default;
- both: ``x-cache-ttl`` (ms), ``x-cache-persistence`` (``memory`` | ``disk``; unset means
  ``disk`` on a durable exchange, where the plugin says ``memory``) and
  ``x-deduplication-header`` (the header carrying the id; ``dedup.id_of``).

A message whose id is in the window is a duplicate: not routed, counted
(``counters.drop_duplicate``), and it counts as routed (no ``mandatory`` return) with a
positive confirm, as SQS reports a duplicate send (the plugin nacks).  Its confirm waits
for the first one's entry to be committed.

Any other message is routed and enqueued first (the whole publish, through this
exchange's type: exchange-to-exchange bindings, the alternate exchange, the queues'
acceptance), and its id is recorded only when that took it somewhere: a first publish
that reached no queue (or that a queue refused) does not make its retry a duplicate.  With ``disk`` persistence the entry's row joins the same store batch as the
message's, and the publish's confirm waits for that commit too: after a crash, either both
are there or neither."""
from __future__ import annotations

from . import errors
from .confirms import Pending, join
from .dedup import HEADER, DedupCache, id_of, key_name, positive_arg, ttl_header
from .exchanges import VARIANTS, register
from .exchanges.base import Outcome
from .exchanges.routing import route
from .exchanges.fanout import FanoutExchange

ARG = "x-message-deduplication"
ARGS = ("x-cache-size", "x-cache-ttl", "x-cache-persistence", "x-deduplication-header")
DEFAULT_SIZE = 128  # LavinMQ's, for its form (the plugin's type requires a size)
# The plugin's texts (its validate/1), byte for byte: each is an Elixir string continued
# with a backslash at the end of a line, which keeps the next line's indentation, so the
# run of spaces differs by branch (a string that does not parse, or anything else)
SIZE_TEXT = "Missing or invalid argument," + " " * 11 + \
    "'x-cache-size' must be an integer greater than 0"
SIZE_STR_TEXT = "Missing or invalid argument," + " " * 23 + \
    "'x-cache-size' must be an integer greater than 0"
TTL_TEXT = "Invalid argument," + " " * 14 + "'x-cache-ttl' must be an integer greater than 0"
TTL_STR_TEXT = "Invalid argument," + " " * 23 + \
    "'x-cache-ttl' must be an integer greater than 0"
PERSISTENCE_TEXT = "Invalid argument," + " " * 14 + \
    "'x-cache-persistence' must be either 'disk' or 'memory'"
HEADER_TEXT = "Invalid argument, 'x-deduplication-header' must be a header name"
DUPLICATE = Outcome("DUPLICATE", True)  # taken: confirmed now, routed nowhere


def check_args(args: dict, size_required: bool) -> None:
    """406 with the plugin's text for an argument it would refuse."""
    size = args.get("x-cache-size")
    if (size is not None or size_required) and positive_arg(size) is None:
        raise errors.PreconditionFailed(
            SIZE_STR_TEXT if isinstance(size, (str, bytes)) else SIZE_TEXT)
    ttl = args.get("x-cache-ttl")
    if ttl is not None and positive_arg(ttl) is None:
        raise errors.PreconditionFailed(
            TTL_STR_TEXT if isinstance(ttl, (str, bytes)) else TTL_TEXT)
    persistence = args.get("x-cache-persistence")
    if persistence is not None and persistence not in ("disk", "memory"):
        raise errors.PreconditionFailed(PERSISTENCE_TEXT)
    header = args.get("x-deduplication-header")
    if header is not None and not (isinstance(header, str) and 0 < len(header.encode()) < 256):
        raise errors.PreconditionFailed(HEADER_TEXT)


def _refused() -> Pending:
    p = Pending()
    p.settle(False)
    return p


class Deduplicating:
    """What both forms share (a mixin in front of the routing type)."""

    size_required = False
    cache: DedupCache | None = None
    _nested = None  # the message this exchange is routing for itself, now
    id_key = key_name(HEADER)  # (create() sets the exchange's own)

    @classmethod
    def validate(cls, args: dict, where: str) -> None:
        check_args(args, cls.size_required)
        super().validate(args, where)

    @property
    def compared_args(self) -> tuple[str, ...]:
        return super().compared_args + ARGS

    def create(self, vhost) -> None:
        super().create(vhost)
        self.vhost = vhost
        a = self.arguments
        persistence = a.get("x-cache-persistence") or ("disk" if self.durable else "memory")
        store = vhost.store if persistence == "disk" and self.durable and \
            vhost.store.durable else None
        self.id_key = key_name(a.get("x-deduplication-header") or HEADER)
        self.cache = DedupCache(positive_arg(a.get("x-cache-size")) or DEFAULT_SIZE,
                                positive_arg(a.get("x-cache-ttl")), store, vhost.name,
                                self.name, vhost.wall_clock() - vhost.clock())
        if store is not None:  # recovery (or a name declared again: nothing is read)
            self.cache.load(vhost.clock())

    def delete(self, vhost) -> None:
        super().delete(vhost)
        if self.cache is not None:
            self.cache.drop()

    def route(self, msg, keys):
        if self._nested is msg:
            return super().route(msg, keys)
        key = id_of(msg, self.id_key)
        if key is None:  # no id: an ordinary message
            return super().route(msg, keys)
        vhost = self.vhost
        now = vhost.clock()
        cache = self.cache
        seen = cache.seen(key, now)
        if seen is not None:
            self.counters.drop_duplicate += 1
            return DUPLICATE if seen is True else Outcome("DUPLICATE", seen)
        # route and enqueue now, as VirtualHost.publish does, with the caller's keys (a
        # dead letter's routing key, say): the id is recorded only if that took it
        self._nested = msg
        try:
            routed = route(vhost, self, msg, keys)
            ticket = vhost._deliver(routed, msg) if routed else None
        finally:
            self._nested = None
        if not routed:
            return ()  # unroutable: not recorded (routing finds no alternate either)
        if ticket is False:  # a queue refused it (reject-publish): a nack, not recorded
            return Outcome("DEFERRED", _refused())
        if routed.deferred:  # (a type on the way kept it: its ticket too)
            ticket = join(ticket, routed.deferred)
        return Outcome("DEFERRED", join(ticket, cache.add(key, now, ttl_header(msg))))


@register
class DeduplicationExchange(Deduplicating, FanoutExchange):
    """The plugin's type: fanout routing, the routing key ignored."""
    type = "x-message-deduplication"
    size_required = True


_VARIANTS: dict[type, type] = {}


def deduplicating(cls: type) -> type:
    """LavinMQ's ``x-message-deduplication: true``: the class of a deduplicating
    exchange of type ``cls`` (same type name, routing and bindings), made once per type."""
    if issubclass(cls, Deduplicating):
        return cls
    variant = _VARIANTS.get(cls)
    if variant is None:
        variant = _VARIANTS[cls] = type(f"Deduplicating{cls.__name__}",
                                        (Deduplicating, cls), {})
    return variant


# first of the variants (exchange_class applies them in order, innermost first): with
# x-delayed-exchange too, a delayed message is checked when it is released and routed
_others = dict(VARIANTS)
VARIANTS.clear()
VARIANTS[ARG] = deduplicating
VARIANTS.update(_others)
