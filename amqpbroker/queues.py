"""Queues: passive objects, no task each.  ``dispatch()`` is a plain call made whenever
supply or demand changes (publish, ack, requeue, consume, qos, a connection draining)."""
from __future__ import annotations

from collections import deque

from .message import Message


class QueuedMessage:
    """One message's life in one queue.  ``seq`` is its place, kept across requeues."""

    __slots__ = ("seq", "msg", "redelivered", "delivery_count")

    def __init__(self, seq: int, msg: Message):
        self.seq = seq
        self.msg = msg
        self.redelivered = False
        self.delivery_count = 0


class Consumer:
    __slots__ = ("tag", "channel", "queue", "no_ack", "exclusive", "priority", "prefetch",
                 "unacked", "arguments")

    def __init__(self, tag: str, channel, queue: "Queue", no_ack: bool, exclusive: bool,
                 priority: int, prefetch: int, arguments: dict):
        self.tag = tag
        self.channel = channel    # anything with can_deliver() and deliver(consumer, queue, qm)
        self.queue = queue
        self.no_ack = no_ack
        self.exclusive = exclusive
        self.priority = priority
        self.prefetch = prefetch  # 0 = unlimited
        self.unacked = 0
        self.arguments = arguments

    def has_capacity(self) -> bool:
        return (self.no_ack or not self.prefetch or self.unacked < self.prefetch) and \
            self.channel.can_deliver()


class Queue:
    def __init__(self, name: str, durable: bool = False, exclusive_owner=None,
                 auto_delete: bool = False, arguments: dict | None = None):
        self.name = name
        self.durable = durable
        self.exclusive_owner = exclusive_owner   # the owning connection, or None
        self.auto_delete = auto_delete
        self.arguments = arguments or {}
        self.ready: deque[QueuedMessage] = deque()
        self.ready_bytes = 0
        self.unacked_count = 0
        self.consumers: list[Consumer] = []
        self._groups: list[list[Consumer]] = []   # consumers by priority, highest first
        self._rr: dict[int, int] = {}             # round-robin position per group
        self.had_consumer = False
        self.bindings: list = []                  # bindings with this queue as destination
        self.deleted = False
        self._next_seq = 0

    # ------------------------------------------------------------------ supply

    def enqueue(self, msg: Message) -> QueuedMessage:
        self._next_seq += 1
        qm = QueuedMessage(self._next_seq, msg)
        self.ready.append(qm)
        self.ready_bytes += len(msg.body)
        return qm

    def requeue(self, qm: QueuedMessage) -> None:
        """Back to its original position, marked redelivered."""
        qm.redelivered = True
        self.unacked_count -= 1
        self.ready_bytes += len(qm.msg.body)
        r = self.ready
        if not r or qm.seq < r[0].seq:
            r.appendleft(qm)
        elif qm.seq > r[-1].seq:
            r.append(qm)
        else:
            lo, hi = 0, len(r)
            while lo < hi:
                mid = (lo + hi) // 2
                if r[mid].seq < qm.seq:
                    lo = mid + 1
                else:
                    hi = mid
            r.insert(lo, qm)

    def settled(self, qm: QueuedMessage) -> None:
        """An unacked message was acked (or dropped/dead-lettered) for good."""
        self.unacked_count -= 1

    def take(self) -> QueuedMessage | None:
        """Pop the head for delivery; it becomes unacked (the caller may settle at once)."""
        if not self.ready:
            return None
        qm = self.ready.popleft()
        self.ready_bytes -= len(qm.msg.body)
        self.unacked_count += 1
        qm.delivery_count += 1
        return qm

    def purge(self) -> int:
        n = len(self.ready)
        self.ready.clear()
        self.ready_bytes = 0
        return n

    @property
    def message_count(self) -> int:
        return len(self.ready)

    # ------------------------------------------------------------------ demand

    def add_consumer(self, c: Consumer) -> None:
        self.consumers.append(c)
        self.had_consumer = True
        self._regroup()

    def remove_consumer(self, c: Consumer) -> None:
        try:
            self.consumers.remove(c)
        except ValueError:
            return
        self._regroup()

    def _regroup(self) -> None:
        by_prio: dict[int, list[Consumer]] = {}
        for c in self.consumers:
            by_prio.setdefault(c.priority, []).append(c)
        self._groups = [by_prio[p] for p in sorted(by_prio, reverse=True)]
        self._rr = {}

    def _next_consumer(self) -> Consumer | None:
        # highest-priority consumers with capacity, round-robin; lower ones only while all
        # higher ones are blocked
        for gi, group in enumerate(self._groups):
            n = len(group)
            start = self._rr.get(gi, 0)
            for i in range(n):
                c = group[(start + i) % n]
                if c.has_capacity():
                    self._rr[gi] = (start + i + 1) % n
                    return c
        return None

    def dispatch(self) -> None:
        while self.ready and self._groups:
            c = self._next_consumer()
            if c is None:
                return
            qm = self.take()
            c.channel.deliver(c, self, qm)
