"""metrics.py: the counters after real frames through the sans-I/O core, and the rates the
sampler derives from them with the time passed in."""
from __future__ import annotations

import pytest
from pamqp import commands as C
from pamqp import frame as pframe

from amqpbroker import metrics
from amqpbroker.broker import Broker
from amqpbroker.metrics import ChannelCounters, Counters, QueueCounters, RateSampler
from amqpbroker.scheduler import Scheduler
from amqpbroker.store.sqlite import SQLiteStore

from .sim import connected, messages, names


def _setup():
    c = connected()
    c.declare(1, "q")
    return c, c.broker.vhosts["/"]


def test_publish_counts_on_channel_exchange_and_queue():
    c, vh = _setup()
    c.call(1, C.Exchange.Declare(exchange="x", exchange_type="fanout"), "Exchange.DeclareOk")
    c.call(1, C.Queue.Declare(queue="q2"), "Queue.DeclareOk")
    c.call(1, C.Queue.Bind(queue="q", exchange="x"), "Queue.BindOk")
    c.call(1, C.Queue.Bind(queue="q2", exchange="x"), "Queue.BindOk")
    for _ in range(3):
        assert c.publish(1, "", "q", b"abc") == []
    assert c.publish(1, "x", "", b"abcd") == []
    ch = c.conn.channels[1]
    assert ch.counters.publish == 4
    assert vh.default_exchange.counters.as_dict() == {
        "publish_in": 3, "publish_out": 3, "return_unroutable": 0, "drop_unroutable": 0,
        "drop_duplicate": 0}
    assert vh.exchanges["x"].counters.as_dict() == {  # one message, two queue copies
        "publish_in": 1, "publish_out": 1, "return_unroutable": 0, "drop_unroutable": 0,
        "drop_duplicate": 0}
    assert vh.queues["q"].counters.publish == 4 and vh.queues["q2"].counters.publish == 1
    # another vhost's default exchange is not this one's
    assert Broker().vhosts["/"].default_exchange.counters.publish_in == 0


def test_unroutable_returned_or_dropped():
    c, vh = _setup()
    frames = c.publish(1, "", "nowhere", b"x", mandatory=True)
    assert names(frames)[0] == "Basic.Return"
    assert c.publish(1, "amq.direct", "nowhere", b"x") == []
    ch = c.conn.channels[1]
    assert (ch.counters.publish, ch.counters.return_unroutable,
            ch.counters.drop_unroutable) == (2, 1, 1)
    assert (vh.default_exchange.counters.return_unroutable,
            vh.default_exchange.counters.drop_unroutable) == (1, 0)
    assert vh.exchanges["amq.direct"].counters.as_dict() == {
        "publish_in": 1, "publish_out": 0, "return_unroutable": 0, "drop_unroutable": 1,
        "drop_duplicate": 0}


def test_deliveries_gets_acks_and_redeliveries():
    c, vh = _setup()
    q = vh.queues["q"]
    for _ in range(4):
        c.publish(1, "", "q", b"m")
    c.call(1, C.Basic.Qos(prefetch_count=2), "Basic.QosOk")
    frames = c.rpc(1, C.Basic.Consume(queue="q", consumer_tag="t"))
    assert len(messages(frames)) == 2
    c.ack(1, 1)                                   # one more delivered (3)
    c.rpc(1, C.Basic.Nack(delivery_tag=2, requeue=True))  # redelivered to the consumer
    ch = c.conn.channels[1]
    assert (ch.counters.deliver, ch.counters.ack, ch.counters.redeliver) == (4, 1, 1)
    assert (q.counters.deliver, q.counters.ack, q.counters.redeliver) == (4, 1, 1)
    c.rpc(1, C.Basic.Ack(delivery_tag=0, multiple=True))  # tags 3, 4; the 4th delivered
    assert (ch.counters.ack, ch.counters.deliver) == (3, 5)
    assert (q.counters.ack, q.counters.deliver) == (3, 5)
    c.rpc(1, C.Basic.Ack(delivery_tag=5))
    assert ch.counters.ack == 4 and q.counters.ack == 4
    c.call(1, C.Basic.Cancel(consumer_tag="t"), "Basic.CancelOk")
    c.publish(1, "", "q", b"g")
    c.publish(1, "", "q", b"g")
    assert c.get(1, "q", no_ack=True) is not None
    assert c.get(1, "q") is not None
    assert c.get(1, "q") is None
    assert (q.counters.get_no_ack, q.counters.get, q.counters.get_empty) == (1, 1, 1)
    assert (ch.counters.get_no_ack, ch.counters.get, ch.counters.get_empty) == (1, 1, 1)
    st = metrics.message_stats(q.counters)
    assert st["deliver_get"] == 7 and st["deliver_get_details"] == {"rate": 0.0}


def test_no_ack_deliveries_and_confirms():
    c, vh = _setup()
    c.rpc(1, C.Basic.Consume(queue="q", consumer_tag="t", no_ack=True))
    c.call(1, C.Confirm.Select(), "Confirm.SelectOk")
    frames = c.publish(1, "", "q", b"m") + c.publish(1, "", "q", b"m")
    assert names(frames).count("Basic.Ack") == 2
    ch = c.conn.channels[1]
    assert (ch.counters.deliver_no_ack, ch.counters.deliver, ch.counters.confirm) == (2, 0, 2)
    assert vh.queues["q"].counters.deliver_no_ack == 2


def test_connection_bytes_in_and_out():
    c, _vh = _setup()
    st = c.conn.counters
    before_in, before_out = st.recv_oct, st.send_oct
    data = b"".join(pframe.marshal(f, 1) for f in c.publish_frames("", "q", b"hello"))
    c.send_raw(data)
    assert st.recv_oct == before_in + len(data)
    out = c.conn.data_to_send()
    assert out == b"" and st.send_oct == before_out
    c.send(1, C.Basic.Get(queue="q", no_ack=True))
    out = c.conn.data_to_send()
    assert b"hello" in out and st.send_oct == before_out + len(out)


def test_vhost_totals_keep_what_closed_channels_and_connections_counted():
    c, vh = _setup()
    c.publish(1, "", "q", b"m")
    c.open_channel(2)
    c.publish(2, "", "q", b"m")
    b = c.broker
    list(metrics.broker_objects(b))  # refreshes the totals
    assert vh.counters.channels.publish == 2
    c.rpc(1, C.Channel.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
    list(metrics.broker_objects(b))
    assert vh.counters.channels.publish == 2 and vh.counters.retired_channels.publish == 1
    sent = c.conn.counters.recv_oct
    c.rpc(0, C.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
    list(metrics.broker_objects(b))
    assert vh.counters.channels.publish == 2 and vh.counters.retired_channels.publish == 2
    assert vh.counters.connections.recv_oct >= sent > 0
    c.conn.connection_lost()  # teardown again: nothing counted twice
    list(metrics.broker_objects(b))
    assert vh.counters.channels.publish == 2


def test_confirm_counted_when_written_after_the_sync(tmp_path):
    store = SQLiteStore(str(tmp_path))
    try:
        b = Broker(store=store)
        c = connected(broker=b)
        c.declare(1, "d", durable=True)
        store.sync_blocking()
        c.call(1, C.Confirm.Select(), "Confirm.SelectOk")
        for _ in range(3):
            c.publish(1, "", "d", b"p", C.Basic.Properties(delivery_mode=2))
        ch = c.conn.channels[1]
        assert ch.counters.publish == 3 and ch.counters.confirm == 0  # not yet durable
        store.sync_blocking()
        b.after_sync()
        assert names(c.recv()) == ["Basic.Ack"]  # one multiple=true ack for the three
        assert ch.counters.confirm == 3
    finally:
        store.close()


def test_refused_publish_is_not_counted_into_the_queue():
    c, vh = _setup()
    c.declare(1, "small", arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    c.publish(1, "", "small", b"1")
    c.publish(1, "", "small", b"2")  # refused: the exchange routed it, the queue took none
    assert vh.queues["small"].counters.publish == 1
    assert vh.default_exchange.counters.publish_out == 2  # routed, one refused it
    assert c.conn.channels[1].counters.publish == 2


def test_tx_acks_count_at_commit_and_get_redeliveries():
    c, vh = _setup()
    q = vh.queues["q"]
    c.publish(1, "", "q", b"m")
    assert c.get(1, "q") is not None
    c.rpc(1, C.Basic.Reject(delivery_tag=1, requeue=True))
    got = c.get(1, "q")
    assert got.method.redelivered
    ch = c.conn.channels[1]
    assert (ch.counters.redeliver, q.counters.redeliver, q.counters.get) == (1, 1, 2)
    c.call(1, C.Tx.Select(), "Tx.SelectOk")
    c.ack(1, 2)
    assert ch.counters.ack == 0 and q.counters.ack == 0  # buffered in the transaction
    c.call(1, C.Tx.Commit(), "Tx.CommitOk")
    assert ch.counters.ack == 1 and q.counters.ack == 1


# ---------------------------------------------------------------------- rates

def test_counters_sample_into_rates():
    s = QueueCounters()
    assert s.rate("publish") == 0.0
    s.sample(10.0)
    s.publish += 50
    s.ack += 10
    s.sample(15.0)
    assert s.rate("publish") == pytest.approx(10.0) and s.rate("ack") == pytest.approx(2.0)
    s.sample(20.0)
    assert s.rate("publish") == 0.0
    s.sample(20.0)  # no time passed: the rates stay
    assert s.rates["publish"] == 0.0
    st = metrics.message_stats(s)
    assert st["publish"] == 50 and st["publish_details"] == {"rate": 0.0}


def test_rate_sampler_runs_on_the_scheduler_every_interval():
    sched = Scheduler()
    stats = [ChannelCounters(), QueueCounters()]
    sampler = RateSampler(sched, lambda: stats, interval=5.0)
    sampler.start(100.0)
    assert sampler.last == 100.0 and sched.next_deadline() == 105.0
    stats[0].publish = 25
    stats[1].deliver = 5
    assert sched.run_due(104.9) == 0
    assert sched.run_due(105.0) == 1
    assert stats[0].rate("publish") == pytest.approx(5.0)
    assert stats[1].rate("deliver") == pytest.approx(1.0)
    assert sched.next_deadline() == 110.0
    sampler.stop()
    assert sched.next_deadline() is None


def test_broker_sampler_covers_every_object_with_rates():
    c, vh = _setup()
    b = c.broker
    b.sampler.start(0.0)
    for _ in range(10):
        c.publish(1, "", "q", b"m")
    b.scheduler.run_due(5.0)
    q = vh.queues["q"]
    assert q.counters.rate("publish") == pytest.approx(2.0)
    assert c.conn.channels[1].counters.rate("publish") == pytest.approx(2.0)
    assert vh.counters.channels.rate("publish") == pytest.approx(2.0)
    assert vh.default_exchange.counters.rate("publish_in") == pytest.approx(2.0)
    assert c.conn.counters.rate("recv_oct") > 0
    b.sampler.stop()


def test_counter_classes_have_rabbitmq_names():
    assert set(metrics.QueueCounters.FIELDS) >= {"publish", "deliver", "deliver_no_ack", "get",
                                                 "get_no_ack", "ack", "redeliver"}
    assert set(metrics.ChannelCounters.FIELDS) >= {"publish", "confirm", "return_unroutable",
                                                   "drop_unroutable"}
    assert metrics.ExchangeCounters.FIELDS == ("publish_in", "publish_out", "return_unroutable",
                                               "drop_unroutable", "drop_duplicate")
    assert isinstance(QueueCounters(), Counters)
    with pytest.raises(AttributeError):  # slots: a typo is an error, not a new counter
        QueueCounters().publsh = 1


def test_deliver_no_ack_is_derived_from_the_tags_and_survives_the_channel():
    # deliver_no_ack = tags used - direct reply-to deliveries - the counted kinds
    c, vh = _setup()
    c.open_channel(2)
    c.rpc(1, C.Basic.Consume(queue="amq.rabbitmq.reply-to", consumer_tag="r", no_ack=True))
    c.publish(1, "", "q", b"req", C.Basic.Properties(reply_to="amq.rabbitmq.reply-to"))
    req = c.get(2, "q", no_ack=True)
    c.publish(2, "", req.properties.reply_to, b"reply")       # a reply: uses tag 1 on ch 1
    c.rpc(1, C.Basic.Consume(queue="q", consumer_tag="t", no_ack=True))
    c.publish(2, "", "q", b"m")
    c.publish(2, "", "q", b"m")
    ch1 = c.conn.channels[1]
    assert (ch1.counters.tags, ch1.counters.replies, ch1.counters.deliver_no_ack) == (3, 1, 2)
    assert c.conn.channels[2].counters.get_no_ack == 1
    assert c.conn.channels[2].counters.deliver_no_ack == 0
    c.rpc(1, C.Channel.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
    list(metrics.broker_objects(c.broker))
    assert vh.counters.channels.deliver_no_ack == 2
    assert vh.counters.channels.as_dict()["deliver_no_ack"] == 2
