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
            body = statement.hash_envelope_statement(issuer, issuer="https://w", subject=f"urn:{i}",
                                                     digest=hashlib.sha256(str(i).encode()).digest()).encode()
            r = requests.post(srv.url + "/entries", data=body, headers={"Content-Type": "application/cose", "Connection": "close"},
                              timeout=10)
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
