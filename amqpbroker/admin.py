"""A synchronous facade over the broker, for the management HTTP API and a CLI (issue 12):
list and inspect every object in RabbitMQ's JSON shapes and field names, declare and
delete, bind and unbind, purge, drain (poison pills), close a connection, export and
import definitions.

It goes through the vhosts' public methods, which validate as a client's declaration is
validated (same errors, same texts), and reads queues only through the queue-type seam
(``stats()``, ``counters``, the declaration attributes).  Given a ``user``, every call first
applies that user's rules from ``access`` (vhost rights as the channel checks them, then the
management tags), so the HTTP API refuses what AMQP refuses; without one (the CLI, tests)
nothing is checked.  Errors are ``errors.AMQPError`` (NotFound, AccessRefused,
PreconditionFailed...): the HTTP layer maps their codes.  Event-loop thread only."""
from __future__ import annotations

import time

from . import __version__, access, definitions, errors, metrics, poisonpill
from .adminaccounts import AdminAccounts
from .adminpolicies import PolicyAdmin
from .adminviews import (NODE, binding_info, channel_info, channel_ref, connection_info,
                         connection_name, exchange_info, queue_info, user_name)
from .definitions import json_value
from .message import Message


class Admin(AdminAccounts, PolicyAdmin):
    def __init__(self, broker, user: str | None = None):
        """``user``: whose rights apply (a management-tagged user), or None for none."""
        self.broker = broker
        self.user = user
        self.tags: tuple = ()
        if user is not None:
            u = broker.users.get(user)
            if u is None:
                raise errors.AccessRefused(f"user '{user}' does not exist")
            self.tags = tuple(u.tags)
            access.management(user, self.tags)

    # ------------------------------------------------------------------ rules

    def _admin_only(self) -> None:
        if self.user is not None:
            access.administrator(self.user, self.tags)

    def _sees(self, vhost: str) -> bool:
        return self.user is None or access.sees_vhost(self.broker.permissions, self.user,
                                                      self.tags, vhost)

    def _sees_conn(self, conn) -> bool:
        return self.user is None or access.sees_connection(self.user, self.tags,
                                                           user_name(conn))

    def _check(self, rule, vhost: str, *args) -> None:
        """A channel rule (access.declare_queue, ...) with the user's rights on ``vhost``."""
        if self.user is not None:
            perms = access.open_vhost(self.broker.permissions, self.user, vhost,
                                      vhost in self.broker.vhosts)
            rule(perms, vhost, self.user, *args)

    def _vhost(self, name: str):
        vh = self.broker.vhosts.get(name)
        if vh is None or not self._sees(name):
            raise errors.NotFound(f"no vhost '{name}'")
        return vh

    def find_vhost(self, name: str):
        """The VirtualHost, when the user sees it (else NotFound): for existence tests."""
        return self._vhost(name)

    def _vhosts(self, vhost: str | None) -> list:
        if vhost is not None:
            return [self._vhost(vhost)]
        return [vh for n, vh in sorted(self.broker.vhosts.items()) if self._sees(n)]

    def _queue(self, vhost: str, name: str):
        q = self._vhost(vhost).queues.get(name)
        if q is None:
            raise errors.NotFound(f"no queue '{name}' in vhost '{vhost}'")
        return q

    def _exchange(self, vhost: str, name: str):
        vh = self._vhost(vhost)
        ex = vh.exchanges.get(name) if name else vh.default_exchange
        if ex is None:
            raise errors.NotFound(f"no exchange '{name}' in vhost '{vhost}'")
        return ex

    def _connections(self) -> list:
        return sorted((c for c in self.broker.connections if self._sees_conn(c)),
                      key=connection_name)

    def _connection(self, name: str):
        for conn in self._connections():
            if connection_name(conn) == name:
                return conn
        raise errors.NotFound(f"no connection '{name}'")

    # ------------------------------------------------------------------ reading

    def overview(self) -> dict:
        """One pass over the queues (a stats() each): 100,000 queues cost ~0.1 s."""
        metrics.refresh(self.broker)
        chans, conns = metrics.ChannelCounters(), metrics.ConnectionCounters()
        totals = dict.fromkeys(("messages", "messages_ready", "messages_unacknowledged",
                                "consumers", "queues", "exchanges"), 0)
        for vh in self._vhosts(None):
            chans.add(vh.counters.channels)
            conns.add(vh.counters.connections)
            for q in vh.queues.values():
                st = q.stats()
                totals["messages_ready"] += st.messages
                totals["messages_unacknowledged"] += st.unacked
                totals["consumers"] += st.consumers
            totals["queues"] += len(vh.queues)
            totals["exchanges"] += len(vh.exchanges) + 1
        totals["messages"] = totals["messages_ready"] + totals["messages_unacknowledged"]
        connections = self._connections()
        return {
            "product_name": "amqpbroker", "product_version": __version__,
            "rabbitmq_version": definitions.RABBIT_VERSION, "node": NODE,
            "message_stats": metrics.message_stats(chans),
            "recv_oct": conns.recv_oct, "send_oct": conns.send_oct,
            "queue_totals": {k: totals[k] for k in
                             ("messages", "messages_ready", "messages_unacknowledged")},
            "object_totals": {
                "connections": len(connections),
                "channels": sum(len(c.channels) for c in connections),
                **{k: totals[k] for k in ("consumers", "exchanges", "queues")}},
        }

    def vhosts(self) -> list[dict]:
        metrics.refresh(self.broker)
        out = []
        for vh in self._vhosts(None):
            stats = [q.stats() for q in vh.queues.values()]
            ready = sum(s.messages for s in stats)
            unacked = sum(s.unacked for s in stats)
            c = vh.counters.connections
            out.append({
                "name": vh.name, "tracing": False, "messages": ready + unacked,
                "messages_ready": ready, "messages_unacknowledged": unacked,
                "message_stats": metrics.message_stats(vh.counters.channels),
                "recv_oct": c.recv_oct, "recv_oct_details": {"rate": c.rate("recv_oct")},
                "send_oct": c.send_oct, "send_oct_details": {"rate": c.rate("send_oct")}})
        return out

    def vhost(self, name: str) -> dict:
        self._vhost(name)
        return next(v for v in self.vhosts() if v["name"] == name)

    def users(self) -> list[dict]:
        self._admin_only()
        return [{"name": u.name, "tags": list(u.tags),
                 "password_hash": definitions.password_hash(u),
                 "hashing_algorithm": definitions.hashing_algorithm(u)}
                for _n, u in sorted(self.broker.users.items())]

    def permissions(self, vhost: str | None = None, user: str | None = None) -> list[dict]:
        self._admin_only()
        return [{"user": u, "vhost": v, "configure": p.patterns[0], "write": p.patterns[1],
                 "read": p.patterns[2]}
                for (u, v), p in sorted(self.broker.permissions.items())
                if (vhost is None or v == vhost) and (user is None or u == user)]

    def topic_permissions(self, vhost: str | None = None,
                          user: str | None = None) -> list[dict]:
        self._admin_only()
        return [tp for tp in definitions.topic_permissions(self.broker)
                if (vhost is None or tp["vhost"] == vhost) and
                (user is None or tp["user"] == user)]

    def exchanges(self, vhost: str | None = None) -> list[dict]:
        return [exchange_info(vh.name, ex) for vh in self._vhosts(vhost)
                for ex in [vh.default_exchange, *sorted(vh.exchanges.values(),
                                                        key=lambda e: e.name)]]

    def exchange(self, vhost: str, name: str) -> dict:
        return exchange_info(vhost, self._exchange(vhost, name))

    def queues(self, vhost: str | None = None) -> list[dict]:
        return [queue_info(*pair) for pair in self.queue_list(vhost)]

    def queue_list(self, vhost: str | None = None) -> list[tuple]:
        """(vhost name, queue) in queues()'s order, for a caller that shows only some (a
        page of 100 among 100,000): ``adminviews.queue_info(*pair)`` shows one."""
        return [(vh.name, q) for vh in self._vhosts(vhost)
                for q in sorted(vh.queues.values(), key=lambda q: q.name)]

    def queue(self, vhost: str, name: str) -> dict:
        return queue_info(vhost, self._queue(vhost, name))

    def bindings(self, vhost: str | None = None) -> list[dict]:
        """The default exchange's implicit binding of every queue first, as RabbitMQ."""
        out = []
        for vh in self._vhosts(vhost):
            for q in sorted(vh.queues.values(), key=lambda q: q.name):
                out.append(binding_info(vh.name, "", q, q.name, {}))
            for ex in sorted(vh.exchanges.values(), key=lambda e: e.name):
                for b in ex.bindings.values():
                    out.append(binding_info(vh.name, ex.name, b.destination, b.routing_key,
                                             b.arguments))
        return out

    def connections(self) -> list[dict]:
        return [connection_info(c) for c in self._connections()]

    def connection(self, name: str) -> dict:
        return connection_info(self._connection(name))

    def channels(self, connection: str | None = None) -> list[dict]:
        conns = self._connections() if connection is None else [self._connection(connection)]
        return [channel_info(conn, ch) for conn in conns
                for _n, ch in sorted(conn.channels.items())]

    def consumers(self, vhost: str | None = None) -> list[dict]:
        out = []
        for conn in self._connections():
            if vhost is not None and conn.vhost.name != vhost:
                continue
            for _n, ch in sorted(conn.channels.items()):
                for c in ch.consumers.values():
                    out.append({
                        "consumer_tag": c.tag, "exclusive": c.exclusive,
                        "ack_required": not c.no_ack, "prefetch_count": c.prefetch,
                        "priority": c.priority, "arguments": json_value(dict(c.arguments)),
                        "active": True, "activity_status": "up",
                        "queue": {"name": c.queue.name, "vhost": conn.vhost.name},
                        "channel_details": channel_ref(conn, ch)})
        return out

    # ------------------------------------------------------------------ changing

    def declare_exchange(self, vhost: str, name: str, type: str = "direct",
                         durable: bool = True, auto_delete: bool = False,
                         internal: bool = False, arguments: dict | None = None) -> dict:
        vh = self._vhost(vhost)
        args = dict(arguments or {})
        self._check(access.declare_exchange, vhost, name, args, name in vh.exchanges)
        vh.declare_exchange(name, type, False, durable, auto_delete, internal, args)
        return self.exchange(vhost, name)

    def delete_exchange(self, vhost: str, name: str, if_unused: bool = False) -> None:
        self._check(access.delete_exchange, vhost, name)
        vh = self._vhost(vhost)
        if name and name not in vh.exchanges:
            raise errors.NotFound(f"no exchange '{name}' in vhost '{vhost}'")
        vh.delete_exchange(name, if_unused)

    def declare_queue(self, vhost: str, name: str, durable: bool = True,
                      auto_delete: bool = False, arguments: dict | None = None) -> dict:
        vh = self._vhost(vhost)
        args = dict(arguments or {})
        name = name or vh.new_queue_name()
        self._check(access.declare_queue, vhost, name, args)
        vh.declare_queue(name, False, durable, False, auto_delete, args, None)
        return self.queue(vhost, name)

    def delete_queue(self, vhost: str, name: str, if_unused: bool = False,
                     if_empty: bool = False) -> int:
        """Whatever its owner (an exclusive queue too, as the management API); its
        consumers are cancelled.  Returns how many messages it held ready."""
        self._check(access.delete_queue, vhost, name)
        q = self._queue(vhost, name)
        if if_unused and q.consumer_count:
            raise errors.PreconditionFailed(f"queue '{name}' in vhost '{vhost}' in use")
        if if_empty and q.message_count:
            raise errors.PreconditionFailed(f"queue '{name}' in vhost '{vhost}' not empty")
        return self._vhost(vhost).delete_queue(q)

    def purge_queue(self, vhost: str, name: str) -> int:
        self._check(access.purge_queue, vhost, name)
        return self._vhost(vhost).purge_queue(self._queue(vhost, name))

    def drain(self, vhost: str, name: str) -> int:
        """Append one poison pill per current consumer of the queue, so that a fleet of
        workers finishes what was queued before and stops: each pill stops the consumer
        it reaches, which is cancelled once it acks it (delivery.py).  Consumers already
        stopping on a pill are not counted.  A pill is published through the default
        exchange (the user needs write on it, as for a publish), persistent when the
        queue is durable.  Returns how many pills the queue took (a length limit with
        ``reject-publish`` may refuse some)."""
        self._check(access.publish, vhost, "")
        vh, q = self._vhost(vhost), self._queue(vhost, name)
        stopping = sum(1 for conn in self.broker.connections if conn.vhost is vh
                       for ch in conn.channels.values() for c in ch.consumers.values()
                       if c.queue is q and c.stopped)
        taken = 0
        for _ in range(q.consumer_count - stopping):
            pill = poisonpill.message(name, q.durable)
            _route, ticket = vh.publish(vh.default_exchange, pill)
            taken += bool(ticket)     # REFUSED (False): a reject-publish length limit
        return taken

    def bind(self, vhost: str, source: str, destination: str, destination_type: str = "queue",
             routing_key: str = "", arguments: dict | None = None) -> dict:
        vh, dest = self._binding_ends(vhost, source, destination, destination_type)
        vh.bind(source, dest, routing_key, dict(arguments or {}))
        return binding_info(vhost, source, dest, routing_key, arguments or {})

    def unbind(self, vhost: str, source: str, destination: str,
               destination_type: str = "queue", routing_key: str = "",
               arguments: dict | None = None) -> None:
        vh, dest = self._binding_ends(vhost, source, destination, destination_type)
        vh.unbind(source, dest, routing_key, dict(arguments or {}))

    def _binding_ends(self, vhost, source, destination, destination_type):
        if destination_type == "queue":
            self._check(access.bind_queue, vhost, source, destination)
            return self._vhost(vhost), self._queue(vhost, destination)
        if destination_type == "exchange":
            self._check(access.bind_exchange, vhost, source, destination)
            return self._vhost(vhost), self._exchange(vhost, destination)
        raise errors.PreconditionFailed(f"unknown destination type '{destination_type}'")

    def close_connection(self, name: str, reason: str = "Closed via management plugin",
                         now: float | None = None) -> None:
        """As RabbitMQ's DELETE /api/connections/{name}: Connection.Close 320
        CONNECTION_FORCED with the reason; the edge writes it (the connection wakes its
        writer) and drops the socket after Close-Ok or the close timeout."""
        conn = self._connection(name)
        if self.user is not None:
            access.close_connection(self.user, self.tags, user_name(conn))
        conn.close(320, f"CONNECTION_FORCED - {reason}", 0, 0,
                   time.monotonic() if now is None else now)

    # ------------------------------------------------------------------ messages

    def publish(self, vhost: str, exchange: str, msg: Message) -> bool:
        """Publish as a client would (write permission, no mandatory): whether it was
        routed anywhere."""
        self._check(access.publish, vhost, exchange)
        vh, ex = self._vhost(vhost), self._exchange(vhost, exchange)
        if ex.internal:
            raise errors.AccessRefused(f"cannot publish to internal exchange '{exchange}' "
                                       f"in vhost '{vhost}'")
        ex.counters.publish_in += 1
        route, _ticket = vh.publish(ex, msg)
        return bool(route)

    def get_messages(self, vhost: str, name: str, count: int, outcome: int | None) -> list:
        """Basic.Get ``count`` times; then settle them all with ``outcome`` (queues.base
        ACK, REQUEUE, REJECT; None: they were taken no-ack), as RabbitMQ's management
        does on its own channel.  Returns [(message, redelivered, remaining)]."""
        self._check(access.get, vhost, name)
        vh, q = self._vhost(vhost), self._queue(vhost, name)
        taken, out = [], []
        for _ in range(count):
            got = q.get(vh.clock(), outcome is None)
            if got is None:
                break
            qm, remaining = got
            taken.append(qm)
            out.append((qm.msg, qm.redelivered, remaining))
        if taken and outcome is not None:
            q.settle(taken, outcome)
            q.dispatch(vh.clock())
        return out

    # ------------------------------------------------------------------ definitions

    def export_definitions(self, vhost: str | None = None) -> dict:
        """RabbitMQ's definitions JSON; per vhost, its topology only (definitions.py)."""
        self._admin_only()
        if vhost is not None:
            self._vhost(vhost)
        return definitions.export(self.broker, vhost)

    def import_definitions(self, defs: dict, vhost: str | None = None) -> None:
        self._admin_only()
        if vhost is not None:
            self._vhost(vhost)
        definitions.apply(self.broker, defs, vhost)
