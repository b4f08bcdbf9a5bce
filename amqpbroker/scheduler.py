"""The broker's one scheduler: every timed action of the core (message TTL, queue expiry
today; delayed delivery, retries, heartbeats later) is a callback at a monotonic deadline.

Sans-I/O: ``run_due(now)`` runs what is due, ``next_deadline()`` says when to call it next,
and ``on_change`` (set by the server's ticker) is called when the earliest deadline moves
earlier, so that the ticker wakes up and sleeps for the new delay.  A heap of handles with
lazy cancellation: ``cancel`` marks a handle, ``next_deadline`` and ``run_due`` drop marked
ones when they reach the top (and the heap is rebuilt when most of it is cancelled)."""
from __future__ import annotations

import heapq
import logging

log = logging.getLogger("amqpbroker.scheduler")


class Handle:
    """One scheduled call.  ``when`` is its deadline (monotonic seconds)."""

    __slots__ = ("when", "seq", "fn", "args", "cancelled")

    def __init__(self, when: float, seq: int, fn, args: tuple):
        self.when = when
        self.seq = seq
        self.fn = fn
        self.args = args
        self.cancelled = False

    def __lt__(self, other: "Handle") -> bool:
        return (self.when, self.seq) < (other.when, other.seq)

    def __repr__(self) -> str:
        state = " cancelled" if self.cancelled else ""
        return f"<Handle {getattr(self.fn, '__qualname__', self.fn)} at {self.when:.3f}{state}>"


class Scheduler:
    def __init__(self):
        self._heap: list[Handle] = []
        self._seq = 0
        self._cancelled = 0          # cancelled handles still in the heap
        self.on_change = None        # () -> None: the earliest deadline moved earlier
        self.now: float | None = None  # during run_due: its ``now``, the callbacks' time

    def __len__(self) -> int:
        """Live (not cancelled) calls."""
        return len(self._heap) - self._cancelled

    def call_at(self, when: float, fn, *args) -> Handle:
        """Call ``fn(*args)`` at the first ``run_due(now)`` with ``now >= when``."""
        first = self.next_deadline()
        self._seq += 1
        handle = Handle(when, self._seq, fn, args)
        heapq.heappush(self._heap, handle)
        if (first is None or when < first) and self.on_change is not None:
            self.on_change()
        return handle

    def cancel(self, handle: Handle) -> None:
        """Idempotent; cancelling a call that already ran does nothing."""
        if handle.cancelled or handle.fn is None:
            return
        handle.cancelled = True
        handle.fn = handle.args = None  # release what it holds now, not when it surfaces
        self._cancelled += 1
        if self._cancelled > 64 and self._cancelled * 2 > len(self._heap) and \
                self.now is None:  # (not while run_due holds handles outside the heap)
            self._heap[:] = [h for h in self._heap if not h.cancelled]
            heapq.heapify(self._heap)
            self._cancelled = 0

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0].cancelled:
            heapq.heappop(heap)
            self._cancelled -= 1
        return heap[0].when if heap else None

    def run_due(self, now: float) -> int:
        """Run every call due at ``now``, earliest first; returns how many ran.  Each is
        guarded: an exception is logged with its traceback and the others still run.  A
        call scheduled meanwhile for ``now`` or earlier runs at the next ``run_due`` (so a
        callback that reschedules itself cannot hold the event loop)."""
        heap = self._heap
        limit = self._seq
        later: list[Handle] = []  # scheduled by the callbacks of this run
        ran = 0
        self.now = now
        try:
            while heap and heap[0].when <= now:
                handle = heapq.heappop(heap)
                if handle.cancelled:
                    self._cancelled -= 1
                    continue
                if handle.seq > limit:
                    later.append(handle)
                    continue
                fn, args = handle.fn, handle.args
                handle.fn = handle.args = None  # ran: a later cancel() is a no-op
                ran += 1
                try:
                    fn(*args)
                except Exception:
                    log.exception("scheduled call %s failed", getattr(fn, "__qualname__", fn))
        finally:
            self.now = None
            for handle in later:
                heapq.heappush(heap, handle)
        return ran
