"""The one entry point over signature manifests: every format, and hostile bytes never raise."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from cryptography import x509

from scitt_oci.oci import manifest as mf
from scitt_oci.oci.manifest import Descriptor
from scitt_oci.signatures import artifact
from scitt_oci.signatures.model import Format
from scitt_oci.signatures.trust import (
    NotationTrustStore,
    SignatureTrust,
    SigstoreIdentity,
    SigstoreTrust,
    TrustedIdentity,
)
from tests.conftest import shared

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
ALPINE = Descriptor(mf.OCI_MANIFEST, "sha256:19dbd2e48e921426ee8ace4dc892edfb2ecdc1d1a72d5416c83670c30acecef0", 481)


def _manifest(
    artifact_type: str | None, *layers: tuple[str, bytes], annotations: dict[str, str] | None = None
) -> tuple[mf.Manifest, dict[str, bytes]]:
    blobs = {mf.digest_of(b): b for _, b in layers}
    doc: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": mf.OCI_MANIFEST,
        "config": {"mediaType": mf.EMPTY_JSON, "digest": mf.EMPTY_DIGEST, "size": 2},
        "layers": [
            {"mediaType": t, "digest": mf.digest_of(b), "size": len(b), "annotations": annotations or {"a": "b"}}
            for t, b in layers
        ],
        "subject": ALPINE.to_json(),
    }
    if artifact_type:
        doc["artifactType"] = artifact_type
    return mf.parse(json.dumps(doc).encode()), blobs


def _trust() -> SignatureTrust:
    jws = json.loads(shared("signatures", "notation", "jws_signature.sig").read_bytes())
    cert = x509.load_der_x509_certificate(base64.b64decode(jws["header"]["x5c"][0]))
    pgi = shared("signatures", "cosign", "trusted_root_pgi.json").read_bytes()
    return SignatureTrust(
        notation=(NotationTrustStore("alpine", (cert,), (), (TrustedIdentity.parse("*"),)),),
        sigstore=(
            SigstoreTrust.from_trusted_root("pgi", pgi, (SigstoreIdentity("*", "https://github.com/login/oauth"),)),
        ),
    )


def test_a_notation_manifest_verifies_through_the_entry_point() -> None:
    envelope = shared("signatures", "notation", "cose_signature.sig").read_bytes()
    m, blobs = _manifest(mf.NOTATION_SIGNATURE, ("application/cose", envelope))
    check = artifact.verify_signature(Format.NOTATION, m, blobs, ALPINE, _trust(), NOW)
    assert check.verified, check.reason
    assert [d.digest for d in artifact.layers_to_fetch(Format.NOTATION, m)] == list(blobs)


def test_a_layer_the_registry_did_not_serve_is_not_verified() -> None:
    m, _ = _manifest(mf.NOTATION_SIGNATURE, ("application/cose", b"x"))
    check = artifact.verify_signature(Format.NOTATION, m, {}, ALPINE, _trust(), NOW)
    assert (check.verified, check.reason) == (False, "the signature manifest has no readable layer")


HOSTILE = [
    b"",
    b"x" * 42,
    b"\xd2\x84\x40\xa0\xf6\x40",
    b"\xd2\x84\x41\xa0\xa1\x18\x21\x81\x41\x00\x40\x40",
    b"null",
    b"[]",
    b'{"payload": 1, "protected": [], "header": {"x5c": ["!!"]}, "signature": {}}',
    json.dumps(
        {
            "protected": base64.urlsafe_b64encode(
                json.dumps(
                    {
                        "alg": "PS256",
                        "cty": "application/vnd.cncf.notary.payload.v1+json",
                        "crit": ["io.cncf.notary.signingScheme"],
                        "io.cncf.notary.signingScheme": "notary.x509",
                    }
                ).encode()
            ).decode(),
            "payload": "e30",
            "signature": "AAAA",
            "header": {"x5c": [base64.b64encode(b"\x30\x03\x02\x01\x00").decode()]},
        }
    ).encode(),
    b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "verificationMaterial": 7}',
    b'{"critical": {"type": "cosign container image signature", "image": []}}',
    b'{"payloadType": 1, "payload": "AAAA", "signatures": [{"sig": 5}]}',
]


@pytest.mark.parametrize("blob", HOSTILE)
@pytest.mark.parametrize(
    ("fmt", "artifact_type", "media_type"),
    [
        (Format.NOTATION, mf.NOTATION_SIGNATURE, "application/jose+json"),
        (Format.NOTATION, mf.NOTATION_SIGNATURE, "application/cose"),
        (Format.COSIGN_BUNDLE, mf.SIGSTORE_BUNDLE, mf.SIGSTORE_BUNDLE),
        (Format.COSIGN, mf.COSIGN_OCI11_SIGNATURE, "application/vnd.dev.cosign.simplesigning.v1+json"),
        (Format.COSIGN, None, "application/vnd.dsse.envelope.v1+json"),
    ],
)
def test_hostile_layers_are_not_verified_and_never_raise(
    fmt: Format, artifact_type: str | None, media_type: str, blob: bytes
) -> None:
    annotations = {
        "dev.cosignproject.cosign/signature": "AAAA",
        "dev.sigstore.cosign/certificate": "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
    }
    m, blobs = _manifest(artifact_type, (media_type, blob), annotations=annotations)
    check = artifact.verify_signature(fmt, m, blobs, ALPINE, _trust(), NOW)
    assert not check.verified and check.reason and check.signer is None
