"""Side-by-side benchmark: amqpbroker against a reference broker (RabbitMQ), measured with
the independent load generator ../shared/tools/amqpload.py, alternating A B A B, medians.

    python bench/compare.py --ref-url amqp://guest:guest@127.0.0.1:5672/ --runs 3

Starts its own amqpbroker (sqlite store in a temporary directory) on a free port, writes
one JSON line per run to bench/results.jsonl and prints a Markdown table of medians.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
AMQPLOAD = os.path.join(HERE, "..", "..", "shared", "tools", "amqpload.py")

SCENARIOS = [
    ("publish", ["publish"]),
    ("pubsub (no-ack)", ["pubsub"]),
    ("manual ack, prefetch 1000, ack every 100", ["ack", "--prefetch", "1000",
                                                  "--ack-every", "100"]),
    ("persistent + confirms", ["confirm"]),
    ("fanout to 4 queues (deliveries)", ["fanout", "--fanout", "4"]),
    ("latency at 1,000 msg/s", ["latency", "--rate", "1000"]),
]


def start_broker() -> tuple[subprocess.Popen, int]:
    data = tempfile.mkdtemp(prefix="amqpbroker-bench-")
    proc = subprocess.Popen([sys.executable, "-m", "amqpbroker", "serve", "--port", "0",
                             "--management-port", "off", "--prometheus-port", "off",
                             "--data-dir", data, "--log-level", "info"],
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if m:
            subprocess.Popen(["cat"], stdin=proc.stderr, stdout=subprocess.DEVNULL)
            return proc, int(m.group(1))
    raise RuntimeError("amqpbroker did not start")


def run(python: str, url: str, args: list[str], body: int, duration: float) -> dict:
    cmd = [python, AMQPLOAD, *args, "--url", url, "--body", str(body), "--duration",
           str(duration), "--warmup", "1", "--broker-pid", "auto"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ref-url", default="amqp://guest:guest@127.0.0.1:5672/")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--bodies", default="16,1024")
    ap.add_argument("--python", default=sys.executable,
                    help="python with pamqp (and uvloop) for amqpload")
    ap.add_argument("--only", default="", help="comma-separated scenario numbers (1-based)")
    a = ap.parse_args()
    proc, port = start_broker()
    ours = f"amqp://guest:guest@127.0.0.1:{port}/"
    results = os.path.join(HERE, "results.jsonl")
    table = []
    chosen = [s for i, s in enumerate(SCENARIOS, 1)
              if not a.only or str(i) in a.only.split(",")]
    try:
        for body in [int(b) for b in a.bodies.split(",")]:
            for label, args in chosen:
                got = {"amqpbroker": [], "rabbitmq": []}
                for _ in range(a.runs):  # alternating A B A B
                    for name, url in (("amqpbroker", ours), ("rabbitmq", a.ref_url)):
                        r = run(a.python, url, args, body, a.duration)
                        r["broker"] = name
                        with open(results, "a") as f:
                            f.write(json.dumps(r) + "\n")
                        got[name].append(r)
                        time.sleep(0.5)
                row = [label, body]
                for name in ("amqpbroker", "rabbitmq"):
                    rs = got[name]
                    ok = all(r.get("reconcile", {}).get("ok", False) for r in rs)
                    rate = statistics.median(r["primary_rate"] for r in rs)
                    cpu = statistics.median(r.get("broker_cpu_s_per_M") or 0 for r in rs)
                    lat = [r.get("latency_us") for r in rs if r.get("latency_us")]
                    p = (statistics.median(x["p50"] for x in lat) / 1000,
                         statistics.median(x["p99"] for x in lat) / 1000) if lat else None
                    row.append((rate, cpu, p, ok))
                table.append(row)
                print(row, file=sys.stderr, flush=True)
    finally:
        proc.terminate()
        proc.wait()
    print("| scenario | body | amqpbroker msg/s | CPU-s/M | RabbitMQ msg/s | CPU-s/M | ratio |")
    print("|---|---|---|---|---|---|---|")
    for label, body, (r1, c1, p1, ok1), (r2, c2, p2, ok2) in table:
        lat = ""
        if p1 and p2:
            lat = f" (p50/p99 ms: {p1[0]:.2f}/{p1[1]:.2f} vs {p2[0]:.2f}/{p2[1]:.2f})"
        flag = "" if ok1 and ok2 else " (counts did not reconcile!)"
        print(f"| {label}{lat}{flag} | {body} | {r1:,.0f} | {c1:.1f} | {r2:,.0f} | {c2:.1f} | "
              f"{r1 / r2:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
