"""dramatiq end to end with its RabbitMQ broker (pika): a real ``dramatiq`` worker
subprocess (one process, one thread) against amqpbroker and RabbitMQ.

dramatiq declares three durable queues per queue name: ``Q`` (dead-lettering to ``Q.XQ``
through the default exchange), ``Q.DQ`` for delayed messages and retries (the worker holds
them until due, then enqueues them on ``Q``) and ``Q.XQ`` (a 7-day TTL) for the messages
that failed for good. Actors leave JSON lines in a state directory: dramatiq's result
backends need Redis or Memcached.
"""
from __future__ import annotations

import json
import time

import pika
import pytest

from conftest import REFERENCE_URL
from frameworks_support import Cleanup, Workers, forget_app_module, import_app_module, \
    pika_channel, queue_depth, reference_broker, restartable_broker, wait_until

APP = '''
import json, os, pathlib, time
import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

PREFIX = {prefix!r}
STATE = pathlib.Path({state!r})
broker = RabbitmqBroker(url={url!r}, confirm_delivery=True)
dramatiq.set_broker(broker)


def note(key, **fields):
    """One line per run of an actor; returns how many runs there were for ``key``."""
    with open(STATE / key, "a") as f:
        f.write(json.dumps({{"t": time.time(), "pid": os.getpid(), **fields}}) + "\\n")
    return len((STATE / key).read_text().splitlines())


@dramatiq.actor(queue_name=PREFIX, actor_name=PREFIX + "_record")
def record(key, n):
    note(key, n=n)


@dramatiq.actor(queue_name=PREFIX, actor_name=PREFIX + "_flaky", max_retries=3,
                min_backoff=200, max_backoff=400)
def flaky(key, failures):
    if note(key) <= failures:
        raise RuntimeError("flaky")


@dramatiq.actor(queue_name=PREFIX, actor_name=PREFIX + "_doomed", max_retries=1,
                min_backoff=50, max_backoff=50)
def doomed(key):
    note(key)
    raise RuntimeError("doomed")
'''


class DramatiqApp:
    def __init__(self, broker, tmp_path):
        self.broker = broker
        self.tmp_path = tmp_path
        self.prefix = broker.name("dramatiq")
        self.module = self.prefix.replace("-", "_")
        self.state = tmp_path / "state"
        self.state.mkdir()
        path = tmp_path / f"{self.module}.py"
        path.write_text(APP.format(prefix=self.prefix, state=str(self.state), url=broker.url))
        self.mod = import_app_module(path)
        self.workers = Workers(tmp_path)
        self.cleanup = Cleanup(broker)
        for q in (self.prefix, self.prefix + ".DQ", self.prefix + ".XQ"):
            self.cleanup.queue(q)

    def runs(self, key: str) -> list[dict]:
        try:
            return [json.loads(line) for line in (self.state / key).read_text().splitlines()]
        except FileNotFoundError:
            return []

    def close(self) -> None:
        try:
            self.workers.kill_all()
            self.mod.broker.close()
        finally:
            forget_app_module(self.mod)
            self.cleanup.run()


@pytest.fixture(scope="module", params=["amqpbroker", "rabbitmq"] if REFERENCE_URL
                else ["amqpbroker"])
def app(request, tmp_path_factory):
    broker = (request.getfixturevalue("_amqpbroker") if request.param == "amqpbroker"
              else reference_broker())
    a = DramatiqApp(broker, tmp_path_factory.mktemp("dramatiq"))
    try:
        # the worker declares its queues when it starts consuming: declare them first
        a.mod.broker.declare_queue(a.prefix)
        a.worker = a.workers.python("worker", "-m", "dramatiq", a.module, "--processes", "1",
                                    "--threads", "1", "--worker-shutdown-timeout", "1000")
        a.worker.wait_for_output("Worker process is ready for action.")
        yield a
    finally:
        a.close()


def test_actors_run_in_the_worker(app):
    for i in range(5):
        app.mod.record.send("rec", i)
    wait_until(lambda: len(app.runs("rec")) == 5, what="five runs")
    runs = app.runs("rec")
    assert [r["n"] for r in runs] == list(range(5))
    assert {r["pid"] for r in runs} != {app.worker.proc.pid}   # a forked worker process ran them


def test_retries_with_backoff(app):
    """Two failures, then success: each retry goes through the delay queue ``Q.DQ`` and
    comes back after its back-off (200..400 ms with dramatiq's jitter)."""
    app.mod.flaky.send("flaky", 2)
    wait_until(lambda: len(app.runs("flaky")) == 3, what="three runs")
    t = [r["t"] for r in app.runs("flaky")]
    assert all(b - a >= 0.15 for a, b in zip(t, t[1:])), t
    time.sleep(0.6)      # no fourth run: the third succeeded
    assert len(app.runs("flaky")) == 3
    assert queue_depth(app.broker, app.prefix + ".XQ") == 0


def test_failed_message_dead_lettered_to_xq(app):
    """After its last retry the worker nacks the message without requeue: the queue's
    dead-letter arguments take it to ``Q.XQ`` with an ``x-death`` saying so."""
    app.mod.doomed.send("doomed")
    wait_until(lambda: len(app.runs("doomed")) == 2, what="two runs")
    wait_until(lambda: queue_depth(app.broker, app.prefix + ".XQ") == 1,
               what="the dead letter")
    with pika_channel(app.broker) as ch:
        method, props, body = ch.basic_get(app.prefix + ".XQ", auto_ack=False)
        ch.basic_nack(method.delivery_tag, requeue=True)
    message = json.loads(body)
    assert message["actor_name"] == app.prefix + "_doomed"
    assert message["options"]["retries"] == 1     # the retries before the last run
    assert "RuntimeError" in message["options"]["traceback"]
    (death,) = props.headers["x-death"]
    assert death["queue"] == app.prefix and death["reason"] == "rejected"
    assert death["exchange"] == "" and death["routing-keys"] == [app.prefix]
    assert death["count"] == 1
    assert props.delivery_mode == 2


def test_delayed_message(app):
    t0 = time.time()
    app.mod.record.send_with_options(args=("later", 1), delay=1000)
    app.mod.record.send("now", 2)
    wait_until(lambda: app.runs("now"), what="the undelayed message")
    assert not app.runs("later")
    (run,) = wait_until(lambda: app.runs("later"), what="the delayed message")
    assert run["t"] - t0 >= 0.95
    assert queue_depth(app.broker, app.prefix + ".DQ") == 0


def test_priority_queue_declared_equivalently(app):
    """Redeclaring dramatiq's queues with the same arguments is fine (every worker and
    client does); other arguments are refused 406 on both brokers."""
    with pika_channel(app.broker) as ch:
        ok = ch.queue_declare(app.prefix, durable=True, arguments={
            "x-dead-letter-exchange": "", "x-dead-letter-routing-key": app.prefix + ".XQ"})
        assert ok.method.consumer_count == 1
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
            ch.queue_declare(app.prefix, durable=True, arguments={"x-max-priority": 10})
    assert ei.value.reply_code == 406


@pytest.mark.amqpbroker_only("restarts the broker")
def test_worker_and_client_survive_a_broker_restart(tmp_path):
    """The worker's consumers reconnect after the broker restarts; the delayed message it
    held (unacked, from ``Q.DQ``) comes back to it from the durable queue and still runs
    once, when due; the client's next send reconnects too."""
    with restartable_broker(tmp_path) as b:
        a = DramatiqApp(b, tmp_path)
        try:
            a.mod.broker.declare_queue(a.prefix)
            w = a.workers.python("worker", "-m", "dramatiq", a.module, "--processes", "1",
                                 "--threads", "1", "--worker-shutdown-timeout", "1000")
            w.wait_for_output("Worker process is ready for action.")
            a.mod.record.send("before", 0)
            wait_until(lambda: a.runs("before"), what="the first run")
            t0 = time.time()
            a.mod.record.send_with_options(args=("delayed", 1), delay=2000)
            time.sleep(0.3)        # taken by the worker from the delay queue, held
            b.restart()
            a.mod.record.send("after", 2)
            wait_until(lambda: a.runs("after") and a.runs("delayed"),
                       what=f"both runs after the restart:\n{w.output()[-3000:]}")
            (delayed,) = a.runs("delayed")
            assert delayed["t"] - t0 >= 1.95
            time.sleep(0.3)
            assert len(a.runs("after")) == 1 and len(a.runs("delayed")) == 1
        finally:
            a.close()
