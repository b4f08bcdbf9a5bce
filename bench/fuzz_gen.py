"""Frame generators for bench/fuzz.py: cheap at run time.

Everything is precomputed at start: pools of valid frames (publishes with every property
and field type, declares, binds, consumes, gets, qos, heartbeats, channel cycles) and of
mutated ones (byte mutations of payloads, frame-level faults, malformed property blocks,
odd names and values, every-type argument tables).  A session then only picks from the
pools and joins bytes.  Bytes are built by hand, so anything can be sent.
"""
from __future__ import annotations

import os
import random
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.amqp_bytes import (BAD_TAGS, BAD_UTF8, HUGE, PROTOCOL_HEADER,  # noqa: E402,F401
                              SHORTSTR_PROPS, deep, frame, ls, method, props_block, publish,
                              ss, table, u8, u16, u32, u64)

CONNECTION_CLOSE, CONNECTION_CLOSE_OK = b"\x00\x0a\x00\x32", b"\x00\x0a\x00\x33"
CHANNEL_CLOSE = b"\x00\x14\x00\x28"


def start_ok(user: bytes = b"guest", password: bytes = b"guest") -> bytes:
    props = table([(b"product", b"S" + ls(b"fuzz")),
                   (b"capabilities", b"F" + table([(b"authentication_failure_close",
                                                    b"t\x01"), (b"basic.nack", b"t\x01"),
                                                   (b"publisher_confirms", b"t\x01")]))])
    return method(0, 10, 11, props + ss(b"PLAIN") + ls(b"\x00" + user + b"\x00" + password)
                  + ss(b"en_US"))


def handshake(user: bytes = b"guest", password: bytes = b"guest", vhost: bytes = b"/") -> bytes:
    """Protocol header to channel 1 open, pipelined (both brokers take it)."""
    return (PROTOCOL_HEADER + start_ok(user, password)
            + method(0, 10, 31, u16(2047) + u32(131072) + u16(0))
            + method(0, 10, 40, ss(vhost) + ss(b"") + b"\x00") + method(1, 20, 10, b"\x00"))


def close_frames() -> bytes:
    return method(0, 10, 50, u16(200) + ss(b"bye") + u32(0))


# the shared entities every session uses (declared once, on both brokers for a replay)
DLX = [(b"x-dead-letter-exchange", b"S" + ls(b"")),
       (b"x-dead-letter-routing-key", b"S" + ls(b"fz.dlq"))]
SHARED_QUEUES = {
    b"fz.ttl": DLX + [(b"x-message-ttl", b"I" + u32(50)), (b"x-max-length", b"I" + u32(200))],
    b"fz.lim": DLX + [(b"x-max-length", b"I" + u32(5))],
    b"fz.dl": DLX + [(b"x-delivery-limit", b"I" + u32(1)), (b"x-max-length", b"I" + u32(200))],
    b"fz.dlq": [(b"x-max-length", b"I" + u32(1000)), (b"x-message-ttl", b"I" + u32(60000))],
    b"fz.canary": [],
}


def setup_frames(reference: bool = False, names: dict | None = None) -> bytes:
    """The shared entities; ``reference``: for RabbitMQ, which refuses x-delivery-limit on
    a classic queue (ours takes it on every queue: a documented difference).  ``names``
    renames them (the replay gives each sample its own)."""
    out = b"".join(_setup(reference))
    for old, new in (names or {}).items():
        out = out.replace(ss(old), ss(new)).replace(ls(old), ls(new))
    return out


def _setup(reference: bool) -> list[bytes]:
    out = [method(1, 40, 10, u16(0) + ss(b"fz.fan") + ss(b"fanout") + b"\x02" + table([])),
           method(1, 40, 10, u16(0) + ss(b"fz.hdr") + ss(b"headers") + b"\x02" + table([]))]
    for q, args in SHARED_QUEUES.items():
        if reference:
            args = [(k, v) for k, v in args if k != b"x-delivery-limit"]
        out.append(method(1, 50, 10, u16(0) + ss(q) + b"\x02" + table(args)))
    for q in (b"fz.ttl", b"fz.lim", b"fz.dl"):
        out.append(method(1, 50, 20, u16(0) + ss(q) + ss(b"fz.fan") + ss(b"") + b"\x00"
                          + table([])))
    out.append(method(1, 50, 20, u16(0) + ss(b"fz.dlq") + ss(b"fz.hdr") + ss(b"") + b"\x00"
                      + table([(b"x-match", b"S" + ls(b"any")), (b"k", b"S" + ls(b"v"))])))
    return out


SHARED = (b"fz.fan", b"fz.hdr", *SHARED_QUEUES)


def teardown_frames(names: dict | None = None) -> bytes:
    names = names or {}
    out = [method(1, 40, 20, u16(0) + ss(names.get(x, x)) + b"\x00")
           for x in (b"fz.fan", b"fz.hdr")]
    out += [method(1, 50, 40, u16(0) + ss(names.get(q, q)) + b"\x00") for q in SHARED_QUEUES]
    return b"".join(out)


# ---------------------------------------------------------------------- values


def value(r: random.Random, depth: int = 0) -> bytes:
    """A random valid tagged field value of any type."""
    t = r.choice("tbBsuIilfdDTVSxAF" if depth < 3 else "tbBsuIilfdDTVSx")
    if t == "t":
        return b"t" + u8(r.randint(0, 1))
    if t in "bBsuIil":
        fmt = {"b": ">b", "B": ">B", "s": ">h", "u": ">H", "I": ">i", "i": ">I", "l": ">q"}[t]
        bits = struct.calcsize(fmt) * 8
        lo, hi = (-(1 << bits - 1), (1 << bits - 1) - 1) if t in "bsIl" else (0, (1 << bits) - 1)
        return t.encode() + struct.pack(fmt, r.choice([lo, hi, 0, 1, r.randint(lo, hi)]))
    if t == "f":
        return b"f" + struct.pack(">f", r.choice([0.1, -1.5, 3.4e38, r.random()]))
    if t == "d":
        return b"d" + struct.pack(">d", r.choice([0.1, 1e300, -0.0, float("inf"), r.random()]))
    if t == "D":
        return b"D" + struct.pack(">Bi", r.randint(0, 10), r.randint(-2**31, 2**31 - 1))
    if t == "T":
        return b"T" + u64(r.randint(0, 253402300799))
    if t == "V":
        return b"V"
    if t == "S":
        return b"S" + ls(r.choice([b"", b"v", "\u00e9\u961f".encode(), b"x" * 300]))
    if t == "x":
        return b"x" + ls(r.randbytes(r.randint(0, 8)))
    if t == "A":
        return b"A" + ls(b"".join(value(r, depth + 1) for _ in range(r.randint(0, 3))))
    return b"F" + rtable(r, depth + 1)


def rkey(r: random.Random) -> bytes:
    return r.choice([b"k", b"d", b"x-match", b"x-death", "\u00e9".encode(), b"k" * 200,
                     r.randbytes(3).hex().encode()])


def rtable(r: random.Random, depth: int = 0) -> bytes:
    return table([(rkey(r), value(r, depth)) for _ in range(r.randint(0, 4))])


def rprops(r: random.Random) -> bytes:
    parts = {0x1000: r.choice([b"\x01", b"\x02", b"\x02"])}
    for bit in r.sample(SHORTSTR_PROPS, r.randint(0, 3)):
        parts[bit] = ss(r.choice([b"text/plain", b"", "\u00e9".encode(), b"x" * 255]))
    if r.random() < 0.5:
        parts[0x2000] = rtable(r)
    elif r.random() < 0.1:   # sender-selected distribution, as RabbitMQ wants it
        parts[0x2000] = table([(b"CC", b"A" + ls(b"S" + ls(b"fz.dlq")))])
    if r.random() < 0.2:
        parts[0x0100] = ss(str(r.choice([0, 10, 1000, 60000])).encode())
    if r.random() < 0.2:
        parts[0x0040] = u64(r.randint(0, 2**33))
    if r.random() < 0.2:
        parts[0x0800] = u8(r.randint(0, 9))
    if r.random() < 0.1:
        parts[0x0010] = ss(b"guest")
    return props_block(parts)


# ---------------------------------------------------------------------- mutations

ODD_NAMES = [n.encode() for n in ("q-\u00e9", "\u961f\u5217", "a*b", "q!$%&()", "t\tab",
                                  "\U0001f600", "a" * 255, " ", "amq.x", "#")] + BAD_UTF8


def mutate_bytes(r: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(r.randint(1, 3)):
        if not out:
            break
        pos = r.randrange(len(out))
        k = r.randrange(4)
        if k == 0:
            out[pos] = r.choice(BAD_TAGS)
        elif k == 1:
            out[pos] = r.randrange(256)
        elif k == 2:
            out[pos] = (out[pos] + r.randint(1, 8)) & 0xFF
        else:
            del out[pos:]
    return bytes(out)


def split_frames(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos + 7 <= len(data):
        size = struct.unpack_from(">I", data, pos + 3)[0]
        out.append(data[pos:pos + 8 + size])
        pos += 8 + size
    return out


def mutate_payload(r: random.Random, f: bytes) -> bytes:
    """Mutations inside a frame's payload; mostly past a method's class and method id, so
    that they reach its arguments."""
    size = struct.unpack_from(">I", f, 3)[0]
    keep = 4 if f[0] == 1 and r.random() < 0.9 else 0
    body = f[7:7 + keep] + mutate_bytes(r, f[7 + keep:7 + size])
    return f[:3] + u32(len(body)) + body + b"\xce"


def frame_fault(r: random.Random, f: bytes) -> bytes:
    size = struct.unpack_from(">I", f, 3)[0]
    k = r.randrange(6)
    if k == 0:
        return bytes((r.choice([0, 4, 5, 7, 9, 11, 255]),)) + f[1:]
    if k == 1:
        return f[:-1] + bytes((r.randrange(256),))
    if k == 2:
        return f[:3] + u32(size + r.randint(1, 300)) + f[7:]
    if k == 3:
        cut = r.randint(min(4, size), size)
        return f[:3] + u32(cut) + f[7:7 + cut] + b"\xce"
    if k == 4:
        return f[:1] + u16(r.choice([0, 2, 9, 2047, 65535])) + f[3:]
    return f + r.randbytes(r.randint(1, 8))


def bad_props(r: random.Random) -> bytes:
    """Malformed property blocks and odd property values."""
    k = r.randrange(8)
    t = rtable(r)
    if k == 0:
        return mutate_bytes(r, props_block({0x2000: t, 0x1000: b"\x02"}))
    if k == 1:
        p = rprops(r)
        return u16(int.from_bytes(p[:2], "big") | 1) + r.randbytes(r.randint(0, 4)) + p[2:]
    if k == 2:
        return u16(0x2000) + u32(len(t) - 4 + r.randint(1, 300)) + t[4:]
    if k == 3:
        return u16(0x2000) + t[:max(4, len(t) - r.randint(1, 20))]
    if k == 4:
        return u16(0x2000) + table([(b"d", deep(r.randint(20, 400), r.choice([b"F", b"A"])))])
    if k == 5:
        return props_block({r.choice(SHORTSTR_PROPS): ss(r.choice(BAD_UTF8)), 0x1000: b"\x02"})
    if k == 6:
        return props_block({0x0040: u64(r.choice(HUGE))} if r.random() < 0.5 else
                           {0x2000: table([(b"t", b"T" + u64(r.choice(HUGE)))])})
    return props_block({0x2000: table([(r.choice(BAD_UTF8), b"S" + ls(r.choice(BAD_UTF8)))])})


# ---------------------------------------------------------------------- pools


def _unit(data: bytes) -> tuple[bytes, int]:
    return data, len(split_frames(data))


class Pools:
    """Precomputed units (bytes, frame count): valid ones and mutated ones, shared and per
    session slot (each slot has its own exclusive queue ``fz.x<slot>``)."""

    def __init__(self, slots: int, seed: int = 1, shared: int = 3000, mutated: int = 12000,
                 per_slot: int = 150):
        r = self.r = random.Random(seed)
        self.valid = [_unit(self._valid_shared(r)) for _ in range(shared)]
        self.bad = [_unit(self._bad_shared(r)) for _ in range(mutated)]
        self.slot_valid, self.slot_bad = [], []
        for s in range(slots):
            q = b"fz.x%d" % s
            valid = [_unit(b) for b in self._valid_own(r, q)]
            self.slot_valid.append(valid)
            self.slot_bad.append([_unit(self._bad_own(r, q, valid)) for _ in range(per_slot)])
        self.handshakes = [self._bad_handshake(r) for _ in range(500)]

    # valid -------------------------------------------------------------
    def _valid_shared(self, r) -> bytes:
        k = r.random()
        if k < 0.6:
            ex, rk = r.choice([(b"fz.fan", b""), (b"", b"fz.ttl"), (b"", b"fz.lim"),
                               (b"", b"fz.dl"), (b"", b"fz.dlq"), (b"fz.hdr", b""),
                               (b"amq.topic", b"a.b"), (b"", b"nowhere")])
            return publish(1, ex, rk, rprops(r), r.randbytes(r.choice([0, 1, 16, 64, 300])),
                           r.choice([0, 0, 1]))
        return r.choice([
            method(1, 60, 70, u16(0) + ss(r.choice([b"fz.dlq", b"fz.lim", b"fz.ttl"])) + b"\x01"),
            method(1, 60, 70, u16(0) + ss(b"fz.dl") + b"\x00"),
            method(1, 60, 20, u16(0) + ss(b"fz.dl") + ss(b"") + b"\x00" + table([])),
            method(1, 60, 10, u32(0) + u16(r.randint(0, 10)) + b"\x00"),
            method(1, 60, 80, u64(0) + b"\x01"),
            method(1, 60, 110, b"\x01"),
            method(1, 85, 10, b"\x00"),
            frame(8, 0, b""),
            # a channel opened and closed (a number not reused soon: RabbitMQ refuses an
            # open before its close-ok, 504 "second 'channel.open' seen")
            (lambda c: method(c, 20, 10, b"\x00") + method(c, 20, 40, u16(200) + ss(b"")
                              + u32(0)))(r.randint(3, 2047)),
            method(1, 50, 10, u16(0) + ss(b"fz.dlq") + b"\x01" + table([])),   # passive
        ])

    @staticmethod
    def _valid_own(r, q: bytes) -> list[bytes]:
        args = table([(b"x-expires", b"I" + u32(30000))])
        return [method(1, 50, 10, u16(0) + ss(q) + b"\x04" + args),
                method(1, 50, 20, u16(0) + ss(q) + ss(b"amq.topic") + ss(b"a.#") + b"\x00"
                       + table([])),
                method(1, 50, 20, u16(0) + ss(q) + ss(b"fz.fan") + ss(b"") + b"\x00"
                       + table([])),
                method(1, 60, 20, u16(0) + ss(q) + ss(b"") + b"\x02" + table([])),
                method(1, 60, 70, u16(0) + ss(q) + b"\x01"),
                method(1, 50, 30, u16(0) + ss(q) + b"\x00"),
                publish(1, b"", q, rprops(r), b"own")]

    # mutated -----------------------------------------------------------
    def _bad_shared(self, r) -> bytes:
        k = r.randrange(6)
        if k == 0:
            return publish(1, r.choice([b"fz.fan", b"", b"fz.hdr"]), b"fz.ttl", bad_props(r),
                           b"bad")
        if k == 1:
            return publish(1, r.choice(ODD_NAMES + [b"", b"amq.topic"]), r.choice(ODD_NAMES),
                           rprops(r), b"odd")
        if k == 2:
            return method(1, 60, 70, u16(0) + ss(r.choice(ODD_NAMES)) + b"\x01")
        if k == 3:
            return method(1, 40, 10, u16(0) + ss(r.choice(ODD_NAMES)) + ss(b"direct") + b"\x01"
                          + table([]))
        f = r.choice(split_frames(self._valid_shared(r)))
        return mutate_payload(r, f) if k == 4 else frame_fault(r, f)

    def _bad_own(self, r, q: bytes, valid) -> bytes:
        k = r.randrange(6)
        if k == 0:   # every-type argument tables
            return method(1, 50, 10, u16(0) + ss(q) + b"\x04" + rtable(r))
        if k == 1:
            return method(1, 50, 20, u16(0) + ss(q) + ss(b"amq.headers") + ss(b"") + b"\x00"
                          + rtable(r))
        if k == 2:   # odd names, exclusive so that nothing lingers
            return method(1, 50, 10, u16(0) + ss(r.choice(ODD_NAMES)) + b"\x04"
                          + table([(b"x-expires", b"I" + u32(30000))]))
        if k == 3:
            return method(1, 60, 20, u16(0) + ss(q) + ss(r.choice(ODD_NAMES)) + b"\x02"
                          + rtable(r))
        f = r.choice(split_frames(r.choice(valid)[0]))
        return mutate_payload(r, f) if k == 4 else frame_fault(r, f)

    @staticmethod
    def _bad_handshake(r) -> bytes:
        tune = method(0, 10, 31, u16(r.choice([0, 1, 2047, 65535])) +
                      u32(r.choice([0, 4095, 4096, 131072, 131073, 2**32 - 1])) +
                      u16(r.choice([0, 1, 60, 65535])))
        steps = [start_ok(r.choice(ODD_NAMES + [b"guest"]), b"guest"), tune,
                 method(0, 10, 40, ss(r.choice(ODD_NAMES + [b"/"])) + ss(b"") + b"\x00"),
                 method(1, 20, 10, b"\x00")]
        i = r.randrange(4)
        if r.random() < 0.5:
            steps[i] = mutate_payload(r, steps[i]) if r.random() < 0.7 else frame_fault(
                r, steps[i])
        return PROTOCOL_HEADER + b"".join(steps)

    # at run time -------------------------------------------------------
    def batch(self, r: random.Random, slot: int, units: int, p_bad: float
              ) -> tuple[bytes, int]:
        parts, frames = [], 0
        valid, bad = self.slot_valid[slot], self.slot_bad[slot]
        for _ in range(units):
            x = r.random()
            if x < p_bad:
                data, n = r.choice(self.bad) if x < p_bad * 0.6 else r.choice(bad)
            elif x < p_bad + 0.1:
                data, n = r.choice(valid)
            else:
                data, n = r.choice(self.valid)
            parts.append(data)
            frames += n
        return b"".join(parts), frames
