"""Limits (limits.py) through real frames: per vhost max-connections and max-queues, per
user max-connections and max-channels, limits.max_buffered_bytes; RabbitMQ 3.10's codes,
texts and method ids (checked against it in interop/test_limits.py); their config keys."""
from __future__ import annotations

import pytest
from pamqp import body as pbody
from pamqp import commands as C
from pamqp import header as pheader

from amqpbroker import definitions, limits
from amqpbroker.broker import Broker
from amqpbroker.config import Config, ConfigError, Limits, Permission, User, VHost, from_dict

from .sim import Client, close_frame, names

GUEST = User("guest", password="guest", tags=("administrator",))


def broker(vhost_limits=None, user_limits=None, **limit_kw) -> Broker:
    users = (GUEST, User("bob", password="bob", limits=dict(user_limits or {})))
    return Broker(Config(vhosts=(VHost("/"), VHost("lim", vhost_limits)), users=users,
                         permissions=tuple(Permission(u, v) for u in ("guest", "bob")
                                           for v in ("/", "lim")),
                         limits=Limits(**limit_kw)))


def opened(b: Broker, vhost="lim", user="guest", channel=1) -> Client:
    c = Client(broker=b)
    c.handshake(vhost=vhost, user=user, password=user)
    if channel:
        c.open_channel(channel)
    return c


def refused_open(b: Broker, vhost="lim", user="guest"):
    """Connection.Open refused: the Connection.Close (code, text, class, method)."""
    c = Client(broker=b)
    c.start()
    assert names(c.start_ok(user, user)) == ["Connection.Tune"]
    c.rpc(0, C.Connection.TuneOk(channel_max=2047, frame_max=131072, heartbeat=0))
    close = close_frame(c.rpc(0, C.Connection.Open(virtual_host=vhost)))
    return close.reply_code, close.reply_text, close.class_id, close.method_id


# ---------------------------------------------------------------------- vhost connections


def test_vhost_max_connections():
    b = broker({"max-connections": 2})
    first, _second = opened(b), opened(b)
    assert refused_open(b) == (530, "NOT_ALLOWED - access to vhost 'lim' refused for user "
                                    "'guest': connection limit (2) is reached", 10, 40)
    opened(b, vhost="/")  # another vhost is not affected
    first.rpc(0, C.Connection.Close(reply_code=200, reply_text="", class_id=0, method_id=0))  # a closed connection frees its place
    opened(b)


def test_vhost_limit_checked_before_access():
    b = broker({"max-connections": 0})
    b.permissions.pop(("bob", "lim"))
    assert refused_open(b, user="bob")[:2] == (
        530, "NOT_ALLOWED - access to vhost 'lim' refused for user 'bob': connection limit "
             "(0) is reached")
    assert refused_open(b, vhost="nope")[:2] == (530, "NOT_ALLOWED - vhost nope not found")


@pytest.mark.parametrize("value", [-1, None])
def test_negative_or_absent_means_no_limit(value):
    b = broker({} if value is None else {"max-connections": value, "max-queues": value})
    for _ in range(5):
        opened(b).declare(1, "")


# ---------------------------------------------------------------------- user limits


def test_user_max_connections_over_every_vhost():
    b = broker(user_limits={"max-connections": 1})
    opened(b, vhost="/", user="bob")
    assert refused_open(b, vhost="lim", user="bob") == (
        530, "NOT_ALLOWED - connection refused for user 'bob': user connection limit (1) is "
             "reached", 10, 40)
    opened(b, user="guest")  # other users are not affected


def test_vhost_limit_comes_before_the_user_limit():
    b = broker({"max-connections": 1}, {"max-connections": 1})
    opened(b, user="bob")
    assert "connection limit (1) is reached" in refused_open(b, user="bob")[1]
    assert "access to vhost 'lim'" in refused_open(b, user="bob")[1]


def test_user_max_channels_over_its_connections():
    b = broker(user_limits={"max-channels": 2})
    a = opened(b, user="bob")
    c = opened(b, vhost="/", user="bob")
    close = close_frame(c.rpc(2, C.Channel.Open()))
    assert (close.reply_code, close.reply_text, close.class_id, close.method_id) == (
        530, "NOT_ALLOWED - number of channels opened for user 'bob' has reached the "
             "maximum allowed user limit of (2)", 0, 0)
    a.rpc(1, C.Channel.Close(reply_code=200, reply_text="", class_id=0, method_id=0))
    a.open_channel(1)  # a closed channel frees its place
    opened(b, user="guest", channel=1).open_channel(2)  # guest has no limit


def test_user_max_channels_zero_and_a_frame_on_an_unopened_channel():
    b = broker(user_limits={"max-channels": 0})
    c = opened(b, user="bob", channel=None)
    close = close_frame(c.rpc(1, C.Channel.Open()))
    assert close.reply_code == 530 and close.reply_text.endswith("user limit of (0)")
    # RabbitMQ creates a channel for any frame, so its limit comes before 504
    c = opened(b, user="bob", channel=None)
    close = close_frame(c.rpc(3, C.Queue.Declare(queue="q")))
    assert close.reply_code == 530 and close.reply_text.endswith("user limit of (0)")


# ---------------------------------------------------------------------- queues


def test_vhost_max_queues():
    b = broker({"max-queues": 2})
    c = opened(b)
    c.declare(1, "q1")
    c.declare(1, "")
    c.declare(1, "q1")  # a redeclare creates nothing
    c.call(1, C.Queue.Declare(queue="q1", passive=True), "Queue.DeclareOk")
    close = close_frame(c.rpc(1, C.Queue.Declare(queue="q3", exclusive=True)), 1)
    assert (close.reply_code, close.reply_text, close.class_id, close.method_id) == (
        406, "PRECONDITION_FAILED - cannot declare queue 'q3': queue limit in vhost 'lim' (2) "
             "is reached", 50, 10)
    c.rpc(1, C.Channel.CloseOk())
    opened(b, vhost="/").declare(1, "q3")  # another vhost is not affected
    c.open_channel(2)
    c.call(2, C.Queue.Delete(queue="q1"), "Queue.DeleteOk")
    c.declare(2, "q4")  # a deleted queue frees its place


def test_max_queues_zero_before_argument_checks():
    b = broker({"max-queues": 0})
    c = opened(b)
    close = close_frame(c.rpc(1, C.Queue.Declare(queue="", arguments={"x-max-length": "a"})),
                        1)
    assert close.reply_code == 406
    assert close.reply_text.startswith("PRECONDITION_FAILED - cannot declare queue 'amq.gen-")
    assert close.reply_text.endswith("queue limit in vhost 'lim' (0) is reached")
    c.rpc(1, C.Channel.CloseOk())
    c.open_channel(2)
    close = close_frame(c.rpc(2, C.Queue.Declare(queue="amq.x")), 2)  # the name comes first
    assert close.reply_code == 403


# ---------------------------------------------------------------------- buffered bytes

CAP = 300_000


def big(c: Client, channel: int, size: int, sent: int) -> None:
    """Basic.Publish and a header for ``size`` bytes, then ``sent`` bytes of body."""
    c.rpc(channel, C.Basic.Publish(exchange="", routing_key="q"),
          pheader.ContentHeader(0, size, C.Basic.Properties()))
    for i in range(0, sent, 100_000):
        c.send(channel, pbody.ContentBody(b"x" * min(100_000, sent - i)))


def capped() -> Broker:
    return broker(max_buffered_bytes=CAP, max_message_size=CAP, frame_max=131072)


def test_partial_bodies_on_all_channels_count():
    b = capped()
    c = opened(b)
    c.declare(1, "q")
    c.open_channel(2)
    big(c, 1, CAP, 200_000)
    assert c.recv() == [] and c.conn.held == 200_000
    big(c, 2, CAP, 100_000)
    assert c.conn.held == 300_000 and c.recv() == []
    c.send(2, pbody.ContentBody(b"x"))
    close = close_frame(c.recv())
    assert (close.reply_code, close.reply_text) == (
        530, f"NOT_ALLOWED - connection buffer limit ({CAP} bytes) is reached: 300001 bytes "
             f"of unrouted content held")
    assert c.conn.held == 0  # let go at teardown


def test_completed_and_closed_content_is_let_go():
    b = capped()
    c = opened(b)
    c.declare(1, "q")
    for _ in range(3):  # messages of the cap's size, one after the other
        big(c, 1, CAP, CAP)
        assert c.conn.held == 0
    assert b.vhosts["lim"].queues["q"].message_count == 3
    c.open_channel(2)
    big(c, 2, CAP, 200_000)
    c.rpc(2, C.Channel.Close(reply_code=200, reply_text="", class_id=0, method_id=0))
    assert c.conn.held == 0


def test_other_connections_are_not_affected():
    b = capped()
    a, other = opened(b), opened(b)
    other.declare(1, "q")
    a.open_channel(2)
    big(a, 1, CAP, 200_000)
    big(other, 1, CAP, 200_000)
    big(a, 2, CAP, 200_000)  # a's second message: the cap is a's alone
    assert close_frame(a.recv()).reply_code == 530
    other.send(1, pbody.ContentBody(b"x" * 100_000))
    assert other.recv() == [] and b.vhosts["lim"].queues["q"].message_count == 1


def test_uncommitted_transaction_counts():
    b = capped()
    c = opened(b)
    c.declare(1, "q")
    c.call(1, C.Tx.Select(), "Tx.SelectOk")
    big(c, 1, 100_000, 100_000)
    big(c, 1, 100_000, 100_000)
    assert c.conn.held == 200_000
    c.call(1, C.Tx.Commit(), "Tx.CommitOk")
    assert c.conn.held == 0
    big(c, 1, 100_000, 100_000)
    c.call(1, C.Tx.Rollback(), "Tx.RollbackOk")
    assert c.conn.held == 0
    for _ in range(3):
        big(c, 1, 100_000, 100_000)
    assert c.recv() == []
    big(c, 1, 100_000, 100_000)
    assert close_frame(c.recv()).reply_code == 530
    assert b.vhosts["lim"].queues["q"].message_count == 2


def test_a_partial_frame_counts():
    b = broker(max_buffered_bytes=200_000, max_message_size=150_000, frame_max=200_000)
    c = Client(broker=b)
    c.handshake(vhost="lim", frame_max=200_000)
    c.open_channel(1)
    c.open_channel(2)
    big(c, 1, 150_000, 100_000)
    c.rpc(2, C.Basic.Publish(exchange="", routing_key="q"),
          pheader.ContentHeader(0, 150_000, C.Basic.Properties()))
    c.send_raw(b"\x03\x00\x02" + (140_000).to_bytes(4, "big") + b"x" * 90_000)
    assert c.recv() == [] and c.conn.held == 100_000  # 190,007 bytes
    c.send_raw(b"x" * 10_000)  # the same frame, still not complete
    close = close_frame(c.recv())
    assert (close.reply_code, close.reply_text) == (
        530, "NOT_ALLOWED - connection buffer limit (200000 bytes) is reached: 200007 bytes "
             "of unrouted content held")


def test_zero_is_no_cap():
    b = broker(max_buffered_bytes=0, max_message_size=CAP)
    c = opened(b)
    c.declare(1, "q")
    c.open_channel(2)
    big(c, 1, CAP, CAP - 1)
    big(c, 2, CAP, CAP - 1)
    assert c.recv() == [] and c.conn.held == 2 * (CAP - 1)


# ---------------------------------------------------------------------- config and definitions


def test_yaml_limits():
    cfg = from_dict({"vhosts": ["/", {"name": "lim", "limits": {"max-connections": 1,
                                                                "max-queues": -1}}],
                     "users": [{"name": "guest", "password": "guest",
                                "limits": {"max-channels": 0}}],
                     "limits": {"max_buffered_bytes": 0}})
    assert cfg.vhosts == ("/", "lim") and cfg.vhosts[1].limits == {"max-connections": 1,
                                                                     "max-queues": -1}
    assert cfg.users[0].limits == {"max-channels": 0} and cfg.limits.max_buffered_bytes == 0
    assert Broker(cfg).vhosts["lim"].limits == {"max-connections": 1, "max-queues": -1}
    assert Broker(cfg).vhosts["/"].limits == {}


@pytest.mark.parametrize("data, message", [
    ({"vhosts": [{"name": "v", "limits": {"max-channels": 1}}]},
     "vhosts[0].limits.max-channels: unknown limit (expected one of max-connections, "
     "max-queues)"),
    ({"vhosts": [{"name": "v", "limits": {"max-queues": "1"}}]},
     "vhosts[0].limits.max-queues: expected an integer (0: none allowed, negative: no limit), "
     "got '1'"),
    ({"vhosts": [{"limits": {}}]}, "vhosts[0].name: required key is missing"),
    ({"vhosts": [{"name": "", "limits": {}}]}, "vhosts[0].name: expected a vhost name"),
    ({"vhosts": [{"name": "v", "max-queues": 1}]}, "vhosts[0].max-queues: unknown key"),
    ({"users": [{"name": "a", "password": "b", "limits": {"max-queues": 1}}]},
     "users[0].limits.max-queues: unknown limit (expected one of max-connections, "
     "max-channels)"),
    ({"users": [{"name": "a", "password": "b", "limits": {"max-channels": True}}]},
     "users[0].limits.max-channels: expected an integer"),
    ({"limits": {"max_buffered_bytes": -1}}, "limits.max_buffered_bytes: expected an integer "
                                             ">= 0 (0: no cap), got -1"),
    ({"limits": {"max_buffered_bytes": 1000}},
     "limits.max_buffered_bytes: expected 0 or at least max_message_size and frame_max "
     "(134217728), got 1000"),
])
def test_yaml_limit_mistakes(data, message):
    with pytest.raises(ConfigError) as e:
        from_dict(data)
    assert str(e.value).startswith(message), str(e.value)


def test_duplicate_vhost_names_across_both_forms():
    with pytest.raises(ConfigError, match=r"vhosts\[1\]: duplicate vhost 'v'"):
        from_dict({"vhosts": ["v", {"name": "v"}], "permissions": []})


def test_definitions_as_rabbitmq_exports_them():
    """What ``rabbitmqctl export_definitions`` 3.10 wrote after set_vhost_limits and
    set_user_limits: limits as pairs in vhosts[], a vhost-limits parameter (what its
    import reads) and users[].limits."""
    b = broker()
    definitions.apply(b, {
        "rabbit_version": "3.10.8",
        "users": [{"hashing_algorithm": "rabbit_password_hashing_sha256",
                   "limits": {"max-channels": 2, "max-connections": 1}, "name": "carol",
                   "password_hash": "3yBUcfYt+Wbs+5e8bs7woRGqZMyEkjjqfWS9S6KDmxHhejrk",
                   "tags": []}],
        "vhosts": [{"limits": [["max-connections", 1], ["max-queues", 2]],
                    "metadata": {"description": "", "tags": ""}, "name": "lim"},
                   {"limits": [], "name": "/"}],
        "parameters": [{"component": "vhost-limits", "name": "limits",
                        "value": {"max-connections": 1, "max-queues": 2}, "vhost": "lim"},
                       {"component": "federation-upstream", "name": "x", "value": {},
                        "vhost": "elsewhere"}]})
    assert b.users["carol"].limits == {"max-channels": 2, "max-connections": 1}
    assert b.vhosts["lim"].limits == {"max-connections": 1, "max-queues": 2}
    out = definitions.export(b)
    assert {"component": "vhost-limits", "name": "limits", "vhost": "lim",
            "value": {"max-connections": 1, "max-queues": 2}} in out["parameters"]
    assert [v["limits"] for v in out["vhosts"]] == [
        [], [["max-connections", 1], ["max-queues", 2]]]
    carol = next(u for u in out["users"] if u["name"] == "carol")
    assert carol["limits"] == {"max-channels": 2, "max-connections": 1}
    again = broker()
    definitions.apply(again, out)  # our export imports back
    assert again.vhosts["lim"].limits == b.vhosts["lim"].limits


def test_definitions_limit_mistakes_change_nothing():
    b = broker()
    with pytest.raises(definitions.DefinitionsError,
                       match=r"parameters\[0\]\.value\.max-channels: unknown limit"):
        definitions.apply(b, {"users": [{"name": "dave", "password": "x"}], "parameters": [
            {"component": "vhost-limits", "name": "limits", "vhost": "lim",
             "value": {"max-channels": 1}}]})
    assert "dave" not in b.users and b.vhosts["lim"].limits == {}
    with pytest.raises(definitions.DefinitionsError, match=r"users\[0\]\.limits\.max-queues"):
        definitions.apply(b, {"users": [{"name": "e", "password": "x",
                                         "limits": {"max-queues": 1}}]})


def test_imported_queues_meet_the_imported_limit():
    b = broker()
    with pytest.raises(definitions.DefinitionsError,
                       match=r"queues\[1\]: cannot declare queue 'b': queue limit in vhost "
                             r"'lim' \(1\) is reached"):
        definitions.apply(b, {
            "parameters": [{"component": "vhost-limits", "name": "limits", "vhost": "lim",
                            "value": {"max-queues": 1}}],
            "queues": [{"name": "a", "vhost": "lim"}, {"name": "b", "vhost": "lim"}]})


def test_limit_rules():
    assert limits.parse([["max-queues", 3]], limits.VHOST_KEYS) == {"max-queues": 3}
    assert limits.parse(None, limits.USER_KEYS) == {}
    with pytest.raises(limits.LimitError):
        limits.parse("max-queues=3", limits.VHOST_KEYS)
    limits.declare_queue({"max-queues": -5}, 10**6, "q", "/")
    limits.buffered(0, 10**12)
