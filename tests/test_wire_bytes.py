"""Exact bytes of server-sent frames where RabbitMQ's differ from pamqp's defaults (the
full comparison against a live RabbitMQ is interop/test_fidelity.py)."""
from __future__ import annotations

from pamqp import commands as C

from .sim import Client, close_frame, connected


def test_channel_open_ok_has_an_empty_channel_id():
    # RabbitMQ: 01 0001 00000008 0014 000b 00000000 ce; pamqp's default reserved longstr
    # is "0", on which amqp-client.js's AMQPSession hangs
    c = connected(channel=None)
    c.send(7, C.Channel.Open())
    assert c.conn.data_to_send() == bytes.fromhex("01 0007 00000008 0014000b 00000000 ce")


def _confirming(c, queue="q"):
    c.declare(1, "full", arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
    c.declare(1, queue)
    c.call(1, C.Confirm.Select(), "Confirm.SelectOk")


def test_a_lone_nack_is_multiple_with_requeue_as_rabbitmq():
    # RabbitMQ 3.10 (coalesce_and_send; the nack record's requeue defaults to true):
    # 01 0001 0000000d 003c0078 0000000000000001 03 ce
    c = connected()
    _confirming(c)
    c.send(1, *c.publish_frames("", "full", b"x"))
    assert c.conn.data_to_send() == bytes.fromhex("01 0001 0000000d 003c0078 0000000000000001 03 ce")


def test_confirms_of_one_read_coalesced_as_rabbitmq():
    c = connected()
    _confirming(c)
    c.send(1, *c.publish_frames("", "q", b"a"), *c.publish_frames("", "full", b"b"),
           *c.publish_frames("", "q", b"c"), *c.publish_frames("", "q", b"d"))
    # acks 1, 3, 4 and nack 2: the acks below the nack as one multiple, the rest single,
    # then the nack single (an ack of this batch is below it)
    assert c.conn.data_to_send() == bytes.fromhex(
        "01 0001 0000000d 003c0050 0000000000000001 01 ce"
        "01 0001 0000000d 003c0050 0000000000000003 00 ce"
        "01 0001 0000000d 003c0050 0000000000000004 00 ce"
        "01 0001 0000000d 003c0078 0000000000000002 02 ce")


def test_channel_0_errors_name_their_method_as_rabbitmq():
    # rabbit_reader: an error in a channel-0 method carries that method's ids
    c = Client()
    c.start()
    c.start_ok()
    c.send(0, C.Connection.TuneOk(channel_max=2047, frame_max=131072, heartbeat=0))
    close = close_frame(c.rpc(0, C.Connection.Open(virtual_host="/nope")))
    assert (close.reply_code, close.reply_text, close.class_id, close.method_id) == (
        530, "NOT_ALLOWED - vhost /nope not found", 10, 40)


def test_connection_method_on_a_channel_is_rabbitmqs_503():
    c = connected()
    close = close_frame(c.rpc(1, C.Connection.Open(virtual_host="/")))
    assert (close.reply_code, close.reply_text, close.class_id, close.method_id) == (
        503, "COMMAND_INVALID - unimplemented method", 10, 40)
