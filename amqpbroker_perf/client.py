"""The load tool's AMQP client: pamqp for the handshake and set-up, frame walking for the
hot methods (deliveries, confirms, returns), so that the tool measures the broker, not
itself.  A client of any broker: it imports nothing of amqpbroker."""
from __future__ import annotations

import asyncio
import struct
import urllib.parse

from pamqp import commands as C
from pamqp import frame as pframe

FRAME_HDR = struct.Struct(">BHI")
STAMP = struct.Struct(">IQQ")     # producer id, sequence number, monotonic send time (ns)
_u64 = struct.Struct(">Q")
DELIVER = b"\x00\x3c\x00\x3c"
ACK, NACK, RETURN = b"\x00\x3c\x00\x50", b"\x00\x3c\x00\x78", b"\x00\x3c\x00\x32"


class Client(asyncio.Protocol):
    """A minimal AMQP client: pamqp for the handshake and set-up, frame walking for the
    hot methods (deliveries and confirms)."""

    def __init__(self):
        self.buf = b""
        self.transport = None
        self.waiters: dict[tuple[int, str], asyncio.Future] = {}
        self.on_deliver = None   # (tag, first body bytes, body size)
        self.on_confirm = None   # (tag, multiple, ack)
        self.on_return = None
        self.closed = asyncio.get_running_loop().create_future()
        self.paused = False
        self.resume = asyncio.Event()
        self.resume.set()
        self._content = None     # (tag, size, got, first bytes) of the delivery being read

    # asyncio.Protocol
    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        if not self.closed.done():
            self.closed.set_result(exc)
        for fut in self.waiters.values():
            if not fut.done():
                fut.set_exception(ConnectionError(f"connection lost: {exc}"))
                fut.exception()  # nobody may be waiting any more: don't log it

    def pause_writing(self):
        self.resume.clear()

    def resume_writing(self):
        self.resume.set()

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pos, end = 0, len(buf)
        unpack = FRAME_HDR.unpack_from
        while end - pos >= 8:
            ftype, channel, size = unpack(buf, pos)
            stop = pos + 7 + size
            if stop >= end:
                break
            start = pos + 7
            pos = stop + 1
            if ftype == 3:
                c = self._content
                if c is not None:
                    if c[2] == 0:
                        c[3] = buf[start:start + STAMP.size]
                    c[2] += size
                    if c[2] >= c[1]:
                        self._content = None
                        if c[0] is not None and self.on_deliver:
                            self.on_deliver(c[0], c[3], c[1])
                continue
            if ftype == 2:
                c = self._content
                if c is not None:
                    c[1] = _u64.unpack_from(buf, start + 4)[0]
                    if c[1] == 0:
                        self._content = None
                        if c[0] is not None and self.on_deliver:
                            self.on_deliver(c[0], b"", 0)
                continue
            if ftype != 1:
                continue
            mid = buf[start:start + 4]
            if mid == DELIVER:
                n = buf[start + 4]
                tag = _u64.unpack_from(buf, start + 5 + n)[0]
                self._content = [tag, 0, 0, b""]
            elif mid == ACK or mid == NACK:
                tag = _u64.unpack_from(buf, start + 4)[0]
                if self.on_confirm:
                    self.on_confirm(tag, bool(buf[start + 12] & 1), mid == ACK)
            elif mid == RETURN:
                self._content = [None, 0, 0, b""]
                if self.on_return:
                    self.on_return()
            else:
                self._method(channel, buf[start:stop])
        self.buf = buf[pos:] if pos < end else b""

    def _method(self, channel: int, payload: bytes) -> None:
        _, _, method = pframe.unmarshal(FRAME_HDR.pack(1, channel, len(payload)) + payload +
                                        b"\xce")
        if method.name in ("Connection.Close", "Channel.Close"):
            err = ConnectionError(f"{method.name}: {method.reply_code} {method.reply_text}")
            for fut in self.waiters.values():
                if not fut.done():
                    fut.set_exception(err)
            self.waiters.clear()
            if method.name == "Connection.Close":
                self.send(0, C.Connection.CloseOk())
            return
        fut = self.waiters.pop((channel, method.name), None)
        if fut is not None and not fut.done():
            fut.set_result(method)

    def send(self, channel: int, method) -> None:
        self.transport.write(pframe.marshal(method, channel))

    async def call(self, channel: int, method, reply: str):
        fut = asyncio.get_running_loop().create_future()
        self.waiters[(channel, reply)] = fut
        self.send(channel, method)
        return await asyncio.wait_for(fut, 30)

    @classmethod
    async def connect(cls, url: str) -> "Client":
        u = urllib.parse.urlparse(url)
        loop = asyncio.get_running_loop()
        _, self = await loop.create_connection(cls, u.hostname or "127.0.0.1", u.port or 5672)
        start = loop.create_future()
        self.waiters[(0, "Connection.Start")] = start
        self.transport.write(b"AMQP\x00\x00\x09\x01")
        await asyncio.wait_for(start, 10)
        tune = await self.call(0, C.Connection.StartOk(
            client_properties={"product": "amqpbroker perf",
                               "capabilities": {"publisher_confirms": True,
                                                "consumer_cancel_notify": True}},
            mechanism="PLAIN",
            response=f"\0{urllib.parse.unquote(u.username or 'guest')}"
                     f"\0{urllib.parse.unquote(u.password or 'guest')}"),
            "Connection.Tune")
        self.frame_max = tune.frame_max or 131072
        self.send(0, C.Connection.TuneOk(channel_max=tune.channel_max,
                                         frame_max=self.frame_max, heartbeat=0))
        vhost = urllib.parse.unquote(u.path[1:]) if len(u.path) > 1 else "/"
        await self.call(0, C.Connection.Open(virtual_host=vhost), "Connection.OpenOk")
        await self.call(1, C.Channel.Open(), "Channel.OpenOk")
        return self

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.call(0, C.Connection.Close(reply_code=200,
                                                                   reply_text="bye"),
                                             "Connection.CloseOk"), 5)
        except Exception:
            pass
        self.transport.close()
