"""A vhost's queue wake-ups (message TTL, x-expires) on the broker's scheduler: one call
per queue, at its earliest deadline; an earlier deadline replaces the call, a later one
waits for the queue's own next_deadline() when the call comes."""
from __future__ import annotations

import logging

from .queues import QueueType
from .scheduler import Handle

TIMER_RETRY = 1.0  # seconds: a queue whose timer step failed is tried again this much later

# the vhost's work, logged under its name as before the move
log = logging.getLogger("amqpbroker.vhost")


class QueueTimers:
    """The queues' ``schedule(queue, deadline)`` callback and its bookkeeping.  It reads
    the vhost's ``scheduler`` and ``clock`` when it needs them (tests replace the clock)
    and expires a queue with the vhost's ``delete_queue``."""

    def __init__(self, vhost):
        self.vhost = vhost
        # each queue's call in the scheduler, and the deadline it is for
        self._queue_timers: dict[QueueType, tuple[float, Handle]] = {}

    def cancel(self, queue: QueueType) -> None:
        """A deleted queue's call goes with it."""
        timer = self._queue_timers.pop(queue, None)
        if timer is not None:
            self.vhost.scheduler.cancel(timer[1])

    def schedule(self, queue: QueueType, deadline: float) -> None:
        old = self._queue_timers.get(queue)
        if old is not None:
            if old[0] <= deadline:
                return
            self.vhost.scheduler.cancel(old[1])
        self._queue_timers[queue] = (
            deadline, self.vhost.scheduler.call_at(deadline, self._queue_timer, queue))

    def _queue_timer(self, q: QueueType) -> None:
        """Expire messages (TTL) and the queue itself (x-expires) once their time has
        come.  A queue whose step fails is logged and tried again TIMER_RETRY later."""
        self._queue_timers.pop(q, None)
        if q.deleted:
            return
        vhost = self.vhost
        now = vhost.scheduler.now
        if now is None:  # (called by hand, not by run_due)
            now = vhost.clock()
        try:
            if q.on_timer(now):
                vhost.delete_queue(q)  # queue expiry never dead-letters
                return
            nxt = q.next_deadline()
        except Exception:
            log.exception("the timer of queue '%s' %s failed", q.name, vhost._in())
            if q.deleted:
                return
            nxt = now + TIMER_RETRY
        if nxt is not None:
            self.schedule(q, max(nxt, now))
