"""What a signature statement says about its verification: identity only from a verified check."""

from __future__ import annotations

from scitt_oci.signatures.model import ArtifactKind, Format, SignatureCheck
from scitt_oci.watch.worker import verification_details


def test_a_verified_check_names_signer_anchor_and_chain() -> None:
    check = SignatureCheck(
        Format.NOTATION,
        True,
        signer="x509.subject: C=US, ST=WA, O=Notary",
        chain=("sha256:aa", "sha256:bb"),
        anchor="wabbit",
        timestamp="now",
    )
    assert verification_details(check) == {
        "format": "notation",
        "verified": True,
        "signer": "x509.subject: C=US, ST=WA, O=Notary",
        "chain": "sha256:aa,sha256:bb",
        "anchor": "wabbit",
        "timestamp": "now",
    }


def test_an_unverified_check_gives_its_reason_and_no_identity() -> None:
    check = SignatureCheck(
        Format.COSIGN,
        False,
        "x" * 2000,
        ArtifactKind.ATTESTATION,
        signer="claimed",
        predicate_type="https://slsa.dev/provenance/v1",
    )
    details = verification_details(check)
    assert details["verified"] is False and "signer" not in details and "anchor" not in details
    assert len(str(details["reason"])) == 1024 and details["predicate-type"] == "https://slsa.dev/provenance/v1"
