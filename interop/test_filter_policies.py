"""Filter policies on bindings (``x-filter-policy``, ``x-filter-policy-scope``) through pika
and aio-pika.  RabbitMQ has no filter policies: it accepts the arguments (any x- binding
argument) and ignores them, so the filtering tests are ours only; the one test that runs
on both shows that difference."""
from __future__ import annotations

import decimal
import json

import aiormq
import pika
import pika.exceptions
import pytest
from pika.spec import BasicProperties

from aiopika_support import Session, drain, publish
from test_pika import declare_queue, params

NO_FILTERS = "RabbitMQ has no filter policies (binding arguments x-filter-policy*)"
POLICY = json.dumps({"region": ["eu", {"prefix": "us-"}],
                     "amount": [{"numeric": [">=", 100, "<", 1000]}]})


def _get_all(ch, q) -> list[bytes]:
    out = []
    while True:
        method, _props, body = ch.basic_get(q, auto_ack=True)
        if method is None:
            return out
        out.append(body)


def test_pika_rabbitmq_accepts_and_ignores_the_arguments(broker):
    """Both brokers accept the binding; only amqpbroker filters."""
    with pika.BlockingConnection(params(broker)) as c:
        ch = c.channel()
        q = declare_queue(ch, broker)
        ch.queue_bind(q, "amq.fanout", arguments={"x-filter-policy": POLICY})
        ch.basic_publish("amq.fanout", "", b"in", BasicProperties(
            headers={"region": "eu", "amount": 150}))
        ch.basic_publish("amq.fanout", "", b"out", BasicProperties(
            headers={"region": "asia", "amount": 150}))
        c.process_data_events(time_limit=0.2)
        got = _get_all(ch, q)
        assert got == ([b"in", b"out"] if broker.kind == "rabbitmq" else [b"in"])


@pytest.mark.amqpbroker_only(NO_FILTERS)
def test_pika_headers_scope_every_type(broker):
    with pika.BlockingConnection(params(broker)) as c:
        ch = c.channel()
        ch.confirm_delivery()
        for ex, key in (("amq.direct", "k"), ("amq.topic", "k.#"), ("amq.fanout", "")):
            q = declare_queue(ch, broker)
            ch.queue_bind(q, ex, key, arguments={"x-filter-policy": POLICY})
            for i, (region, amount) in enumerate([("eu", 100), ("us-east", decimal.Decimal("999.5")),
                                                  ("eu", 1000), ("asia", 500), ("eu", "150")]):
                ch.basic_publish(ex, "k" if ex != "amq.topic" else "k.x", str(i).encode(),
                                 BasicProperties(headers={"region": region, "amount": amount}))
            assert _get_all(ch, q) == [b"0", b"1"], ex


@pytest.mark.amqpbroker_only(NO_FILTERS)
def test_pika_properties_and_routing_key(broker):
    policy = json.dumps({"content_type": [{"equals-ignore-case": "APPLICATION/JSON"}],
                         "routing_key": [{"suffix": ".created"}],
                         "app_id": [{"anything-but": ["legacy"]}]})
    with pika.BlockingConnection(params(broker)) as c:
        ch = c.channel()
        ch.confirm_delivery()
        q = declare_queue(ch, broker)
        ch.queue_bind(q, "amq.topic", "#", arguments={"x-filter-policy": policy})
        for body, rk, props in [
                (b"1", "order.created", BasicProperties(content_type="application/json",
                                                        app_id="shop")),
                (b"2", "order.deleted", BasicProperties(content_type="application/json",
                                                        app_id="shop")),
                (b"3", "order.created", BasicProperties(content_type="application/json",
                                                        app_id="legacy")),
                (b"4", "order.created", BasicProperties(content_type="text/plain",
                                                        app_id="shop"))]:
            ch.basic_publish("amq.topic", rk, body, props)
        assert _get_all(ch, q) == [b"1"]


@pytest.mark.amqpbroker_only(NO_FILTERS)
def test_pika_invalid_policy_is_406(broker):
    with pika.BlockingConnection(params(broker)) as c:
        ch = c.channel()
        q = declare_queue(ch, broker)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.queue_bind(q, "amq.fanout", arguments={
                "x-filter-policy": json.dumps({k: ["v"] for k in "abcdef"})})
        assert e.value.reply_code == 406
        assert "6 keys in one combination; at most 5" in e.value.reply_text




@pytest.mark.anyio
@pytest.mark.amqpbroker_only(NO_FILTERS)
async def test_aiopika_body_scope_nested_keys_and_or(broker):
    policy = {"order": {"country": ["FR", "DE"]},
              "$or": [{"total": [{"numeric": [">", 100]}]}, {"vip": [True]}]}
    async with Session(broker) as s:
        ch = await s.channel()
        ex = await ch.declare_exchange(s.xname(), type="direct")
        q = await ch.declare_queue(s.qname())
        await q.bind(ex, "orders", arguments={"x-filter-policy": json.dumps(policy),
                                              "x-filter-policy-scope": "body"})
        bodies = [{"order": {"country": "FR"}, "total": 120},
                  {"order": {"country": "FR"}, "total": 20},
                  {"order": {"country": "DE"}, "total": 20, "vip": True},
                  {"order": {"country": "US"}, "total": 500}]
        for b in bodies:
            await publish(ch, "orders", json.dumps(b), exchange=ex.name)
        await publish(ch, "orders", b"not json", exchange=ex.name)
        got = [json.loads(b) for b in await drain(q)]
        assert got == [bodies[0], bodies[2]]


@pytest.mark.anyio
@pytest.mark.amqpbroker_only(NO_FILTERS)
async def test_aiopika_table_policy_and_unbind(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        ex = await ch.declare_exchange(s.xname(), type="headers")
        q = await ch.declare_queue(s.qname())
        args = {"x-match": "any", "kind": "ip",
                "x-filter-policy": {"addr": [{"cidr": "10.0.0.0/24"}]}}
        await q.bind(ex, "", arguments=args)
        for addr in ("10.0.0.7", "10.0.1.7", "bad"):
            await publish(ch, "", addr, exchange=ex.name, headers={"kind": "ip", "addr": addr})
        assert await drain(q) == [b"10.0.0.7"]
        await q.unbind(ex, "", arguments=args)
        await publish(ch, "", "late", exchange=ex.name, headers={"kind": "ip", "addr": "10.0.0.1"})
        assert await drain(q) == []


@pytest.mark.anyio
@pytest.mark.amqpbroker_only(NO_FILTERS)
async def test_aiopika_bad_scope_is_406(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        q = await ch.declare_queue(s.qname())
        with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed) as e:
            await q.bind("amq.fanout", "", arguments={"x-filter-policy": '{"a": ["x"]}',
                                                      "x-filter-policy-scope": "MessageBody"})
        assert "invalid x-filter-policy-scope 'MessageBody'" in str(e.value)
