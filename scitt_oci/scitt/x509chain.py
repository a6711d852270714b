"""X.509 issuer identities in COSE headers (RFC 9360: x5chain 33, x5t 34), path validation, and the
binding of a statement's `iss` to its certificate.

Only the protected header identifies the issuer: an `x5chain` is honoured when it is protected, or
when it sits in the unprotected header with a protected `x5t` pinning its leaf (RFC 9943 allows
that form); an unprotected chain nothing pins is ignored, since anyone can swap it.

Path validation is `cryptography`'s RFC 5280 verifier with Web PKI rules for the CAs and no EKU
or SAN demands on the leaf: code-signing leaves carry neither server nor client EKUs. That verifier
accepts ECDSA (P-256, P-384, P-521) and RSA for CA keys and certificate signatures; a chain whose CA
keys or signatures are Ed25519 or Ed448 is refused with a reason saying so (an Ed25519 leaf key under
an ECDSA or RSA CA is fine).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed448, ed25519
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import SignatureAlgorithmOID
from cryptography.x509.verification import VerificationError

from scitt_oci.cose import headers
from scitt_oci.cose.hash_envelope import HASHES
from scitt_oci.errors import MalformedError, SignatureError, UnsupportedChainError, UnsupportedError, UntrustedKeyError
from scitt_oci.scitt import did_x509
from scitt_oci.signatures.x509path import MAX_CHAIN, der_certificate, path_to_root

UNPROTECTED_CHAIN_IGNORED = (
    "x5chain (33) is in the unprotected header, which the signature does not cover, and no x5t (34) in the "
    "protected header pins its leaf: it is ignored (put the chain in the protected header, or pin its leaf with x5t)"
)
_EDDSA_SIGNATURES = (SignatureAlgorithmOID.ED25519, SignatureAlgorithmOID.ED448)


def chain_of(protected: Mapping[Any, Any], unprotected: Mapping[Any, Any]) -> list[x509.Certificate]:
    """The x5chain certificates the protected header vouches for, leaf first; empty when there are none.

    A protected x5chain wins. An unprotected one counts only when a protected x5t names its leaf
    (`check_x5t` then holds the leaf to it); otherwise it is ignored (UNPROTECTED_CHAIN_IGNORED says why).
    """
    raw = protected.get(headers.X5CHAIN)
    if raw is None:
        if headers.X5T not in protected or not unprotected:
            return []
        raw = unprotected.get(headers.X5CHAIN)
        if raw is None:
            return []
    items = [raw] if isinstance(raw, bytes) else raw
    if not isinstance(items, list) or not items or not all(isinstance(c, bytes) for c in items):
        raise MalformedError("x5chain (33) must be a certificate byte string or an array of them")
    if len(items) > MAX_CHAIN:
        raise MalformedError(f"x5chain (33) holds {len(items)} certificates; at most {MAX_CHAIN} are accepted")
    chain = []
    for position, der in enumerate(items, 1):
        try:
            chain.append(der_certificate(der, f"x5chain (33) certificate {position} of {len(items)}"))
        except ValueError as exc:
            raise MalformedError(str(exc)) from None
    return chain


def check_x5t(protected: Mapping[Any, Any], leaf: x509.Certificate) -> None:
    """If x5t (34) is in the protected header, it must be the thumbprint of `leaf`."""
    x5t = protected.get(headers.X5T)
    if x5t is None:
        return
    if not isinstance(x5t, list) or len(x5t) != 2 or not isinstance(x5t[1], bytes):
        raise MalformedError("x5t (34) must be [hash-alg, hash-value]")
    alg = x5t[0]
    if isinstance(alg, bool) or not isinstance(alg, int) or alg not in HASHES:
        raise UnsupportedError(f"x5t hash algorithm {alg!r} is not supported")
    der = leaf.public_bytes(Encoding.DER)
    if hashlib.new(HASHES[alg][0], der).digest() != x5t[1]:
        raise SignatureError("x5t (34) does not match the leaf certificate of x5chain (33)")


def eddsa_ca_problem(cert: x509.Certificate, *, as_ca: bool) -> str | None:
    """Why `cert` cannot be part of a path here: an EdDSA signature on it, or (for a CA) an EdDSA key."""
    if cert.signature_algorithm_oid in _EDDSA_SIGNATURES:
        return f"certificate {cert.subject.rfc4514_string()!r} is signed with {cert.signature_algorithm_oid._name}"
    if as_ca and isinstance(cert.public_key(), (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return f"CA certificate {cert.subject.rfc4514_string()!r} has an EdDSA key"
    return None


def eddsa_refusal(problem: str) -> str:
    return (
        f"{problem}: X.509 chains are validated with RFC 5280 rules that accept ECDSA (P-256, P-384, P-521) and "
        "RSA CA keys and certificate signatures; Ed25519 and Ed448 CA certificates are not supported "
        "(an Ed25519 leaf key under an ECDSA or RSA CA is)"
    )


def validate_path(
    chain: Sequence[x509.Certificate], roots: Sequence[x509.Certificate], at: dt.datetime
) -> list[x509.Certificate]:
    """Build and validate a path from `chain[0]` to one of `roots` at time `at`; returns the validated chain."""
    if not chain:
        raise MalformedError("no certificate chain to validate")
    if not roots:
        raise UntrustedKeyError("no X.509 roots are configured to validate the issuer's chain against")
    for i, cert in enumerate(chain):
        problem = eddsa_ca_problem(cert, as_ca=i > 0)
        if problem:
            raise UnsupportedChainError(eddsa_refusal(problem))
    usable = [r for r in roots if eddsa_ca_problem(r, as_ca=True) is None]
    if not usable:
        raise UnsupportedChainError(eddsa_refusal(str(eddsa_ca_problem(roots[0], as_ca=True))))
    try:
        return path_to_root(chain[0], chain[1:], usable, at)
    except VerificationError as exc:
        subject = chain[0].subject.rfc4514_string()
        when = at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        raise UntrustedKeyError(f"certificate {subject!r} does not chain to a trusted root at {when}: {exc}") from None


# ----- binding iss to the certificate -----


@dataclass(frozen=True)
class CertificateRule:
    """What the leaf certificate must show: every subject attribute listed, one of the SANs, every EKU."""

    subject: tuple[tuple[str, str], ...] = ()  # (label such as CN, or dotted OID; value)
    san: tuple[tuple[str, str], ...] = ()  # (email | dns | uri, value): any one of them
    eku: tuple[str, ...] = ()  # dotted OIDs: all of them

    @classmethod
    def parse(cls, value: object) -> CertificateRule:
        """From a mapping `{subject: {CN: ..., O: ...}, san: [email:...], eku: [OID, ...]}` (a policy's
        `certificate`); MalformedError names the field that is wrong."""
        if not isinstance(value, Mapping):
            raise MalformedError("must be a mapping of subject, san and eku")
        unknown = sorted(str(k) for k in set(value) - {"subject", "san", "eku"})
        if unknown:
            raise MalformedError(f"unknown key(s) {', '.join(map(repr, unknown))} (allowed: eku, san, subject)")
        subject = value.get("subject") or {}
        if not isinstance(subject, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in subject.items()
        ):
            raise MalformedError("subject: must map attribute names (CN, O, OU, C, L, ST, STREET or an OID) to text")
        for k in subject:
            if k not in did_x509.LABELS and not did_x509.OID.match(k):
                raise MalformedError(f"subject: {k!r} is not CN, L, ST, O, OU, C, STREET or a dotted OID")
        sans_raw = value.get("san") or []
        sans_raw = [sans_raw] if isinstance(sans_raw, str) else sans_raw
        if not isinstance(sans_raw, list):
            raise MalformedError("san: must be a string such as email:release@example.com, or a list of them")
        sans = []
        for item in sans_raw:
            kind, sep, text = item.partition(":") if isinstance(item, str) else ("", "", "")
            if not sep or kind not in did_x509.SAN_TYPES or not text:
                raise MalformedError(f"san: {item!r} must be email:..., dns:... or uri:...")
            sans.append((kind, text))
        ekus = value.get("eku") or []
        ekus = [ekus] if isinstance(ekus, str) else ekus
        if not isinstance(ekus, list) or not all(isinstance(e, str) and did_x509.OID.match(e) for e in ekus):
            raise MalformedError("eku: must be a list of dotted OIDs, e.g. 1.3.6.1.5.5.7.3.3 (code signing)")
        rule = cls(tuple((str(k), str(v)) for k, v in subject.items()), tuple(sans), tuple(ekus))
        if not rule:
            raise MalformedError("names no subject, san or eku")
        return rule

    def __bool__(self) -> bool:
        return bool(self.subject or self.san or self.eku)

    def problem(self, leaf: x509.Certificate) -> str | None:
        have = did_x509.subject_map(leaf)
        for key, want in self.subject:
            if have.get(key) != want:
                return f"subject {key} is {have.get(key)!r}, not {want!r}"
        if self.san and not any(s in did_x509.san_list(leaf) for s in self.san):
            wanted = ", ".join(f"{t}:{v}" for t, v in self.san)
            return f"no SAN among {wanted} (the certificate has {did_x509.san_list(leaf) or 'none'})"
        ekus = did_x509.eku_list(leaf)
        for oid in self.eku:
            if oid not in ekus:
                return f"EKU {oid} is not among {ekus or 'none'}"
        return None


@dataclass(frozen=True)
class IssuerBinding:
    """How a trusted issuer's `iss` is tied to its certificate.

    - `iss` a did:x509: the statement's iss must equal it (and, like every did:x509 iss, resolve
      against the validated chain);
    - `iss` any other string: the statement's iss must equal it and the leaf must satisfy `rule`;
    - no `iss`: the statement's own iss must be a did:x509 that its chain proves.
    """

    iss: str | None = None
    rule: CertificateRule = CertificateRule()


def check_binding(iss: str | None, chain: Sequence[x509.Certificate], binding: IssuerBinding) -> str:
    """How `iss` is bound to `chain` under `binding` (a short description); UntrustedKeyError when it is not.

    A did:x509 `iss` must already have been resolved against `chain` (statement.verify does that).
    """
    if binding.iss is not None and iss != binding.iss:
        raise UntrustedKeyError(f"iss is {iss!r}, not {binding.iss!r}")
    leaf = chain[0]
    if binding.rule:
        problem = binding.rule.problem(leaf)
        if problem:
            raise UntrustedKeyError(
                f"certificate {leaf.subject.rfc4514_string()!r} does not match the issuer's rule: {problem}"
            )
    if did_x509.is_did_x509(iss):
        return "did:x509"
    if binding.iss is None:
        raise UntrustedKeyError(
            f"iss {iss!r} is not a did:x509 identifier its certificate proves, and the issuer entry binds no iss "
            "to its certificates (name an iss with certificate rules, or a did:x509 iss)"
        )
    if not binding.rule:
        raise UntrustedKeyError(
            f"iss {iss!r} is not bound to certificate {leaf.subject.rfc4514_string()!r}: the issuer entry names no "
            "certificate rule (subject, san or eku)"
        )
    return "certificate rule"
