"""Restart tests: what survives a clean stop (SIGTERM) and a SIGKILL of our broker, on the
same data directory, and what must not.

Survives: durable exchanges (with arguments), durable queues (with arguments), bindings
between durable entities (with arguments), persistent messages in durable queues (order,
properties, body, exchange and routing key; redelivered=true), users and permissions and
definitions from the YAML config.  Does not: transient exchanges and queues, exclusive
queues, transient messages, bindings from or to transient entities; acked, purged,
dead-lettered messages and deleted queues stay gone.  A clean stop closes connections with
320 CONNECTION_FORCED.
"""
from __future__ import annotations

import os
import signal
import tempfile
import time
import uuid

import pika
import pika.exceptions
import pytest

from conftest import start_amqpbroker, stop

pytestmark = pytest.mark.amqpbroker_only("restarts our own broker process")

USER, PASSWORD = "app", "app-secret"
SHUTDOWN = "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"


def _hash(password: str) -> str:
    from amqpbroker.broker import hash_password
    return hash_password(password, os.urandom(4))


CONFIG = f"""\
vhosts: ["/", "other"]
users:
  - name: guest
    password: guest
  - name: {USER}
    password_hash: "{_hash(PASSWORD)}"
permissions:
  - user: guest
  - user: guest
    vhost: other
  - user: {USER}
    configure: "^app-.*"
    write: "^app-.*"
    read: "^app-.*"
definitions:
  exchanges:
    - name: def-x
      type: topic
  queues:
    - name: def-q
      arguments: {{x-max-length: 1000}}
  bindings:
    - source: def-x
      destination: def-q
      routing_key: "def.#"
"""


class Broker:
    """Our broker on one data directory and one config, restartable."""

    def __init__(self, tmp_path):
        self.dir = str(tmp_path / "data")
        self.config = str(tmp_path / "broker.yaml")
        with open(self.config, "w") as f:
            f.write(CONFIG)
        self.proc = None
        self.port = 0
        self.start()

    def start(self) -> None:
        self.proc, self.port = start_amqpbroker("--config", self.config, data_dir=self.dir)

    def restart(self, how: str) -> None:
        if how == "kill":
            self.proc.kill()
            self.proc.wait(10)
        else:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(15) == 0
        self.start()

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop(self.proc)

    def connect(self, user="guest", password="guest", vhost="/") -> pika.BlockingConnection:
        return pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", self.port, vhost, pika.PlainCredentials(user, password),
            connection_attempts=1, socket_timeout=10, heartbeat=0))


@pytest.fixture
def b(tmp_path):
    broker = Broker(tmp_path)
    yield broker
    broker.close()


def props(i: int, persistent: bool = True, **kw) -> pika.BasicProperties:
    return pika.BasicProperties(
        delivery_mode=2 if persistent else 1, message_id=f"m{i}",
        content_type="application/octet-stream", content_encoding="identity",
        correlation_id=f"c{i}", reply_to="somewhere", type="t", app_id="restart-test",
        timestamp=1_700_000_000 + i,
        headers={"i": i, "s": "x" * i, "b": True, "nested": {"l": [1, "two"]},
                 "big": 2**40},
        **kw)


def body(i: int) -> bytes:
    return b"body-%d-" % i + bytes(range(256)) * (i % 3)


def expect_404(conn, action) -> str:
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        action(ch)
    assert e.value.reply_code == 404, e.value
    return e.value.reply_text


def drain(ch, queue: str) -> list:
    out = []
    while True:
        method, p, data = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return out
        out.append((method, p, data))


@pytest.mark.parametrize("how", ["term", "kill"])
def test_durable_state_survives_and_transient_state_does_not(b, how):
    conn = b.connect()
    ch = conn.channel()
    ch.confirm_delivery()
    # topology: durable topic with an alternate exchange, e2e binding, headers binding
    ch.exchange_declare("ae", "fanout", durable=True)
    ch.exchange_declare("dx", "topic", durable=True, arguments={"alternate-exchange": "ae"})
    ch.exchange_declare("hx", "headers", durable=True)
    ch.exchange_declare("tx", "direct", durable=False)
    ch.exchange_declare("e2e", "direct", durable=True)
    ch.queue_declare("dq", durable=True, arguments={
        "x-message-ttl": 3_600_000, "x-max-length": 1000, "x-dead-letter-exchange": "ae",
        "x-overflow": "reject-publish", "x-custom": "kept"})
    ch.queue_declare("unrouted", durable=True)
    ch.queue_declare("hq", durable=True)
    ch.queue_declare("prio", durable=True, arguments={"x-max-priority": 9})
    ch.queue_declare("tq", durable=False)
    ch.queue_declare("xq", durable=True, exclusive=True)
    ch.queue_bind("dq", "dx", "a.*")
    ch.queue_bind("unrouted", "ae")
    ch.queue_bind("hq", "hx", arguments={"x-match": "all", "k": "v"})
    ch.exchange_bind("dx", "e2e", "a.x")         # e2e -> dx
    ch.queue_bind("dq", "tx", "t")               # transient source: not recovered
    ch.queue_bind("tq", "dx", "a.*")             # transient queue: not recovered
    # messages: persistent and transient interleaved
    for i in range(1, 21):
        ch.basic_publish("dx", "a.b", body(i), props(i, persistent=i % 4 != 0))
    ch.basic_publish("dx", "nothing", body(100), props(100))       # to the AE
    ch.basic_publish("hx", "", body(101), pika.BasicProperties(delivery_mode=2,
                                                                headers={"k": "v"}))
    for p in (1, 9, 5, 0, 9):
        ch.basic_publish("", "prio", b"p%d" % p, pika.BasicProperties(delivery_mode=2,
                                                                       priority=p))
    ch.basic_publish("", "xq", b"exclusive", pika.BasicProperties(delivery_mode=2))
    # one message delivered but not acked when the broker goes: it comes back first
    held = conn.channel()
    m, _p, _d = held.basic_get("dq", auto_ack=False)
    assert m is not None
    ochan = b.connect(vhost="other").channel()
    ochan.queue_declare("oq", durable=True)
    ochan.confirm_delivery()
    ochan.basic_publish("", "oq", b"in other", pika.BasicProperties(delivery_mode=2))

    watcher = b.connect()
    if how == "term":
        b.proc.send_signal(signal.SIGTERM)
        # every connection gets 320 CONNECTION_FORCED
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                watcher.process_data_events(time_limit=0.2)
        assert (e.value.reply_code, e.value.reply_text) == (320, SHUTDOWN)
        assert b.proc.wait(15) == 0
        b.start()
    else:
        b.restart("kill")

    conn = b.connect()
    ch = conn.channel()
    # durable exchanges and queues: an equivalent redeclare is fine (arguments kept)
    ch.exchange_declare("dx", "topic", durable=True, arguments={"alternate-exchange": "ae"})
    ch.exchange_declare("ae", "fanout", passive=True)
    ch.exchange_declare("hx", "headers", passive=True)
    ch.exchange_declare("e2e", "direct", passive=True)
    ok = ch.queue_declare("dq", durable=True, arguments={
        "x-message-ttl": 3_600_000, "x-max-length": 1000, "x-dead-letter-exchange": "ae",
        "x-overflow": "reject-publish"})
    assert ok.method.message_count == 15   # 20 published, 5 transient
    # an inequivalent redeclare is refused with the recovered value and type in the text
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        conn.channel().queue_declare("dq", durable=True, arguments={"x-max-length": 5})
    assert (e.value.reply_code, e.value.reply_text) == (
        406, "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue 'dq' in vhost "
             "'/': received none but current is the value '3600000' of type 'signedint'")
    # transient entities are gone
    assert expect_404(conn, lambda c: c.exchange_declare("tx", passive=True)) == \
        "NOT_FOUND - no exchange 'tx' in vhost '/'"
    for q in ("tq", "xq"):
        assert expect_404(conn, lambda c: c.queue_declare(q, passive=True)) == \
            f"NOT_FOUND - no queue '{q}' in vhost '/'"

    # messages: persistent only, in publish order (the unacked one back in its place),
    # all redelivered, everything as published
    got = drain(ch, "dq")
    expected = [i for i in range(1, 21) if i % 4 != 0]
    assert [d for _m, _p, d in got] == [body(i) for i in expected]
    for (method, p, _d), i in zip(got, expected):
        assert method.redelivered, i
        assert (method.exchange, method.routing_key) == ("dx", "a.b")
        want = props(i)
        for attr in ("delivery_mode", "message_id", "content_type", "content_encoding",
                     "correlation_id", "reply_to", "type", "app_id", "timestamp", "headers"):
            assert getattr(p, attr) == getattr(want, attr), (i, attr)
    [(m100, _p, d100)] = drain(ch, "unrouted")
    assert d100 == body(100) and m100.redelivered and m100.routing_key == "nothing"
    assert [d for _m, _p, d in drain(ch, "hq")] == [body(101)]
    assert [d for _m, _p, d in drain(ch, "prio")] == [b"p9", b"p9", b"p5", b"p1", b"p0"]

    # bindings: durable ones route, the e2e one too; transient ones are gone
    ch.confirm_delivery()
    ch.basic_publish("e2e", "a.x", b"via e2e", pika.BasicProperties(delivery_mode=2))
    ch.basic_publish("hx", "", b"hdr", pika.BasicProperties(headers={"k": "v"}))
    ch.basic_publish("hx", "", b"hdr-no", pika.BasicProperties(headers={"k": "w"}))
    ch.basic_publish("dx", "zzz", b"to ae")
    assert [d for _m, _p, d in drain(ch, "hq")] == [b"hdr"]
    assert [d for _m, _p, d in drain(ch, "unrouted")] == [b"to ae"]  # hx has no AE
    [(mv, _p, dv)] = drain(ch, "dq")
    assert dv == b"via e2e" and not mv.redelivered
    # the other vhost
    och = b.connect(vhost="other").channel()
    assert [d for _m, _p, d in drain(och, "oq")] == [b"in other"]
    assert expect_404(b.connect(vhost="other"), lambda c: c.queue_declare("dq", passive=True))
    conn.close()


@pytest.mark.parametrize("how", ["term", "kill"])
def test_settled_messages_stay_gone(b, how):
    conn = b.connect()
    ch = conn.channel()
    ch.confirm_delivery()
    ch.exchange_declare("dlx", "direct", durable=True)
    for q, args in (("acked", {}), ("purged", {}), ("deleted", {}), ("dead", {}),
                    ("ttl", {"x-message-ttl": 50, "x-dead-letter-exchange": "dlx",
                             "x-dead-letter-routing-key": "dead"}),
                    ("rej", {"x-dead-letter-exchange": "dlx",
                             "x-dead-letter-routing-key": "dead"}),
                    ("maxlen", {"x-max-length": 2})):
        ch.queue_declare(q, durable=True, arguments=args)
    ch.queue_bind("dead", "dlx", "dead")
    persistent = pika.BasicProperties(delivery_mode=2)
    for q in ("acked", "purged", "deleted", "ttl", "rej", "maxlen"):
        for i in range(5):
            ch.basic_publish("", q, b"%s-%d" % (q.encode(), i), persistent)
    # acked: the first two by basic.get + ack, one by consume + ack
    for _ in range(2):
        m, _p, _d = ch.basic_get("acked")
        ch.basic_ack(m.delivery_tag)
    ch.basic_qos(prefetch_count=1)
    got = []

    def on_msg(c, m, p, d):
        got.append(d)
        c.basic_ack(m.delivery_tag)
        c.basic_cancel(m.consumer_tag)
    ch.basic_consume("acked", on_msg)
    while not got:
        conn.process_data_events(time_limit=0.1)
    assert ch.queue_purge("purged").method.message_count == 5
    ch.queue_delete("deleted")
    for _ in range(2):
        m, _p, _d = ch.basic_get("rej")
        ch.basic_reject(m.delivery_tag, requeue=False)
    time.sleep(0.3)  # the ttl queue's messages expire into "dead"
    assert ch.queue_declare("ttl", passive=True).method.message_count == 0
    # a confirmed publish after all that: its sync covers every settlement before it
    ch.basic_publish("", "acked", b"marker", persistent)

    b.restart(how)
    conn = b.connect()
    ch = conn.channel()
    assert [d for _m, _p, d in drain(ch, "acked")] == [b"acked-3", b"acked-4", b"marker"]
    assert drain(ch, "purged") == []
    assert expect_404(conn, lambda c: c.queue_declare("deleted", passive=True)) == \
        "NOT_FOUND - no queue 'deleted' in vhost '/'"
    ch.queue_declare("deleted", durable=True)
    assert drain(ch, "deleted") == []  # the old messages did not come with the name
    assert drain(ch, "ttl") == []
    assert [d for _m, _p, d in drain(ch, "rej")] == [b"rej-2", b"rej-3", b"rej-4"]
    assert [d for _m, _p, d in drain(ch, "maxlen")] == [b"maxlen-3", b"maxlen-4"]
    dead = drain(ch, "dead")
    assert sorted(d for _m, _p, d in dead) == sorted(
        [b"ttl-%d" % i for i in range(5)] + [b"rej-0", b"rej-1"])
    reasons = {d: p.headers["x-death"][0]["reason"] for _m, p, d in dead}
    assert reasons[b"rej-0"] == "rejected" and reasons[b"ttl-0"] == "expired"
    conn.close()


def test_users_permissions_and_definitions(b):
    """From the YAML config: a hashed-password user with restricted permissions and
    definitions; definitions applied again on a restart over recovered state."""
    conn = b.connect(USER, PASSWORD)
    ch = conn.channel()
    ch.exchange_declare("app-x", "direct", durable=True)
    ch.queue_declare("app-q", durable=True)
    ch.queue_bind("app-q", "app-x", "k")
    ch.confirm_delivery()
    ch.basic_publish("app-x", "k", b"mine", pika.BasicProperties(delivery_mode=2))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare("other-q")
    assert (e.value.reply_code, e.value.reply_text) == (
        403, f"ACCESS_REFUSED - access to queue 'other-q' in vhost '/' refused for user '{USER}'")
    g = b.connect().channel()
    g.confirm_delivery()
    g.basic_publish("def-x", "def.a", b"through the definitions",
                    pika.BasicProperties(delivery_mode=2))

    for how in ("kill", "term"):
        b.restart(how)
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            b.connect(USER, "wrong")
        conn = b.connect(USER, PASSWORD)
        ch = conn.channel()
        assert ch.queue_declare("app-q", passive=True).method.message_count == 1
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.basic_get("def-q")
        assert e.value.reply_code == 403
        g = b.connect().channel()
        assert g.queue_declare("def-q", passive=True).method.message_count == 1
        conn.close()
    g = b.connect().channel()
    [(m, _p, d)] = drain(g, "def-q")
    assert d == b"through the definitions" and m.redelivered
    assert [d for _m, _p, d in drain(g, "app-q")] == [b"mine"]


def test_many_messages_in_order_after_kill(b):
    """Several thousand persistent messages from pipelined publishers (group commits of
    many messages), some acked: after SIGKILL the rest come back in order."""
    conn = b.connect()
    ch = conn.channel()
    ch.queue_declare("bulk", durable=True)
    ch.confirm_delivery()
    n = 3000
    persistent = pika.BasicProperties(delivery_mode=2)
    for i in range(n):
        ch.basic_publish("", "bulk", b"%06d" % i, persistent)
    for _ in range(1000):
        m, _p, _d = ch.basic_get("bulk")
        ch.basic_ack(m.delivery_tag)
    ch.basic_publish("", "bulk", b"%06d" % n, persistent)  # a confirm after the acks
    b.restart("kill")
    ch = b.connect().channel()
    got = [d for _m, _p, d in drain(ch, "bulk")]
    assert got == [b"%06d" % i for i in range(1000, n + 1)]


def test_memory_backend_keeps_nothing(tmp_path):
    cfg = tmp_path / "mem.yaml"
    cfg.write_text("storage:\n  backend: memory\n")
    proc, port = start_amqpbroker("--config", str(cfg), data_dir=str(tmp_path / "d"))
    try:
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        ch = conn.channel()
        ch.queue_declare("m", durable=True)
        ch.confirm_delivery()
        ch.basic_publish("", "m", b"x", pika.BasicProperties(delivery_mode=2))
        conn.close()
        stop(proc)
        assert not os.path.exists(tmp_path / "d" / "amqpbroker.sqlite3")
        proc, port = start_amqpbroker("--config", str(cfg), data_dir=str(tmp_path / "d"))
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            conn.channel().queue_declare("m", passive=True)
        assert e.value.reply_code == 404
        conn.close()
    finally:
        stop(proc)
