"""access.py: each permission rule, allowed and refused, with RabbitMQ's texts; and the
same rules reached through real frames on a channel (so the channel uses them)."""
from __future__ import annotations

import pytest
from pamqp import commands as C

from amqpbroker import access, errors
from amqpbroker.access import Permissions
from amqpbroker.broker import Broker
from amqpbroker.config import Config, Permission, User

from .sim import Client, close_frame, connected

VH, USER = "/", "u"
# configure ^cfg-, write ^w-, read ^r- (as interop/test_permissions.py)
P = Permissions(configure="^cfg-", write="^w-", read="^r-")
WHO = (P, VH, USER)


def refused(kind: str, name: str) -> str:
    return f"ACCESS_REFUSED - access to {kind} '{name}' in vhost '{VH}' refused for user '{USER}'"


def raises_refused(fn, *args, kind, name):
    with pytest.raises(errors.AccessRefused) as e:
        fn(*WHO, *args)
    assert e.value.code == 403 and e.value.reply_text == refused(kind, name)


def test_permissions_from_config_and_empty_means_nothing():
    p = Permissions(Permission("u", "/", configure="", write=".*", read="^a$"))
    assert p.patterns == ("", ".*", "^a$")
    # "" is RabbitMQ's "^$": only the empty name
    assert access.allowed(p, "configure", "") and not access.allowed(p, "configure", "x")
    assert access.allowed(p, "write", "anything") and access.allowed(p, "read", "a")
    assert not access.allowed(p, "read", "ab") and not access.allowed(None, "read", "a")


def test_check_searches_not_matches():
    access.check(P, "read", "queue", "r-x", VH, USER)
    access.check(Permissions(read="x"), "read", "queue", "abxcd", VH, USER)  # re.search
    with pytest.raises(errors.AccessRefused):
        access.check(P, "read", "queue", "cfg-x", VH, USER)


def test_open_vhost():
    perms = {("u", "/"): P}
    assert access.open_vhost(perms, "u", "/", True) is P
    with pytest.raises(errors.NotAllowed) as e:
        access.open_vhost(perms, "u", "/x", False)
    assert e.value.reply_text == "NOT_ALLOWED - vhost /x not found"
    assert (e.value.class_id, e.value.method_id) == (10, 40)
    with pytest.raises(errors.NotAllowed) as e:
        access.open_vhost(perms, "other", "/", True)
    assert e.value.reply_text == "NOT_ALLOWED - access to vhost '/' refused for user 'other'"


def test_declare_exchange():
    access.declare_exchange(*WHO, "cfg-x", {}, False)
    raises_refused(access.declare_exchange, "w-x", {}, False, kind="exchange", name="w-x")
    raises_refused(access.declare_exchange, "", {}, False, kind="exchange", name="amq.default")


def test_declare_exchange_with_alternate_exchange_needs_read_on_it_and_write_on_the_ae():
    both = Permissions(configure="^cfg-", write="^w-", read="^cfg-")
    access.declare_exchange(both, VH, USER, "cfg-x", {"alternate-exchange": "w-ae"}, False)
    # read on the new exchange
    raises_refused(access.declare_exchange, "cfg-x", {"alternate-exchange": "w-ae"}, False,
                   kind="exchange", name="cfg-x")
    # write on the alternate
    with pytest.raises(errors.AccessRefused) as e:
        access.declare_exchange(both, VH, USER, "cfg-x", {"alternate-exchange": "r-ae"}, False)
    assert e.value.reply_text == refused("exchange", "r-ae")
    # an existing exchange: only configure (RabbitMQ checks the AE on creation only)
    access.declare_exchange(*WHO, "cfg-x", {"alternate-exchange": "r-ae"}, True)
    # a non-string AE is not checked here (the vhost refuses it with 406)
    access.declare_exchange(*WHO, "cfg-x", {"alternate-exchange": 5}, False)


def test_delete_exchange():
    access.delete_exchange(*WHO, "cfg-x")
    raises_refused(access.delete_exchange, "r-x", kind="exchange", name="r-x")
    raises_refused(access.delete_exchange, "", kind="exchange", name="amq.default")


def test_bind_and_unbind_exchange():
    for fn in (access.bind_exchange, access.unbind_exchange):
        fn(*WHO, "r-src", "w-dst")
        raises_refused(fn, "r-src", "r-dst", kind="exchange", name="r-dst")   # write first
        raises_refused(fn, "w-src", "w-dst", kind="exchange", name="w-src")   # then read
        for src, dst in (("", "w-dst"), ("r-src", "")):
            with pytest.raises(errors.AccessRefused) as e:
                fn(*WHO, src, dst)
            assert e.value.reply_text == \
                "ACCESS_REFUSED - operation not permitted on the default exchange"


def test_publish():
    access.publish(*WHO, "w-x")
    raises_refused(access.publish, "r-x", kind="exchange", name="r-x")
    raises_refused(access.publish, "", kind="exchange", name="amq.default")
    access.publish(Permissions(write="^amq\\.default$"), VH, USER, "")


def test_declare_queue():
    access.declare_queue(*WHO, "cfg-q", {})
    access.declare_queue(*WHO, "cfg-q", None)
    raises_refused(access.declare_queue, "r-q", {}, kind="queue", name="r-q")


def test_declare_queue_with_dlx_needs_read_on_the_queue_and_write_on_the_dlx():
    both = Permissions(configure="^q", write="^w-", read="^q")
    access.declare_queue(both, VH, USER, "q1", {"x-dead-letter-exchange": "w-dlx"})
    raises_refused(access.declare_queue, "cfg-q", {"x-dead-letter-exchange": "w-dlx"},
                   kind="queue", name="cfg-q")
    with pytest.raises(errors.AccessRefused) as e:
        access.declare_queue(both, VH, USER, "q1", {"x-dead-letter-exchange": "r-dlx"})
    assert e.value.reply_text == refused("exchange", "r-dlx")
    with pytest.raises(errors.AccessRefused) as e:  # "" is the default exchange
        access.declare_queue(both, VH, USER, "q1", {"x-dead-letter-exchange": ""})
    assert e.value.reply_text == refused("exchange", "amq.default")


def test_declare_queue_dlx_of_another_type_is_406_after_configure():
    with pytest.raises(errors.PreconditionFailed) as e:
        access.declare_queue(*WHO, "cfg-q", {"x-dead-letter-exchange": 5},
                             {"x-dead-letter-exchange": "signedint"})
    assert e.value.reply_text == ("PRECONDITION_FAILED - invalid type 'signedint' for arg "
                                  "'x-dead-letter-exchange' in queue 'cfg-q' in vhost '/'")
    raises_refused(access.declare_queue, "r-q", {"x-dead-letter-exchange": 5},
                   kind="queue", name="r-q")


@pytest.mark.parametrize("fn, perm", [(access.delete_queue, "cfg-"),
                                      (access.purge_queue, "r-"), (access.consume, "r-"),
                                      (access.get, "r-")])
def test_queue_operations(fn, perm):
    fn(*WHO, perm + "q")
    other = "w-q" if perm != "w-" else "r-q"
    raises_refused(fn, other, kind="queue", name=other)


def test_bind_and_unbind_queue():
    for fn in (access.bind_queue, access.unbind_queue):
        fn(*WHO, "r-x", "w-q")
        raises_refused(fn, "r-x", "r-q", kind="queue", name="r-q")        # write on queue
        raises_refused(fn, "w-x", "w-q", kind="exchange", name="w-x")     # read on exchange
        with pytest.raises(errors.AccessRefused) as e:
            fn(*WHO, "", "w-q")
        assert e.value.reply_text == \
            "ACCESS_REFUSED - operation not permitted on the default exchange"


# ---------------------------------------------------------------------- through frames

def _broker() -> Broker:
    cfg = Config(users=(User("guest", password="guest"), User("u", password="p")),
                 permissions=(Permission("guest", "/"),
                              Permission("u", "/", "^cfg-", "^w-", "^r-")))
    return Broker(cfg)


def test_the_channel_refuses_through_access():
    b = _broker()
    c = connected(broker=b, user="u", password="p")
    close = close_frame(c.rpc(1, C.Queue.Declare(queue="r-q")), 1)
    assert (close.reply_code, close.reply_text) == (403, refused("queue", "r-q"))
    assert (close.class_id, close.method_id) == (50, 10)
    assert c.rpc(1, C.Channel.CloseOk()) == []
    c.open_channel(2)
    c.declare(2, "cfg-q")
    close = close_frame(c.publish(2, "r-x", "k", b"x"), 2)
    assert (close.reply_code, close.reply_text) == (403, refused("exchange", "r-x"))
    assert (close.class_id, close.method_id) == (60, 40)   # as RabbitMQ: basic.publish


def test_open_vhost_refused_through_frames():
    b = _broker()
    c = Client(broker=b)
    c.start()
    c.start_ok("u", "p")
    c.rpc(0, C.Connection.TuneOk(channel_max=2047, frame_max=131072, heartbeat=0))
    close = close_frame(c.rpc(0, C.Connection.Open(virtual_host="/other")))
    assert (close.reply_code, close.reply_text) == (530, "NOT_ALLOWED - vhost /other not found")


def test_management_rules_by_tag():
    access.management("m", ("management",))
    access.management("p", ("policymaker", "other"))
    with pytest.raises(errors.AccessRefused, match="Not management user"):
        access.management("app", ())
    access.administrator("a", ("administrator",))
    with pytest.raises(errors.AccessRefused, match="Not administrator user"):
        access.administrator("m", ("monitoring",))
    perms = {("m", "/"): P}
    assert access.sees_vhost(perms, "m", ("management",), "/")
    assert not access.sees_vhost(perms, "m", ("management",), "other")
    assert access.sees_vhost(perms, "x", ("monitoring",), "other")
    assert access.sees_connection("m", ("management",), "m")
    assert not access.sees_connection("m", ("management",), "other")
    assert access.sees_connection("x", ("administrator",), "other")
    access.close_connection("m", ("management",), "m")
    access.close_connection("a", ("administrator",), "m")
    with pytest.raises(errors.AccessRefused):
        access.close_connection("x", ("monitoring",), "m")  # sees it, may not close it
