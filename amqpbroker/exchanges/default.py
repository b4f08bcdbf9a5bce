"""The default exchange (""): every queue bound by its own name, implicitly.  One per
vhost, not in ``vhost.exchanges``; it takes no declare, bind or delete (the vhost refuses
them with 403), so only routing concerns it."""
from __future__ import annotations

from .base import Exchange


class DefaultExchange(Exchange):
    type = "direct"

    def __init__(self):
        super().__init__("", durable=True)
        self._queues: dict = {}

    def create(self, vhost) -> None:
        self._queues = vhost.queues  # the same dict: a new queue is routable at once

    def route(self, msg, keys):
        queues = self._queues
        if len(keys) == 1:
            q = queues.get(keys[0])
            return (q,) if q is not None else ()
        found = {}
        for k in keys:
            q = queues.get(k)
            if q is not None:
                found[id(q)] = q
        return found.values()
