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


# Every table scitt-oci makes in its schema: the log's and the watcher's inbox's.
TABLES = frozenset({"meta", "entries", "tiles", "heads", "pending", "events", "deliveries", "transitions", "recorded"})


def foreign_tables(conn: Any, schema: str) -> list[str]:
    """The tables of `schema` that are not scitt-oci's: a schema another tool owns, where nothing of
    ours is made (checked before anything is created)."""
    rows = conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY table_name", (schema,)
    ).fetchall()
    return [name for (name,) in rows if name not in TABLES]


def refusal(schema: str, foreign: list[str]) -> str:
    shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
    return (
        f"PostgreSQL schema {schema} holds tables that are not scitt-oci's ({shown}): give scitt-oci a schema "
        "of its own (storage.postgres_schema)"
    )
