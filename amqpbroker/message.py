"""Message: the raw property bytes and body as received, properties decoded on demand.

The spec says the server must not modify content, and re-encoding with pamqp silently
changes header types (ints shrink, doubles become floats), so the raw bytes travel through
untouched; only features that must read a property (headers exchange, TTL, priority,
dead-lettering) decode them.  When the broker must change a property (x-death, BCC removal,
x-delivery-count) it edits the raw bytes with the type-preserving codec below: every other
property and header keeps its exact encoding.
"""
from __future__ import annotations

import struct

from . import errors, framing
from .framing import array_items, shortstr, table_items  # noqa: F401  (re-exported)
from .values import raw, text

# property flag bits, in the first flags word, in wire order
F_CONTENT_TYPE = 0x8000
F_CONTENT_ENCODING = 0x4000
F_HEADERS = 0x2000
F_DELIVERY_MODE = 0x1000
F_PRIORITY = 0x0800
F_CORRELATION_ID = 0x0400
F_REPLY_TO = 0x0200
F_EXPIRATION = 0x0100
F_MESSAGE_ID = 0x0080
F_TIMESTAMP = 0x0040
F_TYPE = 0x0020
F_USER_ID = 0x0010
F_APP_ID = 0x0008
F_CLUSTER_ID = 0x0004
# the wire type of each property: s = shortstr, F = table, o = octet, T = timestamp
_PROP_TYPES = [(F_CONTENT_TYPE, "s"), (F_CONTENT_ENCODING, "s"), (F_HEADERS, "F"),
               (F_DELIVERY_MODE, "o"), (F_PRIORITY, "o"), (F_CORRELATION_ID, "s"),
               (F_REPLY_TO, "s"), (F_EXPIRATION, "s"), (F_MESSAGE_ID, "s"),
               (F_TIMESTAMP, "T"), (F_TYPE, "s"), (F_USER_ID, "s"), (F_APP_ID, "s"),
               (F_CLUSTER_ID, "s")]
MAX_EXPIRATION = 315_360_000_000  # ms, ten years, as RabbitMQ

_u32 = struct.Struct(">I")
_i64 = struct.Struct(">q")
_u64 = struct.Struct(">Q")
_INTS = {b"b": ">b", b"B": ">B", b"s": ">h", b"u": ">H", b"I": ">i", b"i": ">I", b"l": ">q"}


def split_properties(props: bytes) -> dict[int, bytes]:
    """Raw property bytes -> {flag: the property's exact encoded bytes}."""
    flags = (props[0] << 8) | props[1]
    if flags & 1:
        raise errors.SyntaxError_("content header with continued property flags")
    out, pos = {}, 2
    for flag, t in _PROP_TYPES:
        if not flags & flag:
            continue
        if t == "s":
            end = pos + 1 + props[pos]
        elif t == "F":
            end = pos + 4 + _u32.unpack_from(props, pos)[0]
        elif t == "o":
            end = pos + 1
        else:
            end = pos + 8
        out[flag] = props[pos:end]
        pos = end
    return out


def join_properties(parts: dict[int, bytes]) -> bytes:
    flags = 0
    body = []
    for flag, _t in _PROP_TYPES:
        if flag in parts:
            flags |= flag
            body.append(parts[flag])
    return bytes(((flags >> 8) & 0xFF, flags & 0xFF)) + b"".join(body)



def enc_table(items: list[tuple[str, bytes]]) -> bytes:
    body = b"".join(shortstr(k) + v for k, v in items)
    return _u32.pack(len(body)) + body


def v_table(items: list[tuple[str, bytes]]) -> bytes:
    return b"F" + enc_table(items)


def v_str(s: str) -> bytes:
    b = raw(s)
    return b"S" + _u32.pack(len(b)) + b


def v_long(n: int) -> bytes:
    return b"l" + _i64.pack(n)


def v_timestamp(seconds: int) -> bytes:
    return b"T" + _u64.pack(seconds)


def v_array(elements: list[bytes]) -> bytes:
    body = b"".join(elements)
    return b"A" + _u32.pack(len(body)) + body


def v_decode(tagged: bytes):
    """Decode one tagged value we need to read (ints, strings, arrays of strings)."""
    tag = tagged[:1]
    if tag in _INTS:
        return struct.unpack_from(_INTS[tag], tagged, 1)[0]
    if tag in (b"S", b"x"):
        return text(tagged[5:])
    if tag == b"T":
        return _u64.unpack_from(tagged, 1)[0]
    if tag == b"A":
        return [v_decode(e) for e in array_items(tagged)]
    if tag == b"t":
        return bool(tagged[1])
    return None


# --------------------------------------------------------------------------- Message


class Message:
    __slots__ = ("exchange", "routing_key", "props", "body", "cc", "bcc", "flags",
                 "_properties", "route_ss", "header")

    def __init__(self, exchange: str, routing_key: str, props: bytes, body: bytes,
                 cc: tuple = (), bcc: tuple = ()):
        self.exchange = exchange
        self.routing_key = routing_key
        self.props = props          # raw content-header properties, flags word first
        self.body = body
        self.cc = cc                # sender-selected extra routing keys (CC header)
        self.bcc = bcc              # BCC keys: routed with, removed from the content
        self.flags = (props[0] << 8) | props[1] if len(props) >= 2 else 0
        self._properties = None
        # what every Basic.Deliver of this message repeats, encoded once (see wire()):
        # the exchange + routing-key shortstrs and the content header payload
        self.route_ss: bytes | None = None
        self.header: bytes | None = None

    def wire(self) -> tuple[bytes, bytes]:
        """(exchange + routing-key shortstrs, content header payload): the parts of every
        Basic.Deliver of this message that do not depend on the delivery.  A published
        message carries the bytes it arrived with; others are encoded once, here."""
        if self.header is None:
            self.route_ss = shortstr(self.exchange) + shortstr(self.routing_key)
            self.header = framing.content_header_payload(self.props, len(self.body))
        return self.route_ss, self.header

    @property
    def properties(self):
        if self._properties is None:
            self._properties = framing.decode_properties(self.props)
        return self._properties

    @property
    def headers(self) -> dict | None:
        if not self.flags & F_HEADERS:
            return None
        return self.properties.headers

    @property
    def persistent(self) -> bool:
        """delivery-mode 2, read straight from the raw bytes (hot: every publish to a
        durable queue asks)."""
        p = self.props
        flags = (p[0] << 8) | p[1]
        if not flags & F_DELIVERY_MODE:
            return False
        pos = 2  # skip content-type, content-encoding (shortstr) and headers (table)
        if flags & F_CONTENT_TYPE:
            pos += 1 + p[pos]
        if flags & F_CONTENT_ENCODING:
            pos += 1 + p[pos]
        if flags & F_HEADERS:
            pos += 4 + _u32.unpack_from(p, pos)[0]
        return p[pos] == 2

    @property
    def priority(self) -> int:
        if not self.flags & F_PRIORITY:
            return 0
        return self.properties.priority or 0

    @property
    def routing_keys(self) -> list[str]:
        """Every key the message was published with: the routing key, CC, BCC."""
        return [self.routing_key, *self.cc, *self.bcc]

    def expiration_ms(self) -> int | None:
        """The per-message TTL; raises 406 for an invalid ``expiration`` (as RabbitMQ)."""
        if not self.flags & F_EXPIRATION:
            return None
        raw = self.properties.expiration
        try:
            value = int(raw)
        except (TypeError, ValueError):
            raise errors.PreconditionFailed(f"invalid expiration '{raw}': no_integer",
                                            60, 40) from None
        if value < 0:
            raise errors.PreconditionFailed(f"invalid expiration '{raw}': negative_value",
                                            60, 40)
        if value > MAX_EXPIRATION:
            raise errors.PreconditionFailed(f"invalid expiration '{raw}': value_too_large",
                                            60, 40)
        return value

    def with_props(self, props: bytes, exchange: str | None = None,
                   routing_key: str | None = None, cc: tuple | None = None) -> "Message":
        return Message(self.exchange if exchange is None else exchange,
                       self.routing_key if routing_key is None else routing_key,
                       props, self.body, self.cc if cc is None else cc, ())


def sender_selected(props: bytes) -> tuple[tuple, tuple, bytes]:
    """CC / BCC headers (RabbitMQ sender-selected distribution): returns the CC keys, the
    BCC keys and the properties with BCC removed.  Cheap when neither is present."""
    # a one-byte search first: CPython 3.11 spends about 170 instructions on it, and about
    # 2,400 on any multi-byte search of a short string (the common case has no "C" at all)
    if b"C" not in props or (b"\x02CC" not in props and b"\x03BCC" not in props):
        return (), (), props
    parts = split_properties(props)
    raw = parts.get(F_HEADERS)
    if raw is None:
        return (), (), props
    cc: tuple = ()
    bcc: tuple = ()
    kept = []
    for key, value in table_items(raw):
        if key in ("CC", "BCC"):
            if value[:1] != b"A":  # as RabbitMQ's rabbit_basic:header_routes
                type_name = framing.TYPE_NAMES.get(chr(value[0]), "?")
                raise errors.PreconditionFailed(
                    f'invalid message: {{unacceptable_type_in_header,"{key}",{type_name}}}',
                    60, 40)
            # elements that are not strings are ignored, as RabbitMQ does
            keys = tuple(v_decode(e) for e in array_items(value) if e[:1] == b"S")
            if key == "CC":
                cc = keys
                kept.append((key, value))
            else:
                bcc = keys
            continue
        kept.append((key, value))
    if not bcc:
        return cc, bcc, props
    parts[F_HEADERS] = enc_table(kept)
    return cc, bcc, join_properties(parts)


def set_headers(props: bytes, changes: dict[str, bytes | None],
                remove_props: tuple[int, ...] = (), sort_keys: bool = False) -> bytes:
    """Return ``props`` with some headers replaced or added (tagged raw values) or removed
    (None), and some properties removed, every other byte preserved.  ``sort_keys``: order
    the table by key, bytewise, as RabbitMQ re-encodes a dead letter's headers."""
    parts = split_properties(props)
    items = table_items(parts[F_HEADERS]) if F_HEADERS in parts else []
    seen = set()
    out = []
    for key, value in items:
        if key in changes:
            seen.add(key)
            if changes[key] is not None:
                out.append((key, changes[key]))
        else:
            out.append((key, value))
    for key, value in changes.items():
        if key not in seen and value is not None:
            out.append((key, value))
    if sort_keys:
        out.sort(key=lambda kv: raw(kv[0]))
    parts[F_HEADERS] = enc_table(out)
    for flag in remove_props:
        parts.pop(flag, None)
    return join_properties(parts)
