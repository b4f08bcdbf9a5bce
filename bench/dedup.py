"""Publishing through a deduplicating exchange against a plain fanout, through the
sans-I/O core (no sockets): messages per second of ``VirtualHost.publish`` (routing and
enqueueing into one queue, purged every 1,000 messages).  Rough: a timing on a shared
machine, not a test.

    python bench/dedup.py [-n 100000]

Scenarios (one queue bound; messages with a message-id unless said):
  fanout            a plain fanout exchange (the ids mean nothing there)
  no-id             x-message-deduplication, messages without id
  unique            x-message-deduplication, every id new (x-cache-size = n: no eviction)
  unique-evicting   every id new, x-cache-size 1,000 (the oldest evicted on each)
  duplicates        one id on every message (all but the first dropped)
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pamqp import commands as C  # noqa: E402

from amqpbroker.message import Message  # noqa: E402
from amqpbroker.vhost import VirtualHost  # noqa: E402


def run(type_: str, args: dict, ids: str | None, n: int) -> float:
    vh = VirtualHost("/")
    ex = vh.declare_exchange("d", type_, False, False, False, False, args)
    q = vh.declare_queue("q", False, False, False, False, {}, None)
    vh.bind("d", q, "", {})
    msgs = [Message("d", "", C.Basic.Properties(
        message_id=None if ids is None else "m%d" % (i if ids == "unique" else 0)).marshal(),
        b"x") for i in range(n)]
    start = time.perf_counter()
    for msg in msgs:
        vh.publish(ex, msg)
        if len(q.ready) > 1000:
            q.purge()
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=100_000)
    n = ap.parse_args().n
    dedup = "x-message-deduplication"
    for name, type_, args, ids in (
            ("fanout", "fanout", {}, "unique"),
            ("no-id", dedup, {"x-cache-size": n}, None),
            ("unique", dedup, {"x-cache-size": n}, "unique"),
            ("unique-evicting", dedup, {"x-cache-size": 1000}, "unique"),
            ("duplicates", dedup, {"x-cache-size": n}, "same")):
        print(f"{name:16s} {run(type_, args, ids, n):>10,.0f} msg/s")


if __name__ == "__main__":
    main()
