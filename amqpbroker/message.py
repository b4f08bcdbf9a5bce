"""Message: the raw property bytes and body as received, properties decoded on demand.

The spec says the server must not modify content, and re-encoding with pamqp silently
changes header types (ints shrink, doubles become floats), so the raw bytes travel through
untouched; only features that must read a property (headers exchange, TTL, priority,
dead-lettering) decode them, once.
"""
from __future__ import annotations

from . import framing

# property flag bits, in the first flags word
F_CONTENT_TYPE = 0x8000
F_CONTENT_ENCODING = 0x4000
F_HEADERS = 0x2000
F_DELIVERY_MODE = 0x1000
F_PRIORITY = 0x0800
F_EXPIRATION = 0x0100


class Message:
    __slots__ = ("exchange", "routing_key", "props", "body", "_properties")

    def __init__(self, exchange: str, routing_key: str, props: bytes, body: bytes):
        self.exchange = exchange
        self.routing_key = routing_key
        self.props = props          # raw content-header properties, flags word first
        self.body = body
        self._properties = None

    @property
    def flags(self) -> int:
        p = self.props
        return (p[0] << 8) | p[1] if len(p) >= 2 else 0

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
        return bool(self.flags & F_DELIVERY_MODE) and self.properties.delivery_mode == 2

    @property
    def size(self) -> int:
        return len(self.body)
