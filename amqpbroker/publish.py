"""Publishing: the checks on a publish's exchange, routing, ``mandatory`` returns and the
publisher confirms that follow.  A mixin of ``channel.Channel``."""
from __future__ import annotations

from pamqp import commands as C

from . import errors, framing, wirecheck
from . import methods as M
from .framing import Publish
from .message import F_HEADERS, F_REPLY_TO, Message, sender_selected
from .replyto import REPLY_TO_PREFIX
from .vhost import _DEFAULT_EXCHANGE, REPLY_TO


class Publishing:
    # ------------------------------------------------------------------ publish

    def _publish_target(self, name: str):
        """The exchange a publish goes to, after the checks RabbitMQ makes: write
        permission (before the lookup), existence, not internal.  Cached per channel
        (permissions do not change during a connection; a deleted exchange is a miss)."""
        vhost = self.vhost
        self.check("write", "exchange", name or "amq.default")
        ex = vhost.exchanges.get(name) if name else _DEFAULT_EXCHANGE
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
        if ex is _DEFAULT_EXCHANGE and msg.routing_key.startswith(REPLY_TO_PREFIX):
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

    # ------------------------------------------------------------------ confirms

    def _confirm_select(self, m: C.Confirm.Select) -> None:
        if self.tx is not None:
            raise errors.PreconditionFailed("cannot switch from tx to confirm mode", 85, 10)
        self.confirm = True
        if not m.nowait:
            self.send_method(M.CONFIRM_SELECT_OK)

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

