"""admin.py: every facade call against a real Broker, with clients connected through the
sans-I/O core (real frames), the rules of access.py when a user is given, and the
definitions round trip (export, import into a fresh broker, export again)."""
from __future__ import annotations

import pytest
from pamqp import commands as C

from amqpbroker import errors
from amqpbroker.admin import Admin, connection_name
from amqpbroker.broker import Broker, check_password
from amqpbroker.config import Config, Permission, User
from amqpbroker.definitions import DefinitionsError

from .sim import Client, close_frame, connected, names

USERS = (User("guest", password="guest", tags=("administrator",)),
         User("mon", password="mon", tags=("monitoring",)),
         User("bob", password="bob", tags=("management",)),
         User("app", password="app"))
PERMS = (Permission("guest", "/"), Permission("bob", "/", configure="^bob-", write="^bob-",
                                               read="^bob-"), Permission("app", "/"))


def broker(**kw) -> Broker:
    return Broker(Config(vhosts=("/", "other"), users=USERS, permissions=PERMS, **kw))


@pytest.fixture
def b():
    return broker()


def test_declare_inspect_list_delete_exchange_and_queue(b):
    a = Admin(b)
    x = a.declare_exchange("/", "x", "topic", arguments={"alternate-exchange": "ae"})
    assert (x["name"], x["type"], x["durable"], x["arguments"]) == \
        ("x", "topic", True, {"alternate-exchange": "ae"})
    q = a.declare_queue("/", "q", arguments={"x-max-length": 5})
    assert (q["name"], q["messages"], q["consumers"], q["type"]) == ("q", 0, 0, "classic")
    assert [e["name"] for e in a.exchanges("/")][:2] == ["", "amq.direct"]
    assert "x" in [e["name"] for e in a.exchanges()]
    assert [q["name"] for q in a.queues()] == ["q"] and a.queues("other") == []
    a.bind("/", "x", "q", routing_key="a.#")
    a.bind("/", "amq.fanout", "x", "exchange")
    bs = [(d["source"], d["destination"], d["destination_type"], d["routing_key"])
          for d in a.bindings("/")]
    assert bs == [("", "q", "queue", "q"), ("amq.fanout", "x", "exchange", ""),
                  ("x", "q", "queue", "a.#")]
    a.unbind("/", "x", "q", routing_key="a.#")
    assert ("x", "q", "queue", "a.#") not in [
        (d["source"], d["destination"], d["destination_type"], d["routing_key"])
        for d in a.bindings("/")]
    with pytest.raises(errors.PreconditionFailed):   # as a client's redeclare
        a.declare_queue("/", "q", arguments={"x-max-length": 6})
    with pytest.raises(errors.PreconditionFailed, match="unknown destination type"):
        a.bind("/", "x", "q", "bogus")
    a.bind("/", "x", "q", routing_key="b")
    with pytest.raises(errors.PreconditionFailed, match="in use"):
        a.delete_exchange("/", "x", if_unused=True)
    a.delete_exchange("/", "x")
    assert "x" not in b.vhosts["/"].exchanges
    with pytest.raises(errors.NotFound):
        a.exchange("/", "x")
    assert a.delete_queue("/", "q") == 0
    with pytest.raises(errors.NotFound):
        a.queue("/", "q")
    with pytest.raises(errors.NotFound):
        a.queues("nowhere")


def test_queue_stats_and_counters_purge_and_delete_conditions(b):
    a = Admin(b)
    c = connected(broker=b)
    c.declare(1, "q")
    for body in (b"one", b"three"):
        c.publish(1, "", "q", body)
    c.rpc(1, C.Basic.Consume(queue="q", consumer_tag="t"))  # both delivered, unacked
    c.publish(1, "", "q", b"x")
    q = a.queue("/", "q")
    assert (q["messages"], q["messages_unacknowledged"], q["consumers"]) == (3, 3, 1)
    assert q["message_stats"]["publish"] == 3 and q["message_stats"]["deliver"] == 3
    assert q["message_stats"]["deliver_get"] == 3
    with pytest.raises(errors.PreconditionFailed, match="in use"):
        a.delete_queue("/", "q", if_unused=True)
    c.call(1, C.Basic.Cancel(consumer_tag="t"), "Basic.CancelOk")
    c.call(1, C.Basic.Recover(requeue=True), "Basic.RecoverOk")  # the three requeued
    assert a.queue("/", "q")["messages_ready"] == 3
    assert a.queue("/", "q")["message_bytes_ready"] == len(b"onethreex")
    with pytest.raises(errors.PreconditionFailed, match="not empty"):
        a.delete_queue("/", "q", if_empty=True)
    assert a.purge_queue("/", "q") == 3
    assert a.queue("/", "q")["messages"] == 0
    ex = a.exchange("/", "")
    assert ex["message_stats"]["publish_in"] == 3 and ex["message_stats"]["publish_out"] == 3


def test_connections_channels_consumers_and_vhost_totals(b):
    a = Admin(b)
    c = Client(broker=b, peer=("10.0.0.7", 4242))
    c.handshake()
    c.open_channel(1)
    c.open_channel(2)
    c.declare(1, "q")
    c.rpc(2, C.Basic.Consume(queue="q", consumer_tag="ct", no_ack=True))
    c.publish(1, "", "q", b"hello")
    [conn] = a.connections()
    name = connection_name(c.conn)
    assert conn["name"] == name == "10.0.0.7:4242 -> 127.0.0.1:0"
    assert (conn["user"], conn["vhost"], conn["channels"]) == ("guest", "/", 2)
    assert conn["recv_oct"] > 0 and conn["send_oct"] > 0
    assert a.connection(name)["peer_port"] == 4242
    chans = a.channels()
    assert [ch["number"] for ch in chans] == [1, 2] == [ch["number"] for ch in a.channels(name)]
    assert chans[0]["message_stats"]["publish"] == 1
    assert chans[1]["message_stats"]["deliver_no_ack"] == 1
    [cons] = a.consumers("/")
    assert (cons["consumer_tag"], cons["ack_required"], cons["queue"]["name"]) == \
        ("ct", False, "q")
    assert cons["channel_details"]["name"] == f"{name} (2)"
    assert a.consumers("other") == []
    vh = a.vhost("/")
    assert vh["message_stats"]["publish"] == 1 and vh["recv_oct"] > 0
    ov = a.overview()
    assert ov["object_totals"] == {"connections": 1, "channels": 2, "consumers": 1,
                                   "exchanges": 14, "queues": 1}
    assert ov["message_stats"]["publish"] == 1
    with pytest.raises(errors.NotFound):
        a.connection("nobody")


def test_close_connection_sends_320_with_the_reason(b):
    a = Admin(b)
    c = connected(broker=b)
    woken = []
    c.conn.on_wakeup = lambda: woken.append(1)
    a.close_connection(connection_name(c.conn), "maintenance", now=5.0)
    frames = c.recv()
    close = close_frame(frames)
    assert (close.reply_code, close.reply_text) == (320, "CONNECTION_FORCED - maintenance")
    assert woken  # the edge's writer is woken: the frame goes out at once
    assert a.connections() == []
    c.send(0, C.Connection.CloseOk())
    assert c.conn.should_close


def test_deleting_a_consumed_queue_cancels_its_consumers(b):
    a = Admin(b)
    c = connected(broker=b)
    c.declare(1, "q")
    c.rpc(1, C.Basic.Consume(queue="q", consumer_tag="t"))
    a.delete_queue("/", "q")
    assert names(c.recv()) == ["Basic.Cancel"]
    assert a.consumers() == []


def test_users_and_permissions(b):
    a = Admin(b)
    users = {u["name"]: u for u in a.users()}
    assert users["guest"]["tags"] == ["administrator"]
    assert check_password(User("guest", password_hash=users["guest"]["password_hash"]), "guest")
    assert a.permissions(user="bob") == [{"user": "bob", "vhost": "/", "configure": "^bob-",
                                          "write": "^bob-", "read": "^bob-"}]
    assert [p["user"] for p in a.permissions(vhost="/")] == ["app", "bob", "guest"]


# ---------------------------------------------------------------------- with a user

def test_user_rules_as_the_channel_applies_them(b):
    bob = Admin(b, "bob")
    bob.declare_queue("/", "bob-q")
    with pytest.raises(errors.AccessRefused,
                       match="access to queue 'q' in vhost '/' refused for user 'bob'"):
        bob.declare_queue("/", "q")
    with pytest.raises(errors.AccessRefused, match="exchange 'amq.direct'"):
        bob.bind("/", "amq.direct", "bob-q")      # read on the exchange
    with pytest.raises(errors.AccessRefused):
        bob.purge_queue("/", "other-q")
    with pytest.raises(errors.NotFound):        # no rights on the vhost: not seen
        bob.declare_exchange("other", "bob-x")
    with pytest.raises(errors.NotFound):
        bob.queues("other")
    mon = Admin(b, "mon")
    assert [v["name"] for v in mon.vhosts()] == ["/", "other"]   # monitoring sees all
    with pytest.raises(errors.NotAllowed, match="access to vhost 'other' refused"):
        mon.declare_exchange("other", "m-x")    # but has no rights there
    assert [v["name"] for v in bob.vhosts()] == ["/"]
    with pytest.raises(errors.AccessRefused, match="Not administrator user"):
        bob.users()
    with pytest.raises(errors.AccessRefused, match="Not administrator user"):
        bob.export_definitions()
    with pytest.raises(errors.AccessRefused, match="Not management user"):
        Admin(b, "app")
    with pytest.raises(errors.AccessRefused):
        Admin(b, "nobody")


def test_connections_seen_and_closed_by_their_owner_or_an_administrator(b):
    mine = connected(broker=b, user="bob", password="bob")
    other = Client(broker=b, peer=("127.0.0.1", 5001))
    other.handshake()
    bob, mon = Admin(b, "bob"), Admin(b, "mon")
    assert [c["user"] for c in bob.connections()] == ["bob"]
    assert sorted(c["user"] for c in mon.connections()) == ["bob", "guest"]
    with pytest.raises(errors.NotFound):
        bob.close_connection(connection_name(other.conn))
    with pytest.raises(errors.AccessRefused):
        mon.close_connection(connection_name(other.conn))
    bob.close_connection(connection_name(mine.conn))
    assert close_frame(mine.recv()).reply_code == 320
    Admin(b, "guest").close_connection(connection_name(other.conn))
    assert close_frame(other.recv()).reply_code == 320


# ---------------------------------------------------------------------- definitions

def _topology(a: Admin) -> None:
    a.declare_exchange("/", "ev", "topic", arguments={"alternate-exchange": "ae"})
    a.declare_exchange("/", "ae", "fanout", durable=False)
    a.declare_queue("/", "jobs", arguments={"x-message-ttl": 60000, "x-dead-letter-exchange": "ae"})
    a.declare_queue("other", "o", durable=False, auto_delete=True)
    a.bind("/", "ev", "jobs", routing_key="job.*")
    a.bind("/", "ev", "ae", "exchange", "#", {"x-match": "any"})


def test_definitions_round_trip_into_a_fresh_broker(b):
    a = Admin(b)
    _topology(a)
    c = connected(broker=b)
    c.declare(1, "mine", exclusive=True)    # a connection's queue: not exported
    defs = a.export_definitions()
    assert defs["rabbit_version"].startswith("3.")
    assert [q["name"] for q in defs["queues"]] == ["jobs", "o"]
    assert [x["name"] for x in defs["exchanges"]] == ["ae", "ev"]   # no amq.*, no ""
    assert {(d["source"], d["destination"]) for d in defs["bindings"]} == \
        {("ev", "jobs"), ("ev", "ae")}
    assert [v["name"] for v in defs["vhosts"]] == ["/", "other"]
    fresh = Broker(Config(vhosts=("/", "other"), users=USERS[:1], permissions=PERMS[:1]))
    Admin(fresh).import_definitions(defs)
    again = Admin(fresh).export_definitions()
    for key in ("queues", "exchanges", "bindings", "permissions", "vhosts"):
        assert again[key] == defs[key], key
    assert [u["name"] for u in again["users"]] == ["app", "bob", "guest", "mon"]
    assert check_password(fresh.users["bob"], "bob")   # the hash came over
    assert fresh.permissions[("bob", "/")].patterns == ("^bob-", "^bob-", "^bob-")
    Admin(fresh).import_definitions(defs)      # again: every item equivalent, no change
    assert Admin(fresh).export_definitions()["queues"] == defs["queues"]


def test_per_vhost_definitions_and_refused_imports(b):
    a = Admin(b)
    _topology(a)
    one = a.export_definitions("/")
    assert "users" not in one and "vhost" not in one["queues"][0]
    fresh = broker()
    Admin(fresh).import_definitions(one, "other")   # into another vhost
    assert sorted(fresh.vhosts["other"].queues) == ["jobs"]
    with pytest.raises(DefinitionsError, match="vhost 'nope' does not exist"):
        Admin(fresh).import_definitions({"queues": [{"name": "z", "vhost": "nope"}]})
    assert "z" not in fresh.vhosts["/"].queues
    # a full import creates the vhosts it lists, as RabbitMQ's (until the restart)
    Admin(fresh).import_definitions({"vhosts": [{"name": "made"}],
                                     "queues": [{"name": "z", "vhost": "made"}]})
    assert list(fresh.vhosts["made"].queues) == ["z"]
    with pytest.raises(DefinitionsError, match=r"queues\[1\]: inequivalent arg 'durable'"):
        Admin(fresh).import_definitions({"queues": [
            {"name": "new", "vhost": "/"}, {"name": "jobs", "vhost": "other", "durable": False,
                                            "arguments": {}}]})
    with pytest.raises(DefinitionsError, match=r"bindings\[0\]: no exchange 'gone'"):
        Admin(fresh).import_definitions({"bindings": [
            {"source": "gone", "destination": "new", "vhost": "/"}]})
    with pytest.raises(DefinitionsError,
                       match=r"permissions\[0\]: invalid regular expression \(missing \)"):
        Admin(fresh).import_definitions({"permissions": [
            {"user": "guest", "vhost": "/", "configure": "(", "write": "", "read": ""}]})
    with pytest.raises(DefinitionsError, match="hashing algorithm"):
        Admin(fresh).import_definitions({"users": [
            {"name": "x", "password_hash": "abc", "hashing_algorithm": "rabbit_password_hashing_bcrypt"}]})
