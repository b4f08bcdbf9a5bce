"""Publisher confirms through the tracker (issue 9, item 2), driven with real frames through
the sans-I/O connection, against a SQLite store whose sync generation moves only when the
test syncs it (``sync_blocking``, then ``Broker.after_sync()`` as the server's flusher).

The invariant: a confirm is never sent before the sync that covers its message.  And the
frames are today's: returns before confirms, confirms in publish order, coalesced with
multiple=true as RabbitMQ's rabbit_channel, nacks for refused messages.
"""
from __future__ import annotations

import pytest
from pamqp import commands as C

from amqpbroker.broker import Broker
from amqpbroker.confirms import REFUSED, SAFE, ConfirmTracker, Pending, join
from amqpbroker.store import MemoryStore
from amqpbroker.store.sqlite import SQLiteStore
from tests.sim import connected, names

PERSISTENT = C.Basic.Properties(delivery_mode=2)
TRANSIENT = C.Basic.Properties(delivery_mode=1)


class Setup:
    def __init__(self, tmp_path):
        self.store = SQLiteStore(str(tmp_path))
        self.broker = Broker(store=self.store)
        self.vh = self.broker.vhosts["/"]
        self.c = connected(broker=self.broker)
        self.c.call(1, C.Confirm.Select(), "Confirm.SelectOk")

    def declare(self, name: str, durable=True, **arguments) -> None:
        self.c.declare(1, name, durable=durable, arguments=arguments)
        self.store.sync_blocking()  # the definition: durable before the test's publishes

    def publish(self, queue: str, body: bytes, props=PERSISTENT, exchange="", **kw):
        return self.c.publish(1, exchange, queue, body, props, **kw)

    def sync(self) -> list:
        """The flusher's step: commit the batch, release what waited for it."""
        self.store.sync_blocking()
        self.broker.after_sync()
        return self.c.recv()


def confirms(frames) -> list[tuple[str, int, bool]]:
    return [(f.name, f.delivery_tag, f.multiple) for _, f in frames
            if f.name in ("Basic.Ack", "Basic.Nack")]


@pytest.fixture
def s(tmp_path):
    setup = Setup(tmp_path)
    yield setup
    setup.store.close()


def late_queue(s, name: str) -> list[Pending]:
    """A queue whose acceptance is asynchronous, as a JetStream PubAck will be: the real
    classic queue, but the ticket of each message it takes is a Pending that the test
    settles.  Returns the list the tickets are appended to."""
    s.declare(name, durable=False)
    q = s.vh.queues[name]
    classic, tickets = q.accept, []

    def accept(msg, now):
        ticket = classic(msg, now)
        if not ticket:
            return ticket
        tickets.append(Pending())
        return tickets[-1]

    q.accept = accept
    return tickets


# ---------------------------------------------------------------------- the sync


def test_persistent_message_in_durable_queue_confirmed_after_the_sync(s):
    s.declare("q")
    assert confirms(s.publish("q", b"m1")) == []
    assert s.store.synced < s.store.gen      # written, not yet durable
    assert confirms(s.c.recv()) == []
    s.broker.after_sync()                    # a sync that did not cover it releases nothing
    assert confirms(s.c.recv()) == []
    assert confirms(s.sync()) == [("Basic.Ack", 1, False)]
    assert confirms(s.sync()) == []          # confirmed once


def test_confirm_waits_for_the_sync_that_covers_it_not_an_earlier_one(s):
    s.declare("q")
    s.publish("q", b"m1")
    s.store.sync_blocking()                  # covers m1 only
    # released at the end of the next read: m1 alone (m2 waits), single as RabbitMQ
    assert confirms(s.publish("q", b"m2")) == [("Basic.Ack", 1, False)]
    s.broker.after_sync()
    assert confirms(s.c.recv()) == []
    assert confirms(s.sync()) == [("Basic.Ack", 2, False)]


def test_transient_message_or_non_durable_queue_confirmed_at_once(s):
    s.declare("durable")
    s.declare("transient", durable=False)
    assert confirms(s.publish("durable", b"t", TRANSIENT)) == [("Basic.Ack", 1, False)]
    assert confirms(s.publish("transient", b"p", PERSISTENT)) == [("Basic.Ack", 2, False)]
    assert s.store.gen == s.store.synced     # nothing of either went to the store


def test_confirms_stay_in_publish_order_and_coalesce_after_the_sync(s):
    s.declare("q")
    s.declare("t", durable=False)
    s.publish("q", b"p1")
    # a transient publish behind a persistent one waits for it
    assert confirms(s.publish("t", b"t2", TRANSIENT)) == []
    batch = []
    for i in range(3):
        batch += s.c.publish_frames("", "q", b"p%d" % i, PERSISTENT)
    assert confirms(s.c.rpc(1, *batch)) == []
    assert confirms(s.sync()) == [("Basic.Ack", 5, True)]


def test_one_read_of_transient_publishes_is_one_multiple_ack(s):
    s.declare("q")
    batch = []
    for i in range(4):
        batch += s.c.publish_frames("", "q", b"t%d" % i, TRANSIENT)
    assert confirms(s.c.rpc(1, *batch)) == [("Basic.Ack", 4, True)]


# ---------------------------------------------------------------------- nacks


def test_refused_message_nacked_in_order_after_the_held_ack(s):
    s.declare("q", **{"x-max-length": 1, "x-overflow": "reject-publish"})
    s.publish("q", b"m1")
    assert confirms(s.publish("q", b"m2")) == []    # its nack waits behind m1's ack
    assert confirms(s.sync()) == [("Basic.Ack", 1, False), ("Basic.Nack", 2, False)]


def test_nacks_coalesced_as_rabbitmq(s):
    s.declare("q", durable=False, **{"x-max-length": 0, "x-overflow": "reject-publish"})
    batch = []
    for i in range(3):
        batch += s.c.publish_frames("", "q", b"x", TRANSIENT)
    # no ack among them: a run of nacks is one multiple=true
    assert confirms(s.c.rpc(1, *batch)) == [("Basic.Nack", 3, True)]


# ---------------------------------------------------------------------- several targets


def test_mixed_transient_and_durable_targets_wait_for_the_durable_copy(s):
    s.c.call(1, C.Exchange.Declare(exchange="fan", exchange_type="fanout"),
             "Exchange.DeclareOk")
    s.declare("durable")
    s.declare("transient", durable=False)
    for q in ("durable", "transient"):
        s.c.call(1, C.Queue.Bind(queue=q, exchange="fan"), "Queue.BindOk")
    assert confirms(s.publish("", b"p", exchange="fan")) == []
    assert confirms(s.sync()) == [("Basic.Ack", 1, False)]
    assert confirms(s.publish("", b"t", TRANSIENT, exchange="fan")) == \
        [("Basic.Ack", 2, False)]


def test_one_refusing_target_of_several_nacks(s):
    s.c.call(1, C.Exchange.Declare(exchange="fan", exchange_type="fanout"),
             "Exchange.DeclareOk")
    s.declare("ok")
    s.declare("full", **{"x-max-length": 0, "x-overflow": "reject-publish"})
    for q in ("ok", "full"):
        s.c.call(1, C.Queue.Bind(queue=q, exchange="fan"), "Queue.BindOk")
    assert confirms(s.publish("", b"p", exchange="fan")) == [("Basic.Nack", 1, True)]
    assert s.vh.queues["ok"].message_count == 1


def test_target_that_settles_late(s):
    tickets = late_queue(s, "late")
    s.declare("q")
    assert confirms(s.publish("late", b"a", TRANSIENT)) == []
    assert confirms(s.publish("q", b"b")) == []
    assert confirms(s.sync()) == []          # b is durable, but a holds it back
    tickets[0].settle()
    s.broker.after_sync()                    # the settler's release, outside a client read
    assert confirms(s.c.recv()) == [("Basic.Ack", 2, True)]
    assert confirms(s.publish("late", b"c", TRANSIENT)) == []
    tickets[1].settle(False)                 # lost: the publisher hears a nack
    assert confirms(s.c.recv()) == []        # not before the release
    s.broker.after_sync()
    assert confirms(s.c.recv()) == [("Basic.Nack", 3, True)]
    tickets[1].settle()                      # settled once: nothing changes
    s.broker.after_sync()
    assert confirms(s.c.recv()) == []


def test_late_target_and_durable_copy_both_needed(s):
    tickets = late_queue(s, "late")
    s.declare("q")
    s.c.call(1, C.Exchange.Declare(exchange="fan", exchange_type="fanout"),
             "Exchange.DeclareOk")
    for q in ("late", "q"):
        s.c.call(1, C.Queue.Bind(queue=q, exchange="fan"), "Queue.BindOk")
    s.publish("", b"p", exchange="fan")
    tickets[0].settle()
    s.broker.after_sync()
    assert confirms(s.c.recv()) == []        # the durable copy is not synced yet
    assert confirms(s.sync()) == [("Basic.Ack", 1, False)]


def test_late_settle_after_the_channel_closed_sends_nothing(s):
    tickets = late_queue(s, "late")
    s.publish("late", b"a", TRANSIENT)
    s.c.call(1, C.Channel.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0), "Channel.CloseOk")
    tickets[0].settle()
    s.broker.after_sync()
    assert s.c.recv() == []


# ---------------------------------------------------------------------- returns


def test_mandatory_return_sent_at_once_its_confirm_after_the_held_one(s):
    s.declare("q")
    s.publish("q", b"p1")
    frames = s.publish("nowhere", b"lost", TRANSIENT, mandatory=True)
    # the return is not held back; the confirm of the returned message is
    assert names(frames) == ["Basic.Return", "ContentHeader", "ContentBody"]
    assert confirms(s.sync()) == [("Basic.Ack", 2, True)]


def test_mandatory_return_precedes_its_confirm_in_one_read(s):
    frames = s.publish("nowhere", b"lost", TRANSIENT, mandatory=True)
    assert names(frames) == ["Basic.Return", "ContentHeader", "ContentBody", "Basic.Ack"]
    assert confirms(frames) == [("Basic.Ack", 1, False)]


# ---------------------------------------------------------------------- tickets


def test_join_keeps_the_strictest_ticket():
    p = Pending()
    assert join(SAFE, SAFE) is SAFE
    assert join(SAFE, 7) == 7 and join(7, SAFE) == 7
    assert join(3, 9) == 9 and join(9, 3) == 9
    assert join(3, p) == [3, p] and join([3, p], 5) == [3, p, 5]
    assert not REFUSED and all((SAFE, 1, p, [p]))   # accept's callers test truthiness


def test_tracker_against_a_moving_watermark():
    store = MemoryStore()  # the tracker reads its ``synced`` only; moved by hand here
    woken = []
    t = ConfirmTracker(store, lambda: woken.append(1))
    p = Pending()
    assert [t.publish(x) for x in (5, SAFE, [p, 2], REFUSED)] == [1, 2, 3, 4]
    assert list(t.release()) == []
    store.synced = 5
    assert list(t.release()) == [(2, True, True)]          # 1 and 2; 3 waits for p
    p.settle()
    assert woken == [1]
    assert list(t.release()) == [(3, False, True), (4, False, False)]
    assert len(t) == 0
    t.publish(REFUSED)                                # alone: the one-entry path
    assert list(t.release()) == [(5, True, False)]    # a lone nack is multiple=true
    t.publish(9)
    assert list(t.release()) == []
    store.synced = 9
    assert list(t.release()) == [(6, False, True)]
