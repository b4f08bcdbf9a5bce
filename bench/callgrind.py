"""Instructions per message, publish -> deliver, through the sans-I/O core, counted by
valgrind's callgrind (deterministic: no timing, no sockets).

    python bench/callgrind.py                      # this checkout
    python bench/callgrind.py --src /work/main     # another checkout (the "before")
    AMQPBROKER_SRC=/work/main python bench/callgrind.py
    python bench/callgrind.py --exchange amq.direct   # through a direct exchange binding
    python bench/callgrind.py --ack 100   # manual acks: prefetch 1000, Basic.Ack multiple
                                          # every 100 messages (compare.py's ack scenario)
    python bench/callgrind.py --exchange amq.topic --topic-write '^bench'
                                          # guest has a topic permission on that exchange:
                                          # every publish searches the write regex

For each scenario the child process runs under ``valgrind --tool=callgrind`` twice, with
``--small`` and ``--large`` messages; the difference of the two totals divided by the
difference in messages is the cost of one message, start-up and imports cancelled out.
One message: Basic.Publish + content header + one 16-byte body frame fed to
``Connection.receive_data`` (one call per message), routed by the default exchange to a
transient queue with a no-ack consumer on the same connection, Basic.Deliver written and
taken with ``data_to_send``.

Scenarios (the content header's properties):
  empty      no properties (flags 0)
  plain      content-type, delivery-mode 1, a unique message-id: no headers
  headers    the same small headers table (3 entries: longstr, int, bool) on every message
  unique     a headers table of the same shape with unique values on every message
  nested     unique values, with a nested table and an array (x-death-like)
"""
from __future__ import annotations

import argparse
import os
import re
import struct
import subprocess
import sys

SCENARIOS = ("empty", "plain", "headers", "unique", "nested")


def _ss(s: bytes) -> bytes:
    return bytes((len(s),)) + s


def _ls(tag: bytes, s: bytes) -> bytes:
    return tag + struct.pack(">I", len(s)) + s


def _table(items: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(_ss(k) + v for k, v in items)
    return struct.pack(">I", len(body)) + body


def properties(scenario: str, i: int) -> bytes:
    if scenario == "empty":
        return b"\x00\x00"
    if scenario == "plain":
        # content-type, delivery-mode, message-id
        return b"\x90\x80" + _ss(b"text/plain") + b"\x01" + _ss(b"msg-%08d" % i)
    if scenario == "headers":
        items = [(b"source", _ls(b"S", b"bench")), (b"attempt", b"I" + struct.pack(">i", 1)),
                 (b"urgent", b"t\x00")]
    elif scenario == "unique":
        items = [(b"source", _ls(b"S", b"bench-%08d" % i)),
                 (b"attempt", b"I" + struct.pack(">i", i)), (b"urgent", b"t" + bytes((i & 1,)))]
    else:
        inner = _table([(b"queue", _ls(b"S", b"q-%d" % i)), (b"count", b"l" + struct.pack(">q", i))])
        arr = b"".join(_ls(b"S", b"key-%d" % (i + k)) for k in range(2))
        items = [(b"source", _ls(b"S", b"bench-%08d" % i)), (b"death", b"F" + inner),
                 (b"keys", b"A" + struct.pack(">I", len(arr)) + arr)]
    # content-type, headers, delivery-mode
    return b"\xb0\x00" + _ss(b"text/plain") + _table(items) + b"\x01"


def child(scenario: str, n: int, total: int, src: str, exchange: str = "",
          ack: int = 0, topic_write: str = "") -> None:
    sys.path.insert(0, src)
    import amqpbroker
    assert os.path.dirname(os.path.dirname(os.path.abspath(amqpbroker.__file__))) == src, \
        amqpbroker.__file__
    from pamqp import commands as C
    from pamqp import frame as pframe

    from amqpbroker.broker import Broker
    from amqpbroker.config import Config
    from amqpbroker.connection import Connection

    cfg = Config()
    if topic_write:
        from amqpbroker.config import TopicPermission
        cfg = Config(topic_permissions=(TopicPermission("guest", exchange, topic_write, ".*"),))
    conn = Connection(Broker(cfg), now=0.0)  # the default: a loopback peer

    def send(*methods, channel=1):
        conn.receive_data(b"".join(pframe.marshal(m, channel) for m in methods), 0.0)
        return conn.data_to_send()

    conn.receive_data(b"AMQP\x00\x00\x09\x01", 0.0)
    send(C.Connection.StartOk(client_properties={"product": "bench"}, mechanism="PLAIN",
                              response="\0guest\0guest", locale="en_US"), channel=0)
    send(C.Connection.TuneOk(channel_max=2047, frame_max=131072, heartbeat=0),
         C.Connection.Open(virtual_host="/"), channel=0)
    send(C.Channel.Open())
    send(C.Queue.Declare(queue="bench"))
    if exchange:
        send(C.Queue.Bind(queue="bench", exchange=exchange, routing_key="bench"))
    if ack:
        send(C.Basic.Qos(prefetch_count=1000))
    out = send(C.Basic.Consume(queue="bench", consumer_tag="c", no_ack=not ack))
    assert out, "no consume-ok"
    publish = pframe.marshal(C.Basic.Publish(exchange=exchange, routing_key="bench"), 1)
    body = b"0123456789abcdef"
    body_frame = struct.pack(">BHI", 3, 1, len(body)) + body + b"\xce"
    # every run builds the same inputs (those of the largest run), so that building them
    # cancels out of the difference; only the first n + 100 are fed
    inputs = []
    for i in range(total + 100):
        props = properties(scenario, i)
        header = struct.pack(">HHQ", 60, 0, len(body)) + props
        inputs.append(publish + struct.pack(">BHI", 2, 1, len(header)) + header + b"\xce" +
                      body_frame)
    delivered = 0
    receive, take = conn.receive_data, conn.data_to_send
    acks = [pframe.marshal(C.Basic.Ack(delivery_tag=i, multiple=True), 1) if ack and
            i % ack == 0 else b"" for i in range(1, total + 101)]
    for i, data in enumerate(inputs[:n + 100]):  # the first 100 warm caches, in both runs
        receive(data + acks[i], 0.0)
        delivered += len(take())
    assert delivered > (n + 100) * 40, ("messages were not delivered", delivered)
    assert conn.state == 4, "the connection closed (a message was refused)"


def count(src: str, scenario: str, n: int, total: int, exchange: str = "",
          ack: int = 0, topic_write: str = "") -> int:
    env = dict(os.environ, PYTHONHASHSEED="0")
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
           sys.executable, os.path.abspath(__file__), "--child", scenario, "-n", str(n),
           "--total", str(total), "--src", src, "--exchange", exchange, "--ack", str(ack)]
    if topic_write:
        cmd += ["--topic-write", topic_write]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=src)
    m = re.search(r"Collected : (\d+)", res.stderr)
    if res.returncode != 0 or m is None:
        raise SystemExit(f"{scenario}: valgrind run failed:\n{res.stderr[-3000:]}")
    return int(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", default=os.environ.get("AMQPBROKER_SRC",
                                                    os.path.dirname(os.path.dirname(
                                                        os.path.abspath(__file__)))),
                    help="the checkout whose amqpbroker is measured (default: this one)")
    ap.add_argument("--small", type=int, default=200)
    ap.add_argument("--large", type=int, default=2200)
    ap.add_argument("--exchange", default="",
                    help="publish through this exchange, the queue bound by its name "
                         "(default: the default exchange)")
    ap.add_argument("--ack", type=int, default=0,
                    help="manual acks: Basic.Ack multiple every N messages (prefetch 1000)")
    ap.add_argument("--topic-write", default="",
                    help="give guest this topic permission (write regex) on --exchange")
    ap.add_argument("--child", choices=SCENARIOS, help=argparse.SUPPRESS)
    ap.add_argument("-n", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--total", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    args = ap.parse_args()
    if args.child:
        child(args.child, args.n, max(args.n, args.total), os.path.abspath(args.src),
              args.exchange, args.ack, args.topic_write)
        return
    src = os.path.abspath(args.src)
    print(f"amqpbroker from {src}; messages {args.small} and {args.large}; exchange "
          f"{args.exchange or '(default)'}" + (f"; ack every {args.ack}" if args.ack else "")
          + (f"; topic permission {args.topic_write!r}" if args.topic_write else ""))
    for scenario in args.scenarios:
        small = count(src, scenario, args.small, args.large, args.exchange, args.ack,
                      args.topic_write)
        large = count(src, scenario, args.large, args.large, args.exchange, args.ack,
                      args.topic_write)
        per = (large - small) / (args.large - args.small)
        print(f"{scenario:8s} {per:10.0f} instructions/message", flush=True)


if __name__ == "__main__":
    main()
