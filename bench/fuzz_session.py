"""One fuzzing connection of bench/fuzz.py, and the raw frame reader shared with the canary
and the replay.  A session: a short valid handshake (or, sometimes, a mutated one), then
batches of valid and mutated frames until the server closes the channel or the connection
(or the session's frame budget is spent); the bytes that led to a close are a sample."""
from __future__ import annotations

import asyncio
import random
import struct
from collections import Counter

from fuzz_gen import CHANNEL_CLOSE, CONNECTION_CLOSE, close_frames, handshake, method, u16, u32

_hdr = struct.Struct(">BHI")


class Reader:
    """Incoming bytes -> frames (type, channel, payload); tolerant of anything."""

    def __init__(self):
        self.buf = b""

    def feed(self, data: bytes):
        buf = self.buf + data if self.buf else data
        pos, end = 0, len(buf)
        out = []
        if buf.startswith(b"AMQP") and end >= 8:   # a protocol header back: refused
            out.append((-1, 0, buf[:8]))
            pos = 8
        while end - pos >= 7:
            ftype, ch, size = _hdr.unpack_from(buf, pos)
            if end - pos < size + 8:
                break
            out.append((ftype, ch, buf[pos + 7:pos + 7 + size]))
            pos += size + 8
        self.buf = buf[pos:]
        return out


def close_of(payload: bytes):
    """(kind, code, text, class, method) of a Connection.Close / Channel.Close payload."""
    kind = "connection" if payload[:4] == CONNECTION_CLOSE else "channel"
    code = struct.unpack_from(">H", payload, 4)[0]
    n = payload[6]
    text = payload[7:7 + n].decode("utf-8", "replace")
    cls, mid = struct.unpack_from(">HH", payload, 7 + n) if len(payload) >= 11 + n else (0, 0)
    return kind, code, text, cls, mid


class Stats:
    def __init__(self):
        self.connections = 0
        self.connect_failures = 0
        self.handshake_fuzz = 0
        self.frames = 0              # fuzzed frames sent after the handshake
        self.handshake_frames = 0
        self.bytes = 0
        self.closes = Counter()      # "connection 502" -> n
        self.silent = 0              # the socket closed without a Close
        self.samples = 0
        self.texts: dict[str, Counter] = {}   # "connection 502" -> texts (cut) -> n


class Sampler:
    """Writes samples.jsonl: at most ``cap`` per (kind, code), every 541 up to 5 * cap."""

    def __init__(self, path: str, cap: int = 400):
        self.f = open(path, "w")
        self.cap = cap
        self.count = Counter()

    def add(self, rec: dict) -> bool:
        key = (rec["kind"], rec["code"])
        if self.count[key] >= (self.cap * 5 if rec["code"] == 541 else self.cap):
            return False
        self.count[key] += 1
        import json
        self.f.write(json.dumps(rec) + "\n")
        return True

    def close(self):
        self.f.close()


async def session(pools, slot: int, r: random.Random, target, stats: Stats, sampler: Sampler,
                  p_bad: float = 0.03, p_handshake: float = 0.03, budget=(30, 600),
                  limit: float = float("inf")) -> None:
    host, port = target()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
    except (OSError, asyncio.TimeoutError):
        stats.connect_failures += 1
        await asyncio.sleep(0.2)
        return
    stats.connections += 1
    frames_in = Reader()
    fuzz_handshake = r.random() < p_handshake
    sent = bytearray()
    closed = None
    try:
        if fuzz_handshake:
            stats.handshake_fuzz += 1
            data = r.choice(pools.handshakes)
            sent += data
            writer.write(data)
            stats.handshake_frames += 4
        else:
            writer.write(handshake())
            stats.handshake_frames += 5
        # wait for Channel.Open-Ok (or whatever comes instead)
        opened = False
        while not opened and closed is None:
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            if not chunk:
                closed = ("eof",)
                break
            for ftype, ch, p in frames_in.feed(chunk):
                if ftype == 1 and p[:4] in (CONNECTION_CLOSE, CHANNEL_CLOSE):
                    closed = close_of(p)
                elif ftype == 1 and p[:4] == b"\x00\x14\x00\x0b":
                    opened = True
                elif ftype == -1:
                    closed = ("eof",)
        left = r.randint(*budget) if not fuzz_handshake else 0
        first = True
        while closed is None and left > 0 and stats.frames < limit:
            data, n = pools.batch(r, slot, r.randint(8, 40), p_bad)
            if first:   # the session's own exclusive queue first
                first = False
                own, k = pools.slot_valid[slot][0]
                data, n = own + data, n + k
            writer.write(data)
            sent += data
            stats.frames += n
            stats.bytes += len(data)
            left -= n
            await writer.drain()
            # whatever the server said meanwhile (deliveries, confirms, closes)
            try:
                chunk = await asyncio.wait_for(reader.read(1 << 20), 0.002)
            except asyncio.TimeoutError:
                continue
            if not chunk:
                closed = ("eof",)
                break
            for ftype, ch, p in frames_in.feed(chunk):
                if ftype == 1 and p[:4] in (CONNECTION_CLOSE, CHANNEL_CLOSE):
                    closed = close_of(p)
                    break
        if closed is None:
            # spent: drain a little to catch a close caused by the last batch
            writer.write(method(1, 20, 40, u16(200) + b"\x00" + u32(0)))
            closed = await _await_close(reader, frames_in, until=b"\x00\x14\x00\x29")
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
        closed = closed or ("eof",)
    finally:
        if closed and closed[0] in ("connection", "channel"):
            kind, code, text, cls, mid = closed
            stats.closes[f"{kind} {code}"] += 1
            stats.texts.setdefault(f"{kind} {code}", Counter())[text[:100]] += 1
            if sampler.add({"kind": kind, "code": code, "text": text, "class_id": cls,
                            "method_id": mid, "handshake": fuzz_handshake, "slot": slot,
                            "data": bytes(sent).hex()}):
                stats.samples += 1
        elif closed:   # closed without a Close (our broker, before Connection.Tune)
            stats.silent += 1
            if sampler.add({"kind": "eof", "code": 0, "text": "", "class_id": 0,
                            "method_id": 0, "handshake": fuzz_handshake, "slot": slot,
                            "data": bytes(sent).hex()}):
                stats.samples += 1
        try:
            if closed and closed[0] == "connection":
                writer.write(method(0, 10, 51))
            else:
                writer.write(close_frames())
            await asyncio.wait_for(writer.drain(), 1)
            writer.close()
            await asyncio.wait_for(writer.wait_closed(), 1)
        except (OSError, asyncio.TimeoutError):
            pass


async def _await_close(reader, frames_in, until: bytes, timeout: float = 0.5):
    """Read until ``until`` (a method id) arrives; a Close on the way is the result."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            chunk = await asyncio.wait_for(reader.read(1 << 20), max(0.01, deadline -
                                                                    loop.time()))
        except asyncio.TimeoutError:
            return None
        if not chunk:
            return ("eof",)
        for ftype, _ch, p in frames_in.feed(chunk):
            if ftype == 1 and p[:4] in (CONNECTION_CLOSE, CHANNEL_CLOSE):
                return close_of(p)
            if ftype == 1 and p[:4] == until:
                return None
