"""X.509 issuer identities in COSE headers (RFC 9360: x5chain 33, x5t 34) and path validation.

Path validation is `cryptography`'s RFC 5280 verifier with Web PKI rules for the CAs and no EKU
or SAN demands on the leaf: code-signing leaves carry neither server nor client EKUs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.verification import ExtensionPolicy, PolicyBuilder, Store, VerificationError

from scitt_oci.cose import headers
from scitt_oci.cose.hash_envelope import HASHES
from scitt_oci.errors import MalformedError, SignatureError, UnsupportedError, UntrustedKeyError

MAX_CHAIN = 8


def chain_of(protected: dict[Any, Any], unprotected: dict[Any, Any]) -> list[x509.Certificate]:
    """The x5chain certificates, leaf first; protected header preferred. Empty when there is none."""
    raw = protected.get(headers.X5CHAIN)
    if raw is None:
        raw = unprotected.get(headers.X5CHAIN) if unprotected else None
        if raw is None:
            return []
    items = [raw] if isinstance(raw, bytes) else raw
    if not isinstance(items, list) or not items or not all(isinstance(c, bytes) for c in items):
        raise MalformedError("x5chain (33) must be a certificate byte string or an array of them")
    if len(items) > MAX_CHAIN:
        raise MalformedError(f"x5chain (33) holds {len(items)} certificates; at most {MAX_CHAIN} are accepted")
    try:
        return [x509.load_der_x509_certificate(c) for c in items]
    except ValueError as exc:
        raise MalformedError(f"x5chain (33) holds a certificate that cannot be parsed: {exc}") from None


def check_x5t(protected: dict[Any, Any], leaf: x509.Certificate) -> None:
    """If x5t (34) is present, it must be the thumbprint of `leaf`."""
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


def validate_path(
    chain: Sequence[x509.Certificate], roots: Sequence[x509.Certificate], at: dt.datetime | None = None
) -> list[x509.Certificate]:
    """Build and validate a path from `chain[0]` to one of `roots`; returns the validated chain."""
    if not chain:
        raise MalformedError("no certificate chain to validate")
    if not roots:
        raise UntrustedKeyError("no X.509 roots are configured to validate the issuer's chain against")
    when = at or dt.datetime.now(dt.UTC)
    builder = (
        PolicyBuilder()
        .store(Store(list(roots)))
        .time(when)
        .max_chain_depth(MAX_CHAIN)
        .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ExtensionPolicy.permit_all())
    )
    try:
        verified = builder.build_client_verifier().verify(chain[0], list(chain[1:]))
    except VerificationError as exc:
        subject = chain[0].subject.rfc4514_string()
        raise UntrustedKeyError(f"certificate {subject!r} does not chain to a trusted root: {exc}") from None
    return list(verified.chain)
