"""Message and byte counters per queue, exchange, channel, connection and vhost, and the
rates sampled from them: what RabbitMQ's management API reports as ``message_stats``
(``publish``, ``deliver_get``, ... and their ``*_details.rate``) and its Prometheus
endpoint as ``*_total``.

Counting must cost next to nothing on the hot path, so a counter is a plain integer slot
of a small object that the counted thing holds (``queue.counters``, ``exchange.counters``,
``channel.counters``, ``connection.counters``, ``vhost.counters``), incremented by the code
that already holds it (the channel, the vhost's enqueue, the connection's byte I/O);
nothing is looked up, locked or timed per message.  Queue types only hold their
``QueueCounters``: the channel and the vhost count for every type alike.

Rates are computed off the hot path: ``RateSampler`` runs on the broker's scheduler every
``INTERVAL`` seconds (RabbitMQ's default ``collect_statistics_interval``) and leaves on each
object the per-second rate of each counter since the previous sample.

A vhost's totals are its live channels' and connections' counters summed, plus those of
the channels and connections already closed (``retire``), so that they never go down; they
are recomputed by ``refresh`` (the sampler, the admin facade), never per message."""
from __future__ import annotations

INTERVAL = 5.0  # seconds between rate samples (RabbitMQ's collect_statistics_interval)


class Counters:
    """Integer counters, and their rates.  ``COUNTED``: the slots the hot path increments;
    ``FIELDS``: what is reported, those and any derived from them (properties).  Each
    increment of a count past 256 allocates an int (about 280 instructions): a count that
    follows from others is derived, not counted."""

    COUNTED: tuple[str, ...] = ()
    FIELDS: tuple[str, ...] = ()
    __slots__ = ("rates", "_last")

    def __init__(self):
        for f in self.COUNTED:
            setattr(self, f, 0)
        self.rates: dict[str, float] | None = None     # counter -> per second, once sampled
        self._last: tuple[float, tuple] | None = None  # (time, values) of the last sample

    def values(self) -> tuple[int, ...]:
        return tuple(getattr(self, f) for f in self.FIELDS)

    def as_dict(self) -> dict[str, int]:
        return dict(zip(self.FIELDS, self.values()))

    def add(self, other: "Counters") -> None:
        for f in self.COUNTED:
            setattr(self, f, getattr(self, f) + getattr(other, f))

    def set_to(self, other: "Counters") -> None:
        """Take ``other``'s counts, in place (the sampled rates stay with this object)."""
        for f in self.COUNTED:
            setattr(self, f, getattr(other, f))

    def sample(self, now: float) -> None:
        """Rates since the previous sample (none after the first)."""
        cur = self.values()
        last = self._last
        if last is not None:
            if now <= last[0]:
                return  # no time has passed: the rates stand
            dt = now - last[0]
            self.rates = {f: (c - p) / dt for f, c, p in zip(self.FIELDS, cur, last[1])}
        self._last = (now, cur)

    def rate(self, name: str) -> float:
        return self.rates.get(name, 0.0) if self.rates else 0.0

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.as_dict()})"


# RabbitMQ's names (rabbit_core_metrics, the management plugin's message_stats)

class QueueCounters(Counters):
    """A queue's: messages accepted into it (``publish``), delivered to an acking or a
    no-ack consumer, fetched by Basic.Get (``get``, ``get_no_ack``, ``get_empty``), acked,
    and delivered again after a requeue (``redeliver``); of those accepted, the ones a
    deduplicating queue dropped as duplicates (``drop_duplicate``, ours: queues/dedup.py)."""

    FIELDS = COUNTED = ("publish", "deliver", "deliver_no_ack", "get", "get_no_ack",
                        "get_empty", "ack", "redeliver", "drop_duplicate")
    __slots__ = COUNTED


class ExchangeCounters(Counters):
    """An exchange's: messages published to it (``publish_in``), the ones it routed
    (``publish_out``: to a queue, or taken by its type), the ones that reached nothing and
    were returned (``mandatory``) or dropped, as RabbitMQ's (one per message, not per
    queue copy); and the duplicates a deduplicating exchange dropped (``drop_duplicate``,
    ours: dedupex.py)."""

    COUNTED = ("publish_in", "return_unroutable", "drop_unroutable", "drop_duplicate")
    FIELDS = ("publish_in", "publish_out", "return_unroutable", "drop_unroutable",
              "drop_duplicate")
    __slots__ = COUNTED

    @property
    def publish_out(self) -> int:
        # every message is routed, returned or dropped: the common case is not counted
        return self.publish_in - self.return_unroutable - self.drop_unroutable - \
            self.drop_duplicate


class ChannelCounters(Counters):
    """A channel's: what it published, confirmed (acks and nacks written), returned
    (``mandatory``) or dropped unroutable; what it delivered, got, saw acked and
    redelivered."""

    FIELDS = ("publish", "confirm", "return_unroutable", "drop_unroutable", "deliver",
              "deliver_no_ack", "get", "get_no_ack", "get_empty", "ack", "redeliver")
    # ``tags``: the delivery tags the channel has used (it numbers its deliveries with it);
    # ``replies``: direct reply-to deliveries, which use a tag but are not reported
    COUNTED = ("publish", "confirm", "return_unroutable", "drop_unroutable", "deliver",
               "tags", "replies", "get", "get_no_ack", "get_empty", "ack", "redeliver")
    __slots__ = COUNTED

    @property
    def deliver_no_ack(self) -> int:
        # every tag is one delivery or get: the common no-ack delivery is not counted
        return self.tags - self.replies - self.deliver - self.get - self.get_no_ack


class ConnectionCounters(Counters):
    """A connection's bytes received (``receive_data``) and sent (``data_to_send``), as
    RabbitMQ's ``recv_oct`` and ``send_oct`` (heartbeats included)."""

    FIELDS = COUNTED = ("recv_oct", "send_oct")
    __slots__ = COUNTED


class VhostCounters:
    """A vhost's totals: ``channels`` (every channel's counters summed) and
    ``connections`` (every connection's), live and closed.  Closed ones are added to
    ``retired_*`` once (``retire``); ``refresh`` sums the live ones on top."""

    # what opened and closed in the vhost (RabbitMQ's *_opened_total, *_closed_total,
    # queues_declared/created/deleted_total), counted where it happens, off the hot path
    LIFECYCLE = ("connections_opened", "connections_closed", "channels_opened",
                 "channels_closed", "queues_declared", "queues_created", "queues_deleted")
    __slots__ = ("channels", "connections", "retired_channels", "retired_connections",
                 *LIFECYCLE)

    def __init__(self):
        self.channels = ChannelCounters()
        self.connections = ConnectionCounters()
        self.retired_channels = ChannelCounters()
        self.retired_connections = ConnectionCounters()
        for f in self.LIFECYCLE:
            setattr(self, f, 0)

    def retire(self, counters: Counters) -> None:
        """A channel (ChannelCounters) or a connection (ConnectionCounters) is gone: its
        counts stay in the totals."""
        if isinstance(counters, ChannelCounters):
            self.retired_channels.add(counters)
        else:
            self.retired_connections.add(counters)

    def refresh(self, connections) -> None:
        """Recompute the totals from the vhost's live ``connections`` and their open
        channels (a closing channel has been retired already)."""
        chans, conns = ChannelCounters(), ConnectionCounters()
        chans.add(self.retired_channels)
        conns.add(self.retired_connections)
        for conn in connections:
            conns.add(conn.counters)
            for ch in list(conn.channels.values()):
                if not ch.closing:
                    chans.add(ch.counters)
        self.channels.set_to(chans)
        self.connections.set_to(conns)


# ---------------------------------------------------------------------- reporting

_DELIVER_GET = ("deliver", "deliver_no_ack", "get", "get_no_ack")


def message_stats(counters: Counters) -> dict:
    """RabbitMQ's JSON shape: each counter with its ``<name>_details: {"rate": r}``, and
    for deliveries the sum RabbitMQ adds (``deliver_get`` and its details)."""
    out: dict = {}
    for f in counters.FIELDS:
        out[f] = getattr(counters, f)
        out[f + "_details"] = {"rate": counters.rate(f)}
    if "deliver" in counters.FIELDS:
        out["deliver_get"] = sum(getattr(counters, f) for f in _DELIVER_GET)
        out["deliver_get_details"] = {"rate": sum(counters.rate(f) for f in _DELIVER_GET)}
    return out


# ---------------------------------------------------------------------- sampling

def vhost_connections(broker) -> dict[str, list]:
    """vhost name -> its open connections."""
    by_vhost: dict[str, list] = {name: [] for name in broker.vhosts}
    for conn in list(broker.connections):
        if conn.vhost is not None and conn.vhost.name in by_vhost:
            by_vhost[conn.vhost.name].append(conn)
    return by_vhost


def refresh(broker) -> dict[str, list]:
    """Every vhost's totals recomputed; returns ``vhost_connections(broker)``."""
    by_vhost = vhost_connections(broker)
    for name, vh in broker.vhosts.items():
        vh.counters.refresh(by_vhost[name])
    return by_vhost


def broker_objects(broker):
    """Every counted object of a broker, the vhost totals refreshed first.  Reads the
    broker's public structures only (vhosts, their exchanges and queues, connections and
    their channels)."""
    by_vhost = refresh(broker)
    for name, vh in broker.vhosts.items():
        yield vh.counters.channels
        yield vh.counters.connections
        yield vh.default_exchange.counters
        for ex in list(vh.exchanges.values()):
            yield ex.counters
        for q in list(vh.queues.values()):
            yield q.counters
        for conn in by_vhost[name]:
            yield conn.counters
            for ch in list(conn.channels.values()):
                yield ch.counters


class RateSampler:
    """Every ``interval`` seconds on ``scheduler`` (``call_at``, ``cancel``), sample each of
    ``objects()`` (an iterable of Counters) into its rates.  ``sample(now)`` is the step,
    callable by hand with the time passed in; ``start(now)`` puts it on the scheduler."""

    def __init__(self, scheduler, objects, interval: float = INTERVAL):
        self.scheduler = scheduler
        self.objects = objects
        self.interval = interval
        self.handle = None
        self.last: float | None = None  # when the last sample was taken

    def sample(self, now: float) -> int:
        """Sample every object; returns how many."""
        n = 0
        for counters in self.objects():
            counters.sample(now)
            n += 1
        self.last = now
        return n

    def start(self, now: float) -> None:
        """Sample now (the baseline: rates appear from the next sample on), then every
        ``interval``."""
        self.stop()
        self._tick(now)

    def stop(self) -> None:
        if self.handle is not None:
            self.scheduler.cancel(self.handle)
            self.handle = None

    def _tick(self, now: float | None = None) -> None:
        if now is None:
            now = self.scheduler.now  # run_due's time
        # the next sample first: a failing one (logged by the scheduler) stops no rates
        self.handle = self.scheduler.call_at(now + self.interval, self._tick)
        self.sample(now)
