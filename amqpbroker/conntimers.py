"""A connection's timers (a mixin of ``connection.Connection``): heartbeats sent and
checked, the handshake deadline, and giving up on an unanswered Connection.Close.  Time
is passed in (``handle_timer(now)``); the edge asks ``next_deadline()`` when to call."""
from __future__ import annotations

import logging

from . import framing
from .handshake import AWAIT_OPEN, OPEN

log = logging.getLogger("amqpbroker.connection")


class Timers:
    def next_deadline(self) -> float | None:
        deadlines = []
        if self.state < OPEN:
            deadlines.append(self.handshake_deadline)
        if self.close_deadline is not None:
            deadlines.append(self.close_deadline)
        if self.heartbeats is not None and self.state in (AWAIT_OPEN, OPEN):
            deadlines.append(self.heartbeats.deadline())
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        """Send heartbeats, drop a silent peer, give up on an unanswered close."""
        if (self.close_deadline is not None and now >= self.close_deadline) or (
                self.state < OPEN and now >= self.handshake_deadline):
            self._abort()
            return
        hb = self.heartbeats
        if hb is None or self.state not in (AWAIT_OPEN, OPEN):
            return
        if self._sent:  # anything sent since the last tick counts
            self._sent = False
            self.last_send = now
        if self.blocked:  # we are not reading it: its silence is ours, not the peer's
            self.last_recv = now
        if hb.peer_dead(now, self.last_recv):
            log.info("missed heartbeats from %s, closing the connection", self.peer)
            self._abort()
            return
        if hb.send_due(now, self.last_send):
            self.send(framing.HEARTBEAT)
