"""What a signature check found: the result every verifier in this package returns."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from scitt_oci.errors import NotVerified as NotVerified  # defined there since #12; kept importable here


class Format(StrEnum):
    COSIGN = "cosign"  # cosign classic: simple-signing payload (`.sig` tag or OCI 1.1 referrer)
    COSIGN_BUNDLE = "cosign-bundle"  # a Sigstore bundle referrer (cosign v3)
    NOTATION = "notation"  # a Notation JWS or COSE envelope


class ArtifactKind(StrEnum):
    SIGNATURE = "signature"
    ATTESTATION = "attestation"  # an in-toto statement (cosign `.att`, a DSSE bundle with a predicate)


@dataclass(frozen=True)
class SignatureCheck:
    """The outcome for one signature artifact. Identity fields come from verified material only."""

    format: Format
    verified: bool
    reason: str = ""  # why it did not verify; empty when it did
    kind: ArtifactKind = ArtifactKind.SIGNATURE
    signer: str | None = None  # Notation: "x509.subject: <leaf DN>"; Sigstore: the certificate SAN; key: "key <id>"
    oidc_issuer: str | None = None  # Sigstore: the Fulcio OIDC issuer extension
    key_id: str | None = None  # key-based cosign: sha256 of the public key's SubjectPublicKeyInfo
    chain: tuple[str, ...] = ()  # sha256:<hex> thumbprints of the verified chain, leaf first
    anchor: str | None = None  # the configured trust entry that verified it
    predicate_type: str | None = None  # attestations
    timestamp: str | None = None  # how signing time was established, in words

    @classmethod
    def failed(
        cls, fmt: Format, reason: str, kind: ArtifactKind = ArtifactKind.SIGNATURE, predicate_type: str | None = None
    ) -> SignatureCheck:
        return cls(fmt, False, reason, kind, predicate_type=predicate_type)


def as_map(value: object) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty one: absent and mistyped members read the same."""
    return value if isinstance(value, dict) else {}


def as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []
