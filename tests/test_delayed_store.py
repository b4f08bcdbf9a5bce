"""Persistent delayed messages (delayset.py and the stores' delayed table), with the time
passed in: the store methods on both stores; a persistent delayed publish on a durable
exchange confirmed only after the sync that covers its row; a restart through SQLite in a
tmp dir (pending ones released when due, overdue ones at once, a deleted exchange's gone);
the RAM window (only about twice ``WINDOW`` stored messages in memory, refilled in order,
rows not yet committed never skipped), against a model with random delays and syncs."""
from __future__ import annotations

import random
import time

import pytest
from pamqp import commands as C

from amqpbroker import delayset
from amqpbroker.broker import Broker
from amqpbroker.message import Message
from amqpbroker.store import MemoryStore
from amqpbroker.store.sqlite import SQLiteStore

from .sim import connected, names

PERSISTENT = 2


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def props(delay, n=0, mode=PERSISTENT) -> bytes:
    return C.Basic.Properties(headers={"x-delay": delay, "n": n}, delivery_mode=mode,
                              content_type="text/plain").marshal()


class World:
    """A broker on SQLite in ``dir``, its vhost on a fake monotonic clock, a durable
    delayed exchange ``d`` bound to the durable queue ``q`` by key ``k``."""

    def __init__(self, dir_, declare=True, wall=None):
        self.dir = dir_
        self.store = SQLiteStore(dir_)
        self.broker = Broker(store=self.store)
        self.vh = self.broker.vhosts["/"]
        self.clock = Clock()
        self.vh.clock = self.clock
        if wall is not None:
            self.vh.wall_clock = wall
        if declare:
            self.ex = self.vh.declare_exchange("d", "x-delayed-message", False, True, False,
                                               False, {"x-delayed-type": "direct"})
            self.q = self.vh.declare_queue("q", False, True, False, False, {}, None)
            self.vh.bind("d", self.q, "k", {})
        else:
            self.ex, self.q = self.vh.exchanges.get("d"), self.vh.queues.get("q")

    def publish(self, delay, n=0, mode=PERSISTENT):
        return self.vh.publish(self.ex, Message("d", "k", props(delay, n, mode), b"b%d" % n))

    def sync(self):
        self.store.sync_blocking()
        self.broker.after_sync()

    def advance(self, seconds):
        self.clock.now += seconds
        return self.vh.scheduler.run_due(self.clock.now)

    def taken(self) -> list[int]:
        out = []
        while self.q.message_count:
            out.append(self.q.take(self.clock.now).msg.headers["n"])
        return out

    def close(self):
        self.store.close()


def restarted(dir_) -> World:
    """A new broker on the directory, on the real clocks (recovery reads them)."""
    return World(dir_, declare=False)


# ---------------------------------------------------------------------- the store


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    s = MemoryStore() if request.param == "memory" else SQLiteStore(str(tmp_path))
    yield s
    s.close()


def committed(s):
    if s.durable:
        s.sync_blocking()


def test_store_delayed_rows_in_due_then_seq_order(store):
    m = Message("d", "rk", props(5), b"body", ("cc1",), ("bcc",))
    for due, seq in [(300, 1), (100, 2), (100, 1), (200, 9)]:
        store.put_delayed("/", "d", due, seq, m)
    store.put_delayed("/", "other", 50, 1, m)
    store.put_delayed("v2", "d", 50, 1, m)
    committed(store)
    rows = store.delayed_after("/", "d", None, 10)
    assert [(d, s) for d, s, _ in rows] == [(100, 1), (100, 2), (200, 9), (300, 1)]
    got = rows[0][2]
    assert (got.exchange, got.routing_key, got.props, got.body, got.cc, got.bcc) == \
        ("d", "rk", m.props, b"body", ("cc1",), ("bcc",))
    assert [(d, s) for d, s, _ in store.delayed_after("/", "d", (100, 2), 2)] == \
        [(200, 9), (300, 1)]
    gen = store.gen
    store.remove_delayed("/", "d", 200, 9)
    assert store.gen > gen
    committed(store)
    assert [(d, s) for d, s, _ in store.delayed_after("/", "d", (100, 1), 5)] == \
        [(100, 2), (300, 1)]
    store.drop_delayed("/", "d")
    committed(store)
    assert store.delayed_after("/", "d", None, 5) == []
    assert len(store.delayed_after("/", "other", None, 5)) == 1
    assert len(store.delayed_after("v2", "d", None, 5)) == 1


def test_sqlite_reads_back_only_what_is_committed_and_after_a_reopen(tmp_path):
    s = SQLiteStore(str(tmp_path))
    s.put_delayed("/", "d", 10, 1, Message("d", "k", props(5), b"x"))
    assert s.delayed_after("/", "d", None, 5) == []  # in the batch only
    s.sync_blocking()
    assert len(s.delayed_after("/", "d", None, 5)) == 1
    s.close()
    s = SQLiteStore(str(tmp_path))
    assert [(d, q) for d, q, _ in s.delayed_after("/", "d", None, 5)] == [(10, 1)]
    s.close()


# ---------------------------------------------------------------------- confirms


def test_persistent_delayed_publish_confirmed_after_the_sync_that_stores_it(tmp_path):
    store = SQLiteStore(str(tmp_path))
    broker = Broker(store=store)
    c = connected(broker=broker)
    c.call(1, C.Exchange.Declare(exchange="d", exchange_type="x-delayed-message", durable=True,
                                 arguments={"x-delayed-type": "direct"}), "Exchange.DeclareOk")
    c.rpc(1, C.Confirm.Select())
    frames = c.publish(1, "d", "k", b"p", C.Basic.Properties(
        headers={"x-delay": 60000}, delivery_mode=2), mandatory=True)
    assert frames == []                      # no return, and no ack before the commit
    store.sync_blocking()
    broker.after_sync()
    frames = c.recv()
    assert names(frames) == ["Basic.Ack"] and frames[0][1].delivery_tag == 1
    # transient: nothing to store, confirmed at once
    frames = c.publish(1, "d", "k", b"t", C.Basic.Properties(headers={"x-delay": 60000}))
    assert names(frames) == ["Basic.Ack"]
    store.close()


def test_what_is_stored_and_what_is_not(tmp_path):
    w = World(str(tmp_path))
    assert isinstance(w.publish(60000, 1)[1], int)              # persistent: a store gen
    assert w.publish(60000, 2, mode=1)[1] is True               # transient: in RAM
    nd = w.vh.declare_exchange("nd", "x-delayed-message", False, False, False, False,
                               {"x-delayed-type": "direct"})
    assert w.vh.publish(nd, Message("nd", "k", props(60000), b""))[1] is True  # transient x
    w.sync()
    assert len(w.store.delayed_after("/", "d", None, 10)) == 1
    assert w.store.delayed_after("/", "nd", None, 10) == []
    w.close()


# ---------------------------------------------------------------------- restart


def test_pending_survive_a_restart_and_are_released_when_due(tmp_path):
    w = World(str(tmp_path))
    for n, delay in enumerate([30_000, 10_000, 20_000]):
        w.publish(delay, n)
    w.publish(5_000, 9, mode=1)  # transient: gone with the process
    w.sync()
    w.close()
    w2 = restarted(str(tmp_path))
    assert w2.q.message_count == 0 and len(w2.ex.delayed) == 3
    first = w2.vh.scheduler.next_deadline()
    assert first == pytest.approx(time.monotonic() + 10, abs=5)
    w2.clock.now = first + 20
    w2.vh.scheduler.run_due(w2.clock.now)
    msgs = []
    while w2.q.message_count:
        msgs.append(w2.q.take(w2.clock.now).msg)
    assert [(m.headers["n"], m.headers["x-delay"]) for m in msgs] == \
        [(1, -10000), (2, -20000), (0, -30000)]
    assert all(m.persistent for m in msgs)
    w2.sync()  # the release moved them: out of the delayed table, into the queue
    assert w2.store.delayed_after("/", "d", None, 10) == []
    w2.close()
    w3 = restarted(str(tmp_path))
    assert w3.q.message_count == 3 and len(w3.ex.delayed) == 0
    w3.close()


def test_those_that_fell_due_while_down_are_released_at_start(tmp_path):
    # the first broker's wall clock an hour back: its 1-minute delays are long past
    w = World(str(tmp_path), wall=lambda: time.time() - 3600)
    w.publish(60_000, 1)
    w.publish(61_000, 2)
    w.sync()
    w.close()
    w2 = restarted(str(tmp_path))
    assert w2.vh.scheduler.next_deadline() <= time.monotonic()
    w2.vh.scheduler.run_due(time.monotonic())
    assert w2.taken() == [1, 2]
    w2.close()


def test_unsynced_are_lost_by_a_crash_and_synced_are_not(tmp_path):
    w = World(str(tmp_path))
    w.publish(60_000, 1)
    w.sync()
    w.publish(60_000, 2)      # still in the batch: never confirmed
    other = SQLiteStore(str(tmp_path))  # what a process started after a SIGKILL reads
    assert [m.headers["n"] for _d, _s, m in other.delayed_after("/", "d", None, 9)] == [1]
    other.db.close()
    w.store.db.close()


def test_deleting_the_exchange_drops_its_stored_messages(tmp_path):
    w = World(str(tmp_path))
    w.publish(60_000, 1)
    w.sync()
    w.vh.delete_exchange("d", False)
    w.sync()
    w.close()
    w2 = restarted(str(tmp_path))
    assert w2.ex is None and w2.store.delayed_after("/", "d", None, 9) == []
    w2.close()


# ---------------------------------------------------------------------- the window


def test_only_a_window_in_ram_refilled_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(delayset, "WINDOW", 4)
    w = World(str(tmp_path))
    delays = [(i * 7919) % 100 * 100 + 100 for i in range(40)]
    for n, d in enumerate(delays):
        w.publish(d, n)
        if n % 5 == 4:
            w.sync()
        assert w.ex.delayed.stored <= 8  # at most twice the window
    w.sync()
    assert len(w.ex.delayed.heap) <= 8
    expected = [n for _d, n in sorted((d, n) for n, d in enumerate(delays))]
    got = []
    for _ in range(120):
        w.advance(0.1)
        got += w.taken()
        w.sync()
        assert w.ex.delayed.stored <= 8
    assert got == expected
    w.close()


def test_a_row_not_yet_committed_is_not_skipped_by_a_refill(tmp_path, monkeypatch):
    monkeypatch.setattr(delayset, "WINDOW", 2)
    w = World(str(tmp_path))
    for n in range(6):
        w.publish(1000 * (n + 1), n)
    w.sync()
    assert w.ex.delayed.horizon is not None  # some are in the store only
    w.publish(10_000, 6)   # beyond the horizon, not committed: RAM keeps it meanwhile
    w.publish(500, 7)      # before the horizon: in the heap
    assert len(w.ex.delayed.unsynced) == 1
    got = []
    for _ in range(12):
        w.advance(1)
        got += w.taken()
    assert got == [7, 0, 1, 2, 3, 4, 5, 6]
    w.close()


@pytest.mark.parametrize("seed", range(6))
def test_window_against_a_model(tmp_path, monkeypatch, seed):
    """Random delays (persistent and transient), syncs and time steps: every message is
    released exactly once, none before its due time, in order of (due, publish)."""
    monkeypatch.setattr(delayset, "WINDOW", 3)
    rnd = random.Random(seed)
    w = World(str(tmp_path))
    due: dict[int, float] = {}
    released: list[int] = []
    n = since_sync = 0
    for _step in range(300):
        r = rnd.random()
        if r < 0.5:
            d = rnd.randint(1, 3000)
            mode = rnd.choice([1, 2, 2])
            w.publish(d, n, mode=mode)
            due[n] = w.clock.now + d / 1000
            n += 1
            since_sync += mode == 2
            # RAM beyond the window: rows not committed yet, and at most a window more
            assert len(w.ex.delayed.unsynced) <= 3 + 1 + since_sync
        elif r < 0.6:
            w.sync()
            since_sync = 0
        else:
            w.advance(rnd.randint(1, 300) / 1000)
            for m in w.taken():
                assert due[m] <= w.clock.now + 1e-3   # (the store keeps whole ms)
                released.append(m)
        assert w.ex.delayed.stored <= 6                # twice the window
    w.sync()
    w.advance(10)
    released += w.taken()
    assert sorted(released) == list(range(n))         # each exactly once
    for a, b in zip(released, released[1:]):           # in due order, to the ms
        assert due[a] <= due[b] + 1e-3, (a, b)
    w.close()


def test_restart_with_a_window(tmp_path, monkeypatch):
    monkeypatch.setattr(delayset, "WINDOW", 4)
    w = World(str(tmp_path))
    for n in range(30):
        w.publish(60_000 + (n * 37) % 30 * 1000, n)
    w.sync()
    w.close()
    w2 = restarted(str(tmp_path))
    assert w2.ex.delayed.stored == 4 and w2.ex.delayed.horizon is not None
    w2.clock.now = time.monotonic() + 200
    got = []
    for _ in range(100):
        w2.vh.scheduler.run_due(w2.clock.now)
        got += w2.taken()
    assert got == [n for _k, n in sorted(((n * 37) % 30, n) for n in range(30))]
    w2.close()
