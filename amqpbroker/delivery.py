"""Consumers and delivery: Basic.Qos/Consume/Cancel/Get/Recover, delivery tags, the
unacked table and its settlement (ack, nack, reject), redispatch, poison pills.  The
channel is the queues' delivery sink (``can_deliver``, ``deliver``, ``cancelled``:
queues/base.py).  A mixin of ``channel.Channel``."""
from __future__ import annotations

import base64
import os
from collections import OrderedDict

from pamqp import commands as C

from . import access, errors, framing, poisonpill
from . import methods as M
from .framing import Settle
from .message import F_HEADERS, set_headers, v_long
from .queues import ACK, REJECT, REQUEUE, Consumer, QueueType
from .vhost import REPLY_TO


# The first filter for a pill, in the hot path of every message with headers: the byte of
# the key's length (13) anywhere in the properties.  A one-byte ``in`` is a memchr (about
# 170 instructions); a longer needle costs CPython about 2,400 (bench/callgrind.py:
# headers +3.7 %), so poisonpill.is_pill searches for the whole key only behind this.
_PILL_KEY_LEN = poisonpill.MARK[0]


def _ctag() -> str:
    return "amq.ctag-" + base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")


class Delivery:
    # ------------------------------------------------------------------ the queues' sink

    def can_deliver(self) -> bool:
        return self.flow and not self.closing and not self.conn.output_blocked and (
            not self.global_prefetch or len(self.unacked) < self.global_prefetch)

    def deliver(self, consumer: Consumer, queue: QueueType, qm) -> None:
        """``qm``: the queue's delivery (msg, redelivered, delivery_count); a no-ack
        consumer's is settled already."""
        counters = self.counters
        tag = counters.tags = counters.tags + 1  # the tag counts the delivery (metrics)
        if not consumer.no_ack:
            self.unacked[tag] = (qm, queue)
            counters.deliver += 1
            queue.counters.deliver += 1
        else:
            queue.counters.deliver_no_ack += 1
        if qm.redelivered:
            counters.redeliver += 1
            queue.counters.redeliver += 1
        msg = qm.msg
        if msg.flags & F_HEADERS and _PILL_KEY_LEN in msg.props and \
                self._deliver_pill(consumer, qm, tag):
            return
        if qm.delivery_count:
            self.conn.send(framing.deliver(self.number, consumer.tag, tag, qm.redelivered,
                                           msg.exchange, msg.routing_key, _props(qm),
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
        touched: dict[int, QueueType] = {}
        self._apply_settle(m, entries, touched)
        self._redispatch(touched)

    def _apply_settle(self, m: Settle, entries: list, touched: dict) -> None:
        """Settle (tag, (delivery, queue)) entries, one batch per queue."""
        outcome = ACK if m.index == framing.BASIC_ACK else REQUEUE if m.requeue else REJECT
        if outcome == ACK:
            self.counters.ack += len(entries)
        _settle_batches(entries, outcome, touched)
        if self.pills:
            self._pills_settled(entries, outcome)

    def _redispatch(self, touched: dict[int, QueueType] | None = None) -> None:
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
        if self.pills:  # every pill goes back: its consumer is an ordinary one again
            for c in self.pills.values():
                c.stopped = False
            self.pills.clear()
        if self.tx:  # acks buffered in an uncommitted transaction: still unacked
            entries += [e for item in self.tx if len(item) == 2 for _t, e in item[1]]
            self.tx = [item for item in self.tx if len(item) == 3]
        touched: dict[int, QueueType] = {}
        _settle_batches([(None, e) for e in reversed(entries)], REQUEUE, touched)
        return touched

    def _remove_consumer(self, c: Consumer) -> None:
        q = c.queue
        if q.remove_consumer(c, self.vhost.clock()):  # the last of an auto-delete queue
            self.vhost.delete_queue(q)

    def cancelled(self, c: Consumer) -> None:
        """The consumer's queue was deleted: forget it, tell clients that understand."""
        if self.consumers.pop(c.tag, None) is not None and not self.closing and \
                self.conn.client_caps.get("consumer_cancel_notify"):
            self.conn.send(M.cancel(self.number, c.tag))

    # ------------------------------------------------------------------ poison pills
    # A pill delivered to a consumer stops it (``stopped``: the queue skips it) and waits in
    # ``pills`` (tag -> consumer) for its settlement: acked or rejected for good, the
    # consumer is cancelled; requeued, the consumer is an ordinary one again and the pill
    # an ordinary message for whoever comes next.  Under no-ack the cancel is at once.

    def _deliver_pill(self, consumer: Consumer, qm, tag: int) -> bool:
        """A message whose properties name the header: if it is a pill, deliver it (the
        generic encoder: pills are rare) and stop the consumer.  False: an ordinary one."""
        msg = qm.msg
        if not poisonpill.is_pill(msg):
            return False
        self.conn.send(framing.deliver(self.number, consumer.tag, tag, qm.redelivered,
                                       msg.exchange, msg.routing_key, _props(qm), msg.body,
                                       self.conn.frame_max))
        consumer.stopped = True
        if consumer.no_ack:
            self._pill_cancel(consumer)
        else:
            self.pills[tag] = consumer
        return True

    def _pills_settled(self, entries: list, outcome: int) -> None:
        for tag, _entry in entries:
            c = self.pills.pop(tag, None)
            if c is None:
                continue
            if outcome == REQUEUE:
                c.stopped = False
            else:
                self._pill_cancel(c)

    def _pill_cancel(self, c: Consumer) -> None:
        """The consumer took its pill: cancelled as if the client had cancelled it, and
        told with Basic.Cancel when the client understands it.  A consumer the client
        cancelled meanwhile (its tag gone or reused) is left alone."""
        if self.consumers.get(c.tag) is not c:
            return
        del self.consumers[c.tag]
        if not self.closing and self.conn.client_caps.get("consumer_cancel_notify"):
            self.conn.send(M.cancel(self.number, c.tag))
        self._remove_consumer(c)

    # ------------------------------------------------------------------ methods

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
        access.consume(*self.who, name)  # as RabbitMQ: before the lookup
        q = self.vhost.get_queue(name, self.conn)
        tag = m.consumer_tag or _ctag()
        if tag in self.consumers:
            raise errors.NotAllowed(f"attempt to reuse consumer tag '{tag}'", 60, 20)
        args = m.arguments or {}
        priority = args.get("x-priority", 0)
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise errors.PreconditionFailed(
                f"invalid arg 'x-priority' for queue '{name}' in vhost '{self.vhost.name}'")
        c = Consumer(tag, self, q, m.no_ack, m.exclusive, priority, self.prefetch_count, args)
        q.add_consumer(c, self.vhost.clock())  # 403 when an exclusive consumer is in the way
        self.consumers[tag] = c
        if not m.nowait:
            self.conn.send(M.consume_ok(self.number, tag))  # before any deliver
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
        access.get(*self.who, name)
        q = self.vhost.get_queue(name, self.conn)
        got = q.get(self.vhost.clock(), m.no_ack)
        counters, qc = self.counters, q.counters
        if got is None:
            counters.get_empty += 1
            qc.get_empty += 1
            self.send_method(M.BASIC_GET_EMPTY)
            return
        qm, remaining = got
        tag = counters.tags = counters.tags + 1
        if not m.no_ack:
            self.unacked[tag] = (qm, q)
            counters.get += 1
            qc.get += 1
        else:
            counters.get_no_ack += 1
            qc.get_no_ack += 1
        if qm.redelivered:
            counters.redeliver += 1
            qc.redeliver += 1
        msg = qm.msg
        self.conn.send(framing.get_ok(self.number, tag, qm.redelivered, msg.exchange,
                                      msg.routing_key, remaining, _props(qm), msg.body,
                                      self.conn.frame_max))

    def _basic_recover(self, m) -> None:
        if not m.requeue:
            raise errors.NotImplemented_("requeue=false", 60, m.index & 0xFFFF)
        touched = self.requeue_all()
        if m.name == "Basic.Recover":
            self.send_method(M.BASIC_RECOVER_OK)
        self._redispatch(touched)


def _props(qm) -> bytes:
    """The properties to deliver: as received, plus ``x-delivery-count`` on a redelivery
    from a queue with a delivery limit (as quorum queues and LavinMQ do)."""
    if qm.delivery_count:
        return set_headers(qm.msg.props, {"x-delivery-count": v_long(qm.delivery_count)})
    return qm.msg.props


def _settle_batches(entries, outcome: int, touched: dict) -> None:
    """(tag, (delivery, queue)) entries, in order, settled as one batch per queue; the
    queues that may now deliver again go into ``touched``."""
    batches: dict[int, tuple] = {}
    for _tag, (qm, queue) in entries:
        b = batches.get(id(queue))
        if b is None:
            batches[id(queue)] = b = (queue, [])
        b[1].append(qm)
    for queue, batch in batches.values():
        if outcome == ACK:
            queue.counters.ack += len(batch)
        queue.settle(batch, outcome)
        if not queue.deleted:
            touched[id(queue)] = queue
