"""taskiq with taskiq-aio-pika end to end, against amqpbroker and RabbitMQ.

Results: a worker started in this process with ``run_receiver_task`` on a broker object of
its own (its own connections), sharing an in-memory result backend with the client broker
(taskiq has no AMQP result backend; the others need Redis and the like). Also a real
``taskiq worker`` subprocess. Delays both ways taskiq-aio-pika offers: its delay queue
(per-message expiration, then dead-lettered to the task exchange) and the
``x-delayed-message`` exchange of RabbitMQ's delayed-message plugin, which amqpbroker has
built in and Debian's RabbitMQ 3.10 lacks.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time

import pytest
from taskiq.brokers.inmemory_broker import InmemoryResultBackend
from taskiq.api import run_receiver_task
from taskiq_aio_pika import AioPikaBroker, Exchange, Queue

from frameworks_support import Cleanup, Workers, wait_until

pytestmark = pytest.mark.anyio

TIMEOUT = 10.0


class Names:
    """The exchange and queues of one test's taskiq broker, deleted after."""

    def __init__(self, broker):
        self.prefix = broker.name("taskiq")
        self.cleanup = Cleanup(broker)
        self.exchange = self.cleanup.exchange(self.prefix)
        self.queue = self.cleanup.queue(self.prefix)
        self.dead = self.cleanup.queue(self.prefix + ".dead")
        self.delay = self.cleanup.queue(self.prefix + ".delay")
        self.plugin_exchange = self.cleanup.exchange(self.prefix + ".plugin_delay")

    def broker_kwargs(self, plugin: bool = False) -> dict:
        kw = dict(exchange=Exchange(name=self.exchange),
                  task_queues=[Queue(name=self.queue)],          # a quorum queue
                  dead_letter_queue=Queue(name=self.dead))
        if plugin:
            kw.update(delayed_message_exchange_plugin=True,
                      delayed_message_exchange=Exchange(
                          name=self.plugin_exchange, type="x-delayed-message",
                          arguments={"x-delayed-type": "topic"}))
        else:
            kw["delay_queue"] = Queue(name=self.delay)
        return kw


@pytest.fixture
def names(broker):
    n = Names(broker)
    yield n
    n.cleanup.run()


@contextlib.asynccontextmanager
async def client_and_worker(broker, names, plugin: bool = False):
    """A client broker with tasks, and a worker (same tasks) listening in this loop."""
    results = InmemoryResultBackend()
    brokers = [AioPikaBroker(broker.url, **names.broker_kwargs(plugin))
               .with_result_backend(results) for _ in range(2)]
    for b in brokers:
        register_tasks(b)
    client, worker = brokers
    worker.is_worker_process = True     # its startup opens the connection it reads on
    await client.startup()
    await worker.startup()
    runner = asyncio.create_task(run_receiver_task(worker, run_startup=False))
    try:
        yield client
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(runner, TIMEOUT)
        for b in brokers:
            with contextlib.suppress(Exception):
                await b.shutdown()


def register_tasks(b: AioPikaBroker) -> None:
    @b.task(task_name="e2e.add")
    async def add(x: int, y: int) -> int:
        return x + y

    @b.task(task_name="e2e.fail")
    async def fail() -> None:
        raise ValueError("task failed")

    @b.task(task_name="e2e.stamp")
    async def stamp(label: str) -> list:
        return [label, time.time()]


async def test_tasks_with_results(broker, names):
    async with client_and_worker(broker, names) as client:
        add = client.find_task("e2e.add")
        tasks = [await add.kiq(i, 10) for i in range(5)]
        results = [await t.wait_result(timeout=TIMEOUT) for t in tasks]
        assert [r.return_value for r in results] == [10, 11, 12, 13, 14]
        assert not any(r.is_err for r in results)
        failed = await (await client.find_task("e2e.fail").kiq()).wait_result(timeout=TIMEOUT)
        assert failed.is_err and "task failed" in str(failed.error)


async def test_delayed_task_through_the_delay_queue(broker, names):
    """``delay`` label: the message waits in the delay queue with a per-message
    expiration and is dead-lettered to the task exchange when it expires."""
    async with client_and_worker(broker, names) as client:
        stamp = client.find_task("e2e.stamp")
        t0 = time.time()
        later = await stamp.kicker().with_labels(delay=1).kiq("later")
        now = await stamp.kiq("now")
        got_now = await now.wait_result(timeout=TIMEOUT)
        got_later = await later.wait_result(timeout=TIMEOUT)
    assert got_now.return_value[1] - t0 < 0.9
    assert got_later.return_value[1] - t0 >= 0.95


@pytest.mark.amqpbroker_only("Debian's RabbitMQ 3.10 has no rabbitmq_delayed_message_exchange "
                             "plugin (amqpbroker has x-delayed-message built in)")
async def test_delayed_task_through_the_delayed_message_exchange(broker, names):
    async with client_and_worker(broker, names, plugin=True) as client:
        stamp = client.find_task("e2e.stamp")
        t0 = time.time()
        later = await stamp.kicker().with_labels(delay=1).kiq("later")
        now = await stamp.kiq("now")
        got_now = await now.wait_result(timeout=TIMEOUT)
        got_later = await later.wait_result(timeout=TIMEOUT)
    assert got_now.return_value[1] - t0 < 0.9
    assert got_later.return_value[1] - t0 >= 0.95


WORKER_APP = '''
import json, os, pathlib, time
from taskiq_aio_pika import AioPikaBroker, Exchange, Queue

STATE = pathlib.Path({state!r})
broker = AioPikaBroker({url!r}, exchange=Exchange(name={exchange!r}),
                       task_queues=[Queue(name={queue!r})],
                       dead_letter_queue=Queue(name={dead!r}), delay_queue=Queue(name={delay!r}))


@broker.task(task_name="e2e.record")
async def record(key: str) -> None:
    (STATE / key).write_text(json.dumps({{"pid": os.getpid(), "t": time.time()}}))
'''


async def test_taskiq_worker_subprocess(broker, names, tmp_path):
    """``taskiq worker module:broker``: tasks sent here run in the worker process."""
    state = tmp_path / "state"
    state.mkdir()
    module = names.prefix.replace("-", "_")
    (tmp_path / f"{module}.py").write_text(WORKER_APP.format(
        state=str(state), url=broker.url, exchange=names.exchange, queue=names.queue,
        dead=names.dead, delay=names.delay))
    workers = Workers(tmp_path)
    client = AioPikaBroker(broker.url, **names.broker_kwargs())

    @client.task(task_name="e2e.record")
    async def record(key: str) -> None: ...

    try:
        await client.startup()     # declares the exchange and queues the worker binds
        w = workers.python("worker", "-m", "taskiq", "worker", f"{module}:broker",
                           "--workers", "1", "--no-configure-logging")
        await record.kiq("first")
        await record.kicker().with_labels(delay=0.5).kiq("delayed")
        for key in ("first", "delayed"):
            await asyncio.to_thread(wait_until, lambda key=key: (state / key).exists(),
                                    TIMEOUT, what=f"{key} from the worker:\n{w.output()}")
        runs = {k: json.loads((state / k).read_text()) for k in ("first", "delayed")}
        assert runs["first"]["pid"] != os.getpid()
        assert runs["first"]["pid"] == runs["delayed"]["pid"]
    finally:
        workers.kill_all()
        await client.shutdown()
