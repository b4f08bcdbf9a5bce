"""The edge's listeners and connections: sockets bound from ``config.listen``, and the
tasks of each AMQP connection (read, write, timer) around the sans-I/O ``Connection``.

One shape for every listener (``Endpoint``: the key path that names it in errors, hosts,
port, TLS options): the AMQP one today; amqps (``listen.tls``), the management API and
Prometheus add endpoints of the same shape.  A ``port`` of null turns a listener off."""
from __future__ import annotations

import errno
import logging
import socket
import time
from dataclasses import dataclass

import anyio
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSAttribute

from .auth import Transport
from .config import Listen, StartError
from .connection import Connection

log = logging.getLogger("amqpbroker.server")

SHUTDOWN_TEXT = "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"


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


# ---------------------------------------------------------------------- binding


@dataclass(frozen=True)
class Endpoint:
    """One listener to bind: ``key`` names its port in errors (``listen.port``)."""

    key: str
    hosts_key: str
    hosts: tuple[str, ...]
    port: int
    tls: object = None   # config.TLS for amqps (https)
    scheme: str = "amqp"  # amqp | http: the start-up line (conftest and bench parse
                          # "listening on 127.0.0.1:PORT", the AMQP port's line)


def endpoints(listen: Listen) -> list[Endpoint]:
    """The AMQP listeners ``listen`` asks for: plain and amqps, on the same hosts."""
    out = []
    if listen.port is not None:  # (config refuses both off)
        out.append(Endpoint("listen.port", "listen.hosts", listen.hosts, listen.port))
    if listen.tls is not None and listen.tls.port is not None:
        out.append(Endpoint("listen.tls.port", "listen.hosts", listen.hosts, listen.tls.port,
                            listen.tls))
    return out


def management_endpoints(m) -> list[Endpoint]:
    """The management API's listeners (``config.Management``): HTTP and HTTPS, either off."""
    out = []
    if m.port is not None:
        out.append(Endpoint("management.port", "management.hosts", m.hosts, m.port,
                            scheme="http"))
    if m.tls is not None and m.tls.port is not None:
        out.append(Endpoint("management.tls.port", "management.hosts", m.hosts, m.tls.port,
                            m.tls, scheme="http"))
    return out


def prometheus_endpoints(p) -> list[Endpoint]:
    """The Prometheus endpoint's listener (``config.Prometheus``), or none."""
    if p.port is None:
        return []
    return [Endpoint("prometheus.port", "prometheus.hosts", p.hosts, p.port,
                     scheme="prometheus")]


async def bind(endpoint: Endpoint, startup_log: list) -> tuple[list, list[tuple[str, int]]]:
    """Bind every host of one endpoint, before any task starts: a host that cannot be
    bound or a port in use is a StartError naming ``<hosts_key>[i]`` or ``<key>``; what
    was bound is closed again.  Returns the anyio listeners and the (address, port)s."""
    listeners, ports = [], []
    port = endpoint.port
    try:
        for i, host in enumerate(endpoint.hosts):
            try:
                lst = await anyio.create_tcp_listener(local_host=host, local_port=port,
                                                      reuse_port=False)
            except OSError as e:
                if listeners and ":" in host and (e.errno != errno.EADDRINUSE or
                                                  endpoint.port == 0):
                    # no IPv6 here (or, for port 0, its twin taken): IPv4 alone is fine
                    startup_log.append((logging.WARNING, "cannot listen on [%s]:%d: %s",
                                        (host, port, e.strerror or e)))
                    continue
                raise _bind_error(endpoint, i, host, port, e) from None
            for sub in lst.listeners:
                addr = sub.extra(SocketAttribute.local_address)
                port = addr[1]  # port 0: the others bind the port the first one got
                shown = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
                if endpoint.scheme == "amqp":
                    startup_log.append((logging.INFO, "listening on %s:%d%s",
                                        (shown, addr[1], " (amqps)" if endpoint.tls else "")))
                else:
                    what = "Prometheus metrics" if endpoint.scheme == "prometheus" \
                        else "management API"
                    startup_log.append((logging.INFO, f"{what} listening on %s://%s:%d/",
                                        ("https" if endpoint.tls else "http", shown, addr[1])))
                ports.append((addr[0], addr[1]))
            listeners.append(lst)
    except BaseException:
        for lst in listeners:
            await lst.aclose()
        raise
    return listeners, ports


def _bind_error(endpoint: Endpoint, index: int, host: str, port: int,
                e: OSError) -> StartError:
    """The key to blame: the port when it is taken or privileged, else the host."""
    where = f"[{host}]" if ":" in host else host
    if isinstance(e, socket.gaierror):
        return StartError(f"{endpoint.hosts_key}[{index}]",
                          f"cannot resolve {host!r}: {e.strerror or e}")
    text = e.strerror or " ".join(str(e).split())
    if e.errno == errno.EADDRINUSE:
        return StartError(endpoint.key, f"cannot listen on {where}:{port}: {text}")
    if e.errno == errno.EACCES and 0 < port < 1024:
        return StartError(endpoint.key, f"cannot listen on {where}:{port}: {text} "
                                        f"(ports below 1024 need privileges)")
    return StartError(f"{endpoint.hosts_key}[{index}]",
                      f"cannot listen on {where}:{port}: {text}")


def transport(stream) -> Transport:
    """The description a Connection gets of its socket (TCP_NODELAY set on the way), with
    the client's certificate on a TLS stream (ssl's getpeercert(): only a verified one)."""
    peer = local = ("?", 0)
    try:
        peer = stream.extra(SocketAttribute.remote_address)
        local = stream.extra(SocketAttribute.local_address)
        sock = stream.extra(SocketAttribute.raw_socket)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except Exception:
        pass
    ssl_object = stream.extra(TLSAttribute.ssl_object, None)
    if ssl_object is None:
        return Transport(peer=peer, local=local)
    return Transport(peer=peer, local=local, tls=True,
                     peer_certificate=ssl_object.getpeercert() or None)


# ---------------------------------------------------------------------- connections


class Connections:
    """The live AMQP connections and their tasks: one task group per socket (read,
    write, timer)."""

    def __init__(self, broker):
        self.broker = broker
        self.live: dict[Connection, _Doorbell] = {}
        self.drained: dict[Connection, _Doorbell] = {}  # wakes a reader held back
        self._cleanup = _Guard("cleaning up a connection")

    def resume_reading(self) -> None:
        """The memory alarm cleared: wake every reader held back, and its writer."""
        for conn, drained in list(self.drained.items()):
            drained.ring()
            bell = self.live.get(conn)
            if bell is not None:
                bell.ring()

    async def shutdown(self) -> None:
        """Connection.Close 320 to every client, then wait (at most 1 s) for them to go."""
        for conn, bell in list(self.live.items()):
            try:
                conn.close(320, SHUTDOWN_TEXT, now=anyio.current_time())
            except Exception:
                log.exception("closing the connection from %s at shutdown failed", conn.peer)
            bell.ring()
        with anyio.move_on_after(1):
            while self.live:
                await anyio.sleep(0.02)

    async def handle(self, stream, accepted: float | None = None) -> None:
        """One connection.  Never raises: an exception would end the listener's task
        group, and with it the broker; a connection whose task fails is logged and
        dropped (its socket closed), its clean-up still runs.  ``accepted``: when the
        socket was accepted, if a TLS handshake came first (it counts against the AMQP
        handshake timeout)."""
        peer = ("?", 0)
        conn = None
        try:
            t = transport(stream)
            peer = t.peer
            conn = Connection(self.broker, t, anyio.current_time() if accepted is None
                              else accepted)
            bell, drained = _Doorbell(), _Doorbell()
            conn.on_wakeup = bell.ring
            self.live[conn] = bell
            self.drained[conn] = drained
            async with stream, anyio.create_task_group() as tg:
                tg.start_soon(self._writer, conn, bell, drained, stream, tg.cancel_scope)
                tg.start_soon(self._timer, conn, bell, tg.cancel_scope)
                await self._reader(conn, bell, drained, stream)
                tg.cancel_scope.cancel()
        except Exception:  # one bad connection never takes the listener down
            log.exception("connection from %s failed", peer)
        finally:
            if conn is not None:
                self.live.pop(conn, None)
                self.drained.pop(conn, None)
                try:
                    conn.connection_lost()
                except Exception:
                    self._cleanup.failed()

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

    async def _timer(self, conn: Connection, bell: _Doorbell, scope) -> None:
        """Heartbeats, the handshake and close timeouts.  A failing step is logged and
        drops this connection only: without its timer a dead peer would never be noticed."""
        while True:
            try:
                deadline = conn.next_deadline()
                now = anyio.current_time()
                # deadlines only move later by themselves; a state change (tune-ok) can make
                # one appear sooner, so never sleep long
                delay = 0.5 if deadline is None else max(0.0, min(0.5, deadline - now))
                await anyio.sleep(delay)
                conn.handle_timer(anyio.current_time())
            except Exception:
                log.exception("the timer of the connection from %s failed; dropping it",
                              conn.peer)
                scope.cancel()
                return
            bell.ring()


async def _discard(stream) -> None:
    try:
        while await stream.receive(65536):
            pass
    except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass
