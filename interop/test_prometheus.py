"""The Prometheus endpoint against RabbitMQ's (rabbitmq_prometheus on 15692,
``AMQP_REFERENCE_PROMETHEUS_URL``): every family the "RabbitMQ-Overview" Grafana dashboard
queries is on both, with the same type and label names, and ours follows real traffic."""
from __future__ import annotations

import os
import urllib.error
import urllib.request

import pika
import pytest
from prometheus_client.parser import text_string_to_metric_families

from amqpbroker.prometheus import DASHBOARD
from conftest import start_amqpbroker, stop

REFERENCE = os.environ.get("AMQP_REFERENCE_PROMETHEUS_URL")


def families(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.status == 200
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


@pytest.fixture(scope="module")
def ours():
    proc, port = start_amqpbroker()
    assert proc.prometheus_port
    yield port, f"http://127.0.0.1:{proc.prometheus_port}/metrics"
    stop(proc)


def test_ours_follows_traffic(ours):
    amqp_port, url = ours
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", amqp_port))
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    for _ in range(4):
        ch.basic_publish("", q, b"m")
    ch.basic_get(q, auto_ack=True)
    fams = families(url)
    get = {s.name: s.value for f in fams.values() for s in f.samples}
    assert get["rabbitmq_global_messages_received_total"] >= 4
    assert get["rabbitmq_queue_messages_ready"] >= 3
    assert get["rabbitmq_connections"] >= 1
    conn.close()


@pytest.mark.skipif(not REFERENCE, reason="AMQP_REFERENCE_PROMETHEUS_URL is not set")
def test_the_dashboards_families_match_rabbitmqs(ours):
    theirs, mine = families(REFERENCE), families(ours[1])
    for name in DASHBOARD:
        assert name in theirs, f"RabbitMQ has no {name}: the list is wrong"
        assert name in mine, name
        assert mine[name].type == theirs[name].type, name
        labels = lambda fam: {k for s in fam.samples for k in s.labels}  # noqa: E731
        assert labels(mine[name]) == labels(theirs[name]), name


def test_only_metrics_is_served(ours):
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(ours[1].replace("/metrics", "/api/overview"), timeout=5)
    assert e.value.code == 404


@pytest.mark.skipif(not REFERENCE, reason="AMQP_REFERENCE_PROMETHEUS_URL is not set")
@pytest.mark.parametrize("page", ["per-object", "detailed?family=queue_coarse_metrics"
                                                "&family=queue_consumer_count"])
def test_the_other_pages_name_queue_families_as_rabbitmqs(ours, page):
    amqp_port, url = ours
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", amqp_port))
    conn.channel().queue_declare("", exclusive=True)   # one queue at least on ours
    base = REFERENCE.rsplit("/metrics", 1)[0]
    theirs = families(f"{base}/metrics/{page}")
    mine = families(url.replace("/metrics", f"/metrics/{page}"))
    queue_fams = {n for n in mine if "queue_" in n and n.startswith("rabbitmq_")
                  and any("queue" in s.labels for s in mine[n].samples)}
    assert queue_fams
    for name in queue_fams:
        assert name in theirs, name
        assert mine[name].type == theirs[name].type, name
        labels = {k for s in mine[name].samples for k in s.labels}
        assert labels <= {k for s in theirs[name].samples for k in s.labels} | {"vhost", "queue"}
    conn.close()
