"""The memory store (``storage.backend: memory``): keeps what it is given in dicts of
this process and gives it back from ``recover()``; nothing survives the process, since
nothing is written anywhere else.

What it keeps is kept the moment it is given, so there is never anything to sync:
``synced == gen`` after every mutation, ``sync()`` returns at once and ``on_dirty`` is
never called; a publisher confirm never waits for it.  ``durable`` is False (what it
keeps does not outlive the process), which is why a queue gives it no messages (queues.py:
a message in memory is already in its queue); the broker still gives it the durable
definitions.  Keys and equality are the SQLite store's: a binding is identified by its
arguments' encoding, a queue's messages by their seq, recovered in seq order.
"""
from __future__ import annotations

import time

from ..message import Message
from ..values import encode_table
from .base import BindingDef, ExchangeDef, QueueDef, Recovered, StoredMessage


class MemoryStore:
    durable = False

    def __init__(self):
        self.gen = 0
        self.synced = 0
        self.on_dirty = None
        self._exchanges: dict[tuple[str, str], ExchangeDef] = {}
        self._queues: dict[tuple[str, str], QueueDef] = {}
        self._bindings: dict[tuple, BindingDef] = {}
        # (vhost, queue) -> {seq: (message, monotonic deadline of its TTL or None)}
        self._messages: dict[tuple[str, str], dict[int, tuple[Message, float | None]]] = {}
        # (vhost, exchange) -> {(due, seq): message}
        self._delayed: dict[tuple[str, str], dict[tuple[int, int], Message]] = {}
        # (vhost, owner) -> {key: (expires, seq)}: deduplication entries (dedup.py)
        self._dedup: dict[tuple[str, str], dict[bytes, tuple[int | None, int]]] = {}
        self._policies: dict[tuple[str, str, bool], str] = {}

    def _bump(self) -> None:
        self.gen += 1
        self.synced = self.gen

    # ------------------------------------------------------------------ mutators

    def put_exchange(self, d: ExchangeDef) -> None:
        self._exchanges[(d.vhost, d.name)] = d
        self._bump()

    def delete_exchange(self, vhost: str, name: str) -> None:
        self._exchanges.pop((vhost, name), None)
        self._bump()

    def put_policy(self, vhost: str, name: str, operator: bool, doc: str) -> None:
        self._policies[(vhost, name, operator)] = doc
        self._bump()

    def delete_policy(self, vhost: str, name: str, operator: bool) -> None:
        self._policies.pop((vhost, name, operator), None)
        self._bump()

    def put_queue(self, d: QueueDef) -> None:
        self._queues[(d.vhost, d.name)] = d
        self._bump()

    def delete_queue(self, vhost: str, name: str) -> None:
        self._queues.pop((vhost, name), None)
        self._messages.pop((vhost, name), None)  # its messages go with it
        self._bump()

    @staticmethod
    def _binding_key(d: BindingDef) -> tuple:
        return (d.vhost, d.source, d.dest_kind, d.destination, d.routing_key,
                encode_table(d.arguments))

    def put_binding(self, d: BindingDef) -> None:
        self._bindings[self._binding_key(d)] = d
        self._bump()

    def delete_binding(self, d: BindingDef) -> None:
        self._bindings.pop(self._binding_key(d), None)
        self._bump()

    def append(self, vhost: str, queue: str, seq: int, msg: Message, ttl: int | None) -> None:
        q = self._messages.get((vhost, queue))
        if q is None:
            q = self._messages[(vhost, queue)] = {}
        q[seq] = (msg, None if ttl is None else time.monotonic() + ttl / 1000)
        self.gen += 1
        self.synced = self.gen

    def remove(self, vhost: str, queue: str, seq: int) -> None:
        q = self._messages.get((vhost, queue))
        if q is not None:
            q.pop(seq, None)
        self.gen += 1
        self.synced = self.gen

    def put_delayed(self, vhost: str, exchange: str, due: int, seq: int,
                    msg: Message) -> None:
        self._delayed.setdefault((vhost, exchange), {})[(due, seq)] = msg
        self._bump()

    def remove_delayed(self, vhost: str, exchange: str, due: int, seq: int) -> None:
        self._delayed.get((vhost, exchange), {}).pop((due, seq), None)
        self._bump()

    def drop_delayed(self, vhost: str, exchange: str) -> None:
        self._delayed.pop((vhost, exchange), None)
        self._bump()

    def delayed_after(self, vhost: str, exchange: str, after: tuple[int, int] | None,
                      limit: int) -> list[tuple[int, int, Message]]:
        # (a test store: a sort per call is fine)
        rows = self._delayed.get((vhost, exchange), {})
        keys = sorted(k for k in rows if after is None or k > after)[:limit]
        return [(due, seq, rows[(due, seq)]) for due, seq in keys]

    def put_dedup(self, vhost: str, owner: str, key: bytes, expires: int | None,
                  seq: int) -> None:
        self._dedup.setdefault((vhost, owner), {})[key] = (expires, seq)
        self._bump()

    def remove_dedup(self, vhost: str, owner: str, key: bytes) -> None:
        self._dedup.get((vhost, owner), {}).pop(key, None)
        self._bump()

    def drop_dedup(self, vhost: str, owner: str) -> None:
        self._dedup.pop((vhost, owner), None)
        self._bump()

    def dedup_entries(self, vhost: str, owner: str) -> list[tuple[bytes, int | None, int]]:
        rows = self._dedup.get((vhost, owner), {})
        return sorted(((k, e, s) for k, (e, s) in rows.items()), key=lambda r: r[2])

    # ------------------------------------------------------------------ recovery, sync

    def recover(self) -> Recovered:
        r = Recovered(list(self._exchanges.values()), list(self._queues.values()),
                      list(self._bindings.values()))
        r.policies = [(*key, doc) for key, doc in self._policies.items()]
        now = time.monotonic()
        for key, stored in self._messages.items():
            if stored:
                r.messages[key] = [
                    StoredMessage(seq, msg, None if deadline is None
                                  else max(0, int((deadline - now) * 1000)))
                    for seq, (msg, deadline) in sorted(stored.items())]
        return r

    async def sync(self) -> None:
        self.synced = self.gen

    def close(self) -> None:
        """Nothing to commit; what it keeps stays readable until the object is dropped."""
