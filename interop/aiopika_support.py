"""Shared helpers for the aio-pika interop tests (``test_aiopika_*.py``).

Not a test module.  Every test opens its own connections through :class:`Session`, which
closes them and deletes the named queues/exchanges it was told about, so a shared
RabbitMQ is left clean even when a test fails half way.
"""
from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue

TIMEOUT = 5.0          # upper bound for anything that should happen "now"
QUIET = 0.4            # how long we wait to be sure that nothing (more) arrives


class Session:
    """``async with Session(broker) as s:`` -- connections and cleanup for one test."""

    def __init__(self, broker) -> None:
        self.broker = broker
        self.connections: list[AbstractConnection] = []
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    async def __aenter__(self) -> "Session":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self.queues or self.exchanges:
            with contextlib.suppress(Exception):
                conn = await asyncio.wait_for(aio_pika.connect(self.broker.url), TIMEOUT)
                try:
                    for name in self.queues:
                        with contextlib.suppress(Exception):
                            ch = await conn.channel()
                            u = await ch.get_underlay_channel()
                            await asyncio.wait_for(u.queue_delete(name), TIMEOUT)
                    for name in self.exchanges:
                        with contextlib.suppress(Exception):
                            ch = await conn.channel()
                            u = await ch.get_underlay_channel()
                            await asyncio.wait_for(u.exchange_delete(name), TIMEOUT)
                finally:
                    await conn.close()
        for conn in self.connections:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), TIMEOUT)

    def name(self, prefix: str = "t", *, queue: bool = False, exchange: bool = False) -> str:
        n = self.broker.name(prefix)
        if queue:
            self.queues.append(n)
        if exchange:
            self.exchanges.append(n)
        return n

    def qname(self, prefix: str = "q") -> str:
        return self.name(prefix, queue=True)

    def xname(self, prefix: str = "x") -> str:
        return self.name(prefix, exchange=True)

    async def connect(self, **kwargs: Any) -> AbstractConnection:
        conn = await asyncio.wait_for(aio_pika.connect(self.broker.url, **kwargs), TIMEOUT)
        self.connections.append(conn)
        return conn

    async def channel(self, conn: AbstractConnection | None = None, **kwargs: Any) -> AbstractChannel:
        if conn is None:
            conn = await self.connect()
        return await asyncio.wait_for(conn.channel(**kwargs), TIMEOUT)


class Inbox:
    """Collects deliveries of one consumer, in arrival order."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self.received: list[AbstractIncomingMessage] = []
        self.tag: str | None = None

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        self.received.append(message)
        self.queue.put_nowait(message)

    async def start(self, queue: AbstractQueue, **kwargs: Any) -> "Inbox":
        self.tag = await asyncio.wait_for(queue.consume(self, **kwargs), TIMEOUT)
        return self

    async def get(self, timeout: float = TIMEOUT) -> AbstractIncomingMessage:
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def take(self, n: int, timeout: float = TIMEOUT) -> list[AbstractIncomingMessage]:
        async def _take() -> list[AbstractIncomingMessage]:
            return [await self.queue.get() for _ in range(n)]
        return await asyncio.wait_for(_take(), timeout)

    async def nothing_more(self, wait: float = QUIET) -> None:
        """Assert that no further delivery arrives within ``wait`` seconds."""
        await asyncio.sleep(wait)
        assert self.queue.empty(), f"unexpected delivery: {self.queue.get_nowait().body!r}"


async def publish(channel: AbstractChannel, routing_key: str, body: bytes | str = b"",
                  exchange: str = "", mandatory: bool = False, **props: Any) -> Any:
    if isinstance(body, str):
        body = body.encode()
    ex = channel.default_exchange if exchange == "" else await channel.get_exchange(exchange, ensure=False)
    return await asyncio.wait_for(
        ex.publish(aio_pika.Message(body, **props), routing_key, mandatory=mandatory), TIMEOUT)


async def drain(queue: AbstractQueue, limit: int = 10_000) -> list[bytes]:
    """basic.get (no_ack) until get-empty; returns the bodies in order."""
    bodies = []
    for _ in range(limit):
        msg = await queue.get(no_ack=True, fail=False, timeout=TIMEOUT)
        if msg is None:
            return bodies
        bodies.append(msg.body)
    raise AssertionError("queue did not run empty")


async def counts(conn: AbstractConnection, name: str) -> tuple[int, int]:
    """(message_count, consumer_count) from a passive queue.declare on a fresh channel."""
    ch = await asyncio.wait_for(conn.channel(), TIMEOUT)
    try:
        u = await ch.get_underlay_channel()
        ok = await asyncio.wait_for(u.queue_declare(name, passive=True), TIMEOUT)
        return ok.message_count, ok.consumer_count
    finally:
        if not ch.is_closed:
            await ch.close()


async def _passive_declare_ok(conn: AbstractConnection, declare) -> bool:
    """Whether a passive declare (``declare(underlay_channel)``) finds the entity."""
    ch = await asyncio.wait_for(conn.channel(), TIMEOUT)
    try:
        u = await ch.get_underlay_channel()
        await asyncio.wait_for(declare(u), TIMEOUT)
        return True
    except aiormq.exceptions.ChannelNotFoundEntity:
        return False
    finally:
        if not ch.is_closed:
            await ch.close()


async def queue_exists(conn: AbstractConnection, name: str) -> bool:
    return await _passive_declare_ok(conn, lambda u: u.queue_declare(name, passive=True))


async def exchange_exists(conn: AbstractConnection, name: str) -> bool:
    return await _passive_declare_ok(conn, lambda u: u.exchange_declare(name, passive=True))


async def eventually(predicate, timeout: float = TIMEOUT, interval: float = 0.05) -> None:
    """Poll an async predicate until it is true (for things RabbitMQ does asynchronously)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if await predicate():
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not reached within {timeout}s")
        await asyncio.sleep(interval)


async def close_reason(closable: Any) -> BaseException:
    """Wait until the server closes an aiormq channel or connection; return the exception.

    Pass the *aiormq* object (``await channel.get_underlay_channel()`` or
    ``connection.transport.connection``), captured before the failing operation.
    """
    try:
        await asyncio.wait_for(closable.closing, TIMEOUT)
    except asyncio.TimeoutError:
        raise AssertionError("not closed by the server") from None
    except BaseException as exc:  # noqa: BLE001 - the close reason is what we want
        return exc
    raise AssertionError("closed without an error")
