"""Sans-I/O framing: a frame reader, frame encoders and the hot-path codecs.

The few methods on the per-message path (Basic.Publish in, Basic.Deliver / GetOk / Return
out, Basic.Ack / Nack / Reject in, Basic.Ack / Nack out) have hand-written ``struct``
codecs, proven byte-identical to pamqp by tests.  Every other method is decoded by
``methods.unmarshal`` from pamqp's field lists, losslessly (see values.py: any bytes round-trip,
tables keep their wire types); what we send is encoded by methods.py or by pamqp's
marshalling with our lossless shortstr and table encoders, never pamqp's validators.
Content headers stay as the raw bytes received.
"""
from __future__ import annotations

import struct

from pamqp import commands, encode

from . import errors, framefaults, values
from .methods import decode_properties, fields_of, unmarshal  # noqa: F401  (re-exported)
from .values import TYPE_NAMES, shortstr, text  # noqa: F401  (re-exported)

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT = 1, 2, 3, 8
FRAME_END = 0xCE
HEARTBEAT = b"\x08\x00\x00\x00\x00\x00\x00\xce"
FRAME_MIN_SIZE = 4096
INITIAL_FRAME_MAX = 131072  # before tune completes; start-ok with big client properties fits

_frame_hdr = struct.Struct(">BHI")
_u16 = struct.Struct(">H")
_u32 = struct.Struct(">I")
_u64 = struct.Struct(">Q")
_hdr_prefix = struct.Struct(">HHQ")

# method ids (class << 16 | method)
BASIC_PUBLISH = 0x3C0028
BASIC_ACK = 0x3C0050
BASIC_REJECT = 0x3C005A
BASIC_NACK = 0x3C0078
# method ids (the low 16 bits) of class 60 that the connection's hot path decodes directly
HOT_METHODS = frozenset((b"\x00\x28", b"\x00\x50", b"\x00\x5a", b"\x00\x78"))
QUEUE_DECLARE = 0x32000A
EXCHANGE_DECLARE = 0x28000A
ACCESS_REQUEST = 0x1E000A


class FrameReader:
    """Splits a byte stream into frames.  ``feed()`` then iterate ``frames()``.

    Yields ``(frame_type, channel, payload)``.  Raises FrameError for a bad end octet
    or a frame larger than ``frame_max`` (RabbitMQ's texts); any frame type is yielded.
    """

    __slots__ = ("_buf", "_pos", "frame_max")

    def __init__(self, frame_max: int = INITIAL_FRAME_MAX):
        self._buf = b""
        self.frame_max = frame_max

    def feed(self, data: bytes) -> None:
        # bytes, not a bytearray: a socket read is usually consumed whole, so no copy
        self._buf = self._buf + data if self._buf else bytes(data)

    def frames(self):
        buf = self._buf
        end = len(buf)
        pos = 0
        unpack = _frame_hdr.unpack_from
        try:
            while end - pos >= 7:
                ftype, channel, size = unpack(buf, pos)
                if size > self.frame_max:
                    # RabbitMQ allows frame_max - 8 plus 8 bytes of slack: payload <= frame_max
                    raise errors.FrameError(f"type {ftype}, all octets = <<>>: {{frame_too_large,"
                                            f"{size},{self.frame_max - 8}}}")
                stop = pos + 7 + size
                if stop >= end:
                    break
                if buf[stop] != FRAME_END:  # unknown frame types: the connection's 501
                    raise errors.FrameError(
                        f"{framefaults.frame_snippet(ftype, buf[pos + 7:stop])}: "
                        f"{{invalid_frame_end_marker,{buf[stop]}}}")
                payload = buf[pos + 7: stop]
                pos = stop + 1
                yield ftype, channel, payload
        finally:
            self._buf = buf[pos:] if pos else buf

    @property
    def buffered(self) -> int:
        return len(self._buf)


# --------------------------------------------------------------------------- field tables
# Type-preserving walkers over encoded field tables: pamqp decodes values to Python types
# and loses the wire type, which RabbitMQ shows in its texts and which must survive a
# rewrite of a message's headers.

_TAG_SIZE = values.TAG_SIZE


def _value_end(data: bytes, pos: int) -> int:
    """End offset of the tagged field value starting at ``pos`` (its type tag)."""
    size = _TAG_SIZE[data[pos]]
    if size > 0:
        return pos + size
    if size < 0:
        return pos + 5 + _u32.unpack_from(data, pos + 1)[0]
    raise errors.SyntaxError_(f"unknown field value type {data[pos:pos + 1]!r}")


def table_items(raw: bytes) -> list[tuple[str, bytes]]:
    """A table's encoding (with its length prefix) -> [(key, tagged raw value)]."""
    end = 4 + _u32.unpack_from(raw)[0]
    items, pos = [], 4
    while pos < end:
        n = raw[pos]
        key = text(raw[pos + 1:pos + 1 + n])
        pos += 1 + n
        vend = _value_end(raw, pos)
        items.append((key, raw[pos:vend]))
        pos = vend
    return items


def array_items(tagged: bytes) -> list[bytes]:
    """A tagged array value -> its tagged raw elements."""
    end = 5 + _u32.unpack_from(tagged, 1)[0]
    items, pos = [], 5
    while pos < end:
        vend = _value_end(tagged, pos)
        items.append(tagged[pos:vend])
        pos = vend
    return items



# --------------------------------------------------------------------------- decoding


class Publish:
    """Basic.Publish, decoded by the hot-path codec (attribute names as pamqp's)."""

    __slots__ = ("exchange", "routing_key", "mandatory", "immediate", "route_ss")
    name = "Basic.Publish"
    index = BASIC_PUBLISH

    def __init__(self, exchange: str, routing_key: str, mandatory: bool, immediate: bool,
                 route_ss: bytes = b""):
        self.exchange = exchange
        self.routing_key = routing_key
        self.mandatory = mandatory
        self.immediate = immediate
        # the exchange and routing-key shortstrs as received: Basic.Deliver carries the
        # same two fields, so they are copied, not encoded again
        self.route_ss = route_ss


# Publishers repeat the same few Basic.Publish frames: decode each once (they are immutable)
_publish_cache: dict[bytes, Publish] = {}


class Settle:
    """Basic.Ack / Basic.Nack / Basic.Reject from a client."""

    __slots__ = ("index", "delivery_tag", "multiple", "requeue")

    def __init__(self, index: int, delivery_tag: int, multiple: bool, requeue: bool):
        self.index = index
        self.delivery_tag = delivery_tag
        self.multiple = multiple
        self.requeue = requeue

    @property
    def name(self) -> str:
        return {BASIC_ACK: "Basic.Ack", BASIC_NACK: "Basic.Nack", BASIC_REJECT: "Basic.Reject"}[
            self.index]


class AccessRequest:
    """access.request (30,10): answered with request-ok(ticket=1), as RabbitMQ does."""

    name = "Access.Request"
    index = ACCESS_REQUEST


def access_request_ok(channel: int) -> bytes:
    payload = b"\x00\x1e\x00\x0b\x00\x01"
    return _frame_hdr.pack(FRAME_METHOD, channel, len(payload)) + payload + b"\xce"


def channel_open_ok(channel: int) -> bytes:
    """Channel.Open-Ok with an empty reserved channel-id longstr, as RabbitMQ sends (pamqp
    insists on "0"; amqp-client.js's AMQPSession hangs on that)."""
    payload = b"\x00\x14\x00\x0b\x00\x00\x00\x00"
    return _frame_hdr.pack(FRAME_METHOD, channel, len(payload)) + payload + b"\xce"


def decode_method(payload: bytes):
    """Decode a method frame's payload into a method object.

    Raises CommandInvalid for an unknown method, SyntaxError_ for undecodable fields.
    """
    if len(payload) < 4:
        raise errors.SyntaxError_("method frame too short")
    index = _u32.unpack_from(payload)[0]
    try:
        if index == BASIC_PUBLISH:
            pub = _publish_cache.get(payload)
            if pub is not None:
                return pub
            pos = 6  # skip the reserved ticket
            n = payload[pos]
            # not checked for UTF-8 (RabbitMQ checks no shortstr of a content method)
            exchange = payload[pos + 1: pos + 1 + n].decode("utf-8", "surrogateescape")
            pos += 1 + n
            n = payload[pos]
            routing_key = payload[pos + 1: pos + 1 + n].decode("utf-8", "surrogateescape")
            pos += 1 + n
            bits = payload[pos]
            pub = Publish(exchange, routing_key, bool(bits & 1), bool(bits & 2),
                          payload[6:pos])
            if len(_publish_cache) >= 4096:
                _publish_cache.clear()
            _publish_cache[payload] = pub
            return pub
        if index == BASIC_ACK or index == BASIC_NACK:
            tag = _u64.unpack_from(payload, 4)[0]
            bits = payload[12]
            return Settle(index, tag, bool(bits & 1), bool(bits & 2))
        if index == BASIC_REJECT:
            tag = _u64.unpack_from(payload, 4)[0]
            return Settle(index, tag, False, bool(payload[12] & 1))
    except (IndexError, struct.error):
        raise errors.SyntaxError_("malformed method frame") from None
    if index == ACCESS_REQUEST:  # deprecated, not in pamqp 4, still sent by old clients
        return AccessRequest()
    cls = commands.INDEX_MAPPING.get(index)
    if cls is None:
        raise errors.CommandInvalid(
            f"unimplemented method (class {index >> 16}, method {index & 0xFFFF})",
            index >> 16, index & 0xFFFF)
    method = cls.__new__(cls)
    try:
        unmarshal(method, fields_of(cls), payload)
    except errors.SyntaxError_ as e:  # a malformed table
        e.class_id, e.method_id = index >> 16, index & 0xFFFF
        raise
    except (IndexError, struct.error):
        raise errors.SyntaxError_(f"malformed method frame for {cls.name}",
                                  index >> 16, index & 0xFFFF) from None
    if index == QUEUE_DECLARE or index == EXCHANGE_DECLARE:
        method.arg_types = method.arguments.type_names()
    return method


# --------------------------------------------------------------------------- encoding


def _marshal_fields(method) -> bytes:
    """pamqp's Frame.marshal without its client-side name validation (a broker must be able
    to echo back any name a client used)."""
    byte, offset, output, bits = -1, 0, [], False
    for argument in method.__slots__:
        data_type = method.amqp_type(argument)
        value = getattr(method, argument)
        if data_type == "bit":
            if not bits:
                byte, offset, bits = 0, 0, True
            elif offset == 8:
                output.append(encode.octet(byte))
                byte, offset = 0, 0
            if value:
                byte |= 1 << offset
            offset += 1
            continue
        if bits:
            output.append(encode.octet(byte))
            bits = False
        if data_type == "shortstr":
            output.append(shortstr(value or ""))
        elif data_type == "table":
            output.append(values.encode_table(value))
        elif data_type == "longstr":
            b = value if isinstance(value, bytes) else values.raw(value or "")
            output.append(_u32.pack(len(b)) + b)
        else:
            output.append(encode.by_type(value, data_type))
    if bits:
        output.append(encode.octet(byte))
    return b"".join(output)


def method_frame(channel: int, method) -> bytes:
    payload = _u32.pack(method.index) + _marshal_fields(method)
    return _frame_hdr.pack(FRAME_METHOD, channel, len(payload)) + payload + b"\xce"


_deliver_prefix = b"\x00\x3c\x00\x3c"
_getok_prefix = b"\x00\x3c\x00\x47"
_return_prefix = b"\x00\x3c\x00\x32"
_tag_bit = struct.Struct(">QB")


def content_header_payload(props: bytes, body_size: int) -> bytes:
    """A content header frame's payload (class, weight, body size, properties)."""
    return _hdr_prefix.pack(60, 0, body_size) + props


def _content(channel: int, method_parts: tuple, method_size: int, header: bytes,
             body: bytes, frame_max: int) -> bytes:
    """A method frame (its payload given in parts) + content header + body frames split
    at ``frame_max - 8``, in one bytes."""
    parts = [_frame_hdr.pack(FRAME_METHOD, channel, method_size), *method_parts, b"\xce",
             _frame_hdr.pack(FRAME_HEADER, channel, len(header)), header, b"\xce"]
    n = len(body)
    chunk = frame_max - 8
    if n <= chunk:
        if n:
            parts += (_frame_hdr.pack(FRAME_BODY, channel, n), body, b"\xce")
    else:
        for i in range(0, n, chunk):
            piece = body[i: i + chunk]
            parts += (_frame_hdr.pack(FRAME_BODY, channel, len(piece)), piece, b"\xce")
    return b"".join(parts)


def deliver(channel: int, consumer_tag: str, delivery_tag: int, redelivered: bool,
            exchange: str, routing_key: str, props: bytes, body: bytes,
            frame_max: int) -> bytes:
    return deliver_encoded(channel, shortstr(consumer_tag), delivery_tag, redelivered,
                           shortstr(exchange) + shortstr(routing_key),
                           content_header_payload(props, len(body)), body, frame_max)


def deliver_encoded(channel: int, tag_ss: bytes, delivery_tag: int, redelivered: bool,
                    route_ss: bytes, header: bytes, body: bytes, frame_max: int) -> bytes:
    """Basic.Deliver + content from pre-encoded parts (the hot path): the consumer tag and
    exchange/routing-key shortstrs, and ``content_header_payload``."""
    return _content(channel, (_deliver_prefix, tag_ss, _tag_bit.pack(delivery_tag, redelivered),
                              route_ss), 13 + len(tag_ss) + len(route_ss), header, body,
                    frame_max)


def get_ok(channel: int, delivery_tag: int, redelivered: bool, exchange: str,
           routing_key: str, message_count: int, props: bytes, body: bytes,
           frame_max: int) -> bytes:
    payload = b"".join((_getok_prefix, _tag_bit.pack(delivery_tag, redelivered),
                        shortstr(exchange), shortstr(routing_key), _u32.pack(message_count)))
    return _content(channel, (payload,), len(payload), content_header_payload(props, len(body)),
                    body, frame_max)


def basic_return(channel: int, reply_code: int, reply_text: str, exchange: str,
                 routing_key: str, props: bytes, body: bytes, frame_max: int) -> bytes:
    payload = b"".join((_return_prefix, _u16.pack(reply_code), shortstr(reply_text),
                        shortstr(exchange), shortstr(routing_key)))
    return _content(channel, (payload,), len(payload), content_header_payload(props, len(body)),
                    body, frame_max)


def confirm(channel: int, delivery_tag: int, multiple: bool, ack: bool = True) -> bytes:
    """Basic.Ack, or Basic.Nack from the broker (publisher confirms); a nack has
    requeue=true, as RabbitMQ's (its record's default)."""
    return b"".join((_frame_hdr.pack(FRAME_METHOD, channel, 13),
                     b"\x00\x3c\x00\x50" if ack else b"\x00\x3c\x00\x78",
                     _tag_bit.pack(delivery_tag, multiple | (0 if ack else 2)), b"\xce"))


def content_header_size(payload: bytes) -> tuple[int, int, bytes]:
    """Parse a content header frame payload: (class_id, body_size, raw properties)."""
    if len(payload) < 14:
        raise errors.FrameError("content header frame too short")
    class_id, _weight, size = _hdr_prefix.unpack_from(payload)
    return class_id, size, payload[12:]
