"""Connection-level behaviour driven through the client simulator: handshake, login,
tuning, channels, heartbeats, framing errors, close handshakes."""
from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pamqp import body as pbody
from pamqp import commands as C
from pamqp import encode as pencode
from pamqp import frame as pframe
from pamqp import header as pheader
from pamqp import heartbeat as pheartbeat

from amqpbroker import connection as connection_mod
from amqpbroker.auth import Transport
from amqpbroker.broker import Broker
from amqpbroker.config import Config, Limits

from .sim import (MODES, PROTOCOL_HEADER, Client, close_frame, connected, decode, messages,
                  name, names)

modes = pytest.mark.parametrize("mode", MODES)

HEARTBEAT_FRAME = b"\x08\x00\x00\x00\x00\x00\x00\xce"


def raw_frame(ftype: int, channel: int, payload: bytes, end: int = 0xCE) -> bytes:
    return struct.pack(">BHI", ftype, channel, len(payload)) + payload + bytes((end,))


def assert_conn_close(frames, code: int, text: str | None = None, class_id=None,
                      method_id=None):
    close = close_frame(frames, 0)
    assert close.reply_code == code, close.reply_text
    if text is not None:
        assert close.reply_text == text
    if class_id is not None:
        assert (close.class_id, close.method_id) == (class_id, method_id)
    return close


# ---------------------------------------------------------------------- handshake


@modes
def test_handshake(mode):
    c = Client(mode=mode)
    start = c.start()
    assert (start.version_major, start.version_minor) == (0, 9)
    assert start.locales == "en_US"
    mechs = start.mechanisms.split()
    assert mechs[0] == "PLAIN" and "AMQPLAIN" in mechs
    frames = c.start_ok()
    assert names(frames) == ["Connection.Tune"]
    tune = frames[0][1]
    assert (tune.channel_max, tune.frame_max, tune.heartbeat) == (2047, 131072, 60)
    assert c.rpc(0, C.Connection.TuneOk(channel_max=2047, frame_max=131072, heartbeat=60)) == []
    ok = c.call(0, C.Connection.Open(virtual_host="/"), "Connection.OpenOk")
    assert ok.known_hosts == ""
    c.open_channel(1)
    assert c.conn in c.broker.connections


def test_server_properties_and_capabilities():
    start = Client().start()
    props = start.server_properties
    for key in ("product", "version", "platform", "copyright", "information", "cluster_name"):
        assert isinstance(props[key], str) and props[key], key
    caps = props["capabilities"]
    # clients gate features on these (pika and aiormq refuse confirms without the first two)
    for cap in ("publisher_confirms", "basic.nack", "exchange_exchange_bindings",
                "consumer_cancel_notify", "connection.blocked", "consumer_priorities",
                "authentication_failure_close", "per_consumer_qos", "direct_reply_to"):
        assert caps.get(cap) is True, cap


def test_product_is_configurable():
    cfg = Config(server=Config().server.__class__(product="RabbitMQ", cluster_name="c1"))
    props = Client(config=cfg).start().server_properties
    assert props["product"] == "RabbitMQ" and props["cluster_name"] == "c1"


@modes
@pytest.mark.parametrize("header", [b"AMQP\x00\x00\x08\x00", b"AMQP\x01\x01\x00\x0a",
                                    b"GET / HTTP/1.1\r\n", b"XXXXXXXX"])
def test_wrong_protocol_header(mode, header):
    c = Client(mode=mode)
    c.send_raw(header)
    assert c.conn.data_to_send() == PROTOCOL_HEADER
    assert c.conn.should_close
    # nothing more is processed
    c.send_raw(PROTOCOL_HEADER)
    assert c.conn.data_to_send() == b""


def test_legacy_0_9_header_accepted():
    c = Client()
    c.send_raw(b"AMQP\x01\x01\x00\x09")
    assert names(c.recv()) == ["Connection.Start"]


@modes
def test_header_and_start_ok_in_one_write(mode):
    c = Client(mode=mode)
    start_ok = C.Connection.StartOk(client_properties={}, mechanism="PLAIN",
                                    response="\0guest\0guest", locale="en_US")
    c.send_raw(PROTOCOL_HEADER + pframe.marshal(start_ok, 0))
    assert names(c.recv()) == ["Connection.Start", "Connection.Tune"]


# ---------------------------------------------------------------------- login


@modes
def test_bad_password_with_authentication_failure_close(mode):
    c = Client(mode=mode)
    c.start()
    frames = c.start_ok(password="wrong", capabilities={"authentication_failure_close": True})
    assert_conn_close(frames, 403, "ACCESS_REFUSED - Login was refused using authentication "
                                   "mechanism PLAIN. For details see the broker logfile.")
    assert c.conn.user is None


@modes
def test_bad_password_without_capability_closes_silently(mode):
    c = Client(mode=mode)
    c.start()
    frames = c.start_ok(password="wrong", capabilities={})
    assert frames == []
    assert c.conn.should_close
    assert c.conn.user is None


def test_unknown_user_refused():
    c = Client()
    c.start()
    frames = c.start_ok(user="nobody", password="guest")
    assert_conn_close(frames, 403)


def test_guest_only_from_loopback():
    c = Client(peer=("10.1.2.3", 5000))
    c.start()
    frames = c.start_ok()
    close = assert_conn_close(frames, 403)
    assert "can only connect via localhost" in close.reply_text


@pytest.mark.parametrize("mechanism", ["PLAIN", "AMQPLAIN"])
def test_guest_only_from_loopback_over_tls(mechanism):
    """The same rule on an amqps connection (the transport only describes a TLS socket
    from a non-loopback peer: no traffic leaves the process)."""
    response = "\0guest\0guest" if mechanism == "PLAIN" else \
        amqplain({"LOGIN": "guest", "PASSWORD": "guest"})
    for peer, refused in ((("192.0.2.7", 40001), True), (("::1", 40001, 0, 0), False)):
        c = Client(transport=Transport(peer=peer, local=("192.0.2.1", 5671), tls=True))
        c.start()
        frames = c.start_ok(mechanism=mechanism, response=response)
        if refused:
            close = assert_conn_close(frames, 403)
            assert close.reply_text == "ACCESS_REFUSED - user 'guest' can only connect via " \
                                       "localhost"
        else:
            assert names(frames) == ["Connection.Tune"]


def amqplain(table: dict) -> str:
    # a field table without its length prefix (pamqp wants a str for the longstr)
    return pencode.field_table(table)[4:].decode()


@modes
def test_amqplain_login(mode):
    c = Client(mode=mode)
    c.start()
    frames = c.start_ok(mechanism="AMQPLAIN",
                        response=amqplain({"LOGIN": "guest", "PASSWORD": "guest"}))
    assert names(frames) == ["Connection.Tune"]


def test_amqplain_wrong_password():
    c = Client()
    c.start()
    frames = c.start_ok(mechanism="AMQPLAIN",
                        response=amqplain({"LOGIN": "guest", "PASSWORD": "nope"}))
    close = assert_conn_close(frames, 403)
    assert "AMQPLAIN" in close.reply_text


def test_amqplain_missing_key_is_502():
    c = Client()
    c.start()
    frames = c.start_ok(mechanism="AMQPLAIN", response=amqplain({"LOGIN": "guest"}))
    assert frames == [] and c.conn.should_close or close_frame(frames).reply_code == 502


def test_unoffered_mechanism_refused():
    c = Client()
    c.start()
    frames = c.start_ok(mechanism="EXTERNAL", response="")
    assert c.conn.should_close or close_frame(frames).reply_code == 503
    assert c.conn.user is None


# ---------------------------------------------------------------------- open / tune


@modes
def test_unknown_vhost_530(mode):
    c = Client(mode=mode)
    c.start()
    tune = c.start_ok()[0][1]
    c.rpc(0, C.Connection.TuneOk(channel_max=tune.channel_max, frame_max=tune.frame_max,
                                 heartbeat=0))
    frames = c.rpc(0, C.Connection.Open(virtual_host="/nope"))
    assert_conn_close(frames, 530, "NOT_ALLOWED - vhost /nope not found")


@modes
def test_tune_ok_frame_max_above_ours_530(mode):
    c = Client(mode=mode)
    c.start()
    c.start_ok()
    frames = c.rpc(0, C.Connection.TuneOk(channel_max=2047, frame_max=131073, heartbeat=0))
    assert_conn_close(frames, 530, "NOT_ALLOWED - negotiated frame_max = 131073 is higher "
                                   "than the maximum allowed value (131072)", 10, 31)


def test_tune_ok_frame_max_zero_refused():
    c = Client()
    c.start()
    c.start_ok()
    frames = c.rpc(0, C.Connection.TuneOk(channel_max=2047, frame_max=0, heartbeat=0))
    assert_conn_close(frames, 530)


def test_tune_ok_smaller_frame_max_is_used():
    c = Client()
    c.handshake(frame_max=4096)
    assert c.conn.frame_max == 4096
    c.open_channel()
    c.declare(1, "q")
    body = bytes(range(256)) * 40  # 10240 bytes
    assert c.publish(1, "", "q", body) == []
    m = c.get(1, "q")
    assert m.body == body and m.body_frames == 3  # 4088 + 4088 + 2064


@modes
def test_channel_open_close_client_initiated(mode):
    c = connected(mode, channel=None)
    c.open_channel(1)
    c.open_channel(7)
    c.call(1, C.Channel.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0),
           "Channel.CloseOk")
    assert 1 not in c.conn.channels and 7 in c.conn.channels
    # the number can be reused after close-ok
    c.open_channel(1)


@modes
def test_channel_close_server_initiated(mode):
    c = connected(mode)
    close = c.call(1, C.Queue.Declare(queue="missing", passive=True), "Channel.Close")
    assert close.reply_code == 404
    assert close.reply_text == "NOT_FOUND - no queue 'missing' in vhost '/'"
    assert (close.class_id, close.method_id) == (50, 10)
    assert c.rpc(1, C.Channel.CloseOk()) == []
    assert 1 not in c.conn.channels
    c.open_channel(1)


def test_method_on_unopened_channel_504():
    c = connected(channel=None)
    frames = c.rpc(3, C.Queue.Declare(queue="q"))
    assert_conn_close(frames, 504, "CHANNEL_ERROR - expected 'channel.open'")


def test_content_on_unopened_channel_505_as_rabbitmq():
    # RabbitMQ 3.10 (fuzz replay): its command assembler sees a content frame with no
    # method before it, before anything asks whether the channel is open
    c = connected(channel=None)
    frames = c.rpc(3, pheader.ContentHeader(0, 0, C.Basic.Properties()))
    assert_conn_close(frames, 505, "UNEXPECTED_FRAME - expected method frame, got non "
                                   "method frame instead")
    c = connected(channel=None)
    frames = c.rpc(65535, pbody.ContentBody(b"x"))
    assert_conn_close(frames, 505, "UNEXPECTED_FRAME - expected method frame, got non "
                                   "method frame instead")


def test_second_channel_open_504():
    c = connected()
    frames = c.rpc(1, C.Channel.Open())
    assert_conn_close(frames, 504, "CHANNEL_ERROR - second 'channel.open' seen", 20, 10)


def test_channel_before_connection_open_is_refused():
    c = Client()
    c.start()
    c.start_ok()
    frames = c.rpc(1, C.Channel.Open())
    assert c.conn.should_close or close_frame(frames).reply_code == 504
    assert 1 not in c.conn.channels


def test_connection_method_on_nonzero_channel_503():
    c = connected()
    frames = c.rpc(1, C.Connection.Open(virtual_host="/"))
    assert_conn_close(frames, 503)


def test_non_connection_method_on_channel_zero_504():
    # RabbitMQ's text (aiormq's test_writer_closed_on_connection_loss sends this)
    c = connected()
    frames = c.rpc(0, C.Basic.Ack(delivery_tag=1))
    assert_conn_close(frames, 504, "CHANNEL_ERROR - unexpected method in connection state "
                                   "running", 60, 80)


def test_channel_max_530():
    c = Client()
    c.handshake(channel_max=2)
    c.open_channel(1)
    c.open_channel(2)
    frames = c.rpc(3, C.Channel.Open())
    assert_conn_close(frames, 530, "NOT_ALLOWED - number of channels opened (2) has reached "
                                   "the negotiated channel_max (2)", 20, 10)


def test_channel_number_above_channel_max_is_allowed():
    # RabbitMQ counts open channels against channel_max, whatever their numbers
    # (aiormq's test_bad_channel opens channel 65535 under channel_max 2047)
    c = Client()
    c.handshake(channel_max=2)
    c.open_channel(65535)
    c.open_channel(11)
    frames = c.rpc(3, C.Channel.Open())
    assert_conn_close(frames, 530, "NOT_ALLOWED - number of channels opened (2) has reached "
                                   "the negotiated channel_max (2)", 20, 10)


# ---------------------------------------------------------------------- heartbeats


# the timing rules (RabbitMQ's rabbit_heartbeat) are in test_heartbeat.py


def test_heartbeat_on_nonzero_channel_505():
    c = connected()
    c.send_raw(raw_frame(8, 1, b""))
    frames = c.recv()
    assert_conn_close(frames, 505)


def test_peer_dropped_loses_exclusive_queue_and_requeues():
    c = connected(heartbeat=10)
    other = connected(broker=c.broker)
    other.declare(1, "shared")
    c.declare(1, "excl", exclusive=True)
    other.publish(1, "", "shared", b"m")
    assert c.get(1, "shared").body == b"m"
    c.tick(0.0)
    c.tick(30.0)   # silent since 0: the receiver's looks at 10, 20 and 30 s saw nothing
    assert c.conn.should_close
    assert "excl" not in c.broker.vhosts["/"].queues
    m = other.get(1, "shared")
    assert m.body == b"m" and m.method.redelivered


# ---------------------------------------------------------------------- frame errors


@modes
def test_oversized_frame_501(mode):
    c = connected(mode)
    payload = b"\x00" * (c.conn.frame_max + 1)
    c.send_raw(raw_frame(3, 1, payload))
    assert_conn_close(c.recv(), 501)


def test_frame_of_exactly_frame_max_is_accepted():
    # RabbitMQ: bodies of frame_max - 8, plus 8 bytes of slack
    c = connected(frame_max=4096)
    c.declare(1, "q")
    body = b"x" * 4096
    frames = [C.Basic.Publish(exchange="", routing_key="q"),
              pheader.ContentHeader(0, len(body), C.Basic.Properties())]
    c.send_raw(b"".join(pframe.marshal(f, 1) for f in frames) + raw_frame(3, 1, body))
    assert c.recv() == []
    assert c.get(1, "q").body == body


def test_start_ok_larger_than_frame_min_accepted():
    # clients send big client-properties; the pre-tune limit must not refuse them
    c = Client()
    c.start()
    frames = c.start_ok(properties={"product": "x" * 200, "information": "y" * 6000})
    assert names(frames) == ["Connection.Tune"]


@modes
def test_bad_frame_end_501(mode):
    c = connected(mode)
    c.send_raw(raw_frame(1, 1, pframe.marshal(C.Basic.Qos(), 1)[7:-1], end=0x00))
    assert_conn_close(c.recv(), 501)


def test_unknown_frame_type_501():
    c = connected()
    c.send_raw(raw_frame(5, 1, b"abc"))
    assert_conn_close(c.recv(), 501)


@modes
def test_unknown_method_503(mode):
    c = connected(mode)
    c.send_raw(raw_frame(1, 1, struct.pack(">HH", 60, 999)))
    close = assert_conn_close(c.recv(), 503)
    assert (close.class_id, close.method_id) == (60, 999)


def test_unknown_class_503():
    c = connected()
    c.send_raw(raw_frame(1, 1, struct.pack(">HH", 70, 10)))  # class "file"
    assert_conn_close(c.recv(), 503)


def test_method_frame_too_short_501():
    # RabbitMQ 3.10 (rabbit_command_assembler:analyze_frame): 501 with its text
    c = connected()
    c.send_raw(raw_frame(1, 1, b"\x00\x3c"))
    assert_conn_close(c.recv(), 501, "FRAME_ERROR - type 1, all octets = <<0,60>>: "
                      "unknown_frame")


@modes
def test_body_without_header_505(mode):
    c = connected(mode)
    frames = c.rpc(1, pbody.ContentBody(b"stray"))
    assert_conn_close(frames, 505)


def test_header_without_publish_505():
    c = connected()
    frames = c.rpc(1, pheader.ContentHeader(0, 5, C.Basic.Properties()))
    assert_conn_close(frames, 505)


@modes
def test_method_mid_content_505(mode):
    c = connected(mode)
    c.declare(1, "q")
    frames = c.rpc(1, C.Basic.Publish(exchange="", routing_key="q"),
                   pheader.ContentHeader(0, 10, C.Basic.Properties()),
                   pbody.ContentBody(b"12345"), C.Basic.Qos())
    assert_conn_close(frames, 505)


def test_method_between_publish_and_header_505():
    c = connected()
    frames = c.rpc(1, C.Basic.Publish(exchange="", routing_key="q"), C.Basic.Qos())
    assert_conn_close(frames, 505)


def test_content_header_class_mismatch_505():
    # RabbitMQ 3.10 (rabbit_command_assembler): 505, naming the publish
    c = connected()
    payload = struct.pack(">HHQH", 50, 0, 0, 0)
    c.send(1, C.Basic.Publish(exchange="", routing_key="q"))
    c.send_raw(raw_frame(2, 1, payload))
    assert_conn_close(c.recv(), 505, "UNEXPECTED_FRAME - expected content header for class "
                      "60, got one for class 50 instead", 60, 40)


def test_body_larger_than_announced_is_an_error():
    c = connected()
    c.declare(1, "q")
    frames = c.rpc(1, C.Basic.Publish(exchange="", routing_key="q"),
                   pheader.ContentHeader(0, 3, C.Basic.Properties()),
                   pbody.ContentBody(b"12345"))
    close = assert_conn_close(frames, 501)
    assert close is not None
    assert c.broker.vhosts["/"].queues["q"].message_count == 0


# ---------------------------------------------------------------------- close handshakes


@modes
def test_client_connection_close(mode):
    c = connected(mode)
    c.open_channel(2)
    frames = c.rpc(0, C.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
    assert names(frames) == ["Connection.CloseOk"]
    assert c.conn.should_close
    assert c.conn not in c.broker.connections


def test_client_close_requeues_unacked():
    c = connected()
    c.declare(1, "q")
    c.publish(1, "", "q", b"a")
    assert c.get(1, "q").body == b"a"
    c.rpc(0, C.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
    q = c.broker.vhosts["/"].queues["q"]
    assert q.message_count == 1 and next(iter(q.ready)).redelivered


def test_server_close_then_close_ok():
    c = connected()
    frames = c.rpc(1, C.Channel.Open())  # 504: a hard error
    assert_conn_close(frames, 504)
    assert not c.conn.should_close
    # frames on other channels are discarded until Close-Ok
    assert c.rpc(1, C.Queue.Declare(queue="x")) == []
    assert "x" not in c.broker.vhosts["/"].queues
    assert c.rpc(0, C.Connection.CloseOk()) == []
    assert c.conn.should_close


def test_close_crossing_our_close_gets_close_ok():
    c = connected()
    assert_conn_close(c.rpc(1, C.Channel.Open()), 504)
    frames = c.rpc(0, C.Connection.Close(reply_code=200, reply_text="x", class_id=0, method_id=0))
    assert names(frames) == ["Connection.CloseOk"]
    assert c.conn.should_close


def test_unanswered_close_times_out():
    c = connected()
    assert_conn_close(c.rpc(1, C.Channel.Open()), 504)
    c.tick(1.0)
    assert not c.conn.should_close
    c.tick(10.0)
    assert c.conn.should_close


@modes
def test_soft_error_closes_only_the_channel(mode):
    c = connected(mode)
    c.open_channel(2)
    c.declare(2, "q")
    close = c.call(1, C.Queue.Declare(queue="nope", passive=True), "Channel.Close")
    assert close.reply_code == 404
    # frames on the closing channel are discarded until Close-Ok, content included
    assert c.rpc(1, C.Queue.Declare(queue="made-while-closing")) == []
    assert c.publish(1, "", "q", b"discarded") == []
    assert "made-while-closing" not in c.broker.vhosts["/"].queues
    assert c.broker.vhosts["/"].queues["q"].message_count == 0
    # other channels carry on
    assert c.publish(2, "", "q", b"kept") == []
    assert c.get(2, "q").body == b"kept"
    # a Channel.Close crossing ours is answered with Close-Ok
    assert names(c.rpc(1, C.Channel.Close(reply_code=200, reply_text="", class_id=0, method_id=0))) == \
        ["Channel.CloseOk"]
    c.rpc(1, C.Channel.CloseOk())
    c.open_channel(1)
    c.declare(1, "after")


def test_soft_error_mid_content_discards_rest():
    """An error found in the content header (message too large) closes the channel; the
    body frames that follow are discarded, not treated as a 505."""
    cfg = Config(limits=Limits(max_message_size=10))
    c = connected(broker=Broker(cfg))
    c.declare(1, "q")
    frames = c.publish(1, "", "q", b"x" * 20)
    close = close_frame(frames, 1)
    assert close.reply_code == 406
    assert "Connection.Close" not in names(frames)
    assert c.rpc(1, C.Channel.CloseOk()) == []
    c.open_channel(1)


# ---------------------------------------------------------------------- garbage


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbage=st.binary(min_size=1, max_size=300), bytewise=st.booleans())
def test_garbage_after_handshake(garbage, bytewise):
    c = connected("bytewise" if bytewise else "whole")
    c.send_raw(garbage)  # must not raise
    frames = c.recv()
    for ch, f in frames:
        assert ch == 0 and name(f) == "Connection.Close", frames
    if frames:
        assert frames[0][1].reply_code in (501, 502, 503, 504, 505, 530, 540), frames
    elif not c.conn.should_close:
        # an incomplete frame, or something harmless (a heartbeat): still open
        assert c.conn.state == connection_mod.OPEN


@settings(max_examples=200, deadline=None)
@given(garbage=st.binary(min_size=1, max_size=200))
def test_garbage_before_handshake(garbage):
    c = Client()
    c.send_raw(garbage)
    out = c.conn.data_to_send()
    if out:
        assert out in (PROTOCOL_HEADER, ) or out.startswith(b"\x01\x00\x00"), out
        decode(out)


@settings(max_examples=200, deadline=None)
@given(garbage=st.binary(min_size=1, max_size=200))
def test_garbage_after_start(garbage):
    c = Client()
    c.start()
    c.send_raw(garbage)
    frames = c.recv()
    for ch, f in frames:
        assert name(f) in ("Connection.Close", "Connection.Tune"), frames
