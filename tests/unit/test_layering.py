"""The layering of docs/adr/0006-layers-services-and-faces.md, checked on the package's imports.

Imports go downward only: formats import no I/O and no domain service, domain services import no face,
the verifier never imports the log, one module owns outbound HTTP, and only the composition root and the
command line assemble the server. Imports under `if TYPE_CHECKING:` are annotations, not dependencies.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "scitt_oci"

FORMATS = ("cose", "scitt", "tlog", "signatures", "oci.reference", "oci.manifest", "watch.events", "verify.admission")
DOMAIN = ("log", "watch", "verify", "oci", "scrapi", "promote", "replication")
FACES = ("server", "cli", "runtime", "__main__")
WEB_AND_CLI = ("starlette", "uvicorn", "click", "prometheus_client.exposition")
IO = ("sqlite3", "psycopg", "urllib3", "http.client", "socket", "scitt_oci.transport", "scitt_oci.oci.http")
HTTP_LIBRARIES = ("urllib3", "http.client", "requests", "httpx", "aiohttp", "urllib.request")
HTTP_OWNERS = ("transport", "oci.http")  # oci/http.py re-exports the transport for the registry client


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(tree: ast.Module) -> Iterator[str]:
    """Every module imported outside `if TYPE_CHECKING:` blocks, absolute or resolved from the package."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _imports() -> dict[str, set[str]]:
    return {_module(p): set(_runtime_imports(ast.parse(p.read_text()))) for p in PACKAGE.rglob("*.py")}


IMPORTS = _imports()


def _in(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _offending(modules: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{module} imports {name}"
        for module, names in IMPORTS.items()
        if _in(module, modules)
        for name in names
        if _in(name, forbidden)
    )


def test_the_package_is_read() -> None:
    assert len(IMPORTS) > 100
    assert "scitt_oci.errors" in IMPORTS["log.service"]


def test_formats_import_no_io_no_domain_service_and_no_face() -> None:
    domain = tuple(f"scitt_oci.{p}" for p in ("log", "watch.worker", "watch.inbox", "scrapi", "promote", "replication"))
    faces = tuple(f"scitt_oci.{p}" for p in FACES)
    formats = tuple(f for f in FORMATS if f != "signatures")  # signature verification may read configured trust
    assert _offending(formats, IO + WEB_AND_CLI + domain + faces) == []
    assert _offending(("signatures",), WEB_AND_CLI + faces + ("sqlite3", "psycopg", "scitt_oci.log")) == []


def test_domain_services_import_no_face() -> None:
    faces = tuple(f"scitt_oci.{p}" for p in FACES)
    assert _offending(DOMAIN, faces + WEB_AND_CLI) == []


def test_the_verifier_never_imports_the_log() -> None:
    assert _offending(("verify",), ("scitt_oci.log",)) == []


@pytest.mark.parametrize("library", HTTP_LIBRARIES)
def test_one_module_owns_outbound_http(library: str) -> None:
    users = sorted(module for module, names in IMPORTS.items() if any(_in(n, (library,)) for n in names))
    assert [u for u in users if not _in(u, HTTP_OWNERS)] == []


def test_only_the_composition_root_and_the_command_line_assemble_the_server() -> None:
    users = {m for m, names in IMPORTS.items() if any(_in(n, ("scitt_oci.server",)) for n in names)}
    assert {m for m in users if not _in(m, ("server", "runtime", "cli"))} == set()
    root_users = {m for m, names in IMPORTS.items() if any(_in(n, ("scitt_oci.runtime",)) for n in names)}
    assert {m for m in root_users if not _in(m, ("runtime", "cli", "__main__"))} == set()
