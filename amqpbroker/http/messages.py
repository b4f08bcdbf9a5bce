"""Messages as the management API shows and takes them: the ``properties`` JSON object
(RabbitMQ's keys, which are the AMQP property names) to and from raw content-header
properties, and the shape of one message from ``POST .../get``."""
from __future__ import annotations

import base64
import struct

from .. import values
from ..definitions import json_value
from ..methods import _PROP_SPEC, decode_properties

_INTS = {"octet": struct.Struct(">B"), "timestamp": struct.Struct(">Q")}


def encode_properties(props: dict) -> bytes:
    """Raw properties (flags word first) from the JSON object; ValueError names a key
    that is not a property or a value of the wrong type."""
    known = {name: (t, flag) for name, t, flag in _PROP_SPEC}
    for key in props:
        if key not in known:
            raise ValueError(f"unknown property {key!r}")
    flags, parts = 0, []
    for name, t, flag in _PROP_SPEC:
        value = props.get(name)
        if value is None:
            continue
        flags |= flag
        if t == "shortstr":
            if not isinstance(value, str):
                value = str(value)
            if len(value.encode("utf-8", "surrogateescape")) > 255:
                raise ValueError(f"property {name!r}: expected at most 255 bytes")
            parts.append(values.shortstr(value))
        elif t == "table":
            if not isinstance(value, dict):
                raise ValueError(f"property {name!r}: expected an object")
            parts.append(values.encode_table(value))
        else:
            packer = _INTS[t]
            if isinstance(value, bool) or not isinstance(value, int) or \
                    not 0 <= value < 1 << (8 * packer.size):
                raise ValueError(f"property {name!r}: expected an integer 0.."
                                 f"{(1 << (8 * packer.size)) - 1}")
            parts.append(packer.pack(value))
    return struct.pack(">H", flags) + b"".join(parts)


def decode_properties_json(raw: bytes) -> dict:
    p = decode_properties(raw)
    out = {}
    for name, _t, _flag in _PROP_SPEC:
        value = getattr(p, name)
        if value is None:
            continue
        out[name] = json_value(dict(value)) if name == "headers" else value
    return out


def payload(raw: bytes, encoding: str = "string", *, name: str = "payload") -> bytes:
    """The body of ``POST .../publish``: payload_encoding string or base64."""
    if encoding == "string":
        return raw.encode("utf-8", "surrogateescape")
    if encoding == "base64":
        return base64.b64decode(raw, validate=True)
    raise ValueError(f"{name}_encoding: expected string or base64, got {encoding!r}")


def shown(msg, redelivered: bool, remaining: int, encoding: str, truncate) -> dict:
    """One message of ``POST .../get``, as RabbitMQ: ``auto`` shows a UTF-8 body as a
    string, anything else in base64; ``truncate`` cuts the body shown, not its size."""
    body = msg.body if truncate is None else msg.body[:truncate]
    text = None
    if encoding == "auto":
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    if text is not None:
        shown_payload, how = text, "string"
    else:
        shown_payload, how = base64.b64encode(body).decode(), "base64"
    return {"payload_bytes": len(msg.body), "redelivered": redelivered,
            "exchange": msg.exchange, "routing_key": msg.routing_key,
            "message_count": remaining, "properties": decode_properties_json(msg.props),
            "payload": shown_payload, "payload_encoding": how}
