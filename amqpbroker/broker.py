"""The broker: vhosts, users and permissions."""
from __future__ import annotations

import logging

from . import access, errors, limits, metrics, policies
from .access import Permissions, TopicPermissions
from .config import Config, ConfigError, Permission, TopicPermission, User
from .passwords import check as check_password, hash_password  # noqa: F401  (re-exported)
from .scheduler import Scheduler
from .store import MemoryStore, StoreError
from .vhost import VirtualHost

log = logging.getLogger("amqpbroker.broker")


class Broker:
    def __init__(self, config: Config | None = None, store=None):
        """``store``: where durable state lives (the server opens the configured one);
        without it nothing is durable, which is what the sans-I/O tests want."""
        self.config = config or Config()
        self.store = store if store is not None else MemoryStore()
        # every timed action of every vhost (TTL, queue expiry): the server's ticker runs it
        self.scheduler = Scheduler()
        # a config.VHost is a str carrying its limits; the vhost gets a plain str (the
        # hot path hashes and compares it: a subclass would take the slow paths)
        self.vhosts = {str(name): VirtualHost(str(name), store=self.store,
                                              scheduler=self.scheduler)
                       for name in self.config.vhosts}
        for name in self.config.vhosts:
            self.vhosts[name].limits = dict(getattr(name, "limits", None) or {})
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
        for kind in ("policies", "operator_policies"):  # (validated by config.py)
            for p in getattr(d, kind):
                vh = self.vhosts[p.vhost]
                policies.set_policy(vh, policies.make(
                    p.vhost, p.name, p.pattern, p.definition, p.priority, p.apply_to,
                    kind == "operator_policies"), vh.clock(), store=False)
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
        # (user, vhost) -> TopicPermissions; a user without any has no entry (fast path)
        self.topic_permissions: dict[tuple[str, str], TopicPermissions] = {}
        for tp in self.config.topic_permissions:
            self.set_topic_permissions(tp)
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

    def set_topic_permissions(self, p: TopicPermission) -> None:
        """Give (or replace) a user's topic permission on one exchange of a vhost; as for
        ``set_permissions``, open connections keep the ones they opened with (a new
        object, not a change to the one they hold)."""
        old = self.topic_permissions.get((p.user, p.vhost))
        patterns = dict(old.patterns) if old else {}
        patterns[p.exchange] = (p.write, p.read)
        self.topic_permissions[(p.user, p.vhost)] = TopicPermissions(p.user, p.vhost, patterns)

    def open_vhost(self, user, vhost: str) -> tuple[VirtualHost, Permissions]:
        """Connection.Open: the limits, then the user's access (RabbitMQ's order)."""
        limits.open_connection(self, user, vhost)
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
        for table in (self.permissions, self.topic_permissions):
            for key in [k for k in table if k[1] == name]:
                del table[key]

    def add_user(self, name: str, password: str, tags: tuple[str, ...] = ()) -> None:
        self.users[name] = User(name, password=password, tags=tuple(tags))

    def delete_user(self, name: str, now: float = 0.0) -> None:
        """Its connections get 320, its permissions go."""
        if self.users.pop(name, None) is None:
            raise errors.NotFound(f"no user '{name}'")
        for conn in list(self.connections):
            if conn.user is not None and conn.user.name == name:
                conn.close(320, f"CONNECTION_FORCED - user '{name}' is deleted", 0, 0, now)
        for table in (self.permissions, self.topic_permissions):
            for key in [k for k in table if k[0] == name]:
                del table[key]

    def set_policy(self, vhost: str, name: str, pattern: str, definition: dict,
                   priority: int = 0, apply_to: str = "all", operator: bool = False):
        """Set (or replace) a policy, applied at once and kept in the store (as
        rabbitmqctl set_policy / set_operator_policy).  PolicyError names a bad one."""
        vh = self.vhosts.get(vhost)
        if vh is None:
            raise errors.NotFound(f"no vhost '{vhost}'")
        p = policies.make(vhost, name, pattern, definition, priority, apply_to, operator)
        policies.set_policy(vh, p, vh.clock())
        return p

    def clear_policy(self, vhost: str, name: str, operator: bool = False) -> None:
        vh = self.vhosts.get(vhost)
        if vh is None:
            raise errors.NotFound(f"no vhost '{vhost}'")
        policies.clear_policy(vh, name, operator, vh.clock())
