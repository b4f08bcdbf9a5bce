"""Exchange types: bindings and routing.  No pamqp here: messages come as routing key +
decoded headers table."""
from __future__ import annotations

from . import errors, values
from .topictrie import DestSet, TopicTrie


def _canon(value):
    """A hashable, comparable form of a binding-argument value (tables and arrays nest)."""
    if isinstance(value, dict):
        return tuple(sorted((k, _canon(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_canon(v) for v in value)
    return (type(value).__name__ if isinstance(value, bool) else "", value)


class Binding:
    __slots__ = ("source", "destination", "routing_key", "arguments", "key")

    def __init__(self, source, destination, routing_key: str, arguments: dict):
        self.source = source
        self.destination = destination  # a Queue or an Exchange
        self.routing_key = routing_key
        self.arguments = arguments or {}
        self.key = (id(destination), routing_key, _canon(self.arguments))


class Exchange:
    """``bindings``: this exchange the source, by binding key.  ``incoming``: bindings with
    this exchange the destination (exchange-to-exchange), as an ordered set; a queue's
    ``bindings`` is the same for the queue.  Every change is O(1) plus the type's index."""
    type = ""

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
        self.deleted = False

    @property
    def alternate_exchange(self) -> str | None:
        ae = self.arguments.get("alternate-exchange")
        return ae if isinstance(ae, str) else None

    def validate_binding(self, routing_key: str, arguments: dict) -> None:
        pass

    def add(self, b: Binding) -> bool:
        """Add a binding (and to its destination's set); False if it exists."""
        if b.key in self.bindings:
            return False
        self.validate_binding(b.routing_key, b.arguments)
        self.bindings[b.key] = b
        _incoming(b.destination)[b] = None
        self._added(b)
        return True

    def remove(self, key: tuple) -> Binding | None:
        b = self.bindings.pop(key, None)
        if b is not None:
            _incoming(b.destination).pop(b, None)
            self._removed(b)
        return b

    def _added(self, b: Binding) -> None:
        """Update the routing index for one new binding."""

    def _removed(self, b: Binding) -> None:
        """Update the routing index for one removed binding."""

    def route(self, routing_key: str, headers):
        """The destinations for one routing key (an iterable; may repeat none)."""
        raise NotImplementedError


def _incoming(dest) -> dict:
    return dest.incoming if isinstance(dest, Exchange) else dest.bindings


_NONE: dict = {}


class DirectExchange(Exchange):
    type = "direct"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._index: dict[str, DestSet] = {}

    def _added(self, b):
        s = self._index.get(b.routing_key)
        if s is None:
            s = self._index[b.routing_key] = DestSet()
        s.add(b.destination)

    def _removed(self, b):
        if self._index[b.routing_key].remove(b.destination):
            del self._index[b.routing_key]

    def route(self, routing_key, headers):
        s = self._index.get(routing_key)
        return s.dests.values() if s is not None else ()


class FanoutExchange(Exchange):
    type = "fanout"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._dests = DestSet()

    def _added(self, b):
        self._dests.add(b.destination)

    def _removed(self, b):
        self._dests.remove(b.destination)

    def route(self, routing_key, headers):
        return self._dests.dests.values()


def split_topic(key: str) -> tuple[str, ...]:
    # empty words are allowed ("a..b" is a, "", b); the empty key has zero words
    return tuple(key.split(".")) if key else ()


def topic_match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    """``*`` matches exactly one word (possibly empty), ``#`` zero or more.  The reference
    for the trie's tests; routing uses the trie."""
    # iterative matcher with backtracking over the last '#'
    p = w = 0
    star_p, star_w = -1, 0
    while w < len(words):
        if p < len(pattern) and pattern[p] == "#":
            star_p, star_w = p, w
            p += 1
        elif p < len(pattern) and (pattern[p] == "*" or pattern[p] == words[w]):
            p += 1
            w += 1
        elif star_p >= 0:
            p = star_p + 1
            star_w += 1
            w = star_w
        else:
            return False
    while p < len(pattern) and pattern[p] == "#":
        p += 1
    return p == len(pattern)


class TopicExchange(Exchange):
    type = "topic"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._trie = TopicTrie()
        self._cache: dict[str, list] = {}  # routing key -> destinations, until a change

    def _added(self, b):
        self._trie.add(split_topic(b.routing_key), b.destination)
        if self._cache:
            self._cache = {}

    def _removed(self, b):
        self._trie.remove(split_topic(b.routing_key), b.destination)
        if self._cache:
            self._cache = {}

    def route(self, routing_key, headers):
        hit = self._cache.get(routing_key)
        if hit is None:
            hit = list(self._trie.match(split_topic(routing_key)).values())
            if len(self._cache) > 4096:
                self._cache = {}
            self._cache[routing_key] = hit
        return hit


_X_MATCH = ("all", "any", "all-with-x", "any-with-x")


def header_value_equal(a, b) -> bool:
    """RabbitMQ 3.10's ``PV == DV`` (rabbit_exchange_type_headers): Erlang's ``==`` on the
    decoded values, see ``values.erl_term``: numbers by value whatever their wire type
    (1 as I == 1 as l == 1.0 as d; 0.1 as f != 0.1 as d), a boolean only equals a boolean,
    a longstr equals a byte array with the same bytes; inside tables and arrays the types
    must agree too.  ``a``, ``b``: (tag, value) as ``FieldTable.typed`` gives, or plain
    decoded values (their wire type guessed)."""
    def term(v):
        if not (isinstance(v, tuple) and len(v) == 2 and v[0] in values.TYPE_NAMES):
            v = (values.guess_tag(v), v)
        return values.erl_term(v)
    return term(a) == term(b)


def headers_match(args: dict, headers: dict | None) -> bool:
    """RabbitMQ 3.10's headers_match: ``x-match`` (a longstr, else ``all``) picks all/any,
    ``-with-x`` also compares the ``x-`` keys; a void binding value matches presence."""
    tags = getattr(args, "tags", {})
    mode = args.get("x-match", "all")
    if tags.get("x-match", "S") != "S" or not isinstance(mode, str):
        mode = "all"
    with_x = mode in ("all-with-x", "any-with-x")
    want_all = mode not in ("any", "any-with-x")
    headers = headers or {}
    htags = getattr(headers, "tags", {})
    for k, v in args.items():
        if k == "x-match" or (not with_x and k.startswith("x-")):
            continue
        tag = tags.get(k) or values.guess_tag(v)
        if k not in headers:
            ok = False
        elif tag == "V":  # void: the header only has to be present
            ok = True
        else:
            hv = headers[k]
            htag = htags.get(k) or values.guess_tag(hv)
            if htag == tag and tag not in "AFD":  # the usual case: same scalar type
                ok = hv == v
            else:
                ok = header_value_equal((tag, v), (htag, hv))
        if want_all and not ok:
            return False
        if ok and not want_all:
            return True
    return want_all


class HeadersExchange(Exchange):
    type = "headers"

    def validate_binding(self, routing_key, arguments):
        mode = arguments.get("x-match", "all")
        if not isinstance(mode, str) or mode not in _X_MATCH:
            raise errors.PreconditionFailed(
                f"Invalid x-match field value {mode!r}; expected all, any, all-with-x, or "
                "any-with-x")

    def route(self, routing_key, headers):
        seen = {}
        for b in self.bindings.values():
            if id(b.destination) not in seen and headers_match(b.arguments, headers):
                seen[id(b.destination)] = b.destination
        return list(seen.values())


TYPES: dict[str, type[Exchange]] = {
    "direct": DirectExchange,
    "fanout": FanoutExchange,
    "topic": TopicExchange,
    "headers": HeadersExchange,
}
