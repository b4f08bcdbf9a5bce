"""The Store protocol: synchronous mutators that only append to an in-memory batch, a
``recover()`` at start, and one ``async sync()``: everything appended before the call is
durable when it returns.  ``gen`` counts mutations, ``synced`` is the last ``gen`` made
durable; a publisher confirm waits until ``synced`` covers its message."""
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


class Store(Protocol):
    durable: bool
    gen: int
    synced: int
    on_dirty: object  # callable or None: the first mutation after a sync calls it

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
    async def sync(self) -> None: ...
    def close(self) -> None: ...
