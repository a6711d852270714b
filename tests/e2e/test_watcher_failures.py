"""The watcher when things go wrong: the registry down, the service killed mid-processing."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path

import requests

from scitt_oci.oci import manifest as mf
from scitt_oci.oci.client import RegistryClient, RegistrySettings
from tests.registryproc import RegistryProcess, oci_layout, skopeo_push, watched_registry
from tests.serverproc import ServerProcess

SECRET = "failure-test-secret-0123456789"


def _attached(client: RegistryClient, repo: str, digest: str, want: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        n = len(client.referrers(repo, digest, mf.STATEMENT_ARTIFACT))
        if n >= want or time.monotonic() > deadline:
            return n
        time.sleep(0.1)  # polling an asynchronous outcome, bounded by the deadline


def test_registry_down_then_back_loses_nothing(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text(SECRET)
    registry = RegistryProcess(tmp_path / "registry").start()
    digest = oci_layout(tmp_path / "img", "down")
    skopeo_push(tmp_path / "img", registry, "app")
    registry.stop()
    server = ServerProcess(
        tmp_path / "data",
        args=["--registry", registry.host, "--registry-insecure", "--webhook-secret-file", str(tmp_path / "secret")],
        env={"SCITT_OCI_WATCH__MAX_ATTEMPTS": "30"},
    ).start()
    try:
        r = requests.post(
            server.url + "/webhooks/generic",
            json={"repository": "app", "digest": digest, "tag": "v1"},
            headers={"Authorization": f"Bearer {SECRET}"},
            timeout=5,
        )
        assert r.status_code == 202 and r.json() == {"received": 1, "queued": 1}
        db = sqlite3.connect(f"file:{server.data_dir / 'watch.db'}?mode=ro", uri=True)
        deadline = time.monotonic() + 30
        while db.execute("SELECT attempts FROM events").fetchone()[0] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # waiting for the failed attempts we want to see
        state, attempts, error = db.execute("SELECT state, attempts, last_error FROM events").fetchone()
        assert state == "pending" and attempts >= 2 and "Transient" in error
        registry = RegistryProcess(registry.root, port=registry.port).start()
        client = RegistryClient(RegistrySettings.for_url(registry.url))
        assert _attached(client, "app", digest, 1, 60) == 1
        deadline = time.monotonic() + 10  # the event is marked done just after the referrer is pushed
        while db.execute("SELECT state FROM events").fetchone()[0] != "done" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert db.execute("SELECT state FROM events").fetchone()[0] == "done"
    finally:
        server.stop()
        registry.stop()


def test_sigkill_mid_processing_completes_every_event_exactly_once(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", env={"SCITT_OCI_WATCH__LEASE_SECONDS": "2"})
    registry = watched_registry(tmp_path, server, SECRET)
    server.start()
    digests = []
    try:
        for i in range(6):
            digests.append(oci_layout(tmp_path / f"img{i}", f"kill{i}"))
            skopeo_push(tmp_path / f"img{i}", registry, f"app{i}")
        server.kill()  # SIGKILL while the events are being processed
        server = ServerProcess(server.data_dir, args=server.args, env=server.env, port=server.port).start()
        client = RegistryClient(RegistrySettings.for_url(registry.url))
        for i, digest in enumerate(digests):
            assert _attached(client, f"app{i}", digest, 1, 60) == 1
        deadline = time.monotonic() + 30
        db = sqlite3.connect(f"file:{server.data_dir / 'watch.db'}?mode=ro", uri=True)
        while (
            db.execute("SELECT COUNT(*) FROM events WHERE state != 'done'").fetchone()[0]
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        assert db.execute("SELECT COUNT(*) FROM events WHERE state != 'done'").fetchone()[0] == 0
        for i, digest in enumerate(digests):  # exactly one referrer each, in the fallback index too
            index = client.manifest(f"app{i}", mf.fallback_tag(digest))
            assert index is not None
            assert len(json.loads(index[0])["manifests"]) == 1
        log = sqlite3.connect(f"file:{server.data_dir / 'log.db'}?mode=ro", uri=True)
        entries = [bytes(e) for (e,) in log.execute("SELECT entry FROM entries")]
        assert len(entries) == len({hashlib.sha256(e).digest() for e in entries}) == len(digests)
    finally:
        server.stop()
        registry.stop()
