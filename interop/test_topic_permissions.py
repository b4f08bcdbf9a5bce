"""Topic permissions (issue 11 item 3), against BOTH brokers with the same user.

RabbitMQ gets a user of a unique name with ``rabbitmqctl add_user``, ``set_permissions``
(everything) and ``set_topic_permissions`` (deleted afterwards); amqpbroker gets the same
user, permissions and ``topic_permissions`` from a YAML config in a broker of its own (as
interop/test_permissions.py).  On ``amq.topic`` the user may publish with keys matching
``^{username}\\.``, ``^pub\\.``, ``^{client_id}\\.`` or ``^v{vhost}\\.`` and bind with keys
matching ``^pub\\.`` or ``^sub\\.``; a direct exchange carries a topic permission that
allows nothing, to show that only topic exchanges are checked.  Every expectation is
RabbitMQ 3.10's exact reply code, text and (over a raw socket) class and method ids.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import uuid

import pika
import pika.exceptions
import pytest

from conftest import REFERENCE_URL, start_amqpbroker, stop
from raw_support import RawClient, method, publish_frames
from pamqp import commands as C

RUN = uuid.uuid4().hex[:8]
# a "." in the name: {username} is expanded as regex text, not escaped, on both brokers
USER, PASSWORD = f"amqpb.tp-{RUN}", "s3cret-tp"
DIRECT = f"tp-direct-{RUN}"   # a direct exchange with a topic permission
BYTES = f"tp-bytes-{RUN}"     # a topic exchange whose write regex counts bytes
WRITE = r"^{username}\.|^pub\.|^{client_id}\.|^v{vhost}\."
READ = r"^pub\.|^sub\."

RABBITMQCTL = shutil.which("rabbitmqctl")


def _ctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([RABBITMQCTL, *args], capture_output=True, text=True, timeout=60)


class Env:
    def __init__(self, kind: str, host: str, port: int):
        self.kind, self.host, self.port = kind, host, port

    def connect(self, user: str = USER, password: str = PASSWORD,
                client_properties: dict | None = None) -> pika.BlockingConnection:
        return pika.BlockingConnection(pika.ConnectionParameters(
            self.host, self.port, "/", pika.PlainCredentials(user, password),
            connection_attempts=1, socket_timeout=10, heartbeat=0,
            client_properties=client_properties))


def _params():
    kinds = ["amqpbroker"]
    if REFERENCE_URL and RABBITMQCTL:
        kinds.append("rabbitmq")
    return kinds


@pytest.fixture(scope="module", params=_params())
def env(request):
    if request.param == "rabbitmq":
        try:
            for args in (("add_user", USER, PASSWORD),
                         ("set_permissions", "-p", "/", USER, ".*", ".*", ".*"),
                         ("set_topic_permissions", "-p", "/", USER, "amq.topic", WRITE, READ),
                         ("set_topic_permissions", "-p", "/", USER, DIRECT, "^$", "^$"),
                         ("set_topic_permissions", "-p", "/", USER, BYTES, "^a.$", ".*")):
                r = _ctl(*args)
                assert r.returncode == 0, r.stderr
            u = urllib.parse.urlparse(REFERENCE_URL)
            yield Env("rabbitmq", u.hostname or "127.0.0.1", u.port or 5672)
        finally:
            _ctl("delete_user", USER)   # its permissions and topic permissions with it
        return
    d = tempfile.mkdtemp(prefix="amqpbroker-tp-")
    path = os.path.join(d, "broker.yaml")
    with open(path, "w") as f:
        f.write(f"""\
storage:
  backend: memory
users:
  - name: guest
    password: guest
  - name: {USER}
    password: {PASSWORD}
permissions:
  - user: guest
  - user: {USER}
topic_permissions:
  - user: {USER}
    vhost: /
    exchange: amq.topic
    write: '{WRITE}'
    read: '{READ}'
  - user: {USER}
    exchange: {DIRECT}
    write: ''
    read: ''
  - user: {USER}
    exchange: {BYTES}
    write: '^a.$'
    read: '.*'
""")
    proc, port = start_amqpbroker("--config", path, data_dir=d)
    yield Env("amqpbroker", "127.0.0.1", port)
    stop(proc)


def uid() -> str:
    return uuid.uuid4().hex[:8]


def refused(key: str, exchange: str = "amq.topic") -> str:
    return (f"ACCESS_REFUSED - access to topic '{key}' in exchange '{exchange}' in vhost '/' "
            f"refused for user '{USER}'")


def channel_error(env, action, **connect) -> tuple[int, str]:
    """Run ``action(channel)`` as the user; return the channel close it causes (a round
    trip after it shows an asynchronous close, as after a publish)."""
    conn = env.connect(**connect)
    try:
        ch = conn.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            action(ch)
            ch.basic_qos(prefetch_count=1)
        return e.value.reply_code, e.value.reply_text
    finally:
        if conn.is_open:
            conn.close()


def allowed(env, action, **connect) -> None:
    conn = env.connect(**connect)
    try:
        ch = conn.channel()
        action(ch)
        ch.basic_qos(prefetch_count=1)
    finally:
        conn.close()


def confirmed_publish(env, exchange: str, key: str, **connect):
    """Publish with a confirm: None when acked, else the channel close (code, text)."""
    conn = env.connect(**connect)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        try:
            ch.basic_publish(exchange, key, b"m")
        except pika.exceptions.ChannelClosedByBroker as e:
            return e.reply_code, e.reply_text
        return None
    finally:
        if conn.is_open:
            conn.close()


@pytest.fixture
def queue(env):
    """A queue of the user's (it has every ordinary permission)."""
    name = f"tp-q-{uid()}"
    conn = env.connect()
    ch = conn.channel()
    ch.queue_declare(name)
    yield name
    ch.queue_delete(name)
    conn.close()


# ---------------------------------------------------------------------- publish (write)


def test_publish_allowed_is_confirmed_and_routed(env, queue):
    conn = env.connect()
    try:
        ch = conn.channel()
        ch.queue_bind(queue, "amq.topic", "pub.#")
        ch.confirm_delivery()
        ch.basic_publish("amq.topic", "pub.1", b"hello")
        method_frame, _props, body = ch.basic_get(queue, auto_ack=True)
        assert method_frame is not None and body == b"hello"
    finally:
        conn.close()


def test_publish_refused_closes_the_channel_with_a_confirm(env):
    assert confirmed_publish(env, "amq.topic", "other.1") == (403, refused("other.1"))


def test_publish_refused_seen_by_a_following_sync_method(env):
    assert channel_error(env, lambda ch: ch.basic_publish("amq.topic", "x", b"m")) == \
        (403, refused("x"))


def test_publish_refused_over_a_raw_socket_names_basic_publish(env):
    with RawClient(env.host, env.port) as c:
        assert c.handshake(USER, PASSWORD) is None
        c.send(publish_frames(1, b"\x00\x00", b"m", "amq.topic", "nope.1"))
        close = c.channel_close_reply()
    assert (close.name, close.reply_code, close.reply_text, close.class_id,
            close.method_id) == ("Channel.Close", 403, refused("nope.1"), 60, 40)


def test_username_is_expanded_as_regex_text(env):
    assert confirmed_publish(env, "amq.topic", f"{USER}.1") is None
    # "." in the user name matches any character: the expansion is not escaped
    assert confirmed_publish(env, "amq.topic", f"{USER.replace('.', 'X')}.1") is None
    assert confirmed_publish(env, "amq.topic", f"{USER}1") == (403, refused(f"{USER}1"))


def test_vhost_is_expanded(env):
    assert confirmed_publish(env, "amq.topic", "v/.1") is None


def test_client_id_is_not_expanded_for_amqp_0_9_1(env):
    """RabbitMQ fills {client_id} for MQTT and STOMP only: an AMQP 0-9-1 client's
    client-properties ``client_id`` is not used, and the regex keeps the literal text."""
    props = {"client_id": "cid-1"}
    assert confirmed_publish(env, "amq.topic", "cid-1.x", client_properties=props) == \
        (403, refused("cid-1.x"))
    assert confirmed_publish(env, "amq.topic", "{client_id}.x", client_properties=props) \
        is None


def test_a_refused_key_after_allowed_ones(env):
    def action(ch):
        ch.confirm_delivery()
        for i in range(3):
            ch.basic_publish("amq.topic", f"pub.{i}", b"m")
        ch.basic_publish("amq.topic", "sub.1", b"m")
    assert channel_error(env, action) == (403, refused("sub.1"))


def test_routing_keys_are_searched_as_bytes(env):
    """RabbitMQ's re:run on the key's bytes: "." is one byte, not one UTF-8 character; the
    refusal text carries the key's bytes as received."""
    allowed(env, lambda ch: ch.exchange_declare(BYTES, "topic"))
    try:
        assert confirmed_publish(env, BYTES, "ab") is None
        for key in ("a\u00e9", "b\u00e9"):
            with RawClient(env.host, env.port) as c:
                assert c.handshake(USER, PASSWORD) is None
                c.send(publish_frames(1, b"\x00\x00", b"m", BYTES, key))
                close = c.channel_close_reply()
            assert (close.reply_code, close.reply_text) == (403, refused(key, BYTES))
    finally:
        allowed(env, lambda ch: ch.exchange_delete(BYTES))


def test_publish_to_a_missing_exchange_is_404_first(env):
    assert channel_error(env, lambda ch: ch.basic_publish(f"tp-none-{uid()}", "x", b"m"))[0] \
        == 404


def test_guest_is_not_restricted(env):
    conn = env.connect("guest", "guest")
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish("amq.topic", "anything.at.all", b"m")
    finally:
        conn.close()


# ---------------------------------------------------------------------- bind (read)


def test_queue_bind_and_unbind_allowed(env, queue):
    allowed(env, lambda ch: (ch.queue_bind(queue, "amq.topic", "sub.*"),
                             ch.queue_unbind(queue, "amq.topic", "sub.*")))


def test_queue_bind_refused(env, queue):
    assert channel_error(env, lambda ch: ch.queue_bind(queue, "amq.topic", "#")) == \
        (403, refused("#"))


def test_queue_unbind_refused(env, queue):
    assert channel_error(env, lambda ch: ch.queue_unbind(queue, "amq.topic", "other.#")) == \
        (403, refused("other.#"))


def test_queue_bind_refused_over_a_raw_socket_names_queue_bind(env, queue):
    with RawClient(env.host, env.port) as c:
        assert c.handshake(USER, PASSWORD) is None
        c.send(method(1, C.Queue.Bind(queue=queue, exchange="amq.topic", routing_key="k")))
        close = c.channel_close_reply()
    assert (close.reply_code, close.reply_text, close.class_id, close.method_id) == \
        (403, refused("k"), 50, 20)


def test_queue_bind_checks_the_topic_before_the_queue_exists(env):
    assert channel_error(env, lambda ch: ch.queue_bind(f"tp-none-{uid()}", "amq.topic",
                                                       "x")) == (403, refused("x"))


def test_queue_bind_to_a_missing_exchange_is_404(env, queue):
    name = f"tp-none-{uid()}"
    assert channel_error(env, lambda ch: ch.queue_bind(queue, name, "x")) == \
        (404, f"NOT_FOUND - no exchange '{name}' in vhost '/'")


def test_exchange_bind_checks_read_on_the_source(env):
    dest = f"tp-fan-{uid()}"

    def action(ch):
        ch.exchange_declare(dest, "fanout", auto_delete=True)
        ch.exchange_bind(dest, "amq.topic", "sub.x")     # allowed
        ch.exchange_bind(dest, "amq.topic", "zzz")       # refused
    try:
        assert channel_error(env, action) == (403, refused("zzz"))
    finally:
        allowed(env, lambda ch: ch.exchange_delete(dest))


def test_exchange_unbind_refused(env):
    assert channel_error(env, lambda ch: ch.exchange_unbind("amq.fanout", "amq.topic",
                                                            "zzz")) == (403, refused("zzz"))


def test_exchange_bind_with_the_topic_exchange_as_destination_is_not_checked(env):
    allowed(env, lambda ch: (ch.exchange_bind("amq.topic", "amq.direct", "zzz"),
                             ch.exchange_unbind("amq.topic", "amq.direct", "zzz")))


# ---------------------------------------------------------------------- other exchanges


def test_a_direct_exchange_with_a_topic_permission_is_not_checked(env, queue):
    def action(ch):
        ch.exchange_declare(DIRECT, "direct", auto_delete=False)
        ch.queue_bind(queue, DIRECT, "anything")
        ch.confirm_delivery()
        ch.basic_publish(DIRECT, "anything", b"m")
        ch.exchange_delete(DIRECT)
    allowed(env, action)


def test_a_topic_exchange_without_a_topic_permission_is_not_checked(env, queue):
    name = f"tp-free-{uid()}"

    def action(ch):
        ch.exchange_declare(name, "topic", auto_delete=False)
        ch.queue_bind(queue, name, "#")
        ch.confirm_delivery()
        ch.basic_publish(name, "anything", b"m")
        ch.exchange_delete(name)
    allowed(env, action)


def test_other_exchange_types_are_not_checked(env, queue):
    def action(ch):
        ch.confirm_delivery()
        ch.basic_publish("amq.direct", "anything", b"m")
        ch.basic_publish("amq.fanout", "anything", b"m")
        ch.basic_publish("", queue, b"m")
        ch.queue_bind(queue, "amq.direct", "anything")
    allowed(env, action)


# ---------------------------------------------------------------------- definitions


@pytest.mark.skipif(not (REFERENCE_URL and RABBITMQCTL), reason="needs RabbitMQ and rabbitmqctl")
def test_rabbitmq_export_definitions_imports_unchanged(env):
    """The topic_permissions ``rabbitmqctl export_definitions`` writes go into amqpbroker's
    definitions import and come out of its export the same."""
    if env.kind != "rabbitmq":
        pytest.skip("reads RabbitMQ's export")
    r = _ctl("export_definitions", "-")
    assert r.returncode == 0, r.stderr
    theirs = [tp for tp in json.loads(r.stdout)["topic_permissions"] if tp["user"] == USER]
    assert len(theirs) == 3
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from amqpbroker import definitions
    from amqpbroker.broker import Broker
    from amqpbroker.config import Config, User
    b = Broker(Config(users=(User("guest", password="guest"), User(USER, password="x"))))
    definitions.apply(b, {"topic_permissions": theirs})
    key = lambda tp: tp["exchange"]  # noqa: E731
    assert sorted(definitions.export(b)["topic_permissions"], key=key) == \
        sorted(theirs, key=key)
