"""queues.Queue with priorities, TTL, length limits, overflow modes and a delivery limit,
against a plain-list model (Hypothesis state machine).  Time is a number the machine moves
on; the queue is only ever told it.

Times are multiples of 1/16 s and TTLs of 1/8 s, so every deadline is exact in binary
floating point and "expires at the deadline" is never a rounding question.
"""
from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from pamqp import commands as C

from amqpbroker.message import Message
from amqpbroker.queues import Queue, QueueArgs

TTLS = st.sampled_from([None, 0, 125, 250, 500])


class M:
    """The model's view of one message."""

    def __init__(self, n, seq, priority, size, expires_at):
        self.n, self.seq, self.priority, self.size = n, seq, priority, size
        self.expires_at = expires_at          # seconds, or None
        self.returns = 0
        self.redelivered = False

    def order(self):
        return (-self.priority, self.seq)


class LimitsQueueMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.now = 100.0
        self.n = 0
        self.seq = 0
        self.ready: list[M] = []
        self.unacked: dict[int, tuple[M, object]] = {}
        self.dead: list[tuple[int, str]] = []       # expected dead letters, in order
        self.got_dead: list[tuple[int, str]] = []   # what the queue handed over

    # limits are mostly off or roomy, so that messages get in and the other rules matter
    @initialize(max_priority=st.sampled_from([None, None, 0, 1, 3]),
                ttl=st.sampled_from([None, None, None, 0, 125, 500]),
                max_length=st.sampled_from([None, None, None, 0, 1, 3]),
                max_bytes=st.sampled_from([None, None, None, 0, 4, 8]),
                overflow=st.sampled_from(["drop-head", "reject-publish", "reject-publish-dlx"]),
                delivery_limit=st.sampled_from([None, 0, 1, 2]))
    def make(self, max_priority, ttl, max_length, max_bytes, overflow, delivery_limit):
        self.args = QueueArgs(message_ttl=ttl, max_length=max_length,
                              max_length_bytes=max_bytes, overflow=overflow,
                              max_priority=max_priority, delivery_limit=delivery_limit)
        self.q = Queue("q", args=self.args, dead_letter=self._dead, now=self.now)

    def _dead(self, queue, msg, reason):
        self.got_dead.append((int(msg.properties.message_id), reason))

    # ------------------------------------------------------------------ model helpers

    def _sorted(self):
        if self.args.max_priority is not None:
            self.ready.sort(key=M.order)
        else:
            self.ready.sort(key=lambda m: m.seq)

    def _bytes(self):
        return sum(m.size for m in self.ready)

    def _expire(self, strict: bool = False):
        """Dead-letter ready messages whose deadline has come, by (deadline, seq)."""
        due = [m for m in self.ready if m.expires_at is not None and
               (m.expires_at < self.now if strict else m.expires_at <= self.now)]
        for m in sorted(due, key=lambda m: (m.expires_at, m.seq)):
            self.ready.remove(m)
            self.dead.append((m.n, "expired"))

    # ------------------------------------------------------------------ rules

    @rule(priority=st.one_of(st.none(), st.integers(0, 6)), size=st.integers(0, 4),
          expiration=TTLS)
    def publish(self, priority, size, expiration):
        self.n += 1
        n = self.n
        props = C.Basic.Properties(message_id=str(n), priority=priority,
                                   expiration=None if expiration is None else str(expiration))
        accepted = bool(self.q.accept(Message("", "q", props.marshal(), b"x" * size), self.now))
        a = self.args
        full = (a.max_length is not None and len(self.ready) >= a.max_length) or \
            (a.max_length_bytes is not None and self._bytes() + size > a.max_length_bytes)
        if a.overflow != "drop-head" and full:
            assert not accepted
            if a.overflow == "reject-publish-dlx":
                self.dead.append((n, "maxlen"))
        else:
            assert accepted
            self.seq += 1
            ttls = [t for t in (a.message_ttl, expiration) if t is not None]
            prio = 0 if a.max_priority is None else min(priority or 0, a.max_priority)
            self.ready.append(M(n, self.seq, prio, size,
                                self.now + min(ttls) / 1000 if ttls else None))
            self._sorted()
        self.q.after_publish(self.now)
        if a.overflow == "drop-head":
            while self.ready and (
                    (a.max_length is not None and len(self.ready) > a.max_length) or
                    (a.max_length_bytes is not None and self._bytes() > a.max_length_bytes)):
                self.dead.append((self.ready.pop(0).n, "maxlen"))
        self._expire()

    @rule()
    def take(self):
        qm = self.q.take(self.now)
        expected = None
        while self.ready:
            m = self.ready.pop(0)
            if m.expires_at is not None and m.expires_at < self.now:
                self.dead.append((m.n, "expired"))
                continue
            expected = m
            break
        if expected is None:
            assert qm is None
            return
        assert qm is not None and int(qm.msg.properties.message_id) == expected.n
        assert qm.redelivered == expected.redelivered
        assert qm.returns == expected.returns
        self.unacked[expected.n] = (expected, qm)

    def _pick(self, data):
        return self.unacked.pop(data.draw(st.sampled_from(sorted(self.unacked))))

    @precondition(lambda self: self.unacked)
    @rule(data=st.data())
    def ack(self, data):
        m, qm = self._pick(data)
        self.q.settled(qm)

    @precondition(lambda self: self.unacked)
    @rule(data=st.data())
    def reject(self, data):
        m, qm = self._pick(data)
        self.q.reject(qm)
        self.dead.append((m.n, "rejected"))

    @precondition(lambda self: self.unacked)
    @rule(data=st.data())
    def requeue(self, data):
        m, qm = self._pick(data)
        self.q.requeue(qm)
        m.returns += 1
        limit = self.args.delivery_limit
        if limit is not None and m.returns > limit:
            self.dead.append((m.n, "delivery_limit"))
            return
        m.redelivered = True
        self.ready.append(m)
        self._sorted()

    @rule(sixteenths=st.integers(0, 6))
    def advance(self, sixteenths):
        """Time passes and the vhost's timer runs ``expire``."""
        self.now += sixteenths / 16
        self.q.expire(self.now)
        self._expire()

    @rule()
    def purge(self):
        assert self.q.purge() == len(self.ready)
        self.ready = []                     # never dead-lettered

    # ------------------------------------------------------------------ invariants

    @invariant()
    def same_ready_messages_in_delivery_order(self):
        if not hasattr(self, "q"):
            return
        got = [int(qm.msg.properties.message_id) for qm in self.q.ready]
        assert got == [m.n for m in self.ready]
        assert self.q.message_count == len(self.ready)
        assert self.q.ready_bytes == self._bytes()
        assert self.q.unacked_count == len(self.unacked)

    @invariant()
    def same_dead_letters(self):
        assert self.got_dead == self.dead

    @invariant()
    def next_deadline_is_earliest_ready_expiry(self):
        if not hasattr(self, "q"):
            return
        deadlines = [m.expires_at for m in self.ready if m.expires_at is not None]
        assert self.q.next_deadline() == (min(deadlines) if deadlines else None)

    @invariant()
    def limits_hold_after_publish(self):
        if not hasattr(self, "q"):
            return
        a = self.args
        # requeues may overshoot (as RabbitMQ); publishes never leave the queue over a limit
        # when nothing was requeued
        if not any(m.redelivered for m in self.ready):
            if a.max_length is not None:
                assert len(self.ready) <= a.max_length
            if a.max_length_bytes is not None:
                assert self._bytes() <= a.max_length_bytes


LimitsQueueMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=40,
                                                deadline=None)
TestLimitsQueue = LimitsQueueMachine.TestCase


def test_requeue_over_limit_is_kept():
    """Requeue never drops for a length limit (RabbitMQ checks limits on publish only)."""
    q = Queue("q", args=QueueArgs(max_length=1))
    props = C.Basic.Properties().marshal()
    q.accept(Message("", "q", props, b"a"), 0.0)
    qm = q.take(0.0)
    q.accept(Message("", "q", props, b"b"), 0.0)
    q.after_publish(0.0)
    q.requeue(qm)
    assert [m.msg.body for m in q.ready] == [b"a", b"b"]
