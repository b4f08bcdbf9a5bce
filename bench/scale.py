"""Scale checks for docs/perf.md: many connections with consumers, many queues, one deep
queue, many bindings.  Starts its own amqpbroker (memory store, so that the numbers are about
the broker's RAM, not the disk; ``--durable``: the SQLite store, durable exchanges, queues and
bindings) and reports throughput and the broker's resident memory.

    python bench/scale.py [--connections 1000] [--queues 10000] [--deep 1000000]
    python bench/scale.py --only bindings [--bindings 100000] [--bound-queues 50000] [--durable]

The bindings check binds then unbinds ``--bindings`` keys on one exchange of each type (and
exchange-to-exchange), then deletes ``--bound-queues`` queues bound three times each; it
times every tenth of each phase and prints the cost per operation of the first and the last
tenth (flat when an operation costs O(1) or O(log n)).  In durable mode each tenth ends with
a confirmed persistent message, so that the time includes the store's commit.
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
from amqpbroker_perf.client import Client  # noqa: E402


def start_broker(*extra, durable: bool = False) -> tuple[subprocess.Popen, int]:
    cfg = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    storage = f"{{backend: sqlite, path: {tempfile.mkdtemp()}}}" if durable else \
        "{backend: memory}"
    cfg.write(f"storage: {storage}\nlimits: {{heartbeat: 0}}\n")
    cfg.close()
    proc = subprocess.Popen([sys.executable, "-m", "amqpbroker", "serve", "--config", cfg.name,
                             "--port", "0", "--management-port", "off", "--prometheus-port", "off", "--log-level", "warning",
                             *extra],
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


def _frames(methods) -> bytes:
    return b"".join(pframe.marshal(m, 1) for m in methods)


class _Timer:
    """Runs a phase in ten slices of pre-encoded frames, one round trip (and in durable
    mode one confirmed persistent message) after each slice."""

    def __init__(self, c: Client, durable: bool):
        self.c, self.durable, self.tag = c, durable, 0
        self.acked = asyncio.Event()

        def on_confirm(tag, multiple, ack):
            if tag >= self.tag:
                self.acked.set()
        c.on_confirm = on_confirm

    async def setup(self):
        await self.c.call(1, C.Confirm.Select(), "Confirm.SelectOk")
        await self.c.call(1, C.Queue.Declare(queue="scale-sync", durable=True),
                          "Queue.DeclareOk")

    async def barrier(self):
        if self.durable:
            self.tag += 1
            self.acked.clear()
            self.c.transport.write(
                pframe.marshal(C.Basic.Publish(exchange="", routing_key="scale-sync"), 1) +
                pframe.marshal(pheader.ContentHeader(0, 1, C.Basic.Properties(
                    delivery_mode=2)), 1) + pframe.marshal(pbody.ContentBody(b"x"), 1))
            await asyncio.wait_for(self.acked.wait(), 900)
        else:  # a round trip, with time for a slow broker (main's took minutes)
            fut = asyncio.get_running_loop().create_future()
            self.c.waiters[(1, "Basic.QosOk")] = fut
            self.c.send(1, C.Basic.Qos())
            await asyncio.wait_for(fut, 900)

    async def run(self, methods: list) -> dict:
        n = len(methods)
        tenth = max(1, n // 10)
        slices = [_frames(methods[i:i + tenth]) for i in range(0, n, tenth)]
        times = []
        t_all = time.monotonic()
        for data in slices:
            t0 = time.monotonic()
            for i in range(0, len(data), 1 << 20):
                self.c.transport.write(data[i:i + (1 << 20)])
                await self.c.resume.wait()
            await self.barrier()
            times.append(time.monotonic() - t0)
        per = [t / tenth * 1e6 for t in times]
        return {"ops": n, "total_s": round(time.monotonic() - t_all, 2),
                "us_per_op_first_tenth": round(per[0], 1),
                "us_per_op_last_tenth": round(per[-1], 1),
                "us_per_op_by_tenth": [round(x) for x in per]}


def _bind_methods(kind: str, n: int, queues: int):
    """(binds, unbinds) for ``n`` distinct bindings on exchange ``scale-x-KIND``."""
    ex = f"scale-x-{kind}"
    binds, unbinds = [], []
    for i in range(n):
        q = f"scale-bq{i % queues}"
        if kind == "headers":
            rk, args = "", {"x-match": "any", "k": str(i), "n": i}
        elif kind == "topic":
            rk, args = f"a{i % 100}.*.k{i}.#", {}
        else:
            rk, args = f"k{i}", {}
        if kind == "e2e":
            binds.append(C.Exchange.Bind(destination=f"scale-xd{i % queues}", source=ex,
                                         routing_key=rk, arguments=args, nowait=True))
            unbinds.append(C.Exchange.Unbind(destination=f"scale-xd{i % queues}", source=ex,
                                             routing_key=rk, arguments=args, nowait=True))
        else:
            binds.append(C.Queue.Bind(queue=q, exchange=ex, routing_key=rk, arguments=args,
                                      nowait=True))
            unbinds.append(C.Queue.Unbind(queue=q, exchange=ex, routing_key=rk,
                                          arguments=args))
    return binds, unbinds


class _BindClient(Client):
    def _method(self, channel: int, payload: bytes) -> None:
        if payload[:4] != _UNBIND_OK:  # 100,000 of them: not decoded
            super()._method(channel, payload)


_UNBIND_OK = b"\x00\x32\x00\x33"


KINDS = ("direct", "fanout", "topic", "headers", "e2e")


async def many_bindings(url: str, n: int, n_queues: int, durable: bool,
                        kinds=KINDS) -> dict:
    c = await _BindClient.connect(url)
    timer = _Timer(c, durable)
    await timer.setup()
    out = {}
    dests = 10
    for j in range(dests):
        await c.call(1, C.Queue.Declare(queue=f"scale-bq{j}", durable=durable),
                     "Queue.DeclareOk")
        await c.call(1, C.Exchange.Declare(exchange=f"scale-xd{j}", exchange_type="fanout",
                                           durable=durable), "Exchange.DeclareOk")
    for kind in kinds if n else ():
        await c.call(1, C.Exchange.Declare(exchange=f"scale-x-{kind}", durable=durable,
                                           exchange_type="direct" if kind == "e2e" else kind),
                     "Exchange.DeclareOk")
        binds, unbinds = _bind_methods(kind, n, dests)
        bind = await timer.run(binds)
        print(f"  {kind} bind", bind, file=sys.stderr, flush=True)
        unbind = await timer.run(unbinds)
        print(f"  {kind} unbind", unbind, file=sys.stderr, flush=True)
        out[kind] = {"bind": bind, "unbind": unbind}
    if not n_queues:
        c.transport.close()
        return out
    # queues bound three times each (direct, topic, fanout), deleted one by one
    for i in range(n_queues):
        c.send(1, C.Queue.Declare(queue=f"scale-dq{i}", durable=durable, nowait=True))
        for ex, rk in (("amq.direct", f"dq{i}"), ("amq.topic", f"dq.{i}.#"),
                       ("amq.fanout", f"dq{i}")):
            c.send(1, C.Queue.Bind(queue=f"scale-dq{i}", exchange=ex, routing_key=rk,
                                   nowait=True))
        if i % 1000 == 999:
            await c.resume.wait()
    await timer.barrier()
    deletes = [C.Queue.Delete(queue=f"scale-dq{i}", nowait=True) for i in range(n_queues)]
    out["delete_bound_queues"] = await timer.run(deletes)
    print("  delete bound queues", out["delete_bound_queues"], file=sys.stderr, flush=True)
    c.transport.close()
    return out


async def main_async(a) -> dict:
    out = {}
    for name, fn in (("connections", lambda url, pid: many_connections(url, a.connections, 20)),
                     ("queues", lambda url, pid: many_queues(url, a.queues)),
                     ("deep", lambda url, pid: deep_queue(url, pid, a.deep)),
                     ("bindings", lambda url, pid: many_bindings(url, a.bindings,
                                                                 a.bound_queues, a.durable,
                                                                 a.kind or KINDS))):
        if a.only and name not in a.only:
            continue
        if a.url:  # another broker (RabbitMQ, say), for comparison; no memory figures
            if name == "deep":
                continue
            out[name] = await fn(a.url, None)
            print(name, out[name], file=sys.stderr, flush=True)
            continue
        proc, port = start_broker(durable=a.durable)
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
    ap.add_argument("--bindings", type=int, default=100_000, help="0: only the deletes")
    ap.add_argument("--bound-queues", type=int, default=50_000)
    ap.add_argument("--kind", action="append", choices=KINDS,
                    help="the bindings check on this exchange type only (repeatable)")
    ap.add_argument("--durable", action="store_true",
                    help="the SQLite store, durable queues, exchanges and bindings")
    ap.add_argument("--only", action="append",
                    choices=("connections", "queues", "deep", "bindings"),
                    help="run only this check (repeatable)")
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
