"""``amqpbroker perf``: a load tool in the spirit of RabbitMQ's PerfTest, for any AMQP 0-9-1
broker.

The client side is built to be cheap so that it measures the broker, not itself: every
publish frame set is encoded once and written again and again with only the body's
sequence number and timestamp patched in; publishes are pipelined (bounded by the confirm
window or a rate); deliveries are counted by walking frame headers, never decoded by pamqp.
Each body starts with (producer id, sequence number, send time), so the consumers measure
latency and check that nothing was lost or duplicated: the run ends with a reconciliation.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

from pamqp import commands as C
from pamqp import frame as pframe
from pamqp import header as pheader

from .client import FRAME_HDR, STAMP, Client


class Stats:
    def __init__(self, producers: int, queues: int):
        self.sent = 0
        self.confirmed = 0
        self.nacked = 0
        self.returned = 0
        self.received = 0
        self.latencies: list[int] = []   # ns, sampled
        self.sample = 1
        # per (queue, producer): bitmap of sequence numbers seen, for loss/duplicate checks
        self.seen = [[bytearray() for _ in range(producers)] for _ in range(queues)]
        self.dups = 0
        self.queues = queues
        self.max_backlog = 0           # producers pause above this many undelivered messages
        self.backlog_ok = asyncio.Event()
        self.backlog_ok.set()

    def backlog(self) -> int:
        return self.sent - self.received // self.queues


def _percentile(sorted_values: list[int], p: float) -> float:
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, int(round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k] / 1e6


async def _producer(pid: int, args, stats: Stats, stop: asyncio.Event, exchange: str,
                    routing_key: str) -> int:
    cl = await Client.connect(args.url)
    window = args.confirm
    outstanding = 0
    may_send = asyncio.Event()
    may_send.set()

    done = bytearray(1 << 16)  # confirmed publish tags (bitmap), everything <= low is done
    low = 0

    def on_confirm(tag, multiple, ack):
        nonlocal outstanding, low
        first = low + 1 if multiple else tag
        n = 0
        for t in range(first, tag + 1):
            if t >= len(done) * 8:
                done.extend(bytes(len(done)))
            byte, bit = divmod(t, 8)
            if not done[byte] & (1 << bit):
                done[byte] |= 1 << bit
                n += 1
        while (low + 1) < len(done) * 8 and done[(low + 1) >> 3] & (1 << ((low + 1) & 7)):
            low += 1
        outstanding -= n
        if ack:
            stats.confirmed += n
        else:
            stats.nacked += n
        if outstanding < window:
            may_send.set()

    cl.on_confirm = on_confirm

    def on_return():
        stats.returned += 1
    cl.on_return = on_return
    if window:
        await cl.call(1, C.Confirm.Select(), "Confirm.SelectOk")
    props = C.Basic.Properties(delivery_mode=2 if args.persistent else 1)
    size = max(args.size, STAMP.size)
    method = pframe.marshal(C.Basic.Publish(exchange=exchange, routing_key=routing_key,
                                            mandatory=args.mandatory), 1)
    header = pframe.marshal(pheader.ContentHeader(0, size, props), 1)
    body_hdr = FRAME_HDR.pack(3, 1, size)
    pad = b"\x00" * (size - STAMP.size)
    prefix = method + header + body_hdr
    seq = 0
    batch = max(1, min(window // 4 if window else 200, 200))
    interval = 0.0 if not args.rate else 1.0 / (args.rate / args.producers)
    next_time = time.monotonic()
    loop_sleep = asyncio.sleep
    while not stop.is_set():
        if window and outstanding >= window:
            may_send.clear()
            await may_send.wait()
            continue
        if stats.max_backlog and stats.backlog() > stats.max_backlog:
            stats.backlog_ok.clear()
            await stats.backlog_ok.wait()
            continue
        n = batch if not window else min(batch, window - outstanding)
        if interval:
            now = time.monotonic()
            if now < next_time:
                await loop_sleep(next_time - now)
            n = 1
            next_time += interval
        now_ns = time.monotonic_ns()
        chunks = []
        for _ in range(n):
            seq += 1
            chunks += (prefix, STAMP.pack(pid, seq, now_ns), pad, b"\xce")
        cl.transport.write(b"".join(chunks))
        outstanding += n if window else 0
        stats.sent += n
        if not cl.resume.is_set():
            await cl.resume.wait()
        elif not interval:
            await loop_sleep(0)
    if window:  # wait for the last confirms
        deadline = time.monotonic() + 30
        while outstanding > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    # a synchronous method answered after every publish before it was routed: only then
    # is it safe to close (a broker may drop what a closing connection still had buffered)
    await cl.call(1, C.Basic.Qos(prefetch_count=0), "Basic.QosOk")
    await cl.close()
    return seq


async def _consumer(qi: int, queue: str, args, stats: Stats, ready: asyncio.Event) -> Client:
    cl = await Client.connect(args.url)
    if args.prefetch:
        await cl.call(1, C.Basic.Qos(prefetch_count=args.prefetch), "Basic.QosOk")
    manual = args.ack
    since_ack = 0
    last_tag = 0
    seen = stats.seen[qi]
    lat = stats.latencies
    counter = 0

    def on_deliver(tag, first, size):
        nonlocal since_ack, last_tag, counter
        stats.received += 1
        if not stats.backlog_ok.is_set() and stats.backlog() <= stats.max_backlog // 2:
            stats.backlog_ok.set()
        if len(first) >= STAMP.size:
            pid, seq, sent_ns = STAMP.unpack_from(first)
            bits = seen[pid] if pid < len(seen) else None
            if bits is not None:
                byte, bit = divmod(seq, 8)
                if byte >= len(bits):
                    bits.extend(b"\x00" * (byte - len(bits) + 65536))
                if bits[byte] & (1 << bit):
                    stats.dups += 1
                bits[byte] |= 1 << bit
            counter += 1
            if counter >= stats.sample:
                counter = 0
                lat.append(time.monotonic_ns() - sent_ns)
        if manual:
            since_ack += 1
            last_tag = tag
            if since_ack >= args.multiple_ack:
                since_ack = 0
                cl.transport.write(pframe.marshal(C.Basic.Ack(delivery_tag=tag, multiple=True),
                                                  1))

    cl.on_deliver = on_deliver
    await cl.call(1, C.Basic.Consume(queue=queue, no_ack=not manual), "Basic.ConsumeOk")
    ready.set()

    async def flush_acks():  # ack the tail that did not fill a multiple-ack batch
        while not cl.closed.done():
            await asyncio.sleep(0.2)
            if manual and since_ack:
                cl.transport.write(pframe.marshal(C.Basic.Ack(delivery_tag=last_tag,
                                                              multiple=True), 1))
    cl.flusher = asyncio.ensure_future(flush_acks())
    return cl


def _parse_args(argv):
    p = argparse.ArgumentParser(prog="amqpbroker perf", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    p.add_argument("-x", "--producers", type=int, default=1)
    p.add_argument("-y", "--consumers", type=int, default=1,
                   help="consumers per queue (0: publish only)")
    p.add_argument("-s", "--size", type=int, default=16, help="body size in bytes (min 20)")
    p.add_argument("-r", "--rate", type=float, default=0, help="total msg/s (0: flat out)")
    p.add_argument("-z", "--duration", type=float, default=10, help="seconds")
    p.add_argument("-c", "--confirm", type=int, default=0, metavar="WINDOW",
                   help="publisher confirms with this many unconfirmed messages at most")
    p.add_argument("-f", "--persistent", action="store_true",
                   help="persistent messages (delivery_mode 2) and durable queues")
    p.add_argument("-a", "--ack", action="store_true", help="manual acks (default: no-ack)")
    p.add_argument("-q", "--prefetch", type=int, default=0)
    p.add_argument("--multiple-ack", type=int, default=1, metavar="N",
                   help="ack with multiple=true every N deliveries")
    p.add_argument("-t", "--exchange-type", default="",
                   help="direct, fanout, topic, headers (default: the default exchange)")
    p.add_argument("--queues", type=int, default=1, help="queues bound to the exchange "
                                                         "(fanout width)")
    p.add_argument("--queue-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="queue argument (int values are sent as ints)")
    p.add_argument("--mandatory", action="store_true")
    p.add_argument("--max-backlog", type=int, default=20000, metavar="N",
                   help="with consumers, producers pause while more than N messages are "
                        "published but not delivered (0: unlimited), as a broker's flow "
                        "control would make them")
    p.add_argument("--json", action="store_true", help="one JSON object, no progress lines")
    return p.parse_args(argv)


async def run(args) -> dict:
    stats = Stats(args.producers, args.queues)
    stats.sample = 1 if (args.rate and args.rate <= 20000) else 10
    stats.max_backlog = args.max_backlog if args.consumers else 0
    run_id = os.urandom(3).hex()
    setup = await Client.connect(args.url)
    qargs = {}
    for kv in args.queue_arg:
        k, _, v = kv.partition("=")
        qargs[k] = int(v) if v.lstrip("-").isdigit() else v
    queues = [f"perf-{run_id}-{i}" for i in range(args.queues)]
    exchange = f"perf-{run_id}" if args.exchange_type else ""
    if exchange:
        await setup.call(1, C.Exchange.Declare(exchange=exchange,
                                               exchange_type=args.exchange_type,
                                               auto_delete=False), "Exchange.DeclareOk")
    for q in queues:
        await setup.call(1, C.Queue.Declare(queue=q, durable=args.persistent,
                                            arguments=qargs), "Queue.DeclareOk")
        if exchange:
            await setup.call(1, C.Queue.Bind(queue=q, exchange=exchange, routing_key="perf"),
                             "Queue.BindOk")
    routing_key = "perf" if exchange else queues[0]
    consumers = []
    ready_events = []
    for qi, q in enumerate(queues):
        for _ in range(args.consumers):
            ev = asyncio.Event()
            ready_events.append(ev)
            consumers.append(await _consumer(qi, q, args, stats, ev))
    stop = asyncio.Event()
    started = time.monotonic()
    producers = [asyncio.ensure_future(_producer(i, args, stats, stop, exchange, routing_key))
                 for i in range(args.producers)]
    last = (started, 0, 0, 0)
    while time.monotonic() - started < args.duration:
        await asyncio.sleep(1)
        now = time.monotonic()
        if not args.json:
            dt = now - last[0]
            print(f"time {now - started:5.1f}s  sent {(stats.sent - last[1]) / dt:9.0f} msg/s  "
                  f"confirmed {(stats.confirmed - last[2]) / dt:9.0f} msg/s  received "
                  f"{(stats.received - last[3]) / dt:9.0f} msg/s", file=sys.stderr, flush=True)
        last = (now, stats.sent, stats.confirmed, stats.received)
        if any(p.done() for p in producers):
            break
    stop.set()
    elapsed = time.monotonic() - started
    sent_at_stop, received_at_stop = stats.sent, stats.received
    last_seq = await asyncio.gather(*producers)
    # drain: wait until every message reached every queue's consumers
    expect = stats.sent * args.queues if args.consumers else 0
    deadline = time.monotonic() + 30
    while args.consumers and stats.received < expect and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for c in consumers:
        c.flusher.cancel()
        await c.close()
    for q in queues:
        try:
            await setup.call(1, C.Queue.Delete(queue=q), "Queue.DeleteOk")
        except Exception:
            pass
    if exchange:
        await setup.call(1, C.Exchange.Delete(exchange=exchange), "Exchange.DeleteOk")
    await setup.close()

    missing = 0
    if args.consumers:  # every sequence number of every producer, once in every queue
        for per_queue in stats.seen:
            for pid, bits in enumerate(per_queue):
                got = int.from_bytes(bits, "little").bit_count()
                missing += last_seq[pid] - got
    lat = sorted(stats.latencies)
    confirmed_ok = not args.confirm or stats.confirmed + stats.nacked == stats.sent
    result = {
        "sent": stats.sent,
        "confirmed": stats.confirmed,
        "nacked": stats.nacked,
        "returned": stats.returned,
        "received": stats.received,
        "duration_s": round(elapsed, 3),
        "sent_rate": round(sent_at_stop / elapsed, 1),
        "confirm_rate": round(stats.confirmed / elapsed, 1) if args.confirm else None,
        "received_rate": round(received_at_stop / elapsed, 1),
        "latency_ms": {"p50": _percentile(lat, 50), "p95": _percentile(lat, 95),
                       "p99": _percentile(lat, 99), "max": lat[-1] / 1e6 if lat else 0.0,
                       "samples": len(lat)},
        "reconcile": {"expected_deliveries": expect, "duplicates": stats.dups,
                      "missing": missing, "confirms_complete": confirmed_ok,
                      "ok": stats.dups == 0 and missing == 0 and confirmed_ok},
    }
    return result


def main(argv=None) -> int:
    args = _parse_args(argv)
    if args.multiple_ack > 1 and not args.ack:
        args.ack = True
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result))
    else:
        lat = result["latency_ms"]
        rec = result["reconcile"]
        print(f"sent {result['sent']} ({result['sent_rate']:.0f} msg/s), "
              f"confirmed {result['confirmed']}"
              + (f" ({result['confirm_rate']:.0f} msg/s)" if args.confirm else "")
              + f", nacked {result['nacked']}, returned {result['returned']}, received "
              f"{result['received']} ({result['received_rate']:.0f} msg/s)")
        print(f"latency ms: p50 {lat['p50']:.3f}  p95 {lat['p95']:.3f}  p99 {lat['p99']:.3f}  "
              f"max {lat['max']:.3f}  ({lat['samples']} samples)")
        print("reconcile: " + ("ok: nothing lost, nothing duplicated" if rec["ok"] else
                               f"FAILED: {rec['missing']} missing, {rec['duplicates']} "
                               f"duplicated, confirms complete: {rec['confirms_complete']}"))
    return 0 if result["reconcile"]["ok"] else 1
