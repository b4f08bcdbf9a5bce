"""Queue features, sans-I/O: dead-lettering and x-death (raw wire encoding), TTL and
x-expires with a fake clock (time is passed in, never slept), length limits and overflow,
priorities, single active consumer, delivery limit, CC/BCC, direct reply-to, transactions,
queue-argument validation texts.  The interop twin is interop/test_queue_features.py."""
from __future__ import annotations

import time

import pytest
from pamqp import commands as C

from amqpbroker import errors
from amqpbroker.broker import Broker
from amqpbroker.config import Config
from amqpbroker.framing import array_items, table_items
from amqpbroker.message import F_EXPIRATION, F_HEADERS, Message, split_properties
from amqpbroker.queues import Queue, QueueArgs
from amqpbroker.queues.deadletter import is_cycle as _is_cycle
from amqpbroker.vhost import VirtualHost

from .sim import close_frame, connected, messages, names


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def setup(**kw):
    """A broker whose vhost runs on a fake clock, and a connected client (channel 1)."""
    broker = Broker(Config())
    clock = Clock()
    vh = broker.vhosts["/"]
    vh.clock = clock
    c = connected(broker=broker, **kw)
    return c, clock, vh


def advance(c, clock, vh, seconds: float):
    """Move time on and run the broker's timer, as the server's timer task would."""
    clock.now += seconds
    vh.scheduler.run_due(clock.now)
    return c.recv()


def declare(c, name, ch=1, **args):
    return c.declare(ch, name, arguments=args)


def props(**kw) -> C.Basic.Properties:
    return C.Basic.Properties(**kw)


def pub(c, rk, body=b"x", ch=1, exchange="", **kw):
    return c.publish(ch, exchange, rk, body, props(**kw) if kw else None)


def get(c, q, ch=1, no_ack=True):
    return c.get(ch, q, no_ack=no_ack)


def bodies(c, q, ch=1):
    out = []
    while (m := c.get(ch, q, no_ack=True)) is not None:
        out.append(m.body)
    return out


def raw_headers(msg: Message) -> list[tuple[str, bytes]]:
    return table_items(split_properties(msg.props)[F_HEADERS])


def raw_table(tagged: bytes) -> list[tuple[str, bytes]]:
    assert tagged[:1] == b"F"
    return table_items(tagged[1:])


def ready_msgs(vh, name):
    return [qm.msg for qm in vh.queues[name].ready]


def reject(c, tag, ch=1, requeue=False):
    return c.rpc(ch, C.Basic.Reject(delivery_tag=tag, requeue=requeue))


def dlx_pair(c, src="src", dlq="dlq", **args):
    """``src`` dead-letters through the default exchange into ``dlq``."""
    declare(c, dlq)
    declare(c, src, **{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq,
                       **args})


# =========================================================================== x-death


def test_x_death_wire_encoding():
    c, clock, vh = setup()
    c.call(1, C.Exchange.Declare(exchange="dlx", exchange_type="fanout"), "Exchange.DeclareOk")
    declare(c, "dlq")
    c.call(1, C.Queue.Bind(queue="dlq", exchange="dlx"), "Queue.BindOk")
    declare(c, "src", **{"x-dead-letter-exchange": "dlx"})
    c.call(1, C.Queue.Bind(queue="src", exchange="amq.direct", routing_key="k"),
           "Queue.BindOk")
    before = int(time.time())
    pub(c, "k", b"body", exchange="amq.direct", expiration="60000",
        headers={"zz": 1, "CC": ["cc1"], "BCC": ["bcc1"], "aa": "x"})
    m = get(c, "src", no_ack=False)
    reject(c, m.method.delivery_tag)
    (dead,) = ready_msgs(vh, "dlq")
    assert dead.exchange == "dlx" and dead.routing_key == "k"
    parts = split_properties(dead.props)
    assert F_EXPIRATION not in parts                 # moved aside, cannot expire again
    hdrs = raw_headers(dead)
    keys = [k for k, _ in hdrs]
    assert keys == sorted(keys, key=str.encode)      # re-encoded sorted, as RabbitMQ
    h = dict(hdrs)
    assert "BCC" not in h and h["CC"][:1] == b"A"
    assert h["zz"] == b"b\x01"                      # other headers keep their encoding
    (entry,) = array_items(h["x-death"])
    fields = raw_table(entry)
    assert [k for k, _ in fields] == ["original-expiration", "count", "reason", "queue",
                                      "time", "exchange", "routing-keys"]
    f = dict(fields)
    assert f["count"] == b"l" + (1).to_bytes(8, "big")          # 64-bit 'l'
    assert f["reason"] == b"S\x00\x00\x00\x08rejected"
    assert f["queue"] == b"S\x00\x00\x00\x03src"
    assert f["time"][:1] == b"T"
    assert before <= int.from_bytes(f["time"][1:], "big") <= int(time.time())
    assert f["exchange"] == b"S\x00\x00\x00\x0aamq.direct"
    assert [e for e in array_items(f["routing-keys"])] == [b"S\x00\x00\x00\x01k",
                                                          b"S\x00\x00\x00\x03cc1"]
    assert f["original-expiration"] == b"S\x00\x00\x00\x0560000"
    for prefix in ("x-first-death", "x-last-death"):
        assert h[f"{prefix}-queue"] == b"S\x00\x00\x00\x03src"
        assert h[f"{prefix}-reason"] == b"S\x00\x00\x00\x08rejected"
        assert h[f"{prefix}-exchange"] == b"S\x00\x00\x00\x0aamq.direct"


def _deaths(msg):
    h = dict(raw_headers(msg))
    out = []
    for e in array_items(h["x-death"]):
        f = dict(raw_table(e))
        out.append((f["queue"][5:].decode(), f["reason"][5:].decode(),
                    int.from_bytes(f["count"][1:], "big", signed=True)))
    return out


def _hdr(msg, key):
    return dict(raw_headers(msg))[key][5:].decode()


def test_x_death_retry_loop_counts_newest_first():
    """work -(reject)-> wait -(expired)-> work, twice: one entry per (queue, reason), the
    most recent first, counts incremented; x-first-death-* fixed, x-last-death-* moving."""
    c, clock, vh = setup()
    declare(c, "work", **{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "wait"})
    declare(c, "wait", **{"x-message-ttl": 100, "x-dead-letter-exchange": "",
                          "x-dead-letter-routing-key": "work"})
    pub(c, "work", b"job")
    for n in (1, 2):
        m = get(c, "work", no_ack=False)
        reject(c, m.method.delivery_tag)
        (msg,) = ready_msgs(vh, "wait")
        assert _deaths(msg)[0] == ("work", "rejected", n)
        assert _hdr(msg, "x-last-death-queue") == "work"
        advance(c, clock, vh, 0.1)
        (msg,) = ready_msgs(vh, "work")
        assert _deaths(msg) == [("wait", "expired", n), ("work", "rejected", n)]
        assert _hdr(msg, "x-first-death-queue") == "work"
        assert _hdr(msg, "x-first-death-reason") == "rejected"
        assert _hdr(msg, "x-last-death-queue") == "wait"
        assert _hdr(msg, "x-last-death-reason") == "expired"


def test_x_death_time_and_exchange_are_of_the_first_death():
    c, clock, vh = setup()
    declare(c, "loop", **{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "loop"})
    c.call(1, C.Queue.Bind(queue="loop", exchange="amq.direct", routing_key="k"),
           "Queue.BindOk")
    pub(c, "k", exchange="amq.direct")
    m = get(c, "loop", no_ack=False)
    reject(c, m.method.delivery_tag)
    m = get(c, "loop", no_ack=False)
    assert m.method.exchange == "" and m.method.routing_key == "loop"
    reject(c, m.method.delivery_tag)
    (msg,) = ready_msgs(vh, "loop")
    (entry,) = array_items(dict(raw_headers(msg))["x-death"])
    f = dict(raw_table(entry))
    assert f["exchange"][5:] == b"amq.direct"        # not the DLX of the second death
    assert [e[5:] for e in array_items(f["routing-keys"])] == [b"k"]
    assert int.from_bytes(f["count"][1:], "big") == 2


def test_x_death_from_client_with_other_types_is_handled():
    """A message that arrives with an x-death of its own (republished by a client) is
    updated, never crashes the broker."""
    c, clock, vh = setup()
    dlx_pair(c)
    pub(c, "src", headers={"x-death": [{"queue": "src", "reason": "rejected", "count": 4},
                                       "junk"]})
    m = get(c, "src", no_ack=False)
    assert reject(c, m.method.delivery_tag) == []    # no connection error
    (msg,) = ready_msgs(vh, "dlq")
    h = dict(raw_headers(msg))
    first = dict(raw_table(array_items(h["x-death"])[0]))
    assert first["queue"][5:] == b"src" and first["reason"][5:] == b"rejected"


def test_dead_letter_routing_key_drops_cc_and_keeps_original_keys_in_x_death():
    c, clock, vh = setup()
    c.call(1, C.Exchange.Declare(exchange="dlx", exchange_type="direct"), "Exchange.DeclareOk")
    for q in ("dl-fixed", "dl-cc"):
        declare(c, q)
    c.call(1, C.Queue.Bind(queue="dl-fixed", exchange="dlx", routing_key="fixed"),
           "Queue.BindOk")
    c.call(1, C.Queue.Bind(queue="dl-cc", exchange="dlx", routing_key="cc1"), "Queue.BindOk")
    declare(c, "src", **{"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "fixed"})
    pub(c, "src", headers={"CC": ["cc1"]})
    m = get(c, "src", no_ack=False)
    reject(c, m.method.delivery_tag)
    assert ready_msgs(vh, "dl-cc") == []
    (msg,) = ready_msgs(vh, "dl-fixed")
    assert msg.routing_key == "fixed" and msg.cc == ()
    assert "CC" not in dict(raw_headers(msg))
    (entry,) = array_items(dict(raw_headers(msg))["x-death"])
    rks = dict(raw_table(entry))["routing-keys"]
    assert [e[5:] for e in array_items(rks)] == [b"src", b"cc1"]


def test_dead_letter_without_dlrk_routes_with_cc_and_bcc():
    c, clock, vh = setup()
    c.call(1, C.Exchange.Declare(exchange="dlx", exchange_type="direct"), "Exchange.DeclareOk")
    for key in ("k", "cc1", "bcc1"):
        declare(c, f"dl-{key}")
        c.call(1, C.Queue.Bind(queue=f"dl-{key}", exchange="dlx", routing_key=key),
               "Queue.BindOk")
    declare(c, "src", **{"x-dead-letter-exchange": "dlx"})
    c.call(1, C.Queue.Bind(queue="src", exchange="amq.direct", routing_key="k"),
           "Queue.BindOk")
    pub(c, "k", exchange="amq.direct", headers={"CC": ["cc1"], "BCC": ["bcc1"]})
    m = get(c, "src", no_ack=False)
    reject(c, m.method.delivery_tag)
    for key in ("k", "cc1", "bcc1"):
        (msg,) = ready_msgs(vh, f"dl-{key}")
        assert "BCC" not in dict(raw_headers(msg))


def test_missing_dlx_drops_and_dlx_created_later_is_used():
    c, clock, vh = setup()
    declare(c, "src", **{"x-dead-letter-exchange": "later"})
    pub(c, "src", b"1")
    reject(c, get(c, "src", no_ack=False).method.delivery_tag)
    assert vh.queues["src"].message_count == 0
    c.call(1, C.Exchange.Declare(exchange="later", exchange_type="fanout"), "Exchange.DeclareOk")
    declare(c, "dlq")
    c.call(1, C.Queue.Bind(queue="dlq", exchange="later"), "Queue.BindOk")
    pub(c, "src", b"2")
    reject(c, get(c, "src", no_ack=False).method.delivery_tag)
    assert bodies(c, "dlq") == [b"2"]


def test_is_cycle():
    assert _is_cycle("a", [("a", "expired")])
    assert _is_cycle("a", [("b", "expired"), ("a", "maxlen")])
    assert not _is_cycle("a", [("b", "expired")])
    assert not _is_cycle("a", [("b", "rejected"), ("a", "expired")])
    assert not _is_cycle("a", [])


@pytest.mark.parametrize("reason_args", [{"x-message-ttl": 10}, {"x-max-length": 0}])
def test_cycle_without_rejection_dropped(reason_args):
    c, clock, vh = setup()
    declare(c, "self", **{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "self",
                          **reason_args})
    pub(c, "self")
    advance(c, clock, vh, 0.05)
    advance(c, clock, vh, 0.05)
    assert vh.queues["self"].message_count == 0


def test_cycle_drop_only_affects_the_cyclic_target():
    """A fanout DLX reaching the source queue and another queue: only the source copy is
    dropped."""
    c, clock, vh = setup()
    c.call(1, C.Exchange.Declare(exchange="dlx", exchange_type="fanout"), "Exchange.DeclareOk")
    declare(c, "src", **{"x-message-ttl": 10, "x-dead-letter-exchange": "dlx"})
    declare(c, "other")
    for q in ("src", "other"):
        c.call(1, C.Queue.Bind(queue=q, exchange="dlx"), "Queue.BindOk")
    pub(c, "src")
    advance(c, clock, vh, 0.02)
    assert vh.queues["src"].message_count == 0
    assert len(ready_msgs(vh, "other")) == 1


@pytest.mark.parametrize("how", ["delete", "purge", "expires"])
def test_queue_removal_never_dead_letters(how):
    c, clock, vh = setup()
    dlx_pair(c, **({"x-expires": 100} if how == "expires" else {}))
    pub(c, "src", b"a")
    if how == "delete":
        c.call(1, C.Queue.Delete(queue="src"), "Queue.DeleteOk")
    elif how == "purge":
        c.call(1, C.Queue.Purge(queue="src"), "Queue.PurgeOk")
    else:
        advance(c, clock, vh, 0.2)
        assert "src" not in vh.queues
    assert ready_msgs(vh, "dlq") == []


def test_unacked_message_of_deleted_queue_is_not_dead_lettered_on_reject():
    c, clock, vh = setup()
    dlx_pair(c)
    pub(c, "src")
    m = get(c, "src", no_ack=False)
    c.call(1, C.Queue.Delete(queue="src"), "Queue.DeleteOk")
    assert reject(c, m.method.delivery_tag) == []
    assert ready_msgs(vh, "dlq") == []


# =========================================================================== TTL


def test_queue_ttl_expires_exactly_at_deadline():
    c, clock, vh = setup()
    declare(c, "q", **{"x-message-ttl": 100})
    pub(c, "q")
    assert vh.scheduler.next_deadline() == pytest.approx(clock.now + 0.1)
    advance(c, clock, vh, 0.099)
    assert vh.queues["q"].message_count == 1
    advance(c, clock, vh, 0.001)
    assert vh.queues["q"].message_count == 0


def test_expired_message_never_delivered_even_before_the_timer_runs():
    c, clock, vh = setup()
    declare(c, "q", **{"x-message-ttl": 100})
    pub(c, "q", b"old")
    clock.now += 0.2                                 # no timer tick
    pub(c, "q", b"new")
    assert bodies(c, "q") == [b"new"]


@pytest.mark.parametrize("queue_ttl,expiration,lives_ms", [
    (None, "50", 50), (1000, "50", 50), (50, "1000", 50), (100, None, 100), (None, "0", 0)])
def test_smaller_ttl_wins(queue_ttl, expiration, lives_ms):
    c, clock, vh = setup()
    declare(c, "q", **({"x-message-ttl": queue_ttl} if queue_ttl is not None else {}))
    pub(c, "q", **({"expiration": expiration} if expiration is not None else {}))
    if lives_ms:
        advance(c, clock, vh, lives_ms / 1000 - 0.001)
        assert vh.queues["q"].message_count == 1
    advance(c, clock, vh, 0.001)
    assert vh.queues["q"].message_count == 0


def test_expired_not_at_head_dead_lettered_promptly():
    c, clock, vh = setup()
    dlx_pair(c)
    pub(c, "src", b"live")
    pub(c, "src", b"short", expiration="50")
    pub(c, "src", b"tail")
    advance(c, clock, vh, 0.05)
    assert [m.body for m in ready_msgs(vh, "dlq")] == [b"short"]
    assert _deaths(ready_msgs(vh, "dlq")[0]) == [("src", "expired", 1)]
    assert bodies(c, "src") == [b"live", b"tail"]


def test_ttl_zero_goes_to_waiting_consumer_else_expires():
    c, clock, vh = setup()
    dlx_pair(c, **{"x-message-ttl": 0})
    pub(c, "src", b"nobody")
    assert [m.body for m in ready_msgs(vh, "dlq")] == [b"nobody"]
    frames = c.rpc(1, C.Basic.Consume(queue="src", consumer_tag="t"))
    assert names(frames) == ["Basic.ConsumeOk"]
    frames = pub(c, "src", b"taken")
    assert [m.body for m in messages(frames)] == [b"taken"]
    assert len(ready_msgs(vh, "dlq")) == 1


def test_ttl_zero_with_full_consumer_expires():
    c, clock, vh = setup()
    dlx_pair(c, **{"x-message-ttl": 0})
    c.call(1, C.Basic.Qos(prefetch_count=1), "Basic.QosOk")
    c.rpc(1, C.Basic.Consume(queue="src", consumer_tag="t"))
    assert len(messages(pub(c, "src", b"1"))) == 1
    assert messages(pub(c, "src", b"2")) == []        # consumer is full: expires at once
    assert [m.body for m in ready_msgs(vh, "dlq")] == [b"2"]


def test_requeue_keeps_original_expiry():
    c, clock, vh = setup()
    dlx_pair(c, **{"x-message-ttl": 100})
    pub(c, "src")
    m = get(c, "src", no_ack=False)
    advance(c, clock, vh, 0.5)                       # unacked messages do not expire
    assert ready_msgs(vh, "dlq") == []
    c.rpc(1, C.Basic.Nack(delivery_tag=m.method.delivery_tag, requeue=True))
    advance(c, clock, vh, 0)
    assert vh.queues["src"].message_count == 0
    assert _deaths(ready_msgs(vh, "dlq")[0]) == [("src", "expired", 1)]


def test_requeued_message_not_yet_expired_keeps_remaining_ttl():
    c, clock, vh = setup()
    declare(c, "q", **{"x-message-ttl": 100})
    pub(c, "q")
    m = get(c, "q", no_ack=False)
    clock.now += 0.06
    c.rpc(1, C.Basic.Reject(delivery_tag=m.method.delivery_tag, requeue=True))
    advance(c, clock, vh, 0.039)
    assert vh.queues["q"].message_count == 1
    advance(c, clock, vh, 0.002)
    assert vh.queues["q"].message_count == 0


def test_expiry_per_queue_independent():
    c, clock, vh = setup()
    declare(c, "fast", **{"x-message-ttl": 10})
    declare(c, "slow", **{"x-message-ttl": 1000})
    for q in ("fast", "slow"):
        c.call(1, C.Queue.Bind(queue=q, exchange="amq.fanout"), "Queue.BindOk")
    pub(c, "", exchange="amq.fanout")
    advance(c, clock, vh, 0.02)
    assert vh.queues["fast"].message_count == 0
    assert vh.queues["slow"].message_count == 1


@pytest.mark.parametrize("value,text", [
    ("abc", "invalid expiration 'abc': no_integer"),
    ("-1", "invalid expiration '-1': negative_value"),
    ("315360000001", "invalid expiration '315360000001': value_too_large"),
])
def test_invalid_expiration_406(value, text):
    c, clock, vh = setup()
    frames = pub(c, "q", expiration=value)
    close = close_frame(frames, 1)
    assert close.reply_code == 406 and close.reply_text == f"PRECONDITION_FAILED - {text}"


# --------------------------------------------------------------------------- x-expires


def test_queue_expires_after_idle_period():
    c, clock, vh = setup()
    declare(c, "q", **{"x-expires": 1000})
    advance(c, clock, vh, 0.999)
    assert "q" in vh.queues
    advance(c, clock, vh, 0.001)
    assert "q" not in vh.queues


@pytest.mark.parametrize("use", ["redeclare", "passive", "get", "consume-cancel"])
def test_queue_expiry_lease_renewed(use):
    c, clock, vh = setup()
    declare(c, "q", **{"x-expires": 1000})
    advance(c, clock, vh, 0.8)
    if use == "redeclare":
        declare(c, "q", **{"x-expires": 1000})
    elif use == "passive":
        c.call(1, C.Queue.Declare(queue="q", passive=True), "Queue.DeclareOk")
    elif use == "get":
        assert get(c, "q") is None
    else:
        c.rpc(1, C.Basic.Consume(queue="q", consumer_tag="t"))
        advance(c, clock, vh, 5)                     # never expires while consumed
        assert "q" in vh.queues
        c.call(1, C.Basic.Cancel(consumer_tag="t"), "Basic.CancelOk")
    advance(c, clock, vh, 0.8)
    assert "q" in vh.queues
    advance(c, clock, vh, 0.2)
    assert "q" not in vh.queues


def test_queue_expiry_cancels_consumers_of_nobody_and_frees_the_name():
    c, clock, vh = setup()
    declare(c, "q", **{"x-expires": 10, "x-message-ttl": 5})
    pub(c, "q")
    advance(c, clock, vh, 1)
    assert "q" not in vh.queues
    declare(c, "q")                                  # a fresh queue, other arguments
    assert vh.queues["q"].args.expires is None


# =========================================================================== length limits


def test_drop_head_by_count_dead_letters_maxlen():
    c, clock, vh = setup()
    dlx_pair(c, **{"x-max-length": 2})
    for b in (b"1", b"2", b"3", b"4"):
        pub(c, "src", b)
    assert [m.body for m in ready_msgs(vh, "dlq")] == [b"1", b"2"]
    assert _deaths(ready_msgs(vh, "dlq")[0]) == [("src", "maxlen", 1)]
    assert bodies(c, "src") == [b"3", b"4"]


def test_drop_head_by_bytes():
    c, clock, vh = setup()
    declare(c, "q", **{"x-max-length-bytes": 10})
    for b in (b"aaaa", b"bbbb", b"cccc", b""):
        pub(c, "q", b)
    assert vh.queues["q"].ready_bytes == 8
    assert bodies(c, "q") == [b"bbbb", b"cccc", b""]


def test_both_limits_whichever_first():
    c, clock, vh = setup()
    declare(c, "q", **{"x-max-length": 3, "x-max-length-bytes": 5})
    for b in (b"aa", b"bb", b"cc", b"d"):
        pub(c, "q", b)
    assert bodies(c, "q") == [b"bb", b"cc", b"d"]     # 6 bytes > 5: aa dropped


def test_message_larger_than_byte_limit_dropped_at_once():
    c, clock, vh = setup()
    dlx_pair(c, **{"x-max-length-bytes": 3})
    pub(c, "src", b"toolong")
    assert vh.queues["src"].message_count == 0
    assert [m.body for m in ready_msgs(vh, "dlq")] == [b"toolong"]


def test_limits_count_ready_only():
    c, clock, vh = setup()
    declare(c, "q", **{"x-max-length": 1})
    pub(c, "q", b"1")
    m = get(c, "q", no_ack=False)
    pub(c, "q", b"2")
    c.rpc(1, C.Basic.Reject(delivery_tag=m.method.delivery_tag, requeue=True))
    # the requeue takes the queue over its limit; RabbitMQ does not drop on requeue
    assert vh.queues["q"].message_count == 2


def _confirms(c, ch, *publishes):
    """Publish on a confirm-mode channel; return the confirms the connection wrote."""
    frames = []
    for rk, body in publishes:
        frames += c.publish(ch, "", rk, body)
    frames += c.recv()
    return [(f.name, f.delivery_tag) for _, f in frames
            if f.__class__.__name__ in ("Ack", "Nack")]


def test_reject_publish_confirms():
    c, clock, vh = setup()
    c.call(1, C.Confirm.Select(), "Confirm.SelectOk")
    declare(c, "q", **{"x-max-length": 1, "x-overflow": "reject-publish"})
    got = _confirms(c, 1, ("q", b"1"), ("q", b"2"), ("q", b"3"))
    assert got == [("Basic.Ack", 1), ("Basic.Nack", 2), ("Basic.Nack", 3)]
    assert vh.queues["q"].message_count == 1


def test_reject_publish_dlx_dead_letters_with_maxlen():
    c, clock, vh = setup()
    dlx_pair(c, **{"x-max-length": 1, "x-overflow": "reject-publish-dlx"})
    pub(c, "src", b"1")
    pub(c, "src", b"2")
    assert [m.body for m in ready_msgs(vh, "dlq")] == [b"2"]
    assert _deaths(ready_msgs(vh, "dlq")[0]) == [("src", "maxlen", 1)]
    assert bodies(c, "src") == [b"1"]


def test_reject_publish_by_bytes():
    c, clock, vh = setup()
    declare(c, "q", **{"x-max-length-bytes": 5, "x-overflow": "reject-publish"})
    for b in (b"abc", b"def", b"gh", b"i"):
        pub(c, "q", b)
    assert bodies(c, "q") == [b"abc", b"gh"]


def test_reject_publish_one_of_two_queues_nacks_other_keeps():
    c, clock, vh = setup()
    c.call(1, C.Confirm.Select(), "Confirm.SelectOk")
    declare(c, "full", **{"x-max-length": 0, "x-overflow": "reject-publish"})
    declare(c, "other")
    for q in ("full", "other"):
        c.call(1, C.Queue.Bind(queue=q, exchange="amq.fanout"), "Queue.BindOk")
    frames = c.publish(1, "amq.fanout", "", b"x") + c.recv()
    assert [f.name for _, f in frames] == ["Basic.Nack"]
    assert vh.queues["other"].message_count == 1


# =========================================================================== priorities


def test_priority_order_fifo_within_and_clamping():
    c, clock, vh = setup()
    declare(c, "q", **{"x-max-priority": 5})
    for prio, body in [(0, "a"), (5, "b"), (None, "c"), (9, "d"), (5, "e"), (1, "f")]:
        pub(c, "q", body.encode(), **({"priority": prio} if prio is not None else {}))
    assert bodies(c, "q") == [b"b", b"d", b"e", b"f", b"a", b"c"]


def test_priority_requeue_restores_place():
    c, clock, vh = setup()
    declare(c, "q", **{"x-max-priority": 10})
    for prio, body in [(1, "l1"), (9, "h1"), (9, "h2"), (1, "l2")]:
        pub(c, "q", body.encode(), priority=prio)
    tags = [get(c, "q", no_ack=False).method.delivery_tag for _ in range(3)]  # h1 h2 l1
    for tag in reversed(tags):
        c.rpc(1, C.Basic.Reject(delivery_tag=tag, requeue=True))
    msgs = []
    while (m := get(c, "q")) is not None:
        msgs.append((m.body, m.method.redelivered))
    assert msgs == [(b"h1", True), (b"h2", True), (b"l1", True), (b"l2", False)]


def test_priority_with_ttl_and_limits():
    c, clock, vh = setup()
    dlx_pair(c, **{"x-max-priority": 3, "x-max-length": 2})
    pub(c, "src", b"low", priority=0)
    pub(c, "src", b"high", priority=3)
    pub(c, "src", b"mid", priority=2)
    # drop-head drops the head in delivery order: the highest priority first
    assert [m.body for m in ready_msgs(vh, "dlq")] == [b"high"]
    assert bodies(c, "src") == [b"mid", b"low"]


def test_priority_max_priority_zero_is_fifo():
    c, clock, vh = setup()
    declare(c, "q", **{"x-max-priority": 0})
    for prio, body in [(5, b"a"), (0, b"b"), (9, b"c")]:
        pub(c, "q", body, priority=prio)
    assert bodies(c, "q") == [b"a", b"b", b"c"]


# =========================================================================== single active consumer


def test_single_active_consumer_failover():
    c, clock, vh = setup()
    c.open_channel(2)
    declare(c, "q", **{"x-single-active-consumer": True})
    c.rpc(1, C.Basic.Consume(queue="q", consumer_tag="a"))
    c.rpc(2, C.Basic.Consume(queue="q", consumer_tag="b"))
    ok = c.call(1, C.Queue.Declare(queue="q", passive=True), "Queue.DeclareOk")
    assert ok.consumer_count == 2
    frames = []
    for i in range(3):
        frames += pub(c, "q", f"m{i}".encode())
    assert [(m.method.consumer_tag, m.body) for m in messages(frames)] == [
        ("a", b"m0"), ("a", b"m1"), ("a", b"m2")]
    # closing channel 1: its unacked messages go to b, in order, redelivered
    frames = c.rpc(1, C.Channel.Close(reply_code=200, reply_text="", class_id=0, method_id=0))
    frames += c.recv()
    got = [(m.method.consumer_tag, m.body, m.method.redelivered) for m in messages(frames)]
    assert got == [("b", b"m0", True), ("b", b"m1", True), ("b", b"m2", True)]


def test_single_active_consumer_idle_when_active_is_full():
    c, clock, vh = setup()
    c.open_channel(2)
    declare(c, "q", **{"x-single-active-consumer": True})
    c.call(1, C.Basic.Qos(prefetch_count=1), "Basic.QosOk")
    c.rpc(1, C.Basic.Consume(queue="q", consumer_tag="a"))
    c.rpc(2, C.Basic.Consume(queue="q", consumer_tag="b"))
    frames = pub(c, "q", b"1") + pub(c, "q", b"2")
    assert [(m.method.consumer_tag, m.body) for m in messages(frames)] == [("a", b"1")]
    assert vh.queues["q"].message_count == 1       # b does not get it


# =========================================================================== delivery limit


def test_delivery_limit_count_header_and_dead_letter():
    c, clock, vh = setup()
    dlx_pair(c, **{"x-delivery-limit": 2})
    pub(c, "src", b"poison", headers={"a": 1})
    seen = []
    for _ in range(3):
        m = get(c, "src", no_ack=False)
        seen.append((m.properties.headers or {}).get("x-delivery-count"))
        c.rpc(1, C.Basic.Nack(delivery_tag=m.method.delivery_tag, requeue=True))
    assert seen == [None, 1, 2]
    assert vh.queues["src"].message_count == 0
    (dead,) = ready_msgs(vh, "dlq")
    assert _deaths(dead) == [("src", "delivery_limit", 1)]
    h = dict(raw_headers(dead))
    assert "x-delivery-count" not in h and h["a"] == b"b\x01"


def test_delivery_count_header_is_long():
    c, clock, vh = setup()
    declare(c, "q", **{"x-delivery-limit": 5})
    pub(c, "q")
    m = get(c, "q", no_ack=False)
    c.rpc(1, C.Basic.Reject(delivery_tag=m.method.delivery_tag, requeue=True))
    qm = vh.queues["q"].ready.head()
    from amqpbroker.delivery import _props
    h = dict(table_items(split_properties(_props(qm))[F_HEADERS]))
    assert h["x-delivery-count"] == b"l" + (1).to_bytes(8, "big")


def test_delivery_limit_counts_channel_close_requeues_and_drops_without_dlx():
    c, clock, vh = setup()
    declare(c, "q", **{"x-delivery-limit": 1})
    pub(c, "q")
    for n in (2, 3):
        c.open_channel(n)
        assert get(c, "q", ch=n, no_ack=False) is not None
        c.rpc(n, C.Channel.Close(reply_code=200, reply_text="", class_id=0, method_id=0))
    assert vh.queues["q"].message_count == 0


def test_quorum_default_delivery_limit_20_and_unlimited():
    assert QueueArgs.parse("q", "/", {"x-queue-type": "quorum"}).delivery_limit == 20
    assert QueueArgs.parse("q", "/", {"x-queue-type": "quorum",
                                      "x-delivery-limit": -1}).delivery_limit is None
    assert QueueArgs.parse("q", "/", {}).delivery_limit is None
    assert QueueArgs.parse("q", "/", {"x-delivery-limit": 0}).delivery_limit == 0


def test_no_delivery_count_header_without_limit():
    c, clock, vh = setup()
    declare(c, "q")
    pub(c, "q")
    m = get(c, "q", no_ack=False)
    c.rpc(1, C.Basic.Reject(delivery_tag=m.method.delivery_tag, requeue=True))
    m = get(c, "q")
    assert m.method.redelivered and not (m.properties.headers or {})


# =========================================================================== CC / BCC


def test_bcc_removed_cc_kept_each_queue_once():
    c, clock, vh = setup()
    for q in ("main", "cc1", "bcc1"):
        declare(c, q)
    pub(c, "main", headers={"CC": ["cc1", "main"], "BCC": ["bcc1", "cc1"], "x": 1})
    for q in ("main", "cc1", "bcc1"):
        (msg,) = ready_msgs(vh, q)
        h = dict(raw_headers(msg))
        assert "BCC" not in h and "CC" in h and h["x"] == b"b\x01"


@pytest.mark.parametrize("header,value,type_name", [
    ("CC", "k", "longstr"), ("BCC", {"a": 1}, "table"), ("CC", 5, "byte")])
def test_cc_bcc_wrong_type_406(header, value, type_name):
    c, clock, vh = setup()
    frames = pub(c, "q", headers={header: value})
    close = close_frame(frames, 1)
    assert close.reply_code == 406
    assert close.reply_text == (f'PRECONDITION_FAILED - invalid message: '
                                f'{{unacceptable_type_in_header,"{header}",{type_name}}}')


def test_cc_non_string_elements_ignored():
    c, clock, vh = setup()
    declare(c, "q")
    assert pub(c, "nowhere", headers={"CC": ["q", 1, True]}) == []
    assert bodies(c, "q") == [b"x"]


def test_bcc_counts_as_routed_for_mandatory():
    c, clock, vh = setup()
    declare(c, "q")
    frames = c.publish(1, "", "nowhere", b"x", props(headers={"BCC": ["q"]}), mandatory=True)
    assert "Basic.Return" not in names(frames)


# =========================================================================== direct reply-to


REPLY_TO = "amq.rabbitmq.reply-to"


def test_direct_reply_to_round_trip():
    c, clock, vh = setup()
    c.open_channel(2)
    declare(c, "rpc")
    frames = c.rpc(1, C.Basic.Consume(queue=REPLY_TO, consumer_tag="r", no_ack=True))
    assert names(frames) == ["Basic.ConsumeOk"]
    pub(c, "rpc", b"ping", reply_to=REPLY_TO)
    req = get(c, "rpc", ch=2)
    token_name = req.properties.reply_to
    assert token_name.startswith(REPLY_TO + ".") and len(token_name) > len(REPLY_TO) + 8
    ok = c.call(2, C.Queue.Declare(queue=token_name, passive=True), "Queue.DeclareOk")
    assert ok.message_count == 0
    frames = c.publish(2, "", token_name, b"pong", mandatory=True)
    (reply,) = messages(frames)
    assert reply.channel == 1 and reply.body == b"pong"
    assert reply.method.consumer_tag == "r" and reply.method.routing_key == token_name
    # the requester goes: the name disappears and replies are unroutable
    c.call(1, C.Basic.Cancel(consumer_tag="r"), "Basic.CancelOk")
    frames = c.publish(2, "", token_name, b"late", mandatory=True)
    assert names(frames)[0] == "Basic.Return"
    frames = c.rpc(2, C.Queue.Declare(queue=token_name, passive=True))
    assert close_frame(frames, 2).reply_code == 404


@pytest.mark.parametrize("no_ack,twice,text", [
    (False, False, "reply consumer cannot acknowledge"),
    (True, True, "reply consumer already set")])
def test_direct_reply_to_consume_errors(no_ack, twice, text):
    c, clock, vh = setup()
    if twice:
        c.rpc(1, C.Basic.Consume(queue=REPLY_TO, no_ack=True))
    frames = c.rpc(1, C.Basic.Consume(queue=REPLY_TO, no_ack=no_ack))
    close = close_frame(frames, 1)
    assert (close.reply_code, close.reply_text) == (406, f"PRECONDITION_FAILED - {text}")


def test_direct_reply_to_publish_without_consumer_406():
    c, clock, vh = setup()
    frames = pub(c, "anything", reply_to=REPLY_TO)
    close = close_frame(frames, 1)
    assert close.reply_text == "PRECONDITION_FAILED - fast reply consumer does not exist"


def test_direct_reply_to_consumer_on_other_channel_does_not_count():
    c, clock, vh = setup()
    c.open_channel(2)
    c.rpc(2, C.Basic.Consume(queue=REPLY_TO, no_ack=True))
    frames = pub(c, "anything", reply_to=REPLY_TO)
    assert close_frame(frames, 1).reply_code == 406


def test_direct_reply_to_capability_advertised():
    from .sim import Client
    c = Client()
    start = c.start()
    assert start.server_properties["capabilities"]["direct_reply_to"] is True


# =========================================================================== transactions


def test_tx_buffers_publishes_and_acks_until_commit():
    c, clock, vh = setup()
    declare(c, "q")
    pub(c, "q", b"a")
    c.call(1, C.Tx.Select(), "Tx.SelectOk")
    m = get(c, "q", no_ack=False)
    assert c.rpc(1, C.Basic.Ack(delivery_tag=m.method.delivery_tag)) == []
    pub(c, "q", b"b")
    assert vh.queues["q"].message_count == 0 and vh.queues["q"].unacked_count == 1
    c.call(1, C.Tx.Commit(), "Tx.CommitOk")
    assert vh.queues["q"].message_count == 1 and vh.queues["q"].unacked_count == 0


def test_tx_rollback_leaves_messages_unacked_and_requeued_on_close():
    c, clock, vh = setup()
    declare(c, "q")
    pub(c, "q", b"a")
    c.call(1, C.Tx.Select(), "Tx.SelectOk")
    m = get(c, "q", no_ack=False)
    c.rpc(1, C.Basic.Ack(delivery_tag=m.method.delivery_tag))
    c.call(1, C.Tx.Rollback(), "Tx.RollbackOk")
    assert vh.queues["q"].unacked_count == 1
    # the tag is still valid after the rollback
    assert c.rpc(1, C.Basic.Reject(delivery_tag=m.method.delivery_tag, requeue=True)) == []
    c.call(1, C.Tx.Commit(), "Tx.CommitOk")
    m = get(c, "q")
    assert m.body == b"a" and m.method.redelivered


def test_tx_reject_to_dlx_only_on_commit():
    c, clock, vh = setup()
    dlx_pair(c)
    pub(c, "src")
    c.call(1, C.Tx.Select(), "Tx.SelectOk")
    m = get(c, "src", no_ack=False)
    reject(c, m.method.delivery_tag)
    assert ready_msgs(vh, "dlq") == []
    c.call(1, C.Tx.Commit(), "Tx.CommitOk")
    assert _deaths(ready_msgs(vh, "dlq")[0]) == [("src", "rejected", 1)]


def test_tx_close_with_pending_acks_requeues():
    c, clock, vh = setup()
    declare(c, "q")
    pub(c, "q")
    c.call(1, C.Tx.Select(), "Tx.SelectOk")
    m = get(c, "q", no_ack=False)
    c.rpc(1, C.Basic.Ack(delivery_tag=m.method.delivery_tag))
    c.rpc(1, C.Channel.Close(reply_code=200, reply_text="", class_id=0, method_id=0))
    assert vh.queues["q"].message_count == 1


@pytest.mark.parametrize("method,text", [
    (C.Tx.Commit(), "channel is not transactional"),
    (C.Tx.Rollback(), "channel is not transactional")])
def test_tx_without_select(method, text):
    c, clock, vh = setup()
    close = close_frame(c.rpc(1, method), 1)
    assert (close.reply_code, close.reply_text) == (406, f"PRECONDITION_FAILED - {text}")


def test_tx_reject_publish_in_tx_is_silent():
    c, clock, vh = setup()
    declare(c, "q", **{"x-max-length": 0, "x-overflow": "reject-publish"})
    c.call(1, C.Tx.Select(), "Tx.SelectOk")
    pub(c, "q")
    frames = c.rpc(1, C.Tx.Commit())
    assert names(frames) == ["Tx.CommitOk"]


# =========================================================================== queue arguments


def _parse_error(args, types=None):
    with pytest.raises(errors.PreconditionFailed) as ei:
        QueueArgs.parse("q", "/", args, types)
    return str(ei.value.args[0] if ei.value.args else ei.value)


@pytest.mark.parametrize("args,types,why", [
    ({"x-message-ttl": -1}, None, "{value_negative,-1}"),
    ({"x-message-ttl": 315_360_000_001}, None, "{value_too_large,315360000001}"),
    ({"x-expires": 0}, None, "{value_zero,0}"),
    ({"x-expires": 315_360_000_001}, None, "{value_too_large,315360000001}"),
    ({"x-max-length": "1"}, {"x-max-length": "longstr"}, '"expected integer, got longstr"'),
    ({"x-max-length-bytes": -5}, None, "{value_negative,-5}"),
    ({"x-max-priority": 256}, None, "{max_value_exceeded,256}"),
    ({"x-max-priority": -1}, None, "{value_negative,-1}"),
    ({"x-overflow": "drop-tail"}, None, "invalid_overflow"),
    ({"x-overflow": 1}, {"x-overflow": "byte"}, "{unacceptable_type,byte}"),
    ({"x-single-active-consumer": 1}, {"x-single-active-consumer": "signedint"},
     "{unacceptable_type,signedint}"),
    ({"x-queue-type": "nope"}, None, "\"unsupported queue type 'nope'\""),
    ({"x-dead-letter-routing-key": "k"}, None, "routing_key_but_no_dlx_defined"),
    ({"x-delivery-limit": -2}, None, "{value_negative,-2}"),
])
def test_queue_argument_texts(args, types, why):
    text = _parse_error(args, types)
    key = next(iter(args))
    assert text.endswith(f"invalid arg '{key}' for queue 'q' in vhost '/': {why}"), text


def test_queue_argument_text_on_the_wire():
    c, clock, vh = setup()
    frames = c.rpc(1, C.Queue.Declare(queue="q", arguments={"x-max-priority": 300}))
    close = close_frame(frames, 1)
    assert close.reply_text == ("PRECONDITION_FAILED - invalid arg 'x-max-priority' for "
                                "queue 'q' in vhost '/': {max_value_exceeded,300}")


def test_dlx_wrong_type_checked_by_channel():
    c, clock, vh = setup()
    frames = c.rpc(1, C.Queue.Declare(queue="q", arguments={"x-dead-letter-exchange": 1}))
    close = close_frame(frames, 1)
    assert close.reply_code == 406
    assert close.reply_text.startswith("PRECONDITION_FAILED - invalid type '")
    assert close.reply_text.endswith("' for arg 'x-dead-letter-exchange' in queue 'q' in "
                                     "vhost '/'")


def test_quorum_accepted_as_durable_classic_and_stream_refused():
    c, clock, vh = setup()
    c.declare(1, "qq", durable=True, arguments={"x-queue-type": "quorum"})
    assert vh.queues["qq"].durable and vh.queues["qq"].args.queue_type == "quorum"
    frames = c.rpc(1, C.Queue.Declare(queue="qq", durable=True))
    assert "inequivalent arg 'x-queue-type'" in close_frame(frames, 1).reply_text
    c.open_channel(2)
    frames = c.rpc(2, C.Queue.Declare(queue="qq2", arguments={"x-queue-type": "quorum"}))
    assert close_frame(frames, 2).reply_text == (
        "PRECONDITION_FAILED - invalid property 'non-durable' for queue 'qq2' in vhost '/'")
    c.open_channel(3)
    frames = c.rpc(3, C.Queue.Declare(queue="s", durable=True,
                                      arguments={"x-queue-type": "stream"}))
    assert close_frame(frames, 3).reply_code == 406


# =========================================================================== queue, directly


def test_queue_methods_take_time():
    """The queue never reads a clock: every time-dependent method is given ``now``."""
    dead = []
    q = Queue("q", args=QueueArgs(message_ttl=100),
              dead_letter=lambda q, m, r: dead.append((m.body, r)))
    msg = Message("", "q", C.Basic.Properties().marshal(), b"a")
    q.accept(msg, 10.0)
    assert q.next_deadline() == pytest.approx(10.1)
    assert q.take(10.05) is not None
    q.accept(Message("", "q", C.Basic.Properties().marshal(), b"b"), 10.0)
    q.expire(10.1)
    assert dead == [(b"b", "expired")]
    vh = VirtualHost("v", clock=Clock(5.0))
    assert vh.clock() == 5.0
