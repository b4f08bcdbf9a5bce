"""Crash test for delayed delivery: persistent messages with publisher confirms to a durable
x-delayed-message exchange (delays 0.3 to 3 s), SIGKILL while some are still pending and
some already released into the durable queue, restart on the same data directory (the
topology is not redeclared), then consume: every confirmed message arrives exactly once,
intact, with x-delay negated; those that fell due while the broker was down come at start.
A second kill right after the restart, before anything is consumed, changes nothing."""
from __future__ import annotations

import shutil
import tempfile
import time

import pika
import pytest

from conftest import start_amqpbroker, stop

pytestmark = pytest.mark.amqpbroker_only("kills and restarts our own broker process")

X, Q, N = "crash-delayed", "crash-delayed-q", 300


def connect(port: int) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", port, connection_attempts=1, socket_timeout=5, heartbeat=0))


def delay_of(i: int) -> int:
    return 300 + (i * 7919) % 2700


def test_sigkill_loses_no_confirmed_delayed_message():
    data_dir = tempfile.mkdtemp(prefix="amqpbroker-crash-delayed-")
    proc = None
    try:
        proc, port = start_amqpbroker(data_dir=data_dir)
        conn = connect(port)
        ch = conn.channel()
        ch.exchange_declare(X, "x-delayed-message", durable=True,
                            arguments={"x-delayed-type": "direct"})
        ch.queue_declare(Q, durable=True)
        ch.queue_bind(Q, X, "k")
        ch.confirm_delivery()
        start = time.monotonic()
        for i in range(N):
            ch.basic_publish(X, "k", b"body-%d" % i + bytes(i % 50), pika.BasicProperties(
                delivery_mode=2, message_id=str(i), headers={"x-delay": delay_of(i)}))
        # every publish is confirmed (BlockingChannel waits for each ack); kill when some
        # have been released (delays from 0.3 s) and most have not (up to 3 s)
        time.sleep(max(0.0, start + 0.8 - time.monotonic()))
        proc.kill()
        proc.wait()
        proc, port = start_amqpbroker(data_dir=data_dir)
        proc.kill()                          # again, before anything is consumed
        proc.wait()
        time.sleep(0.2)
        proc, port = start_amqpbroker(data_dir=data_dir)
        conn = connect(port)
        ch = conn.channel()
        seen: dict[int, int] = {}
        deadline = time.monotonic() + 15
        while len(seen) < N and time.monotonic() < deadline:
            method, props, body = ch.basic_get(Q, auto_ack=True)
            if method is None:
                time.sleep(0.05)
                continue
            i = int(props.message_id)
            seen[i] = seen.get(i, 0) + 1
            assert body == b"body-%d" % i + bytes(i % 50)
            assert props.headers["x-delay"] == -delay_of(i)
            assert props.delivery_mode == 2
        assert sorted(seen) == list(range(N)), f"missing: {sorted(set(range(N)) - set(seen))}"
        assert all(n == 1 for n in seen.values()), "delivered twice"
        time.sleep(0.3)
        assert ch.basic_get(Q, auto_ack=True)[0] is None
        conn.close()
    finally:
        if proc is not None:
            stop(proc)
        shutil.rmtree(data_dir, ignore_errors=True)
