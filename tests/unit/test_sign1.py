"""COSE_Sign1: every algorithm, tagged and untagged, attached and detached, original protected bytes, pycose agreement."""

from __future__ import annotations

import cbor2
import pytest

from scitt_oci.cose import algorithms, cbor, sign1
from scitt_oci.cose.sign1 import Sign1
from scitt_oci.errors import MalformedError, SignatureError, UnsupportedError
from tests.helpers import key, private

ALGS = ["ES256", "ES384", "ES512", "EdDSA", "PS256", "PS384", "PS512"]


@pytest.mark.parametrize("alg", ALGS)
def test_sign_and_verify_every_algorithm(alg: str) -> None:
    k = key(alg if not alg.startswith("PS") else "PS256")
    signer = k if not alg.startswith("PS") else type(k).from_key(private(k), alg=algorithms.by_name(alg))
    msg = sign1.sign(signer, {4: signer.kid}, b"payload")
    decoded = sign1.decode(msg.encode())
    assert decoded.alg.name == alg
    decoded.verify(signer)
    if alg.startswith("ES"):
        assert len(decoded.signature) == 2 * algorithms.by_name(alg).coordinate_size


def test_detached_payload_round_trip_and_mismatch() -> None:
    k = key()
    msg = sign1.sign(k, {}, None, detached_payload=b"outside")
    decoded = sign1.decode(msg.encode())
    assert decoded.payload is None
    decoded.verify(k, b"outside")
    with pytest.raises(SignatureError):
        decoded.verify(k, b"other")
    with pytest.raises(MalformedError, match="payload is detached"):
        decoded.verify(k)


def test_untagged_input_is_accepted_and_tag_can_be_required() -> None:
    k = key()
    msg = sign1.sign(k, {}, b"p")
    untagged = msg.encode(tagged=False)
    assert not sign1.decode(untagged).tagged
    sign1.decode(untagged).verify(k)
    with pytest.raises(MalformedError, match="must carry tag 18"):
        sign1.decode(untagged, require_tag=True)
    with pytest.raises(MalformedError, match="tag 99 is not COSE_Sign1"):
        sign1.decode(cbor2.dumps(cbor2.CBORTag(99, [b"", {}, None, b""])))


def test_signature_covers_the_original_protected_bytes_not_a_re_encoding() -> None:
    k = key()
    # A protected header in a non-preferred encoding (alg as a 2-byte int): re-encoding would change it.
    protected = bytes.fromhex("a101" + "3806")  # {1: -7} with -7 in the one-byte-argument form
    assert cbor.loads(protected) == {1: -7} and cbor.dumps({1: -7}) != protected
    assert k.alg is not None
    signature = algorithms.sign(k.alg, private(k), sign1.sig_structure(protected, b"x"))
    raw = cbor2.dumps(cbor2.CBORTag(18, [protected, {}, b"x", signature]))
    decoded = sign1.decode(raw)
    decoded.verify(k)
    assert decoded.encode() == raw


def test_structure_errors_are_precise() -> None:
    cases = {
        cbor2.dumps(cbor2.CBORTag(18, [b"", {}, None])): "array of 4 items",
        cbor2.dumps(cbor2.CBORTag(18, ["x", {}, None, b""])): "protected header must be a byte string",
        cbor2.dumps(cbor2.CBORTag(18, [b"", [], None, b""])): "unprotected header must be a map",
        cbor2.dumps(cbor2.CBORTag(18, [b"", {}, 5, b""])): "payload must be a byte string or nil",
        cbor2.dumps(cbor2.CBORTag(18, [b"", {}, None, "s"])): "signature must be a byte string",
        cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps([1]), {}, None, b""])): "must encode a map",
        cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps({1: -7}), {1: -7}, None, b""])): "in both the protected",
        cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps({1: -7, 2: [999]}), {}, None, b""])): "not understood",
    }
    for raw, message in cases.items():
        with pytest.raises((MalformedError, UnsupportedError), match=message):
            sign1.decode(raw)


def test_unknown_algorithm_and_wrong_key_type() -> None:
    msg = Sign1(cbor.dumps({1: -999}), {1: -999}, {}, b"p", b"s")
    with pytest.raises(UnsupportedError, match="-999 is not supported"):
        msg.verify(key())
    es = sign1.sign(key("ES256"), {}, b"p")
    with pytest.raises(SignatureError, match="needs an Ed25519 key|needs an EC key"):
        es.verify(key("EdDSA"))
    with pytest.raises(SignatureError, match="64"):
        Sign1(es.protected_bytes, es.protected, {}, b"p", es.signature[:10]).verify(key("ES256"))


@pytest.mark.parametrize("alg", ["ES256", "ES384", "EdDSA", "PS256"])
def test_pycose_verifies_ours_and_we_verify_pycose(alg: str) -> None:
    from pycose.keys.cosekey import CoseKey as PyCoseKey
    from pycose.messages.sign1message import Sign1Message

    k = key(alg)
    ours = sign1.sign(k, {}, b"cross-implementation")
    cose_key = k.to_cose(include_kid=False, include_alg=False)
    if alg.startswith("PS"):
        from cryptography.hazmat.primitives.asymmetric import rsa

        assert isinstance(k.private, rsa.RSAPrivateKey)
        pn = k.private.private_numbers()
        priv = {-3: pn.d, -4: pn.p, -5: pn.q, -6: pn.dmp1, -7: pn.dmq1, -8: pn.iqmp}
        cose_key.update({label: v.to_bytes((v.bit_length() + 7) // 8, "big") for label, v in priv.items()})
    else:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519

        if alg == "EdDSA":
            assert isinstance(k.private, ed25519.Ed25519PrivateKey)
            d = k.private.private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
        else:
            assert isinstance(k.private, ec.EllipticCurvePrivateKey)
            d = k.private.private_numbers().private_value.to_bytes(algorithms.by_name(alg).coordinate_size, "big")
        cose_key[-4] = d
    pk: PyCoseKey = PyCoseKey.from_dict(cose_key)
    theirs_view = Sign1Message.decode(ours.encode())
    theirs_view.key = pk
    assert theirs_view.verify_signature()
    mine = Sign1Message(phdr={1: algorithms.by_name(alg).cose_id}, payload=b"from pycose")
    mine.key = pk
    decoded = sign1.decode(mine.encode())
    decoded.verify(k)


@pytest.mark.parametrize(
    ("alg", "holder", "message"),
    [
        ("ES384", "ES256", "needs an EC key on secp384r1"),
        ("ES256", "EdDSA", "needs an EC key"),
        ("EdDSA", "ES256", "needs an Ed25519 key"),
        ("PS256", "ES256", "needs an RSA key"),
    ],
)
def test_signing_refuses_a_private_key_that_cannot_carry_the_alg(alg: str, holder: str, message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        sign1.sign(key(holder), {1: algorithms.by_name(alg).cose_id}, b"p")
