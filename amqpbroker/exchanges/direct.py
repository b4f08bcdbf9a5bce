"""The direct exchange: a binding key equal to the routing key."""
from __future__ import annotations

from ..topictrie import DestSet
from .base import Exchange


class DirectExchange(Exchange):
    type = "direct"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._index: dict[str, DestSet] = {}

    def _added(self, b):
        s = self._index.get(b.routing_key)
        if s is None:
            s = self._index[b.routing_key] = DestSet()
        s.add(b.destination)

    def _removed(self, b):
        if self._index[b.routing_key].remove(b.destination):
            del self._index[b.routing_key]

    def route(self, msg, keys):
        index = self._index
        if len(keys) == 1:
            s = index.get(keys[0])
            return s.dests.values() if s is not None else ()
        found: dict[int, object] = {}
        for k in keys:
            s = index.get(k)
            if s is not None:
                found.update(s.dests)
        return found.values()
