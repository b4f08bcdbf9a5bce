"""pika (BlockingConnection) against amqpbroker and, when AMQP_REFERENCE_URL is set, RabbitMQ.

Every expectation here is checked against a real RabbitMQ by the ``broker`` fixture, so a
failure on amqpbroker alone means amqpbroker differs from RabbitMQ.
"""
from __future__ import annotations

import datetime
import decimal
import os
import time

import pika
import pika.exceptions
import pytest
from pika.spec import BasicProperties

CAPABILITIES = (
    "publisher_confirms", "exchange_exchange_bindings", "basic.nack",
    "consumer_cancel_notify", "connection.blocked", "consumer_priorities",
    "authentication_failure_close", "per_consumer_qos", "direct_reply_to",
)


def params(broker, **kw) -> pika.ConnectionParameters:
    p = pika.URLParameters(broker.url)
    p.blocked_connection_timeout = 30
    p.socket_timeout = 10
    p.stack_timeout = 20
    for k, v in kw.items():
        setattr(p, k, v)
    return p


@pytest.fixture
def conn(broker):
    c = pika.BlockingConnection(params(broker))
    yield c
    if c.is_open:
        c.close()


@pytest.fixture
def ch(conn):
    return conn.channel()


def declare_queue(ch, broker, prefix="q", **kw):
    name = broker.name(prefix)
    kw.setdefault("auto_delete", True)
    ok = ch.queue_declare(name, **kw)
    assert ok.method.queue == name
    return name


def wait_for(conn, pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for condition")
        conn.process_data_events(time_limit=0.05)


# --------------------------------------------------------------------------- connection


def test_connection_properties_and_tune(broker):
    proposed = {}

    def hb(_conn, server_value):
        proposed["heartbeat"] = server_value
        return server_value

    c = pika.BlockingConnection(params(broker, heartbeat=hb))
    try:
        props = c._impl.server_properties
        caps = props["capabilities"]
        for cap in CAPABILITIES:
            assert caps.get(cap) is True, cap
        assert isinstance(props.get("product"), (bytes, str))
        assert isinstance(props.get("version"), (bytes, str))
        # RabbitMQ's defaults: channel_max 2047, frame_max 131072, heartbeat 60
        assert c._impl.params.channel_max == 2047
        assert c._impl.params.frame_max == 131072
        assert proposed["heartbeat"] == 60
        assert c._impl.params.heartbeat == 60
        assert c.is_open
    finally:
        c.close()
    assert c.is_closed


def test_wrong_password_is_refused(broker):
    p = params(broker, credentials=pika.PlainCredentials("guest", "not-the-password"))
    p.connection_attempts = 1
    with pytest.raises(pika.exceptions.AMQPConnectionError) as ei:
        pika.BlockingConnection(p)
    # pika advertises authentication_failure_close, so the broker answers connection.close 403
    err = ei.value
    inner = err.args[0] if err.args and isinstance(err.args[0], Exception) else err
    assert isinstance(inner, (pika.exceptions.ProbableAuthenticationError,
                              pika.exceptions.AuthenticationError,
                              pika.exceptions.ConnectionClosedByBroker)), repr(err)
    if isinstance(inner, pika.exceptions.ConnectionClosedByBroker):
        assert inner.reply_code == 403
        assert "ACCESS_REFUSED" in inner.reply_text


def test_unknown_vhost_is_refused(broker):
    p = params(broker, virtual_host="no-such-vhost-" + broker.name("v"))
    p.connection_attempts = 1
    with pytest.raises(pika.exceptions.AMQPConnectionError) as ei:
        pika.BlockingConnection(p)
    err = ei.value
    inner = err.args[0] if err.args and isinstance(err.args[0], Exception) else err
    # RabbitMQ: connection.close 530 NOT_ALLOWED "vhost X not found"
    assert isinstance(inner, (pika.exceptions.ConnectionClosedByBroker,
                              pika.exceptions.ProbableAccessDeniedError)), repr(err)
    if isinstance(inner, pika.exceptions.ConnectionClosedByBroker):
        assert inner.reply_code == 530


def test_many_channels(conn):
    chans = [conn.channel() for _ in range(20)]
    nums = {c.channel_number for c in chans}
    assert len(nums) == 20
    for c in chans[::2]:
        c.close()
    for c in chans[1::2]:
        assert c.is_open
        c.basic_qos(prefetch_count=1)
    again = conn.channel()
    assert again.is_open


# --------------------------------------------------------------------------- declare / publish / get


def test_declare_publish_get_roundtrip(broker, ch):
    q = declare_queue(ch, broker)
    ch.confirm_delivery()  # message counts below are read right after publishing
    ts = int(time.time())
    props = BasicProperties(
        content_type="application/json",
        content_encoding="utf-8",
        headers={
            "str": "text", "int": 42, "neg": -7, "big": 2**40, "bool": True,
            "list": [1, "two", False], "nested": {"k": "v"},
            "dec": decimal.Decimal("3.14"), "none": None,
            "ts": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
        },
        delivery_mode=2,
        priority=5,
        correlation_id="corr-1",
        reply_to="reply-queue",
        expiration="60000",
        message_id="msg-1",
        timestamp=ts,
        type="kind",
        app_id="interop",
    )
    ch.basic_publish("", q, b'{"a": 1}', props)
    ch.basic_publish("", q, b"second")
    # queue.declare again (same args) is fine and reports the ready count
    ok = ch.queue_declare(q, auto_delete=True)
    assert ok.method.message_count == 2
    assert ok.method.consumer_count == 0
    ok = ch.queue_declare(q, passive=True)
    assert ok.method.message_count == 2

    method, got, body = ch.basic_get(q)
    assert body == b'{"a": 1}'
    assert method.delivery_tag == 1
    assert method.redelivered is False
    assert method.exchange == ""
    assert method.routing_key == q
    assert method.message_count == 1
    assert got.content_type == "application/json"
    assert got.content_encoding == "utf-8"
    assert got.delivery_mode == 2
    assert got.priority == 5
    assert got.correlation_id == "corr-1"
    assert got.reply_to == "reply-queue"
    assert got.expiration == "60000"
    assert got.message_id == "msg-1"
    assert got.timestamp == ts
    assert got.type == "kind"
    assert got.app_id == "interop"
    h = got.headers
    assert h["str"] == b"text" or h["str"] == "text"
    assert h["int"] == 42 and h["neg"] == -7 and h["big"] == 2**40
    assert h["bool"] is True
    assert [x.decode() if isinstance(x, bytes) else x for x in h["list"]] == [1, "two", False]
    assert h["nested"]["k"] in (b"v", "v")
    assert h["dec"] == decimal.Decimal("3.14")
    assert h["none"] is None
    assert h["ts"] == datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    ch.basic_ack(method.delivery_tag)

    method, got, body = ch.basic_get(q, auto_ack=True)
    assert body == b"second"
    assert method.delivery_tag == 2
    assert method.message_count == 0
    assert got.headers is None

    assert ch.basic_get(q) == (None, None, None)


def test_empty_body_and_server_named_queue(ch):
    ok = ch.queue_declare("", exclusive=True)
    q = ok.method.queue
    assert q.startswith("amq.gen-")
    assert len(q) == len("amq.gen-") + 22
    ch.basic_publish("", q, b"")
    method, _props, body = ch.basic_get(q, auto_ack=True)
    assert method is not None
    assert body == b""


def test_publish_to_named_exchange_types(broker, ch):
    fan = broker.name("fan")
    direct = broker.name("dir")
    ch.exchange_declare(fan, "fanout", auto_delete=True)
    ch.exchange_declare(direct, "direct", auto_delete=True)
    q1 = declare_queue(ch, broker)
    q2 = declare_queue(ch, broker)
    ch.queue_bind(q1, fan)
    ch.queue_bind(q2, fan)
    ch.queue_bind(q1, direct, routing_key="k1")
    ch.queue_bind(q2, direct, routing_key="k2")
    ch.basic_publish(fan, "whatever", b"f")
    ch.basic_publish(direct, "k2", b"d2")
    ch.basic_publish(direct, "nothing", b"lost")

    def drain(q):
        out = []
        while True:
            m, _p, b = ch.basic_get(q, auto_ack=True)
            if m is None:
                return out
            out.append((m.exchange, m.routing_key, b))

    assert drain(q1) == [(fan, "whatever", b"f")]
    assert drain(q2) == [(fan, "whatever", b"f"), (direct, "k2", b"d2")]


# --------------------------------------------------------------------------- consume


def test_basic_consume_process_data_events(broker, conn, ch):
    q = declare_queue(ch, broker, auto_delete=False)
    ch.confirm_delivery()
    got = []

    def on_message(chan, method, props, body):
        got.append((method.consumer_tag, method.delivery_tag, method.redelivered,
                    method.exchange, method.routing_key, body))
        chan.basic_ack(method.delivery_tag)

    try:
        tag = ch.basic_consume(q, on_message)
        for i in range(10):
            ch.basic_publish("", q, f"m{i}".encode())
        wait_for(conn, lambda: len(got) == 10)
        assert [g[5] for g in got] == [f"m{i}".encode() for i in range(10)]
        assert [g[1] for g in got] == list(range(1, 11))
        assert all(g[0] == tag and g[2] is False and g[3] == "" and g[4] == q for g in got)
        assert ch.queue_declare(q, passive=True).method.consumer_count == 1
        ch.basic_cancel(tag)
        ch.basic_publish("", q, b"after-cancel")
        conn.process_data_events(time_limit=0.3)
        assert len(got) == 10
        ok = ch.queue_declare(q, passive=True)
        assert ok.method.message_count == 1
        assert ok.method.consumer_count == 0
    finally:
        ch.queue_delete(q)


def test_auto_delete_queue_goes_with_last_consumer(broker, conn, ch):
    q = declare_queue(ch, broker, auto_delete=True)
    ch.confirm_delivery()  # message counts below are read right after publishing
    # never consumed: stays
    ch.basic_publish("", q, b"x")
    assert ch.queue_declare(q, passive=True).method.message_count == 1
    t1 = ch.basic_consume(q, lambda c, m, p, b: None, auto_ack=True)
    t2 = ch.basic_consume(q, lambda c, m, p, b: None, auto_ack=True)
    ch.basic_cancel(t1)
    assert ch.queue_declare(q, passive=True).method.consumer_count == 1
    ch.basic_cancel(t2)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.queue_declare(q, passive=True)
    assert ei.value.reply_code == 404


def test_consume_server_generated_tag_and_consume_generator(broker, conn, ch):
    q = declare_queue(ch, broker)
    for i in range(3):
        ch.basic_publish("", q, f"g{i}".encode())
    bodies = []
    for method, _props, body in ch.consume(q, inactivity_timeout=5):
        assert method is not None, "timed out"
        bodies.append(body)
        ch.basic_ack(method.delivery_tag)
        if len(bodies) == 3:
            break
    assert bodies == [b"g0", b"g1", b"g2"]
    assert ch.cancel() == 0


def test_consumer_tag_reuse_is_connection_error(broker, conn, ch):
    q = declare_queue(ch, broker)
    ch.basic_consume(q, lambda *a: None, consumer_tag="dup-tag")
    # pika refuses a duplicate tag locally; go through the impl to put it on the wire
    ch._impl._consumers.pop("dup-tag", None)
    ch._impl.basic_consume(q, lambda *a: None, consumer_tag="dup-tag")
    # RabbitMQ: connection.close 530 NOT_ALLOWED "attempt to reuse consumer tag 'dup-tag'"
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as ei:
        for _ in range(50):
            conn.process_data_events(time_limit=0.1)
    assert ei.value.reply_code == 530
    assert "reuse consumer tag" in ei.value.reply_text
    assert conn.is_closed


def test_exclusive_consumer(broker, conn, ch):
    q = declare_queue(ch, broker)
    ch.basic_consume(q, lambda *a: None, exclusive=True)
    ch2 = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch2.basic_consume(q, lambda *a: None)
    assert ei.value.reply_code == 403
    assert ei.value.reply_text.startswith("ACCESS_REFUSED")
    assert ch.is_open and conn.is_open


# --------------------------------------------------------------------------- confirms, mandatory


def test_confirm_delivery_and_unroutable(broker, ch):
    q = declare_queue(ch, broker)
    ch.confirm_delivery()
    # routable: returns normally once acked
    ch.basic_publish("", q, b"ok", mandatory=True)
    # unroutable + mandatory: basic.return then basic.ack -> UnroutableError
    with pytest.raises(pika.exceptions.UnroutableError) as ei:
        ch.basic_publish("", broker.name("nowhere"), b"lost", mandatory=True)
    msgs = ei.value.messages
    assert len(msgs) == 1
    assert msgs[0].body == b"lost"
    assert msgs[0].method.reply_code == 312
    assert msgs[0].method.reply_text == "NO_ROUTE"
    # unroutable without mandatory: silently dropped, still acked
    ch.basic_publish("", broker.name("nowhere"), b"dropped")
    # channel still usable
    ch.basic_publish("", q, b"ok2")
    assert ch.queue_declare(q, passive=True).method.message_count == 2


def test_mandatory_return_without_confirms(broker, conn, ch):
    returned = []
    ch.add_on_return_callback(lambda c, m, p, b: returned.append((m.reply_code, m.reply_text,
                                                                   m.exchange, m.routing_key, b)))
    ex = broker.name("ex")
    ch.exchange_declare(ex, "direct", auto_delete=True)
    q = declare_queue(ch, broker)
    ch.queue_bind(q, ex, "bound")  # keeps the auto-delete exchange alive
    ch.basic_publish(ex, "unbound", b"r1", mandatory=True)
    wait_for(conn, lambda: returned)
    assert returned == [(312, "NO_ROUTE", ex, "unbound", b"r1")]


def test_publish_to_missing_exchange_404_then_connection_usable(broker, conn):
    ch = conn.channel()
    ch.confirm_delivery()
    missing = broker.name("missing-ex")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.basic_publish(missing, "rk", b"x")
    assert ei.value.reply_code == 404
    assert ei.value.reply_text == f"NOT_FOUND - no exchange '{missing}' in vhost '/'"
    assert ch.is_closed and conn.is_open
    ch2 = conn.channel()
    q = declare_queue(ch2, broker)
    ch2.basic_publish("", q, b"fine")
    assert ch2.basic_get(q, auto_ack=True)[2] == b"fine"


# --------------------------------------------------------------------------- ack / nack / requeue


def test_nack_requeue_and_reject(broker, ch):
    q = declare_queue(ch, broker)
    for b in (b"a", b"b", b"c"):
        ch.basic_publish("", q, b)
    m1, _, b1 = ch.basic_get(q)
    assert (b1, m1.redelivered) == (b"a", False)
    ch.basic_nack(m1.delivery_tag, requeue=True)
    # requeued to its original position, flagged redelivered
    m2, _, b2 = ch.basic_get(q)
    assert (b2, m2.redelivered) == (b"a", True)
    assert m2.delivery_tag == m1.delivery_tag + 1
    ch.basic_reject(m2.delivery_tag, requeue=False)  # dropped (no DLX)
    m3, _, b3 = ch.basic_get(q)
    m4, _, b4 = ch.basic_get(q)
    assert (b3, b4) == (b"b", b"c")
    # multiple nack requeues both, order preserved
    ch.basic_nack(m4.delivery_tag, multiple=True, requeue=True)
    got = [ch.basic_get(q, auto_ack=True) for _ in range(2)]
    assert [(m.redelivered, b) for m, _, b in got] == [(True, b"b"), (True, b"c")]
    assert ch.basic_get(q) == (None, None, None)


def test_unknown_delivery_tag_is_406(broker, conn):
    ch = conn.channel()
    q = declare_queue(ch, broker)
    ch.basic_publish("", q, b"x")
    m, _, _ = ch.basic_get(q)
    ch.basic_ack(m.delivery_tag)
    ch.basic_ack(m.delivery_tag)  # double ack: async error
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.basic_qos(prefetch_count=1)  # the next synchronous call surfaces the close
    assert ei.value.reply_code == 406
    assert ei.value.reply_text == f"PRECONDITION_FAILED - unknown delivery tag {m.delivery_tag}"
    assert conn.is_open


def test_channel_close_requeues_unacked(broker, conn):
    ch = conn.channel()
    q = declare_queue(ch, broker, auto_delete=False)
    try:
        for b in (b"1", b"2"):
            ch.basic_publish("", q, b)
        m, _, _ = ch.basic_get(q)
        m, _, _ = ch.basic_get(q)
        ch.close()
        ch2 = conn.channel()
        got = [ch2.basic_get(q, auto_ack=True) for _ in range(2)]
        assert [(m.redelivered, b) for m, _, b in got] == [(True, b"1"), (True, b"2")]
    finally:
        conn.channel().queue_delete(q)


# --------------------------------------------------------------------------- channel errors


def test_channel_error_404_then_connection_usable(broker, conn):
    ch = conn.channel()
    missing = broker.name("missing")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.queue_declare(missing, passive=True)
    assert ei.value.reply_code == 404
    assert ei.value.reply_text == f"NOT_FOUND - no queue '{missing}' in vhost '/'"
    assert ch.is_closed
    assert conn.is_open
    ch2 = conn.channel()
    q = declare_queue(ch2, broker)
    ch2.basic_publish("", q, b"still-works")
    assert ch2.basic_get(q, auto_ack=True)[2] == b"still-works"

    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch2.exchange_declare(broker.name("missing-ex"), passive=True)
    assert ei.value.reply_code == 404
    assert conn.is_open
    ch3 = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch3.queue_bind(q, broker.name("missing-ex"))
    assert ei.value.reply_code == 404
    assert conn.is_open


def test_inequivalent_redeclare_is_406(broker, conn):
    ch = conn.channel()
    q = declare_queue(ch, broker, auto_delete=True)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.queue_declare(q, durable=True, auto_delete=True)
    assert ei.value.reply_code == 406
    assert ei.value.reply_text.startswith(
        f"PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{q}' in vhost '/'")
    ch = conn.channel()
    ex = broker.name("ex")
    ch.exchange_declare(ex, "direct", auto_delete=True)
    ch.queue_bind(q, ex, "k")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.exchange_declare(ex, "fanout", auto_delete=True)
    assert ei.value.reply_code == 406
    assert ei.value.reply_text == (
        f"PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{ex}' in vhost '/': "
        "received 'fanout' but current is 'direct'")
    assert conn.is_open


def test_reserved_names_403(broker, conn):
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.exchange_declare("amq." + broker.name("x"), "direct")
    assert ei.value.reply_code == 403
    ch = conn.channel()
    q = declare_queue(ch, broker)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.queue_bind(q, "")
    assert ei.value.reply_code == 403
    assert conn.is_open


def test_idempotent_deletes(broker, ch):
    ok = ch.queue_delete(broker.name("never-existed"))
    assert ok.method.message_count == 0
    ch.exchange_delete(broker.name("never-existed"))
    q = declare_queue(ch, broker)
    ch.queue_unbind(q, "amq.direct", routing_key="never-bound")
    ch.basic_publish("", q, b"1")
    ch.basic_publish("", q, b"2")
    assert ch.queue_purge(q).method.message_count == 2
    assert ch.queue_delete(q).method.message_count == 0


# --------------------------------------------------------------------------- qos


def test_qos_prefetch_limits_unacked(broker, conn, ch):
    q = declare_queue(ch, broker)
    ch.basic_qos(prefetch_count=2)
    for i in range(5):
        ch.basic_publish("", q, str(i).encode())
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append((m.delivery_tag, b)))
    wait_for(conn, lambda: len(got) >= 2)
    conn.process_data_events(time_limit=0.5)
    assert [b for _, b in got] == [b"0", b"1"]
    ch.basic_ack(got[0][0])
    wait_for(conn, lambda: len(got) >= 3)
    conn.process_data_events(time_limit=0.3)
    assert [b for _, b in got] == [b"0", b"1", b"2"]
    ch.basic_ack(got[2][0], multiple=True)
    wait_for(conn, lambda: len(got) >= 5)
    assert [b for _, b in got] == [b"0", b"1", b"2", b"3", b"4"]
    ch.basic_ack(0, multiple=True)
    conn.process_data_events(time_limit=0.2)
    assert ch.queue_declare(q, passive=True).method.message_count == 0


def test_qos_round_robin_between_consumers(broker, conn, ch):
    q = declare_queue(ch, broker)
    ch.basic_qos(prefetch_count=1)
    got = {"a": [], "b": []}

    def mk(name):
        def cb(c, m, p, b):
            got[name].append(b)
            c.basic_ack(m.delivery_tag)
        return cb

    ch.basic_consume(q, mk("a"))
    ch.basic_consume(q, mk("b"))
    for i in range(10):
        ch.basic_publish("", q, str(i).encode())
    wait_for(conn, lambda: len(got["a"]) + len(got["b"]) == 10)
    assert len(got["a"]) == 5 and len(got["b"]) == 5
    assert sorted(got["a"] + got["b"]) == sorted(str(i).encode() for i in range(10))


def test_qos_prefetch_size_is_not_implemented(broker, conn):
    ch = conn.channel()
    with pytest.raises((pika.exceptions.ConnectionClosedByBroker, pika.exceptions.ChannelClosed)):
        ch.basic_qos(prefetch_size=1024, prefetch_count=1)
    wait_for(conn, lambda: conn.is_closed, timeout=5) if conn.is_open else None
    assert conn.is_closed


# --------------------------------------------------------------------------- heartbeats


def test_heartbeat_negotiated_value_and_stays_alive(broker):
    c = pika.BlockingConnection(params(broker, heartbeat=1))
    try:
        assert c._impl.params.heartbeat == 1
        ch = c.channel()
        q = declare_queue(ch, broker)
        ch.confirm_delivery()
        deadline = time.monotonic() + 3.5
        n = 0
        while time.monotonic() < deadline:
            ch.basic_publish("", q, b"tick")
            n += 1
            c.process_data_events(time_limit=0.2)
            time.sleep(0.1)
        assert c.is_open
        assert ch.queue_declare(q, passive=True).method.message_count == n
    finally:
        if c.is_open:
            c.close()


def test_heartbeat_idle_connection_kept_alive_by_heartbeats(broker):
    """No application traffic for 7 s: only heartbeat frames flow.

    pika checks every heartbeat+5 s that *some* bytes arrived, so this fails if the broker
    never sends heartbeats; and the broker must not drop a client that does send them.
    """
    c = pika.BlockingConnection(params(broker, heartbeat=1))
    try:
        deadline = time.monotonic() + 7
        while time.monotonic() < deadline:
            c.process_data_events(time_limit=0.25)
        assert c.is_open
        ch = c.channel()
        ch.basic_qos(prefetch_count=1)
    finally:
        if c.is_open:
            c.close()


def test_heartbeat_silent_client_is_disconnected(broker):
    """A client that sends nothing for several heartbeat intervals is dropped by the broker."""
    c = pika.BlockingConnection(params(broker, heartbeat=1))
    c._impl._heartbeat_checker.stop()  # the client goes silent
    c._impl._heartbeat_checker = None
    time.sleep(5)
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        for _ in range(20):
            c.process_data_events(time_limit=0.1)
            c.channel()
    assert c.is_closed


# --------------------------------------------------------------------------- large message


def test_large_message_1mib(broker, conn, ch):
    q = declare_queue(ch, broker)
    body = os.urandom(1024 * 1024)
    ch.confirm_delivery()
    ch.basic_publish("", q, body)
    m, _, got = ch.basic_get(q, auto_ack=True)
    assert got == body
    # and via basic.deliver, several in a row (frames of different messages never interleave)
    bodies = [os.urandom(1024 * 1024 + i) for i in range(3)]
    for b in bodies:
        ch.basic_publish("", q, b)
    received = []
    ch.basic_consume(q, lambda c, m, p, b: received.append(b), auto_ack=True)
    wait_for(conn, lambda: len(received) == 3, timeout=30)
    assert received == bodies


def test_body_exactly_at_frame_boundaries(broker, ch):
    q = declare_queue(ch, broker)
    frame_max = 131072
    sizes = [frame_max - 9, frame_max - 8, frame_max - 7, 2 * (frame_max - 8), 2 * (frame_max - 8) + 1]
    for s in sizes:
        ch.basic_publish("", q, bytes([s % 251]) * s)
    for s in sizes:
        _, _, b = ch.basic_get(q, auto_ack=True)
        assert len(b) == s and b == bytes([s % 251]) * s


# --------------------------------------------------------------------------- exchange-to-exchange


def test_exchange_bind_e2e(broker, ch):
    src = broker.name("src")
    dst = broker.name("dst")
    ch.exchange_declare(src, "topic", auto_delete=True)
    ch.exchange_declare(dst, "fanout", auto_delete=True)
    q = declare_queue(ch, broker)
    direct_q = declare_queue(ch, broker)
    ch.queue_bind(q, dst)
    ch.queue_bind(direct_q, src, "a.#")
    ch.exchange_bind(destination=dst, source=src, routing_key="a.*")
    ch.basic_publish(src, "a.b", b"1")       # -> dst -> q, and -> direct_q
    ch.basic_publish(src, "a.b.c", b"2")     # -> direct_q only
    ch.basic_publish(src, "b.c", b"3")       # nowhere
    ch.basic_publish(dst, "zzz", b"4")       # -> q

    def drain(name):
        out = []
        while True:
            m, _, b = ch.basic_get(name, auto_ack=True)
            if m is None:
                return out
            out.append((m.exchange, m.routing_key, b))

    # basic.deliver names the exchange the message was published to
    assert drain(q) == [(src, "a.b", b"1"), (dst, "zzz", b"4")]
    assert drain(direct_q) == [(src, "a.b", b"1"), (src, "a.b.c", b"2")]

    ch.exchange_unbind(destination=dst, source=src, routing_key="a.*")
    ch.basic_publish(src, "a.b", b"5")
    assert drain(q) == []
    assert drain(direct_q) == [(src, "a.b", b"5")]
    # unbinding again is idempotent
    ch.exchange_unbind(destination=dst, source=src, routing_key="a.*")


def test_e2e_cycle_delivers_once(broker, ch):
    a = broker.name("ea")
    b = broker.name("eb")
    ch.exchange_declare(a, "fanout", auto_delete=True)
    ch.exchange_declare(b, "fanout", auto_delete=True)
    q = declare_queue(ch, broker)
    ch.exchange_bind(b, a)
    ch.exchange_bind(a, b)
    ch.queue_bind(q, a)
    ch.queue_bind(q, b)
    ch.basic_publish(a, "", b"once")
    assert ch.basic_get(q, auto_ack=True)[2] == b"once"
    assert ch.basic_get(q) == (None, None, None)


# --------------------------------------------------------------------------- tx


def test_tx_commit_and_rollback(broker, ch):
    q = declare_queue(ch, broker)
    ch.tx_select()  # tx.commit-ok means routed and visible
    ch.basic_publish("", q, b"rolled-back")
    ch.tx_rollback()
    ch.basic_publish("", q, b"committed")
    assert ch.queue_declare(q, passive=True).method.message_count == 0
    ch.tx_commit()
    assert ch.queue_declare(q, passive=True).method.message_count == 1
    assert ch.basic_get(q, auto_ack=True)[2] == b"committed"


# --------------------------------------------------------------------------- more routing / consumer features


@pytest.mark.rabbitmq_310_differs(
    "3.10 answers an unknown exchange type with connection error 503 COMMAND_INVALID; "
    "3.13/4.x close only the channel with 406 PRECONDITION_FAILED")
def test_unknown_exchange_type_is_channel_error_406(broker, conn):
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.exchange_declare(broker.name("x"), "x-no-such-type")
    assert ei.value.reply_code == 406
    assert "unknown exchange type 'x-no-such-type'" in ei.value.reply_text
    assert conn.is_open


def test_headers_exchange_all_any(broker, ch):
    ex = broker.name("hdr")
    ch.exchange_declare(ex, "headers", auto_delete=True)
    q_all = declare_queue(ch, broker)
    q_any = declare_queue(ch, broker)
    q_exists = declare_queue(ch, broker)
    ch.queue_bind(q_all, ex, arguments={"x-match": "all", "a": 1, "b": "two"})
    ch.queue_bind(q_any, ex, arguments={"x-match": "any", "a": 1, "b": "two"})
    ch.queue_bind(q_exists, ex, arguments={"c": None})  # void: header present; x-match defaults to all
    ch.confirm_delivery()
    ch.basic_publish(ex, "", b"both", BasicProperties(headers={"a": 1, "b": "two"}))
    ch.basic_publish(ex, "", b"only-a", BasicProperties(headers={"a": 1, "b": "three"}))
    ch.basic_publish(ex, "", b"a-long", BasicProperties(headers={"a": 2**40}))
    ch.basic_publish(ex, "", b"c", BasicProperties(headers={"c": "anything"}))
    ch.basic_publish(ex, "", b"none")

    def drain(q):
        out = []
        while True:
            m, _, b = ch.basic_get(q, auto_ack=True)
            if m is None:
                return out
            out.append(b)

    assert drain(q_all) == [b"both"]
    assert drain(q_any) == [b"both", b"only-a"]
    assert drain(q_exists) == [b"c"]


def test_alternate_exchange(broker, ch):
    ae = broker.name("ae")
    main = broker.name("main")
    ch.exchange_declare(ae, "fanout", auto_delete=True)
    ch.exchange_declare(main, "direct", auto_delete=True, arguments={"alternate-exchange": ae})
    q_main = declare_queue(ch, broker)
    q_ae = declare_queue(ch, broker)
    ch.queue_bind(q_main, main, "k")
    ch.queue_bind(q_ae, ae)
    ch.confirm_delivery()
    ch.basic_publish(main, "k", b"routed", mandatory=True)
    # routed via the AE counts as routed: no basic.return, so no UnroutableError
    ch.basic_publish(main, "other", b"to-ae", mandatory=True)
    m, _, b = ch.basic_get(q_main, auto_ack=True)
    assert b == b"routed"
    m, _, b = ch.basic_get(q_ae, auto_ack=True)
    assert b == b"to-ae"
    assert (m.exchange, m.routing_key) == (main, "other")


def test_consumer_priorities(broker, conn, ch):
    q = declare_queue(ch, broker)
    got = []
    ch.basic_qos(prefetch_count=1)
    ch.basic_consume(q, lambda c, m, p, b: got.append(("low", b)), arguments={"x-priority": 1})
    ch.basic_consume(q, lambda c, m, p, b: got.append(("high", b)), arguments={"x-priority": 10})
    ch.basic_publish("", q, b"1")
    wait_for(conn, lambda: len(got) == 1)
    ch.basic_publish("", q, b"2")
    # high is blocked by its prefetch (no ack), so the low-priority consumer gets the next one
    wait_for(conn, lambda: len(got) == 2)
    assert got == [("high", b"1"), ("low", b"2")]


def test_server_cancel_on_queue_delete(broker, conn, ch):
    q = declare_queue(ch, broker, auto_delete=False)
    cancelled = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    tag = ch.basic_consume(q, lambda *a: None)
    other = conn.channel()
    other.queue_delete(q)
    wait_for(conn, lambda: cancelled)
    assert cancelled == [tag]
    assert ch.is_open


def test_exclusive_queue_locked_for_other_connections(broker, conn, ch):
    ok = ch.queue_declare(broker.name("excl"), exclusive=True)
    q = ok.method.queue
    other = pika.BlockingConnection(params(broker))
    try:
        och = other.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
            och.queue_declare(q, passive=True)
        assert ei.value.reply_code == 405
        assert ei.value.reply_text.startswith(
            f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{q}' in vhost '/'")
        och = other.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
            och.basic_consume(q, lambda *a: None)
        assert ei.value.reply_code == 405
    finally:
        other.close()
    # the queue dies with its connection
    conn.close()
    c2 = pika.BlockingConnection(params(broker))
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
            c2.channel().queue_declare(q, passive=True)
        assert ei.value.reply_code == 404
    finally:
        c2.close()


def test_connection_close_requeues_unacked(broker):
    c1 = pika.BlockingConnection(params(broker))
    ch1 = c1.channel()
    q = declare_queue(ch1, broker, auto_delete=False)
    ch1.confirm_delivery()
    ch1.basic_publish("", q, b"x")
    got = []
    ch1.basic_consume(q, lambda c, m, p, b: got.append(b))
    wait_for(c1, lambda: got)
    c1.close()
    c2 = pika.BlockingConnection(params(broker))
    try:
        ch2 = c2.channel()
        m = None
        for _ in range(100):
            m, _, b = ch2.basic_get(q, auto_ack=True)
            if m is not None:
                break
            time.sleep(0.02)
        assert m is not None and b == b"x" and m.redelivered is True
        ch2.queue_delete(q)
    finally:
        c2.close()


def test_basic_recover_requeues(broker, conn, ch):
    q = declare_queue(ch, broker)
    ch.basic_publish("", q, b"r")
    m1, _, _ = ch.basic_get(q)
    ch.basic_recover(requeue=True)
    m2, _, b = ch.basic_get(q, auto_ack=True)
    assert b == b"r" and m2.redelivered is True


def test_global_qos_is_channel_wide(broker, conn, ch):
    """RabbitMQ <= 4.2 (and celery with product=RabbitMQ): global=true limits the whole channel."""
    q1 = declare_queue(ch, broker)
    q2 = declare_queue(ch, broker)
    ch.confirm_delivery()
    for q in (q1, q2):
        for i in range(3):
            ch.basic_publish("", q, f"{q}-{i}".encode())
    ch.basic_qos(prefetch_count=3, global_qos=True)
    got = []
    ch.basic_consume(q1, lambda c, m, p, b: got.append(m.delivery_tag))
    ch.basic_consume(q2, lambda c, m, p, b: got.append(m.delivery_tag))
    wait_for(conn, lambda: len(got) >= 3)
    conn.process_data_events(time_limit=0.5)
    assert len(got) == 3
    ch.basic_ack(got[0])
    wait_for(conn, lambda: len(got) >= 4)
    conn.process_data_events(time_limit=0.3)
    assert len(got) == 4
    ch.basic_ack(0, multiple=True)
    wait_for(conn, lambda: len(got) >= 6)


def test_many_messages_in_order(broker, conn, ch):
    q = declare_queue(ch, broker)
    ch.confirm_delivery()
    n = 2000
    for i in range(n):
        ch.basic_publish("", q, str(i).encode())
    got = []
    ch.basic_qos(prefetch_count=100)

    def cb(c, m, p, b):
        got.append(int(b))
        if len(got) % 50 == 0:
            c.basic_ack(m.delivery_tag, multiple=True)

    ch.basic_consume(q, cb)
    wait_for(conn, lambda: len(got) == n, timeout=60)
    assert got == list(range(n))
