"""COSE_Key, COSE Key Set, JWK and PEM import/export, and RFC 9679 thumbprints."""

from __future__ import annotations

import json

import pytest

from scitt_oci.cose import keys
from scitt_oci.errors import KeyFormatError, UnsupportedError
from tests.helpers import key


def test_rfc9679_thumbprint_known_answer() -> None:
    # RFC 9679 section 6: the EC2 example key and its SHA-256 COSE Key Thumbprint.
    cose_key = {
        1: 2,
        -1: 1,
        -2: bytes.fromhex("65eda5a12577c2bae829437fe338701a10aaa375e1bb5b5de108de439c08551d"),
        -3: bytes.fromhex("1e52ed75701163f7f9e40ddf9f341b3dc9ba860af7e0ca7ca7e9eecd0084d19c"),
        2: b"meriadoc.brandybuck@buckland.example",
    }
    loaded = keys.from_cose(cose_key)
    assert keys.thumbprint(loaded.public).hex() == "496bd8afadf307e5b08c64b0421bf9dc01528a344a43bda88fadd1669da253ec"
    assert loaded.kid == b"meriadoc.brandybuck@buckland.example"


@pytest.mark.parametrize("alg", ["ES256", "ES384", "ES512", "EdDSA", "PS256"])
def test_cose_jwk_and_pem_round_trips_keep_kid_and_key(alg: str) -> None:
    k = key(alg)
    from_cose = keys.load_cose_key_set(keys.dump_cose_key_set([k]))[0]
    from_jwk = keys.load_jwks(json.dumps({"keys": [k.to_jwk()]}).encode())[0]
    from_pem = keys.load_pem_public_keys(k.public_pem())[0]
    assert from_cose.public == from_jwk.public == from_pem.public == k.public
    assert from_cose.kid == from_jwk.kid == k.kid
    assert from_pem.kid == keys.thumbprint(k.public)  # PEM carries no kid: the thumbprint is used
    private = keys.load_private_pem(k.private_pem())
    assert private.public == k.public and private.private is not None


def test_key_set_file_formats_are_detected() -> None:
    a, b = key("ES256"), key("EdDSA")
    jwks = json.dumps({"keys": [a.to_jwk(), b.to_jwk()]}).encode()
    assert [x.kid for x in keys.load_key_file(jwks)] == [a.kid, b.kid]
    assert [x.kid for x in keys.load_key_file(keys.dump_cose_key_set([a, b]))] == [a.kid, b.kid]
    assert len(keys.load_key_file(a.public_pem() + b.public_pem())) == 2


def test_ccf_style_hex_jwk_kid_is_read_as_bytes() -> None:
    jwk = dict(key().to_jwk())
    jwk["kid"] = "9524fb37a4f8b8ea561cdf482f12e7a361a116814436d903ca4f6c2e5f7e655e"
    assert keys.from_jwk(jwk).kid == bytes.fromhex(jwk["kid"])


def test_bad_keys_say_what_is_wrong() -> None:
    with pytest.raises(KeyFormatError, match="not valid JSON"):
        keys.load_jwks(b"{nope")
    with pytest.raises(UnsupportedError, match="kty 'oct' is not supported"):
        keys.from_jwk({"kty": "oct", "k": "AAAA"})
    with pytest.raises(KeyFormatError, match="does not hold a valid public key"):
        keys.from_jwk({"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"})
    with pytest.raises(UnsupportedError, match="curve 4"):
        keys.from_cose({1: 2, -1: 4, -2: b"", -3: b""})
    with pytest.raises(KeyFormatError, match="must be 32 bytes"):
        keys.from_cose({1: 2, -1: 1, -2: b"\x01", -3: b"\x02"})
    with pytest.raises(KeyFormatError, match="no PEM block"):
        keys.load_pem_public_keys(b"nothing here")
    with pytest.raises(KeyFormatError, match="not a PEM, JWK, JWKS or COSE Key Set"):
        keys.load_key_file(b"\xff\x00garbage")
    with pytest.raises(KeyFormatError, match="private key cannot be loaded"):
        keys.load_private_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")


def test_aliases_include_ccf_style_spki_hash() -> None:
    import hashlib

    from cryptography.hazmat.primitives import serialization

    k = key()
    spki = k.public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert hashlib.sha256(spki).hexdigest().encode() in k.aliases
    assert k.kid in k.aliases


@pytest.mark.parametrize("bad", ["{x}==", "{x}!", "!{x}"])
def test_a_jwk_member_that_is_not_canonical_base64url_is_refused(bad: str) -> None:
    # A lax decoder reads these as the same key: one key would have many JWK texts.
    jwk = key("ES256").to_jwk()
    jwk["x"] = bad.format(x=jwk["x"])
    with pytest.raises(KeyFormatError, match="'x' is not unpadded base64url"):
        keys.from_jwk(jwk)
