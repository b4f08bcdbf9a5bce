"""`amqpbroker perf` against a real broker: its counts reconcile and its JSON is complete.
(A smoke test of the tool, not a benchmark: no timing is asserted.)"""
import json
import subprocess
import sys

import pytest


def perf(broker, *args):
    out = subprocess.run([sys.executable, "-m", "amqpbroker", "perf", "--url", broker.url,
                          "--json", "-z", "1", *args], capture_output=True, text=True,
                         timeout=90)
    assert out.returncode == 0, out.stderr + out.stdout
    return json.loads(out.stdout)


@pytest.mark.parametrize("args", [
    (),
    ("--ack", "-q", "100", "--multiple-ack", "10", "-c", "500"),
    ("-t", "fanout", "--queues", "3", "-s", "1024"),
    ("-f", "-c", "200", "-y", "0"),
    ("-r", "500", "-x", "2"),
])
def test_perf_reconciles(broker, args):
    r = perf(broker, *args)
    assert r["sent"] > 0
    assert r["reconcile"]["ok"], r
    queues = int(args[args.index("--queues") + 1]) if "--queues" in args else 1
    consumers = 0 if "-y" in args else 1
    assert r["received"] == r["sent"] * queues * consumers
    if "-c" in args:
        assert r["confirmed"] == r["sent"]
    if consumers:
        lat = r["latency_ms"]
        assert lat["samples"] > 0 and 0 < lat["p50"] <= lat["p99"] <= lat["max"]
