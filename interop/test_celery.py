"""celery end to end: real ``celery worker`` subprocesses (the solo pool, prefork for the pool
child killed) against amqpbroker and RabbitMQ, results over the ``rpc://`` backend, every
publish confirmed.

Each app is a small module written to ``tmp_path`` with its own names (task queue, its
exchange, the control exchange behind the pidbox, the event exchange), so tests sharing
RabbitMQ's ``/`` vhost never see each other's workers; what they declare is deleted after.
The stateless scenarios share one worker per broker (module scope); those that kill or stop
a worker start their own.
"""
from __future__ import annotations

import datetime
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest
from kombu.transport.native_delayed_delivery import calculate_routing_key

from conftest import REFERENCE_URL
from frameworks_support import (TIMEOUT, Cleanup, Workers, forget_app_module, import_app_module,
                                kombu_url, queue_depth, reference_broker, restartable_broker,
                                wait_until)

APP = '''
import os, pathlib, time
from celery import Celery
from kombu import Exchange, Queue

PREFIX = {prefix!r}
STATE = pathlib.Path({state!r})     # tasks leave files here: who ran what, when
EXCHANGE = Exchange(PREFIX, {exchange_type!r})
QUEUE_ARGS = {queue_args!r}

app = Celery(PREFIX, broker={url!r}, backend="rpc://")
app.conf.update(
    task_default_queue=PREFIX,
    task_default_exchange=PREFIX,
    task_queues=[
        Queue(PREFIX, EXCHANGE, routing_key=PREFIX, queue_arguments=QUEUE_ARGS),
        Queue(PREFIX + ".custom", EXCHANGE, routing_key=PREFIX + ".custom",
              queue_arguments=QUEUE_ARGS),
    ],
    task_routes={{"e2e.routed": {{"queue": PREFIX + ".custom"}}}},
    control_exchange=PREFIX + ".ctl",
    event_exchange=PREFIX + ".ev",
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    broker_connection_timeout=5,
    broker_transport_options={{"confirm_publish": True}},   # every publish waits for its ack
    result_expires=60,
)


@app.task(name="e2e.add")
def add(x, y):
    return x + y


@app.task(name="e2e.routed", bind=True)
def routed(self):
    return {{"routing_key": self.request.delivery_info["routing_key"],
             "hostname": self.request.hostname}}


@app.task(name="e2e.flaky", bind=True, max_retries=5)
def flaky(self, fail_times):
    if self.request.retries < fail_times:
        raise self.retry(countdown=0.1)
    return self.request.retries


@app.task(name="e2e.gives_up", bind=True, max_retries=2)
def gives_up(self):
    raise self.retry(countdown=0.05, exc=ValueError("still failing"))


@app.task(name="e2e.slow", bind=True, acks_late=True, reject_on_worker_lost=True)
def slow(self, key, seconds):
    """Sleeps the first time only: a redelivered run finds the first run's file."""
    first = not any(STATE.glob(key + ".*.started"))
    (STATE / f"{{key}}.{{os.getpid()}}.started").touch()
    if first:
        time.sleep(seconds)
    return {{"pid": os.getpid(), "redelivered": self.request.delivery_info["redelivered"]}}


@app.task(name="e2e.record")
def record(key, seconds):
    (STATE / (key + ".started")).write_text(str(os.getpid()))
    time.sleep(seconds)
    (STATE / (key + ".done")).write_text(str(os.getpid()))
    return os.getpid()
'''


class CeleryApp:
    """An app module in ``tmp_path``, imported here as the client, run by workers."""

    def __init__(self, broker, tmp_path, *, exchange_type="direct", queue_args=None):
        self.broker = broker
        self.tmp_path = tmp_path
        self.prefix = broker.name("celery")
        self.module = self.prefix.replace("-", "_")
        self.state = tmp_path / f"{self.module}-state"
        self.state.mkdir()
        (tmp_path / f"{self.module}.py").write_text(APP.format(
            prefix=self.prefix, state=str(self.state), url=kombu_url(broker),
            exchange_type=exchange_type, queue_args=queue_args or {}))
        self.mod = import_app_module(tmp_path / f"{self.module}.py")
        self.app = self.mod.app
        self.workers = Workers(tmp_path)
        self.cleanup = Cleanup(broker)
        for q in (self.prefix, self.prefix + ".custom"):
            self.cleanup.queue(q)
        for x in (self.prefix, self.prefix + ".ctl.pidbox", "reply." + self.prefix + ".ctl.pidbox",
                  self.prefix + ".ev"):
            self.cleanup.exchange(x)

    def worker(self, name: str, *extra: str, pool: str = "solo"):
        """Start ``celery worker`` (solo pool unless told) and wait until it is ready."""
        node = f"{name}-{self.prefix}@{socket.gethostname()}"
        w = self.workers.start(name, [
            sys.executable, "-m", "celery", "-A", self.module, "worker", f"--pool={pool}",
            "-n", node, "--without-mingle", "--without-gossip", "-l", "info", *extra])
        w.node = node
        w.wait_for_output(f"{node} ready.")
        return w

    def close(self) -> None:
        try:
            self.workers.kill_all()
            self.app.close()
        finally:
            forget_app_module(self.mod)
            self.cleanup.run()


@pytest.fixture
def capp(broker, tmp_path):
    a = CeleryApp(broker, tmp_path)
    yield a
    a.close()


@pytest.fixture(scope="module", params=["amqpbroker", "rabbitmq"] if REFERENCE_URL
                else ["amqpbroker"])
def running(request, tmp_path_factory):
    """One app and one worker per broker for the scenarios that leave the worker as it was."""
    broker = (request.getfixturevalue("_amqpbroker") if request.param == "amqpbroker"
              else reference_broker())
    a = CeleryApp(broker, tmp_path_factory.mktemp("celery"))
    try:
        a.w = a.worker("shared")
        yield a
    finally:
        a.close()


# --------------------------------------------------------------------------- one worker


def test_task_result_over_rpc_backend(running):
    m = running.mod
    results = [m.add.delay(i, i) for i in range(5)]
    assert [r.get(timeout=TIMEOUT) for r in results] == [0, 2, 4, 6, 8]
    assert results[0].state == "SUCCESS"


def test_forty_tasks(running):
    from celery import group
    results = group(running.mod.add.s(i, 1) for i in range(40)).apply_async()
    assert results.get(timeout=30) == list(range(1, 41))


def test_countdown_and_eta(running):
    """A held ETA task does not block the ones behind it: the worker raises its prefetch
    with Basic.Qos while it holds the message (and lowers it again after)."""
    m = running.mod
    t0 = time.monotonic()
    later = m.add.apply_async((1, 1), countdown=1.5)
    at = m.add.apply_async((2, 2), eta=datetime.datetime.now(datetime.timezone.utc)
                           + datetime.timedelta(seconds=1))
    now = m.add.delay(3, 3)
    assert now.get(timeout=TIMEOUT) == 6
    assert time.monotonic() - t0 < 1.0, "an ETA task held back the task behind it"
    assert at.get(timeout=TIMEOUT) == 4
    assert time.monotonic() - t0 >= 0.95
    assert later.get(timeout=TIMEOUT) == 2
    assert time.monotonic() - t0 >= 1.45
    # the prefetch went back down: the next plain task still runs at once
    assert m.add.delay(4, 4).get(timeout=TIMEOUT) == 8


def test_retries(running):
    m = running.mod
    assert m.flaky.delay(2).get(timeout=TIMEOUT) == 2
    r = m.gives_up.delay()
    with pytest.raises(ValueError, match="still failing"):
        r.get(timeout=TIMEOUT)
    assert r.state == "FAILURE"


def test_routing_to_custom_queue(running):
    m = running.mod
    got = m.routed.delay().get(timeout=TIMEOUT)
    assert got == {"routing_key": running.prefix + ".custom", "hostname": running.w.node}
    # the same task sent explicitly to the default queue
    got = m.routed.apply_async(queue=running.prefix).get(timeout=TIMEOUT)
    assert got["routing_key"] == running.prefix


def test_canvas_chain_and_group(running):
    """A chain (each result the next task's first argument) and a group: every reply
    comes back to this client's rpc:// queue."""
    from celery import chain, group
    m = running.mod
    assert chain(m.add.s(1, 2), m.add.s(10), m.add.s(100)).apply_async().get(
        timeout=TIMEOUT) == 113
    assert group(m.add.s(i, i) for i in range(4)).apply_async().get(timeout=TIMEOUT) == [
        0, 2, 4, 6]


def test_inspect_ping_cli(running):
    """``celery inspect ping``: a broadcast on the pidbox fanout, the reply on its own queue."""
    out = subprocess.run(
        [sys.executable, "-m", "celery", "-A", running.module, "inspect", "ping",
         "-d", running.w.node, "--timeout", "5"],
        cwd=running.tmp_path, capture_output=True, text=True, timeout=30,
        env={**os.environ, "PYTHONPATH": str(running.tmp_path)})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "pong" in out.stdout and running.w.node in out.stdout


def test_remote_control_add_consumer_and_events(running):
    """Remote control with replies: ping, add_consumer (then a task through the new queue),
    active_queues, enable_events (then the worker's events on the event exchange)."""
    app, node = running.app, running.w.node
    assert app.control.ping(destination=[node], timeout=5) == [{node: {"ok": "pong"}}]
    extra = running.cleanup.queue(running.prefix + ".extra")
    running.cleanup.exchange(extra)
    reply = app.control.add_consumer(extra, reply=True, destination=[node], timeout=5)
    assert reply == [{node: {"ok": f"add consumer {extra}"}}]

    def consuming():
        queues = app.control.inspect(destination=[node], timeout=2).active_queues() or {}
        return extra in {q["name"] for q in queues.get(node, [])}
    wait_until(consuming, what="the worker to consume from the added queue")
    got = running.mod.routed.apply_async(queue=extra).get(timeout=TIMEOUT)
    assert got["routing_key"] == extra

    # events: off (no -E) until the remote control command turns them on
    seen: dict[str, list] = {}
    ready = threading.Event()
    with app.connection_for_read() as conn:
        recv = app.events.Receiver(conn, handlers={"*": lambda ev: on_event(ev)})
        task_id = []

        def on_event(ev):
            seen.setdefault(ev["type"], []).append(ev)
            if ev["type"] == "task-succeeded" and ev.get("uuid") in task_id:
                recv.should_stop = True

        inner = recv.on_consume_ready

        def on_consume_ready(*a, **kw):
            inner(*a, **kw)
            ready.set()
        recv.on_consume_ready = on_consume_ready
        errors = []

        def capture():
            try:
                recv.capture(limit=None, timeout=TIMEOUT, wakeup=False)
            except Exception as e:     # reported below
                errors.append(e)
        t = threading.Thread(target=capture, daemon=True)
        t.start()
        assert ready.wait(TIMEOUT)
        reply = app.control.enable_events(reply=True, destination=[node], timeout=5)
        assert reply == [{node: {"ok": "task events enabled"}}]
        # the id is known before the send: the events can come before delay() returns
        task_id.append(str(uuid.uuid4()))
        r = running.mod.add.apply_async((20, 22), task_id=task_id[0])
        assert r.get(timeout=TIMEOUT) == 42
        t.join(TIMEOUT + 2)
        assert not errors, errors
        app.control.disable_events(destination=[node])
    assert [e["uuid"] for e in seen["task-received"]] == [r.id]
    assert [e["uuid"] for e in seen["task-succeeded"]] == [r.id]
    assert seen["task-succeeded"][0]["hostname"] == node


# --------------------------------------------------------------------------- workers killed / stopped


def test_acks_late_task_redelivered_after_sigkill(capp):
    """An acks_late task whose worker is SIGKILLed mid-task goes back to the queue when the
    connection drops and a second worker runs it, flagged redelivered."""
    w1 = capp.worker("w1")
    w2 = capp.worker("w2")
    r = capp.mod.slow.delay("k", 60)
    started = wait_until(lambda: list(capp.state.glob("k.*.started")), what="the task to start")
    pid = int(started[0].name.split(".")[1])
    first, second = (w1, w2) if pid == w1.proc.pid else (w2, w1)
    assert first.proc.pid == pid
    first.signal(signal.SIGKILL)
    got = r.get(timeout=TIMEOUT)
    assert got == {"pid": second.proc.pid, "redelivered": True}
    assert queue_depth(capp.broker, capp.prefix) == 0


def test_prefork_child_killed_task_rejected_and_redelivered(capp):
    """Prefork pool: the pool child running an acks_late, reject_on_worker_lost task is
    SIGKILLed; the worker rejects the message with requeue and it comes back, redelivered,
    to a new child of the same worker. (The worker may notice the death only at its pool
    maintenance tick, every 5 s, on either broker.)"""
    w = capp.worker("w1", "-c", "1", pool="prefork")
    r = capp.mod.slow.delay("p", 60)
    started = wait_until(lambda: list(capp.state.glob("p.*.started")), what="the task to start")
    child = int(started[0].name.split(".")[1])
    assert child != w.proc.pid
    os.kill(child, signal.SIGKILL)
    got = r.get(timeout=TIMEOUT)
    assert got["redelivered"] is True and got["pid"] not in (child, w.proc.pid)
    assert "WorkerLostError" in w.output()


def test_warm_shutdown_keeps_queued_tasks(capp):
    """SIGTERM: the worker finishes what it is running and exits (the solo pool may take
    the one message it had prefetched first, on both brokers); the tasks still queued
    wait for the next worker, none lost and none run twice."""
    w1 = capp.worker("w1")
    keys = [f"r{i}" for i in range(5)]
    results = [capp.mod.record.delay(k, 0.5) for k in keys]
    wait_until(lambda: (capp.state / "r0.started").exists(), what="the first task to start")
    w1.signal(signal.SIGTERM)
    assert w1.wait(TIMEOUT) == 0, w1.output()[-3000:]
    assert "Warm shutdown" in w1.output()
    ran = [k for k in keys if (capp.state / f"{k}.started").exists()]
    assert ran == keys[:len(ran)] and 1 <= len(ran) <= 2
    assert all((capp.state / f"{k}.done").exists() for k in ran)   # none cut short
    assert queue_depth(capp.broker, capp.prefix) == len(keys) - len(ran)
    w2 = capp.worker("w2")
    assert [r.get(timeout=TIMEOUT) for r in results] == (
        [w1.proc.pid] * len(ran) + [w2.proc.pid] * (len(keys) - len(ran)))
    assert sorted(p.name for p in capp.state.iterdir()) == sorted(
        f"{k}.{s}" for k in keys for s in ("started", "done"))


def test_task_priorities(broker, tmp_path):
    """Task queues with ``x-max-priority``: tasks queued before a worker starts run
    highest priority first (equal priorities in the order sent)."""
    a = CeleryApp(broker, tmp_path, queue_args={"x-max-priority": 9})
    try:
        order = [("low", 1), ("high", 9), ("mid", 5), ("mid2", 5), ("none", None)]
        results = [a.mod.record.apply_async((k, 0), priority=p) for k, p in order]
        wait_until(lambda: queue_depth(broker, a.prefix) == len(order), what="queued tasks")
        a.worker("w1")
        for r in results:
            r.get(timeout=TIMEOUT)
        done = sorted(order, key=lambda kp: (a.state / f"{kp[0]}.done").stat().st_mtime_ns)
        assert [k for k, _ in done] == ["high", "mid", "mid2", "low", "none"]
    finally:
        a.close()


# --------------------------------------------------------------------------- native delayed delivery

DELAYED = [f"celery_delayed_{level}" for level in range(28)] + ["celery_delayed_delivery"]


def test_native_delayed_delivery(broker, tmp_path):
    """celery >= 5.5 with quorum task queues: a countdown task is published to the
    ``celery_delayed_27`` topic exchange with the delay's bits as routing key, waits in the
    TTL queue of each set bit and is dead-lettered on to ``celery_delayed_delivery``, which
    the worker bound its (topic) task queues to."""
    a = CeleryApp(broker, tmp_path, exchange_type="topic",
                  queue_args={"x-queue-type": "quorum"})
    try:
        # fixed names (celery has no prefix for them): deleted after, as the test's own
        for name in DELAYED:
            a.cleanup.exchange(name)
            a.cleanup.queue(name) if name != DELAYED[-1] else None
        a.worker("w1")
        # the worker declared the 28 levels (quorum TTL queues, overflow reject-publish)
        assert queue_depth(broker, "celery_delayed_0") == 0
        assert queue_depth(broker, "celery_delayed_27") == 0
        t0 = time.monotonic()
        r = a.mod.routed.apply_async(countdown=2)
        got = r.get(timeout=TIMEOUT)
        elapsed = time.monotonic() - t0
        assert 1.9 <= elapsed < 6, elapsed
        # it came the delayed way: the 28 bits of the delay before the queue's own key
        assert got["routing_key"] == calculate_routing_key(2, a.prefix + ".custom")
        assert got["routing_key"].startswith("0." * 26 + "1.0.")
        # a plain task meanwhile still goes straight to its queue
        assert a.mod.add.delay(5, 6).get(timeout=TIMEOUT) == 11
    finally:
        a.close()


@pytest.mark.amqpbroker_only("restarts the broker")
def test_worker_reconnects_after_broker_restart_delayed_task_kept(tmp_path):
    """A worker whose broker restarts reconnects by itself; the countdown task waiting in
    the durable ``celery_delayed_*`` TTL queues (a persistent message) survives the
    restart and still arrives on time, and so does a task published while the worker is
    reconnecting."""
    with restartable_broker(tmp_path) as b:
        a = CeleryApp(b, tmp_path, exchange_type="topic", queue_args={"x-queue-type": "quorum"})
        try:
            w = a.worker("w1")
            assert a.mod.add.delay(1, 1).get(timeout=TIMEOUT) == 2
            t0 = time.time()
            a.mod.record.apply_async(("delayed", 0), countdown=3)
            time.sleep(0.3)
            b.restart()
            a.mod.record.delay("meanwhile", 0)
            done = wait_until(lambda: (a.state / "delayed.done").exists()
                              and (a.state / "meanwhile.done").exists(),
                              what="both tasks after the restart")
            assert done
            assert (a.state / "delayed.done").stat().st_mtime - t0 >= 2.9
            assert "Connection to broker lost" in w.output()
            assert w.proc.poll() is None
        finally:
            a.close()
