"""The Prometheus endpoint under load: a broker process with N queues (declared through
the management core, in-process: ``testing.InProcessBroker``), ``amqpbroker perf``
(pubsub, no-ack) against it for D seconds without and then with a scraper hitting
/metrics every second; prints msg/s both ways and the scrape times.

    python bench/prometheus_scrape.py [--queues 100000] [--duration 10]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

from amqpbroker import prometheus
from amqpbroker.testing import InProcessBroker


def perf(url: str, duration: int) -> float:
    out = subprocess.run([sys.executable, "-m", "amqpbroker", "perf", "--url", url, "-x", "1",
                          "-y", "1", "-z", str(duration), "--json"], capture_output=True,
                         text=True, timeout=duration + 60)
    return json.loads(out.stdout.strip().splitlines()[-1])["received_rate"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queues", type=int, default=100_000)
    ap.add_argument("--duration", type=int, default=10)
    args = ap.parse_args()
    b = InProcessBroker({"prometheus": {}}).start()

    def declare():
        vh = b.broker.vhosts["/"]
        for i in range(args.queues):
            vh.declare_queue(f"idle-{i}", False, False, False, False, {}, None)
    b.call(declare)
    url = b.url()
    quiet = perf(url, args.duration)   # before any scrape: no background pass either

    def timed():
        t = time.perf_counter()
        prometheus.render(b.broker)
        return (time.perf_counter() - t) * 1000
    first = b.call(timed)   # the first scrape (the one full sum)
    loop_ms = sorted(b.call(timed) for _ in range(20))
    stop = threading.Event()
    http_ms = []

    def scraper():
        while not stop.wait(1.0):
            t = time.perf_counter()
            urllib.request.urlopen(b.prometheus_url, timeout=30).read()
            http_ms.append((time.perf_counter() - t) * 1000)
    th = threading.Thread(target=scraper, daemon=True)
    th.start()
    scraped = perf(url, args.duration)
    stop.set()
    th.join()
    b.stop()
    print(f"{args.queues} queues; render on the loop: first {first:.0f} ms, then median "
          f"{statistics.median(loop_ms):.1f} ms, max {loop_ms[-1]:.1f} ms; HTTP scrape median "
          f"{statistics.median(http_ms):.1f} ms")
    print(f"perf pubsub msg/s: without a scraper {quiet:,.0f}, with one every second "
          f"{scraped:,.0f} ({(scraped / quiet - 1) * 100:+.1f} %)")


if __name__ == "__main__":
    main()
