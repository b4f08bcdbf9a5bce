"""A fuzzing campaign against a real broker process (issue 8, item 8).

    python bench/fuzz.py --frames 1000000 --connections 100 --out fuzz-out
    python bench/fuzz.py --replay fuzz-out/samples.jsonl \
        --url amqp://guest:guest@127.0.0.1:5672/ --limit 1000 --out fuzz-out

Starts ``python -m amqpbroker serve --port 0`` (SQLite store in a temporary directory) from
the current directory, then keeps ``--connections`` fuzzing sessions running until
``--frames`` fuzzed frames are sent: each a short valid handshake (3 % of them mutated),
then batches of valid and mutated method / header / body / heartbeat frames until a
channel or connection close.  A canary connection publishes persistent confirmed messages
and consumes them throughout.  If the broker exits it is counted and restarted on the same
data directory and port.  Writes to ``--out``: summary.json, summary.txt (closes by code,
541s, broker exits, distinct traceback sites in the broker's log, canary figures) and
samples.jsonl (the client bytes that led to each sampled close, with the code).
``--replay`` sends samples to another broker (the reference RabbitMQ) and compares codes.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fuzz_canary import Canary  # noqa: E402
from fuzz_gen import Pools, close_frames, handshake, setup_frames  # noqa: E402
from fuzz_session import Sampler, Stats, session  # noqa: E402


class BrokerProcess:
    """Our broker, restarted on the same data directory and port if it exits."""

    def __init__(self, out: str):
        self.data = tempfile.mkdtemp(prefix="fuzz-data-")
        self.log_path = os.path.join(out, "broker.log")
        self.log = open(self.log_path, "wb")
        self.port = 0
        self.exits: list[dict] = []
        self.proc = None

    def start(self) -> None:
        self.log.flush()
        offset = os.path.getsize(self.log_path)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "amqpbroker", "serve", "--host", "127.0.0.1", "--port",
             str(self.port), "--data-dir", self.data, "--log-level", "info"],
            stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 30
        pattern = re.compile(rb"listening on 127\.0\.0\.1:(\d+)")
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                found = pattern.findall(f.read())
            if found:
                self.port = int(found[-1])
                return
            if self.proc.poll() is not None:
                raise SystemExit(f"broker exited at start, see {self.log_path}")
            time.sleep(0.05)
        raise SystemExit("broker did not start")

    async def watch(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(0.2)
            if self.proc.poll() is not None and not stop.is_set():
                self.exits.append({"returncode": self.proc.returncode, "at": time.time()})
                print(f"broker exited ({self.proc.returncode}); restarting", flush=True)
                await asyncio.to_thread(self.start)

    def target(self) -> tuple[str, int]:
        return "127.0.0.1", self.port

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
        shutil.rmtree(self.data, ignore_errors=True)


def traceback_sites(log_path: str) -> list[dict]:
    """Distinct tracebacks in the broker's log: (innermost amqpbroker frame, exception) of
    the last traceback of each chain ("During handling of the above exception ...")."""
    sites: dict[tuple, dict] = {}
    lines = open(log_path, "rb").read().decode("utf-8", "replace").splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].startswith("Traceback (most recent call last):"):
            i += 1
            continue
        heading = lines[i - 1] if i else ""
        while True:   # one chain
            frames, j = [], i + 1
            while j < len(lines) and lines[j].startswith("  "):
                m = re.match(r'\s+File "(.+)", line (\d+), in (\S+)', lines[j])
                if m:
                    frames.append(m.groups())
                j += 1
            exc = lines[j] if j < len(lines) else "?"
            k = j + 1
            while k < len(lines) and not lines[k].strip():
                k += 1
            if k < len(lines) and lines[k].startswith(("During handling", "The above")):
                i = k + 2 if k + 2 < len(lines) else k + 1
                while i < len(lines) and not lines[i].startswith("Traceback"):
                    i += 1
                if i < len(lines):
                    continue
            break
        ours = [f for f in frames if "amqpbroker" in f[0]] or frames or [("?", "0", "?")]
        path, line, func = ours[-1]
        key = (os.path.basename(path), line, func, exc.split(":")[0])
        rec = sites.setdefault(key, {"site": f"{os.path.basename(path)}:{line} {func}",
                                     "exception": exc[:300], "count": 0,
                                     "logged": re.sub(r"^\S+ \S+ ", "", heading)[:200]})
        rec["count"] += 1
        i = j + 1
    return sorted(sites.values(), key=lambda r: -r["count"])


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
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    text = human(summary)
    with open(os.path.join(args.out, "summary.txt"), "w") as f:
        f.write(text)
    print(text)
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
    p.add_argument("--out", default="fuzz-out")
    p.add_argument("--replay", help="samples.jsonl to replay against --url")
    p.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--minimize", help="samples.jsonl to cut down in-process (see "
                                      "fuzz_minimize.py): minimized.jsonl, sites.txt")
    p.add_argument("--minimize-seconds", type=float, default=300.0)
    args = p.parse_args(argv)
    if args.minimize:
        from fuzz_minimize import run
        run(args)
        return 0
    if args.replay:
        from fuzz_replay import replay
        asyncio.run(replay(args))
        return 0
    s = asyncio.run(campaign(args))
    return 1 if s["internal_errors_541"] or s["broker_exits"] or s["canary"]["lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
