"""Hypothesis generators for tests/test_fuzz.py: encoders of frames, property blocks and
field tables (valid ones with every field type), and their mutations (flipped type tags,
lengths past the data, truncations, continued property flags, deep nesting, invalid UTF-8,
huge timestamps, odd names, frame-level faults).  Everything is bytes, built by hand: the
point is to send what pamqp would refuse to encode."""
from __future__ import annotations

import struct

from hypothesis import strategies as st

from tests.amqp_bytes import (BAD_TAGS, BAD_UTF8, HUGE, SHORTSTR_PROPS,  # noqa: F401
                              deep, frame, header, ls, method, props_block, publish, ss,
                              table, u8, u16, u32, u64)

# ---------------------------------------------------------------------- valid values

text = st.text(max_size=12).map(str.encode)
keys = st.text(min_size=1, max_size=12).map(str.encode).filter(lambda k: len(k) <= 255)
FIXED = {
    "t": st.sampled_from([b"\x00", b"\x01"]),
    "b": st.integers(-128, 127).map(lambda n: struct.pack(">b", n)),
    "B": st.integers(0, 255).map(u8),
    "s": st.integers(-2**15, 2**15 - 1).map(lambda n: struct.pack(">h", n)),
    "u": st.integers(0, 2**16 - 1).map(u16),
    "I": st.integers(-2**31, 2**31 - 1).map(lambda n: struct.pack(">i", n)),
    "i": st.integers(0, 2**32 - 1).map(u32),
    "l": st.integers(-2**63, 2**63 - 1).map(lambda n: struct.pack(">q", n)),
    "f": st.floats(width=32, allow_nan=False).map(lambda x: struct.pack(">f", x)),
    "d": st.floats(allow_nan=False).map(lambda x: struct.pack(">d", x)),
    "D": st.tuples(st.integers(0, 255), st.integers(-2**31, 2**31 - 1)).map(
        lambda t: struct.pack(">Bi", *t)),
    "T": st.integers(0, 253402300799).map(u64),   # up to 9999-12-31
    "V": st.just(b""),
    "S": text.map(ls),
    "x": st.binary(max_size=12).map(ls),
}
scalars = st.one_of(*[v.map(lambda b, t=t: t.encode() + b) for t, v in FIXED.items()])
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4).map(lambda vs: b"A" + ls(b"".join(vs))),
    st.lists(st.tuples(keys, inner), max_size=4).map(lambda kv: b"F" + table(kv))),
    max_leaves=12)
tables = st.lists(st.tuples(keys, values), max_size=6).map(table)

valid_parts = st.fixed_dictionaries({}, optional={
    **{bit: text.map(ss) for bit in SHORTSTR_PROPS},
    0x2000: tables,
    0x1000: st.sampled_from([b"\x01", b"\x02"]),
    0x0800: st.integers(0, 9).map(u8),
    0x0100: st.integers(0, 10**6).map(lambda n: ss(str(n).encode())),
    0x0040: st.integers(0, 253402300799).map(u64),
    0x0010: st.just(ss(b"guest")),
})
valid_props = valid_parts.map(props_block)


# ---------------------------------------------------------------------- mutations



def _mutate(data: bytes, ops: list[tuple[int, int, int]]) -> bytes:
    """Point mutations at positions relative to the length: flip to a bad tag, to a random
    byte, add to a length byte, or cut."""
    out = bytearray(data)
    for kind, where, val in ops:
        if not out:
            break
        pos = where % len(out)
        if kind == 0:
            out[pos] = BAD_TAGS[val % len(BAD_TAGS)]
        elif kind == 1:
            out[pos] = val & 0xFF
        elif kind == 2:
            out[pos] = (out[pos] + 1 + val % 8) & 0xFF   # a length past (or short of) the data
        else:
            del out[pos:]
    return bytes(out)


mutations = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2**16), st.integers(0, 255)),
                     min_size=1, max_size=3)


structural_props = st.one_of(
    # byte mutations of a block with a headers table
    st.tuples(valid_props, tables, mutations).map(
        lambda t: _mutate(props_block({0x2000: t[1]}) + t[0][2:], t[2])),
    st.tuples(valid_props, mutations).map(lambda t: _mutate(t[0], t[1])),
    # continued property flags: bit 0, with and without a second flags word
    st.tuples(valid_props, st.binary(max_size=4)).map(
        lambda t: u16(int.from_bytes(t[0][:2], "big") | 1) + t[1] + t[0][2:]),
    # a headers table whose length runs past the data, or stops inside a value
    st.tuples(tables, st.integers(1, 300)).map(
        lambda t: u16(0x2000) + u32(len(t[0]) - 4 + t[1]) + t[0][4:]),
    st.tuples(tables, st.integers(1, 20)).map(
        lambda t: u16(0x2000) + t[0][:max(4, len(t[0]) - t[1])]),
    # deep nesting of tables and arrays
    st.tuples(st.integers(1, 400), st.sampled_from("FA")).map(
        lambda t: u16(0x2000) + table([(b"d", deep(*t))])),
)
odd_value_props = st.one_of(
    st.tuples(st.sampled_from(SHORTSTR_PROPS), st.sampled_from(BAD_UTF8)).map(
        lambda t: props_block({t[0]: ss(t[1])})),
    st.sampled_from(HUGE).map(lambda n: props_block({0x0040: u64(n)})),
    st.tuples(keys, st.sampled_from(HUGE)).map(
        lambda t: props_block({0x2000: table([(t[0], b"T" + u64(t[1]))])})),
    st.tuples(st.sampled_from(BAD_UTF8), st.sampled_from(["S", "key"])).map(
        lambda t: props_block({0x2000: table([(b"k", b"S" + ls(t[0]))] if t[1] == "S"
                                             else [(t[0], b"V")])})),
)

# names RabbitMQ takes as queue and exchange names and routing keys (any shortstr)
odd_names = st.one_of(
    st.sampled_from(["q-\u00e9", "\u961f\u5217", "a*b", "q!$%&()", "t\tab", "\U0001f600",
                     "a" * 255, " ", "amq.x", "#", "*.x"]).map(str.encode),
    st.text(min_size=1, max_size=30).map(str.encode).filter(lambda b: len(b) <= 255),
    st.sampled_from(BAD_UTF8),
    st.binary(min_size=1, max_size=40),
)


# ---------------------------------------------------------------------- frames

NAMES = [b"", b"q1", b"dlq", b"hq", b"ttl", b"lim", b"dl", b"fan", b"hdr", b"amq.direct",
         b"amq.topic", b"amq.headers", b"c1", b"x"]
plain_names = st.sampled_from(NAMES)
ex_types = st.sampled_from([b"direct", b"fanout", b"topic", b"headers", b"x-nope", b""])
simple_tables = st.sampled_from([table([]), table([(b"x-match", b"S" + ls(b"any"))]),
                                 table([(b"x-message-ttl", b"I" + u32(50))]),
                                 table([(b"x-max-length", b"b\x01")]),
                                 table([(b"x-expires", b"l" + u64(10**6))])])
bits = st.integers(0, 255)
nums = st.one_of(st.integers(0, 4), st.integers(0, 2**64 - 1))


def methods(names, tbls):
    """(class, method, arguments) of the methods a client sends on a channel."""
    n = names
    return st.one_of(
        st.tuples(n, bits, tbls).map(lambda t: (50, 10, u16(0) + ss(t[0]) + u8(t[1]) + t[2])),
        st.tuples(n, ex_types, bits, tbls).map(
            lambda t: (40, 10, u16(0) + ss(t[0]) + ss(t[1]) + u8(t[2]) + t[3])),
        st.tuples(n, n, n, bits, tbls).map(
            lambda t: (50, 20, u16(0) + ss(t[0]) + ss(t[1]) + ss(t[2]) + u8(t[3]) + t[4])),
        st.tuples(n, n, n, tbls).map(
            lambda t: (50, 50, u16(0) + ss(t[0]) + ss(t[1]) + ss(t[2]) + t[3])),
        st.tuples(n, n, n, bits, tbls).map(
            lambda t: (40, 30, u16(0) + ss(t[0]) + ss(t[1]) + ss(t[2]) + u8(t[3]) + t[4])),
        st.tuples(n, n, bits, tbls).map(
            lambda t: (60, 20, u16(0) + ss(t[0]) + ss(t[1]) + u8(t[2]) + t[3])),
        st.tuples(st.sampled_from([(60, 70), (50, 30), (50, 40), (40, 20)]), n, bits).map(
            lambda t: (*t[0], u16(0) + ss(t[1]) + u8(t[2]))),
        st.tuples(n, bits).map(lambda t: (60, 30, ss(t[0]) + u8(t[1]))),
        st.tuples(nums, bits).map(lambda t: (60, 10, u32(t[0] & 0xFFFFFFFF)
                                             + u16(t[0] & 0xFFFF) + u8(t[1]))),
        st.tuples(st.sampled_from([80, 90, 120]), nums, bits).map(
            lambda t: (60, t[0], u64(t[1]) + u8(t[2]))),
        st.tuples(st.sampled_from([(60, 110), (85, 10), (20, 20)]), bits).map(
            lambda t: (*t[0], u8(t[1]))),
        st.sampled_from([(90, 10, b""), (90, 20, b""), (90, 30, b""), (20, 10, b"\x00"),
                         (20, 40, u16(200) + ss(b"bye") + u32(0)), (20, 41, b""),
                         (10, 50, u16(200) + ss(b"") + u32(0)), (60, 100, b"\x00"),
                         (99, 1, b""), (60, 255, b"")]),
    )


channels = st.sampled_from([1, 1, 1, 1, 2, 0, 3, 65535])


def units(names, tbls, props):
    """One step of a client: a method frame, a whole publish, a heartbeat, raw content."""
    return st.one_of(
        st.tuples(channels, methods(names, tbls)).map(lambda t: method(t[0], *t[1])),
        st.tuples(channels, names, names, props, st.binary(max_size=20), bits).map(
            lambda t: publish(t[0], t[1], t[2], t[3], t[4], t[5] & 1)),
        st.tuples(channels, props, st.integers(0, 2**64 - 1)).map(
            lambda t: header(t[0], t[1], t[2] if t[2] < 2**63 else 5)),
        st.tuples(channels, st.binary(max_size=10)).map(lambda t: frame(3, *t)),
        st.tuples(channels, st.binary(max_size=3)).map(lambda t: frame(8, *t)),
        st.just(method(1, 20, 10, b"\x00")), st.just(method(2, 20, 10, b"\x00")),
    )


def frame_faults(unit: bytes, kind: int, where: int, val: int) -> bytes:
    """Frame-level faults on an encoded frame (or frames): a bad type, end octet, size,
    a payload cut short (its size fixed up), or bytes after it."""
    size = struct.unpack_from(">I", unit, 3)[0]
    if kind == 0:
        return bytes((val % 12,)) + unit[1:]
    if kind == 1:
        return unit[:7 + size] + bytes((val,)) + unit[8 + size:]
    if kind == 2:
        return unit[:3] + u32(size + 1 + where % 300) + unit[7:]
    if kind == 3:
        cut = where % (size + 1)
        return unit[:3] + u32(cut) + unit[7:7 + cut] + b"\xce" + unit[8 + size:]
    if kind == 4:
        return unit[:3] + u32(2**31 + where) + unit[7:]
    return unit + bytes((val,)) * (where % 9)


def faulty(us):
    return st.one_of(us, st.tuples(us, st.integers(0, 5), st.integers(0, 2**16),
                                   bits).map(lambda t: frame_faults(*t)))


def payload_mutated(us):
    """Byte mutations inside a frame's payload, the frame around it kept whole."""
    return st.one_of(us, st.tuples(us, mutations).map(lambda t: mutate_payload(*t)))


# ---------------------------------------------------------------------- handshake

no_nul = st.binary(max_size=8).filter(lambda b: b"\x00" not in b)


def _utf8(b: bytes) -> bool:
    try:
        b.decode()
        return True
    except UnicodeDecodeError:
        return False


def plain(users, passwords):
    return st.tuples(st.sampled_from([b"", b"guest"]), users,
                     st.sampled_from([b"guest", b""]) | passwords).map(
        lambda t: (b"PLAIN", b"\x00".join(t)))


# user names and passwords in any bytes (invalid UTF-8 too: RabbitMQ answers 403)
plain_any_user = plain(odd_names, no_nul)
responses = st.one_of(
    plain(odd_names.filter(_utf8), no_nul.filter(_utf8)),
    st.binary(max_size=20).filter(_utf8).map(lambda b: (b"PLAIN", b)),
    st.tuples(tables, mutations).map(lambda t: (b"AMQPLAIN", _mutate(t[0], t[1])[4:])),
    st.just((b"AMQPLAIN", table([(b"LOGIN", b"S" + ls(b"guest")),
                                 (b"PASSWORD", b"S" + ls(b"guest"))])[4:])),
    st.tuples(st.sampled_from([b"EXTERNAL", b"", b"\xff"]), st.binary(max_size=5)),
)


def mutate_payload(unit: bytes, ops) -> bytes:
    size = struct.unpack_from(">I", unit, 3)[0]
    body = _mutate(unit[7:7 + size], ops)
    return unit[:3] + u32(len(body)) + body + b"\xce" + unit[8 + size:]
