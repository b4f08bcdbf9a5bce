"""aio-pika interop: soft (channel) and hard (connection) errors, reply codes and texts."""
from __future__ import annotations

import asyncio

import aio_pika
import aiormq
import pytest
from aio_pika import Message
from pamqp import commands as spec

from aiopika_support import TIMEOUT, Inbox, Session, close_reason, drain, publish, queue_exists

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

E = aiormq.exceptions


async def assert_connection_usable(s: Session, conn) -> None:
    assert not conn.is_closed
    ch = await s.channel(conn)
    q = await ch.declare_queue(exclusive=True)
    await publish(ch, q.name, b"still alive")
    assert await drain(q) == [b"still alive"]


# --------------------------------------------------------------------------- 404 NOT_FOUND

async def test_passive_declare_missing_queue_closes_channel_only(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        name = s.name("missing")
        with pytest.raises(E.ChannelNotFoundEntity) as ei:
            await ch.declare_queue(name, passive=True)
        assert ei.value.args[0] == f"NOT_FOUND - no queue '{name}' in vhost '/'"
        assert ch.is_closed
        with pytest.raises(E.ChannelInvalidStateError):
            await ch.declare_queue(exclusive=True)
        await assert_connection_usable(s, conn)


async def test_passive_declare_missing_exchange(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        name = s.name("missing")
        with pytest.raises(E.ChannelNotFoundEntity) as ei:
            await ch.declare_exchange(name, passive=True)
        assert ei.value.args[0] == f"NOT_FOUND - no exchange '{name}' in vhost '/'"
        await assert_connection_usable(s, conn)


async def test_publish_to_missing_exchange_closes_channel(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        u = await ch.get_underlay_channel()
        name = s.name("no-such-exchange")
        ex = await ch.get_exchange(name, ensure=False)
        with pytest.raises(E.ChannelNotFoundEntity) as ei:
            await asyncio.wait_for(ex.publish(Message(b"x"), "k"), TIMEOUT)
        assert ei.value.args[0] == f"NOT_FOUND - no exchange '{name}' in vhost '/'"
        reason = await close_reason(u)
        assert isinstance(reason, E.ChannelNotFoundEntity)
        await assert_connection_usable(s, conn)


async def test_publish_to_missing_exchange_without_confirms(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn, publisher_confirms=False)
        u = await ch.get_underlay_channel()
        name = s.name("no-such-exchange")
        await u.basic_publish(b"x", exchange=name, routing_key="k")
        reason = await close_reason(u)
        assert isinstance(reason, E.ChannelNotFoundEntity)
        assert reason.args[0] == f"NOT_FOUND - no exchange '{name}' in vhost '/'"
        await assert_connection_usable(s, conn)


async def test_bind_missing_queue_or_exchange(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        q = await ch.declare_queue(exclusive=True)
        missing_x = s.name("nx")
        with pytest.raises(E.ChannelNotFoundEntity) as ei:
            await q.bind(missing_x, "k")
        assert ei.value.args[0] == f"NOT_FOUND - no exchange '{missing_x}' in vhost '/'"
        ch2 = await s.channel(conn)
        u2 = await ch2.get_underlay_channel()
        missing_q = s.name("nq")
        with pytest.raises(E.ChannelNotFoundEntity) as ei:
            await u2.queue_bind(missing_q, "amq.direct", "k")
        assert ei.value.args[0] == f"NOT_FOUND - no queue '{missing_q}' in vhost '/'"
        await assert_connection_usable(s, conn)


async def test_consume_and_get_missing_queue(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        missing = s.name("nq")
        ch = await s.channel(conn)
        q = await ch.get_queue(missing, ensure=False)
        with pytest.raises(E.ChannelNotFoundEntity):
            await q.consume(Inbox())
        ch2 = await s.channel(conn)
        q2 = await ch2.get_queue(missing, ensure=False)
        with pytest.raises(E.ChannelNotFoundEntity):
            await q2.get(timeout=TIMEOUT)
        await assert_connection_usable(s, conn)


# --------------------------------------------------------------------------- 406 PRECONDITION_FAILED

async def test_redeclare_queue_different_durable(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        name = s.qname()
        await ch.declare_queue(name, durable=False)
        ch2 = await s.channel(conn)
        with pytest.raises(E.ChannelPreconditionFailed) as ei:
            await ch2.declare_queue(name, durable=True)
        text = ei.value.args[0]
        assert text.startswith("PRECONDITION_FAILED - inequivalent arg")
        assert text == (f"PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{name}' "
                        "in vhost '/': received 'true' but current is 'false'")
        await assert_connection_usable(s, conn)


async def test_redeclare_queue_different_auto_delete(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        name = s.qname()
        await ch.declare_queue(name, auto_delete=False)
        ch2 = await s.channel(conn)
        with pytest.raises(E.ChannelPreconditionFailed) as ei:
            await ch2.declare_queue(name, auto_delete=True)
        assert ei.value.args[0] == (
            f"PRECONDITION_FAILED - inequivalent arg 'auto_delete' for queue '{name}' "
            "in vhost '/': received 'true' but current is 'false'")
        assert await queue_exists(conn, name)


async def test_redeclare_queue_different_message_ttl(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        name = s.qname()
        await ch.declare_queue(name, arguments={"x-message-ttl": 1000})
        # same value is fine (even though ints may be encoded with another width)
        await ch.declare_queue(name, arguments={"x-message-ttl": 1000})
        # unknown x- args are neither compared nor validated
        await ch.declare_queue(name, arguments={"x-message-ttl": 1000, "x-whatever": "z"})
        cases = [
            ({"x-message-ttl": 2000},
             "received '2000' but current is '1000'"),
            (None,
             "received none but current is the value '1000' of type 'short'"),
        ]
        for args, tail in cases:
            c = await s.channel(conn)
            with pytest.raises(E.ChannelPreconditionFailed) as ei:
                await c.declare_queue(name, arguments=args)
            text = ei.value.args[0]
            assert text.startswith("PRECONDITION_FAILED - inequivalent arg 'x-message-ttl'")
            assert text == (f"PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue "
                            f"'{name}' in vhost '/': {tail}")
        await assert_connection_usable(s, conn)


async def test_redeclare_queue_adding_message_ttl(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        name = s.qname()
        await ch.declare_queue(name)
        for ttl, typ in ((100, "byte"), (100000, "signedint")):
            c = await s.channel(conn)
            with pytest.raises(E.ChannelPreconditionFailed) as ei:
                await c.declare_queue(name, arguments={"x-message-ttl": ttl})
            assert ei.value.args[0] == (
                f"PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue '{name}' in "
                f"vhost '/': received the value '{ttl}' of type '{typ}' but current is none")


async def test_passive_declare_ignores_properties(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        name = s.qname()
        await ch.declare_queue(name, arguments={"x-message-ttl": 1000})
        u = await ch.get_underlay_channel()
        ok = await u.queue_declare(name, passive=True, durable=True, auto_delete=True,
                                   arguments={"x-message-ttl": 5})
        assert ok.queue == name


async def test_redeclare_exchange_different_type(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        name = s.xname()
        await ch.declare_exchange(name, type="direct")
        ch2 = await s.channel(conn)
        with pytest.raises(E.ChannelPreconditionFailed) as ei:
            await ch2.declare_exchange(name, type="fanout")
        assert ei.value.args[0] == (
            f"PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{name}' in vhost '/': "
            "received 'fanout' but current is 'direct'")
        ch3 = await s.channel(conn)
        with pytest.raises(E.ChannelPreconditionFailed) as ei:
            await ch3.declare_exchange(name, type="direct", durable=True)
        assert ei.value.args[0].startswith(
            f"PRECONDITION_FAILED - inequivalent arg 'durable' for exchange '{name}'")
        await assert_connection_usable(s, conn)


async def test_delete_queue_if_unused(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        q = await ch.declare_queue(s.qname())
        inbox = await Inbox().start(q)
        ch2 = await s.channel(conn)
        q2 = await ch2.get_queue(q.name, ensure=False)
        with pytest.raises(E.ChannelPreconditionFailed) as ei:
            await q2.delete(if_unused=True, if_empty=False)
        assert ei.value.args[0] == f"PRECONDITION_FAILED - queue '{q.name}' in vhost '/' in use"
        assert await queue_exists(conn, q.name)
        await q.cancel(inbox.tag)
        ch3 = await s.channel(conn)
        ok = await (await ch3.get_queue(q.name, ensure=False)).delete(if_unused=True, if_empty=False)
        assert ok.message_count == 0
        assert not await queue_exists(conn, q.name)


async def test_delete_queue_if_empty(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        q = await ch.declare_queue(s.qname())
        await publish(ch, q.name, b"x")
        with pytest.raises(E.ChannelPreconditionFailed) as ei:
            await q.delete(if_unused=False, if_empty=True)
        assert ei.value.args[0] == f"PRECONDITION_FAILED - queue '{q.name}' in vhost '/' not empty"
        assert await queue_exists(conn, q.name)
        ch2 = await s.channel(conn)
        q2 = await ch2.get_queue(q.name, ensure=False)
        assert await drain(q2) == [b"x"]
        ok = await q2.delete(if_unused=False, if_empty=True)
        assert ok.message_count == 0


async def test_delete_exchange_if_unused(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        ex = await ch.declare_exchange(s.xname(), type="direct")
        q = await ch.declare_queue(exclusive=True)
        await q.bind(ex, "k")
        with pytest.raises(E.ChannelPreconditionFailed) as ei:
            await ex.delete(if_unused=True)
        assert ei.value.args[0] == f"PRECONDITION_FAILED - exchange '{ex.name}' in vhost '/' in use"
        ch2 = await s.channel(conn)
        u2 = await ch2.get_underlay_channel()
        await u2.queue_unbind(q.name, ex.name, "k")
        ok = await u2.exchange_delete(ex.name, if_unused=True)
        assert isinstance(ok, spec.Exchange.DeleteOk)
        with pytest.raises(E.ChannelNotFoundEntity):
            await u2.exchange_declare(ex.name, passive=True)


async def test_ack_unknown_delivery_tag(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        u = await ch.get_underlay_channel()
        await u.basic_ack(99)
        reason = await close_reason(u)
        assert isinstance(reason, E.ChannelPreconditionFailed)
        assert reason.args[0] == "PRECONDITION_FAILED - unknown delivery tag 99"
        await assert_connection_usable(s, conn)


async def test_double_ack(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        q = await ch.declare_queue(s.qname())
        await publish(ch, q.name, b"x")
        m = await q.get(no_ack=False, timeout=TIMEOUT)
        u = await ch.get_underlay_channel()
        await u.basic_ack(m.delivery_tag)
        await u.basic_ack(m.delivery_tag)
        reason = await close_reason(u)
        assert isinstance(reason, E.ChannelPreconditionFailed)
        assert reason.args[0] == f"PRECONDITION_FAILED - unknown delivery tag {m.delivery_tag}"
        # the first ack counted: the message is gone
        ch2 = await s.channel(conn)
        assert await drain(await ch2.get_queue(q.name, ensure=False)) == []


async def test_ack_of_no_ack_delivery_is_unknown(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        q = await ch.declare_queue(exclusive=True)
        await publish(ch, q.name, b"x")
        m = await q.get(no_ack=True, timeout=TIMEOUT)
        u = await ch.get_underlay_channel()
        await u.basic_reject(m.delivery_tag, requeue=True)
        reason = await close_reason(u)
        assert isinstance(reason, E.ChannelPreconditionFailed)
        assert reason.args[0] == f"PRECONDITION_FAILED - unknown delivery tag {m.delivery_tag}"


async def test_headers_binding_bad_x_match(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        ex = await ch.declare_exchange(s.xname(), type="headers")
        q = await ch.declare_queue(exclusive=True)
        with pytest.raises(E.ChannelPreconditionFailed) as ei:
            await q.bind(ex, arguments={"x-match": "some", "a": 1})
        assert ei.value.args[0].startswith("PRECONDITION_FAILED - Invalid x-match field value")
        await assert_connection_usable(s, conn)


# --------------------------------------------------------------------------- 405 RESOURCE_LOCKED

async def test_exclusive_queue_locked_for_other_connection(broker):
    async with Session(broker) as s:
        owner = await s.connect()
        other = await s.connect()
        och = await s.channel(owner)
        q = await och.declare_queue(s.qname("excl"), exclusive=True)
        prefix = "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue"

        async def attempt(op):
            ch = await s.channel(other)
            with pytest.raises(E.ChannelLockedResource) as ei:
                await op(await ch.get_underlay_channel())
            assert ei.value.args[0].startswith(f"{prefix} '{q.name}' in vhost '/'"), ei.value.args
            return ei.value

        await attempt(lambda u: u.queue_declare(q.name, exclusive=True))
        await attempt(lambda u: u.queue_declare(q.name))
        await attempt(lambda u: u.queue_declare(q.name, passive=True))
        await attempt(lambda u: u.basic_consume(q.name, lambda m: None))
        await attempt(lambda u: u.basic_get(q.name))
        await attempt(lambda u: u.queue_purge(q.name))
        await attempt(lambda u: u.queue_delete(q.name))
        await attempt(lambda u: u.queue_bind(q.name, "amq.fanout", ""))
        # the owner is unaffected, the other connection is still open
        await publish(och, q.name, b"mine")
        assert await drain(q) == [b"mine"]
        await assert_connection_usable(s, other)


async def test_exclusive_queue_usable_from_other_channel_of_owner(broker):
    async with Session(broker) as s:
        owner = await s.connect()
        ch1 = await s.channel(owner)
        q = await ch1.declare_queue(s.qname("excl"), exclusive=True)
        ch2 = await s.channel(owner)
        q2 = await ch2.declare_queue(q.name, exclusive=True)
        await publish(ch2, q.name, b"x")
        assert await drain(q2) == [b"x"]


# --------------------------------------------------------------------------- 403 ACCESS_REFUSED

@pytest.mark.parametrize("name", ["amq.direct", "amq.fanout", "amq.topic", "amq.headers"])
async def test_delete_amq_exchange_refused(broker, name):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        ex = await ch.get_exchange(name, ensure=False)
        with pytest.raises(E.ChannelAccessRefused) as ei:
            await ex.delete()
        text = ei.value.args[0]
        assert text.startswith("ACCESS_REFUSED - ")
        assert text == f"ACCESS_REFUSED - deletion of system exchange '{name}' in vhost '/' not allowed"
        await assert_connection_usable(s, conn)
        ch2 = await s.channel(conn)
        await ch2.declare_exchange(name, passive=True)   # still there


async def test_declare_new_amq_exchange_refused(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        name = "amq." + s.name("custom")
        with pytest.raises(E.ChannelAccessRefused) as ei:
            await ch.declare_exchange(name, type="direct")
        assert ei.value.args[0] == (
            f"ACCESS_REFUSED - exchange name '{name}' contains reserved prefix 'amq.*'")
        await assert_connection_usable(s, conn)


async def test_declare_new_amq_queue_refused(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        name = "amq." + s.name("custom")
        with pytest.raises(E.ChannelAccessRefused) as ei:
            await ch.declare_queue(name)
        assert ei.value.args[0] == (
            f"ACCESS_REFUSED - queue name '{name}' contains reserved prefix 'amq.*'")
        await assert_connection_usable(s, conn)


async def test_bind_to_default_exchange_refused(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        q = await ch.declare_queue(exclusive=True)
        with pytest.raises(E.ChannelAccessRefused) as ei:
            await q.bind("", "k")
        assert ei.value.args[0] == "ACCESS_REFUSED - operation not permitted on the default exchange"
        await assert_connection_usable(s, conn)


async def test_delete_default_exchange_refused(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        u = await ch.get_underlay_channel()
        with pytest.raises(E.ChannelAccessRefused) as ei:
            await u.exchange_delete("")
        assert ei.value.args[0].startswith("ACCESS_REFUSED - ")
        await assert_connection_usable(s, conn)


async def test_exclusive_consumer_refuses_others(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        q = await ch.declare_queue(s.qname())
        await Inbox().start(q, exclusive=True)
        ch2 = await s.channel(conn)
        q2 = await ch2.get_queue(q.name, ensure=False)
        with pytest.raises(E.ChannelAccessRefused) as ei:
            await q2.consume(Inbox())
        assert ei.value.args[0] == (
            f"ACCESS_REFUSED - queue '{q.name}' in vhost '/' in exclusive use")
        await assert_connection_usable(s, conn)


async def test_exclusive_consume_on_busy_queue_refused(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        q = await ch.declare_queue(s.qname())
        await Inbox().start(q)
        ch2 = await s.channel(conn)
        q2 = await ch2.get_queue(q.name, ensure=False)
        with pytest.raises(E.ChannelAccessRefused) as ei:
            await q2.consume(Inbox(), exclusive=True)
        assert ei.value.args[0] == (
            f"ACCESS_REFUSED - queue '{q.name}' in vhost '/' in exclusive use")


async def test_publish_to_internal_exchange_refused(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn, publisher_confirms=False)
        name = s.xname()
        await ch.declare_exchange(name, type="fanout", internal=True)
        u = await ch.get_underlay_channel()
        # aio-pika refuses client-side, so publish through aiormq
        await u.basic_publish(b"x", exchange=name, routing_key="")
        reason = await close_reason(u)
        assert isinstance(reason, E.ChannelAccessRefused)
        assert reason.args[0] == (
            f"ACCESS_REFUSED - cannot publish to internal exchange '{name}' in vhost '/'")
        await assert_connection_usable(s, conn)


# --------------------------------------------------------------------------- hard errors

async def test_unknown_exchange_type_310(broker):
    """RabbitMQ 3.10 closes the *connection* with 503 for an unknown exchange type."""
    if broker.kind != "rabbitmq":
        pytest.skip("documents RabbitMQ 3.10; see test_unknown_exchange_type for 3.13+")
    async with Session(broker) as s:
        conn = await s.connect()
        amqp = conn.transport.connection
        ch = await s.channel(conn)
        with pytest.raises(E.ConnectionCommandInvalid) as ei:
            await ch.declare_exchange(s.name("x"), type="no-such-type")
        assert ei.value.args[0] == "COMMAND_INVALID - unknown exchange type 'no-such-type'"
        assert isinstance(await close_reason(amqp), E.ConnectionCommandInvalid)


@pytest.mark.rabbitmq_310_differs("3.10 closes the connection with 503 COMMAND_INVALID; "
                                  "3.13/4.x close the channel with 406")
async def test_unknown_exchange_type(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        with pytest.raises(E.ChannelPreconditionFailed) as ei:
            await ch.declare_exchange(s.name("x"), type="no-such-type")
        assert ei.value.args[0] == "PRECONDITION_FAILED - unknown exchange type 'no-such-type'"
        await assert_connection_usable(s, conn)


async def test_prefetch_size_not_implemented(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        amqp = conn.transport.connection
        ch = await s.channel(conn)
        with pytest.raises(E.ConnectionNotImplemented):
            await ch.set_qos(prefetch_count=1, prefetch_size=1024)
        reason = await close_reason(amqp)
        assert isinstance(reason, E.ConnectionNotImplemented)
        assert reason.args[0].startswith("NOT_IMPLEMENTED - prefetch_size!=0")


async def test_consumer_tag_reuse_closes_connection(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        amqp = conn.transport.connection
        ch = await s.channel(conn)
        q = await ch.declare_queue(exclusive=True)
        await q.consume(Inbox(), consumer_tag="dup-tag")
        u = await ch.get_underlay_channel()
        # bypass aiormq's own duplicate check: send basic.consume ourselves
        with pytest.raises(E.ConnectionNotAllowed):
            await u.rpc(spec.Basic.Consume(queue=q.name, consumer_tag="dup-tag"))
        reason = await close_reason(amqp)
        assert isinstance(reason, E.ConnectionNotAllowed)
        assert reason.args[0] == "NOT_ALLOWED - attempt to reuse consumer tag 'dup-tag'"


async def test_publish_immediate_not_implemented(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        amqp = conn.transport.connection
        ch = await s.channel(conn, publisher_confirms=False)
        u = await ch.get_underlay_channel()
        await u.basic_publish(b"x", exchange="", routing_key="whatever", immediate=True)
        reason = await close_reason(amqp)
        assert isinstance(reason, E.ConnectionNotImplemented)
        assert reason.args[0] == "NOT_IMPLEMENTED - immediate=true"


async def test_recover_without_requeue_not_implemented(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        amqp = conn.transport.connection
        ch = await s.channel(conn)
        u = await ch.get_underlay_channel()
        with pytest.raises(E.ConnectionNotImplemented):
            await u.basic_recover(requeue=False)
        reason = await close_reason(amqp)
        assert isinstance(reason, E.ConnectionNotImplemented)


async def test_error_on_one_channel_leaves_others_working(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        good = await s.channel(conn)
        q = await good.declare_queue(exclusive=True)
        inbox = await Inbox().start(q, no_ack=True)
        bad = await s.channel(conn)
        with pytest.raises(E.ChannelNotFoundEntity):
            await bad.declare_queue(s.name("missing"), passive=True)
        await publish(good, q.name, b"consumer survives")
        assert (await inbox.get()).body == b"consumer survives"
        assert not good.is_closed


async def test_robust_connection_redeclares_after_channel_error(broker):
    """aio-pika's robust channel reopens itself after a soft error."""
    async with Session(broker) as s:
        conn = await asyncio.wait_for(aio_pika.connect_robust(s.broker.url), TIMEOUT)
        s.connections.append(conn)
        ch = await conn.channel()
        with pytest.raises(E.ChannelNotFoundEntity):
            await ch.declare_queue(s.name("missing"), passive=True)

        async def reopened():
            try:
                await asyncio.wait_for(ch.ready(), 0.5)
                return not ch.is_closed
            except Exception:  # noqa: BLE001
                return False
        for _ in range(50):
            if await reopened():
                break
            await asyncio.sleep(0.1)
        q = await ch.declare_queue(exclusive=True)
        await publish(ch, q.name, b"again")
        assert await drain(q) == [b"again"]


async def test_20_mib_message_round_trips(broker):
    # the default max_message_size is RabbitMQ 3.x's 128 MiB: client suites (aio-pika's,
    # aiormq's test_big_message) send 20-22 MB messages
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn)
        q = await ch.declare_queue(s.qname())
        body = bytes(range(256)) * (20 * 4096)
        await asyncio.wait_for(ch.default_exchange.publish(Message(body), q.name), 60)
        assert await drain(q) == [body]


@pytest.mark.amqpbroker_only("configures our broker's max_message_size")
async def test_message_larger_than_max_message_size(tmp_path):
    from conftest import Broker, start_amqpbroker, stop

    cfg = tmp_path / "small.yaml"
    cfg.write_text("storage: {backend: memory}\nlimits: {max_message_size: 1048576}\n")
    proc, port = start_amqpbroker("--config", str(cfg))
    try:
        broker = Broker("amqpbroker", f"amqp://guest:guest@127.0.0.1:{port}/", "127.0.0.1",
                        port, proc)
        async with Session(broker) as s:
            conn = await s.connect()
            ch = await s.channel(conn)
            q = await ch.declare_queue(s.qname())
            u = await ch.get_underlay_channel()
            size = 1024 * 1024 + 1
            with pytest.raises(E.ChannelPreconditionFailed) as ei:
                await asyncio.wait_for(ch.default_exchange.publish(Message(b"\0" * size),
                                                                   q.name), 30)
            assert ei.value.args[0] == (f"PRECONDITION_FAILED - message size {size} is larger "
                                        f"than configured max size {1024 * 1024}")
            assert isinstance(await close_reason(u), E.ChannelPreconditionFailed)
            await assert_connection_usable(s, conn)
            ch2 = await s.channel(conn)
            assert await drain(await ch2.get_queue(q.name, ensure=False)) == []
    finally:
        stop(proc)


async def test_channel_number_above_channel_max_opens(broker):
    # channel_max (2047) caps how many channels are open, not their numbers (aiormq's
    # test_bad_channel opens channel 65535)
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn, channel_number=65535)
        q = await ch.declare_queue(exclusive=True)
        await publish(ch, q.name, b"on 65535")
        assert await drain(q) == [b"on 65535"]
        with pytest.raises(E.ChannelNotFoundEntity):
            await ch.declare_queue(s.name("missing"), passive=True)
        await assert_connection_usable(s, conn)


async def test_channel_method_on_channel_zero_504(broker):
    from aiormq.abc import ChannelFrame  # as aiormq's own test_writer_closed_on_connection_loss

    conn = aiormq.Connection(broker.url)
    await asyncio.wait_for(conn.connect(), TIMEOUT)
    try:
        conn.write_queue.put_nowait(ChannelFrame.marshall(channel_number=0,
                                                          frames=[spec.Basic.Ack()]))
        await asyncio.wait([conn.closing], timeout=TIMEOUT)
        exc = conn.closing.exception()
        assert isinstance(exc, E.ConnectionChannelError)
        assert exc.args[0] == "CHANNEL_ERROR - unexpected method in connection state running"
    finally:
        await conn.close()
