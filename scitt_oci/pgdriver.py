"""The PostgreSQL driver (psycopg), an optional extra: `pip install 'scitt-oci[postgres]'`.

Imported only when storage.backend is postgres (the log store and the inbox ask for it when they
open), so the CLI, the verifier and an SQLite deployment never load it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

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
