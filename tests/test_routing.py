"""exchanges/ and vhost.py routing, declare equivalence and naming rules, without a
connection (plus a few checks through the simulator where the channel is involved)."""
from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands as C

from amqpbroker import errors
from amqpbroker.exchanges import (HeadersExchange, TopicExchange, header_value_equal,
                                  headers_match, split_topic, topic_match)
from amqpbroker.exchanges.routing import route
from amqpbroker.message import Message
from amqpbroker.vhost import VirtualHost

from .sim import close_frame, connected, names


def match(pattern: str, key: str) -> bool:
    return topic_match(split_topic(pattern), split_topic(key))


def msg(rk: str = "", headers: dict | None = None) -> Message:
    props = C.Basic.Properties(headers=headers).marshal() if headers is not None else \
        C.Basic.Properties().marshal()
    return Message("x", rk, props, b"body")


def declare_queue(vh, name, **kw):
    args = dict(passive=False, durable=False, exclusive=False, auto_delete=False,
                arguments={}, owner=None)
    args.update(kw)
    return vh.declare_queue(name, args["passive"], args["durable"], args["exclusive"],
                            args["auto_delete"], args["arguments"], args["owner"])


def declare_exchange(vh, name, type_="direct", **kw):
    args = dict(passive=False, durable=False, auto_delete=False, internal=False, arguments={})
    args.update(kw)
    return vh.declare_exchange(name, type_, args["passive"], args["durable"],
                               args["auto_delete"], args["internal"], args["arguments"])


def routed(vh, exchange, rk="", headers=None) -> list[str]:
    ex = vh.exchanges[exchange]
    return sorted(q.name for q in route(vh, ex, msg(rk, headers)).queues)


# ---------------------------------------------------------------------- topic


@pytest.mark.parametrize("pattern, key, expected", [
    ("a.b.c", "a.b.c", True),
    ("a.b.c", "a.b", False),
    ("a.*.c", "a.b.c", True),
    ("a.*.c", "a.b.b.c", False),
    ("*", "a", True),
    ("*", "", False),          # "" has zero words, * needs one
    ("*", "a.b", False),
    ("*.*", "a.", True),       # "a." is ["a", ""]: * matches the empty word
    ("a.*", "a.", True),
    ("a..b", "a..b", True),    # empty words are words
    ("a.*.b", "a..b", True),
    ("a.b", "a..b", False),
    ("#", "", True),           # # matches everything including ""
    ("#", "a.b.c", True),
    ("#", ".", True),
    ("a.#", "a", True),        # # matches zero words
    ("a.#", "a.b.c", True),
    ("a.#", "b", False),
    ("#.a", "a", True),
    ("#.a", "x.y.a", True),
    ("#.a", "a.x", False),
    ("a.#.b", "a.b", True),
    ("a.#.b", "a.x.y.b", True),
    ("a.#.b", "a.x.y.c", False),
    ("#.#", "", True),
    ("#.*", "", False),
    ("#.*", "a", True),
    ("*.#", "a.b", True),
    ("#.b.#", "a.b.c", True),
    ("#.b.#", "b", True),
    ("#.b.#", "a.c", False),
    ("", "", True),
    ("", "a", False),
    ("a", "", False),
    ("*.*.*", "a.b", False),
])
def test_topic_match(pattern, key, expected):
    assert match(pattern, key) is expected


def test_split_topic():
    assert split_topic("") == ()
    assert split_topic("a..b") == ("a", "", "b")
    assert split_topic(".") == ("", "")


_word = st.sampled_from(["a", "b", "", "c"])


def _reference_match(p: tuple, w: tuple) -> bool:
    """An obviously correct recursive matcher."""
    if not p:
        return not w
    if p[0] == "#":
        return any(_reference_match(p[1:], w[i:]) for i in range(len(w) + 1))
    if not w:
        return False
    return (p[0] == "*" or p[0] == w[0]) and _reference_match(p[1:], w[1:])


@given(st.lists(st.sampled_from(["a", "b", "", "*", "#"]), max_size=6),
       st.lists(_word, max_size=6))
def test_topic_match_against_reference(pattern, words):
    assert topic_match(tuple(pattern), tuple(words)) == \
        _reference_match(tuple(pattern), tuple(words))


def test_topic_exchange_routes_once_per_queue():
    vh = VirtualHost("/")
    q = declare_queue(vh, "q")
    for key in ("a.*", "#", "a.b"):
        vh.bind("amq.topic", q, key, {})
    assert routed(vh, "amq.topic", "a.b") == ["q"]
    assert routed(vh, "amq.topic", "") == ["q"]


def test_topic_binding_change_invalidates_cache():
    vh = VirtualHost("/")
    q = declare_queue(vh, "q")
    assert routed(vh, "amq.topic", "a.b") == []
    vh.bind("amq.topic", q, "a.*", {})
    assert routed(vh, "amq.topic", "a.b") == ["q"]
    vh.unbind("amq.topic", q, "a.*", {})
    assert routed(vh, "amq.topic", "a.b") == []


# ---------------------------------------------------------------------- direct / fanout


def test_direct_exact_match():
    vh = VirtualHost("/")
    a, b = declare_queue(vh, "a"), declare_queue(vh, "b")
    vh.bind("amq.direct", a, "k", {})
    vh.bind("amq.direct", b, "K", {})
    vh.bind("amq.direct", b, "k", {})
    assert routed(vh, "amq.direct", "k") == ["a", "b"]
    assert routed(vh, "amq.direct", "K") == ["b"]
    assert routed(vh, "amq.direct", "k ") == []


def test_fanout_ignores_key_and_duplicates():
    vh = VirtualHost("/")
    a = declare_queue(vh, "a")
    vh.bind("amq.fanout", a, "x", {})
    vh.bind("amq.fanout", a, "y", {})
    vh.bind("amq.fanout", a, "x", {})  # idempotent
    assert routed(vh, "amq.fanout", "whatever") == ["a"]
    assert len(vh.exchanges["amq.fanout"].bindings) == 2


def test_default_exchange_routes_by_queue_name():
    c = connected()
    c.declare(1, "q")
    c.declare(1, "r")
    c.publish(1, "", "q", b"1")
    frames = c.publish(1, "", "other", b"2", mandatory=True)
    assert names(frames)[0] == "Basic.Return"
    assert c.broker.vhosts["/"].queues["q"].message_count == 1
    assert c.broker.vhosts["/"].queues["r"].message_count == 0


# ---------------------------------------------------------------------- headers


@pytest.mark.parametrize("args, headers, expected", [
    ({"a": 1, "b": "x"}, {"a": 1, "b": "x"}, True),
    ({"a": 1, "b": "x"}, {"a": 1, "b": "x", "c": 3}, True),
    ({"a": 1, "b": "x"}, {"a": 1}, False),
    ({"x-match": "all", "a": 1, "b": "x"}, {"a": 1, "b": "y"}, False),
    ({"x-match": "any", "a": 1, "b": "x"}, {"a": 1, "b": "y"}, True),
    ({"x-match": "any", "a": 1, "b": "x"}, {"a": 2}, False),
    ({"x-match": "any", "a": 1}, None, False),
    ({"x-match": "all"}, {"q": 1}, True),        # all with no non-x args: everything
    ({}, None, True),
    ({"x-match": "any"}, {"q": 1}, False),       # any with none: nothing
    # x- keys are skipped in all / any ...
    ({"x-match": "all", "x-k": "v", "a": 1}, {"a": 1}, True),
    ({"x-match": "any", "x-k": "v"}, {"x-k": "v"}, False),
    # ... and compared in the -with-x modes
    ({"x-match": "all-with-x", "x-k": "v", "a": 1}, {"a": 1}, False),
    ({"x-match": "all-with-x", "x-k": "v", "a": 1}, {"a": 1, "x-k": "v"}, True),
    ({"x-match": "any-with-x", "x-k": "v", "a": 1}, {"x-k": "v"}, True),
    ({"x-match": "any-with-x", "x-k": "v"}, {"x-k": "w"}, False),
    # void binding value: the header only has to be present
    ({"a": None}, {"a": "anything"}, True),
    ({"a": None}, {"a": None}, True),
    ({"a": None}, {"b": 1}, False),
    ({"x-match": "any", "a": None, "b": 2}, {"a": 0}, True),
    # values compare by value across numeric types, but a bool is not a number
    ({"a": 1}, {"a": 1.0}, True),
    ({"a": 1.0}, {"a": 1}, True),
    ({"a": 1}, {"a": Decimal(1)}, False),  # 3.10: a decimal is {scale, digits}, never a number
    ({"a": 2**40}, {"a": 2**40}, True),
    ({"a": True}, {"a": 1}, False),
    ({"a": 1}, {"a": True}, False),
    ({"a": True}, {"a": True}, True),
    ({"a": False}, {"a": 0}, False),
    ({"a": "1"}, {"a": 1}, False),
    ({"a": "v"}, {"a": b"v"}, True),
])
def test_headers_match(args, headers, expected):
    assert headers_match(args, headers) is expected


def test_header_value_equal_nested():
    assert header_value_equal({"a": [1, 2]}, {"a": [1, 2]})
    assert not header_value_equal([1, 2], [1, 3])


@pytest.mark.parametrize("mode", ["none", "ALL", "", 1])
def test_headers_invalid_x_match_406(mode):
    ex = HeadersExchange("h")
    with pytest.raises(errors.PreconditionFailed):
        ex.validate_binding("", {"x-match": mode})


def test_headers_exchange_routes_on_message_headers():
    vh = VirtualHost("/")
    a, b = declare_queue(vh, "a"), declare_queue(vh, "b")
    vh.bind("amq.headers", a, "", {"x-match": "all", "format": "pdf", "type": "report"})
    vh.bind("amq.headers", b, "", {"x-match": "any", "format": "zip", "type": "report"})
    assert routed(vh, "amq.headers", "", {"format": "pdf", "type": "report"}) == ["a", "b"]
    assert routed(vh, "amq.headers", "", {"format": "zip"}) == ["b"]
    assert routed(vh, "amq.headers", "", {"format": "pdf"}) == []
    assert routed(vh, "amq.headers", "ignored-key", None) == []


def test_headers_bind_bad_x_match_through_channel():
    c = connected()
    c.declare(1, "q")
    frames = c.rpc(1, C.Queue.Bind(queue="q", exchange="amq.headers", routing_key="",
                                   arguments={"x-match": "some"}))
    assert close_frame(frames, 1).reply_code == 406


# ---------------------------------------------------------------------- e2e / AE


def test_e2e_binding_with_cycle_delivers_once_per_queue():
    vh = VirtualHost("/")
    x1 = declare_exchange(vh, "x1", "fanout")
    x2 = declare_exchange(vh, "x2", "fanout")
    x3 = declare_exchange(vh, "x3", "topic")
    q1, q2, q3 = (declare_queue(vh, n) for n in ("q1", "q2", "q3"))
    vh.bind("x1", x2, "", {})
    vh.bind("x2", x1, "", {})     # a cycle
    vh.bind("x2", x3, "", {})
    vh.bind("x3", x1, "#", {})    # another
    vh.bind("x1", q1, "", {})
    vh.bind("x2", q1, "", {})     # q1 reachable twice
    vh.bind("x2", q2, "", {})
    vh.bind("x3", q3, "a.*", {})
    assert routed(vh, "x1", "a.b") == ["q1", "q2", "q3"]
    assert routed(vh, "x3", "zzz") == ["q1", "q2"]
    assert routed(vh, "x3", "a.b") == ["q1", "q2", "q3"]
    for q in (q1, q2, q3):
        q.ready.clear()
    vh.publish(x1, msg("a.b"))
    assert [q.message_count for q in (q1, q2, q3)] == [1, 1, 1]
    assert x1 is vh.exchanges["x1"]


def test_alternate_exchange_chain():
    vh = VirtualHost("/")
    declare_exchange(vh, "x1", "direct", arguments={"alternate-exchange": "x2"})
    declare_exchange(vh, "x2", "direct", arguments={"alternate-exchange": "x3"})
    x3 = declare_exchange(vh, "x3", "fanout")
    q_main, q_ae2, q_ae3 = (declare_queue(vh, n) for n in ("main", "ae2", "ae3"))
    vh.bind("x1", q_main, "k", {})
    vh.bind("x2", q_ae2, "k2", {})
    vh.bind("x3", q_ae3, "", {})
    assert routed(vh, "x1", "k") == ["main"]      # routed: AE not consulted
    assert routed(vh, "x1", "k2") == ["ae2"]      # first AE
    assert routed(vh, "x1", "other") == ["ae3"]   # AE of the AE
    vh.unbind("x3", q_ae3, "", {})
    assert routed(vh, "x1", "other") == []
    assert x3.name == "x3"


def test_alternate_exchange_cycle_and_missing():
    vh = VirtualHost("/")
    declare_exchange(vh, "a", "direct", arguments={"alternate-exchange": "b"})
    declare_exchange(vh, "b", "direct", arguments={"alternate-exchange": "a"})
    declare_exchange(vh, "c", "direct", arguments={"alternate-exchange": "does-not-exist"})
    assert routed(vh, "a", "k") == []
    assert routed(vh, "c", "k") == []


def test_alternate_exchange_counts_as_routed_no_return():
    c = connected()
    c.call(1, C.Exchange.Declare(exchange="ae", exchange_type="fanout"), "Exchange.DeclareOk")
    c.call(1, C.Exchange.Declare(exchange="main", exchange_type="direct",
                                 arguments={"alternate-exchange": "ae"}), "Exchange.DeclareOk")
    c.declare(1, "catch")
    c.call(1, C.Queue.Bind(queue="catch", exchange="ae"), "Queue.BindOk")
    c.rpc(1, C.Confirm.Select())
    frames = c.publish(1, "main", "nothing-bound", b"x", mandatory=True)
    assert names(frames) == ["Basic.Ack"]
    assert c.get(1, "catch").body == b"x"


def test_exchange_bind_through_channel():
    c = connected()
    c.call(1, C.Exchange.Declare(exchange="src", exchange_type="topic"), "Exchange.DeclareOk")
    c.call(1, C.Exchange.Declare(exchange="dst", exchange_type="fanout"), "Exchange.DeclareOk")
    c.declare(1, "q")
    c.call(1, C.Queue.Bind(queue="q", exchange="dst"), "Queue.BindOk")
    c.call(1, C.Exchange.Bind(destination="dst", source="src", routing_key="a.#"),
           "Exchange.BindOk")
    c.publish(1, "src", "a.b", b"1")
    c.publish(1, "src", "b", b"2")
    assert c.get(1, "q", no_ack=True).body == b"1"
    assert c.get(1, "q") is None
    # unbind-ok is method 51; unbinding twice is fine
    for _ in range(2):
        frames = c.rpc(1, C.Exchange.Unbind(destination="dst", source="src",
                                            routing_key="a.#"))
        assert names(frames) == ["Exchange.UnbindOk"]
    c.publish(1, "src", "a.b", b"3")
    assert c.get(1, "q") is None


# ---------------------------------------------------------------------- equivalence


def reply_text(excinfo) -> str:
    return excinfo.value.reply_text


def test_queue_durable_inequivalent_text():
    vh = VirtualHost("/")
    declare_queue(vh, "q", durable=False)
    with pytest.raises(errors.PreconditionFailed) as e:
        declare_queue(vh, "q", durable=True)
    assert reply_text(e) == ("PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'q' "
                             "in vhost '/': received 'true' but current is 'false'")


def test_queue_auto_delete_inequivalent_text():
    vh = VirtualHost("/")
    declare_queue(vh, "q", auto_delete=True)
    with pytest.raises(errors.PreconditionFailed) as e:
        declare_queue(vh, "q")
    assert reply_text(e) == ("PRECONDITION_FAILED - inequivalent arg 'auto_delete' for queue "
                             "'q' in vhost '/': received 'false' but current is 'true'")


def test_queue_arg_inequivalent_text():
    vh = VirtualHost("/")
    declare_queue(vh, "q", arguments={"x-queue-mode": "lazy"})
    with pytest.raises(errors.PreconditionFailed) as e:
        declare_queue(vh, "q")
    assert reply_text(e) == (
        "PRECONDITION_FAILED - inequivalent arg 'x-queue-mode' for queue 'q' in vhost '/': "
        "received none but current is the value 'lazy' of type 'longstr'")
    with pytest.raises(errors.PreconditionFailed) as e:
        declare_queue(vh, "q", arguments={"x-queue-mode": "default"})
    # both present, same type class: plain values (rabbit_misc:assert_args_equivalence)
    assert "received 'default' but current is 'lazy'" in reply_text(e)


def test_queue_equivalence_rules():
    vh = VirtualHost("/")
    declare_queue(vh, "q", arguments={"x-queue-version": 2, "x-custom": 1})
    # identical redeclare; unknown args are neither compared nor validated
    declare_queue(vh, "q", arguments={"x-queue-version": 2, "x-custom": "other"})
    # absent x-queue-type equals classic
    declare_queue(vh, "q", arguments={"x-queue-version": 2, "x-queue-type": "classic"})
    # passive compares nothing
    declare_queue(vh, "q", passive=True, durable=True, auto_delete=True)
    with pytest.raises(errors.PreconditionFailed) as e:
        declare_queue(vh, "q", arguments={"x-queue-version": 1})
    assert reply_text(e).endswith(
        "inequivalent arg 'x-queue-version' for queue 'q' in vhost '/': received '1' but "
        "current is '2'")


def test_exchange_type_inequivalent_text():
    vh = VirtualHost("/")
    declare_exchange(vh, "x", "direct")
    with pytest.raises(errors.PreconditionFailed) as e:
        declare_exchange(vh, "x", "fanout")
    assert reply_text(e) == ("PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'x' "
                             "in vhost '/': received 'fanout' but current is 'direct'")
    with pytest.raises(errors.PreconditionFailed) as e:
        declare_exchange(vh, "x", "direct", durable=True)
    assert reply_text(e) == ("PRECONDITION_FAILED - inequivalent arg 'durable' for exchange "
                             "'x' in vhost '/': received 'true' but current is 'false'")


def test_exchange_only_alternate_exchange_arg_compared():
    vh = VirtualHost("/")
    declare_exchange(vh, "x", "direct", arguments={"alternate-exchange": "ae", "other": 1})
    declare_exchange(vh, "x", "direct", arguments={"alternate-exchange": "ae", "other": 2})
    with pytest.raises(errors.PreconditionFailed) as e:
        declare_exchange(vh, "x", "direct", arguments={"alternate-exchange": "ae2"})
    assert "inequivalent arg 'alternate-exchange' for exchange 'x'" in reply_text(e)
    # passive compares nothing, not even the type
    declare_exchange(vh, "x", "fanout", passive=True, durable=True)


def test_exchange_passive_missing_404():
    vh = VirtualHost("/")
    with pytest.raises(errors.NotFound) as e:
        declare_exchange(vh, "nope", passive=True)
    assert reply_text(e) == "NOT_FOUND - no exchange 'nope' in vhost '/'"


def test_unknown_exchange_type_406():
    vh = VirtualHost("/")
    with pytest.raises(errors.PreconditionFailed) as e:
        declare_exchange(vh, "x", "x-nonsense")
    assert reply_text(e) == "PRECONDITION_FAILED - unknown exchange type 'x-nonsense'"


# ---------------------------------------------------------------------- reserved names


def test_amq_prefix_exchange_403():
    vh = VirtualHost("/")
    with pytest.raises(errors.AccessRefused) as e:
        declare_exchange(vh, "amq.foo", "direct")
    assert reply_text(e) == ("ACCESS_REFUSED - exchange name 'amq.foo' contains reserved "
                             "prefix 'amq.*'")
    # redeclaring an existing amq.* exchange with identical properties is fine
    declare_exchange(vh, "amq.direct", "direct", durable=True)
    with pytest.raises(errors.AccessRefused):
        vh.delete_exchange("amq.direct", False)
    assert "amq.direct" in vh.exchanges


def test_amq_prefix_queue_403():
    vh = VirtualHost("/")
    with pytest.raises(errors.AccessRefused) as e:
        declare_queue(vh, "amq.q")
    assert "reserved prefix 'amq.*'" in reply_text(e)


def test_predeclared_exchanges():
    vh = VirtualHost("/")
    types = {n: x.type for n, x in vh.exchanges.items()}
    assert types == {"amq.direct": "direct", "amq.fanout": "fanout", "amq.topic": "topic",
                     "amq.headers": "headers", "amq.match": "headers",
                     "amq.rabbitmq.trace": "topic"}
    assert all(x.durable for x in vh.exchanges.values())


@pytest.mark.parametrize("method", [
    C.Queue.Bind(queue="q", exchange="", routing_key="q"),
    C.Queue.Unbind(queue="q", exchange="", routing_key="q"),
    C.Exchange.Delete(exchange=""),
    C.Exchange.Declare(exchange="", exchange_type="direct"),
    C.Exchange.Declare(exchange="", exchange_type="direct", passive=True),
    C.Exchange.Bind(destination="", source="amq.direct", routing_key="k"),
    C.Exchange.Bind(destination="amq.fanout", source="", routing_key="k"),
])
def test_default_exchange_403(method):
    c = connected()
    c.declare(1, "q")
    frames = c.rpc(1, method)
    close = close_frame(frames, 1)
    assert close.reply_code == 403
    assert "default exchange" in close.reply_text


# ---------------------------------------------------------------------- queue args
# (the arguments RabbitMQ implements, priorities and integer widths through the wire:
# test_queue_args_wire.py)

# Invalid values: 406 naming the argument whether or not it is implemented.
INVALID_ARGS = [("x-message-ttl", -1), ("x-message-ttl", "abc"), ("x-expires", 0),
                ("x-max-length", -1), ("x-max-length-bytes", "big"),
                ("x-overflow", "explode"), ("x-max-priority", 256), ("x-max-priority", "hi"),
                ("x-single-active-consumer", "yes")]


@pytest.mark.parametrize("arg, value", INVALID_ARGS)
def test_invalid_queue_arg_values_406(arg, value):
    vh = VirtualHost("/")
    with pytest.raises(errors.PreconditionFailed) as e:
        declare_queue(vh, "q", arguments={arg: value})
    assert f"'{arg}'" in reply_text(e)
    assert "q" not in vh.queues


def test_unknown_queue_args_accepted():
    vh = VirtualHost("/")
    q = declare_queue(vh, "q", arguments={"x-something-else": "v", "plain": 1})
    assert q.name == "q"


@pytest.mark.parametrize("qt", ["stream", "bogus"])
def test_unsupported_queue_types_refused(qt):
    vh = VirtualHost("/")
    with pytest.raises(errors.PreconditionFailed) as e:
        declare_queue(vh, "q", durable=True, arguments={"x-queue-type": qt})
    assert "x-queue-type" in reply_text(e) or qt in reply_text(e)
    assert "q" not in vh.queues


# ---------------------------------------------------------------------- delete / auto-delete


def test_exchange_delete_if_unused_and_idempotent():
    vh = VirtualHost("/")
    declare_exchange(vh, "x", "direct")
    q = declare_queue(vh, "q")
    vh.bind("x", q, "k", {})
    with pytest.raises(errors.PreconditionFailed) as e:
        vh.delete_exchange("x", True)
    assert reply_text(e) == "PRECONDITION_FAILED - exchange 'x' in vhost '/' in use"
    vh.delete_exchange("x", False)
    assert "x" not in vh.exchanges and not q.bindings
    vh.delete_exchange("x", False)  # missing: fine


def test_auto_delete_exchange_when_last_binding_removed():
    vh = VirtualHost("/")
    declare_exchange(vh, "ad", "direct", auto_delete=True)
    q = declare_queue(vh, "q")
    vh.unbind("ad", q, "k", {})  # never had a binding: stays
    assert "ad" in vh.exchanges
    vh.bind("ad", q, "k1", {})
    vh.bind("ad", q, "k2", {})
    vh.unbind("ad", q, "k1", {})
    assert "ad" in vh.exchanges
    vh.unbind("ad", q, "k2", {})
    assert "ad" not in vh.exchanges


def test_auto_delete_exchange_as_e2e_destination():
    """Only bindings as the source count (RabbitMQ; interop/test_bindings.py)."""
    vh = VirtualHost("/")
    dst = declare_exchange(vh, "dst", "fanout", auto_delete=True)
    vh.bind("amq.direct", dst, "k", {})
    vh.unbind("amq.direct", dst, "k", {})
    assert "dst" in vh.exchanges
    src = declare_exchange(vh, "src", "fanout", auto_delete=True)
    vh.bind("src", dst, "", {})
    vh.delete_exchange("dst", False)     # src loses its last binding with its destination
    assert "src" not in vh.exchanges and not src.bindings


def test_queue_delete_removes_bindings_and_auto_deletes_exchange():
    vh = VirtualHost("/")
    declare_exchange(vh, "ad", "topic", auto_delete=True)
    q = declare_queue(vh, "q")
    vh.bind("ad", q, "#", {})
    vh.delete_queue(q)
    assert "q" not in vh.queues and "ad" not in vh.exchanges


def test_unbind_missing_is_ok():
    vh = VirtualHost("/")
    q = declare_queue(vh, "q")
    vh.unbind("amq.direct", q, "nothing", {})
    vh.unbind("no-such-exchange", q, "nothing", {})


def test_bind_to_missing_exchange_404():
    vh = VirtualHost("/")
    q = declare_queue(vh, "q")
    with pytest.raises(errors.NotFound) as e:
        vh.bind("nope", q, "", {})
    assert reply_text(e) == "NOT_FOUND - no exchange 'nope' in vhost '/'"


def test_binding_key_includes_arguments():
    vh = VirtualHost("/")
    q = declare_queue(vh, "q")
    vh.bind("amq.headers", q, "", {"a": 1})
    vh.bind("amq.headers", q, "", {"a": 2})
    vh.bind("amq.headers", q, "", {"a": 1})
    assert len(vh.exchanges["amq.headers"].bindings) == 2
    vh.unbind("amq.headers", q, "", {"a": 1})
    assert routed(vh, "amq.headers", "", {"a": 2}) == ["q"]
    assert routed(vh, "amq.headers", "", {"a": 1}) == []


def test_topic_exchange_class():
    assert TopicExchange("t").type == "topic"
