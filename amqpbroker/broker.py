"""The broker: vhosts, users and permissions."""
from __future__ import annotations

import base64
import hashlib
import hmac
import logging

from . import access, errors, metrics
from .access import Permissions
from .config import Config, ConfigError, Permission, User
from .scheduler import Scheduler
from .store import MemoryStore, StoreError
from .vhost import VirtualHost

log = logging.getLogger("amqpbroker.broker")


def hash_password(password: str, salt: bytes) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt4 + sha256(salt4 + password))."""
    return base64.b64encode(salt + hashlib.sha256(
        salt + password.encode("utf-8", "surrogateescape")).digest()).decode()


def check_password(user, password: str) -> bool:
    if user.password_hash:
        try:
            raw = base64.b64decode(user.password_hash)
        except ValueError:
            return False
        return hmac.compare_digest(hash_password(password, raw[:4]), user.password_hash)
    return user.password is not None and hmac.compare_digest(
        user.password.encode(), password.encode("utf-8", "surrogateescape"))


class Broker:
    def __init__(self, config: Config | None = None, store=None):
        """``store``: where durable state lives (the server opens the configured one);
        without it nothing is durable, which is what the sans-I/O tests want."""
        self.config = config or Config()
        self.store = store if store is not None else MemoryStore()
        # every timed action of every vhost (TTL, queue expiry): the server's ticker runs it
        self.scheduler = Scheduler()
        self.vhosts = {name: VirtualHost(name, store=self.store, scheduler=self.scheduler)
                       for name in self.config.vhosts}
        self.waiting_sync: set = set()   # channels with confirms parked until a sync
        # message rates of every counted object, on the scheduler (the server starts it)
        self.sampler = metrics.RateSampler(self.scheduler, lambda: metrics.broker_objects(self))
        self.memory_alarm = False
        self.listeners: list = []   # (protocol, address, port) bound: the server sets them
        try:
            recovered = self.store.recover()
            for vh in self.vhosts.values():
                vh.restore(recovered)
        except StoreError:
            raise
        except Exception as e:  # a row that is not what we wrote: the file is damaged
            where = getattr(self.store, "path", "the store")
            raise StoreError(f"{where}: cannot recover its contents "
                             f"({type(e).__name__}: {' '.join(str(e).split())})") from e
        self._apply_definitions()

    def _apply_definitions(self) -> None:
        """Declare the YAML definitions as a client would: an existing (recovered) entity
        must be equivalent, or the broker does not start."""
        d = self.config.definitions
        path = ""
        try:
            for i, x in enumerate(d.exchanges):
                path = f"definitions.exchanges[{i}]"
                self.vhosts[x.vhost].declare_exchange(x.name, x.type, False, x.durable,
                                                      x.auto_delete, x.internal, x.arguments)
            for i, q in enumerate(d.queues):
                path = f"definitions.queues[{i}]"
                self.vhosts[q.vhost].declare_queue(q.name, False, q.durable, False,
                                                   q.auto_delete, q.arguments, None)
            for i, b in enumerate(d.bindings):
                path = f"definitions.bindings[{i}]"
                vh = self.vhosts[b.vhost]
                dest = vh.get_queue(b.destination) if b.destination_type == "queue" \
                    else vh.get_exchange(b.destination)
                vh.bind(b.source, dest, b.routing_key, b.arguments)
        except errors.AMQPError as e:
            raise ConfigError(f"{path}: {e.reply_text}") from None
        except Exception as e:  # the store cannot encode it (a value its format lacks)
            raise ConfigError(f"{path}: the store cannot keep it "
                              f"({type(e).__name__}: {' '.join(str(e).split())})") from None
        self.users = {u.name: u for u in self.config.users}
        self.permissions = {(p.user, p.vhost): Permissions(p) for p in self.config.permissions}
        self.connections: set = set()

    # what one queued message costs besides its body (measured: ~410 bytes for a 16-byte
    # message, docs/perf.md), for the memory alarm's estimate
    MESSAGE_OVERHEAD = 400

    def queued_bytes(self) -> int:
        """An estimate of the memory the queued messages hold (ready and unacked)."""
        total = 0
        overhead = self.MESSAGE_OVERHEAD
        for vh in self.vhosts.values():
            for q in vh.queues.values():
                st = q.stats()
                total += st.message_bytes + (st.messages + st.unacked) * overhead
        return total

    def set_memory_alarm(self, on: bool) -> None:
        """Resource alarm: block (or unblock) every connection that publishes."""
        if on == self.memory_alarm:
            return
        self.memory_alarm = on
        for conn in list(self.connections):
            if conn.publisher:
                conn.set_blocked("low on memory" if on else None)

    def after_sync(self) -> None:
        """The store made everything up to ``store.synced`` durable: release the confirms
        (and tx commit-oks) that were waiting for it."""
        waiting, self.waiting_sync = self.waiting_sync, set()
        for ch in waiting:
            try:
                ch.flush_confirms()
            except Exception:  # a bug in one channel holds back no other's confirms
                log.exception("releasing the confirms of channel %d failed", ch.number)

    def authenticate(self, username: str, password: str, peer_is_loopback: bool):
        """Return the user, or None for wrong credentials.  Raises AccessRefusedHard for a
        loopback-only user connecting from elsewhere."""
        user = self.users.get(username)
        if user is None or not check_password(user, password):
            return None
        if user.loopback_only and not peer_is_loopback:
            raise errors.AccessRefusedHard(f"user '{username}' can only connect via localhost")
        return user

    def certified(self, username: str, peer_is_loopback: bool):
        """The user a certificate (EXTERNAL) or the configuration (ANONYMOUS) names, or
        None when there is none; the loopback rule holds as for a password."""
        user = self.users.get(username)
        if user is not None and user.loopback_only and not peer_is_loopback:
            raise errors.AccessRefusedHard(f"user '{username}' can only connect via localhost")
        return user

    def set_permissions(self, p: Permission) -> None:
        """Give (or replace) a user's rights on a vhost; connections already open keep the
        rights they opened with (as the channel caches its checks)."""
        self.permissions[(p.user, p.vhost)] = Permissions(p)

    def open_vhost(self, user, vhost: str) -> tuple[VirtualHost, Permissions]:
        vh = self.vhosts.get(vhost)
        return vh, access.open_vhost(self.permissions, user.name, vhost, vh is not None)

    # ------------------------------------------------------------------ run-time changes
    # (the admin facade's: vhosts and users made and removed while the broker runs, as
    # rabbitmqctl add_vhost / delete_vhost / add_user / delete_user; the pytest plugin
    # gives each test its own)

    def add_vhost(self, name: str) -> VirtualHost:
        vh = self.vhosts.get(name)
        if vh is None:
            vh = VirtualHost(name, store=self.store, scheduler=self.scheduler)
            self.vhosts[name] = vh
        return vh

    def delete_vhost(self, name: str, now: float = 0.0) -> None:
        """Its connections get 320 (RabbitMQ's text), its queues and exchanges go with it
        (from the store too), and every permission on it."""
        vh = self.vhosts.pop(name, None)
        if vh is None:
            raise errors.NotFound(f"no vhost '{name}'")
        for conn in list(self.connections):
            if conn.vhost is vh:
                conn.close(320, f"CONNECTION_FORCED - vhost '{name}' is deleted", 0, 0, now)
        for q in list(vh.queues.values()):
            vh.delete_queue(q)
        for ex in list(vh.exchanges.values()):
            vh._remove_exchange(ex)
        for key in [k for k in self.permissions if k[1] == name]:
            del self.permissions[key]

    def add_user(self, name: str, password: str, tags: tuple[str, ...] = ()) -> None:
        self.users[name] = User(name, password=password, tags=tuple(tags))

    def delete_user(self, name: str, now: float = 0.0) -> None:
        """Its connections get 320, its permissions go."""
        if self.users.pop(name, None) is None:
            raise errors.NotFound(f"no user '{name}'")
        for conn in list(self.connections):
            if conn.user is not None and conn.user.name == name:
                conn.close(320, f"CONNECTION_FORCED - user '{name}' is deleted", 0, 0, now)
        for key in [k for k in self.permissions if k[0] == name]:
            del self.permissions[key]
