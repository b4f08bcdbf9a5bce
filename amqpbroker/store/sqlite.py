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
import sqlite3
import time

import anyio

from ..message import Message
from ..values import encode_table, raw, table_from, text
from . import sqlite_open
from .base import BindingDef, ExchangeDef, QueueDef, Recovered, StoredMessage

# Schema 2: names and keys are BLOBs (the exact bytes a client sent, any bytes RabbitMQ
# accepts), arguments are the field table's bytes as received (every value keeps its wire
# type, keys up to 255 bytes); the wire types are read back from those bytes.  Schema 1
# (user_version 0, the first release) kept names as TEXT, arguments re-encoded by pamqp and
# their type names as JSON; it is migrated in place on open.
SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE IF NOT EXISTS exchanges (
    vhost TEXT NOT NULL, name BLOB NOT NULL, type BLOB NOT NULL, auto_delete INTEGER NOT NULL,
    internal INTEGER NOT NULL, arguments BLOB NOT NULL, PRIMARY KEY (vhost, name));
CREATE TABLE IF NOT EXISTS queues (
    vhost TEXT NOT NULL, name BLOB NOT NULL, auto_delete INTEGER NOT NULL,
    arguments BLOB NOT NULL, PRIMARY KEY (vhost, name));
CREATE TABLE IF NOT EXISTS bindings (
    vhost TEXT NOT NULL, source BLOB NOT NULL, dest_kind TEXT NOT NULL,
    destination BLOB NOT NULL, routing_key BLOB NOT NULL, arguments BLOB NOT NULL,
    PRIMARY KEY (vhost, source, dest_kind, destination, routing_key, arguments))
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    vhost TEXT NOT NULL, queue BLOB NOT NULL, seq INTEGER NOT NULL, exchange BLOB NOT NULL,
    routing_key BLOB NOT NULL, props BLOB NOT NULL, body BLOB NOT NULL, cc TEXT,
    bcc TEXT, expires_at REAL, PRIMARY KEY (vhost, queue, seq)) WITHOUT ROWID;
"""

# Delayed messages (delayed.py): a table of their own, created where it is missing (no new
# schema version: a broker without the feature ignores the table).  The primary key is the
# order of release, so the next window is one range scan of the B-tree.
DELAYED_SCHEMA = """
CREATE TABLE IF NOT EXISTS delayed (
    vhost TEXT NOT NULL, exchange BLOB NOT NULL, due INTEGER NOT NULL, seq INTEGER NOT NULL,
    routing_key BLOB NOT NULL, props BLOB NOT NULL, body BLOB NOT NULL, cc TEXT, bcc TEXT,
    PRIMARY KEY (vhost, exchange, due, seq)) WITHOUT ROWID;
"""
# Deduplication caches with disk persistence (dedup.py): one row per id in a window,
# per (vhost, owner: the exchange), in the order they were recorded (seq); also created
# where missing.  ``expires`` in wall-clock ms, NULL for no TTL.
DEDUP_SCHEMA = """
CREATE TABLE IF NOT EXISTS dedup (
    vhost TEXT NOT NULL, owner BLOB NOT NULL, key BLOB NOT NULL, expires INTEGER,
    seq INTEGER NOT NULL, PRIMARY KEY (vhost, owner, key)) WITHOUT ROWID;
"""
# Policies set while running (policies.py): their JSON documents; created where missing.
POLICY_SCHEMA = """
CREATE TABLE IF NOT EXISTS policies (
    vhost TEXT NOT NULL, name TEXT NOT NULL, operator INTEGER NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (vhost, name, operator)) WITHOUT ROWID;
"""
EXTRA_SCHEMA = DELAYED_SCHEMA + DEDUP_SCHEMA + POLICY_SCHEMA
DELAYED_AFTER = ("SELECT due, seq, routing_key, props, body, cc, bcc FROM delayed "
                 "WHERE vhost = ? AND exchange = ? AND (due, seq) > (?, ?) "
                 "ORDER BY due, seq LIMIT ?")

# schema 1 -> 2: every table rebuilt, TEXT names cast to their UTF-8 bytes
MIGRATE_1_2 = """
ALTER TABLE exchanges RENAME TO exchanges_v1;
ALTER TABLE queues RENAME TO queues_v1;
ALTER TABLE bindings RENAME TO bindings_v1;
ALTER TABLE messages RENAME TO messages_v1;
""" + SCHEMA + """
INSERT INTO exchanges SELECT vhost, CAST(name AS BLOB), CAST(type AS BLOB), auto_delete,
    internal, arguments FROM exchanges_v1;
INSERT INTO queues SELECT vhost, CAST(name AS BLOB), auto_delete, arguments FROM queues_v1;
INSERT OR IGNORE INTO bindings SELECT vhost, CAST(source AS BLOB), dest_kind,
    CAST(destination AS BLOB), CAST(routing_key AS BLOB), arguments FROM bindings_v1;
INSERT INTO messages SELECT vhost, CAST(queue AS BLOB), seq, CAST(exchange AS BLOB),
    CAST(routing_key AS BLOB), props, body, cc, bcc, expires_at FROM messages_v1;
DROP TABLE exchanges_v1;
DROP TABLE queues_v1;
DROP TABLE bindings_v1;
DROP TABLE messages_v1;
"""

SQL = {
    "x+": "INSERT OR REPLACE INTO exchanges VALUES (?, ?, ?, ?, ?, ?)",
    "x-": "DELETE FROM exchanges WHERE vhost = ? AND name = ?",
    "q+": "INSERT OR REPLACE INTO queues VALUES (?, ?, ?, ?)",
    "q-": "DELETE FROM queues WHERE vhost = ? AND name = ?",
    "qm-": "DELETE FROM messages WHERE vhost = ? AND queue = ?",
    "b+": "INSERT OR REPLACE INTO bindings VALUES (?, ?, ?, ?, ?, ?)",
    "b-": "DELETE FROM bindings WHERE vhost = ? AND source = ? AND dest_kind = ? AND "
          "destination = ? AND routing_key = ? AND arguments = ?",
    "m+": "INSERT OR REPLACE INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "m-": "DELETE FROM messages WHERE vhost = ? AND queue = ? AND seq = ?",
    "d+": "INSERT OR REPLACE INTO delayed VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "d-": "DELETE FROM delayed WHERE vhost = ? AND exchange = ? AND due = ? AND seq = ?",
    "dx-": "DELETE FROM delayed WHERE vhost = ? AND exchange = ?",
    "u+": "INSERT OR REPLACE INTO dedup VALUES (?, ?, ?, ?, ?)",
    "u-": "DELETE FROM dedup WHERE vhost = ? AND owner = ? AND key = ?",
    "ux-": "DELETE FROM dedup WHERE vhost = ? AND owner = ?",
    "p+": "INSERT OR REPLACE INTO policies VALUES (?, ?, ?, ?)",
    "p-": "DELETE FROM policies WHERE vhost = ? AND name = ? AND operator = ?",
}


def open_schema(db: sqlite3.Connection) -> None:
    """Create the schema, or migrate an older one (in one transaction)."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version == SCHEMA_VERSION:
        db.executescript(EXTRA_SCHEMA)
        return
    if version > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(f"store schema {version} is newer than this broker's "
                                    f"({SCHEMA_VERSION})")
    old = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'exchanges'").fetchone()
    db.execute("BEGIN")
    try:
        for stmt in (MIGRATE_1_2 if old else SCHEMA).split(";"):
            if stmt.strip():
                db.execute(stmt)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.executescript(EXTRA_SCHEMA)


def _encoded(kind: str, run: list) -> list:
    """Message rows carry their names as text until the commit: BLOBs of their bytes."""
    if kind == "m+":
        return [(v, raw(q), seq, raw(x), raw(rk), *rest) for v, q, seq, x, rk, *rest in run]
    if kind == "m-":
        return [(v, raw(q), seq) for v, q, seq in run]
    if kind == "d+":
        return [(v, raw(x), due, seq, raw(rk), *rest) for v, x, due, seq, rk, *rest in run]
    if kind == "d-":
        return [(v, raw(x), due, seq) for v, x, due, seq in run]
    return run


class SQLiteStore:
    durable = True

    def __init__(self, directory: str):
        # a StoreError (one line naming the path) for a directory that is a file or not
        # writable, a file that is not an intact database of ours
        self.path = sqlite_open.prepare(directory)
        self.db = sqlite_open.connect(self.path, SCHEMA + EXTRA_SCHEMA, open_schema)
        self._reader: sqlite3.Connection | None = None  # delayed_after's (below)
        self.lock: sqlite_open.DirectoryLock | None = None  # open_store() takes one
        self._batch: list = []
        self._inserts: dict[tuple, int] = {}  # pending message inserts: key -> batch index
        self._failed: list = []  # a batch whose commit failed, to be retried
        # (vhost, owner) -> the gen of its drop_dedup: rows older are gone once synced
        self._dedup_dropped: dict[tuple[str, str], int] = {}
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
        self._op("x+", (d.vhost, raw(d.name), raw(d.type), d.auto_delete, d.internal,
                        encode_table(d.arguments, d.arg_types)))

    def delete_exchange(self, vhost: str, name: str) -> None:
        self._op("x-", (vhost, raw(name)))

    def put_policy(self, vhost: str, name: str, operator: bool, doc: str) -> None:
        self._op("p+", (vhost, name, int(operator), doc))

    def delete_policy(self, vhost: str, name: str, operator: bool) -> None:
        self._op("p-", (vhost, name, int(operator)))

    def put_queue(self, d: QueueDef) -> None:
        self._op("q+", (d.vhost, raw(d.name), d.auto_delete,
                        encode_table(d.arguments, d.arg_types)))

    def delete_queue(self, vhost: str, name: str) -> None:
        self._op("q-", (vhost, raw(name)))
        self._op("qm-", (vhost, raw(name)))

    def _binding_key(self, d: BindingDef) -> tuple:
        # the primary key: a put or delete is one B-tree search (the table is WITHOUT ROWID,
        # so there is no second B-tree to update)
        return (d.vhost, raw(d.source), d.dest_kind, raw(d.destination), raw(d.routing_key),
                encode_table(d.arguments))

    def put_binding(self, d: BindingDef) -> None:
        self._op("b+", self._binding_key(d))

    def delete_binding(self, d: BindingDef) -> None:
        self._op("b-", self._binding_key(d))

    def append(self, vhost: str, queue: str, seq: int, msg: Message, ttl: int | None) -> None:
        key = (vhost, queue, seq)
        self._inserts[key] = len(self._batch)
        # names stay text here (the per-message path): _commit encodes them, in the worker
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

    def put_delayed(self, vhost: str, exchange: str, due: int, seq: int,
                    msg: Message) -> None:
        self._op("d+", (vhost, exchange, due, seq, msg.routing_key, msg.props, msg.body,
                        json.dumps(msg.cc) if msg.cc else None,
                        json.dumps(msg.bcc) if msg.bcc else None))

    def remove_delayed(self, vhost: str, exchange: str, due: int, seq: int) -> None:
        self._op("d-", (vhost, exchange, due, seq))

    def drop_delayed(self, vhost: str, exchange: str) -> None:
        self._op("dx-", (vhost, raw(exchange)))

    def delayed_after(self, vhost: str, exchange: str, after: tuple[int, int] | None,
                      limit: int) -> list[tuple[int, int, Message]]:
        """The next ``limit`` committed rows after ``after``.  On a connection of its own:
        WAL lets it read the last commit while the flusher's thread writes the next one
        on ``self.db``, and it never sees a transaction half done."""
        due, seq = after if after is not None else (-(1 << 63), -(1 << 63))
        return [(d, s, Message(exchange, text(rk), bytes(props), bytes(body),
                               tuple(json.loads(cc)) if cc else (),
                               tuple(json.loads(bcc)) if bcc else ()))
                for d, s, rk, props, body, cc, bcc in self._read(
                    DELAYED_AFTER, (vhost, raw(exchange), due, seq, limit))]

    def put_dedup(self, vhost: str, owner: str, key: bytes, expires: int | None,
                  seq: int) -> None:
        self._op("u+", (vhost, raw(owner), key, expires, seq))

    def remove_dedup(self, vhost: str, owner: str, key: bytes) -> None:
        self._op("u-", (vhost, raw(owner), key))

    def drop_dedup(self, vhost: str, owner: str) -> None:
        self._op("ux-", (vhost, raw(owner)))
        self._dedup_dropped[(vhost, owner)] = self.gen

    def dedup_entries(self, vhost: str, owner: str) -> list[tuple[bytes, int | None, int]]:
        """The committed rows of one cache, oldest first: (key, expires, seq).  None for
        a cache dropped since the last commit (its rows are still there, not its own)."""
        if self._dedup_dropped.get((vhost, owner), 0) > self.synced:
            return []
        return [(bytes(k), e, s) for k, e, s in self._read(
            "SELECT key, expires, seq FROM dedup WHERE vhost = ? AND owner = ? ORDER BY seq",
            (vhost, raw(owner)))]

    def _read(self, sql: str, params: tuple) -> list:
        """A query of the last commit, on a connection of its own: WAL lets it read while
        the flusher's thread writes the next one on ``self.db``."""
        if self._reader is None:
            self._reader = sqlite3.connect(self.path, check_same_thread=False,
                                           isolation_level=None)
            self._reader.execute("PRAGMA query_only = 1")
        return self._reader.execute(sql, params).fetchall()

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
                    db.executemany(SQL[run_kind], _encoded(run_kind, run))
                    run = []
                run_kind = kind
                run.append(params)
            if run:
                db.executemany(SQL[run_kind], _encoded(run_kind, run))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------------ recovery

    def recover(self) -> Recovered:
        db = self.db
        r = Recovered()
        for vhost, name, type_, ad, internal, args in db.execute("SELECT * FROM exchanges"):
            a = table_from(args)
            r.exchanges.append(ExchangeDef(vhost, text(name), text(type_), bool(ad),
                                           bool(internal), a, a.type_names()))
        for vhost, name, ad, args in db.execute("SELECT * FROM queues"):
            a = table_from(args)
            r.queues.append(QueueDef(vhost, text(name), bool(ad), a, a.type_names()))
        for vhost, source, kind, dest, rk, args in db.execute("SELECT * FROM bindings"):
            r.bindings.append(BindingDef(vhost, text(source), kind, text(dest), text(rk),
                                         table_from(args)))
        r.policies = [(v, n, bool(op), doc) for v, n, op, doc in
                      db.execute("SELECT * FROM policies ORDER BY vhost, name")]
        now = time.time()
        for vhost, queue, seq, exchange, rk, props, body, cc, bcc, expires_at in db.execute(
                "SELECT * FROM messages ORDER BY vhost, queue, seq"):
            msg = Message(text(exchange), text(rk), bytes(props), bytes(body),
                          tuple(json.loads(cc)) if cc else (),
                          tuple(json.loads(bcc)) if bcc else ())
            ttl = None if expires_at is None else max(0, int((expires_at - now) * 1000))
            r.messages.setdefault((vhost, text(queue)), []).append(StoredMessage(seq, msg, ttl))
        return r

    def close(self) -> None:
        try:
            if self._batch or self._failed:
                self.sync_blocking()
            if self._reader is not None:
                self._reader.close()
            self.db.close()
        finally:
            if self.lock is not None:
                self.lock.release()
