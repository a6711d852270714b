"""Signature trust: what the operator's configuration names, parsed. Nothing else is trusted.

- Notation: trust stores of CA roots (signing scheme `notary.x509`) and signing-authority roots
  (`notary.x509.signingAuthority`), with trusted identities as Notation's trust policy writes them
  (`x509.subject: C=US, ST=WA, O=Notary`, or `*` for any leaf under those roots).
- cosign with a key: public keys (PEM).
- Sigstore (cosign keyless and Sigstore bundles): a trusted root in the `trusted_root.json` format
  (Fulcio CAs, Rekor keys), with the identities (SAN glob) and OIDC issuers expected.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import fnmatch
import json
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

from scitt_oci.cose.algorithms import PUBLIC_KEY_TYPES, PublicKey
from scitt_oci.errors import PolicyError
from scitt_oci.signatures.x509path import der_certificate, key_id, parse_dn

ANY_IDENTITY = "*"
MAX_TRUSTED_ROOT_BYTES = 1 << 20


@dataclass(frozen=True)
class TrustedIdentity:
    """One Notation trusted identity: `*`, or `x509.subject: <DN>` (every named attribute must match)."""

    text: str
    attributes: dict[str, str] | None  # None: any identity

    @classmethod
    def parse(cls, text: str) -> TrustedIdentity:
        if text.strip() == ANY_IDENTITY:
            return cls(ANY_IDENTITY, None)
        prefix, sep, dn = text.partition(":")
        if not sep or prefix.strip() != "x509.subject":
            raise PolicyError(f"trusted identity {text!r} must be '*' or 'x509.subject: <distinguished name>'")
        try:
            attributes = parse_dn(dn)
        except ValueError as exc:
            raise PolicyError(f"trusted identity {text!r}: {exc}") from None
        # Notation's trust policy: each identity names at least C, ST (or S) and O.
        missing = [
            name for name, oid in (("C", "2.5.4.6"), ("ST", "2.5.4.8"), ("O", "2.5.4.10")) if oid not in attributes
        ]
        if missing:
            raise PolicyError(
                f"trusted identity {text!r} must name C, ST and O at least (missing {', '.join(missing)})"
            )
        return cls(text.strip(), attributes)


@dataclass(frozen=True)
class NotationTrustStore:
    name: str
    ca: tuple[x509.Certificate, ...] = ()
    signing_authority: tuple[x509.Certificate, ...] = ()
    trusted_identities: tuple[TrustedIdentity, ...] = ()
    tsa: tuple[x509.Certificate, ...] = ()  # timestamping roots: RFC 3161 countersignatures verify under these


@dataclass(frozen=True)
class CosignKey:
    name: str
    key: PublicKey

    @property
    def key_id(self) -> str:
        return key_id(self.key)


@dataclass(frozen=True)
class SigstoreIdentity:
    """An expected signer: the certificate's SAN (a glob) and its OIDC issuer (exact)."""

    san: str
    issuer: str

    def matches(self, san: str, issuer: str | None) -> bool:
        return issuer == self.issuer and fnmatch.fnmatchcase(san, self.san)


@dataclass(frozen=True)
class CertificateAuthority:
    """A Fulcio CA of a trusted root: its chain (root last) and when it may issue."""

    chain: tuple[x509.Certificate, ...]
    start: dt.datetime | None
    end: dt.datetime | None

    def covers(self, when: dt.datetime) -> bool:
        return (self.start is None or when >= self.start) and (self.end is None or when <= self.end)


@dataclass(frozen=True)
class LogKey:
    """A Rekor log's key of a trusted root, named by its log id (SHA-256 of the key's DER)."""

    log_id: bytes
    key: PublicKey
    start: dt.datetime | None
    end: dt.datetime | None


@dataclass(frozen=True)
class SigstoreTrust:
    name: str
    trusted_root: bytes  # the trusted_root.json document
    identities: tuple[SigstoreIdentity, ...]
    authorities: tuple[CertificateAuthority, ...] = ()
    log_keys: tuple[LogKey, ...] = ()

    @classmethod
    def from_trusted_root(cls, name: str, document: bytes, identities: tuple[SigstoreIdentity, ...]) -> SigstoreTrust:
        authorities, log_keys = parse_trusted_root(document)
        return cls(name, document, identities, authorities, log_keys)

    def identity_matches(self, san: str, issuer: str | None) -> bool:
        return any(i.matches(san, issuer) for i in self.identities)


@dataclass(frozen=True)
class SignatureTrust:
    notation: tuple[NotationTrustStore, ...] = ()
    cosign_keys: tuple[CosignKey, ...] = ()
    sigstore: tuple[SigstoreTrust, ...] = ()
    names: tuple[str, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        names = [
            *(t.name for t in self.notation),
            *(k.name for k in self.cosign_keys),
            *(t.name for t in self.sigstore),
        ]
        duplicate = sorted({n for n in names if names.count(n) > 1})
        if duplicate:
            raise PolicyError(f"signature trust entries need distinct names; repeated: {', '.join(duplicate)}")
        object.__setattr__(self, "names", tuple(names))

    @property
    def empty(self) -> bool:
        return not self.names


def load_public_key(data: bytes, where: str) -> PublicKey:
    try:
        key = load_pem_public_key(data)
    except ValueError as exc:
        raise PolicyError(f"{where}: not a PEM public key: {exc}") from None
    if not isinstance(key, PUBLIC_KEY_TYPES):
        raise PolicyError(f"{where}: {type(key).__name__} keys are not supported (EC, RSA or Ed25519)")
    return key


def _time(value: object, where: str) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise PolicyError(f"trusted root: {where} must be an RFC 3339 time")
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise PolicyError(f"trusted root: {where} {value!r} is not an RFC 3339 time") from None


def _b64(value: object, where: str) -> bytes:
    if not isinstance(value, str):
        raise PolicyError(f"trusted root: {where} must be base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise PolicyError(f"trusted root: {where} is not valid base64") from None


def _chain(certs: list[Any], where: str) -> tuple[x509.Certificate, ...]:
    """A certificate authority's chain from its `certificates` entries (base64 DER under rawBytes)."""
    chain = []
    for position, c in enumerate(certs, 1):
        what = f"{where} certificate {position} of {len(certs)}"
        if not isinstance(c, dict):
            raise PolicyError(f"trusted root: {what} must be an object with rawBytes")
        try:
            chain.append(der_certificate(_b64(c.get("rawBytes"), what), what))
        except ValueError as exc:
            raise PolicyError(f"trusted root: {exc}") from None
    return tuple(chain)


def _valid_for(item: dict[str, Any], where: str) -> tuple[dt.datetime | None, dt.datetime | None]:
    span = item.get("validFor") or {}
    if not isinstance(span, dict):
        raise PolicyError(f"trusted root: {where}.validFor must be an object")
    return _time(span.get("start"), f"{where}.validFor.start"), _time(span.get("end"), f"{where}.validFor.end")


def parse_trusted_root(document: bytes) -> tuple[tuple[CertificateAuthority, ...], tuple[LogKey, ...]]:
    """The Fulcio CAs and Rekor keys of a Sigstore `trusted_root.json`."""
    if len(document) > MAX_TRUSTED_ROOT_BYTES:
        raise PolicyError(f"trusted root is larger than {MAX_TRUSTED_ROOT_BYTES} bytes")
    try:
        doc = json.loads(document)
    except ValueError as exc:
        raise PolicyError(f"trusted root is not JSON: {exc}") from None
    if not isinstance(doc, dict) or not str(doc.get("mediaType", "")).startswith(
        "application/vnd.dev.sigstore.trustedroot"
    ):
        raise PolicyError("trusted root: mediaType must be application/vnd.dev.sigstore.trustedroot+json;version=0.1")
    authorities = []
    for i, ca in enumerate(doc.get("certificateAuthorities") or []):
        where = f"certificateAuthorities[{i}]"
        if not isinstance(ca, dict):
            raise PolicyError(f"trusted root: {where} must be an object")
        held = ca.get("certChain") or {}
        certs = (held.get("certificates") if isinstance(held, dict) else None) or []
        if not isinstance(certs, list):
            raise PolicyError(f"trusted root: {where}.certChain.certificates must be an array")
        chain = _chain(certs, where)
        if not chain:
            raise PolicyError(f"trusted root: {where} has no certificates")
        authorities.append(CertificateAuthority(chain, *_valid_for(ca, where)))
    log_keys = []
    for i, tlog in enumerate(doc.get("tlogs") or []):
        where = f"tlogs[{i}]"
        if not isinstance(tlog, dict) or not isinstance(tlog.get("publicKey"), dict):
            raise PolicyError(f"trusted root: {where} must be an object with a publicKey")
        der = _b64(tlog["publicKey"].get("rawBytes"), f"{where}.publicKey.rawBytes")
        try:
            key = load_der_public_key(der)
        except ValueError as exc:
            raise PolicyError(f"trusted root: {where}.publicKey cannot be read: {exc}") from None
        if not isinstance(key, PUBLIC_KEY_TYPES):
            raise PolicyError(f"trusted root: {where}.publicKey is a {type(key).__name__}, not EC, RSA or Ed25519")
        log_id = _b64((tlog.get("logId") or {}).get("keyId"), f"{where}.logId.keyId")
        log_keys.append(LogKey(log_id, key, *_valid_for(tlog["publicKey"], f"{where}.publicKey")))
    return tuple(authorities), tuple(log_keys)
