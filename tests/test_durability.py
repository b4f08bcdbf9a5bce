"""The durability invariants, at the unit level: the sans-I/O core fed real frames, on a
SQLite store (whose ``synced`` lags ``gen`` until a sync, unlike the memory store's).

1. A publisher confirm (and a Tx.CommitOk) is never sent before the store sync that
   covers the message: not while the message is only in the batch, not after a sync that
   took an earlier batch.
2. A persistent message published to a durable queue is always written: after the sync
   that releases its confirm, a second handle on the directory (what a process started
   after a crash would read) has it, byte for byte, on every way in (the default
   exchange, an exchange routing to several queues, a queue whose messages take the slow
   enqueue path, a transaction, a message delivered but not yet acked).

The tests read only what a client and a restart would see (frames out, the store's
contents after a crash); "the sync" is the flusher's two steps, ``store.sync`` then
``broker.after_sync``, done here in ``World.sync``.
"""
from __future__ import annotations

import pytest
from pamqp import commands as C

from amqpbroker.broker import Broker
from amqpbroker.store.sqlite import SQLiteStore

from .sim import Client, connected, messages, name, names

PERSISTENT = C.Basic.Properties(delivery_mode=2, content_type="text/plain",
                                headers={"k": "v", "n": 7})
TRANSIENT = C.Basic.Properties(delivery_mode=1)


class Confirms:
    """The publisher's ledger: which publish seqs the broker has acked or nacked."""

    def __init__(self):
        self.acked: set[int] = set()
        self.nacked: set[int] = set()

    def feed(self, frames) -> None:
        for _ch, f in frames:
            if name(f) not in ("Basic.Ack", "Basic.Nack"):
                continue
            done = self.acked | self.nacked
            tags = set(range(1, f.delivery_tag + 1)) - done if f.multiple \
                else {f.delivery_tag}
            assert tags and not tags & done, f"{f} confirms again what was confirmed"
            (self.acked if name(f) == "Basic.Ack" else self.nacked).update(tags)

    @property
    def settled(self) -> set[int]:
        return self.acked | self.nacked


class World:
    """A broker on a SQLite store in a temporary directory, and its publisher."""

    def __init__(self, tmp_path):
        self.dir = str(tmp_path)
        self.store = SQLiteStore(self.dir)
        self.broker = Broker(store=self.store)
        self.c: Client = connected(broker=self.broker)
        self.confirms = Confirms()

    def out(self) -> list:
        frames = self.c.recv()
        self.confirms.feed(frames)
        return frames

    def rpc(self, *frames) -> list:
        self.c.send(1, *frames)
        return self.out()

    def publish(self, exchange: str, key: str, body: bytes, props=PERSISTENT) -> list:
        return self.rpc(*self.c.publish_frames(exchange, key, body, props))

    def select(self) -> None:
        assert names(self.rpc(C.Confirm.Select())) == ["Confirm.SelectOk"]

    def sync(self) -> list:
        """What the server's flusher does after a commit, then the frames it released."""
        self.store.sync_blocking()
        self.broker.after_sync()
        return self.out()

    def after_sync_without_commit(self) -> list:
        """A flusher wake-up whose sync covered nothing new (another batch's, say)."""
        self.broker.after_sync()
        return self.out()

    def stored(self) -> dict[str, list[tuple[bytes, bytes]]]:
        """What a broker started after a crash right now would recover: queue ->
        [(props, body)] (a second handle on the directory; nothing is committed here)."""
        other = SQLiteStore(self.dir)
        try:
            rec = other.recover()
        finally:
            other.db.close()
        return {q: [(sm.message.props, sm.message.body) for sm in sms]
                for (_vh, q), sms in rec.messages.items()}

    def close(self) -> None:
        self.store.db.close()


@pytest.fixture
def w(tmp_path):
    world = World(tmp_path)
    yield world
    world.close()


def durable_queue(w: World, q: str, **arguments) -> None:
    assert names(w.rpc(C.Queue.Declare(queue=q, durable=True, arguments=arguments))) == \
        ["Queue.DeclareOk"]


def bodies(w: World, q: str) -> list[bytes]:
    return [body for _props, body in w.stored().get(q, [])]


def props_of(w: World, exchange: str, key: str, body: bytes, props) -> bytes:
    """The raw property bytes the broker received for this publish (what the store must
    keep): the content header's payload after class, weight and body size."""
    header = w.c.publish_frames(exchange, key, body, props)[1]
    return header.marshal()[12:]


# ---------------------------------------------------------------------- 1. confirms


def test_confirm_waits_for_the_sync_that_covers_the_message(w):
    durable_queue(w, "q")
    w.select()
    assert w.publish("", "q", b"m1") == []
    assert w.confirms.settled == set()
    assert w.after_sync_without_commit() == []      # a wake-up is not a sync
    assert w.confirms.settled == set()
    w.sync()
    assert w.confirms.acked == {1}


def test_a_sync_of_an_earlier_batch_does_not_confirm_a_later_message(w):
    durable_queue(w, "q")
    w.select()
    w.publish("", "q", b"m1")
    w.store.sync_blocking()          # the commit takes m1's batch...
    w.publish("", "q", b"m2")        # ...m2 arrives in the next one
    w.broker.after_sync()
    w.out()
    assert w.confirms.acked == {1}
    assert bodies(w, "q") == [b"m1"]
    w.publish("", "q", b"m3")
    w.sync()
    assert w.confirms.acked == {1, 2, 3}


def test_confirms_stay_in_order_behind_a_message_waiting_for_its_sync(w):
    """A transient message needs no sync, but its confirm must not go out while an
    earlier persistent one waits (a multiple=true ack would cover both)."""
    durable_queue(w, "q")
    w.c.declare(1, "tq")
    w.select()
    w.publish("", "q", b"persistent")
    w.publish("", "tq", b"transient", TRANSIENT)
    w.publish("", "nowhere", b"unroutable")
    assert 1 not in w.confirms.settled
    w.sync()
    assert w.confirms.acked == {1, 2, 3}


def test_a_message_routed_to_a_durable_and_a_transient_queue_waits(w):
    durable_queue(w, "dq")
    w.c.declare(1, "tq")
    for q in ("dq", "tq"):
        w.rpc(C.Queue.Bind(queue=q, exchange="amq.fanout"))
    w.out()
    w.select()
    w.publish("amq.fanout", "", b"both")
    assert w.confirms.settled == set()
    w.sync()
    assert w.confirms.acked == {1}


def test_many_publishes_in_one_read_wait_for_one_sync(w):
    durable_queue(w, "q")
    w.select()
    frames = []
    for i in range(50):
        frames += w.c.publish_frames("", "q", b"m%d" % i, PERSISTENT)
    assert w.rpc(*frames) == []
    w.sync()
    assert w.confirms.acked == set(range(1, 51))
    assert len(w.stored()["q"]) == 50


def test_what_needs_no_sync_is_confirmed_at_once(w):
    """Nothing written, nothing to wait for: a transient message to a durable queue, a
    persistent one to a transient queue."""
    durable_queue(w, "q")
    w.c.declare(1, "tq")
    w.select()
    w.publish("", "q", b"t", TRANSIENT)
    w.publish("", "tq", b"p")
    assert w.confirms.acked == {1, 2}
    assert w.stored() == {}


def test_tx_commit_ok_waits_for_the_sync_of_its_messages(w):
    durable_queue(w, "q")
    assert names(w.rpc(C.Tx.Select())) == ["Tx.SelectOk"]
    w.publish("", "q", b"in tx")
    assert w.stored() == {}                         # nothing before the commit
    assert names(w.rpc(C.Tx.Commit())) == []
    assert w.after_sync_without_commit() == []
    assert names(w.sync()) == ["Tx.CommitOk"]
    assert bodies(w, "q") == [b"in tx"]


# ---------------------------------------------------------------------- 2. written


def test_a_persistent_message_to_a_durable_queue_is_written_byte_exact(w):
    durable_queue(w, "q")
    w.select()
    w.publish("", "q", b"hello")
    w.sync()
    assert w.confirms.acked == {1}
    assert w.stored() == {"q": [(props_of(w, "", "q", b"hello", PERSISTENT), b"hello")]}


@pytest.mark.parametrize("arguments", [
    {"x-message-ttl": 60_000},
    {"x-max-priority": 5},
], ids=["ttl", "priority"])
def test_written_from_a_queue_with_per_message_state(w, arguments):
    """A queue with a TTL or priorities enqueues by another path than a plain one."""
    durable_queue(w, "q", **arguments)
    w.select()
    w.publish("", "q", b"a")
    w.publish("", "q", b"b", C.Basic.Properties(delivery_mode=2, priority=3,
                                               expiration="30000"))
    w.sync()
    assert w.confirms.acked == {1, 2}
    assert sorted(b for _p, b in w.stored()["q"]) == [b"a", b"b"]


def test_written_to_every_durable_queue_an_exchange_routes_to(w):
    for q in ("a", "b"):
        durable_queue(w, q)
        w.rpc(C.Queue.Bind(queue=q, exchange="amq.topic", routing_key="k.#"))
    w.c.declare(1, "t")
    w.rpc(C.Queue.Bind(queue="t", exchange="amq.topic", routing_key="k.#"))
    w.out()
    w.select()
    w.publish("amq.topic", "k.x", b"fan")
    w.sync()
    assert w.confirms.acked == {1}
    assert {q: [b for _p, b in ms] for q, ms in w.stored().items()} == \
        {"a": [b"fan"], "b": [b"fan"]}


def test_written_without_confirms_too(w):
    durable_queue(w, "q")
    w.publish("", "q", b"fire and forget")
    w.store.sync_blocking()
    assert bodies(w, "q") == [b"fire and forget"]


def test_a_delivered_message_not_yet_acked_stays_written(w):
    """Delivered to a consumer at once, it is still the broker's until the ack: a crash
    before the ack must find it."""
    durable_queue(w, "q")
    frames = w.rpc(C.Basic.Consume(queue="q", consumer_tag="c"))
    assert names(frames) == ["Basic.ConsumeOk"]
    frames = w.publish("", "q", b"in flight")
    assert [m.body for m in messages(frames)] == [b"in flight"]
    w.store.sync_blocking()
    assert bodies(w, "q") == [b"in flight"]
    w.rpc(C.Basic.Ack(delivery_tag=1))
    w.store.sync_blocking()
    assert w.stored() == {}
