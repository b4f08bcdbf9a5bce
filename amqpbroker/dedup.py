"""Deduplication's core, shared by the exchange (dedupex.py) and the queue
(queues/dedup.py): a message's id, and ``DedupCache``, the ids seen within a window.

The id (``id_of``): the value of the header named by ``x-deduplication-header`` (LavinMQ's
argument; the header of that same name by default, as the rabbitmq-message-deduplication
plugin), else the ``message-id`` property; a message with neither is never a duplicate.
Values compare as the plugin's Erlang terms do: an integer is the same id whatever its
width, a string the same whether a header's longstr, a byte array or the message-id
shortstr.  A table or array header is no id (the plugin does not untag those either).

``DedupCache``: bounded by ``size`` (the oldest entry goes first, as LavinMQ) and by a TTL
(per entry: the exchange's ``x-cache-ttl``, or the message's ``x-cache-ttl`` header), time
passed in (monotonic seconds).  With a store (``disk`` persistence) every entry is also a
row written in the same store batch as the message that made it, so one commit holds
both; the entry's store generation is what a confirm waits for (``ticket``)."""
from __future__ import annotations

import re
import struct
from collections import OrderedDict

from .message import F_HEADERS, F_MESSAGE_ID, split_properties, table_items

HEADER = "x-deduplication-header"  # the plugin's header, and LavinMQ's default name
MAX_TTL = 315_360_000_000          # ms, ten years (x-message-ttl's bound): a larger
#                                    x-cache-ttl is clamped, never overflows the store
_INTS = {b"b": ">b", b"B": ">B", b"s": ">h", b"u": ">H", b"I": ">i", b"i": ">I", b"l": ">q",
         b"T": ">Q"}
_DIGITS = re.compile(r"[+-]?[0-9]+")
_TTL_KEY = b"\x0bx-cache-ttl"      # as a table encodes the name


def key_name(header: str) -> bytes:
    """The header's name as a field table encodes it (a substring test finds it)."""
    b = header.encode()
    return bytes((len(b),)) + b


def canonical(tagged: bytes) -> bytes | None:
    """A header value (tagged wire bytes) as an id: one spelling per Erlang term."""
    tag = tagged[:1]
    fmt = _INTS.get(tag)
    if fmt is not None:
        return b"l" + str(struct.unpack_from(fmt, tagged, 1)[0]).encode()
    if tag in (b"S", b"x"):
        return b"S" + tagged[5:]
    if tag == b"f":
        return b"d" + struct.pack(">d", struct.unpack_from(">f", tagged, 1)[0])
    if tag in (b"F", b"A"):
        return None
    return bytes(tagged)  # bool, double, decimal, void: as they are


def id_of(msg, name: bytes = key_name(HEADER)) -> bytes | None:
    """``msg``'s id for the header whose encoded name is ``name`` (``key_name``)."""
    flags = msg.flags
    if not flags & (F_HEADERS | F_MESSAGE_ID):
        return None
    parts = None
    if flags & F_HEADERS and name in msg.props:
        parts = split_properties(msg.props)
        want = name[1:].decode()
        for key, value in table_items(parts[F_HEADERS]):
            if key == want:  # the first, as rabbit_misc:table_lookup
                return canonical(value)
    if flags & F_MESSAGE_ID:
        parts = parts or split_properties(msg.props)
        return b"S" + parts[F_MESSAGE_ID][1:]
    return None


def ttl_header(msg) -> int | None:
    """The message's own ``x-cache-ttl`` (ms): an integer, or a string of digits."""
    if not msg.flags & F_HEADERS or _TTL_KEY not in msg.props:
        return None
    for key, value in table_items(split_properties(msg.props)[F_HEADERS]):
        if key == "x-cache-ttl":
            ttl = positive(value)
            return min(ttl, MAX_TTL) if ttl else None
    return None


def positive(tagged: bytes) -> int | None:
    """An integer > 0 given as any integer type or a string of digits, else None."""
    tag = tagged[:1]
    fmt = _INTS.get(tag)
    if fmt is not None and tag != b"T":
        v = struct.unpack_from(fmt, tagged, 1)[0]
    elif tag in (b"S", b"x") and _DIGITS.fullmatch(tagged[5:].decode("latin-1")):
        v = int(tagged[5:])
    else:
        return None
    return v if v > 0 else None


def positive_arg(value) -> int | None:
    """``positive`` for a decoded argument (declare, YAML)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, (str, bytes)):
        s = value.decode("latin-1") if isinstance(value, bytes) else value
        if _DIGITS.fullmatch(s) and int(s) > 0:
            return int(s)
    return None


class DedupCache:
    """``entries``: id -> (monotonic expiry or None, store generation of its row), oldest
    first.  ``store``: None (memory), or the vhost's store (disk): rows keyed by
    (vhost, owner, id)."""

    def __init__(self, size: int, ttl: int | None, store=None, vhost: str = "",
                 owner: str = "", offset: float = 0.0):
        self.size = size
        self.ttl = min(ttl, MAX_TTL) if ttl else None
        self.store = store
        self.vhost, self.owner = vhost, owner
        self.offset = offset  # wall-clock seconds minus monotonic: rows keep wall ms
        self.entries: OrderedDict[bytes, tuple[float | None, int]] = OrderedDict()
        self.seq = 0

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, now: float) -> None:
        """Read back what an earlier process stored (expired rows are removed)."""
        seq = 0
        for key, expires, seq in self.store.dedup_entries(self.vhost, self.owner):
            at = None if expires is None else expires / 1000 - self.offset
            if at is not None and at <= now:
                self.store.remove_dedup(self.vhost, self.owner, key)
            else:
                self.entries[key] = (at, 0)
        self.seq = seq
        self._bound()

    def seen(self, key: bytes, now: float):
        """A confirm ticket (True, or the store generation of the entry) when ``key`` is
        in the window, else None (an expired entry is forgotten here)."""
        e = self.entries.get(key)
        if e is None:
            return None
        at, gen = e
        if at is not None and at <= now:
            self._forget(key)
            return None
        return gen if gen and gen > self.store.synced else True

    def add(self, key: bytes, now: float, ttl: int | None = None):
        """Record ``key`` (``ttl``: the message's own, else the cache's); its ticket."""
        ttl = ttl or self.ttl
        at = None if ttl is None else now + ttl / 1000
        entries = self.entries
        if key in entries:
            del entries[key]
        gen = 0
        store = self.store
        if store is not None:
            self.seq += 1
            store.put_dedup(self.vhost, self.owner, key,
                            None if at is None else int((at + self.offset) * 1000), self.seq)
            gen = store.gen
        entries[key] = (at, gen)
        self._bound(now)
        return gen or True

    def _bound(self, now: float | None = None) -> None:
        """Over ``size``: the oldest go.  And a few expired ones at the front (with one
        TTL the front is the first to expire), so memory follows the window."""
        entries = self.entries
        while len(entries) > self.size:
            self._forget(next(iter(entries)))
        if now is not None:
            for _ in range(2):
                if not entries:
                    break
                key, (at, _gen) = next(iter(entries.items()))
                if at is None or at > now:
                    break
                self._forget(key)

    def _forget(self, key: bytes) -> None:
        del self.entries[key]
        if self.store is not None:
            self.store.remove_dedup(self.vhost, self.owner, key)

    def drop(self) -> None:
        """Its owner is deleted: every entry goes, rows too."""
        self.entries.clear()
        if self.store is not None:
            self.store.drop_dedup(self.vhost, self.owner)
