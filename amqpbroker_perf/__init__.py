"""``amqpbroker perf``, the load tool: a client of any AMQP 0-9-1 broker, shipped in the
same distribution as the broker but outside its package (it imports nothing of
amqpbroker; ``amqpbroker/__main__.py`` imports it for the ``perf`` subcommand).

``client`` is its AMQP client (frame walking on the hot path), ``tool`` the run: producers,
consumers, the reconciliation, the command line (``main``).
"""
from __future__ import annotations

from .tool import main, run

__all__ = ["main", "run"]
