"""Users, vhosts and permissions, against BOTH brokers with the same users.

RabbitMQ gets its users with ``rabbitmqctl`` (when it is on PATH and AMQP_REFERENCE_URL is
set); amqpbroker gets the same users from a YAML config (one with a RabbitMQ-style
password_hash, one with a plain password) in a dedicated broker.  The restricted user may
configure ``^cfg-``, write ``^w-`` and read ``^r-`` names; entities it may not create are
created with guest.  Every expectation is RabbitMQ's exact reply code and text: where the
brokers differ, amqpbroker is wrong.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import urllib.parse
import uuid

import pika
import pika.exceptions
import pytest

from conftest import REFERENCE_URL, start_amqpbroker, stop

USER, PASSWORD = "amqpb-perm-user", "s3cret-perm"
NOACCESS, NOACCESS_PASSWORD = "amqpb-perm-none", "none-pw"
CONFIGURE, WRITE, READ = "^cfg-.*", "^w-.*", "^r-.*"

RABBITMQCTL = shutil.which("rabbitmqctl")


def _rabbitmq_password_hash(password: str) -> str:
    from amqpbroker.broker import hash_password
    return hash_password(password, os.urandom(4))


def _ctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([RABBITMQCTL, *args], capture_output=True, text=True, timeout=60)


class Env:
    def __init__(self, kind: str, host: str, port: int):
        self.kind, self.host, self.port = kind, host, port

    def connect(self, user: str = USER, password: str = PASSWORD,
                vhost: str = "/") -> pika.BlockingConnection:
        return pika.BlockingConnection(pika.ConnectionParameters(
            self.host, self.port, vhost, pika.PlainCredentials(user, password),
            connection_attempts=1, socket_timeout=10, heartbeat=0))

    def guest(self) -> pika.BlockingConnection:
        return self.connect("guest", "guest")


def _params():
    kinds = ["amqpbroker"]
    if REFERENCE_URL and RABBITMQCTL:
        kinds.append("rabbitmq")
    return kinds


@pytest.fixture(scope="module", params=_params())
def env(request):
    if request.param == "rabbitmq":
        for name, pw in ((USER, PASSWORD), (NOACCESS, NOACCESS_PASSWORD)):
            _ctl("delete_user", name)
            r = _ctl("add_user", name, pw)
            assert r.returncode == 0, r.stderr
        r = _ctl("set_permissions", "-p", "/", USER, CONFIGURE, WRITE, READ)
        assert r.returncode == 0, r.stderr
        u = urllib.parse.urlparse(REFERENCE_URL)
        yield Env("rabbitmq", u.hostname or "127.0.0.1", u.port or 5672)
        for name in (USER, NOACCESS):
            _ctl("delete_user", name)
        return
    d = tempfile.mkdtemp(prefix="amqpbroker-perm-")
    path = os.path.join(d, "broker.yaml")
    with open(path, "w") as f:
        f.write(f"""\
storage:
  backend: memory
vhosts: ["/", "other"]
users:
  - name: guest
    password: guest
  - name: {USER}
    password_hash: "{_rabbitmq_password_hash(PASSWORD)}"
  - name: {NOACCESS}
    password: {NOACCESS_PASSWORD}
permissions:
  - user: guest
  - user: {USER}
    vhost: /
    configure: '{CONFIGURE}'
    write: '{WRITE}'
    read: '{READ}'
""")
    proc, port = start_amqpbroker("--config", path, data_dir=d)
    yield Env("amqpbroker", "127.0.0.1", port)
    stop(proc)


def uid() -> str:
    return uuid.uuid4().hex[:8]


def refused(kind: str, name: str, vhost: str = "/") -> str:
    return f"ACCESS_REFUSED - access to {kind} '{name}' in vhost '{vhost}' refused for user " \
           f"'{USER}'"


@pytest.fixture
def made(env):
    """Entities the restricted user may not configure, made by guest: queues it may write
    (bind) or read, exchanges it may write (publish) or read (bind from)."""
    s = uid()
    names = {"wq": f"w-q-{s}", "rq": f"r-q-{s}", "wx": f"w-x-{s}", "rx": f"r-x-{s}",
             "cq": f"cfg-q-{s}", "cx": f"cfg-x-{s}"}
    conn = env.guest()
    ch = conn.channel()
    for k in ("wq", "rq", "cq"):
        ch.queue_declare(names[k], auto_delete=False)
    for k in ("wx", "rx", "cx"):
        ch.exchange_declare(names[k], "direct")
    yield names
    for k in ("wq", "rq", "cq"):
        ch.queue_delete(names[k])
    for k in ("wx", "rx", "cx"):
        ch.exchange_delete(names[k])
    conn.close()


def channel_error(env, action) -> tuple[int, str]:
    """Run ``action(channel)`` as the restricted user; return the channel close it causes."""
    conn = env.connect()
    try:
        ch = conn.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            action(ch)
            ch.basic_qos(prefetch_count=1)  # a round trip: an async close (publish) shows up
        return e.value.reply_code, e.value.reply_text
    finally:
        if conn.is_open:
            conn.close()


def allowed(env, action) -> None:
    conn = env.connect()
    try:
        ch = conn.channel()
        action(ch)
        ch.basic_qos(prefetch_count=1)
    finally:
        conn.close()


# ---------------------------------------------------------------------- configure


def test_exchange_declare_needs_configure(env):
    name = f"x-{uid()}"
    assert channel_error(env, lambda ch: ch.exchange_declare(name, "direct")) == \
        (403, refused("exchange", name))


def test_exchange_declare_allowed(env):
    name = f"cfg-x-{uid()}"
    allowed(env, lambda ch: (ch.exchange_declare(name, "fanout"), ch.exchange_delete(name)))


def test_queue_declare_needs_configure(env):
    name = f"q-{uid()}"
    assert channel_error(env, lambda ch: ch.queue_declare(name)) == (403, refused("queue", name))


def test_queue_declare_allowed(env):
    name = f"cfg-q-{uid()}"
    allowed(env, lambda ch: (ch.queue_declare(name), ch.queue_delete(name)))


def test_server_named_queue_needs_configure_on_amq_gen(env):
    code, text = channel_error(env, lambda ch: ch.queue_declare("", exclusive=True))
    assert code == 403
    assert re.fullmatch(r"ACCESS_REFUSED - access to queue 'amq\.gen-[A-Za-z0-9_\-]+' in vhost "
                        rf"'/' refused for user '{USER}'", text), text


def test_queue_declare_with_dlx_needs_read_on_queue(env):
    name = f"cfg-q-{uid()}"
    code_text = channel_error(env, lambda ch: ch.queue_declare(
        name, arguments={"x-dead-letter-exchange": "w-dlx"}))
    assert code_text == (403, refused("queue", name))


def test_exchange_delete_needs_configure(env, made):
    assert channel_error(env, lambda ch: ch.exchange_delete(made["rx"])) == \
        (403, refused("exchange", made["rx"]))


def test_queue_delete_needs_configure(env, made):
    assert channel_error(env, lambda ch: ch.queue_delete(made["wq"])) == \
        (403, refused("queue", made["wq"]))


def test_queue_delete_of_missing_queue_needs_configure(env):
    name = f"w-missing-{uid()}"
    assert channel_error(env, lambda ch: ch.queue_delete(name)) == (403, refused("queue", name))


def test_exchange_delete_of_missing_exchange_needs_configure(env):
    name = f"w-missing-{uid()}"
    assert channel_error(env, lambda ch: ch.exchange_delete(name)) == \
        (403, refused("exchange", name))


# ---------------------------------------------------------------------- bind


def test_queue_bind_needs_write_on_queue(env, made):
    assert channel_error(env, lambda ch: ch.queue_bind(made["cq"], made["rx"], "k")) == \
        (403, refused("queue", made["cq"]))


def test_queue_bind_needs_read_on_exchange(env, made):
    assert channel_error(env, lambda ch: ch.queue_bind(made["wq"], made["cx"], "k")) == \
        (403, refused("exchange", made["cx"]))


def test_queue_bind_and_unbind_allowed(env, made):
    allowed(env, lambda ch: (ch.queue_bind(made["wq"], made["rx"], "k"),
                             ch.queue_unbind(made["wq"], made["rx"], "k")))


def test_queue_unbind_needs_write_on_queue(env, made):
    assert channel_error(env, lambda ch: ch.queue_unbind(made["cq"], made["rx"], "k")) == \
        (403, refused("queue", made["cq"]))


def test_exchange_bind_needs_write_on_destination(env, made):
    assert channel_error(env, lambda ch: ch.exchange_bind(made["cx"], made["rx"], "k")) == \
        (403, refused("exchange", made["cx"]))


def test_exchange_bind_needs_read_on_source(env, made):
    assert channel_error(env, lambda ch: ch.exchange_bind(made["wx"], made["cx"], "k")) == \
        (403, refused("exchange", made["cx"]))


def test_exchange_bind_allowed(env, made):
    allowed(env, lambda ch: (ch.exchange_bind(made["wx"], made["rx"], "k"),
                             ch.exchange_unbind(made["wx"], made["rx"], "k")))


# ---------------------------------------------------------------------- publish


def test_publish_needs_write_on_exchange(env, made):
    assert channel_error(env, lambda ch: ch.basic_publish(made["rx"], "k", b"x")) == \
        (403, refused("exchange", made["rx"]))


def test_publish_to_default_exchange_is_amq_default(env, made):
    assert channel_error(env, lambda ch: ch.basic_publish("", made["wq"], b"x")) == \
        (403, refused("exchange", "amq.default"))


def test_publish_to_missing_exchange_without_write_is_403(env):
    name = f"nope-{uid()}"
    assert channel_error(env, lambda ch: ch.basic_publish(name, "k", b"x")) == \
        (403, refused("exchange", name))


def test_publish_allowed(env, made):
    allowed(env, lambda ch: ch.basic_publish(made["wx"], "k", b"x"))


# ---------------------------------------------------------------------- read


def test_consume_needs_read(env, made):
    assert channel_error(env, lambda ch: ch.basic_consume(made["wq"], lambda *a: None)) == \
        (403, refused("queue", made["wq"]))


def test_consume_missing_queue_without_read_is_403(env):
    name = f"w-missing-{uid()}"
    assert channel_error(env, lambda ch: ch.basic_consume(name, lambda *a: None)) == \
        (403, refused("queue", name))


def test_get_needs_read(env, made):
    assert channel_error(env, lambda ch: ch.basic_get(made["wq"])) == \
        (403, refused("queue", made["wq"]))


def test_get_missing_queue_without_read_is_403(env):
    name = f"w-missing-{uid()}"
    assert channel_error(env, lambda ch: ch.basic_get(name)) == (403, refused("queue", name))


def test_purge_missing_queue_without_read_is_403(env):
    name = f"w-missing-{uid()}"
    assert channel_error(env, lambda ch: ch.queue_purge(name)) == (403, refused("queue", name))


def test_missing_queue_with_read_is_404(env):
    name = f"r-missing-{uid()}"
    assert channel_error(env, lambda ch: ch.basic_get(name)) == \
        (404, f"NOT_FOUND - no queue '{name}' in vhost '/'")


def test_purge_needs_read(env, made):
    assert channel_error(env, lambda ch: ch.queue_purge(made["cq"])) == \
        (403, refused("queue", made["cq"]))


def test_read_allowed(env, made):
    def action(ch):
        ch.basic_get(made["rq"])
        ch.queue_purge(made["rq"])
        tag = ch.basic_consume(made["rq"], lambda *a: None)
        ch.basic_cancel(tag)
    allowed(env, action)


def test_end_to_end_within_permissions(env, made):
    """Publish to w-x bound (by guest) to r-q, get it back from r-q."""
    g = env.guest()
    g.channel().queue_bind(made["rq"], made["wx"], "k")
    g.close()
    conn = env.connect()
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish(made["wx"], "k", b"hello", mandatory=True)
    method, _props, body = ch.basic_get(made["rq"], auto_ack=True)
    assert body == b"hello"
    conn.close()


# ---------------------------------------------------------------------- login


def _connection_error(env, user, password, vhost="/") -> tuple[int, str]:
    with pytest.raises(pika.exceptions.AMQPConnectionError) as e:
        env.connect(user, password, vhost)
    m = re.search(r"\((\d+)\) (['\"])(.*)\2", str(e.value.args[0] if e.value.args else e.value))
    assert m, repr(e.value)
    return int(m.group(1)), m.group(3)


LOGIN_REFUSED = (403, "ACCESS_REFUSED - Login was refused using authentication mechanism "
                      "PLAIN. For details see the broker logfile.")


def test_wrong_password(env):
    assert _connection_error(env, USER, "wrong") == LOGIN_REFUSED


def test_unknown_user(env):
    assert _connection_error(env, f"nobody-{uid()}", "x") == LOGIN_REFUSED


def test_hashed_password_accepted(env):
    env.connect().close()


def test_unknown_vhost(env):
    assert _connection_error(env, USER, PASSWORD, "no-such-vhost") == \
        (530, "NOT_ALLOWED - vhost no-such-vhost not found")


def test_no_permissions_on_vhost(env):
    assert _connection_error(env, NOACCESS, NOACCESS_PASSWORD) == \
        (530, f"NOT_ALLOWED - access to vhost '/' refused for user '{NOACCESS}'")
