"""AMQP 0-9-1 bytes built by hand, for the fuzzers (tests/fuzz_strategies.py's Hypothesis
generators and bench/fuzz_gen.py's campaign pools): frames, methods, content, field
tables and property blocks, valid or not, and the raw material of their mutations.
Nothing here validates: the point is to send what pamqp would refuse to encode."""
from __future__ import annotations

import struct

u8, u16, u32, u64 = (struct.Struct(f">{c}").pack for c in "BHIQ")
_hdr = struct.Struct(">BHI")

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"


def ss(b: bytes) -> bytes:
    return bytes((len(b) & 0xFF,)) + b[:255]


def ls(b: bytes) -> bytes:
    return u32(len(b)) + b


def frame(ftype: int, channel: int, payload: bytes) -> bytes:
    return _hdr.pack(ftype, channel, len(payload)) + payload + b"\xce"


def method(channel: int, cls: int, mid: int, args: bytes = b"") -> bytes:
    return frame(1, channel, u16(cls) + u16(mid) + args)


def header(channel: int, props: bytes, size: int, cls: int = 60) -> bytes:
    return frame(2, channel, u16(cls) + u16(0) + u64(size) + props)


def publish(channel: int, exchange: bytes, rk: bytes, props: bytes, body: bytes,
            bits: int = 0) -> bytes:
    out = method(channel, 60, 40, u16(0) + ss(exchange) + ss(rk) + u8(bits))
    out += header(channel, props, len(body))
    return out + (frame(3, channel, body) if body else b"")


def table(items) -> bytes:
    return ls(b"".join(ss(k) + v for k, v in items))


def props_block(parts: dict[int, bytes]) -> bytes:
    """Basic's properties from {flag bit: encoded value}, in flag order."""
    flags = 0
    for bit in parts:
        flags |= bit
    return u16(flags) + b"".join(parts[b] for b in sorted(parts, reverse=True))


def deep(depth: int, kind) -> bytes:
    """A void nested ``depth`` tables (kind F) or arrays (A) deep."""
    v = b"V"
    for _ in range(depth):
        v = b"F" + table([(b"k", v)]) if kind in ("F", b"F") else b"A" + ls(v)
    return v


# Basic's shortstr properties: content-type, -encoding, correlation-id, reply-to,
# message-id, type, app-id, cluster-id
SHORTSTR_PROPS = [0x8000, 0x4000, 0x0400, 0x0200, 0x0080, 0x0020, 0x0008, 0x0004]
BAD_TAGS = b"ZzaCcEeGgHhjJkKLmMnNoOpPqQrRvwWXyY\x00\xff"   # no field type has these
BAD_UTF8 = [b"\xff", b"\xc3(", b"\xed\xa0\x80", b"\xe2\x82", b"\xf4\x90\x80\x80", b"\x80abc"]
HUGE = [2**64 - 1, 2**63, 2**63 - 1, 253402300800, 10**15]  # timestamps past datetime's range


# Queue-argument values with a chosen wire type (tests/ and interop/test_queue_args_wire.py)
INT = {"b": ">b", "B": ">B", "s": ">h", "u": ">H", "I": ">i", "i": ">I", "l": ">q"}


def sstr(s: str) -> bytes:
    return ss(s.encode())


def args_table(*items: tuple[str, bytes]) -> bytes:
    return table([(k.encode(), v) for k, v in items])


def v_int(tag: str, value: int) -> bytes:
    return tag.encode() + struct.pack(INT[tag], value)


def v_str(s: str) -> bytes:
    return b"S" + ls(s.encode())


def v_bool(b: bool) -> bytes:
    return b"t" + bytes((b,))
