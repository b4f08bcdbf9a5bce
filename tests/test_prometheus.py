"""prometheus.py: RabbitMQ's aggregated /metrics families, rendered from a real core
(frames through the sans-I/O broker) and parsed back with prometheus_client's parser."""
from __future__ import annotations

from pamqp import commands as C
from prometheus_client.parser import text_string_to_metric_families

from amqpbroker import prometheus
from amqpbroker.broker import Broker
from amqpbroker.config import Config
from amqpbroker.http.prometheus_app import prometheus_app
from amqpbroker.http.server import Request

from .sim import connected

DASHBOARD = prometheus.DASHBOARD


def scrape(broker) -> dict:
    body, ctype = prometheus.render(broker)
    assert ctype.startswith("text/plain; version=0.0.4")
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        out[fam.name] = fam
    return out


def value(m, name, **labels):
    return m[(name, tuple(sorted(labels.items())))]


def test_every_family_the_overview_dashboard_queries_is_there():
    m = scrape(Broker(Config()))
    missing = [f for f in DASHBOARD if f not in m]
    assert not missing


def test_the_numbers_follow_the_traffic():
    b = Broker(Config())
    c = connected(broker=b)
    c.declare(1, "q")
    c.declare(1, "q")                         # declared twice, created once
    c.call(1, C.Confirm.Select(), "Confirm.SelectOk")
    for _ in range(3):
        c.publish(1, "", "q", b"m")
    c.publish(1, "", "nowhere", b"m", mandatory=True)
    c.publish(1, "", "nowhere", b"m")
    assert c.get(1, "q", no_ack=True) is not None
    c.open_channel(2)
    m = scrape(b)
    amqp = {"protocol": "amqp091"}
    assert value(m, "rabbitmq_global_messages_received_total", **amqp) == 5
    assert value(m, "rabbitmq_global_messages_routed_total", **amqp) == 3
    assert value(m, "rabbitmq_global_messages_unroutable_returned_total", **amqp) == 1
    assert value(m, "rabbitmq_global_messages_unroutable_dropped_total", **amqp) == 1
    assert value(m, "rabbitmq_global_messages_confirmed_total", **amqp) == 5
    assert value(m, "rabbitmq_global_messages_delivered_get_auto_ack_total",
                 queue_type="rabbit_classic_queue", **amqp) == 1
    assert value(m, "rabbitmq_global_messages_delivered_total", queue_type=
                 "rabbit_classic_queue", **amqp) == 1
    assert value(m, "rabbitmq_queue_messages_ready") == 2
    assert value(m, "rabbitmq_queue_messages") == 2
    assert value(m, "rabbitmq_queues") == 1
    assert value(m, "rabbitmq_queues_declared_total") == 2
    assert value(m, "rabbitmq_queues_created_total") == 1
    assert value(m, "rabbitmq_connections") == 1 and value(m, "rabbitmq_channels") == 2
    assert value(m, "rabbitmq_connections_opened_total") == 1
    assert value(m, "rabbitmq_channels_opened_total") == 2
    assert value(m, "rabbitmq_global_publishers", **amqp) == 1
    c.rpc(2, C.Channel.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
    c.call(1, C.Queue.Delete(queue="q"), "Queue.DeleteOk")
    m = scrape(b)
    assert value(m, "rabbitmq_channels_closed_total") == 1
    assert value(m, "rabbitmq_queues_deleted_total") == 1 and value(m, "rabbitmq_queues") == 0
    assert value(m, "rabbitmq_global_messages_received_total", **amqp) == 5  # kept


def test_the_app_serves_metrics_and_nothing_else():
    app = prometheus_app(Broker(Config()))
    ok = app(Request("GET", "/metrics", {}))
    assert ok.status == 200 and b"rabbitmq_identity_info" in ok.body
    assert app(Request("GET", "/api/overview", {})).status == 404
    assert app(Request("POST", "/metrics", {})).status == 405


def test_many_queues_are_summed_in_steps_on_the_scheduler(monkeypatch):
    import time
    monkeypatch.setattr(prometheus, "SYNC_LIMIT", 3)
    monkeypatch.setattr(prometheus, "STEP", 2)
    b = Broker(Config())
    c = connected(broker=b)
    for i in range(5):
        c.declare(1, f"q{i}")
        c.publish(1, "", f"q{i}", b"m")
    m = scrape(b)                                   # the first scrape sums them at once
    assert value(m, "rabbitmq_queue_messages_ready") == 5
    c.publish(1, "", "q0", b"m")
    assert value(scrape(b), "rabbitmq_queue_messages_ready") == 5   # the last pass's
    now = time.monotonic()
    for step in range(3):                           # 5 queues, 2 a step: 3 steps a pass
        b.scheduler.run_due(now + step + 0.5)
    assert value(scrape(b), "rabbitmq_queue_messages_ready") == 6
    assert value(scrape(b), "rabbitmq_queues") == 5  # (a count needs no pass)


def test_per_object_and_detailed_pages():
    from amqpbroker import prometheus_objects
    b = Broker(Config())
    b.add_vhost("other")
    c = connected(broker=b)
    c.declare(1, "a")
    c.publish(1, "", "a", b"m")
    c.publish(1, "", "a", b"m")
    b.vhosts["other"].declare_queue("b", False, False, False, False, {}, None)

    def parse(body):
        out = {}
        for fam in text_string_to_metric_families(body.decode()):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out
    m = parse(prometheus_objects.render_per_object(b)[0])
    assert m[("rabbitmq_queue_messages_ready", (("queue", "a"), ("vhost", "/")))] == 2
    assert m[("rabbitmq_queue_messages_ready", (("queue", "b"), ("vhost", "other")))] == 0
    assert m[("rabbitmq_queue_messages_published_total", (("queue", "a"), ("vhost", "/")))] == 2
    assert ("rabbitmq_queue_messages_ready", ()) not in m        # no aggregate here
    assert ("rabbitmq_connections", ()) in m
    d = parse(prometheus_objects.render_detailed(b, ["queue_coarse_metrics"], ["/"])[0])
    assert d[("rabbitmq_detailed_queue_messages", (("queue", "a"), ("vhost", "/")))] == 2
    assert not [k for k in d if dict(k[1]).get("vhost") == "other"]
    assert not [k for k in d if k[0] == "rabbitmq_detailed_queue_consumers"]
    app = prometheus_app(b)
    r = app(Request("GET", "/metrics/detailed?family=queue_consumer_count", {}))
    assert r.status == 200 and b'rabbitmq_detailed_queue_consumers{queue="b",vhost="other"} 0.0' \
        in r.body
