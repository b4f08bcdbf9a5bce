"""The lossless value model against both brokers: names, keys and values RabbitMQ accepts
are accepted and echoed byte-exact.  pika where a client can send the bytes, raw frames
(rawamqp) where none can: invalid UTF-8, surrogate-encoded bytes, every field type, 64-bit
timestamps.  Every expectation is RabbitMQ's reply to the same bytes."""
from __future__ import annotations

import struct
import uuid

import pika
import pytest

import rawamqp as R
from rawamqp import Raw, content, ls, method, ss, table


def uniq() -> bytes:
    return uuid.uuid4().hex[:8].encode()


@pytest.fixture
def raw(broker):
    r = Raw(broker.host, broker.port)
    yield r
    r.close()


def cleanup(broker, queues=(), exchanges=()):
    r = Raw(broker.host, broker.port)
    for q in queues:
        r.call(50, 40, R.queue_delete(q))
    for x in exchanges:
        r.call(40, 20, R.exchange_delete(x))
    r.close()


def declare_ok(name: bytes) -> bytes:
    return b"\x00\x32\x00\x0b" + ss(name) + b"\x00" * 8


def get(r: Raw, queue: bytes):
    """(method payload, properties, body) of a basic.get, or None when empty."""
    m = r.call(60, 70, R.get(queue))
    if m[:4] == b"\x00\x3c\x00\x48":
        return None
    assert m[:4] == b"\x00\x3c\x00\x47", m
    _t, _c, header = r.frame()
    size = struct.unpack_from(">Q", header, 4)[0]
    body = r.frame()[2] if size else b""
    return m, header[12:], body


NAMES = ["q-é", "队列", "a*b", "q!$%&()", "q\tt", "q😀"]


@pytest.mark.parametrize("name", NAMES)
def test_pika_declares_and_uses_names_outside_pamqps_pattern(broker, name):
    name = f"{name}-{uuid.uuid4().hex[:8]}"
    c = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        ch = c.channel()
        ok = ch.queue_declare(name, auto_delete=False)
        assert ok.method.queue == name
        ch.exchange_declare(name, "direct")
        ch.queue_bind(name, name, routing_key=name)
        ch.basic_publish(name, name, b"m")
        for _ in range(50):
            method_, _props, body = ch.basic_get(name, auto_ack=True)
            if method_ is not None:
                break
        assert body == b"m" and method_.exchange == name and method_.routing_key == name
        tag = ch.basic_consume(name, lambda *a: None, consumer_tag=f"tag-{name}")
        assert tag == f"tag-{name}"
        ch.basic_cancel(tag)
        ch.queue_delete(name)
        ch.exchange_delete(name)
    finally:
        c.close()


@pytest.mark.parametrize("prefix", [b"q-\xed\xa0\x80", b"q-\xf4\x90\x80\x80", b"q\x00z",
                                    "é".encode() * 120])
def test_raw_queue_names_echoed_byte_exact(broker, raw, prefix):
    name = prefix + uniq()
    try:
        assert raw.call(50, 10, R.queue_declare(name)) == declare_ok(name)
        raw.send(method(1, 60, 40, R.publish(b"", name)) + content(1, b"m"))
        m, _p, body = get(raw, name)
        assert body == b"m" and m.endswith(ss(b"") + ss(name) + b"\x00\x00\x00\x00")
    finally:
        cleanup(broker, [name])


@pytest.mark.parametrize("bad", [b"\xff\xfe", b"\xc0\x80", b"\x80"])
def test_malformed_utf8_queue_name_is_501(raw, bad):
    close = raw.call(50, 10, R.queue_declare(b"q-" + bad))
    assert close == b"\x00\x0a\x00\x32\x01\xf5" + ss(
        b"FRAME_ERROR - Malformed UTF-8 in shortstr") + b"\x00\x00\x00\x00"


def test_consumer_tag_with_surrogate_bytes_echoed(broker, raw):
    q = b"q-" + uniq()
    tag = b"tag-\xed\xa0\x80-" + uniq()
    try:
        raw.call(50, 10, R.queue_declare(q))
        assert raw.call(60, 20, R.consume(q, tag)) == b"\x00\x3c\x00\x15" + ss(tag)
        raw.send(method(1, 60, 40, R.publish(b"", q)) + content(1, b"m"))
        m, _p, body = raw.message()
        assert m.startswith(b"\x00\x3c\x00\x3c" + ss(tag)) and body == b"m"
        assert raw.call(60, 30, ss(tag) + b"\x00") == b"\x00\x3c\x00\x1f" + ss(tag)
    finally:
        cleanup(broker, [q])


@pytest.mark.parametrize("key", [b"rk-\xff\xfe", b"rk-\xed\xa0\x80", b"\x80"])
def test_publish_with_invalid_utf8_routing_key_is_returned_byte_exact(raw, key):
    raw.send(method(1, 60, 40, R.publish(b"", key, mandatory=True)) + content(1, b"hi"))
    m, _props, body = raw.message()
    assert m == b"\x00\x3c\x00\x32\x01\x38" + ss(b"NO_ROUTE") + ss(b"") + ss(key)
    assert body == b"hi"


def test_publish_with_invalid_utf8_routing_key_is_routed(broker, raw):
    x, q = b"t-" + uniq(), b"q-" + uniq()
    try:
        raw.call(40, 10, R.exchange_declare(x, b"topic"))
        raw.call(50, 10, R.queue_declare(q))
        raw.call(50, 20, R.queue_bind(q, x, b"a.*"))
        raw.send(method(1, 60, 40, R.publish(x, b"a.\xff\xfe")) + content(1, b"m"))
        m, _p, _b = get(raw, q)
        assert m.endswith(ss(x) + ss(b"a.\xff\xfe") + b"\x00\x00\x00\x00")
    finally:
        cleanup(broker, [q], [x])


@pytest.mark.parametrize("name", [b"ex-\xff", "é".encode() * 127 + b"x"])
def test_missing_exchange_text_quotes_the_bytes_cut_as_rabbitmq(raw, name):
    raw.send(method(1, 60, 40, R.publish(name, b"rk")) + content(1, b"m"))
    close = raw.method_frame()
    text = b"NOT_FOUND - no exchange '" + name + b"' in vhost '/'"
    if len(text) > 255:
        text = text[:252] + b"..."
    assert close == b"\x00\x14\x00\x28\x01\x94" + ss(text) + b"\x00\x3c\x00\x28"


BIG_TS = struct.pack(">Q", 2**64 - 1)


def test_timestamps_and_invalid_utf8_property_through_a_headers_exchange(broker, raw):
    x, q = b"h-" + uniq(), b"q-" + uniq()
    try:
        raw.call(40, 10, R.exchange_declare(x, b"headers"))
        raw.call(50, 10, R.queue_declare(q))
        raw.call(50, 20, R.queue_bind(q, x, b"", table((b"k", b"S" + ls(b"v")))))
        headers = table((b"k", b"S" + ls(b"v")), (b"ts", b"T" + struct.pack(">Q", 2**63 + 5)))
        props = b"\x22\x40" + headers + ss(b"\xff\xfe") + BIG_TS  # headers, reply-to, timestamp
        raw.send(method(1, 60, 40, R.publish(x, b"")) + content(1, b"m", props))
        _m, got, body = get(raw, q)
        assert got == props and body == b"m"
    finally:
        cleanup(broker, [q], [x])


D01 = b"d" + struct.pack(">d", 0.1)
F01 = b"f" + struct.pack(">f", 0.1)
I1 = b"I" + struct.pack(">i", 1)

CASES = [
    (D01, D01, True), (D01, F01, False), (I1, b"d" + struct.pack(">d", 1.0), True),
    (I1, b"l" + struct.pack(">q", 1), True), (I1, b"D\x00" + struct.pack(">i", 1), False),
    (b"I" + struct.pack(">i", 5), b"T" + struct.pack(">Q", 5), True),
    (b"x" + ls(b"v\xff"), b"S" + ls(b"v\xff"), True), (b"t\x01", b"b\x01", False),
    (b"A" + ls(I1), b"A" + ls(b"l" + struct.pack(">q", 1)), False),
    (b"A" + ls(b"S" + ls(b"v")), b"A" + ls(b"x" + ls(b"v")), False),
    (b"F" + ls(b""), b"A" + ls(b""), True),
]


@pytest.mark.parametrize("bound, header, expected", CASES)
def test_headers_binding_comparison(broker, raw, bound, header, expected):
    x, q = b"h-" + uniq(), b"q-" + uniq()
    try:
        raw.call(40, 10, R.exchange_declare(x, b"headers"))
        raw.call(50, 10, R.queue_declare(q))
        assert raw.call(50, 20, R.queue_bind(q, x, b"", table((b"k", bound)))) == \
            b"\x00\x32\x00\x15"
        raw.send(method(1, 60, 40, R.publish(x, b"")) + content(
            1, b"m", b"\x20\x00" + table((b"k", header))))
        assert (get(raw, q) is not None) is expected
    finally:
        cleanup(broker, [q], [x])


def test_headers_binding_with_a_200_byte_key(broker, raw):
    x, q = b"h-" + uniq(), b"q-" + uniq()
    key = b"k" * 200
    try:
        raw.call(40, 10, R.exchange_declare(x, b"headers"))
        raw.call(50, 10, R.queue_declare(q))
        raw.call(50, 20, R.queue_bind(q, x, b"", table((key, b"S" + ls(b"v")))))
        for k, expected in ((key, True), (key[:128], False)):
            raw.send(method(1, 60, 40, R.publish(x, b"")) + content(
                1, b"m", b"\x20\x00" + table((k, b"S" + ls(b"v")))))
            assert (get(raw, q) is not None) is expected
    finally:
        cleanup(broker, [q], [x])


@pytest.mark.parametrize("response", [b"\x00gu\xffest\x00guest", b"\x00guest\x00gu\xffest",
                                      b"\x00\xed\xa0\x80\x00guest"])
def test_plain_login_with_invalid_utf8_is_refused_with_403(broker, response):
    r = Raw(broker.host, broker.port, response=response)
    try:
        assert r.refused == b"\x00\x0a\x00\x32\x01\x93" + ss(
            b"ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For "
            b"details see the broker logfile.") + b"\x00\x00\x00\x00"
    finally:
        r.sock.close()
