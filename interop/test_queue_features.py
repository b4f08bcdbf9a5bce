"""Queue features against amqpbroker and (with AMQP_REFERENCE_URL) RabbitMQ: dead-lettering
and the x-death header, message TTL and queue expiry, length limits and overflow modes,
priorities, single active consumer, delivery limits, sender-selected distribution (CC/BCC),
direct reply-to and transactions.  aio-pika mostly, a few pika tests at the end.

TTLs are kept at 50-200 ms; "it is gone" is checked by polling (``eventually``) so that
RabbitMQ's asynchronous expiry is not a race.
"""
from __future__ import annotations

import asyncio
import datetime
import time

import aio_pika
import aiormq
import pika
import pika.exceptions
import pytest
from aio_pika import Message
from pamqp import commands as spec

from aiopika_support import (QUIET, TIMEOUT, Inbox, Session, close_reason, counts, drain,
                             eventually, publish, queue_exists)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

E = aiormq.exceptions

X_DEATH_FIELDS = {"count", "reason", "queue", "time", "exchange", "routing-keys"}


async def setup_dlx(s: Session, ch, *, dlrk: str | None = None, dlx_type: str = "fanout",
                    bind_key: str = "", src_durable: bool = False, **qargs):
    """A source queue dead-lettering to a fresh exchange with one queue bound to it.
    Returns (source queue, dead-letter queue, dead-letter exchange name)."""
    dlx = s.xname("dlx")
    ex = await ch.declare_exchange(dlx, dlx_type)
    dlq = await ch.declare_queue(s.qname("dlq"))
    await dlq.bind(ex, bind_key)
    args = {"x-dead-letter-exchange": dlx, **qargs}
    if dlrk is not None:
        args["x-dead-letter-routing-key"] = dlrk
    src = await ch.declare_queue(s.qname("src"), durable=src_durable, arguments=args)
    return src, dlq, dlx


async def get_one(queue, timeout: float = TIMEOUT):
    """basic.get (no_ack) until a message turns up: dead letters arrive asynchronously."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        msg = await queue.get(no_ack=True, fail=False, timeout=TIMEOUT)
        if msg is not None:
            return msg
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"nothing arrived in {queue.name}")
        await asyncio.sleep(0.02)


async def message_count_is(conn, name: str, n: int, timeout: float = TIMEOUT) -> None:
    async def check():
        return (await counts(conn, name))[0] == n
    await eventually(check, timeout)


def check_death(entry: dict, *, count: int, reason: str, queue: str, exchange: str,
                routing_keys: list[str]) -> None:
    assert set(entry) - {"original-expiration"} == X_DEATH_FIELDS, entry
    assert entry["count"] == count
    assert entry["reason"] == reason
    assert entry["queue"] == queue
    assert entry["exchange"] == exchange
    assert list(entry["routing-keys"]) == routing_keys
    assert isinstance(entry["time"], datetime.datetime)
    now = datetime.datetime.now(datetime.timezone.utc).timestamp()
    t = entry["time"]
    ts = t.timestamp() if t.tzinfo else t.replace(tzinfo=datetime.timezone.utc).timestamp()
    assert abs(ts - now) < 120, (t, now)


# =========================================================================== dead-lettering


async def test_reject_dead_letters_with_x_death(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        src, dlq, dlx = await setup_dlx(s, ch)
        await src.bind("amq.direct", "k")
        await publish(ch, "k", b"payload", exchange="amq.direct", headers={"app": "x", "n": 7},
                      message_id="m1", content_type="text/plain")
        msg = await src.get(timeout=TIMEOUT)
        await msg.reject(requeue=False)
        dead = await get_one(dlq)
        assert dead.body == b"payload"
        assert dead.exchange == dlx and dead.routing_key == "k"
        assert dead.message_id == "m1" and dead.content_type == "text/plain"
        assert not dead.redelivered
        h = dead.headers
        assert h["app"] == "x" and h["n"] == 7
        assert len(h["x-death"]) == 1
        check_death(h["x-death"][0], count=1, reason="rejected", queue=src.name,
                    exchange="amq.direct", routing_keys=["k"])
        assert h["x-first-death-queue"] == src.name
        assert h["x-first-death-reason"] == "rejected"
        assert h["x-first-death-exchange"] == "amq.direct"
        assert await counts(s.connections[0], src.name) == (0, 0)


async def test_nack_without_requeue_dead_letters(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        src, dlq, _ = await setup_dlx(s, ch)
        await publish(ch, src.name, b"a")
        await publish(ch, src.name, b"b")
        inbox = await Inbox().start(src)
        a, b = await inbox.take(2)
        await b.nack(multiple=True, requeue=False)
        first, second = await get_one(dlq), await get_one(dlq)
        assert [first.body, second.body] == [b"a", b"b"]
        for m in (first, second):
            check_death(m.headers["x-death"][0], count=1, reason="rejected", queue=src.name,
                        exchange="", routing_keys=[src.name])


async def test_requeue_does_not_dead_letter(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        src, dlq, _ = await setup_dlx(s, ch)
        await publish(ch, src.name, b"a")
        msg = await src.get(timeout=TIMEOUT)
        await msg.reject(requeue=True)
        again = await src.get(timeout=TIMEOUT)
        assert again.body == b"a" and again.redelivered
        assert "x-death" not in (again.headers or {})
        await again.ack()
        assert await drain(dlq) == []


async def test_dead_letter_routing_key_replaces_keys_and_drops_cc(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        src, dlq, dlx = await setup_dlx(s, ch, dlrk="dead", dlx_type="direct", bind_key="dead")
        await src.bind("amq.direct", "k")
        await src.bind("amq.direct", "cc1")
        await publish(ch, "k", b"x", exchange="amq.direct", headers={"CC": ["cc1"], "keep": 1})
        msg = await src.get(timeout=TIMEOUT)
        assert msg.headers["CC"] == ["cc1"]          # CC is delivered as sent
        await msg.reject(requeue=False)
        dead = await get_one(dlq)
        assert dead.routing_key == "dead" and dead.exchange == dlx
        assert "CC" not in dead.headers              # a fixed DLRK drops CC
        assert dead.headers["keep"] == 1
        # x-death records the keys the message had before it died
        check_death(dead.headers["x-death"][0], count=1, reason="rejected", queue=src.name,
                    exchange="amq.direct", routing_keys=["k", "cc1"])
        assert await drain(src) == []                # routed once despite two bindings


async def test_dead_letter_without_dlrk_uses_all_original_keys(broker):
    """The dead letter is routed with the publish key plus CC plus BCC; x-death lists the
    publish key and CC only, and BCC never reaches a consumer."""
    async with Session(broker) as s:
        ch = await s.channel()
        dlx = s.xname("dlx")
        ex = await ch.declare_exchange(dlx, "direct")
        by_key = {}
        for key in ("k", "cc1", "bcc1"):
            q = await ch.declare_queue(s.qname(f"dl-{key}"))
            await q.bind(ex, key)
            by_key[key] = q
        src = await ch.declare_queue(s.qname("src"), arguments={"x-dead-letter-exchange": dlx})
        await src.bind("amq.direct", "k")
        await publish(ch, "k", b"x", exchange="amq.direct",
                      headers={"CC": ["cc1"], "BCC": ["bcc1"]})
        msg = await src.get(timeout=TIMEOUT)
        assert "BCC" not in msg.headers
        await msg.reject(requeue=False)
        for key, q in by_key.items():
            dead = await get_one(q)
            assert dead.routing_key == "k"
            assert dead.headers["CC"] == ["cc1"]
            assert "BCC" not in dead.headers
            assert list(dead.headers["x-death"][0]["routing-keys"]) == ["k", "cc1"], key


async def test_missing_dlx_drops_silently(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        src = await ch.declare_queue(s.qname("src"), arguments={
            "x-dead-letter-exchange": broker.name("no-such-exchange")})
        await publish(ch, src.name, b"a")
        msg = await src.get(timeout=TIMEOUT)
        await msg.reject(requeue=False)
        await asyncio.sleep(0.1)
        assert not ch.is_closed
        assert await counts(conn, src.name) == (0, 0)


async def test_default_exchange_as_dlx(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        dlq = await ch.declare_queue(s.qname("dlq"))
        src = await ch.declare_queue(s.qname("src"), arguments={
            "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq.name})
        await publish(ch, src.name, b"a")
        msg = await src.get(timeout=TIMEOUT)
        await msg.reject(requeue=False)
        dead = await get_one(dlq)
        assert dead.exchange == "" and dead.routing_key == dlq.name
        check_death(dead.headers["x-death"][0], count=1, reason="rejected", queue=src.name,
                    exchange="", routing_keys=[src.name])


async def test_rejection_cycle_counts_up_in_one_entry(broker):
    """A queue dead-lettering into itself: allowed when the cycle contains a rejection, and
    the (queue, reason) entry's count increments instead of a new entry being added."""
    async with Session(broker) as s:
        ch = await s.channel()
        name = s.qname("self")
        q = await ch.declare_queue(name, arguments={
            "x-dead-letter-exchange": "", "x-dead-letter-routing-key": name})
        await publish(ch, name, b"a")
        msg = await _get_acked(q)
        for n in (1, 2, 3):
            await msg.reject(requeue=False)
            msg = await _get_acked(q)
            deaths = msg.headers["x-death"]
            assert len(deaths) == 1
            check_death(deaths[0], count=n, reason="rejected", queue=name, exchange="",
                        routing_keys=[name])
            assert msg.headers["x-first-death-queue"] == name
        await msg.ack()


async def _get_acked(queue, timeout: float = TIMEOUT):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        msg = await queue.get(no_ack=False, fail=False, timeout=TIMEOUT)
        if msg is not None:
            return msg
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"nothing arrived in {queue.name}")
        await asyncio.sleep(0.02)


async def test_ttl_cycle_without_rejection_is_dropped(broker):
    """A queue whose expired messages dead-letter back into itself: RabbitMQ drops them
    (a cycle with no rejection in it)."""
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        name = s.qname("loop")
        await ch.declare_queue(name, arguments={
            "x-message-ttl": 50, "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": name})
        await publish(ch, name, b"a")
        await message_count_is(conn, name, 0)
        await asyncio.sleep(0.3)                     # and it does not come back
        assert await counts(conn, name) == (0, 0)


async def test_retry_loop_through_wait_queue(broker):
    """The delayed-retry pattern: work queue -> (reject) -> wait queue with TTL ->
    (expired) -> work queue.  Each round increments the two x-death entries, newest
    first."""
    async with Session(broker) as s:
        ch = await s.channel()
        work, wait = s.qname("work"), s.qname("wait")
        wq = await ch.declare_queue(work, arguments={
            "x-dead-letter-exchange": "", "x-dead-letter-routing-key": wait})
        await ch.declare_queue(wait, arguments={
            "x-message-ttl": 50, "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": work})
        await publish(ch, work, b"job", exchange="")
        msg = await _get_acked(wq)
        assert msg.headers is None or "x-death" not in msg.headers
        for n in (1, 2):
            await msg.reject(requeue=False)
            msg = await _get_acked(wq)
            deaths = msg.headers["x-death"]
            assert [(d["queue"], d["reason"]) for d in deaths] == [
                (wait, "expired"), (work, "rejected")]
            check_death(deaths[0], count=n, reason="expired", queue=wait, exchange="",
                        routing_keys=[wait])
            check_death(deaths[1], count=n, reason="rejected", queue=work, exchange="",
                        routing_keys=[work])
            assert msg.headers["x-first-death-queue"] == work
            assert msg.headers["x-first-death-reason"] == "rejected"
        await msg.ack()


@pytest.mark.rabbitmq_310_differs("x-last-death-* headers were added in RabbitMQ 3.13/4.x")
async def test_x_last_death_headers(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        work, wait = s.qname("work"), s.qname("wait")
        wq = await ch.declare_queue(work, arguments={
            "x-dead-letter-exchange": "", "x-dead-letter-routing-key": wait})
        await ch.declare_queue(wait, arguments={
            "x-message-ttl": 50, "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": work})
        await publish(ch, work, b"job")
        msg = await _get_acked(wq)
        await msg.reject(requeue=False)
        msg = await _get_acked(wq)
        h = msg.headers
        assert (h["x-first-death-queue"], h["x-first-death-reason"]) == (work, "rejected")
        assert (h["x-last-death-queue"], h["x-last-death-reason"]) == (wait, "expired")
        assert h["x-last-death-exchange"] == ""
        await msg.ack()


async def test_queue_delete_does_not_dead_letter(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        src, dlq, _ = await setup_dlx(s, ch)
        await publish(ch, src.name, b"a")
        await publish(ch, src.name, b"b")
        await src.delete(if_unused=False, if_empty=False)
        await asyncio.sleep(QUIET)
        assert await drain(dlq) == []


async def test_purge_does_not_dead_letter(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        src, dlq, _ = await setup_dlx(s, ch)
        await publish(ch, src.name, b"a")
        await src.purge()
        await asyncio.sleep(QUIET)
        assert await drain(dlq) == []


async def test_queue_expiry_does_not_dead_letter(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        src, dlq, _ = await setup_dlx(s, ch, **{"x-expires": 150})
        await publish(ch, src.name, b"a")

        async def gone():
            return not await queue_exists(conn, src.name)
        await eventually(gone, interval=0.4)   # a passive declare renews the lease
        await asyncio.sleep(0.2)
        assert await drain(dlq) == []


# =========================================================================== TTL


async def test_queue_ttl_expires_messages(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        q = await ch.declare_queue(s.qname(), arguments={"x-message-ttl": 100})
        await publish(ch, q.name, b"a")
        await message_count_is(conn, q.name, 0)
        assert await q.get(fail=False, timeout=TIMEOUT) is None


async def test_message_ttl_expires_with_dlx_reason_expired(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        src, dlq, _ = await setup_dlx(s, ch, **{"x-message-ttl": 50})
        await publish(ch, src.name, b"a", headers={"h": "v"})
        dead = await get_one(dlq)
        assert dead.body == b"a" and dead.headers["h"] == "v"
        check_death(dead.headers["x-death"][0], count=1, reason="expired", queue=src.name,
                    exchange="", routing_keys=[src.name])
        assert "original-expiration" not in dead.headers["x-death"][0]
        assert dead.expiration is None


async def test_per_message_expiration_moved_to_original_expiration(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        src, dlq, _ = await setup_dlx(s, ch)
        await publish(ch, src.name, b"a", expiration=0.05)
        dead = await get_one(dlq)
        death = dead.headers["x-death"][0]
        check_death(death, count=1, reason="expired", queue=src.name, exchange="",
                    routing_keys=[src.name])
        assert death["original-expiration"] == "50"
        assert dead.expiration is None      # removed, so it cannot expire again


async def test_original_expiration_on_rejected_message(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        src, dlq, _ = await setup_dlx(s, ch)
        await publish(ch, src.name, b"a", expiration=60)
        msg = await src.get(timeout=TIMEOUT)
        assert msg.expiration == 60
        await msg.reject(requeue=False)
        dead = await get_one(dlq)
        assert dead.headers["x-death"][0]["original-expiration"] == "60000"
        assert dead.expiration is None


@pytest.mark.parametrize("queue_ttl,msg_ttl", [(10_000, 0.05), (50, 10)])
async def test_smaller_of_queue_and_message_ttl_wins(broker, queue_ttl, msg_ttl):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        q = await ch.declare_queue(s.qname(), arguments={"x-message-ttl": queue_ttl})
        await publish(ch, q.name, b"a", expiration=msg_ttl)
        await message_count_is(conn, q.name, 0)


async def test_message_without_expiration_survives(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        q = await ch.declare_queue(s.qname())
        await publish(ch, q.name, b"short", expiration=0.05)
        await publish(ch, q.name, b"long", expiration=60)
        await publish(ch, q.name, b"none")
        await asyncio.sleep(0.2)
        assert await drain(q) == [b"long", b"none"]


async def test_expired_message_is_never_delivered(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        q = await ch.declare_queue(s.qname(), arguments={"x-message-ttl": 50})
        await publish(ch, q.name, b"a")
        await asyncio.sleep(0.15)
        inbox = await Inbox().start(q, no_ack=True)
        await publish(ch, q.name, b"b")
        assert (await inbox.get()).body == b"b"
        await inbox.nothing_more(0.2)


async def test_ttl_zero_delivers_only_to_a_waiting_consumer(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        src, dlq, _ = await setup_dlx(s, ch, **{"x-message-ttl": 0})
        await publish(ch, src.name, b"nobody-waiting")
        dead = await get_one(dlq)
        assert dead.body == b"nobody-waiting"
        assert dead.headers["x-death"][0]["reason"] == "expired"
        inbox = await Inbox().start(src)
        await publish(ch, src.name, b"taken")
        got = await inbox.get()
        assert got.body == b"taken"
        await got.ack()
        await asyncio.sleep(0.1)
        assert await drain(dlq) == []


async def test_requeued_message_keeps_its_expiry(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        q = await ch.declare_queue(s.qname(), arguments={"x-message-ttl": 200})
        await publish(ch, q.name, b"a")
        msg = await q.get(timeout=TIMEOUT)
        await asyncio.sleep(0.3)                  # its TTL passes while it is unacked
        await msg.reject(requeue=True)
        await message_count_is(conn, q.name, 0)
        assert await q.get(fail=False, timeout=TIMEOUT) is None


async def test_unacked_message_does_not_expire(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        src, dlq, _ = await setup_dlx(s, ch, **{"x-message-ttl": 50})
        await publish(ch, src.name, b"a")
        msg = await src.get(timeout=TIMEOUT)
        await asyncio.sleep(0.2)
        await msg.ack()
        await asyncio.sleep(0.1)
        assert await drain(dlq) == []


@pytest.mark.amqpbroker_only("RabbitMQ classic queues expire a per-message TTL only when "
                             "the message reaches the head of the queue")
async def test_expired_message_behind_live_one_dead_lettered_promptly(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        src, dlq, _ = await setup_dlx(s, ch)
        await publish(ch, src.name, b"live")
        await publish(ch, src.name, b"short", expiration=0.05)
        dead = await get_one(dlq)
        assert dead.body == b"short"
        assert await counts(conn, src.name) == (1, 0)


async def test_expired_behind_live_one_never_delivered(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        q = await ch.declare_queue(s.qname())
        await publish(ch, q.name, b"live")
        await publish(ch, q.name, b"short", expiration=0.05)
        await publish(ch, q.name, b"tail")
        await asyncio.sleep(0.15)
        assert await drain(q) == [b"live", b"tail"]


async def test_invalid_expiration_406(broker):
    async with Session(broker) as s:
        ch = await s.channel(publisher_confirms=False)
        u = await ch.get_underlay_channel()
        await u.basic_publish(b"x", routing_key="nowhere",
                              properties=spec.Basic.Properties(expiration="abc"))
        exc = await close_reason(u)
        assert isinstance(exc, E.ChannelPreconditionFailed)
        assert exc.args[0] == "PRECONDITION_FAILED - invalid expiration 'abc': no_integer"


async def test_queue_expires_when_unused(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        q = await ch.declare_queue(s.qname(), arguments={"x-expires": 150})
        await publish(ch, q.name, b"a")

        async def gone():
            return not await queue_exists(conn, q.name)
        await eventually(gone, interval=0.4)   # a passive declare renews the lease


async def test_queue_with_consumer_does_not_expire(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        q = await ch.declare_queue(s.qname(), arguments={"x-expires": 100})
        await Inbox().start(q)
        await asyncio.sleep(0.4)
        assert await queue_exists(conn, q.name)


async def test_passive_declare_renews_queue_expiry(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        q = await ch.declare_queue(s.qname(), arguments={"x-expires": 600})
        for _ in range(6):                     # 1.2 s in all, each use within the lease
            await asyncio.sleep(0.2)
            assert await queue_exists(conn, q.name)

        async def gone():
            return not await queue_exists(conn, q.name)
        await eventually(gone, interval=0.8)


async def test_basic_get_renews_queue_expiry(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        q = await ch.declare_queue(s.qname(), arguments={"x-expires": 600})
        for _ in range(6):                     # 1.2 s in all, each use within the lease
            await asyncio.sleep(0.2)
            assert await q.get(fail=False, timeout=TIMEOUT) is None
        await asyncio.sleep(0.2)
        assert await queue_exists(conn, q.name)


async def test_redeclare_renews_queue_expiry(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        name = s.qname()
        for _ in range(4):
            await ch.declare_queue(name, arguments={"x-expires": 300})
            await asyncio.sleep(0.1)
        assert await queue_exists(conn, name)


@pytest.mark.parametrize("arg,value,why", [
    ("x-expires", 0, "{value_zero,0}"),
    ("x-expires", 315_360_000_001, "{value_too_large,315360000001}"),
    ("x-message-ttl", -1, "{value_negative,-1}"),
    ("x-message-ttl", 315_360_000_001, "{value_too_large,315360000001}"),
    ("x-max-length", -1, "{value_negative,-1}"),
    ("x-max-length-bytes", "abc", '"expected integer, got longstr"'),
    ("x-queue-type", "nope", '"unsupported queue type \'nope\'"'),
])
async def test_invalid_queue_argument_406(broker, arg, value, why):
    async with Session(broker) as s:
        ch = await s.channel()
        name = s.qname()
        with pytest.raises(E.ChannelPreconditionFailed) as ei:
            await ch.declare_queue(name, arguments={arg: value})
        assert ei.value.args[0] == (f"PRECONDITION_FAILED - invalid arg '{arg}' for queue "
                                    f"'{name}' in vhost '/': {why}")


async def test_dlx_of_wrong_type_406(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        name = s.qname()
        with pytest.raises(E.ChannelPreconditionFailed) as ei:
            await ch.declare_queue(name, arguments={"x-dead-letter-exchange": 5})
        # checked by the channel (DLX permissions) before the queue arguments
        assert ei.value.args[0] == (f"PRECONDITION_FAILED - invalid type 'byte' for arg "
                                    f"'x-dead-letter-exchange' in queue '{name}' in vhost '/'")


async def test_dlrk_without_dlx_406(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        name = s.qname()
        with pytest.raises(E.ChannelPreconditionFailed) as ei:
            await ch.declare_queue(name, arguments={"x-dead-letter-routing-key": "k"})
        assert ei.value.args[0] == (
            f"PRECONDITION_FAILED - invalid arg 'x-dead-letter-routing-key' for queue "
            f"'{name}' in vhost '/': routing_key_but_no_dlx_defined")


# =========================================================================== length limits


async def test_max_length_drop_head(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        q = await ch.declare_queue(s.qname(), arguments={"x-max-length": 2})
        for b in (b"1", b"2", b"3", b"4"):
            await publish(ch, q.name, b)
        assert await drain(q) == [b"3", b"4"]


async def test_max_length_drop_head_dead_letters_maxlen(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        src, dlq, _ = await setup_dlx(s, ch, **{"x-max-length": 1})
        await publish(ch, src.name, b"1")
        await publish(ch, src.name, b"2")
        dead = await get_one(dlq)
        assert dead.body == b"1"
        check_death(dead.headers["x-death"][0], count=1, reason="maxlen", queue=src.name,
                    exchange="", routing_keys=[src.name])
        assert await drain(src) == [b"2"]


async def test_max_length_bytes_drop_head(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        q = await ch.declare_queue(s.qname(), arguments={"x-max-length-bytes": 10})
        for b in (b"aaaa", b"bbbb", b"cccc"):
            await publish(ch, q.name, b)
        assert await drain(q) == [b"bbbb", b"cccc"]


async def test_max_length_counts_ready_messages_only(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        q = await ch.declare_queue(s.qname(), arguments={"x-max-length": 1})
        await publish(ch, q.name, b"1")
        held = await q.get(timeout=TIMEOUT)       # unacked: no longer counts
        await publish(ch, q.name, b"2")
        assert await drain(q) == [b"2"]
        await held.ack()


async def test_max_length_zero_with_waiting_consumer(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        q = await ch.declare_queue(s.qname(), arguments={"x-max-length": 0})
        inbox = await Inbox().start(q, no_ack=True)
        await publish(ch, q.name, b"1")
        assert (await inbox.get()).body == b"1"


async def test_reject_publish_nacks_in_confirm_mode(broker):
    async with Session(broker) as s:
        ch = await s.channel(publisher_confirms=True)
        q = await ch.declare_queue(s.qname(), arguments={"x-max-length": 1,
                                                         "x-overflow": "reject-publish"})
        ok = await publish(ch, q.name, b"1")
        assert isinstance(ok, spec.Basic.Ack)
        with pytest.raises(aio_pika.exceptions.DeliveryError) as ei:
            await publish(ch, q.name, b"2")
        assert isinstance(ei.value.frame, spec.Basic.Nack)
        assert await drain(q) == [b"1"]
        ok = await publish(ch, q.name, b"3")      # room again
        assert isinstance(ok, spec.Basic.Ack)


async def test_reject_publish_without_confirms_drops_silently(broker):
    async with Session(broker) as s:
        ch = await s.channel(publisher_confirms=False)
        returns = []
        ch.return_callbacks.add(lambda _ch, m: returns.append(m))
        q = await ch.declare_queue(s.qname(), arguments={"x-max-length": 1,
                                                         "x-overflow": "reject-publish"})
        await publish(ch, q.name, b"1")
        await publish(ch, q.name, b"2", mandatory=True)
        await asyncio.sleep(0.1)
        assert await drain(q) == [b"1"]
        assert returns == []                      # no basic.return for a full queue
        assert not ch.is_closed


async def test_reject_publish_bytes(broker):
    async with Session(broker) as s:
        ch = await s.channel(publisher_confirms=True)
        q = await ch.declare_queue(s.qname(), arguments={"x-max-length-bytes": 5,
                                                         "x-overflow": "reject-publish"})
        await publish(ch, q.name, b"abc")
        with pytest.raises(aio_pika.exceptions.DeliveryError):
            await publish(ch, q.name, b"def")
        await publish(ch, q.name, b"gh")          # fits exactly
        assert await drain(q) == [b"abc", b"gh"]


async def test_reject_publish_dlx_dead_letters_and_nacks(broker):
    async with Session(broker) as s:
        ch = await s.channel(publisher_confirms=True)
        src, dlq, _ = await setup_dlx(s, ch, **{"x-max-length": 1,
                                                "x-overflow": "reject-publish-dlx"})
        await publish(ch, src.name, b"1")
        with pytest.raises(aio_pika.exceptions.DeliveryError):
            await publish(ch, src.name, b"2")
        dead = await get_one(dlq)
        assert dead.body == b"2"
        check_death(dead.headers["x-death"][0], count=1, reason="maxlen", queue=src.name,
                    exchange="", routing_keys=[src.name])
        assert await drain(src) == [b"1"]


async def test_reject_publish_one_full_queue_of_two_nacks(broker):
    """One of two target queues is full: the publisher gets a nack, the other queue still
    takes the message."""
    async with Session(broker) as s:
        ch = await s.channel(publisher_confirms=True)
        ex = await ch.declare_exchange(s.xname(), "fanout")
        full = await ch.declare_queue(s.qname("full"), arguments={
            "x-max-length": 0, "x-overflow": "reject-publish"})
        other = await ch.declare_queue(s.qname("other"))
        await full.bind(ex)
        await other.bind(ex)
        with pytest.raises(aio_pika.exceptions.DeliveryError):
            await ex.publish(Message(b"x"), "")
        assert await drain(other) == [b"x"]
        assert await drain(full) == []


async def test_invalid_overflow_406(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        name = s.qname()
        with pytest.raises(E.ChannelPreconditionFailed) as ei:
            await ch.declare_queue(name, arguments={"x-overflow": "nope"})
        assert ei.value.args[0] == (f"PRECONDITION_FAILED - invalid arg 'x-overflow' for "
                                    f"queue '{name}' in vhost '/': invalid_overflow")


# =========================================================================== priorities


async def test_priority_queue_orders_by_priority_then_fifo(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        q = await ch.declare_queue(s.qname(), arguments={"x-max-priority": 10})
        sent = [(0, "a"), (5, "b"), (None, "c"), (5, "d"), (9, "e"), (1, "f"), (9, "g")]
        for prio, body in sent:
            await publish(ch, q.name, body, priority=prio)
        assert await drain(q) == [b"e", b"g", b"b", b"d", b"f", b"a", b"c"]


async def test_priority_above_max_is_clamped(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        q = await ch.declare_queue(s.qname(), arguments={"x-max-priority": 3})
        for prio, body in [(3, "a"), (200, "b"), (3, "c"), (2, "d")]:
            await publish(ch, q.name, body, priority=prio)
        msgs = []
        for _ in range(4):
            msgs.append(await q.get(no_ack=True, timeout=TIMEOUT))
        assert [m.body for m in msgs] == [b"a", b"b", b"c", b"d"]
        assert msgs[1].priority == 200            # the property itself is untouched


async def test_non_priority_queue_ignores_priority(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        q = await ch.declare_queue(s.qname())
        for prio, body in [(0, "a"), (9, "b"), (5, "c")]:
            await publish(ch, q.name, body, priority=prio)
        assert await drain(q) == [b"a", b"b", b"c"]


async def test_priority_requeue_goes_back_in_place(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        q = await ch.declare_queue(s.qname(), arguments={"x-max-priority": 5})
        for prio, body in [(1, "low1"), (5, "hi1"), (5, "hi2"), (1, "low2")]:
            await publish(ch, q.name, body, priority=prio)
        hi1 = await q.get(timeout=TIMEOUT)
        hi2 = await q.get(timeout=TIMEOUT)
        low1 = await q.get(timeout=TIMEOUT)
        assert [hi1.body, hi2.body, low1.body] == [b"hi1", b"hi2", b"low1"]
        await low1.reject(requeue=True)
        await hi2.reject(requeue=True)
        await hi1.reject(requeue=True)
        got = []
        for _ in range(4):
            m = await q.get(no_ack=True, timeout=TIMEOUT)
            got.append((m.body, m.redelivered))
        assert got == [(b"hi1", True), (b"hi2", True), (b"low1", True), (b"low2", False)]


async def test_priority_consumer_gets_highest_first(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        await ch.set_qos(prefetch_count=1)
        q = await ch.declare_queue(s.qname(), arguments={"x-max-priority": 10})
        for prio, body in [(1, "a"), (2, "b"), (3, "c")]:
            await publish(ch, q.name, body, priority=prio)
        inbox = await Inbox().start(q)
        order = []
        for _ in range(3):
            m = await inbox.get()
            order.append(m.body)
            await m.ack()
        assert order == [b"c", b"b", b"a"]


@pytest.mark.parametrize("value,why", [(256, "{max_value_exceeded,256}"),
                                       (-1, "{value_negative,-1}")])
async def test_invalid_max_priority_406(broker, value, why):
    async with Session(broker) as s:
        ch = await s.channel()
        name = s.qname()
        with pytest.raises(E.ChannelPreconditionFailed) as ei:
            await ch.declare_queue(name, arguments={"x-max-priority": value})
        assert ei.value.args[0] == (f"PRECONDITION_FAILED - invalid arg 'x-max-priority' for "
                                    f"queue '{name}' in vhost '/': {why}")


async def test_max_priority_redeclare_must_match(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        name = s.qname()
        await ch.declare_queue(name, arguments={"x-max-priority": 5})
        await ch.declare_queue(name, arguments={"x-max-priority": 5})
        with pytest.raises(E.ChannelPreconditionFailed) as ei:
            await ch.declare_queue(name, arguments={"x-max-priority": 6})
        assert "inequivalent arg 'x-max-priority'" in ei.value.args[0]


# =========================================================================== single active consumer


async def test_single_active_consumer_fails_over_in_order(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch1, ch2, ch3 = await s.channel(conn), await s.channel(conn), await s.channel(conn)
        q1 = await ch1.declare_queue(s.qname(), arguments={"x-single-active-consumer": True})
        q2 = await ch2.get_queue(q1.name, ensure=False)
        q3 = await ch3.get_queue(q1.name, ensure=False)
        first, second, third = Inbox(), Inbox(), Inbox()
        await first.start(q1, no_ack=True)
        await second.start(q2, no_ack=True)
        await third.start(q3, no_ack=True)
        assert await counts(conn, q1.name) == (0, 3)
        for i in range(4):
            await publish(ch1, q1.name, f"m{i}")
        assert [m.body for m in await first.take(4)] == [b"m0", b"m1", b"m2", b"m3"]
        await second.nothing_more(0.1)
        await third.nothing_more(0.0)
        await q1.cancel(first.tag)
        await publish(ch1, q1.name, b"after")
        assert (await second.get()).body == b"after"
        await third.nothing_more(0.2)
        await ch2.close()                           # the active consumer's channel dies
        await publish(ch1, q1.name, b"last")
        assert (await third.get()).body == b"last"


async def test_single_active_consumer_unacked_go_to_next(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch1, ch2 = await s.channel(conn), await s.channel(conn)
        q1 = await ch1.declare_queue(s.qname(), arguments={"x-single-active-consumer": True})
        q2 = await ch2.get_queue(q1.name, ensure=False)
        a, b = Inbox(), Inbox()
        await a.start(q1)
        await b.start(q2)
        await publish(ch2, q1.name, b"x")
        assert (await a.get()).body == b"x"
        await ch1.close()                           # unacked -> requeued -> next consumer
        m = await b.get()
        assert m.body == b"x" and m.redelivered
        await m.ack()


async def test_single_active_consumer_must_be_bool(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        name = s.qname()
        with pytest.raises(E.ChannelPreconditionFailed) as ei:
            await ch.declare_queue(name, arguments={"x-single-active-consumer": 1})
        assert ei.value.args[0].startswith(
            f"PRECONDITION_FAILED - invalid arg 'x-single-active-consumer' for queue "
            f"'{name}' in vhost '/'")


# =========================================================================== quorum, stream, delivery limit


async def test_quorum_queue_declare_and_use(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        q = await ch.declare_queue(s.qname("qq"), durable=True,
                                   arguments={"x-queue-type": "quorum"})
        await publish(ch, q.name, b"a")
        await message_count_is(conn, q.name, 1)
        await q.declare()                           # redeclare with the same arguments
        with pytest.raises(E.ChannelPreconditionFailed) as ei:
            await (await s.channel(conn)).declare_queue(q.name, durable=True)
        assert ei.value.args[0] == (
            f"PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue '{q.name}' in "
            f"vhost '/': received none but current is the value 'quorum' of type 'longstr'"
        ) or "inequivalent arg 'x-queue-type'" in ei.value.args[0]
        assert await drain(q) == [b"a"]


@pytest.mark.parametrize("durable,exclusive,what", [(False, False, "non-durable"),
                                                    (True, True, "exclusive-owner")])
async def test_quorum_queue_property_rules(broker, durable, exclusive, what):
    async with Session(broker) as s:
        ch = await s.channel()
        name = s.qname("qq")
        with pytest.raises(E.ChannelPreconditionFailed) as ei:
            await ch.declare_queue(name, durable=durable, exclusive=exclusive,
                                   arguments={"x-queue-type": "quorum"})
        assert ei.value.args[0] == (f"PRECONDITION_FAILED - invalid property '{what}' for "
                                    f"queue '{name}' in vhost '/'")


@pytest.mark.amqpbroker_only("RabbitMQ 3.9+ has streams; amqpbroker refuses them with 406")
async def test_stream_queue_refused(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        with pytest.raises(E.ChannelPreconditionFailed) as ei:
            await ch.declare_queue(s.qname(), durable=True,
                                   arguments={"x-queue-type": "stream"})
        assert "stream" in ei.value.args[0]


async def _delivery_limit_round(s, ch, q, dlq=None):
    """Requeue until the message is gone; returns the x-delivery-count seen each time."""
    seen = []
    while True:
        msg = await q.get(no_ack=False, fail=False, timeout=TIMEOUT)
        if msg is None:
            return seen
        seen.append((msg.headers or {}).get("x-delivery-count"))
        await msg.reject(requeue=True)
        if len(seen) > 10:
            raise AssertionError(f"never hit the delivery limit: {seen}")


async def test_quorum_delivery_limit_dead_letters(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        src, dlq, _ = await setup_dlx(s, ch, src_durable=True, **{
            "x-queue-type": "quorum", "x-delivery-limit": 2})
        await publish(ch, src.name, b"poison")
        seen = []

        async def on_message(m):
            seen.append((m.headers or {}).get("x-delivery-count"))
            await m.reject(requeue=True)
        await src.consume(on_message)
        dead = await get_one(dlq)
        assert seen == [None, 1, 2]
        assert dead.body == b"poison"
        death = dead.headers["x-death"][0]
        assert death["reason"] == "delivery_limit" and death["queue"] == src.name
        assert death["count"] == 1


@pytest.mark.rabbitmq_310_differs("RabbitMQ 3.10 honours x-delivery-limit on quorum queues "
                                  "only (4.x: classic queues ignore it too; amqpbroker applies "
                                  "it to every queue, as LavinMQ)")
async def test_classic_delivery_limit_drops_without_dlx(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        q = await ch.declare_queue(s.qname(), arguments={"x-delivery-limit": 1})
        await publish(ch, q.name, b"poison")
        seen = await _delivery_limit_round(s, ch, q)
        assert seen == [None, 1]
        assert await counts(conn, q.name) == (0, 0)


@pytest.mark.rabbitmq_310_differs("x-delivery-limit on classic queues: amqpbroker only")
async def test_classic_delivery_limit_dead_letters(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        src, dlq, _ = await setup_dlx(s, ch, **{"x-delivery-limit": 0})
        await publish(ch, src.name, b"poison")
        assert await _delivery_limit_round(s, ch, src) == [None]
        dead = await get_one(dlq)
        assert dead.headers["x-death"][0]["reason"] == "delivery_limit"
        assert "x-delivery-count" not in dead.headers


# =========================================================================== CC / BCC


async def test_cc_and_bcc_route_copies_bcc_hidden(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        ex = await ch.declare_exchange(s.xname(), "direct")
        qs = {}
        for key in ("main", "cc1", "cc2", "bcc1"):
            qs[key] = await ch.declare_queue(s.qname(key))
            await qs[key].bind(ex, key)
        await ex.publish(Message(b"x", headers={"CC": ["cc1", "cc2"], "BCC": ["bcc1"],
                                                "other": "y"}), "main")
        for key, q in qs.items():
            m = await q.get(no_ack=True, timeout=TIMEOUT)
            assert m.routing_key == "main", key
            assert m.headers == {"CC": ["cc1", "cc2"], "other": "y"}, key


async def test_cc_bcc_deliver_once_per_queue(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        q = await ch.declare_queue(s.qname())
        await publish(ch, q.name, b"x", headers={"CC": [q.name], "BCC": [q.name, "nowhere"]})
        assert await drain(q) == [b"x"]


async def test_cc_only_routes_when_main_key_unroutable(broker):
    async with Session(broker) as s:
        ch = await s.channel(publisher_confirms=True)
        returns = []
        ch.return_callbacks.add(lambda _ch, m: returns.append(m))
        q = await ch.declare_queue(s.qname())
        await publish(ch, "no-such-queue", b"x", mandatory=True, headers={"BCC": [q.name]})
        await asyncio.sleep(0.1)
        assert returns == []                        # routed via BCC: not returned
        assert await drain(q) == [b"x"]


async def test_cc_with_wrong_type_406(broker):
    async with Session(broker) as s:
        ch = await s.channel(publisher_confirms=False)
        u = await ch.get_underlay_channel()
        await u.basic_publish(b"x", routing_key="q",
                              properties=spec.Basic.Properties(headers={"CC": "not-an-array"}))
        exc = await close_reason(u)
        assert isinstance(exc, E.ChannelPreconditionFailed)
        assert exc.args[0] == ('PRECONDITION_FAILED - invalid message: '
                               '{unacceptable_type_in_header,"CC",longstr}')


async def test_bcc_table_406(broker):
    async with Session(broker) as s:
        ch = await s.channel(publisher_confirms=False)
        u = await ch.get_underlay_channel()
        await u.basic_publish(b"x", routing_key="q",
                              properties=spec.Basic.Properties(headers={"BCC": {"a": 1}}))
        exc = await close_reason(u)
        assert exc.args[0] == ('PRECONDITION_FAILED - invalid message: '
                               '{unacceptable_type_in_header,"BCC",table}')


async def test_cc_non_string_elements_ignored(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        q = await ch.declare_queue(s.qname())
        await publish(ch, "nowhere", b"x", headers={"CC": [q.name, 5, True]})
        assert await drain(q) == [b"x"]


# =========================================================================== direct reply-to


async def test_direct_reply_to_rpc(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        client = await s.channel(conn, publisher_confirms=False)
        server_ch = await s.channel(conn)
        rpc = await server_ch.declare_queue(s.qname("rpc"))

        replies = Inbox()
        reply_q = await client.get_queue("amq.rabbitmq.reply-to", ensure=False)
        await replies.start(reply_q, no_ack=True)
        await publish(client, rpc.name, b"ping", reply_to="amq.rabbitmq.reply-to",
                      correlation_id="c1")
        req = await _get_acked(rpc)
        assert req.reply_to.startswith("amq.rabbitmq.reply-to.")
        assert len(req.reply_to) > len("amq.rabbitmq.reply-to.")
        await req.ack()
        await server_ch.default_exchange.publish(
            Message(b"pong", correlation_id=req.correlation_id), req.reply_to, mandatory=True)
        got = await replies.get()
        assert got.body == b"pong" and got.correlation_id == "c1"
        assert got.routing_key == req.reply_to and got.exchange == ""


async def test_direct_reply_to_requires_no_ack(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        u = await ch.get_underlay_channel()
        with pytest.raises(E.ChannelPreconditionFailed) as ei:
            await u.basic_consume("amq.rabbitmq.reply-to", lambda m: None, no_ack=False)
        assert ei.value.args[0] == "PRECONDITION_FAILED - reply consumer cannot acknowledge"


async def test_direct_reply_to_only_one_consumer(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        u = await ch.get_underlay_channel()
        await u.basic_consume("amq.rabbitmq.reply-to", lambda m: None, no_ack=True)
        with pytest.raises(E.ChannelPreconditionFailed) as ei:
            await u.basic_consume("amq.rabbitmq.reply-to", lambda m: None, no_ack=True)
        assert ei.value.args[0] == "PRECONDITION_FAILED - reply consumer already set"


async def test_direct_reply_to_publish_without_consumer_406(broker):
    async with Session(broker) as s:
        ch = await s.channel(publisher_confirms=False)
        u = await ch.get_underlay_channel()
        await u.basic_publish(b"x", routing_key="anything",
                              properties=spec.Basic.Properties(reply_to="amq.rabbitmq.reply-to"))
        exc = await close_reason(u)
        assert isinstance(exc, E.ChannelPreconditionFailed)
        assert exc.args[0] == "PRECONDITION_FAILED - fast reply consumer does not exist"


async def test_direct_reply_to_unknown_token_is_unroutable(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn, publisher_confirms=True)
        returns = []
        ch.return_callbacks.add(lambda _ch, m: returns.append(m))
        await publish(ch, "amq.rabbitmq.reply-to.bm90LWEtdG9rZW4", b"x", mandatory=True)
        await asyncio.sleep(0.1)
        assert not ch.is_closed
        # (RabbitMQ 3.10 silently drops it; what matters is that nothing else happens)


async def test_direct_reply_to_gone_after_cancel(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        client = await s.channel(conn)
        rpc = await client.declare_queue(s.qname("rpc"))
        reply_q = await client.get_queue("amq.rabbitmq.reply-to", ensure=False)
        inbox = await Inbox().start(reply_q, no_ack=True)
        await publish(client, rpc.name, b"ping", reply_to="amq.rabbitmq.reply-to")
        req = await _get_acked(rpc)
        await req.ack()
        await conn.close()
        # the reply is dropped; the responder's channel is unaffected
        ch2 = await s.channel(publisher_confirms=True)
        await publish(ch2, req.reply_to, b"late")
        assert not ch2.is_closed


# =========================================================================== transactions


async def test_tx_publishes_invisible_until_commit(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn, publisher_confirms=False)
        q = await ch.declare_queue(s.qname())
        u = await ch.get_underlay_channel()
        await u.tx_select()
        await publish(ch, q.name, b"1")
        await publish(ch, q.name, b"2")
        assert await counts(conn, q.name) == (0, 0)
        await u.tx_commit()
        assert await counts(conn, q.name) == (2, 0)
        await publish(ch, q.name, b"3")
        await u.tx_rollback()
        assert await drain(q) == [b"1", b"2"]


async def test_tx_rollback_keeps_delivered_messages_unacked(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn, publisher_confirms=False)
        q = await ch.declare_queue(s.qname())
        await publish(ch, q.name, b"a")
        await publish(ch, q.name, b"b")
        u = await ch.get_underlay_channel()
        await u.tx_select()
        a = await q.get(timeout=TIMEOUT)
        b = await q.get(timeout=TIMEOUT)
        await u.basic_ack(a.delivery_tag)
        await u.basic_reject(b.delivery_tag, requeue=True)
        await u.tx_rollback()
        assert await counts(conn, q.name) == (0, 0)  # both still unacked
        await u.basic_nack(b.delivery_tag, requeue=True)
        await u.basic_ack(a.delivery_tag)
        assert await counts(conn, q.name) == (0, 0)  # buffered until commit
        await u.tx_commit()
        assert await drain(q) == [b"b"]


async def test_tx_reject_to_dlx_applied_on_commit(broker):
    async with Session(broker) as s:
        ch = await s.channel(publisher_confirms=False)
        src, dlq, _ = await setup_dlx(s, ch)
        await publish(ch, src.name, b"a")
        u = await ch.get_underlay_channel()
        await u.tx_select()
        m = await src.get(timeout=TIMEOUT)
        await m.reject(requeue=False)
        await asyncio.sleep(0.1)
        assert await drain(dlq) == []
        await u.tx_commit()
        dead = await get_one(dlq)
        assert dead.headers["x-death"][0]["reason"] == "rejected"


async def test_tx_unknown_delivery_tag_fails_at_once(broker):
    async with Session(broker) as s:
        ch = await s.channel(publisher_confirms=False)
        u = await ch.get_underlay_channel()
        await u.tx_select()
        await u.basic_ack(99)
        exc = await close_reason(u)
        assert isinstance(exc, E.ChannelPreconditionFailed)
        assert exc.args[0] == "PRECONDITION_FAILED - unknown delivery tag 99"


async def test_tx_publish_to_missing_exchange_fails_at_once(broker):
    async with Session(broker) as s:
        ch = await s.channel(publisher_confirms=False)
        u = await ch.get_underlay_channel()
        await u.tx_select()
        name = broker.name("nx")
        await u.basic_publish(b"x", exchange=name, routing_key="k")
        exc = await close_reason(u)
        assert isinstance(exc, E.ChannelNotFoundEntity)
        assert exc.args[0] == f"NOT_FOUND - no exchange '{name}' in vhost '/'"


async def test_tx_select_is_idempotent(broker):
    async with Session(broker) as s:
        ch = await s.channel(publisher_confirms=False)
        u = await ch.get_underlay_channel()
        await u.tx_select()
        await u.tx_select()
        await u.tx_commit()


# =========================================================================== pika


def _pika(broker):
    p = pika.URLParameters(broker.url)
    p.socket_timeout = 10
    p.blocked_connection_timeout = 30
    return pika.BlockingConnection(p)


@pytest.fixture
def pika_conn(broker):
    c = _pika(broker)
    yield c
    if c.is_open:
        c.close()


def _pika_get_one(ch, queue, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        m, p, b = ch.basic_get(queue, auto_ack=True)
        if m is not None:
            return m, p, b
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing arrived in {queue}")
        time.sleep(0.02)


def test_pika_dead_letter_x_death(broker, pika_conn):
    ch = pika_conn.channel()
    dlx, src, dlq = broker.name("dlx"), broker.name("src"), broker.name("dlq")
    ch.exchange_declare(dlx, "fanout", auto_delete=True)
    ch.queue_declare(dlq, auto_delete=True)
    ch.queue_bind(dlq, dlx)
    ch.queue_declare(src, auto_delete=True, arguments={"x-dead-letter-exchange": dlx,
                                                       "x-message-ttl": 100})
    try:
        ch.basic_publish("", src, b"x", pika.BasicProperties(headers={"k": 1}))
        m, p, b = _pika_get_one(ch, dlq)
        assert b == b"x" and m.exchange == dlx and m.routing_key == src
        death = p.headers["x-death"][0]
        assert death["count"] == 1 and death["reason"] == "expired"
        assert death["queue"] == src and death["exchange"] == ""
        assert death["routing-keys"] == [src]
        assert isinstance(death["time"], datetime.datetime)
        assert p.headers["x-first-death-reason"] == "expired"
        assert p.headers["k"] == 1
    finally:
        ch.queue_delete(src)
        ch.queue_delete(dlq)
        ch.exchange_delete(dlx)


def test_pika_priority_queue(broker, pika_conn):
    ch = pika_conn.channel()
    q = broker.name("prio")
    ch.queue_declare(q, auto_delete=True, arguments={"x-max-priority": 255})
    try:
        for prio in (0, 255, 7, 128, 7):
            ch.basic_publish("", q, str(prio).encode(), pika.BasicProperties(priority=prio))
        got = []
        while True:
            m, p, b = ch.basic_get(q, auto_ack=True)
            if m is None:
                break
            got.append(b)
        assert got == [b"255", b"128", b"7", b"7", b"0"]
    finally:
        ch.queue_delete(q)


def test_pika_reject_publish_nack(broker, pika_conn):
    ch = pika_conn.channel()
    ch.confirm_delivery()
    q = broker.name("full")
    ch.queue_declare(q, auto_delete=True, arguments={"x-max-length": 1,
                                                      "x-overflow": "reject-publish"})
    try:
        ch.basic_publish("", q, b"1")
        with pytest.raises(pika.exceptions.NackError):
            ch.basic_publish("", q, b"2")
        m, p, b = ch.basic_get(q, auto_ack=True)
        assert b == b"1"
    finally:
        ch.queue_delete(q)


def test_pika_direct_reply_to(broker, pika_conn):
    client = pika_conn.channel()
    server = pika_conn.channel()
    rpc = broker.name("rpc")
    server.queue_declare(rpc, auto_delete=True)
    replies = []
    client.basic_consume("amq.rabbitmq.reply-to",
                         lambda c, m, p, b: replies.append((p.correlation_id, b)),
                         auto_ack=True)
    client.basic_publish("", rpc, b"ping", pika.BasicProperties(
        reply_to="amq.rabbitmq.reply-to", correlation_id="42"))
    m, p, b = _pika_get_one(server, rpc)
    assert p.reply_to.startswith("amq.rabbitmq.reply-to.")
    server.basic_publish("", p.reply_to, b"pong",
                         pika.BasicProperties(correlation_id=p.correlation_id))
    deadline = time.monotonic() + 5
    while not replies and time.monotonic() < deadline:
        pika_conn.process_data_events(time_limit=0.05)
    assert replies == [("42", b"pong")]
    # the pseudo-queue exists (0 messages) while the requester's consumer does
    ok = server.queue_declare(p.reply_to, passive=True)
    assert ok.method.message_count == 0
    server.queue_delete(rpc)


def test_pika_direct_reply_to_passive_declare_after_requester_gone(broker, pika_conn):
    requester = _pika(broker)
    ch = requester.channel()
    rpc = broker.name("rpc")
    ch.queue_declare(rpc, auto_delete=False)
    ch.basic_consume("amq.rabbitmq.reply-to", lambda *a: None, auto_ack=True)
    ch.basic_publish("", rpc, b"ping", pika.BasicProperties(reply_to="amq.rabbitmq.reply-to"))
    server = pika_conn.channel()
    m, p, b = _pika_get_one(server, rpc)
    server.queue_delete(rpc)
    requester.close()
    other = pika_conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        other.queue_declare(p.reply_to, passive=True)
    assert ei.value.reply_code == 404


def test_pika_tx(broker, pika_conn):
    ch = pika_conn.channel()
    q = broker.name("tx")
    ch.queue_declare(q, auto_delete=True)
    try:
        ch.tx_select()
        ch.basic_publish("", q, b"1")
        assert ch.queue_declare(q, passive=True).method.message_count == 0
        ch.tx_commit()
        assert ch.queue_declare(q, passive=True).method.message_count == 1
        ch.basic_publish("", q, b"2")
        ch.tx_rollback()
        assert ch.queue_declare(q, passive=True).method.message_count == 1
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
            other = pika_conn.channel()
            other.tx_commit()
        assert ei.value.reply_code == 406
        assert ei.value.reply_text == "PRECONDITION_FAILED - channel is not transactional"
    finally:
        if ch.is_open:
            ch.queue_delete(q)


def test_pika_single_active_consumer(broker, pika_conn):
    ch = pika_conn.channel()
    q = broker.name("sac")
    ch.queue_declare(q, auto_delete=True, arguments={"x-single-active-consumer": True})
    got = {"a": [], "b": []}
    ta = ch.basic_consume(q, lambda c, m, p, b: got["a"].append(b), auto_ack=True)
    ch.basic_consume(q, lambda c, m, p, b: got["b"].append(b), auto_ack=True)
    for i in range(3):
        ch.basic_publish("", q, str(i).encode())
    deadline = time.monotonic() + 5
    while len(got["a"]) < 3 and time.monotonic() < deadline:
        pika_conn.process_data_events(time_limit=0.05)
    assert got == {"a": [b"0", b"1", b"2"], "b": []}
    ch.basic_cancel(ta)
    ch.basic_publish("", q, b"3")
    deadline = time.monotonic() + 5
    while not got["b"] and time.monotonic() < deadline:
        pika_conn.process_data_events(time_limit=0.05)
    assert got["b"] == [b"3"]


def test_pika_dead_lettered_headers_sorted_by_key(broker, pika_conn):
    """RabbitMQ re-encodes a dead letter's headers sorted by key (bytewise); until then the
    headers keep the order they were sent in.  (pika keeps table order; pamqp sorts.)"""
    ch = pika_conn.channel()
    src, dlq = broker.name("src"), broker.name("dlq")
    ch.queue_declare(dlq, auto_delete=True)
    ch.queue_declare(src, auto_delete=True, arguments={"x-dead-letter-exchange": "",
                                                       "x-dead-letter-routing-key": dlq})
    try:
        headers = {"zz": 1, "Zz": 2, "aa": "x", "CC": ["c"], "m": [1, "two"]}
        ch.basic_publish("", src, b"x", pika.BasicProperties(headers=headers))
        m, p, b = _pika_get_one_acked(ch, src)
        assert list(p.headers) == ["zz", "Zz", "aa", "CC", "m"]
        ch.basic_reject(m.delivery_tag, requeue=False)
        m, p, b = _pika_get_one(ch, dlq)
        keys = list(p.headers)
        assert keys == sorted(keys, key=str.encode)
        assert p.headers["m"] == [1, b"two"] or p.headers["m"] == [1, "two"]
        assert p.headers["zz"] == 1 and p.headers["Zz"] == 2
    finally:
        ch.queue_delete(src)
        ch.queue_delete(dlq)


def _pika_get_one_acked(ch, queue, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        m, p, b = ch.basic_get(queue, auto_ack=False)
        if m is not None:
            return m, p, b
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing arrived in {queue}")
        time.sleep(0.02)
