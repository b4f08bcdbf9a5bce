"""How long the pytest plugin's broker takes: the session broker's start (and stop), and
a fresh vhost and user per test (``amqp_url``), in this process.

    python bench/plugin_start.py [--runs 20] [--vhosts 1000]

Importing amqpbroker.testing (done by pytest when it loads the plugin) is not counted.
"""
from __future__ import annotations

import argparse
import statistics
import time

from amqpbroker.testing import InProcessBroker


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--vhosts", type=int, default=1000)
    args = ap.parse_args()
    starts, stops = [], []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        b = InProcessBroker().start()
        t1 = time.perf_counter()
        b.stop()
        starts.append(t1 - t0)
        stops.append(time.perf_counter() - t1)
    b = InProcessBroker().start()
    made, deleted = [], []
    for _ in range(args.vhosts):
        t0 = time.perf_counter()
        vhost, user, _pw = b.new_vhost()
        t1 = time.perf_counter()
        b.delete_vhost(vhost, user)
        made.append(t1 - t0)
        deleted.append(time.perf_counter() - t1)
    b.stop()

    def ms(xs):
        xs = sorted(xs)
        return (f"median {statistics.median(xs) * 1000:.2f} ms, "
                f"p99 {xs[int(len(xs) * 0.99) - 1] * 1000:.2f} ms")
    print(f"first start in this process (lazy imports included): {starts[0] * 1000:.1f} ms")
    print(f"broker start ({args.runs} runs): {ms(starts)}; stop: {ms(stops)}")
    print(f"fresh vhost + user ({args.vhosts}): {ms(made)}; delete: {ms(deleted)}")


if __name__ == "__main__":
    main()
