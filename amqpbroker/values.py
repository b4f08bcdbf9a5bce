"""The lossless value model: any bytes a client sends come back byte-exact.

- Strings (names, keys, tags, shortstr properties, longstr values) are ``str`` decoded
  with ``surrogateescape``: a bijection from bytes, so invalid UTF-8 and UTF-8-encoded
  surrogates round-trip through ``raw()``, the store and every encoder.
- Field tables decode to ``FieldTable``, a dict (key -> Python value) that also keeps
  each value's wire type (``tags``) and the exact encoding received (``raw``): a double
  stays a double, an unsigned stays unsigned, a float stays a float, a timestamp is an
  integer of any 64-bit size (no datetime), a byte array is ``bytes``.
- ``utf8_ok`` is RabbitMQ's check of the shortstrs of methods without content
  (xmerl_ucs:from_utf8: surrogates and code points up to 0x1FFFFF pass; overlong forms,
  stray continuation bytes and 5-byte forms do not).
"""
from __future__ import annotations

import struct
from decimal import Decimal

from . import errors

_u32 = struct.Struct(">I")
_s8, _u8 = struct.Struct(">b"), struct.Struct(">B")
_s16, _u16 = struct.Struct(">h"), struct.Struct(">H")
_s32 = struct.Struct(">i")
_s64, _u64 = struct.Struct(">q"), struct.Struct(">Q")
_f32, _f64 = struct.Struct(">f"), struct.Struct(">d")

# The AMQP field types as RabbitMQ reads them (rabbit_binary_parser, not the spec XML):
# tag -> (width, RabbitMQ's type name).  width: the fixed size after the tag, or -1 for
# length-prefixed bytes (S, x), -2 a table (F), -3 an array (A).  Everything that reads
# tables (wirecheck's walkers, the decoders below, message.py's raw walkers) uses this one.
FIELD_TYPES = {"t": (1, "bool"), "b": (1, "byte"), "B": (1, "unsignedbyte"),
               "s": (2, "short"), "u": (2, "unsignedshort"), "I": (4, "signedint"),
               "i": (4, "unsignedint"), "l": (8, "long"), "L": (8, "long"),
               "f": (4, "float"), "d": (8, "double"), "D": (5, "decimal"),
               "T": (8, "timestamp"), "V": (0, "void"), "S": (-1, "longstr"),
               "x": (-1, "binary"), "F": (-2, "table"), "A": (-3, "array")}
TYPE_NAMES = {t: name for t, (_w, name) in FIELD_TYPES.items()}
# by tag octet, for the walkers: the size of a fixed value with its tag (> 0), 0 for an
# unknown tag, the negative width of the others
TAG_SIZE = tuple(0 if (w := FIELD_TYPES.get(chr(i), (None,))[0]) is None
                 else w + 1 if w >= 0 else w for i in range(256))
# the fixed-size numbers' codecs (t, D and V have their own code)
_NUMS = {"b": _s8, "B": _u8, "s": _s16, "u": _u16, "I": _s32, "i": _u32, "l": _s64,
         "L": _s64, "f": _f32, "d": _f64, "T": _u64}


def text(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def raw(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def shortstr(s: str) -> bytes:
    b = s.encode("utf-8", "surrogateescape")
    return bytes((len(b),)) + b


def utf8_ok(b: bytes) -> bool:
    """RabbitMQ's assert_utf8 (xmerl_ucs:from_utf8) on a shortstr."""
    if b.isascii():
        return True
    try:
        b.decode("utf-8", "surrogatepass")
        return True
    except UnicodeDecodeError:
        pass
    i, n = 0, len(b)
    while i < n:  # the rare rest: leads F4..F7 beyond U+10FFFF pass in RabbitMQ too
        c = b[i]
        if c < 0x80:
            i += 1
            continue
        if c & 0xE0 == 0xC0:
            size, low, cp = 2, 0x80, c & 0x1F
        elif c & 0xF0 == 0xE0:
            size, low, cp = 3, 0x800, c & 0x0F
        elif c & 0xF8 == 0xF0:
            size, low, cp = 4, 0x10000, c & 0x0F
        else:
            return False
        if i + size > n:
            return False
        for k in range(1, size):
            cc = b[i + k]
            if cc & 0xC0 != 0x80:
                return False
            cp = (cp << 6) | (cc & 0x3F)
        if cp < low:
            return False
        i += size
    return True


# --------------------------------------------------------------------------- decoding


class FieldTable(dict):
    """A decoded field table: key -> value, plus ``tags`` (key -> wire type tag) and
    ``raw`` (the encoding received, its length prefix included)."""

    __slots__ = ("tags", "raw")

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.tags: dict[str, str] = {}
        self.raw: bytes | None = None

    def type_names(self) -> dict[str, str]:
        return {k: TYPE_NAMES.get(t, "?") for k, t in self.tags.items()}

    def typed(self, key: str):
        """(tag, value) of one entry, for ``erl_term``."""
        return self.tags.get(key) or guess_tag(self[key]), self[key]


class FieldArray(list):
    """A decoded field array, with each element's tag."""

    __slots__ = ("tags",)

    def __init__(self, *a):
        super().__init__(*a)
        self.tags: list[str] = []


def _bad(what: str):
    return errors.SyntaxError_(f"malformed field table: {what}")


def decode_value(data: bytes, pos: int):
    """(tag, value, end) of the tagged field value at ``data[pos]``."""
    if pos >= len(data):
        raise _bad("value past the end")
    tag = chr(data[pos])
    pos += 1
    num = _NUMS.get(tag)
    if num is not None:
        end = pos + num.size
        if end > len(data):
            raise _bad("value past the end")
        return tag, num.unpack_from(data, pos)[0], end
    if tag in "SxAF":
        if pos + 4 > len(data):
            raise _bad("length past the end")
        end = pos + 4 + _u32.unpack_from(data, pos)[0]
        if end > len(data):
            raise _bad("string past the end")
        if tag == "S":
            return tag, text(data[pos + 4:end]), end
        if tag == "x":
            return tag, data[pos + 4:end], end
        if tag == "F":
            return tag, decode_table(data, pos)[0], end
        arr = FieldArray()
        p = pos + 4
        while p < end:
            t, v, p = decode_value(data, p)
            arr.append(v)
            arr.tags.append(t)
        if p != end:
            raise _bad("array element past its end")
        return tag, arr, end
    if tag == "t":
        if pos >= len(data):
            raise _bad("value past the end")
        return tag, data[pos] != 0, pos + 1
    if tag == "D":
        if pos + 5 > len(data):
            raise _bad("value past the end")
        scale, value = data[pos], _s32.unpack_from(data, pos + 1)[0]
        return tag, Decimal(value).scaleb(-scale), pos + 5
    if tag == "V":
        return tag, None, pos
    raise _bad(f"unknown field value type {tag!r}")


def decode_table(data: bytes, pos: int = 0) -> tuple[FieldTable, int]:
    """The table encoded at ``data[pos:]`` (length prefix first) and its end offset."""
    if pos + 4 > len(data):
        raise _bad("length past the end")
    end = pos + 4 + _u32.unpack_from(data, pos)[0]
    if end > len(data):
        raise _bad("table past the end")
    table = FieldTable()
    tags = table.tags
    p = pos + 4
    while p < end:
        n = data[p]
        if p + 1 + n > end:
            raise _bad("key past the end")
        key = text(data[p + 1:p + 1 + n])
        tag, value, p = decode_value(data, p + 1 + n)
        table[key] = value
        tags[key] = tag
    if p != end:
        raise _bad("value past the table's end")
    table.raw = data[pos:end]
    return table, end


def table_from(raw_table: bytes | None) -> FieldTable:
    return decode_table(raw_table)[0] if raw_table else FieldTable()


# --------------------------------------------------------------------------- encoding


def guess_tag(value) -> str:
    """The wire type for a value we only have decoded (YAML definitions, our own)."""
    if isinstance(value, bool):
        return "t"
    if isinstance(value, int):
        return "I" if -2**31 <= value < 2**31 else "l"
    if isinstance(value, float):
        return "d"
    if isinstance(value, Decimal):
        return "D"
    if isinstance(value, (bytes, bytearray)):
        return "x"
    if isinstance(value, dict):
        return "F"
    if isinstance(value, list):
        return "A"
    if value is None:
        return "V"
    return "S"


def encode_value(tag: str, value) -> bytes:
    num = _NUMS.get(tag)
    if num is not None:
        return tag.encode() + num.pack(value)
    if tag == "S":
        b = raw(value) if isinstance(value, str) else bytes(value)
        return b"S" + _u32.pack(len(b)) + b
    if tag == "x":
        b = bytes(value) if not isinstance(value, str) else raw(value)
        return b"x" + _u32.pack(len(b)) + b
    if tag == "F":
        return b"F" + encode_table(value)
    if tag == "A":
        tags = getattr(value, "tags", None) or [guess_tag(v) for v in value]
        body = b"".join(encode_value(t, v) for t, v in zip(tags, value))
        return b"A" + _u32.pack(len(body)) + body
    if tag == "t":
        return b"t\x01" if value else b"t\x00"
    if tag == "D":
        sign, digits, exp = Decimal(value).as_tuple()
        scale = max(0, -exp)
        unscaled = int(Decimal(value).scaleb(scale))
        return b"D" + bytes((scale,)) + _s32.pack(unscaled)
    if tag == "V":
        return b"V"
    raise ValueError(f"unknown field value type {tag!r}")


_TAG_OF_NAME = {name: tag for tag, name in TYPE_NAMES.items() if tag != "L"}


def encode_table(table, type_names: dict | None = None) -> bytes:
    """A table's encoding, length prefix included: the bytes received for a decoded
    ``FieldTable``, else each value with its tag (kept, named in ``type_names``, or
    guessed)."""
    if not table:
        return b"\x00\x00\x00\x00"
    if isinstance(table, FieldTable) and table.raw is not None:
        return table.raw
    tags = getattr(table, "tags", None) or {
        k: _TAG_OF_NAME[n] for k, n in (type_names or {}).items() if n in _TAG_OF_NAME}
    body = b"".join(shortstr(k) + encode_value(tags.get(k) or guess_tag(v), v)
                    for k, v in table.items())
    return _u32.pack(len(body)) + body


def typed_table(items) -> FieldTable:
    """A FieldTable from (key, tag, value) triples, encoded once."""
    t = FieldTable()
    for k, tag, v in items:
        t[k] = v
        t.tags[k] = tag
    t.raw = encode_table(t)
    return t


# --------------------------------------------------------------------------- comparing

_ERL_ATOM = {"L": "l"}  # 'l' and 'L' are both RabbitMQ's long


def erl_term(typed):
    """A Python value that compares with ``==`` as RabbitMQ 3.10's decoded value compares
    with Erlang's ``==``: numbers by value whatever their width or float-ness (timestamps
    are integers), booleans only with booleans, longstr equal to a byte array with the
    same bytes, decimals as (scale, digits), tables and arrays as lists of typed entries
    (there the type atoms must agree).  ``typed``: (tag, value)."""
    tag, value = typed
    if tag in _NUMS:
        return ("n", value)
    if tag == "S" or tag == "x":
        return ("b", raw(value) if isinstance(value, str) else bytes(value))
    if tag == "t":
        return ("t", bool(value))
    if tag == "V":
        return ("v",)
    if tag == "D":
        return ("D", encode_value("D", value))
    if tag == "A":
        tags = getattr(value, "tags", None) or [guess_tag(v) for v in value]
        return ("list", tuple((_ERL_ATOM.get(t, t), erl_term((t, v)))
                              for t, v in zip(tags, value)))
    if tag == "F":
        tags = getattr(value, "tags", {})
        return ("list", tuple((raw(k), _ERL_ATOM.get(t, t), erl_term((t, v)))
                              for k, v in value.items()
                              for t in (tags.get(k) or guess_tag(v),)))
    return ("?", value)
