"""FastStream's RabbitMQ integration end to end: a real ``RabbitBroker(url)`` connection
(aio-pika underneath), in the test's event loop, against amqpbroker and RabbitMQ; no
TestClient. Subscribers and publishers (a handler's return value published on), RPC over
direct reply-to, topic, fanout and headers exchanges, and acknowledgement: automatic,
manual ack/nack/reject, and the reject/nack-on-error policies with a dead-letter queue.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest
from faststream import AckPolicy
from faststream.rabbit import ExchangeType, QueueType, RabbitBroker, RabbitExchange, \
    RabbitMessage, RabbitQueue

from frameworks_support import Cleanup, restartable_broker

pytestmark = pytest.mark.anyio

TIMEOUT = 5.0
QUIET = 0.3


@pytest.fixture
def names(broker):
    c = Cleanup(broker)
    yield c
    c.run()


@contextlib.asynccontextmanager
async def started(fs: RabbitBroker):
    """Connect, declare every subscriber's queue and bindings, start consuming."""
    async with fs:
        await fs.start()
        yield fs


def new_broker(broker) -> RabbitBroker:
    return RabbitBroker(broker.url, logger=logging.getLogger("faststream-e2e"),
                        graceful_timeout=2)


async def take(q: asyncio.Queue, n: int) -> list:
    out = [await asyncio.wait_for(q.get(), TIMEOUT) for _ in range(n)]
    await asyncio.sleep(QUIET)
    assert q.empty(), f"more than {n}: {q.get_nowait()!r}"
    return out


def queue(names, prefix, **kw) -> RabbitQueue:
    return RabbitQueue(names.queue(names.broker.name(prefix)), auto_delete=True, **kw)


def exchange(names, prefix, type_) -> RabbitExchange:
    return RabbitExchange(names.exchange(names.broker.name(prefix)), type=type_,
                          auto_delete=True, durable=False)


def collector(into: asyncio.Queue, label, what):
    """A handler putting ``(label, what(body, msg))`` into ``into`` (FastStream maps a
    handler's parameters to the body's fields, so the label cannot be a default)."""
    async def handler(body, msg: RabbitMessage) -> None:
        await into.put((label, what(body, msg)))
    return handler


async def test_subscriber_and_publisher_chain(broker, names):
    """A handler whose return value a publisher decorator sends on to a second queue."""
    fs = new_broker(broker)
    first, second = queue(names, "fs-in"), queue(names, "fs-out")
    got: asyncio.Queue = asyncio.Queue()

    @fs.subscriber(first)
    @fs.publisher(second)
    async def double(body: dict) -> dict:
        return {"n": body["n"] * 2}

    @fs.subscriber(second)
    async def collect(body: dict, msg: RabbitMessage) -> None:
        await got.put((body, msg.content_type, msg.correlation_id))

    async with started(fs):
        for n in range(3):
            await fs.publish({"n": n}, queue=first, correlation_id=f"c{n}")
        results = await take(got, 3)
    assert sorted(r[0]["n"] for r in results) == [0, 2, 4]
    assert {r[1] for r in results} == {"application/json"}
    # the correlation id travels along the chain
    assert sorted(r[2] for r in results) == ["c0", "c1", "c2"]


async def test_rpc_request_response(broker, names):
    """``broker.request``: the reply comes back on ``amq.rabbitmq.reply-to``."""
    fs = new_broker(broker)
    q = queue(names, "fs-rpc")

    @fs.subscriber(q)
    async def echo(body: str, msg: RabbitMessage) -> str:
        return f"{body}:{msg.reply_to.startswith('amq.rabbitmq.reply-to')}"

    async with started(fs):
        replies = [await fs.request(f"ping{i}", queue=q, timeout=TIMEOUT) for i in range(3)]
        bodies = [await r.decode() for r in replies]
    assert bodies == ["ping0:True", "ping1:True", "ping2:True"]


async def test_topic_exchange(broker, names):
    fs = new_broker(broker)
    ex = exchange(names, "fs-topic", ExchangeType.TOPIC)
    got: asyncio.Queue = asyncio.Queue()
    for pattern in ("logs.*.error", "logs.#"):
        fs.subscriber(queue(names, "fs-t", routing_key=pattern), ex)(
            collector(got, pattern, lambda body, msg: msg.raw_message.routing_key))

    async with started(fs):
        for key in ("logs.api.error", "logs.api.info", "logs", "metrics.api.error"):
            await fs.publish("x", exchange=ex, routing_key=key)
        results = await take(got, 4)
    assert sorted(results) == [("logs.#", "logs"), ("logs.#", "logs.api.error"),
                               ("logs.#", "logs.api.info"),
                               ("logs.*.error", "logs.api.error")]


async def test_fanout_exchange(broker, names):
    fs = new_broker(broker)
    ex = exchange(names, "fs-fan", ExchangeType.FANOUT)
    got: asyncio.Queue = asyncio.Queue()
    for i in range(3):
        fs.subscriber(queue(names, f"fs-f{i}"), ex)(
            collector(got, i, lambda body, msg: body["e"]))

    async with started(fs):
        await fs.publish({"e": "deployed"}, exchange=ex, routing_key="ignored")
        results = await take(got, 3)
    assert sorted(results) == [(0, "deployed"), (1, "deployed"), (2, "deployed")]


async def test_headers_exchange(broker, names):
    fs = new_broker(broker)
    ex = exchange(names, "fs-hdr", ExchangeType.HEADERS)
    got: asyncio.Queue = asyncio.Queue()
    bindings = {"all": {"x-match": "all", "format": "pdf", "type": "report"},
                "any": {"x-match": "any", "format": "pdf", "type": "log"}}
    for label, args in bindings.items():
        fs.subscriber(queue(names, "fs-h", bind_arguments=args), ex)(
            collector(got, label, lambda body, msg: body))

    async with started(fs):
        await fs.publish("pdf-report", exchange=ex, headers={"format": "pdf", "type": "report"})
        await fs.publish("zip-log", exchange=ex, headers={"format": "zip", "type": "log"})
        await fs.publish("zip-report", exchange=ex, headers={"format": "zip", "type": "report"})
        results = await take(got, 3)
    assert sorted(results) == [("all", "pdf-report"), ("any", "pdf-report"), ("any", "zip-log")]


async def test_manual_ack_nack_reject(broker, names):
    """Manual acknowledgement: nack with requeue comes back redelivered, reject goes to
    the queue's dead-letter exchange, ack settles."""
    fs = new_broker(broker)
    dlx = exchange(names, "fs-dlx", ExchangeType.FANOUT)
    dead = queue(names, "fs-dead")
    work = queue(names, "fs-work", arguments={"x-dead-letter-exchange": dlx.name})
    seen: asyncio.Queue = asyncio.Queue()
    dead_letters: asyncio.Queue = asyncio.Queue()

    @fs.subscriber(work, ack_policy=AckPolicy.MANUAL)
    async def handle(body: str, msg: RabbitMessage) -> None:
        redelivered = msg.raw_message.redelivered
        await seen.put((body, redelivered))
        if body == "retry" and not redelivered:
            await msg.nack(requeue=True)
        elif body == "poison":
            await msg.reject(requeue=False)
        else:
            await msg.ack()

    @fs.subscriber(dead, dlx)
    async def on_dead(body: str, msg: RabbitMessage) -> None:
        (death,) = msg.headers["x-death"]
        await dead_letters.put((body, death["reason"], death["queue"]))

    async with started(fs):
        for body in ("ok", "retry", "poison"):
            await fs.publish(body, queue=work)
        handled = await take(seen, 4)
        assert await take(dead_letters, 1) == [("poison", "rejected", work.name)]
    assert sorted(handled) == [("ok", False), ("poison", False), ("retry", False),
                               ("retry", True)]


async def test_error_policies(broker, names):
    """An exception in a handler: REJECT_ON_ERROR dead-letters the message, NACK_ON_ERROR
    requeues it (and the second attempt succeeds); the default acks what succeeded."""
    fs = new_broker(broker)
    dlx = exchange(names, "fs-dlx", ExchangeType.FANOUT)
    dead = queue(names, "fs-dead")
    rejecting = queue(names, "fs-rej", arguments={"x-dead-letter-exchange": dlx.name})
    nacking = queue(names, "fs-nack")
    attempts: asyncio.Queue = asyncio.Queue()
    dead_letters: asyncio.Queue = asyncio.Queue()

    @fs.subscriber(rejecting, ack_policy=AckPolicy.REJECT_ON_ERROR)
    async def always_fails(body: str) -> None:
        await attempts.put(("rej", body))
        raise ValueError("boom")

    @fs.subscriber(nacking, ack_policy=AckPolicy.NACK_ON_ERROR)
    async def fails_once(body: str, msg: RabbitMessage) -> None:
        await attempts.put(("nack", msg.raw_message.redelivered))
        if not msg.raw_message.redelivered:
            raise ValueError("once")

    @fs.subscriber(dead, dlx)
    async def on_dead(body: str) -> None:
        await dead_letters.put(body)

    async with started(fs):
        await fs.publish("bad", queue=rejecting)
        await fs.publish("flaky", queue=nacking)
        assert sorted(await take(attempts, 3)) == [("nack", False), ("nack", True),
                                                   ("rej", "bad")]
        assert await take(dead_letters, 1) == ["bad"]


async def test_quorum_queue_delivery_limit(broker, names):
    """A quorum queue with ``x-delivery-limit: 2`` and a handler that always nacks with
    requeue: three deliveries (``x-delivery-count`` 1 and 2 on the redeliveries), then the
    message is dead-lettered with reason ``delivery_limit``."""
    fs = new_broker(broker)
    dlx = exchange(names, "fs-dlx", ExchangeType.FANOUT)
    dead = queue(names, "fs-dead")
    work = RabbitQueue(names.queue(broker.name("fs-quorum")), queue_type=QueueType.QUORUM,
                       durable=True, arguments={"x-delivery-limit": 2,
                                                "x-dead-letter-exchange": dlx.name})
    deliveries: asyncio.Queue = asyncio.Queue()
    dead_letters: asyncio.Queue = asyncio.Queue()

    @fs.subscriber(work, ack_policy=AckPolicy.MANUAL)
    async def always_nacks(body: str, msg: RabbitMessage) -> None:
        await deliveries.put((msg.raw_message.redelivered, msg.headers.get("x-delivery-count")))
        await msg.nack(requeue=True)

    @fs.subscriber(dead, dlx)
    async def on_dead(body: str, msg: RabbitMessage) -> None:
        await dead_letters.put((body, msg.headers["x-death"]))

    async with started(fs):
        await fs.publish("again and again", queue=work)
        assert await take(deliveries, 3) == [(False, None), (True, 1), (True, 2)]
        ((body, deaths),) = await take(dead_letters, 1)
    assert body == "again and again"
    assert [(d["reason"], d["queue"], d["count"]) for d in deaths] == [
        ("delivery_limit", work.name, 1)]


@pytest.mark.amqpbroker_only("restarts the broker")
async def test_subscriber_and_rpc_survive_a_broker_restart(tmp_path):
    """aio-pika's robust connection under FastStream: after the broker restarts it
    reconnects, redeclares the durable exchange, queue and binding (equivalence checked
    against what the broker recovered) and consumes again; a persistent message published
    before the restart and not yet consumed is delivered once, RPC works again."""
    with restartable_broker(tmp_path) as b:
        fs = RabbitBroker(b.url, logger=logging.getLogger("faststream-e2e"),
                          graceful_timeout=2, reconnect_interval=0.2)
        ex = RabbitExchange(b.name("fs-dur"), type=ExchangeType.TOPIC, durable=True)
        q = RabbitQueue(b.name("fs-durq"), durable=True, routing_key="job.*")
        rpc = RabbitQueue(b.name("fs-rpc"), durable=True)
        got: asyncio.Queue = asyncio.Queue()
        gate = asyncio.Event()

        @fs.subscriber(q, ex)
        async def on_job(body: dict, msg: RabbitMessage) -> None:
            if body["n"] == 1:
                await gate.wait()     # hold it unacked across the restart
            await got.put((body["n"], msg.raw_message.redelivered))

        @fs.subscriber(rpc)
        async def echo(body: str) -> str:
            return body.upper()

        async with started(fs):
            await fs.publish({"n": 0}, exchange=ex, routing_key="job.a", persist=True)
            assert await asyncio.wait_for(got.get(), TIMEOUT) == (0, False)
            await fs.publish({"n": 1}, exchange=ex, routing_key="job.b", persist=True)
            await asyncio.sleep(0.2)                 # delivered, held by the handler
            await asyncio.to_thread(b.restart)
            gate.set()
            deadline = asyncio.get_running_loop().time() + TIMEOUT
            while True:                               # until the connection is back
                try:
                    await fs.publish({"n": 2}, exchange=ex, routing_key="job.c", persist=True)
                    break
                except Exception:
                    assert asyncio.get_running_loop().time() < deadline, "no reconnect"
                    await asyncio.sleep(0.2)
            results = await take_within(got, {(1, True), (2, False)})
            reply = await fs.request("again", queue=rpc, timeout=TIMEOUT)
            assert await reply.decode() == "AGAIN"
    assert (1, True) in results and (2, False) in results


async def take_within(q: asyncio.Queue, expected: set) -> list:
    """Items until every expected one came (a held message's first delivery may also
    finish after the restart: its ack then went nowhere, and it comes again)."""
    seen: list = []
    while not expected <= set(seen):
        seen.append(await asyncio.wait_for(q.get(), TIMEOUT))
    return seen
