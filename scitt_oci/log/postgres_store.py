"""The PostgreSQL log store, for several replicas sharing one log.

Batches from any replica are serialised by a transaction-scoped advisory lock; each re-reads the
tree size, so every replica can run its own sequencer and the log stays one append-only sequence.
"""

from __future__ import annotations

import re
from typing import Any

from scitt_oci import pgdriver
from scitt_oci.errors import StoreUnavailable
from scitt_oci.log.sql_store import SCHEMA_VERSION, SqlStore, StoreError

_LOCK_KEY = 0x5C177_0C1  # pg_advisory_xact_lock key of the writer
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (idx BIGINT PRIMARY KEY, id_prefix INTEGER NOT NULL, entry BYTEA NOT NULL);
CREATE INDEX IF NOT EXISTS entries_by_id ON entries (id_prefix);
CREATE TABLE IF NOT EXISTS tiles (level INTEGER NOT NULL, idx BIGINT NOT NULL, hashes BYTEA NOT NULL, PRIMARY KEY (level, idx));
CREATE TABLE IF NOT EXISTS heads (tree_size BIGINT PRIMARY KEY, root BYTEA NOT NULL, protected BYTEA NOT NULL,
                                  signature BYTEA NOT NULL, created DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS pending (seq BIGSERIAL PRIMARY KEY, id BYTEA NOT NULL UNIQUE, entry BYTEA NOT NULL,
                                    received DOUBLE PRECISION NOT NULL);
"""


class PostgresStore(SqlStore):
    def __init__(self, dsn: str, *, schema: str = "scitt_oci") -> None:
        super().__init__()
        if not _SCHEMA_NAME.match(schema):
            raise StoreError(f"PostgreSQL schema name {schema!r} must be a lower-case identifier")
        psycopg = pgdriver.load()  # only deployments that use PostgreSQL need it (an extra)

        self._psycopg = psycopg
        self._dsn = dsn
        self._schema = schema
        try:
            conn = self._connect(read_only=False, create=True)
            conn.execute("BEGIN")
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            foreign = pgdriver.foreign_tables(conn, schema)
            if foreign:
                conn.close()  # nothing made: the transaction ends with the session
                raise StoreError(pgdriver.refusal(schema, foreign))
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta (key, value) VALUES ('schema', %s)", (SCHEMA_VERSION,))
            elif row[0] != SCHEMA_VERSION:
                raise StoreError(
                    f"PostgreSQL schema {schema} holds log schema {row[0]}; this version reads {SCHEMA_VERSION}"
                )
            conn.execute("COMMIT")
        except psycopg.Error as exc:
            # The DSN may hold a password: name the database, not the DSN.
            raise StoreError(f"cannot open the PostgreSQL log ({pgdriver.summary(exc)})") from None
        self._writer = conn

    @property
    def dsn(self) -> str:
        """The connection string (secret: never print it); the watcher's inbox shares the database."""
        return self._dsn

    def _lost(self, conn: Any) -> bool:
        return bool(conn.closed)

    def _unreachable(self, exc: Exception) -> StoreUnavailable | None:
        if not isinstance(exc, self._psycopg.OperationalError):
            return None
        return StoreUnavailable(f"the PostgreSQL log is out of reach ({pgdriver.summary(exc)})")

    def _connect(self, *, read_only: bool, create: bool = False) -> Any:
        conn = pgdriver.connect(self._psycopg, self._dsn)
        if create:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self._schema}")
        conn.execute(f"SET search_path TO {self._schema}")
        if read_only:
            conn.execute("SET default_transaction_read_only = on")
        return conn

    def _begin(self, conn: Any) -> None:
        # One round trip (no parameters: both statements go in one simple query); each batch pays it.
        conn.execute(f"BEGIN; SELECT pg_advisory_xact_lock({_LOCK_KEY:d})")

    def _sql(self, text: str) -> str:
        return text.replace("?", "%s")

    def _write(self, conn: Any, writes: Any) -> None:
        with conn.pipeline():  # sent together; an error surfaces when the pipeline ends (and rolls back)
            super()._write(conn, writes)

    def _many(self, conn: Any, sql: str, rows: Any) -> None:
        with conn.cursor() as cur:
            cur.executemany(self._sql(sql), rows)
