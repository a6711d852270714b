"""The SQLite log store: WAL mode, one writer at a time (SQLite's write lock), a read connection per thread."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from scitt_oci import keyfiles
from scitt_oci.log.sql_store import SCHEMA_VERSION, SqlStore, StoreError

__all__ = ["SqliteStore", "StoreError"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entries (idx INTEGER PRIMARY KEY, id_prefix INTEGER NOT NULL, entry BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS entries_by_id ON entries (id_prefix);
CREATE TABLE IF NOT EXISTS tiles (level INTEGER NOT NULL, idx INTEGER NOT NULL, hashes BLOB NOT NULL,
                                  PRIMARY KEY (level, idx)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS heads (tree_size INTEGER PRIMARY KEY, root BLOB NOT NULL, protected BLOB NOT NULL,
                                  signature BLOB NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS pending (seq INTEGER PRIMARY KEY AUTOINCREMENT, id BLOB NOT NULL UNIQUE,
                                    entry BLOB NOT NULL, received REAL NOT NULL);
"""


class SqliteStore(SqlStore):
    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        super().__init__()
        self.path = path
        self._synchronous = synchronous
        try:
            keyfiles.private_database(path)
        except OSError as exc:
            raise StoreError(f"cannot create the log database {path}: {exc.strerror}") from None
        try:
            conn = self._connect(read_only=False)
            with conn:
                conn.executescript(_SCHEMA)
                row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
                if row is None:
                    conn.execute("INSERT INTO meta (key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,))
                elif row[0] != SCHEMA_VERSION:
                    raise StoreError(f"{path} has log schema {row[0]}; this version reads {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open the log database {path}: {exc}") from None
        self._writer = conn

    def _connect(self, *, read_only: bool) -> Any:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA busy_timeout=30000")
        if read_only:
            conn.execute("PRAGMA query_only=1")
        return conn

    def _begin(self, conn: Any) -> None:
        conn.execute("BEGIN IMMEDIATE")

    def _rollback(self, conn: Any) -> None:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
