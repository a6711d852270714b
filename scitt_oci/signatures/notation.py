"""Notation signature envelopes (notaryproject specification v1.1): JWS JSON serialization
(`application/jose+json`) and COSE_Sign1 (`application/cose`).

A Notation signature verifies here when, in order: the envelope's signature holds under its leaf
certificate; the payload's `targetArtifact` has the subject's digest, size and media type; the
envelope has not passed its `io.cncf.notary.expiry`; the chain validates to a configured trust
store of the kind its signing scheme names (CA for `notary.x509`, signing authority for
`notary.x509.signingAuthority`) at the time of verification; and the leaf's subject is one of
that store's trusted identities.

Signing time, as Notation's trust policy has it (`verifyTimestamp: always`): when the trust store
names TSA roots and the signing scheme is `notary.x509`, the envelope must carry an RFC 3161
timestamp countersignature that verifies under them, and the chain must be valid over the whole
time it proves (genTime plus or minus its accuracy). Otherwise the chain must be valid at the time
of verification, and a timestamp the envelope carries is said to be unchecked. Revocation (OCSP,
CRL) is not checked.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from scitt_oci import b64url
from scitt_oci.cose import algorithms, cbor
from scitt_oci.errors import ScittOciError
from scitt_oci.signatures import timestamp as tsp
from scitt_oci.signatures.model import Format, NotVerified, SignatureCheck
from scitt_oci.signatures.trust import NotationTrustStore, SignatureTrust
from scitt_oci.signatures.x509path import (
    MAX_CHAIN,
    check_code_signing,
    der_certificate,
    dn_matches,
    render_dn,
    thumbprint,
    validate,
)

JWS = "application/jose+json"
COSE = "application/cose"
MEDIA_TYPES = (JWS, COSE)
PAYLOAD_TYPE = "application/vnd.cncf.notary.payload.v1+json"
SCHEME_CA = "notary.x509"
SCHEME_AUTHORITY = "notary.x509.signingAuthority"
SIGNING_SCHEME = "io.cncf.notary.signingScheme"
SIGNING_TIME = "io.cncf.notary.signingTime"
EXPIRY = "io.cncf.notary.expiry"
AUTHENTIC_TIME = "io.cncf.notary.authenticSigningTime"
TIMESTAMP = "io.cncf.notary.timestampSignature"
UNDERSTOOD_CRITICAL = frozenset({SIGNING_SCHEME, EXPIRY, AUTHENTIC_TIME})
MAX_ENVELOPE_BYTES = 256 * 1024
ALGORITHMS = ("PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
TIMESTAMP_NOT_CHECKED = (
    "the envelope's RFC 3161 timestamp was not checked; the chain was validated at verification time"
)
NO_TIMESTAMP = "no timestamp; the chain was validated at verification time"


@dataclass(frozen=True)
class Subject:
    """What the signature must name: the signed manifest's descriptor as the registry serves it."""

    digest: str
    size: int
    media_type: str


@dataclass(frozen=True)
class Envelope:
    alg: algorithms.Algorithm
    signed: bytes  # the bytes the signature is over
    signature: bytes
    payload: bytes
    chain: list[x509.Certificate]
    scheme: str
    expiry: dt.datetime | None
    timestamp: bytes | None  # the RFC 3161 TimeStampToken countersigning `signature`
    authentic_time: dt.datetime | None = None  # notary.x509.signingAuthority: the signing authority's signed time


def _b64url(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise NotVerified(f"JWS {what} must be base64url text")
    try:
        return b64url.decode(value)
    except ValueError:
        raise NotVerified(f"JWS {what} is not unpadded base64url") from None


def _certificates(items: object, where: str, decode: Any) -> list[x509.Certificate]:
    if not isinstance(items, list) or not items:
        raise NotVerified(f"{where} must be a non-empty array of certificates")
    if len(items) > MAX_CHAIN:
        raise NotVerified(f"{where} holds {len(items)} certificates; at most {MAX_CHAIN} are accepted")
    chain = []
    for position, item in enumerate(items, 1):
        what = f"{where} certificate {position} of {len(items)}"
        try:
            der = decode(item)
        except (ValueError, TypeError, binascii.Error):
            raise NotVerified(f"{what} cannot be read: not an encoded certificate") from None
        try:
            chain.append(der_certificate(der, what))
        except ValueError as exc:
            raise NotVerified(str(exc)) from None
    return chain


def _check_times(protected: dict[Any, Any]) -> dt.datetime | None:
    """Each scheme's required time header (signingTime for notary.x509, authenticSigningTime for the other);
    the authentic one, if any."""
    scheme = protected.get(SIGNING_SCHEME)
    if scheme == SCHEME_CA and SIGNING_TIME not in protected:
        raise NotVerified(f"a {SCHEME_CA} envelope needs {SIGNING_TIME}")
    if scheme == SCHEME_AUTHORITY:
        if AUTHENTIC_TIME not in protected or AUTHENTIC_TIME not in (protected.get("crit") or protected.get(2) or []):
            raise NotVerified(f"a {SCHEME_AUTHORITY} envelope needs the critical {AUTHENTIC_TIME}")
        return _time(protected[AUTHENTIC_TIME], AUTHENTIC_TIME)
    return None


def _check_critical(crit: object, protected: dict[Any, Any]) -> None:
    if not isinstance(crit, list) or SIGNING_SCHEME not in crit:
        raise NotVerified(f"the protected header's crit must list {SIGNING_SCHEME}")
    unknown = [c for c in crit if c not in UNDERSTOOD_CRITICAL]
    if unknown:
        raise NotVerified(f"critical header(s) {unknown} are not supported by this verifier")
    missing = [c for c in crit if c not in protected]
    if missing:
        raise NotVerified(f"critical header(s) {missing} are not in the protected header")


def _time(value: object, what: str) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
    raise NotVerified(f"{what} {value!r} is not a time")


def _token(value: object, decode: Any) -> bytes | None:
    if value is None:
        return None
    try:
        token = decode(value)
    except (TypeError, ValueError, binascii.Error):
        raise NotVerified(f"{TIMESTAMP} cannot be read") from None
    if not isinstance(token, bytes):
        raise NotVerified(f"{TIMESTAMP} must be a byte string")
    return token


def _read_jws(data: bytes) -> Envelope:
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise NotVerified(f"the JWS envelope is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise NotVerified("the JWS envelope must be a JSON object (flattened JSON serialization)")
    protected_b64 = doc.get("protected")
    payload_b64 = doc.get("payload")
    raw_protected = _b64url(protected_b64, "protected header")
    try:
        protected = json.loads(raw_protected)
    except ValueError:
        raise NotVerified("the JWS protected header is not JSON") from None
    if not isinstance(protected, dict):
        raise NotVerified("the JWS protected header must be a JSON object")
    alg_name = protected.get("alg")
    if alg_name not in ALGORITHMS:
        raise NotVerified(f"JWS alg {alg_name!r} is not one Notation allows ({', '.join(ALGORITHMS)})")
    if protected.get("cty") != PAYLOAD_TYPE:
        raise NotVerified(f"JWS cty {protected.get('cty')!r} is not {PAYLOAD_TYPE}")
    _check_critical(protected.get("crit"), protected)
    authentic = _check_times(protected)
    header = doc.get("header")
    if not isinstance(header, dict):
        raise NotVerified("the JWS unprotected header (header) is missing")
    chain = _certificates(header.get("x5c"), "JWS x5c", lambda c: base64.b64decode(c, validate=True))
    return Envelope(
        algorithms.by_name(str(alg_name)),
        f"{protected_b64}.{payload_b64}".encode("ascii", "replace"),
        _b64url(doc.get("signature"), "signature"),
        _b64url(payload_b64, "payload"),
        chain,
        str(protected.get(SIGNING_SCHEME)),
        _time(protected[EXPIRY], "expiry") if EXPIRY in protected else None,
        _token(header.get(TIMESTAMP), lambda t: base64.b64decode(t, validate=True)),
        authentic,
    )


def _read_cose(data: bytes) -> Envelope:
    try:
        value = cbor.loads(data)
    except ScittOciError as exc:
        raise NotVerified(f"the COSE envelope cannot be decoded: {exc}") from None
    if not isinstance(value, cbor2.CBORTag) or value.tag != 18:
        raise NotVerified("the COSE envelope must be a tagged COSE_Sign1 (tag 18)")
    parts = value.value
    if not isinstance(parts, list) or len(parts) != 4:
        raise NotVerified("COSE_Sign1 must be [protected, unprotected, payload, signature]")
    raw_protected, unprotected, payload, signature = parts
    if not (isinstance(raw_protected, bytes) and isinstance(unprotected, dict)):
        raise NotVerified("COSE_Sign1 protected header must be a byte string and the unprotected one a map")
    if not isinstance(payload, bytes) or not isinstance(signature, bytes):
        raise NotVerified("COSE_Sign1 payload (attached) and signature must be byte strings")
    try:
        protected = cbor.loads(raw_protected)
    except ScittOciError as exc:
        raise NotVerified(f"the COSE protected header cannot be decoded: {exc}") from None
    if not isinstance(protected, dict):
        raise NotVerified("the COSE protected header must be a map")
    try:
        alg = algorithms.by_id(protected.get(1))
    except ScittOciError as exc:
        raise NotVerified(str(exc)) from None
    if alg.name not in ALGORITHMS:
        raise NotVerified(f"COSE alg {alg.name} is not one Notation allows ({', '.join(ALGORITHMS)})")
    if protected.get(3) != PAYLOAD_TYPE:
        raise NotVerified(f"COSE content type {protected.get(3)!r} is not {PAYLOAD_TYPE}")
    _check_critical(protected.get(2), protected)
    authentic = _check_times(protected)
    chain = _certificates(unprotected.get(33), "COSE x5chain (33)", bytes)
    sig_structure = cbor.dumps(["Signature1", raw_protected, b"", payload])
    return Envelope(
        alg,
        sig_structure,
        signature,
        payload,
        chain,
        str(protected.get(SIGNING_SCHEME)),
        _time(protected[EXPIRY], "expiry") if EXPIRY in protected else None,
        _token(unprotected.get(TIMESTAMP), bytes),
        authentic,
    )


def read_envelope(data: bytes, media_type: str) -> Envelope:
    if len(data) > MAX_ENVELOPE_BYTES:
        raise NotVerified(f"the envelope is {len(data)} bytes; at most {MAX_ENVELOPE_BYTES} are accepted")
    if media_type == JWS:
        return _read_jws(data)
    if media_type == COSE:
        return _read_cose(data)
    raise NotVerified(f"envelope media type {media_type!r} is not {JWS} or {COSE}")


def _check_signature(envelope: Envelope) -> None:
    key = envelope.chain[0].public_key()
    if not isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
        raise NotVerified(f"the signing certificate holds a {type(key).__name__}, not an RSA or EC key")
    # The key decides the algorithm (no substitution): RSA 2048/3072/4096 -> PS256/384/512, P-256/384/521 -> ES256/384/512.
    if isinstance(key, rsa.RSAPublicKey):
        expected = {2048: "PS256", 3072: "PS384", 4096: "PS512"}.get(key.key_size)
        what = f"RSA {key.key_size}"
    else:
        expected = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}.get(key.curve.name)
        what = f"EC {key.curve.name}"
    if envelope.alg.name != expected:
        raise NotVerified(
            f"alg {envelope.alg.name} does not match the signing key ({what} signs with {expected or 'nothing Notation allows'})"
        )
    try:
        algorithms.verify(envelope.alg, key, envelope.signature, envelope.signed)
    except ScittOciError as exc:
        raise NotVerified(f"the envelope signature does not verify with its signing certificate: {exc}") from None


def _check_target(payload: bytes, subject: Subject) -> None:
    try:
        doc = json.loads(payload)
    except ValueError:
        raise NotVerified("the signed payload is not JSON") from None
    target = doc.get("targetArtifact") if isinstance(doc, dict) else None
    if not isinstance(target, dict):
        raise NotVerified("the signed payload has no targetArtifact")
    if target.get("digest") != subject.digest:
        raise NotVerified(f"the signature is for {target.get('digest')!r}, not the subject {subject.digest}")
    if target.get("size") != subject.size:
        raise NotVerified(f"the signed size {target.get('size')!r} is not the subject's {subject.size}")
    if target.get("mediaType") != subject.media_type:
        raise NotVerified(
            f"the signed media type {target.get('mediaType')!r} is not the subject's {subject.media_type}"
        )


def notation_subject(cert: x509.Certificate) -> str:
    """The leaf's subject as Notation's trust policy writes identities: `x509.subject: C=US, ST=WA, ...`,
    in certificate order, each value escaped as RFC 4514 has it: one rendering per name, so no other
    subject (say L="Seattle, O=Notary") can be written as the same text."""
    return "x509.subject: " + render_dn(cert.subject)


def _signing_time(store: NotationTrustStore, envelope: Envelope, now: dt.datetime) -> tuple[list[dt.datetime], str]:
    """The times the chain must be valid at, and how they were established, in words."""
    if envelope.authentic_time is not None:  # notary.x509.signingAuthority: signed by the trusted authority itself
        return [
            envelope.authentic_time
        ], f"authentic signing time {envelope.authentic_time.isoformat()} from the signing authority"
    if envelope.scheme != SCHEME_CA or not store.tsa:  # Notation verifies timestamps for notary.x509 with tsa roots
        return [now], NO_TIMESTAMP if envelope.timestamp is None else TIMESTAMP_NOT_CHECKED
    if envelope.timestamp is None:
        raise NotVerified("its tsa roots require an RFC 3161 timestamp and the envelope carries none")
    stamp = tsp.verify(envelope.timestamp, envelope.signature, store.tsa)
    how = (
        f"RFC 3161 timestamp {stamp.time.isoformat()} (accuracy {stamp.accuracy.total_seconds():g} s) verified under "
        "the trust store's TSA roots; the chain was validated over that time"
    )
    return [stamp.earliest, stamp.latest], how


def _trusted_by(store: NotationTrustStore, envelope: Envelope, now: dt.datetime) -> tuple[list[x509.Certificate], str]:
    if envelope.scheme == SCHEME_CA:
        roots = store.ca
    elif envelope.scheme == SCHEME_AUTHORITY:
        roots = store.signing_authority
    else:
        raise NotVerified(f"signing scheme {envelope.scheme!r} is not {SCHEME_CA} or {SCHEME_AUTHORITY}")
    if not roots:
        kind = "CA" if envelope.scheme == SCHEME_CA else "signing-authority"
        raise NotVerified(f"it has no {kind} roots (signing scheme {envelope.scheme})")
    times, how = _signing_time(store, envelope, now)
    paths = [validate(envelope.chain, roots, at) for at in times]  # valid at every time of the range
    path = paths[0]
    leaf = envelope.chain[0]
    check_code_signing(leaf)
    if not any(i.attributes is None or dn_matches(i.attributes, leaf) for i in store.trusted_identities):
        raise NotVerified(
            f"{notation_subject(leaf)!r} is not one of its trusted identities "
            f"({'; '.join(i.text for i in store.trusted_identities) or 'none configured'})"
        )
    return path, how


def verify(
    envelope_bytes: bytes, media_type: str, subject: Subject, trust: SignatureTrust, now: dt.datetime
) -> SignatureCheck:
    """Verify one Notation envelope over `subject` against the Notation trust stores in `trust`."""
    try:
        envelope = read_envelope(envelope_bytes, media_type)
        _check_signature(envelope)
        _check_target(envelope.payload, subject)
        if envelope.expiry is not None and now >= envelope.expiry:
            raise NotVerified(f"the signature expired at {envelope.expiry.isoformat()} ({EXPIRY})")
        if not trust.notation:
            raise NotVerified("no Notation trust store is configured")
        refusals = []
        for store in trust.notation:
            try:
                path, how = _trusted_by(store, envelope, now)
            except NotVerified as exc:
                refusals.append(f"trust store {store.name!r}: {exc.reason}")
                continue
            return SignatureCheck(
                Format.NOTATION,
                True,
                signer=notation_subject(envelope.chain[0]),
                chain=tuple(thumbprint(c) for c in path),
                anchor=store.name,
                timestamp=how,
            )
        note = f" ({TIMESTAMP_NOT_CHECKED})" if envelope.timestamp and not any(s.tsa for s in trust.notation) else ""
        raise NotVerified("; ".join(refusals) + note)
    except NotVerified as exc:
        return SignatureCheck.failed(Format.NOTATION, exc.reason)
