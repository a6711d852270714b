"""Classification of registry events: images, signatures, our own artifacts, fallback indexes."""

from __future__ import annotations

import json

from scitt_oci.oci import manifest as mf
from scitt_oci.scitt.profile import Kind
from scitt_oci.watch.classify import classify
from scitt_oci.watch.events import Action, RegistryEvent

IMG = "sha256:" + "ab" * 32
SUBJECT = {"mediaType": mf.OCI_MANIFEST, "digest": IMG, "size": 10}
CONFIG = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": mf.EMPTY_DIGEST, "size": 2}


def _m(**doc: object) -> mf.Manifest:
    return mf.parse(
        json.dumps({"schemaVersion": 2, "mediaType": mf.OCI_MANIFEST, "config": CONFIG, "layers": [], **doc}).encode()
    )


def _event(tag: str | None = None, action: Action = Action.PUSH) -> RegistryEvent:
    return RegistryEvent("r", "sha256:" + "cd" * 32, tag, action)


def test_image_push_and_index_children() -> None:
    assert classify(_event("v1"), "sha256:" + "cd" * 32, _m()).kind is Kind.PUSH
    index = mf.parse(
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": mf.OCI_INDEX,
                "manifests": [
                    {
                        "mediaType": mf.OCI_MANIFEST,
                        "digest": IMG,
                        "size": 1,
                        "platform": {"os": "linux", "architecture": "arm64"},
                    }
                ],
            }
        ).encode()
    )
    d = classify(_event("v1"), "sha256:" + "cd" * 32, index)
    assert d.kind is Kind.PUSH and [c.digest for c in d.children] == [IMG]


def test_signatures_of_every_format() -> None:
    for artifact_type, fmt in (
        (mf.SIGSTORE_BUNDLE, "cosign-bundle"),
        (mf.NOTATION_SIGNATURE, "notation"),
        (mf.COSIGN_OCI11_SIGNATURE, "cosign"),
    ):
        d = classify(_event(), "sha256:" + "cd" * 32, _m(artifactType=artifact_type, subject=SUBJECT))
        assert (d.kind, d.subject_digest, d.format) == (Kind.SIGNATURE, IMG, fmt)
    cosign = classify(_event(f"sha256-{'ab' * 32}.sig"), "sha256:" + "cd" * 32, _m())
    assert (cosign.kind, cosign.subject_digest, cosign.format) == (Kind.SIGNATURE, IMG, "cosign")
    att = classify(_event(f"sha256-{'ab' * 32}.att"), "sha256:" + "cd" * 32, _m())
    assert (att.kind, att.subject_digest, att.format) == (Kind.ATTESTATION, IMG, "cosign")


def test_classification_reads_no_signer_from_annotations() -> None:
    """The pusher writes annotations; a signer is only ever taken from verified material, by the worker."""
    forged = _m(
        artifactType=mf.NOTATION_SIGNATURE,
        subject=SUBJECT,
        annotations={"io.cncf.notary.x509chain.thumbprint#S256": '["2f3c"]'},
    )
    assert not hasattr(classify(_event(), "sha256:" + "cd" * 32, forged), "signer")


def test_what_is_never_recorded() -> None:
    ours = classify(_event(), "sha256:" + "cd" * 32, _m(artifactType=mf.STATEMENT_ARTIFACT, subject=SUBJECT))
    assert not ours.record and "our own" in ours.reason
    fallback = mf.parse(json.dumps(mf.empty_index()).encode())
    assert "fallback index" in classify(_event(f"sha256-{'ab' * 32}"), "sha256:" + "cd" * 32, fallback).reason
    sbom = classify(_event(), "sha256:" + "cd" * 32, _m(artifactType="application/spdx+json", subject=SUBJECT))
    assert not sbom.record and "not a signature" in sbom.reason
    assert classify(_event(action=Action.DELETE), IMG, None).kind is Kind.DELETE


def test_statement_artifact_is_deterministic() -> None:
    subject = mf.Descriptor(mf.OCI_MANIFEST, IMG, 10)
    a = mf.statement_artifact(subject, b"ts", kind="push", issuer="i", service="s", created=1_700_000_000)
    assert a == mf.statement_artifact(subject, b"ts", kind="push", issuer="i", service="s", created=1_700_000_000)
    parsed = mf.parse(a)
    assert parsed.artifact_type == mf.STATEMENT_ARTIFACT and parsed.subject is not None
    assert parsed.annotations[mf.ANN_CREATED] == "2023-11-14T22:13:20Z"
