"""kombu end to end, beyond the method-level checks of ``test_kombu.py``: two processes'
worth of SimpleQueue (a producer connection and a consumer connection), a ConsumerMixin
worker on a topic exchange, ``Connection.ensure`` / ``ensure_connection`` / ``autoretry``,
and a kombu consumer and producer living through a restart of the broker (ours: a broker
started by the test on its own data directory, restarted on the same port).
"""
from __future__ import annotations

import socket
import threading
import time

import amqp.exceptions
import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.common import Broadcast
from kombu.mixins import ConsumerMixin

from conftest import stop
from frameworks_support import TIMEOUT, Cleanup, kombu_url, restartable_broker, wait_until


@pytest.fixture
def cleanup(broker):
    c = Cleanup(broker)
    yield c
    c.run()


def test_simple_queue_across_connections(broker, cleanup):
    """A persistent SimpleQueue filled by one connection and drained by another, with a
    confirm per publish; qsize seen by the reader."""
    name = cleanup.queue(broker.name("ksimple"))
    cleanup.exchange(name)    # SimpleQueue's exchange is named after the queue
    with Connection(kombu_url(broker), transport_options={"confirm_publish": True}) as wc, \
            Connection(kombu_url(broker)) as rc:
        w = wc.SimpleQueue(name)
        r = rc.SimpleQueue(name)
        try:
            for i in range(20):
                w.put({"i": i, "pad": "x" * i}, headers={"seq": i})
            assert r.qsize() == 20   # confirmed, so already in the queue
            got = []
            for _ in range(20):
                m = r.get(timeout=TIMEOUT)
                got.append((m.payload["i"], m.headers["seq"], m.properties["delivery_mode"]))
                m.ack()
            assert got == [(i, i, 2) for i in range(20)]
            with pytest.raises(r.Empty):
                r.get(timeout=0.3)
        finally:
            w.close()
            r.close()


class TopicWorker(ConsumerMixin):
    """kombu's standard worker loop (what celery's consumer is built on)."""

    def __init__(self, connection, queues):
        self.connection = connection
        self.queues = queues
        self.got: list[tuple[str, str, object]] = []
        self.consuming = threading.Event()
        self.connects = 0

    def get_consumers(self, Consumer, channel):
        return [Consumer(queues=[q], callbacks=[self.on_message(q.name)], accept=["json"])
                for q in self.queues]

    def on_consume_ready(self, connection, channel, consumers, **kwargs):
        self.connects += 1
        self.consuming.set()

    def on_message(self, queue):
        def cb(body, message):
            self.got.append((queue, message.delivery_info["routing_key"], body))
            message.ack()
        return cb


def run_worker(worker):
    t = threading.Thread(target=worker.run, kwargs={"_tokens": 1}, daemon=True)
    t.start()
    assert worker.consuming.wait(TIMEOUT)
    return t


def test_consumer_mixin_over_topic_exchange(broker, cleanup):
    ex = Exchange(cleanup.exchange(broker.name("ktopic")), "topic", durable=False)
    orders = Queue(cleanup.queue(broker.name("korders")), ex, routing_key="order.*",
                   durable=False)
    audit = Queue(cleanup.queue(broker.name("kaudit")), ex, routing_key="#", durable=False)
    with Connection(kombu_url(broker)) as wc, Connection(kombu_url(broker)) as pc:
        worker = TopicWorker(wc, [orders, audit])
        t = run_worker(worker)
        try:
            producer = Producer(pc.channel(), exchange=ex)
            for key in ("order.new", "order.paid", "user.login", "order.eu.new"):
                producer.publish({"k": key}, routing_key=key)
            wait_until(lambda: len(worker.got) >= 6, what="6 deliveries")
            time.sleep(0.2)
        finally:
            worker.should_stop = True
            t.join(TIMEOUT)
    by_queue = {q: [k for qq, k, _ in worker.got if qq == q] for q in (orders.name, audit.name)}
    assert by_queue[orders.name] == ["order.new", "order.paid"]
    assert by_queue[audit.name] == ["order.new", "order.paid", "user.login", "order.eu.new"]
    assert all(body == {"k": key} for _, key, body in worker.got)


def test_broadcast_reaches_every_consumer(broker, cleanup):
    """kombu's Broadcast (celery's pidbox pattern): a fanout exchange and one auto-delete
    queue of a unique name per consumer, so every consumer gets its own copy."""
    name = cleanup.exchange(broker.name("kbcast"))
    with Connection(kombu_url(broker)) as pc, Connection(kombu_url(broker)) as a, \
            Connection(kombu_url(broker)) as b:
        got: dict[str, list] = {"a": [], "b": []}
        consumers = []
        for label, conn in (("a", a), ("b", b)):
            q = Broadcast(name)           # a fresh bcast.<uuid> queue for each
            c = Consumer(conn.channel(), queues=[q], accept=["json"],
                         callbacks=[lambda body, m, label=label: (got[label].append(body),
                                                                  m.ack())])
            c.consume()
            consumers.append((conn, c))
        producer = Producer(pc.channel(), exchange=Broadcast(name).exchange)
        for i in range(3):
            producer.publish({"i": i})
        deadline = time.monotonic() + TIMEOUT
        while len(got["a"]) + len(got["b"]) < 6 and time.monotonic() < deadline:
            for conn, _ in consumers:
                try:
                    conn.drain_events(timeout=0.05)
                except socket.timeout:
                    pass
        queues = [c.queues[0].name for _, c in consumers]
        for _, c in consumers:
            c.cancel()
    assert got == {"a": [{"i": 0}, {"i": 1}, {"i": 2}], "b": [{"i": 0}, {"i": 1}, {"i": 2}]}
    assert len(set(queues)) == 2 and all(q.startswith("bcast.") for q in queues)


def test_ensure_retries_after_channel_error(broker, cleanup):
    """``Connection.ensure`` revives the channel after a channel error (404 from a publish
    with confirms) and retries; ``autoretry`` does the same for any function of a channel."""
    name = cleanup.queue(broker.name("kensure"))
    missing = Exchange(broker.name("kmissing"), "direct")
    with Connection(kombu_url(broker), transport_options={"confirm_publish": True}) as c:
        producer = Producer(c.channel(), auto_declare=False)
        calls = []

        def errback(exc, interval):
            calls.append(type(exc).__name__)

        with pytest.raises(amqp.exceptions.NotFound):
            c.ensure(producer, producer.publish, max_retries=1, errback=errback)(
                {"x": 1}, exchange=missing, routing_key="x")
        # the channel was revived: the same producer publishes again
        publish = c.ensure(producer, producer.publish, max_retries=2)
        publish({"ok": 1}, routing_key=name, declare=[Queue(name, durable=False)])
        declare = c.autoretry(lambda channel=None: channel.queue_declare(name, passive=True))
        ok, _channel = declare()
        assert ok.message_count == 1


@pytest.fixture
def own_broker(tmp_path):
    with restartable_broker(tmp_path) as b:
        yield b


@pytest.mark.amqpbroker_only("restarts the broker")
def test_ensure_connection_waits_for_the_broker(own_broker):
    with Connection(kombu_url(own_broker)) as c:
        c.connect()
        stop(own_broker.process)
        c.collect()                 # what celery does on a connection error
        retries = []
        threading.Timer(1.0, own_broker.restart).start()
        c.ensure_connection(max_retries=40, interval_start=0.1, interval_step=0.1,
                            interval_max=0.3, errback=lambda exc, interval: retries.append(exc))
        assert c.connected and retries
        assert isinstance(retries[0], (ConnectionError, OSError, socket.error))
        name = own_broker.name("kback")
        q = c.SimpleQueue(name, queue_opts={"auto_delete": True})
        q.put("after the restart")
        assert q.get(timeout=TIMEOUT).payload == "after the restart"
        q.close()


@pytest.mark.amqpbroker_only("restarts the broker")
def test_consumer_and_producer_survive_a_restart(own_broker):
    """A ConsumerMixin worker on a durable topic binding and an ``ensure``d producer: the
    persistent message published before the restart (and not yet consumed) and those
    published after it all arrive, once each, with the worker reconnecting on its own."""
    ex = Exchange(own_broker.name("kdur"), "topic", durable=True)
    q = Queue(own_broker.name("kdurq"), ex, routing_key="job.#", durable=True)
    with Connection(kombu_url(own_broker), transport_options={"confirm_publish": True}) as pc:
        producer = Producer(pc, exchange=ex)
        publish = pc.ensure(producer, producer.publish, max_retries=30, interval_start=0.1,
                            interval_step=0.1, interval_max=0.3)
        publish({"n": 0}, routing_key="job.a", declare=[q], delivery_mode=2)
        with Connection(kombu_url(own_broker)) as wc:
            worker = TopicWorker(wc, [q])
            worker.connect_max_retries = 50
            t = run_worker(worker)
            try:
                wait_until(lambda: len(worker.got) == 1, what="the first message")
                # a message waiting in the queue across the restart: the worker is stopped
                worker.should_stop = True
                t.join(TIMEOUT)
                publish({"n": 1}, routing_key="job.b", delivery_mode=2)
                worker.should_stop = False
                worker.consuming.clear()
                own_broker.restart()
                publish({"n": 2}, routing_key="job.c", delivery_mode=2)
                t = run_worker(worker)
                wait_until(lambda: len(worker.got) == 3, what="the two kept messages")
                # settled before the next stop: an ack that arrives after the broker's
                # Connection.Close is discarded and its message delivered again (as RabbitMQ)
                time.sleep(0.3)
                worker.consuming.clear()
                # now a restart under a running worker: it reconnects by itself
                own_broker.restart()
                assert worker.consuming.wait(TIMEOUT), "the worker did not reconnect"
                publish({"n": 3}, routing_key="job.d", delivery_mode=2)
                wait_until(lambda: len(worker.got) == 4, what="all four messages")
                time.sleep(0.2)
            finally:
                worker.should_stop = True
                t.join(TIMEOUT)
    assert [body["n"] for _, _, body in worker.got] == [0, 1, 2, 3]
    assert [key for _, key, _ in worker.got] == ["job.a", "job.b", "job.c", "job.d"]
