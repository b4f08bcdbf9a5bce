"""Opening the SQLite store, checked: every way it can fail at start is a ``StoreError``
of one line naming the path, never a traceback.

``prepare(directory)`` makes sure the data directory exists, is a directory and is
writable, and returns the database file's path; ``connect(path, schema, setup)`` opens it
(WAL, synchronous=FULL), runs ``PRAGMA quick_check``, lets ``setup`` create or migrate the
schema and checks that every table the schema declares has the schema's columns; ``DirectoryLock`` keeps a second broker off the same
directory.
"""
from __future__ import annotations

import fcntl
import os
import sqlite3

from .base import StoreError

FILE = "amqpbroker.sqlite3"
LOCK = "amqpbroker.lock"


def prepare(directory: str) -> str:
    if os.path.lexists(directory) and not os.path.isdir(directory):
        raise StoreError(f"{directory} is not a directory")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise StoreError(f"cannot create the data directory {directory}: {e.strerror}") \
            from None
    probe = os.path.join(directory, f".amqpbroker-probe-{os.getpid()}")
    try:  # os.access() says yes to root even on a read-only file system
        os.close(os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600))
        os.unlink(probe)
    except OSError as e:
        raise StoreError(f"the data directory {directory} is not writable: {e.strerror}") \
            from None
    path = os.path.join(directory, FILE)
    if os.path.isdir(path):
        raise StoreError(f"{path} is a directory, expected the SQLite file")
    if os.path.exists(path):
        try:
            with open(path, "r+b"):
                pass
        except OSError as e:
            raise StoreError(f"cannot open {path} for writing: {e.strerror}") from None
    return path


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


def check_columns(db: sqlite3.Connection, path: str, schema: str) -> None:
    """Every table of ``schema`` has exactly the schema's columns (a file of another
    program, or of an incompatible version, is refused before recovery reads it)."""
    want = sqlite3.connect(":memory:")
    try:
        want.executescript(schema)
        tables = [r[0] for r in want.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        for table in tables:
            expected, found = _columns(want, table), _columns(db, table)
            if found != expected:
                raise StoreError(f"{path}: table {table} has the columns "
                                 f"({', '.join(found)}), expected ({', '.join(expected)})")
    finally:
        want.close()


def connect(path: str, schema: str, setup) -> sqlite3.Connection:
    """``setup(db)`` creates the schema or migrates an older one."""
    try:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    except sqlite3.Error as e:
        raise StoreError(f"cannot open {path}: {e}") from None
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        problems = db.execute("PRAGMA quick_check(1)").fetchall()
        if problems != [("ok",)]:
            raise StoreError(f"{path} is corrupt (SQLite's quick_check: "
                             f"{' '.join(str(problems[0][0]).split())})")
        setup(db)
        check_columns(db, path, schema)
    except sqlite3.DatabaseError as e:
        db.close()
        raise StoreError(f"{path} is not a usable SQLite database ({e})") from None
    except BaseException:
        db.close()
        raise
    return db


class DirectoryLock:
    """An exclusive flock on ``DIR/amqpbroker.lock`` (holding our pid), released by
    ``release()`` or when the process ends, even by SIGKILL."""

    def __init__(self, directory: str):
        self.path = os.path.join(directory, LOCK)
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StoreError(f"cannot open {self.path}: {e.strerror}") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                pid = os.pread(self.fd, 32, 0).decode("ascii", "replace").strip()
            except OSError:
                pid = ""
            os.close(self.fd)
            raise StoreError(f"the data directory {directory} is in use by another "
                             f"amqpbroker{f' (pid {pid})' if pid else ''}") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None
