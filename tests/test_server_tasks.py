"""No server task can be stopped by an exception from one of its steps (issue 8, item 1;
issue 9, item 5: the scheduler's calls, shutdown's 320).

A real Server (anyio, in this process, SQLite store in a temporary directory, a memory
watermark so that the monitor runs) and a real client speaking AMQP over TCP with pamqp
frames.  Each test makes one step of one long-lived task raise (the broker's timer, the
group-commit flusher, the memory monitor, a connection's reader, writer, timer and
clean-up), checks that the failure was logged and that the task did not spin, lifts the
fault, and asserts that the broker still serves a client: declare, publish with a
confirm, get.
"""
from __future__ import annotations

import logging
import time

import anyio
import pytest
from pamqp import commands as C
from pamqp import frame as pframe
from pamqp import header as pheader
from pamqp import body as pbody

from amqpbroker.config import Config, Limits, Listen, Storage, Management, Prometheus
from amqpbroker.listeners import SHUTDOWN_TEXT
from amqpbroker.server import Server

OFF = Management(port=None)  # the reference RabbitMQ here holds 15672 and 15692
POFF = Prometheus(port=None)

pytestmark = pytest.mark.timeout(60)


class Injected(Exception):
    pass


class Fault:
    """A step that raises while ``on``, counting its calls."""

    def __init__(self, real=None, times: int | None = None):
        self.real, self.times, self.calls, self.on = real, times, 0, True

    def __call__(self, *args, **kw):
        self.calls += 1
        if self.on and (self.times is None or self.calls <= self.times):
            raise Injected("injected fault")
        return self.real(*args, **kw)


class RawClient:
    """Just enough AMQP 0-9-1 over a TCP stream: pamqp frames in and out."""

    def __init__(self, stream):
        self.stream, self.buf = stream, b""

    @classmethod
    async def open(cls, port: int) -> "RawClient":
        c = cls(await anyio.connect_tcp("127.0.0.1", port))
        await c.handshake()
        return c

    async def handshake(self) -> None:
        c = self
        await c.stream.send(b"AMQP\x00\x00\x09\x01")
        await c.expect("Connection.Start")
        await c.send(0, C.Connection.StartOk(client_properties={"product": "raw"},
                                             mechanism="PLAIN", response="\0guest\0guest",
                                             locale="en_US"))
        tune = await c.expect("Connection.Tune")
        await c.send(0, C.Connection.TuneOk(channel_max=tune.channel_max,
                                            frame_max=tune.frame_max, heartbeat=0),
                     C.Connection.Open(virtual_host="/"))
        await c.expect("Connection.OpenOk")
        await c.send(1, C.Channel.Open())
        await c.expect("Channel.OpenOk")

    async def send(self, channel: int, *frames) -> None:
        await self.stream.send(b"".join(pframe.marshal(f, channel) for f in frames))

    async def frame(self):
        while True:
            if len(self.buf) >= 7:
                size = int.from_bytes(self.buf[3:7], "big")
                if len(self.buf) >= size + 8:
                    consumed, _ch, f = pframe.unmarshal(self.buf)
                    self.buf = self.buf[consumed:]
                    return f
            self.buf += await self.stream.receive(65536)

    async def expect(self, name: str):
        with anyio.fail_after(5):
            while True:
                f = await self.frame()
                if getattr(f, "name", None) == name:
                    return f
                assert getattr(f, "name", "") not in ("Connection.Close", "Channel.Close"), \
                    (f.reply_code, f.reply_text)

    async def aclose(self) -> None:
        await self.stream.aclose()


async def serves(port: int, queue: str = "alive", arguments: dict | None = None) -> None:
    """The broker answers a new client: declare, a confirmed persistent publish, get."""
    c = await RawClient.open(port)
    try:
        await c.send(1, C.Queue.Declare(queue=queue, durable=True, arguments=arguments))
        await c.expect("Queue.DeclareOk")
        await c.send(1, C.Confirm.Select())
        await c.expect("Confirm.SelectOk")
        body = b"still here"
        await c.send(1, C.Basic.Publish(exchange="", routing_key=queue),
                     pheader.ContentHeader(0, len(body), C.Basic.Properties(delivery_mode=2)),
                     pbody.ContentBody(body))
        await c.expect("Basic.Ack")
        await c.send(1, C.Basic.Get(queue=queue, no_ack=True))
        await c.expect("Basic.GetOk")
        assert (await c.frame()).body_size == len(body)
        assert (await c.frame()).value == body
    finally:
        await c.aclose()


async def try_client(port: int) -> None:
    """A client whose confirm may never come because of the fault."""
    with anyio.move_on_after(2):
        await serves(port, "victim")


def run_server(tmp_path, scenario) -> None:
    """Start a Server on a free port, run ``scenario(server, port)``, then stop it; the
    server's own task group must not have ended by itself meanwhile."""
    config = Config(management=OFF, prometheus=POFF, listen=Listen(hosts=("127.0.0.1",), port=0),
                    storage=Storage(backend="sqlite", path=str(tmp_path)),
                    limits=Limits(memory_high_watermark_bytes=1 << 30))

    async def main():
        server = Server(config)
        ended = anyio.Event()

        async def serve_then_mark(task_status=anyio.TASK_STATUS_IGNORED):
            try:
                await server.serve(task_status=task_status)
            finally:
                ended.set()

        async with anyio.create_task_group() as tg:
            await tg.start(serve_then_mark)
            port = server.ports[0][1]
            await scenario(server, port)
            assert not ended.is_set(), "the server stopped"
            await serves(port, "final")
            tg.cancel_scope.cancel()

    anyio.run(main)


def logged_injected(caplog) -> int:
    return sum(1 for r in caplog.records
               if r.exc_info and "injected fault" in "".join(
                   logging.Formatter().formatException(r.exc_info)))


# ---------------------------------------------------------------------- broker-wide tasks


def test_ticker_survives_run_due_failures_without_spinning(tmp_path, caplog):
    async def scenario(server, port):
        fault = Fault(server.broker.scheduler.run_due)
        server.broker.scheduler.run_due = fault
        # a message with a short TTL gives the ticker a deadline: it fires, and fails
        await serves(port, "ttl-src", {"x-message-ttl": 50})
        c = await RawClient.open(port)
        await c.send(1, C.Basic.Publish(exchange="", routing_key="ttl-src"),
                     pheader.ContentHeader(0, 1, C.Basic.Properties()), pbody.ContentBody(b"x"))
        await anyio.sleep(1.6)
        assert 1 <= fault.calls <= 3, f"ticker spun: {fault.calls} calls"   # RETRY = 1 s
        fault.on = False
        q = server.broker.vhosts["/"].queues["ttl-src"]
        with anyio.fail_after(5):
            while q.message_count:
                await anyio.sleep(0.05)           # the ticker still expires messages
        await c.aclose()
        await serves(port)
    run_server(tmp_path, scenario)
    assert logged_injected(caplog) == 1       # one traceback, repeats within a minute counted


def test_ticker_survives_next_deadline_failure(tmp_path, caplog):
    async def scenario(server, port):
        fault = Fault(server.broker.scheduler.next_deadline, times=1)
        server.broker.scheduler.next_deadline = fault
        server.broker.scheduler.on_change()   # wake it up: it asks for a deadline
        await anyio.sleep(0.1)
        assert fault.calls >= 1
        await serves(port, "ttl", {"x-message-ttl": 50})
        await serves(port)
    run_server(tmp_path, scenario)
    assert logged_injected(caplog) == 1


def test_a_failing_scheduled_call_is_logged_and_the_timer_goes_on(tmp_path, caplog):
    """A callback of the broker's scheduler raises: one traceback, and the ticker still
    runs the other calls (a TTL expiry afterwards) and the broker still serves."""
    async def scenario(server, port):
        ran = []

        def boom():
            ran.append("boom")
            raise Injected("injected fault")
        now = time.monotonic()
        server.broker.scheduler.call_at(now, boom)
        server.broker.scheduler.call_at(now + 0.01, ran.append, "after")
        with anyio.fail_after(5):
            while len(ran) < 2:
                await anyio.sleep(0.02)
        assert ran == ["boom", "after"]
        await serves(port, "ttl-after", {"x-message-ttl": 50})
        c = await RawClient.open(port)
        await c.send(1, C.Basic.Publish(exchange="", routing_key="ttl-after"),
                     pheader.ContentHeader(0, 1, C.Basic.Properties()), pbody.ContentBody(b"x"))
        q = server.broker.vhosts["/"].queues["ttl-after"]
        with anyio.fail_after(5):
            while not q.message_count:
                await anyio.sleep(0.01)
            while q.message_count:            # expired by the ticker, 50 ms later
                await anyio.sleep(0.02)
        await c.aclose()
    run_server(tmp_path, scenario)
    assert logged_injected(caplog) == 1


def test_shutdown_sends_320_to_every_client(tmp_path):
    """Server.shutdown (what SIGINT / SIGTERM run first): Connection.Close 320
    CONNECTION_FORCED to each connection, which then goes; the listener still answers."""
    async def scenario(server, port):
        a, b = await RawClient.open(port), await RawClient.open(port)
        await a.send(1, C.Queue.Declare(queue="kept", durable=True))
        await a.expect("Queue.DeclareOk")
        await server.shutdown()
        for c in (a, b):
            with anyio.fail_after(5):
                while True:
                    f = await c.frame()
                    if getattr(f, "name", None) == "Connection.Close":
                        break
            assert (f.reply_code, f.reply_text) == (320, SHUTDOWN_TEXT)
            await c.send(0, C.Connection.CloseOk())
        with anyio.fail_after(5):
            while server.connections.live:
                await anyio.sleep(0.02)
        assert not server.broker.connections
        for c in (a, b):
            with anyio.fail_after(5):
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                    await c.frame()          # the broker closed the socket
            await c.aclose()
    run_server(tmp_path, scenario)


def test_flusher_survives_a_failed_commit(tmp_path, caplog):
    async def scenario(server, port):
        server.store.sync = Fault(server.store.sync, times=1)
        with anyio.fail_after(10):
            await serves(port)    # its confirm comes after the retry
    run_server(tmp_path, scenario)
    assert logged_injected(caplog) == 1


def test_flusher_survives_after_sync_failure(tmp_path, caplog):
    async def scenario(server, port):
        fault = Fault(server.broker.after_sync, times=1)
        server.broker.after_sync = fault
        await try_client(port)     # its confirm was due in the failed step
        assert fault.calls >= 1
        await serves(port)
    run_server(tmp_path, scenario)
    assert logged_injected(caplog) == 1


def test_memory_monitor_survives_queued_bytes_failures(tmp_path, caplog):
    async def scenario(server, port):
        fault = Fault(server.broker.queued_bytes)
        server.broker.queued_bytes = fault
        await anyio.sleep(1.0)
        assert fault.calls >= 3           # still polling (every 0.2 s), not stopped
        n = fault.calls
        fault.on = False
        await anyio.sleep(0.5)
        assert fault.calls > n
        await serves(port)
    run_server(tmp_path, scenario)
    assert logged_injected(caplog) == 1


# ---------------------------------------------------------------------- per-connection tasks


@pytest.mark.parametrize("step", ["receive_data", "data_to_send", "handle_timer",
                                  "connection_lost"])
def test_connection_task_failure_drops_only_that_connection(tmp_path, caplog, step):
    """The failing connection is dropped (its socket closed, its clean-up run); the
    listener, the other connections and the broker go on."""
    async def scenario(server, port):
        bystander = await RawClient.open(port)
        known = set(server.connections.live)
        victim = await RawClient.open(port)
        (conn,) = set(server.connections.live) - known
        fault = Fault(getattr(conn, step))
        setattr(conn, step, fault)
        await victim.send(1, C.Queue.Declare(queue="victim"))  # read, answered
        if step == "connection_lost":
            await victim.aclose()
        with anyio.fail_after(5):
            while conn in server.connections.live:       # dropped (a timer fires within 0.5 s)
                await anyio.sleep(0.05)
        assert fault.calls >= 1
        if step != "connection_lost":   # (which the fault replaces)
            assert conn not in server.broker.connections   # its clean-up ran all the same
        with anyio.move_on_after(1):
            await victim.aclose()
        await bystander.send(1, C.Queue.Declare(queue="bystander"))
        await bystander.expect("Queue.DeclareOk")
        await serves(port)
        await bystander.aclose()
    run_server(tmp_path, scenario)
    assert logged_injected(caplog) == 1
