"""A real broker inside the test process: ``InProcessBroker`` runs the server on its own
thread and event loop (an anyio blocking portal), listens on a free loopback port, and
gives tests what they need around it: a fresh vhost and user per test, a queue's depth,
its messages without consuming them, what a test left behind, and a restart on the same
data.  The pytest plugin (``amqpbroker.pytest_plugin``) builds its fixtures on it.

Everything that touches the broker's state runs on the broker's loop (``portal.call``):
the broker has no locks, and its thread is the only one that may change it."""
from __future__ import annotations

import secrets
import tempfile
import time
import urllib.parse
from contextlib import ExitStack

import anyio
from anyio.from_thread import start_blocking_portal

from .config import Config, from_dict
from .server import Server


def _config(config, data_dir: str | None) -> Config:
    """A Config from a Config, a dict in the YAML file's shape, or None (the memory store);
    the listener on a free loopback port; with ``data_dir`` and no storage given, SQLite
    there.  The management API is off unless ``management`` is given, then on a free
    loopback port too (``management_url``); the same for ``prometheus``
    (``prometheus_url``)."""
    if isinstance(config, Config):
        return config
    data = dict(config or {})
    data.setdefault("listen", {})
    data["listen"] = {"hosts": ["127.0.0.1"], **data["listen"], "port": 0}
    data["management"] = {"hosts": ["127.0.0.1"], **data["management"], "port": 0} \
        if "management" in data else {"port": None}
    data["prometheus"] = {"hosts": ["127.0.0.1"], **data["prometheus"], "port": 0} \
        if "prometheus" in data else {"port": None}
    if "storage" not in data:
        data["storage"] = {"backend": "sqlite", "path": data_dir} if data_dir else \
            {"backend": "memory"}
    return from_dict(data)


class InProcessBroker:
    def __init__(self, config: Config | dict | None = None, data_dir: str | None = None):
        self.config = _config(config, data_dir)
        self._stack: ExitStack | None = None
        self.portal = None
        self.server: Server | None = None
        self.port = 0
        self.management_url: str | None = None   # with a management section in the config
        self.prometheus_url: str | None = None   # with a prometheus section
        self._stopped: anyio.Event | None = None
        self._done = None

    # ------------------------------------------------------------------ life

    def start(self) -> "InProcessBroker":
        self._stack = ExitStack()
        self.portal = self._stack.enter_context(start_blocking_portal("asyncio"))
        self.server = self.portal.call(Server, self.config)
        try:
            self.portal.call(self.server.listen)
        except BaseException:
            self.portal.call(self.server.store.close)
            self._stack.close()
            raise
        self.port = next(p for host, p in self.server.ports if host == "127.0.0.1")
        http = self.server.ports_of.get("management.port") or [(None, None)]
        self.management_url = f"http://127.0.0.1:{http[0][1]}/" if http[0][1] else None
        prom = self.server.ports_of.get("prometheus.port") or [(None, None)]
        self.prometheus_url = f"http://127.0.0.1:{prom[0][1]}/metrics" if prom[0][1] else None
        self._stopped = self.portal.call(anyio.Event)
        self._done, _ = self.portal.start_task(self._run)
        return self

    async def _run(self, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(self.server.serve)
            task_status.started()
            await self._stopped.wait()
            await self.server.shutdown()   # 320 to every client, the store closed
            tg.cancel_scope.cancel()

    def stop(self) -> None:
        if self._stack is None:
            return
        try:
            self.portal.call(self._stopped.set)
            self._done.result(timeout=10)
        finally:
            self._stack.close()
            self._stack = None

    def restart(self) -> "InProcessBroker":
        """Stop and start again on the same configuration and data (a new port)."""
        self.stop()
        return self.start()

    def __enter__(self) -> "InProcessBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def broker(self):
        return self.server.broker

    def url(self, vhost: str = "/", user: str = "guest", password: str = "guest") -> str:
        return (f"amqp://{urllib.parse.quote(user, safe='')}:"
                f"{urllib.parse.quote(password, safe='')}@127.0.0.1:{self.port}/"
                f"{urllib.parse.quote(vhost, safe='')}")

    def call(self, fn, *args):
        """Run ``fn(*args)`` on the broker's loop and return its result."""
        return self.portal.call(fn, *args)

    # ------------------------------------------------------------------ isolation

    def new_vhost(self, prefix: str = "test") -> tuple[str, str, str]:
        """A fresh vhost and a user that may do anything in it (and nothing elsewhere):
        (vhost, user, password)."""
        name = f"{prefix}-{secrets.token_hex(6)}"
        password = secrets.token_hex(8)
        self.call(_add_isolated, self.broker, name, password)
        return name, name, password

    def delete_vhost(self, vhost: str, user: str | None = None) -> None:
        def delete():
            self.broker.delete_vhost(vhost, time.monotonic())
            if user is not None and user in self.broker.users:
                self.broker.delete_user(user, time.monotonic())
        self.call(delete)

    # ------------------------------------------------------------------ looking inside

    def queue_depth(self, queue: str, vhost: str = "/") -> int:
        """Ready messages (as queue.declare's message_count)."""
        return self.call(lambda: self.broker.vhosts[vhost].queues[queue].message_count)

    def wait_for_depth(self, queue: str, depth: int, vhost: str = "/",
                       timeout: float = 5.0) -> int:
        """Wait until the queue holds ``depth`` ready messages; AssertionError after
        ``timeout`` seconds, with the depth seen."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.call(lambda: _depth(self.broker, vhost, queue))
            if seen == depth:
                return seen
            if time.monotonic() >= deadline:
                raise AssertionError(f"queue '{queue}' in vhost '{vhost}' holds {seen} "
                                     f"ready messages, not {depth}, after {timeout} s")
            time.sleep(0.005)

    def peek(self, queue: str, vhost: str = "/") -> list:
        """The queue's ready messages in order, not consumed (``Message`` objects: body,
        routing_key, exchange, properties, headers)."""
        return self.call(lambda: [qm.msg for qm in
                                  self.broker.vhosts[vhost].queues[queue].ready])

    def leftovers(self, vhost: str = "/") -> dict:
        """What a test left in a vhost: its queues (with their depths) and the exchanges it
        declared (not the default and amq.* ones), and its open connections."""
        def look():
            vh = self.broker.vhosts[vhost]
            return {
                "queues": {n: q.message_count for n, q in vh.queues.items()},
                "exchanges": sorted(n for n in vh.exchanges if n and not n.startswith("amq.")),
                "connections": sum(1 for c in self.broker.connections if c.vhost is vh)}
        return self.call(look)


def _depth(broker, vhost: str, queue: str) -> int:
    vh = broker.vhosts.get(vhost)
    q = vh.queues.get(queue) if vh is not None else None
    return q.message_count if q is not None else 0


def _add_isolated(broker, name: str, password: str) -> None:
    from .config import Permission
    broker.add_vhost(name)
    broker.add_user(name, password)
    broker.set_permissions(Permission(name, name))


def start(config: Config | dict | None = None, data_dir: str | None = None) -> InProcessBroker:
    """Start a broker in this process (``with testing.start() as b: ... b.url()``)."""
    return InProcessBroker(config, data_dir).start()


def temp_data_dir() -> str:
    return tempfile.mkdtemp(prefix="amqpbroker-")
