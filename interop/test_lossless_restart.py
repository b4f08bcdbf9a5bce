"""Durable values stay what the client sent across a restart of our broker: names with any
bytes RabbitMQ accepts, arguments pamqp could not re-encode (double 1e300, invalid-UTF-8
longstr, byte arrays, 64-bit timestamps), a headers binding on the double 0.1 and on a
200-byte key.  The set-up and the checks run against both brokers; the restart in between
only against ours (RabbitMQ cannot be restarted in CI)."""
from __future__ import annotations

import struct
import tempfile
import uuid

import pytest

import rawamqp as R
from conftest import start_amqpbroker, stop
from rawamqp import Raw, content, ls, method, ss, table

D01 = b"d" + struct.pack(">d", 0.1)
F01 = b"f" + struct.pack(">f", 0.1)
KEY200 = b"k" * 200
ARGS = table((b"x-max-length", b"l" + struct.pack(">q", 1000)),
             (b"x-custom-double", b"d" + struct.pack(">d", 1e300)),
             (b"x-custom-str", b"S" + ls(b"\xff\xfe not UTF-8")),
             (b"x-custom-bin", b"x" + ls(b"\x00\x01\x02")),
             (b"x-custom-ts", b"T" + struct.pack(">Q", 2**64 - 1)),
             (b"x-custom-u", b"i" + struct.pack(">I", 2**32 - 1)))
BARGS = table((b"x-match", b"S" + ls(b"any")), (b"d", D01), (KEY200, b"S" + ls(b"v")),
              (b"bin", b"x" + ls(b"\xff")))


class Names:
    def __init__(self):
        u = uuid.uuid4().hex[:8].encode()
        self.x = b"x-\xed\xa0\x80-" + u
        self.q = "队列-".encode() + u
        self.key = b"rk-\xf4\x90\x80\x80-" + u


def set_up(r: Raw, n: Names) -> None:
    assert r.call(40, 10, R.exchange_declare(n.x, b"headers", durable=True, args=ARGS)) == \
        b"\x00\x28\x00\x0b"
    assert r.call(50, 10, R.queue_declare(n.q, durable=True, args=ARGS)) == \
        b"\x00\x32\x00\x0b" + ss(n.q) + b"\x00" * 8
    assert r.call(50, 20, R.queue_bind(n.q, n.x, n.key, BARGS)) == b"\x00\x32\x00\x15"
    # a persistent message with an invalid-UTF-8 routing key, confirmed (channel 2)
    r.send(method(2, 20, 10, b"\x00"))
    r.expect(20, 11)
    r.send(method(2, 85, 10, b"\x00"))
    r.expect(85, 11)
    r.send(method(2, 60, 40, R.publish(n.x, n.key + b"\xff")) + content(
        2, b"kept", b"\x30\x00" + table((b"d", D01)) + b"\x02"))
    r.expect(60, 80)  # confirmed


def check(r: Raw, n: Names) -> None:
    # declaring again with the same bytes is equivalent: the queue is found by its name
    ok = r.call(50, 10, R.queue_declare(n.q, durable=True, args=ARGS))
    assert ok[:4 + 1 + len(n.q)] == b"\x00\x32\x00\x0b" + ss(n.q)
    m = r.call(60, 70, R.get(n.q))
    assert m[:4] == b"\x00\x3c\x00\x47", m
    assert m.endswith(ss(n.x) + ss(n.key + b"\xff") + b"\x00\x00\x00\x00")
    _t, _c, header = r.frame()
    assert header[12:] == b"\x30\x00" + table((b"d", D01)) + b"\x02"
    assert r.frame()[2] == b"kept"
    for props, expected in ((table((b"d", D01)), True), (table((b"d", F01)), False),
                            (table((KEY200, b"S" + ls(b"v"))), True),
                            (table((KEY200[:128], b"S" + ls(b"v"))), False)):
        r.send(method(1, 60, 40, R.publish(n.x, b"")) + content(1, b"m", b"\x20\x00" + props))
        got = r.call(60, 70, R.get(n.q))
        assert (got[:4] == b"\x00\x3c\x00\x47") is expected, props
        if expected:
            r.frame()
            r.frame()


def tear_down(r: Raw, n: Names) -> None:
    r.call(50, 40, R.queue_delete(n.q))
    r.call(40, 20, R.exchange_delete(n.x))


def test_durable_values_before_a_restart(broker):
    n = Names()
    r = Raw(broker.host, broker.port)
    try:
        set_up(r, n)
        check(r, n)
    finally:
        tear_down(r, n)
        r.close()


@pytest.mark.amqpbroker_only("restarts our own broker process")
@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_durable_values_survive_a_restart_byte_exact(how):
    data = tempfile.mkdtemp(prefix="amqpbroker-lossless-")
    n = Names()
    proc, port = start_amqpbroker(data_dir=data)
    try:
        r = Raw("127.0.0.1", port)
        set_up(r, n)
        r.close()
    finally:
        if how == "sigkill":
            proc.kill()
            proc.wait()
        else:
            stop(proc)
    proc, port = start_amqpbroker(data_dir=data)
    try:
        r = Raw("127.0.0.1", port)
        check(r, n)
        tear_down(r, n)
        r.close()
    finally:
        stop(proc)
