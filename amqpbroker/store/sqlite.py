"""The default durable store: one SQLite file (stdlib sqlite3, WAL, synchronous=FULL).

Mutations only append to an in-memory batch on the event-loop thread.  ``sync()`` swaps
the batch out and commits it in ONE transaction in a worker thread (group commit), so the
fsync is shared by every message in the batch and the loop never waits on the disk.  A
message appended and removed before its batch is committed (a fast consumer acked it) never
reaches the disk at all.  Everything done in one event-loop step lands in one transaction,
so a dead-lettered message leaves its source and enters its targets atomically.
"""
from __future__ import annotations

import json
import time

import anyio
from pamqp import decode as pdecode
from pamqp import encode as pencode

from ..message import Message
from . import sqlite_open
from .base import BindingDef, ExchangeDef, QueueDef, Recovered, StoredMessage

SCHEMA = """
CREATE TABLE IF NOT EXISTS exchanges (
    vhost TEXT NOT NULL, name TEXT NOT NULL, type TEXT NOT NULL, auto_delete INTEGER NOT NULL,
    internal INTEGER NOT NULL, arguments BLOB NOT NULL, arg_types TEXT NOT NULL,
    PRIMARY KEY (vhost, name));
CREATE TABLE IF NOT EXISTS queues (
    vhost TEXT NOT NULL, name TEXT NOT NULL, auto_delete INTEGER NOT NULL,
    arguments BLOB NOT NULL, arg_types TEXT NOT NULL, PRIMARY KEY (vhost, name));
CREATE TABLE IF NOT EXISTS bindings (
    vhost TEXT NOT NULL, source TEXT NOT NULL, dest_kind TEXT NOT NULL,
    destination TEXT NOT NULL, routing_key TEXT NOT NULL, arguments BLOB NOT NULL,
    PRIMARY KEY (vhost, source, dest_kind, destination, routing_key, arguments));
CREATE TABLE IF NOT EXISTS messages (
    vhost TEXT NOT NULL, queue TEXT NOT NULL, seq INTEGER NOT NULL, exchange TEXT NOT NULL,
    routing_key TEXT NOT NULL, props BLOB NOT NULL, body BLOB NOT NULL, cc TEXT,
    bcc TEXT, expires_at REAL, PRIMARY KEY (vhost, queue, seq)) WITHOUT ROWID;
"""

SQL = {
    "x+": "INSERT OR REPLACE INTO exchanges VALUES (?, ?, ?, ?, ?, ?, ?)",
    "x-": "DELETE FROM exchanges WHERE vhost = ? AND name = ?",
    "q+": "INSERT OR REPLACE INTO queues VALUES (?, ?, ?, ?, ?)",
    "q-": "DELETE FROM queues WHERE vhost = ? AND name = ?",
    "qm-": "DELETE FROM messages WHERE vhost = ? AND queue = ?",
    "b+": "INSERT OR REPLACE INTO bindings VALUES (?, ?, ?, ?, ?, ?)",
    "b-": "DELETE FROM bindings WHERE vhost = ? AND source = ? AND dest_kind = ? AND "
          "destination = ? AND routing_key = ? AND arguments = ?",
    "m+": "INSERT OR REPLACE INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "m-": "DELETE FROM messages WHERE vhost = ? AND queue = ? AND seq = ?",
}


def _table(args: dict) -> bytes:
    return pencode.field_table(dict(sorted((args or {}).items())))


def _untable(raw: bytes) -> dict:
    return pdecode.field_table(raw)[1] if raw else {}


class SQLiteStore:
    durable = True

    def __init__(self, directory: str):
        # a StoreError (one line naming the path) for a directory that is a file or not
        # writable, a file that is not an intact database of ours
        self.path = sqlite_open.prepare(directory)
        self.db = sqlite_open.connect(self.path, SCHEMA)
        self.lock: sqlite_open.DirectoryLock | None = None  # open_store() takes one
        self._batch: list = []
        self._inserts: dict[tuple, int] = {}  # pending message inserts: key -> batch index
        self._failed: list = []  # a batch whose commit failed, to be retried
        self.gen = 0
        self.synced = 0
        self.on_dirty = None
        self._lock: anyio.Lock | None = None  # created in the event loop, by sync()

    # ------------------------------------------------------------------ mutators

    def _op(self, kind: str, params: tuple) -> None:
        if not self._batch and self.on_dirty is not None:
            self.on_dirty()
        self._batch.append((kind, params))
        self.gen += 1

    def put_exchange(self, d: ExchangeDef) -> None:
        self._op("x+", (d.vhost, d.name, d.type, d.auto_delete, d.internal,
                        _table(d.arguments), json.dumps(d.arg_types)))

    def delete_exchange(self, vhost: str, name: str) -> None:
        self._op("x-", (vhost, name))

    def put_queue(self, d: QueueDef) -> None:
        self._op("q+", (d.vhost, d.name, d.auto_delete, _table(d.arguments),
                        json.dumps(d.arg_types)))

    def delete_queue(self, vhost: str, name: str) -> None:
        self._op("q-", (vhost, name))
        self._op("qm-", (vhost, name))

    def _binding_key(self, d: BindingDef) -> tuple:
        return (d.vhost, d.source, d.dest_kind, d.destination, d.routing_key,
                _table(d.arguments))

    def put_binding(self, d: BindingDef) -> None:
        self._op("b+", self._binding_key(d))

    def delete_binding(self, d: BindingDef) -> None:
        self._op("b-", self._binding_key(d))

    def append(self, vhost: str, queue: str, seq: int, msg: Message, ttl: int | None) -> None:
        key = (vhost, queue, seq)
        self._inserts[key] = len(self._batch)
        self._op("m+", (vhost, queue, seq, msg.exchange, msg.routing_key, msg.props, msg.body,
                        json.dumps(msg.cc) if msg.cc else None,
                        json.dumps(msg.bcc) if msg.bcc else None,
                        None if ttl is None else time.time() + ttl / 1000))

    def remove(self, vhost: str, queue: str, seq: int) -> None:
        index = self._inserts.pop((vhost, queue, seq), None)
        if index is not None:  # never written: cancel the insert instead
            self._batch[index] = None
            self.gen += 1
            return
        self._op("m-", (vhost, queue, seq))

    # ------------------------------------------------------------------ sync

    async def sync(self) -> None:
        # one commit at a time: a second caller (the shutdown's, while the flusher's commit
        # is still in its thread) must neither share the connection's transaction nor
        # advance ``synced`` past a batch that is not yet durable
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            if not self._batch and not self._failed:
                self.synced = self.gen
                return
            batch, gen = self._take_batch()
            try:
                await anyio.to_thread.run_sync(self._commit, batch)
            except BaseException:
                self._failed = batch  # retried first by the next sync; synced stays put
                raise
            self.synced = gen

    def _take_batch(self) -> tuple[list, int]:
        # a batch whose commit failed (disk full, say) goes first: nothing it holds may be
        # confirmed before it is durable, and later operations must apply after it
        batch = self._failed + self._batch if self._failed else self._batch
        self._failed, self._batch, self._inserts = [], [], {}
        return batch, self.gen

    def sync_blocking(self) -> None:
        """For shutdown and tests outside an event loop."""
        batch, gen = self._take_batch()
        try:
            self._commit(batch)
        except BaseException:
            self._failed = batch
            raise
        self.synced = gen

    def _commit(self, batch: list) -> None:
        db = self.db
        db.execute("BEGIN")
        try:
            run_kind, run = None, []
            for op in batch:
                if op is None:
                    continue
                kind, params = op
                if kind != run_kind and run:
                    db.executemany(SQL[run_kind], run)
                    run = []
                run_kind = kind
                run.append(params)
            if run:
                db.executemany(SQL[run_kind], run)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------------ recovery

    def recover(self) -> Recovered:
        db = self.db
        r = Recovered()
        for vhost, name, type_, ad, internal, args, types in db.execute(
                "SELECT * FROM exchanges"):
            r.exchanges.append(ExchangeDef(vhost, name, type_, bool(ad), bool(internal),
                                           _untable(args), json.loads(types)))
        for vhost, name, ad, args, types in db.execute("SELECT * FROM queues"):
            r.queues.append(QueueDef(vhost, name, bool(ad), _untable(args), json.loads(types)))
        for vhost, source, kind, dest, rk, args in db.execute("SELECT * FROM bindings"):
            r.bindings.append(BindingDef(vhost, source, kind, dest, rk, _untable(args)))
        now = time.time()
        for vhost, queue, seq, exchange, rk, props, body, cc, bcc, expires_at in db.execute(
                "SELECT * FROM messages ORDER BY vhost, queue, seq"):
            msg = Message(exchange, rk, bytes(props), bytes(body),
                          tuple(json.loads(cc)) if cc else (),
                          tuple(json.loads(bcc)) if bcc else ())
            ttl = None if expires_at is None else max(0, int((expires_at - now) * 1000))
            r.messages.setdefault((vhost, queue), []).append(StoredMessage(seq, msg, ttl))
        return r

    def close(self) -> None:
        try:
            if self._batch or self._failed:
                self.sync_blocking()
            self.db.close()
        finally:
            if self.lock is not None:
                self.lock.release()
