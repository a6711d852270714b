"""The registry watcher against Debian's CNCF Distribution: pushes and signatures become Transparent
Statements attached to the images as referrers (tag-schema fallback: Distribution 2.8 has no referrers API)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from scitt_oci.oci import manifest as mf
from scitt_oci.oci.client import RegistryClient, RegistrySettings
from scitt_oci.oci.manifest import Descriptor
from scitt_oci.scitt import profile, transparent
from scitt_oci.verify.trust import load_policy
from scitt_oci.verify.verifier import verify_transparent_statement
from tests.registryproc import (
    RegistryProcess,
    notation_manifest,
    oci_layout,
    push_cosign_signature,
    skopeo_push,
    wait_statements,
    watched_registry,
)
from tests.serverproc import ServerProcess, service_keys

SECRET = "test-webhook-secret-0123456789"


@dataclass
class Setup:
    server: ServerProcess
    registry: RegistryProcess
    client: RegistryClient
    policy: Path
    root: Path


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("watch")
    server = ServerProcess(root / "data")
    registry = watched_registry(root, server, SECRET)
    server.start()
    service_keys(root, server)
    (root / "policy.yaml").write_text(
        "transparency_services: [{name: local, keys: [{path: ts.cbor}]}]\n"
        "issuers: [{name: operator, keys: [{path: issuer.pem}]}]\n"
    )
    yield Setup(server, registry, RegistryClient(RegistrySettings.for_url(registry.url)), root / "policy.yaml", root)
    server.stop()
    registry.stop()


def statements_for(s: Setup, repo: str, digest: str, count: int, timeout: float = 30) -> list[bytes]:
    """The Transparent Statements attached to `digest`, once there are `count` of them (polling the registry)."""
    found = wait_statements(s.client, repo, digest, count, timeout=timeout, output=s.server.output)
    assert len(found) == count, (
        f"{len(found)} statements attached to {digest}, expected {count}: {s.server.output()[-2000:]}"
    )
    out = []
    for d in found:
        assert d.annotations[mf.ANN_KIND] in ("push", "signature", "delete")
        fetched = s.client.manifest(repo, d.digest)
        assert fetched is not None
        artifact = mf.parse(fetched[0], fetched[1])
        assert artifact.subject is not None and artifact.subject.digest == digest
        blob = s.client.blob(repo, artifact.layers[0].digest)
        assert blob is not None
        out.append(blob)
    return out


def kinds(s: Setup, blobs: list[bytes], digest: str) -> list[str]:
    policy = load_policy(s.policy)
    out = []
    for blob in blobs:
        result = verify_transparent_statement(blob, policy, digest=digest)
        assert result.valid, result.to_json()
        assert result.event is not None
        out.append(result.event.kind.value)
    return sorted(out)


def test_pushed_image_gets_a_verifiable_push_statement(watched: Setup) -> None:
    digest = oci_layout(watched.root / "img1", "one")
    skopeo_push(watched.root / "img1", watched.registry, "wabbit/net-monitor")
    blobs = statements_for(watched, "wabbit/net-monitor", digest, 1)
    assert kinds(watched, blobs, digest) == ["push"]
    event = profile.read_event(transparent.parse(blobs[0]).statement)
    assert event.detail("tag") == "v1" and str(event.subject.digest) == digest
    assert event.subject.registry == watched.registry.host


def test_multi_arch_index_and_its_platform_manifests(watched: Setup) -> None:
    digest = oci_layout(watched.root / "img2", "two", multi_arch=True)
    skopeo_push(watched.root / "img2", watched.registry, "wabbit/multi", all_platforms=True)
    assert kinds(watched, statements_for(watched, "wabbit/multi", digest, 1), digest) == ["push"]
    index = json.loads((watched.root / "img2" / "blobs" / "sha256" / digest.split(":")[1]).read_bytes())
    for platform in index["manifests"]:
        assert kinds(watched, statements_for(watched, "wabbit/multi", platform["digest"], 1), platform["digest"]) == [
            "push"
        ]


def _image_descriptor(s: Setup, repo: str, digest: str) -> Descriptor:
    found = s.client.head_manifest(repo, digest)
    assert found is not None
    return found


def test_cosign_classic_and_notation_signatures_are_recorded_about_the_image(watched: Setup) -> None:
    repo = "wabbit/signed"
    digest = oci_layout(watched.root / "img3", "three")
    skopeo_push(watched.root / "img3", watched.registry, repo)
    statements_for(watched, repo, digest, 1)
    image = _image_descriptor(watched, repo, digest)
    # cosign classic: a manifest tagged sha256-<hex>.sig with a simple-signing layer
    push_cosign_signature(watched.client, repo, digest, base64.b64decode("MEUCIQ=="), f"{watched.registry.host}/{repo}")
    # Notation: an artifact with subject = the image and a COSE envelope layer
    notation = notation_manifest(watched.client, repo, image)
    notation_digest, _ = watched.client.push_manifest(repo, notation, mf.OCI_MANIFEST)
    # cosign v3: a Sigstore bundle as an OCI 1.1 referrer
    bundle = json.dumps({"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "messageSignature": {}}).encode()
    bundle_blob = watched.client.push_blob(repo, bundle)
    sigstore = mf.canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": mf.OCI_MANIFEST,
            "artifactType": mf.SIGSTORE_BUNDLE,
            "config": {"mediaType": mf.EMPTY_JSON, "digest": mf.EMPTY_DIGEST, "size": 2},
            "layers": [{"mediaType": mf.SIGSTORE_BUNDLE, "digest": bundle_blob, "size": len(bundle)}],
            "subject": image.to_json(),
            "annotations": {
                "dev.sigstore.bundle.content": "message-signature",
                "dev.sigstore.bundle.predicateType": "https://sigstore.dev/cosign/sign/v1",
            },
        }
    )
    watched.client.push_manifest(repo, sigstore, mf.OCI_MANIFEST)
    blobs = statements_for(watched, repo, digest, 4)
    assert kinds(watched, blobs, digest) == ["push", "signature", "signature", "signature"]
    formats = sorted(profile.read_event(transparent.parse(b).statement).detail("format") or "" for b in blobs)
    assert formats == ["", "cosign", "cosign-bundle", "notation"]
    recorded = {str(profile.read_event(transparent.parse(b).statement).recorded_digest) for b in blobs}
    assert notation_digest in recorded


def test_no_feedback_loop_and_events_are_done(watched: Setup) -> None:
    """Our own artifacts and the fallback indexes we write are recognised and never recorded."""
    metrics = ""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        metrics = requests.get(watched.server.url + "/metrics", timeout=5).text
        if 'scitt_watch_events{state="pending"}' not in metrics or 'scitt_watch_events{state="pending"} 0.0' in metrics:
            break
        time.sleep(0.05)
    assert 'scitt_watch_events{state="dead"}' not in metrics or 'scitt_watch_events{state="dead"} 0.0' in metrics
    import sqlite3

    conn = sqlite3.connect(f"file:{watched.server.data_dir / 'watch.db'}?mode=ro", uri=True)
    # Distribution's payloads let the webhook drop events about what we pushed before storing them.
    stored = [json.loads(e) for (e,) in conn.execute("SELECT event FROM events")]
    assert not [e for e in stored if (e["tag"] or "").startswith("sha256-") and not e["tag"].endswith(".sig")]
    notes = [
        n for (n,) in conn.execute("SELECT last_error FROM events WHERE state = 'done' AND last_error LIKE 'skipped%'")
    ]
    assert not any("our own" in n or "fallback index" in n for n in notes)
    kinds_on_record = [k for (k,) in conn.execute("SELECT kind FROM recorded")]
    assert kinds_on_record.count("push") == 5 and kinds_on_record.count("signature") == 3


def test_webhook_rejections(watched: Setup) -> None:
    url = watched.server.url + "/webhooks/distribution"
    auth = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}
    assert requests.post(url, data=b"{}", headers={"Content-Type": "application/json"}, timeout=5).status_code == 401
    assert (
        requests.post(url, data=b"{}", headers={**auth, "Authorization": "Bearer wrong"}, timeout=5).status_code == 401
    )
    bad = requests.post(url, data=b"not json", headers=auth, timeout=5)
    assert bad.status_code == 400 and bad.headers["content-type"] == "application/problem+json"
    assert "not JSON" in bad.json()["detail"]
    assert requests.post(url, data=b'{"events": 5}', headers=auth, timeout=5).status_code == 400
    deep = requests.post(url, data=b"[" * 100_000, headers=auth, timeout=5)
    assert deep.status_code == 400 and "too deeply" in deep.json()["detail"]
    assert requests.post(url, data=b"x" * (1024 * 1024 + 1), headers=auth, timeout=5).status_code == 413
    assert requests.post(watched.server.url + "/webhooks/nope", data=b"{}", headers=auth, timeout=5).status_code == 404
    assert requests.post(url, data=b"{}", headers={**auth, "Content-Type": "text/plain"}, timeout=5).status_code == 415
    assert (
        requests.post(url + "?registry=evil.example", data=b'{"events": []}', headers=auth, timeout=5).status_code
        == 400
    )
    # Tags outside the reference grammar: a 400 naming the field, nothing stored.
    for tag in ("../../../../_catalog?n=1#", "v1\r\nX: y"):
        event = {
            "events": [
                {
                    "id": "t1",
                    "action": "push",
                    "target": {
                        "mediaType": mf.OCI_MANIFEST,
                        "repository": "wabbit/x",
                        "tag": tag,
                        "digest": "sha256:" + "ab" * 32,
                    },
                }
            ]
        }
        refused = requests.post(url, data=json.dumps(event), headers=auth, timeout=5)
        assert refused.status_code == 400 and "events[0].target.tag" in refused.json()["detail"]
    # A signature header with non-ASCII characters is a wrong signature, not a server error.
    github = watched.server.url + "/webhooks/github"
    odd = requests.post(
        github,
        data=b"{}",
        headers={"X-Hub-Signature-256": "sha256=\u00b2\u00e9", "Content-Type": "application/json"},
        timeout=5,
    )
    assert odd.status_code == 401


def test_github_hmac_signed_webhook_is_accepted(watched: Setup) -> None:
    import hashlib
    import hmac

    digest = "sha256:" + "9" * 64
    body = json.dumps(
        {
            "action": "published",
            "package": {"name": "gh-app", "package_type": "container", "package_version": {"version": digest}},
        }
    ).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    url = watched.server.url + "/webhooks/github"
    ok = requests.post(
        url,
        data=body,
        headers={"X-Hub-Signature-256": signature, "X-GitHub-Event": "package", "Content-Type": "application/json"},
        timeout=5,
    )
    assert ok.status_code == 202 and ok.json()["received"] == 1
    forged = requests.post(
        url,
        data=body,
        headers={"X-Hub-Signature-256": "sha256=" + "0" * 64, "Content-Type": "application/json"},
        timeout=5,
    )
    assert forged.status_code == 401


def test_a_push_after_a_delete_is_recorded_again_and_a_stripped_delete_record_comes_back(watched: Setup) -> None:
    repo = "wabbit/again"
    digest = oci_layout(watched.root / "img-again", "again")
    skopeo_push(watched.root / "img-again", watched.registry, repo)
    statements_for(watched, repo, digest, 1)
    deleted = watched.client.request(
        "DELETE", f"/v2/{repo}/manifests/{digest}", scope=f"repository:{repo}:delete", ok=(202,)
    )
    assert deleted.status_code == 202
    statements_for(watched, repo, digest, 2, timeout=90)  # a busy machine can hold a notification back a while
    skopeo_push(watched.root / "img-again", watched.registry, repo)  # the same digest, pushed again
    assert kinds(watched, statements_for(watched, repo, digest, 3, timeout=90), digest) == ["delete", "push", "push"]
    # Once the watcher is done with every event (its writer may otherwise still be converging and put
    # the entry back itself), a pusher that rewrites the index keeping only what it knows strips the
    # delete record...
    import sqlite3

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with sqlite3.connect(f"file:{watched.server.data_dir / 'watch.db'}?mode=ro", uri=True) as conn:
            query = "SELECT COUNT(*) FROM events WHERE state = 'pending' AND event LIKE '%wabbit/again%'"
            if conn.execute(query).fetchone()[0] == 0:
                break
        time.sleep(0.05)  # polling an asynchronous outcome, bounded by the deadline
    tag = mf.fallback_tag(digest)
    fetched = watched.client.manifest(repo, tag)
    assert fetched is not None
    index = json.loads(fetched[0])
    delete_entry = [e for e in index["manifests"] if e["annotations"][mf.ANN_KIND] == "delete"]
    index["manifests"] = [e for e in index["manifests"] if e not in delete_entry]
    watched.client.push_manifest(repo, mf.canonical_json(index), mf.OCI_INDEX, tag)
    assert len(watched.client.referrers(repo, digest, mf.STATEMENT_ARTIFACT)) == 2
    # ...and the reconciliation of attachments lists it again: backfill's, or (if its turn comes first)
    # the periodic one of the running service.
    import subprocess
    import sys

    backfill = subprocess.run(
        [
            sys.executable,
            "-m",
            "scitt_oci",
            "backfill",
            watched.registry.host,
            "--data-dir",
            str(watched.server.data_dir),
            "--registry-insecure",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert backfill.returncode == 0, backfill.stderr
    assert "missing referrers" in backfill.stdout, backfill.stdout
    assert kinds(watched, statements_for(watched, repo, digest, 3), digest) == ["delete", "push", "push"]
