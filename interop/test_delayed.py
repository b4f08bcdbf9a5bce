"""Delayed delivery with real clients (pika, aio-pika): the plugin's exchange type and
LavinMQ's x-delayed-exchange, x-delay coercion, release order, the mandatory difference,
the x-delivery-delay queue argument.  Debian's RabbitMQ 3.10 has no delayed-message plugin,
so those run against amqpbroker only; what RabbitMQ also does (an unknown argument is
ignored: a message without x-delay routes at once) runs on both.  Delays are short (tens
of ms to 1 s) and the waits are bounded."""
from __future__ import annotations

import asyncio
import time

import aio_pika
import pika
import pytest

from aiopika_support import TIMEOUT, Inbox, Session, publish

ONLY = pytest.mark.amqpbroker_only("Debian's RabbitMQ 3.10 has no delayed-message plugin")


def pika_conn(broker) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(broker.url))


def get_all(ch, queue: str, n: int, timeout: float = 5.0) -> list:
    """basic.get until ``n`` messages came (or the deadline)."""
    out, deadline = [], time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        method, props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            time.sleep(0.01)
            continue
        out.append((props, body))
    return out


@ONLY
def test_pika_released_in_order_of_due_with_x_delay_negated(broker):
    conn = pika_conn(broker)
    ch = conn.channel()
    x, q = broker.name("dx"), broker.name("dq")
    ch.exchange_declare(x, "x-delayed-message", arguments={"x-delayed-type": "direct"})
    ch.queue_declare(q, auto_delete=True)
    ch.queue_bind(q, x, "k")
    ch.confirm_delivery()
    start = time.monotonic()
    for body, delay in ((b"c", 600), (b"a", 200), (b"now", None), (b"b", "400"),
                        (b"f", 300)):
        headers = {"keep": 1} if delay is None else {"x-delay": delay, "keep": 1}
        ch.basic_publish(x, "k", body, pika.BasicProperties(headers=headers), mandatory=True)
    got = get_all(ch, q, 5)
    elapsed = time.monotonic() - start
    assert [b for _p, b in got] == [b"now", b"a", b"f", b"b", b"c"]
    assert [p.headers.get("x-delay") for p, _b in got] == [None, -200, -300, -400, -600]
    assert all(p.headers["keep"] == 1 for p, _b in got)
    assert elapsed >= 0.6
    ch.exchange_delete(x)
    conn.close()


@ONLY
def test_pika_delayed_mandatory_is_not_returned(broker):
    conn = pika_conn(broker)
    ch = conn.channel()
    x = broker.name("dx")
    ch.exchange_declare(x, "x-delayed-message", arguments={"x-delayed-type": "fanout"})
    ch.confirm_delivery()
    returned = []
    ch.add_on_return_callback(lambda *a: returned.append(a))
    # no binding: the plugin would return 312 at once; we do not know yet, so we do not
    ch.basic_publish(x, "", b"x", pika.BasicProperties(headers={"x-delay": 50}),
                     mandatory=True)
    with pytest.raises(pika.exceptions.UnroutableError):   # an undelayed one is returned
        ch.basic_publish(x, "", b"y", mandatory=True)
    conn.process_data_events(0.2)
    assert [body for *_a, body in returned] == [b"y"]   # the delayed one never came back
    ch.exchange_delete(x)
    conn.close()


@ONLY
@pytest.mark.parametrize("args, text", [
    ({}, "PRECONDITION_FAILED - Invalid argument, 'x-delayed-type' must be an existing "
         "exchange type"),
    ({"x-delayed-type": "x-delayed-message"},
     "PRECONDITION_FAILED - Invalid argument, 'x-delayed-message' can't be used for "
     "'x-delayed-type'"),
])
def test_pika_bad_delayed_type_is_406(broker, args, text):
    conn = pika_conn(broker)
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.exchange_declare(broker.name("dx"), "x-delayed-message", arguments=args)
    assert ei.value.reply_code == 406 and ei.value.reply_text == text
    conn.close()


def test_pika_x_delayed_exchange_without_x_delay_routes_at_once(broker):
    """RabbitMQ ignores the argument; we honour it, and a message without x-delay is
    routed at once by both."""
    conn = pika_conn(broker)
    ch = conn.channel()
    x, q = broker.name("lx"), broker.name("lq")
    ch.exchange_declare(x, "topic", arguments={"x-delayed-exchange": True})
    ch.queue_declare(q, auto_delete=True)
    ch.queue_bind(q, x, "a.#")
    ch.confirm_delivery()
    ch.basic_publish(x, "a.b", b"now", pika.BasicProperties(headers={"x-delay": 0}))
    method, _props, body = ch.basic_get(q, auto_ack=True)
    assert method is not None and body == b"now"
    ch.exchange_delete(x)
    conn.close()


@ONLY
@pytest.mark.anyio
async def test_aiopika_lavinmq_form_and_bindings_of_release_time(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        ex = await ch.declare_exchange(s.xname(), type="direct",
                                       arguments={"x-delayed-exchange": True})
        q1 = await ch.declare_queue(s.qname(), auto_delete=True)
        q2 = await ch.declare_queue(s.qname(), auto_delete=True)
        await q1.bind(ex, "k")
        await publish(ch, "k", b"later", exchange=ex.name, headers={"x-delay": 300.9})
        await q1.unbind(ex, "k")
        await q2.bind(ex, "k")           # the binding that exists at release time wins
        inbox = await Inbox().start(q2, no_ack=True)
        m = await inbox.get(timeout=TIMEOUT)
        assert m.body == b"later" and m.headers["x-delay"] == -300  # a float: truncated
        assert await q1.get(no_ack=True, fail=False) is None


@ONLY
@pytest.mark.anyio
async def test_aiopika_persistent_delayed_on_durable_exchange_confirmed(broker):
    async with Session(broker) as s:
        ch = await s.channel(publisher_confirms=True)
        ex = await ch.declare_exchange(s.xname(), type="x-delayed-message", durable=True,
                                       arguments={"x-delayed-type": "direct"})
        q = await ch.declare_queue(s.qname(), durable=True)
        await q.bind(ex, "k")
        ack = await asyncio.wait_for(ex.publish(aio_pika.Message(
            b"p", delivery_mode=aio_pika.DeliveryMode.PERSISTENT, headers={"x-delay": 200}),
            "k"), TIMEOUT)
        assert ack is not None
        inbox = await Inbox().start(q, no_ack=True)
        m = await inbox.get()
        assert m.body == b"p" and m.delivery_mode == aio_pika.DeliveryMode.PERSISTENT


@ONLY
@pytest.mark.anyio
async def test_aiopika_queue_delivery_delay(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        q = await ch.declare_queue(s.qname(), auto_delete=True,
                                   arguments={"x-delivery-delay": 300})
        start = time.monotonic()
        await publish(ch, q.name, b"1")
        await publish(ch, q.name, b"2")
        assert await q.get(no_ack=True, fail=False) is None      # not visible yet
        inbox = await Inbox().start(q, no_ack=True)
        got = await inbox.take(2)
        assert [m.body for m in got] == [b"1", b"2"]
        assert time.monotonic() - start >= 0.3
        # declare equivalence covers it
        with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
            ch2 = await s.channel()
            await ch2.declare_queue(q.name, auto_delete=True,
                                    arguments={"x-delivery-delay": 100})
