"""After close-ok to the client's connection.close the broker keeps reading (and discarding)
until the client closes the socket, as RabbitMQ does.  Node amqplib can send its close
ahead of publishes still queued on a channel; a broker that closed at once reset the socket
with that input unread and the client's close failed with EPIPE (amqplib's callback_api
"find high watermark" test)."""
from __future__ import annotations

import socket
import time

from pamqp import commands as C
from pamqp import frame as pframe
from pamqp import header as pheader
from pamqp import body as pbody


def _read_until(sock: socket.socket, buf: bytearray, want: str):
    while True:
        while len(buf) >= 7:
            try:
                used, channel, f = pframe.unmarshal(bytes(buf))
            except Exception:  # incomplete frame
                break
            del buf[:used]
            if getattr(f, "name", "") == want:
                return f
        data = sock.recv(65536)
        assert data, f"EOF before {want}"
        buf += data


def test_client_close_then_more_frames_no_reset(broker):
    sock = socket.create_connection((broker.host, broker.port), timeout=10)
    buf = bytearray()
    try:
        sock.sendall(b"AMQP\x00\x00\x09\x01")
        _read_until(sock, buf, "Connection.Start")
        sock.sendall(pframe.marshal(C.Connection.StartOk(
            client_properties={}, mechanism="PLAIN", response="\0guest\0guest",
            locale="en_US"), 0))
        tune = _read_until(sock, buf, "Connection.Tune")
        sock.sendall(pframe.marshal(C.Connection.TuneOk(
            channel_max=tune.channel_max, frame_max=tune.frame_max, heartbeat=0), 0))
        sock.sendall(pframe.marshal(C.Connection.Open(virtual_host="/"), 0))
        _read_until(sock, buf, "Connection.OpenOk")
        sock.sendall(pframe.marshal(C.Channel.Open(), 1))
        _read_until(sock, buf, "Channel.OpenOk")

        sock.sendall(pframe.marshal(C.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0), 0))
        _read_until(sock, buf, "Connection.CloseOk")

        body = b"x" * 1000
        publish = (pframe.marshal(C.Basic.Publish(exchange="", routing_key="nowhere"), 1)
                   + pframe.marshal(pheader.ContentHeader(body_size=len(body)), 1)
                   + pframe.marshal(pbody.ContentBody(body), 1))
        # 1.5 MB, more than the socket buffers hold: the server must keep reading them,
        # and must not have reset the socket
        for _ in range(10):
            time.sleep(0.05)
            sock.sendall(publish * 50)
    finally:
        sock.close()
