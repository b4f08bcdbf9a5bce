"""The exchange-type conformance suite (amqpbroker/exchanges/): every registered type, and a
test-only decorator type, through the same cases: declare, bind/unbind, route, argument
validation and equivalence, delete, a restart through SQLite; then the registry, and the
Decorator mechanism (DEFERRED and DROPPED count as routed, a deferred message released by
the scheduler, delete cancelling what was scheduled)."""
from __future__ import annotations

import pytest
from pamqp import commands as C

from amqpbroker import config, errors
from amqpbroker.broker import Broker
from amqpbroker.confirms import SAFE
from amqpbroker.exchanges import (DEFERRED, DROPPED, EXCHANGE_TYPES, Decorator, Exchange,
                                  exchange_type, register, unregister)
from amqpbroker.exchanges.routing import route
from amqpbroker.message import Message
from amqpbroker.store import StoreError
from amqpbroker.store.sqlite import SQLiteStore
from amqpbroker.vhost import VirtualHost

from .sim import connected, names


class HoldExchange(Decorator):
    """Test-only: wraps the type named in ``x-hold-type``; a message with a ``hold`` header
    (seconds) is deferred and released by the scheduler, one with ``drop`` is dropped."""
    type = "x-test-hold"
    inner_type_arg = "x-hold-type"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.pending = []

    def route(self, msg, keys):
        headers = msg.headers or {}
        if "drop" in headers:
            return DROPPED
        if "hold" in headers:
            when = self.vhost.clock() + headers["hold"]
            self.pending.append(self.vhost.scheduler.call_at(when, self.release, msg))
            return DEFERRED
        return self.inner.route(msg, keys)

    def delete(self, vhost):
        super().delete(vhost)
        for h in self.pending:
            vhost.scheduler.cancel(h)


@pytest.fixture(autouse=True)
def hold_type():
    register(HoldExchange)
    yield
    unregister(HoldExchange.type)


# per type: declare arguments, a binding (key, arguments), a message (routing key,
# headers) that it routes to the bound queue, and one it does not (None: every message)
RECIPES = {
    "direct": ({}, ("k", {}), ("k", None), ("other", None)),
    "fanout": ({}, ("k", {}), ("anything", None), None),
    "topic": ({}, ("a.*", {}), ("a.b", None), ("b.a", None)),
    "headers": ({}, ("", {"x-match": "all", "h": "v"}), ("", {"h": "v"}), ("", {"h": "w"})),
    "x-test-hold": ({"x-hold-type": "topic"}, ("a.*", {}), ("a.b", None), ("b.a", None)),
    "x-delayed-message": ({"x-delayed-type": "topic"}, ("a.*", {}), ("a.b", None),
                          ("b.a", None)),
    "x-message-deduplication": ({"x-cache-size": 10}, ("k", {}), ("anything", None), None),
}
TYPES = sorted(RECIPES)
PF = "PRECONDITION_FAILED - "


def test_every_registered_type_has_a_recipe():
    assert set(EXCHANGE_TYPES) <= set(RECIPES), "add the new type to RECIPES"
    assert set(EXCHANGE_TYPES) >= {"direct", "fanout", "topic", "headers"}


def msg(rk: str, headers=None, exchange: str = "x") -> Message:
    props = C.Basic.Properties(headers=headers).marshal() if headers is not None else \
        C.Basic.Properties().marshal()
    return Message(exchange, rk, props, b"body")


def declare(vh, name, type_, args=None, durable=False, **kw):
    return vh.declare_exchange(name, type_, False, durable, kw.get("auto_delete", False),
                               False, dict(RECIPES[type_][0] if args is None else args))


def queue(vh, name, durable=False):
    return vh.declare_queue(name, False, durable, False, False, {}, None)


def routed(vh, ex, m) -> list[str]:
    return sorted(q.name for q in route(vh, ex, m).queues)


@pytest.mark.parametrize("type_", TYPES)
def test_declare_and_redeclare(type_):
    vh = VirtualHost("/")
    ex = declare(vh, "x", type_)
    assert isinstance(ex, exchange_type(type_)) and ex.type == type_
    assert vh.exchanges["x"] is ex
    assert declare(vh, "x", type_) is ex                       # equivalent: the same one
    assert vh.declare_exchange("x", "ignored", True, False, False, False, {}) is ex  # passive


@pytest.mark.parametrize("type_", TYPES)
def test_bind_route_unbind(type_):
    vh = VirtualHost("/")
    _, (key, bargs), (hit_rk, hit_h), miss = RECIPES[type_]
    ex = declare(vh, "x", type_)
    q, q2 = queue(vh, "q"), queue(vh, "q2")
    vh.bind("x", q, key, bargs)
    vh.bind("x", q, key, bargs)                                # idempotent
    assert len(ex.bindings) == 1 and len(q.bindings) == 1
    assert routed(vh, ex, msg(hit_rk, hit_h)) == ["q"]
    if miss is not None:
        assert routed(vh, ex, msg(*miss)) == []
        assert not route(vh, ex, msg(*miss))                   # false: unroutable
    vh.bind("x", q2, key, bargs)
    assert routed(vh, ex, msg(hit_rk, hit_h)) == ["q", "q2"]
    vh.unbind("x", q, key, bargs)
    assert routed(vh, ex, msg(hit_rk, hit_h)) == ["q2"] and not q.bindings
    vh.unbind("x", q2, key, bargs)
    assert routed(vh, ex, msg(hit_rk, hit_h)) == [] and not ex.bindings


@pytest.mark.parametrize("type_", TYPES)
def test_route_with_cc_keys_once_each(type_):
    vh = VirtualHost("/")
    _, (key, bargs), (hit_rk, hit_h), _ = RECIPES[type_]
    ex = declare(vh, "x", type_)
    vh.bind("x", queue(vh, "q"), key, bargs)
    assert route(vh, ex, msg(hit_rk, hit_h), [hit_rk, hit_rk, "zzz"]).queues == \
        [vh.queues["q"]]


@pytest.mark.parametrize("type_", TYPES)
def test_as_exchange_to_exchange_destination_and_source(type_):
    vh = VirtualHost("/")
    _, (key, bargs), (hit_rk, hit_h), miss = RECIPES[type_]
    declare(vh, "x", type_)
    src = declare(vh, "src", "fanout")
    dst = declare(vh, "dst", "fanout")
    vh.bind("src", vh.exchanges["x"], "", {})
    vh.bind("x", dst, key, bargs)
    vh.bind("dst", queue(vh, "q"), "", {})
    vh.bind("dst", src, "", {})                                # a cycle is tolerated
    assert vh.exchanges["x"].e2e == 1 and src.e2e == 1
    assert routed(vh, src, msg(hit_rk, hit_h)) == ["q"]
    if miss is not None:
        assert routed(vh, src, msg(*miss)) == []
    vh.unbind("x", dst, key, bargs)
    assert vh.exchanges["x"].e2e == 0
    assert routed(vh, src, msg(hit_rk, hit_h)) == []


@pytest.mark.parametrize("type_", TYPES)
def test_alternate_exchange_for_unroutable(type_):
    vh = VirtualHost("/")
    args = dict(RECIPES[type_][0], **{"alternate-exchange": "ae"})
    ex = declare(vh, "x", type_, args)
    declare(vh, "ae", "fanout")
    vh.bind("ae", queue(vh, "catch"), "", {})
    _, (key, bargs), (hit_rk, hit_h), miss = RECIPES[type_]
    vh.bind("x", queue(vh, "q"), key, bargs)
    assert routed(vh, ex, msg(hit_rk, hit_h)) == ["q"]
    if miss is not None:
        assert routed(vh, ex, msg(*miss)) == ["catch"]


@pytest.mark.parametrize("type_", TYPES)
def test_args_validated_at_declare(type_):
    vh = VirtualHost("/")
    args = dict(RECIPES[type_][0], **{"alternate-exchange": 5})
    with pytest.raises(errors.PreconditionFailed) as ei:
        declare(vh, "x", type_, args)
    assert ei.value.reply_text == PF + "invalid arg 'alternate-exchange' for exchange 'x' in " \
        "vhost '/'"
    assert "x" not in vh.exchanges


@pytest.mark.parametrize("type_", TYPES)
def test_args_equivalence(type_):
    vh = VirtualHost("/")
    declare(vh, "x", type_, dict(RECIPES[type_][0], **{"alternate-exchange": "a1"}))
    with pytest.raises(errors.PreconditionFailed) as ei:
        declare(vh, "x", type_, dict(RECIPES[type_][0], **{"alternate-exchange": "a2"}))
    assert ei.value.reply_text == PF + "inequivalent arg 'alternate-exchange' for exchange 'x' " \
        "in vhost '/': received 'a2' but current is 'a1'"
    other = "fanout" if type_ != "fanout" else "direct"
    with pytest.raises(errors.PreconditionFailed) as ei:
        declare(vh, "x", other)
    assert ei.value.reply_text.startswith(PF + "inequivalent arg 'type' for exchange 'x'")
    # arguments no type compares are not compared (as RabbitMQ)
    declare(vh, "x", type_, dict(RECIPES[type_][0], **{"alternate-exchange": "a1",
                                                       "x-other": 1}))


@pytest.mark.parametrize("type_", TYPES)
def test_delete_drops_bindings_both_ways(type_):
    vh = VirtualHost("/")
    _, (key, bargs), _, _ = RECIPES[type_]
    declare(vh, "x", type_)
    q = queue(vh, "q")
    src = declare(vh, "src", "fanout")
    vh.bind("x", q, key, bargs)
    vh.bind("src", vh.exchanges["x"], "", {})
    with pytest.raises(errors.PreconditionFailed):
        vh.delete_exchange("x", if_unused=True)
    vh.delete_exchange("x", if_unused=False)
    assert "x" not in vh.exchanges and not q.bindings and not src.bindings and src.e2e == 0
    vh.delete_exchange("x", if_unused=False)                   # idempotent


@pytest.mark.parametrize("type_", TYPES)
def test_restart_through_sqlite(type_, tmp_path):
    _, (key, bargs), (hit_rk, hit_h), miss = RECIPES[type_]
    s = SQLiteStore(str(tmp_path))
    vh = Broker(store=s).vhosts["/"]
    declare(vh, "x", type_, dict(RECIPES[type_][0], **{"alternate-exchange": "ae"}),
            durable=True)
    vh.bind("x", queue(vh, "q", durable=True), key, bargs)
    s.sync_blocking()
    s.close()
    s2 = SQLiteStore(str(tmp_path))
    try:
        vh2 = Broker(store=s2).vhosts["/"]
        ex = vh2.exchanges["x"]
        assert type(ex) is exchange_type(type_) and ex.durable
        assert ex.arguments == dict(RECIPES[type_][0], **{"alternate-exchange": "ae"})
        assert routed(vh2, ex, msg(hit_rk, hit_h)) == ["q"]
        if miss is not None:
            assert routed(vh2, ex, msg(*miss)) == []
        declare(vh2, "x", type_, dict(RECIPES[type_][0], **{"alternate-exchange": "ae"}),
                durable=True)                                  # still equivalent
    finally:
        s2.close()


# ---------------------------------------------------------------------- the registry


def test_unknown_type_refused_at_declare():
    vh = VirtualHost("/")
    with pytest.raises(errors.PreconditionFailed) as ei:
        vh.declare_exchange("x", "x-nope", False, False, False, False, {})
    assert ei.value.reply_text == PF + "unknown exchange type 'x-nope'"


def test_register_refuses_a_second_type_of_the_same_name():
    class Other(Exchange):
        type = "direct"
    with pytest.raises(ValueError):
        register(Other)
    register(exchange_type("direct"))                          # the same class again: fine
    with pytest.raises(ValueError):
        register(Decorator)                                    # no name


def test_config_types_come_from_the_registry(tmp_path):
    path = tmp_path / "b.yaml"
    path.write_text("definitions:\n  exchanges:\n    - {name: x, type: x-test-hold, "
                    "arguments: {x-hold-type: direct}}\n")
    assert config.load(str(path)).definitions.exchanges[0].type == "x-test-hold"
    unregister("x-test-hold")
    with pytest.raises(config.ConfigError) as ei:
        config.load(str(path))
    assert str(ei.value).endswith("definitions.exchanges[0].type: expected one of direct, "
                                  "fanout, topic, headers, x-delayed-message, "
                                  "x-message-deduplication, got 'x-test-hold'")


def test_unknown_type_in_the_store_is_an_error_naming_it(tmp_path):
    s = SQLiteStore(str(tmp_path))
    Broker(store=s).vhosts["/"].declare_exchange("held", "x-test-hold", False, True, False,
                                                 False, {"x-hold-type": "direct"})
    s.sync_blocking()
    s.close()
    unregister("x-test-hold")
    s2 = SQLiteStore(str(tmp_path))
    try:
        with pytest.raises(StoreError) as ei:
            Broker(store=s2)
        text = str(ei.value)
        assert "\n" not in text
        assert text.endswith("exchange 'held' in vhost '/' has the unknown type 'x-test-hold'")
    finally:
        s2.close()


# ---------------------------------------------------------------------- Decorator


def test_decorator_validates_its_inner_type():
    vh = VirtualHost("/")
    for args in ({}, {"x-hold-type": "x-nope"}, {"x-hold-type": 1},
                 {"x-hold-type": "x-test-hold"}):
        with pytest.raises(errors.PreconditionFailed) as ei:
            vh.declare_exchange("h", "x-test-hold", False, False, False, False, args)
        assert ei.value.reply_text == PF + \
            "Invalid argument, 'x-hold-type' must be an existing exchange type"
    # the inner type's binding validation applies
    declare(vh, "h", "x-test-hold", {"x-hold-type": "headers"})
    with pytest.raises(errors.PreconditionFailed):
        vh.bind("h", queue(vh, "q"), "", {"x-match": "some"})


def test_decorator_inner_type_compared_on_redeclare():
    vh = VirtualHost("/")
    declare(vh, "h", "x-test-hold", {"x-hold-type": "direct"})
    with pytest.raises(errors.PreconditionFailed) as ei:
        declare(vh, "h", "x-test-hold", {"x-hold-type": "fanout"})
    assert ei.value.reply_text == PF + "inequivalent arg 'x-hold-type' for exchange 'h' in " \
        "vhost '/': received 'fanout' but current is 'direct'"


def test_deferred_and_dropped_count_as_routed_without_alternate_exchange():
    vh = VirtualHost("/")
    ex = declare(vh, "h", "x-test-hold", {"x-hold-type": "direct", "alternate-exchange": "ae"})
    declare(vh, "ae", "fanout")
    vh.bind("ae", queue(vh, "catch"), "", {})
    vh.bind("h", queue(vh, "q"), "k", {})
    r = route(vh, ex, msg("k", {"hold": 5}))
    assert r and r.deferred and not r.dropped and r.queues == []
    r = route(vh, ex, msg("k", {"drop": 1}))
    assert r and r.dropped and not r.deferred and r.queues == []
    r = route(vh, ex, msg("nothing", None))
    assert [q.name for q in r.queues] == ["catch"]             # routed by neither: the AE


def test_deferred_reached_through_an_exchange_binding():
    vh = VirtualHost("/")
    src = declare(vh, "src", "fanout")
    declare(vh, "h", "x-test-hold", {"x-hold-type": "direct"})
    vh.bind("src", vh.exchanges["h"], "", {})
    vh.bind("src", queue(vh, "direct"), "", {})
    r = route(vh, src, msg("k", {"hold": 1}))
    assert r.deferred and [q.name for q in r.queues] == ["direct"]


def test_deferred_message_released_by_the_scheduler():
    now = [100.0]
    vh = VirtualHost("/", clock=lambda: now[0])
    ex = declare(vh, "h", "x-test-hold", {"x-hold-type": "topic"})
    q = queue(vh, "q")
    vh.bind("h", q, "a.*", {})
    r, ticket = vh.publish(ex, msg("a.b", {"hold": 5}, exchange="h"))
    assert r.deferred and ticket is SAFE and q.message_count == 0
    assert vh.scheduler.next_deadline() == 105.0
    now[0] = 104.0
    assert vh.scheduler.run_due(104.0) == 0 and q.message_count == 0
    now[0] = 105.0
    assert vh.scheduler.run_due(105.0) == 1
    assert q.message_count == 1 and q.take(105.0).msg.routing_key == "a.b"


def test_released_message_follows_the_decorators_exchange_bindings():
    vh = VirtualHost("/", clock=lambda: 0.0)
    ex = declare(vh, "h", "x-test-hold", {"x-hold-type": "direct"})
    declare(vh, "f", "fanout")
    vh.bind("h", vh.exchanges["f"], "k", {})
    vh.bind("f", queue(vh, "q"), "", {})
    vh.publish(ex, msg("k", {"hold": 1}, exchange="h"))
    assert vh.scheduler.run_due(1.0) == 1 and vh.queues["q"].message_count == 1
    vh.unbind("h", vh.exchanges["f"], "k", {})
    assert ex.inner.e2e == ex.e2e == 0


def test_delete_cancels_what_the_decorator_scheduled():
    vh = VirtualHost("/", clock=lambda: 0.0)
    ex = declare(vh, "h", "x-test-hold", {"x-hold-type": "fanout"})
    q = queue(vh, "q")
    vh.bind("h", q, "", {})
    vh.publish(ex, msg("", {"hold": 1}, exchange="h"))
    assert len(vh.scheduler) == 1
    vh.delete_exchange("h", if_unused=False)
    assert len(vh.scheduler) == 0
    assert vh.scheduler.run_due(10.0) == 0 and q.message_count == 0
    assert ex.release(msg("", None)) is None                   # deleted: nothing routed


def test_deferred_and_dropped_through_the_wire_mandatory_and_confirm():
    """No Basic.Return for a mandatory message the type took; the confirm is an ack."""
    c = connected()
    c.call(1, C.Exchange.Declare(exchange="h", exchange_type="x-test-hold",
                                 arguments={"x-hold-type": "direct"}), "Exchange.DeclareOk")
    c.declare(1, "q")
    c.call(1, C.Queue.Bind(queue="q", exchange="h", routing_key="k"), "Queue.BindOk")
    c.rpc(1, C.Confirm.Select())
    for headers in ({"hold": 1}, {"drop": 1}):
        frames = c.publish(1, "h", "k", b"x", C.Basic.Properties(headers=headers),
                           mandatory=True)
        assert names(frames) == ["Basic.Ack"]
    assert c.get(1, "q") is None
    frames = c.publish(1, "h", "nowhere", b"x", mandatory=True)
    assert names(frames)[0] == "Basic.Return" and names(frames)[-1] == "Basic.Ack"
    frames = c.publish(1, "h", "k", b"now", mandatory=True)
    assert names(frames) == ["Basic.Ack"] and c.get(1, "q").body == b"now"
