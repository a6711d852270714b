"""cosign classic signatures: the simple-signing payload bound to the subject, a configured key or a
certificate chaining to the configured Fulcio CAs, and the Rekor bundle annotation."""

from __future__ import annotations

import base64
import datetime as dt
import json

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from scitt_oci.oci.manifest import Descriptor
from scitt_oci.signatures import cosign
from scitt_oci.signatures.model import ArtifactKind
from scitt_oci.signatures.trust import CosignKey, SignatureTrust, SigstoreIdentity, SigstoreTrust
from tests import sigstore_double as sd

DIGEST = "sha256:" + "5d" * 32
NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
SAN = "release@acme.example"


def _layer(payload: bytes, signature: bytes, **annotations: str) -> tuple[Descriptor, bytes]:
    ann = {cosign.ANN_SIGNATURE: base64.b64encode(signature).decode(), **annotations}
    return Descriptor(cosign.SIMPLE_SIGNING, "sha256:" + "00" * 32, len(payload), annotations=ann), payload


def _sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def _keyless_layer(
    instance: sd.Sigstore, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate
) -> tuple[Descriptor, bytes]:
    """A layer as keyless signing writes it: the certificate and the instance's Rekor bundle as annotations."""
    payload = sd.simple_signing(DIGEST)
    signature = _sign(key, payload)
    return _layer(
        payload,
        signature,
        **{
            cosign.ANN_CERTIFICATE: cert.public_bytes(Encoding.PEM).decode(),
            cosign.ANN_BUNDLE: instance.bundle(payload, signature, cert),
        },
    )


def _keyless(instance: sd.Sigstore, *identities: tuple[str, str]) -> SignatureTrust:
    ids = tuple(SigstoreIdentity(s, i) for s, i in identities) or (SigstoreIdentity(SAN, sd.ISSUER),)
    return SignatureTrust(sigstore=(SigstoreTrust.from_trusted_root("acme-sigstore", instance.trusted_root(), ids),))


def test_key_signature_verifies_with_the_configured_key() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    trust = SignatureTrust(cosign_keys=(CosignKey("release", key.public_key()),))
    payload = sd.simple_signing(DIGEST)
    check = cosign.verify([_layer(payload, _sign(key, payload))], DIGEST, trust, NOW)
    assert check.verified, check.reason
    assert check.anchor == "release" and check.key_id == trust.cosign_keys[0].key_id
    assert check.signer == f"key {check.key_id}"


def test_key_signature_by_another_key_or_over_another_digest_is_not_verified() -> None:
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    trust = SignatureTrust(cosign_keys=(CosignKey("release", key.public_key()),))
    payload = sd.simple_signing(DIGEST)
    wrong_key = cosign.verify([_layer(payload, _sign(other, payload))], DIGEST, trust, NOW)
    assert not wrong_key.verified and wrong_key.reason.startswith(
        "the signature verifies with no configured cosign key (keys: release (sha256:"
    )
    elsewhere = sd.simple_signing("sha256:" + "ee" * 32)
    moved = cosign.verify([_layer(elsewhere, _sign(key, elsewhere))], DIGEST, trust, NOW)
    assert not moved.verified and moved.reason == f"the signature is for 'sha256:{'ee' * 32}', not the subject {DIGEST}"


def test_flipped_payload_byte_is_not_verified() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    trust = SignatureTrust(cosign_keys=(CosignKey("release", key.public_key()),))
    payload = sd.simple_signing(DIGEST)
    signature = _sign(key, payload)
    flipped = payload.replace(b"registry.test", b"registry.tesT")
    assert (
        "verifies with no configured cosign key"
        in cosign.verify([_layer(flipped, signature)], DIGEST, trust, NOW).reason
    )


def test_fulcio_certificate_with_rekor_bundle_verifies_identity_and_issuer() -> None:
    instance = sd.Sigstore()
    key = ec.generate_private_key(ec.SECP256R1())
    cert = instance.certify(key, SAN)
    check = cosign.verify([_keyless_layer(instance, key, cert)], DIGEST, _keyless(instance), NOW)
    assert check.verified, check.reason
    assert (check.signer, check.oidc_issuer, check.anchor) == (SAN, sd.ISSUER, "acme-sigstore")
    assert len(check.chain) == 3 and check.timestamp is not None and "Rekor entry 7" in check.timestamp


def test_fulcio_certificate_without_rekor_bundle_has_expired() -> None:
    instance = sd.Sigstore()
    key = ec.generate_private_key(ec.SECP256R1())
    cert = instance.certify(key, SAN)
    payload = sd.simple_signing(DIGEST)
    layer = _layer(payload, _sign(key, payload), **{cosign.ANN_CERTIFICATE: cert.public_bytes(Encoding.PEM).decode()})
    check = cosign.verify([layer], DIGEST, _keyless(instance), NOW)
    assert not check.verified and "expired at 2026-03-01T12:10:00+00:00" in check.reason


def test_tampered_rekor_bundle_is_not_verified() -> None:
    instance = sd.Sigstore()
    key = ec.generate_private_key(ec.SECP256R1())
    cert = instance.certify(key, SAN)
    payload = sd.simple_signing(DIGEST)
    signature = _sign(key, payload)
    bundle = json.loads(instance.bundle(payload, signature, cert))
    bundle["Payload"]["integratedTime"] += 1
    layer = _layer(
        payload,
        signature,
        **{cosign.ANN_CERTIFICATE: cert.public_bytes(Encoding.PEM).decode(), cosign.ANN_BUNDLE: json.dumps(bundle)},
    )
    check = cosign.verify([layer], DIGEST, _keyless(instance), NOW)
    assert not check.verified and "signed entry timestamp does not verify with the log's key" in check.reason


def test_forged_sig_with_self_signed_certificate_and_signature_AAAA_is_not_verified() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    forged = sd.self_signed_lookalike(key, SAN)
    payload = sd.simple_signing(DIGEST)
    layer = _layer(
        payload, base64.b64decode("AAAA"), **{cosign.ANN_CERTIFICATE: forged.public_bytes(Encoding.PEM).decode()}
    )
    check = cosign.verify([layer], DIGEST, _keyless(sd.Sigstore()), NOW)
    assert (check.verified, check.reason) == (False, "the signature does not verify with the certificate it carries")


def test_self_signed_lookalike_of_a_fulcio_certificate_is_not_verified() -> None:
    instance = sd.Sigstore()
    key = ec.generate_private_key(ec.SECP256R1())
    forged = sd.self_signed_lookalike(key, SAN)
    check = cosign.verify([_keyless_layer(instance, key, forged)], DIGEST, _keyless(instance), NOW)
    assert not check.verified
    assert "trusted root 'acme-sigstore': certificate '' does not chain to a configured root" in check.reason


def test_certificate_from_an_untrusted_fulcio_is_not_verified() -> None:
    theirs, ours = sd.Sigstore(), sd.Sigstore()
    key = ec.generate_private_key(ec.SECP256R1())
    cert = theirs.certify(key, SAN)
    check = cosign.verify([_keyless_layer(theirs, key, cert)], DIGEST, _keyless(ours), NOW)
    assert not check.verified and "is not in trusted root 'acme-sigstore'" in check.reason


def test_unexpected_identity_is_not_verified() -> None:
    instance = sd.Sigstore()
    key = ec.generate_private_key(ec.SECP256R1())
    cert = instance.certify(key, "mallory@evil.example")
    check = cosign.verify([_keyless_layer(instance, key, cert)], DIGEST, _keyless(instance), NOW)
    assert not check.verified
    assert f"mallory@evil.example from {sd.ISSUER} is not an expected identity ({SAN} from {sd.ISSUER})" in check.reason


def test_att_layer_is_an_attestation_with_its_predicate_type() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    statement = json.dumps(
        {
            "_type": "https://in-toto.io/Statement/v1",
            "predicateType": "https://slsa.dev/provenance/v1",
            "subject": [{"name": "app", "digest": {"sha256": DIGEST[7:]}}],
            "predicate": {},
        }
    ).encode()
    pae = b"DSSEv1 28 application/vnd.in-toto+json %d %s" % (len(statement), statement)
    envelope = json.dumps(
        {
            "payloadType": "application/vnd.in-toto+json",
            "payload": base64.b64encode(statement).decode(),
            "signatures": [{"sig": base64.b64encode(_sign(key, pae)).decode()}],
        }
    ).encode()
    layer = Descriptor(
        cosign.DSSE,
        "sha256:" + "01" * 32,
        len(envelope),
        annotations={cosign.ANN_PREDICATE: "https://slsa.dev/provenance/v1"},
    )
    trust = SignatureTrust(cosign_keys=(CosignKey("release", key.public_key()),))
    check = cosign.verify([(layer, envelope)], DIGEST, trust, NOW)
    assert check.verified, check.reason
    assert (check.kind, check.predicate_type) == (ArtifactKind.ATTESTATION, "https://slsa.dev/provenance/v1")
    unverified = cosign.verify([(layer, envelope)], "sha256:" + "ab" * 32, trust, NOW)
    assert (unverified.verified, unverified.kind) == (False, ArtifactKind.ATTESTATION)
