"""Signatures end to end: the alpine image from notation-go's test data pushed with skopeo, its real
Notation envelopes (JWS and COSE) pushed as Notation lays them out, a key-signed cosign `.sig`, and
forgeries (a 42-byte "envelope" with a copied thumbprint annotation; a `.sig` with a self-signed
certificate and the signature AAAA). The watcher trusts the alpine certificate and the cosign key:
`history` shows what it verified, and only verified signatures satisfy a signer rule in `verify`
and admission."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from scitt_oci.oci import manifest as mf
from scitt_oci.oci.client import RegistryClient, RegistrySettings
from scitt_oci.oci.manifest import Descriptor
from tests import sigstore_double
from tests.conftest import shared
from tests.registryproc import RegistryProcess, oci_layout, push_cosign_signature, require, skopeo_push, wait_statements
from tests.serverproc import ServerProcess, placeholder_keys, service_keys

SECRET = "signature-test-secret-0123456789"
ALPINE = "sha256:19dbd2e48e921426ee8ace4dc892edfb2ecdc1d1a72d5416c83670c30acecef0"
ALPINE_SUBJECT = "x509.subject: C=US, ST=WA, L=Seattle, O=Notary, CN=alpine"
THUMBPRINT = "io.cncf.notary.x509chain.thumbprint#S256"


@dataclass
class World:
    server: ServerProcess
    registry: RegistryProcess
    client: RegistryClient
    root: Path
    forged: str  # an image with only forged signatures
    alpine_thumbprint: str


def _alpine_cert() -> x509.Certificate:
    jws = json.loads(shared("signatures", "notation", "jws_signature.sig").read_bytes())
    return x509.load_der_x509_certificate(base64.b64decode(jws["header"]["x5c"][0]))


def _wait_statements(client: RegistryClient, repo: str, digest: str, count: int, server: ServerProcess) -> None:
    wait_statements(client, repo, digest, count, output=server.output)


def _notation_manifest(
    client: RegistryClient, repo: str, subject: Descriptor, envelope: bytes, media_type: str, thumbprint: str
) -> tuple[bytes, str]:
    """A Notation signature manifest as notation-go writes it (OCI 1.1 image manifest, artifactType, empty config)."""
    layer = client.push_blob(repo, envelope)
    client.push_blob(repo, mf.EMPTY_BLOB)
    manifest = mf.canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": mf.OCI_MANIFEST,
            "artifactType": mf.NOTATION_SIGNATURE,
            "config": {"mediaType": mf.EMPTY_JSON, "digest": mf.EMPTY_DIGEST, "size": 2},
            "layers": [{"mediaType": media_type, "digest": layer, "size": len(envelope)}],
            "subject": subject.to_json(),
            "annotations": {
                THUMBPRINT: json.dumps([thumbprint]),
                "org.opencontainers.image.created": "2026-11-30T12:00:00Z",
            },
        }
    )
    return manifest, mf.digest_of(manifest)


def _ensure_in_fallback_index(client: RegistryClient, repo: str, subject: str, manifest: bytes) -> None:
    """Notation's own fallback-index entry for its signature (Distribution 2.8 has no referrers API), added
    once the watcher is quiet (the watcher
    writes the same index; concurrent writers to it are another issue's subject)."""
    parsed = mf.parse(manifest, mf.OCI_MANIFEST)
    digest = mf.digest_of(manifest)
    fetched = client.manifest(repo, mf.fallback_tag(subject))
    doc = json.loads(fetched[0]) if fetched else mf.empty_index()
    if any(m["digest"] == digest for m in doc["manifests"]):
        return
    doc["manifests"].append(
        Descriptor(mf.OCI_MANIFEST, digest, len(manifest), parsed.artifact_type, parsed.annotations).to_json()
    )
    client.push_manifest(repo, mf.canonical_json(doc), mf.OCI_INDEX, mf.fallback_tag(subject))


def _write_policy(root: Path, signatures: str = "") -> Path:
    path = root / "policy.yaml"
    path.write_text(
        "transparency_services: [{name: local, keys: [{path: ts.cbor}]}]\n"
        "issuers: [{name: operator, keys: [{path: issuer.pem}]}]\n"
        + (f"require: {{signatures: [{signatures}]}}\n" if signatures else "")
    )
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    require("skopeo")
    root = tmp_path_factory.mktemp("sigs")
    (root / "secret").write_text(SECRET)
    cert = _alpine_cert()
    (root / "alpine.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    cosign_key = ec.generate_private_key(ec.SECP256R1())
    (root / "cosign.pub").write_bytes(
        cosign_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    (root / "config.yaml").write_text(
        "signatures:\n"
        "  notation:\n"
        f"    - {{name: alpine-notary, ca: [alpine.pem], trusted_identities: ['{ALPINE_SUBJECT}']}}\n"
        "  cosign_keys:\n"
        "    - {name: acme-release-key, key: cosign.pub}\n"
    )
    server = ServerProcess(root / "data")
    registry = RegistryProcess(
        root / "registry", notify_url=f"{server.url}/webhooks/distribution", secret=SECRET
    ).start()
    placeholder_keys(root)
    _write_policy(root)
    server.args = [
        "--config",
        str(root / "config.yaml"),
        "--registry",
        registry.host,
        "--registry-insecure",
        "--webhook-secret-file",
        str(root / "secret"),
        "--trust",
        str(root / "policy.yaml"),
    ]
    server.start()
    service_keys(root, server)
    client = RegistryClient(RegistrySettings.for_url(registry.url))
    repo = "notary/alpine"
    # The alpine image, as notation-go's test data holds it, pushed with skopeo.
    layout = shared("signatures", "notation", "oci-layout")
    proc = subprocess.run(
        [
            require("skopeo"),
            "copy",
            "--dest-tls-verify=false",
            f"oci:{layout}:v2",
            f"docker://{registry.host}/{repo}:v2",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    _wait_statements(client, repo, ALPINE, 1, server)
    subject = client.head_manifest(repo, ALPINE)
    assert subject is not None and subject.size == 481
    thumb = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    count = 1
    for name, media_type in (
        ("jws_signature.sig", "application/jose+json"),
        ("cose_signature.sig", "application/cose"),
    ):
        manifest, _ = _notation_manifest(
            client, repo, subject, shared("signatures", "notation", name).read_bytes(), media_type, thumb
        )
        client.push_manifest(repo, manifest, mf.OCI_MANIFEST)  # by digest, as notation-go does
        count += 1
        _wait_statements(client, repo, ALPINE, count, server)
        _ensure_in_fallback_index(client, repo, ALPINE, manifest)
    payload = sigstore_double.simple_signing(ALPINE, repo)
    push_cosign_signature(client, repo, ALPINE, cosign_key.sign(payload, ec.ECDSA(hashes.SHA256())), repo)
    _wait_statements(client, repo, ALPINE, count + 1, server)
    # Another image that only forgeries claim to sign.
    forged = oci_layout(root / "forged", "forged")
    skopeo_push(root / "forged", registry, "acme/forged")
    _wait_statements(client, "acme/forged", forged, 1, server)
    forged_subject = client.head_manifest("acme/forged", forged)
    assert forged_subject is not None
    fake, _ = _notation_manifest(client, "acme/forged", forged_subject, b"x" * 42, "application/cose", thumb)
    client.push_manifest("acme/forged", fake, mf.OCI_MANIFEST)
    _wait_statements(client, "acme/forged", forged, 2, server)
    _ensure_in_fallback_index(client, "acme/forged", forged, fake)
    lookalike = sigstore_double.self_signed_lookalike(ec.generate_private_key(ec.SECP256R1()), "release@acme.example")
    push_cosign_signature(
        client,
        "acme/forged",
        forged,
        base64.b64decode("AAAA"),
        "acme/forged",
        **{"dev.sigstore.cosign/certificate": lookalike.public_bytes(serialization.Encoding.PEM).decode()},
    )
    _wait_statements(client, "acme/forged", forged, 3, server)
    yield World(server, registry, client, root, forged, thumb)
    server.stop()
    registry.stop()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scitt_oci", *args], capture_output=True, text=True, check=False)


def _history(w: World, image: str) -> list[dict[str, Any]]:
    """The history's records, as the CLI prints them in JSON (so their values are untyped)."""
    out = _cli("history", image, "--registry-insecure", "--output", "json")
    assert out.returncode == 0, out.stderr
    records = json.loads(out.stdout)["records"]
    assert isinstance(records, list) and all(isinstance(r, dict) for r in records), records
    return records


def test_history_shows_verified_notation_and_cosign_signatures_with_their_signers(world: World) -> None:
    records = _history(world, f"{world.registry.host}/notary/alpine@{ALPINE}")
    signatures = [r["details"] for r in records if r["kind"] == "signature"]
    assert len(signatures) == 3
    notation = sorted((d for d in signatures if d["format"] == "notation"), key=lambda d: str(d))
    assert [(d["verified"], d["signer"], d["anchor"]) for d in notation] == [
        (True, ALPINE_SUBJECT, "alpine-notary")
    ] * 2
    assert all(d["chain"] == f"sha256:{world.alpine_thumbprint}" for d in notation)
    cosign = [d for d in signatures if d["format"] == "cosign"]
    assert cosign[0]["verified"] is True and cosign[0]["anchor"] == "acme-release-key"
    assert str(cosign[0]["signer"]).startswith("key sha256:")
    text = _cli("history", f"{world.registry.host}/notary/alpine@{ALPINE}", "--registry-insecure")
    assert f"verified: signer {ALPINE_SUBJECT}, trust anchor alpine-notary" in text.stdout
    forged = _cli("history", f"{world.registry.host}/acme/forged@{world.forged}", "--registry-insecure")
    assert "NOT verified: the signature does not verify with the certificate it carries" in forged.stdout


def test_forgeries_are_recorded_as_not_verified_with_the_reason(world: World) -> None:
    records = _history(world, f"{world.registry.host}/acme/forged@{world.forged}")
    signatures = {r["details"]["format"]: r["details"] for r in records if r["kind"] == "signature"}
    notation, cosign = signatures["notation"], signatures["cosign"]
    assert notation["verified"] is False and "signer" not in notation
    assert "cannot be decoded" in notation["reason"]
    assert cosign["verified"] is False and "signer" not in cosign
    assert cosign["reason"] == "the signature does not verify with the certificate it carries"


@pytest.mark.parametrize(
    ("rule", "alpine", "forged"),
    [
        ("{format: notation, signer: 'x509.subject: CN=alpine'}", "ADMIT", "REJECT"),
        ("{format: notation, anchor: alpine-notary}", "ADMIT", "REJECT"),
        ("{format: notation}", "ADMIT", "REJECT"),
        ("{format: cosign, signer: 'release@acme.example'}", "REJECT", "REJECT"),
        ("{format: cosign, anchor: acme-release-key}", "ADMIT", "REJECT"),
    ],
)
def test_only_verified_signatures_satisfy_signer_rules_in_verify(
    world: World, rule: str, alpine: str, forged: str
) -> None:
    policy = _write_policy(world.root, rule)
    try:
        for image, expected in (
            (f"{world.registry.host}/notary/alpine@{ALPINE}", alpine),
            (f"{world.registry.host}/acme/forged@{world.forged}", forged),
        ):
            out = _cli("verify", image, "--trust", str(policy), "--registry-insecure", "--output", "json")
            assert json.loads(out.stdout)["decision"] == expected, (image, out.stdout)
            assert out.returncode == (0 if expected == "ADMIT" else 1)
    finally:
        _write_policy(world.root)


def test_a_notation_signer_rule_that_is_not_a_subject_is_refused_when_the_policy_loads(world: World) -> None:
    """The v1 form (`x509 sha256:...`, from annotations) or a glob over the whole text (`*O=Notary*`)
    is no Notation signer rule: refused, naming the rule, not silently never matched."""
    for rule in (
        "{format: notation, signer: 'x509 sha256:*'}",
        "{format: notation, signer: 'x509.subject: *O=Notary*'}",
    ):
        policy = _write_policy(world.root, rule)
        try:
            out = _cli(
                "verify", f"{world.registry.host}/notary/alpine@{ALPINE}", "--trust", str(policy), "--registry-insecure"
            )
            assert out.returncode == 2 and "require.signatures[0].signer" in out.stderr, out.stderr
            assert "Traceback" not in out.stderr
        finally:
            _write_policy(world.root)


def test_admission_denies_forged_signatures_and_admits_real_ones(world: World) -> None:
    _write_policy(world.root, "{format: notation, signer: 'x509.subject: O=Notary'}")
    try:
        for image, allowed in (
            (f"{world.registry.host}/notary/alpine@{ALPINE}", True),
            (f"{world.registry.host}/acme/forged@{world.forged}", False),
        ):
            review = {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {
                    "uid": "u",
                    "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "namespace": "prod",
                    "operation": "CREATE",
                    "object": {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": image}]}},
                },
            }
            r = requests.post(world.server.url + "/admission/validate", json=review, timeout=10)
            response = r.json()["response"]
            assert response["allowed"] is allowed, response
            if not allowed:
                assert "no verified notation by x509.subject: O=Notary signature" in response["status"]["message"]
                assert "did not verify" in response["status"]["message"]
    finally:
        _write_policy(world.root)


def test_notation_referrers_and_fallback_index_are_as_notation_lays_them_out(world: World) -> None:
    listed = world.client.referrers("notary/alpine", ALPINE, mf.NOTATION_SIGNATURE)
    assert len(listed) == 2 and all(d.annotations[THUMBPRINT] == json.dumps([world.alpine_thumbprint]) for d in listed)
