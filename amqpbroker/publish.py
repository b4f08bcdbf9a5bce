"""Publishing: the checks on a publish's exchange, routing, ``mandatory`` returns and the
publisher confirms that follow (the channel's side: ``confirms.ConfirmTracker`` keeps the
bookkeeping).  A mixin of ``channel.Channel``."""
from __future__ import annotations

from pamqp import commands as C

from . import access, errors, framing, wirecheck
from . import methods as M
from .confirms import SAFE, ConfirmTracker
from .framing import Publish
from .message import F_HEADERS, F_REPLY_TO, Message, sender_selected
from .replyto import REPLY_TO_PREFIX
from .vhost import REPLY_TO


class Publishing:
    # ------------------------------------------------------------------ publish

    def _publish_target(self, name: str, routing_key: str):
        """The exchange a publish goes to, after the checks RabbitMQ makes: write
        permission (before the lookup), existence, not internal, the topic permission.
        Cached per channel (permissions do not change during a connection; a deleted
        exchange is a miss), except where a topic permission applies: its answer is for
        one routing key, so such a publish comes here every time."""
        vhost = self.vhost
        try:
            access.publish(*self.who, name)
            ex = vhost.exchanges.get(name) if name else vhost.default_exchange
            if ex is None:
                raise errors.NotFound(f"no exchange '{name}' in vhost '{vhost.name}'")
            if ex.internal:
                raise errors.AccessRefused(
                    f"cannot publish to internal exchange '{name}' in vhost '{vhost.name}'")
            if self.topics is not None and access.topic(self.topics, "write", ex, routing_key):
                return ex
        except errors.AMQPError as e:  # RabbitMQ's close names the method: basic.publish
            e.class_id, e.method_id = 60, 40
            raise
        if len(self._targets) > 1000:
            self._targets.clear()
        self._targets[name] = ex
        return ex

    def _do_publish(self, pub: Publish, msg: Message) -> None:
        if not self.conn.publisher:
            self.conn.became_publisher()
        ex = self._targets.get(pub.exchange)
        if ex is None or ex.deleted:
            ex = self._publish_target(pub.exchange, pub.routing_key)
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
            self.tx_held += len(msg.body)
            self.conn.hold(len(msg.body))  # 530 past limits.max_buffered_bytes
            return
        self._route(pub, ex, msg)

    def _route(self, pub: Publish, ex, msg: Message) -> None:
        xc = ex.counters
        xc.publish_in += 1
        self.counters.publish += 1
        if not ex.name and msg.routing_key.startswith(REPLY_TO_PREFIX):
            routed, ticket = self._reply(msg), SAFE
        else:
            queues, ticket = self.vhost.publish(ex, msg)
            routed = bool(queues)
        if not routed:
            if pub.mandatory:
                xc.return_unroutable += 1
                self.counters.return_unroutable += 1
                # the return goes out before the confirm (confirms are flushed later)
                self.conn.send(framing.basic_return(self.number, 312, "NO_ROUTE",
                                                    pub.exchange, pub.routing_key, msg.props,
                                                    msg.body, self.conn.frame_max))
            else:
                xc.drop_unroutable += 1
                self.counters.drop_unroutable += 1
        if self.confirms is not None:
            # confirmed when the queues' tickets are settled (a persistent message in a
            # durable queue: after the sync that covers it), in publish order
            self.confirms.publish(ticket)
            self.conn.confirms_dirty.add(self)

    # ------------------------------------------------------------------ confirms

    def _confirm_select(self, m: C.Confirm.Select) -> None:
        if self.tx is not None:
            raise errors.PreconditionFailed("cannot switch from tx to confirm mode", 85, 10)
        if self.confirms is None:
            self.confirms = ConfirmTracker(self.vhost.store, self._confirms_settled)
        if not m.nowait:
            self.send_method(M.CONFIRM_SELECT_OK)

    def _confirms_settled(self) -> None:
        """A queue settled a ticket late: write what it released at the end of this read,
        or at the next ``Broker.after_sync()``."""
        self.conn.confirms_dirty.add(self)
        self.conn.broker.waiting_sync.add(self)

    def flush_confirms(self) -> None:
        """Write the confirms that are settled (in order, coalesced with multiple=true) and
        a Tx.CommitOk whose writes are durable; the rest wait for the store's next sync (or
        a late settle)."""
        confirms = self.confirms
        if self.closing or self.conn.channels.get(self.number) is not self:
            if confirms is not None:
                confirms.clear()
            self.commit_ok_gen = None
            return
        if self.commit_ok_gen is not None:
            if self.commit_ok_gen <= self.vhost.store.synced:
                self.commit_ok_gen = None
                self.send_method(M.TX_COMMIT_OK)
            else:
                self.conn.broker.waiting_sync.add(self)
        if confirms is None or not confirms.entries:
            return
        before = len(confirms.entries)
        for seq, multiple, ack in confirms.release():
            self.conn.send(framing.confirm(self.number, seq, multiple, ack))
        self.counters.confirm += before - len(confirms.entries)
        if confirms.entries:
            self.conn.broker.waiting_sync.add(self)
