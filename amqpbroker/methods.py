"""Method and property codecs beyond the hot path, lossless (see values.py).

Decoding: ``unmarshal`` fills a pamqp method object from pamqp's field list, shortstrs as
surrogate-escaped text (checked for UTF-8 as RabbitMQ checks the shortstrs of methods
without content), longstrs as bytes, tables as FieldTables; ``decode_properties`` the same
for content-header properties.

Encoding: the methods the server sends that carry names, keys or counts, without pamqp's
client-side validators (a broker echoes any name RabbitMQ accepts: ``q-é``, ``a*b``, tabs,
emoji, surrogate-encoded bytes).  Each returns the whole frame.  Methods without such fields
go through ``framing.method_frame`` (pamqp's marshalling with our lossless shortstr and
table encoders)."""
from __future__ import annotations

import struct

from pamqp import commands

from . import errors, values
from .values import shortstr, text

_frame_hdr = struct.Struct(">BHI")
_u16 = struct.Struct(">H")
_u32 = struct.Struct(">I")
_ids = struct.Struct(">HH")


_field_specs: dict[type, tuple] = {}


def fields_of(cls) -> tuple:
    spec = _field_specs.get(cls)
    if spec is None:
        spec = _field_specs[cls] = tuple((n, cls.amqp_type(n)) for n in cls.__slots__)
    return spec


_u64 = struct.Struct(">Q")
_INT_FIELDS = {"octet": struct.Struct(">B"), "short": _u16, "long": _u32,
               "longlong": _u64, "timestamp": _u64}


def unmarshal(method, spec: tuple, payload: bytes) -> None:
    """Decode a method's fields losslessly: shortstrs as surrogate-escaped text (checked
    for UTF-8 as RabbitMQ checks the shortstrs of methods without content), longstrs as
    bytes, tables as FieldTables."""
    pos, bit, byte = 4, 8, 0
    for name, t in spec:
        if t == "bit":
            if bit == 8:
                byte, bit = payload[pos], 0
                pos += 1
            value = bool(byte >> bit & 1)
            bit += 1
        else:
            bit = 8
            if t == "shortstr":
                n = payload[pos]
                b = payload[pos + 1:pos + 1 + n]
                if len(b) != n:
                    raise IndexError
                if not values.utf8_ok(b):
                    raise errors.FrameError("Malformed UTF-8 in shortstr")
                value = text(b)
                pos += 1 + n
            elif t == "table":
                value, pos = values.decode_table(payload, pos)
            elif t == "longstr":
                n = _u32.unpack_from(payload, pos)[0]
                value = payload[pos + 4:pos + 4 + n]
                if len(value) != n:
                    raise IndexError
                pos += 4 + n
            else:
                st = _INT_FIELDS[t]
                value = st.unpack_from(payload, pos)[0]
                pos += st.size
        setattr(method, name, value)


class Properties:
    """Basic properties decoded losslessly (pamqp's attribute names): shortstrs as
    surrogate-escaped text, ``headers`` a FieldTable, ``timestamp`` an int of any size."""

    __slots__ = tuple(commands.Basic.Properties.__slots__)

    def __init__(self):
        for name in self.__slots__:
            setattr(self, name, None)


_PROP_SPEC = tuple((n, commands.Basic.Properties.amqp_type(n),
                    commands.Basic.Properties.flags[n])
                   for n in commands.Basic.Properties.__slots__)


def decode_properties(props: bytes) -> Properties:
    """Decode raw property bytes (flags word first) into Properties."""
    p = Properties()
    flags, offset = 0, 0
    while True:  # property flags may continue in further 16-bit words (bit 0 set)
        word = _u16.unpack_from(props, offset)[0]
        offset += 2
        flags = (flags << 16) | word
        if not word & 1:
            break
    pos = offset
    for name, t, flag in _PROP_SPEC:
        if not flags & flag:
            continue
        if t == "shortstr":
            n = props[pos]
            value = text(props[pos + 1:pos + 1 + n])
            pos += 1 + n
        elif t == "table":
            value, pos = values.decode_table(props, pos)
        elif t == "octet":
            value = props[pos]
            pos += 1
        else:  # timestamp
            value = _u64.unpack_from(props, pos)[0]
            pos += 8
        setattr(p, name, value)
    return p


# --------------------------------------------------------------------------- encoders


def build(channel: int, class_id: int, method_id: int, fields: bytes = b"") -> bytes:
    """A method frame from its already encoded fields."""
    return b"".join((_frame_hdr.pack(1, channel, 4 + len(fields)),
                     _ids.pack(class_id, method_id), fields, b"\xce"))


def queue_declare_ok(channel: int, queue: str, message_count: int,
                     consumer_count: int) -> bytes:
    return build(channel, 50, 11, shortstr(queue) + _u32.pack(message_count)
                 + _u32.pack(consumer_count))


def queue_purge_ok(channel: int, message_count: int) -> bytes:
    return build(channel, 50, 31, _u32.pack(message_count))


def queue_delete_ok(channel: int, message_count: int) -> bytes:
    return build(channel, 50, 41, _u32.pack(message_count))


def consume_ok(channel: int, consumer_tag: str) -> bytes:
    return build(channel, 60, 21, shortstr(consumer_tag))


def cancel(channel: int, consumer_tag: str, nowait: bool = True) -> bytes:
    return build(channel, 60, 30, shortstr(consumer_tag) + bytes((nowait,)))


def cancel_ok(channel: int, consumer_tag: str) -> bytes:
    return build(channel, 60, 31, shortstr(consumer_tag))


def channel_close(channel: int, reply_code: int, reply_text: str, class_id: int,
                  method_id: int) -> bytes:
    return build(channel, 20, 40, _u16.pack(reply_code) + shortstr(reply_text)
                 + _ids.pack(class_id, method_id))


def connection_close(reply_code: int, reply_text: str, class_id: int,
                     method_id: int) -> bytes:
    return build(0, 10, 50, _u16.pack(reply_code) + shortstr(reply_text)
                 + _ids.pack(class_id, method_id))


# methods without fields (or with constant ones), encoded once
EXCHANGE_DECLARE_OK = (40, 11)
EXCHANGE_DELETE_OK = (40, 21)
EXCHANGE_BIND_OK = (40, 31)
EXCHANGE_UNBIND_OK = (40, 51)
QUEUE_BIND_OK = (50, 21)
QUEUE_UNBIND_OK = (50, 51)
BASIC_QOS_OK = (60, 11)
BASIC_RECOVER_OK = (60, 111)
BASIC_GET_EMPTY = (60, 72, b"\x00")  # reserved cluster-id: an empty shortstr
TX_SELECT_OK = (90, 11)
TX_COMMIT_OK = (90, 21)
TX_ROLLBACK_OK = (90, 31)
CONFIRM_SELECT_OK = (85, 11)
CHANNEL_CLOSE_OK = (20, 41)


def simple(channel: int, which: tuple) -> bytes:
    return build(channel, *which)
