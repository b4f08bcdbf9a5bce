"""Poison pills (issue 10 item 3): the per-channel state machine in delivery.py, driven
with real frames through the sans-I/O core (tests/sim.py).

A pill is a message with the header ``x-poison-pill`` = boolean true.  Delivered to a
consumer it stops that consumer (no further deliveries); settled for good (ack, or a
reject without requeue) the consumer is cancelled, with Basic.Cancel to a client that
advertises ``consumer_cancel_notify``; requeued, it is an ordinary message again and the
consumer an ordinary consumer.  Basic.Get just delivers it."""
from __future__ import annotations

import pytest
from pamqp import commands as C

from amqpbroker import poisonpill
from amqpbroker.message import Message

from .sim import connected, messages, names

PILL = C.Basic.Properties(headers={"x-poison-pill": True})


def consume(c, ch, queue, tag, **kw):
    frames = c.rpc(ch, C.Basic.Consume(queue=queue, consumer_tag=tag, **kw))
    assert names(frames)[0] == "Basic.ConsumeOk", frames
    return messages(frames)


def bodies(frames) -> list[bytes]:
    return [m.body for m in messages(frames)]


def tags(frames) -> dict[bytes, int]:
    return {m.body: m.method.delivery_tag for m in messages(frames)}


def cancels(frames) -> list[str]:
    return [f.consumer_tag for _ch, f in frames if getattr(f, "name", "") == "Basic.Cancel"]


def publish(c, queue, *items):
    """Bodies; ``b"PILL"`` is published as a pill.  Returns what the server wrote."""
    out = []
    for body in items:
        out += c.publish(1, "", queue, body, PILL if body == b"PILL" else None)
    return out


def queue(c, name="q"):
    return c.broker.vhosts["/"].queues[name]


# ---------------------------------------------------------------------- the header


def _msg(headers) -> Message:
    c = connected()
    c.declare(1, "h")
    c.publish(1, "", "h", b"x", C.Basic.Properties(headers=headers, delivery_mode=2))
    return queue(c, "h").ready.head().msg


@pytest.mark.parametrize("headers,pill", [
    ({"x-poison-pill": True}, True),
    ({"a": "b", "x-poison-pill": True, "z": 1}, True),
    ({"x-poison-pill": False}, False),
    ({"x-poison-pill": "true"}, False),      # only a boolean true
    ({"x-poison-pill": 1}, False),
    ({"other": "\rx-poison-pill"}, False),  # the key's bytes inside a value
    ({"x-poison-pills": True}, False),
    ({"a": "b"}, False),
    (None, False),
])
def test_is_pill(headers, pill):
    assert poisonpill.is_pill(_msg(headers)) is pill


@pytest.mark.parametrize("persistent", [True, False])
def test_pill_message(persistent):
    m = poisonpill.message("work", persistent)
    assert (m.exchange, m.routing_key, m.body) == ("", "work", b"")
    assert poisonpill.is_pill(m) and m.persistent is persistent
    assert m.headers == {"x-poison-pill": True}


# ---------------------------------------------------------------------- the state machine


def test_pill_stops_the_consumer_and_its_ack_cancels_it():
    a = connected()
    a.declare(1, "q")
    assert consume(a, 1, "q", "A", no_ack=False) == []
    got = publish(a, "q", b"m1", b"PILL", b"m2", b"m3")
    assert bodies(got) == [b"m1", b"PILL"]            # nothing after the pill
    assert messages(got)[1].properties.headers == {"x-poison-pill": True}
    t = tags(got)
    assert queue(a).message_count == 2
    b = connected(broker=a.broker)
    assert [m.body for m in consume(b, 1, "q", "B")] == [b"m2", b"m3"]   # the others get them
    assert a.ack(1, t[b"m1"]) == []                   # an earlier message: nothing yet
    assert cancels(a.ack(1, t[b"PILL"])) == ["A"]
    assert "A" not in a.conn.channels[1].consumers
    assert queue(a).consumer_count == 1
    assert bodies(publish(a, "q", b"m4")) == [] and bodies(b.recv()) == [b"m4"]
    assert a.call(1, C.Basic.Cancel(consumer_tag="A"), "Basic.CancelOk")  # as RabbitMQ: ok


def test_prefetch_several_unacked_before_the_pill_stay_with_the_consumer():
    a = connected()
    a.declare(1, "q")
    a.call(1, C.Basic.Qos(prefetch_count=5), "Basic.QosOk")
    consume(a, 1, "q", "A")
    got = publish(a, "q", b"m1", b"m2", b"m3", b"PILL", b"m4")
    assert bodies(got) == [b"m1", b"m2", b"m3", b"PILL"]
    t = tags(got)
    assert cancels(a.ack(1, t[b"PILL"])) == ["A"]     # acked first, out of order
    st = queue(a).stats()
    assert (st.messages, st.unacked, st.consumers) == (1, 3, 0)
    a.rpc(1, C.Basic.Nack(delivery_tag=t[b"m2"], requeue=True))    # returned as usual
    assert queue(a).stats().messages == 2
    assert a.ack(1, t[b"m3"], multiple=True) == []
    st = queue(a).stats()
    assert (st.messages, st.unacked) == (2, 0)
    b = connected(broker=a.broker)
    got = consume(b, 1, "q", "B")
    assert [(m.body, m.method.redelivered) for m in got] == [(b"m2", True), (b"m4", False)]


def test_multiple_ack_covering_the_pill_cancels():
    a = connected()
    a.declare(1, "q")
    consume(a, 1, "q", "A")
    got = publish(a, "q", b"m1", b"PILL")
    assert cancels(a.ack(1, tags(got)[b"PILL"], multiple=True)) == ["A"]
    assert queue(a).stats().unacked == 0


def test_no_ack_cancels_at_once_after_the_pill():
    a = connected()
    a.declare(1, "q")
    consume(a, 1, "q", "A", no_ack=True)
    got = publish(a, "q", b"m1", b"PILL", b"m2")
    assert names(got) == ["Basic.Deliver", "ContentHeader", "ContentBody",
                          "Basic.Deliver", "ContentHeader", "ContentBody", "Basic.Cancel"]
    assert bodies(got) == [b"m1", b"PILL"] and cancels(got) == ["A"]
    st = queue(a).stats()
    assert (st.messages, st.unacked, st.consumers) == (1, 0, 0)
    assert not a.conn.channels[1].pills


@pytest.mark.parametrize("method", ["nack", "reject"])
def test_a_requeued_pill_is_an_ordinary_message_again(method):
    a = connected()
    a.declare(1, "q")
    consume(a, 1, "q", "A")
    got = publish(a, "q", b"PILL", b"m1")
    assert bodies(got) == [b"PILL"]
    tag = tags(got)[b"PILL"]
    settle = C.Basic.Nack(delivery_tag=tag, requeue=True) if method == "nack" else \
        C.Basic.Reject(delivery_tag=tag, requeue=True)
    again = a.rpc(1, settle)
    # the consumer took the pill back: an ordinary consumer, and the pill, at the head of
    # the queue, goes to the next consumer with capacity: this one, which it stops again
    assert [(m.body, m.method.redelivered) for m in messages(again)] == [(b"PILL", True)]
    assert cancels(again) == [] and queue(a).message_count == 1
    assert cancels(a.ack(1, tags(again)[b"PILL"])) == ["A"]


def test_a_pill_whose_consumer_goes_before_acking_goes_to_the_next():
    a = connected()
    a.declare(1, "q")
    consume(a, 1, "q", "A")
    assert bodies(publish(a, "q", b"PILL", b"m1")) == [b"PILL"]
    b = connected(broker=a.broker)
    b.call(1, C.Basic.Qos(prefetch_count=1), "Basic.QosOk")
    assert [m.body for m in consume(b, 1, "q", "B")] == [b"m1"]
    a.rpc(1, C.Channel.Close(reply_code=200, reply_text="", class_id=0, method_id=0))
    assert bodies(b.ack(1, 1)) == [b"PILL"]           # after m1: its place was first
    assert cancels(b.ack(1, 2)) == ["B"]


def test_reject_without_requeue_takes_the_pill_for_good():
    a = connected()
    a.declare(1, "q")
    consume(a, 1, "q", "A")
    got = publish(a, "q", b"PILL", b"m1")
    out = a.rpc(1, C.Basic.Reject(delivery_tag=tags(got)[b"PILL"], requeue=False))
    assert cancels(out) == ["A"]
    assert queue(a).stats().messages == 1             # m1 waits for the next consumer


def test_a_client_without_cancel_notify_gets_nothing_and_keeps_its_channel():
    a = connected(capabilities={})
    a.declare(1, "q")
    consume(a, 1, "q", "A")
    got = publish(a, "q", b"m1", b"PILL", b"m2")
    assert bodies(got) == [b"m1", b"PILL"]
    assert a.ack(1, tags(got)[b"PILL"]) == []         # no Basic.Cancel: nothing at all
    assert queue(a).consumer_count == 0               # but gone from the queue
    assert a.ack(1, tags(got)[b"m1"]) == []           # the channel is still open
    a.call(1, C.Basic.Cancel(consumer_tag="A"), "Basic.CancelOk")
    assert [m.body for m in consume(a, 1, "q", "A")] == [b"m2"]   # the tag is free


def test_basic_get_just_delivers_a_pill():
    a = connected()
    a.declare(1, "q")
    publish(a, "q", b"PILL")
    m = a.get(1, "q")
    assert m.body == b"PILL" and m.properties.headers == {"x-poison-pill": True}
    assert a.ack(1, m.method.delivery_tag) == []
    consume(a, 1, "q", "A")
    assert bodies(publish(a, "q", b"m1", b"m2")) == [b"m1", b"m2"]   # nobody was stopped
    assert a.get(1, "q", no_ack=True) is None


def test_basic_recover_returns_the_pill_and_the_consumer_resumes():
    a = connected()
    a.declare(1, "q")
    consume(a, 1, "q", "A")
    assert bodies(publish(a, "q", b"m1", b"PILL", b"m2")) == [b"m1", b"PILL"]
    again = a.rpc(1, C.Basic.Recover(requeue=True))
    assert bodies(again) == [b"m1", b"PILL"]          # redelivered in order, stops again
    assert cancels(a.ack(1, tags(again)[b"PILL"])) == ["A"]


def test_in_a_transaction_the_cancel_waits_for_the_commit():
    a = connected()
    a.declare(1, "q")
    a.call(1, C.Tx.Select(), "Tx.SelectOk")
    consume(a, 1, "q", "A")
    p = connected(broker=a.broker)                     # (a's own publishes wait for commit)
    publish(p, "q", b"PILL")
    tag = tags(a.recv())[b"PILL"]
    assert a.ack(1, tag) == []
    a.call(1, C.Tx.Rollback(), "Tx.RollbackOk")       # the ack is undone: still stopped
    publish(p, "q", b"m1")
    assert a.recv() == [] and queue(a).message_count == 1
    assert a.ack(1, tag) == []
    out = a.rpc(1, C.Tx.Commit())
    assert names(out) == ["Basic.Cancel", "Tx.CommitOk"]
    assert queue(a).stats().consumers == 0


def test_a_consumer_the_client_cancelled_is_not_cancelled_again():
    a = connected()
    a.declare(1, "q")
    consume(a, 1, "q", "A")
    tag = tags(publish(a, "q", b"PILL", b"m1"))[b"PILL"]
    a.call(1, C.Basic.Cancel(consumer_tag="A"), "Basic.CancelOk")
    assert [m.body for m in consume(a, 1, "q", "A")] == [b"m1"]   # the same tag, anew
    assert a.ack(1, tag) == []                         # not this new consumer's pill
    assert queue(a).consumer_count == 1


def test_queue_deleted_while_stopped_cancels_once():
    a = connected()
    a.declare(1, "q")
    consume(a, 1, "q", "A")
    tag = tags(publish(a, "q", b"PILL"))[b"PILL"]
    b = connected(broker=a.broker)
    b.call(1, C.Queue.Delete(queue="q"), "Queue.DeleteOk")
    assert cancels(a.recv()) == ["A"]
    assert a.ack(1, tag) == []


def test_single_active_consumer_hands_over_after_the_pill():
    a = connected()
    a.declare(1, "q", arguments={"x-single-active-consumer": True})
    consume(a, 1, "q", "A")
    consume(a, 1, "q", "B")
    got = publish(a, "q", b"m1", b"PILL", b"m2")
    assert [(m.method.consumer_tag, m.body) for m in messages(got)] == \
        [("A", b"m1"), ("A", b"PILL")]                # m2 waits: A is still the active one
    out = a.ack(1, tags(got)[b"PILL"])
    assert cancels(out) == ["A"]
    assert [(m.method.consumer_tag, m.body) for m in messages(out)] == [("B", b"m2")]


def test_the_last_consumer_of_an_auto_delete_queue_taking_a_pill_deletes_it():
    a = connected()
    a.declare(1, "ad", auto_delete=True)
    consume(a, 1, "ad", "A")
    tag = tags(publish(a, "ad", b"PILL"))[b"PILL"]
    assert cancels(a.ack(1, tag)) == ["A"]            # as the client's own cancel would
    assert "ad" not in a.broker.vhosts["/"].queues


def test_a_pill_with_a_delivery_count_header():
    """On a queue with a delivery limit a requeued pill carries x-delivery-count."""
    a = connected()
    a.declare(1, "q", arguments={"x-delivery-limit": 5})
    consume(a, 1, "q", "A")
    tag = tags(publish(a, "q", b"PILL"))[b"PILL"]
    again = messages(a.rpc(1, C.Basic.Nack(delivery_tag=tag, requeue=True)))
    assert again[0].properties.headers == {"x-poison-pill": True, "x-delivery-count": 1}
    assert cancels(a.ack(1, again[0].method.delivery_tag)) == ["A"]


def test_a_dead_lettered_pill_is_a_pill_in_its_new_queue():
    """As README says: the header travels with the dead letter."""
    a = connected()
    a.declare(1, "dlq")
    a.declare(1, "q", arguments={"x-dead-letter-exchange": "",
                                 "x-dead-letter-routing-key": "dlq"})
    consume(a, 1, "q", "A")
    consume(a, 1, "dlq", "D")
    tag = tags(publish(a, "q", b"PILL"))[b"PILL"]
    out = a.rpc(1, C.Basic.Reject(delivery_tag=tag, requeue=False))
    assert cancels(out) == ["A"]
    dead = messages(out)
    assert [(m.method.consumer_tag, m.body) for m in dead] == [("D", b"PILL")]
    assert cancels(a.ack(1, dead[0].method.delivery_tag)) == ["D"]
