"""The Store protocol: synchronous mutators (they never wait: a store that writes
somewhere only appends to an in-memory batch), a ``recover()`` at start, and one
``async sync()``: everything given before the call is kept when it returns.  ``gen``
counts mutations (every mutator bumps it), ``synced`` is the last ``gen`` kept (never
above ``gen``); a publisher confirm waits until ``synced`` covers its message.

``recover()`` gives back every definition put and not deleted (a put replaces the one
with the same key: (vhost, name) for exchanges and queues, all six fields for a binding,
its arguments compared by their encoding) and every message appended and not removed,
per (vhost, queue) in seq order; deleting a queue deletes its messages.  Delayed messages
have a table of their own, read a window at a time (``delayed_after``: the next ``limit``
after a (due, seq) key, committed ones; an indexed range scan), so that millions pending
need no memory until they fall due.  ``durable``
says whether what is kept outlives the process: queues give persistent messages only to
a durable store.  The implementations: ``MemoryStore`` (memory.py, kept at once, so
``synced == gen`` always, nothing outlives the process) and ``SQLiteStore`` (sqlite.py,
group commit: ``synced`` lags until a ``sync()``, what is synced survives a crash)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ..message import Message


class StoreError(Exception):
    """The store cannot be opened or recovered (a data directory that is a file or not
    writable, a file that is not an intact SQLite database of ours, a directory another
    broker holds).  One line, naming the path; the command line adds ``storage.path``."""


@dataclass
class ExchangeDef:
    vhost: str
    name: str
    type: str
    auto_delete: bool
    internal: bool
    arguments: dict
    arg_types: dict


@dataclass
class QueueDef:
    vhost: str
    name: str
    auto_delete: bool
    arguments: dict
    arg_types: dict


@dataclass
class BindingDef:
    vhost: str
    source: str
    dest_kind: str          # "queue" or "exchange"
    destination: str
    routing_key: str
    arguments: dict


@dataclass
class StoredMessage:
    seq: int
    message: Message
    ttl: int | None         # ms left of its TTL at recovery time, or None


@dataclass
class Recovered:
    exchanges: list[ExchangeDef] = field(default_factory=list)
    queues: list[QueueDef] = field(default_factory=list)
    bindings: list[BindingDef] = field(default_factory=list)
    # (vhost, queue) -> messages in queue order
    messages: dict[tuple[str, str], list[StoredMessage]] = field(default_factory=dict)
    # policies set while running (policies.py): (vhost, name, operator, JSON document)
    policies: list[tuple[str, str, bool, str]] = field(default_factory=list)


class Store(Protocol):
    durable: bool
    gen: int
    synced: int
    # callable or None: called when the store gets something to sync (the first mutation
    # after a sync; never, by a store that keeps everything at once)
    on_dirty: object

    def put_exchange(self, d: ExchangeDef) -> None: ...
    def delete_exchange(self, vhost: str, name: str) -> None: ...
    def put_queue(self, d: QueueDef) -> None: ...
    def delete_queue(self, vhost: str, name: str) -> None: ...
    def put_binding(self, d: BindingDef) -> None: ...
    def delete_binding(self, d: BindingDef) -> None: ...
    def append(self, vhost: str, queue: str, seq: int, msg: Message,
               ttl: int | None) -> None: ...
    def remove(self, vhost: str, queue: str, seq: int) -> None: ...
    def recover(self) -> Recovered: ...
    # delayed messages (delayed.py), per (vhost, exchange), ordered by (due, seq): ``due``
    # in wall-clock ms (what outlives a restart), ``seq`` unique per exchange.  Not part of
    # ``recover()``: a delayed exchange reads them back itself, a window at a time
    def put_delayed(self, vhost: str, exchange: str, due: int, seq: int,
                    msg: Message) -> None: ...
    def remove_delayed(self, vhost: str, exchange: str, due: int, seq: int) -> None: ...
    def drop_delayed(self, vhost: str, exchange: str) -> None: ...   # every one of it
    def delayed_after(self, vhost: str, exchange: str, after: tuple[int, int] | None,
                      limit: int) -> list[tuple[int, int, Message]]: ...
    # deduplication caches with disk persistence (dedup.py), per (vhost, owner), rows
    # keyed by the id: ``expires`` in wall-clock ms or None, ``seq`` their order.  Read
    # back by the cache itself (``dedup_entries``: the committed rows, oldest first)
    def put_dedup(self, vhost: str, owner: str, key: bytes, expires: int | None,
                  seq: int) -> None: ...
    def remove_dedup(self, vhost: str, owner: str, key: bytes) -> None: ...
    def drop_dedup(self, vhost: str, owner: str) -> None: ...    # every one of it
    def dedup_entries(self, vhost: str, owner: str) -> list[tuple[bytes, int | None,
                                                                  int]]: ...
    async def sync(self) -> None: ...
    # policies set while running (policies.py), as their JSON document
    def put_policy(self, vhost: str, name: str, operator: bool, doc: str) -> None: ...
    def delete_policy(self, vhost: str, name: str, operator: bool) -> None: ...

    def close(self) -> None: ...
