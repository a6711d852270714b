"""Notation envelopes made by notation-go, verified against trust stores as Notation's trust policy names them."""

from __future__ import annotations

import base64
import datetime as dt
import json

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from scitt_oci.cose import algorithms
from scitt_oci.signatures import notation, x509path
from scitt_oci.signatures.trust import NotationTrustStore, SignatureTrust, TrustedIdentity
from tests.conftest import shared

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
ALPINE = notation.Subject(
    "sha256:19dbd2e48e921426ee8ace4dc892edfb2ecdc1d1a72d5416c83670c30acecef0",
    481,
    "application/vnd.oci.image.manifest.v1+json",
)
TIMESTAMPED = notation.Subject(
    "sha256:c0669ef34cdc14332c0f1ab0c2c01acb91d96014b172f1a76f3a39e63d1f0bda",
    528,
    "application/vnd.docker.distribution.manifest.v2+json",
)
ALPINE_DN = "x509.subject: C=US, ST=WA, L=Seattle, O=Notary, CN=alpine"


def _envelope(name: str) -> bytes:
    return shared("signatures", "notation", name).read_bytes()


def _alpine_cert() -> x509.Certificate:
    jws = json.loads(_envelope("jws_signature.sig"))
    return x509.load_der_x509_certificate(base64.b64decode(jws["header"]["x5c"][0]))


def _trust(
    *roots: x509.Certificate, identities: tuple[str, ...] = (ALPINE_DN,), authority: bool = False
) -> SignatureTrust:
    ids = tuple(TrustedIdentity.parse(i) for i in identities)
    store = NotationTrustStore("wabbit", () if authority else roots, roots if authority else (), ids)
    return SignatureTrust(notation=(store,))


@pytest.mark.parametrize(
    ("name", "media_type"), [("jws_signature.sig", notation.JWS), ("cose_signature.sig", notation.COSE)]
)
def test_notation_envelopes_verify_with_the_signer_and_chain(name: str, media_type: str) -> None:
    cert = _alpine_cert()
    check = notation.verify(_envelope(name), media_type, ALPINE, _trust(cert), NOW)
    assert check.verified, check.reason
    assert check.signer == "x509.subject: C=US, ST=WA, L=Seattle, O=Notary, CN=alpine"
    assert check.anchor == "wabbit" and len(check.chain) == 1 and check.chain[0].startswith("sha256:")
    assert check.timestamp == notation.NO_TIMESTAMP


def test_flipped_signature_byte_is_not_verified() -> None:
    doc = json.loads(_envelope("jws_signature.sig"))
    sig = bytearray(base64.urlsafe_b64decode(doc["signature"] + "=="))
    sig[10] ^= 1
    doc["signature"] = base64.urlsafe_b64encode(bytes(sig)).decode().rstrip("=")
    check = notation.verify(json.dumps(doc).encode(), notation.JWS, ALPINE, _trust(_alpine_cert()), NOW)
    assert not check.verified
    assert "envelope signature does not verify" in check.reason


@pytest.mark.parametrize("field", ["signature", "protected", "payload"])
def test_a_jws_part_that_is_not_canonical_base64url_is_not_verified(field: str) -> None:
    # A lax decoder drops the stray character and verifies the same signature: refused instead.
    doc = json.loads(_envelope("jws_signature.sig"))
    doc[field] = doc[field][:8] + "!" + doc[field][8:]
    check = notation.verify(json.dumps(doc).encode(), notation.JWS, ALPINE, _trust(_alpine_cert()), NOW)
    assert not check.verified
    assert "is not unpadded base64url" in check.reason


def test_flipped_payload_byte_in_cose_is_not_verified() -> None:
    tag = cbor2.loads(_envelope("cose_signature.sig"))
    tag.value[2] = tag.value[2].replace(b"481", b"482")
    check = notation.verify(cbor2.dumps(tag), notation.COSE, ALPINE, _trust(_alpine_cert()), NOW)
    assert not check.verified and "envelope signature does not verify" in check.reason


def test_another_subject_is_not_verified() -> None:
    other = notation.Subject("sha256:" + "ab" * 32, ALPINE.size, ALPINE.media_type)
    check = notation.verify(_envelope("cose_signature.sig"), notation.COSE, other, _trust(_alpine_cert()), NOW)
    assert not check.verified
    assert check.reason == f"the signature is for {ALPINE.digest!r}, not the subject {other.digest}"
    bigger = notation.Subject(ALPINE.digest, 482, ALPINE.media_type)
    assert (
        "signed size 481 is not the subject's 482"
        in notation.verify(_envelope("cose_signature.sig"), notation.COSE, bigger, _trust(_alpine_cert()), NOW).reason
    )


def test_untrusted_root_is_not_verified() -> None:
    wabbit = x509.load_pem_x509_certificate(
        shared("signatures", "notation", "truststore", "wabbit-networks.io.crt").read_bytes()
    )
    check = notation.verify(_envelope("jws_signature.sig"), notation.JWS, ALPINE, _trust(wabbit), NOW)
    assert not check.verified
    assert (
        "trust store 'wabbit': certificate 'CN=alpine,O=Notary,L=Seattle,ST=WA,C=US' does not chain to a configured root"
        in check.reason
    )


def test_nothing_configured_is_not_verified() -> None:
    check = notation.verify(_envelope("jws_signature.sig"), notation.JWS, ALPINE, SignatureTrust(), NOW)
    assert (check.verified, check.reason) == (False, "no Notation trust store is configured")


def test_identity_outside_the_trusted_identities_is_not_verified() -> None:
    check = notation.verify(
        _envelope("jws_signature.sig"),
        notation.JWS,
        ALPINE,
        _trust(_alpine_cert(), identities=("x509.subject: C=US, ST=WA, O=Acme",)),
        NOW,
    )
    assert (
        not check.verified
        and "is not one of its trusted identities (x509.subject: C=US, ST=WA, O=Acme)" in check.reason
    )
    wildcard = notation.verify(
        _envelope("jws_signature.sig"), notation.JWS, ALPINE, _trust(_alpine_cert(), identities=("*",)), NOW
    )
    assert wildcard.verified


def test_signing_scheme_needs_the_matching_store_kind() -> None:
    check = notation.verify(
        _envelope("jws_signature.sig"), notation.JWS, ALPINE, _trust(_alpine_cert(), authority=True), NOW
    )
    assert not check.verified and "it has no CA roots (signing scheme notary.x509)" in check.reason


def _expired() -> tuple[bytes, x509.Certificate]:
    data = _envelope("timestamp/coseExpiredWithTimestamp.sig")
    leaf = x509.load_der_x509_certificate(cbor2.loads(data).value[1][33][0])
    return data, leaf


def test_expired_certificate_without_timestamp_is_not_verified() -> None:
    data, leaf = _expired()
    tag = cbor2.loads(data)
    del tag.value[1][notation.TIMESTAMP]  # unprotected: the signature still holds without it
    check = notation.verify(cbor2.dumps(tag), notation.COSE, TIMESTAMPED, _trust(leaf, identities=("*",)), NOW)
    assert not check.verified
    assert "certificate 'CN=testTSA,O=Notary,L=Seattle,ST=WA,C=US' expired at 2024-06-18T07:30:31+00:00" in check.reason
    assert "timestamp" not in check.reason


def test_expired_certificate_with_timestamp_says_the_timestamp_is_not_checked() -> None:
    data, leaf = _expired()
    check = notation.verify(data, notation.COSE, TIMESTAMPED, _trust(leaf, identities=("*",)), NOW)
    assert not check.verified
    assert check.reason.endswith(f"({notation.TIMESTAMP_NOT_CHECKED})")
    assert "expired at 2024-06-18" in check.reason


@pytest.mark.parametrize(
    ("name", "media_type"), [("coseWithTimestamp.sig", notation.COSE), ("jwsWithTimestamp.sig", notation.JWS)]
)
def test_timestamped_envelope_verifies_at_verification_time_and_says_so(name: str, media_type: str) -> None:
    root = x509.load_pem_x509_certificate(
        shared("signatures", "notation", "truststore", "TestTimestamp.crt").read_bytes()
    )
    check = notation.verify(_envelope(f"timestamp/{name}"), media_type, TIMESTAMPED, _trust(root), NOW)
    assert check.verified, check.reason
    assert check.timestamp == notation.TIMESTAMP_NOT_CHECKED


def test_garbage_envelopes_are_not_verified_with_a_reason() -> None:
    trust = _trust(_alpine_cert())
    assert "not JSON" in notation.verify(b"x" * 42, notation.JWS, ALPINE, trust, NOW).reason
    assert "cannot be decoded" in notation.verify(b"\xff" * 42, notation.COSE, ALPINE, trust, NOW).reason
    assert "is not application/jose+json" in notation.verify(b"{}", "text/plain", ALPINE, trust, NOW).reason


def test_trusted_identity_syntax_is_checked() -> None:
    from scitt_oci.errors import PolicyError

    with pytest.raises(PolicyError, match="must be '\\*' or 'x509.subject"):
        TrustedIdentity.parse("CN=alpine")
    with pytest.raises(PolicyError, match="'XX' is not one of C, CN"):
        TrustedIdentity.parse("x509.subject: XX=1")
    with pytest.raises(PolicyError, match=r"must name C, ST and O at least \(missing ST, O\)"):
        TrustedIdentity.parse("x509.subject: C=US, CN=alpine")
    assert TrustedIdentity.parse("x509.subject: C=US, S=WA, O=Notary").attributes == {
        "2.5.4.6": "US",
        "2.5.4.8": "WA",
        "2.5.4.10": "Notary",
    }


def _tsa_roots(name: str = "tsa-globalsignRoot.cer") -> tuple[x509.Certificate, ...]:
    raw = shared("signatures", "notation", "truststore", name).read_bytes()
    return (
        tuple(x509.load_pem_x509_certificates(raw))
        if raw.startswith(b"-----")
        else (x509.load_der_x509_certificate(raw),)
    )


def _timestamped_trust(root: x509.Certificate, tsa: tuple[x509.Certificate, ...]) -> SignatureTrust:
    return SignatureTrust(notation=(NotationTrustStore("test", (root,), (), (TrustedIdentity.parse("*"),), tsa),))


@pytest.mark.parametrize(
    ("name", "media_type"),
    [("coseExpiredWithTimestamp.sig", notation.COSE), ("jwsExpiredWithTimestamp.sig", notation.JWS)],
)
def test_expired_certificate_with_an_authentic_timestamp_verifies_at_the_timestamp(name: str, media_type: str) -> None:
    data = _envelope(f"timestamp/{name}")
    chain = notation.read_envelope(data, media_type).chain
    check = notation.verify(data, media_type, TIMESTAMPED, _timestamped_trust(chain[0], _tsa_roots()), NOW)
    assert check.verified, check.reason
    assert check.timestamp is not None and check.timestamp.startswith("RFC 3161 timestamp 2024-06-18T07:21")


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("timestampAfterNotAfter.sig", "expired at 2001-09-18"),
        ("timestampBeforeNotBefore.sig", "is not valid before 2099-09-18"),
    ],
)
def test_timestamp_outside_the_certificate_validity_is_not_verified(name: str, why: str) -> None:
    data = _envelope(f"timestamp/{name}")
    media_type = notation.JWS if data[:1] == b"{" else notation.COSE
    chain = notation.read_envelope(data, media_type).chain
    check = notation.verify(data, media_type, TIMESTAMPED, _timestamped_trust(chain[0], _tsa_roots()), NOW)
    assert not check.verified and why in check.reason and "checked at 2024-06-19" in check.reason


def test_timestamp_under_an_untrusted_tsa_root_is_not_verified() -> None:
    data, leaf = _expired()
    check = notation.verify(
        data, notation.COSE, TIMESTAMPED, _timestamped_trust(leaf, _tsa_roots("GlobalSign.der")), NOW
    )
    assert not check.verified and "the timestamp does not verify" in check.reason


def test_timestamp_over_another_signature_is_not_verified() -> None:
    data, leaf = _expired()
    other = cbor2.loads(_envelope("timestamp/coseWithTimestamp.sig")).value[1][notation.TIMESTAMP]
    tag = cbor2.loads(data)
    tag.value[1][notation.TIMESTAMP] = other  # unprotected: swapped in from another envelope
    check = notation.verify(cbor2.dumps(tag), notation.COSE, TIMESTAMPED, _timestamped_trust(leaf, _tsa_roots()), NOW)
    assert not check.verified and "the timestamp does not verify: Mismatch between messages" in check.reason


def test_garbage_timestamp_token_is_not_verified() -> None:
    data, leaf = _expired()
    tag = cbor2.loads(data)
    tag.value[1][notation.TIMESTAMP] = b"\x30\x82\xff\xff" + b"x" * 40
    check = notation.verify(cbor2.dumps(tag), notation.COSE, TIMESTAMPED, _timestamped_trust(leaf, _tsa_roots()), NOW)
    assert not check.verified and "the timestamp token cannot be read" in check.reason


def test_tsa_roots_require_a_timestamp_on_notary_x509_envelopes() -> None:
    check = notation.verify(
        _envelope("jws_signature.sig"), notation.JWS, ALPINE, _timestamped_trust(_alpine_cert(), _tsa_roots()), NOW
    )
    assert (
        not check.verified
        and "its tsa roots require an RFC 3161 timestamp and the envelope carries none" in check.reason
    )


def _own_cose_envelope(
    alg: int = -7,
    curve: ec.EllipticCurve | None = None,
    headers: dict[object, object] | None = None,
    name: x509.Name | None = None,
) -> tuple[bytes, x509.Certificate]:
    """A COSE Notation envelope signed here with our own self-signed code-signing certificate."""
    key = ec.generate_private_key(curve or ec.SECP256R1())
    name = name or x509.Name.from_rfc4514_string("CN=builder,O=Acme,ST=WA,C=US")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .sign(key, hashes.SHA256())
    )
    protected = {
        1: alg,
        2: [notation.SIGNING_SCHEME],
        3: notation.PAYLOAD_TYPE,
        notation.SIGNING_SCHEME: "notary.x509",
        notation.SIGNING_TIME: dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        **(headers or {}),
    }
    protected = {k: v for k, v in protected.items() if v is not None}
    raw = cbor2.dumps(protected)
    payload = json.dumps(
        {"targetArtifact": {"digest": ALPINE.digest, "size": ALPINE.size, "mediaType": ALPINE.media_type}}
    ).encode()
    alg_obj = algorithms.by_id(-7 if isinstance(key.curve, ec.SECP256R1) else -35)
    signature = algorithms.sign(alg_obj, key, cbor2.dumps(["Signature1", raw, b"", payload]))
    envelope = cbor2.dumps(cbor2.CBORTag(18, [raw, {33: [cert.public_bytes(Encoding.DER)]}, payload, signature]))
    return envelope, cert


def test_own_envelope_verifies_and_each_notation_header_rule_holds() -> None:
    envelope, cert = _own_cose_envelope()
    trust = _trust(cert, identities=("x509.subject: C=US, ST=WA, O=Acme",))
    assert notation.verify(envelope, notation.COSE, ALPINE, trust, NOW).verified
    substituted, cert2 = _own_cose_envelope(alg=-35)  # ES384 claimed, P-256 key
    reason = notation.verify(substituted, notation.COSE, ALPINE, _trust(cert2, identities=("*",)), NOW).reason
    assert reason == "alg ES384 does not match the signing key (EC secp256r1 signs with ES256)"
    untimed, cert3 = _own_cose_envelope(headers={notation.SIGNING_TIME: None})
    assert notation.verify(untimed, notation.COSE, ALPINE, _trust(cert3, identities=("*",)), NOW).reason == (
        "a notary.x509 envelope needs io.cncf.notary.signingTime"
    )
    expired, cert4 = _own_cose_envelope(
        headers={2: [notation.SIGNING_SCHEME, notation.EXPIRY], notation.EXPIRY: dt.datetime(2026, 5, 1, tzinfo=dt.UTC)}
    )
    assert notation.verify(expired, notation.COSE, ALPINE, _trust(cert4, identities=("*",)), NOW).reason == (
        "the signature expired at 2026-05-01T00:00:00+00:00 (io.cncf.notary.expiry)"
    )
    plugin, cert5 = _own_cose_envelope(
        headers={
            2: [notation.SIGNING_SCHEME, "io.cncf.notary.verificationPlugin"],
            "io.cncf.notary.verificationPlugin": "x",
        }
    )
    assert (
        "critical header(s) ['io.cncf.notary.verificationPlugin'] are not supported"
        in notation.verify(plugin, notation.COSE, ALPINE, _trust(cert5, identities=("*",)), NOW).reason
    )


def test_look_alike_subject_is_recorded_escaped_not_as_another_signer() -> None:
    """F1: a leaf under another trusted store whose L is "Seattle, O=Notary" (no O) must not be
    recorded as the text of the real alpine signer; its name is written as RFC 4514 escapes it."""
    look_alike = x509.Name.from_rfc4514_string(r"CN=alpine,L=Seattle\, O=Notary,ST=WA,C=US")
    envelope, cert = _own_cose_envelope(name=look_alike)
    real = NotationTrustStore("notary", (_alpine_cert(),), (), (TrustedIdentity.parse(ALPINE_DN),))
    partner = NotationTrustStore("partner", (cert,), (), (TrustedIdentity.parse("*"),))
    check = notation.verify(envelope, notation.COSE, ALPINE, SignatureTrust(notation=(real, partner)), NOW)
    assert check.verified and check.anchor == "partner", check.reason
    assert check.signer == r"x509.subject: C=US, ST=WA, L=Seattle\, O=Notary, CN=alpine"
    assert check.signer != ALPINE_DN
    assert not x509path.signer_matches(x509path.signer_pattern(ALPINE_DN), check.signer)
    assert not x509path.signer_matches(x509path.signer_pattern("x509.subject: O=Notary"), check.signer)
    assert x509path.signer_matches(x509path.signer_pattern(check.signer), check.signer)
    # a trusted identity naming O=Notary does not take it either: compared parsed
    only_notary = NotationTrustStore(
        "partner", (cert,), (), (TrustedIdentity.parse("x509.subject: C=US, ST=WA, O=Notary"),)
    )
    assert not notation.verify(envelope, notation.COSE, ALPINE, SignatureTrust(notation=(only_notary,)), NOW).verified


def _name(*rdns: list[tuple[x509.ObjectIdentifier, str]]) -> x509.Name:
    return x509.Name([x509.RelativeDistinguishedName([x509.NameAttribute(o, v) for o, v in rdn]) for rdn in rdns])


C, ORG, CN = x509.NameOID.COUNTRY_NAME, x509.NameOID.ORGANIZATION_NAME, x509.NameOID.COMMON_NAME


@pytest.mark.parametrize(
    ("name", "recorded"),
    [
        (_name([(C, "US")], [(ORG, "Evil"), (CN, "a")]), "x509.subject: C=US, CN=a+O=Evil"),  # multi-valued RDN: "+"
        (_name([(C, "US")], [(CN, "x+O=Evil")]), r"x509.subject: C=US, CN=x\+O=Evil"),
        (_name([(C, "US")], [(CN, "#1 <a>;\\ ")]), r"x509.subject: C=US, CN=\#1 \<a\>\;\\\ "),
        (_name([(C, "US")], [(CN, "line\nbreak")]), r"x509.subject: C=US, CN=line\0abreak"),
    ],
)
def test_recorded_subject_escapes_every_separator(name: x509.Name, recorded: str) -> None:
    envelope, cert = _own_cose_envelope(name=name)
    check = notation.verify(envelope, notation.COSE, ALPINE, _trust(cert, identities=("*",)), NOW)
    assert check.signer == recorded
    # what is recorded reads back as the certificate's own attributes, so an identity copied from it matches
    pattern = x509path.signer_pattern(recorded)
    assert sorted(pattern) == sorted((a.oid.dotted_string, str(a.value)) for a in cert.subject)


def test_trusted_identity_needs_every_value_of_a_repeated_attribute() -> None:
    name = x509.Name.from_rfc4514_string("CN=b,O=Evil,O=Acme,ST=WA,C=US")
    envelope, cert = _own_cose_envelope(name=name)
    trust = _trust(cert, identities=("x509.subject: C=US, ST=WA, O=Acme",))
    assert not notation.verify(envelope, notation.COSE, ALPINE, trust, NOW).verified


@pytest.mark.parametrize(
    ("name", "media_type"), [("jws_signature.sig", notation.JWS), ("cose_signature.sig", notation.COSE)]
)
def test_a_certificate_that_does_not_parse_is_named_by_its_place_not_by_the_parsers_state(
    name: str, media_type: str
) -> None:
    """The reason (logged, and shown by `verify`) names the certificate; the parser's text is a Rust debug
    string ("ParseError { kind: UnexpectedTag ... }") that tells an operator nothing."""
    junk = b"\x30\x03\x02\x01\x01"
    if media_type == notation.JWS:
        doc = json.loads(_envelope(name))
        doc["header"]["x5c"].append(base64.b64encode(junk).decode())
        envelope = json.dumps(doc).encode()
        where = "JWS x5c"
    else:
        tag = cbor2.loads(_envelope(name))
        chain = tag.value[1][33]
        tag.value[1][33] = [*(chain if isinstance(chain, list) else [chain]), junk]
        envelope = cbor2.dumps(tag)
        where = "COSE x5chain (33)"
    check = notation.verify(envelope, media_type, ALPINE, _trust(_alpine_cert()), NOW)
    assert not check.verified
    assert check.reason == f"{where} certificate 2 of 2 (5 bytes) is not a DER-encoded X.509 certificate"
