"""The SQLite store's bindings: every put and delete is one search of the primary key,
files made with the earlier (rowid) bindings table still work, and a vhost that deletes
bound queues and exchanges leaves no binding behind after recovery (on both stores)."""
from __future__ import annotations

import sqlite3

import anyio
import pytest

from amqpbroker.store import MemoryStore
from amqpbroker.store.base import BindingDef
from amqpbroker.store.sqlite import SQL, SQLiteStore
from amqpbroker.vhost import VirtualHost

OLD_BINDINGS = """CREATE TABLE bindings (
    vhost TEXT NOT NULL, source TEXT NOT NULL, dest_kind TEXT NOT NULL,
    destination TEXT NOT NULL, routing_key TEXT NOT NULL, arguments BLOB NOT NULL,
    PRIMARY KEY (vhost, source, dest_kind, destination, routing_key, arguments));"""


def plan(db, sql: str) -> str:
    return " ".join(str(row[-1]) for row in
                    db.execute("EXPLAIN QUERY PLAN " + sql, ("x",) * sql.count("?")))


def test_binding_put_and_delete_search_the_primary_key(tmp_path):
    store = SQLiteStore(str(tmp_path))
    p = plan(store.db, SQL["b-"])
    assert "SEARCH bindings USING PRIMARY KEY" in p, p
    assert "SCAN" not in plan(store.db, SQL["b+"])
    store.close()


def test_a_file_with_the_rowid_bindings_table_still_works(tmp_path):
    db = sqlite3.connect(str(tmp_path / "amqpbroker.sqlite3"))
    db.executescript(OLD_BINDINGS)
    db.close()
    store = SQLiteStore(str(tmp_path))
    p = plan(store.db, SQL["b-"])
    assert "SEARCH bindings USING INDEX" in p, p   # its unique index: still a search
    defs = [BindingDef("/", "x", "queue", f"q{i}", "k", {"a": i} if i % 2 else {})
            for i in range(6)]
    for d in defs:
        store.put_binding(d)
    store.sync_blocking()
    for d in defs[:3]:
        store.delete_binding(d)
    store.sync_blocking()
    assert sorted(b.destination for b in store.recover().bindings) == ["q3", "q4", "q5"]
    store.close()


def _sync(store) -> None:
    anyio.run(store.sync)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_deleting_bound_queues_and_exchanges_leaves_no_binding(kind, tmp_path):
    store = MemoryStore() if kind == "memory" else SQLiteStore(str(tmp_path))
    vh = VirtualHost("/", store=store)
    vh.declare_exchange("t", "topic", False, True, False, False, {})
    vh.declare_exchange("d", "fanout", False, True, False, False, {})
    queues = [vh.declare_queue(f"q{i}", False, True, False, False, {}, None)
              for i in range(20)]
    for i, q in enumerate(queues):
        vh.bind("amq.direct", q, f"k{i}", {})
        vh.bind("t", q, f"a.{i}.#", {})
        vh.bind("amq.headers", q, "", {"x-match": "any", "n": i})
    vh.bind("t", vh.exchanges["d"], "#", {})
    vh.bind("d", queues[0], "", {})
    _sync(store)
    assert len(store.recover().bindings) == 20 * 3 + 2
    for q in queues[:10]:
        vh.delete_queue(q)
    vh.delete_exchange("d", False)   # one binding from it, one to it
    _sync(store)
    left = store.recover().bindings
    assert sorted((b.source, b.destination) for b in left) == sorted(
        [("amq.direct", f"q{i}") for i in range(10, 20)] +
        [("t", f"q{i}") for i in range(10, 20)] +
        [("amq.headers", f"q{i}") for i in range(10, 20)])
    store.close()
