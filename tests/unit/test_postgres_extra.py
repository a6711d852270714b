"""The PostgreSQL driver is an extra (`scitt-oci[postgres]`): loaded only when storage.backend is postgres,
and named when it is missing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from scitt_oci import pgdriver
from scitt_oci.errors import UnsupportedError
from scitt_oci.log.postgres_store import PostgresStore
from scitt_oci.watch.inbox import PostgresInbox

EVERY_MODULE = """
import importlib, pkgutil, sys
import scitt_oci
names = [m.name for m in pkgutil.walk_packages(scitt_oci.__path__, "scitt_oci.") if m.name != "scitt_oci.__main__"]
for name in names:
    importlib.import_module(name)
loaded = sorted(m for m in sys.modules if m == "psycopg" or m.startswith("psycopg."))
print(len(names), loaded)
"""


def test_no_module_of_the_package_imports_the_driver() -> None:
    out = subprocess.run([sys.executable, "-c", EVERY_MODULE], capture_output=True, text=True, check=True, timeout=120)
    count, loaded = out.stdout.split(" ", 1)
    assert int(count) > 80  # every module was imported: the CLI, the server, the log, the stores, the inbox
    assert loaded.strip() == "[]"


def test_a_postgres_backend_without_the_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # what `import psycopg` meets when it is not installed
    for open_it in (lambda: PostgresStore("host=127.0.0.1"), lambda: PostgresInbox("host=127.0.0.1")):
        with pytest.raises(UnsupportedError, match=r"pip install 'scitt-oci\[postgres\]'"):
            open_it()
    monkeypatch.undo()
    assert pgdriver.load().__name__ == "psycopg"  # installed with the test extra
