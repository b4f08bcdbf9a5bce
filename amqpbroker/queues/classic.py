"""The classic queue, the first QueueType (base.py): messages in memory, persistent ones
of a durable queue also in the store.  Passive, no task: ``dispatch()`` is a plain call
made whenever supply or demand changes (publish, ack, requeue, consume, qos, a connection
draining).

A queue knows its rules (TTL, length limits, priorities, single active consumer, delivery
limit) but not where dead letters go: it hands them to ``dead_letter(queue, msg, reason)``,
which the vhost provides.  Time is passed in (``now``, monotonic seconds), never read here.

Dead-lettering is one unit: the copies enter their targets first, and only then does the
message leave this queue (memory and store; the store commits both halves in one
transaction).  When ``dead_letter`` raises, the message stays here, the failure is logged,
and this run does not try that message again (it is delivered as any other message; after
a restart it is tried again).
"""
from __future__ import annotations

import heapq
import logging

from .. import errors
from ..message import Message
from ..metrics import QueueCounters
from .args import QueueArgs
from .base import ACK, REFUSED, REQUEUE, SAFE, QueueStats
from .consumer import Consumer, Consumers
from .ready import GONE, READY, UNACKED, QueuedMessage, ready_list

log = logging.getLogger("amqpbroker.queues")


def _no_dead_letters(queue, msg, reason) -> None:
    pass


class Queue:
    """The classic queue: a QueueType (base.py), made by the registry for "classic" and,
    until replicated queues exist, "quorum"."""

    def __init__(self, name: str, durable: bool = False, exclusive_owner=None,
                 auto_delete: bool = False, arguments: dict | None = None,
                 args: QueueArgs | None = None, dead_letter=_no_dead_letters,
                 schedule=None, now: float = 0.0, store=None, vhost: str = "/",
                 arg_types: dict | None = None):
        self.name = name
        self.durable = durable
        self.exclusive_owner = exclusive_owner   # the owning connection, or None
        self.auto_delete = auto_delete
        self.arguments = arguments or {}
        self.arg_types: dict[str, str] = arg_types or {}  # the arguments' wire types
        self.args = args or QueueArgs()
        self.dead_letter = dead_letter           # (queue, msg, reason) -> None
        self.schedule = schedule                 # (queue, deadline) -> None: wake me then
        # persistent messages of a durable queue go to the store (None: nothing durable)
        self.store = store if durable and store is not None and store.durable else None
        self.vhost = vhost
        self.ready = ready_list(self.args.max_priority)
        self._derive()
        self.ready_bytes = 0
        self.unacked_count = 0
        self.consumers = Consumers(self.args.single_active)
        self.bindings: dict = {}  # bindings to this queue (an ordered set: binding -> None)
        self.deleted = False
        self._next_seq = 0
        self._expiry: list[tuple[float, QueuedMessage]] = []  # heap of message deadlines
        self.last_used = now                      # for x-expires
        self._undead: set[int] = set()  # seqs whose dead-lettering failed: not tried again
        self.counters = QueueCounters()  # counted by the vhost and the channels
        self.policy = self.operator_policy = None  # what applies (policies.py)

    def _derive(self) -> None:
        """What the hot paths may skip, decided once per set of arguments."""
        a = self.args
        limited = a.max_length is not None or a.max_length_bytes is not None
        self._rejects = limited and a.overflow != "drop-head"   # check before enqueueing
        self.needs_after_publish = limited and a.overflow == "drop-head" or \
            a.message_ttl is not None  # (per-message TTLs set _expiry, checked as well)
        self._plain = a.message_ttl is None and a.max_priority is None

    def reconfigure(self, args: QueueArgs, now: float) -> None:
        """A policy changed the arguments the queue acts on (policies.py; never its type,
        priorities or single active consumer, which no policy sets).  A lower length
        limit drops heads at once (drop-head); a TTL applies to messages enqueued from
        now; an x-expires restarts from the last use."""
        self.args = args
        self._derive()
        self.after_publish(now)
        if args.expires is not None and self.schedule is not None:
            self.schedule(self, self.last_used + args.expires / 1000)

    # ------------------------------------------------------------------ supply

    def accept(self, msg: Message, now: float):
        """Enqueue a routed message: its confirm ticket (SAFE, or the store generation
        whose sync covers it), or REFUSED (``reject-publish`` overflow)."""
        a = self.args
        if self._rejects and (
                (a.max_length is not None and len(self.ready) >= a.max_length) or
                (a.max_length_bytes is not None and
                 self.ready_bytes + len(msg.body) > a.max_length_bytes)):
            if a.overflow == "reject-publish-dlx":  # never enqueued here: nothing to drop
                self._try_dead_letter(msg, "maxlen")
            return REFUSED
        qm = self.enqueue(msg, now)
        return self.store.gen if qm.persisted else SAFE

    def enqueue(self, msg: Message, now: float = 0.0) -> QueuedMessage:
        """Enqueue without the overflow check (accept's second half; tests, recovery)."""
        if self._plain and not msg.flags & 0x0100:  # no TTL, no priority: the hot path
            self._next_seq += 1
            qm = QueuedMessage(self._next_seq, msg, None, 0)
            # the store first: if it raises, the queue is as it was (a dead letter's
            # source then keeps its copy)
            if self.store is not None and msg.persistent:
                self.store.append(self.vhost, self.name, qm.seq, msg, None)
                qm.persisted = True
            self.ready.append(qm)
            self.ready_bytes += len(msg.body)
            return qm
        a = self.args
        ttl = a.message_ttl
        if msg.flags & 0x0100:  # per-message expiration: the smaller TTL wins
            per_msg = msg.expiration_ms()
            ttl = per_msg if ttl is None else min(ttl, per_msg)
        priority = 0
        if a.max_priority is not None:
            priority = min(msg.priority, a.max_priority)
        self._next_seq += 1
        qm = QueuedMessage(self._next_seq, msg, None if ttl is None else now + ttl / 1000,
                           priority)
        if self.store is not None and msg.persistent:
            self.store.append(self.vhost, self.name, qm.seq, msg, ttl)
            qm.persisted = True
        self.ready.append(qm)
        self.ready_bytes += len(msg.body)
        if qm.expires_at is not None:
            self._watch_expiry(qm)
        return qm

    def restore(self, seq: int, msg: Message, ttl: int | None, now: float) -> None:
        """A message recovered from the store, in its place, marked redelivered."""
        priority = min(msg.priority, self.args.max_priority) \
            if self.args.max_priority is not None else 0
        qm = QueuedMessage(seq, msg, None if ttl is None else now + ttl / 1000, priority)
        qm.redelivered = True
        qm.persisted = True
        self._next_seq = max(self._next_seq, seq)
        self.ready.requeue(qm)
        self.ready_bytes += len(msg.body)
        if qm.expires_at is not None:
            self._watch_expiry(qm)

    def _watch_expiry(self, qm: QueuedMessage) -> None:
        heapq.heappush(self._expiry, (qm.expires_at, qm))
        if self.schedule is not None:  # (the vhost ignores a deadline later than its own)
            self.schedule(self, qm.expires_at)

    def after_publish(self, now: float) -> None:
        """After dispatch: enforce drop-head length limits, expire TTL-0 messages."""
        if not self.needs_after_publish and not self._expiry:
            return
        a = self.args
        if a.overflow == "drop-head" and (a.max_length is not None or
                                          a.max_length_bytes is not None):
            while len(self.ready) and (
                    (a.max_length is not None and len(self.ready) > a.max_length) or
                    (a.max_length_bytes is not None and self.ready_bytes > a.max_length_bytes)):
                if self.ready.head().seq in self._undead:
                    break  # it failed once: it stays, the queue over its limit until consumed
                qm = self.ready.popleft()
                self._unready(qm)
                if not self._dead_letter(qm, "maxlen"):
                    self._back(qm)
                    break
        if self._expiry and self._expiry[0][0] <= now:
            self.expire(now)

    def _unready(self, qm: QueuedMessage) -> None:
        self.ready_bytes -= len(qm.msg.body)

    def _drop(self, qm: QueuedMessage) -> None:
        """The message leaves this queue for good (acked, dropped, dead-lettered)."""
        qm.state = GONE
        if qm.persisted and self.store is not None:
            self.store.remove(self.vhost, self.name, qm.seq)

    def _dead_letter(self, qm: QueuedMessage, reason: str) -> bool:
        """Dead-letter a message already out of ready/unacked: the copies first, then the
        drop here.  False when it failed (logged): the caller puts the message back."""
        if not self._try_dead_letter(qm.msg, reason):
            self._undead.add(qm.seq)
            return False
        self._drop(qm)
        return True

    def _try_dead_letter(self, msg: Message, reason: str) -> bool:
        try:
            self.dead_letter(self, msg, reason)
        except Exception:  # a bug, or a target that cannot take it: never the caller's
            log.exception("dead-lettering a message (%s) from queue '%s' in vhost '%s' "
                          "failed; it stays in the queue", reason, self.name, self.vhost)
            return False
        return True

    def _back(self, qm: QueuedMessage) -> None:
        """A message taken out for dead-lettering goes back to its place."""
        qm.state = READY
        self.ready_bytes += len(qm.msg.body)
        self.ready.requeue(qm)
        if qm.expires_at is not None:
            self._watch_expiry(qm)

    def requeue(self, qm: QueuedMessage) -> None:
        """Back to its original position, marked redelivered; at the delivery limit it is
        dead-lettered (``delivery_limit``) instead: the poison-message guard."""
        self.unacked_count -= 1
        qm.returns += 1
        limit = self.args.delivery_limit
        if limit is not None:
            if qm.returns > limit and qm.seq not in self._undead and \
                    self._dead_letter(qm, "delivery_limit"):
                return
            qm.delivery_count = qm.returns
        qm.redelivered = True
        self._back(qm)

    def settled(self, qm: QueuedMessage) -> None:
        """An unacked message was acked (or dropped) for good."""
        self.unacked_count -= 1
        self._drop(qm)

    def reject(self, qm: QueuedMessage) -> None:
        """Rejected without requeue: gone, dead-lettered when a DLX is set (a message
        whose dead-lettering failed is requeued instead)."""
        self.unacked_count -= 1
        if qm.seq in self._undead or not self._dead_letter(qm, "rejected"):
            qm.redelivered = True
            self._back(qm)

    def take(self, now: float) -> QueuedMessage | None:
        """Pop the next live message for delivery (it becomes unacked); expired messages
        met on the way are dead-lettered, never delivered."""
        ready = self.ready
        while len(ready):
            qm = ready.popleft()
            self.ready_bytes -= len(qm.msg.body)  # (_unready, inlined: once per delivery)
            # expired strictly before now: a TTL-0 message can still go to a consumer
            # waiting at the instant it arrives (RabbitMQ: x-message-ttl=0)
            if qm.expires_at is not None and qm.expires_at < now:
                if self._dead_letter(qm, "expired"):
                    continue
                qm.expires_at = None  # it stays, without its TTL in this run: delivered
            qm.state = UNACKED
            self.unacked_count += 1
            return qm
        return None

    def expire(self, now: float) -> None:
        """Dead-letter every ready message whose TTL has passed, wherever it is."""
        heap = self._expiry
        while heap and heap[0][0] <= now:
            deadline, qm = heapq.heappop(heap)
            if qm.state != READY or qm.expires_at != deadline:
                continue  # delivered, settled, or a stale entry
            self.ready.remove(qm)
            self._unready(qm)
            if not self._dead_letter(qm, "expired"):
                qm.expires_at = None  # it stays, without its TTL in this run
                self._back(qm)

    def next_deadline(self) -> float | None:
        """When the vhost should next call ``expire`` / check ``x-expires``."""
        heap = self._expiry
        while heap and heap[0][1].state != READY:
            heapq.heappop(heap)
        deadlines = []
        if heap:
            deadlines.append(heap[0][0])
        if self.args.expires is not None and not self.consumers:
            deadlines.append(self.last_used + self.args.expires / 1000)
        return min(deadlines) if deadlines else None

    def idle_expired(self, now: float) -> bool:
        return self.args.expires is not None and not self.consumers and \
            now >= self.last_used + self.args.expires / 1000

    def on_timer(self, now: float) -> bool:
        """The vhost's timer for this queue: True when the queue itself expired
        (x-expires; the vhost deletes it, never dead-lettering), else expire messages."""
        if self.idle_expired(now):
            return True
        self.expire(now)
        return False

    def touch(self, now: float) -> None:
        """Used (consume, get, redeclare): restart the x-expires idle clock."""
        self.last_used = now
        if self.args.expires is not None and self.schedule is not None:
            self.schedule(self, now + self.args.expires / 1000)

    def purge(self) -> int:
        items = self.ready.drain()
        for qm in items:
            self._drop(qm)
        self.ready_bytes = 0
        self._expiry = []
        self._undead.clear()
        return len(items)

    @property
    def message_count(self) -> int:
        return len(self.ready)

    @property
    def consumer_count(self) -> int:
        return len(self.consumers)

    def stats(self) -> QueueStats:
        return QueueStats(len(self.ready), self.ready_bytes, self.unacked_count,
                          len(self.consumers))

    def delete(self) -> int:
        """The vhost has removed the stored queue (and its messages with it): drop the rest
        here, and tell each consumer's sink it is cancelled."""
        self.deleted = True
        self.store = None
        n = self.message_count
        self.purge()
        consumers = list(self.consumers.all)
        for c in consumers:  # their channels forget them, and may tell the client
            self.consumers.remove(c)
            c.channel.cancelled(c)
        return n

    # ------------------------------------------------------------------ demand

    def add_consumer(self, c: Consumer, now: float = 0.0) -> None:
        """A new consumer (not yet served: the caller dispatches).  An exclusive consumer
        wants the queue alone; nobody joins one."""
        cs = self.consumers
        if cs.all and (c.exclusive or any(o.exclusive for o in cs.all)):
            raise errors.AccessRefused(
                f"queue '{self.name}' in vhost '{self.vhost}' in exclusive use")
        cs.add(c)
        self.touch(now)

    def remove_consumer(self, c: Consumer, now: float = 0.0) -> bool:
        """True when it was the last consumer of an auto-delete queue: delete it."""
        if not self.consumers.remove(c):
            return False
        if self.consumers.all:
            return False
        self.touch(now)
        return self.auto_delete and not self.deleted

    def dispatch(self, now: float) -> None:
        ready = self.ready
        cs = self.consumers
        while ready and cs.groups:
            c = cs.next()
            if c is None:
                return
            qm = self.take(now)
            if qm is None:
                return
            if c.no_ack:  # settled as it goes out: the sink keeps no record of it
                self.unacked_count -= 1
                self._drop(qm)
            else:
                c.unacked += 1
                qm.consumer = c
            c.channel.deliver(c, self, qm)

    def get(self, now: float, no_ack: bool):
        """Basic.Get: (the message, how many stay ready), or None."""
        self.touch(now)
        qm = self.take(now)
        if qm is None:
            return None
        if no_ack:
            self.settled(qm)
        return qm, len(self.ready)

    def settle(self, deliveries, outcome: int) -> None:
        """Ack, requeue or reject (``base.ACK``, ``REQUEUE``, ``REJECT``) deliveries of this
        queue; on a deleted queue only the consumers' prefetch is given back."""
        for qm in deliveries:
            c = qm.consumer
            if c is not None:
                c.unacked -= 1
                qm.consumer = None
        if self.deleted:
            return
        act = self.settled if outcome == ACK else \
            self.requeue if outcome == REQUEUE else self.reject
        for qm in deliveries:
            act(qm)
