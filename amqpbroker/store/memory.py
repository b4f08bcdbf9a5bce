"""The memory store: keeps nothing, so every sync is immediate and nothing is recovered."""
from __future__ import annotations

from .base import Recovered


class MemoryStore:
    durable = False

    def __init__(self):
        self.gen = 0
        self.synced = 0
        self.on_dirty = None

    def _noop(self, *args) -> None:
        pass

    put_exchange = delete_exchange = put_queue = delete_queue = _noop
    put_binding = delete_binding = append = remove = _noop

    def recover(self) -> Recovered:
        return Recovered()

    async def sync(self) -> None:
        self.synced = self.gen

    def close(self) -> None:
        pass
