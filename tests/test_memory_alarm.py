"""The memory alarm (RabbitMQ's resource alarm): publishing connections are blocked, told
with Connection.Blocked when they asked for it, and not read until the alarm clears."""
from pamqp import commands as C

from amqpbroker.broker import Broker

from .sim import connected, name


def test_queued_bytes_counts_ready_and_unacked_messages():
    b = Broker()
    c = connected(broker=b)
    c.declare(1, "q")
    assert b.queued_bytes() == 0
    for _ in range(3):
        c.publish(1, "", "q", b"x" * 100)
    assert b.queued_bytes() == 3 * (100 + Broker.MESSAGE_OVERHEAD)
    c.get(1, "q", no_ack=False)  # unacked: still held
    assert b.queued_bytes() == 2 * (100 + Broker.MESSAGE_OVERHEAD) + Broker.MESSAGE_OVERHEAD


def test_alarm_blocks_publishers_only_and_clears():
    b = Broker()
    pub, sub = connected(broker=b), connected(broker=b)
    pub.declare(1, "q")
    pub.publish(1, "", "q", b"x")
    b.set_memory_alarm(True)
    blocked = [f for ch, f in pub.recv() if name(f) == "Connection.Blocked"]
    assert len(blocked) == 1 and blocked[0].reason == "low on memory"
    assert not pub.conn.wants_read        # its socket is not read while blocked
    assert sub.conn.wants_read and not [f for ch, f in sub.recv()
                                        if name(f) == "Connection.Blocked"]
    b.set_memory_alarm(False)
    assert [name(f) for ch, f in pub.recv()] == ["Connection.Unblocked"]
    assert pub.conn.wants_read


def test_connection_that_starts_publishing_during_an_alarm_is_blocked():
    b = Broker()
    c = connected(broker=b)
    c.declare(1, "q")
    b.set_memory_alarm(True)
    assert c.conn.wants_read               # not a publisher yet
    frames = c.publish(1, "", "q", b"x")
    assert not c.conn.wants_read
    assert "Connection.Blocked" in [name(f) for ch, f in frames]


def test_blocked_without_capability_gets_no_frame_but_is_held():
    b = Broker()
    c = connected(broker=b, capabilities={})
    c.declare(1, "q")
    c.publish(1, "", "q", b"x")
    b.set_memory_alarm(True)
    assert c.recv() == [] and not c.conn.wants_read


def test_a_blocked_connection_is_not_timed_out_by_heartbeats():
    b = Broker()
    c = connected(broker=b, heartbeat=10)
    c.declare(1, "q")
    c.publish(1, "", "q", b"x")
    b.set_memory_alarm(True)
    c.conn.handle_timer(100.0)             # silent for 10 heartbeats, but we stopped reading
    assert not c.conn.should_close
