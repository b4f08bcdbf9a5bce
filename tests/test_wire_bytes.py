"""Exact bytes of server-sent frames where RabbitMQ's differ from pamqp's defaults (the
full comparison against a live RabbitMQ is interop/test_fidelity.py)."""
from __future__ import annotations

from pamqp import commands as C

from .sim import connected


def test_channel_open_ok_has_an_empty_channel_id():
    # RabbitMQ: 01 0001 00000008 0014 000b 00000000 ce; pamqp's default reserved longstr
    # is "0", on which amqp-client.js's AMQPSession hangs
    c = connected(channel=None)
    c.send(7, C.Channel.Open())
    assert c.conn.data_to_send() == bytes.fromhex("01 0007 00000008 0014000b 00000000 ce")
