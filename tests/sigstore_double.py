"""A private Sigstore instance for cosign classic tests (no real cosign `.sig` artifacts exist in
../shared): a Fulcio-like CA (root and intermediate) that certifies an e-mail SAN and an OIDC issuer
(extension 1.3.6.1.4.1.57264.1.8, as Fulcio writes it), a Rekor-like log key that signs entry
timestamps over the canonical JSON cosign verifies, and the `trusted_root.json` naming both."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

OIDC_ISSUER = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
ISSUER = "https://accounts.example"
SIGNED_AT = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sigstore.test"), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    )


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return bytes([0x0C, len(raw)]) + raw


def leaf_certificate(
    issuer_key: ec.EllipticCurvePrivateKey, issuer_name: x509.Name, key: ec.EllipticCurvePrivateKey, san: str, oidc: str
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(SIGNED_AT - dt.timedelta(minutes=1))
        .not_valid_after(SIGNED_AT + dt.timedelta(minutes=10))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(san)]), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .add_extension(x509.UnrecognizedExtension(OIDC_ISSUER, _utf8(oidc)), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )


def _ca(
    name: x509.Name, key: ec.EllipticCurvePrivateKey, signer: ec.EllipticCurvePrivateKey, issuer: x509.Name, path: int
) -> x509.Certificate:
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2035, 1, 1, tzinfo=dt.UTC))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False)
        .sign(signer, hashes.SHA256())
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class Sigstore:
    root_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP384R1()))
    intermediate_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP384R1())
    )
    log_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    def __post_init__(self) -> None:
        self.root = _ca(_name("sigstore"), self.root_key, self.root_key, _name("sigstore"), 1)
        self.intermediate = _ca(
            _name("sigstore-intermediate"), self.intermediate_key, self.root_key, _name("sigstore"), 0
        )

    @property
    def log_id(self) -> bytes:
        der = self.log_key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        return hashlib.sha256(der).digest()

    def trusted_root(self) -> bytes:
        der = self.log_key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        doc = {
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [
                {
                    "baseUrl": "https://rekor.test",
                    "hashAlgorithm": "SHA2_256",
                    "publicKey": {
                        "rawBytes": _b64(der),
                        "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                        "validFor": {"start": "2025-01-01T00:00:00Z"},
                    },
                    "logId": {"keyId": _b64(self.log_id)},
                }
            ],
            "certificateAuthorities": [
                {
                    "uri": "https://fulcio.test",
                    "certChain": {
                        "certificates": [
                            {"rawBytes": _b64(c.public_bytes(Encoding.DER))} for c in (self.intermediate, self.root)
                        ]
                    },
                    "validFor": {"start": "2025-01-01T00:00:00Z"},
                }
            ],
            "ctlogs": [],
        }
        return json.dumps(doc).encode()

    def certify(self, key: ec.EllipticCurvePrivateKey, san: str, oidc: str = ISSUER) -> x509.Certificate:
        return leaf_certificate(self.intermediate_key, self.intermediate.subject, key, san, oidc)

    def bundle(
        self, payload: bytes, signature: bytes, cert: x509.Certificate, *, at: dt.datetime = SIGNED_AT, index: int = 7
    ) -> str:
        """cosign's `dev.sigstore.cosign/bundle` annotation for a hashedrekord entry."""
        body = {
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()}},
                "signature": {
                    "content": _b64(signature),
                    "publicKey": {"content": _b64(cert.public_bytes(Encoding.PEM))},
                },
            },
        }
        entry: dict[str, Any] = {
            "body": _b64(json.dumps(body).encode()),
            "integratedTime": int(at.timestamp()),
            "logIndex": index,
            "logID": self.log_id.hex(),
        }
        canonical = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()
        set_ = self.log_key.sign(canonical, ec.ECDSA(hashes.SHA256()))
        return json.dumps({"SignedEntryTimestamp": _b64(set_), "Payload": entry})


def simple_signing(digest: str, reference: str = "registry.test/app") -> bytes:
    return json.dumps(
        {
            "critical": {
                "identity": {"docker-reference": reference},
                "image": {"docker-manifest-digest": digest},
                "type": "cosign container image signature",
            },
            "optional": None,
        }
    ).encode()


def self_signed_lookalike(key: ec.EllipticCurvePrivateKey, san: str, oidc: str = ISSUER) -> x509.Certificate:
    """A certificate that reads like Fulcio's (same SAN and issuer extension) but that no Fulcio CA issued."""
    name = _name("sigstore-intermediate")
    return leaf_certificate(key, name, key, san, oidc)
