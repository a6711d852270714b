"""Fulcio certificates: the chain to a trusted root's certificate authorities, and the identity
(SAN) and OIDC issuer they certify (extensions 1.3.6.1.4.1.57264.1.8, or the older .1.1)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from scitt_oci.scitt.did_x509 import FULCIO_ISSUER_V1, FULCIO_ISSUER_V2, der_utf8
from scitt_oci.signatures.model import NotVerified
from scitt_oci.signatures.trust import SigstoreTrust
from scitt_oci.signatures.x509path import check_code_signing, validate


def san_of(cert: x509.Certificate) -> str:
    try:
        names = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    except x509.ExtensionNotFound:
        raise NotVerified("the signing certificate has no subjectAltName") from None
    values = [str(n.value) for n in names]  # type: ignore[attr-defined]
    if len(values) != 1:
        raise NotVerified(f"the signing certificate names {len(values)} identities; Fulcio issues exactly one")
    return values[0]


def _der_utf8(value: bytes) -> str:
    try:
        return der_utf8(value).decode("utf-8", "replace")
    except ValueError as exc:
        raise NotVerified(f"the OIDC issuer extension {exc}") from None


def oidc_issuer_of(cert: x509.Certificate) -> str | None:
    for ext in cert.extensions:
        if ext.oid == FULCIO_ISSUER_V2 and isinstance(ext.value, x509.UnrecognizedExtension):
            return _der_utf8(ext.value.value)
    for ext in cert.extensions:
        if ext.oid == FULCIO_ISSUER_V1 and isinstance(ext.value, x509.UnrecognizedExtension):
            return ext.value.value.decode("utf-8", "replace")
    return None


def validate_fulcio(
    leaf: x509.Certificate, extra: Sequence[x509.Certificate], trust: SigstoreTrust, at: dt.datetime
) -> list[x509.Certificate]:
    """The path from `leaf` to a Fulcio CA of `trust` that was issuing at `at`, valid at `at`."""
    authorities = [ca for ca in trust.authorities if ca.covers(at)]
    if not authorities:
        raise NotVerified(f"trusted root {trust.name!r} has no Fulcio certificate authority valid at {at.isoformat()}")
    roots = [c for ca in authorities for c in ca.chain if c.issuer == c.subject]
    intermediates = [c for ca in authorities for c in ca.chain if c.issuer != c.subject]
    path = validate([leaf, *extra], roots, at, extra_intermediates=intermediates)
    check_code_signing(leaf)
    return path
