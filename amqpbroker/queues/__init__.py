"""Queue types (RabbitMQ's rabbit_queue_type): the protocol in base.py, one module per
type, and the registry keyed by ``x-queue-type`` that the vhost declares queues through.

Registered: "classic" (classic.py) and "quorum", accepted as a durable classic queue (with
quorum queues' declare rules and default delivery limit) until replicated queues exist.
Anything else is refused at declare, as today (args.py's texts)."""
from __future__ import annotations

from .. import errors
from .args import QUEUE_ARGS, TYPE_NAMES, QueueArgs
from .base import (ACK, REFUSED, REJECT, REQUEUE, SAFE, DeliverySink, Pending, QueueKind,
                   QueueStats, QueueType)
from .classic import Queue
from .consumer import Consumer
from .dedup import DedupQueue
from .ready import GONE, READY, UNACKED, QueuedMessage

__all__ = ["ACK", "REQUEUE", "REJECT", "REFUSED", "SAFE", "Pending", "QUEUE_ARGS", "QueueArgs",
           "QueueType",
           "DeliverySink", "QueueKind", "QueueStats", "Consumer", "Queue", "QueuedMessage",
           "READY", "UNACKED", "GONE", "KINDS", "register", "kind_of"]

KINDS: dict[str, QueueKind] = {}


def register(kind: QueueKind) -> None:
    KINDS[kind.name] = kind
    TYPE_NAMES.add(kind.name)


def kind_of(args: QueueArgs) -> QueueKind:
    """The registry entry for parsed arguments (parse() refused unknown types already)."""
    return KINDS[args.queue_type]


def _quorum_declare(name: str, durable: bool, exclusive: bool, where: str) -> None:
    if not name:
        raise errors.PreconditionFailed("Cannot declare a server-named queue for type quorum")
    if not durable:
        raise errors.PreconditionFailed(
            f"invalid property 'non-durable' for queue '{name}' {where}")
    if exclusive:
        raise errors.PreconditionFailed(
            f"invalid property 'exclusive-owner' for queue '{name}' {where}")


def _classic(name, durable, owner, auto_delete, arguments, args, *rest):
    """A classic queue, deduplicating (dedup.py) with ``x-message-deduplication``."""
    cls = DedupQueue if args.deduplicate else Queue
    return cls(name, durable, owner, auto_delete, arguments, args, *rest)


register(QueueKind("classic", _classic))
register(QueueKind("quorum", _classic, _quorum_declare))
