"""Node amqplib against amqpbroker and RabbitMQ.

The scenarios live in interop/node/scenario.js; each prints one JSON line that is checked
here. ``npm install`` runs once per session when interop/node/node_modules lacks amqplib.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess

import pytest

NODE_DIR = pathlib.Path(__file__).parent / "node"
SCRIPT = NODE_DIR / "scenario.js"

CAPABILITIES = (
    "publisher_confirms", "exchange_exchange_bindings", "basic.nack",
    "consumer_cancel_notify", "connection.blocked", "consumer_priorities",
    "authentication_failure_close", "per_consumer_qos", "direct_reply_to",
)


@pytest.fixture(scope="session")
def node_bin() -> str:
    node = shutil.which("node")
    npm = shutil.which("npm")
    if not node or not npm:
        pytest.skip(f"Node amqplib interop needs node and npm on PATH (node={node}, npm={npm})")
    if not (NODE_DIR / "node_modules" / "amqplib" / "package.json").exists():
        r = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--no-progress"],
            cwd=NODE_DIR, capture_output=True, text=True, timeout=600,
        )
        if r.returncode != 0:
            pytest.fail(f"npm install in {NODE_DIR} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return node


def run_scenario(node_bin, broker, scenario: str, timeout: float = 90,
                 env: dict | None = None) -> dict:
    """``env``: extra environment, e.g. AMQP_TLS_CA (and AMQP_TLS_CERT, AMQP_TLS_KEY)."""
    prefix = broker.name("node")
    r = subprocess.run([node_bin, str(SCRIPT), broker.url, scenario, prefix],
                       capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, **(env or {})})
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    assert lines, f"no output from node ({r.returncode}); stderr:\n{r.stderr}"
    out = json.loads(lines[-1])
    assert r.returncode == 0 and "error" not in out, (
        f"node scenario {scenario!r} failed ({r.returncode}): {out.get('error', out)}\n{r.stderr}")
    out["_prefix"] = prefix
    return out


def test_basic(node_bin, broker):
    out = run_scenario(node_bin, broker, "basic")
    q = out["_prefix"] + "-basic"
    caps = out["serverProperties"]["capabilities"]
    for cap in CAPABILITIES:
        assert caps.get(cap) is True, cap
    assert out["assertQueue"] == {"queue": q, "messageCount": 0, "consumerCount": 0}
    g = out["get"]
    assert g["body"] == "first"
    assert g["fields"] == {"deliveryTag": 1, "redelivered": False, "exchange": "",
                           "routingKey": q, "messageCount": 2}
    assert g["properties"] == {
        "contentType": "text/plain", "contentEncoding": "utf8",
        "headers": {"str": "v", "int": 42, "neg": -5, "big": 1099511627776, "bool": True,
                    "nested": {"a": "b"}, "list": [1, "x"]},
        "deliveryMode": 2, "priority": 4, "correlationId": "corr", "replyTo": "rq",
        "expiration": "60000", "messageId": "mid", "timestamp": 1700000000, "type": "ty",
        "appId": "node",
    }
    tag = out["consumerTag"]
    assert tag.startswith("amq.ctag-")
    assert [d["body"] for d in out["deliveries"]] == ["second", "third"]
    assert [d["fields"] for d in out["deliveries"]] == [
        {"deliveryTag": 2, "redelivered": False, "exchange": "", "routingKey": q},
        {"deliveryTag": 3, "redelivered": False, "exchange": "", "routingKey": q},
    ]
    # no properties set by the publisher: amqplib shows an empty headers table
    assert out["deliveries"][0]["properties"] == {"headers": {}}
    assert out["cancel"] == {"consumerTag": tag}
    assert out["getEmpty"] is False
    assert out["checkQueue"] == {"queue": q, "messageCount": 0, "consumerCount": 0}
    assert out["deleteQueue"] == {"messageCount": 0}
    assert out["serverNamed"].startswith("amq.gen-") and len(out["serverNamed"]) == 30


def test_confirm_channel(node_bin, broker):
    out = run_scenario(node_bin, broker, "confirm")
    assert out["acked"] == list(range(20))
    key = out["_prefix"] + "-nowhere"
    # basic.return precedes the basic.ack of the same publish; a non-mandatory
    # unroutable publish is acked too
    assert out["events"] == [
        {"event": "return", "replyCode": 312, "replyText": "NO_ROUTE", "exchange": "",
         "routingKey": key, "body": "bounce"},
        {"event": "ack"},
        {"event": "ack2"},
    ]
    assert out["checkQueue"]["messageCount"] == 20


def test_topic_routing(node_bin, broker):
    out = run_scenario(node_bin, broker, "topic")
    assert out["received"] == {
        "star": ["quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox"],
        "hash": ["lazy.orange.elephant", "lazy.brown.fox", "lazy.pink.rabbit",
                 "lazy.orange.male.rabbit", "lazy"],
        # two matching bindings, still one copy per queue
        "multi": ["quick.orange.rabbit", "lazy.orange.elephant", "lazy.brown.fox",
                  "lazy.pink.rabbit", "lazy.orange.male.rabbit", "lazy"],
        "all": out["keys"],
        "exact": ["quick.orange.rabbit"],
    }
    assert out["afterUnbind"] is False


def test_channel_errors(node_bin, broker):
    out = run_scenario(node_bin, broker, "errors")
    missing = out["_prefix"] + "-missing"
    text = f"NOT_FOUND - no queue '{missing}' in vhost '/'"
    assert out["checkQueue"]["code"] == 404
    assert text in out["checkQueue"]["message"]
    assert (out["checkQueue"]["classId"], out["checkQueue"]["methodId"]) == (50, 10)
    assert len(out["channelErrors"]) == 1 and out["channelErrors"][0]["code"] == 404
    assert out["afterError"] == "ok"
    assert len(out["unknownTag"]) == 1
    assert out["unknownTag"][0]["code"] == 406
    assert "PRECONDITION_FAILED - unknown delivery tag 99" in out["unknownTag"][0]["message"]
    assert (out["unknownTag"][0]["classId"], out["unknownTag"][0]["methodId"]) == (60, 80)
    assert out["connError"] is None


def test_prefetch(node_bin, broker):
    out = run_scenario(node_bin, broker, "prefetch")
    assert out["firstWindow"] == ["0", "1"]
    assert out["afterOneAck"] == ["0", "1", "2"]
    assert out["all"] == ["0", "1", "2", "3", "4"]
    assert out["redelivered"] == [False] * 5


def test_large_messages(node_bin, broker):
    out = run_scenario(node_bin, broker, "large")
    assert out["receivedSizes"] == out["sizes"]
    assert all(out["match"])


def test_exchange_bind_and_server_cancel(node_bin, broker):
    out = run_scenario(node_bin, broker, "e2e")
    src = out["_prefix"] + "-src"
    # delivered with the exchange and key it was published with; nothing after the unbind
    assert out["bodies"] == [[src, "k", "via-e2e"]]
    # deleting the queue sends basic.cancel to its consumer (amqplib calls back with null)
    assert out["cancelled"] is True


def test_heartbeat_idle_connection_survives(node_bin, broker):
    out = run_scenario(node_bin, broker, "heartbeat")
    assert out["heartbeat"] == 1
    assert out["closed"] is None
    assert out["queue"].startswith("amq.gen-")
