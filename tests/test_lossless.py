"""The lossless value model, sans-I/O with real frames: names, keys and values RabbitMQ
accepts are accepted, kept byte-exact (store and recovery included) and echoed
byte-exact.  Issue 8's reproductions, each one a regression test; the bytes no client
library sends are built by hand here."""
from __future__ import annotations

import sqlite3
import struct

import pytest
from pamqp import encode as pencode

from amqpbroker import values
from amqpbroker.broker import Broker
from amqpbroker.config import Config
from amqpbroker.store.sqlite import SQLiteStore

from .sim import Client

# ---------------------------------------------------------------------- raw frames


def ss(b: bytes) -> bytes:
    return bytes((len(b),)) + b


def ls(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def table(*items) -> bytes:
    body = b"".join(ss(k) + v for k, v in items)
    return struct.pack(">I", len(body)) + body


EMPTY = b"\x00\x00\x00\x00"


def method(channel: int, class_id: int, method_id: int, fields: bytes = b"") -> bytes:
    payload = struct.pack(">HH", class_id, method_id) + fields
    return struct.pack(">BHI", 1, channel, len(payload)) + payload + b"\xce"


def content(body: bytes, props: bytes = b"\x00\x00", channel: int = 1) -> bytes:
    header = struct.pack(">HHQ", 60, 0, len(body)) + props
    out = struct.pack(">BHI", 2, channel, len(header)) + header + b"\xce"
    return out + struct.pack(">BHI", 3, channel, len(body)) + body + b"\xce"


def frames(data: bytes) -> list[tuple[int, int, bytes]]:
    out, pos = [], 0
    while pos < len(data):
        ftype, channel, size = struct.unpack_from(">BHI", data, pos)
        out.append((ftype, channel, data[pos + 7:pos + 7 + size]))
        pos += 8 + size
    return out


def methods_of(data: bytes) -> list[bytes]:
    return [p for t, _c, p in frames(data) if t == 1]


def declare(name: bytes, durable=False, args: bytes = EMPTY) -> bytes:
    return method(1, 50, 10, b"\x00\x00" + ss(name) + bytes((durable << 1,)) + args)


def exchange_declare(name: bytes, type_: bytes, durable=False, args=EMPTY) -> bytes:
    return method(1, 40, 10, b"\x00\x00" + ss(name) + ss(type_) + bytes((durable << 1,))
                  + args)


def bind(queue: bytes, exchange: bytes, key: bytes, args: bytes = EMPTY) -> bytes:
    return method(1, 50, 20, b"\x00\x00" + ss(queue) + ss(exchange) + ss(key) + b"\x00"
                  + args)


def publish(exchange: bytes, key: bytes, mandatory=False) -> bytes:
    return method(1, 60, 40, b"\x00\x00" + ss(exchange) + ss(key) + bytes((mandatory,)))


def get(queue: bytes) -> bytes:
    return method(1, 60, 70, b"\x00\x00" + ss(queue) + b"\x01")


def consume(queue: bytes, tag: bytes) -> bytes:
    return method(1, 60, 20, b"\x00\x00" + ss(queue) + ss(tag) + b"\x02" + EMPTY)


class Raw:
    """A sim client past the handshake, channel 1 open, talking bytes."""

    def __init__(self, broker: Broker | None = None):
        self.c = Client(broker=broker)
        self.c.handshake()
        self.c.open_channel(1)
        self.broker = self.c.broker

    def send(self, data: bytes) -> bytes:
        self.c.send_raw(data)
        return self.c.conn.data_to_send()

    def call(self, data: bytes) -> bytes:
        """The one method frame the broker answers with (its payload)."""
        out = methods_of(self.send(data))
        assert len(out) == 1, out
        return out[0]

    def get(self, queue: bytes) -> tuple[bytes, bytes, bytes] | None:
        fs = frames(self.send(get(queue)))
        if fs[0][2][:4] == b"\x00\x3c\x00\x48":
            return None
        assert fs[0][2][:4] == b"\x00\x3c\x00\x47", fs
        return fs[0][2], fs[1][2][12:], b"".join(p for t, _c, p in fs[2:] if t == 3)


def declare_ok(name: bytes) -> bytes:
    return b"\x00\x32\x00\x0b" + ss(name) + b"\x00" * 8


NAMES = ["q-é".encode(), "队列".encode(), b"a*b", b"q!$%&()", b"q\tt", "q😀".encode(),
         b"q-\xed\xa0\x80", b"q-\xf4\x90\x80\x80", b"q\x00z", b"n" * 255]


# ---------------------------------------------------------------------- names


@pytest.mark.parametrize("name", NAMES)
def test_queue_name_rabbitmq_accepts_is_echoed_byte_exact(name):
    r = Raw()
    assert r.call(declare(name)) == declare_ok(name)
    assert r.call(declare(name)) == declare_ok(name)  # and found again under its bytes
    r.send(publish(b"", name) + content(b"m"))
    m, _props, body = r.get(name)
    assert body == b"m" and m.endswith(ss(b"") + ss(name) + b"\x00\x00\x00\x00")


@pytest.mark.parametrize("name", NAMES)
def test_exchange_name_and_binding_key_echoed(name):
    r = Raw()
    assert r.call(exchange_declare(name, b"direct")) == b"\x00\x28\x00\x0b"
    r.call(declare(b"q"))
    assert r.call(bind(b"q", name, name)) == b"\x00\x32\x00\x15"
    r.send(publish(name, name) + content(b"m"))
    m, _props, _body = r.get(b"q")
    assert m.endswith(ss(name) + ss(name) + b"\x00\x00\x00\x00")


@pytest.mark.parametrize("name", [b"q-\xff\xfe", b"q-\xc0\x80", b"q-\x80", b"q-\xe0\x80\x80"])
def test_malformed_utf8_in_a_method_shortstr_is_501_as_rabbitmq(name):
    r = Raw()
    close = r.call(declare(name))
    assert close == b"\x00\x0a\x00\x32\x01\xf5" + ss(
        b"FRAME_ERROR - Malformed UTF-8 in shortstr") + b"\x00\x00\x00\x00"


def test_consumer_tag_echoed_byte_exact():
    r = Raw()
    r.call(declare(b"q"))
    tag = b"tag-\xed\xa0\x80-\xe9\x98\x9f"
    assert r.call(consume(b"q", tag)) == b"\x00\x3c\x00\x15" + ss(tag)
    fs = frames(r.send(publish(b"", b"q") + content(b"m")))
    assert fs[0][2][:5 + len(tag)] == b"\x00\x3c\x00\x3c" + ss(tag)
    cancel = method(1, 60, 30, ss(tag) + b"\x00")
    assert r.call(cancel) == b"\x00\x3c\x00\x1f" + ss(tag)


@pytest.mark.parametrize("key", [b"rk-\xff\xfe", b"rk-\xed\xa0\x80", b"\x80"])
def test_publish_with_invalid_utf8_routing_key_is_returned_byte_exact(key):
    r = Raw()
    fs = frames(r.send(publish(b"", key, mandatory=True) + content(b"hi")))
    assert fs[0][2] == b"\x00\x3c\x00\x32\x01\x38" + ss(b"NO_ROUTE") + ss(b"") + ss(key)
    assert fs[2][2] == b"hi"


def test_publish_with_invalid_utf8_routing_key_is_routed():
    r = Raw()
    r.call(exchange_declare(b"t", b"topic"))
    r.call(declare(b"q"))
    r.call(bind(b"q", b"t", b"a.*"))
    r.send(publish(b"t", b"a.\xff\xfe") + content(b"m"))
    m, _p, _b = r.get(b"q")
    assert m.endswith(ss(b"t") + ss(b"a.\xff\xfe") + b"\x00\x00\x00\x00")


def test_publish_to_a_missing_exchange_with_invalid_utf8_quotes_its_bytes():
    r = Raw()
    close = r.call(publish(b"ex-\xff", b"rk") + content(b"m"))
    assert close == b"\x00\x14\x00\x28\x01\x94" + ss(
        b"NOT_FOUND - no exchange 'ex-\xff' in vhost '/'") + b"\x00\x3c\x00\x28"


def test_reply_text_quoting_a_long_name_is_cut_as_rabbitmq():
    r = Raw()
    name = "é".encode() * 127 + b"x"  # 255 bytes
    close = r.call(publish(name, b"rk") + content(b"m"))
    text = b"NOT_FOUND - no exchange '" + name + b"' in vhost '/'"
    assert close == b"\x00\x14\x00\x28\x01\x94" + ss(text[:252] + b"...") + b"\x00\x3c\x00\x28"


# ---------------------------------------------------------------------- properties


BIG_TS = struct.pack(">Q", 2**64 - 1)


def props_with(headers: bytes, timestamp: bytes = BIG_TS, reply_to: bytes = b"\xff\xfe") -> bytes:
    # headers, reply-to, timestamp
    return b"\x22\x40" + headers + ss(reply_to) + timestamp


def test_timestamps_beyond_datetime_and_invalid_utf8_property_through_headers_exchange():
    r = Raw()
    r.call(exchange_declare(b"h", b"headers"))
    r.call(declare(b"q"))
    r.call(bind(b"q", b"h", b"", table((b"k", b"S" + ls(b"v")))))
    headers = table((b"k", b"S" + ls(b"v")), (b"ts", b"T" + struct.pack(">Q", 2**63 + 5)))
    props = props_with(headers)
    r.send(publish(b"h", b"") + content(b"m", props))
    _m, got, _b = r.get(b"q")
    assert got == props


def test_timestamp_header_and_property_survive_dead_lettering():
    r = Raw()
    r.call(declare(b"dlq"))
    ttl = table((b"x-message-ttl", b"I" + struct.pack(">i", 0)),
                (b"x-dead-letter-exchange", b"S" + ls(b"")),
                (b"x-dead-letter-routing-key", b"S" + ls(b"dlq")))
    r.call(declare(b"src", args=ttl))
    headers = table((b"ts", b"T" + BIG_TS), (b"d", b"d" + struct.pack(">d", 0.1)))
    r.send(publish(b"", b"src") + content(b"m", props_with(headers)))
    r.c.tick(1.0)
    r.broker.scheduler.run_due(1.0)
    _m, got, _b = r.get(b"dlq")
    parsed = values.decode_table(got, 2)[0]
    assert parsed.tags["ts"] == "T" and parsed["ts"] == 2**64 - 1
    assert parsed.tags["d"] == "d" and parsed["d"] == 0.1
    assert got.endswith(ss(b"\xff\xfe") + BIG_TS)


# ---------------------------------------------------------------------- headers matching


D01 = b"d" + struct.pack(">d", 0.1)
F01 = b"f" + struct.pack(">f", 0.1)


def routed(r: Raw, header: bytes, key: bytes = b"k") -> bool:
    r.send(publish(b"h", b"") + content(b"m", b"\x20\x00" + table((key, header))))
    return r.get(b"q") is not None


@pytest.mark.parametrize("bound, header, expected", [
    (D01, D01, True), (D01, F01, False), (F01, F01, True),
    (b"I" + struct.pack(">i", 1), b"d" + struct.pack(">d", 1.0), True),
    (b"I" + struct.pack(">i", 1), b"l" + struct.pack(">q", 1), True),
    (b"I" + struct.pack(">i", 1), b"D\x00" + struct.pack(">i", 1), False),
    (b"I" + struct.pack(">i", 5), b"T" + struct.pack(">Q", 5), True),
    (b"x" + ls(b"v\xff"), b"S" + ls(b"v\xff"), True),
    (b"t\x01", b"b\x01", False),
    (b"A" + ls(b"I" + struct.pack(">i", 1)), b"A" + ls(b"l" + struct.pack(">q", 1)), False),
    (b"A" + ls(b"S" + ls(b"v")), b"A" + ls(b"x" + ls(b"v")), False),
    (b"F" + ls(b""), b"A" + ls(b""), True),
])
def test_headers_binding_compares_as_rabbitmq_310(bound, header, expected):
    r = Raw()
    r.call(exchange_declare(b"h", b"headers"))
    r.call(declare(b"q"))
    assert r.call(bind(b"q", b"h", b"", table((b"k", bound)))) == b"\x00\x32\x00\x15"
    assert routed(r, header) is expected


def test_headers_binding_with_a_200_byte_key():
    r = Raw()
    r.call(exchange_declare(b"h", b"headers"))
    r.call(declare(b"q"))
    key = b"k" * 200
    r.call(bind(b"q", b"h", b"", table((key, b"S" + ls(b"v")))))
    assert routed(r, b"S" + ls(b"v"), key)
    assert not routed(r, b"S" + ls(b"v"), key[:128])


# ---------------------------------------------------------------------- durability

ALL_TYPES = table(
    (b"t", b"t\x01"), (b"b", b"b\xff"), (b"B", b"B\xff"), (b"s", b"s\xff\xfe"),
    (b"u", b"u\xff\xfe"), (b"I", b"I\xff\xff\xff\xfe"), (b"i", b"i\xff\xff\xff\xfe"),
    (b"l", b"l" + struct.pack(">q", -2)), (b"f", F01), (b"d", b"d" + struct.pack(">d", 1e300)),
    (b"D", b"D\x02" + struct.pack(">i", 12345)), (b"S", b"S" + ls(b"\xff\xfe invalid")),
    (b"x", b"x" + ls(b"\x00\x01")), (b"T", b"T" + BIG_TS), (b"V", b"V"),
    (b"A", b"A" + ls(b"d" + struct.pack(">d", 0.1) + b"u\x00\x01")),
    (b"F", b"F" + table((b"k" * 200, b"f" + struct.pack(">f", 1.5)))),
    (b"x-\xed\xa0\x80", b"S" + ls(b"v")))


def sqlite_broker(path) -> Broker:
    return Broker(Config(), store=SQLiteStore(str(path)))


def restart(r: Raw, path) -> Raw:
    r.broker.store.sync_blocking()
    r.broker.store.close()
    return Raw(sqlite_broker(path))


def test_durable_names_arguments_bindings_and_messages_survive_byte_exact(tmp_path):
    r = Raw(sqlite_broker(tmp_path))
    qname, xname, key = b"q-\xed\xa0\x80-\xe9\x98\x9f", b"x-\xf4\x90\x80\x80", b"rk-\xed\xbf\xbf"
    assert r.call(exchange_declare(xname, b"headers", durable=True, args=ALL_TYPES)) == \
        b"\x00\x28\x00\x0b"
    assert r.call(declare(qname, durable=True, args=ALL_TYPES)) == declare_ok(qname)
    bargs = table((b"x-match", b"S" + ls(b"any")), (b"d", D01), (b"k" * 200, b"S" + ls(b"v")),
                  (b"bin", b"x" + ls(b"\xff")))
    assert r.call(bind(qname, xname, key, bargs)) == b"\x00\x32\x00\x15"
    props = b"\x10\x00\x02"  # persistent
    r.send(publish(b"", qname) + content(b"m", props))
    r = restart(r, tmp_path)
    vh = r.broker.vhosts["/"]
    q = vh.queues[values.text(qname)]
    assert q.arguments.raw == ALL_TYPES
    assert vh.exchanges[values.text(xname)].arguments.raw == ALL_TYPES
    (b,) = q.bindings
    assert b.arguments.raw == bargs and values.raw(b.routing_key) == key
    m, _p, body = r.get(qname)
    assert body == b"m" and m.endswith(ss(b"") + ss(qname) + b"\x00\x00\x00\x00")
    # the durable headers binding still matches the double 0.1 and the 200-byte key
    r.send(publish(xname, b"") + content(b"1", b"\x20\x00" + table((b"d", D01))))
    assert r.get(qname)[2] == b"1"
    r.send(publish(xname, b"") + content(b"2", b"\x20\x00" + table((b"d", F01))))
    assert r.get(qname) is None
    r.send(publish(xname, b"") + content(b"3", b"\x20\x00" + table((b"k" * 200, b"S" + ls(b"v")))))
    assert r.get(qname)[2] == b"3"
    # redeclared with the same arguments: equivalent (types kept), unbind finds the binding
    assert r.call(declare(qname, durable=True, args=ALL_TYPES)) == declare_ok(qname, )[:-8] \
        + b"\x00" * 8
    assert r.call(method(1, 50, 50, b"\x00\x00" + ss(qname) + ss(xname) + ss(key) + bargs)) \
        == b"\x00\x32\x00\x33"
    r = restart(r, tmp_path)
    assert not r.broker.vhosts["/"].queues[values.text(qname)].bindings


def test_persistent_message_with_invalid_utf8_routing_key_survives(tmp_path):
    r = Raw(sqlite_broker(tmp_path))
    r.call(exchange_declare(b"t", b"topic", durable=True))
    r.call(declare(b"q", durable=True))
    r.call(bind(b"q", b"t", b"#"))
    r.send(publish(b"t", b"a.\xff\xfe") + content(b"m", b"\x10\x00\x02"))
    r = restart(r, tmp_path)
    m, _p, _b = r.get(b"q")
    assert m.endswith(ss(b"t") + ss(b"a.\xff\xfe") + b"\x00\x00\x00\x00")


# schema 1, as main's store (before the lossless model) created it
SCHEMA_1 = """
CREATE TABLE exchanges (
    vhost TEXT NOT NULL, name TEXT NOT NULL, type TEXT NOT NULL, auto_delete INTEGER NOT NULL,
    internal INTEGER NOT NULL, arguments BLOB NOT NULL, arg_types TEXT NOT NULL,
    PRIMARY KEY (vhost, name));
CREATE TABLE queues (
    vhost TEXT NOT NULL, name TEXT NOT NULL, auto_delete INTEGER NOT NULL,
    arguments BLOB NOT NULL, arg_types TEXT NOT NULL, PRIMARY KEY (vhost, name));
CREATE TABLE bindings (
    vhost TEXT NOT NULL, source TEXT NOT NULL, dest_kind TEXT NOT NULL,
    destination TEXT NOT NULL, routing_key TEXT NOT NULL, arguments BLOB NOT NULL,
    PRIMARY KEY (vhost, source, dest_kind, destination, routing_key, arguments));
CREATE TABLE messages (
    vhost TEXT NOT NULL, queue TEXT NOT NULL, seq INTEGER NOT NULL, exchange TEXT NOT NULL,
    routing_key TEXT NOT NULL, props BLOB NOT NULL, body BLOB NOT NULL, cc TEXT,
    bcc TEXT, expires_at REAL, PRIMARY KEY (vhost, queue, seq)) WITHOUT ROWID;
"""


def test_a_schema_1_store_is_migrated(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    db = sqlite3.connect(str(data / "amqpbroker.sqlite3"))
    db.executescript(SCHEMA_1)
    # rows as main's SQLiteStore wrote them: pamqp-encoded tables, names as TEXT
    qargs = pencode.field_table({"x-max-length": 10})
    db.execute("INSERT INTO exchanges VALUES ('/', 'x-é', 'headers', 0, 0, ?, '{}')",
               (pencode.field_table({}),))
    db.execute("INSERT INTO queues VALUES ('/', 'q-é', 0, ?, '{}')", (qargs,))
    db.execute("INSERT INTO bindings VALUES ('/', 'x-é', 'queue', 'q-é', 'rk', ?)",
               (pencode.field_table({"x-match": "any", "a": "b"}),))
    db.execute("INSERT INTO messages VALUES ('/', 'q-é', 1, 'x-é', 'rk-é', ?, ?, NULL, NULL,"
               " NULL)", (b"\x10\x00\x02", b"body"))
    db.commit()
    db.close()
    r = Raw(sqlite_broker(data))
    vh = r.broker.vhosts["/"]
    q = vh.queues["q-é"]
    assert q.args.max_length == 10 and next(iter(q.bindings)).arguments == {"x-match": "any", "a": "b"}
    m, _p, body = r.get("q-é".encode())
    assert body == b"body" and m.endswith(ss("x-é".encode()) + ss("rk-é".encode())
                                          + b"\x00\x00\x00\x00")
    r.send(publish("x-é".encode(), b"") + content(b"2", b"\x20\x00" + table(
        (b"a", b"S" + ls(b"b")))))
    assert r.get("q-é".encode())[2] == b"2"
    db = sqlite3.connect(str(data / "amqpbroker.sqlite3"))
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    assert db.execute("SELECT name FROM queues").fetchone()[0] == "q-é".encode()


# ---------------------------------------------------------------------- codecs


def test_field_tables_round_trip_every_type_byte_exact():
    t, end = values.decode_table(ALL_TYPES)
    assert end == len(ALL_TYPES) and t.raw == ALL_TYPES
    assert "".join(t.tags.values()) == "tbBsuIilfdDSxTVAFS"
    t.raw = None  # encoded again from the values and the kept tags
    assert values.encode_table(t) == ALL_TYPES


@pytest.mark.parametrize("b, ok", [
    (b"plain", True), ("é队😀".encode(), True), (b"\xed\xa0\x80", True),
    (b"\xf4\x90\x80\x80", True), (b"\xf7\xbf\xbf\xbf", True), (b"\xff", False),
    (b"\xc0\x80", False), (b"\xe0\x80\x80", False), (b"\xf0\x80\x80\x80", False),
    (b"\xf8\x88\x80\x80\x80", False), (b"\x80", False), (b"\xc3", False)])
def test_utf8_check_is_rabbitmqs(b, ok):
    assert values.utf8_ok(b) is ok


# any table of any types round-trips: decoded, then encoded again from values and tags
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_scalar = st.one_of(
    st.just(b"t\x00"), st.just(b"t\x01"), st.just(b"V"),
    *(st.binary(min_size=n, max_size=n).map(lambda b, t=t: t + b)
      for t, n in ((b"b", 1), (b"B", 1), (b"s", 2), (b"u", 2), (b"I", 4), (b"i", 4),
                   (b"l", 8), (b"T", 8), (b"D", 5))),
    st.floats(allow_nan=False, width=32).map(lambda f: b"f" + struct.pack(">f", f)),
    st.floats(allow_nan=False).map(lambda f: b"d" + struct.pack(">d", f)),
    st.binary(max_size=20).map(lambda b: b"S" + ls(b)),
    st.binary(max_size=20).map(lambda b: b"x" + ls(b)))
_keys = st.binary(max_size=255)


def _tables(values_):
    return st.lists(st.tuples(_keys, values_), max_size=5, unique_by=lambda kv: kv[0]).map(
        lambda items: table(*items))


_value = st.recursive(_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=4).map(lambda vs: b"A" + ls(b"".join(vs))),
    _tables(inner).map(lambda t: b"F" + t)), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(raw_table=_tables(_value))
def test_any_table_round_trips_byte_exact(raw_table):
    t, end = values.decode_table(raw_table)
    assert end == len(raw_table) and values.encode_table(t) == raw_table
    t.raw = None
    for v in t.values():  # nested tables too, from their values and tags only
        if isinstance(v, values.FieldTable):
            v.raw = None
    assert values.encode_table(t) == raw_table


@pytest.mark.parametrize("response", [b"\x00gu\xffest\x00guest", b"\x00guest\x00gu\xffest"])
def test_plain_login_with_invalid_utf8_is_refused_with_403(response):
    c = Client()
    c.start()
    caps = table((b"capabilities", b"F" + table((b"authentication_failure_close", b"t\x01"))))
    c.send_raw(method(0, 10, 11, caps + ss(b"PLAIN") + ls(response) + ss(b"en_US")))
    (close,) = methods_of(c.conn.data_to_send())
    assert close[:6] == b"\x00\x0a\x00\x32\x01\x93"


@pytest.mark.parametrize("name", NAMES)
def test_every_method_naming_things_takes_the_name(name):
    """Declare, bind, e2e bind, publish, get, consume, cancel, unbind, purge, delete: each
    answered with its -Ok (nothing closed), the name echoed where a reply carries it."""
    r = Raw()
    src, dst = name[:250] + b"-src", name[:250] + b"-dst"
    ok = {
        exchange_declare(src, b"topic"): b"\x00\x28\x00\x0b",
        exchange_declare(dst, b"fanout"): b"\x00\x28\x00\x0b",
        method(1, 40, 30, b"\x00\x00" + ss(dst) + ss(src) + ss(name) + b"\x00" + EMPTY):
            b"\x00\x28\x00\x1f",
        declare(name): declare_ok(name),
        bind(name, dst, name): b"\x00\x32\x00\x15",
        consume(name, name): b"\x00\x3c\x00\x15" + ss(name),
        method(1, 60, 30, ss(name) + b"\x00"): b"\x00\x3c\x00\x1f" + ss(name),
        method(1, 50, 50, b"\x00\x00" + ss(name) + ss(dst) + ss(name) + EMPTY):
            b"\x00\x32\x00\x33",
        method(1, 40, 40, b"\x00\x00" + ss(dst) + ss(src) + ss(name) + b"\x00" + EMPTY):
            b"\x00\x28\x00\x33",
        method(1, 50, 30, b"\x00\x00" + ss(name) + b"\x00"): b"\x00\x32\x00\x1f" + b"\x00" * 4,
        method(1, 50, 40, b"\x00\x00" + ss(name) + b"\x00"): b"\x00\x32\x00\x29" + b"\x00" * 4,
        method(1, 40, 20, b"\x00\x00" + ss(src) + b"\x00"): b"\x00\x28\x00\x15",
        method(1, 40, 20, b"\x00\x00" + ss(dst) + b"\x00"): b"\x00\x28\x00\x15",
    }
    for request, reply in ok.items():
        assert r.call(request) == reply, request


def test_connection_close_quotes_a_vhost_name_byte_exact():
    c = Client()
    c.start()
    assert c.start_ok()  # Tune
    c.send_raw(method(0, 10, 31, struct.pack(">HIH", 2047, 131072, 0)))
    c.send_raw(method(0, 10, 40, ss(b"v-\xed\xa0\x80") + b"\x00\x00"))
    (close,) = methods_of(c.conn.data_to_send())
    assert close == b"\x00\x0a\x00\x32\x02\x12" + ss(
        b"NOT_ALLOWED - vhost v-\xed\xa0\x80 not found") + b"\x00\x0a\x00\x28"


def test_method_encoders_match_pamqp_for_names_pamqp_takes():
    from pamqp import commands as C
    from pamqp import frame as pframe

    from amqpbroker import methods as M
    for name in ("q", "amq.gen-abc", "a" * 127):
        assert M.queue_declare_ok(3, name, 7, 2) == pframe.marshal(
            C.Queue.DeclareOk(queue=name, message_count=7, consumer_count=2), 3)
        assert M.consume_ok(3, name) == pframe.marshal(C.Basic.ConsumeOk(consumer_tag=name), 3)
        assert M.cancel_ok(3, name) == pframe.marshal(C.Basic.CancelOk(consumer_tag=name), 3)
        assert M.cancel(3, name) == pframe.marshal(
            C.Basic.Cancel(consumer_tag=name, nowait=True), 3)
    assert M.queue_purge_ok(1, 5) == pframe.marshal(C.Queue.PurgeOk(message_count=5), 1)
    assert M.queue_delete_ok(1, 5) == pframe.marshal(C.Queue.DeleteOk(message_count=5), 1)
    assert M.channel_close(1, 404, "NOT_FOUND - x", 50, 10) == pframe.marshal(
        C.Channel.Close(reply_code=404, reply_text="NOT_FOUND - x", class_id=50,
                        method_id=10), 1)
    for which, cls in ((M.TX_SELECT_OK, C.Tx.SelectOk), (M.BASIC_QOS_OK, C.Basic.QosOk),
                       (M.BASIC_GET_EMPTY, C.Basic.GetEmpty),
                       (M.EXCHANGE_BIND_OK, C.Exchange.BindOk),
                       (M.QUEUE_UNBIND_OK, C.Queue.UnbindOk)):
        assert M.simple(2, which) == pframe.marshal(cls(), 2)
