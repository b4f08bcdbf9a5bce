"""aio-pika interop: exchange types, e2e bindings, alternate exchanges, mandatory returns."""
from __future__ import annotations

import asyncio
import random

import aio_pika
import aiormq
import pytest
from aio_pika import Message
from pamqp import commands as spec

from aiopika_support import TIMEOUT, Session, drain, publish

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


async def _queues(s, ch, n: int, prefix: str = "q"):
    return [await ch.declare_queue(s.qname(prefix)) for _ in range(n)]


# --------------------------------------------------------------------------- direct

async def test_direct_exchange(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        ex = await ch.declare_exchange(s.xname(), type="direct")
        q1, q2, q3 = await _queues(s, ch, 3)
        await q1.bind(ex, "k")
        await q2.bind(ex, "k")             # two queues, same key: both get it
        await q3.bind(ex, "a.b")
        await q3.bind(ex, "other")         # one queue, two keys
        for key in ("k", "a.b", "other", "K", "a.*", "", "k "):
            await publish(ch, key, key, exchange=ex.name)
        assert await drain(q1) == [b"k"]
        assert await drain(q2) == [b"k"]
        assert await drain(q3) == [b"a.b", b"other"]


async def test_direct_unbind(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        ex = await ch.declare_exchange(s.xname(), type="direct")
        (q,) = await _queues(s, ch, 1)
        await q.bind(ex, "k")
        await publish(ch, "k", b"1", exchange=ex.name)
        ok = await q.unbind(ex, "k")
        assert isinstance(ok, spec.Queue.UnbindOk)
        await publish(ch, "k", b"2", exchange=ex.name)
        assert await drain(q) == [b"1"]


async def test_duplicate_binding_delivers_once(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        ex = await ch.declare_exchange(s.xname(), type="direct")
        (q,) = await _queues(s, ch, 1)
        await q.bind(ex, "k")
        await q.bind(ex, "k")
        await publish(ch, "k", b"once", exchange=ex.name)
        assert await drain(q) == [b"once"]
        await q.unbind(ex, "k")            # one unbind removes the (single) binding
        await publish(ch, "k", b"gone", exchange=ex.name)
        assert await drain(q) == []


async def test_default_exchange_routes_by_queue_name(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        q1, q2 = await _queues(s, ch, 2)
        await publish(ch, q1.name, b"to-q1")
        await publish(ch, q2.name, b"to-q2")
        got = await q1.get(no_ack=True, timeout=TIMEOUT)
        assert (got.body, got.exchange, got.routing_key) == (b"to-q1", "", q1.name)
        assert await drain(q1) == []
        assert await drain(q2) == [b"to-q2"]


async def test_amq_direct_predeclared(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        (q,) = await _queues(s, ch, 1)
        key = s.name("rk")
        await q.bind("amq.direct", key)
        await publish(ch, key, b"via-amq.direct", exchange="amq.direct")
        got = await q.get(no_ack=True, timeout=TIMEOUT)
        assert (got.body, got.exchange, got.routing_key) == (b"via-amq.direct", "amq.direct", key)


# --------------------------------------------------------------------------- fanout

async def test_fanout_exchange(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        ex = await ch.declare_exchange(s.xname(), type="fanout")
        qs = await _queues(s, ch, 3)
        for i, q in enumerate(qs):
            await q.bind(ex, f"ignored-{i}")
        await publish(ch, "any.key", b"one", exchange=ex.name)
        await publish(ch, "", b"two", exchange=ex.name)
        for q in qs:
            got = await q.get(no_ack=True, timeout=TIMEOUT)
            assert (got.body, got.exchange, got.routing_key) == (b"one", ex.name, "any.key")
            assert await drain(q) == [b"two"]


# --------------------------------------------------------------------------- topic

def topic_matches(pattern: str, key: str) -> bool:
    """Reference matcher: words split on '.', '' has zero words, '*' one word, '#' zero or more."""
    p = pattern.split(".") if pattern else []
    k = key.split(".") if key else []

    def m(i: int, j: int) -> bool:
        if i == len(p):
            return j == len(k)
        if p[i] == "#":
            return any(m(i + 1, jj) for jj in range(j, len(k) + 1))
        if j == len(k):
            return False
        return (p[i] == "*" or p[i] == k[j]) and m(i + 1, j + 1)
    return m(0, 0)


TOPIC_CASES = [
    # pattern, key, match
    ("a.b", "a.b", True),
    ("a.b", "a.c", False),
    ("a.*", "a.b", True),
    ("a.*", "a", False),
    ("a.*", "a.b.c", False),
    ("*.b", "a.b", True),
    ("*", "a", True),
    ("*", "", False),
    ("*", "a.b", False),
    ("#", "", True),
    ("#", "a.b.c", True),
    ("a.#", "a", True),
    ("a.#", "a.b.c", True),
    ("a.#", "b.a", False),
    ("#.a", "a", True),
    ("#.a", "x.y.a", True),
    ("#.a", "a.x", False),
    ("a.#.b", "a.b", True),
    ("a.#.b", "a.x.y.b", True),
    ("a.#.b", "a.x.y.c", False),
    ("a.*.#", "a", False),
    ("a.*.#", "a.b", True),
    ("#.#", "", True),
    ("#.*", "", False),
    ("#.*", "a.b", True),
    ("a..b", "a..b", True),
    ("a.*.b", "a..b", True),          # '*' matches an empty word
    ("a.b", "a..b", False),
    ("*.*", ".", True),               # "." is two empty words
    ("*", ".", False),
    ("", "", True),
    ("", "a", False),
    ("a.", "a.", True),
    ("a.*", "a.", True),
    ("A.b", "a.b", False),            # case-sensitive
]


def test_reference_topic_matcher():
    for pattern, key, want in TOPIC_CASES:
        assert topic_matches(pattern, key) is want, (pattern, key)


async def _check_topic(s, ch, patterns: list[str], keys: list[str]) -> None:
    ex = await ch.declare_exchange(s.xname("topic"), type="topic")
    queues = {}
    for pattern in patterns:
        q = await ch.declare_queue(s.qname())
        await q.bind(ex, pattern)
        queues[pattern] = q
    for key in keys:
        await publish(ch, key, key, exchange=ex.name)
    mismatches = []
    for pattern, q in queues.items():
        got = [b.decode() for b in await drain(q)]
        want = [k for k in keys if topic_matches(pattern, k)]
        if got != want:
            mismatches.append((pattern, got, want))
    assert not mismatches, mismatches


async def test_topic_exchange_table(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        patterns = sorted({p for p, _, _ in TOPIC_CASES})
        keys = sorted({k for _, k, _ in TOPIC_CASES})
        await _check_topic(s, ch, patterns, keys)


async def test_topic_exchange_random(broker):
    """Random patterns over a tiny alphabet, checked against the reference matcher."""
    rnd = random.Random(20240601)
    words_p = ["a", "b", "", "*", "#"]
    words_k = ["a", "b", ""]
    patterns = sorted({".".join(rnd.choice(words_p) for _ in range(rnd.randint(1, 4)))
                       for _ in range(40)})
    keys = sorted({".".join(rnd.choice(words_k) for _ in range(rnd.randint(0, 4)))
                   for _ in range(40)})
    async with Session(broker) as s:
        ch = await s.channel()
        await _check_topic(s, ch, patterns, keys)


async def test_topic_delivers_once_per_queue(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        ex = await ch.declare_exchange(s.xname(), type="topic")
        (q,) = await _queues(s, ch, 1)
        for pattern in ("#", "a.*", "a.b", "*.b", "a.#"):
            await q.bind(ex, pattern)
        await publish(ch, "a.b", b"once", exchange=ex.name)
        assert await drain(q) == [b"once"]
        await q.unbind(ex, "#")
        await publish(ch, "c", b"no-longer", exchange=ex.name)
        await publish(ch, "c.b", b"yes", exchange=ex.name)
        assert await drain(q) == [b"yes"]


# --------------------------------------------------------------------------- headers

HEADER_BINDINGS = {
    "all": {"x-match": "all", "format": "pdf", "type": "report"},
    "any": {"x-match": "any", "format": "pdf", "type": "report"},
    "num": {"x-match": "all", "count": 5},
    "big": {"x-match": "all", "size": 70000},
    "default": {"format": "pdf"},                       # x-match absent = all
    "all_empty": {"x-match": "all"},                    # matches everything
    "any_empty": {"x-match": "any"},                    # matches nothing
    "xkey": {"x-match": "all", "x-foo": "bar", "format": "pdf"},   # x- keys are skipped
    "bool": {"x-match": "all", "flag": True},
    "exists": {"x-match": "any", "marker": None},      # a void arg matches mere presence
}

HEADER_MESSAGES = [
    # headers, queues that must get it
    ({"format": "pdf", "type": "report"}, {"all", "any", "default", "all_empty", "xkey"}),
    ({"format": "pdf"}, {"any", "default", "all_empty", "xkey"}),
    ({"type": "report"}, {"any", "all_empty"}),
    ({"format": "zip", "type": "log"}, {"all_empty"}),
    ({"count": 5}, {"num", "all_empty"}),
    ({"count": 6}, {"all_empty"}),
    ({"count": "5"}, {"all_empty"}),                    # a string is not the number 5
    ({"size": 70000}, {"big", "all_empty"}),
    ({"flag": True}, {"bool", "all_empty"}),
    ({"flag": False}, {"all_empty"}),
    (None, {"all_empty"}),
    ({"format": "pdf", "type": "report", "count": 5, "extra": 1},
     {"all", "any", "num", "default", "all_empty", "xkey"}),
    ({"x-foo": "bar"}, {"all_empty"}),
    ({"marker": "anything"}, {"exists", "all_empty"}),
    ({"marker": None}, {"exists", "all_empty"}),
    ({"marker": 0, "format": "pdf"}, {"exists", "any", "default", "xkey", "all_empty"}),
]


async def test_headers_exchange(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        ex = await ch.declare_exchange(s.xname(), type="headers")
        queues = {}
        for label, args in HEADER_BINDINGS.items():
            q = await ch.declare_queue(s.qname(label))
            await q.bind(ex, "", arguments=args)
            queues[label] = q
        for i, (headers, _) in enumerate(HEADER_MESSAGES):
            await publish(ch, "routing-key-is-ignored", str(i), exchange=ex.name, headers=headers)
        got = {label: sorted(int(b) for b in await drain(q)) for label, q in queues.items()}
        want = {label: sorted(i for i, (_, dest) in enumerate(HEADER_MESSAGES) if label in dest)
                for label in HEADER_BINDINGS}
        assert got == want


async def test_headers_x_match_with_x(broker):
    """all-with-x / any-with-x also compare x- keys."""
    async with Session(broker) as s:
        ch = await s.channel()
        ex = await ch.declare_exchange(s.xname(), type="headers")
        qa = await ch.declare_queue(s.qname())
        qn = await ch.declare_queue(s.qname())
        await qa.bind(ex, arguments={"x-match": "all-with-x", "x-k": "v", "n": 1})
        await qn.bind(ex, arguments={"x-match": "any-with-x", "x-k": "v"})
        await publish(ch, "", b"both", exchange=ex.name, headers={"x-k": "v", "n": 1})
        await publish(ch, "", b"no-x", exchange=ex.name, headers={"n": 1})
        await publish(ch, "", b"only-x", exchange=ex.name, headers={"x-k": "v"})
        assert await drain(qa) == [b"both"]
        assert await drain(qn) == [b"both", b"only-x"]


async def test_headers_unbind_with_arguments(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        ex = await ch.declare_exchange(s.xname(), type="headers")
        (q,) = await _queues(s, ch, 1)
        args = {"x-match": "any", "a": "1"}
        await q.bind(ex, arguments=args)
        await publish(ch, "", b"1", exchange=ex.name, headers={"a": "1"})
        await q.unbind(ex, arguments=args)
        await publish(ch, "", b"2", exchange=ex.name, headers={"a": "1"})
        assert await drain(q) == [b"1"]


async def test_amq_match_and_amq_headers_predeclared(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        (q,) = await _queues(s, ch, 1)
        tag = s.name("tag")
        await q.bind("amq.headers", arguments={"t": tag})
        await q.bind("amq.match", arguments={"t": tag + "-m"})
        await publish(ch, "", b"h", exchange="amq.headers", headers={"t": tag})
        await publish(ch, "", b"m", exchange="amq.match", headers={"t": tag + "-m"})
        assert await drain(q) == [b"h", b"m"]


# --------------------------------------------------------------------------- exchange-to-exchange

async def test_exchange_to_exchange_binding(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        src = await ch.declare_exchange(s.xname("src"), type="direct")
        dst = await ch.declare_exchange(s.xname("dst"), type="fanout")
        qd, qs = await _queues(s, ch, 2)
        await qd.bind(dst, "")
        ok = await dst.bind(src, "k")
        assert isinstance(ok, spec.Exchange.BindOk)
        await qs.bind(src, "k")
        await qd.bind(src, "k")          # also directly: still delivered once
        await publish(ch, "k", b"routed", exchange=src.name)
        await publish(ch, "other", b"dropped", exchange=src.name)
        got = await qd.get(no_ack=True, timeout=TIMEOUT)
        # exchange/routing_key in the delivery are the ones it was published with
        assert (got.body, got.exchange, got.routing_key) == (b"routed", src.name, "k")
        assert await drain(qd) == []
        assert await drain(qs) == [b"routed"]
        ok = await dst.unbind(src, "k")
        assert isinstance(ok, spec.Exchange.UnbindOk)
        await qd.unbind(src, "k")
        await publish(ch, "k", b"after-unbind", exchange=src.name)
        assert await drain(qd) == []
        assert await drain(qs) == [b"after-unbind"]


async def test_exchange_binding_chain_topic(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        a = await ch.declare_exchange(s.xname("a"), type="topic")
        b = await ch.declare_exchange(s.xname("b"), type="topic")
        c = await ch.declare_exchange(s.xname("c"), type="direct")
        await b.bind(a, "logs.#")
        await c.bind(b, "*.error")
        (q,) = await _queues(s, ch, 1)
        await q.bind(c, "logs.error")
        for key in ("logs.error", "logs.info", "other.error", "logs.x.error"):
            await publish(ch, key, key, exchange=a.name)
        assert await drain(q) == [b"logs.error"]


async def test_exchange_binding_cycle_delivers_once(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        a = await ch.declare_exchange(s.xname("a"), type="fanout")
        b = await ch.declare_exchange(s.xname("b"), type="fanout")
        await b.bind(a)
        await a.bind(b)
        qa, qb = await _queues(s, ch, 2)
        await qa.bind(a)
        await qb.bind(b)
        await publish(ch, "", b"loop", exchange=a.name)
        await publish(ch, "", b"pool", exchange=b.name)
        assert await drain(qa) == [b"loop", b"pool"]
        assert await drain(qb) == [b"loop", b"pool"]


async def test_internal_exchange_as_e2e_destination(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        src = await ch.declare_exchange(s.xname(), type="fanout")
        internal = await ch.declare_exchange(s.xname(), type="fanout", internal=True)
        await internal.bind(src)
        (q,) = await _queues(s, ch, 1)
        await q.bind(internal)
        await publish(ch, "", b"through-internal", exchange=src.name)
        assert await drain(q) == [b"through-internal"]


# --------------------------------------------------------------------------- alternate exchange

async def test_alternate_exchange(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        ae = await ch.declare_exchange(s.xname("ae"), type="fanout")
        x = await ch.declare_exchange(s.xname("x"), type="direct",
                                      arguments={"alternate-exchange": ae.name})
        q_main, q_alt = await _queues(s, ch, 2)
        await q_main.bind(x, "k")
        await q_alt.bind(ae)
        await publish(ch, "k", b"routed", exchange=x.name)
        # routed via the AE counts as routed: no basic.return even with mandatory
        r = await publish(ch, "unknown", b"to-ae", exchange=x.name, mandatory=True)
        assert isinstance(r, spec.Basic.Ack)
        assert await drain(q_main) == [b"routed"]
        got = await q_alt.get(no_ack=True, timeout=TIMEOUT)
        assert (got.body, got.exchange, got.routing_key) == (b"to-ae", x.name, "unknown")


async def test_alternate_exchange_chain(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        last = await ch.declare_exchange(s.xname("ae2"), type="fanout")
        middle = await ch.declare_exchange(s.xname("ae1"), type="direct",
                                           arguments={"alternate-exchange": last.name})
        first = await ch.declare_exchange(s.xname("x"), type="direct",
                                          arguments={"alternate-exchange": middle.name})
        q_mid, q_last = await _queues(s, ch, 2)
        await q_mid.bind(middle, "m")
        await q_last.bind(last)
        await publish(ch, "m", b"mid", exchange=first.name)
        await publish(ch, "z", b"last", exchange=first.name)
        assert await drain(q_mid) == [b"mid"]
        assert await drain(q_last) == [b"last"]


async def test_missing_alternate_exchange_is_unroutable(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        x = await ch.declare_exchange(s.xname("x"), type="direct",
                                      arguments={"alternate-exchange": s.name("no-such-ae")})
        r = await publish(ch, "k", b"lost", exchange=x.name, mandatory=True)
        assert isinstance(r, aiormq.abc.DeliveredMessage)
        assert isinstance(r.delivery, spec.Basic.Return)
        assert r.delivery.reply_code == 312
        r = await publish(ch, "k", b"lost", exchange=x.name, mandatory=False)
        assert isinstance(r, spec.Basic.Ack)


# --------------------------------------------------------------------------- mandatory / basic.return

async def test_mandatory_unroutable_is_returned(broker):
    async with Session(broker) as s:
        ch = await s.channel()   # aio-pika default: confirms on, on_return_raises off
        returned: list = []
        ch.return_callbacks.add(lambda _ch, m: returned.append(m))
        key = s.name("nobody")
        msg = Message(b"come back", headers={"h": 1}, content_type="text/plain",
                      correlation_id="c-1")
        r = await asyncio.wait_for(ch.default_exchange.publish(msg, key, mandatory=True), TIMEOUT)
        # the return must arrive before the ack, or aiormq would hand back the Ack instead
        assert isinstance(r, aiormq.abc.DeliveredMessage), r
        ret = r.delivery
        assert isinstance(ret, spec.Basic.Return)
        assert (ret.reply_code, ret.reply_text, ret.exchange, ret.routing_key) == (
            312, "NO_ROUTE", "", key)
        assert r.body == b"come back"
        props = r.header.properties
        assert (props.headers, props.content_type, props.correlation_id) == (
            {"h": 1}, "text/plain", "c-1")
        await asyncio.sleep(0.05)
        assert len(returned) == 1
        assert returned[0].body == b"come back"


async def test_mandatory_unroutable_on_return_raises(broker):
    async with Session(broker) as s:
        conn = await s.connect()
        ch = await s.channel(conn, on_return_raises=True)
        ex = await ch.declare_exchange(s.xname(), type="direct")
        with pytest.raises(aio_pika.exceptions.PublishError) as ei:
            await asyncio.wait_for(ex.publish(Message(b"x"), "nope", mandatory=True), TIMEOUT)
        assert isinstance(ei.value, aiormq.exceptions.DeliveryError)
        assert ei.value.frame.reply_code == 312
        assert ei.value.frame.routing_key == "nope"
        assert ei.value.frame.exchange == ex.name
        # the channel keeps working after a return
        (q,) = await _queues(s, ch, 1)
        await q.bind(ex, "yes")
        r = await asyncio.wait_for(ex.publish(Message(b"ok"), "yes", mandatory=True), TIMEOUT)
        assert isinstance(r, spec.Basic.Ack)
        assert await drain(q) == [b"ok"]


async def test_mandatory_to_fanout_without_queues(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        ex = await ch.declare_exchange(s.xname(), type="fanout")
        r = await publish(ch, "any", b"x", exchange=ex.name, mandatory=True)
        assert isinstance(r, aiormq.abc.DeliveredMessage)
        assert (r.delivery.reply_code, r.delivery.exchange) == (312, ex.name)


async def test_mandatory_routable_is_acked(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        (q,) = await _queues(s, ch, 1)
        r = await publish(ch, q.name, b"x", mandatory=True)
        assert isinstance(r, spec.Basic.Ack)
        assert await drain(q) == [b"x"]


async def test_mandatory_large_message_returned_intact(broker):
    async with Session(broker) as s:
        ch = await s.channel()
        body = bytes(range(256)) * 2048   # 512 KiB, several frames
        r = await asyncio.wait_for(ch.default_exchange.publish(
            Message(body), s.name("nobody"), mandatory=True), TIMEOUT)
        assert isinstance(r, aiormq.abc.DeliveredMessage)
        assert r.body == body
