"""The hot-path codecs in framing.py are byte-identical to pamqp, and the frame reader and
method decoder turn any input into frames or protocol errors, never anything else."""
from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import body as pbody
from pamqp import commands as C
from pamqp import frame as pframe
from pamqp import header as pheader

from amqpbroker import errors, framing

NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-"
exchange_names = st.text(NAME_CHARS, max_size=127)   # pamqp validates exchange names
short_names = st.text(NAME_CHARS, max_size=255)


def shortstr_text(max_bytes: int = 255):
    """Any text whose UTF-8 encoding fits a shortstr."""
    return st.text(max_size=max_bytes).filter(lambda s: len(s.encode()) <= max_bytes)


channels = st.integers(0, 65535)
u64 = st.integers(0, 2**63 - 1)  # pamqp encodes long-long as signed
u32 = st.integers(0, 2**32 - 1)
u16 = st.integers(0, 2**16 - 1)
frame_maxes = st.integers(4096, 20000)
bodies = st.binary(max_size=30000)

properties = st.builds(
    C.Basic.Properties,
    content_type=st.none() | short_names,
    delivery_mode=st.none() | st.sampled_from([1, 2]),
    priority=st.none() | st.integers(0, 9),
    correlation_id=st.none() | short_names,
    headers=st.none() | st.dictionaries(st.text(NAME_CHARS, min_size=1, max_size=20),
                                        st.integers(-2**31, 2**31 - 1) | short_names
                                        | st.booleans(), max_size=4),
    message_id=st.none() | short_names,
)


def first_frame(data: bytes) -> bytes:
    size = struct.unpack_from(">I", data, 3)[0]
    return data[:7 + size + 1]


def pamqp_content(channel, method, props: C.Basic.Properties, body: bytes,
                  frame_max: int) -> bytes:
    out = [pframe.marshal(method, channel),
           pframe.marshal(pheader.ContentHeader(0, len(body), props), channel)]
    chunk = frame_max - 8
    for i in range(0, len(body), chunk):
        out.append(pframe.marshal(pbody.ContentBody(body[i:i + chunk]), channel))
    return b"".join(out)


# ---------------------------------------------------------------------- encoders


@settings(max_examples=300)
@given(channel=channels, consumer_tag=short_names, delivery_tag=u64,
       redelivered=st.booleans(), exchange=exchange_names, routing_key=short_names)
def test_deliver_method_frame_matches_pamqp(channel, consumer_tag, delivery_tag, redelivered,
                                            exchange, routing_key):
    ours = framing.deliver(channel, consumer_tag, delivery_tag, redelivered, exchange,
                           routing_key, b"\x00\x00", b"", 131072)
    theirs = pframe.marshal(C.Basic.Deliver(consumer_tag=consumer_tag,
                                            delivery_tag=delivery_tag,
                                            redelivered=redelivered, exchange=exchange,
                                            routing_key=routing_key), channel)
    assert first_frame(ours) == theirs


@settings(max_examples=300)
@given(channel=channels, delivery_tag=u64, redelivered=st.booleans(),
       exchange=exchange_names, routing_key=short_names, message_count=u32)
def test_get_ok_method_frame_matches_pamqp(channel, delivery_tag, redelivered, exchange,
                                           routing_key, message_count):
    ours = framing.get_ok(channel, delivery_tag, redelivered, exchange, routing_key,
                          message_count, b"\x00\x00", b"", 131072)
    theirs = pframe.marshal(C.Basic.GetOk(delivery_tag=delivery_tag, redelivered=redelivered,
                                          exchange=exchange, routing_key=routing_key,
                                          message_count=message_count), channel)
    assert first_frame(ours) == theirs


@settings(max_examples=300)
@given(channel=channels, reply_code=u16, reply_text=short_names, exchange=exchange_names,
       routing_key=short_names)
def test_return_method_frame_matches_pamqp(channel, reply_code, reply_text, exchange,
                                           routing_key):
    ours = framing.basic_return(channel, reply_code, reply_text, exchange, routing_key,
                                b"\x00\x00", b"", 131072)
    theirs = pframe.marshal(C.Basic.Return(reply_code=reply_code, reply_text=reply_text,
                                           exchange=exchange, routing_key=routing_key),
                            channel)
    assert first_frame(ours) == theirs


@settings(max_examples=100, deadline=None)
@given(channel=st.integers(1, 65535), tag=short_names, delivery_tag=u64,
       exchange=exchange_names, routing_key=short_names, props=properties, body=bodies,
       frame_max=frame_maxes)
def test_deliver_with_content_matches_pamqp(channel, tag, delivery_tag, exchange,
                                            routing_key, props, body, frame_max):
    ours = framing.deliver(channel, tag, delivery_tag, False, exchange, routing_key,
                           props.marshal(), body, frame_max)
    theirs = pamqp_content(channel, C.Basic.Deliver(consumer_tag=tag,
                                                    delivery_tag=delivery_tag,
                                                    exchange=exchange,
                                                    routing_key=routing_key),
                           props, body, frame_max)
    assert ours == theirs


@settings(max_examples=50, deadline=None)
@given(channel=st.integers(1, 65535), props=properties, body=bodies, frame_max=frame_maxes,
       message_count=u32)
def test_get_ok_and_return_with_content_match_pamqp(channel, props, body, frame_max,
                                                    message_count):
    ours = framing.get_ok(channel, 7, True, "x", "rk", message_count, props.marshal(), body,
                          frame_max)
    theirs = pamqp_content(channel, C.Basic.GetOk(delivery_tag=7, redelivered=True,
                                                  exchange="x", routing_key="rk",
                                                  message_count=message_count),
                           props, body, frame_max)
    assert ours == theirs
    ours = framing.basic_return(channel, 312, "NO_ROUTE", "x", "rk", props.marshal(), body,
                                frame_max)
    theirs = pamqp_content(channel, C.Basic.Return(reply_code=312, reply_text="NO_ROUTE",
                                                   exchange="x", routing_key="rk"),
                           props, body, frame_max)
    assert ours == theirs


@settings(max_examples=300)
@given(channel=channels, delivery_tag=u64, multiple=st.booleans())
def test_confirm_matches_pamqp(channel, delivery_tag, multiple):
    assert framing.confirm(channel, delivery_tag, multiple, True) == pframe.marshal(
        C.Basic.Ack(delivery_tag=delivery_tag, multiple=multiple), channel)
    assert framing.confirm(channel, delivery_tag, multiple, False) == pframe.marshal(
        C.Basic.Nack(delivery_tag=delivery_tag, multiple=multiple, requeue=True), channel)


def test_heartbeat_constant():
    from pamqp import heartbeat
    assert framing.HEARTBEAT == pframe.marshal(heartbeat.Heartbeat(), 0)


_methods = st.one_of(
    st.builds(C.Queue.DeclareOk, queue=exchange_names, message_count=u32, consumer_count=u32),
    st.builds(C.Basic.ConsumeOk, consumer_tag=short_names),
    st.builds(C.Basic.CancelOk, consumer_tag=short_names),
    st.builds(C.Basic.Cancel, consumer_tag=short_names, nowait=st.booleans()),
    st.builds(C.Queue.PurgeOk, message_count=u32),
    st.builds(C.Queue.DeleteOk, message_count=u32),
    st.builds(C.Channel.Close, reply_code=u16, reply_text=short_names, class_id=u16,
              method_id=u16),
    st.builds(C.Connection.Tune, channel_max=u16, frame_max=u32, heartbeat=u16),
    st.builds(C.Basic.QosOk), st.builds(C.Channel.OpenOk), st.builds(C.Basic.GetEmpty),
    st.builds(C.Exchange.UnbindOk), st.builds(C.Queue.UnbindOk),
    st.builds(C.Channel.FlowOk, active=st.booleans()),
)


@settings(max_examples=300)
@given(channel=channels, method=_methods)
def test_method_frame_matches_pamqp(channel, method):
    assert framing.method_frame(channel, method) == pframe.marshal(method, channel)


def test_method_frame_echoes_names_pamqp_would_refuse():
    # a broker must be able to send back any queue name a client used
    ok = C.Queue.DeclareOk(queue="placeholder", message_count=0, consumer_count=0)
    ok.queue = "ü ∅ #"
    frame = framing.method_frame(1, ok)
    _, ch, m = pframe.unmarshal(frame)
    assert ch == 1 and m.queue == "ü ∅ #"


# ---------------------------------------------------------------------- decoders


@settings(max_examples=300)
@given(exchange=exchange_names, routing_key=shortstr_text(), mandatory=st.booleans(),
       immediate=st.booleans())
def test_decode_publish(exchange, routing_key, mandatory, immediate):
    payload = pframe.marshal(C.Basic.Publish(exchange=exchange, routing_key=routing_key,
                                             mandatory=mandatory, immediate=immediate), 1)
    m = framing.decode_method(payload[7:-1])
    assert m.name == "Basic.Publish" and m.index == 0x3C0028
    assert (m.exchange, m.routing_key, m.mandatory, m.immediate) == \
        (exchange, routing_key, mandatory, immediate)


@settings(max_examples=300)
@given(tag=u64, multiple=st.booleans(), requeue=st.booleans())
def test_decode_settle(tag, multiple, requeue):
    for method in (C.Basic.Ack(delivery_tag=tag, multiple=multiple),
                   C.Basic.Nack(delivery_tag=tag, multiple=multiple, requeue=requeue),
                   C.Basic.Reject(delivery_tag=tag, requeue=requeue)):
        payload = pframe.marshal(method, 1)[7:-1]
        m = framing.decode_method(payload)
        assert m.name == method.name and m.index == method.index
        assert m.delivery_tag == tag
        assert m.multiple == getattr(method, "multiple", False)
        if method.name != "Basic.Ack":
            assert m.requeue == requeue


@settings(max_examples=200)
@given(queue=exchange_names, passive=st.booleans(), durable=st.booleans(),
       exclusive=st.booleans(), auto_delete=st.booleans(), nowait=st.booleans(),
       arguments=st.dictionaries(st.text(NAME_CHARS, min_size=1, max_size=10),
                                 st.integers(-100, 100) | short_names, max_size=3))
def test_decode_other_methods_via_pamqp(queue, passive, durable, exclusive, auto_delete,
                                        nowait, arguments):
    method = C.Queue.Declare(queue=queue, passive=passive, durable=durable,
                             exclusive=exclusive, auto_delete=auto_delete, nowait=nowait,
                             arguments=arguments)
    m = framing.decode_method(pframe.marshal(method, 1)[7:-1])
    assert m.name == "Queue.Declare"
    for field in method.__slots__:
        assert getattr(m, field) == getattr(method, field), field


@settings(max_examples=200)
@given(props=properties)
def test_decode_properties_matches_pamqp(props):
    raw = props.marshal()
    decoded = framing.decode_properties(raw)
    expected = C.Basic.Properties()
    expected.unmarshal(struct.unpack_from(">H", raw)[0], raw[2:])
    for field in props.__slots__:  # pamqp gives '' for an absent shortstr, we None
        assert (getattr(decoded, field) or None) == (getattr(expected, field) or None), field


def test_decode_unknown_method_is_503():
    try:
        framing.decode_method(struct.pack(">HH", 60, 999))
    except errors.CommandInvalid as e:
        assert (e.class_id, e.method_id) == (60, 999)
    else:
        raise AssertionError("no error")


@settings(max_examples=1000)
@given(payload=st.binary(max_size=64))
def test_decode_method_random_payload(payload):
    try:
        framing.decode_method(payload)
    except errors.AMQPError:
        pass


@settings(max_examples=500)
@given(index=st.sampled_from(sorted(C.INDEX_MAPPING) + [0x3C0028, 0x3C0050, 0x3C005A,
                                                       0x3C0078]),
       rest=st.binary(max_size=40))
def test_decode_method_random_fields(index, rest):
    """Valid method ids with random argument bytes: decoded or a protocol error."""
    try:
        framing.decode_method(struct.pack(">I", index) + rest)
    except errors.AMQPError:
        pass


# ---------------------------------------------------------------------- frame reader


@settings(max_examples=1000)
@given(data=st.binary(max_size=200), frame_max=st.integers(0, 300))
def test_frame_reader_random_bytes(data, frame_max):
    reader = framing.FrameReader(frame_max)
    reader.feed(data)
    try:
        for ftype, channel, payload in reader.frames():
            assert ftype in (1, 2, 3, 8)
            assert len(payload) <= frame_max
    except errors.AMQPError as e:
        assert isinstance(e, errors.FrameError)


_frames = st.lists(st.tuples(st.sampled_from([1, 2, 3, 8]), channels,
                             st.binary(max_size=50)), max_size=10)


@settings(max_examples=300)
@given(frames=_frames, cuts=st.lists(st.integers(0, 10**4), max_size=10))
def test_frame_reader_reassembles_any_split(frames, cuts):
    data = b"".join(struct.pack(">BHI", t, ch, len(p)) + p + b"\xce" for t, ch, p in frames)
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    reader = framing.FrameReader(131072)
    got = []
    for a, b in zip(points, points[1:]):
        reader.feed(data[a:b])
        got += list(reader.frames())
    assert got == frames
    assert reader.buffered == 0


def test_frame_reader_limits():
    reader = framing.FrameReader(10)
    reader.feed(struct.pack(">BHI", 3, 1, 10) + b"x" * 10 + b"\xce")
    assert list(reader.frames()) == [(3, 1, b"x" * 10)]
    reader.feed(struct.pack(">BHI", 3, 1, 11))
    try:
        list(reader.frames())
    except errors.FrameError:
        pass
    else:
        raise AssertionError("oversized frame accepted")


def test_frame_reader_bad_end():
    reader = framing.FrameReader(100)
    reader.feed(struct.pack(">BHI", 1, 1, 2) + b"ab\x00")
    try:
        list(reader.frames())
    except errors.FrameError as e:
        assert e.code == 501
    else:
        raise AssertionError("bad frame end accepted")


def test_content_header_size():
    payload = pframe.marshal(pheader.ContentHeader(0, 12345, C.Basic.Properties(
        content_type="a/b")), 1)[7:-1]
    class_id, size, props = framing.content_header_size(payload)
    assert (class_id, size) == (60, 12345)
    assert props == C.Basic.Properties(content_type="a/b").marshal()
    try:
        framing.content_header_size(b"\x00" * 5)
    except errors.AMQPError as e:
        assert e.hard
    else:
        raise AssertionError("short header accepted")
