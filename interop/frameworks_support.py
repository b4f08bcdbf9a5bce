"""Shared helpers for the framework end-to-end tests (``test_celery.py``,
``test_kombu_e2e.py``, ``test_dramatiq.py``, ``test_faststream.py``, ``test_taskiq.py``).

Not a test module. Two concerns live here:

- worker subprocesses (:class:`Workers`): each started in its own session, its output in a
  log file under ``tmp_path``, killed with its whole process group at teardown (so a prefork
  child or a crashed test never leaves a process behind);
- the broker seen from outside, through pika: queue depths, and deleting what a test
  declared, so a shared RabbitMQ is left clean (every test uses unique names).
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Callable, Iterable

import pika
import pika.exceptions

TIMEOUT = 15.0   # upper bound for a worker to start or a task to come back
HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent


def wait_until(pred: Callable[[], object], timeout: float = TIMEOUT, interval: float = 0.05,
               what: str = "condition"):
    """Poll ``pred`` until it returns something true; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def reference_broker():
    """The reference RabbitMQ as conftest's ``broker`` fixture gives it, for fixtures of a
    wider scope than that function-scoped one."""
    import urllib.parse

    from conftest import REFERENCE_URL, Broker
    u = urllib.parse.urlparse(REFERENCE_URL)
    return Broker("rabbitmq", REFERENCE_URL, u.hostname or "127.0.0.1", u.port or 5672)


def kombu_url(broker) -> str:
    """kombu's spelling of the broker's URL: ``//`` at the end is vhost ``/``."""
    return f"pyamqp://guest:guest@{broker.host}:{broker.port}//"


# --------------------------------------------------------------------------- app modules


def import_app_module(path: pathlib.Path):
    """Import the app module a test wrote to ``path`` (its directory is on the workers'
    PYTHONPATH, so they import the same file by name): the client side of the app."""
    import importlib.util
    name = path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def forget_app_module(module) -> None:
    sys.modules.pop(module.__name__, None)


# --------------------------------------------------------------------------- subprocesses


class Worker:
    """One subprocess (a celery or dramatiq worker), its output in ``log``."""

    def __init__(self, name: str, proc: subprocess.Popen, log: pathlib.Path):
        self.name = name
        self.proc = proc
        self.log = log

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_output(self, text: str, timeout: float = TIMEOUT) -> None:
        def seen():
            if text in self.output():
                return True
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.proc.returncode} before "
                                     f"{text!r}:\n{self.output()[-4000:]}")
            return False
        try:
            wait_until(seen, timeout, what=f"{text!r} from {self.name}")
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- {self.name} output:\n{self.output()[-4000:]}")

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the worker's process group (its pool children too)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def wait(self, timeout: float = TIMEOUT) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        else:
            # the leader is gone; a child of its group may still be there
            self.signal(signal.SIGKILL)


class Workers:
    """Starts subprocesses for one test and kills every one of them at teardown."""

    def __init__(self, tmp_path: pathlib.Path):
        self.tmp_path = tmp_path
        self.started: list[Worker] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Worker:
        log = self.tmp_path / f"{name}.log"
        full_env = dict(os.environ)
        # the app modules live in tmp_path; the broker package (this tree) stays importable
        path = [str(self.tmp_path), str(ROOT)]
        if full_env.get("PYTHONPATH"):
            path.append(full_env["PYTHONPATH"])
        full_env["PYTHONPATH"] = os.pathsep.join(path)
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env.update(env or {})
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, cwd=self.tmp_path, env=full_env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        w = Worker(name, proc, log)
        self.started.append(w)
        return w

    def python(self, name: str, *args: str, env: dict[str, str] | None = None) -> Worker:
        return self.start(name, [sys.executable, *args], env)

    def kill_all(self) -> None:
        for w in self.started:
            w.kill()


@contextlib.contextmanager
def restartable_broker(tmp_path: pathlib.Path):
    """An amqpbroker process of the test's own on a data directory it keeps, with
    ``restart(down_for=0)``: stop it (SIGTERM), wait, start it again on the same port."""
    from conftest import Broker, start_amqpbroker, stop
    data = str(tmp_path / "broker-data")
    proc, port = start_amqpbroker(data_dir=data)
    b = Broker("amqpbroker", f"amqp://guest:guest@127.0.0.1:{port}/", "127.0.0.1", port, proc)

    def restart(down_for: float = 0.0) -> None:
        stop(b.process)
        time.sleep(down_for)
        b.process, _ = start_amqpbroker("--port", str(port), data_dir=data)
    b.restart = restart
    try:
        yield b
    finally:
        stop(b.process)


# --------------------------------------------------------------------------- broker state


@contextlib.contextmanager
def pika_channel(broker):
    params = pika.URLParameters(broker.url)
    params.socket_timeout = 5
    params.connection_attempts = 3
    params.retry_delay = 0.2
    conn = pika.BlockingConnection(params)
    try:
        yield conn.channel()
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def queue_depth(broker, name: str) -> int | None:
    """Ready messages in queue ``name`` (None when there is no such queue)."""
    with pika_channel(broker) as ch:
        try:
            return ch.queue_declare(name, passive=True).method.message_count
        except pika.exceptions.ChannelClosedByBroker as e:
            if e.reply_code == 404:
                return None
            raise


def queue_consumers(broker, name: str) -> int | None:
    with pika_channel(broker) as ch:
        try:
            return ch.queue_declare(name, passive=True).method.consumer_count
        except pika.exceptions.ChannelClosedByBroker as e:
            if e.reply_code == 404:
                return None
            raise


def delete_entities(broker, queues: Iterable[str] = (), exchanges: Iterable[str] = ()) -> None:
    """Delete queues and exchanges by name; those already gone are fine. One channel each,
    since a failing delete closes the channel."""
    params = pika.URLParameters(broker.url)
    params.socket_timeout = 5
    try:
        conn = pika.BlockingConnection(params)
    except pika.exceptions.AMQPError:
        return   # the broker is gone (a restart test's own broker): nothing to clean
    try:
        for name in queues:
            with contextlib.suppress(pika.exceptions.AMQPError):
                ch = conn.channel()
                ch.queue_delete(name)
                ch.close()
        for name in exchanges:
            with contextlib.suppress(pika.exceptions.AMQPError):
                ch = conn.channel()
                ch.exchange_delete(name)
                ch.close()
    finally:
        with contextlib.suppress(Exception):
            conn.close()


class Cleanup:
    """Names a test declares on the broker, deleted at teardown."""

    def __init__(self, broker):
        self.broker = broker
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    def queue(self, name: str) -> str:
        self.queues.append(name)
        return name

    def exchange(self, name: str) -> str:
        self.exchanges.append(name)
        return name

    def run(self) -> None:
        delete_entities(self.broker, self.queues, self.exchanges)
