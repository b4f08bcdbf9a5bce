"""A fuzzing campaign against a real broker process (issue 8, item 8).

    python bench/fuzz.py --out fuzz-out/run1m            # 1M frames, 100 connections
    python bench/fuzz.py --minimize fuzz-out/run1m/samples.jsonl   # -> minimized.jsonl
    python bench/fuzz.py --replay fuzz-out/run1m/minimized.jsonl \
        --url amqp://guest:guest@127.0.0.1:5672/ --limit 1000 --ours

Starts ``python -m amqpbroker serve --port 0`` (SQLite store in a temporary directory) from
the current directory, then keeps ``--connections`` fuzzing sessions running until
``--frames`` fuzzed frames are sent: each a short valid handshake (3 % of them mutated),
then batches of valid and mutated method / header / body / heartbeat frames until a
channel or connection close.  A canary connection publishes persistent confirmed messages
and consumes them throughout.  If the broker exits it is counted and restarted on the same
data directory and port.  Writes to ``--out``: summary.json, summary.txt (closes by code,
541s, broker exits, distinct traceback sites in the broker's log, canary figures) and
samples.jsonl (the client bytes that led to each sampled close, with the code).
``--replay`` sends samples to another broker (the reference RabbitMQ) and compares codes;
``--ours`` sends them to our broker too.  --minimize and --replay write next to their input.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fuzz_broker import BrokerProcess, traceback_sites, write_report  # noqa: E402
from fuzz_canary import Canary  # noqa: E402
from fuzz_gen import Pools, close_frames, handshake, setup_frames  # noqa: E402
from fuzz_session import Sampler, Stats, session  # noqa: E402


async def setup(target) -> None:
    host, port = target()
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(handshake() + setup_frames() + close_frames())
    await writer.drain()
    await asyncio.wait_for(reader.read(1 << 16), 5)
    await asyncio.sleep(0.3)
    writer.close()


async def campaign(args) -> dict:
    os.makedirs(args.out, exist_ok=True)
    broker = BrokerProcess(args.out)
    broker.start()
    try:
        return await _campaign(args, broker)
    finally:
        if broker.proc.poll() is None:   # an error on the way: stop it all the same
            broker.stop()


async def _campaign(args, broker: BrokerProcess) -> dict:
    started = time.monotonic()
    pools = Pools(args.connections, seed=args.seed)
    print(f"pools built in {time.monotonic() - started:.1f} s; broker on port {broker.port}",
          flush=True)
    await setup(broker.target)
    stats = Stats()
    sampler = Sampler(os.path.join(args.out, "samples.jsonl"))
    stop = asyncio.Event()
    canary = Canary(broker.target, rate=args.canary_rate)
    watcher = asyncio.create_task(broker.watch(stop))
    canary_task = asyncio.create_task(canary.run(stop))
    t0 = time.monotonic()

    async def worker(slot: int) -> None:
        r = random.Random(args.seed * 1000 + slot)
        while stats.frames < args.frames:
            await session(pools, slot, r, broker.target, stats, sampler, p_bad=args.p_bad,
                          limit=args.frames)

    async def progress() -> None:
        while True:
            await asyncio.sleep(10)
            el = time.monotonic() - t0
            print(f"{el:6.0f} s  {stats.frames:>9,} frames  {stats.frames / el:7.0f}/s  "
                  f"{stats.connections:,} connections  exits {len(broker.exits)}  canary "
                  f"{canary.confirmed_total}/{len(canary.received)} stalls {canary.stalls}",
                  flush=True)

    ticker = asyncio.create_task(progress())
    await asyncio.gather(*(worker(s) for s in range(args.connections)))
    elapsed = time.monotonic() - t0
    ticker.cancel()
    await canary.drain()
    stop.set()
    await asyncio.gather(watcher, canary_task, return_exceptions=True)
    sampler.close()
    broker.stop()
    closes = dict(sorted(stats.closes.items()))
    summary = {
        "frames": stats.frames, "handshake_frames": stats.handshake_frames,
        "bytes": stats.bytes, "seconds": round(elapsed, 1),
        "frames_per_s": round(stats.frames / elapsed), "connections": stats.connections,
        "handshake_fuzz_connections": stats.handshake_fuzz,
        "connect_failures": stats.connect_failures, "closes": closes,
        "close_texts": {k: dict(v.most_common(10)) for k, v in sorted(stats.texts.items())},
        "closed_without_close": stats.silent,
        "internal_errors_541": sum(n for k, n in stats.closes.items() if k.endswith(" 541")),
        "broker_exits": broker.exits, "tracebacks": traceback_sites(broker.log_path),
        "canary": canary.summary(), "samples": stats.samples,
        "settings": {"connections": args.connections, "p_bad": args.p_bad,
                     "seed": args.seed, "target_frames": args.frames},
    }
    write_report(args.out, "summary", summary, human(summary))
    return summary


def human(s: dict) -> str:
    c = s["canary"]
    out = [f"{s['frames']:,} fuzzed frames in {s['seconds']} s ({s['frames_per_s']:,}/s) over "
           f"{s['connections']:,} connections ({s['handshake_fuzz_connections']:,} with a "
           f"mutated handshake, {s['connect_failures']} connect failures)",
           f"541 INTERNAL_ERROR: {s['internal_errors_541']}    broker exits: "
           f"{len(s['broker_exits'])}    closed without a Close: {s['closed_without_close']}",
           "closes by reply code:"]
    for k, n in s["closes"].items():
        texts = s["close_texts"].get(k, {})
        top = max(texts, key=texts.get) if texts else ""
        out.append(f"  {k:16} {n:8,}  {len(texts)} texts, most often ({texts.get(top, 0)}): "
                   f"{top[:80]}")
    out.append(f"tracebacks in the broker's log: {sum(t['count'] for t in s['tracebacks'])} "
               f"({len(s['tracebacks'])} distinct sites)")
    out += [f"  {t['count']:6} {t['site']}: {t['exception'][:100]}" for t in s["tracebacks"]]
    out.append(f"canary: sent {c['sent']}, confirmed {c['confirmed']}, received "
               f"{c['received']}, lost {c['lost']}, stalls > 1 s {c['stalls']}, nacked "
               f"{c['nacked']}, reconnects {c['reconnects']}, max confirm latency "
               f"{c['max_confirm_latency_s']} s")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=1_000_000)
    p.add_argument("--connections", type=int, default=100)
    p.add_argument("--p-bad", type=float, default=0.03,
                   help="share of mutated units among the frames sent (default 0.03)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--canary-rate", type=float, default=50.0, help="messages per second")
    p.add_argument("--out", help="default: fuzz-out for a campaign, the input's directory "
                                  "for --minimize and --replay")
    p.add_argument("--replay", help="samples.jsonl to replay against --url")
    p.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--ours", action="store_true",
                   help="with --replay: the same bytes against our broker too, compared")
    p.add_argument("--minimize", help="samples.jsonl to cut down in-process (see "
                                      "fuzz_minimize.py): minimized.jsonl, sites.txt")
    p.add_argument("--minimize-seconds", type=float, default=300.0)
    p.add_argument("--locate", help="replay.json: find the unit where each broker closed "
                                    "(see fuzz_locate.py): locate.txt")
    args = p.parse_args(argv)
    if args.out is None:   # a minimization or a replay lands next to what it read
        given = args.minimize or args.replay or args.locate
        args.out = os.path.dirname(given) or "." if given else "fuzz-out"
    if args.minimize:
        from fuzz_minimize import run
        run(args)
        return 0
    if args.locate:
        args.replay = args.replay or os.path.join(os.path.dirname(args.locate),
                                                  "samples.jsonl")
        from fuzz_locate import locate
        asyncio.run(locate(args))
        return 0
    if args.replay:
        from fuzz_replay import replay
        asyncio.run(replay(args))
        return 0
    s = asyncio.run(campaign(args))
    return 1 if s["internal_errors_541"] or s["broker_exits"] or s["canary"]["lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
