"""policies.py: RabbitMQ's policies and operator policies, with real frames through the
sans-I/O core and time passed in: which policy applies, how its keys merge with queue
arguments, applied live to existing queues and exchanges, kept in the store."""
from __future__ import annotations

import pytest
from pamqp import commands as C

from amqpbroker import errors, policies
from amqpbroker.broker import Broker
from amqpbroker.config import Config, from_dict
from amqpbroker.definitions import DefinitionsError
from amqpbroker.store.sqlite import SQLiteStore

from .sim import connected
from .test_queue_features import Clock, advance, get, pub


def setup(broker=None):
    broker = broker or Broker(Config())
    clock = Clock()
    vh = broker.vhosts["/"]
    vh.clock = clock
    return connected(broker=broker), clock, vh, broker


def depth(c, name) -> int:
    return c.declare(1, name, passive=True).message_count


def test_a_dead_letter_policy_set_later_applies_to_an_existing_queue():
    c, clock, vh, b = setup()
    c.declare(1, "work")
    c.declare(1, "dead")
    b.set_policy("/", "dlx", "^work$", {"dead-letter-exchange": "",
                                        "dead-letter-routing-key": "dead"}, apply_to="queues")
    pub(c, "work", b"bad")
    m = get(c, "work", no_ack=False)
    c.rpc(1, C.Basic.Reject(delivery_tag=m.method.delivery_tag, requeue=False))
    dead = get(c, "dead")
    assert dead.body == b"bad" and dead.properties.headers["x-death"][0]["queue"] == "work"
    assert vh.queues["work"].policy.name == "dlx"


def test_a_ttl_policy_expires_messages_published_after_it():
    c, clock, vh, b = setup()
    c.declare(1, "q")
    b.set_policy("/", "ttl", "^q", {"message-ttl": 1000})
    pub(c, "q")
    advance(c, clock, vh, 0.5)
    assert depth(c, "q") == 1
    advance(c, clock, vh, 0.6)
    assert depth(c, "q") == 0
    b.clear_policy("/", "ttl")            # cleared: the queue is as declared again
    pub(c, "q")
    advance(c, clock, vh, 5)
    assert depth(c, "q") == 1 and vh.queues["q"].policy is None


def test_a_lower_max_length_drops_heads_at_once():
    c, clock, vh, b = setup()
    c.declare(1, "q")
    for i in range(5):
        pub(c, "q", b"%d" % i)
    b.set_policy("/", "len", "q", {"max-length": 2})
    assert depth(c, "q") == 2 and get(c, "q").body == b"3"


@pytest.mark.parametrize("declared, policy, effective", [
    ({"x-max-length": 10}, {"max-length": 2}, 2),     # for limits the smaller wins
    ({"x-max-length": 2}, {"max-length": 10}, 2),
    ({}, {"max-length": 3}, 3),
])
def test_limits_take_the_smaller_of_argument_and_policy(declared, policy, effective):
    c, clock, vh, b = setup()
    c.declare(1, "q", arguments=declared)
    b.set_policy("/", "p", ".*", policy)
    assert vh.queues["q"].args.max_length == effective
    assert vh.queues["q"].arguments == declared     # what was declared is unchanged


def test_the_argument_wins_for_the_dead_letter_exchange_and_overflow():
    c, clock, vh, b = setup()
    c.declare(1, "q", arguments={"x-dead-letter-exchange": "mine", "x-overflow": "drop-head"})
    b.set_policy("/", "p", "q", {"dead-letter-exchange": "theirs",
                                 "overflow": "reject-publish"})
    a = vh.queues["q"].args
    assert (a.dlx, a.overflow) == ("mine", "drop-head")


def test_priority_apply_to_and_operator_policies():
    c, clock, vh, b = setup()
    c.declare(1, "orders")
    b.set_policy("/", "low", "^ord", {"max-length": 100}, priority=1)
    b.set_policy("/", "high", "^orders$", {"max-length": 50}, priority=5)
    b.set_policy("/", "ex-only", ".*", {"max-length": 1}, priority=9, apply_to="exchanges")
    q = vh.queues["orders"]
    assert q.policy.name == "high" and q.args.max_length == 50
    b.set_policy("/", "cap", ".*", {"max-length": 20, "message-ttl": 60000}, operator=True)
    assert (q.args.max_length, q.args.message_ttl) == (20, 60000)  # the lower value wins
    assert q.operator_policy.name == "cap"
    b.set_policy("/", "cap", ".*", {"max-length": 500}, operator=True)
    assert q.args.max_length == 50
    with pytest.raises(errors.NotFound):
        b.clear_policy("/", "cap")            # a user policy of that name: none
    b.clear_policy("/", "cap", operator=True)
    assert q.operator_policy is None


def test_an_alternate_exchange_policy_catches_unroutable_messages():
    c, clock, vh, b = setup()
    c.call(1, C.Exchange.Declare(exchange="in", exchange_type="direct"),
           "Exchange.DeclareOk")
    c.call(1, C.Exchange.Declare(exchange="lost", exchange_type="fanout"),
           "Exchange.DeclareOk")
    c.declare(1, "lost-q")
    c.call(1, C.Queue.Bind(queue="lost-q", exchange="lost"), "Queue.BindOk")
    b.set_policy("/", "ae", "^in$", {"alternate-exchange": "lost"}, apply_to="exchanges")
    pub(c, "nowhere", b"m", exchange="in")
    assert get(c, "lost-q").body == b"m"
    assert vh.exchanges["lost"].policy is None        # the pattern did not match it


def test_new_queues_and_exchanges_take_existing_policies():
    c, clock, vh, b = setup()
    b.set_policy("/", "len", "^capped", {"max-length": 1})
    c.declare(1, "capped-1")
    pub(c, "capped-1")
    pub(c, "capped-1")
    assert depth(c, "capped-1") == 1


@pytest.mark.parametrize("definition, text", [
    ({"message-ttl": -5}, "-5 is not a valid message TTL"),
    ({"max-length": "ten"}, '<<"ten">> is not a valid maximum length'),
    ({"overflow": "drop-tail"}, '<<"drop-tail">> is not a valid overflow value'),
    ({"x-max-priority": 3}, '[{<<"x-max-priority">>,3}] are not recognised policy settings'),
    ({}, "the definition must be a non-empty object"),
])
def test_invalid_policies_name_the_problem(definition, text):
    b = Broker(Config())
    with pytest.raises(policies.PolicyError) as e:
        b.set_policy("/", "p", ".*", definition)
    assert str(e.value) == text


def test_policies_set_while_running_survive_a_restart(tmp_path):
    b = Broker(Config(), SQLiteStore(str(tmp_path)))
    b.vhosts["/"].declare_queue("q", False, True, False, False, {}, None)
    b.set_policy("/", "len", "q", {"max-length": 7}, priority=3, apply_to="queues")
    b.set_policy("/", "cap", "q", {"max-length": 5}, operator=True)
    b.set_policy("/", "gone", "q", {"expires": 1000})
    b.clear_policy("/", "gone")
    b.store.sync_blocking()
    b.store.close()
    again = Broker(Config(), SQLiteStore(str(tmp_path)))
    q = again.vhosts["/"].queues["q"]
    assert (q.policy.name, q.operator_policy.name, q.args.max_length) == ("len", "cap", 5)
    assert q.args.expires is None
    assert again.vhosts["/"].policies.export() == [
        {"vhost": "/", "name": "len", "pattern": "q", "apply-to": "queues",
         "definition": {"max-length": 7}, "priority": 3}]
    again.store.close()


def test_yaml_policies_apply_at_start():
    cfg = from_dict({"definitions": {
        "policies": [{"name": "dlx", "pattern": "^jobs$", "definition": {
            "dead-letter-exchange": "dlx"}, "apply_to": "queues"}],
        "queues": [{"name": "jobs"}]}})
    b = Broker(cfg)
    assert b.vhosts["/"].queues["jobs"].args.dlx == "dlx"


def test_definitions_export_and_import_in_rabbitmqs_shape():
    from amqpbroker.admin import Admin
    b = Broker(Config())
    b.set_policy("/", "ttl", "^t", {"message-ttl": 5000}, priority=2, apply_to="queues")
    out = Admin(b).export_definitions()
    assert out["policies"] == [{"vhost": "/", "name": "ttl", "pattern": "^t",
                                "apply-to": "queues", "definition": {"message-ttl": 5000},
                                "priority": 2}]
    assert Admin(b).export_definitions("/")["policies"][0].get("vhost") is None
    fresh = Broker(Config())
    Admin(fresh).import_definitions(out)
    assert fresh.vhosts["/"].policies.export() == out["policies"]
    with pytest.raises(DefinitionsError, match=r"policies\[0\]: -1 is not a valid queue "
                                               r"expiry"):
        Admin(fresh).import_definitions({"policies": [
            {"vhost": "/", "name": "x", "pattern": ".*", "definition": {"expires": -1}}]})


def test_the_management_core_lists_sets_and_clears_with_rabbitmqs_rules():
    from amqpbroker.admin import Admin
    from amqpbroker.config import Permission, User
    b = Broker(Config())
    b.users["pm"] = User("pm", password="x", tags=("policymaker",))
    b.users["mon"] = User("mon", password="x", tags=("monitoring",))
    b.set_permissions(Permission("pm", "/"))
    b.vhosts["/"].declare_queue("q", False, False, False, False, {"x-max-length": 9}, None)
    pm = Admin(b, "pm")
    assert pm.set_policy("/", "len", "q", {"max-length": 4}, apply_to="queues")["name"] == "len"
    assert [p["name"] for p in pm.policies()] == ["len"]
    with pytest.raises(errors.AccessRefused, match="Not administrator user"):
        pm.set_policy("/", "cap", ".*", {"max-length": 1}, operator=True)
    with pytest.raises(errors.AccessRefused, match="Not policymaker user"):
        Admin(b, "mon").set_policy("/", "x", ".*", {"max-length": 1})
    Admin(b).set_policy("/", "cap", ".*", {"max-length": 2}, operator=True)
    info = Admin(b).queue("/", "q")
    assert (info["policy"], info["operator_policy"]) == ("len", "cap")
    assert info["effective_policy_definition"] == {"max-length": 2}
    assert info["arguments"] == {"x-max-length": 9}
    pm.clear_policy("/", "len")
    assert Admin(b).queue("/", "q")["policy"] is None
