"""Sigstore bundles made by sigstore-python and cosign, verified offline with the trusted roots they were made under."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from scitt_oci.signatures import sigstore_bundle
from scitt_oci.signatures.model import ArtifactKind
from scitt_oci.signatures.trust import SignatureTrust, SigstoreIdentity, SigstoreTrust
from tests.conftest import shared

GITHUB = "https://github.com/login/oauth"
ATTESTED = "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4"


def _trust(root: str, *identities: tuple[str, str]) -> SignatureTrust:
    document = shared("signatures", *root.split("/")).read_bytes()
    ids = tuple(SigstoreIdentity(san, iss) for san, iss in identities)
    return SignatureTrust(sigstore=(SigstoreTrust.from_trusted_root("sigstore", document, ids),))


def _file_digest(name: str) -> str:
    return "sha256:" + hashlib.sha256(shared("signatures", "sigstore", name).read_bytes()).hexdigest()


def _bundle(name: str) -> bytes:
    return shared("signatures", *name.split("/")).read_bytes()


# sigstore-python's bundle.txt and bundle_v3*.txt bundles verify under the staging root it ships (not production).
@pytest.mark.parametrize(
    ("bundle", "signed", "identity"),
    [
        ("bundle_v3.txt.sigstore", "bundle_v3.txt", "william@yossarian.net"),
        ("bundle_v3_alt.txt.sigstore", "bundle_v3_alt.txt", "william@yossarian.net"),
        ("bundle.txt.sigstore", "bundle.txt", "a@tny.town"),
        ("staging-rekor-v2.txt.sigstore.json", "staging-rekor-v2.txt", "jku@goto.fi"),
    ],
)
def test_message_signature_bundles_verify_with_identity_and_issuer(bundle: str, signed: str, identity: str) -> None:
    trust = _trust("sigstore/trusted_root.staging.json", (identity, GITHUB))
    check = sigstore_bundle.verify(_bundle(f"sigstore/{bundle}"), _file_digest(signed), trust)
    assert check.verified, check.reason
    assert (check.signer, check.oidc_issuer, check.anchor, check.kind) == (
        identity,
        GITHUB,
        "sigstore",
        ArtifactKind.SIGNATURE,
    )


def test_cosign_oci_attestation_bundle_is_an_attestation_with_its_predicate() -> None:
    trust = _trust("cosign/trusted_root_pgi.json", ("cody@soyland.com", GITHUB))
    check = sigstore_bundle.verify(_bundle("cosign/oci-attestation.sigstore.json"), ATTESTED, trust)
    assert check.verified, check.reason
    assert check.kind is ArtifactKind.ATTESTATION
    assert check.predicate_type == "https://cosign.sigstore.dev/attestation/v1"
    assert check.signer == "cody@soyland.com"


def test_flipped_signature_byte_is_not_verified() -> None:
    doc = json.loads(_bundle("sigstore/bundle_v3.txt.sigstore"))
    sig = bytearray(base64.b64decode(doc["messageSignature"]["signature"]))
    sig[8] ^= 1
    doc["messageSignature"]["signature"] = base64.b64encode(bytes(sig)).decode()
    trust = _trust("sigstore/trusted_root.staging.json", ("william@yossarian.net", GITHUB))
    check = sigstore_bundle.verify(json.dumps(doc).encode(), _file_digest("bundle_v3.txt"), trust)
    assert not check.verified and check.reason == "trusted root 'sigstore': Signature is invalid for input"


def test_another_subject_digest_is_not_verified() -> None:
    trust = _trust("sigstore/trusted_root.staging.json", ("william@yossarian.net", GITHUB))
    check = sigstore_bundle.verify(_bundle("sigstore/bundle_v3.txt.sigstore"), "sha256:" + "00" * 32, trust)
    assert not check.verified and "Bundle message digest mismatch" in check.reason
    other = _trust("cosign/trusted_root_pgi.json", ("cody@soyland.com", GITHUB))
    att = sigstore_bundle.verify(_bundle("cosign/oci-attestation.sigstore.json"), "sha256:" + "00" * 32, other)
    assert not att.verified and f"subjects do not include sha256:{'00' * 32}" in att.reason


def test_untrusted_root_is_not_verified() -> None:
    trust = _trust("sigstore/trusted_root.production.json", ("william@yossarian.net", GITHUB))
    check = sigstore_bundle.verify(_bundle("sigstore/bundle_v3.txt.sigstore"), _file_digest("bundle_v3.txt"), trust)
    assert not check.verified and "certificate chain" in check.reason and "signature does not match" in check.reason


def test_unexpected_identity_or_issuer_is_not_verified() -> None:
    for identity in [("release@acme.example", GITHUB), ("william@yossarian.net", "https://accounts.google.com")]:
        trust = _trust("sigstore/trusted_root.staging.json", identity)
        check = sigstore_bundle.verify(_bundle("sigstore/bundle_v3.txt.sigstore"), _file_digest("bundle_v3.txt"), trust)
        assert not check.verified
        assert f"william@yossarian.net from {GITHUB} is not an expected identity" in check.reason


def test_no_trusted_root_and_garbage_are_not_verified() -> None:
    assert sigstore_bundle.verify(b"{}", ATTESTED, SignatureTrust()).reason == "no Sigstore trusted root is configured"
    trust = _trust("cosign/trusted_root_pgi.json", ("*", GITHUB))
    assert sigstore_bundle.verify(b"x" * 42, ATTESTED, trust).reason.startswith("the bundle cannot be read")
