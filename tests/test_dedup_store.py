"""Deduplication caches with ``disk`` persistence (dedup.py, the stores' dedup table): the
store methods on both stores; the default (``disk`` on a durable exchange, ``memory``
otherwise or when asked); the confirm of a publish, and of its duplicate, only after the
commit that holds the entry; a restart through SQLite keeping the window (wall-clock
expiry, size), forgetting it with ``memory``; a deleted exchange's rows gone, even for a
name declared again before the commit; a huge TTL clamped into the store."""
from __future__ import annotations

import time

import pytest
from pamqp import commands as C

from amqpbroker.broker import Broker
from amqpbroker.dedup import MAX_TTL
from amqpbroker.message import Message
from amqpbroker.store import MemoryStore
from amqpbroker.store.sqlite import SQLiteStore

from .sim import connected, names

# the wall clock is the test clock plus WALL, set per test near the real one, so that the
# recovery Broker() runs on the real clocks sees the same window as the test's own
WALL = 0.0


@pytest.fixture(autouse=True)
def _wall():
    global WALL
    WALL = time.time() - 1000.0


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def msg(dedup, mode=2) -> Message:
    return Message("d", "k", C.Basic.Properties(headers={"x-deduplication-header": dedup},
                                                delivery_mode=mode).marshal(), b"body")


class World:
    """A broker on SQLite in ``dir``, a clock for both of the vhost's clocks, a durable
    exchange ``d`` (declared unless it is recovered) bound to the durable queue ``q``."""

    def __init__(self, dir_, args=None, declare=True, clock=None):
        self.store = SQLiteStore(dir_)
        self.clock = clock or Clock()
        self.broker = Broker(store=self.store)
        self.vh = self.broker.vhosts["/"]
        self.vh.clock = self.clock
        self.vh.wall_clock = lambda: self.clock.now + WALL
        # recovery ran in Broker() on the real clocks: start again on this one
        self.vh.exchanges.pop("d", None)
        self.vh.queues.pop("q", None)
        self.vh.restore(self.store.recover())
        if declare:
            self.ex = self.vh.declare_exchange(
                "d", "x-message-deduplication", False, True, False, False,
                {"x-cache-size": 100, **(args or {})})
            self.q = self.vh.declare_queue("q", False, True, False, False, {}, None)
            self.vh.bind("d", self.q, "", {})
        else:
            self.ex, self.q = self.vh.exchanges["d"], self.vh.queues["q"]

    def publish(self, dedup, mode=2):
        return self.vh.publish(self.ex, msg(dedup, mode))

    def sync(self):
        self.store.sync_blocking()
        self.broker.after_sync()

    def close(self):
        self.store.close()


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    s = MemoryStore() if request.param == "memory" else SQLiteStore(str(tmp_path))
    yield s
    s.close()


def committed(s):
    if s.durable:
        s.sync_blocking()


def test_store_dedup_rows_in_seq_order(store):
    store.put_dedup("/", "d", b"Sb", 5000, 2)
    store.put_dedup("/", "d", b"Sa", None, 1)
    store.put_dedup("/", "other", b"Sa", None, 1)
    store.put_dedup("/", "d", b"Sc", 7000, 3)
    committed(store)
    assert store.dedup_entries("/", "d") == [(b"Sa", None, 1), (b"Sb", 5000, 2),
                                             (b"Sc", 7000, 3)]
    store.remove_dedup("/", "d", b"Sb")
    store.put_dedup("/", "d", b"Sa", 9000, 4)  # the same id again: replaced, now last
    committed(store)
    assert store.dedup_entries("/", "d") == [(b"Sc", 7000, 3), (b"Sa", 9000, 4)]
    store.drop_dedup("/", "d")
    assert store.dedup_entries("/", "d") == []  # dropped: not read back, even uncommitted
    committed(store)
    assert store.dedup_entries("/", "d") == []
    assert store.dedup_entries("/", "other") == [(b"Sa", None, 1)]


def test_persistence_defaults(tmp_path):
    w = World(str(tmp_path))
    assert w.ex.cache.store is w.store                      # durable, unset: disk
    mem = w.vh.declare_exchange("m", "x-message-deduplication", False, True, False, False,
                                {"x-cache-size": 5, "x-cache-persistence": "memory"})
    assert mem.cache.store is None                          # asked for memory
    tr = w.vh.declare_exchange("t", "direct", False, False, False, False,
                               {"x-message-deduplication": True,
                                "x-cache-persistence": "disk"})
    assert tr.cache.store is None                           # transient: nothing outlives it
    w.close()
    b = Broker()                                            # the memory store: never disk
    ex = b.vhosts["/"].declare_exchange("d", "x-message-deduplication", False, True, False,
                                        False, {"x-cache-size": 5})
    assert ex.cache.store is None


def test_confirm_waits_for_the_entry_and_the_duplicate_for_the_first(tmp_path):
    w = World(str(tmp_path))
    _, t1 = w.publish("a", mode=1)          # transient message: the entry still waits
    assert isinstance(t1, int) and t1 > w.store.synced
    _, t2 = w.publish("a")                  # its duplicate: waits for the same commit
    assert isinstance(t2, int) and t2 > w.store.synced
    w.sync()
    _, t3 = w.publish("a")
    assert t3 is True                       # committed: a duplicate is confirmed at once
    w.close()


def test_wire_confirm_only_after_the_commit(tmp_path):
    store = SQLiteStore(str(tmp_path))
    broker = Broker(store=store)
    c = connected(broker=broker)
    c.call(1, C.Exchange.Declare(exchange="d", exchange_type="x-message-deduplication",
                                 durable=True, arguments={"x-cache-size": 10}),
           "Exchange.DeclareOk")
    c.declare(1, "q")  # transient queue: only the entry is stored
    c.call(1, C.Queue.Bind(queue="q", exchange="d"), "Queue.BindOk")
    c.rpc(1, C.Confirm.Select())
    p = C.Basic.Properties(message_id="x1")
    assert c.publish(1, "d", "", b"1", p) == []
    assert c.publish(1, "d", "", b"2", p) == []
    store.sync_blocking()
    broker.after_sync()
    frames = c.recv()
    assert names(frames) == ["Basic.Ack"] and frames[0][1].multiple
    store.close()


def test_restart_keeps_the_window(tmp_path):
    d = str(tmp_path)
    w = World(d, {"x-cache-ttl": 10_000})
    w.publish("a")
    w.publish("b", mode=1)
    w.clock.now += 5
    w.publish("c")
    w.sync()
    w.close()
    w = World(d, declare=False, clock=Clock(1000.0 + 8))    # 8 s after a and b, 3 after c
    assert len(w.ex.cache) == 3
    n = w.q.message_count                                    # a and c, recovered
    for k in ("a", "b", "c"):
        w.publish(k)
    assert w.q.message_count == n and w.ex.counters.drop_duplicate == 3
    w.close()
    w = World(d, declare=False, clock=Clock(1000.0 + 12))   # a and b out of the window
    assert list(w.ex.cache.entries) == [b"Sc"]
    w.publish("a")
    w.publish("c")
    assert w.ex.counters.drop_duplicate == 1
    w.close()


def test_memory_persistence_forgets_at_restart(tmp_path):
    d = str(tmp_path)
    w = World(d, {"x-cache-persistence": "memory"})
    _, t = w.publish("a")
    w.sync()
    w.close()
    w = World(d, declare=False)
    assert len(w.ex.cache) == 0
    w.close()


def test_size_is_kept_in_the_store_too(tmp_path):
    d = str(tmp_path)
    w = World(d, {"x-cache-size": 3})
    w.vh.declare_exchange("d", "x-message-deduplication", False, True, False, False,
                          {"x-cache-size": 3})
    for k in "abcde":
        w.publish(k)
    w.sync()
    assert [k for k, _e, _s in w.store.dedup_entries("/", "d")] == [b"Sc", b"Sd", b"Se"]
    w.close()


def test_deleted_exchange_forgets_even_when_declared_again_before_the_commit(tmp_path):
    d = str(tmp_path)
    w = World(d)
    w.publish("a")
    w.sync()
    w.vh.delete_exchange("d", False)
    ex = w.vh.declare_exchange("d", "x-message-deduplication", False, True, False, False,
                               {"x-cache-size": 100})
    assert len(ex.cache) == 0
    w.sync()
    assert w.store.dedup_entries("/", "d") == []
    w.close()


def test_huge_ttl_is_clamped_into_the_store(tmp_path):
    d = str(tmp_path)
    w = World(d, {"x-cache-ttl": (1 << 63) - 1})
    w.publish("a")
    w.vh.publish(w.ex, Message("d", "k", C.Basic.Properties(
        headers={"x-deduplication-header": "b", "x-cache-ttl": (1 << 63) - 1}).marshal(), b""))
    w.sync()                                 # no overflow in the commit
    (_k, expires, _s), _ = w.store.dedup_entries("/", "d")
    assert expires == int((1000.0 + WALL) * 1000) + MAX_TTL
    w.close()


def test_queue_level_ids_come_back_with_their_messages(tmp_path):
    d = str(tmp_path)
    store = SQLiteStore(d)
    vh = Broker(store=store).vhosts["/"]
    q = vh.declare_queue("u", False, True, False, False, {"x-message-deduplication": True},
                         None)
    for k in ("a", "b"):
        vh.publish(vh.default_exchange, Message("", "u", msg(k).props, b""))
    vh.publish(vh.default_exchange, Message("", "u", msg("c", mode=1).props, b""))
    store.sync_blocking()
    store.close()
    store = SQLiteStore(d)
    vh = Broker(store=store).vhosts["/"]
    q = vh.queues["u"]
    assert q.message_count == 2                       # a and b: persistent
    for k in ("a", "b", "c"):
        vh.publish(vh.default_exchange, Message("", "u", msg(k).props, b""))
    assert q.message_count == 3 and q.counters.drop_duplicate == 2   # c was not kept
    store.close()
