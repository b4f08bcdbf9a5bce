"""Direct reply-to (RabbitMQ's amq.rabbitmq.reply-to): a requester's no-ack pseudo-consumer
and the replies published to it, delivered straight to that channel, no queue in between.
A mixin of ``channel.Channel``."""
from __future__ import annotations

import base64
import os

from pamqp import commands as C

from . import errors, framing
from . import methods as M
from .delivery import _ctag
from .message import F_REPLY_TO, Message, join_properties, shortstr, split_properties
from .vhost import REPLY_TO

REPLY_TO_PREFIX = REPLY_TO + "."


class DirectReplyTo:
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
        c = ch.counters
        tag = c.tags = c.tags + 1
        c.replies += 1
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

