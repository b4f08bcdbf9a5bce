"""aio-pika interop: connection, declares, publish/consume round trips, confirms, basic.get."""
from __future__ import annotations

import asyncio
import datetime
import decimal
import os

import aio_pika
import aiormq
import pytest
from aio_pika import DeliveryMode, Message
from pamqp import commands as spec

from aiopika_support import TIMEOUT, Inbox, Session, counts, drain, publish

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

CAPABILITIES = (
    "publisher_confirms", "exchange_exchange_bindings", "basic.nack", "consumer_cancel_notify",
    "connection.blocked", "consumer_priorities", "authentication_failure_close",
    "per_consumer_qos", "direct_reply_to",
)


# --------------------------------------------------------------------------- connection

async def test_connect_server_properties(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        amqp = conn.transport.connection
        props = amqp.server_properties
        caps = props["capabilities"]
        for cap in CAPABILITIES:
            assert caps.get(cap) is True, f"capability {cap!r} missing or not true: {caps!r}"
        for key in ("product", "version", "platform", "copyright", "information"):
            assert isinstance(props.get(key), str) and props[key], f"server property {key!r}"
        # aiormq gates features on these (see reference §1.2 / §16)
        assert amqp.publisher_confirms is True
        assert amqp.basic_nack is True


async def test_connection_tune_proposal(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        tune = conn.transport.connection.connection_tune
        # RabbitMQ's defaults; smaller client values would win but aio-pika asks for none
        assert tune.frame_max == 131072
        assert tune.channel_max == 2047


async def test_many_channels_on_one_connection(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        q = await (await s.channel(conn)).declare_queue(s.qname(), auto_delete=False)
        channels = [await s.channel(conn) for _ in range(20)]
        numbers = {(await c.get_underlay_channel()).number for c in channels}
        assert len(numbers) == 20
        for i, c in enumerate(channels):
            await publish(c, q.name, f"m{i}")
        assert await drain(q) == [f"m{i}".encode() for i in range(20)]


async def test_close_and_reopen_channel(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        await ch.close()
        assert ch.is_closed and not conn.is_closed
        ch2 = await s.channel(conn)
        q = await ch2.declare_queue(exclusive=True)
        await publish(ch2, q.name, b"after-reopen")
        assert await drain(q) == [b"after-reopen"]


# --------------------------------------------------------------------------- declares

async def test_declare_queue_and_redeclare(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        name = s.qname()
        q = await ch.declare_queue(name)
        assert q.name == name
        ok = q.declaration_result
        assert isinstance(ok, spec.Queue.DeclareOk)
        assert (ok.queue, ok.message_count, ok.consumer_count) == (name, 0, 0)
        # an identical redeclare is fine and reports the current counts
        await publish(ch, name, b"one")
        await publish(ch, name, b"two")
        q2 = await ch.declare_queue(name)
        assert q2.declaration_result.message_count == 2
        # passive declare returns the same counts
        q3 = await ch.declare_queue(name, passive=True)
        assert q3.declaration_result.message_count == 2
        assert q3.declaration_result.consumer_count == 0


async def test_declare_exchange_each_type_and_redeclare(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        for typ in ("direct", "fanout", "topic", "headers"):
            name = s.xname(typ)
            ex = await ch.declare_exchange(name, type=typ)
            assert isinstance(ex, aio_pika.abc.AbstractExchange)
            await ch.declare_exchange(name, type=typ)  # identical redeclare
            await ch.declare_exchange(name, type=typ, passive=True)
            # passive declare does not compare the type
            await ch.declare_exchange(name, type="fanout" if typ != "fanout" else "direct", passive=True)


async def test_redeclare_predeclared_amq_exchanges(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        for name, typ in (("amq.direct", "direct"), ("amq.fanout", "fanout"),
                          ("amq.topic", "topic"), ("amq.headers", "headers"),
                          ("amq.match", "headers")):
            await ch.declare_exchange(name, type=typ, durable=True)
            await ch.declare_exchange(name, passive=True)


async def test_server_named_queue(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        q = await ch.declare_queue(exclusive=True)
        assert q.name.startswith("amq.gen-")
        assert len(q.name) == len("amq.gen-") + 22  # base64url of 16 random bytes
        assert q.declaration_result.queue == q.name
        q2 = await ch.declare_queue(exclusive=True)
        assert q2.name != q.name and q2.name.startswith("amq.gen-")
        await publish(ch, q.name, b"to-server-named")
        assert await drain(q) == [b"to-server-named"]


async def test_empty_queue_name_means_last_declared_queue(broker):
    """The per-channel 'most recently declared queue' shortcut (reference §5.1)."""
    async with Session(broker) as s:
        ch = await s.channel()
        u = await ch.get_underlay_channel()
        ok = await u.queue_declare("", exclusive=True)
        name = ok.queue
        await u.basic_publish(b"via-shortcut", exchange="", routing_key=name)
        got = await u.basic_get("", no_ack=True)
        assert isinstance(got.delivery, spec.Basic.GetOk)
        assert got.body == b"via-shortcut"
        # purge/delete with "" address the same queue
        await u.basic_publish(b"x", exchange="", routing_key=name)
        purge = await u.queue_purge("")
        assert purge.message_count == 1
        delete = await u.queue_delete("")
        assert delete.message_count == 0
        ch2 = await s.channel()
        u2 = await ch2.get_underlay_channel()
        with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
            await u2.queue_declare(name, passive=True)


async def test_no_previously_declared_queue(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        u = await ch.get_underlay_channel()
        with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity) as ei:
            await u.basic_get("", no_ack=True)
        assert ei.value.args[0] == "NOT_FOUND - no previously declared queue"


async def test_declare_ok_counts(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        q = await ch.declare_queue(s.qname())
        for i in range(5):
            await publish(ch, q.name, f"m{i}")
        assert await counts(conn, q.name) == (5, 0)
        # two consumers with prefetch 1 each hold one unacked message each:
        # message_count counts ready messages only, consumer_count counts all consumers
        inboxes = []
        for _ in range(2):
            c = await s.channel(conn)
            await c.set_qos(prefetch_count=1)
            cq = await c.get_queue(q.name, ensure=False)
            inboxes.append(await Inbox().start(cq))
        for inbox in inboxes:
            await inbox.get()
        assert await counts(conn, q.name) == (3, 2)
        # a third consumer
        c3 = await s.channel(conn)
        await c3.set_qos(prefetch_count=1)
        q3 = await c3.get_queue(q.name, ensure=False)
        inbox3 = await Inbox().start(q3)
        await inbox3.get()
        assert await counts(conn, q.name) == (2, 3)


async def test_purge_and_delete_counts(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        q = await ch.declare_queue(s.qname())
        for i in range(7):
            await publish(ch, q.name, f"m{i}")
        ok = await q.purge()
        assert isinstance(ok, spec.Queue.PurgeOk) and ok.message_count == 7
        assert await counts(conn, q.name) == (0, 0)
        # purge only removes ready messages: an unacked one survives
        for i in range(4):
            await publish(ch, q.name, f"n{i}")
        held = await q.get(no_ack=False, timeout=TIMEOUT)
        assert held.body == b"n0"
        ok = await q.purge()
        assert ok.message_count == 3
        await held.nack(requeue=True)
        assert await counts(conn, q.name) == (1, 0)
        for i in range(2):
            await publish(ch, q.name, f"o{i}")
        ok = await q.delete(if_unused=False, if_empty=False)  # aio-pika defaults both to True
        assert isinstance(ok, spec.Queue.DeleteOk) and ok.message_count == 3


async def test_delete_missing_is_idempotent(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        u = await ch.get_underlay_channel()
        ok = await u.queue_delete(s.name("never-declared"))
        assert isinstance(ok, spec.Queue.DeleteOk) and ok.message_count == 0
        ok = await u.exchange_delete(s.name("never-declared"))
        assert isinstance(ok, spec.Exchange.DeleteOk)
        # the channel is still usable
        q = await ch.declare_queue(exclusive=True)
        assert q.name.startswith("amq.gen-")


async def test_unbind_missing_is_idempotent(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        u = await ch.get_underlay_channel()
        q = await ch.declare_queue(exclusive=True)
        ex = await ch.declare_exchange(s.xname(), type="direct", auto_delete=True)
        assert isinstance(await u.queue_unbind(q.name, ex.name, "never-bound"), spec.Queue.UnbindOk)
        assert isinstance(await u.queue_unbind(q.name, s.name("no-such-x"), "k"), spec.Queue.UnbindOk)
        assert isinstance(await u.queue_unbind(s.name("no-such-q"), ex.name, "k"), spec.Queue.UnbindOk)
        ok = await u.exchange_unbind(s.name("no-such-dst"), ex.name, "k")
        assert isinstance(ok, spec.Exchange.UnbindOk)
        await q.bind(ex, "k")
        await publish(ch, "k", b"still-works", exchange=ex.name)
        assert await drain(q) == [b"still-works"]


# --------------------------------------------------------------------------- round trips

HEADERS = {
    "str": "hello",
    "unicode": "h\u00e9llo \u2713",
    "int_small": 7,
    "int_negative": -5,
    "int16": 1000,
    "int32": 70000,
    "int64": 2 ** 40,
    "int64_neg": -(2 ** 40),
    "bool_true": True,
    "bool_false": False,
    "float": 1.5,
    "decimal": decimal.Decimal("3.14"),
    "timestamp": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
    "void": None,
    "array": [1, "two", True, [3]],
    "table": {"nested": "yes", "n": 42, "deeper": {"x": -1}},
    "bytes": bytearray(b"\x00\x01\xff"),
}


def _check_headers(got: dict) -> None:
    assert set(got) == set(HEADERS), got
    for key, want in HEADERS.items():
        value = got[key]
        if key == "timestamp":
            assert value.replace(tzinfo=datetime.timezone.utc) == want.replace(tzinfo=datetime.timezone.utc)
            continue
        if key == "bytes":
            assert bytes(value) == bytes(want)
            continue
        assert value == want, (key, value, want)
        assert type(value) is type(want), (key, type(value), type(want))


async def _round_trip(ch, q, via_get: bool):
    ts = datetime.datetime(2023, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc)
    msg = Message(
        b"payload \x00\xff",
        headers=HEADERS,
        content_type="application/octet-stream",
        content_encoding="identity",
        delivery_mode=DeliveryMode.PERSISTENT,
        priority=5,
        correlation_id="corr-1",
        reply_to="reply-queue",
        expiration=3600,
        message_id="msg-1",
        timestamp=ts,
        type="my.type",
        user_id="guest",
        app_id="interop-tests",
    )
    confirm = await asyncio.wait_for(ch.default_exchange.publish(msg, q.name), TIMEOUT)
    assert isinstance(confirm, spec.Basic.Ack)
    if via_get:
        got = await q.get(no_ack=True, timeout=TIMEOUT)
        assert got.message_count == 0
    else:
        inbox = await Inbox().start(q, no_ack=True)
        got = await inbox.get()
        assert got.consumer_tag == inbox.tag
    assert got.body == b"payload \x00\xff"
    assert got.routing_key == q.name
    assert got.exchange == ""
    assert got.redelivered is False
    assert got.content_type == "application/octet-stream"
    assert got.content_encoding == "identity"
    assert got.delivery_mode == DeliveryMode.PERSISTENT
    assert got.priority == 5
    assert got.correlation_id == "corr-1"
    assert got.reply_to == "reply-queue"
    assert got.expiration == 3600  # aio-pika decodes "3600000" ms into seconds
    assert got.message_id == "msg-1"
    assert got.timestamp.replace(tzinfo=datetime.timezone.utc) == ts
    assert got.type == "my.type"
    assert got.user_id == "guest"
    assert got.app_id == "interop-tests"
    _check_headers(got.headers)


async def test_round_trip_consume_preserves_properties_and_headers(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        q = await ch.declare_queue(exclusive=True)
        await _round_trip(ch, q, via_get=False)


async def test_round_trip_get_preserves_properties_and_headers(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        q = await ch.declare_queue(exclusive=True)
        await _round_trip(ch, q, via_get=True)


async def test_minimal_message_has_no_properties(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        q = await ch.declare_queue(exclusive=True)
        u = await ch.get_underlay_channel()
        # aiormq always fills in message_id; everything else stays absent
        await u.basic_publish(b"bare", exchange="", routing_key=q.name,
                              properties=spec.Basic.Properties(message_id="only-this"))
        got = await u.basic_get(q.name, no_ack=True)
        p = got.header.properties
        assert got.body == b"bare"
        assert p.message_id == "only-this"
        assert (p.content_type, p.content_encoding, p.headers, p.delivery_mode, p.priority,
                p.correlation_id, p.reply_to, p.expiration, p.timestamp, p.message_type,
                p.user_id, p.app_id) == (None,) * 12


async def test_empty_body(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        q = await ch.declare_queue(exclusive=True)
        await publish(ch, q.name, b"", message_id="empty", headers={"k": "v"})
        got = await q.get(no_ack=True, timeout=TIMEOUT)
        assert got.body == b""
        assert got.message_id == "empty"
        assert got.headers == {"k": "v"}
        await publish(ch, q.name, b"")
        inbox = await Inbox().start(q, no_ack=True)
        got = await inbox.get()
        assert got.body == b""
        # the next message is not swallowed by a confused empty-body state
        await publish(ch, q.name, b"after-empty")
        assert (await inbox.get()).body == b"after-empty"


@pytest.mark.parametrize("size", [131072 - 8, 131072 - 7, 131072 * 3 + 1, 1 << 20, 5 << 20])
async def test_large_message_split_into_frames(broker, size):
    async with Session(broker) as s:
        ch = await s.channel()
        q = await ch.declare_queue(exclusive=True)
        body = os.urandom(size)
        await asyncio.wait_for(ch.default_exchange.publish(Message(body), q.name), 20)
        got = await q.get(no_ack=True, timeout=20)
        assert len(got.body) == size
        assert got.body == body
        await asyncio.wait_for(ch.default_exchange.publish(Message(body), q.name), 20)
        inbox = await Inbox().start(q, no_ack=True)
        got = await inbox.get(timeout=20)
        assert got.body == body


async def test_many_messages_in_order(broker):
    n = 2000
    async with Session(broker) as s:
        conn = await s.connect()
        pub = await s.channel(conn, publisher_confirms=False)
        q = await pub.declare_queue(s.qname())
        for i in range(n):
            await pub.default_exchange.publish(Message(str(i).encode()), q.name)
        # a confirmed publish afterwards: once it is acked, everything before it is enqueued
        conf = await s.channel(conn)
        await publish(conf, q.name, b"end")
        cons = await s.channel(conn)
        await cons.set_qos(prefetch_count=100)
        cq = await cons.get_queue(q.name, ensure=False)
        got: list = []
        done = asyncio.get_running_loop().create_future()

        async def on_message(m):
            got.append(m)
            await m.ack()
            if len(got) == n + 1 and not done.done():
                done.set_result(None)

        await cq.consume(on_message)
        await asyncio.wait_for(done, 30)
        assert [m.body for m in got] == [str(i).encode() for i in range(n)] + [b"end"]
        assert [m.delivery_tag for m in got] == list(range(1, n + 2))
        assert all(m.redelivered is False for m in got)


async def test_delivery_tags_per_channel_shared_by_get_and_deliver(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        q = await ch.declare_queue(exclusive=True)
        for i in range(4):
            await publish(ch, q.name, f"m{i}")
        g1 = await q.get(no_ack=False, timeout=TIMEOUT)
        g2 = await q.get(no_ack=False, timeout=TIMEOUT)
        assert (g1.delivery_tag, g2.delivery_tag) == (1, 2)
        assert g1.message_count == 3 and g2.message_count == 2
        inbox = await Inbox().start(q)
        d = await inbox.take(2)
        assert [m.delivery_tag for m in d] == [3, 4]
        # another channel numbers its own deliveries from 1
        ch2 = await s.channel(conn)
        q2 = await ch2.declare_queue(exclusive=True)
        await publish(ch2, q2.name, b"x")
        g = await q2.get(no_ack=False, timeout=TIMEOUT)
        assert g.delivery_tag == 1
        await g.ack()
        for m in (g1, g2, *d):
            await m.ack()


# --------------------------------------------------------------------------- basic.get

async def test_basic_get_and_get_empty(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        q = await ch.declare_queue(exclusive=True)
        assert await q.get(no_ack=True, fail=False, timeout=TIMEOUT) is None
        with pytest.raises(aio_pika.exceptions.QueueEmpty):
            await q.get(no_ack=True, timeout=TIMEOUT)
        for i in range(3):
            await publish(ch, q.name, f"m{i}")
        m0 = await q.get(no_ack=True, timeout=TIMEOUT)
        assert (m0.body, m0.message_count, m0.redelivered) == (b"m0", 2, False)
        m1 = await q.get(no_ack=False, timeout=TIMEOUT)
        assert (m1.body, m1.message_count) == (b"m1", 1)
        m2 = await q.get(no_ack=True, timeout=TIMEOUT)
        assert (m2.body, m2.message_count) == (b"m2", 0)
        assert await q.get(no_ack=True, fail=False, timeout=TIMEOUT) is None
        await m1.reject(requeue=True)
        again = await q.get(no_ack=True, timeout=TIMEOUT)
        assert (again.body, again.redelivered, again.message_count) == (b"m1", True, 0)


async def test_get_empty_frame(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        q = await ch.declare_queue(exclusive=True)
        u = await ch.get_underlay_channel()
        got = await u.basic_get(q.name, no_ack=True)
        assert isinstance(got.delivery, spec.Basic.GetEmpty)
        assert got.body == b""
        # the channel survives get-empty
        await publish(ch, q.name, b"x")
        got = await u.basic_get(q.name, no_ack=True)
        assert isinstance(got.delivery, spec.Basic.GetOk) and got.body == b"x"


# --------------------------------------------------------------------------- confirms

async def test_publisher_confirms_are_the_channel_default(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        u = await ch.get_underlay_channel()
        assert u.publisher_confirms is True
        q = await ch.declare_queue(exclusive=True)
        results = await asyncio.wait_for(asyncio.gather(*[
            ch.default_exchange.publish(Message(f"m{i}".encode()), q.name) for i in range(200)
        ]), TIMEOUT * 2)
        assert all(isinstance(r, spec.Basic.Ack) for r in results)
        assert len(await drain(q)) == 200


async def test_confirm_for_unroutable_non_mandatory_publish(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        r = await publish(ch, s.name("nobody-bound"), b"lost", mandatory=False)
        assert isinstance(r, spec.Basic.Ack)
        ex = await ch.declare_exchange(s.xname(), type="fanout", auto_delete=True)
        r = await asyncio.wait_for(ex.publish(Message(b"lost"), "", mandatory=False), TIMEOUT)
        assert isinstance(r, spec.Basic.Ack)
