"""Scale checks for docs/perf.md: many connections with consumers, many queues, one deep
queue.  Starts its own amqpbroker (memory store, so that the numbers are about the broker's
RAM, not the disk) and reports throughput and the broker's resident memory.

    python bench/scale.py [--connections 1000] [--queues 10000] [--deep 1000000]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time

from pamqp import body as pbody
from pamqp import commands as C
from pamqp import frame as pframe
from pamqp import header as pheader

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from amqpbroker.perf import Client  # noqa: E402


def start_broker(*extra) -> tuple[subprocess.Popen, int]:
    cfg = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    cfg.write("storage: {backend: memory}\nlimits: {heartbeat: 0}\n")
    cfg.close()
    proc = subprocess.Popen([sys.executable, "-m", "amqpbroker", "serve", "--config", cfg.name,
                             "--port", "0", "--log-level", "warning", *extra],
                            stderr=subprocess.PIPE, text=True)
    # --log-level warning hides the "listening on" line: find the port from /proc instead
    for _ in range(100):
        time.sleep(0.1)
        out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if f"pid={proc.pid}," in line:
                m = re.search(r"127\.0\.0\.1:(\d+)", line)
                if m:
                    return proc, int(m.group(1))
    raise RuntimeError("broker did not start")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def publish_bytes(rk: str, body: bytes) -> bytes:
    return (pframe.marshal(C.Basic.Publish(exchange="", routing_key=rk), 1) +
            pframe.marshal(pheader.ContentHeader(0, len(body), C.Basic.Properties()), 1) +
            pframe.marshal(pbody.ContentBody(body), 1))


async def many_connections(url: str, n: int, per_conn: int) -> dict:
    clients = []
    received = 0

    def counter(*_):
        nonlocal received
        received += 1
    t0 = time.monotonic()
    for i in range(n):
        c = await Client.connect(url)
        await c.call(1, C.Queue.Declare(queue=f"scale-c{i}", auto_delete=True),
                     "Queue.DeclareOk")
        c.on_deliver = counter
        await c.call(1, C.Basic.Consume(queue=f"scale-c{i}", no_ack=True), "Basic.ConsumeOk")
        clients.append(c)
    connect_s = time.monotonic() - t0
    pub = await Client.connect(url)
    t0 = time.monotonic()
    total = n * per_conn
    batch = b"".join(publish_bytes(f"scale-c{i}", b"x" * 16) for i in range(n))
    for _ in range(per_conn):
        pub.transport.write(batch)
        await pub.resume.wait()
        await asyncio.sleep(0)
    while received < total and time.monotonic() - t0 < 120:
        await asyncio.sleep(0.01)
    rate = received / (time.monotonic() - t0)
    for c in clients + [pub]:
        c.transport.close()
    return {"connections": n, "connect_s": round(connect_s, 1), "messages": total,
            "received": received, "msg_per_s": round(rate)}


async def many_queues(url: str, n: int) -> dict:
    c = await Client.connect(url)
    t0 = time.monotonic()
    for i in range(n):
        c.send(1, C.Queue.Declare(queue=f"scale-q{i}", nowait=True))
    await c.call(1, C.Queue.Declare(queue="scale-q-last"), "Queue.DeclareOk")
    declare_s = time.monotonic() - t0
    received = 0

    def counter(*_):
        nonlocal received
        received += 1
    c.on_deliver = counter
    for i in range(n):
        c.send(1, C.Basic.Consume(queue=f"scale-q{i}", no_ack=True, nowait=True))
    await c.call(1, C.Basic.Qos(), "Basic.QosOk")
    t0 = time.monotonic()
    rounds = 10
    batch = b"".join(publish_bytes(f"scale-q{i}", b"x" * 16) for i in range(n))
    for _ in range(rounds):
        c.transport.write(batch)
        await c.resume.wait()
    while received < n * rounds and time.monotonic() - t0 < 120:
        await asyncio.sleep(0.01)
    rate = received / (time.monotonic() - t0)
    c.transport.close()
    return {"queues": n, "declare_s": round(declare_s, 2), "messages": n * rounds,
            "received": received, "msg_per_s": round(rate)}


async def deep_queue(url: str, pid: int, n: int) -> dict:
    c = await Client.connect(url)
    await c.call(1, C.Queue.Declare(queue="scale-deep"), "Queue.DeclareOk")
    before = rss_mb(pid)
    one = publish_bytes("scale-deep", b"x" * 16)
    t0 = time.monotonic()
    block = one * 1000
    for _ in range(n // 1000):
        c.transport.write(block)
        await c.resume.wait()
    ok = await c.call(1, C.Queue.Declare(queue="scale-deep", passive=True), "Queue.DeclareOk")
    pub_rate = n / (time.monotonic() - t0)
    after = rss_mb(pid)
    received = 0

    def counter(*_):
        nonlocal received
        received += 1
    c.on_deliver = counter
    t0 = time.monotonic()
    await c.call(1, C.Basic.Consume(queue="scale-deep", no_ack=True), "Basic.ConsumeOk")
    while received < n and time.monotonic() - t0 < 300:
        await asyncio.sleep(0.01)
    rate = received / (time.monotonic() - t0)
    c.transport.close()
    return {"messages": n, "queued": ok.message_count, "publish_msg_per_s": round(pub_rate),
            "rss_before_mb": round(before, 1), "rss_after_mb": round(after, 1),
            "bytes_per_queued_message": round((after - before) * 1024 * 1024 / n),
            "drain_msg_per_s": round(rate), "received": received}


async def main_async(a) -> dict:
    out = {}
    for name, fn in (("connections", lambda url, pid: many_connections(url, a.connections, 20)),
                     ("queues", lambda url, pid: many_queues(url, a.queues)),
                     ("deep", lambda url, pid: deep_queue(url, pid, a.deep))):
        if a.url:  # another broker (RabbitMQ, say), for comparison; no memory figures
            if name == "deep":
                continue
            out[name] = await fn(a.url, None)
            print(name, out[name], file=sys.stderr, flush=True)
            continue
        proc, port = start_broker()
        try:
            url = f"amqp://guest:guest@127.0.0.1:{port}/"
            out[name] = await fn(url, proc.pid)
            out[name]["broker_rss_mb"] = round(rss_mb(proc.pid), 1)
            print(name, out[name], file=sys.stderr, flush=True)
        finally:
            proc.terminate()
            proc.wait()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--queues", type=int, default=10000)
    ap.add_argument("--deep", type=int, default=1_000_000)
    ap.add_argument("--url", help="run the connection and queue checks against this broker "
                                  "instead of starting amqpbroker")
    a = ap.parse_args()
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    print(json.dumps(asyncio.run(main_async(a))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
