"""RabbitMQ's Prometheus metrics (rabbitmq_prometheus, its aggregated ``/metrics``): the
same family names, types and labels, so that RabbitMQ's Grafana dashboards
("RabbitMQ-Overview") work against amqpbroker.  The exposition format is
prometheus_client's; this module only says what the numbers are.

Every number comes from what the core keeps anyway (metrics.py counters, the vhosts'
lifecycle counts, queue stats), read when a scrape asks; nothing is counted for it on
the hot path.  ``render(broker)`` -> (bytes, content type)."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import resource
import shutil
import time

from prometheus_client.core import (CollectorRegistry, CounterMetricFamily, GaugeMetricFamily,
                                    UnknownMetricFamily)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from . import __version__, metrics

# the families RabbitMQ's "RabbitMQ-Overview" Grafana dashboard queries (its JSON in
# rabbitmq-server's deps/rabbitmq_prometheus/docker/grafana/dashboards), but for
# rabbitmq_message_size_bytes, a RabbitMQ 4 histogram that 3.10 lacks too (its panel stays
# empty: counting it would cost every publish)
DASHBOARD = (
    "rabbitmq_build_info", "rabbitmq_identity_info", "rabbitmq_channels",
    "rabbitmq_channels_opened", "rabbitmq_channels_closed", "rabbitmq_connections",
    "rabbitmq_connections_opened", "rabbitmq_connections_closed",
    "rabbitmq_disk_space_available_bytes", "rabbitmq_disk_space_available_limit_bytes",
    "rabbitmq_erlang_uptime_seconds", "rabbitmq_global_consumers",
    "rabbitmq_global_messages_acknowledged", "rabbitmq_global_messages_confirmed",
    "rabbitmq_global_messages_delivered_consume_auto_ack",
    "rabbitmq_global_messages_delivered_consume_manual_ack",
    "rabbitmq_global_messages_delivered_get_auto_ack",
    "rabbitmq_global_messages_delivered_get_manual_ack", "rabbitmq_global_messages_delivered",
    "rabbitmq_global_messages_get_empty", "rabbitmq_global_messages_received_confirm",
    "rabbitmq_global_messages_received", "rabbitmq_global_messages_redelivered",
    "rabbitmq_global_messages_routed", "rabbitmq_global_messages_unroutable_dropped",
    "rabbitmq_global_messages_unroutable_returned", "rabbitmq_global_publishers",
    "rabbitmq_process_max_fds", "rabbitmq_process_open_fds",
    "rabbitmq_process_resident_memory_bytes", "rabbitmq_queue_messages_ready",
    "rabbitmq_queue_messages_unacked", "rabbitmq_queues", "rabbitmq_queues_created",
    "rabbitmq_queues_declared", "rabbitmq_queues_deleted",
    "rabbitmq_resident_memory_limit_bytes")

NODE = "amqpbroker@localhost"
CLUSTER = "amqpbroker"
QUEUE_TYPE = "rabbit_classic_queue"   # the label RabbitMQ gives its classic queues
_STARTED = time.time()

# (RabbitMQ's family, its help, what it is in our channel totals)
GLOBAL_COUNTERS = (
    ("messages_received", "Total number of messages received from publishers",
     lambda c: c.publish),
    ("messages_received_confirm", "Total number of messages received from publishers "
     "expecting confirmations", lambda c: c.confirm),
    ("messages_routed", "Total number of messages routed to queues or streams",
     lambda c: c.publish - c.return_unroutable - c.drop_unroutable),
    ("messages_unroutable_dropped", "Total number of messages published as non-mandatory "
     "into an exchange and dropped as unroutable", lambda c: c.drop_unroutable),
    ("messages_unroutable_returned", "Total number of messages published as mandatory "
     "into an exchange and returned to the publisher as unroutable",
     lambda c: c.return_unroutable),
    ("messages_confirmed", "Total number of messages confirmed to publishers",
     lambda c: c.confirm),
    ("messages_delivered_consume_manual_ack", "Total number of messages delivered to "
     "consumers using manual acknowledgements", lambda c: c.deliver),
    ("messages_delivered_consume_auto_ack", "Total number of messages delivered to "
     "consumers using automatic acknowledgements", lambda c: c.deliver_no_ack),
    ("messages_delivered_get_manual_ack", "Total number of messages delivered to "
     "consumers using basic.get with manual acknowledgements", lambda c: c.get),
    ("messages_delivered_get_auto_ack", "Total number of messages delivered to consumers "
     "using basic.get with automatic acknowledgements", lambda c: c.get_no_ack),
    ("messages_get_empty", "Total number of times basic.get operations fetched no message",
     lambda c: c.get_empty),
    ("messages_redelivered", "Total number of messages redelivered to consumers",
     lambda c: c.redeliver),
    ("messages_acknowledged", "Total number of messages acknowledged by consumers",
     lambda c: c.ack),
)
PER_QUEUE_TYPE = {"messages_delivered_consume_manual_ack", "messages_delivered_consume_auto_ack",
                  "messages_delivered_get_manual_ack", "messages_delivered_get_auto_ack",
                  "messages_get_empty", "messages_redelivered", "messages_acknowledged"}
# delivered, per queue type (RabbitMQ's label), is the sum of the four delivery kinds
_DELIVERED = ("deliver", "deliver_no_ack", "get", "get_no_ack")

LIFECYCLE = (  # (family, help, VhostCounters slot)
    ("connections_opened_total", "Total number of connections opened",
     "connections_opened"),
    ("connections_closed_total", "Total number of connections closed or terminated",
     "connections_closed"),
    ("channels_opened_total", "Total number of channels opened", "channels_opened"),
    ("channels_closed_total", "Total number of channels closed", "channels_closed"),
    ("queues_declared_total", "Total number of queues declared", "queues_declared"),
    ("queues_created_total", "Total number of queues created", "queues_created"),
    ("queues_deleted_total", "Total number of queues deleted", "queues_deleted"),
)


class _Collector:
    def __init__(self, broker):
        self.broker = broker

    def collect(self):
        b = self.broker
        metrics.refresh(b)   # the vhost totals from live channels and connections
        chans = metrics.ChannelCounters()
        for vh in b.vhosts.values():
            chans.add(vh.counters.channels)
        yield from self._identity()
        for name, help_, slot in LIFECYCLE:
            yield _counter(name[:-len("_total")], help_,
                           sum(getattr(vh.counters, slot) for vh in b.vhosts.values()))
        yield from self._process()
        yield from self._totals()
        proto = {"protocol": "amqp091"}
        for name, help_, value in GLOBAL_COUNTERS:
            # the delivery side is per queue type in RabbitMQ's, the publish side not
            labels = {**proto, "queue_type": QUEUE_TYPE} if name in PER_QUEUE_TYPE else proto
            yield _counter(f"global_{name}", help_, value(chans), labels)
        delivered = sum(getattr(chans, f) for f in _DELIVERED)
        yield _counter("global_messages_delivered", "Total number of messages delivered to "
                       "consumers", delivered, {**proto, "queue_type": QUEUE_TYPE})
        consumers = sum(len(ch.consumers) for c in b.connections for ch in c.channels.values())
        publishers = sum(1 for c in b.connections if c.publisher)
        yield _gauge("global_consumers", "Current number of consumers", consumers, proto)
        yield _gauge("global_publishers", "Current number of publishers", publishers, proto)

    def _identity(self):
        # RabbitMQ's labels; there is no Erlang here, so its label says what runs instead
        info = UnknownMetricFamily("rabbitmq_build_info", "RabbitMQ & Erlang/OTP version info",
                                   labels=("rabbitmq_version", "prometheus_plugin_version",
                                           "prometheus_client_version", "erlang_version"))
        info.add_metric(("3.10.0", __version__, _client_version(),
                         f"none (amqpbroker {__version__}, Python {platform.python_version()})"),
                        1)
        yield info
        ident = UnknownMetricFamily("rabbitmq_identity_info", "RabbitMQ node & cluster identity "
                                  "info", labels=("rabbitmq_node", "rabbitmq_cluster",
                                                  "rabbitmq_cluster_permanent_id"))
        ident.add_metric((NODE, CLUSTER, f"amqpbroker-cluster-id-{CLUSTER}"), 1)
        yield ident

    def _process(self):
        b = self.broker
        rss = _rss()
        yield _gauge("process_resident_memory_bytes", "Memory used in bytes", rss)
        limit = getattr(b, "memory_limit", None)
        yield _gauge("resident_memory_limit_bytes", "Memory high watermark in bytes",
                     limit if isinstance(limit, int) else 0)
        path = getattr(b.store, "path", None) or "."
        try:
            free = shutil.disk_usage(path).free
        except OSError:
            free = 0
        yield _gauge("disk_space_available_bytes", "Disk space available in bytes", free)
        yield _gauge("disk_space_available_limit_bytes", "Free disk space low watermark in "
                     "bytes", 50_000_000)
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        try:
            fds = len(os.listdir("/proc/self/fd"))
        except OSError:
            fds = 0
        yield _gauge("process_open_fds", "Open file descriptors", fds)
        yield _gauge("process_max_fds", "Open file descriptors limit", soft)
        yield _gauge("process_open_tcp_sockets", "Open TCP sockets", len(b.connections))
        yield _gauge("process_max_tcp_sockets", "Open TCP sockets limit", soft)
        yield GaugeMetricFamily("process_start_time_seconds", "Start time of the process "
                                "since unix epoch in seconds.", value=_STARTED)
        yield _gauge("erlang_uptime_seconds", "Node uptime", time.time() - _STARTED)

    def _totals(self):
        """The aggregated queue gauges and the object counts (sums over every queue, as
        RabbitMQ's aggregated /metrics; ``QueueTotals`` keeps them for many queues)."""
        b = self.broker
        totals = getattr(b, "queue_totals", None)
        if totals is None:
            totals = b.queue_totals = QueueTotals(b)
        ready, unacked, ready_bytes, queue_consumers = totals.current()
        nqueues = sum(len(vh.queues) for vh in b.vhosts.values())
        yield _gauge("queue_messages_ready", "Messages ready to be delivered to consumers",
                     ready)
        yield _gauge("queue_messages_unacked", "Messages delivered to consumers but not yet "
                     "acknowledged", unacked)
        yield _gauge("queue_messages", "Sum of ready and unacknowledged messages - total "
                     "queue depth", ready + unacked)
        yield _gauge("queue_messages_ready_bytes", "Size in bytes of ready messages",
                     ready_bytes)
        yield _gauge("queue_consumers", "Consumers on a queue", queue_consumers)
        channels = sum(len(c.channels) for c in b.connections)
        yield _gauge("connections", "Connections currently open", len(b.connections))
        yield _gauge("channels", "Channels currently open", channels)
        yield _gauge("consumers", "Consumers currently connected", queue_consumers)
        yield _gauge("queues", "Queues available", nqueues)


SYNC_LIMIT = 10_000     # up to this many queues a scrape sums them itself (< 10 ms)
STEP = 2_000            # queues summed per step of the background pass
STEP_INTERVAL = 0.01    # s between steps: a pass over 100,000 queues takes about 0.5 s
PASS_INTERVAL = 5.0     # s between passes (RabbitMQ's collect_statistics_interval)
IDLE = 60.0             # s without a scrape after which the passes stop


def _sum(queues) -> list[int]:
    acc = [0, 0, 0, 0]   # ready, unacked, ready bytes, consumers
    for q in queues:
        if not q.deleted:
            st = q.stats()
            acc[0] += st.messages
            acc[1] += st.unacked
            acc[2] += st.message_bytes
            acc[3] += st.consumers
    return acc


class QueueTotals:
    """The queue gauges summed over every queue.  Up to ``SYNC_LIMIT`` queues a scrape
    sums them itself; beyond, a pass on the broker's scheduler sums ``STEP`` queues at a
    time, a pass every ``PASS_INTERVAL``, and a scrape reads the last finished pass (at
    most about 6 s old for 100,000 queues; RabbitMQ's are its 5 s collection interval
    old), so a scrape costs the event loop the same whatever the number of queues.  The passes stop a minute after
    the last scrape."""

    def __init__(self, broker):
        self.broker = broker
        self.values: list[int] | None = None
        self._pending: list | None = None   # the queues of the pass under way
        self._pos = 0
        self._acc = [0, 0, 0, 0]
        self._handle = None
        self._scraped = 0.0

    def _queues(self) -> list:
        return [q for vh in self.broker.vhosts.values() for q in vh.queues.values()]

    def current(self) -> list[int]:
        b = self.broker
        if sum(len(vh.queues) for vh in b.vhosts.values()) <= SYNC_LIMIT:
            return _sum(self._queues())
        self._scraped = now = time.monotonic()
        if self.values is None:  # the first scrape of a big broker pays once
            self.values = _sum(self._queues())
        if self._handle is None:
            self._handle = b.scheduler.call_at(now, self._step)
        return self.values

    def _step(self) -> None:
        now = time.monotonic()
        if self._pending is None:
            if now - self._scraped > IDLE:
                self._handle = None   # nobody scrapes: the next scrape starts again
                return
            self._pending, self._pos, self._acc = self._queues(), 0, [0, 0, 0, 0]
        for i, v in enumerate(_sum(self._pending[self._pos:self._pos + STEP])):
            self._acc[i] += v
        self._pos += STEP
        delay = STEP_INTERVAL
        if self._pos >= len(self._pending):
            self.values, self._pending, delay = self._acc, None, PASS_INTERVAL
        self._handle = self.broker.scheduler.call_at(now + delay, self._step)


def _client_version() -> str:
    try:
        return importlib.metadata.version("prometheus_client")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _gauge(name: str, help_: str, value, labels: dict | None = None):
    g = GaugeMetricFamily(f"rabbitmq_{name}", help_, labels=tuple(labels or ()))
    g.add_metric(tuple((labels or {}).values()), value)
    return g


def _counter(name: str, help_: str, value, labels: dict | None = None):
    c = CounterMetricFamily(f"rabbitmq_{name}", help_, labels=tuple(labels or ()))
    c.add_metric(tuple((labels or {}).values()), value)
    return c


def render(broker) -> tuple[bytes, str]:
    """The aggregated /metrics page of ``broker`` and its content type (call it on the
    broker's event loop: it reads the core's structures)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(broker))
    return generate_latest(registry), CONTENT_TYPE_PLAIN_0_0_4  # (what RabbitMQ sends)
