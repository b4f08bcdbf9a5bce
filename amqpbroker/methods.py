"""Encoders for the methods the server sends that carry names, keys or counts, without
pamqp's client-side validators (a broker echoes any name RabbitMQ accepts: ``q-é``,
``a*b``, tabs, emoji, surrogate-encoded bytes).  Each returns the whole frame.  Methods
without such fields go through ``framing.method_frame`` (pamqp's marshalling with our
lossless shortstr and table encoders)."""
from __future__ import annotations

import struct

from .values import shortstr

_frame_hdr = struct.Struct(">BHI")
_u16 = struct.Struct(">H")
_u32 = struct.Struct(">I")
_ids = struct.Struct(">HH")


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
