"""The broker-wide scheduler (amqpbroker/scheduler.py): order, cancellation, guarded
callbacks, the ``on_change`` wake-up, and the queues' timers going through it."""
from __future__ import annotations

import logging

import pytest

from amqpbroker.broker import Broker
from amqpbroker.config import Config
from amqpbroker.scheduler import Scheduler


def test_runs_due_calls_in_deadline_order_and_only_those():
    s, ran = Scheduler(), []
    s.call_at(3.0, ran.append, "c")
    s.call_at(1.0, ran.append, "a")
    s.call_at(2.0, ran.append, "b")
    s.call_at(1.0, ran.append, "a2")          # same deadline: first scheduled runs first
    assert s.next_deadline() == 1.0
    assert s.run_due(2.0) == 3
    assert ran == ["a", "a2", "b"]
    assert s.next_deadline() == 3.0 and len(s) == 1
    assert s.run_due(2.5) == 0
    s.run_due(3.0)
    assert ran == ["a", "a2", "b", "c"] and s.next_deadline() is None and len(s) == 0


def test_cancel_is_lazy_idempotent_and_hides_the_deadline():
    s, ran = Scheduler(), []
    h1 = s.call_at(1.0, ran.append, 1)
    s.call_at(2.0, ran.append, 2)
    s.cancel(h1)
    s.cancel(h1)
    assert len(s) == 1
    assert s.next_deadline() == 2.0           # the cancelled head is not a deadline
    s.run_due(5.0)
    assert ran == [2]
    s.cancel(h1)                              # after the run: still nothing
    h3 = s.call_at(6.0, ran.append, 3)
    s.run_due(6.0)
    s.cancel(h3)                              # a call that already ran: no effect
    assert ran == [2, 3] and len(s) == 0 and s.next_deadline() is None


def test_many_cancellations_do_not_grow_the_heap():
    s = Scheduler()
    keep = s.call_at(1000.0, lambda: None)
    for i in range(10000):
        s.cancel(s.call_at(float(i), lambda: None))
    assert len(s._heap) < 200 and len(s) == 1
    assert s.next_deadline() == 1000.0
    s.cancel(keep)
    assert s.next_deadline() is None


def test_a_failing_callback_is_logged_and_the_others_still_run(caplog):
    s, ran = Scheduler(), []

    def boom():
        raise RuntimeError("injected scheduler fault")
    s.call_at(1.0, ran.append, "before")
    s.call_at(1.5, boom)
    s.call_at(2.0, ran.append, "after")
    with caplog.at_level(logging.ERROR):
        assert s.run_due(2.0) == 3            # never raises
    assert ran == ["before", "after"]
    (rec,) = [r for r in caplog.records if r.exc_info]
    assert "boom" in rec.getMessage() and "injected scheduler fault" in caplog.text
    assert s.next_deadline() is None


def test_on_change_only_when_the_earliest_deadline_moves_earlier():
    s, rings = Scheduler(), []
    s.on_change = lambda: rings.append(1)
    s.call_at(5.0, lambda: None)              # first deadline: the ticker must wake up
    assert len(rings) == 1
    s.call_at(7.0, lambda: None)              # later: the ticker's sleep is still right
    assert len(rings) == 1
    s.call_at(2.0, lambda: None)              # earlier: wake up
    assert len(rings) == 2
    h = s.call_at(1.0, lambda: None)
    s.cancel(h)
    s.call_at(1.5, lambda: None)              # earlier than every live call
    assert len(rings) == 4


def test_calls_scheduled_by_a_callback_for_now_wait_for_the_next_run():
    """A callback that reschedules itself for ``now`` cannot hold the loop; calls that
    were already due still run in this pass."""
    s, ran = Scheduler(), []

    def again():
        ran.append("again")
        s.call_at(0.5, again)                 # due already: next run_due
    s.call_at(1.0, again)
    s.call_at(1.7, ran.append, "older")
    assert s.run_due(2.0) == 2
    assert ran == ["again", "older"]
    assert s.next_deadline() == 0.5
    s.run_due(2.0)
    assert ran == ["again", "older", "again"]


def test_now_is_the_run_time_during_a_run():
    s, seen = Scheduler(), []
    s.call_at(1.0, lambda: seen.append(s.now))
    s.run_due(4.25)
    assert seen == [4.25] and s.now is None


# ---------------------------------------------------------------------- the queues' timers


class Clock:
    def __init__(self, now: float = 100.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def broker_on(clock):
    b = Broker(Config(vhosts=("/", "v2"), permissions=()))
    for vh in b.vhosts.values():
        vh.clock = clock
    return b


def test_every_vhost_uses_the_broker_scheduler():
    clock = Clock()
    b = broker_on(clock)
    a = b.vhosts["/"].declare_queue("a", False, False, False, False,
                                    {"x-expires": 1000}, None)
    z = b.vhosts["v2"].declare_queue("z", False, False, False, False,
                                     {"x-expires": 500}, None)
    assert all(vh.scheduler is b.scheduler for vh in b.vhosts.values())
    assert b.scheduler.next_deadline() == pytest.approx(clock.now + 0.5)
    clock.now += 0.6
    b.scheduler.run_due(clock.now)
    assert z.deleted and not a.deleted
    assert b.scheduler.next_deadline() == pytest.approx(clock.now + 0.4)
    clock.now += 0.5
    b.scheduler.run_due(clock.now)
    assert a.deleted and b.scheduler.next_deadline() is None


def test_an_earlier_deadline_replaces_the_queue_call():
    clock = Clock()
    b = broker_on(clock)
    vh = b.vhosts["/"]
    q = vh.declare_queue("q", False, False, False, False, {"x-expires": 5000}, None)
    assert len(b.scheduler) == 1
    vh.timers.schedule(q, clock.now + 1)             # e.g. a message TTL sooner than x-expires
    assert len(b.scheduler) == 1 and b.scheduler.next_deadline() == clock.now + 1
    vh.timers.schedule(q, clock.now + 3)             # later: the queue says so itself when due
    assert len(b.scheduler) == 1 and b.scheduler.next_deadline() == clock.now + 1


def test_a_failing_queue_step_is_retried_one_second_later(monkeypatch, caplog):
    clock = Clock()
    b = broker_on(clock)
    vh = b.vhosts["/"]
    q = vh.declare_queue("q", False, False, False, False, {"x-expires": 100}, None)

    def broken(now):
        raise RuntimeError("injected queue timer fault")
    monkeypatch.setattr(q, "idle_expired", broken)
    clock.now += 0.2
    b.scheduler.run_due(clock.now)
    assert not q.deleted and "injected queue timer fault" in caplog.text
    assert b.scheduler.next_deadline() == pytest.approx(clock.now + 1.0)   # TIMER_RETRY
    monkeypatch.undo()
    clock.now += 1.0
    b.scheduler.run_due(clock.now)
    assert q.deleted and "q" not in vh.queues
