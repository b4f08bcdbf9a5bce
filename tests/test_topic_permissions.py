"""Topic permissions (issue 11 item 3): the rule in access.py, then real frames through a
channel, the YAML config and the definitions.  Texts and behaviour as RabbitMQ 3.10's
(rabbit_channel:check_topic_authorisation, checked against the running broker by
interop/test_topic_permissions.py)."""
from __future__ import annotations

import pytest
from pamqp import commands as C

from amqpbroker import access, definitions, errors
from amqpbroker.access import TopicPermissions
from amqpbroker.admin import Admin
from amqpbroker.broker import Broker
from amqpbroker.config import Config, ConfigError, Permission, TopicPermission, User, from_dict

from .sim import Client, close_frame, messages, names

USER = "u"


def refused(key: str, exchange: str = "amq.topic", user: str = USER, vhost: str = "/") -> str:
    return (f"ACCESS_REFUSED - access to topic '{key}' in exchange '{exchange}' in vhost "
            f"'{vhost}' refused for user '{user}'")


class X:
    """An exchange as ``access.topic`` sees it: a name and a type."""

    def __init__(self, name: str, type: str = "topic"):
        self.name, self.type = name, type


# ---------------------------------------------------------------------- the rule

def test_no_topic_permission_allows_everything():
    assert access.topic(None, "write", X("amq.topic"), "any") is False
    tp = TopicPermissions(USER, "/", {"t": ("^a", "^b")})
    assert access.topic(tp, "write", X("other"), "any") is False   # not on that exchange


def test_write_and_read_are_searched_unanchored():
    tp = TopicPermissions(USER, "/", {"amq.topic": ("a\\.", "^r")})
    assert access.topic(tp, "write", X("amq.topic"), "xxa.y")      # re.search, as re:run
    assert access.topic(tp, "read", X("amq.topic"), "r.1")
    with pytest.raises(errors.AccessRefused) as e:
        access.topic(tp, "write", X("amq.topic"), "r.1")
    assert e.value.code == 403 and e.value.reply_text == refused("r.1")
    with pytest.raises(errors.AccessRefused):
        access.topic(tp, "read", X("amq.topic"), "a.1")


def test_routing_keys_are_searched_as_bytes_as_rabbitmq():
    """re:run on a binary: "." is one byte, so one of a two-byte UTF-8 character's."""
    tp = TopicPermissions(USER, "/", {"t": ("^a.$", "^a..$")})
    with pytest.raises(errors.AccessRefused) as e:
        access.topic(tp, "write", X("t"), "a\u00e9")
    assert e.value.reply_text == refused("a\u00e9", "t")
    assert access.topic(tp, "read", X("t"), "a\u00e9")
    # a key with bytes that are not UTF-8 (kept surrogate-escaped) is searched as received
    assert access.topic(tp, "read", X("t"), b"a\xff\xfe".decode("utf-8", "surrogateescape"))


def test_empty_pattern_means_only_the_empty_key():
    tp = TopicPermissions(USER, "/", {"amq.topic": ("", ".*")})
    assert access.topic(tp, "write", X("amq.topic"), "")
    with pytest.raises(errors.AccessRefused):
        access.topic(tp, "write", X("amq.topic"), "a")


@pytest.mark.parametrize("xtype", ["direct", "fanout", "headers", "x-delayed-message"])
def test_exchanges_not_of_type_topic_are_not_checked(xtype):
    tp = TopicPermissions(USER, "/", {"x": ("^$", "^$")})
    assert access.topic(tp, "write", X("x", xtype), "anything") is False
    assert access.topic(tp, "read", X("x", xtype), "anything") is False


def test_a_missing_exchange_is_not_checked():
    tp = TopicPermissions(USER, "/", {"x": ("^$", "^$")})
    assert access.topic(tp, "read", None, "anything") is False


def test_expansion_of_username_and_vhost_is_plain_text():
    assert access.expand("^{username}\\.{vhost}\\.", "a.b", "v1") == "^a.b\\.v1\\."
    # RabbitMQ fills {client_id} for MQTT and STOMP only: literal for AMQP 0-9-1
    assert access.expand("^{client_id}", "u", "/") == "^{client_id}"
    tp = TopicPermissions("a.b", "v1", {"t": ("^{username}\\.{vhost}$", "")})
    assert access.topic(tp, "write", X("t"), "a.b.v1")
    assert access.topic(tp, "write", X("t"), "aXb.v1")   # not escaped: "." is any character
    with pytest.raises(errors.AccessRefused) as e:
        access.topic(tp, "write", X("t"), "u.v1")
    assert e.value.reply_text == refused("u.v1", "t", "a.b", "v1")


def test_expanded_patterns_are_compiled_once():
    a = TopicPermissions(USER, "/", {"t": ("^{username}\\.", "^r")})
    b = TopicPermissions(USER, "/", {"t2": ("^u\\.", "^r")})
    assert a.rules["t"][0] is b.rules["t2"][0]
    assert a.rules["t"][1] is b.rules["t2"][1]


def test_a_pattern_expansion_made_invalid_refuses():
    tp = TopicPermissions("a(b", "/", {"t": ("^{username}", ".*")})
    assert tp.rules["t"][0] is None
    with pytest.raises(errors.AccessRefused):
        access.topic(tp, "write", X("t"), "a(b")
    assert access.topic(tp, "read", X("t"), "x")


# ---------------------------------------------------------------------- through frames

TOPIC_PERMS = (TopicPermission(USER, "amq.topic", "^{username}\\.", "^r\\."),
               TopicPermission(USER, "amq.direct", "^$", "^$"),      # not a topic exchange
               TopicPermission(USER, "delayed", "^$", "^$"))


def _broker(topic_permissions=TOPIC_PERMS) -> Broker:
    cfg = Config(users=(User("guest", password="guest"), User(USER, password="p")),
                 permissions=(Permission("guest", "/"), Permission(USER, "/")),
                 topic_permissions=topic_permissions)
    return Broker(cfg)


def _client(b: Broker, user: str = USER, password: str = "p") -> Client:
    c = Client(broker=b)
    c.handshake(user=user, password=password)
    c.open_channel(1)
    return c


def _close(frames, channel: int = 1) -> tuple[int, str, int, int]:
    f = close_frame(frames, channel)
    return f.reply_code, f.reply_text, f.class_id, f.method_id


def test_publish_refused_and_allowed():
    b = _broker()
    c = _client(b)
    c.declare(1, "q")
    c.call(1, C.Queue.Bind(queue="q", exchange="amq.topic", routing_key="r.#"), "Queue.BindOk")
    c.call(1, C.Confirm.Select(), "Confirm.SelectOk")
    out = c.publish(1, "amq.topic", "u.ok", b"1")
    assert names(out) == ["Basic.Ack"]
    assert names(c.publish(1, "amq.topic", "u.ok.again", b"2")) == ["Basic.Ack"]
    assert _close(c.publish(1, "amq.topic", "r.no", b"3")) == (403, refused("r.no"), 60, 40)
    assert b.vhosts["/"].queues["q"].message_count == 0   # nothing routed: u.* is not bound


def test_a_refused_key_after_allowed_ones_is_still_refused():
    """The channel caches the exchange, not the topic answer (it is per routing key)."""
    b = _broker()
    c = _client(b)
    for i in range(3):
        assert c.publish(1, "amq.topic", f"u.{i}", b"") == []
    assert _close(c.publish(1, "amq.topic", "x", b""))[:2] == (403, refused("x"))


def test_an_exchange_redeclared_with_another_type_is_checked_as_its_new_type():
    """The channel's two target caches (with and without a topic rule) miss on a deleted
    exchange, so the type the name has now decides."""
    b = _broker((TopicPermission(USER, "t", "^ok$", ".*"),))
    c = _client(b)
    c.call(1, C.Exchange.Declare(exchange="t", exchange_type="direct"), "Exchange.DeclareOk")
    assert c.publish(1, "t", "any", b"") == []
    c.call(1, C.Exchange.Delete(exchange="t"), "Exchange.DeleteOk")
    c.call(1, C.Exchange.Declare(exchange="t", exchange_type="topic"), "Exchange.DeclareOk")
    assert c.publish(1, "t", "ok", b"") == []
    c.call(1, C.Exchange.Delete(exchange="t"), "Exchange.DeleteOk")
    c.call(1, C.Exchange.Declare(exchange="t", exchange_type="fanout"), "Exchange.DeclareOk")
    assert c.publish(1, "t", "any", b"") == []
    c.call(1, C.Exchange.Delete(exchange="t"), "Exchange.DeleteOk")
    c.call(1, C.Exchange.Declare(exchange="t", exchange_type="topic"), "Exchange.DeclareOk")
    assert _close(c.publish(1, "t", "any", b""))[:2] == (403, refused("any", "t"))


def test_publish_checks_in_rabbitmqs_order():
    b = _broker()
    c = _client(b)
    # a missing exchange: 404 before any topic check
    assert _close(c.publish(1, "nope", "x", b""))[:2] == \
        (404, "NOT_FOUND - no exchange 'nope' in vhost '/'")
    c.rpc(1, C.Channel.CloseOk())
    # the topic check comes before the user-id check (406)
    c.open_channel(2)
    assert _close(c.publish(2, "amq.topic", "x", b"", C.Basic.Properties(user_id="other")),
                  2)[:2] == (403, refused("x"))


def test_publish_in_a_transaction_is_checked_at_publish():
    b = _broker()
    c = _client(b)
    c.call(1, C.Tx.Select(), "Tx.SelectOk")
    assert _close(c.publish(1, "amq.topic", "x", b""))[:2] == (403, refused("x"))


def test_queue_bind_and_unbind_refused_and_allowed():
    b = _broker()
    c = _client(b)
    c.declare(1, "q")
    c.call(1, C.Queue.Bind(queue="q", exchange="amq.topic", routing_key="r.a"), "Queue.BindOk")
    c.call(1, C.Queue.Unbind(queue="q", exchange="amq.topic", routing_key="r.a"),
           "Queue.UnbindOk")
    assert _close(c.rpc(1, C.Queue.Bind(queue="q", exchange="amq.topic", routing_key="u.a"))) \
        == (403, refused("u.a"), 50, 20)
    c.rpc(1, C.Channel.CloseOk())
    c.open_channel(2)
    assert _close(c.rpc(2, C.Queue.Unbind(queue="q", exchange="amq.topic", routing_key="x")),
                  2) == (403, refused("x"), 50, 50)


def test_queue_bind_checks_the_topic_before_the_queue_exists():
    b = _broker()
    c = _client(b)
    assert _close(c.rpc(1, C.Queue.Bind(queue="missing", exchange="amq.topic",
                                        routing_key="x")))[:2] == (403, refused("x"))


def test_queue_bind_shortcut_checks_the_expanded_routing_key():
    """Empty queue and routing key: the last declared queue's name is the key (RabbitMQ
    expands both before the checks)."""
    b = _broker((TopicPermission(USER, "amq.topic", "", "^q1$"),))
    c = _client(b)
    c.declare(1, "q1")
    c.call(1, C.Queue.Bind(queue="", exchange="amq.topic", routing_key=""), "Queue.BindOk")
    c.declare(1, "q2")
    assert _close(c.rpc(1, C.Queue.Bind(queue="", exchange="amq.topic", routing_key="")))[:2] \
        == (403, refused("q2"))


def test_exchange_bind_checks_read_on_the_source_only():
    b = _broker()
    c = _client(b)
    c.call(1, C.Exchange.Declare(exchange="dest", exchange_type="fanout"),
           "Exchange.DeclareOk")
    c.call(1, C.Exchange.Bind(destination="dest", source="amq.topic", routing_key="r.x"),
           "Exchange.BindOk")
    # amq.topic as the destination: not checked
    c.call(1, C.Exchange.Bind(destination="amq.topic", source="dest", routing_key="zzz"),
           "Exchange.BindOk")
    assert _close(c.rpc(1, C.Exchange.Bind(destination="dest", source="amq.topic",
                                           routing_key="u.x"))) == (403, refused("u.x"), 40, 30)
    c.rpc(1, C.Channel.CloseOk())
    c.open_channel(2)
    assert _close(c.rpc(2, C.Exchange.Unbind(destination="dest", source="amq.topic",
                                             routing_key="u.x")), 2) == \
        (403, refused("u.x"), 40, 40)


def test_non_topic_exchanges_are_unaffected():
    b = _broker()
    c = _client(b)
    c.call(1, C.Exchange.Declare(exchange="delayed", exchange_type="x-delayed-message",
                                 arguments={"x-delayed-type": "topic"}), "Exchange.DeclareOk")
    c.declare(1, "q")
    c.call(1, C.Queue.Bind(queue="q", exchange="amq.direct", routing_key="any"), "Queue.BindOk")
    c.call(1, C.Queue.Bind(queue="q", exchange="delayed", routing_key="any"), "Queue.BindOk")
    assert c.publish(1, "amq.direct", "any", b"d") == []
    assert c.publish(1, "delayed", "any", b"x") == []
    assert c.publish(1, "", "q", b"default") == []
    assert b.vhosts["/"].queues["q"].message_count == 3


def test_another_user_and_another_vhost_are_unaffected():
    cfg = Config(vhosts=("/", "v2"),
                 users=(User("guest", password="guest"), User(USER, password="p")),
                 permissions=(Permission("guest", "/"), Permission(USER, "/"),
                              Permission(USER, "v2")),
                 topic_permissions=(TopicPermission(USER, "amq.topic", "^$", "^$"),))
    b = Broker(cfg)
    g = _client(b, "guest", "guest")
    assert g.publish(1, "amq.topic", "anything", b"") == []
    c = Client(broker=b)
    c.handshake(vhost="v2", user=USER, password="p")
    c.open_channel(1)
    assert c.publish(1, "amq.topic", "anything", b"") == []


def test_username_expansion_through_frames():
    b = _broker((TopicPermission(USER, "amq.topic", "^{username}\\.{vhost}", ".*"),))
    c = _client(b)
    c.declare(1, "q")
    c.call(1, C.Queue.Bind(queue="q", exchange="amq.topic", routing_key="#"), "Queue.BindOk")
    assert c.publish(1, "amq.topic", "u./.x", b"m") == []
    assert messages(c.rpc(1, C.Basic.Get(queue="q", no_ack=True)))[0].body == b"m"
    assert _close(c.publish(1, "amq.topic", "guest./", b""))[:2] == (403, refused("guest./"))


def test_connections_keep_the_topic_permissions_they_opened_with():
    b = _broker((TopicPermission(USER, "amq.topic", "^a", ".*"),))
    c = _client(b)
    b.set_topic_permissions(TopicPermission(USER, "amq.topic", "^b", ".*"))
    assert c.publish(1, "amq.topic", "a", b"") == []
    c2 = _client(b)
    assert c2.publish(1, "amq.topic", "b", b"") == []
    assert _close(c2.publish(1, "amq.topic", "a", b""))[:2] == (403, refused("a"))


# ---------------------------------------------------------------------- config

BASE = {"users": [{"name": "guest", "password": "guest"}, {"name": USER, "password": "p"}],
        "permissions": [{"user": "guest"}, {"user": USER}]}


def _config(*tps) -> Config:
    return from_dict(dict(BASE, topic_permissions=list(tps)))


def test_yaml_topic_permissions():
    cfg = _config({"user": USER, "exchange": "amq.topic", "write": "^{username}\\.",
                   "read": ".*"})
    assert cfg.topic_permissions == (TopicPermission(USER, "amq.topic", "^{username}\\.",
                                                     ".*", "/"),)
    assert Broker(cfg).topic_permissions[(USER, "/")].rules["amq.topic"][0].pattern == b"^u\\."
    assert Config().topic_permissions == ()


@pytest.mark.parametrize("item, text", [
    ({"user": USER, "exchange": "t", "write": "(", "read": ""},
     "topic_permissions[0].write: expected a regular expression, got '(' (missing ), "
     "unterminated subpattern at position 0)"),
    ({"user": USER, "exchange": "t", "write": "", "read": "[a"},
     "topic_permissions[0].read: expected a regular expression, got '[a' (unterminated "
     "character set at position 0)"),
    # valid for Python's str patterns, not for the bytes ones topic checks use (nor PCRE)
    ({"user": USER, "exchange": "t", "write": "\\u00e9", "read": ""},
     "topic_permissions[0].write: expected a regular expression, got '\\\\u00e9' (bad "
     "escape \\u at position 0)"),
    ({"user": "nobody", "exchange": "t", "write": "", "read": ""},
     "topic_permissions[0].user: expected one of the users, got 'nobody'"),
    ({"user": USER, "vhost": "v9", "exchange": "t", "write": "", "read": ""},
     "topic_permissions[0].vhost: expected one of the vhosts, got 'v9'"),
    ({"user": USER, "exchange": "t", "write": ""},
     "topic_permissions[0].read: required key is missing"),
    ({"user": USER, "exchange": "", "write": "", "read": ""},
     "topic_permissions[0].exchange: expected an exchange name of 1..255 bytes, got ''"),
    ({"user": USER, "exchange": "t", "write": "", "read": "", "configure": ""},
     "topic_permissions[0].configure: unknown key (expected one of user, exchange, write, "
     "read, vhost)"),
])
def test_yaml_mistakes_are_named(item, text):
    with pytest.raises(ConfigError) as e:
        _config(item)
    assert str(e.value) == text


def test_yaml_duplicate_topic_permission():
    item = {"user": USER, "exchange": "t", "write": "", "read": ""}
    with pytest.raises(ConfigError) as e:
        _config(item, dict(item, vhost="/"))
    assert str(e.value) == ("topic_permissions[1]: duplicate topic permission for user 'u' "
                            "on vhost '/' and exchange 't' (first topic_permissions[0])")


# ---------------------------------------------------------------------- definitions

def test_definitions_export_and_import_as_rabbitmqctl_writes_them():
    b = _broker((TopicPermission(USER, "amq.topic", "^{username}\\.", "^r"),))
    out = definitions.export(b)
    assert out["topic_permissions"] == [{"user": USER, "vhost": "/", "exchange": "amq.topic",
                                         "write": "^{username}\\.", "read": "^r"}]
    b2 = _broker(())
    # the shape of `rabbitmqctl export_definitions` (keys sorted as it writes them)
    definitions.apply(b2, {"topic_permissions": [
        {"exchange": "amq.topic", "read": "^r", "user": USER, "vhost": "/",
         "write": "^{username}\\."}]})
    assert definitions.export(b2)["topic_permissions"] == out["topic_permissions"]
    c = _client(b2)
    assert c.publish(1, "amq.topic", "u.1", b"") == []
    assert _close(c.publish(1, "amq.topic", "x", b""))[:2] == (403, refused("x"))


def test_admin_lists_topic_permissions_to_administrators():
    b = Broker(Config(vhosts=("/", "v2"), users=(User("guest", password="g",
                                                      tags=("administrator",)),
                                                 User(USER, password="p")),
                      permissions=(Permission("guest", "/"),),
                      topic_permissions=(TopicPermission(USER, "t", "^w", "^r", "v2"),
                                         TopicPermission("guest", "t", "", ""))))
    a = Admin(b)
    assert a.topic_permissions(user=USER) == [
        {"user": USER, "vhost": "v2", "exchange": "t", "write": "^w", "read": "^r"}]
    assert [tp["user"] for tp in a.topic_permissions(vhost="/")] == ["guest"]
    assert len(a.topic_permissions()) == 2
    with pytest.raises(errors.AccessRefused):
        Admin(b, USER).topic_permissions()


@pytest.mark.parametrize("item, text", [
    ({"user": USER, "vhost": "/", "exchange": "t", "write": "(", "read": ""},
     "topic_permissions[0].write: expected a regular expression, got '(' (missing ), "
     "unterminated subpattern at position 0)"),
    ({"user": "nobody", "vhost": "/", "exchange": "t", "write": "", "read": ""},
     "topic_permissions[0]: no user 'nobody'"),
    ({"user": USER, "vhost": "v9", "exchange": "t", "write": "", "read": ""},
     "topic_permissions[0]: vhost 'v9' does not exist (nor is it in vhosts)"),
    ({"user": USER, "vhost": "/", "exchange": "t", "write": ""},
     "topic_permissions[0]: malformed (KeyError: 'read')"),
    ({"user": USER, "vhost": "/", "exchange": "t", "write": 1, "read": ""},
     "topic_permissions[0]: user, exchange, write and read must be strings"),
])
def test_definitions_import_mistakes_are_named(item, text):
    b = _broker(())
    with pytest.raises(definitions.DefinitionsError) as e:
        definitions.apply(b, {"topic_permissions": [item]})
    assert str(e.value) == text
    assert b.topic_permissions == {}
