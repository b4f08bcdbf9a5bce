"""Stores: where durable definitions and persistent messages live.

``Store`` is the protocol; ``MemoryStore`` keeps nothing (tests, throw-away brokers);
``SQLiteStore`` (the default) group-commits batches in a worker thread.
"""
from __future__ import annotations

from .base import Recovered, Store
from .memory import MemoryStore


def open_store(backend: str, path: str) -> Store:
    if backend == "memory":
        return MemoryStore()
    from .sqlite import SQLiteStore
    return SQLiteStore(path)


__all__ = ["MemoryStore", "Recovered", "Store", "open_store"]
