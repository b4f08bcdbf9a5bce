"""Channel-level behaviour: publish, consume, get, settle, qos, confirms, consumer and
queue lifecycle, content framing, per-message limits."""
from __future__ import annotations

import pytest
from pamqp import commands as C

from amqpbroker.broker import Broker
from amqpbroker.config import Config, Limits

from .sim import MODES, close_frame, connected, messages, names

modes = pytest.mark.parametrize("mode", MODES)


def consume(c, ch, queue, tag="", **kw):
    frames = c.rpc(ch, C.Basic.Consume(queue=queue, consumer_tag=tag, **kw))
    assert names(frames)[0] == "Basic.ConsumeOk", frames  # consume-ok before any deliver
    return frames[0][1].consumer_tag, messages(frames)


def publish_n(c, ch, queue, n, prefix="m"):
    for i in range(1, n + 1):
        assert c.publish(ch, "", queue, f"{prefix}{i}".encode()) == []


def bodies(msgs):
    return [m.body for m in msgs]


def queue(c, name):
    return c.broker.vhosts["/"].queues[name]


def soft_close(frames, code, ch=1, text=None):
    close = close_frame(frames, ch)
    assert close.reply_code == code, close.reply_text
    if text is not None:
        assert close.reply_text == text
    assert "Connection.Close" not in names(frames)
    return close


def hard_close(frames, code, text=None):
    close = close_frame(frames, 0)
    assert close.reply_code == code, close.reply_text
    if text is not None:
        assert close.reply_text == text
    return close


# ---------------------------------------------------------------------- publish / consume


@modes
def test_publish_then_consume(mode):
    c = connected(mode)
    c.declare(1, "q")
    props = C.Basic.Properties(content_type="text/plain", headers={"a": 1, "b": "x"},
                               delivery_mode=2, message_id="id-1")
    assert c.publish(1, "", "q", b"hello", props) == []
    tag, msgs = consume(c, 1, "q", "ctag")
    assert tag == "ctag"
    assert len(msgs) == 1
    m = msgs[0]
    assert m.body == b"hello"
    d = m.method
    assert (d.consumer_tag, d.delivery_tag, d.redelivered, d.exchange, d.routing_key) == \
        ("ctag", 1, False, "", "q")
    assert m.properties.content_type == "text/plain"
    assert m.properties.headers == {"a": 1, "b": "x"}
    assert m.properties.delivery_mode == 2 and m.properties.message_id == "id-1"


@modes
def test_consume_then_publish_in_order(mode):
    c = connected(mode)
    c.declare(1, "q")
    consume(c, 1, "q", "t")
    got = []
    for i in range(5):
        got += messages(c.publish(1, "", "q", str(i).encode()))
    assert bodies(got) == [b"0", b"1", b"2", b"3", b"4"]
    assert [m.method.delivery_tag for m in got] == [1, 2, 3, 4, 5]


def test_server_generated_consumer_tag():
    c = connected()
    c.declare(1, "q")
    tag, _ = consume(c, 1, "q")
    assert tag.startswith("amq.ctag-") and len(tag) > len("amq.ctag-")


def test_properties_bytes_pass_through_unchanged():
    """The server must not modify content: header types survive (pamqp would shrink ints)."""
    c = connected()
    c.declare(1, "q")
    props = C.Basic.Properties(headers={"big": 2**40, "f": 1.5, "s": "v", "l": [1, "a"]},
                               priority=3, expiration="60000", correlation_id="c",
                               reply_to="r", message_type="t", app_id="a")
    c.publish(1, "", "q", b"x", props)
    sent = props.marshal()
    c.send(1, C.Basic.Get(queue="q", no_ack=True))
    out = c.conn.data_to_send()
    # skip the Get-Ok method frame, then read the content header frame's raw properties
    size = int.from_bytes(out[3:7], "big")
    hdr = out[7 + size + 1:]
    assert hdr[0] == 2
    hsize = int.from_bytes(hdr[3:7], "big")
    assert hdr[7 + 12: 7 + hsize] == sent


def test_get_empty_and_get_ok_message_count():
    c = connected()
    c.declare(1, "q")
    assert c.get(1, "q") is None
    publish_n(c, 1, "q", 3)
    m = c.get(1, "q", no_ack=True)
    assert m.body == b"m1" and m.method.message_count == 2
    assert m.method.exchange == "" and m.method.routing_key == "q"


def test_delivery_tags_shared_between_get_and_deliver():
    c = connected()
    c.declare(1, "a")
    c.declare(1, "b")
    publish_n(c, 1, "a", 1)
    publish_n(c, 1, "b", 1)
    assert c.get(1, "a").method.delivery_tag == 1
    _, msgs = consume(c, 1, "b")
    assert msgs[0].method.delivery_tag == 2


def test_delivery_tags_are_per_channel():
    c = connected()
    c.open_channel(2)
    c.declare(1, "q")
    publish_n(c, 1, "q", 2)
    assert c.get(1, "q").method.delivery_tag == 1
    assert c.get(2, "q").method.delivery_tag == 1
    # a tag from another channel is unknown here
    soft_close(c.ack(2, 2), 406, ch=2)


def test_cancel_stops_deliveries():
    c = connected()
    c.declare(1, "q")
    consume(c, 1, "q", "t")
    frames = c.rpc(1, C.Basic.Cancel(consumer_tag="t"))
    assert names(frames) == ["Basic.CancelOk"] and frames[0][1].consumer_tag == "t"
    assert c.publish(1, "", "q", b"x") == []
    assert queue(c, "q").message_count == 1


def test_cancel_unknown_tag_is_ok():
    c = connected()
    frames = c.rpc(1, C.Basic.Cancel(consumer_tag="never"))
    assert names(frames) == ["Basic.CancelOk"]


def test_no_ack_consumer():
    c = connected()
    c.declare(1, "q")
    consume(c, 1, "q", "t", no_ack=True)
    got = messages(c.publish(1, "", "q", b"x"))
    assert bodies(got) == [b"x"]
    assert queue(c, "q").unacked_count == 0
    # nothing to requeue when the channel closes
    c.rpc(1, C.Channel.Close(reply_code=200, reply_text="", class_id=0, method_id=0))
    assert queue(c, "q").message_count == 0


def test_round_robin_between_consumers():
    c = connected()
    c.open_channel(2)
    c.declare(1, "q")
    consume(c, 1, "q", "a", no_ack=True)
    consume(c, 2, "q", "b", no_ack=True)
    got = []
    for i in range(4):
        got += messages(c.publish(1, "", "q", b"x"))
    assert [m.method.consumer_tag for m in got] == ["a", "b", "a", "b"]


def test_publish_to_missing_exchange_404():
    c = connected()
    frames = c.publish(1, "nope", "rk", b"x")
    soft_close(frames, 404, text="NOT_FOUND - no exchange 'nope' in vhost '/'")
    close = close_frame(frames, 1)
    assert (close.class_id, close.method_id) == (60, 40)


def test_publish_to_internal_exchange_403():
    c = connected()
    c.call(1, C.Exchange.Declare(exchange="int", exchange_type="fanout", internal=True),
           "Exchange.DeclareOk")
    soft_close(c.publish(1, "int", "", b"x"), 403,
               text="ACCESS_REFUSED - cannot publish to internal exchange 'int' in vhost '/'")


# ---------------------------------------------------------------------- settle


@modes
def test_requeue_returns_to_original_position(mode):
    c = connected(mode)
    c.declare(1, "q")
    publish_n(c, 1, "q", 5)
    got = [c.get(1, "q") for _ in range(3)]
    assert bodies(got) == [b"m1", b"m2", b"m3"]
    assert c.rpc(1, C.Basic.Reject(delivery_tag=2, requeue=True)) == []
    assert c.rpc(1, C.Basic.Nack(delivery_tag=1, multiple=False, requeue=True)) == []
    again = [c.get(1, "q") for _ in range(4)]
    assert bodies(again) == [b"m1", b"m2", b"m4", b"m5"]
    assert [m.method.redelivered for m in again] == [True, True, False, False]
    assert c.get(1, "q") is None


def test_requeue_to_consumer_redelivers_in_order():
    c = connected()
    c.declare(1, "q")
    publish_n(c, 1, "q", 3)
    c.rpc(1, C.Basic.Qos(prefetch_count=3))
    _, msgs = consume(c, 1, "q", "t")
    assert bodies(msgs) == [b"m1", b"m2", b"m3"]
    frames = c.rpc(1, C.Basic.Nack(delivery_tag=0, multiple=True, requeue=True))
    again = messages(frames)
    assert bodies(again) == [b"m1", b"m2", b"m3"]
    assert all(m.method.redelivered for m in again)
    assert [m.method.delivery_tag for m in again] == [4, 5, 6]


def test_reject_without_requeue_drops():
    c = connected()
    c.declare(1, "q")
    publish_n(c, 1, "q", 1)
    c.get(1, "q")
    assert c.rpc(1, C.Basic.Reject(delivery_tag=1, requeue=False)) == []
    q = queue(c, "q")
    assert q.message_count == 0 and q.unacked_count == 0


@modes
def test_unknown_delivery_tag_406(mode):
    c = connected(mode)
    frames = c.ack(1, 42)
    close = soft_close(frames, 406, text="PRECONDITION_FAILED - unknown delivery tag 42")
    assert (close.class_id, close.method_id) == (60, 80)


@pytest.mark.parametrize("method, mid", [
    (C.Basic.Reject(delivery_tag=7, requeue=True), 90),
    (C.Basic.Nack(delivery_tag=7, requeue=True), 120)])
def test_unknown_delivery_tag_reject_nack_406(method, mid):
    c = connected()
    close = soft_close(c.rpc(1, method), 406, text="PRECONDITION_FAILED - unknown delivery tag 7")
    assert (close.class_id, close.method_id) == (60, mid)


def test_double_ack_406():
    c = connected()
    c.declare(1, "q")
    publish_n(c, 1, "q", 1)
    c.get(1, "q")
    assert c.ack(1, 1) == []
    soft_close(c.ack(1, 1), 406)


def test_multiple_ack():
    c = connected()
    c.declare(1, "q")
    publish_n(c, 1, "q", 5)
    for _ in range(5):
        c.get(1, "q")
    assert c.ack(1, 3, multiple=True) == []
    q = queue(c, "q")
    assert q.unacked_count == 2
    assert c.ack(1, 5) == []
    assert q.unacked_count == 1
    soft_close(c.ack(1, 2), 406)  # already settled by the multiple ack


def test_ack_multiple_zero_settles_all():
    c = connected()
    c.declare(1, "q")
    publish_n(c, 1, "q", 4)
    for _ in range(4):
        c.get(1, "q")
    assert c.ack(1, 0, multiple=True) == []
    assert queue(c, "q").unacked_count == 0


def test_multiple_nack_requeue_preserves_order():
    c = connected()
    c.declare(1, "q")
    publish_n(c, 1, "q", 4)
    for _ in range(4):
        c.get(1, "q")
    c.ack(1, 2)
    assert c.rpc(1, C.Basic.Nack(delivery_tag=4, multiple=True, requeue=True)) == []
    assert bodies([c.get(1, "q", no_ack=True) for _ in range(3)]) == [b"m1", b"m3", b"m4"]


def test_recover_requeues_unacked():
    c = connected()
    c.declare(1, "q")
    publish_n(c, 1, "q", 2)
    c.get(1, "q")
    c.get(1, "q")
    assert names(c.rpc(1, C.Basic.Recover(requeue=True))) == ["Basic.RecoverOk"]
    again = [c.get(1, "q") for _ in range(2)]
    assert bodies(again) == [b"m1", b"m2"] and all(m.method.redelivered for m in again)


def test_recover_requeue_false_540():
    c = connected()
    hard_close(c.rpc(1, C.Basic.Recover(requeue=False)), 540)


# ---------------------------------------------------------------------- qos


def test_qos_prefetch_per_consumer():
    c = connected()
    c.declare(1, "q")
    publish_n(c, 1, "q", 5)
    assert names(c.rpc(1, C.Basic.Qos(prefetch_count=2))) == ["Basic.QosOk"]
    _, msgs = consume(c, 1, "q", "t")
    assert bodies(msgs) == [b"m1", b"m2"]
    got = messages(c.ack(1, 1))
    assert bodies(got) == [b"m3"]
    got = messages(c.ack(1, 3, multiple=True))
    assert bodies(got) == [b"m4", b"m5"]


def test_qos_per_consumer_applies_to_each_consumer():
    c = connected()
    c.declare(1, "a")
    c.declare(1, "b")
    publish_n(c, 1, "a", 3)
    publish_n(c, 1, "b", 3)
    c.rpc(1, C.Basic.Qos(prefetch_count=2))
    _, ma = consume(c, 1, "a", "ta")
    _, mb = consume(c, 1, "b", "tb")
    assert len(ma) == 2 and len(mb) == 2


def test_qos_global_is_channel_wide():
    c = connected()
    c.declare(1, "a")
    c.declare(1, "b")
    publish_n(c, 1, "a", 3, "a")
    publish_n(c, 1, "b", 3, "b")
    c.rpc(1, C.Basic.Qos(prefetch_count=3, global_=True))
    _, ma = consume(c, 1, "a", "ta")
    _, mb = consume(c, 1, "b", "tb")
    assert len(ma) + len(mb) == 3
    assert len(messages(c.ack(1, 1))) == 1
    assert len(c.conn.channels[1].unacked) == 3


def test_qos_global_and_per_consumer_both_apply():
    c = connected()
    c.declare(1, "a")
    c.declare(1, "b")
    publish_n(c, 1, "a", 5, "a")
    publish_n(c, 1, "b", 5, "b")
    c.rpc(1, C.Basic.Qos(prefetch_count=3, global_=True))
    c.rpc(1, C.Basic.Qos(prefetch_count=1, global_=False))
    _, ma = consume(c, 1, "a", "ta")
    _, mb = consume(c, 1, "b", "tb")
    assert (len(ma), len(mb)) == (1, 1)


def test_qos_global_false_resizes_existing_consumers():
    """A deliberate difference from RabbitMQ (which applies it to future consumers only):
    celery resizes prefetch live and expects the existing consumer to follow."""
    c = connected()
    c.declare(1, "q")
    publish_n(c, 1, "q", 5)
    c.rpc(1, C.Basic.Qos(prefetch_count=1))
    _, msgs = consume(c, 1, "q", "t")
    assert len(msgs) == 1
    frames = c.rpc(1, C.Basic.Qos(prefetch_count=3))
    assert names(frames)[0] == "Basic.QosOk"
    assert bodies(messages(frames)) == [b"m2", b"m3"]


def test_qos_zero_is_unlimited():
    c = connected()
    c.declare(1, "q")
    publish_n(c, 1, "q", 20)
    c.rpc(1, C.Basic.Qos(prefetch_count=0))
    _, msgs = consume(c, 1, "q")
    assert len(msgs) == 20


def test_get_counts_toward_global_prefetch():
    c = connected()
    c.declare(1, "q")
    publish_n(c, 1, "q", 3)
    c.rpc(1, C.Basic.Qos(prefetch_count=1, global_=True))
    c.get(1, "q")
    _, msgs = consume(c, 1, "q")
    assert msgs == []


def test_prefetch_size_nonzero_540():
    c = connected()
    hard_close(c.rpc(1, C.Basic.Qos(prefetch_size=1000, prefetch_count=1)), 540)


# ---------------------------------------------------------------------- confirms


@modes
def test_confirms_coalesced(mode):
    c = connected(mode)
    c.declare(1, "q")
    assert names(c.rpc(1, C.Confirm.Select())) == ["Confirm.SelectOk"]
    frames = c.publish(1, "", "q", b"1")
    assert names(frames) == ["Basic.Ack"]
    assert (frames[0][1].delivery_tag, frames[0][1].multiple) == (1, False)
    # several publishes in one read: one ack with multiple=true
    batch = []
    for i in range(3):
        batch += c.publish_frames("", "q", b"x")
    frames = c.rpc(1, *batch)
    if mode == "whole":
        assert names(frames) == ["Basic.Ack"]
        assert (frames[0][1].delivery_tag, frames[0][1].multiple) == (4, True)
    # whatever the coalescing, every seq is confirmed exactly once, in order
    acked = set()
    for _, f in frames:
        assert f.name == "Basic.Ack"
        lo = max(acked) + 1 if acked else 2
        new = set(range(lo, f.delivery_tag + 1)) if f.multiple else {f.delivery_tag}
        assert not (new & acked)
        acked |= new
    assert acked == {2, 3, 4}


def test_confirm_select_nowait():
    c = connected()
    assert c.rpc(1, C.Confirm.Select(nowait=True)) == []
    assert c.conn.channels[1].confirms is not None


@modes
def test_mandatory_return_before_ack(mode):
    c = connected(mode)
    c.rpc(1, C.Confirm.Select())
    frames = c.publish(1, "amq.direct", "nowhere", b"lost", mandatory=True)
    assert names(frames) == ["Basic.Return", "ContentHeader", "ContentBody", "Basic.Ack"]
    ret = messages(frames)[0]
    assert (ret.method.reply_code, ret.method.reply_text, ret.method.exchange,
            ret.method.routing_key) == (312, "NO_ROUTE", "amq.direct", "nowhere")
    assert ret.body == b"lost"
    assert frames[-1][1].delivery_tag == 1


def test_unroutable_without_mandatory_is_dropped_but_confirmed():
    c = connected()
    c.rpc(1, C.Confirm.Select())
    frames = c.publish(1, "amq.direct", "nowhere", b"lost")
    assert names(frames) == ["Basic.Ack"]


def test_mandatory_return_without_confirms():
    c = connected()
    frames = c.publish(1, "", "no-such-queue", b"x", mandatory=True)
    assert names(frames) == ["Basic.Return", "ContentHeader", "ContentBody"]


def test_confirm_seq_counts_unroutables():
    c = connected()
    c.declare(1, "q")
    c.rpc(1, C.Confirm.Select())
    c.publish(1, "", "nowhere", b"x")
    frames = c.publish(1, "", "q", b"y")
    assert frames[-1][1].delivery_tag == 2


# ---------------------------------------------------------------------- consumers


def test_consumer_tag_reuse_530():
    c = connected()
    c.declare(1, "q")
    consume(c, 1, "q", "t")
    frames = c.rpc(1, C.Basic.Consume(queue="q", consumer_tag="t"))
    hard_close(frames, 530, "NOT_ALLOWED - attempt to reuse consumer tag 't'")


def test_same_tag_on_two_channels_is_fine():
    c = connected()
    c.open_channel(2)
    c.declare(1, "q")
    consume(c, 1, "q", "t")
    consume(c, 2, "q", "t")


def test_exclusive_consumer_403():
    c = connected()
    c.open_channel(2)
    c.declare(1, "q")
    consume(c, 1, "q", "x", exclusive=True)
    frames = c.rpc(2, C.Basic.Consume(queue="q", consumer_tag="y"))
    soft_close(frames, 403, ch=2,
               text="ACCESS_REFUSED - queue 'q' in vhost '/' in exclusive use")


def test_exclusive_consume_on_busy_queue_403():
    c = connected()
    c.open_channel(2)
    c.declare(1, "q")
    consume(c, 1, "q", "x")
    frames = c.rpc(2, C.Basic.Consume(queue="q", consumer_tag="y", exclusive=True))
    soft_close(frames, 403, ch=2)


def test_exclusive_queue_405_from_another_connection():
    owner = connected()
    other = connected(broker=owner.broker)
    owner.declare(1, "ex", exclusive=True)
    text = ("RESOURCE_LOCKED - cannot obtain exclusive access to locked queue 'ex' in vhost "
            "'/'. It could be originally declared on another connection or the exclusive "
            "property value does not match that of the original declaration.")
    for method in (C.Queue.Declare(queue="ex", exclusive=True),
                   C.Queue.Declare(queue="ex", passive=True),
                   C.Basic.Consume(queue="ex"),
                   C.Basic.Get(queue="ex"),
                   C.Queue.Purge(queue="ex"),
                   C.Queue.Delete(queue="ex"),
                   C.Queue.Bind(queue="ex", exchange="amq.direct", routing_key="k")):
        frames = other.rpc(1, method)
        soft_close(frames, 405, text=text[:255])
        other.rpc(1, C.Channel.CloseOk())
        other.open_channel(1)
    assert "ex" in owner.broker.vhosts["/"].queues


def test_exclusive_queue_deleted_when_owner_connection_lost():
    owner = connected()
    other = connected(broker=owner.broker)
    owner.declare(1, "ex", exclusive=True, durable=True)
    owner.conn.connection_lost()
    assert "ex" not in owner.broker.vhosts["/"].queues
    # now anyone may declare it
    other.declare(1, "ex")


def test_exclusive_queue_survives_channel_close():
    c = connected()
    c.declare(1, "ex", exclusive=True)
    c.rpc(1, C.Channel.Close(reply_code=200, reply_text="", class_id=0, method_id=0))
    assert "ex" in c.broker.vhosts["/"].queues
    c.rpc(0, C.Connection.Close(reply_code=200, reply_text="", class_id=0, method_id=0))
    assert "ex" not in c.broker.vhosts["/"].queues


def test_auto_delete_queue_after_last_consumer_cancel():
    c = connected()
    c.declare(1, "ad", auto_delete=True)
    consume(c, 1, "ad", "a")
    consume(c, 1, "ad", "b")
    c.rpc(1, C.Basic.Cancel(consumer_tag="a"))
    assert "ad" in c.broker.vhosts["/"].queues
    c.rpc(1, C.Basic.Cancel(consumer_tag="b"))
    assert "ad" not in c.broker.vhosts["/"].queues


def test_auto_delete_queue_without_consumers_stays():
    c = connected()
    c.declare(1, "ad", auto_delete=True)
    c.rpc(1, C.Channel.Close(reply_code=200, reply_text="", class_id=0, method_id=0))
    assert "ad" in c.broker.vhosts["/"].queues


def test_auto_delete_queue_when_consumer_channel_closes():
    c = connected()
    c.declare(1, "ad", auto_delete=True)
    consume(c, 1, "ad", "a")
    c.rpc(1, C.Channel.Close(reply_code=200, reply_text="", class_id=0, method_id=0))
    assert "ad" not in c.broker.vhosts["/"].queues


@pytest.mark.parametrize("notify", [True, False])
def test_server_cancel_on_queue_delete(notify):
    caps = {"consumer_cancel_notify": True} if notify else {}
    consumer = connected(capabilities=caps)
    admin = connected(broker=consumer.broker)
    consumer.declare(1, "q")
    consume(consumer, 1, "q", "t")
    frames = admin.rpc(1, C.Queue.Delete(queue="q"))
    assert names(frames) == ["Queue.DeleteOk"]
    got = consumer.recv()
    if notify:
        assert names(got) == ["Basic.Cancel"]
        assert got[0][0] == 1 and got[0][1].consumer_tag == "t" and got[0][1].nowait
        # the client may answer with cancel-ok
        assert consumer.rpc(1, C.Basic.CancelOk(consumer_tag="t")) == []
    else:
        assert got == []
    # the tag is free again and the channel is still usable
    consumer.declare(1, "q")
    consume(consumer, 1, "q", "t")


def test_queue_delete_own_consumer_cancel_after_delete_ok():
    # RabbitMQ answers delete-ok first: py-amqp (kombu) raises ConsumerCancelled on a
    # basic.cancel that arrives while it waits for delete-ok
    c = connected(capabilities={"consumer_cancel_notify": True})
    c.declare(1, "q")
    consume(c, 1, "q", "t")
    frames = c.rpc(1, C.Queue.Delete(queue="q"))
    assert names(frames) == ["Queue.DeleteOk", "Basic.Cancel"]
    assert frames[1][1].consumer_tag == "t"
    assert "q" not in c.broker.vhosts["/"].queues


def test_queue_delete_if_unused_and_if_empty():
    c = connected()
    c.open_channel(2)
    c.declare(1, "q")
    consume(c, 1, "q", "t")
    soft_close(c.rpc(2, C.Queue.Delete(queue="q", if_unused=True)), 406, ch=2,
               text="PRECONDITION_FAILED - queue 'q' in vhost '/' in use")
    c.rpc(2, C.Channel.CloseOk())
    c.open_channel(2)
    c.declare(2, "full")
    c.publish(2, "", "full", b"x")
    soft_close(c.rpc(2, C.Queue.Delete(queue="full", if_empty=True)), 406, ch=2,
               text="PRECONDITION_FAILED - queue 'full' in vhost '/' not empty")


def test_queue_delete_missing_is_ok():
    c = connected()
    f = c.call(1, C.Queue.Delete(queue="missing"), "Queue.DeleteOk")
    assert f.message_count == 0


def test_queue_purge_counts_ready_only():
    c = connected()
    c.declare(1, "q")
    publish_n(c, 1, "q", 3)
    c.get(1, "q")
    f = c.call(1, C.Queue.Purge(queue="q"), "Queue.PurgeOk")
    assert f.message_count == 2
    c.ack(1, 1)


def test_declare_ok_counts():
    c = connected()
    c.declare(1, "q")
    publish_n(c, 1, "q", 2)
    ok = c.declare(1, "q", passive=True)
    assert (ok.queue, ok.message_count, ok.consumer_count) == ("q", 2, 0)
    c.open_channel(2)
    c.rpc(2, C.Basic.Qos(prefetch_count=1))
    consume(c, 2, "q", "t")
    # message-count is ready messages only; consumer-count counts all consumers
    ok = c.declare(1, "q", passive=True)
    assert (ok.message_count, ok.consumer_count) == (1, 1)


def test_server_named_queue_and_last_queue_shortcut():
    c = connected()
    ok = c.declare(1, "")
    assert ok.queue.startswith("amq.gen-")
    c.publish(1, "", ok.queue, b"x")
    assert c.get(1, "").body == b"x"  # "" = the last queue declared on this channel


def test_no_previously_declared_queue_404():
    c = connected()
    soft_close(c.rpc(1, C.Basic.Get(queue="")), 404,
               text="NOT_FOUND - no previously declared queue")


# ---------------------------------------------------------------------- content framing


@modes
@pytest.mark.parametrize("frame_max", [4096, 131072])
def test_large_body_split_into_frame_max_minus_8(mode, frame_max):
    c = connected(mode, frame_max=frame_max)
    c.declare(1, "q")
    chunk = frame_max - 8
    body = bytes(i % 251 for i in range(chunk * 2 + 100))
    assert c.publish(1, "", "q", body) == []
    frames = c.rpc(1, C.Basic.Get(queue="q"))
    assert names(frames) == ["Basic.GetOk", "ContentHeader"] + ["ContentBody"] * 3
    sizes = [len(f.value) for _, f in frames[2:]]
    assert sizes == [chunk, chunk, 100]
    assert messages(frames)[0].body == body


def test_body_of_exactly_one_chunk_is_one_frame():
    c = connected(frame_max=4096)
    c.declare(1, "q")
    c.publish(1, "", "q", b"z" * 4088)
    assert c.get(1, "q").body_frames == 1


@modes
def test_empty_body_has_no_body_frames(mode):
    c = connected(mode)
    c.declare(1, "q")
    assert c.publish(1, "", "q", b"") == []
    consume_frames = c.rpc(1, C.Basic.Consume(queue="q", consumer_tag="t"))
    assert names(consume_frames) == ["Basic.ConsumeOk", "Basic.Deliver", "ContentHeader"]
    assert consume_frames[2][1].body_size == 0


def test_body_in_many_small_frames_is_assembled():
    c = connected()
    c.declare(1, "q")
    from pamqp import body as pbody, header as pheader
    parts = [b"ab", b"cd", b"e"]
    frames = [C.Basic.Publish(exchange="", routing_key="q"),
              pheader.ContentHeader(0, 5, C.Basic.Properties())] + \
        [pbody.ContentBody(p) for p in parts]
    assert c.rpc(1, *frames) == []
    assert c.get(1, "q").body == b"abcde"


def test_interleaved_content_on_two_channels():
    from pamqp import body as pbody, header as pheader
    c = connected("bytewise")
    c.open_channel(2)
    c.declare(1, "q")
    c.send(1, C.Basic.Publish(exchange="", routing_key="q"),
           pheader.ContentHeader(0, 4, C.Basic.Properties()), pbody.ContentBody(b"on"))
    c.send(2, C.Basic.Publish(exchange="", routing_key="q"),
           pheader.ContentHeader(0, 3, C.Basic.Properties()), pbody.ContentBody(b"two"))
    c.send(1, pbody.ContentBody(b"e!"))
    assert c.recv() == []
    assert bodies([c.get(1, "q", no_ack=True) for _ in range(2)]) == [b"two", b"one!"]


# ---------------------------------------------------------------------- lifecycle / limits


@modes
def test_channel_close_requeues_unacked(mode):
    c = connected(mode)
    c.open_channel(2)
    c.declare(1, "q")
    publish_n(c, 1, "q", 3)
    c.rpc(2, C.Basic.Qos(prefetch_count=10))
    _, msgs = consume(c, 2, "q", "t")
    assert len(msgs) == 3
    c.ack(2, 2)
    frames = c.rpc(2, C.Channel.Close(reply_code=200, reply_text="", class_id=0, method_id=0))
    assert names(frames) == ["Channel.CloseOk"]
    again = [c.get(1, "q") for _ in range(2)]
    assert bodies(again) == [b"m1", b"m3"] and all(m.method.redelivered for m in again)


def test_channel_error_requeues_unacked_to_other_consumer():
    c = connected()
    c.open_channel(2)
    c.declare(1, "q")
    consume(c, 2, "q", "other")
    c.rpc(2, C.Basic.Cancel(consumer_tag="other"))
    publish_n(c, 1, "q", 1)
    c.get(1, "q")
    soft_close(c.ack(1, 99), 406)  # channel 1 fails: its unacked message goes back
    _, msgs = consume(c, 2, "q", "again")
    assert bodies(msgs) == [b"m1"] and msgs[0].method.redelivered


def test_immediate_true_540():
    c = connected()
    c.declare(1, "q")
    frames = c.rpc(1, *c.publish_frames("", "q", b"x", immediate=True))
    hard_close(frames, 540, "NOT_IMPLEMENTED - immediate=true")
    assert queue(c, "q").message_count == 0


def test_max_message_size_406():
    cfg = Config(limits=Limits(max_message_size=1000))
    c = connected(broker=Broker(cfg))
    c.declare(1, "q")
    assert c.publish(1, "", "q", b"x" * 1000) == []
    frames = c.publish(1, "", "q", b"x" * 1001)
    close = soft_close(frames, 406)
    assert "1001" in close.reply_text and "1000" in close.reply_text
    assert queue(c, "q").message_count == 1


def test_channel_flow():
    c = connected()
    f = c.call(1, C.Channel.Flow(active=True), "Channel.FlowOk")
    assert f.active is True
    hard_close(c.rpc(1, C.Channel.Flow(active=False)), 540)


def test_access_request_stub():
    """Deprecated access.request (30,10), still sent by some old clients."""
    import struct
    c = connected()
    payload = struct.pack(">HH", 30, 10) + b"\x05/data" + b"\x1c"  # realm, active..read bits
    c.send_raw(struct.pack(">BHI", 1, 1, len(payload)) + payload + b"\xce")
    out = c.conn.data_to_send()
    assert out == b"\x01\x00\x01\x00\x00\x00\x06\x00\x1e\x00\x0b\x00\x01\xce"


def test_messages_to_several_queues_delivered_once_each():
    c = connected()
    c.declare(1, "a")
    c.declare(1, "b")
    for q in ("a", "b"):
        c.call(1, C.Queue.Bind(queue=q, exchange="amq.topic", routing_key="x.*"),
               "Queue.BindOk")
        c.call(1, C.Queue.Bind(queue=q, exchange="amq.topic", routing_key="#"),
               "Queue.BindOk")
    c.publish(1, "amq.topic", "x.y", b"m")
    assert queue(c, "a").message_count == 1 and queue(c, "b").message_count == 1


# ---------------------------------------------------------------------- transactions


def test_tx_publish_visible_only_after_commit_and_rollback_discards():
    c = connected()
    c.declare(1, "q")
    assert names(c.rpc(1, C.Tx.Select())) == ["Tx.SelectOk"]
    assert c.publish(1, "", "q", b"a") == []
    assert queue(c, "q").message_count == 0
    assert names(c.rpc(1, C.Tx.Commit())) == ["Tx.CommitOk"]
    assert queue(c, "q").message_count == 1
    c.publish(1, "", "q", b"b")
    assert names(c.rpc(1, C.Tx.Rollback())) == ["Tx.RollbackOk"]
    assert queue(c, "q").message_count == 1
    assert c.get(1, "q", no_ack=True).body == b"a"


def test_tx_ack_applied_at_commit_and_errors_detected_immediately():
    c = connected()
    c.declare(1, "q")
    c.publish(1, "", "q", b"x")
    c.rpc(1, C.Tx.Select())
    c.get(1, "q")
    assert c.ack(1, 1) == []
    assert queue(c, "q").unacked_count == 1
    c.rpc(1, C.Tx.Commit())
    assert queue(c, "q").unacked_count == 0
    soft_close(c.ack(1, 5), 406, text="PRECONDITION_FAILED - unknown delivery tag 5")


def test_tx_return_before_commit_ok():
    c = connected()
    c.rpc(1, C.Tx.Select())
    c.publish(1, "amq.direct", "nowhere", b"x", mandatory=True)
    frames = c.rpc(1, C.Tx.Commit())
    assert names(frames) == ["Basic.Return", "ContentHeader", "ContentBody", "Tx.CommitOk"]


def test_tx_without_select_and_mode_mixing_406():
    c = connected()
    soft_close(c.rpc(1, C.Tx.Commit()), 406,
               text="PRECONDITION_FAILED - channel is not transactional")
    c.rpc(1, C.Channel.CloseOk())
    c.open_channel(1)
    c.rpc(1, C.Tx.Select())
    soft_close(c.rpc(1, C.Confirm.Select()), 406,
               text="PRECONDITION_FAILED - cannot switch from tx to confirm mode")
    c.open_channel(2)
    c.rpc(2, C.Confirm.Select())
    soft_close(c.rpc(2, C.Tx.Select()), 406, ch=2,
               text="PRECONDITION_FAILED - cannot switch from confirm to tx mode")
