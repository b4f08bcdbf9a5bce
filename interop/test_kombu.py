"""kombu (``pyamqp://`` transport, i.e. py-amqp) against amqpbroker and RabbitMQ.

kombu/celery are the most common Python users of AMQP. py-amqp on its own prefers AMQPLAIN
when the server offers it, and older kombu releases (and many celery configs) pass
``login_method='AMQPLAIN'`` explicitly, so both SASL mechanisms are exercised here.
"""
from __future__ import annotations

import socket
import time

import amqp
import amqp.exceptions
import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue, binding

CAPABILITIES = (
    "publisher_confirms", "exchange_exchange_bindings", "basic.nack",
    "consumer_cancel_notify", "connection.blocked", "consumer_priorities",
    "authentication_failure_close", "per_consumer_qos", "direct_reply_to",
)


def kombu_url(broker) -> str:
    # kombu: the path after the host is the vhost; "//" means vhost "/"
    return f"pyamqp://guest:guest@{broker.host}:{broker.port}//"


@pytest.fixture
def conn(broker):
    c = Connection(kombu_url(broker), connect_timeout=10)
    c.connect()
    yield c
    c.release()


def drain_all(conn, quiet=0.5, limit=10.0):
    """Drain events until nothing arrives for ``quiet`` seconds."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            conn.drain_events(timeout=quiet)
        except socket.timeout:
            return


def drain_until(conn, pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not pred():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("timed out waiting for messages")
        try:
            conn.drain_events(timeout=min(remaining, 1.0))
        except socket.timeout:
            pass


# --------------------------------------------------------------------------- connection / SASL


@pytest.mark.parametrize("login_method", [None, "AMQPLAIN", "PLAIN"])
def test_connect_login_methods(broker, login_method):
    kw = {"login_method": login_method} if login_method else {}
    with Connection(kombu_url(broker), connect_timeout=10, **kw) as c:
        c.connect()
        assert c.connected
        assert c.transport.driver_type == "amqp"
        props = c.connection.server_properties
        for cap in CAPABILITIES:
            assert props["capabilities"].get(cap) is True, cap
        mechs = c.connection.mechanisms
        assert b"PLAIN" in mechs and b"AMQPLAIN" in mechs
        ch = c.channel()
        ch.basic_qos(0, 1, False)
        ch.close()


def test_raw_py_amqp_prefers_amqplain(broker):
    """py-amqp with no login_method picks AMQPLAIN before PLAIN when the server offers both."""
    c = amqp.Connection(f"{broker.host}:{broker.port}", userid="guest", password="guest",
                        connect_timeout=10)
    c.connect()
    try:
        offered = list(c.mechanisms)
        chosen = next(a.mechanism for a in c.authentication if a.mechanism in offered)
        assert chosen == b"AMQPLAIN"
        ch = c.channel()
        name = broker.name("rawq")
        q, count, consumers = ch.queue_declare(name, auto_delete=True)
        assert (q, count, consumers) == (name, 0, 0)
        ch.basic_publish(amqp.Message(b"raw", content_type="text/plain",
                                      application_headers={"k": 1}), routing_key=name)
        msg = None
        for _ in range(50):
            msg = ch.basic_get(name, no_ack=True)
            if msg is not None:
                break
            time.sleep(0.02)
        assert msg is not None and msg.body == b"raw"
        assert msg.properties["content_type"] == "text/plain"
        assert msg.headers == {"k": 1}
    finally:
        c.close()


@pytest.mark.parametrize("login_method", ["AMQPLAIN", "PLAIN"])
def test_wrong_password_access_refused(broker, login_method):
    url = f"pyamqp://guest:wrong-password@{broker.host}:{broker.port}//"
    with Connection(url, login_method=login_method, connect_timeout=10) as c:
        with pytest.raises(amqp.exceptions.AccessRefused) as ei:
            c.connect()
    assert ei.value.reply_code == 403
    assert "ACCESS_REFUSED" in str(ei.value)
    assert login_method in str(ei.value)


# --------------------------------------------------------------------------- SimpleQueue


def test_simple_queue_roundtrip(broker, conn):
    name = broker.name("simple")
    q = conn.SimpleQueue(name, queue_opts={"auto_delete": True})
    try:
        # before anything consumes, qsize/clear see the ready messages
        q.put({"again": 1})
        q.put({"again": 2})
        deadline = time.monotonic() + 5  # publishes are asynchronous
        while q.qsize() != 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert q.qsize() == 2
        assert q.clear() == 2
        assert q.qsize() == 0

        q.put({"hello": "world", "n": [1, 2, 3]})
        q.put("plain string", serializer="json")
        q.put(b"raw-bytes", serializer=None, content_type="application/octet-stream")
        m1 = q.get(timeout=5)
        assert m1.payload == {"hello": "world", "n": [1, 2, 3]}
        assert m1.content_type == "application/json"
        m1.ack()
        m2 = q.get(timeout=5)
        assert m2.payload == "plain string"
        m2.ack()
        m3 = q.get(timeout=5)
        assert m3.body == b"raw-bytes"
        m3.ack()
        with pytest.raises(q.Empty):
            q.get(block=False)
        with pytest.raises(q.Empty):
            q.get(timeout=0.5)
    finally:
        q.close()


def test_simple_queue_requeue_and_reject(broker, conn):
    q = conn.SimpleQueue(broker.name("simple"), queue_opts={"auto_delete": True})
    try:
        q.put({"n": 1})
        m = q.get(timeout=5)
        assert not m.delivery_info["redelivered"]
        m.requeue()
        m = q.get(timeout=5)
        assert m.payload == {"n": 1}
        assert m.delivery_info["redelivered"]
        m.reject()  # requeue=False: gone
        with pytest.raises(q.Empty):
            q.get(timeout=0.5)
    finally:
        q.close()


# --------------------------------------------------------------------------- Producer / Consumer


def test_producer_consumer_direct(broker, conn):
    ex = Exchange(broker.name("kdirect"), type="direct", auto_delete=True)
    qa = Queue(broker.name("ka"), exchange=ex, routing_key="a", auto_delete=True)
    qb = Queue(broker.name("kb"), exchange=ex, routing_key="b", auto_delete=True)
    got = []

    def on_message(body, message):
        got.append((message.delivery_info["routing_key"], message.delivery_info["exchange"],
                    body, message.headers, message.properties.get("priority"),
                    message.properties.get("correlation_id")))
        message.ack()

    with conn.channel() as pch, conn.channel() as cch:
        producer = Producer(pch, exchange=ex)
        consumer = Consumer(cch, queues=[qa, qb], callbacks=[on_message], accept=["json"])
        with consumer:
            producer.publish({"to": "a"}, routing_key="a", headers={"h": "v", "n": 7},
                             priority=3, correlation_id="c-1", declare=[qa, qb])
            producer.publish({"to": "b"}, routing_key="b")
            producer.publish({"to": "none"}, routing_key="zzz")
            drain_until(conn, lambda: len(got) >= 2)
            drain_all(conn, quiet=0.3)
    by_key = {g[0]: g for g in got}
    assert len(got) == 2
    assert by_key["a"][1:] == (ex.name, {"to": "a"}, {"h": "v", "n": 7}, 3, "c-1")
    assert by_key["b"][2] == {"to": "b"}


def test_topic_exchange_with_queue_bindings(broker, conn):
    ex = Exchange(broker.name("ktopic"), type="topic", auto_delete=True)
    # one queue, several bindings (two of which match "stock.us.nyse"): delivered once
    q1 = Queue(broker.name("kt1"), auto_delete=True,
               bindings=[binding(ex, routing_key="stock.#"), binding(ex, routing_key="*.us.*")])
    q2 = Queue(broker.name("kt2"), auto_delete=True,
               bindings=[binding(ex, routing_key="#.nyse"), binding(ex, routing_key="weather.*")])
    q3 = Queue(broker.name("kt3"), exchange=ex, routing_key="#", auto_delete=True)
    received = {q1.name: [], q2.name: [], q3.name: []}

    def collect(queue_name):
        def cb(body, message):
            received[queue_name].append(message.delivery_info["routing_key"])
            message.ack()
        return cb

    keys = ["stock.us.nyse", "stock.eu", "weather.uk", "weather.uk.rain", "news.us.today",
            "nyse", "stock", ""]
    with conn.channel() as ch:
        consumers = [Consumer(ch, queues=[q], callbacks=[collect(q.name)], accept=["json"])
                     for q in (q1, q2, q3)]
        for c in consumers:
            c.consume()
        producer = Producer(ch, exchange=ex)
        for k in keys:
            producer.publish({"k": k}, routing_key=k)
        drain_until(conn, lambda: len(received[q3.name]) == len(keys))
        drain_all(conn, quiet=0.3)
        for c in consumers:
            c.cancel()
    assert received[q1.name] == ["stock.us.nyse", "stock.eu", "news.us.today", "stock"]
    assert received[q2.name] == ["stock.us.nyse", "weather.uk", "nyse"]
    assert received[q3.name] == keys


def test_drain_events_timeout_when_idle(broker, conn):
    q = Queue(broker.name("kidle"), auto_delete=True)
    with conn.channel() as ch:
        with Consumer(ch, queues=[q], callbacks=[lambda b, m: None]):
            t0 = time.monotonic()
            with pytest.raises(socket.timeout):
                conn.drain_events(timeout=0.5)
            assert time.monotonic() - t0 >= 0.4
            assert conn.connected


def test_consumer_prefetch(broker, conn):
    q = Queue(broker.name("kqos"), auto_delete=True)
    got = []
    with conn.channel() as ch:
        q(ch).declare()
        producer = Producer(ch, routing_key=q.name)
        for i in range(4):
            producer.publish({"i": i})
        consumer = Consumer(ch, queues=[q], callbacks=[lambda b, m: got.append(m)],
                            prefetch_count=2, accept=["json"])
        with consumer:
            drain_until(conn, lambda: len(got) >= 2)
            drain_all(conn, quiet=0.5)
            assert [m.payload["i"] for m in got] == [0, 1]
            got[0].ack()
            drain_until(conn, lambda: len(got) >= 3)
            drain_all(conn, quiet=0.3)
            assert [m.payload["i"] for m in got] == [0, 1, 2]
            for m in got[1:]:
                m.ack()
            drain_until(conn, lambda: len(got) >= 4)
            got[3].ack()


def test_mandatory_publish_on_return(broker, conn):
    returned = []

    def on_return(exc, exchange, routing_key, message):
        returned.append((exc.reply_code, exchange, routing_key, message.body))

    with conn.channel() as ch:
        producer = Producer(ch, on_return=on_return)
        key = broker.name("nobody")
        producer.publish(b"bounce", routing_key=key, mandatory=True, serializer=None,
                         content_type="application/octet-stream")
        drain_until(conn, lambda: returned, timeout=5)
    assert returned == [(312, "", key, b"bounce")]


def test_confirm_publish_transport_option(broker):
    url = kombu_url(broker)
    with Connection(url, transport_options={"confirm_publish": True}, connect_timeout=10) as c:
        q = c.SimpleQueue(broker.name("kconfirm"), queue_opts={"auto_delete": True})
        try:
            for i in range(5):
                q.put({"i": i})  # each waits for basic.ack
            assert q.qsize() == 5
            assert [q.get(timeout=5).payload["i"] for _ in range(5)] == list(range(5))
        finally:
            q.close()
        # publishing to a missing exchange: channel.close 404 surfaces as an exception
        ch = c.channel()
        producer = Producer(ch, exchange=Exchange(broker.name("kmissing"), type="direct"),
                            auto_declare=False)
        with pytest.raises(amqp.exceptions.NotFound) as ei:
            producer.publish({"x": 1}, routing_key="x")
        assert ei.value.reply_code == 404
        # the connection survives a channel error
        q2 = c.SimpleQueue(broker.name("kconfirm"), queue_opts={"auto_delete": True})
        try:
            q2.put("still ok")
            assert q2.get(timeout=5).payload == "still ok"
        finally:
            q2.close()


def test_heartbeat_check_keeps_connection(broker):
    with Connection(kombu_url(broker), heartbeat=2, connect_timeout=10) as c:
        c.connect()
        assert c.get_heartbeat_interval() == 2
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                c.drain_events(timeout=0.25)
            except socket.timeout:
                pass
            c.heartbeat_check(rate=4)
        assert c.connected
        q = c.SimpleQueue(broker.name("khb"), queue_opts={"auto_delete": True})
        try:
            q.put("alive")
            assert q.get(timeout=5).payload == "alive"
        finally:
            q.close()


def test_ensure_connection_and_default_channel(broker, conn):
    conn.ensure_connection(max_retries=1)
    ch = conn.default_channel
    name = broker.name("kdef")
    qname, count, consumers = ch.queue_declare(name, auto_delete=True)
    assert (qname, count, consumers) == (name, 0, 0)
    ch.queue_delete(name)


def test_priority_queue(broker, conn):
    """celery's task priorities: a queue with x-max-priority delivers higher priorities first."""
    q = Queue(broker.name("kprio"), auto_delete=True, max_priority=10)
    with conn.channel() as ch:
        q(ch).declare()
        producer = Producer(ch, routing_key=q.name)
        for prio in (1, 5, 0, 9, 5, 10, 200):
            producer.publish({"p": prio}, priority=prio)
        # publish is asynchronous; a passive declare on this channel follows the publishes
        deadline = time.monotonic() + 5
        while q(ch).queue_declare(passive=True).message_count < 7:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        got = []
        while True:
            m = ch.basic_get(q.name, no_ack=True)
            if m is None:
                break
            got.append(m.properties.get("priority"))
    # priorities above x-max-priority count as the maximum; equal priorities stay FIFO
    assert got == [10, 200, 9, 5, 5, 1, 0]
