"""Queues: passive objects, no task each.  ``dispatch()`` is a plain call made whenever
supply or demand changes (publish, ack, requeue, consume, qos, a connection draining).

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
from collections import deque
from dataclasses import dataclass

from .. import errors
from ..message import Message, shortstr

log = logging.getLogger("amqpbroker.queues")

READY, UNACKED, GONE = 0, 1, 2


class QueuedMessage:
    """One message's life in one queue.  ``seq`` is its place, kept across requeues."""

    __slots__ = ("seq", "msg", "redelivered", "returns", "expires_at", "priority", "state",
                 "persisted")

    def __init__(self, seq: int, msg: Message, expires_at: float | None, priority: int):
        self.seq = seq
        self.msg = msg
        self.redelivered = False
        self.returns = 0              # times given back (requeue): the delivery-limit count
        self.expires_at = expires_at  # monotonic seconds, or None
        self.priority = priority
        self.state = READY
        self.persisted = False        # in the store: removing it must remove the stored copy

    def __lt__(self, other: "QueuedMessage") -> bool:  # for the expiry heap
        return self.seq < other.seq


@dataclass(frozen=True)
class QueueArgs:
    """The queue arguments we act on, validated as RabbitMQ validates them."""

    queue_type: str = "classic"
    message_ttl: int | None = None    # ms
    expires: int | None = None        # ms
    max_length: int | None = None
    max_length_bytes: int | None = None
    overflow: str = "drop-head"
    dlx: str | None = None
    dlrk: str | None = None
    max_priority: int | None = None
    single_active: bool = False
    delivery_limit: int | None = None

    @classmethod
    def parse(cls, queue: str, vhost: str, args: dict,
              types: dict | None = None) -> "QueueArgs":
        """``types``: the arguments' wire type names (as decoded), for RabbitMQ's texts."""
        types = types or {}

        def type_of(key, v):
            return types.get(key) or ("bool" if isinstance(v, bool) else
                                      "longstr" if isinstance(v, str) else type(v).__name__)

        def bad(key, why):
            return errors.PreconditionFailed(
                f"invalid arg '{key}' for queue '{queue}' in vhost '{vhost}': {why}")

        def integer(key, minimum=0, maximum=None, zero_ok=True):
            v = args.get(key)
            if v is None:
                return None
            if not isinstance(v, int) or isinstance(v, bool):
                raise bad(key, f'"expected integer, got {type_of(key, v)}"')
            if v < minimum:
                raise bad(key, f"{{value_negative,{v}}}" if v < 0 else f"{{value_zero,{v}}}")
            if maximum is not None and v > maximum:
                # RabbitMQ's texts: check_expiry for TTLs, max_value_exceeded for priority
                raise bad(key, f"{{max_value_exceeded,{v}}}" if key == "x-max-priority"
                          else f"{{value_too_large,{v}}}")
            return v

        def string(key):
            v = args.get(key)
            if v is None:
                return None
            if not isinstance(v, str):
                raise bad(key, f"{{unacceptable_type,{type_of(key, v)}}}")
            return v

        qtype = string("x-queue-type") or "classic"
        if qtype not in ("classic", "quorum"):
            if qtype == "stream":
                raise errors.PreconditionFailed(
                    f"queue type 'stream' for queue '{queue}' in vhost '{vhost}' is not "
                    "supported by amqpbroker")
            raise bad("x-queue-type", f'"unsupported queue type \'{qtype}\'"')
        overflow = string("x-overflow") or "drop-head"
        if overflow not in ("drop-head", "reject-publish", "reject-publish-dlx"):
            raise bad("x-overflow", "invalid_overflow")
        dlx, dlrk = string("x-dead-letter-exchange"), string("x-dead-letter-routing-key")
        if dlrk is not None and dlx is None:
            raise bad("x-dead-letter-routing-key", "routing_key_but_no_dlx_defined")
        sac = args.get("x-single-active-consumer", False)
        if not isinstance(sac, bool):
            raise bad("x-single-active-consumer",
                      f"{{unacceptable_type,{type_of('x-single-active-consumer', sac)}}}")
        limit = integer("x-delivery-limit", minimum=-1)
        if limit is None and qtype == "quorum":
            limit = 20  # RabbitMQ 4.x quorum queues' default
        if limit == -1:
            limit = None
        return cls(
            queue_type=qtype,
            message_ttl=integer("x-message-ttl", 0, 315_360_000_000),
            expires=integer("x-expires", 1, 315_360_000_000),
            max_length=integer("x-max-length"),
            max_length_bytes=integer("x-max-length-bytes"),
            overflow=overflow,
            dlx=dlx,
            dlrk=dlrk,
            max_priority=integer("x-max-priority", 0, 255),
            single_active=sac,
            delivery_limit=limit,
        )


class _Ready(deque):
    """Ready messages in seq order (FIFO); a requeued message goes back to its place.
    A deque itself, so that len(), append() and popleft() stay C calls on the hot path."""

    def head(self) -> QueuedMessage | None:
        return self[0] if self else None

    def heads(self):
        return (self[0],) if self else ()

    def requeue(self, qm: QueuedMessage) -> None:
        _insort(self, qm)

    def drain(self) -> list[QueuedMessage]:
        items = list(self)
        self.clear()
        return items


class _PriorityReady:
    """One FIFO per priority level; the highest non-empty level goes first."""

    def __init__(self, max_priority: int):
        self.levels = [deque() for _ in range(max_priority + 1)]
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        for level in reversed(self.levels):
            yield from level

    def __getitem__(self, i: int) -> QueuedMessage:
        return list(self)[i]

    def append(self, qm: QueuedMessage) -> None:
        self.levels[qm.priority].append(qm)
        self.n += 1

    def _top(self) -> deque | None:
        for level in reversed(self.levels):
            if level:
                return level
        return None

    def popleft(self) -> QueuedMessage:
        self.n -= 1
        return self._top().popleft()

    def head(self) -> QueuedMessage | None:
        top = self._top()
        return top[0] if top else None

    def heads(self):
        return tuple(level[0] for level in self.levels if level)

    def requeue(self, qm: QueuedMessage) -> None:
        _insort(self.levels[qm.priority], qm)
        self.n += 1

    def remove(self, qm: QueuedMessage) -> None:
        level = self.levels[qm.priority]
        if level and level[0] is qm:
            level.popleft()
        else:
            level.remove(qm)
        self.n -= 1

    def drain(self) -> list[QueuedMessage]:
        items = list(self)
        self.clear()
        return items

    def clear(self) -> None:
        for level in self.levels:
            level.clear()
        self.n = 0


def _insort(d: deque, qm: QueuedMessage) -> None:
    if not d or qm.seq < d[0].seq:
        d.appendleft(qm)
    elif qm.seq > d[-1].seq:
        d.append(qm)
    else:
        lo, hi = 0, len(d)
        while lo < hi:
            mid = (lo + hi) // 2
            if d[mid].seq < qm.seq:
                lo = mid + 1
            else:
                hi = mid
        d.insert(lo, qm)


class Consumer:
    __slots__ = ("tag", "channel", "queue", "no_ack", "exclusive", "priority", "prefetch",
                 "unacked", "arguments", "tag_ss")

    def __init__(self, tag: str, channel, queue: "Queue", no_ack: bool, exclusive: bool,
                 priority: int, prefetch: int, arguments: dict):
        self.tag = tag
        self.channel = channel    # anything with can_deliver() and deliver(consumer, queue, qm)
        self.queue = queue
        self.no_ack = no_ack
        self.exclusive = exclusive
        self.priority = priority
        self.prefetch = prefetch  # 0 = unlimited
        self.unacked = 0
        self.arguments = arguments
        self.tag_ss = shortstr(tag)  # encoded once for every Basic.Deliver

    def has_capacity(self) -> bool:
        return (self.no_ack or not self.prefetch or self.unacked < self.prefetch) and \
            self.channel.can_deliver()


def _no_dead_letters(queue, msg, reason) -> None:
    pass


class Queue:
    def __init__(self, name: str, durable: bool = False, exclusive_owner=None,
                 auto_delete: bool = False, arguments: dict | None = None,
                 args: QueueArgs | None = None, dead_letter=_no_dead_letters,
                 schedule=None, now: float = 0.0, store=None, vhost: str = "/"):
        self.name = name
        self.durable = durable
        self.exclusive_owner = exclusive_owner   # the owning connection, or None
        self.auto_delete = auto_delete
        self.arguments = arguments or {}
        self.arg_types: dict[str, str] = {}    # wire types of the arguments, for texts
        self.args = args or QueueArgs()
        self.dead_letter = dead_letter           # (queue, msg, reason) -> None
        self.schedule = schedule                 # (queue, deadline) -> None: wake me then
        # persistent messages of a durable queue go to the store (None: nothing durable)
        self.store = store if durable and store is not None and store.durable else None
        self.vhost = vhost
        a = self.args
        self.ready = _PriorityReady(a.max_priority) if a.max_priority is not None \
            else _Ready()
        # what the hot paths may skip, decided once
        limited = a.max_length is not None or a.max_length_bytes is not None
        self._rejects = limited and a.overflow != "drop-head"   # check before enqueueing
        self.needs_after_publish = limited and a.overflow == "drop-head" or \
            a.message_ttl is not None  # (per-message TTLs set _expiry, checked as well)
        self._plain = a.message_ttl is None and a.max_priority is None
        self._single: Consumer | None = None   # the only consumer (or the active one)
        self.ready_bytes = 0
        self.unacked_count = 0
        self.consumers: list[Consumer] = []
        self._groups: list[list[Consumer]] = []   # consumers by priority, highest first
        self._rr: dict[int, int] = {}             # round-robin position per group
        self.had_consumer = False
        self.bindings: dict = {}  # bindings to this queue (an ordered set: binding -> None)
        self.deleted = False
        self._next_seq = 0
        self._expiry: list[tuple[float, QueuedMessage]] = []  # heap of message deadlines
        self.scheduled: float | None = None       # the deadline the vhost will wake us at
        self.last_used = now                      # for x-expires
        self._undead: set[int] = set()  # seqs whose dead-lettering failed: not tried again

    # ------------------------------------------------------------------ supply

    def offer(self, msg: Message, now: float) -> bool:
        """Enqueue a published message; False if refused (``reject-publish`` overflow)."""
        a = self.args
        if self._rejects and (
                (a.max_length is not None and len(self.ready) >= a.max_length) or
                (a.max_length_bytes is not None and
                 self.ready_bytes + len(msg.body) > a.max_length_bytes)):
            if a.overflow == "reject-publish-dlx":  # never enqueued here: nothing to drop
                self._try_dead_letter(msg, "maxlen")
            return False
        self.enqueue(msg, now)
        return True

    def enqueue(self, msg: Message, now: float = 0.0) -> QueuedMessage:
        """Enqueue without the overflow check (offer's second half; tests, recovery)."""
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
        if self.schedule is not None and (self.scheduled is None or
                                          qm.expires_at < self.scheduled):
            self.schedule(self, qm.expires_at)

    def after_publish(self, now: float) -> None:
        """After dispatch: enforce drop-head length limits, expire TTL-0 messages."""
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
        if limit is not None and qm.returns > limit and qm.seq not in self._undead and \
                self._dead_letter(qm, "delivery_limit"):
            return
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
            self._unready(qm)
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

    # ------------------------------------------------------------------ demand

    def add_consumer(self, c: Consumer) -> None:
        self.consumers.append(c)
        self.had_consumer = True
        self._regroup()

    def remove_consumer(self, c: Consumer, now: float = 0.0) -> None:
        try:
            self.consumers.remove(c)
        except ValueError:
            return
        self._regroup()
        if not self.consumers:
            self.touch(now)

    def _regroup(self) -> None:
        by_prio: dict[int, list[Consumer]] = {}
        for c in self.consumers:
            by_prio.setdefault(c.priority, []).append(c)
        self._groups = [by_prio[p] for p in sorted(by_prio, reverse=True)]
        self._rr = {}
        cs = self.consumers
        self._single = cs[0] if cs and (len(cs) == 1 or self.args.single_active) else None

    def _next_consumer(self) -> Consumer | None:
        c = self._single
        if c is not None:  # one consumer, or single-active-consumer
            return c if c.has_capacity() else None
        # highest-priority consumers with capacity, round-robin; lower ones only while all
        # higher ones are blocked
        for gi, group in enumerate(self._groups):
            n = len(group)
            start = self._rr.get(gi, 0)
            for i in range(n):
                c = group[(start + i) % n]
                if c.has_capacity():
                    self._rr[gi] = (start + i + 1) % n
                    return c
        return None

    def dispatch(self, now: float) -> None:
        ready = self.ready
        while ready and self._groups:
            c = self._next_consumer()
            if c is None:
                return
            qm = self.take(now)
            if qm is None:
                return
            c.channel.deliver(c, self, qm)
