"""aio-pika interop: consumers, prefetch, acknowledgements, requeue order, queue lifecycles."""
from __future__ import annotations

import asyncio

import aiormq
import pytest
from pamqp import commands as spec

from aiopika_support import (
    QUIET, TIMEOUT, Inbox, Session, counts, drain, eventually, publish, queue_exists,
)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


async def _fill(ch, queue_name: str, n: int, prefix: str = "m") -> list[bytes]:
    bodies = [f"{prefix}{i}".encode() for i in range(n)]
    for b in bodies:
        await publish(ch, queue_name, b)
    return bodies


# --------------------------------------------------------------------------- prefetch

@pytest.mark.parametrize("prefetch", [1, 3, 10])
async def test_prefetch_limits_unacked_deliveries(broker, prefetch):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        q = await ch.declare_queue(s.qname())
        bodies = await _fill(ch, q.name, 25)
        await ch.set_qos(prefetch_count=prefetch)
        inbox = await Inbox().start(q)
        first = await inbox.take(prefetch)
        await inbox.nothing_more()
        assert [m.body for m in first] == bodies[:prefetch]
        assert await counts(conn, q.name) == (25 - prefetch, 1)
        # each ack frees exactly one slot
        await first[0].ack()
        nxt = await inbox.get()
        assert nxt.body == bodies[prefetch]
        await inbox.nothing_more()
        # ack multiple frees them all
        await nxt.ack(multiple=True)
        more = await inbox.take(prefetch)
        assert [m.body for m in more] == bodies[prefetch + 1: 2 * prefetch + 1]
        await inbox.nothing_more()


async def test_prefetch_applies_per_consumer(broker):
    """RabbitMQ's global=false: the limit applies to each consumer created afterwards."""
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        q1 = await ch.declare_queue(s.qname())
        q2 = await ch.declare_queue(s.qname())
        await _fill(ch, q1.name, 10)
        await _fill(ch, q2.name, 10)
        await ch.set_qos(prefetch_count=2)
        a = await Inbox().start(q1)
        b = await Inbox().start(q2)
        await a.take(2)
        await b.take(2)
        await a.nothing_more()
        assert b.queue.empty()


async def test_no_prefetch_means_unlimited(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        q = await ch.declare_queue(s.qname())
        bodies = await _fill(ch, q.name, 300)
        inbox = await Inbox().start(q)
        got = await inbox.take(300)
        assert [m.body for m in got] == bodies


async def test_no_ack_consumer_ignores_prefetch(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        q = await ch.declare_queue(s.qname())
        await _fill(ch, q.name, 20)
        await ch.set_qos(prefetch_count=1)
        inbox = await Inbox().start(q, no_ack=True)
        await inbox.take(20)
        assert await counts(conn, q.name) == (0, 1)


# --------------------------------------------------------------------------- ack / nack / reject

async def test_ack_removes_message(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        q = await ch.declare_queue(s.qname())
        await _fill(ch, q.name, 3)
        inbox = await Inbox().start(q)
        msgs = await inbox.take(3)
        for m in msgs:
            await m.ack()
        await ch.close()
        await asyncio.sleep(0.1)
        assert await counts(conn, q.name) == (0, 0)


@pytest.mark.parametrize("how", ["nack", "reject"])
async def test_requeue_goes_back_to_original_position(broker, how):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        q = await ch.declare_queue(s.qname())
        await _fill(ch, q.name, 5)
        got = [await q.get(no_ack=False, timeout=TIMEOUT) for _ in range(3)]
        assert [m.body for m in got] == [b"m0", b"m1", b"m2"]
        # requeue m1 first, then m0: they still come back in their original order, ahead of m3
        for m in (got[1], got[0]):
            if how == "nack":
                await m.nack(requeue=True)
            else:
                await m.reject(requeue=True)
        rest = [await q.get(no_ack=True, timeout=TIMEOUT) for _ in range(4)]
        assert [(m.body, m.redelivered) for m in rest] == [
            (b"m0", True), (b"m1", True), (b"m3", False), (b"m4", False)]
        assert await q.get(no_ack=True, fail=False, timeout=TIMEOUT) is None
        await got[2].ack()


async def test_requeue_to_consumer_is_redelivered(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        q = await ch.declare_queue(s.qname())
        await _fill(ch, q.name, 3)
        await ch.set_qos(prefetch_count=1)
        inbox = await Inbox().start(q)
        m0 = await inbox.get()
        assert (m0.body, m0.redelivered) == (b"m0", False)
        await m0.nack(requeue=True)
        again = await inbox.get()
        # RabbitMQ may give it back to the same consumer
        assert (again.body, again.redelivered) == (b"m0", True)
        assert again.delivery_tag > m0.delivery_tag
        await again.ack()
        m1 = await inbox.get()
        assert (m1.body, m1.redelivered) == (b"m1", False)
        await m1.ack()


@pytest.mark.parametrize("how", ["nack", "reject"])
async def test_discard_without_requeue(broker, how):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        q = await ch.declare_queue(s.qname())
        await _fill(ch, q.name, 2)
        m = await q.get(no_ack=False, timeout=TIMEOUT)
        if how == "nack":
            await m.nack(requeue=False)
        else:
            await m.reject(requeue=False)
        assert await drain(q) == [b"m1"]


async def test_nack_multiple_requeues_all_up_to_tag(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        q = await ch.declare_queue(s.qname())
        await _fill(ch, q.name, 5)
        got = [await q.get(no_ack=False, timeout=TIMEOUT) for _ in range(4)]
        await got[2].nack(multiple=True, requeue=True)   # m0, m1, m2 back
        rest = [await q.get(no_ack=True, timeout=TIMEOUT) for _ in range(4)]
        assert [(m.body, m.redelivered) for m in rest] == [
            (b"m0", True), (b"m1", True), (b"m2", True), (b"m4", False)]
        await got[3].ack()


async def test_ack_multiple(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        q = await ch.declare_queue(s.qname())
        await _fill(ch, q.name, 5)
        got = [await q.get(no_ack=False, timeout=TIMEOUT) for _ in range(5)]
        await got[2].ack(multiple=True)   # m0..m2 settled
        await ch.close()                  # m3, m4 go back
        await asyncio.sleep(0.1)
        ch2 = await s.channel(conn)
        q2 = await ch2.get_queue(q.name, ensure=False)
        rest = await drain(q2)
        assert rest == [b"m3", b"m4"]


async def test_recover_requeues_unacked(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        q = await ch.declare_queue(s.qname())
        await _fill(ch, q.name, 3)
        inbox = await Inbox().start(q)
        first = await inbox.take(3)
        assert all(not m.redelivered for m in first)
        ok = await (await ch.get_underlay_channel()).basic_recover(requeue=True)
        assert isinstance(ok, spec.Basic.RecoverOk)
        again = await inbox.take(3)
        assert [(m.body, m.redelivered) for m in again] == [
            (b"m0", True), (b"m1", True), (b"m2", True)]
        for m in again:
            await m.ack()


# --------------------------------------------------------------------------- unacked on close

async def test_unacked_returned_when_channel_closes(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        q = await ch.declare_queue(s.qname())
        await _fill(ch, q.name, 5)
        c1 = await s.channel(conn)
        q1 = await c1.get_queue(q.name, ensure=False)
        inbox = await Inbox().start(q1)
        got = await inbox.take(5)
        await got[1].ack()
        await got[3].ack()
        assert await counts(conn, q.name) == (0, 1)
        await c1.close()
        await eventually(lambda: _ready_is(conn, q.name, 3))
        c2 = await s.channel(conn)
        q2 = await c2.get_queue(q.name, ensure=False)
        inbox2 = await Inbox().start(q2)
        again = await inbox2.take(3)
        assert [(m.body, m.redelivered) for m in again] == [
            (b"m0", True), (b"m2", True), (b"m4", True)]
        await inbox2.nothing_more()


async def _ready_is(conn, name, n) -> bool:
    return (await counts(conn, name))[0] == n


async def test_unacked_returned_when_connection_closes(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        q = await ch.declare_queue(s.qname())
        await _fill(ch, q.name, 4)
        other = await s.connect()
        oc = await s.channel(other)
        got = [await (await oc.get_queue(q.name, ensure=False)).get(no_ack=False, timeout=TIMEOUT)
               for _ in range(2)]
        assert [m.body for m in got] == [b"m0", b"m1"]
        assert await counts(conn, q.name) == (2, 0)
        await other.close()
        await eventually(lambda: _ready_is(conn, q.name, 4))
        rest = [await q.get(no_ack=True, timeout=TIMEOUT) for _ in range(4)]
        assert [(m.body, m.redelivered) for m in rest] == [
            (b"m0", True), (b"m1", True), (b"m2", False), (b"m3", False)]


# --------------------------------------------------------------------------- several consumers

async def test_competing_consumers_get_distinct_messages(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        q = await ch.declare_queue(s.qname())
        inboxes = []
        for _ in range(2):
            c = await s.channel(conn)
            inboxes.append(await Inbox().start(await c.get_queue(q.name, ensure=False)))
        bodies = await _fill(ch, q.name, 100)
        await eventually(lambda: _total(inboxes, 100))
        a = [m.body for m in inboxes[0].received]
        b = [m.body for m in inboxes[1].received]
        assert set(a).isdisjoint(b)
        assert sorted(a + b) == sorted(bodies)
        # round-robin between two idle consumers: each gets a fair share, each in FIFO order
        assert len(a) >= 25 and len(b) >= 25, (len(a), len(b))
        assert a == [x for x in bodies if x in set(a)]
        assert b == [x for x in bodies if x in set(b)]
        await asyncio.sleep(0.1)
        assert sum(len(i.received) for i in inboxes) == 100


async def _total(inboxes, n) -> bool:
    return sum(len(i.received) for i in inboxes) >= n


async def test_competing_consumers_prefetch_one_round_robin(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        q = await ch.declare_queue(s.qname())
        inboxes = []
        for _ in range(3):
            c = await s.channel(conn)
            await c.set_qos(prefetch_count=1)
            inboxes.append(await Inbox().start(await c.get_queue(q.name, ensure=False)))
        await _fill(ch, q.name, 6)
        firsts = [await i.get() for i in inboxes]
        assert sorted(m.body for m in firsts) == [b"m0", b"m1", b"m2"]
        for i in inboxes:
            await i.nothing_more(0.1)
        for m in firsts:
            await m.ack()
        seconds = [await i.get() for i in inboxes]
        assert sorted(m.body for m in seconds) == [b"m3", b"m4", b"m5"]


async def test_consumer_priority(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        q = await ch.declare_queue(s.qname())
        low_ch = await s.channel(conn)
        high_ch = await s.channel(conn)
        await high_ch.set_qos(prefetch_count=3)
        low = await Inbox().start(await low_ch.get_queue(q.name, ensure=False),
                                  arguments={"x-priority": 0})
        high = await Inbox().start(await high_ch.get_queue(q.name, ensure=False),
                                   arguments={"x-priority": 10})
        await _fill(ch, q.name, 10)
        # the high-priority consumer gets all it can take; the rest go to the low one
        hi = await high.take(3)
        lo = await low.take(7)
        assert [m.body for m in hi] == [b"m0", b"m1", b"m2"]
        assert [m.body for m in lo] == [f"m{i}".encode() for i in range(3, 10)]
        await high.nothing_more(0.2)
        # once the high one has room again, new messages go to it
        for m in hi:
            await m.ack()
        # acks and publishes travel on different channels: RabbitMQ may route the next
        # publishes before its queue has seen the acks, so let them land first
        await high_ch.set_qos(prefetch_count=3)
        await asyncio.sleep(0.2)
        await _fill(ch, q.name, 2, prefix="n")
        assert [m.body for m in await high.take(2)] == [b"n0", b"n1"]
        await low.nothing_more(0.2)


async def test_negative_consumer_priority(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        q = await ch.declare_queue(s.qname())
        neg = await Inbox().start(await (await s.channel(conn)).get_queue(q.name, ensure=False),
                                  arguments={"x-priority": -5})
        default = await Inbox().start(await (await s.channel(conn)).get_queue(q.name, ensure=False))
        await _fill(ch, q.name, 5)
        assert len(await default.take(5)) == 5
        await neg.nothing_more(0.2)


# --------------------------------------------------------------------------- cancel

async def test_cancel_stops_delivery(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        q = await ch.declare_queue(s.qname())
        inbox = await Inbox().start(q, no_ack=True)
        await publish(ch, q.name, b"before")
        assert (await inbox.get()).body == b"before"
        ok = await q.cancel(inbox.tag)
        assert isinstance(ok, spec.Basic.CancelOk) and ok.consumer_tag == inbox.tag
        await _fill(ch, q.name, 3, prefix="after")
        await inbox.nothing_more()
        assert await counts(conn, q.name) == (3, 0)


async def test_cancel_returns_unacked_only_on_channel_close(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        q = await ch.declare_queue(s.qname())
        await _fill(ch, q.name, 2)
        inbox = await Inbox().start(q)
        msgs = await inbox.take(2)
        await q.cancel(inbox.tag)
        # cancelling does not requeue: the deliveries are still unacked and can be acked
        assert await counts(conn, q.name) == (0, 0)
        await msgs[0].ack()
        await ch.close()
        await eventually(lambda: _ready_is(conn, q.name, 1))


async def test_cancel_unknown_tag_is_ok(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        u = await ch.get_underlay_channel()
        ok = await u.basic_cancel("no-such-consumer-tag")
        assert isinstance(ok, spec.Basic.CancelOk)
        q = await ch.declare_queue(exclusive=True)   # channel still fine
        assert q.name


async def test_server_generated_consumer_tag(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        q = await ch.declare_queue(exclusive=True)
        u = await ch.get_underlay_channel()
        ok = await u.rpc(spec.Basic.Consume(queue=q.name, consumer_tag="", no_ack=True))
        assert isinstance(ok, spec.Basic.ConsumeOk)
        assert ok.consumer_tag.startswith("amq.ctag-")
        cancel = await u.basic_cancel(ok.consumer_tag)
        assert cancel.consumer_tag == ok.consumer_tag


async def test_queue_delete_notifies_consumer(broker):
    """consumer_cancel_notify: deleting the queue sends basic.cancel to its consumers."""
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        q = await ch.declare_queue(s.qname())
        u = await ch.get_underlay_channel()
        inbox = await Inbox().start(q)
        assert inbox.tag in u.consumers
        other = await s.channel(conn)
        await (await other.get_underlay_channel()).queue_delete(q.name)

        async def cancelled() -> bool:
            return inbox.tag not in u.consumers
        await eventually(cancelled)
        assert not ch.is_closed


# --------------------------------------------------------------------------- queue lifecycle

async def test_exclusive_queue_deleted_when_connection_closes(broker):
    async with Session(broker) as s:
        owner = await s.connect()
        observer = await s.connect()
        ch = await s.channel(owner)
        name = s.qname("excl")
        q = await ch.declare_queue(name, exclusive=True, durable=True)
        await publish(ch, name, b"x")
        assert q.declaration_result.queue == name
        assert await counts(owner, name) == (1, 0)
        await owner.close()

        async def gone() -> bool:
            return not await queue_exists(observer, name)
        await eventually(gone)


async def test_exclusive_queue_survives_channel_close(broker):
    async with Session(broker) as s:
        owner = await s.connect()
        ch = await s.channel(owner)
        q = await ch.declare_queue(exclusive=True)
        await ch.close()
        await asyncio.sleep(QUIET)
        assert await queue_exists(owner, q.name)


async def test_auto_delete_queue_removed_after_last_consumer_cancels(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        name = s.qname("ad")
        q = await ch.declare_queue(name, auto_delete=True)
        # never consumed: not deleted
        await asyncio.sleep(0.2)
        assert await queue_exists(conn, name)
        a = await Inbox().start(q)
        b = await Inbox().start(q)
        await q.cancel(a.tag)
        await asyncio.sleep(0.2)
        assert await queue_exists(conn, name), "deleted while a consumer remains"
        await q.cancel(b.tag)

        async def gone() -> bool:
            return not await queue_exists(conn, name)
        await eventually(gone)


async def test_auto_delete_queue_removed_when_consumer_channel_closes(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        name = s.qname("ad")
        await ch.declare_queue(name, auto_delete=True)
        cc = await s.channel(conn)
        await Inbox().start(await cc.get_queue(name, ensure=False))
        await cc.close()

        async def gone() -> bool:
            return not await queue_exists(conn, name)
        await eventually(gone)


async def test_consume_on_message_published_before(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        q = await ch.declare_queue(s.qname())
        await _fill(ch, q.name, 3)
        await asyncio.sleep(0.05)
        inbox = await Inbox().start(q, no_ack=True)
        got = await inbox.take(3)
        assert [m.body for m in got] == [b"m0", b"m1", b"m2"]
        assert all(m.exchange == "" and m.routing_key == q.name for m in got)
        await publish(ch, q.name, b"x")
        assert (await inbox.get()).body == b"x"
