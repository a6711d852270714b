"""COSE signature algorithms on `cryptography`: ES256/384/512, EdDSA (Ed25519), PS256/384/512.

ECDSA signatures travel as raw r||s (RFC 9053 section 2.1); `cryptography` wants DER, so we
convert at the edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TypeAlias

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from scitt_oci.errors import SignatureError, UnsupportedError

PublicKey: TypeAlias = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey
PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
# The same, for isinstance.
PUBLIC_KEY_TYPES = (ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey, rsa.RSAPublicKey)
PRIVATE_KEY_TYPES = (ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey, rsa.RSAPrivateKey)


@dataclass(frozen=True)
class Algorithm:
    """One COSE signature algorithm and what it needs from a key."""

    name: str
    cose_id: int
    family: str  # "ec", "okp" or "rsa"
    hash_alg: type[hashes.HashAlgorithm] | None
    curve: type[ec.EllipticCurve] | None = None
    coordinate_size: int = 0

    @cached_property
    def ecdsa(self) -> ec.ECDSA:
        """The (immutable, reusable) `cryptography` ECDSA parameters for this algorithm."""
        assert self.hash_alg is not None
        return ec.ECDSA(self.hash_alg())


ALGORITHMS: dict[int, Algorithm] = {
    a.cose_id: a
    for a in (
        Algorithm("ES256", -7, "ec", hashes.SHA256, ec.SECP256R1, 32),
        Algorithm("ES384", -35, "ec", hashes.SHA384, ec.SECP384R1, 48),
        Algorithm("ES512", -36, "ec", hashes.SHA512, ec.SECP521R1, 66),
        Algorithm("EdDSA", -8, "okp", None),
        Algorithm("PS256", -37, "rsa", hashes.SHA256),
        Algorithm("PS384", -38, "rsa", hashes.SHA384),
        Algorithm("PS512", -39, "rsa", hashes.SHA512),
    )
}
BY_NAME: dict[str, Algorithm] = {a.name: a for a in ALGORITHMS.values()}


def by_id(cose_id: object) -> Algorithm:
    """The algorithm with COSE id `cose_id`, or `UnsupportedError` naming the ones we have."""
    if type(cose_id) is int and (alg := ALGORITHMS.get(cose_id)) is not None:  # the usual case, in one lookup
        return alg
    if isinstance(cose_id, int) and not isinstance(cose_id, bool) and cose_id in ALGORITHMS:
        return ALGORITHMS[cose_id]
    known = ", ".join(f"{a.name} ({a.cose_id})" for a in ALGORITHMS.values())
    raise UnsupportedError(f"signature algorithm {cose_id!r} is not supported (supported: {known})")


def by_name(name: str) -> Algorithm:
    """The algorithm called `name` (case-insensitive)."""
    alg = BY_NAME.get(name.upper() if name.lower() != "eddsa" else "EdDSA")
    if alg is None:
        raise UnsupportedError(f"signature algorithm {name!r} is not supported (supported: {', '.join(BY_NAME)})")
    return alg


def check_key(alg: Algorithm, key: PublicKey) -> None:
    """Refuse a key that cannot carry `alg` (wrong type or curve)."""
    _check_shape(alg, key, PUBLIC_KEY_TYPES)


def _check_shape(
    alg: Algorithm,
    key: PublicKey | PrivateKey,
    types: tuple[
        type[ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey],
        type[ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey],
        type[rsa.RSAPublicKey | rsa.RSAPrivateKey],
    ],
) -> None:
    """The one check behind `check_key` and `_check_private_key`: `types` are the EC, Ed25519 and RSA
    classes of the key's half (public or private)."""
    ec_type, okp_type, rsa_type = types
    if alg.family == "ec":
        assert alg.curve is not None
        if not isinstance(key, ec_type) or not isinstance(key.curve, alg.curve):
            raise SignatureError(f"{alg.name} needs an EC key on {alg.curve.name}")
    elif alg.family == "okp":
        if not isinstance(key, okp_type):
            raise SignatureError(f"{alg.name} needs an Ed25519 key")
    elif not isinstance(key, rsa_type) or key.key_size < 2048:
        raise SignatureError(f"{alg.name} needs an RSA key of at least 2048 bits")


def _pss(alg: Algorithm) -> padding.PSS:
    assert alg.hash_alg is not None
    # RFC 8230: MGF1 with the same hash, salt as long as the hash output.
    hash_alg = alg.hash_alg()
    return padding.PSS(mgf=padding.MGF1(hash_alg), salt_length=hash_alg.digest_size)


def _check_private_key(alg: Algorithm, key: PrivateKey) -> None:
    """`check_key` for a private key, read from the key itself (deriving its public half costs more
    than the check: it ran once per signed tree head)."""
    _check_shape(alg, key, PRIVATE_KEY_TYPES)


def sign(alg: Algorithm, key: PrivateKey, message: bytes) -> bytes:
    """Sign `message` with `key` under `alg`; ECDSA output is raw r||s."""
    _check_private_key(alg, key)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        assert alg.hash_alg is not None
        der = key.sign(message, alg.ecdsa)
        r, s = decode_dss_signature(der)
        return r.to_bytes(alg.coordinate_size, "big") + s.to_bytes(alg.coordinate_size, "big")
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(message)
    assert alg.hash_alg is not None
    return key.sign(message, _pss(alg), alg.hash_alg())


def verify(alg: Algorithm, key: PublicKey, signature: bytes, message: bytes, *, key_checked: bool = False) -> None:
    """Verify `signature` over `message`; raise `SignatureError` when it does not hold.

    `key_checked` skips the key-type check for a key already known to fit `alg`.
    """
    if not key_checked:
        check_key(alg, key)
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            assert alg.hash_alg is not None
            size = alg.coordinate_size
            if len(signature) != 2 * size:
                raise SignatureError(f"{alg.name} signature is {len(signature)} bytes; expected {2 * size}")
            r = int.from_bytes(signature[:size], "big")
            s = int.from_bytes(signature[size:], "big")
            key.verify(encode_dss_signature(r, s), message, alg.ecdsa)
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, message)
        else:
            assert alg.hash_alg is not None
            key.verify(signature, message, _pss(alg), alg.hash_alg())
    except InvalidSignature:
        raise SignatureError(f"{alg.name} signature does not verify") from None
