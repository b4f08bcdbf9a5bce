"""Policies end to end with pika against BOTH brokers: the same policies, set with
``rabbitmqctl set_policy`` on RabbitMQ (patterns unique to this run, cleared afterwards)
and in the YAML definitions of a dedicated amqpbroker process.  A dead-letter policy
dead-letters, a TTL policy expires, the argument wins for the dead-letter exchange and the
smaller value for a length limit, an alternate-exchange policy catches unroutable
messages."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid

import pika
import pytest

from conftest import REFERENCE_URL, start_amqpbroker, stop

RABBITMQCTL = shutil.which("rabbitmqctl")
P = f"amqpb-pol-{uuid.uuid4().hex[:8]}"   # every name this module declares starts so
POLICIES = [  # (name, pattern, definition, priority, apply-to)
    (f"{P}-dlx", f"^{P}-work", {"dead-letter-exchange": "", "dead-letter-routing-key":
                                f"{P}-dead"}, 0, "queues"),
    (f"{P}-ttl", f"^{P}-ttl", {"message-ttl": 200}, 0, "queues"),
    (f"{P}-len", f"^{P}-len", {"max-length": 2, "dead-letter-exchange": "nowhere"}, 0,
     "queues"),
    (f"{P}-ae", f"^{P}-in$", {"alternate-exchange": f"{P}-lost"}, 0, "exchanges"),
    (f"{P}-low", f"^{P}-prio", {"max-length": 1}, 1, "queues"),
    (f"{P}-high", f"^{P}-prio", {"max-length": 3}, 5, "queues"),
]


def _ctl(*args: str) -> None:
    r = subprocess.run([RABBITMQCTL, *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, (args, r.stderr)


@pytest.fixture(scope="module",
                params=["amqpbroker"] + (["rabbitmq"] if REFERENCE_URL and RABBITMQCTL
                                         else []))
def url(request):
    if request.param == "rabbitmq":
        for name, pattern, definition, priority, apply_to in POLICIES:
            _ctl("set_policy", name, pattern, json.dumps(definition), "--priority",
                 str(priority), "--apply-to", apply_to)
        try:
            yield REFERENCE_URL
        finally:
            for name, *_ in POLICIES:
                subprocess.run([RABBITMQCTL, "clear_policy", name], capture_output=True,
                               timeout=60)
        return
    d = tempfile.mkdtemp(prefix="amqpbroker-policies-")
    path = os.path.join(d, "broker.yaml")
    with open(path, "w") as f:
        json.dump({"storage": {"backend": "memory"}, "definitions": {"policies": [
            {"name": n, "pattern": p, "definition": dfn, "priority": prio, "apply_to": at}
            for n, p, dfn, prio, at in POLICIES]}}, f)  # JSON is YAML
    proc, port = start_amqpbroker("--config", path, data_dir=d)
    yield f"amqp://guest:guest@127.0.0.1:{port}/"
    stop(proc)


@pytest.fixture
def ch(url):
    conn = pika.BlockingConnection(pika.URLParameters(url))
    channel = conn.channel()
    declared = []
    yield channel, declared
    for kind, name in declared:
        (channel.queue_delete if kind == "q" else channel.exchange_delete)(name)
    conn.close()


def declare(chd, name, **args):
    channel, declared = chd
    channel.queue_declare(name, arguments=args or None)
    declared.append(("q", name))


def depth(channel, name) -> int:
    return channel.queue_declare(name, passive=True).method.message_count


def wait_depth(channel, name, n, timeout=5.0) -> int:
    deadline = time.monotonic() + timeout
    while (seen := depth(channel, name)) != n and time.monotonic() < deadline:
        time.sleep(0.05)
    return seen


def test_a_dead_letter_policy_dead_letters(ch):
    channel, _ = ch
    declare(ch, f"{P}-dead")
    declare(ch, f"{P}-work")
    channel.basic_publish("", f"{P}-work", b"bad")
    method, _props, _body = channel.basic_get(f"{P}-work")
    channel.basic_reject(method.delivery_tag, requeue=False)
    assert wait_depth(channel, f"{P}-dead", 1) == 1
    _m, props, body = channel.basic_get(f"{P}-dead", auto_ack=True)
    assert body == b"bad" and props.headers["x-death"][0]["queue"] == f"{P}-work"
    assert props.headers["x-death"][0]["reason"] == "rejected"


def test_a_ttl_policy_expires(ch):
    channel, _ = ch
    declare(ch, f"{P}-ttl")
    channel.basic_publish("", f"{P}-ttl", b"short-lived")
    assert depth(channel, f"{P}-ttl") == 1
    time.sleep(0.4)
    assert channel.basic_get(f"{P}-ttl", auto_ack=True)[0] is None


def test_the_smaller_length_wins_and_the_argument_wins_for_the_dlx(ch):
    channel, _ = ch
    declare(ch, f"{P}-dead")
    declare(ch, f"{P}-len", **{"x-max-length": 5, "x-dead-letter-exchange": "",
                               "x-dead-letter-routing-key": f"{P}-dead"})
    for i in range(4):
        channel.basic_publish("", f"{P}-len", b"%d" % i)
    assert wait_depth(channel, f"{P}-len", 2) == 2        # the policy's 2, not the 5
    assert wait_depth(channel, f"{P}-dead", 2) == 2       # the argument's DLX, not "nowhere"
    assert channel.basic_get(f"{P}-len", auto_ack=True)[2] == b"2"


def test_an_alternate_exchange_policy(ch):
    channel, declared = ch
    channel.exchange_declare(f"{P}-lost", "fanout")
    channel.exchange_declare(f"{P}-in", "direct")
    declared += [("x", f"{P}-lost"), ("x", f"{P}-in")]
    declare(ch, f"{P}-caught")
    channel.queue_bind(f"{P}-caught", f"{P}-lost")
    channel.basic_publish(f"{P}-in", "no-binding", b"unroutable")
    assert wait_depth(channel, f"{P}-caught", 1) == 1


def test_the_higher_priority_policy_applies(ch):
    channel, _ = ch
    declare(ch, f"{P}-prio")
    for i in range(5):
        channel.basic_publish("", f"{P}-prio", b"%d" % i)
    assert wait_depth(channel, f"{P}-prio", 3) == 3
