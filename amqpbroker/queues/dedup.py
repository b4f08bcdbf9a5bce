"""Queue-level deduplication, as the rabbitmq-message-deduplication plugin's: a queue
declared with ``x-message-deduplication: true`` does not enqueue a message while one with
the same id (``dedup.id_of``: the header named by ``x-deduplication-header``, by default
that very header, else the message-id) is in it, ready or unacked.  The id is free again
once that message leaves for good: acked, rejected or nacked without requeue, expired,
dead-lettered, dropped by a length limit, purged, or the queue deleted.  A requeued
message keeps its id.  Recovered messages take their ids back, so the window survives a
restart with them.

A duplicate is accepted and dropped (counted in ``counters.drop_duplicate``): the
publisher's confirm is an ack, as for the deduplicating exchange (the plugin nacks).  It
waits for the first one's store commit when that one is persistent and not yet synced.

A subclass of the classic queue (the registry picks it for the argument), so a queue
without it runs none of this."""
from __future__ import annotations

from ..dedup import HEADER, id_of, key_name
from .base import SAFE
from .classic import Queue


class DedupQueue(Queue):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.id_key = key_name(self.arguments.get("x-deduplication-header") or HEADER)
        self.ids: dict[bytes, tuple[int, int]] = {}  # id -> (seq, store gen of its write)

    def accept(self, msg, now: float):
        key = id_of(msg, self.id_key)
        if key is None:
            return super().accept(msg, now)
        held = self.ids.get(key)
        if held is not None:
            self.counters.drop_duplicate += 1
            gen = held[1]
            return gen if gen and self.store is not None and gen > self.store.synced \
                else SAFE
        ticket = super().accept(msg, now)
        if ticket:
            self.ids[key] = (self._next_seq, ticket if type(ticket) is int else 0)
        return ticket

    def restore(self, seq: int, msg, ttl, now: float) -> None:
        super().restore(seq, msg, ttl, now)
        key = id_of(msg, self.id_key)
        if key is not None:
            self.ids[key] = (seq, 0)

    def _free(self, qm) -> None:
        key = id_of(qm.msg, self.id_key)
        if key is not None:
            held = self.ids.get(key)
            if held is not None and held[0] == qm.seq:
                del self.ids[key]

    def _drop(self, qm) -> None:
        super()._drop(qm)
        self._free(qm)

    def _dead_letter(self, qm, reason: str) -> bool:
        # free the id first: a dead-letter exchange that routes back here must take it
        key = id_of(qm.msg, self.id_key)
        held = self.ids.pop(key, None) if key is not None else None
        if super()._dead_letter(qm, reason):
            return True
        if held is not None and key not in self.ids:
            self.ids[key] = held  # it stays here
        return False

    def delete(self) -> int:
        n = super().delete()
        self.ids.clear()
        return n
