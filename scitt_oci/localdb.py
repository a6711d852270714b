"""Small SQLite databases of our own (a mirror, a witness): private files, one connection per thread."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from scitt_oci.keyfiles import private_database


def open_private(path: Path) -> threading.local:
    """Create (0600) or tighten the database at `path`; the per-thread connections hang off the result."""
    private_database(path)
    return threading.local()


def connection(local: threading.local, path: Path) -> sqlite3.Connection:
    """This thread's connection to `path`: autocommit (transactions are explicit), WAL, synchronous FULL."""
    conn: sqlite3.Connection | None = getattr(local, "conn", None)
    if conn is None:
        conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        local.conn = conn
    return conn
