"""aio-pika interop: authentication, vhosts, heartbeats, transactions, global QoS, concurrency."""
from __future__ import annotations

import asyncio
import urllib.parse

import aio_pika
import aiormq
import pytest
from aio_pika import Message
from pamqp import commands as spec

from aiopika_support import TIMEOUT, Inbox, Session, close_reason, counts, drain, publish

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

E = aiormq.exceptions


def _url(broker, user="guest", password="guest", vhost="/", query="") -> str:
    v = urllib.parse.quote(vhost, safe="")
    return f"amqp://{user}:{password}@{broker.host}:{broker.port}/{v}" + (f"?{query}" if query else "")


# --------------------------------------------------------------------------- connection.open

@pytest.mark.parametrize("user,password", [("guest", "wrong"), ("no-such-user", "x")])
async def test_wrong_credentials_refused(broker, user, password):
    with pytest.raises(E.ProbableAuthenticationError) as ei:
        await asyncio.wait_for(aio_pika.connect(_url(broker, user, password)), 10)
    # aiormq advertises authentication_failure_close, so the server says why
    assert ei.value.args[0] == ("ACCESS_REFUSED - Login was refused using authentication "
                                "mechanism PLAIN. For details see the broker logfile.")


async def test_unknown_vhost_refused(broker):
    with pytest.raises(E.AMQPError) as ei:
        await asyncio.wait_for(aio_pika.connect(_url(broker, vhost="no-such-vhost")), 10)
    # aiormq does not expect connection.close in reply to connection.open
    assert "Connection.Close" in repr(ei.value) or "NOT_ALLOWED" in repr(ei.value)


async def test_client_properties_accepted(broker):
    async with Session(broker) as s:
        conn = await s.connect(client_properties={"connection_name": "interop-aiopika",
                                                  "custom": {"nested": 1}})
        ch = await s.channel(conn)
        q = await ch.declare_queue(exclusive=True)
        await publish(ch, q.name, b"x")
        assert await drain(q) == [b"x"]


async def test_heartbeat_keeps_idle_connection_alive(broker):
    async with Session(broker) as s:
        conn = await s.connect(heartbeat=1)
        amqp = conn.transport.connection
        assert amqp.connection_tune.heartbeat == 1
        ch = await s.channel(conn)
        q = await ch.declare_queue(exclusive=True)
        await asyncio.sleep(3.5)       # > 2 heartbeat intervals without application traffic
        assert not conn.is_closed
        await publish(ch, q.name, b"after idle")
        assert await drain(q) == [b"after idle"]


async def test_heartbeat_disabled(broker):
    async with Session(broker) as s:
        conn = await s.connect(heartbeat=0)
        ch = await s.channel(conn)
        q = await ch.declare_queue(exclusive=True)
        await publish(ch, q.name, b"x")
        assert await drain(q) == [b"x"]


async def test_close_connection_with_open_channels_and_consumers(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        observer = await s.connect()
        name = s.qname()
        oc = await s.channel(observer)
        await oc.declare_queue(name)
        for _ in range(3):
            ch = await s.channel(conn)
            await Inbox().start(await ch.get_queue(name, ensure=False))
        assert (await counts(observer, name))[1] == 3
        await asyncio.wait_for(conn.close(), TIMEOUT)
        assert conn.is_closed
        for _ in range(50):
            if (await counts(observer, name))[1] == 0:
                break
            await asyncio.sleep(0.05)
        assert await counts(observer, name) == (0, 0)


# --------------------------------------------------------------------------- transactions

async def test_tx_commit_and_rollback_publishes(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn, publisher_confirms=False)
        q = await ch.declare_queue(s.qname())
        tx = ch.transaction()
        await tx.select()
        await ch.default_exchange.publish(Message(b"t1"), q.name)
        await ch.default_exchange.publish(Message(b"t2"), q.name)
        assert await counts(conn, q.name) == (0, 0)       # not visible before commit
        ok = await tx.commit()
        assert isinstance(ok, spec.Tx.CommitOk)
        assert await counts(conn, q.name) == (2, 0)
        await ch.default_exchange.publish(Message(b"gone"), q.name)
        ok = await tx.rollback()
        assert isinstance(ok, spec.Tx.RollbackOk)
        await tx.commit()                                 # the channel stays transactional
        other = await s.channel(conn)
        assert await drain(await other.get_queue(q.name, ensure=False)) == [b"t1", b"t2"]


async def test_tx_acks_applied_on_commit(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        setup = await s.channel(conn)
        q = await setup.declare_queue(s.qname())
        for i in range(3):
            await publish(setup, q.name, f"m{i}")
        ch = await s.channel(conn, publisher_confirms=False)
        tq = await ch.get_queue(q.name, ensure=False)
        tx = ch.transaction()
        await tx.select()
        msgs = [await tq.get(no_ack=False, timeout=TIMEOUT) for _ in range(3)]
        await msgs[0].ack()
        await tx.rollback()                    # discards the ack; message stays unacked
        await msgs[1].ack()
        await tx.commit()
        await ch.close()                       # m0 and m2 were never (effectively) acked
        await asyncio.sleep(0.1)
        assert await drain(await (await s.channel(conn)).get_queue(q.name, ensure=False)) == [
            b"m0", b"m2"]


async def test_tx_commit_without_select(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn, publisher_confirms=False)
        u = await ch.get_underlay_channel()
        with pytest.raises(E.ChannelPreconditionFailed) as ei:
            await u.tx_commit()
        assert ei.value.args[0] == "PRECONDITION_FAILED - channel is not transactional"
        ch2 = await s.channel(conn, publisher_confirms=False)
        u2 = await ch2.get_underlay_channel()
        with pytest.raises(E.ChannelPreconditionFailed) as ei:
            await u2.tx_rollback()
        assert ei.value.args[0] == "PRECONDITION_FAILED - channel is not transactional"


async def test_tx_and_confirm_do_not_mix(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn, publisher_confirms=False)
        u = await ch.get_underlay_channel()
        await u.tx_select()
        with pytest.raises(E.ChannelPreconditionFailed) as ei:
            await u.rpc(spec.Confirm.Select())
        assert ei.value.args[0] == "PRECONDITION_FAILED - cannot switch from tx to confirm mode"
        ch2 = await s.channel(conn)                   # confirm mode (aio-pika default)
        u2 = await ch2.get_underlay_channel()
        with pytest.raises(E.ChannelPreconditionFailed) as ei:
            await u2.tx_select()
        assert ei.value.args[0] == "PRECONDITION_FAILED - cannot switch from confirm to tx mode"


async def test_unroutable_mandatory_in_tx_returned_before_commit_ok(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn, publisher_confirms=False)
        u = await ch.get_underlay_channel()
        await u.tx_select()
        await u.basic_publish(b"x", exchange="", routing_key=s.name("nobody"), mandatory=True)
        ok = await u.tx_commit()
        assert isinstance(ok, spec.Tx.CommitOk)
        assert not ch.is_closed


# --------------------------------------------------------------------------- QoS variants

async def test_global_qos_is_shared_by_the_channels_consumers(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        q1 = await ch.declare_queue(s.qname())
        q2 = await ch.declare_queue(s.qname())
        for i in range(5):
            await publish(ch, q1.name, f"a{i}")
            await publish(ch, q2.name, f"b{i}")
        await ch.set_qos(prefetch_count=3, global_=True)
        a = await Inbox().start(q1)
        b = await Inbox().start(q2)
        await asyncio.sleep(0.4)
        assert len(a.received) + len(b.received) == 3
        # acking one frees one slot for either consumer
        first = (a.received + b.received)[0]
        await first.ack()
        await asyncio.sleep(0.3)
        assert len(a.received) + len(b.received) == 4


async def test_qos_change_on_a_live_channel(broker):
    """RabbitMQ applies a new global=false prefetch only to consumers created afterwards.

    amqpbroker deliberately also resizes the consumers already on the channel (README,
    "deliberate differences": celery changes prefetch live), so each broker is held to its
    own documented behaviour here.
    """
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        q1 = await ch.declare_queue(s.qname())
        q2 = await ch.declare_queue(s.qname())
        for i in range(10):
            await publish(ch, q1.name, f"a{i}")
            await publish(ch, q2.name, f"b{i}")
        await ch.set_qos(prefetch_count=2)
        a = await Inbox().start(q1)
        await a.take(2)
        await ch.set_qos(prefetch_count=5)
        b = await Inbox().start(q2)
        await b.take(5)
        await b.nothing_more(0.3)
        if broker.kind == "rabbitmq":
            assert len(a.received) == 2, "RabbitMQ does not resize existing consumers"
        else:
            await a.take(3)
            await a.nothing_more(0.3)
            assert len(a.received) == 5, "amqpbroker resizes existing consumers"


# --------------------------------------------------------------------------- concurrency

async def test_concurrent_publishers_and_consumers(broker):
    n_pub, per = 4, 250
    async with Session(broker) as s:
        setup = await s.channel()
        q = await setup.declare_queue(s.qname())
        pubs = [await s.channel(await s.connect()) for _ in range(n_pub)]

        async def produce(i, ch):
            for j in range(per):
                await ch.default_exchange.publish(Message(f"{i}:{j}".encode()), q.name)

        consumers = []
        for _ in range(3):
            cch = await s.channel(await s.connect())
            await cch.set_qos(prefetch_count=20)
            inbox = Inbox()

            async def on_message(m, inbox=inbox):
                await inbox(m)
                await m.ack()
            await (await cch.get_queue(q.name, ensure=False)).consume(on_message)
            consumers.append(inbox)
        await asyncio.wait_for(asyncio.gather(*[produce(i, c) for i, c in enumerate(pubs)]), 30)

        async def all_in():
            while sum(len(c.received) for c in consumers) < n_pub * per:
                await asyncio.sleep(0.05)
        await asyncio.wait_for(all_in(), 30)
        bodies = [m.body.decode() for c in consumers for m in c.received]
        assert len(bodies) == len(set(bodies)) == n_pub * per
        # per publisher, each consumer sees that publisher's messages in publish order
        for c in consumers:
            seen: dict[str, int] = {}
            for m in c.received:
                p, j = m.body.decode().split(":")
                assert int(j) > seen.get(p, -1)
                seen[p] = int(j)
