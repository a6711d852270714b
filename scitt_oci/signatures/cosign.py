"""cosign classic signatures (`sha256-<hex>.sig` tags and cosign's OCI 1.1 referrers) and `.att`
attestations.

Each layer is checked on its own: the simple-signing payload must name the subject in
`critical.image.docker-manifest-digest` (an attestation's in-toto statement must list it among
its subjects); the signature must verify with a configured public key, or with the certificate in
the layer's annotation, which must chain to a configured Fulcio CA and certify an expected
identity and OIDC issuer. A Rekor bundle annotation, where present, must verify; its integrated
time is when the short-lived certificate is checked. Without one, the certificate is checked at
verification time (and a Fulcio certificate has long expired by then).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from scitt_oci.cose.algorithms import PublicKey
from scitt_oci.oci.manifest import Descriptor
from scitt_oci.signatures import fulcio, rekor
from scitt_oci.signatures.model import ArtifactKind, Format, NotVerified, SignatureCheck, as_list, as_map
from scitt_oci.signatures.trust import SignatureTrust
from scitt_oci.signatures.x509path import key_id, thumbprint

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
DSSE = "application/vnd.dsse.envelope.v1+json"
ANN_SIGNATURE = "dev.cosignproject.cosign/signature"
ANN_CERTIFICATE = "dev.sigstore.cosign/certificate"
ANN_CHAIN = "dev.sigstore.cosign/chain"
ANN_BUNDLE = "dev.sigstore.cosign/bundle"
ANN_PREDICATE = "predicateType"
SIMPLE_SIGNING_TYPE = "cosign container image signature"
MAX_LAYERS = 16


def _verify_with(key: object, signature: bytes, message: bytes) -> bool:
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, message)
        else:
            return False
    except (InvalidSignature, ValueError):
        return False
    return True


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError:
        raise NotVerified(f"the {what} is not JSON") from None
    if not isinstance(doc, dict):
        raise NotVerified(f"the {what} must be a JSON object")
    return doc


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise NotVerified(f"the {what} is missing")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise NotVerified(f"the {what} is not valid base64") from None


def _check_simple_signing(payload: bytes, subject_digest: str) -> None:
    doc = _json(payload, "simple-signing payload")
    critical = as_map(doc.get("critical"))
    if critical.get("type") != SIMPLE_SIGNING_TYPE:
        raise NotVerified(f"the payload's critical.type {critical.get('type')!r} is not {SIMPLE_SIGNING_TYPE!r}")
    image = as_map(critical.get("image"))
    signed = image.get("docker-manifest-digest")
    if signed != subject_digest:
        raise NotVerified(f"the signature is for {signed!r}, not the subject {subject_digest}")


def _pae(payload_type: str, payload: bytes) -> bytes:
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def _read_dsse(envelope: bytes, subject_digest: str) -> tuple[bytes, list[bytes], str | None]:
    """(PAE to verify, the signatures, the predicate type) of a DSSE in-toto attestation about the subject."""
    doc = _json(envelope, "DSSE envelope")
    payload_type = doc.get("payloadType")
    if not isinstance(payload_type, str):
        raise NotVerified("the DSSE envelope has no payloadType")
    payload = _b64(doc.get("payload"), "DSSE payload")
    sigs = doc.get("signatures")
    if not isinstance(sigs, list) or not sigs or len(sigs) > 8:
        raise NotVerified("the DSSE envelope must carry 1 to 8 signatures")
    signatures = [_b64(s.get("sig") if isinstance(s, dict) else None, "DSSE signature") for s in sigs]
    statement = _json(payload, "in-toto statement")
    digest_alg, _, digest_hex = subject_digest.partition(":")
    if not any(
        as_map(as_map(s).get("digest")).get(digest_alg) == digest_hex for s in as_list(statement.get("subject"))
    ):
        raise NotVerified(f"the attestation's subjects do not include {subject_digest}")
    predicate = statement.get("predicateType")
    return _pae(payload_type, payload), signatures, predicate if isinstance(predicate, str) else None


def _certificates(pem: str, what: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem.encode())
    except ValueError:
        raise NotVerified(f"the {what} annotation holds no PEM certificate") from None


def _by_key(trust: SignatureTrust, signatures: Sequence[bytes], message: bytes) -> SignatureCheck | None:
    for entry in trust.cosign_keys:
        if any(_verify_with(entry.key, s, message) for s in signatures):
            kid = entry.key_id
            return SignatureCheck(Format.COSIGN, True, signer=f"key {kid}", key_id=kid, anchor=entry.name)
    return None


def _by_certificate(
    trust: SignatureTrust,
    annotations: dict[str, str],
    payload: bytes,
    signatures: Sequence[bytes],
    message: bytes,
    now: dt.datetime,
) -> SignatureCheck:
    leaf, *given = _certificates(annotations[ANN_CERTIFICATE], "certificate")
    if ANN_CHAIN in annotations:
        given = _certificates(annotations[ANN_CHAIN], "chain")
    key = leaf.public_key()
    good = [s for s in signatures if _verify_with(key, s, message)]
    if not good:
        raise NotVerified("the signature does not verify with the certificate it carries")
    if not trust.sigstore:
        raise NotVerified("the signature carries a certificate and no Sigstore trusted root is configured")
    refusals = []
    for entry in trust.sigstore:
        try:
            at, how = now, "no Rekor bundle; the certificate was checked at verification time"
            if ANN_BUNDLE in annotations:
                logged = rekor.verify_bundle(annotations[ANN_BUNDLE], entry, payload, good[0], leaf)
                at, how = logged.integrated_time, f"Rekor entry {logged.log_index} integrated at {at.isoformat()}"
            path = fulcio.validate_fulcio(leaf, given, entry, at)
            san, issuer = fulcio.san_of(leaf), fulcio.oidc_issuer_of(leaf)
            if not entry.identity_matches(san, issuer):
                wanted = "; ".join(f"{i.san} from {i.issuer}" for i in entry.identities) or "none configured"
                raise NotVerified(f"{san} from {issuer} is not an expected identity ({wanted})")
        except NotVerified as exc:
            refusals.append(f"trusted root {entry.name!r}: {exc.reason}")
            continue
        return SignatureCheck(
            Format.COSIGN,
            True,
            signer=san,
            oidc_issuer=issuer,
            chain=tuple(thumbprint(c) for c in path),
            anchor=entry.name,
            timestamp=how,
        )
    raise NotVerified("; ".join(refusals))


def _verify_layer(
    layer: Descriptor, blob: bytes, subject_digest: str, trust: SignatureTrust, now: dt.datetime
) -> SignatureCheck:
    annotations = layer.annotations
    if layer.media_type == DSSE:
        message, signatures, predicate = _read_dsse(blob, subject_digest)
        kind = ArtifactKind.ATTESTATION
    elif layer.media_type == SIMPLE_SIGNING:
        _check_simple_signing(blob, subject_digest)
        message, signatures, predicate = blob, [_b64(annotations.get(ANN_SIGNATURE), "signature annotation")], None
        kind = ArtifactKind.SIGNATURE
    else:
        raise NotVerified(f"layer media type {layer.media_type!r} is not {SIMPLE_SIGNING} or {DSSE}")
    if ANN_CERTIFICATE in annotations:
        found = _by_certificate(trust, annotations, blob, signatures, message, now)
    else:
        by_key = _by_key(trust, signatures, message)
        if by_key is None:
            known = ", ".join(f"{k.name} ({k.key_id})" for k in trust.cosign_keys) or "none configured"
            raise NotVerified(f"the signature verifies with no configured cosign key (keys: {known})")
        found = by_key
    return SignatureCheck(
        Format.COSIGN,
        True,
        kind=kind,
        signer=found.signer,
        oidc_issuer=found.oidc_issuer,
        key_id=found.key_id,
        chain=found.chain,
        anchor=found.anchor,
        predicate_type=predicate,
        timestamp=found.timestamp,
    )


def kind_of(layers: Sequence[Descriptor]) -> tuple[ArtifactKind, str | None]:
    """Signature or attestation, and the predicate type an attestation's annotation claims."""
    for layer in layers:
        if layer.media_type == DSSE:
            return ArtifactKind.ATTESTATION, layer.annotations.get(ANN_PREDICATE)
    return ArtifactKind.SIGNATURE, None


def verify(
    layers: Sequence[tuple[Descriptor, bytes]], subject_digest: str, trust: SignatureTrust, now: dt.datetime
) -> SignatureCheck:
    """The first layer that verifies; otherwise not verified with every layer's reason."""
    kind, predicate = kind_of([d for d, _ in layers])
    if not layers:
        return SignatureCheck.failed(Format.COSIGN, "the signature manifest has no layers", kind, predicate)
    if len(layers) > MAX_LAYERS:
        return SignatureCheck.failed(Format.COSIGN, f"more than {MAX_LAYERS} signature layers", kind, predicate)
    reasons = []
    for i, (layer, blob) in enumerate(layers):
        try:
            return _verify_layer(layer, blob, subject_digest, trust, now)
        except NotVerified as exc:
            reasons.append(exc.reason if len(layers) == 1 else f"layer {i}: {exc.reason}")
    return SignatureCheck.failed(Format.COSIGN, "; ".join(reasons), kind, predicate)


__all__ = ["PublicKey", "key_id", "kind_of", "verify"]
