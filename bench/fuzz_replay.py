"""``bench/fuzz.py --replay samples.jsonl --url ... --limit N``: send the client bytes of
sampled closes to another broker (the reference RabbitMQ) and compare the first close.

Samples are taken round-robin over our (kind, code) pairs, so that rare codes are
represented.  The shared ``fz.*`` entities are declared first (as the campaign did) and
deleted afterwards, and so is every queue and exchange a sample declared (most are
exclusive or expire by themselves: nothing should linger on a shared RabbitMQ).
Writes replay.json and replay.txt to ``--out``.  ``--ours`` replays the same bytes
against our broker too and compares the two live answers.
"""
from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from urllib.parse import unquote, urlparse

from fuzz_broker import BrokerProcess, traceback_sites, write_report
from fuzz_gen import SHARED, close_frames, handshake, method, setup_frames, split_frames, \
    ss, teardown_frames, u16, u32
from fuzz_session import CHANNEL_CLOSE, CONNECTION_CLOSE, Reader, close_of

WAIT = 1.5   # seconds of silence after the last byte: no close


def parse_url(url: str):
    u = urlparse(url)
    vhost = unquote(u.path[1:]) if len(u.path) > 1 else "/"
    return (u.hostname or "127.0.0.1", u.port or 5672, (u.username or "guest").encode(),
            (u.password or "guest").encode(), vhost.encode())


def pick(samples: list[dict], limit: int) -> list[dict]:
    by_key = defaultdict(list)
    for s in samples:
        by_key[(s["kind"], s["code"])].append(s)
    out, lists = [], list(by_key.values())
    while len(out) < limit and any(lists):
        for lst in lists:
            if lst and len(out) < limit:
                out.append(lst.pop(0))
    return out


async def first_close(reader, writer, timeout: float = WAIT):
    """The first Close the server sends: (kind code, text), ('eof', ''), ('none', '')."""
    frames = Reader()
    while True:
        try:
            chunk = await asyncio.wait_for(reader.read(1 << 20), timeout)
        except asyncio.TimeoutError:
            return "none", ""
        except OSError:
            return "eof", ""
        if not chunk:
            return "eof", ""
        for ftype, _ch, p in frames.feed(chunk):
            if ftype == -1:
                return "eof", "protocol header"
            if ftype == 1 and p[:4] in (CONNECTION_CLOSE, CHANNEL_CLOSE):
                kind, code, text, _c, _m = close_of(p)
                return f"{kind} {code}", text


async def opened(reader, timeout: float = 10) -> bool:
    frames = Reader()
    while True:
        chunk = await asyncio.wait_for(reader.read(1 << 16), timeout)
        if not chunk:
            return False
        for ftype, _ch, p in frames.feed(chunk):
            if ftype == 1 and p[:4] == b"\x00\x14\x00\x0b":
                return True
            if ftype == 1 and p[:4] in (CONNECTION_CLOSE, CHANNEL_CLOSE):
                print("handshake refused:", close_of(p))
                return False


def renames(slot, n: int) -> dict[bytes, bytes]:
    """Each sample gets its own copies of the shared entities and of its session's queue,
    under names of the same length (so that the bytes keep their shape): samples run
    concurrently, an exclusive queue outlives its connection a little on RabbitMQ, and a
    queue one sample crashes there ("has crashed and failed to restart") must not change
    the next sample's outcome."""
    olds = list(SHARED) + ([b"fz.x%d" % slot] if slot is not None else [])
    return {old: (b"%c%0*d" % (65 + i, len(old) - 1, n))[-len(old):]
            for i, old in enumerate(olds)}


def rename(data: bytes, names: dict) -> bytes:
    for old, new in names.items():
        data = data.replace(ss(old), ss(new))
    return data


async def run_one(target, sample: dict, n: int) -> dict:
    names = renames(sample.get("slot"), n)
    await session(target, setup_frames(reference=True, names=names))
    try:
        return await _run_one(target, sample, rename(bytes.fromhex(sample["data"]), names))
    finally:
        await session(target, teardown_frames(names))


async def _run_one(target, sample: dict, data: bytes) -> dict:
    host, port, user, password, vhost = target
    theirs, text = "eof", ""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
    except OSError as e:
        return {"ours": ours(sample), "theirs": f"error {e}"}
    try:
        if not sample["handshake"]:
            writer.write(handshake(user, password, vhost))
            if not await opened(reader):
                raise OSError("handshake failed")
        writer.write(data)
        await writer.drain()
        theirs, text = await first_close(reader, writer)
        writer.write(method(0, 10, 51) if theirs.startswith("connection") else close_frames())
        await asyncio.wait_for(writer.drain(), 1)
    except (OSError, asyncio.TimeoutError) as e:
        theirs = theirs if theirs != "eof" else "eof"
        text = text or str(e)
    finally:
        writer.close()
    return {"ours": ours(sample), "ours_text": sample["text"],
            "theirs": theirs, "theirs_text": text, "bytes": len(data),
            "handshake": sample["handshake"], "data": sample["data"]}


def declared_names(data: bytes) -> tuple[set, set]:
    """Queue and exchange names the sample's own declares used (to delete them later)."""
    queues, exchanges = set(), set()
    for f in split_frames(data):
        p = f[7:-1]
        try:
            if f[0] == 1 and p[:4] == b"\x00\x32\x00\x0a" and p[6]:
                queues.add(p[7:7 + p[6]])
            elif f[0] == 1 and p[:4] == b"\x00\x28\x00\x0a" and p[6]:
                name = p[7:7 + p[6]]
                pos = 7 + p[6]
                if not p[pos + 1 + p[pos]] & 1:   # not passive
                    exchanges.add(name)
        except IndexError:
            pass
    return queues, exchanges


async def session(target, frames: bytes) -> None:
    """One connection that sends ``frames`` after a handshake, then closes."""
    host, port, user, password, vhost = target
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(handshake(user, password, vhost))
    if not await opened(reader):
        writer.close()
        return
    writer.write(frames + close_frames())
    await writer.drain()
    try:
        while await asyncio.wait_for(reader.read(1 << 16), 3):
            pass
    except (asyncio.TimeoutError, OSError):
        pass
    writer.close()


async def cleanup(target, queues: set, exchanges: set) -> None:
    """Delete what the samples declared: one channel per delete (a refusal closes it)."""
    items = [(50, 40, q) for q in queues if not q.startswith(b"amq.")] + \
            [(40, 20, x) for x in exchanges if x and not x.startswith(b"amq.")]
    for i in range(0, len(items), 1000):
        out = []
        for n, (cls, mid, name) in enumerate(items[i:i + 1000], start=2):
            out.append(method(n, 20, 10, b"\x00") + method(n, cls, mid, u16(0) + ss(name)
                                                           + b"\x00")
                       + method(n, 20, 40, u16(200) + ss(b"") + u32(0)))
        await session(target, b"".join(out))


def ours(sample: dict) -> str:
    return "eof" if sample["kind"] == "eof" else f"{sample['kind']} {sample['code']}"


def reason(r: dict) -> str:
    """Why our first close differs from RabbitMQ's, by what each answered."""
    o, t, text = r["ours"], r["theirs"], r["ours_text"]
    if t.endswith(" 541"):
        return "RabbitMQ 541 INTERNAL_ERROR where we answer a precise code"
    if "nested deeper" in text:
        return "our nesting limit (64 levels; RabbitMQ has none)"
    if t == "eof" and o.startswith("connection 50"):
        return "RabbitMQ drops the socket (its parser fails) where we answer a precise code"
    if "none" in (o, t):
        return "timing: no close within 1.5 s on one side"
    return f"other ({o} vs {t})"


def report(results: list[dict]) -> str:
    same = sum(r["ours"] == r["theirs"] for r in results)
    diff = [r for r in results if r["ours"] != r["theirs"]]
    lines = [f"replayed {len(results)} samples: same first close {same}, different "
             f"{len(diff)}"]
    if results and "recorded" in results[0]:
        kept = sum(r["ours"] == r["recorded"] for r in results)
        lines.append(f"our broker over a socket gives the in-process code {kept} times "
                     f"of {len(results)}")
    lines += ["", "different, by reason (count): ours -> theirs, shortest example's texts"]
    by_reason: dict[str, list] = defaultdict(list)
    for r in diff:
        by_reason[reason(r)].append(r)
    for why, rs in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"  {len(rs):5}  {why}")
        for (o, t), n in Counter((r["ours"], r["theirs"]) for r in rs).most_common():
            ex = min((r for r in rs if (r["ours"], r["theirs"]) == (o, t)),
                     key=lambda r: r["bytes"])
            lines.append(f"         {n:5} {o:16} -> {t:16} {ex['ours_text'][:70]} | "
                         f"{ex['theirs_text'][:60]}")
    agree = Counter(r["ours"] for r in results if r["ours"] == r["theirs"])
    lines += ["", "same: " + ", ".join(f"{k} {n}" for k, n in agree.most_common())]
    return "\n".join(lines) + "\n"


async def replay_on(target, chosen: list[dict]) -> list[dict]:
    sem = asyncio.Semaphore(16)

    async def one(s, n):
        async with sem:
            return await run_one(target, s, n)
    results = await asyncio.gather(*(one(s, n) for n, s in enumerate(chosen)))
    queues, exchanges = set(), set()
    for n, s in enumerate(chosen):
        q, x = declared_names(rename(bytes.fromhex(s["data"]), renames(s.get("slot"), n)))
        queues |= q
        exchanges |= x
    await cleanup(target, queues, exchanges)
    return list(results)


async def replay(args) -> None:
    """The chosen samples against ``--url``; with ``--ours``, the same bytes against our
    broker too (a process started for it), whose live codes are then the ones compared
    (the in-process code of the minimizer is kept as ``recorded``)."""
    target = parse_url(args.url)
    chosen = pick([json.loads(line) for line in open(args.replay)], args.limit)
    results = await replay_on(target, chosen)
    extra = {}
    if args.ours:
        broker = BrokerProcess(args.out)
        broker.start()
        try:
            mine = await replay_on(("127.0.0.1", broker.port) + target[2:], chosen)
        finally:
            broker.stop()
        for r, m in zip(results, mine):
            r.update(recorded=r["ours"], ours=m["theirs"], ours_text=m["theirs_text"])
        extra["our_tracebacks"] = traceback_sites(broker.log_path)
    text = report(results)
    if args.ours:
        text += f"tracebacks in our broker's log: {len(extra['our_tracebacks'])}\n"
    write_report(args.out, "replay", {"results": results, **extra}, text)


if __name__ == "__main__":   # python bench/fuzz_replay.py is bench/fuzz.py --replay
    import sys
    from fuzz import main
    sys.exit(main(["--replay", *sys.argv[1:]] if sys.argv[1:2] != ["--replay"] else
                  sys.argv[1:]))
