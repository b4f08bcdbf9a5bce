"""A tiny raw AMQP 0-9-1 client for interop tests that must send bytes no client library
would: a socket, pamqp to encode the ordinary frames, and a reader that returns what the
broker answered (frames, and whether it closed the socket).
"""
from __future__ import annotations

import socket
import struct
import time

from pamqp import commands as C
from pamqp import frame as pframe
from pamqp import header as pheader

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
_frame_hdr = struct.Struct(">BHI")


def frame(ftype: int, channel: int, payload: bytes) -> bytes:
    """One raw frame."""
    return _frame_hdr.pack(ftype, channel, len(payload)) + payload + b"\xce"


def method(channel: int, m) -> bytes:
    return pframe.marshal(m, channel)


def publish_frames(channel: int, props: bytes, body: bytes = b"x", exchange: str = "",
                   routing_key: str = "", body_size: int | None = None) -> bytes:
    """Basic.Publish + a content header with the raw property bytes ``props`` (flags word
    first) + one body frame."""
    size = len(body) if body_size is None else body_size
    header = struct.pack(">HHQ", 60, 0, size) + props
    out = method(channel, C.Basic.Publish(exchange=exchange, routing_key=routing_key))
    out += frame(2, channel, header)
    if body:
        out += frame(3, channel, body)
    return out


class _Close:
    """A Connection.Close / Channel.Close whose reply text pamqp cannot decode."""

    def __init__(self, name, reply_code, reply_text, class_id, method_id):
        self.name, self.reply_code, self.reply_text = name, reply_code, reply_text
        self.class_id, self.method_id = class_id, method_id


def _lenient_close(raw: bytes):
    cls, meth, code, n = struct.unpack_from(">HHHB", raw, 7)
    name = {(10, 50): "Connection.Close", (20, 40): "Channel.Close"}.get((cls, meth))
    if name is None:
        raise ValueError(f"cannot decode frame {raw!r}")
    text = raw[14:14 + n].decode("utf-8", "replace")
    class_id, method_id = struct.unpack_from(">HH", raw, 14 + n)
    return _Close(name, code, text, class_id, method_id)


class RawClient:
    def __init__(self, host: str, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.closed = False       # the broker closed the socket

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> bool:
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.closed = True
            return False
        self.buf += data
        return True

    def read_frame(self, timeout: float = 5.0):
        """(channel, pamqp frame) or None when nothing came in time or the socket closed."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 7:
                size = _frame_hdr.unpack_from(self.buf)[2]
                if len(self.buf) >= size + 8:
                    raw, self.buf = self.buf[:size + 8], self.buf[size + 8:]
                    try:
                        _consumed, channel, f = pframe.unmarshal(raw)
                    except Exception:  # pamqp refuses e.g. a reply text cut mid-character
                        channel, f = _frame_hdr.unpack_from(raw)[1], _lenient_close(raw)
                    return channel, f
            if self.closed or time.monotonic() >= deadline or not self._fill(deadline):
                return None

    def wait_for(self, name: str, timeout: float = 5.0):
        """Frames until one named ``name`` (returned); None if the broker closed or was
        silent first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.read_frame(deadline - time.monotonic())
            if got is None:
                return None
            if getattr(got[1], "name", None) == name:
                return got[1]
        return None

    def handshake(self, user: str = "guest", password: str = "guest", vhost: str = "/",
                  mechanism: str = "PLAIN", response: bytes | None = None,
                  open_channel: bool = True):
        """Up to Connection.OpenOk (and channel 1 opened); returns the reply that ended the
        handshake early (a Connection.Close), else None."""
        self.send(PROTOCOL_HEADER)
        assert self.wait_for("Connection.Start") is not None
        if response is None:
            response = b"\0" + user.encode() + b"\0" + password.encode()
        caps = {"authentication_failure_close": True, "consumer_cancel_notify": True,
                "publisher_confirms": True, "basic.nack": True}
        placeholder = b"?" * len(response)  # pamqp would encode a str as UTF-8
        self.send(method(0, C.Connection.StartOk(
            client_properties={"product": "raw", "capabilities": caps},
            mechanism=mechanism, response=placeholder.decode(), locale="en_US"))
            .replace(placeholder, response))
        got = self.read_frame()
        if got is None or got[1].name != "Connection.Tune":
            return got[1] if got else None
        tune = got[1]
        self.send(method(0, C.Connection.TuneOk(channel_max=tune.channel_max,
                                                frame_max=tune.frame_max, heartbeat=0)))
        self.send(method(0, C.Connection.Open(virtual_host=vhost)))
        got = self.read_frame()
        if got is None or got[1].name != "Connection.OpenOk":
            return got[1] if got else None
        if open_channel:
            self.send(method(1, C.Channel.Open()))
            assert self.wait_for("Channel.OpenOk") is not None
        return None

    def rpc(self, channel: int, m, reply: str):
        self.send(method(channel, m))
        return self.wait_for(reply)

    def close_reply(self, timeout: float = 5.0):
        """The Connection.Close the broker sends next (answered with Close-Ok), or None if
        the socket closed (or nothing came) without one."""
        got = self.wait_for("Connection.Close", timeout)
        if got is not None:
            try:
                self.send(method(0, C.Connection.CloseOk()))
            except OSError:
                pass
        return got

    def channel_close_reply(self, channel: int = 1, timeout: float = 5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.read_frame(deadline - time.monotonic())
            if got is None:
                return None
            if getattr(got[1], "name", None) in ("Channel.Close", "Connection.Close"):
                return got[1]
        return None


def header_frame(channel: int, props: bytes, body_size: int = 1) -> bytes:
    return frame(2, channel, struct.pack(">HHQ", 60, 0, body_size) + props)


__all__ = ["RawClient", "frame", "method", "publish_frames", "header_frame", "pheader"]
