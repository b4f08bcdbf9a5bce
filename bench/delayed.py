"""Delayed delivery at scale: N pending delayed messages, then releases at a steady rate.

    python bench/delayed.py                        # 1M persistent, durable exchange, SQLite
    python bench/delayed.py --transient            # 1M transient (all in RAM)
    python bench/delayed.py --n 10000000           # the 10M figure (about 20 min, ~2 GB)

In-process, through the sans-I/O core and the real store (no sockets, no client): a
durable ``x-delayed-message`` exchange bound to a durable queue.  Loading: N messages
(16-byte body, delivery-mode 2 unless --transient) published through ``vhost.publish`` in
shuffled order of due time, with the store committed every 10,000 (what the flusher does);
due times are spaced 1/rate apart, the first one --lead seconds after loading ends (the
clock is frozen while loading, so loading time does not eat into the delays).  Then the
scheduler is run as the server's ticker runs it (sleep until ``next_deadline()``, then
``run_due``) for --measure releases; each released message is taken from the queue and
its lag (release time - due time) recorded.  Reports RSS after loading and at the end,
release lag p50/p99/max, the release rate, and whether releases came in order of due time.
"""
from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import struct
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from amqpbroker.broker import Broker  # noqa: E402
from amqpbroker.message import Message  # noqa: E402
from amqpbroker.store.sqlite import SQLiteStore  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def props(delay_ms: int, k: int, persistent: bool) -> bytes:
    # headers {x-delay: long, k: long} and delivery-mode
    table = (b"\x07x-delay" + b"l" + struct.pack(">q", delay_ms) +
             b"\x01k" + b"l" + struct.pack(">q", k))
    return b"\x30\x00" + struct.pack(">I", len(table)) + table + (b"\x02" if persistent
                                                                  else b"\x01")


class Clock:
    """Frozen while loading, then monotonic time shifted so that it goes on from there."""

    def __init__(self):
        self.frozen: float | None = time.monotonic()
        self.shift = 0.0

    def __call__(self) -> float:
        return self.frozen if self.frozen is not None else time.monotonic() - self.shift

    def thaw(self) -> None:
        self.shift = time.monotonic() - self.frozen
        self.frozen = None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--rate", type=float, default=1000.0, help="releases per second")
    ap.add_argument("--measure", type=int, default=20_000, help="releases measured")
    ap.add_argument("--lead", type=float, default=2.0)
    ap.add_argument("--transient", action="store_true")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    persistent = not a.transient
    data = tempfile.mkdtemp(prefix="amqpbroker-bench-delayed-")
    try:
        store = SQLiteStore(data)
        broker = Broker(store=store)
        vh = broker.vhosts["/"]
        clock = Clock()
        vh.clock = clock
        ex = vh.declare_exchange("d", "x-delayed-message", False, True, False, False,
                                 {"x-delayed-type": "direct"})
        q = vh.declare_queue("q", False, True, False, False, {}, None)
        vh.bind("d", q, "k", {})
        rss0 = rss_mb()
        order = list(range(a.n))
        random.Random(a.seed).shuffle(order)
        step_ms = 1000.0 / a.rate
        t0 = time.perf_counter()
        body = b"0123456789abcdef"
        for i, k in enumerate(order):
            delay = int(a.lead * 1000 + k * step_ms) + 1
            vh.publish(ex, Message("d", "k", props(delay, k, persistent), body))
            if i % 10_000 == 9_999:
                store.sync_blocking()
        store.sync_blocking()
        load_s = time.perf_counter() - t0
        rss_loaded = rss_mb()
        start = clock()  # due of k: start + (lead * 1000 + k * step_ms + 1) / 1000 s
        clock.thaw()
        sched = vh.scheduler
        lags: list[float] = []
        prev = -1
        in_order = True
        committer = None
        first = None  # when the first release came (the rate is measured from there)

        def commit(batch, gen):
            store._commit(batch)
            store.synced = gen

        refills = []
        refill = ex.delayed._refill

        def timed_refill():
            r0 = time.perf_counter()
            refill()
            refills.append(time.perf_counter() - r0)
        ex.delayed._refill = timed_refill
        t1 = time.perf_counter()
        while len(lags) < a.measure:
            deadline = sched.next_deadline()
            if deadline is None:
                break
            wait = deadline - clock()
            if wait > 0:
                time.sleep(wait)
            now = clock()
            sched.run_due(now)
            while q.message_count:
                m = q.take(now).msg
                k = m.headers["k"]
                due_ms = int(a.lead * 1000 + k * step_ms) + 1
                due = start + due_ms / 1000
                lags.append(clock() - due)
                if first is None:
                    first = time.perf_counter()
                # due times are whole ms (as the plugin's): ties release in publish order
                in_order &= due_ms >= prev
                prev = due_ms
            if store._batch and (committer is None or not committer.is_alive()):
                # the flusher's group commit: the batch swapped out here, committed in a
                # worker thread (sqlite3 releases the GIL), as server.py does
                batch, gen = store._take_batch()
                committer = threading.Thread(target=commit, args=(batch, gen))
                committer.start()
        run_s = time.perf_counter() - (first if first is not None else t1)
        if committer is not None:
            committer.join()
        lags.sort()

        def pct(p):
            return lags[min(len(lags) - 1, int(p * len(lags)))] * 1000

        print(f"n={a.n:,} {'persistent' if persistent else 'transient'} "
              f"window={ex.delayed.window:,} load {load_s:.1f} s "
              f"({a.n / load_s:,.0f} msg/s)")
        print(f"RSS: {rss0:.0f} MB before, {rss_loaded:.0f} MB loaded, {rss_mb():.0f} MB end, "
              f"max {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
        print(f"released {len(lags):,} in {run_s:.1f} s ({len(lags) / run_s:,.0f}/s); lag "
              f"p50 {pct(0.5):.2f} ms, p99 {pct(0.99):.2f} ms, max {lags[-1] * 1000:.2f} ms; "
              f"in order of due time: {in_order}")
        if refills:
            print(f"refills: {len(refills)}, {sum(refills) / len(refills) * 1000:.1f} ms "
                  f"each on average, max {max(refills) * 1000:.1f} ms")
        db = os.path.getsize(store.path) / 2**20
        print(f"store file {db:.0f} MB")
        store.close()
    finally:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
