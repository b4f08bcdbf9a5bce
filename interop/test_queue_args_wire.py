"""Queue arguments as raw Queue.Declare frames (each value's integer width chosen here,
which no client library lets a test do), on both brokers: the cases of
tests/test_queue_args_wire.py, so that what the unit tests assert is RabbitMQ's answer.

The one difference is ours by design (README): ``x-delivery-limit`` on a classic queue is
implemented here and refused by RabbitMQ 3.10.
"""
from __future__ import annotations

import struct
import time

import pytest
from pamqp import commands as C
from raw_support import RawClient, frame, method, publish_frames
from tests.amqp_bytes import INT, args_table as table, sstr as ss, v_bool, v_int, v_str


class Session:
    def __init__(self, broker):
        self.c = RawClient(broker.host, broker.port)
        assert self.c.handshake() is None
        self.queues: list[str] = []

    def declare(self, queue: str, args: bytes, durable: bool = False,
                passive: bool = False) -> str:
        """"ok", or "CODE TEXT" of the Channel.Close (answered; channel 1 reopened)."""
        if queue not in self.queues:
            self.queues.append(queue)
        self.c.send(frame(1, 1, struct.pack(">HH", 50, 10) + b"\x00\x00" + ss(queue) +
                          bytes((passive | durable << 1,)) + args))
        while True:
            got = self.c.read_frame()
            assert got is not None, "no answer to Queue.Declare"
            f = got[1]
            if f.name == "Queue.DeclareOk":
                return "ok"
            if f.name == "Channel.Close":
                self.c.send(method(1, C.Channel.CloseOk()))
                assert self.c.rpc(1, C.Channel.Open(), "Channel.OpenOk") is not None
                return f"{f.reply_code} {f.reply_text}"
            assert f.name != "Connection.Close", f.reply_text

    def close(self) -> None:
        for q in self.queues:
            self.c.rpc(1, C.Queue.Delete(queue=q), "Queue.DeleteOk")
        self.c.sock.close()


@pytest.fixture
def s(broker):
    session = Session(broker)
    yield session
    session.close()


def inequivalent(arg: str, queue: str, received: str, current: str) -> str:
    return (f"406 PRECONDITION_FAILED - inequivalent arg '{arg}' for queue '{queue}' in vhost "
            f"'/': received {received} but current is {current}")


KNOWN = [
    ("x-message-ttl", v_int("I", 1000), v_int("I", 2000), "1000", "2000", "signedint"),
    ("x-expires", v_int("I", 60000), v_int("I", 70000), "60000", "70000", "signedint"),
    ("x-max-length", v_int("I", 10), v_int("I", 11), "10", "11", "signedint"),
    ("x-max-length-bytes", v_int("I", 1000), v_int("I", 1001), "1000", "1001", "signedint"),
    ("x-overflow", v_str("reject-publish"), v_str("drop-head"), "reject-publish",
     "drop-head", "longstr"),
    ("x-dead-letter-exchange", v_str("dlx"), v_str("dlx2"), "dlx", "dlx2", "longstr"),
    ("x-max-priority", v_int("I", 10), v_int("I", 9), "10", "9", "signedint"),
    ("x-single-active-consumer", v_bool(True), v_bool(False), "true", "false", "bool"),
]


@pytest.mark.parametrize("arg, value, other, shown, other_shown, type_name", KNOWN,
                         ids=[k[0] for k in KNOWN])
def test_known_queue_args_kept_and_compared(s, broker, arg, value, other, shown,
                                            other_shown, type_name):
    q = broker.name("args")
    assert s.declare(q, table((arg, value))) == "ok"
    assert s.declare(q, table((arg, value))) == "ok"
    assert s.declare(q, table((arg, other))) == \
        inequivalent(arg, q, f"'{other_shown}'", f"'{shown}'")
    assert s.declare(q, table()) == \
        inequivalent(arg, q, "none", f"the value '{shown}' of type '{type_name}'")
    assert s.declare(q, table((arg, other)), passive=True) == "ok"


def test_x_delivery_limit_on_a_classic_queue(s, broker):
    q = broker.name("dl")
    got = s.declare(q, table(("x-delivery-limit", v_int("I", 5))))
    if broker.kind == "rabbitmq":
        assert got == (f"406 PRECONDITION_FAILED - invalid arg 'x-delivery-limit' for queue "
                       f"'{q}' in vhost '/' of queue type rabbit_classic_queue")
        return
    assert got == "ok"
    assert s.declare(q, table(("x-delivery-limit", v_int("I", 6)))) == \
        inequivalent("x-delivery-limit", q, "'6'", "'5'")


def test_x_max_priority_delivers_highest_priority_first(s, broker):
    q = broker.name("prio")
    assert s.declare(q, table(("x-max-priority", v_int("I", 10)))) == "ok"
    for prio in (1, 5, 0, 9, 5):
        # priority only: flags 0x0800, one octet
        s.c.send(publish_frames(1, b"\x08\x00" + bytes((prio,)), str(prio).encode(),
                                routing_key=q))
    # RabbitMQ enqueues asynchronously: all five in before the first get
    deadline = time.monotonic() + 5
    while s.c.rpc(1, C.Queue.Declare(queue=q, passive=True), "Queue.DeclareOk") \
            .message_count < 5:
        assert time.monotonic() < deadline, "the five messages were not all queued"
        time.sleep(0.02)
    got = []
    for _ in range(5):
        assert s.c.rpc(1, C.Basic.Get(queue=q, no_ack=True), "Basic.GetOk") is not None
        s.c.read_frame()                      # the content header
        got.append(s.c.read_frame()[1].value)
    assert got == [b"9", b"5", b"5", b"1", b"0"]


@pytest.mark.parametrize("arg, value", [("x-queue-version", 2), ("x-max-length", 10)])
@pytest.mark.parametrize("first", list(INT))
def test_queue_int_arg_compared_across_int_types(s, broker, arg, value, first):
    q = broker.name("width")
    assert s.declare(q, table((arg, v_int(first, value)))) == "ok"
    for width in INT:
        assert s.declare(q, table((arg, v_int(width, value)))) == "ok", width
    for width in ("l", "b"):
        assert s.declare(q, table((arg, v_int(width, value + 1)))) == \
            inequivalent(arg, q, f"'{value + 1}'", f"'{value}'")


@pytest.mark.parametrize("arg", ["x-message-ttl", "x-expires", "x-max-length",
                                 "x-max-length-bytes", "x-max-priority"])
def test_integer_arg_given_as_a_timestamp_refused(s, broker, arg):
    """A timestamp is a 64-bit integer on the wire, but not one of RabbitMQ's integer
    argument types (rabbit_amqqueue's check_int_arg)."""
    q = f"ts-{arg}-{time.time_ns()}"
    got = s.declare(q, table((arg, b"T" + struct.pack(">Q", 1000))))
    assert got == (f"406 PRECONDITION_FAILED - invalid arg '{arg}' for queue '{q}' in vhost "
                   "'/': \"expected integer, got timestamp\""), got
