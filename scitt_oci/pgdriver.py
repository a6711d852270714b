"""The PostgreSQL driver (psycopg), an optional extra: `pip install 'scitt-oci[postgres]'`.

Imported only when storage.backend is postgres (the log store and the inbox ask for it when they
open), so the CLI, the verifier and an SQLite deployment never load it.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from scitt_oci.errors import UnsupportedError

EXTRA = "scitt-oci[postgres]"


def load() -> ModuleType:
    """The psycopg module; UnsupportedError naming the extra when it is not installed."""
    try:
        return importlib.import_module("psycopg")
    except ImportError as exc:
        raise UnsupportedError(
            f"storage.backend postgres needs the PostgreSQL driver, which is not installed ({exc}): "
            f"pip install '{EXTRA}' (the container image has it)"
        ) from None


# Connection settings a DSN does not set itself: a server that stops answering (a partition, a host gone)
# is noticed in about a minute, not the system's default two hours, and the connection made again.
DEFAULTS = {
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
    "tcp_user_timeout": "30000",  # ms: sent data unacknowledged this long ends the connection
}


def summary(exc: BaseException) -> str:
    """A driver error for a message: its class and first line, which names the server and never the
    DSN (which may hold a password)."""
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"


def connect(psycopg: ModuleType, dsn: str) -> Any:
    """An autocommit connection to `dsn` (key=value or a URI), with DEFAULTS for what it leaves unset."""
    given = psycopg.conninfo.conninfo_to_dict(dsn)
    return psycopg.connect(psycopg.conninfo.make_conninfo("", **{**DEFAULTS, **given}), autocommit=True)


# Every table scitt-oci makes in its schema (the log's and the watcher's inbox's): its columns and their
# types as PostgreSQL names them (int8: BIGINT and BIGSERIAL, int4: INTEGER, float8: DOUBLE PRECISION).
_COLUMNS = {
    "meta": "key text, value int8",
    "entries": "idx int8, id_prefix int4, entry bytea",
    "tiles": "level int4, idx int8, hashes bytea",
    "heads": "tree_size int8, root bytea, protected bytea, signature bytea, created float8",
    "pending": "seq int8, id bytea, entry bytea, received float8",
    "events": "id int8, registry text, key text, event text, state text, attempts int4, next_at float8, "
    "last_error text, statement bytea, lease_until float8, lease_owner text, created float8, updated float8",
    "deliveries": "registry text, delivery text, content text, event_id int8",
    "transitions": "registry text, manifest text, action text, event_id int8",
    "recorded": "registry text, repository text, subject text, kind text, recorded text, media_type text, "
    "size int8, referrer text, created float8, confirmed float8",
}
COLUMNS = {
    table: tuple((c.split()[0], c.split()[1]) for c in columns.split(", ")) for table, columns in _COLUMNS.items()
}
TABLES = frozenset(COLUMNS)


def foreign_tables(conn: Any, schema: str) -> list[str]:
    """The tables of `schema` that are not scitt-oci's: other names, and tables named as ours with other
    columns or column types (checked before anything is created, so nothing of ours is made in a schema
    another tool owns, and no table of another is taken for ours)."""
    rows = conn.execute(
        "SELECT c.relname, a.attname, t.typname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
        "LEFT JOIN pg_type t ON t.oid = a.atttypid "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f') ORDER BY c.relname, a.attnum",
        (schema,),
    ).fetchall()
    columns: dict[str, dict[str, str]] = {}
    for table, column, kind in rows:
        columns.setdefault(table, {}).update({column: kind} if column else {})
    foreign = []
    for table, have in columns.items():
        if table not in COLUMNS:
            foreign.append(table)
            continue
        want = dict(COLUMNS[table])
        differ = [
            f"no {c}" if c not in have else f"{c} is {have[c]}, not {want[c]}" for c in want if have.get(c) != want[c]
        ] + [f"column {c} is not ours" for c in have if c not in want]
        if differ:
            shown = ", ".join(differ[:3]) + (", ..." if len(differ) > 3 else "")
            foreign.append(f"{table} ({shown})")
    return foreign


def refusal(schema: str, foreign: list[str]) -> str:
    shown = "; ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
    return (
        f"PostgreSQL schema {schema} holds tables that are not scitt-oci's ({shown}): give scitt-oci a schema "
        "of its own (storage.postgres_schema)"
    )
