"""Admin.drain (issue 10 item 3): one poison pill per current consumer of a queue, so a
fleet of workers finishes what was queued before and stops.  Through the facade, with
workers connected through the sans-I/O core (real frames)."""
from __future__ import annotations

import pytest
from pamqp import commands as C

from amqpbroker import errors
from amqpbroker.admin import Admin
from amqpbroker.broker import Broker
from amqpbroker.config import Config, Permission, User
from amqpbroker.store.sqlite import SQLiteStore

from .sim import connected, messages, names


def worker(broker, tag, prefetch=1, capabilities=None):
    w = connected(broker=broker, capabilities=capabilities)
    w.call(1, C.Basic.Qos(prefetch_count=prefetch), "Basic.QosOk")
    frames = w.rpc(1, C.Basic.Consume(queue="work", consumer_tag=tag))
    assert names(frames)[0] == "Basic.ConsumeOk"
    return w, messages(frames)


def run_fleet(broker, workers, inbox) -> dict:
    """Each worker acks what it holds, one at a time, until nothing more comes: returns
    worker tag -> (bodies it processed, whether a pill came last, cancels received)."""
    log = {tag: ([], [], []) for tag in workers}
    pending = dict(inbox)
    progress = True
    while progress:
        progress = False
        for tag, w in workers.items():
            held = pending.pop(tag, [])
            for m in held:
                done, pills, _c = log[tag]
                (pills if m.properties.headers else done).append(m.body)
                frames = w.ack(1, m.method.delivery_tag)
                log[tag][2].extend(f.consumer_tag for _ch, f in frames
                                   if getattr(f, "name", "") == "Basic.Cancel")
                pending.setdefault(tag, []).extend(messages(frames))
                progress = True
            for t2, w2 in workers.items():  # deliveries that another's ack released
                more = messages(w2.recv())
                if more:
                    pending.setdefault(t2, []).extend(more)
                    progress = True
    return log


def test_drain_three_workers_finish_the_queue_and_stop():
    b = Broker()
    p = connected(broker=b)
    p.declare(1, "work", durable=True)
    for i in range(30):
        p.publish(1, "", "work", b"job%02d" % i, C.Basic.Properties(delivery_mode=2))
    workers, inbox = {}, {}
    for tag in ("w1", "w2", "w3"):
        workers[tag], inbox[tag] = worker(b, tag)
    assert Admin(b).drain("/", "work") == 3
    st = b.vhosts["/"].queues["work"].stats()
    assert (st.messages, st.unacked) == (30 - 3 + 3, 3)   # 27 jobs and 3 pills ready
    log = run_fleet(b, workers, inbox)
    done = sorted(body for d, _p, _c in log.values() for body in d)
    assert done == [b"job%02d" % i for i in range(30)]    # each exactly once
    for tag, (_d, pills, cancels) in log.items():
        assert pills == [b""] and cancels == [tag]
    st = b.vhosts["/"].queues["work"].stats()
    assert (st.messages, st.unacked, st.consumers) == (0, 0, 0)


def test_drain_pills_are_persistent_on_a_durable_queue_and_survive_a_restart(tmp_path):
    store = SQLiteStore(str(tmp_path))
    b = Broker(store=store)
    w = connected(broker=b)
    w.declare(1, "work", durable=True)
    w.declare(1, "tmp")
    for q in ("work", "tmp"):
        for t in ("c", "d"):
            assert names(w.rpc(1, C.Basic.Consume(queue=q, consumer_tag=f"{t}-{q}"))) == \
                ["Basic.ConsumeOk"]
    assert Admin(b).drain("/", "work") == 2 and Admin(b).drain("/", "tmp") == 2
    got = messages(w.recv())
    assert sorted((m.method.consumer_tag, m.properties.delivery_mode) for m in got) == \
        [("c-tmp", None), ("c-work", 2), ("d-tmp", None), ("d-work", 2)]
    store.sync_blocking()
    other = SQLiteStore(str(tmp_path))       # what a restart after a crash would read
    try:
        rec = other.recover()
    finally:
        other.db.close()
    kept = rec.messages[("/", "work")]
    assert len(kept) == 2 and all(sm.message.headers == {"x-poison-pill": True}
                                  for sm in kept)
    assert ("/", "tmp") not in rec.messages
    store.db.close()


def test_drain_counts_consumers_not_already_stopping():
    b = Broker()
    p = connected(broker=b)
    p.declare(1, "work")
    p.publish(1, "", "work", b"job")
    w1, got1 = worker(b, "w1")
    w2, got2 = worker(b, "w2")
    assert [m.body for m in got1] == [b"job"] and got2 == []
    a = Admin(b)
    assert a.drain("/", "work") == 2
    assert [m.properties.headers for m in messages(w2.recv())] == [{"x-poison-pill": True}]
    assert a.drain("/", "work") == 1          # w2 is stopping: only w1 counts
    assert b.vhosts["/"].queues["work"].message_count == 2


def test_drain_without_consumers_appends_nothing():
    b = Broker()
    p = connected(broker=b)
    p.declare(1, "work")
    assert Admin(b).drain("/", "work") == 0
    assert b.vhosts["/"].queues["work"].message_count == 0


def test_drain_reports_pills_a_full_queue_refused():
    b = Broker()
    p = connected(broker=b)
    p.declare(1, "work", arguments={"x-max-length": 2, "x-overflow": "reject-publish"})
    for tag in ("w1", "w2", "w3"):
        worker(b, tag)
    for i in range(4):                            # one each, one waits
        p.publish(1, "", "work", b"job%d" % i)
    assert b.vhosts["/"].queues["work"].message_count == 1
    assert Admin(b).drain("/", "work") == 1       # three pills, room for one
    assert b.vhosts["/"].queues["work"].message_count == 2


def test_drain_rules_and_errors():
    users = (User("guest", password="guest", tags=("administrator",)),
             User("bob", password="bob", tags=("management",)))
    perms = (Permission("guest", "/"),
             Permission("bob", "/", configure=".*", write="^bob-", read=".*"))
    b = Broker(Config(users=users, permissions=perms))
    connected(broker=b).declare(1, "work")
    with pytest.raises(errors.AccessRefused,
                       match="access to exchange 'amq.default' in vhost '/' refused"):
        Admin(b, "bob").drain("/", "work")
    assert Admin(b, "guest").drain("/", "work") == 0
    with pytest.raises(errors.NotFound, match="no queue 'missing'"):
        Admin(b).drain("/", "missing")
    with pytest.raises(errors.NotFound, match="no vhost"):
        Admin(b).drain("nowhere", "work")
