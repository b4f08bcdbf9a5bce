"""A classic queue's messages in memory: one record per message (``QueuedMessage``) and
the ready list, FIFO or by priority.  A requeued message goes back to its place (``seq``)."""
from __future__ import annotations

from collections import deque

from ..message import Message

READY, UNACKED, GONE = 0, 1, 2


class QueuedMessage:
    """One message's life in one queue.  ``seq`` is its place, kept across requeues."""

    __slots__ = ("seq", "msg", "redelivered", "returns", "expires_at", "priority", "state",
                 "persisted", "consumer", "delivery_count")

    def __init__(self, seq: int, msg: Message, expires_at: float | None, priority: int):
        self.seq = seq
        self.msg = msg
        self.redelivered = False
        self.returns = 0              # times given back (requeue): the delivery-limit count
        self.expires_at = expires_at  # monotonic seconds, or None
        self.priority = priority
        self.state = READY
        self.persisted = False        # in the store: removing it must remove the stored copy
        self.consumer = None          # while unacked by a consumer: whose prefetch it uses
        self.delivery_count = 0       # x-delivery-count to show (queues with a limit only)

    def __lt__(self, other: "QueuedMessage") -> bool:  # for the expiry heap
        return self.seq < other.seq


class Ready(deque):
    """Ready messages in seq order (FIFO); a requeued message goes back to its place.
    A deque itself, so that len(), append() and popleft() stay C calls on the hot path."""

    def head(self) -> QueuedMessage | None:
        return self[0] if self else None

    def requeue(self, qm: QueuedMessage) -> None:
        _insort(self, qm)

    def drain(self) -> list[QueuedMessage]:
        items = list(self)
        self.clear()
        return items


class PriorityReady:
    """One FIFO per priority level; the highest non-empty level goes first."""

    def __init__(self, max_priority: int):
        self.levels = [deque() for _ in range(max_priority + 1)]
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        for level in reversed(self.levels):
            yield from level

    def __getitem__(self, i: int) -> QueuedMessage:
        return list(self)[i]

    def append(self, qm: QueuedMessage) -> None:
        self.levels[qm.priority].append(qm)
        self.n += 1

    def _top(self) -> deque | None:
        for level in reversed(self.levels):
            if level:
                return level
        return None

    def popleft(self) -> QueuedMessage:
        self.n -= 1
        return self._top().popleft()

    def head(self) -> QueuedMessage | None:
        top = self._top()
        return top[0] if top else None

    def requeue(self, qm: QueuedMessage) -> None:
        _insort(self.levels[qm.priority], qm)
        self.n += 1

    def remove(self, qm: QueuedMessage) -> None:
        level = self.levels[qm.priority]
        if level and level[0] is qm:
            level.popleft()
        else:
            level.remove(qm)
        self.n -= 1

    def drain(self) -> list[QueuedMessage]:
        items = list(self)
        self.clear()
        return items

    def clear(self) -> None:
        for level in self.levels:
            level.clear()
        self.n = 0


def ready_list(max_priority: int | None) -> Ready | PriorityReady:
    return PriorityReady(max_priority) if max_priority is not None else Ready()


def _insort(d: deque, qm: QueuedMessage) -> None:
    if not d or qm.seq < d[0].seq:
        d.appendleft(qm)
    elif qm.seq > d[-1].seq:
        d.append(qm)
    else:
        lo, hi = 0, len(d)
        while lo < hi:
            mid = (lo + hi) // 2
            if d[mid].seq < qm.seq:
                lo = mid + 1
            else:
                hi = mid
        d.insert(lo, qm)
