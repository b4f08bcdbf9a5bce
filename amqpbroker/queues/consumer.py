"""Consumer records and the choice of the next consumer: priorities (``x-priority``),
round-robin within a priority, prefetch, single active consumer."""
from __future__ import annotations

from ..message import shortstr


class Consumer:
    """A consumer as the channel declares it.  The channel reads ``tag``, ``tag_ss``,
    ``no_ack``, ``queue`` and may set ``prefetch`` (Basic.Qos) and ``stopped`` (a poison
    pill was delivered to it: no further deliveries); ``unacked`` is the queue's."""

    __slots__ = ("tag", "channel", "queue", "no_ack", "exclusive", "priority", "prefetch",
                 "unacked", "arguments", "tag_ss", "stopped")

    def __init__(self, tag: str, channel, queue, no_ack: bool, exclusive: bool,
                 priority: int, prefetch: int, arguments: dict):
        self.tag = tag
        self.channel = channel    # the DeliverySink: can_deliver(), deliver(), cancelled()
        self.queue = queue
        self.no_ack = no_ack
        self.exclusive = exclusive
        self.priority = priority
        self.prefetch = prefetch  # 0 = unlimited
        self.unacked = 0
        self.arguments = arguments
        self.tag_ss = shortstr(tag)  # encoded once for every Basic.Deliver
        self.stopped = False

    def has_capacity(self) -> bool:
        return (self.no_ack or not self.prefetch or self.unacked < self.prefetch) and \
            not self.stopped and self.channel.can_deliver()


class Consumers:
    """One queue's consumers, grouped by priority (highest first)."""

    __slots__ = ("all", "groups", "_rr", "single", "single_active")

    def __init__(self, single_active: bool):
        self.all: list[Consumer] = []
        self.groups: list[list[Consumer]] = []  # empty: nobody to deliver to
        self._rr: dict[int, int] = {}            # round-robin position per group
        self.single: Consumer | None = None     # the only consumer (or the active one)
        self.single_active = single_active

    def __len__(self) -> int:
        return len(self.all)

    def add(self, c: Consumer) -> None:
        self.all.append(c)
        self._regroup()

    def remove(self, c: Consumer) -> bool:
        try:
            self.all.remove(c)
        except ValueError:
            return False
        self._regroup()
        return True

    def _regroup(self) -> None:
        by_prio: dict[int, list[Consumer]] = {}
        for c in self.all:
            by_prio.setdefault(c.priority, []).append(c)
        self.groups = [by_prio[p] for p in sorted(by_prio, reverse=True)]
        self._rr = {}
        cs = self.all
        self.single = cs[0] if cs and (len(cs) == 1 or self.single_active) else None

    def next(self) -> Consumer | None:
        c = self.single
        if c is not None:  # one consumer, or single-active-consumer
            return c if c.has_capacity() else None
        # highest-priority consumers with capacity, round-robin; lower ones only while all
        # higher ones are blocked
        for gi, group in enumerate(self.groups):
            n = len(group)
            start = self._rr.get(gi, 0)
            for i in range(n):
                c = group[(start + i) % n]
                if c.has_capacity():
                    self._rr[gi] = (start + i + 1) % n
                    return c
        return None
