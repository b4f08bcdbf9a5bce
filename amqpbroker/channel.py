"""Per-channel session: content assembly, consumers, delivery tags, qos, confirms."""
from __future__ import annotations

import base64
import os
from collections import OrderedDict

from pamqp import commands as C

from . import errors, framing, wirecheck
from . import methods as M
from .framing import Publish, Settle
from .message import (F_HEADERS, F_REPLY_TO, Message, join_properties, sender_selected,
                      set_headers, shortstr, split_properties, v_long)
from .queues import Consumer, Queue
from .vhost import REPLY_TO


REPLY_TO_PREFIX = REPLY_TO + "."


def _ctag() -> str:
    return "amq.ctag-" + base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")


class Channel:
    def __init__(self, conn, number: int):
        self.conn = conn
        self.number = number
        self.closing = False          # sent Channel.Close, waiting for CloseOk
        self.vhost = conn.vhost
        self.consumers: dict[str, Consumer] = {}
        self._targets: dict[str, object] = {}  # exchange name -> exchange, checks passed
        self.unacked: OrderedDict[int, tuple] = OrderedDict()  # tag -> (qm, queue, consumer)
        self.next_tag = 1
        self.prefetch_count = 0       # for consumers (global=false)
        self.global_prefetch = 0      # channel-wide (global=true)
        self.flow = True
        self.confirm = False
        self.publish_seq = 0
        # (seq, ack?, store generation that must be durable first), not yet written
        self.pending_confirm: list[tuple[int, bool, int]] = []
        self.commit_ok_gen: int | None = None  # a Tx.CommitOk waiting for the store
        self.last_queue: str | None = None
        self.tx: list | None = None   # in tx mode: buffered publishes and settlements
        self.reply_token: str | None = None  # direct reply-to: our pseudo-queue suffix
        self.reply_consumer: str | None = None
        # content assembly: IDLE (None) -> header -> bodies
        self._publish: Publish | None = None
        self._props: bytes | None = None
        self._check = 0               # the properties need wirecheck.check_publish
        self._header = b""            # the content header payload as received
        self._size = 0
        self._parts: list[bytes] = []
        self._received = 0
        self._handlers = {
            "Basic.Qos": self._basic_qos,
            "Basic.Consume": self._basic_consume,
            "Basic.Cancel": self._basic_cancel,
            "Basic.Get": self._basic_get,
            "Basic.Recover": self._basic_recover,
            "Basic.RecoverAsync": self._basic_recover,
            "Exchange.Declare": self._exchange_declare,
            "Exchange.Delete": self._exchange_delete,
            "Exchange.Bind": self._exchange_bind,
            "Exchange.Unbind": self._exchange_bind,
            "Queue.Declare": self._queue_declare,
            "Queue.Bind": self._queue_bind,
            "Queue.Unbind": self._queue_bind,
            "Queue.Purge": self._queue_purge,
            "Queue.Delete": self._queue_delete,
            "Confirm.Select": self._confirm_select,
            "Channel.Flow": self._channel_flow,
            "Access.Request": self._access_request,
            "Basic.CancelOk": lambda m: None,  # answer to our server-sent Basic.Cancel
            "Tx.Select": self._tx_select,
            "Tx.Commit": self._tx_commit,
            "Tx.Rollback": self._tx_rollback,
        }

    # ------------------------------------------------------------------ output

    def send_method(self, method) -> None:
        """A pamqp method object, or a field-less method of ``methods`` (class, method)."""
        self.conn.send(M.simple(self.number, method) if type(method) is tuple
                       else framing.method_frame(self.number, method))

    # ------------------------------------------------------------------ frames in

    def handle_method(self, method) -> None:
        if self._publish is not None:  # RabbitMQ names the publish, not this method
            raise wirecheck.unexpected(self._publish, self._props)
        if type(method) is Publish:
            if method.immediate:
                raise errors.NotImplemented_("immediate=true", 60, 40)
            self._publish = method
            return
        if type(method) is Settle:
            self._settle(method)
            return
        handler = self._handlers.get(method.name)
        if handler is None:
            raise errors.CommandInvalid(f"unimplemented method {method.name}",
                                        method.index >> 16, method.index & 0xFFFF)
        try:
            handler(method)
        except errors.AMQPError as e:
            if not e.class_id:
                e.class_id, e.method_id = method.index >> 16, method.index & 0xFFFF
            raise

    def handle_header(self, payload: bytes) -> None:
        if self._publish is None or self._props is not None:
            raise wirecheck.unexpected(self._publish, self._props)
        # 505 for another class, 502 for malformed properties; flags user-id/delivery-mode
        size, props, self._check = wirecheck.content_header(payload)
        limit = self.conn.config.limits.max_message_size
        if size > limit:
            self._publish = None
            raise errors.PreconditionFailed(
                f"message size {size} is larger than configured max size {limit}", 60, 40)
        self._props, self._size = props, size
        self._header = payload
        if size == 0:
            self._complete(b"")

    def handle_body(self, payload: bytes) -> None:
        if self._props is None:
            raise wirecheck.unexpected(self._publish, self._props)
        if len(payload) == self._size and not self._parts:  # the usual single body frame
            pub, props = self._publish, self._props
            self._publish = self._props = None
            msg = Message(pub.exchange, pub.routing_key, props, payload)
            if pub.route_ss:  # what every Basic.Deliver of it repeats, as received
                msg.route_ss, msg.header = pub.route_ss, self._header
            self._do_publish(pub, msg)
            return
        self._received += len(payload)
        if self._received > self._size:
            raise errors.FrameError("content body frame exceeds remaining content size", 60, 40)
        if self._received == self._size:
            if self._parts:
                self._parts.append(payload)
                body = b"".join(self._parts)
                self._parts = []
            else:
                body = payload
            self._complete(body)
        else:
            self._parts.append(payload)

    def _complete(self, body: bytes) -> None:
        pub, props = self._publish, self._props
        self._publish = self._props = None
        self._received = 0
        self._do_publish(pub, Message(pub.exchange, pub.routing_key, props, body))

    # ------------------------------------------------------------------ publish

    def _publish_target(self, name: str):
        """The exchange a publish goes to, after the checks RabbitMQ makes: write
        permission (before the lookup), existence, not internal.  Cached per channel
        (permissions do not change during a connection; a deleted exchange is a miss)."""
        vhost = self.vhost
        self.check("write", "exchange", name or "amq.default")
        ex = vhost.exchanges.get(name) if name else vhost.default_exchange
        if ex is None:
            raise errors.NotFound(f"no exchange '{name}' in vhost '{vhost.name}'", 60, 40)
        if ex.internal:
            raise errors.AccessRefused(
                f"cannot publish to internal exchange '{name}' in vhost '{vhost.name}'", 60, 40)
        if len(self._targets) > 1000:
            self._targets.clear()
        self._targets[name] = ex
        return ex

    def _do_publish(self, pub: Publish, msg: Message) -> None:
        if not self.conn.publisher:
            self.conn.became_publisher()
        ex = self._targets.get(pub.exchange)
        if ex is None or ex.deleted:
            ex = self._publish_target(pub.exchange)
        if self._check:  # user-id, delivery-mode: 406 as RabbitMQ, after the target checks
            wirecheck.check_publish(msg.props, self.conn.user)
        flags = msg.flags
        if flags & 0x2300:  # headers, reply-to or expiration: the properties matter
            if flags & 0x0100:
                msg.expiration_ms()  # validates: 406 for a bad expiration, at once
            if flags & F_HEADERS:
                msg.cc, msg.bcc, props = sender_selected(msg.props)
                if props is not msg.props:  # BCC removed
                    msg.props, msg.header = props, None
            if flags & F_REPLY_TO and msg.properties.reply_to == REPLY_TO:
                msg = self._rewrite_reply_to(msg)
        if self.tx is not None:
            self.tx.append((pub, ex, msg))
            return
        self._route(pub, ex, msg)

    def _route(self, pub: Publish, ex, msg: Message) -> None:
        store = self.vhost.store
        written = store.gen
        if not ex.name and msg.routing_key.startswith(REPLY_TO_PREFIX):
            routed, rejected = self._reply(msg), False
        else:
            queues, rejected = self.vhost.publish(ex, msg)
            routed = bool(queues)
        written = store.gen if store.gen != written else 0
        if not routed and pub.mandatory:
            # the return goes out before the confirm (confirms are flushed later)
            self.conn.send(framing.basic_return(self.number, 312, "NO_ROUTE", pub.exchange,
                                                pub.routing_key, msg.props, msg.body,
                                                self.conn.frame_max))
        if self.confirm:
            # a persistent message written to the store is confirmed after the sync that
            # covers it; anything else at once (but in order)
            self.publish_seq += 1
            self.pending_confirm.append((self.publish_seq, not rejected, written))
            self.conn.confirms_dirty.add(self)

    # ------------------------------------------------------------------ direct reply-to

    def _rewrite_reply_to(self, msg: Message) -> Message:
        if self.reply_consumer is None:
            raise errors.PreconditionFailed("fast reply consumer does not exist", 60, 40)
        parts = split_properties(msg.props)
        parts[F_REPLY_TO] = shortstr(f"{REPLY_TO}.{self.reply_token}")
        return msg.with_props(join_properties(parts))

    def _reply(self, msg: Message) -> bool:
        """A reply published to amq.rabbitmq.reply-to.<token>: straight to the requester's
        no-ack consumer, no queue in between."""
        ch = self.vhost.reply_to.get(msg.routing_key[len(REPLY_TO) + 1:])
        if ch is None or ch.reply_consumer is None or ch.closing:
            return False
        tag = ch.next_tag
        ch.next_tag = tag + 1
        ch.conn.send(framing.deliver(ch.number, ch.reply_consumer, tag, False, msg.exchange,
                                     msg.routing_key, msg.props, msg.body, ch.conn.frame_max))
        return True

    def _consume_reply_to(self, m: C.Basic.Consume) -> None:
        if not m.no_ack:
            raise errors.PreconditionFailed("reply consumer cannot acknowledge", 60, 20)
        if self.reply_consumer is not None:
            raise errors.PreconditionFailed("reply consumer already set", 60, 20)
        tag = m.consumer_tag or _ctag()
        if tag in self.consumers:
            raise errors.NotAllowed(f"attempt to reuse consumer tag '{tag}'", 60, 20)
        self.reply_token = base64.urlsafe_b64encode(os.urandom(18)).decode()
        self.reply_consumer = tag
        self.vhost.reply_to[self.reply_token] = self
        if not m.nowait:
            self.conn.send(M.consume_ok(self.number, tag))

    def _drop_reply_to(self) -> None:
        if self.reply_token is not None:
            self.vhost.reply_to.pop(self.reply_token, None)
        self.reply_token = self.reply_consumer = None

    # ------------------------------------------------------------------ transactions

    def _tx_select(self, m) -> None:
        if self.confirm:
            raise errors.PreconditionFailed("cannot switch from confirm to tx mode", 90, 10)
        if self.tx is None:
            self.tx = []
        self.send_method(M.TX_SELECT_OK)

    def _tx_commit(self, m) -> None:
        if self.tx is None:
            raise errors.PreconditionFailed("channel is not transactional", 90, 20)
        work, self.tx = self.tx, []
        touched: dict[int, Queue] = {}
        store = self.vhost.store
        for item in work:
            if len(item) == 3:
                self._route(*item)
            else:
                self._apply_settle(item[0], item[1], touched)
        # after any Basic.Return; after the sync when persistent messages were written
        self.commit_ok_gen = store.gen
        self.conn.confirms_dirty.add(self)
        self._redispatch(touched)

    def _tx_rollback(self, m) -> None:
        if self.tx is None:
            raise errors.PreconditionFailed("channel is not transactional", 90, 30)
        work, self.tx = self.tx, []
        # delivered messages whose acks are discarded stay unacked, in tag order
        restored = [(tag, entry) for item in work if len(item) == 2
                    for tag, entry in item[1]]
        if restored:
            merged = sorted([*self.unacked.items(), *restored])
            self.unacked = OrderedDict(merged)
        self.send_method(M.TX_ROLLBACK_OK)

    def flush_confirms(self) -> None:
        """Write the confirms whose messages are durable (in order), coalescing runs with
        multiple=true; the rest wait for the store's next sync."""
        if self.closing or self.conn.channels.get(self.number) is not self:
            self.pending_confirm = []
            self.commit_ok_gen = None
            return
        synced = self.vhost.store.synced
        if self.commit_ok_gen is not None:
            if self.commit_ok_gen <= synced:
                self.commit_ok_gen = None
                self.send_method(M.TX_COMMIT_OK)
            else:
                self.conn.broker.waiting_sync.add(self)
        if not self.pending_confirm:
            return
        cut = 0
        for _seq, _ack, gen in self.pending_confirm:
            if gen > synced:
                break
            cut += 1
        if cut < len(self.pending_confirm):
            self.conn.broker.waiting_sync.add(self)
        pending, self.pending_confirm = self.pending_confirm[:cut], self.pending_confirm[cut:]
        # RabbitMQ's send_confirms / coalesce_and_send (rabbit_channel): a lone ack is
        # single; otherwise the tags below the smallest still unconfirmed publish (and below
        # the other outcome's tags) go as one multiple=true, the rest one by one; acks first
        acks = [seq for seq, ack, _gen in pending if ack]
        nacks = [seq for seq, ack, _gen in pending if not ack]
        waiting = [self.pending_confirm[0][0]] if self.pending_confirm else []
        for seqs, others, ack in ((acks, nacks, True), (nacks, acks, False)):
            if not seqs:
                continue
            below = 0   # how many go as one multiple=true
            if not ack or len(seqs) > 1:
                cutoff = min([*(waiting or [seqs[-1] + 1]), *others])
                below = sum(1 for seq in seqs if seq < cutoff)
            if below:
                self.conn.send(framing.confirm(self.number, seqs[below - 1], True, ack))
            for seq in seqs[below:]:
                self.conn.send(framing.confirm(self.number, seq, False, ack))

    # ------------------------------------------------------------------ permissions

    def check(self, perm: str, kind: str, name: str) -> None:
        if not getattr(self.conn.permissions, perm).search(name):
            raise errors.AccessRefused(
                f"access to {kind} '{name}' in vhost '{self.vhost.name}' refused for user "
                f"'{self.conn.user.name}'")

    def _queue_name(self, name: str) -> str:
        if name:
            return name
        if self.last_queue is None:
            raise errors.NotFound("no previously declared queue")
        return self.last_queue

    # ------------------------------------------------------------------ delivery

    def can_deliver(self) -> bool:
        return self.flow and not self.closing and not self.conn.output_blocked and (
            not self.global_prefetch or len(self.unacked) < self.global_prefetch)

    def deliver(self, consumer: Consumer, queue: Queue, qm) -> None:
        tag = self.next_tag
        self.next_tag = tag + 1
        if consumer.no_ack:
            queue.settled(qm)
        else:
            self.unacked[tag] = (qm, queue, consumer)
            consumer.unacked += 1
        msg = qm.msg
        if qm.returns and queue.args.delivery_limit is not None:
            self.conn.send(framing.deliver(self.number, consumer.tag, tag, qm.redelivered,
                                           msg.exchange, msg.routing_key, _props(queue, qm),
                                           msg.body, self.conn.frame_max))
            return
        route_ss, header = msg.wire() if msg.header is None else (msg.route_ss, msg.header)
        self.conn.send(framing.deliver_encoded(self.number, consumer.tag_ss, tag,
                                               qm.redelivered, route_ss, header, msg.body,
                                               self.conn.frame_max))

    def _settle(self, m: Settle) -> None:
        tag = m.delivery_tag
        unacked = self.unacked
        if m.multiple and tag == 0:
            entries = list(unacked.items())
            unacked.clear()
        elif tag not in unacked:
            raise errors.PreconditionFailed(f"unknown delivery tag {tag}", 60,
                                            m.index & 0xFFFF)
        elif m.multiple:
            entries = []
            while unacked:
                first = next(iter(unacked))
                if first > tag:
                    break
                entries.append(unacked.popitem(last=False))
        else:
            entries = [(tag, unacked.pop(tag))]
        if self.tx is not None:
            self.tx.append((m, entries))  # applied at commit, restored on rollback
            return
        touched: dict[int, Queue] = {}
        self._apply_settle(m, entries, touched)
        self._redispatch(touched)

    def _apply_settle(self, m: Settle, entries: list, touched: dict) -> None:
        ack = m.index == framing.BASIC_ACK
        requeue = not ack and m.requeue
        for _tag, (qm, queue, consumer) in entries:
            if consumer is not None:
                consumer.unacked -= 1
            if queue.deleted:
                continue
            if ack:
                queue.settled(qm)
            elif requeue:
                queue.requeue(qm)
            else:
                queue.reject(qm)
            touched[id(queue)] = queue

    def _redispatch(self, touched: dict[int, Queue] | None = None) -> None:
        touched = touched if touched is not None else {}
        for c in self.consumers.values():
            touched[id(c.queue)] = c.queue
        now = self.vhost.clock()
        for q in touched.values():
            if not q.deleted:
                q.dispatch(now)

    def requeue_all(self) -> dict:
        """Channel closing (or Basic.Recover): every unacked message back to its queue."""
        entries, self.unacked = list(self.unacked.values()), OrderedDict()
        if self.tx:  # acks buffered in an uncommitted transaction: still unacked
            entries += [e for item in self.tx if len(item) == 2 for _t, e in item[1]]
            self.tx = [item for item in self.tx if len(item) == 3]
        touched: dict[int, Queue] = {}
        for qm, queue, consumer in reversed(entries):
            if consumer is not None:
                consumer.unacked -= 1
            if not queue.deleted:
                queue.requeue(qm)
                touched[id(queue)] = queue
        return touched

    # ------------------------------------------------------------------ lifecycle

    def release(self) -> None:
        """The channel is gone: cancel its consumers, requeue its unacked messages."""
        self._publish = self._props = None
        self._parts = []
        consumers, self.consumers = list(self.consumers.values()), {}
        for c in consumers:
            self._remove_consumer(c)
        self._drop_reply_to()
        touched = self.requeue_all()
        self.tx = None
        now = self.vhost.clock()
        for q in touched.values():
            q.dispatch(now)
        self.pending_confirm = []

    def _remove_consumer(self, c: Consumer) -> None:
        q = c.queue
        q.remove_consumer(c, self.vhost.clock())
        if q.auto_delete and not q.consumers and not q.deleted:
            self.vhost.delete_queue(q)

    def server_cancel(self, c: Consumer) -> None:
        """The consumer's queue was deleted: forget it, tell clients that understand."""
        if self.consumers.pop(c.tag, None) is not None and not self.closing and \
                self.conn.client_caps.get("consumer_cancel_notify"):
            self.conn.send(M.cancel(self.number, c.tag))

    # ------------------------------------------------------------------ methods

    def _access_request(self, m) -> None:
        self.conn.send(framing.access_request_ok(self.number))

    def _channel_flow(self, m: C.Channel.Flow) -> None:
        if not m.active:
            raise errors.NotImplemented_("active=false", 20, 20)
        self.send_method(C.Channel.FlowOk(active=True))

    def _confirm_select(self, m: C.Confirm.Select) -> None:
        if self.tx is not None:
            raise errors.PreconditionFailed("cannot switch from tx to confirm mode", 85, 10)
        self.confirm = True
        if not m.nowait:
            self.send_method(M.CONFIRM_SELECT_OK)

    def _basic_qos(self, m: C.Basic.Qos) -> None:
        if m.prefetch_size:
            raise errors.NotImplemented_(f"prefetch_size!=0 ({m.prefetch_size})", 60, 10)
        if m.global_:
            self.global_prefetch = m.prefetch_count
        else:
            # RabbitMQ applies this to consumers created afterwards; we also resize the
            # consumers already on the channel, so that celery's live prefetch changes work
            # whatever product we advertise (a deliberate difference, see README).
            self.prefetch_count = m.prefetch_count
            for c in self.consumers.values():
                c.prefetch = m.prefetch_count
        self.send_method(M.BASIC_QOS_OK)
        self._redispatch()

    def _basic_consume(self, m: C.Basic.Consume) -> None:
        if m.queue == REPLY_TO:
            self._consume_reply_to(m)
            return
        name = self._queue_name(m.queue)
        self.check("read", "queue", name)  # as RabbitMQ: before the lookup
        q = self.vhost.get_queue(name, self.conn)
        tag = m.consumer_tag or _ctag()
        if tag in self.consumers:
            raise errors.NotAllowed(f"attempt to reuse consumer tag '{tag}'", 60, 20)
        if (m.exclusive and q.consumers) or any(c.exclusive for c in q.consumers):
            raise errors.AccessRefused(
                f"queue '{name}' in vhost '{self.vhost.name}' in exclusive use")
        args = m.arguments or {}
        priority = args.get("x-priority", 0)
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise errors.PreconditionFailed(
                f"invalid arg 'x-priority' for queue '{name}' in vhost '{self.vhost.name}'")
        c = Consumer(tag, self, q, m.no_ack, m.exclusive, priority, self.prefetch_count, args)
        self.consumers[tag] = c
        if not m.nowait:
            self.conn.send(M.consume_ok(self.number, tag))  # before any deliver
        q.add_consumer(c)
        q.touch(self.vhost.clock())
        q.dispatch(self.vhost.clock())

    def _basic_cancel(self, m: C.Basic.Cancel) -> None:
        if m.consumer_tag == self.reply_consumer and self.reply_consumer is not None:
            self._drop_reply_to()
        c = self.consumers.pop(m.consumer_tag, None)
        if not m.nowait:
            self.conn.send(M.cancel_ok(self.number, m.consumer_tag))
        if c is not None:
            self._remove_consumer(c)

    def _basic_get(self, m: C.Basic.Get) -> None:
        name = self._queue_name(m.queue)
        self.check("read", "queue", name)
        q = self.vhost.get_queue(name, self.conn)
        now = self.vhost.clock()
        q.touch(now)
        qm = q.take(now)
        if qm is None:
            self.send_method(M.BASIC_GET_EMPTY)
            return
        tag = self.next_tag
        self.next_tag = tag + 1
        if m.no_ack:
            q.settled(qm)
        else:
            self.unacked[tag] = (qm, q, None)
        msg = qm.msg
        self.conn.send(framing.get_ok(self.number, tag, qm.redelivered, msg.exchange,
                                      msg.routing_key, len(q.ready), _props(q, qm), msg.body,
                                      self.conn.frame_max))

    def _basic_recover(self, m) -> None:
        if not m.requeue:
            raise errors.NotImplemented_("requeue=false", 60, m.index & 0xFFFF)
        touched = self.requeue_all()
        if m.name == "Basic.Recover":
            self.send_method(M.BASIC_RECOVER_OK)
        self._redispatch(touched)

    def _exchange_declare(self, m: C.Exchange.Declare) -> None:
        name = m.exchange.replace("\r", "").replace("\n", "")
        if m.passive:
            self.vhost.declare_exchange(name, m.exchange_type, True, False, False, False, {})
        else:
            self.check("configure", "exchange", name or "amq.default")
            args = m.arguments or {}
            ae = args.get("alternate-exchange")
            if isinstance(ae, str) and name not in self.vhost.exchanges:
                self.check("read", "exchange", name)
                self.check("write", "exchange", ae)
            self.vhost.declare_exchange(name, m.exchange_type, False, m.durable,
                                        m.auto_delete, m.internal, args,
                                        getattr(m, "arg_types", None))
        if not m.nowait:
            self.send_method(M.EXCHANGE_DECLARE_OK)

    def _exchange_delete(self, m: C.Exchange.Delete) -> None:
        self.check("configure", "exchange", m.exchange or "amq.default")
        self.vhost.delete_exchange(m.exchange, m.if_unused)
        if not m.nowait:
            self.send_method(M.EXCHANGE_DELETE_OK)

    def _exchange_bind(self, m) -> None:
        vh = self.vhost
        binding = m.name == "Exchange.Bind"
        if m.destination == "" or m.source == "":
            raise errors.AccessRefused("operation not permitted on the default exchange")
        self.check("write", "exchange", m.destination)
        self.check("read", "exchange", m.source)
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
            self.check("configure", "queue", checked)
            dlx = (m.arguments or {}).get("x-dead-letter-exchange")
            if dlx is not None and not isinstance(dlx, str):  # rabbit_channel's check_dlx
                type_name = (getattr(m, "arg_types", None) or {}).get(
                    "x-dead-letter-exchange", type(dlx).__name__)
                raise errors.PreconditionFailed(
                    f"invalid type '{type_name}' for arg 'x-dead-letter-exchange' in queue "
                    f"'{name}' in vhost '{vh.name}'")
            if isinstance(dlx, str):  # as RabbitMQ: read on the queue, write on the DLX
                self.check("read", "queue", checked)
                self.check("write", "exchange", dlx or "amq.default")
        q = vh.declare_queue(name, m.passive, m.durable, m.exclusive, m.auto_delete,
                             m.arguments or {}, self.conn, getattr(m, "arg_types", None))
        if q.exclusive_owner is self.conn:
            self.conn.exclusive_queues[q.name] = q
        self.last_queue = q.name
        if not m.nowait:
            self.conn.send(M.queue_declare_ok(self.number, q.name, q.message_count,
                                              len(q.consumers)))

    def _queue_bind(self, m) -> None:
        vh = self.vhost
        binding = m.name == "Queue.Bind"
        name = self._queue_name(m.queue)
        rk = m.routing_key
        if not m.queue and not rk:
            rk = name
        if m.exchange == "":
            raise errors.AccessRefused("operation not permitted on the default exchange")
        self.check("write", "queue", name)
        self.check("read", "exchange", m.exchange)
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
        self.check("read", "queue", name)
        q = self.vhost.get_queue(name, self.conn)
        n = q.purge()
        if not m.nowait:
            self.conn.send(M.queue_purge_ok(self.number, n))

    def _queue_delete(self, m: C.Queue.Delete) -> None:
        name = self._queue_name(m.queue)
        vh = self.vhost
        self.check("configure", "queue", name)  # a missing queue too, as RabbitMQ
        q = vh.queues.get(name)
        n = 0
        if q is not None:
            vh.check_exclusive(q, self.conn)
            if m.if_unused and q.consumers:
                raise errors.PreconditionFailed(f"queue '{name}' in vhost '{vh.name}' in use")
            if m.if_empty and q.message_count:
                raise errors.PreconditionFailed(f"queue '{name}' in vhost '{vh.name}' not empty")
            # As RabbitMQ, this channel's own consumers hear basic.cancel after delete-ok
            # (py-amqp/kombu raise ConsumerCancelled if it comes while awaiting delete-ok).
            own = [c for c in q.consumers if c.channel is self]
            for c in own:
                q.remove_consumer(c)
            n = vh.delete_queue(q)
        else:
            own = ()
        if not m.nowait:
            self.conn.send(M.queue_delete_ok(self.number, n))
        for c in own:
            self.server_cancel(c)


def _props(queue: Queue, qm) -> bytes:
    """The properties to deliver: as received, plus ``x-delivery-count`` on a redelivery
    from a queue with a delivery limit (as quorum queues and LavinMQ do)."""
    if qm.returns and queue.args.delivery_limit is not None:
        return set_headers(qm.msg.props, {"x-delivery-count": v_long(qm.returns)})
    return qm.msg.props
