"""Ingress validation: every content header and every method's tables are checked once,
when the frame arrives, by walking the bytes (nothing is built).  What passes can be
decoded later without failing, whoever decodes it (a TTL timer, dead-lettering, a
redelivery, the store); what fails closes the sender's connection with 502 SYNTAX_ERROR
naming the problem (RabbitMQ 3.10 answers 541 or drops the socket there).

The accepted field types are RabbitMQ's (``values.FIELD_TYPES``).  Tables and arrays
nest at most ``MAX_DEPTH`` deep (RabbitMQ has no limit but the frame size; our decoders
recurse).

Two walkers: a fast one that only says yes or no (the hot path: one flags test for a
message without properties, a template comparison for a shape seen before, else a walk
driven by ``values.TAG_SIZE``), and a careful one that runs only after the fast one said
no and names the problem.
"""
from __future__ import annotations

import struct

from . import errors
from .framefaults import cannot_decode, unexpected, unknown_frame  # noqa: F401
from .values import FIELD_TYPES, TAG_SIZE, TYPE_NAMES

MAX_DEPTH = 64

_u32 = struct.Struct(">I").unpack_from


class _Bad(Exception):
    """The fast walker's no: the careful walker says why."""


def table_ok(d: bytes, pos: int = 0) -> int:
    """The end of the valid field table (length prefix first) at ``d[pos:]``; raises _Bad,
    IndexError or struct.error if it is not valid."""
    end = pos + 4 + _u32(d, pos)[0]
    if end > len(d) or _walk(d, pos + 4, end, 1, [], True) != end:
        raise _Bad
    return end


# --------------------------------------------------------------------------- explaining


def _fail(where: str, what: str):
    if len(where) > 100:  # deep paths: the start and the end (a reply text is short)
        where = f"{where[:50]}...{where[-40:]}"
    raise errors.SyntaxError_(f"{where}: {what}" if where else what)


def _explain(d: bytes, pos: int, end: int, depth: int, where: str, keyed: bool) -> None:
    """Walk a table's (``keyed``) or an array's entries from ``pos`` to ``end`` and raise
    502 naming the first problem, with its path (``headers.x-death[0].queue``)."""
    i = 0
    while pos < end:
        if keyed:
            n = d[pos]
            if pos + 1 + n > end:
                _fail(where, f"field name of {n} bytes runs past the end of its table")
            key = d[pos + 1:pos + 1 + n].decode("utf-8", "replace")
            here, pos = f"{where}.{key}" if where else key, pos + 1 + n
        else:
            here, i = f"{where}[{i}]", i + 1
        if pos >= end:
            _fail(here, "value type missing")
        tag = chr(d[pos])
        width = FIELD_TYPES.get(tag, (None,))[0]
        if width is None:
            shown = repr(tag) if 32 <= d[pos] < 127 else f"0x{d[pos]:02x}"
            _fail(here, f"unknown field type {shown}")
        if width >= 0:
            pos += 1 + width
            if pos > end:
                _fail(here, f"{TYPE_NAMES[tag]} value runs past the end of its table")
            continue
        if pos + 5 > end:
            _fail(here, f"{TYPE_NAMES[tag]} length runs past the end of its table")
        n = _u32(d, pos + 1)[0]
        stop = pos + 5 + n
        if stop > end:
            _fail(here, f"{TYPE_NAMES[tag]} of {n} bytes runs past the end of its table "
                        f"({end - pos - 5} left)")
        if width < -1:
            if depth >= MAX_DEPTH:
                _fail(here, f"tables and arrays nested deeper than {MAX_DEPTH}")
            _explain(d, pos + 5, stop, depth + 1, here, tag == "F")
        pos = stop


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
    _explain(d, pos + 4, end, 1, where, True)
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
_STABLE = 0x8000 | 0x4000  # content-type, content-encoding

# Templates: publishers repeat the shape of their properties (the same properties, header
# names, types and lengths) even when the values differ.  A walk records the offsets of
# every byte that steers parsing (the flags, string and table lengths, name lengths, type
# tags, delivery-mode) and of the header names, content-type and -encoding; a block of the same length with the same
# bytes at those offsets parses the same way, so it is valid too.  Checking one is a Struct.unpack that picks
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
                n = pos + 1 + p[pos]
                # content-type and -encoding are repeated too, and they join the flags
                # with the headers in one run; the others (ids) are unique
                offs += range(pos, n) if flag & _STABLE else (pos,)
                pos = n
            elif kind == "F":
                offs += range(pos, pos + 4)
                stop = pos + 4 + _u32(p, pos)[0]
                if stop > len(p) or _walk(p, pos + 4, stop, 1, offs, True) != stop:
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


def _walk(d: bytes, pos: int, end: int, depth: int, offs: list, keyed: bool) -> int:
    """Walk a table's (``keyed``) or an array's entries from ``pos`` to ``end``; the end
    reached (which the caller compares with ``end``).  Records in ``offs`` the offsets of
    the bytes that steer the parse, and of the field names: publishers repeat those too,
    and they join the runs of steering bytes around them, so a template has fewer, longer
    items (cheaper to compare).  Raises _Bad, IndexError or struct.error for a malformed
    one."""
    size = TAG_SIZE
    while pos < end:
        if keyed:  # name length, name and tag
            n = pos + 1 + d[pos]
            offs += range(pos, n + 1)
            pos = n
        else:
            offs.append(pos)
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
            if _walk(d, pos + 5, stop, depth + 1, offs, s == -2) != stop:
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
