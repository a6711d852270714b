"""Rekor's bundle annotation on cosign classic signatures (`dev.sigstore.cosign/bundle`): the signed
entry timestamp (SET) under a trusted root's log key, and the entry body bound to the signature.

A verified SET proves that the log integrated the entry at `integratedTime`; that is the time a
short-lived Fulcio certificate is checked at.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding

from scitt_oci.signatures.model import NotVerified, as_map
from scitt_oci.signatures.trust import SigstoreTrust


@dataclass(frozen=True)
class LogEntry:
    integrated_time: dt.datetime
    log_index: int
    log_id: str  # hex


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise NotVerified(f"the Rekor bundle's {what} must be base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise NotVerified(f"the Rekor bundle's {what} is not valid base64") from None


def _verify_set(trust: SigstoreTrust, log_id: str, signed: bytes, signature: bytes, when: dt.datetime) -> None:
    keys = [k for k in trust.log_keys if k.log_id.hex() == log_id]
    if not keys:
        raise NotVerified(f"Rekor log {log_id[:16]}... is not in trusted root {trust.name!r}")
    entry = keys[0]
    if (entry.start is not None and when < entry.start) or (entry.end is not None and when > entry.end):
        raise NotVerified(
            f"Rekor log {log_id[:16]}...'s key was not valid at the entry's integrated time {when.isoformat()}"
        )
    key = entry.key
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, signed, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, signed)
        else:
            key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise NotVerified("the Rekor bundle's signed entry timestamp does not verify with the log's key") from None


def _check_body(body: dict[str, Any], payload: bytes, signature: bytes, cert: x509.Certificate) -> None:
    if body.get("kind") != "hashedrekord":
        raise NotVerified(f"the Rekor entry is a {body.get('kind')!r}; only hashedrekord entries are checked")
    spec = as_map(body.get("spec"))
    data = as_map(as_map(spec.get("data")).get("hash"))
    if data.get("algorithm") != "sha256" or data.get("value") != hashlib.sha256(payload).hexdigest():
        raise NotVerified("the Rekor entry records another payload digest")
    sig = as_map(spec.get("signature"))
    if _b64(sig.get("content"), "entry signature") != signature:
        raise NotVerified("the Rekor entry records another signature")
    recorded = _b64(as_map(sig.get("publicKey")).get("content"), "entry public key")
    try:
        recorded_cert = x509.load_pem_x509_certificate(recorded)
    except ValueError:
        raise NotVerified("the Rekor entry's public key is not the signing certificate") from None
    if recorded_cert != cert:
        raise NotVerified("the Rekor entry records another signing certificate")


def verify_bundle(
    annotation: str, trust: SigstoreTrust, payload: bytes, signature: bytes, cert: x509.Certificate
) -> LogEntry:
    """Check a cosign bundle annotation; the entry it proves, or `NotVerified`."""
    try:
        doc = json.loads(annotation)
    except ValueError:
        raise NotVerified("the Rekor bundle annotation is not JSON") from None
    entry = doc.get("Payload") if isinstance(doc, dict) else None
    if not isinstance(entry, dict):
        raise NotVerified("the Rekor bundle annotation has no Payload")
    body_b64, integrated, index, log_id = (entry.get(k) for k in ("body", "integratedTime", "logIndex", "logID"))
    if not isinstance(integrated, int) or not isinstance(index, int) or not isinstance(log_id, str):
        raise NotVerified("the Rekor bundle's Payload needs integratedTime, logIndex and logID")
    canonical = json.dumps(
        {"body": body_b64, "integratedTime": integrated, "logID": log_id, "logIndex": index},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    try:
        when = dt.datetime.fromtimestamp(integrated, dt.UTC)
    except (OverflowError, OSError, ValueError):
        raise NotVerified(f"the Rekor integratedTime {integrated} is not a time") from None
    _verify_set(trust, log_id, canonical, _b64(doc.get("SignedEntryTimestamp"), "SignedEntryTimestamp"), when)
    try:
        body = json.loads(_b64(body_b64, "body"))
    except ValueError:
        raise NotVerified("the Rekor entry body is not JSON") from None
    if not isinstance(body, dict):
        raise NotVerified("the Rekor entry body must be a JSON object")
    _check_body(body, payload, signature, cert)
    return LogEntry(when, index, log_id)
