"""Delayed delivery (delayed.py, delayset.py), sans-I/O with the time passed in: the
``x-delay`` coercion table, release in order of (due, seq) through one scheduler call,
the header rewrite (every other header byte kept), routing at release to the bindings of
then, the alternate exchange or a counted drop, declare texts and equivalence, LavinMQ's
``x-delayed-exchange`` on every type, delete dropping what is pending, and on the wire:
no Basic.Return for a delayed mandatory publish, the confirm at once for a transient one.
Persistence and the window are in tests/test_delayed_store.py."""
from __future__ import annotations

import struct

import pytest
from pamqp import commands as C

from amqpbroker import errors
from amqpbroker.broker import Broker
from amqpbroker.config import Config
from amqpbroker.delayed import MAX_DELAY, coerce_delay, delay_of, released
from amqpbroker.exchanges import exchange_type
from amqpbroker.framing import table_items
from amqpbroker.message import F_HEADERS, Message, split_properties
from amqpbroker.vhost import VirtualHost

from .amqp_bytes import props_block, table
from .sim import connected, messages, names

PF = "PRECONDITION_FAILED - "


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def world(type_="x-delayed-message", args=None, **kw):
    clock = Clock()
    vh = VirtualHost("/", clock=clock)
    vh.wall_clock = lambda: clock.now + 1_700_000_000.0
    args = {"x-delayed-type": "direct"} if args is None else args
    ex = vh.declare_exchange("d", type_, False, kw.get("durable", False), False, False, args)
    q = vh.declare_queue("q", False, False, False, False, {}, None)
    vh.bind("d", q, "k", {})
    return vh, clock, ex, q


def raw_msg(*items, rk="k", exchange="d") -> Message:
    """A message whose headers table is exactly ``items`` (name, tagged value bytes)."""
    return Message(exchange, rk, props_block({F_HEADERS: table(items)}), b"body")


def delayed(ms, rk="k", **headers) -> Message:
    return Message("d", rk, C.Basic.Properties(headers={"x-delay": ms, **headers}).marshal(),
                   b"body")


def advance(vh, clock, seconds):
    clock.now += seconds
    return vh.scheduler.run_due(clock.now)


def drain(q, now) -> list[Message]:
    out = []
    while q.message_count:
        out.append(q.take(now).msg)
    return out


# ---------------------------------------------------------------------- x-delay values

@pytest.mark.parametrize("tagged, expected", [
    (b"b" + struct.pack(">b", 5), 5), (b"B" + struct.pack(">B", 200), 200),
    (b"s" + struct.pack(">h", -3), -3), (b"u" + struct.pack(">H", 60000), 60000),
    (b"I" + struct.pack(">i", 1500), 1500), (b"i" + struct.pack(">I", MAX_DELAY), MAX_DELAY),
    (b"l" + struct.pack(">q", 1 << 40), 1 << 40),
    (b"S" + struct.pack(">I", 4) + b"2500", 2500), (b"S\x00\x00\x00\x02+7", 7),
    (b"S\x00\x00\x00\x02-7", -7),
    (b"S\x00\x00\x00\x03 12", None), (b"S\x00\x00\x00\x031.5", None),
    (b"S\x00\x00\x00\x03abc", None), (b"S\x00\x00\x00\x00", None),
    (b"S\x00\x00\x00\x031_0", None),
    (b"d" + struct.pack(">d", 1999.9), 1999), (b"f" + struct.pack(">f", 2.75), 2),
    (b"d" + struct.pack(">d", -0.5), 0), (b"d" + struct.pack(">d", float("inf")), None),
    (b"t\x01", None), (b"T" + struct.pack(">Q", 5), None), (b"V", None),
    (b"D\x00" + struct.pack(">i", 5), None), (b"x\x00\x00\x00\x015", None),
])
def test_coercion_as_the_plugin(tagged, expected):
    assert coerce_delay(tagged) == expected


@pytest.mark.parametrize("tagged, delay", [
    (b"I" + struct.pack(">i", 1), 1), (b"i" + struct.pack(">I", MAX_DELAY), MAX_DELAY),
    (b"l" + struct.pack(">q", MAX_DELAY + 1), None), (b"I" + struct.pack(">i", 0), None),
    (b"I" + struct.pack(">i", -100), None), (b"S\x00\x00\x00\x0299", 99)])
def test_range_one_to_two_to_the_32_minus_one(tagged, delay):
    assert delay_of(raw_msg((b"x-delay", tagged))) == delay


def test_no_header_or_other_names_route_at_once():
    assert delay_of(Message("d", "k", C.Basic.Properties().marshal(), b"")) is None
    assert delay_of(raw_msg((b"x-delayed", b"I" + struct.pack(">i", 5)))) is None
    assert delay_of(raw_msg((b"a", b"S\x00\x00\x00\x07x-delay"))) is None
    # the first x-delay counts, as rabbit_misc:table_lookup
    assert delay_of(raw_msg((b"x-delay", b"I" + struct.pack(">i", 5)),
                            (b"x-delay", b"I" + struct.pack(">i", 9)))) == 5


def test_release_rewrites_x_delay_to_its_negative_keeping_every_other_byte():
    others = [(b"a", b"l" + struct.pack(">q", 7)), (b"b", b"s" + struct.pack(">h", 7)),
              (b"c", b"d" + struct.pack(">d", 0.5)), (b"e", b"F" + table([(b"n", b"V")]))]
    m = raw_msg(others[0], (b"x-delay", b"S\x00\x00\x00\x03250"), *others[1:])
    out = released(m)
    items = table_items(split_properties(out.props)[F_HEADERS])
    assert items == [(k.decode(), v) for k, v in others[:1]] + \
        [("x-delay", b"I" + struct.pack(">i", -250))] + [(k.decode(), v) for k, v in others[1:]]
    big = released(raw_msg((b"x-delay", b"i" + struct.pack(">I", MAX_DELAY))))
    assert table_items(split_properties(big.props)[F_HEADERS]) == \
        [("x-delay", b"l" + struct.pack(">q", -MAX_DELAY))]
    assert delay_of(out) is None  # never delayed twice


# ---------------------------------------------------------------------- release

def test_released_in_order_of_due_time_then_publish_order_one_scheduler_call():
    vh, clock, ex, q = world()
    for i, ms in enumerate([500, 100, 300, 100, 200, 5000]):
        route, ticket = vh.publish(ex, delayed(ms, n=i))
        assert route and route.deferred and route.queues == [] and ticket is True
    assert q.message_count == 0
    assert len(vh.scheduler) == 1 and vh.scheduler.next_deadline() == clock.now + 0.1
    advance(vh, clock, 0.099)
    assert q.message_count == 0
    advance(vh, clock, 0.001)
    assert [m.headers["n"] for m in drain(q, clock.now)] == [1, 3]
    assert len(vh.scheduler) == 1 and vh.scheduler.next_deadline() == pytest.approx(1000.2)
    advance(vh, clock, 0.4)
    assert [m.headers["n"] for m in drain(q, clock.now)] == [4, 2, 0]
    advance(vh, clock, 10)
    assert [(m.headers["n"], m.headers["x-delay"]) for m in drain(q, clock.now)] == [(5, -5000)]
    assert len(vh.scheduler) == 0 and len(ex.delayed) == 0


def test_an_earlier_message_moves_the_one_call_earlier():
    vh, clock, ex, q = world()
    vh.publish(ex, delayed(1000))
    vh.publish(ex, delayed(10))
    assert len(vh.scheduler) == 1 and vh.scheduler.next_deadline() == clock.now + 0.01


def test_no_delay_zero_negative_and_bad_values_route_at_once():
    vh, clock, ex, q = world()
    for headers in ({}, {"x-delay": 0}, {"x-delay": -5}, {"x-delay": "soon"},
                    {"x-delay": True}, {"x-delay": MAX_DELAY + 1}):
        route, _ = vh.publish(ex, Message("d", "k", C.Basic.Properties(
            headers=headers).marshal(), b""))
        assert route.queues == [q] and not route.deferred
    assert q.message_count == 6 and len(vh.scheduler) == 0


def test_routed_at_release_to_the_bindings_of_then():
    vh, clock, ex, q = world()
    q2 = vh.declare_queue("q2", False, False, False, False, {}, None)
    vh.publish(ex, delayed(100))
    vh.unbind("d", q, "k", {})
    vh.bind("d", q2, "k", {})
    advance(vh, clock, 0.1)
    assert q.message_count == 0 and q2.message_count == 1


def test_unroutable_at_release_goes_to_the_alternate_exchange_or_is_counted():
    vh, clock, ex, q = world(args={"x-delayed-type": "direct", "alternate-exchange": "ae"})
    ae = vh.declare_exchange("ae", "fanout", False, False, False, False, {})
    catch = vh.declare_queue("catch", False, False, False, False, {}, None)
    vh.bind("ae", catch, "", {})
    vh.publish(ex, delayed(100, rk="nowhere"))
    advance(vh, clock, 0.1)
    assert catch.message_count == 1 and ex.counters.drop_unroutable == 0
    vh.delete_exchange("ae", False)
    vh.publish(ex, delayed(100, rk="nowhere"))
    advance(vh, clock, 0.1)
    assert catch.message_count == 1 and ex.counters.drop_unroutable == 1
    assert ae.counters.drop_unroutable == 0


def test_delete_drops_what_is_pending():
    vh, clock, ex, q = world()
    vh.publish(ex, delayed(100))
    vh.delete_exchange("d", False)
    assert len(vh.scheduler) == 0
    advance(vh, clock, 1)
    assert q.message_count == 0
    # a new exchange of the same name starts empty
    ex2 = vh.declare_exchange("d", "x-delayed-message", False, False, False, False,
                              {"x-delayed-type": "direct"})
    assert len(ex2.delayed) == 0


def test_reached_through_an_exchange_binding():
    vh, clock, ex, q = world()
    src = vh.declare_exchange("src", "fanout", False, False, False, False, {})
    vh.bind("src", ex, "", {})
    route, ticket = vh.publish(src, delayed(50))
    assert route and route.deferred and ticket is True and q.message_count == 0
    advance(vh, clock, 0.05)
    assert q.message_count == 1


# ---------------------------------------------------------------------- declare

@pytest.mark.parametrize("args, text", [
    ({}, "Invalid argument, 'x-delayed-type' must be an existing exchange type"),
    ({"x-delayed-type": 5}, "Invalid argument, 'x-delayed-type' must be an existing "
                            "exchange type"),
    ({"x-delayed-type": "x-nope"}, "Invalid argument, 'x-delayed-type' must be an existing "
                                   "exchange type"),
    ({"x-delayed-type": "x-delayed-message"},
     "Invalid argument, 'x-delayed-message' can't be used for 'x-delayed-type'"),
])
def test_declare_refuses_a_bad_delayed_type_with_the_plugins_text(args, text):
    vh = VirtualHost("/")
    with pytest.raises(errors.PreconditionFailed) as ei:
        vh.declare_exchange("d", "x-delayed-message", False, False, False, False, args)
    assert ei.value.reply_text == PF + text and "d" not in vh.exchanges


def test_inner_type_validation_and_routing_apply():
    vh = VirtualHost("/")
    vh.declare_exchange("h", "x-delayed-message", False, False, False, False,
                        {"x-delayed-type": "headers"})
    q = vh.declare_queue("q", False, False, False, False, {}, None)
    with pytest.raises(errors.PreconditionFailed):
        vh.bind("h", q, "", {"x-match": "some"})


@pytest.mark.parametrize("type_", ["direct", "fanout", "topic", "headers"])
def test_lavinmq_form_on_every_type(type_):
    bargs = {"x-match": "any", "h": 1} if type_ == "headers" else {}
    vh, clock, ex, q = world(type_, {"x-delayed-exchange": True})
    vh.bind("d", q, "#" if type_ == "topic" else "k", bargs)
    assert ex.type == type_ and isinstance(ex, exchange_type(type_))
    route, _ = vh.publish(ex, delayed(100, h=1))
    assert route.deferred and q.message_count == 0
    advance(vh, clock, 0.1)
    assert [m.headers["x-delay"] for m in drain(q, clock.now)] == [-100]
    route, _ = vh.publish(ex, delayed(-1, h=1))  # released ones route as they are
    assert not route.deferred and q.message_count == 1
    # the same class for every exchange of that type; not delayed without the argument
    assert type(world(type_, {"x-delayed-exchange": True})[2]) is type(ex)
    plain = world(type_, {})[2]
    assert type(plain) is exchange_type(type_)
    assert not vh.publish(plain, delayed(100, h=1))[0].deferred


def test_equivalence_covers_the_arguments():
    vh = VirtualHost("/")
    vh.declare_exchange("d", "x-delayed-message", False, False, False, False,
                        {"x-delayed-type": "direct"})
    with pytest.raises(errors.PreconditionFailed) as ei:
        vh.declare_exchange("d", "x-delayed-message", False, False, False, False,
                            {"x-delayed-type": "topic"})
    assert ei.value.reply_text == PF + "inequivalent arg 'x-delayed-type' for exchange 'd' " \
        "in vhost '/': received 'topic' but current is 'direct'"
    vh.declare_exchange("l", "direct", False, False, False, False,
                        {"x-delayed-exchange": True})
    for args in ({}, {"x-delayed-exchange": False}):
        with pytest.raises(errors.PreconditionFailed) as ei:
            vh.declare_exchange("l", "direct", False, False, False, False, args)
        assert "inequivalent arg 'x-delayed-exchange'" in ei.value.reply_text
    vh.declare_exchange("p", "direct", False, False, False, False, {})
    with pytest.raises(errors.PreconditionFailed):
        vh.declare_exchange("p", "direct", False, False, False, False,
                            {"x-delayed-exchange": True})


# ---------------------------------------------------------------------- on the wire

def test_mandatory_delayed_publish_is_not_returned_and_confirmed_at_once():
    broker = Broker(Config())
    clock = Clock()
    vh = broker.vhosts["/"]
    vh.clock = clock
    c = connected(broker=broker)
    c.call(1, C.Exchange.Declare(exchange="d", exchange_type="x-delayed-message",
                                 arguments={"x-delayed-type": "direct"}), "Exchange.DeclareOk")
    c.declare(1, "q")
    c.call(1, C.Queue.Bind(queue="q", exchange="d", routing_key="k"), "Queue.BindOk")
    c.rpc(1, C.Confirm.Select())
    frames = c.publish(1, "d", "nowhere", b"x", C.Basic.Properties(headers={"x-delay": 10}),
                       mandatory=True)
    assert names(frames) == ["Basic.Ack"]            # the plugin returns 312 at once
    frames = c.publish(1, "d", "k", b"late", C.Basic.Properties(headers={"x-delay": "20"}),
                       mandatory=True)
    assert names(frames) == ["Basic.Ack"]
    c.rpc(1, C.Basic.Consume(queue="q", no_ack=True))
    clock.now += 0.02
    vh.scheduler.run_due(clock.now)
    got = messages(c.recv())
    assert [(m.body, m.properties.headers["x-delay"]) for m in got] == [(b"late", -20)]
    assert vh.exchanges["d"].counters.drop_unroutable == 1  # "nowhere", at its release


# ---------------------------------------------------------------------- x-delivery-delay

def delay_queue(vh, name="dq", ms=200, **extra):
    return vh.declare_queue(name, False, False, False, False,
                            {"x-delivery-delay": ms, **extra}, None)


def test_queue_delivery_delay_makes_each_message_visible_after_it():
    clock = Clock()
    vh = VirtualHost("/", clock=clock)
    dq, plain = delay_queue(vh), vh.declare_queue("p", False, False, False, False, {}, None)
    fan = vh.declare_exchange("f", "fanout", False, False, False, False, {})
    vh.bind("f", dq, "", {})
    vh.bind("f", plain, "", {})
    m = Message("f", "", C.Basic.Properties(headers={"n": 1}).marshal(), b"x")
    route, ticket = vh.publish(fan, m)
    assert route.queues == [dq, plain] and ticket is True
    assert plain.message_count == 1 and dq.message_count == 0  # the other queue: at once
    advance(vh, clock, 0.1)
    vh.publish(vh.default_exchange, Message("", "dq", C.Basic.Properties(
        headers={"n": 2}).marshal(), b"y"))
    assert len(vh.scheduler) == 1
    advance(vh, clock, 0.1)
    assert [m.headers["n"] for m in drain(dq, clock.now)] == [1]
    advance(vh, clock, 0.1)
    assert [m.headers["n"] for m in drain(dq, clock.now)] == [2]
    assert dq.counters.publish == 2
    # the message's own headers are not touched (no x-delay rewrite here)
    vh.publish(vh.default_exchange, Message("", "dq", m.props, b"z"))
    advance(vh, clock, 0.2)
    assert drain(dq, clock.now)[0].props == m.props


def test_queue_delivery_delay_ttl_counts_from_visibility_and_delete_drops():
    clock = Clock()
    vh = VirtualHost("/", clock=clock)
    dq = delay_queue(vh, ms=500, **{"x-message-ttl": 300})
    vh.publish(vh.default_exchange, Message("", "dq", C.Basic.Properties().marshal(), b""))
    advance(vh, clock, 0.5)
    assert dq.message_count == 1            # visible now, its TTL starts now
    advance(vh, clock, 0.29)
    assert dq.message_count == 1
    advance(vh, clock, 0.02)
    assert dq.message_count == 0
    vh.publish(vh.default_exchange, Message("", "dq", C.Basic.Properties().marshal(), b""))
    vh.delete_queue(dq)
    assert len(vh.scheduler) == 0 and not vh.delivery_delays


def test_queue_purge_drops_what_its_delivery_delay_holds():
    clock = Clock()
    vh = VirtualHost("/", clock=clock)
    dq = delay_queue(vh, ms=500)
    vh.publish(vh.default_exchange, Message("", "dq", C.Basic.Properties().marshal(), b"1"))
    advance(vh, clock, 0.5)
    vh.publish(vh.default_exchange, Message("", "dq", C.Basic.Properties().marshal(), b"2"))
    assert vh.purge_queue(dq) == 1           # the visible one is counted, as RabbitMQ's
    advance(vh, clock, 1.0)
    assert dq.message_count == 0 and len(vh.delivery_delays[dq]) == 0
    vh.publish(vh.default_exchange, Message("", "dq", C.Basic.Properties().marshal(), b"3"))
    advance(vh, clock, 0.5)                  # the queue's delay still works after a purge
    assert [m.body for m in drain(dq, clock.now)] == [b"3"]


@pytest.mark.parametrize("value, text", [
    (-1, "invalid arg 'x-delivery-delay' for queue 'dq' in vhost '/': {value_negative,-1}"),
    ("5", "invalid arg 'x-delivery-delay' for queue 'dq' in vhost '/': "
          "\"expected integer, got longstr\""),
    (1 << 32, "invalid arg 'x-delivery-delay' for queue 'dq' in vhost '/': "
              "{value_too_large,4294967296}"),
])
def test_queue_delivery_delay_validated(value, text):
    vh = VirtualHost("/")
    with pytest.raises(errors.PreconditionFailed) as ei:
        delay_queue(vh, ms=value)
    assert ei.value.reply_text == PF + text


def test_queue_delivery_delay_equivalence_and_zero_is_none():
    vh = VirtualHost("/")
    delay_queue(vh, ms=100)
    with pytest.raises(errors.PreconditionFailed) as ei:
        delay_queue(vh, ms=200)
    assert ei.value.reply_text == PF + "inequivalent arg 'x-delivery-delay' for queue 'dq' " \
        "in vhost '/': received '200' but current is '100'"
    delay_queue(vh, "zero", ms=0)
    assert len(vh.delivery_delays) == 1


def test_queue_delivery_delay_persistent_stored_and_recovered(tmp_path):
    from amqpbroker.store.sqlite import SQLiteStore
    store = SQLiteStore(str(tmp_path))
    broker = Broker(store=store)
    vh = broker.vhosts["/"]
    vh.declare_queue("dq", False, True, False, False, {"x-delivery-delay": 60_000}, None)
    _route, ticket = vh.publish(vh.default_exchange, Message(
        "", "dq", C.Basic.Properties(delivery_mode=2).marshal(), b"kept"))
    assert isinstance(ticket, int) and ticket > store.synced   # confirmed after the commit
    store.close()
    store = SQLiteStore(str(tmp_path))
    broker = Broker(store=store)
    vh = broker.vhosts["/"]
    q = vh.queues["dq"]
    assert q.message_count == 0 and len(vh.delivery_delays[q]) == 1
    vh.scheduler.run_due(vh.scheduler.next_deadline())
    assert q.message_count == 1 and q.take(0).msg.body == b"kept"
    store.close()
