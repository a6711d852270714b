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


def connect(psycopg: ModuleType, dsn: str) -> Any:
    """An autocommit connection to `dsn` (key=value or a URI), with DEFAULTS for what it leaves unset."""
    given = psycopg.conninfo.conninfo_to_dict(dsn)
    return psycopg.connect(psycopg.conninfo.make_conninfo("", **{**DEFAULTS, **given}), autocommit=True)


# Every table scitt-oci makes in its schema (the log's and the watcher's inbox's), with its columns.
_COLUMNS = {
    "meta": "key value",
    "entries": "idx id_prefix entry",
    "tiles": "level idx hashes",
    "heads": "tree_size root protected signature created",
    "pending": "seq id entry received",
    "events": "id registry key event state attempts next_at last_error statement lease_until lease_owner created updated",
    "deliveries": "registry delivery content event_id",
    "transitions": "registry manifest action event_id",
    "recorded": "registry repository subject kind recorded media_type size referrer created confirmed",
}
COLUMNS = {table: tuple(names.split()) for table, names in _COLUMNS.items()}
TABLES = frozenset(COLUMNS)


def foreign_tables(conn: Any, schema: str) -> list[str]:
    """The tables of `schema` that are not scitt-oci's: other names, and tables named as ours that lack
    our columns (checked before anything is created, so nothing of ours is made in a schema another tool
    owns, and no table of ours is taken for another's)."""
    rows = conn.execute(
        "SELECT c.relname, a.attname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f') ORDER BY c.relname",
        (schema,),
    ).fetchall()
    columns: dict[str, set[str]] = {}
    for table, column in rows:
        columns.setdefault(table, set()).update([column] if column else [])
    foreign = []
    for table, have in columns.items():
        if table not in COLUMNS:
            foreign.append(table)
        elif missing := [c for c in COLUMNS[table] if c not in have]:
            shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
            foreign.append(f"{table} (without {shown})")
    return foreign


def refusal(schema: str, foreign: list[str]) -> str:
    shown = "; ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
    return (
        f"PostgreSQL schema {schema} holds tables that are not scitt-oci's ({shown}): give scitt-oci a schema "
        "of its own (storage.postgres_schema)"
    )
