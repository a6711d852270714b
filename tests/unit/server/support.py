"""Builders for the in-process server tests: a real TransparencyService over SQLite in a temporary
directory, the statements it accepts, and a Starlette TestClient over `create_app`."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from scitt_oci.log.policy import RegistrationPolicy
from scitt_oci.log.service import TransparencyService
from scitt_oci.log.sqlite_store import SqliteStore
from scitt_oci.scitt import statement
from scitt_oci.server.app import Metrics, Settings, create_app
from tests.helpers import key

ISSUER = "https://wabbit-networks.example"
TS_KEY = key(slot=20)
ISSUER_SLOT = 21
ISSUER_KEY = key(slot=ISSUER_SLOT)


@functools.cache
def statement_bytes(n: int, slot: int = ISSUER_SLOT) -> bytes:
    """A distinct Signed Statement per `n`, by the trusted issuer unless told otherwise; made once (ECDSA
    signatures differ on every signing, and so would the entry); `slot` picks the signing key."""
    digest = hashlib.sha256(f"image {n}".encode()).digest()
    subject = f"oci://registry.example/net-monitor@sha256:{digest.hex()}"
    return statement.hash_envelope_statement(key(slot=slot), issuer=ISSUER, subject=subject, digest=digest).encode()


def make_service(tmp_path: Path, *, metrics: Metrics | None = None, **kw: Any) -> TransparencyService:
    """A service over a fresh SQLite log that trusts ISSUER_KEY; `kw` goes to TransparencyService."""
    store = SqliteStore(tmp_path / "log.db", synchronous="NORMAL")
    policy = RegistrationPolicy.build(issuer_keys=[ISSUER_KEY])
    observer = metrics.observe_batch if metrics else None
    return TransparencyService(store, TS_KEY, policy, identity="https://ts.example", observer=observer, **kw)


@contextmanager
def running(service: TransparencyService) -> Iterator[TransparencyService]:
    service.start()
    try:
        yield service
    finally:
        service.stop()
        service.store.close()


@contextmanager
def client(service: TransparencyService, settings: Settings | None = None, **kw: Any) -> Iterator[TestClient]:
    """A TestClient over create_app(service, ...); server errors come back as answers, not exceptions."""
    app = create_app(service, settings or Settings(), **kw)
    with TestClient(app, raise_server_exceptions=False) as http:
        yield http
