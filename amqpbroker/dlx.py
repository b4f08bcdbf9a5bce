"""Where dead letters go: a message that died in a queue, republished through the vhost's
exchanges to the queue's dead-letter exchange.  The message side (x-death, the cycle rule)
is queues/deadletter.py's; the queue decides when a message dies and calls its vhost's
``dead_letter``, which comes here."""
from __future__ import annotations

import logging

from .exchanges.routing import route
from .message import Message
from .queues import QueueType
from .queues.deadletter import is_cycle, with_death

# the vhost's work, logged under its name as before the move
log = logging.getLogger("amqpbroker.vhost")


def dead_letter(vhost, queue: QueueType, msg: Message, reason: str) -> None:
    """Republish a message that died in ``queue`` to its dead-letter exchange, with the
    x-death history RabbitMQ writes.  Queue deletion and expiry never come here.

    Returns once the dead letter is in every target queue (or dropped, as RabbitMQ, when
    there is no DLX or no target); the caller then drops its copy, in the same store
    batch.  Raises when it could not be placed: the caller keeps the message (a target
    that took its copy before the failure keeps it: at least once)."""
    dlx = queue.args.dlx
    if dlx is None:
        return
    exchange = vhost.exchanges.get(dlx) if dlx else vhost.default_exchange
    if exchange is None:
        return  # a missing DLX drops the message, as RabbitMQ
    new, history = with_death(queue.name, queue.args, msg, reason)
    keys = [queue.args.dlrk] if queue.args.dlrk is not None else msg.routing_keys
    targets = route(vhost, exchange, new, keys).queues
    if reason != "rejected":
        targets = [q for q in targets if not is_cycle(q.name, history)]
    now = vhost.clock()
    accepted = []
    try:
        for q in targets:
            if q.accept(new, now):  # a ticket (truthy), not REFUSED
                accepted.append(q)
    finally:
        # the copies are stored: a failure in delivering them no longer concerns the
        # source, so it is logged here, never raised to it
        for q in accepted:
            try:
                q.dispatch(now)
                q.after_publish(now)
            except Exception:
                log.exception("delivering a dead letter in queue '%s' %s failed",
                              q.name, vhost._in())
