"""Queue arguments through the wire (raw Queue.Declare frames into the sans-I/O core, so
that each value's integer width is the test's choice), answered as RabbitMQ 3.10 answers
them: every case here was run against the reference broker, and
interop/test_queue_args_wire.py runs the same cases on both.

- Each argument RabbitMQ implements for a classic queue is accepted, kept, and compared on
  redeclare: another value, or none, is 406 with RabbitMQ's text.
- ``x-delivery-limit`` is ours on a classic queue (README: it works on every queue, as in
  LavinMQ); RabbitMQ 3.10 refuses it there ("invalid arg 'x-delivery-limit' for queue ...
  of queue type rabbit_classic_queue").  Kept and compared as the others.
- ``x-max-priority``: messages come out highest priority first, FIFO within one.
- An integer argument is compared by value across the seven integer widths (b B s u I i l):
  any width redeclares a queue declared with any other.
"""
from __future__ import annotations

import struct

import pytest
from pamqp import commands as C

from .amqp_bytes import INT, args_table as table, sstr as ss, v_bool, v_int, v_str
from .sim import close_frame, connected, names


def declare(c, queue: str, args: bytes, durable: bool = True, passive: bool = False) -> str:
    """Send one Queue.Declare with the raw table ``args``: "ok", or "CODE TEXT" of the
    Channel.Close (answered, and channel 1 opened again)."""
    payload = struct.pack(">HH", 50, 10) + b"\x00\x00" + ss(queue) + \
        bytes((passive | durable << 1,)) + args
    c.send_raw(struct.pack(">BHI", 1, 1, len(payload)) + payload + b"\xce")
    frames = c.recv()
    if names(frames) == ["Queue.DeclareOk"]:
        return "ok"
    close = close_frame(frames, 1)
    c.rpc(1, C.Channel.CloseOk())
    c.open_channel(1)
    return f"{close.reply_code} {close.reply_text}"


def inequivalent(arg: str, queue: str, received: str, current: str) -> str:
    return (f"406 PRECONDITION_FAILED - inequivalent arg '{arg}' for queue '{queue}' in vhost "
            f"'/': received {received} but current is {current}")


# (argument, value, another value, the value as RabbitMQ prints it, its type's name)
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
    # RabbitMQ 3.10 refuses this one on a classic queue; we implement it (module doc)
    ("x-delivery-limit", v_int("I", 5), v_int("I", 6), "5", "6", "signedint"),
]


@pytest.mark.parametrize("arg, value, other, shown, other_shown, type_name", KNOWN,
                         ids=[k[0] for k in KNOWN])
def test_known_queue_args_kept_and_compared(arg, value, other, shown, other_shown,
                                            type_name):
    c = connected()
    assert declare(c, "q", table((arg, value))) == "ok"
    assert declare(c, "q", table((arg, value))) == "ok"
    assert declare(c, "q", table((arg, other))) == \
        inequivalent(arg, "q", f"'{other_shown}'", f"'{shown}'")
    assert declare(c, "q", table()) == \
        inequivalent(arg, "q", "none", f"the value '{shown}' of type '{type_name}'")
    assert declare(c, "q", table((arg, other)), passive=True) == "ok"  # compares nothing
    assert c.broker.vhosts["/"].queues["q"].message_count == 0


def test_x_max_priority_delivers_highest_priority_first():
    c = connected()
    assert declare(c, "pq", table(("x-max-priority", v_int("I", 10))), durable=False) == "ok"
    for prio in (1, 5, 0, 9, 5):
        c.publish(1, "", "pq", str(prio).encode(), C.Basic.Properties(priority=prio))
    got = [c.get(1, "pq", no_ack=True).body for _ in range(5)]
    assert got == [b"9", b"5", b"5", b"1", b"0"]
    assert c.get(1, "pq", no_ack=True) is None


@pytest.mark.parametrize("arg, value", [("x-queue-version", 2), ("x-max-length", 10)])
@pytest.mark.parametrize("first", list(INT))
def test_queue_int_arg_compared_across_int_types_through_the_wire(arg, value, first):
    c = connected()
    assert declare(c, "q", table((arg, v_int(first, value)))) == "ok"
    for width in INT:
        assert declare(c, "q", table((arg, v_int(width, value)))) == "ok", width
    # a different value is still refused, whatever its width
    assert declare(c, "q", table((arg, v_int("l", value + 1)))) == \
        inequivalent(arg, "q", f"'{value + 1}'", f"'{value}'")
    assert declare(c, "q", table((arg, v_int("b", value + 1)))) == \
        inequivalent(arg, "q", f"'{value + 1}'", f"'{value}'")


@pytest.mark.parametrize("arg", ["x-message-ttl", "x-expires", "x-max-length",
                                 "x-max-length-bytes", "x-max-priority", "x-delivery-limit"])
def test_integer_arg_given_as_a_timestamp_refused(arg):
    """A timestamp is a 64-bit integer on the wire, but not one of RabbitMQ's integer
    argument types (check_int_arg): 406, as RabbitMQ 3.10 answers."""
    c = connected()
    assert declare(c, "q", table((arg, b"T" + struct.pack(">Q", 1000)))) == (
        f"406 PRECONDITION_FAILED - invalid arg '{arg}' for queue 'q' in vhost '/': "
        '"expected integer, got timestamp"')
    assert "q" not in c.broker.vhosts["/"].queues
