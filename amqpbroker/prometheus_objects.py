"""RabbitMQ's other Prometheus pages: ``/metrics/per-object`` (the aggregated page's
families with one sample per queue, labelled ``vhost`` and ``queue``) and
``/metrics/detailed?family=...&vhost=...`` (the ``rabbitmq_detailed_*`` families of the
named groups, optionally of some vhosts).  Both walk every queue at each scrape, as
RabbitMQ's do: they are for brokers with few queues, or for a filter by vhost."""
from __future__ import annotations

from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from . import prometheus

LABELS = ("vhost", "queue")
# per-queue gauges: (name after rabbitmq_[detailed_], help, from QueueStats)
QUEUE_GAUGES = (
    ("queue_messages_ready", "Messages ready to be delivered to consumers",
     lambda st: st.messages),
    ("queue_messages_unacked", "Messages delivered to consumers but not yet acknowledged",
     lambda st: st.unacked),
    ("queue_messages", "Sum of ready and unacknowledged messages - total queue depth",
     lambda st: st.messages + st.unacked),
    ("queue_messages_ready_bytes", "Size in bytes of ready messages",
     lambda st: st.message_bytes),
    ("queue_consumers", "Consumers on a queue", lambda st: st.consumers),
)
# /metrics/detailed: RabbitMQ's family groups -> the gauges above they hold
DETAILED = {
    "queue_coarse_metrics": ("queue_messages_ready", "queue_messages_unacked",
                             "queue_messages"),
    "queue_consumer_count": ("queue_consumers",),
    "queue_metrics": ("queue_messages_ready_bytes",),
}


def _queues(broker, vhosts):
    for vh in broker.vhosts.values():
        if not vhosts or vh.name in vhosts:
            for q in vh.queues.values():
                yield vh.name, q


def _queue_families(broker, prefix: str, names, vhosts=()):
    fams = {n: GaugeMetricFamily(f"rabbitmq_{prefix}{n}", h, labels=LABELS)
            for n, h, _ in QUEUE_GAUGES if n in names}
    published = CounterMetricFamily(f"rabbitmq_{prefix}queue_messages_published",
                                    "Total number of messages published to queues",
                                    labels=LABELS) if not prefix else None
    for vhost, q in _queues(broker, vhosts):
        st = q.stats()
        for n, _h, get in QUEUE_GAUGES:
            if n in fams:
                fams[n].add_metric((vhost, q.name), get(st))
        if published is not None:
            published.add_metric((vhost, q.name), q.counters.publish)
    yield from fams.values()
    if published is not None:
        yield published


class _PerObject:
    def __init__(self, broker):
        self.broker = broker

    def collect(self):
        for fam in prometheus._Collector(self.broker).collect():
            # the aggregated queue gauges give way to the per-queue ones
            if not any(fam.name == f"rabbitmq_{n}" for n, _h, _g in QUEUE_GAUGES):
                yield fam
        yield from _queue_families(self.broker, "", {n for n, _h, _g in QUEUE_GAUGES})


class _Detailed:
    def __init__(self, broker, families, vhosts):
        self.broker, self.families, self.vhosts = broker, families, vhosts

    def collect(self):
        yield from prometheus._Collector(self.broker)._identity()
        names = {n for f in self.families for n in DETAILED.get(f, ())}
        if names:
            yield from _queue_families(self.broker, "detailed_", names, self.vhosts)


def _render(collector) -> tuple[bytes, str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_PLAIN_0_0_4


def render_per_object(broker) -> tuple[bytes, str]:
    return _render(_PerObject(broker))


def render_detailed(broker, families, vhosts=()) -> tuple[bytes, str]:
    """``families``: RabbitMQ's group names (``queue_coarse_metrics``, ...; unknown ones
    give nothing, as RabbitMQ's); ``vhosts``: only these (all when empty)."""
    return _render(_Detailed(broker, tuple(families), tuple(vhosts)))
