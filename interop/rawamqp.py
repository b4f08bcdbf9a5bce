"""A raw AMQP 0-9-1 client over a blocking socket, for bytes no client library sends:
invalid UTF-8 in names, every field-value type in a table, 64-bit timestamps.

Frames are built from bytes (``ss``, ``ls``, ``table``, ``method``) and read back as
``(type, channel, payload)``; the caller compares payload bytes.
"""
from __future__ import annotations

import socket
import struct
import time

FRAME_END = b"\xce"


def ss(b: bytes | str) -> bytes:
    """A shortstr from bytes (or UTF-8 text)."""
    if isinstance(b, str):
        b = b.encode()
    assert len(b) <= 255
    return bytes((len(b),)) + b


def ls(b: bytes | str) -> bytes:
    if isinstance(b, str):
        b = b.encode()
    return struct.pack(">I", len(b)) + b


def table(*items: tuple[bytes | str, bytes]) -> bytes:
    """A field table from (key, tagged value bytes) pairs, in the given order."""
    body = b"".join(ss(k) + v for k, v in items)
    return struct.pack(">I", len(body)) + body


def v_str(s: bytes | str) -> bytes:
    return b"S" + ls(s)


def frame(ftype: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", ftype, channel, len(payload)) + payload + FRAME_END


def method(channel: int, class_id: int, method_id: int, fields: bytes = b"") -> bytes:
    return frame(1, channel, struct.pack(">HH", class_id, method_id) + fields)


def content(channel: int, body: bytes, props: bytes = b"\x00\x00") -> bytes:
    """A content header (class 60) with raw property bytes, and one body frame."""
    out = frame(2, channel, struct.pack(">HHQ", 60, 0, len(body)) + props)
    return out + (frame(3, channel, body) if body else b"")


# method payload builders (fields after class and method ids)

def queue_declare(name: bytes, durable=False, exclusive=False, auto_delete=False,
                  passive=False, args: bytes = b"\x00\x00\x00\x00") -> bytes:
    bits = passive | durable << 1 | exclusive << 2 | auto_delete << 3
    return b"\x00\x00" + ss(name) + bytes((bits,)) + args


def exchange_declare(name: bytes, type_: bytes, durable=False, auto_delete=False,
                     args: bytes = b"\x00\x00\x00\x00") -> bytes:
    bits = durable << 1 | auto_delete << 2
    return b"\x00\x00" + ss(name) + ss(type_) + bytes((bits,)) + args


def queue_bind(queue: bytes, exchange: bytes, key: bytes,
               args: bytes = b"\x00\x00\x00\x00") -> bytes:
    return b"\x00\x00" + ss(queue) + ss(exchange) + ss(key) + b"\x00" + args


def publish(exchange: bytes, key: bytes, mandatory=False) -> bytes:
    return b"\x00\x00" + ss(exchange) + ss(key) + bytes((mandatory,))


def consume(queue: bytes, tag: bytes, no_ack=True, args: bytes = b"\x00\x00\x00\x00") -> bytes:
    return b"\x00\x00" + ss(queue) + ss(tag) + bytes((no_ack << 1,)) + args


def get(queue: bytes, no_ack=True) -> bytes:
    return b"\x00\x00" + ss(queue) + bytes((no_ack,))


def queue_delete(queue: bytes) -> bytes:
    return b"\x00\x00" + ss(queue) + b"\x00"


def exchange_delete(name: bytes) -> bytes:
    return b"\x00\x00" + ss(name) + b"\x00"


class Raw:
    """One connection, handshake done, channel 1 open."""

    def __init__(self, host: str, port: int, timeout: float = 5.0,
                 response: bytes = b"\x00guest\x00guest"):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.sock.sendall(b"AMQP\x00\x00\x09\x01")
        self.expect(10, 10)  # start
        caps = table((b"capabilities", b"F" + table(
            (b"consumer_cancel_notify", b"t\x01"), (b"publisher_confirms", b"t\x01"),
            (b"authentication_failure_close", b"t\x01"))))
        self.send(method(0, 10, 11, caps + ss(b"PLAIN") + ls(response)
                         + ss(b"en_US")))
        tune = self.method_frame()
        if tune[:4] != b"\x00\x0a\x00\x1e":
            self.refused = tune  # the login was refused: the Connection.Close
            return
        self.refused = None
        channel_max, frame_max = struct.unpack_from(">HI", tune, 4)
        self.frame_max = frame_max
        self.send(method(0, 10, 31, struct.pack(">HIH", channel_max, frame_max, 0)))
        self.send(method(0, 10, 40, ss(b"/") + b"\x00\x00"))
        self.expect(10, 41)
        self.send(method(1, 20, 10, b"\x00"))
        self.expect(20, 11)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def frame(self, timeout: float = 5.0) -> tuple[int, int, bytes]:
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 7:
                ftype, channel, size = struct.unpack_from(">BHI", self.buf)
                if len(self.buf) >= 8 + size:
                    payload = self.buf[7:7 + size]
                    self.buf = self.buf[8 + size:]
                    return ftype, channel, payload
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame")
            self.sock.settimeout(left)
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed by the broker")
            self.buf += data

    def method_frame(self, timeout: float = 5.0) -> bytes:
        """The next method frame's payload, skipping heartbeats."""
        while True:
            ftype, _ch, payload = self.frame(timeout)
            if ftype == 1:
                return payload

    def expect(self, class_id: int, method_id: int, timeout: float = 5.0) -> bytes:
        payload = self.method_frame(timeout)
        got = struct.unpack_from(">HH", payload)
        assert got == (class_id, method_id), (got, payload)
        return payload

    def call(self, class_id: int, method_id: int, fields: bytes, channel: int = 1) -> bytes:
        """Send a method; return the reply's payload (whatever it is)."""
        self.send(method(channel, class_id, method_id, fields))
        return self.method_frame()

    def message(self) -> tuple[bytes, bytes, bytes]:
        """The next content-carrying method: (method payload, properties, body)."""
        m = self.method_frame()
        _t, _c, header = self.frame()
        size = struct.unpack_from(">Q", header, 4)[0]
        body = b""
        while len(body) < size:
            _t, _c, part = self.frame()
            body += part
        return m, header[12:], body

    def close(self) -> None:
        try:
            self.send(method(0, 10, 50, struct.pack(">H", 200) + ss(b"bye") + b"\x00" * 4))
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                if self.method_frame(2)[:4] == b"\x00\x0a\x00\x33":
                    break
        except (OSError, TimeoutError, ConnectionError, AssertionError):
            pass
        self.sock.close()


def shortstr_at(payload: bytes, pos: int) -> tuple[bytes, int]:
    n = payload[pos]
    return payload[pos + 1:pos + 1 + n], pos + 1 + n
