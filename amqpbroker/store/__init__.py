"""Stores: where durable definitions and persistent messages live.

``Store`` is the protocol; ``MemoryStore`` keeps what it is given in this process only
(tests, throw-away brokers);
``SQLiteStore`` (the default) group-commits batches in a worker thread.
"""
from __future__ import annotations

from .base import Recovered, Store, StoreError
from .memory import MemoryStore


def open_store(backend: str, path: str) -> Store:
    """The configured store, for a broker: the SQLite store also locks its directory, so
    a second broker on the same data directory stops with a StoreError."""
    if backend == "memory":
        return MemoryStore()
    from .sqlite import SQLiteStore
    from .sqlite_open import DirectoryLock, prepare
    prepare(path)
    lock = DirectoryLock(path)
    try:
        store = SQLiteStore(path)
    except BaseException:
        lock.release()
        raise
    store.lock = lock
    return store


__all__ = ["MemoryStore", "Recovered", "Store", "StoreError", "open_store"]
