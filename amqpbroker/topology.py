"""Exchange and queue methods: declare, delete, bind, unbind, purge, with the permission
checks RabbitMQ makes and in its order.  A mixin of ``channel.Channel``."""
from __future__ import annotations

from pamqp import commands as C

from . import access, errors
from . import methods as M
from .vhost import REPLY_TO


class Topology:
    def _exchange_declare(self, m: C.Exchange.Declare) -> None:
        name = m.exchange.replace("\r", "").replace("\n", "")
        if m.passive:
            self.vhost.declare_exchange(name, m.exchange_type, True, False, False, False, {})
        else:
            args = m.arguments or {}
            access.declare_exchange(*self.who, name, args, name in self.vhost.exchanges)
            self.vhost.declare_exchange(name, m.exchange_type, False, m.durable,
                                        m.auto_delete, m.internal, args,
                                        getattr(m, "arg_types", None))
        if not m.nowait:
            self.send_method(M.EXCHANGE_DECLARE_OK)

    def _exchange_delete(self, m: C.Exchange.Delete) -> None:
        access.delete_exchange(*self.who, m.exchange)
        self.vhost.delete_exchange(m.exchange, m.if_unused)
        if not m.nowait:
            self.send_method(M.EXCHANGE_DELETE_OK)

    def _exchange_bind(self, m) -> None:
        vh = self.vhost
        binding = m.name == "Exchange.Bind"
        access.bind_exchange(*self.who, m.source, m.destination)
        access.topic(self.topics, "read", vh.exchanges.get(m.source), m.routing_key)
        if binding:
            dest = vh.get_exchange(m.destination)
            vh.get_exchange(m.source)
            vh.bind(m.source, dest, m.routing_key, m.arguments or {})
            if not m.nowait:
                self.send_method(M.EXCHANGE_BIND_OK)
        else:
            dest = vh.exchanges.get(m.destination)
            if dest is not None:
                vh.unbind(m.source, dest, m.routing_key, m.arguments or {})
            if not m.nowait:
                self.send_method(M.EXCHANGE_UNBIND_OK)

    def _queue_declare(self, m: C.Queue.Declare) -> None:
        name = m.queue.replace("\r", "").replace("\n", "")
        vh = self.vhost
        if m.passive and name.startswith(REPLY_TO):
            # the direct reply-to pseudo-queue: exists for its own channel's consumer
            token = name[len(REPLY_TO) + 1:]
            if name != REPLY_TO and token not in vh.reply_to:
                raise errors.NotFound(f"no queue '{name}' in vhost '{vh.name}'")
            self.conn.send(M.queue_declare_ok(self.number, name, 0, 0))
            return
        if not m.passive:
            # a server-named queue is checked under a generated amq.gen-... name, as RabbitMQ
            checked = name or vh.new_queue_name()
            access.declare_queue(*self.who, checked, m.arguments, getattr(m, "arg_types", None))
        q = vh.declare_queue(name, m.passive, m.durable, m.exclusive, m.auto_delete,
                             m.arguments or {}, self.conn, getattr(m, "arg_types", None))
        if q.exclusive_owner is self.conn:
            self.conn.exclusive_queues[q.name] = q
        self.last_queue = q.name
        if not m.nowait:
            self.conn.send(M.queue_declare_ok(self.number, q.name, q.message_count,
                                              q.consumer_count))

    def _queue_bind(self, m) -> None:
        vh = self.vhost
        binding = m.name == "Queue.Bind"
        name = self._queue_name(m.queue)
        rk = m.routing_key
        if not m.queue and not rk:
            rk = name
        access.bind_queue(*self.who, m.exchange, name)
        # the source exchange's topic permission, before the queue is looked up (RabbitMQ)
        access.topic(self.topics, "read", vh.exchanges.get(m.exchange), rk)
        if binding:
            q = vh.get_queue(name, self.conn)
            vh.get_exchange(m.exchange)
            vh.bind(m.exchange, q, rk, m.arguments or {})
            if not m.nowait:
                self.send_method(M.QUEUE_BIND_OK)
        else:
            q = vh.queues.get(name)
            if q is not None:
                vh.check_exclusive(q, self.conn)
                vh.unbind(m.exchange, q, rk, m.arguments or {})
            self.send_method(M.QUEUE_UNBIND_OK)

    def _queue_purge(self, m: C.Queue.Purge) -> None:
        name = self._queue_name(m.queue)
        access.purge_queue(*self.who, name)
        q = self.vhost.get_queue(name, self.conn)
        n = self.vhost.purge_queue(q)
        if not m.nowait:
            self.conn.send(M.queue_purge_ok(self.number, n))

    def _queue_delete(self, m: C.Queue.Delete) -> None:
        name = self._queue_name(m.queue)
        vh = self.vhost
        access.delete_queue(*self.who, name)  # a missing queue too, as RabbitMQ
        q = vh.queues.get(name)
        n = 0
        if q is not None:
            vh.check_exclusive(q, self.conn)
            if m.if_unused and q.consumer_count:
                raise errors.PreconditionFailed(f"queue '{name}' in vhost '{vh.name}' in use")
            if m.if_empty and q.message_count:
                raise errors.PreconditionFailed(f"queue '{name}' in vhost '{vh.name}' not empty")
            # As RabbitMQ, this channel's own consumers hear basic.cancel after delete-ok
            # (py-amqp/kombu raise ConsumerCancelled if it comes while awaiting delete-ok).
            own = [c for c in self.consumers.values() if c.queue is q]
            for c in own:
                q.remove_consumer(c, vh.clock())
            n = vh.delete_queue(q)
        else:
            own = ()
        if not m.nowait:
            self.conn.send(M.queue_delete_ok(self.number, n))
        for c in own:
            self.cancelled(c)

