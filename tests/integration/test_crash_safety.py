"""Crash safety: SIGKILL the server mid-batch under concurrent registrations, several times.

After each restart: every statement acknowledged with 201 or 202 has a valid receipt, no entry is
stored twice, and every stored tree head is consistent with every earlier one.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import requests

from scitt_oci.cose import keys
from scitt_oci.scitt import merkle, receipt, statement
from scitt_oci.scitt.receipt import read_checkpoint
from scitt_oci.scrapi.client import ScrapiClient
from tests.serverproc import ServerProcess


def _load(
    srv: ServerProcess, issuer: keys.CoseKey, prefix: str, acked: dict[bytes, bytes], stop: threading.Event
) -> None:
    session = requests.Session()
    n = 0
    while not stop.is_set():
        n += 1
        # every fifth statement repeats an earlier one: registrations of the same statement race
        label = f"{prefix}-{n - 1 if n % 5 == 0 else n}"
        body = statement.hash_envelope_statement(
            issuer, issuer="https://w", subject=f"urn:{label}", digest=hashlib.sha256(label.encode()).digest(), iat=1
        ).encode()
        try:
            r = session.post(srv.url + "/entries", data=body, headers={"Content-Type": "application/cose"}, timeout=5)
        except requests.RequestException:
            continue  # the server was killed: this one was never acknowledged
        if r.status_code in (201, 202):
            acked[statement.parse(body).entry()] = body


def _check_log(db: Path, ts_key: keys.CoseKey) -> list[tuple[int, bytes]]:
    """Recompute every stored head from the stored entries; returns [(size, root)]."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        entries = [bytes(e) for (e,) in conn.execute("SELECT entry FROM entries ORDER BY idx")]
        indexes = [i for (i,) in conn.execute("SELECT idx FROM entries ORDER BY idx")]
        heads = [
            (int(s), bytes(r), bytes(p), bytes(sig))
            for s, r, p, sig in conn.execute(
                "SELECT tree_size, root, protected, signature FROM heads ORDER BY tree_size"
            )
        ]
    finally:
        conn.close()
    assert indexes == list(range(len(entries))), "leaf indexes have gaps"
    assert len({hashlib.sha256(e).digest() for e in entries}) == len(entries), "an entry is stored twice"
    leaves = [merkle.leaf_hash(e) for e in entries]
    out = []
    for size, root, protected, signature in heads:
        assert merkle.root_of(leaves[:size]) == root, f"head {size} does not match its entries"
        receipt.verify_tree_head(receipt.SignedTreeHead(protected, signature, size, root), ts_key)
        out.append((size, root))
    assert not heads or heads[-1][0] == len(entries), "entries stored beyond the last signed head"
    return out


@pytest.mark.parametrize(
    ("max_delay_ms", "workers"),
    [("20", "1"), ("400", "1"), ("20", "2")],  # integrate at once; accept first, integrate later; two writer processes
)
def test_sigkill_mid_batch_loses_and_duplicates_nothing(tmp_path: Path, max_delay_ms: str, workers: str) -> None:
    data = tmp_path / "data"
    env = {
        "SCITT_OCI_BATCH__MAX_DELAY_MS": max_delay_ms,
        "SCITT_OCI_BATCH__MAX_SIZE": "64",
        "SCITT_OCI_REGISTRATION__WAIT_SECONDS": "0.2",
        "SCITT_OCI_WORKERS": workers,
    }
    srv = ServerProcess(data, env=env).start()
    issuer = keys.load_private_pem((data / "keys" / "issuer.pem").read_bytes())
    ts_key = ScrapiClient(srv.url).keys()[0]
    acked: dict[bytes, bytes] = {}
    seen_heads: list[tuple[int, bytes]] = []
    for round_ in range(3):
        stop = threading.Event()
        threads = [threading.Thread(target=_load, args=(srv, issuer, f"r{round_}w{w}", acked, stop)) for w in range(6)]
        for t in threads:
            t.start()
        target = len(acked) + 150
        deadline = time.monotonic() + 30
        while len(acked) < target and time.monotonic() < deadline:
            time.sleep(0.01)  # load generation pace, not synchronisation
        srv.kill()  # SIGKILL, mid-batch under load
        stop.set()
        for t in threads:
            t.join()
        srv = ServerProcess(data, env=env, port=srv.port).start()
        client = ScrapiClient(srv.url, max_wait=30)
        for entry, body in acked.items():
            got = client.wait_for(f"/entries/{hashlib.sha256(entry).hexdigest()}")
            receipt.verify_receipt(got, statement.parse(body), [ts_key])
        heads = _check_log(data / "log.db", ts_key)
        # Every head seen before the crash is still there, and the latest extends each of them.
        assert set(seen_heads) <= set(heads)
        latest_size, latest_root, _k = read_checkpoint(client.checkpoint(), [ts_key])
        for size, root in heads[:: max(1, len(heads) // 20)]:
            if size == latest_size:
                continue
            proof = client.consistency(size, latest_size)
            assert receipt.verify_consistency_receipt(proof, old_size=size, old_root=root, keys=[ts_key])[:2] == (
                latest_size,
                latest_root,
            )
        seen_heads = heads
    srv.stop()
    assert len(acked) >= 450
