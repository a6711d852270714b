"""Certificate paths for signatures: thumbprints, a validated path to configured roots at a given
time, and the distinguished-name matching of Notation's trusted identities.

Path validation is `cryptography`'s RFC 5280 verifier (Web PKI rules for the CAs, none for the
leaf: code-signing leaves carry no server or client EKU), preceded by our own validity-window
check so that an expired or not-yet-valid certificate is reported as exactly that.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID
from cryptography.x509.verification import ExtensionPolicy, PolicyBuilder, Store, VerificationError

from scitt_oci.signatures.model import NotVerified

MAX_CHAIN = 8


def thumbprint(cert: x509.Certificate) -> str:
    """`sha256:<hex>` of the certificate's DER: the form Notation's thumbprint annotation uses."""
    return "sha256:" + hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def key_id(key: object) -> str:
    """`sha256:<hex>` of a public key's SubjectPublicKeyInfo (DER)."""
    spki = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)  # type: ignore[attr-defined]
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def describe(cert: x509.Certificate) -> str:
    return repr(cert.subject.rfc4514_string())


def check_window(cert: x509.Certificate, at: dt.datetime, what: str = "certificate") -> None:
    if at < cert.not_valid_before_utc:
        raise NotVerified(
            f"{what} {describe(cert)} is not valid before {cert.not_valid_before_utc.isoformat()} "
            f"(checked at {at.isoformat()})"
        )
    if at > cert.not_valid_after_utc:
        raise NotVerified(
            f"{what} {describe(cert)} expired at {cert.not_valid_after_utc.isoformat()} (checked at {at.isoformat()})"
        )


def validate(
    chain: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    at: dt.datetime,
    *,
    extra_intermediates: Sequence[x509.Certificate] = (),
) -> list[x509.Certificate]:
    """The validated path from `chain[0]` (leaf first; the rest are candidate intermediates) to one of
    `roots`, valid at `at`; `NotVerified` naming the rule broken."""
    if not chain:
        raise NotVerified("the signature carries no certificate")
    if len(chain) > MAX_CHAIN:
        raise NotVerified(f"the certificate chain holds {len(chain)} certificates; at most {MAX_CHAIN} are accepted")
    if not roots:
        raise NotVerified("no roots are configured for this trust entry")
    for cert in chain:
        check_window(cert, at)
    builder = (
        PolicyBuilder()
        .store(Store(list(roots)))
        .time(at)
        .max_chain_depth(MAX_CHAIN)
        .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ExtensionPolicy.permit_all())
    )
    try:
        verified = builder.build_client_verifier().verify(chain[0], [*chain[1:], *extra_intermediates])
    except VerificationError as exc:
        raise NotVerified(f"certificate {describe(chain[0])} does not chain to a configured root: {exc}") from None
    return list(verified.chain)


def check_code_signing(leaf: x509.Certificate) -> None:
    """The leaf may sign code: keyUsage digitalSignature and, when it has EKUs, codeSigning among them."""
    try:
        usage = leaf.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE).value
        if not usage.digital_signature:  # type: ignore[attr-defined]
            raise NotVerified(f"certificate {describe(leaf)} is not for digital signatures (keyUsage)")
    except x509.ExtensionNotFound:
        pass
    try:
        eku = leaf.extensions.get_extension_for_oid(ExtensionOID.EXTENDED_KEY_USAGE).value
    except x509.ExtensionNotFound:
        return
    if ExtendedKeyUsageOID.CODE_SIGNING not in eku:  # type: ignore[operator]
        raise NotVerified(f"certificate {describe(leaf)} is not for code signing (extendedKeyUsage)")


_DN_ATTRIBUTES = {
    "C": "2.5.4.6",
    "ST": "2.5.4.8",
    "S": "2.5.4.8",
    "L": "2.5.4.7",
    "O": "2.5.4.10",
    "OU": "2.5.4.11",
    "CN": "2.5.4.3",
    "SERIALNUMBER": "2.5.4.5",
    "EMAILADDRESS": "1.2.840.113549.1.9.1",
    "E": "1.2.840.113549.1.9.1",
}


def parse_dn(text: str) -> dict[str, str]:
    """A distinguished name as Notation's trust policy writes it ("C=US, ST=WA, O=Notary"): OID -> value.
    `ValueError` on an attribute it does not know or a repeated one."""
    out: dict[str, str] = {}
    for part in _split_dn(text):
        name, sep, value = part.partition("=")
        oid = _DN_ATTRIBUTES.get(name.strip().upper())
        if not sep or oid is None or not value.strip():
            raise ValueError(f"{part.strip()!r} is not NAME=value with NAME one of {', '.join(sorted(_DN_ATTRIBUTES))}")
        if oid in out:
            raise ValueError(f"attribute {name.strip()} appears twice")
        out[oid] = value.strip()
    if not out:
        raise ValueError("the distinguished name is empty")
    return out


def _split_dn(text: str) -> list[str]:
    parts, current, escaped = [], "", False
    for ch in text:
        if escaped:
            current += ch
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p for p in parts if p.strip()]


def subject_attributes(cert: x509.Certificate) -> dict[str, str]:
    return {a.oid.dotted_string: str(a.value) for a in cert.subject}


def dn_matches(wanted: dict[str, str], cert: x509.Certificate) -> bool:
    """Notation's rule: every attribute the trusted identity names is in the leaf's subject, equal."""
    have = subject_attributes(cert)
    return all(have.get(oid) == value for oid, value in wanted.items())
