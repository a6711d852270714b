"""Two `scitt-oci serve` replicas on one PostgreSQL log: registrations through either, one consistent log."""

from __future__ import annotations

import concurrent.futures
import hashlib
import uuid
from pathlib import Path

import psycopg

from scitt_oci.cose import algorithms, keys
from scitt_oci.scitt import receipt, statement
from scitt_oci.scitt.receipt import read_checkpoint
from scitt_oci.scrapi.client import ScrapiClient
from tests.serverproc import ServerProcess
from tests.unit.log.test_postgres_store import DSN


def test_two_replicas_share_one_log(tmp_path: Path) -> None:
    schema = "t_" + uuid.uuid4().hex[:12]
    issuer = keys.generate(algorithms.by_name("ES256"))
    ts_key = keys.generate(algorithms.by_name("ES256"))
    (tmp_path / "ts.pem").write_bytes(ts_key.private_pem())
    (tmp_path / "ts.pem").chmod(0o600)
    (tmp_path / "issuer.pub").write_bytes(issuer.public_pem())
    env = {
        "SCITT_OCI_STORAGE__BACKEND": "postgres",
        "SCITT_OCI_STORAGE__POSTGRES_DSN": DSN,
        "SCITT_OCI_STORAGE__POSTGRES_SCHEMA": schema,
        "SCITT_OCI_TS_KEY": str(tmp_path / "ts.pem"),
        "SCITT_OCI_IDENTITY": "https://ts.example",
    }
    replicas = [
        ServerProcess(tmp_path / f"r{i}", args=["--issuer-key", str(tmp_path / "issuer.pub")], env=env).start()
        for i in range(2)
    ]
    try:
        bodies = [
            statement.hash_envelope_statement(
                issuer, issuer="https://w", subject=f"urn:{i}", digest=hashlib.sha256(str(i).encode()).digest()
            ).encode()
            for i in range(40)
        ]

        def register(i: int) -> bytes:
            return ScrapiClient(replicas[i % 2].url).register(bodies[i]).receipt

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            receipts = list(pool.map(register, range(40)))
        for body, r in zip(bodies, receipts, strict=True):
            receipt.verify_receipt(r, statement.parse(body), [ts_key])
        # The same statement through the other replica: the same receipt.
        assert ScrapiClient(replicas[1].url).register(bodies[0]).receipt == receipts[0]
        sizes = {read_checkpoint(ScrapiClient(r.url).checkpoint(), [ts_key])[0] for r in replicas}
        assert sizes == {40}
    finally:
        for replica in replicas:
            replica.stop()
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
