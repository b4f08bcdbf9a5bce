"""The anyio edge: the broker's long-lived tasks (the scheduler's ticker, the store's
group-commit flusher, the memory monitor), the listeners (listeners.py: binding, and one
task group per TCP connection), graceful shutdown.  Everything below is sans-I/O."""
from __future__ import annotations

import logging
import os
import signal
import time

import anyio

from . import listeners, tls
from .broker import Broker
from .config import Config, StartError
from .listeners import _Doorbell, _Guard
from .store import StoreError, open_store

log = logging.getLogger("amqpbroker.server")

RETRY = 1.0  # seconds a long-lived task waits after a failed step before trying again


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
        self.ports_of: dict[str, list] = {}   # by endpoint key: "listen.port", "listen.tls.port"
        self.tls: list = []   # the tls.ServerTLS of each amqps listener (SIGHUP reloads)
        self._listener = None
        self._http_listener = None
        self.http = None     # the management API's http.server.HTTPServer, once bound
        self._metrics_listener = None
        self.metrics_http = None   # the Prometheus endpoint's, once bound
        self.connections = listeners.Connections(self.broker)

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
        bound = []
        try:
            for endpoint in listeners.endpoints(self.config.listen):
                server_tls = tls.ServerTLS(endpoint.tls) if endpoint.tls else None
                subs, ports = await listeners.bind(endpoint, self._startup_log)
                if server_tls is not None:
                    subs = [tls.TLSListener(sub, server_tls) for sub in subs]
                    self.tls.append(server_tls)
                bound += subs
                self.ports += ports
                self.ports_of[endpoint.key] = ports
        except BaseException:
            for lst in bound:
                await lst.aclose()
            self.ports.clear()
            self.ports_of.clear()
            raise
        if not bound:  # (config.py refuses this: a listener off needs another one on)
            raise StartError("listen.port", "expected a port: every listener is off")
        try:
            http_bound = await self._listen_http()
            try:
                metrics_bound = await self._listen_prometheus()
            except BaseException:
                for lst in http_bound:
                    await lst.aclose()
                raise
        except BaseException:
            for lst in bound:
                await lst.aclose()
            self.ports.clear()
            self.ports_of.clear()
            raise
        self._listener = anyio.streams.stapled.MultiListener(bound) \
            if len(bound) > 1 else bound[0]
        self._http_listener = anyio.streams.stapled.MultiListener(http_bound) \
            if http_bound else None
        self._metrics_listener = anyio.streams.stapled.MultiListener(metrics_bound) \
            if metrics_bound else None

    async def _listen_prometheus(self) -> list:
        """The Prometheus endpoint's listener (prometheus.port): a port in use is a
        StartError naming it."""
        from .http.prometheus_app import prometheus_app
        from .http.server import HTTPServer
        bound = []
        for endpoint in listeners.prometheus_endpoints(self.config.prometheus):
            subs, ports = await listeners.bind(endpoint, self._startup_log)
            bound += subs
            self.ports_of[endpoint.key] = ports
        self.metrics_http = HTTPServer(prometheus_app(self.broker))
        return bound

    async def _listen_http(self) -> list:
        """The management API's listeners (management.port, management.tls.port): a port
        in use is a StartError naming its key, as for listen.port."""
        from .http.routes import management_app
        from .http.server import HTTPServer
        bound = []
        try:
            for endpoint in listeners.management_endpoints(self.config.management):
                server_tls = tls.ServerTLS(endpoint.tls, "management.tls") \
                    if endpoint.tls else None
                subs, ports = await listeners.bind(endpoint, self._startup_log)
                if server_tls is not None:
                    subs = [tls.TLSListener(sub, server_tls) for sub in subs]
                    self.tls.append(server_tls)
                bound += subs
                self.ports_of[endpoint.key] = ports
        except BaseException:
            for lst in bound:
                await lst.aclose()
            raise
        # what /api/overview lists as "listeners"
        self.broker.listeners = [
            (proto, host, port) for key, proto in (
                ("listen.port", "amqp"), ("listen.tls.port", "amqp/ssl"),
                ("management.port", "http"), ("management.tls.port", "https"))
            for host, port in self.ports_of.get(key, ())]
        self.http = HTTPServer(management_app(self.broker))
        return bound

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
            if self._http_listener is not None:
                tg.start_soon(self._serve_http, tg, self._http_listener, self.http,
                              "the management API's listener")
            if self._metrics_listener is not None:
                tg.start_soon(self._serve_http, tg, self._metrics_listener, self.metrics_http,
                              "the Prometheus endpoint's listener")
            task_status.started(self)
            try:
                await multi.serve(self.connections.handle, task_group=tg)
            finally:
                with anyio.CancelScope(shield=True):
                    await self.shutdown()
                    await self.store.sync()  # a clean shutdown commits everything
                    self.store.close()

    async def _serve_http(self, tg, listener, http, what: str) -> None:
        """An HTTP accept loop (management API, Prometheus); an accept that fails (out of
        file descriptors) is logged and retried, never the end of the broker."""
        guard = _Guard(what)
        while True:
            try:
                await listener.serve(http.handle, tg)
            except Exception:
                guard.failed()
                await anyio.sleep(RETRY)

    async def _flusher(self) -> None:
        """Group commit: whenever the store has a batch, commit it (in a worker thread),
        then release the confirms it covers.  Mutations made meanwhile form the next
        batch, so under load one fsync covers thousands of messages."""
        bell = _Doorbell()
        guard = _Guard("releasing confirms after a commit")
        commit = _Guard("the storage commit (confirms are held back)")
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
                commit.failed()
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
            self.connections.resume_reading()

    async def _ticker(self) -> None:
        """The broker's one timer: runs ``broker.scheduler`` (message TTL and queue expiry
        for every queue), waking up early when its earliest deadline moves earlier."""
        bell = _Doorbell()
        guard = _Guard("the timer (message TTL, queue expiry)")
        scheduler = self.broker.scheduler
        scheduler.on_change = bell.ring
        self.broker.sampler.start(time.monotonic())  # message rates, every metrics.INTERVAL
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

    async def shutdown(self) -> None:
        """Connection.Close 320 CONNECTION_FORCED to every client (waits at most 1 s)."""
        await self.connections.shutdown()


def _close_quietly(store) -> None:
    try:
        store.close()
    except Exception:
        log.exception("closing the store failed")


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
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM,
                                            signal.SIGHUP) as signals:
                async for signum in signals:
                    if signum == signal.SIGHUP:  # new certificates for new connections
                        for server_tls in server.tls:
                            server_tls.reload()
                        continue
                    log.info("received %s, shutting down", signal.Signals(signum).name)
                    # 320 to every client while the connection tasks still run: once the
                    # task group is cancelled their writers can no longer send it
                    await server.shutdown()
                    tg.cancel_scope.cancel()
                    return
        tg.start_soon(on_signals)


def main(config: Config) -> None:
    """Run the broker until SIGINT / SIGTERM (blocking); uvloop when it is installed.
    The one place that starts an event loop (anyio: here, listeners.py, the store's
    worker thread)."""
    backend_options = {}
    try:
        import uvloop  # noqa: F401  (optional extra "fast")
        backend_options["use_uvloop"] = True
    except ImportError:
        pass
    anyio.run(run, config, backend="asyncio", backend_options=backend_options)
