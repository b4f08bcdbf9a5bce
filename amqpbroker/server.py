"""The anyio edge: listeners, one task group per TCP connection (read, write, timer),
graceful shutdown.  Everything below this module is synchronous and sans-I/O."""
from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import time

import anyio
from anyio.abc import SocketAttribute

from .auth import Transport
from .broker import Broker
from .config import Config, StartError
from .connection import Connection
from .store import StoreError, open_store

log = logging.getLogger("amqpbroker.server")

SHUTDOWN_TEXT = "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"
RETRY = 1.0  # seconds a long-lived task waits after a failed step before trying again


class _Guard:
    """Keeps a long-lived task alive: an unexpected exception from one step is logged
    (with its traceback; a step failing over and over at most once a minute, with the
    count), and the task goes on."""

    __slots__ = ("what", "last", "repeats")
    QUIET = 60.0

    def __init__(self, what: str):
        self.what = what
        self.last = None
        self.repeats = 0

    def failed(self) -> None:
        """Call from an ``except Exception`` block."""
        now = time.monotonic()
        if self.last is not None and now - self.last < self.QUIET:
            self.repeats += 1
            return
        more = f" (and {self.repeats} times since the last report)" if self.repeats else ""
        log.exception("%s failed%s; it goes on", self.what, more)
        self.last, self.repeats = now, 0


class _Doorbell:
    """Wakes the writer.  anyio.Event cannot be cleared, so a fresh one after each ring."""

    __slots__ = ("event",)

    def __init__(self):
        self.event = anyio.Event()

    def ring(self) -> None:
        self.event.set()

    async def wait(self) -> None:
        await self.event.wait()
        self.event = anyio.Event()


class Server:
    def __init__(self, config: Config):
        """Open the store, recover, apply the definitions.  Every failure that is the
        configuration's is a ConfigError (StartError: the key path of the data directory)
        of one line; the store is closed again."""
        self.config = config
        try:
            self.store = open_store(config.storage.backend, config.storage.path)
        except StoreError as e:
            raise StartError("storage.path", str(e)) from None
        started = time.monotonic()
        try:
            self.broker = Broker(config, self.store)
            if self.store.gen != self.store.synced:  # the definitions: written before we
                self._commit_definitions()           # listen, so a failure stops the start
        except BaseException as e:
            _close_quietly(self.store)
            if isinstance(e, StoreError):
                raise StartError("storage.path", str(e)) from None
            raise
        queued = sum(q.message_count for vh in self.broker.vhosts.values()
                     for q in vh.queues.values())
        # start-up lines wait until every step succeeded (serve() logs them), so that a
        # mistake found at start is the only line on stderr
        self._startup_log: list[tuple[int, str, tuple]] = [(
            logging.INFO, "storage: %s%s; recovered %d queues, %d messages in %.2f s",
            (config.storage.backend, f" at {config.storage.path}" if self.store.durable else "",
             sum(len(vh.queues) for vh in self.broker.vhosts.values()), queued,
             time.monotonic() - started))]
        self.ports: list[tuple[str, int]] = []
        self._listener = None
        self._live: dict[Connection, _Doorbell] = {}
        self._drained: dict[Connection, _Doorbell] = {}  # wakes a reader held back

    def _commit_definitions(self) -> None:
        try:
            self.store.sync_blocking()
        except Exception as e:
            raise StoreError(f"cannot write {getattr(self.store, 'path', 'the store')} "
                             f"({' '.join(str(e).split())})") from None

    async def listen(self) -> None:
        """Bind every listener, before any task starts: a host that cannot be bound or a
        port in use is a StartError naming ``listen.hosts[i]`` or ``listen.port``.
        ``serve()`` calls it when it was not called before."""
        if self._listener is not None:
            return
        listeners = []
        port = self.config.listen.port
        try:
            for i, host in enumerate(self.config.listen.hosts):
                try:
                    lst = await anyio.create_tcp_listener(local_host=host, local_port=port,
                                                          reuse_port=False)
                except OSError as e:
                    if listeners and ":" in host and (e.errno != errno.EADDRINUSE or
                                                      self.config.listen.port == 0):
                        # no IPv6 here (or, for port 0, its twin taken): IPv4 alone is fine
                        self._startup_log.append((logging.WARNING,
                                                  "cannot listen on [%s]:%d: %s",
                                                  (host, port, e.strerror or e)))
                        continue
                    raise _bind_error(i, host, port, e) from None
                for sub in lst.listeners:
                    addr = sub.extra(SocketAttribute.local_address)
                    port = addr[1]  # port 0: the others bind the port the first one got
                    shown = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
                    self._startup_log.append((logging.INFO, "listening on %s:%d",
                                              (shown, addr[1])))
                    self.ports.append((addr[0], addr[1]))
                listeners.append(lst)
        except BaseException:
            for lst in listeners:
                await lst.aclose()
            self.ports.clear()
            raise
        self._listener = anyio.streams.stapled.MultiListener(listeners) \
            if len(listeners) > 1 else listeners[0]

    async def serve(self, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
        await self.listen()
        multi = self._listener
        for level, text, args in self._startup_log:
            log.log(level, text, *args)
        self._startup_log.clear()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._ticker)
            tg.start_soon(self._flusher)
            tg.start_soon(self._memory_monitor)
            task_status.started(self)
            try:
                await multi.serve(self._handle, task_group=tg)
            finally:
                with anyio.CancelScope(shield=True):
                    await self._shutdown()
                    await self.store.sync()  # a clean shutdown commits everything
                    self.store.close()

    async def _flusher(self) -> None:
        """Group commit: whenever the store has a batch, commit it (in a worker thread),
        then release the confirms it covers.  Mutations made meanwhile form the next
        batch, so under load one fsync covers thousands of messages."""
        bell = _Doorbell()
        guard = _Guard("releasing confirms after a commit")
        self.store.on_dirty = bell.ring
        if self.store.gen != self.store.synced:
            # written before we listened (definitions applied at start): on_dirty only
            # fires for the first mutation of an empty batch, so it would never come
            bell.ring()
        while True:
            await bell.wait()
            try:
                await self.store.sync()
            except Exception:
                log.exception("storage commit failed; confirms are held back")
                await anyio.sleep(RETRY)
                bell.ring()
                continue
            try:
                self.broker.after_sync()
            except Exception:
                guard.failed()

    def memory_limit(self) -> int:
        limits = self.config.limits
        if limits.memory_high_watermark_bytes:
            return limits.memory_high_watermark_bytes
        try:
            ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            return 0
        return int(ram * limits.memory_high_watermark)

    async def _memory_monitor(self) -> None:
        """The memory alarm: a few times a second, compare what the queues hold with the
        high watermark; above it publishers are blocked until the queues drain."""
        limit = self.memory_limit()
        if not limit:
            return
        guard = _Guard("the memory monitor")
        while True:
            await anyio.sleep(0.2)
            try:
                self._check_memory(limit)
            except Exception:
                guard.failed()

    def _check_memory(self, limit: int) -> None:
        broker = self.broker
        used = broker.queued_bytes()
        if used > limit and not broker.memory_alarm:
            log.warning("memory alarm set: queued messages hold about %d MiB, above the "
                        "high watermark of %d MiB; publishers are blocked",
                        used >> 20, limit >> 20)
            broker.set_memory_alarm(True)
        elif used <= limit and broker.memory_alarm:
            log.warning("memory alarm cleared: queued messages hold about %d MiB",
                        used >> 20)
            broker.set_memory_alarm(False)
            for conn, drained in list(self._drained.items()):
                drained.ring()
                bell = self._live.get(conn)
                if bell is not None:
                    bell.ring()

    async def _ticker(self) -> None:
        """The broker's one timer: runs ``broker.scheduler`` (message TTL and queue expiry
        for every queue), waking up early when its earliest deadline moves earlier."""
        bell = _Doorbell()
        guard = _Guard("the timer (message TTL, queue expiry)")
        scheduler = self.broker.scheduler
        scheduler.on_change = bell.ring
        while True:
            try:
                deadline = scheduler.next_deadline()
            except Exception:
                guard.failed()
                deadline = time.monotonic() + RETRY
            delay = 60.0 if deadline is None else max(0.0, deadline - time.monotonic())
            with anyio.move_on_after(delay):
                await bell.wait()
            try:
                scheduler.run_due(time.monotonic())
            except Exception:  # the scheduler guards each call: this is rarer still
                guard.failed()
                await anyio.sleep(RETRY)  # a failure that repeats must not spin

    async def _shutdown(self) -> None:
        for conn, bell in list(self._live.items()):
            try:
                conn.close(320, SHUTDOWN_TEXT, now=anyio.current_time())
            except Exception:
                log.exception("closing the connection from %s at shutdown failed", conn.peer)
            bell.ring()
        with anyio.move_on_after(1):
            while self._live:
                await anyio.sleep(0.02)

    async def _handle(self, stream) -> None:
        """One connection.  Never raises: an exception would end the listener's task
        group, and with it the broker; a connection whose task fails is logged and
        dropped (its socket closed), its clean-up still runs."""
        peer = ("?", 0)
        conn = None
        try:
            transport = _transport(stream)
            peer = transport.peer
            conn = Connection(self.broker, transport, anyio.current_time())
            bell, drained = _Doorbell(), _Doorbell()
            conn.on_wakeup = bell.ring
            self._live[conn] = bell
            self._drained[conn] = drained
            async with stream, anyio.create_task_group() as tg:
                tg.start_soon(self._writer, conn, bell, drained, stream, tg.cancel_scope)
                tg.start_soon(self._timer, conn, bell)
                await self._reader(conn, bell, drained, stream)
                tg.cancel_scope.cancel()
        except Exception:  # one bad connection never takes the listener down
            log.exception("connection from %s failed", peer)
        finally:
            if conn is not None:
                self._live.pop(conn, None)
                self._drained.pop(conn, None)
                try:
                    conn.connection_lost()
                except Exception:
                    log.exception("cleaning up the connection from %s failed", peer)

    async def _reader(self, conn: Connection, bell: _Doorbell, drained: _Doorbell,
                      stream) -> None:
        while True:
            while not conn.wants_read:
                if conn.should_close:
                    if conn.linger:  # the writer flushes close-ok; we read until EOF
                        with anyio.move_on_after(conn.linger):
                            await _discard(stream)
                        return
                    await anyio.sleep_forever()  # the writer flushes and ends the task group
                await drained.wait()  # backpressure: our output is piling up
            try:
                data = await stream.receive(65536)
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError,
                    OSError):
                return
            conn.receive_data(data, anyio.current_time())
            bell.ring()

    async def _writer(self, conn: Connection, bell: _Doorbell, drained: _Doorbell, stream,
                      scope) -> None:
        try:
            while True:
                await bell.wait()
                data = conn.data_to_send(anyio.current_time())
                if data:
                    await stream.send(data)
                    drained.ring()
                if conn.should_close and not conn.linger:
                    break
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        scope.cancel()

    async def _timer(self, conn: Connection, bell: _Doorbell) -> None:
        while True:
            deadline = conn.next_deadline()
            now = anyio.current_time()
            # deadlines only move later by themselves; a state change (tune-ok) can make one
            # appear sooner, so never sleep long
            delay = 0.5 if deadline is None else max(0.0, min(0.5, deadline - now))
            await anyio.sleep(delay)
            conn.handle_timer(anyio.current_time())
            bell.ring()


def _transport(stream) -> Transport:
    """The description a Connection gets of its socket (TCP_NODELAY set on the way)."""
    peer = local = ("?", 0)
    try:
        peer = stream.extra(SocketAttribute.remote_address)
        local = stream.extra(SocketAttribute.local_address)
        sock = stream.extra(SocketAttribute.raw_socket)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except Exception:
        pass
    return Transport(peer=peer, local=local)


def _bind_error(index: int, host: str, port: int, e: OSError) -> StartError:
    """The key to blame: the port when it is taken or privileged, else the host."""
    where = f"[{host}]" if ":" in host else host
    if isinstance(e, socket.gaierror):
        return StartError(f"listen.hosts[{index}]",
                          f"cannot resolve {host!r}: {e.strerror or e}")
    text = e.strerror or " ".join(str(e).split())
    if e.errno == errno.EADDRINUSE:
        return StartError("listen.port", f"cannot listen on {where}:{port}: {text}")
    if e.errno == errno.EACCES and 0 < port < 1024:
        return StartError("listen.port", f"cannot listen on {where}:{port}: {text} "
                                         f"(ports below 1024 need privileges)")
    return StartError(f"listen.hosts[{index}]", f"cannot listen on {where}:{port}: {text}")


def _close_quietly(store) -> None:
    try:
        store.close()
    except Exception:
        log.exception("closing the store failed")


async def _discard(stream) -> None:
    try:
        while await stream.receive(65536):
            pass
    except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass


async def run(config: Config) -> None:
    server = Server(config)
    try:
        await server.listen()  # outside any task group: its errors come out unwrapped
    except BaseException:
        _close_quietly(server.store)
        raise
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)

        async def on_signals():
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    log.info("received %s, shutting down", signal.Signals(signum).name)
                    # 320 to every client while the connection tasks still run: once the
                    # task group is cancelled their writers can no longer send it
                    await server._shutdown()
                    tg.cancel_scope.cancel()
                    return
        tg.start_soon(on_signals)


def main(config: Config) -> None:
    """Run the broker until SIGINT / SIGTERM (blocking); uvloop when it is installed.
    The one place that starts an event loop, so that only this module touches anyio."""
    backend_options = {}
    try:
        import uvloop  # noqa: F401  (optional extra "fast")
        backend_options["use_uvloop"] = True
    except ImportError:
        pass
    anyio.run(run, config, backend="asyncio", backend_options=backend_options)
