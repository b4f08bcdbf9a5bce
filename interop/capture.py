"""A capture proxy: a TCP proxy that records what the server sends to each client, split
into frames.

    async with CaptureProxy("127.0.0.1", 5672) as proxy:
        conn = await proxy.connect()        # a client connection through the proxy
        await conn.send(b"AMQP\\x00\\x00\\x09\\x01")
        await conn.expect(1)                # wait for one more server frame
        conn.recording.frames()             # every server->client frame so far, as bytes

Other clients can use it too: ``python interop/capture.py UPSTREAM_PORT [LISTEN_PORT]``
prints each server frame of every connection through it (e.g. a Node client's session
against RabbitMQ and then against us).
"""
from __future__ import annotations

import asyncio
import struct
import sys

from pamqp import commands

PROTOCOL_HEADER_PREFIX = b"AMQP"


def split_frames(data: bytes) -> list[bytes]:
    """Server output -> frames (a protocol header counts as one); an incomplete tail is
    returned as a last item of its own."""
    out, pos = [], 0
    while pos < len(data):
        if data[pos:pos + 4] == PROTOCOL_HEADER_PREFIX:
            end = pos + 8
        elif len(data) - pos >= 7:
            end = pos + 8 + struct.unpack_from(">I", data, pos + 3)[0]
        else:
            end = len(data)
        out.append(bytes(data[pos:end]))
        pos = end
    return out


def method_id(frame: bytes) -> tuple[int, int] | None:
    """(class, method) of a complete method frame, else None."""
    if len(frame) >= 12 and frame[0] == 1:
        return struct.unpack_from(">HH", frame, 7)
    return None


def describe(frame: bytes) -> str:
    """One line: channel, kind (a method's pamqp name), payload in hex."""
    if frame[:4] == PROTOCOL_HEADER_PREFIX:
        return f"protocol header {frame.hex()}"
    if len(frame) < 8:
        return f"incomplete {frame.hex()}"
    channel = struct.unpack_from(">H", frame, 1)[0]
    kind = {1: "method", 2: "header", 3: "body", 8: "heartbeat"}.get(frame[0], f"type {frame[0]}")
    mid = method_id(frame)
    if mid is not None:
        cls = commands.INDEX_MAPPING.get(mid[0] << 16 | mid[1])
        kind = cls.name if cls else f"method {mid}"
    text = ""
    if mid is not None:  # show the printable bytes too: reply texts, names
        text = " " + repr(bytes(b if 32 <= b < 127 else 46 for b in frame[11:-1]).decode())
    payload = frame[7:-1].hex()
    if len(payload) > 160 and mid != (10, 10):
        payload = payload[:160] + f"... ({len(frame) - 8} bytes)"
    return f"ch{channel} {kind} {payload}{text[:120]}"


class Recording:
    """Everything the server sent on one connection."""

    def __init__(self, number: int):
        self.number = number
        self.data = bytearray()
        self.closed = False          # the server closed its side
        self._changed = asyncio.Event()

    def frames(self) -> list[bytes]:
        return split_frames(bytes(self.data))

    def _complete_frames(self) -> int:
        frames = self.frames()
        if frames and (frames[-1][:4] != PROTOCOL_HEADER_PREFIX and (
                len(frames[-1]) < 8 or len(frames[-1]) < 8 + struct.unpack_from(
                    ">I", frames[-1], 3)[0])):
            return len(frames) - 1
        return len(frames)

    async def wait(self, n: int, timeout: float) -> bool:
        """Until ``n`` complete frames were recorded (True) or the server closed or
        ``timeout`` passed (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._complete_frames() < n:
            if self.closed:
                return False
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                return self._complete_frames() >= n
        return True

    async def wait_closed(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._closed_event(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def _closed_event(self) -> None:
        while not self.closed:
            self._changed.clear()
            await self._changed.wait()

    def _record(self, data: bytes) -> None:
        if data:
            self.data += data
        else:
            self.closed = True
        self._changed.set()


class ClientConnection:
    """A raw client through the proxy: bytes out, the server's frames in ``recording``."""

    def __init__(self, writer: asyncio.StreamWriter, reader: asyncio.StreamReader,
                 recording: Recording):
        self.writer = writer
        self.recording = recording
        self.expected = 0            # frames the script has waited for so far
        self._drain = asyncio.ensure_future(self._discard(reader))

    @staticmethod
    async def _discard(reader: asyncio.StreamReader) -> None:
        try:
            while await reader.read(65536):
                pass
        except (ConnectionError, OSError):
            pass

    async def send(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)
            try:
                await self.writer.drain()
            except (ConnectionError, OSError):
                pass

    async def expect(self, n: int, timeout: float = 5.0) -> bool:
        """Wait for ``n`` more server frames than waited for so far."""
        self.expected += n
        return await self.recording.wait(self.expected, timeout)

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass
        await asyncio.wait([self._drain], timeout=2)


class CaptureProxy:
    def __init__(self, upstream_host: str, upstream_port: int, listen_port: int = 0):
        self.upstream = (upstream_host, upstream_port)
        self.listen_port = listen_port
        self.port = 0
        self.recordings: list[Recording] = []
        self._accepted: asyncio.Queue = asyncio.Queue()
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()
        self.on_data = None          # callable(recording, data), for the command line

    async def __aenter__(self) -> "CaptureProxy":
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.listen_port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def connect(self) -> ClientConnection:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        recording = await self._accepted.get()
        return ClientConnection(writer, reader, recording)

    async def _accept(self, client_r: asyncio.StreamReader,
                      client_w: asyncio.StreamWriter) -> None:
        recording = Recording(len(self.recordings))
        self.recordings.append(recording)
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            recording._record(b"")
            client_w.close()
            await self._accepted.put(recording)
            return
        await self._accepted.put(recording)

        async def pump(src, dst, record) -> None:
            try:
                while True:
                    data = await src.read(65536)
                    if record is not None:
                        record._record(data)
                        if self.on_data is not None:
                            self.on_data(record, data)
                    if not data:
                        break
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                if record is not None and not record.closed:
                    record._record(b"")
            finally:
                dst.close()

        tasks = [asyncio.ensure_future(pump(client_r, up_w, None)),
                 asyncio.ensure_future(pump(up_r, client_w, recording))]
        self._tasks.update(tasks)
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.difference_update(tasks)


async def _main(upstream_port: int, listen_port: int) -> None:
    pending: dict[int, bytes] = {}

    def show(rec: Recording, data: bytes) -> None:
        buf = pending.get(rec.number, b"") + data
        frames = split_frames(buf)
        last = frames[-1] if frames else b""
        complete = frames if not last or len(last) >= 8 and (
            last[:4] == PROTOCOL_HEADER_PREFIX or
            len(last) == 8 + struct.unpack_from(">I", last, 3)[0]) else frames[:-1]
        pending[rec.number] = b"" if complete is frames else last
        for f in complete:
            print(f"conn{rec.number} {describe(f)}", flush=True)
        if not data:
            print(f"conn{rec.number} closed by the server", flush=True)

    async with CaptureProxy("127.0.0.1", upstream_port, listen_port) as proxy:
        proxy.on_data = show
        print(f"listening on 127.0.0.1:{proxy.port}", file=sys.stderr, flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_main(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 0))
