"""``bench/fuzz.py --minimize samples.jsonl --out DIR``: cut each sample down to the few
frames that cause its close, on our broker's sans-I/O core in-process (no sockets), and
find one shortest reproduction of each distinct traceback site.

A sample holds a whole session; in-process, alone on a fresh broker (with the shared
``fz.*`` entities), its frames are fed one by one until the first close, then the shortest
run of whole units (a method with its content) ending there that gives the same close is
kept.  Each unit is also followed by what can happen to a message later (an innocent
publisher overflowing ``fz.lim``, a consumer of ``fz.dl`` dropping, TTL expiry) to catch
tracebacks logged by the broker rather than closes.  Writes minimized.jsonl (replayable
with --replay: the closes of single causes), sites.json and sites.txt.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback

from fuzz_gen import PROTOCOL_HEADER, handshake, method, props_block, publish, \
    setup_frames, split_frames, ss, table, u16
from fuzz_session import CHANNEL_CLOSE, CONNECTION_CLOSE, Reader, close_of

sys.path.insert(0, os.getcwd())   # the amqpbroker of the current directory
from amqpbroker.auth import Transport  # noqa: E402
from amqpbroker.broker import Broker  # noqa: E402
from amqpbroker.connection import Connection  # noqa: E402
from amqpbroker.store.sqlite import SQLiteStore  # noqa: E402

HANDLER = None


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.records = []

    def emit(self, record):
        if record.exc_info:
            self.records.append(record)


def site_of(record) -> str:
    tb = traceback.extract_tb(record.exc_info[2])
    ours = [f for f in tb if "amqpbroker" in f.filename] or tb
    f = ours[-1]
    return f"{os.path.basename(f.filename)}:{f.lineno} {f.name}: {record.exc_info[0].__name__}"


class Clock:
    now = 1000.0

    def __call__(self):
        return self.now


SHM = "/dev/shm" if os.path.isdir("/dev/shm") else None


class Core:
    """A fresh in-process broker on a SQLite store (persistent messages take other paths)
    with the shared entities."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="fuzz-min-", dir=SHM)
        self.store = SQLiteStore(self.dir)
        self.broker = Broker(store=self.store)
        self.vh = self.broker.vhosts["/"]
        self.vh.clock = self.clock = Clock()
        self.connect().feed(setup_frames())

    def close(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def connect(self, data: bytes = b""):
        c = _Conn(self.broker)
        c.feed(data)
        return c


class _Conn:
    def __init__(self, broker):
        self.conn = Connection(broker, Transport(peer=("127.0.0.1", 5000)), now=0.0)
        self.reader = Reader()
        self.opened = False

    def feed(self, data: bytes):
        """Feed bytes; the first close in the output, or None."""
        if not self.opened:
            self.conn.receive_data(handshake(), 0.0)
            self.conn.data_to_send()
            self.opened = True
        return self.raw(data)

    def raw(self, data: bytes):
        self.opened = True
        if data:
            self.conn.receive_data(data, 0.0)
        for ftype, _ch, p in self.reader.feed(self.conn.data_to_send()):
            if ftype == 1 and p[:4] in (CONNECTION_CLOSE, CHANNEL_CLOSE):
                kind, code, text, _c, _m = close_of(p)
                return f"{kind} {code}", text
        if self.conn.should_close:   # closed without a Close (before Connection.Tune)
            return "eof", ""
        return None


def aftermath(core: Core) -> None:
    """Later fates of whatever got in: overflow, redelivery past a limit, expiry."""
    other = core.connect()
    for _ in range(6):
        other.feed(publish(1, b"", b"fz.lim", props_block({0x1000: b"\x02"}), b"ok"))
    consumer = core.connect()
    consumer.feed(method(1, 60, 20, u16(0) + ss(b"fz.dl") + ss(b"") + b"\x00" + table([])))
    consumer.conn.connection_lost()
    core.clock.now += 100
    core.vh.scheduler.run_due(core.clock.now)


def units(frames: list[bytes]) -> list[bytes]:
    out, cur = [], []
    for f in frames:
        if f[0] == 1 and cur:
            out.append(b"".join(cur))
            cur = []
        cur.append(f)
    if cur:
        out.append(b"".join(cur))
    return out


def first_close(parts: list[bytes], handshake_sample: bool, sites: dict | None = None):
    """(index of the part that caused the first close, the close) on a fresh core; the
    traceback sites logged on the way go into ``sites`` (site -> part index)."""
    core = Core()
    try:
        c = core.connect() if not handshake_sample else _Conn(core.broker)
        for i, part in enumerate(parts):
            HANDLER.records.clear()
            got = c.raw(part) if handshake_sample else c.feed(part)
            if sites is not None:
                for r in HANDLER.records:
                    sites.setdefault(site_of(r), (i, r))
            if got:
                return i, got
        return None, None
    finally:
        core.close()


def shortest(parts: list[bytes], i: int, handshake_sample: bool, test) -> bytes:
    """The shortest run of parts ending at ``i`` for which ``test(index, close, sites)``
    holds (the whole prefix if none does)."""
    for start in ([0] if handshake_sample else range(i, -1, -1)):
        found: dict = {}
        j, again = first_close(parts[start:i + 1], handshake_sample, found)
        if test(again, found):
            return b"".join(parts[start:i + 1])
    return b"".join(parts[:i + 1])


def minimize(sample: dict, sites: dict):
    data = bytes.fromhex(sample["data"])
    hs = sample["handshake"]
    parts = [PROTOCOL_HEADER] + split_frames(data[8:]) if hs else units(split_frames(data))
    logged: dict = {}
    i, got = first_close(parts, hs, logged)
    for key, (k, record) in logged.items():
        if key in sites and len(sites[key]["data"]) <= 2 * len(parts[k]):
            continue
        repro = shortest(parts, k, hs, lambda _c, found, key=key: key in found)
        if key not in sites or len(repro) * 2 < len(sites[key]["data"]):
            sites[key] = {"site": key, "logged": record.getMessage()[:200],
                          "exception": str(record.exc_info[1])[:200], "handshake": hs,
                          "data": repro.hex()}
    if got is None:
        return None, None
    return shortest(parts, i, hs, lambda again, _f: again == got), got


def run(args) -> None:
    global HANDLER
    handler = HANDLER = _Records()
    logger = logging.getLogger("amqpbroker")
    logger.addHandler(handler)
    logger.propagate = False
    samples = [json.loads(line) for line in open(args.minimize)]
    started = time.monotonic()
    out, seen, sites = [], set(), {}
    for s in samples:
        if time.monotonic() - started > args.minimize_seconds:
            break
        data, got = minimize(s, sites)
        if data is not None and (data, got) not in seen:
            seen.add((data, got))
            kind, code = got[0].split() if got[0] != "eof" else ("eof", 0)
            out.append({"kind": kind, "code": int(code), "text": got[1],
                        "handshake": s["handshake"], "slot": s.get("slot"),
                        "data": data.hex()})
        # traceback sites: each unit alone, then its aftermath
        raw = bytes.fromhex(s["data"])
        for u in ([raw] if s["handshake"] else units(split_frames(raw))):
            handler.records.clear()
            core = Core()
            try:
                if s["handshake"]:
                    _Conn(core.broker).raw(u)
                else:
                    core.connect().feed(u)
                aftermath(core)
            except Exception as e:   # an exception escaping the core: a site too
                handler.records.append(logging.makeLogRecord(
                    {"msg": f"escaped: {e!r}", "exc_info": sys.exc_info()}))
            finally:
                core.close()
            for r in handler.records:
                key = site_of(r)
                if key not in sites or len(u) < len(bytes.fromhex(sites[key]["data"])):
                    sites[key] = {"site": key, "logged": r.getMessage()[:200],
                                  "exception": str(r.exc_info[1])[:200],
                                  "handshake": s["handshake"], "data": u.hex()}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "minimized.jsonl"), "w") as f:
        for rec in out:
            f.write(json.dumps(rec) + "\n")
    with open(os.path.join(args.out, "sites.json"), "w") as f:
        json.dump(sorted(sites.values(), key=lambda r: r["site"]), f, indent=1)
    lines = [f"{len(out)} minimized closes from {len(samples)} samples; "
             f"{len(sites)} distinct traceback sites (shortest reproduction each, after a "
             "handshake unless it is one):"]
    for r in sorted(sites.values(), key=lambda r: r["site"]):
        lines += [f"  {r['site']}  ({r['logged'][:70]}) {r['exception'][:80]}",
                  f"      {r['data']}"]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "sites.txt"), "w") as f:
        f.write(text)
    print(text)
