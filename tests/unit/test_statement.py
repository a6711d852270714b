"""Signed Statements: build, parse, verify by kid or x5chain, the entry form, CWT and hash-envelope rules."""

from __future__ import annotations

import datetime as dt
import hashlib

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from scitt_oci.cose import cbor, headers, keys, sign1
from scitt_oci.cose.cwt import CwtClaims
from scitt_oci.cose.hash_envelope import HashEnvelope
from scitt_oci.errors import MalformedError, SignatureError, UnsupportedError, UntrustedKeyError
from scitt_oci.scitt import statement
from tests.helpers import cert_chain, key

ISS = "https://wabbit-networks.example"
SUB = "oci://registry.example/net-monitor@sha256:" + "ab" * 32


def _hash_statement(*, iat: int | None = None) -> statement.SignedStatement:
    digest = hashlib.sha256(b"artifact").digest()
    return statement.hash_envelope_statement(
        key(), issuer=ISS, subject=SUB, digest=digest, media_type="application/json", location="https://x", iat=iat
    )


def test_build_parse_and_verify_by_kid() -> None:
    s = _hash_statement(iat=1_700_000_000)
    parsed = statement.parse(s.encode())
    assert parsed.issuer == ISS and parsed.subject == SUB and parsed.claims and parsed.claims.iat == 1_700_000_000
    assert parsed.envelope and parsed.envelope.matches(b"artifact") and not parsed.envelope.matches(b"other")
    parsed.check_required_headers()
    match = statement.verify(parsed, keys=[key(slot=1), key()])
    assert match.method == "kid" and match.key.kid == key().kid


def test_unknown_kid_is_untrusted_and_a_bad_signature_is_not() -> None:
    s = _hash_statement()
    with pytest.raises(UntrustedKeyError, match="is not among the trusted issuer keys"):
        statement.verify(s, keys=[key(slot=1)])
    forged = keys.CoseKey.from_key(key(slot=1).public, kid=key().kid)
    with pytest.raises(SignatureError) as info:
        statement.verify(s, keys=[forged])
    assert not isinstance(info.value, UntrustedKeyError)


def test_entry_empties_the_unprotected_header_and_keeps_the_rest_byte_identical() -> None:
    s = _hash_statement()
    with_receipts = s.message.with_unprotected({headers.RECEIPTS: [b"r"], "other": 1})
    entry = statement.from_message(with_receipts).entry()
    assert entry == s.encode()
    decoded = cbor2.loads(entry)
    assert decoded.tag == 18 and decoded.value[1] == {} and decoded.value[0] == s.message.protected_bytes


def test_required_headers_are_named() -> None:
    msg = sign1.sign(key(), {headers.CWT_CLAIMS: {1: ISS}}, b"p")
    with pytest.raises(MalformedError, match=r"lacks sub \(15/2\), kid \(4\), x5t \(34\) or x5chain \(33\)"):
        statement.from_message(msg).check_required_headers()


def test_cwt_iat_tagged_or_untagged() -> None:
    when = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    tagged = cbor.loads(cbor2.dumps({6: when}))
    assert CwtClaims.from_map(tagged).iat == int(when.timestamp())
    assert CwtClaims.from_map({6: 1_767_312_000}).iat == 1_767_312_000
    with pytest.raises(MalformedError, match="iat must be a NumericDate"):
        CwtClaims.from_map({6: "yesterday"})
    with pytest.raises(MalformedError, match="iss \\(1\\) must be a text string"):
        CwtClaims.from_map({1: 5})


def test_hash_envelope_rules() -> None:
    k = key()
    digest = hashlib.sha256(b"a").digest()
    with pytest.raises(MalformedError, match="content type \\(3\\) must not be used"):
        statement.from_message(sign1.sign(k, {258: -16, 3: "text/plain"}, digest))
    with pytest.raises(MalformedError, match="must not be in the unprotected header"):
        statement.from_message(sign1.sign(k, {258: -16}, digest, unprotected={259: "x"}))
    with pytest.raises(MalformedError, match="payload is 3 bytes"):
        statement.from_message(sign1.sign(k, {258: -16}, b"abc"))
    with pytest.raises(UnsupportedError, match="payload-hash-alg -99"):
        statement.from_message(sign1.sign(k, {258: -99}, digest))
    with pytest.raises(MalformedError, match="carries the artifact's media type in 259"):
        statement.build(
            k, issuer=ISS, subject=SUB, payload=digest, content_type="x", envelope=HashEnvelope(-16, digest)
        )


def test_x5chain_verifies_against_configured_roots() -> None:
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    chain, root = cert_chain(leaf_key)
    signer = keys.CoseKey.from_key(leaf_key)
    ders = [c.public_bytes(serialization.Encoding.DER) for c in chain]
    x5t = [-16, hashlib.sha256(ders[0]).digest()]
    s = statement.build(signer, issuer=ISS, subject=SUB, payload=b"p", x5chain=ders, extra_protected={34: x5t})
    match = statement.verify(s, x509_roots=[root])
    assert match.method == "x5chain" and len(match.chain) == 3
    _other_chain, other_root = cert_chain(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(UntrustedKeyError, match="does not chain to a trusted root"):
        statement.verify(s, x509_roots=[other_root])
    with pytest.raises(UntrustedKeyError, match="no X.509 roots are configured"):
        statement.verify(s)
    assert statement.verify(s, trust_embedded=True).method == "x5chain"


def test_x5t_must_match_the_leaf() -> None:
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    chain, root = cert_chain(leaf_key)
    ders = [c.public_bytes(serialization.Encoding.DER) for c in chain]
    s = statement.build(
        keys.CoseKey.from_key(leaf_key),
        issuer=ISS,
        subject=SUB,
        payload=b"p",
        x5chain=ders,
        extra_protected={34: [-16, b"\x00" * 32]},
    )
    with pytest.raises(SignatureError, match="x5t"):
        statement.verify(s, x509_roots=[root])


def test_expired_issuer_certificate_is_checked_at_the_time_given_never_at_the_statement_iat() -> None:
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    chain, root = cert_chain(leaf_key, days=-1, not_before_days=-30)  # expired yesterday
    ders = [c.public_bytes(serialization.Encoding.DER) for c in chain]
    signer = keys.CoseKey.from_key(leaf_key)
    then = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    backdated = statement.build(signer, issuer=ISS, subject=SUB, payload=b"p", x5chain=ders, iat=int(then.timestamp()))
    # The iat is the issuer's own claim: a backdated one does not revive the certificate today.
    with pytest.raises(UntrustedKeyError, match="does not chain to a trusted root at"):
        statement.verify(backdated, x509_roots=[root])
    # At a time something trusted proves (e.g. a receipt's), the certificate was valid.
    match = statement.verify(backdated, x509_roots=[root], at=then)
    assert match.method == "x5chain" and match.validated_at == then
