"""Concurrent writers to the tag-schema referrers index, end to end with Debian's Distribution 2.8
(which ignores If-Match): twelve signers write their referrers and update the index the way Notation
and ORAS do (read, append, write; with network-like delays in between) right next to an image push,
while the watcher records and attaches a statement for the image and for each signature."""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests

from scitt_oci.oci import manifest as mf
from scitt_oci.oci.client import RegistryClient, RegistrySettings
from scitt_oci.oci.manifest import Descriptor
from scitt_oci.scitt import profile, transparent
from tests.registryproc import RegistryProcess, oci_layout, skopeo_push, watched_registry
from tests.serverproc import ServerProcess

SECRET = "test-webhook-secret-0123456789"
REPO = "wabbit/raced"
SIGNERS = 12


def _sign_like_notation(
    registry: RegistryProcess, image: Descriptor, n: int, start: threading.Barrier, out: list[str]
) -> None:
    """Push a Notation signature manifest by digest, then read-modify-write the fallback index
    without any guard, as Notation (oras-go) does against a registry with no referrers API."""
    client = RegistryClient(RegistrySettings.for_url(registry.url))
    envelope = f"notation envelope {n}".encode()
    layer = client.push_blob(REPO, envelope)
    client.push_blob(REPO, mf.EMPTY_BLOB)
    annotations = {"io.cncf.notary.x509chain.thumbprint#S256": f'["{n:064x}"]'}
    doc = mf.canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": mf.OCI_MANIFEST,
            "artifactType": mf.NOTATION_SIGNATURE,
            "config": {"mediaType": mf.EMPTY_JSON, "digest": mf.EMPTY_DIGEST, "size": 2},
            "layers": [{"mediaType": "application/jose+json", "digest": layer, "size": len(envelope)}],
            "subject": image.to_json(),
            "annotations": annotations,
        }
    )
    start.wait()
    digest, _ = client.push_manifest(REPO, doc, mf.OCI_MANIFEST)
    entry = Descriptor(mf.OCI_MANIFEST, digest, len(doc), mf.NOTATION_SIGNATURE, annotations).to_json()
    tag = mf.fallback_tag(image.digest)
    fetched = client.manifest(REPO, tag)
    index: dict[str, Any] = json.loads(fetched[0]) if fetched else mf.empty_index()
    time.sleep(random.uniform(0, 0.08))
    index["manifests"] = [*index.get("manifests", []), entry]
    client.push_manifest(REPO, mf.canonical_json(index), mf.OCI_INDEX, tag)
    out.append(digest)


def test_twelve_concurrent_signatures_lose_no_statement_and_no_foreign_entry(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data")
    registry = watched_registry(tmp_path, server, SECRET)
    server.start()
    try:
        digest = oci_layout(tmp_path / "img", "raced")
        skopeo_push(tmp_path / "img", registry, REPO)
        client = RegistryClient(RegistrySettings.for_url(registry.url))
        image = client.head_manifest(REPO, digest)
        assert image is not None
        start = threading.Barrier(SIGNERS)
        signatures: list[str] = []
        threads = [
            threading.Thread(target=_sign_like_notation, args=(registry, image, n, start, signatures))
            for n in range(SIGNERS)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(signatures) == SIGNERS

        # Every event is recorded and done (the webhook stored them before answering).
        db = server.data_dir / "watch.db"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                pending = conn.execute("SELECT COUNT(*) FROM events WHERE state != 'done'").fetchone()[0]
                recorded = conn.execute("SELECT COUNT(*) FROM recorded WHERE subject = ?", (digest,)).fetchone()[0]
            if pending == 0 and recorded == SIGNERS + 1:
                break
            time.sleep(0.1)  # polling an asynchronous outcome, bounded by the deadline
        assert (pending, recorded) == (0, SIGNERS + 1), server.output()[-3000:]

        # The reconciliation of attachments (periodic in serve; at once in backfill) lists again
        # whatever a signer's stale write dropped after the watcher's confirming read.
        backfill = subprocess.run(
            [
                sys.executable,
                "-m",
                "scitt_oci",
                "backfill",
                registry.host,
                "--data-dir",
                str(server.data_dir),
                "--registry-insecure",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert backfill.returncode == 0, backfill.stderr

        fetched = client.manifest(REPO, mf.fallback_tag(digest))
        assert fetched is not None
        listed = [d for d in json.loads(fetched[0])["manifests"]]
        digests = [d["digest"] for d in listed]
        assert len(digests) == len(set(digests)), "an entry is listed twice"
        assert set(signatures) <= set(digests), "a signer's entry was lost"
        ours = [d for d in listed if d.get("artifactType") == mf.STATEMENT_ARTIFACT]
        assert len(ours) == SIGNERS + 1, f"{len(ours)} of our {SIGNERS + 1} statements are listed"
        about: list[str] = []
        for d in ours:
            artifact = client.manifest(REPO, d["digest"])
            assert artifact is not None
            blob = client.blob(REPO, mf.parse(artifact[0], artifact[1]).layers[0].digest)
            assert blob is not None
            about.append(str(profile.read_event(transparent.parse(blob).statement).recorded_digest or ""))
        assert set(signatures) <= set(about)  # one statement for each signature
        assert requests.get(server.url + "/healthz", timeout=5).status_code == 200
    finally:
        server.stop()
        registry.stop()
