"""aio-pika interop, both brokers: routing after binding churn (the incremental indexes and
the topic trie's pruning), literal '*' and '#' words in routing keys, and what deleting a
queue or an exchange does to the bindings on both sides."""
from __future__ import annotations

import random

import aio_pika
import pytest

from aiopika_support import Session, drain, publish
from test_aiopika_routing import topic_matches

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]


async def test_topic_routing_after_binding_churn(broker):
    """Patterns sharing prefixes, bound to a few queues (several patterns each), then half of
    them unbound in random order: every key reaches exactly the queues whose remaining
    patterns match it."""
    rnd = random.Random(8)
    words = ["a", "b", "", "*", "#"]
    patterns = sorted({".".join(rnd.choice(words) for _ in range(rnd.randint(0, 4)))
                       for _ in range(60)})
    keys = sorted({".".join(rnd.choice(["a", "b", "", "*", "#"])
                            for _ in range(rnd.randint(0, 4))) for _ in range(30)})
    async with Session(broker) as s:
        ch = await s.channel()
        ex = await ch.declare_exchange(s.xname("topic"), type="topic")
        queues = [await ch.declare_queue(s.qname()) for _ in range(4)]
        bound = {(i % 4, p) for i, p in enumerate(patterns)}
        for qi, p in sorted(bound):
            await queues[qi].bind(ex, p)
        gone = rnd.sample(sorted(bound), len(bound) // 2)
        for qi, p in gone:
            await queues[qi].unbind(ex, p)
            bound.discard((qi, p))
        for key in keys:
            await publish(ch, key, key, exchange=ex.name)
        for qi, q in enumerate(queues):
            want = [k for k in keys if any(topic_matches(p, k) for j, p in bound if j == qi)]
            assert [b.decode() for b in await drain(q)] == want, qi


async def test_same_queue_bound_twice_keeps_the_other_binding(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        # (type, first binding, second binding, routing key): same destination, and for
        # fanout and the second topic and direct cases the same index entry
        for type_, first, second, rk in (
                ("topic", ("a.#", None), ("#.b", None), "a.b"),
                ("topic", ("a.#", None), ("a.#", {"v": 1}), "a.b"),
                ("direct", ("k", None), ("k", {"v": 1}), "k"),
                ("direct", ("k", None), ("k2", None), "k2"),
                ("fanout", ("x", None), ("y", None), "")):
            ex = await ch.declare_exchange(s.xname(type_), type=type_)
            q = await ch.declare_queue(s.qname())
            await q.bind(ex, first[0], arguments=first[1])
            await q.bind(ex, second[0], arguments=second[1])
            await q.unbind(ex, first[0], arguments=first[1])
            await publish(ch, rk, b"still", exchange=ex.name)
            assert await drain(q) == [b"still"], type_
            await q.unbind(ex, second[0], arguments=second[1])
            await publish(ch, rk, b"gone", exchange=ex.name)
            assert await drain(q) == [], type_


async def test_deleting_a_queue_or_an_exchange_removes_its_bindings(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        src = await ch.declare_exchange(s.xname("src"), type="topic")
        mid = await ch.declare_exchange(s.xname("mid"), type="fanout")
        doomed = await ch.declare_queue(s.qname("doomed"))
        keep = await ch.declare_queue(s.qname("keep"))
        await doomed.bind(src, "#")
        await keep.bind(mid)
        await mid.bind(src, "a.*")
        await doomed.delete()
        await publish(ch, "a.b", b"via-mid", exchange=src.name)
        assert await drain(keep) == [b"via-mid"]
        # deleting the destination exchange removes the e2e binding from its source: the
        # same name declared again starts without it
        await mid.delete()
        mid = await ch.declare_exchange(mid.name, type="fanout")
        await keep.bind(mid)
        await publish(ch, "a.b", b"unroutable", exchange=src.name)
        assert await drain(keep) == []
        await publish(ch, "", b"direct-to-mid", exchange=mid.name)
        assert await drain(keep) == [b"direct-to-mid"]


async def test_auto_delete_follows_bindings_as_source_only(broker):
    """RabbitMQ deletes an auto-delete exchange when it loses its last binding as the
    source (unbind, its queue or destination exchange deleted); losing bindings as an e2e
    destination does not delete it."""
    async with Session(broker) as s:
        ch = await s.channel()
        src = await ch.declare_exchange(s.xname("src"), type="topic", auto_delete=True)
        dst = await ch.declare_exchange(s.xname("dst"), type="fanout", auto_delete=True)
        await dst.bind(src, "#")
        await dst.unbind(src, "#")    # src lost its last binding, dst only an incoming one
        await ch.declare_exchange(dst.name, type="fanout", passive=True, auto_delete=True)
        with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
            await ch.declare_exchange(src.name, type="topic", passive=True)
        ch = await s.channel()
        dst = await ch.declare_exchange(dst.name, type="fanout", auto_delete=True)
        src = await ch.declare_exchange(s.xname("src2"), type="topic", auto_delete=True)
        await dst.bind(src, "a.*")
        await dst.delete()            # src's last binding goes with its destination
        with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
            await ch.declare_exchange(src.name, type="topic", passive=True)
