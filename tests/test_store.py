"""The store conformance suite: every store keeps the Store protocol.

Every store gives back, after ``sync()`` and a reopen (for the memory store: a restart
within the process, the same store object; for SQLite: close and open the directory
again), exactly the definitions and messages put and not deleted, messages in seq order
per queue.  Both keep the ``gen`` / ``synced`` contract the publisher confirms rely on:
every mutation bumps ``gen``; after ``sync()`` returns, ``synced`` covers every mutation
made before the call.  Where they differ, each test says what each guarantees: the memory
store keeps everything at once (``synced == gen`` always) and nothing outlives the process
(a new MemoryStore, as after a crash, is empty); SQLite keeps what was synced through a
crash and loses the batch that was not.  The tests of group commit's timing (a commit in
flight, a cancelled insert) are SQLite's own, below the parametrized ones.
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time

import anyio
import pytest

from amqpbroker.message import Message
from amqpbroker.store import MemoryStore, open_store
from amqpbroker.store.base import BindingDef, ExchangeDef, QueueDef
from amqpbroker.store.sqlite import SQLiteStore

PERSISTENT = bytes([0x10, 0x00, 2])                       # delivery-mode 2 only
# content-type "text/plain", headers {"k": "v"}, delivery-mode 2
RICH = (bytes([0xB0, 0x00]) + bytes([10]) + b"text/plain" +
        (8).to_bytes(4, "big") + bytes([1]) + b"k" + b"S" + (1).to_bytes(4, "big") + b"v" +
        bytes([2]))


def msg(body: bytes, props: bytes = PERSISTENT, exchange: str = "ex", rk: str = "rk",
        cc: tuple = (), bcc: tuple = ()) -> Message:
    return Message(exchange, rk, props, body, cc, bcc)


class Harness:
    """One store under test plus a way to 'restart' it on the same directory."""

    def __init__(self, kind: str, tmp_path):
        self.kind = kind
        self.dir = str(tmp_path / "data")
        self.store = self._open()

    def _open(self):
        if self.kind == "memory":
            return MemoryStore()
        return SQLiteStore(self.dir)

    @property
    def durable(self) -> bool:
        return self.store.durable

    def sync(self) -> None:
        anyio.run(self.store.sync)

    def reopen(self):
        """Close (a clean stop) and open again; returns the recovered state.  The memory
        store's "again" is the same object: what it keeps lives as long as the process."""
        self.store.close()
        if self.kind != "memory":
            self.store = self._open()
        return self.store.recover()

    def crash_reopen(self):
        """What a new process recovers while this one is still open (as after a
        SIGKILL): SQLite, a second handle on the directory, loses the batch not synced;
        memory, a new store, has nothing."""
        if self.kind == "memory":
            return MemoryStore().recover()
        other = SQLiteStore(self.dir)
        try:
            return other.recover()
        finally:
            other.db.close()


def _harness(kind, tmp_path):
    harness = Harness(kind, tmp_path)
    yield harness
    try:
        harness.store.close()
    except sqlite3.ProgrammingError:
        pass


@pytest.fixture(params=["memory", "sqlite"])
def h(request, tmp_path):
    yield from _harness(request.param, tmp_path)


@pytest.fixture
def sq(tmp_path):
    """SQLite only: group commit's timing (a batch in flight, a failed commit)."""
    yield from _harness("sqlite", tmp_path)


def bodies(recovered, vhost="/", queue="q"):
    return [sm.message.body for sm in recovered.messages.get((vhost, queue), [])]


# ---------------------------------------------------------------------- gen / synced


def test_every_mutation_bumps_gen(h):
    s = h.store
    assert s.synced <= s.gen
    g = s.gen
    s.put_exchange(ExchangeDef("/", "x", "direct", False, False, {}, {}))
    s.put_queue(QueueDef("/", "q", False, {}, {}))
    s.put_binding(BindingDef("/", "x", "queue", "q", "rk", {}))
    s.append("/", "q", 1, msg(b"a"), None)
    s.remove("/", "q", 1)
    s.delete_binding(BindingDef("/", "x", "queue", "q", "rk", {}))
    s.delete_queue("/", "q")
    s.delete_exchange("/", "x")
    # an insert cancelled by its remove (SQLite) still counts: confirms stay ordered
    assert s.gen >= g + 8
    if h.durable:
        assert s.synced < s.gen       # the batch waits for its commit
    else:
        assert s.synced == s.gen      # memory keeps it at once: no confirm ever waits
    h.sync()
    assert s.synced == s.gen


def test_sync_with_nothing_to_do(h):
    h.sync()
    h.sync()
    assert h.store.synced == h.store.gen


def test_on_dirty_called_when_there_becomes_something_to_sync(h):
    """``on_dirty`` is called exactly when a mutation leaves the store with something to
    sync (``synced`` was ``gen`` and is no longer): SQLite once per batch, memory never."""
    s = h.store
    calls = []
    s.on_dirty = lambda: calls.append(1)
    expected = 0
    steps = [lambda: s.append("/", "q", 1, msg(b"a"), None),
             lambda: s.append("/", "q", 2, msg(b"b"), None),
             h.sync,
             lambda: s.remove("/", "q", 1),
             lambda: s.put_queue(QueueDef("/", "q", False, {}, {})),
             h.sync,
             h.sync,
             lambda: s.delete_queue("/", "q")]
    for step in steps:
        clean = s.synced == s.gen
        step()
        expected += clean and s.synced < s.gen
        assert len(calls) == expected
    assert expected == (3 if h.durable else 0)


def test_synced_covers_only_what_was_appended_before_sync(sq):
    """A mutation made while a commit is in flight belongs to the next batch: ``synced``
    must not claim it."""
    h = sq
    s = h.store
    s.append("/", "q", 1, msg(b"a"), None)
    gen_before = s.gen
    started = threading.Event()
    release = threading.Event()
    real_commit = s._commit

    def slow_commit(batch):
        started.set()
        release.wait(5)
        real_commit(batch)

    s._commit = slow_commit

    async def main():
        async with anyio.create_task_group() as tg:
            tg.start_soon(s.sync)
            await anyio.to_thread.run_sync(started.wait, 5)
            s.append("/", "q", 2, msg(b"b"), None)  # during the commit
            release.set()
        assert s.synced == gen_before < s.gen
        await s.sync()
        assert s.synced == s.gen

    anyio.run(main)
    s._commit = real_commit
    assert bodies(h.reopen()) == [b"a", b"b"]


def test_concurrent_syncs_are_serialised(sq):
    """Two sync() calls overlapping (the flusher's and the shutdown's) must both commit
    their batches, and ``synced`` must never run ahead of what is durable."""
    h = sq
    s = h.store
    started = threading.Event()
    release = threading.Event()
    real_commit = s._commit
    first = [True]

    def slow_first(batch):
        if first[0]:
            first[0] = False
            started.set()
            release.wait(5)
        real_commit(batch)

    s._commit = slow_first
    seen = []

    async def main():
        s.append("/", "q", 1, msg(b"a"), None)
        async with anyio.create_task_group() as tg:
            tg.start_soon(s.sync)
            await anyio.to_thread.run_sync(started.wait, 5)
            s.append("/", "q", 2, msg(b"b"), None)
            gen2 = s.gen

            async def second():
                await s.sync()
                # when the second sync returns, everything up to gen2 must be durable
                seen.append((s.synced >= gen2, bodies(h.crash_reopen())))

            tg.start_soon(second)
            await anyio.sleep(0.2)
            release.set()

    anyio.run(main)
    s._commit = real_commit
    assert seen == [(True, [b"a", b"b"])]
    assert bodies(h.reopen()) == [b"a", b"b"]


# ---------------------------------------------------------------------- definitions


def test_definitions_round_trip(h):
    s = h.store
    args = {"x-message-ttl": 1000, "x-dead-letter-exchange": "dlx", "x-max-priority": 5}
    types = {"x-message-ttl": "signedint", "x-dead-letter-exchange": "longstr",
             "x-max-priority": "short"}
    s.put_exchange(ExchangeDef("/", "x", "topic", True, False,
                               {"alternate-exchange": "ae"}, {"alternate-exchange": "longstr"}))
    s.put_exchange(ExchangeDef("/", "internal", "fanout", False, True, {}, {}))
    s.put_exchange(ExchangeDef("other", "x", "headers", False, False, {}, {}))
    s.put_queue(QueueDef("/", "q", False, args, types))
    s.put_queue(QueueDef("/", "ad", True, {}, {}))
    s.put_binding(BindingDef("/", "x", "queue", "q", "a.#", {}))
    s.put_binding(BindingDef("/", "x", "exchange", "internal", "", {"x-match": "any"}))
    h.sync()
    r = h.reopen()
    ex = {(d.vhost, d.name): d for d in r.exchanges}
    assert ex == {
        ("/", "x"): ExchangeDef("/", "x", "topic", True, False,
                                {"alternate-exchange": "ae"}, {"alternate-exchange": "longstr"}),
        ("/", "internal"): ExchangeDef("/", "internal", "fanout", False, True, {}, {}),
        ("other", "x"): ExchangeDef("other", "x", "headers", False, False, {}, {}),
    }
    qs = {(d.vhost, d.name): d for d in r.queues}
    assert qs == {("/", "q"): QueueDef("/", "q", False, args, types),
                  ("/", "ad"): QueueDef("/", "ad", True, {}, {})}
    assert sorted((b.source, b.dest_kind, b.destination, b.routing_key) for b in r.bindings) \
        == [("x", "exchange", "internal", ""), ("x", "queue", "q", "a.#")]
    hb = [b for b in r.bindings if b.dest_kind == "exchange"][0]
    assert hb.arguments == {"x-match": "any"}


def test_put_is_idempotent_and_replaces(h):
    s = h.store
    s.put_queue(QueueDef("/", "q", False, {}, {}))
    s.put_queue(QueueDef("/", "q", False, {"x-max-length": 3}, {"x-max-length": "long"}))
    s.put_binding(BindingDef("/", "amq.direct", "queue", "q", "k", {}))
    s.put_binding(BindingDef("/", "amq.direct", "queue", "q", "k", {}))
    h.sync()
    r = h.reopen()
    assert r.queues == [QueueDef("/", "q", False, {"x-max-length": 3},
                                 {"x-max-length": "long"})]
    assert len(r.bindings) == 1


def test_deletes(h):
    s = h.store
    s.put_exchange(ExchangeDef("/", "x", "direct", False, False, {}, {}))
    s.put_exchange(ExchangeDef("/", "y", "direct", False, False, {}, {}))
    s.put_queue(QueueDef("/", "q", False, {}, {}))
    s.put_queue(QueueDef("/", "keep", False, {}, {}))
    b1 = BindingDef("/", "x", "queue", "keep", "k1", {})
    b2 = BindingDef("/", "x", "queue", "keep", "k2", {"a": 1})
    b3 = BindingDef("/", "x", "queue", "keep", "k2", {"a": 2})
    for b in (b1, b2, b3):
        s.put_binding(b)
    h.sync()
    s.delete_exchange("/", "y")
    s.delete_queue("/", "q")
    s.delete_binding(BindingDef("/", "x", "queue", "keep", "k2", {"a": 1}))  # equal, new obj
    h.sync()
    r = h.reopen()
    assert [d.name for d in r.exchanges] == ["x"]
    assert [d.name for d in r.queues] == ["keep"]
    assert sorted((b.routing_key, b.arguments.get("a")) for b in r.bindings) == \
        [("k1", None), ("k2", 2)]


def test_policies_round_trip(h):
    s = h.store
    g = s.gen
    s.put_policy("/", "ttl", False, '{"pattern": "q"}')
    s.put_policy("/", "ttl", True, '{"pattern": "op"}')      # an operator policy, same name
    s.put_policy("v", "ttl", False, '{"pattern": "v"}')
    s.put_policy("/", "gone", False, "{}")
    s.put_policy("/", "ttl", False, '{"pattern": "q2"}')     # replaced
    s.delete_policy("/", "gone", False)
    assert s.gen >= g + 6
    h.sync()
    r = h.reopen()
    assert sorted(r.policies) == [("/", "ttl", False, '{"pattern": "q2"}'),
                                  ("/", "ttl", True, '{"pattern": "op"}'),
                                  ("v", "ttl", False, '{"pattern": "v"}')]


def test_vhosts_are_separate(h):
    s = h.store
    for vh in ("/", "dev"):
        s.put_queue(QueueDef(vh, "q", False, {}, {}))
        s.append(vh, "q", 1, msg(vh.encode()), None)
    s.delete_queue("dev", "q")
    h.sync()
    r = h.reopen()
    assert [(d.vhost, d.name) for d in r.queues] == [("/", "q")]
    assert bodies(r, "/") == [b"/"]
    assert bodies(r, "dev") == []


# ---------------------------------------------------------------------- messages


def test_messages_in_order_with_everything(h):
    s = h.store
    s.put_queue(QueueDef("/", "q", False, {}, {}))
    s.append("/", "q", 3, msg(b"three", RICH, "amq.topic", "a.b", cc=("c1",), bcc=("b1",)),
             None)
    s.append("/", "q", 1, msg(b"one", exchange="", rk="q"), None)
    s.append("/", "q", 2, msg(b"\x00\xff" * 1000), 60_000)
    s.append("/", "q2", 1, msg(b"other"), None)
    h.sync()
    r = h.reopen()
    got = r.messages[("/", "q")]
    assert [sm.seq for sm in got] == [1, 2, 3]
    assert [sm.message.body for sm in got] == [b"one", b"\x00\xff" * 1000, b"three"]
    one, two, three = got
    assert (one.message.exchange, one.message.routing_key) == ("", "q")
    assert one.ttl is None
    assert 0 < two.ttl <= 60_000
    m3 = three.message
    assert (m3.exchange, m3.routing_key, m3.props, m3.cc, m3.bcc) == \
        ("amq.topic", "a.b", RICH, ("c1",), ("b1",))
    assert m3.persistent
    assert bodies(r, "/", "q2") == [b"other"]


def test_expired_ttl_recovers_as_zero(h, monkeypatch):
    # the TTL runs while the store keeps the message (SQLite's wall clock, memory's
    # monotonic one): 5 s later a 10 ms TTL is spent, a 60 s one about 55 s from its end
    h.store.append("/", "q", 1, msg(b"a"), 10)
    h.store.append("/", "q", 2, msg(b"b"), 60_000)
    h.sync()
    real_time, real_mono = time.time, time.monotonic
    monkeypatch.setattr(time, "time", lambda: real_time() + 5)
    monkeypatch.setattr(time, "monotonic", lambda: real_mono() + 5)
    r = h.reopen()
    short, long_ = [sm.ttl for sm in r.messages[("/", "q")]]
    assert short == 0
    assert 50_000 < long_ <= 55_000


def test_remove_after_commit(h):
    s = h.store
    for i in range(1, 6):
        s.append("/", "q", i, msg(b"%d" % i), None)
    h.sync()
    s.remove("/", "q", 2)
    s.remove("/", "q", 4)
    h.sync()
    r = h.reopen()
    assert bodies(r) == [b"1", b"3", b"5"]


def test_cancelled_insert_never_reaches_disk(sq):
    """Appended and removed in the same batch: the row is never written (no insert, no
    delete), and the batch still bumps gen so confirms are ordered."""
    h = sq
    s = h.store
    s.append("/", "q", 1, msg(b"keep"), None)
    s.append("/", "q", 2, msg(b"gone"), None)
    g = s.gen
    s.remove("/", "q", 2)
    assert s.gen > g
    written = []
    real_commit = s._commit

    def spy(batch):
        written.extend(op for op in batch if op is not None)
        real_commit(batch)

    s._commit = spy
    h.sync()
    s._commit = real_commit
    assert [(kind, params[2]) for kind, params in written] == [("m+", 1)]
    assert bodies(h.reopen()) == [b"keep"]


def test_remove_of_insert_in_flight_is_not_lost(sq):
    """A message appended in batch N (being committed) and removed meanwhile: the removal
    must land in batch N+1, not cancel anything."""
    h = sq
    s = h.store
    s.append("/", "q", 1, msg(b"a"), None)
    started, release = threading.Event(), threading.Event()
    real_commit = s._commit

    def slow(batch):
        started.set()
        release.wait(5)
        real_commit(batch)

    s._commit = slow

    async def main():
        async with anyio.create_task_group() as tg:
            tg.start_soon(s.sync)
            await anyio.to_thread.run_sync(started.wait, 5)
            s.remove("/", "q", 1)
            release.set()
        s._commit = real_commit
        await s.sync()

    anyio.run(main)
    assert bodies(h.reopen()) == []


def test_delete_queue_takes_its_messages(h):
    s = h.store
    s.put_queue(QueueDef("/", "q", False, {}, {}))
    s.put_queue(QueueDef("/", "other", False, {}, {}))
    s.append("/", "q", 1, msg(b"committed"), None)
    s.append("/", "other", 1, msg(b"stays"), None)
    h.sync()
    s.append("/", "q", 2, msg(b"pending"), None)  # not yet committed
    s.delete_queue("/", "q")
    h.sync()
    r = h.reopen()
    assert ("/", "q") not in r.messages
    assert bodies(r, "/", "other") == [b"stays"]
    assert [d.name for d in r.queues] == ["other"]


def test_queue_redeclared_after_delete_in_same_batch(h):
    """Delete a queue and declare one of the same name before the batch commits: the new
    queue's messages (numbered from 1 again) survive, the old ones do not."""
    s = h.store
    s.put_queue(QueueDef("/", "q", False, {}, {}))
    s.append("/", "q", 1, msg(b"old1"), None)
    s.append("/", "q", 2, msg(b"old2"), None)
    s.delete_queue("/", "q")
    s.put_queue(QueueDef("/", "q", False, {"x-max-length": 9}, {}))
    s.append("/", "q", 1, msg(b"new1"), None)
    h.sync()
    r = h.reopen()
    assert bodies(r) == [b"new1"]
    assert r.queues[0].arguments == {"x-max-length": 9}


def test_remove_in_new_queue_after_redeclare_keeps_other(h):
    s = h.store
    s.append("/", "q", 1, msg(b"old1"), None)
    s.delete_queue("/", "q")
    s.append("/", "q", 1, msg(b"new1"), None)
    s.append("/", "q", 2, msg(b"new2"), None)
    s.remove("/", "q", 1)  # the new queue's seq 1
    h.sync()
    r = h.reopen()
    assert bodies(r) == [b"new2"]


def test_after_a_crash_what_was_synced_survives_on_disk_only(h):
    """SQLite: the synced batch survives a crash, the one not synced is lost.  Memory:
    nothing outlives the process (what a new process recovers is empty), while this
    process still has everything."""
    s = h.store
    s.put_queue(QueueDef("/", "q", False, {}, {}))
    s.append("/", "q", 1, msg(b"synced"), None)
    h.sync()
    s.append("/", "q", 2, msg(b"not synced"), None)
    s.remove("/", "q", 1)
    r = h.crash_reopen()
    if h.durable:
        assert bodies(r) == [b"synced"]
        assert [d.name for d in r.queues] == ["q"]
    else:
        assert r.exchanges == r.queues == r.bindings == [] and r.messages == {}
        assert bodies(s.recover()) == [b"not synced"]


def test_close_commits_the_pending_batch(h):
    s = h.store
    s.append("/", "q", 1, msg(b"a"), None)
    r = h.reopen()  # close() without an explicit sync
    assert bodies(r) == [b"a"]


def test_many_messages_one_batch(h):
    s = h.store
    n = 5000
    for i in range(1, n + 1):
        s.append("/", "q", i, msg(i.to_bytes(4, "big")), None)
    for i in range(1, n + 1, 2):
        s.remove("/", "q", i)  # cancelled inserts
    h.sync()
    for i in range(2, n + 1, 4):
        s.remove("/", "q", i)  # real deletes
    h.sync()
    r = h.reopen()
    assert [int.from_bytes(b, "big") for b in bodies(r)] == list(range(4, n + 1, 4))


def test_recover_on_fresh_directory_is_empty(h):
    r = h.store.recover()
    assert r.exchanges == r.queues == r.bindings == [] and r.messages == {}


def test_open_store_backends(tmp_path):
    assert isinstance(open_store("memory", str(tmp_path / "m")), MemoryStore)
    assert not os.path.exists(tmp_path / "m")  # memory touches no disk
    s = open_store("sqlite", str(tmp_path / "s"))
    try:
        assert isinstance(s, SQLiteStore) and s.durable
        assert os.path.exists(s.path)
        mode = s.db.execute("PRAGMA journal_mode").fetchone()[0]
        sync = s.db.execute("PRAGMA synchronous").fetchone()[0]
        assert (mode, sync) == ("wal", 2)  # WAL, FULL
    finally:
        s.close()


def test_sync_blocking(tmp_path):
    s = SQLiteStore(str(tmp_path))
    s.append("/", "q", 1, msg(b"a"), None)
    s.sync_blocking()
    assert s.synced == s.gen
    s.db.close()
    s2 = SQLiteStore(str(tmp_path))
    assert bodies(s2.recover()) == [b"a"]
    s2.close()


# ---------------------------------------------------------------------- through the broker


def test_broker_restore_round_trip(tmp_path):
    """VirtualHost writes durable entities and persistent messages of durable queues, and
    nothing transient; a second Broker on the same store rebuilds them, redelivered."""
    from amqpbroker.broker import Broker

    s = SQLiteStore(str(tmp_path))
    b = Broker(store=s)
    vh = b.vhosts["/"]
    vh.declare_exchange("dx", "topic", False, True, False, False, {})
    vh.declare_exchange("tx", "topic", False, False, False, False, {})
    q = vh.declare_queue("dq", False, True, False, False, {"x-max-priority": 3}, None)
    tq = vh.declare_queue("tq", False, False, False, False, {}, None)
    vh.bind("dx", q, "a.*", {})
    vh.bind("tx", q, "b.*", {})      # transient source: not stored
    vh.bind("dx", tq, "a.*", {})     # transient queue: not stored
    transient = bytes([0x10, 0x00, 1])
    for body, props in ((b"p1", PERSISTENT), (b"t1", transient), (b"p2", PERSISTENT)):
        vh.publish(vh.exchanges["dx"], msg(body, props, "dx", "a.b"))
    s.sync_blocking()
    s.close()

    s2 = SQLiteStore(str(tmp_path))
    b2 = Broker(store=s2)
    vh2 = b2.vhosts["/"]
    assert "dx" in vh2.exchanges and "tx" not in vh2.exchanges
    assert set(vh2.queues) == {"dq"}
    q2 = vh2.queues["dq"]
    assert q2.arguments == {"x-max-priority": 3}
    assert [(b.source.name, b.routing_key) for b in q2.bindings] == [("dx", "a.*")]
    got = [q2.take(0.0) for _ in range(q2.message_count)]
    assert [qm.msg.body for qm in got] == [b"p1", b"p2"]
    assert all(qm.redelivered for qm in got)
    # new messages go after the recovered ones
    vh2.publish(vh2.exchanges["dx"], msg(b"p3", PERSISTENT, "dx", "a.b"))
    q2.settled(got[0])
    s2.sync_blocking()
    s2.close()
    s3 = SQLiteStore(str(tmp_path))
    assert bodies(s3.recover(), "/", "dq") == [b"p2", b"p3"]
    s3.close()


def test_broker_restart_within_the_process_on_the_memory_store():
    """A second Broker on the same MemoryStore (a restart within the process) gets the
    durable definitions back, nothing transient; the queues give the memory store no
    messages (it is not durable: a message in memory already is in its queue), so a
    persistent publish costs the store nothing and ``gen`` does not move."""
    from amqpbroker.broker import Broker

    s = MemoryStore()
    vh = Broker(store=s).vhosts["/"]
    vh.declare_exchange("dx", "topic", False, True, False, False, {})
    vh.declare_exchange("tx", "topic", False, False, False, False, {})
    q = vh.declare_queue("dq", False, True, False, False, {"x-max-priority": 3}, None)
    tq = vh.declare_queue("tq", False, False, False, False, {}, None)
    vh.bind("dx", q, "a.*", {})
    vh.bind("tx", q, "b.*", {})
    vh.bind("dx", tq, "a.*", {})
    gen = s.gen
    vh.publish(vh.exchanges["dx"], msg(b"p1", PERSISTENT, "dx", "a.b"))
    assert s.gen == gen and q.message_count == 1
    vh2 = Broker(store=s).vhosts["/"]
    assert "dx" in vh2.exchanges and "tx" not in vh2.exchanges
    assert set(vh2.queues) == {"dq"}
    assert vh2.queues["dq"].arguments == {"x-max-priority": 3}
    assert [(b.source.name, b.routing_key) for b in vh2.queues["dq"].bindings] == \
        [("dx", "a.*")]
    assert vh2.queues["dq"].message_count == 0
    vh2.delete_queue(vh2.queues["dq"])
    vh2.delete_exchange("dx", False)
    r = s.recover()
    assert r.exchanges == r.queues == r.bindings == []


def test_failed_commit_is_retried_and_never_counted_as_synced(tmp_path):
    """A commit that fails (disk full, say) must not let ``synced`` pass its batch: the
    next sync commits it first, so no confirm goes out for a message never written."""
    store = SQLiteStore(str(tmp_path))
    store.append("/", "q", 1, Message("", "q", b"\x00\x00", b"one"), None)
    real = store._commit
    calls = []

    def failing(batch):
        calls.append(len(batch))
        raise sqlite3.OperationalError("database or disk is full")

    store._commit = failing
    with pytest.raises(sqlite3.OperationalError):
        anyio.run(store.sync)
    assert store.synced < store.gen
    store._commit = real
    store.append("/", "q", 2, Message("", "q", b"\x00\x00", b"two"), None)
    anyio.run(store.sync)
    assert store.synced == store.gen
    store.close()
    again = SQLiteStore(str(tmp_path))
    got = [sm.message.body for sm in again.recover().messages[("/", "q")]]
    assert got == [b"one", b"two"]
    again.close()
