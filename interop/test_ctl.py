"""``amqpbroker ctl`` as an operator runs it (a subprocess), against both brokers'
management APIs: list, set-policy, purge, delete, export and import, close-connection;
drain is ours (RabbitMQ's API has no drain)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pika
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
S = uuid.uuid4().hex[:8]


def ctl(broker, *args, check=True) -> subprocess.CompletedProcess:
    if broker.mgmt_url is None:
        pytest.skip("AMQP_REFERENCE_MGMT_URL is not set")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "amqpbroker", "ctl", "--url", broker.mgmt_url,
                        *args], capture_output=True, text=True, env=env, timeout=60)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def until(fn, timeout=12.0):
    deadline = time.monotonic() + timeout
    while not (got := fn()) and time.monotonic() < deadline:
        time.sleep(0.25)
    return got


def test_list_purge_delete_and_policies(broker):
    name = f"ctl-{S}"
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    ch.queue_declare(name)
    ch.basic_publish("", name, b"m")
    try:
        rows = until(lambda: [line.split("\t") for line in
                              ctl(broker, "list", "queues").stdout.splitlines()
                              if line.startswith(name + "\t") and line.split("\t")[1] == "1"])
        assert rows and rows[0][:2] == [name, "1"]   # (consumers: RabbitMQ fills it later)
        assert ctl(broker, "list", "queues").stdout.splitlines()[0] == \
            "name\tmessages\tconsumers"
        ctl(broker, "purge", name)
        assert ch.queue_declare(name, passive=True).method.message_count == 0
        ctl(broker, "set-policy", f"p-{S}", f"^{name}$", '{"max-length": 7}',
            "--apply-to", "queues")
        pols = json.loads(ctl(broker, "list", "policies", "--json").stdout)
        assert {"name": f"p-{S}", "pattern": f"^{name}$", "apply-to": "queues",
                "definition": {"max-length": 7}, "priority": 0, "vhost": "/"} in pols
        bad = ctl(broker, "set-policy", f"p-{S}", ".*", '{"message-ttl": -1}', check=False)
        assert bad.returncode == 1
        assert "400 Validation failed" in bad.stderr and "not a valid message TTL" in bad.stderr
        ctl(broker, "clear-policy", f"p-{S}")
        ctl(broker, "delete", "queue", name)
        missing = ctl(broker, "purge", name, check=False)
        assert missing.returncode == 1 and "404" in missing.stderr
    finally:
        ch = conn.channel() if ch.is_closed else ch
        ch.queue_delete(name)
        conn.close()


def test_export_import_and_close_connection(broker, tmp_path):
    name = f"ctl-x-{S}"
    f = tmp_path / "defs.json"
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    ch.queue_declare(name, durable=True)
    ctl(broker, "export", str(f))
    doc = json.loads(f.read_text())
    assert any(q["name"] == name for q in doc["queues"])
    ch.queue_delete(name)
    ctl(broker, "import", str(f))
    assert ch.queue_declare(name, passive=True).method.queue == name
    ch.queue_delete(name)
    mine = until(lambda: [c["name"] for c in json.loads(
        ctl(broker, "list", "connections", "--json").stdout)
        if c.get("client_properties", {}).get("product") == "Pika Python Client Library"
        and c.get("channels") == 1])
    assert mine
    for cname in mine:
        ctl(broker, "close-connection", cname, "closed by ctl")
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        for _ in range(40):
            conn.process_data_events(0.25)
    assert e.value.reply_code == 320 and "closed by ctl" in e.value.reply_text


@pytest.mark.amqpbroker_only("RabbitMQ's management API has no drain (poison pills are ours)")
def test_drain(broker):
    name = f"ctl-d-{S}"
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    ch.queue_declare(name)
    ch.basic_consume(name, lambda *a: None)
    r = ctl(broker, "drain", name)
    assert r.stdout.strip() == f"1 poison pills appended to '{name}'"
    ch.queue_delete(name)
    conn.close()
