"""The queue-type conformance suite: every type in the registry (queues.KINDS), through the
QueueType protocol only, and through the wire (the channel is the DeliverySink): FIFO and
requeue to place against a model, prefetch, consumer priorities, single active consumer,
TTL and dead-lettering, Basic.Get, purge and delete, and a restart through SQLite.  A new
type (JetStream quorum queues, paged queues) is registered and passes this file."""
from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from pamqp import commands as C

from amqpbroker import errors
from amqpbroker.broker import Broker
from amqpbroker.config import Config
from amqpbroker.message import Message
from amqpbroker.queues import (ACK, KINDS, REFUSED, REJECT, REQUEUE, SAFE, Consumer, DeliverySink,
                               Queue, QueueArgs, QueueKind, QueueType, register)
from amqpbroker.queues.args import TYPE_NAMES
from amqpbroker.store.sqlite import SQLiteStore

from .sim import connected, messages, names
from .test_queue_features import Clock

TYPES = sorted(KINDS)


class Sink:
    """A DeliverySink that keeps what it is given (a consumer's view without a channel)."""

    def __init__(self):
        self.open = True
        self.got: list[tuple[str, object]] = []
        self.gone: list[str] = []

    def can_deliver(self) -> bool:
        return self.open

    def deliver(self, consumer, queue, delivery) -> None:
        self.got.append((consumer.tag, delivery))

    def cancelled(self, consumer) -> None:
        self.gone.append(consumer.tag)


def make(kind: QueueKind, name="q", dead=None, **arguments) -> QueueType:
    arguments = {"x-queue-type": kind.name, **arguments}
    args = QueueArgs.parse(name, "/", arguments)
    kind.check_declare(name, True, False, "in vhost '/'")
    dead_letter = (lambda q, msg, reason: dead.append((msg, reason))) if dead is not None \
        else (lambda q, msg, reason: None)
    return kind.factory(name, True, None, False, arguments, args, dead_letter, None, 0.0,
                        None, "/", {})


def message(n: int, size: int = 1) -> Message:
    props = C.Basic.Properties(message_id=str(n)).marshal()
    return Message("", "q", props, bytes([n % 256]) * size)


def n_of(delivery) -> int:
    return int(delivery.msg.properties.message_id)


# =========================================================================== the protocol

@pytest.mark.parametrize("type_name", TYPES)
def test_type_implements_the_protocol(type_name):
    q = make(KINDS[type_name])
    assert isinstance(q, QueueType)
    assert q.name == "q" and q.durable and not q.deleted
    assert q.arguments["x-queue-type"] == type_name


def test_the_channel_and_the_test_sink_are_delivery_sinks():
    c = connected()
    assert isinstance(c.conn.channels[1], DeliverySink)
    assert isinstance(Sink(), DeliverySink)
    assert not isinstance(object(), DeliverySink)


def test_unknown_types_are_refused_and_quorum_keeps_its_declare_rules():
    with pytest.raises(errors.PreconditionFailed, match="unsupported queue type 'lazy'"):
        QueueArgs.parse("q", "/", {"x-queue-type": "lazy"})
    with pytest.raises(errors.PreconditionFailed, match="'stream' .* not supported"):
        QueueArgs.parse("q", "/", {"x-queue-type": "stream"})
    with pytest.raises(errors.PreconditionFailed, match="non-durable"):
        KINDS["quorum"].check_declare("q", False, False, "in vhost '/'")
    with pytest.raises(errors.PreconditionFailed, match="server-named"):
        KINDS["quorum"].check_declare("", True, False, "in vhost '/'")


def test_the_vhost_creates_queues_through_the_registry():
    made = []

    class Recorded(Queue):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            made.append(self)

    register(QueueKind("recorded", Recorded))
    try:
        c = connected()
        c.declare(1, "r", durable=True, arguments={"x-queue-type": "recorded"})
        q = c.broker.vhosts["/"].queues["r"]
        assert made == [q]
        c.publish(1, "", "r", b"hi")
        assert c.get(1, "r", no_ack=True).body == b"hi"
    finally:
        KINDS.pop("recorded")
        TYPE_NAMES.discard("recorded")


@pytest.mark.parametrize("type_name", TYPES)
def test_accept_returns_a_ticket_and_refused_on_reject_publish(type_name):
    q = make(KINDS[type_name], **{"x-max-length": 1, "x-overflow": "reject-publish"})
    assert q.accept(message(1), 0.0) is SAFE  # no store: nothing to wait for
    assert q.accept(message(2), 0.0) is REFUSED
    assert q.stats().messages == 1


@pytest.mark.parametrize("type_name", TYPES)
def test_settle_batches_and_prefetch(type_name):
    q = make(KINDS[type_name])
    sink = Sink()
    c = Consumer("c", sink, q, False, False, 0, 2, {})
    q.add_consumer(c, 0.0)
    for n in range(1, 6):
        q.accept(message(n), 0.0)
        q.dispatch(0.0)
    assert [n_of(d) for _, d in sink.got] == [1, 2]  # prefetch 2
    assert q.stats().unacked == 2 and q.stats().messages == 3
    first, second = [d for _, d in sink.got]
    sink.got = []
    q.settle([first, second], REQUEUE)
    q.dispatch(0.0)
    got = [(n_of(d), d.redelivered) for _, d in sink.got]
    assert got == [(1, True), (2, True)]  # back in their places, first out again
    q.settle([d for _, d in sink.got], ACK)
    sink.got = []
    q.dispatch(0.0)
    assert [n_of(d) for _, d in sink.got] == [3, 4]
    q.settle([d for _, d in sink.got], REJECT)
    assert q.stats().unacked == 0


@pytest.mark.parametrize("type_name", TYPES)
def test_get_purge_delete(type_name):
    q = make(KINDS[type_name])
    for n in range(1, 4):
        q.accept(message(n, 10), 0.0)
    assert q.stats().message_bytes == 30
    d, remaining = q.get(0.0, no_ack=False)
    assert (n_of(d), remaining) == (1, 2)
    assert q.stats().unacked == 1
    d2, remaining = q.get(0.0, no_ack=True)
    assert (n_of(d2), remaining) == (2, 1)
    assert q.stats().unacked == 1
    assert q.purge() == 1 and q.get(0.0, False) is None
    sink = Sink()
    q.add_consumer(Consumer("c", sink, q, False, False, 0, 0, {}), 0.0)
    q.accept(message(4), 0.0)
    assert q.delete() == 1
    assert q.deleted and sink.gone == ["c"]
    q.settle([d], ACK)  # a delivery of a deleted queue: only the bookkeeping goes


@pytest.mark.parametrize("type_name", TYPES)
def test_exclusive_consumer_keeps_others_out(type_name):
    q = make(KINDS[type_name])
    q.add_consumer(Consumer("a", Sink(), q, False, True, 0, 0, {}), 0.0)
    with pytest.raises(errors.AccessRefused, match="in exclusive use"):
        q.add_consumer(Consumer("b", Sink(), q, False, False, 0, 0, {}), 0.0)
    assert q.consumer_count == 1


@pytest.mark.parametrize("type_name", TYPES)
def test_consumer_priorities_and_round_robin(type_name):
    q = make(KINDS[type_name])
    sink = Sink()
    for tag, prio in (("low", 0), ("hi1", 5), ("hi2", 5)):
        q.add_consumer(Consumer(tag, sink, q, True, False, prio, 0, {}), 0.0)
    for n in range(4):
        q.accept(message(n), 0.0)
        q.dispatch(0.0)
    assert [tag for tag, _ in sink.got] == ["hi1", "hi2", "hi1", "hi2"]
    assert q.stats().unacked == 0  # no-ack: settled as it went out


@pytest.mark.parametrize("type_name", TYPES)
def test_ttl_and_timer_dead_letter(type_name):
    dead = []
    q = make(KINDS[type_name], dead=dead, **{"x-message-ttl": 1000,
                                             "x-dead-letter-exchange": ""})
    q.accept(message(1), 0.0)
    assert q.next_deadline() == 1.0
    assert q.on_timer(0.5) is False and not dead
    assert q.on_timer(1.0) is False
    assert [(n_of_msg(m), why) for m, why in dead] == [(1, "expired")]
    assert q.stats().messages == 0 and q.next_deadline() is None


def n_of_msg(msg: Message) -> int:
    return int(msg.properties.message_id)


@pytest.mark.parametrize("type_name", TYPES)
def test_x_expires_on_timer(type_name):
    q = make(KINDS[type_name], **{"x-expires": 2000})
    q.touch(10.0)
    assert q.next_deadline() == 12.0
    assert q.on_timer(11.0) is False
    assert q.on_timer(12.0) is True  # the vhost deletes it


# =========================================================================== a model

class QueueMachine(RuleBasedStateMachine):
    """The protocol against a list model: deliveries in seq order, a requeued message back
    in its place and redelivered, prefetch never exceeded, counts always agree."""

    kind: QueueKind = KINDS["classic"]

    def __init__(self):
        super().__init__()
        self.q = make(self.kind, **{"x-delivery-limit": -1})
        self.sink = Sink()
        self.prefetch = 3
        self.c = Consumer("c", self.sink, self.q, False, False, 0, self.prefetch, {})
        self.consuming = False
        self.n = 0
        self.ready: list[tuple[int, int, bool]] = []   # (n, size, redelivered), in order
        self.unacked: dict[int, tuple] = {}            # n -> (delivery, size)
        self.consumed: set[int] = set()                # of those, delivered to self.c

    def _take_delivered(self):
        for _tag, d in self.sink.got:
            n = n_of(d)
            want_n, size, redelivered = self.ready.pop(0)
            assert (n, d.redelivered) == (want_n, redelivered)
            self.unacked[n] = (d, size)
            self.consumed.add(n)
        self.sink.got = []

    @rule(size=st.integers(0, 20))
    def publish(self, size):
        self.n += 1
        assert self.q.accept(message(self.n, size), 0.0) is SAFE
        self.ready.append((self.n, size, False))
        self.q.dispatch(0.0)
        self.q.after_publish(0.0)
        self._take_delivered()

    @precondition(lambda self: not self.consuming)
    @rule()
    def consume(self):
        self.q.add_consumer(self.c, 0.0)
        self.consuming = True
        self.q.dispatch(0.0)
        self._take_delivered()

    @rule()
    def block_unblock(self):
        self.sink.open = not self.sink.open
        self.q.dispatch(0.0)
        self._take_delivered()

    @rule(no_ack=st.booleans())
    def get(self, no_ack):
        got = self.q.get(0.0, no_ack)
        if not self.ready:
            assert got is None
            return
        d, remaining = got
        n, size, redelivered = self.ready.pop(0)
        assert (n_of(d), d.redelivered, remaining) == (n, redelivered, len(self.ready))
        if not no_ack:
            self.unacked[n] = (d, size)

    @precondition(lambda self: self.unacked)
    @rule(data=st.data(), outcome=st.sampled_from([ACK, REQUEUE, REJECT]))
    def settle(self, data, outcome):
        ns = data.draw(st.lists(st.sampled_from(sorted(self.unacked)), min_size=1,
                                unique=True))
        batch = [self.unacked[n][0] for n in ns]
        self.q.settle(batch, outcome)
        for n in ns:
            _d, size = self.unacked.pop(n)
            self.consumed.discard(n)
            if outcome == REQUEUE:
                self.ready.append((n, size, True))
        self.ready.sort()
        self.q.dispatch(0.0)
        self._take_delivered()

    @rule()
    def purge(self):
        assert self.q.purge() == len(self.ready)
        self.ready = []

    @invariant()
    def counts_agree(self):
        st_ = self.q.stats()
        assert st_.messages == self.q.message_count == len(self.ready)
        assert st_.message_bytes == sum(size for _, size, _ in self.ready)
        assert st_.unacked == len(self.unacked)
        assert st_.consumers == self.q.consumer_count == int(self.consuming)
        assert len(self.consumed) <= self.prefetch


for _name in TYPES:
    _machine = type(f"QueueMachine_{_name}", (QueueMachine,), {"kind": KINDS[_name]})
    _case = _machine.TestCase
    _case.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
    globals()[f"TestQueueMachine_{_name}"] = _case
del _name, _machine, _case


# =========================================================================== the wire

def wire(type_name: str, **arguments):
    broker = Broker(Config())
    clock = Clock()
    vh = broker.vhosts["/"]
    vh.clock = clock
    c = connected(broker=broker)
    c.declare(1, "q", durable=True, arguments={"x-queue-type": type_name, **arguments})
    return c, clock, vh


@pytest.mark.parametrize("type_name", TYPES)
def test_wire_prefetch_and_ack(type_name):
    c, _clock, _vh = wire(type_name)
    c.call(1, C.Basic.Qos(prefetch_count=1), "Basic.QosOk")
    c.rpc(1, C.Basic.Consume(queue="q", consumer_tag="a"))
    frames = []
    for i in range(3):
        frames += c.publish(1, "", "q", f"m{i}".encode())
    got = messages(frames)
    assert [m.body for m in got] == [b"m0"]
    got = messages(c.ack(1, got[0].method.delivery_tag))
    assert [m.body for m in got] == [b"m1"]


@pytest.mark.parametrize("type_name", TYPES)
def test_wire_single_active_consumer(type_name):
    c, _clock, _vh = wire(type_name, **{"x-single-active-consumer": True})
    c.open_channel(2)
    c.rpc(1, C.Basic.Consume(queue="q", consumer_tag="a", no_ack=True))
    c.rpc(2, C.Basic.Consume(queue="q", consumer_tag="b", no_ack=True))
    frames = []
    for i in range(2):
        frames += c.publish(1, "", "q", f"m{i}".encode())
    assert [m.method.consumer_tag for m in messages(frames)] == ["a", "a"]
    c.call(1, C.Basic.Cancel(consumer_tag="a"), "Basic.CancelOk")
    assert [m.method.consumer_tag for m in messages(c.publish(1, "", "q", b"m2"))] == ["b"]


@pytest.mark.parametrize("type_name", TYPES)
def test_wire_ttl_and_reject_dead_letter_with_x_death(type_name):
    c, clock, vh = wire(type_name, **{"x-message-ttl": 1000, "x-dead-letter-exchange": "",
                                      "x-dead-letter-routing-key": "dlq"})
    c.declare(1, "dlq")
    c.publish(1, "", "q", b"old")
    clock.now += 2
    vh.scheduler.run_due(clock.now)
    c.publish(1, "", "q", b"rejected")
    m = c.get(1, "q", no_ack=False)
    c.rpc(1, C.Basic.Reject(delivery_tag=m.method.delivery_tag, requeue=False))
    reasons = []
    while (d := c.get(1, "dlq", no_ack=True)) is not None:
        (entry,) = d.properties.headers["x-death"]
        reasons.append((d.body, entry["reason"], entry["queue"]))
    assert reasons == [(b"old", "expired", "q"), (b"rejected", "rejected", "q")]


@pytest.mark.parametrize("type_name", TYPES)
def test_wire_restart_through_sqlite(type_name, tmp_path):
    path = str(tmp_path / "store.db")
    c = connected(broker=Broker(Config(), store=SQLiteStore(path)))
    c.declare(1, "q", durable=True, arguments={"x-queue-type": type_name})
    persistent = C.Basic.Properties(delivery_mode=2)
    for i in range(3):
        c.publish(1, "", "q", f"m{i}".encode(), persistent)
    c.publish(1, "", "q", b"transient")
    m = c.get(1, "q", no_ack=False)  # unacked at the restart: back, redelivered
    assert m.body == b"m0"
    c.broker.store.sync_blocking()
    c.broker.store.close()

    c = connected(broker=Broker(Config(), store=SQLiteStore(path)))
    q = c.broker.vhosts["/"].queues["q"]
    assert isinstance(q, type(make(KINDS[type_name])))
    ok = c.declare(1, "q", durable=True, arguments={"x-queue-type": type_name})
    assert ok.message_count == 3
    got = []
    while (m := c.get(1, "q", no_ack=True)) is not None:
        got.append((m.body, m.method.redelivered))
    assert got == [(b"m0", True), (b"m1", True), (b"m2", True)]
    frames = c.rpc(1, C.Queue.Declare(queue="q", durable=True,
                                      arguments={"x-queue-type": "classic" if
                                                 type_name != "classic" else "quorum"}))
    assert "Channel.Close" in names(frames)  # the type survived: a different one is refused
    c.broker.store.close()
