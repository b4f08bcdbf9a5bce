"""Deduplication (dedup.py, dedupex.py, queues/dedup.py), sans-I/O with the time passed
in: the id (header, message-id, neither; values compared as the plugin's terms), the
cache's window (size eviction oldest first, the TTL, a message's own x-cache-ttl, a huge
TTL clamped), both exchange forms (fanout routing for the plugin's type, any type for
LavinMQ's), recording only what was routed, declare texts and equivalence, and the queue
level (an id held while its message is in the queue: freed on ack, reject, expiry, purge,
dead-letter, delete; kept on requeue).  On the wire: a duplicate is acked under confirms
and not returned under mandatory.  Persistence is in tests/test_dedup_store.py."""
from __future__ import annotations

import struct

import pytest
from pamqp import commands as C

from amqpbroker import errors
from amqpbroker.admin import Admin
from amqpbroker.broker import Broker
from amqpbroker.config import Config
from amqpbroker.confirms import ConfirmTracker
from amqpbroker.dedup import MAX_TTL, DedupCache, canonical, id_of, key_name, ttl_header
from amqpbroker.dedupex import (PERSISTENCE_TEXT, SIZE_STR_TEXT, SIZE_TEXT, TTL_STR_TEXT,
                                TTL_TEXT)
from amqpbroker.message import Message
from amqpbroker.queues import ACK, REJECT, REQUEUE
from amqpbroker.vhost import VirtualHost

from .sim import connected, messages, names

PF = "PRECONDITION_FAILED - "


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def m(dedup=None, mid=None, rk="k", ttl=None, exchange="d", **headers) -> Message:
    h = dict(headers)
    if dedup is not None:
        h["x-deduplication-header"] = dedup
    if ttl is not None:
        h["x-cache-ttl"] = ttl
    return Message(exchange, rk, C.Basic.Properties(headers=h or None,
                                                    message_id=mid).marshal(), b"body")


def world(type_="x-message-deduplication", args=None, durable=False):
    clock = Clock()
    vh = VirtualHost("/", clock=clock)
    vh.wall_clock = lambda: clock.now + 1_700_000_000.0
    args = {"x-cache-size": 10} if args is None else args
    ex = vh.declare_exchange("d", type_, False, durable, False, False, args)
    q = vh.declare_queue("q", False, False, False, False, {}, None)
    vh.bind("d", q, "k", {})
    return vh, clock, ex, q


def bodies(vh, ex, *msgs) -> list[bool]:
    """Publish each; whether each reached a queue (False: a duplicate)."""
    out = []
    for msg in msgs:
        before = sum(q.message_count for q in vh.queues.values())
        route, _ticket = vh.publish(ex, msg)
        assert route  # routed, or a duplicate: never returned
        out.append(sum(q.message_count for q in vh.queues.values()) > before)
    return out


# ---------------------------------------------------------------------- the id

def test_id_is_the_header_else_the_message_id_else_none():
    assert id_of(m("a")) == id_of(m(mid="a")) == b"Sa"
    assert id_of(m("a", mid="b")) == b"Sa"          # the header wins
    assert id_of(m()) is None and id_of(m(other=1)) is None
    assert id_of(m(**{"order": "7"}), key_name("order")) == b"S7"
    assert id_of(m("a"), key_name("order")) is None  # another header named: not this one


@pytest.mark.parametrize("a, b", [
    (b"b\x05", b"l" + struct.pack(">q", 5)), (b"I" + struct.pack(">i", 5), b"u\x00\x05"),
    (b"S\x00\x00\x00\x02ab", b"x\x00\x00\x00\x02ab"),
    (b"f" + struct.pack(">f", 1.5), b"d" + struct.pack(">d", 1.5)),
])
def test_values_that_are_one_erlang_term_are_one_id(a, b):
    assert canonical(a) == canonical(b)


def test_values_of_different_terms_differ_and_tables_are_no_id():
    assert canonical(b"b\x01") != canonical(b"t\x01")         # 1 is not true
    assert canonical(b"b\x01") != canonical(b"S\x00\x00\x00\x011")
    assert canonical(b"F\x00\x00\x00\x00") is None and canonical(b"A\x00\x00\x00\x00") is None


def test_message_ttl_header():
    assert ttl_header(m("a", ttl=500)) == 500
    assert ttl_header(m("a", ttl="700")) == 700
    assert ttl_header(m("a", ttl=0)) is None and ttl_header(m("a", ttl="x")) is None
    assert ttl_header(m("a", ttl=1 << 62)) == MAX_TTL   # clamped
    assert ttl_header(m("a")) is None


# ---------------------------------------------------------------------- the cache

def test_cache_evicts_the_oldest_past_its_size():
    c = DedupCache(3, None)
    for k in (b"a", b"b", b"c", b"d"):
        assert c.seen(k, 0.0) is None
        c.add(k, 0.0)
    assert len(c) == 3
    assert c.seen(b"a", 0.0) is None and c.seen(b"b", 0.0) is True
    c.add(b"a", 0.0)  # a again: b goes next, not c (insertion order)
    assert [k for k in c.entries] == [b"c", b"d", b"a"]


def test_cache_ttl_and_a_message_ttl():
    c = DedupCache(100, 1000)
    c.add(b"a", 10.0)
    c.add(b"b", 10.0, ttl=5000)
    assert c.seen(b"a", 10.999) is True
    assert c.seen(b"a", 11.0) is None          # 1000 ms later: out of the window
    assert c.seen(b"b", 14.9) is True and c.seen(b"b", 15.0) is None
    c2 = DedupCache(100, None)
    c2.add(b"a", 0.0)
    assert c2.seen(b"a", 1e9) is True          # no TTL: only the size bounds it


def test_cache_forgets_expired_entries_at_its_front_as_it_goes():
    c = DedupCache(1000, 10)
    for i in range(100):
        c.add(b"%d" % i, i * 1.0)
    assert len(c) < 5  # not 100: the expired went as new ones came


def test_huge_cache_ttl_is_clamped():
    c = DedupCache(10, 1 << 63)
    assert c.ttl == MAX_TTL
    c.add(b"a", 0.0, ttl=1 << 63)
    assert c.seen(b"a", MAX_TTL / 1000 - 1) is True


# ---------------------------------------------------------------------- the exchange

def test_plugin_type_routes_as_fanout_and_drops_duplicates():
    vh, clock, ex, q = world()
    q2 = vh.declare_queue("q2", False, False, False, False, {}, None)
    vh.bind("d", q2, "whatever", {})
    assert bodies(vh, ex, m("a", rk="x"), m("a", rk="y"), m(mid="a"), m("b"), m(), m()) == \
        [True, False, False, True, True, True]
    assert (q.message_count, q2.message_count) == (4, 4)
    assert ex.counters.drop_duplicate == 2


def test_window_on_the_exchange_with_time_passed_in():
    vh, clock, ex, q = world(args={"x-cache-size": 10, "x-cache-ttl": 1000})
    assert bodies(vh, ex, m("a"), m("b", ttl=5000)) == [True, True]
    clock.now += 0.5
    assert bodies(vh, ex, m("a"), m("b")) == [False, False]
    clock.now += 0.5
    assert bodies(vh, ex, m("a"), m("b")) == [True, False]
    clock.now += 4.0
    assert bodies(vh, ex, m("b")) == [True]


def test_size_bounds_the_window():
    vh, clock, ex, q = world(args={"x-cache-size": 2})
    assert bodies(vh, ex, m("a"), m("b"), m("c"), m("a"), m("c")) == \
        [True, True, True, True, False]


def test_an_unroutable_first_publish_does_not_make_its_retry_a_duplicate():
    vh, clock, ex, q = world("direct", {"x-message-deduplication": True})
    route, _ = vh.publish(ex, m("a", rk="nowhere"))
    assert not route                                   # unroutable: mandatory returns it
    assert bodies(vh, ex, m("a"), m("a")) == [True, False]


def test_alternate_exchange_counts_as_routed():
    vh, clock, ex, q = world("direct", {"x-message-deduplication": True,
                                        "alternate-exchange": "ae"})
    vh.declare_exchange("ae", "fanout", False, False, False, False, {})
    spill = vh.declare_queue("spill", False, False, False, False, {}, None)
    vh.bind("ae", spill, "", {})
    assert bodies(vh, ex, m("a", rk="none"), m("a", rk="k")) == [True, False]
    assert (spill.message_count, q.message_count) == (1, 0)


def test_lavinmq_form_on_every_type_with_its_header_argument():
    for type_, key in (("direct", "k"), ("topic", "k"), ("fanout", "any"),
                       ("headers", "")):
        vh, clock, ex, q = world(type_, {"x-message-deduplication": True,
                                         "x-deduplication-header": "order"})
        if type_ == "headers":
            vh.unbind("d", q, "k", {})
            vh.bind("d", q, "", {"x-match": "any", "order": "1"})
        msgs = [m(rk=key, order="1"), m(rk=key, order="1"), m("1", rk=key, order="1")]
        assert bodies(vh, ex, *msgs) == [True, False, False], type_
        assert ex.cache.size == 128  # LavinMQ's default


def test_reject_publish_queue_nacks_and_does_not_record():
    vh, clock, ex, _q = world()
    full = vh.declare_queue("full", False, False, False, False,
                            {"x-max-length": 0, "x-overflow": "reject-publish"}, None)
    vh.unbind("d", _q, "k", {})
    vh.bind("d", full, "", {})
    route, ticket = vh.publish(ex, m("a"))
    t = ConfirmTracker(vh.store)
    t.publish(ticket)
    assert list(t.release()) == [(1, True, False)]    # a nack
    assert ex.cache.seen(b"Sa", clock.now) is None     # not recorded: a retry may pass


def test_declare_texts_and_equivalence():
    # the plugin's texts keep the indentation its source continues them with
    assert SIZE_TEXT == ("Missing or invalid argument,           'x-cache-size' must be an "
                         "integer greater than 0")
    vh = VirtualHost("/")
    for args, text in (({}, SIZE_TEXT), ({"x-cache-size": 0}, SIZE_TEXT),
                       ({"x-cache-size": 1.5}, SIZE_TEXT),
                       ({"x-cache-size": "ten"}, SIZE_STR_TEXT),
                       ({"x-cache-size": 5, "x-cache-ttl": -1}, TTL_TEXT),
                       ({"x-cache-size": 5, "x-cache-ttl": "1s"}, TTL_STR_TEXT),
                       ({"x-cache-size": 5, "x-cache-persistence": "tape"},
                        PERSISTENCE_TEXT)):
        with pytest.raises(errors.PreconditionFailed) as ei:
            vh.declare_exchange("d", "x-message-deduplication", False, True, False, False,
                                args)
        assert str(ei.value) == text
    vh.declare_exchange("d", "x-message-deduplication", False, True, False, False,
                        {"x-cache-size": "5"})  # a string of digits, as the plugin
    vh.declare_exchange("d", "x-message-deduplication", False, True, False, False,
                        {"x-cache-size": "5"})
    with pytest.raises(errors.PreconditionFailed) as ei:
        vh.declare_exchange("d", "x-message-deduplication", False, True, False, False,
                            {"x-cache-size": "6"})
    assert str(ei.value) == ("inequivalent arg 'x-cache-size' for exchange 'd' in vhost '/': "
                             "received '6' but current is '5'")
    vh.declare_exchange("p", "direct", False, False, False, False, {})
    with pytest.raises(errors.PreconditionFailed):  # turning dedup on is a different exchange
        vh.declare_exchange("p", "direct", False, False, False, False,
                            {"x-message-deduplication": True})


def test_delete_drops_the_cache():
    vh, clock, ex, q = world()
    bodies(vh, ex, m("a"))
    vh.delete_exchange("d", False)
    ex2 = vh.declare_exchange("d", "x-message-deduplication", False, False, False, False,
                              {"x-cache-size": 10})
    vh.bind("d", q, "", {})
    assert bodies(vh, ex2, m("a")) == [True]


def test_exchange_to_exchange_into_a_dedup_exchange():
    vh, clock, ex, q = world()
    vh.declare_exchange("src", "topic", False, False, False, False, {})
    vh.bind("src", ex, "#", {})
    src = vh.exchanges["src"]
    assert bodies(vh, src, m("a"), m("a")) == [True, False]
    assert q.message_count == 1


def test_with_delayed_exchange_a_message_is_checked_at_its_release():
    vh, clock, ex, q = world("direct", {"x-message-deduplication": True,
                                        "x-delayed-exchange": True})
    vh.publish(ex, m("a", **{"x-delay": 100}))
    vh.publish(ex, m("a", **{"x-delay": 200}))
    clock.now += 1
    vh.scheduler.run_due(clock.now)
    assert q.message_count == 1


# ---------------------------------------------------------------------- the queue

def qworld(**args):
    clock = Clock()
    vh = VirtualHost("/", clock=clock)
    q = vh.declare_queue("u", False, False, False, False,
                         {"x-message-deduplication": True, **args}, None)
    return vh, clock, q


def put(vh, *msgs):
    for msg in msgs:
        msg.exchange, msg.routing_key = "", "u"
        vh.publish(vh.default_exchange, msg)


def test_queue_holds_an_id_while_its_message_is_in_it():
    vh, clock, q = qworld()
    put(vh, m("a"), m("a"), m(mid="a"), m("b"), m(), m())
    assert q.message_count == 4 and q.counters.drop_duplicate == 2
    assert q.counters.as_dict()["drop_duplicate"] == 2
    qa = q.take(clock.now)                       # delivered, unacked: still held
    put(vh, m("a"))
    assert q.message_count == 3
    q.settle([qa], REQUEUE)                      # requeued: still held
    put(vh, m("a"))
    assert q.message_count == 4
    qa = q.take(clock.now)
    q.settle([qa], ACK)                          # acked: free
    put(vh, m("a"))
    assert q.message_count == 4
    qb = q.take(clock.now)
    assert qb.msg.headers["x-deduplication-header"] == "b"
    q.settle([qb], REJECT)                       # rejected without requeue: free
    put(vh, m("b"))
    assert q.message_count == 4


def test_queue_frees_on_expiry_purge_and_no_ack():
    vh, clock, q = qworld(**{"x-message-ttl": 1000})
    put(vh, m("a"))
    clock.now += 2
    q.expire(clock.now)
    assert q.message_count == 0
    put(vh, m("a"), m("b"))
    assert q.message_count == 2
    q.purge()
    put(vh, m("a"), m("b"))
    assert q.message_count == 2
    assert vh.get_queue("u").get(clock.now, no_ack=True) is not None
    put(vh, m("a"))
    assert q.message_count == 2


def test_queue_frees_on_dead_letter_and_takes_a_dead_letter_back():
    clock = Clock()
    vh = VirtualHost("/", clock=clock)
    vh.declare_exchange("dlx", "fanout", False, False, False, False, {})
    q = vh.declare_queue("u", False, False, False, False,
                         {"x-message-deduplication": True, "x-dead-letter-exchange": "dlx"},
                         None)
    vh.bind("dlx", q, "", {})                      # dead letters come back here
    put(vh, m("a"))
    qa = q.take(clock.now)
    q.settle([qa], REJECT)
    assert q.message_count == 1                    # its dead letter, not a duplicate
    put(vh, m("a"))
    assert q.message_count == 1


def test_queue_lengths_limit_drop_head_frees():
    vh, clock, q = qworld(**{"x-max-length": 1})
    put(vh, m("a"), m("b"))                        # a dropped from the head
    put(vh, m("a"))
    assert q.message_count == 1 and q.ready.head().msg.headers["x-deduplication-header"] == "a"


def test_queue_argument_equivalence_and_type():
    vh, clock, q = qworld()
    with pytest.raises(errors.PreconditionFailed) as ei:
        vh.declare_queue("u", False, False, False, False, {}, None)
    assert "inequivalent arg 'x-message-deduplication'" in str(ei.value)
    with pytest.raises(errors.PreconditionFailed) as ei:
        vh.declare_queue("v", False, False, False, False, {"x-message-deduplication": "yes"},
                         None)
    assert str(ei.value) == ("invalid arg 'x-message-deduplication' for queue 'v' in vhost "
                             "'/': {unacceptable_type,longstr}")


# ---------------------------------------------------------------------- on the wire

def test_duplicate_is_acked_under_confirms_and_not_returned_under_mandatory():
    broker = Broker(Config())
    c = connected(broker=broker)
    c.call(1, C.Exchange.Declare(exchange="d", exchange_type="x-message-deduplication",
                                 arguments={"x-cache-size": 10}), "Exchange.DeclareOk")
    c.declare(1, "q")
    c.call(1, C.Queue.Bind(queue="q", exchange="d"), "Queue.BindOk")
    c.rpc(1, C.Confirm.Select())
    p = C.Basic.Properties(headers={"x-deduplication-header": "id-1"})
    assert names(c.publish(1, "d", "", b"one", p, mandatory=True)) == ["Basic.Ack"]
    assert names(c.publish(1, "d", "", b"two", p, mandatory=True)) == ["Basic.Ack"]
    assert names(c.publish(1, "d", "", b"three", C.Basic.Properties(message_id="id-1"),
                           mandatory=True)) == ["Basic.Ack"]
    got = c.get(1, "q", no_ack=True)
    assert got.body == b"one" and c.get(1, "q") is None
    ex = broker.vhosts["/"].exchanges["d"]
    assert ex.counters.drop_duplicate == 2
    stats = Admin(broker).exchange("/", "d")["message_stats"]   # the management core's
    assert (stats["publish_in"], stats["publish_out"], stats["drop_duplicate"]) == (3, 1, 2)
    assert Admin(broker).exchange("/", "d")["cache_info"] == {"entries": 1, "size": 10}
    assert "cache_info" not in Admin(broker).exchange("/", "amq.direct")


def test_unroutable_first_publish_is_returned_then_its_retry_routes():
    broker = Broker(Config())
    c = connected(broker=broker)
    c.call(1, C.Exchange.Declare(exchange="d", exchange_type="direct",
                                 arguments={"x-message-deduplication": True}),
           "Exchange.DeclareOk")
    c.declare(1, "q")
    c.rpc(1, C.Confirm.Select())
    p = C.Basic.Properties(message_id="m1")
    assert names(c.publish(1, "d", "k", b"x", p, mandatory=True)) == \
        ["Basic.Return", "ContentHeader", "ContentBody", "Basic.Ack"]
    c.call(1, C.Queue.Bind(queue="q", exchange="d", routing_key="k"), "Queue.BindOk")
    assert names(c.publish(1, "d", "k", b"x", p, mandatory=True)) == ["Basic.Ack"]
    assert messages(c.rpc(1, C.Basic.Get(queue="q", no_ack=True)))[0].body == b"x"


def test_dead_letter_through_a_lavinmq_form_exchange_keeps_its_routing_key():
    clock = Clock()
    vh = VirtualHost("/", clock=clock)
    vh.declare_exchange("dlx", "direct", False, False, False, False,
                        {"x-message-deduplication": True})
    dead = vh.declare_queue("dead", False, False, False, False, {}, None)
    vh.bind("dlx", dead, "dead-key", {})
    src = vh.declare_queue("src", False, False, False, False,
                           {"x-dead-letter-exchange": "dlx",
                            "x-dead-letter-routing-key": "dead-key"}, None)
    msg = m(mid="d-1", rk="src", exchange="")
    vh.publish(vh.default_exchange, msg)
    q = src.take(clock.now)
    src.settle([q], REJECT)
    assert (src.message_count, dead.message_count) == (0, 1)
