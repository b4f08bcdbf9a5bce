"""The queue-type seam (RabbitMQ's rabbit_queue_type): what the vhost and the channel may
ask of a queue, whatever keeps its messages.  Nothing outside ``queues/`` touches more
than this.

A queue is passive: no task of its own.  The vhost calls ``accept`` for a routed message,
then ``dispatch`` and ``after_publish``; the channel calls ``settle``, ``get``, consumer
changes and ``dispatch`` when demand returns.  Deliveries go out through the consumer's
``DeliverySink`` (the channel).  Time is passed in (``now``, monotonic seconds).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:
    from ..metrics import QueueCounters
    from .args import QueueArgs

# settle() outcomes: Basic.Ack; Basic.Nack/Reject with requeue; without requeue
ACK, REQUEUE, REJECT = 0, 1, 2


# accept() returns a confirm ticket or REFUSED, as ``confirms`` defines them: SAFE (nothing
# to make durable), an int (the classic queue: the store generation whose sync covers the
# message), a ``confirms.Pending`` the queue settles later (an asynchronous write), or
# REFUSED (reject-publish overflow: the publisher gets a nack).  Accepted tickets are truthy.
from ..confirms import REFUSED, SAFE, Pending  # noqa: E402  (re-exported for queue types)


@dataclass(frozen=True)
class QueueStats:
    messages: int          # ready
    message_bytes: int     # bodies of the ready messages
    unacked: int           # delivered, not yet settled
    consumers: int


class Delivery(Protocol):
    """One delivered message as the sink sees it (the classic queue's QueuedMessage)."""

    msg: object               # message.Message
    redelivered: bool
    delivery_count: int       # > 0: an x-delivery-count header to add (delivery limit)


@runtime_checkable
class DeliverySink(Protocol):
    """What a queue delivers to: the channel.  ``deliver`` records the delivery (unless the
    consumer is no-ack: the queue has settled it already) and writes Basic.Deliver;
    ``cancelled`` tells the sink its consumer is gone with its queue (deleted)."""

    def can_deliver(self) -> bool: ...

    def deliver(self, consumer, queue: "QueueType", delivery: Delivery) -> None: ...

    def cancelled(self, consumer) -> None: ...


@runtime_checkable
class QueueType(Protocol):
    # the declaration, read by the vhost and the channel (never written outside queues/)
    name: str
    vhost: str
    durable: bool
    exclusive_owner: object    # the owning connection, or None
    auto_delete: bool
    arguments: dict
    arg_types: dict            # wire types of the arguments, for equivalence texts
    args: "QueueArgs"          # the arguments as parsed (args.py): the vhost reads the DLX
    bindings: dict             # bindings to this queue (the vhost's routing keeps it)
    deleted: bool
    # plain message counters (metrics.QueueCounters): the vhost and the channels count,
    # the type only holds them
    counters: "QueueCounters"

    # ---- supply
    def accept(self, msg, now: float):
        """Take a routed message: a confirm ticket (SAFE, int, Pending), or REFUSED."""

    def after_publish(self, now: float) -> None:
        """After the accepted message was dispatched: length limits, TTL 0."""

    def restore(self, seq: int, msg, ttl: int | None, now: float) -> None:
        """A message recovered from the store, in its place, redelivered."""

    # ---- demand
    def add_consumer(self, consumer, now: float) -> None:
        """Raises AccessRefused when an exclusive consumer is in the way."""

    def remove_consumer(self, consumer, now: float) -> bool:
        """True when that was the last consumer of an auto-delete queue (delete it)."""

    def dispatch(self, now: float) -> None: ...

    def get(self, now: float, no_ack: bool) -> "tuple[Delivery, int] | None":
        """Basic.Get: the next message and how many stay ready, or None when empty."""

    def settle(self, deliveries: Sequence[Delivery], outcome: int) -> None:
        """ACK, REQUEUE or REJECT a batch of this queue's deliveries (a deleted queue
        only releases the consumers' prefetch)."""

    # ---- management
    @property
    def message_count(self) -> int: ...

    @property
    def consumer_count(self) -> int: ...

    def stats(self) -> QueueStats: ...

    def touch(self, now: float) -> None:
        """Used (declare, get, consume): restart the x-expires clock."""

    def purge(self) -> int: ...

    def reconfigure(self, args, now: float) -> None:
        """A policy changed the ``QueueArgs`` the queue acts on (policies.py)."""

    def delete(self) -> int:
        """Gone: messages dropped (the vhost removed the stored queue), consumers told
        through their sink's ``cancelled``; returns the ready count it had."""

    # ---- time
    def next_deadline(self) -> float | None: ...

    def on_timer(self, now: float) -> bool:
        """Expire what is due; True when the queue itself expired (x-expires)."""


@dataclass(frozen=True)
class QueueKind:
    """A registry entry: an ``x-queue-type`` value and how to make such a queue.

    ``factory(name, durable, exclusive_owner, auto_delete, arguments, args, dead_letter,
    schedule, now, store, vhost, arg_types) -> QueueType``: ``dead_letter(queue, msg,
    reason)`` republishes a message that died (the vhost's), ``schedule(queue, deadline)``
    asks for an ``on_timer`` call then, ``store`` keeps the persistent messages of a durable
    queue; ``check_declare(name, durable, exclusive,
    where)`` raises PreconditionFailed for declarations the type refuses."""

    name: str
    factory: Callable[..., QueueType]
    check_declare: Callable[[str, bool, bool, str], None] = lambda *a: None
