"""`serve --workers 2`: metrics count every worker's registrations, whichever worker answers the scrape."""

from __future__ import annotations

import concurrent.futures
import hashlib
import re
from pathlib import Path

import requests

from scitt_oci.cose import keys
from scitt_oci.scitt import statement
from tests.serverproc import ServerProcess


def test_metrics_sum_over_workers(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data", args=["--workers", "2"]).start()
    try:
        issuer = keys.load_private_pem((srv.data_dir / "keys" / "issuer.pem").read_bytes())

        def register(i: int) -> int:
            body = statement.hash_envelope_statement(
                issuer, issuer="https://w", subject=f"urn:{i}", digest=hashlib.sha256(str(i).encode()).digest()
            ).encode()
            r = requests.post(
                srv.url + "/entries",
                data=body,
                headers={"Content-Type": "application/cose", "Connection": "close"},
                timeout=10,
            )
            return r.status_code

        # Many connections at once, so that both workers take some.
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            assert set(pool.map(register, range(30))) == {201}
        for _ in range(10):
            text = requests.get(srv.url + "/metrics", headers={"Connection": "close"}, timeout=5).text
            count = re.search(r'^scitt_registrations_total\{outcome="201"\} (\S+)$', text, re.M)
            assert count is not None and float(count.group(1)) == 30.0, text[:2000]
            size = re.search(r"^scitt_tree_size (\S+)$", text, re.M)
            assert size is not None and float(size.group(1)) == 30.0
    finally:
        srv.stop()


def test_workers_with_postgresql_get_the_real_dsn_and_never_print_it(tmp_path: Path) -> None:
    import uuid

    import psycopg

    from tests.unit.log.test_postgres_store import DSN

    schema = "t_" + uuid.uuid4().hex[:12]
    env = {
        "SCITT_OCI_STORAGE__BACKEND": "postgres",
        "SCITT_OCI_STORAGE__POSTGRES_DSN": DSN,
        "SCITT_OCI_STORAGE__POSTGRES_SCHEMA": schema,
    }
    srv = ServerProcess(tmp_path / "data", args=["--workers", "2"], env=env).start()
    try:
        issuer = keys.load_private_pem((srv.data_dir / "keys" / "issuer.pem").read_bytes())
        codes = []
        for i in range(6):
            body = statement.hash_envelope_statement(
                issuer, issuer="https://w", subject=f"urn:{i}", digest=hashlib.sha256(str(i).encode()).digest()
            ).encode()
            codes.append(
                requests.post(
                    srv.url + "/entries",
                    data=body,
                    timeout=10,
                    headers={"Content-Type": "application/cose", "Connection": "close"},
                ).status_code
            )
        assert set(codes) == {201}, srv.output()[-2000:]
        with psycopg.connect(DSN) as conn:
            assert conn.execute(f"SELECT COUNT(*) FROM {schema}.entries").fetchone() == (6,)
    finally:
        srv.stop()
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    output = srv.output()
    assert "**********" not in output.replace("dsn: **********", "")  # no worker crashed on a masked DSN
    password = DSN.split("password=")[1].split()[0] if "password=" in DSN else None
    assert password is None or password not in output
