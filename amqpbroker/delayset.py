"""``DelayedSet``: the pending messages of one delayed exchange, released in order of
(due, seq) through ONE scheduler call at the earliest due time (not a timer per message:
RabbitMQ's plugin has one timer too, but its Mnesia table is all in memory).

Transient messages (and every message when the exchange or the store is not durable) live
in a heap in RAM.  Persistent ones on a durable exchange are written to the store's own
table (``put_delayed``; the publish's confirm ticket is that write's store generation) and
only a window of them is in RAM: every stored row with key (due ms, seq) up to ``horizon``
is in the heap, none above it.  When the heap holds fewer than half the window the next
rows are read back, ``REFILL`` at a time (``store.delayed_after(horizon, REFILL)``, a range
scan of the table's primary key: small reads, well ahead of their due time, so that no
read holds the event loop long enough to make a release late); when it holds more than
twice the window the latest are evicted from RAM (they stay in the store).  So 10 million pending persistent messages need about
``2 * window`` messages of memory.

A row the store has not committed yet is invisible to ``delayed_after`` (which reads the
last commit on a connection of its own): one above the horizon is kept in ``unsynced``
until a commit covers it (its generation at most ``store.synced``), so that no refill can
pass over it.

Time: the heap is ordered by monotonic seconds (the scheduler's); the store keeps the due
time in wall-clock ms (``vhost.wall_clock``), which outlives a restart.  ``offset`` maps
one onto the other for this process; rows read back are placed by it, so one that fell due
while the broker was down is due at once."""
from __future__ import annotations

import heapq
import logging

log = logging.getLogger("amqpbroker.delayed")

WINDOW = 10_000   # stored messages kept in RAM: refilled below half, evicted above twice
REFILL = 256      # rows read back at a time: about 3 ms on the event loop (10,000: 120 ms)
BATCH = 512       # releases per scheduler call: a backlog (after a restart) yields the loop
_BEFORE_ALL = (-(1 << 63), -(1 << 63))


class DelayedSet:
    def __init__(self, vhost, exchange: str, release, persistent: bool,
                 window: int | None = None):
        self.scheduler = vhost.scheduler
        self.clock = vhost.clock
        self.vhost = vhost.name
        self.exchange = exchange
        self.release = release            # fn(msg): route it now
        self.store = vhost.store if persistent and vhost.store.durable else None
        self.window = window or WINDOW  # (read here: a test sets a small one)
        self.chunk = min(REFILL, self.window)
        wall = vhost.wall_clock()
        self.offset = wall - self.clock()  # wall seconds = monotonic seconds + offset
        # unique and increasing across restarts (the store's key is (due, seq)): a start
        # at the wall clock's ms times 2^20 stays above what an earlier process used
        self.seq = int(wall * 1000) << 20
        # (due monotonic, seq, message, store key (due ms, seq) or None, store gen)
        self.heap: list[tuple] = []
        self.stored = 0                   # entries of the heap that are in the store
        self.unsynced: list[tuple] = []   # stored above the horizon, maybe not committed
        self.horizon: tuple[int, int] | None = None  # None: every stored row is in RAM
        self.handle = None
        self.armed_at: float | None = None
        if self.store is not None:        # recovery: what an earlier process stored
            self.horizon = _BEFORE_ALL
            self._refill()
            if self.heap:
                self._arm(self.heap[0][0])

    def __len__(self) -> int:
        """Pending messages in RAM (rows beyond the window are not counted)."""
        return len(self.heap) + len(self.unsynced)

    # ------------------------------------------------------------------ add

    def add(self, msg, delay: int):
        """Keep ``msg`` for ``delay`` ms; returns the publish's confirm ticket."""
        now = self.clock()
        self.seq = seq = self.seq + 1
        store = self.store
        if len(self.unsynced) > self.window:
            self._prune()
        if store is None or not msg.persistent:
            due = now + delay / 1000
            heapq.heappush(self.heap, (due, seq, msg, None, 0))
            self._arm(due)
            return True
        due_ms = int(round((now + self.offset) * 1000)) + delay
        store.put_delayed(self.vhost, self.exchange, due_ms, seq, msg)
        key = (due_ms, seq)
        entry = (due_ms / 1000 - self.offset, seq, msg, key, store.gen)
        if self.horizon is None or key <= self.horizon:
            heapq.heappush(self.heap, entry)
            self.stored += 1
            self._arm(entry[0])
            if self.stored > 2 * self.window:
                self._evict()
        else:
            self.unsynced.append(entry)
        return store.gen

    def _prune(self) -> None:
        """Forget the rows above the horizon that are committed now (a refill reads them)."""
        synced = self.store.synced
        self.unsynced = [e for e in self.unsynced if e[4] > synced]

    # ------------------------------------------------------------------ the window

    def _evict(self) -> None:
        """Too many stored messages in RAM: keep the first ``window`` of them."""
        stored = sorted(e for e in self.heap if e[3] is not None)
        keep, out = stored[:self.window], stored[self.window:]
        self.horizon = keep[-1][3]
        synced = self.store.synced
        self.unsynced.extend(e for e in out if e[4] > synced)
        # in place: _fire holds the list while a refill may evict
        self.heap[:] = [e for e in self.heap if e[3] is None] + keep
        heapq.heapify(self.heap)
        self.stored = len(keep)

    def _refill(self) -> None:
        """Read the next window back from the store (the heap runs low)."""
        store = self.store
        synced = store.synced  # rows written by then are committed: the query sees them
        rows = store.delayed_after(self.vhost, self.exchange,
                                   None if self.horizon is _BEFORE_ALL else self.horizon,
                                   self.chunk)
        heap, offset = self.heap, self.offset
        seen = {seq for _due, seq, _msg in rows} if self.unsynced else ()
        for due_ms, seq, msg in rows:
            heapq.heappush(heap, (due_ms / 1000 - offset, seq, msg, (due_ms, seq), 0))
        self.stored += len(rows)
        horizon = (rows[-1][0], rows[-1][1]) if len(rows) == self.chunk else None
        keep = []
        for e in self.unsynced:
            if horizon is None or e[3] <= horizon:
                if e[4] > synced and e[1] not in seen:  # not committed yet: not in rows
                    heapq.heappush(heap, e)
                    self.stored += 1
            elif e[4] > synced:
                keep.append(e)  # (a committed one is read back by a later refill)
        self.unsynced = keep
        self.horizon = horizon
        if self.stored > 2 * self.window:  # (many rows not yet committed came in)
            self._evict()

    # ------------------------------------------------------------------ release

    def _arm(self, when: float) -> None:
        if self.armed_at is not None and self.armed_at <= when:
            return
        if self.handle is not None:
            self.scheduler.cancel(self.handle)
        self.handle = self.scheduler.call_at(when, self._fire)
        self.armed_at = when

    def _fire(self) -> None:
        self.handle = self.armed_at = None
        now = self.scheduler.now
        if now is None:
            now = self.clock()
        heap, store, low = self.heap, self.store, max(1, self.window // 2)
        n = 0
        while n < BATCH:
            # while one stored message is in RAM, the heap's first is the first of all
            # (every row above the horizon is later): read more only when none is left
            if not self.stored and store is not None and self.horizon is not None:
                self._refill()
            if not heap or heap[0][0] > now:
                break
            _due, _seq, msg, key, _gen = heapq.heappop(heap)
            n += 1
            if key is not None:
                self.stored -= 1
                # in the same step as the release's enqueue: one commit moves it
                store.remove_delayed(self.vhost, self.exchange, key[0], key[1])
            try:
                self.release(msg)
            except Exception:  # one message that cannot be routed must not stop the rest
                log.exception("releasing a delayed message of exchange '%s' failed",
                              self.exchange)
        # then ahead of time, after what was due went out
        if store is not None and self.horizon is not None and self.stored < low:
            self._refill()
        if len(self.unsynced) > self.window:
            self._prune()
        if heap:
            self._arm(heap[0][0] if n < BATCH else now)

    def drop(self) -> None:
        """The exchange is deleted: its pending messages go with it (as the plugin)."""
        if self.handle is not None:
            self.scheduler.cancel(self.handle)
        self.handle = self.armed_at = None
        self.heap, self.unsynced, self.stored, self.horizon = [], [], 0, None
        if self.store is not None:
            self.store.drop_delayed(self.vhost, self.exchange)
