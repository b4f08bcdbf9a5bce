"""Fanout through 100 filtered bindings against 100 unfiltered ones, through the sans-I/O
core (no sockets): messages per second of ``routing.route`` (routing alone) and of
``VirtualHost.publish`` (routing and enqueueing; queues purged every 1,000 messages).

    python bench/filter_fanout.py [-n 20000]

Scenarios (100 queues on one fanout exchange, messages with a 3-entry headers table):
  unfiltered      100 plain bindings: every message reaches 100 queues
  filtered-1      binding i has {"tenant": ["t<i>"]}: each message reaches 1 queue
  filtered-10     binding i has {"tenant": ["t<i % 10>"], "amount": [{"numeric": [">", 0]}]}:
                  each message reaches 10 queues
  body-1          as filtered-1 in body scope, on a JSON body
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pamqp import commands as C  # noqa: E402

from amqpbroker.exchanges.routing import route  # noqa: E402
from amqpbroker.message import Message  # noqa: E402
from amqpbroker.vhost import VirtualHost  # noqa: E402


def setup(scenario: str):
    vh = VirtualHost("/")
    ex = vh.declare_exchange("x", "fanout", False, False, False, False, {})
    queues = []
    for i in range(100):
        q = vh.declare_queue(f"q{i}", False, False, False, False, {}, None)
        queues.append(q)
        if scenario == "unfiltered":
            args = {}
        elif scenario == "filtered-1":
            args = {"x-filter-policy": json.dumps({"tenant": [f"t{i}"]})}
        elif scenario == "filtered-10":
            args = {"x-filter-policy": json.dumps({"tenant": [f"t{i % 10}"],
                                                   "amount": [{"numeric": [">", 0]}]})}
        else:
            args = {"x-filter-policy": json.dumps({"tenant": [f"t{i}"]}),
                    "x-filter-policy-scope": "body"}
        vh.bind("x", q, "", args)
    return vh, ex, queues


def messages(scenario: str, n: int) -> list[Message]:
    out = []
    for i in range(n):
        t = f"t{i % (10 if scenario == 'filtered-10' else 100)}"
        props = C.Basic.Properties(headers={"tenant": t, "amount": i + 1, "src": "bench"},
                                   content_type="application/json").marshal()
        body = json.dumps({"tenant": t, "amount": i + 1}).encode()
        out.append(Message("x", "", props, body))
    return out


def run(scenario: str, n: int) -> tuple[float, float, int]:
    vh, ex, queues = setup(scenario)
    msgs = messages(scenario, n)
    t0 = time.perf_counter()
    reached = 0
    for m in msgs:
        reached += len(route(vh, ex, m))
    t_route = time.perf_counter() - t0
    msgs = messages(scenario, n)  # fresh: no decoded properties carried over
    t0 = time.perf_counter()
    for i, m in enumerate(msgs):
        vh.publish(ex, m)
        if i % 1000 == 999:
            for q in queues:
                q.purge()
    t_pub = time.perf_counter() - t0
    return n / t_route, n / t_pub, reached // n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20000)
    a = ap.parse_args()
    print(f"{'scenario':12} {'queues/msg':>10} {'route msg/s':>12} {'publish msg/s':>14}")
    for s in ("unfiltered", "filtered-1", "filtered-10", "body-1"):
        r, p, per = run(s, a.n)
        print(f"{s:12} {per:10d} {r:12,.0f} {p:14,.0f}")


if __name__ == "__main__":
    main()
