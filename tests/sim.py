"""A client simulator for the sans-I/O Connection: pamqp frames in, pamqp frames out.

No sockets, no client library, no sleeping: time is an attribute passed to the
connection.  ``mode="bytewise"`` feeds every write one byte at a time, which exercises the
frame reader's partial-frame paths with exactly the same bytes as ``mode="whole"``.
"""
from __future__ import annotations

from pamqp import body as pbody
from pamqp import commands as C
from pamqp import frame as pframe
from pamqp import header as pheader
from pamqp import heartbeat as pheartbeat

from amqpbroker.broker import Broker
from amqpbroker.config import Config
from amqpbroker.auth import Transport
from amqpbroker.connection import Connection

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
MODES = ("whole", "bytewise")

# what pika advertises in client-properties.capabilities
CLIENT_CAPS = {
    "authentication_failure_close": True,
    "basic.nack": True,
    "connection.blocked": True,
    "consumer_cancel_notify": True,
    "publisher_confirms": True,
}


class Msg:
    """A content-carrying method (Deliver / GetOk / Return) with its header and body."""

    def __init__(self, channel: int, method, header: pheader.ContentHeader, body: bytes,
                 body_frames: int):
        self.channel = channel
        self.method = method
        self.header = header
        self.properties = header.properties
        self.body = body
        self.body_frames = body_frames

    def __repr__(self) -> str:
        return f"Msg({self.channel}, {self.method!r}, {self.body!r})"


def decode(data: bytes) -> list[tuple[int, object]]:
    """Split server output into (channel, pamqp frame) pairs; asserts nothing is left."""
    out = []
    pos = 0
    while pos < len(data):
        if data[pos:pos + 4] == b"AMQP":
            out.append((0, pheader.ProtocolHeader(data[pos + 5], data[pos + 6], data[pos + 7])))
            pos += 8
            continue
        consumed, channel, frame = pframe.unmarshal(data[pos:])
        out.append((channel, frame))
        pos += consumed
    return out


def name(frame) -> str:
    if isinstance(frame, pbody.ContentBody):
        return "ContentBody"
    if isinstance(frame, pheader.ContentHeader):
        return "ContentHeader"
    if isinstance(frame, pheartbeat.Heartbeat):
        return "Heartbeat"
    if isinstance(frame, pheader.ProtocolHeader):
        return "ProtocolHeader"
    return frame.name


def names(frames) -> list[str]:
    return [name(f) for _, f in frames]


def messages(frames) -> list[Msg]:
    """Assemble content-carrying methods with their header and bodies; other frames are
    skipped.  Asserts that content is complete and on one channel."""
    out = []
    i = 0
    while i < len(frames):
        ch, f = frames[i]
        if name(f) in ("Basic.Deliver", "Basic.GetOk", "Basic.Return"):
            hch, hdr = frames[i + 1]
            assert hch == ch and isinstance(hdr, pheader.ContentHeader), frames[i + 1]
            parts = []
            j = i + 2
            got = 0
            while got < hdr.body_size:
                bch, b = frames[j]
                assert bch == ch and isinstance(b, pbody.ContentBody), frames[j]
                parts.append(b.value)
                got += len(b.value)
                j += 1
            assert got == hdr.body_size
            out.append(Msg(ch, f, hdr, b"".join(parts), j - i - 2))
            i = j
        else:
            i += 1
    return out


class Client:
    def __init__(self, broker: Broker | None = None, config: Config | None = None,
                 mode: str = "whole", peer: tuple = ("127.0.0.1", 5000), now: float = 0.0,
                 transport: Transport | None = None):
        assert mode in MODES
        self.broker = broker if broker is not None else Broker(config or Config())
        self.conn = Connection(self.broker, transport or Transport(peer=peer), now=now)
        self.mode = mode
        self.now = now
        self.frame_max = self.broker.config.limits.frame_max

    # ------------------------------------------------------------------ bytes

    def send_raw(self, data: bytes) -> None:
        if self.mode == "bytewise":
            for i in range(len(data)):
                self.conn.receive_data(data[i:i + 1], self.now)
        else:
            self.conn.receive_data(data, self.now)

    def recv(self) -> list[tuple[int, object]]:
        return decode(self.conn.data_to_send())

    def send(self, channel: int, *frames) -> None:
        self.send_raw(b"".join(pframe.marshal(f, channel) for f in frames))

    def rpc(self, channel: int, *frames) -> list[tuple[int, object]]:
        """Send frames, return whatever the server wrote in response."""
        self.send(channel, *frames)
        return self.recv()

    def call(self, channel: int, method, expect: str | None = None):
        """Send one method; return the single reply frame (asserting its name if given)."""
        frames = self.rpc(channel, method)
        assert len(frames) == 1, frames
        ch, f = frames[0]
        if expect is not None:
            assert name(f) == expect, (f, frames)
            assert ch == channel
        return f

    # ------------------------------------------------------------------ time

    def tick(self, now: float) -> list[tuple[int, object]]:
        self.now = now
        self.conn.handle_timer(now)
        return self.recv()

    # ------------------------------------------------------------------ handshake

    def start(self) -> C.Connection.Start:
        self.send_raw(PROTOCOL_HEADER)
        frames = self.recv()
        assert names(frames) == ["Connection.Start"], frames
        return frames[0][1]

    def start_ok(self, user: str = "guest", password: str = "guest", mechanism="PLAIN",
                 response=None, capabilities: dict | None = None, properties=None):
        props = dict(properties or {"product": "sim", "platform": "Python"})
        props["capabilities"] = dict(CLIENT_CAPS if capabilities is None else capabilities)
        if response is None:
            response = f"\0{user}\0{password}"
        return self.rpc(0, C.Connection.StartOk(client_properties=props, mechanism=mechanism,
                                                response=response, locale="en_US"))

    def handshake(self, vhost: str = "/", heartbeat: int = 0, frame_max: int | None = None,
                  channel_max: int | None = None, capabilities: dict | None = None,
                  user: str = "guest", password: str = "guest") -> None:
        self.start()
        frames = self.start_ok(user, password, capabilities=capabilities)
        assert names(frames) == ["Connection.Tune"], frames
        tune = frames[0][1]
        self.frame_max = frame_max or tune.frame_max
        frames = self.rpc(0, C.Connection.TuneOk(
            channel_max=channel_max or tune.channel_max, frame_max=self.frame_max,
            heartbeat=heartbeat))
        assert frames == [], frames
        self.call(0, C.Connection.Open(virtual_host=vhost), "Connection.OpenOk")

    def open_channel(self, channel: int = 1) -> None:
        self.call(channel, C.Channel.Open(), "Channel.OpenOk")

    # ------------------------------------------------------------------ conveniences

    def declare(self, channel: int, queue: str = "", **kw) -> C.Queue.DeclareOk:
        return self.call(channel, C.Queue.Declare(queue=queue, **kw), "Queue.DeclareOk")

    def publish_frames(self, exchange: str, routing_key: str, body: bytes,
                       properties: C.Basic.Properties | None = None, mandatory=False,
                       immediate=False, body_size: int | None = None) -> list:
        frames = [C.Basic.Publish(exchange=exchange, routing_key=routing_key,
                                  mandatory=mandatory, immediate=immediate),
                  pheader.ContentHeader(0, len(body) if body_size is None else body_size,
                                        properties or C.Basic.Properties())]
        chunk = self.frame_max - 8
        for i in range(0, len(body), chunk):
            frames.append(pbody.ContentBody(body[i:i + chunk]))
        return frames

    def publish(self, channel: int, exchange: str, routing_key: str, body: bytes = b"",
                properties: C.Basic.Properties | None = None, mandatory=False):
        """Publish and return whatever the server wrote in response."""
        return self.rpc(channel, *self.publish_frames(exchange, routing_key, body, properties,
                                                      mandatory))

    def ack(self, channel: int, tag: int, multiple=False):
        return self.rpc(channel, C.Basic.Ack(delivery_tag=tag, multiple=multiple))

    def get(self, channel: int, queue: str, no_ack=False) -> Msg | None:
        frames = self.rpc(channel, C.Basic.Get(queue=queue, no_ack=no_ack))
        if names(frames) == ["Basic.GetEmpty"]:
            return None
        msgs = messages(frames)
        assert len(msgs) == 1, frames
        return msgs[0]


def connected(mode: str = "whole", broker: Broker | None = None, channel: int | None = 1,
              **kw) -> Client:
    """A client past the handshake with channel 1 open."""
    c = Client(broker=broker, mode=mode)
    c.handshake(**kw)
    if channel:
        c.open_channel(channel)
    return c


def close_frame(frames, channel: int = 0):
    """The single Connection.Close (channel 0) or Channel.Close in ``frames``."""
    want = "Connection.Close" if channel == 0 else "Channel.Close"
    found = [f for ch, f in frames if name(f) == want and ch == channel]
    assert len(found) == 1, frames
    return found[0]
