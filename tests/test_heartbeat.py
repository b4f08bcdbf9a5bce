"""Heartbeats on RabbitMQ's rule (rabbit_heartbeat.erl), time passed in.

Measured against RabbitMQ 3.10 (heartbeat 2 s, a silent client): heartbeats at 1, 2, 3, 4,
5 s after tune-ok, the socket closed at 6.0 s; at heartbeat 1 s: every 0.5 s, closed at 3.0 s.
The receiver looks every timeout and drops the peer at the second look in a row without
inbound bytes (so between 2 and 3 timeouts after its last byte); the sender looks every half
timeout and sends a heartbeat if nothing else was sent since its previous look, and always
at its first look.  ``interop/test_fidelity.py`` checks the drop against both brokers.
"""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands as C

from .sim import Client, names

HEARTBEAT = b"\x08\x00\x00\x00\x00\x00\x00\xce"


def client(heartbeat: int, t0: float = 0.0) -> Client:
    """A client whose tune-ok (and everything else of the handshake) arrives at ``t0``."""
    c = Client(now=t0)
    c.handshake(heartbeat=heartbeat)
    c.open_channel(1)
    return c


def run_until(c: Client, end: float, peer_sends=(), step: float | None = None):
    """Drive the connection as the server does (a timer at each ``next_deadline``, or every
    ``step`` seconds), the peer writing a heartbeat at each time in ``peer_sends``.  Returns
    (times of our heartbeats, time the connection was dropped or None)."""
    sends = sorted(peer_sends)
    beats, t, start, n = [], c.now, c.now, 0
    while t <= end:
        if step is None:
            deadline = c.conn.next_deadline()
            assert deadline is None or deadline > t or not beats or beats[-1] < t, \
                "the next deadline does not move on"
            t = deadline if deadline is not None else end + 1
        else:
            n += 1
            t = start + n * step
        while sends and sends[0] <= min(t, end):
            c.now = sends.pop(0)
            c.send_raw(HEARTBEAT)
        if t > end:
            break
        frames = c.tick(t)
        assert set(names(frames)) <= {"Heartbeat"}, frames
        beats += [t] * len(frames)
        if c.conn.should_close:
            assert frames == []  # a timeout closes the socket, no Connection.Close
            return beats, t
    return beats, None


def test_silent_peer_at_heartbeat_2_is_dropped_after_6_seconds_as_rabbitmq():
    c = client(2)
    beats, dropped = run_until(c, 20.0)
    assert dropped == 6.0
    assert beats == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_silent_peer_at_heartbeat_1_is_dropped_after_3_seconds_as_rabbitmq():
    beats, dropped = run_until(client(1), 10.0, step=0.05)
    assert dropped == pytest.approx(3.0)
    assert beats == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.5])


@given(timeout=st.integers(1, 600), t0=st.floats(0, 1e6),
       last=st.floats(0, 20), step=st.sampled_from([None, 0.01, 0.37]))
def test_silent_peer_dropped_between_two_and_three_timeouts(timeout, t0, last, step):
    c = client(timeout, t0)
    last_byte = t0 + last * timeout
    sends = [t0 + k * 0.9 * timeout for k in range(int(last / 0.9) + 1)] + [last_byte]
    sends = [s for s in sends if s <= last_byte]
    tick_slack = (step or 0) * timeout
    _, dropped = run_until(c, last_byte + 4 * timeout, sends,
                           step=None if step is None else step * timeout)
    assert dropped is not None
    assert 2 * timeout < dropped - last_byte <= 3 * timeout + tick_slack + 1e-6


def test_idle_connection_gets_a_heartbeat_every_half_timeout():
    # the peer keeps the connection alive; its traffic does not stop ours (RabbitMQ's sender
    # looks only at what it sent)
    c = client(10)
    beats, dropped = run_until(c, 100.0, peer_sends=[k * 3.0 for k in range(40)])
    assert dropped is None
    assert beats == [5.0 * k for k in range(1, 21)]


def test_heartbeats_follow_our_last_frame_on_the_half_timeout_grid():
    c = client(10)
    run_until(c, 6.0, peer_sends=[6.0])     # first look at 5 s always sends
    c.now = 7.0
    assert names(c.rpc(1, C.Basic.Qos(prefetch_count=1))) == ["Basic.QosOk"]   # sent at 7 s
    beats, _ = run_until(c, 21.0, peer_sends=[9.0, 18.0])
    # the look at 10 s saw the reply sent at 7 s; the looks at 15 and 20 s saw nothing
    assert beats == [15.0, 20.0]


@pytest.mark.parametrize("now_passed", [False, True])
def test_no_heartbeat_while_we_send_other_frames(now_passed):
    # both ways of taking the output: the server passes the send time, the simulator does
    # not (then the next timer call counts as the send time)
    c = client(10)
    beats = []
    for k in range(1, 200):
        t = k * 0.5
        c.now = t
        c.send(1, C.Basic.Qos(prefetch_count=1))   # the peer asks, we answer
        c.conn.data_to_send(t if now_passed else None)
        c.conn.handle_timer(t)
        if c.conn.data_to_send(t if now_passed else None):
            beats.append(t)
    assert beats == [5.0]   # RabbitMQ's sender always sends at its first look
    assert not c.conn.should_close


def test_our_heartbeats_do_not_count_as_traffic_we_sent():
    c = client(4)
    beats = []
    for k in range(1, 41):
        t = k * 0.5
        c.now = t
        c.send_raw(HEARTBEAT)
        c.conn.handle_timer(t)
        out = c.conn.data_to_send(t)   # a heartbeat taken with its send time
        if out:
            assert out == HEARTBEAT
            beats.append(t)
    assert beats == [2.0 * k for k in range(1, 11)]


def test_any_inbound_byte_resets_the_silence():
    # one byte of a heartbeat frame every 1.9 timeouts: never two looks in a row see nothing
    c = client(10)
    for k in range(1, 40):
        t = k * 19.0
        c.now = t
        c.send_raw(HEARTBEAT[k % 8:k % 8 + 1])
        _, dropped = run_until(c, t + 18.9)
        assert dropped is None, t
    _, dropped = run_until(c, 39 * 19.0 + 40)
    assert dropped is not None and 20 < dropped - 39 * 19.0 <= 30


def test_heartbeat_zero_disables_both():
    c = client(0)
    assert c.conn.next_deadline() is None
    assert c.tick(1e6) == []
    assert not c.conn.should_close


def test_no_heartbeats_before_tune_ok():
    c = Client()
    c.start()
    c.start_ok()
    assert c.tick(4.0) == [] and not c.conn.should_close
    c.now = 4.0
    c.send(0, C.Connection.TuneOk(channel_max=2047, frame_max=131072, heartbeat=2))
    # the grid starts at tune-ok: first look at 5 s
    assert c.tick(4.9) == []
    assert names(c.tick(5.0)) == ["Heartbeat"]
