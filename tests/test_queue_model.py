"""queues.Queue against a list model (Hypothesis state machine): FIFO by seq, requeued
messages back in their original place and marked redelivered, purge drops ready messages
only, counts and byte totals always agree."""
from __future__ import annotations

import inspect

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule
from pamqp import commands as C

from amqpbroker.message import Message
from amqpbroker.queues import Queue, QueueArgs

_TAKE_NEEDS_NOW = "now" in inspect.signature(Queue.take).parameters


def take(q: Queue):
    return q.take(0.0) if _TAKE_NEEDS_NOW else q.take()


def make_message(n: int, size: int, priority: int | None = None) -> Message:
    props = C.Basic.Properties(priority=priority, message_id=str(n)).marshal()
    return Message("ex", f"rk{n}", props, bytes([n % 256]) * size)


class FifoQueueMachine(RuleBasedStateMachine):
    """The model: ``ready`` is a list of (order key, n, size, redelivered) kept sorted by
    order key; ``unacked`` maps n -> (order key, size, QueuedMessage)."""

    unacked_msgs = Bundle("unacked")

    def __init__(self):
        super().__init__()
        self.q = self.make_queue()
        self.n = 0
        self.ready: list[tuple] = []
        self.unacked: dict[int, tuple] = {}
        self.gone: set[int] = set()

    def make_queue(self) -> Queue:
        return Queue("q")

    def order_key(self, seq: int, priority: int) -> tuple:
        return (seq,)

    def priority_for(self, data) -> int | None:
        return None

    # ------------------------------------------------------------------ rules

    @rule(size=st.integers(0, 50), data=st.data())
    def enqueue(self, size, data):
        self.n += 1
        prio = self.priority_for(data)
        qm = self.q.enqueue(make_message(self.n, size, prio))
        assert qm.redelivered is False
        key = self.order_key(qm.seq, prio or 0)
        self.ready.append((key, self.n, size, False))
        self.ready.sort()

    @rule(target=unacked_msgs)
    def take(self):
        qm = take(self.q)
        if not self.ready:
            assert qm is None
            return None  # nothing taken: a None in the bundle, skipped by the consumers
        key, n, size, redelivered = self.ready.pop(0)
        assert qm is not None
        assert qm.msg.properties.message_id == str(n), (n, qm.msg.properties.message_id)
        assert qm.redelivered is redelivered
        assert len(qm.msg.body) == size
        self.unacked[n] = (key, size, qm)
        return n

    @rule(n=consumes(unacked_msgs))
    def settle(self, n):
        if n is None:
            return
        key, size, qm = self.unacked.pop(n)
        self.q.settled(qm)
        self.gone.add(n)

    @rule(n=consumes(unacked_msgs))
    def requeue(self, n):
        if n is None:
            return
        key, size, qm = self.unacked.pop(n)
        self.q.requeue(qm)
        self.ready.append((key, n, size, True))
        self.ready.sort()

    @rule()
    def purge(self):
        count = self.q.purge()
        assert count == len(self.ready)
        self.gone.update(n for _, n, _, _ in self.ready)
        self.ready = []

    # ------------------------------------------------------------------ invariants

    @invariant()
    def same_order(self):
        got = [int(qm.msg.properties.message_id) for qm in self.q.ready]
        assert got == [n for _, n, _, _ in self.ready]

    @invariant()
    def same_flags(self):
        assert [qm.redelivered for qm in self.q.ready] == [r for _, _, _, r in self.ready]

    @invariant()
    def counts(self):
        assert self.q.message_count == len(self.ready)
        assert len(self.q.ready) == len(self.ready)
        assert self.q.unacked_count == len(self.unacked)
        assert self.q.ready_bytes == sum(size for _, _, size, _ in self.ready)


class PriorityQueueMachine(FifoQueueMachine):
    """With x-max-priority: highest priority first (capped at the maximum), FIFO within a
    priority, and a requeued message back at its place within its priority."""

    MAX = 3

    def make_queue(self) -> Queue:
        return Queue("pq", arguments={"x-max-priority": self.MAX},
                     args=QueueArgs(max_priority=self.MAX))

    def order_key(self, seq: int, priority: int) -> tuple:
        return (-min(priority, self.MAX), seq)

    def priority_for(self, data) -> int | None:
        return data.draw(st.none() | st.integers(0, 9))


FifoQueueMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40,
                                              deadline=None)
PriorityQueueMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=40,
                                                  deadline=None)

TestFifoQueue = FifoQueueMachine.TestCase
TestPriorityQueue = PriorityQueueMachine.TestCase


def test_requeue_goes_back_to_original_place():
    q = Queue("q")
    for i in range(5):
        q.enqueue(make_message(i, 1))
    a, b, c = take(q), take(q), take(q)
    q.requeue(c)
    q.requeue(a)
    assert [qm.msg.properties.message_id for qm in q.ready] == ["0", "2", "3", "4"]
    assert [qm.redelivered for qm in q.ready] == [True, True, False, False]
    q.settled(b)
    assert q.unacked_count == 0 and q.message_count == 4
