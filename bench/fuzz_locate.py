"""``bench/fuzz.py --locate replay.json --url ...``: for each replayed sample whose first
close differed, find the unit (a method with its content) at which each broker closed:
ours in-process (the minimizer's core), RabbitMQ's by bisecting prefixes of the sample
live.  Then the difference has a cause that can be read off one unit:

- both closed at the same unit: the same fault, answered with another code;
- we closed earlier: a unit we refuse and RabbitMQ took (deliberate if it is a content
  header we validate at ingress, issue 8 item 1; RabbitMQ decodes properties lazily);
- RabbitMQ closed earlier: a unit it refuses and we took.

Writes locate.json and locate.txt next to the replay.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
from collections import Counter, defaultdict

from fuzz_broker import write_report
from fuzz_gen import split_frames
import fuzz_minimize
from fuzz_minimize import first_close as core_close, units
from fuzz_replay import parse_url, pick, run_one

_probe = itertools.count(5000)   # name suffixes of their own: no clash with the replay's


async def their_close(target, sample: dict, parts: list[bytes]) -> str:
    r = await run_one(target, {**sample, "data": b"".join(parts).hex()}, next(_probe))
    return r["theirs"]


async def their_unit(target, sample: dict, parts: list[bytes]):
    """The smallest k for which parts[:k + 1] already makes RabbitMQ close, and that close.
    Not the k that gives the full sample's close: RabbitMQ's reader goes on parsing while
    a channel process fails (a 541 arrives asynchronously), so a later frame error can come
    first in the whole sample."""
    whole = await their_close(target, sample, parts)
    if whole == "none":
        return None, whole
    lo, hi, close = 0, len(parts) - 1, whole
    while lo < hi:
        mid = (lo + hi) // 2
        got = await their_close(target, sample, parts[:mid + 1])
        if got != "none":
            hi, close = mid, got
        else:
            lo = mid + 1
    return lo, close


def describe(part: bytes) -> str:
    """A unit in a few words: its method (class.method) and, for content, the header's
    property flags."""
    frames = split_frames(part)
    if not frames:
        return "?"
    f = frames[0]
    p = f[7:-1]
    head = f"type {f[0]}" if f[0] != 1 or len(p) < 4 else \
        f"{int.from_bytes(p[:2], 'big')}.{int.from_bytes(p[2:4], 'big')}"
    if len(frames) > 1 and frames[1][0] == 2 and len(frames[1]) >= 21:
        head += f" + header flags {frames[1][19:21].hex()}"
    return head


_NONFINITE = re.compile(rb"d[\x7f\xff][\xf0-\xff]")   # a double infinity or NaN


def _header_of(r: dict) -> bytes:
    hexed = r.get("their_hex") or ""
    return b"".join(f[7:-1] for f in split_frames(bytes.fromhex(hexed)) if f[0] == 2)


def cause(r: dict) -> str:
    """Why the first closes differ, read off the units where each broker closed."""
    o, t, there = r["ours_unit"], r["their_unit"], r["their_close_there"]
    if o is None or t is None:
        return "not located (timing, or a close by silence, on one side)"
    if t <= o and there == "eof":
        return ("RabbitMQ drops the socket at a unit its parser fails on (field type 0, an "
                "infinite double in arguments, an unknown class) where we answer a code")
    if o == t:
        if there == r["ours"]:
            return ("the same unit, the same close: RabbitMQ's first close in the whole "
                    "sample came from a later unit (its reader runs ahead of a failing "
                    "channel)")
        if there.endswith(" 541"):
            return "the same unit: RabbitMQ 541 INTERNAL_ERROR where we answer a precise code"
        return "the same unit, another code"
    if o > t:   # RabbitMQ closed at a unit we took
        if there.endswith(" 541") and _NONFINITE.search(_header_of(r)):
            return ("RabbitMQ 541 on a message whose headers hold a double infinity or NaN "
                    "(Erlang floats have none); we keep it byte-exact")
        return "RabbitMQ refuses a unit we take"
    if r["ours_text"].startswith("SYNTAX_ERROR - content header"):
        return ("we refuse a malformed content header at ingress (item 1); RabbitMQ "
                "decodes properties lazily and closes at a later unit")
    if r["ours_part"] == "60.40" and r["ours"] in ("connection 504", "connection 540"):
        return ("a Basic.Publish on a channel never opened (504) or with immediate (540): "
                "RabbitMQ checks it only once its content is complete, and it never was")
    return "we refuse a unit RabbitMQ takes"


async def locate(args) -> None:
    target = parse_url(args.url)
    fuzz_minimize.HANDLER = fuzz_minimize._Records()   # the core's error log, kept quiet
    logger = logging.getLogger("amqpbroker")
    logger.addHandler(fuzz_minimize.HANDLER)
    logger.propagate = False
    results = json.load(open(args.locate))["results"]
    # the replay's results are in the order of its pick: the samples give each its slot
    samples = pick([json.loads(line) for line in open(args.replay)], len(results))
    diff = [{**r, "slot": s.get("slot"), "kind": s["kind"], "code": s["code"],
             "text": s["text"]} for r, s in zip(results, samples)
            if r["ours"] != r["theirs"] and not r["handshake"]]
    sem = asyncio.Semaphore(16)

    async def one(r):
        parts = units(split_frames(bytes.fromhex(r["data"])))
        mine, _ = core_close(parts, False)
        async with sem:
            theirs, close = await their_unit(target, r, parts)
        return {**r, "ours_unit": mine, "their_unit": theirs, "units": len(parts),
                "their_close_there": close,
                "ours_part": describe(parts[mine]) if mine is not None else None,
                "their_part": describe(parts[theirs]) if theirs is not None else None,
                "their_hex": parts[theirs].hex() if theirs is not None else None}
    located = await asyncio.gather(*(one(r) for r in diff))
    write_report(args.out, "locate", located, report(located))


def report(located: list[dict]) -> str:
    lines = [f"located {len(located)} differing samples (handshake samples left out)", ""]
    by: dict[str, list] = defaultdict(list)
    for r in located:
        by[cause(r)].append(r)
    for why, rs in sorted(by.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"{len(rs):5}  {why}")
        keys = Counter((r["ours"], r["theirs"], r["ours_part"] if r["ours_unit"] is not None
                        and r["ours_unit"] <= (r["their_unit"] or 0) else r["their_part"])
                       for r in rs)
        for (o, t, part), n in keys.most_common():
            ex = next(r for r in rs if (r["ours"], r["theirs"]) == (o, t))
            lines.append(f"       {n:4} {o:15} -> {t:15} at {part}: {ex['ours_text'][:60]} | "
                         f"{ex['theirs_text'][:60]} (there: {ex['their_close_there']})")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":   # reprint a locate.json's report
    import sys
    print(report(json.load(open(sys.argv[1]))), end="")
