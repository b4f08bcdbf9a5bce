"""Crash test for deduplication with disk persistence: persistent messages with publisher
confirms to a durable x-message-deduplication exchange (``x-cache-persistence`` unset:
``disk`` on a durable exchange), each with its own id, into a durable queue; SIGKILL
right after the last confirm, restart on the same data directory (the topology is not
redeclared), publish every id again (and a few new ones), then consume: every confirmed
message is there exactly once, intact, and no republished duplicate got through.  The
same through LavinMQ's form (``x-message-deduplication: true`` on a direct exchange).  A
second kill right after the restart, before anything is republished, changes nothing."""
from __future__ import annotations

import shutil
import tempfile
import time

import pika
import pytest

from conftest import start_amqpbroker, stop

pytestmark = pytest.mark.amqpbroker_only("kills and restarts our own broker process")

N = 300
FORMS = {  # exchange name -> (type, arguments, routing key)
    "crash-dedup": ("x-message-deduplication", {"x-cache-size": 10_000}, ""),
    "crash-dedup-lavin": ("direct", {"x-message-deduplication": True, "x-cache-size": 10_000,
                                     "x-cache-ttl": 600_000}, "k"),
}


def connect(port: int) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", port, connection_attempts=1, socket_timeout=5, heartbeat=0))


def body(i: int) -> bytes:
    return b"body-%d" % i + bytes(i % 50)


def publish(ch, x: str, key: str, ids, tag: bytes = b"") -> None:
    for i in ids:
        # every publish is confirmed (BlockingChannel waits for each ack; a nack raises)
        ch.basic_publish(x, key, body(i) + tag, pika.BasicProperties(
            delivery_mode=2, headers={"x-deduplication-header": "id-%d" % i}))


def test_sigkill_keeps_the_window_and_loses_nothing():
    data_dir = tempfile.mkdtemp(prefix="amqpbroker-crash-dedup-")
    proc = None
    try:
        proc, port = start_amqpbroker(data_dir=data_dir)
        conn = connect(port)
        ch = conn.channel()
        ch.confirm_delivery()
        for x, (type_, args, key) in FORMS.items():
            ch.exchange_declare(x, type_, durable=True, arguments=args)
            ch.queue_declare(x + "-q", durable=True)
            ch.queue_bind(x + "-q", x, key)
            publish(ch, x, key, range(N))
            publish(ch, x, key, range(0, N, 10), b"-dup")   # duplicates before the crash
        proc.kill()                                          # right after the last confirm
        proc.wait()
        proc, port = start_amqpbroker(data_dir=data_dir)
        proc.kill()                                          # again, at once
        proc.wait()
        time.sleep(0.2)
        proc, port = start_amqpbroker(data_dir=data_dir)
        conn = connect(port)
        ch = conn.channel()
        ch.confirm_delivery()
        for x, (_type, _args, key) in FORMS.items():
            publish(ch, x, key, range(N), b"-again")         # all inside the window
            publish(ch, x, key, range(N, N + 5))             # new ids route
        for x in FORMS:
            seen: dict[int, int] = {}
            while True:
                method, props, got = ch.basic_get(x + "-q", auto_ack=True)
                if method is None:
                    break
                i = int(props.headers["x-deduplication-header"][3:])
                seen[i] = seen.get(i, 0) + 1
                assert got == body(i), f"{x}: a duplicate got through: {got!r}"
                assert props.delivery_mode == 2
            assert sorted(seen) == list(range(N + 5)), \
                f"{x}: missing {sorted(set(range(N + 5)) - set(seen))}"
            assert all(n == 1 for n in seen.values()), f"{x}: delivered twice"
        conn.close()
    finally:
        if proc is not None:
            stop(proc)
        shutil.rmtree(data_dir, ignore_errors=True)
