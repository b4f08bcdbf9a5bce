"""Poison-pill drain (issue 10 item 3) with real clients: pika workers in threads and
aio-pika workers on one event loop.  A fleet of workers consumes a queue; pills (the
``x-poison-pill`` header, or ``Admin.drain``) arrive behind the work; each worker gets its
Basic.Cancel after finishing what was queued before its pill, and nothing is lost.

RabbitMQ has no poison pills (the header is an ordinary one there): amqpbroker only.
The drain tests run a broker in this process (a ``Server`` in a thread with its own event
loop, through an anyio blocking portal) so that ``Admin.drain`` is called as the
management API will call it: on the broker's event-loop thread."""
from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid

import aio_pika
import pika
import pytest
from anyio.from_thread import start_blocking_portal

from amqpbroker.admin import Admin
from amqpbroker.config import Config, Listen, Storage, Management, Prometheus
from amqpbroker.server import Server

OFF = Management(port=None)  # the reference RabbitMQ here holds 15672 and 15692
POFF = Prometheus(port=None)

pytestmark = [pytest.mark.amqpbroker_only("RabbitMQ has no poison pills"),
              pytest.mark.timeout(60)]

JOBS = 30
WORKERS = 3
PILL = pika.BasicProperties(headers={"x-poison-pill": True})


class InProcess:
    """A broker in this process: ``url`` for clients, ``call(fn, *args)`` on its loop."""

    def __init__(self, portal, server):
        self.portal, self.server = portal, server
        self.url = f"amqp://guest:guest@127.0.0.1:{server.ports[0][1]}/"

    def call(self, fn, *args):
        return self.portal.call(fn, *args)

    def drain(self, queue: str) -> int:
        return self.call(Admin(self.server.broker).drain, "/", queue)

    def consumers(self, queue: str) -> int:
        return self.call(lambda: self.server.broker.vhosts["/"].queues[queue].consumer_count)


@pytest.fixture
def inproc(tmp_path):
    config = Config(management=OFF, prometheus=POFF, listen=Listen(hosts=("127.0.0.1",), port=0),
                    storage=Storage(backend="sqlite", path=str(tmp_path)))
    with start_blocking_portal() as portal:
        server = portal.call(Server, config)
        task, _ = portal.start_task(server.serve)
        try:
            yield InProcess(portal, server)
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                task.result(10)


# ---------------------------------------------------------------------- pika


class PikaWorker(threading.Thread):
    """Consumes with prefetch 1, acks each message, until the broker cancels it."""

    def __init__(self, url: str, queue: str, started: threading.Barrier):
        super().__init__(daemon=True)
        self.url, self.queue, self.started = url, queue, started
        self.jobs: list[bytes] = []
        self.pills = 0
        self.cancelled: list[str] = []
        self.after_cancel: list[bytes] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            conn = pika.BlockingConnection(pika.URLParameters(self.url))
            ch = conn.channel()
            ch.basic_qos(prefetch_count=1)
            ch.add_on_cancel_callback(lambda f: self.cancelled.append(f.method.consumer_tag))
            self.tag = ch.basic_consume(self.queue, self.on_message)
            conn.call_later(30, ch.stop_consuming)   # a guard: a test that fails ends
            self.started.wait(10)
            ch.start_consuming()                     # returns once the broker cancels
            self.channel_open = ch.is_open
            conn.close()
        except BaseException as e:  # reported by the test
            self.error = e

    def on_message(self, ch, method, props, body) -> None:
        if self.cancelled:
            self.after_cancel.append(body)
        if (props.headers or {}).get("x-poison-pill") is True:
            self.pills += 1
        else:
            self.jobs.append(body)
        ch.basic_ack(method.delivery_tag)


def pika_fleet(url: str, queue: str, publish_pills) -> list[PikaWorker]:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.confirm_delivery()          # every job is in the queue before the pills
    ch.queue_declare(queue, durable=True)
    started = threading.Barrier(WORKERS + 1)
    workers = [PikaWorker(url, queue, started) for _ in range(WORKERS)]
    for w in workers:
        w.start()
    started.wait(10)                                 # every worker is consuming
    for i in range(JOBS):
        ch.basic_publish("", queue, b"job%02d" % i, pika.BasicProperties(delivery_mode=2))
    publish_pills(ch)
    for w in workers:
        w.join(40)
    left = ch.queue_declare(queue, passive=True).method
    ch.queue_delete(queue)
    conn.close()
    assert (left.message_count, left.consumer_count) == (0, 0)
    return workers


def check_fleet(workers) -> None:
    for w in workers:
        assert w.error is None, w.error
        assert not w.is_alive()
        assert w.pills == 1 and w.cancelled == [w.tag] and w.after_cancel == []
        assert w.channel_open                        # cancelled, the channel stays
    done = sorted(b for w in workers for b in w.jobs)
    assert done == [b"job%02d" % i for i in range(JOBS)]  # each exactly once


def test_pika_workers_stop_on_pills_published_with_the_header(broker):
    def pills(ch):
        for _ in range(WORKERS):
            ch.basic_publish("", queue, b"", PILL)
    queue = broker.name("pill")
    check_fleet(pika_fleet(broker.url, queue, pills))


def test_pika_workers_stop_after_admin_drain(inproc):
    drained = []
    check_fleet(pika_fleet(inproc.url, "work", lambda ch: drained.append(inproc.drain("work"))))
    assert drained == [WORKERS]


def test_pika_basic_get_just_delivers_a_pill(broker):
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        ch = conn.channel()
        q = ch.queue_declare(broker.name("pill"), exclusive=True).method.queue
        ch.basic_publish("", q, b"", PILL)
        ch.basic_publish("", q, b"after", None)
        method, props, _body = ch.basic_get(q, auto_ack=True)
        assert props.headers == {"x-poison-pill": True}
        method, props, body = ch.basic_get(q, auto_ack=True)
        assert body == b"after"
    finally:
        conn.close()


# ---------------------------------------------------------------------- aio-pika


async def aio_fleet(url: str, queue: str, publish_pills) -> None:
    conns = [await aio_pika.connect(url) for _ in range(WORKERS + 1)]
    try:
        pub = await conns[0].channel()
        q = await pub.declare_queue(queue, durable=True)
        workers = []
        for conn in conns[1:]:
            ch = await conn.channel()
            await ch.set_qos(prefetch_count=1)
            u = await ch.get_underlay_channel()
            w = {"jobs": [], "pills": 0, "cancelled": asyncio.Event(), "late": []}

            async def on_message(m, w=w):
                if w["cancelled"].is_set():
                    w["late"].append(m.body)
                if (m.headers or {}).get("x-poison-pill") is True:
                    w["pills"] += 1
                else:
                    w["jobs"].append(m.body)
                await m.ack()

            def on_cancel(frame, w=w):
                w["tag_cancelled"] = frame.consumer_tag
                w["cancelled"].set()
            u.on_consumer_cancel_callbacks.add(on_cancel)
            wq = await ch.get_queue(queue, ensure=False)
            w["tag"] = await wq.consume(on_message)
            w["channel"] = ch
            workers.append(w)
        for i in range(JOBS):
            await pub.default_exchange.publish(
                aio_pika.Message(b"job%02d" % i, delivery_mode=2), queue)
        await publish_pills(pub)
        await asyncio.wait_for(asyncio.gather(*(w["cancelled"].wait() for w in workers)), 20)
        await asyncio.sleep(0.2)                    # nothing more arrives after a cancel
        for w in workers:
            assert w["pills"] == 1 and w["tag_cancelled"] == w["tag"] and w["late"] == []
            assert not w["channel"].is_closed
        done = sorted(b for w in workers for b in w["jobs"])
        assert done == [b"job%02d" % i for i in range(JOBS)]
        left = await pub.declare_queue(queue, passive=True)
        assert (left.declaration_result.message_count,
                left.declaration_result.consumer_count) == (0, 0)
        await q.delete()
    finally:
        for conn in conns:
            await conn.close()


@pytest.mark.anyio
async def test_aiopika_workers_stop_on_pills_published_with_the_header(broker):
    async def pills(ch):
        for _ in range(WORKERS):
            await ch.default_exchange.publish(
                aio_pika.Message(b"", headers={"x-poison-pill": True}), queue)
    queue = broker.name("pill")
    await aio_fleet(broker.url, queue, pills)


@pytest.mark.anyio
async def test_aiopika_workers_stop_after_admin_drain(inproc):
    queue = "work-" + uuid.uuid4().hex[:8]

    async def pills(ch):
        assert inproc.drain(queue) == WORKERS
    await aio_fleet(inproc.url, queue, pills)
