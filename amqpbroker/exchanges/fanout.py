"""The fanout exchange: every binding, whatever the routing key."""
from __future__ import annotations

from ..topictrie import DestSet
from .base import Exchange


class FanoutExchange(Exchange):
    type = "fanout"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._dests = DestSet()

    def _added(self, b):
        self._dests.add(b.destination)

    def _removed(self, b):
        self._dests.remove(b.destination)

    def route(self, msg, keys):
        return self._dests.dests.values()  # once, however many keys
