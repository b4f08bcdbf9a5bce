"""Filter policies on bindings (exchanges/filtered.py): ``x-filter-policy`` and
``x-filter-policy-scope`` on every registered exchange type (the conformance recipes),
both scopes, refusals at bind (406 on the wire), exchange-to-exchange and alternate
exchanges, unbind, a restart through SQLite, definitions, and that nothing is decoded for
bindings without a policy."""
from __future__ import annotations

import json

import pytest
from pamqp import commands as C

from amqpbroker import definitions, errors
from amqpbroker.broker import Broker
from amqpbroker.exchanges import filtered, register, unregister
from amqpbroker.exchanges.routing import route
from amqpbroker.message import Message
from amqpbroker.store.sqlite import SQLiteStore
from amqpbroker.vhost import VirtualHost

from .sim import close_frame, connected
from .test_exchange_types import RECIPES, TYPES, HoldExchange, declare, queue, routed

POLICY = json.dumps({"color": ["red", {"prefix": "bl"}], "size": [{"numeric": [">", 5]}]})


@pytest.fixture(autouse=True)
def hold_type():
    register(HoldExchange)
    yield
    unregister(HoldExchange.type)


def msg(rk: str, headers=None, body: bytes = b"body", **props) -> Message:
    p = C.Basic.Properties(headers=headers, **props).marshal()
    return Message("x", rk, p, body)


def with_policy(args: dict, policy=POLICY, scope=None) -> dict:
    out = dict(args, **{"x-filter-policy": policy})
    if scope is not None:
        out["x-filter-policy-scope"] = scope
    return out


@pytest.mark.parametrize("type_", TYPES)
def test_routes_when_the_type_routes_and_the_policy_matches(type_):
    _, (key, bargs), (hit_rk, hit_h), miss = RECIPES[type_]
    vh = VirtualHost("/")
    ex = declare(vh, "x", type_)
    vh.bind("x", queue(vh, "q"), key, with_policy(bargs))
    good = {"color": "blue", "size": 6}
    assert routed(vh, ex, msg(hit_rk, dict(hit_h or {}, **good))) == ["q"]
    assert routed(vh, ex, msg(hit_rk, dict(hit_h or {}, color="green", size=6))) == []
    assert routed(vh, ex, msg(hit_rk, dict(hit_h or {}, color="red"))) == []  # size absent
    if miss is not None:  # the policy matches, the type does not route
        assert routed(vh, ex, msg(miss[0], dict(miss[1] or {}, **good))) == []
    vh.unbind("x", vh.queues["q"], key, with_policy(bargs))
    assert ex.e2e == 0 and not ex.bindings
    assert routed(vh, ex, msg(hit_rk, dict(hit_h or {}, **good))) == []


def test_bindings_or_and_an_unfiltered_binding_takes_everything():
    vh = VirtualHost("/")
    ex = declare(vh, "x", "fanout")
    q = queue(vh, "q")
    vh.bind("x", q, "a", with_policy({}, '{"c": ["1"]}'))
    vh.bind("x", q, "b", with_policy({}, '{"c": ["2"]}'))
    assert routed(vh, ex, msg("k", {"c": "1"})) == ["q"]
    assert routed(vh, ex, msg("k", {"c": "2"})) == ["q"]
    assert routed(vh, ex, msg("k", {"c": "3"})) == []
    vh.bind("x", q, "c", {})
    r = route(vh, ex, msg("k", {"c": "1"}))
    assert [x.name for x in r.queues] == ["q"]  # once
    assert routed(vh, ex, msg("k", {"c": "3"})) == ["q"]


def test_headers_scope_sees_properties_and_routing_key_a_header_wins():
    vh = VirtualHost("/")
    ex = declare(vh, "x", "topic")
    vh.bind("x", queue(vh, "q"), "#", with_policy({}, json.dumps({
        "content_type": ["application/json"], "priority": [{"numeric": [">=", 5]}],
        "type": ["order"], "routing_key": [{"prefix": "eu."}]})))
    props = dict(content_type="application/json", priority=7, message_type="order")
    assert routed(vh, ex, msg("eu.fr", None, **props)) == ["q"]
    assert routed(vh, ex, msg("us.ny", None, **props)) == []
    assert routed(vh, ex, msg("eu.fr", None, **dict(props, priority=4))) == []
    # a header of the same name wins over the property
    assert routed(vh, ex, msg("eu.fr", {"type": "refund"}, **props)) == []
    assert routed(vh, ex, msg("eu.fr", {"priority": 9}, **dict(props, priority=1))) == ["q"]
    vh.bind("x", queue(vh, "r"), "#", with_policy({}, json.dumps({
        "app_id": ["svc"], "timestamp": [{"numeric": [">", 100]}],
        "delivery_mode": [2], "message_id": [{"exists": True}]})))
    m = msg("z", None, app_id="svc", timestamp=__import__("datetime").datetime.fromtimestamp(
        1000, __import__("datetime").timezone.utc), delivery_mode=2, message_id="m1")
    assert routed(vh, ex, m) == ["r"]


def test_body_scope():
    vh = VirtualHost("/")
    ex = declare(vh, "x", "direct")
    policy = json.dumps({"order": {"country": ["FR"], "total": [{"numeric": [">", 10]}]}})
    vh.bind("x", queue(vh, "q"), "k", with_policy({}, policy, "body"))
    assert routed(vh, ex, msg("k", body=b'{"order": {"country": "FR", "total": 12}}')) == ["q"]
    assert routed(vh, ex, msg("k", body=b'{"order": {"country": "FR", "total": 2}}')) == []
    assert routed(vh, ex, msg("k", body=b"not json")) == []
    assert routed(vh, ex, msg("k", body=b"\xff\xfe")) == []
    assert routed(vh, ex, msg("k", {"order": "x"}, body=b"[1]")) == []


def test_field_table_policy_on_the_wire_and_406_naming_the_problem():
    c = connected()
    c.declare(1, "q")
    c.call(1, C.Queue.Bind(queue="q", exchange="amq.fanout", arguments={
        "x-filter-policy": {"color": ["red", {"anything-but": ["blue"]}]}}), "Queue.BindOk")
    c.publish(1, "amq.fanout", "", b"1", C.Basic.Properties(headers={"color": "green"}))
    c.publish(1, "amq.fanout", "", b"2", C.Basic.Properties(headers={"color": "blue"}))
    c.publish(1, "amq.fanout", "", b"3", C.Basic.Properties(headers={"size": 1}))
    assert c.get(1, "q", no_ack=True).body == b"1"
    assert c.get(1, "q", no_ack=True) is None
    frames = c.rpc(1, C.Queue.Bind(queue="q", exchange="amq.fanout", arguments={
        "x-filter-policy": '{"a": [{"numeric": [">", 5, "<", 1]}]}'}))
    close = close_frame(frames, 1)
    assert close.reply_code == 406
    assert "invalid x-filter-policy: key 'a': the numeric range's lower bound 5" in \
        close.reply_text


@pytest.mark.parametrize("args, text", [
    ({"x-filter-policy": "{"}, "invalid x-filter-policy: the policy is not valid JSON"),
    ({"x-filter-policy": 5}, "must be a JSON string or a table"),
    ({"x-filter-policy": '{"a": ["x"]}', "x-filter-policy-scope": "MessageBody"},
     "invalid x-filter-policy-scope 'MessageBody'"),
    ({"x-filter-policy-scope": "body"}, "x-filter-policy-scope given without x-filter-policy"),
    ({"x-filter-policy": json.dumps({k: ["x"] for k in "abcdef"})}, "at most 5"),
    ({"x-filter-policy": json.dumps({"a": [str(i) for i in range(151)]})}, "at most 150"),
])
def test_refused_at_bind(args, text):
    vh = VirtualHost("/")
    ex = declare(vh, "x", "topic")
    with pytest.raises(errors.PreconditionFailed, match=None) as e:
        vh.bind("x", queue(vh, "q"), "#", args)
    assert text in str(e.value)
    assert not ex.bindings and ex.e2e == 0


def test_exchange_to_exchange_and_alternate_exchange():
    vh = VirtualHost("/")
    src = declare(vh, "x", "fanout", {"alternate-exchange": "ae"})
    declare(vh, "mid", "fanout")
    declare(vh, "ae", "fanout")
    vh.bind("mid", queue(vh, "q"), "", {})
    vh.bind("ae", queue(vh, "lost"), "", with_policy({}, '{"keep": [true]}'))
    vh.bind("x", vh.exchanges["mid"], "", with_policy({}, '{"c": ["1"]}'))
    assert routed(vh, src, msg("k", {"c": "1"})) == ["q"]
    assert routed(vh, src, msg("k", {"c": "2", "keep": True})) == ["lost"]  # the AE's filter
    assert routed(vh, src, msg("k", {"c": "2"})) == []


def test_headers_exchange_with_x_does_not_match_the_filter_arguments():
    vh = VirtualHost("/")
    ex = declare(vh, "x", "headers")
    vh.bind("x", queue(vh, "q"), "", with_policy({"x-match": "all-with-x", "h": "v"},
                                                 '{"c": ["1"]}', "headers"))
    assert routed(vh, ex, msg("", {"h": "v", "c": "1"})) == ["q"]
    assert routed(vh, ex, msg("", {"h": "v", "c": "2"})) == []


def test_decoded_once_per_message_and_only_for_filtered_bindings(monkeypatch):
    calls = []
    real = filtered.body_doc
    monkeypatch.setattr(filtered, "body_doc", lambda body: calls.append(1) or real(body))
    vh = VirtualHost("/")
    ex = declare(vh, "x", "fanout")
    for i in range(3):
        vh.bind("x", queue(vh, f"q{i}"), "", with_policy({}, json.dumps({"n": [i]}), "body"))
    assert routed(vh, ex, msg("k", body=b'{"n": 1}')) == ["q1"]
    assert len(calls) == 1
    plain = declare(vh, "p", "fanout")
    vh.bind("p", queue(vh, "pq"), "", {})
    m = msg("k", {"h": 1}, body=b'{"n": 1}')
    assert routed(vh, plain, m) == ["pq"]
    assert len(calls) == 1 and m._properties is None  # neither body nor headers decoded


def test_restart_through_sqlite_and_definitions(tmp_path):
    s = SQLiteStore(str(tmp_path))
    b = Broker(store=s)
    vh = b.vhosts["/"]
    declare(vh, "x", "fanout", durable=True)
    vh.bind("x", queue(vh, "q", durable=True), "", with_policy({}, '{"c": ["1"]}'))
    s.sync_blocking()
    s.close()
    s2 = SQLiteStore(str(tmp_path))
    try:
        b2 = Broker(store=s2)
        vh2 = b2.vhosts["/"]
        ex = vh2.exchanges["x"]
        assert routed(vh2, ex, msg("k", {"c": "1"})) == ["q"]
        assert routed(vh2, ex, msg("k", {"c": "2"})) == []
        defs = definitions.export(b2)
        [bd] = [d for d in defs["bindings"] if d["source"] == "x"]
        assert bd["arguments"] == {"x-filter-policy": '{"c": ["1"]}'}
    finally:
        s2.close()
    b3 = Broker()
    definitions.apply(b3, defs)
    vh3 = b3.vhosts["/"]
    assert routed(vh3, vh3.exchanges["x"], msg("k", {"c": "1"})) == ["q"]
    assert routed(vh3, vh3.exchanges["x"], msg("k", {"c": "2"})) == []
