"""Exactly-once publishing (deduplication) with real clients (pika, aio-pika): the plugin's
exchange type and LavinMQ's x-message-deduplication on any type, the id from the header or
the message-id, the window (exchange TTL, a message's own x-cache-ttl), a duplicate acked
under confirms and never returned under mandatory, an unroutable first publish not
recorded, queue-level deduplication freed on ack, the 406s.  Debian's RabbitMQ has no
rabbitmq-message-deduplication plugin, so those run against amqpbroker only; what RabbitMQ
also does (the arguments are accepted and a message without an id routes) runs on both.
Windows are short (hundreds of ms) and the waits bounded."""
from __future__ import annotations

import asyncio
import time

import aio_pika
import pika
import pytest
from pamqp.commands import Basic

from aiopika_support import TIMEOUT, Session, drain, publish

ONLY = pytest.mark.amqpbroker_only(
    "Debian's RabbitMQ has no rabbitmq-message-deduplication plugin")


def pika_conn(broker) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(broker.url))


def get_all(ch, queue: str) -> list:
    out = []
    while True:
        method, props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return out
        out.append((props, body))


@ONLY
def test_pika_plugin_type_duplicates_acked_and_not_returned(broker):
    conn = pika_conn(broker)
    ch = conn.channel()
    x, q1, q2 = broker.name("ddx"), broker.name("ddq"), broker.name("ddq")
    ch.exchange_declare(x, "x-message-deduplication", arguments={"x-cache-size": 100})
    for q, key in ((q1, "a"), (q2, "b")):          # fanout: the keys do not matter
        ch.queue_declare(q, auto_delete=True)
        ch.queue_bind(q, x, key)
    ch.confirm_delivery()
    returned = []
    ch.add_on_return_callback(lambda *a: returned.append(a))
    sent = [(b"1", {"x-deduplication-header": "order-1"}, None),
            (b"2", {"x-deduplication-header": "order-1"}, None),   # duplicate
            (b"3", None, "order-1"),                               # same id, message-id
            (b"4", {"x-deduplication-header": 42}, None),
            (b"5", {"x-deduplication-header": 42}, None),          # duplicate (an int)
            (b"6", None, None), (b"7", None, None)]                # no id: both pass
    for body, headers, mid in sent:
        # BlockingChannel raises on a nack or a return: each duplicate is an ack
        ch.basic_publish(x, "zzz", body, pika.BasicProperties(headers=headers,
                                                              message_id=mid),
                         mandatory=True)
    conn.process_data_events(0.2)
    assert returned == []
    for q in (q1, q2):
        assert [b for _p, b in get_all(ch, q)] == [b"1", b"4", b"6", b"7"]
    ch.exchange_delete(x)
    conn.close()


@ONLY
def test_pika_lavinmq_form_header_argument_and_ttl_window(broker):
    conn = pika_conn(broker)
    ch = conn.channel()
    x, q = broker.name("ddx"), broker.name("ddq")
    ch.exchange_declare(x, "direct", arguments={"x-message-deduplication": True,
                                                "x-cache-ttl": 300,
                                                "x-deduplication-header": "order-id"})
    ch.queue_declare(q, auto_delete=True)
    ch.queue_bind(q, x, "k")
    ch.confirm_delivery()

    def send(body, **headers):
        ch.basic_publish(x, "k", body, pika.BasicProperties(headers=headers))

    send(b"1", **{"order-id": "A"})
    send(b"2", **{"order-id": "A"})
    send(b"3", **{"order-id": "B", "x-cache-ttl": 2000})   # its own, longer window
    send(b"4", **{"x-deduplication-header": "A"})          # not the header named: passes
    time.sleep(0.45)
    send(b"5", **{"order-id": "A"})                         # A's window has passed
    send(b"6", **{"order-id": "B"})                         # B's has not
    assert [b for _p, b in get_all(ch, q)] == [b"1", b"3", b"4", b"5"]
    ch.exchange_delete(x)
    conn.close()


@ONLY
def test_pika_unroutable_first_publish_is_returned_and_its_retry_routes(broker):
    conn = pika_conn(broker)
    ch = conn.channel()
    x, q = broker.name("ddx"), broker.name("ddq")
    ch.exchange_declare(x, "topic", arguments={"x-message-deduplication": True})
    ch.queue_declare(q, auto_delete=True)
    ch.confirm_delivery()
    props = pika.BasicProperties(message_id="m-1")
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish(x, "a.b", b"first", props, mandatory=True)
    ch.queue_bind(q, x, "a.*")
    ch.basic_publish(x, "a.b", b"retry", props, mandatory=True)
    ch.basic_publish(x, "a.b", b"again", props, mandatory=True)  # now a duplicate
    assert [b for _p, b in get_all(ch, q)] == [b"retry"]
    ch.exchange_delete(x)
    conn.close()


@ONLY
@pytest.mark.anyio
async def test_aiopika_confirms_for_duplicates_are_acks(broker):
    async with Session(broker) as s:
        ch = await s.channel(publisher_confirms=True)
        ex = await ch.declare_exchange(s.xname(), type="x-message-deduplication",
                                       durable=True, arguments={"x-cache-size": 10})
        q = await ch.declare_queue(s.qname(), durable=True)
        await q.bind(ex)
        for body in (b"a", b"b", b"c"):
            confirm = await asyncio.wait_for(ex.publish(aio_pika.Message(
                body, message_id="same", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                "", mandatory=True), TIMEOUT)
            assert isinstance(confirm, Basic.Ack)   # a nack would raise here
        assert await drain(q) == [b"a"]


@ONLY
@pytest.mark.anyio
async def test_aiopika_queue_level_freed_on_ack(broker):
    async with Session(broker) as s:
        ch = await s.channel(publisher_confirms=True)
        q = await ch.declare_queue(s.qname(), auto_delete=True,
                                   arguments={"x-message-deduplication": True})
        for body in (b"1", b"2"):
            await publish(ch, q.name, body, headers={"x-deduplication-header": "j"})
        await publish(ch, q.name, b"3", message_id="j")
        m = await q.get(no_ack=False, timeout=TIMEOUT)
        assert m.body == b"1"
        await publish(ch, q.name, b"4", message_id="j")   # still unacked: a duplicate
        await m.ack()
        await publish(ch, q.name, b"5", message_id="j")   # acked: free again
        assert await drain(q) == [b"5"]
        # declare equivalence covers the argument
        with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
            ch2 = await s.channel()
            await ch2.declare_queue(q.name, auto_delete=True)


@ONLY
@pytest.mark.anyio
async def test_aiopika_406s(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed) as ei:
            await ch.declare_exchange(s.xname(), type="x-message-deduplication")
        # the plugin's text, with the run of spaces its Elixir source leaves in it
        assert "Missing or invalid argument,           'x-cache-size' must be an integer " \
            "greater than 0" in str(ei.value)
        ch = await s.channel(conn)
        with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed) as ei:
            await ch.declare_exchange(s.xname(), type="fanout", arguments={
                "x-message-deduplication": True, "x-cache-ttl": "soon"})
        assert "'x-cache-ttl' must be an integer greater than 0" in str(ei.value)
        ch = await s.channel(conn)
        name = s.xname()
        await ch.declare_exchange(name, type="x-message-deduplication",
                                  arguments={"x-cache-size": 5, "x-cache-ttl": 1000})
        with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed) as ei:
            await ch.declare_exchange(name, type="x-message-deduplication",
                                      arguments={"x-cache-size": 5, "x-cache-ttl": 2000})
        assert f"inequivalent arg 'x-cache-ttl' for exchange '{name}' in vhost '/'" in \
            str(ei.value)


@pytest.mark.anyio
async def test_aiopika_arguments_accepted_and_messages_without_id_route(broker):
    """On both brokers: RabbitMQ without the plugin ignores the arguments."""
    async with Session(broker) as s:
        ch = await s.channel(publisher_confirms=True)
        ex = await ch.declare_exchange(s.xname(), type="direct", auto_delete=True,
                                       arguments={"x-message-deduplication": True,
                                                  "x-cache-size": 10})
        q = await ch.declare_queue(s.qname(), auto_delete=True,
                                   arguments={"x-message-deduplication": True})
        await q.bind(ex, "k")
        for body in (b"1", b"2"):
            await publish(ch, "k", body, exchange=ex.name)
        assert await drain(q) == [b"1", b"2"]
