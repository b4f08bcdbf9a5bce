"""Topic routing cost with many patterns, in process (no sockets): one topic exchange with
``--patterns`` bindings (literal words, ``*`` and ``#``, a fixed seed) to 100 queues, then
``--keys`` distinct routing keys routed once each (so the exchange's per-key cache never
hits).  Prints the wall time per routed key; for a figure that other load on the machine
does not disturb, count instructions and subtract a run without keys:

    PY=$(python -c "import sys; print(sys.executable)")   # not a pyenv shim
    valgrind --tool=callgrind --callgrind-out-file=/dev/null $PY bench/routing.py --keys 0
    valgrind --tool=callgrind --callgrind-out-file=/dev/null $PY bench/routing.py --keys 500
    # (I refs of the second - I refs of the first) / 500: instructions per routed key

``--tree DIR`` measures the ``amqpbroker`` of another checkout (main, say; default: the
checkout this script is in).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

WORDS = [f"w{i}" for i in range(20)]


class Dest:
    def __init__(self, i):
        self.i = i
        self.bindings: dict = {}


def pattern(rng: random.Random) -> str:
    words = []
    for _ in range(rng.randint(1, 5)):
        r = rng.random()
        words.append("*" if r < 0.15 else "#" if r < 0.25 else rng.choice(WORDS))
    return ".".join(words)


def key(rng: random.Random, i: int) -> str:
    return ".".join([rng.choice(WORDS) for _ in range(rng.randint(1, 5))] + [f"u{i}"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--patterns", type=int, default=1000)
    ap.add_argument("--keys", type=int, default=2000)
    ap.add_argument("--tree", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                   ".."))
    a = ap.parse_args()
    sys.path.insert(0, a.tree)
    from amqpbroker.exchanges import Binding, TopicExchange
    rng = random.Random(8)
    ex = TopicExchange("bench", durable=False)
    dests = [Dest(i) for i in range(100)]
    for i in range(a.patterns):
        ex.add(Binding(ex, dests[i % 100], pattern(rng), {}))
    # the last word of every key is unique, so no two keys are routed alike from the cache;
    # patterns ending in '#' or '*' still match them
    keys = [key(rng, i) for i in range(a.keys)]
    routed = 0
    # exchanges/ (issue 9): route(msg, keys); before: route(routing_key, headers)
    by_message = hasattr(ex, "e2e")
    t0 = time.process_time()
    for k in keys:
        found = ex.route(None, (k,)) if by_message else ex.route(k, None)
        routed += len({id(d) for d in found})  # main's scan repeats some
    dt = time.process_time() - t0
    import amqpbroker
    print(json.dumps({"tree": os.path.dirname(os.path.dirname(amqpbroker.__file__)),
                      "patterns": a.patterns, "keys": a.keys, "deliveries": routed,
                      "us_per_key": round(dt / a.keys * 1e6, 1) if a.keys else 0}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
