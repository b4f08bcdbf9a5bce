"""Ingress validation (issue 8 items 1 and 3), driving the sans-I/O core with real frames.

Every malformed content header or method table closes the sender's connection with 502
SYNTAX_ERROR naming the problem, and nothing of it is queued; frame-level faults and the
publish checks RabbitMQ makes answer with RabbitMQ 3.10's codes and texts (probed against
it; interop/test_ingress.py asserts them against both brokers).
"""
from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands as C
from pamqp import frame as pframe

from amqpbroker import errors, wirecheck
from amqpbroker.broker import Broker
from amqpbroker.config import Config, Permission, User
from amqpbroker.message import (F_HEADERS, array_items, split_properties, table_items,
                                v_decode)

from .sim import Client, close_frame, connected, messages, names
from .test_queue_features import Clock


def ss(b: bytes) -> bytes:
    return bytes((len(b),)) + b


def ls(tag: bytes, b: bytes) -> bytes:
    return tag + struct.pack(">I", len(b)) + b


def table(*items: tuple[bytes, bytes]) -> bytes:
    body = b"".join(ss(k) + v for k, v in items)
    return struct.pack(">I", len(body)) + body


def array(*values: bytes) -> bytes:
    body = b"".join(values)
    return b"A" + struct.pack(">I", len(body)) + body


def with_headers(raw_table: bytes) -> bytes:
    """Properties: headers only."""
    return b"\x20\x00" + raw_table


def raw_frame(ftype: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", ftype, channel, len(payload)) + payload + b"\xce"


def publish_raw(c: Client, props: bytes, queue: str = "q", body: bytes = b"body",
                channel: int = 1) -> list:
    header = struct.pack(">HHQ", 60, 0, len(body)) + props
    c.send_raw(pframe.marshal(C.Basic.Publish(exchange="", routing_key=queue), channel) +
               raw_frame(2, channel, header) + raw_frame(3, channel, body))
    return c.recv()


def conn_close(frames, code: int):
    close = close_frame(frames, 0)
    assert close.reply_code == code, close.reply_text
    return close


def setup(**args):
    broker = Broker(Config())
    clock = Clock()
    vh = broker.vhosts["/"]
    vh.clock = clock
    c = connected(broker=broker)
    c.declare(1, "q", arguments=args)
    return c, vh, clock


# ---------------------------------------------------------------------- the issue's reproduction

ISSUE_PROPS = bytes.fromhex("20000000000401 6b 5a 00".replace(" ", ""))


def test_issue_reproduction_is_502_at_publish_and_never_queued():
    c, vh, clock = setup(**{"x-message-ttl": 300, "x-dead-letter-exchange": ""})
    close = conn_close(publish_raw(c, ISSUE_PROPS), 502)
    assert close.reply_text == "SYNTAX_ERROR - content header: headers.k: unknown field type 'Z'"
    assert vh.queues["q"].message_count == 0
    clock.now += 1
    vh.scheduler.run_due(clock.now)  # nothing expires: nothing got in
    assert vh.queues["q"].message_count == 0
    assert c.conn not in c.broker.connections


# ---------------------------------------------------------------------- malformed content headers

DEEP_ARRAY = b"V"
for _ in range(wirecheck.MAX_DEPTH):
    DEEP_ARRAY = array(DEEP_ARRAY)

MALFORMED = {
    "bad tag Z": (with_headers(table((b"k", b"Z"))), "headers.k: unknown field type 'Z'"),
    "bad tag 0x00": (with_headers(table((b"k", b"\x00"))), "unknown field type 0x00"),
    "longstr past the table": (with_headers(table((b"k", b"S\x00\x00\x00\x09ab"))),
                               "longstr of 9 bytes runs past"),
    "table past the data": (b"\x20\x00\x00\x00\x00\x10\x01kV", "table of 16 bytes runs past"),
    "table length truncated": (b"\x20\x00\x00\x00", "table length runs past"),
    "continued flags": (b"\x00\x01\x00\x00", "continued property flags"),
    "continued flags alone": (b"\x00\x01", "continued property flags"),
    "too deep": (with_headers(table((b"k", DEEP_ARRAY))), "nested deeper than 64"),
    "truncated array": (with_headers(table((b"k", b"A\x00\x00\x00\x06S\x00\x00\x00\x05ab"))),
                        "k[0]: longstr of 5 bytes runs past"),
    "array bad tag": (with_headers(table((b"k", array(b"t\x01", b"Q")))), "k[1]: unknown field"),
    "truncated decimal": (with_headers(table((b"k", b"D\x02\x00\x00"))),
                          "decimal value runs past"),
    "truncated long": (with_headers(table((b"k", b"l\x00\x00\x00"))), "long value runs past"),
    "key past the table": (b"\x20\x00\x00\x00\x00\x03\x05ab", "field name of 5 bytes runs"),
    "value missing": (b"\x20\x00\x00\x00\x00\x02\x01k", "k: value type missing"),
    "nested table bad tag": (with_headers(table((b"t", b"F" + table((b"u", b"Z"))))),
                             "headers.t.u: unknown field type 'Z'"),
    "shortstr past the data": (b"\x80\x00\x05ab", "property content-type runs past"),
    "shortstr after headers past": (b"\x20\x80" + table() + b"\x09abc",
                                    "property message-id runs past"),
    "trailing bytes": (b"\x00\x00\x01", "1 bytes after the last property"),
    "trailing after headers": (with_headers(table((b"k", b"t\x01"))) + b"\x00",
                               "1 bytes after the last property"),
    "timestamp truncated": (b"\x00\x40\x00\x00\x00", "property timestamp runs past"),
    "delivery-mode missing": (b"\x10\x00", "property delivery-mode runs past"),
    "flags missing": (b"\x00", "property flags missing"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_properties_are_502_and_nothing_is_queued(case):
    props, text = MALFORMED[case]
    c, vh, _clock = setup()
    close = conn_close(publish_raw(c, props), 502)
    assert close.reply_text.startswith("SYNTAX_ERROR - ") and text in close.reply_text, \
        close.reply_text
    assert vh.queues["q"].message_count == 0


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_properties_refused_after_a_valid_block_of_the_same_length(case):
    """A template from an accepted block never lets a malformed one of the same length in."""
    props, _text = MALFORMED[case]
    good = b"\x00\x08" + ss(b"x" * (len(props) - 3)) if 3 <= len(props) < 258 else b""
    if len(good) == len(props):
        wirecheck.check_properties(good)
    with pytest.raises(errors.SyntaxError_):
        wirecheck.check_properties(props)


def test_malformed_properties_in_a_transaction_are_refused_at_the_header():
    c, vh, _clock = setup()
    c.call(1, C.Tx.Select(), "Tx.SelectOk")
    conn_close(publish_raw(c, ISSUE_PROPS), 502)
    assert vh.queues["q"].message_count == 0


def test_header_frame_too_short_is_501_with_rabbitmq_text():
    c, _vh, _clock = setup()
    c.send(1, C.Basic.Publish(exchange="", routing_key="q"))
    c.send_raw(raw_frame(2, 1, b"\x00\x3c\x00"))
    close = conn_close(c.recv(), 501)
    assert close.reply_text == "FRAME_ERROR - type 2, all octets = <<0,60,0>>: unknown_frame"


# ---------------------------------------------------------------------- valid blocks pass intact

EVERY_TYPE = table(
    (b"t", b"t\x01"), (b"b", b"b\xff"), (b"B", b"B\xff"), (b"s", b"s\x80\x00"),
    (b"u", b"u\xff\xff"), (b"I", b"I\x80\x00\x00\x00"), (b"i", b"i\xff\xff\xff\xff"),
    (b"l", b"l" + b"\x80" + bytes(7)), (b"L", b"L" + bytes(7) + b"\x01"),
    (b"f", b"f\x3f\x80\x00\x00"), (b"d", b"d" + struct.pack(">d", 0.1)),
    (b"D", b"D\x02\x00\x00\x01\x00"), (b"T", b"T" + struct.pack(">Q", 1 << 40)),
    (b"V", b"V"), (b"S", ls(b"S", "é".encode())), (b"x", ls(b"x", b"\xff\x00")),
    (b"A", array(b"t\x00", ls(b"S", b"a"), b"V", b"F" + table((b"n", b"I" + bytes(4))))),
    (b"F", b"F" + table((b"deep", b"F" + table())),), (b"k" * 255, b"V"), (b"", b"V"))

VALID = {
    "none": b"\x00\x00",
    "flag bit 1 (ignored, as RabbitMQ)": b"\x00\x02",
    "every field type": with_headers(EVERY_TYPE),
    "all properties": (b"\xff\xfc" + ss(b"text/plain") + ss(b"gzip") + table((b"a", b"V")) +
                       b"\x02\x09" + ss(b"corr") + ss(b"reply") + ss(b"60000") + ss(b"id") +
                       struct.pack(">Q", 1) + ss(b"type") + ss(b"guest") + ss(b"app") +
                       ss(b"cluster")),
    "empty strings": b"\xc0\x00" + ss(b"") + ss(b""),
    "invalid UTF-8 shortstr": b"\x80\x00" + ss(b"\xff\xfe"),
}
_d = b"V"
for _ in range(wirecheck.MAX_DEPTH - 1):  # the headers table itself is level 1
    _d = array(_d)
VALID["nested as deep as allowed"] = with_headers(table((b"k", _d)))


@pytest.mark.parametrize("case", sorted(VALID))
def test_valid_properties_are_delivered_byte_exact(case):
    props = VALID[case]
    c, vh, _clock = setup()
    frames = publish_raw(c, props)
    assert "Connection.Close" not in names(frames), frames
    assert vh.queues["q"].message_count == 1
    qm = vh.queues["q"].ready[0]
    assert qm.msg.props == props


def test_too_deep_is_one_level_past_the_valid_one():
    ok = VALID["nested as deep as allowed"]
    wirecheck.check_properties(ok)
    with pytest.raises(errors.SyntaxError_, match="nested deeper"):
        wirecheck.check_properties(with_headers(table((b"k", array(ok[6 + 2:])))))


# ---------------------------------------------------------------------- templates are exact

def _fresh(props: bytes):
    """check_properties with no templates: the walk's own answer."""
    saved = dict(wirecheck._templates)
    wirecheck._templates.clear()
    try:
        return wirecheck.check_properties(props)
    except errors.SyntaxError_:
        return "502"
    finally:
        wirecheck._templates.clear()
        wirecheck._templates.update(saved)


@given(st.sampled_from(sorted(k for k in VALID)), st.lists(
    st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4))
def test_a_template_answers_as_the_walk_does(case, edits):
    """Warm the template with a valid block, then check byte-edited copies of the same
    length: the answer (accept, needs-check, or 502) is the walk's."""
    good = VALID[case]
    wirecheck.check_properties(good)
    bad = bytearray(good)
    for pos, value in edits:
        bad[pos % len(bad)] = value
    bad = bytes(bad)
    try:
        got = wirecheck.check_properties(bad)
    except errors.SyntaxError_:
        got = "502"
    assert got == _fresh(bad)
    if got != "502":
        decode_all(bad)


def decode_all(props: bytes) -> None:
    """Walk everything with the broker's own type-preserving decoders (what dead-lettering,
    x-death and the headers exchange use): what passed ingress never fails there."""
    parts = split_properties(props)
    if F_HEADERS in parts:
        _decode_table(parts[F_HEADERS])


def _decode_table(raw: bytes) -> None:
    for _key, value in table_items(raw):
        _decode_value(value)


def _decode_value(value: bytes) -> None:
    if value[:1] == b"F":
        _decode_table(value[1:])
    elif value[:1] == b"A":
        for element in array_items(value):
            _decode_value(element)
    else:
        v_decode(value)


@given(st.binary(max_size=64))
def test_random_properties_pass_only_if_decodable(data):
    try:
        wirecheck.check_properties(data)
    except errors.SyntaxError_:
        return
    decode_all(data)


@given(st.sampled_from(sorted(VALID)), st.integers(0, 300))
def test_truncated_valid_properties_are_refused(case, cut):
    props = VALID[case]
    if cut >= len(props) or props == b"\x00\x02" and cut == 0:
        return
    with pytest.raises(errors.SyntaxError_):
        wirecheck.check_properties(props[:cut])


# ---------------------------------------------------------------------- method tables

def method_payload(method) -> bytes:
    return pframe.marshal(method, 1)[7:-1]


def send_method_with_table(c: Client, method, raw_table: bytes, channel: int = 1) -> list:
    """``method`` (whose only table is empty) with its table replaced by ``raw_table``."""
    payload = method_payload(method)
    empty = b"\x00\x00\x00\x00"
    at = payload.rindex(empty)
    payload = payload[:at] + raw_table + payload[at + 4:]
    c.send_raw(raw_frame(1, channel, payload))
    return c.recv()


BAD_TABLE = table((b"x-arg", b"Z"))
METHODS = {
    "Queue.Declare": C.Queue.Declare(queue="qd"),
    "Exchange.Declare": C.Exchange.Declare(exchange="xd"),
    "Queue.Bind": C.Queue.Bind(queue="q", exchange="amq.direct", routing_key="k"),
    "Queue.Unbind": C.Queue.Unbind(queue="q", exchange="amq.direct", routing_key="k"),
    "Exchange.Bind": C.Exchange.Bind(destination="amq.fanout", source="amq.direct"),
    "Exchange.Unbind": C.Exchange.Unbind(destination="amq.fanout", source="amq.direct"),
    "Basic.Consume": C.Basic.Consume(queue="q", consumer_tag="ct"),
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_malformed_method_table_is_502_naming_it(name):
    c, vh, _clock = setup()
    close = conn_close(send_method_with_table(c, METHODS[name], BAD_TABLE), 502)
    assert close.reply_text == (f"SYNTAX_ERROR - {name} arguments.x-arg: unknown field "
                                "type 'Z'"), close.reply_text
    assert "qd" not in vh.queues and "xd" not in vh.exchanges
    assert not vh.queues["q"].consumers


def test_malformed_nested_argument_is_502():
    c, vh, _clock = setup()
    raw = table((b"x-match", ls(b"S", b"all")), (b"deep", b"F" + table((b"a", array(b"Q")))))
    close = conn_close(send_method_with_table(c, METHODS["Queue.Bind"], raw), 502)
    assert "arguments.deep.a[0]: unknown field type 'Q'" in close.reply_text


def test_malformed_client_properties_close_the_connection():
    c = Client()
    c.start()
    payload = method_payload(C.Connection.StartOk(client_properties={}, mechanism="PLAIN",
                                                  response="\0guest\0guest", locale="en_US"))
    payload = payload[:4] + BAD_TABLE + payload[8:]
    c.send_raw(raw_frame(1, 0, payload))
    c.recv()
    assert c.conn.should_close and c.conn.user is None


def test_valid_arguments_of_every_type_are_accepted():
    c, vh, _clock = setup()
    frames = send_method_with_table(c, C.Queue.Declare(queue="typed"), EVERY_TYPE)
    assert names(frames) == ["Queue.DeclareOk"], frames


@pytest.mark.parametrize("payload,text", [
    (b"\x00\x3c\x00\x0a\x00\x00", "FRAME_ERROR - cannot decode <<0,0>>"),
    (b"\x00\x3c\x00\x0a" + bytes(7) + b"\x01", "FRAME_ERROR - cannot decode <<0,0,0,0,0,0,0,1>>"),
    (b"\x00\x32\x00\x0a\x00\x00\x05qq", "FRAME_ERROR - cannot decode <<0,0,5,113,113>>"),
    (b"\x00\x32\x00\x0a\x00\x00\x02qq\x00\x00\x00\x00\x09",
     "FRAME_ERROR - cannot decode <<0,0,2,113,113,0,0,0,0,9>>"),
    (b"\x00\x3c\x00\x28\x00\x00\x01", "FRAME_ERROR - cannot decode <<0,0,1>>"),
    (b"\x00\x3c", "FRAME_ERROR - type 1, all octets = <<0,60>>: unknown_frame"),
])
def test_method_fields_that_do_not_fit_are_501_with_rabbitmq_text(payload, text):
    c, _vh, _clock = setup()
    c.send_raw(raw_frame(1, 1, payload))
    close = conn_close(c.recv(), 501)
    assert close.reply_text == text


# ---------------------------------------------------------------------- publish checks (406)

@pytest.mark.parametrize("mode", [0, 3, 255])
def test_delivery_mode_other_than_1_or_2_is_406(mode):
    c, vh, _clock = setup()
    frames = publish_raw(c, b"\x10\x00" + bytes((mode,)))
    close = close_frame(frames, 1)
    assert (close.reply_code, close.reply_text, close.class_id, close.method_id) == (
        406, f"PRECONDITION_FAILED - invalid message: {{delivery_mode_unknown,{mode}}}", 60, 40)
    assert vh.queues["q"].message_count == 0


@pytest.mark.parametrize("mode", [1, 2])
def test_delivery_mode_1_and_2_are_accepted(mode):
    c, vh, _clock = setup()
    assert "Channel.Close" not in names(publish_raw(c, b"\x10\x00" + bytes((mode,))))
    assert vh.queues["q"].message_count == 1


def test_user_id_of_another_user_is_406():
    c, vh, _clock = setup()
    close = close_frame(publish_raw(c, b"\x00\x10" + ss(b"bob")), 1)
    assert (close.reply_code, close.reply_text) == (
        406, "PRECONDITION_FAILED - user_id property set to 'bob' but authenticated user was "
        "'guest'")
    assert vh.queues["q"].message_count == 0


def test_user_id_of_the_user_itself_is_accepted():
    c, vh, _clock = setup()
    props = b"\x90\x10" + ss(b"text/plain") + b"\x02" + ss(b"guest")
    assert "Channel.Close" not in names(publish_raw(c, props))
    assert vh.queues["q"].message_count == 1


def test_impersonator_may_set_any_user_id():
    cfg = Config(users=(User("guest", password="guest"),
                        User("imp", password="imp", tags=("impersonator",))),
                 permissions=(Permission("guest"), Permission("imp")))
    broker = Broker(cfg)
    imp = connected(broker=broker, user="imp", password="imp")
    imp.declare(1, "q")
    assert "Channel.Close" not in names(publish_raw(imp, b"\x00\x10" + ss(b"someone")))
    guest = connected(broker=broker)
    assert close_frame(publish_raw(guest, b"\x00\x10" + ss(b"imp")), 1).reply_code == 406
    assert broker.vhosts["/"].queues["q"].message_count == 1


def test_publish_checks_come_after_the_exchange_checks():
    c, _vh, _clock = setup()
    header = struct.pack(">HHQ", 60, 0, 1) + b"\x10\x00\x07"
    c.send_raw(pframe.marshal(C.Basic.Publish(exchange="missing", routing_key="q"), 1) +
               raw_frame(2, 1, header) + raw_frame(3, 1, b"x"))
    assert close_frame(c.recv(), 1).reply_code == 404


def test_a_refused_publish_does_not_taint_the_next_channel_publish():
    c, vh, _clock = setup()
    close_frame(publish_raw(c, b"\x10\x00\x03"), 1)
    c.send(1, C.Channel.CloseOk())
    c.open_channel(2)
    assert "Channel.Close" not in names(publish_raw(c, b"\x10\x00\x02", channel=2))
    assert vh.queues["q"].message_count == 1
    assert len(messages(c.rpc(2, C.Basic.Get(queue="q")))) == 1


# ---------------------------------------------------------------------- frame-level faults

@pytest.mark.parametrize("frame,code,text", [
    (raw_frame(8, 0, b"\x00"), 501, "FRAME_ERROR - type 8, all octets = <<0>>: unknown_frame"),
    (raw_frame(8, 1, b""), 505, "UNEXPECTED_FRAME - type 8, all octets = <<>>"),
    (raw_frame(9, 0, b""), 501, "FRAME_ERROR - type 9, all octets = <<>>: unknown_frame"),
    (raw_frame(9, 1, b"ab"), 501, 'FRAME_ERROR - type 9, all octets = <<"ab">>: unknown_frame'),
    (raw_frame(9, 1, "é".encode()), 501,
     'FRAME_ERROR - type 9, all octets = <<"é">>: unknown_frame'),
    (raw_frame(0, 1, bytes(20)), 501, "FRAME_ERROR - type 0, first 16 octets = <<" +
     ",".join("0" * 16) + ">>: unknown_frame"),
    (raw_frame(3, 0, b"abc"), 505, 'UNEXPECTED_FRAME - type 3, all octets = <<"abc">>'),
    (raw_frame(3, 1, b"abc"), 505, "UNEXPECTED_FRAME - expected method frame, got non method "
     "frame instead"),
    (raw_frame(2, 1, b"\x00\x3c\x00\x00\x00"), 501,   # fuzz replay: no method before it
     "FRAME_ERROR - type 2, all octets = <<0,60,0,0,0>>: unknown_frame"),
    (raw_frame(2, 0, b"\x00\x3c"), 501,
     "FRAME_ERROR - type 2, all octets = <<0,60>>: unknown_frame"),
    (raw_frame(2, 1, struct.pack(">HHQ", 60, 0, 1) + b"\x00\x00"), 505,
     "UNEXPECTED_FRAME - expected method frame, got non method frame instead"),
    (struct.pack(">BHI", 1, 1, 4) + b"\x00\x3c\x00\x0a\x00", 501,
     "FRAME_ERROR - type 1, all octets = <<0,60,0,10>>: {invalid_frame_end_marker,0}"),
    (struct.pack(">BHI", 1, 1, 200000), 501,
     "FRAME_ERROR - type 1, all octets = <<>>: {frame_too_large,200000,131064}"),
])
def test_frame_faults_have_rabbitmq_codes_and_texts(frame, code, text):
    c, vh, _clock = setup()
    close = conn_close(_send(c, frame), code)
    assert close.reply_text == text


def _send(c: Client, data: bytes) -> list:
    c.send_raw(data)
    return c.recv()


@pytest.mark.parametrize("after,text", [
    ("publish", "expected content header for class 60, got non content header frame instead"),
    ("header", "expected content body, got non content body frame instead"),
])
def test_method_during_content_is_505_naming_the_publish(after, text):
    c, vh, _clock = setup()
    data = pframe.marshal(C.Basic.Publish(exchange="", routing_key="q"), 1)
    if after == "header":
        data += raw_frame(2, 1, struct.pack(">HHQ", 60, 0, 5) + b"\x00\x00")
    close = conn_close(_send(c, data + pframe.marshal(C.Basic.Qos(), 1)), 505)
    assert (close.reply_text, close.class_id, close.method_id) == (
        f"UNEXPECTED_FRAME - {text}", 60, 40)
    assert vh.queues["q"].message_count == 0


def test_body_larger_than_announced_is_501():
    """RabbitMQ's text (its main branch; 3.10 and 4.2 wait for more and answer the next
    frame with 505)."""
    c, vh, _clock = setup()
    data = (pframe.marshal(C.Basic.Publish(exchange="", routing_key="q"), 1) +
            raw_frame(2, 1, struct.pack(">HHQ", 60, 0, 5) + b"\x00\x00") +
            raw_frame(3, 1, b"abc") + raw_frame(3, 1, b"def"))
    close = conn_close(_send(c, data), 501)
    assert (close.reply_text, close.class_id, close.method_id) == (
        "FRAME_ERROR - content body frame exceeds remaining content size", 60, 40)
    assert vh.queues["q"].message_count == 0


def test_heartbeat_is_still_accepted_mid_content():
    c, vh, _clock = setup()
    data = (pframe.marshal(C.Basic.Publish(exchange="", routing_key="q"), 1) +
            raw_frame(8, 0, b"") +
            raw_frame(2, 1, struct.pack(">HHQ", 60, 0, 1) + b"\x00\x00") +
            raw_frame(8, 0, b"") + raw_frame(3, 1, b"x"))
    assert "Connection.Close" not in names(_send(c, data))
    assert vh.queues["q"].message_count == 1


# ---------------------------------------------------------------------- login

@pytest.mark.parametrize("mechanism,response", [
    ("PLAIN", b"\0\xff\xfe\0guest"),
    ("PLAIN", b"\0guest\0\xff"),
    ("AMQPLAIN", ss(b"LOGIN") + ls(b"S", b"\xff\xfe") + ss(b"PASSWORD") + ls(b"S", b"guest")),
    ("AMQPLAIN", ss(b"LOGIN") + ls(b"S", b"guest") + ss(b"PASSWORD") + ls(b"S", b"\xc3")),
])
def test_invalid_utf8_credentials_are_403(mechanism, response):
    c = Client()
    c.start()
    placeholder = b"?" * len(response)
    c.send_raw(pframe.marshal(C.Connection.StartOk(
        client_properties={"capabilities": {"authentication_failure_close": True}},
        mechanism=mechanism, response=placeholder.decode(), locale="en_US"), 0)
        .replace(placeholder, response))
    close = conn_close(c.recv(), 403)
    assert close.reply_text == (f"ACCESS_REFUSED - Login was refused using authentication "
                                f"mechanism {mechanism}. For details see the broker logfile.")
