"""Ingress validation: every content header and every method's tables are checked once,
when the frame arrives, by walking the bytes (nothing is built).  What passes can be
decoded later without failing, whoever decodes it (a TTL timer, dead-lettering, a
redelivery, the store); what fails closes the sender's connection with 502 SYNTAX_ERROR
naming the problem (RabbitMQ 3.10 answers 541 or drops the socket there).

The accepted field types are RabbitMQ's (``rabbit_binary_parser``): t b B s u I i l L f d
D S x A T F V.  Tables and arrays nest at most ``MAX_DEPTH`` deep (RabbitMQ has no limit
but the frame size; our decoders recurse).

Two walkers: a fast one that only says yes or no (the hot path: one flags test for a
message without properties, a table walk driven by a 256-entry size table), and a careful
one that runs only after the fast one said no and names the problem.
"""
from __future__ import annotations

import struct

from . import errors
from .framefaults import cannot_decode, unexpected, unknown_frame  # noqa: F401

MAX_DEPTH = 64

_u32 = struct.Struct(">I").unpack_from
_u16 = struct.Struct(">H").unpack_from

# size of a tagged value by its tag octet: > 0 fixed (tag included), 0 unknown tag,
# -1 length-prefixed bytes (S, x), -2 table (F), -3 array (A)
_FIXED = {"t": 1, "b": 1, "B": 1, "s": 2, "u": 2, "I": 4, "i": 4, "l": 8, "L": 8, "f": 4,
          "d": 8, "D": 5, "T": 8, "V": 0}
_SIZE = [0] * 256
for _tag, _n in _FIXED.items():
    _SIZE[ord(_tag)] = _n + 1
_SIZE[ord("S")] = _SIZE[ord("x")] = -1
_SIZE[ord("F")] = -2
_SIZE[ord("A")] = -3
_SIZE = tuple(_SIZE)
_NAMES = {"t": "bool", "b": "byte", "B": "unsignedbyte", "s": "short", "u": "unsignedshort",
          "I": "signedint", "i": "unsignedint", "l": "long", "L": "long", "f": "float",
          "d": "double", "D": "decimal", "T": "timestamp", "V": "void", "S": "longstr",
          "x": "binary", "F": "table", "A": "array"}


class _Bad(Exception):
    """The fast walker's no: the careful walker says why."""


def table_ok(d: bytes, pos: int = 0) -> int:
    """The end of the valid field table (length prefix first) at ``d[pos:]``; raises _Bad,
    IndexError or struct.error if it is not valid."""
    end = pos + 4 + _u32(d, pos)[0]
    if end > len(d) or _rtable(d, pos + 4, end, 1, []) != end:
        raise _Bad
    return end


# --------------------------------------------------------------------------- explaining


def _fail(where: str, what: str):
    if len(where) > 100:  # deep paths: the start and the end (a reply text is short)
        where = f"{where[:50]}...{where[-40:]}"
    raise errors.SyntaxError_(f"{where}: {what}" if where else what)


def _explain_value(d: bytes, pos: int, end: int, depth: int, where: str) -> int:
    if pos >= end:
        _fail(where, "value type missing")
    tag = chr(d[pos])
    if tag in _FIXED:
        stop = pos + 1 + _FIXED[tag]
        if stop > end:
            _fail(where, f"{_NAMES[tag]} value runs past the end of its table")
        return stop
    if tag not in "SxFA":
        shown = repr(tag) if 32 <= d[pos] < 127 else f"0x{d[pos]:02x}"
        _fail(where, f"unknown field type {shown}")
    if pos + 5 > end:
        _fail(where, f"{_NAMES[tag]} length runs past the end of its table")
    n = _u32(d, pos + 1)[0]
    stop = pos + 5 + n
    if stop > end:
        _fail(where, f"{_NAMES[tag]} of {n} bytes runs past the end of its table "
                     f"({end - pos - 5} left)")
    if tag in "FA":
        if depth >= MAX_DEPTH:
            _fail(where, f"tables and arrays nested deeper than {MAX_DEPTH}")
        if tag == "F":
            _explain_table(d, pos + 5, stop, depth + 1, where)
        else:
            _explain_array(d, pos + 5, stop, depth + 1, where)
    return stop


def _key(d: bytes, pos: int, n: int) -> str:
    return d[pos:pos + n].decode("utf-8", "replace")


def _explain_table(d: bytes, pos: int, end: int, depth: int, where: str) -> None:
    while pos < end:
        n = d[pos]
        if pos + 1 + n > end:
            _fail(where, f"field name of {n} bytes runs past the end of its table")
        key = _key(d, pos + 1, n)
        pos = _explain_value(d, pos + 1 + n, end, depth, f"{where}.{key}" if where else key)


def _explain_array(d: bytes, pos: int, end: int, depth: int, where: str) -> None:
    i = 0
    while pos < end:
        pos = _explain_value(d, pos, end, depth, f"{where}[{i}]")
        i += 1


def check_table(d: bytes, pos: int, where: str) -> int:
    """Validate the field table at ``d[pos:]`` (its length first); its end, or 502."""
    try:
        return table_ok(d, pos)
    except (_Bad, IndexError, struct.error):
        pass
    if pos + 4 > len(d):
        _fail(where, "table length runs past the end of the data")
    n = _u32(d, pos)[0]
    end = pos + 4 + n
    if end > len(d):
        _fail(where, f"table of {n} bytes runs past the end of the data "
                     f"({len(d) - pos - 4} left)")
    _explain_table(d, pos + 4, end, 1, where)
    _fail(where, "malformed field table")  # not reached: the careful walk found it


# --------------------------------------------------------------------------- properties

# Basic's properties in flag order: (flag, name, kind) with kind s = shortstr,
# F = table, o = octet, T = timestamp
_PROPS = ((0x8000, "content-type", "s"), (0x4000, "content-encoding", "s"),
          (0x2000, "headers", "F"), (0x1000, "delivery-mode", "o"),
          (0x0800, "priority", "o"), (0x0400, "correlation-id", "s"),
          (0x0200, "reply-to", "s"), (0x0100, "expiration", "s"),
          (0x0080, "message-id", "s"), (0x0040, "timestamp", "T"), (0x0020, "type", "s"),
          (0x0010, "user-id", "s"), (0x0008, "app-id", "s"), (0x0004, "cluster-id", "s"))
F_HEADERS, F_DELIVERY_MODE, F_USER_ID = 0x2000, 0x1000, 0x0010

# Templates: publishers repeat the shape of their properties (the same properties, header
# names, types and lengths) even when the values differ.  A walk records the offsets of
# every byte that steers parsing (the flags, string and table lengths, name lengths, type
# tags, delivery-mode); a block of the same length with the same bytes at those offsets
# parses the same way, so it is valid too.  Checking one is a Struct.unpack that picks
# those bytes and a tuple comparison, in C.  Keyed by the block's length; a different
# shape replaces the template.
_templates: dict[int, tuple] = {}
MAX_TEMPLATES = 1024
MAX_TEMPLATE_ITEMS = 64  # bigger shapes are walked every time (memory stays bounded)


def check_properties(p: bytes) -> int:
    """Validate a content header's properties (flags word first).  Returns non-zero when
    the publish needs ``check_publish`` (user-id set, delivery-mode other than 1 or 2);
    raises 502 for anything malformed."""
    t = _templates.get(len(p))
    if t is not None and t[0](p) == t[1]:
        return t[2]
    return _walk_properties(p)


def _walk_properties(p: bytes) -> int:
    offs = [0, 1]
    try:
        flags = (p[0] << 8) | p[1]
        if flags & 1:  # a continued flags word; bit 1 is ignored, as RabbitMQ does
            raise _Bad
        pos = 2
        need = flags & F_USER_ID
        for flag, _name, kind in _PROPS:
            if not flags & flag:
                continue
            if kind == "s":
                offs.append(pos)
                pos += p[pos] + 1
            elif kind == "F":
                offs += range(pos, pos + 4)
                stop = pos + 4 + _u32(p, pos)[0]
                if stop > len(p) or _rtable(p, pos + 4, stop, 1, offs) != stop:
                    raise _Bad
                pos = stop
            elif kind == "o":
                if flag == F_DELIVERY_MODE:
                    offs.append(pos)
                    if not 0 < p[pos] < 3:
                        need = 1
                pos += 1
            else:
                pos += 8
        if pos == len(p):
            if len(_templates) >= MAX_TEMPLATES:
                _templates.clear()
            unpack = _template(offs, pos)
            if unpack is not None:
                _templates[pos] = (unpack, unpack(p), need)
            return need
    except (_Bad, IndexError, struct.error):
        pass
    _explain_properties(p)
    return 0  # not reached


def _template(offs: list, size: int):
    """A Struct's unpack that yields the bytes at ``offs`` (in runs) of a ``size``-byte
    block and skips the rest; None if that takes more than MAX_TEMPLATE_ITEMS items."""
    fmt, last = [">"], 0
    offs = sorted(set(offs))
    i = 0
    while i < len(offs):
        j = i
        while j + 1 < len(offs) and offs[j + 1] == offs[j] + 1:
            j += 1
        start, n = offs[i], j - i + 1
        if start > last:
            fmt.append(f"{start - last}x")
        fmt.append({1: "B", 2: "H", 4: "I"}.get(n, f"{n}s"))
        last = start + n
        i = j + 1
    if size > last:
        fmt.append(f"{size - last}x")
    if len(fmt) > 2 * MAX_TEMPLATE_ITEMS:
        return None
    return struct.Struct("".join(fmt)).unpack


def _rtable(d: bytes, pos: int, end: int, depth: int, offs: list) -> int:
    """Walk a table's entries from ``pos`` to ``end``; the end reached (which the caller
    compares with ``end``).  Records in ``offs`` the offsets of the bytes that steer the
    parse.  Raises _Bad, IndexError or struct.error for a malformed one."""
    size = _SIZE
    add = offs.append
    while pos < end:
        add(pos)
        pos += d[pos] + 1
        add(pos)
        s = size[d[pos]]
        if s > 0:
            pos += s
            continue
        offs += range(pos + 1, pos + 5)
        if s == -1:
            pos += 5 + _u32(d, pos + 1)[0]
        elif s == 0 or depth >= MAX_DEPTH:
            raise _Bad
        else:
            stop = pos + 5 + _u32(d, pos + 1)[0]
            if (_rtable if s == -2 else _rarray)(d, pos + 5, stop, depth + 1, offs) != stop:
                raise _Bad
            pos = stop
    return pos


def _rarray(d: bytes, pos: int, end: int, depth: int, offs: list) -> int:
    size = _SIZE
    add = offs.append
    while pos < end:
        add(pos)
        s = size[d[pos]]
        if s > 0:
            pos += s
            continue
        offs += range(pos + 1, pos + 5)
        if s == -1:
            pos += 5 + _u32(d, pos + 1)[0]
        elif s == 0 or depth >= MAX_DEPTH:
            raise _Bad
        else:
            stop = pos + 5 + _u32(d, pos + 1)[0]
            if (_rtable if s == -2 else _rarray)(d, pos + 5, stop, depth + 1, offs) != stop:
                raise _Bad
            pos = stop
    return pos


def _explain_properties(p: bytes) -> None:
    where = "content header"
    if len(p) < 2:
        _fail(where, "property flags missing")
    flags = (p[0] << 8) | p[1]
    if flags & 1:
        _fail(where, "continued property flags (a second flags word) are not supported")
    pos = 2
    for flag, name, kind in _PROPS:
        if not flags & flag:
            continue
        if kind == "s":
            if pos >= len(p) or pos + 1 + p[pos] > len(p):
                _fail(where, f"property {name} runs past the end of the properties")
            pos += 1 + p[pos]
        elif kind == "F":
            pos = check_table(p, pos, "content header: headers")
        else:
            size = 1 if kind == "o" else 8
            if pos + size > len(p):
                _fail(where, f"property {name} runs past the end of the properties")
            pos += size
    if pos != len(p):
        _fail(where, f"{len(p) - pos} bytes after the last property")


# --------------------------------------------------------------------------- publish


def _property(p: bytes, wanted: int) -> bytes:
    """The raw value of one octet or shortstr property of valid properties ``p``."""
    flags = (p[0] << 8) | p[1]
    pos = 2
    for flag, _name, kind in _PROPS:
        if not flags & flag:
            continue
        if kind == "s":
            stop = pos + 1 + p[pos]
            value = p[pos + 1:stop]
        elif kind == "F":
            stop = pos + 4 + _u32(p, pos)[0]
        else:
            stop = pos + (1 if kind == "o" else 8)
            value = p[pos:stop]
        if flag == wanted:
            return value
        pos = stop
    return b""


def check_publish(props: bytes, user) -> None:
    """RabbitMQ's publish checks on properties that ``check_properties`` flagged:
    delivery-mode 1 or 2, user-id equal to the authenticated user (unless the user is
    tagged ``impersonator``).  406, as RabbitMQ 3.10."""
    flags = (props[0] << 8) | props[1]
    if flags & F_DELIVERY_MODE:
        mode = _property(props, F_DELIVERY_MODE)[0]
        if mode not in (1, 2):
            raise errors.PreconditionFailed(
                f"invalid message: {{delivery_mode_unknown,{mode}}}", 60, 40)
    if flags & F_USER_ID and "impersonator" not in (user.tags or ()):
        claimed = _property(props, F_USER_ID).decode("utf-8", "replace")
        if claimed != user.name:
            raise errors.PreconditionFailed(
                f"user_id property set to '{claimed}' but authenticated user was "
                f"'{user.name}'", 60, 40)


# --------------------------------------------------------------------------- frames


# method index -> (name, ((kind, field name), ...)); kind: an int (fixed bytes), "s"
# shortstr, "S" longstr, "F" table; consecutive bits share octets
_methods: dict[int, tuple | None] = {}
_SIZES = {"octet": 1, "short": 2, "long": 4, "longlong": 8, "timestamp": 8}


def _method_layout(index: int):
    from pamqp import commands

    cls = commands.INDEX_MAPPING.get(index)
    layout = None
    if cls is not None:
        fields, bits = [], 0
        for name in cls.__slots__:
            t = cls.amqp_type(name)
            if t == "bit":
                if bits % 8 == 0:
                    fields.append((1, name))
                bits += 1
                continue
            bits = 0
            fields.append((_SIZES.get(t) or {"shortstr": "s", "longstr": "S",
                                              "table": "F"}[t], name))
        layout = (cls.name, tuple(fields))
    _methods[index] = layout
    return layout


def check_method(payload: bytes) -> None:
    """Walk a method frame's fields before it is decoded: 501 for a frame too short or
    fields that do not fit the method (RabbitMQ's texts), 502 naming the problem for a
    malformed table (RabbitMQ: 541).  Unknown methods pass (503 later)."""
    if len(payload) < 4:
        raise unknown_frame(1, payload)
    index = _u32(payload)[0]
    layout = _methods[index] if index in _methods else _method_layout(index)
    if layout is None:
        return
    name, fields = layout
    n = len(payload)
    pos = 4
    try:
        for kind, field in fields:
            if kind == "s":
                pos += 1 + payload[pos]
            elif kind == "S":
                pos += 4 + _u32(payload, pos)[0]
            elif kind == "F":
                stop = pos + 4 + _u32(payload, pos)[0]
                if stop > n:
                    break
                check_table(payload, pos, f"{name} {field}")
                pos = stop
            else:
                pos += kind
        else:
            if pos == n:
                return
    except (IndexError, struct.error):
        pass
    raise cannot_decode(payload)


# --------------------------------------------------------------------------- content

_hdr = struct.Struct(">HHQ").unpack_from


def content_header(payload: bytes) -> tuple[int, bytes, int]:
    """A content header frame's payload -> (body size, properties, ``check_properties``'s
    answer).  501 if too short, 505 for another class, 502 for malformed properties."""
    try:
        class_id, weight, size = _hdr(payload)
    except struct.error:  # RabbitMQ's analyze_frame; 12 or 13 bytes: flags missing, 502
        raise unknown_frame(2, payload) from None
    if class_id != 60:
        raise errors.UnexpectedFrame(f"expected content header for class 60, got one for "
                                     f"class {class_id} instead", 60, 40)
    if weight:
        raise unexpected(True, None)
    props = payload[12:]
    if props == b"\x00\x00":  # no properties: one test
        return size, props, 0
    t = _templates.get(len(props))  # check_properties, inlined: once per message
    if t is not None and t[0](props) == t[1]:
        return size, props, t[2]
    return size, props, _walk_properties(props)
