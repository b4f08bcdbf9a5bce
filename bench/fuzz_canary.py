"""The canary of bench/fuzz.py: one well-behaved connection that publishes persistent,
confirmed messages to the durable queue ``fz.canary`` and consumes them (manual acks)
throughout the campaign.  It counts sent / confirmed / received, losses (confirmed, never
received by the end) and stalls (a confirm or a delivery more than 1 s late, counted once
per episode); it reconnects when the broker drops it or restarts."""
from __future__ import annotations

import asyncio
import struct
import time

from fuzz_gen import handshake, method, props_block, publish, ss, table, u16, u32, u64
from fuzz_session import CHANNEL_CLOSE, CONNECTION_CLOSE, Reader, close_of

STALL = 1.0


class Canary:
    def __init__(self, target, rate: float = 50.0):
        self.target = target
        self.rate = rate
        self.next_id = 0
        self.sent = 0
        self.confirmed: dict[int, float] = {}   # id -> confirm time, until received
        self.received: set[int] = set()
        self.confirmed_total = 0
        self.nacked = 0
        self.duplicates = 0
        self.unconfirmed_at_loss = 0
        self.reconnects = 0
        self.closes: list[str] = []
        self.stalls = 0
        self.max_confirm_latency = 0.0
        self.max_delivery_latency = 0.0
        self._stalled = False
        self._pending: dict[int, tuple[int, float]] = {}   # publish seq -> (id, sent at)
        self.publishing = True

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._connection(stop)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                    ConnectionError):
                pass
            if stop.is_set():
                break
            self.reconnects += 1
            self.unconfirmed_at_loss += len(self._pending)
            self._pending.clear()
            await asyncio.sleep(0.3)

    async def _connection(self, stop: asyncio.Event) -> None:
        host, port = self.target()
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
        self._writer = writer
        writer.write(handshake() + method(1, 85, 10, b"\x00") + method(2, 20, 10, b"\x00")
                     + method(2, 60, 10, u32(0) + u16(200) + b"\x00")
                     + method(2, 60, 20, u16(0) + ss(b"fz.canary") + ss(b"canary") + b"\x00"
                              + table([])))
        self._seq = 0
        tasks = [asyncio.create_task(self._read(reader, writer)),
                 asyncio.create_task(self._publish(writer, stop)),
                 asyncio.create_task(self._watch(stop))]
        try:
            done, _ = await asyncio.wait([tasks[0], asyncio.create_task(stop.wait())],
                                         return_when=asyncio.FIRST_COMPLETED)
            if tasks[0] in done:
                tasks[0].result()   # raises what ended it
        finally:
            for t in tasks:
                t.cancel()
            writer.close()

    async def _publish(self, writer, stop: asyncio.Event) -> None:
        props = props_block({0x1000: b"\x02"})
        period = 1.0 / self.rate
        while not stop.is_set():
            if self.publishing:
                self.next_id += 1
                self._seq += 1
                self._pending[self._seq] = (self.next_id, time.monotonic())
                writer.write(publish(1, b"", b"fz.canary", props, b"%d" % self.next_id))
                self.sent += 1
                await writer.drain()
            await asyncio.sleep(period)

    async def _read(self, reader, writer) -> None:
        frames = Reader()
        delivery = None
        while True:
            chunk = await reader.read(1 << 16)
            if not chunk:
                raise ConnectionError("eof")
            acks = []
            for ftype, ch, p in frames.feed(chunk):
                if ftype == 1 and p[:4] in (CONNECTION_CLOSE, CHANNEL_CLOSE):
                    kind, code, text, _c, _m = close_of(p)
                    self.closes.append(f"{kind} {code} {text}")
                    raise ConnectionError(text)
                if ftype == 1 and ch == 1 and p[:4] in (b"\x00\x3c\x00\x50", b"\x00\x3c\x00\x78"):
                    tag, multiple = struct.unpack_from(">QB", p, 4)
                    self._confirm(tag, bool(multiple & 1), p[3] == 0x50)
                elif ftype == 1 and ch == 2 and p[:4] == b"\x00\x3c\x00\x3c":
                    n = p[4]
                    delivery = struct.unpack_from(">Q", p, 5 + n)[0]
                elif ftype == 3 and ch == 2 and delivery is not None:
                    self._received(int(p))
                    acks.append(delivery)
                    delivery = None
            if acks:
                writer.write(method(2, 60, 80, u64(max(acks)) + b"\x01"))

    def _confirm(self, tag: int, multiple: bool, ack: bool) -> None:
        now = time.monotonic()
        seqs = [s for s in self._pending if s <= tag] if multiple else [tag]
        for s in seqs:
            entry = self._pending.pop(s, None)
            if entry is None:
                continue
            mid, at = entry
            self.max_confirm_latency = max(self.max_confirm_latency, now - at)
            if ack:
                self.confirmed_total += 1
                if mid not in self.received:
                    self.confirmed[mid] = now
            else:
                self.nacked += 1

    def _received(self, mid: int) -> None:
        if mid in self.received:
            self.duplicates += 1
            return
        self.received.add(mid)
        at = self.confirmed.pop(mid, None)
        if at is not None:
            self.max_delivery_latency = max(self.max_delivery_latency, time.monotonic() - at)

    async def _watch(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(0.1)
            now = time.monotonic()
            oldest = min((at for _id, at in self._pending.values()), default=now)
            late = now - oldest > STALL or any(now - at > STALL
                                               for at in list(self.confirmed.values())[:50])
            if late and not self._stalled:
                self.stalls += 1
            self._stalled = late

    async def drain(self, timeout: float = 15.0) -> None:
        """Stop publishing; wait until every confirmed message has arrived."""
        self.publishing = False
        deadline = time.monotonic() + timeout
        while (self.confirmed or self._pending) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    def summary(self) -> dict:
        return {"sent": self.sent, "confirmed": self.confirmed_total, "nacked": self.nacked,
                "received": len(self.received), "lost": len(self.confirmed),
                "duplicates": self.duplicates, "unconfirmed_at_loss": self.unconfirmed_at_loss,
                "stalls": self.stalls, "reconnects": self.reconnects,
                "max_confirm_latency_s": round(self.max_confirm_latency, 3),
                "max_delivery_latency_s": round(self.max_delivery_latency, 3),
                "closes": self.closes[:20]}
