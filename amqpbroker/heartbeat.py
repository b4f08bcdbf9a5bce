"""Heartbeats on RabbitMQ's rule (rabbit_common's ``rabbit_heartbeat.erl``), time passed in.

RabbitMQ starts two monitors when ``tune-ok`` arrives, each on a fixed time grid:
- the sender looks every ``timeout / 2``: if nothing was sent since its previous look (and
  always at its first look) it sends a heartbeat frame; heartbeats do not count as sent, so
  an idle connection gets one every half timeout;
- the receiver looks every ``timeout``: at the second look in a row without any inbound
  byte the peer is declared dead, so a silent peer is dropped between 2 and 3 timeouts
  after its last byte (about 6 s at heartbeat 2 s, measured against RabbitMQ 3.10).

``Monitor`` holds only the grids; the connection keeps the times of its last byte in and
out (``last_recv``, ``last_send``) and asks.
"""
from __future__ import annotations

import math


class Monitor:
    __slots__ = ("timeout", "start", "_send_n", "_check_n")

    def __init__(self, timeout: int, now: float):
        self.timeout = float(timeout)
        self.start = now
        self._send_n = 1     # the next sender look is at start + n * timeout / 2
        self._check_n = 1    # the next receiver look is at start + n * timeout

    def deadline(self) -> float:
        half = self.timeout / 2
        return min(self.start + self._send_n * half, self.start + self._check_n * self.timeout)

    def _look(self, now: float, interval: float, n: int) -> tuple[int, float | None]:
        """(next look number, time of the latest look due by ``now`` or None)."""
        due = math.floor((now - self.start) / interval)
        if due < n:
            return n, None
        return due + 1, self.start + due * interval

    def send_due(self, now: float, last_send: float) -> bool:
        """A sender look is due and nothing was sent in the half timeout before it."""
        half = self.timeout / 2
        first = self._send_n == 1
        self._send_n, look = self._look(now, half, self._send_n)
        if look is None:
            return False
        return first or last_send <= look - half

    def peer_dead(self, now: float, last_recv: float) -> bool:
        """A receiver look is due and neither it nor the previous one saw inbound bytes."""
        self._check_n, look = self._look(now, self.timeout, self._check_n)
        return look is not None and last_recv < look - 2 * self.timeout
